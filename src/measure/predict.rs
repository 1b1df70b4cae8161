//! Predicting PCR 4, 7, 11 and 12 of a UKI boot, event by event, in both banks.
//!
//! Every rule here is proven against real boots (QEMU + OVMF + swtpm) in
//! `integration/measure_boot.rs`; a stub version without proven rules is refused.

use sha2::{Digest, Sha256, Sha384};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::authenticode::{authenticode_job, AuthenticodeError};
use super::hashing::{hash_jobs, BankDigests, HashJob};
use super::types::{Digests, Measurements, PredictedEvent, StubRecord};
use crate::image::pe::{PeError, PeLayout, Section, MAX_HEADER_BYTES};
use crate::image::uki::parse_sdmagic;

pub const EV_SEPARATOR: &str = "EV_SEPARATOR";
pub const EV_IPL: &str = "EV_IPL";
pub const EV_EFI_ACTION: &str = "EV_EFI_ACTION";
pub const EV_EFI_BOOT_SERVICES_APPLICATION: &str = "EV_EFI_BOOT_SERVICES_APPLICATION";
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: &str = "EV_EFI_VARIABLE_DRIVER_CONFIG";

/// The string the firmware measures before starting a boot option (PC Client spec).
pub const BOOT_OPTION_ACTION: &str = "Calling EFI Application from Boot Option";

/// EFI_GLOBAL_VARIABLE: SecureBoot, PK, KEK.
pub const EFI_GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// EFI_IMAGE_SECURITY_DATABASE_GUID: db, dbx.
pub const EFI_IMAGE_SECURITY_DATABASE: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";

/// How a stub version boots the kernel and what it measures into PCR11.
#[derive(Debug, Clone, Copy)]
pub struct StubRules {
    pub major: u32,
    /// The stub's canonical section order for PCR11 (only sections it measures).
    pub pcr11_sections: &'static [&'static str],
    /// True when the stub starts the kernel with the firmware's LoadImage, so the
    /// firmware measures the kernel's Authenticode into PCR4 (not with Secure Boot on).
    pub kernel_via_load_image: bool,
}

/// Proven stub versions, each booted under OVMF + swtpm by `integration/measure_boot.rs`.
/// - 252 (Debian 12): starts the kernel with LoadImage; measures its classic sections.
/// - 262 (Debian sid): starts the kernel itself (no PCR4 event, systemd >= 258) and also
///   measures `.ucode`, `.uname` and its own `.sbat`.
pub const STUB_RULES: &[StubRules] = &[
    StubRules {
        major: 252,
        pcr11_sections: &[
            ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
        ],
        kernel_via_load_image: true,
    },
    StubRules {
        major: 262,
        pcr11_sections: &[
            ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname",
            ".sbat", ".pcrpkey",
        ],
        kernel_via_load_image: false,
    },
];

/// Section names zoa knows: the stub's own code and data, and UKI sections of any
/// systemd version. Anything else is refused: zoa cannot tell whether a stub measures it.
const KNOWN_SECTIONS: &[&str] = &[
    ".text", ".data", ".rodata", ".reloc", ".dynamic", ".rela", ".dynsym", ".dynstr", ".bss",
    ".sbat", ".sdmagic", ".pdata", ".xdata", ".edata", ".idata", ".rsrc", ".linux", ".osrel",
    ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".pcrsig", ".pcrpkey",
    ".profile", ".dtbauto", ".hwids", ".efifw",
];

/// UKI payload sections (as opposed to the stub's own).
pub const UKI_PAYLOAD_SECTIONS: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".pcrsig",
    ".pcrpkey", ".profile", ".dtbauto", ".hwids", ".efifw",
];

/// Errors of a prediction.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error(transparent)]
    Pe(#[from] PeError),
    #[error(transparent)]
    Authenticode(#[from] AuthenticodeError),
    #[error("{file}: {message}")]
    Refused { file: String, message: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
}

/// Secure Boot inputs: EFI signature list files for the variables.
#[derive(Debug, Clone, Default)]
pub struct MeasureOptions {
    pub pk: Option<PathBuf>,
    pub kek: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub dbx: Option<PathBuf>,
    /// Explicit Secure Boot state; default: on exactly when a PK is given.
    pub secure_boot: Option<bool>,
}

impl MeasureOptions {
    pub fn secure_boot_on(&self) -> bool {
        self.secure_boot.unwrap_or(self.pk.is_some())
    }
}

fn hexd(d: &BankDigests) -> Digests {
    Digests {
        sha256: hex::encode(d.sha256),
        sha384: hex::encode(d.sha384),
    }
}

/// Running PCR values in both banks.
#[derive(Debug, Clone)]
struct Pcr {
    sha256: [u8; 32],
    sha384: [u8; 48],
}

impl Pcr {
    fn zero() -> Pcr {
        Pcr {
            sha256: [0; 32],
            sha384: [0; 48],
        }
    }

    fn extend(&mut self, d: &BankDigests) {
        let mut h = Sha256::new();
        h.update(self.sha256);
        h.update(d.sha256);
        self.sha256 = h.finalize().into();
        let mut h = Sha384::new();
        h.update(self.sha384);
        h.update(d.sha384);
        self.sha384 = h.finalize().into();
    }

    fn digests(&self) -> Digests {
        Digests {
            sha256: hex::encode(self.sha256),
            sha384: hex::encode(self.sha384),
        }
    }
}

/// Encodes a GUID string ("8be4df61-93ca-...") as its in-memory (mixed-endian) bytes.
pub fn guid_bytes(guid: &str) -> Option<[u8; 16]> {
    let hexs: String = guid.chars().filter(|c| *c != '-').collect();
    let raw = hex::decode(hexs).ok()?;
    let raw: [u8; 16] = raw.try_into().ok()?;
    let mut out = raw;
    out[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    out[4..6].copy_from_slice(&[raw[5], raw[4]]);
    out[6..8].copy_from_slice(&[raw[7], raw[6]]);
    Some(out)
}

/// The UEFI_VARIABLE_DATA structure the firmware hashes for a variable event.
pub fn variable_event_data(guid: &str, name: &str, data: &[u8]) -> Vec<u8> {
    let name16: Vec<u16> = name.encode_utf16().collect();
    let mut out = Vec::with_capacity(32 + name16.len() * 2 + data.len());
    out.extend_from_slice(&guid_bytes(guid).unwrap_or([0; 16]));
    out.extend_from_slice(&(name16.len() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for c in name16 {
        out.extend_from_slice(&c.to_le_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Checks that bytes are a sequence of EFI_SIGNATURE_LISTs (the content of PK/KEK/db/dbx).
pub fn validate_esl(file: &str, data: &[u8]) -> Result<usize, MeasureError> {
    let refuse = |message: String| MeasureError::Refused {
        file: file.to_owned(),
        message,
    };
    let mut off = 0usize;
    let mut lists = 0;
    while off < data.len() {
        let head = data
            .get(off..off + 28)
            .ok_or_else(|| refuse(format!("truncated EFI signature list header at byte {off}")))?;
        let u32_at = |i: usize| {
            u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]) as usize
        };
        let (list_size, header_size, sig_size) = (u32_at(16), u32_at(20), u32_at(24));
        if list_size < 28 + header_size || off + list_size > data.len() {
            return Err(refuse(format!(
                "EFI signature list at byte {off} has an invalid size {list_size}"
            )));
        }
        if sig_size < 16 || (list_size - 28 - header_size) % sig_size != 0 {
            return Err(refuse(format!(
                "EFI signature list at byte {off} has an invalid SignatureSize {sig_size}"
            )));
        }
        off += list_size;
        lists += 1;
    }
    Ok(lists)
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, MeasureError> {
    let file = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| MeasureError::Io {
        file: file.clone(),
        source,
    })?;
    validate_esl(&file, &data)?;
    Ok(data)
}

/// Reads the bytes of a small section (names, version strings).
fn small_section(
    path: &Path,
    layout: &PeLayout,
    name: &str,
) -> Result<Option<Vec<u8>>, MeasureError> {
    Ok(layout.read_section(path, name, 64 * 1024)?)
}

/// Predicts the PCRs of booting `uki` as the only boot option.
pub fn predict(uki: &Path, opts: &MeasureOptions) -> Result<Measurements, MeasureError> {
    let file = uki.display().to_string();
    let refuse = |message: String| MeasureError::Refused {
        file: file.clone(),
        message,
    };
    let layout = PeLayout::read(uki)?;
    for s in &layout.sections {
        if !KNOWN_SECTIONS.contains(&s.name.as_str()) {
            return Err(refuse(format!(
                "unknown section {:?}: zoa cannot tell whether the stub measures it; refusing to predict",
                s.name
            )));
        }
    }
    for name in UKI_PAYLOAD_SECTIONS {
        if layout.sections.iter().filter(|s| s.name == *name).count() > 1 {
            return Err(refuse(format!(
                "section {name} appears more than once (multi-profile UKIs are not supported)"
            )));
        }
    }
    let linux = layout
        .section(".linux")
        .ok_or_else(|| refuse("has no .linux section: not a UKI".into()))?
        .clone();
    let sdmagic = small_section(uki, &layout, ".sdmagic")?
        .ok_or_else(|| refuse("has no .sdmagic section: not built on a systemd stub".into()))?;
    let stub = parse_sdmagic(&sdmagic).ok_or_else(|| {
        refuse(format!(
            "unrecognised .sdmagic {:?}",
            String::from_utf8_lossy(&sdmagic)
        ))
    })?;
    let supported: Vec<String> = STUB_RULES.iter().map(|r| r.major.to_string()).collect();
    let rules = STUB_RULES
        .iter()
        .find(|r| r.major == stub.major)
        .ok_or_else(|| {
            refuse(format!(
            "systemd-stub {} has no proven measurement rules (supported: {}); refusing to guess",
            stub.version,
            supported.join(", ")
        ))
        })?;
    let secure_boot = opts.secure_boot_on();
    if secure_boot && layout.is_signed() {
        // Fine: firmware verifies it; the authority event is a later feature.
    } else if secure_boot {
        return Err(refuse(
            "Secure Boot is on but the UKI is unsigned: the firmware would refuse to boot it"
                .into(),
        ));
    }

    // PCR11 sections in the stub's canonical order (zero-size sections are skipped, as the
    // stub treats them as absent).
    let mut measured: Vec<Section> = Vec::new();
    for name in rules.pcr11_sections {
        if let Some(s) = layout.section(name) {
            if s.virtual_size > 0 {
                measured.push(s.clone());
            }
        }
    }
    let unmeasured_sections: Vec<String> = layout
        .sections
        .iter()
        .filter(|s| {
            UKI_PAYLOAD_SECTIONS.contains(&s.name.as_str())
                && !rules.pcr11_sections.contains(&s.name.as_str())
        })
        .map(|s| s.name.clone())
        .collect();

    // Hash jobs: UKI Authenticode, each PCR11 section, kernel Authenticode.
    let mut jobs = vec![authenticode_job(&file, &layout, 0, layout.file_len)?];
    for s in &measured {
        let start = u64::from(s.raw_offset);
        let in_file = u64::from(s.file_data_len());
        jobs.push(HashJob {
            ranges: vec![(start, start + in_file)],
            zeros: u64::from(s.virtual_size) - in_file,
        });
    }
    let kernel_event = rules.kernel_via_load_image && !secure_boot;
    if kernel_event {
        if linux.virtual_size > linux.raw_size {
            return Err(refuse(
                ".linux is larger in memory than in the file; unsupported layout".into(),
            ));
        }
        let kernel_layout = kernel_layout(uki, &linux)?;
        jobs.push(authenticode_job(
            &format!("{file} (.linux)"),
            &kernel_layout,
            u64::from(linux.raw_offset),
            u64::from(linux.virtual_size),
        )?);
    }
    let digests = hash_jobs(uki, &jobs).map_err(|source| MeasureError::Io {
        file: file.clone(),
        source,
    })?;

    let mut events = Vec::new();
    let mut pcrs: BTreeMap<u32, Pcr> = [4, 7, 11, 12]
        .into_iter()
        .map(|p| (p, Pcr::zero()))
        .collect();
    let mut record = |pcr: u32, event_type: &str, what: String, d: &BankDigests| {
        if let Some(p) = pcrs.get_mut(&pcr) {
            p.extend(d);
        }
        events.push(PredictedEvent {
            pcr,
            event_type: event_type.to_owned(),
            what,
            digests: hexd(d),
        });
    };

    // PCR4: boot attempt, separator, the UKI, and the kernel when the firmware loads it.
    record(
        4,
        EV_EFI_ACTION,
        format!("\"{BOOT_OPTION_ACTION}\""),
        &BankDigests::of(BOOT_OPTION_ACTION.as_bytes()),
    );
    let separator = BankDigests::of(&[0, 0, 0, 0]);
    record(4, EV_SEPARATOR, "separator".into(), &separator);
    record(
        4,
        EV_EFI_BOOT_SERVICES_APPLICATION,
        "Authenticode of the UKI".into(),
        &digests[0],
    );
    if kernel_event {
        record(
            4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            format!("Authenticode of embedded kernel (.linux; systemd-stub {} starts it with LoadImage)", stub.major),
            &digests[digests.len() - 1],
        );
    }

    // PCR7: Secure Boot state and key databases, separator.
    let mut unpredicted = BTreeMap::new();
    let vars: [(&str, &str, Vec<u8>); 5] = [
        (
            EFI_GLOBAL_VARIABLE,
            "SecureBoot",
            vec![u8::from(secure_boot)],
        ),
        (EFI_GLOBAL_VARIABLE, "PK", opt_key(&opts.pk)?),
        (EFI_GLOBAL_VARIABLE, "KEK", opt_key(&opts.kek)?),
        (EFI_IMAGE_SECURITY_DATABASE, "db", opt_key(&opts.db)?),
        (EFI_IMAGE_SECURITY_DATABASE, "dbx", opt_key(&opts.dbx)?),
    ];
    for (guid, name, data) in &vars {
        let d = BankDigests::of(&variable_event_data(guid, name, data));
        record(
            7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            format!("{name} ({} bytes)", data.len()),
            &d,
        );
    }
    record(7, EV_SEPARATOR, "separator".into(), &separator);
    let keys_given = [&opts.pk, &opts.kek, &opts.db, &opts.dbx]
        .iter()
        .any(|k| k.is_some());
    if secure_boot {
        unpredicted.insert(
            "7".to_owned(),
            "Secure Boot is on: the EV_EFI_VARIABLE_AUTHORITY event for the db entry that verifies the image is not predicted yet".to_owned(),
        );
    } else if keys_given {
        // The variable events follow the spec, but no boot here has proven them with
        // enrolled keys yet; an unproven PCR7 could lock a release out of its keys.
        unpredicted.insert(
            "7".to_owned(),
            "enrolled Secure Boot keys are not yet proven against a boot; PCR7 is not predicted"
                .to_owned(),
        );
    }

    // PCR11: each measured section's name (with NUL) and data, in the stub's order.
    for (i, s) in measured.iter().enumerate() {
        let mut name = s.name.clone().into_bytes();
        name.push(0);
        record(
            11,
            EV_IPL,
            format!("section name {}", s.name),
            &BankDigests::of(&name),
        );
        record(
            11,
            EV_IPL,
            format!("section {} ({} bytes)", s.name, s.virtual_size),
            &digests[1 + i],
        );
    }

    let mut out_pcrs: BTreeMap<String, Digests> = pcrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.digests()))
        .collect();
    for k in unpredicted.keys() {
        out_pcrs.remove(k);
        events.retain(|e| e.pcr.to_string() != *k);
    }
    Ok(Measurements {
        stub: StubRecord {
            version: stub.version,
            major: stub.major,
        },
        secure_boot,
        pcrs: out_pcrs,
        unpredicted,
        unmeasured_sections,
        events,
    })
}

fn opt_key(path: &Option<PathBuf>) -> Result<Vec<u8>, MeasureError> {
    match path {
        Some(p) => read_key_file(p),
        None => Ok(Vec::new()),
    }
}

/// Parses the headers of the kernel stored in the UKI's `.linux` section.
fn kernel_layout(uki: &Path, linux: &Section) -> Result<PeLayout, MeasureError> {
    let file = format!("{} (.linux)", uki.display());
    let io = |source| MeasureError::Io {
        file: file.clone(),
        source,
    };
    let len = u64::from(linux.virtual_size);
    let mut head = vec![0u8; len.min(MAX_HEADER_BYTES) as usize];
    let mut f = File::open(uki).map_err(io)?;
    f.seek(SeekFrom::Start(u64::from(linux.raw_offset)))
        .map_err(io)?;
    f.read_exact(&mut head).map_err(io)?;
    Ok(PeLayout::parse(&file, &head, len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_pcr7_sha384_is_the_published_value() {
        // Secure Boot off, empty variables: the SHA-384 PCR7 seen on EC2 and under OVMF.
        let mut pcr = Pcr::zero();
        for (guid, name, data) in [
            (EFI_GLOBAL_VARIABLE, "SecureBoot", vec![0u8]),
            (EFI_GLOBAL_VARIABLE, "PK", vec![]),
            (EFI_GLOBAL_VARIABLE, "KEK", vec![]),
            (EFI_IMAGE_SECURITY_DATABASE, "db", vec![]),
            (EFI_IMAGE_SECURITY_DATABASE, "dbx", vec![]),
        ] {
            pcr.extend(&BankDigests::of(&variable_event_data(guid, name, &data)));
        }
        pcr.extend(&BankDigests::of(&[0, 0, 0, 0]));
        let v = pcr.digests().sha384;
        assert!(v.starts_with("98441c7f") && v.ends_with("8b77af35"), "{v}");
    }

    #[test]
    fn guid_is_mixed_endian() {
        let g = guid_bytes(EFI_GLOBAL_VARIABLE).unwrap();
        assert_eq!(hex::encode(g), "61dfe48bca93d211aa0d00e098032b8c");
        assert!(guid_bytes("nope").is_none());
    }

    #[test]
    fn esl_validation() {
        assert_eq!(validate_esl("x", &[]).unwrap(), 0);
        assert!(validate_esl("x", &[0u8; 10]).is_err());
        // One list holding one SHA-256 signature (owner GUID + 32 bytes).
        let mut esl = vec![0u8; 16];
        esl.extend_from_slice(&(28u32 + 48).to_le_bytes());
        esl.extend_from_slice(&0u32.to_le_bytes());
        esl.extend_from_slice(&48u32.to_le_bytes());
        esl.extend(vec![0u8; 48]);
        assert_eq!(validate_esl("x", &esl).unwrap(), 1);
        let mut two = esl.clone();
        two.extend_from_slice(&esl);
        assert_eq!(validate_esl("x", &two).unwrap(), 2);
        assert!(validate_esl("x", &esl[..50]).is_err());
    }

    #[test]
    fn every_buildable_stub_has_rules() {
        for major in crate::image::uki::SUPPORTED_STUB_VERSIONS {
            assert!(
                STUB_RULES.iter().any(|r| r.major == *major),
                "stub {major} builds but has no measurement rules"
            );
        }
    }
}
