//! Secrets that AWS KMS releases only to an attested zoa-init.
//!
//! When Decrypt or GenerateDataKey is called with a `Recipient` (an attestation document and
//! `RSAES_OAEP_SHA_256`), KMS leaves `Plaintext` empty and answers `CiphertextForRecipient`
//! instead: a CMS EnvelopedData whose content key is encrypted to the public key inside the
//! attestation document. [`RecipientKey`] is that key pair, made fresh for each boot and never
//! written anywhere; [`open_recipient_ciphertext`] opens the envelope. Whoever relays the KMS
//! answer sees only ciphertext.

mod cms;

use std::fmt;

use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;

pub use self::cms::{open_recipient_ciphertext, MAX_PLAINTEXT_LEN};

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
        }
    }
}

impl std::error::Error for UnsealError {}
