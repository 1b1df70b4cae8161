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

    /// The inference server. Optional: without it zoa-init prints what it was
    /// asked to print and powers off (a probe image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Server>,
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

    /// User id the server runs as. Default 0 (root); a later release drops
    /// privileges by default.
    #[serde(default)]
    pub uid: u32,

    /// Group id the server runs as (supplementary groups are cleared when
    /// running as root). Default 0.
    #[serde(default)]
    pub gid: u32,
}

fn default_true() -> bool {
    true
}

fn default_cwd() -> String {
    "/".to_owned()
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
        if let Some(server) = &self.server {
            server.validate()?;
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
            "uid": 0, "gid": 0
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
        assert_eq!((s.cwd.as_str(), s.uid, s.gid), ("/", 0, 0));
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
        assert_eq!((s.cwd.as_str(), s.uid, s.gid), ("/", 0, 0));
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
    "uid": 0,
    "gid": 0
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
