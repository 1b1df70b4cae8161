//! The few TPM 2.0 wire facts the emulator needs on the TPM's side of the conversation
//! (TPM 2.0 Library Specification, Part 2 for codes and structures, Part 1 §18 for the
//! authorization area): reading a guest's command, and writing the responses the emulator
//! answers itself. zoa-init's `tpm2` module is the client side (building commands, reading
//! responses); this is the other half.

use zoa_init::tpm2::marshal::{Reader, HEADER_LEN, RS_PW, ST_NO_SESSIONS, ST_SESSIONS};

pub const CC_NV_UNDEFINE_SPACE_SPECIAL: u32 = 0x11F;
pub const CC_NV_UNDEFINE_SPACE: u32 = 0x122;
pub const CC_NV_DEFINE_SPACE: u32 = 0x12A;
pub const CC_NV_WRITE: u32 = 0x137;
pub const CC_NV_READ: u32 = 0x14E;
pub const CC_NV_READ_PUBLIC: u32 = 0x169;
pub const CC_GET_CAPABILITY: u32 = 0x17A;
pub const CC_PCR_READ: u32 = 0x17E;

pub const CAP_TPM_PROPERTIES: u32 = 6;
pub const PT_NV_INDEX_MAX: u32 = 0x117;

pub const ALG_SHA256: u16 = 0x000B;
pub const ALG_SHA384: u16 = 0x000C;
pub const ALG_SHA512: u16 = 0x000D;

/// TPMA_NV_WRITTEN: set once the index has been written.
pub const NV_WRITTEN: u32 = 1 << 29;
/// TPMA_NV_TPM_NT, bits 4–7: the index type (0: ordinary).
pub const NV_TYPE_MASK: u32 = 0xF0;

/// Response codes the emulator answers with (Part 2, Table 16). Format-one codes that
/// concern a session or parameter carry its number (`TPM_RC_S`/`TPM_RC_P` + `TPM_RC_1`).
pub mod rc {
    pub const FAILURE: u32 = 0x101;
    pub const COMMAND_SIZE: u32 = 0x142;
    pub const AUTH_UNAVAILABLE: u32 = 0x12F;
    pub const NV_RANGE: u32 = 0x146;
    pub const NV_AUTHORIZATION: u32 = 0x149;
    pub const NV_UNINITIALIZED: u32 = 0x14A;
    /// TPM_RC_AUTH_FAIL (0x08E) for session 1.
    pub const AUTH_FAIL_SESSION_1: u32 = 0x08E + 0x800 + 0x100;
    /// TPM_RC_SIZE (0x095) for parameter 1.
    pub const SIZE_PARAMETER_1: u32 = 0x095 + 0x040 + 0x100;
}

/// A guest's command, split: its code, handles, password session (if that is what it
/// carries) and parameters.
pub struct GuestCommand<'a> {
    pub code: u32,
    pub handles: Vec<u32>,
    /// The raw authorization area (size field excluded), to forward unchanged.
    pub auth_area: &'a [u8],
    pub session: Option<PasswordSession<'a>>,
    pub params: &'a [u8],
}

/// The one session of a command authorized by password (`TPM_RS_PW`).
#[derive(Debug, Clone, Copy)]
pub struct PasswordSession<'a> {
    pub attributes: u8,
    pub password: &'a [u8],
}

impl<'a> GuestCommand<'a> {
    /// Splits `bytes` given how many handles the command carries; `None` when it is not
    /// well formed (the emulator then lets swtpm answer it).
    pub fn parse(bytes: &'a [u8], handle_count: usize) -> Option<GuestCommand<'a>> {
        let mut r = Reader::over("command", bytes);
        let tag = r.u16().ok()?;
        let size = r.u32().ok()?;
        let code = r.u32().ok()?;
        if usize::try_from(size).ok()? != bytes.len() {
            return None;
        }
        let handles = (0..handle_count)
            .map(|_| r.u32().ok())
            .collect::<Option<Vec<u32>>>()?;
        let (auth_area, session) = match tag {
            ST_NO_SESSIONS => (&[][..], None),
            ST_SESSIONS => {
                let len = usize::try_from(r.u32().ok()?).ok()?;
                let area = r.take(len).ok()?;
                (area, password_session(area))
            }
            _ => return None,
        };
        let consumed = HEADER_LEN
            + 4 * handle_count
            + if tag == ST_SESSIONS {
                4 + auth_area.len()
            } else {
                0
            };
        Some(GuestCommand {
            code,
            handles,
            auth_area,
            session,
            params: bytes.get(consumed..)?,
        })
    }
}

/// The session of an authorization area holding exactly one password session.
fn password_session(area: &[u8]) -> Option<PasswordSession<'_>> {
    let mut r = Reader::over("authorization area", area);
    if r.u32().ok()? != RS_PW {
        return None;
    }
    let _nonce = r.tpm2b().ok()?;
    let attributes = r.u8().ok()?;
    let password = r.tpm2b().ok()?;
    r.finish().ok()?;
    Some(PasswordSession {
        attributes,
        password,
    })
}

/// Whether a password matches an authValue the way the reference TPM compares them:
/// trailing zero bytes of both are dropped first (Part 1, §19.6.4; `CheckPWAuthSession`).
pub fn password_matches(password: &[u8], auth_value: &[u8]) -> bool {
    fn trimmed(b: &[u8]) -> &[u8] {
        let end = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
        &b[..end]
    }
    // Both are at most 64 bytes and the comparison's timing tells nothing the guest (the
    // only caller) does not know.
    trimmed(password) == trimmed(auth_value)
}

/// A response with only a response code.
pub fn error(code: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&ST_NO_SESSIONS.to_be_bytes());
    out.extend_from_slice(&(HEADER_LEN as u32).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out
}

/// A successful response to a command with one password session: `params`, then the
/// session's answer (empty nonce, the continueSession bit echoed, empty HMAC).
pub fn success_with_session(params: &[u8], session: PasswordSession<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(params.len() + 9);
    body.extend_from_slice(&(params.len() as u32).to_be_bytes());
    body.extend_from_slice(params);
    body.extend_from_slice(&0u16.to_be_bytes());
    body.push(session.attributes & 1);
    body.extend_from_slice(&0u16.to_be_bytes());
    with_header(ST_SESSIONS, &body)
}

/// A successful response without sessions.
pub fn success(params: &[u8]) -> Vec<u8> {
    with_header(ST_NO_SESSIONS, params)
}

fn with_header(tag: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The response code of a response (0 when too short to say, which callers treat as
/// "forward as it is").
pub fn response_code(response: &[u8]) -> u32 {
    response
        .get(6..10)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A TPM2B: u16 length, then the bytes.
pub fn put_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoa_init::tpm2::marshal::Command;

    #[test]
    fn a_password_session_command_splits_into_its_parts() {
        let mut c = Command::new("TPM2_NV_Write", ST_SESSIONS, CC_NV_WRITE);
        c.u32(0x0100_0000).u32(0x0100_0000);
        c.password_session(b"secret").unwrap();
        c.tpm2b(b"data").unwrap().u16(7);
        let bytes = c.finish().unwrap();
        let g = GuestCommand::parse(&bytes, 2).unwrap();
        assert_eq!(g.code, CC_NV_WRITE);
        assert_eq!(g.handles, [0x0100_0000, 0x0100_0000]);
        let s = g.session.unwrap();
        assert_eq!(s.password, b"secret");
        assert_eq!(s.attributes, 1);
        assert_eq!(g.params, [0, 4, b'd', b'a', b't', b'a', 0, 7]);
        // A size field that lies, or too few handles' bytes: not a command.
        let mut lying = bytes.clone();
        lying[5] ^= 1;
        assert!(GuestCommand::parse(&lying, 2).is_none());
        assert!(GuestCommand::parse(&bytes[..12], 2).is_none());
    }

    #[test]
    fn passwords_compare_without_trailing_zeros() {
        assert!(password_matches(b"ab\0\0", b"ab"));
        assert!(password_matches(b"", b"\0"));
        assert!(!password_matches(b"ab", b"abc"));
        assert!(!password_matches(b"\0ab", b"ab"));
    }

    #[test]
    fn responses_have_the_right_sizes() {
        assert_eq!(error(rc::NV_RANGE), [0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0x46]);
        let s = PasswordSession {
            attributes: 1,
            password: b"",
        };
        let r = success_with_session(&[0, 2, 9, 9], s);
        assert_eq!(r.len(), 10 + 4 + 4 + 5);
        assert_eq!(&r[2..6], &(r.len() as u32).to_be_bytes());
        assert_eq!(&r[10..14], &4u32.to_be_bytes());
        assert_eq!(&r[18..], [0, 0, 1, 0, 0]);
    }
}
