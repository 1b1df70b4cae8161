//! Model weights: found on a block device, copied into a tmpfs of their own while
//! hashed, and handed to the server only when the digest is the pinned one.
//!
//! The copy is what the server reads, so nothing that happens to the device after the
//! check (a swapped volume, a hypervisor-side write) can change the bytes it runs on;
//! the tmpfs is remounted read-only before the server starts.
//!
//! The device may instead hold the model encrypted with age (`model.age_identity`): the
//! identity comes from KMS through the unseal, so only an attested boot of this image can
//! read the weights. They are decrypted while copied, and the pinned digest is that of
//! the decrypted bytes, so a right key with a wrong file is refused as well.

use crate::config::Model;
use crate::tpm::hex;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first four bytes of every GGUF file.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// The first line of every (binary) age file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// age encrypts in 64 KiB chunks, each with a 16-byte Poly1305 tag, after a 16-byte
/// nonce (the age v1 format, C2SP age.md).
const AGE_CHUNK: u64 = 64 * 1024;
const AGE_TAG: u64 = 16;
const AGE_NONCE: u64 = 16;
/// An age header is a few hundred bytes per recipient; refuse to search further.
const AGE_HEADER_MAX: usize = 64 * 1024;
/// Read and hash in pieces this large: large enough for throughput, small enough to
/// keep zoa-init's own memory flat.
const CHUNK: usize = 1 << 20;

/// Why the model could not be installed. One console line each.
#[derive(Debug)]
pub enum ModelError {
    /// No block device could be the model.
    NotFound { size: u64, encrypted: bool },
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
    /// The age identity or the encrypted device could not be used.
    Decrypt { device: PathBuf, detail: String },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::NotFound { size, encrypted } => write!(
                f,
                "no block device holds {} of {size} bytes \
                 (name one with model.device, or attach the model disk)",
                if *encrypted {
                    "an age-encrypted model"
                } else {
                    "a GGUF model"
                }
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
            ModelError::Decrypt { device, detail } => {
                write!(f, "decrypting {}: {detail}", device.display())
            }
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

/// The age identities that decrypt an encrypted model, parsed from the unsealed secret.
pub struct ModelKey(Vec<Box<dyn age::Identity + Send + Sync>>);

impl ModelKey {
    /// Parses an identity file (`AGE-SECRET-KEY-1…` lines; `#` comments and blank lines
    /// allowed, as `age-keygen` writes it). The error never quotes the secret.
    pub fn parse(secret: &[u8]) -> Result<ModelKey, String> {
        let identities = age::IdentityFile::from_buffer(secret)
            .ok()
            .and_then(|f| f.into_identities().ok())
            .filter(|ids| !ids.is_empty())
            .ok_or("the model key is not an age identity file (AGE-SECRET-KEY-1... lines)")?;
        Ok(ModelKey(identities))
    }
}

impl fmt::Debug for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelKey({} identities)", self.0.len())
    }
}

/// Installs `model` for a server running with group `gid`: finds the device (or takes
/// the configured one), copies (decrypting with `key` when the model is encrypted) and
/// verifies it, and leaves it read-only at `model.path`. `sys_class_block` and `dev` are
/// `/sys/class/block` and `/dev` at boot.
pub fn install(
    model: &Model,
    key: Option<&ModelKey>,
    gid: u32,
    sys_class_block: &Path,
    dev: &Path,
) -> Result<Installed, ModelError> {
    let start = Instant::now();
    if model.age_identity.is_some() && key.is_none() {
        return Err(ModelError::Install {
            what: "the model's key".into(),
            detail: "model.age_identity is set but no key was unsealed".into(),
        });
    }
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
        None if key.is_some() => {
            model_disks(sys_class_block, dev, age_payload_len(model.size), AGE_MAGIC)
        }
        None => model_disks(sys_class_block, dev, model.size, GGUF_MAGIC),
    };
    if candidates.is_empty() {
        return Err(ModelError::NotFound {
            size: model.size,
            encrypted: key.is_some(),
        });
    }
    let mut last_error = None;
    for device in candidates {
        match copy_verified(&device, model, key, &path) {
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
    Err(last_error.unwrap_or(ModelError::NotFound {
        size: model.size,
        encrypted: key.is_some(),
    }))
}

/// Whole disks (no partitions) in `sys_class_block` at least `size` bytes long whose
/// device node under `dev` starts with `magic`, in name order.
pub fn model_disks(sys_class_block: &Path, dev: &Path, size: u64, magic: &[u8]) -> Vec<PathBuf> {
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
        .filter(|node| starts_with_magic(node, magic))
        .collect()
}

fn starts_with_magic(node: &Path, magic: &[u8]) -> bool {
    let mut head = vec![0u8; magic.len()];
    File::open(node)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == magic
}

/// The length of an age payload (nonce and chunks) for `plaintext` bytes: full 64 KiB
/// chunks and a last one that is shorter, or empty only when the whole plaintext is.
pub fn age_payload_len(plaintext: u64) -> u64 {
    let chunks = plaintext.div_ceil(AGE_CHUNK).max(1);
    AGE_NONCE + plaintext + chunks * AGE_TAG
}

/// The length of the age header at the start of `input` (through the `--- MAC` line).
/// The device is longer than the age file (it ends on a sector boundary, zero-padded),
/// and age reads the payload to its end, so the file's exact length must be known.
pub fn age_header_len(input: &mut impl Read) -> Result<u64, String> {
    let mut head = Vec::with_capacity(4096);
    input
        .take(AGE_HEADER_MAX as u64)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    if !head.starts_with(AGE_MAGIC) {
        return Err(if head.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----") {
            "the model is ASCII-armored age; write the binary form (age without -a)".into()
        } else {
            "no age header (age-encryption.org/v1) at the start".into()
        });
    }
    // The header's last line is "--- " and the base64 MAC; no stanza line starts so.
    let mac = memchr_subslice(&head, b"\n--- ")
        .ok_or_else(|| format!("no end of the age header in its first {AGE_HEADER_MAX} bytes"))?;
    let end = head[mac + 1..]
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("the age header's MAC line does not end")?;
    Ok((mac + 1 + end + 1) as u64)
}

fn memchr_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The model's bytes on `device`: the first `model.size` bytes, or the age file at its
/// start decrypted with `key`.
fn model_reader(
    device: &Path,
    model: &Model,
    key: Option<&ModelKey>,
) -> Result<Box<dyn Read>, ModelError> {
    let read_err = |detail: String| ModelError::Read {
        device: device.to_owned(),
        detail,
    };
    let decrypt_err = |detail: String| ModelError::Decrypt {
        device: device.to_owned(),
        detail,
    };
    let mut input = File::open(device).map_err(|e| read_err(e.to_string()))?;
    let Some(key) = key else {
        return Ok(Box::new(input.take(model.size)));
    };
    let header = age_header_len(&mut input).map_err(decrypt_err)?;
    input.rewind().map_err(|e| read_err(e.to_string()))?;
    let age_file =
        BufReader::with_capacity(CHUNK, input.take(header + age_payload_len(model.size)));
    let decryptor =
        age::Decryptor::new_buffered(age_file).map_err(|e| decrypt_err(e.to_string()))?;
    let reader = decryptor
        .decrypt(key.0.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| decrypt_err(e.to_string()))?;
    Ok(Box::new(reader))
}

/// Copies the model's `model.size` bytes from `device` to `path` while hashing them; on a
/// short read, a failed decryption or a wrong digest the copy is removed.
fn copy_verified(
    device: &Path,
    model: &Model,
    key: Option<&ModelKey>,
    path: &Path,
) -> Result<(), ModelError> {
    let read_err = |detail: String| ModelError::Read {
        device: device.to_owned(),
        detail,
    };
    let write_err = |e: std::io::Error| ModelError::Install {
        what: format!("write {}", path.display()),
        detail: e.to_string(),
    };
    let mut input = model_reader(device, model, key)?;
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
                // age reports a failed tag or a truncated stream as a read error.
                Err(e) if key.is_some() => {
                    return Err(ModelError::Decrypt {
                        device: device.to_owned(),
                        detail: e.to_string(),
                    })
                }
                Err(e) => return Err(read_err(e.to_string())),
            };
            hasher.update(&buf[..n]);
            output.write_all(&buf[..n]).map_err(write_err)?;
            left -= n as u64;
        }
        if key.is_some() {
            // The last chunk is authenticated as last only when age reads past it.
            match input.read(&mut buf[..1]) {
                Ok(0) => {}
                Ok(_) => {
                    return Err(read_err(
                        "the decrypted model is longer than model.size".into(),
                    ))
                }
                Err(e) => {
                    return Err(ModelError::Decrypt {
                        device: device.to_owned(),
                        detail: e.to_string(),
                    })
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn model(size: u64, sha256: String, path: &Path) -> Model {
        Model {
            device: None,
            size,
            sha256,
            path: path.to_str().unwrap().to_owned(),
            age_identity: None,
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
    fn model_disks_are_whole_disks_large_enough_with_the_magic() {
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
            model_disks(&sys, &dev, 3000, GGUF_MAGIC),
            [dev.join("nvme1n1"), dev.join("vdb")]
        );
        assert!(model_disks(&sys.join("missing"), &dev, 1, GGUF_MAGIC).is_empty());
        assert!(model_disks(&sys, &dev, 1, AGE_MAGIC).is_empty());
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
        copy_verified(&device, &m, None, &out).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            data,
            "the padding is not copied"
        );

        // One flipped bit: refused, and no copy is left behind.
        let mut bad = padded.clone();
        bad[CHUNK + 7] ^= 1;
        std::fs::write(&device, &bad).unwrap();
        let e = copy_verified(&device, &m, None, &out).unwrap_err();
        assert!(matches!(e, ModelError::Digest { .. }), "{e}");
        assert!(
            e.to_string().contains("is not the pinned model: sha256 "),
            "{e}"
        );
        assert!(!out.exists());

        // A device shorter than the model.
        std::fs::write(&device, &data[..1000]).unwrap();
        let e = copy_verified(&device, &m, None, &out).unwrap_err();
        assert!(e.to_string().contains("ends after 1000 of"), "{e}");
        assert!(!out.exists());

        let e = copy_verified(&dir.path().join("none"), &m, None, &out).unwrap_err();
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
        let installed = install(&m, None, 4242, &sys, &dev).unwrap();
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
        let e = install(&m, None, 4242, &sys, &dev).unwrap_err();
        let _unmount = crate::mounts::tests::Unmount(mount_point.clone());
        assert!(e.to_string().contains("vdb is not the pinned model"), "{e}");
    }

    /// `data` encrypted with age to a fresh identity; returns (file, identity file text).
    fn age_encrypt(data: &[u8]) -> (Vec<u8>, String) {
        use age::secrecy::ExposeSecret;
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut w = encryptor.wrap_output(&mut out).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap();
        let text = format!(
            "# created: test\n{}\n",
            identity.to_string().expose_secret()
        );
        (out, text)
    }

    fn pad_to_sector(mut v: Vec<u8>) -> Vec<u8> {
        v.resize(v.len().div_ceil(512) * 512 + 512, 0);
        v
    }

    #[test]
    fn age_lengths_match_the_files_age_writes() {
        for len in [1usize, 100, 65535, 65536, 65537, 3 * 65536, 3 * 65536 + 9] {
            let (file, _) = age_encrypt(&gguf(len.max(4), 1)[..len]);
            let header = age_header_len(&mut file.as_slice()).unwrap();
            assert_eq!(
                header + age_payload_len(len as u64),
                file.len() as u64,
                "plaintext of {len} bytes"
            );
        }
    }

    #[test]
    fn age_header_refusals_are_named() {
        let e = age_header_len(&mut &b"GGUF...."[..]).unwrap_err();
        assert!(e.contains("no age header"), "{e}");
        let e = age_header_len(&mut &b"-----BEGIN AGE ENCRYPTED FILE-----\n"[..]).unwrap_err();
        assert!(e.contains("ASCII-armored"), "{e}");
        let endless = [AGE_MAGIC, &vec![b'a'; AGE_HEADER_MAX][..]].concat();
        let e = age_header_len(&mut endless.as_slice()).unwrap_err();
        assert!(e.contains("no end of the age header"), "{e}");
        assert!(ModelKey::parse(b"not a key\n").is_err());
        assert!(ModelKey::parse(b"# only a comment\n").is_err());
    }

    #[test]
    fn an_encrypted_model_is_decrypted_verified_and_tampering_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = gguf(2 * CHUNK + 333, 7);
        let (file, identity) = age_encrypt(&data);
        let key = ModelKey::parse(identity.as_bytes()).unwrap();
        let device = dir.path().join("nvme1n1");
        let out = dir.path().join("model.gguf");
        let mut m = model(data.len() as u64, sha(&data), &out);
        m.age_identity = Some("model-key".into());

        // Padded to sectors, as the snapshot's volume is.
        std::fs::write(&device, pad_to_sector(file.clone())).unwrap();
        copy_verified(&device, &m, Some(&key), &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
        std::fs::remove_file(&out).unwrap();

        // Another identity: refused, and nothing is left behind.
        let (_, other) = age_encrypt(b"x");
        let other = ModelKey::parse(other.as_bytes()).unwrap();
        let e = copy_verified(&device, &m, Some(&other), &out).unwrap_err();
        assert!(matches!(e, ModelError::Decrypt { .. }), "{e}");
        assert!(!out.exists());

        // One flipped ciphertext bit in the middle chunk.
        let mut bad = file.clone();
        let at = bad.len() / 2;
        bad[at] ^= 1;
        std::fs::write(&device, pad_to_sector(bad)).unwrap();
        let e = copy_verified(&device, &m, Some(&key), &out).unwrap_err();
        assert!(matches!(e, ModelError::Decrypt { .. }), "{e}");
        assert!(!out.exists());

        // Cut short: the stream's last chunk is missing.
        std::fs::write(&device, &file[..file.len() - 70_000]).unwrap();
        let e = copy_verified(&device, &m, Some(&key), &out).unwrap_err();
        assert!(!out.exists(), "{e}");

        // The right key over another model: the pin still decides.
        let other_model = gguf(data.len(), 8);
        let (file2, identity2) = age_encrypt(&other_model);
        std::fs::write(&device, pad_to_sector(file2)).unwrap();
        let key2 = ModelKey::parse(identity2.as_bytes()).unwrap();
        let e = copy_verified(&device, &m, Some(&key2), &out).unwrap_err();
        assert!(matches!(e, ModelError::Digest { .. }), "{e}");

        // A pin shorter than the encrypted model: the stream does not end where the pin
        // says, so it is refused (age authenticates the last chunk as last).
        std::fs::write(&device, pad_to_sector(file)).unwrap();
        let mut short = m.clone();
        short.size -= 1;
        assert!(copy_verified(&device, &short, Some(&key), &out).is_err());
        assert!(!out.exists());
    }

    /// The Go reference implementation (`age`, `age-keygen`) as the independent producer of
    /// the identity file and the encrypted model.
    #[test]
    fn a_model_encrypted_by_the_age_tool_is_read() {
        let have = |tool: &str| {
            std::process::Command::new(tool)
                .arg("--version")
                .output()
                .is_ok()
        };
        assert!(
            have("age") && have("age-keygen"),
            "`age` and `age-keygen` not found (apt-get install age; .ci/deps does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let data = gguf(CHUNK + 65536, 3); // ends exactly on an age chunk
        let plain = dir.path().join("model.gguf.in");
        std::fs::write(&plain, &data).unwrap();
        let identity = dir.path().join("key.txt");
        let keygen = std::process::Command::new("age-keygen")
            .arg("-o")
            .arg(&identity)
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{keygen:?}");
        let device = dir.path().join("vdb");
        let enc = std::process::Command::new("age")
            .arg("-e")
            .arg("-i")
            .arg(&identity)
            .arg("-o")
            .arg(&device)
            .arg(&plain)
            .output()
            .unwrap();
        assert!(enc.status.success(), "{enc:?}");
        let mut padded = std::fs::read(&device).unwrap();
        padded = pad_to_sector(padded);
        std::fs::write(&device, &padded).unwrap();

        let key = ModelKey::parse(&std::fs::read(&identity).unwrap()).unwrap();
        let out = dir.path().join("model.gguf");
        let mut m = model(data.len() as u64, sha(&data), &out);
        m.age_identity = Some("model-key".into());
        copy_verified(&device, &m, Some(&key), &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);

        // And found by its magic among the disks.
        let (sys, dev) = disks(
            dir.path(),
            &[("vda", gguf(8192, 1), false), ("vdb", padded, false)],
        );
        assert_eq!(
            model_disks(&sys, &dev, age_payload_len(m.size), AGE_MAGIC),
            [dev.join("vdb")]
        );
    }
}
