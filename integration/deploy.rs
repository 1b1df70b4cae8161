//! `zoa deploy`, `zoa destroy` and `zoa policy` end to end against moto (an AWS emulator),
//! through the fault proxy: the plan is what a deploy does, the attestation settings are
//! sent (moto keeps few of them, so they are read from its recorder), reruns and faults
//! converge without duplicates, destroy leaves nothing, and bad input is refused before
//! the first AWS call.
//!
//! Needs moto_server (`.ci/deps`, then `. .ci/env`) and zoa-init. Every test starts its own
//! moto and proxy; the proxy answers StartSnapshot with AWS's block size (moto says 512,
//! which would make the upload 100k calls).

use crate::common;

use common::faults::{Fault, FaultProxy};
use common::moto::{http, Call, Moto, Recorded, ACCOUNT_ID};
use common::planmatch;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const EXIT_BAD_SIGNATURE: i32 = 10;
const EXIT_ARTIFACT_MISMATCH: i32 = 11;
/// The block size the proxy gives coldsnap (AWS's): moto's own answer is 512.
const EBS_BLOCK_SIZE: usize = 524288;

// ---- a signed release, built once per test binary ----

/// A signed tiny release, in memory: each test writes its own copy.
struct Built {
    /// Every file of the release directory, by name.
    files: Vec<(String, Vec<u8>)>,
    key: Vec<u8>,
    pubkey: Vec<u8>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| build_signed("", None))
}

/// The tiny release with `extra` recipe text, signed with the key of `same_key` or a
/// fresh one.
fn build_signed(extra: &str, same_key: Option<&Built>) -> Built {
    let f = Fixture::new();
    let recipe = f.write("recipe.toml", tiny_recipe(extra));
    let o = f.build(&recipe, "rel");
    assert!(o.status.success(), "zoa build: {}", stderr(&o));
    match same_key {
        Some(b) => {
            f.write("ci.key", &b.key);
            f.write("ci.pub", &b.pubkey);
        }
        None => {
            let o = run(zoa(&f.cache())
                .env_remove("ZOA_KEY_PASSWORD")
                .args(["keygen", "--no-password", "--out"])
                .arg(f.path("ci")));
            assert!(o.status.success(), "zoa keygen: {}", stderr(&o));
        }
    }
    sign(&f.cache(), &f.path("rel"), &f.path("ci.key"));
    Built {
        files: std::fs::read_dir(f.path("rel"))
            .expect("list the release")
            .map(|e| {
                let e = e.expect("list the release");
                let bytes = std::fs::read(e.path()).expect("read the release");
                (e.file_name().to_string_lossy().into_owned(), bytes)
            })
            .collect(),
        key: std::fs::read(f.path("ci.key")).expect("read ci.key"),
        pubkey: std::fs::read(f.path("ci.pub")).expect("read ci.pub"),
    }
}

/// A stand-in model: the GGUF magic, then deterministic bytes, with one all-zero 512 KiB
/// block and a length that is no multiple of 512.
fn model_bytes() -> Vec<u8> {
    let len = 3 * EBS_BLOCK_SIZE + 1000;
    let mut x: u32 = 0x2545_f491;
    let mut m: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    m[..4].copy_from_slice(b"GGUF");
    m[EBS_BLOCK_SIZE..2 * EBS_BLOCK_SIZE].fill(0);
    m
}

/// The tiny release pinning [`model_bytes`] as its model (`[init.model]`).
fn built_with_model() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let m = model_bytes();
        build_signed(
            &format!(
                "[init.model]\nsize = {}\nsha256 = \"{}\"\n",
                m.len(),
                sha256_hex(&m)
            ),
            Some(built()),
        )
    })
}

fn sign(cache: &Path, dir: &Path, key: &Path) {
    let o = run(zoa(cache)
        .env_remove("ZOA_KEY_PASSWORD")
        .arg("sign")
        .arg(dir)
        .arg("--key")
        .arg(key));
    assert!(o.status.success(), "zoa sign: {}", stderr(&o));
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

// ---- one moto, one proxy, one release directory ----

struct Lab {
    f: Fixture,
    /// The release the lab deploys.
    built: &'static Built,
    /// The release directory (deploy.json goes to DIR/deploy/).
    dir: PathBuf,
    pubkey: PathBuf,
    key: PathBuf,
    moto: Moto,
    proxy: FaultProxy,
}

impl Lab {
    fn new() -> Lab {
        Lab::with(built())
    }

    /// A lab deploying the release `b`.
    fn with(b: &'static Built) -> Lab {
        let f = Fixture::new();
        let pubkey = f.write("ci.pub", &b.pubkey);
        let key = f.write("ci.key", &b.key);
        let moto = Moto::start();
        let proxy = FaultProxy::start(&moto.endpoint());
        proxy.set_ebs_block_size(EBS_BLOCK_SIZE as u64);
        let lab = Lab {
            built: b,
            dir: f.path("rel"),
            pubkey,
            key,
            f,
            moto,
            proxy,
        };
        lab.release_copy("rel");
        lab
    }

    /// A copy of the signed release at `name` in the fixture.
    fn release_copy(&self, name: &str) -> PathBuf {
        self.copy_of(self.built, name)
    }

    /// A copy of the signed release `b` at `name` in the fixture.
    fn copy_of(&self, b: &Built, name: &str) -> PathBuf {
        for (file, bytes) in &b.files {
            self.f.write(&format!("{name}/{file}"), bytes);
        }
        self.f.path(name)
    }

    /// `zoa` pointed at the proxy, with dummy credentials.
    fn zoa(&self) -> Command {
        let mut c = zoa(&self.f.cache());
        c.env_remove("ZOA_KEY_PASSWORD");
        self.proxy.apply(&mut c);
        c
    }

    fn deploy_dir(&self, dir: &Path, extra: &[&str]) -> Output {
        run(self
            .zoa()
            .arg("deploy")
            .arg(dir)
            .arg("--pubkey")
            .arg(&self.pubkey)
            .args(extra))
    }

    fn deploy(&self, extra: &[&str]) -> Output {
        self.deploy_dir(&self.dir, extra)
    }

    /// `zoa deploy --json EXTRA`, which must succeed; its JSON output.
    fn deploy_ok(&self, extra: &[&str]) -> Value {
        let o = self.deploy(&[&["--json"], extra].concat());
        assert!(
            o.status.success(),
            "zoa deploy {extra:?} failed: {}",
            stderr(&o)
        );
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "zoa deploy --json printed no JSON ({e}): {}",
                String::from_utf8_lossy(&o.stdout)
            )
        })
    }

    /// `zoa deploy --plan --json EXTRA`, which must succeed; the plan.
    fn plan(&self, extra: &[&str]) -> Value {
        self.deploy_ok(&[&["--plan"], extra].concat())
    }

    /// `zoa seal --key KEY --name NAME EXTRA` of `secret`; the envelope's path.
    fn seal_with(&self, key: &str, name: &str, secret: &[u8], extra: &[&str]) -> PathBuf {
        static SEALED: AtomicUsize = AtomicUsize::new(0);
        let n = SEALED.fetch_add(1, Ordering::Relaxed);
        let input = self.f.write(&format!("plain/{name}-{n}"), secret);
        let out = self.f.path(&format!("{name}-{n}.sealed.json"));
        let o = run(self
            .zoa()
            .args(["seal", "--key", key, "--name", name, "--in"])
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(extra));
        assert!(o.status.success(), "zoa seal {name}: {}", stderr(&o));
        out
    }

    /// `zoa seal --key DIR --name NAME` of `secret` (the deployment's key).
    fn seal(&self, name: &str, secret: &[u8]) -> PathBuf {
        self.seal_with(self.dir.to_str().expect("UTF-8 path"), name, secret, &[])
    }

    /// The blocks of a snapshot as moto's EBS direct API returns them, by index.
    fn snapshot_blocks(&self, snapshot: &str) -> BTreeMap<usize, Vec<u8>> {
        let auth = http::fake_auth("ebs");
        let get = |target: &str| {
            let r = http::request(
                self.moto.addr(),
                "GET",
                target,
                &[("Authorization", auth.as_str())],
                b"",
            )
            .expect("moto answers");
            assert_eq!(r.status, 200, "GET {target}: {}", r.text());
            r
        };
        let list: Value =
            serde_json::from_slice(&get(&format!("/snapshots/{snapshot}/blocks")).body)
                .expect("ListSnapshotBlocks answers JSON");
        list["Blocks"]
            .as_array()
            .expect("Blocks")
            .iter()
            .map(|b| {
                let index = block_index(b);
                let token = b["BlockToken"].as_str().expect("BlockToken");
                let r = get(&format!(
                    "/snapshots/{snapshot}/blocks/{index}?blockToken={token}"
                ));
                (index, r.body)
            })
            .collect()
    }

    fn destroy_dir(&self, dir: &Path) -> Output {
        run(self
            .zoa()
            .arg("destroy")
            .arg(dir)
            .args(["--key-deletion-days", "7", "--json"]))
    }

    fn destroy(&self) -> Output {
        self.destroy_dir(&self.dir)
    }

    /// `zoa destroy DIR --plan --json`, checked to change nothing.
    fn destroy_plan(&self) -> Value {
        let mut o = None;
        let calls = self.record(|| {
            o = Some(run(self.zoa().arg("destroy").arg(&self.dir).args([
                "--key-deletion-days",
                "7",
                "--plan",
                "--json",
            ])))
        });
        let o = o.unwrap();
        assert!(o.status.success(), "zoa destroy --plan: {}", stderr(&o));
        let writes: Vec<String> = calls
            .iter()
            .filter(|c| !is_read_only(c))
            .map(Call::name)
            .collect();
        assert!(
            writes.is_empty(),
            "destroy --plan changed something: {writes:?}"
        );
        serde_json::from_slice(&o.stdout).expect("destroy --plan --json prints JSON")
    }

    fn state(&self) -> Value {
        let p = self.dir.join("deploy/deploy.json");
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        keep_fuzz_seed("sealed", "deploy-json", Some(0), &bytes);
        serde_json::from_slice(&bytes).expect("deploy.json is JSON")
    }

    /// What moto's recorder holds, decoded, oldest first. Read here rather than with
    /// `Moto::calls`: a deploy uploads ~50 MB of blocks, recorded as base64, and decoding
    /// them all costs seconds; block uploads are kept without their bodies. Records that
    /// share a line (moto writes each record and its newline separately, from concurrent
    /// threads) are read one after another.
    fn calls(&self) -> Vec<Call> {
        #[derive(serde::Deserialize)]
        struct Line {
            #[serde(default)]
            headers: BTreeMap<String, Value>,
            method: String,
            url: String,
            #[serde(default)]
            body: Option<String>,
            #[serde(default)]
            body_encoded: bool,
        }
        use base64::Engine as _;
        let r = http::request(
            self.moto.addr(),
            "POST",
            "/moto-api/recorder/download-recording",
            &[],
            b"",
        )
        .expect("moto answers");
        assert_eq!(r.status, 200, "download-recording: {}", r.text());
        serde_json::Deserializer::from_slice(&r.body)
            .into_iter::<Line>()
            .map(|l| {
                let l = l.expect("a recorder record is JSON");
                let rec = Recorded {
                    headers: l
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                        .collect(),
                    body: match l.body {
                        _ if l.method == "PUT" && l.url.contains("/blocks/") => Vec::new(),
                        None => Vec::new(),
                        Some(b) if l.body_encoded => base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .expect("a recorded body is base64"),
                        Some(b) => b.into_bytes(),
                    },
                    method: l.method,
                    url: l.url,
                };
                rec.call()
            })
            .collect()
    }

    /// Records only what `f` makes moto do; the calls.
    fn record(&self, f: impl FnOnce()) -> Vec<Call> {
        self.moto.clear_recording();
        self.moto.start_recording();
        f();
        self.moto.stop_recording();
        let calls = self.calls();
        self.moto.clear_recording();
        calls
    }

    /// The rules of the security group `name` as moto keeps them: (ingress, egress), each
    /// a sorted list of `protocol from-to cidr`.
    fn security_group_rules(&self, name: &str) -> (Vec<String>, Vec<String>) {
        let r = self.moto.query(
            "ec2",
            "DescribeSecurityGroups",
            &[("Filter.1.Name", "group-name"), ("Filter.1.Value.1", name)],
        );
        assert_eq!(r.status, 200, "DescribeSecurityGroups: {}", r.text());
        let text = r.text();
        let section = |tag: &str| -> Vec<String> {
            let open = format!("<{tag}>");
            let Some(start) = text.find(&open) else {
                return Vec::new();
            };
            let body = &text[start + open.len()..];
            let body = &body[..body.find(&format!("</{tag}>")).unwrap_or(body.len())];
            // Each permission has one ipProtocol, then its ports and ranges.
            let mut rules = Vec::new();
            for perm in body.split("<ipProtocol>").skip(1) {
                let proto = &perm[..perm.find('<').unwrap_or(0)];
                let port = |t: &str| xml_values(perm, t).first().cloned().unwrap_or_default();
                let cidrs = xml_values(perm, "cidrIp");
                rules.push(format!(
                    "{proto} {}-{} {}",
                    port("fromPort"),
                    port("toPort"),
                    cidrs.join(",")
                ));
            }
            rules.sort();
            rules
        };
        (section("ipPermissions"), section("ipPermissionsEgress"))
    }

    /// What exists in moto, by kind (unsigned calls straight to moto, no proxy).
    fn inventory(&self) -> Inventory {
        let q = |service: &str, action: &str, params: &[(&str, &str)]| {
            let r = self.moto.query(service, action, params);
            assert_eq!(r.status, 200, "{service}:{action}: {}", r.text());
            r.text()
        };
        let j = |target: &str, body: &str| -> Value {
            let r = self.moto.json("kms", target, body);
            assert_eq!(r.status, 200, "{target}: {}", r.text());
            serde_json::from_slice(&r.body).expect("KMS answers JSON")
        };
        let instances = xml_values(
            &q(
                "ec2",
                "DescribeInstances",
                &[
                    ("Filter.1.Name", "tag-key"),
                    ("Filter.1.Value.1", "zoa:deployment"),
                    ("Filter.2.Name", "instance-state-name"),
                    ("Filter.2.Value.1", "pending"),
                    ("Filter.2.Value.2", "running"),
                    ("Filter.2.Value.3", "shutting-down"),
                    ("Filter.2.Value.4", "stopping"),
                    ("Filter.2.Value.5", "stopped"),
                ],
            ),
            "instanceId",
        );
        let mut keys = BTreeMap::new();
        for k in j("TrentService.ListKeys", "{}")["Keys"]
            .as_array()
            .expect("ListKeys: Keys")
        {
            let id = k["KeyId"].as_str().expect("KeyId").to_string();
            let d = j(
                "TrentService.DescribeKey",
                &serde_json::json!({ "KeyId": id }).to_string(),
            );
            let state = d["KeyMetadata"]["KeyState"]
                .as_str()
                .expect("KeyState")
                .to_string();
            keys.insert(id, state);
        }
        let aliases = j("TrentService.ListAliases", "{}")["Aliases"]
            .as_array()
            .expect("ListAliases: Aliases")
            .iter()
            .filter_map(|a| a["AliasName"].as_str())
            .filter(|a| a.starts_with("alias/zoa/"))
            .map(str::to_string)
            .collect();
        Inventory {
            instances,
            keys,
            aliases,
            roles: xml_values(&q("iam", "ListRoles", &[]), "RoleName"),
            instance_profiles: xml_values(
                &q("iam", "ListInstanceProfiles", &[]),
                "InstanceProfileName",
            ),
            security_groups: xml_values(
                &q(
                    "ec2",
                    "DescribeSecurityGroups",
                    &[
                        ("Filter.1.Name", "group-name"),
                        ("Filter.1.Value.1", "zoa-*"),
                    ],
                ),
                "groupName",
            ),
            images: xml_values(
                &q("ec2", "DescribeImages", &[("Owner.1", "self")]),
                "imageId",
            ),
            snapshots: xml_values(
                &q(
                    "ec2",
                    "DescribeSnapshots",
                    &[
                        ("Owner.1", "self"),
                        ("Filter.1.Name", "tag-key"),
                        ("Filter.1.Value.1", "zoa:deployment"),
                    ],
                ),
                "snapshotId",
            ),
            launch_templates: xml_values(
                &q("ec2", "DescribeLaunchTemplates", &[]),
                "launchTemplateName",
            ),
            auto_scaling_groups: xml_values(
                &q("autoscaling", "DescribeAutoScalingGroups", &[]),
                "AutoScalingGroupName",
            ),
            vpc_endpoints: {
                let xml = q(
                    "ec2",
                    "DescribeVpcEndpoints",
                    &[
                        ("Filter.1.Name", "tag-key"),
                        ("Filter.1.Value.1", "zoa:deployment"),
                    ],
                );
                // One <item> per endpoint: its id, unless its state is deleted.
                xml.split("<vpcEndpointId>")
                    .skip(1)
                    .filter(|item| {
                        !item
                            .split("</item>")
                            .next()
                            .unwrap_or("")
                            .contains("<state>deleted</state>")
                    })
                    .filter_map(|item| item.split('<').next().map(str::to_string))
                    .collect()
            },
            load_balancers: xml_values(
                &q("elasticloadbalancing", "DescribeLoadBalancers", &[]),
                "LoadBalancerName",
            ),
            target_groups: xml_values(
                &q("elasticloadbalancing", "DescribeTargetGroups", &[]),
                "TargetGroupName",
            ),
            endpoint_services: {
                let xml = q("ec2", "DescribeVpcEndpointServiceConfigurations", &[]);
                xml.split("<serviceId>")
                    .skip(1)
                    .filter(|item| {
                        !item
                            .split("</item>")
                            .next()
                            .unwrap_or("")
                            .to_ascii_lowercase()
                            .contains("<servicestate>deleted</servicestate>")
                    })
                    .filter_map(|item| item.split('<').next().map(str::to_string))
                    .collect()
            },
        }
    }
}

/// The resources of every kind zoa creates, as moto lists them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Inventory {
    /// Instances tagged `zoa:deployment` and not terminated.
    instances: Vec<String>,
    /// Every KMS key and its state.
    keys: BTreeMap<String, String>,
    /// Aliases under `alias/zoa/`.
    aliases: Vec<String>,
    roles: Vec<String>,
    instance_profiles: Vec<String>,
    /// Names of the security groups named `zoa-*`.
    security_groups: Vec<String>,
    /// Images owned by the account.
    images: Vec<String>,
    /// Snapshots tagged `zoa:deployment` (not moto's own snapshot for a registered AMI).
    snapshots: Vec<String>,
    launch_templates: Vec<String>,
    auto_scaling_groups: Vec<String>,
    /// VPC endpoints tagged `zoa:deployment`, not deleted.
    vpc_endpoints: Vec<String>,
    /// Load balancers, target groups and endpoint services (PrivateLink exposure).
    load_balancers: Vec<String>,
    target_groups: Vec<String>,
    endpoint_services: Vec<String>,
}

impl Inventory {
    /// Keys that are not pending deletion.
    fn live_keys(&self) -> Vec<&str> {
        self.keys
            .iter()
            .filter(|(_, s)| *s != "PendingDeletion")
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Nothing of zoa's is left (keys pending deletion are gone as far as KMS goes).
    fn assert_empty(&self, context: &str) {
        let live: Vec<&str> = self.live_keys();
        assert!(
            self.instances.is_empty()
                && live.is_empty()
                && self.aliases.is_empty()
                && self.roles.is_empty()
                && self.instance_profiles.is_empty()
                && self.security_groups.is_empty()
                && self.images.is_empty()
                && self.snapshots.is_empty()
                && self.launch_templates.is_empty()
                && self.auto_scaling_groups.is_empty()
                && self.vpc_endpoints.is_empty()
                && self.load_balancers.is_empty()
                && self.target_groups.is_empty()
                && self.endpoint_services.is_empty(),
            "{context}: resources remain: {self:#?}"
        );
    }

    /// Exactly one of each kind a single-instance deploy makes (keys pending deletion
    /// aside).
    fn assert_one_deploy(&self, context: &str) {
        let counts = [
            ("instances", self.instances.len()),
            ("KMS keys not pending deletion", self.live_keys().len()),
            ("aliases", self.aliases.len()),
            ("roles", self.roles.len()),
            ("instance profiles", self.instance_profiles.len()),
            ("security groups", self.security_groups.len()),
            ("images", self.images.len()),
            ("snapshots", self.snapshots.len()),
        ];
        for (what, n) in counts {
            assert_eq!(n, 1, "{context}: {n} {what}, not exactly one: {self:#?}");
        }
    }
}

/// The text of every `<tag>…</tag>`, in order, each once.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out: Vec<String> = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        let v = rest[..j].to_string();
        if !out.contains(&v) {
            out.push(v);
        }
        rest = &rest[j + close.len()..];
    }
    out
}

/// Reads change nothing: Describe*, Get*, List*, and sts:GetCallerIdentity.
fn is_read_only(call: &Call) -> bool {
    let op = call.operation.as_str();
    !op.is_empty()
        && (op.starts_with("Describe") || op.starts_with("Get") || op.starts_with("List"))
}

/// The mutating operations in order, consecutive block uploads as one.
fn mutating(calls: &[Call]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in calls.iter().filter(|c| !is_read_only(c)) {
        let name = c.name();
        if name == "ebs:PutSnapshotBlock" && out.last() == Some(&name) {
            continue;
        }
        out.push(name);
    }
    out
}

/// The plan's `steps[].calls[].api`, in order.
fn plan_apis(plan: &Value) -> Vec<String> {
    plan["steps"]
        .as_array()
        .expect("plan.steps")
        .iter()
        .flat_map(|s| s["calls"].as_array().expect("step.calls").iter())
        .map(|c| c["api"].as_str().expect("call.api").to_string())
        .collect()
}

/// A block's index in moto's ListSnapshotBlocks answer. moto sometimes stores the index
/// PutSnapshotBlock carried in its path as the path's text (its request parsing is shared
/// between threads, and parallel uploads race on it), so both a number and a numeric
/// string are taken.
fn block_index(b: &Value) -> usize {
    match &b["BlockIndex"] {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or_else(|| panic!("no BlockIndex in {b}"))
}

fn only<'a>(calls: &'a [Call], op: &str) -> &'a Call {
    let found: Vec<&Call> = calls.iter().filter(|c| c.is(op)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {op}, got {}",
        found.len()
    );
    found[0]
}

fn param(call: &Call, name: &str) -> String {
    call.param(name)
        .unwrap_or_else(|| panic!("{} sent no {name}: {:?}", call.name(), call.form))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v:#}"))
}

/// stderr is exactly one line (an error), which is returned.
fn one_error_line(o: &Output, context: &str) -> String {
    let err = stderr(o);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{context}: stderr is not one line:\n{err}"
    );
    err.trim_end().to_string()
}

// ---- the tests ----

/// A release signed for some regions (`zoa sign --regions`) is refused in any other one
/// before a single AWS call, naming the allowed ones; in an allowed region the same
/// deploy goes ahead; `zoa policy --scp` pins an account to them without any call; and
/// signing again without `--regions` warns that the restriction is lifted.
#[test]
fn a_release_signed_for_other_regions_is_refused_before_any_aws_call() {
    let lab = Lab::new();
    let dir = lab.copy_of(lab.built, "eu");
    let sign = |extra: &[&str]| {
        run(lab
            .zoa()
            .arg("sign")
            .arg(&dir)
            .arg("--key")
            .arg(&lab.key)
            .args(extra))
    };
    let o = sign(&["--regions", "eu-west-1, eu-central-1", "--json"]);
    assert!(o.status.success(), "zoa sign --regions: {}", stderr(&o));
    let signed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(signed["regions"], json!(["eu-central-1", "eu-west-1"]));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("release.json")).unwrap()).unwrap();
    assert_eq!(manifest["regions"], json!(["eu-central-1", "eu-west-1"]));
    let o = sign(&["--regions", "eu-west-1,Frankfurt"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("\"Frankfurt\" is not an AWS region name"),
        "{}",
        stderr(&o)
    );

    lab.proxy.reset_counts();
    let o = lab.deploy_dir(&dir, &["--region", "us-east-1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("is signed for deployment in eu-central-1, eu-west-1 only, not in us-east-1"),
        "{err}"
    );
    assert!(err.contains("--region eu-central-1 or eu-west-1"), "{err}");
    assert!(
        lab.proxy.counts().is_empty(),
        "calls made before the refusal: {:?}",
        lab.proxy.counts()
    );
    let plan = lab.deploy_dir(&dir, &["--plan", "--json", "--region", "eu-west-1"]);
    assert!(plan.status.success(), "in eu-west-1: {}", stderr(&plan));

    let policy = |dir: &Path| {
        run(zoa(&lab.f.cache())
            .env_remove("AWS_ENDPOINT_URL")
            .arg("policy")
            .arg(dir)
            .arg("--pubkey")
            .arg(&lab.pubkey)
            .arg("--scp"))
    };
    let o = policy(&dir);
    assert!(o.status.success(), "zoa policy --scp: {}", stderr(&o));
    let scp: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        scp["Statement"][0]["Condition"]["StringNotEquals"]["aws:RequestedRegion"],
        json!(["eu-central-1", "eu-west-1"])
    );
    assert_eq!(scp["Statement"][0]["Effect"], "Deny");
    let o = policy(&lab.dir);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is signed for every region"),
        "{}",
        stderr(&o)
    );

    let o = sign(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("allowed only eu-central-1, eu-west-1; this signature allows every region"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn full_deploy_matches_its_plan_and_sends_the_attestation_settings() {
    let lab = Lab::new();
    let args = ["--allow-cidr", "203.0.113.0/24", "--port", "8080"];

    let mut plan = Value::Null;
    let calls = lab.record(|| plan = lab.plan(&args));
    let writes: Vec<&Call> = calls.iter().filter(|c| !is_read_only(c)).collect();
    assert!(
        writes.is_empty(),
        "--plan made mutating calls: {:?}",
        writes.iter().map(|c| c.name()).collect::<Vec<_>>()
    );
    assert!(
        calls.iter().any(|c| c.is("sts:GetCallerIdentity")),
        "--plan did not look up the account"
    );
    assert!(
        !lab.dir.join("deploy/deploy.json").exists(),
        "--plan wrote a deploy record"
    );
    lab.inventory().assert_empty("after --plan");
    assert!(
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["action"] == "create"),
        "a fresh account plans only creates: {plan:#}"
    );

    let mut outcome = Value::Null;
    let calls = lab.record(|| outcome = lab.deploy_ok(&args));
    // Every mutating call, in the plan's order, with every parameter the plan showed and
    // nothing else; the plan's placeholders turned into the ids the deploy recorded.
    let placeholders = planmatch::assert_calls_match_plan(&plan, &calls);
    assert!(
        calls
            .iter()
            .filter(|c| c.is("ebs:PutSnapshotBlock"))
            .count()
            > 1,
        "the disk went up in one block?"
    );

    // deploy.json lists what was created, and moto has exactly that.
    let state = lab.state();
    let inv = lab.inventory();
    inv.assert_one_deploy("after deploy");
    let snapshot = str_at(&state, "/snapshot_id");
    let image = str_at(&state, "/image_id");
    let key_id = str_at(&state, "/key_id");
    assert_eq!(inv.snapshots, [snapshot], "deploy.json snapshot_id");
    assert_eq!(inv.images, [image], "deploy.json image_id");
    assert_eq!(state["instance_ids"], serde_json::json!(inv.instances));
    assert!(inv.keys.contains_key(key_id), "deploy.json key_id {key_id}");
    assert!(
        str_at(&state, "/key_arn").ends_with(&format!(":key/{key_id}")),
        "key_arn: {state:#}"
    );
    assert_eq!(str_at(&state, "/key_alias"), "alias/zoa/tiny");
    assert_eq!(inv.aliases, ["alias/zoa/tiny"]);
    // The key policy's digest is of the very text CreateKey sent (for audits).
    let create_key = calls
        .iter()
        .find(|c| c.is("kms:CreateKey"))
        .expect("a CreateKey call");
    let sent = create_key
        .param("Policy")
        .expect("CreateKey carries a Policy");
    assert_eq!(
        str_at(&state, "/key_policy_sha256"),
        sha256_hex(sent.as_bytes()),
        "key_policy_sha256"
    );
    assert_eq!(str_at(&state, "/role_name"), "zoa-tiny");
    assert_eq!(inv.roles, ["zoa-tiny"]);
    assert_eq!(str_at(&state, "/instance_profile_name"), "zoa-tiny");
    assert_eq!(str_at(&state, "/role_policy_name"), "zoa-kms-unseal");
    assert!(str_at(&state, "/security_group_id").starts_with("sg-"));
    assert_eq!(inv.security_groups, ["zoa-tiny"]);
    assert_eq!(str_at(&state, "/account_id"), ACCOUNT_ID);
    assert_eq!(outcome["state"], state, "--json prints the deploy record");

    // The snapshot is the one uploaded.
    for put in calls.iter().filter(|c| c.is("ebs:PutSnapshotBlock")) {
        assert_eq!(
            param(put, "SnapshotId"),
            snapshot,
            "a block of another snapshot"
        );
        assert_eq!(param(put, "DataLength"), EBS_BLOCK_SIZE.to_string());
    }

    assert_eq!(
        placeholders.get("<snapshot-id>").map(String::as_str),
        Some(snapshot)
    );
    assert_eq!(
        placeholders.get("<image-id>").map(String::as_str),
        Some(image)
    );
    assert_eq!(
        placeholders.get("<security-group-id>").map(String::as_str),
        Some(str_at(&state, "/security_group_id"))
    );

    // RegisterImage: what moto drops, as sent.
    let register = only(&calls, "ec2:RegisterImage");
    for (k, v) in [
        ("BootMode", "uefi"),
        ("TpmSupport", "v2.0"),
        ("ImdsSupport", "v2.0"),
        ("EnaSupport", "true"),
        ("Architecture", "x86_64"),
        ("VirtualizationType", "hvm"),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snapshot),
    ] {
        assert_eq!(param(register, k), v, "RegisterImage {k}");
    }

    // RunInstances: IMDSv2 only, one hop, the profile, no key pair, a client token.
    let runi = only(&calls, "ec2:RunInstances");
    for (k, v) in [
        ("MetadataOptions.HttpTokens", "required"),
        ("MetadataOptions.HttpPutResponseHopLimit", "1"),
        ("IamInstanceProfile.Name", "zoa-tiny"),
        ("ImageId", image),
        ("SecurityGroupId.1", str_at(&state, "/security_group_id")),
    ] {
        assert_eq!(param(runi, k), v, "RunInstances {k}");
    }
    assert!(
        !runi.form.iter().any(|(k, _)| k.contains("KeyName")),
        "RunInstances sent a key pair: {:?}",
        runi.form
    );
    let token = param(runi, "ClientToken");
    assert!(!token.is_empty(), "RunInstances without a ClientToken");
    // The token depends on the image and security group ids (so a redeploy after destroy
    // gets a new one): the plan made before they existed says so.
    let planned_token = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "instance")
        .map(|s| s["calls"][0]["params"]["ClientToken"].clone())
        .expect("the plan's instance step");
    assert_eq!(
        planned_token, "<derived from the image and security group ids>",
        "the plan's ClientToken"
    );

    // Security group: nothing mentions port 22; the only ingress is tcp/8080 from the CIDR.
    for c in calls
        .iter()
        .filter(|c| c.operation.contains("SecurityGroup"))
    {
        for (k, v) in &c.form {
            assert!(
                !(k.ends_with("Port") && v == "22"),
                "{} opens port 22: {k}={v}",
                c.name()
            );
        }
    }
    let ingress = only(&calls, "ec2:AuthorizeSecurityGroupIngress");
    let mut perms: Vec<(String, String)> = ingress
        .params_with_prefix("IpPermissions.")
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".Description"))
        .collect();
    perms.sort();
    let expect: Vec<(String, String)> = [
        ("IpPermissions.1.FromPort", "8080"),
        ("IpPermissions.1.IpProtocol", "tcp"),
        ("IpPermissions.1.IpRanges.1.CidrIp", "203.0.113.0/24"),
        ("IpPermissions.1.ToPort", "8080"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(perms, expect, "the ingress rule");

    // And moto's group has exactly those rules: egress HTTPS only, no default allow-all.
    assert_eq!(
        lab.security_group_rules("zoa-tiny"),
        (
            vec!["tcp 8080-8080 203.0.113.0/24".to_string()],
            vec!["tcp 443-443 0.0.0.0/0".to_string()]
        ),
        "the security group's (ingress, egress) rules"
    );

    // KMS CreateKey's policy is the one `zoa policy` prints.
    let o = run(lab
        .zoa()
        .arg("policy")
        .arg(&lab.dir)
        .arg("--pubkey")
        .arg(&lab.pubkey)
        .args(["--account-id", ACCOUNT_ID]));
    assert!(o.status.success(), "zoa policy: {}", stderr(&o));
    let docs: Value = serde_json::from_slice(&o.stdout).expect("zoa policy prints JSON");
    let create_key = only(&calls, "kms:CreateKey");
    let sent: Value =
        serde_json::from_str(&param(create_key, "Policy")).expect("CreateKey's Policy is JSON");
    assert_eq!(
        sent, docs["key_policy"],
        "CreateKey's policy is not `zoa policy`'s key_policy"
    );
    assert_eq!(
        param(only(&calls, "kms:CreateAlias"), "AliasName"),
        "alias/zoa/tiny"
    );
    assert_eq!(
        param(only(&calls, "kms:CreateAlias"), "TargetKeyId"),
        key_id
    );
}

#[test]
fn rerun_creates_nothing() {
    let lab = Lab::new();
    // Without --allow-cidr (and without --port): no ingress call at all, and nothing about port 22.
    let first = lab.record(|| {
        lab.deploy_ok(&[]);
    });
    assert!(
        !first
            .iter()
            .any(|c| c.is("ec2:AuthorizeSecurityGroupIngress")),
        "ingress authorised without --allow-cidr"
    );
    for c in first
        .iter()
        .filter(|c| c.operation.contains("SecurityGroup"))
    {
        assert!(
            !c.form.iter().any(|(k, v)| k.ends_with("Port") && v == "22"),
            "{} mentions port 22: {:?}",
            c.name(),
            c.form
        );
    }
    let before = lab.inventory();
    before.assert_one_deploy("after the first deploy");
    assert_eq!(before.keys.len(), 1, "KMS keys in all: {before:#?}");
    let state = lab.state();

    let mut outcome = Value::Null;
    let calls = lab.record(|| outcome = lab.deploy_ok(&[]));
    assert_eq!(
        mutating(&calls),
        Vec::<String>::new(),
        "the rerun made mutating calls"
    );
    assert_eq!(lab.inventory(), before, "the rerun changed what exists");
    assert_eq!(lab.state(), state, "the rerun changed deploy.json");
    for s in outcome["plan"]["steps"].as_array().expect("plan.steps") {
        assert_eq!(s["action"], "keep", "the rerun did not keep {s:#}");
        assert!(
            s["id"].is_string(),
            "a kept step names what it keeps: {s:#}"
        );
    }
}

#[test]
fn destroy_leaves_nothing() {
    let lab = Lab::new();
    lab.deploy_ok(&[]);
    let state = lab.state();
    let key_id = str_at(&state, "/key_id").to_string();
    lab.inventory().assert_one_deploy("after deploy");

    // The plan lists every removal; the destroy sends exactly its calls.
    let plan = lab.destroy_plan();
    assert_eq!(plan["command"], "destroy");
    assert!(
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["action"] == "remove"),
        "{plan:#}"
    );
    lab.inventory().assert_one_deploy("after destroy --plan");
    let mut o = None;
    let calls = lab.record(|| o = Some(lab.destroy()));
    let o = o.unwrap();
    assert!(o.status.success(), "zoa destroy: {}", stderr(&o));
    planmatch::assert_calls_match_plan(&plan, &calls);
    let report: Value = serde_json::from_slice(&o.stdout).expect("destroy --json prints JSON");
    assert_eq!(report["deployment"], "tiny");
    assert_eq!(report["key_deletion"]["key_id"], key_id.as_str());
    assert_eq!(report["key_deletion"]["pending_days"], 7);
    let schedule = only(&calls, "kms:ScheduleKeyDeletion");
    assert_eq!(param(schedule, "PendingWindowInDays"), "7");

    let inv = lab.inventory();
    inv.assert_empty("after destroy");
    assert_eq!(
        inv.keys.get(&key_id).map(String::as_str),
        Some("PendingDeletion"),
        "the key is not pending deletion: {inv:#?}"
    );
    assert!(
        !lab.dir.join("deploy/deploy.json").exists(),
        "deploy.json is still there"
    );
    assert!(
        !lab.dir.join("deploy").exists(),
        "the empty deploy/ directory is still there"
    );

    let again = lab.destroy();
    assert!(!again.status.success(), "a second destroy succeeded");
    let line = one_error_line(&again, "second destroy");
    assert!(line.contains("no deploy record"), "{line}");
}

/// The disk image a deploy of `uki` (a release whose manifest digest is `manifest_sha256`)
/// must upload, made here by zoa's library from the signed bytes: the GPT + ESP disk,
/// seeded with the manifest digest.
fn expected_disk(uki: &[u8], manifest_sha256: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let uki_path = dir.path().join("uki.efi");
    std::fs::write(&uki_path, uki).expect("write uki.efi");
    let mut seed = [0u8; 32];
    hex::decode_to_slice(manifest_sha256, &mut seed).expect("manifest digest");
    let out = dir.path().join("disk.raw");
    let image = zoa::uefi::file::ImageFile::open(&uki_path).expect("open uki.efi");
    zoa::uefi::disk::write_esp_disk(&image, &out, &seed).expect("write the disk image");
    std::fs::read(&out).expect("read the disk image")
}

/// The signed file `name` of the lab's release, as built.
fn signed_file<'a>(b: &'a Built, name: &str) -> &'a [u8] {
    &b.files
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("the release has no {name}"))
        .1
}

/// A snapshot read back through the EBS direct APIs (ListSnapshotBlocks, then
/// GetSnapshotBlock for each listed block; unlisted blocks are zero), `len` bytes long,
/// with each block's SHA-256 by index. Every block's checksum header is the block's.
fn snapshot_image(lab: &Lab, snapshot: &str, len: usize) -> (Vec<u8>, BTreeMap<usize, Vec<u8>>) {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let auth = http::fake_auth("ebs");
    let get = |target: &str| {
        let r = http::request(
            lab.moto.addr(),
            "GET",
            target,
            &[("Authorization", auth.as_str())],
            b"",
        )
        .expect("moto answers");
        assert_eq!(r.status, 200, "GET {target}: {}", r.text());
        r
    };
    let list: Value = serde_json::from_slice(&get(&format!("/snapshots/{snapshot}/blocks")).body)
        .expect("ListSnapshotBlocks answers JSON");
    let blocks = list["Blocks"].as_array().expect("Blocks");
    assert!(!blocks.is_empty(), "no blocks in {snapshot}");
    let mut image = vec![0u8; len];
    let mut digests = BTreeMap::new();
    for b in blocks {
        let index = block_index(b);
        let token = b["BlockToken"].as_str().expect("BlockToken");
        let r = get(&format!(
            "/snapshots/{snapshot}/blocks/{index}?blockToken={token}"
        ));
        let start = index * EBS_BLOCK_SIZE;
        assert!(
            start + r.body.len() <= len,
            "block {index} ({} bytes) ends past the disk ({len} bytes)",
            r.body.len(),
        );
        assert_eq!(r.body.len(), EBS_BLOCK_SIZE, "block {index} length");
        // The checksum coldsnap sent with the block is the block's.
        let sum = Sha256::digest(&r.body);
        assert_eq!(
            r.header("x-amz-Checksum"),
            Some(
                base64::engine::general_purpose::STANDARD
                    .encode(sum)
                    .as_str()
            ),
            "block {index}: the checksum sent is not the data's"
        );
        digests.insert(index, sum.to_vec());
        image[start..start + r.body.len()].copy_from_slice(&r.body);
    }
    (image, digests)
}

/// Asserts that the deploy's snapshot holds exactly the disk image of the signed UKI.
fn assert_snapshot_is_the_verified_disk(lab: &Lab, context: &str) -> BTreeMap<usize, Vec<u8>> {
    let state = lab.state();
    let snapshot = str_at(&state, "/snapshot_id").to_string();
    let manifest_sha256 = str_at(&state, "/release/manifest_sha256").to_string();
    let disk = expected_disk(signed_file(lab.built, "uki.efi"), &manifest_sha256);
    assert_eq!(
        state["disk_sha256"],
        sha256_hex(&disk),
        "{context}: deploy.json disk_sha256 is not the digest of the verified UKI's disk image"
    );
    let (image, digests) = snapshot_image(lab, &snapshot, disk.len());
    assert!(
        image == disk,
        "{context}: the snapshot's blocks (unlisted ones zero) are not the verified UKI's disk image: first difference at byte {:?}",
        image.iter().zip(&disk).position(|(a, b)| a != b)
    );
    digests
}

#[test]
fn ebs_blocks_read_back_equal_the_verified_disk_image() {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let lab = Lab::new();
    let calls = lab.record(|| {
        lab.deploy_ok(&[]);
    });
    let digests = assert_snapshot_is_the_verified_disk(&lab, "deploy");
    assert!(
        !lab.dir.join("disk.raw").exists(),
        "deploy wrote a disk image into the release directory"
    );

    // CompleteSnapshot: the block count and the LINEAR checksum of all blocks.
    let complete = only(&calls, "ebs:CompleteSnapshot");
    assert_eq!(
        param(complete, "ChangedBlocksCount"),
        digests.len().to_string()
    );
    let mut linear = Sha256::new();
    for d in digests.values() {
        linear.update(d);
    }
    assert_eq!(
        param(complete, "Checksum"),
        base64::engine::general_purpose::STANDARD.encode(linear.finalize()),
        "CompleteSnapshot's checksum"
    );
    assert_eq!(param(complete, "ChecksumAggregationMethod"), "LINEAR");
    assert_eq!(param(complete, "ChecksumAlgorithm"), "SHA256");
}

/// A UKI replaced after `zoa deploy` verified the release (at its first AWS call, which
/// comes after verification) must not become the AMI: the snapshot holds the disk image of
/// the UKI that was verified.
#[test]
fn a_uki_replaced_after_verification_is_not_what_deploy_uploads() {
    let lab = Lab::new();
    let uki = lab.dir.join("uki.efi");
    let other = {
        // Another valid UKI of the same size: the signed one with one byte of its
        // .cmdline changed (a real attacker would bring any image they like).
        let mut b = signed_file(lab.built, "uki.efi").to_vec();
        let at = b
            .windows(b"console=".len())
            .position(|w| w == b"console=")
            .expect("the UKI has a command line");
        b[at] = b'C';
        b
    };
    let swapped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (uki, other, swapped) = (uki.clone(), other.clone(), swapped.clone());
        lab.proxy.before("sts:GetCallerIdentity", move || {
            std::fs::write(&uki, &other).expect("replace uki.efi");
            swapped.store(true, Ordering::SeqCst);
        });
    }
    lab.deploy_ok(&[]);
    assert!(swapped.load(Ordering::SeqCst), "the fault point never ran");
    assert_eq!(
        std::fs::read(&uki).unwrap(),
        other,
        "uki.efi was not replaced"
    );
    assert_snapshot_is_the_verified_disk(&lab, "uki.efi replaced after verification");

    // A rerun verifies again, and refuses the replaced file before any AWS call.
    lab.proxy.reset_counts();
    let o = lab.deploy(&[]);
    assert_eq!(
        o.status.code(),
        Some(EXIT_ARTIFACT_MISMATCH),
        "rerun: {}",
        stderr(&o)
    );
    assert!(
        lab.proxy.operations().is_empty(),
        "the rerun called AWS before refusing: {:?}",
        lab.proxy.operations()
    );
}

/// A disk.raw placed in the release directory (before, or while, a deploy runs) is never
/// what is uploaded: the deploy writes its own image of the verified UKI, privately.
#[test]
fn a_disk_raw_in_the_release_directory_is_not_what_deploy_uploads() {
    let lab = Lab::new();
    let disk = lab.dir.join("disk.raw");
    std::fs::write(&disk, vec![0x5a; 3 * EBS_BLOCK_SIZE]).unwrap();
    {
        let disk = disk.clone();
        // Replaced again when the upload starts (after the image was written).
        lab.proxy.before("ebs:StartSnapshot", move || {
            std::fs::write(&disk, vec![0xa5; 4 * EBS_BLOCK_SIZE]).expect("replace disk.raw");
        });
    }
    lab.deploy_ok(&[]);
    assert_snapshot_is_the_verified_disk(&lab, "disk.raw planted and replaced");
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        vec![0xa5; 4 * EBS_BLOCK_SIZE],
        "deploy touched the planted disk.raw"
    );
}

#[test]
fn fleet_mode_uses_a_launch_template_and_an_auto_scaling_group() {
    let lab = Lab::new();
    let plan = lab.plan(&["--count", "2"]);
    let calls = lab.record(|| {
        lab.deploy_ok(&["--count", "2"]);
    });
    let placeholders = planmatch::assert_calls_match_plan(&plan, &calls);
    assert!(
        !calls.iter().any(|c| c.is("ec2:RunInstances")),
        "zoa ran instances itself in fleet mode"
    );
    let state = lab.state();
    let lt = only(&calls, "ec2:CreateLaunchTemplate");
    assert_eq!(
        placeholders.get("<image-id>").map(String::as_str),
        Some(str_at(&state, "/image_id"))
    );
    for (k, v) in [
        ("LaunchTemplateName", "zoa-tiny"),
        ("LaunchTemplateData.MetadataOptions.HttpTokens", "required"),
        (
            "LaunchTemplateData.MetadataOptions.HttpPutResponseHopLimit",
            "1",
        ),
        ("LaunchTemplateData.IamInstanceProfile.Name", "zoa-tiny"),
        ("LaunchTemplateData.ImageId", str_at(&state, "/image_id")),
    ] {
        assert_eq!(param(lt, k), v, "CreateLaunchTemplate {k}");
    }
    assert!(
        !lt.form.iter().any(|(k, _)| k.contains("KeyName")),
        "the launch template has a key pair: {:?}",
        lt.form
    );
    assert!(!param(lt, "ClientToken").is_empty());
    let asg = only(&calls, "autoscaling:CreateAutoScalingGroup");
    for (k, v) in [
        ("AutoScalingGroupName", "zoa-tiny"),
        ("MinSize", "2"),
        ("MaxSize", "2"),
        ("DesiredCapacity", "2"),
        (
            "LaunchTemplate.LaunchTemplateId",
            str_at(&state, "/launch_template_id"),
        ),
    ] {
        assert_eq!(param(asg, k), v, "CreateAutoScalingGroup {k}");
    }
    assert_eq!(str_at(&state, "/auto_scaling_group"), "zoa-tiny");
    let inv = lab.inventory();
    assert_eq!(inv.launch_templates, ["zoa-tiny"], "{inv:#?}");
    assert_eq!(inv.instances.len(), 2, "the group's instances: {inv:#?}");
    assert_eq!(inv.auto_scaling_groups, ["zoa-tiny"], "{inv:#?}");

    let plan = lab.destroy_plan();
    let mut o = None;
    let calls = lab.record(|| o = Some(lab.destroy()));
    let o = o.unwrap();
    assert!(o.status.success(), "zoa destroy: {}", stderr(&o));
    planmatch::assert_calls_match_plan(&plan, &calls);
    let inv = lab.inventory();
    inv.assert_empty("after destroying the fleet");
}

/// Each fault makes deploy fail with one line naming the step, the operation and (for an
/// HTTP error) the request id; the rerun picks up where it stopped. The faults are met in
/// deploy order, so each rerun first completes the step that failed before.
#[test]
fn faults_converge() {
    let lab = Lab::new();
    // Fails every attempt of `op` with `fault`; deploy must fail on it and say so.
    let fail_with = |op: &str, fault: Fault, expect: &[&str], request_id: bool| {
        lab.proxy.fail(op, 10, fault);
        let o = lab.deploy(&[]);
        assert_eq!(o.status.code(), Some(1), "{op}: {}", stderr(&o));
        let line = one_error_line(&o, op);
        for e in expect {
            assert!(line.contains(e), "{op}: {e:?} not in {line:?}");
        }
        let injected = lab.proxy.injected();
        let last = injected.last().expect("a fault was injected");
        assert_eq!(
            line.contains(&last.request_id),
            request_id,
            "{op}: request id {} in {line:?}",
            last.request_id
        );
        // The SDK's standard retries (3 attempts), and no more: zoa does not retry these.
        assert_eq!(lab.proxy.count(op), 3, "{op}: attempts");
        assert_eq!(injected.len(), 3, "{op}: faults injected");
        lab.proxy.clear_rules();
        lab.proxy.reset_counts();
    };

    // (c) Throttling on iam:CreateRole beyond the SDK's retries.
    fail_with(
        "iam:CreateRole",
        Fault::Throttle,
        &["zoa: error: role: ", "iam:CreateRole failed: Throttling"],
        true,
    );
    let inv = lab.inventory();
    assert!(
        inv.roles.is_empty(),
        "a role despite CreateRole failing: {inv:#?}"
    );
    assert_eq!(inv.images.len(), 1, "the steps before the role: {inv:#?}");
    // (a) HTTP 500 on kms:CreateKey, more often than the SDK retries.
    fail_with(
        "kms:CreateKey",
        Fault::InternalError,
        &[
            "zoa: error: kms key: ",
            "kms:CreateKey failed: KMSInternalException",
        ],
        true,
    );
    let inv = lab.inventory();
    assert_eq!(inv.roles, ["zoa-tiny"], "the rerun made the role: {inv:#?}");
    assert!(
        inv.keys.is_empty(),
        "a key despite CreateKey failing: {inv:#?}"
    );
    assert_eq!(
        inv.images.len(),
        1,
        "the rerun made another image: {inv:#?}"
    );
    // (b) The connection dropped on every ec2:RunInstances attempt: no answer, so no id.
    fail_with(
        "ec2:RunInstances",
        Fault::Drop,
        &["zoa: error: instance: ", "ec2:RunInstances failed: "],
        false,
    );
    let inv = lab.inventory();
    assert!(inv.instances.is_empty(), "{inv:#?}");
    assert_eq!(inv.keys.len(), 1, "the rerun made one key: {inv:#?}");
    assert_eq!(inv.security_groups.len(), 1, "{inv:#?}");

    let outcome = lab.deploy_ok(&[]);
    let inv = lab.inventory();
    inv.assert_one_deploy("after the faults and a clean rerun");
    assert_eq!(inv.keys.len(), 1, "KMS keys in all: {inv:#?}");
    assert_eq!(outcome["state"], lab.state());
    let o = lab.destroy();
    assert!(o.status.success(), "zoa destroy: {}", stderr(&o));
    lab.inventory().assert_empty("after destroy");
}

#[test]
fn bad_input_is_refused_before_any_aws_call() {
    let lab = Lab::new();
    let nothing_reached_moto = |what: &str, calls: &[Call]| {
        assert!(
            calls.is_empty(),
            "{what}: requests reached moto: {:?}",
            calls.iter().map(Call::name).collect::<Vec<_>>()
        );
    };

    // A tampered artifact and a bad signature: the verify verdicts, and not one request.
    let tampered = lab.release_copy("tampered");
    flip_byte(&tampered.join("uki.efi"), 5000);
    let badsig = lab.release_copy("badsig");
    let p = badsig.join("release.json.minisig");
    let t = std::fs::read_to_string(&p).unwrap();
    let lines: Vec<&str> = t.lines().collect();
    let mut sig = lines[1].as_bytes().to_vec();
    sig[20] = if sig[20] == b'A' { b'B' } else { b'A' };
    let mut text = format!("{}\n{}\n", lines[0], String::from_utf8(sig).unwrap());
    for l in &lines[2..] {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&p, text).unwrap();
    for (what, dir, code, word) in [
        (
            "tampered uki.efi",
            &tampered,
            EXIT_ARTIFACT_MISMATCH,
            "uki.efi",
        ),
        ("bad signature", &badsig, EXIT_BAD_SIGNATURE, "minisig"),
    ] {
        let mut o = None;
        let calls = lab.record(|| o = Some(lab.deploy_dir(dir, &[])));
        let o = o.unwrap();
        assert_eq!(o.status.code(), Some(code), "{what}: {}", stderr(&o));
        let line = one_error_line(&o, what);
        assert!(line.contains(word), "{what}: {line}");
        nothing_reached_moto(what, &calls);
        assert!(
            lab.proxy.operations().is_empty(),
            "{what}: the proxy saw {:?}",
            lab.proxy.operations()
        );
        assert!(!dir.join("deploy").exists(), "{what}: a deploy record");
    }

    // An instance type without NitroTPM.
    let mut o = None;
    let calls = lab.record(|| o = Some(lab.deploy(&["--instance-type", "t2.micro"])));
    let o = o.unwrap();
    assert_eq!(o.status.code(), Some(1), "t2.micro: {}", stderr(&o));
    let line = one_error_line(&o, "t2.micro");
    assert!(
        line.contains("t2.micro") && line.contains("NitroTPM"),
        "t2.micro: {line}"
    );
    assert_eq!(mutating(&calls), Vec::<String>::new(), "t2.micro");

    // A region that is no region.
    let mut o = None;
    let calls = lab.record(|| o = Some(lab.deploy(&["--region", "nowhere"])));
    let o = o.unwrap();
    assert_eq!(o.status.code(), Some(1), "--region nowhere: {}", stderr(&o));
    let line = one_error_line(&o, "--region nowhere");
    assert!(
        line.contains("\"nowhere\"") && line.contains("region"),
        "--region nowhere: {line}"
    );
    nothing_reached_moto("--region nowhere", &calls);

    // No credentials anywhere.
    let mut o = None;
    let calls = lab.record(|| {
        let mut cmd = lab.zoa();
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_CONFIG_FILE", lab.f.path("no/config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", lab.f.path("no/credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .arg("deploy")
            .arg(&lab.dir)
            .arg("--pubkey")
            .arg(&lab.pubkey);
        o = Some(run(&mut cmd));
    });
    let o = o.unwrap();
    assert_eq!(o.status.code(), Some(1), "no credentials: {}", stderr(&o));
    let line = one_error_line(&o, "no credentials");
    assert!(
        line.contains("no AWS credentials found") && line.contains("AWS_ACCESS_KEY_ID"),
        "no credentials: {line}"
    );
    nothing_reached_moto("no credentials", &calls);

    lab.inventory().assert_empty("after the refusals");
    assert!(
        !lab.dir.join("deploy").exists(),
        "a refused deploy left a record"
    );
}

/// Release A deployed as X owns alias/zoa/X; release B (another UKI, so another PCR4)
/// deployed as X from its own directory (no deploy record) finds the key by its alias and
/// must refuse it rather than reuse a key bound to A, before creating anything.
#[test]
fn an_existing_key_with_another_policy_is_refused() {
    let lab = Lab::new();
    lab.deploy_ok(&["--name", "shared"]);
    let before = lab.inventory();
    before.assert_one_deploy("after deploying A");
    let key_id = str_at(&lab.state(), "/key_id").to_string();

    let recipe = lab.f.write(
        "b.toml",
        tiny_recipe("")
            .replace("version = \"1\"", "version = \"2\"")
            .replace("panic=-1\"", "panic=-1 quiet\""),
    );
    let o = lab.f.build(&recipe, "b");
    assert!(o.status.success(), "zoa build B: {}", stderr(&o));
    let b = lab.f.path("b");
    sign(&lab.f.cache(), &b, &lab.key);
    let pcr4 = |dir: &Path| -> String {
        let m: Value =
            serde_json::from_slice(&std::fs::read(dir.join("release.json")).unwrap()).unwrap();
        str_at(&m, "/measurements/pcrs/4/sha384").to_string()
    };
    assert_ne!(pcr4(&lab.dir), pcr4(&b), "B must boot to another PCR4");

    let mut o = None;
    let calls = lab.record(|| o = Some(lab.deploy_dir(&b, &["--name", "shared"])));
    let o = o.unwrap();
    assert_eq!(o.status.code(), Some(1), "B as shared: {}", stderr(&o));
    let line = one_error_line(&o, "B as shared");
    for word in [key_id.as_str(), "alias/zoa/shared", "another policy"] {
        assert!(line.contains(word), "B as shared: {word:?} not in {line:?}");
    }
    assert_eq!(
        mutating(&calls),
        Vec::<String>::new(),
        "B made mutating calls before the refusal"
    );
    assert_eq!(lab.inventory(), before, "B changed what exists");
    assert!(!b.join("deploy").exists(), "B has a deploy record");
}

/// CreateKey succeeds, CreateAlias fails: the key is recorded in deploy.json but has no
/// alias, and the rerun looks for the key by its alias only.
#[test]
fn a_failed_alias_does_not_leave_a_second_key() {
    let lab = Lab::new();
    lab.proxy.fail("kms:CreateAlias", 10, Fault::InternalError);
    let o = lab.deploy(&[]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "CreateAlias failing: {}",
        stderr(&o)
    );
    let first_key = str_at(&lab.state(), "/key_id").to_string();
    lab.proxy.clear_rules();
    lab.deploy_ok(&[]);
    let inv = lab.inventory();
    assert_eq!(
        inv.keys.keys().collect::<Vec<_>>(),
        [&first_key],
        "the rerun made another key instead of aliasing the recorded one"
    );
    inv.assert_one_deploy("after the rerun");
    let o = lab.destroy();
    assert!(o.status.success(), "zoa destroy: {}", stderr(&o));
    lab.inventory().assert_empty("after destroy");
}

/// CreateSecurityGroup succeeds, RevokeSecurityGroupEgress fails: the group exists with
/// EC2's default allow-all egress, and the rerun keeps the group by its name.
#[test]
fn a_half_made_security_group_gets_its_rules_on_rerun() {
    let lab = Lab::new();
    lab.proxy
        .fail("ec2:RevokeSecurityGroupEgress", 10, Fault::InternalError);
    let o = lab.deploy(&[]);
    assert_eq!(o.status.code(), Some(1), "Revoke failing: {}", stderr(&o));
    lab.proxy.clear_rules();
    lab.deploy_ok(&[]);
    assert_eq!(
        lab.security_group_rules("zoa-tiny"),
        (Vec::new(), vec!["tcp 443-443 0.0.0.0/0".to_string()]),
        "the (ingress, egress) rules after the rerun"
    );
}

/// Deploy, destroy, deploy the same release again: the second RunInstances must not send
/// the first one's ClientToken. EC2 keeps a token for at least 24 hours after the instance
/// terminated and answers a repeat with the original (terminated) instance; moto ignores
/// client tokens, so this checks the token itself.
#[test]
fn redeploy_after_destroy_sends_a_fresh_client_token() {
    let lab = Lab::new();
    let token = |calls: &[Call]| param(only(calls, "ec2:RunInstances"), "ClientToken");
    let first = lab.record(|| {
        lab.deploy_ok(&[]);
    });
    let o = lab.destroy();
    assert!(o.status.success(), "zoa destroy: {}", stderr(&o));
    let second = lab.record(|| {
        lab.deploy_ok(&[]);
    });
    lab.inventory().assert_one_deploy("after the redeploy");
    assert_ne!(
        token(&first),
        token(&second),
        "the redeploy reused the terminated instance's ClientToken"
    );
}

// ---- sealed secrets in user data ----

/// The steps a plan creates (or changes), in order.
fn created_steps(plan: &Value) -> Vec<String> {
    plan["steps"]
        .as_array()
        .expect("plan.steps")
        .iter()
        .filter(|s| s["action"] == "create")
        .map(|s| s["step"].as_str().expect("step").to_string())
        .collect()
}

/// A user data parameter as EC2 was sent it (base64), decoded.
fn user_data_sent(call: &Call, param_name: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(param(call, param_name))
        .expect("UserData is base64")
}

/// Checks user data is zoa-init's format holding exactly these envelope files.
fn assert_user_data_holds(user_data: &[u8], envelopes: &[(&str, &Path)]) {
    keep_fuzz_seed("userdata", "run-instances", Some(0), user_data);
    let data = zoa_init::unseal::UserData::parse(user_data).expect("zoa-init parses it");
    let names: Vec<&str> = envelopes.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        data.secrets.keys().map(String::as_str).collect::<Vec<_>>(),
        names,
        "the secrets in the user data"
    );
    data.envelopes(&names)
        .expect("each envelope under its name");
    for (name, file) in envelopes {
        let want: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        assert_eq!(
            data.secrets[*name], want,
            "secret {name} is not its envelope"
        );
    }
}

/// The flow the key forces: deploy (creates the key), seal, deploy again with --secret.
/// A single instance reads user data at boot only, so it is replaced: a new instance with
/// the user data (tagged with its digest), then the old one terminated. A rerun with the
/// same secrets, or without any, changes nothing.
#[test]
fn secrets_go_into_the_user_data_of_a_replacement_instance() {
    let lab = Lab::new();
    lab.deploy_ok(&[]);
    let old_instance = str_at(&lab.state(), "/instance_ids/0").to_string();
    let a = lab.seal("api-key", b"the api key");
    let b = lab.seal("db", b"the database password");
    let (sa, sb) = (
        format!("api-key={}", a.display()),
        format!("db={}", b.display()),
    );
    let args = ["--secret", sa.as_str(), "--secret", sb.as_str()];

    // The plan names the secrets and the size, never the envelopes.
    let mut text = None;
    let calls = lab.record(|| text = Some(lab.deploy(&[&["--plan"], &args[..]].concat())));
    let text = text.unwrap();
    assert!(text.status.success(), "--plan: {}", stderr(&text));
    assert_eq!(
        mutating(&calls),
        Vec::<String>::new(),
        "--plan changed something"
    );
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let envelope: Value = serde_json::from_slice(&std::fs::read(&a).unwrap()).unwrap();
    assert!(
        !text.contains(str_at(&envelope, "/ciphertext")),
        "the plan shows an envelope:\n{text}"
    );
    let plan = lab.plan(&args);
    assert_eq!(created_steps(&plan), ["instance", "old-instances"]);
    let run_params = &plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "instance")
        .unwrap()["calls"][0]["params"];
    let summary = run_params["UserData"]
        .as_str()
        .expect("UserData in the plan");
    assert!(
        summary.starts_with('<') && summary.ends_with(" bytes: secrets api-key, db>"),
        "{summary}"
    );
    assert!(
        text.contains(summary),
        "the text plan lacks {summary}:\n{text}"
    );

    let calls = lab.record(|| {
        lab.deploy_ok(&args);
    });
    planmatch::assert_calls_match_plan(&plan, &calls);
    assert_eq!(
        mutating(&calls),
        ["ec2:RunInstances", "ec2:TerminateInstances"]
    );
    let runi = only(&calls, "ec2:RunInstances");
    let sent = user_data_sent(runi, "UserData");
    assert_user_data_holds(&sent, &[("api-key", &a), ("db", &b)]);
    assert_eq!(
        summary,
        format!("<{} bytes: secrets api-key, db>", sent.len())
    );
    let tags = runi.params_with_prefix("TagSpecification.1.");
    assert_eq!(param(runi, "TagSpecification.1.ResourceType"), "instance");
    assert!(
        tags.iter()
            .any(|(k, v)| k.ends_with(".Value") && *v == sha256_hex(&sent)),
        "the instance is not tagged with its user data's digest: {tags:?}"
    );
    assert_eq!(
        param(only(&calls, "ec2:TerminateInstances"), "InstanceId.1"),
        old_instance
    );
    let state = lab.state();
    assert_eq!(state["user_data_sha256"], sha256_hex(&sent));
    assert_eq!(
        state["secrets"],
        serde_json::json!({
            "api-key": sha256_hex(&std::fs::read(&a).unwrap()),
            "db": sha256_hex(&std::fs::read(&b).unwrap()),
        })
    );
    let inv = lab.inventory();
    inv.assert_one_deploy("after the secrets");
    assert_ne!(inv.instances, [old_instance], "the old instance is left");

    for (what, extra) in [("the same secrets", &args[..]), ("no --secret", &[][..])] {
        let calls = lab.record(|| {
            lab.deploy_ok(extra);
        });
        assert_eq!(
            mutating(&calls),
            Vec::<String>::new(),
            "a rerun with {what}"
        );
        assert_eq!(
            lab.state(),
            state,
            "a rerun with {what} changed deploy.json"
        );
    }
    let o = lab.destroy();
    assert!(o.status.success(), "zoa destroy: {}", stderr(&o));
    lab.inventory().assert_empty("after destroy");
}

/// A fleet gets new secrets through a launch template version and an instance refresh;
/// the rerun finds the template with them and the refresh recorded, and does nothing.
#[test]
fn a_fleet_gets_secrets_through_a_template_version_and_an_instance_refresh() {
    let lab = Lab::new();
    lab.deploy_ok(&["--fleet"]);
    lab.proxy.answer_instance_refreshes("zoa-tiny");
    let a = lab.seal("api-key", b"the api key");
    let sa = format!("api-key={}", a.display());
    let args = ["--fleet", "--secret", sa.as_str()];
    let plan = lab.plan(&args);
    assert_eq!(created_steps(&plan), ["user-data"]);
    assert_eq!(
        plan_apis(&plan),
        [
            "ec2:CreateLaunchTemplateVersion",
            "ec2:ModifyLaunchTemplate",
            "autoscaling:StartInstanceRefresh"
        ]
    );
    let calls = lab.record(|| {
        lab.deploy_ok(&args);
    });
    // StartInstanceRefresh is the proxy's to answer: moto does not see it.
    assert_eq!(
        mutating(&calls),
        [
            "ec2:CreateLaunchTemplateVersion",
            "ec2:ModifyLaunchTemplate"
        ]
    );
    assert_eq!(lab.proxy.count("autoscaling:StartInstanceRefresh"), 1);
    let mut bound = BTreeMap::new();
    let sent: Vec<&Call> = calls
        .iter()
        .filter(|c| !planmatch::is_read_only(c))
        .collect();
    for ((api, params), call) in planmatch::planned_calls(&plan).iter().zip(sent) {
        planmatch::assert_call_matches(api, params, call, &mut bound);
    }
    let version = only(&calls, "ec2:CreateLaunchTemplateVersion");
    assert_eq!(param(version, "SourceVersion"), "$Latest");
    let sent = user_data_sent(version, "LaunchTemplateData.UserData");
    assert_user_data_holds(&sent, &[("api-key", &a)]);
    let state = lab.state();
    assert_eq!(state["user_data_sha256"], sha256_hex(&sent));
    assert_eq!(
        param(only(&calls, "ec2:ModifyLaunchTemplate"), "LaunchTemplateId"),
        str_at(&state, "/launch_template_id")
    );

    let calls = lab.record(|| {
        lab.deploy_ok(&args);
    });
    assert_eq!(mutating(&calls), Vec::<String>::new(), "the rerun");
    assert_eq!(lab.proxy.count("autoscaling:StartInstanceRefresh"), 1);
    assert_eq!(lab.state(), state);
    let o = lab.destroy();
    assert!(o.status.success(), "zoa destroy: {}", stderr(&o));
    lab.inventory().assert_empty("after destroy");
}

/// Each bad --secret is refused with one line, before a single request: on a first
/// deploy (no key yet), not an envelope, the wrong name, another key, another deployment,
/// a name twice, and --secret with --user-data.
#[test]
fn bad_secrets_are_refused_before_any_aws_call() {
    let lab = Lab::new();
    // An envelope for this deployment under some key, before the deployment has one.
    let r = lab.moto.json("kms", "TrentService.CreateKey", "{}");
    assert_eq!(r.status, 200, "CreateKey: {}", r.text());
    let other_key = serde_json::from_slice::<Value>(&r.body).unwrap()["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let foreign = lab.seal_with(&other_key, "api-key", b"k", &["--deployment", "tiny"]);
    let refused = |args: &[&str], want: &[&str]| {
        lab.proxy.reset_counts();
        let mut o = None;
        let calls = lab.record(|| o = Some(lab.deploy(args)));
        let o = o.unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let line = one_error_line(&o, &format!("{args:?}"));
        for w in want {
            assert!(line.contains(w), "{args:?}: {w:?} not in {line:?}");
        }
        assert!(
            calls.is_empty() && lab.proxy.operations().is_empty(),
            "{args:?}: requests were made: {:?}",
            lab.proxy.operations()
        );
    };
    let secret = |name: &str, file: &Path| format!("{name}={}", file.display());

    refused(
        &["--secret", &secret("api-key", &foreign)],
        &[
            "no deploy record",
            "deploy without --secret first",
            "zoa seal --key",
        ],
    );
    assert!(!lab.dir.join("deploy").exists());

    lab.deploy_ok(&[]);
    let key = str_at(&lab.state(), "/key_arn").to_string();
    let good = lab.seal("api-key", b"k");
    let other_deployment = lab.seal_with(&key, "api-key", b"k", &["--deployment", "other"]);
    let junk = lab.f.write("junk.json", "#!/bin/sh\necho hi\n");
    let before = lab.state();
    refused(
        &["--secret", &secret("api-key", &junk)],
        &["junk.json", "secret api-key", "not a zoa sealed envelope"],
    );
    refused(
        &["--secret", &secret("db", &good)],
        &[
            "secret db",
            "sealed as \"api-key\"",
            "--secret api-key=FILE",
        ],
    );
    refused(
        &["--secret", &secret("api-key", &foreign)],
        &[
            "sealed under key",
            other_key.as_str(),
            "the deployment's key is",
            key.as_str(),
        ],
    );
    refused(
        &["--secret", &secret("api-key", &other_deployment)],
        &["sealed for deployment \"other\", not \"tiny\""],
    );
    refused(
        &[
            "--secret",
            &secret("api-key", &good),
            "--secret",
            &secret("api-key", &good),
        ],
        &["\"api-key\" given twice"],
    );
    refused(
        &[
            "--secret",
            &secret("api-key", &good),
            "--user-data",
            junk.to_str().unwrap(),
        ],
        &["raw user data", "give --secret or --user-data, not both"],
    );
    assert_eq!(lab.state(), before, "a refusal changed deploy.json");
}

// ---- the model as a second volume ----

/// `--model` must be the model the image pins (refused before any AWS call otherwise);
/// it goes up as a second snapshot whose blocks are the file, zero-padded to the block
/// size, and the AMI maps it as /dev/sdb; reruns create nothing; destroy removes both
/// snapshots.
#[test]
fn the_model_goes_up_as_a_second_snapshot_mapped_by_the_ami() {
    let lab = Lab::with(built_with_model());
    let model = model_bytes();
    let file = lab.f.write("model.gguf", &model);
    let wrong = lab.f.write("wrong.gguf", {
        let mut m = model.clone();
        m[100] ^= 1;
        m
    });
    let plain = lab.copy_of(built(), "plain");
    let model_arg = ["--model", file.to_str().unwrap()];
    for (what, dir, args, want) in [
        ("no --model", &lab.dir, &[][..], "pass --model FILE"),
        (
            "another model",
            &lab.dir,
            &["--model", wrong.to_str().unwrap()][..],
            "but the image pins",
        ),
        (
            "an image without one",
            &plain,
            &model_arg[..],
            "pins no model",
        ),
    ] {
        let mut o = None;
        let calls = lab.record(|| o = Some(lab.deploy_dir(dir, args)));
        let o = o.unwrap();
        assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(&o));
        let line = one_error_line(&o, what);
        assert!(line.contains(want), "{what}: {want:?} not in {line:?}");
        assert!(calls.is_empty(), "{what}: requests reached moto");
    }

    let plan = lab.plan(&model_arg);
    assert_eq!(
        created_steps(&plan)[..3],
        ["snapshot", "model-snapshot", "image"]
    );
    let calls = lab.record(|| {
        lab.deploy_ok(&model_arg);
    });
    planmatch::assert_calls_match_plan(&plan, &calls);
    let state = lab.state();
    let snapshot = str_at(&state, "/snapshot_id");
    let model_snapshot = str_at(&state, "/model_snapshot_id");
    assert_ne!(snapshot, model_snapshot);
    assert_eq!(state["model_sha256"], sha256_hex(&model));

    // StartSnapshot of the model: 1 GiB (rounded up), tagged with the model's digest.
    let starts: Vec<&Call> = calls.iter().filter(|c| c.is("ebs:StartSnapshot")).collect();
    assert_eq!(starts.len(), 2, "two uploads");
    let model_start = starts
        .iter()
        .find(|c| {
            c.json_at("/Tags")
                .is_some_and(|t| t.to_string().contains("zoa:model-sha256"))
        })
        .expect("the model's StartSnapshot");
    assert_eq!(
        model_start.json_at("/VolumeSize"),
        Some(&serde_json::json!(1))
    );

    // The blocks read back are the file, the last one zero-padded (coldsnap sends every
    // block, zeros included: an encrypted-by-default snapshot would not read zeros back
    // from an unwritten block).
    let blocks = lab.snapshot_blocks(model_snapshot);
    assert_eq!(blocks.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3]);
    let mut image = vec![0u8; 4 * EBS_BLOCK_SIZE];
    for (index, body) in &blocks {
        assert_eq!(body.len(), EBS_BLOCK_SIZE, "block {index}");
        image[index * EBS_BLOCK_SIZE..(index + 1) * EBS_BLOCK_SIZE].copy_from_slice(body);
    }
    assert!(
        image[..model.len()] == model[..],
        "the snapshot is not the model: first difference at byte {:?}",
        image.iter().zip(&model).position(|(a, b)| a != b)
    );
    assert!(
        image[model.len()..].iter().all(|b| *b == 0),
        "the padding is not zeros"
    );

    // RegisterImage maps both volumes.
    let register = only(&calls, "ec2:RegisterImage");
    for (k, v) in [
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snapshot),
        ("BlockDeviceMapping.2.DeviceName", "/dev/sdb"),
        ("BlockDeviceMapping.2.Ebs.SnapshotId", model_snapshot),
        ("BlockDeviceMapping.2.Ebs.VolumeType", "gp3"),
        ("BlockDeviceMapping.2.Ebs.DeleteOnTermination", "true"),
    ] {
        assert_eq!(param(register, k), v, "RegisterImage {k}");
    }
    let inv = lab.inventory();
    assert_eq!(inv.snapshots.len(), 2, "{inv:#?}");

    for (what, extra) in [("--model", &model_arg[..]), ("no --model", &[][..])] {
        let calls = lab.record(|| {
            lab.deploy_ok(extra);
        });
        assert_eq!(
            mutating(&calls),
            Vec::<String>::new(),
            "a rerun with {what}"
        );
        assert_eq!(lab.inventory(), inv, "a rerun with {what}");
    }
    let o = lab.destroy();
    assert!(o.status.success(), "zoa destroy: {}", stderr(&o));
    lab.inventory().assert_empty("after destroy");
}

// ---- zoa audit: a mixed day of CloudTrail records against a real deploy ----

/// One CloudTrail record (the CloudTrail record contents reference, and the shapes of
/// the KMS, EC2, Systems Manager and EC2 Instance Connect documentation's examples;
/// written here, with the deploy's real identifiers).
fn trail_record(id: &str, minute: u32, source: &str, name: &str, fields: Value) -> Value {
    let mut r = json!({
        "eventVersion": "1.08",
        "eventID": id,
        "eventTime": format!("2026-12-01T10:{minute:02}:00Z"),
        "eventSource": format!("{source}.amazonaws.com"),
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "192.0.2.10",
        "userAgent": "aws-cli/2",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE",
            "arn": format!("arn:aws:iam::{ACCOUNT_ID}:user/operator"), "accountId": ACCOUNT_ID},
        "requestID": format!("req-{id}"),
        "readOnly": false,
        "eventType": "AwsApiCall",
        "recipientAccountId": ACCOUNT_ID,
    });
    for (k, v) in fields.as_object().expect("fields are an object") {
        r[k] = v.clone();
    }
    r
}

/// What the audit should make of a record: a finding (kind, severity), or nothing.
type Expected = Option<(&'static str, &'static str)>;

/// The deploy's identifiers, from its record.
struct Deployed {
    key_arn: String,
    alias: String,
    image: String,
    snapshot: String,
    instance: String,
    pcr4: String,
    pcr12: String,
    policy: String,
}

fn mixed_day(d: &Deployed) -> Vec<(Value, Expected)> {
    let key = |id, minute, name, extra: Value| {
        let mut fields = json!({
            "requestParameters": {"keyId": d.key_arn, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
            "responseElements": null,
            "resources": [{"accountId": ACCOUNT_ID, "type": "AWS::KMS::Key", "ARN": d.key_arn}],
        });
        for (k, v) in extra.as_object().unwrap() {
            fields[k] = v.clone();
        }
        trail_record(id, minute, "kms", name, fields)
    };
    let attested = |pcr4: &str| {
        json!({
            "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::{ACCOUNT_ID}:assumed-role/zoa/i-1")},
            "additionalEventData": {"recipient": {
                "attestationDocumentModuleId": format!("{}-tpm0000000000000000", d.instance),
                "attestationDocumentNitroTPMPCR4": pcr4,
                "attestationDocumentNitroTPMPCR7": "00".repeat(48),
                "attestationDocumentNitroTPMPCR12": d.pcr12,
            }}
        })
    };
    let ec2 = |id, minute, name, params: Value| {
        trail_record(
            id,
            minute,
            "ec2",
            name,
            json!({"requestParameters": params}),
        )
    };
    let unshare = ec2(
        "e17",
        17,
        "ModifySnapshotAttribute",
        json!({"snapshotId": d.snapshot, "attributeType": "CREATE_VOLUME_PERMISSION",
               "createVolumePermission": {"remove": {"items": [{"userId": "444455556666"}]}}}),
    );
    let mut copy = ec2(
        "e18",
        18,
        "CopyImage",
        json!({"sourceRegion": "us-east-1", "sourceImageId": d.image, "name": "copy"}),
    );
    copy["awsRegion"] = json!("eu-west-1");
    vec![
        (key("e01", 1, "Decrypt", attested(&d.pcr4)), None),
        (
            key("e02", 2, "GenerateDataKey", attested(&"ab".repeat(48))),
            Some(("unknown-image", "critical")),
        ),
        (
            key("e03", 3, "Decrypt", json!({})),
            Some(("unattested-key-use", "critical")),
        ),
        (
            key(
                "e04",
                4,
                "Decrypt",
                json!({"errorCode": "AccessDeniedException",
                "errorMessage": "User is not authorized to perform kms:Decrypt"}),
            ),
            Some(("unattested-key-use", "warning")),
        ),
        // Sealing: the sealer may only encrypt, which releases nothing.
        (key("e05", 5, "Encrypt", json!({})), None),
        (
            key(
                "e06",
                6,
                "PutKeyPolicy",
                json!({"requestParameters":
                {"keyId": d.key_arn, "policyName": "default", "policy": d.policy}}),
            ),
            Some(("trust-change", "warning")),
        ),
        (
            key(
                "e07",
                7,
                "PutKeyPolicy",
                json!({"requestParameters":
                {"keyId": d.key_arn, "policyName": "default", "policy": "{\"Statement\":[]}"}}),
            ),
            Some(("trust-change", "critical")),
        ),
        (
            key(
                "e08",
                8,
                "CreateGrant",
                json!({"requestParameters": {"keyId": d.key_arn,
                "granteePrincipal": "arn:aws:iam::444455556666:root", "operations": ["Decrypt"]}}),
            ),
            Some(("trust-change", "critical")),
        ),
        (
            trail_record(
                "e09",
                9,
                "kms",
                "UpdateAlias",
                json!({"requestParameters":
                {"aliasName": d.alias, "targetKeyId": "arn:aws:kms:us-east-1:444455556666:key/other"}}),
            ),
            Some(("trust-change", "critical")),
        ),
        (
            trail_record(
                "e10",
                10,
                "ssm",
                "StartSession",
                json!({"requestParameters": {"target": d.instance}}),
            ),
            Some(("operator-access", "critical")),
        ),
        (
            trail_record(
                "e11",
                11,
                "ec2-instance-connect",
                "SendSSHPublicKey",
                json!({
                "requestParameters": {"instanceId": d.instance, "instanceOSUser": "ec2-user", "sSHPublicKey": "ssh-ed25519 AAAA"},
                "errorCode": "EC2InstanceNotFoundException"}),
            ),
            Some(("operator-access", "warning")),
        ),
        (
            ec2(
                "e12",
                12,
                "GetConsoleOutput",
                json!({"instanceId": d.instance}),
            ),
            Some(("operator-access", "critical")),
        ),
        (
            ec2(
                "e13",
                13,
                "ModifyInstanceAttribute",
                json!({"instanceId": d.instance,
                "userData": "<sensitiveDataRemoved>"}),
            ),
            Some(("operator-access", "critical")),
        ),
        (
            trail_record(
                "e14",
                14,
                "ec2",
                "RunInstances",
                json!({
                "requestParameters": {"instancesSet": {"items": [{"imageId": d.image, "minCount": 1, "maxCount": 1, "keyName": "ops-key"}]}},
                "responseElements": {"instancesSet": {"items": [{"instanceId": "i-0f00000000000000e", "imageId": d.image}]}}}),
            ),
            Some(("operator-access", "critical")),
        ),
        // The instance launched with a key pair is followed from then on.
        (
            ec2(
                "e15",
                15,
                "GetConsoleScreenshot",
                json!({"instanceId": "i-0f00000000000000e"}),
            ),
            Some(("operator-access", "critical")),
        ),
        (
            ec2(
                "e16",
                16,
                "ModifyImageAttribute",
                json!({"imageId": d.image, "attributeType": "launchPermission",
                "launchPermission": {"add": {"items": [{"group": "all"}]}}}),
            ),
            Some(("copy-out", "critical")),
        ),
        // Removing a permission shares nothing.
        (unshare, None),
        (copy.clone(), Some(("copy-out", "critical"))),
        (copy, Some(("region", "critical"))),
        (
            ec2(
                "e19",
                19,
                "CreateSnapshots",
                json!({"instanceSpecification": {"instanceId": d.instance}}),
            ),
            Some(("copy-out", "critical")),
        ),
        // Noise: another key, another instance, a read-only call, and a record outside
        // the window.
        (
            trail_record(
                "e20",
                20,
                "kms",
                "Decrypt",
                json!({"requestParameters":
                {"keyId": "arn:aws:kms:us-east-1:123456789012:key/someone-else"}}),
            ),
            None,
        ),
        (
            ec2(
                "e21",
                21,
                "GetConsoleOutput",
                json!({"instanceId": "i-0ther"}),
            ),
            None,
        ),
        (key("e22", 22, "DescribeKey", json!({})), None),
        (
            {
                let mut late = key("e23", 23, "Decrypt", json!({}));
                late["eventTime"] = json!("2026-12-02T00:00:00Z");
                late
            },
            None,
        ),
    ]
}

/// The (kind, severity, event id) triples a record list should give, sorted as the
/// report sorts them is not assumed: compared as sets.
fn expected_findings(day: &[(Value, Expected)]) -> BTreeSet<(String, String, String)> {
    day.iter()
        .filter_map(|(r, e)| {
            e.map(|(kind, severity)| {
                (
                    kind.to_string(),
                    severity.to_string(),
                    r["eventID"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect()
}

fn reported_findings(report: &Value) -> BTreeSet<(String, String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
                f["event_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A deploy of a release signed for us-east-1 only, with its release log.
fn deployed_for_audit(lab: &Lab) -> (Deployed, PathBuf) {
    let o = run(lab
        .zoa()
        .arg("sign")
        .arg(&lab.dir)
        .arg("--key")
        .arg(&lab.key)
        .args(["--regions", "us-east-1"]));
    assert!(o.status.success(), "zoa sign --regions: {}", stderr(&o));
    lab.deploy_ok(&[]);
    let log = lab.f.path("releases.log");
    let o = run(lab
        .zoa()
        .args(["log", "append"])
        .arg(&log)
        .arg(&lab.dir)
        .arg("--pubkey")
        .arg(&lab.pubkey));
    assert!(o.status.success(), "zoa log append: {}", stderr(&o));
    let state: Value =
        serde_json::from_slice(&std::fs::read(lab.dir.join("deploy/deploy.json")).unwrap())
            .unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(lab.dir.join("release.json")).unwrap()).unwrap();
    let key_arn = str_at(&state, "/key_arn").to_string();
    let r = lab.moto.json(
        "kms",
        "TrentService.GetKeyPolicy",
        &json!({"KeyId": key_arn, "PolicyName": "default"}).to_string(),
    );
    let policy: Value = serde_json::from_slice(&r.body).unwrap();
    let policy = policy["Policy"].as_str().unwrap().to_string();
    assert_eq!(
        sha256_hex(policy.as_bytes()),
        str_at(&state, "/key_policy_sha256")
    );
    let d = Deployed {
        key_arn,
        alias: str_at(&state, "/key_alias").to_string(),
        image: str_at(&state, "/image_id").to_string(),
        snapshot: str_at(&state, "/snapshot_id").to_string(),
        instance: str_at(&state, "/instance_ids/0").to_string(),
        pcr4: str_at(&manifest, "/measurements/pcrs/4/sha384").to_string(),
        pcr12: str_at(&manifest, "/measurements/pcrs/12/sha384").to_string(),
        policy,
    };
    (d, log)
}

impl Lab {
    fn audit(&self, log: &Path, args: &[&str]) -> Output {
        run(self
            .zoa()
            .arg("audit")
            .args(args)
            .arg("--deploy")
            .arg(&self.dir)
            .arg("--log")
            .arg(log)
            .arg("--pubkey")
            .arg(&self.pubkey))
    }
}

#[test]
fn audit_flags_exactly_the_day_s_findings_from_files_and_from_lookup_events() {
    let lab = Lab::new();
    let (d, log) = deployed_for_audit(&lab);
    let day = mixed_day(&d);
    // e18 is listed twice (two findings), and is one record.
    let mut records: Vec<Value> = day.iter().map(|(r, _)| r.clone()).collect();
    records.dedup();

    // As a trail delivers them: gzip, split over two files, a digest file beside them;
    // the same records again as plain JSON (duplicates are read once).
    let base = format!("trail/AWSLogs/{ACCOUNT_ID}/CloudTrail/us-east-1/2026/12/01");
    let (first, second) = records.split_at(10);
    for (name, part) in [("a", first), ("b", second)] {
        lab.f.write(
            &format!("{base}/{ACCOUNT_ID}_CloudTrail_us-east-1_20261201T1000Z_{name}.json.gz"),
            gzip(json!({"Records": part}).to_string().as_bytes()),
        );
    }
    lab.f.write(
        &format!("trail/AWSLogs/{ACCOUNT_ID}/CloudTrail-Digest/us-east-1/2026/12/01/{ACCOUNT_ID}_CloudTrail-Digest_us-east-1_x.json.gz"),
        gzip(b"{\"digestStartTime\": \"2026-12-01T10:00:00Z\"}"),
    );
    let again = lab
        .f
        .write("again.json", json!({"Records": records}).to_string());
    keep_fuzz_seed(
        "cloudtrail",
        "trail",
        None,
        json!({"Records": records}).to_string().as_bytes(),
    );
    let trail = lab.f.path("trail");
    let window = ["--since", "2026-12-01", "--until", "2026-12-02T00:00:00Z"];

    let o = lab.audit(
        &log,
        &[
            &[trail.to_str().unwrap(), again.to_str().unwrap(), "--json"][..],
            &window[..],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(30), "zoa audit: {}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["events"], records.len());
    assert_eq!(reported_findings(&report), expected_findings(&day));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(lab.dir.join("release.json")).unwrap()).unwrap();
    let release = format!(
        "{} {}",
        str_at(&manifest, "/name"),
        str_at(&manifest, "/version")
    );
    let attested: Vec<(String, Value)> = report["attested"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["event_id"].as_str().unwrap().to_string(),
                a["release"].clone(),
            )
        })
        .collect();
    assert_eq!(
        attested,
        [
            ("e01".to_string(), json!(release)),
            ("e02".to_string(), Value::Null)
        ]
    );
    assert_eq!(report["findings"][0]["severity"], "critical");
    let severities: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["severity"].as_str().unwrap())
        .collect();
    assert!(
        severities.windows(2).all(|w| w[0] <= w[1]),
        "critical first: {severities:?}"
    );
    let unattested = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["event_id"] == "e03")
        .unwrap();
    assert_eq!(
        unattested["principal"],
        format!("arn:aws:iam::{ACCOUNT_ID}:user/operator")
    );
    assert_eq!(unattested["event_name"], "Decrypt");
    assert_eq!(unattested["region"], "us-east-1");

    // Human output: a summary, critical findings first.
    let o = lab.audit(
        &log,
        &[&[trail.to_str().unwrap()][..], &window[..]].concat(),
    );
    assert_eq!(o.status.code(), Some(30));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "{} events read; attested key uses: 2 (1 of a signed release)",
            records.len()
        )),
        "{text}"
    );
    let first_finding = text
        .lines()
        .find(|l| l.trim_start().starts_with("CRITICAL") || l.trim_start().starts_with("warning"))
        .unwrap();
    assert!(first_finding.trim_start().starts_with("CRITICAL"), "{text}");

    // A quiet day: only the attested use of the release and sealing.
    let quiet = lab.f.write(
        "quiet.json",
        json!({"Records": records.iter().filter(|r| ["e01", "e05", "e17", "e20", "e22"].contains(&r["eventID"].as_str().unwrap())).collect::<Vec<_>>()}).to_string(),
    );
    let o = lab.audit(&log, &[quiet.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing flagged"));

    // The same day from LookupEvents (moto has no CloudTrail lookup: a stand-in answers
    // from these records, filtered by the request's one attribute and time range, two
    // records a page).
    let served = records.clone();
    lab.proxy.respond(
        common::faults::Matcher::target_contains("LookupEvents"),
        Box::new(move |call: &Call| Some(Fault::Answer(lookup_events_page(&served, call)))),
    );
    lab.proxy.reset_counts();
    let o = lab.audit(&log, &[&["--lookup", "--json"][..], &window[..]].concat());
    assert_eq!(
        o.status.code(),
        Some(30),
        "zoa audit --lookup: {}",
        stderr(&o)
    );
    let looked_up: Value = serde_json::from_slice(&o.stdout).unwrap();
    // e18 happened in eu-west-1: only a lookup there finds it.
    let mut without_eu = expected_findings(&day);
    without_eu.retain(|(_, _, id)| id != "e18");
    assert_eq!(reported_findings(&looked_up), without_eu);
    let lookups = lab
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.operation == "LookupEvents")
        .collect::<Vec<_>>();
    assert!(
        lookups.iter().any(|c| c
            .json
            .as_ref()
            .is_some_and(|j| j.get("NextToken").is_some())),
        "pages followed"
    );
    assert_eq!(
        lab.proxy.count("kms:GetKeyPolicy"),
        1,
        "{:?}",
        lab.proxy.counts()
    );

    let o = lab.audit(
        &log,
        &[
            &["--lookup", "--json", "--lookup-region", "eu-west-1"][..],
            &window[..],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(30), "{}", stderr(&o));
    let both: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(reported_findings(&both), expected_findings(&day));

    // Someone replaces the key policy behind zoa's back: the live check says so.
    let r = lab.moto.json(
        "kms",
        "TrentService.PutKeyPolicy",
        &json!({"KeyId": d.key_arn, "PolicyName": "default", "Policy": d.policy.replace("zoa", "zoA")}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let o = lab.audit(&log, &[&["--lookup", "--json"][..], &window[..]].concat());
    let live: Value = serde_json::from_slice(&o.stdout).unwrap();
    let changed = live["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["event_id"].is_null())
        .unwrap_or_else(|| panic!("no live finding: {live:#}"));
    assert_eq!(changed["kind"], "trust-change");
    assert_eq!(changed["severity"], "critical");
    assert!(changed["detail"]
        .as_str()
        .unwrap()
        .contains("is not the one zoa wrote"));
}

/// Two policy documents alike up to the order of their statements.
fn planmatch_same_policy(a: &Value, b: &Value) -> bool {
    let sorted = |v: &Value| {
        let mut s: Vec<String> = v["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.to_string())
            .collect();
        s.sort();
        s
    };
    sorted(a) == sorted(b)
}

/// One LookupEvents answer from `records`: those matching the request's attribute and
/// time range, two a page, NextToken the index of the next.
fn lookup_events_page(records: &[Value], call: &Call) -> String {
    let req = call.json.clone().unwrap_or_default();
    let attr = &req["LookupAttributes"][0];
    let (key, value) = (
        attr["AttributeKey"].as_str().unwrap_or(""),
        attr["AttributeValue"].as_str().unwrap_or(""),
    );
    let secs = |v: &Value| v.as_f64().map(|f| f as i64);
    let (start, end) = (secs(&req["StartTime"]), secs(&req["EndTime"]));
    let matching: Vec<&Value> = records
        .iter()
        .filter(|r| match key {
            "EventSource" => r["eventSource"] == value,
            "EventName" => r["eventName"] == value,
            _ => false,
        })
        .filter(|r| r["awsRegion"] == call_region(call))
        .filter(|r| {
            let t = jiff_seconds(r["eventTime"].as_str().unwrap());
            start.is_none_or(|s| t >= s) && end.is_none_or(|e| t <= e)
        })
        .collect();
    let from: usize = req["NextToken"].as_str().map_or(0, |t| t.parse().unwrap());
    let page: Vec<Value> = matching
        .iter()
        .skip(from)
        .take(2)
        .map(|r| json!({"EventId": r["eventID"], "EventName": r["eventName"], "CloudTrailEvent": r.to_string()}))
        .collect();
    let mut answer = json!({"Events": page});
    if from + 2 < matching.len() {
        answer["NextToken"] = json!((from + 2).to_string());
    }
    answer.to_string()
}

/// The region a request was signed for (the credential scope).
fn call_region(call: &Call) -> String {
    let auth = call.header("authorization").unwrap_or_default();
    auth.split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or_default()
        .to_string()
}

fn jiff_seconds(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_second()
}

#[test]
fn audit_refuses_bad_input_naming_it() {
    let lab = Lab::new();
    let log = lab.f.path("releases.log");
    let o = run(lab
        .zoa()
        .args(["log", "append"])
        .arg(&log)
        .arg(&lab.dir)
        .arg("--pubkey")
        .arg(&lab.pubkey));
    assert!(o.status.success(), "{}", stderr(&o));
    // Not deployed: no deploy.json.
    let trail = lab.f.write("t.json", "{\"Records\": []}");
    let o = lab.audit(&log, &[trail.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no deploy record"), "{}", stderr(&o));
    // Neither files nor --lookup; both.
    let o = run(lab
        .zoa()
        .args(["audit", "--log"])
        .arg(&log)
        .arg("--pubkey")
        .arg(&lab.pubkey));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(lab
        .zoa()
        .arg("audit")
        .arg(&trail)
        .args(["--lookup", "--log"])
        .arg(&log)
        .arg("--pubkey")
        .arg(&lab.pubkey));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Broken files, named with the record.
    for (name, body, says) in [
        ("bad.json", &b"{\"Records\": [{\"eventName\": \"Decrypt\"}]}"[..], "record 0: missing field"),
        ("bad2.json.gz", &b"plain text"[..], "bad2.json.gz"),
        ("bad3.json", &b"{\"Records\": [{\"eventTime\": \"yesterday\", \"eventSource\": \"kms.amazonaws.com\", \"eventName\": \"Decrypt\"}]}"[..], "is not an RFC 3339 time"),
    ] {
        let path = lab.f.write(name, body);
        let o = run(lab.zoa().arg("audit").arg(&path).arg("--log").arg(&log).arg("--pubkey").arg(&lab.pubkey));
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{name}: {}", stderr(&o));
    }
}

// ---- --private: no public address, the key usable only through its VPC endpoint ----

#[test]
fn a_private_deploy_keeps_off_the_internet_and_its_key_answers_only_through_its_endpoint() {
    let lab = Lab::new();
    let args = [
        "--private",
        "--allow-cidr",
        "172.31.0.0/16",
        "--port",
        "8080",
    ];

    let mut plan = Value::Null;
    let calls = lab.record(|| plan = lab.plan(&args));
    assert!(calls.iter().all(is_read_only), "--plan changed something");
    let steps: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    for s in [
        "kms-endpoint-group",
        "kms-endpoint-group-rules",
        "kms-endpoint",
        "kms-endpoint-policy",
    ] {
        assert!(steps.contains(&s), "plan steps {steps:?} lack {s}");
    }
    // The endpoint comes before the key (whose policy names it), its policy after.
    let at = |s: &str| steps.iter().position(|x| *x == s).unwrap();
    assert!(at("kms-endpoint") < at("kms-key") && at("kms-key") < at("kms-endpoint-policy"));
    let planned = |api: &str| -> Value {
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["calls"].as_array().unwrap().iter())
            .find(|c| c["api"] == api)
            .unwrap_or_else(|| panic!("no {api} in the plan: {plan:#}"))["params"]
            .clone()
    };
    let endpoint = planned("ec2:CreateVpcEndpoint");
    assert_eq!(endpoint["ServiceName"], "com.amazonaws.us-east-1.kms");
    assert_eq!(endpoint["PrivateDnsEnabled"], true);
    assert_eq!(endpoint["VpcEndpointType"], "Interface");
    let key_policy = planned("kms:CreateKey")["Policy"].clone();
    let deny = key_policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "ZoaDenyOutsideVpcEndpoint")
        .unwrap_or_else(|| panic!("no endpoint deny: {key_policy:#}"))
        .clone();
    assert_eq!(
        deny["Condition"]["StringNotEquals"]["aws:SourceVpce"],
        "<vpc-endpoint-id>"
    );
    let launch = planned("ec2:RunInstances");
    assert_eq!(
        launch["NetworkInterfaces"][0]["AssociatePublicIpAddress"],
        false
    );
    assert!(launch.get("SecurityGroupIds").is_none(), "{launch:#}");

    let calls = lab.record(|| {
        lab.deploy_ok(&args);
    });
    planmatch::assert_calls_match_plan(&plan, &calls);
    let state = lab.state();
    assert_eq!(state["private"], true);
    let vpce = str_at(&state, "/vpc_endpoint_id").to_string();
    assert!(vpce.starts_with("vpce-"), "{state:#}");
    let key_arn = str_at(&state, "/key_arn").to_string();

    // The key policy as KMS keeps it denies everything outside this endpoint.
    let r = lab.moto.json(
        "kms",
        "TrentService.GetKeyPolicy",
        &json!({"KeyId": key_arn, "PolicyName": "default"}).to_string(),
    );
    let live: Value = serde_json::from_str(
        serde_json::from_slice::<Value>(&r.body).unwrap()["Policy"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let deny = live["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "ZoaDenyOutsideVpcEndpoint")
        .expect("the endpoint deny in the live policy");
    assert_eq!(deny["Condition"]["StringNotEquals"]["aws:SourceVpce"], vpce);

    // The endpoint admits the instance role on this key only.
    let r = lab.moto.query(
        "ec2",
        "DescribeVpcEndpoints",
        &[("VpcEndpointId.1", vpce.as_str())],
    );
    let text = r.text();
    let doc = xml_values(&text, "policyDocument");
    let doc: Value = serde_json::from_str(&doc[0].replace("&quot;", "\"")).unwrap();
    assert_eq!(doc["Statement"][0]["Resource"], key_arn);
    assert_eq!(
        doc["Statement"][0]["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT_ID}:role/zoa-tiny")
    );
    assert_eq!(xml_values(&text, "privateDnsEnabled"), ["true"]);

    // Egress: HTTPS inside the VPC only; the endpoint's group: HTTPS in from the VPC.
    let vpc_cidr = "172.31.0.0/16";
    let (ingress, egress) = lab.security_group_rules("zoa-tiny");
    assert_eq!(egress, [format!("tcp 443-443 {vpc_cidr}")]);
    assert_eq!(ingress, [format!("tcp 8080-8080 {vpc_cidr}")]);
    let (ingress, egress) = lab.security_group_rules("zoa-tiny-kms-endpoint");
    assert_eq!(ingress, [format!("tcp 443-443 {vpc_cidr}")]);
    assert!(egress.is_empty(), "{egress:?}");

    // A rerun finds everything in place.
    let calls = lab.record(|| {
        lab.deploy_ok(&args);
    });
    assert_eq!(mutating(&calls), Vec::<String>::new(), "a rerun");
    // A rerun without the flag stays private.
    let o = lab.deploy(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lab.state()["private"], true);
    // `zoa policy` renders what the deploy made, endpoint included (for IaC reviews).
    let o = run(lab
        .zoa()
        .arg("policy")
        .arg(&lab.dir)
        .arg("--pubkey")
        .arg(&lab.pubkey));
    assert!(o.status.success(), "zoa policy: {}", stderr(&o));
    let docs: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(docs["vpc_endpoint"], vpce);
    assert_eq!(docs["kms_endpoint_policy"], doc);
    assert!(planmatch_same_policy(&docs["key_policy"], &live));

    let destroy_plan = lab.destroy_plan();
    assert!(
        destroy_plan.to_string().contains("ec2:DeleteVpcEndpoints"),
        "{destroy_plan:#}"
    );
    let o = lab.destroy();
    assert!(o.status.success(), "zoa destroy: {}", stderr(&o));
    lab.inventory().assert_empty("after destroy");
}

// ---- --expose privatelink: the serving port for the allowed principals only ----

#[test]
fn privatelink_exposes_the_serving_port_to_the_allowed_principals_only() {
    let lab = Lab::new();
    let consumer = "arn:aws:iam::444455556666:root";
    let args = [
        "--private",
        "--expose",
        "privatelink",
        "--allow-principal",
        consumer,
        "--port",
        "8443",
    ];

    // Refused before any AWS call: without --private (clap), a wildcard principal, and
    // an exposure nobody may connect to.
    lab.proxy.reset_counts();
    let o = lab.deploy(&["--expose", "privatelink", "--allow-principal", consumer]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = lab.deploy(&[
        "--private",
        "--expose",
        "privatelink",
        "--allow-principal",
        "*",
        "--port",
        "8443",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("never *"), "{}", stderr(&o));
    let o = lab.deploy(&["--private", "--expose", "privatelink", "--port", "8443"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("serves nobody"), "{}", stderr(&o));
    assert!(
        !lab.proxy.counts().keys().any(|op| !op.starts_with("sts:")
            && !op.contains(":Describe")
            && !op.contains(":Get")
            && !op.contains(":List")),
        "a refused deploy changed something: {:?}",
        lab.proxy.counts()
    );

    let plan = lab.plan(&args);
    let steps: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    for s in [
        "target-group",
        "load-balancer",
        "listener",
        "endpoint-service",
        "endpoint-service-principals",
        "targets",
    ] {
        assert!(steps.contains(&s), "plan steps {steps:?} lack {s}");
    }
    let calls = lab.record(|| {
        lab.deploy_ok(&args);
    });
    planmatch::assert_calls_match_plan(&plan, &calls);
    let state = lab.state();
    assert_eq!(state["exposure"], "privatelink");
    assert_eq!(state["allowed_principals"], json!([consumer]));
    let service = str_at(&state, "/endpoint_service_id").to_string();
    assert!(
        str_at(&state, "/endpoint_service_name").starts_with("com.amazonaws.vpce."),
        "{state:#}"
    );
    // Who may connect, as EC2 keeps it.
    let r = lab.moto.query(
        "ec2",
        "DescribeVpcEndpointServicePermissions",
        &[("ServiceId", service.as_str())],
    );
    assert_eq!(
        xml_values(&r.text(), "principal"),
        [consumer],
        "{}",
        r.text()
    );
    // The instance is the load balancer's target, on the serving port.
    let r = lab.moto.query(
        "elasticloadbalancing",
        "DescribeTargetHealth",
        &[("TargetGroupArn", str_at(&state, "/target_group_arn"))],
    );
    let instance = str_at(&state, "/instance_ids/0");
    assert!(r.text().contains(instance), "{}", r.text());
    let (ingress, _) = lab.security_group_rules("zoa-tiny");
    assert_eq!(ingress, ["tcp 8443-8443 172.31.0.0/16"]);

    let calls = lab.record(|| {
        lab.deploy_ok(&args);
    });
    assert_eq!(mutating(&calls), Vec::<String>::new(), "a rerun");
    let destroy_plan = lab.destroy_plan();
    for api in [
        "ec2:DeleteVpcEndpointServiceConfigurations",
        "elasticloadbalancing:DeleteLoadBalancer",
        "elasticloadbalancing:DeleteTargetGroup",
    ] {
        assert!(
            destroy_plan.to_string().contains(api),
            "{api}: {destroy_plan:#}"
        );
    }
    let o = lab.destroy();
    assert!(o.status.success(), "zoa destroy: {}", stderr(&o));
    lab.inventory().assert_empty("after destroy");
}
