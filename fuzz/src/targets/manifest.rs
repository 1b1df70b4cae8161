//! Release manifests, trusted comments and release logs come from whoever hands zoa a
//! release directory or a log: parsing must refuse malformed text cleanly and never panic,
//! and a manifest that parses must survive its own canonical serialization unchanged.
//!
//! Input: a mode byte, then the file. Mode 0 (mod 3): `release.json`; 1: a trusted comment
//! (the minisign signature's line); 2: a release log, checked against a fixed key.
use std::io::Write;

use zoa::release::manifest::{parse_trusted_comment, Manifest};

/// A throwaway public key (the same as the signature target's), so log entries get past
/// key loading into signature and manifest checks.
const PUBLIC_KEY: &str = "untrusted comment: minisign public key 3E9A6B240D2D13BF
RWS/Ey0NJGuaPvYY/v7aCRpLsisqIshUzqLptqo4dMyGKjDXZZU7RlCK
";

pub fn run(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(m) = Manifest::parse("release.json", bytes) {
                let canonical = m.to_canonical_json().expect("a parsed manifest serializes");
                let again =
                    Manifest::parse("release.json", &canonical).expect("canonical bytes parse");
                assert_eq!(m, again, "canonical serialization changed the manifest");
                assert_eq!(
                    again.to_canonical_json().expect("serializes"),
                    canonical,
                    "canonical serialization is not stable"
                );
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(bytes) {
                let _ = parse_trusted_comment(text);
            }
        }
        _ => {
            let (Ok(mut log), Ok(mut key)) = (
                tempfile::NamedTempFile::new(),
                tempfile::NamedTempFile::new(),
            ) else {
                return;
            };
            if log.write_all(bytes).is_err() || key.write_all(PUBLIC_KEY.as_bytes()).is_err() {
                return;
            }
            let _ = zoa::release::log::verify(log.path(), &[key.path().to_owned()]);
        }
    }
}
