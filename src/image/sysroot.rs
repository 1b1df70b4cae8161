//! The sysroot: the recipe's pinned `.deb` packages extracted into one merged-/usr tree.
//!
//! It is the only place executables and shared libraries are taken from, so nothing of
//! the build host can leak into an image. Symlinks are resolved *inside* the root, the way
//! the kernel would resolve them if the root were `/` — an absolute link target never
//! escapes to the host.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::deb;

/// Symlinks of Debian's merged-/usr layout, created when no package ships them.
const MERGED_USR_LINKS: &[(&str, &str)] = &[
    ("bin", "usr/bin"),
    ("sbin", "usr/sbin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
];

/// Longest symlink chain followed before giving up (the kernel's limit is 40).
const MAX_SYMLINK_HOPS: usize = 40;

/// Errors from building or reading the sysroot.
#[derive(Debug, thiserror::Error)]
pub enum SysrootError {
    #[error(transparent)]
    Deb(#[from] deb::DebError),
    #[error("sysroot {root}: {message}")]
    Io { root: PathBuf, message: String },
    #[error("{path}: not found in the sysroot (packages: {packages})")]
    NotFound { path: String, packages: String },
    #[error("{path}: more than {MAX_SYMLINK_HOPS} symlinks (a loop?)")]
    SymlinkLoop { path: String },
}

/// An extracted sysroot.
#[derive(Debug)]
pub struct Sysroot {
    root: PathBuf,
    /// Which package wrote each path (relative, merged-/usr normalised).
    owners: BTreeMap<String, String>,
    packages: Vec<String>,
}

/// The result of resolving a path: the real file and every symlink on the way, so the
/// image can carry the same chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Absolute image path of the final, non-symlink entry.
    pub real: String,
    /// (absolute link path, link target verbatim), in the order they were followed.
    pub links: Vec<(String, String)>,
}

impl Sysroot {
    /// Extracts `debs` (label, path) in order into `root`, which must be an empty directory.
    pub fn create(root: &Path, debs: &[(String, PathBuf)]) -> Result<Sysroot, SysrootError> {
        let mut owners = BTreeMap::new();
        for (label, path) in debs {
            for entry in deb::extract_data(path, root)? {
                owners.insert(entry.path, label.clone());
            }
        }
        for (link, target) in MERGED_USR_LINKS {
            let p = root.join(link);
            if fs::symlink_metadata(&p).is_err() {
                std::os::unix::fs::symlink(target, &p).map_err(|e| SysrootError::Io {
                    root: root.to_owned(),
                    message: format!("cannot create /{link} -> {target}: {e}"),
                })?;
                owners.insert((*link).to_owned(), "zoa (merged /usr)".to_owned());
            }
        }
        Ok(Sysroot {
            root: root.to_owned(),
            owners,
            packages: debs.iter().map(|(l, _)| l.clone()).collect(),
        })
    }

    /// Opens an already populated directory as a sysroot (tests, `zoa check`).
    pub fn open(root: &Path) -> Sysroot {
        Sysroot {
            root: root.to_owned(),
            owners: BTreeMap::new(),
            packages: vec![],
        }
    }

    /// The host path of an image path (no resolution).
    pub fn host_path(&self, image_path: &str) -> PathBuf {
        self.root.join(image_path.trim_start_matches('/'))
    }

    /// The package that provided an image path, if known.
    pub fn owner(&self, image_path: &str) -> Option<&str> {
        self.owners
            .get(image_path.trim_start_matches('/'))
            .map(String::as_str)
    }

    fn not_found(&self, path: &str) -> SysrootError {
        SysrootError::NotFound {
            path: path.to_owned(),
            packages: if self.packages.is_empty() {
                "none".into()
            } else {
                self.packages.join(", ")
            },
        }
    }

    /// Resolves an absolute image path, following symlinks inside the root.
    /// Returns `NotFound` when any component is missing.
    pub fn resolve(&self, path: &str) -> Result<Resolved, SysrootError> {
        let mut links = Vec::new();
        let mut pending: Vec<String> = components(path).into_iter().rev().collect();
        let mut current: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                current.pop();
                continue;
            }
            current.push(part);
            let image_path = format!("/{}", current.join("/"));
            let host = self.host_path(&image_path);
            let meta = fs::symlink_metadata(&host).map_err(|_| self.not_found(path))?;
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(SysrootError::SymlinkLoop {
                        path: path.to_owned(),
                    });
                }
                let target = fs::read_link(&host).map_err(|e| SysrootError::Io {
                    root: self.root.clone(),
                    message: format!("{image_path}: {e}"),
                })?;
                let target = target.to_string_lossy().into_owned();
                links.push((image_path, target.clone()));
                current.pop();
                if target.starts_with('/') {
                    current.clear();
                }
                for t in components(&target).into_iter().rev() {
                    pending.push(t);
                }
            } else if !pending.is_empty() && !meta.is_dir() {
                return Err(self.not_found(path));
            }
        }
        Ok(Resolved {
            real: format!("/{}", current.join("/")),
            links,
        })
    }

    /// True when the path resolves to an existing entry.
    pub fn exists(&self, path: &str) -> bool {
        self.resolve(path).is_ok()
    }
}

fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_with_links() -> (tempfile::TempDir, Sysroot) {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        fs::create_dir_all(r.join("usr/lib64")).unwrap();
        fs::write(r.join("usr/lib/x86_64-linux-gnu/ld.so"), b"x").unwrap();
        symlink("../lib/x86_64-linux-gnu/ld.so", r.join("usr/lib64/ld.so")).unwrap();
        symlink("usr/lib64", r.join("lib64")).unwrap();
        symlink("/etc/passwd", r.join("usr/lib/escape")).unwrap();
        symlink("loop2", r.join("usr/lib/loop1")).unwrap();
        symlink("loop1", r.join("usr/lib/loop2")).unwrap();
        let s = Sysroot::open(r);
        (dir, s)
    }

    #[test]
    fn resolves_chain_inside_root() {
        let (_d, s) = root_with_links();
        let r = s.resolve("/lib64/ld.so").unwrap();
        assert_eq!(r.real, "/usr/lib/x86_64-linux-gnu/ld.so");
        assert_eq!(
            r.links,
            vec![
                ("/lib64".to_string(), "usr/lib64".to_string()),
                (
                    "/usr/lib64/ld.so".to_string(),
                    "../lib/x86_64-linux-gnu/ld.so".to_string()
                ),
            ]
        );
    }

    #[test]
    fn absolute_targets_stay_in_root() {
        let (_d, s) = root_with_links();
        // /etc/passwd does not exist inside the root: the host's must not be found.
        assert!(matches!(
            s.resolve("/usr/lib/escape"),
            Err(SysrootError::NotFound { .. })
        ));
    }

    #[test]
    fn loops_are_reported() {
        let (_d, s) = root_with_links();
        assert!(matches!(
            s.resolve("/usr/lib/loop1"),
            Err(SysrootError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn dotdot_is_clamped_at_root() {
        let (_d, s) = root_with_links();
        let r = s.resolve("/../../usr/lib/x86_64-linux-gnu/ld.so").unwrap();
        assert_eq!(r.real, "/usr/lib/x86_64-linux-gnu/ld.so");
    }
}
