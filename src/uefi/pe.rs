//! Reading PE/COFF headers of EFI images (the systemd stub, kernels, UKIs).
//!
//! Only the headers and the section table are parsed (with goblin), from the first bytes
//! of the file, so a multi-gigabyte UKI is never read whole. Every offset and size is
//! checked against the file length: PE files are untrusted input.

use goblin::pe::header::Header;
use goblin::pe::section_table::SectionTable;

use super::file::{ImageFile, RangeReader};

/// Largest header region we read: SizeOfHeaders of real EFI images is a few KiB
/// (0x5000 for systemd 262); this bounds memory on hostile input.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;
/// The PE/COFF spec allows up to 96 sections; more is hostile input.
pub const MAX_SECTIONS: usize = 96;

pub const IMAGE_SUBSYSTEM_EFI_APPLICATION: u16 = 10;
pub const IMAGE_FILE_MACHINE_AMD64: u16 = 0x8664;
pub const PE32_MAGIC: u16 = 0x10b;
pub const PE32PLUS_MAGIC: u16 = 0x20b;

/// Errors reading a PE file.
#[derive(Debug, thiserror::Error)]
pub enum PeError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: not a PE image: {message}")]
    NotPe { file: String, message: String },
    #[error("{file}: malformed PE at byte {offset}: {message}")]
    Malformed {
        file: String,
        offset: u64,
        message: String,
    },
}

/// One section header, with the byte offset of the header itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub virtual_address: u32,
    pub virtual_size: u32,
    pub raw_offset: u32,
    pub raw_size: u32,
    pub characteristics: u32,
    /// Where this section header sits in the file.
    pub header_offset: u64,
}

impl Section {
    /// Bytes of the section's data that are both in the file and in memory:
    /// `min(VirtualSize, SizeOfRawData)`, which is what a loader copies and what
    /// systemd-stub measures (it hashes VirtualSize bytes of the loaded image; bytes
    /// beyond SizeOfRawData are zero-fill, handled by the measuring code).
    pub fn file_data_len(&self) -> u32 {
        self.virtual_size.min(self.raw_size)
    }
}

/// Parsed headers of a PE image.
#[derive(Debug, Clone)]
pub struct PeLayout {
    pub file_len: u64,
    /// Offset of the "PE\0\0" signature.
    pub pe_offset: u64,
    pub machine: u16,
    pub magic: u16,
    pub subsystem: u16,
    pub time_date_stamp: u32,
    pub pointer_to_symbol_table: u32,
    pub number_of_symbols: u32,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    /// File offset of the optional header's CheckSum field.
    pub checksum_offset: u64,
    /// File offset of the certificate-table data directory entry (8 bytes).
    pub cert_dir_offset: Option<u64>,
    /// Certificate table (file offset, size); (0, 0) when unsigned.
    pub cert_table: (u32, u32),
    /// File offset where the section table starts.
    pub section_table_offset: u64,
    /// Sections in header order.
    pub sections: Vec<Section>,
}

impl PeLayout {
    /// Reads and validates the headers of an opened PE file.
    pub fn read(image: &ImageFile) -> Result<PeLayout, PeError> {
        let want = image.len().min(MAX_HEADER_BYTES);
        let head = image
            .read_vec_at(0, want as usize)
            .map_err(|source| PeError::Io {
                file: image.name().to_owned(),
                source,
            })?;
        PeLayout::parse(image.name(), &head, image.len())
    }

    /// Parses headers from `head` (the first bytes of a file of `file_len` bytes).
    pub fn parse(file: &str, head: &[u8], file_len: u64) -> Result<PeLayout, PeError> {
        let not_pe = |m: &str| PeError::NotPe {
            file: file.to_owned(),
            message: m.to_owned(),
        };
        let malformed = |offset: u64, m: String| PeError::Malformed {
            file: file.to_owned(),
            offset,
            message: m,
        };
        if head.len() < 0x40 || &head[..2] != b"MZ" {
            return Err(not_pe("no MZ header"));
        }
        let pe_offset = u64::from(u32::from_le_bytes([
            head[0x3c], head[0x3d], head[0x3e], head[0x3f],
        ]));
        if pe_offset + 24 > head.len() as u64 {
            return Err(malformed(
                0x3c,
                format!("e_lfanew {pe_offset:#x} points outside the headers"),
            ));
        }
        if &head[pe_offset as usize..pe_offset as usize + 4] != b"PE\0\0" {
            return Err(not_pe("no PE signature at e_lfanew"));
        }
        let header =
            Header::parse(head).map_err(|e| malformed(pe_offset, format!("headers: {e}")))?;
        let coff = header.coff_header;
        let opt = header
            .optional_header
            .ok_or_else(|| not_pe("no optional header (an object file, not an image)"))?;
        let nsections = usize::from(coff.number_of_sections);
        if nsections == 0 || nsections > MAX_SECTIONS {
            return Err(malformed(
                pe_offset + 6,
                format!("NumberOfSections is {nsections} (1..={MAX_SECTIONS} allowed)"),
            ));
        }
        let opt_offset = pe_offset + 24;
        let section_table_offset = opt_offset + u64::from(coff.size_of_optional_header);
        let table_end = section_table_offset + 40 * nsections as u64;
        if table_end > head.len() as u64 {
            return Err(malformed(
                section_table_offset,
                "section table runs past the end of the file".into(),
            ));
        }
        let magic = opt.standard_fields.magic;
        // CheckSum sits at the same offset for PE32 and PE32+ (64 bytes into the optional header).
        let checksum_offset = opt_offset + 64;
        let data_dirs_offset = match magic {
            PE32_MAGIC => opt_offset + 96,
            PE32PLUS_MAGIC => opt_offset + 112,
            other => {
                return Err(malformed(
                    opt_offset,
                    format!("unknown optional header magic {other:#x}"),
                ))
            }
        };
        let wf = opt.windows_fields;
        let cert_dir_offset = (wf.number_of_rva_and_sizes > 4).then_some(data_dirs_offset + 4 * 8);
        if let Some(o) = cert_dir_offset {
            if o + 8 > section_table_offset {
                return Err(malformed(
                    o,
                    "data directories overlap the section table".into(),
                ));
            }
        }
        let cert_table = opt
            .data_directories
            .get_certificate_table()
            .map(|d| (d.virtual_address, d.size))
            .unwrap_or((0, 0));
        if cert_table.1 != 0 && u64::from(cert_table.0) + u64::from(cert_table.1) > file_len {
            return Err(malformed(
                cert_dir_offset.unwrap_or(0),
                format!(
                    "certificate table ({:#x}+{:#x}) lies outside the file ({file_len} bytes)",
                    cert_table.0, cert_table.1
                ),
            ));
        }
        if u64::from(wf.size_of_headers) > file_len || u64::from(wf.size_of_headers) < table_end {
            return Err(malformed(
                checksum_offset - 4,
                format!("SizeOfHeaders {:#x} is inconsistent", wf.size_of_headers),
            ));
        }
        let mut sections = Vec::with_capacity(nsections);
        let mut off = section_table_offset as usize;
        for _ in 0..nsections {
            let header_offset = off as u64;
            let s = SectionTable::parse(head, &mut off, 0)
                .map_err(|e| malformed(header_offset, format!("section header: {e}")))?;
            let name = section_name(&s.name);
            let end = u64::from(s.pointer_to_raw_data) + u64::from(s.size_of_raw_data);
            if s.size_of_raw_data > 0 && end > file_len {
                return Err(malformed(
                    header_offset,
                    format!("section {name} ({:#x}+{:#x}) runs past the end of the file ({file_len} bytes)", s.pointer_to_raw_data, s.size_of_raw_data),
                ));
            }
            sections.push(Section {
                name,
                virtual_address: s.virtual_address,
                virtual_size: s.virtual_size,
                raw_offset: s.pointer_to_raw_data,
                raw_size: s.size_of_raw_data,
                characteristics: s.characteristics,
                header_offset,
            });
        }
        check_no_overlap(file, &sections)?;
        Ok(PeLayout {
            file_len,
            pe_offset,
            machine: coff.machine,
            magic,
            subsystem: wf.subsystem,
            time_date_stamp: coff.time_date_stamp,
            pointer_to_symbol_table: coff.pointer_to_symbol_table,
            number_of_symbols: coff.number_of_symbol_table,
            section_alignment: wf.section_alignment,
            file_alignment: wf.file_alignment,
            size_of_image: wf.size_of_image,
            size_of_headers: wf.size_of_headers,
            checksum_offset,
            cert_dir_offset,
            cert_table,
            section_table_offset,
            sections,
        })
    }

    /// The first section with this name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// True when an Authenticode signature is attached.
    pub fn is_signed(&self) -> bool {
        self.cert_table.1 != 0
    }

    /// Reads a section's file data (at most `limit` bytes; errors beyond that).
    pub fn read_section(
        &self,
        image: &ImageFile,
        name: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, PeError> {
        let Some(s) = self.section(name) else {
            return Ok(None);
        };
        let len = u64::from(s.file_data_len());
        if len > limit {
            return Err(PeError::Malformed {
                file: image.name().to_owned(),
                offset: s.header_offset,
                message: format!("section {name} is {len} bytes, more than the {limit} expected"),
            });
        }
        image
            .read_vec_at(u64::from(s.raw_offset), len as usize)
            .map(Some)
            .map_err(|source| PeError::Io {
                file: image.name().to_owned(),
                source,
            })
    }

    /// A reader over a section's file data.
    pub fn section_reader<'a>(&self, image: &'a ImageFile, name: &str) -> Option<RangeReader<'a>> {
        let s = self.section(name)?;
        Some(image.range_reader(u64::from(s.raw_offset), u64::from(s.file_data_len())))
    }
}

/// Section names are 8 bytes, NUL-padded; long names ("/123" string-table references)
/// are kept verbatim.
fn section_name(raw: &[u8; 8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(8);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn check_no_overlap(file: &str, sections: &[Section]) -> Result<(), PeError> {
    let mut raw: Vec<&Section> = sections.iter().filter(|s| s.raw_size > 0).collect();
    raw.sort_by_key(|s| s.raw_offset);
    for pair in raw.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if u64::from(a.raw_offset) + u64::from(a.raw_size) > u64::from(b.raw_offset) {
            return Err(PeError::Malformed {
                file: file.to_owned(),
                offset: b.header_offset,
                message: format!("sections {} and {} overlap in the file", a.name, b.name),
            });
        }
    }
    let mut virt: Vec<&Section> = sections.iter().collect();
    virt.sort_by_key(|s| s.virtual_address);
    for pair in virt.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if u64::from(a.virtual_address) + u64::from(a.virtual_size) > u64::from(b.virtual_address) {
            return Err(PeError::Malformed {
                file: file.to_owned(),
                offset: b.header_offset,
                message: format!("sections {} and {} overlap in memory", a.name, b.name),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            PeLayout::parse("x", b"hello", 5),
            Err(PeError::NotPe { .. })
        ));
        let mut mz = vec![0u8; 0x80];
        mz[0] = b'M';
        mz[1] = b'Z';
        mz[0x3c] = 0xff; // e_lfanew beyond the buffer
        let e = PeLayout::parse("x", &mz, 0x80).unwrap_err().to_string();
        assert!(e.contains("byte 60"), "{e}");
    }

    #[test]
    fn section_names() {
        assert_eq!(section_name(b".linux\0\0"), ".linux");
        assert_eq!(section_name(b".sdmagic"), ".sdmagic");
    }
}
