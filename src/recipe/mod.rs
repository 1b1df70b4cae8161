//! Image recipes: the declarative, pinned description of a boot image.
//!
//! A recipe is a TOML file (see `image-recipes/llama-server.toml` for a full example).
//! Every external input is pinned by sha256 in `[inputs.NAME]` with sources tried in
//! order; everything else (kernel, stub, sysroot, payload, PID 1) refers to inputs by name.
//! Parsing is strict: unknown keys are errors, and every path that ends up inside the image
//! or is read from the host is checked here, before anything is fetched or written.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::digest;
use crate::fsio::ReadBoundedError;

pub mod lock;
pub mod rules;

/// Largest recipe we accept; a recipe is a few kilobytes, this only stops absurd input.
const MAX_RECIPE_BYTES: u64 = 4 << 20;

/// Default SOURCE_DATE_EPOCH when neither the recipe nor the environment sets one
/// (2026-01-01T00:00:00Z): any fixed value works, it only has to never change.
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_767_225_600;

/// Errors from reading or validating a recipe or its lock file.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}: cannot read recipe: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: recipe is larger than {MAX_RECIPE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// A parsed and validated recipe, plus where it came from.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The recipe file as given by the user.
    pub path: PathBuf,
    /// The directory relative local paths are resolved against.
    pub base_dir: PathBuf,
    /// sha256 of the recipe file's bytes.
    pub sha256: String,
    pub spec: RecipeSpec,
}

/// The recipe file's content.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeSpec {
    pub image: ImageSpec,
    /// The Linux kernel (a PE with an EFI stub, e.g. a Debian `vmlinuz`).
    pub kernel: FileRef,
    /// The systemd EFI stub the UKI is assembled on.
    pub stub: FileRef,
    /// Pinned inputs by name.
    pub inputs: BTreeMap<String, InputSpec>,
    #[serde(default)]
    pub sysroot: SysrootSpec,
    #[serde(default)]
    pub init: InitSpec,
    #[serde(default)]
    pub payload: PayloadSpec,
    #[serde(default)]
    pub policy: PolicySpec,
}

/// `[image]`: identity and boot parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub name: String,
    pub version: String,
    /// Kernel command line, stored in the UKI's `.cmdline` section.
    #[serde(default)]
    pub cmdline: String,
    /// Timestamp used for every mtime and the PE TimeDateStamp.
    pub source_date_epoch: Option<u64>,
    /// Initramfs compression: "none" (default) or "zstd".
    #[serde(default)]
    pub compression: Compression,
    /// The zstd level (1 to 19) with `compression = "zstd"`; absent: [`DEFAULT_ZSTD_LEVEL`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    /// Fields of the `.osrel` section (os-release format).
    #[serde(default)]
    pub os_release: BTreeMap<String, String>,
    /// The port the server listens on inside the guest (used by boot and deploy).
    pub serving_port: Option<u16>,
}

/// The zstd level of a recipe that names none. Part of the reproducibility contract: the
/// level is in the bytes of the `.initrd`, so it never changes silently.
pub const DEFAULT_ZSTD_LEVEL: i32 = 12;

/// The levels a recipe may pick: zstd's regular ones, whose windows stay at 8 MiB or less.
/// The "ultra" levels (20-22) are left out: the kernel would have to allocate their windows
/// (up to 128 MiB) when it unpacks the initramfs at boot.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;

impl ImageSpec {
    /// The zstd level the `.initrd` is compressed with (`None` when it is not compressed).
    pub fn zstd_level(&self) -> Option<i32> {
        match self.compression {
            Compression::None => None,
            Compression::Zstd => Some(self.compression_level.unwrap_or(DEFAULT_ZSTD_LEVEL)),
        }
    }
}

/// Initramfs compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Zstd,
}

impl Compression {
    /// The name a recipe and build.json spell it with.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }
}

/// A file taken from an input: the input itself, or a member of a `.deb` input.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// Name of an entry in `[inputs]`.
    pub input: String,
    /// Path inside the `.deb`'s data archive; absent when the input is the file itself.
    pub path: Option<String>,
}

/// `[inputs.NAME]`: one pinned external file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub sha256: String,
    /// Where to get it, tried in order: local paths (relative to the recipe), https URLs.
    pub sources: Vec<String>,
}

/// `[sysroot]`: the packages shared libraries are resolved from (and nothing else).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SysrootSpec {
    /// Names of `.deb` inputs, extracted in this order into one merged-/usr tree.
    #[serde(default)]
    pub packages: Vec<String>,
}

/// `[init]`: the image's PID 1 and its configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// A pinned PID 1 binary (input name). Default: the `zoa-init` that ships with zoa.
    pub input: Option<String>,
    pub hostname: Option<String>,
    /// Print PCRs at start (default true).
    pub print_pcrs: Option<bool>,
    /// Print the TCG event log at start (default false).
    pub dump_eventlog: Option<bool>,
    /// Kernel modules (image paths) loaded in order.
    #[serde(default)]
    pub modules: Vec<String>,
    /// `[init.network]`: DHCP on one interface (zoa-init's own client).
    pub network: Option<zoa_init::config::Network>,
    /// `[init.unseal]`: secrets KMS releases only to this attested image.
    pub unseal: Option<zoa_init::config::Unseal>,
    /// `[init.model]`: model weights from a block device, pinned by SHA-256.
    pub model: Option<zoa_init::config::Model>,
    pub server: Option<ServerSpec>,
    /// `[init.tls]`: zoa-init's attested TLS front on `[image] serving_port`.
    pub tls: Option<TlsSpec>,
}

/// `[init.tls]`: clients reach the server only through zoa-init's TLS front, which serves
/// the image's `serving_port` and forwards to the server on loopback.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// The loopback port the server listens on (its argv must say so).
    pub upstream_port: u16,
    /// Attestation documents made at once; more get 429 (default 4).
    pub max_attestations: Option<u32>,
    /// Client connections open at once (default 256).
    pub max_connections: Option<u32>,
}

/// `[init.server]`: the process PID 1 starts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// Unprivileged ids the server runs as (default 1000; never 0).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Restarts in a row before PID 1 gives up and powers off (default 3).
    pub max_restarts: Option<u32>,
    /// Seconds between SIGTERM and SIGKILL on shutdown (default 10).
    pub stop_timeout_secs: Option<u32>,
    /// Where the server's output goes: "discard" (default) or "console", which operators
    /// can read (`zoa check` reports it).
    #[serde(default)]
    pub log: zoa_init::config::ServerLog,
}

/// `[payload]`: what goes into the initramfs besides PID 1.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadSpec {
    /// Sysroot paths of executables; their library closure is added automatically.
    #[serde(default)]
    pub executables: Vec<String>,
    /// Sysroot paths of libraries loaded with dlopen (plugins); closure added too.
    #[serde(default)]
    pub libraries: Vec<String>,
    /// Sysroot directories copied recursively.
    #[serde(default)]
    pub trees: Vec<String>,
    #[serde(default)]
    pub files: Vec<PayloadFile>,
    #[serde(default)]
    pub symlinks: Vec<PayloadSymlink>,
    #[serde(default)]
    pub dirs: Vec<PayloadDir>,
}

/// `[[payload.files]]`: one file with its content from exactly one place.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadFile {
    /// Absolute path inside the image.
    pub path: String,
    /// A local file, relative to the recipe's directory (must stay inside it).
    pub source: Option<String>,
    /// Inline content.
    pub content: Option<String>,
    /// A pinned input (optionally a member of a `.deb` input via `member`).
    pub input: Option<String>,
    pub member: Option<String>,
    /// Octal permission bits, e.g. "0644" (default 0644, or 0755 for ELF executables).
    pub mode: Option<String>,
}

/// `[[payload.symlinks]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadSymlink {
    pub path: String,
    pub target: String,
}

/// `[[payload.dirs]]`: an empty directory (e.g. a mount point).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadDir {
    pub path: String,
    pub mode: Option<String>,
}

/// `[policy]`: exceptions to the shell-free policy, each with a reason an auditor reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default)]
    pub exceptions: Vec<PolicyException>,
}

/// One allowed violation.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyException {
    /// Rule id, e.g. "ZOA-P004".
    pub rule: String,
    /// The image path (or, for command-line rules, the token) it applies to.
    pub path: String,
    pub reason: String,
}

impl Recipe {
    /// The configuration zoa-init reads, from a recipe's `[init]` (defaults are zoa-init's
    /// own; its `validate` is the recipe's check too).
    pub fn init_config(&self) -> zoa_init::config::Config {
        use zoa_init::config::{
            Config, Server, Tls, DEFAULT_MAX_ATTESTATIONS, DEFAULT_MAX_CONNECTIONS,
            DEFAULT_MAX_RESTARTS, DEFAULT_SERVER_ID, DEFAULT_STOP_TIMEOUT_SECS,
        };
        let init = &self.spec.init;
        Config {
            hostname: init
                .hostname
                .clone()
                .unwrap_or_else(|| self.spec.image.name.clone()),
            print_pcrs: init.print_pcrs.unwrap_or(true),
            dump_eventlog: init.dump_eventlog.unwrap_or(false),
            modules: init.modules.clone(),
            network: init.network.clone(),
            unseal: init.unseal.clone(),
            model: init.model.clone(),
            server: init.server.as_ref().map(|s| Server {
                argv: s.argv.clone(),
                env: s.env.clone(),
                cwd: s.cwd.clone().unwrap_or_else(|| "/".to_owned()),
                uid: s.uid.unwrap_or(DEFAULT_SERVER_ID),
                gid: s.gid.unwrap_or(DEFAULT_SERVER_ID),
                max_restarts: s.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
                stop_timeout_secs: s.stop_timeout_secs.unwrap_or(DEFAULT_STOP_TIMEOUT_SECS),
                log: s.log,
            }),
            tls: init.tls.as_ref().map(|t| Tls {
                // Zero when the recipe has no serving port: validation refuses it.
                port: self.spec.image.serving_port.unwrap_or(0),
                upstream_port: t.upstream_port,
                max_attestations: t.max_attestations.unwrap_or(DEFAULT_MAX_ATTESTATIONS),
                max_connections: t.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            }),
        }
    }

    /// Reads, parses and validates a recipe file.
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let bytes = read_limited(path)?;
        Recipe::parse(path, &bytes)
    }

    /// Parses and validates recipe bytes; `path` names the file in errors and anchors
    /// relative sources. Nothing is read from disk.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Recipe, RecipeError> {
        let text = std::str::from_utf8(bytes).map_err(|e| RecipeError::Syntax {
            path: path.to_owned(),
            message: format!("not UTF-8 at byte {}", e.valid_up_to()),
        })?;
        let spec: RecipeSpec = toml::from_str(text).map_err(|e| RecipeError::Syntax {
            path: path.to_owned(),
            message: one_line_toml_error(&e),
        })?;
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_owned()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let recipe = Recipe {
            path: path.to_owned(),
            base_dir,
            sha256: digest::sha256_bytes(bytes),
            spec,
        };
        recipe.validate()?;
        Ok(recipe)
    }

    /// SOURCE_DATE_EPOCH: the recipe's, else the environment's, else a fixed default.
    pub fn source_date_epoch(&self) -> u64 {
        self.spec.image.source_date_epoch.unwrap_or_else(|| {
            std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(DEFAULT_SOURCE_DATE_EPOCH)
        })
    }

    /// The lock file path that belongs to this recipe (`RECIPE.lock`).
    pub fn lock_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> RecipeError {
        RecipeError::Invalid {
            path: self.path.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn validate(&self) -> Result<(), RecipeError> {
        let s = &self.spec;
        validate_name(&s.image.name).map_err(|m| self.invalid("image.name", m))?;
        validate_name(&s.image.version).map_err(|m| self.invalid("image.version", m))?;
        if s.image.cmdline.contains(['\n', '\0']) {
            return Err(self.invalid("image.cmdline", "must be one line without NUL bytes"));
        }
        if let Some(epoch) = s.image.source_date_epoch {
            if epoch > u64::from(u32::MAX) {
                return Err(self.invalid(
                    "image.source_date_epoch",
                    "must fit in 32 bits (cpio and PE timestamps are 32-bit)",
                ));
            }
        }
        match (s.image.compression, s.image.compression_level) {
            (Compression::None, Some(_)) => {
                return Err(self.invalid(
                    "image.compression_level",
                    "only with compression = \"zstd\" (the initramfs is not compressed)",
                ))
            }
            (Compression::Zstd, Some(level)) if !ZSTD_LEVELS.contains(&level) => {
                return Err(self.invalid(
                    "image.compression_level",
                    format!(
                        "{level} is not a zstd level zoa uses ({} to {})",
                        ZSTD_LEVELS.start(),
                        ZSTD_LEVELS.end()
                    ),
                ))
            }
            _ => {}
        }
        for (key, value) in &s.image.os_release {
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(self.invalid(
                    format!("image.os_release.{key}"),
                    "keys are upper-case letters, digits and '_'",
                ));
            }
            if value.contains(['\n', '\0']) {
                return Err(self.invalid(format!("image.os_release.{key}"), "must be one line"));
            }
        }
        for (name, input) in &s.inputs {
            let field = format!("inputs.{name}");
            validate_name(name).map_err(|m| self.invalid(&field, m))?;
            if !digest::is_sha256_hex(&input.sha256) {
                return Err(self.invalid(
                    format!("{field}.sha256"),
                    "must be 64 lowercase hex characters",
                ));
            }
            if input.sources.is_empty() {
                return Err(self.invalid(format!("{field}.sources"), "lists no source"));
            }
            for source in &input.sources {
                validate_source(source).map_err(|m| self.invalid(format!("{field}.sources"), m))?;
            }
        }
        self.validate_file_ref("kernel", &s.kernel)?;
        self.validate_file_ref("stub", &s.stub)?;
        for (i, pkg) in s.sysroot.packages.iter().enumerate() {
            self.require_input(&format!("sysroot.packages[{i}]"), pkg)?;
        }
        if let Some(input) = &s.init.input {
            self.require_input("init.input", input)?;
        }
        if let Some(hostname) = &s.init.hostname {
            if hostname.is_empty()
                || hostname.len() > 63
                || !hostname
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(self.invalid("init.hostname", "must be 1-63 letters, digits or '-'"));
            }
        }
        for (i, m) in s.init.modules.iter().enumerate() {
            image_path(m).map_err(|e| self.invalid(format!("init.modules[{i}]"), e))?;
        }
        if let Some(server) = &s.init.server {
            match server.argv.first() {
                None => return Err(self.invalid("init.server.argv", "is empty")),
                Some(a0) => {
                    image_path(a0).map_err(|e| self.invalid("init.server.argv[0]", e))?;
                }
            }
            if let Some(cwd) = &server.cwd {
                image_path(cwd).map_err(|e| self.invalid("init.server.cwd", e))?;
            }
            for key in server.env.keys() {
                if key.is_empty() || key.contains(['=', '\0']) {
                    return Err(
                        self.invalid(format!("init.server.env.{key}"), "invalid variable name")
                    );
                }
            }
        }
        // Everything else zoa-init checks itself, so a recipe it would refuse at boot is
        // refused at build time with the same words.
        self.init_config().validate().map_err(|e| match e {
            zoa_init::config::ConfigError::Invalid { field, problem } => {
                self.invalid(format!("init.{field}"), problem)
            }
            other => self.invalid("init", other.to_string()),
        })?;
        self.validate_payload()?;
        for (i, e) in s.policy.exceptions.iter().enumerate() {
            let field = format!("policy.exceptions[{i}]");
            if rules::Rule::from_id(&e.rule).is_none() {
                return Err(self.invalid(
                    format!("{field}.rule"),
                    format!(
                        "unknown rule {:?}; rules are {}",
                        e.rule,
                        rules::Rule::all_ids().join(", ")
                    ),
                ));
            }
            if e.reason.trim().len() < 10 {
                return Err(self.invalid(
                    format!("{field}.reason"),
                    "give a real reason (at least 10 characters): auditors read it",
                ));
            }
        }
        Ok(())
    }

    fn validate_payload(&self) -> Result<(), RecipeError> {
        let p = &self.spec.payload;
        let lists = [
            ("payload.executables", &p.executables),
            ("payload.libraries", &p.libraries),
            ("payload.trees", &p.trees),
        ];
        for (field, list) in lists {
            for (i, path) in list.iter().enumerate() {
                image_path(path).map_err(|e| self.invalid(format!("{field}[{i}]"), e))?;
            }
        }
        for (i, f) in p.files.iter().enumerate() {
            let field = format!("payload.files[{i}]");
            image_path(&f.path).map_err(|e| self.invalid(format!("{field}.path"), e))?;
            let given = [f.source.is_some(), f.content.is_some(), f.input.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                return Err(self.invalid(&field, "give exactly one of source, content, input"));
            }
            if let Some(src) = &f.source {
                relative_inside(src).map_err(|e| self.invalid(format!("{field}.source"), e))?;
            }
            if let Some(input) = &f.input {
                self.require_input(&format!("{field}.input"), input)?;
            } else if f.member.is_some() {
                return Err(
                    self.invalid(format!("{field}.member"), "only valid together with input")
                );
            }
            if let Some(m) = &f.member {
                member_path(m).map_err(|e| self.invalid(format!("{field}.member"), e))?;
            }
            if let Some(mode) = &f.mode {
                parse_mode(mode).map_err(|e| self.invalid(format!("{field}.mode"), e))?;
            }
        }
        for (i, l) in p.symlinks.iter().enumerate() {
            let field = format!("payload.symlinks[{i}]");
            image_path(&l.path).map_err(|e| self.invalid(format!("{field}.path"), e))?;
            if l.target.is_empty() || l.target.contains('\0') {
                return Err(self.invalid(format!("{field}.target"), "must be a non-empty path"));
            }
        }
        for (i, d) in p.dirs.iter().enumerate() {
            let field = format!("payload.dirs[{i}]");
            image_path(&d.path).map_err(|e| self.invalid(format!("{field}.path"), e))?;
            if let Some(mode) = &d.mode {
                parse_mode(mode).map_err(|e| self.invalid(format!("{field}.mode"), e))?;
            }
        }
        Ok(())
    }

    fn validate_file_ref(&self, field: &str, r: &FileRef) -> Result<(), RecipeError> {
        self.require_input(&format!("{field}.input"), &r.input)?;
        if let Some(p) = &r.path {
            member_path(p).map_err(|e| self.invalid(format!("{field}.path"), e))?;
        }
        Ok(())
    }

    fn require_input(&self, field: &str, name: &str) -> Result<(), RecipeError> {
        if self.spec.inputs.contains_key(name) {
            Ok(())
        } else {
            let known: Vec<&str> = self.spec.inputs.keys().map(String::as_str).collect();
            Err(self.invalid(
                field,
                format!(
                    "names input {name:?}, which [inputs] does not define (defined: {})",
                    known.join(", ")
                ),
            ))
        }
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, RecipeError> {
    let read_err = |source| RecipeError::Read {
        path: path.to_owned(),
        source,
    };
    // A FIFO or a device would block or never end: a recipe is a file.
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::other("not a regular file")));
    }
    crate::fsio::read_bounded(path, MAX_RECIPE_BYTES).map_err(|e| match e {
        ReadBoundedError::Io(source) => read_err(source),
        ReadBoundedError::TooLarge => RecipeError::TooLarge {
            path: path.to_owned(),
        },
    })
}

/// toml's errors span several lines with a source excerpt; users get one line.
fn one_line_toml_error(e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => format!("invalid TOML at byte {}: {msg}", span.start),
        None => format!("invalid TOML: {msg}"),
    }
}

/// Names and versions end up in file names, tags and trusted comments.
fn validate_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b))
    {
        return Err(format!(
            "{s:?} may only contain letters, digits and . _ + - ~"
        ));
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(format!("{s:?} must not start with '.' or '-'"));
    }
    Ok(())
}

fn validate_source(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty source".into());
    }
    if s.contains('\0') {
        return Err(format!("{s:?} contains a NUL byte"));
    }
    if let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    {
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("{s:?} is not a valid URL"));
        }
        return Ok(());
    }
    if s.contains("://") {
        return Err(format!(
            "{s:?}: only https://, http:// and local paths are supported"
        ));
    }
    Ok(())
}

/// Validates an absolute path inside the image and returns it normalised
/// (no `.`/`..` components, no trailing slash, no doubled slashes).
pub fn image_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must be an absolute path inside the image"));
    }
    if p.contains('\0') {
        return Err(format!("{p:?} contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in p.split('/').filter(|s| !s.is_empty()) {
        match part {
            "." => {}
            ".." => return Err(format!("{p:?} contains '..'")),
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return Err(format!("{p:?} names the image root"));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// A path inside a `.deb`'s data archive: relative (a leading `./` or `/` is allowed), no `..`.
pub fn member_path(p: &str) -> Result<String, String> {
    let trimmed = p.trim_start_matches("./").trim_start_matches('/');
    image_path(&format!("/{trimmed}")).map(|s| s[1..].to_owned())
}

/// A local path relative to the recipe directory that must not leave it.
pub fn relative_inside(p: &str) -> Result<PathBuf, String> {
    // No file name holds a NUL byte: refused here, not when the build opens it.
    if p.contains('\0') {
        return Err(format!("{p:?} contains a NUL byte"));
    }
    let path = Path::new(p);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "{p:?} leaves the recipe directory ('..' is not allowed)"
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{p:?} must be relative to the recipe directory"))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("{p:?} names no file"));
    }
    Ok(out)
}

/// Parses an octal permission string like "0644"; only permission bits (no setuid etc.
/// here: those would need a policy exception and are not expressible in a recipe).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8).map_err(|_| format!("{s:?} is not an octal mode"))?;
    if mode > 0o7777 {
        return Err(format!("{s:?} is larger than 07777"));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[image]
name = "demo"
version = "1.0"
cmdline = "console=ttyS0"

[kernel]
input = "kernel"
path = "boot/vmlinuz"

[stub]
input = "stub"

[inputs.kernel]
sha256 = "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee"
sources = ["kernel.deb"]

[inputs.stub]
sha256 = "8f2b81bdcfafc466882a0cae460272dbf10d8d97c6a3c1c6ea33038c155a2f5e"
sources = ["https://deb.debian.org/x.deb"]
"#;

    fn load_str(text: &str) -> Result<Recipe, RecipeError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, text).unwrap();
        Recipe::load(&path)
    }

    fn err_of(text: &str) -> String {
        load_str(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_recipe_loads() {
        let r = load_str(MINIMAL).unwrap();
        assert_eq!(r.spec.image.name, "demo");
        assert_eq!(r.spec.image.compression, Compression::None);
        for c in [Compression::None, Compression::Zstd] {
            assert_eq!(toml::Value::try_from(c).unwrap().as_str(), Some(c.name()));
        }
        assert_eq!(r.spec.kernel.path.as_deref(), Some("boot/vmlinuz"));
        assert_eq!(r.sha256, digest::sha256_bytes(MINIMAL.as_bytes()));
        assert!(r.lock_path().to_string_lossy().ends_with("r.toml.lock"));
    }

    #[test]
    fn oversized_recipes_and_directories_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        let mut text = MINIMAL.as_bytes().to_vec();
        text.resize(MAX_RECIPE_BYTES as usize + 1, b'\n');
        std::fs::write(&path, &text).unwrap();
        let e = Recipe::load(&path).unwrap_err();
        assert!(matches!(e, RecipeError::TooLarge { .. }), "{e}");
        text.truncate(MAX_RECIPE_BYTES as usize);
        std::fs::write(&path, &text).unwrap();
        assert!(Recipe::load(&path).is_ok());
        let e = Recipe::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn the_zstd_level_is_the_recipe_s_or_the_fixed_default() {
        let with = |extra: &str| MINIMAL.replace("cmdline = ", &format!("{extra}\ncmdline = "));
        let r = load_str(&with("compression = \"zstd\"")).unwrap();
        assert_eq!(r.spec.image.zstd_level(), Some(DEFAULT_ZSTD_LEVEL));
        let r = load_str(&with("compression = \"zstd\"\ncompression_level = 19")).unwrap();
        assert_eq!(r.spec.image.zstd_level(), Some(19));
        assert_eq!(load_str(MINIMAL).unwrap().spec.image.zstd_level(), None);
        for level in ["0", "20", "22", "-5"] {
            let e = err_of(&with(&format!(
                "compression = \"zstd\"\ncompression_level = {level}"
            )));
            assert!(
                e.contains("image.compression_level") && e.contains("1 to 19"),
                "{e}"
            );
        }
        let e = err_of(&with("compression_level = 3"));
        assert!(
            e.contains("image.compression_level") && e.contains("only with"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let e = err_of(&MINIMAL.replace("cmdline =", "cmdlin ="));
        assert!(e.contains("unknown field") && e.contains("cmdlin"), "{e}");
    }

    #[test]
    fn bad_toml_is_one_line() {
        let e = err_of("[image\nname=1");
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("invalid TOML"), "{e}");
    }

    #[test]
    fn bad_digest_is_refused() {
        let e = err_of(&MINIMAL.replace("e7d02b94", "E7D02B94"));
        assert!(e.contains("inputs.kernel.sha256"), "{e}");
    }

    #[test]
    fn undefined_input_is_named() {
        let e = err_of(&MINIMAL.replace("input = \"stub\"", "input = \"nostub\""));
        assert!(e.contains("stub.input") && e.contains("nostub"), "{e}");
    }

    #[test]
    fn traversal_in_payload_source_is_refused() {
        let text = format!(
            "{MINIMAL}\n[[payload.files]]\npath = \"/etc/x\"\nsource = \"../../etc/shadow\"\n"
        );
        let e = err_of(&text);
        assert!(
            e.contains("payload.files[0].source") && e.contains("'..'"),
            "{e}"
        );
    }

    #[test]
    fn traversal_in_image_path_is_refused() {
        let text = format!("{MINIMAL}\n[payload]\nexecutables = [\"/usr/../../bin/sh\"]\n");
        let e = err_of(&text);
        assert!(e.contains("payload.executables[0]"), "{e}");
    }

    #[test]
    fn exception_needs_known_rule_and_reason() {
        let text = format!("{MINIMAL}\n[[policy.exceptions]]\nrule = \"ZOA-P999\"\npath = \"/x\"\nreason = \"because we must here\"\n");
        assert!(err_of(&text).contains("unknown rule"));
        let text = format!("{MINIMAL}\n[[policy.exceptions]]\nrule = \"ZOA-P004\"\npath = \"/x\"\nreason = \"ok\"\n");
        assert!(err_of(&text).contains("real reason"));
    }

    #[test]
    fn path_helpers() {
        assert_eq!(image_path("/usr//bin/./x/").unwrap(), "/usr/bin/x");
        assert!(image_path("usr/bin").is_err());
        assert!(image_path("/").is_err());
        assert_eq!(member_path("./boot/vmlinuz").unwrap(), "boot/vmlinuz");
        assert!(member_path("../x").is_err());
        assert!(relative_inside("/etc/passwd").is_err());
        assert_eq!(
            relative_inside("./files/a").unwrap(),
            PathBuf::from("files/a")
        );
        assert_eq!(parse_mode("0755").unwrap(), 0o755);
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("17777").is_err());
    }

    /// Found by the `recipe_structured` fuzz target: a payload source or input source with a
    /// NUL byte was accepted, and failed only when the build opened it.
    #[test]
    fn nul_bytes_in_local_paths_are_refused_at_parse_time() {
        assert!(relative_inside("a\0b").unwrap_err().contains("NUL"));
        assert!(validate_source("../inputs/a\0.deb")
            .unwrap_err()
            .contains("NUL"));
        let text = MINIMAL.replace(
            "[inputs.kernel]",
            "[[payload.files]]\npath = \"/x\"\nsource = \"a\\u0000b\"\n\n[inputs.kernel]",
        );
        let err = Recipe::parse(Path::new("r.toml"), text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("payload.files[0].source"), "{err}");
    }

    #[test]
    fn epoch_must_fit_32_bits() {
        let text = MINIMAL.replace(
            "cmdline = \"console=ttyS0\"",
            "source_date_epoch = 99999999999",
        );
        assert!(err_of(&text).contains("32 bits"));
    }
}
