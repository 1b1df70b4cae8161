//! `zoa rollout NEW --from OLD` against moto through the fault proxy: a fleet of release 1
//! moves to release 2, and the key policy admits both releases exactly while the
//! instances are replaced, then only the new one.
//!
//! moto does not implement AutoScaling's instance refresh (StartInstanceRefresh and
//! DescribeInstanceRefreshes answer 500 NotImplemented), so the proxy answers those two
//! calls in AWS's documented response shape with a refresh that succeeded. Everything
//! else is moto's. What this cannot prove — that EC2 really replaces the instances — only
//! a real account can (integration/README.md).

use crate::common;

use common::faults::FaultProxy;
use common::moto::Moto;
use common::planmatch;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Lab {
    f: Fixture,
    moto: Moto,
    proxy: FaultProxy,
    pubkey: PathBuf,
}

impl Lab {
    /// A signing key, moto, and the proxy in front of it with AWS's EBS block size.
    fn new() -> Lab {
        let f = Fixture::new();
        let o = run(zoa(&f.cache())
            .args(["keygen", "--no-password", "--out"])
            .arg(f.path("ci")));
        assert!(o.status.success(), "{}", stderr(&o));
        let moto = Moto::start();
        let proxy = FaultProxy::start(&moto.endpoint());
        proxy.set_ebs_block_size(524288);
        Lab {
            pubkey: f.path("ci.pub"),
            f,
            moto,
            proxy,
        }
    }

    fn zoa(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zoa"));
        self.proxy.apply(&mut cmd);
        cmd.args(args);
        run(&mut cmd)
    }

    /// `zoa rollout NEW --from OLD --pubkey PUB EXTRA`.
    fn rollout(&self, new: &Path, old: &Path, extra: &[&str]) -> Output {
        let base = [
            "rollout",
            s(new),
            "--from",
            s(old),
            "--pubkey",
            s(&self.pubkey),
        ];
        self.zoa(&[&base[..], extra].concat())
    }

    fn release(&self, version: &str) -> PathBuf {
        self.release_with(version, "")
    }

    /// Release `version` of the tiny recipe with `extra` recipe text.
    fn release_with(&self, version: &str, extra: &str) -> PathBuf {
        signed_tiny_release(&self.f, version, extra)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn pcr4(dir: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("measurements.json")).unwrap()).unwrap();
    m["pcrs"]["4"]["sha384"].as_str().unwrap().to_owned()
}

#[test]
fn a_fleet_rolls_forward_with_both_releases_admitted_only_during_the_refresh() {
    let lab = Lab::new();
    let v1 = lab.release("1");
    let v2 = lab.release("2");
    let (old_pcr4, new_pcr4) = (pcr4(&v1), pcr4(&v2));
    assert_ne!(old_pcr4, new_pcr4);

    let o = lab.zoa(&["deploy", s(&v1), "--pubkey", s(&lab.pubkey), "--fleet"]);
    assert!(o.status.success(), "deploy v1: {}", stderr(&o));

    // Stand-ins for the two calls moto lacks (see the module comment).
    let asg = "zoa-tiny";
    lab.proxy.answer_instance_refreshes(asg);

    // --reseal is for locked keys only: refused before any call.
    let plain = lab.f.write("plain", b"k");
    let o = lab.zoa(&[
        "rollout",
        s(&v2),
        "--from",
        s(&v1),
        "--pubkey",
        s(&lab.pubkey),
        "--reseal",
        &format!("api-key={}", s(&plain)),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not locked"), "{}", stderr(&o));

    // The plan changes nothing and lists the rollout's steps.
    lab.moto.start_recording();
    let o = lab.zoa(&[
        "rollout",
        s(&v2),
        "--from",
        s(&v1),
        "--pubkey",
        s(&lab.pubkey),
        "--plan",
        "--json",
    ]);
    assert!(o.status.success(), "plan: {}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let created: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["action"] == "create")
        .map(|st| st["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        created,
        [
            "snapshot",
            "image",
            "admit-both",
            "template-version",
            "instance-refresh",
            "admit-new-only",
            "retire-old"
        ]
    );
    let mutating: Vec<String> = lab
        .moto
        .operations()
        .into_iter()
        .filter(|op| !is_read(op))
        .collect();
    assert!(
        mutating.is_empty(),
        "--plan changed something: {mutating:?}"
    );

    lab.proxy.reset_counts();
    let o = lab.zoa(&[
        "rollout",
        s(&v2),
        "--from",
        s(&v1),
        "--pubkey",
        s(&lab.pubkey),
    ]);
    assert!(o.status.success(), "rollout: {}", stderr(&o));
    // Every call as planned, the proxy's answered StartInstanceRefresh included.
    let bound = planmatch::assert_calls_match_plan(&plan, &lab.proxy.calls());
    assert_plan_ids_are_recorded(&bound, &v2);

    let tail = mutating_calls_from_register_image(&lab);
    assert_eq!(
        tail,
        [
            "ec2:RegisterImage",
            "kms:PutKeyPolicy",
            "ec2:CreateLaunchTemplateVersion",
            "ec2:ModifyLaunchTemplate",
            "kms:PutKeyPolicy",
            "ec2:DeregisterImage",
            "ec2:DeleteSnapshot"
        ],
        "(StartInstanceRefresh is answered by the proxy, so moto does not record it)"
    );
    assert_eq!(lab.proxy.count("autoscaling:StartInstanceRefresh"), 1);
    // Both releases admitted during the refresh, only the new one after it.
    let calls = lab.moto.calls();
    let policies: Vec<String> = calls
        .iter()
        .filter(|c| c.is("kms:PutKeyPolicy"))
        .map(|c| c.param("Policy").unwrap())
        .collect();
    assert_eq!(policies.len(), 2);
    assert!(policies[0].contains(&old_pcr4) && policies[0].contains(&new_pcr4));
    assert!(!policies[1].contains(&old_pcr4) && policies[1].contains(&new_pcr4));
    // The new template version carries the new AMI, and the record moved to v2.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v2.join("deploy/deploy.json")).unwrap()).unwrap();
    let new_image = state["image_id"].as_str().unwrap().to_owned();
    let version = calls
        .iter()
        .find(|c| c.is("ec2:CreateLaunchTemplateVersion"))
        .unwrap();
    assert_eq!(
        version.param("LaunchTemplateData.ImageId").as_deref(),
        Some(new_image.as_str())
    );
    assert_eq!(state["release"]["version"], "2");
    assert!(
        !v1.join("deploy/deploy.json").exists(),
        "the old record stays"
    );
    // The record keeps the digest of the policy in place: the last one written.
    assert_eq!(
        state["key_policy_sha256"].as_str(),
        Some(sha256_hex(policies[1].as_bytes()).as_str()),
        "key_policy_sha256"
    );

    // A deploy of v2 now finds everything in place; destroy removes it all.
    lab.moto.clear_recording();
    let o = lab.zoa(&["deploy", s(&v2), "--pubkey", s(&lab.pubkey), "--fleet"]);
    assert!(o.status.success(), "redeploy: {}", stderr(&o));
    let again: Vec<String> = lab
        .moto
        .operations()
        .into_iter()
        .filter(|op| !is_read(op))
        .collect();
    assert!(
        again.is_empty(),
        "a deploy after the rollout changed {again:?}"
    );
    let o = lab.zoa(&["destroy", s(&v2), "--key-deletion-days", "7"]);
    assert!(o.status.success(), "destroy: {}", stderr(&o));
}

#[test]
fn rollout_refuses_single_instances_and_missing_records() {
    let lab = Lab::new();
    let v1 = lab.release("1");
    let v2 = lab.release("2");
    let o = lab.zoa(&[
        "rollout",
        s(&v2),
        "--from",
        s(&v1),
        "--pubkey",
        s(&lab.pubkey),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no deploy record"), "{}", stderr(&o));
    let o = lab.zoa(&["deploy", s(&v1), "--pubkey", s(&lab.pubkey)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lab.zoa(&[
        "rollout",
        s(&v2),
        "--from",
        s(&v1),
        "--pubkey",
        s(&lab.pubkey),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("Auto Scaling group") && err.contains("--fleet"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// The mutating calls moto recorded from the first RegisterImage on (a rollout's own
/// part), repeats in a row folded into one.
/// The ids the plan could only name (`<image-id>`, `<key-id>`) are the ones recorded.
fn assert_plan_ids_are_recorded(bound: &std::collections::BTreeMap<String, String>, dir: &Path) {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("deploy/deploy.json")).unwrap()).unwrap();
    for (placeholder, field) in [
        ("<image-id>", "image_id"),
        ("<snapshot-id>", "snapshot_id"),
        ("<key-id>", "key_id"),
    ] {
        if let Some(v) = bound.get(placeholder) {
            assert_eq!(Some(v.as_str()), state[field].as_str(), "{placeholder}");
        }
    }
    assert!(bound.contains_key("<image-id>"), "{bound:?}");
}

fn mutating_calls_from_register_image(lab: &Lab) -> Vec<String> {
    let mut ops: Vec<String> = lab
        .moto
        .calls()
        .iter()
        .map(|c| c.name())
        .filter(|op| !is_read(op))
        .skip_while(|op| op != "ec2:RegisterImage")
        .collect();
    ops.dedup();
    ops
}

fn is_read(op: &str) -> bool {
    let name = op.split(':').nth(1).unwrap_or(op);
    ["Describe", "Get", "List"]
        .iter()
        .any(|p| name.starts_with(p))
        || name == "GetCallerIdentity"
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fleet deployed with --lock-policy and a sealed secret moves to release 2: its key can
/// never admit release 2, so release 2 gets a new locked key, the secret is re-sealed
/// under it from its plaintext (which --reseal must give, checked before any call), the
/// role may use both keys only during the refresh, the new template version carries the
/// new envelope, and the old key is scheduled for deletion.
#[test]
fn a_locked_key_is_replaced_and_the_secrets_are_resealed() {
    let lab = Lab::new();
    let v1 = lab.release("1");
    let v2 = lab.release("2");
    let (old_pcr4, new_pcr4) = (pcr4(&v1), pcr4(&v2));
    let locked = [
        "--fleet",
        "--lock-policy",
        "--i-understand-this-is-permanent",
    ];
    let deploy = |dir: &Path, extra: &[&str]| {
        let o = lab.zoa(
            &[
                &["deploy", s(dir), "--pubkey", s(&lab.pubkey)],
                &locked[..],
                extra,
            ]
            .concat(),
        );
        assert!(o.status.success(), "deploy {extra:?}: {}", stderr(&o));
    };
    deploy(&v1, &[]);
    lab.proxy.answer_instance_refreshes("zoa-tiny");
    let plain = lab.f.write("api-key.txt", b"the api key");
    let sealed = lab.f.path("api-key.sealed.json");
    let o = lab.zoa(&[
        "seal",
        "--key",
        s(&v1),
        "--name",
        "api-key",
        "--in",
        s(&plain),
        "--out",
        s(&sealed),
    ]);
    assert!(o.status.success(), "seal: {}", stderr(&o));
    deploy(&v1, &["--secret", &format!("api-key={}", s(&sealed))]);
    let old = json_file(&v1.join("deploy/deploy.json"));
    let old_key_id = old["key_id"].as_str().unwrap().to_owned();
    let old_key_arn = old["key_arn"].as_str().unwrap().to_owned();
    assert_eq!(old["key_locked"], true);
    assert!(old["secrets"]["api-key"].is_string(), "{old:#}");

    let rollout = |extra: &[&str]| {
        lab.zoa(
            &[
                &[
                    "rollout",
                    s(&v2),
                    "--from",
                    s(&v1),
                    "--pubkey",
                    s(&lab.pubkey),
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    // Without the plaintext: refused, naming the secret, before any call.
    lab.moto.start_recording();
    lab.moto.clear_recording();
    let o = rollout(&[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("is locked") && err.contains("--reseal NAME=FILE for api-key"),
        "{err}"
    );
    assert!(
        lab.moto.operations().is_empty(),
        "{:?}",
        lab.moto.operations()
    );

    let reseal = format!("api-key={}", s(&plain));
    let args = ["--reseal", reseal.as_str(), "--key-deletion-days", "7"];
    let o = rollout(&[&args[..], &["--plan", "--json"]].concat());
    assert!(o.status.success(), "plan: {}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let first_warning = plan["warnings"][0].as_str().unwrap();
    assert!(
        first_warning.starts_with("key alias/zoa/tiny is locked: a new key alias/zoa/tiny-")
            && first_warning.contains("is created; secrets api-key are re-sealed")
            && first_warning.contains("scheduled for deletion in 7 days"),
        "{first_warning}"
    );
    let created: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["action"] == "create")
        .map(|st| st["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        created,
        [
            "snapshot",
            "image",
            "kms-key",
            "kms-alias",
            "reseal",
            "role-admits-both",
            "template-version",
            "instance-refresh",
            "role-admits-new-only",
            "retire-old-key",
            "retire-old"
        ]
    );
    let mutating: Vec<String> = lab
        .moto
        .operations()
        .into_iter()
        .filter(|op| !is_read(op))
        .collect();
    assert!(
        mutating.is_empty(),
        "--plan changed something: {mutating:?}"
    );

    lab.moto.clear_recording();
    lab.proxy.reset_counts();
    let o = rollout(&args);
    assert!(o.status.success(), "rollout: {}", stderr(&o));
    let bound = planmatch::assert_calls_match_plan(&plan, &lab.proxy.calls());
    assert_plan_ids_are_recorded(&bound, &v2);
    let tail = mutating_calls_from_register_image(&lab);
    assert_eq!(
        tail,
        [
            "ec2:RegisterImage",
            "kms:CreateKey",
            "kms:CreateAlias",
            "kms:Encrypt",
            "iam:PutRolePolicy",
            "ec2:CreateLaunchTemplateVersion",
            "ec2:ModifyLaunchTemplate",
            "iam:PutRolePolicy",
            "kms:DeleteAlias",
            "kms:ScheduleKeyDeletion",
            "ec2:DeregisterImage",
            "ec2:DeleteSnapshot"
        ],
        "(StartInstanceRefresh is answered by the proxy, so moto does not record it)"
    );
    assert!(
        !tail.iter().any(|op| op == "kms:PutKeyPolicy"),
        "a locked key's policy was put: {tail:?}"
    );
    let state = json_file(&v2.join("deploy/deploy.json"));
    let new_key_arn = state["key_arn"].as_str().unwrap().to_owned();
    assert_ne!(new_key_arn, old_key_arn);
    assert_eq!(state["key_locked"], true);
    let new_alias = state["key_alias"].as_str().unwrap().to_owned();
    assert!(first_warning.contains(&format!("a new key {new_alias} is created")));
    // The new key admits release 2 only, and is locked.
    let calls = lab.moto.calls();
    let create_key = calls.iter().find(|c| c.is("kms:CreateKey")).unwrap();
    let policy = create_key.param("Policy").unwrap();
    assert!(policy.contains(&new_pcr4) && !policy.contains(&old_pcr4));
    assert_eq!(
        create_key
            .param("BypassPolicyLockoutSafetyCheck")
            .as_deref(),
        Some("true")
    );
    // The role may use both keys during the refresh, then only the new one.
    let role_policies: Vec<String> = calls
        .iter()
        .filter(|c| c.is("iam:PutRolePolicy"))
        .map(|c| c.param("PolicyDocument").unwrap())
        .collect();
    assert!(role_policies[0].contains(&old_key_arn) && role_policies[0].contains(&new_key_arn));
    assert!(!role_policies[1].contains(&old_key_arn) && role_policies[1].contains(&new_key_arn));
    // The old key goes in 7 days, its alias at once.
    let schedule = calls
        .iter()
        .find(|c| c.is("kms:ScheduleKeyDeletion"))
        .unwrap();
    assert_eq!(
        schedule.param("KeyId").as_deref(),
        Some(old_key_id.as_str())
    );
    assert_eq!(schedule.param("PendingWindowInDays").as_deref(), Some("7"));
    // The new template version: the new image, and the secret re-sealed under the new key,
    // which opens (moto's KMS releases the data key, ignoring attestation) to the plaintext.
    let version = calls
        .iter()
        .find(|c| c.is("ec2:CreateLaunchTemplateVersion"))
        .unwrap();
    assert_eq!(
        version.param("LaunchTemplateData.ImageId").as_deref(),
        state["image_id"].as_str()
    );
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let user_data = b64
        .decode(version.param("LaunchTemplateData.UserData").unwrap())
        .unwrap();
    let data = zoa_init::unseal::UserData::parse(&user_data).unwrap();
    let envelope_json = serde_json::to_vec(&data.secrets["api-key"]).unwrap();
    let envelope = zoa_init::unseal::Envelope::parse(&envelope_json).unwrap();
    assert_eq!(envelope.key_arn(), new_key_arn);
    let r = lab.moto.json(
        "kms",
        "TrentService.Decrypt",
        &serde_json::json!({
            "CiphertextBlob": b64.encode(envelope.encrypted_data_key()),
            "EncryptionContext": envelope.encryption_context(),
        })
        .to_string(),
    );
    assert_eq!(r.status, 200, "Decrypt: {}", r.text());
    let data_key = b64
        .decode(
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["Plaintext"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(envelope.open(&data_key).unwrap().expose(), b"the api key");
    // The record moved, with the new key and the new envelope's digest.
    let kept = v2.join("deploy/sealed/api-key.json");
    assert_eq!(
        json_file(&kept),
        serde_json::from_slice::<serde_json::Value>(&envelope_json).unwrap()
    );
    assert_eq!(
        state["secrets"]["api-key"],
        sha256_hex(&std::fs::read(&kept).unwrap())
    );
    assert_eq!(state["user_data_sha256"], sha256_hex(&user_data));
    assert!(
        !v1.join("deploy").exists(),
        "the old record (and its envelopes) stay"
    );
    let key_state = |id: &str| {
        let r = lab.moto.json(
            "kms",
            "TrentService.DescribeKey",
            &serde_json::json!({ "KeyId": id }).to_string(),
        );
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["KeyMetadata"]["KeyState"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(key_state(&old_key_id), "PendingDeletion");
    assert_eq!(key_state(&new_key_arn), "Enabled");

    // A deploy of v2 finds everything in place; destroy removes it all.
    lab.moto.clear_recording();
    deploy(&v2, &[]);
    let again: Vec<String> = lab
        .moto
        .operations()
        .into_iter()
        .filter(|op| !is_read(op))
        .collect();
    assert!(
        again.is_empty(),
        "a deploy after the rollout changed {again:?}"
    );
    let o = lab.zoa(&["destroy", s(&v2), "--key-deletion-days", "7"]);
    assert!(o.status.success(), "destroy: {}", stderr(&o));
    assert_eq!(key_state(&new_key_arn), "PendingDeletion");
    assert!(!v2.join("deploy").exists());
}

/// Releases 1 and 2 pin the same model: the rollout reuses release 1's model snapshot
/// (found by the deployment and the model's digest), the new AMI maps it, and retiring
/// release 1 deletes its boot snapshot but not the shared model snapshot.
#[test]
fn a_rollout_keeps_the_model_snapshot_both_releases_use() {
    let lab = Lab::new();
    let mut model = vec![7u8; 600 * 1024 + 17];
    model[..4].copy_from_slice(b"GGUF");
    let file = lab.f.write("model.gguf", &model);
    let pin = format!(
        "[init.model]\nsize = {}\nsha256 = \"{}\"\n",
        model.len(),
        sha256_hex(&model)
    );
    let v1 = lab.release_with("1", &pin);
    let v2 = lab.release_with("2", &pin);
    let o = lab.zoa(&[
        "deploy",
        s(&v1),
        "--pubkey",
        s(&lab.pubkey),
        "--fleet",
        "--model",
        s(&file),
    ]);
    assert!(o.status.success(), "deploy v1: {}", stderr(&o));
    let old = json_file(&v1.join("deploy/deploy.json"));
    let model_snapshot = old["model_snapshot_id"].as_str().unwrap().to_owned();
    let old_boot = old["snapshot_id"].as_str().unwrap().to_owned();
    lab.proxy.answer_instance_refreshes("zoa-tiny");

    lab.moto.start_recording();
    let o = lab.zoa(&[
        "rollout",
        s(&v2),
        "--from",
        s(&v1),
        "--pubkey",
        s(&lab.pubkey),
    ]);
    assert!(o.status.success(), "rollout: {}", stderr(&o));
    let calls = lab.moto.calls();
    assert_eq!(
        calls.iter().filter(|c| c.is("ebs:StartSnapshot")).count(),
        1,
        "the model was uploaded again"
    );
    let register = calls.iter().find(|c| c.is("ec2:RegisterImage")).unwrap();
    assert_eq!(
        register
            .param("BlockDeviceMapping.2.Ebs.SnapshotId")
            .as_deref(),
        Some(model_snapshot.as_str())
    );
    let deleted: Vec<String> = calls
        .iter()
        .filter(|c| c.is("ec2:DeleteSnapshot"))
        .map(|c| c.param("SnapshotId").unwrap())
        .collect();
    assert_eq!(deleted, [old_boot], "retiring release 1");
    let state = json_file(&v2.join("deploy/deploy.json"));
    assert_eq!(state["model_snapshot_id"], model_snapshot.as_str());
    assert_eq!(state["model_sha256"], sha256_hex(&model));

    let o = lab.zoa(&["destroy", s(&v2), "--key-deletion-days", "7", "--json"]);
    assert!(o.status.success(), "destroy: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        report["removed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == &serde_json::json!(format!("snapshot {model_snapshot}"))),
        "{report:#}"
    );
}

#[test]
fn a_private_fleet_behind_privatelink_rolls_forward_and_stays_behind_its_endpoints() {
    let lab = Lab::new();
    let v1 = lab.release("1");
    let v2 = lab.release("2");
    lab.moto.start_recording();
    let o = lab.zoa(&[
        "deploy",
        s(&v1),
        "--pubkey",
        s(&lab.pubkey),
        "--fleet",
        "--private",
        "--expose",
        "privatelink",
        "--allow-principal",
        "arn:aws:iam::444455556666:root",
        "--port",
        "8443",
        "--allow-cidr",
        "172.31.16.0/20",
    ]);
    assert!(o.status.success(), "deploy v1: {}", stderr(&o));
    let calls = lab.moto.calls();
    let template = calls
        .iter()
        .find(|c| c.is("ec2:CreateLaunchTemplate"))
        .expect("a launch template");
    // The fleet launches without public addresses.
    assert_eq!(
        template
            .param("LaunchTemplateData.NetworkInterface.1.AssociatePublicIpAddress")
            .as_deref(),
        Some("false")
    );
    assert!(template
        .param("LaunchTemplateData.SecurityGroupId.1")
        .is_none());
    // The group registers its instances with the load balancer's target group.
    let group = calls
        .iter()
        .find(|c| c.is("autoscaling:CreateAutoScalingGroup"))
        .expect("an Auto Scaling group");
    let old = json_file(&v1.join("deploy/deploy.json"));
    assert_eq!(
        group.param("TargetGroupARNs.member.1"),
        old["target_group_arn"].as_str().map(str::to_owned)
    );
    let vpce = old["vpc_endpoint_id"]
        .as_str()
        .expect("an endpoint")
        .to_owned();
    lab.moto.clear_recording();

    lab.proxy.answer_instance_refreshes("zoa-tiny");
    let o = lab.rollout(&v2, &v1, &["--plan", "--json"]);
    assert!(o.status.success(), "plan: {}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kept: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["action"] != "create")
        .map(|st| st["step"].as_str().unwrap())
        .collect();
    // The serving port and its ranges stay as deployed.
    for step in [
        "security-group-rules",
        "kms-endpoint-group",
        "kms-endpoint",
        "kms-endpoint-policy",
        "target-group",
        "load-balancer",
        "listener",
        "endpoint-service",
        "endpoint-service-principals",
    ] {
        assert!(kept.contains(&step), "{step} not kept: {plan:#}");
    }
    lab.proxy.reset_counts();
    let o = lab.rollout(&v2, &v1, &[]);
    assert!(o.status.success(), "rollout: {}", stderr(&o));
    planmatch::assert_calls_match_plan(&plan, &lab.proxy.calls());
    // Every key policy the rollout wrote keeps the endpoint's deny.
    let policies: Vec<serde_json::Value> = lab
        .moto
        .calls()
        .iter()
        .filter(|c| c.is("kms:PutKeyPolicy"))
        .map(|c| serde_json::from_str(&c.param("Policy").unwrap()).unwrap())
        .collect();
    assert_eq!(policies.len(), 2);
    for p in &policies {
        let deny = p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|st| st["Sid"] == "ZoaDenyOutsideVpcEndpoint")
            .unwrap_or_else(|| panic!("no endpoint deny: {p:#}"));
        assert_eq!(deny["Condition"]["StringNotEquals"]["aws:SourceVpce"], vpce);
    }
    let new = json_file(&v2.join("deploy/deploy.json"));
    assert_eq!(new["private"], true);
    assert_eq!(new["vpc_endpoint_id"], old["vpc_endpoint_id"]);
    for field in [
        "endpoint_security_group_id",
        "exposure",
        "allowed_principals",
        "endpoint_service_name",
        "target_group_arn",
    ] {
        assert_eq!(new[field], old[field], "{field}");
    }
    let o = lab.zoa(&["destroy", s(&v2), "--key-deletion-days", "7"]);
    assert!(o.status.success(), "destroy: {}", stderr(&o));
    let destroyed = lab
        .moto
        .calls()
        .iter()
        .any(|c| c.is("ec2:DeleteVpcEndpoints"));
    assert!(destroyed, "the endpoint was not deleted");
    for api in [
        "elasticloadbalancing:DeleteLoadBalancer",
        "ec2:DeleteVpcEndpointServiceConfigurations",
    ] {
        assert!(
            lab.moto.calls().iter().any(|c| c.is(api)),
            "destroy did not call {api}"
        );
    }
}
