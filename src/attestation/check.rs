//! The verdict on one attestation document against what the verifier expects (`zoa attest`,
//! the interface contract in DESIGN.md): genuine (parses, signature, chain to the trusted
//! root at the time that counts), the expected image (PCRs), and bound to this exchange
//! (fresh, the nonce echoed, the TLS key in `user_data`). Every check is reported, passed
//! or not; the verdict is the first failure in that order.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{AttestationError, Document, Kind, AWS_NITRO_ROOT_G1_SHA256};

/// The AWS Nitro Enclaves root certificate G1 (DER), the anchor of every document AWS
/// makes: data, copied from the `cabundle` of a real NitroTPM document (`testdata/`), and
/// checked against its published SHA-256 fingerprint ([`AWS_NITRO_ROOT_G1_SHA256`]).
pub const AWS_NITRO_ROOT_G1: &[u8] = include_bytes!("aws-nitro-root-g1.der");

/// The prefix of a `user_data` that binds a TLS key: then the SHA-384 of the server
/// certificate's SubjectPublicKeyInfo (DESIGN.md, "Attested TLS").
pub const TLS_BINDING_PREFIX: &[u8] = b"zoa-tls-spki-sha384:";

/// One set of acceptable PCR values (a signed release, or `--pcr` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPcrs {
    /// "name version" of the release they come from, when they do.
    pub release: Option<String>,
    /// PCR index → lowercase hex (SHA-384).
    pub pcrs: BTreeMap<u32, String>,
}

/// What the verifier expects of a document.
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    /// The trust anchor (DER); `None`: the AWS Nitro root.
    pub root: Option<Vec<u8>>,
    /// Check the chain at this time instead of the document's own.
    pub at: Option<SystemTime>,
    /// The document must be at most this old (against `now`).
    pub max_age: Option<Duration>,
    pub nonce: Option<Vec<u8>>,
    /// SHA-384 of the SubjectPublicKeyInfo `user_data` must bind.
    pub spki_sha384: Option<[u8; 48]>,
    /// Any one of these must match (all its PCRs); empty: PCRs are not checked.
    pub pcrs: Vec<ExpectedPcrs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    Malformed,
    BadSignature,
    UntrustedChain,
    Expired,
    PcrMismatch,
    KeyMismatch,
    NonceMismatch,
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The `--json` object of `zoa attest` (DESIGN.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub verified: bool,
    pub verdict: Verdict,
    pub kind: Option<Kind>,
    pub module_id: Option<String>,
    /// RFC 3339, UTC.
    pub timestamp: Option<String>,
    pub pcrs: BTreeMap<String, String>,
    pub user_data: Option<String>,
    pub nonce: Option<String>,
    pub public_key: Option<String>,
    pub release: Option<ReleaseName>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseName {
    pub name: String,
    pub version: String,
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map_or_else(|_| format!("{t:?}"), |ts| ts.to_string())
}

/// Checks `bytes` against `expect`, `now` being the verifier's clock.
pub fn check(bytes: &[u8], expect: &Expectation, now: SystemTime) -> Report {
    let mut r = Report {
        verified: false,
        verdict: Verdict::Ok,
        kind: None,
        module_id: None,
        timestamp: None,
        pcrs: BTreeMap::new(),
        user_data: None,
        nonce: None,
        public_key: None,
        release: None,
        checks: Vec::new(),
    };
    let verdict = run(bytes, expect, now, &mut r);
    r.verified = verdict == Verdict::Ok;
    r.verdict = verdict;
    r
}

fn run(bytes: &[u8], expect: &Expectation, now: SystemTime, r: &mut Report) -> Verdict {
    let record = |r: &mut Report, name, ok, detail: String| {
        r.checks.push(Check { name, ok, detail });
        ok
    };
    let signed = match super::parse(bytes) {
        Ok(s) => s,
        Err(e) => {
            record(r, "format", false, e.to_string());
            return Verdict::Malformed;
        }
    };
    describe(&signed.document, r);
    let kind = match signed.document.kind {
        super::Kind::NitroTpm => "a NitroTPM document (nitrotpm_pcrs)",
        super::Kind::Enclave => "a Nitro Enclave document (pcrs)",
    };
    record(
        r,
        "format",
        true,
        format!("COSE_Sign1, ES384, NSM payload: {kind}"),
    );
    if let Err(e) = signed.verify_signature() {
        record(r, "signature", false, e.to_string());
        return Verdict::BadSignature;
    }
    record(
        r,
        "signature",
        true,
        "ES384 by the leaf certificate's key".into(),
    );
    let root = expect.root.as_deref().unwrap_or(AWS_NITRO_ROOT_G1);
    let at = expect.at.unwrap_or_else(|| signed.document.timestamp());
    let anchor = if expect.root.is_some() {
        "the given root".to_owned()
    } else {
        format!("the AWS Nitro root (sha256 {AWS_NITRO_ROOT_G1_SHA256})")
    };
    match signed.verify_chain(root, at) {
        Ok(()) => record(
            r,
            "chain",
            true,
            format!("to {anchor}, valid at {}", rfc3339(at)),
        ),
        Err(AttestationError::Expired(why)) => {
            record(r, "chain", false, format!("at {}: {why}", rfc3339(at)));
            return Verdict::Expired;
        }
        Err(e) => {
            record(r, "chain", false, format!("to {anchor}: {e}"));
            return Verdict::UntrustedChain;
        }
    };
    let d = &signed.document;
    if !expect.pcrs.is_empty() {
        match expect.pcrs.iter().find(|e| pcrs_match(d, e)) {
            Some(e) => {
                let which = e
                    .release
                    .clone()
                    .unwrap_or_else(|| "the given values".into());
                r.release = e.release.as_deref().and_then(release_name);
                let list: Vec<String> = e.pcrs.keys().map(|i| format!("PCR{i}")).collect();
                record(
                    r,
                    "pcrs",
                    true,
                    format!("{} equal {which}", list.join(", ")),
                );
            }
            None => {
                record(r, "pcrs", false, pcr_mismatch_detail(d, &expect.pcrs));
                return Verdict::PcrMismatch;
            }
        }
    }
    if let Some(max) = expect.max_age {
        let age = now.duration_since(d.timestamp()).unwrap_or(Duration::ZERO);
        let ok = age <= max && d.timestamp() <= now + Duration::from_secs(60);
        let detail = format!("{}s old, at most {}s", age.as_secs(), max.as_secs());
        if !record(r, "freshness", ok, detail) {
            return Verdict::Stale;
        }
    }
    if let Some(nonce) = &expect.nonce {
        let ok = d.nonce.as_deref() == Some(nonce.as_slice());
        let detail = format!(
            "expected {}, document has {}",
            hex::encode(nonce),
            d.nonce.as_deref().map_or("none".into(), hex::encode)
        );
        if !record(r, "nonce", ok, detail) {
            return Verdict::NonceMismatch;
        }
    }
    if let Some(spki) = &expect.spki_sha384 {
        let mut want = TLS_BINDING_PREFIX.to_vec();
        want.extend_from_slice(spki);
        let ok = d.user_data.as_deref() == Some(want.as_slice());
        let detail = format!("user_data binds TLS key sha384 {}", hex::encode(spki));
        if !record(r, "key-binding", ok, detail) {
            return Verdict::KeyMismatch;
        }
    }
    Verdict::Ok
}

fn describe(d: &Document, r: &mut Report) {
    r.kind = Some(d.kind);
    r.module_id = Some(d.module_id.clone());
    r.timestamp = Some(rfc3339(d.timestamp()));
    r.pcrs = d
        .pcrs
        .iter()
        .map(|(i, v)| (i.to_string(), hex::encode(v)))
        .collect();
    r.user_data = d.user_data.as_deref().map(hex::encode);
    r.nonce = d.nonce.as_deref().map(hex::encode);
    r.public_key = d.public_key.as_deref().map(hex::encode);
}

/// The PCRs of `e` the document does not hold (absent, or another value).
fn differing(d: &Document, e: &ExpectedPcrs) -> Vec<u32> {
    e.pcrs
        .iter()
        .filter(|(i, want)| {
            !d.pcrs
                .get(i)
                .is_some_and(|got| hex::encode(got).eq_ignore_ascii_case(want))
        })
        .map(|(i, _)| *i)
        .collect()
}

fn pcrs_match(d: &Document, e: &ExpectedPcrs) -> bool {
    differing(d, e).is_empty()
}

/// Which PCRs differ from the closest expectation (the one with fewest differences).
fn pcr_mismatch_detail(d: &Document, expected: &[ExpectedPcrs]) -> String {
    let Some(closest) = expected.iter().min_by_key(|e| differing(d, e).len()) else {
        return "nothing expected".into();
    };
    let which = closest
        .release
        .clone()
        .unwrap_or_else(|| "the given values".into());
    let list: Vec<String> = differing(d, closest)
        .iter()
        .map(|i| {
            format!(
                "PCR{i} is {}, {which} has {}",
                d.pcrs.get(i).map_or("absent".into(), hex::encode),
                closest.pcrs[i]
            )
        })
        .collect();
    format!(
        "matches none of {} expectation(s): {}",
        expected.len(),
        list.join("; ")
    )
}

fn release_name(label: &str) -> Option<ReleaseName> {
    let (name, version) = label.rsplit_once(' ')?;
    Some(ReleaseName {
        name: name.into(),
        version: version.into(),
    })
}
