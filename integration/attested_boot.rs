//! The sealed image end to end, on this machine: a real QEMU boot of the sealed demo image
//! with the real zoa-init, the emulated NitroTPM (`zoa boot --nitrotpm`), and the KMS
//! stand-in that enforces the key policy (`common/kms.rs`).
//!
//! `zoa deploy` against moto creates the key and its policy (bound to the release's
//! PCR4 and PCR12), `zoa seal` seals the API key and the model's age identity, a second
//! deploy puts them in the instances' user data, and the guest reads that user data from
//! an IMDSv2 stand-in. The image reaches the stand-ins through endpoints in its own
//! measured configuration (`[init.unseal.endpoints]`), never through user data.
//!
//! A second boot, of an image one byte of configuration away, shows the refusal end to
//! end. The other refusals (no attestation, a forged or altered document, a rollout's two
//! releases, Secure Boot's PCR7) run host-side with the same pieces (zoa-init's unseal,
//! the emulator over swtpm, the same stand-in and zoa's policy) in
//! `integration/attested_kms.rs`, where they take seconds instead of minutes of boots.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::faults::FaultProxy;
use common::imds::{ImdsContent, ImdsStandIn, ACCESS_KEY_ID};
use common::kms::{AttestingKms, Trust};
use common::moto::Moto;
use common::serve::{agent, chat, wait_healthy};
use common::*;
use zoa::boot::{boot, BootOptions, PowerButton};

const DEPLOYMENT: &str = "sealed";
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

/// The model encrypted with age to a fresh identity: (the file, the identity's text).
fn encrypted_model(f: &Fixture) -> (PathBuf, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let out = f.path("model.gguf.age");
    let file = std::fs::File::create(&out).unwrap();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .unwrap();
    let mut writer = encryptor
        .wrap_output(std::io::BufWriter::new(file))
        .unwrap();
    std::io::copy(&mut std::fs::File::open(model()).unwrap(), &mut writer).unwrap();
    writer.finish().unwrap().flush().unwrap();
    (out, identity.to_string().expose_secret().to_string())
}

struct Release {
    dir: PathBuf,
    pubkey: PathBuf,
}

fn build_and_sign(f: &Fixture, recipe: &str) -> Release {
    let recipe = f.write("sealed.toml", recipe);
    let o = f.build(&recipe, "sealed");
    assert!(o.status.success(), "zoa build: {}", stderr(&o));
    let pubkey = sign_with_new_key(f, &f.path("sealed"));
    Release {
        dir: f.path("sealed"),
        pubkey,
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
                && l.contains("llama-server-sealed 0.7.0-8")),
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

fn zoa_aws(f: &Fixture, proxy: &FaultProxy) -> std::process::Command {
    let mut cmd = zoa(&f.cache());
    proxy.apply(&mut cmd);
    cmd
}

fn deploy(f: &Fixture, proxy: &FaultProxy, r: &Release, extra: &[&str]) {
    let o = run(zoa_aws(f, proxy)
        .arg("deploy")
        .arg(&r.dir)
        .arg("--pubkey")
        .arg(&r.pubkey)
        .args(["--name", DEPLOYMENT, "--quiet"])
        .args(extra));
    assert!(o.status.success(), "zoa deploy {extra:?}: {}", stderr(&o));
}

fn seal(f: &Fixture, proxy: &FaultProxy, r: &Release, name: &str, secret: &str) -> PathBuf {
    let input = f.write(&format!("{name}.secret"), secret);
    let out = f.path(&format!("{name}.sealed.json"));
    let o = run(zoa_aws(f, proxy)
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

/// The user data the last RunInstances gave the instance (what EC2 would serve it).
fn launched_user_data(proxy: &FaultProxy) -> Vec<u8> {
    use base64::Engine;
    let run = proxy
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.is("ec2:RunInstances"))
        .expect("a RunInstances call");
    let b64 = run
        .param("UserData")
        .expect("RunInstances carries UserData");
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("UserData is base64")
}

#[test]
fn the_sealed_demo_unseals_and_serves_and_one_byte_away_is_refused() {
    let started = Instant::now();
    let f = Fixture::new();
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint());
    proxy.set_ebs_block_size(524_288);
    let role = format!("zoa-{DEPLOYMENT}");
    let role_arn = format!("arn:aws:iam::123456789012:role/{role}");
    let imds = ImdsStandIn::start(ImdsContent {
        region: "us-east-1".into(),
        role: Some(role.clone()),
        ..Default::default()
    });
    let root = f.path("attestation-root.pem");
    let kms = AttestingKms::start(
        &moto,
        Trust::PemFile(root.clone()),
        &[(ACCESS_KEY_ID, &role_arn)],
    );
    let guest_url = |addr: std::net::SocketAddr| format!("http://10.0.2.2:{}", addr.port());
    let release = build_and_sign(
        &f,
        &sealed_recipe(&guest_url(imds.addr()), &guest_url(kms.proxy.addr())),
    );
    let (model_file, identity) = encrypted_model(&f);
    let model_arg = model_file.to_str().unwrap();

    // The first deploy makes the key (bound to this release's PCRs); then the secrets are
    // sealed under it, and the second deploy gives them to the instances.
    deploy(&f, &proxy, &release, &["--model", model_arg]);
    let api = seal(&f, &proxy, &release, "api-key", API_KEY);
    let model_key = seal(&f, &proxy, &release, "model-key", &identity);
    let secret = |name: &str, p: &Path| format!("{name}={}", p.display());
    deploy(
        &f,
        &proxy,
        &release,
        &[
            "--model",
            model_arg,
            "--secret",
            &secret("api-key", &api),
            "--secret",
            &secret("model-key", &model_key),
        ],
    );
    imds.set_user_data(launched_user_data(&proxy));
    eprintln!("built, deployed and sealed in {:?}", started.elapsed());

    let port = free_port();
    let button = PowerButton::new();
    let mut opts = BootOptions::new(release.dir.join("uki.efi"));
    opts.timeout = Some(Duration::from_secs(900));
    opts.memory_mib = 1536;
    opts.extra_disks = vec![model_file.clone()];
    opts.forwards = vec![(port, 8080)];
    opts.power_button = Some(button.clone());
    opts.nitrotpm = true;
    opts.attestation_root = Some(root.clone());
    let booted = Instant::now();
    let guest = std::thread::spawn(move || boot(&opts).unwrap_or_else(|e| panic!("zoa boot: {e}")));
    let agent = agent();
    let base = common::serve::base(port);
    if !wait_healthy(&agent, &base, &guest) {
        button.press();
        let out = guest.join().expect("the boot thread");
        panic!(
            "the server never became healthy (KMS decisions: {:#?}):\n{}",
            kms.decisions(),
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
    check_attested_tls(&f, &base, &root, &release);
    chat_through_the_proxy(&f, &base, &root, &release);

    button.press();
    let out = guest.join().expect("the boot thread");
    eprintln!("whole test {:?}", started.elapsed());
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
    let decisions = kms.decisions();
    let allowed: Vec<_> = decisions.iter().filter(|d| d.allowed()).collect();
    assert_eq!(allowed.len(), 2, "{decisions:#?}");
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    let document = zoa::attestation::parse(&out.attestation_documents[0]).unwrap();
    for d in &allowed {
        assert_eq!(d.principal, role_arn);
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

    // One byte of configuration away (the hostname): PCR4 moves, and the same user data
    // through the same KMS gets nothing. zoa-init powers off naming the denial, before
    // the model or the server.
    let recipe = std::fs::read_to_string(f.path("sealed.toml")).unwrap();
    let other = recipe.replace("hostname = \"llama-server\"", "hostname = \"llama-servex\"");
    assert_ne!(other, recipe, "the sealed recipe changed shape");
    let o = f.build(&f.write("other.toml", other), "other");
    assert!(o.status.success(), "zoa build: {}", stderr(&o));
    let mut opts = BootOptions::new(f.path("other/uki.efi"));
    opts.timeout = Some(Duration::from_secs(600));
    opts.memory_mib = 1536;
    opts.extra_disks = vec![model_file];
    opts.forwards = vec![(free_port(), 8080)];
    opts.nitrotpm = true;
    opts.attestation_root = Some(root);
    let out = boot(&opts).unwrap_or_else(|e| panic!("zoa boot of the other image: {e}"));
    let fatal = out.fatal.clone().unwrap_or_default();
    assert!(
        fatal.starts_with("unseal:") && fatal.contains("AccessDeniedException"),
        "{fatal:?}\n{}",
        out.console
    );
    assert_stopped_before_model_and_server(&out);
    let denied = kms
        .decisions()
        .pop()
        .expect("a decision for the other image");
    assert_eq!(
        denied.outcome,
        Ok(common::iam::Verdict::ExplicitDeny {
            sid: "ZoaDenyUnattestedPcr4".into()
        }),
        "{denied:#?}"
    );
    eprintln!("whole test with the refused image {:?}", started.elapsed());
}
