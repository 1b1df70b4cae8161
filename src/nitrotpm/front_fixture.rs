//! For tests: zoa-init's TLS front (the code the image runs) on loopback with the emulated
//! NitroTPM behind it and a stand-in inference server behind that — the attested-TLS
//! exchange without QEMU.

use super::swtpm::{extend_sha384, Stream, Swtpm};
use super::{ca::TestCa, nsm::Nsm, Emulator};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use zoa_init::front::attest::{Attester, OpenTpm};
use zoa_init::front::identity::Identity;
use zoa_init::front::{bind, Front};
use zoa_init::tpm2::{Transport, TransportError};

use crate::attestation::online::Target;

pub type SharedTpm = Arc<Mutex<Emulator<Stream>>>;

/// One emulated NitroTPM several fronts open, as `/dev/tpm0` would be.
struct Shared(SharedTpm);

impl Transport for Shared {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.0.lock().unwrap().transact(command)
    }
}

pub fn opener(tpm: &SharedTpm) -> OpenTpm {
    let tpm = tpm.clone();
    Box::new(move || Ok(Box::new(Shared(tpm.clone())) as Box<dyn Transport + Send>))
}

/// An inference server stand-in on loopback: answers every request with `hello`.
pub fn upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

/// A front serving `served`'s key whose documents bind `bound`'s (the same identity for an
/// honest image; another for a relay that passes the image's documents through).
pub fn front(served: &Identity, bound: &Identity, open: OpenTpm, upstream: u16) -> Target {
    let attester = Attester::new(open, &bound.binding());
    let front = Front::new(served, attester, upstream, 4, 16).unwrap();
    let listener = bind(0).unwrap();
    let port = listener.local_addr().unwrap().port();
    front.spawn(listener).unwrap();
    format!("https://127.0.0.1:{port}").parse().unwrap()
}

/// swtpm, the emulator over it (PCR4 extended once with 48 bytes of 4), its root, and an
/// upstream stand-in.
pub struct Setup {
    _swtpm: Swtpm,
    pub tpm: SharedTpm,
    pub root: Vec<u8>,
    pub upstream: u16,
}

pub fn setup() -> Setup {
    let swtpm = Swtpm::start().expect("swtpm");
    let nsm = Nsm::new(TestCa::new().unwrap(), "i-0123456789abcdef0-tpm0".into());
    let mut emulator = Emulator::new(swtpm.connect().unwrap(), nsm);
    extend_sha384(&mut emulator, 4, &[4; 48]).unwrap();
    let root = emulator.nsm().ca.root_der().unwrap();
    Setup {
        _swtpm: swtpm,
        tpm: Arc::new(Mutex::new(emulator)),
        root,
        upstream: upstream(),
    }
}

/// What PCR4 is after [`setup`]'s one extend (computed here, independently of swtpm).
pub fn pcr4_after_setup() -> String {
    hex::encode(openssl::sha::sha384(&[[0u8; 48], [4; 48]].concat()))
}

/// A TCP port that forwards each new connection to whichever backend is set at that
/// moment: a server "rebooted" with another key at the same address.
pub struct Switch {
    pub port: u16,
    backend: Arc<Mutex<u16>>,
}

impl Switch {
    pub fn new(backend: u16) -> Switch {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let backend = Arc::new(Mutex::new(backend));
        let current = backend.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let to = *current.lock().unwrap();
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                splice(client, server);
            }
        });
        Switch { port, backend }
    }

    pub fn point_to(&self, backend: u16) {
        *self.backend.lock().unwrap() = backend;
    }
}

fn splice(a: std::net::TcpStream, b: std::net::TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let (mut a, mut b) = (a, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b2, &mut a2);
        let _ = a2.shutdown(std::net::Shutdown::Write);
    });
}
