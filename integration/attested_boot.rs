//! The sealed image end to end, on this machine: real QEMU boots of the sealed demo image
//! with the real zoa-init, the emulated NitroTPM (`zoa boot --nitrotpm`), and the KMS
//! stand-in that enforces the key policy (`common/kms.rs`).
//!
//! `zoa deploy` against moto creates the key and its policy, `zoa seal` seals the API key
//! and the model's age identity, a second deploy puts them in the instances' user data,
//! and the guest reads that user data from an IMDSv2 stand-in. The image reaches the
//! stand-ins through endpoints in its own measured configuration
//! (`[init.unseal.endpoints]`), never through user data.
//!
//! The first test serves the sealed demo (PCR4 and PCR12 bound), shows an image one byte
//! of configuration away refused, then rolls the fleet to that image: stopped at the
//! instance refresh, the key admits both releases (booted side by side), and after the
//! rollout only the new one. The second boots a Secure Boot release under OVMF's Secure
//! Boot firmware (PCR7 and PCR12 bound) and the same image signed by another db key.
//! Boots that only need KMS's answer run without the model disk: zoa-init then stops at
//! the model, the step after the unseal. The refusals that need no boot (no attestation,
//! a forged or altered document) run host-side in `integration/attested_kms.rs`.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::faults::{Fault, FaultProxy};
use common::iam::Verdict;
use common::imds::{ImdsContent, ImdsStandIn, ACCESS_KEY_ID};
use common::kms::{AttestingKms, Decision, Trust};
use common::moto::Moto;
use common::serve::{agent, chat, wait_healthy};
use common::*;
use zoa::boot::{boot, BootOptions, PowerButton};

const DEPLOYMENT: &str = "sealed";
/// The fleet's Auto Scaling group (`zoa-` + the deployment's name).
const ASG: &str = "zoa-sealed";
const API_KEY: &str = "zoa-attested-boot-test-api-key";

fn sealed_recipe(imds: &str, kms: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("image-recipes/llama-server-sealed.toml");
    let text = std::fs::read_to_string(path)
        .expect("read the sealed recipe")
        .replace(
            "\"../../shared/inputs/",
            &format!("\"{}/", shared_inputs().display()),
        );
    let secrets = "secrets = [{ name = \"api-key\" }, { name = \"model-key\" }]";
    assert!(text.contains(secrets), "the sealed recipe changed shape");
    // The guest reaches the host's 127.0.0.1 as 10.0.2.2 (QEMU's user network).
    text.replace(
        secrets,
        &format!("{secrets}\nendpoints = {{ imds = \"{imds}\", kms = \"{kms}\" }}"),
    )
}

fn model() -> PathBuf {
    let path = std::env::var_os("ZOA_MODEL")
        .map(PathBuf::from)
        .expect("ZOA_MODEL is not set: run .ci/deps, then `. .ci/env`");
    assert!(path.is_file(), "ZOA_MODEL={} is not a file", path.display());
    path
}

/// The model encrypted with the `age` CLI (the reference implementation) to a fresh
/// identity from `age-keygen`: (the file, the identity's text).
fn encrypted_model(f: &Fixture) -> (PathBuf, String) {
    let identity = f.path("model-key.txt");
    let o = run(std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&identity));
    assert!(o.status.success(), "age-keygen: {}", stderr(&o));
    let out = f.path("model.gguf.age");
    let o = run(std::process::Command::new("age")
        .args(["-e", "-i"])
        .arg(&identity)
        .arg("-o")
        .arg(&out)
        .arg(model()));
    assert!(o.status.success(), "age -e: {}", stderr(&o));
    let text = std::fs::read_to_string(&identity).unwrap();
    let secret = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("age-keygen wrote an identity")
        .to_owned();
    (out, secret)
}

struct Release {
    dir: PathBuf,
    pubkey: PathBuf,
}

/// Builds `recipe` into `out` (with `build_args`) and signs it as a release with the
/// fixture's release key (`ci.key`, made by the first call), with `uefi_data` for a
/// Secure Boot release.
fn build_and_sign(
    f: &Fixture,
    recipe: &Path,
    out: &str,
    build_args: &[&str],
    uefi_data: Option<&Path>,
) -> Release {
    let dir = f.path(out);
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(recipe)
        .arg("--out")
        .arg(&dir)
        .args(build_args));
    assert!(o.status.success(), "zoa build {out}: {}", stderr(&o));
    let key = f.path("ci.key");
    if !key.exists() {
        let o = run(zoa(&f.cache())
            .env_remove("ZOA_KEY_PASSWORD")
            .args(["keygen", "--no-password", "--out"])
            .arg(f.path("ci")));
        assert!(o.status.success(), "zoa keygen: {}", stderr(&o));
    }
    let mut sign = zoa(&f.cache());
    sign.env_remove("ZOA_KEY_PASSWORD")
        .arg("sign")
        .arg(&dir)
        .arg("--key")
        .arg(&key);
    if let Some(blob) = uefi_data {
        sign.arg("--uefi-data").arg(blob);
    }
    let o = run(&mut sign);
    assert!(o.status.success(), "zoa sign {out}: {}", stderr(&o));
    Release {
        dir,
        pubkey: f.path("ci.pub"),
    }
}

/// A client verifies the server before it sends a prompt (`zoa attest https://…`): a fresh
/// document over that very connection, chained to the emulator's root, binding the key
/// the front presented, carrying this release's PCRs. Other expectations get the verdicts
/// the contract names.
fn check_attested_tls(f: &Fixture, url: &str, root: &Path, release: &Release) {
    let attest = |extra: &[&str]| {
        run(zoa(&f.cache())
            .args(["attest", url, "--json", "--pubkey"])
            .arg(&release.pubkey)
            .args(extra))
    };
    let root = root.to_str().unwrap();
    let dir = release.dir.to_str().unwrap();
    let started = Instant::now();
    let o = attest(&["--root", root, "--release", dir]);
    eprintln!("zoa attest {url} in {:?}", started.elapsed());
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("zoa attest --json ({e}): {}", stderr(&o)));
    assert!(o.status.success(), "{report:#}\n{}", stderr(&o));
    assert_eq!(report["verdict"], "ok", "{report:#}");
    assert_eq!(
        report["release"]["name"], "llama-server-sealed",
        "{report:#}"
    );
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in ["freshness", "nonce", "key-binding"] {
        assert!(names.contains(&name), "{name} not checked: {names:?}");
    }
    assert!(
        stderr(&o).contains("warning: trusting"),
        "--root warns: {}",
        stderr(&o)
    );
    // Genuine, but not the expected image: 21.
    let other = format!("4={}", "00".repeat(48));
    let o = attest(&["--root", root, "--pcr", &other]);
    assert_eq!(
        o.status.code(),
        Some(21),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The emulator's documents do not chain to the AWS Nitro root: 20.
    let o = attest(&["--release", dir]);
    assert_eq!(
        o.status.code(),
        Some(20),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// An unchanged client (plain HTTP, no idea of attestation) gets a completion through
/// `zoa proxy`, which attested the server first and logged it.
fn chat_through_the_proxy(f: &Fixture, url: &str, root: &Path, release: &Release) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proxy = zoa(&f.cache())
        .args(["proxy", url, "--listen", &listen, "--root"])
        .arg(root)
        .arg("--release")
        .arg(&release.dir)
        .arg("--pubkey")
        .arg(&release.pubkey)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start zoa proxy");
    let mut log = std::io::BufReader::new(proxy.stderr.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut log, &mut line).unwrap();
        assert!(n > 0, "zoa proxy ended: {lines:#?}");
        lines.push(line.clone());
        if line.starts_with("zoa proxy: http://") {
            break;
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("zoa proxy: attested ")
                && l.contains("llama-server-sealed 0.7.0-9")),
        "{lines:#?}"
    );
    let plain: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(300)))
        .http_status_as_error(false)
        .build()
        .into();
    let (status, body) = chat(&plain, &format!("http://{listen}"), Some(API_KEY), 4);
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert_eq!(status, 200, "through zoa proxy: {body}");
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
}

/// The stand-ins a sealed boot talks to (moto behind the fault proxy, the IMDSv2 stand-in,
/// the KMS that enforces the key policy), and the fixture the releases are built in.
struct Lab {
    f: Fixture,
    proxy: FaultProxy,
    imds: ImdsStandIn,
    kms: AttestingKms,
    role_arn: String,
    /// Where each boot writes its emulated NitroTPM's root; the KMS trusts all of them.
    roots: Vec<PathBuf>,
    _moto: Moto,
}

/// How many boots of one test may run at once (each writes its own attestation root).
const ROOTS: usize = 4;

impl Lab {
    fn start() -> Lab {
        let f = Fixture::new();
        let moto = Moto::start();
        let proxy = FaultProxy::start(&moto.endpoint());
        proxy.set_ebs_block_size(524_288);
        proxy.answer_instance_refreshes(ASG);
        let role = format!("zoa-{DEPLOYMENT}");
        let role_arn = format!("arn:aws:iam::123456789012:role/{role}");
        let imds = ImdsStandIn::start(ImdsContent {
            region: "us-east-1".into(),
            role: Some(role),
            ..Default::default()
        });
        let roots: Vec<PathBuf> = (0..ROOTS)
            .map(|i| f.path(&format!("attestation-root-{i}.pem")))
            .collect();
        let kms = AttestingKms::start(
            &moto,
            Trust::PemFiles(roots.clone()),
            &[(ACCESS_KEY_ID, &role_arn)],
        );
        Lab {
            f,
            proxy,
            imds,
            kms,
            role_arn,
            roots,
            _moto: moto,
        }
    }

    /// The sealed demo recipe, reaching these stand-ins (from the guest, the host's
    /// 127.0.0.1 is 10.0.2.2 on QEMU's user network).
    fn recipe(&self) -> String {
        let guest_url = |addr: std::net::SocketAddr| format!("http://10.0.2.2:{}", addr.port());
        sealed_recipe(
            &guest_url(self.imds.addr()),
            &guest_url(self.kms.proxy.addr()),
        )
    }

    fn zoa_aws(&self) -> std::process::Command {
        let mut cmd = zoa(&self.f.cache());
        self.proxy.apply(&mut cmd);
        cmd
    }

    fn deploy(&self, r: &Release, extra: &[&str]) {
        let o = run(self
            .zoa_aws()
            .arg("deploy")
            .arg(&r.dir)
            .arg("--pubkey")
            .arg(&r.pubkey)
            .args(["--name", DEPLOYMENT, "--quiet"])
            .args(extra));
        assert!(o.status.success(), "zoa deploy {extra:?}: {}", stderr(&o));
    }

    fn seal(&self, r: &Release, name: &str, secret: &str) -> PathBuf {
        let input = self.f.write(&format!("{name}.secret"), secret);
        let out = self.f.path(&format!("{name}.sealed.json"));
        let o = run(self
            .zoa_aws()
            .arg("seal")
            .arg("--key")
            .arg(&r.dir)
            .args(["--name", name, "--quiet", "--in"])
            .arg(&input)
            .arg("--out")
            .arg(&out));
        assert!(o.status.success(), "zoa seal {name}: {}", stderr(&o));
        out
    }

    /// The first deploy makes the key (bound to this release's PCRs); then both secrets
    /// are sealed under it, and a second deploy gives them to the instances, whose user
    /// data the IMDS stand-in then serves.
    fn deploy_sealed(&self, r: &Release, model_key: &str, extra: &[&str]) {
        self.deploy(r, extra);
        let api = self.seal(r, "api-key", API_KEY);
        let model_key = self.seal(r, "model-key", model_key);
        let secret = |name: &str, p: &Path| format!("{name}={}", p.display());
        let secrets = [
            "--secret".to_owned(),
            secret("api-key", &api),
            "--secret".to_owned(),
            secret("model-key", &model_key),
        ];
        let args: Vec<&str> = extra
            .iter()
            .copied()
            .chain(secrets.iter().map(String::as_str))
            .collect();
        self.deploy(r, &args);
        self.serve_launched_user_data();
    }

    /// Has the IMDS stand-in serve the user data EC2 would give the instances launched
    /// last: the RunInstances of a single instance, or the launch template (version) of
    /// a fleet.
    fn serve_launched_user_data(&self) {
        use base64::Engine;
        let b64 = self
            .proxy
            .calls()
            .into_iter()
            .rev()
            .find_map(|c| {
                if c.is("ec2:RunInstances") {
                    c.param("UserData")
                } else if c.is("ec2:CreateLaunchTemplate")
                    || c.is("ec2:CreateLaunchTemplateVersion")
                {
                    c.param("LaunchTemplateData.UserData")
                } else {
                    None
                }
            })
            .expect("a launch that carries user data");
        let data = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("UserData is base64");
        self.imds.set_user_data(data);
    }

    /// Options for a boot of `uki` with the emulated NitroTPM, writing root number `n`.
    fn boot_options(&self, uki: &Path, n: usize) -> BootOptions {
        let mut opts = BootOptions::new(uki);
        opts.timeout = Some(Duration::from_secs(900));
        opts.memory_mib = 1536;
        // A forward gives the guest its network device (it reaches the stand-ins).
        opts.forwards = vec![(free_port(), 8080)];
        opts.nitrotpm = true;
        opts.attestation_root = Some(self.roots[n].clone());
        opts
    }

    /// Boots `uki` up to KMS's answer: without the model disk, so an unsealed boot stops
    /// at the model (the step after the unseal) and a refused one at the unseal. Returns
    /// the outcome and the KMS decisions made during the boot.
    fn boot_to_unseal(&self, opts: BootOptions) -> (zoa::boot::BootOutcome, Vec<Decision>) {
        let before = self.kms.decisions().len();
        let out = boot(&opts).unwrap_or_else(|e| panic!("zoa boot {}: {e}", opts.uki.display()));
        let decisions = self.kms.decisions().split_off(before);
        (out, decisions)
    }
}

/// The unseal of both secrets succeeded, and the boot went on to the model (absent here).
fn assert_unsealed(out: &zoa::boot::BootOutcome, decisions: &[Decision], role_arn: &str) {
    assert!(
        // (The model key is kept by zoa-init itself, so only the server's secret is named.)
        out.console
            .lines()
            .any(|l| l.trim_end() == "zoa-init: unsealed api-key"),
        "{decisions:#?}\n{}",
        out.console
    );
    let fatal = out.fatal.clone().unwrap_or_default();
    assert!(fatal.starts_with("model:"), "{fatal:?}\n{}", out.console);
    let document = zoa::attestation::parse(&out.attestation_documents[0]).unwrap();
    let mine: Vec<_> = decisions
        .iter()
        .filter(|d| d.pcrs.get(&4) == Some(&hex::encode(&document.document.pcrs[&4])))
        .collect();
    assert_eq!(mine.len(), 2, "{decisions:#?}");
    for d in mine {
        assert!(d.allowed(), "{d:#?}");
        assert_eq!(d.principal, role_arn);
    }
    assert!(
        !out.console.contains(API_KEY),
        "the API key reached the console"
    );
}

/// KMS refused the unseal by the named statement of the key policy, and zoa-init powered
/// off naming the denial, before the model or the server.
fn assert_refused(out: &zoa::boot::BootOutcome, decisions: &[Decision], sid: &str) {
    let fatal = out.fatal.clone().unwrap_or_default();
    assert!(
        fatal.starts_with("unseal:") && fatal.contains("AccessDeniedException"),
        "{fatal:?}\n{}",
        out.console
    );
    assert_stopped_before_model_and_server(out);
    let denied = decisions.last().expect("a decision for the refused boot");
    assert_eq!(
        denied.outcome,
        Ok(Verdict::ExplicitDeny { sid: sid.into() }),
        "{denied:#?}"
    );
}

#[test]
fn the_sealed_demo_unseals_and_serves_one_byte_away_is_refused_and_a_rollout_moves_the_key() {
    let started = Instant::now();
    let lab = Lab::start();
    let f = &lab.f;
    let recipe = f.write("sealed.toml", lab.recipe());
    let release = build_and_sign(f, &recipe, "sealed", &[], None);
    let (model_file, identity) = encrypted_model(f);
    let model_arg = model_file.to_str().unwrap();
    lab.deploy_sealed(&release, &identity, &["--fleet", "--model", model_arg]);
    eprintln!("built, deployed and sealed in {:?}", started.elapsed());

    let port = free_port();
    let button = PowerButton::new();
    let mut opts = lab.boot_options(&release.dir.join("uki.efi"), 0);
    opts.extra_disks = vec![model_file.clone()];
    opts.forwards = vec![(port, 8080)];
    opts.power_button = Some(button.clone());
    let root = lab.roots[0].clone();
    let booted = Instant::now();
    let guest = std::thread::spawn(move || boot(&opts).unwrap_or_else(|e| panic!("zoa boot: {e}")));
    let agent = agent();
    let base = common::serve::base(port);
    if !wait_healthy(&agent, &base, &guest) {
        button.press();
        let out = guest.join().expect("the boot thread");
        panic!(
            "the server never became healthy (KMS decisions: {:#?}):\n{}",
            lab.kms.decisions(),
            out.console
        );
    }
    eprintln!("serving {:?} after the boot began", booted.elapsed());
    let (status, body) = chat(&agent, &base, Some(API_KEY), 4);
    assert_eq!(status, 200, "with the API key: {body}");
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
    let (status, body) = chat(&agent, &base, None, 4);
    assert_eq!(status, 401, "without the API key: {body}");
    let (status, _) = chat(&agent, &base, Some("not-the-key"), 4);
    assert_eq!(status, 401, "with another key");
    check_attested_tls(f, &base, &root, &release);
    chat_through_the_proxy(f, &base, &root, &release);

    button.press();
    let out = guest.join().expect("the boot thread");
    eprintln!("first boot done {:?}", started.elapsed());
    assert_eq!(out.fatal, None, "{}", out.console);
    assert!(out.powered_off, "{}", out.console);
    assert!(
        out.console
            .contains("zoa-init: unseal endpoints of this image: imds http://10.0.2.2:"),
        "{}",
        out.console
    );
    // Both secrets came from KMS, each released by the policy to the attested PCRs, and
    // no secret appears on the console.
    let decisions = lab.kms.decisions();
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    let document = zoa::attestation::parse(&out.attestation_documents[0]).unwrap();
    for d in &decisions {
        assert!(d.allowed(), "{d:#?}");
        assert_eq!(d.principal, lab.role_arn);
        assert_eq!(d.pcrs[&4], hex::encode(&document.document.pcrs[&4]));
    }
    assert!(
        !out.console.contains(API_KEY),
        "the API key reached the console"
    );
    assert!(
        !out.console.contains(&identity),
        "the model key reached the console"
    );

    // The next release, one byte of configuration away (the hostname) and with the next
    // version: PCR4 moves, and the same user data through the same KMS gets nothing.
    // zoa-init powers off naming the denial, before the model or the server.
    let text = std::fs::read_to_string(&recipe).unwrap();
    let other_text = text
        .replace("hostname = \"llama-server\"", "hostname = \"llama-servex\"")
        .replace("0.7.0-9", "0.7.0-10");
    assert!(
        other_text.contains("llama-servex") && other_text.contains("version = \"0.7.0-10\""),
        "the sealed recipe changed shape"
    );
    let next = build_and_sign(f, &f.write("next.toml", other_text), "next", &[], None);
    let mut opts = lab.boot_options(&next.dir.join("uki.efi"), 1);
    opts.extra_disks = vec![model_file];
    let (out, decisions) = lab.boot_to_unseal(opts);
    assert_refused(&out, &decisions, "ZoaDenyUnattestedPcr4");
    eprintln!("the next release refused {:?}", started.elapsed());

    // A rollout to it, stopped (as by a lost connection) once the key admits both
    // releases: instances of either unseal. The fleet's new launch template version
    // carries the same envelopes.
    lab.proxy.clear_rules();
    lab.proxy.fail(
        "autoscaling:StartInstanceRefresh",
        1_000,
        Fault::Error {
            status: 400,
            code: "ValidationError".into(),
            message: "stopped by the test".into(),
        },
    );
    lab.proxy.answer_instance_refreshes(ASG);
    let rollout = || {
        run(lab
            .zoa_aws()
            .arg("rollout")
            .arg(&next.dir)
            .arg("--from")
            .arg(&release.dir)
            .arg("--pubkey")
            .arg(&release.pubkey)
            .arg("--quiet"))
    };
    let o = rollout();
    assert!(
        !o.status.success(),
        "the rollout was to stop at the refresh"
    );
    assert!(stderr(&o).contains("stopped by the test"), "{}", stderr(&o));
    lab.serve_launched_user_data();
    let before = lab.kms.decisions().len();
    let during =
        [(&release, 2), (&next, 3)].map(|(r, n)| lab.boot_options(&r.dir.join("uki.efi"), n));
    let (old_out, new_out) = std::thread::scope(|s| {
        let [old, new] = during;
        let old = s.spawn(|| lab.boot_to_unseal(old));
        let new = s.spawn(|| lab.boot_to_unseal(new));
        (old.join().unwrap(), new.join().unwrap())
    });
    let all = lab.kms.decisions().split_off(before);
    assert_unsealed(&old_out.0, &all, &lab.role_arn);
    assert_unsealed(&new_out.0, &all, &lab.role_arn);
    eprintln!(
        "both releases unsealed during the rollout {:?}",
        started.elapsed()
    );

    // The rollout resumes and completes: the key admits only the new release.
    lab.proxy.clear_rules();
    lab.proxy.answer_instance_refreshes(ASG);
    let o = rollout();
    assert!(o.status.success(), "zoa rollout (resumed): {}", stderr(&o));
    let opts = lab.boot_options(&release.dir.join("uki.efi"), 2);
    let (out, decisions) = lab.boot_to_unseal(opts);
    assert_refused(&out, &decisions, "ZoaDenyUnattestedPcr4");
    eprintln!("whole test {:?}", started.elapsed());
}

/// A Secure Boot sealed release (signed UKI, `zoa sign --uefi-data` with the enrolled
/// keys) deployed, its key bound to PCR7 and PCR12; booted by OVMF's Secure Boot firmware
/// with those keys enrolled (virt-fw-vars), it unseals. The same image signed by another
/// db key, booted with that key enrolled instead, is refused by PCR7 alone (PCR4 and
/// PCR12 are the same: Authenticode hashes leave the signature out).
#[test]
fn a_secure_boot_release_is_admitted_by_pcr7_and_another_db_key_is_refused() {
    let started = Instant::now();
    let lab = Lab::start();
    let f = &lab.f;
    let ours = common::secureboot::keygen(f, "sb");
    let theirs = common::secureboot::keygen(f, "other");
    let db = |keys: &Path| common::secureboot::with_suffix(keys, "-db.crt");
    let enrolled = common::secureboot::enroll(f, "vars", &ours, &[&db(&ours)]);
    let foreign = common::secureboot::enroll(f, "foreign-vars", &theirs, &[&db(&theirs)]);
    let sign_with = |keys: &Path| {
        format!(
            "{},{}",
            common::secureboot::with_suffix(keys, "-db.key").display(),
            db(keys).display()
        )
    };
    let recipe = f.write("sealed.toml", lab.recipe());
    let release = build_and_sign(
        f,
        &recipe,
        "sealed",
        &["--sign-with", &sign_with(&ours)],
        Some(&enrolled.uefi_data),
    );
    // The model is deployed (the image pins it) but not booted: the boot stops at it.
    let (model_file, identity) = encrypted_model(f);
    lab.deploy_sealed(
        &release,
        &identity,
        &["--model", model_file.to_str().unwrap()],
    );
    eprintln!("built, deployed and sealed in {:?}", started.elapsed());

    let mut opts = lab.boot_options(&release.dir.join("uki.efi"), 0);
    opts.secure_boot_vars = Some(enrolled.vars.clone());
    let (out, decisions) = lab.boot_to_unseal(opts);
    assert_unsealed(&out, &decisions, &lab.role_arn);
    let measured: serde_json::Value =
        serde_json::from_slice(&std::fs::read(release.dir.join("measurements.json")).unwrap())
            .unwrap();
    assert_eq!(
        out.pcr(
            zoa::measure::Bank::Sha384,
            zoa::measure::Pcr::new(7).unwrap()
        ),
        measured["pcrs"]["7"]["sha384"].as_str(),
        "PCR7 as predicted from the release's uefi-data.bin"
    );
    eprintln!("the Secure Boot release unsealed {:?}", started.elapsed());

    let theirs_build = f.path("theirs");
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(&recipe)
        .arg("--out")
        .arg(&theirs_build)
        .args(["--sign-with", &sign_with(&theirs)]));
    assert!(
        o.status.success(),
        "zoa build --sign-with theirs: {}",
        stderr(&o)
    );
    let mut opts = lab.boot_options(&theirs_build.join("uki.efi"), 1);
    opts.secure_boot_vars = Some(foreign.vars.clone());
    let (out, decisions) = lab.boot_to_unseal(opts);
    assert_refused(&out, &decisions, "ZoaDenyUnattestedPcr7");
    eprintln!("whole test {:?}", started.elapsed());
}
