//! `release.json`: the manifest a release signature covers.
//!
//! It names the artifacts it covers (`uki.efi`, `build.json`, `measurements.json`, the SBOM
//! `sbom.spdx.json` when the build wrote one, and for a Secure Boot release `uefi-data.bin`) with their digests, and carries what an auditor or a KMS policy needs without opening them:
//! identity, recipe and input pins, the measurements (both banks, every event) and the
//! policy exceptions. Serialisation is canonical — fixed field order, maps sorted, two-space
//! indentation, one trailing newline — so regenerating it gives the same bytes.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::image::{BuildReport, InputRecord, RecipeRecord};
use crate::measure::Measurements;

/// Manifest format identifier; a verifier refuses formats it does not know.
pub const MANIFEST_FORMAT: &str = "zoa-release/1";
/// The boot image (`zoa build` names it).
pub const UKI_FILE: &str = crate::image::UKI_FILE;
/// What the build used and made (`zoa build`'s report, [`BuildReport`]).
pub const BUILD_FILE: &str = crate::image::BUILD_FILE;
/// The artifacts every release covers, in manifest order.
pub const ARTIFACTS: [&str; 3] = [UKI_FILE, BUILD_FILE, MEASUREMENTS_FILE];
/// The AMI `UefiData` variable store (binary) of a Secure Boot release: listed after
/// [`ARTIFACTS`] when present, so the signature covers the keys the image boots with.
pub const UEFI_DATA_FILE: &str = "uefi-data.bin";
/// The image's SBOM (`zoa build` writes it): covered when the build directory has one, so
/// releases made before zoa wrote SBOMs still verify.
pub const SBOM_FILE: &str = crate::image::sbom::SBOM_FILE;
/// File names inside a release directory.
pub const MANIFEST_FILE: &str = "release.json";
pub const SIGNATURE_FILE: &str = "release.json.minisig";
pub const MEASUREMENTS_FILE: &str = "measurements.json";

/// Errors reading or writing a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
}

/// The release manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub version: String,
    pub zoa_version: String,
    pub source_date_epoch: u64,
    pub recipe: RecipePin,
    pub inputs: Vec<InputPin>,
    pub artifacts: Vec<Artifact>,
    pub measurements: Measurements,
    pub policy_exceptions: Vec<serde_json::Value>,
    /// The AWS regions the release may be deployed in (`zoa sign --regions`); absent, any.
    /// Older zoa refuses a release.json that has them (unknown field): it fails closed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

/// The recipe a release was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipePin {
    pub file: String,
    pub sha256: String,
}

/// One pinned input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputPin {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_version: Option<String>,
}

/// A covered file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

impl From<RecipeRecord> for RecipePin {
    fn from(r: RecipeRecord) -> RecipePin {
        RecipePin {
            file: r.file,
            sha256: r.sha256,
        }
    }
}

impl From<InputRecord> for InputPin {
    fn from(i: InputRecord) -> InputPin {
        InputPin {
            name: i.name,
            sha256: i.sha256,
            size: i.size,
            package: i.package,
            package_version: i.package_version,
        }
    }
}

impl Manifest {
    /// Assembles the manifest of a build directory whose artifacts already exist; with
    /// `uefi_data`, `DIR/uefi-data.bin` is covered too.
    pub fn from_build_dir(
        dir: &Path,
        measurements: Measurements,
        uefi_data: bool,
    ) -> Result<Manifest, ManifestError> {
        let build_json = dir.join(BUILD_FILE);
        let file = build_json.display().to_string();
        let bytes = std::fs::read(&build_json).map_err(|source| ManifestError::Io {
            file: file.clone(),
            source,
        })?;
        let invalid = |message: String| ManifestError::Invalid {
            file: file.clone(),
            message,
        };
        let build = BuildReport::parse(&bytes).map_err(|e| invalid(e.to_string()))?;
        // The findings as build.json spells them (the manifest keeps them as JSON).
        let policy_exceptions = build
            .policy
            .exceptions
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        let mut artifacts = Vec::new();
        let sbom = dir.join(SBOM_FILE).is_file().then_some(SBOM_FILE);
        let optional = uefi_data.then_some(UEFI_DATA_FILE);
        for name in ARTIFACTS.into_iter().chain(sbom).chain(optional) {
            let path = dir.join(name);
            let (sha256, size) =
                crate::digest::sha256_file(&path).map_err(|source| ManifestError::Io {
                    file: path.display().to_string(),
                    source,
                })?;
            artifacts.push(Artifact {
                path: name.to_owned(),
                sha256,
                size,
            });
        }
        Ok(Manifest {
            format: MANIFEST_FORMAT.to_owned(),
            name: build.name,
            version: build.version,
            zoa_version: build.zoa_version,
            source_date_epoch: build.source_date_epoch,
            recipe: build.recipe.into(),
            inputs: build.inputs.into_iter().map(InputPin::from).collect(),
            artifacts,
            measurements,
            policy_exceptions,
            regions: Vec::new(),
        })
    }

    /// Canonical bytes.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, ManifestError> {
        let mut out = serde_json::to_vec_pretty(self).map_err(|e| ManifestError::Invalid {
            file: MANIFEST_FILE.into(),
            message: e.to_string(),
        })?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses manifest bytes (untrusted until the signature over them is checked).
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid {
            file: file.to_owned(),
            message: format!("not a zoa release manifest: {e}"),
        })?;
        if m.format != MANIFEST_FORMAT {
            return Err(ManifestError::Invalid {
                file: file.to_owned(),
                message: format!(
                    "manifest format {:?} is not supported (expected {MANIFEST_FORMAT})",
                    m.format
                ),
            });
        }
        for a in &m.artifacts {
            if !ARTIFACTS.contains(&a.path.as_str())
                && a.path != UEFI_DATA_FILE
                && a.path != SBOM_FILE
            {
                return Err(ManifestError::Invalid {
                    file: file.to_owned(),
                    message: format!("artifact {:?} is not one zoa signs", a.path),
                });
            }
        }
        // What `zoa sign --regions` writes: real names, sorted, each once.
        let canonical = super::regions::parse_list(&m.regions.join(","));
        if !m.regions.is_empty() && canonical.as_deref() != Ok(m.regions.as_slice()) {
            return Err(ManifestError::Invalid {
                file: file.to_owned(),
                message: format!(
                    "regions {:?} are not a sorted list of distinct AWS region names",
                    m.regions
                ),
            });
        }
        Ok(m)
    }

    /// "name version", as errors and reports name the release.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.version)
    }

    /// The covered file named `name`.
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.path == name)
    }

    /// Whether the release carries an AMI `UefiData` variable store (`uefi-data.bin`): its
    /// measurements were predicted with those variables, and an AMI must enroll them.
    pub fn has_uefi_data(&self) -> bool {
        self.artifacts.iter().any(|a| a.path == UEFI_DATA_FILE)
    }

    /// zoa's trusted comment for this manifest.
    pub fn trusted_comment(&self, manifest_sha256: &str) -> String {
        format!(
            "zoa-release name={} version={} manifest-sha256={manifest_sha256}",
            self.name, self.version
        )
    }
}

/// A parsed zoa trusted comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseComment {
    pub name: String,
    pub version: String,
    pub manifest_sha256: String,
}

/// Parses `zoa-release name=… version=… manifest-sha256=…`; `None` for a foreign comment.
pub fn parse_trusted_comment(comment: &str) -> Option<Result<ReleaseComment, String>> {
    let rest = comment.trim().strip_prefix("zoa-release ")?;
    let mut name = None;
    let mut version = None;
    let mut digest = None;
    for part in rest.split_whitespace() {
        match part.split_once('=') {
            Some(("name", v)) => name = Some(v.to_owned()),
            Some(("version", v)) => version = Some(v.to_owned()),
            Some(("manifest-sha256", v)) => digest = Some(v.to_owned()),
            _ => {
                return Some(Err(format!(
                    "unexpected field {part:?} in the zoa trusted comment"
                )))
            }
        }
    }
    Some(match (name, version, digest) {
        (Some(name), Some(version), Some(manifest_sha256)) => Ok(ReleaseComment {
            name,
            version,
            manifest_sha256,
        }),
        _ => Err("the zoa trusted comment lacks name, version or manifest-sha256".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_comments() {
        let c = parse_trusted_comment("zoa-release name=a version=1.0 manifest-sha256=abc")
            .unwrap()
            .unwrap();
        assert_eq!(c.name, "a");
        assert_eq!(c.manifest_sha256, "abc");
        assert!(parse_trusted_comment("timestamp:123\tfile:release.json").is_none());
        assert!(parse_trusted_comment("zoa-release name=a")
            .unwrap()
            .is_err());
        assert!(
            parse_trusted_comment("zoa-release name=a version=1 manifest-sha256=x extra=1")
                .unwrap()
                .is_err()
        );
    }

    /// Policy exceptions move from build.json into the manifest as JSON: the typed
    /// findings must give the text build.json holds, field order included (the manifest's
    /// bytes are signed).
    #[test]
    fn policy_exceptions_keep_build_json_spelling() {
        let text = r#"{"rule":"ZOA-P004","path":"/usr/bin/x","detail":"setuid","excepted_because":"needed by x for y"}"#;
        let finding: crate::image::policy::Finding = serde_json::from_str(text).unwrap();
        let value = serde_json::to_value(&finding).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
    }

    /// The committed reference releases: their manifests and measurements (typed PCR
    /// indices and banks) parse and serialize back to the very bytes that were signed.
    #[test]
    fn committed_releases_round_trip_byte_for_byte() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements");
        let mut seen = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let dir = entry.unwrap().path();
            let manifest = dir.join(MANIFEST_FILE);
            if !manifest.is_file() {
                continue;
            }
            let bytes = std::fs::read(&manifest).unwrap();
            let m = Manifest::parse(MANIFEST_FILE, &bytes).unwrap();
            assert!(
                m.to_canonical_json().unwrap() == bytes,
                "{}",
                manifest.display()
            );
            let measured = std::fs::read(dir.join(MEASUREMENTS_FILE)).unwrap();
            let parsed: Measurements = serde_json::from_slice(&measured).unwrap();
            let mut again = serde_json::to_vec_pretty(&parsed).unwrap();
            again.push(b'\n');
            assert!(again == measured, "{}", dir.display());
            seen += 1;
        }
        assert!(seen >= 4, "{seen} reference releases");
    }

    /// Regions are signed as `zoa sign --regions` writes them; anything else is refused,
    /// and a release without them serializes as it always did.
    #[test]
    fn regions_are_canonical_or_refused() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements");
        let dir = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|d| d.join(MANIFEST_FILE).is_file())
            .unwrap();
        let bytes = std::fs::read(dir.join(MANIFEST_FILE)).unwrap();
        let m = Manifest::parse(MANIFEST_FILE, &bytes).unwrap();
        assert!(m.regions.is_empty());
        assert!(!String::from_utf8(bytes).unwrap().contains("regions"));
        let base = serde_json::to_value(&m).unwrap();
        let with = |regions: &[&str]| {
            let mut v = base.clone();
            v["regions"] = serde_json::json!(regions);
            Manifest::parse("m", &serde_json::to_vec(&v).unwrap())
        };
        let back = with(&["eu-central-1", "eu-west-1"]).unwrap();
        assert_eq!(back.regions, ["eu-central-1", "eu-west-1"]);
        for bad in [
            &["eu-west-1", "eu-central-1"][..],
            &["eu-west-1", "eu-west-1"],
            &["Frankfurt"],
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.contains("not a sorted list of distinct AWS region names"),
                "{e}"
            );
        }
    }

    #[test]
    fn garbage_manifests_are_refused() {
        assert!(Manifest::parse("m", b"{}").is_err());
        assert!(Manifest::parse("m", b"not json").is_err());
    }
}
