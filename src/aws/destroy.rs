//! `zoa destroy DIR`: removes what `zoa deploy` created, newest first, from the deploy
//! record and, for anything created just before a crash and never recorded, from zoa's
//! names and tags. Each removal is recorded at once, so an interrupted destroy resumes.
//! KMS keys cannot be deleted immediately: they are scheduled for deletion after a waiting
//! period (7–30 days), during which the deletion can still be cancelled.
//!
//! [`prepare`] finds what exists (read-only calls); [`Destruction::plan`] lists the calls
//! that remove it (`zoa destroy --plan`); [`Destruction::apply`] sends those same specs in
//! the same order, waiting where AWS removes things in the background.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types as ec2t;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::calls::autoscaling::DeleteAutoScalingGroup;
use super::calls::ec2::{
    ec2_filter, endpoint_state_in, DeleteEndpointServices, DeleteLaunchTemplate,
    DeleteSecurityGroup, DeleteSnapshot, DeleteVpcEndpoints, DeregisterImage, TerminateInstances,
};
use super::calls::elb::{
    find_load_balancer, find_target_group, DeleteLoadBalancer, DeleteTargetGroup,
};
use super::calls::iam::{
    DeleteInstanceProfile, DeleteRole, DeleteRolePolicy, RemoveRoleFromInstanceProfile,
};
use super::calls::kms::{DeleteAlias, ScheduleKeyDeletion};
use super::deploy::Names;
use super::plan::{Action, Call, Plan, Step};
use super::state::{DeployState, TAG_DEPLOYMENT};
use super::{api_error, AwsError, Clients};
use crate::progress::Progress;

/// Options of a destroy.
#[derive(Debug, Clone)]
pub struct DestroyOptions {
    /// Days before KMS deletes the key (7–30).
    pub key_deletion_days: i32,
    /// How long to wait for instances and groups to go away.
    pub wait: Duration,
}

impl Default for DestroyOptions {
    fn default() -> Self {
        DestroyOptions {
            key_deletion_days: 30,
            wait: Duration::from_secs(900),
        }
    }
}

/// What a destroy removed.
#[derive(Debug, Default, Serialize)]
pub struct DestroyReport {
    pub deployment: String,
    /// `kind id` of each removed resource, in order.
    pub removed: Vec<String>,
    /// The key scheduled for deletion and when KMS deletes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_deletion: Option<KeyDeletion>,
}

#[derive(Debug, Serialize)]
pub struct KeyDeletion {
    pub key_id: String,
    pub deletion_date: String,
    pub pending_days: i32,
}

/// What of the deployment exists, found by [`prepare`].
#[derive(Debug, Default)]
struct Existing {
    auto_scaling_group: Option<String>,
    launch_templates: Vec<String>,
    instances: Vec<String>,
    /// A PrivateLink exposure: the endpoint service, then its load balancer, then the
    /// target group.
    endpoint_services: Vec<String>,
    load_balancers: Vec<String>,
    target_groups: Vec<String>,
    /// A private deploy's KMS endpoints (before their security group can go).
    vpc_endpoints: Vec<String>,
    security_groups: Vec<String>,
    /// The profile and the roles in it.
    instance_profile: Option<(String, Vec<String>)>,
    /// The role and its inline policies.
    role: Option<(String, Vec<String>)>,
    alias: Option<String>,
    /// A key not already pending deletion.
    key: Option<String>,
    images: Vec<String>,
    snapshots: Vec<String>,
}

/// A destroy, prepared: the record and what exists.
#[derive(Debug)]
pub struct Destruction {
    dir: PathBuf,
    options: DestroyOptions,
    state: DeployState,
    region: String,
    existing: Existing,
}

/// Checks the options and the record, and finds what exists (read-only calls only).
pub async fn prepare(
    c: &Clients,
    dir: &Path,
    options: &DestroyOptions,
) -> Result<Destruction, AwsError> {
    if !(7..=30).contains(&options.key_deletion_days) {
        return Err(AwsError::step(
            "configuration",
            format!(
                "key deletion after {} days: KMS accepts 7 to 30",
                options.key_deletion_days
            ),
        ));
    }
    let state = DeployState::load(dir)?.ok_or_else(|| {
        AwsError::file(
            &DeployState::path(dir),
            "no deploy record: nothing was deployed from this directory (or it was destroyed)",
        )
    })?;
    if state.region != c.region {
        return Err(AwsError::WrongRegion {
            file: DeployState::path(dir).display().to_string(),
            recorded: state.region.clone(),
            configured: c.region.clone(),
        });
    }
    let account = c.account().await?;
    if account.account_id != state.account_id {
        return Err(AwsError::file(
            &DeployState::path(dir),
            format!(
                "records a deploy in account {}, but the credentials are for {}",
                state.account_id, account.account_id
            ),
        ));
    }
    let names = Names::new(&state.deployment, &state.release.manifest_sha256);
    let finder = Finder {
        c,
        state: &state,
        names: &names,
    };
    let (alias, key) = finder.alias_and_live_key().await?;
    let existing = Existing {
        auto_scaling_group: finder.auto_scaling_group().await?,
        launch_templates: finder.launch_templates().await?,
        instances: finder.live_instances().await?,
        endpoint_services: finder.endpoint_services().await?,
        load_balancers: finder.load_balancers().await?,
        target_groups: finder.target_groups().await?,
        vpc_endpoints: finder.vpc_endpoints().await?,
        security_groups: finder.security_groups().await?,
        instance_profile: finder.instance_profile().await?,
        role: finder.role().await?,
        alias,
        key,
        images: finder.images().await?,
        snapshots: finder.snapshots().await?,
    };
    Ok(Destruction {
        dir: dir.to_owned(),
        options: options.clone(),
        region: c.region.clone(),
        state,
        existing,
    })
}

/// Removes everything of the deployment recorded in `DIR/deploy/deploy.json`.
pub async fn destroy(
    c: &Clients,
    dir: &Path,
    options: &DestroyOptions,
    progress: Progress,
) -> Result<DestroyReport, AwsError> {
    prepare(c, dir, options).await?.apply(c, progress).await
}

/// The read-only look-ups of [`prepare`].
struct Finder<'a> {
    c: &'a Clients,
    state: &'a DeployState,
    names: &'a Names,
}

impl Finder<'_> {
    fn deployment(&self) -> &str {
        &self.state.deployment
    }

    fn tag_filter(&self) -> ec2t::Filter {
        ec2_filter(&format!("tag:{TAG_DEPLOYMENT}"), self.deployment())
    }

    async fn auto_scaling_group(&self) -> Result<Option<String>, AwsError> {
        let step = "destroy auto scaling group";
        let name = &self.names.auto_scaling_group;
        let out = self
            .c
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| api_error(step, "autoscaling:DescribeAutoScalingGroups", e))?;
        let ours = out.auto_scaling_groups().iter().any(|g| {
            g.tags()
                .iter()
                .any(|t| t.key() == Some(TAG_DEPLOYMENT) && t.value() == Some(self.deployment()))
        });
        Ok(ours.then(|| name.clone()))
    }

    async fn launch_templates(&self) -> Result<Vec<String>, AwsError> {
        let step = "destroy launch template";
        let out = self
            .c
            .ec2
            .describe_launch_templates()
            .filters(self.tag_filter())
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeLaunchTemplates", e))?;
        let mut ids: Vec<String> = out
            .launch_templates()
            .iter()
            .filter_map(|t| t.launch_template_id().map(str::to_owned))
            .collect();
        with_recorded(&mut ids, &self.state.launch_template_id);
        Ok(ids)
    }

    async fn live_instances(&self) -> Result<Vec<String>, AwsError> {
        let mut ids = live_instances(self.c, self.deployment(), "destroy instances").await?;
        ids.sort();
        Ok(ids)
    }

    /// Whether the record is of a PrivateLink exposure (only then are its parts looked
    /// up: a deployer of a public deployment has no rights on them).
    fn exposed(&self) -> bool {
        self.state.exposure.is_some()
    }

    async fn endpoint_services(&self) -> Result<Vec<String>, AwsError> {
        if !self.exposed() {
            return Ok(Vec::new());
        }
        let mut ids =
            live_endpoint_services(self.c, self.deployment(), "destroy endpoint service").await?;
        with_recorded(&mut ids, &self.state.endpoint_service_id);
        Ok(ids)
    }

    async fn load_balancers(&self) -> Result<Vec<String>, AwsError> {
        if !self.exposed() {
            return Ok(Vec::new());
        }
        // By name only: a recorded ARN that no longer exists is gone for good.
        let found =
            find_load_balancer(self.c, &self.names.load_balancer, "destroy load balancer").await?;
        Ok(found.into_iter().collect())
    }

    async fn target_groups(&self) -> Result<Vec<String>, AwsError> {
        if !self.exposed() {
            return Ok(Vec::new());
        }
        let found =
            find_target_group(self.c, &self.names.target_group, "destroy target group").await?;
        Ok(found.into_iter().collect())
    }

    async fn vpc_endpoints(&self) -> Result<Vec<String>, AwsError> {
        if !self.state.private {
            return Ok(Vec::new());
        }
        let mut ids = live_vpc_endpoints(self.c, self.deployment(), "destroy kms endpoint").await?;
        with_recorded(&mut ids, &self.state.vpc_endpoint_id);
        Ok(ids)
    }

    async fn security_groups(&self) -> Result<Vec<String>, AwsError> {
        let step = "destroy security group";
        let out = self
            .c
            .ec2
            .describe_security_groups()
            .filters(self.tag_filter())
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeSecurityGroups", e))?;
        let mut ids: Vec<String> = out
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_owned))
            .collect();
        with_recorded(&mut ids, &self.state.security_group_id);
        Ok(ids)
    }

    async fn instance_profile(&self) -> Result<Option<(String, Vec<String>)>, AwsError> {
        let step = "destroy instance profile";
        let name = self
            .state
            .instance_profile_name
            .clone()
            .unwrap_or_else(|| self.names.instance_profile.clone());
        let profile = match self
            .c
            .iam
            .get_instance_profile()
            .instance_profile_name(&name)
            .send()
            .await
        {
            Ok(out) => out.instance_profile().cloned(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                None
            }
            Err(e) => return Err(api_error(step, "iam:GetInstanceProfile", e)),
        };
        let Some(profile) = profile else {
            return Ok(None);
        };
        if !tagged(profile.tags(), self.deployment()) {
            log::warn!("instance profile {name} is not tagged for this deployment: left alone");
            return Ok(None);
        }
        let roles = profile
            .roles()
            .iter()
            .map(|r| r.role_name().to_owned())
            .collect();
        Ok(Some((name, roles)))
    }

    async fn role(&self) -> Result<Option<(String, Vec<String>)>, AwsError> {
        let step = "destroy role";
        let name = self
            .state
            .role_name
            .clone()
            .unwrap_or_else(|| self.names.role.clone());
        let role = match self.c.iam.get_role().role_name(&name).send().await {
            Ok(out) => out.role().cloned(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                None
            }
            Err(e) => return Err(api_error(step, "iam:GetRole", e)),
        };
        let Some(role) = role else {
            return Ok(None);
        };
        if !tagged(role.tags(), self.deployment()) {
            log::warn!("role {name} is not tagged for this deployment: left alone");
            return Ok(None);
        }
        let policies = self
            .c
            .iam
            .list_role_policies()
            .role_name(&name)
            .send()
            .await
            .map_err(|e| api_error(step, "iam:ListRolePolicies", e))?;
        Ok(Some((name, policies.policy_names().to_vec())))
    }

    /// The alias, when it exists, and the key to schedule for deletion: the recorded one
    /// or the one the alias points at, unless gone or already pending deletion.
    async fn alias_and_live_key(&self) -> Result<(Option<String>, Option<String>), AwsError> {
        let alias = self
            .state
            .key_alias
            .clone()
            .unwrap_or_else(|| self.names.key_alias.clone());
        let aliased = self.key_state(&alias).await?;
        let key_id = match &self.state.key_id {
            Some(id) => Some(id.clone()),
            None => aliased.clone().map(|(id, _)| id),
        };
        let key = match key_id {
            Some(id) => match self.key_state(&id).await? {
                Some((id, pending)) if !pending => Some(id),
                _ => None,
            },
            None => None,
        };
        Ok((aliased.map(|_| alias), key))
    }

    /// A key's id and whether it is pending deletion; `None` when not found.
    async fn key_state(&self, key: &str) -> Result<Option<(String, bool)>, AwsError> {
        match self.c.kms.describe_key().key_id(key).send().await {
            Ok(out) => Ok(out.key_metadata().map(|m| {
                (
                    m.key_id().to_owned(),
                    m.key_state() == Some(&aws_sdk_kms::types::KeyState::PendingDeletion),
                )
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(api_error("destroy kms key", "kms:DescribeKey", e)),
        }
    }

    async fn images(&self) -> Result<Vec<String>, AwsError> {
        let step = "destroy image";
        let out = self
            .c
            .ec2
            .describe_images()
            .owners("self")
            .filters(self.tag_filter())
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeImages", e))?;
        let mut ids: Vec<String> = out
            .images()
            .iter()
            .filter_map(|i| i.image_id().map(str::to_owned))
            .collect();
        with_recorded(&mut ids, &self.state.image_id);
        Ok(ids)
    }

    async fn snapshots(&self) -> Result<Vec<String>, AwsError> {
        let step = "destroy snapshot";
        let out = self
            .c
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(self.tag_filter())
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeSnapshots", e))?;
        let mut ids: Vec<String> = out
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_owned))
            .collect();
        // The boot disk's and the model's (both tagged, both recorded).
        with_recorded(&mut ids, &self.state.snapshot_id);
        with_recorded(&mut ids, &self.state.model_snapshot_id);
        Ok(ids)
    }
}

/// The deployment's instances that are not terminated.
async fn live_instances(
    c: &Clients,
    deployment: &str,
    step: &str,
) -> Result<Vec<String>, AwsError> {
    let out = c
        .ec2
        .describe_instances()
        .filters(ec2_filter(&format!("tag:{TAG_DEPLOYMENT}"), deployment))
        .filters(
            ec2t::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .values("shutting-down")
                .build(),
        )
        .send()
        .await
        .map_err(|e| api_error(step, "ec2:DescribeInstances", e))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect())
}

impl Destruction {
    fn removal(name: &'static str, resource: String, calls: Vec<Call>) -> Step {
        Step {
            step: name,
            resource,
            action: Action::Remove,
            calls,
        }
    }

    fn auto_scaling_group_spec(&self) -> Option<DeleteAutoScalingGroup> {
        self.existing
            .auto_scaling_group
            .as_ref()
            .map(|n| DeleteAutoScalingGroup { name: n.clone() })
    }

    fn launch_template_specs(&self) -> Vec<DeleteLaunchTemplate> {
        self.existing
            .launch_templates
            .iter()
            .map(|id| DeleteLaunchTemplate { id: id.clone() })
            .collect()
    }

    fn terminate_spec(&self) -> Option<TerminateInstances> {
        (!self.existing.instances.is_empty()).then(|| TerminateInstances {
            ids: self.existing.instances.clone(),
        })
    }

    fn endpoint_service_spec(&self) -> Option<DeleteEndpointServices> {
        (!self.existing.endpoint_services.is_empty()).then(|| DeleteEndpointServices {
            ids: self.existing.endpoint_services.clone(),
        })
    }

    fn load_balancer_specs(&self) -> Vec<DeleteLoadBalancer> {
        self.existing
            .load_balancers
            .iter()
            .map(|arn| DeleteLoadBalancer { arn: arn.clone() })
            .collect()
    }

    fn target_group_specs(&self) -> Vec<DeleteTargetGroup> {
        self.existing
            .target_groups
            .iter()
            .map(|arn| DeleteTargetGroup { arn: arn.clone() })
            .collect()
    }

    fn vpc_endpoint_spec(&self) -> Option<DeleteVpcEndpoints> {
        (!self.existing.vpc_endpoints.is_empty()).then(|| DeleteVpcEndpoints {
            ids: self.existing.vpc_endpoints.clone(),
        })
    }

    fn security_group_specs(&self) -> Vec<DeleteSecurityGroup> {
        self.existing
            .security_groups
            .iter()
            .map(|id| DeleteSecurityGroup { id: id.clone() })
            .collect()
    }

    fn instance_profile_specs(
        &self,
    ) -> Option<(Vec<RemoveRoleFromInstanceProfile>, DeleteInstanceProfile)> {
        let (name, roles) = self.existing.instance_profile.as_ref()?;
        let removes = roles
            .iter()
            .map(|r| RemoveRoleFromInstanceProfile {
                profile: name.clone(),
                role: r.clone(),
            })
            .collect();
        Some((removes, DeleteInstanceProfile { name: name.clone() }))
    }

    fn role_specs(&self) -> Option<(Vec<DeleteRolePolicy>, DeleteRole)> {
        let (name, policies) = self.existing.role.as_ref()?;
        let deletes = policies
            .iter()
            .map(|p| DeleteRolePolicy {
                role: name.clone(),
                name: p.clone(),
            })
            .collect();
        Some((deletes, DeleteRole { name: name.clone() }))
    }

    fn alias_spec(&self) -> Option<DeleteAlias> {
        self.existing
            .alias
            .as_ref()
            .map(|a| DeleteAlias { alias: a.clone() })
    }

    fn key_spec(&self) -> Option<ScheduleKeyDeletion> {
        self.existing.key.as_ref().map(|k| ScheduleKeyDeletion {
            key: k.clone(),
            days: self.options.key_deletion_days,
        })
    }

    fn image_specs(&self) -> Vec<DeregisterImage> {
        self.existing
            .images
            .iter()
            .map(|id| DeregisterImage { image: id.clone() })
            .collect()
    }

    fn snapshot_specs(&self) -> Vec<DeleteSnapshot> {
        self.existing
            .snapshots
            .iter()
            .map(|id| DeleteSnapshot {
                snapshot: id.clone(),
            })
            .collect()
    }

    /// Every removal, newest resource first, with its calls.
    pub fn plan(&self) -> Plan {
        let mut steps = Vec::new();
        let mut push = |name: &'static str, resource: String, calls: Vec<Call>| {
            if !calls.is_empty() {
                steps.push(Self::removal(name, resource, calls));
            }
        };
        let e = &self.existing;
        if let Some(s) = self.auto_scaling_group_spec() {
            push(
                "auto-scaling-group",
                format!("Auto Scaling group {} and its instances", s.name),
                vec![s.call()],
            );
        }
        push(
            "launch-template",
            format!("launch templates {}", e.launch_templates.join(", ")),
            self.launch_template_specs()
                .iter()
                .map(|s| s.call())
                .collect(),
        );
        push(
            "instances",
            format!("instances {}", e.instances.join(", ")),
            self.terminate_spec().iter().map(|s| s.call()).collect(),
        );
        if let Some(s) = self.endpoint_service_spec() {
            push(
                "endpoint-service",
                format!("endpoint services {}", s.ids.join(", ")),
                vec![s.call()],
            );
        }
        push(
            "load-balancer",
            format!("load balancers {}", e.load_balancers.join(", ")),
            self.load_balancer_specs()
                .iter()
                .map(|s| s.call())
                .collect(),
        );
        push(
            "target-group",
            format!("target groups {}", e.target_groups.join(", ")),
            self.target_group_specs().iter().map(|s| s.call()).collect(),
        );
        if let Some(s) = self.vpc_endpoint_spec() {
            push(
                "kms-endpoint",
                format!("KMS endpoints {}", s.ids.join(", ")),
                vec![s.call()],
            );
        }
        push(
            "security-group",
            format!("security groups {}", e.security_groups.join(", ")),
            self.security_group_specs()
                .iter()
                .map(|s| s.call())
                .collect(),
        );
        if let Some((removes, delete)) = self.instance_profile_specs() {
            let mut calls: Vec<Call> = removes.iter().map(|r| r.call()).collect();
            calls.push(delete.call());
            push(
                "instance-profile",
                format!("instance profile {}", delete.name),
                calls,
            );
        }
        if let Some((deletes, delete)) = self.role_specs() {
            let mut calls: Vec<Call> = deletes.iter().map(|r| r.call()).collect();
            calls.push(delete.call());
            push(
                "role",
                format!("IAM role {} and its policies", delete.name),
                calls,
            );
        }
        if let Some(a) = self.alias_spec() {
            push("kms-alias", format!("alias {}", a.alias), vec![a.call()]);
        }
        if let Some(k) = self.key_spec() {
            push(
                "kms-key",
                format!(
                    "KMS key {}: scheduled for deletion in {} days (cancellable until then)",
                    k.key, k.days
                ),
                vec![k.call()],
            );
        }
        push(
            "image",
            format!("AMIs {}", e.images.join(", ")),
            self.image_specs().iter().map(|s| s.call()).collect(),
        );
        push(
            "snapshot",
            format!("snapshots {}", e.snapshots.join(", ")),
            self.snapshot_specs().iter().map(|s| s.call()).collect(),
        );
        Plan {
            command: super::plan::Command::Destroy,
            deployment: self.state.deployment.clone(),
            release: format!("{} {}", self.state.release.name, self.state.release.version),
            boot_mode: None,
            account_id: self.state.account_id.clone(),
            region: self.region.clone(),
            steps,
            warnings: Vec::new(),
        }
    }

    /// Sends the plan's calls in order, recording each removal in the deploy record, and
    /// removes the record at the end.
    pub async fn apply(
        mut self,
        c: &Clients,
        progress: Progress,
    ) -> Result<DestroyReport, AwsError> {
        let pb = progress.stage(format!("destroying {}", self.state.deployment));
        let mut report = DestroyReport {
            deployment: self.state.deployment.clone(),
            ..DestroyReport::default()
        };
        let wait = self.options.wait;

        if let Some(spec) = self.auto_scaling_group_spec() {
            let step = "destroy auto scaling group";
            spec.send(c, step).await?;
            let name = spec.name.clone();
            wait_until(step, wait, || async {
                let out = c
                    .autoscaling
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names(&name)
                    .send()
                    .await
                    .map_err(|e| api_error(step, "autoscaling:DescribeAutoScalingGroups", e))?;
                Ok(out.auto_scaling_groups().is_empty())
            })
            .await?;
            self.state.auto_scaling_group = None;
            self.removed(&mut report, format!("auto-scaling-group {name}"))?;
        }
        for spec in self.launch_template_specs() {
            spec.send(c, "destroy launch template").await?;
            self.state.launch_template_id = None;
            self.removed(&mut report, format!("launch-template {}", spec.id))?;
        }
        if let Some(spec) = self.terminate_spec() {
            let step = "destroy instances";
            spec.send(c, step).await?;
            let deployment = self.state.deployment.clone();
            wait_until(step, wait, || async {
                Ok(live_instances(c, &deployment, step).await?.is_empty())
            })
            .await?;
            self.state.instance_ids.clear();
            self.removed(&mut report, format!("instances {}", spec.ids.join(",")))?;
        }
        if let Some(spec) = self.endpoint_service_spec() {
            let step = "destroy endpoint service";
            spec.send(c, step).await?;
            let deployment = self.state.deployment.clone();
            wait_until(step, wait, || async {
                Ok(live_endpoint_services(c, &deployment, step)
                    .await?
                    .is_empty())
            })
            .await?;
            self.state.endpoint_service_id = None;
            self.state.endpoint_service_name = None;
            self.removed(
                &mut report,
                format!("endpoint-service {}", spec.ids.join(",")),
            )?;
        }
        for spec in self.load_balancer_specs() {
            let step = "destroy load balancer";
            spec.send(c, step).await?;
            let arn = spec.arn.clone();
            wait_until(step, wait, || async {
                match c
                    .elb
                    .describe_load_balancers()
                    .load_balancer_arns(&arn)
                    .send()
                    .await
                {
                    Ok(out) => Ok(out.load_balancers().is_empty()),
                    Err(e) if e.code() == Some("LoadBalancerNotFound") => Ok(true),
                    Err(e) => Err(api_error(
                        step,
                        "elasticloadbalancing:DescribeLoadBalancers",
                        e,
                    )),
                }
            })
            .await?;
            self.state.load_balancer_arn = None;
            self.removed(&mut report, format!("load-balancer {}", spec.arn))?;
        }
        for spec in self.target_group_specs() {
            spec.send(c, "destroy target group", wait).await?;
            self.state.target_group_arn = None;
            self.removed(&mut report, format!("target-group {}", spec.arn))?;
        }
        if let Some(spec) = self.vpc_endpoint_spec() {
            let step = "destroy kms endpoint";
            spec.send(c, step).await?;
            let deployment = self.state.deployment.clone();
            // The endpoint's interfaces hold its security group until they are gone.
            wait_until(step, wait, || async {
                Ok(live_vpc_endpoints(c, &deployment, step).await?.is_empty())
            })
            .await?;
            self.state.vpc_endpoint_id = None;
            self.removed(&mut report, format!("kms-endpoint {}", spec.ids.join(",")))?;
        }
        for spec in self.security_group_specs() {
            spec.send(c, "destroy security group", wait).await?;
            if self.state.endpoint_security_group_id.as_deref() == Some(spec.id.as_str()) {
                self.state.endpoint_security_group_id = None;
            } else {
                self.state.security_group_id = None;
            }
            self.removed(&mut report, format!("security-group {}", spec.id))?;
        }
        if let Some((removes, delete)) = self.instance_profile_specs() {
            let step = "destroy instance profile";
            for r in removes {
                r.send(c, step).await?;
            }
            delete.send(c, step).await?;
            self.state.instance_profile_name = None;
            self.removed(&mut report, format!("instance-profile {}", delete.name))?;
        }
        if let Some((deletes, delete)) = self.role_specs() {
            let step = "destroy role";
            for d in deletes {
                d.send(c, step).await?;
            }
            self.state.role_policy_name = None;
            delete.send(c, step).await?;
            self.state.role_name = None;
            self.removed(&mut report, format!("role {}", delete.name))?;
        }
        if let Some(spec) = self.alias_spec() {
            spec.send(c, "destroy kms key").await?;
            self.state.key_alias = None;
            self.removed(&mut report, format!("kms-alias {}", spec.alias))?;
        }
        if let Some(spec) = self.key_spec() {
            if let Some(date) = spec.send(c, "destroy kms key").await? {
                report.key_deletion = Some(KeyDeletion {
                    key_id: spec.key.clone(),
                    deletion_date: date,
                    pending_days: spec.days,
                });
            }
            self.state.key_id = None;
            self.state.key_arn = None;
            self.removed(
                &mut report,
                format!("kms-key {} (scheduled for deletion)", spec.key),
            )?;
        }
        for spec in self.image_specs() {
            spec.send(c, "destroy image").await?;
            self.state.image_id = None;
            self.removed(&mut report, format!("image {}", spec.image))?;
        }
        for spec in self.snapshot_specs() {
            spec.send(c, "destroy snapshot").await?;
            if self.state.model_snapshot_id.as_deref() == Some(spec.snapshot.as_str()) {
                self.state.model_snapshot_id = None;
                self.state.model_sha256 = None;
                self.state.model_decrypts_to = None;
            } else {
                self.state.snapshot_id = None;
            }
            self.removed(&mut report, format!("snapshot {}", spec.snapshot))?;
        }
        pb.finish_and_clear();
        DeployState::remove(&self.dir)?;
        Ok(report)
    }

    fn removed(&mut self, report: &mut DestroyReport, what: String) -> Result<(), AwsError> {
        log::info!("removed {what}");
        report.removed.push(what);
        self.state.save(&self.dir)
    }
}

/// The deployment's endpoint services (by tag) that are not deleted yet.
async fn live_endpoint_services(
    c: &Clients,
    deployment: &str,
    step: &str,
) -> Result<Vec<String>, AwsError> {
    let out = c
        .ec2
        .describe_vpc_endpoint_service_configurations()
        .filters(ec2_filter(&format!("tag:{TAG_DEPLOYMENT}"), deployment))
        .send()
        .await
        .map_err(|e| api_error(step, "ec2:DescribeVpcEndpointServiceConfigurations", e))?;
    let mut ids: Vec<String> = out
        .service_configurations()
        .iter()
        .filter(|s| {
            !s.service_state()
                .is_some_and(|st| st.as_str().eq_ignore_ascii_case("deleted"))
        })
        .filter_map(|s| s.service_id().map(str::to_owned))
        .collect();
    ids.sort();
    Ok(ids)
}

/// The deployment's VPC endpoints (by tag) that are not deleted yet.
async fn live_vpc_endpoints(
    c: &Clients,
    deployment: &str,
    step: &str,
) -> Result<Vec<String>, AwsError> {
    let out = c
        .ec2
        .describe_vpc_endpoints()
        .filters(ec2_filter(&format!("tag:{TAG_DEPLOYMENT}"), deployment))
        .send()
        .await
        .map_err(|e| api_error(step, "ec2:DescribeVpcEndpoints", e))?;
    let mut ids: Vec<String> = out
        .vpc_endpoints()
        .iter()
        .filter(|e| !endpoint_state_in(e.state(), &["deleted"]))
        .filter_map(|e| e.vpc_endpoint_id().map(str::to_owned))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Polls `done` every few seconds until it says so or `wait` runs out.
async fn wait_until<F, Fut>(step: &str, wait: Duration, mut done: F) -> Result<(), AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, AwsError>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        if done().await? {
            return Ok(());
        }
        if started.elapsed() > wait {
            return Err(AwsError::step(
                step,
                format!(
                    "still there after {} s: run `zoa destroy` again to continue",
                    wait.as_secs()
                ),
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Found ids plus the recorded one, each once: a resource is removed whether the record
/// or its tags remember it.
fn with_recorded(ids: &mut Vec<String>, recorded: &Option<String>) {
    ids.extend(recorded.clone());
    ids.sort();
    ids.dedup();
}

fn tagged(tags: &[aws_sdk_iam::types::Tag], deployment: &str) -> bool {
    tags.iter()
        .any(|t| t.key() == TAG_DEPLOYMENT && t.value() == deployment)
}
