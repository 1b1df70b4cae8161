//! Building the boot image: recipe → inputs → sysroot → file tree → policy → initramfs →
//! UKI, written atomically with its `build.json`.

pub mod check;
pub mod compose;
pub mod elf;
pub mod initramfs;
pub mod policy;
pub mod report;
pub mod sbom;
pub mod sysroot;
pub mod tree;

use std::path::{Path, PathBuf};

use crate::digest;
use crate::fetch::{Fetched, Fetcher, Pin};
use crate::fsio;
use crate::progress::Progress;
use crate::recipe::lock::{Lock, LockError, LockedInput, LOCK_VERSION};
use crate::recipe::{FileRef, Recipe};
use crate::uefi::uki::{self, NewSection, SectionData};
use compose::{ComposeError, Composed};
use policy::PolicyReport;
pub use report::{
    BuildReport, InitRecord, InitramfsRecord, InputRecord, KernelRecord, OutputRecord,
    RecipeRecord, SignatureRecord, BUILD_FILE,
};

/// The boot image's file name inside a build or release directory.
pub const UKI_FILE: &str = "uki.efi";

/// Errors of `zoa build` (and of the steps `zoa check` and `zoa lock` share with it).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    #[error(transparent)]
    Deb(#[from] crate::deb::DebError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Compose(#[from] ComposeError),
    #[error(transparent)]
    Uki(#[from] uki::UkiError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error("policy: {} violation(s): {}", .0.violations.len(), .0.violation_summary())]
    Policy(Box<PolicyReport>),
    #[error("{path}: {message}")]
    Output { path: PathBuf, message: String },
    #[error("signing the UKI for Secure Boot: {0}")]
    Sign(#[from] crate::secureboot::sign::SignError),
}

/// Options of a build that are not part of the recipe.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output directory (default `dist/<name>-<version>`).
    pub out_dir: Option<PathBuf>,
    /// Refuse to build when the lock file is missing or differs from the recipe.
    pub locked: bool,
    pub fetcher: FetchSettings,
    /// The PID 1 binary when the recipe does not pin one.
    pub init_binary: Option<PathBuf>,
    /// Sign the UKI for Secure Boot (Authenticode) before it is written.
    pub sign_with: Option<SignWith>,
    pub progress: Progress,
}

/// The db key that signs a UKI for Secure Boot, its certificate, and any intermediate
/// certificates between it and the one enrolled in db.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignWith {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub chain: Vec<PathBuf>,
}

/// Where inputs come from.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub cache_dir: PathBuf,
    pub inputs_dirs: Vec<PathBuf>,
    pub offline: bool,
}

impl FetchSettings {
    fn fetcher(&self, recipe: &Recipe, progress: &Progress) -> Fetcher {
        Fetcher::new(
            self.cache_dir.clone(),
            self.inputs_dirs.clone(),
            recipe.base_dir.clone(),
        )
        .offline(self.offline)
        .show_progress(progress.enabled())
    }
}

/// Inputs fetched and verified for a recipe.
#[derive(Debug)]
pub struct FetchedInputs {
    pub files: std::collections::BTreeMap<String, Fetched>,
}

impl FetchedInputs {
    /// The local path of an input.
    pub fn path(&self, name: &str) -> &Path {
        // Recipe validation guarantees every referenced input exists and fetch_all
        // fetched every input, so the lookup cannot miss.
        self.files
            .get(name)
            .map(|f| f.path.as_path())
            .unwrap_or(Path::new("/nonexistent"))
    }
}

/// Fetches every input of the recipe (each verified by sha256).
pub fn fetch_all(
    recipe: &Recipe,
    settings: &FetchSettings,
    progress: &Progress,
) -> Result<FetchedInputs, BuildError> {
    let fetcher = settings.fetcher(recipe, progress);
    let mut files = std::collections::BTreeMap::new();
    let stage = progress.stage(format!("fetching {} inputs", recipe.spec.inputs.len()));
    for (name, spec) in &recipe.spec.inputs {
        stage.set_message(format!("fetching {name}"));
        let pin = Pin {
            name: name.clone(),
            sha256: spec.sha256.clone(),
            sources: spec.sources.clone(),
        };
        files.insert(name.clone(), fetcher.fetch(&pin)?);
    }
    stage.finish();
    Ok(FetchedInputs { files })
}

/// `zoa lock`: resolves every input and returns the lock (the caller writes it).
pub fn lock(
    recipe: &Recipe,
    settings: &FetchSettings,
    progress: &Progress,
) -> Result<Lock, BuildError> {
    let fetched = fetch_all(recipe, settings, progress)?;
    let mut inputs = Vec::new();
    for (name, spec) in &recipe.spec.inputs {
        let f = &fetched.files[name];
        let info = crate::deb::read_info(&f.path).ok();
        inputs.push(LockedInput {
            name: name.clone(),
            sha256: spec.sha256.clone(),
            size: f.size,
            sources: spec.sources.clone(),
            package: info.as_ref().map(|i| i.package.clone()),
            package_version: info.map(|i| i.version),
        });
    }
    Ok(Lock {
        version: LOCK_VERSION,
        inputs,
    })
}

/// Materialises a kernel or stub reference into a file under `work`.
pub fn materialise(
    r: &FileRef,
    inputs: &FetchedInputs,
    work: &Path,
    name: &str,
) -> Result<PathBuf, BuildError> {
    let input = inputs.path(&r.input);
    match &r.path {
        None => Ok(input.to_owned()),
        Some(member) => {
            let dest = work.join(name);
            let mut f = std::fs::File::create(&dest).map_err(|e| BuildError::Output {
                path: dest.clone(),
                message: e.to_string(),
            })?;
            crate::deb::copy_data_file(input, member, &mut f)?;
            Ok(dest)
        }
    }
}

/// A finished build.
#[derive(Debug)]
pub struct BuiltImage {
    pub out_dir: PathBuf,
    pub uki: PathBuf,
    pub build_json: PathBuf,
    /// The SPDX 2.3 SBOM (`sbom.spdx.json`).
    pub sbom: PathBuf,
    pub report: BuildReport,
}

/// Default output directory for a recipe.
pub fn default_out_dir(recipe: &Recipe) -> PathBuf {
    PathBuf::from("dist").join(format!(
        "{}-{}",
        recipe.spec.image.name, recipe.spec.image.version
    ))
}

/// `zoa build`: builds the UKI and `build.json`. Nothing is left in the output directory
/// on failure.
pub fn build(recipe: &Recipe, opts: &BuildOptions) -> Result<BuiltImage, BuildError> {
    let progress = &opts.progress;
    if opts.locked {
        let lock_path = recipe.lock_path();
        Lock::read(&lock_path)?.check_matches(recipe, &lock_path)?;
    }
    let inputs = fetch_all(recipe, &opts.fetcher, progress)?;
    let work = scratch_dir("zoa-build-")?;
    let composed = compose::compose(
        recipe,
        &inputs,
        work.path(),
        opts.init_binary.as_deref(),
        progress,
    )?;
    if !composed.policy.passed() {
        return Err(BuildError::Policy(Box::new(composed.policy)));
    }
    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| default_out_dir(recipe));
    let sign_with = opts.sign_with.as_ref();
    write_outputs(
        recipe,
        &inputs,
        composed,
        &out_dir,
        work.path(),
        sign_with,
        progress,
    )
}

/// A scratch directory under the system temp dir, removed when dropped.
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir, BuildError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| BuildError::Output {
            path: std::env::temp_dir(),
            message: format!("cannot create a work directory: {e}"),
        })
}

/// Creates `dir` if needed; returns whether it was created (so failure can remove it).
fn prepare_out_dir(dir: &Path) -> Result<bool, BuildError> {
    let err = |message: String| BuildError::Output {
        path: dir.to_owned(),
        message,
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => Err(err("exists and is not a directory".into())),
        Err(_) => {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create: {e}")))?;
            Ok(true)
        }
    }
}

fn write_outputs(
    recipe: &Recipe,
    inputs: &FetchedInputs,
    composed: Composed,
    out_dir: &Path,
    work: &Path,
    sign_with: Option<&SignWith>,
    progress: &Progress,
) -> Result<BuiltImage, BuildError> {
    let created = prepare_out_dir(out_dir)?;
    let result = write_outputs_into(recipe, inputs, composed, out_dir, work, sign_with, progress);
    if result.is_err() && created {
        // Only remove what this build created, and only if nothing else appeared in it.
        let _ = std::fs::remove_dir(out_dir);
    }
    result
}

fn write_outputs_into(
    recipe: &Recipe,
    inputs: &FetchedInputs,
    composed: Composed,
    out_dir: &Path,
    work: &Path,
    sign_with: Option<&SignWith>,
    progress: &Progress,
) -> Result<BuiltImage, BuildError> {
    let out_err = |path: &Path, e: std::io::Error| BuildError::Output {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let spec = &recipe.spec;
    let epoch = recipe.source_date_epoch();
    let mtime = epoch as u32; // validated to fit in recipe validation or by the default
    let archive_len = initramfs::archive_len(&composed.tree);

    // The uncompressed archive streams straight into its section; a compressed one is
    // made first (its size must be known before the section table is written).
    let bar = progress.bytes(archive_len, "writing initramfs");
    let mut file_list = Vec::new();
    let (initrd_data, initrd_size) = match spec.image.zstd_level() {
        None => {
            let tree = &composed.tree;
            let list = &mut file_list;
            let bar = bar.clone();
            let data = SectionData::Stream {
                len: archive_len,
                write: Box::new(move |w: &mut dyn std::io::Write| {
                    let mut w = bar.wrap_write(w);
                    *list = initramfs::write_archive(tree, mtime, &mut w)
                        .map_err(std::io::Error::other)?;
                    Ok(())
                }),
            };
            (data, archive_len)
        }
        Some(level) => {
            let raw = work.join("initrd.cpio");
            let packed = work.join("initrd.cpio.zst");
            {
                let f = std::fs::File::create(&raw).map_err(|e| out_err(&raw, e))?;
                let mut w = bar.wrap_write(std::io::BufWriter::new(f));
                file_list = initramfs::write_archive(&composed.tree, mtime, &mut w)?;
                std::io::Write::flush(&mut w).map_err(|e| out_err(&raw, e))?;
            }
            let mut r = std::fs::File::open(&raw).map_err(|e| out_err(&raw, e))?;
            let mut w = std::fs::File::create(&packed).map_err(|e| out_err(&packed, e))?;
            initramfs::compress(Some(level), &mut r, &mut w).map_err(|e| out_err(&packed, e))?;
            let _ = std::fs::remove_file(&raw);
            let size = std::fs::metadata(&packed)
                .map_err(|e| out_err(&packed, e))?
                .len();
            (SectionData::File(packed), size)
        }
    };

    let mut sections = vec![
        NewSection {
            name: ".osrel",
            data: SectionData::Bytes(uki::render_os_release(&spec.image.os_release).into_bytes()),
        },
        NewSection {
            name: ".cmdline",
            data: SectionData::Bytes(spec.image.cmdline.clone().into_bytes()),
        },
    ];
    if let Some(release) = &composed.kernel_release {
        sections.push(NewSection {
            name: ".uname",
            data: SectionData::Bytes(release.clone().into_bytes()),
        });
    }
    sections.push(NewSection {
        name: ".initrd",
        data: initrd_data,
    });
    sections.push(NewSection {
        name: ".linux",
        data: SectionData::Image(&composed.kernel),
    });

    let place_err = |path: &Path, e: fsio::WriteError| BuildError::Output {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let uki_path = out_dir.join(UKI_FILE);
    let json_path = out_dir.join(BUILD_FILE);
    let sbom_path = out_dir.join(sbom::SBOM_FILE);
    // Every output is public (the recipe and its inputs make it again), 0644.
    let mut uki_tmp =
        fsio::temp_for(&uki_path, fsio::PUBLIC).map_err(|e| place_err(&uki_path, e))?;
    let placed = uki::assemble(&composed.stub, sections, mtime, uki_tmp.as_file_mut())?;
    bar.finish();

    let stage = progress.stage("hashing outputs".into());
    let (mut uki_sha, mut uki_size) =
        digest::sha256_file(uki_tmp.path()).map_err(|e| out_err(uki_tmp.path(), e))?;
    let mut secure_boot_signature = None;
    if let Some(with) = sign_with {
        let (signed_tmp, record) = sign_uki(uki_tmp.path(), out_dir, with)?;
        secure_boot_signature = Some(SignatureRecord {
            unsigned_sha256: std::mem::replace(&mut uki_sha, record.sha256),
            unsigned_size: std::mem::replace(&mut uki_size, record.size),
            authenticode_sha256: record.authenticode_sha256,
            signer: record.signer,
            certificate_sha256: record.certificate_sha256,
        });
        uki_tmp = signed_tmp;
    }
    let (kernel_sha, kernel_size) = digest::sha256_reader(composed.kernel.reader())
        .map_err(|e| out_err(Path::new(composed.kernel.name()), e))?;
    stage.finish();

    let report = BuildReport {
        format: report::BuildFormat::default(),
        zoa_version: env!("CARGO_PKG_VERSION").to_owned(),
        name: spec.image.name.clone(),
        version: spec.image.version.clone(),
        recipe: RecipeRecord {
            file: recipe
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: recipe.sha256.clone(),
        },
        source_date_epoch: epoch,
        cmdline: spec.image.cmdline.clone(),
        serving_port: spec.image.serving_port,
        stub: composed.stub_info.clone(),
        kernel: KernelRecord {
            release: composed.kernel_release.clone(),
            sha256: kernel_sha,
            size: kernel_size,
        },
        inputs: input_records(recipe, inputs),
        init: composed.init_record.clone(),
        outputs: vec![OutputRecord {
            path: UKI_FILE.into(),
            sha256: uki_sha,
            size: uki_size,
        }],
        secure_boot_signature,
        sections: placed,
        initramfs: InitramfsRecord {
            compression: spec.image.compression,
            level: spec.image.zstd_level(),
            uncompressed_size: archive_len,
            size: initrd_size,
            entries: composed.tree.len(),
        },
        policy: composed.policy,
        files: file_list,
    };
    let json = report.to_json().map_err(|e| BuildError::Output {
        path: json_path.clone(),
        message: e.to_string(),
    })?;
    let json_tmp =
        fsio::write_temp(&json_path, &json, fsio::PUBLIC).map_err(|e| place_err(&json_path, e))?;
    let input_sources = |name: &str| {
        spec.inputs
            .get(name)
            .map(|i| i.sources.clone())
            .unwrap_or_default()
    };
    let sbom = sbom::render(&report, &input_sources).map_err(|e| BuildError::Output {
        path: sbom_path.clone(),
        message: e.to_string(),
    })?;
    let sbom_tmp =
        fsio::write_temp(&sbom_path, &sbom, fsio::PUBLIC).map_err(|e| place_err(&sbom_path, e))?;

    for (tmp, path) in [
        (uki_tmp, &uki_path),
        (json_tmp, &json_path),
        (sbom_tmp, &sbom_path),
    ] {
        fsio::persist(tmp, path, fsio::Persist::REPLACE).map_err(|e| place_err(path, e))?;
    }
    Ok(BuiltImage {
        out_dir: out_dir.to_owned(),
        uki: uki_path,
        build_json: json_path,
        sbom: sbom_path,
        report,
    })
}

/// What signing produced, for build.json.
struct SignedUki {
    sha256: String,
    size: u64,
    authenticode_sha256: String,
    signer: String,
    certificate_sha256: String,
}

/// Signs the assembled UKI at `unsigned` into a new temporary file in `out_dir`.
fn sign_uki(
    unsigned: &Path,
    out_dir: &Path,
    with: &SignWith,
) -> Result<(tempfile::NamedTempFile, SignedUki), BuildError> {
    // sign_pe_files replaces this file with the signed image (with the unsigned one's mode).
    let uki_path = out_dir.join(UKI_FILE);
    let signed = fsio::temp_for(&uki_path, fsio::PUBLIC).map_err(|e| BuildError::Output {
        path: uki_path.clone(),
        message: e.to_string(),
    })?;
    let s = crate::secureboot::sign::sign_pe_files(
        unsigned,
        signed.path(),
        &with.key,
        &with.cert,
        &with.chain,
    )?;
    let cert =
        crate::secureboot::keys::load_certificate(&with.cert).map_err(|e| BuildError::Output {
            path: with.cert.clone(),
            message: e.to_string(),
        })?;
    let der = cert.to_der().map_err(|e| BuildError::Output {
        path: with.cert.clone(),
        message: e.to_string(),
    })?;
    Ok((
        signed,
        SignedUki {
            sha256: s.sha256,
            size: s.size,
            authenticode_sha256: s.authenticode_sha256,
            signer: s.signer,
            certificate_sha256: digest::sha256_bytes(&der),
        },
    ))
}

fn input_records(recipe: &Recipe, inputs: &FetchedInputs) -> Vec<InputRecord> {
    recipe
        .spec
        .inputs
        .iter()
        .map(|(name, spec)| {
            let f = &inputs.files[name];
            let info = crate::deb::read_info(&f.path).ok();
            InputRecord {
                name: name.clone(),
                sha256: spec.sha256.clone(),
                size: f.size,
                package: info.as_ref().map(|i| i.package.clone()),
                package_version: info.map(|i| i.version),
            }
        })
        .collect()
}
