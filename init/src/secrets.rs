//! The boot-time unseal: attest, have KMS release the secrets to this boot, hand them to
//! the server.
//!
//! 1. A fresh RSA-2048 key ([`RecipientKey`]), never written anywhere.
//! 2. An attestation document from the NitroTPM carrying its public key (the NSM request
//!    through the TPM vendor command, [`crate::tpm2::nsm`]). Anywhere without a NitroTPM
//!    this is where the boot ends, with the TPM's answer on the console.
//! 3. The envelopes named in the config, from the instance's user data, each opened with
//!    the data key KMS encrypts to that public key ([`crate::unseal::unseal_user_data`]).
//! 4. Each secret written to `/run/zoa/secrets/<name>` on a tmpfs of its own (mode 0440,
//!    group of the server), remounted read-only; optionally also an environment variable
//!    of the server. Never printed.

use crate::config::{Unseal, UnsealEndpoints, SECRETS_DIR};
use crate::tpm2::{self, DeviceTransport};
use crate::unseal::{self, RecipientKey, Secret};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Room for the secrets' tmpfs: a page per secret is plenty (each is at most 8 KiB).
const SECRETS_TMPFS_BYTES: u64 = 1 << 20;

/// What the server gets besides the files: environment variables (name → value).
pub type SecretEnv = BTreeMap<String, String>;

/// What the unseal gave: the names delivered to the server, its environment variables,
/// and the secret zoa-init keeps for itself (the model's key), never written anywhere.
#[derive(Debug)]
pub struct Unsealed {
    pub names: Vec<String>,
    pub env: SecretEnv,
    pub kept: Option<Secret>,
}

/// Runs the whole unseal for `unseal` and the server's group `gid`; the secret named
/// `keep` is kept in memory rather than delivered. The error is one line for
/// `zoa-init: fatal: unseal: <error>`.
pub fn unseal_at_boot(unseal: &Unseal, keep: Option<&str>, gid: u32) -> Result<Unsealed, String> {
    let key = RecipientKey::generate().map_err(|e| e.to_string())?;
    let public_key = key.public_key_der().map_err(|e| e.to_string())?;
    let document = attestation_document(&public_key)?;
    let names: Vec<String> = unseal.secrets.iter().map(|s| s.name.clone()).collect();
    let endpoints = unseal.endpoints.clone().unwrap_or(UnsealEndpoints {
        imds: None,
        kms: None,
    });
    if endpoints.imds.is_some() || endpoints.kms.is_some() {
        // Measured into the image, and said on the console: a rehearsal image.
        crate::console::say(&format!(
            "unseal endpoints of this image: imds {}, kms {}",
            endpoints.imds.as_deref().unwrap_or("the instance's"),
            endpoints.kms.as_deref().unwrap_or("the region's")
        ));
    }
    let mut secrets = with_deadline(Duration::from_secs(unseal.timeout_secs.into()), move || {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        unseal::unseal_user_data(
            endpoints.imds.as_deref(),
            endpoints.kms.as_deref(),
            &document,
            &key,
            &names,
        )
        .map_err(|e| e.to_string())
    })?;
    let kept = match keep {
        Some(name) => {
            let at = secrets
                .iter()
                .position(|s| s.name() == name)
                .ok_or_else(|| format!("secret {name:?} was not unsealed"))?;
            Some(secrets.swap_remove(at))
        }
        None => None,
    };
    let (names, env) = deliver(unseal, &secrets, keep, Path::new(SECRETS_DIR), gid)?;
    Ok(Unsealed { names, env, kept })
}

/// The NitroTPM's attestation document over `public_key`. The device is closed right
/// after: `/dev/tpm0` admits one user at a time.
fn attestation_document(public_key: &[u8]) -> Result<Vec<u8>, String> {
    let device = Path::new(tpm2::NSM_DEVICE);
    let mut transport = DeviceTransport::open(device)
        .map_err(|e| format!("attestation: {}: {e}", device.display()))?;
    tpm2::nsm::attestation_document(&mut transport, public_key)
        .map_err(|e| format!("attestation: {e}"))
}

/// Runs `work` on a thread of its own and gives up after `limit`: IMDS and KMS calls
/// carry their own timeouts, and this bounds the whole exchange. A late thread is left
/// behind; the boot powers off anyway.
fn with_deadline<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("unseal".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| format!("starting the unseal thread: {e}"))?;
    rx.recv_timeout(limit)
        .map_err(|_| format!("no answer from IMDS and KMS within {}s", limit.as_secs()))?
}

/// Writes the secrets (in `unseal.secrets` order, all but `keep`) into a private tmpfs at
/// `dir` and returns their names and the environment variables asked for.
pub fn deliver(
    unseal: &Unseal,
    secrets: &[Secret],
    keep: Option<&str>,
    dir: &Path,
    gid: u32,
) -> Result<(Vec<String>, SecretEnv), String> {
    crate::mounts::mount_private_tmpfs(dir, SECRETS_TMPFS_BYTES, gid)?;
    let mut env = SecretEnv::new();
    let mut names = Vec::new();
    for spec in unseal
        .secrets
        .iter()
        .filter(|s| Some(s.name.as_str()) != keep)
    {
        let secret = secrets
            .iter()
            .find(|s| s.name() == spec.name)
            .ok_or_else(|| format!("secret {:?} was not unsealed", spec.name))?;
        crate::mounts::write_private_file(&dir.join(&spec.name), secret.expose(), gid)?;
        if let Some(var) = &spec.env {
            let value = std::str::from_utf8(secret.expose()).map_err(|_| {
                format!(
                    "secret {:?} is not UTF-8 text, so it cannot go into ${var}",
                    spec.name
                )
            })?;
            env.insert(var.clone(), value.to_owned());
        }
        names.push(spec.name.clone());
    }
    crate::mounts::remount_read_only(dir)?;
    Ok((names, env))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSpec;

    #[test]
    fn a_missing_tpm_is_named() {
        let e = attestation_document(b"key").unwrap_err();
        // This host has no /dev/tpm0 (or it is busy): either way the device is named.
        assert!(e.starts_with("attestation: "), "{e}");
    }

    #[test]
    fn the_deadline_bounds_the_exchange() {
        let start = std::time::Instant::now();
        let e = with_deadline(Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(5));
            Ok(())
        })
        .unwrap_err();
        assert!(e.contains("within 0s"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(with_deadline(Duration::from_secs(5), || Ok(7)), Ok(7));
    }

    #[test]
    fn nothing_unsealed_means_nothing_delivered() {
        let unseal = Unseal {
            secrets: vec![SecretSpec {
                name: "api-key".into(),
                env: None,
            }],
            timeout_secs: 60,
            endpoints: None,
        };
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secrets");
        let e = deliver(&unseal, &[], None, &target, 1000).unwrap_err();
        let _unmount = crate::mounts::tests::Unmount(target.clone());
        assert_eq!(e, "secret \"api-key\" was not unsealed");
    }

    #[test]
    fn secrets_become_private_read_only_files_and_asked_for_variables() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let unseal = Unseal {
            secrets: vec![
                SecretSpec {
                    name: "api-key".into(),
                    env: Some("LLAMA_API_KEY".into()),
                },
                SecretSpec {
                    name: "tls.key".into(),
                    env: None,
                },
            ],
            timeout_secs: 60,
            endpoints: None,
        };
        let secrets = [
            Secret::for_test("tls.key", &[0, 159, 146, 150]),
            Secret::for_test("api-key", b"k-123"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secrets");
        let (names, env) = deliver(&unseal, &secrets, None, &target, 4242).unwrap();
        let _unmount = crate::mounts::tests::Unmount(target.clone());
        assert_eq!(names, ["api-key", "tls.key"]);
        assert_eq!(
            env.into_iter().collect::<Vec<_>>(),
            [("LLAMA_API_KEY".to_owned(), "k-123".to_owned())]
        );
        assert_eq!(std::fs::read(target.join("api-key")).unwrap(), b"k-123");
        assert_eq!(
            std::fs::read(target.join("tls.key")).unwrap(),
            [0, 159, 146, 150]
        );
        let meta = std::fs::metadata(target.join("tls.key")).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o440, 4242));
        assert!(std::fs::write(target.join("x"), b"x").is_err(), "read-only");
    }

    #[test]
    fn the_kept_secret_is_not_delivered() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let unseal = Unseal {
            secrets: vec![
                SecretSpec {
                    name: "model-key".into(),
                    env: None,
                },
                SecretSpec {
                    name: "api-key".into(),
                    env: None,
                },
            ],
            timeout_secs: 60,
            endpoints: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secrets");
        let secrets = [Secret::for_test("api-key", b"k")];
        let (names, _) = deliver(&unseal, &secrets, Some("model-key"), &target, 7).unwrap();
        let _unmount = crate::mounts::tests::Unmount(target.clone());
        assert_eq!(names, ["api-key"]);
        assert!(!target.join("model-key").exists());
    }

    #[test]
    fn a_binary_secret_cannot_become_a_variable() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let unseal = Unseal {
            secrets: vec![SecretSpec {
                name: "k".into(),
                env: Some("K".into()),
            }],
            timeout_secs: 60,
            endpoints: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secrets");
        let e = deliver(&unseal, &[Secret::for_test("k", &[0xff])], None, &target, 1).unwrap_err();
        let _unmount = crate::mounts::tests::Unmount(target.clone());
        assert!(e.contains("not UTF-8 text, so it cannot go into $K"), "{e}");
    }
}
