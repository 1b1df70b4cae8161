//! The data types of a measurement prediction, shared by `measure`, `boot` and later
//! stages (release manifests, diff, KMS policies).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A PCR value or event digest in both banks, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    pub sha256: String,
    pub sha384: String,
}

/// One predicted TPM event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictedEvent {
    pub pcr: u32,
    /// TCG event type name, e.g. "EV_EFI_BOOT_SERVICES_APPLICATION".
    #[serde(rename = "type")]
    pub event_type: String,
    /// What it is, for people: e.g. "Authenticode of embedded kernel (.linux)".
    pub what: String,
    pub digests: Digests,
}

/// Predicted PCR values and the events that produce them, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurements {
    /// The systemd stub the prediction's rules come from.
    pub stub: StubRecord,
    /// Whether the prediction assumes Secure Boot on.
    pub secure_boot: bool,
    /// PCR index ("4", "7", "11", "12") → value in both banks, in numeric order.
    #[serde(serialize_with = "serialize_numeric_keys")]
    pub pcrs: BTreeMap<String, Digests>,
    /// PCRs that could not be predicted, with the reason (never a guess).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unpredicted: BTreeMap<String, String>,
    /// UKI sections present but not measured by this stub version (e.g. `.uname` for 252).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmeasured_sections: Vec<String>,
    pub events: Vec<PredictedEvent>,
}

/// The stub version a prediction is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StubRecord {
    pub version: String,
    pub major: u32,
}

impl Measurements {
    /// The value of one PCR, if predicted.
    pub fn pcr(&self, index: u32) -> Option<&Digests> {
        self.pcrs.get(&index.to_string())
    }
}

/// Writes PCR maps in numeric order ("4" before "11"), which is how people read them.
fn serialize_numeric_keys<S: serde::Serializer>(
    map: &BTreeMap<String, Digests>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut entries: Vec<(&String, &Digests)> = map.iter().collect();
    entries.sort_by_key(|(k, _)| (k.parse::<u32>().unwrap_or(u32::MAX), (*k).clone()));
    let mut m = s.serialize_map(Some(entries.len()))?;
    for (k, v) in entries {
        m.serialize_entry(k, v)?;
    }
    m.end()
}
