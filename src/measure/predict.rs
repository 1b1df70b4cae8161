//! Predicting PCR 4, 7, 11 and 12 of a UKI boot, event by event, in both banks.
//!
//! Every rule here is proven against real boots (QEMU + OVMF + swtpm) in
//! `integration/measure_boot.rs`; a stub version without proven rules is refused.

use sha2::{Digest, Sha256, Sha384};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::authority;
use super::types::{Digests, Measurements, Pcr, PredictedEvent, StubRecord};
use crate::uefi::authenticode::{authenticode_job, AuthenticodeError};
use crate::uefi::esl::{self, Guid, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
use crate::uefi::file::ImageFile;
use crate::uefi::hashing::{hash_jobs, BankDigests, HashJob};
use crate::uefi::pe::{PeError, PeLayout, Section, MAX_HEADER_BYTES};
use crate::uefi::uefidata::UefiVarStore;
use crate::uefi::uki::parse_sdmagic;

pub const EV_SEPARATOR: &str = "EV_SEPARATOR";
pub const EV_IPL: &str = "EV_IPL";
pub const EV_EFI_ACTION: &str = "EV_EFI_ACTION";
pub const EV_EFI_BOOT_SERVICES_APPLICATION: &str = "EV_EFI_BOOT_SERVICES_APPLICATION";
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: &str = "EV_EFI_VARIABLE_DRIVER_CONFIG";
pub const EV_EFI_VARIABLE_AUTHORITY: &str = "EV_EFI_VARIABLE_AUTHORITY";

/// The string the firmware measures before starting a boot option (PC Client spec).
pub const BOOT_OPTION_ACTION: &str = "Calling EFI Application from Boot Option";

/// How a stub version boots the kernel and what it measures into PCR11.
#[derive(Debug, Clone, Copy)]
pub struct StubRules {
    pub major: u32,
    /// The stub's canonical section order for PCR11 (only sections it measures).
    pub pcr11_sections: &'static [&'static str],
    /// True when the stub starts the kernel with the firmware's LoadImage, so the
    /// firmware measures the kernel's Authenticode into PCR4 (not with Secure Boot on).
    pub kernel_via_load_image: bool,
    /// The payload sections a boot on this stub has proven zoa's prediction for
    /// (`integration/measure_boot.rs` boots images holding exactly these). Stubs act on the
    /// others too (`.dtbauto`/`.hwids`/`.efifw` pick per-machine parts), and a stub that does
    /// not know a section ignores it (252 would neither measure nor load a `.ucode`); until a boot
    /// proves zoa's prediction for a section, an image holding it is refused, naming the
    /// section and the stub, never predicted as if the stub ignored it.
    pub proven_sections: &'static [&'static str],
}

/// Proven stub versions, each booted under OVMF + swtpm by `integration/measure_boot.rs`.
/// - 252 (Debian 12): starts the kernel with LoadImage; measures its classic sections.
/// - 257 (Debian 13): starts the kernel with LoadImage (its strings still carry "Error
///   loading kernel image"; the own PE loader came in 258), so the firmware measures the
///   kernel into PCR4 as for 252; measures the sections of its `unified_sections` table in
///   order but `.pcrsig` — `.ucode`, `.uname` and its own `.sbat` too.
/// - 262 (Debian sid): starts the kernel itself (no PCR4 event, systemd >= 258) and
///   measures the same sections as 257.
///
/// Majors between these (253–256, 258–261) are refused: no boot proves their rules, and
/// the rules changed between these majors (`.uname`, `.ucode` and the stub's own `.sbat`
/// joined PCR11 after 252; 258 brought the stub's own kernel loader), so a neighbour's
/// rules cannot be assumed to hold for them.
pub const STUB_RULES: &[StubRules] = &[
    StubRules {
        major: 252,
        pcr11_sections: &[
            ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
        ],
        kernel_via_load_image: true,
        // .uname: 252 does not know it (proven: measured by no boot of 252); .pcrsig is
        // passed to the OS unmeasured.
        proven_sections: &[
            ".linux", ".osrel", ".cmdline", ".initrd", ".uname", ".splash", ".dtb", ".pcrsig",
            ".pcrpkey",
        ],
    },
    StubRules {
        major: 257,
        pcr11_sections: &[
            ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname",
            ".sbat", ".pcrpkey", ".profile",
        ],
        kernel_via_load_image: true,
        proven_sections: PROVEN_SINCE_257,
    },
    StubRules {
        major: 262,
        pcr11_sections: &[
            ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname",
            ".sbat", ".pcrpkey", ".profile",
        ],
        kernel_via_load_image: false,
        proven_sections: PROVEN_SINCE_257,
    },
];

/// 257 and 262 load `.ucode` as the first initrd and measure it; `.pcrsig` is passed to the
/// OS unmeasured, as on 252. A multi-profile UKI (`.profile`) boots its profile 0 when the
/// firmware starts it with no load options, as zoa's disks do (see [`default_profile`]).
const PROVEN_SINCE_257: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".uname", ".splash", ".dtb", ".pcrsig",
    ".pcrpkey", ".profile",
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

/// Secure Boot inputs: EFI signature list files for the variables, or an AMI's
/// `UefiData` variable store holding them.
#[derive(Debug, Clone, Default)]
pub struct MeasureOptions {
    pub pk: Option<PathBuf>,
    pub kek: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub dbx: Option<PathBuf>,
    /// The `UefiData` blob (binary, or its base64 as RegisterImage takes it) whose PK, KEK,
    /// db and dbx the firmware starts with; not together with the ESL files.
    pub uefi_data: Option<Input>,
    /// Explicit Secure Boot state; default: on exactly when a PK is given.
    pub secure_boot: Option<bool>,
}

/// An input to a prediction: a file to read, or bytes the caller read (and checked: a
/// verified release's `uefi-data.bin`) and names for messages.
#[derive(Debug, Clone)]
pub enum Input {
    File(PathBuf),
    Bytes { name: String, bytes: Vec<u8> },
}

impl Input {
    fn name(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Bytes { name, .. } => name.clone(),
        }
    }

    fn read(&self) -> Result<Vec<u8>, MeasureError> {
        match self {
            Input::File(p) => std::fs::read(p).map_err(|source| MeasureError::Io {
                file: p.display().to_string(),
                source,
            }),
            Input::Bytes { bytes, .. } => Ok(bytes.clone()),
        }
    }
}

/// The contents of PK, KEK, db and dbx (None: the variable does not exist).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecureBootVariables {
    pub pk: Option<Vec<u8>>,
    pub kek: Option<Vec<u8>>,
    pub db: Option<Vec<u8>>,
    pub dbx: Option<Vec<u8>>,
}

impl MeasureOptions {
    /// The variables from the ESL files or the UefiData blob, each checked to be EFI
    /// signature lists.
    pub fn variables(&self) -> Result<SecureBootVariables, MeasureError> {
        let files = [&self.pk, &self.kek, &self.db, &self.dbx];
        let Some(blob) = &self.uefi_data else {
            return Ok(SecureBootVariables {
                pk: opt_key(files[0])?,
                kek: opt_key(files[1])?,
                db: opt_key(files[2])?,
                dbx: opt_key(files[3])?,
            });
        };
        let file = blob.name();
        if files.iter().any(|f| f.is_some()) {
            return Err(MeasureError::Refused {
                file,
                message:
                    "a UefiData store holds PK, KEK, db and dbx: give it or the ESL files, not both"
                        .into(),
            });
        }
        let store = read_uefi_data(blob)?;
        let get = |name: &str, guid: &Guid| -> Result<Option<Vec<u8>>, MeasureError> {
            let Some(data) = store.data(name, guid) else {
                return Ok(None);
            };
            validate_esl(&format!("{file} ({name})"), data)?;
            Ok(Some(data.to_vec()))
        };
        Ok(SecureBootVariables {
            pk: get("PK", &EFI_GLOBAL_VARIABLE)?,
            kek: get("KEK", &EFI_GLOBAL_VARIABLE)?,
            db: get("db", &EFI_IMAGE_SECURITY_DATABASE)?,
            dbx: get("dbx", &EFI_IMAGE_SECURITY_DATABASE)?,
        })
    }
}

/// Reads a UefiData blob: the binary (starting with `AMZNUEFI`) or its base64 text.
fn read_uefi_data(input: &Input) -> Result<UefiVarStore, MeasureError> {
    let file = input.name();
    let bytes = input.read()?;
    UefiVarStore::from_file_bytes(bytes)
        .map(|(store, _)| store)
        .map_err(|e| MeasureError::Refused {
            file,
            message: format!("not an AMI UefiData variable store: {e}"),
        })
}

fn hexd(d: &BankDigests) -> Digests {
    Digests {
        sha256: hex::encode(d.sha256),
        sha384: hex::encode(d.sha384),
    }
}

/// Running PCR values in both banks.
#[derive(Debug, Clone)]
struct PcrValue {
    sha256: [u8; 32],
    sha384: [u8; 48],
}

impl PcrValue {
    fn zero() -> PcrValue {
        PcrValue {
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

/// The UEFI_VARIABLE_DATA structure the firmware hashes for a variable event.
pub fn variable_event_data(guid: &Guid, name: &str, data: &[u8]) -> Vec<u8> {
    let name16: Vec<u16> = name.encode_utf16().collect();
    let mut out = Vec::with_capacity(32 + name16.len() * 2 + data.len());
    out.extend_from_slice(guid.as_bytes());
    out.extend_from_slice(&(name16.len() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for c in name16 {
        out.extend_from_slice(&c.to_le_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Checks that bytes are a sequence of EFI_SIGNATURE_LISTs (the content of PK/KEK/db/dbx)
/// and returns how many lists there are.
pub fn validate_esl(file: &str, data: &[u8]) -> Result<usize, MeasureError> {
    esl::parse(data)
        .map(|lists| lists.len())
        .map_err(|e| MeasureError::Refused {
            file: file.to_owned(),
            message: e.to_string(),
        })
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
    uki: &ImageFile,
    layout: &PeLayout,
    name: &str,
) -> Result<Option<Vec<u8>>, MeasureError> {
    Ok(layout.read_section(uki, name, 64 * 1024)?)
}

/// Refuses a payload section no boot on this stub has proven zoa's prediction for (see
/// [`StubRules::proven_sections`]), saying what this stub does with it.
fn refuse_unproven_sections(
    layout: &PeLayout,
    rules: &StubRules,
    stub_version: &str,
) -> Result<(), String> {
    let Some(section) = layout.sections.iter().find(|s| {
        UKI_PAYLOAD_SECTIONS.contains(&s.name.as_str())
            && !rules.proven_sections.contains(&s.name.as_str())
    }) else {
        return Ok(());
    };
    let name = section.name.as_str();
    let what = if rules.pcr11_sections.contains(&name) {
        "measures it into PCR11 and acts on it"
    } else if rules.major >= 257 && [".dtbauto", ".hwids"].contains(&name) {
        "selects what it measures by it"
    } else {
        "does not know it (it would neither measure nor use it)"
    };
    Err(format!(
        "section {name}: systemd-stub {stub_version} {what}, and no boot has proven zoa's \
         prediction for an image holding it; refusing to guess (on this stub zoa predicts \
         images whose payload sections are among {})",
        rules.proven_sections.join(", ")
    ))
}

/// The sections a 257+ stub uses when started with no load options, as zoa's disks start
/// it: profile 0. In a multi-profile UKI the first `.profile` section ends the base
/// sections, and each `.profile` starts a profile that runs to the next one; the stub takes
/// the base sections and lets profile 0's sections (its `.profile` among them) replace
/// those of the same name. A UKI without `.profile` is all base. A payload section twice in
/// the base or in profile 0 is refused: which one a stub picks is not proven.
pub fn default_profile(sections: &[Section]) -> Result<Vec<Section>, String> {
    let starts: Vec<usize> = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name == ".profile")
        .map(|(i, _)| i)
        .collect();
    let end_of_base = starts.first().copied().unwrap_or(sections.len());
    let end_of_profile0 = starts.get(1).copied().unwrap_or(sections.len());
    let base = &sections[..end_of_base];
    let profile0 = &sections[end_of_base..end_of_profile0];
    for (part, part_sections) in [("the base", base), ("profile 0", profile0)] {
        for name in UKI_PAYLOAD_SECTIONS {
            if part_sections.iter().filter(|s| s.name == *name).count() > 1 {
                return Err(format!(
                    "section {name} appears more than once in {part}: which one the stub uses is \
                     not proven; refusing to guess"
                ));
            }
        }
    }
    let mut booted: Vec<Section> = base
        .iter()
        .filter(|s| !profile0.iter().any(|p| p.name == s.name))
        .cloned()
        .collect();
    booted.extend(profile0.iter().cloned());
    Ok(booted)
}

/// Predicts the PCRs of booting `uki` as the only boot option.
pub fn predict(uki: &ImageFile, opts: &MeasureOptions) -> Result<Measurements, MeasureError> {
    let file = uki.name().to_owned();
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
    if layout.section(".linux").is_none() {
        return Err(refuse("has no .linux section: not a UKI".into()));
    }
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
    refuse_unproven_sections(&layout, rules, &stub.version).map_err(refuse)?;
    let booted = default_profile(&layout.sections).map_err(refuse)?;
    let linux = booted
        .iter()
        .find(|s| s.name == ".linux")
        .ok_or_else(|| refuse("profile 0 and the base have no .linux section: not a UKI".into()))?
        .clone();
    let keys = opts.variables()?;
    let secure_boot = opts.secure_boot.unwrap_or(keys.pk.is_some());
    if secure_boot && keys.db.is_none() && !layout.is_signed() {
        // Only a db entry holding its hash could admit an unsigned image, and there is no db.
        return Err(refuse(
            "Secure Boot is on but the UKI is unsigned (and no db entry could hold its hash): the firmware would refuse to boot it"
                .into(),
        ));
    }

    // PCR11 sections in the stub's canonical order (zero-size sections are skipped, as the
    // stub treats them as absent).
    let mut measured: Vec<Section> = Vec::new();
    for name in rules.pcr11_sections {
        if let Some(s) = booted.iter().find(|s| s.name == *name) {
            if s.virtual_size > 0 {
                measured.push(s.clone());
            }
        }
    }
    // Payload sections the boot does not measure: those the stub skips, and the other
    // profiles' sections (empty ones count as absent, as the stub sees them).
    let unmeasured_sections: Vec<String> = layout
        .sections
        .iter()
        .filter(|s| {
            UKI_PAYLOAD_SECTIONS.contains(&s.name.as_str())
                && s.virtual_size > 0
                && !measured.iter().any(|m| m.header_offset == s.header_offset)
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
    let mut pcrs: BTreeMap<Pcr, PcrValue> = Pcr::PREDICTED
        .into_iter()
        .map(|p| (p, PcrValue::zero()))
        .collect();
    let mut record = |pcr: Pcr, event_type: &str, what: String, d: &BankDigests| {
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
        Pcr::PCR4,
        EV_EFI_ACTION,
        format!("\"{BOOT_OPTION_ACTION}\""),
        &BankDigests::of(BOOT_OPTION_ACTION.as_bytes()),
    );
    let separator = BankDigests::of(&[0, 0, 0, 0]);
    record(Pcr::PCR4, EV_SEPARATOR, "separator".into(), &separator);
    record(
        Pcr::PCR4,
        EV_EFI_BOOT_SERVICES_APPLICATION,
        "Authenticode of the UKI".into(),
        &digests[0],
    );
    if kernel_event {
        record(
            Pcr::PCR4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            format!("Authenticode of embedded kernel (.linux; systemd-stub {} starts it with LoadImage)", stub.major),
            &digests[digests.len() - 1],
        );
    }

    // PCR7: Secure Boot state and key databases, separator.
    let mut unpredicted = BTreeMap::new();
    let vars: [(Guid, &str, Vec<u8>); 5] = [
        (
            EFI_GLOBAL_VARIABLE,
            "SecureBoot",
            vec![u8::from(secure_boot)],
        ),
        (
            EFI_GLOBAL_VARIABLE,
            "PK",
            keys.pk.clone().unwrap_or_default(),
        ),
        (
            EFI_GLOBAL_VARIABLE,
            "KEK",
            keys.kek.clone().unwrap_or_default(),
        ),
        (
            EFI_IMAGE_SECURITY_DATABASE,
            "db",
            keys.db.clone().unwrap_or_default(),
        ),
        (
            EFI_IMAGE_SECURITY_DATABASE,
            "dbx",
            keys.dbx.clone().unwrap_or_default(),
        ),
    ];
    for (guid, name, data) in &vars {
        let d = BankDigests::of(&variable_event_data(guid, name, data));
        record(
            Pcr::PCR7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            format!("{name} ({} bytes)", data.len()),
            &d,
        );
    }
    record(Pcr::PCR7, EV_SEPARATOR, "separator".into(), &separator);
    if secure_boot && keys.db.is_some() {
        // The db entry that admits the UKI, measured when the firmware verifies it.
        let (db, dbx) = (&vars[3].2, &vars[4].2);
        let found = authority::authority(uki, db, dbx, &digests[0].sha256).map_err(refuse)?;
        record(
            Pcr::PCR7,
            EV_EFI_VARIABLE_AUTHORITY,
            found.what,
            &BankDigests::of(&variable_event_data(
                &EFI_IMAGE_SECURITY_DATABASE,
                "db",
                &found.signature_data,
            )),
        );
    } else if secure_boot {
        // Without db nothing says which entry admits the image (or whether one does).
        unpredicted.insert(
            Pcr::PCR7,
            "Secure Boot is on but no db was given: the EV_EFI_VARIABLE_AUTHORITY event (which db entry verifies the image) cannot be predicted".to_owned(),
        );
    }

    // PCR11: each measured section's name (with NUL) and data, in the stub's order.
    for (i, s) in measured.iter().enumerate() {
        let mut name = s.name.clone().into_bytes();
        name.push(0);
        record(
            Pcr::PCR11,
            EV_IPL,
            format!("section name {}", s.name),
            &BankDigests::of(&name),
        );
        record(
            Pcr::PCR11,
            EV_IPL,
            format!("section {} ({} bytes)", s.name, s.virtual_size),
            &digests[1 + i],
        );
    }

    let mut out_pcrs: BTreeMap<Pcr, Digests> =
        pcrs.iter().map(|(k, v)| (*k, v.digests())).collect();
    for k in unpredicted.keys() {
        out_pcrs.remove(k);
        events.retain(|e| e.pcr != *k);
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

fn opt_key(path: &Option<PathBuf>) -> Result<Option<Vec<u8>>, MeasureError> {
    match path {
        Some(p) => read_key_file(p).map(Some),
        None => Ok(None),
    }
}

/// Parses the headers of the kernel stored in the UKI's `.linux` section.
fn kernel_layout(uki: &ImageFile, linux: &Section) -> Result<PeLayout, MeasureError> {
    let file = format!("{} (.linux)", uki.name());
    let len = u64::from(linux.virtual_size);
    let head = uki
        .read_vec_at(
            u64::from(linux.raw_offset),
            len.min(MAX_HEADER_BYTES) as usize,
        )
        .map_err(|source| MeasureError::Io {
            file: file.clone(),
            source,
        })?;
    Ok(PeLayout::parse(&file, &head, len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_pcr7_sha384_is_the_published_value() {
        // Secure Boot off, empty variables: the SHA-384 PCR7 seen on EC2 and under OVMF.
        let mut pcr = PcrValue::zero();
        for (guid, name, data) in [
            (&EFI_GLOBAL_VARIABLE, "SecureBoot", vec![0u8]),
            (&EFI_GLOBAL_VARIABLE, "PK", vec![]),
            (&EFI_GLOBAL_VARIABLE, "KEK", vec![]),
            (&EFI_IMAGE_SECURITY_DATABASE, "db", vec![]),
            (&EFI_IMAGE_SECURITY_DATABASE, "dbx", vec![]),
        ] {
            pcr.extend(&BankDigests::of(&variable_event_data(guid, name, &data)));
        }
        pcr.extend(&BankDigests::of(&[0, 0, 0, 0]));
        let v = pcr.digests().sha384;
        assert!(v.starts_with("98441c7f") && v.ends_with("8b77af35"), "{v}");
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

    fn sections(names: &[&str]) -> Vec<Section> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| Section {
                name: (*name).into(),
                virtual_address: 0x1000 * (i as u32 + 1),
                virtual_size: 1,
                raw_offset: 0x200 * (i as u32 + 1),
                raw_size: 0x200,
                characteristics: 0,
                header_offset: 40 * i as u64,
            })
            .collect()
    }

    fn offsets(booted: &[Section]) -> Vec<(String, u64)> {
        booted
            .iter()
            .map(|s| (s.name.clone(), s.header_offset / 40))
            .collect()
    }

    #[test]
    fn profile_0_replaces_the_base_sections_it_has_and_profile_1_is_not_booted() {
        let table = sections(&[
            ".text", ".sbat", ".osrel", ".cmdline", ".linux", ".profile", ".cmdline", ".profile",
            ".cmdline", ".initrd",
        ]);
        let booted = offsets(&default_profile(&table).unwrap());
        let expected: Vec<(String, u64)> = [
            (".text", 0),
            (".sbat", 1),
            (".osrel", 2),
            (".linux", 4),
            (".profile", 5),
            (".cmdline", 6),
        ]
        .iter()
        .map(|(n, i)| ((*n).to_owned(), *i))
        .collect();
        assert_eq!(booted, expected);
        // Without .profile, everything is base.
        let plain = sections(&[".text", ".cmdline", ".linux"]);
        assert_eq!(default_profile(&plain).unwrap().len(), 3);
    }

    #[test]
    fn a_section_twice_in_the_base_or_profile_0_is_refused() {
        for names in [
            &[".cmdline", ".linux", ".cmdline"][..],
            &[".linux", ".profile", ".cmdline", ".cmdline"][..],
        ] {
            let err = default_profile(&sections(names)).unwrap_err();
            assert!(err.contains(".cmdline appears more than once"), "{err}");
        }
        // Twice in profile 1 is profile 1's business: profile 0 boots.
        let ok = sections(&[".linux", ".profile", ".profile", ".cmdline", ".cmdline"]);
        assert!(default_profile(&ok).is_ok());
    }

    #[test]
    fn every_buildable_stub_has_rules() {
        for major in crate::uefi::uki::SUPPORTED_STUB_VERSIONS {
            assert!(
                STUB_RULES.iter().any(|r| r.major == *major),
                "stub {major} builds but has no measurement rules"
            );
        }
    }
}
