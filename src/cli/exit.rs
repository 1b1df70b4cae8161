//! Every exit status zoa uses, defined once: the commands return them, failures are
//! classified into them, `zoa --help` prints them, and the README lists the same table.

use std::error::Error;
use std::fmt::Write as _;
use std::process::ExitCode;

use zoa::image::BuildError;
use zoa::measure::compare::Mismatch;
use zoa::release::ReleaseError;

/// One exit status: its number, a stable short name, and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: u8,
    pub name: &'static str,
    pub meaning: &'static str,
}

impl ExitStatus {
    pub const OK: ExitStatus = ExitStatus {
        code: 0,
        name: "ok",
        meaning: "success",
    };
    pub const ERROR: ExitStatus = ExitStatus {
        code: 1,
        name: "error",
        meaning: "any other failure (the line on stderr says what and where)",
    };
    pub const USAGE: ExitStatus = ExitStatus {
        code: 2,
        name: "usage",
        meaning: "the command line is wrong (unknown flag, missing argument)",
    };
    pub const POLICY_VIOLATION: ExitStatus = ExitStatus {
        code: 3,
        name: "policy-violation",
        meaning: "the shell-free policy is violated (check, build, verify --rebuild)",
    };
    pub const PREDICTION_MISMATCH: ExitStatus = ExitStatus {
        code: 4,
        name: "prediction-mismatch",
        meaning: "measure --eventlog, boot: PCRs disagree with the prediction",
    };
    pub const DIFFERENT: ExitStatus = ExitStatus {
        code: 5,
        name: "different",
        meaning: "diff --exit-code: the two sides differ",
    };
    pub const BAD_SIGNATURE: ExitStatus = ExitStatus {
        code: 10,
        name: "bad-signature",
        meaning: "the release's signature or trusted comment does not verify",
    };
    pub const ARTIFACT_MISMATCH: ExitStatus = ExitStatus {
        code: 11,
        name: "artifact-mismatch",
        meaning: "a file of the release differs from the signed manifest",
    };
    pub const MEASUREMENT_MISMATCH: ExitStatus = ExitStatus {
        code: 12,
        name: "measurement-mismatch",
        meaning: "re-measuring the UKI gives other PCRs than the signed manifest",
    };
    pub const NOT_REPRODUCIBLE: ExitStatus = ExitStatus {
        code: 13,
        name: "not-reproducible",
        meaning: "verify --rebuild: the rebuild differs from the release",
    };
    pub const NOT_GENUINE: ExitStatus = ExitStatus {
        code: 20,
        name: "not-genuine",
        meaning: "attest: malformed, bad signature, untrusted or expired chain",
    };
    pub const NOT_EXPECTED_IMAGE: ExitStatus = ExitStatus {
        code: 21,
        name: "pcr-mismatch",
        meaning: "attest: a genuine document of another image (PCRs)",
    };
    pub const NOT_BOUND: ExitStatus = ExitStatus {
        code: 22,
        name: "not-bound",
        meaning: "attest: genuine, but stale, another nonce or another TLS key",
    };
    pub const FLAGGED: ExitStatus = ExitStatus {
        code: 30,
        name: "flagged",
        meaning: "audit: at least one finding",
    };
}

/// The table, in numeric order. A status that is not here is not used.
pub const TABLE: [ExitStatus; 14] = [
    ExitStatus::OK,
    ExitStatus::ERROR,
    ExitStatus::USAGE,
    ExitStatus::POLICY_VIOLATION,
    ExitStatus::PREDICTION_MISMATCH,
    ExitStatus::DIFFERENT,
    ExitStatus::BAD_SIGNATURE,
    ExitStatus::ARTIFACT_MISMATCH,
    ExitStatus::MEASUREMENT_MISMATCH,
    ExitStatus::NOT_REPRODUCIBLE,
    ExitStatus::NOT_GENUINE,
    ExitStatus::NOT_EXPECTED_IMAGE,
    ExitStatus::NOT_BOUND,
    ExitStatus::FLAGGED,
];

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(status.code)
    }
}

/// The table as `zoa --help` prints it after the options.
pub fn help_text() -> String {
    let width = TABLE.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut text = String::from("Exit status:\n");
    for s in TABLE {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "  {:>2}  {:<width$}  {}", s.code, s.name, s.meaning);
    }
    text
}

/// Prints `err` as one line on stderr and returns its exit status.
pub fn report(err: &anyhow::Error) -> ExitCode {
    match super::hints::hint(err) {
        Some(h) => eprintln!("zoa: error: {}; {h}", one_line(err)),
        None => eprintln!("zoa: error: {}", one_line(err)),
    }
    classify(err).into()
}

/// The error chain on one line: "context: cause: cause".
fn one_line(err: &anyhow::Error) -> String {
    let parts: Vec<String> = err
        .chain()
        .map(|e| e.to_string().replace('\n', " "))
        .collect();
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        // thiserror's transparent wrappers repeat their source; print each message once.
        if !out.iter().any(|o| o.contains(&p)) {
            out.push(p);
        }
    }
    out.join(": ")
}

/// The exit status of a failure: the verdict of the outermost error in the chain that
/// has one (a verdict wrapped in context or in another error still counts), else
/// [`ExitStatus::ERROR`].
pub fn classify(err: &anyhow::Error) -> ExitStatus {
    err.chain().find_map(verdict).unwrap_or(ExitStatus::ERROR)
}

/// The verdict one error carries, looking inside zoa's wrapper errors: their
/// `#[error(transparent)]` variants pass `source()` through to the wrapped error's own
/// source, so the wrapped error itself never appears in the chain.
fn verdict(err: &(dyn Error + 'static)) -> Option<ExitStatus> {
    if err.is::<Mismatch>() {
        return Some(ExitStatus::PREDICTION_MISMATCH);
    }
    if let Some(e) = err.downcast_ref::<ReleaseError>() {
        return release_verdict(e);
    }
    if let Some(e) = err.downcast_ref::<BuildError>() {
        return build_verdict(e);
    }
    #[cfg(feature = "aws")]
    if let Some(zoa::aws::AwsError::Release(e)) = err.downcast_ref::<zoa::aws::AwsError>() {
        return release_verdict(e);
    }
    None
}

fn build_verdict(err: &BuildError) -> Option<ExitStatus> {
    match err {
        BuildError::Policy(_) => Some(ExitStatus::POLICY_VIOLATION),
        _ => None,
    }
}

/// Every `ReleaseError` is listed: a new variant must be given a verdict, or none.
fn release_verdict(err: &ReleaseError) -> Option<ExitStatus> {
    match err {
        ReleaseError::BadSignature(_) => Some(ExitStatus::BAD_SIGNATURE),
        ReleaseError::ArtifactMismatch(_) => Some(ExitStatus::ARTIFACT_MISMATCH),
        ReleaseError::MeasurementMismatch(_) => Some(ExitStatus::MEASUREMENT_MISMATCH),
        ReleaseError::NotReproducible(_) => Some(ExitStatus::NOT_REPRODUCIBLE),
        ReleaseError::Build(e) => build_verdict(e),
        ReleaseError::Manifest(_)
        | ReleaseError::Key(_)
        | ReleaseError::Measure(_)
        | ReleaseError::Io { .. }
        | ReleaseError::UefiData { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use std::collections::BTreeSet;

    fn policy_violation() -> BuildError {
        BuildError::Policy(Box::default())
    }

    #[test]
    fn codes_and_names_are_unique_and_in_order() {
        let codes: Vec<u8> = TABLE.iter().map(|s| s.code).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted, "codes unique, in numeric order");
        let names: BTreeSet<&str> = TABLE.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), TABLE.len(), "names unique");
        assert!(TABLE.iter().all(|s| !s.meaning.is_empty()));
        // clap exits with 2 on a usage error, Rust's ExitCode::FAILURE is 1.
        assert_eq!(ExitStatus::USAGE.code, 2);
        assert_eq!(ExitStatus::ERROR.code, 1);
    }

    #[test]
    fn every_release_verdict_is_mapped() {
        let verdicts = [
            (
                ReleaseError::BadSignature("x".into()),
                ExitStatus::BAD_SIGNATURE,
            ),
            (
                ReleaseError::ArtifactMismatch("x".into()),
                ExitStatus::ARTIFACT_MISMATCH,
            ),
            (
                ReleaseError::MeasurementMismatch("x".into()),
                ExitStatus::MEASUREMENT_MISMATCH,
            ),
            (
                ReleaseError::NotReproducible("x".into()),
                ExitStatus::NOT_REPRODUCIBLE,
            ),
            (
                ReleaseError::Build(policy_violation()),
                ExitStatus::POLICY_VIOLATION,
            ),
        ];
        for (err, status) in verdicts {
            assert!(TABLE.contains(&status));
            let what = err.to_string();
            assert_eq!(classify(&anyhow::Error::new(err)), status, "{what}");
        }
        let plain = ReleaseError::Io {
            file: "f".into(),
            message: "m".into(),
        };
        assert_eq!(classify(&anyhow::Error::new(plain)), ExitStatus::ERROR);
    }

    #[test]
    fn verdicts_are_found_anywhere_in_the_chain() {
        // zoa verify --rebuild: the policy violation inside the release error.
        let rebuild = anyhow::Error::new(ReleaseError::Build(policy_violation()));
        assert_eq!(classify(&rebuild), ExitStatus::POLICY_VIOLATION);
        // zoa deploy: the verdict inside the AWS error, under added context.
        #[cfg(feature = "aws")]
        {
            let deploy = anyhow::Error::new(zoa::aws::AwsError::Release(
                ReleaseError::ArtifactMismatch("uki.efi".into()),
            ))
            .context("deploying");
            assert_eq!(classify(&deploy), ExitStatus::ARTIFACT_MISMATCH);
        }
        // An event log mismatch under the file name's context.
        let mismatch = Mismatch {
            pcr: zoa::measure::Pcr::PCR4,
            position: 1,
            explanation: "x".into(),
        };
        let eventlog = anyhow::Error::new(mismatch).context("log.bin");
        assert_eq!(classify(&eventlog), ExitStatus::PREDICTION_MISMATCH);
        // A verdict that is another error's source.
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] BuildError);
        let nested = anyhow::Error::new(Outer(policy_violation()));
        assert_eq!(classify(&nested), ExitStatus::POLICY_VIOLATION);
        // Nothing with a verdict: a plain error.
        let plain = Err::<(), _>(std::io::Error::other("disk full")).context("writing");
        assert_eq!(classify(&plain.unwrap_err()), ExitStatus::ERROR);
    }

    #[test]
    fn the_readme_lists_the_same_table() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let rows: Vec<&str> = readme
            .lines()
            .skip_while(|l| *l != "| status | name | meaning |")
            .skip(2) // the header and its rule
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert_eq!(rows.len(), TABLE.len(), "README exit status rows: {rows:?}");
        for (row, s) in rows.iter().zip(TABLE) {
            let start = format!("| {} | `{}` | ", s.code, s.name);
            assert!(
                row.starts_with(&start),
                "README has {row:?}, the table {s:?}"
            );
        }
    }

    #[test]
    fn help_lists_every_status() {
        let help = help_text();
        for s in TABLE {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{} ", s.code)))
                .unwrap_or_else(|| panic!("no line for {}", s.code));
            assert!(line.contains(s.name) && line.contains(s.meaning), "{line}");
        }
    }
}
