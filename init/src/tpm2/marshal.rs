//! TPM 2.0 command and response framing: big-endian integers, TPM2B (u16 length + bytes)
//! buffers, the password authorization area, and response headers (TPM 2.0 Library Part 1,
//! 18 "Command/Response Structure"; Part 2 for the types).
//!
//! Hand-written: the few structures zoa-init sends fit in a page, and the Rust TSS crates
//! (tss-esapi) link the C tpm2-tss libraries, which a static musl PID 1 cannot carry.

use super::rc::ResponseCode;
use super::Tpm2Error;

/// `TPM_ST_NO_SESSIONS`: a command or response without an authorization area.
pub const ST_NO_SESSIONS: u16 = 0x8001;
/// `TPM_ST_SESSIONS`: a command or response with an authorization area.
pub const ST_SESSIONS: u16 = 0x8002;
/// `TPM_RS_PW`: the password authorization "session" (no session state; the authValue is
/// sent as the HMAC field).
pub const RS_PW: u32 = 0x4000_0009;
/// `TPMA_SESSION.continueSession`, the only attribute a password session sets.
const SESSION_CONTINUE: u8 = 0x01;

/// Size of a command or response header: tag (u16), size (u32), code (u32).
pub const HEADER_LEN: usize = 10;

/// A command being built (its size field is filled in by [`Command::finish`]), or a structure
/// marshalled on its own to go into a TPM2B.
pub struct Command {
    name: &'static str,
    buf: Vec<u8>,
    has_header: bool,
}

impl Command {
    /// A command with the given tag and code; `name` labels errors
    /// (e.g. `TPM2_NV_Write`).
    pub fn new(name: &'static str, tag: u16, code: u32) -> Command {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&tag.to_be_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&code.to_be_bytes());
        Command {
            name,
            buf,
            has_header: true,
        }
    }

    /// A structure without command header (e.g. TPMT_PUBLIC), to be sent inside a TPM2B.
    pub fn structure(name: &'static str) -> Command {
        Command {
            name,
            buf: Vec::new(),
            has_header: false,
        }
    }

    pub fn u8(&mut self, v: u8) -> &mut Command {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Command {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Command {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Raw bytes (an already marshalled structure).
    pub fn bytes(&mut self, v: &[u8]) -> &mut Command {
        self.buf.extend_from_slice(v);
        self
    }

    /// A TPM2B: u16 length, then the bytes.
    pub fn tpm2b(&mut self, v: &[u8]) -> Result<&mut Command, Tpm2Error> {
        let len = u16::try_from(v.len()).map_err(|_| Tpm2Error::TooLarge {
            what: "TPM2B buffer",
            len: v.len(),
            max: usize::from(u16::MAX),
        })?;
        self.u16(len);
        Ok(self.bytes(v))
    }

    /// The authorization area with one password session whose HMAC field is `auth`
    /// (TPMS_AUTH_COMMAND: handle TPM_RS_PW, empty nonce, continueSession, the password).
    pub fn password_session(&mut self, auth: &[u8]) -> Result<&mut Command, Tpm2Error> {
        let auth_len = u16::try_from(auth.len()).map_err(|_| Tpm2Error::TooLarge {
            what: "authorization value",
            len: auth.len(),
            max: 64,
        })?;
        // handle (4) + nonce size (2) + attributes (1) + hmac size (2) + hmac.
        self.u32(9 + u32::from(auth_len));
        self.u32(RS_PW).u16(0).u8(SESSION_CONTINUE);
        self.tpm2b(auth)
    }

    /// The finished command bytes with the size field set, or the structure's bytes.
    pub fn finish(&self) -> Result<Vec<u8>, Tpm2Error> {
        let mut out = self.buf.clone();
        if !self.has_header {
            return Ok(out);
        }
        let size = u32::try_from(out.len()).map_err(|_| Tpm2Error::TooLarge {
            what: "command",
            len: out.len(),
            max: super::MAX_MESSAGE,
        })?;
        out[2..6].copy_from_slice(&size.to_be_bytes());
        Ok(out)
    }

    /// The name given to [`Command::new`].
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A successful response: the handles it returned and a reader over its parameters.
pub struct Reply<'a> {
    pub handles: Vec<u32>,
    pub params: Reader<'a>,
}

/// Checks a response's header and splits it into handles and parameters.
///
/// `handles` is how many handles the response carries before its parameters (TPM2_CreatePrimary
/// returns one). For `TPM_ST_SESSIONS` responses the parameters are those `parameterSize`
/// covers; the session area after them (for a password session: empty nonce, attributes,
/// empty HMAC) is not needed.
pub fn parse_response<'a>(
    command: &'static str,
    response: &'a [u8],
    handles: usize,
) -> Result<Reply<'a>, Tpm2Error> {
    check_response_code(command, response)?;
    let tag = u16::from_be_bytes([response[0], response[1]]);
    let mut body = Reader::over(command, &response[HEADER_LEN..]);
    let handles = (0..handles)
        .map(|_| body.u32())
        .collect::<Result<Vec<u32>, Tpm2Error>>()?;
    let params = match tag {
        ST_NO_SESSIONS => body,
        ST_SESSIONS => {
            let parameter_size = body.u32()?;
            let parameters = body.take(usize::try_from(parameter_size).unwrap_or(usize::MAX))?;
            Reader::over(command, parameters)
        }
        other => return Err(malformed(command, format!("unknown tag 0x{other:04x}"))),
    };
    Ok(Reply { handles, params })
}

/// Checks only the header of a response: its size and a zero response code.
pub fn check_response_code(command: &'static str, response: &[u8]) -> Result<(), Tpm2Error> {
    let mut header = Reader::over(command, response);
    let (_tag, size, code) = (header.u16()?, header.u32()?, header.u32()?);
    if usize::try_from(size).ok() != Some(response.len()) {
        return Err(malformed(
            command,
            format!("header says {size} bytes, {} were received", response.len()),
        ));
    }
    if code != 0 {
        return Err(Tpm2Error::Tpm {
            command,
            rc: ResponseCode(code),
        });
    }
    Ok(())
}

fn malformed(command: &'static str, detail: String) -> Tpm2Error {
    Tpm2Error::Malformed { command, detail }
}

/// Reads big-endian values from a response, failing with the command's name when the response
/// is too short.
pub struct Reader<'a> {
    command: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`, naming `command` in its errors.
    pub fn over(command: &'static str, bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            command,
            rest: bytes,
        }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Tpm2Error> {
        if n > self.rest.len() {
            return Err(malformed(
                self.command,
                format!(
                    "response ends early: {n} bytes needed, {} left",
                    self.rest.len()
                ),
            ));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, Tpm2Error> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Tpm2Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, Tpm2Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A TPM2B: u16 length, then that many bytes.
    pub fn tpm2b(&mut self) -> Result<&'a [u8], Tpm2Error> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// Fails when bytes are left over: a response longer than its structure is not one we
    /// understand.
    pub fn finish(self) -> Result<(), Tpm2Error> {
        let left = self.rest.len();
        if left != 0 {
            return Err(malformed(
                self.command,
                format!("{left} unexpected bytes at the end of the response"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_size_is_filled_in() {
        // TPM2_GetRandom(8): the example of TPM 2.0 Part 3, 16.1.
        let mut c = Command::new("TPM2_GetRandom", ST_NO_SESSIONS, 0x17B);
        c.u16(8);
        assert_eq!(
            c.finish().unwrap(),
            [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8]
        );
    }

    #[test]
    fn password_session_layout() {
        let mut c = Command::new("TPM2_NV_Write", ST_SESSIONS, 0x137);
        c.u32(0x0100_0000).password_session(b"pw").unwrap();
        let bytes = c.finish().unwrap();
        assert_eq!(
            &bytes[14..],
            [
                0, 0, 0, 11, // authorizationSize
                0x40, 0, 0, 9, // TPM_RS_PW
                0, 0, // empty nonce
                1, // continueSession
                0, 2, b'p', b'w', // password
            ]
        );
    }

    #[test]
    fn error_responses_become_tpm_errors() {
        let response = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x4C];
        let err = parse_response("TPM2_NV_DefineSpace", &response, 0)
            .err()
            .unwrap();
        assert_eq!(
            err,
            Tpm2Error::Tpm {
                command: "TPM2_NV_DefineSpace",
                rc: ResponseCode(0x14C)
            }
        );
    }

    #[test]
    fn sessions_responses_expose_handles_then_parameters() {
        let response = [
            0x80, 0x02, 0, 0, 0, 26, 0, 0, 0, 0, // header
            0x80, 0, 0, 0, // handle
            0, 0, 0, 3, // parameterSize
            0, 1, 0xAA, // TPM2B parameter
            0, 0, 1, 0, 0, // password session response
        ];
        let mut reply = parse_response("TPM2_CreatePrimary", &response, 1).unwrap();
        assert_eq!(reply.handles, [0x8000_0000]);
        assert_eq!(reply.params.tpm2b().unwrap(), [0xAA]);
        reply.params.finish().unwrap();
    }

    #[test]
    fn short_and_inconsistent_responses_are_malformed() {
        let err = parse_response("TPM2_GetRandom", &[0x80, 0x01, 0, 0], 0)
            .err()
            .unwrap();
        assert!(matches!(err, Tpm2Error::Malformed { .. }), "{err}");
        let err = parse_response("TPM2_GetRandom", &[0x80, 0x01, 0, 0, 0, 11, 0, 0, 0, 0], 0)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "TPM2_GetRandom: malformed response: header says 11 bytes, 10 were received"
        );
        let response = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0, 5];
        let mut reply = parse_response("TPM2_GetRandom", &response, 0).unwrap();
        let err = reply.params.tpm2b().err().unwrap();
        assert_eq!(
            err.to_string(),
            "TPM2_GetRandom: malformed response: response ends early: 5 bytes needed, 0 left"
        );
    }
}
