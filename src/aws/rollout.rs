//! `zoa rollout NEW --from OLD`: replace a fleet's release without a window in which
//! neither release can unseal.
//!
//! 1. The new release's snapshot and AMI (as `zoa deploy` makes them).
//! 2. The key policy admits both releases' PCRs (`kms:PutKeyPolicy`).
//! 3. A new launch template version with the new AMI becomes the default.
//! 4. The Auto Scaling group's instance refresh replaces the instances (EC2's own engine).
//! 5. The key policy admits only the new release.
//! 6. The old AMI and snapshots are removed (unless `--keep-old`); the deploy record moves
//!    from OLD/deploy to NEW/deploy.
//!
//! A key made with `--lock-policy` can never admit another release, so the new release
//! gets a key of its own (alias `alias/zoa/NAME-<digest prefix>`, locked too) instead of
//! steps 2 and 5: the secrets recorded in the deploy record are re-sealed under it from
//! their plaintext (`--reseal NAME=FILE`, since sealers never get plaintext back from KMS;
//! the envelopes are kept in NEW/deploy/sealed/), the instance role may use both keys
//! while the instances are replaced, the new template version carries the new envelopes,
//! and afterwards the role may use only the new key and the old key is scheduled for
//! deletion.
//!
//! Each step checks what is already done, so a rerun after a failure resumes.

use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::calls::autoscaling::StartInstanceRefresh;
use super::calls::ec2::{
    latest_template_data, DeleteSnapshot, DeregisterImage, NewDefaultTemplateVersion,
    TemplateUserData,
};
use super::calls::iam::PutRolePolicy;
use super::calls::kms::{DeleteAlias, PutKeyPolicy, ScheduleKeyDeletion};
use super::calls::Id;
use super::deploy::{self, DeployOptions, Deployment, KeyAdmits, RolloutFrom, ROLE_POLICY_NAME};
use super::plan::{Action, Call, Plan, Step};
use super::policy;
use super::seal::{self, MAX_SECRET_LEN};
use super::state::DeployState;
use super::userdata::{self, SealedSecret, SecretArg, UserDataSpec};
use super::{api_error, AwsError, Clients, Remedy};
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
    /// The plaintext of each recorded secret, for re-sealing under a new key (locked keys).
    pub reseal: Vec<SecretArg>,
    /// Days before KMS deletes a replaced locked key (7–30).
    pub key_deletion_days: i32,
    /// The model the new release pins, when it is not the old release's.
    pub model: Option<PathBuf>,
}

impl RolloutOptions {
    pub fn new(new_dir: PathBuf, old_dir: PathBuf, pubkey: PathBuf) -> RolloutOptions {
        RolloutOptions {
            new_dir,
            old_dir,
            pubkey,
            keep_old: false,
            min_healthy_percentage: 90,
            wait: Duration::from_secs(3600),
            reseal: Vec::new(),
            key_deletion_days: 30,
            model: None,
        }
    }
}

/// A secret's plaintext, for re-sealing: zeroed when dropped, never printed.
struct Plaintext {
    name: String,
    bytes: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plaintext({}, {} bytes)", self.name, self.bytes.len())
    }
}

/// A rollout to a new key, because the old one is locked.
#[derive(Debug)]
struct NewKey {
    /// The secrets to re-seal, from `--reseal`, in name order.
    plaintexts: Vec<Plaintext>,
    /// Envelopes a previous run re-sealed under the new key (NEW/deploy/sealed/).
    sealed: Vec<SealedSecret>,
    /// The old key is scheduled for deletion (or gone): the rollout got that far.
    old_key_retired: bool,
}

/// A prepared rollout.
#[derive(Debug)]
pub struct Rollout {
    pub options: RolloutOptions,
    pub deployment: Deployment,
    old_state: DeployState,
    /// Set when the old key is locked.
    new_key: Option<NewKey>,
    /// The launch template's latest version: its image and the digest of its user data.
    template_image: Option<String>,
    template_user_data: Option<String>,
    /// The most recent instance refresh's status.
    refresh_status: Option<String>,
}

/// What a rollout did.
#[derive(Debug, Serialize)]
pub struct RolloutOutcome {
    pub plan: Plan,
    pub state: DeployState,
    /// The envelopes re-sealed under the new key (a rollout from a locked key).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sealed: Vec<PathBuf>,
}

/// Verifies both releases and reads the account (read-only calls only).
pub async fn prepare(c: &Clients, options: RolloutOptions) -> Result<Rollout, AwsError> {
    let old_state = DeployState::load(&options.old_dir)?.ok_or_else(|| {
        AwsError::file_refused(
            &DeployState::path(&options.old_dir),
            "no deploy record: the release to roll out from was never deployed from this directory",
            Remedy::DeployedReleaseDir,
        )
    })?;
    let fleet = old_state.auto_scaling_group.is_some() && old_state.launch_template_id.is_some();
    if !fleet {
        return Err(AwsError::refused(
            "rollout",
            format!(
                "{} runs single instances, not an Auto Scaling group: a rollout replaces a fleet's instances with its instance refresh",
                old_state.deployment
            ),
            Remedy::DeployAsFleet,
        ));
    }
    if !(7..=30).contains(&options.key_deletion_days) {
        return Err(AwsError::step(
            "configuration",
            format!(
                "key deletion after {} days: KMS accepts 7 to 30",
                options.key_deletion_days
            ),
        ));
    }
    let plaintexts = read_plaintexts(&options, &old_state)?;
    let old = deploy::verify_release(&DeployOptions::new(&options.old_dir, &options.pubkey))?;
    let old_digest = old.manifest_sha256().to_owned();
    if old_digest != old_state.release.manifest_sha256 {
        return Err(AwsError::file(
            &DeployState::path(&options.old_dir),
            "records another release than the directory holds",
        ));
    }
    let mut deploy_options = DeployOptions::new(&options.new_dir, &options.pubkey);
    deploy_options.name = Some(old_state.deployment.clone());
    deploy_options.fleet = true;
    deploy_options.lock_policy = old_state.key_locked;
    deploy_options.model = options.model.clone();
    deploy_options.rollout_from = Some(RolloutFrom {
        dir: options.old_dir.clone(),
        binding: crate::release::binding::binding_of(old.manifest())?,
        state: old_state.clone(),
        new_key: old_state.key_locked,
    });
    let deployment = deploy::prepare(c, deploy_options).await?;
    if deployment.release.manifest_sha256() == old_digest {
        return Err(AwsError::step(
            "rollout",
            "the new release is the deployed one: nothing to roll out",
        ));
    }
    let new_key = match plaintexts {
        None => None,
        Some(plaintexts) => Some(NewKey {
            sealed: sealed_before(&options, &deployment, &plaintexts),
            old_key_retired: key_retired(c, old_state.key_id.as_deref()).await?,
            plaintexts,
        }),
    };
    let mut r = Rollout {
        options,
        deployment,
        old_state,
        new_key,
        template_image: None,
        template_user_data: None,
        refresh_status: None,
    };
    if let Some(data) = latest_template_data(c, r.launch_template(), "launch template").await? {
        r.template_image = data.image_id().map(str::to_owned);
        r.template_user_data = userdata::sha256_of_base64(data.user_data());
    }
    r.refresh_status = r.latest_refresh_status(c).await?;
    Ok(r)
}

/// With a locked old key, the plaintext of exactly the recorded secrets (checked before
/// any AWS call); `None` for a key that can admit the new release.
fn read_plaintexts(
    options: &RolloutOptions,
    old: &DeployState,
) -> Result<Option<Vec<Plaintext>>, AwsError> {
    if !old.key_locked {
        if let Some(arg) = options.reseal.first() {
            return Err(AwsError::refused(
                "configuration",
                format!(
                    "a plaintext to re-seal was given for {}, but the key of {} is not locked, so it admits the new release and the envelopes stay valid: nothing is re-sealed",
                    arg.name, old.deployment
                ),
                Remedy::NoReseal,
            ));
        }
        return Ok(None);
    }
    let recorded: BTreeSet<&str> = old.secrets.keys().map(String::as_str).collect();
    let given: BTreeSet<&str> = options.reseal.iter().map(|a| a.name.as_str()).collect();
    if given.len() != options.reseal.len() {
        return Err(AwsError::step(
            "configuration",
            "a secret to re-seal is given twice",
        ));
    }
    let missing: Vec<&str> = recorded.difference(&given).copied().collect();
    if !missing.is_empty() {
        return Err(AwsError::refused(
            "configuration",
            format!(
                "the key of {} is locked, so the new release needs a new key and its secrets must be re-sealed under it from their plaintext; none given for {}",
                old.deployment,
                missing.join(", ")
            ),
            Remedy::Reseal {
                names: missing.iter().map(|n| n.to_string()).collect(),
            },
        ));
    }
    if let Some(extra) = given.difference(&recorded).next() {
        return Err(AwsError::step(
            "configuration",
            format!(
                "re-seal {extra}: not a secret of {} (its deploy record lists: {})",
                old.deployment,
                if recorded.is_empty() {
                    "none".to_owned()
                } else {
                    recorded.iter().copied().collect::<Vec<_>>().join(", ")
                }
            ),
        ));
    }
    let mut out = Vec::new();
    for arg in &options.reseal {
        let bytes =
            crate::fsio::read_secret_file(&arg.file, MAX_SECRET_LEN as u64).map_err(|e| {
                let why = match e {
                    crate::fsio::ReadBoundedError::Io(e) => format!("cannot read it: {e}"),
                    crate::fsio::ReadBoundedError::TooLarge => {
                        format!("larger than {MAX_SECRET_LEN} bytes")
                    }
                };
                AwsError::file(&arg.file, format!("re-seal {}: {why}", arg.name))
            })?;
        let p = Plaintext {
            name: arg.name.clone(),
            bytes,
        };
        if p.bytes.is_empty() {
            return Err(AwsError::file(
                &arg.file,
                format!("re-seal {}: the file is empty", arg.name),
            ));
        }
        out.push(p);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Some(out))
}

/// Envelopes a previous run of this rollout re-sealed under the new key, when there is
/// one for every secret (else everything is sealed again).
fn sealed_before(
    options: &RolloutOptions,
    deployment: &Deployment,
    plaintexts: &[Plaintext],
) -> Vec<SealedSecret> {
    let Some(key) = deployment.key_arn() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in plaintexts {
        let path = DeployState::sealed_path(&options.new_dir, &p.name);
        let Ok(bytes) = std::fs::read(&path) else {
            return Vec::new();
        };
        match SealedSecret::from_bytes(&p.name, &path, bytes) {
            Ok(s)
                if s.check_sealed_for(&deployment.deployment, Some(key))
                    .is_ok() =>
            {
                out.push(s)
            }
            _ => return Vec::new(),
        }
    }
    out
}

/// Whether a key is scheduled for deletion or gone.
async fn key_retired(c: &Clients, key_id: Option<&str>) -> Result<bool, AwsError> {
    let Some(key_id) = key_id else {
        return Ok(true);
    };
    match c.kms.describe_key().key_id(key_id).send().await {
        Ok(out) => Ok(out.key_metadata().and_then(|m| m.key_state())
            == Some(&aws_sdk_kms::types::KeyState::PendingDeletion)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_not_found_exception()) =>
        {
            Ok(true)
        }
        Err(e) => Err(api_error("rollout", "kms:DescribeKey", e)),
    }
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

    fn key_id(&self) -> Id {
        Id::recorded(self.deployment.state.key_id.as_ref(), "key-id")
    }

    fn old_key_arn(&self) -> String {
        self.old_state.key_arn.clone().unwrap_or_default()
    }

    fn new_key_arn_or_placeholder(&self) -> String {
        self.deployment
            .key_arn()
            .map(str::to_owned)
            .unwrap_or_else(|| {
                format!(
                    "arn:{}:kms:{}:{}:key/{}",
                    self.deployment.account.partition,
                    self.deployment.region,
                    self.deployment.account.account_id,
                    policy::PENDING_KEY_ID
                )
            })
    }

    /// The names of the secrets re-sealed under the new key.
    fn secret_names(&self) -> Vec<String> {
        self.old_state.secrets.keys().cloned().collect()
    }

    /// The user data of the new template version, once every secret is sealed under the
    /// new key (`None` before, and when the deployment has no secrets).
    fn resealed_user_data(&self) -> Result<Option<UserDataSpec>, AwsError> {
        match &self.new_key {
            Some(k) if !k.plaintexts.is_empty() && k.sealed.len() == k.plaintexts.len() => {
                UserDataSpec::from_secrets(&k.sealed).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Every step is done: the key admits only the new release (or, with a locked key,
    /// the old key is retired and the new one exists).
    fn finished(&self) -> bool {
        match &self.new_key {
            None => self.deployment.key_admits() == Some(KeyAdmits::New),
            Some(k) => k.old_key_retired && self.deployment.key_arn().is_some(),
        }
    }

    /// The latest template version launches the new release (with the re-sealed secrets).
    fn template_current(&self) -> Result<bool, AwsError> {
        let image =
            self.template_image.is_some() && self.template_image == self.deployment.state.image_id;
        let user_data = match &self.new_key {
            Some(k) if !k.plaintexts.is_empty() => {
                let wanted = self.resealed_user_data()?.map(|u| u.sha256);
                wanted.is_some() && wanted == self.template_user_data
            }
            _ => true,
        };
        Ok(image && user_data)
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

    // ---- the rollout's calls: built here for the plan and for the apply ----

    fn key_policy_spec(&self, admits: KeyAdmits) -> Result<PutKeyPolicy, AwsError> {
        Ok(PutKeyPolicy {
            key: self.key_id(),
            policy: self.deployment.key_policy_admitting(admits)?,
        })
    }

    /// The instance role's only permission, on these keys.
    fn role_policy_spec(&self, keys: &[&str]) -> Result<PutRolePolicy, AwsError> {
        Ok(PutRolePolicy {
            role: self.deployment.names.role.clone(),
            name: ROLE_POLICY_NAME.to_owned(),
            document: policy::instance_role_policy_for_keys(keys)?,
        })
    }

    /// The old and the new key while instances are replaced; afterwards the new one.
    fn role_policy_keys(&self, both: bool) -> Result<PutRolePolicy, AwsError> {
        let (old, new) = (self.old_key_arn(), self.new_key_arn_or_placeholder());
        if both {
            self.role_policy_spec(&[&old, &new])
        } else {
            self.role_policy_spec(&[&new])
        }
    }

    /// kms:Encrypt of each secret's data key under the new key (made by `seal`).
    fn reseal_calls(&self) -> Vec<Call> {
        let key = self.new_key_arn_or_placeholder();
        self.secret_names()
            .iter()
            .map(|n| seal::encrypt_spec(&key, &self.deployment.deployment, n).call())
            .collect()
    }

    fn template_version_spec(&self) -> Result<NewDefaultTemplateVersion, AwsError> {
        let mut user_data = None;
        if self.new_key.is_some() {
            let names = self.secret_names();
            if !names.is_empty() {
                user_data = Some(match self.resealed_user_data()? {
                    Some(ud) => TemplateUserData::Known(ud),
                    None => TemplateUserData::Pending(format!(
                        "<the re-sealed secrets {}>",
                        names.join(", ")
                    )),
                });
            }
        }
        Ok(NewDefaultTemplateVersion {
            template: Id::Known(self.launch_template().to_owned()),
            image: Some(Id::recorded(
                self.deployment.state.image_id.as_ref(),
                "image-id",
            )),
            user_data,
        })
    }

    fn refresh_spec(&self) -> StartInstanceRefresh {
        StartInstanceRefresh {
            group: self.asg().to_owned(),
            min_healthy_percentage: self.options.min_healthy_percentage,
        }
    }

    /// The locked old key: its alias goes, and the key is scheduled for deletion.
    fn retire_key_specs(&self) -> (Option<DeleteAlias>, Option<ScheduleKeyDeletion>) {
        (
            self.old_state
                .key_alias
                .as_ref()
                .map(|a| DeleteAlias { alias: a.clone() }),
            self.old_state.key_id.as_ref().map(|k| ScheduleKeyDeletion {
                key: k.clone(),
                days: self.options.key_deletion_days,
            }),
        )
    }

    /// Deregister the old AMI and delete its snapshots (not a model snapshot the new AMI
    /// uses too).
    fn retire_specs(&self) -> (Option<DeregisterImage>, Vec<DeleteSnapshot>) {
        if self.options.keep_old {
            return (None, Vec::new());
        }
        let new_model = self.deployment.model_snapshot();
        let old = &self.old_state;
        let snapshots = old
            .snapshot_id
            .iter()
            .chain(
                old.model_snapshot_id
                    .iter()
                    .filter(|id| Some(id.as_str()) != new_model),
            )
            .map(|id| DeleteSnapshot {
                snapshot: id.clone(),
            })
            .collect();
        (
            old.image_id
                .as_ref()
                .map(|id| DeregisterImage { image: id.clone() }),
            snapshots,
        )
    }

    /// The deploy steps (new snapshot and AMI; the rest kept) and the rollout's own.
    pub fn plan(&self) -> Result<Plan, AwsError> {
        let mut plan = self.deployment.plan()?;
        plan.command = super::plan::Command::Rollout;
        let d = &self.deployment;
        let finished = self.finished();
        let template_current = self.template_current()? || finished;
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
        if let Some(k) = &self.new_key {
            let names = self.secret_names();
            if !names.is_empty() {
                plan.steps.push(step(
                    "reseal",
                    format!(
                        "secrets {} re-sealed under {} into {}",
                        names.join(", "),
                        d.names.key_alias,
                        DeployState::sealed_path(&self.options.new_dir, "NAME").display()
                    ),
                    finished || k.sealed.len() == names.len(),
                    self.reseal_calls(),
                ));
            }
            plan.steps.push(step(
                "role-admits-both",
                "the instance role may use the old and the new key".to_owned(),
                template_current,
                vec![self.role_policy_keys(true)?.call()],
            ));
        } else {
            plan.steps.push(step(
                "admit-both",
                format!(
                    "key policy admits {} and {}",
                    self.old_state.release.version,
                    d.release.manifest().version
                ),
                matches!(d.key_admits(), Some(KeyAdmits::Both | KeyAdmits::New)),
                vec![self.key_policy_spec(KeyAdmits::Both)?.call()],
            ));
        }
        plan.steps.push(step(
            "template-version",
            format!("launch template version with {}", d.names.image),
            template_current,
            self.template_version_spec()?.calls(),
        ));
        plan.steps.push(step(
            "instance-refresh",
            format!("instance refresh of {}", self.asg()),
            finished || (template_current && self.refresh_status.as_deref() == Some("Successful")),
            vec![self.refresh_spec().call()],
        ));
        if self.new_key.is_some() {
            plan.steps.push(step(
                "role-admits-new-only",
                "the instance role may use only the new key".to_owned(),
                finished,
                vec![self.role_policy_keys(false)?.call()],
            ));
            let (alias, deletion) = self.retire_key_specs();
            let calls = alias
                .map(|a| a.call())
                .into_iter()
                .chain(deletion.map(|d| d.call()))
                .collect();
            plan.steps.push(step(
                "retire-old-key",
                format!(
                    "the old key {} is scheduled for deletion in {} days",
                    self.old_key_arn(),
                    self.options.key_deletion_days
                ),
                finished,
                calls,
            ));
        } else {
            plan.steps.push(step(
                "admit-new-only",
                format!("key policy admits only {}", d.release.manifest().version),
                finished,
                vec![self.key_policy_spec(KeyAdmits::New)?.call()],
            ));
        }
        let (image, snapshots) = self.retire_specs();
        let retire: Vec<Call> = image
            .map(|i| i.call())
            .into_iter()
            .chain(snapshots.iter().map(DeleteSnapshot::call))
            .collect();
        plan.steps.push(step(
            "retire-old",
            format!("AMI and snapshots of {}", self.old_state.release.version),
            retire.is_empty(),
            retire,
        ));
        plan.warnings.splice(0..0, self.new_key_warnings());
        plan.warnings.push(format!(
            "instances of {} {} keep unsealing until the refresh has replaced them; afterwards only {} {} can",
            self.old_state.release.name,
            self.old_state.release.version,
            d.release.manifest().name,
            d.release.manifest().version
        ));
        Ok(plan)
    }

    /// What a rollout to a new key does, said first.
    fn new_key_warnings(&self) -> Vec<String> {
        if self.new_key.is_none() {
            return Vec::new();
        }
        let names = self.secret_names();
        let mut w = vec![format!(
            "key {} is locked: a new key {} is created; {}. After the instance refresh, the old key is scheduled for deletion in {} days (KMS waits 7 to 30; `aws kms cancel-key-deletion` can stop it until then) and the deploy record moves to {} with the new key",
            self.old_state.key_alias.as_deref().or(self.old_state.key_arn.as_deref()).unwrap_or("of the deployment"),
            self.deployment.names.key_alias,
            if names.is_empty() {
                "there are no recorded secrets to re-seal".to_owned()
            } else {
                format!("secrets {} are re-sealed", names.join(", "))
            },
            self.options.key_deletion_days,
            self.options.new_dir.display()
        )];
        if names.is_empty() && self.template_user_data.is_some() {
            w.push(
                "the launch template has user data that zoa did not write from sealed secrets: it is kept as it is, and envelopes in it sealed under the old key stop opening once that key is deleted".to_owned(),
            );
        }
        w
    }

    /// Runs the steps not done yet: the deploy's, then the rollout's own, each sending
    /// the specs its plan step rendered.
    pub async fn apply(
        mut self,
        c: &Clients,
        progress: Progress,
    ) -> Result<RolloutOutcome, AwsError> {
        let plan = self.plan()?;
        let todo = |name: &str| {
            plan.steps
                .iter()
                .any(|s| s.step == name && s.action == Action::Create)
        };
        self.deployment.apply(c, progress).await?;
        let step = "rollout";
        let key_arn = self
            .deployment
            .state
            .key_arn
            .clone()
            .ok_or_else(|| AwsError::step(step, "no KMS key ARN recorded"))?;
        if todo("reseal") {
            let sealed = reseal(
                c,
                &self.options,
                &self.deployment.deployment,
                &key_arn,
                self.new_key
                    .as_ref()
                    .map(|k| &k.plaintexts[..])
                    .unwrap_or_default(),
            )
            .await?;
            if let Some(k) = self.new_key.as_mut() {
                k.sealed = sealed;
            }
        }
        if self.new_key.is_some() {
            if todo("role-admits-both") {
                self.role_policy_keys(true)?.send(c, step).await?;
            }
        } else if todo("admit-both") {
            self.key_policy_spec(KeyAdmits::Both)?.send(c, step).await?;
        }
        if todo("template-version") {
            self.template_version_spec()?
                .send(c, "launch template")
                .await?;
        }
        if todo("instance-refresh") {
            let pb = progress.stage(format!("instance refresh of {}", self.asg()));
            self.refresh_spec()
                .send_and_wait(c, "instance refresh", self.options.wait, "zoa rollout")
                .await?;
            pb.finish_and_clear();
        }
        let user_data = self.resealed_user_data()?;
        if self.new_key.is_some() {
            if todo("role-admits-new-only") {
                self.role_policy_keys(false)?.send(c, step).await?;
            }
            if todo("retire-old-key") {
                let step = "retire old key";
                let (alias, deletion) = self.retire_key_specs();
                if let Some(alias) = alias {
                    alias.send(c, step).await?;
                }
                if let Some(deletion) = deletion {
                    if let Some(date) = deletion.send(c, step).await? {
                        log::info!(
                            "old key {} is scheduled for deletion on {date}",
                            deletion.key
                        );
                    }
                }
            }
            if let Some(ud) = &user_data {
                self.deployment.state.user_data_sha256 = Some(ud.sha256.clone());
                self.deployment.state.secrets = ud.secrets.clone();
            }
        } else {
            let admit_new = self.key_policy_spec(KeyAdmits::New)?;
            if todo("admit-new-only") {
                admit_new.send(c, step).await?;
            }
            // The policy in place from here on, also when a resumed rollout finds this
            // step done.
            self.deployment.state.key_policy_sha256 =
                Some(crate::aws::calls::kms::policy_sha256(&admit_new.policy));
        }
        if todo("retire-old") {
            let step = "retire old release";
            let (image, snapshots) = self.retire_specs();
            if let Some(image) = image {
                image.send(c, step).await?;
            }
            for snapshot in snapshots {
                snapshot.send(c, step).await?;
            }
        }
        let sealed = self
            .new_key
            .as_ref()
            .map(|k| k.sealed.iter().map(|s| s.file.clone()).collect())
            .unwrap_or_default();
        let state = self.deployment.state.clone();
        state.save(&self.options.new_dir)?;
        DeployState::remove(&self.options.old_dir)?;
        Ok(RolloutOutcome {
            plan,
            state,
            sealed,
        })
    }
}

/// Seals each plaintext under `key_arn` (as `zoa seal` does) into NEW/deploy/sealed/,
/// so a rerun reuses the envelopes instead of making a second template version.
async fn reseal(
    c: &Clients,
    options: &RolloutOptions,
    deployment: &str,
    key_arn: &str,
    plaintexts: &[Plaintext],
) -> Result<Vec<SealedSecret>, AwsError> {
    let mut out = Vec::new();
    for p in plaintexts {
        let spec = seal::encrypt_spec(key_arn, deployment, &p.name);
        let envelope = seal::seal(c, &spec, &p.bytes).await?;
        let path = DeployState::sealed_path(&options.new_dir, &p.name);
        let mut bytes = serde_json::to_vec_pretty(&envelope)
            .map_err(|e| AwsError::file(&path, e.to_string()))?;
        bytes.push(b'\n');
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| AwsError::file(dir, e))?;
        }
        crate::fsio::write_atomic(&path, &bytes, crate::fsio::PRIVATE)
            .map_err(|e| AwsError::file(&path, e))?;
        out.push(SealedSecret::from_bytes(&p.name, &path, bytes)?);
    }
    Ok(out)
}
