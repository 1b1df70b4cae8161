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
//! The envelope (`zoa-sealed/1`) has one definition, zoa-init's
//! (`zoa_init::unseal::envelope`): its `Envelope::seal` (the `seal` feature, which zoa
//! enables) writes it, and the same type parses and opens it at boot. zoa only makes the data
//! key and nonce, has KMS encrypt the data key, and reads each envelope back with zoa-init's
//! parser and opens it with the data key before handing it out, so the JSON zoa writes is
//! one that zoa-init opens.

use std::collections::BTreeMap;
use zeroize::Zeroizing;

pub use zoa_init::unseal::envelope::{Envelope, ENVELOPE_FORMAT, MAX_SECRET_LEN, SECRET_NAME_KEY};
use zoa_init::unseal::envelope::{DATA_KEY_LEN, NONCE_LEN};

use super::calls::kms::EncryptDataKey;
use super::{AwsError, Clients};

/// The encryption-context entry naming the deployment.
const DEPLOYMENT_KEY: &str = "zoa:deployment";

/// The encryption context of a deployment's envelopes.
pub fn context(deployment: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (DEPLOYMENT_KEY.to_owned(), deployment.to_owned()),
        (SECRET_NAME_KEY.to_owned(), name.to_owned()),
    ])
}

/// The KMS call that seals secret `name` of `deployment` under `key`: built here for
/// `zoa seal`, a rollout's plan and its re-seal alike.
pub fn encrypt_spec(key: &str, deployment: &str, name: &str) -> EncryptDataKey {
    EncryptDataKey {
        key: key.to_owned(),
        context: context(deployment, name),
    }
}

/// Encrypts `secret` under a fresh data key, and the data key with KMS as `spec` says.
pub async fn seal(c: &Clients, spec: &EncryptDataKey, secret: &[u8]) -> Result<Envelope, AwsError> {
    let step = "seal";
    // Checked again by the writer; here so that no KMS call is made for a secret that
    // cannot be sealed, with advice.
    if secret.is_empty() {
        return Err(AwsError::step(step, "the secret is empty"));
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(AwsError::step(
            step,
            format!(
                "the secret is {} bytes; at most {MAX_SECRET_LEN} fit in user data (seal a key, not a model)",
                secret.len()
            ),
        ));
    }
    // Zeroed when dropped, whatever happens. The SDK's request copies it into a Blob, which
    // zoa cannot reach.
    let mut data_key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    random(&mut *data_key)?;
    let out = spec.send(c, step, data_key.as_slice()).await?;
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce)?;
    seal_with(
        &data_key,
        &nonce,
        out.key_arn,
        spec.context.clone(),
        &out.ciphertext,
        secret,
    )
    .map_err(|e| AwsError::step(step, e))
}

/// The envelope of `secret` under `data_key` (whose KMS ciphertext is
/// `encrypted_data_key`), made by zoa-init's writer, then read back from the JSON that will
/// be written by zoa-init's parser and opened with `data_key`: a writer and reader that
/// drifted apart fail here, not at boot.
fn seal_with(
    data_key: &[u8; DATA_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    key_arn: String,
    context: BTreeMap<String, String>,
    encrypted_data_key: &[u8],
    secret: &[u8],
) -> Result<Envelope, String> {
    let envelope = Envelope::seal(
        data_key,
        nonce,
        key_arn,
        context,
        encrypted_data_key,
        secret,
    )
    .map_err(|e| format!("cannot seal: {e}"))?;
    let value = serde_json::to_value(&envelope).map_err(|e| e.to_string())?;
    let read = Envelope::from_value(&value)
        .map_err(|e| format!("zoa-init would refuse this envelope: {e}"))?;
    if read != envelope {
        return Err("zoa-init reads this envelope as another one than was sealed".to_owned());
    }
    let opened = read
        .open(data_key)
        .map_err(|e| format!("zoa-init could not open this envelope: {e}"))?;
    if opened.expose() != secret {
        return Err("zoa-init opens this envelope to other bytes than were sealed".to_owned());
    }
    Ok(envelope)
}

/// Random bytes from OpenSSL's CSPRNG.
fn random(buf: &mut [u8]) -> Result<(), AwsError> {
    openssl::rand::rand_bytes(buf).map_err(|e| AwsError::step("seal", format!("random: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use zoa_init::unseal::envelope::TAG_LEN;
    use zoa_init::unseal::UnsealError;

    const ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/k";
    const KEY: [u8; 32] = [9u8; 32];
    const NONCE: [u8; NONCE_LEN] = [7u8; NONCE_LEN];

    fn b64() -> base64::engine::GeneralPurpose {
        base64::engine::general_purpose::STANDARD
    }

    fn sealed(secret: &[u8]) -> Envelope {
        seal_with(
            &KEY,
            &NONCE,
            ARN.to_owned(),
            context("demo", "model-key"),
            b"kms ciphertext blob",
            secret,
        )
        .unwrap()
    }

    /// What `zoa seal --out` writes, read back by zoa-init's parser.
    fn round_trip(e: &Envelope) -> Envelope {
        let bytes = serde_json::to_vec_pretty(e).unwrap();
        Envelope::parse(&bytes).unwrap()
    }

    #[test]
    fn zoa_init_reads_and_opens_what_zoa_seals() {
        let secret = b"the model key \x00\xff";
        let s = sealed(secret);
        let e = round_trip(&s);
        assert_eq!(e, s);
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

    /// The ciphertext is what an independent AES-256-GCM (OpenSSL's) makes with the
    /// additional data spelled out here: the envelopes zoa wrote before the writer moved
    /// into zoa-init are the ones it writes now, byte for byte.
    #[test]
    fn the_json_is_what_zoa_seal_always_wrote() {
        let secret = b"the model key";
        let v = serde_json::to_value(sealed(secret)).unwrap();
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
        assert_eq!(v["nonce"], b64().encode(NONCE));
        assert_eq!(
            v["encrypted_data_key"],
            b64().encode(b"kms ciphertext blob")
        );
        let aad = format!("zoa-sealed/1\n{ARN}\nzoa:deployment=demo\nzoa:secret=model-key\n");
        let mut tag = [0u8; TAG_LEN];
        let mut expected = openssl::symm::encrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            &KEY,
            Some(&NONCE),
            aad.as_bytes(),
            secret,
            &mut tag,
        )
        .unwrap();
        expected.extend_from_slice(&tag);
        assert_eq!(v["ciphertext"], b64().encode(expected));
    }

    #[test]
    fn tampered_envelopes_do_not_open() {
        let v = serde_json::to_value(sealed(b"secret")).unwrap();
        let mut ct = b64().decode(v["ciphertext"].as_str().unwrap()).unwrap();
        ct[0] ^= 1;
        for (field, value) in [
            ("/encryption_context/zoa:deployment", "other".into()),
            (
                "/key_arn",
                "arn:aws:kms:us-east-1:123456789012:key/other".into(),
            ),
            ("/nonce", b64().encode([8u8; NONCE_LEN]).into()),
            ("/ciphertext", b64().encode(&ct).into()),
        ] {
            let mut moved = v.clone();
            *moved.pointer_mut(field).unwrap() = value;
            let e = Envelope::from_value(&moved).unwrap();
            assert_eq!(
                e.open(&KEY).unwrap_err(),
                UnsealError::EnvelopeAuthentication,
                "{field} is authenticated"
            );
        }
        let mut refused = v.clone();
        refused["algorithm"] = "AES-256-CBC".into();
        assert!(Envelope::from_value(&refused).is_err());
    }

    #[test]
    fn what_zoa_init_refuses_is_not_written() {
        // No secret name in the context: zoa-init could not tell which secret it is.
        let context = BTreeMap::from([(DEPLOYMENT_KEY.to_owned(), "demo".to_owned())]);
        let e = seal_with(&KEY, &NONCE, ARN.into(), context, b"blob", b"s").unwrap_err();
        assert!(e.contains("cannot seal") && e.contains("zoa:secret"), "{e}");
        // More than zoa-init opens.
        let big = vec![1u8; MAX_SECRET_LEN + 1];
        let seal_big = |secret: &[u8]| {
            seal_with(
                &KEY,
                &NONCE,
                ARN.into(),
                super::context("demo", "model-key"),
                b"blob",
                secret,
            )
        };
        let e = seal_big(&big).unwrap_err();
        assert!(e.contains("8193 bytes"), "{e}");
        let at_most = seal_big(&big[..MAX_SECRET_LEN]).unwrap();
        assert_eq!(
            round_trip(&at_most).open(&KEY).unwrap().expose(),
            &big[..MAX_SECRET_LEN]
        );
    }
}
