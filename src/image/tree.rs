//! The image's file tree, as composed from the recipe before anything is written.
//!
//! Paths are absolute image paths ("/usr/bin/x"), kept in a sorted map so that every
//! consumer (policy, cpio writer, file list) sees the same deterministic order, and every
//! parent directory is created explicitly.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum FileSource {
    /// A file on the build host (in the extracted sysroot or next to the recipe).
    Host(PathBuf),
    /// Generated content (PID 1 config, inline recipe content).
    Bytes(Vec<u8>),
}

impl FileSource {
    /// Opens the content for streaming.
    pub fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        match self {
            FileSource::Host(p) => File::open(p)
                .map(|f| Box::new(f) as Box<dyn Read>)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
            FileSource::Bytes(b) => Ok(Box::new(&b[..])),
        }
    }
}

/// What kind of entry a node is.
#[derive(Debug, Clone)]
pub enum NodeKind {
    Dir,
    File { source: FileSource, size: u64 },
    Symlink { target: String },
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
}

/// One entry of the image.
#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (no file-type bits).
    pub mode: u32,
    /// Where it came from, for build.json and auditors: "libc6 2.43-7", "recipe", "zoa".
    pub origin: String,
}

impl Node {
    pub fn dir(mode: u32, origin: &str) -> Node {
        Node {
            kind: NodeKind::Dir,
            mode,
            origin: origin.to_owned(),
        }
    }

    pub fn bytes(data: Vec<u8>, mode: u32, origin: &str) -> Node {
        let size = data.len() as u64;
        Node {
            kind: NodeKind::File {
                source: FileSource::Bytes(data),
                size,
            },
            mode,
            origin: origin.to_owned(),
        }
    }

    pub fn host_file(path: PathBuf, size: u64, mode: u32, origin: &str) -> Node {
        Node {
            kind: NodeKind::File {
                source: FileSource::Host(path),
                size,
            },
            mode,
            origin: origin.to_owned(),
        }
    }

    pub fn symlink(target: &str, origin: &str) -> Node {
        Node {
            kind: NodeKind::Symlink {
                target: target.to_owned(),
            },
            mode: 0o777,
            origin: origin.to_owned(),
        }
    }

    /// Short type name for reports.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Dir => "dir",
            NodeKind::File { .. } => "file",
            NodeKind::Symlink { .. } => "symlink",
            NodeKind::CharDev { .. } => "chardev",
            NodeKind::BlockDev { .. } => "blockdev",
        }
    }
}

/// Errors while composing the tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {message}")]
    Conflict { path: String, message: String },
}

/// The image tree.
#[derive(Debug, Clone, Default)]
pub struct ImageTree {
    nodes: BTreeMap<String, Node>,
}

/// Default mode of directories created implicitly.
const PARENT_DIR_MODE: u32 = 0o755;

impl ImageTree {
    pub fn new() -> Self {
        ImageTree::default()
    }

    /// Inserts a node, creating parent directories. Inserting the same path twice is fine
    /// when both describe the same thing (e.g. two executables share a library); anything
    /// else is a conflict the recipe must resolve.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), TreeError> {
        self.ensure_parents(path)?;
        if let Some(existing) = self.nodes.get(path) {
            if same_entry(existing, &node) {
                return Ok(());
            }
            return Err(TreeError::Conflict {
                path: path.to_owned(),
                message: format!(
                    "added twice with different content ({} from {} and {} from {})",
                    existing.type_name(),
                    existing.origin,
                    node.type_name(),
                    node.origin
                ),
            });
        }
        self.nodes.insert(path.to_owned(), node);
        Ok(())
    }

    /// Inserts a node, replacing whatever was at that path.
    pub fn replace(&mut self, path: &str, node: Node) -> Result<(), TreeError> {
        self.ensure_parents(path)?;
        self.nodes.insert(path.to_owned(), node);
        Ok(())
    }

    /// Sets a directory's mode, creating it if needed (explicit recipe entries and
    /// sysroot directories override implicit parents).
    pub fn replace_dir_mode(
        &mut self,
        path: &str,
        mode: u32,
        origin: &str,
    ) -> Result<(), TreeError> {
        self.ensure_parents(path)?;
        match self.nodes.get_mut(path) {
            Some(n) if matches!(n.kind, NodeKind::Dir) => {
                n.mode = mode;
                Ok(())
            }
            Some(n) => Err(TreeError::Conflict {
                path: path.to_owned(),
                message: format!("is a {} from {}, not a directory", n.type_name(), n.origin),
            }),
            None => {
                self.nodes.insert(path.to_owned(), Node::dir(mode, origin));
                Ok(())
            }
        }
    }

    fn ensure_parents(&mut self, path: &str) -> Result<(), TreeError> {
        let mut idx = 0;
        while let Some(pos) = path[idx + 1..].find('/') {
            let parent = &path[..idx + 1 + pos];
            idx += 1 + pos;
            match self.nodes.get(parent) {
                Some(n) if matches!(n.kind, NodeKind::Dir) => {}
                Some(n) => {
                    return Err(TreeError::Conflict {
                        path: path.to_owned(),
                        message: format!(
                            "its parent {parent} is a {} (from {}), not a directory",
                            n.type_name(),
                            n.origin
                        ),
                    })
                }
                None => {
                    self.nodes
                        .insert(parent.to_owned(), Node::dir(PARENT_DIR_MODE, "zoa"));
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// Entries in sorted path order (parents before children).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Sum of regular file sizes.
    pub fn payload_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match n.kind {
                NodeKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

fn same_entry(a: &Node, b: &Node) -> bool {
    if a.mode != b.mode {
        return false;
    }
    match (&a.kind, &b.kind) {
        (NodeKind::Dir, NodeKind::Dir) => true,
        (NodeKind::Symlink { target: x }, NodeKind::Symlink { target: y }) => x == y,
        (
            NodeKind::File {
                source: FileSource::Host(x),
                ..
            },
            NodeKind::File {
                source: FileSource::Host(y),
                ..
            },
        ) => x == y,
        (
            NodeKind::File {
                source: FileSource::Bytes(x),
                ..
            },
            NodeKind::File {
                source: FileSource::Bytes(y),
                ..
            },
        ) => x == y,
        _ => false,
    }
}

/// One line of the file list in build.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub origin: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut t = ImageTree::new();
        t.insert("/usr/bin/x", Node::bytes(b"x".to_vec(), 0o755, "t"))
            .unwrap();
        let paths: Vec<_> = t.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(paths, vec!["/usr", "/usr/bin", "/usr/bin/x"]);
        assert_eq!(t.payload_bytes(), 1);
    }

    #[test]
    fn same_entry_twice_is_fine_different_is_conflict() {
        let mut t = ImageTree::new();
        t.insert("/a", Node::symlink("b", "t")).unwrap();
        t.insert("/a", Node::symlink("b", "u")).unwrap();
        let e = t
            .insert("/a", Node::symlink("c", "u"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/a") && e.contains("twice"), "{e}");
    }

    #[test]
    fn file_under_symlink_is_refused() {
        let mut t = ImageTree::new();
        t.insert("/lib64", Node::symlink("usr/lib64", "t")).unwrap();
        let e = t
            .insert("/lib64/x", Node::bytes(vec![], 0o644, "t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("parent /lib64 is a symlink"), "{e}");
    }
}
