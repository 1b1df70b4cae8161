//! Which db entry the firmware measures into PCR7 as EV_EFI_VARIABLE_AUTHORITY when it
//! verifies a UKI with Secure Boot on, or why it would refuse the image.
//!
//! The decision follows EDK2's `DxeImageVerificationLib` (OVMF, and the firmware of EC2's
//! UEFI instances), for one image:
//! 1. an image whose Authenticode SHA-256 is in dbx is refused;
//! 2. a signed image whose signature verifies against an X.509 certificate in dbx is
//!    refused;
//! 3. the first X.509 certificate in db, in variable order (list by list, entry by entry),
//!    that verifies a signature — the signer itself or any CA above it, with the
//!    certificates the signature carries — is the authority (its EFI_SIGNATURE_DATA,
//!    owner GUID and certificate, is measured);
//! 4. otherwise an image whose Authenticode SHA-256 is in db is admitted by that entry;
//! 5. otherwise the image is refused.
//!
//! Recent EDK2 checks an image's hash in db before its signature, so an image admitted
//! both ways is measured differently by different firmware: that case is refused too.
//!
//! dbx entry types zoa does not evaluate (certificate hashes with revocation times, other
//! hash algorithms) make it refuse to predict rather than guess.

use crate::uefi::file::ImageFile;

use crate::secureboot::sign::{self, VerifyError};
use crate::uefi::esl::{
    self, SignatureData, SignatureList, EFI_CERT_SHA256_GUID, EFI_CERT_X509_GUID,
};

/// The db entry that admits the image, and a line saying which it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// The EFI_SIGNATURE_DATA bytes the firmware measures: owner GUID, then the data.
    pub signature_data: Vec<u8>,
    /// E.g. `db list 2 entry 1: X.509 CN=zoa db (owner 5a4f…)`.
    pub what: String,
}

/// Decides the authority for the image at `uki` from the db and dbx variable contents
/// (EFI signature lists). `image_sha256` is the image's Authenticode SHA-256. The error is
/// the reason the firmware would refuse to boot it, for the user.
pub fn authority(
    uki: &ImageFile,
    db: &[u8],
    dbx: &[u8],
    image_sha256: &[u8; 32],
) -> Result<Authority, String> {
    let db = esl::parse(db).map_err(|e| format!("db: {e}"))?;
    let dbx = esl::parse(dbx).map_err(|e| format!("dbx: {e}"))?;
    let dbx_certs = dbx_certificates(&dbx, image_sha256)?;
    let signed = match sign::read_signatures(uki) {
        Ok(sigs) => !sigs.is_empty(),
        Err(VerifyError::NotSigned { .. }) => false,
        Err(e) => return Err(e.to_string()),
    };
    let mut untrusted = None;
    if signed {
        if !dbx_certs.is_empty() {
            if let Ok(v) = sign::verify_pe(uki, &dbx_certs) {
                return Err(format!(
                    "its signature verifies against dbx certificate {} ({}): the firmware would refuse to boot it",
                    v.trust_index + 1,
                    v.trust_subject
                ));
            }
        }
        let entries = x509_entries(&db);
        let certs: Vec<&[u8]> = entries.iter().map(|e| e.2.data.as_slice()).collect();
        match sign::verify_pe(uki, &certs) {
            Ok(v) => {
                if let Some((list, entry, _)) = find_hash(&db, image_sha256) {
                    // EDK2 before 2024 measures the certificate, later releases check the
                    // image's hash in db first and measure that entry: firmware decides.
                    return Err(format!(
                        "both a db certificate and db list {list} entry {entry} (the UKI's SHA-256) admit the image, and firmware versions differ in which of the two they measure; refusing to guess: enroll one or the other"
                    ));
                }
                let (list, entry, data) = &entries[v.trust_index];
                return Ok(Authority {
                    signature_data: signature_data_bytes(data),
                    what: format!(
                        "db list {list} entry {entry}: X.509 {} (owner {})",
                        v.trust_subject, data.owner
                    ),
                });
            }
            Err(VerifyError::Untrusted { details, .. }) => untrusted = Some(details),
            Err(VerifyError::Unusable { details, .. }) => untrusted = Some(details),
            Err(e) => return Err(e.to_string()),
        }
    }
    if let Some((list, entry, data)) = find_hash(&db, image_sha256) {
        return Ok(Authority {
            signature_data: signature_data_bytes(data),
            what: format!(
                "db list {list} entry {entry}: SHA-256 {} of the image (owner {})",
                hex::encode(image_sha256),
                data.owner
            ),
        });
    }
    Err(match untrusted {
        Some(details) => format!(
            "Secure Boot is on and no db entry verifies the UKI's signature ({details}), nor is its hash in db: the firmware would refuse to boot it"
        ),
        None => "Secure Boot is on but the UKI is unsigned and its hash is not in db: the firmware would refuse to boot it".to_owned(),
    })
}

/// dbx's X.509 certificates (DER), after refusing an image whose hash dbx lists and any
/// dbx entry type this prediction does not evaluate.
fn dbx_certificates<'a>(
    dbx: &'a [SignatureList],
    image_sha256: &[u8; 32],
) -> Result<Vec<&'a [u8]>, String> {
    let mut certs = Vec::new();
    for (i, list) in dbx.iter().enumerate() {
        if list.signature_type == EFI_CERT_SHA256_GUID {
            if list.entries.iter().any(|e| e.data == image_sha256) {
                return Err(format!(
                    "the UKI's Authenticode SHA-256 {} is in dbx (list {}): the firmware would refuse to boot it",
                    hex::encode(image_sha256),
                    i + 1
                ));
            }
        } else if list.signature_type == EFI_CERT_X509_GUID {
            certs.extend(list.entries.iter().map(|e| e.data.as_slice()));
        } else {
            return Err(format!(
                "dbx list {} has entries of type {}, which zoa does not evaluate (only SHA-256 hashes and X.509 certificates); refusing to guess whether the firmware admits the image",
                i + 1,
                list.signature_type
            ));
        }
    }
    Ok(certs)
}

/// db's X.509 entries in variable order, numbered from 1 (list, entry).
fn x509_entries(db: &[SignatureList]) -> Vec<(usize, usize, &SignatureData)> {
    db.iter()
        .enumerate()
        .filter(|(_, l)| l.signature_type == EFI_CERT_X509_GUID)
        .flat_map(|(i, l)| {
            l.entries
                .iter()
                .enumerate()
                .map(move |(j, e)| (i + 1, j + 1, e))
        })
        .collect()
}

fn find_hash<'a>(
    db: &'a [SignatureList],
    image_sha256: &[u8; 32],
) -> Option<(usize, usize, &'a SignatureData)> {
    db.iter()
        .enumerate()
        .filter(|(_, l)| l.signature_type == EFI_CERT_SHA256_GUID)
        .find_map(|(i, l)| {
            l.entries
                .iter()
                .position(|e| e.data == image_sha256)
                .map(|j| (i + 1, j + 1, &l.entries[j]))
        })
}

/// EFI_SIGNATURE_DATA as it sits in the list: SignatureOwner, then the data.
fn signature_data_bytes(d: &SignatureData) -> Vec<u8> {
    let mut out = d.owner.as_bytes().to_vec();
    out.extend_from_slice(&d.data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(p: &std::path::Path) -> crate::uefi::file::ImageFile {
        crate::uefi::file::ImageFile::open(p).unwrap()
    }
    use crate::secureboot::keys::{generate, Role};
    use crate::secureboot::sign::{sign_pe, tests::tiny_pe};
    use crate::uefi::esl::{serialize, Guid, SignatureList};

    const OWNER: Guid = Guid::from_bytes([7; 16]);

    struct Case {
        dir: tempfile::TempDir,
        unsigned: std::path::PathBuf,
        signed: std::path::PathBuf,
        cert: Vec<u8>,
        sha256: [u8; 32],
    }

    fn case() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let unsigned = dir.path().join("a.efi");
        std::fs::write(&unsigned, tiny_pe(16, &[])).unwrap();
        let (key, cert) = generate(Role::Db, "authority test").unwrap();
        let signed = dir.path().join("signed.efi");
        let s = sign_pe(&unsigned, &signed, &key, &cert, &[]).unwrap();
        let sha256 = hex::decode(&s.authenticode_sha256)
            .unwrap()
            .try_into()
            .unwrap();
        Case {
            dir,
            unsigned,
            signed,
            cert: cert.to_der().unwrap(),
            sha256,
        }
    }

    fn esl(lists: &[SignatureList]) -> Vec<u8> {
        serialize(lists).unwrap()
    }

    fn other_cert() -> Vec<u8> {
        generate(Role::Db, "someone else")
            .unwrap()
            .1
            .to_der()
            .unwrap()
    }

    #[test]
    fn the_first_db_certificate_that_verifies_is_the_authority() {
        let c = case();
        let db = esl(&[
            SignatureList::x509(OWNER, &other_cert()),
            SignatureList::sha256(OWNER, &[[1; 32]]),
            SignatureList::x509(OWNER, &c.cert),
        ]);
        let a = authority(&open(&c.signed), &db, &[], &c.sha256).unwrap();
        assert!(
            a.what.starts_with("db list 3 entry 1: X.509 "),
            "{}",
            a.what
        );
        assert_eq!(
            a.signature_data,
            [OWNER.as_bytes().as_slice(), &c.cert].concat()
        );
        assert!(c.dir.path().exists());
    }

    #[test]
    fn an_unsigned_image_is_admitted_only_by_its_hash() {
        let c = case();
        let db = esl(&[SignatureList::sha256(OWNER, &[[1; 32], c.sha256])]);
        let a = authority(&open(&c.unsigned), &db, &[], &c.sha256).unwrap();
        assert!(
            a.what.starts_with("db list 1 entry 2: SHA-256 "),
            "{}",
            a.what
        );
        assert_eq!(
            a.signature_data,
            [OWNER.as_bytes().as_slice(), &c.sha256].concat()
        );
        let cert_only = esl(&[SignatureList::x509(OWNER, &c.cert)]);
        let e = authority(&open(&c.unsigned), &cert_only, &[], &c.sha256).unwrap_err();
        assert!(e.contains("the UKI is unsigned"), "{e}");
    }

    #[test]
    fn refusals_name_the_reason() {
        let c = case();
        let db = esl(&[SignatureList::x509(OWNER, &c.cert)]);
        // Signed by a key db does not hold.
        let stranger = esl(&[SignatureList::x509(OWNER, &other_cert())]);
        let e = authority(&open(&c.signed), &stranger, &[], &c.sha256).unwrap_err();
        assert!(e.contains("no db entry verifies"), "{e}");
        // Its hash revoked, its signer revoked.
        let dbx = esl(&[SignatureList::sha256(OWNER, &[c.sha256])]);
        let e = authority(&open(&c.signed), &db, &dbx, &c.sha256).unwrap_err();
        assert!(e.contains("is in dbx (list 1)"), "{e}");
        let dbx = esl(&[SignatureList::x509(OWNER, &c.cert)]);
        let e = authority(&open(&c.signed), &db, &dbx, &c.sha256).unwrap_err();
        assert!(e.contains("verifies against dbx certificate 1"), "{e}");
        // A dbx entry type this prediction does not evaluate.
        let mut odd = SignatureList::sha256(OWNER, &[[2; 32]]);
        odd.signature_type = Guid::from_bytes([9; 16]);
        let e = authority(&open(&c.signed), &db, &esl(&[odd]), &c.sha256).unwrap_err();
        assert!(e.contains("does not evaluate"), "{e}");
        // Admitted both by certificate and by hash: firmware versions disagree.
        let both = esl(&[
            SignatureList::x509(OWNER, &c.cert),
            SignatureList::sha256(OWNER, &[c.sha256]),
        ]);
        let e = authority(&open(&c.signed), &both, &[], &c.sha256).unwrap_err();
        assert!(e.contains("firmware versions differ"), "{e}");
        // Malformed lists.
        let e = authority(&open(&c.signed), b"short", &[], &c.sha256).unwrap_err();
        assert!(e.starts_with("db: "), "{e}");
    }
}
