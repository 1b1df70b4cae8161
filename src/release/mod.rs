//! Releases: the signed manifest over a build directory, its verification (signature,
//! artifact digests, re-measurement, optional rebuild) and the append-only log of
//! reference releases; diffs between releases for auditors.

pub mod binding;
pub mod diff;
pub mod keys;
pub mod log;
pub mod manifest;
pub mod regions;

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::fsio::{self, ReadBoundedError};
use crate::image::report::{BuildReport, SignatureRecord};
use crate::uefi::file::ImageFile;

use crate::measure::{self, MeasureOptions};
use crate::uefi::uefidata::UefiVarStore;
use manifest::{
    parse_trusted_comment, Manifest, ManifestError, BUILD_FILE, MANIFEST_FILE, MEASUREMENTS_FILE,
    SIGNATURE_FILE, UEFI_DATA_FILE, UKI_FILE,
};

/// A release.json is a few hundred KiB at most (every event of four PCRs).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// A minisign signature file is a few hundred bytes.
const MAX_SIGNATURE_BYTES: u64 = 64 << 10;
/// Covered files other than the UKI (build.json, measurements, SBOM, UefiData) are read
/// into memory; none comes near this.
const MAX_SMALL_ARTIFACT_BYTES: u64 = 256 << 20;

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

/// Writes a release file atomically. Release files are public (anyone verifies them):
/// 0644 before the umask.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    fsio::write_atomic(path, bytes, fsio::PUBLIC).map_err(|e| io_err(path, e))
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
    /// The regions the release may be deployed in (absent: any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
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
///
/// `regions` (checked and sorted by [`regions::parse_list`]) become the release's allowed
/// regions; empty, it may be deployed anywhere.
pub fn sign(
    dir: &Path,
    secret_key: &Path,
    password: &keys::Password,
    uefi_data: Option<&Path>,
    regions: &[String],
) -> Result<Signed, ReleaseError> {
    let uki_path = dir.join(UKI_FILE);
    let uki = ImageFile::private_copy(&uki_path, &uki_path.display().to_string())
        .map_err(|e| io_err(&uki_path, e))?;
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
            let tmp = fsio::write_temp(&uefi_path, bytes, fsio::PUBLIC)
                .map_err(|e| io_err(&uefi_path, e))?;
            Some(tmp)
        }
        None => None,
    };
    let options = MeasureOptions {
        uefi_data: staged
            .as_ref()
            .map(|t| measure::Input::File(t.path().to_owned())),
        ..MeasureOptions::default()
    };
    let measurements = measure::predict(&uki.image, &options)?;
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
            fsio::persist(tmp, &uefi_path, fsio::Persist::REPLACE)
                .map_err(|e| io_err(&uefi_path, e))?;
        }
        let mut manifest = Manifest::from_build_dir(dir, measurements, blob.is_some())?;
        manifest.regions = regions.to_vec();
        // The manifest hashed uki.efi again: it must be the file that was measured.
        if manifest.artifact(UKI_FILE).map(|a| a.sha256.as_str()) != Some(uki.sha256.as_str()) {
            return Err(io_err(
                &uki_path,
                "changed while it was being signed: sign again",
            ));
        }
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
            regions: manifest.regions.clone(),
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

/// The outcome of `zoa verify`, as printed.
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
    /// The regions the release may be deployed in (absent: any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

/// A release whose signature, artifacts and measurements were checked, holding the very
/// bytes that were checked: the UKI as a private copy (an unnamed temporary file nothing
/// else can open), the other covered files in memory. Only [`verify`] makes one, and
/// everything downstream (the disk image, zoa-init's configuration, the snapshot, the AMI's
/// UefiData, the KMS policy) reads from it, so "verified, then re-read from the directory"
/// cannot be written.
#[derive(Debug)]
pub struct VerifiedRelease {
    dir: PathBuf,
    manifest: Manifest,
    uki: ImageFile,
    /// The covered files other than the UKI, by name, as checked.
    files: BTreeMap<String, Vec<u8>>,
    report: Verification,
}

impl VerifiedRelease {
    /// The directory it was verified from (for messages and the deploy record only).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// SHA-256 of the signed `release.json`.
    pub fn manifest_sha256(&self) -> &str {
        &self.report.manifest_sha256
    }

    /// The verified UKI.
    pub fn uki(&self) -> &ImageFile {
        &self.uki
    }

    /// A covered file other than the UKI, as verified (`None` when the manifest does not
    /// cover it).
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// The verified `uefi-data.bin` of a Secure Boot release.
    pub fn uefi_data(&self) -> Option<&[u8]> {
        self.file(UEFI_DATA_FILE)
    }

    /// What `zoa verify` prints.
    pub fn report(&self) -> &Verification {
        &self.report
    }

    pub fn into_report(self) -> Verification {
        self.report
    }
}

/// A successful rebuild comparison.
#[derive(Debug, Serialize)]
pub struct RebuildReport {
    pub recipe: PathBuf,
    pub identical: Vec<String>,
}

/// `zoa verify DIR --pubkey PUB`: signature and trusted comment, every artifact digest,
/// the UKI re-measured; with `rebuild`, a fresh build compared byte for byte. Each covered
/// file is read once: the checks and everything after them use those bytes.
pub fn verify(
    dir: &Path,
    public_key: &Path,
    rebuild: Option<(&crate::recipe::Recipe, &crate::image::BuildOptions)>,
) -> Result<VerifiedRelease, ReleaseError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let signature_path = dir.join(SIGNATURE_FILE);
    let bytes = read_bounded(&manifest_path, MAX_MANIFEST_BYTES)?;
    let signature = String::from_utf8(read_bounded(&signature_path, MAX_SIGNATURE_BYTES)?)
        .map_err(|_| {
            ReleaseError::BadSignature(format!("{}: not text", signature_path.display()))
        })?;
    let verified = keys::verify(public_key, &bytes, &signature)
        .map_err(|e| ReleaseError::BadSignature(format!("{}: {e}", signature_path.display())))?;
    let digest = crate::digest::sha256_bytes(&bytes);
    let manifest = Manifest::parse(&manifest_path.display().to_string(), &bytes)?;
    let warning = check_trusted_comment(
        &verified.trusted_comment,
        &manifest,
        &digest,
        &signature_path,
    )?;
    let (uki, files) = read_covered_files(dir, &manifest)?;
    // A Secure Boot release was measured booting with its variable store: re-measure the
    // same way, from the bytes just checked.
    let options = MeasureOptions {
        uefi_data: files
            .get(UEFI_DATA_FILE)
            .map(|bytes| measure::Input::Bytes {
                name: dir.join(UEFI_DATA_FILE).display().to_string(),
                bytes: bytes.clone(),
            }),
        ..MeasureOptions::default()
    };
    let remeasured = measure::predict(&uki, &options)?;
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
            "{}: re-measuring {UKI_FILE} gives other values than the signed manifest ({})",
            dir.display(),
            if differing.is_empty() {
                "events differ".to_owned()
            } else {
                differing.join(", ")
            }
        )));
    }
    let pcrs_checked = remeasured.pcrs.keys().map(|k| format!("PCR{k}")).collect();
    let build_json = files.get(BUILD_FILE).map(Vec::as_slice).unwrap_or_default();
    let rebuilt = match rebuild {
        None => None,
        Some((recipe, opts)) => Some(rebuild_and_compare(
            &manifest, dir, &uki, build_json, recipe, opts,
        )?),
    };
    let report = Verification {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        manifest_sha256: digest,
        key_id: verified.key_id,
        trusted_comment: verified.trusted_comment,
        warning,
        artifacts_checked: manifest.artifacts.iter().map(|a| a.path.clone()).collect(),
        pcrs_checked,
        rebuilt,
        regions: manifest.regions.clone(),
    };
    Ok(VerifiedRelease {
        dir: dir.to_owned(),
        manifest,
        uki,
        files,
        report,
    })
}

/// `None` when the trusted comment is zoa's and matches the manifest, a warning when it is
/// foreign, an error when it is zoa's and contradicts the manifest.
fn check_trusted_comment(
    comment: &str,
    manifest: &Manifest,
    digest: &str,
    signature_path: &Path,
) -> Result<Option<String>, ReleaseError> {
    match parse_trusted_comment(comment) {
        None => Ok(Some(format!(
            "the signature is valid but its trusted comment is not zoa's ({comment:?}): name, version and manifest digest are not bound by it"
        ))),
        Some(Err(why)) => Err(ReleaseError::BadSignature(format!(
            "{}: {why}",
            signature_path.display()
        ))),
        Some(Ok(c)) => {
            if c.name != manifest.name
                || c.version != manifest.version
                || c.manifest_sha256 != digest
            {
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
            Ok(None)
        }
    }
}

/// Reads every file the manifest covers once and checks it against its signed digest:
/// the UKI into a private copy, the others (small) into memory.
fn read_covered_files(
    dir: &Path,
    manifest: &Manifest,
) -> Result<(ImageFile, BTreeMap<String, Vec<u8>>), ReleaseError> {
    let mut uki = None;
    let mut files = BTreeMap::new();
    for a in &manifest.artifacts {
        let path = dir.join(&a.path);
        let unreadable = |e: &dyn std::fmt::Display| {
            ReleaseError::ArtifactMismatch(format!("{}: cannot read: {e}", path.display()))
        };
        let (sha, size) = if a.path == UKI_FILE {
            let copy = ImageFile::private_copy(&path, &path.display().to_string())
                .map_err(|e| unreadable(&e))?;
            let found = (copy.sha256, copy.image.len());
            uki = Some(copy.image);
            found
        } else {
            // One byte more than signed: enough to tell a longer file from the signed one.
            let bytes = crate::fsio::read_at_most(
                &path,
                a.size.saturating_add(1).min(MAX_SMALL_ARTIFACT_BYTES),
            )
            .map_err(|e| unreadable(&e))?;
            let found = (crate::digest::sha256_bytes(&bytes), bytes.len() as u64);
            files.insert(a.path.clone(), bytes);
            found
        };
        if sha != a.sha256 || size != a.size {
            return Err(ReleaseError::ArtifactMismatch(format!(
                "{}: sha256 {sha} ({size} bytes) differs from the signed manifest's {} ({} bytes)",
                path.display(),
                a.sha256,
                a.size
            )));
        }
    }
    let uki = uki.ok_or_else(|| {
        ReleaseError::Manifest(ManifestError::Invalid {
            file: dir.join(MANIFEST_FILE).display().to_string(),
            message: format!("covers no {UKI_FILE}"),
        })
    })?;
    Ok((uki, files))
}

/// Reads `path`, refusing more than `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReleaseError> {
    crate::fsio::read_bounded(path, limit).map_err(|e| match e {
        ReadBoundedError::Io(e) => io_err(path, e),
        ReadBoundedError::TooLarge => io_err(path, format!("larger than {limit} bytes")),
    })
}

/// Rebuilds in a temporary directory and compares outputs; on a difference, names the
/// output and the inputs (or image files) that changed.
fn rebuild_and_compare(
    manifest: &Manifest,
    dir: &Path,
    uki: &ImageFile,
    build_json: &[u8],
    recipe: &crate::recipe::Recipe,
    opts: &crate::image::BuildOptions,
) -> Result<RebuildReport, ReleaseError> {
    let work = crate::image::scratch_dir("zoa-rebuild-")?;
    let mut opts = opts.clone();
    opts.out_dir = Some(work.path().join("out"));
    let built = crate::image::build(recipe, &opts)?;
    let build = BuildReport::parse(build_json).map_err(|e| io_err(&dir.join(BUILD_FILE), e))?;
    if let Some(signature) = build.secure_boot_signature.clone() {
        let signed = SignedRelease {
            manifest,
            dir,
            uki,
            build,
        };
        return compare_signed_rebuild(&signed, recipe, &built.out_dir, &signature);
    }
    let mut identical = Vec::new();
    for name in [UKI_FILE, BUILD_FILE] {
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

/// The verified release a signed rebuild is compared with.
struct SignedRelease<'a> {
    manifest: &'a Manifest,
    dir: &'a Path,
    uki: &'a ImageFile,
    /// Its (verified) build.json.
    build: BuildReport,
}

/// A release whose UKI carries a Secure Boot signature, against a rebuild without the key:
/// the rebuilt UKI must be the one that was signed (its recorded digest), the release's UKI
/// must differ from it only by the signature (equal Authenticode digests: they cover every
/// byte but the checksum and the certificate table), and build.json must be the rebuild's
/// plus the signature record.
fn compare_signed_rebuild(
    release: &SignedRelease<'_>,
    recipe: &crate::recipe::Recipe,
    rebuilt: &Path,
    signature: &SignatureRecord,
) -> Result<RebuildReport, ReleaseError> {
    let differs = |what: String| {
        ReleaseError::NotReproducible(format!(
            "rebuilding {} gives {what}: {}",
            recipe.path.display(),
            explain_difference(release.manifest, release.dir, rebuilt)
        ))
    };
    let new_uki = rebuilt.join(UKI_FILE);
    let (new_sha, new_size) =
        crate::digest::sha256_file(&new_uki).map_err(|e| io_err(&new_uki, e))?;
    if signature.unsigned_sha256 != new_sha {
        // {:?}: the message has always quoted the recorded digest.
        return Err(differs(format!(
            "an unsigned {UKI_FILE} with sha256 {new_sha}, not the {:?} that was signed",
            signature.unsigned_sha256
        )));
    }
    let signed_digest = crate::uefi::authenticode::authenticode_sha256(release.uki)
        .map_err(|e| io_err(Path::new(release.uki.name()), e))?;
    let rebuilt_digest = ImageFile::open(&new_uki)
        .map_err(|e| e.to_string())
        .and_then(|f| crate::uefi::authenticode::authenticode_sha256(&f))
        .map_err(|e| io_err(&new_uki, e))?;
    if signed_digest != rebuilt_digest {
        return Err(differs(format!(
            "a UKI whose Authenticode digest {} is not the signed {UKI_FILE}'s {}",
            hex::encode(rebuilt_digest),
            hex::encode(signed_digest)
        )));
    }
    // build.json: the release's, with the signature taken back out and the unsigned UKI
    // as its output, written the way zoa build writes it, is the rebuild's byte for byte.
    let mut expected = release.build.clone();
    expected.secure_boot_signature = None;
    for output in expected.outputs.iter_mut().filter(|o| o.path == UKI_FILE) {
        output.sha256 = new_sha.clone();
        output.size = new_size;
    }
    let rebuilt_json = rebuilt.join(BUILD_FILE);
    let expected = expected
        .to_json()
        .map_err(|e| io_err(&release.dir.join(BUILD_FILE), e))?;
    if expected != std::fs::read(&rebuilt_json).map_err(|e| io_err(&rebuilt_json, e))? {
        return Err(differs(format!("a different {BUILD_FILE}")));
    }
    Ok(RebuildReport {
        recipe: recipe.path.clone(),
        identical: vec![
            format!("{UKI_FILE} (but for its Secure Boot signature)"),
            format!("{BUILD_FILE} (but for the signature record)"),
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
    let read = |p: PathBuf| BuildReport::parse(&std::fs::read(p).ok()?).ok();
    let (Some(old), Some(new)) = (read(dir.join(BUILD_FILE)), read(rebuilt.join(BUILD_FILE)))
    else {
        return format!("{BUILD_FILE} is unreadable");
    };
    // Values are quoted ({:?}) where the message has always shown them as JSON strings.
    let mut reasons = Vec::new();
    if old.recipe.sha256 != new.recipe.sha256 {
        reasons.push("the recipe file differs".to_owned());
    }
    for n in &new.inputs {
        match old.inputs.iter().find(|o| o.name == n.name) {
            Some(o) if o.sha256 != n.sha256 => reasons.push(format!(
                "input {} changed ({} → {})",
                n.name, o.sha256, n.sha256
            )),
            None => reasons.push(format!("input {} is new", n.name)),
            _ => {}
        }
    }
    for o in &old.inputs {
        if !new.inputs.iter().any(|n| n.name == o.name) {
            reasons.push(format!("input {} was removed", o.name));
        }
    }
    if old.init.sha256 != new.init.sha256 {
        reasons.push(format!(
            "the PID 1 binary differs (zoa-init {:?} → {:?})",
            old.init.sha256, new.init.sha256
        ));
    }
    if old.zoa_version != new.zoa_version {
        reasons.push(format!(
            "zoa {:?} built the release, zoa {:?} the rebuild",
            old.zoa_version, new.zoa_version
        ));
    }
    if reasons.is_empty() {
        for n in &new.files {
            let before = old.files.iter().find(|o| o.path == n.path);
            if before.map(|o| &o.sha256) != Some(&n.sha256) {
                reasons.push(format!("image file {} differs", n.path));
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
