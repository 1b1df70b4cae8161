//! `zoa seal`: a secret (e.g. the model key) as a KMS envelope that only an attested
//! instance can open, so the secret never sits in the measured image.
//!
//! The data key is made here, not by KMS: sealers may only `kms:Encrypt` (GenerateDataKey
//! would hand them a key KMS also releases to instances, and the key policy gives them
//! nothing that returns plaintext). The secret is encrypted with AES-256-GCM under the
//! data key; the data key is encrypted by KMS under the deployment's key with an
//! encryption context naming the deployment. At boot, zoa-init sends the encrypted data
//! key to KMS Decrypt with its attestation document as `Recipient`, receives the data key
//! encrypted to its ephemeral RSA key, and opens the envelope.

use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

use super::{api_error, AwsError, Clients};

pub const ENVELOPE_FORMAT: &str = "zoa-sealed/1";
const ALGORITHM: &str = "AES-256-GCM";
/// Largest secret sealed: envelopes travel in EC2 user data (16 KiB with everything else).
pub const MAX_SECRET_BYTES: usize = 8 * 1024;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

/// A sealed secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub format: String,
    /// The KMS key's ARN.
    pub key_arn: String,
    /// The KMS encryption context, required again to decrypt the data key.
    pub encryption_context: BTreeMap<String, String>,
    pub algorithm: String,
    /// The data key, encrypted by KMS (base64 CiphertextBlob).
    pub encrypted_data_key: String,
    /// AES-GCM nonce (base64, 12 bytes).
    pub nonce: String,
    /// AES-GCM ciphertext followed by its 16-byte tag (base64).
    pub ciphertext: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The encryption context of a deployment's envelopes.
pub fn context(deployment: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("zoa:deployment".to_owned(), deployment.to_owned()),
        ("zoa:secret".to_owned(), name.to_owned()),
    ])
}

/// The AES-GCM additional data: binds the ciphertext to the key and context it was made
/// for, so an envelope's parts cannot be recombined.
fn aad(key_arn: &str, context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut a = format!("{ENVELOPE_FORMAT}\n{key_arn}\n");
    for (k, v) in context {
        a.push_str(&format!("{k}={v}\n"));
    }
    a.into_bytes()
}

/// Encrypts `secret` under a fresh data key, and the data key with KMS.
pub async fn seal(
    c: &Clients,
    key: &str,
    context: BTreeMap<String, String>,
    secret: &[u8],
) -> Result<Envelope, AwsError> {
    let step = "seal";
    if secret.is_empty() {
        return Err(AwsError::step(step, "the secret is empty"));
    }
    if secret.len() > MAX_SECRET_BYTES {
        return Err(AwsError::step(
            step,
            format!(
                "the secret is {} bytes; at most {MAX_SECRET_BYTES} fit in user data (seal a key, not a model)",
                secret.len()
            ),
        ));
    }
    // Zeroed when dropped, whatever happens. The SDK's request copies it into a Blob, which
    // zoa cannot reach.
    let data_key = Zeroizing::new(random_bytes(32)?);
    let out = c
        .kms
        .encrypt()
        .key_id(key)
        .plaintext(aws_smithy_types::Blob::new(data_key.as_slice()))
        .set_encryption_context(Some(context.clone().into_iter().collect()))
        .send()
        .await
        .map_err(|e| api_error(step, "kms:Encrypt", e))?;
    let key_arn = out
        .key_id()
        .ok_or_else(|| AwsError::step(step, "Encrypt returned no key id"))?
        .to_owned();
    let blob = out
        .ciphertext_blob()
        .ok_or_else(|| AwsError::step(step, "Encrypt returned no ciphertext"))?;
    let nonce = random_bytes(NONCE_BYTES)?;
    let mut tag = [0u8; TAG_BYTES];
    let mut ciphertext = openssl::symm::encrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        &data_key,
        Some(&nonce),
        &aad(&key_arn, &context),
        secret,
        &mut tag,
    )
    .map_err(|e| AwsError::step(step, format!("AES-GCM: {e}")))?;
    ciphertext.extend_from_slice(&tag);
    Ok(Envelope {
        format: ENVELOPE_FORMAT.to_owned(),
        key_arn,
        encryption_context: context,
        algorithm: ALGORITHM.to_owned(),
        encrypted_data_key: b64().encode(blob.as_ref()),
        nonce: b64().encode(&nonce),
        ciphertext: b64().encode(ciphertext),
    })
}

/// Random bytes from OpenSSL's CSPRNG.
fn random_bytes(n: usize) -> Result<Vec<u8>, AwsError> {
    let mut v = vec![0u8; n];
    openssl::rand::rand_bytes(&mut v)
        .map_err(|e| AwsError::step("seal", format!("random: {e}")))?;
    Ok(v)
}

impl Envelope {
    /// Parses an envelope (untrusted: checks format, algorithm and sizes).
    pub fn parse(bytes: &[u8]) -> Result<Envelope, String> {
        let e: Envelope =
            serde_json::from_slice(bytes).map_err(|e| format!("not a zoa sealed envelope: {e}"))?;
        if e.format != ENVELOPE_FORMAT {
            return Err(format!(
                "envelope format {:?} is not {ENVELOPE_FORMAT}",
                e.format
            ));
        }
        if e.algorithm != ALGORITHM {
            return Err(format!("algorithm {:?} is not {ALGORITHM}", e.algorithm));
        }
        let nonce = b64().decode(&e.nonce).map_err(|x| format!("nonce: {x}"))?;
        if nonce.len() != NONCE_BYTES {
            return Err(format!("nonce is {} bytes, not {NONCE_BYTES}", nonce.len()));
        }
        let ct = b64()
            .decode(&e.ciphertext)
            .map_err(|x| format!("ciphertext: {x}"))?;
        if ct.len() <= TAG_BYTES {
            return Err("ciphertext is shorter than its tag".to_owned());
        }
        b64()
            .decode(&e.encrypted_data_key)
            .map_err(|x| format!("encrypted_data_key: {x}"))?;
        Ok(e)
    }

    /// The KMS CiphertextBlob of the data key.
    pub fn encrypted_data_key(&self) -> Result<Vec<u8>, String> {
        b64()
            .decode(&self.encrypted_data_key)
            .map_err(|x| format!("encrypted_data_key: {x}"))
    }

    /// Opens the envelope with the data key (what zoa-init does once KMS released it).
    pub fn open(&self, data_key: &[u8]) -> Result<Vec<u8>, String> {
        if data_key.len() != 32 {
            return Err(format!("data key is {} bytes, not 32", data_key.len()));
        }
        let nonce = b64()
            .decode(&self.nonce)
            .map_err(|x| format!("nonce: {x}"))?;
        let ct = b64()
            .decode(&self.ciphertext)
            .map_err(|x| format!("ciphertext: {x}"))?;
        if ct.len() <= TAG_BYTES || nonce.len() != NONCE_BYTES {
            return Err("malformed envelope".to_owned());
        }
        let (body, tag) = ct.split_at(ct.len() - TAG_BYTES);
        openssl::symm::decrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            data_key,
            Some(&nonce),
            &aad(&self.key_arn, &self.encryption_context),
            body,
            tag,
        )
        .map_err(|_| "the envelope does not open with this key (wrong key, or tampered)".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(key: &[u8], secret: &[u8]) -> Envelope {
        let context = context("demo", "model-key");
        let nonce = [7u8; NONCE_BYTES];
        let arn = "arn:aws:kms:us-east-1:123456789012:key/k";
        let mut tag = [0u8; TAG_BYTES];
        let mut ct = openssl::symm::encrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            key,
            Some(&nonce),
            &aad(arn, &context),
            secret,
            &mut tag,
        )
        .unwrap();
        ct.extend_from_slice(&tag);
        Envelope {
            format: ENVELOPE_FORMAT.into(),
            key_arn: arn.into(),
            encryption_context: context,
            algorithm: ALGORITHM.into(),
            encrypted_data_key: b64().encode(b"blob"),
            nonce: b64().encode(nonce),
            ciphertext: b64().encode(ct),
        }
    }

    #[test]
    fn opens_with_the_key_and_refuses_tampering() {
        let key = [9u8; 32];
        let e = envelope(&key, b"secret");
        let bytes = serde_json::to_vec(&e).unwrap();
        let parsed = Envelope::parse(&bytes).unwrap();
        assert_eq!(parsed.open(&key).unwrap(), b"secret");
        assert!(parsed.open(&[8u8; 32]).is_err());
        let mut moved = parsed.clone();
        moved
            .encryption_context
            .insert("zoa:deployment".into(), "other".into());
        assert!(moved.open(&key).is_err(), "context is bound by the AAD");
        let mut flipped = parsed.clone();
        let mut ct = b64().decode(&flipped.ciphertext).unwrap();
        ct[0] ^= 1;
        flipped.ciphertext = b64().encode(ct);
        assert!(flipped.open(&key).is_err());
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        let e = envelope(&[9u8; 32], b"s");
        for (field, value) in [
            ("format", "zoa-sealed/9"),
            ("algorithm", "AES-128-CBC"),
            ("nonce", "AAAA"),
            ("ciphertext", "AAAA"),
            ("encrypted_data_key", "***"),
        ] {
            let mut v = serde_json::to_value(&e).unwrap();
            v[field] = serde_json::Value::String(value.into());
            let err = Envelope::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert!(!err.is_empty(), "{field}");
        }
        assert!(Envelope::parse(b"{").is_err());
    }
}
