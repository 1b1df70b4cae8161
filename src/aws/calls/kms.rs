//! KMS calls: the key bound to the release's PCRs, its alias and policy, its retirement.

use serde_json::{json, Value};
use std::time::Duration;

use super::{refuse_placeholders, Id, Tags};
use crate::aws::plan::Call;
use crate::aws::{api_error, AwsError, Clients};

/// `kms:CreateKey`: a symmetric key with its policy and tags.
#[derive(Debug, Clone)]
pub struct CreateKey {
    pub description: String,
    pub policy: Value,
    /// Needed when the policy leaves the caller no right to change it (a locked key).
    pub bypass_lockout_check: bool,
    pub tags: Tags,
}

/// A key KMS made.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub id: String,
    pub arn: Option<String>,
}

/// A key policy exactly as CreateKey and PutKeyPolicy send it.
fn policy_text(policy: &Value) -> String {
    policy.to_string()
}

/// The SHA-256 of [`policy_text`]: what `deploy.json` records for audits.
pub fn policy_sha256(policy: &Value) -> String {
    crate::digest::sha256_bytes(policy_text(policy).as_bytes())
}

impl CreateKey {
    pub const API: &'static str = "kms:CreateKey";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({
                "Description": self.description,
                "KeyUsage": "ENCRYPT_DECRYPT",
                "KeySpec": "SYMMETRIC_DEFAULT",
                "Policy": self.policy,
                "BypassPolicyLockoutSafetyCheck": self.bypass_lockout_check,
                "Tags": self.tags.iter().map(|(k, v)| json!({"TagKey": k, "TagValue": v})).collect::<Vec<_>>(),
            }),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<CreatedKey, AwsError> {
        refuse_placeholders(step, "the key policy", &self.policy)?;
        let policy = policy_text(&self.policy);
        let tags = self
            .tags
            .iter()
            .map(|(k, v)| {
                aws_sdk_kms::types::Tag::builder()
                    .tag_key(k)
                    .tag_value(v)
                    .build()
                    .map_err(|e| AwsError::step(step, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut attempt = 0;
        let out = loop {
            let req = c
                .kms
                .create_key()
                .description(&self.description)
                .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
                .key_spec(aws_sdk_kms::types::KeySpec::SymmetricDefault)
                .policy(&policy)
                .bypass_policy_lockout_safety_check(self.bypass_lockout_check)
                .set_tags(Some(tags.clone()));
            match req.send().await {
                Ok(out) => break out,
                // IAM is eventually consistent: KMS may not see a role created seconds ago
                // and calls the policy malformed. Retry for about a minute.
                Err(e)
                    if attempt < 6
                        && e.as_service_error()
                            .is_some_and(|s| s.is_malformed_policy_document_exception()) =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(2 * attempt)).await;
                }
                Err(e) => return Err(api_error(step, Self::API, e)),
            }
        };
        let meta = out
            .key_metadata()
            .ok_or_else(|| AwsError::step(step, "CreateKey returned no key metadata"))?;
        Ok(CreatedKey {
            id: meta.key_id().to_owned(),
            arn: meta.arn().map(str::to_owned),
        })
    }
}

/// `kms:CreateAlias`.
#[derive(Debug, Clone)]
pub struct CreateAlias {
    pub alias: String,
    pub key: Id,
}

impl CreateAlias {
    pub const API: &'static str = "kms:CreateAlias";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"AliasName": self.alias, "TargetKeyId": self.key.render()}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<(), AwsError> {
        c.kms
            .create_alias()
            .alias_name(&self.alias)
            .target_key_id(self.key.require(step)?)
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        Ok(())
    }
}

/// `kms:PutKeyPolicy`: the key's policy (KMS has one, `default`), replaced whole.
#[derive(Debug, Clone)]
pub struct PutKeyPolicy {
    pub key: Id,
    pub policy: Value,
}

impl PutKeyPolicy {
    pub const API: &'static str = "kms:PutKeyPolicy";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"KeyId": self.key.render(), "PolicyName": "default", "Policy": self.policy}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<(), AwsError> {
        refuse_placeholders(step, "the key policy", &self.policy)?;
        c.kms
            .put_key_policy()
            .key_id(self.key.require(step)?)
            .policy_name("default")
            .policy(policy_text(&self.policy))
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        Ok(())
    }
}

/// `kms:DeleteAlias`, when the alias exists (looked up with `kms:DescribeKey`).
#[derive(Debug, Clone)]
pub struct DeleteAlias {
    pub alias: String,
}

impl DeleteAlias {
    pub const API: &'static str = "kms:DeleteAlias";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"AliasName": self.alias}))
    }

    /// The id of the key the alias pointed at, if it existed.
    pub async fn send(&self, c: &Clients, step: &str) -> Result<Option<String>, AwsError> {
        let key_id = match c.kms.describe_key().key_id(&self.alias).send().await {
            Ok(out) => out.key_metadata().map(|m| m.key_id().to_owned()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(api_error(step, "kms:DescribeKey", e)),
        };
        c.kms
            .delete_alias()
            .alias_name(&self.alias)
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        Ok(key_id)
    }
}

/// `kms:ScheduleKeyDeletion` after a waiting period (7–30 days), unless the key is gone
/// or already pending deletion (looked up with `kms:DescribeKey`).
#[derive(Debug, Clone)]
pub struct ScheduleKeyDeletion {
    pub key: String,
    pub days: i32,
}

impl ScheduleKeyDeletion {
    pub const API: &'static str = "kms:ScheduleKeyDeletion";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"KeyId": self.key, "PendingWindowInDays": self.days}),
        )
    }

    /// The date KMS will delete the key, if this call scheduled it.
    pub async fn send(&self, c: &Clients, step: &str) -> Result<Option<String>, AwsError> {
        let meta = match c.kms.describe_key().key_id(&self.key).send().await {
            Ok(out) => out.key_metadata().cloned(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                None
            }
            Err(e) => return Err(api_error(step, "kms:DescribeKey", e)),
        };
        let live = meta
            .is_some_and(|m| m.key_state() != Some(&aws_sdk_kms::types::KeyState::PendingDeletion));
        if !live {
            return Ok(None);
        }
        let out = c
            .kms
            .schedule_key_deletion()
            .key_id(&self.key)
            .pending_window_in_days(self.days)
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        Ok(Some(
            out.deletion_date()
                .map(|d| d.to_string())
                .unwrap_or_default(),
        ))
    }
}

/// `kms:Encrypt` of a fresh data key under the deployment's key, with the encryption
/// context that names the deployment and the secret (what `zoa seal` and a rollout's
/// re-seal send). The data key is given to [`send`](Self::send) only, never to the spec,
/// so no plan or log can hold it.
#[derive(Debug, Clone)]
pub struct EncryptDataKey {
    pub key: String,
    pub context: std::collections::BTreeMap<String, String>,
}

/// What KMS answered: the key that encrypted (its ARN) and the data key's ciphertext.
#[derive(Debug, Clone)]
pub struct EncryptedDataKey {
    pub key_arn: String,
    pub ciphertext: Vec<u8>,
}

impl EncryptDataKey {
    pub const API: &'static str = "kms:Encrypt";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({
                "KeyId": self.key,
                "EncryptionContext": self.context,
                "Plaintext": "<a fresh 32-byte data key; the secret is encrypted with it here>",
            }),
        )
    }

    pub async fn send(
        &self,
        c: &Clients,
        step: &str,
        data_key: &[u8],
    ) -> Result<EncryptedDataKey, AwsError> {
        refuse_placeholders(step, "the key to seal under", &json!(self.key))?;
        let out = c
            .kms
            .encrypt()
            .key_id(&self.key)
            .plaintext(aws_smithy_types::Blob::new(data_key))
            .set_encryption_context(Some(self.context.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        let key_arn = out
            .key_id()
            .ok_or_else(|| AwsError::step(step, "Encrypt returned no key id"))?
            .to_owned();
        let ciphertext = out
            .ciphertext_blob()
            .ok_or_else(|| AwsError::step(step, "Encrypt returned no ciphertext"))?
            .as_ref()
            .to_vec();
        Ok(EncryptedDataKey {
            key_arn,
            ciphertext,
        })
    }
}
