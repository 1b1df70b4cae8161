//! `zoa destroy DIR`: removes what `zoa deploy` created, newest first, from the deploy
//! record and, for anything created just before a crash and never recorded, from zoa's
//! names and tags. Each removal is recorded at once, so an interrupted destroy resumes.
//! KMS keys cannot be deleted immediately: they are scheduled for deletion after a waiting
//! period (7–30 days), during which the deletion can still be cancelled.

use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types as ec2t;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::deploy::{ec2_filter, Names};
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

/// Removes everything of the deployment recorded in `DIR/deploy/deploy.json`.
pub async fn destroy(
    c: &Clients,
    dir: &Path,
    options: &DestroyOptions,
    progress: Progress,
) -> Result<DestroyReport, AwsError> {
    if !(7..=30).contains(&options.key_deletion_days) {
        return Err(AwsError::step(
            "configuration",
            format!(
                "--key-deletion-days {}: KMS accepts 7 to 30",
                options.key_deletion_days
            ),
        ));
    }
    let mut state = DeployState::load(dir)?.ok_or_else(|| {
        AwsError::file(
            &DeployState::path(dir),
            "no deploy record: nothing was deployed from this directory (or it was destroyed)",
        )
    })?;
    if state.region != c.region {
        return Err(AwsError::file(
            &DeployState::path(dir),
            format!(
                "records a deploy in {}, but the configured region is {}: pass --region {}",
                state.region, c.region, state.region
            ),
        ));
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
    let mut d = Destroyer {
        c,
        dir,
        options,
        names,
        report: DestroyReport {
            deployment: state.deployment.clone(),
            ..DestroyReport::default()
        },
    };
    let pb = progress.stage(format!("destroying {}", state.deployment));
    d.auto_scaling_group(&mut state).await?;
    d.launch_template(&mut state).await?;
    d.instances(&mut state).await?;
    d.security_group(&mut state).await?;
    d.instance_profile(&mut state).await?;
    d.role(&mut state).await?;
    d.key(&mut state).await?;
    d.image(&mut state).await?;
    d.snapshots(&mut state).await?;
    pb.finish_and_clear();
    DeployState::remove(dir)?;
    Ok(d.report)
}

struct Destroyer<'a> {
    c: &'a Clients,
    dir: &'a Path,
    options: &'a DestroyOptions,
    names: Names,
    report: DestroyReport,
}

impl Destroyer<'_> {
    fn removed(&mut self, state: &DeployState, what: String) -> Result<(), AwsError> {
        log::info!("removed {what}");
        self.report.removed.push(what);
        state.save(self.dir)
    }

    async fn auto_scaling_group(&mut self, state: &mut DeployState) -> Result<(), AwsError> {
        let step = "destroy auto scaling group";
        let name = self.names.auto_scaling_group.clone();
        let out = self
            .c
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&name)
            .send()
            .await
            .map_err(|e| api_error(step, "autoscaling:DescribeAutoScalingGroups", e))?;
        let ours = out.auto_scaling_groups().iter().any(|g| {
            g.tags()
                .iter()
                .any(|t| t.key() == Some(TAG_DEPLOYMENT) && t.value() == Some(&state.deployment))
        });
        if ours {
            self.c
                .autoscaling
                .delete_auto_scaling_group()
                .auto_scaling_group_name(&name)
                .force_delete(true)
                .send()
                .await
                .map_err(|e| api_error(step, "autoscaling:DeleteAutoScalingGroup", e))?;
            self.wait_until(step, || async {
                let out = self
                    .c
                    .autoscaling
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names(&name)
                    .send()
                    .await
                    .map_err(|e| api_error(step, "autoscaling:DescribeAutoScalingGroups", e))?;
                Ok(out.auto_scaling_groups().is_empty())
            })
            .await?;
        }
        if ours || state.auto_scaling_group.is_some() {
            state.auto_scaling_group = None;
            self.removed(state, format!("auto-scaling-group {name}"))?;
        }
        Ok(())
    }

    async fn launch_template(&mut self, state: &mut DeployState) -> Result<(), AwsError> {
        let step = "destroy launch template";
        let out = self
            .c
            .ec2
            .describe_launch_templates()
            .filters(ec2_filter(
                &format!("tag:{TAG_DEPLOYMENT}"),
                &state.deployment,
            ))
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeLaunchTemplates", e))?;
        let mut ids: Vec<String> = out
            .launch_templates()
            .iter()
            .filter_map(|t| t.launch_template_id().map(str::to_owned))
            .collect();
        with_recorded(&mut ids, &state.launch_template_id);
        for id in ids {
            match self
                .c
                .ec2
                .delete_launch_template()
                .launch_template_id(&id)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if e.code().is_some_and(|c| c.contains("NotFound")) => {}
                Err(e) => return Err(api_error(step, "ec2:DeleteLaunchTemplate", e)),
            }
            state.launch_template_id = None;
            self.removed(state, format!("launch-template {id}"))?;
        }
        Ok(())
    }

    async fn live_instances(&self, deployment: &str, step: &str) -> Result<Vec<String>, AwsError> {
        let out = self
            .c
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

    async fn instances(&mut self, state: &mut DeployState) -> Result<(), AwsError> {
        let step = "destroy instances";
        let mut ids = self.live_instances(&state.deployment, step).await?;
        ids.sort();
        if !ids.is_empty() {
            self.c
                .ec2
                .terminate_instances()
                .set_instance_ids(Some(ids.clone()))
                .send()
                .await
                .map_err(|e| api_error(step, "ec2:TerminateInstances", e))?;
            let deployment = state.deployment.clone();
            self.wait_until(step, || async {
                let live = self.live_instances(&deployment, step).await?;
                Ok(live.is_empty())
            })
            .await?;
        }
        if !ids.is_empty() || !state.instance_ids.is_empty() {
            state.instance_ids.clear();
            self.removed(state, format!("instances {}", ids.join(",")))?;
        }
        Ok(())
    }

    async fn security_group(&mut self, state: &mut DeployState) -> Result<(), AwsError> {
        let step = "destroy security group";
        let out = self
            .c
            .ec2
            .describe_security_groups()
            .filters(ec2_filter(
                &format!("tag:{TAG_DEPLOYMENT}"),
                &state.deployment,
            ))
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeSecurityGroups", e))?;
        let mut ids: Vec<String> = out
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_owned))
            .collect();
        with_recorded(&mut ids, &state.security_group_id);
        for id in ids {
            // Network interfaces of terminated instances linger for a while.
            let started = Instant::now();
            loop {
                match self
                    .c
                    .ec2
                    .delete_security_group()
                    .group_id(&id)
                    .send()
                    .await
                {
                    Ok(_) => break,
                    Err(e) if e.code() == Some("InvalidGroup.NotFound") => break,
                    Err(e)
                        if e.code() == Some("DependencyViolation")
                            && started.elapsed() < self.options.wait =>
                    {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Err(e) => return Err(api_error(step, "ec2:DeleteSecurityGroup", e)),
                }
            }
            state.security_group_id = None;
            self.removed(state, format!("security-group {id}"))?;
        }
        Ok(())
    }

    async fn instance_profile(&mut self, state: &mut DeployState) -> Result<(), AwsError> {
        let step = "destroy instance profile";
        let name = state
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
        if let Some(profile) = profile {
            if !tagged(profile.tags(), &state.deployment) {
                log::warn!("instance profile {name} is not tagged for this deployment: left alone");
                return Ok(());
            }
            for role in profile.roles() {
                self.c
                    .iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(&name)
                    .role_name(role.role_name())
                    .send()
                    .await
                    .map_err(|e| api_error(step, "iam:RemoveRoleFromInstanceProfile", e))?;
            }
            match self
                .c
                .iam
                .delete_instance_profile()
                .instance_profile_name(&name)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_no_such_entity_exception()) => {}
                Err(e) => return Err(api_error(step, "iam:DeleteInstanceProfile", e)),
            }
            state.instance_profile_name = None;
            self.removed(state, format!("instance-profile {name}"))?;
        } else if state.instance_profile_name.take().is_some() {
            state.save(self.dir)?;
        }
        Ok(())
    }

    async fn role(&mut self, state: &mut DeployState) -> Result<(), AwsError> {
        let step = "destroy role";
        let name = state
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
            if state.role_name.take().is_some() || state.role_policy_name.take().is_some() {
                state.save(self.dir)?;
            }
            return Ok(());
        };
        if !tagged(role.tags(), &state.deployment) {
            log::warn!("role {name} is not tagged for this deployment: left alone");
            return Ok(());
        }
        let policies = self
            .c
            .iam
            .list_role_policies()
            .role_name(&name)
            .send()
            .await
            .map_err(|e| api_error(step, "iam:ListRolePolicies", e))?;
        for p in policies.policy_names() {
            self.c
                .iam
                .delete_role_policy()
                .role_name(&name)
                .policy_name(p)
                .send()
                .await
                .map_err(|e| api_error(step, "iam:DeleteRolePolicy", e))?;
        }
        state.role_policy_name = None;
        match self.c.iam.delete_role().role_name(&name).send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) => {}
            Err(e) => return Err(api_error(step, "iam:DeleteRole", e)),
        }
        state.role_name = None;
        self.removed(state, format!("role {name}"))
    }

    async fn key(&mut self, state: &mut DeployState) -> Result<(), AwsError> {
        let step = "destroy kms key";
        let alias = state
            .key_alias
            .clone()
            .unwrap_or_else(|| self.names.key_alias.clone());
        let mut key_id = state.key_id.clone();
        if let Some(aliased) = delete_alias_if_present(self.c, step, &alias).await? {
            key_id.get_or_insert(aliased);
            state.key_alias = None;
            self.removed(state, format!("kms-alias {alias}"))?;
        }
        let Some(key_id) = key_id else {
            return Ok(());
        };
        let days = self.options.key_deletion_days;
        if let Some(date) = schedule_key_deletion_if_live(self.c, step, &key_id, days).await? {
            self.report.key_deletion = Some(KeyDeletion {
                key_id: key_id.clone(),
                deletion_date: date,
                pending_days: days,
            });
        }
        state.key_id = None;
        state.key_arn = None;
        self.removed(state, format!("kms-key {key_id} (scheduled for deletion)"))
    }

    async fn image(&mut self, state: &mut DeployState) -> Result<(), AwsError> {
        let step = "destroy image";
        let out = self
            .c
            .ec2
            .describe_images()
            .owners("self")
            .filters(ec2_filter(
                &format!("tag:{TAG_DEPLOYMENT}"),
                &state.deployment,
            ))
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeImages", e))?;
        let mut ids: Vec<String> = out
            .images()
            .iter()
            .filter_map(|i| i.image_id().map(str::to_owned))
            .collect();
        with_recorded(&mut ids, &state.image_id);
        for id in ids {
            deregister_image_if_present(self.c, step, &id).await?;
            state.image_id = None;
            self.removed(state, format!("image {id}"))?;
        }
        Ok(())
    }

    async fn snapshots(&mut self, state: &mut DeployState) -> Result<(), AwsError> {
        let step = "destroy snapshot";
        let out = self
            .c
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(ec2_filter(
                &format!("tag:{TAG_DEPLOYMENT}"),
                &state.deployment,
            ))
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:DescribeSnapshots", e))?;
        let mut ids: Vec<String> = out
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_owned))
            .collect();
        // The boot disk's and the model's (both tagged, both recorded).
        with_recorded(&mut ids, &state.snapshot_id);
        with_recorded(&mut ids, &state.model_snapshot_id);
        for id in ids {
            delete_snapshot_if_present(self.c, step, &id).await?;
            if state.model_snapshot_id.as_deref() == Some(id.as_str()) {
                state.model_snapshot_id = None;
                state.model_sha256 = None;
            } else {
                state.snapshot_id = None;
            }
            self.removed(state, format!("snapshot {id}"))?;
        }
        Ok(())
    }

    /// Polls `done` every few seconds until it says so or the wait runs out.
    async fn wait_until<F, Fut>(&self, step: &str, mut done: F) -> Result<(), AwsError>
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
            if started.elapsed() > self.options.wait {
                return Err(AwsError::step(
                    step,
                    format!(
                        "still there after {} s: run `zoa destroy` again to continue",
                        self.options.wait.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// DeleteAlias when the alias exists; the id of the key it pointed at.
pub(crate) async fn delete_alias_if_present(
    c: &Clients,
    step: &str,
    alias: &str,
) -> Result<Option<String>, AwsError> {
    let key_id = match c.kms.describe_key().key_id(alias).send().await {
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
        .alias_name(alias)
        .send()
        .await
        .map_err(|e| api_error(step, "kms:DeleteAlias", e))?;
    Ok(key_id)
}

/// ScheduleKeyDeletion after `days` (7–30) unless the key is gone or already pending
/// deletion; the date KMS will delete it.
pub(crate) async fn schedule_key_deletion_if_live(
    c: &Clients,
    step: &str,
    key_id: &str,
    days: i32,
) -> Result<Option<String>, AwsError> {
    let meta = match c.kms.describe_key().key_id(key_id).send().await {
        Ok(out) => out.key_metadata().cloned(),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_not_found_exception()) =>
        {
            None
        }
        Err(e) => return Err(api_error(step, "kms:DescribeKey", e)),
    };
    let live =
        meta.is_some_and(|m| m.key_state() != Some(&aws_sdk_kms::types::KeyState::PendingDeletion));
    if !live {
        return Ok(None);
    }
    let out = c
        .kms
        .schedule_key_deletion()
        .key_id(key_id)
        .pending_window_in_days(days)
        .send()
        .await
        .map_err(|e| api_error(step, "kms:ScheduleKeyDeletion", e))?;
    Ok(Some(
        out.deletion_date()
            .map(|d| d.to_string())
            .unwrap_or_default(),
    ))
}

/// DeregisterImage, where an image that is already gone is no error.
pub(crate) async fn deregister_image_if_present(
    c: &Clients,
    step: &str,
    id: &str,
) -> Result<(), AwsError> {
    match c.ec2.deregister_image().image_id(id).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidAMIID")) => Ok(()),
        Err(e) => Err(api_error(step, "ec2:DeregisterImage", e)),
    }
}

/// DeleteSnapshot, where a snapshot that is already gone is no error.
pub(crate) async fn delete_snapshot_if_present(
    c: &Clients,
    step: &str,
    id: &str,
) -> Result<(), AwsError> {
    match c.ec2.delete_snapshot().snapshot_id(id).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("InvalidSnapshot.NotFound") => Ok(()),
        Err(e) => Err(api_error(step, "ec2:DeleteSnapshot", e)),
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
