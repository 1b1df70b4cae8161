//! Opening a KMS `CiphertextForRecipient`: CMS (RFC 5652) ContentInfo → EnvelopedData with
//! one KeyTransRecipientInfo (RSAES-OAEP, SHA-256, MGF1-SHA-256; RFC 3560) and AES-256-CBC
//! content (RFC 3565). Anything else is refused before any private-key operation.
//!
//! KMS encodes the envelope in BER with indefinite lengths (the outer SEQUENCEs and the
//! encrypted content as a constructed OCTET STRING), so it is read as BER, not DER.
//!
//! The ASN.1 types below declare only what we read, and leave the parts we ignore (the
//! recipient identifier, originatorInfo, unprotectedAttrs) undecoded. The `cms` crate would
//! also decode the certificates and CRLs originatorInfo may carry: about 250 KB more in the
//! static release binary, and more parser exposed to input that nothing here needs.

use aes::Aes256;
use cbc::cipher::{block_padding::Pkcs7, BlockModeDecrypt, KeyIvInit};
use der::asn1::{Any, ObjectIdentifier, OctetString, SetOfVec};
use der::{Decode, EncodingRules, Sequence, Tag, TagNumber, Tagged};
use rsa::pkcs1::RsaOaepParams;
use rsa::pkcs8::spki::AlgorithmIdentifier;
use rsa::sha2::Sha256;
use zeroize::Zeroizing;

use super::{RecipientKey, UnsealError};

/// Largest plaintext accepted: a data key is 32 bytes, a Decrypt of a small secret may be more.
pub const MAX_PLAINTEXT_LEN: usize = 4096;

const AES_BLOCK_LEN: usize = 16;
const AES_256_KEY_LEN: usize = 32;
/// PKCS#7 padding adds 1 to 16 bytes, so the largest plaintext pads to this.
const MAX_CONTENT_LEN: usize = MAX_PLAINTEXT_LEN + AES_BLOCK_LEN;
/// Bound on the whole envelope, checked before parsing: content, a 4096-bit encrypted key and a
/// recipient identifier with an issuer name fit with room to spare.
const MAX_ENVELOPE_LEN: usize = 16 * 1024;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
const ID_RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const ID_P_SPECIFIED: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.9");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");

/// RFC 5652 §3: `ContentInfo ::= SEQUENCE { contentType, content [0] EXPLICIT ANY }`.
#[derive(Sequence)]
struct ContentInfo {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: Any,
}

/// RFC 5652 §6.1 `EnvelopedData`. originatorInfo is a SEQUENCE and unprotectedAttrs a SET
/// under IMPLICIT tags: kept as their undecoded elements.
#[derive(Sequence)]
struct EnvelopedData {
    version: u8,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    originator_info: Option<Vec<Any>>,
    /// RecipientInfo is a CHOICE; each is told apart by its tag in [`single_key_trans`].
    recipient_infos: SetOfVec<Any>,
    encrypted_content_info: EncryptedContentInfo,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    unprotected_attrs: Option<SetOfVec<Any>>,
}

/// RFC 5652 §6.2.1 `KeyTransRecipientInfo`.
#[derive(Sequence)]
struct KeyTransRecipientInfo {
    version: u8,
    /// issuerAndSerialNumber or [0] subjectKeyIdentifier (KMS): not compared, see below.
    rid: Any,
    key_encryption_algorithm: AlgorithmIdentifier<Any>,
    encrypted_key: OctetString,
}

/// RFC 5652 §6.1 `EncryptedContentInfo`. In BER the [0] may be a constructed OCTET STRING in
/// chunks (KMS sends that); der joins them.
#[derive(Sequence)]
struct EncryptedContentInfo {
    content_type: ObjectIdentifier,
    content_encryption_algorithm: AlgorithmIdentifier<Any>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    encrypted_content: Option<OctetString>,
}

/// Names for the OIDs an envelope we refuse is likely to carry, so the error says what was
/// found and not only a dotted number.
const OID_NAMES: &[(&str, &str)] = &[
    (
        "1.2.840.113549.1.1.1",
        "rsaEncryption (RSAES-PKCS1-v1_5, PKCS#1 v1.5)",
    ),
    ("1.2.840.113549.1.1.7", "RSAES-OAEP"),
    ("1.2.840.113549.1.1.8", "MGF1"),
    ("1.2.840.113549.1.1.9", "pSpecified"),
    ("1.2.840.113549.1.7.1", "id-data"),
    ("1.2.840.113549.1.7.2", "id-signedData"),
    ("1.2.840.113549.1.7.3", "id-envelopedData"),
    ("1.2.840.113549.1.7.5", "id-digestedData"),
    ("1.2.840.113549.1.7.6", "id-encryptedData"),
    ("1.2.840.113549.1.9.16.1.23", "id-ct-authEnvelopedData"),
    ("1.2.840.113549.3.7", "des-ede3-cbc"),
    ("1.3.14.3.2.26", "SHA-1"),
    ("2.16.840.1.101.3.4.2.1", "SHA-256"),
    ("2.16.840.1.101.3.4.2.2", "SHA-384"),
    ("2.16.840.1.101.3.4.2.3", "SHA-512"),
    ("2.16.840.1.101.3.4.2.4", "SHA-224"),
    ("2.16.840.1.101.3.4.1.2", "aes128-CBC"),
    ("2.16.840.1.101.3.4.1.22", "aes192-CBC"),
    ("2.16.840.1.101.3.4.1.42", "aes256-CBC"),
    ("2.16.840.1.101.3.4.1.6", "aes128-GCM"),
    ("2.16.840.1.101.3.4.1.46", "aes256-GCM"),
];

/// `name (dotted.oid)`, or the dotted OID alone when we have no name for it.
fn describe(oid: &ObjectIdentifier) -> String {
    let dotted = oid.to_string();
    match OID_NAMES.iter().find(|(o, _)| *o == dotted) {
        Some((_, name)) => format!("{name} ({dotted})"),
        None => dotted,
    }
}

fn malformed(structure: &'static str, e: der::Error) -> UnsealError {
    // der's errors give the kind and byte position, never the bytes themselves.
    UnsealError::Malformed {
        structure,
        detail: e.to_string(),
    }
}

/// Opens `CiphertextForRecipient` with `key` and returns the plaintext (the data key, or what
/// Decrypt would have returned). The caller should zero the result when done with it.
///
/// AES-CBC has no integrity check: altered content is caught only when it breaks the padding.
/// What protects the answer from tampering is the TLS session to KMS; a caller that needs more
/// must check the plaintext itself (a LUKS key slot does).
pub fn open_recipient_ciphertext(key: &RecipientKey, der: &[u8]) -> Result<Vec<u8>, UnsealError> {
    if der.len() > MAX_ENVELOPE_LEN {
        return Err(UnsealError::EnvelopeTooLarge {
            len: der.len(),
            max: MAX_ENVELOPE_LEN,
        });
    }
    // from_ber refuses trailing bytes after the ContentInfo.
    let info = ContentInfo::from_ber(der).map_err(|e| malformed("ContentInfo", e))?;
    if info.content_type != ID_ENVELOPED_DATA {
        return Err(UnsealError::NotEnvelopedData {
            content_type: describe(&info.content_type),
        });
    }
    let enveloped: EnvelopedData = info
        .content
        .decode_as_encoding(EncodingRules::Ber)
        .map_err(|e| malformed("EnvelopedData", e))?;
    // originatorInfo and unprotectedAttrs are ignored: neither takes part in decryption.

    let recipient = single_key_trans(&enveloped)?;
    check_rsaes_oaep_sha256(&recipient.key_encryption_algorithm)?;
    let (iv, ciphertext) = aes256_cbc_content(&enveloped.encrypted_content_info)?;

    // Checked above, before this private-key operation, so a refused envelope costs nothing.
    // The rsa crate blinds the operation with the kernel's random source.
    let cek = Zeroizing::new(
        key.key
            .oaep_decrypt::<Sha256>(recipient.encrypted_key.as_bytes())
            .map_err(|_| UnsealError::KeyTransport)?,
    );
    if cek.len() != AES_256_KEY_LEN {
        return Err(UnsealError::ContentKeyLength(cek.len()));
    }
    decrypt_content(&cek, iv, ciphertext)
}

/// The only RecipientInfo, which must be a KeyTransRecipientInfo. Its identifier (KMS: a
/// subjectKeyIdentifier) is not compared: there is one key to try, and OAEP fails if it is the
/// wrong one.
fn single_key_trans(enveloped: &EnvelopedData) -> Result<KeyTransRecipientInfo, UnsealError> {
    let recipients = enveloped.recipient_infos.as_slice();
    let [only] = recipients else {
        return Err(UnsealError::RecipientCount(recipients.len()));
    };
    // RFC 5652 §6.2: ktri is the untagged SEQUENCE; the others are [1] to [4].
    let kind = match only.tag() {
        Tag::Sequence => {
            return only
                .decode_as_encoding(EncodingRules::Ber)
                .map_err(|e| malformed("KeyTransRecipientInfo", e))
        }
        Tag::ContextSpecific {
            number: TagNumber(1),
            ..
        } => "KeyAgreeRecipientInfo",
        Tag::ContextSpecific {
            number: TagNumber(2),
            ..
        } => "KEKRecipientInfo",
        Tag::ContextSpecific {
            number: TagNumber(3),
            ..
        } => "PasswordRecipientInfo",
        Tag::ContextSpecific {
            number: TagNumber(4),
            ..
        } => "OtherRecipientInfo",
        _ => "of an unknown kind",
    };
    Err(UnsealError::RecipientNotKeyTrans { kind })
}

/// True for an AlgorithmIdentifier's parameters that are absent or NULL: both are seen for
/// SHA-256 (KMS writes NULL, OpenSSL omits them).
fn absent_or_null(params: Option<&Any>) -> bool {
    params.is_none_or(|p| p.is_null())
}

/// The key-encryption algorithm must be RSAES-OAEP with SHA-256, MGF1-SHA-256 and the empty
/// label: exactly what `oaep_decrypt::<Sha256>` computes. Absent parameters mean the SHA-1
/// defaults, which are refused.
fn check_rsaes_oaep_sha256(alg: &AlgorithmIdentifier<Any>) -> Result<(), UnsealError> {
    if alg.oid != ID_RSAES_OAEP {
        return Err(UnsealError::KeyEncryptionAlgorithm {
            algorithm: describe(&alg.oid),
        });
    }
    let Some(params) = alg.parameters.as_ref() else {
        return Err(UnsealError::OaepParameters {
            field: "hashFunc",
            found: "absent (the SHA-1 default)".to_string(),
        });
    };
    let params: RsaOaepParams<Any> = params
        .decode_as_encoding(EncodingRules::Ber)
        .map_err(|e| malformed("RSAES-OAEP-params", e))?;

    if params.hash.oid != ID_SHA256 {
        return Err(UnsealError::OaepParameters {
            field: "hashFunc",
            found: describe(&params.hash.oid),
        });
    }
    if !absent_or_null(params.hash.parameters.as_ref()) {
        return Err(UnsealError::OaepParameters {
            field: "hashFunc",
            found: "SHA-256 with parameters other than NULL".to_string(),
        });
    }
    if params.mask_gen.oid != ID_MGF1 {
        return Err(UnsealError::OaepParameters {
            field: "maskGenFunc",
            found: describe(&params.mask_gen.oid),
        });
    }
    match params.mask_gen.parameters.as_ref() {
        Some(hash) if hash.oid == ID_SHA256 && absent_or_null(hash.parameters.as_ref()) => {}
        Some(hash) if hash.oid == ID_SHA256 => {
            return Err(UnsealError::OaepParameters {
                field: "maskGenFunc",
                found: "MGF1 with SHA-256 with parameters other than NULL".to_string(),
            })
        }
        Some(hash) => {
            return Err(UnsealError::OaepParameters {
                field: "maskGenFunc",
                found: format!("MGF1 with {}", describe(&hash.oid)),
            })
        }
        None => {
            return Err(UnsealError::OaepParameters {
                field: "maskGenFunc",
                found: "MGF1 without a hash".to_string(),
            })
        }
    }
    if params.p_source.oid != ID_P_SPECIFIED {
        return Err(UnsealError::OaepParameters {
            field: "pSourceFunc",
            found: describe(&params.p_source.oid),
        });
    }
    let empty_label = params
        .p_source
        .parameters
        .as_ref()
        .is_some_and(|label| label.tag() == Tag::OctetString && label.value().is_empty());
    if !empty_label {
        return Err(UnsealError::OaepParameters {
            field: "pSourceFunc",
            found: "pSpecified with a label".to_string(),
        });
    }
    Ok(())
}

/// Checks the content is id-data under AES-256-CBC and returns (IV, ciphertext).
fn aes256_cbc_content(content: &EncryptedContentInfo) -> Result<(&[u8], &[u8]), UnsealError> {
    if content.content_type != ID_DATA {
        return Err(UnsealError::ContentType {
            content_type: describe(&content.content_type),
        });
    }
    let alg = &content.content_encryption_algorithm;
    if alg.oid != ID_AES256_CBC {
        return Err(UnsealError::ContentEncryptionAlgorithm {
            algorithm: describe(&alg.oid),
        });
    }
    let iv = match alg.parameters.as_ref() {
        None => {
            return Err(UnsealError::Iv {
                detail: "absent".to_string(),
            })
        }
        Some(p) if p.tag() != Tag::OctetString => {
            return Err(UnsealError::Iv {
                detail: format!("{} instead of an OCTET STRING", p.tag()),
            })
        }
        Some(p) => p.value(),
    };
    if iv.len() != AES_BLOCK_LEN {
        return Err(UnsealError::Iv {
            detail: format!("{} bytes; expected {AES_BLOCK_LEN}", iv.len()),
        });
    }
    let ciphertext = content
        .encrypted_content
        .as_ref()
        .ok_or(UnsealError::ContentMissing)?
        .as_bytes();
    let len = ciphertext.len();
    if len == 0 || len % AES_BLOCK_LEN != 0 || len > MAX_CONTENT_LEN {
        return Err(UnsealError::ContentLength {
            len,
            max: MAX_CONTENT_LEN,
        });
    }
    Ok((iv, ciphertext))
}

fn decrypt_content(cek: &[u8], iv: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, UnsealError> {
    let decryptor = cbc::Decryptor::<Aes256>::new_from_slices(cek, iv)
        .map_err(|_| UnsealError::ContentKeyLength(cek.len()))?;
    // Decrypted in place in a buffer that is zeroed if anything below fails.
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let len = decryptor
        .decrypt_padded::<Pkcs7>(&mut buf)
        .map_err(|_| UnsealError::Padding)?
        .len();
    // 4097 to 4111 bytes pad to the same length as 4096: only now can they be told apart.
    if len > MAX_PLAINTEXT_LEN {
        return Err(UnsealError::PlaintextLength {
            len,
            max: MAX_PLAINTEXT_LEN,
        });
    }
    // The plaintext is the buffer's head; handing the buffer over avoids a second copy.
    let mut plaintext = std::mem::take(&mut *buf);
    plaintext.truncate(len);
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    //! Envelopes come from the real `openssl cms -encrypt`, so these tests check interoperation
    //! and not only agreement with ourselves. Without `openssl` on PATH they skip, saying so.

    use super::*;
    use der::Encode;
    use rsa::pkcs8::EncodePrivateKey;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// The KMS parameters: AES-256-CBC content, RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    const OAEP_SHA256: &[&str] = &[
        "-keyopt",
        "rsa_padding_mode:oaep",
        "-keyopt",
        "rsa_oaep_md:sha256",
        "-keyopt",
        "rsa_mgf1_md:sha256",
    ];

    fn openssl_present() -> bool {
        let found = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("skipping: the `openssl` command is not installed");
        }
        found
    }

    fn openssl(args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// A new RSA key from `openssl genpkey`, as PKCS#8 DER.
    fn genpkey(dir: &Path, bits: u32) -> Vec<u8> {
        let pem = dir.join("key.pem");
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &format!("rsa_keygen_bits:{bits}"),
            "-out",
            path(&pem),
        ]);
        // genpkey's DER output is PKCS#1 in OpenSSL 3.0; this writes PKCS#8 DER.
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            path(&pem),
            "-outform",
            "DER",
        ])
    }

    /// A recipient: an RSA key and a self-signed certificate for it, in a temporary directory.
    struct Recipient {
        dir: tempfile::TempDir,
        key: RecipientKey,
        cert: PathBuf,
    }

    impl Recipient {
        /// A fresh key from `openssl genpkey`, or None (with a note) without openssl.
        fn new() -> Option<Recipient> {
            if !openssl_present() {
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let der = genpkey(dir.path(), 2048);
            let key = RecipientKey::from_pkcs8_der(&der).unwrap();
            Some(Self::certify(dir, key))
        }

        /// Writes `key` as PKCS#8 DER and makes a certificate for it with `openssl req`.
        fn certify(dir: tempfile::TempDir, key: RecipientKey) -> Recipient {
            let key_path = dir.path().join("key.der");
            let der = key.key.to_pkcs8_der().unwrap();
            std::fs::write(&key_path, der.as_bytes()).unwrap();
            let cert = dir.path().join("cert.pem");
            openssl(&[
                "req",
                "-x509",
                "-new",
                "-key",
                path(&key_path),
                "-keyform",
                "DER",
                "-subj",
                "/CN=test",
                "-days",
                "1",
                "-out",
                path(&cert),
            ]);
            Recipient { dir, key, cert }
        }

        /// `-recip` for this recipient with the KMS key-transport parameters.
        fn oaep(&self) -> Vec<String> {
            let mut args = vec!["-recip".to_string(), path(&self.cert).to_string()];
            args.extend(OAEP_SHA256.iter().map(|s| s.to_string()));
            args
        }

        /// `openssl cms -encrypt -binary -outform DER` of `plaintext` with `args` (the cipher,
        /// the recipients and their -keyopt, any -stream or -keyid).
        fn seal(&self, plaintext: &[u8], args: &[String]) -> Vec<u8> {
            let input = self.dir.path().join("plaintext");
            let output = self.dir.path().join("envelope.der");
            std::fs::write(&input, plaintext).unwrap();
            let mut all: Vec<&str> = vec![
                "cms",
                "-encrypt",
                "-binary",
                "-outform",
                "DER",
                "-in",
                path(&input),
                "-out",
                path(&output),
            ];
            all.extend(args.iter().map(String::as_str));
            openssl(&all);
            std::fs::read(&output).unwrap()
        }

        /// An envelope as KMS would send it to this recipient (DER, issuerAndSerialNumber).
        fn seal_kms(&self, plaintext: &[u8]) -> Vec<u8> {
            let mut args = vec!["-aes256".to_string()];
            args.extend(self.oaep());
            self.seal(plaintext, &args)
        }
    }

    /// Recognisable, non-repeating test bytes.
    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 + 7) as u8).collect()
    }

    fn enveloped(envelope: &[u8]) -> EnvelopedData {
        let info = ContentInfo::from_ber(envelope).unwrap();
        info.content.decode_as_encoding(EncodingRules::Ber).unwrap()
    }

    /// The KeyTransRecipientInfo openssl wrote (the first recipient).
    fn key_trans(data: &EnvelopedData) -> KeyTransRecipientInfo {
        data.recipient_infos.as_slice()[0]
            .decode_as_encoding(EncodingRules::Ber)
            .unwrap()
    }

    /// Decodes `envelope`, lets `edit` change the EnvelopedData, and re-encodes it as DER: for
    /// the malformations openssl will not produce.
    fn rebuild(envelope: &[u8], edit: impl FnOnce(&mut EnvelopedData)) -> Vec<u8> {
        let mut data = enveloped(envelope);
        edit(&mut data);
        ContentInfo {
            content_type: ID_ENVELOPED_DATA,
            content: Any::encode_from(&data).unwrap(),
        }
        .to_der()
        .unwrap()
    }

    /// Offset of `needle` in `haystack` (the test locates fields to alter by their bytes).
    fn find(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    }

    #[test]
    fn opens_a_32_byte_data_key() {
        let Some(r) = Recipient::new() else { return };
        let key = sample(32);
        let envelope = r.seal_kms(&key);
        assert_eq!(open_recipient_ciphertext(&r.key, &envelope).unwrap(), key);
    }

    #[test]
    fn opens_a_1000_byte_secret() {
        let Some(r) = Recipient::new() else { return };
        let secret = sample(1000);
        let envelope = r.seal_kms(&secret);
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope).unwrap(),
            secret
        );
    }

    /// KMS's own shape: BER with indefinite lengths, the content in OCTET STRING chunks, and a
    /// subjectKeyIdentifier recipient (version 2); `-stream -keyid` makes openssl write that.
    #[test]
    fn opens_the_kms_shape_ber_indefinite_lengths_and_key_identifier() {
        let Some(r) = Recipient::new() else { return };
        let secret = sample(1000);
        let mut args = vec![
            "-aes256".to_string(),
            "-stream".to_string(),
            "-keyid".to_string(),
        ];
        args.extend(r.oaep());
        let envelope = r.seal(&secret, &args);
        assert_eq!(
            &envelope[..2],
            &[0x30, 0x80],
            "indefinite-length ContentInfo"
        );
        let data = enveloped(&envelope);
        let subject_key_identifier = Tag::ContextSpecific {
            constructed: false,
            number: TagNumber(0),
        };
        assert_eq!(key_trans(&data).rid.tag(), subject_key_identifier);
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope).unwrap(),
            secret
        );
    }

    /// KMS writes the SHA-256 AlgorithmIdentifiers in the OAEP parameters with NULL
    /// parameters, where openssl omits them; both mean the same.
    #[test]
    fn opens_oaep_parameters_with_null_hash_parameters() {
        let Some(r) = Recipient::new() else { return };
        let key = sample(32);
        let envelope = rebuild(&r.seal_kms(&key), |data| {
            let mut ktri = key_trans(data);
            let params = ktri.key_encryption_algorithm.parameters.as_ref().unwrap();
            let mut params: RsaOaepParams<Any> = params.decode_as().unwrap();
            params.hash.parameters = Some(Any::null());
            params.mask_gen.parameters.as_mut().unwrap().parameters = Some(Any::null());
            ktri.key_encryption_algorithm.parameters = Some(Any::encode_from(&params).unwrap());
            data.recipient_infos = vec![Any::encode_from(&ktri).unwrap()].try_into().unwrap();
        });
        let null = [0x05, 0x00];
        let sha256_with_null = [ID_SHA256.as_bytes(), &null].concat();
        assert_eq!(
            envelope
                .windows(sha256_with_null.len())
                .filter(|w| *w == sha256_with_null.as_slice())
                .count(),
            2,
            "hash and MGF1 hash both carry NULL"
        );
        assert_eq!(open_recipient_ciphertext(&r.key, &envelope).unwrap(), key);
    }

    /// originatorInfo and unprotectedAttrs take no part in decryption and are skipped.
    #[test]
    fn ignores_originator_info_and_unprotected_attributes() {
        let Some(r) = Recipient::new() else { return };
        let key = sample(32);
        let envelope = rebuild(&r.seal_kms(&key), |data| {
            data.version = 2;
            data.originator_info = Some(vec![]);
            let attribute = Any::new(Tag::Sequence, [0x06, 0x01, 0x2a, 0x31, 0x00]).unwrap();
            data.unprotected_attrs = Some(vec![attribute].try_into().unwrap());
        });
        let data = enveloped(&envelope);
        assert!(data.originator_info.is_some() && data.unprotected_attrs.is_some());
        assert_eq!(open_recipient_ciphertext(&r.key, &envelope).unwrap(), key);
    }

    #[test]
    fn content_is_bounded_at_4096_bytes() {
        let Some(r) = Recipient::new() else { return };
        let most = sample(MAX_PLAINTEXT_LEN);
        let envelope = r.seal_kms(&most);
        assert!(open_recipient_ciphertext(&r.key, &envelope).unwrap() == most);

        // Pads to the same length as 4096 bytes, so it is caught after decryption.
        let envelope = r.seal_kms(&sample(MAX_PLAINTEXT_LEN + 1));
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope),
            Err(UnsealError::PlaintextLength {
                len: MAX_PLAINTEXT_LEN + 1,
                max: MAX_PLAINTEXT_LEN
            })
        );

        // One more block is refused before any decryption.
        let envelope = r.seal_kms(&sample(MAX_CONTENT_LEN));
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope),
            Err(UnsealError::ContentLength {
                len: MAX_CONTENT_LEN + AES_BLOCK_LEN,
                max: MAX_CONTENT_LEN
            })
        );
    }

    #[test]
    fn refuses_pkcs1_v15_key_transport_naming_it() {
        let Some(r) = Recipient::new() else { return };
        let args = ["-aes256", "-recip", path(&r.cert)].map(String::from);
        let envelope = r.seal(&sample(32), &args);
        let err = open_recipient_ciphertext(&r.key, &envelope).unwrap_err();
        assert_eq!(
            err,
            UnsealError::KeyEncryptionAlgorithm {
                algorithm: "rsaEncryption (RSAES-PKCS1-v1_5, PKCS#1 v1.5) (1.2.840.113549.1.1.1)"
                    .to_string()
            }
        );
        assert!(err.to_string().contains("PKCS#1 v1.5"), "{err}");
    }

    #[test]
    fn refuses_oaep_with_the_sha1_defaults() {
        let Some(r) = Recipient::new() else { return };
        let args = [
            "-aes256",
            "-recip",
            path(&r.cert),
            "-keyopt",
            "rsa_padding_mode:oaep",
        ]
        .map(String::from);
        let envelope = r.seal(&sample(32), &args);
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope),
            Err(UnsealError::OaepParameters {
                field: "hashFunc",
                found: "SHA-1 (1.3.14.3.2.26)".to_string()
            })
        );
        // Absent parameters also mean all the SHA-1 defaults.
        let absent = rebuild(&r.seal_kms(&sample(32)), |data| {
            let mut ktri = key_trans(data);
            ktri.key_encryption_algorithm.parameters = None;
            data.recipient_infos = vec![Any::encode_from(&ktri).unwrap()].try_into().unwrap();
        });
        assert_eq!(
            open_recipient_ciphertext(&r.key, &absent),
            Err(UnsealError::OaepParameters {
                field: "hashFunc",
                found: "absent (the SHA-1 default)".to_string()
            })
        );
    }

    #[test]
    fn refuses_oaep_sha256_with_mgf1_sha1() {
        let Some(r) = Recipient::new() else { return };
        let args = [
            "-aes256",
            "-recip",
            path(&r.cert),
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
            "-keyopt",
            "rsa_mgf1_md:sha1",
        ]
        .map(String::from);
        let envelope = r.seal(&sample(32), &args);
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope),
            Err(UnsealError::OaepParameters {
                field: "maskGenFunc",
                found: "MGF1 with SHA-1 (1.3.14.3.2.26)".to_string()
            })
        );
    }

    #[test]
    fn refuses_oaep_sha512() {
        let Some(r) = Recipient::new() else { return };
        let args = [
            "-aes256",
            "-recip",
            path(&r.cert),
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha512",
            "-keyopt",
            "rsa_mgf1_md:sha256",
        ]
        .map(String::from);
        let envelope = r.seal(&sample(32), &args);
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope),
            Err(UnsealError::OaepParameters {
                field: "hashFunc",
                found: "SHA-512 (2.16.840.1.101.3.4.2.3)".to_string()
            })
        );
    }

    #[test]
    fn refuses_an_oaep_label() {
        let Some(r) = Recipient::new() else { return };
        let mut args = vec!["-aes256".to_string()];
        args.extend(r.oaep());
        args.extend(["-keyopt", "rsa_oaep_label:0102"].map(String::from));
        let envelope = r.seal(&sample(32), &args);
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope),
            Err(UnsealError::OaepParameters {
                field: "pSourceFunc",
                found: "pSpecified with a label".to_string()
            })
        );
    }

    #[test]
    fn refuses_aes128_cbc_content() {
        let Some(r) = Recipient::new() else { return };
        let mut args = vec!["-aes128".to_string()];
        args.extend(r.oaep());
        let envelope = r.seal(&sample(32), &args);
        let err = open_recipient_ciphertext(&r.key, &envelope).unwrap_err();
        assert_eq!(
            err,
            UnsealError::ContentEncryptionAlgorithm {
                algorithm: "aes128-CBC (2.16.840.1.101.3.4.1.2)".to_string()
            }
        );
        assert!(err.to_string().contains("aes128-CBC"), "{err}");
    }

    #[test]
    fn refuses_a_tampered_encrypted_key() {
        let Some(r) = Recipient::new() else { return };
        let envelope = r.seal_kms(&sample(32));
        let data = enveloped(&envelope);
        let at = find(&envelope, key_trans(&data).encrypted_key.as_bytes());
        for offset in [0, 1, 100, 255] {
            let mut bad = envelope.clone();
            bad[at + offset] ^= 0x01;
            assert_eq!(
                open_recipient_ciphertext(&r.key, &bad),
                Err(UnsealError::KeyTransport),
                "flip at byte {offset} of the encrypted key"
            );
        }
    }

    /// Flipping the last byte of the next-to-last ciphertext block flips the last plaintext
    /// byte, which is padding: 0x10 ^ 0xff can never be valid PKCS#7, so this always fails.
    #[test]
    fn refuses_tampered_content_through_its_padding() {
        let Some(r) = Recipient::new() else { return };
        let envelope = r.seal_kms(&sample(32));
        let data = enveloped(&envelope);
        let content = data.encrypted_content_info.encrypted_content.unwrap();
        let content = content.as_bytes();
        assert_eq!(content.len(), 48);
        let at = find(&envelope, content);
        let mut bad = envelope.clone();
        bad[at + 31] ^= 0xff;
        assert_eq!(
            open_recipient_ciphertext(&r.key, &bad),
            Err(UnsealError::Padding)
        );
    }

    /// CBC is malleable and the envelope has no MAC: a flipped IV bit flips the same plaintext
    /// bit and nothing notices. This pins down that limit (documented on
    /// `open_recipient_ciphertext`) so nobody relies on the envelope for integrity.
    #[test]
    fn content_integrity_is_not_checked_beyond_padding() {
        let Some(r) = Recipient::new() else { return };
        let key = sample(32);
        let envelope = r.seal_kms(&key);
        let data = enveloped(&envelope);
        let iv = data
            .encrypted_content_info
            .content_encryption_algorithm
            .parameters
            .unwrap();
        let at = find(&envelope, iv.value());
        let mut bad = envelope.clone();
        bad[at] ^= 0x01;
        let mut expected = key.clone();
        expected[0] ^= 0x01;
        assert_eq!(open_recipient_ciphertext(&r.key, &bad).unwrap(), expected);
    }

    /// Every proper prefix of a valid envelope (DER and BER) is refused, and every single-byte
    /// change outside the encrypted key either is refused or opens: nothing panics.
    #[test]
    fn truncated_or_altered_envelopes_never_panic() {
        let Some(r) = Recipient::new() else { return };
        let der = r.seal_kms(&sample(32));
        let mut args = vec![
            "-aes256".to_string(),
            "-stream".to_string(),
            "-keyid".to_string(),
        ];
        args.extend(r.oaep());
        let ber = r.seal(&sample(40), &args);
        for envelope in [&der, &ber] {
            for len in 0..envelope.len() {
                assert!(
                    open_recipient_ciphertext(&r.key, &envelope[..len]).is_err(),
                    "prefix of {len} bytes opened"
                );
            }
            let data = enveloped(envelope);
            let encrypted_key = key_trans(&data).encrypted_key;
            let at = find(envelope, encrypted_key.as_bytes());
            let skip = at..at + encrypted_key.as_bytes().len();
            for at in (0..envelope.len()).filter(|at| !skip.contains(at)) {
                for mask in [0x01, 0x80, 0xff] {
                    let mut bad = envelope.to_vec();
                    bad[at] ^= mask;
                    let _ = open_recipient_ciphertext(&r.key, &bad);
                }
            }
        }
    }

    #[test]
    fn refuses_trailing_data() {
        let Some(r) = Recipient::new() else { return };
        let mut envelope = r.seal_kms(&sample(32));
        envelope.push(0);
        let err = open_recipient_ciphertext(&r.key, &envelope).unwrap_err();
        assert!(
            matches!(
                err,
                UnsealError::Malformed {
                    structure: "ContentInfo",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn refuses_two_recipients() {
        let (Some(a), Some(b)) = (Recipient::new(), Recipient::new()) else {
            return;
        };
        let mut args = vec!["-aes256".to_string()];
        args.extend(a.oaep());
        args.extend(b.oaep());
        let envelope = a.seal(&sample(32), &args);
        assert_eq!(
            open_recipient_ciphertext(&a.key, &envelope),
            Err(UnsealError::RecipientCount(2))
        );
    }

    #[test]
    fn refuses_zero_recipients() {
        let Some(r) = Recipient::new() else { return };
        let envelope = rebuild(&r.seal_kms(&sample(32)), |data| {
            data.recipient_infos = SetOfVec::new();
        });
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope),
            Err(UnsealError::RecipientCount(0))
        );
    }

    #[test]
    fn refuses_an_envelope_for_another_key() {
        let (Some(ours), Some(theirs)) = (Recipient::new(), Recipient::new()) else {
            return;
        };
        let envelope = theirs.seal_kms(&sample(32));
        assert_eq!(
            open_recipient_ciphertext(&ours.key, &envelope),
            Err(UnsealError::KeyTransport)
        );
    }

    #[test]
    fn refuses_a_recipient_that_is_not_key_transport() {
        let Some(r) = Recipient::new() else { return };
        let args = [
            "-aes256",
            "-secretkey",
            "000102030405060708090a0b0c0d0e0f",
            "-secretkeyid",
            "01",
        ]
        .map(String::from);
        let envelope = r.seal(&sample(32), &args);
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope),
            Err(UnsealError::RecipientNotKeyTrans {
                kind: "KEKRecipientInfo"
            })
        );
    }

    #[test]
    fn refuses_content_info_that_is_not_enveloped_data() {
        let Some(r) = Recipient::new() else { return };
        let input = r.dir.path().join("data");
        std::fs::write(&input, b"hello").unwrap();
        let envelope = openssl(&[
            "cms",
            "-data_create",
            "-binary",
            "-in",
            path(&input),
            "-outform",
            "DER",
        ]);
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope),
            Err(UnsealError::NotEnvelopedData {
                content_type: "id-data (1.2.840.113549.1.7.1)".to_string()
            })
        );
    }

    #[test]
    fn refuses_a_wrong_iv() {
        let Some(r) = Recipient::new() else { return };
        let envelope = r.seal_kms(&sample(32));
        let short = rebuild(&envelope, |data| {
            data.encrypted_content_info
                .content_encryption_algorithm
                .parameters = Some(Any::new(Tag::OctetString, vec![0u8; 8]).unwrap());
        });
        assert_eq!(
            open_recipient_ciphertext(&r.key, &short),
            Err(UnsealError::Iv {
                detail: "8 bytes; expected 16".to_string()
            })
        );
        let absent = rebuild(&envelope, |data| {
            data.encrypted_content_info
                .content_encryption_algorithm
                .parameters = None;
        });
        assert_eq!(
            open_recipient_ciphertext(&r.key, &absent),
            Err(UnsealError::Iv {
                detail: "absent".to_string()
            })
        );
        let null = rebuild(&envelope, |data| {
            data.encrypted_content_info
                .content_encryption_algorithm
                .parameters = Some(Any::null());
        });
        let err = open_recipient_ciphertext(&r.key, &null).unwrap_err();
        assert!(matches!(err, UnsealError::Iv { .. }), "{err}");
    }

    #[test]
    fn refuses_detached_content_and_bad_content_lengths() {
        let Some(r) = Recipient::new() else { return };
        let envelope = r.seal_kms(&sample(32));
        let detached = rebuild(&envelope, |data| {
            data.encrypted_content_info.encrypted_content = None;
        });
        assert_eq!(
            open_recipient_ciphertext(&r.key, &detached),
            Err(UnsealError::ContentMissing)
        );
        for len in [0, 15, 47] {
            let odd = rebuild(&envelope, |data| {
                data.encrypted_content_info.encrypted_content =
                    Some(OctetString::new(vec![0u8; len]).unwrap());
            });
            assert_eq!(
                open_recipient_ciphertext(&r.key, &odd),
                Err(UnsealError::ContentLength {
                    len,
                    max: MAX_CONTENT_LEN
                })
            );
        }
    }

    #[test]
    fn refuses_content_that_is_not_id_data() {
        let Some(r) = Recipient::new() else { return };
        let envelope = rebuild(&r.seal_kms(&sample(32)), |data| {
            data.encrypted_content_info.content_type = ID_ENVELOPED_DATA;
        });
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope),
            Err(UnsealError::ContentType {
                content_type: "id-envelopedData (1.2.840.113549.1.7.3)".to_string()
            })
        );
    }

    #[test]
    fn refuses_oversized_envelopes_before_parsing() {
        let Some(r) = Recipient::new() else { return };
        let huge = vec![0u8; MAX_ENVELOPE_LEN + 1];
        assert_eq!(
            open_recipient_ciphertext(&r.key, &huge),
            Err(UnsealError::EnvelopeTooLarge {
                len: MAX_ENVELOPE_LEN + 1,
                max: MAX_ENVELOPE_LEN
            })
        );
    }

    #[test]
    fn refuses_keys_of_other_sizes_and_non_keys() {
        assert!(matches!(
            RecipientKey::from_pkcs8_der(b"not a key"),
            Err(UnsealError::KeyDecoding(_))
        ));
        if !openssl_present() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for (bits, accepted) in [(1024, false), (2048, true), (4096, true), (4104, false)] {
            let result = RecipientKey::from_pkcs8_der(&genpkey(dir.path(), bits));
            if accepted {
                assert_eq!(result.unwrap().bits(), bits as usize);
            } else {
                assert_eq!(
                    result.unwrap_err(),
                    UnsealError::KeySize {
                        bits: bits as usize
                    }
                );
            }
        }
    }

    /// A key from `generate()` works end to end with an independent implementation: openssl
    /// reads it as RSA-2048 with e = 65537, derives the same SubjectPublicKeyInfo as
    /// `public_key_der()`, and encrypts an envelope to it that we open.
    #[test]
    fn generated_keys_work_with_openssl() {
        if !openssl_present() {
            return;
        }
        let key = RecipientKey::generate().unwrap();
        assert_eq!(key.bits(), 2048);
        let spki = key.public_key_der().unwrap();
        let r = Recipient::certify(tempfile::tempdir().unwrap(), key);
        let key_path = r.dir.path().join("key.der");

        let text = openssl(&[
            "pkey",
            "-inform",
            "DER",
            "-in",
            path(&key_path),
            "-noout",
            "-text",
        ]);
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("Private-Key: (2048 bit"), "{text}");
        assert!(text.contains("publicExponent: 65537 (0x10001)"), "{text}");

        let openssl_spki = openssl(&[
            "pkey",
            "-inform",
            "DER",
            "-in",
            path(&key_path),
            "-pubout",
            "-outform",
            "DER",
        ]);
        assert_eq!(spki, openssl_spki);
        let cert_spki = openssl(&["x509", "-in", path(&r.cert), "-noout", "-pubkey"]);
        assert!(String::from_utf8_lossy(&cert_spki).contains("BEGIN PUBLIC KEY"));

        let secret = sample(32);
        let envelope = r.seal_kms(&secret);
        assert_eq!(
            open_recipient_ciphertext(&r.key, &envelope).unwrap(),
            secret
        );
    }

    #[test]
    fn errors_and_debug_show_no_key_material() {
        let Some(r) = Recipient::new() else { return };
        assert_eq!(format!("{:?}", r.key), "RecipientKey { bits: 2048, .. }");
        let envelope = r.seal_kms(&sample(32));
        let data = enveloped(&envelope);
        let content = data.encrypted_content_info.encrypted_content.unwrap();
        let mut bad = envelope.clone();
        let at = find(&envelope, content.as_bytes());
        bad[at + 31] ^= 0xff;
        let err = open_recipient_ciphertext(&r.key, &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "decrypted content has invalid PKCS#7 padding (altered content)"
        );
    }
}
