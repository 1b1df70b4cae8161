//! The project's own Secure Boot keys: a Platform Key (PK), a Key Exchange Key (KEK) and a
//! signature database key (db), each an RSA key with a self-signed X.509 v3 certificate.
//!
//! `zoa keygen --secure-boot --out PREFIX` writes, for each of `PK`, `KEK` and `db`:
//! `PREFIX-<role>.key` (PKCS#8 PEM, mode 0600), `PREFIX-<role>.crt` (PEM) and
//! `PREFIX-<role>.cer` (the same certificate in DER, the form firmware setup menus and
//! EFI signature list tools take). The db key is the one that signs UKIs (see
//! [`super::sign`]); PK and KEK only sign updates of the variables below them.
//!
//! Choices, and why:
//! - **RSA-2048.** The UEFI specification's signature types are built around RSA-2048
//!   (`EFI_CERT_RSA2048`, and RSA-2048 is the key size firmware must support in X.509
//!   certificates); EDK2/OVMF, and so EC2's UEFI, also verifies larger keys, but other
//!   firmware in the field accepts only 2048 bits, and Microsoft's own UEFI CAs (2011 and
//!   2023) are RSA-2048. Signatures use SHA-256, which every Secure Boot implementation
//!   verifies.
//! - **Three independent self-signed certificates**, as in the usual "own keys" guides: each
//!   is its own trust anchor, so a db certificate can be enrolled alone (AWS `UefiData`,
//!   `efi-updatevar`, a setup menu) without a chain.
//! - **30 years of validity.** Firmware does not check certificate time (EDK2 verifies
//!   with `X509_V_FLAG_NO_CHECK_TIME`), but host tools such as `sbverify` do; a release
//!   must stay verifiable for the life of the fleet.
//! - **No password.** Like the CI keys of `zoa keygen --no-password`, these keys are meant
//!   for a secret store or an HSM import; `sbsign` and `zoa sign-uki` read them as they are.
//!   Protect them with file permissions (0600) and the store's access control.

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509NameRef, X509};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::fsio::{self, ReadBoundedError};

/// RSA modulus size of generated keys (see the module documentation for why 2048).
pub const RSA_BITS: u32 = 2048;
/// Certificate validity: 30 years (plus the leap days in them).
pub const VALIDITY_DAYS: u32 = 30 * 365 + 8;
/// The default subject name: certificates are `CN=zoa PK`, `CN=zoa KEK`, `CN=zoa db`.
pub const DEFAULT_NAME: &str = "zoa";
/// Longest `name`: a CommonName holds at most 64 characters, and " KEK" is appended.
const MAX_NAME_CHARS: usize = 60;
/// Key and certificate files are a few KiB; the cap keeps a wrong path (a disk image) from
/// being read whole.
const MAX_KEY_FILE: u64 = 1 << 20;

/// The three Secure Boot key roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Role {
    /// Platform Key: owns the platform; signs KEK updates.
    #[serde(rename = "PK")]
    Pk,
    /// Key Exchange Key: signs db and dbx updates.
    #[serde(rename = "KEK")]
    Kek,
    /// Signature database key: signs the boot images (UKIs).
    #[serde(rename = "db")]
    Db,
}

impl Role {
    /// Every role, in enrolment order (PK last when enrolling, first when listing).
    pub const ALL: [Role; 3] = [Role::Pk, Role::Kek, Role::Db];

    /// The UEFI variable name: `PK`, `KEK` or `db`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Pk => "PK",
            Role::Kek => "KEK",
            Role::Db => "db",
        }
    }
}

/// Errors generating or loading Secure Boot keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum SecureBootKeyError {
    #[error("{path}: already exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("{prefix:?}: not a key file prefix: give a path without a trailing slash, such as keys/secureboot (for keys/secureboot-PK.key, ...)")]
    BadPrefix { prefix: PathBuf },
    #[error("certificate name {name:?} {problem}: give a short single-line name such as \"acme inference\"")]
    BadName { name: String, problem: &'static str },
    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("cannot generate the {role} key or certificate (OpenSSL: {source})")]
    Generate {
        role: &'static str,
        source: ErrorStack,
    },
    #[error("{path}: not a private key ({detail}): give an unencrypted PEM or DER private key (decrypt a protected one with `openssl pkey -in KEY -out PLAIN.key`)")]
    BadKey { path: PathBuf, detail: String },
    #[error("{path}: not an X.509 certificate ({detail}): give a PEM or DER certificate")]
    BadCertificate { path: PathBuf, detail: String },
}

/// The files written for one role.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecureBootKey {
    pub role: Role,
    /// `PREFIX-<role>.key`: the private key, PKCS#8 PEM, mode 0600.
    pub key: PathBuf,
    /// `PREFIX-<role>.crt`: the certificate, PEM.
    pub cert: PathBuf,
    /// `PREFIX-<role>.cer`: the same certificate, DER.
    pub cer: PathBuf,
    /// The certificate's subject, e.g. `CN=zoa db`.
    pub subject: String,
    /// The certificate's serial number, lower-case hex.
    pub serial: String,
    /// SHA-256 of the DER certificate (its fingerprint), lower-case hex.
    pub sha256: String,
}

/// What `zoa keygen --secure-boot` wrote: PK, KEK and db, in that order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecureBootKeys {
    pub keys: Vec<SecureBootKey>,
}

impl SecureBootKeys {
    /// The files of one role.
    pub fn get(&self, role: Role) -> Option<&SecureBootKey> {
        self.keys.iter().find(|k| k.role == role)
    }
}

/// `PREFIX-<role><ext>`: appended, not an extension swap, so `keys/v1.2` stays intact.
fn role_path(prefix: &Path, role: Role, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(format!("-{}{ext}", role.name()));
    PathBuf::from(s)
}

fn check_name(name: &str) -> Result<(), SecureBootKeyError> {
    let bad = |problem| {
        Err(SecureBootKeyError::BadName {
            name: name.to_owned(),
            problem,
        })
    };
    if name.trim().is_empty() {
        return bad("is empty");
    }
    if name.trim() != name {
        return bad("has leading or trailing blanks");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return bad("is longer than 60 characters (an X.509 CommonName holds 64)");
    }
    if name.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    Ok(())
}

/// `CN=zoa db, O=...`: a certificate name as one line, for messages and JSON.
pub fn describe_name(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let field = e.object().nid().short_name().unwrap_or("?");
            let value = e
                .data()
                .to_string()
                .unwrap_or_else(|_| hex::encode(e.data().as_slice()));
            format!("{field}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One role's key and self-signed certificate.
pub(crate) fn generate(role: Role, name: &str) -> Result<(PKey<Private>, X509), ErrorStack> {
    let key = PKey::from_rsa(Rsa::generate(RSA_BITS)?)?;
    let mut subject = X509NameBuilder::new()?;
    subject.append_entry_by_text("CN", &format!("{name} {}", role.name()))?;
    let subject = subject.build();

    let mut b = X509Builder::new()?;
    // X.509 v3 (the version field counts from 0).
    b.set_version(2)?;
    // RFC 5280: positive, at most 20 octets; 159 random bits stay positive in DER.
    let mut serial = BigNum::new()?;
    serial.rand(159, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(&subject)?;
    b.set_pubkey(&key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    let not_after = Asn1Time::days_from_now(VALIDITY_DAYS)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    // End-entity certificates: each key signs data (images or variable updates), none
    // issues certificates. Firmware ignores key usage (EDK2 verifies with
    // X509_PURPOSE_ANY); host tools that check it see a code-signing db certificate.
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    if role == Role::Db {
        b.append_extension(ExtendedKeyUsage::new().code_signing().build()?)?;
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(None, None))?;
    b.append_extension(aki)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((key, b.build()))
}

/// `zoa keygen --secure-boot`: PK, KEK and db keys and certificates at `PREFIX-PK.key`,
/// `PREFIX-PK.crt`, `PREFIX-PK.cer`, and likewise for `KEK` and `db`. Certificate subjects
/// are `CN=<name> PK`, `CN=<name> KEK` and `CN=<name> db`.
///
/// Refuses to overwrite any existing file unless `force`. Every file is written to a
/// temporary file in the target directory and renamed into place; a failure part-way
/// removes what this call had already moved, so no partial key set is left behind.
pub fn keygen_secure_boot(
    prefix: &Path,
    name: &str,
    force: bool,
) -> Result<SecureBootKeys, SecureBootKeyError> {
    // "keys/" would give "keys/-PK.key": surely a mistake.
    if prefix.file_name().is_none() || prefix.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(SecureBootKeyError::BadPrefix {
            prefix: prefix.to_owned(),
        });
    }
    check_name(name)?;
    // The private keys' PEM is zeroed when dropped (certificates are not secret, but one
    // type keeps the plan simple). OpenSSL zeroes its own copy of a key when freeing it.
    let mut plan: Vec<(PathBuf, Zeroizing<Vec<u8>>, u32)> = Vec::new();
    let mut keys = Vec::new();
    for role in Role::ALL {
        let generate_err = |source| SecureBootKeyError::Generate {
            role: role.name(),
            source,
        };
        let (key, cert) = generate(role, name).map_err(generate_err)?;
        let key_pem = Zeroizing::new(key.private_key_to_pem_pkcs8().map_err(generate_err)?);
        let cert_pem = cert.to_pem().map_err(generate_err)?;
        let cert_der = cert.to_der().map_err(generate_err)?;
        let serial = cert
            .serial_number()
            .to_bn()
            .and_then(|bn| bn.to_hex_str().map(|s| s.to_lowercase()))
            .map_err(generate_err)?;
        let entry = SecureBootKey {
            role,
            key: role_path(prefix, role, ".key"),
            cert: role_path(prefix, role, ".crt"),
            cer: role_path(prefix, role, ".cer"),
            subject: describe_name(cert.subject_name()),
            serial,
            sha256: hex::encode(Sha256::digest(&cert_der)),
        };
        plan.push((entry.key.clone(), key_pem, fsio::PRIVATE));
        plan.push((entry.cert.clone(), Zeroizing::new(cert_pem), fsio::PUBLIC));
        plan.push((entry.cer.clone(), Zeroizing::new(cert_der), fsio::PUBLIC));
        keys.push(entry);
    }
    if !force {
        for (path, _, _) in &plan {
            // symlink_metadata: a dangling symlink is still something we must not replace.
            if path.symlink_metadata().is_ok() {
                return Err(SecureBootKeyError::Exists { path: path.clone() });
            }
        }
    }
    let dir = match prefix.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(SecureBootKeyError::Io {
            path: dir,
            action: "write the keys into this directory",
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such directory; create it first",
            ),
        });
    }
    // All temporary files first: a full disk or a permission problem shows up before any
    // file is in place.
    let mut temps = Vec::with_capacity(plan.len());
    for (path, bytes, mode) in &plan {
        temps.push((write_temp(path, bytes, *mode)?, path));
    }
    let mut placed: Vec<&PathBuf> = Vec::new();
    for (tmp, path) in temps {
        if let Err(e) = persist(tmp, path, force) {
            // A partial set (a PK without its certificate, say) would only confuse: take
            // back what this call moved into place.
            for p in placed {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        placed.push(path);
    }
    Ok(SecureBootKeys { keys })
}

/// A temporary file beside `target` holding `bytes`, with `mode` from the start.
fn write_temp(
    target: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<tempfile::NamedTempFile, SecureBootKeyError> {
    fsio::write_temp(target, bytes, mode).map_err(|e| SecureBootKeyError::Io {
        path: target.to_owned(),
        action: e.step,
        source: e.source,
    })
}

/// Moves a key or certificate file into place, synced first (a key cannot be made again);
/// an existing file is only replaced with `force`.
fn persist(
    tmp: tempfile::NamedTempFile,
    target: &Path,
    force: bool,
) -> Result<(), SecureBootKeyError> {
    let how = fsio::Persist {
        sync: true,
        replace: force,
    };
    fsio::persist(tmp, target, how).map_err(|e| {
        if e.source.kind() == std::io::ErrorKind::AlreadyExists {
            SecureBootKeyError::Exists {
                path: target.to_owned(),
            }
        } else {
            SecureBootKeyError::Io {
                path: target.to_owned(),
                action: e.step,
                source: e.source,
            }
        }
    })
}

/// Reads at most [`MAX_KEY_FILE`] bytes of a certificate file.
fn read_small(path: &Path, what: &'static str) -> Result<Vec<u8>, SecureBootKeyError> {
    fsio::read_bounded(path, MAX_KEY_FILE).map_err(read_small_err(path, what))
}

/// [`read_small`] for a private key file (the key itself), zeroed when dropped.
fn read_small_secret(
    path: &Path,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>, SecureBootKeyError> {
    fsio::read_secret_file(path, MAX_KEY_FILE).map_err(read_small_err(path, what))
}

fn read_small_err<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(ReadBoundedError) -> SecureBootKeyError + 'a {
    move |e| {
        let source = match e {
            ReadBoundedError::Io(e) => e,
            ReadBoundedError::TooLarge => {
                std::io::Error::other("larger than 1 MiB; key and certificate files are a few KiB")
            }
        };
        SecureBootKeyError::Io {
            path: path.to_owned(),
            action: what,
            source,
        }
    }
}

fn is_pem(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, b"-----BEGIN ").is_some()
}

/// Loads an unencrypted private key (PEM, PKCS#8 or traditional, or DER).
pub fn load_private_key(path: &Path) -> Result<PKey<Private>, SecureBootKeyError> {
    let bytes = read_small_secret(path, "read the private key")?;
    let bad = |detail: String| SecureBootKeyError::BadKey {
        path: path.to_owned(),
        detail,
    };
    if is_pem(&bytes) {
        if memchr::memmem::find(&bytes, b"ENCRYPTED").is_some() {
            return Err(bad("the key is password-protected".into()));
        }
        PKey::private_key_from_pem(&bytes).map_err(|e| bad(e.to_string()))
    } else {
        PKey::private_key_from_der(&bytes).map_err(|e| bad(e.to_string()))
    }
}

/// Loads one X.509 certificate (PEM or DER).
pub fn load_certificate(path: &Path) -> Result<X509, SecureBootKeyError> {
    let mut certs = load_certificates(path)?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        n => Err(SecureBootKeyError::BadCertificate {
            path: path.to_owned(),
            detail: format!("holds {n} certificates where one is expected"),
        }),
    }
}

/// Loads every certificate of a file: a PEM file may hold several (a chain); a DER file
/// holds one.
pub fn load_certificates(path: &Path) -> Result<Vec<X509>, SecureBootKeyError> {
    let bytes = read_small(path, "read the certificate")?;
    let bad = |detail: String| SecureBootKeyError::BadCertificate {
        path: path.to_owned(),
        detail,
    };
    let certs = if is_pem(&bytes) {
        X509::stack_from_pem(&bytes).map_err(|e| bad(e.to_string()))?
    } else {
        vec![X509::from_der(&bytes).map_err(|e| bad(e.to_string()))?]
    };
    if certs.is_empty() {
        return Err(bad("no PEM CERTIFICATE block".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::X509StoreContext;

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_three_self_signed_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("sb");
        let keys = keygen_secure_boot(&prefix, "acme", false).unwrap();
        assert_eq!(keys.keys.len(), 3);
        let mut serials = Vec::new();
        for (k, role) in keys.keys.iter().zip(["PK", "KEK", "db"]) {
            assert_eq!(k.key, dir.path().join(format!("sb-{role}.key")));
            assert_eq!(k.subject, format!("CN=acme {role}"));
            assert_eq!(mode(&k.key), 0o600);
            assert_eq!(mode(&k.cert), 0o644);
            let key = load_private_key(&k.key).unwrap();
            let cert = load_certificate(&k.cert).unwrap();
            let cer = load_certificate(&k.cer).unwrap();
            assert_eq!(cert.to_der().unwrap(), cer.to_der().unwrap());
            assert!(cert.public_key().unwrap().public_eq(&key));
            assert_eq!(key.rsa().unwrap().size() * 8, RSA_BITS);
            assert!(cert.verify(&key).unwrap(), "self-signed");
            assert_eq!(cert.version(), 2);
            assert_eq!(
                hex::encode(Sha256::digest(cert.to_der().unwrap())),
                k.sha256
            );
            // The certificate is its own trust anchor.
            let mut store = X509StoreBuilder::new().unwrap();
            store.add_cert(cert.clone()).unwrap();
            let store = store.build();
            let mut ctx = X509StoreContext::new().unwrap();
            let chain = openssl::stack::Stack::new().unwrap();
            assert!(ctx
                .init(&store, &cert, &chain, |c| c.verify_cert())
                .unwrap());
            serials.push(k.serial.clone());
        }
        serials.dedup();
        assert_eq!(serials.len(), 3, "random serials");
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 9, "{names:?}");
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("sb");
        std::fs::write(dir.path().join("sb-KEK.cer"), b"keep").unwrap();
        let e = keygen_secure_boot(&prefix, DEFAULT_NAME, false).unwrap_err();
        assert!(matches!(e, SecureBootKeyError::Exists { .. }), "{e}");
        assert!(e.to_string().contains("sb-KEK.cer"), "{e}");
        // Nothing else was written, and the existing file is untouched.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(
            std::fs::read(dir.path().join("sb-KEK.cer")).unwrap(),
            b"keep"
        );
        keygen_secure_boot(&prefix, DEFAULT_NAME, true).unwrap();
        assert_ne!(
            std::fs::read(dir.path().join("sb-KEK.cer")).unwrap(),
            b"keep"
        );
    }

    #[test]
    fn bad_prefix_name_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let slash = format!("{}/", dir.path().display());
        assert!(matches!(
            keygen_secure_boot(Path::new(&slash), "x", false),
            Err(SecureBootKeyError::BadPrefix { .. })
        ));
        for name in ["", " x", "a\nb", &"n".repeat(61)] {
            assert!(matches!(
                keygen_secure_boot(&dir.path().join("k"), name, false),
                Err(SecureBootKeyError::BadName { .. })
            ));
        }
        let e = keygen_secure_boot(&dir.path().join("missing/k"), "x", false).unwrap_err();
        assert!(e.to_string().contains("no such directory"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn loaders_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, b"not a certificate").unwrap();
        let e = load_certificate(&junk).unwrap_err().to_string();
        assert!(e.contains("junk.crt") && e.contains("not an X.509"), "{e}");
        let e = load_private_key(&junk).unwrap_err().to_string();
        assert!(
            e.contains("junk.crt") && e.contains("not a private key"),
            "{e}"
        );
        let enc = dir.path().join("enc.key");
        std::fs::write(
            &enc,
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = load_private_key(&enc).unwrap_err().to_string();
        assert!(e.contains("password-protected"), "{e}");
    }
}
