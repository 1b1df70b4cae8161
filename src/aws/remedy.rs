//! What a user can do about a refusal, said in the library's terms. The command line says
//! it in its own words (flags, commands) in `cli::hints`, so a library error never names a
//! flag and a renamed flag is changed in one place.

use std::path::PathBuf;

/// The way out of an [`AwsError::Refused`](super::AwsError::Refused). Not
/// `non_exhaustive`: a new remedy must get its words in `cli::hints` (the match there has
/// no catch-all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// Sign the release in `dir` again, covering a UEFI data blob (Secure Boot keys).
    SignWithUefiData { dir: PathBuf },
    /// Give the model file the image pins (`encrypted`: the age file, not the plaintext).
    GiveModel { encrypted: bool },
    /// Seal the secret `name` (again) with the key of the deployment recorded in `dir`.
    Seal { dir: Option<PathBuf>, name: String },
    /// The envelope was sealed as `sealed_as`: give it under that name, or seal it again
    /// under the name it was given as.
    SecretName { given: String, sealed_as: String },
    /// Seal every secret under one key.
    SealUnderOneKey,
    /// No key exists yet to seal for: deploy once without secrets (that makes the key),
    /// seal with the key recorded in `dir`, deploy again with the secrets.
    DeployKeyFirst { dir: PathBuf },
    /// Give either sealed secrets or raw user data, not both.
    SecretsOrUserData,
    /// Deploy under another deployment name.
    AnotherName,
    /// Remove the existing deployment, or deploy under another name.
    DestroyOrAnotherName,
    /// Name the subnets to use.
    GiveSubnet,
    /// A rollout needs an Auto Scaling group: deploy the new release as a fleet (or under
    /// another name), then destroy the old deployment.
    DeployAsFleet,
    /// Give the plaintext of these secrets, to be sealed under the new key.
    Reseal { names: Vec<String> },
    /// Nothing is re-sealed: do not give plaintexts.
    NoReseal,
    /// Point the rollout at the release directory that was deployed (it holds the record).
    DeployedReleaseDir,
}
