//! The deploy as typed steps: each step's specs are built here once, rendered by
//! [`Deployment::plan`] and sent by `apply`, so what `--plan` shows is what runs.

use std::collections::BTreeSet;

use crate::aws::calls::autoscaling::{CreateAutoScalingGroup, StartInstanceRefresh};
use crate::aws::calls::ebs::SnapshotUpload;
use crate::aws::calls::ec2::{
    CreateLaunchTemplate, CreateVpcEndpoint, InstanceSpec, NewDefaultTemplateVersion,
    RegisterImage, RunInstances, SetVpcEndpointPolicy, TemplateUserData, TerminateInstances,
    Volume,
};
use crate::aws::calls::iam::{
    AddRoleToInstanceProfile, CreateInstanceProfile, CreateRole, PutRolePolicy,
};
use crate::aws::calls::kms::{CreateAlias, CreateKey};
use crate::aws::calls::{Id, Tags};
use crate::aws::plan::{Action, Call, Plan, Step};
use crate::aws::policy::{self, BootMode};
use crate::aws::state::{TAG_DISK, TAG_MODEL, TAG_USER_DATA};
use crate::aws::AwsError;

use super::{
    Deployment, ModelSpec, DISK_NAME, MODEL_DEVICE, REFRESH_MIN_HEALTHY_PERCENTAGE,
    ROLE_POLICY_NAME, ROOT_DEVICE,
};

/// A deterministic ClientToken (at most 64 ASCII characters): the same deploy of the same
/// release sends the same token, so EC2 answers a retried call with the first result.
///
/// The image and security group ids are part of it: a retry or a rerun after a crash uses
/// the same ones, while a deploy after `zoa destroy` has new ones, and so a new token (EC2
/// answers a repeated token with the original, possibly terminated, instance).
fn client_token(deployment: &str, manifest_sha256: &str, what: &str, ids: &[&str]) -> String {
    let digest = crate::digest::sha256_bytes(
        format!(
            "{deployment}\n{manifest_sha256}\n{what}\n{}",
            ids.join("\n")
        )
        .as_bytes(),
    );
    format!("zoa-{}", &digest[..48])
}

/// A step: `Keep` when the resource exists, else `Create` with its calls.
pub(super) fn step(
    name: &'static str,
    resource: String,
    existing: Option<String>,
    calls: Vec<Call>,
) -> Step {
    match existing {
        Some(id) => Step {
            step: name,
            resource,
            action: Action::Keep(id),
            calls: Vec::new(),
        },
        None => Step {
            step: name,
            resource,
            action: Action::Create,
            calls,
        },
    }
}

impl Deployment {
    /// Every step, with the calls of those that create something.
    pub fn plan(&self) -> Result<Plan, AwsError> {
        let f = &self.found;
        let mut steps = Vec::new();
        let disk = self.disk_upload_spec();
        steps.push(step(
            "snapshot",
            format!(
                "EBS snapshot of a GPT disk whose EFI System Partition holds the verified {} (sha256 {}){}",
                crate::release::manifest::UKI_FILE,
                self.release
                    .manifest()
                    .artifact(crate::release::manifest::UKI_FILE)
                    .map(|a| a.sha256.as_str())
                    .unwrap_or_default(),
                match &self.disk {
                    Some(d) => format!("; the disk image is {} bytes, sha256 {}", d.size, d.sha256),
                    None => String::new(),
                }
            ),
            f.snapshot.clone(),
            disk.map(|d| d.calls()).unwrap_or_default(),
        ));
        if let Some(m) = &self.model {
            let file = m
                .file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the model".to_owned());
            steps.push(step(
                "model-snapshot",
                format!(
                    "EBS snapshot of {file} ({} bytes, sha256 {}), the AMI's {MODEL_DEVICE}",
                    m.size, m.sha256
                ),
                f.model_snapshot.clone(),
                self.model_upload_spec(m).calls(),
            ));
        }
        steps.push(step(
            "image",
            format!(
                "AMI {} (UEFI{}, NitroTPM 2.0, IMDSv2 only)",
                self.names.image,
                match (&self.uefi_data, self.binding.mode) {
                    (Some(_), BootMode::SecureBoot) =>
                        " Secure Boot with the release's signed UefiData",
                    (Some(_), BootMode::Standard) =>
                        " with the release's signed UefiData, no PK: Secure Boot off",
                    (None, _) => "",
                }
            ),
            f.image.clone(),
            vec![self.register_image_spec().call()],
        ));
        steps.push(step(
            "role",
            format!("IAM role {} for the instances", self.names.role),
            f.role.then(|| self.names.role.clone()),
            vec![self.create_role_spec().call()],
        ));
        let (profile, add_role) = self.instance_profile_specs();
        steps.push(step(
            "instance-profile",
            format!("instance profile {}", self.names.instance_profile),
            f.instance_profile
                .then(|| self.names.instance_profile.clone()),
            vec![profile.call(), add_role.call()],
        ));
        if self.state.private {
            steps.extend(self.endpoint_steps());
        }
        steps.push(step(
            "kms-key",
            format!(
                "KMS key {} releasing data keys only to {} of {}",
                self.names.key_alias,
                self.binding
                    .mode
                    .bound_pcrs()
                    .map(|n| format!("PCR{n}"))
                    .join("/"),
                self.binding.release
            ),
            f.key.as_ref().map(|(id, _)| id.clone()),
            vec![self.create_key_spec()?.call()],
        ));
        steps.push(step(
            "kms-alias",
            format!("alias {}", self.names.key_alias),
            f.key_alias.then(|| self.names.key_alias.clone()),
            vec![self.create_alias_spec().call()],
        ));
        if self.state.private {
            let wanted = self.endpoint_policy_spec()?;
            let in_place = self
                .found
                .vpc_endpoint_policy
                .as_ref()
                .is_some_and(|p| policy::same_policy(p, &wanted.policy));
            steps.push(step(
                "kms-endpoint-policy",
                format!(
                    "the KMS endpoint admits {} on the deployment's key only",
                    policy::ENDPOINT_ACTIONS.join(" and ")
                ),
                in_place.then(|| "in place".to_owned()),
                vec![wanted.call()],
            ));
        }
        steps.push(step(
            "role-policy",
            format!("the role's only permission: {ROLE_POLICY_NAME}"),
            f.role_policy.then(|| ROLE_POLICY_NAME.to_owned()),
            vec![self.role_policy_spec()?.call()],
        ));
        steps.push(step(
            "security-group",
            format!(
                "security group {} ({})",
                self.names.security_group,
                self.ingress_summary()
            ),
            f.security_group.clone(),
            vec![self.create_security_group_spec().call()],
        ));
        let rule_calls: Vec<Call> = self
            .rule_changes(&self.current_rules())
            .iter()
            .map(|r| r.call())
            .collect();
        steps.push(step(
            "security-group-rules",
            format!(
                "rules of {}: {}",
                self.names.security_group,
                self.ingress_summary()
            ),
            rule_calls.is_empty().then(|| "in place".to_owned()),
            rule_calls,
        ));
        if self.privatelink() {
            steps.extend(self.exposure_steps());
        }
        if self.options.uses_fleet() {
            steps.push(step(
                "launch-template",
                format!("launch template {}", self.names.launch_template),
                f.launch_template.clone(),
                vec![self.launch_template_spec().call()],
            ));
            steps.push(step(
                "auto-scaling-group",
                format!(
                    "Auto Scaling group {} of {} × {}",
                    self.names.auto_scaling_group, self.options.count, self.options.instance_type
                ),
                f.auto_scaling_group
                    .then(|| self.names.auto_scaling_group.clone()),
                vec![self.auto_scaling_group_spec().call()],
            ));
            steps.extend(self.template_user_data_step());
        } else {
            steps.push(step(
                "instance",
                format!(
                    "1 × {} without key pair, SSH or SSM",
                    self.options.instance_type
                ),
                (!f.instances.is_empty()).then(|| f.instances.join(",")),
                vec![self.run_instances_spec().call()],
            ));
            if self.privatelink() {
                steps.extend(self.registration_step());
            }
            if let Some(terminate) = self.terminate_outdated_spec() {
                steps.push(step(
                    "old-instances",
                    format!(
                        "{}, booted with other user data: replaced by the new instance (an instance reads its user data at boot only)",
                        terminate.ids.join(", ")
                    ),
                    None,
                    vec![terminate.call()],
                ));
            }
        }
        Ok(Plan {
            command: crate::aws::plan::Command::Deploy,
            deployment: self.deployment.clone(),
            release: self.binding.release.clone(),
            boot_mode: Some(self.binding.mode),
            account_id: self.account.account_id.clone(),
            region: self.region.clone(),
            steps,
            warnings: self.warnings(),
        })
    }

    /// A private deploy's KMS endpoint: its security group and rules, then the endpoint,
    /// closed until the key exists (its policy names the key).
    fn endpoint_steps(&self) -> Vec<Step> {
        let f = &self.found;
        let rule_calls: Vec<Call> = self
            .endpoint_rule_changes(&self.current_endpoint_rules())
            .iter()
            .map(|r| r.call())
            .collect();
        vec![
            step(
                "kms-endpoint-group",
                format!(
                    "security group {} for the KMS endpoint",
                    self.names.kms_endpoint_group
                ),
                f.endpoint_group.clone(),
                vec![self.create_endpoint_group_spec().call()],
            ),
            step(
                "kms-endpoint-group-rules",
                format!(
                    "rules of {}: tcp/443 from {} only, no egress",
                    self.names.kms_endpoint_group, self.network.vpc_cidr
                ),
                rule_calls.is_empty().then(|| "in place".to_owned()),
                rule_calls,
            ),
            step(
                "kms-endpoint",
                format!(
                    "interface endpoint for {} in {} (private DNS, subnets {}); the key answers only requests through it",
                    self.kms_service_name(),
                    self.network.vpc_id,
                    self.network.endpoint_subnets.join(", ")
                ),
                f.vpc_endpoint.clone(),
                vec![self.create_endpoint_spec().call()],
            ),
        ]
    }

    pub(super) fn kms_service_name(&self) -> String {
        format!("com.amazonaws.{}.kms", self.region)
    }

    /// The deployment's KMS endpoint, for the key policy (a private deploy only).
    pub(super) fn vpc_endpoint_id(&self) -> Id {
        Id::first_of(
            [
                self.found.vpc_endpoint.as_ref(),
                self.state.vpc_endpoint_id.as_ref(),
            ],
            "vpc-endpoint-id",
        )
    }

    pub(super) fn create_endpoint_spec(&self) -> CreateVpcEndpoint {
        let group = self.endpoint_group_id();
        CreateVpcEndpoint {
            vpc: self.network.vpc_id.clone(),
            service: self.kms_service_name(),
            subnets: self.network.endpoint_subnets.clone(),
            client_token: self.token_once_known(
                "kms-endpoint",
                &group,
                &[&self.network.vpc_id],
                "derived from the endpoint's security group id",
            ),
            security_group: group,
            policy: policy::kms_endpoint_closed_policy(),
            tags: self.tags(),
        }
    }

    pub(super) fn endpoint_policy_spec(&self) -> Result<SetVpcEndpointPolicy, AwsError> {
        let role = format!(
            "arn:{}:iam::{}:role/{}",
            self.account.partition, self.account.account_id, self.names.role
        );
        Ok(SetVpcEndpointPolicy {
            endpoint: self.vpc_endpoint_id(),
            policy: policy::kms_endpoint_policy(&self.key_arn_or_placeholder(), &role)?,
        })
    }

    /// The disk image's upload (none when the snapshot exists: no disk was written).
    pub(super) fn disk_upload_spec(&self) -> Option<SnapshotUpload> {
        let disk = self.disk.as_ref()?;
        let mut tags = self.tags();
        tags.push((TAG_DISK.to_owned(), disk.sha256.clone()));
        Some(SnapshotUpload {
            stale: self.found.stale_snapshots.clone(),
            snapshot: "snapshot-id",
            what: DISK_NAME.to_owned(),
            size: disk.size,
            description: self.snapshot_description(),
            tags,
        })
    }

    pub(super) fn model_upload_spec(&self, model: &ModelSpec) -> SnapshotUpload {
        SnapshotUpload {
            stale: self.found.stale_model_snapshots.clone(),
            snapshot: "model-snapshot-id",
            what: "the model".to_owned(),
            size: model.size,
            description: self.model_snapshot_description(model),
            tags: self.model_tags(model),
        }
    }

    pub(super) fn create_role_spec(&self) -> CreateRole {
        CreateRole {
            name: self.names.role.clone(),
            trust_policy: policy::instance_role_trust_policy(),
            description: self.role_description(),
            tags: self.tags(),
        }
    }

    pub(super) fn instance_profile_specs(
        &self,
    ) -> (CreateInstanceProfile, AddRoleToInstanceProfile) {
        (
            CreateInstanceProfile {
                name: self.names.instance_profile.clone(),
                tags: self.tags(),
            },
            AddRoleToInstanceProfile {
                profile: self.names.instance_profile.clone(),
                role: self.names.role.clone(),
            },
        )
    }

    pub(super) fn create_key_spec(&self) -> Result<CreateKey, AwsError> {
        Ok(CreateKey {
            description: self.key_description(),
            policy: self.key_policy()?,
            bypass_lockout_check: policy::needs_lockout_bypass(&self.key_policy_input()),
            tags: self.tags(),
        })
    }

    pub(super) fn key_id(&self) -> Id {
        Id::first_of(
            [
                self.found.key.as_ref().map(|(id, _)| id),
                self.state.key_id.as_ref(),
            ],
            "key-id",
        )
    }

    pub(super) fn create_alias_spec(&self) -> CreateAlias {
        CreateAlias {
            alias: self.names.key_alias.clone(),
            key: self.key_id(),
        }
    }

    pub(super) fn role_policy_spec(&self) -> Result<PutRolePolicy, AwsError> {
        Ok(PutRolePolicy {
            role: self.names.role.clone(),
            name: ROLE_POLICY_NAME.to_owned(),
            document: policy::instance_role_policy(&self.key_arn_or_placeholder())?,
        })
    }

    pub(super) fn auto_scaling_group_spec(&self) -> CreateAutoScalingGroup {
        CreateAutoScalingGroup {
            name: self.names.auto_scaling_group.clone(),
            template: Id::first_of(
                [
                    self.found.launch_template.as_ref(),
                    self.state.launch_template_id.as_ref(),
                ],
                "launch-template-id",
            ),
            count: self.options.count as i32,
            subnets: self.network.subnet_ids.clone(),
            target_groups: if self.privatelink() {
                vec![self.target_group_id()]
            } else {
                Vec::new()
            },
            tags: self.tags(),
        }
    }

    /// Instances that booted with other user data, replaced by the new one.
    pub(super) fn terminate_outdated_spec(&self) -> Option<TerminateInstances> {
        (!self.found.outdated_instances.is_empty()).then(|| TerminateInstances {
            ids: self.found.outdated_instances.clone(),
        })
    }

    /// A fleet's new user data: a launch template version with it (unless the latest has
    /// it already), then an instance refresh.
    pub(super) fn template_user_data_specs(
        &self,
    ) -> Option<(Option<NewDefaultTemplateVersion>, StartInstanceRefresh)> {
        let ud = self.user_data.as_ref()?;
        let lt = self.found.launch_template.as_ref()?;
        let in_template = self.found.template_user_data.as_deref() == Some(ud.sha256.as_str());
        if in_template && self.state.user_data_sha256.as_deref() == Some(ud.sha256.as_str()) {
            return None;
        }
        let version = (!in_template).then(|| NewDefaultTemplateVersion {
            template: Id::Known(lt.clone()),
            image: None,
            user_data: Some(TemplateUserData::Known(ud.clone())),
        });
        let refresh = StartInstanceRefresh {
            group: self.names.auto_scaling_group.clone(),
            min_healthy_percentage: REFRESH_MIN_HEALTHY_PERCENTAGE,
        };
        Some((version, refresh))
    }

    /// A fleet whose launch template has other user data than asked for: a new template
    /// version, and an instance refresh, since instances read user data at boot only. The
    /// user data is recorded once the refresh is done, so a rerun after an interrupted
    /// refresh starts it again.
    pub(super) fn template_user_data_step(&self) -> Option<Step> {
        let (version, refresh) = self.template_user_data_specs()?;
        let ud = self.user_data.as_ref()?;
        let mut calls = version.map(|v| v.calls()).unwrap_or_default();
        calls.push(refresh.call());
        Some(Step {
            step: "user-data",
            resource: format!(
                "user data {} for {}: the instance refresh replaces the running instances (an instance reads its user data at boot only)",
                ud.summary(),
                self.names.auto_scaling_group
            ),
            action: Action::Create,
            calls,
        })
    }

    pub(super) fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(e) = &self.unseal_endpoints {
            w.push(format!(
                "the image unseals through its own endpoints (IMDS {}, KMS {}), not the instance's: an image made for a rehearsal, whose instances cannot unseal on EC2",
                e.imds.as_deref().unwrap_or("the instance's"),
                e.kms.as_deref().unwrap_or("the region's")
            ));
        }
        w.extend(self.secret_warnings());
        if self.options.lock_policy {
            w.push(format!(
                "the key policy of {} is locked: it denies kms:PutKeyPolicy to everyone, the account root included. It can never be changed again: a new release needs a new key and re-sealed secrets (`zoa rollout` does that), and nobody can ever grant themselves use of this key.",
                self.names.key_alias
            ));
        }
        if self.options.allow_cidr.is_empty() {
            w.push(
                "no source address range may reach the serving port: the security group admits no inbound traffic at all".to_owned(),
            );
        }
        w
    }

    /// The secrets the image unseals against those its instances get: one missing makes
    /// them power off at boot; one extra is ignored by zoa-init.
    pub(super) fn secret_warnings(&self) -> Vec<String> {
        let given: BTreeSet<&str> = match &self.user_data {
            Some(ud) if ud.secrets.is_empty() => {
                if self.image_secrets.is_empty() {
                    return Vec::new();
                }
                return vec![format!(
                    "the image unseals {} from the user data that sealed secrets make, but raw user data replaces it: its instances will power off at boot",
                    self.image_secrets.join(", ")
                )];
            }
            Some(ud) => ud.secrets.keys().map(String::as_str).collect(),
            // Nothing asked for: the instances keep what the record says they have (a
            // rollout: what the old release's have; re-sealed if the key is new).
            None => match &self.options.rollout_from {
                Some(from) => from.state.secrets.keys().map(String::as_str).collect(),
                None => self.state.secrets.keys().map(String::as_str).collect(),
            },
        };
        let mut w = Vec::new();
        let missing: Vec<&str> = self
            .image_secrets
            .iter()
            .map(String::as_str)
            .filter(|n| !given.contains(n))
            .collect();
        if !missing.is_empty() {
            w.push(format!(
                "the image unseals {} at boot, but its instances get no such sealed secret: they power off at boot until they do. Once the key exists, seal each with `zoa seal` and deploy again with the envelopes",
                missing.join(", "),
            ));
        }
        for extra in given
            .iter()
            .filter(|n| !self.image_secrets.iter().any(|s| s == *n))
        {
            w.push(format!(
                "secret {extra} is not one the image unseals ([init.unseal]): zoa-init ignores it"
            ));
        }
        w
    }

    pub(super) fn model_snapshot_description(&self, model: &ModelSpec) -> String {
        format!(
            "zoa {} {} model sha256 {}",
            self.release.manifest().name,
            self.release.manifest().version,
            model.sha256
        )
    }

    /// The model snapshot's tags: the deployment's, and the model's digest, by which
    /// reruns and later releases of the deployment find it.
    pub(super) fn model_tags(&self, model: &ModelSpec) -> Vec<(String, String)> {
        let mut tags = self.tags();
        tags.push((TAG_MODEL.to_owned(), model.sha256.clone()));
        tags
    }

    pub(super) fn image_description(&self) -> String {
        format!(
            "zoa {} manifest {}",
            self.binding.release,
            self.release.manifest_sha256()
        )
    }

    pub(super) fn snapshot_description(&self) -> String {
        format!(
            "zoa {} {} disk",
            self.release.manifest().name,
            self.release.manifest().version
        )
    }

    pub(super) fn role_description(&self) -> String {
        format!(
            "zoa {}: instances of {} may unseal with its KMS key, nothing else",
            self.deployment, self.binding.release
        )
    }

    pub(super) fn register_image_spec(&self) -> RegisterImage {
        let mut volumes = vec![Volume {
            device: ROOT_DEVICE,
            snapshot: Id::first_of(
                [
                    self.found.snapshot.as_ref(),
                    self.state.snapshot_id.as_ref(),
                ],
                "snapshot-id",
            ),
        }];
        if self.model.is_some() {
            volumes.push(Volume {
                device: MODEL_DEVICE,
                snapshot: Id::first_of(
                    [
                        self.found.model_snapshot.as_ref(),
                        self.state.model_snapshot_id.as_ref(),
                    ],
                    "model-snapshot-id",
                ),
            });
        }
        RegisterImage {
            name: self.names.image.clone(),
            description: self.image_description(),
            root_device: ROOT_DEVICE,
            volumes,
            uefi_data: self.uefi_data.clone(),
            tags: self.tags(),
        }
    }

    /// What the instances launch with, alone or through the launch template.
    pub(super) fn instance_spec(&self, instance_tags: Tags) -> InstanceSpec {
        InstanceSpec {
            image: Id::first_of(
                [self.found.image.as_ref(), self.state.image_id.as_ref()],
                "image-id",
            ),
            instance_type: self.options.instance_type.clone(),
            instance_profile: self.names.instance_profile.clone(),
            security_group: Id::first_of(
                [
                    self.found.security_group.as_ref(),
                    self.state.security_group_id.as_ref(),
                ],
                "security-group-id",
            ),
            user_data: self.user_data.clone(),
            instance_tags,
            volume_tags: self.tags(),
            public_address: !self.state.private,
        }
    }

    /// The launch's ClientToken (see [`client_token`]), once the image and group exist.
    pub(super) fn launch_token(&self, what: &str, instance: &InstanceSpec) -> Id {
        match (&instance.image, &instance.security_group) {
            (Id::Known(image), Id::Known(sg)) => Id::Known(self.token(what, image, sg)),
            _ => Id::Pending("derived from the image and security group ids"),
        }
    }

    pub(super) fn run_instances_spec(&self) -> RunInstances {
        let mut instance_tags = self.tags();
        if let Some(ud) = &self.user_data {
            // How a rerun tells an instance with this user data from one to replace.
            instance_tags.push((TAG_USER_DATA.to_owned(), ud.sha256.clone()));
        }
        let instance = self.instance_spec(instance_tags);
        RunInstances {
            client_token: self.launch_token("instance", &instance),
            instance,
            subnet: self.network.subnet_ids.first().cloned(),
        }
    }

    pub(super) fn launch_template_spec(&self) -> CreateLaunchTemplate {
        let instance = self.instance_spec(self.tags());
        CreateLaunchTemplate {
            name: self.names.launch_template.clone(),
            client_token: self.launch_token("launch-template", &instance),
            instance,
            tags: self.tags(),
        }
    }

    /// The ClientToken of a create whose idempotency follows the resource `id` (and
    /// `also`): known once `id` is, else the plan's description of it.
    pub(super) fn token_once_known(
        &self,
        what: &str,
        id: &Id,
        also: &[&str],
        pending: &'static str,
    ) -> Id {
        match id {
            Id::Known(v) => Id::Known(client_token(
                &self.deployment,
                self.release.manifest_sha256(),
                what,
                &[&[v.as_str()], also].concat(),
            )),
            Id::Pending(_) => Id::Pending(pending),
        }
    }

    /// The ClientToken of a launch (see [`client_token`]); the user data is part of it,
    /// so an instance replaced for new user data is not answered with the old one.
    pub(super) fn token(&self, what: &str, image: &str, security_group: &str) -> String {
        let mut ids = vec![image, security_group];
        if let Some(ud) = &self.user_data {
            ids.push(&ud.sha256);
        }
        client_token(&self.deployment, self.release.manifest_sha256(), what, &ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_are_stable_and_short() {
        let m = "ab".repeat(32);
        let a = client_token("demo", &m, "instance", &["ami-1", "sg-1"]);
        assert_eq!(a, client_token("demo", &m, "instance", &["ami-1", "sg-1"]));
        assert_ne!(
            a,
            client_token("demo", &m, "launch-template", &["ami-1", "sg-1"])
        );
        assert_ne!(a, client_token("demo", &m, "instance", &["ami-2", "sg-1"]));
        assert!(a.len() <= 64);
    }
}
