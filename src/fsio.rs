//! Reading files whose size has a bound: zoa never reads an untrusted file whole without
//! one. Each caller says what the bound means in its own error message.

use std::io::{self, Read};
use std::path::Path;

/// Why a bounded read failed.
#[derive(Debug)]
pub enum ReadBoundedError {
    Io(io::Error),
    /// The file holds more than the bound.
    TooLarge,
}

/// Reads at most `limit` bytes of `path` (what is beyond is not read). Files whose
/// reported length is 0 (sysfs) are read as they are.
pub fn read_at_most(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads `path` whole, refusing a file of more than `limit` bytes (one byte more is read
/// to tell, never the rest).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadBoundedError> {
    let bytes = read_at_most(path, limit.saturating_add(1)).map_err(ReadBoundedError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadBoundedError::TooLarge);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap(), b"12345");
        assert!(matches!(
            read_bounded(&p, 4),
            Err(ReadBoundedError::TooLarge)
        ));
        assert_eq!(read_at_most(&p, 3).unwrap(), b"123");
        assert!(matches!(
            read_bounded(&dir.path().join("missing"), 5),
            Err(ReadBoundedError::Io(_))
        ));
    }
}
