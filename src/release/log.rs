//! An append-only log of reference releases (`measurements/releases.log`).
//!
//! One JSON object per line. Each entry carries the release's exact manifest bytes and its
//! minisign signature, its position, and the sha256 of the previous line, so rewriting,
//! dropping or reordering history breaks the chain: `zoa log verify` checks every link and
//! every signature.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::keys;
use super::manifest::{Manifest, MANIFEST_FILE, SIGNATURE_FILE};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors of the release log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{file}: line {line}: {message}")]
    Broken {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Io { file: String, message: String },
}

/// One log entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    /// sha256 of the previous line's bytes (without its newline); GENESIS for the first.
    pub prev: String,
    pub name: String,
    pub version: String,
    pub manifest_sha256: String,
    /// The exact bytes of release.json (UTF-8 JSON).
    pub manifest: String,
    /// The text of release.json.minisig.
    pub signature: String,
}

/// A verified log.
#[derive(Debug, Serialize)]
pub struct LogSummary {
    pub entries: u64,
    pub head: String,
    pub releases: Vec<LoggedRelease>,
}

/// One release in a verified log.
#[derive(Debug, Serialize)]
pub struct LoggedRelease {
    pub seq: u64,
    pub name: String,
    pub version: String,
    pub manifest_sha256: String,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The verified manifest (its measurements, for verifiers of attestations).
    #[serde(skip)]
    pub manifest: Manifest,
}

fn broken(file: &Path, line: usize, message: impl Into<String>) -> LogError {
    LogError::Broken {
        file: file.display().to_string(),
        line,
        message: message.into(),
    }
}

/// Verifies the chain and every signature; each entry must be signed by one of
/// `public_keys` (several when the signing key was rotated).
pub fn verify(log: &Path, public_keys: &[PathBuf]) -> Result<LogSummary, LogError> {
    let text = std::fs::read_to_string(log).map_err(|e| LogError::Io {
        file: log.display().to_string(),
        message: e.to_string(),
    })?;
    let mut prev = GENESIS.to_owned();
    let mut releases = Vec::new();
    let mut count = 0u64;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            return Err(broken(log, n, "empty line"));
        }
        let entry: Entry = serde_json::from_str(line)
            .map_err(|e| broken(log, n, format!("not a log entry: {e}")))?;
        if entry.seq != count {
            return Err(broken(
                log,
                n,
                format!(
                    "sequence number {} where {count} was expected (reordered or dropped entries)",
                    entry.seq
                ),
            ));
        }
        if entry.prev != prev {
            return Err(broken(
                log,
                n,
                "does not chain to the previous line (history was rewritten)",
            ));
        }
        let digest = crate::digest::sha256_bytes(entry.manifest.as_bytes());
        if digest != entry.manifest_sha256 {
            return Err(broken(
                log,
                n,
                "manifest_sha256 does not match the manifest it carries",
            ));
        }
        let verified = keys::verify_any(public_keys, entry.manifest.as_bytes(), &entry.signature)
            .map_err(|e| broken(log, n, format!("signature: {e}")))?;
        let manifest = Manifest::parse(MANIFEST_FILE, entry.manifest.as_bytes())
            .map_err(|e| broken(log, n, e.to_string()))?;
        if manifest.name != entry.name || manifest.version != entry.version {
            return Err(broken(log, n, "name or version differ from the manifest"));
        }
        if let Some(Ok(c)) = super::manifest::parse_trusted_comment(&verified.trusted_comment) {
            if c.manifest_sha256 != digest {
                return Err(broken(
                    log,
                    n,
                    "the signature's trusted comment names another manifest",
                ));
            }
        }
        releases.push(LoggedRelease {
            seq: entry.seq,
            name: entry.name,
            version: entry.version,
            manifest_sha256: entry.manifest_sha256,
            key_id: verified.key_id,
            manifest,
        });
        prev = crate::digest::sha256_bytes(line.as_bytes());
        count += 1;
    }
    Ok(LogSummary {
        entries: count,
        head: prev,
        releases,
    })
}

/// Appends a signed release directory to the log (after verifying the log and the release,
/// each with any of `public_keys`).
pub fn append(log: &Path, release_dir: &Path, public_keys: &[PathBuf]) -> Result<Entry, LogError> {
    let (prev, seq) = if log.exists() {
        let s = verify(log, public_keys)?;
        (s.head, s.entries)
    } else {
        (GENESIS.to_owned(), 0)
    };
    let read = |name: &str| {
        let p = release_dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| LogError::Io {
            file: p.display().to_string(),
            message: e.to_string(),
        })
    };
    let manifest_text = read(MANIFEST_FILE)?;
    let signature = read(SIGNATURE_FILE)?;
    keys::verify_any(public_keys, manifest_text.as_bytes(), &signature).map_err(|e| {
        LogError::Io {
            file: release_dir.join(SIGNATURE_FILE).display().to_string(),
            message: e.to_string(),
        }
    })?;
    let manifest =
        Manifest::parse(MANIFEST_FILE, manifest_text.as_bytes()).map_err(|e| LogError::Io {
            file: release_dir.join(MANIFEST_FILE).display().to_string(),
            message: e.to_string(),
        })?;
    let entry = Entry {
        seq,
        prev,
        name: manifest.name,
        version: manifest.version,
        manifest_sha256: crate::digest::sha256_bytes(manifest_text.as_bytes()),
        manifest: manifest_text,
        signature,
    };
    let line = serde_json::to_string(&entry).map_err(|e| LogError::Io {
        file: log.display().to_string(),
        message: e.to_string(),
    })?;
    let mut content = std::fs::read(log).unwrap_or_default();
    content.extend_from_slice(line.as_bytes());
    content.push(b'\n');
    crate::fsio::write_atomic(log, &content, crate::fsio::PUBLIC).map_err(|e| LogError::Io {
        file: log.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(entry)
}
