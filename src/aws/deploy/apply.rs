//! Applying a deploy: the plan's `Create` steps in order, each sending the specs the plan
//! rendered (built by the same functions in `steps`) and recording what it made in
//! `deploy.json` the moment it exists.

use std::path::{Path, PathBuf};

use super::{DeployOutcome, Deployment, DISK_NAME, ROLE_POLICY_NAME};
use crate::aws::calls::ebs::SnapshotUpload;
use crate::aws::calls::kms;
use crate::aws::calls::Outcome;
use crate::aws::plan::{Action, Plan};
use crate::aws::state::DeployState;
use crate::aws::{error_chain, AwsError, Clients, Remedy};
use crate::progress::Progress;
use crate::release::VerifiedRelease;

/// The disk image a deploy uploads, in an unnamed temporary file: no other process can
/// open it by name, so the snapshot holds the bytes written from the verified UKI.
#[derive(Debug)]
pub(super) struct PrivateDisk {
    file: std::fs::File,
    pub size: u64,
    pub sha256: String,
}

impl PrivateDisk {
    /// Writes the disk image of the verified UKI (deterministic: seeded with the manifest
    /// digest) into an unnamed temporary file, and hashes it.
    pub fn write(release: &VerifiedRelease) -> Result<PrivateDisk, AwsError> {
        let step = "disk";
        let mut seed = [0u8; 32];
        hex::decode_to_slice(release.manifest_sha256(), &mut seed)
            .map_err(|e| AwsError::step(step, format!("manifest digest: {e}")))?;
        let file = tempfile::tempfile()
            .map_err(|e| AwsError::step(step, format!("creating a temporary file: {e}")))?;
        crate::uefi::disk::write_esp_disk_into(release.uki(), &file, Path::new(DISK_NAME), &seed)
            .map_err(|e| AwsError::step(step, e.to_string()))?;
        let hash = |mut f: &std::fs::File| {
            std::io::Seek::rewind(&mut f)?;
            crate::digest::sha256_reader(f)
        };
        let (sha256, size) = hash(&file)
            .map_err(|e| AwsError::step(step, format!("hashing the {DISK_NAME}: {e}")))?;
        Ok(PrivateDisk { file, size, sha256 })
    }

    /// A path to the open file for the uploader, which opens files by path: Linux's
    /// `/proc/self/fd/N` reopens this very file (it has no other name).
    pub(super) fn path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

impl Deployment {
    /// Executes the plan's `Create` steps in order, recording each resource as it appears.
    pub async fn apply(
        &mut self,
        c: &Clients,
        progress: Progress,
    ) -> Result<DeployOutcome, AwsError> {
        let plan = self.plan()?;
        self.adopt_found()?;
        for step in &plan.steps {
            if step.action != Action::Create {
                continue;
            }
            let pb = progress.stage(format!("{}: {}", step.step, step.resource));
            log::info!("{}: creating {}", step.step, step.resource);
            self.run_step(c, step.step, progress).await?;
            pb.finish_and_clear();
        }
        // The final plan: everything exists now.
        self.found = self.find_existing(c).await?;
        self.adopt_found()?;
        let final_plan = self.plan()?;
        Ok(DeployOutcome {
            plan: Plan {
                steps: plan.steps,
                ..final_plan
            },
            state: self.state.clone(),
        })
    }

    /// Records what discovery found (e.g. created just before a crash) in deploy.json.
    pub(super) fn adopt_found(&mut self) -> Result<(), AwsError> {
        let f = self.found.clone();
        let s = &mut self.state;
        if let Some(id) = f.snapshot {
            s.snapshot_id = Some(id);
        }
        if let (Some(id), Some(m)) = (f.model_snapshot, &self.model) {
            s.model_snapshot_id = Some(id);
            s.model_sha256 = Some(m.sha256.clone());
            s.model_decrypts_to = m.decrypts_to.clone();
        }
        if let Some(id) = f.image {
            s.image_id = Some(id);
        }
        if f.role {
            s.role_name = Some(self.names.role.clone());
        }
        if f.instance_profile {
            s.instance_profile_name = Some(self.names.instance_profile.clone());
        }
        if let Some((id, arn)) = f.key {
            s.key_id = Some(id);
            s.key_arn = Some(arn);
            if f.key_alias {
                s.key_alias = Some(self.names.key_alias.clone());
            }
            s.key_locked = self.options.lock_policy;
        }
        if f.role_policy {
            s.role_policy_name = Some(ROLE_POLICY_NAME.to_owned());
        }
        if let Some(id) = f.security_group {
            s.security_group_id = Some(id);
        }
        if let Some(id) = f.endpoint_group {
            s.endpoint_security_group_id = Some(id);
        }
        if let Some(id) = f.vpc_endpoint {
            s.vpc_endpoint_id = Some(id);
        }
        if let Some(arn) = f.target_group {
            s.target_group_arn = Some(arn);
        }
        if let Some(arn) = f.load_balancer {
            s.load_balancer_arn = Some(arn);
        }
        if let Some(service) = f.endpoint_service {
            s.endpoint_service_id = Some(service.id);
            s.endpoint_service_name = Some(service.name);
        }
        if !f.instances.is_empty() {
            s.instance_ids = f.instances;
            // A single instance is found by the digest of the user data it booted with;
            // a fleet's user data is recorded only after its instance refresh.
            if let Some(ud) = &self.user_data {
                s.user_data_sha256 = Some(ud.sha256.clone());
                s.secrets = ud.secrets.clone();
            }
        }
        if let Some(id) = f.launch_template {
            s.launch_template_id = Some(id);
        }
        if f.auto_scaling_group {
            s.auto_scaling_group = Some(self.names.auto_scaling_group.clone());
        }
        self.save()
    }

    pub(super) fn save(&self) -> Result<(), AwsError> {
        self.state.save(&self.options.dir)
    }

    /// Records the user data asked for as the instances' (once they boot with it).
    pub(super) fn record_user_data(&mut self) {
        if let Some(ud) = &self.user_data {
            self.state.user_data_sha256 = Some(ud.sha256.clone());
            self.state.secrets = ud.secrets.clone();
        }
    }

    pub(super) async fn run_step(
        &mut self,
        c: &Clients,
        step: &str,
        progress: Progress,
    ) -> Result<(), AwsError> {
        match step {
            "snapshot" => self.create_snapshot(c, progress).await,
            "model-snapshot" => self.create_model_snapshot(c, progress).await,
            "image" => self.create_image(c).await,
            "role" => self.create_role(c).await,
            "instance-profile" => self.create_instance_profile(c).await,
            "kms-key" => self.create_key(c).await,
            "kms-alias" => self.create_alias(c).await,
            "role-policy" => self.put_role_policy(c).await,
            "kms-endpoint-group" => self.create_endpoint_group(c).await,
            "kms-endpoint-group-rules" => self.set_endpoint_group_rules(c).await,
            "kms-endpoint" => self.create_vpc_endpoint(c).await,
            "kms-endpoint-policy" => self.set_vpc_endpoint_policy(c).await,
            "target-group" => self.create_target_group(c).await,
            "load-balancer" => self.create_load_balancer(c).await,
            "listener" => self.create_listener(c).await,
            "endpoint-service" => self.create_endpoint_service(c).await,
            "endpoint-service-principals" => self.set_service_principals(c).await,
            "targets" => self.register_targets(c).await,
            "security-group" => self.create_security_group(c).await,
            "security-group-rules" => self.set_security_group_rules(c).await,
            "instance" => self.run_instance(c).await,
            "old-instances" => self.terminate_outdated_instances(c).await,
            "launch-template" => self.create_launch_template(c).await,
            "auto-scaling-group" => self.create_auto_scaling_group(c).await,
            "user-data" => self.roll_in_user_data(c, progress).await,
            other => Err(AwsError::step(other, "unknown step (a bug in zoa)")),
        }
    }

    pub(super) async fn create_vpc_endpoint(&mut self, c: &Clients) -> Result<(), AwsError> {
        let id = self.create_endpoint_spec().send(c, "kms endpoint").await?;
        self.state.vpc_endpoint_id = Some(id);
        self.save()
    }

    pub(super) async fn set_vpc_endpoint_policy(&mut self, c: &Clients) -> Result<(), AwsError> {
        self.endpoint_policy_spec()?
            .send(c, "kms endpoint policy")
            .await
    }

    pub(super) async fn create_snapshot(
        &mut self,
        c: &Clients,
        progress: Progress,
    ) -> Result<(), AwsError> {
        let step = "snapshot";
        let spec = self
            .disk_upload_spec()
            .ok_or_else(|| AwsError::step(step, "no disk image written (a bug in zoa)"))?;
        let disk = self
            .disk
            .take()
            .ok_or_else(|| AwsError::step(step, "no disk image written (a bug in zoa)"))?;
        self.state.disk_sha256 = Some(disk.sha256.clone());
        self.upload(c, &progress, step, &spec, &disk.path(), |s, id| {
            s.snapshot_id = Some(id)
        })
        .await?;
        // Held open until here: the upload read it through its descriptor.
        drop(disk);
        Ok(())
    }

    /// The model file as a snapshot of its own, tagged with its digest. coldsnap reads it
    /// in 512 KiB blocks, pads the last one with zeros and rounds the volume up to whole
    /// GiB, so any file size works; zoa-init reads only the pinned length.
    pub(super) async fn create_model_snapshot(
        &mut self,
        c: &Clients,
        progress: Progress,
    ) -> Result<(), AwsError> {
        let step = "model snapshot";
        let model = self
            .model
            .clone()
            .ok_or_else(|| AwsError::step(step, "no model (a bug in zoa)"))?;
        let file = model.file.clone().ok_or_else(|| {
            AwsError::refused(
                step,
                "no model snapshot found, and no model file was given",
                Remedy::GiveModel { encrypted: false },
            )
        })?;
        let spec = self.model_upload_spec(&model);
        self.upload(c, &progress, step, &spec, &file, |s, id| {
            s.model_snapshot_id = Some(id);
            s.model_sha256 = Some(model.sha256.clone());
            s.model_decrypts_to = model.decrypts_to.clone();
        })
        .await
    }

    /// Uploads `file` as `spec` says, records the snapshot (before waiting: a snapshot
    /// that never completes is still the deployment's to destroy), and waits until it is
    /// completed.
    pub(super) async fn upload(
        &mut self,
        c: &Clients,
        progress: &Progress,
        step: &str,
        spec: &SnapshotUpload,
        file: &Path,
        record: impl FnOnce(&mut DeployState, String),
    ) -> Result<(), AwsError> {
        let id = spec.send(c, step, file, progress).await?;
        self.found
            .stale_snapshots
            .retain(|s| !spec.stale.contains(s));
        self.found
            .stale_model_snapshots
            .retain(|s| !spec.stale.contains(s));
        record(&mut self.state, id.clone());
        self.save()?;
        coldsnap::SnapshotWaiter::new(c.ec2.clone())
            .wait_for_completed(&id)
            .await
            .map_err(|e| {
                AwsError::step(
                    step,
                    format!("waiting for {id} to complete: {}", error_chain(&e)),
                )
            })?;
        Ok(())
    }

    pub(super) async fn create_image(&mut self, c: &Clients) -> Result<(), AwsError> {
        let id = self.register_image_spec().send(c, "image").await?;
        self.state.image_id = Some(id);
        self.save()
    }

    pub(super) async fn create_role(&mut self, c: &Clients) -> Result<(), AwsError> {
        let step = "role";
        let spec = self.create_role_spec();
        // Created by an earlier attempt whose answer was lost: it is ours if tagged so.
        if spec.send(c, step).await? == Outcome::AlreadyThere && !self.iam_role_exists(c).await? {
            return Err(AwsError::step(
                step,
                format!(
                    "{}: a role of that name exists, and it is not this deployment's",
                    crate::aws::calls::iam::CreateRole::API
                ),
            ));
        }
        self.state.role_name = Some(self.names.role.clone());
        self.save()
    }

    pub(super) async fn create_instance_profile(&mut self, c: &Clients) -> Result<(), AwsError> {
        let step = "instance profile";
        let (profile, add_role) = self.instance_profile_specs();
        profile.send(c, step).await?;
        // Recorded before the role is added, so destroy removes a half-made profile too.
        self.state.instance_profile_name = Some(self.names.instance_profile.clone());
        self.save()?;
        add_role.send(c, step).await?;
        Ok(())
    }

    pub(super) async fn create_key(&mut self, c: &Clients) -> Result<(), AwsError> {
        let spec = self.create_key_spec()?;
        let key = spec.send(c, "kms key").await?;
        self.state.key_policy_sha256 = Some(kms::policy_sha256(&spec.policy));
        self.state.key_id = Some(key.id);
        self.state.key_arn = key.arn;
        self.state.key_locked = self.options.lock_policy;
        self.save()
    }

    pub(super) async fn create_alias(&mut self, c: &Clients) -> Result<(), AwsError> {
        self.create_alias_spec().send(c, "kms key").await?;
        self.state.key_alias = Some(self.names.key_alias.clone());
        self.save()
    }

    pub(super) async fn put_role_policy(&mut self, c: &Clients) -> Result<(), AwsError> {
        self.role_policy_spec()?.send(c, "role policy").await?;
        self.state.role_policy_name = Some(ROLE_POLICY_NAME.to_owned());
        self.save()
    }

    pub(super) async fn run_instance(&mut self, c: &Clients) -> Result<(), AwsError> {
        self.state.instance_ids = self.run_instances_spec().send(c, "instance").await?;
        self.record_user_data();
        self.save()
    }

    /// Terminates the instances that booted with other user data (the new one runs).
    pub(super) async fn terminate_outdated_instances(
        &mut self,
        c: &Clients,
    ) -> Result<(), AwsError> {
        let Some(spec) = self.terminate_outdated_spec() else {
            return Ok(());
        };
        spec.send(c, "old instances").await?;
        self.found.outdated_instances.clear();
        self.state.instance_ids.retain(|i| !spec.ids.contains(i));
        self.save()
    }

    /// New user data for a fleet: a launch template version with it (unless the latest
    /// has it already), made the default, then an instance refresh, after which the user
    /// data is recorded.
    pub(super) async fn roll_in_user_data(
        &mut self,
        c: &Clients,
        progress: Progress,
    ) -> Result<(), AwsError> {
        let step = "user data";
        let (version, refresh) = self
            .template_user_data_specs()
            .ok_or_else(|| AwsError::step(step, "no user data to roll in (a bug in zoa)"))?;
        if let Some(version) = version {
            version.send(c, step).await?;
            self.found.template_user_data = self.user_data.as_ref().map(|u| u.sha256.clone());
        }
        let pb = progress.stage(format!("instance refresh of {}", refresh.group));
        refresh
            .send_and_wait(
                c,
                "instance refresh",
                self.options.refresh_wait,
                "zoa deploy",
            )
            .await?;
        pb.finish_and_clear();
        self.record_user_data();
        self.save()
    }

    pub(super) async fn create_launch_template(&mut self, c: &Clients) -> Result<(), AwsError> {
        let id = self
            .launch_template_spec()
            .send(c, "launch template")
            .await?;
        self.state.launch_template_id = Some(id);
        // Every instance of the group will boot with it.
        self.record_user_data();
        self.save()
    }

    pub(super) async fn create_auto_scaling_group(&mut self, c: &Clients) -> Result<(), AwsError> {
        self.auto_scaling_group_spec()
            .send(c, "auto scaling group")
            .await?;
        self.state.auto_scaling_group = Some(self.names.auto_scaling_group.clone());
        self.save()
    }
}
