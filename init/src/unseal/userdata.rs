//! The EC2 user data of a sealed deployment: the `zoa seal` envelopes the instance unseals.
//!
//! ```json
//! {"format": "zoa-user-data/1", "secrets": {"api-key": { ...a zoa-sealed/1 envelope... }}}
//! ```
//!
//! `zoa deploy --secret NAME=FILE` writes it; zoa-init reads it from IMDS. User data is not
//! measured and anyone who can launch instances can set it: that is fine, because an envelope
//! opens only with a data key KMS releases to an attested boot of the release, and the
//! envelope's encryption context (checked by KMS) names the secret, so one envelope cannot be
//! passed off as another.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::envelope::Envelope;
use super::UnsealError;

/// The `format` of the user data.
pub const USER_DATA_FORMAT: &str = "zoa-user-data/1";
/// EC2 accepts at most 16 KiB of user data (before base64).
pub const MAX_USER_DATA_LEN: usize = 16 * 1024;

/// The user data: envelopes by secret name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserData {
    pub format: String,
    pub secrets: BTreeMap<String, serde_json::Value>,
}

impl Default for UserData {
    fn default() -> UserData {
        UserData {
            format: USER_DATA_FORMAT.to_owned(),
            secrets: BTreeMap::new(),
        }
    }
}

fn invalid(detail: impl Into<String>) -> UnsealError {
    UnsealError::UserData {
        detail: detail.into(),
    }
}

impl UserData {
    /// Adds the envelope `envelope_json` (the bytes `zoa seal` wrote) under the secret name
    /// its encryption context carries, which must be `name`.
    pub fn insert(&mut self, name: &str, envelope_json: &[u8]) -> Result<(), UnsealError> {
        let envelope = Envelope::parse(envelope_json)?;
        if envelope.name() != name {
            return Err(invalid(format!(
                "the envelope given as {name:?} was sealed as {:?}",
                envelope.name()
            )));
        }
        let value = serde_json::from_slice(envelope_json)
            .map_err(|e| invalid(format!("envelope {name:?}: {e}")))?;
        if self.secrets.insert(name.to_owned(), value).is_some() {
            return Err(invalid(format!("secret {name:?} given twice")));
        }
        Ok(())
    }

    /// The compact JSON that goes into the instance's user data; refused over
    /// [`MAX_USER_DATA_LEN`].
    pub fn to_json(&self) -> Result<String, UnsealError> {
        let text = serde_json::to_string(self).map_err(|e| invalid(e.to_string()))?;
        if text.len() > MAX_USER_DATA_LEN {
            return Err(invalid(format!(
                "{} bytes; EC2 takes at most {MAX_USER_DATA_LEN}",
                text.len()
            )));
        }
        Ok(text)
    }

    /// Parses user data as IMDS returns it.
    pub fn parse(bytes: &[u8]) -> Result<UserData, UnsealError> {
        if bytes.len() > MAX_USER_DATA_LEN {
            return Err(invalid(format!(
                "{} bytes; at most {MAX_USER_DATA_LEN} are accepted",
                bytes.len()
            )));
        }
        let data: UserData = serde_json::from_slice(bytes).map_err(|e| {
            invalid(format!(
                "not {USER_DATA_FORMAT} JSON ({e}); deploy with `zoa deploy --secret NAME=FILE`"
            ))
        })?;
        if data.format != USER_DATA_FORMAT {
            return Err(invalid(format!(
                "format {:?}; expected {USER_DATA_FORMAT:?}",
                data.format
            )));
        }
        Ok(data)
    }

    /// The envelopes of `names`, in that order: each must be present, parse, and carry its
    /// own name. Envelopes for other names are ignored.
    pub fn envelopes(&self, names: &[&str]) -> Result<Vec<Envelope>, UnsealError> {
        names
            .iter()
            .map(|name| {
                let value = self.secrets.get(*name).ok_or_else(|| {
                    invalid(format!(
                        "no secret {name:?} (present: {})",
                        self.secrets.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                let envelope = Envelope::from_value(value)?;
                if envelope.name() != *name {
                    return Err(invalid(format!(
                        "the envelope under {name:?} was sealed as {:?}",
                        envelope.name()
                    )));
                }
                Ok(envelope)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed envelope (its data key is not a real KMS blob; parsing does not care).
    fn envelope(name: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "format": "zoa-sealed/1",
            "key_arn": "arn:aws:kms:us-east-1:123456789012:key/0000",
            "encryption_context": {"zoa:deployment": "d", "zoa:secret": name},
            "algorithm": "AES-256-GCM",
            "encrypted_data_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "nonce": "AAAAAAAAAAAAAAAA",
            "ciphertext": "AAAAAAAAAAAAAAAAAAAAAAAA",
        }))
        .unwrap()
    }

    #[test]
    fn round_trip_and_lookup_by_name() {
        let mut data = UserData::default();
        data.insert("api-key", &envelope("api-key")).unwrap();
        data.insert("db", &envelope("db")).unwrap();
        let text = data.to_json().unwrap();
        assert!(text.starts_with(r#"{"format":"zoa-user-data/1","secrets":{"api-key":"#));
        let back = UserData::parse(text.as_bytes()).unwrap();
        assert_eq!(back, data);
        let got = back.envelopes(&["db", "api-key"]).unwrap();
        assert_eq!(
            got.iter().map(|e| e.name()).collect::<Vec<_>>(),
            ["db", "api-key"]
        );
    }

    #[test]
    fn wrong_names_formats_and_sizes_are_refused() {
        let mut data = UserData::default();
        let e = data.insert("api-key", &envelope("other")).unwrap_err();
        assert!(e.to_string().contains("was sealed as \"other\""), "{e}");
        data.insert("a", &envelope("a")).unwrap();
        assert!(data
            .insert("a", &envelope("a"))
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let e = data.envelopes(&["b"]).unwrap_err();
        assert!(
            e.to_string().contains("no secret \"b\" (present: a)"),
            "{e}"
        );

        // An envelope moved under another name in the JSON.
        let moved = format!(
            r#"{{"format":"zoa-user-data/1","secrets":{{"b":{}}}}}"#,
            String::from_utf8(envelope("a")).unwrap()
        );
        let e = UserData::parse(moved.as_bytes())
            .unwrap()
            .envelopes(&["b"])
            .unwrap_err();
        assert!(e.to_string().contains("sealed as \"a\""), "{e}");

        for (bad, want) in [
            (&b"#!/bin/sh\necho hi"[..], "not zoa-user-data/1 JSON"),
            (
                br#"{"format":"zoa-user-data/2","secrets":{}}"#,
                "format \"zoa-user-data/2\"",
            ),
            (
                br#"{"format":"zoa-user-data/1","secrets":{},"x":1}"#,
                "unknown field",
            ),
        ] {
            let e = UserData::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let big = vec![b' '; MAX_USER_DATA_LEN + 1];
        assert!(UserData::parse(&big)
            .unwrap_err()
            .to_string()
            .contains("at most"));
    }
}
