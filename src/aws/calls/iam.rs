//! IAM calls: the instances' role, its instance profile and its one inline policy.

use serde_json::{json, Value};

use super::{outcome, tags_json, Outcome, Tags};
use crate::aws::plan::Call;
use crate::aws::{api_error, AwsError, Clients};

fn iam_tags(tags: &Tags) -> Result<Vec<aws_sdk_iam::types::Tag>, AwsError> {
    tags.iter()
        .map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| AwsError::step("tags", e.to_string()))
        })
        .collect()
}

/// `iam:CreateRole`. `AlreadyThere` means a role of that name exists: the caller decides
/// whether it is the deployment's (by its tags).
#[derive(Debug, Clone)]
pub struct CreateRole {
    pub name: String,
    pub trust_policy: Value,
    pub description: String,
    pub tags: Tags,
}

impl CreateRole {
    pub const API: &'static str = "iam:CreateRole";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"RoleName": self.name, "AssumeRolePolicyDocument": self.trust_policy, "Description": self.description, "Tags": tags_json(&self.tags)}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let out = c
            .iam
            .create_role()
            .role_name(&self.name)
            .assume_role_policy_document(self.trust_policy.to_string())
            .description(&self.description)
            .set_tags(Some(iam_tags(&self.tags)?))
            .send()
            .await;
        outcome(out, step, Self::API, |code| code == "EntityAlreadyExists")
    }
}

/// `iam:CreateInstanceProfile`; one that exists already (an earlier attempt) is kept.
#[derive(Debug, Clone)]
pub struct CreateInstanceProfile {
    pub name: String,
    pub tags: Tags,
}

impl CreateInstanceProfile {
    pub const API: &'static str = "iam:CreateInstanceProfile";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"InstanceProfileName": self.name, "Tags": tags_json(&self.tags)}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let out = c
            .iam
            .create_instance_profile()
            .instance_profile_name(&self.name)
            .set_tags(Some(iam_tags(&self.tags)?))
            .send()
            .await;
        outcome(out, step, Self::API, |code| code == "EntityAlreadyExists")
    }
}

/// `iam:AddRoleToInstanceProfile`; a profile holds one role, so "limit exceeded" means
/// an earlier attempt added it.
#[derive(Debug, Clone)]
pub struct AddRoleToInstanceProfile {
    pub profile: String,
    pub role: String,
}

impl AddRoleToInstanceProfile {
    pub const API: &'static str = "iam:AddRoleToInstanceProfile";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"InstanceProfileName": self.profile, "RoleName": self.role}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let out = c
            .iam
            .add_role_to_instance_profile()
            .instance_profile_name(&self.profile)
            .role_name(&self.role)
            .send()
            .await;
        outcome(out, step, Self::API, |code| code == "LimitExceeded")
    }
}

/// `iam:PutRolePolicy`: a role's inline policy, replaced whole.
#[derive(Debug, Clone)]
pub struct PutRolePolicy {
    pub role: String,
    pub name: String,
    pub document: Value,
}

impl PutRolePolicy {
    pub const API: &'static str = "iam:PutRolePolicy";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"RoleName": self.role, "PolicyName": self.name, "PolicyDocument": self.document}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<(), AwsError> {
        super::refuse_placeholders(step, "the policy", &self.document)?;
        c.iam
            .put_role_policy()
            .role_name(&self.role)
            .policy_name(&self.name)
            .policy_document(self.document.to_string())
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        Ok(())
    }
}

/// `iam:RemoveRoleFromInstanceProfile`.
#[derive(Debug, Clone)]
pub struct RemoveRoleFromInstanceProfile {
    pub profile: String,
    pub role: String,
}

impl RemoveRoleFromInstanceProfile {
    pub const API: &'static str = "iam:RemoveRoleFromInstanceProfile";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"InstanceProfileName": self.profile, "RoleName": self.role}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let answer = c
            .iam
            .remove_role_from_instance_profile()
            .instance_profile_name(&self.profile)
            .role_name(&self.role)
            .send()
            .await;
        outcome(answer, step, Self::API, |code| code == "NoSuchEntity")
    }
}

/// `iam:DeleteInstanceProfile`; one already gone is no error.
#[derive(Debug, Clone)]
pub struct DeleteInstanceProfile {
    pub name: String,
}

impl DeleteInstanceProfile {
    pub const API: &'static str = "iam:DeleteInstanceProfile";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"InstanceProfileName": self.name}))
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let answer = c
            .iam
            .delete_instance_profile()
            .instance_profile_name(&self.name)
            .send()
            .await;
        outcome(answer, step, Self::API, |code| code == "NoSuchEntity")
    }
}

/// `iam:DeleteRolePolicy`: one inline policy of a role.
#[derive(Debug, Clone)]
pub struct DeleteRolePolicy {
    pub role: String,
    pub name: String,
}

impl DeleteRolePolicy {
    pub const API: &'static str = "iam:DeleteRolePolicy";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"RoleName": self.role, "PolicyName": self.name}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let answer = c
            .iam
            .delete_role_policy()
            .role_name(&self.role)
            .policy_name(&self.name)
            .send()
            .await;
        outcome(answer, step, Self::API, |code| code == "NoSuchEntity")
    }
}

/// `iam:DeleteRole` (its inline policies and instance profiles must be gone first).
#[derive(Debug, Clone)]
pub struct DeleteRole {
    pub name: String,
}

impl DeleteRole {
    pub const API: &'static str = "iam:DeleteRole";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"RoleName": self.name}))
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let answer = c.iam.delete_role().role_name(&self.name).send().await;
        outcome(answer, step, Self::API, |code| code == "NoSuchEntity")
    }
}
