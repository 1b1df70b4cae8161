//! The pseudo file systems PID 1 mounts before anything else.

use rustix::ffi::CStr;
use rustix::io::Errno;
use rustix::mount::MountFlags;
use std::os::unix::fs::DirBuilderExt;

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

#[cfg(test)]
mod tests {
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
}
