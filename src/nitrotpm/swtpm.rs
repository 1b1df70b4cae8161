//! A swtpm of its own, reached on its server socket (raw TPM 2.0 commands, no control
//! channel): for driving the emulator without QEMU (tests, and tools that want an
//! attestation document from a software TPM). `zoa boot` runs swtpm the way QEMU needs it
//! instead (`boot.rs`).

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zoa_init::tpm2::transport::exchange;
use zoa_init::tpm2::{Transport, TransportError};

/// A running swtpm with SHA-256 and SHA-384 banks (as `zoa boot` sets it up), started and
/// ready (`TPM2_Startup` done); killed on drop.
pub struct Swtpm {
    child: Child,
    socket: PathBuf,
    // Kept for its Drop: the state lives as long as the emulator.
    _dir: tempfile::TempDir,
}

fn failed(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

impl Swtpm {
    pub fn start() -> io::Result<Swtpm> {
        let dir = tempfile::tempdir()?;
        let setup = Command::new("swtpm_setup")
            .args(["--tpm2", "--tpmstate"])
            .arg(dir.path())
            .args(["--pcr-banks", "sha256,sha384", "--overwrite"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed("swtpm_setup (Debian package swtpm-tools)", e))?;
        if !setup.status.success() {
            return Err(failed(
                "swtpm_setup",
                String::from_utf8_lossy(&setup.stderr).trim(),
            ));
        }
        let socket = dir.path().join("data.sock");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", dir.path().display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| failed("swtpm (Debian package swtpm)", e))?;
        let mut swtpm = Swtpm {
            child,
            socket,
            _dir: dir,
        };
        swtpm.wait_until_listening()?;
        Ok(swtpm)
    }

    /// Ready means listening: the socket file appears at bind(), before listen(), and a
    /// connect in between is refused (seen once in CI).
    fn wait_until_listening(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_listening(&self.socket)? {
            if Instant::now() > deadline || self.child.try_wait()?.is_some() {
                return Err(failed("swtpm", "was not listening on its socket in 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// A connection to the TPM (swtpm serves one at a time).
    pub fn connect(&self) -> io::Result<Stream> {
        let s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Stream(s))
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a Unix socket is bound at `path` and listening, read from `/proc/net/unix`
/// (flag `__SO_ACCEPTCON`). Not a probe connection: swtpm with `--terminate` would end when
/// a probe hung up, and its socket file exists a moment before it listens.
pub fn is_listening(path: &Path) -> io::Result<bool> {
    const ACCEPTING: u32 = 0x1_0000;
    let table = std::fs::read_to_string("/proc/net/unix")
        .map_err(|e| failed("reading /proc/net/unix", e))?;
    let wanted = path.as_os_str().to_string_lossy();
    Ok(table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && fields[7..].join(" ") == wanted
            && u32::from_str_radix(fields[3], 16).is_ok_and(|flags| flags & ACCEPTING != 0)
    }))
}

/// A stream carrying raw TPM commands to swtpm (its server socket, or the data channel
/// the relay hands it) as a [`Transport`].
pub struct Stream(pub(super) UnixStream);

impl Transport for Stream {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        exchange(&mut self.0, command).map_err(|e| TransportError(format!("swtpm: {e}")))
    }
}

/// TPM2_PCR_Extend of PCR `pcr`'s SHA-384 bank with `digest` (password session, empty
/// platform authorization): puts a TPM in the state a boot would leave.
pub fn extend_sha384(tpm: &mut dyn Transport, pcr: u32, digest: &[u8; 48]) -> io::Result<()> {
    use zoa_init::tpm2::marshal::{Command as TpmCommand, ST_SESSIONS};
    const CC_PCR_EXTEND: u32 = 0x182;
    let mut c = TpmCommand::new("TPM2_PCR_Extend", ST_SESSIONS, CC_PCR_EXTEND);
    c.u32(pcr)
        .password_session(b"")
        .map_err(|e| failed("TPM2_PCR_Extend", e))?;
    c.u32(1).u16(super::wire::ALG_SHA384).bytes(digest);
    let bytes = c.finish().map_err(|e| failed("TPM2_PCR_Extend", e))?;
    let response = tpm
        .transact(&bytes)
        .map_err(|e| failed("TPM2_PCR_Extend", e))?;
    match super::wire::response_code(&response) {
        0 => Ok(()),
        rc => Err(failed("TPM2_PCR_Extend", format!("response code 0x{rc:x}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixListener};

    #[test]
    fn only_a_listening_stream_socket_counts_as_listening() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.sock");
        assert!(!is_listening(&absent).unwrap());

        // Bound but never listening: what swtpm's socket is between bind() and listen().
        let bound = dir.path().join("bound.sock");
        let _datagram = UnixDatagram::bind(&bound).unwrap();
        assert!(bound.exists());
        assert!(!is_listening(&bound).unwrap());

        let listening = dir.path().join("listening sock");
        let _listener = UnixListener::bind(&listening).unwrap();
        assert!(is_listening(&listening).unwrap());
    }

    #[test]
    fn a_started_swtpm_accepts_at_once() {
        let tpm = Swtpm::start().expect("swtpm");
        assert!(is_listening(&tpm.socket).unwrap());
        tpm.connect().expect("the first connect is accepted");
    }
}
