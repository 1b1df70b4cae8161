//! `zoa build-init`: zoa-init, the image's PID 1, built as a function of the commit alone.
//!
//! zoa-init is the one file in an image that zoa compiles instead of taking it from a
//! pinned package, so its bytes must not depend on the machine. The rules:
//!
//! - **The toolchain is pinned**: rustc is the release `rust-toolchain.toml` names (rustup
//!   installs it; any other rustc is refused), and links with its own `rust-lld`, never the
//!   host's `cc`/`ld`.
//! - **The C compiler is pinned**: aws-lc (under rustls and the AWS SDK) is compiled by Zig's
//!   clang for `x86_64-linux-musl` with Zig's own musl headers, a binary checked against the
//!   digest in `init/c-toolchain.toml`. Pure-Rust TLS was the alternative; no pure-Rust
//!   rustls provider is production-ready, and ring carries C as well.
//! - **No host path reaches the binary**: the checkout, `CARGO_HOME`, its registry sources,
//!   the target directory and the toolchain's sysroot are remapped to fixed names
//!   (`--remap-path-prefix` for Rust, `-ffile-prefix-map` for C).
//! - **The environment is cleared**: cargo runs with only what is set here. `RUSTFLAGS`,
//!   `CC`, `CFLAGS`, `CARGO_*`, `SOURCE_DATE_EPOCH`, locale, TZ and `PATH` order from the
//!   caller are ignored (and named on stderr); the release profile's codegen settings are
//!   set explicitly, so cargo configuration files cannot change them, and a configuration
//!   file that could change the build another way (`[env]`, `[target]`, `[build]`, …) is
//!   refused.
//!
//! The result is `zoa-init` plus `zoa-init.provenance.json` ([`provenance`]), which
//! `zoa build` copies into `build.json`.

pub mod provenance;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::fsio;

use provenance::{
    BinaryRecord, CToolchainRecord, CodegenRecord, CrateRecord, Provenance, RustcRecord,
    SourceFile, SourcesRecord, PROVENANCE_FORMAT,
};

/// The target zoa-init is built for: static, so the image needs no libc.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The same target as Zig names it.
pub const ZIG_TARGET: &str = "x86_64-linux-musl";
/// The package built.
pub const PACKAGE: &str = "zoa-init";
/// The target directory, relative to the source checkout.
pub const TARGET_DIR: &str = "target/zoa-init";
/// What the remapped paths become inside the binary.
const REMAP_SOURCE: &str = "/zoa";
const REMAP_TARGET_DIR: &str = "/zoa/target/zoa-init";
const REMAP_CARGO_HOME: &str = "/cargo";
const REMAP_REGISTRY: &str = "/cargo/registry/src";
const REMAP_GIT: &str = "/cargo/git/checkouts";
const REMAP_SYSROOT: &str = "/rust";

/// The release profile zoa-init is built with, set through `CARGO_PROFILE_RELEASE_*` so
/// that no configuration file can change it (same values as the workspace's
/// `[profile.release]`).
const PROFILE_SETTINGS: &[(&str, &str)] = &[
    ("opt-level", "3"),
    ("debug", "false"),
    ("debug-assertions", "false"),
    ("overflow-checks", "false"),
    ("lto", "thin"),
    ("codegen-units", "4"),
    ("panic", "unwind"),
    ("incremental", "false"),
    ("strip", "symbols"),
    ("rpath", "false"),
];

/// Cargo configuration tables that could change what is compiled or how; a configuration
/// file holding one is refused (network, registry and alias settings are fine).
const REFUSED_CONFIG_TABLES: &[&str] = &[
    "build", "target", "profile", "env", "unstable", "patch", "paths", "host",
];

/// Variables of the caller that would have changed the build if zoa passed them on.
const NOTEWORTHY_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOCFLAGS",
    "CC",
    "CXX",
    "AR",
    "CFLAGS",
    "CXXFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "TARGET_CC",
    "TARGET_CFLAGS",
    "SOURCE_DATE_EPOCH",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_INCREMENTAL",
];

/// Errors of `zoa build-init`.
#[derive(Debug, thiserror::Error)]
pub enum InitBuildError {
    #[error("{file}: {message}")]
    Source { file: String, message: String },
    #[error("toolchain: {0}")]
    Toolchain(String),
    #[error("C toolchain: {0}")]
    CToolchain(String),
    /// No zig given, in the environment or where `.ci/deps` puts the pinned one.
    #[error("C toolchain: no zig {version}: {reason}")]
    NoZig { version: String, reason: String },
    #[error("{file}: {message}")]
    CargoConfig { file: String, message: String },
    #[error("{what}: {message}")]
    Command { what: String, message: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> InitBuildError + '_ {
    move |source| InitBuildError::Io {
        file: path.display().to_string(),
        source,
    }
}

/// Options of `zoa build-init`.
#[derive(Debug, Clone)]
pub struct InitBuildOptions {
    /// The zoa source checkout (workspace root).
    pub source: PathBuf,
    /// Where `zoa-init` and `zoa-init.provenance.json` are written.
    pub out_dir: PathBuf,
    /// The zig executable [default: `$ZOA_ZIG`, else the one `.ci/deps` installs].
    pub zig: Option<PathBuf>,
    /// Show cargo's output.
    pub verbose: bool,
}

/// A finished build.
#[derive(Debug)]
pub struct BuiltInit {
    pub binary: PathBuf,
    pub provenance_path: PathBuf,
    pub provenance: Provenance,
}

/// The pins a checkout declares.
#[derive(Debug, Clone)]
struct Pins {
    rust_channel: String,
    zig_version: String,
    zig_sha256: String,
}

/// The resolved toolchain.
#[derive(Debug, Clone)]
struct Toolchain {
    cargo: PathBuf,
    rustc: PathBuf,
    bin_dir: PathBuf,
    sysroot: PathBuf,
    rustc_record: RustcRecord,
    cargo_version: String,
}

/// Builds zoa-init from `opts.source` as described in the module documentation.
pub fn build_init(opts: &InitBuildOptions) -> Result<BuiltInit, InitBuildError> {
    let source = std::fs::canonicalize(&opts.source).map_err(io_err(&opts.source))?;
    let pins = read_pins(&source)?;
    let toolchain = resolve_toolchain(&source, &pins)?;
    let zig = resolve_zig(opts.zig.as_deref(), &pins)?;
    let cargo_home = cargo_home()?;
    check_cargo_configs(&source, &cargo_home)?;

    let target_dir = source.join(TARGET_DIR);
    std::fs::create_dir_all(&target_dir).map_err(io_err(&target_dir))?;
    // `cargo metadata` reads every crate's manifest, so it unpacks every crate's sources
    // into CARGO_HOME/registry/src: the directories to remap exist before the build.
    let crates = crate_closure(&toolchain, &source, &cargo_home, &target_dir)?;
    let remaps = host_remaps(&source, &target_dir, &cargo_home, &toolchain.sysroot)?;
    let flags = Flags::new(&remaps);
    let wrappers = write_zig_wrappers(&target_dir, &zig, &flags.cflags_host)?;
    let mut cmd = cleared_cargo(&toolchain, &source, &cargo_home, &target_dir);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "-p",
        PACKAGE,
        "--target",
        TARGET,
    ])
    .arg("--target-dir")
    .arg(&target_dir)
    .env("CARGO_ENCODED_RUSTFLAGS", flags.rustflags_host.join("\x1f"))
    .env(cc_var("CC"), &wrappers.cc)
    .env(cc_var("AR"), &wrappers.ar)
    .env("ZIG_GLOBAL_CACHE_DIR", target_dir.join("zig-cache"))
    .env("ZIG_LOCAL_CACHE_DIR", target_dir.join("zig-cache"));
    for (key, value) in PROFILE_SETTINGS {
        let var = format!(
            "CARGO_PROFILE_RELEASE_{}",
            key.to_uppercase().replace('-', "_")
        );
        cmd.env(var, value);
    }
    if !opts.verbose {
        cmd.arg("--quiet");
    }
    run_status(&mut cmd, "cargo build -p zoa-init")?;
    let after = host_remaps(&source, &target_dir, &cargo_home, &toolchain.sysroot)?;
    if after.len() != remaps.len() {
        return Err(InitBuildError::Command {
            what: "cargo build -p zoa-init".into(),
            message: format!(
                "a new source directory appeared under {} during the build, so its paths were not remapped; run zoa build-init again",
                cargo_home.display()
            ),
        });
    }

    let built = target_dir.join(TARGET).join("release").join(PACKAGE);
    let (sha256, size) = crate::digest::sha256_file(&built).map_err(io_err(&built))?;
    let provenance = Provenance {
        format: PROVENANCE_FORMAT.to_owned(),
        binary: BinaryRecord { sha256, size },
        package: format!("{PACKAGE} {}", package_version(&source)?),
        target: TARGET.to_owned(),
        rustc: toolchain.rustc_record.clone(),
        cargo: toolchain.cargo_version.clone(),
        c_toolchain: CToolchainRecord {
            name: "zig".to_owned(),
            version: pins.zig_version.clone(),
            sha256: pins.zig_sha256.clone(),
            target: ZIG_TARGET.to_owned(),
        },
        linker: "rust-lld (the Rust toolchain's own)".to_owned(),
        codegen: CodegenRecord {
            profile: "release".to_owned(),
            profile_settings: PROFILE_SETTINGS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            rustflags: flags.rustflags_recorded,
            cflags: flags.cflags_recorded,
        },
        cargo_lock_sha256: provenance::lock_entries_sha256(&crates),
        sources: source_tree(&source)?,
        crates,
    };
    let (binary, provenance_path) = write_outputs(&built, &provenance, &opts.out_dir)?;
    Ok(BuiltInit {
        binary,
        provenance_path,
        provenance,
    })
}

fn cc_var(name: &str) -> String {
    format!("{name}_{}", TARGET.replace('-', "_"))
}

/// A cargo command with nothing of the caller's environment but what is set here.
fn cleared_cargo(
    toolchain: &Toolchain,
    source: &Path,
    cargo_home: &Path,
    target_dir: &Path,
) -> Command {
    let mut path = OsString::from(&toolchain.bin_dir);
    // Build scripts and proc macros run on the host and are linked by its cc; they do not
    // end up in zoa-init.
    path.push(":/usr/local/bin:/usr/bin:/bin");
    let mut cmd = Command::new(&toolchain.cargo);
    cmd.env_clear()
        .current_dir(source)
        .env("PATH", path)
        .env("HOME", target_dir.join("home"))
        .env("CARGO_HOME", cargo_home)
        .env("RUSTC", &toolchain.rustc)
        .env("CARGO_INCREMENTAL", "0")
        .env("LC_ALL", "C")
        .env("TZ", "UTC");
    // A proxy or CA bundle the caller needs to reach crates.io does not change the bytes.
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "CARGO_HTTP_CAINFO",
        "CARGO_NET_OFFLINE",
        "TERM",
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd
}

fn run_status(cmd: &mut Command, what: &str) -> Result<(), InitBuildError> {
    let status = cmd.status().map_err(|e| InitBuildError::Command {
        what: what.to_owned(),
        message: e.to_string(),
    })?;
    if !status.success() {
        return Err(InitBuildError::Command {
            what: what.to_owned(),
            message: format!("failed ({status}); its output is above"),
        });
    }
    Ok(())
}

fn run_output(cmd: &mut Command, what: &str) -> Result<String, InitBuildError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| InitBuildError::Command {
            what: what.to_owned(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(InitBuildError::Command {
            what: what.to_owned(),
            message: format!(
                "failed ({}): {}",
                out.status,
                err.lines().last().unwrap_or("").trim()
            ),
        });
    }
    String::from_utf8(out.stdout).map_err(|_| InitBuildError::Command {
        what: what.to_owned(),
        message: "printed something that is not UTF-8".into(),
    })
}

// ---------------------------------------------------------------------------------------
// Pins and toolchains.

fn read_toml(path: &Path) -> Result<toml::Table, InitBuildError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    text.parse::<toml::Table>()
        .map_err(|e| InitBuildError::Source {
            file: path.display().to_string(),
            message: e.message().to_owned(),
        })
}

fn toml_str(table: &toml::Table, file: &Path, keys: &[&str]) -> Result<String, InitBuildError> {
    let mut v: Option<&toml::Value> = None;
    let mut t = Some(table);
    for k in keys {
        v = t.and_then(|t| t.get(*k));
        t = v.and_then(|v| v.as_table());
    }
    v.and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| InitBuildError::Source {
            file: file.display().to_string(),
            message: format!("{} is missing or not a string", keys.join(".")),
        })
}

fn read_pins(source: &Path) -> Result<Pins, InitBuildError> {
    let init_manifest = source.join("init/Cargo.toml");
    if !init_manifest.is_file() {
        return Err(InitBuildError::Source {
            file: source.display().to_string(),
            message: "not a zoa source checkout (init/Cargo.toml is missing)".into(),
        });
    }
    let rt = source.join("rust-toolchain.toml");
    let rust_channel = toml_str(&read_toml(&rt)?, &rt, &["toolchain", "channel"])?;
    if !rust_channel
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        || rust_channel.split('.').count() != 3
    {
        return Err(InitBuildError::Source {
            file: rt.display().to_string(),
            message: format!(
                "toolchain.channel {rust_channel:?} is not an exact release (e.g. \"1.95.0\"): zoa-init must not depend on the day it is built"
            ),
        });
    }
    let ct = source.join("init/c-toolchain.toml");
    let c = read_toml(&ct)?;
    let zig_version = toml_str(&c, &ct, &["zig", "version"])?;
    let zig_sha256 = toml_str(&c, &ct, &["zig", "binary_sha256"])?;
    if !crate::digest::is_sha256_hex(&zig_sha256) {
        return Err(InitBuildError::Source {
            file: ct.display().to_string(),
            message: "zig.binary_sha256 is not 64 lowercase hex digits".into(),
        });
    }
    Ok(Pins {
        rust_channel,
        zig_version,
        zig_sha256,
    })
}

/// The pinned toolchain's real cargo and rustc (never rustup's proxies, which would read
/// `RUSTUP_TOOLCHAIN` and overrides from the environment).
fn resolve_toolchain(source: &Path, pins: &Pins) -> Result<Toolchain, InitBuildError> {
    let rustc = match Command::new("rustup")
        .args(["which", "--toolchain", &pins.rust_channel, "rustc"])
        .current_dir(source)
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_owned())
        }
        // No rustup, or not this toolchain: the rustc on PATH, if it is the pinned one.
        _ => PathBuf::from("rustc"),
    };
    let vv = run_output(Command::new(&rustc).arg("-vV"), "rustc -vV").map_err(|e| {
        InitBuildError::Toolchain(format!(
            "{e}; install the pinned toolchain: rustup toolchain install {} --target {TARGET}",
            pins.rust_channel
        ))
    })?;
    let record = parse_rustc_vv(&vv)?;
    if record.release != pins.rust_channel {
        return Err(InitBuildError::Toolchain(format!(
            "rustc {} found, but rust-toolchain.toml pins {}: rustup toolchain install {} --target {TARGET}",
            record.release, pins.rust_channel, pins.rust_channel
        )));
    }
    let sysroot = PathBuf::from(
        run_output(
            Command::new(&rustc).args(["--print", "sysroot"]),
            "rustc --print sysroot",
        )?
        .trim(),
    );
    let bin_dir = sysroot.join("bin");
    let cargo = bin_dir.join("cargo");
    if !cargo.is_file() {
        return Err(InitBuildError::Toolchain(format!(
            "{} is missing: the pinned toolchain has no cargo",
            cargo.display()
        )));
    }
    if !sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return Err(InitBuildError::Toolchain(format!(
            "the {TARGET} target is not installed for rustc {}: rustup target add --toolchain {} {TARGET}",
            record.release, pins.rust_channel
        )));
    }
    let lld = sysroot
        .join("lib/rustlib")
        .join(&record.host)
        .join("bin/rust-lld");
    if !lld.is_file() {
        return Err(InitBuildError::Toolchain(format!(
            "{} is missing: zoa-init links with the toolchain's own rust-lld",
            lld.display()
        )));
    }
    let cargo_version = run_output(Command::new(&cargo).arg("-V"), "cargo -V")?
        .trim()
        .to_owned();
    Ok(Toolchain {
        rustc: sysroot.join("bin/rustc"),
        cargo,
        bin_dir,
        sysroot,
        rustc_record: record,
        cargo_version,
    })
}

/// Parses `rustc -vV`.
fn parse_rustc_vv(text: &str) -> Result<RustcRecord, InitBuildError> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| InitBuildError::Toolchain(format!("rustc -vV printed no {name:?} line")))
    };
    Ok(RustcRecord {
        release: field("release")?,
        commit_hash: field("commit-hash")?,
        commit_date: field("commit-date")?,
        host: field("host")?,
        llvm_version: field("LLVM version")?,
    })
}

/// Where `.ci/deps` unpacks the pinned zig.
pub fn default_zig_path(version: &str) -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join(format!("zoa/toolchains/zig-{version}/ziglang/zig")))
}

fn resolve_zig(explicit: Option<&Path>, pins: &Pins) -> Result<PathBuf, InitBuildError> {
    let zig = explicit
        .map(Path::to_owned)
        .or_else(|| std::env::var_os("ZOA_ZIG").map(PathBuf::from))
        .or_else(|| default_zig_path(&pins.zig_version))
        .ok_or_else(|| InitBuildError::NoZig {
            version: pins.zig_version.clone(),
            reason: "ZOA_ZIG is not set and there is no cache directory".into(),
        })?;
    let zig = std::fs::canonicalize(&zig).map_err(|e| InitBuildError::NoZig {
        version: pins.zig_version.clone(),
        reason: format!("{}: {e}", zig.display()),
    })?;
    let (sha, _) = crate::digest::sha256_file(&zig).map_err(io_err(&zig))?;
    if sha != pins.zig_sha256 {
        return Err(InitBuildError::CToolchain(format!(
            "{} has sha256 {sha}, not the {} that init/c-toolchain.toml pins for zig {}",
            zig.display(),
            pins.zig_sha256,
            pins.zig_version
        )));
    }
    let version = run_output(Command::new(&zig).arg("version"), "zig version")?;
    if version.trim() != pins.zig_version {
        return Err(InitBuildError::CToolchain(format!(
            "{} is zig {}, not {}",
            zig.display(),
            version.trim(),
            pins.zig_version
        )));
    }
    Ok(zig)
}

fn cargo_home() -> Result<PathBuf, InitBuildError> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".cargo")))
        .ok_or_else(|| InitBuildError::Toolchain("neither CARGO_HOME nor HOME is set".into()))?;
    std::fs::create_dir_all(&home).map_err(io_err(&home))?;
    std::fs::canonicalize(&home).map_err(io_err(&home))
}

/// Refuses cargo configuration files that could change the build (cargo reads them from
/// the checkout's directory and every parent, and from CARGO_HOME).
fn check_cargo_configs(source: &Path, cargo_home: &Path) -> Result<(), InitBuildError> {
    let mut dirs: Vec<PathBuf> = source.ancestors().map(|d| d.join(".cargo")).collect();
    dirs.push(cargo_home.to_owned());
    for dir in dirs {
        for name in ["config.toml", "config"] {
            let file = dir.join(name);
            if !file.is_file() {
                continue;
            }
            let table = read_toml(&file).map_err(|e| InitBuildError::CargoConfig {
                file: file.display().to_string(),
                message: e.to_string(),
            })?;
            if let Some(key) = table
                .keys()
                .find(|k| REFUSED_CONFIG_TABLES.contains(&k.as_str()))
            {
                return Err(InitBuildError::CargoConfig {
                    file: file.display().to_string(),
                    message: format!(
                        "sets [{key}], which could change how zoa-init is compiled; zoa build-init refuses it (move the file aside for this build)"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Names of the caller's variables that `build_init` ignores and that would otherwise
/// have reached code generation (for a note to the user; the values are never read).
pub fn ignored_environment() -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        let interesting = NOTEWORTHY_ENV.contains(&k)
            || k.starts_with("CARGO_PROFILE_")
            || k.starts_with("CARGO_TARGET_")
            || k.starts_with("CC_")
            || k.starts_with("CFLAGS_")
            || k.starts_with("AR_")
            || k.starts_with("AWS_LC_SYS_")
            || k.starts_with("RUSTUP_TOOLCHAIN");
        if interesting {
            out.insert(k.to_owned());
        }
    }
    out.into_iter().collect()
}

// ---------------------------------------------------------------------------------------
// Flags.

/// One host path and the fixed name it becomes.
#[derive(Debug, Clone)]
struct Remap {
    from: PathBuf,
    to: &'static str,
}

/// Host paths to remap, general first: rustc and clang both apply the last match.
fn host_remaps(
    source: &Path,
    target_dir: &Path,
    cargo_home: &Path,
    sysroot: &Path,
) -> Result<Vec<Remap>, InitBuildError> {
    let mut out = vec![
        Remap {
            from: sysroot.to_owned(),
            to: REMAP_SYSROOT,
        },
        Remap {
            from: cargo_home.to_owned(),
            to: REMAP_CARGO_HOME,
        },
        Remap {
            from: source.to_owned(),
            to: REMAP_SOURCE,
        },
        Remap {
            from: target_dir.to_owned(),
            to: REMAP_TARGET_DIR,
        },
    ];
    // registry/src/<index dir>: the directory name depends on the registry's URL and the
    // cargo version; every one becomes the same name.
    for (sub, to) in [
        ("registry/src", REMAP_REGISTRY),
        ("git/checkouts", REMAP_GIT),
    ] {
        let dir = cargo_home.join(sub);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        found.sort();
        for from in found.into_iter().filter(|p| p.is_dir()) {
            out.push(Remap { from, to });
        }
    }
    Ok(out)
}

/// The flags passed on (with host paths) and recorded (with labels).
struct Flags {
    rustflags_host: Vec<String>,
    rustflags_recorded: Vec<String>,
    cflags_host: Vec<String>,
    cflags_recorded: Vec<String>,
}

/// Every remap label in the order [`host_remaps`] emits them. The recorded flags list all of
/// them, whether or not this machine has such a directory (a CARGO_HOME without git
/// checkouts must not give another provenance).
const REMAP_LABELS: &[(&str, &str)] = &[
    ("<sysroot>", REMAP_SYSROOT),
    ("<cargo-home>", REMAP_CARGO_HOME),
    ("<source>", REMAP_SOURCE),
    ("<target-dir>", REMAP_TARGET_DIR),
    ("<cargo-home>/registry/src/*", REMAP_REGISTRY),
    ("<cargo-home>/git/checkouts/*", REMAP_GIT),
];

impl Flags {
    fn new(remaps: &[Remap]) -> Flags {
        let linker = "-Clinker=rust-lld".to_owned();
        let mut f = Flags {
            rustflags_host: vec![linker.clone()],
            rustflags_recorded: vec![linker],
            cflags_host: Vec::new(),
            cflags_recorded: Vec::new(),
        };
        for r in remaps {
            let from = r.from.display();
            f.rustflags_host
                .push(format!("--remap-path-prefix={from}={}", r.to));
            f.cflags_host
                .push(format!("-ffile-prefix-map={from}={}", r.to));
        }
        for (label, to) in REMAP_LABELS {
            f.rustflags_recorded
                .push(format!("--remap-path-prefix={label}={to}"));
            f.cflags_recorded
                .push(format!("-ffile-prefix-map={label}={to}"));
        }
        f
    }
}

/// The `zig cc`/`zig ar` wrappers cc-rs calls. cc-rs adds `--target=<rust triple>`, which
/// zig does not parse, so the wrapper drops it and names zig's own target. Baseline CPU:
/// never the build host's. No sanitizers: zig cc turns UBSan on for unoptimised C (aws-lc
/// builds its jitter entropy source at -O0), which needs a runtime the image lacks. The
/// path remaps are in the wrapper, quoted, because cc-rs splits CFLAGS at spaces and a
/// checkout path may have one. Named by a digest of their content, so changing them
/// rebuilds what they compiled.
struct ZigWrappers {
    cc: PathBuf,
    ar: PathBuf,
}

fn write_zig_wrappers(
    target_dir: &Path,
    zig: &Path,
    cflags: &[String],
) -> Result<ZigWrappers, InitBuildError> {
    let zig = shell_quote(&zig.display().to_string());
    let cflags: Vec<String> = cflags.iter().map(|f| shell_quote(f)).collect();
    let cc = format!(
        "#!/bin/sh\n# zig cc for zoa-init's C code (written by zoa build-init)\nfor a; do shift; case \"$a\" in --target=*) ;; *) set -- \"$@\" \"$a\";; esac; done\nexec {zig} cc -target {ZIG_TARGET} -mcpu=baseline -fno-sanitize=all {} \"$@\"\n",
        cflags.join(" ")
    );
    let ar = format!("#!/bin/sh\n# zig ar (written by zoa build-init)\nexec {zig} ar \"$@\"\n");
    let dir = target_dir.join("toolchain");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let write = |name: &str, text: &str| -> Result<PathBuf, InitBuildError> {
        let digest = crate::digest::sha256_bytes(text.as_bytes());
        let path = dir.join(format!("{name}-{}", &digest[..12]));
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            // Atomically: a concurrent build may be running the old file.
            fsio::write_atomic(&path, text.as_bytes(), fsio::EXECUTABLE)
                .map_err(|e| io_err(&path)(e.into()))?;
        } else {
            set_mode(&path, fsio::EXECUTABLE)?;
        }
        Ok(path)
    };
    Ok(ZigWrappers {
        cc: write("zig-cc", &cc)?,
        ar: write("zig-ar", &ar)?,
    })
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), InitBuildError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

// ---------------------------------------------------------------------------------------
// What was built from.

fn package_version(source: &Path) -> Result<String, InitBuildError> {
    let manifest = source.join("init/Cargo.toml");
    toml_str(&read_toml(&manifest)?, &manifest, &["package", "version"])
}

/// The files zoa-init is built from: its crate (`init/`), the toolchain pin, and the parts
/// of the workspace manifest that reach it (`[workspace]`: edition and lints it inherits;
/// `[profile]`: per-package overrides), as the pseudo-file
/// `Cargo.toml[workspace,profile]`. zoa's own dependencies and targets in Cargo.toml, and
/// Cargo.lock entries of crates zoa-init does not use, are left out: changing them does
/// not change zoa-init (its crates and their Cargo.lock entries are recorded apart).
pub fn source_tree(source: &Path) -> Result<SourcesRecord, InitBuildError> {
    let mut files = vec![
        workspace_settings(source)?,
        source_file(source, &source.join("rust-toolchain.toml"))?,
    ];
    let mut stack = vec![source.join("init")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            let name = entry.file_name();
            // Editor and VCS droppings, and build output, are not sources.
            if name.to_string_lossy().starts_with('.') || name == "target" {
                continue;
            }
            let ft = entry.file_type().map_err(io_err(&path))?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                files.push(source_file(source, &path)?);
            } else {
                return Err(InitBuildError::Source {
                    file: path.display().to_string(),
                    message: "is neither a file nor a directory (symbolic links are not followed in zoa-init's sources)".into(),
                });
            }
        }
    }
    Ok(SourcesRecord::new(files))
}

/// The workspace manifest's `[workspace]` and `[profile]` tables, canonically serialised.
fn workspace_settings(source: &Path) -> Result<SourceFile, InitBuildError> {
    let manifest = source.join("Cargo.toml");
    let table = read_toml(&manifest)?;
    let mut relevant = toml::Table::new();
    for key in ["workspace", "profile"] {
        if let Some(v) = table.get(key) {
            relevant.insert(key.to_owned(), v.clone());
        }
    }
    let text = toml::to_string(&relevant).map_err(|e| InitBuildError::Source {
        file: manifest.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(SourceFile {
        path: "Cargo.toml[workspace,profile]".to_owned(),
        sha256: crate::digest::sha256_bytes(text.as_bytes()),
    })
}

fn source_file(root: &Path, path: &Path) -> Result<SourceFile, InitBuildError> {
    let (sha256, _) = crate::digest::sha256_file(path).map_err(io_err(path))?;
    let rel = path.strip_prefix(root).unwrap_or(path);
    let rel: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Ok(SourceFile {
        path: rel.join("/"),
        sha256,
    })
}

/// Every crate compiled for zoa-init on its target (normal dependencies, transitively),
/// and those only built to run on the host (build scripts' and proc macros' dependencies),
/// with Cargo.lock's checksums.
fn crate_closure(
    toolchain: &Toolchain,
    source: &Path,
    cargo_home: &Path,
    target_dir: &Path,
) -> Result<Vec<CrateRecord>, InitBuildError> {
    let mut cmd = cleared_cargo(toolchain, source, cargo_home, target_dir);
    cmd.args([
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--filter-platform",
        TARGET,
    ]);
    let text = run_output(&mut cmd, "cargo metadata")?;
    let meta: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| InitBuildError::Command {
            what: "cargo metadata".into(),
            message: e.to_string(),
        })?;
    let lock_path = source.join("Cargo.lock");
    let checksums = lock_checksums(&read_toml(&lock_path)?);
    closure_from_metadata(&meta, &checksums).map_err(|message| InitBuildError::Command {
        what: "cargo metadata".into(),
        message,
    })
}

/// (name, version) → checksum, from Cargo.lock's `[[package]]` entries.
fn lock_checksums(lock: &toml::Table) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for p in lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let get = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        if let (Some(n), Some(v), Some(c)) = (get("name"), get("version"), get("checksum")) {
            out.insert((n, v), c);
        }
    }
    out
}

/// Walks `cargo metadata`'s resolve graph from zoa-init.
fn closure_from_metadata(
    meta: &serde_json::Value,
    checksums: &BTreeMap<(String, String), String>,
) -> Result<Vec<CrateRecord>, String> {
    let packages: BTreeMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .ok_or("no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .ok_or("no resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let root = packages
        .iter()
        .find(|(_, p)| p["name"] == PACKAGE)
        .map(|(id, _)| *id)
        .ok_or("zoa-init is not in the workspace")?;
    // id → build_only; a crate reached both ways counts as compiled in.
    let mut seen: BTreeMap<&str, bool> = BTreeMap::new();
    let mut queue = vec![(root, false)];
    while let Some((id, build_only)) = queue.pop() {
        match seen.get(id) {
            Some(&b) if !b || b == build_only => continue,
            _ => {}
        }
        seen.insert(id, build_only);
        let Some(node) = nodes.get(id) else { continue };
        for dep in node["deps"].as_array().into_iter().flatten() {
            let Some(pkg) = dep["pkg"].as_str() else {
                continue;
            };
            let kinds: Vec<Option<&str>> = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| k["kind"].as_str())
                .collect();
            if kinds.contains(&None) {
                queue.push((pkg, build_only));
            } else if kinds.contains(&Some("build")) {
                queue.push((pkg, true));
            }
        }
    }
    let mut out: Vec<CrateRecord> = seen
        .into_iter()
        .filter(|(id, _)| *id != root)
        .filter_map(|(id, build_only)| {
            let p = packages.get(id)?;
            let name = p["name"].as_str()?.to_owned();
            let version = p["version"].as_str()?.to_owned();
            let source = p["source"].as_str().map(str::to_owned);
            let checksum = checksums.get(&(name.clone(), version.clone())).cloned();
            Some(CrateRecord {
                name,
                version,
                source,
                checksum,
                build_only,
            })
        })
        .collect();
    out.sort();
    Ok(out)
}

fn write_outputs(
    built: &Path,
    provenance: &Provenance,
    out_dir: &Path,
) -> Result<(PathBuf, PathBuf), InitBuildError> {
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let binary = out_dir.join(PACKAGE);
    let prov_path = Provenance::path_for(&binary);
    let mut bin_tmp =
        fsio::temp_for(&binary, fsio::EXECUTABLE).map_err(|e| io_err(&binary)(e.into()))?;
    let mut src = std::fs::File::open(built).map_err(io_err(built))?;
    std::io::copy(&mut src, bin_tmp.as_file_mut()).map_err(io_err(&binary))?;
    let prov_tmp = fsio::write_temp(&prov_path, &provenance.to_json(), fsio::PUBLIC)
        .map_err(|e| io_err(&prov_path)(e.into()))?;
    for (tmp, path) in [(bin_tmp, &binary), (prov_tmp, &prov_path)] {
        fsio::persist(tmp, path, fsio::Persist::REPLACE).map_err(|e| io_err(path)(e.into()))?;
    }
    Ok((binary, prov_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustc_vv_is_parsed() {
        let text = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\ncommit-hash: 59807616e1fa2540724bfbac14d7976d7e4a3860\ncommit-date: 2026-04-14\nhost: x86_64-unknown-linux-gnu\nrelease: 1.95.0\nLLVM version: 22.1.2\n";
        let r = parse_rustc_vv(text).unwrap();
        assert_eq!(r.release, "1.95.0");
        assert_eq!(r.llvm_version, "22.1.2");
        assert_eq!(r.host, "x86_64-unknown-linux-gnu");
        assert!(parse_rustc_vv("rustc 1.0\n").is_err());
    }

    #[test]
    fn flags_record_labels_not_host_paths() {
        let remaps = vec![
            Remap {
                from: "/home/alice/.cargo".into(),
                to: REMAP_CARGO_HOME,
            },
            Remap {
                from: "/home/alice/.cargo/registry/src/index.crates.io-1".into(),
                to: REMAP_REGISTRY,
            },
            Remap {
                from: "/home/alice/.cargo/registry/src/mirror-2".into(),
                to: REMAP_REGISTRY,
            },
        ];
        let f = Flags::new(&remaps);
        assert!(f.rustflags_host.iter().any(|s| s.contains("/home/alice")));
        let recorded = format!("{:?}{:?}", f.rustflags_recorded, f.cflags_recorded);
        assert!(!recorded.contains("/home/alice"), "{recorded}");
        assert_eq!(f.rustflags_recorded.len(), 1 + REMAP_LABELS.len());
        assert_eq!(f.cflags_recorded.len(), REMAP_LABELS.len());
    }

    #[test]
    fn pins_refuse_a_floating_channel() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("init")).unwrap();
        std::fs::write(
            dir.path().join("init/Cargo.toml"),
            "[package]\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("init/c-toolchain.toml"),
            format!(
                "[zig]\nversion = \"0.17.0\"\nbinary_sha256 = \"{}\"\n",
                "a".repeat(64)
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("rust-toolchain.toml"),
            "[toolchain]\nchannel = \"stable\"\n",
        )
        .unwrap();
        let e = read_pins(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("rust-toolchain.toml") && e.contains("exact release"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("rust-toolchain.toml"),
            "[toolchain]\nchannel = \"1.95.0\"\n",
        )
        .unwrap();
        let p = read_pins(dir.path()).unwrap();
        assert_eq!(p.rust_channel, "1.95.0");
        assert_eq!(p.zig_version, "0.17.0");
        let e = read_pins(&dir.path().join("init")).unwrap_err().to_string();
        assert!(e.contains("not a zoa source checkout"), "{e}");
    }

    #[test]
    fn cargo_configs_that_change_the_build_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a/src");
        let home = dir.path().join("cargo-home");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        check_cargo_configs(&src, &home).unwrap();
        std::fs::write(
            home.join("config.toml"),
            "[net]\ngit-fetch-with-cli = true\n",
        )
        .unwrap();
        check_cargo_configs(&src, &home).unwrap();
        std::fs::create_dir_all(dir.path().join("a/.cargo")).unwrap();
        std::fs::write(
            dir.path().join("a/.cargo/config.toml"),
            "[target.x86_64-unknown-linux-musl]\nrustflags = [\"-Copt-level=0\"]\n",
        )
        .unwrap();
        let e = check_cargo_configs(&src, &home).unwrap_err().to_string();
        assert!(
            e.contains("a/.cargo/config.toml") && e.contains("[target]"),
            "{e}"
        );
    }

    #[test]
    fn closure_follows_normal_and_build_edges() {
        let meta = serde_json::json!({
            "packages": [
                {"id": "init", "name": "zoa-init", "version": "0.1.0", "source": null},
                {"id": "a", "name": "a", "version": "1.0.0", "source": "registry+x"},
                {"id": "b", "name": "b", "version": "2.0.0", "source": "registry+x"},
                {"id": "c", "name": "c", "version": "3.0.0", "source": "registry+x"},
                {"id": "t", "name": "t", "version": "4.0.0", "source": "registry+x"}
            ],
            "resolve": {"nodes": [
                {"id": "init", "deps": [
                    {"pkg": "a", "dep_kinds": [{"kind": null}]},
                    {"pkg": "t", "dep_kinds": [{"kind": "dev"}]}
                ]},
                {"id": "a", "deps": [
                    {"pkg": "b", "dep_kinds": [{"kind": "build"}]},
                    {"pkg": "c", "dep_kinds": [{"kind": null}]}
                ]},
                {"id": "b", "deps": [{"pkg": "c", "dep_kinds": [{"kind": null}]}]},
                {"id": "c", "deps": []},
                {"id": "t", "deps": []}
            ]}
        });
        let mut sums = BTreeMap::new();
        sums.insert(("a".to_owned(), "1.0.0".to_owned()), "aa".to_owned());
        let got = closure_from_metadata(&meta, &sums).unwrap();
        let summary: Vec<(&str, bool, Option<&str>)> = got
            .iter()
            .map(|c| (c.name.as_str(), c.build_only, c.checksum.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("a", false, Some("aa")),
                ("b", true, None),
                ("c", false, None)
            ]
        );
    }

    #[test]
    fn source_tree_lists_init_and_the_workspace_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "Cargo.lock",
            "rust-toolchain.toml",
            "init/Cargo.toml",
            "init/src/main.rs",
            "init/.main.rs.swp",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        let manifest = "[workspace]\nmembers = [\".\", \"init\"]\n\n[package]\nname = \"zoa\"\n\n[dependencies]\na = \"1\"\n\n[profile.release]\nlto = \"thin\"\n";
        std::fs::write(root.join("Cargo.toml"), manifest).unwrap();
        let t = source_tree(root).unwrap();
        let paths: Vec<&str> = t.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "Cargo.toml[workspace,profile]",
                "init/Cargo.toml",
                "init/src/main.rs",
                "rust-toolchain.toml"
            ]
        );
        // zoa's own dependencies are not zoa-init's sources; the profile is.
        std::fs::write(
            root.join("Cargo.toml"),
            manifest.replace("a = \"1\"", "a = \"2\""),
        )
        .unwrap();
        assert_eq!(source_tree(root).unwrap(), t);
        std::fs::write(root.join("Cargo.toml"), manifest.replace("thin", "fat")).unwrap();
        assert_ne!(source_tree(root).unwrap().sha256, t.sha256);
        std::os::unix::fs::symlink("main.rs", root.join("init/src/link.rs")).unwrap();
        assert!(source_tree(root).is_err());
    }
}
