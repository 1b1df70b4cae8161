//! The configuration file of zoa-init: `/etc/zoa/init.json` inside the image.
//!
//! `zoa build` generates it from the recipe and puts it into the initramfs, so
//! it is measured with the rest of the image. The structs here are the format:
//! the `zoa` crate can reuse them (they depend on serde and std only) to write
//! the file, and `zoa-init --check-config FILE` validates one and prints it
//! normalised (every default written out, `env` sorted by key).
//!
//! Unknown keys are refused everywhere (`deny_unknown_fields`): a field this
//! version of zoa-init does not understand is an error, never silently ignored.
//!
//! ```json
//! {
//!   "hostname": "llama-server",
//!   "print_pcrs": true,
//!   "dump_eventlog": false,
//!   "modules": ["/usr/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio.ko"],
//!   "server": {
//!     "argv": ["/usr/bin/llama-server", "--host", "0.0.0.0", "--port", "8080"],
//!     "env": {"HOME": "/tmp"},
//!     "cwd": "/",
//!     "uid": 0,
//!     "gid": 0
//!   }
//! }
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::Path;

/// Where zoa-init reads its configuration when it runs as PID 1.
pub const DEFAULT_PATH: &str = "/etc/zoa/init.json";

/// Larger configuration files are refused (the real ones are a few hundred bytes).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
pub const MAX_HOSTNAME_BYTES: usize = 64;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Host name set with `sethostname(2)`. Required. An RFC 1123 host name:
    /// at most 64 bytes, dot-separated labels of 1–63 ASCII letters, digits and
    /// `-`, no label starting or ending with `-`.
    pub hostname: String,

    /// Print PCRs 0–12 of the SHA-256 and SHA-384 banks at start, as
    /// `zoa-init: pcr <bank> <n> <hex>` lines. Default `true`.
    #[serde(default = "default_true")]
    pub print_pcrs: bool,

    /// Print the TCG2 binary event log
    /// (`/sys/kernel/security/tpm0/binary_bios_measurements`) base64-encoded
    /// between `eventlog-begin` and `eventlog-end` lines. Mounts securityfs.
    /// Default `false` (a 30 KiB log takes seconds on a serial console).
    #[serde(default)]
    pub dump_eventlog: bool,

    /// Kernel modules (uncompressed `.ko`, absolute paths inside the image)
    /// loaded in this order with `finit_module(2)`, without parameters. The
    /// order must satisfy each module's `depends=`: there is no modprobe.
    /// No duplicates. Default: none.
    #[serde(default)]
    pub modules: Vec<String>,

    /// Network bring-up by zoa-init's own DHCP client. Optional: without it
    /// only the kernel's defaults exist (no address, loopback down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,

    /// Secrets AWS KMS releases only to an instance that booted this image
    /// (attested by its NitroTPM), unsealed before the model and the server.
    /// Needs `network`. Optional: without it nothing is attested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseal: Option<Unseal>,

    /// Model weights read from a block device, verified and installed before
    /// the server starts. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,

    /// The attested TLS front on the serving port: TLS 1.3 with a key made at boot, the
    /// attestation endpoint, everything else forwarded to the server on loopback. Needs
    /// `network` and `server`. Optional: without it the server faces clients itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,

    /// The inference server. Optional: without it zoa-init prints what it was
    /// asked to print and powers off (a probe image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Server>,
}

/// How to bring the network up: loopback, then one Ethernet interface by DHCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The interface to configure, e.g. `eth0`. Default: the first interface
    /// that is not loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,

    /// Seconds to wait for the interface and a DHCP lease before the boot
    /// fails. Default 30.
    #[serde(default = "default_network_timeout")]
    pub timeout_secs: u32,
}

/// What to unseal: `zoa seal` envelopes arrive in the instance's user data
/// (`zoa deploy --secret NAME=FILE`); each named here must be there, and is
/// opened only with the data key KMS encrypts to this boot's attested key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unseal {
    /// The secrets, at least one. Each is written to
    /// `/run/zoa/secrets/<name>` (a tmpfs of its own, read-only once written;
    /// mode 0440, owner root, group the server's gid).
    pub secrets: Vec<SecretSpec>,

    /// Seconds for the whole exchange (IMDS, KMS) before the boot fails.
    /// Default 60.
    #[serde(default = "default_unseal_timeout")]
    pub timeout_secs: u32,

    /// Other IMDS and KMS endpoints than the instance's, for rehearsing an attested
    /// boot off EC2 (`zoa boot --nitrotpm` with stand-ins). Part of the image, so of its
    /// measurements: never taken from user data, where an operator could change it at
    /// launch. Absent for images meant for EC2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<UnsealEndpoints>,
}

/// `unseal.endpoints`: base URLs (`http://` or `https://`, host and optional port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsealEndpoints {
    /// Instead of `http://169.254.169.254`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds: Option<String>,
    /// Instead of the region's KMS endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<String>,
}

/// One secret to unseal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// Its name in the user data and its file name: 1–64 of `a-z 0-9 - _ .`,
    /// not starting with `.`.
    pub name: String,

    /// Also give it to the server in this environment variable. Default: file only
    /// (a file is not inherited by everything the server starts, an environment is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// Where unsealed secrets appear: `<dir>/<name>`.
pub const SECRETS_DIR: &str = "/run/zoa/secrets";

fn default_unseal_timeout() -> u32 {
    60
}

/// The model: a byte range at the start of a read-only block device, copied
/// into a read-only tmpfs while its SHA-256 is computed, and given to the
/// server only if the digest is the one pinned here. Copying closes the gap
/// between checking and using: the server reads the bytes that were checked,
/// whatever later happens to the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The block device, e.g. `/dev/vdb`. Default: every whole disk at least
    /// `size` bytes long whose first bytes are the GGUF magic is tried in
    /// `/sys/class/block` order until one has the pinned digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,

    /// The model's length in bytes (the device is longer: it ends on a sector
    /// boundary, padded with zeros). Required, at least 1.
    pub size: u64,

    /// SHA-256 of the first `size` bytes, 64 lowercase hex digits. Required.
    pub sha256: String,

    /// Where the verified copy appears (mode 0440, owner root, group the
    /// server's gid), on a tmpfs of its own mounted read-only once the copy is
    /// checked. Absolute, not directly under `/`. Default `/run/zoa/model/model.gguf`.
    #[serde(default = "default_model_path")]
    pub path: String,

    /// The device holds the model encrypted with age (<https://age-encryption.org/v1>,
    /// binary, not armored) to an X25519 recipient, and this names the unsealed secret
    /// holding the matching identity (`AGE-SECRET-KEY-1…`, as `age-keygen` writes it).
    /// The secret must be in `unseal.secrets`; zoa-init keeps it to itself (it is not
    /// written to the secrets directory, the server never sees it). `size` and `sha256`
    /// are still those of the decrypted model. Default: the device holds the model as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_identity: Option<String>,
}

/// `tls`: where clients connect and where the server listens behind the front.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The port clients connect to (the image's serving port), on every address. Required.
    pub port: u16,

    /// The loopback port the server listens on (`127.0.0.1`); requests other than the
    /// attestation endpoint's are forwarded there. Required, not `port`.
    pub upstream_port: u16,

    /// Attestation documents made at once (the TPM answers one at a time; the rest
    /// wait). A request beyond this many waiting gets `429`. 1 to 64, default 4.
    #[serde(default = "default_max_attestations")]
    pub max_attestations: u32,

    /// Client connections open at once; more wait in the kernel's accept queue.
    /// 1 to 65536, default 256.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// Attestation documents under way at once, by default.
pub const DEFAULT_MAX_ATTESTATIONS: u32 = 4;
/// Client connections open at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;

fn default_max_attestations() -> u32 {
    DEFAULT_MAX_ATTESTATIONS
}

fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}

/// Where the server's standard output and error go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerLog {
    /// Nowhere (`/dev/null`): a server may print what clients sent it, and the console
    /// is readable by the account's operators (EC2 `GetConsoleOutput`). The default.
    #[default]
    Discard,
    /// The console. An exception to zero operator access that the image measures and
    /// `zoa check` reports.
    Console,
}

/// How to start the inference server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Program and arguments. Required, non-empty; `argv[0]` is an absolute
    /// path (there is no `PATH` lookup) and is also passed as argument 0.
    pub argv: Vec<String>,

    /// The complete environment of the server: nothing is inherited from
    /// zoa-init (whose environment holds whatever the kernel command line
    /// passed). Names are non-empty and contain no `=`. Default: empty.
    #[serde(default)]
    pub env: BTreeMap<String, String>,

    /// Working directory, absolute. Default `/`.
    #[serde(default = "default_cwd")]
    pub cwd: String,

    /// User id the server runs as: never 0. Its supplementary groups are
    /// cleared, every capability is dropped (bounding, ambient, inheritable,
    /// permitted, effective), `no_new_privs` is set and it leads its own
    /// session. Default 1000.
    #[serde(default = "default_server_id")]
    pub uid: u32,

    /// Group id the server runs as: never 0. Default 1000.
    #[serde(default = "default_server_id")]
    pub gid: u32,

    /// How many times in a row the server is restarted after it exits, with
    /// a delay of 1, 2, 4, … seconds (at most 30) before each; a run that
    /// lasted at least 60 seconds resets the count. Once exhausted zoa-init
    /// powers off. Default 3.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,

    /// Seconds between SIGTERM and SIGKILL when the machine is asked to stop
    /// (SIGTERM or Ctrl-Alt-Del to PID 1, the ACPI power button). Default 10.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_secs: u32,

    /// Where its standard output and error go: `discard` (default) or `console`.
    #[serde(default, skip_serializing_if = "is_default_log")]
    pub log: ServerLog,
}

// A configuration without `log` keeps its bytes (and an image its measurements) when
// nothing asks for the server's output.
fn is_default_log(log: &ServerLog) -> bool {
    *log == ServerLog::Discard
}

fn default_true() -> bool {
    true
}

fn default_cwd() -> String {
    "/".to_owned()
}

/// The server's default uid and gid. No `/etc/passwd` is needed: ids are numbers.
pub const DEFAULT_SERVER_ID: u32 = 1000;

fn default_server_id() -> u32 {
    DEFAULT_SERVER_ID
}

/// Restarts in a row before giving up, by default.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
/// Seconds between SIGTERM and SIGKILL, by default.
pub const DEFAULT_STOP_TIMEOUT_SECS: u32 = 10;

fn default_max_restarts() -> u32 {
    DEFAULT_MAX_RESTARTS
}

fn default_stop_timeout() -> u32 {
    DEFAULT_STOP_TIMEOUT_SECS
}

fn default_network_timeout() -> u32 {
    30
}

/// Where the verified model appears by default.
pub const DEFAULT_MODEL_PATH: &str = "/run/zoa/model/model.gguf";

fn default_model_path() -> String {
    DEFAULT_MODEL_PATH.to_owned()
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    TooLarge,
    /// Not JSON, or not the schema (unknown key, missing field, wrong type).
    Json(serde_json::Error),
    /// Parsed, but a value is not acceptable.
    Invalid {
        /// The field, e.g. `server.argv[0]`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io(e) => write!(f, "{e}"),
            ConfigError::TooLarge => write!(f, "larger than {MAX_CONFIG_BYTES} bytes"),
            ConfigError::Json(e) => write!(f, "{e}"),
            ConfigError::Invalid { field, problem } => write!(f, "{field}: {problem}"),
        }
    }
}

impl std::error::Error for ConfigError {}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

impl Config {
    /// Parses and validates a configuration from JSON text.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_json::from_str(text).map_err(ConfigError::Json)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = std::fs::File::open(path).map_err(ConfigError::Io)?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(ConfigError::Io)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge);
        }
        Config::from_json(&text)
    }

    /// The normalised form: pretty JSON with every default written out,
    /// `env` sorted by key, and a trailing newline.
    pub fn to_json_pretty(&self) -> String {
        // Serialising these plain structs cannot fail; fall back to the
        // compact form rather than panicking if it ever did.
        let mut out = serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{e}"));
        out.push('\n');
        out
    }

    /// Checks the values serde cannot check: see each field's documentation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_hostname(&self.hostname)?;
        let mut seen = BTreeSet::new();
        for (i, module) in self.modules.iter().enumerate() {
            let field = format!("modules[{i}]");
            check_absolute(&field, module)?;
            if !seen.insert(module.as_str()) {
                return Err(invalid(field, format!("{module:?} is listed twice")));
            }
        }
        if let Some(network) = &self.network {
            network.validate()?;
        }
        if let Some(unseal) = &self.unseal {
            unseal.validate()?;
            if self.network.is_none() {
                return Err(invalid(
                    "unseal",
                    "needs network (IMDS and KMS are reached over it)",
                ));
            }
        }
        if let Some(model) = &self.model {
            model.validate()?;
            if let Some(name) = &model.age_identity {
                self.check_model_identity(name)?;
            }
        }
        if let Some(server) = &self.server {
            server.validate()?;
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
            if self.network.is_none() || self.server.is_none() {
                return Err(invalid(
                    "tls",
                    "needs network and server (it forwards clients to the server)",
                ));
            }
        }
        Ok(())
    }
}

impl Tls {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.port == 0 {
            return Err(invalid(
                "tls.port",
                "must be 1 to 65535 (the image's serving port)",
            ));
        }
        if self.upstream_port == 0 || self.upstream_port == self.port {
            return Err(invalid(
                "tls.upstream_port",
                "must be 1 to 65535 and not tls.port",
            ));
        }
        if !(1..=64).contains(&self.max_attestations) {
            return Err(invalid("tls.max_attestations", "must be 1 to 64"));
        }
        if !(1..=65536).contains(&self.max_connections) {
            return Err(invalid("tls.max_connections", "must be 1 to 65536"));
        }
        Ok(())
    }
}

impl Config {
    /// The model's age identity must be one of the unsealed secrets, and one that is
    /// not also handed to the server as a variable (zoa-init keeps it to itself).
    fn check_model_identity(&self, name: &str) -> Result<(), ConfigError> {
        let spec = self
            .unseal
            .as_ref()
            .and_then(|u| u.secrets.iter().find(|s| s.name == name))
            .ok_or_else(|| {
                invalid(
                    "model.age_identity",
                    format!(
                        "{name:?} is not a secret in unseal.secrets (the key must be unsealed)"
                    ),
                )
            })?;
        if spec.env.is_some() {
            return Err(invalid(
                "model.age_identity",
                format!("secret {name:?} has an env variable: the model's key is never given to the server"),
            ));
        }
        Ok(())
    }

    /// The secret zoa-init keeps for itself (the model's age identity), if any.
    pub fn model_identity_secret(&self) -> Option<&str> {
        self.model.as_ref()?.age_identity.as_deref()
    }
}

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
const MAX_IFNAME_BYTES: usize = 15;

impl Network {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(name) = &self.interface {
            let ok = !name.is_empty()
                && name.len() <= MAX_IFNAME_BYTES
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(invalid(
                    "network.interface",
                    format!(
                        "{name:?} is not an interface name (1-15 letters, digits, '-', '_', '.')"
                    ),
                ));
            }
        }
        if self.timeout_secs == 0 || self.timeout_secs > 600 {
            return Err(invalid("network.timeout_secs", "must be 1 to 600"));
        }
        Ok(())
    }
}

impl Unseal {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.secrets.is_empty() {
            return Err(invalid("unseal.secrets", "must name at least one secret"));
        }
        let mut names = BTreeSet::new();
        for (i, secret) in self.secrets.iter().enumerate() {
            let field = format!("unseal.secrets[{i}]");
            let n = &secret.name;
            let ok = (1..=64).contains(&n.len())
                && !n.starts_with('.')
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
            if !ok {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("{n:?} is not 1-64 of a-z 0-9 - _ . (not starting with .)"),
                ));
            }
            if !names.insert(n.as_str()) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("{n:?} is listed twice"),
                ));
            }
            if let Some(env) = &secret.env {
                let ok = !env.is_empty()
                    && !env.starts_with(|c: char| c.is_ascii_digit())
                    && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    return Err(invalid(
                        format!("{field}.env"),
                        format!("{env:?} is not an environment variable name"),
                    ));
                }
            }
        }
        if self.timeout_secs == 0 || self.timeout_secs > 600 {
            return Err(invalid("unseal.timeout_secs", "must be 1 to 600"));
        }
        if let Some(e) = &self.endpoints {
            for (field, url) in [("imds", &e.imds), ("kms", &e.kms)] {
                if let Some(url) = url {
                    validate_base_url(url)
                        .map_err(|why| invalid(format!("unseal.endpoints.{field}"), why))?;
                }
            }
        }
        Ok(())
    }
}

/// `http://` or `https://`, then a host (and port) of printable characters, nothing else:
/// a base URL, not a path or a query.
fn validate_base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let ok = !host.is_empty()
        && url.len() <= 200
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{url:?} is not a base URL (scheme, host, optional port)"
        ))
    }
}

impl Model {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(device) = &self.device {
            check_absolute("model.device", device)?;
        }
        if self.size == 0 {
            return Err(invalid("model.size", "must be at least 1"));
        }
        let hex_ok = self.sha256.len() == 64
            && self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(invalid("model.sha256", "must be 64 lowercase hex digits"));
        }
        check_absolute("model.path", &self.path)?;
        let parent = Path::new(&self.path).parent().and_then(|p| p.to_str());
        if matches!(parent, None | Some("/")) || self.path.ends_with('/') {
            return Err(invalid(
                "model.path",
                "must name a file in a directory below / (that directory becomes its tmpfs)",
            ));
        }
        if self.path.split('/').any(|c| c == ".." || c == ".") {
            return Err(invalid("model.path", "must not contain '.' or '..'"));
        }
        Ok(())
    }
}

impl Server {
    fn validate(&self) -> Result<(), ConfigError> {
        let Some(program) = self.argv.first() else {
            return Err(invalid("server.argv", "must not be empty"));
        };
        check_absolute("server.argv[0]", program)?;
        for (i, arg) in self.argv.iter().enumerate().skip(1) {
            check_no_nul(&format!("server.argv[{i}]"), arg)?;
        }
        for (name, value) in &self.env {
            let field = format!("server.env.{name}");
            if name.is_empty() {
                return Err(invalid("server.env", "a variable name is empty"));
            }
            if name.contains('=') {
                return Err(invalid(field, "a variable name must not contain '='"));
            }
            check_no_nul(&field, name)?;
            check_no_nul(&field, value)?;
        }
        check_absolute("server.cwd", &self.cwd)?;
        // (uid_t)-1 means "unchanged" to setuid/setgid: refuse it.
        if self.uid == u32::MAX {
            return Err(invalid("server.uid", "4294967295 is not a valid user id"));
        }
        if self.gid == u32::MAX {
            return Err(invalid("server.gid", "4294967295 is not a valid group id"));
        }
        if self.uid == 0 {
            return Err(invalid("server.uid", "the server never runs as root (0)"));
        }
        if self.gid == 0 {
            return Err(invalid("server.gid", "the server never runs in group 0"));
        }
        if self.stop_timeout_secs == 0 || self.stop_timeout_secs > 3600 {
            return Err(invalid("server.stop_timeout_secs", "must be 1 to 3600"));
        }
        Ok(())
    }
}

fn check_no_nul(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.contains('\0') {
        return Err(invalid(field, "must not contain a NUL character"));
    }
    Ok(())
}

fn check_absolute(field: &str, value: &str) -> Result<(), ConfigError> {
    check_no_nul(field, value)?;
    if !value.starts_with('/') {
        return Err(invalid(
            field,
            format!("must be an absolute path, got {value:?}"),
        ));
    }
    Ok(())
}

fn validate_hostname(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(invalid("hostname", "must not be empty"));
    }
    if name.len() > MAX_HOSTNAME_BYTES {
        return Err(invalid(
            "hostname",
            format!("longer than {MAX_HOSTNAME_BYTES} bytes"),
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(invalid(
                "hostname",
                format!(
                    "{name:?} is not an RFC 1123 host name (labels of letters, digits and '-')"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
        "hostname": "llama-server",
        "print_pcrs": true,
        "dump_eventlog": false,
        "modules": ["/usr/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio.ko"],
        "server": {
            "argv": ["/usr/bin/llama-server", "--host", "0.0.0.0", "--port", "8080"],
            "env": {"HOME": "/tmp"},
            "cwd": "/",
            "uid": 1001, "gid": 1002,
            "max_restarts": 5, "stop_timeout_secs": 20
        },
        "network": {"interface": "eth0", "timeout_secs": 15},
        "model": {
            "device": "/dev/vdb", "size": 253113024,
            "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "path": "/run/zoa/model/gemma.gguf"
        }
    }"#;

    fn err(text: &str) -> String {
        match Config::from_json(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn full_example_parses() {
        let c = Config::from_json(FULL).unwrap();
        assert_eq!(c.hostname, "llama-server");
        assert!(c.print_pcrs);
        assert!(!c.dump_eventlog);
        assert_eq!(c.modules.len(), 1);
        let s = c.server.unwrap();
        assert_eq!(s.argv[0], "/usr/bin/llama-server");
        assert_eq!(s.env.get("HOME").map(String::as_str), Some("/tmp"));
        assert_eq!((s.cwd.as_str(), s.uid, s.gid), ("/", 1001, 1002));
        assert_eq!((s.max_restarts, s.stop_timeout_secs), (5, 20));
        let n = c.network.unwrap();
        assert_eq!((n.interface.as_deref(), n.timeout_secs), (Some("eth0"), 15));
        let m = c.model.unwrap();
        assert_eq!(m.device.as_deref(), Some("/dev/vdb"));
        assert_eq!(m.size, 253113024);
        assert_eq!(m.path, "/run/zoa/model/gemma.gguf");
    }

    #[test]
    fn defaults_apply() {
        let c = Config::from_json(r#"{"hostname": "probe"}"#).unwrap();
        assert!(c.print_pcrs);
        assert!(!c.dump_eventlog);
        assert!(c.modules.is_empty());
        assert!(c.server.is_none());
        let c = Config::from_json(r#"{"hostname": "h", "server": {"argv": ["/bin/x"]}}"#).unwrap();
        let s = c.server.unwrap();
        assert!(s.env.is_empty());
        assert_eq!((s.cwd.as_str(), s.uid, s.gid), ("/", 1000, 1000));
        assert_eq!((s.max_restarts, s.stop_timeout_secs), (3, 10));
        let c = Config::from_json(
            r#"{"hostname": "h", "network": {}, "model": {"size": 1, "sha256": "00000000000000000000000000000000000000000000000000000000000000ff"}}"#,
        )
        .unwrap();
        assert_eq!(c.network.unwrap().timeout_secs, 30);
        let m = c.model.unwrap();
        assert_eq!((m.device, m.path.as_str()), (None, DEFAULT_MODEL_PATH));
    }

    #[test]
    fn normalised_output_is_stable_and_reparses() {
        let c = Config::from_json(
            r#"{"hostname": "h", "server": {"argv": ["/bin/x"], "env": {"B": "2", "A": "1"}}}"#,
        )
        .unwrap();
        let text = c.to_json_pretty();
        assert_eq!(
            text,
            r#"{
  "hostname": "h",
  "print_pcrs": true,
  "dump_eventlog": false,
  "modules": [],
  "server": {
    "argv": [
      "/bin/x"
    ],
    "env": {
      "A": "1",
      "B": "2"
    },
    "cwd": "/",
    "uid": 1000,
    "gid": 1000,
    "max_restarts": 3,
    "stop_timeout_secs": 10
  }
}
"#
        );
        assert_eq!(Config::from_json(&text).unwrap(), c);
        // A probe config has no "server" key at all.
        let probe = Config::from_json(r#"{"hostname":"p"}"#).unwrap();
        assert!(!probe.to_json_pretty().contains("server"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(err(r#"{"hostname": "h", "shell": "/bin/sh"}"#).contains("unknown field `shell`"));
        assert!(
            err(r#"{"hostname": "h", "server": {"argv": ["/x"], "user": "nobody"}}"#)
                .contains("unknown field `user`")
        );
    }

    #[test]
    fn missing_fields_are_refused() {
        assert!(err(r#"{}"#).contains("missing field `hostname`"));
        assert!(err(r#"{"hostname": "h", "server": {}}"#).contains("missing field `argv`"));
    }

    #[test]
    fn wrong_types_and_syntax_are_refused() {
        assert!(err(r#"{"hostname": 3}"#).contains("invalid type"));
        assert!(err(r#"{"hostname": "h", "print_pcrs": "yes"}"#).contains("invalid type"));
        assert!(
            err(r#"{"hostname": "h", "server": {"argv": ["/x"], "uid": -1}}"#)
                .contains("invalid value")
        );
        assert!(err(r#"{"hostname": "h"} trailing"#).contains("trailing characters"));
        assert!(err(r#"{"hostname": "h", "hostname": "i"}"#).contains("duplicate field"));
        assert!(err("").contains("EOF"));
    }

    #[test]
    fn values_are_validated() {
        assert!(err(r#"{"hostname": ""}"#).starts_with("hostname: must not be empty"));
        assert!(err(r#"{"hostname": "bad name"}"#).starts_with("hostname:"));
        assert!(err(r#"{"hostname": "-bad"}"#).starts_with("hostname:"));
        assert!(err(r#"{"hostname": "a..b"}"#).starts_with("hostname:"));
        let long = "a".repeat(65);
        assert!(err(&format!(r#"{{"hostname": "{long}"}}"#)).contains("longer than 64"));
        assert!(Config::from_json(r#"{"hostname": "node-1.example"}"#).is_ok());

        assert!(err(r#"{"hostname": "h", "modules": ["virtio.ko"]}"#)
            .starts_with("modules[0]: must be an absolute path"));
        assert!(err(r#"{"hostname": "h", "modules": ["/a.ko", "/a.ko"]}"#)
            .starts_with("modules[1]: \"/a.ko\" is listed twice"));

        assert!(err(r#"{"hostname": "h", "server": {"argv": []}}"#)
            .starts_with("server.argv: must not be empty"));
        assert!(
            err(r#"{"hostname": "h", "server": {"argv": ["llama-server"]}}"#)
                .starts_with("server.argv[0]: must be an absolute path")
        );
        assert!(
            err(r#"{"hostname": "h", "server": {"argv": ["/x", "a\u0000b"]}}"#)
                .starts_with("server.argv[1]: must not contain a NUL")
        );
        assert!(
            err(r#"{"hostname": "h", "server": {"argv": ["/x"], "env": {"A=B": "1"}}}"#)
                .starts_with("server.env.A=B:")
        );
        assert!(
            err(r#"{"hostname": "h", "server": {"argv": ["/x"], "env": {"": "1"}}}"#)
                .starts_with("server.env:")
        );
        assert!(
            err(r#"{"hostname": "h", "server": {"argv": ["/x"], "cwd": "tmp"}}"#)
                .starts_with("server.cwd: must be an absolute path")
        );
        assert!(
            err(r#"{"hostname": "h", "server": {"argv": ["/x"], "uid": 4294967295}}"#)
                .starts_with("server.uid:")
        );
        assert!(
            err(r#"{"hostname": "h", "server": {"argv": ["/x"], "uid": 0}}"#)
                .contains("never runs as root")
        );
        assert!(
            err(r#"{"hostname": "h", "server": {"argv": ["/x"], "gid": 0}}"#)
                .starts_with("server.gid:")
        );
        assert!(
            err(r#"{"hostname": "h", "server": {"argv": ["/x"], "stop_timeout_secs": 0}}"#)
                .starts_with("server.stop_timeout_secs:")
        );
    }

    fn model(fields: &str) -> String {
        let digest = "ab".repeat(32);
        format!(r#"{{"hostname": "h", "model": {{"size": 1, "sha256": "{digest}"{fields}}}}}"#)
    }

    #[test]
    fn unseal_endpoints_are_base_urls() {
        let with = |e: &str| {
            format!(
                r#"{{"hostname": "h", "network": {{}}, "unseal": {{"secrets": [{{"name": "a"}}], "endpoints": {e}}}}}"#
            )
        };
        let c = Config::from_json(&with(
            r#"{"imds": "http://10.0.2.2:8000", "kms": "https://kms.test/"}"#,
        ))
        .unwrap();
        let e = c.unseal.unwrap().endpoints.unwrap();
        assert_eq!(e.imds.as_deref(), Some("http://10.0.2.2:8000"));
        for bad in [
            r#"{"kms": "ftp://x"}"#,
            r#"{"imds": "http://x/path"}"#,
            r#"{"imds": "http://"}"#,
        ] {
            let e = err(&with(bad));
            assert!(e.starts_with("unseal.endpoints."), "{bad}: {e}");
        }
        // Absent, the configuration serialises as before (images without it are unchanged).
        let plain = r#"{"hostname": "h", "network": {}, "unseal": {"secrets": [{"name": "a"}]}}"#;
        let c = Config::from_json(plain).unwrap();
        assert!(!serde_json::to_string(&c).unwrap().contains("endpoints"));
    }

    #[test]
    fn unseal_is_validated() {
        let ok = r#"{"hostname": "h", "network": {}, "unseal": {"secrets": [{"name": "api-key", "env": "API_KEY"}]}}"#;
        let c = Config::from_json(ok).unwrap();
        let u = c.unseal.unwrap();
        assert_eq!(
            (u.secrets[0].name.as_str(), u.timeout_secs),
            ("api-key", 60)
        );
        let no_net = r#"{"hostname": "h", "unseal": {"secrets": [{"name": "a"}]}}"#;
        assert!(err(no_net).starts_with("unseal: needs network"));
        let none = r#"{"hostname": "h", "network": {}, "unseal": {"secrets": []}}"#;
        assert!(err(none).starts_with("unseal.secrets: must name"));
        for bad in ["", ".x", "A", "a/b", "../x"] {
            let t = format!(
                r#"{{"hostname": "h", "network": {{}}, "unseal": {{"secrets": [{{"name": "{bad}"}}]}}}}"#
            );
            assert!(err(&t).starts_with("unseal.secrets[0].name:"), "{bad}");
        }
        let twice = r#"{"hostname": "h", "network": {}, "unseal": {"secrets": [{"name": "a"}, {"name": "a"}]}}"#;
        assert!(err(twice).starts_with("unseal.secrets[1].name:"));
        let env = r#"{"hostname": "h", "network": {}, "unseal": {"secrets": [{"name": "a", "env": "1X"}]}}"#;
        assert!(err(env).starts_with("unseal.secrets[0].env:"));
    }

    #[test]
    fn the_model_key_must_be_an_unsealed_secret_kept_from_the_server() {
        let digest = "ab".repeat(32);
        let with = |secrets: &str| {
            format!(
                r#"{{"hostname": "h", "network": {{}}, "unseal": {{"secrets": [{secrets}]}}, "model": {{"size": 1, "sha256": "{digest}", "age_identity": "model-key"}}}}"#
            )
        };
        let c = Config::from_json(&with(r#"{"name": "model-key"}, {"name": "api-key"}"#)).unwrap();
        assert_eq!(c.model_identity_secret(), Some("model-key"));
        assert!(err(&with(r#"{"name": "api-key"}"#))
            .starts_with("model.age_identity: \"model-key\" is not a secret in unseal.secrets"));
        assert!(err(&with(r#"{"name": "model-key", "env": "K"}"#))
            .contains("never given to the server"));
        assert!(err(&model(r#", "age_identity": "k""#)).starts_with("model.age_identity:"));
        assert_eq!(
            Config::from_json(&model(""))
                .unwrap()
                .model_identity_secret(),
            None
        );
    }

    #[test]
    fn model_and_network_are_validated() {
        assert!(Config::from_json(&model("")).is_ok());
        assert!(
            err(&model(r#", "device": "vdb""#)).starts_with("model.device: must be an absolute")
        );
        assert!(
            err(&model(r#", "path": "/model.gguf""#)).starts_with("model.path: must name a file")
        );
        assert!(err(&model(r#", "path": "/run/zoa/""#)).starts_with("model.path:"));
        assert!(err(&model(r#", "path": "/run/../etc/x""#)).contains("'..'"));
        let zero = r#"{"hostname": "h", "model": {"size": 0, "sha256": "x"}}"#;
        assert!(err(zero).starts_with("model.size:"));
        let upper = format!(
            r#"{{"hostname": "h", "model": {{"size": 1, "sha256": "{}"}}}}"#,
            "AB".repeat(32)
        );
        assert!(err(&upper).starts_with("model.sha256:"));
        assert!(
            err(r#"{"hostname": "h", "model": {"size": 1}}"#).contains("missing field `sha256`")
        );

        assert!(err(r#"{"hostname": "h", "network": {"interface": "a b"}}"#)
            .starts_with("network.interface:"));
        assert!(
            err(r#"{"hostname": "h", "network": {"interface": "abcdefghijklmnop"}}"#)
                .starts_with("network.interface:")
        );
        assert!(err(r#"{"hostname": "h", "network": {"timeout_secs": 0}}"#)
            .starts_with("network.timeout_secs:"));
        assert!(err(r#"{"hostname": "h", "network": {"dhcp": false}}"#)
            .contains("unknown field `dhcp`"));
    }

    #[test]
    fn load_reads_files_and_names_problems() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init.json");
        std::fs::write(&path, FULL).unwrap();
        assert_eq!(
            Config::load(&path).unwrap(),
            Config::from_json(FULL).unwrap()
        );
        let missing = Config::load(&dir.path().join("nope.json")).unwrap_err();
        assert!(matches!(missing, ConfigError::Io(_)));
        std::fs::write(&path, vec![b' '; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        assert!(matches!(Config::load(&path), Err(ConfigError::TooLarge)));
    }
}
