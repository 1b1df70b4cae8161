//! Secure Boot fixtures: `zoa keygen --secure-boot` keys, and OVMF variable stores that
//! enroll them, made by virt-fw-vars (an independent tool) together with the same
//! variables as an AMI UefiData blob and as ESL files.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{stderr, zoa, Fixture};

/// The owner GUID the tests enroll their entries under (any fixed GUID will do; it is
/// part of what PCR7 measures).
pub const OWNER: &str = "5a4f4100-7a6f-4100-8000-000000000001";
pub fn virt_fw_vars() -> PathBuf {
    std::env::var_os("VIRT_FW_VARS")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .expect("virt-fw-vars not found: run `. .ci/env` after .ci/deps (set VIRT_FW_VARS)")
}

fn ok(cmd: &mut Command, what: &str) -> std::process::Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(o.status.success(), "{what}: {}", stderr(&o));
    o
}

/// `zoa keygen --secure-boot` into the fixture: PREFIX-{PK,KEK,db}.{key,crt}.
pub fn keygen(f: &Fixture, prefix: &str) -> PathBuf {
    let p = f.path(prefix);
    ok(
        zoa(&f.cache())
            .args(["keygen", "--secure-boot", "--out"])
            .arg(&p),
        "zoa keygen --secure-boot",
    );
    p
}

pub fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", prefix.display()))
}

/// A variable store with PK, KEK and every cert in `db` (each its own signature list, as
/// virt-fw-vars adds them), Secure Boot on; and the enrolled PK/KEK/db/dbx as ESL files,
/// read back from virt-fw-vars' JSON dump.
pub struct Enrolled {
    pub vars: PathBuf,
    pub esl: [(String, PathBuf); 4],
    /// The same variables as an AMI UefiData blob, written by virt-fw-vars --output-aws.
    pub uefi_data: PathBuf,
}

impl Enrolled {
    pub fn args(&self) -> Vec<String> {
        self.esl
            .iter()
            .flat_map(|(name, p)| [format!("--{name}"), p.display().to_string()])
            .collect()
    }

    /// The same files in nitro-tpm-pcr-compute's spelling (--PK --KEK --db --dbx).
    pub fn nitro_args(&self) -> Vec<String> {
        self.esl
            .iter()
            .flat_map(|(name, p)| {
                let flag = match name.as_str() {
                    "pk" => "--PK",
                    "kek" => "--KEK",
                    other => {
                        if other == "db" {
                            "--db"
                        } else {
                            "--dbx"
                        }
                    }
                };
                [flag.to_owned(), p.display().to_string()]
            })
            .collect()
    }
}

pub fn enroll(f: &Fixture, name: &str, keys: &Path, db: &[&Path]) -> Enrolled {
    enroll_with(f, name, keys, db, &["--sb".into()])
}

/// [`enroll`] with other virt-fw-vars arguments: hashes for db or dbx, and `--sb` (Secure
/// Boot on) or not.
pub fn enroll_with(
    f: &Fixture,
    name: &str,
    keys: &Path,
    db: &[&Path],
    extra: &[String],
) -> Enrolled {
    let dir = f.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    let vars = dir.join("vars.fd");
    let json = dir.join("vars.json");
    let mut c = Command::new(virt_fw_vars());
    c.arg("-i")
        .arg(super::qemu::OVMF_VARS)
        .arg("-o")
        .arg(&vars)
        .args(["--set-pk", OWNER])
        .arg(with_suffix(keys, "-PK.crt"))
        .args(["--add-kek", OWNER])
        .arg(with_suffix(keys, "-KEK.crt"));
    for cert in db {
        c.args(["--add-db", OWNER]).arg(cert);
    }
    let uefi_data = dir.join("uefi-data.bin");
    c.args(extra)
        .arg("--output-json")
        .arg(&json)
        .arg("--output-aws")
        .arg(&uefi_data);
    ok(&mut c, "virt-fw-vars");
    let dump: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // A variable that does not exist is measured as empty, like an empty list file.
    let data = |var: &str| -> Vec<u8> {
        dump["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == var)
            .map(|v| hex::decode(v["data"].as_str().unwrap()).unwrap())
            .unwrap_or_default()
    };
    let esl = ["PK", "KEK", "db", "dbx"].map(|var| {
        let p = dir.join(format!("{var}.esl"));
        std::fs::write(&p, data(var)).unwrap();
        (var.to_lowercase(), p)
    });
    Enrolled {
        vars,
        esl,
        uefi_data,
    }
}
