//! The emulated Nitro Security Module: reads an NSM request, answers with a signed
//! attestation document or an NSM error, in the CBOR the real one uses
//! (aws-nitro-enclaves-nsm-api: serde's externally tagged enums).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ciborium::value::Value;

use super::ca::TestCa;
use crate::attestation::{self, Document, Kind};

/// Largest `user_data`, `nonce` or `public_key` the NSM takes (nitro-tpm-attest: "the
/// optional parameters are each limited to 1 KiB").
pub const MAX_FIELD_LEN: usize = 1024;

/// The NSM: its test CA and the module id it reports. Clones share the record of the
/// documents issued.
#[derive(Clone)]
pub struct Nsm {
    pub ca: TestCa,
    pub module_id: String,
    issued: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// The fields of an `Attestation` request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AttestationRequest {
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
}

impl Nsm {
    pub fn new(ca: TestCa, module_id: String) -> Nsm {
        Nsm {
            ca,
            module_id,
            issued: Arc::default(),
        }
    }

    /// Every document issued so far (by this NSM and its clones), in order.
    pub fn issued(&self) -> Vec<Vec<u8>> {
        self.issued.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// The CBOR answer to the request at the start of `index_data` (the bytes after its one
    /// CBOR item are what was left in the index), given the SHA-384 PCRs of this moment.
    pub fn answer(&mut self, index_data: &[u8], pcrs: BTreeMap<u32, Vec<u8>>) -> Vec<u8> {
        let request = match parse_request(index_data) {
            Ok(r) => r,
            Err(code) => return error_bytes(code),
        };
        match self.document(request, pcrs) {
            Ok(document) => {
                if let Ok(mut issued) = self.issued.lock() {
                    issued.push(document.clone());
                }
                encode(&Value::Map(vec![(
                    Value::Text("Attestation".into()),
                    Value::Map(vec![(
                        Value::Text("document".into()),
                        Value::Bytes(document),
                    )]),
                )]))
            }
            Err(e) => {
                log::error!("emulated NitroTPM: cannot sign a document: {e}");
                error_bytes("InternalError")
            }
        }
    }

    fn document(
        &mut self,
        request: AttestationRequest,
        pcrs: BTreeMap<u32, Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        let now = SystemTime::now();
        let (leaf_key, leaf) = self.ca.leaf(now).map_err(|e| e.to_string())?;
        let document = Document {
            kind: Kind::NitroTpm,
            module_id: self.module_id.clone(),
            timestamp_ms: now
                .duration_since(UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_millis() as u64,
            pcrs,
            certificate: leaf,
            cabundle: self.ca.bundle(),
            public_key: request.public_key,
            user_data: request.user_data,
            nonce: request.nonce,
        };
        attestation::sign(&document, &leaf_key).map_err(|e| e.to_string())
    }
}

/// `{"Error": code}`.
pub fn error_bytes(code: &str) -> Vec<u8> {
    encode(&Value::Map(vec![(
        Value::Text("Error".into()),
        Value::Text(code.into()),
    )]))
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Into a Vec: cannot fail.
    let _ = ciborium::ser::into_writer(value, &mut out);
    out
}

/// Reads `{"Attestation": {"user_data": …, "nonce": …, "public_key": …}}`; each field is
/// null, a byte string, or an array of byte values (how serde writes a `Vec<u8>` without
/// `serde_bytes`, which real NitroTPMs accept). Anything else is the NSM error code to
/// answer.
pub fn parse_request(index_data: &[u8]) -> Result<AttestationRequest, &'static str> {
    let value: Value = ciborium::de::from_reader(index_data).map_err(|_| "InvalidArgument")?;
    let Value::Map(entries) = value else {
        return Err("InvalidOperation");
    };
    let [(Value::Text(variant), Value::Map(fields))] = entries.as_slice() else {
        return Err("InvalidOperation");
    };
    if variant != "Attestation" {
        return Err("InvalidOperation");
    }
    let mut request = AttestationRequest::default();
    for (k, v) in fields {
        let Value::Text(k) = k else {
            return Err("InvalidArgument");
        };
        let slot = match k.as_str() {
            "user_data" => &mut request.user_data,
            "nonce" => &mut request.nonce,
            "public_key" => &mut request.public_key,
            _ => return Err("InvalidArgument"),
        };
        *slot = field_bytes(v)?;
    }
    Ok(request)
}

fn field_bytes(value: &Value) -> Result<Option<Vec<u8>>, &'static str> {
    let bytes = match value {
        Value::Null => return Ok(None),
        Value::Bytes(b) => b.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Integer(n) => u8::try_from(*n).map_err(|_| "InvalidArgument"),
                _ => Err("InvalidArgument"),
            })
            .collect::<Result<Vec<u8>, _>>()?,
        _ => return Err("InvalidArgument"),
    };
    if bytes.len() > MAX_FIELD_LEN {
        return Err("InputTooLarge");
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_as_zoa_init_and_vaportpm_write_them() {
        // zoa-init's own encoder (byte strings, nulls).
        let req = zoa_init::tpm2::nsm::attestation_request(&[1, 2, 3]).unwrap();
        assert_eq!(
            parse_request(&req).unwrap(),
            AttestationRequest {
                public_key: Some(vec![1, 2, 3]),
                ..Default::default()
            }
        );
        // Arrays of byte values, and left-over bytes after the item.
        let mut req = encode(&Value::Map(vec![(
            Value::Text("Attestation".into()),
            Value::Map(vec![(
                Value::Text("nonce".into()),
                Value::Array(vec![Value::Integer(7.into()), Value::Integer(8.into())]),
            )]),
        )]));
        req.extend_from_slice(&[0xFF; 10]);
        assert_eq!(parse_request(&req).unwrap().nonce, Some(vec![7, 8]));
    }

    #[test]
    fn bad_requests_get_the_nsm_error_codes() {
        assert_eq!(parse_request(&[0xFF]), Err("InvalidArgument"));
        let describe = encode(&Value::Text("DescribeNSM".into()));
        assert_eq!(parse_request(&describe), Err("InvalidOperation"));
        let big = encode(&Value::Map(vec![(
            Value::Text("Attestation".into()),
            Value::Map(vec![(
                Value::Text("user_data".into()),
                Value::Bytes(vec![0; MAX_FIELD_LEN + 1]),
            )]),
        )]));
        assert_eq!(parse_request(&big), Err("InputTooLarge"));
        assert_eq!(error_bytes("InputTooLarge")[..2], [0xA1, 0x65]);
    }
}
