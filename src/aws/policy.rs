//! The KMS key policy and the instance role's IAM policies, rendered from `templates/`.
//!
//! The key policy carries the whole security argument of a deployment: KMS releases
//! plaintext only to the instance role, only with a NitroTPM attestation whose PCRs are
//! those of a signed release, and nobody else (key administrators included) may use the
//! key. `templates/README.md` states the argument; [`check_key_policy`] checks it on any
//! policy document, so `zoa deploy` can refuse an existing key whose policy is unsafe or
//! not the one zoa would write.
//!
//! Rendering parses each template as JSON and substitutes placeholders inside string
//! values, never in the text, so no input value can add policy syntax. Substituted text is
//! never scanned again, so a value that looks like a placeholder stays literal.
//!
//! # Example
//!
//! ```
//! use zoa::aws::policy::{key_policy, BootMode, KeyPolicyInput, PcrBinding};
//!
//! let input = KeyPolicyInput {
//!     partition: "aws".into(),
//!     account_id: "111122223333".into(),
//!     admin_principals: vec!["arn:aws:iam::111122223333:root".into()],
//!     instance_role_arn: "arn:aws:iam::111122223333:role/zoa-instance".into(),
//!     sealer_principals: vec![],
//!     bindings: vec![PcrBinding {
//!         release: "demo 1.0.0".into(),
//!         mode: BootMode::Standard,
//!         boot_pcr: "ab".repeat(48),
//!         pcr12: "00".repeat(48),
//!     }],
//!     lock: false,
//!     vpc_endpoint: None,
//! };
//! let policy = key_policy(&input)?;
//! assert_eq!(policy["Statement"][1]["Sid"], "ZoaInstanceUse0");
//! # Ok::<(), zoa::aws::policy::PolicyError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

// What a release binds is the release's to say (zoa attest reads it without the AWS stage).
pub use crate::release::binding::{BootMode, PcrBinding};

/// The IAM policy language version every document uses.
pub const POLICY_VERSION: &str = "2012-10-17";

/// KMS rejects key policies longer than this many bytes.
pub const MAX_KEY_POLICY_BYTES: usize = 32 * 1024;

/// The operations that can hand plaintext key material to the caller. Decrypt and
/// GenerateDataKey are what zoa-init uses; GenerateDataKeyPair returns a private key and
/// DeriveSharedSecret a shared secret (neither applies to a symmetric key today, but a
/// Deny costs nothing and stays right if the key spec ever changes).
const PLAINTEXT_ACTIONS: [&str; 4] = [
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyPair",
    "kms:DeriveSharedSecret",
];

/// Operations denied to everyone whatever the attestation: each gives use of the key
/// without one. ReEncryptFrom decrypts inside KMS to a key the caller chooses, and KMS
/// accepts no attestation for it; a grant authorizes use outside the key policy;
/// ReplicateKey makes a multi-Region replica that has its own, different key policy.
/// ReEncryptTo is harmless but unused: denying the pair keeps the key out of
/// re-encryption altogether.
const ALWAYS_DENIED_ACTIONS: [&str; 4] = [
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:CreateGrant",
    "kms:ReplicateKey",
];

const PUT_KEY_POLICY: &str = "kms:PutKeyPolicy";

const KEY_POLICY_TEMPLATE: Template = Template {
    name: "templates/kms-key-policy.json",
    text: include_str!("../../templates/kms-key-policy.json"),
};

const INSTANCE_ROLE_POLICY_TEMPLATE: Template = Template {
    name: "templates/instance-role-policy.json",
    text: include_str!("../../templates/instance-role-policy.json"),
};

const REGION_SCP_TEMPLATE: Template = Template {
    name: "templates/region-scp.json",
    text: include_str!("../../templates/region-scp.json"),
};

/// Placeholders whose name starts with this are per release: a key policy statement that
/// uses one is rendered once for each admitted release.
const RELEASE_SCOPE: &str = "RELEASE_";

/// Everything the key policy depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicyInput {
    /// The AWS partition: "aws", "aws-cn", "aws-us-gov", ...
    pub partition: String,
    /// The account that owns the key and the instance role (12 digits).
    pub account_id: String,
    /// ARNs of the key administrators: they manage the key but can never use it.
    pub admin_principals: Vec<String>,
    /// The role of the instances; the only principal that may ever get plaintext.
    pub instance_role_arn: String,
    /// ARNs that may call kms:Encrypt (`zoa seal`) and kms:DescribeKey, nothing else.
    pub sealer_principals: Vec<String>,
    /// The admitted releases: at least one, two during a rollout (old and new), all of
    /// one [`BootMode`].
    pub bindings: Vec<PcrBinding>,
    /// `--lock-policy`: deny kms:PutKeyPolicy to everyone, forever.
    pub lock: bool,
    /// A private deploy's KMS interface endpoint (`vpce-…`): the plaintext operations are
    /// denied to every request that does not come through it (`aws:SourceVpce`), so a
    /// valid attestation document is of no use anywhere else.
    pub vpc_endpoint: Option<String>,
}

/// Why a policy could not be rendered, or why a key policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{field} {value:?}: {why}")]
    InvalidInput {
        field: String,
        value: String,
        why: String,
    },
    #[error("no release is admitted: give at least one signed release whose PCRs may use the key")]
    NoBindings,
    #[error("release {first:?} boots with {first_mode}, release {second:?} with {second_mode}: one key policy binds the PCRs of one boot mode")]
    MixedModes {
        first: String,
        first_mode: BootMode,
        second: String,
        second_mode: BootMode,
    },
    #[error(
        "releases {first:?} and {second:?} are both admitted with {what}: admit each release once"
    )]
    DuplicateBinding {
        first: String,
        second: String,
        what: &'static str,
    },
    #[error("{template}: {problem} (the template embedded in zoa is wrong: this is a bug in zoa)")]
    Template {
        template: &'static str,
        problem: String,
    },
    #[error("the rendered key policy is {bytes} bytes; KMS accepts at most {MAX_KEY_POLICY_BYTES}: admit fewer releases or administrators")]
    TooLarge { bytes: usize },
    #[error("the key policy is not a policy document zoa can check: {problem}")]
    Malformed { problem: String },
    #[error("unsafe key policy: {problem}; refusing this key (zoa never writes such a policy: it was changed by hand or by another tool)")]
    Unsafe { problem: String },
    #[error("the key policy differs from the one zoa renders for these releases and principals ({detail}); update it with zoa deploy, or, if the policy is locked, use a new key")]
    Differs { detail: String },
}

fn unsafe_policy(problem: String) -> PolicyError {
    PolicyError::Unsafe { problem }
}

fn malformed(problem: impl Into<String>) -> PolicyError {
    PolicyError::Malformed {
        problem: problem.into(),
    }
}

/// The KMS condition key carrying a NitroTPM PCR of the attestation document.
pub fn pcr_condition_key(pcr: u8) -> String {
    format!("kms:RecipientAttestation:NitroTPMPCR{pcr}")
}

/// Renders the key policy for `input`, checked by [`check_key_policy`]'s safety rules.
///
/// Statements, by Sid: `ZoaKeyAdministration` (manage, never use), `ZoaSealers`
/// (Encrypt and DescribeKey; left out when there are no sealers), `ZoaInstanceUse<i>`
/// (one per binding: Decrypt and GenerateDataKey for the instance role with exactly that
/// release's PCRs), `ZoaDenyUnattestedPcr<n>` (one per bound PCR),
/// `ZoaDenyIndirectUse`, and with `lock`, `ZoaLockPolicy`.
pub fn key_policy(input: &KeyPolicyInput) -> Result<Value, PolicyError> {
    let checked = validate(input)?;
    let doc = render_key_policy(&checked)?;
    // The template and the checker are written separately; each rendering is checked so
    // that a template edit can never weaken the policy unnoticed.
    check_safety(&doc, &checked)?;
    let bytes = doc.to_string().len();
    if bytes > MAX_KEY_POLICY_BYTES {
        return Err(PolicyError::TooLarge { bytes });
    }
    Ok(doc)
}

/// A VPC endpoint policy: typed statements serialised as IAM writes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointPolicy {
    pub version: &'static str,
    pub statement: Vec<EndpointStatement>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointStatement {
    pub sid: &'static str,
    pub effect: &'static str,
    pub principal: Value,
    pub action: Vec<&'static str>,
    pub resource: String,
}

/// The operations zoa-init's instances call through the endpoint (the instance role's
/// only permissions).
pub const ENDPOINT_ACTIONS: [&str; 2] = ["kms:Decrypt", "kms:GenerateDataKey"];

/// The private deploy's KMS endpoint admits the instance role's calls on the
/// deployment's key and nothing else: no other key, no other caller, no other operation.
pub fn kms_endpoint_policy(key_arn: &str, instance_role_arn: &str) -> Result<Value, PolicyError> {
    check_key_arn(key_arn)?;
    let doc = EndpointPolicy {
        version: POLICY_VERSION,
        statement: vec![EndpointStatement {
            sid: "ZoaOnlyThisKey",
            effect: "Allow",
            principal: json!({ "AWS": instance_role_arn }),
            action: ENDPOINT_ACTIONS.to_vec(),
            resource: key_arn.to_owned(),
        }],
    };
    serde_json::to_value(doc).map_err(|e| malformed(e.to_string()))
}

/// The endpoint's policy from its creation until the key exists (its ARN is the
/// policy's resource): nothing passes.
pub fn kms_endpoint_closed_policy() -> Value {
    json!({
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": "ZoaNothingYet",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "*",
            "Resource": "*"
        }]
    })
}

/// Whether CreateKey/PutKeyPolicy must pass `BypassPolicyLockoutSafetyCheck=true`.
///
/// A locked policy lets nobody call PutKeyPolicy again, which is exactly what KMS's
/// lockout safety check refuses unless told that this is intended.
pub fn needs_lockout_bypass(input: &KeyPolicyInput) -> bool {
    input.lock
}

/// The instance role's trust policy: EC2 may assume it (through the instance profile).
pub fn instance_role_trust_policy() -> Value {
    // Built in code rather than parsed from the template so this cannot fail; a test
    // keeps it equal to templates/instance-role-trust-policy.json.
    json!({
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ZoaEc2AssumeRole",
                "Effect": "Allow",
                "Principal": { "Service": "ec2.amazonaws.com" },
                "Action": "sts:AssumeRole"
            }
        ]
    })
}

/// The instance role's identity policy: Decrypt and GenerateDataKey on `key_arn` only,
/// and only with an attestation present.
///
/// The key policy alone already decides (it names the role); this is defense in depth,
/// so the role is worthless for any other key and without an attestation.
pub fn instance_role_policy(key_arn: &str) -> Result<Value, PolicyError> {
    instance_role_policy_for_keys(&[key_arn])
}

/// [`instance_role_policy`] for several keys: while a rollout to a new key replaces the
/// instances, the old release's instances use the old key and the new ones the new key.
pub fn instance_role_policy_for_keys(key_arns: &[&str]) -> Result<Value, PolicyError> {
    for arn in key_arns {
        check_key_arn(arn)?;
    }
    let arns = match key_arns {
        [one] => Var::Str((*one).to_owned()),
        many => Var::List(many.iter().map(|a| (*a).to_owned()).collect()),
    };
    let vars = Vars::from([("KEY_ARN".to_owned(), arns)]);
    render_document(&INSTANCE_ROLE_POLICY_TEMPLATE, &vars, None)
}

/// A service control policy (AWS Organizations) that pins an account or OU to `regions`,
/// a release's signed allow-list: every request to another region is denied
/// (`aws:RequestedRegion`), whoever makes it, so neither a deploy nor a copy of an image,
/// snapshot or key can leave them.
///
/// Exempt, as in AWS's own example of this policy, are the global services whose single
/// endpoint is in us-east-1 (CloudFront, IAM, Organizations, Route 53, Support) and STS
/// (its global endpoint): denying them would break the account, and they hold no data of
/// the deployment. KMS and EC2 are not exempt, unlike in some published variants: they
/// hold the keys, images and snapshots the allow-list is about.
pub fn region_scp(regions: &[String]) -> Result<Value, PolicyError> {
    if regions.is_empty() {
        return Err(PolicyError::InvalidInput {
            field: "regions".into(),
            value: String::new(),
            why: "no region is allowed: a region policy needs at least one".into(),
        });
    }
    for r in regions {
        if !crate::release::regions::is_region_name(r) {
            return Err(PolicyError::InvalidInput {
                field: "region".into(),
                value: r.clone(),
                why: "not an AWS region name".into(),
            });
        }
    }
    let vars = Vars::from([("REGIONS".to_owned(), Var::List(regions.to_vec()))]);
    render_document(&REGION_SCP_TEMPLATE, &vars, None)
}

/// Checks an existing key policy (as returned by GetKeyPolicy, parsed) against `input`.
///
/// First the safety rules, whatever the document's layout: every Allow of a plaintext
/// operation names only the instance role and carries exactly one admitted release's PCRs
/// in one `StringEqualsIgnoreCase` block; no Allow grants re-encryption, grants or
/// replication, nor PutKeyPolicy when locked, nor anything to every principal; for each
/// bound PCR a Deny to everyone of the plaintext operations unless that PCR is one of the
/// admitted values; unconditional Denies of the indirect-use operations (and of
/// PutKeyPolicy when locked). Then semantic equality with [`key_policy`]`(input)`:
/// statement order, list order, one-element lists written as strings, action case and
/// object key order do not matter, since AWS may return the policy re-serialized.
pub fn check_key_policy(doc: &Value, input: &KeyPolicyInput) -> Result<(), PolicyError> {
    let checked = validate(input)?;
    check_safety(doc, &checked)?;
    let expected = key_policy(input)?;
    let detail = policy_differences(doc, &expected);
    if detail.is_empty() {
        Ok(())
    } else {
        Err(PolicyError::Differs {
            detail: detail.join("; "),
        })
    }
}

/// Only the safety rules of [`check_key_policy`], for a policy that may legitimately be
/// laid out differently from zoa's rendering (one written by hand or by IaC).
pub fn check_key_policy_safety(doc: &Value, input: &KeyPolicyInput) -> Result<(), PolicyError> {
    check_safety(doc, &validate(input)?)
}

/// Whether two policy documents mean the same, ignoring the ways AWS may re-serialize a
/// policy (see [`check_key_policy`]).
pub fn same_policy(a: &Value, b: &Value) -> bool {
    normalize_policy(a) == normalize_policy(b)
}

// ---------------------------------------------------------------------------------------
// Input validation

/// A validated input: PCR values lower-cased, by PCR number.
struct Checked {
    mode: BootMode,
    admins: Vec<String>,
    sealers: Vec<String>,
    instance_role: String,
    releases: Vec<Release>,
    lock: bool,
    vpc_endpoint: Option<String>,
}

struct Release {
    name: String,
    pcrs: BTreeMap<u8, String>,
}

impl Checked {
    /// The admitted values of one PCR, in release order, without repeats (releases
    /// usually share PCR12, all-zero).
    fn admitted(&self, pcr: u8) -> Vec<String> {
        let mut values: Vec<String> = Vec::new();
        for release in &self.releases {
            if let Some(value) = release.pcrs.get(&pcr) {
                if !values.contains(value) {
                    values.push(value.clone());
                }
            }
        }
        values
    }
}

fn invalid(field: impl Into<String>, value: &str, why: impl Into<String>) -> PolicyError {
    PolicyError::InvalidInput {
        field: field.into(),
        value: value.to_owned(),
        why: why.into(),
    }
}

fn validate(input: &KeyPolicyInput) -> Result<Checked, PolicyError> {
    let partition = &input.partition;
    if partition.is_empty()
        || !partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(
            "partition",
            partition,
            "not an AWS partition name such as aws, aws-cn or aws-us-gov",
        ));
    }
    if !is_account_id(&input.account_id) {
        return Err(invalid(
            "account id",
            &input.account_id,
            "an AWS account id is exactly 12 digits",
        ));
    }

    let role = &input.instance_role_arn;
    check_arn_text("instance role ARN", role, partition)?;
    let role_prefix = format!("arn:{partition}:iam::{}:role/", input.account_id);
    if !role.starts_with(&role_prefix) || role.len() == role_prefix.len() {
        return Err(invalid(
            "instance role ARN",
            role,
            format!("must be an IAM role of the key's account, {role_prefix}NAME"),
        ));
    }

    if input.admin_principals.is_empty() {
        return Err(invalid(
            "key administrators",
            "",
            "give at least one ARN (usually the account root, arn:PARTITION:iam::ACCOUNT:root): a key nobody administers cannot even be deleted",
        ));
    }
    check_principals(
        "key administrator",
        &input.admin_principals,
        partition,
        role,
    )?;
    check_principals("sealer", &input.sealer_principals, partition, role)?;

    let Some(first) = input.bindings.first() else {
        return Err(PolicyError::NoBindings);
    };
    let mode = first.mode;
    if let Some(other) = input.bindings.iter().find(|b| b.mode != mode) {
        return Err(PolicyError::MixedModes {
            first: first.release.clone(),
            first_mode: mode,
            second: other.release.clone(),
            second_mode: other.mode,
        });
    }
    let mut releases: Vec<Release> = Vec::new();
    for (i, binding) in input.bindings.iter().enumerate() {
        let name = binding.release.trim();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(invalid(
                format!("release name of binding {i}"),
                &binding.release,
                "give the release as \"name version\", printable and not empty",
            ));
        }
        let mut pcrs = BTreeMap::new();
        for (pcr, value) in binding.pcrs() {
            pcrs.insert(pcr, pcr_value(name, pcr, value)?);
        }
        for earlier in &releases {
            if earlier.name == name {
                return Err(PolicyError::DuplicateBinding {
                    first: earlier.name.clone(),
                    second: name.to_owned(),
                    what: "the same name",
                });
            }
            if earlier.pcrs == pcrs {
                return Err(PolicyError::DuplicateBinding {
                    first: earlier.name.clone(),
                    second: name.to_owned(),
                    what: "the same PCR values",
                });
            }
        }
        releases.push(Release {
            name: name.to_owned(),
            pcrs,
        });
    }

    Ok(Checked {
        mode,
        admins: input.admin_principals.clone(),
        sealers: input.sealer_principals.clone(),
        instance_role: role.clone(),
        releases,
        lock: input.lock,
        vpc_endpoint: input
            .vpc_endpoint
            .as_deref()
            .map(check_vpc_endpoint_id)
            .transpose()?,
    })
}

/// The id a plan shows for a VPC endpoint not made yet.
pub const PENDING_VPC_ENDPOINT_ID: &str = "<vpc-endpoint-id>";

/// `vpce-` and 8 or 17 lowercase hex digits (or the plan's placeholder).
fn check_vpc_endpoint_id(id: &str) -> Result<String, PolicyError> {
    let hex = id.strip_prefix("vpce-").unwrap_or("");
    let ok = id == PENDING_VPC_ENDPOINT_ID
        || (matches!(hex.len(), 8 | 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if !ok {
        return Err(invalid(
            "VPC endpoint id",
            id,
            "an interface endpoint id is vpce- and 8 or 17 hex digits",
        ));
    }
    Ok(id.to_owned())
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A SHA-384 PCR value, lower-cased.
fn pcr_value(release: &str, pcr: u8, value: &str) -> Result<String, PolicyError> {
    if value.len() != 96 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            format!("PCR{pcr} of release {release:?}"),
            value,
            format!(
                "must be 96 hex digits (a SHA-384 PCR value from the signed manifest); found {} characters{}",
                value.chars().count(),
                if value.bytes().all(|b| b.is_ascii_hexdigit()) { "" } else { ", not all hex" }
            ),
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// Text any ARN zoa writes into a policy must be: no wildcards (they would widen the
/// policy) and no `$` (IAM would read `${...}` as a policy variable).
fn check_arn_text(field: &str, arn: &str, partition: &str) -> Result<(), PolicyError> {
    let prefix = format!("arn:{partition}:");
    if !arn.starts_with(&prefix) {
        return Err(invalid(
            field,
            arn,
            format!("an ARN in partition {partition} starts with {prefix}"),
        ));
    }
    if let Some(c) = arn
        .chars()
        .find(|&c| matches!(c, '*' | '?' | '$') || !c.is_ascii_graphic())
    {
        return Err(invalid(
            field,
            arn,
            format!("{c:?} is not allowed: give an exact ARN, without wildcards, policy variables or spaces"),
        ));
    }
    Ok(())
}

/// Key policy principals: IAM users, roles, account roots, or STS assumed-role sessions.
fn check_principals(
    what: &str,
    arns: &[String],
    partition: &str,
    instance_role: &str,
) -> Result<(), PolicyError> {
    for (i, arn) in arns.iter().enumerate() {
        let field = format!("{what} ARN");
        check_arn_text(&field, arn, partition)?;
        let rest = &arn[partition.len() + 5..];
        let (service, rest) = rest.split_once("::").unwrap_or(("", ""));
        let (account, resource) = rest.split_once(':').unwrap_or(("", ""));
        let resource_ok = match service {
            "iam" => {
                resource == "root"
                    || resource
                        .strip_prefix("role/")
                        .is_some_and(|r| !r.is_empty())
                    || resource
                        .strip_prefix("user/")
                        .is_some_and(|r| !r.is_empty())
            }
            "sts" => resource
                .strip_prefix("assumed-role/")
                .is_some_and(|r| !r.is_empty()),
            _ => false,
        };
        if !is_account_id(account) || !resource_ok {
            return Err(invalid(
                field,
                arn,
                format!("not an IAM principal: give arn:{partition}:iam::ACCOUNT:root, ...:role/NAME or ...:user/NAME"),
            ));
        }
        if arn == instance_role {
            return Err(invalid(
                field,
                arn,
                format!("the instance role cannot also be a {what}: instances must be able to do nothing but attested decryption"),
            ));
        }
        if arns[..i].contains(arn) {
            return Err(invalid(field, arn, "listed twice"));
        }
    }
    Ok(())
}

/// `arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID`: a key, not an alias, no wildcards.
/// The key id a plan shows for a key not made yet.
pub const PENDING_KEY_ID: &str = "<key-id>";

fn check_key_arn(arn: &str) -> Result<(), PolicyError> {
    let field = "key ARN";
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, partition, service, region, account, resource] = parts[..] else {
        return Err(invalid(
            field,
            arn,
            "not an ARN (arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID)",
        ));
    };
    check_arn_text(field, arn, partition)?;
    let key_id = resource.strip_prefix("key/").unwrap_or("");
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    // A plan names a key CreateKey has not made yet as `<key-id>`; the calls that send a
    // document refuse one that still holds a placeholder (`aws::calls`).
    let key_ok = key_id == PENDING_KEY_ID
        || !key_id.is_empty()
            && key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if scheme != "arn"
        || partition.is_empty()
        || service != "kms"
        || !region_ok
        || !is_account_id(account)
        || !key_ok
    {
        return Err(invalid(
            field,
            arn,
            "give the key's own ARN, arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID (not an alias)",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rendering

struct Template {
    name: &'static str,
    text: &'static str,
}

#[derive(Debug, Clone)]
enum Var {
    Str(String),
    List(Vec<String>),
}

type Vars = BTreeMap<String, Var>;

fn render_key_policy(checked: &Checked) -> Result<Value, PolicyError> {
    let put = vec![PUT_KEY_POLICY.to_owned()];
    let (unless_locked, if_locked) = if checked.lock {
        (vec![], put)
    } else {
        (put, vec![])
    };
    let mut vars = Vars::from([
        (
            "ADMIN_PRINCIPALS".to_owned(),
            Var::List(checked.admins.clone()),
        ),
        (
            "SEALER_PRINCIPALS".to_owned(),
            Var::List(checked.sealers.clone()),
        ),
        (
            "INSTANCE_ROLE_ARN".to_owned(),
            Var::Str(checked.instance_role.clone()),
        ),
        (
            "PUT_KEY_POLICY_UNLESS_LOCKED".to_owned(),
            Var::List(unless_locked),
        ),
        ("PUT_KEY_POLICY_IF_LOCKED".to_owned(), Var::List(if_locked)),
        (
            "PLAINTEXT_ACTIONS_IF_PRIVATE".to_owned(),
            Var::List(match &checked.vpc_endpoint {
                Some(_) => PLAINTEXT_ACTIONS.iter().map(|a| a.to_string()).collect(),
                None => Vec::new(),
            }),
        ),
        (
            "VPC_ENDPOINT".to_owned(),
            Var::Str(checked.vpc_endpoint.clone().unwrap_or_default()),
        ),
    ]);
    // The boot PCR's number is a placeholder too (in the condition keys and the Deny's
    // Sid), so both modes render from one template and cannot drift apart.
    let boot = checked.mode.boot_pcr();
    vars.insert("BOOT_PCR".to_owned(), Var::Str(boot.to_string()));
    vars.insert(
        "BOOT_PCR_VALUES".to_owned(),
        Var::List(checked.admitted(boot)),
    );
    vars.insert("PCR12_VALUES".to_owned(), Var::List(checked.admitted(12)));
    let per_release: Vec<Vars> = checked
        .releases
        .iter()
        .enumerate()
        .map(|(i, release)| {
            let value = |pcr: u8| Var::Str(release.pcrs.get(&pcr).cloned().unwrap_or_default());
            Vars::from([
                (format!("{RELEASE_SCOPE}INDEX"), Var::Str(i.to_string())),
                (format!("{RELEASE_SCOPE}BOOT_PCR"), value(boot)),
                (format!("{RELEASE_SCOPE}PCR12"), value(12)),
            ])
        })
        .collect();
    render_document(&KEY_POLICY_TEMPLATE, &vars, Some(&per_release))
}

/// Renders a policy template. With `per_release`, a statement that uses a per-release
/// placeholder is rendered once per release; without, such a placeholder is unknown.
/// Every variable must be used: a value the template forgot (a newly bound PCR, say)
/// would otherwise be silently left unenforced.
fn render_document(
    template: &Template,
    vars: &Vars,
    per_release: Option<&[Vars]>,
) -> Result<Value, PolicyError> {
    let parsed: Value = serde_json::from_str(template.text).map_err(|e| PolicyError::Template {
        template: template.name,
        problem: format!("not valid JSON: {e}"),
    })?;
    let Value::Object(top) = parsed else {
        return Err(template_error(template, "not a JSON object"));
    };
    let mut renderer = Renderer {
        template,
        used: BTreeSet::new(),
    };
    let mut out = Map::new();
    for (key, value) in top {
        if key != "Statement" {
            out.insert(key, renderer.value(&value, vars)?);
            continue;
        }
        let Value::Array(statements) = value else {
            return Err(template_error(template, "Statement is not a list"));
        };
        let mut rendered = Vec::new();
        for statement in &statements {
            let mut names = BTreeSet::new();
            collect_placeholders(template, statement, &mut names)?;
            let scoped = names.iter().any(|n| n.starts_with(RELEASE_SCOPE));
            match per_release {
                Some(releases) if scoped => {
                    for release_vars in releases {
                        let mut all = vars.clone();
                        all.extend(release_vars.clone());
                        rendered.push(renderer.value(statement, &all)?);
                    }
                }
                _ => rendered.push(renderer.value(statement, vars)?),
            }
        }
        // A statement naming no principal or no action applies to nothing, and AWS
        // rejects the empty list: this is how optional statements (sealers, lock) go.
        rendered.retain(|s| !is_empty_statement(s));
        out.insert(key, Value::Array(rendered));
    }
    let defined = vars
        .keys()
        .chain(per_release.unwrap_or(&[]).iter().flat_map(|v| v.keys()));
    for name in defined {
        if !renderer.used.contains(name) {
            return Err(template_error(
                template,
                format!("never uses ${{{name}}}, so that value would not be enforced"),
            ));
        }
    }
    Ok(Value::Object(out))
}

fn template_error(template: &Template, problem: impl Into<String>) -> PolicyError {
    PolicyError::Template {
        template: template.name,
        problem: problem.into(),
    }
}

fn is_empty_statement(statement: &Value) -> bool {
    let empty_list = |v: &Value| v.as_array().is_some_and(Vec::is_empty);
    let no_action = statement.get("Action").is_some_and(empty_list);
    let no_principal = statement
        .get("Principal")
        .and_then(Value::as_object)
        .is_some_and(|p| p.values().all(empty_list));
    no_action || no_principal
}

struct Renderer<'t> {
    template: &'t Template,
    used: BTreeSet<String>,
}

impl Renderer<'_> {
    fn value(&mut self, value: &Value, vars: &Vars) -> Result<Value, PolicyError> {
        Ok(match value {
            Value::String(s) => match self.whole_placeholder(s, vars)? {
                Some(Var::Str(v)) => Value::String(v),
                Some(Var::List(items)) => {
                    Value::Array(items.into_iter().map(Value::String).collect())
                }
                None => Value::String(self.substitute(s, vars)?),
            },
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    // A list placeholder standing as a list element is spliced in: that
                    // is how an optional action (PutKeyPolicy) joins a list.
                    if let Some(Var::List(spliced)) = item
                        .as_str()
                        .map(|s| self.whole_placeholder(s, vars))
                        .transpose()?
                        .flatten()
                    {
                        out.extend(spliced.into_iter().map(Value::String));
                    } else {
                        out.push(self.value(item, vars)?);
                    }
                }
                Value::Array(out)
            }
            Value::Object(members) => {
                let mut out = Map::new();
                for (key, member) in members {
                    let key = self.substitute(key, vars)?;
                    let member = self.value(member, vars)?;
                    if out.insert(key.clone(), member).is_some() {
                        return Err(template_error(
                            self.template,
                            format!("renders the member {key:?} twice"),
                        ));
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// The value of `s` when it is exactly one placeholder.
    fn whole_placeholder(&mut self, s: &str, vars: &Vars) -> Result<Option<Var>, PolicyError> {
        let pieces = split_placeholders(self.template, s)?;
        let [Piece::Placeholder(name)] = pieces[..] else {
            return Ok(None);
        };
        self.lookup(name, vars).map(|v| Some(v.clone()))
    }

    /// `s` with each placeholder replaced by its (string) value.
    fn substitute(&mut self, s: &str, vars: &Vars) -> Result<String, PolicyError> {
        let mut out = String::with_capacity(s.len());
        for piece in split_placeholders(self.template, s)? {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Placeholder(name) => match self.lookup(name, vars)? {
                    Var::Str(value) => out.push_str(value),
                    Var::List(_) => {
                        return Err(template_error(
                            self.template,
                            format!("the list placeholder ${{{name}}} must be a whole JSON string, not part of {s:?}"),
                        ))
                    }
                },
            }
        }
        Ok(out)
    }

    fn lookup<'v>(&mut self, name: &str, vars: &'v Vars) -> Result<&'v Var, PolicyError> {
        let var = vars.get(name).ok_or_else(|| {
            template_error(self.template, format!("unknown placeholder ${{{name}}}"))
        })?;
        self.used.insert(name.to_owned());
        Ok(var)
    }
}

enum Piece<'s> {
    Text(&'s str),
    Placeholder(&'s str),
}

/// Splits template text into literal text and `${NAME}` placeholders (NAME: A-Z, 0-9, _).
/// Anything else after `${` is an error, which also keeps IAM policy variables such as
/// `${aws:username}` out of zoa's templates.
fn split_placeholders<'s>(template: &Template, s: &'s str) -> Result<Vec<Piece<'s>>, PolicyError> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            template_error(template, format!("unterminated placeholder in {s:?}"))
        })?;
        let name = &after[..end];
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(template_error(
                template,
                format!("malformed placeholder ${{{name}}} in {s:?}: names are A-Z, 0-9 and _"),
            ));
        }
        pieces.push(Piece::Placeholder(name));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

fn collect_placeholders(
    template: &Template,
    value: &Value,
    names: &mut BTreeSet<String>,
) -> Result<(), PolicyError> {
    let mut add = |s: &str| -> Result<(), PolicyError> {
        for piece in split_placeholders(template, s)? {
            if let Piece::Placeholder(name) = piece {
                names.insert(name.to_owned());
            }
        }
        Ok(())
    };
    match value {
        Value::String(s) => add(s),
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| collect_placeholders(template, item, names)),
        Value::Object(members) => {
            for (key, member) in members {
                for piece in split_placeholders(template, key)? {
                    if let Piece::Placeholder(name) = piece {
                        names.insert(name.to_owned());
                    }
                }
                collect_placeholders(template, member, names)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Checking

/// One statement, read leniently (a string or a list where IAM allows both).
struct Statement<'a> {
    label: String,
    allow: bool,
    principals: Principals,
    actions: Vec<String>,
    resources: Vec<String>,
    condition: Option<&'a Map<String, Value>>,
    /// NotPrincipal, NotAction or NotResource: zoa never writes them, and in an Allow they
    /// grant by omission.
    negated: Option<&'static str>,
}

#[derive(Default)]
struct Principals {
    everyone: bool,
    aws: Vec<String>,
    other: Vec<String>,
}

fn strings(value: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed(format!("{what} holds a non-string {item}")))
            })
            .collect(),
        other => Err(malformed(format!(
            "{what} is {other}, not a string or a list"
        ))),
    }
}

fn parse_statements(doc: &Value) -> Result<Vec<Statement<'_>>, PolicyError> {
    if doc.get("Version").and_then(Value::as_str) != Some(POLICY_VERSION) {
        return Err(malformed(format!("Version is not {POLICY_VERSION:?}")));
    }
    let list: Vec<&Value> = match doc.get("Statement") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => return Err(malformed("no Statement list")),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, value)| {
            let obj = value
                .as_object()
                .ok_or_else(|| malformed(format!("statement {i} is not an object")))?;
            let label = match obj.get("Sid").and_then(Value::as_str) {
                Some(sid) => format!("statement {sid}"),
                None => format!("statement {i} (no Sid)"),
            };
            let allow = match obj.get("Effect").and_then(Value::as_str) {
                Some("Allow") => true,
                Some("Deny") => false,
                _ => {
                    return Err(malformed(format!(
                        "{label}: Effect is neither Allow nor Deny"
                    )))
                }
            };
            let negated = ["NotPrincipal", "NotAction", "NotResource"]
                .into_iter()
                .find(|k| obj.contains_key(*k));
            let mut principals = Principals::default();
            match obj.get("Principal") {
                Some(Value::String(s)) if s == "*" => principals.everyone = true,
                Some(Value::Object(map)) => {
                    for (kind, value) in map {
                        for p in strings(value, &format!("{label}: Principal.{kind}"))? {
                            if p == "*" {
                                principals.everyone = true;
                            } else if kind == "AWS" {
                                principals.aws.push(p);
                            } else {
                                principals.other.push(format!("{kind}:{p}"));
                            }
                        }
                    }
                }
                None if negated.is_some() => {}
                _ => return Err(malformed(format!("{label}: no readable Principal"))),
            }
            let actions = match obj.get("Action") {
                Some(v) => strings(v, &format!("{label}: Action"))?,
                None => Vec::new(),
            };
            let resources = match obj.get("Resource") {
                Some(v) => strings(v, &format!("{label}: Resource"))?,
                None => Vec::new(),
            };
            let condition = match obj.get("Condition") {
                None => None,
                Some(Value::Object(map)) if map.is_empty() => None,
                Some(Value::Object(map)) => Some(map),
                Some(_) => return Err(malformed(format!("{label}: Condition is not an object"))),
            };
            Ok(Statement {
                label,
                allow,
                principals,
                actions,
                resources,
                condition,
                negated,
            })
        })
        .collect()
}

/// IAM action matching: case-insensitive, `*` any run of characters, `?` one character.
fn action_matches(pattern: &str, action: &str) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
            Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
            Some((c, rest)) => s
                .split_first()
                .is_some_and(|(d, s)| c.eq_ignore_ascii_case(d) && glob(rest, s)),
        }
    }
    glob(pattern.as_bytes(), action.as_bytes())
}

impl Statement<'_> {
    fn grants(&self, action: &str) -> bool {
        self.actions.iter().any(|p| action_matches(p, action))
    }

    fn on_every_resource(&self) -> bool {
        self.resources.iter().any(|r| r == "*")
    }

    /// A plain Deny to everyone on this key, the shape all of zoa's denies have.
    fn is_blanket_deny(&self) -> bool {
        !self.allow
            && self.negated.is_none()
            && self.principals.everyone
            && self.on_every_resource()
    }

    /// The values of `key` under `operator`, if that is the statement's only condition.
    fn sole_condition(&self, operator: &str) -> Option<(String, Vec<String>)> {
        let condition = self.condition?;
        let (op, block) = condition.iter().next()?;
        let block = block.as_object()?;
        if condition.len() != 1 || op != operator || block.len() != 1 {
            return None;
        }
        let (key, values) = block.iter().next()?;
        Some((key.to_ascii_lowercase(), strings(values, "").ok()?))
    }
}

fn check_safety(doc: &Value, checked: &Checked) -> Result<(), PolicyError> {
    let statements = parse_statements(doc)?;

    for s in statements.iter().filter(|s| s.allow) {
        if let Some(element) = s.negated {
            return Err(unsafe_policy(format!(
                "{}: an Allow with {element} grants whatever it does not name",
                s.label
            )));
        }
        if s.principals.everyone {
            return Err(unsafe_policy(format!(
                "{}: allows every AWS principal",
                s.label
            )));
        }
        if let Some(action) = ALWAYS_DENIED_ACTIONS.iter().find(|a| s.grants(a)) {
            return Err(unsafe_policy(format!(
                "{}: allows {action}, which gives use of the key without an attestation",
                s.label
            )));
        }
        if checked.lock && s.grants(PUT_KEY_POLICY) {
            return Err(unsafe_policy(format!(
                "{}: allows {PUT_KEY_POLICY} although the policy is locked",
                s.label
            )));
        }
        if let Some(action) = PLAINTEXT_ACTIONS.iter().find(|a| s.grants(a)) {
            check_attested_allow(s, action, checked)?;
        }
    }

    for pcr in checked.mode.bound_pcrs() {
        check_pcr_deny(&statements, pcr, &checked.admitted(pcr))?;
    }
    if let Some(endpoint) = &checked.vpc_endpoint {
        check_endpoint_deny(&statements, endpoint)?;
    }

    let mut always: Vec<&str> = ALWAYS_DENIED_ACTIONS.to_vec();
    if checked.lock {
        always.push(PUT_KEY_POLICY);
    }
    for action in always {
        let denied = statements
            .iter()
            .any(|s| s.is_blanket_deny() && s.condition.is_none() && s.grants(action));
        if !denied {
            return Err(unsafe_policy(format!(
                "no statement denies {action} to every principal unconditionally"
            )));
        }
    }
    Ok(())
}

/// An Allow of a plaintext operation: the instance role only, with exactly one admitted
/// release's PCRs, each a single value, in one StringEqualsIgnoreCase block (keys in one
/// block are ANDed, so the pair is exact; a list would admit mixed pairs).
fn check_attested_allow(s: &Statement, action: &str, checked: &Checked) -> Result<(), PolicyError> {
    if s.principals.aws != [checked.instance_role.as_str()] || !s.principals.other.is_empty() {
        return Err(unsafe_policy(format!(
            "{}: allows {action} to {:?}; only the instance role {} may ever use the key",
            s.label,
            s.principals
                .aws
                .iter()
                .chain(&s.principals.other)
                .collect::<Vec<_>>(),
            checked.instance_role
        )));
    }
    let block = s
        .condition
        .and_then(|c| c.get("StringEqualsIgnoreCase"))
        .and_then(Value::as_object);
    let mut pcrs = BTreeMap::new();
    for pcr in checked.mode.bound_pcrs() {
        let key = pcr_condition_key(pcr);
        let value = block.and_then(|b| {
            b.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&key))
                .map(|(_, v)| v)
        });
        let single = match value.map(|v| strings(v, "")) {
            Some(Ok(values)) if values.len() == 1 => values[0].to_ascii_lowercase(),
            _ => {
                return Err(unsafe_policy(format!(
                    "{}: allows {action} without requiring exactly one value of {key} under StringEqualsIgnoreCase",
                    s.label
                )))
            }
        };
        pcrs.insert(pcr, single);
    }
    if !checked.releases.iter().any(|r| r.pcrs == pcrs) {
        let shown: Vec<String> = pcrs.iter().map(|(n, v)| format!("PCR{n}={v}")).collect();
        return Err(unsafe_policy(format!(
            "{}: allows {action} for PCRs {} that no admitted release has",
            s.label,
            shown.join(", ")
        )));
    }
    Ok(())
}

/// For one PCR: a blanket Deny of every plaintext operation unless the attested value is
/// one of the admitted ones (a subset of them is still safe). Negated condition operators
/// match when the key is missing, so this also denies every request without an
/// attestation. Each PCR has its own statement: several keys in one block are ANDed, so
/// one shared Deny would fire only when every PCR differs.
fn check_pcr_deny(
    statements: &[Statement],
    pcr: u8,
    admitted: &[String],
) -> Result<(), PolicyError> {
    let key = pcr_condition_key(pcr);
    let want: BTreeSet<String> = admitted.iter().cloned().collect();
    let mut near_miss = None;
    for s in statements.iter().filter(|s| s.is_blanket_deny()) {
        let Some((k, values)) = s.sole_condition("StringNotEqualsIgnoreCase") else {
            continue;
        };
        if k != key.to_ascii_lowercase() {
            continue;
        }
        let have: BTreeSet<String> = values.iter().map(|v| v.to_ascii_lowercase()).collect();
        let extra: Vec<&String> = have.difference(&want).collect();
        if let Some(missing) = PLAINTEXT_ACTIONS.iter().find(|a| !s.grants(a)) {
            near_miss = Some(format!("{}: does not deny {missing}", s.label));
        } else if !extra.is_empty() {
            near_miss = Some(format!(
                "{}: lets through PCR{pcr} values {extra:?} that no admitted release has",
                s.label
            ));
        } else {
            // Blocking an admitted value is safe; the comparison with the rendering
            // reports it.
            return Ok(());
        }
    }
    Err(unsafe_policy(near_miss.unwrap_or_else(|| {
        format!("no statement denies the plaintext operations to every principal when {key} is not an admitted value")
    })))
}

/// A private deploy's key: a blanket Deny of every plaintext operation unless the request
/// came through the deploy's endpoint, and nothing else in that statement.
fn check_endpoint_deny(statements: &[Statement], endpoint: &str) -> Result<(), PolicyError> {
    let key = "aws:sourcevpce";
    let found = statements.iter().filter(|s| s.is_blanket_deny()).any(|s| {
        s.sole_condition("StringNotEquals")
            .is_some_and(|(k, v)| k == key && v == [endpoint])
            && PLAINTEXT_ACTIONS.iter().all(|a| s.grants(a))
    });
    if found {
        Ok(())
    } else {
        Err(unsafe_policy(format!(
            "no statement denies the plaintext operations to every request that does not come through {endpoint} (aws:SourceVpce)"
        )))
    }
}

// ---------------------------------------------------------------------------------------
// Semantic comparison

/// A canonical form: statements sorted, lists sorted and deduplicated, one-element lists
/// and single strings alike, actions and condition keys lower-cased (IAM ignores their
/// case), values of `...IgnoreCase` operators lower-cased.
fn normalize_policy(doc: &Value) -> Value {
    let Some(obj) = doc.as_object() else {
        return doc.clone();
    };
    let mut out = Map::new();
    for (key, value) in obj {
        let value = if key == "Statement" {
            let list: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            let mut statements: Vec<Value> = list.into_iter().map(normalize_statement).collect();
            statements.sort_by_cached_key(Value::to_string);
            Value::Array(statements)
        } else {
            value.clone()
        };
        out.insert(key.clone(), value);
    }
    sorted_object(out)
}

fn normalize_statement(statement: &Value) -> Value {
    let Some(obj) = statement.as_object() else {
        return statement.clone();
    };
    let mut out = Map::new();
    for (key, value) in obj {
        let value = match key.as_str() {
            "Principal" | "NotPrincipal" => match value {
                Value::String(s) if s == "*" => json!({ "AWS": ["*"] }),
                Value::Object(map) => sorted_object(
                    map.iter()
                        .map(|(k, v)| (k.clone(), string_set(v, |s| s.to_owned())))
                        .collect(),
                ),
                other => other.clone(),
            },
            "Action" | "NotAction" => string_set(value, str::to_ascii_lowercase),
            "Resource" | "NotResource" => string_set(value, |s| s.to_owned()),
            "Condition" => match value {
                Value::Object(ops) => sorted_object(
                    ops.iter()
                        .map(|(op, block)| {
                            let fold = op.ends_with("IgnoreCase");
                            let block = match block {
                                Value::Object(keys) => sorted_object(
                                    keys.iter()
                                        .map(|(k, v)| {
                                            let v = if fold {
                                                string_set(v, str::to_ascii_lowercase)
                                            } else {
                                                string_set(v, |s| s.to_owned())
                                            };
                                            (k.to_ascii_lowercase(), v)
                                        })
                                        .collect(),
                                ),
                                other => other.clone(),
                            };
                            (op.clone(), block)
                        })
                        .collect(),
                ),
                other => other.clone(),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    sorted_object(out)
}

fn string_set(value: &Value, fold: impl Fn(&str) -> String) -> Value {
    let set: Option<BTreeSet<String>> = match value {
        Value::String(s) => Some(BTreeSet::from([fold(s)])),
        Value::Array(items) => items.iter().map(|i| i.as_str().map(&fold)).collect(),
        _ => None,
    };
    match set {
        Some(set) => Value::Array(set.into_iter().map(Value::String).collect()),
        None => value.clone(),
    }
}

/// serde_json keeps insertion order here (preserve_order), and object equality ignores
/// it, but sorting keeps the canonical text stable for sorting statements.
fn sorted_object(map: Map<String, Value>) -> Value {
    let mut entries: Vec<(String, Value)> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(entries.into_iter().collect())
}

/// What differs between an existing policy and the expected one, by statement.
fn policy_differences(existing: &Value, expected: &Value) -> Vec<String> {
    let (have, want) = (normalize_policy(existing), normalize_policy(expected));
    if have == want {
        return Vec::new();
    }
    let mut detail = Vec::new();
    for key in ["Version", "Id"] {
        if have.get(key) != want.get(key) {
            detail.push(format!("{key} differs"));
        }
    }
    let statements = |doc: &Value| -> Vec<Value> {
        doc.get("Statement")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let sid = |s: &Value| {
        s.get("Sid")
            .and_then(Value::as_str)
            .unwrap_or("(no Sid)")
            .to_owned()
    };
    let (have_list, want_list) = (statements(&have), statements(&want));
    let missing: Vec<String> = want_list
        .iter()
        .filter(|s| !have_list.contains(s))
        .map(sid)
        .collect();
    let unexpected: Vec<String> = have_list
        .iter()
        .filter(|s| !want_list.contains(s))
        .map(sid)
        .collect();
    if !missing.is_empty() {
        detail.push(format!(
            "expected but absent or different: {}",
            missing.join(", ")
        ));
    }
    if !unexpected.is_empty() {
        detail.push(format!(
            "present but not expected: {}",
            unexpected.join(", ")
        ));
    }
    if detail.is_empty() {
        detail.push("other top-level elements differ".to_owned());
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "111122223333";
    const ROLE: &str = "arn:aws:iam::111122223333:role/zoa-instance";
    const ROOT: &str = "arn:aws:iam::111122223333:root";
    const CI: &str = "arn:aws:iam::111122223333:role/zoa-ci";

    fn pcr(digit: char) -> String {
        digit.to_string().repeat(96)
    }

    fn binding(release: &str, pcr4: char, pcr12: char) -> PcrBinding {
        PcrBinding {
            release: release.into(),
            mode: BootMode::Standard,
            boot_pcr: pcr(pcr4),
            pcr12: pcr(pcr12),
        }
    }

    fn sb_binding(release: &str, pcr7: char, pcr12: char) -> PcrBinding {
        PcrBinding {
            mode: BootMode::SecureBoot,
            ..binding(release, pcr7, pcr12)
        }
    }

    fn input() -> KeyPolicyInput {
        KeyPolicyInput {
            partition: "aws".into(),
            account_id: ACCOUNT.into(),
            admin_principals: vec![ROOT.into()],
            instance_role_arn: ROLE.into(),
            sealer_principals: vec![CI.into()],
            bindings: vec![binding("demo 1.0.0", 'a', '0')],
            lock: false,
            vpc_endpoint: None,
        }
    }

    /// A rollout: the old and the new release, sharing the all-zero PCR12.
    fn rollout() -> KeyPolicyInput {
        KeyPolicyInput {
            bindings: vec![
                binding("demo 1.0.0", 'a', '0'),
                binding("demo 1.1.0", 'b', '0'),
            ],
            ..input()
        }
    }

    fn locked() -> KeyPolicyInput {
        KeyPolicyInput {
            lock: true,
            ..rollout()
        }
    }

    #[test]
    fn the_endpoint_admits_the_role_on_the_key_only() {
        let doc = kms_endpoint_policy(KEY_ARN, ROLE).unwrap();
        assert_eq!(
            doc,
            json!({"Version": "2012-10-17", "Statement": [{"Sid": "ZoaOnlyThisKey", "Effect": "Allow",
                "Principal": {"AWS": ROLE}, "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": KEY_ARN}]})
        );
        assert!(kms_endpoint_policy("arn:aws:kms:us-east-1:111122223333:alias/x", ROLE).is_err());
        assert_eq!(
            kms_endpoint_closed_policy()["Statement"][0]["Effect"],
            "Deny"
        );
    }

    /// A private deploy: the key is of use only through its VPC endpoint.
    fn private() -> KeyPolicyInput {
        KeyPolicyInput {
            vpc_endpoint: Some("vpce-0123456789abcdef0".into()),
            ..input()
        }
    }

    #[test]
    fn a_private_key_denies_plaintext_outside_its_endpoint() {
        let doc = render(&private());
        let deny = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == "ZoaDenyOutsideVpcEndpoint")
            .expect("the endpoint deny");
        assert_eq!(deny["Effect"], "Deny");
        assert_eq!(
            deny["Condition"]["StringNotEquals"]["aws:SourceVpce"],
            "vpce-0123456789abcdef0"
        );
        assert_eq!(
            deny["Action"].as_array().unwrap().len(),
            PLAINTEXT_ACTIONS.len()
        );
        // Not private: no such statement.
        assert!(!render(&input())["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["Sid"] == "ZoaDenyOutsideVpcEndpoint"));
        // The checker wants it: without, or for another endpoint, the policy is unsafe.
        let checked = validate(&private()).unwrap();
        let mut without = doc.clone();
        without["Statement"]
            .as_array_mut()
            .unwrap()
            .retain(|s| s["Sid"] != "ZoaDenyOutsideVpcEndpoint");
        assert!(matches!(
            check_safety(&without, &checked),
            Err(PolicyError::Unsafe { .. })
        ));
        let other = KeyPolicyInput {
            vpc_endpoint: Some("vpce-0fffffffffffffff0".into()),
            ..private()
        };
        assert!(check_safety(&doc, &validate(&other).unwrap()).is_err());
        for bad in [
            "vpce-12",
            "vpc-0123456789abcdef0",
            "vpce-0123456789ABCDEF0",
            "vpce-*",
        ] {
            let e = validate(&KeyPolicyInput {
                vpc_endpoint: Some(bad.into()),
                ..input()
            })
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.to_string().contains("VPC endpoint id"), "{e}");
        }
    }

    /// Secure Boot: PCR7 and PCR12.
    fn secure_boot() -> KeyPolicyInput {
        KeyPolicyInput {
            bindings: vec![sb_binding("demo 1.0.0", '7', '0')],
            ..input()
        }
    }

    /// A Secure Boot rollout to a release with other keys in db (another PCR7).
    fn secure_boot_rollout() -> KeyPolicyInput {
        KeyPolicyInput {
            bindings: vec![
                sb_binding("demo 1.0.0", '7', '0'),
                sb_binding("demo 1.1.0", 'c', '0'),
            ],
            lock: true,
            ..input()
        }
    }

    fn variants() -> Vec<KeyPolicyInput> {
        vec![
            input(),
            rollout(),
            locked(),
            KeyPolicyInput {
                sealer_principals: vec![],
                ..input()
            },
            secure_boot(),
            secure_boot_rollout(),
            private(),
        ]
    }

    fn statements(doc: &Value) -> &Vec<Value> {
        doc["Statement"].as_array().expect("Statement list")
    }

    fn by_sid<'a>(doc: &'a Value, sid: &str) -> Option<&'a Value> {
        statements(doc).iter().find(|s| s["Sid"] == sid)
    }

    fn list(value: &Value) -> Vec<String> {
        strings(value, "test").expect("string or list")
    }

    fn render(input: &KeyPolicyInput) -> Value {
        key_policy(input).expect("key policy")
    }

    #[test]
    fn golden_rendering() {
        let (a, zero) = (pcr('a'), pcr('0'));
        let expected = json!({
            "Version": "2012-10-17",
            "Id": "zoa-key-policy",
            "Statement": [
                {
                    "Sid": "ZoaKeyAdministration",
                    "Effect": "Allow",
                    "Principal": { "AWS": [ROOT] },
                    "Action": [
                        "kms:DescribeKey",
                        "kms:GetKeyPolicy",
                        "kms:GetKeyRotationStatus",
                        "kms:ListGrants",
                        "kms:ListKeyPolicies",
                        "kms:ListKeyRotations",
                        "kms:ListResourceTags",
                        "kms:CreateAlias",
                        "kms:UpdateAlias",
                        "kms:DeleteAlias",
                        "kms:UpdateKeyDescription",
                        "kms:EnableKey",
                        "kms:DisableKey",
                        "kms:EnableKeyRotation",
                        "kms:DisableKeyRotation",
                        "kms:RotateKeyOnDemand",
                        "kms:TagResource",
                        "kms:UntagResource",
                        "kms:RevokeGrant",
                        "kms:ScheduleKeyDeletion",
                        "kms:CancelKeyDeletion",
                        "kms:PutKeyPolicy"
                    ],
                    "Resource": "*"
                },
                {
                    "Sid": "ZoaSealers",
                    "Effect": "Allow",
                    "Principal": { "AWS": [CI] },
                    "Action": ["kms:Encrypt", "kms:DescribeKey"],
                    "Resource": "*"
                },
                {
                    "Sid": "ZoaInstanceUse0",
                    "Effect": "Allow",
                    "Principal": { "AWS": ROLE },
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                    "Resource": "*",
                    "Condition": {
                        "StringEqualsIgnoreCase": {
                            "kms:RecipientAttestation:NitroTPMPCR4": a,
                            "kms:RecipientAttestation:NitroTPMPCR12": zero
                        }
                    }
                },
                {
                    "Sid": "ZoaDenyUnattestedPcr4",
                    "Effect": "Deny",
                    "Principal": { "AWS": "*" },
                    "Action": [
                        "kms:Decrypt",
                        "kms:GenerateDataKey",
                        "kms:GenerateDataKeyPair",
                        "kms:DeriveSharedSecret"
                    ],
                    "Resource": "*",
                    "Condition": {
                        "StringNotEqualsIgnoreCase": { "kms:RecipientAttestation:NitroTPMPCR4": [a] }
                    }
                },
                {
                    "Sid": "ZoaDenyUnattestedPcr12",
                    "Effect": "Deny",
                    "Principal": { "AWS": "*" },
                    "Action": [
                        "kms:Decrypt",
                        "kms:GenerateDataKey",
                        "kms:GenerateDataKeyPair",
                        "kms:DeriveSharedSecret"
                    ],
                    "Resource": "*",
                    "Condition": {
                        "StringNotEqualsIgnoreCase": { "kms:RecipientAttestation:NitroTPMPCR12": [zero] }
                    }
                },
                {
                    "Sid": "ZoaDenyIndirectUse",
                    "Effect": "Deny",
                    "Principal": { "AWS": "*" },
                    "Action": [
                        "kms:ReEncryptFrom",
                        "kms:ReEncryptTo",
                        "kms:CreateGrant",
                        "kms:ReplicateKey"
                    ],
                    "Resource": "*"
                }
            ]
        });
        // Compared as text so member order (what a reader of the policy sees) counts too.
        let rendered = serde_json::to_string_pretty(&render(&input())).expect("json");
        let expected = serde_json::to_string_pretty(&expected).expect("json");
        assert_eq!(rendered, expected);
    }

    #[test]
    fn every_plaintext_allow_carries_exact_pcr_conditions() {
        for input in variants() {
            let doc = render(&input);
            let mut seen = Vec::new();
            for s in statements(&doc).iter().filter(|s| s["Effect"] == "Allow") {
                let actions = list(&s["Action"]);
                let plaintext = actions
                    .iter()
                    .any(|p| PLAINTEXT_ACTIONS.iter().any(|a| action_matches(p, a)));
                if !plaintext {
                    assert!(s.get("Condition").is_none(), "{s}");
                    continue;
                }
                assert_eq!(s["Principal"]["AWS"], ROLE, "{s}");
                let block = s["Condition"]["StringEqualsIgnoreCase"]
                    .as_object()
                    .expect("StringEqualsIgnoreCase");
                assert_eq!(s["Condition"].as_object().map(Map::len), Some(1));
                let mode = input.bindings[0].mode;
                assert_eq!(block.len(), mode.bound_pcrs().len());
                let pair = (
                    block[&pcr_condition_key(mode.boot_pcr())]
                        .as_str()
                        .expect("one boot PCR value"),
                    block[&pcr_condition_key(12)]
                        .as_str()
                        .expect("one PCR12 value"),
                );
                seen.push((pair.0.to_owned(), pair.1.to_owned()));
            }
            let admitted: Vec<(String, String)> = input
                .bindings
                .iter()
                .map(|b| (b.boot_pcr.clone(), b.pcr12.clone()))
                .collect();
            assert_eq!(seen, admitted);
        }
    }

    #[test]
    fn secure_boot_binds_pcr7_and_pcr12_and_never_pcr4() {
        for input in [secure_boot(), secure_boot_rollout()] {
            let doc = render(&input);
            let text = doc.to_string();
            assert!(!text.contains(&pcr_condition_key(4)), "{text}");
            assert!(by_sid(&doc, "ZoaDenyUnattestedPcr4").is_none());
            let values: Vec<String> = input.bindings.iter().map(|b| b.boot_pcr.clone()).collect();
            let deny7 = by_sid(&doc, "ZoaDenyUnattestedPcr7").expect("PCR7 deny");
            assert_eq!(
                deny7["Condition"],
                json!({ "StringNotEqualsIgnoreCase": { pcr_condition_key(7): values } })
            );
            let deny12 = by_sid(&doc, "ZoaDenyUnattestedPcr12").expect("PCR12 deny");
            assert_eq!(
                deny12["Condition"],
                json!({ "StringNotEqualsIgnoreCase": { pcr_condition_key(12): [pcr('0')] } })
            );
            for (i, b) in input.bindings.iter().enumerate() {
                let allow = by_sid(&doc, &format!("ZoaInstanceUse{i}")).expect("allow");
                assert_eq!(
                    allow["Condition"],
                    json!({ "StringEqualsIgnoreCase": {
                        pcr_condition_key(7): b.boot_pcr,
                        pcr_condition_key(12): b.pcr12,
                    } })
                );
            }
            check_key_policy(&doc, &input).expect("zoa's own Secure Boot policy");
        }
        // Apart from the boot PCR, the two modes' policies are the same document.
        let standard = render(&KeyPolicyInput {
            bindings: vec![binding("demo 1.0.0", '7', '0')],
            ..input()
        })
        .to_string();
        let sb = render(&secure_boot()).to_string();
        assert_eq!(
            sb.replace("NitroTPMPCR7", "NitroTPMPCR4")
                .replace("UnattestedPcr7", "UnattestedPcr4"),
            standard
        );
    }

    #[test]
    fn a_policy_of_one_mode_is_refused_for_the_other() {
        let standard = render(&KeyPolicyInput {
            bindings: vec![binding("demo 1.0.0", '7', '0')],
            ..input()
        });
        let err = check_key_policy(&standard, &secure_boot())
            .expect_err("a PCR4 policy for a Secure Boot release")
            .to_string();
        assert!(err.contains("NitroTPMPCR7"), "{err}");
        let sb = render(&secure_boot());
        let err = check_key_policy(
            &sb,
            &KeyPolicyInput {
                bindings: vec![binding("demo 1.0.0", '7', '0')],
                ..input()
            },
        )
        .expect_err("a PCR7 policy for a standard release")
        .to_string();
        assert!(err.contains("NitroTPMPCR4"), "{err}");
        // One release's Allow with PCR4 and PCR12 mixed into a Secure Boot policy.
        let mut mixed = sb.clone();
        let allow = mixed["Statement"]
            .as_array_mut()
            .and_then(|s| s.iter_mut().find(|s| s["Sid"] == "ZoaInstanceUse0"))
            .expect("allow");
        let block = allow["Condition"]["StringEqualsIgnoreCase"]
            .as_object_mut()
            .expect("block");
        let value = block.remove(&pcr_condition_key(7)).expect("PCR7");
        block.insert(pcr_condition_key(4), value);
        let err = check_key_policy(&mixed, &secure_boot())
            .expect_err("mixed")
            .to_string();
        assert!(err.contains("unsafe key policy"), "{err}");
    }

    #[test]
    fn secure_boot_without_pcr12_is_unsafe() {
        let input = secure_boot();
        // Drop PCR12 from the Allow: PCR7 alone would admit a cmdline injected through
        // UefiData (GHSA-xrv8-2pf5-f3q7).
        let mut doc = render(&input);
        let allow = doc["Statement"]
            .as_array_mut()
            .and_then(|s| s.iter_mut().find(|s| s["Sid"] == "ZoaInstanceUse0"))
            .expect("allow");
        allow["Condition"]["StringEqualsIgnoreCase"]
            .as_object_mut()
            .expect("block")
            .remove(&pcr_condition_key(12));
        let err = check_key_policy(&doc, &input)
            .expect_err("no PCR12")
            .to_string();
        assert!(err.contains("NitroTPMPCR12"), "{err}");
        // Drop the PCR12 Deny.
        let mut doc = render(&input);
        doc["Statement"]
            .as_array_mut()
            .expect("statements")
            .retain(|s| s["Sid"] != "ZoaDenyUnattestedPcr12");
        let err = check_key_policy(&doc, &input)
            .expect_err("no PCR12 deny")
            .to_string();
        assert!(err.contains("NitroTPMPCR12"), "{err}");
    }

    #[test]
    fn same_pcrs_ignores_the_name_and_case_but_not_the_mode() {
        let a = sb_binding("demo 1.0.0", 'a', '0');
        let mut b = sb_binding("demo 1.1.0", 'a', '0');
        b.boot_pcr = b.boot_pcr.to_ascii_uppercase();
        assert!(a.same_pcrs(&b));
        assert!(!a.same_pcrs(&binding("demo 1.0.0", 'a', '0')));
        assert!(!a.same_pcrs(&sb_binding("demo 1.0.0", 'b', '0')));
    }

    #[test]
    fn boot_modes_serialize_as_words() {
        assert_eq!(json!(BootMode::Standard), json!("standard"));
        assert_eq!(json!(BootMode::SecureBoot), json!("secure-boot"));
        assert_eq!(BootMode::SecureBoot.bound_pcrs(), [7, 12]);
        assert_eq!(BootMode::Standard.bound_pcrs(), [4, 12]);
    }

    /// Every KMS operation that uses key material, whatever the key spec.
    const USE_ACTIONS: [&str; 16] = [
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:GenerateDataKeyPair",
        "kms:GenerateDataKeyPairWithoutPlaintext",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
        "kms:CreateGrant",
        "kms:Sign",
        "kms:Verify",
        "kms:GenerateMac",
        "kms:VerifyMac",
        "kms:DeriveSharedSecret",
        "kms:ReplicateKey",
        "kms:ImportKeyMaterial",
    ];

    #[test]
    fn nothing_but_the_instance_role_can_use_the_key() {
        for input in variants() {
            let doc = render(&input);
            for s in statements(&doc).iter().filter(|s| s["Effect"] == "Allow") {
                let principals = list(&s["Principal"]["AWS"]);
                assert!(!principals.contains(&"*".to_owned()), "{s}");
                for action in list(&s["Action"]) {
                    assert!(!action.contains(['*', '?']), "wildcard action {action}");
                    if !USE_ACTIONS.iter().any(|a| action_matches(&action, a)) {
                        continue;
                    }
                    let allowed_to = match action.as_str() {
                        "kms:Decrypt" | "kms:GenerateDataKey" => vec![ROLE.to_owned()],
                        "kms:Encrypt" => input.sealer_principals.clone(),
                        _ => panic!("{} allows {action}", s["Sid"]),
                    };
                    assert!(
                        principals.iter().all(|p| allowed_to.contains(p)),
                        "{} allows {action} to {principals:?}",
                        s["Sid"]
                    );
                }
            }
            let admin = by_sid(&doc, "ZoaKeyAdministration").expect("admin statement");
            assert_eq!(list(&admin["Principal"]["AWS"]), input.admin_principals);
        }
    }

    #[test]
    fn one_deny_per_pcr_covers_the_admitted_values() {
        let doc = render(&rollout());
        for (pcr, values) in [(4, vec![pcr('a'), pcr('b')]), (12, vec![pcr('0')])] {
            let s = by_sid(&doc, &format!("ZoaDenyUnattestedPcr{pcr}")).expect("deny");
            assert_eq!(s["Effect"], "Deny");
            assert_eq!(s["Principal"], json!({ "AWS": "*" }));
            assert_eq!(s["Resource"], "*");
            assert_eq!(list(&s["Action"]), PLAINTEXT_ACTIONS);
            // One operator with one key: a second key would be ANDed and weaken the Deny.
            let expected =
                json!({ "StringNotEqualsIgnoreCase": { pcr_condition_key(pcr): values } });
            assert_eq!(s["Condition"], expected);
        }
        let indirect = by_sid(&doc, "ZoaDenyIndirectUse").expect("indirect");
        assert!(indirect.get("Condition").is_none());
        assert_eq!(list(&indirect["Action"]), ALWAYS_DENIED_ACTIONS);
    }

    #[test]
    fn lock_denies_policy_changes_and_removes_them_from_admins() {
        let open = render(&rollout());
        let admin = by_sid(&open, "ZoaKeyAdministration").expect("admin");
        assert!(list(&admin["Action"]).contains(&PUT_KEY_POLICY.to_owned()));
        assert!(by_sid(&open, "ZoaLockPolicy").is_none());
        assert!(!needs_lockout_bypass(&rollout()));

        let doc = render(&locked());
        let admin = by_sid(&doc, "ZoaKeyAdministration").expect("admin");
        let actions = list(&admin["Action"]);
        assert!(!actions.iter().any(|a| action_matches(a, PUT_KEY_POLICY)));
        assert_eq!(
            actions.len(),
            list(&by_sid(&open, "ZoaKeyAdministration").expect("a")["Action"]).len() - 1
        );
        let lock = by_sid(&doc, "ZoaLockPolicy").expect("lock statement");
        assert_eq!(
            *lock,
            json!({
                "Sid": "ZoaLockPolicy",
                "Effect": "Deny",
                "Principal": { "AWS": "*" },
                "Action": [PUT_KEY_POLICY],
                "Resource": "*"
            })
        );
        // Destroying the key must stay possible.
        assert!(actions.contains(&"kms:ScheduleKeyDeletion".to_owned()));
        assert!(needs_lockout_bypass(&locked()));
    }

    #[test]
    fn rollout_admits_each_release_exactly() {
        let doc = render(&rollout());
        let sids: Vec<&str> = statements(&doc)
            .iter()
            .map(|s| s["Sid"].as_str().expect("sid"))
            .collect();
        assert_eq!(
            sids,
            [
                "ZoaKeyAdministration",
                "ZoaSealers",
                "ZoaInstanceUse0",
                "ZoaInstanceUse1",
                "ZoaDenyUnattestedPcr4",
                "ZoaDenyUnattestedPcr12",
                "ZoaDenyIndirectUse"
            ]
        );
        let second = &by_sid(&doc, "ZoaInstanceUse1").expect("second")["Condition"];
        assert_eq!(
            second["StringEqualsIgnoreCase"][pcr_condition_key(4)],
            pcr('b')
        );
    }

    #[test]
    fn no_sealers_leaves_the_statement_out() {
        let doc = render(&KeyPolicyInput {
            sealer_principals: vec![],
            ..input()
        });
        assert!(by_sid(&doc, "ZoaSealers").is_none());
        assert!(!statements(&doc).iter().any(is_empty_statement));
    }

    #[test]
    fn upper_case_pcrs_are_accepted_and_written_lower_case() {
        let upper = KeyPolicyInput {
            bindings: vec![PcrBinding {
                release: "demo 1.0.0".into(),
                mode: BootMode::Standard,
                boot_pcr: "AB".repeat(48),
                pcr12: pcr('0'),
            }],
            ..input()
        };
        let doc = render(&upper);
        assert!(!doc.to_string().contains("AB"));
        assert!(doc.to_string().contains(&"ab".repeat(48)));
    }

    #[test]
    fn bad_inputs_are_rejected() {
        type Mutation = fn(&mut KeyPolicyInput);
        let cases: &[(&str, Mutation, &str)] = &[
            (
                "short pcr",
                |i| i.bindings[0].boot_pcr.truncate(95),
                "96 hex digits",
            ),
            (
                "non-hex pcr",
                |i| i.bindings[0].pcr12.replace_range(0..1, "g"),
                "not all hex",
            ),
            (
                "sha256 pcr",
                |i| i.bindings[0].boot_pcr = "a".repeat(64),
                "found 64",
            ),
            (
                "no bindings",
                |i| i.bindings.clear(),
                "no release is admitted",
            ),
            (
                "same pcrs twice",
                |i| {
                    let mut again = i.bindings[0].clone();
                    again.release = "demo 2".into();
                    again.boot_pcr = again.boot_pcr.to_ascii_uppercase();
                    i.bindings.push(again);
                },
                "the same PCR values",
            ),
            (
                "modes mixed",
                |i| i.bindings.push(sb_binding("demo 2", 'c', '0')),
                "one key policy binds the PCRs of one boot mode",
            ),
            (
                "same name twice",
                |i| i.bindings.push(binding("demo 1.0.0", 'c', '0')),
                "the same name",
            ),
            (
                "empty release name",
                |i| i.bindings[0].release = " ".into(),
                "release name",
            ),
            (
                "short account",
                |i| i.account_id = "12345678901".into(),
                "12 digits",
            ),
            (
                "letters in account",
                |i| i.account_id = "12345678901a".into(),
                "12 digits",
            ),
            ("bad partition", |i| i.partition = "AWS".into(), "partition"),
            (
                "role of another partition",
                |i| i.instance_role_arn = ROLE.replace("aws", "aws-cn"),
                "starts with arn:aws:",
            ),
            (
                "role of another account",
                |i| i.instance_role_arn = ROLE.replace(ACCOUNT, "999999999999"),
                "IAM role of the key's account",
            ),
            (
                "user as instance role",
                |i| i.instance_role_arn = ROLE.replace("role/", "user/"),
                "IAM role",
            ),
            (
                "wildcard role",
                |i| i.instance_role_arn = format!("{ROLE}*"),
                "wildcards",
            ),
            (
                "policy variable",
                |i| {
                    i.sealer_principals[0] = "arn:aws:iam::111122223333:user/${aws:username}".into()
                },
                "policy variables",
            ),
            (
                "wildcard admin",
                |i| i.admin_principals[0] = "*".into(),
                "starts with arn:aws:",
            ),
            ("no admins", |i| i.admin_principals.clear(), "at least one"),
            (
                "admin is a key",
                |i| i.admin_principals[0] = "arn:aws:kms:us-east-1:111122223333:key/x".into(),
                "not an IAM principal",
            ),
            (
                "instance role as admin",
                |i| i.admin_principals.push(ROLE.into()),
                "cannot also be",
            ),
            (
                "instance role as sealer",
                |i| i.sealer_principals.push(ROLE.into()),
                "cannot also be",
            ),
            (
                "duplicate sealer",
                |i| i.sealer_principals.push(CI.into()),
                "listed twice",
            ),
        ];
        for (what, mutate, message) in cases {
            let mut bad = input();
            mutate(&mut bad);
            let err = key_policy(&bad).expect_err(what).to_string();
            assert!(err.contains(message), "{what}: {err}");
            assert!(check_key_policy(&render(&input()), &bad).is_err(), "{what}");
        }
    }

    #[test]
    fn too_many_releases_exceed_the_kms_limit() {
        let many = KeyPolicyInput {
            bindings: (0..80)
                .map(|i| PcrBinding {
                    release: format!("demo {i}"),
                    mode: BootMode::Standard,
                    boot_pcr: format!("{i:096x}"),
                    pcr12: pcr('0'),
                })
                .collect(),
            ..input()
        };
        assert!(matches!(
            key_policy(&many),
            Err(PolicyError::TooLarge { .. })
        ));
    }

    /// The placeholders a template mentions.
    fn template_placeholders(template: &Template) -> BTreeSet<String> {
        let doc: Value = serde_json::from_str(template.text).expect("template JSON");
        let mut names = BTreeSet::new();
        collect_placeholders(template, &doc, &mut names).expect("placeholders");
        names
    }

    #[test]
    fn every_placeholder_is_substituted() {
        let expected: BTreeSet<String> = [
            "ADMIN_PRINCIPALS",
            "SEALER_PRINCIPALS",
            "INSTANCE_ROLE_ARN",
            "PUT_KEY_POLICY_UNLESS_LOCKED",
            "PUT_KEY_POLICY_IF_LOCKED",
            "BOOT_PCR",
            "BOOT_PCR_VALUES",
            "PCR12_VALUES",
            "RELEASE_INDEX",
            "RELEASE_BOOT_PCR",
            "RELEASE_PCR12",
            "PLAINTEXT_ACTIONS_IF_PRIVATE",
            "VPC_ENDPOINT",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(template_placeholders(&KEY_POLICY_TEMPLATE), expected);
        assert_eq!(
            template_placeholders(&INSTANCE_ROLE_POLICY_TEMPLATE),
            BTreeSet::from(["KEY_ARN".to_owned()])
        );
        let mut rendered: Vec<Value> = variants().iter().map(render).collect();
        rendered.push(instance_role_policy(KEY_ARN).expect("role policy"));
        rendered.push(instance_role_trust_policy());
        for doc in rendered {
            let text = doc.to_string();
            assert!(!text.contains("${"), "{text}");
        }
    }

    const TEST_TEMPLATE: Template = Template {
        name: "test.json",
        text: "",
    };

    fn render_text(text: &'static str, vars: &[(&str, Var)]) -> Result<Value, PolicyError> {
        let template = Template {
            name: "test.json",
            text,
        };
        let vars: Vars = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        render_document(&template, &vars, None)
    }

    #[test]
    fn template_errors() {
        let s = |v: &str| Var::Str(v.to_owned());
        let xy = [("X", s("Y")), ("Y", s("y"))];
        type Case<'a> = (&'static str, &'a [(&'a str, Var)], &'a str);
        let cases: &[Case] = &[
            (
                r#"{"Statement": [], "Id": "${NOPE}"}"#,
                &xy,
                "unknown placeholder ${NOPE}",
            ),
            (r#"{"Statement": [], "Id": "${X}"}"#, &xy, "never uses ${Y}"),
            (
                r#"{"Statement": [], "Id": "${X", "Y": "${Y}"}"#,
                &xy,
                "unterminated",
            ),
            (
                r#"{"Statement": [], "Id": "${aws:username}"}"#,
                &xy,
                "malformed placeholder",
            ),
            (
                r#"{"Statement": [], "Id": "x-${L}"}"#,
                &[("L", Var::List(vec![]))],
                "must be a whole JSON string",
            ),
            (
                r#"{"Statement": [], "A": {"${X}": 1, "Y": 2}, "B": "${Y}"}"#,
                &xy,
                "twice",
            ),
            (r#"{"Statement": {}}"#, &[], "Statement is not a list"),
            ("[", &[], "not valid JSON"),
        ];
        for (text, vars, message) in cases {
            let err = render_text(text, vars).expect_err(text).to_string();
            assert!(err.contains(message), "{text}: {err}");
            assert!(err.contains("test.json"), "{err}");
        }
        // Substituted text is never scanned again: a value cannot smuggle in a placeholder.
        let doc = render_text(
            r#"{"Id": "${X}", "Y": "${Y}"}"#,
            &[("X", s("${Y}")), ("Y", s("y"))],
        )
        .expect("render");
        assert_eq!(doc, json!({ "Id": "${Y}", "Y": "y" }));
        assert!(split_placeholders(&TEST_TEMPLATE, "a $ b {c}").is_ok());
    }

    #[test]
    fn renders_a_list_placeholder_as_array_or_spliced() {
        let list = |v: &[&str]| Var::List(v.iter().map(|s| (*s).to_owned()).collect());
        let doc = render_text(
            r#"{"A": "${L}", "B": ["x", "${L}", "${E}", "y"]}"#,
            &[("L", list(&["1", "2"])), ("E", list(&[]))],
        )
        .expect("render");
        assert_eq!(doc, json!({ "A": ["1", "2"], "B": ["x", "1", "2", "y"] }));
    }

    #[test]
    fn rendered_policies_pass_the_check_and_match_themselves() {
        for input in variants() {
            let doc = render(&input);
            check_key_policy(&doc, &input).expect("own rendering passes");
            assert!(same_policy(&doc, &doc));
        }
    }

    #[test]
    fn reserialized_policy_is_the_same() {
        // AWS may reorder, collapse one-element lists and change case of actions.
        let doc = render(&locked());
        let mut aws = doc.clone();
        let list = aws["Statement"].as_array_mut().expect("list");
        list.reverse();
        for s in list.iter_mut() {
            if let Some(Value::Array(actions)) = s.get_mut("Action") {
                actions.reverse();
                for a in actions.iter_mut() {
                    *a = Value::String(a.as_str().expect("action").to_ascii_lowercase());
                }
            }
            if s["Sid"] == "ZoaKeyAdministration" {
                s["Principal"]["AWS"] = json!(ROOT);
            }
            if s["Sid"] == "ZoaInstanceUse1" {
                let block = &mut s["Condition"]["StringEqualsIgnoreCase"];
                block[pcr_condition_key(4)] = json!(pcr('b').to_ascii_uppercase());
            }
        }
        let text = serde_json::to_string(&aws).expect("json");
        let reparsed: Value = serde_json::from_str(&text).expect("json");
        check_key_policy(&reparsed, &locked()).expect("re-serialized policy");
        assert!(same_policy(&reparsed, &doc));
    }

    fn mutated(input: &KeyPolicyInput, edit: impl FnOnce(&mut Vec<Value>)) -> Value {
        let mut doc = render(input);
        edit(doc["Statement"].as_array_mut().expect("list"));
        doc
    }

    fn sid_index(statements: &[Value], sid: &str) -> usize {
        statements.iter().position(|s| s["Sid"] == sid).expect(sid)
    }

    #[test]
    fn unsafe_policies_are_refused() {
        let (a, b, zero) = (pcr('a'), pcr('b'), pcr('0'));
        type Edit = Box<dyn Fn(&mut Vec<Value>)>;
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "decrypt for admins",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaKeyAdministration");
                    s[i]["Action"]
                        .as_array_mut()
                        .expect("a")
                        .push(json!("kms:Decrypt"));
                }),
                "only the instance role",
            ),
            (
                "default key policy statement",
                Box::new(|s| {
                    s.push(json!({
                        "Sid": "Enable IAM User Permissions", "Effect": "Allow",
                        "Principal": { "AWS": ROOT }, "Action": "kms:*", "Resource": "*"
                    }))
                }),
                "kms:ReEncryptFrom",
            ),
            (
                "wildcard generate",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaSealers");
                    s[i]["Action"] = json!(["kms:Encrypt", "kms:Generate*"]);
                }),
                "only the instance role",
            ),
            (
                "grant to sealers",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaSealers");
                    s[i]["Action"] = json!(["kms:Encrypt", "kms:CreateGrant"]);
                }),
                "kms:CreateGrant",
            ),
            (
                "no condition",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaInstanceUse0");
                    s[i].as_object_mut().expect("o").remove("Condition");
                }),
                "without requiring exactly one value",
            ),
            (
                "list of values mixes releases",
                Box::new(move |s| {
                    let i = sid_index(s, "ZoaInstanceUse0");
                    s[i]["Condition"]["StringEqualsIgnoreCase"][pcr_condition_key(4)] =
                        json!([a, b]);
                }),
                "exactly one value of kms:RecipientAttestation:NitroTPMPCR4",
            ),
            (
                "IfExists operator",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaInstanceUse0");
                    let c = s[i]["Condition"]["StringEqualsIgnoreCase"].take();
                    s[i]["Condition"] = json!({ "StringEqualsIgnoreCaseIfExists": c });
                }),
                "without requiring",
            ),
            (
                "unadmitted pcr",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaInstanceUse0");
                    s[i]["Condition"]["StringEqualsIgnoreCase"][pcr_condition_key(12)] =
                        json!(pcr('c'));
                }),
                "that no admitted release has",
            ),
            (
                "NotAction allow",
                Box::new(|s| {
                    s.push(json!({
                        "Effect": "Allow", "Principal": { "AWS": CI },
                        "NotAction": "kms:Encrypt", "Resource": "*"
                    }))
                }),
                "NotAction",
            ),
            (
                "allow to everyone",
                Box::new(|s| {
                    s.push(json!({
                "Effect": "Allow", "Principal": "*", "Action": "kms:DescribeKey", "Resource": "*"
            }))
                }),
                "every AWS principal",
            ),
            (
                "missing pcr12 deny",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaDenyUnattestedPcr12");
                    s.remove(i);
                }),
                "NitroTPMPCR12 is not an admitted value",
            ),
            (
                "both pcrs in one deny block (AND)",
                Box::new(move |s| {
                    let i = sid_index(s, "ZoaDenyUnattestedPcr12");
                    s.remove(i);
                    let i = sid_index(s, "ZoaDenyUnattestedPcr4");
                    s[i]["Condition"]["StringNotEqualsIgnoreCase"][pcr_condition_key(12)] =
                        json!([zero]);
                }),
                "NitroTPMPCR4 is not an admitted value",
            ),
            (
                "deny lets an extra value through",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaDenyUnattestedPcr4");
                    s[i]["Condition"]["StringNotEqualsIgnoreCase"][pcr_condition_key(4)]
                        .as_array_mut()
                        .expect("a")
                        .push(json!(pcr('c')));
                }),
                "lets through PCR4 values",
            ),
            (
                "deny skips GenerateDataKey",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaDenyUnattestedPcr4");
                    s[i]["Action"] = json!(["kms:Decrypt"]);
                }),
                "does not deny kms:GenerateDataKey",
            ),
            (
                "deny only for some principals",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaDenyUnattestedPcr4");
                    s[i]["Principal"] = json!({ "AWS": ROLE });
                }),
                "NitroTPMPCR4 is not an admitted value",
            ),
            (
                "deny IfExists",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaDenyUnattestedPcr4");
                    let c = s[i]["Condition"]["StringNotEqualsIgnoreCase"].take();
                    s[i]["Condition"] = json!({ "StringNotEqualsIgnoreCaseIfExists": c });
                }),
                "NitroTPMPCR4 is not an admitted value",
            ),
            (
                "no indirect-use deny",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaDenyIndirectUse");
                    s.remove(i);
                }),
                "kms:ReEncryptFrom",
            ),
            (
                "conditional indirect-use deny",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaDenyIndirectUse");
                    s[i]["Condition"] = json!({ "Bool": { "aws:SecureTransport": "false" } });
                }),
                "kms:ReEncryptFrom",
            ),
            (
                "lock removed",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaLockPolicy");
                    s.remove(i);
                }),
                "kms:PutKeyPolicy to every principal",
            ),
            (
                "put policy for admins when locked",
                Box::new(|s| {
                    let i = sid_index(s, "ZoaKeyAdministration");
                    s[i]["Action"]
                        .as_array_mut()
                        .expect("a")
                        .push(json!("kms:Put*"));
                }),
                "although the policy is locked",
            ),
        ];
        for (what, edit, message) in cases {
            let doc = mutated(&locked(), &*edit);
            match check_key_policy(&doc, &locked()) {
                Err(PolicyError::Unsafe { problem }) => {
                    assert!(problem.contains(message), "{what}: {problem}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn safe_but_different_policies_differ() {
        let doc = render(&rollout());
        // The new release is not admitted yet: the old policy is safe for the old input
        // but differs from the rollout's.
        let old = render(&input());
        assert!(check_key_policy_safety(&old, &rollout()).is_ok());
        match check_key_policy(&old, &rollout()) {
            Err(PolicyError::Differs { detail }) => assert!(
                detail.contains("ZoaInstanceUse1") && detail.contains("ZoaDenyUnattestedPcr4"),
                "{detail}"
            ),
            other => panic!("{other:?}"),
        }
        // The other way round is unsafe: the old input does not admit the new release.
        assert!(matches!(
            check_key_policy(&doc, &input()),
            Err(PolicyError::Unsafe { .. })
        ));

        let other_admin = KeyPolicyInput {
            admin_principals: vec!["arn:aws:iam::111122223333:role/admin".into()],
            ..rollout()
        };
        match check_key_policy(&doc, &other_admin) {
            Err(PolicyError::Differs { detail }) => {
                assert!(detail.contains("ZoaKeyAdministration"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        let mut extra = doc.clone();
        extra["Statement"]
            .as_array_mut()
            .expect("list")
            .push(json!({ "Sid": "Extra", "Effect": "Allow", "Principal": { "AWS": CI }, "Action": "kms:ListGrants", "Resource": "*" }));
        match check_key_policy(&extra, &rollout()) {
            Err(PolicyError::Differs { detail }) => assert!(
                detail.contains("present but not expected: Extra"),
                "{detail}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(check_key_policy_safety(&extra, &rollout()).is_ok());
        assert!(!same_policy(&doc, &render(&locked())));
    }

    #[test]
    fn malformed_policies_are_refused() {
        for doc in [
            json!({}),
            json!({ "Version": "2008-10-17", "Statement": [] }),
            json!({ "Version": "2012-10-17", "Statement": [{ "Effect": "Maybe" }] }),
            json!({ "Version": "2012-10-17", "Statement": [{ "Effect": "Allow", "Principal": { "AWS": 3 } }] }),
        ] {
            assert!(
                matches!(
                    check_key_policy(&doc, &input()),
                    Err(PolicyError::Malformed { .. })
                ),
                "{doc}"
            );
        }
    }

    #[test]
    fn action_patterns_match_like_iam() {
        assert!(action_matches("kms:*", "kms:Decrypt"));
        assert!(action_matches("*", "kms:Decrypt"));
        assert!(action_matches("KMS:decrypt", "kms:Decrypt"));
        assert!(action_matches("kms:Generate*", "kms:GenerateDataKeyPair"));
        assert!(action_matches("kms:ReEncrypt?rom", "kms:ReEncryptFrom"));
        assert!(!action_matches("kms:Get*", "kms:GenerateDataKey"));
        assert!(!action_matches("kms:Decrypt", "kms:DecryptX"));
    }

    const KEY_ARN: &str =
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn instance_role_policy_is_that_key_only_with_an_attestation() {
        let doc = instance_role_policy(KEY_ARN).expect("policy");
        // Whatever the boot mode: a NitroTPM attestation carries PCR4 and PCR12 either way,
        // and one role may use keys of both modes.
        let present: Map<String, Value> = [4, 12]
            .iter()
            .map(|&n| (pcr_condition_key(n), json!("false")))
            .collect();
        assert_eq!(
            doc,
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "ZoaAttestedKeyUse",
                    "Effect": "Allow",
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                    "Resource": KEY_ARN,
                    "Condition": { "Null": present }
                }]
            })
        );
        for bad in [
            "arn:aws:kms:us-east-1:111122223333:alias/zoa",
            "arn:aws:kms:us-east-1:111122223333:key/*",
            "arn:aws:kms:us-east-1:111122223333:key/${aws:username}",
            "arn:aws:s3:us-east-1:111122223333:key/abc",
            "arn:aws:kms:us-east-1:1111:key/abc",
            "arn:aws:kms::111122223333:key/abc",
            "*",
            "",
        ] {
            let err = instance_role_policy(bad).expect_err(bad);
            assert!(err.to_string().starts_with("key ARN"), "{bad}: {err}");
        }
    }

    #[test]
    fn role_policy_of_two_keys_lists_both_and_checks_each() {
        let other = "arn:aws:kms:us-east-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab";
        let doc = instance_role_policy_for_keys(&[KEY_ARN, other]).expect("policy");
        assert_eq!(doc["Statement"][0]["Resource"], json!([KEY_ARN, other]));
        let one = instance_role_policy(KEY_ARN).expect("policy");
        assert_eq!(
            doc["Statement"][0]["Condition"],
            one["Statement"][0]["Condition"]
        );
        assert!(instance_role_policy_for_keys(&[KEY_ARN, "*"]).is_err());
    }

    #[test]
    fn trust_policy_matches_its_template() {
        let template: Value = serde_json::from_str(include_str!(
            "../../templates/instance-role-trust-policy.json"
        ))
        .expect("template JSON");
        assert_eq!(instance_role_trust_policy(), template);
    }

    #[test]
    fn the_region_scp_denies_every_other_region_but_global_services() {
        let regions = vec!["eu-central-1".to_owned(), "eu-west-1".to_owned()];
        let doc = region_scp(&regions).unwrap();
        let st = &doc["Statement"][0];
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 1);
        assert_eq!(st["Effect"], "Deny");
        assert_eq!(st["Resource"], "*");
        assert_eq!(
            st["Condition"]["StringNotEquals"]["aws:RequestedRegion"],
            json!(["eu-central-1", "eu-west-1"])
        );
        let exempt: Vec<&str> = st["NotAction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            exempt.contains(&"iam:*") && exempt.contains(&"sts:*"),
            "{exempt:?}"
        );
        // What the allow-list protects is never exempt.
        for service in ["kms", "ec2", "ebs", "autoscaling", "elasticloadbalancing"] {
            assert!(
                !exempt.iter().any(|a| a.starts_with(&format!("{service}:"))),
                "{service} exempt: {exempt:?}"
            );
        }
        assert!(region_scp(&[]).is_err());
        let e = region_scp(&["eu-west-1\"]".to_owned()]).unwrap_err();
        assert!(e.to_string().contains("not an AWS region name"), "{e}");
    }

    /// Writes example renderings to $ZOA_POLICY_DUMP_DIR for `.ci/lint-policies`.
    #[test]
    fn dump_example_policies() {
        let examples = [
            ("key-policy.json", render(&input())),
            ("key-policy-rollout.json", render(&rollout())),
            ("key-policy-locked.json", render(&locked())),
            ("key-policy-secureboot.json", render(&secure_boot())),
            (
                "key-policy-secureboot-rollout.json",
                render(&secure_boot_rollout()),
            ),
            (
                "instance-role-policy.json",
                instance_role_policy(KEY_ARN).expect("role policy"),
            ),
            (
                "instance-role-trust-policy.json",
                instance_role_trust_policy(),
            ),
            ("key-policy-private.json", render(&private())),
            (
                "kms-endpoint-policy.json",
                kms_endpoint_policy(KEY_ARN, ROLE).expect("endpoint policy"),
            ),
            (
                "kms-endpoint-closed-policy.json",
                kms_endpoint_closed_policy(),
            ),
            (
                "region-scp.json",
                region_scp(&["eu-central-1".into(), "eu-west-1".into()]).expect("scp"),
            ),
            (
                "deployer-policy.json",
                serde_json::to_value(
                    crate::aws::deployer::deployer_policy(
                        &crate::aws::deployer::DeployerPolicyInput {
                            partition: "aws".into(),
                            account_id: "111122223333".into(),
                            deployment: "demo".into(),
                            regions: vec!["eu-central-1".into(), "eu-west-1".into()],
                            // Everything: the private and PrivateLink statements linted too.
                            private: true,
                            privatelink: true,
                        },
                    )
                    .expect("deployer policy"),
                )
                .expect("json"),
            ),
        ];
        let Some(dir) = std::env::var_os("ZOA_POLICY_DUMP_DIR") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("dump dir");
        for (name, doc) in examples {
            let text = serde_json::to_string_pretty(&doc).expect("json") + "\n";
            std::fs::write(dir.join(name), text).expect("write example");
        }
    }
}
