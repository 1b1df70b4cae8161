//! `zoa-init.provenance.json`: how a zoa-init binary was made, written by `zoa build-init`
//! beside the binary and copied into every image's `build.json` (`init.provenance`).
//!
//! It holds only facts that are the same on every machine that builds the same commit
//! (no host paths, no user, no time): an auditor whose rebuild differs compares two of
//! these and learns why (`zoa diff`, `zoa verify --rebuild`).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Format identifier; a reader refuses formats it does not know.
pub const PROVENANCE_FORMAT: &str = "zoa-init-provenance/1";
/// The provenance file of `zoa-init` is `zoa-init.provenance.json` beside it.
pub const PROVENANCE_SUFFIX: &str = ".provenance.json";

/// How one zoa-init binary was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub format: String,
    /// The binary this describes.
    pub binary: BinaryRecord,
    /// `zoa-init <version>` (the crate).
    pub package: String,
    /// The Rust target triple (static musl).
    pub target: String,
    pub rustc: RustcRecord,
    /// `cargo -V`.
    pub cargo: String,
    pub c_toolchain: CToolchainRecord,
    /// The linker, e.g. `rust-lld (the Rust toolchain's own)`.
    pub linker: String,
    pub codegen: CodegenRecord,
    /// SHA-256 of zoa-init's part of Cargo.lock: the `[[package]]` entries of the crates
    /// in `crates` (see [`lock_entries_sha256`]). A Cargo.lock change that touches only
    /// zoa's own dependencies does not change it, so it does not force a new release.
    pub cargo_lock_sha256: String,
    pub sources: SourcesRecord,
    /// Every crate compiled for zoa-init, from Cargo.lock (sorted by name, version).
    pub crates: Vec<CrateRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryRecord {
    pub sha256: String,
    pub size: u64,
}

/// `rustc -vV`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RustcRecord {
    pub release: String,
    pub commit_hash: String,
    pub commit_date: String,
    pub host: String,
    pub llvm_version: String,
}

/// The pinned C compiler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CToolchainRecord {
    /// `zig`.
    pub name: String,
    pub version: String,
    /// SHA-256 of the compiler executable.
    pub sha256: String,
    /// The target it compiles for (`zig cc -target`).
    pub target: String,
}

/// What reaches code generation: the cargo profile and the flags, with host paths
/// replaced by the placeholders they are remapped to (`<cargo-home>`, `<source>`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodegenRecord {
    /// The cargo profile (`release`) and every setting of it zoa fixes.
    pub profile: String,
    pub profile_settings: std::collections::BTreeMap<String, String>,
    pub rustflags: Vec<String>,
    pub cflags: Vec<String>,
}

/// The zoa-init source tree: every file with its digest, and one digest over the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesRecord {
    /// SHA-256 over `<sha256>  <path>\n` lines of `files` (sha256sum's format), in order.
    pub sha256: String,
    pub files: Vec<SourceFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// Relative to the workspace root, `/`-separated.
    pub path: String,
    pub sha256: String,
}

/// One crate from Cargo.lock.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrateRecord {
    pub name: String,
    pub version: String,
    /// `registry+https://…`, or `None` for the workspace's own crates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The `.crate` file's SHA-256 from Cargo.lock (registry crates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Only compiled to run on the build host (build scripts, proc macros): its code is
    /// not in the binary, but it shaped it.
    pub build_only: bool,
}

/// SHA-256 over `name version source checksum` lines of `crates` in their order: the
/// digest of zoa-init's entries in Cargo.lock.
pub fn lock_entries_sha256(crates: &[CrateRecord]) -> String {
    let text: String = crates
        .iter()
        .map(|c| {
            format!(
                "{} {} {} {}\n",
                c.name,
                c.version,
                c.source.as_deref().unwrap_or("-"),
                c.checksum.as_deref().unwrap_or("-")
            )
        })
        .collect();
    crate::digest::sha256_bytes(text.as_bytes())
}

/// Errors reading a provenance file.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
}

impl SourcesRecord {
    /// The record of `files` (sorted by path here).
    pub fn new(mut files: Vec<SourceFile>) -> SourcesRecord {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let listing: String = files
            .iter()
            .map(|f| format!("{}  {}\n", f.sha256, f.path))
            .collect();
        SourcesRecord {
            sha256: crate::digest::sha256_bytes(listing.as_bytes()),
            files,
        }
    }
}

impl Provenance {
    /// Where the provenance of `binary` lives.
    pub fn path_for(binary: &Path) -> PathBuf {
        let mut name = binary.file_name().unwrap_or_default().to_os_string();
        name.push(PROVENANCE_SUFFIX);
        binary.with_file_name(name)
    }

    /// Canonical bytes (two-space indentation, one trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs of strings cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses provenance bytes.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Provenance, ProvenanceError> {
        let p: Provenance =
            serde_json::from_slice(bytes).map_err(|e| ProvenanceError::Invalid {
                file: file.to_owned(),
                message: format!("not a zoa-init provenance file: {e}"),
            })?;
        if p.format != PROVENANCE_FORMAT {
            return Err(ProvenanceError::Invalid {
                file: file.to_owned(),
                message: format!(
                    "provenance format {:?} is not supported (expected {PROVENANCE_FORMAT})",
                    p.format
                ),
            });
        }
        p.check_sources()
            .map_err(|message| ProvenanceError::Invalid {
                file: file.to_owned(),
                message,
            })?;
        Ok(p)
    }

    /// The source list is what `SourcesRecord::new` writes: one entry per path, sorted, and
    /// its digest matches. (A list with a path twice would make `changes` report a record
    /// as changed against itself: found by the `provenance` fuzz target.)
    fn check_sources(&self) -> Result<(), String> {
        let files = &self.sources.files;
        if let Some(pair) = files.windows(2).find(|w| w[0].path >= w[1].path) {
            return Err(format!(
                "sources.files is not sorted by path with each path once ({:?} before {:?})",
                pair[0].path, pair[1].path
            ));
        }
        if SourcesRecord::new(files.clone()).sha256 != self.sources.sha256 {
            return Err("sources.sha256 does not match the files listed".into());
        }
        Ok(())
    }

    /// The provenance beside `binary`, checked to describe exactly these bytes; `None`
    /// when there is none (a zoa-init built by hand).
    pub fn read_for(
        binary: &Path,
        binary_sha256: &str,
    ) -> Result<Option<Provenance>, ProvenanceError> {
        let path = Provenance::path_for(binary);
        let file = path.display().to_string();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ProvenanceError::Io { file, source }),
        };
        let p = Provenance::parse(&file, &bytes)?;
        if p.binary.sha256 != binary_sha256 {
            return Err(ProvenanceError::Invalid {
                file,
                message: format!(
                    "describes a zoa-init with sha256 {}, but {} has sha256 {binary_sha256}; rebuild it with `zoa build-init`",
                    p.binary.sha256,
                    binary.display()
                ),
            });
        }
        Ok(Some(p))
    }
}

/// One difference between two provenance records, for `zoa diff` and `zoa verify
/// --rebuild`: a stable key (`rustc`, `c-toolchain`, `linker`, `codegen`, `target`,
/// `cargo`, `cargo-lock`, `source:PATH`, `crate:NAME`) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceChange {
    pub key: String,
    pub message: String,
}

fn rustc_label(r: &RustcRecord) -> String {
    format!("rustc {} ({} {})", r.release, short(&r.commit_hash), r.host)
}

fn short(hash: &str) -> &str {
    hash.get(..9).unwrap_or(hash)
}

/// What differs between how two zoa-init binaries were made, most fundamental first:
/// toolchains, then flags, then sources and crates.
pub fn changes(old: &Provenance, new: &Provenance) -> Vec<ProvenanceChange> {
    let mut out = Vec::new();
    let mut push = |key: &str, message: String| {
        out.push(ProvenanceChange {
            key: key.to_owned(),
            message,
        })
    };
    if old.rustc != new.rustc {
        let (o, n) = (&old.rustc, &new.rustc);
        let what = if o.release != n.release {
            format!("rustc {} → {}", o.release, n.release)
        } else {
            format!("{} → {}", rustc_label(o), rustc_label(n))
        };
        push("rustc", format!("zoa-init: {what}"));
    }
    if old.cargo != new.cargo {
        push("cargo", format!("zoa-init: {} → {}", old.cargo, new.cargo));
    }
    if old.c_toolchain != new.c_toolchain {
        let label = |c: &CToolchainRecord| {
            format!(
                "{} {} (sha256 {}, {})",
                c.name,
                c.version,
                short(&c.sha256),
                c.target
            )
        };
        push(
            "c-toolchain",
            format!(
                "zoa-init: C compiler {} → {}",
                label(&old.c_toolchain),
                label(&new.c_toolchain)
            ),
        );
    }
    if old.target != new.target {
        push(
            "target",
            format!("zoa-init: target {} → {}", old.target, new.target),
        );
    }
    if old.linker != new.linker {
        push(
            "linker",
            format!("zoa-init: linker {} → {}", old.linker, new.linker),
        );
    }
    if old.codegen != new.codegen {
        push(
            "codegen",
            format!(
                "zoa-init: codegen settings changed: {}",
                codegen_delta(&old.codegen, &new.codegen)
            ),
        );
    }
    if old.cargo_lock_sha256 != new.cargo_lock_sha256 {
        push(
            "cargo-lock",
            format!(
                "zoa-init: its Cargo.lock entries changed (sha256 {} → {})",
                short(&old.cargo_lock_sha256),
                short(&new.cargo_lock_sha256)
            ),
        );
    }
    for (path, what) in source_deltas(&old.sources, &new.sources) {
        push(
            &format!("source:{path}"),
            format!("zoa-init sources changed: {path} {what}"),
        );
    }
    for (name, what) in crate_deltas(&old.crates, &new.crates) {
        push(
            &format!("crate:{name}"),
            format!("zoa-init crate {name}: {what}"),
        );
    }
    out
}

fn codegen_delta(o: &CodegenRecord, n: &CodegenRecord) -> String {
    let mut parts = Vec::new();
    if o.profile != n.profile {
        parts.push(format!("profile {} → {}", o.profile, n.profile));
    }
    for (k, v) in &n.profile_settings {
        match o.profile_settings.get(k) {
            Some(ov) if ov != v => parts.push(format!("{k} {ov} → {v}")),
            None => parts.push(format!("{k} = {v} added")),
            _ => {}
        }
    }
    for (k, v) in &o.profile_settings {
        if !n.profile_settings.contains_key(k) {
            parts.push(format!("{k} = {v} removed"));
        }
    }
    for (what, ol, nl) in [
        ("RUSTFLAGS", &o.rustflags, &n.rustflags),
        ("CFLAGS", &o.cflags, &n.cflags),
    ] {
        let removed: Vec<&String> = ol.iter().filter(|f| !nl.contains(f)).collect();
        let added: Vec<&String> = nl.iter().filter(|f| !ol.contains(f)).collect();
        if !removed.is_empty() || !added.is_empty() {
            parts.push(format!("{what} -{removed:?} +{added:?}"));
        } else if ol != nl {
            parts.push(format!("{what} reordered"));
        }
    }
    parts.join("; ")
}

fn source_deltas(o: &SourcesRecord, n: &SourcesRecord) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for f in &n.files {
        match o.files.iter().find(|of| of.path == f.path) {
            Some(of) if of.sha256 != f.sha256 => out.push((f.path.clone(), "(modified)")),
            None => out.push((f.path.clone(), "(added)")),
            _ => {}
        }
    }
    for f in &o.files {
        if !n.files.iter().any(|nf| nf.path == f.path) {
            out.push((f.path.clone(), "(removed)"));
        }
    }
    out.sort();
    out
}

fn crate_deltas(o: &[CrateRecord], n: &[CrateRecord]) -> Vec<(String, String)> {
    let versions = |list: &[CrateRecord], name: &str| -> Vec<String> {
        list.iter()
            .filter(|c| c.name == name)
            .map(|c| c.version.clone())
            .collect()
    };
    let mut names: Vec<&str> = o.iter().chain(n).map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let (ov, nv) = (versions(o, name), versions(n, name));
        let same_records = o
            .iter()
            .filter(|c| c.name == name)
            .eq(n.iter().filter(|c| c.name == name));
        if same_records {
            continue;
        }
        let what = match (ov.is_empty(), nv.is_empty()) {
            (true, _) => format!("added ({})", nv.join(", ")),
            (_, true) => format!("removed (was {})", ov.join(", ")),
            _ if ov != nv => format!("{} → {}", ov.join(", "), nv.join(", ")),
            _ => format!("{} changed checksum or role", nv.join(", ")),
        };
        out.push((name.to_owned(), what));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Provenance {
        Provenance {
            format: PROVENANCE_FORMAT.into(),
            binary: BinaryRecord {
                sha256: "ab".repeat(32),
                size: 10,
            },
            package: "zoa-init 0.1.0".into(),
            target: "x86_64-unknown-linux-musl".into(),
            rustc: RustcRecord {
                release: "1.95.0".into(),
                commit_hash: "59807616e1fa2540724bfbac14d7976d7e4a3860".into(),
                commit_date: "2026-04-14".into(),
                host: "x86_64-unknown-linux-gnu".into(),
                llvm_version: "22.1.2".into(),
            },
            cargo: "cargo 1.95.0".into(),
            c_toolchain: CToolchainRecord {
                name: "zig".into(),
                version: "0.17.0".into(),
                sha256: "cd".repeat(32),
                target: "x86_64-linux-musl".into(),
            },
            linker: "rust-lld".into(),
            codegen: CodegenRecord {
                profile: "release".into(),
                profile_settings: [("opt-level".to_owned(), "3".to_owned())].into(),
                rustflags: vec!["-Clinker=rust-lld".into()],
                cflags: vec![],
            },
            cargo_lock_sha256: "ef".repeat(32),
            sources: SourcesRecord::new(vec![
                SourceFile {
                    path: "init/src/main.rs".into(),
                    sha256: "01".repeat(32),
                },
                SourceFile {
                    path: "init/src/net/dhcp.rs".into(),
                    sha256: "02".repeat(32),
                },
            ]),
            crates: vec![CrateRecord {
                name: "tokio".into(),
                version: "1.47.0".into(),
                source: Some("registry+https://github.com/rust-lang/crates.io-index".into()),
                checksum: Some("03".repeat(32)),
                build_only: false,
            }],
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let p = sample();
        let bytes = p.to_json();
        assert_eq!(Provenance::parse("p", &bytes).unwrap(), p);
        let mut other = p.clone();
        other.format = "zoa-init-provenance/9".into();
        assert!(Provenance::parse("p", &other.to_json()).is_err());
        assert!(Provenance::parse("p", b"{}").is_err());
        assert!(Provenance::parse("p", b"\xff").is_err());
    }

    #[test]
    fn read_for_checks_the_binary_digest() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("zoa-init");
        std::fs::write(&bin, b"x").unwrap();
        assert_eq!(Provenance::read_for(&bin, "00").unwrap(), None);
        let p = sample();
        std::fs::write(Provenance::path_for(&bin), p.to_json()).unwrap();
        assert_eq!(
            Provenance::read_for(&bin, &p.binary.sha256).unwrap(),
            Some(p.clone())
        );
        let e = Provenance::read_for(&bin, "00").unwrap_err().to_string();
        assert!(
            e.contains("zoa-init.provenance.json") && e.contains("zoa build-init"),
            "{e}"
        );
    }

    #[test]
    fn changes_name_toolchain_then_sources() {
        let old = sample();
        assert!(changes(&old, &old).is_empty());
        let mut new = old.clone();
        new.rustc.release = "1.96.0".into();
        new.rustc.commit_hash = "0".repeat(40);
        new.sources.files[1].sha256 = "09".repeat(32);
        new.sources = SourcesRecord::new(new.sources.files.clone());
        new.crates[0].version = "1.48.0".into();
        let c = changes(&old, &new);
        let keys: Vec<&str> = c.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            ["rustc", "source:init/src/net/dhcp.rs", "crate:tokio"]
        );
        assert_eq!(c[0].message, "zoa-init: rustc 1.95.0 → 1.96.0");
        assert_eq!(
            c[1].message,
            "zoa-init sources changed: init/src/net/dhcp.rs (modified)"
        );
        assert_eq!(c[2].message, "zoa-init crate tokio: 1.47.0 → 1.48.0");
    }

    #[test]
    fn codegen_and_c_toolchain_changes_are_described() {
        let old = sample();
        let mut new = old.clone();
        new.codegen
            .profile_settings
            .insert("opt-level".into(), "0".into());
        new.codegen.cflags.push("-O0".into());
        new.c_toolchain.version = "0.18.0".into();
        let c = changes(&old, &new);
        assert_eq!(c[0].key, "c-toolchain");
        assert!(c[0].message.contains("zig 0.17.0") && c[0].message.contains("zig 0.18.0"));
        assert_eq!(c[1].key, "codegen");
        assert!(c[1].message.contains("opt-level 3 → 0"), "{}", c[1].message);
        assert!(c[1].message.contains("CFLAGS"), "{}", c[1].message);
    }

    #[test]
    fn source_digest_is_order_independent() {
        let a = SourceFile {
            path: "a".into(),
            sha256: "1".into(),
        };
        let b = SourceFile {
            path: "b".into(),
            sha256: "2".into(),
        };
        assert_eq!(
            SourcesRecord::new(vec![a.clone(), b.clone()]),
            SourcesRecord::new(vec![b, a])
        );
    }

    /// Found by the `provenance` fuzz target: a source listed twice (or out of order, or
    /// under a digest that does not match) parsed, and `changes` then found a record
    /// changed against itself.
    #[test]
    fn a_source_list_that_new_would_not_write_is_refused() {
        let good = sample();
        assert!(Provenance::parse("p", &good.to_json()).is_ok());
        let mut twice = good.clone();
        let mut again = twice.sources.files[0].clone();
        again.sha256 = "ef".repeat(32);
        twice.sources.files.insert(1, again);
        let err = Provenance::parse("p", &twice.to_json()).unwrap_err();
        assert!(err.to_string().contains("each path once"), "{err}");
        let mut forged = good.clone();
        forged.sources.files[0].sha256 = "ef".repeat(32);
        let err = Provenance::parse("p", &forged.to_json()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
