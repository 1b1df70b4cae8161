//! The arguments of the AWS stage's commands (deploy, rollout, destroy, policy, seal,
//! audit): only in a zoa built with the `aws` feature.

use clap::Args;
use std::path::PathBuf;

use super::parse_time;

/// Where and as whom to reach AWS (unset: the standard configuration chain).
#[derive(Debug, Args)]
pub struct AwsArgs {
    /// AWS region (default: AWS_REGION or the profile's region).
    #[arg(long)]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config (default: AWS_PROFILE).
    #[arg(long)]
    pub profile: Option<String>,
    /// Send every API call to this endpoint (an emulator; default: AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

/// How a deployment's serving port is reached (`--expose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Exposure {
    /// An internal Network Load Balancer behind a VPC endpoint service.
    Privatelink,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The signed release directory (uki.efi, build.json, release.json, .minisig).
    pub dir: PathBuf,
    /// The release signer's minisign public key.
    #[arg(long, value_name = "PUB")]
    pub pubkey: PathBuf,
    /// Print every API call with its parameters and policy documents; change nothing.
    #[arg(long)]
    pub plan: bool,
    /// Require a Secure Boot release (signed with `zoa sign --uefi-data`), and fail
    /// otherwise. The mode comes from the release, flag or not: a release with a
    /// uefi-data.bin that enrolls a PK registers its AMI with that UefiData (Secure Boot
    /// on) and its KMS key binds PCR7 and PCR12, so any UKI signed by the same db key
    /// (same PCR7) can roll forward without a policy change; any other release binds PCR4
    /// and PCR12.
    #[arg(long)]
    pub secure_boot: bool,
    /// Deployment name, used in resource names and tags (default: the release name).
    #[arg(long)]
    pub name: Option<String>,
    /// EC2 instance type; must support NitroTPM.
    #[arg(long, default_value = zoa::aws::deploy::DEFAULT_INSTANCE_TYPE)]
    pub instance_type: String,
    /// Open the serving port to this IPv4 CIDR (repeatable). Without it: no ingress at all.
    #[arg(long, value_name = "CIDR", value_parser = ipv4_cidr)]
    pub allow_cidr: Vec<String>,
    /// The serving port (default: the recipe's serving_port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Run N instances through a launch template and an Auto Scaling group.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Use a launch template and an Auto Scaling group even for one instance.
    #[arg(long)]
    pub fleet: bool,
    /// Subnet to launch in (repeatable; default: the default VPC's subnets).
    #[arg(long = "subnet", value_name = "SUBNET_ID")]
    pub subnets: Vec<String>,
    /// Keep the deployment off the internet: instances without public addresses, HTTPS
    /// egress only inside the VPC, and a KMS interface endpoint (private DNS) whose policy
    /// admits the instance role on this key only; the key denies its plaintext operations
    /// to any request not made through that endpoint (aws:SourceVpce), attested or not.
    /// A deploy made private stays private (reruns and rollouts keep the endpoint).
    #[arg(long)]
    pub private: bool,
    /// How clients in other VPCs or accounts reach the serving port: `privatelink` puts it
    /// behind an internal Network Load Balancer (TCP passed through to the attested TLS
    /// front) and a VPC endpoint service that only the --allow-principal ARNs may connect
    /// to. Needs --private.
    #[arg(long, value_enum, requires = "private")]
    pub expose: Option<Exposure>,
    /// A principal allowed to connect an endpoint to the endpoint service (repeatable):
    /// arn:aws:iam::ACCOUNT:root, or a role or user ARN.
    #[arg(long = "allow-principal", value_name = "ARN", requires = "expose")]
    pub allow_principals: Vec<String>,
    /// Key administrator ARN (repeatable; default: the account root). Administrators
    /// manage the key but can never use it.
    #[arg(long = "key-admin", value_name = "ARN")]
    pub key_admins: Vec<String>,
    /// Principal ARN allowed to seal secrets (kms:Encrypt) (default: the administrators).
    #[arg(long = "sealer", value_name = "ARN")]
    pub sealers: Vec<String>,
    /// Deny kms:PutKeyPolicy to everyone, forever: nobody (the account root included) can
    /// ever change the key policy again. Needs --i-understand-this-is-permanent.
    #[arg(long, requires = "i_understand_this_is_permanent")]
    pub lock_policy: bool,
    /// Confirms --lock-policy.
    #[arg(long)]
    pub i_understand_this_is_permanent: bool,
    /// A `zoa seal` envelope for the instances' user data, as secret NAME (repeatable).
    /// The key is made by the first deploy: deploy, `zoa seal --key DIR`, then deploy
    /// again with --secret. New secrets replace a single instance (user data is read at
    /// boot only), or roll into a fleet with a new launch template version and an
    /// instance refresh. Not with --user-data.
    #[arg(long = "secret", value_name = "NAME=FILE")]
    pub secrets: Vec<zoa::aws::userdata::SecretArg>,
    /// The model weights the image pins ([init.model]): uploaded as a second EBS
    /// snapshot, attached by the AMI as /dev/sdb (NVMe on Nitro; zoa-init finds it by the
    /// GGUF magic). Checked against the pinned size and SHA-256 first. When the image pins
    /// an age-encrypted model (model.age_identity), FILE is the age file: only its form
    /// and length can be checked here; zoa-init checks the digest after decrypting it.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// User data for the instances as it is, at most 16 KiB (not with --secret).
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Print the plan (with --plan) or the deploy record as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The new signed release directory.
    pub dir: PathBuf,
    /// The deployed release directory it replaces (holds the deploy record).
    #[arg(long, value_name = "OLD_DIR")]
    pub from: PathBuf,
    /// The release signer's minisign public key (both releases must verify).
    #[arg(long, value_name = "PUB")]
    pub pubkey: PathBuf,
    /// Print every call and policy document; change nothing.
    #[arg(long)]
    pub plan: bool,
    /// Keep the old AMI and snapshot.
    #[arg(long)]
    pub keep_old: bool,
    /// Share of the group kept in service during the instance refresh.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(i32).range(0..=100))]
    pub min_healthy_percentage: i32,
    /// Minutes to wait for the instance refresh.
    #[arg(long, default_value_t = 60)]
    pub wait_minutes: u64,
    /// The plaintext of secret NAME, re-sealed under the new key when the old key is
    /// locked (--lock-policy); needed for every secret the deploy record lists (repeatable).
    #[arg(long = "reseal", value_name = "NAME=FILE")]
    pub reseal: Vec<zoa::aws::userdata::SecretArg>,
    /// Days before KMS deletes a replaced locked key (7-30).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(i32).range(7..=30))]
    pub key_deletion_days: i32,
    /// The model weights NEW pins, when they are not the ones OLD pins.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Print the plan or the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// The release directory a deploy was made from (its DIR/deploy/deploy.json).
    pub dir: PathBuf,
    /// Days before KMS deletes the key (7-30).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(i32).range(7..=30))]
    pub key_deletion_days: i32,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Print every call that would remove the deployment, and change nothing (reads
    /// only: what exists is looked up).
    #[arg(long)]
    pub plan: bool,
    /// Print the plan (with --plan) or what was removed as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SealArgs {
    /// The KMS key: a release directory that was deployed (its deploy record names the
    /// key), or a key alias (alias/zoa/NAME), key ARN or key id.
    #[arg(long, value_name = "ALIAS|DIR")]
    pub key: String,
    /// The secret's name, bound into the envelope (e.g. model-key).
    #[arg(long, default_value = "secret")]
    pub name: String,
    /// The deployment name, when --key is not a directory or a zoa alias.
    #[arg(long)]
    pub deployment: Option<String>,
    /// Read the secret from this file (default: stdin).
    #[arg(long = "in", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Write the envelope here (atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The signed release directory.
    pub dir: PathBuf,
    /// The release signer's minisign public key.
    #[arg(long, value_name = "PUB")]
    pub pubkey: PathBuf,
    /// The AWS account id (default: from the credentials, sts:GetCallerIdentity).
    #[arg(long)]
    pub account_id: Option<String>,
    /// The AWS partition.
    #[arg(long, default_value = "aws")]
    pub partition: String,
    /// Deployment name (default: the release name).
    #[arg(long)]
    pub name: Option<String>,
    /// Key administrator ARN (repeatable; default: the account root).
    #[arg(long = "key-admin", value_name = "ARN")]
    pub key_admins: Vec<String>,
    /// Principal ARN allowed to seal secrets (default: the administrators).
    #[arg(long = "sealer", value_name = "ARN")]
    pub sealers: Vec<String>,
    /// Render the locked policy (see `zoa deploy --lock-policy`).
    #[arg(long)]
    pub lock_policy: bool,
    /// The KMS interface endpoint (vpce-…) of a private deployment made elsewhere (IaC):
    /// the key policy denies its plaintext operations to requests not made through it,
    /// and the endpoint's own policy is printed too (default: the deploy record's, for a
    /// `zoa deploy --private`).
    #[arg(long, value_name = "VPCE_ID")]
    pub vpc_endpoint: Option<String>,
    /// Print only a service control policy (AWS Organizations) that denies requests to
    /// any region but the release's signed ones (`zoa sign --regions`), for the account or
    /// OU the release is deployed in. Needs no AWS credentials.
    #[arg(long, conflicts_with_all = ["account_id", "name", "key_admins", "sealers", "lock_policy", "vpc_endpoint", "deployer"])]
    pub scp: bool,
    /// Print only the IAM policy a CI role (or user) needs to deploy, roll out and destroy
    /// this release as deployment --name: every call those commands make, scoped to the
    /// deployment's names and tags and to the release's signed regions. Attach it to the
    /// role the CI job assumes. The account comes from the credentials unless --account-id
    /// is given.
    #[arg(long, conflicts_with_all = ["key_admins", "sealers", "lock_policy"])]
    pub deployer: bool,
    /// With --deployer: the deployment is private (`zoa deploy --private`), so the KMS
    /// endpoint's calls are granted too.
    #[arg(long, requires = "deployer")]
    pub private: bool,
    /// With --deployer: the deployment is exposed this way (`--expose privatelink`: the
    /// load balancer's and the endpoint service's calls too; implies --private).
    #[arg(long, value_enum, requires = "deployer")]
    pub expose: Option<Exposure>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["paths", "lookup"])))]
pub struct AuditArgs {
    /// CloudTrail log files (.json or .json.gz) or directories of them.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Read CloudTrail's LookupEvents instead of files (standard credential chain,
    /// AWS_ENDPOINT_URL), and compare each deployment's live key policy with deploy.json.
    #[arg(long, conflicts_with = "paths")]
    pub lookup: bool,
    /// Also look up events in this region (repeatable; the deployments' regions always).
    #[arg(long = "lookup-region", value_name = "REGION", requires = "lookup")]
    pub lookup_regions: Vec<String>,
    /// A deployed release directory (its deploy/deploy.json names the resources;
    /// repeatable).
    #[arg(long = "deploy", value_name = "DIR")]
    pub deploys: Vec<PathBuf>,
    /// The signed release log: attested key uses are matched to its releases.
    #[arg(long, value_name = "LOG")]
    pub log: PathBuf,
    /// The public key(s) the log and the deployed releases are signed with (repeatable).
    #[arg(long, value_name = "PUB", required = true)]
    pub pubkey: Vec<PathBuf>,
    /// Only events at or after this time (RFC 3339, a date, or Unix seconds).
    #[arg(long, value_name = "T", value_parser = parse_instant)]
    pub since: Option<jiff::Timestamp>,
    /// Only events before this time (RFC 3339, a date, or Unix seconds).
    #[arg(long, value_name = "T", value_parser = parse_instant)]
    pub until: Option<jiff::Timestamp>,
    /// Print the report as JSON (the interface contract's shape).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// RFC 3339, a date (midnight UTC), or Unix seconds.
fn parse_instant(s: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(date) = s.parse::<jiff::civil::Date>() {
        return date
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|e| e.to_string());
    }
    parse_time(s).and_then(|t| jiff::Timestamp::try_from(t).map_err(|e| e.to_string()))
}

/// `--allow-cidr`: an IPv4 CIDR, checked as the library checks it.
fn ipv4_cidr(s: &str) -> Result<String, String> {
    zoa::aws::deploy::check_ipv4_cidr(s).map(|()| s.to_owned())
}
