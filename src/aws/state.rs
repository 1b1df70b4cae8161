//! The deploy record, `DIR/deploy/deploy.json`: what a deploy created, written after every
//! resource, so a rerun after a crash or Ctrl-C resumes instead of duplicating, and
//! `zoa destroy` knows what to remove. AWS tags on every resource are the second record:
//! a resource created just before a crash (response lost, not yet written here) is found
//! by its tags or name and adopted.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::policy::BootMode;
use super::AwsError;

pub const STATE_DIR: &str = "deploy";
pub const STATE_FILE: &str = "deploy.json";
/// `DIR/deploy/sealed/NAME.json`: envelopes `zoa rollout` re-sealed under a new key.
pub const SEALED_DIR: &str = "sealed";
const STATE_FORMAT: &str = "zoa-deploy/1";

/// Tag keys zoa puts on everything it creates.
pub const TAG_DEPLOYMENT: &str = "zoa:deployment";
pub const TAG_RELEASE: &str = "zoa:release";
pub const TAG_MANIFEST: &str = "zoa:manifest-sha256";
pub const TAG_DISK: &str = "zoa:disk-sha256";
/// On the model-weights snapshot: the SHA-256 of the model file (the image pins it).
pub const TAG_MODEL: &str = "zoa:model-sha256";
/// On single instances: the SHA-256 of the user data they booted with.
pub const TAG_USER_DATA: &str = "zoa:user-data-sha256";

/// What a deploy created (or adopted), by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployState {
    pub format: String,
    /// The deployment name (resource names and the `zoa:deployment` tag).
    pub deployment: String,
    pub release: ReleaseRef,
    pub account_id: String,
    pub region: String,
    /// How the AMI boots, and so which PCRs the key binds; absent for standard boot
    /// (records from before Secure Boot mode read as standard).
    #[serde(default, skip_serializing_if = "BootMode::is_standard")]
    pub boot_mode: BootMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// The snapshot of the model weights (`--model`), the AMI's second volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_snapshot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// The SHA-256 of the key policy exactly as zoa last wrote it (CreateKey, or a
    /// rollout's final PutKeyPolicy), for audits comparing the live policy with it; absent
    /// for a key zoa adopted without having recorded its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_policy_sha256: Option<String>,
    /// For an age-encrypted model: the SHA-256 of the model it decrypts to (the image's
    /// pin), so that a rollout to a release pinning the same model reuses the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_decrypts_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
    /// Set once the role's inline KMS policy is in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_policy_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_alias: Option<String>,
    #[serde(default)]
    pub key_locked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
    /// The serving port, and the ranges admitted to it, as deployed (a rollout keeps
    /// them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_cidr: Vec<String>,
    /// `--private`: instances without public addresses, the key usable only through the
    /// deployment's KMS interface endpoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// A private deploy's KMS interface endpoint (`vpce-…`), as the key policy names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_endpoint_id: Option<String>,
    /// The endpoint's security group (HTTPS from the VPC only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_security_group_id: Option<String>,
    /// How clients reach the serving port: absent (the security group's own ranges), or
    /// `privatelink` (an internal Network Load Balancer behind a VPC endpoint service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<String>,
    /// The principals allowed to connect an endpoint to the endpoint service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_service_id: Option<String>,
    /// What consumers give `CreateVpcEndpoint` (`com.amazonaws.vpce.REGION.vpce-svc-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling_group: Option<String>,
    /// SHA-256 of the user data the instances run with (`--secret` or `--user-data`),
    /// recorded once they do (for a fleet: after the instance refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_sha256: Option<String>,
    /// The sealed secrets in that user data: name → SHA-256 of the envelope file. A
    /// rollout to a new key must re-seal exactly these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

/// The release a deploy is of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRef {
    pub name: String,
    pub version: String,
    pub manifest_sha256: String,
}

impl DeployState {
    pub fn new(deployment: &str, release: ReleaseRef, account_id: &str, region: &str) -> Self {
        DeployState {
            format: STATE_FORMAT.to_owned(),
            deployment: deployment.to_owned(),
            release,
            account_id: account_id.to_owned(),
            region: region.to_owned(),
            ..DeployState::default()
        }
    }

    /// `DIR/deploy/deploy.json`.
    pub fn path(release_dir: &Path) -> PathBuf {
        release_dir.join(STATE_DIR).join(STATE_FILE)
    }

    /// Reads the record, `None` when there is none.
    pub fn load(release_dir: &Path) -> Result<Option<DeployState>, AwsError> {
        let path = Self::path(release_dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AwsError::file(&path, e)),
        };
        let state: DeployState = serde_json::from_slice(&bytes)
            .map_err(|e| AwsError::file(&path, format!("not a zoa deploy record: {e}")))?;
        if state.format != STATE_FORMAT {
            return Err(AwsError::file(
                &path,
                format!(
                    "deploy record format {:?} is not {STATE_FORMAT}",
                    state.format
                ),
            ));
        }
        Ok(Some(state))
    }

    /// Writes the record atomically (temp file + rename): it is either the old or the new.
    pub fn save(&self, release_dir: &Path) -> Result<(), AwsError> {
        let path = Self::path(release_dir);
        let dir = release_dir.join(STATE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| AwsError::file(&dir, e))?;
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|e| AwsError::file(&path, e.to_string()))?;
        bytes.push(b'\n');
        crate::fsio::write_atomic(&path, &bytes, crate::fsio::PRIVATE)
            .map_err(|e| AwsError::file(&path, e))
    }

    /// `DIR/deploy/sealed/NAME.json`.
    pub fn sealed_path(release_dir: &Path, name: &str) -> PathBuf {
        release_dir
            .join(STATE_DIR)
            .join(SEALED_DIR)
            .join(format!("{name}.json"))
    }

    /// Removes the record and the envelopes sealed next to it (after a complete destroy,
    /// or from the old release after a rollout: their key is gone or going).
    pub fn remove(release_dir: &Path) -> Result<(), AwsError> {
        let path = Self::path(release_dir);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AwsError::file(&path, e)),
        }
        let sealed = release_dir.join(STATE_DIR).join(SEALED_DIR);
        match std::fs::remove_dir_all(&sealed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AwsError::file(&sealed, e)),
        }
        // The directory goes too when nothing else is in it.
        let _ = std::fs::remove_dir(release_dir.join(STATE_DIR));
        Ok(())
    }

    /// Refuses to continue a record of another deploy: another release, account or region.
    pub fn check_matches(
        &self,
        release_dir: &Path,
        deployment: &str,
        release: &ReleaseRef,
        account_id: &str,
        region: &str,
    ) -> Result<(), AwsError> {
        let path = Self::path(release_dir);
        let mismatch = |what: &str, have: &str, want: &str| {
            AwsError::file(
                &path,
                format!(
                    "records a deploy with {what} {have}, not {want}: run `zoa destroy` with the \
                     configuration of that deploy first, or move the record away"
                ),
            )
        };
        if self.deployment != deployment {
            return Err(mismatch("deployment name", &self.deployment, deployment));
        }
        if self.release.manifest_sha256 != release.manifest_sha256 {
            return Err(mismatch(
                "release manifest",
                &self.release.manifest_sha256,
                &release.manifest_sha256,
            ));
        }
        if self.account_id != account_id {
            return Err(mismatch("account", &self.account_id, account_id));
        }
        if self.region != region {
            return Err(mismatch("region", &self.region, region));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> ReleaseRef {
        ReleaseRef {
            name: "demo".into(),
            version: "1".into(),
            manifest_sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn round_trip_and_atomic_save() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DeployState::load(dir.path()).unwrap(), None);
        let mut s = DeployState::new("demo", release(), "123456789012", "us-east-1");
        s.snapshot_id = Some("snap-1".into());
        s.instance_ids = vec!["i-1".into()];
        s.save(dir.path()).unwrap();
        s.secrets.insert("api-key".into(), "cd".repeat(32));
        s.save(dir.path()).unwrap();
        assert_eq!(DeployState::load(dir.path()).unwrap(), Some(s.clone()));
        DeployState::remove(dir.path()).unwrap();
        assert!(!dir.path().join(STATE_DIR).exists());
    }

    #[test]
    fn another_deploy_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = DeployState::new("demo", release(), "123456789012", "us-east-1");
        let err = s
            .check_matches(dir.path(), "demo", &release(), "123456789012", "eu-west-1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("region us-east-1, not eu-west-1"), "{err}");
        assert!(s
            .check_matches(dir.path(), "demo", &release(), "123456789012", "us-east-1")
            .is_ok());
    }

    #[test]
    fn malformed_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(STATE_DIR)).unwrap();
        std::fs::write(DeployState::path(dir.path()), b"{not json").unwrap();
        let err = DeployState::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("deploy.json") && err.contains("not a zoa deploy record"),
            "{err}"
        );
    }
}
