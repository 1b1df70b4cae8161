//! Reading Debian packages (`.deb`): an `ar` archive holding `debian-binary`,
//! `control.tar[.xz|.zst|.gz]` and `data.tar[.xz|.zst|.gz]`, read with the `ar`, `tar`,
//! `liblzma`, `zstd` and `flate2` crates and streamed (memory does not grow with the
//! package).
//!
//! Packages are untrusted input: every entry path is checked, nothing is ever written
//! through a symlink, device nodes and fifos are refused, and malformed archives give an
//! error naming the package and the member, never a panic.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Top-level directories that Debian's merged-/usr layout moves under `usr/`.
const MERGED_USR_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Size of an ar member header; members start at 8 ("!<arch>\n") and are 2-byte aligned.
const AR_HEADER_LEN: u64 = 60;
const AR_MAGIC_LEN: u64 = 8;

/// The control file is a few KiB; anything far larger is not a real package.
const MAX_CONTROL_LEN: u64 = 1 << 20;

/// Memory the xz decoder may use. dpkg's `xz -9` needs 65 MiB; the bound stops a crafted
/// header from asking liblzma for gigabytes.
const XZ_MEMLIMIT: u64 = 512 << 20;

/// Errors reading or extracting a `.deb`. Every variant names the package; member and
/// entry names and byte offsets are given where they locate the problem.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// The package file itself could not be opened or read.
    #[error("{}: cannot read the package: {source}", .deb.display())]
    Read {
        deb: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The outer `ar` archive is malformed.
    #[error("{}: not a valid .deb (ar archive) at byte {offset}: {message}", .deb.display())]
    Ar {
        deb: PathBuf,
        offset: u64,
        message: String,
    },
    /// An `ar` member declares more bytes than the file holds.
    #[error(
        "{}: truncated: member {member} at byte {offset} needs {needed} bytes but the file has {len}",
        .deb.display()
    )]
    Truncated {
        deb: PathBuf,
        member: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    /// `debian-binary` does not announce format 2.x.
    #[error(
        "{}: member debian-binary says {found:?}; only .deb format 2.x is supported",
        .deb.display()
    )]
    FormatVersion { deb: PathBuf, found: String },
    /// A required member (`debian-binary`, `control.tar*`, `data.tar*`) is absent.
    #[error("{}: no {wanted} member (members: {found})", .deb.display())]
    MissingMember {
        deb: PathBuf,
        wanted: &'static str,
        found: String,
    },
    /// A member that has no place in a .deb, or one in the wrong order.
    #[error("{}: unexpected member {member:?} at byte {offset}: {why}", .deb.display())]
    UnexpectedMember {
        deb: PathBuf,
        member: String,
        offset: u64,
        why: String,
    },
    /// A tar member compressed with something other than xz, zstd or gzip.
    #[error(
        "{}: member {member}: unsupported compression (expected .tar, .tar.xz, .tar.zst or .tar.gz)",
        .deb.display()
    )]
    Compression { deb: PathBuf, member: String },
    /// The compressed stream or the tar inside it is corrupt or cut short.
    #[error("{}: member {member}: corrupt or truncated {}: {message}", .deb.display(), where_in_tar(.after))]
    Tar {
        deb: PathBuf,
        member: String,
        /// The last entry read successfully, to locate the damage.
        after: Option<String>,
        message: String,
    },
    /// An entry path that would land outside the extraction root.
    #[error("{}: member {member}: entry {entry:?}: {reason}; refusing to extract it", .deb.display())]
    UnsafePath {
        deb: PathBuf,
        member: String,
        entry: String,
        reason: &'static str,
    },
    /// An entry whose parent directory is a symlink (it would be written elsewhere).
    #[error(
        "{}: member {member}: entry {entry:?}: parent {parent:?} is a symlink; refusing to write through it",
        .deb.display()
    )]
    SymlinkParent {
        deb: PathBuf,
        member: String,
        entry: String,
        parent: String,
    },
    /// A device node, fifo or other entry type a boot image has no use for.
    #[error("{}: member {member}: entry {entry:?} is a {kind}; packages for zoa may not contain one", .deb.display())]
    SpecialFile {
        deb: PathBuf,
        member: String,
        entry: String,
        kind: String,
    },
    /// A hard link whose target is not a regular file extracted earlier from the package.
    #[error(
        "{}: member {member}: entry {entry:?} is a hard link to {target:?}, which is not a regular file extracted earlier from this package",
        .deb.display()
    )]
    HardLink {
        deb: PathBuf,
        member: String,
        entry: String,
        target: String,
    },
    /// The entry clashes with what is already in the extraction root.
    #[error("{}: member {member}: entry {entry:?}: {message}", .deb.display())]
    Conflict {
        deb: PathBuf,
        member: String,
        entry: String,
        message: String,
    },
    /// The extraction root is missing or not a directory.
    #[error("extraction root {}: {message}", .root.display())]
    Root { root: PathBuf, message: String },
    /// Writing an extracted entry to disk failed.
    #[error("{}: cannot write entry {entry:?} to {}: {source}", .deb.display(), .path.display())]
    Write {
        deb: PathBuf,
        entry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `copy_data_file`: no entry of that name.
    #[error("{}: no file {member:?} in the package's data{}", .deb.display(), similar_hint(.similar))]
    NotFound {
        deb: PathBuf,
        member: String,
        /// A few entries with a similar name, to spot a typo or a version change.
        similar: Vec<String>,
    },
    /// `copy_data_file`: the entry exists but is not a regular file.
    #[error("{}: {member:?} in the package's data is a {kind}, not a regular file", .deb.display())]
    NotRegular {
        deb: PathBuf,
        member: String,
        kind: String,
    },
    /// `copy_data_file`: the destination refused the bytes.
    #[error("cannot write {member:?} from {}: {source}", .deb.display())]
    Output {
        deb: PathBuf,
        member: String,
        #[source]
        source: io::Error,
    },
    /// The control file is missing, unreadable or lacks a required field.
    #[error("{}: control file: {message}", .deb.display())]
    Control { deb: PathBuf, message: String },
}

fn where_in_tar(after: &Option<String>) -> String {
    match after {
        Some(entry) => format!("archive after entry {entry:?}"),
        None => "archive".to_owned(),
    }
}

fn similar_hint(similar: &[String]) -> String {
    if similar.is_empty() {
        String::new()
    } else {
        format!(" (similar: {})", similar.join(", "))
    }
}

/// Package identity from the control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebInfo {
    /// `Package:` — the package name.
    pub package: String,
    /// `Version:` — the full Debian version, epoch included.
    pub version: String,
    /// `Architecture:` — e.g. `amd64` or `all`.
    pub architecture: String,
}

/// One entry written by [`extract_data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebEntry {
    /// Relative, normalised path with merged-/usr applied (no leading `./` or `/`).
    pub path: String,
    /// What was written.
    pub kind: DebEntryKind,
    /// Permission bits (`mode & 0o7777`) as set on disk.
    pub mode: u32,
}

/// Kind of an extracted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebEntryKind {
    /// A directory.
    Dir,
    /// A regular file of `size` bytes.
    File { size: u64 },
    /// A symlink; the target is stored verbatim, as in the package.
    Symlink { target: String },
    /// A hard link to an earlier entry (normalised path, merged-/usr applied).
    HardLink { target: String },
}

// ---------------------------------------------------------------------------------------
// The outer ar archive.

/// Which tar member of the package to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Control,
    Data,
}

impl Part {
    fn prefix(self) -> &'static str {
        match self {
            Part::Control => "control.tar",
            Part::Data => "data.tar",
        }
    }
}

/// An ar member as laid out in the file.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    /// Byte offset of the member's header.
    offset: u64,
}

/// The members of a package that passed [`scan`].
#[derive(Debug)]
struct Layout {
    control: Member,
    data: Member,
}

/// A reader over one member of the outer ar archive.
type ArEntry<'a> = ar::Entry<'a, BufReader<File>>;

/// Iterates the members of the outer ar archive with `ar::Archive`, adding two checks the
/// crate does not make: a member that claims more bytes than the file has is refused up
/// front (so a cut-off package never half-works), and GNU/BSD extended member names are
/// refused before the crate parses them, because ar 0.9 indexes its name table without a
/// bounds check (it panics on a member named `/99`) and allocates whatever size a `//`
/// table claims. A .deb never uses extended names.
struct ArMembers {
    deb: PathBuf,
    archive: ar::Archive<BufReader<File>>,
    /// A second handle for positioned reads (`pread` does not move the shared offset).
    peek: File,
    len: u64,
    next_offset: u64,
}

impl ArMembers {
    fn open(deb: &Path) -> Result<ArMembers, DebError> {
        let read_err = |source| DebError::Read {
            deb: deb.to_owned(),
            source,
        };
        let file = File::open(deb).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        let peek = file.try_clone().map_err(read_err)?;
        // Checked here for a clearer message than the ar crate's "failed to read global
        // header" (a wrong download, an HTML error page saved as .deb, ...).
        let mut magic = [0u8; AR_MAGIC_LEN as usize];
        let got = peek.read_at(&mut magic, 0).map_err(read_err)?;
        if magic[..got] != *b"!<arch>\n" {
            return Err(DebError::Ar {
                deb: deb.to_owned(),
                offset: 0,
                message: "the file does not start with the ar signature \"!<arch>\"".to_owned(),
            });
        }
        Ok(ArMembers {
            deb: deb.to_owned(),
            archive: ar::Archive::new(BufReader::with_capacity(1 << 16, file)),
            peek,
            len,
            next_offset: AR_MAGIC_LEN,
        })
    }

    /// The next member and a reader over its bytes.
    fn next(&mut self) -> Option<Result<(Member, ArEntry<'_>), DebError>> {
        let offset = self.next_offset;
        let mut id = [0u8; 16];
        let got = match self.peek.read_at(&mut id, offset) {
            Ok(n) => n,
            Err(source) => {
                return Some(Err(DebError::Read {
                    deb: self.deb.clone(),
                    source,
                }))
            }
        };
        let id = &id[..got];
        if id.starts_with(b"/") || id.starts_with(b"#1/") {
            return Some(Err(DebError::UnexpectedMember {
                deb: self.deb.clone(),
                member: String::from_utf8_lossy(id).trim_end().to_owned(),
                offset,
                why: "extended (GNU/BSD) member names are not used in .deb files".to_owned(),
            }));
        }
        let entry = match self.archive.next_entry()? {
            Ok(entry) => entry,
            Err(e) => {
                return Some(Err(DebError::Ar {
                    deb: self.deb.clone(),
                    offset,
                    message: e.to_string(),
                }))
            }
        };
        let name = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_owned();
        let size = entry.header().size();
        // The ar crate reads the common (dpkg) variant only after the checks above, so
        // every header is exactly 60 bytes and data is padded to an even length.
        let end = offset.saturating_add(AR_HEADER_LEN).saturating_add(size);
        if end > self.len {
            return Some(Err(DebError::Truncated {
                deb: self.deb.clone(),
                member: name,
                offset,
                needed: end,
                len: self.len,
            }));
        }
        self.next_offset = end + size % 2;
        Some(Ok((Member { name, offset }, entry)))
    }
}

/// Moves past the rest of a member without reading it (`ar::Entry` drains on drop).
fn skip(deb: &Path, member: &Member, mut entry: ArEntry<'_>) -> Result<(), DebError> {
    entry
        .seek(SeekFrom::End(0))
        .map(drop)
        .map_err(|e| DebError::Ar {
            deb: deb.to_owned(),
            offset: member.offset,
            message: format!("member {}: {e}", member.name),
        })
}

/// Checks the whole ar layout the way dpkg does: `debian-binary` (format 2.x) first, then
/// `control.tar*`, then `data.tar*`; members named `_…` are ignored. Seeks over member
/// data, so it costs a few reads whatever the package size.
fn scan(deb: &Path) -> Result<Layout, DebError> {
    let mut members = ArMembers::open(deb)?;
    let mut seen: Vec<String> = Vec::new();
    let mut control: Option<Member> = None;
    let mut data: Option<Member> = None;
    while let Some(next) = members.next() {
        let (member, mut entry) = next?;
        seen.push(member.name.clone());
        let unexpected = |why: &str| DebError::UnexpectedMember {
            deb: deb.to_owned(),
            member: member.name.clone(),
            offset: member.offset,
            why: why.to_owned(),
        };
        if seen.len() == 1 {
            if member.name != "debian-binary" {
                return Err(unexpected("a .deb must start with debian-binary"));
            }
            let mut text = Vec::new();
            entry
                .by_ref()
                .take(64)
                .read_to_end(&mut text)
                .map_err(|e| DebError::Ar {
                    deb: deb.to_owned(),
                    offset: member.offset,
                    message: format!("member debian-binary: {e}"),
                })?;
            check_format_version(deb, &text)?;
        } else if member.name.starts_with('_') {
            // Reserved for local additions; dpkg ignores them too.
        } else if member.name.starts_with(Part::Control.prefix()) {
            if control.is_some() || data.is_some() {
                return Err(unexpected("control.tar must appear once, before data.tar"));
            }
            compression(deb, &member.name, Part::Control)?;
            control = Some(member.clone());
        } else if member.name.starts_with(Part::Data.prefix()) {
            if control.is_none() {
                return Err(unexpected("data.tar must come after control.tar"));
            }
            if data.is_some() {
                return Err(unexpected("a second data.tar member"));
            }
            compression(deb, &member.name, Part::Data)?;
            data = Some(member.clone());
        } else {
            return Err(unexpected("not a member of a .deb"));
        }
        skip(deb, &member, entry)?;
    }
    let missing = |wanted| DebError::MissingMember {
        deb: deb.to_owned(),
        wanted,
        found: if seen.is_empty() {
            "none".to_owned()
        } else {
            seen.join(", ")
        },
    };
    if seen.is_empty() {
        return Err(missing("debian-binary"));
    }
    Ok(Layout {
        control: control.ok_or_else(|| missing("control.tar"))?,
        data: data.ok_or_else(|| missing("data.tar"))?,
    })
}

/// deb(5): the first line is the format version; a new minor version (or extra lines)
/// must be accepted, a new major one refused.
fn check_format_version(deb: &Path, text: &[u8]) -> Result<(), DebError> {
    let text = String::from_utf8_lossy(text);
    let first = text.split('\n').next().unwrap_or("");
    let ok = first
        .strip_prefix("2.")
        .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()))
        && text.contains('\n');
    if ok {
        Ok(())
    } else {
        Err(DebError::FormatVersion {
            deb: deb.to_owned(),
            found: text.into_owned(),
        })
    }
}

/// The compression of a tar member, from its name suffix (what dpkg does too).
#[derive(Debug, Clone, Copy)]
enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

fn compression(deb: &Path, name: &str, part: Part) -> Result<Compression, DebError> {
    match name.strip_prefix(part.prefix()) {
        Some("") => Ok(Compression::None),
        Some(".xz") => Ok(Compression::Xz),
        Some(".zst") => Ok(Compression::Zstd),
        Some(".gz") => Ok(Compression::Gzip),
        _ => Err(DebError::Compression {
            deb: deb.to_owned(),
            member: name.to_owned(),
        }),
    }
}

/// Opens the `part` tar member of `deb` and hands a tar reader over its decompressed
/// bytes, and the member's name, to `f`.
fn with_tar<T>(
    deb: &Path,
    part: Part,
    f: impl FnOnce(&mut tar::Archive<Box<dyn Read + '_>>, &str) -> Result<T, DebError>,
) -> Result<T, DebError> {
    let layout = scan(deb)?;
    let wanted = match part {
        Part::Control => layout.control,
        Part::Data => layout.data,
    };
    let mut members = ArMembers::open(deb)?;
    while let Some(next) = members.next() {
        let (member, entry) = next?;
        if member.offset != wanted.offset {
            skip(deb, &member, entry)?;
            continue;
        }
        let tar_err = |message: String| DebError::Tar {
            deb: deb.to_owned(),
            member: member.name.clone(),
            after: None,
            message,
        };
        let reader: Box<dyn Read + '_> = match compression(deb, &member.name, part)? {
            Compression::None => Box::new(BufReader::with_capacity(1 << 16, entry)),
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
                    .map_err(|e| tar_err(e.to_string()))?;
                Box::new(liblzma::read::XzDecoder::new_stream(entry, stream))
            }
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(entry).map_err(|e| tar_err(e.to_string()))?,
            ),
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(entry)),
        };
        let mut archive = tar::Archive::new(reader);
        return f(&mut archive, &member.name);
    }
    // The file changed between the two passes.
    Err(DebError::MissingMember {
        deb: deb.to_owned(),
        wanted: part.prefix(),
        found: "changed while being read".to_owned(),
    })
}

// ---------------------------------------------------------------------------------------
// Entry paths.

/// Normalises an entry path: strips leading `./`, drops `.` and empty components.
/// `Ok(None)` is the root itself (`./`). Refuses what could escape the root.
fn normalize(raw: &[u8]) -> Result<Option<String>, &'static str> {
    if raw.is_empty() {
        return Err("empty path");
    }
    let text = std::str::from_utf8(raw).map_err(|_| "path is not valid UTF-8")?;
    let mut rest = text;
    while let Some(r) = rest.strip_prefix("./") {
        rest = r;
    }
    if rest.starts_with('/') {
        return Err("absolute path");
    }
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("path contains '..'"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        Ok(None)
    } else {
        Ok(Some(parts.join("/")))
    }
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

/// True for a top-level merged-/usr link such as `lib64 -> usr/lib64`, which newer
/// packages ship themselves: the merged layout already provides it, and writing it as
/// `usr/lib64 -> usr/lib64` would break the tree.
fn is_merged_usr_link(rel: &str, target: &str) -> bool {
    MERGED_USR_DIRS.contains(&rel)
        && target
            .trim_start_matches('/')
            .trim_end_matches('/')
            .strip_prefix("usr/")
            == Some(rel)
}

fn kind_name(t: tar::EntryType) -> String {
    match t {
        tar::EntryType::Char => "character device node".to_owned(),
        tar::EntryType::Block => "block device node".to_owned(),
        tar::EntryType::Fifo => "fifo".to_owned(),
        tar::EntryType::Directory => "directory".to_owned(),
        tar::EntryType::Symlink => "symlink".to_owned(),
        tar::EntryType::Link => "hard link".to_owned(),
        other => format!(
            "entry of unsupported tar type {:?}",
            other.as_byte() as char
        ),
    }
}

/// Copies `reader` to `writer` with `buf`, telling read failures (a corrupt package) from
/// write failures (the destination).
fn pump(reader: &mut dyn Read, writer: &mut dyn Write, buf: &mut [u8]) -> Result<u64, Pump> {
    let mut total = 0u64;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Pump::Read(e)),
        };
        writer.write_all(&buf[..n]).map_err(Pump::Write)?;
        total += n as u64;
    }
}

enum Pump {
    Read(io::Error),
    Write(io::Error),
}

// ---------------------------------------------------------------------------------------
// Public API.

/// Reads the control file (`control.tar[.xz|.zst|.gz]` → `./control`) and returns its
/// `Package`, `Version` and `Architecture` fields.
pub fn read_info(deb: &Path) -> Result<DebInfo, DebError> {
    let control = with_tar(deb, Part::Control, |tar, member| {
        let tar_err = |after: Option<String>, e: io::Error| DebError::Tar {
            deb: deb.to_owned(),
            member: member.to_owned(),
            after,
            message: e.to_string(),
        };
        let mut last: Option<String> = None;
        for entry in tar.entries().map_err(|e| tar_err(None, e))? {
            let entry = entry.map_err(|e| tar_err(last.clone(), e))?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if normalize(path.as_bytes()).ok().flatten().as_deref() == Some("control")
                && entry.header().entry_type().is_file()
            {
                if entry.size() > MAX_CONTROL_LEN {
                    return Err(DebError::Control {
                        deb: deb.to_owned(),
                        message: format!(
                            "{} bytes, more than the {MAX_CONTROL_LEN} a control file may have",
                            entry.size()
                        ),
                    });
                }
                let mut text = Vec::new();
                entry
                    .take(MAX_CONTROL_LEN)
                    .read_to_end(&mut text)
                    .map_err(|e| tar_err(Some(path.clone()), e))?;
                return String::from_utf8(text).map_err(|_| DebError::Control {
                    deb: deb.to_owned(),
                    message: "not valid UTF-8".to_owned(),
                });
            }
            last = Some(path);
        }
        Err(DebError::Control {
            deb: deb.to_owned(),
            message: format!("{member} has no ./control file"),
        })
    })?;
    let field = |name: &str| {
        control_field(&control, name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| DebError::Control {
                deb: deb.to_owned(),
                message: format!("no {name} field"),
            })
    };
    Ok(DebInfo {
        package: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture")?,
    })
}

/// A single-line field of the control file's (only) paragraph; names are
/// case-insensitive (Debian policy 5.1).
fn control_field(control: &str, name: &str) -> Option<String> {
    control
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with([' ', '\t']))
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
}

/// Extracts `data.tar.*` of `deb` into `root` (an existing directory) and returns what it
/// wrote, in archive order.
///
/// Applies Debian's merged-/usr layout: an entry under `bin/`, `sbin/`, `lib/`, `lib32/`,
/// `lib64/` or `libx32/` is written under `usr/` instead, so old and new packages overlay
/// into one tree. An entry that already exists in `root` is replaced, except that a
/// directory stays a directory (a symlink over it is skipped, a file over it refused).
/// Symlink targets are written verbatim and never followed; hard links become hard links
/// (or copies) of a file extracted earlier from the same package; permission bits are
/// set exactly, whatever the umask.
pub fn extract_data(deb: &Path, root: &Path) -> Result<Vec<DebEntry>, DebError> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(DebError::Root {
                root: root.to_owned(),
                message: "not a directory".to_owned(),
            })
        }
        Err(e) => {
            return Err(DebError::Root {
                root: root.to_owned(),
                message: e.to_string(),
            })
        }
    }
    with_tar(deb, Part::Data, |tar, member| {
        let mut x = Extractor {
            deb,
            member,
            root,
            files: HashSet::new(),
            dir_modes: Vec::new(),
            buf: vec![0u8; 1 << 16],
        };
        let mut out = Vec::new();
        let mut last: Option<String> = None;
        let entries = tar.entries().map_err(|e| x.tar_err(None, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| x.tar_err(last.clone(), e))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if let Some(done) = x.entry(entry, &raw)? {
                out.push(done);
            }
            last = Some(raw);
        }
        x.finish_dirs()?;
        Ok(out)
    })
}

/// State of one `extract_data` call.
struct Extractor<'a> {
    deb: &'a Path,
    member: &'a str,
    root: &'a Path,
    /// Regular files written so far, the only valid hard-link targets.
    files: HashSet<String>,
    /// Directory modes, applied at the end so a read-only directory can still be filled.
    dir_modes: Vec<(String, u32)>,
    buf: Vec<u8>,
}

impl Extractor<'_> {
    fn tar_err(&self, after: Option<String>, e: io::Error) -> DebError {
        DebError::Tar {
            deb: self.deb.to_owned(),
            member: self.member.to_owned(),
            after,
            message: e.to_string(),
        }
    }

    fn unsafe_path(&self, entry: &str, reason: &'static str) -> DebError {
        DebError::UnsafePath {
            deb: self.deb.to_owned(),
            member: self.member.to_owned(),
            entry: entry.to_owned(),
            reason,
        }
    }

    fn conflict(&self, entry: &str, message: impl Into<String>) -> DebError {
        DebError::Conflict {
            deb: self.deb.to_owned(),
            member: self.member.to_owned(),
            entry: entry.to_owned(),
            message: message.into(),
        }
    }

    fn write_err(&self, entry: &str, path: &Path, source: io::Error) -> DebError {
        DebError::Write {
            deb: self.deb.to_owned(),
            entry: entry.to_owned(),
            path: path.to_owned(),
            source,
        }
    }

    /// Writes one entry; `None` when it is skipped (the root itself, a pax global header,
    /// a merged-/usr link, a symlink over a directory).
    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        raw: &str,
    ) -> Result<Option<DebEntry>, DebError> {
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(None);
        }
        let rel = match normalize(&entry.path_bytes()) {
            Ok(Some(rel)) => rel,
            Ok(None) if kind.is_dir() => return Ok(None),
            Ok(None) => return Err(self.unsafe_path(raw, "names the extraction root itself")),
            Err(reason) => return Err(self.unsafe_path(raw, reason)),
        };
        let mode = entry
            .header()
            .mode()
            .map_err(|e| self.tar_err(Some(raw.to_owned()), e))?
            & 0o7777;
        let path = merged_usr(&rel);
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let dest = self.prepare(&path, false)?;
                let size = self.write_file(&mut entry, &path, &dest, mode)?;
                self.files.insert(path.clone());
                Ok(Some(DebEntry {
                    path,
                    kind: DebEntryKind::File { size },
                    mode,
                }))
            }
            tar::EntryType::Directory => {
                let dest = self.real_parents(&path)?;
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        // A directory replaces a file or symlink (never followed).
                        fs::remove_file(&dest).map_err(|e| self.write_err(&path, &dest, e))?;
                        self.files.remove(&path);
                        fs::create_dir(&dest).map_err(|e| self.write_err(&path, &dest, e))?;
                    }
                    Err(_) => fs::create_dir(&dest).map_err(|e| self.write_err(&path, &dest, e))?,
                }
                self.dir_modes.push((path.clone(), mode));
                Ok(Some(DebEntry {
                    path,
                    kind: DebEntryKind::Dir,
                    mode,
                }))
            }
            tar::EntryType::Symlink => {
                let target = self.link_target(&entry, raw, &path)?;
                if is_merged_usr_link(&rel, &target) {
                    return Ok(None);
                }
                let dest = self.real_parents(&path)?;
                if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                    // As dpkg does: a directory stays a directory (merged-/usr relies on it).
                    log::debug!(
                        "{}: keeping directory {path} instead of a symlink to {target}",
                        self.deb.display()
                    );
                    return Ok(None);
                }
                let dest = self.prepare(&path, true)?;
                std::os::unix::fs::symlink(&target, &dest)
                    .map_err(|e| self.write_err(&path, &dest, e))?;
                Ok(Some(DebEntry {
                    path,
                    kind: DebEntryKind::Symlink { target },
                    mode,
                }))
            }
            tar::EntryType::Link => {
                let raw_target = self.link_target(&entry, raw, &path)?;
                let target = match normalize(raw_target.as_bytes()) {
                    Ok(Some(t)) => merged_usr(&t),
                    Ok(None) => return Err(self.unsafe_path(&raw_target, "hard link to the root")),
                    Err(reason) => return Err(self.unsafe_path(&raw_target, reason)),
                };
                let mode = self.hard_link(&path, &target)?;
                Ok(Some(DebEntry {
                    path,
                    kind: DebEntryKind::HardLink { target },
                    mode,
                }))
            }
            other => Err(DebError::SpecialFile {
                deb: self.deb.to_owned(),
                member: self.member.to_owned(),
                entry: path,
                kind: kind_name(other),
            }),
        }
    }

    fn link_target<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        raw: &str,
        path: &str,
    ) -> Result<String, DebError> {
        let bytes = entry.link_name_bytes().unwrap_or_default();
        if bytes.is_empty() {
            return Err(self.conflict(path, "link without a target"));
        }
        String::from_utf8(bytes.into_owned())
            .map_err(|_| self.unsafe_path(raw, "link target is not valid UTF-8"))
    }

    /// Makes sure every parent of `rel` inside the root is a real directory (creating
    /// missing ones, mode 0755) and returns the host path of `rel`. A symlinked parent is
    /// refused: writing through it could land anywhere.
    fn real_parents(&self, rel: &str) -> Result<PathBuf, DebError> {
        let mut cur = self.root.to_owned();
        let mut parts = rel.split('/').peekable();
        let mut so_far = String::new();
        while let Some(part) = parts.next() {
            cur.push(part);
            if parts.peek().is_none() {
                break;
            }
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(DebError::SymlinkParent {
                        deb: self.deb.to_owned(),
                        member: self.member.to_owned(),
                        entry: rel.to_owned(),
                        parent: so_far,
                    })
                }
                Ok(_) => {
                    return Err(self.conflict(rel, format!("parent {so_far:?} is not a directory")))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(|e| self.write_err(rel, &cur, e))?;
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                        .map_err(|e| self.write_err(rel, &cur, e))?;
                }
                Err(e) => return Err(self.write_err(rel, &cur, e)),
            }
        }
        Ok(cur)
    }

    /// Clears the way for a non-directory at `rel`: an existing file or symlink is
    /// removed (not followed), an existing directory is an error.
    fn prepare(&mut self, rel: &str, is_symlink: bool) -> Result<PathBuf, DebError> {
        let dest = self.real_parents(rel)?;
        match fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => {
                let what = if is_symlink { "symlink" } else { "file" };
                Err(self.conflict(
                    rel,
                    format!("a directory already exists there; a {what} cannot replace it"),
                ))
            }
            Ok(_) => {
                fs::remove_file(&dest).map_err(|e| self.write_err(rel, &dest, e))?;
                self.files.remove(rel);
                Ok(dest)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(dest),
            Err(e) => Err(self.write_err(rel, &dest, e)),
        }
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &str,
        dest: &Path,
        mode: u32,
    ) -> Result<u64, DebError> {
        let expected = entry.size();
        // create_new: O_EXCL never follows a symlink that appeared at the final component.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .map_err(|e| self.write_err(rel, dest, e))?;
        let size = match pump(entry, &mut file, &mut self.buf) {
            Ok(n) => n,
            Err(Pump::Read(e)) => return Err(self.tar_err(Some(rel.to_owned()), e)),
            Err(Pump::Write(e)) => return Err(self.write_err(rel, dest, e)),
        };
        if size != expected {
            return Err(self.tar_err(
                Some(rel.to_owned()),
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("entry {rel:?} has {size} of its {expected} bytes"),
                ),
            ));
        }
        // fchmod on the open file: exact bits whatever the umask, and no path lookup.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| self.write_err(rel, dest, e))?;
        Ok(size)
    }

    /// Materialises a hard link as a real hard link (or a copy where the filesystem
    /// refuses one) of a regular file this package wrote earlier. Returns its mode.
    fn hard_link(&mut self, rel: &str, target: &str) -> Result<u32, DebError> {
        let refuse = || DebError::HardLink {
            deb: self.deb.to_owned(),
            member: self.member.to_owned(),
            entry: rel.to_owned(),
            target: target.to_owned(),
        };
        if rel == target || !self.files.contains(target) {
            return Err(refuse());
        }
        // The target's parents were real directories when it was written and directories
        // are never replaced, but check again: a copy must never read outside the root.
        let src = self.real_parents(target)?;
        let meta = fs::symlink_metadata(&src).map_err(|_| refuse())?;
        if !meta.is_file() {
            return Err(refuse());
        }
        let dest = self.prepare(rel, false)?;
        if fs::hard_link(&src, &dest).is_err() {
            fs::copy(&src, &dest).map_err(|e| self.write_err(rel, &dest, e))?;
        }
        self.files.insert(rel.to_owned());
        Ok(meta.permissions().mode() & 0o7777)
    }

    /// Applies directory modes, deepest first.
    fn finish_dirs(&mut self) -> Result<(), DebError> {
        for (rel, mode) in self.dir_modes.iter().rev() {
            let dest = self.root.join(rel);
            // Only real directories: set_permissions follows symlinks.
            if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                fs::set_permissions(&dest, fs::Permissions::from_mode(*mode))
                    .map_err(|e| self.write_err(rel, &dest, e))?;
            }
        }
        Ok(())
    }
}

/// Streams one regular file of `data.tar.*` into `out` without extracting anything else,
/// and returns its size. `member` may be written with or without a leading `./` or `/`,
/// and matches across merged-/usr (`lib/x` finds `./usr/lib/x` and the reverse). A hard
/// link is followed to the file it names. Absent members are reported with a few similar
/// names.
pub fn copy_data_file(deb: &Path, member: &str, out: &mut dyn Write) -> Result<u64, DebError> {
    let sizes = copy_data_files(deb, &mut [(member, out)])?;
    Ok(sizes[0])
}

/// [`copy_data_file`] for several members of one package, in one pass over its archive:
/// `requests[i].1` receives member `requests[i].0`, and the sizes come back in the same
/// order. A recipe taking a dozen kernel modules from the kernel's package decompresses
/// it once instead of a dozen times (xz decoding was 87% of the demo build's time). The
/// pass stops at the last member wanted. A member asked for twice is written to both.
pub fn copy_data_files(
    deb: &Path,
    requests: &mut [(&str, &mut dyn Write)],
) -> Result<Vec<u64>, DebError> {
    let mut wanted = Vec::with_capacity(requests.len());
    for (i, (member, _)) in requests.iter().enumerate() {
        match normalize(member.trim_start_matches('/').as_bytes()) {
            Ok(Some(w)) => wanted.push((i, merged_usr(&w))),
            _ => return Err(not_found(deb, member, Vec::new())),
        }
    }
    let mut sizes = vec![0u64; requests.len()];
    // Hard links name an entry that precedes them: one more pass copies their targets.
    let mut targets = Vec::new();
    for (i, found) in copy_pass(deb, &wanted, requests)? {
        match found {
            Copied::Done(n) => sizes[i] = n,
            Copied::HardLink(target) => targets.push((i, target)),
        }
    }
    if !targets.is_empty() {
        for (i, found) in copy_pass(deb, &targets, requests)? {
            match found {
                Copied::Done(n) => sizes[i] = n,
                Copied::HardLink(_) => {
                    return Err(DebError::NotRegular {
                        deb: deb.to_owned(),
                        member: requests[i].0.to_owned(),
                        kind: "hard link to a hard link".to_owned(),
                    })
                }
            }
        }
    }
    Ok(sizes)
}

enum Copied {
    Done(u64),
    /// The entry is a hard link to this (normalised) path, which precedes it.
    HardLink(String),
}

/// Writes every byte to each writer in turn: one member asked for by several requests.
struct Tee<'w>(Vec<&'w mut dyn Write>);

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for w in &mut self.0 {
            w.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|w| w.flush())
    }
}

/// One pass over `data.tar.*` for the (request index, normalised name) pairs in `wanted`:
/// each regular file found is streamed into its requests' writers, a hard link's target is
/// returned instead. The first name not found (in `wanted`'s order) is an error naming a
/// few similar entries; so is a wanted entry that is a symlink or anything but a file.
fn copy_pass(
    deb: &Path,
    wanted: &[(usize, String)],
    requests: &mut [(&str, &mut dyn Write)],
) -> Result<Vec<(usize, Copied)>, DebError> {
    let mut pending: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, name) in wanted {
        pending.entry(name.as_str()).or_default().push(*i);
    }
    // Similar = same first few characters of the file name (catches version bumps).
    let stems: Vec<(usize, String)> = wanted
        .iter()
        .map(|(i, name)| {
            let base = name.rsplit('/').next().unwrap_or(name);
            (*i, base.chars().take(6).collect())
        })
        .collect();
    let mut similar: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut found = Vec::new();
    with_tar(deb, Part::Data, |tar, data_member| {
        let tar_err = |after: Option<String>, e: io::Error| DebError::Tar {
            deb: deb.to_owned(),
            member: data_member.to_owned(),
            after,
            message: e.to_string(),
        };
        let mut last: Option<String> = None;
        let mut buf = vec![0u8; 1 << 16];
        for entry in tar.entries().map_err(|e| tar_err(None, e))? {
            if pending.is_empty() {
                break;
            }
            let mut entry = entry.map_err(|e| tar_err(last.clone(), e))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            // Unsafe paths cannot equal a normalised name; they are simply not matches.
            let Ok(Some(rel)) = normalize(raw.as_bytes()) else {
                last = Some(raw);
                continue;
            };
            let rel = merged_usr(&rel);
            let Some(indices) = pending.remove(rel.as_str()) else {
                let name = rel.rsplit('/').next().unwrap_or(&rel);
                for (i, stem) in &stems {
                    let list = similar.entry(*i).or_default();
                    if list.len() < 3 && !stem.is_empty() && name.starts_with(stem.as_str()) {
                        list.push(rel.clone());
                    }
                }
                last = Some(raw);
                continue;
            };
            let member = requests[indices[0]].0;
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {}
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .and_then(|t| normalize(&t).ok().flatten())
                        .map(|t| merged_usr(&t));
                    match target {
                        Some(t) if t != rel => {
                            found.extend(indices.iter().map(|i| (*i, Copied::HardLink(t.clone()))));
                            last = Some(raw);
                            continue;
                        }
                        _ => {
                            return Err(DebError::NotRegular {
                                deb: deb.to_owned(),
                                member: member.to_owned(),
                                kind: "hard link without a valid target".to_owned(),
                            })
                        }
                    }
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    return Err(DebError::NotRegular {
                        deb: deb.to_owned(),
                        member: member.to_owned(),
                        kind: format!("symlink to {target:?}"),
                    });
                }
                other => {
                    return Err(DebError::NotRegular {
                        deb: deb.to_owned(),
                        member: member.to_owned(),
                        kind: kind_name(other),
                    })
                }
            }
            let expected = entry.size();
            let mut tee = Tee(requests
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| indices.contains(i))
                .map(|(_, (_, out))| &mut **out as &mut dyn Write)
                .collect());
            let n = match pump(&mut entry, &mut tee, &mut buf) {
                Ok(n) => n,
                Err(Pump::Read(e)) => return Err(tar_err(Some(raw), e)),
                Err(Pump::Write(source)) => {
                    return Err(DebError::Output {
                        deb: deb.to_owned(),
                        member: member.to_owned(),
                        source,
                    })
                }
            };
            if n != expected {
                return Err(tar_err(
                    Some(raw),
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("entry has {n} of its {expected} bytes"),
                    ),
                ));
            }
            found.extend(indices.iter().map(|i| (*i, Copied::Done(n))));
            last = Some(raw);
        }
        Ok(())
    })?;
    if let Some((i, _)) = wanted
        .iter()
        .find(|(i, _)| !found.iter().any(|(j, _)| j == i))
    {
        let similar = similar.remove(i).unwrap_or_default();
        return Err(not_found(deb, requests[*i].0, similar));
    }
    Ok(found)
}

fn not_found(deb: &Path, member: &str, similar: Vec<String>) -> DebError {
    DebError::NotFound {
        deb: deb.to_owned(),
        member: member.to_owned(),
        similar,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared pinned inputs directory, if present.
    fn inputs_dir() -> Option<PathBuf> {
        let candidates = [
            std::env::var_os("ZOA_SHARED_INPUTS").map(PathBuf::from),
            Some(PathBuf::from("/work/shared/inputs")),
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/inputs")),
        ];
        candidates.into_iter().flatten().find(|d| d.is_dir())
    }

    fn shared(name: &str) -> Option<PathBuf> {
        let path = inputs_dir().map(|d| d.join(name)).filter(|p| p.is_file());
        if path.is_none() {
            eprintln!("shared input {name} not found (set ZOA_SHARED_INPUTS); skipping");
        }
        path
    }

    /// What goes into a test package's data.tar.
    enum E<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str, u32),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
        Special(&'a str, tar::EntryType),
    }

    /// Writes raw name bytes: tar's safe setters refuse `..` and absolute paths, which
    /// are exactly what these tests need.
    fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h
    }

    fn tar_bytes(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let (mut h, data): (tar::Header, &[u8]) = match e {
                E::File(p, d, m) => (header(p, tar::EntryType::Regular, d.len() as u64, *m), d),
                E::Dir(p, m) => (header(p, tar::EntryType::Directory, 0, *m), &[]),
                E::Symlink(p, t) | E::HardLink(p, t) => {
                    let kind = if matches!(e, E::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    };
                    let mut h = header(p, kind, 0, 0o777);
                    h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                    (h, &[])
                }
                E::Special(p, kind) => (header(p, *kind, 0, 0o600), &[]),
            };
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn compress(data: Vec<u8>, suffix: &str) -> Vec<u8> {
        match suffix {
            "" => data,
            ".gz" => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(&data).unwrap();
                e.finish().unwrap()
            }
            ".zst" => zstd::encode_all(&data[..], 3).unwrap(),
            ".xz" => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(&data).unwrap();
                e.finish().unwrap()
            }
            other => panic!("unknown suffix {other}"),
        }
    }

    const CONTROL: &[u8] = b"Package: t\nVersion: 1:1.0-1\nArchitecture: amd64\n\
        Description: test\n multi-line: not a field\n";

    /// Builds an ar archive of `members` at `dir/name`.
    fn ar_file(dir: &Path, name: &str, members: &[(&str, Vec<u8>)]) -> PathBuf {
        let path = dir.join(name);
        let mut ar = ar::Builder::new(File::create(&path).unwrap());
        for (id, data) in members {
            ar.append(
                &ar::Header::new(id.as_bytes().to_vec(), data.len() as u64),
                &data[..],
            )
            .unwrap();
        }
        path
    }

    /// A well-formed test package whose data.tar has `entries`, compressed per `suffix`.
    fn make_deb(dir: &Path, name: &str, suffix: &str, entries: &[E]) -> PathBuf {
        let control = tar_bytes(&[E::Dir("./", 0o755), E::File("./control", CONTROL, 0o644)]);
        ar_file(
            dir,
            name,
            &[
                ("debian-binary", b"2.0\n".to_vec()),
                (&format!("control.tar{suffix}"), compress(control, suffix)),
                (
                    &format!("data.tar{suffix}"),
                    compress(tar_bytes(entries), suffix),
                ),
            ],
        )
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn real_libc6_extracts_with_merged_usr() {
        let Some(deb) = shared("libc6_2.43-7_amd64.deb") else {
            return;
        };
        let root = tempfile::tempdir().unwrap();
        let entries = extract_data(&deb, root.path()).unwrap();
        let ld = root
            .path()
            .join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        let bytes = fs::read(&ld).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF");
        assert_eq!(mode_of(&ld), 0o755);
        let link = root.path().join("usr/lib64/ld-linux-x86-64.so.2");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        let ld_entry = entries
            .iter()
            .find(|e| e.path == "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
            .unwrap();
        assert_eq!(
            ld_entry.kind,
            DebEntryKind::File {
                size: bytes.len() as u64
            }
        );
        assert!(entries.iter().any(|e| e.path == "usr/lib64/ld-linux-x86-64.so.2"
            && matches!(&e.kind, DebEntryKind::Symlink { target } if target.starts_with("../lib/"))));
        assert!(entries
            .iter()
            .all(|e| !e.path.starts_with('.') && !e.path.starts_with('/')));
        // Every entry reported exists on disk.
        for e in &entries {
            assert!(
                fs::symlink_metadata(root.path().join(&e.path)).is_ok(),
                "{}",
                e.path
            );
        }
    }

    #[test]
    fn real_kernel_info() {
        let Some(deb) = shared("linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb") else {
            return;
        };
        let info = read_info(&deb).unwrap();
        assert_eq!(info.package, "linux-image-6.1.0-56-cloud-amd64");
        assert_eq!(info.version, "6.1.192-2");
        assert_eq!(info.architecture, "amd64");
    }

    #[test]
    fn real_kernel_modules_in_one_pass_match_one_by_one() {
        let Some(deb) = shared("linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb") else {
            return;
        };
        let dir = "usr/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers";
        let members = [
            format!("{dir}/net/virtio_net.ko"),
            "boot/vmlinuz-6.1.0-56-cloud-amd64".to_owned(),
            format!("{dir}/virtio/virtio_ring.ko"),
            format!("{dir}/block/virtio_blk.ko"),
        ];
        let mut outs: Vec<Vec<u8>> = vec![Vec::new(); members.len()];
        let mut requests: Vec<(&str, &mut dyn Write)> = members
            .iter()
            .zip(outs.iter_mut())
            .map(|(m, o)| (m.as_str(), o as &mut dyn Write))
            .collect();
        copy_data_files(&deb, &mut requests).unwrap();
        for (member, out) in members.iter().zip(&outs) {
            let mut alone = Vec::new();
            copy_data_file(&deb, member, &mut alone).unwrap();
            assert!(out.len() > 10_000 && *out == alone, "{member}");
        }
    }

    #[test]
    fn real_stub_is_copied_alone() {
        let Some(deb) = shared("systemd-boot-efi_252.39-1~deb12u2_amd64.deb") else {
            return;
        };
        let mut out = Vec::new();
        let n = copy_data_file(
            &deb,
            "./usr/lib/systemd/boot/efi/linuxx64.efi.stub",
            &mut out,
        )
        .unwrap();
        assert_eq!(n, out.len() as u64);
        assert!(n > 10_000);
        assert_eq!(&out[..2], b"MZ");
        // The same member named without "./" gives the same bytes.
        let mut again = Vec::new();
        copy_data_file(
            &deb,
            "usr/lib/systemd/boot/efi/linuxx64.efi.stub",
            &mut again,
        )
        .unwrap();
        assert_eq!(out, again);
        let e = copy_data_file(
            &deb,
            "usr/lib/systemd/boot/efi/linuxx64.efi.stubb",
            &mut io::sink(),
        )
        .unwrap_err();
        assert!(matches!(&e, DebError::NotFound { similar, .. } if !similar.is_empty()));
        let msg = e.to_string();
        assert!(
            msg.contains("linuxx64.efi.stubb") && msg.contains("similar:"),
            "{msg}"
        );
        let e = copy_data_file(&deb, "usr/lib/systemd/boot/efi", &mut io::sink()).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[test]
    fn every_compression_works() {
        let dir = tempfile::tempdir().unwrap();
        for suffix in ["", ".gz", ".zst", ".xz"] {
            let deb = make_deb(
                dir.path(),
                &format!("c{suffix}.deb"),
                suffix,
                &[
                    E::Dir("./", 0o755),
                    E::File("./etc/x.conf", b"hello", 0o644),
                ],
            );
            let info = read_info(&deb).unwrap();
            assert_eq!(
                info,
                DebInfo {
                    package: "t".into(),
                    version: "1:1.0-1".into(),
                    architecture: "amd64".into()
                }
            );
            let root = tempfile::tempdir().unwrap();
            let entries = extract_data(&deb, root.path()).unwrap();
            // Only archive entries are reported; the implicit parent gets mode 0755.
            assert_eq!(
                entries,
                vec![DebEntry {
                    path: "etc/x.conf".into(),
                    kind: DebEntryKind::File { size: 5 },
                    mode: 0o644
                }]
            );
            assert_eq!(mode_of(&root.path().join("etc")), 0o755);
            assert_eq!(fs::read(root.path().join("etc/x.conf")).unwrap(), b"hello");
            let mut out = Vec::new();
            assert_eq!(copy_data_file(&deb, "/etc/x.conf", &mut out).unwrap(), 5);
            assert_eq!(out, b"hello");
        }
    }

    #[test]
    fn merged_usr_modes_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let deb = make_deb(
            dir.path(),
            "m.deb",
            ".gz",
            &[
                E::Dir("./", 0o755),
                E::Dir("./lib/", 0o755),
                E::File("./lib/a", b"library", 0o751),
                E::File("./sbin/tool", b"tool", 0o4755),
                E::File("./usr/share/doc/x", b"all may write", 0o777),
                E::HardLink("./lib/b", "./lib/a"),
                E::Symlink("./lib64", "usr/lib64"),
            ],
        );
        let root = tempfile::tempdir().unwrap();
        let entries = extract_data(&deb, root.path()).unwrap();
        let r = root.path();
        assert_eq!(fs::read(r.join("usr/lib/a")).unwrap(), b"library");
        assert_eq!(fs::read(r.join("usr/lib/b")).unwrap(), b"library");
        assert_eq!(fs::read(r.join("usr/sbin/tool")).unwrap(), b"tool");
        // Exact bits, whatever the umask (0751 and 0777 both differ from umask 022 output).
        assert_eq!(mode_of(&r.join("usr/lib/a")), 0o751);
        assert_eq!(mode_of(&r.join("usr/lib/b")), 0o751);
        assert_eq!(mode_of(&r.join("usr/share/doc/x")), 0o777);
        assert_eq!(mode_of(&r.join("usr/sbin/tool")) & 0o777, 0o755);
        assert!(!r.join("lib").exists() && !r.join("sbin").exists());
        // The package's own lib64 -> usr/lib64 link is the merged layout itself: skipped.
        assert!(!r.join("usr/lib64").exists());
        let link = entries.iter().find(|e| e.path == "usr/lib/b").unwrap();
        assert_eq!(
            link.kind,
            DebEntryKind::HardLink {
                target: "usr/lib/a".into()
            }
        );
        // copy_data_file follows a hard link and matches across merged-/usr.
        let mut out = Vec::new();
        copy_data_file(&deb, "usr/lib/b", &mut out).unwrap();
        assert_eq!(out, b"library");
    }

    #[test]
    fn hard_links_must_name_an_earlier_file() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"secret").unwrap();
        let cases: Vec<(&str, Vec<E>)> = vec![
            (
                "later.deb",
                vec![E::HardLink("./a", "./b"), E::File("./b", b"b", 0o644)],
            ),
            (
                "via-symlink.deb",
                vec![
                    E::Symlink("./s", outside.path().to_str().unwrap()),
                    E::HardLink("./a", "./s/secret"),
                ],
            ),
            ("escape.deb", vec![E::HardLink("./a", "../etc/passwd")]),
        ];
        for (name, entries) in cases {
            let deb = make_deb(dir.path(), name, "", &entries);
            let root = tempfile::tempdir().unwrap();
            let e = extract_data(&deb, root.path()).unwrap_err();
            assert!(
                matches!(e, DebError::HardLink { .. } | DebError::UnsafePath { .. }),
                "{name}: {e}"
            );
            assert!(e.to_string().contains(name), "{e}");
            assert!(!root.path().join("a").exists(), "{name}");
        }
    }

    #[test]
    fn traversal_and_absolute_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (path, reason) in [
            ("../x", "'..'"),
            ("./usr/../../x", "'..'"),
            ("/etc/x", "absolute"),
            (".//etc/x", "absolute"),
        ] {
            let deb = make_deb(
                dir.path(),
                "t.deb",
                ".zst",
                &[E::File(path, b"evil", 0o644)],
            );
            let root = tempfile::tempdir().unwrap();
            let root_dir = root.path().join("root");
            fs::create_dir(&root_dir).unwrap();
            let e = extract_data(&deb, &root_dir).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, DebError::UnsafePath { .. }), "{msg}");
            assert!(msg.contains(reason) && msg.contains(path), "{msg}");
            assert!(!root.path().join("x").exists());
        }
    }

    #[test]
    fn nothing_is_written_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap();
        let deb = make_deb(
            dir.path(),
            "evil.deb",
            "",
            &[
                E::Symlink("./usr/x", target),
                E::File("./usr/x/evil", b"evil", 0o644),
            ],
        );
        let root = tempfile::tempdir().unwrap();
        let e = extract_data(&deb, root.path()).unwrap_err();
        assert!(
            matches!(&e, DebError::SymlinkParent { entry, parent, .. }
                if entry == "usr/x/evil" && parent == "usr/x"),
            "{e}"
        );
        assert!(e.to_string().contains("usr/x/evil"), "{e}");
        assert!(!outside.path().join("evil").exists());

        // A file entry at a symlink's own path replaces the link, never writes through it.
        fs::write(outside.path().join("victim"), b"original").unwrap();
        let victim = outside.path().join("victim");
        let deb = make_deb(
            dir.path(),
            "replace.deb",
            "",
            &[
                E::Symlink("./etc/v", victim.to_str().unwrap()),
                E::File("./etc/v", b"new", 0o644),
            ],
        );
        let root = tempfile::tempdir().unwrap();
        extract_data(&deb, root.path()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"original");
        assert_eq!(fs::read(root.path().join("etc/v")).unwrap(), b"new");
        assert!(!fs::symlink_metadata(root.path().join("etc/v"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn device_nodes_and_fifos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, word) in [
            (tar::EntryType::Char, "character device"),
            (tar::EntryType::Block, "block device"),
            (tar::EntryType::Fifo, "fifo"),
        ] {
            let deb = make_deb(dir.path(), "dev.deb", "", &[E::Special("./dev/mem", kind)]);
            let root = tempfile::tempdir().unwrap();
            let e = extract_data(&deb, root.path()).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, DebError::SpecialFile { .. }), "{msg}");
            assert!(msg.contains(word) && msg.contains("dev/mem"), "{msg}");
            assert!(!root.path().join("dev/mem").exists());
        }
    }

    #[test]
    fn overlaying_packages_replaces_entries_but_keeps_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let first = make_deb(
            dir.path(),
            "a.deb",
            "",
            &[
                E::File("./usr/bin/tool", b"old", 0o755),
                E::Dir("./usr/lib/mods/", 0o755),
                E::File("./usr/lib/mods/m", b"m", 0o644),
            ],
        );
        let second = make_deb(
            dir.path(),
            "b.deb",
            "",
            &[
                E::File("./bin/tool", b"new", 0o700),
                E::Symlink("./usr/lib/mods", "elsewhere"),
                E::Dir("./usr/lib/mods/", 0o700),
            ],
        );
        extract_data(&first, root.path()).unwrap();
        let entries = extract_data(&second, root.path()).unwrap();
        let r = root.path();
        assert_eq!(fs::read(r.join("usr/bin/tool")).unwrap(), b"new");
        assert_eq!(mode_of(&r.join("usr/bin/tool")), 0o700);
        assert!(fs::symlink_metadata(r.join("usr/lib/mods"))
            .unwrap()
            .is_dir());
        assert_eq!(fs::read(r.join("usr/lib/mods/m")).unwrap(), b"m");
        assert_eq!(mode_of(&r.join("usr/lib/mods")), 0o700);
        assert!(!entries
            .iter()
            .any(|e| matches!(e.kind, DebEntryKind::Symlink { .. })));
        // A file cannot replace a directory.
        let third = make_deb(
            dir.path(),
            "c.deb",
            "",
            &[E::File("./usr/lib/mods", b"x", 0o644)],
        );
        let e = extract_data(&third, root.path()).unwrap_err();
        assert!(matches!(e, DebError::Conflict { .. }), "{e}");
        assert!(e.to_string().contains("usr/lib/mods"), "{e}");
    }

    #[test]
    fn truncated_packages_fail_naming_package_and_member() {
        let dir = tempfile::tempdir().unwrap();
        if let Some(real) = shared("libzstd1_1.5.7+dfsg-4_amd64.deb") {
            let bytes = fs::read(real).unwrap();
            let cut = dir.path().join("cut.deb");
            fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
            let root = tempfile::tempdir().unwrap();
            for e in [
                extract_data(&cut, root.path()).unwrap_err(),
                read_info(&cut).unwrap_err(),
            ] {
                let msg = e.to_string();
                assert!(matches!(e, DebError::Truncated { .. }), "{msg}");
                assert!(
                    msg.contains("cut.deb") && msg.contains("data.tar.xz"),
                    "{msg}"
                );
            }
            assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
        }
        // A data.tar member that is complete in the ar sense but whose tar is cut short.
        let tar = tar_bytes(&[E::File("./big", &[7u8; 5000], 0o644)]);
        let control = tar_bytes(&[E::File("./control", CONTROL, 0o644)]);
        let deb = ar_file(
            dir.path(),
            "short-tar.deb",
            &[
                ("debian-binary", b"2.0\n".to_vec()),
                ("control.tar", control),
                ("data.tar", tar[..2048].to_vec()),
            ],
        );
        let root = tempfile::tempdir().unwrap();
        let e = extract_data(&deb, root.path()).unwrap_err();
        assert!(matches!(e, DebError::Tar { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("short-tar.deb") && msg.contains("data.tar"),
            "{msg}"
        );
        // Garbage inside a compressed member.
        let deb = ar_file(
            dir.path(),
            "garbage.deb",
            &[
                ("debian-binary", b"2.0\n".to_vec()),
                ("control.tar.xz", b"definitely not xz".to_vec()),
                ("data.tar.xz", b"nor this".to_vec()),
            ],
        );
        let e = read_info(&deb).unwrap_err();
        assert!(matches!(e, DebError::Tar { .. }), "{e}");
        assert!(e.to_string().contains("control.tar.xz"), "{e}");
    }

    #[test]
    fn malformed_ar_layouts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let control = tar_bytes(&[E::File("./control", CONTROL, 0o644)]);
        let data = tar_bytes(&[E::File("./x", b"x", 0o644)]);
        let bin = || ("debian-binary", b"2.0\n".to_vec());

        fs::write(d.join("not-ar.deb"), b"PK\x03\x04 a zip file").unwrap();
        let e = read_info(&d.join("not-ar.deb")).unwrap_err();
        assert!(matches!(e, DebError::Ar { offset: 0, .. }), "{e}");
        assert!(e.to_string().contains("ar signature"), "{e}");

        let no_data = ar_file(d, "nodata.deb", &[bin(), ("control.tar", control.clone())]);
        let e = extract_data(&no_data, d).unwrap_err();
        assert!(
            matches!(
                &e,
                DebError::MissingMember {
                    wanted: "data.tar",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("no data.tar member"), "{e}");

        let v3 = ar_file(
            d,
            "v3.deb",
            &[
                ("debian-binary", b"3.0\n".to_vec()),
                ("control.tar", control.clone()),
                ("data.tar", data.clone()),
            ],
        );
        assert!(matches!(
            read_info(&v3),
            Err(DebError::FormatVersion { .. })
        ));
        let v21 = ar_file(
            d,
            "v21.deb",
            &[
                ("debian-binary", b"2.1\nextra\n".to_vec()),
                ("control.tar", control.clone()),
                ("data.tar", data.clone()),
            ],
        );
        assert_eq!(read_info(&v21).unwrap().package, "t");

        let order = ar_file(
            d,
            "order.deb",
            &[
                bin(),
                ("data.tar", data.clone()),
                ("control.tar", control.clone()),
            ],
        );
        assert!(matches!(
            read_info(&order),
            Err(DebError::UnexpectedMember { .. })
        ));

        let bz2 = ar_file(
            d,
            "bz2.deb",
            &[
                bin(),
                ("control.tar", control.clone()),
                ("data.tar.bz2", data.clone()),
            ],
        );
        let e = extract_data(&bz2, d).unwrap_err();
        assert!(matches!(e, DebError::Compression { .. }), "{e}");
        assert!(e.to_string().contains("data.tar.bz2"), "{e}");

        // ar 0.9 would panic on a GNU name-table reference ("/99") or allocate whatever a
        // "//" table claims; both are refused before the crate sees them.
        for id in ["/99", "//"] {
            let mut bytes = b"!<arch>\n".to_vec();
            bytes.extend_from_slice(
                format!(
                    "{id:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0, 0, 0, 644, 9_999_999_999u64
                )
                .as_bytes(),
            );
            let path = d.join("gnu.deb");
            fs::write(&path, &bytes).unwrap();
            let e = read_info(&path).unwrap_err();
            assert!(
                matches!(e, DebError::UnexpectedMember { offset: 8, .. }),
                "{e}"
            );
            assert!(copy_data_file(&path, "x", &mut io::sink()).is_err());
        }

        // Ignored `_` members are allowed anywhere after debian-binary.
        let extra = ar_file(
            d,
            "extra.deb",
            &[
                bin(),
                ("_gpgorigin", b"sig".to_vec()),
                ("control.tar", control),
                ("data.tar", data),
            ],
        );
        let root = tempfile::tempdir().unwrap();
        assert_eq!(extract_data(&extra, root.path()).unwrap().len(), 1);
        assert!(matches!(
            extract_data(&extra, &d.join("missing-root")),
            Err(DebError::Root { .. })
        ));
    }

    #[test]
    fn control_without_fields_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let control = tar_bytes(&[E::File("./control", b"Package: p\nVersion: 1\n", 0o644)]);
        let deb = ar_file(
            dir.path(),
            "nofield.deb",
            &[
                ("debian-binary", b"2.0\n".to_vec()),
                ("control.tar", control),
                ("data.tar", tar_bytes(&[])),
            ],
        );
        let e = read_info(&deb).unwrap_err();
        assert!(matches!(e, DebError::Control { .. }), "{e}");
        assert!(e.to_string().contains("no Architecture field"), "{e}");
    }

    #[test]
    fn several_members_in_one_pass_are_what_one_by_one_gives() {
        let dir = tempfile::tempdir().unwrap();
        let deb = make_deb(
            dir.path(),
            "many.deb",
            ".xz",
            &[
                E::Dir("./", 0o755),
                E::File("./usr/lib/a", b"alpha", 0o644),
                E::HardLink("./usr/lib/b", "./usr/lib/a"),
                E::File("./etc/c.conf", b"gamma!", 0o644),
                E::File("./usr/lib/modules/d.ko", b"delta-module", 0o644),
            ],
        );
        // Out of archive order, a hard link, merged-/usr spellings and a member twice.
        let members = [
            "usr/lib/modules/d.ko",
            "/lib/b",
            "./etc/c.conf",
            "lib/a",
            "usr/lib/a",
        ];
        let mut outs: Vec<Vec<u8>> = vec![Vec::new(); members.len()];
        let mut requests: Vec<(&str, &mut dyn Write)> = members
            .iter()
            .zip(outs.iter_mut())
            .map(|(m, o)| (*m, o as &mut dyn Write))
            .collect();
        let sizes = copy_data_files(&deb, &mut requests).unwrap();
        for ((member, out), size) in members.iter().zip(&outs).zip(&sizes) {
            let mut alone = Vec::new();
            let n = copy_data_file(&deb, member, &mut alone).unwrap();
            assert_eq!((out, *size), (&alone, n), "{member}");
        }
        assert_eq!(outs[1], b"alpha");
        assert_eq!(sizes, [12, 5, 6, 5, 5]);
        // One member missing among found ones is named, with the similar names.
        let (mut s1, mut s2) = (io::sink(), io::sink());
        let mut requests: Vec<(&str, &mut dyn Write)> = vec![
            ("etc/c.conf", &mut s1),
            ("usr/lib/modules/d.ko.xz", &mut s2),
        ];
        let e = copy_data_files(&deb, &mut requests).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("d.ko.xz") && msg.contains("usr/lib/modules/d.ko"),
            "{msg}"
        );
    }

    #[test]
    fn the_pass_stops_at_the_last_member_wanted() {
        // A data.tar cut off in its third entry: the first two come out of one pass
        // without reading that far; asking for the third reads into the damage.
        let dir = tempfile::tempdir().unwrap();
        let mut data = tar_bytes(&[
            E::File("./first", b"1", 0o644),
            E::File("./second", b"2", 0o644),
            E::File("./third", b"3", 0o644),
        ]);
        data.truncate(4 * 512 + 100);
        let control = tar_bytes(&[E::Dir("./", 0o755), E::File("./control", CONTROL, 0o644)]);
        let deb = ar_file(
            dir.path(),
            "cut.deb",
            &[
                ("debian-binary", b"2.0\n".to_vec()),
                ("control.tar", control),
                ("data.tar", data),
            ],
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut requests: Vec<(&str, &mut dyn Write)> = vec![("second", &mut b), ("first", &mut a)];
        assert_eq!(copy_data_files(&deb, &mut requests).unwrap(), [1, 1]);
        assert_eq!((a, b), (b"1".to_vec(), b"2".to_vec()));
        let (mut s1, mut s2) = (io::sink(), io::sink());
        let mut requests: Vec<(&str, &mut dyn Write)> =
            vec![("first", &mut s1), ("third", &mut s2)];
        let e = copy_data_files(&deb, &mut requests).unwrap_err();
        assert!(matches!(e, DebError::Tar { .. }), "{e}");
    }

    #[test]
    fn copy_data_file_refuses_links_and_missing_members() {
        let dir = tempfile::tempdir().unwrap();
        let deb = make_deb(
            dir.path(),
            "links.deb",
            ".xz",
            &[
                E::File("./boot/vmlinuz-6.1.0-1", b"kernel", 0o644),
                E::Symlink("./vmlinuz", "boot/vmlinuz-6.1.0-1"),
            ],
        );
        let e = copy_data_file(&deb, "vmlinuz", &mut io::sink()).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        let e = copy_data_file(&deb, "boot/vmlinuz-9.9", &mut io::sink()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("boot/vmlinuz-9.9") && msg.contains("boot/vmlinuz-6.1.0-1"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    /// Corrupted packages (bytes overwritten with characters that matter to ar and tar
    /// headers, or the file cut short) give errors, never a panic or a write outside the
    /// root. A deterministic miniature of the `deb` fuzz target.
    #[test]
    fn corrupted_packages_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let seed = fs::read(make_deb(
            dir.path(),
            "seed.deb",
            "",
            &[
                E::Dir("./lib/", 0o755),
                E::File("./lib/a", b"library", 0o751),
                E::HardLink("./lib/b", "./lib/a"),
                E::Symlink("./lib/c", "a"),
                E::File("./usr/share/doc/x", &[1u8; 3000], 0o644),
            ],
        ))
        .unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let deb = dir.path().join("mutated.deb");
        let root = dir.path().join("root");
        let mut extracted = 0;
        for _ in 0..400 {
            let mut bytes = seed.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = [0, b'/', b'.', next() as u8][(next() % 4) as usize];
            }
            if next() % 7 == 0 {
                bytes.truncate((next() % bytes.len() as u64) as usize);
            }
            fs::write(&deb, &bytes).unwrap();
            fs::create_dir(&root).unwrap();
            let _ = read_info(&deb);
            extracted += usize::from(extract_data(&deb, &root).is_ok());
            let _ = copy_data_file(&deb, "usr/lib/b", &mut io::sink());
            fs::remove_dir_all(&root).unwrap();
        }
        // Some mutations hit only file contents or padding and still extract.
        assert!(extracted > 0);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
