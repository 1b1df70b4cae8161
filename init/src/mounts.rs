//! The pseudo file systems PID 1 mounts before anything else.

use rustix::ffi::CStr;
use rustix::io::Errno;
use rustix::mount::MountFlags;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// One mount: `mount(source, target, fstype, flags, data)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount {
    /// Source (the file system's name for pseudo file systems).
    pub source: &'static str,
    /// Mount point, created with mode 0755 if missing.
    pub target: &'static str,
    /// File system type.
    pub fstype: &'static str,
    /// Mount flags.
    pub flags: MountFlags,
    /// File-system-specific options.
    pub data: Option<&'static CStr>,
}

const NOSUID_NODEV: MountFlags = MountFlags::NOSUID.union(MountFlags::NODEV);
const NOSUID_NODEV_NOEXEC: MountFlags = NOSUID_NODEV.union(MountFlags::NOEXEC);

/// Mounted at start, in this order.
pub const BASE: [Mount; 5] = [
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: Some(c"mode=0755"),
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some(c"mode=0755"),
    },
    // Not noexec: some servers JIT-compile into /tmp and load the result.
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some(c"mode=1777"),
    },
];

/// Mounted (after [`BASE`]) only to read the TPM event log.
pub const SECURITYFS: Mount = Mount {
    source: "securityfs",
    target: "/sys/kernel/security",
    fstype: "securityfs",
    flags: NOSUID_NODEV_NOEXEC,
    data: None,
};

/// Whether a mount error means "fine, already there": `EBUSY` is what the
/// kernel answers when the same file system is already on that mount point.
pub fn already_mounted(err: Errno) -> bool {
    err == Errno::BUSY
}

/// Creates the mount point if needed and mounts; `EBUSY` counts as success.
pub fn mount(m: &Mount) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(m.target)
        .map_err(|e| format!("create mount point {}: {e}", m.target))?;
    match rustix::mount::mount(m.source, m.target, m.fstype, m.flags, m.data) {
        Ok(()) => Ok(()),
        Err(e) if already_mounted(e) => Ok(()),
        Err(e) => Err(format!(
            "mount {} on {}: {}",
            m.fstype,
            m.target,
            std::io::Error::from(e)
        )),
    }
}

/// Mounts every entry of [`BASE`]; tries them all and reports the first error.
pub fn mount_base() -> Result<(), String> {
    let mut first_error = None;
    for m in &BASE {
        if let Err(e) = mount(m) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A tmpfs of its own on `dir` for files handed to the server (the model, secrets):
/// `size` bytes at most (rounded up to pages), root-owned, mode 0750 with group `gid`,
/// `nosuid,nodev,noexec`, not propagated to other mount namespaces. Parents of `dir`
/// are created 0755 so the server can reach it.
pub fn mount_private_tmpfs(dir: &Path, size: u64, gid: u32) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let data = std::ffi::CString::new(format!("size={size},mode=0750,uid=0,gid={gid}"))
        .map_err(|e| format!("mount options for {}: {e}", dir.display()))?;
    rustix::mount::mount("zoa", dir, "tmpfs", PRIVATE_FLAGS, Some(data.as_c_str())).map_err(
        |e| {
            format!(
                "mount tmpfs on {}: {}",
                dir.display(),
                std::io::Error::from(e)
            )
        },
    )?;
    // Failing only means there is no other namespace to hide it from.
    let _ = rustix::mount::mount_change(dir, rustix::mount::MountPropagationFlags::PRIVATE);
    Ok(())
}

/// Remounts a [`mount_private_tmpfs`] read-only: from then on not even root changes it.
pub fn remount_read_only(dir: &Path) -> Result<(), String> {
    rustix::mount::mount_remount(dir, PRIVATE_FLAGS | MountFlags::RDONLY, c"").map_err(|e| {
        format!(
            "remount {} read-only: {}",
            dir.display(),
            std::io::Error::from(e)
        )
    })
}

const PRIVATE_FLAGS: MountFlags = NOSUID_NODEV_NOEXEC;

/// Writes `contents` to `path` (created new: never over an existing file), mode 0440,
/// owner root, group `gid`.
pub fn write_private_file(path: &Path, contents: &[u8], gid: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o440)
        .open(path)
        .map_err(|e| err("create", e))?;
    file.write_all(contents).map_err(|e| err("write", e))?;
    file.sync_all().map_err(|e| err("sync", e))?;
    std::os::unix::fs::chown(path, Some(0), Some(gid)).map_err(|e| err("chown", e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn base_mounts_are_in_order() {
        let targets: Vec<_> = BASE.iter().map(|m| m.target).collect();
        assert_eq!(targets, ["/proc", "/sys", "/dev", "/run", "/tmp"]);
        // securityfs lives inside sysfs, so it comes after it.
        assert!(SECURITYFS.target.starts_with("/sys/"));
    }

    #[test]
    fn tmp_is_world_writable_and_sticky() {
        let tmp = BASE.iter().find(|m| m.target == "/tmp").unwrap();
        assert_eq!(tmp.data, Some(c"mode=1777"));
        assert!(BASE.iter().all(|m| m.flags.contains(MountFlags::NOSUID)));
    }

    #[test]
    fn only_ebusy_counts_as_already_mounted() {
        assert!(already_mounted(Errno::BUSY));
        assert!(!already_mounted(Errno::PERM));
        assert!(!already_mounted(Errno::NODEV));
    }

    #[test]
    fn private_tmpfs_holds_private_files_and_becomes_read_only() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mount_point = dir.path().join("a/secrets");
        mount_private_tmpfs(&mount_point, 4096, 4242).unwrap();
        let _unmount = Unmount(mount_point.clone());
        let meta = std::fs::metadata(&mount_point).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o750, 0, 4242)
        );
        let parent = std::fs::metadata(dir.path().join("a")).unwrap();
        assert_eq!(parent.mode() & 0o777, 0o755);
        let file = mount_point.join("k");
        write_private_file(&file, b"value", 4242).unwrap();
        assert!(
            write_private_file(&file, b"again", 4242).is_err(),
            "never overwritten"
        );
        // Larger than the tmpfs: refused.
        assert!(write_private_file(&mount_point.join("big"), &[0u8; 3 * 4096], 1).is_err());
        remount_read_only(&mount_point).unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o440, 0, 4242)
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"value");
        let e = std::fs::write(mount_point.join("new"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(30), "EROFS: {e}");
    }

    /// Unmounts on drop, so a failing assertion leaves no mount behind.
    pub(crate) struct Unmount(pub(crate) std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
}
