//! Writing key files, shared by the release keys (minisign) and the Secure Boot keys:
//! the file has its final mode from the first byte (a private key is never readable by
//! others, not even for a moment), is synced before it is moved into place, and an
//! existing file is only replaced when asked.

use std::fs::Permissions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A synced temporary file in `dir` holding `bytes`, with `mode`. The error names the
/// step that failed ("create a temporary file for", "write", ...).
pub(crate) fn write_temp(
    dir: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<tempfile::NamedTempFile, (&'static str, std::io::Error)> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".zoa-key-")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| ("create a temporary file for", e))?;
    // The umask may have narrowed the mode at creation; public files should be readable.
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(|e| ("set the permissions of", e))?;
    tmp.write_all(bytes).map_err(|e| ("write", e))?;
    tmp.as_file().sync_all().map_err(|e| ("sync", e))?;
    Ok(tmp)
}

/// Moves `tmp` to `target`; without `force` an existing file (even one a concurrent run
/// just created) is kept and the error's kind is `AlreadyExists`.
pub(crate) fn persist(
    tmp: tempfile::NamedTempFile,
    target: &Path,
    force: bool,
) -> Result<(), std::io::Error> {
    let result = if force {
        tmp.persist(target).map(|_| ())
    } else {
        tmp.persist_noclobber(target).map(|_| ())
    };
    result.map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_get_their_mode_and_are_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("k");
        persist(
            write_temp(dir.path(), b"one", 0o600).unwrap(),
            &target,
            false,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
        let e = persist(
            write_temp(dir.path(), b"two", 0o644).unwrap(),
            &target,
            false,
        )
        .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        persist(
            write_temp(dir.path(), b"two", 0o644).unwrap(),
            &target,
            true,
        )
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        // Only the target is left: the temporary files went away.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
