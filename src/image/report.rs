//! `build.json`: what `zoa build` used and made, written next to `uki.efi`.
//!
//! One type for the writer (`zoa build`) and every reader (the manifest `zoa sign` makes,
//! `zoa verify --rebuild`, `zoa diff`, `zoa deploy`'s serving port), so the file has one
//! schema. Its bytes are inside signed manifests and reproducibility checks compare them,
//! so the serialization is part of the format: field order, which empty fields are left
//! out, two-space indentation and one trailing newline ([`BuildReport::to_json`]).
//!
//! Reading is strict: every field a zoa build.json has always had is required, unknown
//! fields are refused (a changed schema is a new [`BuildFormat`]), and a format this zoa
//! does not know is refused as such before anything else is looked at.

use serde::{Deserialize, Serialize};

use super::policy::PolicyReport;
use super::tree::FileEntry;
use crate::init_build::provenance::Provenance;
use crate::recipe::Compression;
use crate::uefi::uki::{PlacedSection, StubInfo};

/// The file name inside a build or release directory.
pub const BUILD_FILE: &str = "build.json";

/// The build.json formats this zoa reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildFormat {
    /// The first format. It is written without a `format` field: every build.json made
    /// before the field existed is this format, and builds keep producing those exact
    /// bytes (signed manifests hold their digests).
    #[default]
    #[serde(rename = "zoa-build/1")]
    V1,
}

impl BuildFormat {
    /// The format identifier, as a later format will write it in `format`.
    pub fn name(self) -> &'static str {
        match self {
            BuildFormat::V1 => "zoa-build/1",
        }
    }

    fn from_name(name: &str) -> Option<BuildFormat> {
        [BuildFormat::V1].into_iter().find(|f| f.name() == name)
    }

    /// Whether the format goes unwritten (see [`BuildFormat::V1`]).
    fn is_implicit(&self) -> bool {
        matches!(self, BuildFormat::V1)
    }
}

/// Why bytes are not a build.json this zoa reads (the caller names the file).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("not a zoa build.json: {0}")]
    Invalid(serde_json::Error),
    #[error(
        "build.json format {found:?} is not one this zoa reads ({}): a newer zoa wrote it",
        BuildFormat::V1.name()
    )]
    UnsupportedFormat { found: String },
}

/// What `build.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildReport {
    #[serde(default, skip_serializing_if = "BuildFormat::is_implicit")]
    pub format: BuildFormat,
    pub zoa_version: String,
    pub name: String,
    pub version: String,
    pub recipe: RecipeRecord,
    pub source_date_epoch: u64,
    pub cmdline: String,
    /// The port the server listens on (from the recipe; `zoa deploy` opens it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_port: Option<u16>,
    pub stub: StubInfo,
    pub kernel: KernelRecord,
    pub inputs: Vec<InputRecord>,
    pub init: InitRecord,
    pub outputs: Vec<OutputRecord>,
    /// The Secure Boot signature `uki.efi` carries (`--sign-with`); absent when unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot_signature: Option<SignatureRecord>,
    pub sections: Vec<PlacedSection>,
    pub initramfs: InitramfsRecord,
    pub policy: PolicyReport,
    pub files: Vec<FileEntry>,
}

impl BuildReport {
    /// Parses build.json bytes: the format first (a newer zoa's file is refused for its
    /// format, not for some field this zoa does not know), then the whole report.
    pub fn parse(bytes: &[u8]) -> Result<BuildReport, ReportError> {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            format: Option<String>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(ReportError::Invalid)?;
        if let Some(found) = probe.format {
            if BuildFormat::from_name(&found).is_none() {
                return Err(ReportError::UnsupportedFormat { found });
            }
        }
        serde_json::from_slice(bytes).map_err(ReportError::Invalid)
    }

    /// The file's bytes: pretty-printed (two-space indentation), one trailing newline.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = serde_json::to_vec_pretty(self)?;
        out.push(b'\n');
        Ok(out)
    }

    /// The output recorded for `path` (`uki.efi`).
    pub fn output(&self, path: &str) -> Option<&OutputRecord> {
        self.outputs.iter().find(|o| o.path == path)
    }
}

/// A signed UKI: what was signed and by whom. The Authenticode digest skips the
/// signature, so it is the same for the unsigned UKI a rebuild without the key produces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecord {
    /// The UKI before signing.
    pub unsigned_sha256: String,
    pub unsigned_size: u64,
    /// The Authenticode SHA-256 the signature covers (PCR4's UKI event in that bank).
    pub authenticode_sha256: String,
    /// The signing certificate's subject and the SHA-256 of its DER.
    pub signer: String,
    pub certificate_sha256: String,
}

/// The recipe a build came from (file name, not path: build.json must not depend on
/// where the recipe was).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeRecord {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelRecord {
    pub release: Option<String>,
    pub sha256: String,
    pub size: u64,
}

/// One input with its digest and, for packages, name and version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_version: Option<String>,
}

/// The image's PID 1 (`/init`) and how it was made (`null` when it was not built by
/// `zoa build-init`: then nobody else can rebuild the image). The fields of an
/// [`OutputRecord`] are spelled out rather than flattened, so unknown fields are refused
/// here too.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRecord {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// Always written (`null` included); absent in build.json files made before zoa
    /// recorded it.
    #[serde(default)]
    pub provenance: Option<Provenance>,
}

/// A produced file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRecord {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitramfsRecord {
    pub compression: Compression,
    /// The zstd level (with zstd only; absent in build.json files made before recipes
    /// could choose it, which all used level 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
    pub uncompressed_size: u64,
    pub size: u64,
    pub entries: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reference release's build.json, as committed (each digest is in the signed
    /// release.json beside it): the formats zoa wrote over time.
    fn references() -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/measurements");
        let mut found: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path().join("build.json"))
            .filter(|p| p.is_file())
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        // By release number (the last `-N` of the directory name), oldest first.
        found.sort_by_key(|(p, _)| {
            let dir = p.parent().unwrap().file_name().unwrap().to_string_lossy();
            dir.rsplit('-').next().unwrap().parse::<u32>().unwrap_or(0)
        });
        assert!(found.len() >= 2, "no committed build.json under {dir}");
        found
    }

    /// The newest of them.
    fn reference() -> Vec<u8> {
        references().pop().unwrap().1
    }

    #[test]
    fn every_committed_build_json_round_trips_byte_for_byte() {
        for (path, bytes) in references() {
            let report = BuildReport::parse(&bytes).unwrap();
            assert_eq!(report.format, BuildFormat::V1);
            assert_eq!(report.name, "llama-server");
            assert_eq!(report.serving_port, Some(8080));
            assert!(report.init.provenance.is_some());
            assert!(report.output("uki.efi").is_some());
            assert!(
                report.to_json().unwrap() == bytes,
                "re-rendering changed {}",
                path.display()
            );
        }
    }

    fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&reference()).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn the_first_format_may_be_named_and_later_ones_are_refused() {
        let named = edited(|v| v["format"] = "zoa-build/1".into());
        let report = BuildReport::parse(&named).unwrap();
        assert_eq!(report.format, BuildFormat::V1);
        // ...and is written the way every first-format build.json is: without the field.
        assert!(report.to_json().unwrap() == reference());

        // A newer format is refused for being newer, even though its fields differ too.
        let newer = edited(|v| {
            v["format"] = "zoa-build/2".into();
            v["something_new"] = 1.into();
            v.as_object_mut().unwrap().remove("files");
        });
        let e = BuildReport::parse(&newer).unwrap_err().to_string();
        assert!(
            e.contains("\"zoa-build/2\"") && e.contains("zoa-build/1") && e.contains("newer"),
            "{e}"
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_refused() {
        let unknown = edited(|v| v["extra"] = true.into());
        let e = BuildReport::parse(&unknown).unwrap_err().to_string();
        assert!(
            e.starts_with("not a zoa build.json") && e.contains("extra"),
            "{e}"
        );
        let nested = edited(|v| v["init"]["extra"] = true.into());
        assert!(BuildReport::parse(&nested).is_err());
        let missing = edited(|v| {
            v.as_object_mut().unwrap().remove("inputs");
        });
        let e = BuildReport::parse(&missing).unwrap_err().to_string();
        assert!(e.contains("inputs"), "{e}");
        assert!(BuildReport::parse(b"[]").is_err());
        assert!(BuildReport::parse(b"not json").is_err());
    }

    #[test]
    fn fields_newer_than_the_first_builds_are_optional() {
        // Builds before deploy, Secure Boot signing and zoa-init provenance lack these.
        let old = edited(|v| {
            let o = v.as_object_mut().unwrap();
            o.remove("serving_port");
            o.remove("secure_boot_signature");
            v["init"].as_object_mut().unwrap().remove("provenance");
        });
        let report = BuildReport::parse(&old).unwrap();
        assert_eq!(report.serving_port, None);
        assert!(report.init.provenance.is_none());
    }
}
