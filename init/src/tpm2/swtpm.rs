//! Tests only: a real swtpm (TPM 2.0 emulator) started per test, reached over its server
//! socket, which carries raw TPM 2.0 commands and responses exactly like the character device.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::transport::{exchange, Transport, TransportError};

/// A running `swtpm socket --tpm2` with fresh state in a temporary directory; killed on drop.
pub struct Swtpm {
    child: Child,
    socket: PathBuf,
    // Kept for its Drop: the state directory lives as long as the emulator.
    _dir: tempfile::TempDir,
}

impl Swtpm {
    /// Starts swtpm, or says loudly that the test is skipped and returns `None` when swtpm is
    /// not installed. TPM2_Startup is left to the test.
    pub fn start() -> Option<Swtpm> {
        let dir = tempfile::tempdir().expect("temporary directory for swtpm");
        let socket = dir.path().join("swtpm.sock");
        let spawned = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.path().display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            // Accept commands at once, without the control channel's INIT; TPM2_Startup is
            // ours to send.
            .args(["--flags", "not-need-init"])
            .stdin(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("SKIPPED: swtpm is not installed (apt-get install swtpm)");
                return None;
            }
            Err(e) => panic!("starting swtpm: {e}"),
        };
        let swtpm = Swtpm {
            child,
            socket,
            _dir: dir,
        };
        swtpm.wait_for_socket();
        Some(swtpm)
    }

    fn wait_for_socket(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.socket.exists() {
            assert!(Instant::now() < deadline, "swtpm made no socket in 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A new connection to the emulator.
    pub fn connect(&self) -> SocketTransport {
        let stream = UnixStream::connect(&self.socket).expect("connecting to swtpm");
        // A test must fail, not hang, if swtpm stops answering.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        SocketTransport { stream }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// swtpm's server socket as a [`Transport`].
pub struct SocketTransport {
    stream: UnixStream,
}

impl Transport for SocketTransport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        exchange(&mut self.stream, command).map_err(|e| TransportError(format!("swtpm: {e}")))
    }
}
