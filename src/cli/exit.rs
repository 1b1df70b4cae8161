//! Exit statuses, and the one line an error prints on stderr.

use std::process::ExitCode;

use zoa::image::BuildError;
use zoa::release::ReleaseError;

/// Exit status of a policy violation (distinct from other errors, for CI gates).
pub const EXIT_POLICY: u8 = 3;
/// Exit status when a real event log disagrees with the prediction.
pub const EXIT_EVENTLOG_MISMATCH: u8 = 4;
/// Exit statuses of `zoa verify` verdicts.
const EXIT_BAD_SIGNATURE: u8 = 10;
const EXIT_ARTIFACT_MISMATCH: u8 = 11;
const EXIT_MEASUREMENT_MISMATCH: u8 = 12;
const EXIT_NOT_REPRODUCIBLE: u8 = 13;
/// Exit status of `zoa diff --exit-code` when the two sides differ.
pub const EXIT_DIFFERENT: u8 = 5;

/// Prints `err` as one line on stderr and returns its exit status.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("zoa: error: {}", one_line(err));
    ExitCode::from(exit_code_of(err))
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

fn exit_code_of(err: &anyhow::Error) -> u8 {
    if err
        .downcast_ref::<zoa::measure::compare::Mismatch>()
        .is_some()
    {
        return EXIT_EVENTLOG_MISMATCH;
    }
    let release_error = err.downcast_ref::<ReleaseError>().or_else(|| {
        match err.downcast_ref::<zoa::aws::AwsError>() {
            Some(zoa::aws::AwsError::Release(e)) => Some(e),
            _ => None,
        }
    });
    if let Some(e) = release_error {
        match e {
            ReleaseError::BadSignature(_) => return EXIT_BAD_SIGNATURE,
            ReleaseError::ArtifactMismatch(_) => return EXIT_ARTIFACT_MISMATCH,
            ReleaseError::MeasurementMismatch(_) => return EXIT_MEASUREMENT_MISMATCH,
            ReleaseError::NotReproducible(_) => return EXIT_NOT_REPRODUCIBLE,
            _ => {}
        }
    }
    match err.downcast_ref::<BuildError>() {
        Some(BuildError::Policy(_)) => EXIT_POLICY,
        _ => 1,
    }
}
