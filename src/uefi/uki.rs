//! Unified Kernel Image assembly, natively (no objcopy), following ukify's layout rules.
//!
//! The layout rules, in one place:
//! - The stub's bytes up to the end of its last section are kept verbatim (headers
//!   patched); anything after that (a COFF symbol table in systemd 252's stub) is dropped
//!   and PointerToSymbolTable/NumberOfSymbols are zeroed, as images should have.
//! - New section headers go right after the stub's section table and must fit below
//!   SizeOfHeaders and the first section's data: headers are never moved.
//! - Each new section's VirtualAddress is the end of the previous one rounded up to
//!   SectionAlignment; its file offset is the end of the previous data rounded up to
//!   FileAlignment; VirtualSize is the exact data length (systemd-stub measures
//!   VirtualSize bytes); SizeOfRawData is that rounded up to FileAlignment, zero-padded.
//! - Characteristics: initialized data, read-only (what ukify uses).
//! - SizeOfImage = end of the last section rounded up to SectionAlignment;
//!   SizeOfInitializedData grows by each new section's SizeOfRawData.
//! - TimeDateStamp = SOURCE_DATE_EPOCH (it is inside the Authenticode hash, so it must be
//!   fixed); CheckSum is the standard PE checksum of the final file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::file::ImageFile;
use super::pe::{PeError, PeLayout, IMAGE_FILE_MACHINE_AMD64, IMAGE_SUBSYSTEM_EFI_APPLICATION};

/// Sections zoa adds, in ukify's order.
pub const UKI_SECTIONS: &[&str] = &[".osrel", ".cmdline", ".uname", ".initrd", ".linux"];

/// systemd-stub major versions zoa knows the measurement rules of. Unknown versions are
/// refused, never guessed: a wrong prediction locks customers out of their keys.
pub const SUPPORTED_STUB_VERSIONS: &[u32] = &[252, 257, 262];

const IMAGE_SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;

/// Errors assembling or inspecting a UKI.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error(transparent)]
    Pe(#[from] PeError),
    #[error("{file}: {message}")]
    Stub { file: String, message: String },
    #[error("{file}: kernel {message}")]
    Kernel { file: String, message: String },
    #[error("{file}: {source}")]
    Io { file: String, source: io::Error },
}

/// The stub's identity, read from its `.sdmagic` section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StubInfo {
    /// Full version string, e.g. "252.39-1~deb12u2".
    pub version: String,
    /// Leading integer, e.g. 252.
    pub major: u32,
}

/// Parses `#### LoaderInfo: systemd-stub 252.39-1~deb12u2 ####`.
pub fn parse_sdmagic(data: &[u8]) -> Option<StubInfo> {
    let text = std::str::from_utf8(data).ok()?;
    let text = text.trim_end_matches('\0');
    let rest = text.split("LoaderInfo: systemd-stub ").nth(1)?;
    let version = rest.split_whitespace().next()?.to_owned();
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().ok()?;
    Some(StubInfo { version, major })
}

/// Reads and checks a systemd stub: a PE32+ EFI application for x86_64, unsigned, with a
/// known `.sdmagic` version, not already a UKI.
pub fn inspect_stub(stub: &ImageFile) -> Result<(PeLayout, StubInfo), UkiError> {
    let file = stub.name().to_owned();
    let err = |message: String| UkiError::Stub {
        file: file.clone(),
        message,
    };
    let layout = PeLayout::read(stub)?;
    if layout.machine != IMAGE_FILE_MACHINE_AMD64
        || layout.subsystem != IMAGE_SUBSYSTEM_EFI_APPLICATION
    {
        return Err(err(format!(
            "not an x86_64 EFI application (machine {:#x}, subsystem {})",
            layout.machine, layout.subsystem
        )));
    }
    if layout.is_signed() {
        return Err(err(
            "the stub is already signed; sections added to it would invalidate the signature (use the unsigned linuxx64.efi.stub and sign the finished UKI)".into(),
        ));
    }
    if let Some(s) = UKI_SECTIONS.iter().find(|s| layout.section(s).is_some()) {
        return Err(err(format!(
            "already has a {s} section: this is a UKI, not a bare stub"
        )));
    }
    let magic = layout
        .read_section(stub, ".sdmagic", 4096)?
        .ok_or_else(|| err("has no .sdmagic section: not a systemd stub".into()))?;
    let info = parse_sdmagic(&magic).ok_or_else(|| {
        err(format!(
            ".sdmagic is not a systemd-stub marker: {:?}",
            String::from_utf8_lossy(&magic)
        ))
    })?;
    if !SUPPORTED_STUB_VERSIONS.contains(&info.major) {
        return Err(err(format!(
            "systemd-stub {} is not supported (supported major versions: {}); its measurement rules are unproven",
            info.version,
            SUPPORTED_STUB_VERSIONS.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok((layout, info))
}

/// Checks that a kernel is a PE image with an EFI stub for x86_64 and returns its
/// release string (`uname -r`) from the bzImage setup header when present.
pub fn inspect_kernel(kernel: &ImageFile) -> Result<Option<String>, UkiError> {
    let file = kernel.name().to_owned();
    let layout = PeLayout::read(kernel).map_err(|e| match e {
        PeError::NotPe { message, .. } => UkiError::Kernel {
            file: file.clone(),
            message: format!("is not a PE image with an EFI stub ({message})"),
        },
        other => other.into(),
    })?;
    if layout.machine != IMAGE_FILE_MACHINE_AMD64
        || layout.subsystem != IMAGE_SUBSYSTEM_EFI_APPLICATION
    {
        return Err(UkiError::Kernel {
            file,
            message: format!(
                "is not an x86_64 EFI application (machine {:#x}, subsystem {})",
                layout.machine, layout.subsystem
            ),
        });
    }
    // The setup header and its version string lie in the real-mode setup sectors
    // (at most 64 sectors of 512 bytes, plus the boot sector).
    let mut head = vec![0u8; (65 * 512).min(layout.file_len as usize)];
    kernel
        .read_exact_at(&mut head, 0)
        .map_err(|source| UkiError::Io {
            file: file.clone(),
            source,
        })?;
    Ok(bzimage_release(&head))
}

/// `uname -r` from an x86 bzImage: setup header "HdrS" at 0x202, kernel_version pointer
/// (relative to 0x200) at 0x20e, pointing at "6.1.0-56-cloud-amd64 (debian-kernel@...) #1 ...".
pub fn bzimage_release(head: &[u8]) -> Option<String> {
    if head.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = usize::from(u16::from_le_bytes([*head.get(0x20e)?, *head.get(0x20f)?])) + 0x200;
    let bytes = head.get(ptr..)?;
    let end = bytes.iter().position(|b| *b == 0)?;
    let s = std::str::from_utf8(&bytes[..end]).ok()?;
    s.split_whitespace().next().map(str::to_owned)
}

/// Renders os-release fields (sorted by key, values quoted as os-release(5) allows).
pub fn render_os_release(fields: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in fields {
        let escaped: String = v
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' | '$' | '`' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        out.push_str(&format!("{k}=\"{escaped}\"\n"));
    }
    out
}

/// Writes a section's content into the UKI.
pub type SectionWriter<'a> = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + 'a>;

/// Content of a section to add.
pub enum SectionData<'a> {
    Bytes(Vec<u8>),
    /// A file copied as a stream.
    File(PathBuf),
    /// An opened image copied whole.
    Image(&'a ImageFile),
    /// Produced by a writer that must write exactly `len` bytes.
    Stream {
        len: u64,
        write: SectionWriter<'a>,
    },
}

impl SectionData<'_> {
    fn len(&self) -> io::Result<u64> {
        match self {
            SectionData::Bytes(b) => Ok(b.len() as u64),
            SectionData::File(p) => std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
            SectionData::Image(f) => Ok(f.len()),
            SectionData::Stream { len, .. } => Ok(*len),
        }
    }
}

/// A section to add: name and content.
pub struct NewSection<'a> {
    pub name: &'static str,
    pub data: SectionData<'a>,
}

/// Where each added section ended up (for build.json and tests).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacedSection {
    pub name: String,
    pub virtual_address: u32,
    pub virtual_size: u32,
    pub raw_offset: u32,
    pub raw_size: u32,
}

fn align_up(v: u64, a: u64) -> u64 {
    if a <= 1 {
        v
    } else {
        v.div_ceil(a) * a
    }
}

/// Assembles a UKI: `stub` plus `sections` (in order), written to `out` from offset 0.
pub fn assemble(
    stub: &ImageFile,
    sections: Vec<NewSection<'_>>,
    time_date_stamp: u32,
    out: &mut File,
) -> Result<Vec<PlacedSection>, UkiError> {
    let stub_file = stub.name().to_owned();
    let (layout, _info) = inspect_stub(stub)?;
    let stub_err = |message: String| UkiError::Stub {
        file: stub_file.clone(),
        message,
    };
    let io_out = |source| UkiError::Io {
        file: "uki.efi".into(),
        source,
    };

    // Bytes of the stub that are kept: headers and every section's data.
    let stub_end = layout
        .sections
        .iter()
        .map(|s| u64::from(s.raw_offset) + u64::from(s.raw_size))
        .max()
        .unwrap_or(0)
        .max(u64::from(layout.size_of_headers));

    let n_old = layout.sections.len() as u64;
    let n_new = sections.len() as u64;
    let table_end = layout.section_table_offset + 40 * (n_old + n_new);
    let first_data = layout
        .sections
        .iter()
        .filter(|s| s.raw_size > 0)
        .map(|s| u64::from(s.raw_offset))
        .min()
        .unwrap_or(u64::from(layout.size_of_headers));
    if table_end > u64::from(layout.size_of_headers) || table_end > first_data {
        return Err(stub_err(format!(
            "no room for {n_new} more section headers (table would end at {table_end:#x}, SizeOfHeaders is {:#x})",
            layout.size_of_headers
        )));
    }

    let salign = u64::from(layout.section_alignment);
    let falign = u64::from(layout.file_alignment);
    let mut next_va = align_up(
        layout
            .sections
            .iter()
            .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.raw_size)))
            .max()
            .unwrap_or(0),
        salign,
    );
    let mut next_raw = align_up(stub_end, falign);
    let mut placed = Vec::with_capacity(sections.len());
    for s in &sections {
        let len = s.data.len().map_err(|source| UkiError::Io {
            file: s.name.into(),
            source,
        })?;
        let raw_size = align_up(len, falign);
        if next_va + len > u64::from(u32::MAX) || next_raw + raw_size > u64::from(u32::MAX) {
            return Err(stub_err(format!(
                "section {} makes the image larger than 4 GiB, which PE cannot address",
                s.name
            )));
        }
        placed.push(PlacedSection {
            name: s.name.to_owned(),
            virtual_address: next_va as u32,
            virtual_size: len as u32,
            raw_offset: next_raw as u32,
            raw_size: raw_size as u32,
        });
        next_va = align_up(next_va + len, salign);
        next_raw += raw_size;
    }
    let size_of_image = next_va as u32;

    // Patched headers (CheckSum zero until the whole file has been summed).
    let mut header = vec![0u8; layout.size_of_headers as usize];
    stub.read_exact_at(&mut header, 0)
        .map_err(|source| UkiError::Io {
            file: stub_file.clone(),
            source,
        })?;
    patch_headers(
        &mut header,
        &layout,
        &placed,
        time_date_stamp,
        size_of_image,
    );

    out.set_len(0).map_err(io_out)?;
    out.seek(SeekFrom::Start(0)).map_err(io_out)?;
    let mut w = ChecksumWriter::new(io::BufWriter::with_capacity(1 << 20, &mut *out));
    w.write_all(&header).map_err(io_out)?;
    let header_len = u64::from(layout.size_of_headers);
    let mut rest = stub.range_reader(header_len, stub_end - header_len);
    io::copy(&mut rest, &mut w).map_err(io_out)?;
    pad_to(&mut w, align_up(stub_end, falign)).map_err(io_out)?;
    for (s, p) in sections.into_iter().zip(&placed) {
        let name = s.name;
        let start = w.len;
        match s.data {
            SectionData::Bytes(b) => w.write_all(&b).map_err(io_out)?,
            SectionData::File(path) => {
                let mut f = File::open(&path).map_err(|source| UkiError::Io {
                    file: path.display().to_string(),
                    source,
                })?;
                io::copy(&mut f, &mut w).map_err(io_out)?;
            }
            SectionData::Image(f) => {
                io::copy(&mut f.reader(), &mut w).map_err(|source| UkiError::Io {
                    file: f.name().to_owned(),
                    source,
                })?;
            }
            SectionData::Stream { write, .. } => write(&mut w).map_err(|source| UkiError::Io {
                file: name.into(),
                source,
            })?,
        }
        let written = w.len - start;
        if written != u64::from(p.virtual_size) {
            return Err(UkiError::Io {
                file: name.into(),
                source: io::Error::other(format!(
                    "expected {} bytes, got {written} (input changed during the build?)",
                    p.virtual_size
                )),
            });
        }
        pad_to(&mut w, u64::from(p.raw_offset) + u64::from(p.raw_size)).map_err(io_out)?;
    }
    let checksum = w.checksum();
    let mut inner = w.into_inner();
    inner.flush().map_err(io_out)?;
    drop(inner);
    out.seek(SeekFrom::Start(layout.checksum_offset))
        .map_err(io_out)?;
    out.write_all(&checksum.to_le_bytes()).map_err(io_out)?;
    out.flush().map_err(io_out)?;
    Ok(placed)
}

fn put_u16(buf: &mut [u8], off: u64, v: u16) {
    let o = off as usize;
    buf[o..o + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(buf: &mut [u8], off: u64, v: u32) {
    let o = off as usize;
    buf[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(buf: &[u8], off: u64) -> u32 {
    let o = off as usize;
    u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]])
}

/// Writes the new values into the header copy. All offsets were bounds-checked by
/// [`PeLayout::parse`] and the room check in [`assemble`].
fn patch_headers(
    h: &mut [u8],
    layout: &PeLayout,
    placed: &[PlacedSection],
    stamp: u32,
    size_of_image: u32,
) {
    let coff = layout.pe_offset + 4;
    let n = layout.sections.len() + placed.len();
    put_u16(h, coff + 2, n as u16);
    put_u32(h, coff + 4, stamp);
    put_u32(h, coff + 8, 0); // PointerToSymbolTable: the symbol table was dropped
    put_u32(h, coff + 12, 0); // NumberOfSymbols
    let opt = layout.pe_offset + 24;
    let init_data = get_u32(h, opt + 8);
    let added: u32 = placed.iter().map(|p| p.raw_size).sum();
    put_u32(h, opt + 8, init_data.wrapping_add(added)); // SizeOfInitializedData
    put_u32(h, opt + 56, size_of_image);
    put_u32(h, layout.checksum_offset, 0);
    let mut off = layout.section_table_offset + 40 * layout.sections.len() as u64;
    for p in placed {
        let o = off as usize;
        h[o..o + 40].fill(0);
        let name = p.name.as_bytes();
        h[o..o + name.len()].copy_from_slice(name);
        put_u32(h, off + 8, p.virtual_size);
        put_u32(h, off + 12, p.virtual_address);
        put_u32(h, off + 16, p.raw_size);
        put_u32(h, off + 20, p.raw_offset);
        put_u32(
            h,
            off + 36,
            IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ,
        );
        off += 40;
    }
}

fn pad_to<W: Write>(w: &mut ChecksumWriter<W>, target: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while w.len < target {
        let n = (target - w.len).min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..n])?;
    }
    Ok(())
}

/// A writer that computes the PE checksum of everything written through it.
///
/// The PE checksum is a one's-complement sum of 16-bit little-endian words plus the file
/// length. Because 2^16 ≡ 1 (mod 0xFFFF), summing 32-bit words and folding at the end
/// gives the same value, which lets the hot loop work on larger words.
pub struct ChecksumWriter<W> {
    inner: W,
    sum: u64,
    /// Bytes of an incomplete 32-bit word carried over between writes.
    carry: [u8; 4],
    carry_len: usize,
    len: u64,
}

impl<W: Write> ChecksumWriter<W> {
    pub fn new(inner: W) -> Self {
        ChecksumWriter {
            inner,
            sum: 0,
            carry: [0; 4],
            carry_len: 0,
            len: 0,
        }
    }

    fn add(&mut self, mut data: &[u8]) {
        if self.carry_len > 0 {
            let take = (4 - self.carry_len).min(data.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&data[..take]);
            self.carry_len += take;
            data = &data[take..];
            if self.carry_len < 4 {
                return;
            }
            self.sum += u64::from(u32::from_le_bytes(self.carry));
            self.carry_len = 0;
        }
        let mut chunks = data.chunks_exact(4);
        let mut s = 0u64;
        for c in &mut chunks {
            s += u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        self.sum += s;
        let rem = chunks.remainder();
        self.carry[..rem.len()].copy_from_slice(rem);
        self.carry_len = rem.len();
    }

    /// The PE checksum of all bytes written so far (checksum field assumed zero).
    pub fn checksum(&self) -> u32 {
        let mut sum = self.sum;
        if self.carry_len > 0 {
            let mut last = [0u8; 4];
            last[..self.carry_len].copy_from_slice(&self.carry[..self.carry_len]);
            sum += u64::from(u32::from_le_bytes(last));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        (sum as u32).wrapping_add(self.len as u32)
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.add(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The PE checksum of a whole file (CheckSum field treated as zero), for verification.
pub fn pe_checksum(image: &ImageFile) -> Result<u32, UkiError> {
    let layout = PeLayout::read(image)?;
    let io_err = |source| UkiError::Io {
        file: image.name().to_owned(),
        source,
    };
    let mut f = image.reader();
    let mut w = ChecksumWriter::new(io::sink());
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        // Zero the CheckSum field wherever it falls in this chunk.
        let cs = layout.checksum_offset;
        for i in 0..4u64 {
            if cs + i >= pos && cs + i < pos + n as u64 {
                buf[(cs + i - pos) as usize] = 0;
            }
        }
        w.write_all(&buf[..n]).map_err(io_err)?;
        pos += n as u64;
    }
    Ok(w.checksum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdmagic_versions() {
        let i = parse_sdmagic(b"#### LoaderInfo: systemd-stub 252.39-1~deb12u2 ####\0").unwrap();
        assert_eq!(i.major, 252);
        assert_eq!(i.version, "252.39-1~deb12u2");
        assert_eq!(
            parse_sdmagic(b"#### LoaderInfo: systemd-stub 262.1-1 ####")
                .unwrap()
                .major,
            262
        );
        assert!(parse_sdmagic(b"#### LoaderInfo: systemd-boot 252 ####").is_none());
        assert!(parse_sdmagic(b"\xff\xfe").is_none());
    }

    #[test]
    fn checksum_matches_16bit_definition() {
        // Reference: the spec's 16-bit one's-complement sum, computed naively.
        let data: Vec<u8> = (0..10_007u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut naive: u32 = 0;
        for pair in data.chunks(2) {
            let word = u32::from(pair[0]) | u32::from(*pair.get(1).unwrap_or(&0)) << 8;
            naive += word;
            naive = (naive & 0xffff) + (naive >> 16);
        }
        naive = (naive & 0xffff) + (naive >> 16);
        naive += data.len() as u32;
        // Feed in odd-sized pieces to exercise the carry.
        let mut w = ChecksumWriter::new(io::sink());
        for piece in data.chunks(7) {
            w.write_all(piece).unwrap();
        }
        assert_eq!(w.checksum(), naive);
    }

    #[test]
    fn os_release_is_quoted() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("NAME".to_string(), "zoa \"demo\"".to_string());
        m.insert("ID".to_string(), "zoa".to_string());
        assert_eq!(
            render_os_release(&m),
            "ID=\"zoa\"\nNAME=\"zoa \\\"demo\\\"\"\n"
        );
    }

    #[test]
    fn bzimage_release_reads_setup_header() {
        let mut head = vec![0u8; 0x1000];
        head[0x202..0x206].copy_from_slice(b"HdrS");
        head[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        head[0x500..0x520].copy_from_slice(b"6.1.0-56-cloud-amd64 (x) #1 SMP\0");
        assert_eq!(
            bzimage_release(&head).as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
        assert_eq!(bzimage_release(&[0u8; 10]), None);
    }
}
