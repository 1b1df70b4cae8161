//! The KMS key policy of a deployment (and of `zoa policy DIR`): who administers the key,
//! who may seal, and the attested PCRs that may unseal.

use serde_json::json;
use std::path::PathBuf;

use super::{
    validate_deployment_name, verify_release, DeployOptions, Deployment, KeyAdmits, Names,
};
use crate::aws::calls::Id;
use crate::aws::policy::{self, KeyPolicyInput, PcrBinding};
use crate::aws::state::DeployState;
use crate::aws::AwsError;
use crate::release::binding::binding_of;

/// The key policy's parameters; administrators default to the account root and sealers
/// to the administrators.
pub(super) fn key_policy_input(
    partition: &str,
    account_id: &str,
    role_name: &str,
    admins: &[String],
    sealers: &[String],
    bindings: Vec<PcrBinding>,
    lock: bool,
) -> KeyPolicyInput {
    let admins = if admins.is_empty() {
        vec![format!("arn:{partition}:iam::{account_id}:root")]
    } else {
        admins.to_vec()
    };
    let sealers = if sealers.is_empty() {
        admins.clone()
    } else {
        sealers.to_vec()
    };
    KeyPolicyInput {
        partition: partition.to_owned(),
        account_id: account_id.to_owned(),
        admin_principals: admins,
        instance_role_arn: format!("arn:{partition}:iam::{account_id}:role/{role_name}"),
        sealer_principals: sealers,
        bindings,
        lock,
        vpc_endpoint: None,
    }
}

/// What `zoa policy DIR` renders.
#[derive(Debug, Clone)]
pub struct PolicyRequest {
    pub dir: PathBuf,
    pub pubkey: PathBuf,
    pub name: Option<String>,
    pub partition: String,
    pub account_id: String,
    /// For the placeholder key ARN before a deploy made the key.
    pub region: Option<String>,
    pub admin_principals: Vec<String>,
    pub sealer_principals: Vec<String>,
    pub lock: bool,
    /// A private deploy's KMS endpoint (default: the deploy record's, when private).
    pub vpc_endpoint: Option<String>,
}

/// The documents a deploy of a verified release would create: the KMS key policy, the
/// instance role's trust policy and its only permission policy (with the key's ARN when a
/// deploy record has it, else a placeholder ARN).
pub fn render_policies(req: &PolicyRequest) -> Result<serde_json::Value, AwsError> {
    let options = DeployOptions::new(&req.dir, &req.pubkey);
    let release = verify_release(&options)?;
    let (manifest, digest) = (release.manifest(), release.manifest_sha256());
    let deployment = req.name.clone().unwrap_or_else(|| manifest.name.clone());
    validate_deployment_name(&deployment)?;
    let names = Names::new(&deployment, digest);
    let mut input = key_policy_input(
        &req.partition,
        &req.account_id,
        &names.role,
        &req.admin_principals,
        &req.sealer_principals,
        vec![binding_of(manifest)?],
        req.lock,
    );
    let recorded = DeployState::load(&req.dir)?;
    input.vpc_endpoint = req.vpc_endpoint.clone().or_else(|| {
        recorded
            .as_ref()
            .filter(|s| s.private)
            .and_then(|s| s.vpc_endpoint_id.clone())
    });
    let key_alias = recorded
        .as_ref()
        .and_then(|s| s.key_alias.clone())
        .unwrap_or(names.key_alias);
    let key_arn = recorded.and_then(|s| s.key_arn).unwrap_or_else(|| {
        format!(
            "arn:{}:kms:{}:{}:key/created-by-deploy",
            req.partition,
            req.region.as_deref().unwrap_or("region"),
            req.account_id
        )
    });
    let endpoint_policy = match &input.vpc_endpoint {
        Some(_) => Some(policy::kms_endpoint_policy(
            &key_arn,
            &input.instance_role_arn,
        )?),
        None => None,
    };
    let mut docs = json!({
        "deployment": deployment,
        "release": manifest.label(),
        "manifest_sha256": digest,
        "key_alias": key_alias,
        "key_policy": policy::key_policy(&input)?,
        "bypass_policy_lockout_safety_check": policy::needs_lockout_bypass(&input),
        "instance_role": names.role,
        "instance_role_trust_policy": policy::instance_role_trust_policy(),
        "instance_role_policy": policy::instance_role_policy(&key_arn)?,
    });
    if let (Some(endpoint), Some(doc)) = (&input.vpc_endpoint, endpoint_policy) {
        docs["vpc_endpoint"] = json!(endpoint);
        docs["kms_endpoint_policy"] = doc;
    }
    Ok(docs)
}

impl Deployment {
    pub(super) fn key_policy_input(&self) -> KeyPolicyInput {
        self.key_policy_input_for(KeyAdmits::New)
    }

    /// The key policy's parameters admitting the given releases.
    pub(crate) fn key_policy_input_for(&self, admits: KeyAdmits) -> KeyPolicyInput {
        let old = self
            .options
            .rollout_from
            .as_ref()
            .map(|r| r.binding.clone());
        let bindings = match (admits, old) {
            (KeyAdmits::Old, Some(old)) => vec![old],
            // Secure Boot releases signed by the same db key with the same UefiData have
            // the same PCR7 and PCR12: the new release is admitted already, and a policy
            // listing the same values twice is refused.
            (KeyAdmits::Both, Some(old)) if old.same_pcrs(&self.binding) => {
                vec![self.binding.clone()]
            }
            (KeyAdmits::Both, Some(old)) => vec![old, self.binding.clone()],
            _ => vec![self.binding.clone()],
        };
        let mut input = key_policy_input(
            &self.account.partition,
            &self.account.account_id,
            &self.names.role,
            &self.options.admin_principals,
            &self.options.sealer_principals,
            bindings,
            self.options.lock_policy,
        );
        input.vpc_endpoint = self.state.private.then(|| match self.vpc_endpoint_id() {
            Id::Known(id) => id,
            Id::Pending(_) => policy::PENDING_VPC_ENDPOINT_ID.to_owned(),
        });
        input
    }

    /// The rendered KMS key policy.
    pub fn key_policy(&self) -> Result<serde_json::Value, AwsError> {
        Ok(policy::key_policy(&self.key_policy_input())?)
    }

    /// The rendered key policy admitting `admits`.
    pub fn key_policy_admitting(&self, admits: KeyAdmits) -> Result<serde_json::Value, AwsError> {
        Ok(policy::key_policy(&self.key_policy_input_for(admits))?)
    }

    pub(super) fn key_arn_or_placeholder(&self) -> String {
        self.found
            .key
            .as_ref()
            .map(|(_, arn)| arn.clone())
            .or_else(|| self.state.key_arn.clone())
            // A well-formed stand-in: the real ARN is only known once CreateKey answers.
            .unwrap_or_else(|| {
                format!(
                    "arn:{}:kms:{}:{}:key/{}",
                    self.account.partition,
                    self.region,
                    self.account.account_id,
                    policy::PENDING_KEY_ID
                )
            })
    }

    pub(super) fn key_description(&self) -> String {
        format!(
            "zoa {}: data keys only for instances that booted {} (manifest {})",
            self.deployment,
            self.binding.release,
            self.release.manifest_sha256()
        )
    }
}
