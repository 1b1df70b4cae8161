//! Shared fixtures of the integration suite: the `zoa` binary, the pinned inputs, and
//! small recipes generated per test.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The pinned Debian packages (`../shared/inputs`), or `ZOA_SHARED_INPUTS`.
pub fn shared_inputs() -> PathBuf {
    if let Some(p) = std::env::var_os("ZOA_SHARED_INPUTS") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/inputs");
    assert!(
        p.is_dir(),
        "pinned inputs not found at {}: set ZOA_SHARED_INPUTS",
        p.display()
    );
    p
}

/// The project's release public keys (`measurements/keys/*.pub`), oldest first: every key
/// the release log's entries were signed with (a rotation adds one).
pub fn release_keys() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements/keys");
    let mut keys: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    keys.sort();
    assert!(!keys.is_empty(), "no public keys in {}", dir.display());
    keys
}

/// The static zoa-init built by `.ci/test` (or `ZOA_INIT`).
pub fn init_binary() -> PathBuf {
    let p = std::env::var_os("ZOA_INIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/zoa-init/zoa-init"));
    assert!(
        p.is_file(),
        "zoa-init not found at {}: run `zoa build-init` (.ci/test does)",
        p.display()
    );
    p
}

/// `zoa` with a private cache and the pinned inputs, never the network.
pub fn zoa(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zoa"));
    c.env("ZOA_CACHE", cache)
        .env("ZOA_INIT", init_binary())
        .env_remove("ZOA_INPUTS")
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("zoa runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// sha256 of a file in the pinned inputs.
pub fn sha256_of(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).expect("read input")))
}

/// The project's newest reference release in measurements/ (its README: how to make one):
/// the demo build must reproduce it, and its zoa-init is the one built on another machine.
pub const REFERENCE_RELEASE: &str = "llama-server-0.7.0-9";

pub const KERNEL_DEB: &str = "linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb";
pub const KERNEL_MEMBER: &str = "boot/vmlinuz-6.1.0-56-cloud-amd64";
pub const STUB252_DEB: &str = "systemd-boot-efi_252.39-1~deb12u2_amd64.deb";
pub const STUB257_DEB: &str = "systemd-boot-efi_257.13-1~deb13u1_amd64.deb";
pub const STUB262_DEB: &str = "systemd-boot-efi_262.1-1_amd64.deb";
pub const STUB_MEMBER: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// An `[inputs.NAME]` table for a file (absolute source path, real digest).
pub fn input_table(name: &str, file: &Path) -> String {
    format!(
        "[inputs.{name}]\nsha256 = \"{}\"\nsources = [{:?}]\n",
        sha256_of(file),
        file.display().to_string()
    )
}

/// A small, fast recipe: kernel + stub 252 + PID 1, no sysroot. `extra` is appended.
pub fn tiny_recipe(extra: &str) -> String {
    let inputs = shared_inputs();
    format!(
        r#"[image]
name = "tiny"
version = "1"
cmdline = "console=ttyS0 panic=-1"

[kernel]
input = "kernel"
path = "{KERNEL_MEMBER}"

[stub]
input = "stub"
path = "{STUB_MEMBER}"

[init]
print_pcrs = true

{}
{}
{extra}
"#,
        input_table("kernel", &inputs.join(KERNEL_DEB)),
        input_table("stub", &inputs.join(STUB252_DEB)),
    )
}

/// A scratch directory holding a recipe, a cache and an output directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write");
        p
    }

    pub fn cache(&self) -> PathBuf {
        self.path("cache")
    }

    /// `zoa build RECIPE --out OUT` in this fixture.
    pub fn build(&self, recipe: &Path, out: &str) -> Output {
        run(zoa(&self.cache())
            .arg("build")
            .arg(recipe)
            .arg("--out")
            .arg(self.path(out)))
    }
}

/// The output directory of `zoa build` on `recipe` (its text), built once per test process:
/// tests that measure or boot the same image share one build instead of each making it
/// again. The image is read-only, so a test that would change it fails instead of
/// changing another test's input; copy it first.
pub fn shared_build(recipe: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static BUILDS: OnceLock<Mutex<HashMap<String, Arc<OnceLock<PathBuf>>>>> = OnceLock::new();
    let key = sha256_hex(recipe.as_bytes());
    let slot = BUILDS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(key.clone())
        .or_default()
        .clone();
    // Other tests wanting this image wait here while the first one builds it.
    slot.get_or_init(|| {
        let dir = shared_builds_dir().join(&key);
        std::fs::create_dir_all(&dir).unwrap();
        let recipe_path = dir.join("recipe.toml");
        std::fs::write(&recipe_path, recipe).unwrap();
        let out = dir.join("out");
        let o = run(zoa(&dir.join("cache"))
            .arg("build")
            .arg(&recipe_path)
            .arg("--out")
            .arg(&out));
        assert!(o.status.success(), "shared build: {}", stderr(&o));
        let uki = out.join("uki.efi");
        let mut permissions = std::fs::metadata(&uki).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&uki, permissions).unwrap();
        out
    })
    .clone()
}

/// This process's directory of shared builds under Cargo's test scratch directory; those
/// of test processes that have ended are removed.
fn shared_builds_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("shared-builds-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        root.join(format!("shared-builds-{}", std::process::id()))
    })
}

/// True when `dir` does not exist or is empty.
pub fn absent_or_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Err(_) => true,
        Ok(mut it) => it.next().is_none(),
    }
}

pub mod faults;
pub mod iam;
pub mod imds;
pub mod kms;
pub mod moto;
pub mod planmatch;
pub mod qemu;
pub mod secureboot;
pub mod serve;
pub mod ukify;

/// sha256 of bytes as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// The demo recipe's text.
pub fn demo_recipe_text() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("image-recipes/llama-server.toml"),
    )
    .expect("read the demo recipe")
}

/// `text` (the demo recipe) without its kernel modules: the module list and the module
/// files taken from the cloud kernel package, for a probe built with another kernel.
pub fn without_kernel_modules(text: &str) -> String {
    let start = text
        .find("\nmodules = [\n")
        .expect("the demo recipe lists modules");
    let end = start + text[start..].find("\n]\n").expect("the module list ends") + 3;
    let text = format!("{}\n{}", &text[..start], &text[end..]);
    text.split("\n\n")
        .filter(|block| {
            !(block.contains("[[payload.files]]") && block.contains("input = \"linux-image\""))
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The demo recipe with absolute input paths and an event-log dump, then `edit`.
pub fn probe_recipe(edit: impl FnOnce(String) -> String) -> String {
    let inputs = shared_inputs();
    let text = demo_recipe_text()
        .replace(
            "\"../../shared/inputs/",
            &format!("\"{}/", inputs.display()),
        )
        .replace(
            "hostname = \"llama-server\"",
            "hostname = \"llama-server\"\ndump_eventlog = true",
        );
    assert!(
        text.contains("dump_eventlog = true"),
        "the demo recipe changed shape"
    );
    edit(text)
}

/// A recipe's text with stub 252 (its `.deb` and digest) replaced by another pinned stub.
pub fn with_stub(recipe: String, stub_deb: &str) -> String {
    let inputs = shared_inputs();
    recipe.replace(STUB252_DEB, stub_deb).replace(
        &sha256_of(&inputs.join(STUB252_DEB)),
        &sha256_of(&inputs.join(stub_deb)),
    )
}

/// A TCP port that was free a moment ago on 127.0.0.1 (for QEMU's host forwards).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A boot that ended as zoa-init ends a refused boot: powered off, and neither the model
/// nor the server was started.
pub fn assert_stopped_before_model_and_server(out: &zoa::boot::BootOutcome) {
    assert!(out.powered_off, "{}", out.console);
    assert!(!out.console.contains("zoa-init: model "), "{}", out.console);
    assert!(
        !out.console.contains("zoa-init: starting"),
        "{}",
        out.console
    );
}

/// Signs the release in `dir` with a new password-less key made in the fixture
/// (`ci.key`, `ci.pub`); the public key's path.
pub fn sign_with_new_key(f: &Fixture, dir: &Path) -> PathBuf {
    let o = run(zoa(&f.cache())
        .env_remove("ZOA_KEY_PASSWORD")
        .args(["keygen", "--no-password", "--out"])
        .arg(f.path("ci")));
    assert!(o.status.success(), "zoa keygen: {}", stderr(&o));
    let o = run(zoa(&f.cache())
        .env_remove("ZOA_KEY_PASSWORD")
        .arg("sign")
        .arg(dir)
        .arg("--key")
        .arg(f.path("ci.key")));
    assert!(o.status.success(), "zoa sign: {}", stderr(&o));
    f.path("ci.pub")
}

/// Release `version` of the tiny recipe with `extra` recipe text, built in `f` at
/// `rel<version>` and signed with `f`'s `ci.key`. Another version and kernel command line:
/// another UKI, so other PCRs.
pub fn signed_tiny_release(f: &Fixture, version: &str, extra: &str) -> PathBuf {
    let recipe = f.write(
        &format!("v{version}.toml"),
        tiny_recipe(extra)
            .replace("version = \"1\"", &format!("version = \"{version}\""))
            .replace(
                "console=ttyS0 panic=-1",
                &format!("console=ttyS0 panic=-1 zoa.release={version}"),
            ),
    );
    let name = format!("rel{version}");
    let o = f.build(&recipe, &name);
    assert!(o.status.success(), "build: {}", stderr(&o));
    let dir = f.path(&name);
    let o = run(zoa(&f.cache())
        .arg("sign")
        .arg(&dir)
        .arg("--key")
        .arg(f.path("ci.key")));
    assert!(o.status.success(), "sign: {}", stderr(&o));
    dir
}

/// Keeps a real input as a fuzz seed when `ZOA_FUZZ_SEEDS` names the corpus root
/// (`fuzz/seeds` sets it and runs the tests that meet such inputs: boots, dnsmasq, moto):
/// `ROOT/TARGET/seed-NAME-<digest>`, the target's mode byte first when its input has one.
/// Does nothing otherwise.
pub fn keep_fuzz_seed(target: &str, name: &str, mode: Option<u8>, bytes: &[u8]) {
    let Some(root) = std::env::var_os("ZOA_FUZZ_SEEDS") else {
        return;
    };
    let mut seed: Vec<u8> = mode.into_iter().collect();
    seed.extend_from_slice(bytes);
    let dir = Path::new(&root).join(target);
    std::fs::create_dir_all(&dir).expect("fuzz seed directory");
    let file = dir.join(format!("seed-{name}-{}", &sha256_hex(&seed)[..12]));
    std::fs::write(&file, seed).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
}
