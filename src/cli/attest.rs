//! `zoa attest URL | --document FILE`: the verdict on an attestation document, with the
//! expectations built from signed releases, a signed log, or PCR values.

use anyhow::{Context, Result};

use super::args::{AttestArgs, ExpectArgs};
use super::exit::ExitStatus;
use super::output::print_json;
use std::time::Duration;
use zoa::attestation::check::{check, Expectation, ExpectedPcrs, Verdict};
use zoa::attestation::online::{self, Target};

/// Read one byte past the reader's bound, so an over-long file is refused by it, named.
const MAX_DOCUMENT_FILE: u64 = zoa::attestation::MAX_DOCUMENT_LEN as u64 + 1;

/// A document is this old at most, by default, when zoa fetches it itself.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

pub fn attest(args: &AttestArgs) -> Result<ExitStatus> {
    let mut expect = Expectation {
        at: args.at,
        max_age: args.max_age,
        nonce: args.nonce.as_ref().map(|n| n.0.clone()),
        spki_sha384: args.spki_sha384,
        ..expectation(&args.expect)?
    };
    let bytes = match (&args.url, &args.document) {
        (Some(url), _) => {
            let fetched = fetch_fresh(url, args.timeout, &mut expect)?;
            if !args.json {
                println!(
                    "connected to {url}: key spki-sha384 {}",
                    hex::encode(openssl::sha::sha384(&fetched.spki))
                );
            }
            fetched.document
        }
        (None, Some(path)) => zoa::fsio::read_at_most(path, MAX_DOCUMENT_FILE)
            .with_context(|| format!("{}: cannot read the document", path.display()))?,
        (None, None) => anyhow::bail!("give a server URL or a saved document"),
    };
    let report = check(&bytes, &expect, std::time::SystemTime::now());
    if args.json {
        print_json(&report)?;
    } else {
        for c in &report.checks {
            println!(
                "{} {:<12} {}",
                if c.ok { "ok " } else { "BAD" },
                c.name,
                c.detail
            );
        }
        match (&report.verdict, &report.release) {
            (Verdict::Ok, Some(r)) => {
                println!("verified: {} {} on {}", r.name, r.version, module(&report))
            }
            (Verdict::Ok, None) => println!("verified: {}", module(&report)),
            (v, _) => println!(
                "refused: {}",
                serde_json::to_value(v)?.as_str().unwrap_or("")
            ),
        }
    }
    Ok(status_of(report.verdict))
}

/// A document fetched from `url` with a random nonce; `expect` then also asks for that
/// nonce, the key the connection presented, and freshness.
fn fetch_fresh(
    url: &str,
    timeout: Duration,
    expect: &mut Expectation,
) -> Result<zoa::attestation::online::Fetched> {
    let target: Target = url.parse()?;
    let nonce = online::random_nonce()?;
    let fetched = online::fetch(&target, &nonce, timeout)?;
    *expect = online::for_exchange(expect, &nonce, &fetched.spki);
    expect.max_age.get_or_insert(DEFAULT_MAX_AGE);
    Ok(fetched)
}

fn module(report: &zoa::attestation::check::Report) -> String {
    format!(
        "{} at {}",
        report.module_id.as_deref().unwrap_or("?"),
        report.timestamp.as_deref().unwrap_or("?")
    )
}

fn read_root(path: &std::path::Path) -> Result<Vec<u8>> {
    let pem = zoa::fsio::read_at_most(path, 64 * 1024)
        .with_context(|| format!("{}: cannot read the root", path.display()))?;
    let cert = openssl::x509::X509::from_pem(&pem)
        .with_context(|| format!("{}: not a PEM certificate", path.display()))?;
    Ok(cert.to_der()?)
}

/// The trust anchor and the PCRs the flags ask for (warning when the root is not AWS's).
pub fn expectation(args: &ExpectArgs) -> Result<Expectation> {
    if let Some(root) = &args.root {
        eprintln!(
            "zoa: warning: trusting {} instead of the AWS Nitro root: documents it signs are not AWS's",
            root.display()
        );
    }
    Ok(Expectation {
        root: args.root.as_deref().map(read_root).transpose()?,
        pcrs: expected_pcrs(args)?,
        ..Expectation::default()
    })
}

/// The exit status for a verdict (the interface contract's table).
pub fn status_of(verdict: Verdict) -> ExitStatus {
    match verdict {
        Verdict::Ok => ExitStatus::OK,
        Verdict::Malformed | Verdict::BadSignature | Verdict::UntrustedChain | Verdict::Expired => {
            ExitStatus::NOT_GENUINE
        }
        Verdict::PcrMismatch => ExitStatus::NOT_EXPECTED_IMAGE,
        Verdict::KeyMismatch | Verdict::NonceMismatch | Verdict::Stale => ExitStatus::NOT_BOUND,
    }
}

/// The PCR sets any of which the document may match: each --release (verified), each
/// release of the --log (verified), and the --pcr values as one set.
fn expected_pcrs(args: &ExpectArgs) -> Result<Vec<ExpectedPcrs>> {
    let mut out = Vec::new();
    for dir in &args.release {
        let verified = args
            .pubkey
            .iter()
            .find_map(|k| zoa::release::verify(dir, k, None).ok())
            .with_context(|| {
                format!("{}: does not verify with the given --pubkey", dir.display())
            })?;
        out.push(bound(verified.manifest())?);
    }
    if let Some(log) = &args.log {
        let summary = zoa::release::log::verify(log, &args.pubkey)?;
        for r in &summary.releases {
            out.push(bound(&r.manifest)?);
        }
    }
    if !args.pcrs.is_empty() {
        out.push(ExpectedPcrs {
            release: None,
            pcrs: args.pcrs.iter().cloned().collect(),
        });
    }
    Ok(out)
}

/// The PCRs a release's KMS policy binds (PCR4 or PCR7, and PCR12).
fn bound(manifest: &zoa::release::manifest::Manifest) -> Result<ExpectedPcrs> {
    let binding = zoa::release::binding::binding_of(manifest)?;
    Ok(ExpectedPcrs {
        release: Some(binding.release.clone()),
        pcrs: binding.expected(),
    })
}
