//! The deployer's IAM policy (`zoa policy DIR --deployer`): what a CI role needs for
//! `zoa deploy`, `zoa rollout` and `zoa destroy` of one deployment, and no more.
//!
//! Every action is one that a spec in [`crate::aws::calls`] sends, or a read-only look-up
//! of discovery, rollout or destroy (or of coldsnap's upload and wait), or a permission
//! AWS checks on the side of one of those calls (tagging on create, passing the instance
//! role, the Auto Scaling service-linked role). Each statement is scoped as tightly as
//! AWS allows for its actions:
//!
//! - by name, where the resource has one zoa chooses: the role and instance profile
//!   `zoa-NAME`, the key aliases `alias/zoa/NAME` (and a rollout's
//!   `alias/zoa/NAME-<12 hex>`), the Auto Scaling group `zoa-NAME`;
//! - by tag, where EC2, EBS and KMS pick the id: resources are created only carrying
//!   `zoa:deployment=NAME` (`aws:RequestTag`), and changed or removed only when they
//!   carry it (`aws:ResourceTag`);
//! - by region, when the release is signed for some (`aws:RequestedRegion`; IAM is
//!   global and left out).
//!
//! The document is a typed value ([`PolicyDocument`]) serialised with serde; each
//! statement also carries why it is needed ([`Statement::why`], not serialised: IAM
//! accepts no comments).
//!
//! # Example
//!
//! ```
//! use zoa::aws::deployer::{deployer_policy, DeployerPolicyInput};
//!
//! let policy = deployer_policy(&DeployerPolicyInput {
//!     partition: "aws".into(),
//!     account_id: "111122223333".into(),
//!     deployment: "demo".into(),
//!     regions: vec!["eu-central-1".into()],
//!     private: false,
//!     privatelink: false,
//! })?;
//! let role = policy.statement("ZoaInstanceRole").expect("a statement for the role");
//! assert!(role.resource.contains(&"arn:aws:iam::111122223333:role/zoa-demo".to_owned()));
//! # Ok::<(), zoa::aws::AwsError>(())
//! ```

use serde::Serialize;
use std::collections::BTreeMap;

use super::deploy::{validate_deployment_name, Names};
use super::policy::{PolicyError, POLICY_VERSION};
use super::state::TAG_DEPLOYMENT;
use super::AwsError;
use crate::release::VerifiedRelease;

/// An IAM identity policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    pub version: &'static str,
    pub statement: Vec<Statement>,
}

impl PolicyDocument {
    /// The statement with this Sid.
    pub fn statement(&self, sid: &str) -> Option<&Statement> {
        self.statement.iter().find(|s| s.sid == sid)
    }

    /// The document without the statement `sid` (what the integration suite attaches to
    /// show that each statement is needed).
    pub fn without(&self, sid: &str) -> PolicyDocument {
        PolicyDocument {
            version: self.version,
            statement: self
                .statement
                .iter()
                .filter(|s| s.sid != sid)
                .cloned()
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Effect {
    Allow,
}

/// Condition operator → condition key → values (any one matches).
pub type Conditions = BTreeMap<&'static str, BTreeMap<String, Vec<String>>>;

/// One statement: these actions on these resources, when every condition holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    pub sid: &'static str,
    /// Why the deployer needs it: which command makes which calls.
    #[serde(skip)]
    pub why: &'static str,
    pub effect: Effect,
    pub action: Vec<&'static str>,
    pub resource: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub condition: Conditions,
}

/// What the policy is for.
#[derive(Debug, Clone)]
pub struct DeployerPolicyInput {
    pub partition: String,
    pub account_id: String,
    /// The deployment name (`--name`, default: the release name).
    pub deployment: String,
    /// The release's signed regions; empty: any region.
    pub regions: Vec<String>,
    /// `zoa deploy --private`: the KMS interface endpoint's calls too.
    pub private: bool,
    /// `--expose privatelink`: the load balancer's and the endpoint service's calls too.
    pub privatelink: bool,
}

/// Actions only a private deploy makes.
const PRIVATE_ONLY: [&str; 4] = [
    "ec2:CreateVpcEndpoint",
    "ec2:DeleteVpcEndpoints",
    "ec2:DescribeVpcEndpoints",
    "ec2:ModifyVpcEndpoint",
];

/// Resources only a private deploy names (`vpc-endpoint/*`, not the endpoint services).
fn private_only_resource(r: &str) -> bool {
    r.ends_with(":vpc-endpoint/*")
}

/// Actions and resources only a PrivateLink exposure uses.
fn privatelink_only_action(a: &str) -> bool {
    a.starts_with("elasticloadbalancing:") || a.contains("VpcEndpointService")
}

fn privatelink_only_resource(r: &str) -> bool {
    r.contains(":elasticloadbalancing:") || r.ends_with(":vpc-endpoint-service/*")
}

/// The policy for deploying `release` as `name` (default: the release name), in the
/// release's signed regions.
pub fn for_release(
    release: &VerifiedRelease,
    name: Option<&str>,
    partition: &str,
    account_id: &str,
    private: bool,
    privatelink: bool,
) -> Result<PolicyDocument, AwsError> {
    let manifest = release.manifest();
    let deployment = name.unwrap_or(&manifest.name).to_owned();
    deployer_policy(&DeployerPolicyInput {
        partition: partition.to_owned(),
        account_id: account_id.to_owned(),
        deployment,
        regions: manifest.regions.clone(),
        private: private || privatelink,
        privatelink,
    })
}

fn invalid(field: &str, value: &str, why: &str) -> PolicyError {
    PolicyError::InvalidInput {
        field: field.to_owned(),
        value: value.to_owned(),
        why: why.to_owned(),
    }
}

fn check(input: &DeployerPolicyInput) -> Result<(), AwsError> {
    let p = &input.partition;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return Err(invalid(
            "partition",
            p,
            "not an AWS partition (aws, aws-cn, aws-us-gov)",
        )
        .into());
    }
    let a = &input.account_id;
    if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("account id", a, "an AWS account id is 12 digits").into());
    }
    validate_deployment_name(&input.deployment)?;
    for r in &input.regions {
        if !crate::release::regions::is_region_name(r) {
            return Err(invalid("region", r, "not an AWS region name").into());
        }
    }
    Ok(())
}

/// Builds statements with the deployment's scoping conditions.
struct Scope<'a> {
    input: &'a DeployerPolicyInput,
}

impl Scope<'_> {
    fn ec2(&self, resource: &str) -> String {
        let i = self.input;
        format!("arn:{}:ec2:*:{}:{resource}", i.partition, i.account_id)
    }

    /// Snapshots and AMIs have no account in their ARN.
    fn ec2_public(&self, resource: &str) -> String {
        format!("arn:{}:ec2:*::{resource}", self.input.partition)
    }

    fn iam(&self, resource: &str) -> String {
        let i = self.input;
        format!("arn:{}:iam::{}:{resource}", i.partition, i.account_id)
    }

    fn elb(&self, resource: &str) -> String {
        let i = self.input;
        format!(
            "arn:{}:elasticloadbalancing:*:{}:{resource}",
            i.partition, i.account_id
        )
    }

    fn kms(&self, resource: &str) -> String {
        let i = self.input;
        format!("arn:{}:kms:*:{}:{resource}", i.partition, i.account_id)
    }

    /// `aws:RequestedRegion` in the release's regions (nothing when it names none).
    fn regional(&self) -> Conditions {
        let mut c = Conditions::new();
        if !self.input.regions.is_empty() {
            c.entry("StringEquals")
                .or_default()
                .insert("aws:RequestedRegion".to_owned(), self.input.regions.clone());
        }
        c
    }

    /// [`regional`](Self::regional), and the deployment's tag on `tag_key` (e.g.
    /// `aws:RequestTag`).
    fn tagged(&self, tag_key: &str) -> Conditions {
        let mut c = self.regional();
        c.entry("StringEquals").or_default().insert(
            format!("{tag_key}/{TAG_DEPLOYMENT}"),
            vec![self.input.deployment.clone()],
        );
        c
    }
}

/// The EC2 API calls that create a resource, as `ec2:CreateAction` names them.
const EC2_CREATE_ACTIONS: [&str; 6] = [
    "CreateLaunchTemplate",
    "CreateSecurityGroup",
    "CreateVpcEndpoint",
    "CreateVpcEndpointServiceConfiguration",
    "RegisterImage",
    "RunInstances",
];

/// The deployer's policy: see the module documentation.
pub fn deployer_policy(input: &DeployerPolicyInput) -> Result<PolicyDocument, AwsError> {
    check(input)?;
    let s = Scope { input };
    let d = &input.deployment;
    // Names as zoa gives them (`deploy::Names`); the digest only shapes the AMI's name,
    // which no statement uses (AMIs are scoped by tag).
    let names = Names::new(d, &"0".repeat(64));
    let alias = Names::default_key_alias(d);
    // A rollout from a locked key makes `alias/zoa/NAME-<12 hex digits>`: exactly twelve
    // characters, so the pattern does not reach a deployment named `NAME-something`.
    let rollout_alias = format!("{alias}-{}", "?".repeat(12));

    let statement = |sid, why, action: &[&'static str], resource: Vec<String>, condition| {
        let mut action = action.to_vec();
        action.sort_unstable();
        Statement {
            sid,
            why,
            effect: Effect::Allow,
            action,
            resource,
            condition,
        }
    };
    let created_here = vec![
        s.ec2_public("image/*"),
        s.ec2("launch-template/*"),
        s.ec2("security-group/*"),
        s.ec2("vpc-endpoint/*"),
        s.ec2("vpc-endpoint-service/*"),
    ];
    let launched = vec![s.ec2("instance/*"), s.ec2("volume/*")];
    let mut tag_on_create = s.tagged("aws:RequestTag");
    tag_on_create.entry("StringEquals").or_default().insert(
        "ec2:CreateAction".to_owned(),
        EC2_CREATE_ACTIONS.iter().map(|a| (*a).to_owned()).collect(),
    );
    let mut pass_role = Conditions::new();
    pass_role.entry("StringEquals").or_default().insert(
        "iam:PassedToService".to_owned(),
        vec!["ec2.amazonaws.com".to_owned()],
    );
    let mut service_role = Conditions::new();
    service_role.entry("StringEquals").or_default().insert(
        "iam:AWSServiceName".to_owned(),
        vec!["autoscaling.amazonaws.com".to_owned()],
    );

    let statements = vec![
        statement(
            "ZoaDescribe",
            "Discovery before every deploy, rollout and destroy, and the waits after a change \
             (snapshot completed, instances gone, instance refresh done): read-only calls that \
             EC2, Auto Scaling and kms:ListKeys authorize only on every resource.",
            &[
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeInstanceRefreshes",
                "ec2:DescribeImages",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeInstances",
                "ec2:DescribeLaunchTemplateVersions",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSnapshots",
                "ec2:DescribeSubnets",
                "ec2:DescribeVpcEndpointServiceConfigurations",
                "ec2:DescribeVpcEndpoints",
                "ec2:DescribeVpcs",
                "elasticloadbalancing:DescribeListeners",
                "elasticloadbalancing:DescribeLoadBalancers",
                "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTargetHealth",
                "kms:ListKeys",
            ],
            vec!["*".to_owned()],
            s.regional(),
        ),
        statement(
            "ZoaStartSnapshot",
            "Deploy and rollout upload the disk image (and the model) with the EBS direct APIs: \
             a new snapshot, only with the deployment's tag.",
            &["ebs:StartSnapshot"],
            vec![s.ec2_public("snapshot/*")],
            s.tagged("aws:RequestTag"),
        ),
        statement(
            "ZoaCreateTagged",
            "Deploy and rollout register the AMI; deploy creates the security groups, the \
             fleet's launch template and a private deploy's KMS endpoint: only with the \
             deployment's tag, so whatever the deployer creates is the deployment's and \
             destroy finds it.",
            &[
                "ec2:CreateLaunchTemplate",
                "ec2:CreateSecurityGroup",
                "ec2:CreateVpcEndpoint",
                "ec2:CreateVpcEndpointServiceConfiguration",
                "ec2:RegisterImage",
            ],
            created_here.clone(),
            s.tagged("aws:RequestTag"),
        ),
        statement(
            "ZoaLaunchTagged",
            "Deploy launches an instance (RunInstances; the Auto Scaling group's creation \
             checks the same permission for its launch template): the instance and its \
             volumes only with the deployment's tag.",
            &["ec2:RunInstances"],
            launched.clone(),
            s.tagged("aws:RequestTag"),
        ),
        statement(
            "ZoaTagOnCreate",
            "EC2 authorizes the tags a create call carries as ec2:CreateTags: allowed only \
             inside those create calls and only with the deployment's tag, never on an \
             existing resource.",
            &["ec2:CreateTags"],
            created_here.iter().chain(&launched).cloned().collect(),
            tag_on_create,
        ),
        statement(
            "ZoaOwnEc2",
            "The deployment's own EC2 resources, recognised by their tag: write and complete \
             its snapshots' blocks, build the AMI from them, launch from its AMI, security \
             group and launch template, set the group's rules, add template versions \
             (rollout), put a private deploy's endpoint behind its group and set the \
             endpoint's policy, and remove all of it (rollout retires the old release, destroy \
             the rest, a rerun an interrupted upload).",
            &[
                "ebs:CompleteSnapshot",
                "ebs:PutSnapshotBlock",
                "ec2:AuthorizeSecurityGroupEgress",
                "ec2:AuthorizeSecurityGroupIngress",
                "ec2:CreateLaunchTemplateVersion",
                "ec2:CreateVpcEndpoint",
                "ec2:DeleteLaunchTemplate",
                "ec2:DeleteSecurityGroup",
                "ec2:DeleteSnapshot",
                "ec2:DeleteVpcEndpointServiceConfigurations",
                "ec2:DeleteVpcEndpoints",
                "ec2:DeregisterImage",
                "ec2:DescribeVpcEndpointServicePermissions",
                "ec2:ModifyLaunchTemplate",
                "ec2:ModifyVpcEndpoint",
                "ec2:ModifyVpcEndpointServicePermissions",
                "ec2:RegisterImage",
                "ec2:RevokeSecurityGroupEgress",
                "ec2:RevokeSecurityGroupIngress",
                "ec2:RunInstances",
                "ec2:TerminateInstances",
            ],
            vec![
                s.ec2_public("image/*"),
                s.ec2_public("snapshot/*"),
                s.ec2("instance/*"),
                s.ec2("launch-template/*"),
                s.ec2("security-group/*"),
                s.ec2("vpc-endpoint/*"),
                s.ec2("vpc-endpoint-service/*"),
            ],
            s.tagged("aws:ResourceTag"),
        ),
        statement(
            "ZoaLaunchNetwork",
            "The network a deploy uses but does not own: RunInstances makes a network \
             interface in a subnet, CreateSecurityGroup names the VPC, a private deploy's \
             CreateVpcEndpoint both. Any subnet and VPC of the account (the default VPC's, or \
             the subnets given).",
            &[
                "ec2:CreateSecurityGroup",
                "ec2:CreateVpcEndpoint",
                "ec2:RunInstances",
            ],
            vec![
                s.ec2("network-interface/*"),
                s.ec2("subnet/*"),
                s.ec2("vpc/*"),
            ],
            s.regional(),
        ),
        statement(
            "ZoaPassInstanceRole",
            "Launching an instance (or creating the Auto Scaling group) with the \
             deployment's instance profile passes its role to EC2: that role only, to EC2 only.",
            &["iam:PassRole"],
            vec![s.iam(&format!("role/{}", names.role))],
            pass_role,
        ),
        statement(
            "ZoaInstanceRole",
            "Deploy creates the instances' role (tagged: iam:TagRole), its instance profile \
             and its one inline policy (rollout rewrites it); destroy removes them. By name: \
             zoa-NAME only.",
            &[
                "iam:AddRoleToInstanceProfile",
                "iam:CreateInstanceProfile",
                "iam:CreateRole",
                "iam:DeleteInstanceProfile",
                "iam:DeleteRole",
                "iam:DeleteRolePolicy",
                "iam:GetInstanceProfile",
                "iam:GetRole",
                "iam:GetRolePolicy",
                "iam:ListRolePolicies",
                "iam:PutRolePolicy",
                "iam:RemoveRoleFromInstanceProfile",
                "iam:TagInstanceProfile",
                "iam:TagRole",
            ],
            vec![
                s.iam(&format!("instance-profile/{}", names.instance_profile)),
                s.iam(&format!("role/{}", names.role)),
            ],
            Conditions::new(),
        ),
        statement(
            "ZoaCreateKey",
            "Deploy (and a rollout from a locked key) creates the KMS key, tagged: CreateKey \
             and the tags it carries (kms:TagResource) are authorized before the key exists, \
             so only the request's tag can scope them.",
            &["kms:CreateKey", "kms:TagResource"],
            vec!["*".to_owned()],
            s.tagged("aws:RequestTag"),
        ),
        statement(
            "ZoaOwnKey",
            "The deployment's own keys, recognised by their tag: read each key and its policy \
             (discovery checks it), alias it, admit a new release (rollout), seal re-sealed \
             secrets (rollout from a locked key), schedule its deletion (destroy, rollout).",
            &[
                "kms:CreateAlias",
                "kms:DeleteAlias",
                "kms:DescribeKey",
                "kms:Encrypt",
                "kms:GetKeyPolicy",
                "kms:ListResourceTags",
                "kms:PutKeyPolicy",
                "kms:ScheduleKeyDeletion",
            ],
            vec![s.kms("key/*")],
            s.tagged("aws:ResourceTag"),
        ),
        statement(
            "ZoaKeyAliases",
            "An alias is authorized on the alias too: the deployment's aliases only.",
            &["kms:CreateAlias", "kms:DeleteAlias"],
            vec![s.kms(&alias), s.kms(&rollout_alias)],
            s.regional(),
        ),
        statement(
            "ZoaAutoScalingGroup",
            "A fleet's Auto Scaling group (tagged on create: autoscaling:CreateOrUpdateTags), \
             its instance refreshes (deploy with new user data, rollout), its removal \
             (destroy). By name: zoa-NAME only.",
            &[
                "autoscaling:CreateAutoScalingGroup",
                "autoscaling:CreateOrUpdateTags",
                "autoscaling:DeleteAutoScalingGroup",
                "autoscaling:StartInstanceRefresh",
            ],
            vec![format!(
                "arn:{}:autoscaling:*:{}:autoScalingGroup:*:autoScalingGroupName/{}",
                input.partition, input.account_id, names.auto_scaling_group
            )],
            s.regional(),
        ),
        statement(
            "ZoaLoadBalancer",
            "--expose privatelink: the internal Network Load Balancer, its target group and \
             listener (tagged on create: elasticloadbalancing:AddTags), the instance's \
             registration, their removal (destroy). By name: the deployment's load balancer \
             and target group only.",
            &[
                "elasticloadbalancing:AddTags",
                "elasticloadbalancing:CreateListener",
                "elasticloadbalancing:CreateLoadBalancer",
                "elasticloadbalancing:CreateTargetGroup",
                "elasticloadbalancing:DeleteLoadBalancer",
                "elasticloadbalancing:DeleteTargetGroup",
                "elasticloadbalancing:RegisterTargets",
            ],
            vec![
                s.elb(&format!("loadbalancer/net/{}/*", names.load_balancer)),
                s.elb(&format!("listener/net/{}/*", names.load_balancer)),
                s.elb(&format!("targetgroup/{}/*", names.target_group)),
            ],
            s.regional(),
        ),
        statement(
            "ZoaAutoScalingServiceRole",
            "The first Auto Scaling group of an account makes Auto Scaling's service-linked \
             role: that role only.",
            &["iam:CreateServiceLinkedRole"],
            vec![s.iam(
                "role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
            )],
            service_role,
        ),
    ];
    // What a deploy that is not private, or not exposed through PrivateLink, never
    // calls is left out: least privilege for the way the deployment is reached.
    let dropped_action = |a: &str| {
        (!input.private && PRIVATE_ONLY.contains(&a))
            || (!input.privatelink && privatelink_only_action(a))
    };
    let dropped_resource = |r: &str| {
        (!input.private && private_only_resource(r))
            || (!input.privatelink && privatelink_only_resource(r))
    };
    let mut statements = statements;
    for st in &mut statements {
        st.action.retain(|a| !dropped_action(a));
        st.resource.retain(|r| !dropped_resource(r));
        if let Some(actions) = st
            .condition
            .get_mut("StringEquals")
            .and_then(|c| c.get_mut("ec2:CreateAction"))
        {
            actions.retain(|a| !dropped_action(&format!("ec2:{a}")));
        }
    }
    statements.retain(|st| !st.action.is_empty() && !st.resource.is_empty());
    Ok(PolicyDocument {
        version: POLICY_VERSION,
        statement: statements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::calls::{autoscaling, ebs, ec2, elb, iam, kms};

    const ACCOUNT: &str = "111122223333";
    const REGION: &str = "eu-central-1";

    fn input() -> DeployerPolicyInput {
        DeployerPolicyInput {
            partition: "aws".into(),
            account_id: ACCOUNT.into(),
            deployment: "demo".into(),
            regions: vec![REGION.into(), "eu-west-1".into()],
            private: true,
            privatelink: true,
        }
    }

    fn policy() -> PolicyDocument {
        deployer_policy(&input()).expect("policy")
    }

    /// One authorization AWS makes for a call: an action on one resource, with the
    /// request's condition keys.
    #[derive(Debug, Clone)]
    struct Auth {
        action: &'static str,
        resource: String,
        context: BTreeMap<String, String>,
    }

    fn glob(p: &str, s: &str) -> bool {
        fn go(p: &[u8], s: &[u8]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
                Some((b'?', rest)) => !s.is_empty() && go(rest, &s[1..]),
                Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
            }
        }
        go(p.as_bytes(), s.as_bytes())
    }

    /// The statement that allows `a`, if any: IAM's evaluation of Allow statements
    /// (actions case-insensitive; every condition operator and key must hold; a key
    /// missing from the request fails a StringEquals). The policy has no Deny.
    fn allowing<'d>(doc: &'d PolicyDocument, a: &Auth) -> Option<&'d str> {
        doc.statement.iter().find_map(|st| {
            let action = st
                .action
                .iter()
                .any(|p| glob(&p.to_ascii_lowercase(), &a.action.to_ascii_lowercase()));
            let resource = st.resource.iter().any(|p| glob(p, &a.resource));
            let conditions = st.condition.iter().all(|(op, keys)| {
                assert_eq!(*op, "StringEquals", "the evaluator knows StringEquals only");
                keys.iter()
                    .all(|(k, wanted)| a.context.get(k).is_some_and(|v| wanted.contains(v)))
            });
            (action && resource && conditions).then_some(st.sid)
        })
    }

    fn ec2(resource: &str) -> String {
        format!("arn:aws:ec2:{REGION}:{ACCOUNT}:{resource}")
    }

    /// What AWS authorizes for each call of a deploy, rollout and destroy of `demo` (the
    /// Service Authorization Reference's resource types per action, and the side checks:
    /// tags on create, PassRole, the launch template's RunInstances), with the condition
    /// keys the request carries. Resources zoa made carry `zoa:deployment=demo`.
    fn authorizations() -> Vec<Auth> {
        let tag = format!("aws:ResourceTag/{TAG_DEPLOYMENT}");
        let request_tag = format!("aws:RequestTag/{TAG_DEPLOYMENT}");
        let region = ("aws:RequestedRegion".to_owned(), REGION.to_owned());
        let auth = |action, resource: String, keys: &[(&str, &str)], regional: bool| {
            let mut context: BTreeMap<String, String> = keys
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            if regional {
                context.insert(region.0.clone(), region.1.clone());
            }
            Auth {
                action,
                resource,
                context,
            }
        };
        let owned: &[(&str, &str)] = &[(&tag, "demo")];
        let created: &[(&str, &str)] = &[(&request_tag, "demo")];
        let snapshot = format!("arn:aws:ec2:{REGION}::snapshot/snap-1");
        let image = format!("arn:aws:ec2:{REGION}::image/ami-1");
        let key =
            format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab");
        let role = format!("arn:aws:iam::{ACCOUNT}:role/zoa-demo");
        let profile = format!("arn:aws:iam::{ACCOUNT}:instance-profile/zoa-demo");
        let asg = format!("arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:0f1e2d3c-aaaa-bbbb-cccc-0123456789ab:autoScalingGroupName/zoa-demo");
        let mut out = Vec::new();
        for action in [
            "ec2:DescribeInstanceTypes",
            "ec2:DescribeVpcs",
            "ec2:DescribeSubnets",
            "ec2:DescribeSnapshots",
            "ec2:DescribeImages",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeInstances",
            "ec2:DescribeLaunchTemplates",
            "ec2:DescribeLaunchTemplateVersions",
            "ec2:DescribeVpcEndpoints",
            "ec2:DescribeVpcEndpointServiceConfigurations",
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeLoadBalancers",
            "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:DescribeTargetHealth",
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DescribeInstanceRefreshes",
            "kms:ListKeys",
        ] {
            out.push(auth(action, "*".to_owned(), &[], true));
        }
        // Uploads.
        out.push(auth("ebs:StartSnapshot", snapshot.clone(), created, true));
        for action in [
            "ebs:PutSnapshotBlock",
            "ebs:CompleteSnapshot",
            "ec2:DeleteSnapshot",
        ] {
            out.push(auth(action, snapshot.clone(), owned, true));
        }
        // The AMI and the things created with tags, with their tag authorizations.
        let creates = [
            ("ec2:RegisterImage", "RegisterImage", image.clone()),
            (
                "ec2:CreateSecurityGroup",
                "CreateSecurityGroup",
                ec2("security-group/sg-1"),
            ),
            (
                "ec2:CreateLaunchTemplate",
                "CreateLaunchTemplate",
                ec2("launch-template/lt-1"),
            ),
            ("ec2:RunInstances", "RunInstances", ec2("instance/i-1")),
            ("ec2:RunInstances", "RunInstances", ec2("volume/vol-1")),
            (
                "ec2:CreateVpcEndpoint",
                "CreateVpcEndpoint",
                ec2("vpc-endpoint/vpce-1"),
            ),
            (
                "ec2:CreateVpcEndpointServiceConfiguration",
                "CreateVpcEndpointServiceConfiguration",
                ec2("vpc-endpoint-service/vpce-svc-1"),
            ),
        ];
        for (action, create_action, resource) in creates {
            out.push(auth(action, resource.clone(), created, true));
            out.push(auth(
                "ec2:CreateTags",
                resource,
                &[(&request_tag, "demo"), ("ec2:CreateAction", create_action)],
                true,
            ));
        }
        out.push(auth("ec2:RegisterImage", snapshot.clone(), owned, true));
        out.push(auth("ec2:CreateSecurityGroup", ec2("vpc/vpc-1"), &[], true));
        // A private deploy's endpoint: in a VPC and subnets it does not own, behind the
        // deployment's own group.
        for resource in [ec2("vpc/vpc-1"), ec2("subnet/subnet-1")] {
            out.push(auth("ec2:CreateVpcEndpoint", resource, &[], true));
        }
        out.push(auth(
            "ec2:CreateVpcEndpoint",
            ec2("security-group/sg-1"),
            owned,
            true,
        ));
        // RunInstances uses (instances alone, or the Auto Scaling group's template).
        for resource in [
            image.clone(),
            snapshot.clone(),
            ec2("security-group/sg-1"),
            ec2("launch-template/lt-1"),
        ] {
            out.push(auth("ec2:RunInstances", resource, owned, true));
        }
        for resource in [ec2("subnet/subnet-1"), ec2("network-interface/eni-1")] {
            out.push(auth("ec2:RunInstances", resource, &[], true));
        }
        out.push(auth(
            "iam:PassRole",
            role.clone(),
            &[("iam:PassedToService", "ec2.amazonaws.com")],
            false,
        ));
        // Rules, template versions, removals.
        for (action, resource) in [
            ("ec2:RevokeSecurityGroupEgress", ec2("security-group/sg-1")),
            (
                "ec2:AuthorizeSecurityGroupEgress",
                ec2("security-group/sg-1"),
            ),
            (
                "ec2:AuthorizeSecurityGroupIngress",
                ec2("security-group/sg-1"),
            ),
            ("ec2:RevokeSecurityGroupIngress", ec2("security-group/sg-1")),
            ("ec2:DeleteSecurityGroup", ec2("security-group/sg-1")),
            (
                "ec2:CreateLaunchTemplateVersion",
                ec2("launch-template/lt-1"),
            ),
            ("ec2:ModifyLaunchTemplate", ec2("launch-template/lt-1")),
            ("ec2:DeleteLaunchTemplate", ec2("launch-template/lt-1")),
            ("ec2:TerminateInstances", ec2("instance/i-1")),
            ("ec2:DeregisterImage", image.clone()),
            ("ec2:ModifyVpcEndpoint", ec2("vpc-endpoint/vpce-1")),
            ("ec2:DeleteVpcEndpoints", ec2("vpc-endpoint/vpce-1")),
            (
                "ec2:ModifyVpcEndpointServicePermissions",
                ec2("vpc-endpoint-service/vpce-svc-1"),
            ),
            (
                "ec2:DescribeVpcEndpointServicePermissions",
                ec2("vpc-endpoint-service/vpce-svc-1"),
            ),
            (
                "ec2:DeleteVpcEndpointServiceConfigurations",
                ec2("vpc-endpoint-service/vpce-svc-1"),
            ),
        ] {
            out.push(auth(action, resource, owned, true));
        }
        // --expose privatelink: the load balancer, its listener and target group, by name.
        let elb = |r: &str| format!("arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:{r}");
        let lb = elb("loadbalancer/net/zoa-demo/50dc6c495c0c9188");
        let tg = elb("targetgroup/zoa-demo/73e2d6bc24d8a067");
        let listener = elb("listener/net/zoa-demo/50dc6c495c0c9188/f2f7dc8efc522ab2");
        for (action, resource) in [
            ("elasticloadbalancing:CreateLoadBalancer", lb.clone()),
            ("elasticloadbalancing:AddTags", lb.clone()),
            ("elasticloadbalancing:DeleteLoadBalancer", lb.clone()),
            ("elasticloadbalancing:CreateTargetGroup", tg.clone()),
            ("elasticloadbalancing:AddTags", tg.clone()),
            ("elasticloadbalancing:RegisterTargets", tg.clone()),
            ("elasticloadbalancing:DeleteTargetGroup", tg.clone()),
            ("elasticloadbalancing:CreateListener", lb.clone()),
            ("elasticloadbalancing:CreateListener", listener),
        ] {
            out.push(auth(action, resource, &[], true));
        }
        // IAM: by name, global (no region).
        for action in [
            "iam:GetRole",
            "iam:CreateRole",
            "iam:TagRole",
            "iam:PutRolePolicy",
            "iam:GetRolePolicy",
            "iam:ListRolePolicies",
            "iam:DeleteRolePolicy",
            "iam:DeleteRole",
            "iam:AddRoleToInstanceProfile",
            "iam:RemoveRoleFromInstanceProfile",
        ] {
            out.push(auth(action, role.clone(), &[], false));
        }
        for action in [
            "iam:GetInstanceProfile",
            "iam:CreateInstanceProfile",
            "iam:TagInstanceProfile",
            "iam:AddRoleToInstanceProfile",
            "iam:RemoveRoleFromInstanceProfile",
            "iam:DeleteInstanceProfile",
        ] {
            out.push(auth(action, profile.clone(), &[], false));
        }
        // KMS.
        for action in ["kms:CreateKey", "kms:TagResource"] {
            out.push(auth(action, "*".to_owned(), created, true));
        }
        for action in [
            "kms:DescribeKey",
            "kms:GetKeyPolicy",
            "kms:ListResourceTags",
            "kms:CreateAlias",
            "kms:PutKeyPolicy",
            "kms:Encrypt",
            "kms:DeleteAlias",
            "kms:ScheduleKeyDeletion",
        ] {
            out.push(auth(action, key.clone(), owned, true));
        }
        for alias in ["alias/zoa/demo", "alias/zoa/demo-0123456789ab"] {
            let alias = format!("arn:aws:kms:{REGION}:{ACCOUNT}:{alias}");
            for action in ["kms:CreateAlias", "kms:DeleteAlias"] {
                out.push(auth(action, alias.clone(), &[], true));
            }
        }
        // Auto Scaling.
        for action in [
            "autoscaling:CreateAutoScalingGroup",
            "autoscaling:CreateOrUpdateTags",
            "autoscaling:StartInstanceRefresh",
            "autoscaling:DeleteAutoScalingGroup",
        ] {
            out.push(auth(action, asg.clone(), &[], true));
        }
        out.push(auth(
            "iam:CreateServiceLinkedRole",
            format!("arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"),
            &[("iam:AWSServiceName", "autoscaling.amazonaws.com")],
            false,
        ));
        out
    }

    #[test]
    fn every_authorization_of_a_deploy_rollout_and_destroy_is_allowed() {
        let doc = policy();
        for a in authorizations() {
            assert!(allowing(&doc, &a).is_some(), "denied: {a:?}");
        }
    }

    /// The counterpart of the integration suite's moto test, for what moto cannot check
    /// (resources and conditions): without any one statement, something zoa needs is
    /// denied.
    #[test]
    fn each_statement_is_needed() {
        let doc = policy();
        for st in &doc.statement {
            let without = doc.without(st.sid);
            let needed: Vec<Auth> = authorizations()
                .into_iter()
                .filter(|a| allowing(&without, a).is_none())
                .collect();
            assert!(
                !needed.is_empty(),
                "{} allows nothing the others do not",
                st.sid
            );
        }
    }

    /// Every AWS call zoa's specs make is in the policy (a new call without a permission
    /// fails this test, not a CI deploy).
    #[test]
    fn every_call_zoa_makes_is_granted() {
        let mut apis = vec![
            iam::CreateRole::API,
            iam::CreateInstanceProfile::API,
            iam::AddRoleToInstanceProfile::API,
            iam::PutRolePolicy::API,
            iam::RemoveRoleFromInstanceProfile::API,
            iam::DeleteInstanceProfile::API,
            iam::DeleteRolePolicy::API,
            iam::DeleteRole::API,
            kms::CreateKey::API,
            kms::CreateAlias::API,
            kms::PutKeyPolicy::API,
            kms::DeleteAlias::API,
            kms::ScheduleKeyDeletion::API,
            kms::EncryptDataKey::API,
            ec2::RegisterImage::API,
            ec2::RunInstances::API,
            ec2::CreateLaunchTemplate::API,
            ec2::CreateSecurityGroup::API,
            ec2::TerminateInstances::API,
            ec2::NewDefaultTemplateVersion::CREATE_API,
            ec2::NewDefaultTemplateVersion::MODIFY_API,
            ec2::DeregisterImage::API,
            ec2::DeleteSnapshot::API,
            ec2::DeleteLaunchTemplate::API,
            ec2::DeleteSecurityGroup::API,
            ec2::CreateVpcEndpoint::API,
            ec2::SetVpcEndpointPolicy::API,
            ec2::DeleteVpcEndpoints::API,
            ec2::CreateEndpointService::API,
            ec2::AllowEndpointServicePrincipals::API,
            ec2::DeleteEndpointServices::API,
            elb::CreateTargetGroup::API,
            elb::CreateLoadBalancer::API,
            elb::CreateListener::API,
            elb::RegisterTargets::API,
            elb::DeleteLoadBalancer::API,
            elb::DeleteTargetGroup::API,
            autoscaling::CreateAutoScalingGroup::API,
            autoscaling::StartInstanceRefresh::API,
            autoscaling::DeleteAutoScalingGroup::API,
        ];
        use ec2::RuleCall::*;
        for r in [
            RevokeEgress,
            AuthorizeEgress,
            RevokeIngress,
            AuthorizeIngress,
        ] {
            apis.push(r.api());
        }
        let upload = ebs::SnapshotUpload {
            stale: vec!["snap-0".into()],
            snapshot: "snapshot-id",
            what: "disk".into(),
            size: 1,
            description: String::new(),
            tags: vec![],
        };
        let upload_calls = upload.calls();
        let granted: Vec<&str> = policy()
            .statement
            .iter()
            .flat_map(|s| s.action.iter().copied())
            .collect();
        for api in apis
            .iter()
            .copied()
            .chain(upload_calls.iter().map(|c| c.api.as_str()))
        {
            assert!(
                granted.contains(&api),
                "{api} is not in the deployer policy"
            );
        }
    }

    #[test]
    fn other_deployments_regions_and_existing_resources_are_denied() {
        let doc = policy();
        let all = authorizations();
        let find = |action: &str, resource_part: &str| {
            all.iter()
                .find(|a| a.action == action && a.resource.contains(resource_part))
                .cloned()
                .unwrap_or_else(|| panic!("no {action} on {resource_part}"))
        };
        let denied = |a: Auth, why: &str| {
            assert_eq!(allowing(&doc, &a), None, "{why}: {a:?}");
        };
        // Another deployment's tags, names and aliases.
        let mut a = find("ec2:TerminateInstances", "instance/");
        a.context
            .insert(format!("aws:ResourceTag/{TAG_DEPLOYMENT}"), "other".into());
        denied(a, "another deployment's instance");
        let mut a = find("ec2:TerminateInstances", "instance/");
        a.context
            .remove(&format!("aws:ResourceTag/{TAG_DEPLOYMENT}"));
        denied(a, "an untagged instance");
        let mut a = find("ec2:RunInstances", "instance/");
        a.context
            .remove(&format!("aws:RequestTag/{TAG_DEPLOYMENT}"));
        denied(a, "an instance launched without the tag");
        let mut a = find("kms:PutKeyPolicy", "key/");
        a.context
            .insert(format!("aws:ResourceTag/{TAG_DEPLOYMENT}"), "other".into());
        denied(a, "another deployment's key");
        let mut a = find("iam:PutRolePolicy", "role/");
        a.resource = a.resource.replace("zoa-demo", "zoa-other");
        denied(a, "another role");
        let mut a = find("iam:PassRole", "role/");
        a.context
            .insert("iam:PassedToService".into(), "lambda.amazonaws.com".into());
        denied(a, "the role passed to another service");
        for other in [
            "alias/zoa/demo-prod",
            "alias/zoa/other",
            "alias/zoa/demo-0123456789abc",
        ] {
            let mut a = find("kms:CreateAlias", "alias/zoa/demo");
            a.resource = format!("arn:aws:kms:{REGION}:{ACCOUNT}:{other}");
            denied(a, "another deployment's alias");
        }
        let mut a = find("autoscaling:DeleteAutoScalingGroup", "zoa-demo");
        a.resource = a.resource.replace("zoa-demo", "zoa-other");
        denied(a, "another Auto Scaling group");
        // Tags on an existing resource, outside a create call.
        let mut a = find("ec2:CreateTags", "instance/");
        a.context.remove("ec2:CreateAction");
        denied(a, "tagging an existing instance");
        // Another region.
        for a in all
            .iter()
            .filter(|a| a.context.contains_key("aws:RequestedRegion"))
        {
            let mut a = a.clone();
            a.context
                .insert("aws:RequestedRegion".into(), "us-east-1".into());
            denied(a, "a region the release is not signed for");
        }
    }

    /// IAM's quotas, whitespace not counted: 6,144 characters for a managed policy,
    /// 10,240 for a role's inline policies. With the longest deployment name, the policy
    /// of a deployment with public addresses fits a managed policy for two regions, and
    /// every policy (private and PrivateLink included) an inline one for five (each region
    /// is repeated in each regional statement).
    #[test]
    fn fits_iam_quotas() {
        let size = |regions: &[&str], private: bool| {
            let doc = deployer_policy(&DeployerPolicyInput {
                deployment: "a".repeat(40),
                regions: regions.iter().map(|r| (*r).to_owned()).collect(),
                private,
                privatelink: private,
                ..input()
            })
            .unwrap();
            serde_json::to_string(&doc).unwrap().len()
        };
        let two = size(&["eu-central-1", "eu-central-2"], false);
        assert!(two <= 6144, "{two} characters");
        let five = size(
            &[
                "eu-central-1",
                "eu-central-2",
                "eu-west-1",
                "eu-west-2",
                "eu-west-3",
            ],
            true,
        );
        assert!(five <= 10240, "{five} characters");
    }

    #[test]
    fn a_public_deployment_s_deployer_gets_no_endpoint_or_load_balancer_rights() {
        let public = deployer_policy(&DeployerPolicyInput {
            private: false,
            privatelink: false,
            ..input()
        })
        .unwrap();
        let text = serde_json::to_string(&public).unwrap();
        for absent in ["VpcEndpoint", "elasticloadbalancing", "vpc-endpoint"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        let private = deployer_policy(&DeployerPolicyInput {
            privatelink: false,
            ..input()
        })
        .unwrap();
        let text = serde_json::to_string(&private).unwrap();
        assert!(text.contains("ec2:CreateVpcEndpoint\""), "{text}");
        assert!(!text.contains("elasticloadbalancing"), "{text}");
        assert!(!text.contains("VpcEndpointService"), "{text}");
    }

    #[test]
    fn renders_as_iam_json_and_without_regions_pins_none() {
        let text = serde_json::to_string(&policy()).unwrap();
        assert!(text.starts_with(r#"{"Version":"2012-10-17","Statement":[{"Sid":"ZoaDescribe","Effect":"Allow","Action":["#), "{text}");
        assert!(!text.contains("\"Why\""), "{text}");
        let doc = deployer_policy(&DeployerPolicyInput {
            regions: vec![],
            ..input()
        })
        .unwrap();
        let text = serde_json::to_string(&doc).unwrap();
        assert!(!text.contains("aws:RequestedRegion"), "{text}");
        let role = doc.statement("ZoaInstanceRole").unwrap();
        assert!(role.condition.is_empty());
        assert!(!serde_json::to_value(role)
            .unwrap()
            .as_object()
            .unwrap()
            .contains_key("Condition"));
        // Sids are unique; every statement says why.
        let mut sids: Vec<&str> = doc.statement.iter().map(|s| s.sid).collect();
        sids.sort_unstable();
        sids.dedup();
        assert_eq!(sids.len(), doc.statement.len());
        assert!(doc.statement.iter().all(|s| s.why.len() > 20));
    }

    /// The names the policy scopes by are the ones a deploy gives.
    #[test]
    fn scoped_names_are_the_deploys_names() {
        let names = Names::new("demo", &"ab".repeat(32));
        let doc = policy();
        let has = |sid: &str, arn: &str| {
            let st = doc.statement(sid).unwrap();
            assert!(
                st.resource.iter().any(|p| glob(p, arn)),
                "{sid} lacks {arn}"
            );
        };
        has(
            "ZoaInstanceRole",
            &format!("arn:aws:iam::{ACCOUNT}:role/{}", names.role),
        );
        has(
            "ZoaInstanceRole",
            &format!(
                "arn:aws:iam::{ACCOUNT}:instance-profile/{}",
                names.instance_profile
            ),
        );
        for alias in [
            names.key_alias.clone(),
            Names::release_key_alias("demo", &"ab".repeat(32)),
        ] {
            has(
                "ZoaKeyAliases",
                &format!("arn:aws:kms:{REGION}:{ACCOUNT}:{alias}"),
            );
        }
        has(
            "ZoaAutoScalingGroup",
            &format!(
                "arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:x:autoScalingGroupName/{}",
                names.auto_scaling_group
            ),
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        for (edit, needle) in [
            (
                DeployerPolicyInput {
                    account_id: "12345".into(),
                    ..input()
                },
                "12 digits",
            ),
            (
                DeployerPolicyInput {
                    deployment: "a*".into(),
                    ..input()
                },
                "deployment name",
            ),
            (
                DeployerPolicyInput {
                    regions: vec!["Frankfurt".into()],
                    ..input()
                },
                "not an AWS region name",
            ),
            (
                DeployerPolicyInput {
                    partition: "aws:x".into(),
                    ..input()
                },
                "partition",
            ),
        ] {
            let e = deployer_policy(&edit).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
