//! The EC2 user data a deploy gives its instances: `--secret NAME=FILE` envelopes in
//! zoa-init's `zoa-user-data/1` format, or a `--user-data FILE` passed as it is.
//!
//! User data is not measured and anyone who may launch instances can set it; what makes it
//! safe to carry secrets is that a `zoa seal` envelope opens only with a data key KMS
//! releases to an attested boot of the release. The checks here are for the operator's
//! sake: an envelope for another deployment, another key or another name would make the
//! instances power off at boot, so it is refused before any AWS call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::fsio::ReadBoundedError;
use zoa_init::unseal::{Envelope, UserData, MAX_USER_DATA_LEN};

use super::{AwsError, Remedy};

/// The encryption-context entry naming the deployment (`zoa seal` writes it).
const DEPLOYMENT_CONTEXT_KEY: &str = "zoa:deployment";

/// `NAME=FILE` of `--secret` (or `--reseal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretArg {
    pub name: String,
    pub file: PathBuf,
}

impl std::str::FromStr for SecretArg {
    type Err = String;

    fn from_str(s: &str) -> Result<SecretArg, String> {
        match s.split_once('=') {
            Some((name, file)) if !name.is_empty() && !file.is_empty() => Ok(SecretArg {
                name: name.to_owned(),
                file: PathBuf::from(file),
            }),
            _ => Err(format!("{s:?} is not NAME=FILE")),
        }
    }
}

/// A `zoa seal` envelope read from a file and checked (format, sizes, the name it was
/// sealed as). Holds ciphertext only.
#[derive(Debug, Clone)]
pub struct SealedSecret {
    pub name: String,
    pub file: PathBuf,
    /// The file's bytes, as they go into the user data.
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub key_arn: String,
    /// The deployment its encryption context names.
    pub deployment: String,
}

impl SealedSecret {
    /// Reads and checks the envelope of `--secret NAME=FILE`.
    pub fn read(arg: &SecretArg) -> Result<SealedSecret, AwsError> {
        let bytes = read_limited(&arg.file, MAX_USER_DATA_LEN)?;
        SealedSecret::from_bytes(&arg.name, &arg.file, bytes)
    }

    /// Checks envelope bytes given as secret `name` (from `file`, named in errors).
    pub fn from_bytes(name: &str, file: &Path, bytes: Vec<u8>) -> Result<SealedSecret, AwsError> {
        let envelope = Envelope::parse(&bytes)
            .map_err(|e| AwsError::file(file, format!("secret {name}: {e}")))?;
        if envelope.name() != name {
            return Err(AwsError::file_refused(
                file,
                format!(
                    "secret {name}: the envelope was sealed as {:?}",
                    envelope.name()
                ),
                Remedy::SecretName {
                    given: name.to_owned(),
                    sealed_as: envelope.name().to_owned(),
                },
            ));
        }
        Ok(SealedSecret {
            name: name.to_owned(),
            file: file.to_owned(),
            sha256: crate::digest::sha256_bytes(&bytes),
            key_arn: envelope.key_arn().to_owned(),
            deployment: envelope
                .encryption_context()
                .get(DEPLOYMENT_CONTEXT_KEY)
                .cloned()
                .unwrap_or_default(),
            bytes,
        })
    }

    /// Refuses an envelope sealed for another deployment or under another key than
    /// `key_arn` (when the deployment's key is known).
    pub fn check_sealed_for(
        &self,
        deployment: &str,
        key_arn: Option<&str>,
    ) -> Result<(), AwsError> {
        if self.deployment != deployment {
            return Err(AwsError::file_refused(
                &self.file,
                format!(
                    "secret {}: sealed for deployment {:?}, not {deployment:?}",
                    self.name, self.deployment
                ),
                Remedy::Seal {
                    dir: None,
                    name: self.name.clone(),
                },
            ));
        }
        match key_arn {
            Some(arn) if arn != self.key_arn => Err(AwsError::file_refused(
                &self.file,
                format!(
                    "secret {}: sealed under key {}, but the deployment's key is {arn}",
                    self.name, self.key_arn
                ),
                Remedy::Seal {
                    dir: None,
                    name: self.name.clone(),
                },
            )),
            _ => Ok(()),
        }
    }
}

/// The user data a deploy wants on its instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDataSpec {
    /// The bytes (before EC2's base64).
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// Secret name → SHA-256 of its envelope file (empty for `--user-data`).
    pub secrets: BTreeMap<String, String>,
    /// The KMS key the envelopes are sealed under (checked to be one for all).
    pub sealed_under: Option<String>,
    /// Where it came from, for the plan: never the contents.
    source: String,
}

impl UserDataSpec {
    /// zoa-init's user data holding `secrets` (at most 16 KiB, each name once).
    pub fn from_secrets(secrets: &[SealedSecret]) -> Result<UserDataSpec, AwsError> {
        let mut data = UserData::default();
        let sealed_under = secrets.first().map(|s| s.key_arn.clone());
        for s in secrets {
            if Some(&s.key_arn) != sealed_under.as_ref() {
                return Err(AwsError::file_refused(
                    &s.file,
                    format!(
                        "secret {}: sealed under key {}, the others under {}",
                        s.name,
                        s.key_arn,
                        sealed_under.as_deref().unwrap_or_default()
                    ),
                    Remedy::SealUnderOneKey,
                ));
            }
            data.insert(&s.name, &s.bytes)
                .map_err(|e| AwsError::file(&s.file, format!("secret {}: {e}", s.name)))?;
        }
        let text = data
            .to_json()
            .map_err(|e| AwsError::step("configuration", format!("sealed secrets: {e}")))?;
        let names: Vec<&str> = data.secrets.keys().map(String::as_str).collect();
        let source = format!("secrets {}", names.join(", "));
        Ok(UserDataSpec {
            sha256: crate::digest::sha256_bytes(text.as_bytes()),
            bytes: text.into_bytes(),
            secrets: secrets
                .iter()
                .map(|s| (s.name.clone(), s.sha256.clone()))
                .collect(),
            sealed_under,
            source,
        })
    }

    /// `--user-data FILE`, passed as it is (at most 16 KiB).
    pub fn from_file(path: &Path) -> Result<UserDataSpec, AwsError> {
        let bytes = read_limited(path, MAX_USER_DATA_LEN)?;
        Ok(UserDataSpec {
            sha256: crate::digest::sha256_bytes(&bytes),
            bytes,
            secrets: BTreeMap::new(),
            sealed_under: None,
            source: format!("from {}", path.display()),
        })
    }

    /// The user data as EC2's API takes it.
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.bytes)
    }

    /// What the plan shows instead of the contents: `<N bytes: secrets a, b>`.
    pub fn summary(&self) -> String {
        format!("<{} bytes: {}>", self.bytes.len(), self.source)
    }
}

/// SHA-256 of user data as EC2 returns it (base64), `None` for none or undecodable.
pub(crate) fn sha256_of_base64(b64: Option<&str>) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64?.trim())
        .ok()?;
    (!bytes.is_empty()).then(|| crate::digest::sha256_bytes(&bytes))
}

/// A file of at most `max` bytes.
pub(crate) fn read_limited(path: &Path, max: usize) -> Result<Vec<u8>, AwsError> {
    crate::fsio::read_bounded(path, max as u64).map_err(|e| match e {
        ReadBoundedError::Io(e) => AwsError::file(path, e),
        ReadBoundedError::TooLarge => AwsError::file(
            path,
            format!("larger than {max} bytes: EC2 user data is limited to 16 KiB"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed envelope (its data key is no real KMS blob; nothing here decrypts).
    fn envelope(deployment: &str, name: &str, key: &str) -> Vec<u8> {
        serde_json::to_vec_pretty(&serde_json::json!({
            "format": "zoa-sealed/1",
            "key_arn": key,
            "encryption_context": {"zoa:deployment": deployment, "zoa:secret": name},
            "algorithm": "AES-256-GCM",
            "encrypted_data_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "nonce": "AAAAAAAAAAAAAAAA",
            "ciphertext": "AAAAAAAAAAAAAAAAAAAAAAAA",
        }))
        .unwrap()
    }

    const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/k1";

    #[test]
    fn secret_args_parse() {
        let a: SecretArg = "api-key=/tmp/a=b.json".parse().unwrap();
        assert_eq!(a.name, "api-key");
        assert_eq!(a.file, PathBuf::from("/tmp/a=b.json"));
        for bad in ["api-key", "=x", "x=", ""] {
            assert!(bad.parse::<SecretArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn envelopes_are_checked_for_name_deployment_and_key() {
        let file = Path::new("a.json");
        let s = SealedSecret::from_bytes("a", file, envelope("demo", "a", KEY)).unwrap();
        assert_eq!((s.key_arn.as_str(), s.deployment.as_str()), (KEY, "demo"));
        s.check_sealed_for("demo", Some(KEY)).unwrap();
        s.check_sealed_for("demo", None).unwrap();
        let e = s
            .check_sealed_for("other", Some(KEY))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sealed for deployment \"demo\", not \"other\""),
            "{e}"
        );
        let e = s
            .check_sealed_for("demo", Some("arn:aws:kms:us-east-1:123456789012:key/k2"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a.json: secret a: sealed under key"), "{e}");
        let e = SealedSecret::from_bytes("b", file, envelope("demo", "a", KEY))
            .unwrap_err()
            .to_string();
        assert!(e.contains("was sealed as \"a\""), "{e}");
        let e = SealedSecret::from_bytes("a", file, b"#!/bin/sh".to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a zoa sealed envelope"), "{e}");
    }

    #[test]
    fn user_data_is_zoa_inits_format_and_the_summary_hides_the_contents() {
        let file = Path::new("x.json");
        let secrets = [
            SealedSecret::from_bytes("b", file, envelope("demo", "b", KEY)).unwrap(),
            SealedSecret::from_bytes("a", file, envelope("demo", "a", KEY)).unwrap(),
        ];
        let spec = UserDataSpec::from_secrets(&secrets).unwrap();
        let back = UserData::parse(&spec.bytes).unwrap();
        assert_eq!(back.envelopes(&["a", "b"]).unwrap().len(), 2);
        assert_eq!(
            spec.summary(),
            format!("<{} bytes: secrets a, b>", spec.bytes.len())
        );
        assert!(!spec.summary().contains("AAAA"));
        assert_eq!(
            sha256_of_base64(Some(&spec.base64())),
            Some(spec.sha256.clone())
        );
        assert_eq!(spec.secrets["a"], secrets[1].sha256);
        // The same envelopes make the same bytes: a rerun compares digests.
        assert_eq!(UserDataSpec::from_secrets(&secrets).unwrap(), spec);
        let twice = [secrets[1].clone(), secrets[1].clone()];
        let e = UserDataSpec::from_secrets(&twice).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }
}
