//! `zoa rollout NEW --from OLD`: replace a fleet's release without a window in which
//! neither release can unseal.
//!
//! 1. The new release's snapshot and AMI (as `zoa deploy` makes them).
//! 2. The key policy admits both releases' PCRs (`kms:PutKeyPolicy`).
//! 3. A new launch template version with the new AMI becomes the default.
//! 4. The Auto Scaling group's instance refresh replaces the instances (EC2's own engine).
//! 5. The key policy admits only the new release.
//! 6. The old AMI and snapshot are removed (unless `--keep-old`); the deploy record moves
//!    from OLD/deploy to NEW/deploy.
//!
//! Each step checks what is already done, so a rerun after a failure resumes. A key made
//! with `--lock-policy` cannot be edited; such a rollout is refused with the way forward
//! (a new deployment with a new key, secrets re-sealed for it).

use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types as ec2t;

use super::deploy::{self, DeployOptions, Deployment, KeyAdmits, RolloutFrom};
use super::plan::{Action, Call, Plan, Step};
use super::state::DeployState;
use super::{api_error, AwsError, Clients};
use crate::progress::Progress;

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct RolloutOptions {
    pub new_dir: PathBuf,
    pub old_dir: PathBuf,
    pub pubkey: PathBuf,
    /// Keep the old AMI and snapshot (for a quick way back).
    pub keep_old: bool,
    /// Instance refresh: the share of the group kept in service.
    pub min_healthy_percentage: i32,
    /// How long to wait for the instance refresh.
    pub wait: Duration,
}

/// A prepared rollout.
#[derive(Debug)]
pub struct Rollout {
    pub options: RolloutOptions,
    pub deployment: Deployment,
    old_state: DeployState,
    /// The image of the launch template's latest version.
    template_image: Option<String>,
    /// The most recent instance refresh's status.
    refresh_status: Option<String>,
}

/// What a rollout did.
#[derive(Debug, Serialize)]
pub struct RolloutOutcome {
    pub plan: Plan,
    pub state: DeployState,
}

/// Verifies both releases and reads the account (read-only calls only).
pub async fn prepare(c: &Clients, options: RolloutOptions) -> Result<Rollout, AwsError> {
    let old_state = DeployState::load(&options.old_dir)?.ok_or_else(|| {
        AwsError::file(
            &DeployState::path(&options.old_dir),
            "no deploy record: --from must be the release directory that was deployed",
        )
    })?;
    let fleet = old_state.auto_scaling_group.is_some() && old_state.launch_template_id.is_some();
    if !fleet {
        return Err(AwsError::step(
            "rollout",
            format!(
                "{} runs single instances, not an Auto Scaling group: a rollout replaces a fleet's instances with its instance refresh. Deploy the new release with --fleet (or under another --name), then destroy the old one",
                old_state.deployment
            ),
        ));
    }
    if old_state.key_locked {
        return Err(AwsError::step(
            "rollout",
            format!(
                "the key of {} was created with --lock-policy: its policy can never admit another release. Deploy the new release under a new --name (a new key), re-seal the secrets with `zoa seal --key NEW_DIR`, move traffic, then `zoa destroy` the old deployment",
                old_state.deployment
            ),
        ));
    }
    let (old_manifest, old_digest) =
        deploy::verify_release(&DeployOptions::new(&options.old_dir, &options.pubkey))?;
    if old_digest != old_state.release.manifest_sha256 {
        return Err(AwsError::file(
            &DeployState::path(&options.old_dir),
            "records another release than the directory holds",
        ));
    }
    let mut deploy_options = DeployOptions::new(&options.new_dir, &options.pubkey);
    deploy_options.name = Some(old_state.deployment.clone());
    deploy_options.fleet = true;
    deploy_options.rollout_from = Some(RolloutFrom {
        dir: options.old_dir.clone(),
        binding: deploy::binding_of(&old_manifest)?,
        state: old_state.clone(),
    });
    let deployment = deploy::prepare(c, deploy_options).await?;
    if deployment.manifest_sha256 == old_digest {
        return Err(AwsError::step(
            "rollout",
            "the new release is the deployed one: nothing to roll out",
        ));
    }
    let mut r = Rollout {
        options,
        deployment,
        old_state,
        template_image: None,
        refresh_status: None,
    };
    r.template_image = r.latest_template_image(c).await?;
    r.refresh_status = r.latest_refresh_status(c).await?;
    Ok(r)
}

impl Rollout {
    fn asg(&self) -> &str {
        self.old_state
            .auto_scaling_group
            .as_deref()
            .unwrap_or_default()
    }

    fn launch_template(&self) -> &str {
        self.old_state
            .launch_template_id
            .as_deref()
            .unwrap_or_default()
    }

    fn key_id(&self) -> String {
        self.deployment
            .state
            .key_id
            .clone()
            .unwrap_or_else(|| "<key-id>".to_owned())
    }

    fn new_image(&self) -> String {
        self.deployment
            .state
            .image_id
            .clone()
            .unwrap_or_else(|| "<image-id>".to_owned())
    }

    fn finished(&self) -> bool {
        self.deployment.key_admits() == Some(KeyAdmits::New)
    }

    async fn latest_template_image(&self, c: &Clients) -> Result<Option<String>, AwsError> {
        let out = c
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(self.launch_template())
            .versions("$Latest")
            .send()
            .await
            .map_err(|e| api_error("rollout", "ec2:DescribeLaunchTemplateVersions", e))?;
        Ok(out
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data())
            .and_then(|d| d.image_id())
            .map(str::to_owned))
    }

    async fn latest_refresh_status(&self, c: &Clients) -> Result<Option<String>, AwsError> {
        let out = c
            .autoscaling
            .describe_instance_refreshes()
            .auto_scaling_group_name(self.asg())
            .max_records(1)
            .send()
            .await
            .map_err(|e| api_error("rollout", "autoscaling:DescribeInstanceRefreshes", e))?;
        Ok(out
            .instance_refreshes()
            .first()
            .and_then(|r| r.status())
            .map(|s| s.as_str().to_owned()))
    }

    /// The deploy steps (new snapshot and AMI; the rest kept) and the rollout's own.
    pub fn plan(&self) -> Result<Plan, AwsError> {
        let mut plan = self.deployment.plan()?;
        let d = &self.deployment;
        let template_current =
            self.template_image.is_some() && self.template_image == d.state.image_id;
        let step = |name: &'static str, resource: String, done: bool, calls: Vec<Call>| Step {
            step: name,
            resource,
            action: if done {
                Action::Keep("done".to_owned())
            } else {
                Action::Create
            },
            calls: if done { Vec::new() } else { calls },
        };
        let put_policy = |admits: KeyAdmits| -> Result<Call, AwsError> {
            Ok(Call::new(
                "kms:PutKeyPolicy",
                json!({"KeyId": self.key_id(), "PolicyName": "default", "Policy": d.key_policy_admitting(admits)?}),
            ))
        };
        plan.steps.push(step(
            "admit-both",
            format!(
                "key policy admits {} and {}",
                self.old_state.release.version, d.manifest.version
            ),
            matches!(d.key_admits(), Some(KeyAdmits::Both | KeyAdmits::New)),
            vec![put_policy(KeyAdmits::Both)?],
        ));
        plan.steps.push(step(
            "template-version",
            format!("launch template version with {}", d.names.image),
            template_current || self.finished(),
            vec![
                Call::new(
                    "ec2:CreateLaunchTemplateVersion",
                    json!({"LaunchTemplateId": self.launch_template(), "SourceVersion": "$Latest", "LaunchTemplateData": {"ImageId": self.new_image()}}),
                ),
                Call::new(
                    "ec2:ModifyLaunchTemplate",
                    json!({"LaunchTemplateId": self.launch_template(), "DefaultVersion": "<new version>"}),
                ),
            ],
        ));
        plan.steps.push(step(
            "instance-refresh",
            format!("instance refresh of {}", self.asg()),
            self.finished() || (template_current && self.refresh_status.as_deref() == Some("Successful")),
            vec![Call::new(
                "autoscaling:StartInstanceRefresh",
                json!({"AutoScalingGroupName": self.asg(), "Preferences": {"MinHealthyPercentage": self.options.min_healthy_percentage}}),
            )],
        ));
        plan.steps.push(step(
            "admit-new-only",
            format!("key policy admits only {}", d.manifest.version),
            self.finished(),
            vec![put_policy(KeyAdmits::New)?],
        ));
        let mut retire = Vec::new();
        if !self.options.keep_old {
            if let Some(id) = &self.old_state.image_id {
                retire.push(Call::new("ec2:DeregisterImage", json!({"ImageId": id})));
            }
            if let Some(id) = &self.old_state.snapshot_id {
                retire.push(Call::new("ec2:DeleteSnapshot", json!({"SnapshotId": id})));
            }
        }
        plan.steps.push(step(
            "retire-old",
            format!("AMI and snapshot of {}", self.old_state.release.version),
            retire.is_empty(),
            retire,
        ));
        plan.warnings.push(format!(
            "instances of {} {} keep unsealing until the refresh has replaced them; afterwards only {} {} can",
            self.old_state.release.name,
            self.old_state.release.version,
            d.manifest.name,
            d.manifest.version
        ));
        Ok(plan)
    }

    /// Runs the steps not done yet.
    pub async fn apply(self, c: &Clients, progress: Progress) -> Result<RolloutOutcome, AwsError> {
        let plan = self.plan()?;
        let todo = |name: &str| {
            plan.steps
                .iter()
                .any(|s| s.step == name && s.action == Action::Create)
        };
        let (do_both, do_template, do_refresh, do_new, do_retire) = (
            todo("admit-both"),
            todo("template-version"),
            todo("instance-refresh"),
            todo("admit-new-only"),
            todo("retire-old"),
        );
        let options = self.options.clone();
        let old_state = self.old_state.clone();
        let both = self.deployment.key_policy_admitting(KeyAdmits::Both)?;
        let new_only = self.deployment.key_policy_admitting(KeyAdmits::New)?;
        let outcome = self.deployment.apply(c, progress).await?;
        let state = outcome.state;
        let key_id = state
            .key_id
            .clone()
            .ok_or_else(|| AwsError::step("rollout", "no KMS key recorded"))?;
        let image = state
            .image_id
            .clone()
            .ok_or_else(|| AwsError::step("rollout", "no new image recorded"))?;
        let asg = old_state.auto_scaling_group.clone().unwrap_or_default();
        let template = old_state.launch_template_id.clone().unwrap_or_default();
        if do_both {
            put_key_policy(c, &key_id, &both).await?;
        }
        if do_template {
            let out = c
                .ec2
                .create_launch_template_version()
                .launch_template_id(&template)
                .source_version("$Latest")
                .launch_template_data(
                    ec2t::RequestLaunchTemplateData::builder()
                        .image_id(&image)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| api_error("rollout", "ec2:CreateLaunchTemplateVersion", e))?;
            let version = out
                .launch_template_version()
                .and_then(|v| v.version_number())
                .ok_or_else(|| {
                    AwsError::step("rollout", "CreateLaunchTemplateVersion returned no version")
                })?;
            c.ec2
                .modify_launch_template()
                .launch_template_id(&template)
                .default_version(version.to_string())
                .send()
                .await
                .map_err(|e| api_error("rollout", "ec2:ModifyLaunchTemplate", e))?;
        }
        if do_refresh {
            let pb = progress.stage(format!("instance refresh of {asg}"));
            refresh_instances(c, &asg, &options).await?;
            pb.finish_and_clear();
        }
        if do_new {
            put_key_policy(c, &key_id, &new_only).await?;
        }
        if do_retire {
            retire_old(c, &old_state).await?;
        }
        state.save(&options.new_dir)?;
        DeployState::remove(&options.old_dir)?;
        Ok(RolloutOutcome { plan, state })
    }
}

async fn put_key_policy(
    c: &Clients,
    key_id: &str,
    policy: &serde_json::Value,
) -> Result<(), AwsError> {
    c.kms
        .put_key_policy()
        .key_id(key_id)
        .policy_name("default")
        .policy(policy.to_string())
        .send()
        .await
        .map_err(|e| api_error("rollout", "kms:PutKeyPolicy", e))?;
    Ok(())
}

/// StartInstanceRefresh and wait for its verdict; a refresh already running (from an
/// interrupted rollout) is waited for rather than started twice.
async fn refresh_instances(
    c: &Clients,
    asg: &str,
    options: &RolloutOptions,
) -> Result<(), AwsError> {
    let step = "instance refresh";
    let started = c
        .autoscaling
        .start_instance_refresh()
        .auto_scaling_group_name(asg)
        .preferences(
            aws_sdk_autoscaling::types::RefreshPreferences::builder()
                .min_healthy_percentage(options.min_healthy_percentage)
                .build(),
        )
        .send()
        .await;
    let refresh_id = match started {
        Ok(out) => out.instance_refresh_id().map(str::to_owned),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_instance_refresh_in_progress_fault()) =>
        {
            None
        }
        Err(e) => return Err(api_error(step, "autoscaling:StartInstanceRefresh", e)),
    };
    let begin = Instant::now();
    loop {
        let mut req = c
            .autoscaling
            .describe_instance_refreshes()
            .auto_scaling_group_name(asg)
            .max_records(1);
        if let Some(id) = &refresh_id {
            req = req.instance_refresh_ids(id);
        }
        let out = req
            .send()
            .await
            .map_err(|e| api_error(step, "autoscaling:DescribeInstanceRefreshes", e))?;
        let status = out
            .instance_refreshes()
            .first()
            .and_then(|r| r.status())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        match status.as_str() {
            "Successful" => return Ok(()),
            "Failed" | "Cancelled" | "RollbackSuccessful" | "RollbackFailed" => {
                let reason = out
                    .instance_refreshes()
                    .first()
                    .and_then(|r| r.status_reason())
                    .unwrap_or("no reason given");
                return Err(AwsError::step(
                    step,
                    format!("{status}: {reason}; the key still admits both releases, so the old instances keep working; fix and run `zoa rollout` again"),
                ));
            }
            _ => {}
        }
        if begin.elapsed() > options.wait {
            return Err(AwsError::step(
                step,
                format!(
                    "still {status} after {} s: run `zoa rollout` again to keep waiting",
                    options.wait.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

async fn retire_old(c: &Clients, old: &DeployState) -> Result<(), AwsError> {
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
    if let Some(id) = &old.image_id {
        match c.ec2.deregister_image().image_id(id).send().await {
            Ok(_) => {}
            Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidAMIID")) => {}
            Err(e) => return Err(api_error("retire old release", "ec2:DeregisterImage", e)),
        }
    }
    if let Some(id) = &old.snapshot_id {
        match c.ec2.delete_snapshot().snapshot_id(id).send().await {
            Ok(_) => {}
            Err(e) if e.code() == Some("InvalidSnapshot.NotFound") => {}
            Err(e) => return Err(api_error("retire old release", "ec2:DeleteSnapshot", e)),
        }
    }
    Ok(())
}
