//! The NitroTPM attestation request: an NSM `Attestation` request carried through an NV index
//! and the vendor command `TPM2_VENDOR_AWS_NSM_REQUEST`. The facts and their sources are in
//! the [parent module](super)'s documentation.

use ciborium::value::Value;

use super::{
    NvPublic, Tpm, Tpm2Error, Transport, ALG_SHA512, NV_AUTHREAD, NV_AUTHWRITE, NV_INDEX_FIRST,
    NV_INDEX_LAST, PT_NV_INDEX_MAX,
};

/// Data size of the NV index that carries request and response, as nitro-tpm-attest defines
/// it: a document with a 2048-bit RSA key is about 5 KiB. A TPM whose `TPM_PT_NV_INDEX_MAX`
/// is smaller gets an index of that size instead (NitroTPM takes 8192, or nitro-tpm-attest
/// would fail; swtpm takes 2048).
pub const NV_BUFFER_SIZE: u16 = 8192;

/// Largest field we put in a request: the NSM takes up to 1 KiB for each optional field
/// (nitro-tpm-attest's sizing comment); an RSA-2048 SubjectPublicKeyInfo is 294 bytes.
pub const MAX_FIELD_LEN: usize = 1024;

/// Length of the NV index's random authValue: the SHA-512 digest size, the most a SHA-512
/// index takes (nitro-tpm-attest uses the same).
const AUTH_LEN: usize = 64;

/// NV handles tried when others are defined first between our look and our define.
const MAX_DEFINE_TRIES: usize = 16;

/// The optional fields of an NSM `Attestation` request, each at most 1 KiB (the NSM's limit,
/// nitro-tpm-attest's sizing comment), each copied into the document as given.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    /// Data the requester binds into the document (`user_data`).
    pub user_data: Option<&'a [u8]>,
    /// A verifier's challenge (`nonce`).
    pub nonce: Option<&'a [u8]>,
    /// A DER SubjectPublicKeyInfo (`public_key`): KMS encrypts to it (`Recipient`).
    pub public_key: Option<&'a [u8]>,
}

/// Asks the NSM, through the NitroTPM behind `transport`, for an attestation document that
/// carries `public_key_der` (a DER SubjectPublicKeyInfo) as its `public_key`, with no
/// `user_data` and no `nonce`. Returns the document (COSE_Sign1 bytes) as the NSM made it.
///
/// The NV index used is always undefined before this returns, also when something failed; if
/// undefining fails, that is the error ([`Tpm2Error::LeftDefined`]).
pub fn attestation_document(
    transport: &mut dyn Transport,
    public_key_der: &[u8],
) -> Result<Vec<u8>, Tpm2Error> {
    let request = attestation_request(public_key_der)?;
    document_for_request(transport, &request)
}

/// Like [`attestation_document`], with any of the three fields (none is required).
pub fn document_with(
    transport: &mut dyn Transport,
    fields: &Fields<'_>,
) -> Result<Vec<u8>, Tpm2Error> {
    let request = encode_request(fields)?;
    document_for_request(transport, &request)
}

fn document_for_request(
    transport: &mut dyn Transport,
    request: &[u8],
) -> Result<Vec<u8>, Tpm2Error> {
    let mut tpm = Tpm::new(transport);
    let size = nv_buffer_size(&mut tpm)?;
    let response = exchange_through_nv(&mut tpm, request, size)?;
    document_from_response(&response)
}

/// [`NV_BUFFER_SIZE`], or the TPM's largest NV index if that is smaller.
fn nv_buffer_size(tpm: &mut Tpm<'_>) -> Result<u16, Tpm2Error> {
    Ok(match tpm.tpm_property(PT_NV_INDEX_MAX)? {
        Some(max) => u16::try_from(max).map_or(NV_BUFFER_SIZE, |max| max.min(NV_BUFFER_SIZE)),
        None => NV_BUFFER_SIZE,
    })
}

/// The CBOR of `Request::Attestation { user_data: None, nonce: None, public_key }` as
/// aws-nitro-enclaves-nsm-api's serde encoding makes it.
pub fn attestation_request(public_key_der: &[u8]) -> Result<Vec<u8>, Tpm2Error> {
    if public_key_der.is_empty() {
        return Err(Tpm2Error::EmptyPublicKey);
    }
    encode_request(&Fields {
        public_key: Some(public_key_der),
        ..Fields::default()
    })
}

/// The CBOR of `Request::Attestation { user_data, nonce, public_key }` as
/// aws-nitro-enclaves-nsm-api's serde encoding makes it (absent fields are `null`).
pub fn encode_request(fields: &Fields<'_>) -> Result<Vec<u8>, Tpm2Error> {
    let named = [
        ("user_data", fields.user_data),
        ("nonce", fields.nonce),
        ("public_key", fields.public_key),
    ];
    let mut map = Vec::with_capacity(named.len());
    for (name, value) in named {
        map.push((text(name), optional_bytes(name, value)?));
    }
    let request = Value::Map(vec![(text("Attestation"), Value::Map(map))]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&request, &mut out)
        .map_err(|e| Tpm2Error::NsmMessage(format!("encoding the request: {e}")))?;
    Ok(out)
}

/// One request field as CBOR: `null`, or a byte string of at most [`MAX_FIELD_LEN`] bytes.
fn optional_bytes(name: &'static str, value: Option<&[u8]>) -> Result<Value, Tpm2Error> {
    match value {
        None => Ok(Value::Null),
        Some(bytes) if bytes.len() > MAX_FIELD_LEN => Err(Tpm2Error::TooLarge {
            what: field_description(name),
            len: bytes.len(),
            max: MAX_FIELD_LEN,
        }),
        Some(bytes) => Ok(Value::Bytes(bytes.to_vec())),
    }
}

fn field_description(name: &str) -> &'static str {
    match name {
        "user_data" => "user data for the NSM attestation request",
        "nonce" => "nonce for the NSM attestation request",
        _ => "public key for the NSM attestation request",
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// The NV-index exchange: define an index of `size` bytes, write `request`, run the vendor
/// command, read the whole index back, and undefine the index whatever happened.
pub fn exchange_through_nv(
    tpm: &mut Tpm<'_>,
    request: &[u8],
    size: u16,
) -> Result<Vec<u8>, Tpm2Error> {
    if request.len() > usize::from(size) {
        return Err(Tpm2Error::TooLarge {
            what: "NSM request",
            len: request.len(),
            max: usize::from(size),
        });
    }
    let mut auth = [0u8; AUTH_LEN];
    getrandom::fill(&mut auth).map_err(|e| Tpm2Error::Random(e.to_string()))?;
    // The reference TPM strips trailing zero bytes from passwords and authValues before
    // comparing them (CheckPWAuthSession); a nonzero last byte leaves nothing to strip, so
    // no implementation can differ on it.
    auth[AUTH_LEN - 1] |= 1;
    let index = define_free_index(tpm, &auth, size)?;
    let exchanged = write_run_read(tpm, index, &auth, request, size);
    let undefined = tpm.nv_undefine_space(b"", index);
    match (exchanged, undefined) {
        (Ok(response), Ok(())) => Ok(response),
        (Err(e), Ok(())) => Err(e),
        (exchanged, Err(undefine)) => Err(Tpm2Error::LeftDefined {
            index,
            cause: exchanged.err().map(Box::new),
            undefine: Box::new(undefine),
        }),
    }
}

fn write_run_read(
    tpm: &mut Tpm<'_>,
    index: u32,
    auth: &[u8],
    request: &[u8],
    size: u16,
) -> Result<Vec<u8>, Tpm2Error> {
    tpm.nv_write(index, auth, request)?;
    tpm.aws_nsm_request(index, auth)?;
    tpm.nv_read(index, auth, usize::from(size))
}

/// Defines our index at the first free NV handle, moving on when another process defines that
/// handle between our look and our define.
fn define_free_index(tpm: &mut Tpm<'_>, auth: &[u8], size: u16) -> Result<u32, Tpm2Error> {
    let taken = tpm.handles(NV_INDEX_FIRST, NV_INDEX_LAST)?;
    let mut candidate = NV_INDEX_FIRST;
    for _ in 0..MAX_DEFINE_TRIES {
        while taken.contains(&candidate) {
            candidate += 1;
        }
        if candidate > NV_INDEX_LAST {
            break;
        }
        let public = NvPublic {
            index: candidate,
            name_alg: ALG_SHA512,
            attributes: NV_AUTHREAD | NV_AUTHWRITE,
            auth_policy: Vec::new(),
            data_size: size,
        };
        match tpm.nv_define_space(b"", &public, auth) {
            Ok(()) => return Ok(candidate),
            Err(Tpm2Error::Tpm { rc, .. }) if rc.base() == super::ResponseCode::NV_DEFINED => {
                candidate += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Err(Tpm2Error::NoFreeNvIndex {
        tries: MAX_DEFINE_TRIES,
    })
}

/// The attestation document from the NSM's CBOR response (the first CBOR item of `response`;
/// the bytes after it are what was left in the NV index). Refuses `Error` answers, other
/// answers, and documents that are not a COSE_Sign1.
pub fn document_from_response(response: &[u8]) -> Result<Vec<u8>, Tpm2Error> {
    if response.len() > usize::from(NV_BUFFER_SIZE) {
        return Err(Tpm2Error::TooLarge {
            what: "NSM response",
            len: response.len(),
            max: usize::from(NV_BUFFER_SIZE),
        });
    }
    let value: Value = ciborium::de::from_reader(response)
        .map_err(|e| Tpm2Error::NsmMessage(format!("the response is not CBOR: {e}")))?;
    let (variant, body) = single_entry(&value).ok_or_else(|| {
        Tpm2Error::NsmMessage(format!(
            "the response is {}; expected a map with one key, Attestation or Error",
            describe(&value)
        ))
    })?;
    match (variant, body) {
        ("Attestation", Value::Map(fields)) => {
            let document = fields
                .iter()
                .find_map(|(k, v)| match (k, v) {
                    (Value::Text(k), Value::Bytes(doc)) if k == "document" => Some(doc),
                    _ => None,
                })
                .ok_or_else(|| {
                    Tpm2Error::NsmMessage(
                        "the Attestation response has no byte string \"document\"".to_string(),
                    )
                })?;
            check_cose_sign1(document)?;
            Ok(document.clone())
        }
        ("Error", Value::Text(code)) => Err(Tpm2Error::NsmRefused {
            code: printable(code),
        }),
        (variant, body) => Err(Tpm2Error::NsmMessage(format!(
            "unexpected response {} holding {}; expected Attestation or Error",
            printable(variant),
            describe(body)
        ))),
    }
}

/// The key and value of a one-entry map with a text key (serde's encoding of an enum variant
/// with data).
fn single_entry(value: &Value) -> Option<(&str, &Value)> {
    match value {
        Value::Map(entries) if entries.len() == 1 => match &entries[0] {
            (Value::Text(k), v) => Some((k.as_str(), v)),
            _ => None,
        },
        _ => None,
    }
}

/// Checks that `document` is one CBOR COSE_Sign1 (RFC 9052 4.2), tagged (18) or not: an array
/// of protected header (bytes), unprotected header (map), payload (bytes) and signature
/// (bytes), with nothing after it. The signature is for KMS to check, not us.
fn check_cose_sign1(document: &[u8]) -> Result<(), Tpm2Error> {
    let mut rest = document;
    let value: Value = ciborium::de::from_reader(&mut rest)
        .map_err(|e| Tpm2Error::NotCoseSign1(format!("not CBOR: {e}")))?;
    if !rest.is_empty() {
        return Err(Tpm2Error::NotCoseSign1(format!(
            "{} bytes after the CBOR item",
            rest.len()
        )));
    }
    let array = match &value {
        Value::Tag(18, inner) => inner.as_ref(),
        other => other,
    };
    match array {
        Value::Array(items)
            if matches!(
                items.as_slice(),
                [
                    Value::Bytes(_),
                    Value::Map(_),
                    Value::Bytes(_),
                    Value::Bytes(_)
                ]
            ) =>
        {
            Ok(())
        }
        other => Err(Tpm2Error::NotCoseSign1(format!(
            "it is {}; expected an array [protected bytes, unprotected map, payload bytes, \
             signature bytes]",
            describe(other)
        ))),
    }
}

/// A short description of a CBOR value's shape, for error messages (no contents).
fn describe(value: &Value) -> String {
    match value {
        Value::Integer(_) => "an integer".to_string(),
        Value::Bytes(b) => format!("a byte string of {} bytes", b.len()),
        Value::Float(_) => "a float".to_string(),
        Value::Text(t) => format!("the text {}", printable(t)),
        Value::Bool(_) => "a boolean".to_string(),
        Value::Null => "null".to_string(),
        Value::Tag(tag, _) => format!("a value with CBOR tag {tag}"),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::Map(entries) => format!("a map of {} entries", entries.len()),
        _ => "an unknown CBOR value".to_string(),
    }
}

/// `text` quoted, cut at 40 characters and with control characters escaped, so a response
/// cannot break the console line.
fn printable(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    let quoted = format!("{cut:?}");
    if text.chars().count() > 40 {
        format!("{quoted}...")
    } else {
        quoted
    }
}

#[cfg(test)]
mod tests {
    use super::super::swtpm::Swtpm;
    use super::super::{ResponseCode, NV_INDEX_FIRST, NV_INDEX_LAST};
    use super::*;

    /// The request with a 5-byte key, byte by byte from RFC 8949: map(1) { text(11)
    /// "Attestation": map(3) { text(9) "user_data": null, text(5) "nonce": null, text(10)
    /// "public_key": bytes(5) } }.
    #[test]
    fn request_bytes_are_the_nsm_api_encoding() {
        let key = [0x30, 0x03, 0x02, 0x01, 0x05];
        let mut expected = vec![0xA1, 0x6B];
        expected.extend_from_slice(b"Attestation");
        expected.extend_from_slice(&[0xA3, 0x69]);
        expected.extend_from_slice(b"user_data");
        expected.extend_from_slice(&[0xF6, 0x65]);
        expected.extend_from_slice(b"nonce");
        expected.extend_from_slice(&[0xF6, 0x6A]);
        expected.extend_from_slice(b"public_key");
        expected.push(0x45);
        expected.extend_from_slice(&key);
        assert_eq!(attestation_request(&key).unwrap(), expected);
    }

    /// A 294-byte RSA-2048 SubjectPublicKeyInfo takes a two-byte length: bytes(294) is
    /// `59 01 26`.
    #[test]
    fn request_with_an_rsa_2048_key_length() {
        let key = vec![0xAB; 294];
        let request = attestation_request(&key).unwrap();
        let header_end = request.len() - key.len();
        assert_eq!(&request[header_end - 3..header_end], [0x59, 0x01, 0x26]);
        assert_eq!(&request[header_end..], key.as_slice());
        assert_eq!(request.len(), 43 + 3 + 294);
    }

    /// The same bytes as serde's externally tagged encoding of the NSM API's
    /// `Request::Attestation` (declared the same way here, the byte fields serialised as CBOR
    /// byte strings as `serde_bytes::ByteBuf` does).
    #[test]
    fn request_matches_serde_encoding_of_the_nsm_api_type() {
        struct Bytes<'a>(&'a [u8]);
        impl serde::Serialize for Bytes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        #[derive(serde::Serialize)]
        enum Request<'a> {
            Attestation {
                user_data: Option<Bytes<'a>>,
                nonce: Option<Bytes<'a>>,
                public_key: Option<Bytes<'a>>,
            },
        }
        let key = vec![7u8; 294];
        let mut serde_bytes = Vec::new();
        ciborium::ser::into_writer(
            &Request::Attestation {
                user_data: None,
                nonce: None,
                public_key: Some(Bytes(&key)),
            },
            &mut serde_bytes,
        )
        .unwrap();
        assert_eq!(attestation_request(&key).unwrap(), serde_bytes);

        // Every field given: the TLS front's user data and nonce, no key.
        let (user_data, nonce) = (vec![1u8; 68], vec![2u8; 64]);
        let mut serde_bytes = Vec::new();
        ciborium::ser::into_writer(
            &Request::Attestation {
                user_data: Some(Bytes(&user_data)),
                nonce: Some(Bytes(&nonce)),
                public_key: None,
            },
            &mut serde_bytes,
        )
        .unwrap();
        let fields = Fields {
            user_data: Some(&user_data),
            nonce: Some(&nonce),
            public_key: None,
        };
        assert_eq!(encode_request(&fields).unwrap(), serde_bytes);
    }

    #[test]
    fn every_field_is_limited_to_1_kib() {
        let big = [0u8; 1025];
        let nonce = Fields {
            nonce: Some(&big),
            ..Fields::default()
        };
        assert_eq!(
            encode_request(&nonce).unwrap_err().to_string(),
            "nonce for the NSM attestation request of 1025 bytes; at most 1024 are allowed"
        );
        let user_data = Fields {
            user_data: Some(&big[..1024]),
            ..Fields::default()
        };
        assert!(encode_request(&user_data).is_ok());
    }

    #[test]
    fn request_refuses_empty_and_oversized_keys() {
        assert_eq!(
            attestation_request(&[]).unwrap_err().to_string(),
            "the public key for the NSM attestation request is empty"
        );
        assert_eq!(
            attestation_request(&[0; 1025]).unwrap_err().to_string(),
            "public key for the NSM attestation request of 1025 bytes; at most 1024 are allowed"
        );
    }

    fn cbor(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(value, &mut out).unwrap();
        out
    }

    /// A COSE_Sign1 shaped like the NSM's: [h'a1013822' (alg ES384), {}, payload, signature].
    fn cose_sign1() -> Vec<u8> {
        cbor(&Value::Array(vec![
            Value::Bytes(vec![0xA1, 0x01, 0x38, 0x22]),
            Value::Map(Vec::new()),
            Value::Bytes(b"payload".to_vec()),
            Value::Bytes(vec![0x5F; 96]),
        ]))
    }

    fn response(variant: &str, body: Value) -> Vec<u8> {
        cbor(&Value::Map(vec![(text(variant), body)]))
    }

    #[test]
    fn document_is_taken_from_an_attestation_response() {
        let doc = cose_sign1();
        assert_eq!(&doc[..6], [0x84, 0x44, 0xA1, 0x01, 0x38, 0x22]);
        let mut bytes = response(
            "Attestation",
            Value::Map(vec![(text("document"), Value::Bytes(doc.clone()))]),
        );
        // What follows the response in the NV index is ignored.
        bytes.resize(usize::from(NV_BUFFER_SIZE), 0xFF);
        assert_eq!(document_from_response(&bytes).unwrap(), doc);
        // A tagged COSE_Sign1 (tag 18) is one too.
        let mut tagged = vec![0xD2];
        tagged.extend_from_slice(&doc);
        let bytes = response(
            "Attestation",
            Value::Map(vec![(text("document"), Value::Bytes(tagged.clone()))]),
        );
        assert_eq!(document_from_response(&bytes).unwrap(), tagged);
    }

    #[test]
    fn error_responses_are_refused_with_their_code() {
        let bytes = response("Error", text("InvalidArgument"));
        assert_eq!(
            document_from_response(&bytes).unwrap_err().to_string(),
            "the NSM refused the attestation request: Error(\"InvalidArgument\")"
        );
    }

    #[test]
    fn other_answers_and_garbage_are_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                vec![0xFF, 0xFF, 0xFF],
                "NSM message: the response is not CBOR: ",
            ),
            (Vec::new(), "NSM message: the response is not CBOR: "),
            (
                cbor(&Value::Array(Vec::new())),
                "NSM message: the response is an array of 0 items; expected a map with one key, \
                 Attestation or Error",
            ),
            (
                response(
                    "GetRandom",
                    Value::Map(vec![(text("random"), Value::Bytes(vec![1; 4]))]),
                ),
                "NSM message: unexpected response \"GetRandom\" holding a map of 1 entries; \
                 expected Attestation or Error",
            ),
            (
                response("Attestation", Value::Map(Vec::new())),
                "NSM message: the Attestation response has no byte string \"document\"",
            ),
            (
                response("Error\n\u{1b}[2J", text("x")),
                "NSM message: unexpected response \"Error\\n\\u{1b}[2J\" holding the text \"x\"",
            ),
            (
                response(
                    "Attestation",
                    Value::Map(vec![(
                        text("document"),
                        Value::Bytes(cbor(&Value::Integer(5.into()))),
                    )]),
                ),
                "the NSM's attestation document is not a COSE_Sign1: it is an integer; ",
            ),
            (
                response(
                    "Attestation",
                    Value::Map(vec![(
                        text("document"),
                        Value::Bytes(cbor(&Value::Array(vec![Value::Null; 4]))),
                    )]),
                ),
                "the NSM's attestation document is not a COSE_Sign1: it is an array of 4 items; ",
            ),
            (
                response(
                    "Attestation",
                    Value::Map(vec![(
                        text("document"),
                        Value::Bytes([cose_sign1(), vec![0]].concat()),
                    )]),
                ),
                "the NSM's attestation document is not a COSE_Sign1: 1 bytes after the CBOR item",
            ),
        ];
        for (bytes, expected) in cases {
            let err = document_from_response(&bytes).unwrap_err().to_string();
            assert!(
                err.starts_with(expected),
                "{err:?} does not start with {expected:?}"
            );
            assert!(!err.contains('\n'), "{err:?}");
        }
    }

    #[test]
    fn oversized_responses_are_refused() {
        let doc = vec![0; 9000];
        let bytes = response(
            "Attestation",
            Value::Map(vec![(text("document"), Value::Bytes(doc))]),
        );
        assert_eq!(
            document_from_response(&bytes).unwrap_err().to_string(),
            format!(
                "NSM response of {} bytes; at most 8192 are allowed",
                bytes.len()
            )
        );
        // A length claiming more than is there is not CBOR, and allocates nothing huge.
        let mut lying = vec![0xA1, 0x6B];
        lying.extend_from_slice(b"Attestation");
        lying.extend_from_slice(&[0xA1, 0x68]);
        lying.extend_from_slice(b"document");
        lying.extend_from_slice(&[0x5B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(document_from_response(&lying)
            .unwrap_err()
            .to_string()
            .starts_with("NSM message: the response is not CBOR: "));
    }

    fn swtpm_ready() -> Option<Swtpm> {
        let swtpm = Swtpm::start()?;
        let mut transport = swtpm.connect();
        Tpm::new(&mut transport).startup_clear().unwrap();
        Some(swtpm)
    }

    /// swtpm is no NitroTPM: it answers the vendor command with TPM_RC_COMMAND_CODE. The error
    /// says so in one line, and the NV index is gone afterwards.
    #[test]
    fn tpm2_vendor_command_refused_by_swtpm_leaves_no_nv_index() {
        let Some(swtpm) = swtpm_ready() else { return };
        let mut transport = swtpm.connect();
        let err = attestation_document(&mut transport, &[0x30; 294]).unwrap_err();
        let line = err.to_string();
        eprintln!("zoa-init: fatal: attestation: {line}");
        assert_eq!(
            line,
            "NitroTPM vendor command TPM2_VENDOR_AWS_NSM_REQUEST (0x20000001): \
             TPM_RC_COMMAND_CODE (0x143: command code not supported)"
        );
        let Tpm2Error::Tpm { rc, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(rc, ResponseCode(ResponseCode::COMMAND_CODE));
        let mut tpm = Tpm::new(&mut transport);
        assert_eq!(
            tpm.handles(NV_INDEX_FIRST, NV_INDEX_LAST).unwrap(),
            [0u32; 0]
        );
    }

    /// The index goes to the first free handle, past ones already defined, and only ours is
    /// undefined afterwards.
    #[test]
    fn tpm2_nsm_index_skips_defined_handles_and_is_undefined() {
        let Some(swtpm) = swtpm_ready() else { return };
        let mut transport = swtpm.connect();
        let mut tpm = Tpm::new(&mut transport);
        let theirs = NvPublic {
            index: NV_INDEX_FIRST,
            name_alg: super::super::ALG_SHA256,
            attributes: NV_AUTHREAD | NV_AUTHWRITE,
            auth_policy: Vec::new(),
            data_size: 16,
        };
        tpm.nv_define_space(b"", &theirs, b"").unwrap();
        let size = nv_buffer_size(&mut tpm).unwrap();
        assert_eq!(size, 2048, "swtpm's TPM_PT_NV_INDEX_MAX");
        let err = exchange_through_nv(&mut tpm, b"request", size).unwrap_err();
        // Defined, written, and handed to the vendor command, which swtpm lacks.
        let Tpm2Error::Tpm { command, rc } = err else {
            panic!("{err}")
        };
        assert!(command.contains("0x20000001"), "{command}");
        assert_eq!(rc.base(), ResponseCode::COMMAND_CODE);
        assert_eq!(
            tpm.handles(NV_INDEX_FIRST, NV_INDEX_LAST).unwrap(),
            [NV_INDEX_FIRST],
            "only the index defined by someone else is left"
        );
    }

    #[test]
    fn errors_after_a_failed_undefine_name_both_in_one_line() {
        let err = Tpm2Error::LeftDefined {
            index: NV_INDEX_FIRST,
            cause: Some(Box::new(Tpm2Error::NsmRefused {
                code: "\"InternalError\"".to_string(),
            })),
            undefine: Box::new(Tpm2Error::Tpm {
                command: "TPM2_NV_UndefineSpace",
                rc: ResponseCode(0x98E),
            }),
        };
        assert_eq!(
            err.to_string(),
            "the NSM refused the attestation request: Error(\"InternalError\"); then undefining \
             NV index 0x01000000 failed too: TPM2_NV_UndefineSpace: TPM_RC_AUTH_FAIL (0x98e: the \
             authorization HMAC check failed, session 1)"
        );
    }
}
