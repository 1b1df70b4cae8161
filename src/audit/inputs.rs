//! What an audit is given: deploy directories (a signed release and its `deploy.json`)
//! and the signed release log, each verified before anything in it is believed.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::scope::Deploy;
use super::KnownRelease;
use crate::aws::state::DeployState;
use crate::aws::AwsError;
use crate::release::log::LogError;

#[derive(Debug, Error)]
pub enum InputError {
    #[error("{dir}: no deploy record ({file}): deploy it first, or audit without it")]
    NotDeployed { dir: String, file: String },
    #[error("{dir}: the release does not verify with any given public key: {why}")]
    Unverified { dir: String, why: String },
    #[error("{dir}: deploy.json is of release manifest {recorded}, the directory holds {found}")]
    OtherRelease {
        dir: String,
        recorded: String,
        found: String,
    },
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The resources of the deploy of the signed release in `dir`, with the regions the
/// release is signed for.
pub fn deploy_scope(dir: &Path, public_keys: &[PathBuf]) -> Result<Deploy, InputError> {
    let state = DeployState::load(dir)?.ok_or_else(|| InputError::NotDeployed {
        dir: dir.display().to_string(),
        file: DeployState::path(dir).display().to_string(),
    })?;
    let mut why = Vec::new();
    let verified = public_keys
        .iter()
        .find_map(|k| match crate::release::verify(dir, k, None) {
            Ok(v) => Some(v),
            Err(e) => {
                why.push(e.to_string());
                None
            }
        });
    let verified = verified.ok_or_else(|| InputError::Unverified {
        dir: dir.display().to_string(),
        why: why.join("; "),
    })?;
    if verified.manifest_sha256() != state.release.manifest_sha256 {
        return Err(InputError::OtherRelease {
            dir: dir.display().to_string(),
            recorded: state.release.manifest_sha256.clone(),
            found: verified.manifest_sha256().to_owned(),
        });
    }
    Ok(Deploy::from_state(&state, &verified.manifest().regions))
}

/// The PCRs each release of the verified log binds (PCR4 or PCR7, and PCR12). A release
/// whose PCRs were not predicted binds nothing and matches no record.
pub fn known_releases(
    log: &Path,
    public_keys: &[PathBuf],
) -> Result<Vec<KnownRelease>, InputError> {
    let summary = crate::release::log::verify(log, public_keys)?;
    Ok(summary
        .releases
        .iter()
        .filter_map(|r| crate::release::binding::binding_of(&r.manifest).ok())
        .map(|b| KnownRelease {
            pcrs: b.expected(),
            release: b.release,
        })
        .collect())
}
