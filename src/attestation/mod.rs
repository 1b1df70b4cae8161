//! Attestation documents as the Nitro Security Module makes them: reading (for `zoa attest`,
//! the KMS stand-in of the tests and the emulator's own checks) and writing (the emulated
//! NitroTPM of `zoa boot --nitrotpm`), one definition of the format for both.
//!
//! # The format, and where it comes from
//!
//! An untagged COSE_Sign1 (RFC 9052 §4.2; a tag 18 is accepted): `[protected, unprotected,
//! payload, signature]`, protected = `{1: -35}` (ES384), unprotected = `{}`, signature =
//! ECDSA P-384 over SHA-384 of the Sig_structure `["Signature1", protected, h'', payload]`,
//! as raw `r || s` (96 bytes). The payload is a CBOR map with text keys: `module_id`,
//! `digest` ("SHA384"), `timestamp` (milliseconds since the epoch), `nitrotpm_pcrs` (NitroTPM)
//! or `pcrs` (Nitro Enclaves), index → digest, `certificate` (the signing leaf, DER),
//! `cabundle` (DER certificates, root first), and `public_key`, `user_data`, `nonce` (bytes,
//! or null when not asked for). Sources: AWS's aws-nitro-enclaves-nsm-api
//! (`AttestationDoc`), the NitroTPM documents real EC2 instances produced that are kept in
//! `testdata/` (README there names them): their payload is an indefinite-length map in the
//! field order above, their PCR map definite with all 24 SHA-384 PCRs, their `cabundle` four
//! certificates from the AWS Nitro root, and the leaf valid three hours. [`sign`] writes
//! that shape.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::value::Value;
use ciborium_ll::{simple, Encoder, Header};
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509StoreContext, X509};

/// Largest document read: real ones are about 5 KiB; KMS takes up to 256 KiB, but nothing
/// legitimate comes near 64.
pub const MAX_DOCUMENT_LEN: usize = 64 * 1024;

/// The protected header of every NSM document: `{1: -35}` (alg ES384), as a byte string's
/// contents.
const PROTECTED_ES384: [u8; 4] = [0xA1, 0x01, 0x38, 0x22];

/// Length of an ES384 signature: r and s, 48 bytes each.
const SIGNATURE_LEN: usize = 96;

/// Which NSM made the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A NitroTPM (`nitrotpm_pcrs`): SHA-384 PCRs of the instance's TPM.
    NitroTpm,
    /// A Nitro Enclave (`pcrs`): the enclave image's measurements.
    Enclave,
}

/// The payload of an attestation document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub kind: Kind,
    pub module_id: String,
    /// Milliseconds since the Unix epoch (UTC).
    pub timestamp_ms: u64,
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    /// The signing certificate (DER).
    pub certificate: Vec<u8>,
    /// The CA certificates (DER), root first.
    pub cabundle: Vec<Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

/// A document as received: the parsed payload and the bytes its signature covers.
#[derive(Debug, Clone)]
pub struct SignedDocument {
    pub document: Document,
    protected: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    #[error("attestation document: {0}")]
    Malformed(String),
    #[error(
        "attestation document: the signature does not verify with the leaf certificate's key{0}"
    )]
    BadSignature(String),
    #[error("attestation document: the certificate chain does not lead to the trusted root: {0}")]
    UntrustedChain(String),
    #[error("attestation document: a certificate of the chain is not valid at that time: {0}")]
    Expired(String),
    #[error("attestation document: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

fn malformed(why: impl Into<String>) -> AttestationError {
    AttestationError::Malformed(why.into())
}

impl Document {
    /// The document's time.
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.timestamp_ms)
    }
}

/// Reads a COSE_Sign1 attestation document (no signature or chain check: see
/// [`SignedDocument::verify_signature`] and [`SignedDocument::verify_chain`]).
pub fn parse(bytes: &[u8]) -> Result<SignedDocument, AttestationError> {
    if bytes.len() > MAX_DOCUMENT_LEN {
        return Err(malformed(format!(
            "{} bytes; at most {MAX_DOCUMENT_LEN} are read",
            bytes.len()
        )));
    }
    let mut rest = bytes;
    let value: Value =
        ciborium::de::from_reader(&mut rest).map_err(|e| malformed(format!("not CBOR: {e}")))?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{} bytes after the CBOR item",
            rest.len()
        )));
    }
    let array = match value {
        Value::Tag(18, inner) => *inner,
        other => other,
    };
    let [protected, unprotected, payload, signature]: [Value; 4] = match array {
        Value::Array(items) => items.try_into().map_err(|v: Vec<Value>| {
            malformed(format!("a COSE_Sign1 has 4 items, not {}", v.len()))
        })?,
        _ => return Err(malformed("not a COSE_Sign1 (a CBOR array of four)")),
    };
    let (Value::Bytes(protected), Value::Map(_), Value::Bytes(payload), Value::Bytes(signature)) =
        (protected, unprotected, payload, signature)
    else {
        return Err(malformed(
            "a COSE_Sign1 is [protected bytes, unprotected map, payload bytes, signature bytes]",
        ));
    };
    check_protected(&protected)?;
    if signature.len() != SIGNATURE_LEN {
        return Err(malformed(format!(
            "an ES384 signature is {SIGNATURE_LEN} bytes, not {}",
            signature.len()
        )));
    }
    let document = parse_payload(&payload)?;
    Ok(SignedDocument {
        document,
        protected,
        payload,
        signature,
    })
}

/// The protected header must say ES384 and nothing else.
fn check_protected(protected: &[u8]) -> Result<(), AttestationError> {
    let header: Value = ciborium::de::from_reader(protected)
        .map_err(|e| malformed(format!("protected header: {e}")))?;
    let alg = match &header {
        Value::Map(entries) if entries.len() == 1 => match &entries[0] {
            (Value::Integer(k), Value::Integer(v)) if i128::from(*k) == 1 => i128::from(*v),
            _ => return Err(malformed("the protected header is not {1: alg}")),
        },
        _ => return Err(malformed("the protected header is not {1: alg}")),
    };
    if alg != -35 {
        return Err(malformed(format!(
            "signature algorithm {alg}; NSM documents use ES384 (-35)"
        )));
    }
    Ok(())
}

fn parse_payload(payload: &[u8]) -> Result<Document, AttestationError> {
    let value: Value = ciborium::de::from_reader(payload)
        .map_err(|e| malformed(format!("payload: not CBOR: {e}")))?;
    let Value::Map(entries) = value else {
        return Err(malformed("payload: not a map"));
    };
    let mut fields = BTreeMap::new();
    for (k, v) in entries {
        let Value::Text(k) = k else {
            return Err(malformed("payload: a key that is not text"));
        };
        if fields.insert(k.clone(), v).is_some() {
            return Err(malformed(format!("payload: {k:?} twice")));
        }
    }
    let mut take = |name: &str| fields.remove(name);
    let module_id = match take("module_id") {
        Some(Value::Text(t)) if !t.is_empty() => t,
        _ => return Err(malformed("payload: module_id missing or not text")),
    };
    match take("digest") {
        Some(Value::Text(t)) if t == "SHA384" => {}
        Some(Value::Text(t)) => {
            return Err(malformed(format!(
                "payload: digest {t:?}; NSM documents use SHA384"
            )))
        }
        _ => return Err(malformed("payload: digest missing or not text")),
    }
    let timestamp_ms = match take("timestamp") {
        Some(Value::Integer(i)) => {
            u64::try_from(i).map_err(|_| malformed("payload: timestamp is negative"))?
        }
        _ => return Err(malformed("payload: timestamp missing or not an integer")),
    };
    let (kind, pcrs) = match (take("nitrotpm_pcrs"), take("pcrs")) {
        (Some(p), None) => (Kind::NitroTpm, pcr_map(p)?),
        (None, Some(p)) => (Kind::Enclave, pcr_map(p)?),
        (Some(_), Some(_)) => return Err(malformed("payload: both nitrotpm_pcrs and pcrs")),
        (None, None) => return Err(malformed("payload: no PCRs (nitrotpm_pcrs or pcrs)")),
    };
    let certificate = match take("certificate") {
        Some(Value::Bytes(b)) if !b.is_empty() => b,
        _ => return Err(malformed("payload: certificate missing or not bytes")),
    };
    let cabundle = match take("cabundle") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= 16 => items
            .into_iter()
            .map(|c| match c {
                Value::Bytes(b) if !b.is_empty() => Ok(b),
                _ => Err(malformed("payload: a cabundle entry is not bytes")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(malformed("payload: cabundle missing, empty or too long")),
    };
    let public_key = optional_bytes("public_key", take("public_key"))?;
    let user_data = optional_bytes("user_data", take("user_data"))?;
    let nonce = optional_bytes("nonce", take("nonce"))?;
    if let Some(extra) = fields.keys().next() {
        return Err(malformed(format!("payload: unknown field {extra:?}")));
    }
    Ok(Document {
        kind,
        module_id,
        timestamp_ms,
        pcrs,
        certificate,
        cabundle,
        public_key,
        user_data,
        nonce,
    })
}

fn pcr_map(value: Value) -> Result<BTreeMap<u32, Vec<u8>>, AttestationError> {
    let Value::Map(entries) = value else {
        return Err(malformed("payload: the PCRs are not a map"));
    };
    let mut pcrs = BTreeMap::new();
    for (k, v) in entries {
        let index = match k {
            Value::Integer(i) => u32::try_from(i).ok().filter(|i| *i < 32),
            _ => None,
        }
        .ok_or_else(|| malformed("payload: a PCR index is not an integer 0-31"))?;
        let Value::Bytes(digest) = v else {
            return Err(malformed(format!("payload: PCR{index} is not bytes")));
        };
        if ![32, 48, 64].contains(&digest.len()) {
            return Err(malformed(format!(
                "payload: PCR{index} is {} bytes, not a SHA-256/384/512 digest",
                digest.len()
            )));
        }
        if pcrs.insert(index, digest).is_some() {
            return Err(malformed(format!("payload: PCR{index} twice")));
        }
    }
    Ok(pcrs)
}

fn optional_bytes(name: &str, value: Option<Value>) -> Result<Option<Vec<u8>>, AttestationError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b)),
        Some(_) => Err(malformed(format!(
            "payload: {name} is neither bytes nor null"
        ))),
    }
}

/// The bytes an ES384 COSE_Sign1 signature covers: `["Signature1", protected, h'', payload]`.
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 32);
    let mut enc = Encoder::from(&mut out);
    // Writing into a Vec cannot fail.
    let _ = enc.push(Header::Array(Some(4)));
    let _ = enc.text("Signature1", None);
    let _ = enc.bytes(protected, None);
    let _ = enc.bytes(&[], None);
    let _ = enc.bytes(payload, None);
    out
}

impl SignedDocument {
    /// Checks the ES384 signature with the key of the document's own leaf certificate.
    pub fn verify_signature(&self) -> Result<(), AttestationError> {
        let leaf = X509::from_der(&self.document.certificate)
            .map_err(|e| malformed(format!("certificate: {e}")))?;
        let key = leaf.public_key()?.ec_key().map_err(|_| {
            AttestationError::BadSignature(": the leaf's key is not an EC key".into())
        })?;
        let digest = hash(
            MessageDigest::sha384(),
            &sig_structure(&self.protected, &self.payload),
        )?;
        let (r, s) = self.signature.split_at(SIGNATURE_LEN / 2);
        let sig =
            EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?;
        if sig.verify(&digest, &key)? {
            Ok(())
        } else {
            Err(AttestationError::BadSignature(String::new()))
        }
    }

    /// Checks that the leaf chains through `cabundle` to `root` (DER), every certificate
    /// valid at `at`. The bundle's own first certificate is not trusted for being there: it
    /// must be `root`, byte for byte, or the chain must lead to `root` without it.
    pub fn verify_chain(&self, root: &[u8], at: SystemTime) -> Result<(), AttestationError> {
        let untrusted =
            |e: openssl::error::ErrorStack| AttestationError::UntrustedChain(e.to_string());
        let root = X509::from_der(root).map_err(untrusted)?;
        let leaf = X509::from_der(&self.document.certificate)
            .map_err(|e| malformed(format!("certificate: {e}")))?;
        let mut store = X509StoreBuilder::new()?;
        store.add_cert(root)?;
        let seconds = at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AttestationError::UntrustedChain("a time before 1970".into()))?
            .as_secs();
        let mut param = openssl::x509::verify::X509VerifyParam::new()?;
        param.set_time(i64::try_from(seconds).unwrap_or(i64::MAX) as _);
        store.set_param(&param)?;
        let store = store.build();
        let mut chain = Stack::new()?;
        for der in &self.document.cabundle {
            chain.push(X509::from_der(der).map_err(|e| malformed(format!("cabundle: {e}")))?)?;
        }
        let mut ctx = X509StoreContext::new()?;
        let (ok, code, why) = ctx.init(&store, &leaf, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error().as_raw(), c.error().error_string().to_owned()))
        })?;
        // X509_V_ERR_CERT_NOT_YET_VALID (9), X509_V_ERR_CERT_HAS_EXPIRED (10).
        match (ok, code) {
            (true, _) => Ok(()),
            (false, 9 | 10) => Err(AttestationError::Expired(why)),
            (false, _) => Err(AttestationError::UntrustedChain(why)),
        }
    }
}

/// Writes `document` as the NSM does (field order, indefinite-length payload map, definite
/// PCR map, nulls for absent optional fields) and signs it with `key` (P-384).
pub fn sign(document: &Document, key: &PKey<Private>) -> Result<Vec<u8>, AttestationError> {
    let payload = encode_payload(document);
    let digest = hash(
        MessageDigest::sha384(),
        &sig_structure(&PROTECTED_ES384, &payload),
    )?;
    let sig = EcdsaSig::sign(&digest, key.ec_key()?.as_ref())?;
    let mut signature = Vec::with_capacity(SIGNATURE_LEN);
    signature.extend(sig.r().to_vec_padded(48)?);
    signature.extend(sig.s().to_vec_padded(48)?);
    let mut out = Vec::with_capacity(payload.len() + 128);
    let mut enc = Encoder::from(&mut out);
    let _ = enc.push(Header::Array(Some(4)));
    let _ = enc.bytes(&PROTECTED_ES384, None);
    let _ = enc.push(Header::Map(Some(0)));
    let _ = enc.bytes(&payload, None);
    let _ = enc.bytes(&signature, None);
    Ok(out)
}

fn encode_payload(d: &Document) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    let mut enc = Encoder::from(&mut out);
    // Writing into a Vec cannot fail.
    let _ = enc.push(Header::Map(None));
    let _ = enc.text("module_id", None);
    let _ = enc.text(&d.module_id, None);
    let _ = enc.text("digest", None);
    let _ = enc.text("SHA384", None);
    let _ = enc.text("timestamp", None);
    let _ = enc.push(Header::Positive(d.timestamp_ms));
    let _ = enc.text(
        match d.kind {
            Kind::NitroTpm => "nitrotpm_pcrs",
            Kind::Enclave => "pcrs",
        },
        None,
    );
    let _ = enc.push(Header::Map(Some(d.pcrs.len())));
    for (index, digest) in &d.pcrs {
        let _ = enc.push(Header::Positive(u64::from(*index)));
        let _ = enc.bytes(digest, None);
    }
    let _ = enc.text("certificate", None);
    let _ = enc.bytes(&d.certificate, None);
    let _ = enc.text("cabundle", None);
    let _ = enc.push(Header::Array(Some(d.cabundle.len())));
    for c in &d.cabundle {
        let _ = enc.bytes(c, None);
    }
    for (name, value) in [
        ("public_key", &d.public_key),
        ("user_data", &d.user_data),
        ("nonce", &d.nonce),
    ] {
        let _ = enc.text(name, None);
        let _ = match value {
            Some(b) => enc.bytes(b, None),
            None => enc.push(Header::Simple(simple::NULL)),
        };
    }
    let _ = enc.push(Header::Break);
    out
}

/// The SHA-256 fingerprint of the AWS Nitro Enclaves root certificate G1
/// (`aws-nitro-enclaves-root-G1`), which signs every NitroTPM and enclave document AWS makes.
pub const AWS_NITRO_ROOT_G1_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

pub mod check;
pub mod online;
pub mod proxy;

#[cfg(test)]
mod tests;
