//! `zoa policy --deployer` against moto with IAM enforcement on: an IAM user holding only
//! the deployer policy deploys a release (one instance), destroys it, deploys it as a
//! fleet, rolls the fleet out to a second release and destroys that, with the real `zoa`
//! commands; then, with each statement removed in turn, the command that needs it fails,
//! and its error names the call AWS (here moto) refused.
//!
//! What moto 5.2.5 enforces (read from its `moto/core/authorization.py` and
//! `moto/iam/access_control.py`, and seen here): once `INITIAL_NO_AUTH_ACTION_COUNT`
//! requests were served (`Moto::set_iam_enforcement`), every request's SigV4 signature is
//! checked against the caller's access key, and its action (`service:Operation`) against
//! the user's inline and attached policies (Allow, Deny, `*` in action names).
//! `sts:GetCallerIdentity` is always allowed (as on AWS). What it does not enforce:
//! resources (every request is checked against `*`, except IAM calls naming an existing
//! role, checked against the role's ARN), conditions (no request carries condition keys,
//! so `StringEquals` holds vacuously and other operators are skipped), and the
//! authorizations AWS makes on the side of a call (`ec2:CreateTags` for tags on create,
//! `iam:PassRole` for an instance profile, `ec2:RunInstances` for an Auto Scaling group's
//! launch template, the service-linked role). So the user gets the policy with every
//! `Resource` widened to `*` ([`moto_view`]), which moto can evaluate: this test shows the
//! *actions* are enough and each statement's actions needed. The resources and
//! conditions are checked by the unit tests of `zoa::aws::deployer` (every authorization
//! AWS makes for zoa's calls, each statement needed for some, other deployments' names
//! and tags, other regions and existing resources denied) and by parliament
//! (`.ci/lint-policies`); the statements that only add resources or side permissions to
//! actions another statement grants ([`NOT_SHOWN_BY_MOTO`]) are shown needed there only.
//!
//! To stay fast, the removals are not full deploys: each statement is removed just before
//! the phase (deploy, rollout, destroy) whose call first needs it, in the order of those
//! calls, so each failing run resumes where the previous one stopped (zoa resumes from its
//! record and what it finds), and the phase then finishes with the whole policy.

use crate::common;

use common::faults::{Fault, FaultProxy};
use common::moto::{Moto, ACCOUNT_ID};
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The IAM user the deployer policy is attached to.
const USER: &str = "zoa-deployer";

/// Statements whose actions other statements grant too (for other resources or with
/// other conditions), or whose permission AWS checks on the side of another call, which
/// moto never does: moto, which checks actions only, cannot tell they are needed. Each is
/// shown needed by `zoa::aws::deployer::tests::each_statement_is_needed` instead.
const NOT_SHOWN_BY_MOTO: [&str; 6] = [
    // ec2:RunInstances on instances and volumes (ZoaOwnEc2 has it for the AMI, group and
    // template it uses, ZoaLaunchNetwork for the subnet and network interface).
    "ZoaLaunchTagged",
    // ec2:CreateTags, authorized inside a create call, never sent on its own.
    "ZoaTagOnCreate",
    // RunInstances and CreateSecurityGroup on the subnet, interface and VPC.
    "ZoaLaunchNetwork",
    // iam:PassRole, checked inside RunInstances and CreateAutoScalingGroup.
    "ZoaPassInstanceRole",
    // kms:CreateAlias and DeleteAlias on the alias (ZoaOwnKey has them on the key).
    "ZoaKeyAliases",
    // iam:CreateServiceLinkedRole, made by Auto Scaling for an account's first group.
    "ZoaAutoScalingServiceRole",
];

struct Lab {
    f: Fixture,
    moto: Moto,
    proxy: FaultProxy,
    pubkey: PathBuf,
    /// The deployer's access key id and secret.
    key: (String, String),
}

/// One zoa command of the scenario.
struct Phase {
    name: &'static str,
    args: Vec<String>,
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// The text between `<tag>` and `</tag>` in moto's XML answer.
fn xml_field(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>")).expect("closed");
    xml[start..end].to_owned()
}

/// The policy as moto can evaluate it: every statement on `*` (see the module comment).
fn moto_view(policy: &Value) -> Value {
    let mut p = policy.clone();
    for st in p["Statement"].as_array_mut().expect("statements") {
        st["Resource"] = Value::from("*");
    }
    p
}

fn without(policy: &Value, sid: &str) -> Value {
    let mut p = policy.clone();
    p["Statement"]
        .as_array_mut()
        .expect("statements")
        .retain(|st| st["Sid"] != sid);
    p
}

fn actions(st: &Value) -> Vec<String> {
    st["Action"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a.as_str().expect("action").to_owned())
        .collect()
}

impl Lab {
    /// Two signed releases of the tiny recipe, moto behind the fault proxy (AWS's EBS block
    /// size; the instance refresh stand-ins, authorized by moto first).
    fn new() -> Lab {
        let f = Fixture::new();
        let o = run(zoa(&f.cache())
            .args(["keygen", "--no-password", "--out"])
            .arg(f.path("ci")));
        assert!(o.status.success(), "{}", stderr(&o));
        let moto = Moto::start();
        let proxy = FaultProxy::start(&moto.endpoint());
        proxy.set_ebs_block_size(524288);
        proxy.answer_instance_refreshes("zoa-tiny");
        proxy.readable_refusals();
        proxy.authorize_answers_upstream("autoscaling:StartInstanceRefresh");
        proxy.authorize_answers_upstream("autoscaling:DescribeInstanceRefreshes");
        // moto's signature check fails on every request without a body or a query string
        // (it hashes the request's headers as its payload: moto/core/responses.py puts
        // the headers in its parameters when it finds none), boto3's as well as zoa's: of
        // zoa's calls only EBS CompleteSnapshot, which moto does not act on anyway (its
        // snapshot is complete from StartSnapshot on). Answered here as AWS answers it;
        // its permission is checked by the unit tests.
        proxy.fail(
            "ebs:CompleteSnapshot",
            1_000_000,
            Fault::Answer(r#"{"Status":"completed"}"#.to_owned()),
        );
        Lab {
            pubkey: f.path("ci.pub"),
            f,
            moto,
            proxy,
            key: (String::new(), String::new()),
        }
    }

    fn release(&self, version: &str) -> PathBuf {
        signed_tiny_release(&self.f, version, "")
    }

    /// zoa with the test's own (dummy) credentials.
    fn zoa_as_admin(&self, args: &[String]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zoa"));
        self.proxy.apply(&mut cmd);
        run(cmd.args(args))
    }

    /// zoa as the deployer user.
    fn zoa_as_deployer(&self, args: &[String]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zoa"));
        self.proxy.apply(&mut cmd);
        cmd.env("AWS_ACCESS_KEY_ID", &self.key.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.key.1);
        run(cmd.args(args))
    }

    /// Creates the deployer user and its access key (enforcement off).
    fn create_deployer(&mut self) {
        let r = self.moto.query("iam", "CreateUser", &[("UserName", USER)]);
        assert_eq!(r.status, 200, "CreateUser: {}", r.text());
        let r = self
            .moto
            .query("iam", "CreateAccessKey", &[("UserName", USER)]);
        assert_eq!(r.status, 200, "CreateAccessKey: {}", r.text());
        let xml = r.text();
        self.key = (
            xml_field(&xml, "AccessKeyId"),
            xml_field(&xml, "SecretAccessKey"),
        );
        self.proxy.resign_for_moto(&self.key.0, &self.key.1);
    }

    /// Makes `policy` the deployer's only policy (enforcement is paused meanwhile).
    fn attach(&self, policy: &Value) {
        self.moto.set_iam_enforcement(false);
        let text = policy.to_string();
        let r = self.moto.query(
            "iam",
            "PutUserPolicy",
            &[
                ("UserName", USER),
                ("PolicyName", "zoa-deployer"),
                ("PolicyDocument", &text),
            ],
        );
        assert_eq!(r.status, 200, "PutUserPolicy: {}", r.text());
        self.moto.set_iam_enforcement(true);
    }
}

#[test]
fn the_deployer_policy_is_enough_and_each_statement_is_needed() {
    let started = std::time::Instant::now();
    let mut lab = Lab::new();
    let (v1, v2) = (lab.release("1"), lab.release("2"));
    let pubkey = s(&lab.pubkey);

    // The policy as `zoa policy --deployer` prints it (the account from the credentials),
    // for a private deployment exposed through PrivateLink (the scenario uses both).
    let o = lab.zoa_as_admin(&[
        "policy".into(),
        s(&v1),
        "--pubkey".into(),
        pubkey.clone(),
        "--deployer".into(),
        "--expose".into(),
        "privatelink".into(),
    ]);
    assert!(o.status.success(), "zoa policy --deployer: {}", stderr(&o));
    let policy: Value = serde_json::from_slice(&o.stdout).expect("the policy is JSON");
    let statements = policy["Statement"].as_array().expect("statements").clone();
    let role = statements
        .iter()
        .find(|st| st["Sid"] == "ZoaInstanceRole")
        .expect("the role's statement");
    assert!(
        role["Resource"]
            .as_array()
            .unwrap()
            .contains(&Value::from(format!(
                "arn:aws:iam::{ACCOUNT_ID}:role/zoa-tiny"
            ))),
        "{role}"
    );

    // With --account-id and --name, no AWS call is made (no credentials here at all).
    let o = run(zoa(&lab.f.cache())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .args(["policy", &s(&v1), "--pubkey", &pubkey, "--deployer"])
        .args(["--account-id", "111122223333", "--name", "other"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let other: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        other
            .to_string()
            .contains("arn:aws:iam::111122223333:role/zoa-other"),
        "{other}"
    );
    let o = run(zoa(&lab.f.cache()).args([
        "policy",
        &s(&v1),
        "--pubkey",
        &pubkey,
        "--deployer",
        "--scp",
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    lab.create_deployer();
    let full = moto_view(&policy);
    lab.attach(&full);
    // Enforcement is on: the dummy credentials every other test uses are refused.
    let o = lab.zoa_as_admin(&[
        "deploy".into(),
        s(&v1),
        "--pubkey".into(),
        pubkey.clone(),
        "--plan".into(),
    ]);
    assert!(!o.status.success(), "moto does not enforce IAM");

    let deploy = |extra: &[&str]| {
        let mut a = vec![
            "deploy".to_owned(),
            s(&v1),
            "--pubkey".into(),
            pubkey.clone(),
        ];
        a.extend(extra.iter().map(|x| (*x).to_owned()));
        a
    };
    let phases = [
        Phase {
            name: "deploy --private",
            args: deploy(&["--private"]),
        },
        Phase {
            name: "destroy",
            args: vec!["destroy".into(), s(&v1)],
        },
        Phase {
            name: "deploy --fleet --private --expose privatelink",
            args: deploy(&[
                "--fleet",
                "--private",
                "--expose",
                "privatelink",
                "--allow-principal",
                "arn:aws:iam::444455556666:root",
                "--port",
                "8443",
            ]),
        },
        Phase {
            name: "rollout",
            args: vec![
                "rollout".into(),
                s(&v2),
                "--from".into(),
                s(&v1),
                "--pubkey".into(),
                pubkey.clone(),
            ],
        },
        Phase {
            name: "destroy after the rollout",
            args: vec!["destroy".into(), s(&v2)],
        },
    ];

    // 1. Enough: every phase succeeds as the deployer. The calls of each are kept.
    let mut seen: Vec<Vec<String>> = Vec::new();
    for p in &phases {
        lab.proxy.reset_counts();
        let t = std::time::Instant::now();
        let o = lab.zoa_as_deployer(&p.args);
        eprintln!("{:<26} as the deployer: {:.1?}", p.name, t.elapsed());
        assert!(
            o.status.success(),
            "{} as the deployer: {}\nmoto: {}",
            p.name,
            stderr(&o),
            lab.moto.log_tail()
        );
        seen.push(lab.proxy.operations());
    }
    let enough = started.elapsed();
    let granted: BTreeSet<String> = statements.iter().flat_map(actions).collect();
    let called: BTreeSet<&String> = seen.iter().flatten().collect();
    for op in &called {
        assert!(
            granted.contains(*op) || *op == "sts:GetCallerIdentity",
            "{op} was called and allowed, but the policy does not name it"
        );
    }

    // Granted but not called in this scenario: permissions AWS checks on the side of a
    // call (moto does not), and calls of other paths. Anything else granted and never
    // needed would be a permission too many.
    let side_or_other_paths: BTreeSet<String> = [
        // Checked on the side of a call: tags on create, the role passed to EC2, Auto
        // Scaling's service-linked role.
        "autoscaling:CreateOrUpdateTags",
        "ec2:CreateTags",
        "iam:CreateServiceLinkedRole",
        "iam:PassRole",
        "iam:TagInstanceProfile",
        "iam:TagRole",
        "kms:TagResource",
        "elasticloadbalancing:AddTags",
        // A single instance behind PrivateLink is registered by zoa; a fleet's Auto
        // Scaling group registers its own.
        "elasticloadbalancing:RegisterTargets",
        // A rule set changed on a rerun (the private deploy's endpoint group authorizes
        // its ingress).
        "ec2:RevokeSecurityGroupIngress",
        // A rollout from a locked key re-seals the secrets under the new key.
        "kms:Encrypt",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let uncalled: BTreeSet<String> = granted
        .iter()
        .filter(|a| !called.contains(a))
        .cloned()
        .collect();
    assert_eq!(uncalled, side_or_other_paths, "granted, never called");

    // 2. Which call first needs each statement: the first call of an action no other
    //    statement grants (moto tells statements apart by action only).
    let mut first_need: Vec<(usize, usize, String, String)> = Vec::new();
    let mut not_shown = Vec::new();
    for st in &statements {
        let sid = st["Sid"].as_str().unwrap().to_owned();
        let others: BTreeSet<String> = statements
            .iter()
            .filter(|o| o["Sid"] != sid.as_str())
            .flat_map(actions)
            .collect();
        let own: BTreeSet<String> = actions(st)
            .into_iter()
            .filter(|a| !others.contains(a))
            .collect();
        let first = seen.iter().enumerate().find_map(|(pi, ops)| {
            ops.iter()
                .position(|op| own.contains(op))
                .map(|i| (pi, i, ops[i].clone()))
        });
        match first {
            Some((pi, i, op)) => first_need.push((pi, i, sid, op)),
            None => not_shown.push(sid),
        }
    }
    assert_eq!(
        not_shown, NOT_SHOWN_BY_MOTO,
        "the statements moto cannot show needed changed: check each in the unit tests"
    );
    first_need.sort();

    // 3. Needed: back to the start (everything was destroyed), each statement is removed
    //    just before the call that first needs it; that run fails there, naming the call.
    let mut shown = Vec::new();
    for (pi, p) in phases.iter().enumerate() {
        for (_, _, sid, op) in first_need.iter().filter(|n| n.0 == pi) {
            lab.attach(&without(&full, sid));
            lab.proxy.reset_counts();
            let o = lab.zoa_as_deployer(&p.args);
            let err = stderr(&o);
            assert!(!o.status.success(), "{} without {sid} succeeded", p.name);
            // The call moto refused last is the one the run stopped at (coldsnap tries a
            // refused block a few times; every refusal is of the same call).
            let refusals = lab.proxy.refusals();
            let (refused, message) = refusals
                .last()
                .unwrap_or_else(|| {
                    panic!(
                        "{} without {sid} failed, but nothing was refused: {err}",
                        p.name
                    )
                })
                .clone();
            let st = statements
                .iter()
                .find(|st| st["Sid"] == sid.as_str())
                .unwrap();
            assert!(
                actions(st).contains(&refused),
                "{} without {sid} failed at {refused}, which {sid} does not grant: {err}",
                p.name
            );
            assert!(
                message.ends_with(&format!("is not authorized to perform: {refused}")),
                "{message}"
            );
            // zoa's error names the refused call: the operation and AWS's refusal, or for
            // the EBS upload (coldsnap's), the part of the upload that failed.
            let named = match refused.as_str() {
                "ebs:StartSnapshot" => "Failed to start snapshot".to_owned(),
                "ebs:PutSnapshotBlock" => "Failed to put".to_owned(),
                "ebs:CompleteSnapshot" => "Failed to complete snapshot".to_owned(),
                _ => format!("{refused} failed: AccessDenied: {message}"),
            };
            assert!(err.contains(&named), "{} without {sid}: {err}", p.name);
            eprintln!(
                "{:<26} without {sid:<20} refused {refused} (first needed by {op})",
                p.name
            );
            shown.push(sid.clone());
            lab.attach(&full);
        }
        let o = lab.zoa_as_deployer(&p.args);
        assert!(o.status.success(), "{} resumed: {}", p.name, stderr(&o));
    }
    assert_eq!(shown.len() + NOT_SHOWN_BY_MOTO.len(), statements.len());
    eprintln!(
        "{} statements: {} shown needed against moto, {} by the unit tests; enough in {:.0?}, all in {:.0?}",
        statements.len(),
        shown.len(),
        NOT_SHOWN_BY_MOTO.len(),
        enough,
        started.elapsed()
    );
}
