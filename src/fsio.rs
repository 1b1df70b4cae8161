//! Reading and writing files, each the one way zoa does it.
//!
//! - **Bounded reads**: zoa never reads an untrusted file whole without a bound. Each caller
//!   says what the bound means in its own error message.
//! - **Atomic writes**: a file is written to a temporary file in the target's directory and
//!   renamed over the target, so the target is always the old file or the whole new one,
//!   never a partial one (DESIGN.md: no partial output files on failure). The temporary file
//!   has its final mode from its creation, so a private key is never readable by others, not
//!   even for a moment.

use std::ffi::OsString;
use std::fs::Permissions;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tempfile::NamedTempFile;
use zeroize::Zeroizing;

/// Files only their owner may read: secrets, and the files zoa has always written through a
/// plain temporary file (whose mode this is).
pub const PRIVATE: u32 = 0o600;
/// Files anyone may read: images, certificates, build records.
pub const PUBLIC: u32 = 0o644;
/// Programs anyone may run.
pub const EXECUTABLE: u32 = 0o755;

/// Why a bounded read failed.
#[derive(Debug)]
pub enum ReadBoundedError {
    Io(io::Error),
    /// The file holds more than the bound.
    TooLarge,
}

/// Reads at most `limit` bytes of `path` (what is beyond is not read). Files whose
/// reported length is 0 (sysfs) are read as they are.
pub fn read_at_most(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads `path` whole, refusing a file of more than `limit` bytes (one byte more is read
/// to tell, never the rest).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadBoundedError> {
    let mut bytes = Vec::new();
    read_into(open(path)?, limit, &mut bytes)?;
    Ok(bytes)
}

/// [`read_bounded`] for a secret (a key file, a password file): the bytes are zeroed when
/// dropped.
pub fn read_secret_file(path: &Path, limit: u64) -> Result<Zeroizing<Vec<u8>>, ReadBoundedError> {
    read_secret(open(path)?, limit)
}

/// Reads a secret from `reader` (a file, stdin) to its end, refusing more than `limit`
/// bytes; zeroed when dropped. The buffer is made large enough up front, so it never grows:
/// growing would leave copies of the secret in freed memory. For small bounds (KiB).
pub fn read_secret(reader: impl Read, limit: u64) -> Result<Zeroizing<Vec<u8>>, ReadBoundedError> {
    let capacity = usize::try_from(limit).map_or(0, |l| l.saturating_add(1));
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    read_into(reader, limit, &mut bytes)?;
    Ok(bytes)
}

fn open(path: &Path) -> Result<std::fs::File, ReadBoundedError> {
    std::fs::File::open(path).map_err(ReadBoundedError::Io)
}

/// Appends `reader`'s bytes to `buf`, at most `limit` of them (one more is read to tell).
fn read_into(reader: impl Read, limit: u64, buf: &mut Vec<u8>) -> Result<(), ReadBoundedError> {
    reader
        .take(limit.saturating_add(1))
        .read_to_end(buf)
        .map_err(ReadBoundedError::Io)?;
    if buf.len() as u64 > limit {
        return Err(ReadBoundedError::TooLarge);
    }
    Ok(())
}

/// Why writing a file failed: the step (to follow "cannot") and the error. Callers add the
/// file's name.
#[derive(Debug, thiserror::Error)]
#[error("cannot {step}: {source}")]
pub struct WriteError {
    pub step: &'static str,
    pub source: io::Error,
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

fn step(step: &'static str) -> impl FnOnce(io::Error) -> WriteError {
    move |source| WriteError { step, source }
}

/// How [`persist`] moves a finished temporary file onto its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persist {
    /// Flush the file to disk before the rename, for what cannot simply be made again
    /// (keys, signed images): after a crash the target is then never an empty file.
    pub sync: bool,
    /// Replace an existing target. Without, an existing target (even one a concurrent run
    /// has just created) is kept and the error's kind is `AlreadyExists`.
    pub replace: bool,
}

impl Persist {
    /// Replace the target, without fsync: outputs that can be written again.
    pub const REPLACE: Persist = Persist {
        sync: false,
        replace: true,
    };
}

/// An empty temporary file for `target`, to be [`persist`]ed onto it: in the target's
/// directory (a rename within a file system is atomic), named `.<file name>.XXXXXX` so that
/// a leftover says what it was for, with `mode` from its creation. Dropping it removes it.
pub fn temp_for(target: &Path, mode: u32) -> Result<NamedTempFile, WriteError> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut prefix = OsString::from(".");
    prefix.push(target.file_name().unwrap_or("zoa".as_ref()));
    prefix.push(".");
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(step("create a temporary file beside it"))?;
    // The umask narrows the mode given at creation; files meant for others must be readable.
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(step("set the temporary file's mode"))?;
    Ok(tmp)
}

/// A temporary file for `target` holding `bytes` (see [`temp_for`]), not yet in place: a
/// caller writing several files makes them all first, so a full disk shows before any is
/// moved.
pub fn write_temp(target: &Path, bytes: &[u8], mode: u32) -> Result<NamedTempFile, WriteError> {
    let mut tmp = temp_for(target, mode)?;
    tmp.write_all(bytes).map_err(step("write"))?;
    Ok(tmp)
}

/// Moves `tmp` (from [`temp_for`], or another temporary file on the target's file system)
/// onto `target`, as `how` says. On failure the temporary file is removed.
pub fn persist(tmp: NamedTempFile, target: &Path, how: Persist) -> Result<(), WriteError> {
    if how.sync {
        tmp.as_file().sync_all().map_err(step("sync"))?;
    }
    let placed = if how.replace {
        tmp.persist(target).map(drop)
    } else {
        tmp.persist_noclobber(target).map(drop)
    };
    placed.map_err(|e| WriteError {
        step: "move into place",
        source: e.error,
    })
}

/// Writes `bytes` to `target` atomically, with `mode`, replacing what was there.
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    persist(write_temp(target, bytes, mode)?, target, Persist::REPLACE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn atomic_writes_replace_with_the_mode_given() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("release.json");
        write_atomic(&target, b"one", PRIVATE).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        assert_eq!(mode(&target), 0o600);
        write_atomic(&target, b"two", EXECUTABLE).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        assert_eq!(mode(&target), 0o755);
        assert_eq!(names(dir.path()), ["release.json"]);
        // A missing directory is an error naming the step.
        let e = write_atomic(&dir.path().join("missing/f"), b"x", PUBLIC).unwrap_err();
        assert_eq!(e.step, "create a temporary file beside it");
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn temporary_files_are_named_for_their_target_and_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("disk.raw");
        let tmp = temp_for(&target, PUBLIC).unwrap();
        let name = tmp.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with(".disk.raw."), "{name}");
        assert_eq!(mode(tmp.path()), 0o644, "the umask does not narrow it");
        drop(tmp);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn without_replace_an_existing_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("k");
        let keep = Persist {
            sync: true,
            replace: false,
        };
        persist(write_temp(&target, b"one", PRIVATE).unwrap(), &target, keep).unwrap();
        assert_eq!(mode(&target), 0o600);
        let e = persist(write_temp(&target, b"two", PUBLIC).unwrap(), &target, keep).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(e.step, "move into place");
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        let replace = Persist {
            sync: true,
            replace: true,
        };
        persist(
            write_temp(&target, b"two", PUBLIC).unwrap(),
            &target,
            replace,
        )
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        // Only the target is left: the temporary files went away.
        assert_eq!(names(dir.path()), ["k"]);
    }

    #[test]
    fn bounds_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap(), b"12345");
        assert!(matches!(
            read_bounded(&p, 4),
            Err(ReadBoundedError::TooLarge)
        ));
        assert_eq!(read_at_most(&p, 3).unwrap(), b"123");
        assert!(matches!(
            read_bounded(&dir.path().join("missing"), 5),
            Err(ReadBoundedError::Io(_))
        ));
        assert_eq!(*read_secret_file(&p, 5).unwrap(), b"12345");
        assert!(matches!(
            read_secret_file(&p, 4),
            Err(ReadBoundedError::TooLarge)
        ));
        assert!(matches!(
            read_secret(&b"123456789"[..], 8),
            Err(ReadBoundedError::TooLarge)
        ));
    }

    #[test]
    fn a_secret_is_read_without_growing_its_buffer() {
        for len in [0, 1, 100, 4096] {
            let data = vec![7u8; len];
            let secret = read_secret(&data[..], 4096).unwrap();
            assert_eq!(*secret, data);
            // Still the buffer made up front: it was never moved to a larger one.
            assert_eq!(secret.capacity(), 4097, "{len} bytes");
        }
    }
}
