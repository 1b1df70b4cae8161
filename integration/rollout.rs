//! `zoa rollout NEW --from OLD` against moto through the fault proxy: a fleet of release 1
//! moves to release 2, and the key policy admits both releases exactly while the
//! instances are replaced, then only the new one.
//!
//! moto does not implement AutoScaling's instance refresh (StartInstanceRefresh and
//! DescribeInstanceRefreshes answer 500 NotImplemented), so the proxy answers those two
//! calls in AWS's documented response shape with a refresh that succeeded. Everything
//! else is moto's. What this cannot prove — that EC2 really replaces the instances — only
//! a real account can (integration/README.md).

mod common;

use common::faults::{Fault, FaultProxy};
use common::moto::Moto;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REFRESH_NS: &str = "http://autoscaling.amazonaws.com/doc/2011-01-01/";

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

    fn release(&self, version: &str) -> PathBuf {
        let recipe = self.f.write(
            &format!("v{version}.toml"),
            // Another version and command line: another UKI, so other PCRs.
            tiny_recipe("")
                .replace("version = \"1\"", &format!("version = \"{version}\""))
                .replace(
                    "console=ttyS0 panic=-1",
                    &format!("console=ttyS0 panic=-1 zoa.release={version}"),
                ),
        );
        let name = format!("rel{version}");
        let o = self.f.build(&recipe, &name);
        assert!(o.status.success(), "build: {}", stderr(&o));
        let dir = self.f.path(&name);
        let o = run(zoa(&self.f.cache())
            .arg("sign")
            .arg(&dir)
            .arg("--key")
            .arg(self.f.path("ci.key")));
        assert!(o.status.success(), "sign: {}", stderr(&o));
        dir
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
    lab.proxy.fail(
        "autoscaling:DescribeInstanceRefreshes",
        1000,
        Fault::Answer(format!(
            "<DescribeInstanceRefreshesResponse xmlns=\"{REFRESH_NS}\"><DescribeInstanceRefreshesResult><InstanceRefreshes><member><InstanceRefreshId>refresh-1</InstanceRefreshId><AutoScalingGroupName>{asg}</AutoScalingGroupName><Status>Successful</Status><PercentageComplete>100</PercentageComplete></member></InstanceRefreshes></DescribeInstanceRefreshesResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeInstanceRefreshesResponse>"
        )),
    );
    lab.proxy.fail(
        "autoscaling:StartInstanceRefresh",
        10,
        Fault::Answer(format!(
            "<StartInstanceRefreshResponse xmlns=\"{REFRESH_NS}\"><StartInstanceRefreshResult><InstanceRefreshId>refresh-1</InstanceRefreshId></StartInstanceRefreshResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></StartInstanceRefreshResponse>"
        )),
    );

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
    let mut ops: Vec<String> = calls
        .iter()
        .map(|c| c.name())
        .filter(|op| !is_read(op))
        .collect();
    ops.dedup();
    let tail: Vec<&str> = ops
        .iter()
        .map(String::as_str)
        .skip_while(|op| *op != "ec2:RegisterImage")
        .collect();
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

fn is_read(op: &str) -> bool {
    let name = op.split(':').nth(1).unwrap_or(op);
    ["Describe", "Get", "List"]
        .iter()
        .any(|p| name.starts_with(p))
        || name == "GetCallerIdentity"
}
