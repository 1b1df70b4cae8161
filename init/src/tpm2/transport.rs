//! Moving whole TPM commands and responses: the Linux character device, and any byte stream
//! that carries raw TPM 2.0 commands (swtpm's server socket in the tests).

use std::fmt;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use super::marshal::HEADER_LEN;
use super::MAX_MESSAGE;

/// Sends one whole TPM command and returns the whole response (header included).
pub trait Transport {
    /// Sends `command` and returns the response bytes. Response codes are not looked at here.
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError>;
}

/// Why a command could not be delivered or its response not received: names the device or
/// socket and the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError(pub String);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A TPM character device: `/dev/tpm0` (raw, one opener at a time) or `/dev/tpmrm0` (the
/// kernel's resource manager).
///
/// The kernel takes exactly one whole command per `write(2)` and hands back the response to the
/// following `read(2)`s; both are at most 4096 bytes (`TPM_BUFSIZE` in drivers/char/tpm).
pub struct DeviceTransport {
    file: File,
    path: PathBuf,
}

impl DeviceTransport {
    /// Opens `path` for reading and writing.
    pub fn open(path: &Path) -> Result<DeviceTransport, TransportError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| TransportError(format!("opening {}: {e}", path.display())))?;
        Ok(DeviceTransport {
            file,
            path: path.to_path_buf(),
        })
    }
}

impl Transport for DeviceTransport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        exchange(&mut self.file, command)
            .map_err(|e| TransportError(format!("{}: {e}", self.path.display())))
    }
}

/// Writes `command` whole, then reads one response: its header first, then as many bytes as
/// the header's size field says, at most [`MAX_MESSAGE`]. Works for the character device (whose
/// first read returns the whole response) and for stream sockets (which may split it).
pub fn exchange<S: Read + Write>(stream: &mut S, command: &[u8]) -> Result<Vec<u8>, String> {
    if command.len() > MAX_MESSAGE {
        return Err(format!(
            "command of {} bytes; at most {MAX_MESSAGE} can be sent",
            command.len()
        ));
    }
    // The device needs the command in a single write: it answers EINVAL to a partial one, so
    // a short write cannot happen without an error.
    stream
        .write_all(command)
        .map_err(|e| format!("writing the command: {e}"))?;
    stream
        .flush()
        .map_err(|e| format!("writing the command: {e}"))?;
    let mut response = vec![0u8; MAX_MESSAGE];
    let mut got = 0;
    let mut expected = HEADER_LEN;
    while got < expected {
        let n = match stream.read(&mut response[got..]) {
            Ok(0) => {
                return Err(format!(
                    "reading the response: end of stream after {got} of {expected} bytes"
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the response: {e}")),
        };
        got += n;
        if expected == HEADER_LEN && got >= HEADER_LEN {
            expected = declared_size(&response)?;
        }
    }
    if got > expected {
        return Err(format!(
            "reading the response: {got} bytes received, the header says {expected}"
        ));
    }
    response.truncate(got);
    Ok(response)
}

/// The response size from a header, checked against the header length and [`MAX_MESSAGE`].
fn declared_size(header: &[u8]) -> Result<usize, String> {
    let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if !(HEADER_LEN..=MAX_MESSAGE).contains(&size) {
        return Err(format!(
            "reading the response: header says {size} bytes; expected {HEADER_LEN} to {MAX_MESSAGE}"
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A stream whose reads return the scripted response in pieces, and records the writes.
    struct Scripted {
        written: Vec<u8>,
        reads: Vec<Vec<u8>>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.reads.is_empty() {
                return Ok(0);
            }
            let next = self.reads.remove(0);
            Cursor::new(next).read(buf)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const OK_RESPONSE: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0];

    #[test]
    fn response_split_across_reads_is_joined() {
        let mut s = Scripted {
            written: Vec::new(),
            reads: vec![OK_RESPONSE[..3].to_vec(), OK_RESPONSE[3..].to_vec()],
        };
        assert_eq!(exchange(&mut s, b"cmd").unwrap(), OK_RESPONSE);
        assert_eq!(s.written, b"cmd");
    }

    #[test]
    fn truncated_and_oversized_responses_are_refused() {
        let mut s = Scripted {
            written: Vec::new(),
            reads: vec![OK_RESPONSE[..11].to_vec()],
        };
        assert_eq!(
            exchange(&mut s, b"cmd").unwrap_err(),
            "reading the response: end of stream after 11 of 12 bytes"
        );
        let mut huge = OK_RESPONSE.to_vec();
        huge[2..6].copy_from_slice(&100_000u32.to_be_bytes());
        let mut s = Scripted {
            written: Vec::new(),
            reads: vec![huge],
        };
        assert_eq!(
            exchange(&mut s, b"cmd").unwrap_err(),
            "reading the response: header says 100000 bytes; expected 10 to 4096"
        );
        let mut s = Scripted {
            written: Vec::new(),
            reads: Vec::new(),
        };
        assert!(exchange(&mut s, &vec![0; MAX_MESSAGE + 1])
            .unwrap_err()
            .starts_with("command of 4097 bytes"));
    }

    #[test]
    fn missing_device_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tpm0");
        let err = DeviceTransport::open(&path).err().unwrap();
        assert!(
            err.0.starts_with(&format!("opening {}: ", path.display())),
            "{err}"
        );
    }
}
