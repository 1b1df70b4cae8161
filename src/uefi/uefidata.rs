//! The AMI `UefiData` blob: the UEFI variable store EC2 gives an instance booted from an AMI
//! (`RegisterImage --uefi-data`, base64), read and written in the format of AWS's
//! python-uefivars (`uefivars -o aws`, version 1.2).
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! blob    "AMZNUEFI" | crc32c u32 | version u32 = 0 | zlib stream
//!         crc32c (Castagnoli) covers everything after itself: the version and the zlib stream.
//! zlib    level 9, with the preset dictionary `aws_uefi_v0.dict` (DICTID in the zlib header).
//! store   count u64 | count × variable
//! var     name (u64 length + UTF-8) | data (u64 length + bytes) | vendor GUID (16 bytes) |
//!         attributes u32 | if attributes & TIME_BASED_AUTHENTICATED_WRITE_ACCESS (0x20):
//!         timestamp (EFI_TIME, 16 bytes) | digest (u64 length + bytes, 32 bytes in practice)
//! ```
//!
//! uefivars writes an all-zero timestamp and an all-zero 32-byte digest for variables it
//! is given without them (PK/KEK/db/dbx from ESL files), in the order PK, KEK, db, dbx;
//! [`UefiVarStore::secure_boot`] does the same, so with zlib (the reference implementation,
//! see `Cargo.toml`) the same keys give the same blob as uefivars, byte for byte.

use base64::Engine as _;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use thiserror::Error;

use super::esl::{
    self, EslError, Guid, SignatureList, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE,
    EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS, SECURE_BOOT_VARIABLE_ATTRIBUTES,
};

/// The blob's first eight bytes (uefivars reads them as the u64 0x494645554e5a4d41).
pub const MAGIC: &[u8; 8] = b"AMZNUEFI";
/// The only blob version there is.
pub const VERSION: u32 = 0;
/// The largest blob [`UefiVarStore::from_blob`] reads. EC2 caps `UefiData` far below this
/// (tens of KiB of base64); anything larger did not come from EC2.
pub const MAX_BLOB_BYTES: usize = 256 * 1024;
/// The largest decompressed variable store [`UefiVarStore::from_blob`] accepts: the blob is
/// untrusted, and zlib expands up to ~1000×. Real stores (OVMF's is 528 KiB, EC2's smaller)
/// fit with room to spare.
pub const MAX_STORE_BYTES: usize = 1024 * 1024;

/// The zlib preset dictionary of blob version 0: the `dict` bytes of `UEFIVarStoreV0` in
/// python-uefivars 1.2 (`pyuefivars/aws_v0.py`, <https://github.com/awslabs/python-uefivars>,
/// MIT), 11381 bytes, sha256
/// b6c4f52acbb0ab9aa415290e6c223af871eaa3d430c96b8116899d994681535b. It is part of the format:
/// a blob compressed with it cannot be read without it.
const DICTIONARY: &[u8] = include_bytes!("aws_uefi_v0.dict");

/// Header bytes before the zlib stream: magic, crc32c, version.
const HEADER: usize = 16;
/// The digest uefivars writes for a time-based authenticated variable that has none.
const EMPTY_DIGEST: [u8; 32] = [0; 32];

/// One UEFI variable in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiVar {
    /// VariableName, e.g. `PK`.
    pub name: String,
    /// VendorGuid, e.g. [`EFI_GLOBAL_VARIABLE`].
    pub guid: Guid,
    /// Attributes, e.g. [`SECURE_BOOT_VARIABLE_ATTRIBUTES`] (0x27).
    pub attributes: u32,
    /// The value.
    pub data: Vec<u8>,
    /// The EFI_TIME of the last authenticated write (all zero: none). Stored only when
    /// `attributes` has TIME_BASED_AUTHENTICATED_WRITE_ACCESS; otherwise kept all zero.
    pub timestamp: [u8; 16],
    /// The firmware's signer record kept with a time-based authenticated variable (32 bytes;
    /// all zero when none, as for keys enrolled through UefiData). Stored only when
    /// `attributes` has TIME_BASED_AUTHENTICATED_WRITE_ACCESS; otherwise kept empty.
    pub digest: Vec<u8>,
}

impl UefiVar {
    /// A PK/KEK/db/dbx-style variable (attributes 0x27, zero timestamp and digest), as
    /// uefivars makes one from an ESL file.
    pub fn authenticated(name: &str, guid: Guid, data: Vec<u8>) -> UefiVar {
        UefiVar {
            name: name.to_owned(),
            guid,
            attributes: SECURE_BOOT_VARIABLE_ATTRIBUTES,
            data,
            timestamp: [0; 16],
            digest: EMPTY_DIGEST.to_vec(),
        }
    }

    fn time_based(&self) -> bool {
        self.attributes & EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS != 0
    }
}

/// A UEFI variable store, in the order the blob holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UefiVarStore {
    /// The variables; each (name, GUID) at most once.
    pub vars: Vec<UefiVar>,
}

/// A blob that cannot be read, or a store that cannot be written.
#[derive(Debug, Error)]
pub enum UefiDataError {
    /// Not base64.
    #[error("UefiData is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Larger than any EC2 UefiData.
    #[error("UefiData blob of {size} bytes is larger than the {max}-byte limit")]
    BlobTooLarge {
        /// The blob's size.
        size: usize,
        /// [`MAX_BLOB_BYTES`].
        max: usize,
    },
    /// Shorter than the 16-byte header.
    #[error("UefiData blob of {size} bytes is shorter than its 16-byte header")]
    TooShort {
        /// The blob's size.
        size: usize,
    },
    /// The first eight bytes are not "AMZNUEFI".
    #[error("UefiData at byte 0: magic {} is not \"AMZNUEFI\"", hex::encode(found))]
    BadMagic {
        /// The first eight bytes.
        found: [u8; 8],
    },
    /// The crc32c at byte 8 does not match the rest of the blob.
    #[error("UefiData at byte 8: crc32c {stored:#010x} does not match the data's {computed:#010x} (truncated or altered?)")]
    BadChecksum {
        /// The crc32c in the header.
        stored: u32,
        /// The crc32c of bytes 12.. of the blob.
        computed: u32,
    },
    /// A version other than 0.
    #[error("UefiData at byte 12: version {0} is not supported (only 0 exists)")]
    UnsupportedVersion(u32),
    /// The zlib stream is corrupt.
    #[error("UefiData at byte {offset}: corrupt zlib stream: {message}")]
    Zlib {
        /// Offset in the blob where the decompressor stopped.
        offset: usize,
        /// zlib's message.
        message: String,
    },
    /// The zlib stream asks for a preset dictionary other than the version-0 one.
    #[error("UefiData at byte 16: the zlib stream needs a preset dictionary with Adler-32 {found:#010x}, not the version-0 dictionary's {expected:#010x}")]
    WrongDictionary {
        /// DICTID of the stream.
        found: u32,
        /// Adler-32 of [`DICTIONARY`].
        expected: u32,
    },
    /// The zlib stream ends early.
    #[error("UefiData at byte {offset}: the zlib stream is truncated")]
    TruncatedStream {
        /// The blob's size.
        offset: usize,
    },
    /// Bytes after the end of the zlib stream.
    #[error("UefiData at byte {offset}: {count} bytes after the end of the zlib stream")]
    TrailingBlobData {
        /// Where the stream ended.
        offset: usize,
        /// How many bytes follow.
        count: usize,
    },
    /// Decompresses to more than [`MAX_STORE_BYTES`].
    #[error("UefiData decompresses to more than {max} bytes")]
    StoreTooLarge {
        /// [`MAX_STORE_BYTES`].
        max: usize,
    },
    /// The decompressed store ends inside a field.
    #[error(
        "UefiData variable store at byte {offset}: {field} needs {needed} bytes, {available} left"
    )]
    Truncated {
        /// Offset in the decompressed store.
        offset: usize,
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left.
        available: usize,
    },
    /// A variable name that is not UTF-8.
    #[error("UefiData variable store at byte {offset}: variable name is not UTF-8")]
    NameNotUtf8 {
        /// Offset of the name's bytes in the decompressed store.
        offset: usize,
    },
    /// The same (name, GUID) twice.
    #[error("UefiData variable store: variable {name} ({guid}) appears twice")]
    Duplicate {
        /// The variable's name.
        name: String,
        /// Its vendor GUID.
        guid: Guid,
    },
    /// Bytes after the last variable.
    #[error("UefiData variable store at byte {offset}: {count} bytes after the last variable")]
    TrailingStoreData {
        /// Where the last variable ended.
        offset: usize,
        /// How many bytes follow.
        count: usize,
    },
    /// A Secure Boot variable that cannot be written.
    #[error("{name}: {source}")]
    Esl {
        /// PK, KEK, db or dbx.
        name: &'static str,
        /// The reason.
        source: EslError,
    },
    /// An empty PK/KEK/db/dbx (firmware would treat it as absent).
    #[error("{name}: no signature lists given; leave the variable out instead")]
    EmptyVariable {
        /// PK, KEK, db or dbx.
        name: &'static str,
    },
    /// A PK that is not exactly one X.509 certificate.
    #[error("PK must hold exactly one X.509 certificate (one list with one entry), found {lists} lists with {entries} entries")]
    PkNotOneCertificate {
        /// Lists given.
        lists: usize,
        /// Entries in them.
        entries: usize,
    },
    /// zlib refused to compress (out of memory).
    #[error("compressing the UefiData variable store: {0}")]
    Compress(#[from] flate2::CompressError),
}

impl UefiVarStore {
    /// The Secure Boot keys as EC2 should enroll them: PK, KEK, db and (optionally) dbx,
    /// each with attributes NV|BS|RT|TIME_BASED_AUTHENTICATED_WRITE_ACCESS (0x27), a zero
    /// timestamp and digest, in that order: what `uefivars -i none -o aws -P -K -b -x` makes.
    ///
    /// With a PK enrolled the instance boots in user mode with Secure Boot on.
    pub fn secure_boot(
        pk: &[SignatureList],
        kek: &[SignatureList],
        db: &[SignatureList],
        dbx: Option<&[SignatureList]>,
    ) -> Result<UefiVarStore, UefiDataError> {
        let entries: usize = pk.iter().map(|l| l.entries.len()).sum();
        if pk.len() != 1 || entries != 1 || pk[0].signature_type != esl::EFI_CERT_X509_GUID {
            return Err(UefiDataError::PkNotOneCertificate {
                lists: pk.len(),
                entries,
            });
        }
        let mut vars = Vec::with_capacity(4);
        let mut add = |name: &'static str, guid: Guid, lists: &[SignatureList]| {
            if lists.is_empty() {
                return Err(UefiDataError::EmptyVariable { name });
            }
            let data =
                esl::serialize(lists).map_err(|source| UefiDataError::Esl { name, source })?;
            vars.push(UefiVar::authenticated(name, guid, data));
            Ok(())
        };
        add("PK", EFI_GLOBAL_VARIABLE, pk)?;
        add("KEK", EFI_GLOBAL_VARIABLE, kek)?;
        add("db", EFI_IMAGE_SECURITY_DATABASE, db)?;
        if let Some(dbx) = dbx {
            add("dbx", EFI_IMAGE_SECURITY_DATABASE, dbx)?;
        }
        Ok(UefiVarStore { vars })
    }

    /// The variable `name` with vendor GUID `guid`, if present.
    pub fn get(&self, name: &str, guid: &Guid) -> Option<&UefiVar> {
        self.vars.iter().find(|v| v.name == name && v.guid == *guid)
    }

    /// The value of variable `name` with vendor GUID `guid` (e.g. `("db",
    /// EFI_IMAGE_SECURITY_DATABASE)`), as the firmware measures it into PCR7.
    pub fn data(&self, name: &str, guid: &Guid) -> Option<&[u8]> {
        self.get(name, guid).map(|v| v.data.as_slice())
    }

    /// The uncompressed variable store (the bytes inside the zlib stream).
    fn serialize_store(&self) -> Result<Vec<u8>, UefiDataError> {
        self.check_unique()?;
        let mut out = Vec::new();
        let put_bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        };
        out.extend_from_slice(&(self.vars.len() as u64).to_le_bytes());
        for v in &self.vars {
            put_bytes(&mut out, v.name.as_bytes());
            put_bytes(&mut out, &v.data);
            out.extend_from_slice(v.guid.as_bytes());
            out.extend_from_slice(&v.attributes.to_le_bytes());
            if v.time_based() {
                out.extend_from_slice(&v.timestamp);
                put_bytes(&mut out, &v.digest);
            }
        }
        Ok(out)
    }

    fn check_unique(&self) -> Result<(), UefiDataError> {
        for (i, v) in self.vars.iter().enumerate() {
            if self.vars[..i]
                .iter()
                .any(|w| w.name == v.name && w.guid == v.guid)
            {
                return Err(UefiDataError::Duplicate {
                    name: v.name.clone(),
                    guid: v.guid,
                });
            }
        }
        Ok(())
    }

    /// The binary blob: magic, crc32c, version, zlib stream. Deterministic: the same store
    /// gives the same bytes.
    pub fn to_blob(&self) -> Result<Vec<u8>, UefiDataError> {
        let store = self.serialize_store()?;
        let mut z = Compress::new(Compression::new(9), true);
        // Cannot fail before any input: zlib only refuses a dictionary mid-stream.
        z.set_dictionary(DICTIONARY)?;
        let mut blob = Vec::with_capacity(HEADER + store.len() / 2 + 64);
        blob.extend_from_slice(MAGIC);
        blob.extend_from_slice(&[0; 4]); // the crc32c, filled in below
        blob.extend_from_slice(&VERSION.to_le_bytes());
        loop {
            let consumed = z.total_in() as usize;
            if blob.len() == blob.capacity() {
                blob.reserve(store.len() / 4 + 64);
            }
            if z.compress_vec(&store[consumed..], &mut blob, FlushCompress::Finish)?
                == Status::StreamEnd
            {
                break;
            }
        }
        let crc = crc32c(&blob[12..]);
        blob[8..12].copy_from_slice(&crc.to_le_bytes());
        Ok(blob)
    }

    /// The blob in base64 (standard alphabet, padded, no newlines): RegisterImage's
    /// `UefiData` parameter, and what `uefivars -o aws` prints.
    pub fn to_base64(&self) -> Result<String, UefiDataError> {
        Ok(base64::engine::general_purpose::STANDARD.encode(self.to_blob()?))
    }

    /// Reads a base64 `UefiData` (e.g. from `GetInstanceUefiData`); surrounding whitespace
    /// is ignored.
    pub fn from_base64(text: &str) -> Result<UefiVarStore, UefiDataError> {
        let blob = base64::engine::general_purpose::STANDARD.decode(text.trim())?;
        UefiVarStore::from_blob(&blob)
    }

    /// Reads a file's bytes as either form users have: the binary blob (starting with
    /// [`MAGIC`]) or its base64 text (what RegisterImage and `uefivars -o aws` use).
    /// Returns the store and the binary blob.
    pub fn from_file_bytes(bytes: Vec<u8>) -> Result<(UefiVarStore, Vec<u8>), UefiDataError> {
        let blob = if bytes.starts_with(MAGIC) {
            bytes
        } else {
            let text = String::from_utf8_lossy(&bytes);
            base64::engine::general_purpose::STANDARD.decode(text.trim())?
        };
        Ok((UefiVarStore::from_blob(&blob)?, blob))
    }

    /// Reads a binary blob, strictly: magic, crc32c, version, a zlib stream that uses the
    /// version-0 dictionary and ends exactly at the end of the blob, at most
    /// [`MAX_STORE_BYTES`] decompressed, and a store that ends after its last variable.
    pub fn from_blob(blob: &[u8]) -> Result<UefiVarStore, UefiDataError> {
        if blob.len() > MAX_BLOB_BYTES {
            return Err(UefiDataError::BlobTooLarge {
                size: blob.len(),
                max: MAX_BLOB_BYTES,
            });
        }
        if blob.len() < HEADER {
            return Err(UefiDataError::TooShort { size: blob.len() });
        }
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&blob[..8]);
        if &magic != MAGIC {
            return Err(UefiDataError::BadMagic { found: magic });
        }
        let stored = u32::from_le_bytes([blob[8], blob[9], blob[10], blob[11]]);
        let computed = crc32c(&blob[12..]);
        if stored != computed {
            return Err(UefiDataError::BadChecksum { stored, computed });
        }
        let version = u32::from_le_bytes([blob[12], blob[13], blob[14], blob[15]]);
        if version != VERSION {
            return Err(UefiDataError::UnsupportedVersion(version));
        }
        let store = inflate(&blob[HEADER..])?;
        parse_store(&store)
    }
}

/// Decompresses the blob's zlib stream (which starts at blob byte 16) with the version-0
/// dictionary, refusing more than [`MAX_STORE_BYTES`] of output or trailing bytes.
fn inflate(z: &[u8]) -> Result<Vec<u8>, UefiDataError> {
    let mut d = Decompress::new(true);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let (in_before, out_before) = (d.total_in(), d.total_out());
        if out.len() == out.capacity() {
            // One byte past the cap is enough to know the store is too large.
            let room = (MAX_STORE_BYTES + 1).saturating_sub(out.len());
            if room == 0 {
                return Err(UefiDataError::StoreTooLarge {
                    max: MAX_STORE_BYTES,
                });
            }
            out.reserve_exact(room.min(out.len().max(64 * 1024)));
        }
        let consumed = d.total_in() as usize;
        match d.decompress_vec(&z[consumed..], &mut out, FlushDecompress::None) {
            Ok(Status::StreamEnd) => break,
            Ok(_) => {
                if d.total_in() == in_before
                    && d.total_out() == out_before
                    && out.len() < out.capacity()
                {
                    // No progress with room to write: the input ran out mid-stream.
                    return Err(UefiDataError::TruncatedStream {
                        offset: HEADER + z.len(),
                    });
                }
            }
            Err(e) => match e.needs_dictionary() {
                Some(found) => {
                    let expected = adler32(DICTIONARY);
                    if found != expected {
                        return Err(UefiDataError::WrongDictionary { found, expected });
                    }
                    d.set_dictionary(DICTIONARY)
                        .map_err(|e| UefiDataError::Zlib {
                            offset: HEADER + d.total_in() as usize,
                            message: e.to_string(),
                        })?;
                }
                None => {
                    return Err(UefiDataError::Zlib {
                        offset: HEADER + d.total_in() as usize,
                        message: e.to_string(),
                    })
                }
            },
        }
    }
    if out.len() > MAX_STORE_BYTES {
        return Err(UefiDataError::StoreTooLarge {
            max: MAX_STORE_BYTES,
        });
    }
    let used = d.total_in() as usize;
    if used != z.len() {
        return Err(UefiDataError::TrailingBlobData {
            offset: HEADER + used,
            count: z.len() - used,
        });
    }
    Ok(out)
}

/// A cursor over the decompressed store that names the offset and field of a short read.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, field: &'static str) -> Result<&'a [u8], UefiDataError> {
        let available = self.bytes.len() - self.at;
        if n > available as u64 {
            return Err(UefiDataError::Truncated {
                offset: self.at,
                field,
                needed: n,
                available,
            });
        }
        let s = &self.bytes[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(s)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, UefiDataError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, field)?);
        Ok(u64::from_le_bytes(b))
    }

    fn sized(&mut self, field: &'static str) -> Result<&'a [u8], UefiDataError> {
        let n = self.u64(field)?;
        self.take(n, field)
    }
}

/// Parses the decompressed variable store.
fn parse_store(bytes: &[u8]) -> Result<UefiVarStore, UefiDataError> {
    let mut r = Reader { bytes, at: 0 };
    let count = r.u64("variable count")?;
    // Every variable takes at least 36 bytes (two lengths, GUID, attributes), so a larger
    // count is corrupt; checking first keeps a forged count from reserving memory.
    let min_var = 8 + 8 + 16 + 4;
    if count > (bytes.len() - r.at) as u64 / min_var {
        return Err(UefiDataError::Truncated {
            offset: r.at,
            field: "variables",
            needed: count.saturating_mul(min_var),
            available: bytes.len() - r.at,
        });
    }
    let mut vars = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name_at = r.at + 8;
        let name = std::str::from_utf8(r.sized("variable name")?)
            .map_err(|_| UefiDataError::NameNotUtf8 { offset: name_at })?
            .to_owned();
        let data = r.sized("variable data")?.to_vec();
        let mut guid = [0u8; 16];
        guid.copy_from_slice(r.take(16, "vendor GUID")?);
        let mut attr = [0u8; 4];
        attr.copy_from_slice(r.take(4, "attributes")?);
        let mut var = UefiVar {
            name,
            guid: Guid::from_bytes(guid),
            attributes: u32::from_le_bytes(attr),
            data,
            timestamp: [0; 16],
            digest: Vec::new(),
        };
        if var.time_based() {
            var.timestamp.copy_from_slice(r.take(16, "timestamp")?);
            var.digest = r.sized("digest")?.to_vec();
        }
        vars.push(var);
    }
    if r.at != bytes.len() {
        return Err(UefiDataError::TrailingStoreData {
            offset: r.at,
            count: bytes.len() - r.at,
        });
    }
    let store = UefiVarStore { vars };
    store.check_unique()?;
    Ok(store)
}

/// CRC-32C (Castagnoli; `crc`'s CRC_32_ISCSI), as python-uefivars' google-crc32c computes it.
pub fn crc32c(data: &[u8]) -> u32 {
    const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    CRC32C.checksum(data)
}

/// Adler-32, the DICTID a zlib stream names its preset dictionary by.
fn adler32(data: &[u8]) -> u32 {
    adler2::adler32_slice(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uefi::esl::{SignatureList, EFI_CERT_SHA256_GUID};

    fn sample() -> UefiVarStore {
        let owner: Guid = "11223344-5566-7788-99aa-bbccddeeff00".parse().unwrap();
        UefiVarStore::secure_boot(
            &[SignatureList::x509(owner, &[0x30; 900])],
            &[SignatureList::x509(owner, &[0x31; 800])],
            &[
                SignatureList::x509(owner, &[0x32; 700]),
                SignatureList::sha256(owner, &[[7; 32]]),
            ],
            Some(&[SignatureList::sha256(owner, &[[8; 32], [9; 32]])]),
        )
        .unwrap()
    }

    #[test]
    fn crc32c_and_adler32_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn dictionary_is_the_published_one() {
        use sha2::{Digest, Sha256};
        assert_eq!(
            hex::encode(Sha256::digest(DICTIONARY)),
            "b6c4f52acbb0ab9aa415290e6c223af871eaa3d430c96b8116899d994681535b"
        );
    }

    #[test]
    fn blob_layout_and_round_trip() {
        let store = sample();
        let names: Vec<&str> = store.vars.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["PK", "KEK", "db", "dbx"]);
        let blob = store.to_blob().unwrap();
        assert_eq!(&blob[..8], b"AMZNUEFI");
        assert_eq!(&blob[12..16], &[0, 0, 0, 0]);
        // zlib header: deflate, 32K window, level 9 (FLEVEL 3), FDICT, then the DICTID.
        assert_eq!(blob[16], 0x78);
        assert_eq!(blob[17] & 0xe0, 0xe0);
        assert_eq!(&blob[18..22], &adler32(DICTIONARY).to_be_bytes());
        assert_eq!(blob, store.to_blob().unwrap(), "deterministic");
        let back = UefiVarStore::from_blob(&blob).unwrap();
        assert_eq!(back, store);
        assert_eq!(
            UefiVarStore::from_base64(&format!(" {}\n", store.to_base64().unwrap())).unwrap(),
            store
        );
        let db = esl::parse(back.data("db", &EFI_IMAGE_SECURITY_DATABASE).unwrap()).unwrap();
        assert_eq!(db[1].signature_type, EFI_CERT_SHA256_GUID);
        assert!(back.data("db", &EFI_GLOBAL_VARIABLE).is_none());
        let pk = back.get("PK", &EFI_GLOBAL_VARIABLE).unwrap();
        assert_eq!(pk.attributes, 0x27);
        assert_eq!(pk.digest, vec![0; 32]);
    }

    #[test]
    fn inner_store_layout() {
        let store = UefiVarStore {
            vars: vec![
                UefiVar {
                    name: "Boot0000".into(),
                    guid: EFI_GLOBAL_VARIABLE,
                    attributes: 7,
                    data: vec![1, 2, 3],
                    timestamp: [0; 16],
                    digest: vec![],
                },
                UefiVar {
                    name: "db".into(),
                    guid: EFI_IMAGE_SECURITY_DATABASE,
                    attributes: 0x27,
                    data: vec![4],
                    timestamp: [5; 16],
                    digest: vec![6; 32],
                },
            ],
        };
        let raw = store.serialize_store().unwrap();
        let mut want = 2u64.to_le_bytes().to_vec();
        want.extend_from_slice(&8u64.to_le_bytes());
        want.extend_from_slice(b"Boot0000");
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&[1, 2, 3]);
        want.extend_from_slice(EFI_GLOBAL_VARIABLE.as_bytes());
        want.extend_from_slice(&7u32.to_le_bytes());
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(b"db");
        want.extend_from_slice(&1u64.to_le_bytes());
        want.push(4);
        want.extend_from_slice(EFI_IMAGE_SECURITY_DATABASE.as_bytes());
        want.extend_from_slice(&0x27u32.to_le_bytes());
        want.extend_from_slice(&[5; 16]);
        want.extend_from_slice(&32u64.to_le_bytes());
        want.extend_from_slice(&[6; 32]);
        assert_eq!(raw, want);
        assert_eq!(parse_store(&raw).unwrap(), store);
        // Every truncation is refused, naming where.
        for n in 0..raw.len() {
            assert!(
                matches!(parse_store(&raw[..n]), Err(UefiDataError::Truncated { .. })),
                "{n}"
            );
        }
        assert!(matches!(
            parse_store(&[raw.clone(), vec![0]].concat()),
            Err(UefiDataError::TrailingStoreData { offset, count: 1 }) if offset == raw.len()
        ));
        let mut dup = store.clone();
        dup.vars.push(dup.vars[0].clone());
        assert!(matches!(
            dup.to_blob(),
            Err(UefiDataError::Duplicate { .. })
        ));
        let mut bad_name = raw.clone();
        bad_name[16] = 0xff;
        assert!(matches!(
            parse_store(&bad_name),
            Err(UefiDataError::NameNotUtf8 { offset: 16 })
        ));
        let mut huge = raw;
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse_store(&huge),
            Err(UefiDataError::Truncated { offset: 8, .. })
        ));
    }

    /// Re-seals a blob's crc32c after editing it.
    fn reseal(mut blob: Vec<u8>) -> Vec<u8> {
        let crc = crc32c(&blob[12..]);
        blob[8..12].copy_from_slice(&crc.to_le_bytes());
        blob
    }

    #[test]
    fn bad_blobs_are_refused() {
        let blob = sample().to_blob().unwrap();
        let err = |b: &[u8]| UefiVarStore::from_blob(b).unwrap_err();
        assert!(matches!(
            err(&blob[..15]),
            UefiDataError::TooShort { size: 15 }
        ));
        let mut magic = blob.clone();
        magic[0] = b'X';
        assert!(matches!(err(&magic), UefiDataError::BadMagic { .. }));
        let mut flipped = blob.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(err(&flipped), UefiDataError::BadChecksum { .. }));
        assert!(matches!(
            err(&blob[..blob.len() - 1]),
            UefiDataError::BadChecksum { .. }
        ));
        let mut version = blob.clone();
        version[12] = 1;
        assert!(matches!(
            err(&reseal(version)),
            UefiDataError::UnsupportedVersion(1)
        ));
        assert!(matches!(
            err(&reseal(blob[..blob.len() - 10].to_vec())),
            UefiDataError::TruncatedStream { .. } | UefiDataError::Zlib { .. }
        ));
        assert!(matches!(
            err(&reseal([blob.clone(), vec![0; 3]].concat())),
            UefiDataError::TrailingBlobData { count: 3, .. }
        ));
        let mut dictid = blob.clone();
        dictid[21] ^= 1;
        assert!(matches!(
            err(&reseal(dictid)),
            UefiDataError::WrongDictionary { .. }
        ));
        assert!(matches!(
            err(&vec![0; MAX_BLOB_BYTES + 1]),
            UefiDataError::BlobTooLarge { .. }
        ));
        assert!(matches!(
            UefiVarStore::from_base64("not base64!"),
            Err(UefiDataError::Base64(_))
        ));
    }

    #[test]
    fn decompression_bomb_is_capped() {
        // 2 MiB of zeros as one variable's data compresses to a few KiB.
        let store = UefiVarStore {
            vars: vec![UefiVar::authenticated(
                "db",
                EFI_IMAGE_SECURITY_DATABASE,
                vec![0; 2 * MAX_STORE_BYTES],
            )],
        };
        let blob = store.to_blob().unwrap();
        assert!(blob.len() < 8 * 1024, "{}", blob.len());
        assert!(matches!(
            UefiVarStore::from_blob(&blob),
            Err(UefiDataError::StoreTooLarge { .. })
        ));
        // Exactly at the cap is still fine.
        let fits = UefiVarStore {
            vars: vec![UefiVar::authenticated(
                "db",
                EFI_IMAGE_SECURITY_DATABASE,
                vec![0; MAX_STORE_BYTES - (8 + 8 + 2 + 8 + 16 + 4 + 16 + 8 + 32)],
            )],
        };
        let back = UefiVarStore::from_blob(&fits.to_blob().unwrap()).unwrap();
        assert_eq!(back, fits);
    }

    #[test]
    fn secure_boot_refuses_what_firmware_would() {
        let cert = [SignatureList::x509(Guid::ZERO, b"c")];
        let two = [cert[0].clone(), cert[0].clone()];
        assert!(matches!(
            UefiVarStore::secure_boot(&two, &cert, &cert, None),
            Err(UefiDataError::PkNotOneCertificate {
                lists: 2,
                entries: 2
            })
        ));
        assert!(matches!(
            UefiVarStore::secure_boot(&cert, &[], &cert, None),
            Err(UefiDataError::EmptyVariable { name: "KEK" })
        ));
        let empty_list = [SignatureList::sha256(Guid::ZERO, &[])];
        assert!(matches!(
            UefiVarStore::secure_boot(&cert, &cert, &empty_list, None),
            Err(UefiDataError::Esl { name: "db", .. })
        ));
    }
}
