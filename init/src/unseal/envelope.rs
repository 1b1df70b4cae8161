//! The `zoa seal` envelope ("zoa-sealed/1"): its one definition, read and opened in the image.
//!
//! JSON: the KMS key's ARN, the KMS encryption context, the data key as a KMS CiphertextBlob,
//! and the secret under that data key with AES-256-GCM (12-byte nonce; ciphertext, then the
//! 16-byte tag). The GCM additional data binds the ciphertext to the format, key ARN and context,
//! so no part can be swapped for another envelope's. `zoa seal` writes it with `Envelope::seal`
//! (feature `seal`, which the image's build leaves off). Envelopes arrive from outside the
//! measured image (user data), so [`Envelope::parse`] checks every field and size before KMS.

use std::{collections::BTreeMap, fmt};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::UnsealError;

/// The `format` of the envelopes this zoa-init opens.
pub const ENVELOPE_FORMAT: &str = "zoa-sealed/1";
/// The one `algorithm` of that format.
pub const ENVELOPE_ALGORITHM: &str = "AES-256-GCM";
/// The encryption-context entry that names the secret (`zoa seal --name`).
pub const SECRET_NAME_KEY: &str = "zoa:secret";
/// Largest secret `zoa seal` makes (8 KiB: envelopes travel in EC2 user data).
pub const MAX_SECRET_LEN: usize = 8 * 1024;
/// The data key: AES-256's, made by the sealer and encrypted by KMS.
pub const DATA_KEY_LEN: usize = 32;
/// The GCM nonce, fresh for every envelope.
pub const NONCE_LEN: usize = 12;
/// The GCM tag, after the ciphertext.
pub const TAG_LEN: usize = 16;
/// KMS CiphertextBlob is at most 6144 bytes (the API's limit).
const MAX_ENCRYPTED_DATA_KEY_LEN: usize = 6144;
/// KMS limits: 8192 bytes of encryption context in total; more is not a real envelope.
const MAX_CONTEXT_LEN: usize = 8192;
/// A key ARN is about 80 characters; this leaves room for any partition and alias ARN.
const MAX_KEY_ARN_LEN: usize = 2048;

/// The JSON fields: what [`Envelope::parse`] reads, and (feature `seal`) what `zoa seal` writes.
#[cfg_attr(feature = "seal", derive(serde::Serialize))]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeJson {
    format: String,
    key_arn: String,
    encryption_context: BTreeMap<String, String>,
    algorithm: String,
    encrypted_data_key: String,
    nonce: String,
    ciphertext: String,
}

/// A parsed, checked envelope. Holds only ciphertext: nothing in it is secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    key_arn: String,
    encryption_context: BTreeMap<String, String>,
    encrypted_data_key: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    /// GCM ciphertext followed by its tag.
    ciphertext: Vec<u8>,
}

/// An opened secret: its name (the context's `zoa:secret`) and its bytes, zeroed on drop and
/// never shown by `Debug`.
pub struct Secret {
    name: String,
    value: Zeroizing<Vec<u8>>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn invalid(detail: impl Into<String>) -> UnsealError {
    UnsealError::Envelope {
        detail: detail.into(),
    }
}

/// A base64 field decoded, with its length checked against `min..=max`.
fn decode_field(field: &str, text: &str, min: usize, max: usize) -> Result<Vec<u8>, UnsealError> {
    // base64 of `max` bytes is 4/3 as long: refuse longer text before decoding it.
    let max_text = max.div_ceil(3) * 4;
    if text.len() > max_text {
        return Err(invalid(format!(
            "{field} is {} characters of base64; at most {max} bytes ({max_text} characters) \
             are accepted",
            text.len()
        )));
    }
    let bytes = b64()
        .decode(text)
        .map_err(|e| invalid(format!("{field} is not base64: {e}")))?;
    if !(min..=max).contains(&bytes.len()) {
        return Err(invalid(format!(
            "{field} is {} bytes; expected {min} to {max}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

impl Envelope {
    /// Parses and checks an envelope: the format and algorithm, a named secret, and the size of
    /// every field. Nothing is decrypted here.
    pub fn parse(json: &[u8]) -> Result<Envelope, UnsealError> {
        let e: EnvelopeJson = serde_json::from_slice(json)
            .map_err(|e| invalid(format!("not a zoa sealed envelope: {e}")))?;
        Self::checked(e)
    }

    /// [`Envelope::parse`] for an envelope already read as part of a larger JSON document
    /// (the user data).
    pub fn from_value(value: &serde_json::Value) -> Result<Envelope, UnsealError> {
        let e = EnvelopeJson::deserialize(value)
            .map_err(|e| invalid(format!("not a zoa sealed envelope: {e}")))?;
        Self::checked(e)
    }

    fn checked(e: EnvelopeJson) -> Result<Envelope, UnsealError> {
        if e.format != ENVELOPE_FORMAT {
            return Err(invalid(format!(
                "format is {:?}; this zoa-init opens {ENVELOPE_FORMAT:?}",
                e.format
            )));
        }
        if e.algorithm != ENVELOPE_ALGORITHM {
            return Err(invalid(format!(
                "algorithm is {:?}; {ENVELOPE_FORMAT} uses {ENVELOPE_ALGORITHM:?}",
                e.algorithm
            )));
        }
        if e.key_arn.is_empty() || e.key_arn.len() > MAX_KEY_ARN_LEN {
            return Err(invalid(format!(
                "key_arn is {} characters; expected 1 to {MAX_KEY_ARN_LEN}",
                e.key_arn.len()
            )));
        }
        let context_len: usize = e
            .encryption_context
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if context_len > MAX_CONTEXT_LEN {
            return Err(invalid(format!(
                "encryption_context is {context_len} bytes; KMS allows {MAX_CONTEXT_LEN}"
            )));
        }
        if e.encryption_context
            .get(SECRET_NAME_KEY)
            .is_none_or(|name| name.is_empty())
        {
            return Err(invalid(format!(
                "encryption_context has no {SECRET_NAME_KEY:?} naming the secret"
            )));
        }
        let encrypted_data_key = decode_field(
            "encrypted_data_key",
            &e.encrypted_data_key,
            1,
            MAX_ENCRYPTED_DATA_KEY_LEN,
        )?;
        let nonce = decode_field("nonce", &e.nonce, NONCE_LEN, NONCE_LEN)?;
        let ciphertext = decode_field(
            "ciphertext",
            &e.ciphertext,
            TAG_LEN + 1,
            MAX_SECRET_LEN + TAG_LEN,
        )?;
        let mut fixed_nonce = [0u8; NONCE_LEN];
        fixed_nonce.copy_from_slice(&nonce);
        Ok(Envelope {
            key_arn: e.key_arn,
            encryption_context: e.encryption_context,
            encrypted_data_key,
            nonce: fixed_nonce,
            ciphertext,
        })
    }

    /// The KMS key the data key is encrypted under.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    /// The KMS encryption context, needed again to decrypt the data key.
    pub fn encryption_context(&self) -> &BTreeMap<String, String> {
        &self.encryption_context
    }

    /// The secret's name (`zoa seal --name`), checked present by [`Envelope::parse`].
    pub fn name(&self) -> &str {
        self.encryption_context
            .get(SECRET_NAME_KEY)
            .map_or("", String::as_str)
    }

    /// The data key as KMS encrypted it (the CiphertextBlob for kms:Decrypt).
    pub fn encrypted_data_key(&self) -> &[u8] {
        &self.encrypted_data_key
    }

    /// The AES-GCM additional data, the format's one layout (the writer's too): the format, the
    /// key ARN, then each context entry `key=value`, in key order, each on its own line.
    fn aad(&self) -> Vec<u8> {
        let mut aad = format!("{ENVELOPE_FORMAT}\n{}\n", self.key_arn);
        for (k, v) in &self.encryption_context {
            aad.push_str(&format!("{k}={v}\n"));
        }
        aad.into_bytes()
    }

    /// Opens the envelope with the data key KMS released. Fails when the data key is not 32
    /// bytes or the GCM tag does not verify (another envelope's key, or any change to the
    /// ciphertext, nonce, key ARN or context).
    pub fn open(&self, data_key: &[u8]) -> Result<Secret, UnsealError> {
        if data_key.len() != DATA_KEY_LEN {
            return Err(UnsealError::DataKeyLength(data_key.len()));
        }
        // The key schedule is zeroed on drop ("zeroize" feature).
        let cipher = Aes256Gcm::new_from_slice(data_key)
            .map_err(|_| UnsealError::DataKeyLength(data_key.len()))?;
        let nonce = Nonce::from(self.nonce);
        // Decrypted in place in a buffer that is zeroed when dropped, whatever happens.
        let mut buf = Zeroizing::new(self.ciphertext.clone());
        cipher
            .decrypt_in_place(&nonce, &self.aad(), &mut *buf)
            .map_err(|_| UnsealError::EnvelopeAuthentication)?;
        Ok(Secret {
            name: self.name().to_owned(),
            value: buf,
        })
    }
}

impl fmt::Debug for Envelope {
    // Lengths, not bytes: the fields are ciphertext, but a log needs only their shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("key_arn", &self.key_arn)
            .field("encryption_context", &self.encryption_context)
            .field("encrypted_data_key_len", &self.encrypted_data_key.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

impl Secret {
    /// A secret made in a test, without KMS.
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, value: &[u8]) -> Secret {
        Secret {
            name: name.to_owned(),
            value: Zeroizing::new(value.to_vec()),
        }
    }

    /// The secret's name, from the envelope's encryption context (`zoa:secret`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The secret's bytes. Copies the caller makes are its own to zero.
    pub fn expose(&self) -> &[u8] {
        &self.value
    }
}

impl fmt::Debug for Secret {
    // The name and length only: the value must never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("len", &self.value.len())
            .finish_non_exhaustive()
    }
}

/// The writer, `zoa seal`'s side of the format. Behind the `seal` feature: zoa enables it, and
/// `zoa build-init` does not, so the image's zoa-init holds no code that makes envelopes.
#[cfg(feature = "seal")]
impl Envelope {
    /// Seals `secret` with AES-256-GCM under `data_key` and `nonce`, bound by the additional
    /// data ([`Envelope::additional_data`]) to `key_arn` and `encryption_context`.
    /// `encrypted_data_key` is `data_key` as KMS encrypted it under `key_arn` with that context.
    /// A nonce must never be used twice with one data key (`zoa seal` makes a fresh data key for
    /// every envelope).
    ///
    /// The result is checked as [`Envelope::parse`] checks what it reads: whatever zoa-init
    /// would refuse (an empty or too large secret, no secret name, a field out of bounds) is
    /// refused here instead.
    pub fn seal(
        data_key: &[u8; DATA_KEY_LEN],
        nonce: &[u8; NONCE_LEN],
        key_arn: String,
        encryption_context: BTreeMap<String, String>,
        encrypted_data_key: &[u8],
        secret: &[u8],
    ) -> Result<Envelope, UnsealError> {
        if secret.is_empty() {
            return Err(invalid("the secret is empty"));
        }
        if secret.len() > MAX_SECRET_LEN {
            return Err(invalid(format!(
                "the secret is {} bytes; {ENVELOPE_FORMAT} holds at most {MAX_SECRET_LEN}",
                secret.len()
            )));
        }
        let mut sealed = Envelope {
            key_arn,
            encryption_context,
            encrypted_data_key: encrypted_data_key.to_vec(),
            nonce: *nonce,
            ciphertext: Vec::new(),
        };
        // The key schedule is zeroed on drop ("zeroize" feature).
        let cipher = Aes256Gcm::new_from_slice(data_key)
            .map_err(|_| UnsealError::DataKeyLength(data_key.len()))?;
        // Encrypted in place in a buffer zeroed on drop, with room for the tag from the start:
        // growing it would leave a copy of the plaintext in freed memory.
        let mut buf = Zeroizing::new(Vec::with_capacity(secret.len() + TAG_LEN));
        buf.extend_from_slice(secret);
        cipher
            .encrypt_in_place(&Nonce::from(*nonce), &sealed.aad(), &mut *buf)
            .map_err(|_| invalid(format!("{ENVELOPE_ALGORITHM} encryption failed")))?;
        sealed.ciphertext = buf.to_vec();
        // The reader's own checks, on exactly the JSON that will be written.
        Self::checked(sealed.to_json())
    }

    /// The AES-GCM additional data this envelope's ciphertext is bound to: its key ARN and
    /// encryption context in the format's layout, so the parts of two envelopes cannot be
    /// recombined (KMS binds the encrypted data key to exactly that context too).
    pub fn additional_data(&self) -> Vec<u8> {
        self.aad()
    }

    /// The envelope's JSON fields, as `zoa seal` writes them.
    fn to_json(&self) -> EnvelopeJson {
        EnvelopeJson {
            format: ENVELOPE_FORMAT.to_owned(),
            key_arn: self.key_arn.clone(),
            encryption_context: self.encryption_context.clone(),
            algorithm: ENVELOPE_ALGORITHM.to_owned(),
            encrypted_data_key: b64().encode(&self.encrypted_data_key),
            nonce: b64().encode(self.nonce),
            ciphertext: b64().encode(&self.ciphertext),
        }
    }
}

/// Serialises to the envelope's JSON, the document `zoa seal` writes and [`Envelope::parse`]
/// reads.
#[cfg(feature = "seal")]
impl serde::Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    //! Envelopes here are made with aes-gcm itself, so these tests check parsing and refusals;
    //! that a real `zoa seal` envelope opens is proven by integration/unseal.rs.

    use super::*;
    use aes_gcm::aead::AeadInOut;

    const ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn context() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("zoa:deployment".to_owned(), "demo".to_owned()),
            ("zoa:secret".to_owned(), "model-key".to_owned()),
        ])
    }

    /// The JSON `zoa seal` would write for `secret` under `key`, with AAD computed here
    /// independently of `Envelope::aad`.
    fn sealed(key: &[u8; 32], secret: &[u8]) -> serde_json::Value {
        let nonce = [7u8; NONCE_LEN];
        let aad = format!("zoa-sealed/1\n{ARN}\nzoa:deployment=demo\nzoa:secret=model-key\n");
        let mut buf = secret.to_vec();
        Aes256Gcm::new_from_slice(key)
            .unwrap()
            .encrypt_in_place(&Nonce::from(nonce), aad.as_bytes(), &mut buf)
            .unwrap();
        serde_json::json!({
            "format": "zoa-sealed/1",
            "key_arn": ARN,
            "encryption_context": context(),
            "algorithm": "AES-256-GCM",
            "encrypted_data_key": b64().encode(b"kms ciphertext blob"),
            "nonce": b64().encode(nonce),
            "ciphertext": b64().encode(buf),
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Envelope, UnsealError> {
        Envelope::parse(&serde_json::to_vec(v).unwrap())
    }

    fn detail(err: UnsealError) -> String {
        match err {
            UnsealError::Envelope { detail } => detail,
            other => panic!("expected an envelope error, got {other:?}"),
        }
    }

    #[test]
    fn opens_with_its_data_key() {
        let key = [9u8; 32];
        let e = parse(&sealed(&key, b"the secret\x00\xff")).unwrap();
        assert_eq!(e.key_arn(), ARN);
        assert_eq!(e.name(), "model-key");
        assert_eq!(e.encrypted_data_key(), b"kms ciphertext blob");
        assert_eq!(e.encryption_context(), &context());
        let secret = e.open(&key).unwrap();
        assert_eq!(secret.name(), "model-key");
        assert_eq!(secret.expose(), b"the secret\x00\xff");
    }

    #[test]
    fn refuses_another_key_and_any_change() {
        let key = [9u8; 32];
        let v = sealed(&key, b"the secret");
        let e = parse(&v).unwrap();
        assert_eq!(
            e.open(&[8u8; 32]).unwrap_err(),
            UnsealError::EnvelopeAuthentication
        );
        assert_eq!(
            e.open(&[9u8; 16]).unwrap_err(),
            UnsealError::DataKeyLength(16)
        );

        let mut ct = b64().decode(v["ciphertext"].as_str().unwrap()).unwrap();
        for at in [0, ct.len() - 1] {
            ct[at] ^= 0x01;
            let mut flipped = v.clone();
            flipped["ciphertext"] = b64().encode(&ct).into();
            let err = parse(&flipped).unwrap().open(&key).unwrap_err();
            assert_eq!(err, UnsealError::EnvelopeAuthentication, "flip at {at}");
            ct[at] ^= 0x01;
        }
        // The context and key ARN are bound by the additional data.
        let mut moved = v.clone();
        moved["encryption_context"]["zoa:deployment"] = "other".into();
        assert_eq!(
            parse(&moved).unwrap().open(&key).unwrap_err(),
            UnsealError::EnvelopeAuthentication
        );
        let mut rekeyed = v.clone();
        rekeyed["key_arn"] = ARN.replace("1234abcd", "5678abcd").into();
        assert_eq!(
            parse(&rekeyed).unwrap().open(&key).unwrap_err(),
            UnsealError::EnvelopeAuthentication
        );
        let mut renonced = v.clone();
        renonced["nonce"] = b64().encode([8u8; NONCE_LEN]).into();
        assert_eq!(
            parse(&renonced).unwrap().open(&key).unwrap_err(),
            UnsealError::EnvelopeAuthentication
        );
    }

    #[test]
    fn refuses_malformed_envelopes_naming_the_field() {
        let v = sealed(&[9u8; 32], b"s");
        let cases: &[(&str, serde_json::Value, &str)] = &[
            (
                "format",
                "zoa-sealed/2".into(),
                "format is \"zoa-sealed/2\"",
            ),
            (
                "algorithm",
                "AES-256-CBC".into(),
                "algorithm is \"AES-256-CBC\"",
            ),
            ("key_arn", "".into(), "key_arn is 0 characters"),
            (
                "nonce",
                b64().encode([0u8; 16]).into(),
                "nonce is 24 characters of base64",
            ),
            (
                "nonce",
                b64().encode([0u8; 8]).into(),
                "nonce is 8 bytes; expected 12 to 12",
            ),
            ("nonce", "***".into(), "nonce is not base64"),
            (
                "ciphertext",
                b64().encode([0u8; 16]).into(),
                "ciphertext is 16 bytes",
            ),
            (
                "ciphertext",
                b64().encode(vec![0u8; MAX_SECRET_LEN + TAG_LEN + 1]).into(),
                "ciphertext is 10948 characters of base64",
            ),
            (
                "encrypted_data_key",
                "".into(),
                "encrypted_data_key is 0 bytes",
            ),
            (
                "encryption_context",
                serde_json::json!({"zoa:deployment": "demo"}),
                "no \"zoa:secret\"",
            ),
        ];
        for (field, value, expected) in cases {
            let mut bad = v.clone();
            bad[*field] = value.clone();
            let message = detail(parse(&bad).unwrap_err());
            assert!(message.contains(expected), "{field}: {message}");
        }
        let mut extra = v.clone();
        extra["plaintext"] = "x".into();
        assert!(detail(parse(&extra).unwrap_err()).contains("unknown field `plaintext`"));
        assert!(detail(Envelope::parse(b"{").unwrap_err()).contains("not a zoa sealed envelope"));
    }

    #[test]
    fn errors_and_debug_show_no_secret() {
        let key = [9u8; 32];
        let e = parse(&sealed(&key, b"hunter2")).unwrap();
        let secret = e.open(&key).unwrap();
        let shown = format!("{secret:?} {e:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            format!("{secret:?}"),
            "Secret { name: \"model-key\", len: 7, .. }"
        );
        assert_eq!(
            UnsealError::EnvelopeAuthentication.to_string(),
            "sealed envelope does not open: AES-256-GCM authentication failed \
             (a data key for another envelope, or the envelope was altered)"
        );
    }

    #[test]
    fn additional_data_is_the_documented_layout() {
        assert_eq!(
            parse(&sealed(&[9u8; 32], b"s")).unwrap().aad(),
            format!("zoa-sealed/1\n{ARN}\nzoa:deployment=demo\nzoa:secret=model-key\n")
                .into_bytes()
        );
    }

    /// The writer makes, byte for byte, the JSON made independently above (which is what
    /// `zoa seal` wrote before the writer moved here), its fields in the format's order.
    #[cfg(feature = "seal")]
    #[test]
    fn seal_writes_the_documented_json() {
        let key = [9u8; 32];
        let secret = b"the secret\x00\xff";
        let e = Envelope::seal(
            &key,
            &[7u8; NONCE_LEN],
            ARN.to_owned(),
            context(),
            b"kms ciphertext blob",
            secret,
        )
        .unwrap();
        let written = serde_json::to_string(&e).unwrap();
        let v = sealed(&key, secret);
        let field = |name: &str| v[name].as_str().unwrap().to_owned();
        let expected = format!(
            "{{\"format\":\"zoa-sealed/1\",\"key_arn\":\"{ARN}\",\"encryption_context\":\
             {{\"zoa:deployment\":\"demo\",\"zoa:secret\":\"model-key\"}},\
             \"algorithm\":\"AES-256-GCM\",\"encrypted_data_key\":\"{}\",\"nonce\":\"{}\",\
             \"ciphertext\":\"{}\"}}",
            field("encrypted_data_key"),
            field("nonce"),
            field("ciphertext"),
        );
        assert_eq!(written, expected);
        let back = Envelope::parse(written.as_bytes()).unwrap();
        assert_eq!(back, e);
        let opened = back.open(&key).unwrap();
        assert_eq!((opened.name(), opened.expose()), ("model-key", &secret[..]));
    }

    #[cfg(feature = "seal")]
    #[test]
    fn seal_refuses_what_zoa_init_would_refuse() {
        let seal = |arn: &str, context, secret: &[u8]| {
            Envelope::seal(
                &[9u8; 32],
                &[7u8; NONCE_LEN],
                arn.to_owned(),
                context,
                b"blob",
                secret,
            )
            .map_err(detail)
        };
        let e = seal(ARN, context(), b"").unwrap_err();
        assert!(e.contains("the secret is empty"), "{e}");
        let big = vec![1u8; MAX_SECRET_LEN + 1];
        let e = seal(ARN, context(), &big).unwrap_err();
        assert!(
            e.contains("is 8193 bytes") && e.contains("at most 8192"),
            "{e}"
        );
        assert!(seal(ARN, context(), &big[..MAX_SECRET_LEN]).is_ok());
        let unnamed = BTreeMap::from([("zoa:deployment".to_owned(), "demo".to_owned())]);
        let e = seal(ARN, unnamed, b"s").unwrap_err();
        assert!(e.contains("no \"zoa:secret\""), "{e}");
        let e = seal("", context(), b"s").unwrap_err();
        assert!(e.contains("key_arn is 0 characters"), "{e}");
    }
}
