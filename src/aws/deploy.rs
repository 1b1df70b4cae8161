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

use serde::Serialize;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_ec2::types as ec2t;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::calls::{
    self, CreateLaunchTemplate, Id, InstanceSpec, RegisterImage, RunInstances, Tags, Volume,
};
use super::plan::{Action, Call, Plan, Step};
use super::policy::{self, BootMode, KeyPolicyInput, PcrBinding};
use super::state::{
    DeployState, ReleaseRef, TAG_DEPLOYMENT, TAG_DISK, TAG_MANIFEST, TAG_MODEL, TAG_RELEASE,
    TAG_USER_DATA,
};
use super::userdata::{SealedSecret, SecretArg, UserDataSpec};
use super::{api_error, error_chain, Account, AwsError, Clients};
use crate::progress::Progress;
use crate::release::manifest::Manifest;
use crate::release::VerifiedRelease;

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
            auto_scaling_group: base,
        }
    }
}

/// The network a deploy uses.
#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
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
    /// What exists already, found by [`prepare`].
    found: Found,
}

/// The model weights the image pins, and the file that holds them (none on a rerun that
/// finds the snapshot made before).
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub size: u64,
    pub sha256: String,
    pub file: Option<PathBuf>,
}

/// Resources that exist (recorded, or found by name/tag), and stale ones to clean up.
#[derive(Debug, Default, Clone)]
struct Found {
    snapshot: Option<String>,
    stale_snapshots: Vec<String>,
    model_snapshot: Option<String>,
    stale_model_snapshots: Vec<String>,
    image: Option<String>,
    role: bool,
    instance_profile: bool,
    key: Option<(String, String)>,
    key_admits: Option<KeyAdmits>,
    key_alias: bool,
    role_policy: bool,
    security_group: Option<String>,
    /// The group's current (ingress, egress) rules.
    security_group_rules: (BTreeSet<SgRule>, BTreeSet<SgRule>),
    /// Instances with the wanted user data (all of them when none is asked for).
    instances: Vec<String>,
    /// Instances that booted with other user data: replaced.
    outdated_instances: Vec<String>,
    launch_template: Option<String>,
    /// SHA-256 of the user data in the launch template's latest version.
    template_user_data: Option<String>,
    auto_scaling_group: bool,
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

/// The disk image a deploy uploads, in an unnamed temporary file: no other process can
/// open it by name, so the snapshot holds the bytes written from the verified UKI.
struct PrivateDisk {
    file: std::fs::File,
    sha256: String,
}

impl PrivateDisk {
    /// A path to the open file for the uploader, which opens files by path: Linux's
    /// `/proc/self/fd/N` reopens this very file (it has no other name).
    fn path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// What a deploy did.
#[derive(Debug, Serialize)]
pub struct DeployOutcome {
    pub plan: Plan,
    pub state: DeployState,
}

/// One security-group rule for one IPv4 range, comparable, so a group's rules can be
/// checked against the wanted ones and a half-made group finished on a rerun.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SgRule {
    pub protocol: String,
    pub from: Option<i32>,
    pub to: Option<i32>,
    pub cidr: String,
}

/// A group's (ingress, egress) rules.
pub(crate) type SgRules = (BTreeSet<SgRule>, BTreeSet<SgRule>);

impl SgRule {
    fn tcp(port: i32, cidr: &str) -> SgRule {
        SgRule {
            protocol: "tcp".to_owned(),
            from: Some(port),
            to: Some(port),
            cidr: cidr.to_owned(),
        }
    }

    /// EC2's default egress rule of a new group: everything, everywhere.
    fn allow_all() -> SgRule {
        SgRule {
            protocol: "-1".to_owned(),
            from: None,
            to: None,
            cidr: "0.0.0.0/0".to_owned(),
        }
    }

    fn from_permissions(perms: &[ec2t::IpPermission]) -> BTreeSet<SgRule> {
        let mut out = BTreeSet::new();
        for p in perms {
            let protocol = p.ip_protocol().unwrap_or("-1").to_owned();
            let all = protocol == "-1";
            for r in p.ip_ranges() {
                if let Some(cidr) = r.cidr_ip() {
                    out.insert(SgRule {
                        protocol: protocol.clone(),
                        from: if all { None } else { p.from_port() },
                        to: if all { None } else { p.to_port() },
                        cidr: cidr.to_owned(),
                    });
                }
            }
            // IPv6 ranges, prefix lists and group references are never zoa's: listing
            // them as unwanted makes the rerun remove them.
            for r in p.ipv6_ranges() {
                if let Some(cidr) = r.cidr_ipv6() {
                    out.insert(SgRule {
                        protocol: protocol.clone(),
                        from: if all { None } else { p.from_port() },
                        to: if all { None } else { p.to_port() },
                        cidr: cidr.to_owned(),
                    });
                }
            }
        }
        out
    }

    fn to_permission(&self, description: Option<&str>) -> ec2t::IpPermission {
        let mut b = ec2t::IpPermission::builder()
            .ip_protocol(&self.protocol)
            .set_from_port(self.from)
            .set_to_port(self.to);
        if self.cidr.contains(':') {
            b = b.ipv6_ranges(ec2t::Ipv6Range::builder().cidr_ipv6(&self.cidr).build());
        } else {
            let mut r = ec2t::IpRange::builder().cidr_ip(&self.cidr);
            if let Some(d) = description {
                r = r.description(d);
            }
            b = b.ip_ranges(r.build());
        }
        b.build()
    }

    fn to_json(&self, description: Option<&str>) -> serde_json::Value {
        let mut range = json!({"CidrIp": self.cidr});
        if let Some(d) = description {
            range["Description"] = json!(d);
        }
        let mut p = json!({"IpProtocol": self.protocol, "IpRanges": [range]});
        if let (Some(f), Some(t)) = (self.from, self.to) {
            p["FromPort"] = json!(f);
            p["ToPort"] = json!(t);
        }
        p
    }
}

/// One rule-changing call: which API, and its rules.
#[derive(Debug)]
struct RuleChange {
    api: &'static str,
    rules: Vec<SgRule>,
    description: Option<&'static str>,
}

/// The changes that turn `have` into `want`, as (revoke, authorize).
fn rule_diff(have: &BTreeSet<SgRule>, want: &BTreeSet<SgRule>) -> (Vec<SgRule>, Vec<SgRule>) {
    (
        have.difference(want).cloned().collect(),
        want.difference(have).cloned().collect(),
    )
}

/// Deployment names become resource names: keep them to what every AWS name accepts.
fn validate_deployment_name(name: &str) -> Result<(), AwsError> {
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
                "deployment name {name:?}: use 1-40 letters, digits, '-' or '_', starting with a letter or digit (--name)"
            ),
        ))
    }
}

fn validate_cidr(cidr: &str) -> Result<(), AwsError> {
    let bad = || {
        AwsError::step(
            "configuration",
            format!("--allow-cidr {cidr:?} is not an IPv4 CIDR such as 203.0.113.0/24"),
        )
    };
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    addr.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok(())
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

/// The SHA-384 PCR values a KMS policy binds, from the signed manifest: PCR7 and PCR12
/// when the release was measured with Secure Boot on (its UefiData enrolls a PK), PCR4
/// and PCR12 otherwise.
pub(crate) fn binding_of(manifest: &Manifest) -> Result<PcrBinding, AwsError> {
    let mode = if manifest.measurements.secure_boot {
        BootMode::SecureBoot
    } else {
        BootMode::Standard
    };
    let pcr = |n: u8| {
        let index = crate::measure::Pcr::new(n);
        index
            .and_then(|p| manifest.measurements.pcr(p))
            .map(|d| d.sha384.clone())
            .ok_or_else(|| {
                let why = index
                    .and_then(|p| manifest.measurements.unpredicted.get(&p))
                    .cloned()
                    .unwrap_or_else(|| "not in the manifest".to_owned());
                AwsError::step(
                    "release",
                    format!("PCR{n} is not predicted ({why}): a KMS policy cannot bind it"),
                )
            })
    };
    Ok(PcrBinding {
        release: format!("{} {}", manifest.name, manifest.version),
        mode,
        boot_pcr: pcr(mode.boot_pcr())?,
        pcr12: pcr(12)?,
    })
}

/// The release's `uefi-data.bin` as RegisterImage's `UefiData` (base64), when the
/// manifest covers one: the verified bytes, refused when over EC2's limit, before any AWS
/// call.
pub(crate) fn uefi_data_of(release: &VerifiedRelease) -> Result<Option<String>, AwsError> {
    use crate::release::manifest::{MANIFEST_FILE, UEFI_DATA_FILE};
    let dir = release.dir();
    let Some(bytes) = release.uefi_data() else {
        if release.manifest().measurements.secure_boot {
            return Err(AwsError::file(
                &dir.join(MANIFEST_FILE),
                format!("predicts a Secure Boot boot but covers no {UEFI_DATA_FILE}: an AMI could not enroll the keys it was measured with; sign it again with `zoa sign --uefi-data BLOB`"),
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

/// The key policy's parameters; administrators default to the account root and sealers
/// to the administrators.
fn key_policy_input(
    partition: &str,
    account_id: &str,
    role_name: &str,
    admins: &[String],
    sealers: &[String],
    bindings: Vec<PcrBinding>,
    lock: bool,
) -> KeyPolicyInput {
    let admins = if admins.is_empty() {
        vec![format!("arn:{partition}:iam::{account_id}:root")]
    } else {
        admins.to_vec()
    };
    let sealers = if sealers.is_empty() {
        admins.clone()
    } else {
        sealers.to_vec()
    };
    KeyPolicyInput {
        partition: partition.to_owned(),
        account_id: account_id.to_owned(),
        admin_principals: admins,
        instance_role_arn: format!("arn:{partition}:iam::{account_id}:role/{role_name}"),
        sealer_principals: sealers,
        bindings,
        lock,
    }
}

/// What `zoa policy DIR` renders.
#[derive(Debug, Clone)]
pub struct PolicyRequest {
    pub dir: PathBuf,
    pub pubkey: PathBuf,
    pub name: Option<String>,
    pub partition: String,
    pub account_id: String,
    /// For the placeholder key ARN before a deploy made the key.
    pub region: Option<String>,
    pub admin_principals: Vec<String>,
    pub sealer_principals: Vec<String>,
    pub lock: bool,
}

/// The documents a deploy of a verified release would create: the KMS key policy, the
/// instance role's trust policy and its only permission policy (with the key's ARN when a
/// deploy record has it, else a placeholder ARN).
pub fn render_policies(req: &PolicyRequest) -> Result<serde_json::Value, AwsError> {
    let options = DeployOptions::new(&req.dir, &req.pubkey);
    let release = verify_release(&options)?;
    let (manifest, digest) = (release.manifest(), release.manifest_sha256());
    let deployment = req.name.clone().unwrap_or_else(|| manifest.name.clone());
    validate_deployment_name(&deployment)?;
    let names = Names::new(&deployment, digest);
    let input = key_policy_input(
        &req.partition,
        &req.account_id,
        &names.role,
        &req.admin_principals,
        &req.sealer_principals,
        vec![binding_of(manifest)?],
        req.lock,
    );
    let recorded = DeployState::load(&req.dir)?;
    let key_alias = recorded
        .as_ref()
        .and_then(|s| s.key_alias.clone())
        .unwrap_or(names.key_alias);
    let key_arn = recorded.and_then(|s| s.key_arn).unwrap_or_else(|| {
        format!(
            "arn:{}:kms:{}:{}:key/created-by-deploy",
            req.partition,
            req.region.as_deref().unwrap_or("region"),
            req.account_id
        )
    });
    Ok(json!({
        "deployment": deployment,
        "release": format!("{} {}", manifest.name, manifest.version),
        "manifest_sha256": digest,
        "key_alias": key_alias,
        "key_policy": policy::key_policy(&input)?,
        "bypass_policy_lockout_safety_check": policy::needs_lockout_bypass(&input),
        "instance_role": names.role,
        "instance_role_trust_policy": policy::instance_role_trust_policy(),
        "instance_role_policy": policy::instance_role_policy(&key_arn)?,
    }))
}

/// Checks everything local, then reads (never changes) the account: identity, network,
/// instance type, and what exists of this deployment already.
pub async fn prepare(clients: &Clients, options: DeployOptions) -> Result<Deployment, AwsError> {
    let verified = verify_release(&options)?;
    let manifest = verified.manifest();
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
            "--allow-cidr needs a serving port: the recipe has no serving_port, pass --port",
        ));
    }
    if options.count == 0 {
        return Err(AwsError::step(
            "configuration",
            "--count must be at least 1",
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
    let binding = binding_of(manifest)?;
    let uefi_data = uefi_data_of(&verified)?;
    if options.secure_boot && binding.mode != BootMode::SecureBoot {
        return Err(AwsError::step(
            "configuration",
            match uefi_data {
                None => format!(
                    "--secure-boot: {} is not a Secure Boot release (it has no uefi-data.bin): sign it with `zoa sign {} --uefi-data BLOB`",
                    options.dir.display(),
                    options.dir.display()
                ),
                Some(_) => format!(
                    "--secure-boot: the uefi-data.bin of {} enrolls no PK, so the release was measured with Secure Boot off",
                    options.dir.display()
                ),
            },
        ));
    }
    if let Some(from) = &options.rollout_from {
        if from.binding.mode != binding.mode {
            return Err(AwsError::step(
                "rollout",
                format!(
                    "{} boots with {}, {} with {}: the deployment's key binds the PCRs of one boot mode; deploy the new release under another --name instead",
                    from.binding.release, from.binding.mode, binding.release, binding.mode
                ),
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
        found: Found::default(),
    };
    d.found = d.find_existing(clients).await?;
    d.check_found()?;
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
        return Err(AwsError::step(
            "configuration",
            "--secret and --user-data both set the instances' user data: give one (zoa-init reads secrets only from the user data --secret writes)",
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
    // by its first deploy: that deploy runs without --secret.
    let key = recorded.and_then(|s| s.key_arn.as_deref()).ok_or_else(|| {
        AwsError::file(
            &DeployState::path(&options.dir),
            format!(
                "{}: nothing can be sealed for {deployment} yet: deploy without --secret first (it creates the KMS key), seal with `zoa seal --key {} --name NAME`, then deploy again with --secret",
                if recorded.is_some() { "records no KMS key" } else { "no deploy record" },
                options.dir.display()
            ),
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
            "--model: the image pins no model ([init.model] in its recipe), so zoa-init would never read it",
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
            }))
        }
        (Some(pin), None) if pin.age_identity.is_some() => Err(AwsError::step(
            "configuration",
            format!(
                "the image pins an age-encrypted model ({} bytes decrypted, sha256 {}): pass --model FILE (the encrypted file; an unchanged one is not uploaded again)",
                pin.size, pin.sha256
            ),
        )),
        (Some(pin), Some(path)) => {
            let (sha256, size) =
                crate::digest::sha256_file(path).map_err(|e| AwsError::file(path, e))?;
            if size != pin.size || sha256 != pin.sha256 {
                return Err(AwsError::file(
                    path,
                    format!(
                        "--model: {size} bytes with sha256 {sha256}, but the image pins {} bytes with sha256 {}: zoa-init would refuse it",
                        pin.size, pin.sha256
                    ),
                ));
            }
            Ok(Some(ModelSpec {
                size,
                sha256,
                file: Some(path.clone()),
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
                return Err(AwsError::step(
                    "configuration",
                    format!(
                        "the image pins a model ({} bytes, sha256 {}) that zoa-init reads from a second disk: pass --model FILE",
                        pin.size, pin.sha256
                    ),
                ));
            }
            Ok(Some(ModelSpec {
                size: pin.size,
                sha256: pin.sha256.clone(),
                file: None,
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
            format!("--model: the image pins an age-encrypted model: {e}"),
        )
    })?;
    let expected = header + age_payload_len(pin.size);
    if size != expected {
        return Err(AwsError::file(
            path,
            format!(
                "--model: {size} bytes, but an age file of the pinned {}-byte model is {expected} bytes: it is not the pinned model encrypted (zoa-init would refuse it)",
                pin.size
            ),
        ));
    }
    Ok(())
}

/// DescribeInstanceTypes for the one type (moto refuses the nitro-tpm-support filter, and
/// one type is cheaper anyway); refuse a type without NitroTPM.
async fn check_instance_type(clients: &Clients, instance_type: &str) -> Result<(), AwsError> {
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
async fn find_network(clients: &Clients, subnet_ids: &[String]) -> Result<Network, AwsError> {
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
            .ok_or_else(|| AwsError::step(step, "this region has no default VPC: pass --subnet"))?
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
    Ok(Network {
        vpc_id,
        subnet_ids: ids,
    })
}

/// A new version of a launch template from its latest with `data` changed, made the
/// default (what an Auto Scaling group on `$Latest` or the default launches next).
pub(crate) async fn new_default_template_version(
    c: &Clients,
    launch_template_id: &str,
    data: ec2t::RequestLaunchTemplateData,
) -> Result<(), AwsError> {
    let step = "launch template";
    let out = c
        .ec2
        .create_launch_template_version()
        .launch_template_id(launch_template_id)
        .source_version("$Latest")
        .launch_template_data(data)
        .send()
        .await
        .map_err(|e| api_error(step, "ec2:CreateLaunchTemplateVersion", e))?;
    let version = out
        .launch_template_version()
        .and_then(|v| v.version_number())
        .ok_or_else(|| AwsError::step(step, "CreateLaunchTemplateVersion returned no version"))?;
    c.ec2
        .modify_launch_template()
        .launch_template_id(launch_template_id)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(|e| api_error(step, "ec2:ModifyLaunchTemplate", e))?;
    Ok(())
}

/// The data of a launch template's latest version (image, user data, ...).
pub(crate) async fn latest_template_data(
    c: &Clients,
    launch_template_id: &str,
) -> Result<Option<ec2t::ResponseLaunchTemplateData>, AwsError> {
    let out = c
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(launch_template_id)
        .versions("$Latest")
        .send()
        .await
        .map_err(|e| api_error("launch template", "ec2:DescribeLaunchTemplateVersions", e))?;
    Ok(out
        .launch_template_versions()
        .first()
        .and_then(|v| v.launch_template_data())
        .cloned())
}

pub(crate) fn ec2_filter(name: &str, value: &str) -> ec2t::Filter {
    ec2t::Filter::builder().name(name).values(value).build()
}

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

    fn tags_json(&self) -> serde_json::Value {
        calls::tags_json(&self.tags())
    }

    fn ec2_tag_spec(&self, resource: ec2t::ResourceType) -> ec2t::TagSpecification {
        calls::ec2_tag_spec(resource, &self.tags())
    }

    fn key_policy_input(&self) -> KeyPolicyInput {
        self.key_policy_input_for(KeyAdmits::New)
    }

    /// The key policy's parameters admitting the given releases.
    pub(crate) fn key_policy_input_for(&self, admits: KeyAdmits) -> KeyPolicyInput {
        let old = self
            .options
            .rollout_from
            .as_ref()
            .map(|r| r.binding.clone());
        let bindings = match (admits, old) {
            (KeyAdmits::Old, Some(old)) => vec![old],
            // Secure Boot releases signed by the same db key with the same UefiData have
            // the same PCR7 and PCR12: the new release is admitted already, and a policy
            // listing the same values twice is refused.
            (KeyAdmits::Both, Some(old)) if old.same_pcrs(&self.binding) => {
                vec![self.binding.clone()]
            }
            (KeyAdmits::Both, Some(old)) => vec![old, self.binding.clone()],
            _ => vec![self.binding.clone()],
        };
        key_policy_input(
            &self.account.partition,
            &self.account.account_id,
            &self.names.role,
            &self.options.admin_principals,
            &self.options.sealer_principals,
            bindings,
            self.options.lock_policy,
        )
    }

    /// The rendered KMS key policy.
    pub fn key_policy(&self) -> Result<serde_json::Value, AwsError> {
        Ok(policy::key_policy(&self.key_policy_input())?)
    }

    fn key_arn_or_placeholder(&self) -> String {
        self.found
            .key
            .as_ref()
            .map(|(_, arn)| arn.clone())
            .or_else(|| self.state.key_arn.clone())
            // A well-formed stand-in: the real ARN is only known once CreateKey answers.
            .unwrap_or_else(|| {
                format!(
                    "arn:{}:kms:{}:{}:key/created-by-this-deploy",
                    self.account.partition, self.region, self.account.account_id
                )
            })
    }

    fn security_group_or_placeholder(&self) -> String {
        self.found
            .security_group
            .clone()
            .or_else(|| self.state.security_group_id.clone())
            .unwrap_or_else(|| "<security-group-id>".to_owned())
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
                return Err(AwsError::step(
                    "kms key",
                    format!(
                        "the --secret envelopes are sealed under {sealed}, but {} is {arn}: seal them again with `zoa seal --key {}`",
                        self.names.key_alias,
                        self.options.dir.display()
                    ),
                ));
            }
            // This deploy would make a new key, and nothing sealed before opens with it.
            (Some(sealed), None) => {
                return Err(AwsError::step(
                    "kms key",
                    format!(
                        "the --secret envelopes are sealed under {sealed}, which is gone (or pending deletion): deploy without --secret to make a new key, then seal again"
                    ),
                ));
            }
            _ => {}
        }
        if let Some(m) = &self.model {
            if m.file.is_none() && self.found.model_snapshot.is_none() {
                return Err(AwsError::step(
                    "model snapshot",
                    format!(
                        "the model snapshot (sha256 {}) is gone: pass --model FILE to upload it again",
                        m.sha256
                    ),
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

    /// The rendered key policy admitting `admits`.
    pub fn key_policy_admitting(&self, admits: KeyAdmits) -> Result<serde_json::Value, AwsError> {
        Ok(policy::key_policy(&self.key_policy_input_for(admits))?)
    }

    // ---- discovery (read-only) ----

    async fn find_existing(&self, c: &Clients) -> Result<Found, AwsError> {
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
        if self.options.uses_fleet() {
            f.launch_template = self.find_launch_template(c).await?;
            if let (Some(lt), Some(_)) = (&f.launch_template, &self.user_data) {
                f.template_user_data = latest_template_data(c, lt)
                    .await?
                    .and_then(|d| super::userdata::sha256_of_base64(d.user_data()));
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

    async fn find_snapshot(&self, c: &Clients, f: &mut Found) -> Result<(), AwsError> {
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
    async fn find_model_snapshot(
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

    async fn find_image(&self, c: &Clients) -> Result<Option<String>, AwsError> {
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

    async fn iam_role_exists(&self, c: &Clients) -> Result<bool, AwsError> {
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
    fn check_ours_iam(
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
            Err(AwsError::step(
                what,
                format!("IAM {what} {name} exists but is not tagged {TAG_DEPLOYMENT}={}: it was not created by this deployment; choose another --name", self.deployment),
            ))
        }
    }

    async fn instance_profile_exists(&self, c: &Clients) -> Result<bool, AwsError> {
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

    async fn role_policy_exists(&self, c: &Clients) -> Result<bool, AwsError> {
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
            return Err(AwsError::step(
                "kms key",
                format!(
                    "key {key_id} ({}) exists with another policy than this release needs: {why}. Refusing to reuse it; `zoa destroy` removes it, or choose another --name",
                    self.names.key_alias
                ),
            ));
        }
        Ok(None)
    }

    async fn describe_key(
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
    async fn find_key_by_tags(&self, c: &Clients) -> Result<Option<String>, AwsError> {
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

    async fn find_security_group(
        &self,
        c: &Clients,
    ) -> Result<Option<(String, SgRules)>, AwsError> {
        let out = c
            .ec2
            .describe_security_groups()
            .filters(ec2_filter("group-name", &self.names.security_group))
            .filters(ec2_filter("vpc-id", &self.network.vpc_id))
            .send()
            .await
            .map_err(|e| api_error("security group", "ec2:DescribeSecurityGroups", e))?;
        Ok(out.security_groups().first().and_then(|g| {
            let id = g.group_id()?.to_owned();
            Some((
                id,
                (
                    SgRule::from_permissions(g.ip_permissions()),
                    SgRule::from_permissions(g.ip_permissions_egress()),
                ),
            ))
        }))
    }

    /// The deployment's live instances of this release, each with the digest of the user
    /// data it booted with (its `zoa:user-data-sha256` tag).
    async fn find_instances(&self, c: &Clients) -> Result<Vec<(String, Option<String>)>, AwsError> {
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

    async fn find_launch_template(&self, c: &Clients) -> Result<Option<String>, AwsError> {
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

    async fn auto_scaling_group_exists(&self, c: &Clients) -> Result<bool, AwsError> {
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

    // ---- the plan ----

    /// Every step, with the calls of those that create something.
    pub fn plan(&self) -> Result<Plan, AwsError> {
        let f = &self.found;
        let mut steps = Vec::new();
        let step =
            |name: &'static str, resource: String, existing: Option<String>, calls: Vec<Call>| {
                Step {
                    step: name,
                    resource,
                    action: match existing {
                        Some(id) => Action::Keep(id),
                        None => Action::Create,
                    },
                    calls: Vec::new(),
                }
                .with_calls(calls)
            };

        steps.push(step(
            "snapshot",
            format!(
                "EBS snapshot of a GPT disk whose EFI System Partition holds the verified {} (sha256 {})",
                crate::release::manifest::UKI_FILE,
                self.release
                    .manifest()
                    .artifact(crate::release::manifest::UKI_FILE)
                    .map(|a| a.sha256.as_str())
                    .unwrap_or_default()
            ),
            f.snapshot.clone(),
            upload_calls(
                &f.stale_snapshots,
                "the disk image",
                self.snapshot_description(),
                self.tags_json(),
            ),
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
                upload_calls(
                    &f.stale_model_snapshots,
                    "the model (the last one padded with zeros)",
                    self.model_snapshot_description(m),
                    self.model_tags_json(m),
                ),
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
            vec![Call::new(
                "iam:CreateRole",
                json!({"RoleName": self.names.role, "AssumeRolePolicyDocument": policy::instance_role_trust_policy(), "Description": self.role_description(), "Tags": self.tags_json()}),
            )],
        ));
        steps.push(step(
            "instance-profile",
            format!("instance profile {}", self.names.instance_profile),
            f.instance_profile.then(|| self.names.instance_profile.clone()),
            vec![
                Call::new(
                    "iam:CreateInstanceProfile",
                    json!({"InstanceProfileName": self.names.instance_profile, "Tags": self.tags_json()}),
                ),
                Call::new(
                    "iam:AddRoleToInstanceProfile",
                    json!({"InstanceProfileName": self.names.instance_profile, "RoleName": self.names.role}),
                ),
            ],
        ));
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
            vec![Call::new("kms:CreateKey", self.create_key_params()?)],
        ));
        let key_id = f
            .key
            .as_ref()
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| "<key-id>".to_owned());
        steps.push(step(
            "kms-alias",
            format!("alias {}", self.names.key_alias),
            f.key_alias.then(|| self.names.key_alias.clone()),
            vec![Call::new(
                "kms:CreateAlias",
                json!({"AliasName": self.names.key_alias, "TargetKeyId": key_id}),
            )],
        ));
        steps.push(step(
            "role-policy",
            format!("the role's only permission: {ROLE_POLICY_NAME}"),
            f.role_policy.then(|| ROLE_POLICY_NAME.to_owned()),
            vec![Call::new(
                "iam:PutRolePolicy",
                json!({"RoleName": self.names.role, "PolicyName": ROLE_POLICY_NAME, "PolicyDocument": policy::instance_role_policy(&self.key_arn_or_placeholder())?}),
            )],
        ));
        steps.push(step(
            "security-group",
            format!(
                "security group {} ({})",
                self.names.security_group,
                self.ingress_summary()
            ),
            f.security_group.clone(),
            self.security_group_calls(),
        ));
        let rule_calls = self.rule_calls(&self.current_rules());
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
                vec![Call::new(
                    "autoscaling:CreateAutoScalingGroup",
                    self.auto_scaling_group_params(),
                )],
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
            if !f.outdated_instances.is_empty() {
                steps.push(Step {
                    step: "old-instances",
                    resource: format!(
                        "{}, booted with other user data: replaced by the new instance (an instance reads its user data at boot only)",
                        f.outdated_instances.join(", ")
                    ),
                    action: Action::Create,
                    calls: vec![Call::new(
                        "ec2:TerminateInstances",
                        json!({"InstanceIds": f.outdated_instances}),
                    )],
                });
            }
        }
        Ok(Plan {
            deployment: self.deployment.clone(),
            release: self.binding.release.clone(),
            boot_mode: self.binding.mode,
            account_id: self.account.account_id.clone(),
            region: self.region.clone(),
            steps,
            warnings: self.warnings(),
        })
    }

    /// A fleet whose launch template has other user data than asked for: a new template
    /// version, and an instance refresh, since instances read user data at boot only. The
    /// user data is recorded once the refresh is done, so a rerun after an interrupted
    /// refresh starts it again.
    fn template_user_data_step(&self) -> Option<Step> {
        let ud = self.user_data.as_ref()?;
        let lt = self.found.launch_template.as_ref()?;
        let in_template = self.found.template_user_data.as_deref() == Some(ud.sha256.as_str());
        if in_template && self.state.user_data_sha256.as_deref() == Some(ud.sha256.as_str()) {
            return None;
        }
        let mut calls = Vec::new();
        if !in_template {
            calls.push(Call::new(
                "ec2:CreateLaunchTemplateVersion",
                json!({"LaunchTemplateId": lt, "SourceVersion": "$Latest", "LaunchTemplateData": {"UserData": ud.summary()}}),
            ));
            calls.push(Call::new(
                "ec2:ModifyLaunchTemplate",
                json!({"LaunchTemplateId": lt, "DefaultVersion": "<new version>"}),
            ));
        }
        calls.push(Call::new(
            "autoscaling:StartInstanceRefresh",
            json!({"AutoScalingGroupName": self.names.auto_scaling_group, "Preferences": {"MinHealthyPercentage": REFRESH_MIN_HEALTHY_PERCENTAGE}}),
        ));
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

    fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        w.extend(self.secret_warnings());
        if self.options.lock_policy {
            w.push(format!(
                "--lock-policy: the key policy of {} denies kms:PutKeyPolicy to everyone, the account root included. It can never be changed again: a new release needs a new key and re-sealed secrets (`zoa rollout` does that), and nobody can ever grant themselves use of this key.",
                self.names.key_alias
            ));
        }
        if self.options.allow_cidr.is_empty() {
            w.push(
                "no --allow-cidr: the security group admits no inbound traffic at all".to_owned(),
            );
        }
        w
    }

    /// The secrets the image unseals against those its instances get: one missing makes
    /// them power off at boot; one extra is ignored by zoa-init.
    fn secret_warnings(&self) -> Vec<String> {
        let given: BTreeSet<&str> = match &self.user_data {
            Some(ud) if ud.secrets.is_empty() => {
                if self.image_secrets.is_empty() {
                    return Vec::new();
                }
                return vec![format!(
                    "the image unseals {} from the user data `--secret` writes, but --user-data gives its own: its instances will power off at boot",
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
                "the image unseals {} at boot, but its instances get no such --secret: they power off at boot until they do. Once the key exists, seal with `zoa seal --key {} --name NAME` and deploy again with --secret NAME=FILE",
                missing.join(", "),
                self.options.dir.display()
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

    fn model_snapshot_description(&self, model: &ModelSpec) -> String {
        format!(
            "zoa {} {} model sha256 {}",
            self.release.manifest().name,
            self.release.manifest().version,
            model.sha256
        )
    }

    /// The model snapshot's tags: the deployment's, and the model's digest, by which
    /// reruns and later releases of the deployment find it.
    fn model_tags(&self, model: &ModelSpec) -> Vec<(String, String)> {
        let mut tags = self.tags();
        tags.push((TAG_MODEL.to_owned(), model.sha256.clone()));
        tags
    }

    fn model_tags_json(&self, model: &ModelSpec) -> serde_json::Value {
        serde_json::Value::Array(
            self.model_tags(model)
                .into_iter()
                .map(|(k, v)| json!({"Key": k, "Value": v}))
                .collect(),
        )
    }

    fn image_description(&self) -> String {
        format!(
            "zoa {} manifest {}",
            self.binding.release,
            self.release.manifest_sha256()
        )
    }

    fn key_description(&self) -> String {
        format!(
            "zoa {}: data keys only for instances that booted {} (manifest {})",
            self.deployment,
            self.binding.release,
            self.release.manifest_sha256()
        )
    }

    fn security_group_description(&self) -> String {
        format!("zoa {}: serving port only, no SSH", self.deployment)
    }

    fn snapshot_description(&self) -> String {
        format!(
            "zoa {} {} disk",
            self.release.manifest().name,
            self.release.manifest().version
        )
    }

    fn role_description(&self) -> String {
        format!(
            "zoa {}: instances of {} may unseal with its KMS key, nothing else",
            self.deployment, self.binding.release
        )
    }

    fn ingress_summary(&self) -> String {
        match (self.port, self.options.allow_cidr.is_empty()) {
            (_, true) | (None, _) => "no ingress; egress HTTPS only".to_owned(),
            (Some(p), false) => format!(
                "tcp/{p} from {}; egress HTTPS only",
                self.options.allow_cidr.join(", ")
            ),
        }
    }

    fn register_image_spec(&self) -> RegisterImage {
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
    fn instance_spec(&self, instance_tags: Tags) -> InstanceSpec {
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
        }
    }

    /// The launch's ClientToken (see [`client_token`]), once the image and group exist.
    fn launch_token(&self, what: &str, instance: &InstanceSpec) -> Id {
        match (&instance.image, &instance.security_group) {
            (Id::Known(image), Id::Known(sg)) => Id::Known(self.token(what, image, sg)),
            _ => Id::Pending("derived from the image and security group ids"),
        }
    }

    fn run_instances_spec(&self) -> RunInstances {
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

    fn launch_template_spec(&self) -> CreateLaunchTemplate {
        let instance = self.instance_spec(self.tags());
        CreateLaunchTemplate {
            name: self.names.launch_template.clone(),
            client_token: self.launch_token("launch-template", &instance),
            instance,
            tags: self.tags(),
        }
    }

    fn create_key_params(&self) -> Result<serde_json::Value, AwsError> {
        Ok(json!({
            "Description": self.key_description(),
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "Policy": self.key_policy()?,
            "BypassPolicyLockoutSafetyCheck": policy::needs_lockout_bypass(&self.key_policy_input()),
            "Tags": self.tags().into_iter().map(|(k, v)| json!({"TagKey": k, "TagValue": v})).collect::<Vec<_>>(),
        }))
    }

    fn security_group_calls(&self) -> Vec<Call> {
        vec![Call::new(
            "ec2:CreateSecurityGroup",
            json!({"GroupName": self.names.security_group, "Description": self.security_group_description(), "VpcId": self.network.vpc_id, "TagSpecifications": [{"ResourceType": "security-group", "Tags": self.tags_json()}]}),
        )]
    }

    /// The group's rules: the serving port from each --allow-cidr (nothing without one),
    /// and egress HTTPS only. The default allow-all egress goes: the image only needs
    /// HTTPS (KMS, and S3 when models come from there); DNS to the VPC resolver and IMDS
    /// are not subject to security groups.
    fn wanted_rules(&self) -> SgRules {
        let ingress = match self.port {
            Some(p) => self
                .options
                .allow_cidr
                .iter()
                .map(|c| SgRule::tcp(i32::from(p), c))
                .collect(),
            None => BTreeSet::new(),
        };
        (ingress, BTreeSet::from([SgRule::tcp(443, "0.0.0.0/0")]))
    }

    /// The rules the group has (a group about to be created has EC2's defaults).
    fn current_rules(&self) -> SgRules {
        if self.found.security_group.is_some() {
            self.found.security_group_rules.clone()
        } else {
            (BTreeSet::new(), BTreeSet::from([SgRule::allow_all()]))
        }
    }

    /// What turns `have` into the wanted rules, in a safe order (egress narrowed before
    /// anything is opened); the plan and the apply both take it from here.
    fn rule_changes(&self, have: &SgRules) -> Vec<RuleChange> {
        let want = self.wanted_rules();
        let (revoke_in, add_in) = rule_diff(&have.0, &want.0);
        let (revoke_out, add_out) = rule_diff(&have.1, &want.1);
        [
            ("ec2:RevokeSecurityGroupEgress", revoke_out, None),
            (
                "ec2:AuthorizeSecurityGroupEgress",
                add_out,
                Some("HTTPS to AWS APIs"),
            ),
            ("ec2:RevokeSecurityGroupIngress", revoke_in, None),
            (
                "ec2:AuthorizeSecurityGroupIngress",
                add_in,
                Some("serving port"),
            ),
        ]
        .into_iter()
        .filter(|(_, rules, _)| !rules.is_empty())
        .map(|(api, rules, description)| RuleChange {
            api,
            rules,
            description,
        })
        .collect()
    }

    fn rule_calls(&self, have: &SgRules) -> Vec<Call> {
        let sg = self.security_group_or_placeholder();
        self.rule_changes(have)
            .iter()
            .map(|ch| {
                let perms: Vec<_> = ch.rules.iter().map(|r| r.to_json(ch.description)).collect();
                Call::new(ch.api, json!({"GroupId": sg, "IpPermissions": perms}))
            })
            .collect()
    }

    /// The ClientToken of a launch (see [`client_token`]); the user data is part of it,
    /// so an instance replaced for new user data is not answered with the old one.
    fn token(&self, what: &str, image: &str, security_group: &str) -> String {
        let mut ids = vec![image, security_group];
        if let Some(ud) = &self.user_data {
            ids.push(&ud.sha256);
        }
        client_token(&self.deployment, self.release.manifest_sha256(), what, &ids)
    }

    fn auto_scaling_group_params(&self) -> serde_json::Value {
        let lt = self
            .found
            .launch_template
            .clone()
            .or_else(|| self.state.launch_template_id.clone())
            .unwrap_or_else(|| "<launch-template-id>".to_owned());
        json!({
            "AutoScalingGroupName": self.names.auto_scaling_group,
            "LaunchTemplate": {"LaunchTemplateId": lt, "Version": "$Latest"},
            "MinSize": self.options.count,
            "MaxSize": self.options.count,
            "DesiredCapacity": self.options.count,
            "VPCZoneIdentifier": self.network.subnet_ids.join(","),
            "Tags": self.tags().into_iter().map(|(k, v)| json!({"Key": k, "Value": v, "PropagateAtLaunch": true})).collect::<Vec<_>>(),
        })
    }

    // ---- applying ----

    /// Executes the plan's `Create` steps in order, recording each resource as it appears.
    pub async fn apply(
        mut self,
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
            match step.step {
                "snapshot" => self.create_snapshot(c, progress).await?,
                "model-snapshot" => self.create_model_snapshot(c, progress).await?,
                "image" => self.create_image(c).await?,
                "role" => self.create_role(c).await?,
                "instance-profile" => self.create_instance_profile(c).await?,
                "kms-key" => self.create_key(c).await?,
                "kms-alias" => self.create_alias(c).await?,
                "role-policy" => self.put_role_policy(c).await?,
                "security-group" => self.create_security_group(c).await?,
                "security-group-rules" => self.set_security_group_rules(c).await?,
                "instance" => self.run_instance(c).await?,
                "old-instances" => self.terminate_outdated_instances(c).await?,
                "launch-template" => self.create_launch_template(c).await?,
                "auto-scaling-group" => self.create_auto_scaling_group(c).await?,
                "user-data" => self.roll_in_user_data(c, progress).await?,
                other => return Err(AwsError::step(other, "unknown step (a bug in zoa)")),
            }
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
            state: self.state,
        })
    }

    /// Records what discovery found (e.g. created just before a crash) in deploy.json.
    fn adopt_found(&mut self) -> Result<(), AwsError> {
        let f = self.found.clone();
        let s = &mut self.state;
        if let Some(id) = f.snapshot {
            s.snapshot_id = Some(id);
        }
        if let (Some(id), Some(m)) = (f.model_snapshot, &self.model) {
            s.model_snapshot_id = Some(id);
            s.model_sha256 = Some(m.sha256.clone());
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

    fn save(&self) -> Result<(), AwsError> {
        self.state.save(&self.options.dir)
    }

    /// Writes the disk image of the verified UKI (deterministic: seeded with the manifest
    /// digest) into an unnamed temporary file, and hashes it.
    fn write_disk(&self) -> Result<PrivateDisk, AwsError> {
        let step = "disk";
        let mut seed = [0u8; 32];
        hex::decode_to_slice(self.release.manifest_sha256(), &mut seed)
            .map_err(|e| AwsError::step(step, format!("manifest digest: {e}")))?;
        let file = tempfile::tempfile()
            .map_err(|e| AwsError::step(step, format!("creating a temporary file: {e}")))?;
        crate::uefi::disk::write_esp_disk_into(
            self.release.uki(),
            &file,
            Path::new(DISK_NAME),
            &seed,
        )
        .map_err(|e| AwsError::step(step, e.to_string()))?;
        let hash = |mut f: &std::fs::File| {
            std::io::Seek::rewind(&mut f)?;
            crate::digest::sha256_reader(f)
        };
        let (sha256, _) = hash(&file)
            .map_err(|e| AwsError::step(step, format!("hashing the {DISK_NAME}: {e}")))?;
        Ok(PrivateDisk { file, sha256 })
    }

    async fn create_snapshot(&mut self, c: &Clients, progress: Progress) -> Result<(), AwsError> {
        let stale = std::mem::take(&mut self.found.stale_snapshots);
        let disk = self.write_disk()?;
        self.state.disk_sha256 = Some(disk.sha256.clone());
        let mut tags = self.tags();
        tags.push((TAG_DISK.to_owned(), disk.sha256.clone()));
        let description = self.snapshot_description();
        self.upload_snapshot(
            c,
            progress,
            "snapshot",
            stale,
            &disk.path(),
            description,
            tags,
            |s, id| s.snapshot_id = Some(id),
        )
        .await?;
        // Held open until here: the upload read it through its descriptor.
        drop(disk);
        Ok(())
    }

    /// The model file as a snapshot of its own, tagged with its digest. coldsnap reads it
    /// in 512 KiB blocks, pads the last one with zeros and rounds the volume up to whole
    /// GiB, so any file size works; zoa-init reads only the pinned length.
    async fn create_model_snapshot(
        &mut self,
        c: &Clients,
        progress: Progress,
    ) -> Result<(), AwsError> {
        let step = "model snapshot";
        let model = self
            .model
            .clone()
            .ok_or_else(|| AwsError::step(step, "no model (a bug in zoa)"))?;
        let file = model
            .file
            .clone()
            .ok_or_else(|| AwsError::step(step, "no model snapshot found: pass --model FILE"))?;
        let stale = std::mem::take(&mut self.found.stale_model_snapshots);
        let tags = self.model_tags(&model);
        let description = self.model_snapshot_description(&model);
        let sha256 = model.sha256.clone();
        self.upload_snapshot(
            c,
            progress,
            step,
            stale,
            &file,
            description,
            tags,
            |s, id| {
                s.model_snapshot_id = Some(id);
                s.model_sha256 = Some(sha256);
            },
        )
        .await
    }

    /// Removes interrupted uploads, uploads `file` as a new snapshot with the EBS direct
    /// APIs, records it (before waiting: a snapshot that never completes is still the
    /// deployment's to destroy), and waits until it is completed.
    #[allow(clippy::too_many_arguments)]
    async fn upload_snapshot(
        &mut self,
        c: &Clients,
        progress: Progress,
        step: &str,
        stale: Vec<String>,
        file: &Path,
        description: String,
        tags: Vec<(String, String)>,
        record: impl FnOnce(&mut DeployState, String),
    ) -> Result<(), AwsError> {
        for id in stale {
            log::warn!("deleting {id}: an interrupted upload of {}", file.display());
            c.ec2
                .delete_snapshot()
                .snapshot_id(&id)
                .send()
                .await
                .map_err(|e| api_error(step, "ec2:DeleteSnapshot", e))?;
        }
        let tags: Vec<aws_sdk_ebs::types::Tag> = tags
            .into_iter()
            .map(|(k, v)| aws_sdk_ebs::types::Tag::builder().key(k).value(v).build())
            .collect();
        let size = std::fs::metadata(file)
            .map_err(|e| AwsError::file(file, e))?
            .len();
        let pb = progress.bytes(size, &format!("{step} upload"));
        let uploader = coldsnap::SnapshotUploader::new(c.ebs.clone());
        let id = uploader
            .upload_from_file(
                file,
                None,
                Some(&description),
                Some(tags),
                progress.enabled().then_some(pb.clone()),
                None,
                None,
                None,
                None,
            )
            .await
            .map_err(|e| {
                AwsError::step(
                    step,
                    format!(
                        "EBS direct upload of {}: {}",
                        file.display(),
                        error_chain(&e)
                    ),
                )
            })?;
        pb.finish_and_clear();
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

    async fn create_image(&mut self, c: &Clients) -> Result<(), AwsError> {
        let id = self.register_image_spec().send(c, "image").await?;
        self.state.image_id = Some(id);
        self.save()
    }

    async fn create_role(&mut self, c: &Clients) -> Result<(), AwsError> {
        let mut req = c
            .iam
            .create_role()
            .role_name(&self.names.role)
            .assume_role_policy_document(policy::instance_role_trust_policy().to_string())
            .description(self.role_description());
        for (k, v) in self.tags() {
            req = req.tags(iam_tag(&k, &v)?);
        }
        match req.send().await {
            Ok(_) => {}
            // Created by an earlier attempt whose answer was lost: it is ours if tagged so.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_already_exists_exception()) =>
            {
                if !self.iam_role_exists(c).await? {
                    return Err(api_error("role", "iam:CreateRole", e));
                }
            }
            Err(e) => return Err(api_error("role", "iam:CreateRole", e)),
        }
        self.state.role_name = Some(self.names.role.clone());
        self.save()
    }

    async fn create_instance_profile(&mut self, c: &Clients) -> Result<(), AwsError> {
        let mut req = c
            .iam
            .create_instance_profile()
            .instance_profile_name(&self.names.instance_profile);
        for (k, v) in self.tags() {
            req = req.tags(iam_tag(&k, &v)?);
        }
        match req.send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_already_exists_exception()) => {}
            Err(e) => {
                return Err(api_error(
                    "instance profile",
                    "iam:CreateInstanceProfile",
                    e,
                ))
            }
        }
        // Recorded before the role is added, so destroy removes a half-made profile too.
        self.state.instance_profile_name = Some(self.names.instance_profile.clone());
        self.save()?;
        match c
            .iam
            .add_role_to_instance_profile()
            .instance_profile_name(&self.names.instance_profile)
            .role_name(&self.names.role)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_limit_exceeded_exception()) =>
            {
                // A profile holds one role: it is already there from an earlier attempt.
                Ok(())
            }
            Err(e) => Err(api_error(
                "instance profile",
                "iam:AddRoleToInstanceProfile",
                e,
            )),
        }
    }

    async fn create_key(&mut self, c: &Clients) -> Result<(), AwsError> {
        let policy = self.key_policy()?.to_string();
        let bypass = policy::needs_lockout_bypass(&self.key_policy_input());
        let mut attempt = 0;
        let out = loop {
            let mut req = c
                .kms
                .create_key()
                .description(self.key_description())
                .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
                .key_spec(aws_sdk_kms::types::KeySpec::SymmetricDefault)
                .policy(&policy)
                .bypass_policy_lockout_safety_check(bypass);
            for (k, v) in self.tags() {
                req = req.tags(
                    aws_sdk_kms::types::Tag::builder()
                        .tag_key(k)
                        .tag_value(v)
                        .build()
                        .map_err(|e| AwsError::step("kms key", e.to_string()))?,
                );
            }
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
                Err(e) => return Err(api_error("kms key", "kms:CreateKey", e)),
            }
        };
        let meta = out
            .key_metadata()
            .ok_or_else(|| AwsError::step("kms key", "CreateKey returned no key metadata"))?;
        self.state.key_id = Some(meta.key_id().to_owned());
        self.state.key_arn = meta.arn().map(str::to_owned);
        self.state.key_locked = self.options.lock_policy;
        self.save()
    }

    async fn create_alias(&mut self, c: &Clients) -> Result<(), AwsError> {
        let key_id = self
            .state
            .key_id
            .clone()
            .ok_or_else(|| AwsError::step("kms key", "no key recorded"))?;
        c.kms
            .create_alias()
            .alias_name(&self.names.key_alias)
            .target_key_id(key_id)
            .send()
            .await
            .map_err(|e| api_error("kms key", "kms:CreateAlias", e))?;
        self.state.key_alias = Some(self.names.key_alias.clone());
        self.save()
    }

    async fn put_role_policy(&mut self, c: &Clients) -> Result<(), AwsError> {
        let key_arn = self
            .state
            .key_arn
            .clone()
            .ok_or_else(|| AwsError::step("role policy", "no KMS key recorded"))?;
        let doc = policy::instance_role_policy(&key_arn)?;
        c.iam
            .put_role_policy()
            .role_name(&self.names.role)
            .policy_name(ROLE_POLICY_NAME)
            .policy_document(doc.to_string())
            .send()
            .await
            .map_err(|e| api_error("role policy", "iam:PutRolePolicy", e))?;
        self.state.role_policy_name = Some(ROLE_POLICY_NAME.to_owned());
        self.save()
    }

    async fn create_security_group(&mut self, c: &Clients) -> Result<(), AwsError> {
        let step = "security group";
        let out = c
            .ec2
            .create_security_group()
            .group_name(&self.names.security_group)
            .description(self.security_group_description())
            .vpc_id(&self.network.vpc_id)
            .tag_specifications(self.ec2_tag_spec(ec2t::ResourceType::SecurityGroup))
            .send()
            .await
            .map_err(|e| api_error(step, "ec2:CreateSecurityGroup", e))?;
        let id = out
            .group_id()
            .ok_or_else(|| AwsError::step(step, "CreateSecurityGroup returned no id"))?
            .to_owned();
        self.state.security_group_id = Some(id);
        self.save()
    }

    /// Brings the group's rules to the wanted ones, from what it has now.
    async fn set_security_group_rules(&mut self, c: &Clients) -> Result<(), AwsError> {
        let step = "security group rules";
        let (id, have) = self
            .find_security_group(c)
            .await?
            .ok_or_else(|| AwsError::step(step, "the security group is gone"))?;
        for ch in self.rule_changes(&have) {
            let perms: Vec<ec2t::IpPermission> = ch
                .rules
                .iter()
                .map(|r| r.to_permission(ch.description))
                .collect();
            let perms = Some(perms);
            let ec2 = &c.ec2;
            match ch.api {
                "ec2:RevokeSecurityGroupEgress" => ec2
                    .revoke_security_group_egress()
                    .group_id(&id)
                    .set_ip_permissions(perms)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| api_error(step, ch.api, e)),
                "ec2:AuthorizeSecurityGroupEgress" => ec2
                    .authorize_security_group_egress()
                    .group_id(&id)
                    .set_ip_permissions(perms)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| api_error(step, ch.api, e)),
                "ec2:RevokeSecurityGroupIngress" => ec2
                    .revoke_security_group_ingress()
                    .group_id(&id)
                    .set_ip_permissions(perms)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| api_error(step, ch.api, e)),
                _ => ec2
                    .authorize_security_group_ingress()
                    .group_id(&id)
                    .set_ip_permissions(perms)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| api_error(step, ch.api, e)),
            }?;
        }
        Ok(())
    }

    fn recorded(&self, value: &Option<String>, what: &str, step: &str) -> Result<String, AwsError> {
        value
            .clone()
            .ok_or_else(|| AwsError::step(step, format!("no {what} recorded")))
    }

    async fn run_instance(&mut self, c: &Clients) -> Result<(), AwsError> {
        self.state.instance_ids = self.run_instances_spec().send(c, "instance").await?;
        self.record_user_data();
        self.save()
    }

    /// Records the user data asked for as the instances' (once they boot with it).
    fn record_user_data(&mut self) {
        if let Some(ud) = &self.user_data {
            self.state.user_data_sha256 = Some(ud.sha256.clone());
            self.state.secrets = ud.secrets.clone();
        }
    }

    /// Terminates the instances that booted with other user data (the new one runs).
    async fn terminate_outdated_instances(&mut self, c: &Clients) -> Result<(), AwsError> {
        let ids = std::mem::take(&mut self.found.outdated_instances);
        c.ec2
            .terminate_instances()
            .set_instance_ids(Some(ids.clone()))
            .send()
            .await
            .map_err(|e| api_error("old instances", "ec2:TerminateInstances", e))?;
        self.state.instance_ids.retain(|i| !ids.contains(i));
        self.save()
    }

    /// New user data for a fleet: a launch template version with it (unless the latest
    /// has it already), made the default, then an instance refresh, after which the user
    /// data is recorded.
    async fn roll_in_user_data(&mut self, c: &Clients, progress: Progress) -> Result<(), AwsError> {
        let step = "user data";
        let ud = self
            .user_data
            .clone()
            .ok_or_else(|| AwsError::step(step, "no user data (a bug in zoa)"))?;
        let lt = self.recorded(&self.state.launch_template_id, "launch template", step)?;
        if self.found.template_user_data.as_deref() != Some(ud.sha256.as_str()) {
            let data = ec2t::RequestLaunchTemplateData::builder()
                .user_data(ud.base64())
                .build();
            new_default_template_version(c, &lt, data).await?;
            self.found.template_user_data = Some(ud.sha256.clone());
        }
        let asg = self.names.auto_scaling_group.clone();
        let pb = progress.stage(format!("instance refresh of {asg}"));
        super::rollout::refresh_instances(
            c,
            &asg,
            REFRESH_MIN_HEALTHY_PERCENTAGE,
            self.options.refresh_wait,
            "zoa deploy",
        )
        .await?;
        pb.finish_and_clear();
        self.record_user_data();
        self.save()
    }

    async fn create_launch_template(&mut self, c: &Clients) -> Result<(), AwsError> {
        let id = self
            .launch_template_spec()
            .send(c, "launch template")
            .await?;
        self.state.launch_template_id = Some(id);
        // Every instance of the group will boot with it.
        self.record_user_data();
        self.save()
    }

    async fn create_auto_scaling_group(&mut self, c: &Clients) -> Result<(), AwsError> {
        let step = "auto scaling group";
        let lt = self.recorded(&self.state.launch_template_id, "launch template", step)?;
        let mut req = c
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(&self.names.auto_scaling_group)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(lt)
                    .version("$Latest")
                    .build(),
            )
            .min_size(self.options.count as i32)
            .max_size(self.options.count as i32)
            .desired_capacity(self.options.count as i32)
            .vpc_zone_identifier(self.network.subnet_ids.join(","));
        for (k, v) in self.tags() {
            req = req.tags(
                aws_sdk_autoscaling::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .propagate_at_launch(true)
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if e.code() == Some("AlreadyExists") => {}
            Err(e) => return Err(api_error(step, "autoscaling:CreateAutoScalingGroup", e)),
        }
        self.state.auto_scaling_group = Some(self.names.auto_scaling_group.clone());
        self.save()
    }
}

impl Step {
    fn with_calls(mut self, calls: Vec<Call>) -> Step {
        if self.action == Action::Create {
            self.calls = calls;
        }
        self
    }
}

/// The EBS direct API calls of a snapshot upload (after removing stale uploads).
fn upload_calls(
    stale: &[String],
    what: &str,
    description: String,
    tags: serde_json::Value,
) -> Vec<Call> {
    let mut calls: Vec<Call> = stale
        .iter()
        .map(|id| Call::new("ec2:DeleteSnapshot", json!({"SnapshotId": id})))
        .collect();
    calls.push(Call::new(
        "ebs:StartSnapshot",
        json!({"VolumeSize": "<size rounded up to GiB>", "Description": description, "Tags": tags, "Timeout": 60}),
    ));
    calls.push(Call::new(
        "ebs:PutSnapshotBlock",
        json!({"Blocks": format!("<each 512 KiB block of {what}, in parallel>")}),
    ));
    calls.push(Call::new(
        "ebs:CompleteSnapshot",
        json!({"ChecksumAlgorithm": "SHA256", "ChecksumAggregationMethod": "LINEAR"}),
    ));
    calls
}

fn iam_tag(k: &str, v: &str) -> Result<aws_sdk_iam::types::Tag, AwsError> {
    aws_sdk_iam::types::Tag::builder()
        .key(k)
        .value(v)
        .build()
        .map_err(|e| AwsError::step("tags", e.to_string()))
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

    #[test]
    fn security_group_rules_diff_to_exactly_the_wanted_ones() {
        let https = SgRule::tcp(443, "0.0.0.0/0");
        let serve = SgRule::tcp(8080, "203.0.113.0/24");
        // A new group: the default allow-all egress goes, HTTPS comes, the port opens.
        let have: SgRules = (BTreeSet::new(), BTreeSet::from([SgRule::allow_all()]));
        let want: SgRules = (
            BTreeSet::from([serve.clone()]),
            BTreeSet::from([https.clone()]),
        );
        assert_eq!(
            rule_diff(&have.1, &want.1),
            (vec![SgRule::allow_all()], vec![https.clone()])
        );
        assert_eq!(rule_diff(&have.0, &want.0), (vec![], vec![serve.clone()]));
        // A group someone opened to SSH: the extra rule is revoked, nothing else changes.
        let ssh = SgRule::tcp(22, "0.0.0.0/0");
        let have: SgRules = (
            BTreeSet::from([serve.clone(), ssh.clone()]),
            BTreeSet::from([https.clone()]),
        );
        assert_eq!(rule_diff(&have.0, &want.0), (vec![ssh], vec![]));
        assert_eq!(rule_diff(&have.1, &want.1), (vec![], vec![]));
    }

    #[test]
    fn rules_read_from_ec2_permissions() {
        let perm = ec2t::IpPermission::builder()
            .ip_protocol("-1")
            .from_port(-1)
            .to_port(-1)
            .ip_ranges(ec2t::IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .ipv6_ranges(ec2t::Ipv6Range::builder().cidr_ipv6("::/0").build())
            .build();
        let rules = SgRule::from_permissions(&[perm]);
        assert!(rules.contains(&SgRule::allow_all()), "{rules:?}");
        assert_eq!(
            rules.len(),
            2,
            "IPv6 ranges are listed so a rerun removes them"
        );
        let json = SgRule::tcp(8080, "10.0.0.0/8").to_json(Some("serving port"));
        assert_eq!(json["FromPort"], 8080);
        assert_eq!(json["IpRanges"][0]["Description"], "serving port");
    }

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
