//! Releases: the signed manifest over a build directory, its verification (signature,
//! artifact digests, re-measurement, optional rebuild) and the append-only log of
//! reference releases; diffs between releases for auditors.

pub mod diff;
pub mod keys;
pub mod log;
pub mod manifest;

use serde::Serialize;
use std::path::{Path, PathBuf};

use crate::measure::{self, MeasureOptions};
use crate::uefi::uefidata::UefiVarStore;
use manifest::{
    parse_trusted_comment, Manifest, ManifestError, MANIFEST_FILE, MEASUREMENTS_FILE,
    SIGNATURE_FILE, UEFI_DATA_FILE,
};

/// Errors of signing and verifying, one variant per verdict (the CLI maps each to its
/// own exit status, so CI can tell a bad signature from a changed artifact).
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0}")]
    BadSignature(String),
    #[error("{0}")]
    ArtifactMismatch(String),
    #[error("{0}")]
    MeasurementMismatch(String),
    #[error("{0}")]
    NotReproducible(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Measure(#[from] measure::MeasureError),
    #[error(transparent)]
    Build(#[from] crate::image::BuildError),
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    #[error("{file}: not an AMI UefiData variable store (binary starting with AMZNUEFI, or its base64): {message}")]
    UefiData { file: String, message: String },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ReleaseError {
    ReleaseError::Io {
        file: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_err(path, e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| io_err(path, e))?;
    tmp.persist(path).map_err(|e| io_err(path, e.error))?;
    Ok(())
}

/// What `zoa sign` produced.
#[derive(Debug, Serialize)]
pub struct Signed {
    pub manifest: PathBuf,
    pub signature: PathBuf,
    pub manifest_sha256: String,
    pub trusted_comment: String,
    /// `DIR/uefi-data.bin`, when the release carries an AMI variable store (absent
    /// otherwise, so a release without one prints what it always did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uefi_data: Option<PathBuf>,
    /// Whether the measurements assume Secure Boot on (only with `uefi_data`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub secure_boot: bool,
}

/// Reads a `UefiData` blob in either form RegisterImage's users meet it (the binary, or
/// its base64 as `uefivars -o aws` prints it) and returns the checked binary, unchanged.
pub fn read_uefi_data_blob(path: &Path) -> Result<Vec<u8>, ReleaseError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    // The whole store is parsed (checksum, dictionary, variables), so a damaged blob is
    // refused here rather than by EC2 at RegisterImage.
    let (_, blob) = UefiVarStore::from_file_bytes(bytes).map_err(|e| ReleaseError::UefiData {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(blob)
}

/// `zoa sign DIR`: measures the UKI (writing `measurements.json`), writes the canonical
/// `release.json` and its minisign signature. A failure leaves no new signature behind.
///
/// With `uefi_data` (an AMI `UefiData` blob, binary or base64), the blob is stored as
/// `DIR/uefi-data.bin` (binary), the UKI is measured booting with its PK, KEK, db and dbx
/// (Secure Boot on when it holds a PK) and the manifest covers it. Without, an existing
/// `DIR/uefi-data.bin` is used the same way (a re-sign keeps a Secure Boot release one);
/// remove the file to sign a release without it.
pub fn sign(
    dir: &Path,
    secret_key: &Path,
    password: &keys::Password,
    uefi_data: Option<&Path>,
) -> Result<Signed, ReleaseError> {
    let uki = dir.join("uki.efi");
    let uefi_path = dir.join(UEFI_DATA_FILE);
    let source = match uefi_data {
        Some(p) => Some(p.to_owned()),
        None => uefi_path.is_file().then(|| uefi_path.clone()),
    };
    let blob = source.as_deref().map(read_uefi_data_blob).transpose()?;
    // The blob is measured from a staged copy, so a blob the prediction refuses (an
    // unsigned UKI with Secure Boot on, say) never replaces DIR/uefi-data.bin.
    let staged = match &blob {
        Some(bytes) => {
            let mut tmp = tempfile::Builder::new()
                .prefix(".uefi-data.bin.")
                .tempfile_in(dir)
                .map_err(|e| io_err(&uefi_path, e))?;
            std::io::Write::write_all(&mut tmp, bytes).map_err(|e| io_err(&uefi_path, e))?;
            Some(tmp)
        }
        None => None,
    };
    let options = MeasureOptions {
        uefi_data: staged.as_ref().map(|t| t.path().to_owned()),
        ..MeasureOptions::default()
    };
    let measurements = measure::predict(&uki, &options)?;
    let secure_boot = measurements.secure_boot;
    let mut m_bytes = serde_json::to_vec_pretty(&measurements)
        .map_err(|e| io_err(&dir.join(MEASUREMENTS_FILE), e))?;
    m_bytes.push(b'\n');
    let manifest_path = dir.join(MANIFEST_FILE);
    let signature_path = dir.join(SIGNATURE_FILE);
    // Sign in memory first: a wrong password must not leave a half-written release.
    let measurements_path = dir.join(MEASUREMENTS_FILE);
    let previous = std::fs::read(&measurements_path).ok();
    let previous_uefi = std::fs::read(&uefi_path).ok();
    write_atomic(&measurements_path, &m_bytes)?;
    let result = (|| {
        if let Some(tmp) = staged {
            tmp.persist(&uefi_path)
                .map_err(|e| io_err(&uefi_path, e.error))?;
        }
        let manifest = Manifest::from_build_dir(dir, measurements, blob.is_some())?;
        let bytes = manifest.to_canonical_json()?;
        let digest = crate::digest::sha256_bytes(&bytes);
        let comment = manifest.trusted_comment(&digest);
        let signature = keys::sign(secret_key, password, &bytes, &comment)?;
        write_atomic(&manifest_path, &bytes)?;
        write_atomic(&signature_path, signature.as_bytes())?;
        Ok(Signed {
            manifest: manifest_path.clone(),
            signature: signature_path.clone(),
            manifest_sha256: digest,
            trusted_comment: comment,
            uefi_data: blob.is_some().then(|| uefi_path.clone()),
            secure_boot,
        })
    })();
    if result.is_err() {
        // Put measurements.json (and uefi-data.bin) back as they were: signing failed,
        // nothing changed.
        for (path, before) in [(&measurements_path, previous), (&uefi_path, previous_uefi)] {
            match before {
                Some(p) => {
                    let _ = write_atomic(path, &p);
                }
                None => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
    result
}

/// The outcome of `zoa verify`.
#[derive(Debug, Serialize)]
pub struct Verification {
    pub name: String,
    pub version: String,
    pub manifest_sha256: String,
    pub key_id: String,
    pub trusted_comment: String,
    /// Set when the signature is valid but its trusted comment is not zoa's.
    pub warning: Option<String>,
    pub artifacts_checked: Vec<String>,
    pub pcrs_checked: Vec<String>,
    /// Set when a rebuild was requested and matched.
    pub rebuilt: Option<RebuildReport>,
    /// The manifest that was verified, as read (so callers need not read it again).
    #[serde(skip)]
    pub manifest: Manifest,
}

/// A successful rebuild comparison.
#[derive(Debug, Serialize)]
pub struct RebuildReport {
    pub recipe: PathBuf,
    pub identical: Vec<String>,
}

/// `zoa verify DIR --pubkey PUB`: signature and trusted comment, every artifact digest,
/// the UKI re-measured; with `rebuild`, a fresh build compared byte for byte.
pub fn verify(
    dir: &Path,
    public_key: &Path,
    rebuild: Option<(&crate::recipe::Recipe, &crate::image::BuildOptions)>,
) -> Result<Verification, ReleaseError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let signature_path = dir.join(SIGNATURE_FILE);
    let bytes = std::fs::read(&manifest_path).map_err(|e| io_err(&manifest_path, e))?;
    let signature =
        std::fs::read_to_string(&signature_path).map_err(|e| io_err(&signature_path, e))?;
    let verified = keys::verify(public_key, &bytes, &signature)
        .map_err(|e| ReleaseError::BadSignature(format!("{}: {e}", signature_path.display())))?;
    let digest = crate::digest::sha256_bytes(&bytes);
    let manifest = Manifest::parse(&manifest_path.display().to_string(), &bytes)?;
    let warning = match parse_trusted_comment(&verified.trusted_comment) {
        None => Some(format!(
            "the signature is valid but its trusted comment is not zoa's ({:?}): name, version and manifest digest are not bound by it",
            verified.trusted_comment
        )),
        Some(Err(why)) => {
            return Err(ReleaseError::BadSignature(format!("{}: {why}", signature_path.display())))
        }
        Some(Ok(c)) => {
            if c.name != manifest.name || c.version != manifest.version || c.manifest_sha256 != digest {
                return Err(ReleaseError::BadSignature(format!(
                    "{}: the trusted comment says {} {} (manifest {}), the manifest is {} {} (sha256 {digest})",
                    signature_path.display(),
                    c.name,
                    c.version,
                    c.manifest_sha256,
                    manifest.name,
                    manifest.version
                )));
            }
            None
        }
    };
    let mut artifacts_checked = Vec::new();
    for a in &manifest.artifacts {
        let path = dir.join(&a.path);
        let (sha, size) = crate::digest::sha256_file(&path).map_err(|e| {
            ReleaseError::ArtifactMismatch(format!("{}: cannot read: {e}", path.display()))
        })?;
        if sha != a.sha256 || size != a.size {
            return Err(ReleaseError::ArtifactMismatch(format!(
                "{}: sha256 {sha} ({size} bytes) differs from the signed manifest's {} ({} bytes)",
                path.display(),
                a.sha256,
                a.size
            )));
        }
        artifacts_checked.push(a.path.clone());
    }
    // A Secure Boot release was measured booting with its variable store (its digest is
    // checked above): re-measure the same way.
    let options = MeasureOptions {
        uefi_data: manifest.has_uefi_data().then(|| dir.join(UEFI_DATA_FILE)),
        ..MeasureOptions::default()
    };
    let remeasured = measure::predict(&dir.join("uki.efi"), &options)?;
    if remeasured.pcrs != manifest.measurements.pcrs
        || remeasured.events != manifest.measurements.events
    {
        let differing: Vec<String> = manifest
            .measurements
            .pcrs
            .iter()
            .filter(|(k, v)| remeasured.pcrs.get(*k) != Some(v))
            .map(|(k, _)| format!("PCR{k}"))
            .collect();
        return Err(ReleaseError::MeasurementMismatch(format!(
            "{}: re-measuring uki.efi gives other values than the signed manifest ({})",
            dir.display(),
            if differing.is_empty() {
                "events differ".to_owned()
            } else {
                differing.join(", ")
            }
        )));
    }
    let mut pcrs: Vec<u32> = remeasured
        .pcrs
        .keys()
        .filter_map(|k| k.parse().ok())
        .collect();
    pcrs.sort_unstable();
    let pcrs_checked = pcrs.iter().map(|k| format!("PCR{k}")).collect();
    let rebuilt = match rebuild {
        None => None,
        Some((recipe, opts)) => Some(rebuild_and_compare(&manifest, dir, recipe, opts)?),
    };
    Ok(Verification {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        manifest_sha256: digest,
        key_id: verified.key_id,
        trusted_comment: verified.trusted_comment,
        warning,
        artifacts_checked,
        pcrs_checked,
        rebuilt,
        manifest,
    })
}

/// Rebuilds in a temporary directory and compares outputs; on a difference, names the
/// output and the inputs (or image files) that changed.
fn rebuild_and_compare(
    manifest: &Manifest,
    dir: &Path,
    recipe: &crate::recipe::Recipe,
    opts: &crate::image::BuildOptions,
) -> Result<RebuildReport, ReleaseError> {
    let work = crate::image::scratch_dir("zoa-rebuild-")?;
    let mut opts = opts.clone();
    opts.out_dir = Some(work.path().join("out"));
    let built = crate::image::build(recipe, &opts)?;
    if let Some(signature) = signed_uki_record(dir)? {
        return compare_signed_rebuild(manifest, dir, recipe, &built.out_dir, &signature);
    }
    let mut identical = Vec::new();
    for name in ["uki.efi", "build.json"] {
        let want = manifest.artifacts.iter().find(|a| a.path == name);
        let (sha, _) = crate::digest::sha256_file(&built.out_dir.join(name))
            .map_err(|e| io_err(&built.out_dir.join(name), e))?;
        match want {
            Some(a) if a.sha256 == sha => identical.push(name.to_owned()),
            _ => {
                return Err(ReleaseError::NotReproducible(format!(
                    "rebuilding {} gives a different {name}: {}",
                    recipe.path.display(),
                    explain_difference(manifest, dir, &built.out_dir)
                )))
            }
        }
    }
    Ok(RebuildReport {
        recipe: recipe.path.clone(),
        identical,
    })
}

/// The release's `secure_boot_signature` record from build.json (verified by the manifest
/// before this runs), when its UKI was signed by `zoa build --sign-with`.
fn signed_uki_record(dir: &Path) -> Result<Option<serde_json::Value>, ReleaseError> {
    let path = dir.join("build.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| io_err(&path, e))?)
            .map_err(|e| io_err(&path, e))?;
    Ok(json
        .get("secure_boot_signature")
        .filter(|v| !v.is_null())
        .cloned())
}

/// A release whose UKI carries a Secure Boot signature, against a rebuild without the key:
/// the rebuilt UKI must be the one that was signed (its recorded digest), the release's UKI
/// must differ from it only by the signature (equal Authenticode digests: they cover every
/// byte but the checksum and the certificate table), and build.json must be the rebuild's
/// plus the signature record.
fn compare_signed_rebuild(
    manifest: &Manifest,
    dir: &Path,
    recipe: &crate::recipe::Recipe,
    rebuilt: &Path,
    signature: &serde_json::Value,
) -> Result<RebuildReport, ReleaseError> {
    let differs = |what: String| {
        ReleaseError::NotReproducible(format!(
            "rebuilding {} gives {what}: {}",
            recipe.path.display(),
            explain_difference(manifest, dir, rebuilt)
        ))
    };
    let new_uki = rebuilt.join("uki.efi");
    let (new_sha, new_size) =
        crate::digest::sha256_file(&new_uki).map_err(|e| io_err(&new_uki, e))?;
    if signature["unsigned_sha256"] != new_sha.as_str() {
        return Err(differs(format!(
            "an unsigned uki.efi with sha256 {new_sha}, not the {} that was signed",
            signature["unsigned_sha256"]
        )));
    }
    let signed_digest = crate::uefi::authenticode::authenticode_sha256(&dir.join("uki.efi"))
        .map_err(|e| io_err(&dir.join("uki.efi"), e))?;
    let rebuilt_digest = crate::uefi::authenticode::authenticode_sha256(&new_uki)
        .map_err(|e| io_err(&new_uki, e))?;
    if signed_digest != rebuilt_digest {
        return Err(differs(format!(
            "a UKI whose Authenticode digest {} is not the signed uki.efi's {}",
            hex::encode(rebuilt_digest),
            hex::encode(signed_digest)
        )));
    }
    // build.json: the release's, with the signature taken back out, is the rebuild's.
    let read = |p: &Path| -> Result<serde_json::Value, ReleaseError> {
        serde_json::from_slice(&std::fs::read(p).map_err(|e| io_err(p, e))?)
            .map_err(|e| io_err(p, e))
    };
    let mut expected = read(&dir.join("build.json"))?;
    if let Some(obj) = expected.as_object_mut() {
        obj.remove("secure_boot_signature");
    }
    expected["outputs"][0]["sha256"] = serde_json::Value::from(new_sha);
    expected["outputs"][0]["size"] = serde_json::Value::from(new_size);
    if expected != read(&rebuilt.join("build.json"))? {
        return Err(differs("a different build.json".into()));
    }
    Ok(RebuildReport {
        recipe: recipe.path.clone(),
        identical: vec![
            "uki.efi (but for its Secure Boot signature)".to_owned(),
            "build.json (but for the signature record)".to_owned(),
        ],
    })
}

/// Why a rebuild differs, attributed as `zoa diff` attributes it: the root causes (how
/// zoa-init was made, inputs, then what changed in the image), else what build.json says.
fn explain_difference(manifest: &Manifest, dir: &Path, rebuilt: &Path) -> String {
    let attributed = diff::Side::detect(dir)
        .and_then(|a| Ok((a, diff::Side::detect(rebuilt)?)))
        .and_then(|(a, b)| diff::diff(&a, &b));
    if let Ok(report) = attributed {
        let mut roots: Vec<&diff::Cause> = report
            .causes
            .iter()
            .filter(|c| c.because.is_empty())
            .collect();
        // Build facts (toolchain, sources, inputs) first: they explain the rest.
        roots.sort_by_key(|c| std::cmp::Reverse(c.level));
        if !roots.is_empty() {
            let messages: Vec<&str> = roots.iter().map(|c| c.message.as_str()).collect();
            return messages.join("; ");
        }
    }
    explain_from_build_json(manifest, dir, rebuilt)
}

/// Which inputs or image files differ between the release's build.json and a rebuild's.
fn explain_from_build_json(manifest: &Manifest, dir: &Path, rebuilt: &Path) -> String {
    let read = |p: PathBuf| -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(p).ok()?).ok()
    };
    let (Some(old), Some(new)) = (
        read(dir.join("build.json")),
        read(rebuilt.join("build.json")),
    ) else {
        return "build.json is unreadable".into();
    };
    let mut reasons = Vec::new();
    if old["recipe"]["sha256"] != new["recipe"]["sha256"] {
        reasons.push("the recipe file differs".to_owned());
    }
    let inputs = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["inputs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i["name"].as_str().unwrap_or("").to_owned(),
                            i["sha256"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (oi, ni) = (inputs(&old), inputs(&new));
    for (name, sha) in &ni {
        match oi.iter().find(|(n, _)| n == name) {
            Some((_, old_sha)) if old_sha != sha => {
                reasons.push(format!("input {name} changed ({old_sha} → {sha})"))
            }
            None => reasons.push(format!("input {name} is new")),
            _ => {}
        }
    }
    for (name, _) in &oi {
        if !ni.iter().any(|(n, _)| n == name) {
            reasons.push(format!("input {name} was removed"));
        }
    }
    if old["init"]["sha256"] != new["init"]["sha256"] {
        reasons.push(format!(
            "the PID 1 binary differs (zoa-init {} → {})",
            old["init"]["sha256"], new["init"]["sha256"]
        ));
    }
    if old["zoa_version"] != new["zoa_version"] {
        reasons.push(format!(
            "zoa {} built the release, zoa {} the rebuild",
            old["zoa_version"], new["zoa_version"]
        ));
    }
    if reasons.is_empty() {
        let files = |v: &serde_json::Value| -> Vec<(String, String)> {
            v["files"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|f| {
                            (
                                f["path"].as_str().unwrap_or("").to_owned(),
                                f["sha256"].as_str().unwrap_or("").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let (of, nf) = (files(&old), files(&new));
        for (p, s) in &nf {
            if of.iter().find(|(q, _)| q == p).map(|(_, t)| t) != Some(s) {
                reasons.push(format!("image file {p} differs"));
            }
        }
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "no input differs; the build is not reproducible (manifest {})",
            manifest.name
        ));
    }
    reasons.join("; ")
}
