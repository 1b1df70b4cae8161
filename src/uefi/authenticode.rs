//! Authenticode digest ranges of a PE image, as UEFI firmware (EDK2's measured-boot
//! library) hashes an image before measuring it into PCR4.
//!
//! The rules, from the PE/COFF Authenticode specification as EDK2 implements them:
//! 1. the headers up to the optional header's CheckSum; skip CheckSum (4 bytes);
//! 2. if the image has a certificate-table data directory entry (NumberOfRvaAndSizes > 4):
//!    up to that entry, skip it (8 bytes), then on to SizeOfHeaders; otherwise straight on
//!    to SizeOfHeaders;
//! 3. every section with raw data, in ascending PointerToRawData order, SizeOfRawData bytes;
//! 4. if the image is longer than SizeOfHeaders + the sum of SizeOfRawData: the bytes after
//!    that point, minus the certificate table's size (the table is assumed to be last).
//!
//! The image can sit anywhere in a file (a kernel inside a UKI's `.linux` section), so
//! ranges are computed relative to `base` and a length, and handed to the streaming
//! hasher; nothing is read here except the headers.

use super::file::ImageFile;
use super::hashing::HashJob;
use super::pe::PeLayout;

/// Errors computing Authenticode ranges.
#[derive(Debug, thiserror::Error)]
#[error("{file}: Authenticode: {message}")]
pub struct AuthenticodeError {
    pub file: String,
    pub message: String,
}

/// The Authenticode SHA-256 of an opened PE image (what a signature covers and what
/// firmware measures into PCR4): the same for an image signed or not.
pub fn authenticode_sha256(image: &ImageFile) -> Result<[u8; 32], String> {
    let file = image.name();
    let layout = PeLayout::read(image).map_err(|e| e.to_string())?;
    let job = authenticode_job(file, &layout, 0, layout.file_len).map_err(|e| e.to_string())?;
    let digests = super::hashing::hash_jobs(image, &[job]).map_err(|e| format!("{file}: {e}"))?;
    Ok(digests[0].sha256)
}

/// The hash ranges of the PE image whose headers are `layout`, located at file offset
/// `base` and `image_len` bytes long (the size the firmware was given).
pub fn authenticode_job(
    file: &str,
    layout: &PeLayout,
    base: u64,
    image_len: u64,
) -> Result<HashJob, AuthenticodeError> {
    let err = |message: String| AuthenticodeError {
        file: file.to_owned(),
        message,
    };
    let size_of_headers = u64::from(layout.size_of_headers);
    if size_of_headers > image_len {
        return Err(err(format!(
            "SizeOfHeaders {size_of_headers:#x} exceeds the image ({image_len} bytes)"
        )));
    }
    let checksum = layout.checksum_offset;
    let mut ranges = vec![(0, checksum)];
    match layout.cert_dir_offset {
        Some(cert_dir) => {
            ranges.push((checksum + 4, cert_dir));
            ranges.push((cert_dir + 8, size_of_headers));
        }
        None => ranges.push((checksum + 4, size_of_headers)),
    }
    let mut sections: Vec<_> = layout.sections.iter().filter(|s| s.raw_size > 0).collect();
    sections.sort_by_key(|s| s.raw_offset);
    let mut sum_of_bytes = size_of_headers;
    for s in sections {
        let start = u64::from(s.raw_offset);
        let end = start + u64::from(s.raw_size);
        if end > image_len {
            return Err(err(format!(
                "section {} ends at {end:#x}, beyond the image ({image_len} bytes)",
                s.name
            )));
        }
        if start < ranges.last().map(|r| r.1).unwrap_or(0) {
            return Err(err(format!(
                "section {} overlaps the headers or another section",
                s.name
            )));
        }
        ranges.push((start, end));
        sum_of_bytes += u64::from(s.raw_size);
    }
    if image_len > sum_of_bytes {
        let cert_size = if layout.cert_dir_offset.is_some() {
            u64::from(layout.cert_table.1)
        } else {
            0
        };
        let extra = image_len
            .checked_sub(cert_size + sum_of_bytes)
            .ok_or_else(|| {
                err("the certificate table is larger than the data after the sections".into())
            })?;
        if extra > 0 {
            let start = sum_of_bytes;
            if start < ranges.last().map(|r| r.1).unwrap_or(0) {
                return Err(err(
                    "sections leave gaps the firmware would hash twice (unsupported layout)".into(),
                ));
            }
            ranges.push((start, start + extra));
        }
    }
    let ranges = ranges
        .into_iter()
        .filter(|(s, e)| e > s)
        .map(|(s, e)| (base + s, base + e))
        .collect();
    Ok(HashJob { ranges, zeros: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uefi::pe::Section;

    fn layout(cert_dir: Option<u64>, cert: (u32, u32), sections: Vec<Section>) -> PeLayout {
        PeLayout {
            file_len: 0x3000,
            pe_offset: 0x80,
            machine: 0x8664,
            magic: 0x20b,
            subsystem: 10,
            time_date_stamp: 0,
            pointer_to_symbol_table: 0,
            number_of_symbols: 0,
            section_alignment: 0x1000,
            file_alignment: 0x200,
            size_of_image: 0x3000,
            size_of_headers: 0x400,
            checksum_offset: 0xd8,
            cert_dir_offset: cert_dir,
            cert_table: cert,
            section_table_offset: 0x188,
            sections,
        }
    }

    fn section(name: &str, raw_offset: u32, raw_size: u32) -> Section {
        Section {
            name: name.into(),
            virtual_address: raw_offset,
            virtual_size: raw_size,
            raw_offset,
            raw_size,
            characteristics: 0,
            header_offset: 0,
        }
    }

    #[test]
    fn skips_checksum_cert_entry_and_cert_table() {
        // Sections listed out of file order: hashing follows PointerToRawData.
        let l = layout(
            Some(0x128),
            (0x1400, 0x100),
            vec![section(".b", 0xc00, 0x800), section(".a", 0x400, 0x800)],
        );
        let job = authenticode_job("t", &l, 0, 0x1500).unwrap();
        assert_eq!(
            job.ranges,
            vec![
                (0, 0xd8),
                (0xdc, 0x128),
                (0x130, 0x400),
                (0x400, 0xc00),
                (0xc00, 0x1400)
            ]
        );
        // Trailing data before the certificate table is hashed; the table is not.
        let job = authenticode_job("t", &l, 0x10000, 0x1600).unwrap();
        assert_eq!(job.ranges.last(), Some(&(0x11400, 0x11500)));
    }

    #[test]
    fn no_security_directory_hashes_all_trailing_data() {
        let l = layout(None, (0, 0), vec![section(".a", 0x400, 0x200)]);
        let job = authenticode_job("t", &l, 0, 0x700).unwrap();
        assert_eq!(
            job.ranges,
            vec![(0, 0xd8), (0xdc, 0x400), (0x400, 0x600), (0x600, 0x700)]
        );
    }

    #[test]
    fn section_beyond_image_is_an_error() {
        let l = layout(None, (0, 0), vec![section(".a", 0x400, 0x2000)]);
        assert!(authenticode_job("t", &l, 0, 0x1000).is_err());
    }
}
