//! Reading Debian packages (`.deb`): an `ar` archive holding `debian-binary`,
//! `control.tar.*` and `data.tar.*`, read with the `ar`, `tar`, `liblzma`, `zstd` and
//! `flate2` crates. Packages are untrusted input: every entry path is checked, nothing is
//! written through a symlink, and device nodes are refused.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Top-level directories that Debian's merged-/usr layout moves under `usr/`.
const MERGED_USR_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Errors reading a `.deb`.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("{deb}: {source}")]
    Io { deb: PathBuf, source: io::Error },
    #[error("{deb}: {message}")]
    Format { deb: PathBuf, message: String },
    #[error("{deb}: entry {entry:?}: {message}")]
    Entry {
        deb: PathBuf,
        entry: String,
        message: String,
    },
    #[error("{deb}: no file {member:?} in the package{hint}")]
    MemberNotFound {
        deb: PathBuf,
        member: String,
        hint: String,
    },
}

/// Package identity from the control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebInfo {
    pub package: String,
    pub version: String,
    pub architecture: String,
}

/// One extracted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebEntry {
    /// Relative, normalised path (merged-/usr applied).
    pub path: String,
    pub kind: DebEntryKind,
    pub mode: u32,
}

/// Kind of an extracted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebEntryKind {
    Dir,
    File { size: u64 },
    Symlink { target: String },
    HardLink { target: String },
}

fn format_err(deb: &Path, message: impl Into<String>) -> DebError {
    DebError::Format {
        deb: deb.to_owned(),
        message: message.into(),
    }
}

/// Checks that the ar members the archive declares fit in the file, so a truncated
/// package is refused even when the wanted member happens to precede the cut.
fn check_complete(deb: &Path) -> Result<(), DebError> {
    let file = File::open(deb).map_err(|source| DebError::Io {
        deb: deb.to_owned(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| DebError::Io {
            deb: deb.to_owned(),
            source,
        })?
        .len();
    let mut archive = ar::Archive::new(BufReader::new(file));
    // "!<arch>\n", then per member a 60-byte header and its data padded to an even size.
    let mut declared = 8u64;
    while let Some(entry) = archive.next_entry() {
        let entry =
            entry.map_err(|e| format_err(deb, format!("not a valid .deb (ar archive): {e}")))?;
        let size = entry.header().size();
        declared += 60 + size + size % 2;
        if declared > len + 1 {
            let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
            return Err(format_err(
                deb,
                format!("truncated: member {name} needs {declared} bytes but the file has {len}"),
            ));
        }
    }
    Ok(())
}

/// Opens the ar member whose name starts with `prefix` (e.g. "data.tar") and hands a
/// decompressing tar reader over it to `f`.
fn with_member_tar<T>(
    deb: &Path,
    prefix: &str,
    f: impl FnOnce(&mut tar::Archive<Box<dyn Read + '_>>) -> Result<T, DebError>,
) -> Result<T, DebError> {
    check_complete(deb)?;
    let file = File::open(deb).map_err(|source| DebError::Io {
        deb: deb.to_owned(),
        source,
    })?;
    let mut archive = ar::Archive::new(BufReader::new(file));
    let mut seen = Vec::new();
    while let Some(entry) = archive.next_entry() {
        let entry =
            entry.map_err(|e| format_err(deb, format!("not a valid .deb (ar archive): {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_owned();
        if seen.is_empty() && name != "debian-binary" {
            return Err(format_err(
                deb,
                format!("first member is {name:?}, not debian-binary"),
            ));
        }
        if !name.starts_with(prefix) {
            seen.push(name);
            continue;
        }
        let reader: Box<dyn Read + '_> = match name.strip_prefix(prefix) {
            Some(".xz") => Box::new(liblzma::read::XzDecoder::new(entry)),
            Some(".zst") => Box::new(
                zstd::stream::read::Decoder::new(entry)
                    .map_err(|e| format_err(deb, format!("{name}: {e}")))?,
            ),
            Some(".gz") => Box::new(flate2::read::GzDecoder::new(entry)),
            Some("") => Box::new(entry),
            _ => {
                return Err(format_err(
                    deb,
                    format!(
                        "unsupported member {name} (expected .tar, .tar.xz, .tar.zst or .tar.gz)"
                    ),
                ))
            }
        };
        let mut tar = tar::Archive::new(reader);
        return f(&mut tar);
    }
    Err(format_err(
        deb,
        format!(
            "no {prefix}.* member (members: {}); truncated?",
            seen.join(", ")
        ),
    ))
}

fn entry_err(deb: &Path, entry: &str, message: impl Into<String>) -> DebError {
    DebError::Entry {
        deb: deb.to_owned(),
        entry: entry.to_owned(),
        message: message.into(),
    }
}

/// Normalises a tar entry path: strips "./" and "/", refuses `..` and empty paths.
fn normalise(deb: &Path, raw: &Path) -> Result<Option<String>, DebError> {
    let shown = raw.display().to_string();
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| entry_err(deb, &shown, "path is not UTF-8"))?
                    .to_owned(),
            ),
            Component::CurDir => {}
            Component::RootDir => return Err(entry_err(deb, &shown, "absolute path")),
            Component::ParentDir => return Err(entry_err(deb, &shown, "path contains '..'")),
            Component::Prefix(_) => return Err(entry_err(deb, &shown, "invalid path")),
        }
    }
    if parts.is_empty() {
        return Ok(None); // "./" itself
    }
    Ok(Some(parts.join("/")))
}

/// Applies the merged-/usr layout: `lib/x` → `usr/lib/x`.
fn merged_usr(path: &str) -> String {
    let first = path.split('/').next().unwrap_or("");
    if MERGED_USR_DIRS.contains(&first) {
        format!("usr/{path}")
    } else {
        path.to_owned()
    }
}

/// Reads Package, Version and Architecture from the control file.
pub fn read_info(deb: &Path) -> Result<DebInfo, DebError> {
    let control = with_member_tar(deb, "control.tar", |tar| {
        let entries = tar
            .entries()
            .map_err(|e| format_err(deb, format!("control.tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format_err(deb, format!("control.tar: {e}")))?;
            let path = entry
                .path()
                .map_err(|e| format_err(deb, e.to_string()))?
                .into_owned();
            if normalise(deb, &path)?.as_deref() == Some("control") {
                let mut text = String::new();
                entry
                    .by_ref()
                    .take(1 << 20)
                    .read_to_string(&mut text)
                    .map_err(|e| format_err(deb, format!("control: {e}")))?;
                return Ok(text);
            }
        }
        Err(format_err(deb, "control.tar has no control file"))
    })?;
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| format_err(deb, format!("control file has no {name} field")))
    };
    Ok(DebInfo {
        package: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture")?,
    })
}

/// Checks that every parent of `rel` inside `root` is a real directory (never a
/// symlink), creating missing ones.
fn ensure_real_parents(deb: &Path, root: &Path, rel: &str) -> Result<(), DebError> {
    let mut cur = root.to_owned();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        cur.push(part);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(entry_err(
                    deb,
                    rel,
                    format!("parent {part:?} is a symlink; refusing to write through it"),
                ))
            }
            Ok(_) => {
                return Err(entry_err(
                    deb,
                    rel,
                    format!("parent {part:?} is not a directory"),
                ))
            }
            Err(_) => fs::create_dir(&cur).map_err(|e| entry_err(deb, rel, e.to_string()))?,
        }
    }
    Ok(())
}

fn remove_existing(deb: &Path, path: &Path, rel: &str) -> Result<(), DebError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(entry_err(
            deb,
            rel,
            "a directory already exists at this path",
        )),
        Ok(_) => fs::remove_file(path).map_err(|e| entry_err(deb, rel, e.to_string())),
        Err(_) => Ok(()),
    }
}

/// Extracts `data.tar.*` into `root` (an existing directory), applying merged-/usr.
pub fn extract_data(deb: &Path, root: &Path) -> Result<Vec<DebEntry>, DebError> {
    with_member_tar(deb, "data.tar", |tar| {
        let mut out = Vec::new();
        let entries = tar
            .entries()
            .map_err(|e| format_err(deb, format!("data.tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format_err(deb, format!("data.tar: {e}")))?;
            let raw = entry
                .path()
                .map_err(|e| format_err(deb, e.to_string()))?
                .into_owned();
            let Some(rel) = normalise(deb, &raw)? else {
                continue;
            };
            let rel = merged_usr(&rel);
            let mode = entry
                .header()
                .mode()
                .map_err(|e| entry_err(deb, &rel, e.to_string()))?
                & 0o7777;
            ensure_real_parents(deb, root, &rel)?;
            let dest = root.join(&rel);
            let kind = match entry.header().entry_type() {
                tar::EntryType::Directory => {
                    match fs::symlink_metadata(&dest) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => {
                            return Err(entry_err(
                                deb,
                                &rel,
                                "a non-directory already exists at this path",
                            ))
                        }
                        Err(_) => fs::create_dir(&dest)
                            .map_err(|e| entry_err(deb, &rel, e.to_string()))?,
                    }
                    set_mode(&dest, mode).map_err(|e| entry_err(deb, &rel, e.to_string()))?;
                    DebEntryKind::Dir
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    remove_existing(deb, &dest, &rel)?;
                    let mut f =
                        File::create(&dest).map_err(|e| entry_err(deb, &rel, e.to_string()))?;
                    let size = io::copy(&mut entry, &mut f)
                        .map_err(|e| entry_err(deb, &rel, format!("truncated or corrupt: {e}")))?;
                    f.flush().map_err(|e| entry_err(deb, &rel, e.to_string()))?;
                    set_mode(&dest, mode).map_err(|e| entry_err(deb, &rel, e.to_string()))?;
                    DebEntryKind::File { size }
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(|e| entry_err(deb, &rel, e.to_string()))?
                        .ok_or_else(|| entry_err(deb, &rel, "symlink without a target"))?
                        .to_string_lossy()
                        .into_owned();
                    remove_existing(deb, &dest, &rel)?;
                    std::os::unix::fs::symlink(&target, &dest)
                        .map_err(|e| entry_err(deb, &rel, e.to_string()))?;
                    DebEntryKind::Symlink { target }
                }
                tar::EntryType::Link => {
                    let target_raw = entry
                        .link_name()
                        .map_err(|e| entry_err(deb, &rel, e.to_string()))?
                        .ok_or_else(|| entry_err(deb, &rel, "hard link without a target"))?
                        .into_owned();
                    let target = normalise(deb, &target_raw)?
                        .map(|t| merged_usr(&t))
                        .ok_or_else(|| entry_err(deb, &rel, "hard link to the root"))?;
                    let src = root.join(&target);
                    let meta = fs::symlink_metadata(&src).map_err(|_| {
                        entry_err(
                            deb,
                            &rel,
                            format!("hard link to {target}, which was not extracted before it"),
                        )
                    })?;
                    if !meta.is_file() {
                        return Err(entry_err(
                            deb,
                            &rel,
                            format!("hard link to {target}, which is not a regular file"),
                        ));
                    }
                    remove_existing(deb, &dest, &rel)?;
                    fs::copy(&src, &dest).map_err(|e| entry_err(deb, &rel, e.to_string()))?;
                    DebEntryKind::HardLink { target }
                }
                other => {
                    return Err(entry_err(
                        deb,
                        &rel,
                        format!(
                            "unsupported entry type {other:?} (device nodes and fifos are refused)"
                        ),
                    ))
                }
            };
            out.push(DebEntry {
                path: rel,
                kind,
                mode,
            });
        }
        Ok(out)
    })
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Streams one regular file of `data.tar.*` into `out`, extracting nothing else.
pub fn copy_data_file(deb: &Path, member: &str, out: &mut dyn Write) -> Result<u64, DebError> {
    let wanted = normalise(deb, Path::new(member))?.unwrap_or_default();
    with_member_tar(deb, "data.tar", |tar| {
        let entries = tar
            .entries()
            .map_err(|e| format_err(deb, format!("data.tar: {e}")))?;
        let mut similar = Vec::new();
        let base = wanted.rsplit('/').next().unwrap_or("").to_owned();
        let stem: String = base.chars().take(6).collect();
        for entry in entries {
            let mut entry = entry.map_err(|e| format_err(deb, format!("data.tar: {e}")))?;
            let raw = entry
                .path()
                .map_err(|e| format_err(deb, e.to_string()))?
                .into_owned();
            let Some(rel) = normalise(deb, &raw)? else {
                continue;
            };
            if rel == wanted {
                if entry.header().entry_type() != tar::EntryType::Regular {
                    return Err(entry_err(deb, &rel, "is not a regular file"));
                }
                return io::copy(&mut entry, out)
                    .map_err(|e| entry_err(deb, &rel, format!("truncated or corrupt: {e}")));
            }
            if !stem.is_empty()
                && rel.rsplit('/').next().is_some_and(|n| n.starts_with(&stem))
                && similar.len() < 3
            {
                similar.push(rel);
            }
        }
        Err(DebError::MemberNotFound {
            deb: deb.to_owned(),
            member: wanted.clone(),
            hint: if similar.is_empty() {
                String::new()
            } else {
                format!(" (similar: {})", similar.join(", "))
            },
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(name: &str) -> Option<PathBuf> {
        let dir = std::env::var_os("ZOA_SHARED_INPUTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/inputs"));
        let p = dir.join(name);
        if p.is_file() {
            Some(p)
        } else {
            eprintln!("{} missing; skipping", p.display());
            None
        }
    }

    /// Builds a .deb in `dir` with the given data.tar entries and compression suffix.
    fn make_deb(
        dir: &Path,
        suffix: &str,
        build: impl FnOnce(&mut tar::Builder<Vec<u8>>),
    ) -> PathBuf {
        let mut control = tar::Builder::new(Vec::new());
        let text = b"Package: t\nVersion: 1.0\nArchitecture: amd64\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        control.append_data(&mut h, "./control", &text[..]).unwrap();
        let control = control.into_inner().unwrap();
        let mut data = tar::Builder::new(Vec::new());
        build(&mut data);
        let data = data.into_inner().unwrap();
        let data = match suffix {
            ".gz" => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(&data).unwrap();
                e.finish().unwrap()
            }
            ".zst" => zstd::encode_all(&data[..], 3).unwrap(),
            _ => data,
        };
        let path = dir.join(format!("t{suffix}.deb"));
        let mut ar = ar::Builder::new(File::create(&path).unwrap());
        ar.append(
            &ar::Header::new(b"debian-binary".to_vec(), 4),
            &b"2.0\n"[..],
        )
        .unwrap();
        ar.append(
            &ar::Header::new(b"control.tar".to_vec(), control.len() as u64),
            &control[..],
        )
        .unwrap();
        let name = format!("data.tar{suffix}");
        ar.append(
            &ar::Header::new(name.into_bytes(), data.len() as u64),
            &data[..],
        )
        .unwrap();
        path
    }

    fn file_entry(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Regular);
        // Set the raw name bytes: tar's safe setters refuse `..`, which is the point here.
        let name = h.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn link_entry(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(kind);
        h.set_mode(0o777);
        h.set_path(path).unwrap();
        h.set_link_name(target).unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }

    #[test]
    fn real_libc6_extracts_with_merged_usr_links() {
        let Some(deb) = shared("libc6_2.43-7_amd64.deb") else {
            return;
        };
        let root = tempfile::tempdir().unwrap();
        let entries = extract_data(&deb, root.path()).unwrap();
        assert!(root
            .path()
            .join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
            .is_file());
        let link = fs::read_link(root.path().join("usr/lib64/ld-linux-x86-64.so.2")).unwrap();
        assert_eq!(
            link,
            Path::new("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        assert!(entries
            .iter()
            .any(|e| e.path == "usr/lib/x86_64-linux-gnu/libc.so.6"));
    }

    #[test]
    fn real_kernel_info_and_stub_member() {
        if let Some(k) = shared("linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb") {
            let info = read_info(&k).unwrap();
            assert_eq!(info.package, "linux-image-6.1.0-56-cloud-amd64");
            assert_eq!(info.version, "6.1.192-2");
            assert_eq!(info.architecture, "amd64");
        }
        if let Some(s) = shared("systemd-boot-efi_252.39-1~deb12u2_amd64.deb") {
            let mut out = Vec::new();
            let n = copy_data_file(&s, "./usr/lib/systemd/boot/efi/linuxx64.efi.stub", &mut out)
                .unwrap();
            assert_eq!(n, out.len() as u64);
            assert_eq!(&out[..2], b"MZ");
            let e = copy_data_file(
                &s,
                "usr/lib/systemd/boot/efi/linuxx64.efi.stubX",
                &mut Vec::new(),
            )
            .unwrap_err();
            assert!(e.to_string().contains("similar"), "{e}");
        }
    }

    #[test]
    fn compressions_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        for suffix in ["", ".gz", ".zst"] {
            let deb = make_deb(dir.path(), suffix, |b| {
                file_entry(b, "./lib/x/a", b"hello");
                link_entry(b, tar::EntryType::Link, "./lib/x/b", "./lib/x/a");
            });
            let root = tempfile::tempdir().unwrap();
            let entries = extract_data(&deb, root.path()).unwrap();
            assert_eq!(fs::read(root.path().join("usr/lib/x/a")).unwrap(), b"hello");
            assert_eq!(fs::read(root.path().join("usr/lib/x/b")).unwrap(), b"hello");
            assert_eq!(entries.len(), 2);
            assert_eq!(read_info(&deb).unwrap().package, "t");
        }
    }

    #[test]
    fn traversal_and_absolute_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let deb = make_deb(dir.path(), "", |b| file_entry(b, "../x", b"evil"));
        let root = tempfile::tempdir().unwrap();
        let e = extract_data(&deb, root.path()).unwrap_err().to_string();
        assert!(e.contains("'..'"), "{e}");
        let deb = make_deb(dir.path(), ".gz", |b| file_entry(b, "/etc/x", b"evil"));
        let e = extract_data(&deb, root.path()).unwrap_err().to_string();
        assert!(e.contains("absolute"), "{e}");
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().display().to_string();
        let deb = make_deb(dir.path(), "", |b| {
            link_entry(b, tar::EntryType::Symlink, "./usr/x", &target);
            file_entry(b, "./usr/x/evil", b"evil");
        });
        let root = tempfile::tempdir().unwrap();
        let e = extract_data(&deb, root.path()).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert!(!outside.path().join("evil").exists());
    }

    #[test]
    fn device_nodes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let deb = make_deb(dir.path(), "", |b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_entry_type(tar::EntryType::Char);
            h.set_mode(0o600);
            h.set_path("./dev/mem").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        });
        let root = tempfile::tempdir().unwrap();
        let e = extract_data(&deb, root.path()).unwrap_err().to_string();
        assert!(e.contains("device nodes"), "{e}");
    }

    #[test]
    fn truncated_and_garbage_debs_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("g.deb");
        fs::write(&garbage, b"!<arch>\nnonsense").unwrap();
        assert!(read_info(&garbage).is_err());
        assert!(extract_data(&garbage, dir.path()).is_err());
        if let Some(real) = shared("libzstd1_1.5.7+dfsg-4_amd64.deb") {
            let bytes = fs::read(real).unwrap();
            let cut = dir.path().join("cut.deb");
            fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
            let root = tempfile::tempdir().unwrap();
            let e = extract_data(&cut, root.path()).unwrap_err().to_string();
            assert!(e.contains("cut.deb"), "{e}");
        }
        let no_data = dir.path().join("nodata.deb");
        let mut ar = ar::Builder::new(File::create(&no_data).unwrap());
        ar.append(
            &ar::Header::new(b"debian-binary".to_vec(), 4),
            &b"2.0\n"[..],
        )
        .unwrap();
        drop(ar);
        let e = extract_data(&no_data, dir.path()).unwrap_err().to_string();
        assert!(e.contains("no data.tar"), "{e}");
    }
}
