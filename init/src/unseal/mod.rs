//! Secrets that AWS KMS releases only to an attested zoa-init.
//!
//! When Decrypt or GenerateDataKey is called with a `Recipient` (an attestation document and
//! `RSAES_OAEP_SHA_256`), KMS leaves `Plaintext` empty and answers `CiphertextForRecipient`
//! instead: a CMS EnvelopedData whose content key is encrypted to the public key inside the
//! attestation document. [`RecipientKey`] is that key pair, made fresh for each boot and never
//! written anywhere; [`open_recipient_ciphertext`] opens the envelope. Whoever relays the KMS
//! answer sees only ciphertext.
//!
//! [`unseal_envelopes`] is the whole path at boot: region and role credentials from IMDSv2
//! (`imds`), kms:Decrypt of each `zoa seal` [`Envelope`]'s data key for the recipient (`kms`),
//! then the envelope opened with that data key into a [`Secret`] (`envelope`).

mod cms;
pub mod envelope;
mod imds;
mod kms;
mod userdata;

use std::fmt;

use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;

pub use self::cms::{open_recipient_ciphertext, MAX_PLAINTEXT_LEN};
pub use self::envelope::{Envelope, Secret, ENVELOPE_FORMAT, SECRET_NAME_KEY};
pub use self::imds::DEFAULT_IMDS_ENDPOINT;
pub use self::kms::{unseal_envelopes, unseal_user_data};
pub use self::userdata::{UserData, MAX_USER_DATA_LEN, USER_DATA_FORMAT};

/// Modulus size of generated keys: the key protects one boot's secrets for seconds, and key
/// generation at boot grows steeply with size.
pub const KEY_BITS: usize = 2048;

/// Smallest and largest modulus [`RecipientKey::from_pkcs8_der`] accepts, in bytes: below
/// 2048 bits is too weak; above 4096 nothing of ours would produce.
const MIN_KEY_BYTES: usize = 2048 / 8;
const MAX_KEY_BYTES: usize = 4096 / 8;

/// The RSA private key KMS encrypts content keys to. Its memory is zeroed on drop (by `rsa`).
pub struct RecipientKey {
    key: rsa::PrivateKey,
}

impl RecipientKey {
    /// A new RSA-2048 key with e = 65537, from the kernel's random source (`getrandom(2)`,
    /// which blocks until the kernel's generator is seeded).
    pub fn generate() -> Result<RecipientKey, UnsealError> {
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, KEY_BITS)
            .map_err(|e| UnsealError::KeyGeneration(e.to_string()))?;
        Ok(RecipientKey { key })
    }

    /// The public key as DER `SubjectPublicKeyInfo`: the `public_key` of the NSM attestation
    /// request, which KMS encrypts to.
    pub fn public_key_der(&self) -> Result<Vec<u8>, UnsealError> {
        let doc = self
            .key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| UnsealError::KeyEncoding(e.to_string()))?;
        Ok(doc.into_vec())
    }

    /// A key from PKCS#8 `PrivateKeyInfo` DER (tests, and keys made elsewhere).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<RecipientKey, UnsealError> {
        // The error names the failing structure, never key material.
        let key = rsa::PrivateKey::from_pkcs8_der(der)
            .map_err(|e| UnsealError::KeyDecoding(e.to_string()))?;
        let bytes = key.size();
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&bytes) {
            return Err(UnsealError::KeySize { bits: bytes * 8 });
        }
        Ok(RecipientKey { key })
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.size() * 8
    }
}

impl fmt::Debug for RecipientKey {
    // Only the size: the key itself must never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecipientKey")
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

/// Why a recipient key could not be made or an envelope could not be opened. Messages name the
/// structure or field at fault and carry algorithm names and lengths, never key or content bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsealError {
    /// The RSA key generator failed (the random source, most likely).
    KeyGeneration(String),
    /// The public key could not be encoded as SubjectPublicKeyInfo.
    KeyEncoding(String),
    /// Not a PKCS#8 RSA private key.
    KeyDecoding(String),
    /// An RSA key of a size we do not use.
    KeySize { bits: usize },
    /// The envelope is larger than any KMS answer we ask for.
    EnvelopeTooLarge { len: usize, max: usize },
    /// A structure failed to decode (BER/DER syntax, a missing field, trailing data).
    Malformed {
        structure: &'static str,
        detail: String,
    },
    /// `ContentInfo.contentType` is not id-envelopedData.
    NotEnvelopedData { content_type: String },
    /// `recipientInfos` does not hold exactly one entry.
    RecipientCount(usize),
    /// The recipient is not a KeyTransRecipientInfo.
    RecipientNotKeyTrans { kind: &'static str },
    /// `keyEncryptionAlgorithm` is not RSAES-OAEP.
    KeyEncryptionAlgorithm { algorithm: String },
    /// RSAES-OAEP parameters other than SHA-256, MGF1 with SHA-256 and an empty label.
    OaepParameters { field: &'static str, found: String },
    /// `encryptedContentInfo.contentType` is not id-data.
    ContentType { content_type: String },
    /// `contentEncryptionAlgorithm` is not AES-256-CBC.
    ContentEncryptionAlgorithm { algorithm: String },
    /// The AES-CBC parameters are not a 16-byte IV.
    Iv { detail: String },
    /// `encryptedContent` is absent (detached content).
    ContentMissing,
    /// The encrypted content is empty, not whole AES blocks, or over the bound.
    ContentLength { len: usize, max: usize },
    /// RSAES-OAEP decryption of the content key failed: the envelope is for another key, or
    /// the encrypted key was altered.
    KeyTransport,
    /// The decrypted content-encryption key is not 32 bytes (AES-256).
    ContentKeyLength(usize),
    /// The decrypted content is longer than [`MAX_PLAINTEXT_LEN`].
    PlaintextLength { len: usize, max: usize },
    /// PKCS#7 padding of the decrypted content is invalid: the content was altered (or the key
    /// is wrong).
    Padding,
    /// The tokio runtime for the network calls could not be made.
    Runtime(String),
    /// The HTTPS client could not be configured.
    Tls(String),
    /// An IMDSv2 call failed (`step`: endpoint, region, role name, role credentials).
    Imds { step: &'static str, detail: String },
    /// IMDS lists no role: the instance was launched without an instance profile.
    ImdsNoRole { endpoint: String },
    /// kms:Decrypt failed: the service's error code and message, or the transport's.
    Kms {
        key_arn: String,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// kms:Decrypt answered with `Plaintext`: no attestation was honoured.
    KmsPlaintext { request_id: Option<String> },
    /// kms:Decrypt answered without `CiphertextForRecipient`, or for another key.
    KmsAnswer {
        detail: String,
        request_id: Option<String>,
    },
    /// A sealed envelope is malformed (format, algorithm, a field's encoding or size).
    Envelope { detail: String },
    /// The instance's user data is not zoa's, or lacks a secret.
    UserData { detail: String },
    /// The data key KMS released is not 32 bytes.
    DataKeyLength(usize),
    /// The envelope's AES-256-GCM tag does not verify.
    EnvelopeAuthentication,
    /// Unsealing the named secret failed.
    Secret {
        name: String,
        error: Box<UnsealError>,
    },
}

/// ` (request id X)`, or nothing.
fn request_suffix(id: &Option<String>) -> String {
    id.as_ref()
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

impl fmt::Display for UnsealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsealError::KeyGeneration(e) => write!(f, "RSA key generation failed: {e}"),
            UnsealError::KeyEncoding(e) => {
                write!(
                    f,
                    "encoding the public key as SubjectPublicKeyInfo failed: {e}"
                )
            }
            UnsealError::KeyDecoding(e) => {
                write!(f, "not a PKCS#8 RSA private key: {e}")
            }
            UnsealError::KeySize { bits } => write!(
                f,
                "RSA key of {bits} bits; expected {} to {} bits",
                MIN_KEY_BYTES * 8,
                MAX_KEY_BYTES * 8
            ),
            UnsealError::EnvelopeTooLarge { len, max } => write!(
                f,
                "CiphertextForRecipient is {len} bytes; at most {max} are accepted"
            ),
            UnsealError::Malformed { structure, detail } => {
                write!(f, "malformed CMS {structure}: {detail}")
            }
            UnsealError::NotEnvelopedData { content_type } => write!(
                f,
                "CMS ContentInfo.contentType is {content_type}; expected id-envelopedData"
            ),
            UnsealError::RecipientCount(n) => write!(
                f,
                "CMS EnvelopedData.recipientInfos has {n} entries; expected exactly 1"
            ),
            UnsealError::RecipientNotKeyTrans { kind } => write!(
                f,
                "CMS RecipientInfo is {kind}; expected KeyTransRecipientInfo"
            ),
            UnsealError::KeyEncryptionAlgorithm { algorithm } => write!(
                f,
                "CMS KeyTransRecipientInfo.keyEncryptionAlgorithm is {algorithm}; \
                 expected RSAES-OAEP with SHA-256"
            ),
            UnsealError::OaepParameters { field, found } => write!(
                f,
                "RSAES-OAEP-params.{field} is {found}; expected SHA-256, MGF1 with SHA-256 \
                 and an empty label"
            ),
            UnsealError::ContentType { content_type } => write!(
                f,
                "CMS EncryptedContentInfo.contentType is {content_type}; expected id-data"
            ),
            UnsealError::ContentEncryptionAlgorithm { algorithm } => write!(
                f,
                "CMS EncryptedContentInfo.contentEncryptionAlgorithm is {algorithm}; \
                 expected aes256-CBC"
            ),
            UnsealError::Iv { detail } => {
                write!(f, "aes256-CBC parameters (the IV): {detail}")
            }
            UnsealError::ContentMissing => write!(
                f,
                "CMS EncryptedContentInfo.encryptedContent is absent (detached content)"
            ),
            UnsealError::ContentLength { len, max } => write!(
                f,
                "CMS encryptedContent is {len} bytes; expected 16 to {max}, a multiple of 16"
            ),
            UnsealError::KeyTransport => write!(
                f,
                "RSAES-OAEP decryption of the content-encryption key failed \
                 (envelope for another key, or altered)"
            ),
            UnsealError::ContentKeyLength(n) => write!(
                f,
                "content-encryption key is {n} bytes; aes256-CBC needs 32"
            ),
            UnsealError::PlaintextLength { len, max } => write!(
                f,
                "decrypted content is {len} bytes; at most {max} are accepted"
            ),
            UnsealError::Padding => write!(
                f,
                "decrypted content has invalid PKCS#7 padding (altered content)"
            ),
            UnsealError::Runtime(e) => write!(f, "cannot start the async runtime: {e}"),
            UnsealError::Tls(e) => write!(f, "cannot configure the HTTPS client: {e}"),
            UnsealError::Imds { step, detail } => {
                write!(f, "instance metadata (IMDSv2) {step}: {detail}")
            }
            UnsealError::ImdsNoRole { endpoint } => write!(
                f,
                "instance metadata at {endpoint} lists no IAM role: launch the instance \
                 with the deployment's instance profile"
            ),
            UnsealError::Kms {
                key_arn,
                code,
                message,
                request_id,
            } => {
                let message = if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                };
                write!(
                    f,
                    "kms:Decrypt of a data key under {key_arn} failed: {code}{message}{}",
                    request_suffix(request_id)
                )
            }
            UnsealError::KmsPlaintext { request_id } => write!(
                f,
                "kms:Decrypt answered with Plaintext instead of CiphertextForRecipient: \
                 the attestation was not honoured; refused{}",
                request_suffix(request_id)
            ),
            UnsealError::KmsAnswer { detail, request_id } => write!(
                f,
                "kms:Decrypt answer refused: {detail}{}",
                request_suffix(request_id)
            ),
            UnsealError::Envelope { detail } => write!(f, "sealed envelope: {detail}"),
            UnsealError::UserData { detail } => write!(f, "user data: {detail}"),
            UnsealError::DataKeyLength(n) => {
                write!(
                    f,
                    "the data key KMS released is {n} bytes; AES-256 needs 32"
                )
            }
            UnsealError::EnvelopeAuthentication => write!(
                f,
                "sealed envelope does not open: AES-256-GCM authentication failed \
                 (a data key for another envelope, or the envelope was altered)"
            ),
            UnsealError::Secret { name, error } => write!(f, "secret {name:?}: {error}"),
        }
    }
}

impl std::error::Error for UnsealError {}
