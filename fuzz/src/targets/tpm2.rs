//! What comes back from the TPM device (and, through the NitroTPM, from the NSM) is parsed by
//! zoa-init before anything is attested: response framing, headers and parameters, response
//! codes and the NSM's CBOR answer must be refused cleanly when malformed, and what is
//! accepted must have the shape the caller relies on.
//!
//! Input: a mode byte, a 4-byte argument, then the payload. Modes:
//! 0 a response code's decoding; 1 a response header and parameters; 2 the NSM's CBOR
//! response; 3 reading one response off a byte stream (payload: the reads); 4.. one TPM
//! command, or the whole NSM exchange, against a TPM that answers with the payload's script.
//!
//! A script is a list of responses, each `kind (1 byte) | length (u16 BE) | bytes`: kind 0
//! sends the bytes as they are; kind 1 wraps them in a success header that fits the command
//! (tag, size, a parameterSize after the handles for session commands), so scripts get past
//! framing into parameter parsing; kind 2 is like 1 with a response code from the first 4
//! bytes; kind 3 is a transport error.
use std::io::{Read, Write};

use ciborium::value::Value;
use zoa_init::tpm2::marshal::{check_response_code, parse_response, HEADER_LEN};
use zoa_init::tpm2::rc::Subject;
use zoa_init::tpm2::{
    nsm, transport, ResponseCode, Tpm, Tpm2Error, Transport, TransportError, MAX_MESSAGE,
    NV_INDEX_FIRST, NV_INDEX_LAST, RH_NULL,
};

const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
const CC_CREATE_PRIMARY: u32 = 0x131;
/// TPM_RC_RETRY, TPM_RC_TESTING: `Tpm` sleeps and resends on these. The script answers
/// something else instead, or the fuzzer would spend its time asleep.
const RC_RETRY: u32 = 0x922;
const RC_TESTING: u32 = 0x90A;
/// A stand-in for the DER public key of the attestation request (its contents do not matter
/// to the TPM side; its length is that of an RSA-2048 SubjectPublicKeyInfo).
const PUBLIC_KEY: [u8; 294] = [0x30; 294];

pub fn run(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let mode = data[0];
    let arg = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
    let payload = &data[5..];
    match mode % 8 {
        0 => check_code(ResponseCode(arg)),
        1 => check_parse_response(payload, (arg % 3) as usize),
        2 => check_nsm_response(payload),
        3 => check_stream(payload),
        _ => run_command(mode / 8, arg, payload),
    }
}

/// Response codes come from the TPM (or the kernel) and end up in a console line.
fn check_code(rc: ResponseCode) {
    let text = rc.to_string();
    assert!(text.contains(&format!("0x{:x}", rc.0)), "{text}");
    assert!(!text.contains(['\n', '\r']), "{text:?}");
    assert_eq!(rc.layer(), (rc.0 >> 16) as u8);
    let low = rc.0 & 0xFFFF;
    let base = rc.base();
    if low & 0x080 != 0 {
        // Format 1: the error number with the format bit, nothing of handle or parameter.
        assert_eq!(base, 0x080 | (low & 0x3F), "{text}");
    } else {
        assert_eq!(base, low, "{text}");
    }
    match rc.subject() {
        Subject::Command => {}
        Subject::Parameter(n) => assert!(n <= 15 && low & 0x080 != 0, "{text}"),
        Subject::Handle(n) | Subject::Session(n) => {
            assert!((1..=7).contains(&n) && low & 0x080 != 0, "{text}")
        }
    }
}

fn check_parse_response(response: &[u8], handles: usize) {
    let header = check_response_code("fuzz", response);
    match parse_response("fuzz", response, handles) {
        Ok(mut reply) => {
            assert!(header.is_ok());
            assert!(response.len() >= HEADER_LEN);
            let size = u32::from_be_bytes([response[2], response[3], response[4], response[5]]);
            assert_eq!(size as usize, response.len());
            assert_eq!(&response[6..10], &[0, 0, 0, 0]);
            assert_eq!(reply.handles.len(), handles);
            // Walk the parameters as commands do: every read stays inside the response.
            let mut taken = 0;
            while let Ok(b) = reply.params.tpm2b() {
                taken += 2 + b.len();
                assert!(taken <= response.len() - HEADER_LEN);
            }
            let _ = reply.params.u8();
            let _ = reply.params.finish();
        }
        Err(e) => check_error(&e),
    }
}

/// The NSM's answer, read back from the NV index: a document only when it is a COSE_Sign1.
fn check_nsm_response(response: &[u8]) {
    match nsm::document_from_response(response) {
        Ok(document) => check_cose_sign1(&document),
        Err(e) => check_error(&e),
    }
}

fn check_cose_sign1(document: &[u8]) {
    let mut rest = document;
    let value: Value = ciborium::de::from_reader(&mut rest).expect("a document is CBOR");
    assert!(rest.is_empty(), "bytes after the document");
    let array = match &value {
        Value::Tag(18, inner) => inner.as_ref(),
        other => other,
    };
    assert!(
        matches!(
            array,
            Value::Array(items) if matches!(
                items.as_slice(),
                [Value::Bytes(_), Value::Map(_), Value::Bytes(_), Value::Bytes(_)]
            )
        ),
        "accepted document is not a COSE_Sign1: {value:?}"
    );
}

/// Every error is one line (it becomes `zoa-init: fatal: ...`).
fn check_error(e: &Tpm2Error) {
    let text = e.to_string();
    assert!(!text.is_empty() && !text.contains(['\n', '\r']), "{text:?}");
}

/// A byte stream whose reads return the payload's pieces: one byte of length each.
struct Stream<'a> {
    reads: &'a [u8],
    written: Vec<u8>,
}

impl Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some((&len, rest)) = self.reads.split_first() else {
            return Ok(0);
        };
        // Lengths count in 16-byte units so a few bytes reach a 4096-byte response.
        let n = (usize::from(len) * 16)
            .max(1)
            .min(rest.len())
            .min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.reads = &rest[n..];
        if n == 0 {
            self.reads = &[];
        }
        Ok(n)
    }
}

impl Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn check_stream(reads: &[u8]) {
    let command = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8];
    let mut stream = Stream {
        reads,
        written: Vec::new(),
    };
    if let Ok(response) = transport::exchange(&mut stream, &command) {
        assert!((HEADER_LEN..=MAX_MESSAGE).contains(&response.len()));
        let size = u32::from_be_bytes([response[2], response[3], response[4], response[5]]);
        assert_eq!(size as usize, response.len());
    }
    assert_eq!(stream.written, command);
}

/// A TPM that answers each command with the next response of a script.
struct Scripted<'a> {
    script: &'a [u8],
}

impl Transport for Scripted<'_> {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        check_command(command);
        let exhausted = || TransportError("script exhausted".to_string());
        if self.script.len() < 3 {
            return Err(exhausted());
        }
        let kind = self.script[0];
        let len = usize::from(u16::from_be_bytes([self.script[1], self.script[2]]));
        let rest = &self.script[3..];
        let body = &rest[..len.min(rest.len())];
        self.script = &rest[body.len()..];
        let mut response = match kind % 4 {
            0 => body.to_vec(),
            1 => wrap(command, 0, body),
            2 if body.len() >= 4 => {
                let rc = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                wrap(command, rc, &body[4..])
            }
            2 => wrap(command, 0x101, body),
            _ => return Err(TransportError("scripted transport error".to_string())),
        };
        if let Some(rc) = response.get_mut(6..10) {
            let code = u32::from_be_bytes([rc[0], rc[1], rc[2], rc[3]]);
            if code == RC_RETRY || code == RC_TESTING {
                rc.copy_from_slice(&(code + 1).to_be_bytes());
            }
        }
        Ok(response)
    }
}

/// Commands zoa-init builds are whole and fit the kernel's buffer, whatever the TPM said
/// before (chunk sizes, handles, offsets).
fn check_command(command: &[u8]) {
    assert!((HEADER_LEN..=MAX_MESSAGE).contains(&command.len()));
    let tag = u16::from_be_bytes([command[0], command[1]]);
    assert!(tag == ST_NO_SESSIONS || tag == ST_SESSIONS, "tag {tag:#x}");
    let size = u32::from_be_bytes([command[2], command[3], command[4], command[5]]);
    assert_eq!(size as usize, command.len());
}

/// A response to `command` with code `rc` around `body`. For a session command's success the
/// body is its handles then its parameters, and parameterSize is inserted between them.
fn wrap(command: &[u8], rc: u32, body: &[u8]) -> Vec<u8> {
    let sessions = command[0..2] == ST_SESSIONS.to_be_bytes();
    let code = u32::from_be_bytes([command[6], command[7], command[8], command[9]]);
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + body.len());
    out.extend_from_slice(
        &if sessions {
            ST_SESSIONS
        } else {
            ST_NO_SESSIONS
        }
        .to_be_bytes(),
    );
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&rc.to_be_bytes());
    if sessions && rc == 0 {
        let handles = if code == CC_CREATE_PRIMARY { 4 } else { 0 };
        let (handles, parameters) = body.split_at(handles.min(body.len()));
        out.extend_from_slice(handles);
        out.extend_from_slice(&(parameters.len() as u32).to_be_bytes());
        out.extend_from_slice(parameters);
    } else {
        out.extend_from_slice(body);
    }
    let size = out.len() as u32;
    out[2..6].copy_from_slice(&size.to_be_bytes());
    out
}

fn run_command(op: u8, arg: u32, script: &[u8]) {
    let mut tpm_side = Scripted { script };
    let auth = [0x5a; 32];
    // Each result must have the shape its caller relies on.
    let result: Result<(), Tpm2Error> = {
        let mut tpm = Tpm::new(&mut tpm_side);
        match op % 9 {
            0 => tpm.get_random(arg as u16).map(|bytes| {
                assert!(bytes.len() <= usize::from(arg as u16));
            }),
            1 => tpm.tpm_property(arg).map(drop),
            2 => tpm.handles(NV_INDEX_FIRST, NV_INDEX_LAST).map(|handles| {
                assert!(handles
                    .iter()
                    .all(|h| (NV_INDEX_FIRST..=NV_INDEX_LAST).contains(h)));
            }),
            3 => tpm.create_primary_ecc_p256(RH_NULL, b"").map(drop),
            4 => tpm.nv_read_public(arg).map(drop),
            5 => {
                let len = (arg % 9000) as usize;
                tpm.nv_read(NV_INDEX_FIRST, &auth, len).map(|bytes| {
                    assert_eq!(bytes.len(), len);
                })
            }
            6 => {
                let len = (arg % 9000) as usize;
                tpm.nv_write(NV_INDEX_FIRST, &auth, &vec![0xa5; len])
            }
            7 => tpm.aws_nsm_request(NV_INDEX_FIRST + arg % 256, &auth),
            // The whole attestation: property, handles, define, write, vendor command,
            // read, undefine, then the CBOR answer.
            _ => nsm::attestation_document(&mut tpm_side, &PUBLIC_KEY).map(|document| {
                check_cose_sign1(&document);
            }),
        }
    };
    if let Err(e) = result {
        check_error(&e);
    }
}
