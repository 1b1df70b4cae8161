//! What identifies a release to a verifier: the PCRs a KMS key policy binds and a client
//! checks an attestation against (PCR4 or PCR7, and PCR12), read from the signed manifest.
//!
//! Here rather than in the AWS stage because `zoa attest` needs it too, in builds of zoa
//! without the AWS SDK (the `aws` feature).

use std::collections::BTreeMap;

use super::manifest::Manifest;

/// Which PCRs a key binds, by how the image boots.
///
/// AWS guidance: PCR4 (the digests of the boot chain) and PCR12 for standard boot; PCR7
/// (the Secure Boot state and keys, and the db entry that verified the image) for Secure
/// Boot. PCR12 is bound in both modes: all-zero, or a kernel command line could be
/// injected through UefiData. In Secure Boot mode PCR4 is deliberately not bound: any
/// image signed by the same db key boots to the same PCR7, so a fleet can roll forward
/// without a policy change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMode {
    /// UEFI boot without Secure Boot: PCR4 and PCR12.
    #[default]
    Standard,
    /// UEFI Secure Boot with the release's UefiData (PK, KEK, db, dbx): PCR7 and PCR12.
    SecureBoot,
}

impl BootMode {
    /// The PCR that identifies what boots: 4 (standard) or 7 (Secure Boot).
    pub fn boot_pcr(self) -> u8 {
        match self {
            BootMode::Standard => 4,
            BootMode::SecureBoot => 7,
        }
    }

    /// The PCRs every admitted release binds, in the order they appear in the policy.
    pub fn bound_pcrs(self) -> [u8; 2] {
        [self.boot_pcr(), 12]
    }

    pub fn is_standard(&self) -> bool {
        *self == BootMode::Standard
    }
}

impl std::fmt::Display for BootMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b] = self.bound_pcrs();
        match self {
            BootMode::Standard => write!(f, "standard boot (PCR{a} and PCR{b})"),
            BootMode::SecureBoot => write!(f, "Secure Boot (PCR{a} and PCR{b})"),
        }
    }
}

/// One admitted release: its SHA-384 PCR values from the signed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBinding {
    /// "name version", for error messages.
    pub release: String,
    /// Which PCRs are bound: the mode's [`BootMode::bound_pcrs`].
    pub mode: BootMode,
    /// SHA-384 of the mode's [`BootMode::boot_pcr`] (PCR4, or PCR7 with Secure Boot), 96
    /// hex digits (either case; policies carry lower case).
    pub boot_pcr: String,
    /// SHA-384 PCR12, 96 hex digits (either case; policies carry lower case).
    pub pcr12: String,
}

impl PcrBinding {
    /// The bound PCR values by PCR number, in [`BootMode::bound_pcrs`] order.
    pub fn pcrs(&self) -> [(u8, &str); 2] {
        [(self.mode.boot_pcr(), &self.boot_pcr), (12, &self.pcr12)]
    }

    /// The bound PCR values as an attestation carries them: PCR number → lowercase hex,
    /// for verifiers matching a document or a CloudTrail record to this release.
    pub fn expected(&self) -> BTreeMap<u32, String> {
        self.pcrs()
            .iter()
            .map(|(i, v)| (u32::from(*i), v.to_ascii_lowercase()))
            .collect()
    }

    /// Whether two bindings admit the same boots (the release names aside).
    pub fn same_pcrs(&self, other: &PcrBinding) -> bool {
        self.mode == other.mode
            && self.boot_pcr.eq_ignore_ascii_case(&other.boot_pcr)
            && self.pcr12.eq_ignore_ascii_case(&other.pcr12)
    }
}

/// A release whose manifest does not predict a PCR the binding needs (e.g. a PCR the
/// measurement could not predict for an unknown stub).
#[derive(Debug, thiserror::Error)]
#[error("release: {release}: PCR{pcr} is not predicted ({why}): a KMS policy cannot bind it")]
pub struct UnboundPcr {
    pub release: String,
    pub pcr: u8,
    pub why: String,
}

/// The SHA-384 PCR values a KMS policy binds, from the signed manifest: PCR7 and PCR12
/// when the release was measured with Secure Boot on (its UefiData enrolls a PK), PCR4
/// and PCR12 otherwise.
pub fn binding_of(manifest: &Manifest) -> Result<PcrBinding, UnboundPcr> {
    let mode = if manifest.measurements.secure_boot {
        BootMode::SecureBoot
    } else {
        BootMode::Standard
    };
    let pcr = |n: u8| {
        let index = crate::measure::Pcr::new(n);
        index
            .and_then(|p| manifest.measurements.pcr(p))
            .map(|d| d.sha384.clone())
            .ok_or_else(|| {
                let why = index
                    .and_then(|p| manifest.measurements.unpredicted.get(&p))
                    .cloned()
                    .unwrap_or_else(|| "not in the manifest".to_owned());
                UnboundPcr {
                    release: manifest.label(),
                    pcr: n,
                    why,
                }
            })
    };
    Ok(PcrBinding {
        release: manifest.label(),
        mode,
        boot_pcr: pcr(mode.boot_pcr())?,
        pcr12: pcr(12)?,
    })
}
