//! The emulated NitroTPM reads whatever a guest sends its TPM (a hostile guest included):
//! a stream of commands, each prefixed here by a u16 length, goes through one emulator
//! whose swtpm answers every command with a bare success. Nothing may panic, and every
//! command gets a response whose size field is its length.
use zoa::nitrotpm::{ca::TestCa, nsm::Nsm, Emulator};
use zoa_init::tpm2::{Transport, TransportError};

struct Bare;

impl Transport for Bare {
    fn transact(&mut self, _command: &[u8]) -> Result<Vec<u8>, TransportError> {
        Ok(vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0])
    }
}

/// One CA for the run (making P-384 keys per input would be most of the work).
fn ca() -> TestCa {
    static CA: std::sync::OnceLock<TestCa> = std::sync::OnceLock::new();
    CA.get_or_init(|| TestCa::new().expect("a test CA")).clone()
}

pub fn run(data: &[u8]) {
    let mut emulator = Emulator::new(Bare, Nsm::new(ca(), "i-0-tpm0".into()));
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (command, tail) = rest[2..].split_at(len);
        let response = emulator.handle(command);
        assert!(response.len() >= 10);
        let size = u32::from_be_bytes([response[2], response[3], response[4], response[5]]);
        assert_eq!(size as usize, response.len());
        rest = tail;
    }
}
