//! `zoa diff A B`: what changed between two releases, and why their PCRs differ.
//!
//! Each side is a release (or build) directory, a UKI, or a measurements file. Every finding
//! is a [`Cause`] with a stable machine `kind`, a `path` naming what changed, the PCRs it
//! moves and a sentence for people. Causes come in three levels:
//!
//! - `image`: what differs inside the UKI — a section (`.cmdline`, `.linux`, `.osrel`, …),
//!   a file of the initramfs (`.initrd:/etc/server.toml`), the stub, the PE headers. These
//!   do not overlap: an initramfs whose files changed yields one cause per file, not one more
//!   for `.initrd` itself.
//! - `build`: what `build.json` says is behind them — inputs and SOURCE_DATE_EPOCH. They are
//!   not measured themselves.
//! - `pcr`: predicted events that differ (the UKI's Authenticode in PCR4, a section's events
//!   in PCR11, a Secure Boot variable in PCR7, …).
//!
//! A cause's `because` lists the paths of the causes that explain it, so the root causes are
//! exactly those with an empty `because`. A CI gate "fail if anything but
//! `/etc/server.toml` changed" is then
//! `[.causes[] | select(.because == []) | .path] - [".initrd:/etc/server.toml"] == []`.
//!
//! Attribution uses the finest source both sides offer: file lists from `build.json` (or,
//! without them, the `.initrd` archives read back), section contents from the UKIs, and with
//! a measurements file on either side only what the events say (PCR11 names each section).

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::manifest::{MANIFEST_FILE, MEASUREMENTS_FILE};
use crate::image::initramfs::{self, InitramfsError};
use crate::image::tree::NodeKind;
use crate::image::{BuildReport, InputRecord, BUILD_FILE, UKI_FILE};
use crate::init_build::provenance;
use crate::measure::predict::{StubRules, EV_EFI_VARIABLE_DRIVER_CONFIG, STUB_RULES};
use crate::measure::{
    self, Bank, Digests, MeasureError, MeasureOptions, Measurements, Pcr, PredictedEvent,
};
use crate::recipe::{Compression, DEFAULT_ZSTD_LEVEL};
use crate::uefi::file::ImageFile;
use crate::uefi::hashing::{hash_jobs, HashJob};
use crate::uefi::pe::{PeError, PeLayout};
use crate::uefi::uki::bzimage_release;

/// UKI payload sections (systemd's UKI specification); every other section is the stub's.
use crate::measure::predict::UKI_PAYLOAD_SECTIONS as PAYLOAD_SECTIONS;
/// Payload sections never shown as text: they are compared by kernel release, file lists
/// and digests instead.
const BULK_SECTIONS: &[&str] = &[".linux", ".initrd"];
/// Sections up to this size are read whole to show their text (`.cmdline`, `.osrel`, …).
const MAX_TEXT_SECTION: u64 = 4096;
/// The bzImage setup header and its version string lie in the first 65 sectors.
const KERNEL_HEAD_BYTES: u64 = 65 * 512;
/// JSON files (build.json, measurements, release.json) larger than this are refused:
/// real ones are tens of KiB, and they are read whole.
const MAX_JSON_BYTES: u64 = 64 << 20;
/// In messages, a `because` list longer than this is shortened (the `because` field is not).
const MAX_BECAUSE_SHOWN: usize = 8;

/// Errors of `zoa diff`, each naming the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{file}: {message}")]
    Input { file: String, message: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Measure(#[from] MeasureError),
    #[error(transparent)]
    Pe(#[from] PeError),
    #[error("{file}: {source}")]
    Initramfs {
        file: String,
        source: InitramfsError,
    },
}

fn input_err(path: &Path, message: impl Into<String>) -> DiffError {
    DiffError::Input {
        file: path.display().to_string(),
        message: message.into(),
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DiffError + '_ {
    move |source| DiffError::Io {
        file: path.display().to_string(),
        source,
    }
}

/// One side of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// A release or build directory: `uki.efi`, optionally `build.json` and
    /// `measurements.json` (otherwise the UKI is measured).
    Dir(PathBuf),
    /// A UKI: measured, and its sections read directly.
    Uki(PathBuf),
    /// `zoa measure` output or a `release.json`: only PCRs and events can be compared.
    Measurements(PathBuf),
}

impl Side {
    /// Tells what `path` is: a directory holding `uki.efi`, a PE file, or a JSON file.
    pub fn detect(path: &Path) -> Result<Side, DiffError> {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        if meta.is_dir() {
            if !path.join(UKI_FILE).is_file() {
                return Err(input_err(
                    path,
                    format!("is a directory without {UKI_FILE}: not a release or build directory"),
                ));
            }
            return Ok(Side::Dir(path.to_owned()));
        }
        let mut head = Vec::with_capacity(64);
        std::fs::File::open(path)
            .and_then(|f| f.take(64).read_to_end(&mut head))
            .map_err(io_err(path))?;
        if head.starts_with(b"MZ") {
            return Ok(Side::Uki(path.to_owned()));
        }
        if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return Ok(Side::Measurements(path.to_owned()));
        }
        Err(input_err(
            path,
            "is neither a release directory, a UKI (PE image) nor a measurements JSON file",
        ))
    }

    /// The path given for this side.
    pub fn path(&self) -> &Path {
        match self {
            Side::Dir(p) | Side::Uki(p) | Side::Measurements(p) => p,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Side::Dir(_) => "directory",
            Side::Uki(_) => "uki",
            Side::Measurements(_) => "measurements",
        }
    }
}

/// What a diff found.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// True when nothing differs: PCRs, events, image content and build inputs.
    pub identical: bool,
    pub a: SideInfo,
    pub b: SideInfo,
    /// Every PCR × bank predicted on either side, changed or not, in numeric order.
    pub pcrs: Vec<PcrChange>,
    /// Attributed reasons, ordered by the lowest PCR they move (build-level causes last).
    pub causes: Vec<Cause>,
    /// Limits of this diff (e.g. a side with events only), for people.
    pub notes: Vec<String>,
}

/// Identity of one side.
#[derive(Debug, Clone, Serialize)]
pub struct SideInfo {
    pub path: String,
    /// "directory", "uki" or "measurements".
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The systemd-stub version the measurements are for.
    pub stub: String,
}

/// One PCR in one bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PcrChange {
    pub pcr: Pcr,
    pub bank: Bank,
    pub changed: bool,
    /// None when this side does not predict the PCR (see the causes for the reason).
    pub old: Option<String>,
    pub new: Option<String>,
}

/// How close to the measurements a cause is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// A predicted event.
    Pcr,
    /// Content of the UKI.
    Image,
    /// A build.json fact behind the image (input, SOURCE_DATE_EPOCH).
    Build,
}

/// One attributed reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// Stable machine kind: `cmdline`, `kernel`, `stub`, `pe.headers`, `section.modified`,
    /// `section.added`, `section.removed`, `initrd.file_added`, `initrd.file_removed`,
    /// `initrd.file_modified`, `initrd.archive`, `input.modified`, `input.added`,
    /// `input.removed`, `build.source_date_epoch`, `build.initramfs_compression`,
    /// `init.provenance` (how zoa-init was made: path `build:init.rustc`,
    /// `build:init.source:init/src/…`, …), `pcr4.uki_authenticode`,
    /// `pcr4.kernel_authenticode`, `pcr7.variable`, `pcr11.section`, `pcr.event`,
    /// `pcr.order`, `pcr.unpredicted`.
    pub kind: String,
    pub level: Level,
    /// What changed: `.cmdline`, `.initrd:/etc/server.toml`, `stub`, `pe:headers`,
    /// `input:NAME`, `build:source_date_epoch`, `build:initramfs.compression`, `PCR4:uki`,
    /// `PCR4:kernel`, `PCR7:PK`, `PCR11:.cmdline`, `PCR12:…`.
    pub path: String,
    /// PCRs this change moves (empty for build-level causes, which act through others).
    pub pcrs: Vec<Pcr>,
    /// One sentence for a change ticket.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Detail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Detail>,
    /// Paths of the causes that explain this one; empty for root causes.
    pub because: Vec<String>,
}

impl Cause {
    fn new(
        kind: &str,
        level: Level,
        path: impl Into<String>,
        pcrs: Vec<Pcr>,
        message: String,
    ) -> Cause {
        Cause {
            kind: kind.to_owned(),
            level,
            path: path.into(),
            pcrs,
            message,
            old: None,
            new: None,
            because: Vec::new(),
        }
    }

    fn values(mut self, old: Option<Detail>, new: Option<Detail>) -> Cause {
        self.old = old;
        self.new = new;
        self
    }

    fn because(mut self, because: Vec<String>) -> Cause {
        self.because = because;
        self
    }
}

/// Old or new state in a cause; the shape depends on the kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    Text(String),
    Number(u64),
    File(FileState),
    Blob(BlobState),
    Kernel(KernelState),
    Stub(StubState),
    Input(InputState),
    Event(EventState),
}

/// An initramfs entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileState {
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// "major:minor" of a device node (known when read from the archive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// build.json's origin, e.g. "libc6 2.43-7", "recipe", "zoa".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_version: Option<String>,
}

impl FileState {
    /// Same bytes and metadata in the image (where a file came from is not part of it).
    fn same_content(&self, other: &FileState) -> bool {
        self.kind == other.kind
            && self.mode == other.mode
            && self.size == other.size
            && self.sha256 == other.sha256
            && self.target == other.target
            && (self.device.is_none() || other.device.is_none() || self.device == other.device)
    }

    fn with_origin(mut self, origin: Option<String>) -> FileState {
        let (package, version) = origin.as_deref().and_then(split_origin).unzip();
        self.package = package;
        self.package_version = version;
        self.origin = origin;
        self
    }

    fn describe(&self) -> String {
        let mut parts = vec![format!("{} {}", self.kind, self.mode)];
        if let Some(s) = self.size {
            parts.push(format!("{s} bytes"));
        }
        if let Some(h) = &self.sha256 {
            parts.push(format!("sha256 {h}"));
        }
        if let Some(t) = &self.target {
            parts.push(format!("→ {t}"));
        }
        if let Some(d) = &self.device {
            parts.push(format!("device {d}"));
        }
        let mut out = parts.join(", ");
        if let Some(o) = &self.origin {
            out.push_str(&format!("; from {o}"));
        }
        out
    }
}

/// A section's bytes, by size and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobState {
    pub size: u64,
    pub sha256: String,
}

/// The embedded kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    pub size: u64,
    pub sha256: String,
}

/// The systemd stub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StubState {
    pub version: String,
    pub major: u32,
}

/// A build input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputState {
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_version: Option<String>,
}

/// A predicted event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventState {
    pub what: String,
    pub digests: Digests,
}

impl From<&PredictedEvent> for EventState {
    fn from(e: &PredictedEvent) -> Self {
        EventState {
            what: e.what.clone(),
            digests: e.digests.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Loading a side.

/// One section of a UKI.
#[derive(Debug, Clone)]
struct SectionView {
    name: String,
    /// VirtualSize: what the stub measures.
    size: u64,
    /// sha256 of VirtualSize bytes (zero-filled past the file data), as the stub hashes it.
    sha256: String,
    /// The content, for small UTF-8 payload sections.
    text: Option<String>,
}

/// A UKI read for diffing.
#[derive(Debug)]
struct UkiView {
    path: PathBuf,
    file: ImageFile,
    layout: PeLayout,
    sections: Vec<SectionView>,
}

impl UkiView {
    fn section(&self, name: &str) -> Option<&SectionView> {
        self.sections.iter().find(|s| s.name == name)
    }
}

/// Both sides of an image-level comparison, each with its UKI.
struct Pair<'a> {
    old: &'a Loaded,
    new: &'a Loaded,
    ou: &'a UkiView,
    nu: &'a UkiView,
}

/// A side, loaded.
struct Loaded {
    info: SideInfo,
    measurements: Measurements,
    uki: Option<UkiView>,
    build: Option<BuildReport>,
}

fn read_json_bytes(path: &Path) -> Result<Vec<u8>, DiffError> {
    let len = std::fs::metadata(path).map_err(io_err(path))?.len();
    if len > MAX_JSON_BYTES {
        return Err(input_err(
            path,
            format!("is {len} bytes, more than the {MAX_JSON_BYTES} a JSON file of zoa's may be"),
        ));
    }
    std::fs::read(path).map_err(io_err(path))
}

fn read_json_file(path: &Path) -> Result<serde_json::Value, DiffError> {
    serde_json::from_slice(&read_json_bytes(path)?)
        .map_err(|e| input_err(path, format!("is not valid JSON: {e}")))
}

/// Reads zoa measurements: `zoa measure` output, or the `measurements` of a release.json.
fn read_measurements(path: &Path) -> Result<Measurements, DiffError> {
    let value = read_json_file(path)?;
    let m = if value.get("pcrs").is_some() {
        value
    } else if let Some(m) = value.get("measurements") {
        m.clone()
    } else if value.get("Measurements").is_some() {
        return Err(input_err(
            path,
            "is in nitro-tpm-pcr-compute's format (SHA-384 PCR4/7/12 only, no events): compare zoa's format instead (zoa measure UKI)",
        ));
    } else {
        return Err(input_err(
            path,
            format!("is not a zoa measurements file (no \"pcrs\") nor a {MANIFEST_FILE} (no \"measurements\")"),
        ));
    };
    serde_json::from_value(m)
        .map_err(|e| input_err(path, format!("is not a zoa measurements file: {e}")))
}

fn read_build_json(path: &Path) -> Result<BuildReport, DiffError> {
    BuildReport::parse(&read_json_bytes(path)?).map_err(|e| input_err(path, e.to_string()))
}

/// Reads a UKI's section table and hashes every section in one pass over the file.
fn read_uki(file: ImageFile) -> Result<UkiView, DiffError> {
    let path = PathBuf::from(file.name());
    let path = path.as_path();
    let layout = PeLayout::read(&file)?;
    let jobs: Vec<HashJob> = layout
        .sections
        .iter()
        .map(|s| {
            let start = u64::from(s.raw_offset);
            let in_file = u64::from(s.file_data_len());
            HashJob {
                ranges: if in_file > 0 {
                    vec![(start, start + in_file)]
                } else {
                    Vec::new()
                },
                zeros: u64::from(s.virtual_size) - in_file,
            }
        })
        .collect();
    let digests = hash_jobs(&file, &jobs).map_err(io_err(path))?;
    let mut sections = Vec::with_capacity(layout.sections.len());
    for (s, d) in layout.sections.iter().zip(digests) {
        let small = u64::from(s.file_data_len()) <= MAX_TEXT_SECTION;
        let text = if small
            && PAYLOAD_SECTIONS.contains(&s.name.as_str())
            && !BULK_SECTIONS.contains(&s.name.as_str())
        {
            layout
                .read_section(&file, &s.name, MAX_TEXT_SECTION)?
                .and_then(|b| String::from_utf8(b).ok())
                .map(|t| t.trim_end_matches('\0').to_owned())
        } else {
            None
        };
        sections.push(SectionView {
            name: s.name.clone(),
            size: u64::from(s.virtual_size),
            sha256: hex::encode(d.sha256),
            text,
        });
    }
    Ok(UkiView {
        path: path.to_owned(),
        file,
        layout,
        sections,
    })
}

fn open_uki(path: &Path) -> Result<ImageFile, DiffError> {
    ImageFile::open(path).map_err(io_err(path))
}

fn load(side: &Side) -> Result<Loaded, DiffError> {
    let (measurements, uki, build) = match side {
        Side::Dir(dir) => {
            let uki = open_uki(&dir.join(UKI_FILE))?;
            let m_path = dir.join(MEASUREMENTS_FILE);
            let measurements = if m_path.is_file() {
                read_measurements(&m_path)?
            } else {
                measure::predict(&uki, &MeasureOptions::default())?
            };
            let b_path = dir.join(BUILD_FILE);
            let build = if b_path.is_file() {
                Some(read_build_json(&b_path)?)
            } else {
                None
            };
            (measurements, Some(read_uki(uki)?), build)
        }
        Side::Uki(path) => {
            let uki = open_uki(path)?;
            let measurements = measure::predict(&uki, &MeasureOptions::default())?;
            (measurements, Some(read_uki(uki)?), None)
        }
        Side::Measurements(path) => (read_measurements(path)?, None, None),
    };
    let info = SideInfo {
        path: side.path().display().to_string(),
        kind: side.kind(),
        name: build.as_ref().map(|b| b.name.clone()),
        version: build.as_ref().map(|b| b.version.clone()),
        stub: measurements.stub.version.clone(),
    };
    Ok(Loaded {
        info,
        measurements,
        uki,
        build,
    })
}

// ---------------------------------------------------------------------------------------
// The diff.

/// Compares two sides: PCRs, events, and what inside the images and builds explains them.
pub fn diff(a: &Side, b: &Side) -> Result<DiffReport, DiffError> {
    let old = load(a)?;
    let new = load(b)?;
    let mut notes = Vec::new();
    let pcrs = pcr_changes(&old.measurements, &new.measurements);

    let build = match (&old.build, &new.build) {
        (Some(o), Some(n)) => build_causes(o, n),
        (None, None) => Vec::new(),
        _ => {
            notes.push(format!(
                "only one side has a {BUILD_FILE}: inputs are not compared"
            ));
            Vec::new()
        }
    };
    let changed_inputs = changed_input_packages(&build, &old, &new);

    let image = match (&old.uki, &new.uki) {
        (Some(ou), Some(nu)) => {
            let pair = Pair {
                old: &old,
                new: &new,
                ou,
                nu,
            };
            image_causes(&pair, &build, &changed_inputs)?
        }
        _ => {
            let which = match (&old.uki, &new.uki) {
                (None, None) => "A and B are measurements files",
                (None, _) => "A is a measurements file",
                _ => "B is a measurements file",
            };
            notes.push(format!(
                "{which}: differences are shown at the level of PCRs and events (PCR11 names each measured section); file-level attribution needs release directories or UKIs"
            ));
            event_level_image_causes(&old.measurements, &new.measurements)
        }
    };

    let mut image = image;
    link_init_provenance(&build, &mut image);
    let pcr = pcr_causes(
        &old.measurements,
        &new.measurements,
        &pcrs,
        &image,
        &mut notes,
    );

    let mut causes: Vec<Cause> = pcr.into_iter().chain(image).chain(build).collect();
    // Stable: within one PCR, events first, then the image content behind them.
    causes.sort_by_key(|c| (c.pcrs.iter().min().map_or(u32::MAX, |&p| p.into()), c.level));
    let identical = causes.is_empty() && pcrs.iter().all(|p| !p.changed);
    Ok(DiffReport {
        identical,
        a: old.info,
        b: new.info,
        pcrs,
        causes,
        notes,
    })
}

fn pcr_changes(old: &Measurements, new: &Measurements) -> Vec<PcrChange> {
    let indices: BTreeSet<Pcr> = old.pcrs.keys().chain(new.pcrs.keys()).copied().collect();
    let mut out = Vec::new();
    for pcr in indices {
        for bank in Bank::ALL {
            let o = old.pcr(pcr).map(|d| d.get(bank).to_owned());
            let n = new.pcr(pcr).map(|d| d.get(bank).to_owned());
            out.push(PcrChange {
                pcr,
                bank,
                changed: o != n,
                old: o,
                new: n,
            });
        }
    }
    out
}

fn rules_for(major: u32) -> Option<&'static StubRules> {
    STUB_RULES.iter().find(|r| r.major == major)
}

/// PCRs a change of section `name` moves: PCR4 always (the UKI's Authenticode covers every
/// section), PCR11 when either side's stub measures it (or its rules are unknown).
fn section_pcrs(name: &str, old: &Measurements, new: &Measurements) -> Vec<Pcr> {
    let measured =
        |m: &Measurements| rules_for(m.stub.major).is_none_or(|r| r.pcr11_sections.contains(&name));
    if measured(old) || measured(new) {
        vec![Pcr::PCR4, Pcr::PCR11]
    } else {
        vec![Pcr::PCR4]
    }
}

/// True when the two stubs disagree on whether they measure section `name` into PCR11.
fn rules_differ_for(name: &str, om: &Measurements, nm: &Measurements) -> bool {
    let measures =
        |m: &Measurements| rules_for(m.stub.major).map(|r| r.pcr11_sections.contains(&name));
    measures(om) != measures(nm)
}

/// "libc6 2.43-7" → ("libc6", "2.43-7"); "recipe", "recipe [init]" → None. Debian
/// versions start with a digit, which tells a package origin from zoa's own labels.
fn split_origin(origin: &str) -> Option<(String, String)> {
    let (pkg, version) = origin.split_once(' ')?;
    if version.starts_with(|c: char| c.is_ascii_digit()) && !version.contains(' ') {
        Some((pkg.to_owned(), version.to_owned()))
    } else {
        None
    }
}

/// How zoa-init was made, when the two sides' PID 1 differ: toolchain, flags, sources and
/// crates (from `init.provenance`), as `init.provenance` causes at `build:init.<key>`.
fn init_provenance_causes(old: &BuildReport, new: &BuildReport) -> Vec<Cause> {
    let (o, n) = (&old.init, &new.init);
    let cause = |key: &str, message: String| {
        Cause::new(
            "init.provenance",
            Level::Build,
            format!("build:init.{key}"),
            Vec::new(),
            message,
        )
    };
    match (&o.provenance, &n.provenance) {
        (Some(op), Some(np)) => provenance::changes(op, np)
            .into_iter()
            .map(|c| cause(&c.key, c.message))
            .collect(),
        (None, None) => Vec::new(),
        (op, _) if o.sha256 != n.sha256 => vec![cause(
            "provenance",
            format!(
                "zoa-init: only {} records how its zoa-init was made (the other was not built by `zoa build-init`)",
                if op.is_some() { "A" } else { "B" }
            ),
        )],
        _ => Vec::new(),
    }
}

fn build_causes(old: &BuildReport, new: &BuildReport) -> Vec<Cause> {
    let mut out = init_provenance_causes(old, new);
    {
        let (o, n) = (old.source_date_epoch, new.source_date_epoch);
        if o != n {
            out.push(
                Cause::new(
                    "build.source_date_epoch",
                    Level::Build,
                    "build:source_date_epoch",
                    Vec::new(),
                    format!("SOURCE_DATE_EPOCH changed: {o} → {n} (it is the UKI's PE TimeDateStamp and every initramfs mtime)"),
                )
                .values(Some(Detail::Number(o)), Some(Detail::Number(n))),
            );
        }
    }
    let packing = |b: &BuildReport| match (b.initramfs.compression, b.initramfs.level) {
        (Compression::None, _) => Compression::None.name().to_owned(),
        // build.json files from before recipes chose the level do not record it: it was
        // the default, so they pack as a level-12 build of today does.
        (c, level) => format!("{} level {}", c.name(), level.unwrap_or(DEFAULT_ZSTD_LEVEL)),
    };
    let (o, n) = (packing(old), packing(new));
    if o != n {
        out.push(
            Cause::new(
                "build.initramfs_compression",
                Level::Build,
                "build:initramfs.compression",
                Vec::new(),
                format!("initramfs compression changed: {o} → {n} (the bytes of .initrd, not its files)"),
            )
            .values(Some(Detail::Text(o)), Some(Detail::Text(n))),
        );
    }
    let state = |i: &InputRecord| InputState {
        sha256: i.sha256.clone(),
        package: i.package.clone(),
        package_version: i.package_version.clone(),
    };
    let label = |i: &InputRecord| match (&i.package, &i.package_version) {
        (Some(p), Some(v)) => format!("{p} {v}"),
        _ => format!("sha256 {}", i.sha256),
    };
    for o in &old.inputs {
        match new.inputs.iter().find(|n| n.name == o.name) {
            Some(n) if n.sha256 != o.sha256 => {
                let what = match (
                    &o.package,
                    &n.package,
                    &o.package_version,
                    &n.package_version,
                ) {
                    (Some(op), Some(np), Some(ov), Some(nv)) if op == np => {
                        format!("{op} {ov} → {nv}")
                    }
                    _ => format!("{} → {}", label(o), label(n)),
                };
                out.push(
                    Cause::new(
                        "input.modified",
                        Level::Build,
                        format!("input:{}", o.name),
                        Vec::new(),
                        format!(
                            "input {} changed: {what} (sha256 {} → {})",
                            o.name, o.sha256, n.sha256
                        ),
                    )
                    .values(Some(Detail::Input(state(o))), Some(Detail::Input(state(n)))),
                );
            }
            Some(_) => {}
            None => out.push(
                Cause::new(
                    "input.removed",
                    Level::Build,
                    format!("input:{}", o.name),
                    Vec::new(),
                    format!("input {} removed ({})", o.name, label(o)),
                )
                .values(Some(Detail::Input(state(o))), None),
            ),
        }
    }
    for n in &new.inputs {
        if !old.inputs.iter().any(|o| o.name == n.name) {
            out.push(
                Cause::new(
                    "input.added",
                    Level::Build,
                    format!("input:{}", n.name),
                    Vec::new(),
                    format!("input {} added ({})", n.name, label(n)),
                )
                .values(None, Some(Detail::Input(state(n)))),
            );
        }
    }
    out
}

/// Package name → the `input:NAME` cause of a changed input that provides it.
fn changed_input_packages(build: &[Cause], old: &Loaded, new: &Loaded) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for c in build.iter().filter(|c| c.kind.starts_with("input.")) {
        let name = c.path.trim_start_matches("input:");
        for side in [&old.build, &new.build].into_iter().flatten() {
            for i in side.inputs.iter().filter(|i| i.name == name) {
                if let Some(p) = &i.package {
                    out.insert(p.clone(), c.path.clone());
                }
            }
        }
    }
    out
}

/// Image-level causes when both sides have a UKI.
fn image_causes(
    pair: &Pair<'_>,
    build: &[Cause],
    changed_inputs: &BTreeMap<String, String>,
) -> Result<Vec<Cause>, DiffError> {
    let (ou, nu) = (pair.ou, pair.nu);
    let (om, nm) = (&pair.old.measurements, &pair.new.measurements);
    let epoch_path: Vec<String> = build
        .iter()
        .filter(|c| c.kind == "build.source_date_epoch")
        .map(|c| c.path.clone())
        .collect();
    // What changes an archive whose files are all the same: its mtimes and its packing.
    let archive_path: Vec<String> = build
        .iter()
        .filter(|c| {
            matches!(
                c.kind.as_str(),
                "build.source_date_epoch" | "build.initramfs_compression"
            )
        })
        .map(|c| c.path.clone())
        .collect();
    let mut out = Vec::new();

    // The stub: its own sections and its version.
    let stub_sections = |u: &UkiView| -> BTreeMap<String, String> {
        u.sections
            .iter()
            .filter(|s| !PAYLOAD_SECTIONS.contains(&s.name.as_str()))
            .map(|s| (s.name.clone(), s.sha256.clone()))
            .collect()
    };
    let (os, ns) = (stub_sections(ou), stub_sections(nu));
    let differing: Vec<String> = os
        .keys()
        .chain(ns.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| os.get(*k) != ns.get(*k))
        .cloned()
        .collect();
    if om.stub.version != nm.stub.version || !differing.is_empty() {
        out.push(stub_cause(om, nm, &differing));
    }

    // PE headers: TimeDateStamp is inside the Authenticode digest.
    if ou.layout.time_date_stamp != nu.layout.time_date_stamp {
        out.push(
            Cause::new(
                "pe.headers",
                Level::Image,
                "pe:headers",
                vec![Pcr::PCR4],
                format!(
                    "the UKI's PE TimeDateStamp changed: {} → {} (it is inside the Authenticode digest)",
                    ou.layout.time_date_stamp, nu.layout.time_date_stamp
                ),
            )
            .values(
                Some(Detail::Number(u64::from(ou.layout.time_date_stamp))),
                Some(Detail::Number(u64::from(nu.layout.time_date_stamp))),
            )
            .because(epoch_path.clone()),
        );
    }

    // Payload sections, in the old UKI's order, then sections only the new one has.
    let mut names: Vec<&str> = Vec::new();
    for s in ou.sections.iter().chain(nu.sections.iter()) {
        if PAYLOAD_SECTIONS.contains(&s.name.as_str()) && !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    for name in names {
        let (o, n) = (ou.section(name), nu.section(name));
        if let (Some(o), Some(n)) = (o, n) {
            if o.sha256 == n.sha256 && o.size == n.size {
                continue;
            }
        }
        let pcrs = section_pcrs(name, om, nm);
        match name {
            ".linux" => out.push(kernel_cause(pair, o, n, pcrs)?),
            ".initrd" => out.extend(initrd_causes(
                pair,
                (o, n),
                pcrs,
                changed_inputs,
                &archive_path,
            )?),
            _ => out.push(section_cause(name, o, n, pcrs, om, nm)),
        }
    }

    // The Authenticode digest also covers headers and layout: name that when nothing
    // else explains a changed digest.
    let uki_event_changed = find_event(om, Pcr::PCR4, "uki") != find_event(nm, Pcr::PCR4, "uki");
    if uki_event_changed && out.is_empty() {
        out.push(Cause::new(
            "pe.headers",
            Level::Image,
            "pe:headers",
            vec![Pcr::PCR4],
            "the UKI's PE headers or section layout differ (no section content changed)".to_owned(),
        ));
    }
    link_inputs(pair, build, &mut out);
    Ok(out)
}

/// `input:NAME` paths of changed inputs one of whose packages (either side) satisfies `pred`.
fn changed_inputs_matching(
    pair: &Pair<'_>,
    build: &[Cause],
    pred: impl Fn(&str, &str) -> bool,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in build.iter().filter(|c| c.kind.starts_with("input.")) {
        let name = c.path.trim_start_matches("input:");
        let sides = [&pair.old.build, &pair.new.build];
        let provides = sides.into_iter().flatten().any(|b| {
            b.inputs.iter().any(|i| {
                i.name == name
                    && match (&i.package, &i.package_version) {
                        (Some(p), Some(v)) => pred(p, v),
                        _ => false,
                    }
            })
        });
        if provides && !out.contains(&c.path) {
            out.push(c.path.clone());
        }
    }
    out
}

/// A changed `/init` is explained by how zoa-init was made, when build.json says.
fn link_init_provenance(build: &[Cause], image: &mut [Cause]) {
    let reasons: Vec<String> = build
        .iter()
        .filter(|c| c.kind == "init.provenance")
        .map(|c| c.path.clone())
        .collect();
    if reasons.is_empty() {
        return;
    }
    for c in image.iter_mut().filter(|c| c.path == ".initrd:/init") {
        for r in &reasons {
            if !c.because.contains(r) {
                c.because.push(r.clone());
            }
        }
        c.message.push_str(&because_suffix(&reasons));
    }
}

/// Links the kernel and the stub to the changed inputs they come from, by Debian's
/// naming: the kernel of release R is package `linux-image-R`, and the stub's `.sdmagic`
/// version is its `systemd-boot-efi` package version. Then names every image cause's
/// reasons in its message (file causes already show their package versions).
fn link_inputs(pair: &Pair<'_>, build: &[Cause], out: &mut [Cause]) {
    let mut releases: BTreeSet<String> = BTreeSet::new();
    for c in out.iter() {
        for d in [&c.old, &c.new].into_iter().flatten() {
            match (c.path.as_str(), d) {
                (".linux", Detail::Kernel(k)) => releases.extend(k.release.clone()),
                (".uname", Detail::Text(t)) => {
                    releases.insert(t.trim().to_owned());
                }
                _ => {}
            }
        }
    }
    let (om, nm) = (&pair.old.measurements, &pair.new.measurements);
    let stub_versions = [om.stub.version.as_str(), nm.stub.version.as_str()];
    for c in out.iter_mut() {
        let found = match c.path.as_str() {
            ".linux" | ".uname" => changed_inputs_matching(pair, build, |p, _| {
                releases
                    .iter()
                    .any(|r| p.strip_prefix("linux-image-") == Some(r.as_str()))
            }),
            "stub" => changed_inputs_matching(pair, build, |p, v| {
                p.starts_with("systemd-boot") && stub_versions.contains(&v)
            }),
            _ => Vec::new(),
        };
        for f in found {
            if !c.because.contains(&f) {
                c.because.push(f);
            }
        }
        if !c.because.is_empty() && !c.kind.starts_with("initrd.file") {
            c.message.push_str(&because_suffix(&c.because));
        }
    }
}

fn stub_cause(om: &Measurements, nm: &Measurements, differing: &[String]) -> Cause {
    let (o, n) = (&om.stub, &nm.stub);
    let mut pcrs = vec![Pcr::PCR4];
    let mut message = if o.version != n.version {
        format!("stub changed: systemd-stub {} → {}", o.version, n.version)
    } else {
        format!(
            "stub code changed with the same version string (systemd-stub {}): sections {} differ",
            o.version,
            differing.join(", ")
        )
    };
    if let (Some(or), Some(nr)) = (rules_for(o.major), rules_for(n.major)) {
        if or.kernel_via_load_image != nr.kernel_via_load_image {
            let how = |r: &StubRules| {
                if r.kernel_via_load_image {
                    format!("{} starts the kernel with LoadImage (the firmware measures the kernel's Authenticode into PCR4)", r.major)
                } else {
                    format!(
                        "{} starts the kernel itself (no kernel event in PCR4)",
                        r.major
                    )
                }
            };
            message.push_str(&format!(
                "; kernel-event rule differs: {}, {}",
                how(or),
                how(nr)
            ));
        }
        if or.pcr11_sections != nr.pcr11_sections {
            pcrs.push(Pcr::PCR11);
            let added: Vec<&str> = nr
                .pcr11_sections
                .iter()
                .filter(|s| !or.pcr11_sections.contains(s))
                .copied()
                .collect();
            let dropped: Vec<&str> = or
                .pcr11_sections
                .iter()
                .filter(|s| !nr.pcr11_sections.contains(s))
                .copied()
                .collect();
            let mut parts = Vec::new();
            if !added.is_empty() {
                parts.push(format!("{} also measures {}", nr.major, added.join(", ")));
            }
            if !dropped.is_empty() {
                parts.push(format!(
                    "{} no longer measures {}",
                    nr.major,
                    dropped.join(", ")
                ));
            }
            if parts.is_empty() {
                parts.push("the canonical section order differs".to_owned());
            }
            message.push_str(&format!("; PCR11 rules differ: {}", parts.join(", ")));
        } else if or
            .pcr11_sections
            .iter()
            .any(|s| !PAYLOAD_SECTIONS.contains(s))
        {
            // The stub measures one of its own sections (its .sbat, from 257 on).
            pcrs.push(Pcr::PCR11);
        }
    }
    let state = |s: &crate::measure::types::StubRecord| StubState {
        version: s.version.clone(),
        major: s.major,
    };
    Cause::new("stub", Level::Image, "stub", pcrs, message)
        .values(Some(Detail::Stub(state(o))), Some(Detail::Stub(state(n))))
}

fn kernel_release(uki: &UkiView, build: Option<&BuildReport>) -> Result<Option<String>, DiffError> {
    if let Some(mut r) = uki.layout.section_reader(&uki.file, ".linux") {
        let mut head = Vec::new();
        (&mut r)
            .take(KERNEL_HEAD_BYTES)
            .read_to_end(&mut head)
            .map_err(io_err(&uki.path))?;
        if let Some(release) = bzimage_release(&head) {
            return Ok(Some(release));
        }
    }
    Ok(build.and_then(|b| b.kernel.release.clone()))
}

fn kernel_cause(
    pair: &Pair<'_>,
    o: Option<&SectionView>,
    n: Option<&SectionView>,
    pcrs: Vec<Pcr>,
) -> Result<Cause, DiffError> {
    let state = |s: &SectionView, release: Option<String>| KernelState {
        release,
        size: s.size,
        sha256: s.sha256.clone(),
    };
    let os = match o {
        Some(s) => Some(state(s, kernel_release(pair.ou, pair.old.build.as_ref())?)),
        None => None,
    };
    let ns = match n {
        Some(s) => Some(state(s, kernel_release(pair.nu, pair.new.build.as_ref())?)),
        None => None,
    };
    let describe = |k: &KernelState| {
        format!(
            "{} ({} bytes, sha256 {})",
            k.release.as_deref().unwrap_or("unknown release"),
            k.size,
            k.sha256
        )
    };
    let message = match (&os, &ns) {
        (Some(a), Some(b)) if a.release == b.release => format!(
            ".linux (kernel) changed with the same release {}: {} → {} bytes, sha256 {} → {}",
            a.release.as_deref().unwrap_or("(unknown)"),
            a.size,
            b.size,
            a.sha256,
            b.sha256
        ),
        (Some(a), Some(b)) => format!(
            ".linux (kernel) changed: {} → {}; {} → {} bytes, sha256 {} → {}",
            a.release.as_deref().unwrap_or("unknown release"),
            b.release.as_deref().unwrap_or("unknown release"),
            a.size,
            b.size,
            a.sha256,
            b.sha256
        ),
        (Some(a), None) => format!(".linux (kernel) removed: {}", describe(a)),
        (None, Some(b)) => format!(".linux (kernel) added: {}", describe(b)),
        (None, None) => ".linux (kernel) changed".to_owned(),
    };
    Ok(Cause::new("kernel", Level::Image, ".linux", pcrs, message)
        .values(os.map(Detail::Kernel), ns.map(Detail::Kernel)))
}

fn one_line_text(t: &str) -> Option<&str> {
    let t = t.trim_end_matches(['\n', '\0']);
    (!t.contains('\n')).then_some(t)
}

/// Old → new text: one-line texts whole, multi-line texts as the lines removed and added.
fn text_change(old: &str, new: &str) -> String {
    if let (Some(o), Some(n)) = (one_line_text(old), one_line_text(new)) {
        return format!("{o:?} → {n:?}");
    }
    let (ol, nl): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut parts: Vec<String> = ol
        .iter()
        .filter(|l| !nl.contains(l))
        .map(|l| format!("-{l}"))
        .collect();
    parts.extend(
        nl.iter()
            .filter(|l| !ol.contains(l))
            .map(|l| format!("+{l}")),
    );
    if parts.is_empty() {
        "same lines, other order or whitespace".to_owned()
    } else {
        parts.join("; ")
    }
}

fn section_detail(s: &SectionView) -> Detail {
    match &s.text {
        Some(t) => Detail::Text(t.clone()),
        None => Detail::Blob(BlobState {
            size: s.size,
            sha256: s.sha256.clone(),
        }),
    }
}

fn section_cause(
    name: &str,
    o: Option<&SectionView>,
    n: Option<&SectionView>,
    pcrs: Vec<Pcr>,
    om: &Measurements,
    nm: &Measurements,
) -> Cause {
    let blob = |s: &SectionView| format!("{} bytes, sha256 {}", s.size, s.sha256);
    let (kind, mut message) = match (o, n) {
        (Some(a), Some(b)) => {
            let what = match (&a.text, &b.text) {
                (Some(x), Some(y)) => text_change(x, y),
                _ => format!("{} → {}", blob(a), blob(b)),
            };
            let kind = if name == ".cmdline" {
                "cmdline"
            } else {
                "section.modified"
            };
            (kind, format!("{name} changed: {what}"))
        }
        (Some(a), None) => (
            "section.removed",
            format!(
                "{name} removed (was {})",
                a.text
                    .as_deref()
                    .map(|t| format!("{t:?}"))
                    .unwrap_or_else(|| blob(a))
            ),
        ),
        (None, Some(b)) => (
            "section.added",
            format!(
                "{name} added: {}",
                b.text
                    .as_deref()
                    .map(|t| format!("{t:?}"))
                    .unwrap_or_else(|| blob(b))
            ),
        ),
        (None, None) => ("section.modified", format!("{name} changed")),
    };
    if !pcrs.contains(&Pcr::PCR11) {
        message.push_str(&format!(
            " (systemd-stub {} does not measure {name} into PCR11: only the UKI's Authenticode in PCR4 moves)",
            if om.stub.major == nm.stub.major {
                om.stub.major.to_string()
            } else {
                format!("{}/{}", om.stub.major, nm.stub.major)
            }
        ));
    }
    Cause::new(kind, Level::Image, name, pcrs, message)
        .values(o.map(section_detail), n.map(section_detail))
}

/// Files of an initramfs by image path.
type FileMap = BTreeMap<String, FileState>;

fn files_from_build_json(b: &BuildReport) -> FileMap {
    b.files
        .iter()
        .map(|f| {
            let state = FileState {
                kind: f.kind.clone(),
                mode: f.mode.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
                target: f.target.clone(),
                device: None,
                origin: None,
                package: None,
                package_version: None,
            }
            .with_origin(Some(f.origin.clone()));
            (f.path.clone(), state)
        })
        .collect()
}

/// Reads a UKI's `.initrd` back (spilling file contents into a temporary directory) and
/// hashes every file; origins come from build.json where it lists the same content.
fn files_from_archive(uki: &UkiView, build: Option<&BuildReport>) -> Result<FileMap, DiffError> {
    let file = uki.path.display().to_string();
    let Some(reader) = uki.layout.section_reader(&uki.file, ".initrd") else {
        return Ok(FileMap::new());
    };
    let spill = tempfile::Builder::new()
        .prefix("zoa-diff-")
        .tempdir()
        .map_err(|source| DiffError::Io {
            file: std::env::temp_dir().display().to_string(),
            source,
        })?;
    let tree =
        initramfs::read_archive(reader, spill.path()).map_err(|source| DiffError::Initramfs {
            file: file.clone(),
            source,
        })?;
    let listed = build.map(files_from_build_json).unwrap_or_default();
    let mut out = FileMap::new();
    for (path, node) in tree.iter() {
        let mut state = FileState {
            kind: node.type_name().to_owned(),
            mode: format!("{:04o}", node.mode),
            size: None,
            sha256: None,
            target: None,
            device: None,
            origin: None,
            package: None,
            package_version: None,
        };
        match &node.kind {
            NodeKind::File { source, .. } => {
                let (sha, size) = source
                    .open()
                    .and_then(crate::digest::sha256_reader)
                    .map_err(|source| DiffError::Io {
                        file: format!("{file} (.initrd {path})"),
                        source,
                    })?;
                state.size = Some(size);
                state.sha256 = Some(sha);
            }
            NodeKind::Symlink { target } => state.target = Some(target.clone()),
            NodeKind::CharDev { major, minor } | NodeKind::BlockDev { major, minor } => {
                state.device = Some(format!("{major}:{minor}"));
            }
            NodeKind::Dir => {}
        }
        let origin = listed
            .get(path)
            .filter(|l| l.same_content(&state))
            .and_then(|l| l.origin.clone());
        out.insert(path.clone(), state.with_origin(origin));
    }
    Ok(out)
}

fn package_change(o: &FileState, n: &FileState) -> String {
    match (&o.origin, &n.origin) {
        (Some(a), Some(b)) if a == b => format!("; from {a}"),
        (Some(a), Some(b)) => match (&o.package, &n.package) {
            (Some(p), Some(q)) if p == q => format!(
                "; {p} {} → {}",
                o.package_version.as_deref().unwrap_or("?"),
                n.package_version.as_deref().unwrap_or("?")
            ),
            _ => format!("; from {a} → {b}"),
        },
        (None, Some(b)) => format!("; now from {b}"),
        (Some(a), None) => format!("; was from {a}"),
        (None, None) => String::new(),
    }
}

fn file_modified_message(path: &str, o: &FileState, n: &FileState) -> String {
    let mut parts = Vec::new();
    if o.kind != n.kind {
        parts.push(format!("{} → {}", o.kind, n.kind));
    }
    if o.size != n.size {
        parts.push(format!(
            "{} → {} bytes",
            o.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            n.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
        ));
    }
    if o.sha256 != n.sha256 {
        parts.push(format!(
            "sha256 {} → {}",
            o.sha256.as_deref().unwrap_or("-"),
            n.sha256.as_deref().unwrap_or("-")
        ));
    }
    if o.mode != n.mode {
        parts.push(format!("mode {} → {}", o.mode, n.mode));
    }
    if o.target != n.target {
        parts.push(format!(
            "link target {} → {}",
            o.target.as_deref().unwrap_or("-"),
            n.target.as_deref().unwrap_or("-")
        ));
    }
    if o.device.is_some() && n.device.is_some() && o.device != n.device {
        parts.push(format!(
            "device {} → {}",
            o.device.as_deref().unwrap_or("-"),
            n.device.as_deref().unwrap_or("-")
        ));
    }
    format!(
        ".initrd: {path} modified: {}{}",
        parts.join(", "),
        package_change(o, n)
    )
}

fn file_causes(
    old: &FileMap,
    new: &FileMap,
    pcrs: &[Pcr],
    changed_inputs: &BTreeMap<String, String>,
) -> Vec<Cause> {
    let because = |states: &[Option<&FileState>]| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in states.iter().flatten() {
            if let Some(input) = s.package.as_ref().and_then(|p| changed_inputs.get(p)) {
                if !out.contains(input) {
                    out.push(input.clone());
                }
            }
        }
        out
    };
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        let (o, n) = (old.get(path), new.get(path));
        let cause_path = format!(".initrd:{path}");
        let cause = match (o, n) {
            (Some(a), Some(b)) if a.same_content(b) => continue,
            (Some(a), Some(b)) => Cause::new(
                "initrd.file_modified",
                Level::Image,
                cause_path,
                pcrs.to_vec(),
                file_modified_message(path, a, b),
            ),
            (None, Some(b)) => Cause::new(
                "initrd.file_added",
                Level::Image,
                cause_path,
                pcrs.to_vec(),
                format!(".initrd: {path} added ({})", b.describe()),
            ),
            (Some(a), None) => Cause::new(
                "initrd.file_removed",
                Level::Image,
                cause_path,
                pcrs.to_vec(),
                format!(".initrd: {path} removed (was {})", a.describe()),
            ),
            (None, None) => continue,
        };
        out.push(
            cause
                .values(o.cloned().map(Detail::File), n.cloned().map(Detail::File))
                .because(because(&[o, n])),
        );
    }
    out
}

fn initrd_causes(
    pair: &Pair<'_>,
    (o, n): (Option<&SectionView>, Option<&SectionView>),
    pcrs: Vec<Pcr>,
    changed_inputs: &BTreeMap<String, String>,
    archive_path: &[String],
) -> Result<Vec<Cause>, DiffError> {
    // build.json's file lists when both sides have them: they carry each file's origin.
    // They are claims, though: when they show no difference for a changed archive, the
    // archives themselves are read.
    let (old_build, new_build) = (pair.old.build.as_ref(), pair.new.build.as_ref());
    let listed = match (
        old_build.map(files_from_build_json),
        new_build.map(files_from_build_json),
    ) {
        (Some(a), Some(b)) => Some(file_causes(&a, &b, &pcrs, changed_inputs)),
        _ => None,
    };
    let causes = match listed {
        Some(c) if !c.is_empty() => c,
        _ => {
            let a = files_from_archive(pair.ou, old_build)?;
            let b = files_from_archive(pair.nu, new_build)?;
            file_causes(&a, &b, &pcrs, changed_inputs)
        }
    };
    if !causes.is_empty() {
        return Ok(causes);
    }
    let blob = |s: &SectionView| {
        Detail::Blob(BlobState {
            size: s.size,
            sha256: s.sha256.clone(),
        })
    };
    let message = match (o, n) {
        (Some(a), Some(b)) => format!(
            ".initrd changed ({} → {} bytes, sha256 {} → {}) but no file differs in type, mode, size, content, link target or device: archive metadata (mtimes, order, compression) differs",
            a.size, b.size, a.sha256, b.sha256
        ),
        (None, Some(_)) => ".initrd added (an empty archive)".to_owned(),
        (Some(_), None) => ".initrd removed (it held no files)".to_owned(),
        (None, None) => ".initrd changed".to_owned(),
    };
    Ok(vec![Cause::new(
        "initrd.archive",
        Level::Image,
        ".initrd",
        pcrs,
        message,
    )
    .values(o.map(blob), n.map(blob))
    .because(archive_path.to_vec())])
}

// ---------------------------------------------------------------------------------------
// Events.

/// A stable key for an event, so the same event of both sides can be paired.
fn event_key(e: &PredictedEvent) -> String {
    if e.pcr == Pcr::PCR4 && e.what == "Authenticode of the UKI" {
        return "uki".into();
    }
    if e.pcr == Pcr::PCR4 && e.what.starts_with("Authenticode of embedded kernel") {
        return "kernel".into();
    }
    if e.pcr == Pcr::PCR7 && e.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG {
        return format!("var:{}", variable_name(&e.what));
    }
    if e.pcr == Pcr::PCR11 {
        if let Some(name) = e.what.strip_prefix("section name ") {
            return format!("name:{name}");
        }
        if let Some((name, _)) = section_data_event(&e.what) {
            return format!("data:{name}");
        }
    }
    format!("{}:{}", e.event_type, e.what)
}

fn variable_name(what: &str) -> &str {
    what.split(" (").next().unwrap_or(what)
}

/// "section .cmdline (33 bytes)" → (".cmdline", 33).
fn section_data_event(what: &str) -> Option<(&str, u64)> {
    let rest = what.strip_prefix("section ")?;
    let (name, size) = rest.split_once(" (")?;
    let size = size.strip_suffix(" bytes)")?.parse().ok()?;
    Some((name, size))
}

/// Events of one PCR with their keys; repeated keys are numbered ("EV_SEPARATOR:…#2").
fn keyed_events(m: &Measurements, pcr: Pcr) -> Vec<(String, &PredictedEvent)> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    m.events
        .iter()
        .filter(|e| e.pcr == pcr)
        .map(|e| {
            let base = event_key(e);
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            let key = if *n == 1 { base } else { format!("{base}#{n}") };
            (key, e)
        })
        .collect()
}

fn find_event<'a>(m: &'a Measurements, pcr: Pcr, key: &str) -> Option<&'a PredictedEvent> {
    m.events
        .iter()
        .find(|e| e.pcr == pcr && event_key(e) == key)
}

/// One event that differs between the sides.
struct EventDelta<'a> {
    key: String,
    old: Option<&'a PredictedEvent>,
    new: Option<&'a PredictedEvent>,
}

fn event_deltas<'a>(
    om: &'a Measurements,
    nm: &'a Measurements,
    pcr: Pcr,
) -> (Vec<EventDelta<'a>>, bool) {
    let (o, n) = (keyed_events(om, pcr), keyed_events(nm, pcr));
    let mut out = Vec::new();
    for (k, e) in &o {
        match n.iter().find(|(nk, _)| nk == k) {
            Some((_, ne)) if ne.digests == e.digests => {}
            Some((_, ne)) => out.push(EventDelta {
                key: k.clone(),
                old: Some(e),
                new: Some(ne),
            }),
            None => out.push(EventDelta {
                key: k.clone(),
                old: Some(e),
                new: None,
            }),
        }
    }
    for (k, e) in &n {
        if !o.iter().any(|(ok, _)| ok == k) {
            out.push(EventDelta {
                key: k.clone(),
                old: None,
                new: Some(e),
            });
        }
    }
    let reordered = out.is_empty() && o.iter().map(|(k, _)| k).ne(n.iter().map(|(k, _)| k));
    (out, reordered)
}

fn event_detail(e: Option<&PredictedEvent>) -> Option<Detail> {
    e.map(|e| Detail::Event(EventState::from(e)))
}

fn digest_change(o: Option<&PredictedEvent>, n: Option<&PredictedEvent>) -> String {
    match (o, n) {
        (Some(a), Some(b)) => format!("sha256 {} → {}", a.digests.sha256, b.digests.sha256),
        _ => String::new(),
    }
}

/// ", because of: A, B" for a message; long lists are shortened (the cause's `because`
/// keeps them whole for machines).
fn because_suffix(because: &[String]) -> String {
    if because.is_empty() {
        String::new()
    } else {
        format!(", because of: {}", shorten(because))
    }
}

/// Paths of image causes that concern section `name`.
fn section_because(name: &str, image: &[Cause]) -> Vec<String> {
    let prefix = format!("{name}:");
    let mut out: Vec<String> = image
        .iter()
        .filter(|c| c.path == name || c.path.starts_with(&prefix))
        .map(|c| c.path.clone())
        .collect();
    if !PAYLOAD_SECTIONS.contains(&name) && image.iter().any(|c| c.path == "stub") {
        out.push("stub".into());
    }
    out
}

fn pcr_causes(
    om: &Measurements,
    nm: &Measurements,
    pcrs: &[PcrChange],
    image: &[Cause],
    notes: &mut Vec<String>,
) -> Vec<Cause> {
    let stub_changed = image.iter().any(|c| c.path == "stub");
    let mut out = Vec::new();
    let indices: BTreeSet<Pcr> = pcrs.iter().map(|p| p.pcr).collect();
    let mut both_unpredicted = Vec::new();
    for &i in om.unpredicted.keys().chain(nm.unpredicted.keys()) {
        if om.pcr(i).is_none() && nm.pcr(i).is_none() && !both_unpredicted.contains(&i) {
            both_unpredicted.push(i);
            notes.push(format!(
                "PCR{i} is predicted on neither side ({})",
                om.unpredicted
                    .get(&i)
                    .or_else(|| nm.unpredicted.get(&i))
                    .map(String::as_str)
                    .unwrap_or("no reason given")
            ));
        }
    }
    for pcr in indices {
        let value_changed = pcrs.iter().any(|p| p.pcr == pcr && p.changed);
        let (o, n) = (om.pcr(pcr), nm.pcr(pcr));
        if o.is_none() || n.is_none() {
            let (side, m) = if o.is_none() { ("A", om) } else { ("B", nm) };
            let reason = m
                .unpredicted
                .get(&pcr)
                .map(String::as_str)
                .unwrap_or("not in the measurements");
            out.push(Cause::new(
                "pcr.unpredicted",
                Level::Pcr,
                format!("PCR{pcr}"),
                vec![pcr],
                format!("PCR{pcr} is not predicted for {side}: {reason}"),
            ));
            continue;
        }
        let (deltas, reordered) = event_deltas(om, nm, pcr);
        if reordered {
            out.push(Cause::new(
                "pcr.order",
                Level::Pcr,
                format!("PCR{pcr}"),
                vec![pcr],
                format!("PCR{pcr}: the same events are extended in another order"),
            ));
        }
        if pcr == Pcr::PCR11 {
            out.extend(pcr11_causes(&deltas, image, om, nm));
        } else {
            for d in &deltas {
                out.push(pcr_event_cause(pcr, d, om, nm, image, stub_changed));
            }
        }
        if value_changed && deltas.is_empty() && !reordered {
            out.push(Cause::new(
                "pcr.event",
                Level::Pcr,
                format!("PCR{pcr}"),
                vec![pcr],
                format!(
                    "PCR{pcr} changed but no event differs (the measurements are inconsistent)"
                ),
            ));
        }
    }
    out
}

fn pcr_event_cause(
    pcr: Pcr,
    d: &EventDelta<'_>,
    om: &Measurements,
    nm: &Measurements,
    image: &[Cause],
    stub_changed: bool,
) -> Cause {
    let values = |c: Cause| c.values(event_detail(d.old), event_detail(d.new));
    match (pcr, d.key.as_str()) {
        (Pcr::PCR4, "uki") => {
            let because: Vec<String> = image.iter().map(|c| c.path.clone()).collect();
            let detail = if because.is_empty() {
                " (no attribution below the PCR level: it needs the UKIs or release directories)"
                    .to_owned()
            } else {
                String::new()
            };
            values(Cause::new(
                "pcr4.uki_authenticode",
                Level::Pcr,
                "PCR4:uki",
                vec![Pcr::PCR4],
                format!(
                    "PCR4 changed because the UKI's Authenticode digest changed ({}){detail}{}",
                    digest_change(d.old, d.new),
                    because_suffix(&because)
                ),
            ))
            .because(because)
        }
        (Pcr::PCR4, "kernel") => {
            let mut because = Vec::new();
            let message = match (d.old, d.new) {
                (Some(_), Some(_)) => {
                    if image.iter().any(|c| c.path == ".linux") {
                        because.push(".linux".to_owned());
                    }
                    format!(
                        "PCR4: the embedded kernel's Authenticode event changed ({})",
                        digest_change(d.old, d.new)
                    )
                }
                (Some(_), None) => {
                    format!(
                        "PCR4: the embedded kernel's Authenticode event is gone (systemd-stub {} does not load the kernel with LoadImage{})",
                        nm.stub.major,
                        if nm.secure_boot { " with Secure Boot on" } else { "" }
                    )
                }
                (None, Some(_)) => format!(
                    "PCR4: the embedded kernel's Authenticode event is new (systemd-stub {} loads the kernel with LoadImage)",
                    nm.stub.major
                ),
                (None, None) => "PCR4: the embedded kernel's Authenticode event changed".to_owned(),
            };
            if d.old.is_some() != d.new.is_some() {
                if stub_changed {
                    because.push("stub".to_owned());
                }
                if om.secure_boot != nm.secure_boot {
                    because.push("PCR7:SecureBoot".to_owned());
                }
            }
            let message = format!("{message}{}", because_suffix(&because));
            values(Cause::new(
                "pcr4.kernel_authenticode",
                Level::Pcr,
                "PCR4:kernel",
                vec![Pcr::PCR4],
                message,
            ))
            .because(because)
        }
        (Pcr::PCR7, key) if key.starts_with("var:") => {
            let name = key.trim_start_matches("var:");
            let message = if name == "SecureBoot" {
                let state = |on: bool| if on { "on" } else { "off" };
                format!(
                    "PCR7: Secure Boot state changed: {} → {} ({})",
                    state(om.secure_boot),
                    state(nm.secure_boot),
                    digest_change(d.old, d.new)
                )
            } else {
                // The event's text carries the variable's size: "PK (1234 bytes)".
                let size = |e: Option<&PredictedEvent>| {
                    e.map(|e| e.what.trim_start_matches(name).trim().to_owned())
                        .unwrap_or_else(|| "absent".into())
                };
                format!(
                    "PCR7: Secure Boot variable {name} changed: {} → {} ({})",
                    size(d.old),
                    size(d.new),
                    digest_change(d.old, d.new)
                )
            };
            values(Cause::new(
                "pcr7.variable",
                Level::Pcr,
                format!("PCR7:{name}"),
                vec![Pcr::PCR7],
                message,
            ))
        }
        _ => {
            let what = d.new.or(d.old).map(|e| e.what.clone()).unwrap_or_default();
            let how = match (d.old, d.new) {
                (Some(_), Some(_)) => format!("changed ({})", digest_change(d.old, d.new)),
                (None, _) => "is new".to_owned(),
                (_, None) => "is gone".to_owned(),
            };
            values(Cause::new(
                "pcr.event",
                Level::Pcr,
                format!("PCR{pcr}:{what}"),
                vec![pcr],
                format!("PCR{pcr}: event {what} {how}"),
            ))
        }
    }
}

/// PCR11 causes, one per section whose name or data event differs.
fn pcr11_causes(
    deltas: &[EventDelta<'_>],
    image: &[Cause],
    om: &Measurements,
    nm: &Measurements,
) -> Vec<Cause> {
    let stub_changed = image.iter().any(|c| c.path == "stub");
    let mut sections: Vec<&str> = Vec::new();
    for d in deltas {
        if let Some(name) = d
            .key
            .strip_prefix("name:")
            .or_else(|| d.key.strip_prefix("data:"))
        {
            if !sections.contains(&name) {
                sections.push(name);
            }
        }
    }
    let mut out = Vec::new();
    for name in sections {
        let data = deltas.iter().find(|d| d.key == format!("data:{name}"));
        let size = |e: Option<&PredictedEvent>| {
            e.and_then(|e| section_data_event(&e.what)).map(|(_, s)| s)
        };
        let (old_size, new_size) = (
            data.and_then(|d| size(d.old)),
            data.and_then(|d| size(d.new)),
        );
        let mut because = section_because(name, image);
        let presence_changed = data.is_some_and(|d| d.old.is_some() != d.new.is_some());
        let how = if presence_changed {
            if stub_changed
                && rules_differ_for(name, om, nm)
                && !because.contains(&"stub".to_owned())
            {
                because.push("stub".into());
            }
            match (old_size, new_size) {
                (None, Some(s)) => format!("section {name} is now measured ({s} bytes)"),
                (Some(s), None) => format!("section {name} is no longer measured (was {s} bytes)"),
                _ => format!("the events of section {name} changed"),
            }
        } else {
            match (old_size, new_size) {
                (Some(a), Some(b)) => {
                    format!("the events of section {name} changed ({a} → {b} bytes)")
                }
                _ => format!("the events of section {name} changed"),
            }
        };
        out.push(
            Cause::new(
                "pcr11.section",
                Level::Pcr,
                format!("PCR11:{name}"),
                vec![Pcr::PCR11],
                format!("PCR11: {how}{}", because_suffix(&because)),
            )
            .values(
                data.and_then(|d| event_detail(d.old)),
                data.and_then(|d| event_detail(d.new)),
            )
            .because(because),
        );
    }
    out
}

/// Image-level causes from events alone (a side without a UKI): the stub version and each
/// section whose PCR11 data event differs.
fn event_level_image_causes(om: &Measurements, nm: &Measurements) -> Vec<Cause> {
    let mut out = Vec::new();
    let (deltas, _) = event_deltas(om, nm, Pcr::PCR11);
    // The stub's own measured sections (.sbat) change with the stub's code.
    let stub_sections: Vec<String> = deltas
        .iter()
        .filter_map(|d| d.key.strip_prefix("data:"))
        .filter(|name| !PAYLOAD_SECTIONS.contains(name))
        .map(str::to_owned)
        .collect();
    if om.stub.version != nm.stub.version || !stub_sections.is_empty() {
        out.push(stub_cause(om, nm, &stub_sections));
    }
    for d in deltas.iter() {
        let Some(name) = d.key.strip_prefix("data:") else {
            continue;
        };
        if !PAYLOAD_SECTIONS.contains(&name) {
            continue;
        }
        let blob = |e: Option<&PredictedEvent>| {
            e.and_then(|e| {
                section_data_event(&e.what).map(|(_, size)| {
                    Detail::Blob(BlobState {
                        size,
                        sha256: e.digests.sha256.clone(),
                    })
                })
            })
        };
        let (o, n) = (blob(d.old), blob(d.new));
        let describe = |b: &Option<Detail>| match b {
            Some(Detail::Blob(b)) => format!("{} bytes, sha256 {}", b.size, b.sha256),
            _ => "not measured".to_owned(),
        };
        let kind = match (name, &o, &n) {
            // Whether a section was added or only became measured cannot be told apart
            // from events: a stub change says which.
            (_, None, Some(_)) | (_, Some(_), None) if rules_differ_for(name, om, nm) => continue,
            (_, None, Some(_)) => "section.added",
            (_, Some(_), None) => "section.removed",
            (".linux", _, _) => "kernel",
            (".cmdline", _, _) => "cmdline",
            (".initrd", _, _) => "initrd.archive",
            _ => "section.modified",
        };
        out.push(
            Cause::new(
                kind,
                Level::Image,
                name,
                vec![Pcr::PCR4, Pcr::PCR11],
                format!(
                    "{name} changed (from its PCR11 event): {} → {}",
                    describe(&o),
                    describe(&n)
                ),
            )
            .values(o, n),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// Text output.

/// "a, b, c" — or the first few and "and N more" for long lists.
fn shorten(list: &[String]) -> String {
    let shown: Vec<&str> = list
        .iter()
        .take(MAX_BECAUSE_SHOWN)
        .map(String::as_str)
        .collect();
    let more = list.len().saturating_sub(MAX_BECAUSE_SHOWN);
    if more == 0 {
        shown.join(", ")
    } else {
        format!("{} and {more} more", shown.join(", "))
    }
}

impl DiffReport {
    /// The report for people: only what changed, in a form to paste into a change ticket.
    pub fn render_text(&self) -> String {
        let side = |s: &SideInfo| match (&s.name, &s.version) {
            (Some(n), Some(v)) => format!("{} ({n} {v}, systemd-stub {})", s.path, s.stub),
            _ => format!("{} ({}, systemd-stub {})", s.path, s.kind, s.stub),
        };
        let mut out = String::new();
        if self.identical {
            out.push_str("no change\n");
            out.push_str(&format!("A: {}\nB: {}\n", side(&self.a), side(&self.b)));
            for n in &self.notes {
                out.push_str(&format!("note: {n}\n"));
            }
            return out;
        }
        out.push_str(&format!("A: {}\nB: {}\n", side(&self.a), side(&self.b)));

        let changed: Vec<&PcrChange> = self.pcrs.iter().filter(|p| p.changed).collect();
        if changed.is_empty() {
            out.push_str("\nPCRs: unchanged\n");
        } else {
            out.push_str("\nChanged PCRs (A → B):\n");
            for p in changed {
                let label = format!("PCR{}", p.pcr);
                out.push_str(&format!(
                    "  {label:<5} {} {}\n  {:<5} {:>6} {}\n",
                    p.bank,
                    p.old.as_deref().unwrap_or("(not predicted)"),
                    "",
                    "→",
                    p.new.as_deref().unwrap_or("(not predicted)")
                ));
            }
        }
        let group = |out: &mut String, title: &str, level: Level| {
            let items: Vec<&Cause> = self.causes.iter().filter(|c| c.level == level).collect();
            if items.is_empty() {
                return;
            }
            out.push_str(&format!("\n{title}:\n"));
            for c in items {
                out.push_str(&format!("  - {}\n", c.message));
            }
        };
        // Root causes first: what went into the build (inputs, how zoa-init was made),
        // then what that changed in the image, then the events that moved.
        group(&mut out, "What went into the build", Level::Build);
        group(&mut out, "What changed in the image", Level::Image);
        group(&mut out, "Why the PCRs changed", Level::Pcr);
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n");
            for n in &self.notes {
                out.push_str(&format!("  - {n}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest committed build.json with its initramfs record set to `packing`.
    fn report_packed(packing: serde_json::Value) -> BuildReport {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/measurements/llama-server-0.7.0-9/build.json"
        );
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let record = v["initramfs"].as_object_mut().unwrap();
        record.remove("level");
        for (k, x) in packing.as_object().unwrap() {
            record.insert(k.clone(), x.clone());
        }
        BuildReport::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn packing_causes(a: &BuildReport, b: &BuildReport) -> Vec<(Option<Detail>, Option<Detail>)> {
        build_causes(a, b)
            .into_iter()
            .filter(|c| c.kind == "build.initramfs_compression")
            .map(|c| (c.old, c.new))
            .collect()
    }

    #[test]
    fn a_zstd_record_without_a_level_packs_as_the_default_level() {
        let old = report_packed(serde_json::json!({"compression": "zstd"}));
        let twelve = report_packed(serde_json::json!({"compression": "zstd", "level": 12}));
        let three = report_packed(serde_json::json!({"compression": "zstd", "level": 3}));
        let none = report_packed(serde_json::json!({"compression": "none"}));
        assert!(packing_causes(&old, &twelve).is_empty());
        let text = |s: &str| Some(Detail::Text(s.into()));
        assert_eq!(
            packing_causes(&old, &three),
            [(text("zstd level 12"), text("zstd level 3"))]
        );
        assert_eq!(
            packing_causes(&none, &three),
            [(text("none"), text("zstd level 3"))]
        );
    }
    use crate::measure::types::StubRecord;

    fn ev(pcr: u32, t: &str, what: &str, d: &str) -> PredictedEvent {
        PredictedEvent {
            pcr: Pcr::try_from(pcr).unwrap(),
            event_type: t.to_owned(),
            what: what.to_owned(),
            digests: Digests {
                sha256: d.repeat(64 / d.len()),
                sha384: d.repeat(96 / d.len()),
            },
        }
    }

    fn measurements(major: u32, events: Vec<PredictedEvent>) -> Measurements {
        let mut pcrs = BTreeMap::new();
        for p in Pcr::PREDICTED {
            // Not a real extend: a stand-in that changes whenever the PCR's events do.
            let joined: String = events
                .iter()
                .filter(|e| e.pcr == p)
                .map(|e| e.digests.sha256.clone())
                .collect();
            pcrs.insert(
                p,
                Digests {
                    sha256: crate::digest::sha256_bytes(joined.as_bytes()),
                    sha384: crate::digest::sha256_bytes(joined.as_bytes()),
                },
            );
        }
        Measurements {
            stub: StubRecord {
                version: format!("{major}.1-1"),
                major,
            },
            secure_boot: false,
            pcrs,
            unpredicted: BTreeMap::new(),
            unmeasured_sections: Vec::new(),
            events,
        }
    }

    fn base_events(cmdline: &str, kernel_event: bool) -> Vec<PredictedEvent> {
        let mut e = vec![
            ev(4, "EV_EFI_ACTION", "\"Calling\"", "a1"),
            ev(4, "EV_SEPARATOR", "separator", "00"),
            ev(
                4,
                "EV_EFI_BOOT_SERVICES_APPLICATION",
                "Authenticode of the UKI",
                cmdline,
            ),
        ];
        if kernel_event {
            e.push(ev(
                4,
                "EV_EFI_BOOT_SERVICES_APPLICATION",
                "Authenticode of embedded kernel (.linux; systemd-stub 252 starts it with LoadImage)",
                "cc",
            ));
        }
        e.push(ev(7, EV_EFI_VARIABLE_DRIVER_CONFIG, "PK (0 bytes)", "70"));
        e.push(ev(7, "EV_SEPARATOR", "separator", "00"));
        e.push(ev(11, "EV_IPL", "section name .cmdline", "c0"));
        e.push(ev(11, "EV_IPL", "section .cmdline (33 bytes)", cmdline));
        e
    }

    #[test]
    fn event_keys_pair_the_same_event() {
        let m = measurements(252, base_events("11", true));
        let keys: Vec<String> = keyed_events(&m, Pcr::PCR4)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys[2..], ["uki".to_owned(), "kernel".to_owned()]);
        let keys: Vec<String> = keyed_events(&m, Pcr::PCR7)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys[0], "var:PK");
        let keys: Vec<String> = keyed_events(&m, Pcr::PCR11)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["name:.cmdline", "data:.cmdline"]);
        assert_eq!(
            section_data_event("section .initrd (12 bytes)"),
            Some((".initrd", 12))
        );
        assert_eq!(section_data_event("section name .initrd"), None);
    }

    #[test]
    fn repeated_events_are_numbered() {
        let m = measurements(
            252,
            vec![ev(12, "EV_X", "same", "01"), ev(12, "EV_X", "same", "02")],
        );
        let keys: Vec<String> = keyed_events(&m, Pcr::PCR12)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["EV_X:same", "EV_X:same#2"]);
    }

    #[test]
    fn events_only_diff_attributes_pcr11_sections_and_pcr4() {
        let om = measurements(252, base_events("11", true));
        let nm = measurements(252, base_events("22", true));
        let pcrs = pcr_changes(&om, &nm);
        let changed: Vec<u32> = pcrs
            .iter()
            .filter(|p| p.changed)
            .map(|p| p.pcr.into())
            .collect();
        assert_eq!(changed, [4, 4, 11, 11]);
        let image = event_level_image_causes(&om, &nm);
        assert_eq!(image.len(), 1);
        assert_eq!(
            (image[0].kind.as_str(), image[0].path.as_str()),
            ("cmdline", ".cmdline")
        );
        let mut notes = Vec::new();
        let pcr = pcr_causes(&om, &nm, &pcrs, &image, &mut notes);
        let kinds: Vec<(&str, &str)> = pcr
            .iter()
            .map(|c| (c.kind.as_str(), c.path.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("pcr4.uki_authenticode", "PCR4:uki"),
                ("pcr11.section", "PCR11:.cmdline")
            ]
        );
        assert_eq!(pcr[0].because, [".cmdline"]);
        assert!(
            pcr[1].message.contains("(33 → 33 bytes)"),
            "{}",
            pcr[1].message
        );
    }

    #[test]
    fn stub_change_explains_the_kernel_event_and_new_sections() {
        let om = measurements(252, base_events("11", true));
        let mut events = base_events("22", false);
        events.push(ev(11, "EV_IPL", "section name .sbat", "5b"));
        events.push(ev(11, "EV_IPL", "section .sbat (1024 bytes)", "5c"));
        let nm = measurements(262, events);
        let image = event_level_image_causes(&om, &nm);
        let stub = image.iter().find(|c| c.kind == "stub").expect("stub cause");
        assert!(
            stub.message.contains("252.1-1 → 262.1-1"),
            "{}",
            stub.message
        );
        assert!(
            stub.message.contains("kernel-event rule differs"),
            "{}",
            stub.message
        );
        assert!(
            stub.message.contains("also measures .ucode, .uname, .sbat"),
            "{}",
            stub.message
        );
        // Newly measured sections are the stub's doing, not an added section.
        assert!(!image.iter().any(|c| c.kind == "section.added"));
        let pcrs = pcr_changes(&om, &nm);
        let mut notes = Vec::new();
        let pcr = pcr_causes(&om, &nm, &pcrs, &image, &mut notes);
        let kernel = pcr
            .iter()
            .find(|c| c.path == "PCR4:kernel")
            .expect("kernel event");
        assert!(kernel.message.contains("is gone"), "{}", kernel.message);
        assert_eq!(kernel.because, ["stub"]);
        let sbat = pcr.iter().find(|c| c.path == "PCR11:.sbat").expect(".sbat");
        assert!(
            sbat.message.contains("now measured (1024 bytes)"),
            "{}",
            sbat.message
        );
        assert_eq!(sbat.because, ["stub"]);
    }

    #[test]
    fn pcr7_variables_and_unpredicted_pcrs() {
        let om = measurements(252, base_events("11", true));
        let mut events = base_events("11", true);
        events[4] = ev(7, EV_EFI_VARIABLE_DRIVER_CONFIG, "PK (1234 bytes)", "77");
        let nm = measurements(252, events);
        let pcrs = pcr_changes(&om, &nm);
        let mut notes = Vec::new();
        let pcr = pcr_causes(&om, &nm, &pcrs, &[], &mut notes);
        assert_eq!(pcr.len(), 1);
        assert_eq!(pcr[0].path, "PCR7:PK");
        assert!(
            pcr[0].message.contains("(0 bytes) → (1234 bytes)"),
            "{}",
            pcr[0].message
        );

        let mut nm = nm;
        nm.pcrs.remove(&Pcr::PCR7);
        nm.unpredicted.insert(Pcr::PCR7, "keys unproven".into());
        nm.events.retain(|e| e.pcr != Pcr::PCR7);
        let pcrs = pcr_changes(&om, &nm);
        assert!(pcrs
            .iter()
            .any(|p| p.pcr == Pcr::PCR7 && p.changed && p.new.is_none()));
        let pcr = pcr_causes(&om, &nm, &pcrs, &[], &mut notes);
        assert_eq!(pcr[0].kind, "pcr.unpredicted");
        assert!(pcr[0]
            .message
            .contains("not predicted for B: keys unproven"));
    }

    #[test]
    fn origins_and_text_changes() {
        assert_eq!(
            split_origin("libc6 2.43-7"),
            Some(("libc6".into(), "2.43-7".into()))
        );
        assert_eq!(
            split_origin("zlib1g 1:1.3.dfsg+really1.3.2-4"),
            Some(("zlib1g".into(), "1:1.3.dfsg+really1.3.2-4".into()))
        );
        assert_eq!(split_origin("recipe"), None);
        assert_eq!(split_origin("recipe [init]"), None);
        assert_eq!(split_origin("zoa (merged /usr)"), None);
        assert_eq!(text_change("a b\n", "a c"), "\"a b\" → \"a c\"");
        assert_eq!(
            text_change("A=\"1\"\nB=\"2\"\n", "A=\"1\"\nB=\"3\"\n"),
            "-B=\"2\"; +B=\"3\""
        );
    }

    #[test]
    fn file_causes_name_path_sizes_and_packages() {
        let f = |sha: &str, origin: &str| {
            FileState {
                kind: "file".into(),
                mode: "0644".into(),
                size: Some(3),
                sha256: Some(sha.into()),
                target: None,
                device: None,
                origin: None,
                package: None,
                package_version: None,
            }
            .with_origin(Some(origin.into()))
        };
        let old: FileMap = [
            ("/lib/a".to_owned(), f("aa", "libc6 2.43-7")),
            ("/etc/gone".to_owned(), f("bb", "recipe")),
        ]
        .into();
        let new: FileMap = [
            ("/lib/a".to_owned(), f("cc", "libc6 2.44-1")),
            ("/etc/server.toml".to_owned(), f("dd", "recipe")),
        ]
        .into();
        let inputs: BTreeMap<String, String> =
            [("libc6".to_owned(), "input:libc6".to_owned())].into();
        let c = file_causes(&old, &new, &[Pcr::PCR4, Pcr::PCR11], &inputs);
        let got: Vec<(&str, &str)> = c
            .iter()
            .map(|c| (c.kind.as_str(), c.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("initrd.file_removed", ".initrd:/etc/gone"),
                ("initrd.file_added", ".initrd:/etc/server.toml"),
                ("initrd.file_modified", ".initrd:/lib/a"),
            ]
        );
        assert!(c[2].message.contains("sha256 aa → cc"), "{}", c[2].message);
        assert!(
            c[2].message.contains("libc6 2.43-7 → 2.44-1"),
            "{}",
            c[2].message
        );
        assert_eq!(c[2].because, ["input:libc6"]);
        assert!(c[1].because.is_empty());
        // Origin alone is not an image change.
        let same: FileMap = [("/lib/a".to_owned(), f("aa", "libc6 2.44-1"))].into();
        let before: FileMap = [("/lib/a".to_owned(), f("aa", "libc6 2.43-7"))].into();
        assert!(file_causes(&before, &same, &[Pcr::PCR4], &inputs).is_empty());
    }

    #[test]
    fn identical_report_says_no_change() {
        let info = SideInfo {
            path: "a".into(),
            kind: "uki",
            name: None,
            version: None,
            stub: "252.1-1".into(),
        };
        let r = DiffReport {
            identical: true,
            a: info.clone(),
            b: info,
            pcrs: Vec::new(),
            causes: Vec::new(),
            notes: Vec::new(),
        };
        assert!(r.render_text().starts_with("no change\n"));
    }

    #[test]
    fn detect_refuses_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.txt");
        std::fs::write(&p, "hello").unwrap();
        let e = Side::detect(&p).unwrap_err().to_string();
        assert!(e.contains("x.txt") && e.contains("neither"), "{e}");
        let e = Side::detect(dir.path()).unwrap_err().to_string();
        assert!(e.contains("without uki.efi"), "{e}");
        let j = dir.path().join("m.json");
        std::fs::write(&j, " {\"Measurements\": {}}").unwrap();
        assert_eq!(Side::detect(&j).unwrap(), Side::Measurements(j.clone()));
        let e = read_measurements(&j).unwrap_err().to_string();
        assert!(e.contains("nitro"), "{e}");
        // A release.json carries its measurements under "measurements".
        let m = measurements(252, base_events("11", true));
        let manifest = serde_json::json!({"format": "zoa-release/1", "measurements": m});
        std::fs::write(&j, manifest.to_string()).unwrap();
        assert_eq!(read_measurements(&j).unwrap(), m);
        assert_eq!(shorten(&["a".into(), "b".into()]), "a, b");
        let many: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(shorten(&many), "0, 1, 2, 3, 4, 5, 6, 7 and 2 more");
    }
}
