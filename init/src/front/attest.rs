//! The attestation endpoint's logic (DESIGN.md, "Attested TLS"): its query, and documents
//! from the NitroTPM that bind the front's TLS key and echo the client's nonce.

use crate::tpm2::{self, nsm, DeviceTransport, Transport};
use std::path::PathBuf;
use std::sync::Mutex;

/// The endpoint's path.
pub const PATH: &str = "/.well-known/zoa/attestation";

/// A nonce is 1 to this many bytes.
pub const MAX_NONCE_LEN: usize = 64;

/// Why a query was refused (`400`). The text names the rule, never echoes the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadQuery(pub &'static str);

/// The nonce a query asks for: none without a query, the bytes of `nonce=<hex>` (1–64
/// bytes, either case) otherwise. Any other parameter, or `nonce` twice, is refused.
pub fn nonce_from_query(query: Option<&str>) -> Result<Option<Vec<u8>>, BadQuery> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let mut nonce = None;
    for parameter in query.split('&') {
        let Some(hex) = parameter.strip_prefix("nonce=") else {
            return Err(BadQuery("the only parameter is nonce"));
        };
        if nonce.is_some() {
            return Err(BadQuery("nonce is given twice"));
        }
        nonce = Some(decode_nonce(hex)?);
    }
    Ok(nonce)
}

// Hand-written: 20 lines for the one hex decoding zoa-init needs, where a crate would add
// a dependency (and a provenance entry) to the image.
fn decode_nonce(hex: &str) -> Result<Vec<u8>, BadQuery> {
    let bytes = hex.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(2) || bytes.len() > 2 * MAX_NONCE_LEN {
        return Err(BadQuery("nonce must be 1 to 64 bytes as hex digits"));
    }
    bytes
        .chunks(2)
        .map(|pair| Ok(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
        .collect()
}

fn hex_digit(c: u8) -> Result<u8, BadQuery> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(BadQuery("nonce must be 1 to 64 bytes as hex digits")),
    }
}

/// Opens the TPM for one document: `/dev/tpm0` admits one user at a time, so it is opened
/// per document and closed right after (the unseal opens it the same way).
pub type OpenTpm = Box<dyn FnMut() -> Result<Box<dyn Transport + Send>, String> + Send>;

/// Makes attestation documents that bind one TLS key.
pub struct Attester {
    open: Mutex<OpenTpm>,
    binding: Vec<u8>,
}

impl Attester {
    /// Documents whose `user_data` is `binding`, from the TPM `open` reaches.
    pub fn new(open: OpenTpm, binding: &[u8]) -> Attester {
        Attester {
            open: Mutex::new(open),
            binding: binding.to_vec(),
        }
    }

    /// The NitroTPM device.
    pub fn device() -> OpenTpm {
        let path = PathBuf::from(tpm2::NSM_DEVICE);
        Box::new(move || {
            DeviceTransport::open(&path)
                .map(|t| Box::new(t) as Box<dyn Transport + Send>)
                .map_err(|e| e.0)
        })
    }

    /// A document as the NSM returns it, with this front's binding and `nonce`. One at a
    /// time: the others wait here.
    pub fn document(&self, nonce: Option<&[u8]>) -> Result<Vec<u8>, String> {
        // A panic while holding the lock leaves nothing half done: the NV index is
        // undefined on every path of `document_with`.
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut transport = open()?;
        let fields = nsm::Fields {
            user_data: Some(&self.binding),
            nonce,
            public_key: None,
        };
        nsm::document_with(transport.as_mut(), &fields).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_in_either_case_and_every_length() {
        assert_eq!(nonce_from_query(None), Ok(None));
        assert_eq!(nonce_from_query(Some("")), Ok(None));
        assert_eq!(
            nonce_from_query(Some("nonce=00aBcD")),
            Ok(Some(vec![0x00, 0xab, 0xcd]))
        );
        let longest = "ff".repeat(64);
        assert_eq!(
            nonce_from_query(Some(&format!("nonce={longest}"))),
            Ok(Some(vec![0xff; 64]))
        );
    }

    #[test]
    fn everything_else_is_refused() {
        for query in [
            "nonce=",
            "nonce=0",
            "nonce=0g",
            "nonce=+1",
            "nonce=%30%30",
            &format!("nonce={}", "00".repeat(65)),
            "nonce=00&nonce=01",
            "nonce=00&x=1",
            "x=1",
            "nonce",
            "Nonce=00",
        ] {
            assert!(nonce_from_query(Some(query)).is_err(), "{query:?} accepted");
        }
    }

    #[test]
    fn refusals_never_echo_the_query() {
        let marker = "nonce=zz-MARKER-zz";
        let BadQuery(why) = nonce_from_query(Some(marker)).unwrap_err();
        assert!(!why.contains("MARKER"));
    }

    #[test]
    fn a_tpm_that_cannot_be_opened_is_an_error_not_a_document() {
        let attester = Attester::new(Box::new(|| Err("no TPM here".into())), b"binding");
        assert_eq!(attester.document(None).unwrap_err(), "no TPM here");
    }
}
