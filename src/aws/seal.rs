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
//!
//! The envelope (`zoa-sealed/1`) is zoa-init's: [`Envelope`] is `zoa_init::unseal`'s, which
//! parses and opens it at boot, and there is no second reader here. zoa only writes the
//! JSON, and reads each envelope back with zoa-init's parser and opens it with the data key
//! before handing it out, so zoa cannot write an envelope that zoa-init would refuse.
//! (zoa-init keeps its JSON fields and additional data private; exposing them would change
//! its sources, and with them the signed reference release.)

use base64::Engine;
use serde::Serialize;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

pub use zoa_init::unseal::{Envelope, ENVELOPE_FORMAT, SECRET_NAME_KEY};

use super::{api_error, AwsError, Clients};

/// The one `algorithm` of `zoa-sealed/1`, as zoa-init requires it.
const ALGORITHM: &str = "AES-256-GCM";
/// Largest secret sealed: envelopes travel in EC2 user data (16 KiB with everything else).
/// zoa-init refuses larger ones.
pub const MAX_SECRET_BYTES: usize = 8 * 1024;
const DATA_KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// The encryption-context entry naming the deployment.
const DEPLOYMENT_KEY: &str = "zoa:deployment";

/// The JSON of a `zoa-sealed/1` envelope, the fields zoa-init's parser reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct EnvelopeJson {
    format: &'static str,
    /// The KMS key's ARN.
    key_arn: String,
    /// The KMS encryption context, required again to decrypt the data key.
    encryption_context: BTreeMap<String, String>,
    algorithm: &'static str,
    /// The data key, encrypted by KMS (base64 CiphertextBlob).
    encrypted_data_key: String,
    /// AES-GCM nonce (base64, 12 bytes).
    nonce: String,
    /// AES-GCM ciphertext followed by its 16-byte tag (base64).
    ciphertext: String,
}

/// A sealed secret: serialises to the envelope's JSON (what `zoa seal` writes), and holds
/// zoa-init's reading of that JSON. Nothing in it is secret.
#[derive(Debug, Clone)]
pub struct Sealed {
    json: EnvelopeJson,
    envelope: Envelope,
}

impl Serialize for Sealed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

impl Sealed {
    /// The envelope as zoa-init reads it.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The encryption context of a deployment's envelopes.
pub fn context(deployment: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (DEPLOYMENT_KEY.to_owned(), deployment.to_owned()),
        (SECRET_NAME_KEY.to_owned(), name.to_owned()),
    ])
}

/// The AES-GCM additional data, which binds the ciphertext to the key and context it was
/// made for so that an envelope's parts cannot be recombined: the format, the key ARN,
/// then each context entry `key=value` in key order, one per line. zoa-init computes the
/// same; [`seal_with`] proves it on every envelope by opening it with zoa-init's code.
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
) -> Result<Sealed, AwsError> {
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
    let mut data_key = Zeroizing::new([0u8; DATA_KEY_BYTES]);
    random(&mut *data_key)?;
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
    let mut nonce = [0u8; NONCE_BYTES];
    random(&mut nonce)?;
    seal_with(&data_key, &nonce, key_arn, context, blob.as_ref(), secret)
        .map_err(|e| AwsError::step(step, e))
}

/// The envelope of `secret` under `data_key` (whose KMS ciphertext is
/// `encrypted_data_key`), read back by zoa-init's parser and opened with `data_key`: a
/// writer that drifted from zoa-init fails here, not at boot.
fn seal_with(
    data_key: &[u8; DATA_KEY_BYTES],
    nonce: &[u8; NONCE_BYTES],
    key_arn: String,
    context: BTreeMap<String, String>,
    encrypted_data_key: &[u8],
    secret: &[u8],
) -> Result<Sealed, String> {
    let mut tag = [0u8; TAG_BYTES];
    let mut ciphertext = openssl::symm::encrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        data_key,
        Some(nonce),
        &aad(&key_arn, &context),
        secret,
        &mut tag,
    )
    .map_err(|e| format!("AES-GCM: {e}"))?;
    ciphertext.extend_from_slice(&tag);
    let json = EnvelopeJson {
        format: ENVELOPE_FORMAT,
        key_arn,
        encryption_context: context,
        algorithm: ALGORITHM,
        encrypted_data_key: b64().encode(encrypted_data_key),
        nonce: b64().encode(nonce),
        ciphertext: b64().encode(ciphertext),
    };
    let value = serde_json::to_value(&json).map_err(|e| e.to_string())?;
    let envelope = Envelope::from_value(&value)
        .map_err(|e| format!("zoa-init would refuse this envelope: {e}"))?;
    let opened = envelope
        .open(data_key)
        .map_err(|e| format!("zoa-init could not open this envelope: {e}"))?;
    if opened.expose() != secret {
        return Err("zoa-init opens this envelope to other bytes than were sealed".to_owned());
    }
    Ok(Sealed { json, envelope })
}

/// Random bytes from OpenSSL's CSPRNG.
fn random(buf: &mut [u8]) -> Result<(), AwsError> {
    openssl::rand::rand_bytes(buf).map_err(|e| AwsError::step("seal", format!("random: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoa_init::unseal::UnsealError;

    const ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/k";
    const KEY: [u8; 32] = [9u8; 32];

    fn sealed(secret: &[u8]) -> Sealed {
        seal_with(
            &KEY,
            &[7u8; NONCE_BYTES],
            ARN.to_owned(),
            context("demo", "model-key"),
            b"kms ciphertext blob",
            secret,
        )
        .unwrap()
    }

    /// What `zoa seal --out` writes, read back by zoa-init's parser.
    fn round_trip(s: &Sealed) -> Envelope {
        let bytes = serde_json::to_vec_pretty(s).unwrap();
        Envelope::parse(&bytes).unwrap()
    }

    #[test]
    fn zoa_init_reads_and_opens_what_zoa_seals() {
        let secret = b"the model key \x00\xff";
        let s = sealed(secret);
        let e = round_trip(&s);
        assert_eq!(&e, s.envelope());
        assert_eq!(e.key_arn(), ARN);
        assert_eq!(e.name(), "model-key");
        assert_eq!(e.encryption_context(), &context("demo", "model-key"));
        assert_eq!(e.encrypted_data_key(), b"kms ciphertext blob");
        let opened = e.open(&KEY).unwrap();
        assert_eq!(opened.name(), "model-key");
        assert_eq!(opened.expose(), secret);
        assert_eq!(
            e.open(&[8u8; 32]).unwrap_err(),
            UnsealError::EnvelopeAuthentication
        );
    }

    #[test]
    fn the_json_is_the_format_zoa_init_documents() {
        let v = serde_json::to_value(sealed(b"s")).unwrap();
        let fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "format",
                "key_arn",
                "encryption_context",
                "algorithm",
                "encrypted_data_key",
                "nonce",
                "ciphertext"
            ]
        );
        assert_eq!(v["format"], "zoa-sealed/1");
        assert_eq!(v["algorithm"], "AES-256-GCM");
        let ct = b64().decode(v["ciphertext"].as_str().unwrap()).unwrap();
        assert_eq!(ct.len(), 1 + TAG_BYTES);
    }

    #[test]
    fn parts_cannot_be_moved_between_envelopes() {
        let v = serde_json::to_value(sealed(b"secret")).unwrap();
        for (field, value) in [
            ("/encryption_context/zoa:deployment", "other"),
            ("/key_arn", "arn:aws:kms:us-east-1:123456789012:key/other"),
        ] {
            let mut moved = v.clone();
            *moved.pointer_mut(field).unwrap() = value.into();
            let e = Envelope::from_value(&moved).unwrap();
            assert_eq!(
                e.open(&KEY).unwrap_err(),
                UnsealError::EnvelopeAuthentication,
                "{field} is bound by the additional data"
            );
        }
    }

    #[test]
    fn what_zoa_init_refuses_is_not_written() {
        // No secret name in the context: zoa-init could not tell which secret it is.
        let context = BTreeMap::from([(DEPLOYMENT_KEY.to_owned(), "demo".to_owned())]);
        let e = seal_with(&KEY, &[7; NONCE_BYTES], ARN.into(), context, b"blob", b"s").unwrap_err();
        assert!(
            e.contains("zoa-init would refuse") && e.contains("zoa:secret"),
            "{e}"
        );
        // More than zoa-init opens.
        let big = vec![1u8; MAX_SECRET_BYTES + 1];
        let e = seal_with(
            &KEY,
            &[7; NONCE_BYTES],
            ARN.into(),
            super::context("demo", "model-key"),
            b"blob",
            &big,
        )
        .unwrap_err();
        assert!(e.contains("ciphertext"), "{e}");
        assert!(seal_with(
            &KEY,
            &[7; NONCE_BYTES],
            ARN.into(),
            super::context("demo", "model-key"),
            b"blob",
            &big[..MAX_SECRET_BYTES],
        )
        .is_ok());
    }
}
