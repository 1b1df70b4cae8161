//! The data types of a measurement prediction, shared by `measure`, `boot` and later
//! stages (release manifests, diff, KMS policies).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A TPM PCR index: 0–23, the PC Client platform's PCRs (NitroTPM has the same).
///
/// Serialized as its number, which serde_json writes as a JSON number where it is a value
/// (`"pcr": 4`) and as a decimal string where it is a map key (`"pcrs": {"4": …}`): the
/// formats zoa has always written, and signed manifests hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Pcr(u8);

impl Pcr {
    /// Firmware: the EFI applications loaded (the UKI, and for some stubs its kernel).
    pub const PCR4: Pcr = Pcr(4);
    /// Secure Boot state, its key databases and the db entries that verified images.
    pub const PCR7: Pcr = Pcr(7);
    /// The systemd stub: the UKI's sections.
    pub const PCR11: Pcr = Pcr(11);
    /// The systemd stub: load options, credentials and add-ons (all-zero without).
    pub const PCR12: Pcr = Pcr(12);
    /// The PCRs zoa predicts, in order.
    pub const PREDICTED: [Pcr; 4] = [Pcr::PCR4, Pcr::PCR7, Pcr::PCR11, Pcr::PCR12];
    /// The highest index a PC Client TPM has.
    pub const MAX_INDEX: u8 = 23;

    pub const fn new(index: u8) -> Option<Pcr> {
        if index <= Pcr::MAX_INDEX {
            Some(Pcr(index))
        } else {
            None
        }
    }

    pub const fn index(self) -> u8 {
        self.0
    }
}

impl TryFrom<u32> for Pcr {
    type Error = u32;

    fn try_from(index: u32) -> Result<Pcr, u32> {
        u8::try_from(index).ok().and_then(Pcr::new).ok_or(index)
    }
}

impl From<Pcr> for u32 {
    fn from(pcr: Pcr) -> u32 {
        u32::from(pcr.0)
    }
}

impl std::fmt::Display for Pcr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Pcr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pcr, D::Error> {
        let index = u8::deserialize(d)?;
        Pcr::new(index).ok_or_else(|| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Unsigned(index.into()),
                &"a PCR index from 0 to 23",
            )
        })
    }
}

/// A PCR bank: the hash algorithm a TPM keeps a set of PCRs in. NitroTPM and zoa's
/// software TPM have both; a KMS policy binds SHA-384.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bank {
    Sha256,
    Sha384,
}

impl Bank {
    /// Every bank zoa predicts, in the order it shows them.
    pub const ALL: [Bank; 2] = [Bank::Sha256, Bank::Sha384];

    /// The name zoa's JSON, swtpm and Linux's sysfs (`pcr-sha256/`) use.
    pub const fn name(self) -> &'static str {
        match self {
            Bank::Sha256 => "sha256",
            Bank::Sha384 => "sha384",
        }
    }

    pub fn from_name(name: &str) -> Option<Bank> {
        Bank::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Bytes in one of its digests.
    pub const fn digest_len(self) -> usize {
        match self {
            Bank::Sha256 => 32,
            Bank::Sha384 => 48,
        }
    }
}

impl std::fmt::Display for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A PCR value or event digest in both banks, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    pub sha256: String,
    pub sha384: String,
}

impl Digests {
    /// The digest in one bank.
    pub fn get(&self, bank: Bank) -> &str {
        match bank {
            Bank::Sha256 => &self.sha256,
            Bank::Sha384 => &self.sha384,
        }
    }
}

/// One predicted TPM event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictedEvent {
    pub pcr: Pcr,
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
    /// PCR → value in both banks, in numeric order (`"4"` before `"11"`, how people read
    /// them).
    pub pcrs: BTreeMap<Pcr, Digests>,
    /// PCRs that could not be predicted, with the reason (never a guess).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unpredicted: BTreeMap<Pcr, String>,
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
    pub fn pcr(&self, pcr: Pcr) -> Option<&Digests> {
        self.pcrs.get(&pcr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_indices_are_numbers_in_values_and_decimal_strings_in_keys() {
        let keyed: BTreeMap<Pcr, u8> = [(Pcr::PCR12, 1), (Pcr::PCR4, 2)].into();
        assert_eq!(serde_json::to_string(&keyed).unwrap(), r#"{"4":2,"12":1}"#);
        assert_eq!(serde_json::to_string(&Pcr::PCR11).unwrap(), "11");
        let back: BTreeMap<Pcr, u8> = serde_json::from_str(r#"{"12":1,"4":2}"#).unwrap();
        assert_eq!(back, keyed);
        // Through a serde_json::Value too (diff reads measurements that way).
        let value: serde_json::Value = serde_json::from_str(r#"{"7":0}"#).unwrap();
        let back: BTreeMap<Pcr, u8> = serde_json::from_value(value).unwrap();
        assert_eq!(back, [(Pcr::PCR7, 0)].into());
        assert_eq!(
            serde_json::from_str::<Pcr>("23").unwrap(),
            Pcr::new(23).unwrap()
        );
        for bad in [
            r#"{"24":0}"#,
            r#"{"04":0}"#,
            r#"{"+4":0}"#,
            r#"{"sha256":0}"#,
            r#"{"-1":0}"#,
        ] {
            assert!(
                serde_json::from_str::<BTreeMap<Pcr, u8>>(bad).is_err(),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<Pcr>("\"4\"").is_err());
        assert_eq!(Pcr::try_from(24u32), Err(24));
        assert_eq!(Pcr::PCR7.to_string(), "7");
    }

    #[test]
    fn banks_are_named_as_everywhere_else() {
        assert_eq!(serde_json::to_string(&Bank::Sha384).unwrap(), r#""sha384""#);
        assert_eq!(Bank::from_name("sha256"), Some(Bank::Sha256));
        assert_eq!(Bank::from_name("SHA256"), None);
        let d = Digests {
            sha256: "a".into(),
            sha384: "b".into(),
        };
        assert_eq!(Bank::ALL.map(|b| d.get(b)), ["a", "b"]);
    }
}
