//! Authenticode signatures on PE images (UKIs): signing with a db key, and verification
//! that decides, as UEFI firmware does, which trusted certificate accepts an image.
//!
//! # The signature
//! An Authenticode signature is a PKCS#7 (RFC 2315) `SignedData` whose content is a
//! Microsoft `SpcIndirectDataContent` (1.3.6.1.4.1.311.2.1.4): the image's Authenticode
//! digest (see [`crate::uefi::authenticode`]) in a `DigestInfo`, next to an
//! `SpcPeImageData` (1.3.6.1.4.1.311.2.1.15). The signer's authenticated attributes carry
//! contentType and messageDigest, where messageDigest is the digest of the
//! SpcIndirectDataContent's *value* octets — without its SEQUENCE tag and length, a quirk
//! of PKCS#7 v1.5 that every Authenticode implementation follows. The DER goes into a
//! `WIN_CERTIFICATE` (revision 0x0200, type 0x0002 PKCS_SIGNED_DATA) appended to the file
//! at an 8-byte-aligned offset, which the certificate table data directory entry points to.
//!
//! zoa's signatures are **reproducible**: no signing-time attribute (what `sbsign` and
//! `osslsigncode` add), and RSA PKCS#1 v1.5 signatures are deterministic, so the same key
//! and the same image always give the same bytes.
//!
//! # How firmware verifies (EDK2, which OVMF and EC2's UEFI are built from)
//! `DxeImageVerificationLib` walks the certificate table; for each PKCS#7 entry it reads the
//! hash algorithm at a fixed offset (32) of the DER — which requires two-byte long-form
//! lengths on the outer structures — hashes the image, and then (`IsAllowedByDb`) tries
//! db's X.509 entries **in order**: `AuthenticodeVerify` compares the image digest with the
//! last bytes of SpcIndirectDataContent and calls `Pkcs7Verify` with that single db
//! certificate as the trust store, with `X509_V_FLAG_PARTIAL_CHAIN |
//! X509_V_FLAG_NO_CHECK_TIME` and `X509_PURPOSE_ANY` (CryptoPkg `CryptPkcs7VerifyCommon.c`).
//! So a db certificate accepts an image when it is the signer's certificate itself or any
//! certificate above it that the chain carried in the PKCS#7 leads to; validity dates and
//! key usage are ignored. The first db certificate that verifies is the one measured into
//! PCR7 as EV_EFI_VARIABLE_AUTHORITY (its EFI_SIGNATURE_DATA: owner GUID and certificate).
//! [`verify_pe`] follows those steps with OpenSSL's own `PKCS7_verify`, with the same flags.
//! Not modelled here: dbx (revoked certificates and hashes), and image hashes in db.

use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use der::asn1::{Any, BitString, ObjectIdentifier, OctetString, SetOfVec};
use der::{Decode, Encode, Reader, Sequence, SliceReader, Tag, TagNumber, Tagged};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{Id, PKeyRef, Private};
use openssl::sign::Signer;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509PurposeId, X509Ref, X509};
use sha2::{Digest, Sha256};

use super::keys::{self, describe_name, SecureBootKeyError};
use crate::fsio;
use crate::uefi::authenticode::{authenticode_job, AuthenticodeError};
use crate::uefi::file::ImageFile;
use crate::uefi::hashing::hash_jobs;
use crate::uefi::pe::{PeError, PeLayout};
use crate::uefi::uki::ChecksumWriter;

/// `WIN_CERTIFICATE.wRevision`: WIN_CERT_REVISION_2_0.
pub const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERTIFICATE.wCertificateType`: WIN_CERT_TYPE_PKCS_SIGNED_DATA.
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;
/// `WIN_CERTIFICATE.wCertificateType`: WIN_CERT_TYPE_EFI_GUID (UEFI's GUID-typed wrapper).
pub const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0ef1;
/// dwLength (4), wRevision (2), wCertificateType (2).
const WIN_CERTIFICATE_HEADER: usize = 8;
/// EFI_CERT_TYPE_PKCS7_GUID {4aafd29d-68df-49ee-8aa9-347d375665a7}, as stored (mixed endian).
const EFI_CERT_TYPE_PKCS7_GUID: [u8; 16] = [
    0x9d, 0xd2, 0xaf, 0x4a, 0xdf, 0x68, 0xee, 0x49, 0x8a, 0xa9, 0x34, 0x7d, 0x37, 0x56, 0x65, 0xa7,
];
/// Largest certificate table read: a few signatures with chains are tens of KiB.
const MAX_CERT_TABLE: u32 = 1 << 20;

const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const OID_SPC_INDIRECT_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
const OID_SPC_PE_IMAGE_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");
const OID_SPC_SP_OPUS_INFO: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.12");
const OID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const OID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The hash algorithm OIDs EDK2 looks for at offset 32 of the signature (their value
/// octets), and what it does with each.
const EDK2_HASH_OIDS: &[([u8; 9], Option<DigestAlgorithm>)] = &[
    // SHA-224: listed by EDK2 but without hash functions, so never usable.
    ([0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04], None),
    (
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
        Some(DigestAlgorithm::Sha256),
    ),
    (
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02],
        Some(DigestAlgorithm::Sha384),
    ),
    (
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
        Some(DigestAlgorithm::Sha512),
    ),
];

/// Hash algorithm of an Authenticode digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

/// Errors signing a PE image.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Pe(#[from] PeError),
    #[error(transparent)]
    Authenticode(#[from] AuthenticodeError),
    #[error(transparent)]
    Key(#[from] SecureBootKeyError),
    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("{path}: already signed (a certificate table of {size} bytes at {offset:#x}): sign the unsigned image; zoa does not add or replace signatures")]
    AlreadySigned {
        path: PathBuf,
        offset: u32,
        size: u32,
    },
    #[error("{path}: the PE optional header has no certificate table data directory entry (NumberOfRvaAndSizes <= 4), so no signature can be attached: rebuild the image with the standard 16 data directories")]
    NoCertDirectory { path: PathBuf },
    #[error("{path}: the signed image would be larger than 4 GiB, beyond what the PE certificate table can address")]
    TooLarge { path: PathBuf },
    #[error("{key}: this private key does not belong to the certificate {cert} ({subject}): give the key and the certificate from the same pair (PREFIX-db.key with PREFIX-db.crt)")]
    KeyMismatch {
        key: String,
        cert: String,
        subject: String,
    },
    #[error("{key}: a {kind} key; Authenticode signatures for UEFI Secure Boot need an RSA key")]
    NotRsa { key: String, kind: String },
    #[error("cannot {what} (OpenSSL: {source})")]
    Crypto {
        what: &'static str,
        source: ErrorStack,
    },
    #[error("cannot encode the PKCS#7 signature ({0})")]
    Encode(der::Error),
    #[error("the PKCS#7 signature is {len} bytes; EDK2 firmware only reads signatures whose outer DER lengths take two bytes (256 to 65535 bytes): embed fewer chain certificates")]
    Edk2Layout { len: usize },
}

/// Errors verifying a signed PE image. Each says whether the image is unsigned, altered
/// after signing, or signed by a key none of the trusted certificates accepts.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Pe(#[from] PeError),
    #[error(transparent)]
    Authenticode(#[from] AuthenticodeError),
    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("{path}: not signed (no certificate table): sign it with `zoa sign-uki` or sbsign")]
    NotSigned { path: PathBuf },
    #[error("{path}: malformed certificate table at byte {offset:#x}: {message}")]
    Malformed {
        path: PathBuf,
        offset: u64,
        message: String,
    },
    #[error("trusted certificate #{index} is not a DER X.509 certificate (OpenSSL: {source})")]
    BadTrustedCertificate { index: usize, source: ErrorStack },
    #[error("{path}: the image was changed after it was signed: its Authenticode {algorithm:?} digest is {computed}, the signature covers {signed}")]
    DigestMismatch {
        path: PathBuf,
        algorithm: DigestAlgorithm,
        computed: String,
        signed: String,
    },
    #[error("{path}: signed, but none of the {trusted} trusted certificates verifies the signature: {details}")]
    Untrusted {
        path: PathBuf,
        trusted: usize,
        details: String,
    },
    #[error("{path}: no signature UEFI firmware could check: {details}")]
    Unusable { path: PathBuf, details: String },
    #[error("cannot {what} (OpenSSL: {source})")]
    Crypto {
        what: &'static str,
        source: ErrorStack,
    },
}

/// What [`sign_pe`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signed {
    /// The signed image.
    pub output: PathBuf,
    /// SHA-256 of the signed file, lower-case hex.
    pub sha256: String,
    /// Size of the signed file in bytes.
    pub size: u64,
    /// The Authenticode SHA-256 digest that was signed (unchanged by signing: the
    /// certificate table is outside it), lower-case hex.
    pub authenticode_sha256: String,
    /// The signing certificate's subject.
    pub signer: String,
    /// Size of the PKCS#7 signature in bytes.
    pub signature_bytes: usize,
}

/// A verified signature: which trusted certificate accepts the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// Index into the `trust` list of the first certificate that verifies the signature:
    /// for db, the entry firmware measures as EV_EFI_VARIABLE_AUTHORITY.
    pub trust_index: usize,
    /// That certificate, DER.
    #[serde(skip)]
    pub trust_der: Vec<u8>,
    /// Its subject.
    pub trust_subject: String,
    /// SHA-256 of its DER, lower-case hex.
    pub trust_sha256: String,
    /// Which entry of the certificate table verified (0 for the first).
    pub signature_index: usize,
    /// The signer's (leaf) certificate subject.
    pub signer: String,
    /// The Authenticode digest algorithm of that signature.
    pub digest_algorithm: DigestAlgorithm,
    /// The image's Authenticode digest in that algorithm, lower-case hex.
    pub digest: String,
}

// ---------------------------------------------------------------------------------------
// ASN.1 types (only what is written or read; RFC 2315 and Microsoft's Authenticode spec).

/// `AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL }`.
#[derive(Clone, Debug, Sequence)]
struct AlgorithmIdentifier {
    algorithm: ObjectIdentifier,
    parameters: Option<Any>,
}

impl AlgorithmIdentifier {
    /// With an explicit NULL parameter, as PKCS#1 and Authenticode tools write it.
    fn with_null(algorithm: ObjectIdentifier) -> Self {
        AlgorithmIdentifier {
            algorithm,
            parameters: Some(Any::null()),
        }
    }
}

/// `DigestInfo ::= SEQUENCE { digestAlgorithm, digest OCTET STRING }`.
#[derive(Sequence)]
struct DigestInfo {
    digest_algorithm: AlgorithmIdentifier,
    digest: OctetString,
}

/// `SpcAttributeTypeAndOptionalValue ::= SEQUENCE { type OID, value ANY OPTIONAL }`.
#[derive(Sequence)]
struct SpcAttributeTypeAndOptionalValue {
    value_type: ObjectIdentifier,
    value: Option<Any>,
}

/// `SpcIndirectDataContent ::= SEQUENCE { data, messageDigest DigestInfo }`.
#[derive(Sequence)]
struct SpcIndirectDataContent {
    data: SpcAttributeTypeAndOptionalValue,
    message_digest: DigestInfo,
}

/// `SpcPeImageData ::= SEQUENCE { flags BIT STRING, file [0] EXPLICIT SpcLink OPTIONAL }`.
#[derive(Sequence)]
struct SpcPeImageData {
    flags: BitString,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    file: Option<Any>,
}

/// `ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT ANY OPTIONAL }`.
#[derive(Sequence)]
struct ContentInfo {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    content: Option<Any>,
}

/// `Attribute ::= SEQUENCE { type OID, values SET OF ANY }`.
#[derive(Sequence)]
struct Attribute {
    attr_type: ObjectIdentifier,
    values: SetOfVec<Any>,
}

/// `IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber INTEGER }`, both kept
/// as the exact bytes of the certificate.
#[derive(Sequence)]
struct IssuerAndSerialNumber {
    issuer: Any,
    serial_number: Any,
}

/// RFC 2315 §9.2 `SignerInfo`.
#[derive(Sequence)]
struct SignerInfo {
    version: u8,
    issuer_and_serial_number: IssuerAndSerialNumber,
    digest_algorithm: AlgorithmIdentifier,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    authenticated_attributes: Option<SetOfVec<Any>>,
    digest_encryption_algorithm: AlgorithmIdentifier,
    encrypted_digest: OctetString,
}

/// RFC 2315 §9.1 `SignedData` (no CRLs).
#[derive(Sequence)]
struct SignedData {
    version: u8,
    digest_algorithms: SetOfVec<Any>,
    content_info: ContentInfo,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    certificates: Option<SetOfVec<Any>>,
    signer_infos: SetOfVec<Any>,
}

fn any_of<T: der::EncodeValue + Tagged>(value: &T) -> Result<Any, SignError> {
    Any::encode_from(value).map_err(SignError::Encode)
}

/// The `SpcPeImageData` every Authenticode signer writes: no flags, and the file link
/// `[2] { [0] IMPLICIT BMPString "<<<Obsolete>>>" }` (UTF-16BE).
fn pe_image_data() -> Result<Any, SignError> {
    let obsolete: Vec<u8> = "<<<Obsolete>>>"
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    let unicode = Any::new(
        Tag::ContextSpecific {
            constructed: false,
            number: TagNumber(0),
        },
        obsolete,
    )
    .map_err(SignError::Encode)?;
    let file = Any::new(
        Tag::ContextSpecific {
            constructed: true,
            number: TagNumber(2),
        },
        unicode.to_der().map_err(SignError::Encode)?,
    )
    .map_err(SignError::Encode)?;
    let flags = BitString::new(0, Vec::new()).map_err(SignError::Encode)?;
    any_of(&SpcPeImageData {
        flags,
        file: Some(file),
    })
}

/// The DER `SpcIndirectDataContent` for an Authenticode SHA-256 digest.
fn spc_indirect_data(digest: &[u8; 32]) -> Result<Vec<u8>, SignError> {
    let content = SpcIndirectDataContent {
        data: SpcAttributeTypeAndOptionalValue {
            value_type: OID_SPC_PE_IMAGE_DATA,
            value: Some(pe_image_data()?),
        },
        message_digest: DigestInfo {
            digest_algorithm: AlgorithmIdentifier::with_null(OID_SHA256),
            digest: OctetString::new(digest.as_slice()).map_err(SignError::Encode)?,
        },
    };
    content.to_der().map_err(SignError::Encode)
}

/// The value octets of one DER TLV (what Authenticode's messageDigest covers).
fn tlv_value(der: &[u8]) -> Result<&[u8], der::Error> {
    let mut reader = SliceReader::new(der)?;
    let header = der::Header::decode(&mut reader)?;
    let len = usize::try_from(header.length())?;
    reader.read_slice(len.try_into()?)
}

/// A certificate's issuer Name and serialNumber INTEGER, as encoded in it.
fn issuer_and_serial(cert_der: &[u8]) -> Result<IssuerAndSerialNumber, der::Error> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature };
    // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, ...}.
    let cert = Vec::<Any>::from_der(cert_der)?;
    let tbs = cert
        .first()
        .ok_or_else(|| der::Error::from(der::ErrorKind::Length { tag: Tag::Sequence }))?
        .decode_as::<Vec<Any>>()?;
    let skip = usize::from(tbs.first().map(|a| a.tag().is_context_specific()) == Some(true));
    match (tbs.get(skip), tbs.get(skip + 2)) {
        (Some(serial), Some(issuer)) => Ok(IssuerAndSerialNumber {
            issuer: issuer.clone(),
            serial_number: serial.clone(),
        }),
        _ => Err(der::ErrorKind::Length { tag: Tag::Sequence }.into()),
    }
}

/// The Authenticode PKCS#7 `SignedData` (DER) over an image's SHA-256 Authenticode digest,
/// signed with `key` (RSA, PKCS#1 v1.5, SHA-256), carrying `cert` and `chain`.
/// Deterministic: the same inputs give the same bytes.
pub fn authenticode_signature(
    digest: &[u8; 32],
    key: &PKeyRef<Private>,
    cert: &X509Ref,
    chain: &[X509],
) -> Result<Vec<u8>, SignError> {
    let crypto = |what| move |source| SignError::Crypto { what, source };
    let spc = spc_indirect_data(digest)?;
    let content_digest = Sha256::digest(tlv_value(&spc).map_err(SignError::Encode)?);

    let attribute = |attr_type, value: Any| -> Result<Any, SignError> {
        let values = SetOfVec::try_from(vec![value]).map_err(SignError::Encode)?;
        any_of(&Attribute { attr_type, values })
    };
    // SetOfVec keeps DER order, which is also the order the signature covers.
    let attributes = SetOfVec::try_from(vec![
        attribute(OID_CONTENT_TYPE, any_of(&OID_SPC_INDIRECT_DATA)?)?,
        attribute(
            OID_MESSAGE_DIGEST,
            any_of(&OctetString::new(content_digest.as_slice()).map_err(SignError::Encode)?)?,
        )?,
        // An empty SpcSpOpusInfo (no program name or URL), as sbsign writes.
        attribute(
            OID_SPC_SP_OPUS_INFO,
            Any::new(Tag::Sequence, Vec::new()).map_err(SignError::Encode)?,
        )?,
    ])
    .map_err(SignError::Encode)?;
    // RFC 2315 §9.3: the signature covers the attributes' DER as a SET OF (tag 0x31), not
    // the [0] IMPLICIT form stored in SignerInfo.
    let signed_bytes = attributes.to_der().map_err(SignError::Encode)?;
    let mut signer = Signer::new(MessageDigest::sha256(), key).map_err(crypto("set up signing"))?;
    signer
        .update(&signed_bytes)
        .map_err(crypto("sign the attributes"))?;
    let signature = signer
        .sign_to_vec()
        .map_err(crypto("sign the attributes"))?;

    let cert_der = cert.to_der().map_err(crypto("encode the certificate"))?;
    let signer_info = SignerInfo {
        version: 1,
        issuer_and_serial_number: issuer_and_serial(&cert_der).map_err(SignError::Encode)?,
        digest_algorithm: AlgorithmIdentifier::with_null(OID_SHA256),
        authenticated_attributes: Some(attributes),
        digest_encryption_algorithm: AlgorithmIdentifier::with_null(OID_RSA_ENCRYPTION),
        encrypted_digest: OctetString::new(signature).map_err(SignError::Encode)?,
    };
    let mut certificates = vec![Any::from_der(&cert_der).map_err(SignError::Encode)?];
    for c in chain {
        let der = c.to_der().map_err(crypto("encode a chain certificate"))?;
        certificates.push(Any::from_der(&der).map_err(SignError::Encode)?);
    }
    let signed_data = SignedData {
        version: 1,
        digest_algorithms: SetOfVec::try_from(vec![any_of(&AlgorithmIdentifier::with_null(
            OID_SHA256,
        ))?])
        .map_err(SignError::Encode)?,
        content_info: ContentInfo {
            content_type: OID_SPC_INDIRECT_DATA,
            content: Some(Any::from_der(&spc).map_err(SignError::Encode)?),
        },
        certificates: Some(SetOfVec::try_from(certificates).map_err(SignError::Encode)?),
        signer_infos: SetOfVec::try_from(vec![any_of(&signer_info)?]).map_err(SignError::Encode)?,
    };
    let der = ContentInfo {
        content_type: OID_SIGNED_DATA,
        content: Some(any_of(&signed_data)?),
    }
    .to_der()
    .map_err(SignError::Encode)?;
    match edk2_hash_algorithm(&der) {
        Ok(Some(DigestAlgorithm::Sha256)) => Ok(der),
        _ => Err(SignError::Edk2Layout { len: der.len() }),
    }
}

/// The hash algorithm EDK2 reads from a signature: it requires the ContentInfo, its [0]
/// and the SignedData to use two-byte long-form lengths (CryptoPkg `WrapPkcs7Data` checks
/// bytes 15-16, `HashPeImageByType` byte 1), and takes the first digestAlgorithms OID at
/// offset 32. `Err` with the reason when firmware would skip the signature.
fn edk2_hash_algorithm(der: &[u8]) -> Result<Option<DigestAlgorithm>, &'static str> {
    const SIGNED_DATA_OID: [u8; 11] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
    ];
    if der.len() < 32 + 9
        || der[0] != 0x30
        || der[1] != 0x82
        || der[4..15] != SIGNED_DATA_OID
        || der[15..17] != [0xa0, 0x82]
        || der[19..21] != [0x30, 0x82]
    {
        return Err("its DER does not have the two-byte length layout EDK2 parses at fixed offsets (ContentInfo, [0] and SignedData of 256 to 65535 bytes)");
    }
    EDK2_HASH_OIDS
        .iter()
        .find(|(oid, _)| der[32..41] == *oid)
        .map(|(_, alg)| *alg)
        .ok_or("its first digest algorithm is not one EDK2 knows (SHA-256, SHA-384, SHA-512)")
}

/// SHA-256 Authenticode digest of `layout`'s file as it will be once signed: the file
/// padded with zeros to a multiple of 8 bytes (the certificate table must start 8-byte
/// aligned, and the padding sits before it, so it is hashed).
fn signing_digest(image: &ImageFile, layout: &PeLayout) -> Result<([u8; 32], u64), SignError> {
    let file = image.name();
    let len = layout.file_len;
    let padded = len.next_multiple_of(8);
    let mut job = authenticode_job(file, layout, 0, padded)?;
    // Only the trailing-data range can reach past the real file: the padding, which
    // is hashed as zeros.
    if let Some(last) = job.ranges.last_mut() {
        last.1 = last.1.min(len);
    }
    job.ranges.retain(|(s, e)| e > s);
    job.zeros = padded - len;
    let digests = hash_jobs(image, &[job]).map_err(|source| SignError::Io {
        path: PathBuf::from(file),
        action: "read (hashing)",
        source,
    })?;
    Ok((digests[0].sha256, padded))
}

/// Checks that `key` is an RSA key and the private half of `cert`.
fn check_key(
    key: &PKeyRef<Private>,
    cert: &X509Ref,
    key_name: &str,
    cert_name: &str,
) -> Result<(), SignError> {
    if key.id() != Id::RSA {
        return Err(SignError::NotRsa {
            key: key_name.to_owned(),
            kind: format!("{:?}", key.id()),
        });
    }
    let public = cert.public_key().map_err(|source| SignError::Crypto {
        what: "read the certificate's public key",
        source,
    })?;
    if !public.public_eq(key) {
        return Err(SignError::KeyMismatch {
            key: key_name.to_owned(),
            cert: cert_name.to_owned(),
            subject: describe_name(cert.subject_name()),
        });
    }
    Ok(())
}

/// Signs the PE image `input` with `key` and its certificate `cert` (plus `chain`, the
/// intermediate certificates between `cert` and the certificate enrolled in db), writing
/// the signed image to `output` (which may be `input`: the file is replaced atomically).
///
/// The image is streamed (hashed in one pass, copied in another); memory use does not
/// grow with its size. Refuses an image that is already signed or has no certificate
/// table directory entry, and a key that is not `cert`'s. The output is written to a
/// temporary file beside it and renamed into place, keeping the input's permissions.
pub fn sign_pe(
    input: &Path,
    output: &Path,
    key: &PKeyRef<Private>,
    cert: &X509Ref,
    chain: &[X509],
) -> Result<Signed, SignError> {
    check_key(key, cert, "the private key", "given")?;
    sign_checked(input, output, key, cert, chain)
}

/// [`sign_pe`] with the key, certificate and chain read from files (PEM or DER; a chain
/// file may hold several PEM certificates): what `zoa sign-uki` and a signing build call.
pub fn sign_pe_files(
    input: &Path,
    output: &Path,
    key_path: &Path,
    cert_path: &Path,
    chain_paths: &[PathBuf],
) -> Result<Signed, SignError> {
    let key = keys::load_private_key(key_path)?;
    let cert = keys::load_certificate(cert_path)?;
    let mut chain = Vec::new();
    for p in chain_paths {
        chain.extend(keys::load_certificates(p)?);
    }
    check_key(
        &key,
        &cert,
        &key_path.display().to_string(),
        &cert_path.display().to_string(),
    )?;
    sign_checked(input, output, &key, &cert, &chain)
}

fn sign_checked(
    input: &Path,
    output: &Path,
    key: &PKeyRef<Private>,
    cert: &X509Ref,
    chain: &[X509],
) -> Result<Signed, SignError> {
    let in_io = |source| SignError::Io {
        path: input.to_owned(),
        action: "read",
        source,
    };
    let src = ImageFile::open(input).map_err(in_io)?;
    let layout = PeLayout::read(&src)?;
    let Some(cert_dir) = layout.cert_dir_offset else {
        return Err(SignError::NoCertDirectory {
            path: input.to_owned(),
        });
    };
    if layout.is_signed() {
        return Err(SignError::AlreadySigned {
            path: input.to_owned(),
            offset: layout.cert_table.0,
            size: layout.cert_table.1,
        });
    }
    let (digest, padded) = signing_digest(&src, &layout)?;
    let pkcs7 = authenticode_signature(&digest, key, cert, chain)?;

    // WIN_CERTIFICATE: dwLength is the header and the PKCS#7, unpadded; the table (and
    // the data directory's Size) is padded to 8 bytes, as the PE spec asks and EDK2's
    // walk (dwLength + ALIGN_SIZE(dwLength)) expects.
    let entry_len = WIN_CERTIFICATE_HEADER + pkcs7.len();
    let table_len = entry_len.next_multiple_of(8);
    let total = padded + table_len as u64;
    let (Ok(table_offset), Ok(table_size), Ok(entry_len32)) = (
        u32::try_from(padded),
        u32::try_from(table_len),
        u32::try_from(entry_len),
    ) else {
        return Err(SignError::TooLarge {
            path: input.to_owned(),
        });
    };
    if total > u64::from(u32::MAX) {
        return Err(SignError::TooLarge {
            path: input.to_owned(),
        });
    }
    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(&entry_len32.to_le_bytes());
    table.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    table.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    table.extend_from_slice(&pkcs7);
    table.resize(table_len, 0);

    let out_io = |action: &'static str| {
        move |source| SignError::Io {
            path: output.to_owned(),
            action,
            source,
        }
    };
    let out_write = |e: fsio::WriteError| SignError::Io {
        path: output.to_owned(),
        action: e.step,
        source: e.source,
    };
    // The signed image keeps the unsigned one's mode.
    let mode = std::fs::metadata(input)
        .map_err(in_io)?
        .permissions()
        .mode()
        & 0o7777;
    let mut tmp = fsio::temp_for(output, mode).map_err(out_write)?;

    // Headers with the certificate table entry set and CheckSum zero (filled in last).
    let mut head = src
        .read_vec_at(0, layout.size_of_headers as usize)
        .map_err(in_io)?;
    let put = |h: &mut [u8], off: u64, v: u32| {
        let o = off as usize;
        h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    };
    put(&mut head, layout.checksum_offset, 0);
    put(&mut head, cert_dir, table_offset);
    put(&mut head, cert_dir + 4, table_size);
    {
        let mut w = ChecksumWriter::new(BufWriter::with_capacity(1 << 20, tmp.as_file_mut()));
        w.write_all(&head).map_err(out_io("write"))?;
        let rest = layout.file_len - u64::from(layout.size_of_headers);
        let header_len = u64::from(layout.size_of_headers);
        let copied = io::copy(&mut src.range_reader(header_len, rest), &mut w).map_err(in_io)?;
        if copied != rest {
            return Err(in_io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being signed",
            )));
        }
        w.write_all(&vec![0u8; (padded - layout.file_len) as usize])
            .map_err(out_io("write"))?;
        w.write_all(&table).map_err(out_io("write"))?;
        let checksum = w.checksum();
        let f = w.into_inner().into_inner().map_err(|e| SignError::Io {
            path: output.to_owned(),
            action: "write",
            source: e.into_error(),
        })?;
        f.seek(SeekFrom::Start(layout.checksum_offset))
            .map_err(out_io("write"))?;
        f.write_all(&checksum.to_le_bytes())
            .map_err(out_io("write"))?;
    }
    // The digest of what is about to be renamed into place (read back: the checksum was
    // only known at the end), for build records.
    let sha256 = {
        let f = tmp.as_file_mut();
        f.seek(SeekFrom::Start(0)).map_err(out_io("read back"))?;
        let mut h = Sha256::new();
        io::copy(f, &mut h).map_err(out_io("read back"))?;
        hex::encode(h.finalize())
    };
    let how = fsio::Persist {
        sync: true,
        replace: true,
    };
    fsio::persist(tmp, output, how).map_err(out_write)?;
    Ok(Signed {
        output: output.to_owned(),
        sha256,
        size: total,
        authenticode_sha256: hex::encode(digest),
        signer: describe_name(cert.subject_name()),
        signature_bytes: pkcs7.len(),
    })
}

/// One PKCS#7 signature found in a certificate table.
#[derive(Debug, Clone)]
pub struct EmbeddedSignature {
    /// Position in the certificate table (0 for the first).
    pub index: usize,
    /// File offset of its WIN_CERTIFICATE.
    pub offset: u64,
    /// The PKCS#7 DER as the firmware hands it on (it may carry trailing padding).
    pub der: Vec<u8>,
}

/// The PKCS#7 signatures of a PE image's certificate table, in table order, walked as
/// EDK2 walks it: PKCS_SIGNED_DATA entries, and EFI_GUID entries of type PKCS7; other
/// entries are skipped.
pub fn read_signatures(image: &ImageFile) -> Result<Vec<EmbeddedSignature>, VerifyError> {
    let path = Path::new(image.name());
    let layout = PeLayout::read(image)?;
    if layout.cert_dir_offset.is_none() || !layout.is_signed() {
        return Err(VerifyError::NotSigned {
            path: path.to_owned(),
        });
    }
    let (start, size) = layout.cert_table;
    let malformed = |offset: u64, message: String| VerifyError::Malformed {
        path: path.to_owned(),
        offset,
        message,
    };
    if size > MAX_CERT_TABLE {
        return Err(malformed(
            u64::from(start),
            format!("certificate table of {size} bytes (more than 1 MiB)"),
        ));
    }
    let io_err = |source| VerifyError::Io {
        path: path.to_owned(),
        action: "read the certificate table",
        source,
    };
    let table = image
        .read_vec_at(u64::from(start), size as usize)
        .map_err(io_err)?;

    let mut out = Vec::new();
    let mut pos = 0usize;
    while table.len() - pos > WIN_CERTIFICATE_HEADER {
        let at = u64::from(start) + pos as u64;
        let h = &table[pos..];
        let dw_length = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let cert_type = u16::from_le_bytes([h[6], h[7]]);
        if dw_length <= WIN_CERTIFICATE_HEADER || dw_length > h.len() {
            return Err(malformed(
                at,
                format!(
                    "WIN_CERTIFICATE dwLength {dw_length} does not fit the {} bytes left",
                    h.len()
                ),
            ));
        }
        let body = &h[WIN_CERTIFICATE_HEADER..dw_length];
        let der = match cert_type {
            WIN_CERT_TYPE_PKCS_SIGNED_DATA => Some(body),
            // WIN_CERTIFICATE_UEFI_GUID: a 16-byte CertType GUID, then the data.
            WIN_CERT_TYPE_EFI_GUID if body.len() > 16 && body[..16] == EFI_CERT_TYPE_PKCS7_GUID => {
                Some(&body[16..])
            }
            _ => None,
        };
        if let Some(der) = der {
            out.push(EmbeddedSignature {
                index: out.len(),
                offset: at,
                der: der.to_vec(),
            });
        }
        pos += dw_length.next_multiple_of(8);
    }
    Ok(out)
}

/// What the firmware needs from one signature: the algorithm (read as EDK2 reads it), the
/// signed content and its digest.
struct ParsedSignature {
    algorithm: DigestAlgorithm,
    /// The PKCS#7 DER without trailing padding.
    der: Vec<u8>,
    /// The SpcIndirectDataContent's value octets: the content PKCS#7 signed.
    content: Vec<u8>,
    /// The digest in its DigestInfo.
    signed_digest: Vec<u8>,
}

fn parse_signature(der: &[u8]) -> Result<ParsedSignature, String> {
    let algorithm = match edk2_hash_algorithm(der)? {
        Some(a) => a,
        None => return Err("signed with SHA-224, which EDK2 cannot hash".into()),
    };
    // Decode the first TLV only: entries may carry padding after the DER.
    let mut reader = SliceReader::new(der).map_err(|e| e.to_string())?;
    let info = ContentInfo::decode(&mut reader).map_err(|e| format!("PKCS#7: {e}"))?;
    let used = usize::try_from(reader.position()).map_err(|e| e.to_string())?;
    if info.content_type != OID_SIGNED_DATA {
        return Err(format!("not PKCS#7 SignedData ({})", info.content_type));
    }
    // SignedData as a plain list of elements: only the third (contentInfo) is read here,
    // and OpenSSL parses the rest (signers, certificates) for verification.
    let signed = info
        .content
        .ok_or("SignedData has no content")?
        .decode_as::<Vec<Any>>()
        .map_err(|e| format!("SignedData: {e}"))?;
    let inner: ContentInfo = signed
        .get(2)
        .ok_or("SignedData has no contentInfo")?
        .decode_as()
        .map_err(|e| format!("SignedData contentInfo: {e}"))?;
    if inner.content_type != OID_SPC_INDIRECT_DATA {
        return Err(format!(
            "content is {}, not SpcIndirectDataContent",
            inner.content_type
        ));
    }
    let spc_any = inner.content.ok_or("no SpcIndirectDataContent")?;
    // EDK2 (AuthenticodeVerify) reads this SEQUENCE's length in the short or the two-byte
    // form only.
    let spc_der = spc_any.to_der().map_err(|e| e.to_string())?;
    if spc_der
        .get(1)
        .is_some_and(|b| *b & 0x80 != 0 && *b & 0x82 != 0x82)
    {
        return Err("SpcIndirectDataContent's length encoding is one EDK2 cannot read".into());
    }
    let spc: SpcIndirectDataContent = spc_any
        .decode_as()
        .map_err(|e| format!("SpcIndirectDataContent: {e}"))?;
    Ok(ParsedSignature {
        algorithm,
        der: der[..used].to_vec(),
        content: spc_any.value().to_vec(),
        signed_digest: spc.message_digest.digest.as_bytes().to_vec(),
    })
}

/// A trust store holding one certificate, configured as EDK2's `Pkcs7Verify` configures
/// its store: partial chains (the trusted certificate need not be self-signed: a leaf or
/// an intermediate in db is a trust anchor), no time checks, any purpose.
fn edk2_store(cert: &X509) -> Result<openssl::x509::store::X509Store, ErrorStack> {
    let mut b = X509StoreBuilder::new()?;
    b.add_cert(cert.clone())?;
    b.set_flags(X509VerifyFlags::PARTIAL_CHAIN | X509VerifyFlags::NO_CHECK_TIME)?;
    b.set_purpose(X509PurposeId::ANY)?;
    Ok(b.build())
}

/// Verifies the Authenticode signature of the PE image at `path` against `trust`, a list
/// of DER X.509 certificates — for a firmware prediction, db's X.509 entries in variable
/// order — and returns the first trusted certificate that verifies it, as EDK2's
/// `DxeImageVerificationLib` decides (see the module documentation).
///
/// Errors say which case it is: not signed, changed after signing (the digest differs),
/// or signed but no trusted certificate verifies it.
pub fn verify_pe<T: AsRef<[u8]>>(image: &ImageFile, trust: &[T]) -> Result<Verified, VerifyError> {
    let path = Path::new(image.name());
    let mut anchors = Vec::with_capacity(trust.len());
    for (index, der) in trust.iter().enumerate() {
        anchors.push(
            X509::from_der(der.as_ref())
                .map_err(|source| VerifyError::BadTrustedCertificate { index, source })?,
        );
    }
    let signatures = read_signatures(image)?;
    let layout = PeLayout::read(image)?;
    let job = authenticode_job(image.name(), &layout, 0, layout.file_len)?;
    let digests = hash_jobs(image, &[job]).map_err(|source| VerifyError::Io {
        path: path.to_owned(),
        action: "read (hashing)",
        source,
    })?;
    let digest_of = |alg| match alg {
        DigestAlgorithm::Sha256 => Some(digests[0].sha256.to_vec()),
        DigestAlgorithm::Sha384 => Some(digests[0].sha384.to_vec()),
        DigestAlgorithm::Sha512 => None,
    };

    let mut reasons = Vec::new();
    let mut mismatch = None;
    let mut checked = 0;
    // Like EDK2, no extra certificates: the signer and intermediates come from the PKCS#7.
    let no_certs = Stack::<X509>::new().map_err(|source| VerifyError::Crypto {
        what: "allocate a certificate stack",
        source,
    })?;
    for sig in &signatures {
        let parsed = match parse_signature(&sig.der) {
            Ok(p) => p,
            Err(reason) => {
                reasons.push(format!("signature #{}: {reason}", sig.index));
                continue;
            }
        };
        let Some(image_digest) = digest_of(parsed.algorithm) else {
            reasons.push(format!(
                "signature #{}: SHA-512 digests are not computed by zoa",
                sig.index
            ));
            continue;
        };
        // EDK2 compares the last digest-size bytes of the SpcIndirectDataContent, where the
        // DigestInfo's digest sits.
        if !parsed.content.ends_with(&image_digest) {
            mismatch.get_or_insert(VerifyError::DigestMismatch {
                path: path.to_owned(),
                algorithm: parsed.algorithm,
                computed: hex::encode(&image_digest),
                signed: hex::encode(&parsed.signed_digest),
            });
            reasons.push(format!(
                "signature #{}: covers a different image digest",
                sig.index
            ));
            continue;
        }
        checked += 1;
        let pkcs7 = match Pkcs7::from_der(&parsed.der) {
            Ok(p) => p,
            Err(e) => {
                reasons.push(format!(
                    "signature #{}: OpenSSL cannot parse it ({e})",
                    sig.index
                ));
                continue;
            }
        };
        let signer = pkcs7
            .signers(&no_certs, Pkcs7Flags::BINARY)
            .ok()
            .and_then(|s| s.iter().next().map(|c| describe_name(c.subject_name())))
            .unwrap_or_else(|| "unknown signer".to_owned());
        for (index, anchor) in anchors.iter().enumerate() {
            let store = edk2_store(anchor)
                .map_err(|source| VerifyError::BadTrustedCertificate { index, source })?;
            if pkcs7
                .verify(
                    &no_certs,
                    &store,
                    Some(&parsed.content),
                    None,
                    Pkcs7Flags::BINARY,
                )
                .is_ok()
            {
                let trust_der = trust[index].as_ref().to_vec();
                return Ok(Verified {
                    trust_index: index,
                    trust_subject: describe_name(anchor.subject_name()),
                    trust_sha256: hex::encode(Sha256::digest(&trust_der)),
                    trust_der,
                    signature_index: sig.index,
                    signer,
                    digest_algorithm: parsed.algorithm,
                    digest: hex::encode(&image_digest),
                });
            }
        }
        reasons.push(format!(
            "signature #{} (signer {signer}) verifies with none of them",
            sig.index
        ));
    }
    if checked > 0 {
        return Err(VerifyError::Untrusted {
            path: path.to_owned(),
            trusted: trust.len(),
            details: reasons.join("; "),
        });
    }
    if let Some(m) = mismatch {
        return Err(m);
    }
    Err(VerifyError::Unusable {
        path: path.to_owned(),
        details: if reasons.is_empty() {
            "the certificate table holds no PKCS#7 signature".to_owned()
        } else {
            reasons.join("; ")
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn open(p: &std::path::Path) -> crate::uefi::file::ImageFile {
        crate::uefi::file::ImageFile::open(p).unwrap()
    }
    use crate::secureboot::keys::{generate, Role};
    use crate::uefi::uki::pe_checksum;
    use openssl::pkey::PKey;

    /// A minimal PE32+ EFI application: headers (0x200) and one 0x200-byte `.text`
    /// section, `n_rva` data directories, then `trailing` bytes.
    pub(crate) fn tiny_pe(n_rva: u32, trailing: &[u8]) -> Vec<u8> {
        fn put16(f: &mut [u8], o: usize, v: u16) {
            f[o..o + 2].copy_from_slice(&v.to_le_bytes());
        }
        fn put32(f: &mut [u8], o: usize, v: u32) {
            f[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        let mut f = vec![0u8; 0x400];
        f[0..2].copy_from_slice(b"MZ");
        put32(&mut f, 0x3c, 0x40); // e_lfanew
        f[0x40..0x44].copy_from_slice(b"PE\0\0");
        let coff = 0x44;
        put16(&mut f, coff, 0x8664); // Machine
        put16(&mut f, coff + 2, 1); // NumberOfSections
        let opt_size = 112 + 8 * n_rva as usize;
        put16(&mut f, coff + 16, opt_size as u16); // SizeOfOptionalHeader
        put16(&mut f, coff + 18, 0x22); // executable, large address aware
        let opt = coff + 20;
        put16(&mut f, opt, 0x20b); // PE32+
        put32(&mut f, opt + 4, 0x200); // SizeOfCode
        put32(&mut f, opt + 16, 0x1000); // AddressOfEntryPoint
        put32(&mut f, opt + 20, 0x1000); // BaseOfCode
        put32(&mut f, opt + 32, 0x1000); // SectionAlignment
        put32(&mut f, opt + 36, 0x200); // FileAlignment
        put32(&mut f, opt + 56, 0x2000); // SizeOfImage
        put32(&mut f, opt + 60, 0x200); // SizeOfHeaders
        put16(&mut f, opt + 68, 10); // Subsystem: EFI application
        put32(&mut f, opt + 108, n_rva); // NumberOfRvaAndSizes
        let sec = opt + opt_size;
        f[sec..sec + 5].copy_from_slice(b".text");
        put32(&mut f, sec + 8, 0x200); // VirtualSize
        put32(&mut f, sec + 12, 0x1000); // VirtualAddress
        put32(&mut f, sec + 16, 0x200); // SizeOfRawData
        put32(&mut f, sec + 20, 0x200); // PointerToRawData
        put32(&mut f, sec + 36, 0x6000_0020); // code, execute, read
        for (i, b) in f[0x200..0x400].iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        f.extend_from_slice(trailing);
        f
    }

    struct Fixture {
        dir: tempfile::TempDir,
        key: PKey<Private>,
        cert: X509,
    }

    fn fixture() -> Fixture {
        let (key, cert) = generate(Role::Db, "test").unwrap();
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            key,
            cert,
        }
    }

    impl Fixture {
        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        }

        fn sign(&self, input: &Path, output: &str) -> Result<(PathBuf, Signed), SignError> {
            let out = self.dir.path().join(output);
            sign_pe(input, &out, &self.key, &self.cert, &[]).map(|s| (out, s))
        }

        fn trust(&self) -> Vec<Vec<u8>> {
            vec![self.cert.to_der().unwrap()]
        }
    }

    #[test]
    fn spc_indirect_data_content_is_the_standard_encoding() {
        let digest = [0xabu8; 32];
        let der = spc_indirect_data(&digest).unwrap();
        let mut expect = hex::decode(concat!(
            "3068",                     // SpcIndirectDataContent
            "3033",                     // SpcAttributeTypeAndOptionalValue
            "060a2b06010401823702010f", // SPC_PE_IMAGE_DATA_OBJID
            "3025030100",               // SpcPeImageData, flags: empty BIT STRING
            "a020a21e801c",             // file [0] { [2] { [0] IMPLICIT BMPString
        ))
        .unwrap();
        for c in "<<<Obsolete>>>".encode_utf16() {
            expect.extend_from_slice(&c.to_be_bytes());
        }
        // DigestInfo { sha256 with NULL parameters, OCTET STRING }
        expect.extend(hex::decode("3031300d060960864801650304020105000420").unwrap());
        expect.extend_from_slice(&digest);
        assert_eq!(hex::encode(&der), hex::encode(&expect));
        // messageDigest covers the value octets only.
        assert_eq!(tlv_value(&der).unwrap(), &der[2..]);
    }

    #[test]
    fn signs_verifies_and_is_reproducible() {
        let fx = fixture();
        let input = fx.write("in.efi", &tiny_pe(16, &[]));
        let (a, signed) = fx.sign(&input, "a.efi").unwrap();
        let (b, _) = fx.sign(&input, "b.efi").unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap(), "two signings differ");
        assert_eq!(signed.size, bytes.len() as u64);
        assert_eq!(signed.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(signed.signer, "CN=test db");

        let layout = PeLayout::read(&open(&a)).unwrap();
        let (off, size) = layout.cert_table;
        assert_eq!(off, 0x400);
        assert_eq!(u64::from(off) + u64::from(size), layout.file_len);
        assert_eq!(size % 8, 0);
        let cs = layout.checksum_offset as usize;
        let stored = u32::from_le_bytes(bytes[cs..cs + 4].try_into().unwrap());
        assert_eq!(stored, pe_checksum(&open(&a)).unwrap(), "PE checksum");
        // WIN_CERTIFICATE header.
        let h = &bytes[off as usize..];
        assert_eq!(u16::from_le_bytes([h[4], h[5]]), 0x0200);
        assert_eq!(u16::from_le_bytes([h[6], h[7]]), 0x0002);
        assert_eq!(
            u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize,
            8 + signed.signature_bytes
        );

        let v = verify_pe(&open(&a), &fx.trust()).unwrap();
        assert_eq!(v.trust_index, 0);
        assert_eq!(v.signer, "CN=test db");
        assert_eq!(v.digest_algorithm, DigestAlgorithm::Sha256);
        assert_eq!(v.digest, signed.authenticode_sha256);
        // Signing does not change the Authenticode digest.
        let unsigned = PeLayout::read(&open(&input)).unwrap();
        let job = authenticode_job("in", &unsigned, 0, unsigned.file_len).unwrap();
        assert_eq!(
            hex::encode(hash_jobs(&open(&input), &[job]).unwrap()[0].sha256),
            v.digest
        );
    }

    #[test]
    fn first_trusted_certificate_that_verifies_wins() {
        let fx = fixture();
        let (_, other) = generate(Role::Db, "other").unwrap();
        let input = fx.write("in.efi", &tiny_pe(16, &[]));
        let (out, _) = fx.sign(&input, "out.efi").unwrap();
        let own = fx.cert.to_der().unwrap();
        let other = other.to_der().unwrap();
        let v = verify_pe(&open(&out), &[other.clone(), own.clone(), own.clone()]).unwrap();
        assert_eq!(v.trust_index, 1);
        assert_eq!(v.trust_der, own);
        let e = verify_pe(&open(&out), &[other]).unwrap_err();
        assert!(
            matches!(e, VerifyError::Untrusted { trusted: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("CN=test db"), "{e}");
        let e = verify_pe(&open(&out), &[b"junk".to_vec()]).unwrap_err();
        assert!(
            matches!(e, VerifyError::BadTrustedCertificate { index: 0, .. }),
            "{e}"
        );
    }

    #[test]
    fn odd_length_input_is_padded_before_the_table() {
        let fx = fixture();
        let input = fx.write("in.efi", &tiny_pe(16, b"xyz"));
        let (out, _) = fx.sign(&input, "out.efi").unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[0x400..0x408], b"xyz\0\0\0\0\0");
        assert_eq!(PeLayout::read(&open(&out)).unwrap().cert_table.0, 0x408);
        verify_pe(&open(&out), &fx.trust()).unwrap();
    }

    #[test]
    fn tampering_after_signing_is_detected() {
        let fx = fixture();
        let input = fx.write("in.efi", &tiny_pe(16, &[]));
        let (out, signed) = fx.sign(&input, "out.efi").unwrap();
        let good = std::fs::read(&out).unwrap();

        // One byte of a section.
        let mut bytes = good.clone();
        bytes[0x300] ^= 1;
        std::fs::write(&out, &bytes).unwrap();
        let e = verify_pe(&open(&out), &fx.trust()).unwrap_err();
        assert!(matches!(e, VerifyError::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains(&signed.authenticode_sha256), "{e}");

        // One byte of the RSA signature (the last bytes of the PKCS#7).
        let mut bytes = good.clone();
        let end = 0x400 + 8 + signed.signature_bytes;
        bytes[end - 5] ^= 1;
        std::fs::write(&out, &bytes).unwrap();
        let e = verify_pe(&open(&out), &fx.trust()).unwrap_err();
        assert!(matches!(e, VerifyError::Untrusted { .. }), "{e}");

        // The CheckSum is outside the digest: changing it does not break the signature.
        let mut bytes = good;
        let cs = PeLayout::read(&open(&input)).unwrap().checksum_offset as usize;
        bytes[cs] ^= 1;
        std::fs::write(&out, &bytes).unwrap();
        verify_pe(&open(&out), &fx.trust()).unwrap();
    }

    #[test]
    fn refusals() {
        let fx = fixture();
        let unsigned = fx.write("in.efi", &tiny_pe(16, &[]));
        let e = verify_pe(&open(&unsigned), &fx.trust()).unwrap_err();
        assert!(matches!(e, VerifyError::NotSigned { .. }), "{e}");

        let (signed, _) = fx.sign(&unsigned, "signed.efi").unwrap();
        let e = fx.sign(&signed, "twice.efi").unwrap_err();
        assert!(matches!(e, SignError::AlreadySigned { .. }), "{e}");

        let no_dir = fx.write("nodir.efi", &tiny_pe(4, &[]));
        let e = fx.sign(&no_dir, "x.efi").unwrap_err();
        assert!(matches!(e, SignError::NoCertDirectory { .. }), "{e}");
        assert!(e.to_string().contains("nodir.efi"), "{e}");

        let (other_key, _) = generate(Role::Db, "other").unwrap();
        let y = fx.dir.path().join("y.efi");
        let e = sign_pe(&unsigned, &y, &other_key, &fx.cert, &[]).unwrap_err();
        assert!(matches!(e, SignError::KeyMismatch { .. }), "{e}");
        assert!(e.to_string().contains("CN=test db"), "{e}");

        let not_pe = fx.write("text.efi", b"hello");
        assert!(matches!(
            fx.sign(&not_pe, "z.efi").unwrap_err(),
            SignError::Pe(_)
        ));
        // No output, and no temporary file, after any refusal.
        let mut names: Vec<_> = std::fs::read_dir(fx.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["in.efi", "nodir.efi", "signed.efi", "text.efi"]);
    }

    #[test]
    fn signs_in_place_from_files() {
        let fx = fixture();
        let uki = fx.write("uki.efi", &tiny_pe(16, &[]));
        std::fs::set_permissions(&uki, std::fs::Permissions::from_mode(0o640)).unwrap();
        let key = fx.write("db.key", &fx.key.private_key_to_pem_pkcs8().unwrap());
        let cert = fx.write("db.crt", &fx.cert.to_pem().unwrap());
        let signed = sign_pe_files(&uki, &uki, &key, &cert, &[]).unwrap();
        assert_eq!(signed.output, uki);
        verify_pe(&open(&uki), &fx.trust()).unwrap();
        let mode = std::fs::metadata(&uki).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);

        let (other_key, _) = generate(Role::Db, "other").unwrap();
        let other = fx.write("other.key", &other_key.private_key_to_pem_pkcs8().unwrap());
        let fresh = fx.write("fresh.efi", &tiny_pe(16, &[]));
        let msg = sign_pe_files(&fresh, &fresh, &other, &cert, &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("other.key") && msg.contains("db.crt"), "{msg}");
    }

    #[test]
    fn chain_to_a_ca_in_the_trust_list() {
        use openssl::asn1::Asn1Time;
        use openssl::x509::extension::BasicConstraints;
        use openssl::x509::{X509Builder, X509NameBuilder};

        fn cert(subject: &str, issuer: &str, key: &PKey<Private>, by: &PKey<Private>) -> X509 {
            let name = |cn: &str| {
                let mut n = X509NameBuilder::new().unwrap();
                n.append_entry_by_text("CN", cn).unwrap();
                n.build()
            };
            let mut b = X509Builder::new().unwrap();
            b.set_version(2).unwrap();
            b.set_subject_name(&name(subject)).unwrap();
            b.set_issuer_name(&name(issuer)).unwrap();
            b.set_pubkey(key).unwrap();
            // Expired long ago: firmware ignores validity dates, and so must verify_pe.
            b.set_not_before(&Asn1Time::from_unix(0).unwrap()).unwrap();
            b.set_not_after(&Asn1Time::from_unix(86_400).unwrap())
                .unwrap();
            if subject != "leaf" {
                let ca = BasicConstraints::new().critical().ca().build().unwrap();
                b.append_extension(ca).unwrap();
            }
            b.sign(by, MessageDigest::sha256()).unwrap();
            b.build()
        }
        let fx = fixture();
        let (root_key, _) = generate(Role::Kek, "root").unwrap();
        let (mid_key, _) = generate(Role::Kek, "mid").unwrap();
        let root = cert("root", "root", &root_key, &root_key);
        let mid = cert("mid", "root", &mid_key, &root_key);
        let leaf = cert("leaf", "mid", &fx.key, &mid_key);

        let input = fx.write("in.efi", &tiny_pe(16, &[]));
        let out = fx.dir.path().join("out.efi");
        sign_pe(&input, &out, &fx.key, &leaf, std::slice::from_ref(&mid)).unwrap();
        let der = |c: &X509| c.to_der().unwrap();
        // The root, the intermediate and the leaf each accept it; the first listed wins.
        for (trust, expect) in [
            (vec![der(&fx.cert), der(&root)], 1),
            (vec![der(&mid), der(&root)], 0),
            (vec![der(&leaf)], 0),
        ] {
            assert_eq!(verify_pe(&open(&out), &trust).unwrap().trust_index, expect);
        }
        // Without the intermediate in the PKCS#7, the root cannot be reached.
        sign_pe(&input, &out, &fx.key, &leaf, &[]).unwrap();
        assert!(verify_pe(&open(&out), &[der(&root)]).is_err());
        let v = verify_pe(&open(&out), &[der(&root), der(&mid)]).unwrap();
        assert_eq!(v.trust_index, 1);
    }
}
