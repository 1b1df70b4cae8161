//! A swtpm of its own, reached on its server socket (raw TPM 2.0 commands, no control
//! channel): for driving the emulator without QEMU (tests, and tools that want an
//! attestation document from a software TPM). `zoa boot` runs swtpm the way QEMU needs it
//! instead (`boot.rs`).

use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while !swtpm.socket.exists() {
            if Instant::now() > deadline || swtpm.child.try_wait()?.is_some() {
                return Err(failed("swtpm", "made no socket in 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(swtpm)
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
