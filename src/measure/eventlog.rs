//! Reading a TCG2 crypto-agile binary event log — the format of
//! `/sys/kernel/security/tpm0/binary_bios_measurements` — and replaying it to PCR values.
//!
//! The format is the TCG PC Client Platform Firmware Profile's: one legacy SHA-1-format
//! header event (`TCG_PCR_EVENT`) carrying the "Spec ID Event03" structure, which lists
//! the log's banks and their digest sizes, then `TCG_PCR_EVENT2` records with one digest
//! per bank. Every length in a log is untrusted input: reads are checked and sizes
//! bounded, so a corrupt or hostile log yields an error naming the event and byte offset,
//! never a panic or an unbounded allocation.

use sha2::{Digest, Sha256, Sha384, Sha512};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// TPM_ALG_SHA1.
pub const TPM_ALG_SHA1: u16 = 0x0004;
/// TPM_ALG_SHA256.
pub const TPM_ALG_SHA256: u16 = 0x000B;
/// TPM_ALG_SHA384 (the bank NitroTPM attestation documents and KMS policies use).
pub const TPM_ALG_SHA384: u16 = 0x000C;
/// TPM_ALG_SHA512.
pub const TPM_ALG_SHA512: u16 = 0x000D;
/// TPM_ALG_SM3_256.
pub const TPM_ALG_SM3_256: u16 = 0x0012;

/// Event type of informational events that are never extended into a PCR.
pub const EV_NO_ACTION: u32 = 0x3;
/// Event type of the separator between pre-boot and OS-present measurements.
pub const EV_SEPARATOR: u32 = 0x4;
const EV_ACTION: u32 = 0x5;
const EV_EVENT_TAG: u32 = 0x6;
const EV_S_CRTM_VERSION: u32 = 0x8;
const EV_POST_CODE: u32 = 0x1;
const EV_IPL: u32 = 0xD;
const EV_OMIT_BOOT_DEVICE_EVENTS: u32 = 0x12;
const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;
const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
const EV_EFI_ACTION: u32 = 0x8000_0007;
const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000A;
const EV_EFI_VARIABLE_BOOT2: u32 = 0x8000_000C;
const EV_EFI_GPT_EVENT2: u32 = 0x8000_000D;
const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00E0;

/// Largest event data accepted (16 MiB): far above any real event, small enough that a
/// corrupt size field cannot make the parser allocate without limit.
pub const MAX_EVENT_DATA: u32 = 16 << 20;
/// Most events accepted in one log; real logs hold a few hundred.
pub const MAX_EVENTS: usize = 1_000_000;
/// Most banks a Spec ID header may list; TPMs implement a handful of hash algorithms, and
/// the bound keeps per-event bank lookups cheap.
pub const MAX_ALGORITHMS: u32 = 32;
/// Event data at most this long is included verbatim (hex) in the JSON output.
const MAX_JSON_DATA: usize = 4096;
/// Longest text shown by [`LogEvent::describe`], so one event stays one readable line.
const MAX_TEXT_CHARS: usize = 120;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const LEGACY_SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event00\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
/// pcrIndex, eventType, SHA-1 digest, eventSize of the legacy header event.
const LEGACY_HEADER_LEN: usize = 4 + 4 + 20 + 4;
/// pcrIndex, eventType, digest count of a `TCG_PCR_EVENT2`.
const EVENT2_HEADER_LEN: usize = 12;
/// `EFI_PARTITION_TABLE_HEADER` as firmware copies it into `UEFI_GPT_DATA`.
const GPT_HEADER_LEN: usize = 92;

const EVENT_TYPES: &[(u32, &str)] = &[
    (0x0, "EV_PREBOOT_CERT"),
    (0x1, "EV_POST_CODE"),
    (0x2, "EV_UNUSED"),
    (0x3, "EV_NO_ACTION"),
    (0x4, "EV_SEPARATOR"),
    (0x5, "EV_ACTION"),
    (0x6, "EV_EVENT_TAG"),
    (0x7, "EV_S_CRTM_CONTENTS"),
    (0x8, "EV_S_CRTM_VERSION"),
    (0x9, "EV_CPU_MICROCODE"),
    (0xA, "EV_PLATFORM_CONFIG_FLAGS"),
    (0xB, "EV_TABLE_OF_DEVICES"),
    (0xC, "EV_COMPACT_HASH"),
    (0xD, "EV_IPL"),
    (0xE, "EV_IPL_PARTITION_DATA"),
    (0xF, "EV_NONHOST_CODE"),
    (0x10, "EV_NONHOST_CONFIG"),
    (0x11, "EV_NONHOST_INFO"),
    (0x12, "EV_OMIT_BOOT_DEVICE_EVENTS"),
    (0x8000_0001, "EV_EFI_VARIABLE_DRIVER_CONFIG"),
    (0x8000_0002, "EV_EFI_VARIABLE_BOOT"),
    (0x8000_0003, "EV_EFI_BOOT_SERVICES_APPLICATION"),
    (0x8000_0004, "EV_EFI_BOOT_SERVICES_DRIVER"),
    (0x8000_0005, "EV_EFI_RUNTIME_SERVICES_DRIVER"),
    (0x8000_0006, "EV_EFI_GPT_EVENT"),
    (0x8000_0007, "EV_EFI_ACTION"),
    (0x8000_0008, "EV_EFI_PLATFORM_FIRMWARE_BLOB"),
    (0x8000_0009, "EV_EFI_HANDOFF_TABLES"),
    (0x8000_000A, "EV_EFI_PLATFORM_FIRMWARE_BLOB2"),
    (0x8000_000B, "EV_EFI_HANDOFF_TABLES2"),
    (0x8000_000C, "EV_EFI_VARIABLE_BOOT2"),
    (0x8000_000D, "EV_EFI_GPT_EVENT2"),
    (0x8000_0010, "EV_EFI_HCRTM_EVENT"),
    (0x8000_00E0, "EV_EFI_VARIABLE_AUTHORITY"),
    (0x8000_00E1, "EV_EFI_SPDM_FIRMWARE_BLOB"),
    (0x8000_00E2, "EV_EFI_SPDM_FIRMWARE_CONFIG"),
];

/// Why an event log could not be read. Event errors name the event's index (0 = the
/// first event after the Spec ID header) and its byte offset in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    /// The log does not start with a crypto-agile Spec ID Event03 header event.
    #[error("not a crypto-agile TCG2 log: {reason}")]
    NotCryptoAgile {
        /// What the first event is instead.
        reason: String,
    },
    /// The Spec ID header event is recognised but malformed.
    #[error("Spec ID header event, byte {at}: {message}")]
    SpecId {
        /// Byte offset of the offending field.
        at: u64,
        /// What is wrong.
        message: String,
    },
    /// A field of an event runs past the end of the log.
    #[error(
        "event #{index} at byte {offset}: truncated: its {what} ({needed} bytes at byte {at}) \
         runs past the end of the log ({len} bytes)"
    )]
    Truncated {
        /// Index of the event.
        index: usize,
        /// Byte offset of the event.
        offset: u64,
        /// The field being read.
        what: &'static str,
        /// Byte offset of the field.
        at: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Length of the whole log.
        len: u64,
    },
    /// An event carries a digest for an algorithm the Spec ID header does not list.
    #[error(
        "event #{index} at byte {offset}: digest algorithm id 0x{alg:04x} (byte {at}) is not \
         one of the log's banks ({banks})"
    )]
    UnknownAlgorithm {
        /// Index of the event.
        index: usize,
        /// Byte offset of the event.
        offset: u64,
        /// Byte offset of the algorithm id.
        at: u64,
        /// The algorithm id.
        alg: u16,
        /// The banks the Spec ID header lists.
        banks: String,
    },
    /// An event's fields are inconsistent or out of bounds.
    #[error("event #{index} at byte {offset}: {message}")]
    Malformed {
        /// Index of the event.
        index: usize,
        /// Byte offset of the event.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// The log holds more events than any real firmware writes.
    #[error("event #{index} at byte {offset}: more than {limit} events; refusing the log")]
    TooManyEvents {
        /// Index of the first event over the limit.
        index: usize,
        /// Its byte offset.
        offset: u64,
        /// The limit.
        limit: usize,
    },
    /// Non-zero bytes follow the all-zero header that ends a padded log.
    #[error(
        "byte {at}: non-zero data after the zero padding that starts at byte {padding} \
         (padding must run to the end of the log)"
    )]
    DataAfterPadding {
        /// Where the zero padding starts.
        padding: u64,
        /// The first non-zero byte after it.
        at: u64,
    },
}

/// The Spec ID Event03 header: which banks the log records and their digest sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    /// TCG platform class (0 = client, 1 = server).
    pub platform_class: u32,
    /// (major, minor, errata) of the TCG specification the firmware follows.
    pub spec_version: (u8, u8, u8),
    /// Size code of UINTN in the firmware's structures: 1 = 32-bit, 2 = 64-bit.
    pub uintn_size: u8,
    /// The banks, in header order: (algorithm id, digest size in bytes).
    pub algorithms: Vec<(u16, u16)>,
}

impl SpecId {
    /// Digest size of `alg` in this log, or `None` when the log has no such bank.
    pub fn digest_size(&self, alg: u16) -> Option<usize> {
        self.algorithms
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, size)| usize::from(*size))
    }

    fn bank_names(&self) -> String {
        let names: Vec<String> = self.algorithms.iter().map(|(a, _)| alg_name(*a)).collect();
        names.join(", ")
    }
}

/// One `TCG_PCR_EVENT2` record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Position in the log; 0 is the first event after the Spec ID header.
    pub index: usize,
    /// Byte offset of the event in the log.
    pub offset: u64,
    /// The PCR the event extends.
    pub pcr: u32,
    /// The raw event type (see [`event_type_name`]).
    pub event_type: u32,
    /// (algorithm id, digest), in log order.
    pub digests: Vec<(u16, Vec<u8>)>,
    /// The event data.
    pub data: Vec<u8>,
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// The Spec ID header.
    pub spec: SpecId,
    /// Every event after the header, in log order.
    pub events: Vec<LogEvent>,
}

/// The TCG name of an event type, e.g. `EV_SEPARATOR`; `None` for unknown types.
pub fn event_type_name(t: u32) -> Option<&'static str> {
    EVENT_TYPES
        .iter()
        .find(|(value, _)| *value == t)
        .map(|(_, name)| *name)
}

/// The conventional name of a TPM algorithm id ("sha256"), or "alg 0x1234".
pub fn alg_name(alg: u16) -> String {
    match alg {
        TPM_ALG_SHA1 => "sha1".into(),
        TPM_ALG_SHA256 => "sha256".into(),
        TPM_ALG_SHA384 => "sha384".into(),
        TPM_ALG_SHA512 => "sha512".into(),
        TPM_ALG_SM3_256 => "sm3_256".into(),
        other => format!("alg 0x{other:04x}"),
    }
}

/// The digest size the TPM specification fixes for a known algorithm.
fn known_digest_size(alg: u16) -> Option<u16> {
    match alg {
        TPM_ALG_SHA1 => Some(20),
        TPM_ALG_SHA256 | TPM_ALG_SM3_256 => Some(32),
        TPM_ALG_SHA384 => Some(48),
        TPM_ALG_SHA512 => Some(64),
        _ => None,
    }
}

/// `H(pcr || digest)` in bank `alg`; `None` for banks zoa cannot hash (sha1, sm3 and
/// unknown ids have no implementation among zoa's dependencies).
fn extend(alg: u16, pcr: &[u8], digest: &[u8]) -> Option<Vec<u8>> {
    fn h<D: Digest>(pcr: &[u8], digest: &[u8]) -> Vec<u8> {
        D::new()
            .chain_update(pcr)
            .chain_update(digest)
            .finalize()
            .to_vec()
    }
    match alg {
        TPM_ALG_SHA256 => Some(h::<Sha256>(pcr, digest)),
        TPM_ALG_SHA384 => Some(h::<Sha384>(pcr, digest)),
        TPM_ALG_SHA512 => Some(h::<Sha512>(pcr, digest)),
        _ => None,
    }
}

fn can_replay(alg: u16) -> bool {
    extend(alg, &[], &[]).is_some()
}

/// Positions are `usize` in memory and `u64` in messages; widening never loses bits on
/// the platforms Rust supports, and saturating keeps this free of panics anyway.
fn at(pos: usize) -> u64 {
    u64::try_from(pos).unwrap_or(u64::MAX)
}

/// A size field read from the log as a `usize`; an unrepresentable size saturates, so the
/// following checked read reports it as running past the end of the log.
fn size_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A read that would pass the end of its buffer.
#[derive(Debug)]
struct Short {
    what: &'static str,
    at: usize,
    needed: usize,
}

/// A cursor that never reads past the end of its buffer.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Short> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or(Short {
                what,
                at: self.pos,
                needed: n,
            })?;
        self.pos = self.pos.saturating_add(n);
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Short> {
        let at = self.pos;
        let slice = self.take(N, what)?;
        <[u8; N]>::try_from(slice).map_err(|_| Short {
            what,
            at,
            needed: N,
        })
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Short> {
        self.array::<1>(what).map(|[b]| b)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Short> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Short> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, Short> {
        self.array(what).map(u64::from_le_bytes)
    }
}

/// Parses a TCG2 crypto-agile binary event log (`binary_bios_measurements`).
///
/// Zero padding after the last event is accepted (it ends at an all-zero event header);
/// anything else that is not a complete event is an error.
pub fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
    parse_limited(bytes, MAX_EVENTS)
}

fn parse_limited(bytes: &[u8], max_events: usize) -> Result<EventLog, EventLogError> {
    let mut r = Reader::new(bytes);
    let spec = parse_spec_id(&mut r)?;
    let mut events = Vec::new();
    loop {
        let rest = r.rest();
        if rest.is_empty() {
            break;
        }
        let header = rest.get(..EVENT2_HEADER_LEN).unwrap_or(rest);
        if header.iter().all(|&b| b == 0) {
            // sysfs and ACPI log areas may be zero-filled past the last event. Events
            // after the padding would be silently dropped, so they are refused instead.
            if let Some(i) = rest.iter().position(|&b| b != 0) {
                return Err(EventLogError::DataAfterPadding {
                    padding: at(r.pos),
                    at: at(r.pos.saturating_add(i)),
                });
            }
            break;
        }
        let index = events.len();
        if index >= max_events {
            return Err(EventLogError::TooManyEvents {
                index,
                offset: at(r.pos),
                limit: max_events,
            });
        }
        events.push(parse_event(&mut r, &spec, index)?);
    }
    Ok(EventLog { spec, events })
}

/// Reads the legacy-format first event and the Spec ID Event03 structure in its data.
fn parse_spec_id(r: &mut Reader<'_>) -> Result<SpecId, EventLogError> {
    let len = r.bytes.len();
    if len < LEGACY_HEADER_LEN {
        return Err(EventLogError::NotCryptoAgile {
            reason: format!(
                "{len} bytes is shorter than the first event's header ({LEGACY_HEADER_LEN} bytes)"
            ),
        });
    }
    let short = |s: Short| EventLogError::SpecId {
        at: at(s.at),
        message: format!(
            "truncated: the {} ({} bytes) runs past the end of the log ({len} bytes)",
            s.what, s.needed
        ),
    };
    r.u32("PCR index").map_err(short)?;
    let event_type = r.u32("event type").map_err(short)?;
    r.take(20, "SHA-1 digest").map_err(short)?;
    let size_at = r.pos;
    let size = r.u32("event size").map_err(short)?;
    if event_type != EV_NO_ACTION {
        return Err(EventLogError::NotCryptoAgile {
            reason: format!(
                "the first event is {}, not the EV_NO_ACTION Spec ID event",
                type_label(event_type)
            ),
        });
    }
    if size > MAX_EVENT_DATA {
        return Err(EventLogError::SpecId {
            at: at(size_at),
            message: format!("event size {size} exceeds the {MAX_EVENT_DATA}-byte limit"),
        });
    }
    let data_at = r.pos;
    let data = r
        .take(size_of(u64::from(size)), "event data")
        .map_err(short)?;
    let signature = data.get(..SPEC_ID_SIGNATURE.len()).unwrap_or(data);
    if signature == LEGACY_SPEC_ID_SIGNATURE {
        return Err(EventLogError::NotCryptoAgile {
            reason: "a SHA-1-only log (Spec ID Event00); zoa reads crypto-agile (Event03) logs"
                .into(),
        });
    }
    if signature != SPEC_ID_SIGNATURE {
        return Err(EventLogError::NotCryptoAgile {
            reason: "the first event's data does not start with \"Spec ID Event03\"".into(),
        });
    }

    // Errors inside the structure point at the field, relative to the whole log.
    let mut d = Reader::new(data);
    let field = |s: Short| EventLogError::SpecId {
        at: at(data_at.saturating_add(s.at)),
        message: format!(
            "the {} ({} bytes) runs past the end of the Spec ID event's {size} bytes of data",
            s.what, s.needed
        ),
    };
    d.take(SPEC_ID_SIGNATURE.len(), "signature")
        .map_err(field)?;
    let platform_class = d.u32("platform class").map_err(field)?;
    let minor = d.u8("spec version minor").map_err(field)?;
    let major = d.u8("spec version major").map_err(field)?;
    let errata = d.u8("spec errata").map_err(field)?;
    let uintn_size = d.u8("UINTN size").map_err(field)?;
    let count_at = data_at.saturating_add(d.pos);
    let count = d.u32("number of algorithms").map_err(field)?;
    if count == 0 || count > MAX_ALGORITHMS {
        return Err(EventLogError::SpecId {
            at: at(count_at),
            message: format!("the log lists {count} PCR banks (expected 1 to {MAX_ALGORITHMS})"),
        });
    }
    let mut algorithms: Vec<(u16, u16)> = Vec::new();
    for _ in 0..count {
        let entry_at = at(data_at.saturating_add(d.pos));
        let alg = d.u16("algorithm id").map_err(field)?;
        let digest_size = d.u16("digest size").map_err(field)?;
        let problem = if algorithms.iter().any(|(a, _)| *a == alg) {
            Some(format!("{} is listed twice", alg_name(alg)))
        } else if digest_size == 0 {
            Some(format!("{} has a digest size of 0", alg_name(alg)))
        } else {
            match known_digest_size(alg) {
                Some(expected) if expected != digest_size => Some(format!(
                    "{} has digest size {digest_size}, but that algorithm's digests are {expected} bytes",
                    alg_name(alg)
                )),
                _ => None,
            }
        };
        if let Some(message) = problem {
            return Err(EventLogError::SpecId {
                at: entry_at,
                message,
            });
        }
        algorithms.push((alg, digest_size));
    }
    let vendor_size = d.u8("vendor info size").map_err(field)?;
    d.take(usize::from(vendor_size), "vendor info")
        .map_err(field)?;
    Ok(SpecId {
        platform_class,
        spec_version: (major, minor, errata),
        uintn_size,
        algorithms,
    })
}

fn parse_event(r: &mut Reader<'_>, spec: &SpecId, index: usize) -> Result<LogEvent, EventLogError> {
    let offset = r.pos;
    let len = r.bytes.len();
    let short = |s: Short| EventLogError::Truncated {
        index,
        offset: at(offset),
        what: s.what,
        at: at(s.at),
        needed: at(s.needed),
        len: at(len),
    };
    let malformed = |message: String| EventLogError::Malformed {
        index,
        offset: at(offset),
        message,
    };
    let pcr = r.u32("PCR index").map_err(short)?;
    let event_type = r.u32("event type").map_err(short)?;
    let count = r.u32("digest count").map_err(short)?;
    if size_of(u64::from(count)) > spec.algorithms.len() {
        return Err(malformed(format!(
            "{count} digests, but the log has only {} bank(s) ({})",
            spec.algorithms.len(),
            spec.bank_names()
        )));
    }
    let mut digests: Vec<(u16, Vec<u8>)> = Vec::with_capacity(spec.algorithms.len());
    for _ in 0..count {
        let alg_at = r.pos;
        let alg = r.u16("digest algorithm id").map_err(short)?;
        let Some(digest_size) = spec.digest_size(alg) else {
            return Err(EventLogError::UnknownAlgorithm {
                index,
                offset: at(offset),
                at: at(alg_at),
                alg,
                banks: spec.bank_names(),
            });
        };
        if digests.iter().any(|(a, _)| *a == alg) {
            return Err(malformed(format!("two {} digests", alg_name(alg))));
        }
        let digest = r.take(digest_size, "digest").map_err(short)?;
        digests.push((alg, digest.to_vec()));
    }
    let size = r.u32("event data size").map_err(short)?;
    if size > MAX_EVENT_DATA {
        return Err(malformed(format!(
            "event data size {size} exceeds the {MAX_EVENT_DATA}-byte limit"
        )));
    }
    let data = r
        .take(size_of(u64::from(size)), "event data")
        .map_err(short)?;
    Ok(LogEvent {
        index,
        offset: at(offset),
        pcr,
        event_type,
        digests,
        data: data.to_vec(),
    })
}

/// The type's TCG name, or its value in hex when the type is unknown.
fn type_label(t: u32) -> String {
    event_type_name(t).map_or_else(|| format!("0x{t:08x}"), str::to_owned)
}

impl LogEvent {
    /// This event's digest in bank `alg`, if it has one.
    pub fn digest(&self, alg: u16) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }

    /// The TCG name of the event type (`EV_EFI_ACTION`), or `0x…` hex for unknown types.
    pub fn type_name(&self) -> String {
        type_label(self.event_type)
    }

    /// Whether the event extends its PCR (every event except EV_NO_ACTION does).
    pub fn extends(&self) -> bool {
        self.event_type != EV_NO_ACTION
    }

    /// The locality of an EV_NO_ACTION StartupLocality event in PCR0, which sets PCR0's
    /// initial value.
    pub fn startup_locality(&self) -> Option<u8> {
        if self.pcr != 0 || self.event_type != EV_NO_ACTION {
            return None;
        }
        let rest = self.data.strip_prefix(STARTUP_LOCALITY_SIGNATURE)?;
        rest.first().copied()
    }

    /// A one-line description of the event data for people, e.g.
    /// `8be4df61-93ca-11d2-aa0d-00e098032b8c SecureBoot (1 byte)`.
    pub fn describe(&self) -> String {
        let data = self.data.as_slice();
        let decoded = match self.event_type {
            EV_EFI_VARIABLE_DRIVER_CONFIG
            | EV_EFI_VARIABLE_BOOT
            | EV_EFI_VARIABLE_BOOT2
            | EV_EFI_VARIABLE_AUTHORITY => Some(describe_variable(data).unwrap_or_else(|| {
                format!("malformed UEFI variable data ({})", bytes(data.len()))
            })),
            EV_EFI_ACTION
            | EV_ACTION
            | EV_IPL
            | EV_S_CRTM_VERSION
            | EV_POST_CODE
            | EV_OMIT_BOOT_DEVICE_EVENTS => as_text(data).map(|t| format!("\"{t}\"")),
            EV_SEPARATOR => Some(match data {
                [0, 0, 0, 0] => "separator".to_owned(),
                [1, 0, 0, 0] => "error separator".to_owned(),
                _ => format!("separator with {} of data", bytes(data.len())),
            }),
            EV_EFI_BOOT_SERVICES_APPLICATION
            | EV_EFI_BOOT_SERVICES_DRIVER
            | EV_EFI_RUNTIME_SERVICES_DRIVER => describe_image(data),
            EV_EFI_GPT_EVENT | EV_EFI_GPT_EVENT2 => describe_gpt(data),
            EV_EVENT_TAG => describe_tagged(data),
            EV_EFI_PLATFORM_FIRMWARE_BLOB => describe_blob(data),
            EV_EFI_PLATFORM_FIRMWARE_BLOB2 => describe_blob2(data),
            EV_NO_ACTION => describe_no_action(self),
            _ => None,
        };
        decoded.unwrap_or_else(|| bytes(data.len()))
    }
}

/// "1 byte", "N bytes".
fn bytes(n: usize) -> String {
    plural(at(n), "byte")
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// A GUID in its registry form; the first three fields are stored little-endian.
fn guid_string(g: [u8; 16]) -> String {
    let [a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, e0, e1, e2, e3, e4, e5] = g;
    format!(
        "{:08x}-{:04x}-{:04x}-{d0:02x}{d1:02x}-{e0:02x}{e1:02x}{e2:02x}{e3:02x}{e4:02x}{e5:02x}",
        u32::from_le_bytes([a0, a1, a2, a3]),
        u16::from_le_bytes([b0, b1]),
        u16::from_le_bytes([c0, c1]),
    )
}

fn utf16_units(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .filter_map(|c| <[u8; 2]>::try_from(c).ok())
        .map(u16::from_le_bytes)
        .collect()
}

/// UTF-16LE text up to its first NUL (firmware strings are NUL-terminated).
fn utf16_string(b: &[u8]) -> String {
    let units = utf16_units(b);
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    String::from_utf16_lossy(units.get(..end).unwrap_or_default())
}

/// The data as text when it is printable ASCII or UTF-16LE (ignoring trailing NULs),
/// shortened to [`MAX_TEXT_CHARS`].
fn as_text(data: &[u8]) -> Option<String> {
    let end = data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i.saturating_add(1));
    let trimmed = data.get(..end).unwrap_or_default();
    if trimmed.is_empty() {
        return None;
    }
    let text = if trimmed.iter().all(|b| (0x20..0x7f).contains(b)) {
        trimmed.iter().copied().map(char::from).collect::<String>()
    } else if data.len().is_multiple_of(2) {
        let units = utf16_units(data);
        let end = units
            .iter()
            .rposition(|&u| u != 0)
            .map_or(0, |i| i.saturating_add(1));
        let text: String = char::decode_utf16(units.get(..end).unwrap_or_default().iter().copied())
            .collect::<Result<_, _>>()
            .ok()?;
        if text.is_empty() || text.chars().any(char::is_control) {
            return None;
        }
        text
    } else {
        return None;
    };
    if text.chars().count() > MAX_TEXT_CHARS {
        let short: String = text.chars().take(MAX_TEXT_CHARS).collect();
        Some(format!("{short}…"))
    } else {
        Some(text)
    }
}

/// `UEFI_VARIABLE_DATA`: GUID, name length (chars), data length, UTF-16 name, data.
fn describe_variable(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let guid = r.array::<16>("variable GUID").ok()?;
    let name_chars = r.u64("name length").ok()?;
    let data_len = r.u64("data length").ok()?;
    let name = r.take(size_of(name_chars.checked_mul(2)?), "name").ok()?;
    r.take(size_of(data_len), "variable data").ok()?;
    Some(format!(
        "{} {} ({})",
        guid_string(guid),
        utf16_string(name),
        plural(data_len, "byte")
    ))
}

/// `UEFI_IMAGE_LOAD_EVENT`: location, length, link-time address, device path.
fn describe_image(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    r.u64("image location").ok()?;
    let length = r.u64("image length").ok()?;
    r.u64("link-time address").ok()?;
    let path_len = r.u64("device path length").ok()?;
    let path = r.take(size_of(path_len), "device path").ok()?;
    let image = format!("image of {}", plural(length, "byte"));
    Some(match render_device_path(path) {
        Some(rendered) => format!("{image} from {rendered}"),
        None if path.is_empty() => image,
        None => format!("{image}, device path of {}", bytes(path.len())),
    })
}

/// The parts of a device path people recognise: firmware volumes and files, and the file
/// path (which UEFI allows to be split over several nodes). `None` when there are none.
fn render_device_path(path: &[u8]) -> Option<String> {
    let mut r = Reader::new(path);
    let mut parts: Vec<String> = Vec::new();
    let mut in_file_path = false;
    while !r.rest().is_empty() {
        let kind = r.u8("node type").ok()?;
        let subtype = r.u8("node subtype").ok()?;
        let node_len = r.u16("node length").ok()?;
        let body_len = usize::from(node_len).checked_sub(4)?;
        let body = r.take(body_len, "node").ok()?;
        let guid = body.get(..16).and_then(|g| <[u8; 16]>::try_from(g).ok());
        match (kind, subtype, guid) {
            // End of this instance or of the whole path.
            (0x7f, _, _) => break,
            (4, 4, _) => {
                let piece = utf16_string(body);
                match parts.last_mut() {
                    Some(last) if in_file_path => last.push_str(&piece),
                    _ => parts.push(piece),
                }
                in_file_path = true;
                continue;
            }
            // Vendor-defined media, e.g. the node systemd-stub gives the kernel it loads.
            (4, 3, Some(g)) => parts.push(format!("VenMedia({})", guid_string(g))),
            (4, 6, Some(g)) => parts.push(format!("FvFile({})", guid_string(g))),
            (4, 7, Some(g)) => parts.push(format!("FvVol({})", guid_string(g))),
            _ => {}
        }
        in_file_path = false;
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// `UEFI_GPT_DATA`: the partition table header, a UINTN partition count, the entries.
fn describe_gpt(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let header = r.take(GPT_HEADER_LEN, "GPT header").ok()?;
    let entry_size = header
        .get(84..88)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| u64::from(u32::from_le_bytes(b)))?;
    let rest = at(r.rest().len());
    // UINTN is 8 bytes on 64-bit firmware and 4 on 32-bit; accept whichever makes the
    // entries fill the rest of the data exactly.
    let count64 = r
        .rest()
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes);
    let count32 = r
        .rest()
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| u64::from(u32::from_le_bytes(b)));
    let fits = |count: u64, width: u64| {
        count
            .checked_mul(entry_size)
            .and_then(|n| n.checked_add(width))
            == Some(rest)
    };
    let count = match (count64, count32) {
        (Some(n), _) if fits(n, 8) => n,
        (_, Some(n)) if fits(n, 4) => n,
        _ => return None,
    };
    Some(format!("GPT with {}", plural(count, "partition")))
}

/// `TCG_PCClientTaggedEvent`: tag id, size, data (Linux tags its initrd and load options).
fn describe_tagged(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let id = r.u32("tag id").ok()?;
    let size = r.u32("tag data size").ok()?;
    let body = r.take(size_of(u64::from(size)), "tag data").ok()?;
    Some(match as_text(body) {
        Some(text) => format!("tag 0x{id:08x} \"{text}\""),
        None => format!("tag 0x{id:08x} ({})", bytes(body.len())),
    })
}

/// `UEFI_PLATFORM_FIRMWARE_BLOB`: base address and length.
fn describe_blob(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let base = r.u64("blob base").ok()?;
    let length = r.u64("blob length").ok()?;
    Some(format!(
        "firmware blob of {} at 0x{base:x}",
        plural(length, "byte")
    ))
}

/// `UEFI_PLATFORM_FIRMWARE_BLOB2`: description, base address and length.
fn describe_blob2(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let desc_len = r.u8("description size").ok()?;
    let desc = r.take(usize::from(desc_len), "description").ok()?;
    let base = r.u64("blob base").ok()?;
    let length = r.u64("blob length").ok()?;
    let what = as_text(desc).map_or_else(|| "firmware blob".to_owned(), |t| format!("\"{t}\""));
    Some(format!(
        "{what} of {} at 0x{base:x}",
        plural(length, "byte")
    ))
}

/// EV_NO_ACTION events start with a 16-byte NUL-padded signature naming their kind.
fn describe_no_action(e: &LogEvent) -> Option<String> {
    if let Some(locality) = e.startup_locality() {
        return Some(format!("StartupLocality {locality}"));
    }
    let signature = e.data.get(..16)?;
    let name = as_text(signature)?;
    Some(format!("{name} ({})", bytes(e.data.len())))
}

impl EventLog {
    /// Replays the log: per PCR and bank, the value the TPM holds after every event.
    ///
    /// PCRs start at zero (PCR0 at `0…0L` after a StartupLocality event of locality L);
    /// EV_NO_ACTION events are skipped; every other event extends `H(pcr || digest)`.
    /// Only PCRs with extending events appear. A bank is left out where it cannot be
    /// computed — zoa has no SHA-1 or SM3, and a bank some event lacks a digest for
    /// would come out wrong — rather than reporting a value the TPM does not hold.
    pub fn replay(&self) -> BTreeMap<u32, BTreeMap<u16, Vec<u8>>> {
        // The TPM applies the startup locality at TPM2_Startup, before any extend; the
        // specification puts the event before all PCR0 events.
        let locality = self.events.iter().find_map(LogEvent::startup_locality);
        let mut pcrs: BTreeMap<u32, BTreeMap<u16, Vec<u8>>> = BTreeMap::new();
        let mut incomplete: BTreeSet<(u32, u16)> = BTreeSet::new();
        for event in self.events.iter().filter(|e| e.extends()) {
            let banks = pcrs.entry(event.pcr).or_insert_with(|| {
                self.spec
                    .algorithms
                    .iter()
                    .filter(|(alg, _)| can_replay(*alg))
                    .map(|&(alg, size)| {
                        let mut initial = vec![0u8; usize::from(size)];
                        if let (0, Some(l), Some(last)) = (event.pcr, locality, initial.last_mut())
                        {
                            *last = l;
                        }
                        (alg, initial)
                    })
                    .collect()
            });
            for (alg, value) in banks.iter_mut() {
                match event.digest(*alg).and_then(|d| extend(*alg, value, d)) {
                    Some(next) => *value = next,
                    None => {
                        incomplete.insert((event.pcr, *alg));
                    }
                }
            }
        }
        for (pcr, alg) in incomplete {
            if let Some(banks) = pcrs.get_mut(&pcr) {
                banks.remove(&alg);
            }
        }
        pcrs
    }

    /// The events that extend `pcr`, in log order (EV_NO_ACTION events excluded).
    pub fn events_for_pcr(&self, pcr: u32) -> impl Iterator<Item = &LogEvent> {
        self.events
            .iter()
            .filter(move |e| e.pcr == pcr && e.extends())
    }

    fn header_line(&self) -> String {
        let (major, minor, errata) = self.spec.spec_version;
        let uintn = match self.spec.uintn_size {
            1 => "32-bit UINTN".to_owned(),
            2 => "64-bit UINTN".to_owned(),
            other => format!("UINTN size code {other}"),
        };
        let banks: Vec<String> = self
            .spec
            .algorithms
            .iter()
            .map(|(a, _)| alg_name(*a))
            .collect();
        format!(
            "TCG2 event log: spec {major}.{minor} errata {errata}, platform class {}, {uintn}, banks {}; {}",
            self.spec.platform_class,
            banks.join(" "),
            plural(at(self.events.len()), "event")
        )
    }

    /// The human output of `zoa eventlog FILE`: a header line, one line per event, then
    /// the replayed value of every PCR that has events, per bank, in full.
    pub fn render_text(&self) -> String {
        let mut out = self.header_line();
        out.push('\n');
        for e in &self.events {
            let digests: Vec<String> = e
                .digests
                .iter()
                .map(|(alg, d)| {
                    let hex = hex::encode(d);
                    let short = hex.get(..16).unwrap_or(&hex);
                    let ellipsis = if hex.len() > 16 { "…" } else { "" };
                    format!("{}:{short}{ellipsis}", alg_name(*alg))
                })
                .collect();
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "#{} PCR{} {}  {}  {}",
                e.index,
                e.pcr,
                e.type_name(),
                digests.join(" "),
                e.describe()
            );
        }
        let replayed = self.replay();
        let with_events: BTreeSet<u32> = self
            .events
            .iter()
            .filter(|e| e.extends())
            .map(|e| e.pcr)
            .collect();
        if !with_events.is_empty() {
            out.push_str("Replayed PCRs:\n");
        }
        for pcr in with_events {
            let label = format!("PCR{pcr}");
            for (i, (alg, _)) in self.spec.algorithms.iter().enumerate() {
                let lead = if i == 0 { label.as_str() } else { "" };
                let value = match replayed.get(&pcr).and_then(|banks| banks.get(alg)) {
                    Some(v) => hex::encode(v),
                    None if !can_replay(*alg) => {
                        "not replayed (zoa has no implementation of this hash)".into()
                    }
                    None => format!(
                        "not replayed (an event lacks its {} digest)",
                        alg_name(*alg)
                    ),
                };
                let _ = writeln!(out, "{lead:<6}{}:{value}", alg_name(*alg));
            }
        }
        out
    }

    /// The data of `zoa eventlog FILE --json`: the Spec ID header, every event (with its
    /// data in hex up to 4 KiB, else its size) and the replayed PCRs as
    /// `{"<n>": {"sha256": hex, "sha384": hex}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let (major, minor, errata) = self.spec.spec_version;
        let algorithms: Vec<serde_json::Value> = self
            .spec
            .algorithms
            .iter()
            .map(|&(alg, size)| serde_json::json!({"id": alg, "name": alg_name(alg), "digest_size": size}))
            .collect();
        let spec = serde_json::json!({
            "platform_class": self.spec.platform_class,
            "spec_version": format!("{major}.{minor}"),
            "spec_errata": errata,
            "uintn_size": self.spec.uintn_size,
            "algorithms": algorithms,
        });
        let events: Vec<serde_json::Value> = self
            .events
            .iter()
            .map(|e| {
                let digests: serde_json::Map<String, serde_json::Value> = e
                    .digests
                    .iter()
                    .map(|(alg, d)| (alg_name(*alg), hex::encode(d).into()))
                    .collect();
                let mut obj = serde_json::Map::new();
                obj.insert("index".into(), e.index.into());
                obj.insert("offset".into(), e.offset.into());
                obj.insert("pcr".into(), e.pcr.into());
                obj.insert("type".into(), e.type_name().into());
                obj.insert("digests".into(), digests.into());
                if e.data.len() <= MAX_JSON_DATA {
                    obj.insert("data_hex".into(), hex::encode(&e.data).into());
                } else {
                    obj.insert("data_size".into(), e.data.len().into());
                }
                obj.insert("description".into(), e.describe().into());
                obj.into()
            })
            .collect();
        let pcrs: serde_json::Map<String, serde_json::Value> = self
            .replay()
            .into_iter()
            .map(|(pcr, banks)| {
                let banks: serde_json::Map<String, serde_json::Value> = banks
                    .into_iter()
                    .map(|(alg, v)| (alg_name(alg), hex::encode(v).into()))
                    .collect();
                (pcr.to_string(), banks.into())
            })
            .collect();
        serde_json::json!({"spec": spec, "events": events, "pcrs": pcrs})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
    const EFI_IMAGE_SECURITY_DATABASE: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
    const BANKS: [(u16, u16); 2] = [(TPM_ALG_SHA256, 32), (TPM_ALG_SHA384, 48)];

    /// The GUID's in-memory form, written independently of `guid_string`: the first three
    /// fields little-endian, the rest as written.
    fn guid_bytes(text: &str) -> Vec<u8> {
        let fields: Vec<&str> = text.split('-').collect();
        let mut out = Vec::new();
        for (i, field) in fields.iter().enumerate() {
            let mut b = hex::decode(field).unwrap();
            if i < 3 {
                b.reverse();
            }
            out.extend(b);
        }
        assert_eq!(out.len(), 16);
        out
    }

    fn utf16le(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    fn hash(alg: u16, data: &[u8]) -> Vec<u8> {
        match alg {
            TPM_ALG_SHA256 => Sha256::digest(data).to_vec(),
            TPM_ALG_SHA384 => Sha384::digest(data).to_vec(),
            _ => vec![0xAB; usize::from(known_digest_size(alg).unwrap_or(20))],
        }
    }

    /// The legacy-format header event carrying a Spec ID Event03 for `algs`.
    fn spec_header(algs: &[(u16, u16)]) -> Vec<u8> {
        let mut data = SPEC_ID_SIGNATURE.to_vec();
        data.extend(0u32.to_le_bytes()); // platform class
        data.extend([0, 2, 0, 2]); // minor, major, errata, uintn size
        data.extend(u32::try_from(algs.len()).unwrap().to_le_bytes());
        for (alg, size) in algs {
            data.extend(alg.to_le_bytes());
            data.extend(size.to_le_bytes());
        }
        data.push(0); // vendor info size
        let mut out = Vec::new();
        out.extend(0u32.to_le_bytes());
        out.extend(EV_NO_ACTION.to_le_bytes());
        out.extend([0u8; 20]);
        out.extend(u32::try_from(data.len()).unwrap().to_le_bytes());
        out.extend(data);
        out
    }

    /// One `TCG_PCR_EVENT2` with explicit digests.
    fn event2(pcr: u32, event_type: u32, digests: &[(u16, Vec<u8>)], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(pcr.to_le_bytes());
        out.extend(event_type.to_le_bytes());
        out.extend(u32::try_from(digests.len()).unwrap().to_le_bytes());
        for (alg, d) in digests {
            out.extend(alg.to_le_bytes());
            out.extend(d);
        }
        out.extend(u32::try_from(data.len()).unwrap().to_le_bytes());
        out.extend(data);
        out
    }

    /// An event in both banks whose digests are the hashes of `measured`.
    fn measured(pcr: u32, event_type: u32, measured: &[u8], data: &[u8]) -> Vec<u8> {
        let digests: Vec<(u16, Vec<u8>)> =
            BANKS.iter().map(|&(a, _)| (a, hash(a, measured))).collect();
        event2(pcr, event_type, &digests, data)
    }

    fn log_of(algs: &[(u16, u16)], events: &[Vec<u8>]) -> Vec<u8> {
        let mut out = spec_header(algs);
        for e in events {
            out.extend(e);
        }
        out
    }

    fn variable_data(guid: &str, name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = guid_bytes(guid);
        out.extend(
            u64::try_from(name.encode_utf16().count())
                .unwrap()
                .to_le_bytes(),
        );
        out.extend(u64::try_from(value.len()).unwrap().to_le_bytes());
        out.extend(utf16le(name));
        out.extend(value);
        out
    }

    /// A variable event as firmware writes it: the digest covers the whole data.
    fn variable_event(guid: &str, name: &str, value: &[u8]) -> Vec<u8> {
        let data = variable_data(guid, name, value);
        measured(7, EV_EFI_VARIABLE_DRIVER_CONFIG, &data, &data)
    }

    fn secure_boot_off_pcr7() -> Vec<Vec<u8>> {
        vec![
            variable_event(EFI_GLOBAL, "SecureBoot", &[0]),
            variable_event(EFI_GLOBAL, "PK", &[]),
            variable_event(EFI_GLOBAL, "KEK", &[]),
            variable_event(EFI_IMAGE_SECURITY_DATABASE, "db", &[]),
            variable_event(EFI_IMAGE_SECURITY_DATABASE, "dbx", &[]),
            measured(7, EV_SEPARATOR, &[0; 4], &[0; 4]),
        ]
    }

    /// A small log with events in several PCRs, a no-action event and varied data.
    fn small_log() -> Vec<u8> {
        log_of(
            &BANKS,
            &[
                measured(0, EV_S_CRTM_VERSION, b"v1", &utf16le("1.0\0")),
                event2(
                    0,
                    EV_NO_ACTION,
                    &[(TPM_ALG_SHA256, vec![0; 32]), (TPM_ALG_SHA384, vec![0; 48])],
                    b"SP800-155 Event\0xyz",
                ),
                measured(
                    4,
                    EV_EFI_ACTION,
                    b"Calling EFI Application from Boot Option",
                    b"Calling EFI Application from Boot Option",
                ),
                measured(4, EV_SEPARATOR, &[0; 4], &[0; 4]),
                measured(7, EV_SEPARATOR, &[0; 4], &[0; 4]),
            ],
        )
    }

    fn hand_extend(alg: u16, start: Vec<u8>, digests: &[Vec<u8>]) -> Vec<u8> {
        digests.iter().fold(start, |pcr, d| {
            let mut input = pcr;
            input.extend(d);
            hash(alg, &input)
        })
    }

    /// A real log: OVMF + swtpm (SHA-256 and SHA-384 banks) booting a zoa UKI on
    /// systemd-stub 252 and Debian's 6.1 kernel, Secure Boot off, captured by zoa-init.
    const OVMF_LOG_BASE64: &str = "
AAAAAAMAAAAAAAAAAAAAAAAAAAAAAAAAAAAAACUAAABTcGVjIElEIEV2ZW50MDMAAAAAAAACAAIC
AAAACwAgAAwAMAAAAAAAAAgAAAACAAAACwCWopbSJPKFxnvuk8MPijCRV/Dao13FuH5BC3hjCgnP
xwwAHdb3tFetiA2EDUHJYSg7q2iOlOS1k1nqRWhlgekP7M6jxiSxImET+CTzFetgrgp8AgAAAAAA
AAAAAAgAAIACAAAACwAbX2h5Z83sv/YzCSzHpZh3VRl0AdiXipMAgC+ivTaywwwA65qKhZlU55jc
M+EpihlVkAgweQZGk+gfLL46nOpeUqpNA4Qq7vLR4vqI8TNeTzN3EAAAAAAAggAAAAAAAAAOAAAA
AAAAAAAACAAAgAIAAAALAIKgRFIBy0mUVGGsxu14QmcA+36SgZhi7cVbo61FWbE1DAATFQGDL2gT
U04Xyjtjqf7zCGXLVMrpgC7AVlNSrBOpf/QnMkKxiVrV2CVRRLdogqAQAAAAAACQAAAAAAAAAMAA
AAAAAAcAAAABAACAAgAAAAsAEVqoJ9vM+0TSFq2ez9pWvepiC4YKlL7Vt6J7uhxNAtgMAM+k4sYG
9XJie/BtVmnMKrESg1jSe0W8Y+6epW7BCc+vtxlABvhHpqdLXq7WtzMy7DUAAABh3+SLypPSEaoN
AOCYAyuMCgAAAAAAAAABAAAAAAAAAFMAZQBjAHUAcgBlAEIAbwBvAHQAAAcAAAABAACAAgAAAAsA
3qe4CrU6PaqiTVzEbGTh+p/9A3OfkKrb2MCGfEpbSJAMAG8uPLwU+d74aYD19m/YXpnWPmmnMBTt
ilYzzlbspbZLaSEIxWEQ4irK3O9YwyUPGyQAAABh3+SLypPSEaoNAOCYAyuMAgAAAAAAAAAAAAAA
AAAAAFAASwAHAAAAAQAAgAIAAAALAOZw4SH869RzuLxBu4ATAfwdmvozkE8G9xSbdPEsR6aPDADW
B8DvtBwNdX1pvKBhXDqawLHbBsVX2ZLpBsa33uQODgMWQMe/17zTWETvnt6txvkmAAAAYd/ki8qT
0hGqDQDgmAMrjAMAAAAAAAAAAAAAAAAAAABLAEUASwAHAAAAAQAAgAIAAAALALr4mjzKzlJ1DF8B
KDUeBCKkFZehrf1QgiqjY7nRJOp8DAAIp0+JY7M3rLbJNoL5NEljc2ed0mrxCJy06vDDDPJgoS6B
SFY4WriEPlaprOoZ4SckAAAAy7IZ1zo9lkWjvNrQDmdlbwIAAAAAAAAAAAAAAAAAAABkAGIABwAA
AAEAAIACAAAACwCfdbaCO/9q8QJKTiA2cZzdVI08vCvx3o5+9NDtAflL+QwAGMxuAfDG6pmqI/ii
gEI+lK2B2W0K61GAUE/A96QMs2Gd05vWqV7BaAqG7Wqw+YKNJgAAAMuyGdc6PZZFo7za0A5nZW8D
AAAAAAAAAAAAAAAAAAAAZABiAHgABwAAAAQAAAACAAAACwDfP2GYBKkv20BXGS3EPddI6neK3FK8
SYzoBSTAFLgRGQwAOUNBtxgs0ifFxrB++AAM39hhNsQpK45XZXOtftmuQQGfWBi0uXHJ7/xg4a2f
EonwBAAAAAAAAAABAAAAAgAAgAIAAAALAJDCaYkhyp/QKVC+NT9yGIh2DjOrUJWiHlDx5DYLbeGg
DACoasqKvkC5LDpvjLPN/B0hm1gDhYFVRiQ8DqNJ2j7WJoB1RxcgONPEHaJVm0bP/Ig4AAAAYd/k
i8qT0hGqDQDgmAMrjAkAAAAAAAAABgAAAAAAAABCAG8AbwB0AE8AcgBkAGUAcgAAAAEAAgABAAAA
AgAAgAIAAAALADGXvh4wD6FgDRiEw6S9SpChVAW/tUbPLmz2CV+MNiqTDAAjraB/UmHxLzSgvY5G
dgli1rTVdqQW8f6hxkvGVrHSjqz3BHrm6WfFj9Kpi/p0wphuAAAAYd/ki8qT0hGqDQDgmAMrjAgA
AAAAAAAAPgAAAAAAAABCAG8AbwB0ADAAMAAwADAACQEAACwAVQBpAEEAcABwAAAABAcUAMm9uHzr
+DRPquo+5K9lFqEEBhQAIaosRhR2A0WDboq29GYjMX//BAABAAAAAgAAgAIAAAALAOb4cEizvLG+
85TMPbaRTyEuRpfZsmxD88Nq7DMER8vADAAfiAAkpr6ecmV5swMi9V7dBC2g/YPLCnD3ZlJgPeW2
q0LsMnZUOCEUungyd4tNcdZ+AAAAYd/ki8qT0hGqDQDgmAMrjAgAAAAAAAAATgAAAAAAAABCAG8A
bwB0ADAAMAAwADEAAQAAABYAVQBFAEYASQAgAE0AaQBzAGMAIABEAGUAdgBpAGMAZQAAAAIBDADQ
QQMKAAAAAAEBBgAAAX//BABOrAiBEZ9ZTYUO4hpSLFmyAQAAAAIAAIACAAAACwBNOHsC1jsvTNf2
Z/6wo4f+R6EKPia/NTPd0AHGBfPexQwA8Pss3MR78gS0GoWPaHi1gJw6m/asvVxKEw9maTenEAcM
XPlZ07WcgAe25jAYCX2aiAAAAGHf5IvKk9IRqg0A4JgDK4wIAAAAAAAAAFgAAAAAAAAAQgBvAG8A
dAAwADAAMAAyAAEAAAAsAEUARgBJACAASQBuAHQAZQByAG4AYQBsACAAUwBoAGUAbABsAAAABAcU
AMm9uHzr+DRPquo+5K9lFqEEBhQAg6UEfD6eHE+tZeBSaNC00X//BAAEAAAABwAAgAIAAAALAD1n
crT4TtR1ldcqLExf/RX1u3LHUH/ibyqu4sadVjO6DAB3oNqyMStOHleoTYZaIeWy7o1neiEBKtqB
nQqYmIB409dA9jRr/gq6qTjKIEOajXEoAAAAQ2FsbGluZyBFRkkgQXBwbGljYXRpb24gZnJvbSBC
b290IE9wdGlvbgAAAAAEAAAAAgAAAAsA3z9hmASpL9tAVxktxD3XSOp3itxSvEmM6AUkwBS4ERkM
ADlDQbcYLNInxcawfvgADN/YYTbEKSuOV2VzrX7ZrkEBn1gYtLlxye/8YOGtnxKJ8AQAAAAAAAAA
AQAAAAQAAAACAAAACwDfP2GYBKkv20BXGS3EPddI6neK3FK8SYzoBSTAFLgRGQwAOUNBtxgs0ifF
xrB++AAM39hhNsQpK45XZXOtftmuQQGfWBi0uXHJ7/xg4a2fEonwBAAAAAAAAAACAAAABAAAAAIA
AAALAN8/YZgEqS/bQFcZLcQ910jqd4rcUrxJjOgFJMAUuBEZDAA5Q0G3GCzSJ8XGsH74AAzf2GE2
xCkrjldlc61+2a5BAZ9YGLS5ccnv/GDhrZ8SifAEAAAAAAAAAAMAAAAEAAAAAgAAAAsA3z9hmASp
L9tAVxktxD3XSOp3itxSvEmM6AUkwBS4ERkMADlDQbcYLNInxcawfvgADN/YYTbEKSuOV2VzrX7Z
rkEBn1gYtLlxye/8YOGtnxKJ8AQAAAAAAAAABAAAAAQAAAACAAAACwDfP2GYBKkv20BXGS3EPddI
6neK3FK8SYzoBSTAFLgRGQwAOUNBtxgs0ifFxrB++AAM39hhNsQpK45XZXOtftmuQQGfWBi0uXHJ
7/xg4a2fEonwBAAAAAAAAAAFAAAABAAAAAIAAAALAN8/YZgEqS/bQFcZLcQ910jqd4rcUrxJjOgF
JMAUuBEZDAA5Q0G3GCzSJ8XGsH74AAzf2GE2xCkrjldlc61+2a5BAZ9YGLS5ccnv/GDhrZ8SifAE
AAAAAAAAAAYAAAAEAAAAAgAAAAsA3z9hmASpL9tAVxktxD3XSOp3itxSvEmM6AUkwBS4ERkMADlD
QbcYLNInxcawfvgADN/YYTbEKSuOV2VzrX7ZrkEBn1gYtLlxye/8YOGtnxKJ8AQAAAAAAAAABQAA
AAYAAIACAAAACwBF1I6oJXGYuTBsmULO9Hq2dQQzVq8I0BkKTIiZXROrdQwA2NyJtd/uYNxL3+P8
Bwln0CUAdosaKT2KdGSqGxySNB9FlKeBW0kOPs46GTs23x2o5AAAAEVGSSBQQVJUAAABAFwAAADW
osXqAAAAAAEAAAAAAAAA/7cCAAAAAAAACAAAAAAAAN63AgAAAAAAvsy4X7bAQEqanhxwe9+ybQIA
AAAAAAAAgAAAAIAAAACNV71uAQAAAAAAAAAocyrBH/jSEbpLAKDJPsk7IRhKy1rhSv2rE87eWgq0
RwAIAAAAAAAA/68CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQAAAADAACAAgAAAAsA2EbU
JtYmPdBkr504lKehq9TDgSJcqkySey/5FM+z8WwMALKRQoR016mvYj6TRNA5eOQyNQP1H9RjIaIR
is95dcbpjvIhXCFFL+zz96rYkE8F2JAAAAAYgN84AAAAAABM1wIAAAAAAAAAAAAAAABwAAAAAAAA
AAIBDADQQQMKAAAAAAEBBgAAAQQBKgABAAAAAAgAAAAAAAAAqAIAAAAAACEYSsta4Ur9qxPO3loK
tEcCAgQEMABcAEUARgBJAFwAQgBPAE8AVABcAEIATwBPAFQAWAA2ADQALgBFAEYASQAAAH//BAAL
AAAADQAAAAIAAAALAA2ik+N61VEcWb5HmTdpqsuRskP30BAojhGNyQ6Vqu9aDAAv3IUxV3YH2ZAx
1w+zBj6eSuz1Cn6qnCsLzaXFpuERMCmWwThGWSDK3qRBbTYIllEOAAAALgBsAGkAbgB1AHgAAAAL
AAAADQAAAAIAAAALAFE0lQGj0f+Dg2Q30rNl/S1X8v64ZC0xXlGB3sI9TDJ1DAAHlUZVv/CdzLOU
h5F9CJj2lEaq0w6AAl+bFJn9NSX7nUksYEAhP8yy90hfsij/9MMOAAAALgBsAGkAbgB1AHgAAAAL
AAAADQAAAAIAAAALAD+55OPMgQ1DJrXBPO8YruH534xfT39blmZXJPo7hG4IDAAdYHeieXkRw3Tt
vGEPoB4YSh6ORJL/NaHjVe/q8zDnyMsDSS2sfuE9PvpvCZ4LvIEOAAAALgBvAHMAcgBlAGwAAAAL
AAAADQAAAAIAAAALAOIeEwl3b2Td5KEPjoVBLc7nHyqp2u1KIhGnx697/7doDACYoEh1eggC+1hH
RkjgQaOFHn3sRZpnSCMM/VkvR8wD5QAknTzPROR90Cm/K+PKeooOAAAALgBvAHMAcgBlAGwAAAAL
AAAADQAAAAIAAAALAEYSA6ifI+NsOk3IF/kFsASE0s9+fZN28T35HEHYSr5GDACTxFNmGNW+SnTi
y5yqCk2Jdc5w3J7+DFOqTO282p0C9gyKaP0B+WC4dvndMYGKb0ESAAAALgBjAG0AZABsAGkAbgBl
AAAACwAAAA0AAAACAAAACwDp+RtWpqoTSLJSa6pxxB5Eb96o4phxLEaF8lNESlizkwwAYKiohYh2
Wqdj0bp3XZVIq2G+fkDsMcSUzki5J/HjzrrBNNmC94UZ8rWXwlI1ZcZzEgAAAC4AYwBtAGQAbABp
AG4AZQAAAAsAAAANAAAAAgAAAAsAFe43518ejUIIDpH9u9JWB4CRjIH+NoeubRXEcrvarHUMABvN
Ltcp+53HsaFoq0puLgS2bXQF6iYi1mZ4Dsnx7OsDEBDwvfN8Rqs05qcgG3PVrhAAAAAuAGkAbgBp
AHQAcgBkAAAACwAAAA0AAAACAAAACwAUhzom8tn+i/x+NZ2ktvfEDXE/yA65NNSwwuKHmKW5jAwA
OHEG/gKOZIj1NUlVyunTx8OrU+CVjvy1Nu2hxuuj9BN21qYNUFU/3R+YHN2Do+clEAAAAC4AaQBu
AGkAdAByAGQAAAAEAAAAAwAAgAIAAAALAF8h/ywNXYmYQrKKixmQG6cs96erk8Aqd/rcb/cr6Fsx
DACFrHRz/oH7R2ZqXAjTLY56Yq80fdrpVn3/B4H5VKmwZnCsz8+nFIMDKbHkXPqeVBw4AAAAAAQH
OAAAAADAd9gAAAAAAAAAAAAAAAAAGAAAAAAAAAAEAxQA+NHFVc0EtUaKIOVsuzBS0H//BAAJAAAA
BgAAAAIAAAALAHZLWLkJ1WmWqruPPNZl85ytTSHVBCBXhp0bfYsTUWQhDACvCH8OD5yZSjDG8EoS
tc+ncAFG9eotuxZoOfqYM+SH93j/kX+fL/7mQTgbjgKQ1JQiAAAA7SI7jxoAAABMT0FERURfSU1B
R0U6OkxvYWRPcHRpb25zAAkAAAAGAAAAAgAAAAsAFIc6JvLZ/ov8fjWdpLb3xA1xP8gOuTTUsMLi
h5iluYwMADhxBv4CjmSI9TVJVcrp08fDq1PglY78tTbtocbro/QTdtamDVBVP90fmBzdg6PnJRUA
AADsIjuPDQAAAExpbnV4IGluaXRyZAAFAAAABwAAgAIAAAALANgEPWt7ha01jrO2rmqHOrfvI6Jj
UsXcT6pa7trPXrQbDAAhSwvvE3l1YBE0SHd0P9wqU4K6xucDYtYkzPP2VEB8G0ut99j5KV3T2r3v
ZbJ2d+AdAAAARXhpdCBCb290IFNlcnZpY2VzIEludm9jYXRpb24FAAAABwAAgAIAAAALALVPdULL
2HKoGp2d6oObK410fH69XqZhXED0L0Sm2+ugDAAKLgHIXernGKUwrYxtIKhACbq+bImJJp6VDYz0
QMbpl2leZNRVxBdKZSzQgPYjC3QoAAAARXhpdCBCb290IFNlcnZpY2VzIFJldHVybmVkIHdpdGgg
U3VjY2Vzcw==";

    /// The PCRs the same boot read from sysfs (PCR8 and PCR12 were zero; PCR10 holds
    /// IMA's kernel measurements, which are not in the firmware log).
    const OVMF_SYSFS_PCRS: &[(u32, &str, &str)] = &[
        (
            0,
            "3e695b1035f9b7fa5ade7430fc93730efab93bcb6c0a843cdab260323f7734c4",
            "8ce73682c5ac9288e50d69cb7fed3ee3f85f3cb445b3ff14ba0debe12fd7cecf4ba057e26d49fe9b9aae6c2da10d8464",
        ),
        (
            1,
            "ec09678bc9a85dd840b3b05f457edda355a003a8c2c20e65463803e44087f8a6",
            "de569b9aac9ac08428a05e6799a664824a2b523e615a77d89c7c4fcc8e8e6b830b8a9e4c83ef9c2b1c3aaf134472b55d",
        ),
        (
            2,
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
            "518923b0f955d08da077c96aaba522b9decede61c599cea6c41889cfbea4ae4d50529d96fe4d1afdafb65e7f95bf23c4",
        ),
        (
            3,
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
            "518923b0f955d08da077c96aaba522b9decede61c599cea6c41889cfbea4ae4d50529d96fe4d1afdafb65e7f95bf23c4",
        ),
        (
            4,
            "965c6999381b0ec45eaf16aba03290df1307c321d4c793845471af9058b5c6e8",
            "fdf194e5f39735ff47e8fbe5b1405fa4f4a2a31b007bc2b35b12f72310510e497686c951e4dee214bf471254f740c83d",
        ),
        (
            5,
            "8a5ac61c9d77ae757d9237ea4556eb19e8fc5541bcb9d05b4f4cc496b6244920",
            "b9cc2c76c1482ac7998c6d235365f4e7854264ba659c763e442901913cc36325deb9c33c941ec04a67c3c054e440abed",
        ),
        (
            6,
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
            "518923b0f955d08da077c96aaba522b9decede61c599cea6c41889cfbea4ae4d50529d96fe4d1afdafb65e7f95bf23c4",
        ),
        (
            7,
            "65caf8dd1e0ea7a6347b635d2b379c93b9a1351edc2afc3ecda700e534eb3068",
            "98441c7f7625d10058c47683aec486ce311c633235eb555593a7ee791121e3578ae72d04ecef661f272d59058b77af35",
        ),
        (
            9,
            "7759a52aae1673e9bc1cf26006155191795e9853620a4992845d4464e9a6125a",
            "46dfa8b3d2f367582ea289180b5338ae8dec733580d2876e1e7fa964885cbe28c8db29ed511c07ec10324671ff88cee0",
        ),
        (
            11,
            "cc8a13ac74f668eed680e5f353364da22ef434d82a64aaea027e19ceae9312de",
            "ab5a02d13575eef7a662b708bed05ee8895a37c525aa76d15ffe0ef615a8061cd1780df734ecce78471934aa72a94420",
        ),
    ];

    fn ovmf_log() -> Vec<u8> {
        use base64::Engine;
        let text: String = OVMF_LOG_BASE64.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    }

    #[test]
    fn real_ovmf_log_replays_to_the_booted_pcrs() {
        let log = parse(&ovmf_log()).unwrap();
        assert_eq!(log.spec.algorithms, BANKS.to_vec());
        assert_eq!(log.spec.spec_version, (2, 0, 0));
        assert_eq!(log.spec.uintn_size, 2);
        assert_eq!(log.events.len(), 36);
        let replayed = log.replay();
        for &(pcr, sha256, sha384) in OVMF_SYSFS_PCRS {
            assert_eq!(
                hex::encode(&replayed[&pcr][&TPM_ALG_SHA256]),
                sha256,
                "sha256 PCR{pcr}"
            );
            assert_eq!(
                hex::encode(&replayed[&pcr][&TPM_ALG_SHA384]),
                sha384,
                "sha384 PCR{pcr}"
            );
        }
        let pcrs: Vec<u32> = replayed.keys().copied().collect();
        assert_eq!(pcrs, vec![0, 1, 2, 3, 4, 5, 6, 7, 9, 11]);
    }

    #[test]
    fn real_ovmf_log_events_are_described() {
        let log = parse(&ovmf_log()).unwrap();
        let lines: Vec<String> = log
            .events
            .iter()
            .map(|e| format!("PCR{} {} {}", e.pcr, e.type_name(), e.describe()))
            .collect();
        for expected in [
            "PCR0 EV_EFI_PLATFORM_FIRMWARE_BLOB firmware blob of 917504 bytes at 0x820000",
            "PCR7 EV_EFI_VARIABLE_DRIVER_CONFIG 8be4df61-93ca-11d2-aa0d-00e098032b8c SecureBoot (1 byte)",
            "PCR7 EV_EFI_VARIABLE_DRIVER_CONFIG d719b2cb-3d3a-4596-a3bc-dad00e67656f dbx (0 bytes)",
            "PCR1 EV_EFI_VARIABLE_BOOT 8be4df61-93ca-11d2-aa0d-00e098032b8c BootOrder (6 bytes)",
            "PCR4 EV_EFI_ACTION \"Calling EFI Application from Boot Option\"",
            "PCR4 EV_SEPARATOR separator",
            "PCR5 EV_EFI_GPT_EVENT GPT with 1 partition",
            "PCR4 EV_EFI_BOOT_SERVICES_APPLICATION image of 47664128 bytes from \\EFI\\BOOT\\BOOTX64.EFI",
            "PCR4 EV_EFI_BOOT_SERVICES_APPLICATION image of 14186432 bytes from VenMedia(55c5d1f8-04cd-46b5-8a20-e56cbb3052d0)",
            "PCR11 EV_IPL \".cmdline\"",
            "PCR9 EV_EVENT_TAG tag 0x8f3b22ec \"Linux initrd\"",
            "PCR5 EV_EFI_ACTION \"Exit Boot Services Returned with Success\"",
        ] {
            assert!(lines.iter().any(|l| l == expected), "no line {expected:?} in {lines:#?}");
        }
        // Offsets are real positions: each event's header can be read back at its offset.
        let bytes = ovmf_log();
        for e in &log.events {
            let at = usize::try_from(e.offset).unwrap();
            assert_eq!(bytes[at..at + 4], e.pcr.to_le_bytes());
            assert_eq!(bytes[at + 4..at + 8], e.event_type.to_le_bytes());
        }
    }

    #[test]
    fn pcr7_with_secure_boot_off_and_empty_variables_is_the_known_sha384() {
        let log = parse(&log_of(&BANKS, &secure_boot_off_pcr7())).unwrap();
        let pcr7 = hex::encode(&log.replay()[&7][&TPM_ALG_SHA384]);
        assert!(pcr7.starts_with("98441c7f"), "{pcr7}");
        assert!(pcr7.ends_with("8b77af35"), "{pcr7}");
        // The same value the real OVMF log above produced.
        assert_eq!(pcr7, OVMF_SYSFS_PCRS[7].2);
    }

    #[test]
    fn replay_extends_each_bank_from_zero_and_skips_no_action() {
        let log = parse(&small_log()).unwrap();
        let replayed = log.replay();
        for (alg, size) in BANKS {
            let zero = vec![0u8; usize::from(size)];
            let pcr0 = hand_extend(alg, zero.clone(), &[hash(alg, b"v1")]);
            let pcr4 = hand_extend(
                alg,
                zero.clone(),
                &[
                    hash(alg, b"Calling EFI Application from Boot Option"),
                    hash(alg, &[0; 4]),
                ],
            );
            let pcr7 = hand_extend(alg, zero, &[hash(alg, &[0; 4])]);
            assert_eq!(replayed[&0][&alg], pcr0);
            assert_eq!(replayed[&4][&alg], pcr4);
            assert_eq!(replayed[&7][&alg], pcr7);
        }
        assert_eq!(replayed.len(), 3, "only PCRs with extending events");
    }

    #[test]
    fn startup_locality_sets_the_initial_pcr0() {
        let mut locality = STARTUP_LOCALITY_SIGNATURE.to_vec();
        locality.push(3);
        let zeros = [(TPM_ALG_SHA256, vec![0; 32]), (TPM_ALG_SHA384, vec![0; 48])];
        let bytes = log_of(
            &BANKS,
            &[
                event2(0, EV_NO_ACTION, &zeros, &locality),
                measured(0, EV_S_CRTM_VERSION, b"crtm", b"crtm"),
                measured(1, EV_SEPARATOR, &[0; 4], &[0; 4]),
            ],
        );
        let log = parse(&bytes).unwrap();
        assert_eq!(log.events[0].startup_locality(), Some(3));
        assert_eq!(log.events[0].describe(), "StartupLocality 3");
        let replayed = log.replay();
        for (alg, size) in BANKS {
            let mut start = vec![0u8; usize::from(size)];
            *start.last_mut().unwrap() = 3;
            assert_eq!(
                replayed[&0][&alg],
                hand_extend(alg, start, &[hash(alg, b"crtm")])
            );
            // Only PCR0 starts at the locality.
            let zero = vec![0u8; usize::from(size)];
            assert_eq!(
                replayed[&1][&alg],
                hand_extend(alg, zero, &[hash(alg, &[0; 4])])
            );
        }
    }

    #[test]
    fn events_for_pcr_excludes_no_action_and_keeps_order() {
        let log = parse(&small_log()).unwrap();
        let pcr0: Vec<usize> = log.events_for_pcr(0).map(|e| e.index).collect();
        assert_eq!(pcr0, vec![0]);
        let pcr4: Vec<&str> = log
            .events_for_pcr(4)
            .map(|e| event_type_name(e.event_type).unwrap())
            .collect();
        assert_eq!(pcr4, vec!["EV_EFI_ACTION", "EV_SEPARATOR"]);
        assert_eq!(log.events_for_pcr(9).count(), 0);
    }

    #[test]
    fn parse_reads_every_field() {
        let bytes = small_log();
        let header_len = spec_header(&BANKS).len();
        let log = parse(&bytes).unwrap();
        assert_eq!(
            log.spec,
            SpecId {
                platform_class: 0,
                spec_version: (2, 0, 0),
                uintn_size: 2,
                algorithms: BANKS.to_vec(),
            }
        );
        let first = &log.events[0];
        assert_eq!(
            (first.index, first.offset),
            (0, u64::try_from(header_len).unwrap())
        );
        assert_eq!(first.pcr, 0);
        assert_eq!(first.type_name(), "EV_S_CRTM_VERSION");
        assert_eq!(
            first.digest(TPM_ALG_SHA256),
            Some(hash(TPM_ALG_SHA256, b"v1").as_slice())
        );
        assert_eq!(
            first.digest(TPM_ALG_SHA384),
            Some(hash(TPM_ALG_SHA384, b"v1").as_slice())
        );
        assert_eq!(first.digest(TPM_ALG_SHA1), None);
        assert_eq!(first.data, utf16le("1.0\0"));
        let second = &log.events[1];
        // 12-byte header, two digests with their ids, the size, the data.
        let first_len = 12 + (2 + 32) + (2 + 48) + 4 + first.data.len();
        assert_eq!(
            second.offset,
            first.offset + u64::try_from(first_len).unwrap()
        );
        assert_eq!(second.index, 1);
    }

    #[test]
    fn trailing_zero_padding_is_accepted_but_data_after_it_is_not() {
        let mut bytes = small_log();
        let len = bytes.len();
        bytes.extend([0u8; 100]);
        assert_eq!(parse(&bytes).unwrap().events.len(), 5);
        // Padding shorter than an event header.
        let mut short_pad = small_log();
        short_pad.extend([0u8; 5]);
        assert_eq!(parse(&short_pad).unwrap().events.len(), 5);
        bytes[len + 60] = 1;
        let err = parse(&bytes).unwrap_err();
        assert_eq!(
            err,
            EventLogError::DataAfterPadding {
                padding: u64::try_from(len).unwrap(),
                at: u64::try_from(len + 60).unwrap(),
            }
        );
        assert!(
            err.to_string()
                .contains("non-zero data after the zero padding"),
            "{err}"
        );
    }

    #[test]
    fn empty_and_garbage_are_not_crypto_agile() {
        for input in [&b""[..], b"hello", &[0xFF; 200][..], &[0u8; 64][..]] {
            let err = parse(input).unwrap_err();
            assert!(
                matches!(err, EventLogError::NotCryptoAgile { .. }),
                "{err:?}"
            );
            assert!(
                err.to_string().starts_with("not a crypto-agile TCG2 log"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_first_event_other_than_spec_id_event03_is_refused() {
        // Right layout, wrong event type.
        let mut bytes = small_log();
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        let err = parse(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("not a crypto-agile TCG2 log") && err.contains("EV_POST_CODE"),
            "{err}"
        );
        // A SHA-1-only log says so.
        let mut legacy = small_log();
        legacy[32..48].copy_from_slice(LEGACY_SPEC_ID_SIGNATURE);
        let err = parse(&legacy).unwrap_err().to_string();
        assert!(
            err.contains("not a crypto-agile TCG2 log") && err.contains("SHA-1-only"),
            "{err}"
        );
        // A log that starts directly with a TCG_PCR_EVENT2.
        let err = parse(&measured(0, EV_SEPARATOR, &[0; 4], &[0; 4])).unwrap_err();
        assert!(
            matches!(err, EventLogError::NotCryptoAgile { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_spec_id_tables_are_refused() {
        let no_banks = spec_header(&[]);
        assert!(parse(&no_banks)
            .unwrap_err()
            .to_string()
            .contains("lists 0 PCR banks"));
        let wrong_size = spec_header(&[(TPM_ALG_SHA256, 20)]);
        let err = parse(&wrong_size).unwrap_err().to_string();
        assert!(
            err.contains("sha256 has digest size 20") && err.contains("byte 60"),
            "{err}"
        );
        let too_many: Vec<(u16, u16)> = (0x100..0x121).map(|a| (a, 32)).collect();
        let err = parse(&spec_header(&too_many)).unwrap_err().to_string();
        assert!(
            err.contains("lists 33 PCR banks (expected 1 to 32)"),
            "{err}"
        );
        let twice = spec_header(&[(TPM_ALG_SHA256, 32), (TPM_ALG_SHA256, 32)]);
        assert!(parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        // An unknown algorithm with a plausible size is a bank like any other.
        let custom = log_of(
            &[(0x0027, 32)],
            &[event2(1, EV_SEPARATOR, &[(0x0027, vec![7; 32])], &[0; 4])],
        );
        let log = parse(&custom).unwrap();
        assert_eq!(log.events[0].digest(0x0027), Some(&[7u8; 32][..]));
        assert!(
            log.replay()[&1].is_empty(),
            "no implementation, so no value"
        );
    }

    #[test]
    fn truncation_at_every_byte_errors_or_parses_a_prefix() {
        for full in [small_log(), ovmf_log()] {
            let complete = parse(&full).unwrap();
            let boundaries: Vec<usize> = complete
                .events
                .iter()
                .map(|e| usize::try_from(e.offset).unwrap())
                .chain([full.len()])
                .collect();
            for (k, &b) in boundaries.iter().enumerate() {
                assert_eq!(parse(&full[..b]).unwrap().events.len(), k);
            }
            for cut in 0..full.len() {
                match parse(&full[..cut]) {
                    Ok(log) => {
                        // A prefix of the events; what follows the last one can only be
                        // zeros, i.e. the cut fell in a header that starts with zero
                        // bytes, which reads as padding.
                        let n = log.events.len();
                        assert_eq!(log.events, complete.events[..n], "cut {cut}");
                        assert!(
                            full[boundaries[n]..cut].iter().all(|&b| b == 0),
                            "cut {cut}"
                        );
                        log.replay();
                    }
                    Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
                }
            }
        }
        // The error names the event, its offset and what ran out.
        let full = small_log();
        let err = parse(&full[..full.len() - 1]).unwrap_err();
        assert!(
            matches!(
                err,
                EventLogError::Truncated {
                    index: 4,
                    what: "event data",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_unknown_algorithm_id_names_the_id_and_offset() {
        let header_len = spec_header(&BANKS).len();
        let bytes = log_of(
            &BANKS,
            &[event2(
                4,
                EV_SEPARATOR,
                &[(TPM_ALG_SHA1, vec![0; 20])],
                &[0; 4],
            )],
        );
        let err = parse(&bytes).unwrap_err();
        let offset = u64::try_from(header_len).unwrap();
        assert_eq!(
            err,
            EventLogError::UnknownAlgorithm {
                index: 0,
                offset,
                at: offset + 12,
                alg: TPM_ALG_SHA1,
                banks: "sha256, sha384".into(),
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("0x0004") && text.contains(&format!("byte {offset}")),
            "{text}"
        );
    }

    #[test]
    fn absurd_sizes_and_counts_are_refused() {
        // Event data of 4 GiB - 1: refused before any allocation.
        let mut bytes = log_of(&BANKS, &[measured(4, EV_SEPARATOR, &[0; 4], &[0; 4])]);
        let size_at = bytes.len() - 8;
        bytes[size_at..size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = parse(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("event #0") && err.contains("4294967295") && err.contains("limit"),
            "{err}"
        );
        // More digests than banks.
        let three = vec![(TPM_ALG_SHA256, vec![0; 32]); 3];
        let err = parse(&log_of(&BANKS, &[event2(4, EV_SEPARATOR, &three, &[])])).unwrap_err();
        assert!(
            err.to_string()
                .contains("3 digests, but the log has only 2 bank(s)"),
            "{err}"
        );
        // The same bank twice.
        let twice = vec![(TPM_ALG_SHA256, vec![0; 32]); 2];
        let err = parse(&log_of(&BANKS, &[event2(4, EV_SEPARATOR, &twice, &[])])).unwrap_err();
        assert!(err.to_string().contains("two sha256 digests"), "{err}");
        // The event count bound.
        let many: Vec<Vec<u8>> = (0..5)
            .map(|_| measured(4, EV_SEPARATOR, &[0; 4], &[0; 4]))
            .collect();
        let bytes = log_of(&BANKS, &many);
        assert_eq!(parse_limited(&bytes, 5).unwrap().events.len(), 5);
        let err = parse_limited(&bytes, 4).unwrap_err();
        assert!(
            matches!(
                err,
                EventLogError::TooManyEvents {
                    index: 4,
                    limit: 4,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn banks_that_cannot_be_replayed_are_left_out() {
        let algs = [(TPM_ALG_SHA1, 20), (TPM_ALG_SHA256, 32)];
        let both = [
            (TPM_ALG_SHA1, vec![1; 20]),
            (TPM_ALG_SHA256, hash(TPM_ALG_SHA256, &[0; 4])),
        ];
        let only_sha1 = [(TPM_ALG_SHA1, vec![1; 20])];
        let bytes = log_of(
            &algs,
            &[
                event2(4, EV_SEPARATOR, &both, &[0; 4]),
                event2(5, EV_SEPARATOR, &both, &[0; 4]),
                event2(5, EV_EFI_ACTION, &only_sha1, b"x"),
            ],
        );
        let log = parse(&bytes).unwrap();
        let replayed = log.replay();
        // PCR4: sha256 replayed, sha1 has no implementation here.
        let banks: Vec<u16> = replayed[&4].keys().copied().collect();
        assert_eq!(banks, vec![TPM_ALG_SHA256]);
        // PCR5: an event lacks the sha256 digest, so no sha256 value is claimed.
        assert!(replayed[&5].is_empty());
        let text = log.render_text();
        assert!(
            text.contains("sha1:not replayed (zoa has no implementation of this hash)"),
            "{text}"
        );
        assert!(
            text.contains("sha256:not replayed (an event lacks its sha256 digest)"),
            "{text}"
        );
    }

    fn event_with(event_type: u32, data: &[u8]) -> LogEvent {
        LogEvent {
            index: 0,
            offset: 0,
            pcr: 4,
            event_type,
            digests: Vec::new(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn describe_decodes_variables_text_and_separators() {
        let sb = variable_data(EFI_GLOBAL, "SecureBoot", &[1]);
        assert_eq!(
            event_with(EV_EFI_VARIABLE_DRIVER_CONFIG, &sb).describe(),
            "8be4df61-93ca-11d2-aa0d-00e098032b8c SecureBoot (1 byte)"
        );
        let db = variable_data(EFI_IMAGE_SECURITY_DATABASE, "db", &[9; 40]);
        assert_eq!(
            event_with(EV_EFI_VARIABLE_AUTHORITY, &db).describe(),
            "d719b2cb-3d3a-4596-a3bc-dad00e67656f db (40 bytes)"
        );
        assert_eq!(
            event_with(EV_EFI_VARIABLE_BOOT, &sb[..sb.len() - 1]).describe(),
            "malformed UEFI variable data (52 bytes)"
        );
        assert_eq!(
            event_with(EV_EFI_ACTION, b"Exit Boot Services Invocation").describe(),
            "\"Exit Boot Services Invocation\""
        );
        assert_eq!(
            event_with(EV_IPL, b"grub_cmd: linux /vmlinuz\0").describe(),
            "\"grub_cmd: linux /vmlinuz\""
        );
        assert_eq!(
            event_with(EV_IPL, &utf16le(".linux\0")).describe(),
            "\".linux\""
        );
        assert_eq!(
            event_with(EV_POST_CODE, &[0x00, 0x80, 0x82, 0x00]).describe(),
            "4 bytes"
        );
        let long = "a".repeat(200);
        assert_eq!(
            event_with(EV_ACTION, long.as_bytes()).describe(),
            format!("\"{}…\"", "a".repeat(120))
        );
        assert_eq!(event_with(EV_SEPARATOR, &[0; 4]).describe(), "separator");
        assert_eq!(
            event_with(EV_SEPARATOR, &[1, 0, 0, 0]).describe(),
            "error separator"
        );
        assert_eq!(
            event_with(EV_SEPARATOR, b"WBCL").describe(),
            "separator with 4 bytes of data"
        );
        assert_eq!(event_with(0x8000_0009, &[0; 24]).describe(), "24 bytes");
        assert_eq!(
            event_with(EV_NO_ACTION, b"SP800-155 Event\0abcd").describe(),
            "SP800-155 Event (20 bytes)"
        );
    }

    fn image_load(length: u64, path: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [
            0x7000_0000u64,
            length,
            0,
            u64::try_from(path.len()).unwrap(),
        ] {
            out.extend(v.to_le_bytes());
        }
        out.extend(path);
        out
    }

    fn node(kind: u8, subtype: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, subtype];
        out.extend(u16::try_from(body.len() + 4).unwrap().to_le_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn describe_renders_image_loads_and_gpt() {
        let end = node(0x7f, 0xff, &[]);
        let mut path = node(2, 1, &[0; 8]); // ACPI node: not rendered
        path.extend(node(4, 4, &utf16le("\\EFI\\")));
        path.extend(node(4, 4, &utf16le("BOOT\\BOOTX64.EFI\0")));
        path.extend(&end);
        let ev = event_with(EV_EFI_BOOT_SERVICES_APPLICATION, &image_load(4096, &path));
        assert_eq!(
            ev.describe(),
            "image of 4096 bytes from \\EFI\\BOOT\\BOOTX64.EFI"
        );
        let mut fv = node(4, 7, &guid_bytes(EFI_GLOBAL));
        fv.extend(node(4, 6, &guid_bytes(EFI_IMAGE_SECURITY_DATABASE)));
        fv.extend(&end);
        assert_eq!(
            event_with(EV_EFI_BOOT_SERVICES_DRIVER, &image_load(1, &fv)).describe(),
            format!(
                "image of 1 byte from FvVol({EFI_GLOBAL})/FvFile({EFI_IMAGE_SECURITY_DATABASE})"
            )
        );
        let mut unknown = node(1, 1, &[0; 2]);
        unknown.extend(&end);
        assert_eq!(
            event_with(EV_EFI_BOOT_SERVICES_APPLICATION, &image_load(10, &unknown)).describe(),
            "image of 10 bytes, device path of 10 bytes"
        );
        assert_eq!(
            event_with(EV_EFI_BOOT_SERVICES_APPLICATION, &image_load(10, &[])).describe(),
            "image of 10 bytes"
        );
        // A node length below its own header is malformed: no rendering, no panic.
        let bad = [4u8, 4, 1, 0];
        assert_eq!(
            event_with(EV_EFI_BOOT_SERVICES_APPLICATION, &image_load(10, &bad)).describe(),
            "image of 10 bytes, device path of 4 bytes"
        );

        let mut gpt = vec![0u8; GPT_HEADER_LEN];
        gpt[..8].copy_from_slice(b"EFI PART");
        gpt[84..88].copy_from_slice(&128u32.to_le_bytes());
        gpt.extend(3u64.to_le_bytes());
        gpt.extend([0u8; 3 * 128]);
        assert_eq!(
            event_with(EV_EFI_GPT_EVENT, &gpt).describe(),
            "GPT with 3 partitions"
        );
        assert_eq!(
            event_with(EV_EFI_GPT_EVENT, &gpt[..200]).describe(),
            "200 bytes"
        );
    }

    #[test]
    fn names_of_types_and_algorithms() {
        assert_eq!(
            event_type_name(0x8000_00E0),
            Some("EV_EFI_VARIABLE_AUTHORITY")
        );
        assert_eq!(event_type_name(0), Some("EV_PREBOOT_CERT"));
        assert_eq!(event_type_name(0x13), None);
        assert_eq!(event_with(0x1234_5678, &[]).type_name(), "0x12345678");
        assert_eq!(alg_name(TPM_ALG_SHA384), "sha384");
        assert_eq!(alg_name(TPM_ALG_SM3_256), "sm3_256");
        assert_eq!(alg_name(0x1234), "alg 0x1234");
    }

    #[test]
    fn render_text_lists_events_and_replayed_pcrs() {
        let log = parse(&log_of(&BANKS, &secure_boot_off_pcr7())).unwrap();
        let text = log.render_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "TCG2 event log: spec 2.0 errata 0, platform class 0, 64-bit UINTN, banks sha256 sha384; 6 events"
        );
        let sb = hash(
            TPM_ALG_SHA256,
            &variable_data(EFI_GLOBAL, "SecureBoot", &[0]),
        );
        let sb384 = hash(
            TPM_ALG_SHA384,
            &variable_data(EFI_GLOBAL, "SecureBoot", &[0]),
        );
        assert_eq!(
            lines[1],
            format!(
                "#0 PCR7 EV_EFI_VARIABLE_DRIVER_CONFIG  sha256:{}… sha384:{}…  {EFI_GLOBAL} SecureBoot (1 byte)",
                &hex::encode(sb)[..16],
                &hex::encode(sb384)[..16]
            )
        );
        assert!(
            lines[6].starts_with("#5 PCR7 EV_SEPARATOR  sha256:")
                && lines[6].ends_with("  separator")
        );
        assert_eq!(lines[7], "Replayed PCRs:");
        let replayed = log.replay();
        assert_eq!(
            lines[8],
            format!(
                "PCR7  sha256:{}",
                hex::encode(&replayed[&7][&TPM_ALG_SHA256])
            )
        );
        assert_eq!(
            lines[9],
            format!(
                "      sha384:{}",
                hex::encode(&replayed[&7][&TPM_ALG_SHA384])
            )
        );
        assert_eq!(lines.len(), 10);
    }

    #[test]
    fn to_json_has_spec_events_and_pcrs() {
        let big = vec![0x41u8; MAX_JSON_DATA + 1];
        let bytes = log_of(
            &BANKS,
            &[
                measured(4, EV_EFI_ACTION, b"abc", b"abc"),
                measured(5, 0x4242, &big, &big),
            ],
        );
        let log = parse(&bytes).unwrap();
        let json = log.to_json();
        assert_eq!(json["spec"]["spec_version"], "2.0");
        assert_eq!(json["spec"]["algorithms"][1]["name"], "sha384");
        assert_eq!(json["spec"]["algorithms"][1]["digest_size"], 48);
        let first = &json["events"][0];
        assert_eq!(first["index"], 0);
        assert_eq!(first["offset"], log.events[0].offset);
        assert_eq!(first["pcr"], 4);
        assert_eq!(first["type"], "EV_EFI_ACTION");
        assert_eq!(
            first["digests"]["sha256"],
            hex::encode(hash(TPM_ALG_SHA256, b"abc"))
        );
        assert_eq!(first["data_hex"], "616263");
        assert_eq!(first["description"], "\"abc\"");
        let second = &json["events"][1];
        assert_eq!(second["type"], "0x00004242");
        assert!(second.get("data_hex").is_none());
        assert_eq!(second["data_size"], MAX_JSON_DATA + 1);
        let zero = vec![0u8; 48];
        let expected4 = hand_extend(TPM_ALG_SHA384, zero, &[hash(TPM_ALG_SHA384, b"abc")]);
        assert_eq!(json["pcrs"]["4"]["sha384"], hex::encode(expected4));
        let keys: Vec<&String> = json["pcrs"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["4", "5"]);
    }

    #[test]
    fn mutated_real_logs_never_panic() {
        let original = ovmf_log();
        // A fixed xorshift sequence, so a failure reproduces.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..500 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 4 {
                let i = usize::try_from(next() % u64::try_from(bytes.len()).unwrap()).unwrap();
                bytes[i] = u8::try_from(next() & 0xFF).unwrap();
            }
            if let Ok(log) = parse(&bytes) {
                log.replay();
                log.render_text();
                log.to_json();
            }
        }
    }
}
