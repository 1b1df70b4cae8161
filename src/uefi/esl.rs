//! EFI signature lists and authenticated variables: the bytes of PK, KEK, db and dbx.
//!
//! A Secure Boot variable's value is a sequence of `EFI_SIGNATURE_LIST`s (UEFI 2.10, 32.4.1),
//! each holding signatures of one type and one size:
//!
//! ```text
//! EFI_SIGNATURE_LIST  SignatureType (GUID) | SignatureListSize u32 | SignatureHeaderSize u32 |
//!                     SignatureSize u32 | header[SignatureHeaderSize] |
//!                     EFI_SIGNATURE_DATA[(ListSize - 28 - HeaderSize) / SignatureSize]
//! EFI_SIGNATURE_DATA  SignatureOwner (GUID) | SignatureData[SignatureSize - 16]
//! ```
//!
//! All integers are little-endian. X.509 certificates differ in size, so each usually sits
//! in its own list; SHA-256 hashes (dbx, or db entries for single images) share one list.
//!
//! To change such a variable through `SetVariable` (or `efi-updatevar`) the new value is
//! prefixed with an `EFI_VARIABLE_AUTHENTICATION_2` header (UEFI 2.10, 8.2.2): the `.auth`
//! files efitools' `sign-efi-sig-list` writes. [`VariableUpdate`] makes them, [`parse_auth2`]
//! reads them.

use std::fmt;
use std::str::FromStr;

use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKeyRef, Private};
use openssl::stack::Stack;
use openssl::x509::{X509Ref, X509};
use thiserror::Error;

/// A GUID as UEFI stores it: 16 bytes in the "mixed-endian" layout, where the first three
/// fields (`u32`, `u16`, `u16`) are little-endian and the last eight bytes are in text order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid([u8; 16]);

impl Guid {
    /// The all-zero GUID (efitools' default signature owner).
    pub const ZERO: Guid = Guid([0; 16]);

    /// The GUID whose text form is `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// A GUID from its 16 stored (mixed-endian) bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// The 16 stored (mixed-endian) bytes, as firmware, ESLs and event logs hold them.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// A string that is not a GUID in the `8-4-4-4-12` hexadecimal text form.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{text:?} is not a GUID: expected 8-4-4-4-12 hexadecimal digits, like 8be4df61-93ca-11d2-aa0d-00e098032b8c")]
pub struct GuidParseError {
    /// The refused text.
    pub text: String,
}

impl FromStr for Guid {
    type Err = GuidParseError;

    fn from_str(s: &str) -> Result<Guid, GuidParseError> {
        let refuse = || GuidParseError { text: s.to_owned() };
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(refuse());
        }
        let mut digits = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return Err(refuse());
                }
                i += 1;
                continue;
            }
            let hi = hex_digit(b[i]).ok_or_else(refuse)?;
            let lo = hex_digit(b[i + 1]).ok_or_else(refuse)?;
            digits[n] = hi << 4 | lo;
            n += 1;
            i += 2;
        }
        // `digits` is the text order; the first three fields are stored little-endian.
        let d = digits;
        Ok(Guid::from_fields(
            u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
            u16::from_be_bytes([d[4], d[5]]),
            u16::from_be_bytes([d[6], d[7]]),
            [d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]],
        ))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// EFI_CERT_X509_GUID: one DER-encoded X.509 certificate per signature.
pub const EFI_CERT_X509_GUID: Guid = Guid::from_fields(
    0xa5c0_59a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
/// EFI_CERT_SHA256_GUID: one SHA-256 digest (e.g. an image's Authenticode hash) per signature.
pub const EFI_CERT_SHA256_GUID: Guid = Guid::from_fields(
    0xc1c4_1626,
    0x504c,
    0x4092,
    [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
);
/// EFI_GLOBAL_VARIABLE: the vendor GUID of PK, KEK, SecureBoot, SetupMode.
pub const EFI_GLOBAL_VARIABLE: Guid = Guid::from_fields(
    0x8be4_df61,
    0x93ca,
    0x11d2,
    [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
);
/// EFI_IMAGE_SECURITY_DATABASE_GUID: the vendor GUID of db and dbx.
pub const EFI_IMAGE_SECURITY_DATABASE: Guid = Guid::from_fields(
    0xd719_b2cb,
    0x3d3a,
    0x4596,
    [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
);
/// EFI_CERT_TYPE_PKCS7_GUID: the `CertType` of an authenticated variable's signature.
pub const EFI_CERT_TYPE_PKCS7_GUID: Guid = Guid::from_fields(
    0x4aaf_d29d,
    0x68df,
    0x49ee,
    [0x8a, 0xa9, 0x34, 0x7d, 0x37, 0x56, 0x65, 0xa7],
);

/// The vendor GUID of a Secure Boot key variable (`PK`, `KEK`, `db`, `dbx`), if `name` is one.
pub fn secure_boot_vendor(name: &str) -> Option<Guid> {
    match name {
        "PK" | "KEK" => Some(EFI_GLOBAL_VARIABLE),
        "db" | "dbx" => Some(EFI_IMAGE_SECURITY_DATABASE),
        _ => None,
    }
}

/// Variable attribute: stored across resets.
pub const EFI_VARIABLE_NON_VOLATILE: u32 = 0x01;
/// Variable attribute: visible to boot services.
pub const EFI_VARIABLE_BOOTSERVICE_ACCESS: u32 = 0x02;
/// Variable attribute: visible at runtime (to the OS).
pub const EFI_VARIABLE_RUNTIME_ACCESS: u32 = 0x04;
/// Variable attribute: writes must carry an `EFI_VARIABLE_AUTHENTICATION_2` header.
pub const EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS: u32 = 0x20;
/// Variable attribute (SetVariable only): append to the value instead of replacing it.
pub const EFI_VARIABLE_APPEND_WRITE: u32 = 0x40;
/// The attributes of PK, KEK, db and dbx: NV | BS | RT | TIME_BASED_AUTHENTICATED_WRITE_ACCESS.
pub const SECURE_BOOT_VARIABLE_ATTRIBUTES: u32 = EFI_VARIABLE_NON_VOLATILE
    | EFI_VARIABLE_BOOTSERVICE_ACCESS
    | EFI_VARIABLE_RUNTIME_ACCESS
    | EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS;

/// Size of the fixed part of an EFI_SIGNATURE_LIST.
const LIST_HEADER: usize = 28;
/// Size of EFI_SIGNATURE_DATA's SignatureOwner.
const OWNER: usize = 16;

/// Signature types whose SignatureSize the UEFI specification fixes (owner + payload), so a
/// list claiming another size is corrupt. EDK2 refuses such lists too.
const FIXED_SIGNATURE_SIZES: &[(Guid, u32)] = &[
    (EFI_CERT_SHA256_GUID, 16 + 32),
    // EFI_CERT_SHA1_GUID
    (
        Guid::from_fields(
            0x826c_a512,
            0xcf10,
            0x4ac9,
            [0xb1, 0x87, 0xbe, 0x01, 0x49, 0x66, 0x31, 0xbd],
        ),
        16 + 20,
    ),
    // EFI_CERT_SHA384_GUID
    (
        Guid::from_fields(
            0xff3e_5307,
            0x9fd0,
            0x48c9,
            [0x85, 0xf1, 0x8a, 0xd5, 0x6c, 0x70, 0x1e, 0x01],
        ),
        16 + 48,
    ),
    // EFI_CERT_SHA512_GUID
    (
        Guid::from_fields(
            0x093e_0fae,
            0xa6c4,
            0x4f50,
            [0x9f, 0x1b, 0xd4, 0x1e, 0x2b, 0x89, 0xc1, 0x9a],
        ),
        16 + 64,
    ),
    // EFI_CERT_RSA2048_GUID
    (
        Guid::from_fields(
            0x3c58_92e0,
            0x4a82,
            0x4f9c,
            [0xaa, 0xe1, 0xad, 0x6c, 0xc0, 0x79, 0x01, 0xc1],
        ),
        16 + 256,
    ),
    // EFI_CERT_X509_SHA256_GUID: the TBS digest plus a revocation time (EFI_TIME).
    (
        Guid::from_fields(
            0x3bd2_a492,
            0x96c0,
            0x4079,
            [0xb4, 0x20, 0xfc, 0xf9, 0x8e, 0xf1, 0x03, 0xed],
        ),
        16 + 32 + 16,
    ),
];

/// One EFI_SIGNATURE_DATA: a signature (certificate, hash, ...) and the GUID of its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureData {
    /// SignatureOwner: who enrolled it (an agent GUID; informational to firmware).
    pub owner: Guid,
    /// SignatureData: the DER certificate, the hash, ... depending on the list's type.
    pub data: Vec<u8>,
}

/// One EFI_SIGNATURE_LIST: signatures of one type and one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureList {
    /// SignatureType, e.g. [`EFI_CERT_X509_GUID`] or [`EFI_CERT_SHA256_GUID`].
    pub signature_type: Guid,
    /// The type-specific SignatureHeader (empty for every type the specification defines).
    pub header: Vec<u8>,
    /// The signatures; all must have the same `data` length (SignatureSize is per list).
    pub entries: Vec<SignatureData>,
}

impl SignatureList {
    /// A list holding one DER-encoded X.509 certificate, as `cert-to-efi-sig-list` makes it.
    pub fn x509(owner: Guid, der: &[u8]) -> SignatureList {
        SignatureList {
            signature_type: EFI_CERT_X509_GUID,
            header: Vec::new(),
            entries: vec![SignatureData {
                owner,
                data: der.to_vec(),
            }],
        }
    }

    /// A list of SHA-256 digests (Authenticode hashes of images), one owner for all.
    pub fn sha256(owner: Guid, digests: &[[u8; 32]]) -> SignatureList {
        SignatureList {
            signature_type: EFI_CERT_SHA256_GUID,
            header: Vec::new(),
            entries: digests
                .iter()
                .map(|d| SignatureData {
                    owner,
                    data: d.to_vec(),
                })
                .collect(),
        }
    }

    /// Appends this list's EFI_SIGNATURE_LIST bytes to `out`; `index` names it in errors.
    fn write(&self, index: usize, out: &mut Vec<u8>) -> Result<(), EslError> {
        let first = self
            .entries
            .first()
            .ok_or(EslError::NoSignatures { list: index })?;
        let data_len = first.data.len();
        if let Some((entry, e)) = self
            .entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.data.len() != data_len)
        {
            return Err(EslError::MixedSizes {
                list: index,
                entry,
                expected: data_len,
                found: e.data.len(),
            });
        }
        let too_large = || EslError::TooLarge { list: index };
        let sig_size = OWNER.checked_add(data_len).ok_or_else(too_large)?;
        let list_size = sig_size
            .checked_mul(self.entries.len())
            .and_then(|n| n.checked_add(LIST_HEADER + self.header.len()))
            .ok_or_else(too_large)?;
        let as_u32 = |n: usize| u32::try_from(n).map_err(|_| too_large());
        let (list_size, header_size, sig_size) = (
            as_u32(list_size)?,
            as_u32(self.header.len())?,
            as_u32(sig_size)?,
        );
        out.extend_from_slice(self.signature_type.as_bytes());
        out.extend_from_slice(&list_size.to_le_bytes());
        out.extend_from_slice(&header_size.to_le_bytes());
        out.extend_from_slice(&sig_size.to_le_bytes());
        out.extend_from_slice(&self.header);
        for e in &self.entries {
            out.extend_from_slice(e.owner.as_bytes());
            out.extend_from_slice(&e.data);
        }
        Ok(())
    }
}

/// A malformed signature list (with the byte offset of the list within the variable), or a
/// [`SignatureList`] that cannot be written (with its index).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EslError {
    /// Fewer than the 28 header bytes remain.
    #[error("EFI_SIGNATURE_LIST at byte {offset}: truncated header ({available} of 28 bytes)")]
    TruncatedHeader {
        /// Where the list starts.
        offset: usize,
        /// Bytes left in the variable.
        available: usize,
    },
    /// SignatureListSize runs past the end of the variable.
    #[error("EFI_SIGNATURE_LIST at byte {offset}: SignatureListSize {list_size} runs past the end of the data ({available} bytes left)")]
    ListPastEnd {
        /// Where the list starts.
        offset: usize,
        /// The claimed SignatureListSize.
        list_size: u32,
        /// Bytes left in the variable.
        available: usize,
    },
    /// SignatureSize is smaller than the 16-byte owner GUID.
    #[error("EFI_SIGNATURE_LIST at byte {offset}: SignatureSize {signature_size} is smaller than the 16-byte SignatureOwner")]
    SignatureSizeTooSmall {
        /// Where the list starts.
        offset: usize,
        /// The claimed SignatureSize.
        signature_size: u32,
    },
    /// SignatureListSize cannot hold the 28-byte header plus SignatureHeaderSize.
    #[error("EFI_SIGNATURE_LIST at byte {offset}: SignatureListSize {list_size} cannot hold the 28-byte header and a SignatureHeaderSize of {header_size}")]
    HeaderPastList {
        /// Where the list starts.
        offset: usize,
        /// The claimed SignatureListSize.
        list_size: u32,
        /// The claimed SignatureHeaderSize.
        header_size: u32,
    },
    /// A list with no signatures at all (firmware treats it as corrupt).
    #[error("EFI_SIGNATURE_LIST at byte {offset}: holds no signatures")]
    EmptyList {
        /// Where the list starts.
        offset: usize,
    },
    /// The signatures' bytes are not a whole number of SignatureSize entries.
    #[error("EFI_SIGNATURE_LIST at byte {offset}: {body} bytes of signatures are not a multiple of SignatureSize {signature_size}")]
    NotMultiple {
        /// Where the list starts.
        offset: usize,
        /// SignatureListSize - 28 - SignatureHeaderSize.
        body: usize,
        /// The claimed SignatureSize.
        signature_size: u32,
    },
    /// A fixed-size type (SHA-256, ...) with another SignatureSize.
    #[error("EFI_SIGNATURE_LIST at byte {offset}: SignatureType {signature_type} has SignatureSize {expected}, not {found}")]
    WrongSignatureSize {
        /// Where the list starts.
        offset: usize,
        /// The list's SignatureType.
        signature_type: Guid,
        /// The size the specification fixes for it.
        expected: u32,
        /// The claimed SignatureSize.
        found: u32,
    },
    /// A list to write has no entries.
    #[error("signature list {list} has no entries; an EFI_SIGNATURE_LIST needs at least one")]
    NoSignatures {
        /// Index of the list.
        list: usize,
    },
    /// A list to write has entries of different sizes.
    #[error("signature list {list}: entry {entry} has {found} bytes but entry 0 has {expected}; put signatures of different sizes in separate lists")]
    MixedSizes {
        /// Index of the list.
        list: usize,
        /// Index of the first entry that differs.
        entry: usize,
        /// The first entry's data length.
        expected: usize,
        /// This entry's data length.
        found: usize,
    },
    /// A list to write does not fit the 32-bit size fields.
    #[error("signature list {list} is larger than an EFI_SIGNATURE_LIST can be (4 GiB)")]
    TooLarge {
        /// Index of the list.
        list: usize,
    },
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn guid_at(bytes: &[u8], at: usize) -> Guid {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[at..at + 16]);
    Guid(b)
}

/// Parses a whole variable value: EFI_SIGNATURE_LISTs back to back, to the last byte.
///
/// Strict: every size field is checked against the data and against the others, lists with
/// no signatures are refused, and the fixed-size types (SHA-256, SHA-1, ...) must have their
/// specified SignatureSize. An empty value parses as no lists (a variable that is absent).
pub fn parse(bytes: &[u8]) -> Result<Vec<SignatureList>, EslError> {
    let mut lists = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < LIST_HEADER {
            return Err(EslError::TruncatedHeader {
                offset,
                available: rest.len(),
            });
        }
        let signature_type = guid_at(rest, 0);
        let list_size = u32_at(rest, 16);
        let header_size = u32_at(rest, 20);
        let signature_size = u32_at(rest, 24);
        // u64 arithmetic: the three u32 fields can sum past usize on no target, nor overflow.
        if u64::from(list_size) > rest.len() as u64 {
            return Err(EslError::ListPastEnd {
                offset,
                list_size,
                available: rest.len(),
            });
        }
        if (LIST_HEADER as u64) + u64::from(header_size) > u64::from(list_size) {
            return Err(EslError::HeaderPastList {
                offset,
                list_size,
                header_size,
            });
        }
        if (signature_size as usize) < OWNER {
            return Err(EslError::SignatureSizeTooSmall {
                offset,
                signature_size,
            });
        }
        // Both fit in `rest` now, so these are plain in-bounds usizes.
        let (list_size_us, header_us, sig_us) = (
            list_size as usize,
            header_size as usize,
            signature_size as usize,
        );
        let body = list_size_us - LIST_HEADER - header_us;
        if body == 0 {
            return Err(EslError::EmptyList { offset });
        }
        if !body.is_multiple_of(sig_us) {
            return Err(EslError::NotMultiple {
                offset,
                body,
                signature_size,
            });
        }
        if let Some(&(_, expected)) = FIXED_SIGNATURE_SIZES
            .iter()
            .find(|(t, _)| *t == signature_type)
        {
            if expected != signature_size {
                return Err(EslError::WrongSignatureSize {
                    offset,
                    signature_type,
                    expected,
                    found: signature_size,
                });
            }
        }
        let header = rest[LIST_HEADER..LIST_HEADER + header_us].to_vec();
        let entries = rest[LIST_HEADER + header_us..list_size_us]
            .chunks_exact(sig_us)
            .map(|e| SignatureData {
                owner: guid_at(e, 0),
                data: e[OWNER..].to_vec(),
            })
            .collect();
        lists.push(SignatureList {
            signature_type,
            header,
            entries,
        });
        offset += list_size_us;
    }
    Ok(lists)
}

/// Writes signature lists back to back: the value of PK, KEK, db or dbx.
///
/// Fails only for lists the format cannot express: no entries, entries of different
/// sizes, or more than 4 GiB.
pub fn serialize(lists: &[SignatureList]) -> Result<Vec<u8>, EslError> {
    let mut out = Vec::new();
    for (index, list) in lists.iter().enumerate() {
        list.write(index, &mut out)?;
    }
    Ok(out)
}

/// EFI_TIME as authenticated variables use it: a UTC calendar time to the second.
///
/// UEFI requires `Pad1`, `Nanosecond`, `TimeZone`, `Daylight` and `Pad2` to be zero in an
/// `EFI_VARIABLE_AUTHENTICATION_2` timestamp, so they are not represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct EfiTime {
    /// 1900–9999 in real firmware (0 is accepted: a "no time" stamp some tools write).
    pub year: u16,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
    /// 0–59.
    pub second: u8,
}

impl EfiTime {
    /// The UTC time `secs` seconds after the Unix epoch (e.g. `SOURCE_DATE_EPOCH`), so a
    /// release's `.auth` files are reproducible.
    pub fn from_unix(secs: u64) -> EfiTime {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // Civil date from days since 1970-01-01 in the proleptic Gregorian calendar, by
        // 400-year eras (146097 days) starting on 0000-03-01, so leap days end a year.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        EfiTime {
            year: u16::try_from(year).unwrap_or(u16::MAX),
            month: month as u8,
            day: day as u8,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
        }
    }

    /// The 16-byte EFI_TIME.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&self.year.to_le_bytes());
        b[2] = self.month;
        b[3] = self.day;
        b[4] = self.hour;
        b[5] = self.minute;
        b[6] = self.second;
        b
    }

    /// Reads an authenticated variable's EFI_TIME, refusing non-zero padding, nanoseconds,
    /// time zone or daylight flags (firmware refuses them as well).
    pub fn from_bytes(b: &[u8; 16]) -> Result<EfiTime, AuthError> {
        if b[7..].iter().any(|&x| x != 0) {
            return Err(AuthError::TimeStampNotZeroed);
        }
        Ok(EfiTime {
            year: u16::from_le_bytes([b[0], b[1]]),
            month: b[2],
            day: b[3],
            hour: b[4],
            minute: b[5],
            second: b[6],
        })
    }
}

impl fmt::Display for EfiTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// WIN_CERTIFICATE.wRevision of UEFI's certificates.
const WIN_CERT_REVISION: u16 = 0x0200;
/// WIN_CERTIFICATE.wCertificateType for WIN_CERTIFICATE_UEFI_GUID.
const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0ef1;
/// EFI_TIME + WIN_CERTIFICATE (dwLength, wRevision, wCertificateType) + CertType GUID.
const AUTH2_HEADER: usize = 16 + 8 + 16;
/// The ContentInfo contentType of PKCS#7 SignedData: 1.2.840.113549.1.7.2, DER-encoded.
const OID_PKCS7_SIGNED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];

/// A malformed `EFI_VARIABLE_AUTHENTICATION_2` payload, or a signature that failed.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Shorter than the 40-byte header.
    #[error("authenticated variable: {size} bytes is shorter than the 40-byte EFI_VARIABLE_AUTHENTICATION_2 header")]
    Truncated {
        /// Bytes available.
        size: usize,
    },
    /// EFI_TIME with padding, nanoseconds, time zone or daylight set.
    #[error("authenticated variable at byte 7: TimeStamp has non-zero Pad1/Nanosecond/TimeZone/Daylight/Pad2, which UEFI requires to be zero")]
    TimeStampNotZeroed,
    /// dwLength does not fit the header and the payload.
    #[error("authenticated variable at byte 16: WIN_CERTIFICATE dwLength {length} must be at least 25 and end within the {size}-byte payload")]
    BadLength {
        /// The claimed dwLength.
        length: u32,
        /// Bytes available.
        size: usize,
    },
    /// Not revision 0x0200 / type WIN_CERT_TYPE_EFI_GUID.
    #[error("authenticated variable at byte 20: WIN_CERTIFICATE revision {revision:#06x} type {cert_type:#06x}, expected revision 0x0200 type 0x0ef1 (WIN_CERT_TYPE_EFI_GUID)")]
    BadCertificateHeader {
        /// The wRevision found.
        revision: u16,
        /// The wCertificateType found.
        cert_type: u16,
    },
    /// CertType is not EFI_CERT_TYPE_PKCS7_GUID.
    #[error("authenticated variable at byte 24: CertType {found} is not EFI_CERT_TYPE_PKCS7_GUID")]
    NotPkcs7 {
        /// The CertType found.
        found: Guid,
    },
    /// OpenSSL could not make the PKCS#7 signature.
    #[error("signing variable {name}: {source}")]
    Sign {
        /// The variable being signed.
        name: String,
        /// OpenSSL's error stack.
        source: openssl::error::ErrorStack,
    },
    /// OpenSSL produced DER that is not a ContentInfo wrapping SignedData.
    #[error("signing variable {name}: unexpected PKCS#7 structure from OpenSSL ({what})")]
    UnexpectedDer {
        /// The variable being signed.
        name: String,
        /// What did not match.
        what: &'static str,
    },
}

/// A new value for an authenticated variable, to be signed into an
/// `EFI_VARIABLE_AUTHENTICATION_2` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableUpdate<'a> {
    /// VariableName, e.g. `PK`.
    pub name: &'a str,
    /// VendorGuid, e.g. [`EFI_GLOBAL_VARIABLE`] for PK.
    pub vendor: Guid,
    /// Attributes passed to SetVariable (and signed), e.g. [`SECURE_BOOT_VARIABLE_ATTRIBUTES`].
    pub attributes: u32,
    /// TimeStamp; firmware refuses an update not later than the variable's current one
    /// (except when the platform is in setup mode or the write appends).
    pub timestamp: EfiTime,
    /// The new value, e.g. serialized signature lists.
    pub data: &'a [u8],
}

impl<'a> VariableUpdate<'a> {
    /// A replacing update of PK, KEK, db or dbx with the usual vendor GUID and attributes;
    /// `None` for any other name.
    pub fn secure_boot(
        name: &'a str,
        data: &'a [u8],
        timestamp: EfiTime,
    ) -> Option<VariableUpdate<'a>> {
        Some(VariableUpdate {
            name,
            vendor: secure_boot_vendor(name)?,
            attributes: SECURE_BOOT_VARIABLE_ATTRIBUTES,
            timestamp,
            data,
        })
    }

    /// The bytes the PKCS#7 signature covers:
    /// `VariableName (UTF-16LE, no NUL) || VendorGuid || Attributes (u32 LE) || TimeStamp || Data`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.name.len() * 2 + 36 + self.data.len());
        for unit in self.name.encode_utf16() {
            out.extend_from_slice(&unit.to_le_bytes());
        }
        out.extend_from_slice(self.vendor.as_bytes());
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&self.timestamp.to_bytes());
        out.extend_from_slice(self.data);
        out
    }

    /// The payload for SetVariable given a DER PKCS#7 signature made elsewhere (an HSM, a
    /// detached signing step): `EFI_VARIABLE_AUTHENTICATION_2 || Data`.
    pub fn with_signature(&self, pkcs7: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(AUTH2_HEADER + pkcs7.len() + self.data.len());
        out.extend_from_slice(&self.timestamp.to_bytes());
        // dwLength counts the whole WIN_CERTIFICATE_UEFI_GUID: its 24-byte header + CertData.
        // A signature over 4 GiB cannot come from `sign`; saturate rather than wrap.
        let length = u32::try_from(24 + pkcs7.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&WIN_CERT_REVISION.to_le_bytes());
        out.extend_from_slice(&WIN_CERT_TYPE_EFI_GUID.to_le_bytes());
        out.extend_from_slice(EFI_CERT_TYPE_PKCS7_GUID.as_bytes());
        out.extend_from_slice(pkcs7);
        out.extend_from_slice(self.data);
        out
    }

    /// Signs the update with the parent key (PK signs PK and KEK; KEK signs db and dbx) and
    /// returns the SetVariable payload, the same bytes `sign-efi-sig-list` writes.
    ///
    /// The signature is PKCS#7 SignedData, detached (no content), SHA-256, without signed
    /// attributes (so a fixed timestamp gives identical bytes), carrying the signer's
    /// certificate. The CertData is the bare DER `SignedData`, not the `ContentInfo` around
    /// it: that is what UEFI 2.10 8.2.2 specifies, what efitools and Microsoft's published
    /// updates carry, and EDK2 accepts it (it also accepts a ContentInfo, other firmware
    /// may not).
    pub fn sign(
        &self,
        signer_cert: &X509Ref,
        signer_key: &PKeyRef<Private>,
    ) -> Result<Vec<u8>, AuthError> {
        let sign_err = |source| AuthError::Sign {
            name: self.name.to_owned(),
            source,
        };
        let no_extra_certs = Stack::<X509>::new().map_err(sign_err)?;
        let p7 = Pkcs7::sign(
            signer_cert,
            signer_key,
            &no_extra_certs,
            &self.signed_bytes(),
            Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY | Pkcs7Flags::NOATTR,
        )
        .map_err(sign_err)?;
        let content_info = p7.to_der().map_err(sign_err)?;
        let signed_data =
            signed_data_of(&content_info).map_err(|what| AuthError::UnexpectedDer {
                name: self.name.to_owned(),
                what,
            })?;
        Ok(self.with_signature(signed_data))
    }
}

/// One DER TLV header at `at`: (tag, header length, content length).
fn der_header(der: &[u8], at: usize) -> Result<(u8, usize, usize), &'static str> {
    let tag = *der.get(at).ok_or("truncated tag")?;
    let first = *der.get(at + 1).ok_or("truncated length")?;
    if first < 0x80 {
        return Ok((tag, 2, first as usize));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return Err("unsupported length form");
    }
    let bytes = der.get(at + 2..at + 2 + n).ok_or("truncated length")?;
    let len = bytes.iter().fold(0usize, |acc, &b| acc << 8 | b as usize);
    Ok((tag, 2 + n, len))
}

/// The SignedData inside a PKCS#7 `ContentInfo ::= SEQUENCE { contentType OID,
/// content [0] EXPLICIT SignedData }`.
fn signed_data_of(content_info: &[u8]) -> Result<&[u8], &'static str> {
    let (tag, hlen, len) = der_header(content_info, 0)?;
    if tag != 0x30 || hlen + len != content_info.len() {
        return Err("ContentInfo is not one SEQUENCE");
    }
    let mut at = hlen;
    if content_info.get(at..at + OID_PKCS7_SIGNED_DATA.len()) != Some(OID_PKCS7_SIGNED_DATA) {
        return Err("contentType is not signedData");
    }
    at += OID_PKCS7_SIGNED_DATA.len();
    let (tag, hlen, len) = der_header(content_info, at)?;
    if tag != 0xa0 || at + hlen + len != content_info.len() {
        return Err("content is not one [0] EXPLICIT element");
    }
    at += hlen;
    let (tag, hlen, len) = der_header(content_info, at)?;
    if tag != 0x30 || at + hlen + len != content_info.len() {
        return Err("SignedData is not one SEQUENCE");
    }
    Ok(&content_info[at..])
}

/// The parts of an `EFI_VARIABLE_AUTHENTICATION_2` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth2 {
    /// The signed TimeStamp.
    pub timestamp: EfiTime,
    /// CertData: the DER PKCS#7 signature (SignedData, or a ContentInfo around it).
    pub pkcs7: Vec<u8>,
    /// The variable's new value (for PK/KEK/db/dbx: signature lists; see [`parse`]).
    pub data: Vec<u8>,
}

/// Splits a SetVariable payload (a `.auth` file) into timestamp, PKCS#7 signature and
/// data. The signature is not verified here: that needs the parent key and the variable's
/// name, GUID and attributes (see [`VariableUpdate::signed_bytes`]).
pub fn parse_auth2(bytes: &[u8]) -> Result<Auth2, AuthError> {
    if bytes.len() < AUTH2_HEADER {
        return Err(AuthError::Truncated { size: bytes.len() });
    }
    let mut ts = [0u8; 16];
    ts.copy_from_slice(&bytes[..16]);
    let timestamp = EfiTime::from_bytes(&ts)?;
    let length = u32_at(bytes, 16);
    // An empty CertData is no signature at all, so at least one byte past the header.
    if (length as usize) <= 24 || 16 + length as u64 > bytes.len() as u64 {
        return Err(AuthError::BadLength {
            length,
            size: bytes.len(),
        });
    }
    let revision = u16::from_le_bytes([bytes[20], bytes[21]]);
    let cert_type = u16::from_le_bytes([bytes[22], bytes[23]]);
    if revision != WIN_CERT_REVISION || cert_type != WIN_CERT_TYPE_EFI_GUID {
        return Err(AuthError::BadCertificateHeader {
            revision,
            cert_type,
        });
    }
    let found = guid_at(bytes, 24);
    if found != EFI_CERT_TYPE_PKCS7_GUID {
        return Err(AuthError::NotPkcs7 { found });
    }
    let end = 16 + length as usize;
    Ok(Auth2 {
        timestamp,
        pkcs7: bytes[AUTH2_HEADER..end].to_vec(),
        data: bytes[end..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;

    const OWNER_A: Guid =
        Guid::from_fields(0x0102_0304, 0x0506, 0x0708, [9, 10, 11, 12, 13, 14, 15, 16]);

    #[test]
    fn guid_text_and_layout() {
        assert_eq!(
            EFI_GLOBAL_VARIABLE.to_string(),
            "8be4df61-93ca-11d2-aa0d-00e098032b8c"
        );
        // The stored layout, as in UEFI_VARIABLE_DATA and ESLs.
        assert_eq!(
            EFI_GLOBAL_VARIABLE.as_bytes(),
            &[
                0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03,
                0x2b, 0x8c
            ]
        );
        for (g, s) in [
            (EFI_CERT_X509_GUID, "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"),
            (EFI_CERT_SHA256_GUID, "c1c41626-504c-4092-aca9-41f936934328"),
            (
                EFI_IMAGE_SECURITY_DATABASE,
                "d719b2cb-3d3a-4596-a3bc-dad00e67656f",
            ),
            (
                EFI_CERT_TYPE_PKCS7_GUID,
                "4aafd29d-68df-49ee-8aa9-347d375665a7",
            ),
        ] {
            assert_eq!(g.to_string(), s);
            assert_eq!(s.parse::<Guid>(), Ok(g));
            assert_eq!(s.to_uppercase().parse::<Guid>(), Ok(g));
        }
        for bad in [
            "",
            "8be4df61-93ca-11d2-aa0d-00e098032b8",
            "8be4df61-93ca-11d2-aa0d-00e098032b8cc",
            "8be4df61093ca-11d2-aa0d-00e098032b8c",
            "8be4df61-93ca-11d2-aa0d-00e098032b8g",
            "+be4df61-93ca-11d2-aa0d-00e098032b8c",
            "8be4df61-93ca-11d2-aa0d-00e098032bé",
        ] {
            assert!(bad.parse::<Guid>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn x509_list_layout() {
        let der = [0x30, 0x03, 1, 2, 3];
        let bytes = serialize(&[SignatureList::x509(OWNER_A, &der)]).unwrap();
        assert_eq!(&bytes[..16], EFI_CERT_X509_GUID.as_bytes());
        assert_eq!(u32_at(&bytes, 16), 28 + 16 + 5);
        assert_eq!(u32_at(&bytes, 20), 0);
        assert_eq!(u32_at(&bytes, 24), 16 + 5);
        assert_eq!(&bytes[28..44], OWNER_A.as_bytes());
        assert_eq!(&bytes[44..], &der);
    }

    #[test]
    fn round_trip_several_lists() {
        let lists = vec![
            SignatureList::x509(OWNER_A, &[0x30; 700]),
            SignatureList::x509(Guid::ZERO, &[0x31; 1200]),
            SignatureList::sha256(OWNER_A, &[[1; 32], [2; 32], [3; 32]]),
            SignatureList {
                signature_type: OWNER_A,
                header: vec![7; 5],
                entries: vec![SignatureData {
                    owner: OWNER_A,
                    data: vec![],
                }],
            },
        ];
        let bytes = serialize(&lists).unwrap();
        assert_eq!(bytes.len(), 4 * 28 + 716 + 1216 + 3 * 48 + 5 + 16);
        let back = parse(&bytes).unwrap();
        assert_eq!(back, lists);
        assert_eq!(serialize(&back).unwrap(), bytes);
        assert_eq!(parse(&[]).unwrap(), vec![]);
    }

    /// A list header with the given sizes and `extra` bytes after it.
    fn raw_list(ty: Guid, list: u32, header: u32, sig: u32, extra: usize) -> Vec<u8> {
        let mut v = ty.as_bytes().to_vec();
        v.extend_from_slice(&list.to_le_bytes());
        v.extend_from_slice(&header.to_le_bytes());
        v.extend_from_slice(&sig.to_le_bytes());
        v.resize(28 + extra, 0xab);
        v
    }

    #[test]
    fn malformed_lists_are_refused_at_their_offset() {
        let good = serialize(&[SignatureList::sha256(OWNER_A, &[[9; 32]])]).unwrap();
        let at = good.len(); // the bad list comes second
        let with = |bad: Vec<u8>| parse(&[good.clone(), bad].concat()).unwrap_err();

        assert_eq!(
            with(good[..27].to_vec()),
            EslError::TruncatedHeader {
                offset: at,
                available: 27
            }
        );
        assert_eq!(
            with(raw_list(EFI_CERT_X509_GUID, u32::MAX, 0, 20, 4)),
            EslError::ListPastEnd {
                offset: at,
                list_size: u32::MAX,
                available: 32
            }
        );
        // HeaderSize near u32::MAX must not wrap around.
        assert_eq!(
            with(raw_list(EFI_CERT_X509_GUID, 48, 0xffff_fff0, 20, 20)),
            EslError::HeaderPastList {
                offset: at,
                list_size: 48,
                header_size: 0xffff_fff0
            }
        );
        assert_eq!(
            with(raw_list(EFI_CERT_X509_GUID, 20, 0, 20, 0)),
            EslError::HeaderPastList {
                offset: at,
                list_size: 20,
                header_size: 0
            }
        );
        assert_eq!(
            with(raw_list(EFI_CERT_X509_GUID, 44, 0, 15, 16)),
            EslError::SignatureSizeTooSmall {
                offset: at,
                signature_size: 15
            }
        );
        assert_eq!(
            with(raw_list(EFI_CERT_X509_GUID, 0, 0, 0, 0)).to_string(),
            format!("EFI_SIGNATURE_LIST at byte {at}: SignatureListSize 0 cannot hold the 28-byte header and a SignatureHeaderSize of 0")
        );
        assert_eq!(
            with(raw_list(EFI_CERT_X509_GUID, 28, 0, 16, 0)),
            EslError::EmptyList { offset: at }
        );
        assert_eq!(
            with(raw_list(EFI_CERT_X509_GUID, 28 + 50, 0, 20, 50)),
            EslError::NotMultiple {
                offset: at,
                body: 50,
                signature_size: 20
            }
        );
        assert_eq!(
            with(raw_list(EFI_CERT_SHA256_GUID, 28 + 64, 0, 64, 64)),
            EslError::WrongSignatureSize {
                offset: at,
                signature_type: EFI_CERT_SHA256_GUID,
                expected: 48,
                found: 64
            }
        );
        // A good list followed by trailing garbage shorter than a header.
        assert!(matches!(
            parse(&[good.clone(), vec![0; 3]].concat()),
            Err(EslError::TruncatedHeader { offset, available: 3 }) if offset == at
        ));
    }

    #[test]
    fn unwritable_lists_are_refused() {
        let mut mixed = SignatureList::sha256(OWNER_A, &[[0; 32], [1; 32]]);
        mixed.entries[1].data.push(0);
        let empty = SignatureList::sha256(OWNER_A, &[]);
        let ok = SignatureList::x509(OWNER_A, b"x");
        assert_eq!(
            serialize(&[ok.clone(), mixed]),
            Err(EslError::MixedSizes {
                list: 1,
                entry: 1,
                expected: 32,
                found: 33
            })
        );
        assert_eq!(
            serialize(&[ok, empty]),
            Err(EslError::NoSignatures { list: 1 })
        );
    }

    #[test]
    fn efi_time_from_unix() {
        assert_eq!(EfiTime::from_unix(0).to_string(), "1970-01-01 00:00:00");
        assert_eq!(
            EfiTime::from_unix(1_704_164_645).to_string(),
            "2024-01-02 03:04:05"
        );
        // A leap day.
        assert_eq!(
            EfiTime::from_unix(951_782_400).to_string(),
            "2000-02-29 00:00:00"
        );
        let t = EfiTime::from_unix(1_704_164_645);
        assert_eq!(
            t.to_bytes(),
            [0xe8, 0x07, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(EfiTime::from_bytes(&t.to_bytes()).unwrap(), t);
        let mut tz = t.to_bytes();
        tz[12] = 1;
        assert!(matches!(
            EfiTime::from_bytes(&tz),
            Err(AuthError::TimeStampNotZeroed)
        ));
    }

    fn self_signed() -> (X509, PKey<Private>) {
        use openssl::asn1::Asn1Time;
        use openssl::bn::BigNum;
        use openssl::hash::MessageDigest;
        use openssl::rsa::Rsa;
        use openssl::x509::X509NameBuilder;
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "zoa test PK").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (b.build(), key)
    }

    /// Wraps bare SignedData into the ContentInfo OpenSSL parses.
    fn content_info(signed_data: &[u8]) -> Vec<u8> {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut v = vec![tag];
            let n = body.len();
            if n < 0x80 {
                v.push(n as u8);
            } else {
                let be = (n as u32).to_be_bytes();
                let skip = be.iter().take_while(|&&b| b == 0).count();
                v.push(0x80 | (4 - skip) as u8);
                v.extend_from_slice(&be[skip..]);
            }
            v.extend_from_slice(body);
            v
        }
        tlv(
            0x30,
            &[OID_PKCS7_SIGNED_DATA.to_vec(), tlv(0xa0, signed_data)].concat(),
        )
    }

    #[test]
    fn signed_update_round_trips_and_verifies() {
        use openssl::x509::store::X509StoreBuilder;
        let (cert, key) = self_signed();
        let esl = serialize(&[SignatureList::x509(OWNER_A, &cert.to_der().unwrap())]).unwrap();
        let ts = EfiTime::from_unix(1_704_164_645);
        let update = VariableUpdate::secure_boot("PK", &esl, ts).unwrap();
        assert_eq!(update.attributes, 0x27);
        let auth = update.sign(&cert, &key).unwrap();
        // Deterministic: no signing-time attribute, RSA PKCS#1 v1.5.
        assert_eq!(update.sign(&cert, &key).unwrap(), auth);

        let parsed = parse_auth2(&auth).unwrap();
        assert_eq!(parsed.timestamp, ts);
        assert_eq!(parsed.data, esl);
        assert_eq!(parsed.pkcs7[0], 0x30);
        assert_eq!(update.with_signature(&parsed.pkcs7), auth);

        // OpenSSL verifies the signature over exactly the UEFI-defined bytes.
        let p7 = Pkcs7::from_der(&content_info(&parsed.pkcs7)).unwrap();
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(cert.clone()).unwrap();
        let store = store.build();
        let none = Stack::new().unwrap();
        let mut out = Vec::new();
        p7.verify(
            &none,
            &store,
            Some(&update.signed_bytes()),
            Some(&mut out),
            Pkcs7Flags::BINARY,
        )
        .unwrap();
        let tampered = VariableUpdate {
            name: "KEK",
            ..update.clone()
        };
        assert!(p7
            .verify(
                &none,
                &store,
                Some(&tampered.signed_bytes()),
                None,
                Pkcs7Flags::BINARY
            )
            .is_err());
        // The signed prefix: "PK" in UTF-16LE, the vendor GUID, the attributes, the time.
        let signed = update.signed_bytes();
        assert_eq!(&signed[..4], b"P\0K\0");
        assert_eq!(&signed[4..20], EFI_GLOBAL_VARIABLE.as_bytes());
        assert_eq!(&signed[20..24], &[0x27, 0, 0, 0]);
        assert_eq!(&signed[24..40], &ts.to_bytes());
        assert_eq!(&signed[40..], &esl[..]);
        assert!(VariableUpdate::secure_boot("Boot0000", &esl, ts).is_none());
    }

    #[test]
    fn malformed_auth_is_refused() {
        let update = VariableUpdate::secure_boot("db", b"data", EfiTime::default()).unwrap();
        let good = update.with_signature(&[0x30, 0x00]);
        assert_eq!(parse_auth2(&good).unwrap().pkcs7, vec![0x30, 0x00]);
        assert!(matches!(
            parse_auth2(&good[..39]),
            Err(AuthError::Truncated { size: 39 })
        ));
        let mut long = good.clone();
        long[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_auth2(&long),
            Err(AuthError::BadLength {
                length: u32::MAX,
                ..
            })
        ));
        let mut empty_sig = good.clone();
        empty_sig[16..20].copy_from_slice(&24u32.to_le_bytes());
        assert!(matches!(
            parse_auth2(&empty_sig),
            Err(AuthError::BadLength { length: 24, .. })
        ));
        let mut rev = good.clone();
        rev[21] = 0x01;
        assert!(matches!(
            parse_auth2(&rev),
            Err(AuthError::BadCertificateHeader {
                revision: 0x0100,
                cert_type: 0x0ef1
            })
        ));
        let mut ty = good.clone();
        ty[24] ^= 1;
        assert!(matches!(parse_auth2(&ty), Err(AuthError::NotPkcs7 { .. })));
        let mut time = good;
        time[8] = 1;
        assert!(matches!(
            parse_auth2(&time),
            Err(AuthError::TimeStampNotZeroed)
        ));
    }
}
