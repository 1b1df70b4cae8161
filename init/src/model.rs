//! Model weights: found on a block device, copied into a tmpfs of their own while
//! hashed, and handed to the server only when the digest is the pinned one.
//!
//! The copy is what the server reads, so nothing that happens to the device after the
//! check (a swapped volume, a hypervisor-side write) can change the bytes it runs on;
//! the tmpfs is remounted read-only before the server starts.

use crate::config::Model;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first four bytes of every GGUF file.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Read and hash in pieces this large: large enough for throughput, small enough to
/// keep zoa-init's own memory flat.
const CHUNK: usize = 1 << 20;

/// Why the model could not be installed. One console line each.
#[derive(Debug)]
pub enum ModelError {
    /// No block device could be the model.
    NotFound { size: u64 },
    /// Reading the device failed (or it ended early).
    Read { device: PathBuf, detail: String },
    /// The bytes are not the pinned model.
    Digest {
        device: PathBuf,
        found: String,
        expected: String,
    },
    /// Setting up the tmpfs or writing the copy failed.
    Install { what: String, detail: String },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::NotFound { size } => write!(
                f,
                "no block device holds a GGUF model of {size} bytes \
                 (name one with model.device, or attach the model disk)"
            ),
            ModelError::Read { device, detail } => {
                write!(f, "reading {}: {detail}", device.display())
            }
            ModelError::Digest {
                device,
                found,
                expected,
            } => write!(
                f,
                "{} is not the pinned model: sha256 {found}, expected {expected}",
                device.display()
            ),
            ModelError::Install { what, detail } => write!(f, "{what}: {detail}"),
        }
    }
}

impl std::error::Error for ModelError {}

/// What was installed, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub device: PathBuf,
    pub path: PathBuf,
    pub size: u64,
    pub elapsed: Duration,
}

impl fmt::Display for Installed {
    /// `model <path> from <device>: <size> bytes, sha256 verified in <s>s (<MB/s> MB/s)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(0.001);
        write!(
            f,
            "model {} from {}: {} bytes, sha256 verified in {:.1}s ({:.0} MB/s)",
            self.path.display(),
            self.device.display(),
            self.size,
            secs,
            self.size as f64 / secs / 1e6
        )
    }
}

/// Installs `model` for a server running with group `gid`: finds the device (or takes
/// the configured one), copies and verifies it, and leaves it read-only at
/// `model.path`. `sys_class_block` and `dev` are `/sys/class/block` and `/dev` at boot.
pub fn install(
    model: &Model,
    gid: u32,
    sys_class_block: &Path,
    dev: &Path,
) -> Result<Installed, ModelError> {
    let start = Instant::now();
    let path = PathBuf::from(&model.path);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    crate::mounts::mount_private_tmpfs(&dir, model.size, gid).map_err(|detail| {
        ModelError::Install {
            what: "the model's tmpfs".into(),
            detail,
        }
    })?;
    let candidates = match &model.device {
        Some(d) => vec![PathBuf::from(d)],
        None => gguf_disks(sys_class_block, dev, model.size),
    };
    if candidates.is_empty() {
        return Err(ModelError::NotFound { size: model.size });
    }
    let mut last_error = None;
    for device in candidates {
        match copy_verified(&device, model, &path) {
            Ok(()) => {
                finish(&path, &dir, gid)?;
                return Ok(Installed {
                    device,
                    path,
                    size: model.size,
                    elapsed: start.elapsed(),
                });
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or(ModelError::NotFound { size: model.size }))
}

/// Whole disks (no partitions) in `sys_class_block` at least `size` bytes long whose
/// device node under `dev` starts with [`GGUF_MAGIC`], in name order.
pub fn gguf_disks(sys_class_block: &Path, dev: &Path, size: u64) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys_class_block) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| !e.path().join("partition").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .filter(|name| {
            // `size` is in 512-byte sectors whatever the device's block size.
            std::fs::read_to_string(sys_class_block.join(name).join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|sectors| sectors.saturating_mul(512) >= size)
        })
        .map(|name| dev.join(name))
        .filter(|node| starts_with_magic(node))
        .collect()
}

fn starts_with_magic(node: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(node)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == GGUF_MAGIC
}

/// Copies the first `model.size` bytes of `device` to `path` while hashing them; on a
/// short read or a wrong digest the copy is removed.
fn copy_verified(device: &Path, model: &Model, path: &Path) -> Result<(), ModelError> {
    let read_err = |detail: String| ModelError::Read {
        device: device.to_owned(),
        detail,
    };
    let write_err = |e: std::io::Error| ModelError::Install {
        what: format!("write {}", path.display()),
        detail: e.to_string(),
    };
    let mut input = File::open(device).map_err(|e| read_err(e.to_string()))?;
    let mut output = File::create(path).map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = model.size;
    let result = (|| {
        while left > 0 {
            let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            let n = match input.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(read_err(format!(
                        "ends after {} of {} bytes",
                        model.size - left,
                        model.size
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e.to_string())),
            };
            hasher.update(&buf[..n]);
            output.write_all(&buf[..n]).map_err(write_err)?;
            left -= n as u64;
        }
        let found = hex(&hasher.finalize_reset());
        if found != model.sha256 {
            return Err(ModelError::Digest {
                device: device.to_owned(),
                found,
                expected: model.sha256.clone(),
            });
        }
        output.sync_all().map_err(write_err)
    })();
    if result.is_err() {
        drop(output);
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Read-only for the server's group, then the whole tmpfs read-only.
fn finish(path: &Path, dir: &Path, gid: u32) -> Result<(), ModelError> {
    let err = |what: &str, e: std::io::Error| ModelError::Install {
        what: format!("{what} {}", path.display()),
        detail: e.to_string(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o440))
        .map_err(|e| err("chmod", e))?;
    std::os::unix::fs::chown(path, Some(0), Some(gid)).map_err(|e| err("chown", e))?;
    crate::mounts::remount_read_only(dir).map_err(|detail| ModelError::Install {
        what: "the model's tmpfs".into(),
        detail,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(size: u64, sha256: String, path: &Path) -> Model {
        Model {
            device: None,
            size,
            sha256,
            path: path.to_str().unwrap().to_owned(),
        }
    }

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// A fake `/sys/class/block` + `/dev` pair: `(name, contents, is_partition)`.
    fn disks(root: &Path, entries: &[(&str, Vec<u8>, bool)]) -> (PathBuf, PathBuf) {
        let sys = root.join("sys");
        let dev = root.join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        for (name, contents, partition) in entries {
            let d = sys.join(name);
            std::fs::create_dir_all(&d).unwrap();
            // Round up to sectors, as a block device would be.
            let sectors = (contents.len() as u64).div_ceil(512);
            std::fs::write(d.join("size"), format!("{sectors}\n")).unwrap();
            if *partition {
                std::fs::write(d.join("partition"), "1\n").unwrap();
            }
            std::fs::write(dev.join(name), contents).unwrap();
        }
        (sys, dev)
    }

    fn gguf(len: usize, seed: u8) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        v[..4].copy_from_slice(GGUF_MAGIC);
        v
    }

    #[test]
    fn gguf_disks_are_whole_disks_large_enough_with_the_magic() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = disks(
            dir.path(),
            &[
                ("vda", vec![0u8; 4096], false),
                ("vda1", gguf(4096, 1), true),
                ("vdb", gguf(4096, 2), false),
                ("vdc", gguf(512, 3), false),
                ("nvme1n1", gguf(8192, 4), false),
            ],
        );
        assert_eq!(
            gguf_disks(&sys, &dev, 3000),
            [dev.join("nvme1n1"), dev.join("vdb")]
        );
        assert!(gguf_disks(&sys.join("missing"), &dev, 1).is_empty());
    }

    #[test]
    fn copy_keeps_the_pinned_bytes_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let data = gguf(3 * CHUNK + 100, 9);
        let mut padded = data.clone();
        padded.resize(data.len().div_ceil(512) * 512, 0);
        let device = dir.path().join("vdb");
        std::fs::write(&device, &padded).unwrap();
        let out = dir.path().join("model.gguf");

        let m = model(data.len() as u64, sha(&data), &out);
        copy_verified(&device, &m, &out).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            data,
            "the padding is not copied"
        );

        // One flipped bit: refused, and no copy is left behind.
        let mut bad = padded.clone();
        bad[CHUNK + 7] ^= 1;
        std::fs::write(&device, &bad).unwrap();
        let e = copy_verified(&device, &m, &out).unwrap_err();
        assert!(matches!(e, ModelError::Digest { .. }), "{e}");
        assert!(
            e.to_string().contains("is not the pinned model: sha256 "),
            "{e}"
        );
        assert!(!out.exists());

        // A device shorter than the model.
        std::fs::write(&device, &data[..1000]).unwrap();
        let e = copy_verified(&device, &m, &out).unwrap_err();
        assert!(e.to_string().contains("ends after 1000 of"), "{e}");
        assert!(!out.exists());

        let e = copy_verified(&dir.path().join("none"), &m, &out).unwrap_err();
        assert!(e.to_string().starts_with("reading "), "{e}");
    }

    #[test]
    fn install_mounts_a_read_only_tmpfs_with_the_verified_copy() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = gguf(CHUNK + 3, 5);
        let (sys, dev) = disks(
            dir.path(),
            &[
                ("vda", vec![1u8; 8192], false),
                ("vdb", data.clone(), false),
            ],
        );
        let path = dir.path().join("model/model.gguf");
        let m = model(data.len() as u64, sha(&data), &path);
        let installed = install(&m, 4242, &sys, &dev).unwrap();
        let mount_point = path.parent().unwrap().to_owned();
        let unmount = crate::mounts::tests::Unmount(mount_point.clone());
        assert_eq!(installed.device, dev.join("vdb"));
        assert!(
            installed.to_string().contains("sha256 verified"),
            "{installed}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o440, 0, 4242)
        );
        // Read-only now, even for root.
        let e = std::fs::write(&path, b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(30), "EROFS: {e}");
        drop(unmount);

        // A wrong pin: refused, naming the device.
        let m = model(data.len() as u64, "00".repeat(32), &path);
        let e = install(&m, 4242, &sys, &dev).unwrap_err();
        let _unmount = crate::mounts::tests::Unmount(mount_point.clone());
        assert!(e.to_string().contains("vdb is not the pinned model"), "{e}");
    }
}
