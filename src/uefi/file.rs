//! An image file opened once: every reader (PE layout, sections, Authenticode, PCR
//! hashing, Secure Boot verification, the ESP disk) reads the same open file by offset,
//! so one command never parses one path twice and cannot see two versions of it.
//!
//! [`ImageFile::private_copy`] goes further for bytes that were checked against a signed
//! digest: it copies them into an unnamed temporary file while hashing, so nothing outside
//! this process can change them between the check and their use.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// An open image file: read by offset (`pread`), so readers in several threads share it.
#[derive(Debug)]
pub struct ImageFile {
    file: File,
    len: u64,
    name: String,
}

/// A private copy and the SHA-256 of the bytes it holds.
#[derive(Debug)]
pub struct CopiedImage {
    pub image: ImageFile,
    pub sha256: String,
}

impl ImageFile {
    /// Opens `path` for reading; its length is fixed at this moment.
    pub fn open(path: &Path) -> io::Result<ImageFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(ImageFile {
            file,
            len,
            name: path.display().to_string(),
        })
    }

    /// Copies `path` into an unnamed temporary file (no other process can open or replace
    /// it), hashing the bytes as they are copied. `name` is what messages call it.
    pub fn private_copy(path: &Path, name: &str) -> io::Result<CopiedImage> {
        let mut source = File::open(path)?;
        let mut copy = tempfile::tempfile()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            copy.write_all(&buf[..n])?;
            len += n as u64;
        }
        copy.flush()?;
        Ok(CopiedImage {
            image: ImageFile {
                file: copy,
                len,
                name: name.to_owned(),
            },
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// What messages call the file (its path, or the name given to a private copy).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `buf` from `offset`; an error when the file ends first.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} bytes at offset {offset} run past the end of the {}-byte file",
                    buf.len(),
                    self.len
                ),
            ));
        }
        self.file.read_exact_at(buf, offset)
    }

    /// Reads `len` bytes at `offset` into a new buffer.
    pub fn read_vec_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// A reader over `len` bytes from `offset` (ending early at the end of the file).
    pub fn range_reader(&self, offset: u64, len: u64) -> RangeReader<'_> {
        RangeReader {
            image: self,
            at: offset,
            end: offset.saturating_add(len).min(self.len),
        }
    }

    /// A reader over the whole file.
    pub fn reader(&self) -> RangeReader<'_> {
        self.range_reader(0, self.len)
    }
}

/// `Read` over a byte range of an [`ImageFile`].
#[derive(Debug)]
pub struct RangeReader<'a> {
    image: &'a ImageFile,
    at: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.at);
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.image.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_by_offset_and_refuses_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = ImageFile::open(&p).unwrap();
        assert_eq!(f.len(), 10);
        assert_eq!(f.read_vec_at(3, 4).unwrap(), b"3456");
        assert!(f.read_vec_at(8, 3).is_err());
        let mut s = String::new();
        f.range_reader(7, 100).read_to_string(&mut s).unwrap();
        assert_eq!(s, "789");
    }

    #[test]
    fn a_private_copy_keeps_its_bytes_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("uki.efi");
        std::fs::write(&p, b"verified bytes").unwrap();
        let c = ImageFile::private_copy(&p, "uki.efi").unwrap();
        assert_eq!(
            c.sha256,
            crate::digest::sha256_bytes(b"verified bytes"),
            "hashed while copied"
        );
        std::fs::write(&p, b"something else entirely").unwrap();
        std::fs::remove_file(&p).unwrap();
        let mut got = Vec::new();
        c.image.reader().read_to_end(&mut got).unwrap();
        assert_eq!(got, b"verified bytes");
        assert_eq!(c.image.name(), "uki.efi");
    }
}
