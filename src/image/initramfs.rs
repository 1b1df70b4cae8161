//! The initramfs: a deterministic newc cpio archive of the image tree (written with the
//! `cpio` crate), optionally zstd-compressed with fixed parameters, and the reverse
//! (reading a UKI's `.initrd` back into a tree for `zoa check`).
//!
//! Determinism: entries in sorted path order, every parent directory present, uid/gid 0,
//! mtime = SOURCE_DATE_EPOCH, inode numbers assigned in order from 1, nlink 2 for
//! directories and 1 otherwise, no device numbers for the archive itself.

use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::Path;

use super::tree::{FileEntry, ImageTree, Node, NodeKind};

const NEWC_HEADER_LEN: u64 = 110;
const TRAILER_NAME: &str = "TRAILER!!!";

/// File-type bits of cpio modes (same values as `stat`).
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

/// Errors while writing or reading an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: is {size} bytes; newc cpio cannot hold files of 4 GiB or more")]
    TooLarge { path: String, size: u64 },
    #[error("{path}: changed while the image was being built (expected {expected} bytes, read {actual})")]
    Changed {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error(".initrd: {0}")]
    Malformed(String),
}

fn round4(n: u64) -> u64 {
    (n + 3) & !3
}

fn entry_len(name: &str, data_len: u64) -> u64 {
    round4(NEWC_HEADER_LEN + name.len() as u64 + 1) + round4(data_len)
}

fn data_len(node: &Node) -> u64 {
    match &node.kind {
        NodeKind::File { size, .. } => *size,
        NodeKind::Symlink { target } => target.len() as u64,
        _ => 0,
    }
}

/// Exact size of the uncompressed archive, computed before writing it (so the UKI's
/// section table can be laid out first and the archive streamed into place).
pub fn archive_len(tree: &ImageTree) -> u64 {
    tree.iter()
        .map(|(path, node)| entry_len(&path[1..], data_len(node)))
        .sum::<u64>()
        + entry_len(TRAILER_NAME, 0)
}

/// Writes the archive for `tree` into `out` and returns the file list (with sha256 of
/// every regular file, hashed while it is copied: each byte is read once).
pub fn write_archive(
    tree: &ImageTree,
    mtime: u32,
    mut out: impl Write,
) -> Result<Vec<FileEntry>, InitramfsError> {
    let mut list = Vec::with_capacity(tree.len());
    let mut buf = vec![0u8; 1 << 20];
    for (ino, (path, node)) in (1u32..).zip(tree.iter()) {
        let name = &path[1..];
        let io_err = |source| InitramfsError::Io {
            path: path.clone(),
            source,
        };
        let (type_bits, nlink) = match node.kind {
            NodeKind::Dir => (S_IFDIR, 2),
            NodeKind::File { .. } => (S_IFREG, 1),
            NodeKind::Symlink { .. } => (S_IFLNK, 1),
            NodeKind::CharDev { .. } => (S_IFCHR, 1),
            NodeKind::BlockDev { .. } => (S_IFBLK, 1),
        };
        let len = data_len(node);
        let len32 = u32::try_from(len).map_err(|_| InitramfsError::TooLarge {
            path: path.clone(),
            size: len,
        })?;
        let mut builder = cpio::newc::Builder::new(name)
            .ino(ino)
            .mode(type_bits | (node.mode & 0o7777))
            .uid(0)
            .gid(0)
            .nlink(nlink)
            .mtime(mtime);
        if let NodeKind::CharDev { major, minor } | NodeKind::BlockDev { major, minor } = node.kind
        {
            builder = builder.rdev_major(major).rdev_minor(minor);
        }
        let mut writer = builder.write(&mut out, len32);
        let mut entry = FileEntry {
            path: path.clone(),
            kind: node.type_name().to_owned(),
            mode: format!("{:04o}", node.mode),
            size: None,
            sha256: None,
            target: None,
            origin: node.origin.clone(),
        };
        match &node.kind {
            NodeKind::File { source, size } => {
                let mut reader = source.open().map_err(io_err)?;
                let mut hasher = Sha256::new();
                let mut copied = 0u64;
                loop {
                    let n = reader.read(&mut buf).map_err(io_err)?;
                    if n == 0 {
                        break;
                    }
                    copied += n as u64;
                    if copied > *size {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    writer.write_all(&buf[..n]).map_err(io_err)?;
                }
                if copied != *size {
                    return Err(InitramfsError::Changed {
                        path: path.clone(),
                        expected: *size,
                        actual: copied,
                    });
                }
                entry.size = Some(*size);
                entry.sha256 = Some(hex::encode(hasher.finalize()));
            }
            NodeKind::Symlink { target } => {
                writer.write_all(target.as_bytes()).map_err(io_err)?;
                entry.target = Some(target.clone());
            }
            _ => {}
        }
        writer.finish().map_err(io_err)?;
        list.push(entry);
    }
    cpio::newc::trailer(&mut out).map_err(|source| InitramfsError::Io {
        path: TRAILER_NAME.into(),
        source,
    })?;
    Ok(list)
}

/// Compresses `input` (an uncompressed archive) at zstd `level` (`None`: copied as it is),
/// with fixed parameters otherwise.
pub fn compress(
    level: Option<i32>,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> io::Result<()> {
    match level {
        None => io::copy(input, output).map(|_| ()),
        Some(level) => {
            let mut enc = zstd::stream::write::Encoder::new(output, level)?;
            // Fixed, single-threaded parameters: the frame must not depend on the machine.
            enc.include_checksum(true)?;
            enc.include_contentsize(false)?;
            io::copy(input, &mut enc)?;
            enc.finish()?;
            Ok(())
        }
    }
}

/// Opens an `.initrd` for reading whatever its compression (zstd, gzip or none).
pub fn decompressing_reader<'a>(
    data: impl Read + 'a,
) -> Result<Box<dyn Read + 'a>, InitramfsError> {
    let mut data = io::BufReader::new(data);
    let head = {
        let buf = io::BufRead::fill_buf(&mut data)
            .map_err(|e| InitramfsError::Malformed(e.to_string()))?;
        buf.get(..4).map(|b| b.to_vec()).unwrap_or_default()
    };
    match head.as_slice() {
        [0x28, 0xb5, 0x2f, 0xfd] => zstd::stream::read::Decoder::with_buffer(data)
            .map(|d| Box::new(d) as Box<dyn Read>)
            .map_err(|e| InitramfsError::Malformed(format!("zstd: {e}"))),
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::MultiGzDecoder::new(data))),
        [b'0', b'7', b'0', b'7'] => Ok(Box::new(data)),
        _ => Err(InitramfsError::Malformed(format!(
            "unknown format (first bytes {}); supported: newc cpio, zstd, gzip",
            hex::encode(&head)
        ))),
    }
}

/// Reads a (possibly compressed) newc archive into a tree; file contents are extracted
/// into `spill_dir` so memory stays bounded whatever the archive holds.
pub fn read_archive(data: impl Read, spill_dir: &Path) -> Result<ImageTree, InitramfsError> {
    let mut reader = decompressing_reader(data)?;
    let mut tree = ImageTree::new();
    let mut count = 0u64;
    loop {
        // A missing trailer means the archive was cut short: refuse it.
        let entry_reader = cpio::newc::Reader::new(&mut reader)
            .map_err(|e| InitramfsError::Malformed(format!("entry {}: {e}", count + 1)))?;
        let entry = entry_reader.entry().clone();
        if entry.is_trailer() {
            entry_reader
                .finish()
                .map_err(|e| InitramfsError::Malformed(format!("trailer: {e}")))?;
            skip_zero_padding(&mut reader)?;
            break;
        }
        count += 1;
        let name = entry
            .name()
            .trim_start_matches("./")
            .trim_start_matches('/');
        if name.is_empty() || name == "." {
            entry_reader
                .finish()
                .map_err(|e| InitramfsError::Malformed(e.to_string()))?;
            continue;
        }
        let path = crate::recipe::image_path(&format!("/{name}"))
            .map_err(|m| InitramfsError::Malformed(format!("entry {count}: {m}")))?;
        let mode = entry.mode();
        let perm = mode & 0o7777;
        let node = match mode & 0o170000 {
            S_IFDIR => {
                entry_reader
                    .finish()
                    .map_err(|e| InitramfsError::Malformed(e.to_string()))?;
                Node::dir(perm, "initrd")
            }
            S_IFLNK => {
                let mut target = String::new();
                let mut r = entry_reader;
                r.read_to_string(&mut target)
                    .map_err(|e| InitramfsError::Malformed(format!("{path}: {e}")))?;
                r.finish()
                    .map_err(|e| InitramfsError::Malformed(e.to_string()))?;
                Node {
                    kind: NodeKind::Symlink { target },
                    mode: perm,
                    origin: "initrd".into(),
                }
            }
            S_IFREG => {
                let spill = spill_dir.join(format!("{count}"));
                let mut f = std::fs::File::create(&spill).map_err(|source| InitramfsError::Io {
                    path: spill.display().to_string(),
                    source,
                })?;
                let mut r = entry_reader;
                let size = io::copy(&mut r, &mut f)
                    .map_err(|e| InitramfsError::Malformed(format!("{path}: {e}")))?;
                r.finish()
                    .map_err(|e| InitramfsError::Malformed(e.to_string()))?;
                Node::host_file(spill, size, perm, "initrd")
            }
            S_IFCHR | S_IFBLK => {
                let (major, minor) = (entry.rdev_major(), entry.rdev_minor());
                entry_reader
                    .finish()
                    .map_err(|e| InitramfsError::Malformed(e.to_string()))?;
                Node {
                    kind: if mode & 0o170000 == S_IFCHR {
                        NodeKind::CharDev { major, minor }
                    } else {
                        NodeKind::BlockDev { major, minor }
                    },
                    mode: perm,
                    origin: "initrd".into(),
                }
            }
            other => {
                return Err(InitramfsError::Malformed(format!(
                    "{path}: unsupported file type {other:o}"
                )))
            }
        };
        // A later entry overrides an earlier one with the same path, as in the kernel.
        tree.replace(&path, node)
            .map_err(|e| InitramfsError::Malformed(e.to_string()))?;
    }
    if count == 0 {
        return Err(InitramfsError::Malformed("archive holds no entries".into()));
    }
    Ok(tree)
}

/// Accepts only NUL padding after the trailer.
fn skip_zero_padding(reader: &mut dyn Read) -> Result<(), InitramfsError> {
    // Padding is a few bytes; a non-NUL byte would start a second archive, which the
    // kernel accepts but `zoa check` refuses rather than half-reads.
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) if byte[0] == 0 => continue,
            Ok(_) => {
                return Err(InitramfsError::Malformed(
                    "data after the cpio trailer (concatenated archives are not supported by zoa check)".into(),
                ))
            }
            Err(e) => return Err(InitramfsError::Malformed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::DEFAULT_ZSTD_LEVEL;

    fn sample_tree() -> ImageTree {
        let mut t = ImageTree::new();
        t.insert("/init", Node::bytes(b"\x7fELF init".to_vec(), 0o755, "t"))
            .unwrap();
        t.insert(
            "/etc/zoa/init.json",
            Node::bytes(b"{}".to_vec(), 0o644, "t"),
        )
        .unwrap();
        t.insert("/lib64", Node::symlink("usr/lib64", "t")).unwrap();
        t.insert(
            "/dev/console",
            Node {
                kind: NodeKind::CharDev { major: 5, minor: 1 },
                mode: 0o600,
                origin: "t".into(),
            },
        )
        .unwrap();
        t
    }

    #[test]
    fn size_is_predicted_exactly_and_output_is_stable() {
        let t = sample_tree();
        let mut a = Vec::new();
        let list = write_archive(&t, 1_700_000_000, &mut a).unwrap();
        assert_eq!(a.len() as u64, archive_len(&t));
        let mut b = Vec::new();
        write_archive(&t, 1_700_000_000, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(list.len(), t.len());
        let init = list.iter().find(|e| e.path == "/init").unwrap();
        assert_eq!(
            init.sha256.as_deref(),
            Some(crate::digest::sha256_bytes(b"\x7fELF init").as_str())
        );
    }

    #[test]
    fn gnu_cpio_reads_it() {
        // An independent reader: GNU cpio lists what we wrote (skipped if not installed).
        if std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("cpio not installed; skipping");
            return;
        }
        let t = sample_tree();
        let mut a = Vec::new();
        write_archive(&t, 1_700_000_000, &mut a).unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&a).unwrap();
        let out = child.wait_with_output().unwrap();
        let names = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            names.lines().collect::<Vec<_>>(),
            vec![
                "dev",
                "dev/console",
                "etc",
                "etc/zoa",
                "etc/zoa/init.json",
                "init",
                "lib64"
            ]
        );
    }

    #[test]
    fn round_trip_plain_and_zstd() {
        let t = sample_tree();
        let mut raw = Vec::new();
        write_archive(&t, 1, &mut raw).unwrap();
        for level in [None, Some(1), Some(DEFAULT_ZSTD_LEVEL), Some(19)] {
            let mut packed = Vec::new();
            compress(level, &mut &raw[..], &mut packed).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let back = read_archive(&packed[..], dir.path()).unwrap();
            let paths: Vec<_> = back.iter().map(|(p, _)| p.clone()).collect();
            let want: Vec<_> = t.iter().map(|(p, _)| p.clone()).collect();
            assert_eq!(paths, want);
            match &back.get("/lib64").unwrap().kind {
                NodeKind::Symlink { target } => assert_eq!(target, "usr/lib64"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_archive(&b"garbage!"[..], dir.path()).is_err());
        let t = sample_tree();
        let mut raw = Vec::new();
        write_archive(&t, 1, &mut raw).unwrap();
        let e = read_archive(&raw[..150], dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(".initrd:"), "{e}");
    }
}
