//! Discovery: what of a deployment exists already (recorded in `deploy.json`, or found by
//! name and tags after a crash between a create and its record), with read-only calls.

use aws_sdk_ec2::types as ec2t;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{Deployment, KeyAdmits, Network, DEFAULT_INSTANCE_TYPE, ROLE_POLICY_NAME};
use crate::aws::calls::ec2::{
    ec2_filter, endpoint_state_in, latest_template_data, IpRule, IpRules,
};
use crate::aws::calls::elb::{find_load_balancer, find_target_group};
use crate::aws::policy;
use crate::aws::state::{
    TAG_DEPLOYMENT, TAG_DISK, TAG_MANIFEST, TAG_MODEL, TAG_RELEASE, TAG_USER_DATA,
};
use crate::aws::{api_error, AwsError, Clients, Remedy};

/// Resources that exist (recorded, or found by name/tag), and stale ones to clean up.
#[derive(Debug, Default, Clone)]
pub(super) struct Found {
    pub(super) snapshot: Option<String>,
    pub(super) stale_snapshots: Vec<String>,
    pub(super) model_snapshot: Option<String>,
    pub(super) stale_model_snapshots: Vec<String>,
    pub(super) image: Option<String>,
    pub(super) role: bool,
    pub(super) instance_profile: bool,
    pub(super) key: Option<(String, String)>,
    pub(super) key_admits: Option<KeyAdmits>,
    pub(super) key_alias: bool,
    pub(super) role_policy: bool,
    pub(super) security_group: Option<String>,
    /// The group's current (ingress, egress) rules.
    pub(super) security_group_rules: IpRules,
    /// Instances with the wanted user data (all of them when none is asked for).
    pub(super) instances: Vec<String>,
    /// Instances that booted with other user data: replaced.
    pub(super) outdated_instances: Vec<String>,
    pub(super) launch_template: Option<String>,
    /// A private deploy's KMS endpoint group and its rules.
    pub(super) endpoint_group: Option<String>,
    pub(super) endpoint_group_rules: IpRules,
    /// A private deploy's KMS endpoint and its policy.
    pub(super) vpc_endpoint: Option<String>,
    pub(super) vpc_endpoint_policy: Option<serde_json::Value>,
    /// The PrivateLink exposure: target group (and the instances registered in it), load
    /// balancer, whether its listener exists, the endpoint service and who may connect.
    pub(super) target_group: Option<String>,
    pub(super) registered: Vec<String>,
    pub(super) load_balancer: Option<String>,
    pub(super) listener: bool,
    pub(super) endpoint_service: Option<crate::aws::calls::ec2::EndpointService>,
    pub(super) service_principals: Vec<String>,
    /// SHA-256 of the user data in the launch template's latest version.
    pub(super) template_user_data: Option<String>,
    pub(super) auto_scaling_group: bool,
}

/// The deployment's KMS key as discovery found it.
#[derive(Debug)]
struct FoundKey {
    id: String,
    arn: String,
    admits: KeyAdmits,
    /// Whether the deployment's alias points at it (false: a deploy stopped between
    /// CreateKey and CreateAlias).
    aliased: bool,
}

/// DescribeInstanceTypes for the one type (moto refuses the nitro-tpm-support filter, and
/// one type is cheaper anyway); refuse a type without NitroTPM.
pub(super) async fn check_instance_type(
    clients: &Clients,
    instance_type: &str,
) -> Result<(), AwsError> {
    let step = "instance type";
    let out = clients
        .ec2
        .describe_instance_types()
        .instance_types(ec2t::InstanceType::from(instance_type))
        .send()
        .await
        .map_err(|e| api_error(step, "ec2:DescribeInstanceTypes", e))?;
    let info = out.instance_types().first().ok_or_else(|| {
        AwsError::step(
            step,
            format!("{instance_type} is not offered in this region"),
        )
    })?;
    match info.nitro_tpm_support() {
        Some(ec2t::NitroTpmSupport::Supported) => Ok(()),
        other => Err(AwsError::step(
            step,
            format!(
                "{instance_type} has no NitroTPM (NitroTpmSupport: {}): the instance could not attest its boot; choose a type with NitroTPM, e.g. {DEFAULT_INSTANCE_TYPE}",
                other.map(|s| s.as_str()).unwrap_or("not reported")
            ),
        )),
    }
}

/// The given subnets (and their VPC), or the default VPC's subnets.
pub(super) async fn find_network(
    clients: &Clients,
    subnet_ids: &[String],
) -> Result<Network, AwsError> {
    let step = "network";
    let subnets = if subnet_ids.is_empty() {
        let vpcs = clients
            .ec2
            .describe_vpcs()
            .filters(ec2_filter("is-default", "true"))
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeVpcs", e))?;
        let vpc_id = vpcs
            .vpcs()
            .first()
            .and_then(|v| v.vpc_id())
            .ok_or_else(|| {
                AwsError::refused(step, "this region has no default VPC", Remedy::GiveSubnet)
            })?
            .to_owned();
        clients
            .ec2
            .describe_subnets()
            .filters(ec2_filter("vpc-id", &vpc_id))
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeSubnets", e))?
            .subnets()
            .to_vec()
    } else {
        clients
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(subnet_ids.to_vec()))
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeSubnets", e))?
            .subnets()
            .to_vec()
    };
    let mut ids: Vec<String> = subnets
        .iter()
        .filter_map(|s| s.subnet_id().map(str::to_owned))
        .collect();
    ids.sort();
    let vpcs: std::collections::BTreeSet<&str> =
        subnets.iter().filter_map(|s| s.vpc_id()).collect();
    let vpc_id = match vpcs.len() {
        1 => vpcs.into_iter().next().unwrap_or_default().to_owned(),
        0 => return Err(AwsError::step(step, "no subnets found")),
        _ => {
            return Err(AwsError::step(
                step,
                "the subnets are in different VPCs: give subnets of one VPC",
            ))
        }
    };
    let vpc_cidr = clients
        .ec2
        .describe_vpcs()
        .vpc_ids(&vpc_id)
        .send()
        .await
        .map_err(|e| api_error(step, "ec2:DescribeVpcs", e))?
        .vpcs()
        .first()
        .and_then(|v| v.cidr_block())
        .ok_or_else(|| AwsError::step(step, format!("{vpc_id} has no IPv4 range")))?
        .to_owned();
    Ok(Network {
        vpc_id,
        subnet_ids: ids,
        vpc_cidr,
        endpoint_subnets: one_per_zone(&subnets),
    })
}

/// The first subnet (by id) of each Availability Zone.
fn one_per_zone(subnets: &[ec2t::Subnet]) -> Vec<String> {
    let mut by_zone: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    for s in subnets {
        if let (Some(zone), Some(id)) = (s.availability_zone(), s.subnet_id()) {
            by_zone
                .entry(zone)
                .and_modify(|first| *first = (*first).min(id))
                .or_insert(id);
        }
    }
    let mut ids: Vec<String> = by_zone.into_values().map(str::to_owned).collect();
    ids.sort();
    ids
}

impl Deployment {
    pub(super) async fn find_existing(&self, c: &Clients) -> Result<Found, AwsError> {
        let mut f = Found::default();
        self.find_snapshot(c, &mut f).await?;
        if let Some(m) = &self.model {
            self.find_model_snapshot(c, &m.sha256, &mut f).await?;
        }
        f.image = self.find_image(c).await?;
        f.role = self.iam_role_exists(c).await?;
        f.instance_profile = self.instance_profile_exists(c).await?;
        if let Some(k) = self.find_key(c).await? {
            f.key = Some((k.id, k.arn));
            f.key_admits = Some(k.admits);
            f.key_alias = k.aliased;
        }
        f.role_policy = f.role && self.role_policy_exists(c).await?;
        if let Some((id, rules)) = self.find_security_group(c).await? {
            f.security_group = Some(id);
            f.security_group_rules = rules;
        }
        if self.state.private {
            if let Some((id, rules)) = self.find_group(c, &self.names.kms_endpoint_group).await? {
                f.endpoint_group = Some(id);
                f.endpoint_group_rules = rules;
            }
            if let Some((id, policy)) = self.find_vpc_endpoint(c).await? {
                f.vpc_endpoint = Some(id);
                f.vpc_endpoint_policy = policy;
            }
        }
        if self.privatelink() {
            self.find_exposure(c, &mut f).await?;
        }
        if self.options.uses_fleet() {
            f.launch_template = self.find_launch_template(c).await?;
            if let (Some(lt), Some(_)) = (&f.launch_template, &self.user_data) {
                f.template_user_data = latest_template_data(c, lt, "launch template")
                    .await?
                    .and_then(|d| crate::aws::userdata::sha256_of_base64(d.user_data()));
            }
            f.auto_scaling_group = self.auto_scaling_group_exists(c).await?;
        } else {
            // Without user data asked for, whatever the instances have is kept.
            let wanted = self.user_data.as_ref().map(|u| u.sha256.as_str());
            for (id, user_data) in self.find_instances(c).await? {
                if wanted.is_none() || user_data.as_deref() == wanted {
                    f.instances.push(id);
                } else {
                    f.outdated_instances.push(id);
                }
            }
        }
        Ok(f)
    }

    pub(super) async fn find_snapshot(&self, c: &Clients, f: &mut Found) -> Result<(), AwsError> {
        let out = c
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(ec2_filter(
                &format!("tag:{TAG_DEPLOYMENT}"),
                &self.deployment,
            ))
            .filters(ec2_filter(
                &format!("tag:{TAG_MANIFEST}"),
                self.release.manifest_sha256(),
            ))
            // The boot disk's (the model's snapshot has the same deployment and manifest).
            .filters(ec2_filter("tag-key", TAG_DISK))
            .send()
            .await
            .map_err(|e| api_error("snapshot", "ec2:DescribeSnapshots", e))?;
        for s in out.snapshots() {
            let Some(id) = s.snapshot_id() else { continue };
            match s.state() {
                Some(ec2t::SnapshotState::Completed) if f.snapshot.is_none() => {
                    f.snapshot = Some(id.to_owned())
                }
                // An upload that was interrupted (or a second completed copy): ours by its
                // tags, never used, removed before uploading again.
                _ => f.stale_snapshots.push(id.to_owned()),
            }
        }
        // Prefer the recorded one when it is among the completed.
        if let Some(recorded) = &self.state.snapshot_id {
            if f.stale_snapshots.contains(recorded) {
                f.stale_snapshots.retain(|s| s != recorded);
                if let Some(other) = f.snapshot.replace(recorded.clone()) {
                    f.stale_snapshots.push(other);
                }
            }
        }
        Ok(())
    }

    /// The deployment's snapshot of the model with this digest, whichever release of the
    /// deployment uploaded it (releases often share a model: a rollout reuses it).
    /// Unfinished uploads are stale; a second completed copy is left alone, as another
    /// release's AMI may use it (destroy removes it).
    pub(super) async fn find_model_snapshot(
        &self,
        c: &Clients,
        sha256: &str,
        f: &mut Found,
    ) -> Result<(), AwsError> {
        let out = c
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(ec2_filter(
                &format!("tag:{TAG_DEPLOYMENT}"),
                &self.deployment,
            ))
            .filters(ec2_filter(&format!("tag:{TAG_MODEL}"), sha256))
            .send()
            .await
            .map_err(|e| api_error("model snapshot", "ec2:DescribeSnapshots", e))?;
        let mut completed = Vec::new();
        for s in out.snapshots() {
            let Some(id) = s.snapshot_id() else { continue };
            match s.state() {
                Some(ec2t::SnapshotState::Completed) => completed.push(id.to_owned()),
                _ => f.stale_model_snapshots.push(id.to_owned()),
            }
        }
        let recorded = [&self.state.model_snapshot_id]
            .into_iter()
            .chain(
                self.options
                    .rollout_from
                    .as_ref()
                    .map(|r| &r.state.model_snapshot_id),
            )
            .flatten()
            .find(|id| completed.contains(id));
        f.model_snapshot = recorded.cloned().or_else(|| completed.first().cloned());
        Ok(())
    }

    pub(super) async fn find_image(&self, c: &Clients) -> Result<Option<String>, AwsError> {
        let out = c
            .ec2
            .describe_images()
            .owners("self")
            .filters(ec2_filter("name", &self.names.image))
            .send()
            .await
            .map_err(|e| api_error("image", "ec2:DescribeImages", e))?;
        Ok(out
            .images()
            .iter()
            .find(|i| i.state() != Some(&ec2t::ImageState::Deregistered))
            .and_then(|i| i.image_id().map(str::to_owned)))
    }

    pub(super) async fn iam_role_exists(&self, c: &Clients) -> Result<bool, AwsError> {
        match c.iam.get_role().role_name(&self.names.role).send().await {
            Ok(out) => {
                self.check_ours_iam(
                    out.role().map(|r| r.tags()).unwrap_or_default(),
                    "role",
                    &self.names.role,
                )?;
                Ok(true)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(api_error("role", "iam:GetRole", e)),
        }
    }

    /// A resource with zoa's name but another deployment's tags is not adopted.
    pub(super) fn check_ours_iam(
        &self,
        tags: &[aws_sdk_iam::types::Tag],
        what: &str,
        name: &str,
    ) -> Result<(), AwsError> {
        let dep = tags
            .iter()
            .find(|t| t.key() == TAG_DEPLOYMENT)
            .map(|t| t.value());
        if dep == Some(self.deployment.as_str()) {
            Ok(())
        } else {
            Err(AwsError::refused(
                what,
                format!("IAM {what} {name} exists but is not tagged {TAG_DEPLOYMENT}={}: it was not created by this deployment", self.deployment),
                Remedy::AnotherName,
            ))
        }
    }

    pub(super) async fn instance_profile_exists(&self, c: &Clients) -> Result<bool, AwsError> {
        match c
            .iam
            .get_instance_profile()
            .instance_profile_name(&self.names.instance_profile)
            .send()
            .await
        {
            Ok(out) => {
                let roles: Vec<&str> = out
                    .instance_profile()
                    .map(|p| p.roles().iter().map(|r| r.role_name()).collect())
                    .unwrap_or_default();
                // A profile without its role is an interrupted create: finish it.
                Ok(roles.contains(&self.names.role.as_str()))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(api_error("instance profile", "iam:GetInstanceProfile", e)),
        }
    }

    pub(super) async fn role_policy_exists(&self, c: &Clients) -> Result<bool, AwsError> {
        match c
            .iam
            .get_role_policy()
            .role_name(&self.names.role)
            .policy_name(ROLE_POLICY_NAME)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(api_error("role policy", "iam:GetRolePolicy", e)),
        }
    }

    /// The key behind the deployment's alias; its policy must be the one this deploy would
    /// write (an existing key with another policy is refused, never silently reused).
    async fn find_key(&self, c: &Clients) -> Result<Option<FoundKey>, AwsError> {
        let (meta, aliased) = match self.describe_key(c, &self.names.key_alias).await? {
            Some(meta) => (meta, true),
            // No alias: a deploy that stopped between CreateKey and CreateAlias. The key is
            // the recorded one or, when the record was lost too, the one tagged for this
            // deployment and release.
            None => {
                let recorded = match &self.state.key_id {
                    Some(id) => self.describe_key(c, id).await?,
                    None => None,
                };
                let found = match recorded {
                    Some(m) => Some(m),
                    None => match self.find_key_by_tags(c).await? {
                        Some(id) => self.describe_key(c, &id).await?,
                        None => None,
                    },
                };
                match found {
                    Some(m)
                        if m.key_state()
                            != Some(&aws_sdk_kms::types::KeyState::PendingDeletion) =>
                    {
                        (m, false)
                    }
                    _ => return Ok(None),
                }
            }
        };
        let key_id = meta.key_id().to_owned();
        let arn = meta.arn().unwrap_or_default().to_owned();
        if meta.key_state() == Some(&aws_sdk_kms::types::KeyState::PendingDeletion) {
            return Err(AwsError::step(
                "kms key",
                format!(
                    "{} points at key {key_id}, which is pending deletion: cancel the deletion (kms:CancelKeyDeletion) or delete the alias",
                    self.names.key_alias
                ),
            ));
        }
        let policy_text = c
            .kms
            .get_key_policy()
            .key_id(&key_id)
            .policy_name("default")
            .send()
            .await
            .map_err(|e| api_error("kms key", "kms:GetKeyPolicy", e))?
            .policy()
            .unwrap_or_default()
            .to_owned();
        let existing: serde_json::Value = serde_json::from_str(&policy_text).map_err(|e| {
            AwsError::step(
                "kms key",
                format!("key {key_id}: its policy is not JSON: {e}"),
            )
        })?;
        let stages: &[KeyAdmits] = if self.options.rollout_from.is_some() && !self.options.new_key()
        {
            &[KeyAdmits::New, KeyAdmits::Both, KeyAdmits::Old]
        } else {
            &[KeyAdmits::New]
        };
        let mut first_error = None;
        for &stage in stages {
            match policy::check_key_policy(&existing, &self.key_policy_input_for(stage)) {
                Ok(()) => {
                    return Ok(Some(FoundKey {
                        id: key_id,
                        arn,
                        admits: stage,
                        aliased,
                    }))
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            // A key zoa made for another release of this deployment says so in its tags:
            // name that release instead of calling its (sound) policy unsafe.
            let tags = c
                .kms
                .list_resource_tags()
                .key_id(&key_id)
                .send()
                .await
                .map(|o| o.tags().to_vec())
                .unwrap_or_default();
            let tag = |k: &str| {
                tags.iter()
                    .find(|t| t.tag_key() == k)
                    .map(|t| t.tag_value().to_owned())
            };
            let why = match (tag(TAG_RELEASE), tag(TAG_MANIFEST)) {
                (Some(release), Some(m)) if m != self.release.manifest_sha256() => format!(
                    "it was made by zoa for {release} (manifest {m}), whose PCRs differ from this release's; `zoa rollout` moves a fleet from that release to this one"
                ),
                _ => e.to_string(),
            };
            return Err(AwsError::refused(
                "kms key",
                format!(
                    "key {key_id} ({}) exists with another policy than this release needs: {why}. Refusing to reuse it",
                    self.names.key_alias
                ),
                Remedy::DestroyOrAnotherName,
            ));
        }
        Ok(None)
    }

    pub(super) async fn describe_key(
        &self,
        c: &Clients,
        key: &str,
    ) -> Result<Option<aws_sdk_kms::types::KeyMetadata>, AwsError> {
        match c.kms.describe_key().key_id(key).send().await {
            Ok(out) => Ok(out.key_metadata().cloned()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(api_error("kms key", "kms:DescribeKey", e)),
        }
    }

    /// The key tagged for this deployment and release (ListKeys + ListResourceTags).
    pub(super) async fn find_key_by_tags(&self, c: &Clients) -> Result<Option<String>, AwsError> {
        let mut keys = c.kms.list_keys().into_paginator().items().send();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| api_error("kms key", "kms:ListKeys", e))?;
            let Some(id) = key.key_id() else { continue };
            let tags = match c.kms.list_resource_tags().key_id(id).send().await {
                Ok(out) => out.tags().to_vec(),
                // Keys of other services or without access: not ours.
                Err(_) => continue,
            };
            let has =
                |k: &str, v: &str| tags.iter().any(|t| t.tag_key() == k && t.tag_value() == v);
            if has(TAG_DEPLOYMENT, &self.deployment)
                && has(TAG_MANIFEST, self.release.manifest_sha256())
            {
                return Ok(Some(id.to_owned()));
            }
        }
        Ok(None)
    }

    pub(super) async fn find_security_group(
        &self,
        c: &Clients,
    ) -> Result<Option<(String, IpRules)>, AwsError> {
        self.find_group(c, &self.names.security_group).await
    }

    /// The deployment's KMS interface endpoint (by tag, in its VPC, not being deleted)
    /// and its policy.
    pub(super) async fn find_vpc_endpoint(
        &self,
        c: &Clients,
    ) -> Result<Option<(String, Option<serde_json::Value>)>, AwsError> {
        let out = c
            .ec2
            .describe_vpc_endpoints()
            .filters(ec2_filter("vpc-id", &self.network.vpc_id))
            .filters(ec2_filter("service-name", &self.kms_service_name()))
            .filters(ec2_filter(
                &format!("tag:{TAG_DEPLOYMENT}"),
                &self.deployment,
            ))
            .send()
            .await
            .map_err(|e| api_error("kms endpoint", "ec2:DescribeVpcEndpoints", e))?;
        let gone = |s: Option<&ec2t::State>| {
            endpoint_state_in(s, &["deleted", "deleting", "failed", "rejected", "expired"])
        };
        Ok(out
            .vpc_endpoints()
            .iter()
            .find(|e| !gone(e.state()))
            .and_then(|e| {
                let policy = e
                    .policy_document()
                    .and_then(|p| serde_json::from_str(p).ok());
                Some((e.vpc_endpoint_id()?.to_owned(), policy))
            }))
    }

    /// The PrivateLink exposure's parts, by name (Elastic Load Balancing) and tag (the
    /// endpoint service).
    async fn find_exposure(&self, c: &Clients, f: &mut Found) -> Result<(), AwsError> {
        let step = "privatelink";
        f.target_group = find_target_group(c, &self.names.target_group, step).await?;
        if let Some(tg) = &f.target_group {
            let out = c
                .elb
                .describe_target_health()
                .target_group_arn(tg)
                .send()
                .await
                .map_err(|e| api_error(step, "elasticloadbalancing:DescribeTargetHealth", e))?;
            f.registered = out
                .target_health_descriptions()
                .iter()
                .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_owned))
                .collect();
            f.registered.sort();
        }
        f.load_balancer = find_load_balancer(c, &self.names.load_balancer, step).await?;
        if let Some(lb) = &f.load_balancer {
            let out = c
                .elb
                .describe_listeners()
                .load_balancer_arn(lb)
                .send()
                .await
                .map_err(|e| api_error(step, "elasticloadbalancing:DescribeListeners", e))?;
            f.listener = out
                .listeners()
                .iter()
                .any(|l| l.port() == self.port.map(i32::from));
        }
        let out = c
            .ec2
            .describe_vpc_endpoint_service_configurations()
            .filters(ec2_filter(
                &format!("tag:{TAG_DEPLOYMENT}"),
                &self.deployment,
            ))
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeVpcEndpointServiceConfigurations", e))?;
        f.endpoint_service = out
            .service_configurations()
            .iter()
            .filter(|s| {
                !s.service_state().is_some_and(|st| {
                    ["deleted", "deleting", "failed"]
                        .iter()
                        .any(|n| st.as_str().eq_ignore_ascii_case(n))
                })
            })
            .find_map(|s| {
                Some(crate::aws::calls::ec2::EndpointService {
                    id: s.service_id()?.to_owned(),
                    name: s.service_name()?.to_owned(),
                })
            });
        if let Some(service) = &f.endpoint_service {
            let out = c
                .ec2
                .describe_vpc_endpoint_service_permissions()
                .service_id(&service.id)
                .send()
                .await
                .map_err(|e| api_error(step, "ec2:DescribeVpcEndpointServicePermissions", e))?;
            f.service_principals = out
                .allowed_principals()
                .iter()
                .filter_map(|p| p.principal().map(str::to_owned))
                .collect();
            f.service_principals.sort();
        }
        Ok(())
    }

    /// A security group of the deployment's VPC, by name, with its rules.
    pub(super) async fn find_group(
        &self,
        c: &Clients,
        name: &str,
    ) -> Result<Option<(String, IpRules)>, AwsError> {
        let out = c
            .ec2
            .describe_security_groups()
            .filters(ec2_filter("group-name", name))
            .filters(ec2_filter("vpc-id", &self.network.vpc_id))
            .send()
            .await
            .map_err(|e| api_error("security group", "ec2:DescribeSecurityGroups", e))?;
        Ok(out.security_groups().first().and_then(|g| {
            let id = g.group_id()?.to_owned();
            Some((
                id,
                (
                    IpRule::from_permissions(g.ip_permissions()),
                    IpRule::from_permissions(g.ip_permissions_egress()),
                ),
            ))
        }))
    }

    /// The deployment's live instances of this release, each with the digest of the user
    /// data it booted with (its `zoa:user-data-sha256` tag).
    pub(super) async fn find_instances(
        &self,
        c: &Clients,
    ) -> Result<Vec<(String, Option<String>)>, AwsError> {
        let out = c
            .ec2
            .describe_instances()
            .filters(ec2_filter(
                &format!("tag:{TAG_DEPLOYMENT}"),
                &self.deployment,
            ))
            .filters(ec2_filter(
                &format!("tag:{TAG_MANIFEST}"),
                self.release.manifest_sha256(),
            ))
            .filters(
                ec2t::Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .values("stopping")
                    .values("stopped")
                    .build(),
            )
            .send()
            .await
            .map_err(|e| api_error("instances", "ec2:DescribeInstances", e))?;
        let mut ids: Vec<(String, Option<String>)> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                let user_data = i
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(TAG_USER_DATA))
                    .and_then(|t| t.value())
                    .map(str::to_owned);
                Some((i.instance_id()?.to_owned(), user_data))
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub(super) async fn find_launch_template(
        &self,
        c: &Clients,
    ) -> Result<Option<String>, AwsError> {
        match c
            .ec2
            .describe_launch_templates()
            .launch_template_names(&self.names.launch_template)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .launch_templates()
                .first()
                .and_then(|t| t.launch_template_id().map(str::to_owned))),
            Err(e) if e.code() == Some("InvalidLaunchTemplateName.NotFoundException") => Ok(None),
            Err(e) => Err(api_error(
                "launch template",
                "ec2:DescribeLaunchTemplates",
                e,
            )),
        }
    }

    pub(super) async fn auto_scaling_group_exists(&self, c: &Clients) -> Result<bool, AwsError> {
        let out = c
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.names.auto_scaling_group)
            .send()
            .await
            .map_err(|e| {
                api_error(
                    "auto scaling group",
                    "autoscaling:DescribeAutoScalingGroups",
                    e,
                )
            })?;
        Ok(!out.auto_scaling_groups().is_empty())
    }
}
