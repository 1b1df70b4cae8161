//! `zoa deploy DIR`: verify the signed release, then disk image → EBS snapshot → AMI with
//! NitroTPM → instance role → KMS key bound to the release's PCRs → security group →
//! instances (or a launch template and an Auto Scaling group).
//!
//! [`prepare`] verifies the release and looks at the account (read-only calls only) and
//! returns a [`Deployment`]; [`Deployment::plan`] lists every step with its calls;
//! [`Deployment::apply`] executes the plan's `Create` steps in order, recording each
//! resource in `deploy.json` the moment it exists. A rerun finds recorded resources (or,
//! after a crash between a create and the record, finds them by name or tag) and keeps
//! them, so it never duplicates a key, AMI or instance.

mod apply;
mod discover;
mod exposure;
mod key_policy;
mod security_group;
mod steps;

pub use key_policy::{render_policies, PolicyRequest};

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::plan::Plan;
use super::policy::{BootMode, PcrBinding};
use super::state::{DeployState, ReleaseRef, TAG_DEPLOYMENT, TAG_MANIFEST, TAG_RELEASE};
use super::userdata::{SealedSecret, SecretArg, UserDataSpec};
use super::{Account, AwsError, Clients, Remedy};
use crate::release::binding::binding_of;
use crate::release::VerifiedRelease;
use apply::PrivateDisk;
use discover::Found;
use discover::{check_instance_type, find_network};

/// The instance type when none is given: a current general-purpose type with NitroTPM.
pub const DEFAULT_INSTANCE_TYPE: &str = "m6i.large";

/// What messages call the disk image a deploy uploads. It is never written into the
/// release directory: it lives in an unnamed temporary file (see [`PrivateDisk`]).
const DISK_NAME: &str = "disk image of the verified uki.efi";

const ROOT_DEVICE: &str = "/dev/xvda";

/// The model volume's device name in the AMI. On Nitro every EBS volume is NVMe, so the
/// guest sees /dev/nvme1n1 whatever the name; zoa-init finds it by the GGUF magic.
pub const MODEL_DEVICE: &str = "/dev/sdb";

/// EC2's limit on RegisterImage's `UefiData` (base64 characters; the EC2 API Reference:
/// "Length Constraints: Maximum length of 64000").
pub const MAX_UEFI_DATA_BASE64: usize = 64_000;

/// The share of a fleet kept in service while new user data is rolled in.
const REFRESH_MIN_HEALTHY_PERCENTAGE: i32 = 90;

pub(crate) const ROLE_POLICY_NAME: &str = "zoa-kms-unseal";

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// The signed release directory.
    pub dir: PathBuf,
    /// The public key the release must verify with.
    pub pubkey: PathBuf,
    /// Deployment name (default: the release name).
    pub name: Option<String>,
    pub instance_type: String,
    /// CIDRs that may reach the serving port; none means no ingress at all.
    pub allow_cidr: Vec<String>,
    /// The serving port (default: the recipe's `serving_port`).
    pub port: Option<u16>,
    /// Instances to run; more than one, or `fleet`, uses an Auto Scaling group.
    pub count: u32,
    pub fleet: bool,
    /// Subnets (default: the default VPC's subnets).
    pub subnet_ids: Vec<String>,
    /// Key administrators (default: the account root).
    pub admin_principals: Vec<String>,
    /// Principals that may `zoa seal` (kms:Encrypt) (default: the key administrators).
    pub sealer_principals: Vec<String>,
    /// Deny PutKeyPolicy to everyone, forever.
    pub lock_policy: bool,
    /// User data passed to the instances as it is, at most 16 KiB (not with `secrets`).
    pub user_data: Option<PathBuf>,
    /// `zoa seal` envelopes for the instances' user data (zoa-init's format).
    pub secrets: Vec<SecretArg>,
    /// The model weights the image pins (`[init.model]`), for a second EBS volume.
    pub model: Option<PathBuf>,
    /// How long to wait for an instance refresh that brings new user data to a fleet.
    pub refresh_wait: Duration,
    /// Set by `zoa rollout`: the deployed release this one replaces.
    pub rollout_from: Option<RolloutFrom>,
    /// `--secure-boot`: refuse unless the release is a Secure Boot release (its
    /// `uefi-data.bin` enrolls a PK). The mode itself always comes from the release.
    pub secure_boot: bool,
    /// `--private`: no public addresses; a KMS interface endpoint in the VPC, the only
    /// place the key's plaintext operations are allowed from (`aws:SourceVpce`).
    pub private: bool,
    /// `--expose privatelink`: the serving port behind an internal Network Load Balancer
    /// and a VPC endpoint service that `allowed_principals` may connect to.
    pub privatelink: bool,
    /// `--allow-principal`: who may connect to the endpoint service.
    pub allowed_principals: Vec<String>,
}

/// The release a rollout replaces: its directory (with the deploy record) and PCRs.
#[derive(Debug, Clone)]
pub struct RolloutFrom {
    pub dir: PathBuf,
    pub binding: PcrBinding,
    pub state: DeployState,
    /// The old key is locked (`--lock-policy`): the new release gets a key of its own.
    pub new_key: bool,
}

/// Which releases an existing key's policy admits, during a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAdmits {
    /// Only the release being replaced (the rollout has not touched the key yet).
    Old,
    /// Both releases (instances are being replaced).
    Both,
    /// Only this release (a normal deploy, or a finished rollout).
    New,
}

impl DeployOptions {
    pub fn new(dir: &Path, pubkey: &Path) -> DeployOptions {
        DeployOptions {
            dir: dir.to_owned(),
            pubkey: pubkey.to_owned(),
            name: None,
            instance_type: DEFAULT_INSTANCE_TYPE.to_owned(),
            allow_cidr: Vec::new(),
            port: None,
            count: 1,
            fleet: false,
            subnet_ids: Vec::new(),
            admin_principals: Vec::new(),
            sealer_principals: Vec::new(),
            lock_policy: false,
            user_data: None,
            secrets: Vec::new(),
            model: None,
            refresh_wait: Duration::from_secs(3600),
            rollout_from: None,
            secure_boot: false,
            private: false,
            privatelink: false,
            allowed_principals: Vec::new(),
        }
    }

    /// True when a rollout gives the new release a key of its own.
    fn new_key(&self) -> bool {
        self.rollout_from.as_ref().is_some_and(|r| r.new_key)
    }

    fn uses_fleet(&self) -> bool {
        self.fleet || self.count > 1 || self.rollout_from.is_some()
    }
}

/// Names of everything a deploy creates, derived from the deployment name.
#[derive(Debug, Clone, Serialize)]
pub struct Names {
    pub image: String,
    pub role: String,
    pub instance_profile: String,
    pub key_alias: String,
    pub security_group: String,
    pub launch_template: String,
    pub auto_scaling_group: String,
    /// A private deploy's KMS endpoint group.
    pub kms_endpoint_group: String,
    /// The PrivateLink exposure's load balancer and target group (Elastic Load Balancing
    /// names: at most 32 characters).
    pub load_balancer: String,
    pub target_group: String,
}

impl Names {
    /// The alias of a deployment's first key.
    pub(crate) fn default_key_alias(deployment: &str) -> String {
        format!("alias/zoa/{deployment}")
    }

    /// The alias of a key a rollout makes for a release because the old key is locked:
    /// the deployment's alias and the release's digest prefix.
    pub(crate) fn release_key_alias(deployment: &str, manifest_sha256: &str) -> String {
        format!("alias/zoa/{deployment}-{}", &manifest_sha256[..12])
    }

    pub(crate) fn new(deployment: &str, manifest_sha256: &str) -> Names {
        let base = format!("zoa-{deployment}");
        Names {
            // AMI names are unique per account and region; the digest keeps releases apart.
            image: format!("{base}-{}", &manifest_sha256[..16]),
            role: base.clone(),
            instance_profile: base.clone(),
            key_alias: Names::default_key_alias(deployment),
            security_group: base.clone(),
            launch_template: base.clone(),
            kms_endpoint_group: format!("{base}-kms-endpoint"),
            load_balancer: elb_name(&base),
            target_group: elb_name(&base),
            auto_scaling_group: base,
        }
    }
}

/// An Elastic Load Balancing name: at most 32 characters; a longer one keeps its start and
/// gets a digest of the whole, so two deployments never share one.
fn elb_name(base: &str) -> String {
    if base.len() <= 32 {
        return base.to_owned();
    }
    let digest = crate::digest::sha256_bytes(base.as_bytes());
    format!("{}-{}", base[..23].trim_end_matches('-'), &digest[..8])
}

/// The network a deploy uses.
#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    /// The VPC's IPv4 range: a private deploy's HTTPS stays inside it.
    pub vpc_cidr: String,
    /// One of the subnets per Availability Zone (an interface endpoint takes one each).
    pub endpoint_subnets: Vec<String>,
}

/// A verified release, the account, and everything derived from them.
#[derive(Debug)]
pub struct Deployment {
    pub options: DeployOptions,
    pub deployment: String,
    /// The verified release: every byte this deploy ships comes from here.
    pub release: VerifiedRelease,
    pub account: Account,
    pub region: String,
    pub names: Names,
    pub network: Network,
    pub port: Option<u16>,
    pub binding: PcrBinding,
    /// RegisterImage's `UefiData`: base64 of the release's signed `uefi-data.bin`.
    pub uefi_data: Option<String>,
    pub state: DeployState,
    /// The user data the instances must have (`None`: keep what they have).
    pub user_data: Option<UserDataSpec>,
    /// The model the image pins, when it pins one.
    pub model: Option<ModelSpec>,
    /// The secrets the image unseals at boot (`[init.unseal]`).
    pub image_secrets: Vec<String>,
    /// The image's own IMDS and KMS endpoints (`[init.unseal.endpoints]`): an image made
    /// for a rehearsal off EC2.
    pub unseal_endpoints: Option<zoa_init::config::UnsealEndpoints>,
    /// What exists already, found by [`prepare`].
    found: Found,
    /// The disk image to upload, written from the verified UKI when no snapshot of it
    /// exists yet (so the plan shows its size and digest).
    disk: Option<PrivateDisk>,
}

/// The model weights the image pins, and the file that holds them (none on a rerun that
/// finds the snapshot made before).
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The file's size; without a file, the pinned size (nothing is uploaded then).
    pub size: u64,
    /// The SHA-256 of the bytes the snapshot holds (the age file for an encrypted model).
    pub sha256: String,
    pub file: Option<PathBuf>,
    /// For an age-encrypted model: the SHA-256 of the model it decrypts to, as the image
    /// pins it (recorded, so that a rollout to a release pinning the same model reuses
    /// the snapshot without the file).
    pub decrypts_to: Option<String>,
}

/// What a deploy did.
#[derive(Debug, Serialize)]
pub struct DeployOutcome {
    pub plan: Plan,
    pub state: DeployState,
}

/// `DeployState::exposure` of a deployment behind a PrivateLink endpoint service.
pub const EXPOSURE_PRIVATELINK: &str = "privatelink";

/// An endpoint service principal: an IAM ARN (account root, role or user). `*` would let
/// every AWS account connect: refused.
fn validate_service_principal(p: &str) -> Result<(), AwsError> {
    let parts: Vec<&str> = p.splitn(6, ':').collect();
    let ok = match parts[..] {
        ["arn", partition, "iam", "", account, resource] => {
            !partition.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && (resource == "root"
                    || resource
                        .strip_prefix("role/")
                        .is_some_and(|r| !r.is_empty())
                    || resource
                        .strip_prefix("user/")
                        .is_some_and(|r| !r.is_empty()))
                && !resource.contains('*')
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(AwsError::step(
            "configuration",
            format!("allowed principal {p:?}: give an IAM ARN, arn:PARTITION:iam::ACCOUNT:root, ...:role/NAME or ...:user/NAME (never *)"),
        ))
    }
}

/// Deployment names become resource names: keep them to what every AWS name accepts.
pub(crate) fn validate_deployment_name(name: &str) -> Result<(), AwsError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(AwsError::step(
            "configuration",
            format!(
                "deployment name {name:?}: use 1-40 letters, digits, '-' or '_', starting with a letter or digit"
            ),
        ))
    }
}

/// Checks an IPv4 CIDR such as 203.0.113.0/24 (the CLI checks its arguments with it too).
pub fn check_ipv4_cidr(cidr: &str) -> Result<(), String> {
    let bad = || format!("{cidr:?} is not an IPv4 CIDR such as 203.0.113.0/24");
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    addr.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?;
    match len.parse::<u8>() {
        Ok(len) if len <= 32 => Ok(()),
        _ => Err(bad()),
    }
}

fn validate_cidr(cidr: &str) -> Result<(), AwsError> {
    check_ipv4_cidr(cidr)
        .map_err(|why| AwsError::step("configuration", format!("allowed source {why}")))
}

/// The serving port from the release's build.json (the recipe's `serving_port`).
fn recipe_port(release: &VerifiedRelease) -> Result<Option<u16>, AwsError> {
    use crate::release::manifest::BUILD_FILE;
    let path = release.dir().join(BUILD_FILE);
    let bytes = release
        .file(BUILD_FILE)
        .ok_or_else(|| AwsError::file(&path, "not covered by the signed manifest"))?;
    let report = crate::image::BuildReport::parse(bytes).map_err(|e| AwsError::file(&path, e))?;
    Ok(report.serving_port)
}

/// The release's `uefi-data.bin` as RegisterImage's `UefiData` (base64), when the
/// manifest covers one: the verified bytes, refused when over EC2's limit, before any AWS
/// call.
pub(crate) fn uefi_data_of(release: &VerifiedRelease) -> Result<Option<String>, AwsError> {
    use crate::release::manifest::{MANIFEST_FILE, UEFI_DATA_FILE};
    let dir = release.dir();
    let Some(bytes) = release.uefi_data() else {
        if release.manifest().measurements.secure_boot {
            return Err(AwsError::file_refused(
                &dir.join(MANIFEST_FILE),
                format!("predicts a Secure Boot boot but covers no {UEFI_DATA_FILE}: an AMI could not enroll the keys it was measured with"),
                Remedy::SignWithUefiData { dir: dir.to_owned() },
            ));
        }
        return Ok(None);
    };
    let path = dir.join(UEFI_DATA_FILE);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    if b64.len() > MAX_UEFI_DATA_BASE64 {
        return Err(AwsError::file(
            &path,
            format!(
                "is {} characters of base64 ({} bytes); EC2 RegisterImage accepts a UefiData of at most {MAX_UEFI_DATA_BASE64}: enroll fewer or smaller certificates (dbx updates are large)",
                b64.len(),
                bytes.len()
            ),
        ));
    }
    Ok(Some(b64))
}

/// Verifies the release (before any AWS call): its manifest and the manifest's digest.
pub(crate) fn verify_release(options: &DeployOptions) -> Result<VerifiedRelease, AwsError> {
    Ok(crate::release::verify(&options.dir, &options.pubkey, None)?)
}

/// Checks everything local, then reads (never changes) the account: identity, network,
/// instance type, and what exists of this deployment already.
pub async fn prepare(
    clients: &Clients,
    mut options: DeployOptions,
) -> Result<Deployment, AwsError> {
    // A rollout keeps how the deployment is reached: the serving port and the ranges
    // admitted to it, as the deploy recorded them (its command line names neither).
    if let Some(from) = &options.rollout_from {
        if options.allow_cidr.is_empty() {
            options.allow_cidr = from.state.allow_cidr.clone();
        }
        if options.port.is_none() {
            options.port = from.state.serving_port;
        }
    }
    let verified = verify_release(&options)?;
    let manifest = verified.manifest();
    // Before any AWS call: a residency rule the release carries is not the deployer's to
    // bend.
    if !crate::release::regions::allows(&manifest.regions, &clients.region) {
        return Err(AwsError::RegionNotAllowed {
            release: manifest.label(),
            region: clients.region.clone(),
            allowed: manifest.regions.clone(),
        });
    }
    let manifest_sha256 = verified.manifest_sha256();
    let deployment = options
        .name
        .clone()
        .unwrap_or_else(|| manifest.name.clone());
    validate_deployment_name(&deployment)?;
    for cidr in &options.allow_cidr {
        validate_cidr(cidr)?;
    }
    let port = match options.port {
        Some(p) => Some(p),
        None => recipe_port(&verified)?,
    };
    if port == Some(22) {
        return Err(AwsError::step(
            "configuration",
            "the serving port is 22: zoa never opens SSH's port",
        ));
    }
    if !options.allow_cidr.is_empty() && port.is_none() {
        return Err(AwsError::step(
            "configuration",
            "opening the serving port to a source needs a serving port, and the recipe sets no serving_port: give the port",
        ));
    }
    if options.count == 0 {
        return Err(AwsError::step(
            "configuration",
            "the instance count must be at least 1",
        ));
    }
    let recorded = DeployState::load(&options.dir)?;
    let user_data = wanted_user_data(&options, &deployment, recorded.as_ref())?;
    let image = super::image_config::init_config(verified.uki())?;
    let model = model_spec(&options, image.as_ref(), recorded.as_ref())?;
    let image_secrets = image
        .as_ref()
        .and_then(|c| c.unseal.as_ref())
        .map(|u| u.secrets.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    let unseal_endpoints = image
        .as_ref()
        .and_then(|c| c.unseal.as_ref())
        .and_then(|u| u.endpoints.clone());
    let binding = binding_of(manifest)?;
    let uefi_data = uefi_data_of(&verified)?;
    if options.secure_boot && binding.mode != BootMode::SecureBoot {
        let dir = options.dir.display();
        return Err(match uefi_data {
            None => AwsError::refused(
                "configuration",
                format!("a Secure Boot deploy was asked for, but {dir} is not a Secure Boot release (it has no uefi-data.bin)"),
                Remedy::SignWithUefiData {
                    dir: options.dir.clone(),
                },
            ),
            Some(_) => AwsError::step(
                "configuration",
                format!("a Secure Boot deploy was asked for, but the uefi-data.bin of {dir} enrolls no PK, so the release was measured with Secure Boot off"),
            ),
        });
    }
    if let Some(from) = &options.rollout_from {
        if from.binding.mode != binding.mode {
            return Err(AwsError::refused(
                "rollout",
                format!(
                    "{} boots with {}, {} with {}: the deployment's key binds the PCRs of one boot mode",
                    from.binding.release, from.binding.mode, binding.release, binding.mode
                ),
                Remedy::AnotherName,
            ));
        }
    }

    let account = clients.account().await?;
    let region = clients.region.clone();
    let release = ReleaseRef {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        manifest_sha256: manifest_sha256.to_owned(),
    };
    let mut state = match recorded {
        Some(s) => {
            s.check_matches(
                &options.dir,
                &deployment,
                &release,
                &account.account_id,
                &region,
            )?;
            if s.boot_mode != binding.mode {
                return Err(AwsError::file(
                    &DeployState::path(&options.dir),
                    format!(
                        "records a deploy with {}, but the release boots with {}: run `zoa destroy` first, or move the record away",
                        s.boot_mode, binding.mode
                    ),
                ));
            }
            s
        }
        // A rollout takes over the record of the release it replaces.
        None => match &options.rollout_from {
            Some(from) => rollout_state(from, release),
            None => DeployState::new(&deployment, release, &account.account_id, &region),
        },
    };
    state.boot_mode = binding.mode;
    state.serving_port = port;
    state.allow_cidr = options.allow_cidr.clone();
    if options.private && !state.private && state.security_group_id.is_some() {
        return Err(AwsError::file(
            &DeployState::path(&options.dir),
            "records a deploy with public addresses: a private deploy needs new instances and a new key policy; run `zoa destroy` first, or deploy under another name",
        ));
    }
    // A private deploy stays private: its rollouts and reruns keep the endpoint.
    state.private |= options.private;
    if options.privatelink {
        if !state.private {
            return Err(AwsError::step(
                "configuration",
                "PrivateLink exposure is for private deployments (no public address, the KMS endpoint)",
            ));
        }
        if port.is_none() {
            return Err(AwsError::step(
                "configuration",
                "exposing the serving port needs a serving port, and the recipe sets no serving_port",
            ));
        }
        if state.exposure.is_none() && state.security_group_id.is_some() {
            return Err(AwsError::file(
                &DeployState::path(&options.dir),
                "records a deploy without PrivateLink exposure: the fleet would need a new load balancer in front; run `zoa destroy` first, or deploy under another name",
            ));
        }
        for p in &options.allowed_principals {
            validate_service_principal(p)?;
        }
        if options.allowed_principals.is_empty() && state.allowed_principals.is_empty() {
            return Err(AwsError::step(
                "configuration",
                "an endpoint service nobody may connect to serves nobody: name the allowed principals (account roots, roles or users)",
            ));
        }
        state.exposure = Some(EXPOSURE_PRIVATELINK.to_owned());
        if !options.allowed_principals.is_empty() {
            let mut principals = options.allowed_principals.clone();
            principals.sort();
            principals.dedup();
            state.allowed_principals = principals;
        }
    }
    check_instance_type(clients, &options.instance_type).await?;
    let network = find_network(clients, &options.subnet_ids).await?;
    let mut names = Names::new(&deployment, manifest_sha256);
    names.key_alias = match &state.key_alias {
        // The deployment's key is the one its record names (after a rollout to a new key,
        // not the first alias).
        Some(alias) => alias.clone(),
        None if options.new_key() => Names::release_key_alias(&deployment, manifest_sha256),
        None => names.key_alias,
    };
    let mut d = Deployment {
        options,
        deployment,
        release: verified,
        account,
        region,
        names,
        network,
        port,
        binding,
        uefi_data,
        state,
        user_data,
        model,
        image_secrets,
        unseal_endpoints,
        found: Found::default(),
        disk: None,
    };
    d.found = d.find_existing(clients).await?;
    d.check_found()?;
    if d.found.snapshot.is_none() {
        d.disk = Some(PrivateDisk::write(&d.release)?);
    }
    Ok(d)
}

/// The record a rollout starts from: the old release's, without what belongs to that
/// release (its disk, snapshots and image; with a locked key, the key and the secrets
/// sealed under it).
fn rollout_state(from: &RolloutFrom, release: ReleaseRef) -> DeployState {
    let mut s = DeployState {
        release,
        disk_sha256: None,
        snapshot_id: None,
        model_snapshot_id: None,
        model_sha256: None,
        model_decrypts_to: None,
        image_id: None,
        ..from.state.clone()
    };
    if from.new_key {
        s.key_id = None;
        s.key_arn = None;
        s.key_alias = None;
        s.key_locked = false;
        s.user_data_sha256 = None;
        s.secrets.clear();
    }
    s
}

/// The user data asked for: `--user-data` as it is, or the `--secret` envelopes, each
/// checked to be sealed for this deployment under its (recorded) key.
fn wanted_user_data(
    options: &DeployOptions,
    deployment: &str,
    recorded: Option<&DeployState>,
) -> Result<Option<UserDataSpec>, AwsError> {
    if options.secrets.is_empty() {
        return options
            .user_data
            .as_deref()
            .map(UserDataSpec::from_file)
            .transpose();
    }
    if options.user_data.is_some() {
        return Err(AwsError::refused(
            "configuration",
            "both sealed secrets and raw user data would set the instances' user data (zoa-init reads secrets only from the user data that sealed secrets make)",
            Remedy::SecretsOrUserData,
        ));
    }
    let secrets = options
        .secrets
        .iter()
        .map(SealedSecret::read)
        .collect::<Result<Vec<_>, _>>()?;
    for s in &secrets {
        s.check_sealed_for(deployment, None)?;
    }
    // Secrets can only be sealed once the key exists, and this deployment's key is made
    // by its first deploy: that deploy runs without secrets.
    let key = recorded.and_then(|s| s.key_arn.as_deref()).ok_or_else(|| {
        AwsError::file_refused(
            &DeployState::path(&options.dir),
            format!(
                "{}: nothing can be sealed for {deployment} yet",
                if recorded.is_some() {
                    "records no KMS key"
                } else {
                    "no deploy record"
                },
            ),
            Remedy::DeployKeyFirst {
                dir: options.dir.clone(),
            },
        )
    })?;
    for s in &secrets {
        s.check_sealed_for(deployment, Some(key))?;
    }
    UserDataSpec::from_secrets(&secrets).map(Some)
}

/// The model the image pins and the file given for it (checked against the pin), or the
/// snapshot a rerun or rollout finds from before.
fn model_spec(
    options: &DeployOptions,
    image: Option<&zoa_init::config::Config>,
    recorded: Option<&DeployState>,
) -> Result<Option<ModelSpec>, AwsError> {
    let pin = image.and_then(|c| c.model.as_ref());
    match (pin, &options.model) {
        (None, None) => Ok(None),
        (None, Some(path)) => Err(AwsError::file(
            path,
            "a model file was given, but the image pins no model ([init.model] in its recipe), so zoa-init would never read it",
        )),
        (Some(pin), Some(path)) if pin.age_identity.is_some() => {
            let (sha256, size) =
                crate::digest::sha256_file(path).map_err(|e| AwsError::file(path, e))?;
            check_encrypted_model(path, pin, size)?;
            // The snapshot is found again by the digest of the bytes it holds.
            Ok(Some(ModelSpec {
                size,
                sha256,
                file: Some(path.clone()),
                decrypts_to: Some(pin.sha256.clone()),
            }))
        }
        (Some(pin), None) if pin.age_identity.is_some() => {
            // Only a snapshot recorded as the encryption of this very pin will do: the
            // encrypted bytes' digest says nothing about what they decrypt to.
            let recorded = [recorded, options.rollout_from.as_ref().map(|r| &r.state)]
                .into_iter()
                .flatten()
                .find(|s| {
                    s.model_snapshot_id.is_some()
                        && s.model_decrypts_to.as_deref() == Some(&pin.sha256)
                })
                .and_then(|s| s.model_sha256.clone());
            match recorded {
                Some(sha256) => Ok(Some(ModelSpec {
                    size: pin.size,
                    sha256,
                    file: None,
                    decrypts_to: Some(pin.sha256.clone()),
                })),
                None => Err(AwsError::refused(
                    "configuration",
                    format!(
                        "the image pins an age-encrypted model ({} bytes decrypted, sha256 {}), no model file was given, and no snapshot of it is recorded",
                        pin.size, pin.sha256
                    ),
                    Remedy::GiveModel { encrypted: true },
                )),
            }
        }
        (Some(pin), Some(path)) => {
            let (sha256, size) =
                crate::digest::sha256_file(path).map_err(|e| AwsError::file(path, e))?;
            if size != pin.size || sha256 != pin.sha256 {
                return Err(AwsError::file(
                    path,
                    format!(
                        "the model file has {size} bytes with sha256 {sha256}, but the image pins {} bytes with sha256 {}: zoa-init would refuse it",
                        pin.size, pin.sha256
                    ),
                ));
            }
            Ok(Some(ModelSpec {
                size,
                sha256,
                file: Some(path.clone()),
                decrypts_to: None,
            }))
        }
        (Some(pin), None) => {
            let uploaded = [recorded, options.rollout_from.as_ref().map(|r| &r.state)]
                .into_iter()
                .flatten()
                .any(|s| {
                    s.model_snapshot_id.is_some() && s.model_sha256.as_deref() == Some(&pin.sha256)
                });
            if !uploaded {
                return Err(AwsError::refused(
                    "configuration",
                    format!(
                        "the image pins a model ({} bytes, sha256 {}) that zoa-init reads from a second disk, no model file was given, and none was uploaded before",
                        pin.size, pin.sha256
                    ),
                    Remedy::GiveModel { encrypted: false },
                ));
            }
            Ok(Some(ModelSpec {
                size: pin.size,
                sha256: pin.sha256.clone(),
                file: None,
                decrypts_to: None,
            }))
        }
    }
}

/// What can be checked of an age-encrypted model without its key (only the instance has
/// it): a binary age file whose length is exactly that of the pinned size encrypted. The
/// pinned digest itself is checked by zoa-init after decryption.
fn check_encrypted_model(
    path: &Path,
    pin: &zoa_init::config::Model,
    size: u64,
) -> Result<(), AwsError> {
    use zoa_init::model::{age_header_len, age_payload_len};
    let mut file = std::fs::File::open(path).map_err(|e| AwsError::file(path, e))?;
    let header = age_header_len(&mut file).map_err(|e| {
        AwsError::file(
            path,
            format!("the image pins an age-encrypted model, and the model file is not one: {e}"),
        )
    })?;
    let expected = header + age_payload_len(pin.size);
    if size != expected {
        return Err(AwsError::file(
            path,
            format!(
                "the model file has {size} bytes, but an age file of the pinned {}-byte model is {expected} bytes: it is not the pinned model encrypted (zoa-init would refuse it)",
                pin.size
            ),
        ));
    }
    Ok(())
}

impl Deployment {
    fn tags(&self) -> Vec<(String, String)> {
        vec![
            ("Name".to_owned(), format!("zoa-{}", self.deployment)),
            (TAG_DEPLOYMENT.to_owned(), self.deployment.clone()),
            (
                TAG_RELEASE.to_owned(),
                format!(
                    "{} {}",
                    self.release.manifest().name,
                    self.release.manifest().version
                ),
            ),
            (
                TAG_MANIFEST.to_owned(),
                self.release.manifest_sha256().to_owned(),
            ),
        ]
    }

    /// After discovery, before any change: the secrets must be sealed under the key that
    /// exists, and a model the image pins must be uploaded or given.
    fn check_found(&self) -> Result<(), AwsError> {
        let sealed_under = self
            .user_data
            .as_ref()
            .and_then(|u| u.sealed_under.as_deref());
        match (sealed_under, &self.found.key) {
            (Some(sealed), Some((_, arn))) if sealed != arn => {
                return Err(AwsError::refused(
                    "kms key",
                    format!(
                        "the secrets' envelopes are sealed under {sealed}, but {} is {arn}",
                        self.names.key_alias,
                    ),
                    Remedy::Seal {
                        dir: Some(self.options.dir.clone()),
                        name: "NAME".to_owned(),
                    },
                ));
            }
            // This deploy would make a new key, and nothing sealed before opens with it.
            (Some(sealed), None) => {
                return Err(AwsError::refused(
                    "kms key",
                    format!(
                        "the secrets' envelopes are sealed under {sealed}, which is gone (or pending deletion)"
                    ),
                    Remedy::DeployKeyFirst {
                        dir: self.options.dir.clone(),
                    },
                ));
            }
            _ => {}
        }
        if let Some(m) = &self.model {
            if m.file.is_none() && self.found.model_snapshot.is_none() {
                return Err(AwsError::refused(
                    "model snapshot",
                    format!(
                        "the model snapshot (sha256 {}) is gone, and no model file was given to upload it again",
                        m.sha256
                    ),
                    Remedy::GiveModel { encrypted: false },
                ));
            }
        }
        Ok(())
    }

    /// The ARN of the deployment's key, when it exists (found or recorded).
    pub fn key_arn(&self) -> Option<&str> {
        self.found
            .key
            .as_ref()
            .map(|(_, arn)| arn.as_str())
            .or(self.state.key_arn.as_deref())
    }

    /// The snapshot of the model this release's AMI uses, when it exists.
    pub fn model_snapshot(&self) -> Option<&str> {
        self.found
            .model_snapshot
            .as_deref()
            .or(self.state.model_snapshot_id.as_deref())
    }

    /// Which releases the existing key admits (None: no key yet).
    pub fn key_admits(&self) -> Option<KeyAdmits> {
        self.found.key_admits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names() {
        for ok in ["llama-server", "a", "prod_1"] {
            assert!(validate_deployment_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a b", "x/y", &"a".repeat(41)] {
            assert!(validate_deployment_name(bad).is_err(), "{bad}");
        }
    }

    /// A rollout (or rerun) without `--model` reuses an encrypted model's snapshot only
    /// when a record says it holds the encryption of this very pin.
    #[test]
    fn an_encrypted_model_snapshot_is_reused_only_for_the_same_pin() {
        let mut image = zoa_init::config::Config::from_json(
            r#"{"hostname": "h", "model": {"size": 5, "sha256": "00000000000000000000000000000000000000000000000000000000000000ff"}}"#,
        )
        .unwrap();
        let pin_sha = image.model.as_ref().unwrap().sha256.clone();
        if let Some(m) = image.model.as_mut() {
            m.age_identity = Some("model-key".into());
        }
        let options = DeployOptions::new(Path::new("/rel"), Path::new("/k.pub"));
        let state = |decrypts_to: Option<&str>| DeployState {
            model_snapshot_id: Some("snap-1".into()),
            model_sha256: Some("cd".repeat(32)),
            model_decrypts_to: decrypts_to.map(str::to_owned),
            ..DeployState::default()
        };
        let reused = model_spec(&options, Some(&image), Some(&state(Some(&pin_sha))))
            .unwrap()
            .unwrap();
        assert_eq!(reused.sha256, "cd".repeat(32), "the snapshot's own digest");
        assert_eq!(reused.file, None);
        assert_eq!(reused.decrypts_to.as_deref(), Some(pin_sha.as_str()));
        for other in [state(Some(&"ee".repeat(32))), state(None)] {
            let e = model_spec(&options, Some(&image), Some(&other)).unwrap_err();
            assert!(
                e.to_string().contains("no snapshot of it is recorded"),
                "{e}"
            );
        }
        assert!(model_spec(&options, Some(&image), None).is_err());
    }

    #[test]
    fn an_encrypted_model_is_checked_for_form_and_length_only() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("model.gguf");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&plain, &data).unwrap();
        let key = dir.path().join("key.txt");
        let enc = dir.path().join("model.gguf.age");
        let ok = |c: &mut std::process::Command| {
            let o = c
                .output()
                .expect("`age` not found (apt-get install age; .ci/deps does)");
            assert!(o.status.success(), "{o:?}");
        };
        ok(std::process::Command::new("age-keygen").arg("-o").arg(&key));
        ok(std::process::Command::new("age")
            .args(["-e", "-i"])
            .arg(&key)
            .arg("-o")
            .arg(&enc)
            .arg(&plain));
        let pin = |size: u64| zoa_init::config::Model {
            device: None,
            size,
            sha256: "ab".repeat(32),
            path: zoa_init::config::DEFAULT_MODEL_PATH.into(),
            age_identity: Some("model-key".into()),
        };
        let enc_len = std::fs::metadata(&enc).unwrap().len();
        check_encrypted_model(&enc, &pin(data.len() as u64), enc_len).unwrap();
        let e = check_encrypted_model(&enc, &pin(data.len() as u64 + 1), enc_len).unwrap_err();
        assert!(
            e.to_string()
                .contains("it is not the pinned model encrypted"),
            "{e}"
        );
        let e =
            check_encrypted_model(&plain, &pin(data.len() as u64), data.len() as u64).unwrap_err();
        assert!(e.to_string().contains("no age header"), "{e}");
    }

    #[test]
    fn cidrs() {
        assert!(validate_cidr("203.0.113.0/24").is_ok());
        assert!(validate_cidr("0.0.0.0/0").is_ok());
        for bad in ["203.0.113.0", "203.0.113.0/33", "x/8", "::/0"] {
            assert!(validate_cidr(bad).is_err(), "{bad}");
        }
    }
}
