//! TPM 2.0 response codes (TPM_RC), decoded for a console line.
//!
//! Layout (TPM 2.0 Library Part 2, 6.6 "TPM_RC"):
//! - bit 7 clear, bit 8 (`TPM_RC_VER1`) set: format 0, a TPM 2.0 code; bit 11 (`TPM_RC_WARN`)
//!   marks a warning, bit 10 a vendor-defined code; the number is bits 0–6.
//! - bit 7 (`TPM_RC_FMT1`) set: format 1, error number in bits 0–5; bit 6 set means the error
//!   is about parameter N (bits 8–11); otherwise bit 11 set means session N, clear handle N
//!   (N in bits 8–10).
//! - bits 16–23 name the software layer that made the code, 0 for the TPM itself; Linux's
//!   resource manager (`/dev/tpmrm0`) uses 11 (`TSS2_RESMGR_TPM_RC_LAYER`) when it refuses a
//!   command itself (drivers/char/tpm/tpm-dev-common.c).

use std::fmt;

/// A nonzero response code from the TPM (or from a layer in front of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCode(pub u32);

/// Format-0 codes (`TPM_RC_VER1` + n) and warnings (`TPM_RC_WARN` + n) with their meanings.
const FORMAT0: &[(u32, &str, &str)] = &[
    (
        0x100,
        "TPM_RC_INITIALIZE",
        "TPM not initialized by TPM2_Startup or already initialized",
    ),
    (0x101, "TPM_RC_FAILURE", "the TPM is in failure mode"),
    (
        0x103,
        "TPM_RC_SEQUENCE",
        "improper use of a sequence handle",
    ),
    (0x10B, "TPM_RC_PRIVATE", "not currently used"),
    (0x119, "TPM_RC_HMAC", "not currently used"),
    (0x120, "TPM_RC_DISABLED", "the command is disabled"),
    (
        0x121,
        "TPM_RC_EXCLUSIVE",
        "the command failed because audit sequence required exclusivity",
    ),
    (
        0x124,
        "TPM_RC_AUTH_TYPE",
        "authorization handle is not correct for the command",
    ),
    (
        0x125,
        "TPM_RC_AUTH_MISSING",
        "the command requires an authorization session",
    ),
    (
        0x126,
        "TPM_RC_POLICY",
        "policy failure in math operation or an invalid authPolicy value",
    ),
    (0x127, "TPM_RC_PCR", "PCR check fail"),
    (
        0x128,
        "TPM_RC_PCR_CHANGED",
        "PCR have changed since checked",
    ),
    (0x12D, "TPM_RC_UPGRADE", "the TPM is in field upgrade mode"),
    (
        0x12E,
        "TPM_RC_TOO_MANY_CONTEXTS",
        "context ID counter is at maximum",
    ),
    (
        0x12F,
        "TPM_RC_AUTH_UNAVAILABLE",
        "authValue or authPolicy is not available",
    ),
    (
        0x130,
        "TPM_RC_REBOOT",
        "a _TPM_Init and Startup(CLEAR) is required",
    ),
    (
        0x131,
        "TPM_RC_UNBALANCED",
        "the protection algorithms are not reasonably balanced",
    ),
    (
        0x142,
        "TPM_RC_COMMAND_SIZE",
        "command size inconsistent with the contents",
    ),
    (0x143, "TPM_RC_COMMAND_CODE", "command code not supported"),
    (
        0x144,
        "TPM_RC_AUTHSIZE",
        "authorization size out of range or wrong session count",
    ),
    (
        0x145,
        "TPM_RC_AUTH_CONTEXT",
        "use of an authorization session with a context command",
    ),
    (0x146, "TPM_RC_NV_RANGE", "NV offset + size is out of range"),
    (
        0x147,
        "TPM_RC_NV_SIZE",
        "requested allocation size is larger than allowed",
    ),
    (0x148, "TPM_RC_NV_LOCKED", "NV access locked"),
    (
        0x149,
        "TPM_RC_NV_AUTHORIZATION",
        "NV access authorization fails in command actions",
    ),
    (
        0x14A,
        "TPM_RC_NV_UNINITIALIZED",
        "NV index has not been written",
    ),
    (
        0x14B,
        "TPM_RC_NV_SPACE",
        "insufficient space for NV allocation",
    ),
    (
        0x14C,
        "TPM_RC_NV_DEFINED",
        "NV index or persistent object already defined",
    ),
    (
        0x150,
        "TPM_RC_BAD_CONTEXT",
        "context in TPM2_ContextLoad is not valid",
    ),
    (
        0x151,
        "TPM_RC_CPHASH",
        "cpHash value already set or not correct for use",
    ),
    (
        0x152,
        "TPM_RC_PARENT",
        "handle for parent is not a valid parent",
    ),
    (0x153, "TPM_RC_NEEDS_TEST", "some function needs testing"),
    (
        0x154,
        "TPM_RC_NO_RESULT",
        "internal function cannot process a request",
    ),
    (
        0x155,
        "TPM_RC_SENSITIVE",
        "the sensitive area did not unmarshal correctly",
    ),
    (
        0x901,
        "TPM_RC_CONTEXT_GAP",
        "gap for context ID is too large",
    ),
    (
        0x902,
        "TPM_RC_OBJECT_MEMORY",
        "out of memory for object contexts",
    ),
    (
        0x903,
        "TPM_RC_SESSION_MEMORY",
        "out of memory for session contexts",
    ),
    (
        0x904,
        "TPM_RC_MEMORY",
        "out of shared object/session memory",
    ),
    (0x905, "TPM_RC_SESSION_HANDLES", "out of session handles"),
    (0x906, "TPM_RC_OBJECT_HANDLES", "out of object handles"),
    (0x907, "TPM_RC_LOCALITY", "bad locality"),
    (
        0x908,
        "TPM_RC_YIELDED",
        "the TPM has suspended operation on the command",
    ),
    (0x909, "TPM_RC_CANCELED", "the command was canceled"),
    (0x90A, "TPM_RC_TESTING", "the TPM is performing self-tests"),
    (
        0x920,
        "TPM_RC_NV_RATE",
        "the TPM is rate-limiting NV writes",
    ),
    (
        0x921,
        "TPM_RC_LOCKOUT",
        "authorizations are locked out (dictionary attack protection)",
    ),
    (
        0x922,
        "TPM_RC_RETRY",
        "the TPM was not able to start the command",
    ),
    (
        0x923,
        "TPM_RC_NV_UNAVAILABLE",
        "the NV memory is not available",
    ),
];

/// Format-1 codes (`TPM_RC_FMT1` + n) with their meanings.
const FORMAT1: &[(u32, &str, &str)] = &[
    (
        0x081,
        "TPM_RC_ASYMMETRIC",
        "asymmetric algorithm not supported or not correct",
    ),
    (0x082, "TPM_RC_ATTRIBUTES", "inconsistent attributes"),
    (
        0x083,
        "TPM_RC_HASH",
        "hash algorithm not supported or not appropriate",
    ),
    (
        0x084,
        "TPM_RC_VALUE",
        "value is out of range or is not correct for the context",
    ),
    (
        0x085,
        "TPM_RC_HIERARCHY",
        "hierarchy is not enabled or is not correct for the use",
    ),
    (0x087, "TPM_RC_KEY_SIZE", "key size is not supported"),
    (
        0x088,
        "TPM_RC_MGF",
        "mask generation function not supported",
    ),
    (0x089, "TPM_RC_MODE", "mode of operation not supported"),
    (
        0x08A,
        "TPM_RC_TYPE",
        "the type of the value is not appropriate for the use",
    ),
    (
        0x08B,
        "TPM_RC_HANDLE",
        "the handle is not correct for the use",
    ),
    (0x08C, "TPM_RC_KDF", "unsupported key derivation function"),
    (0x08D, "TPM_RC_RANGE", "value was out of allowed range"),
    (
        0x08E,
        "TPM_RC_AUTH_FAIL",
        "the authorization HMAC check failed",
    ),
    (
        0x08F,
        "TPM_RC_NONCE",
        "invalid nonce size or nonce value mismatch",
    ),
    (0x090, "TPM_RC_PP", "authorization requires assertion of PP"),
    (0x092, "TPM_RC_SCHEME", "unsupported or incompatible scheme"),
    (0x095, "TPM_RC_SIZE", "structure is the wrong size"),
    (
        0x096,
        "TPM_RC_SYMMETRIC",
        "unsupported symmetric algorithm or key size",
    ),
    (0x097, "TPM_RC_TAG", "incorrect structure tag"),
    (0x098, "TPM_RC_SELECTOR", "union selector is incorrect"),
    (
        0x09A,
        "TPM_RC_INSUFFICIENT",
        "the TPM was unable to unmarshal a value (input too short)",
    ),
    (0x09B, "TPM_RC_SIGNATURE", "the signature is not valid"),
    (
        0x09C,
        "TPM_RC_KEY",
        "key fields are not compatible with the selected use",
    ),
    (0x09D, "TPM_RC_POLICY_FAIL", "a policy check failed"),
    (0x09F, "TPM_RC_INTEGRITY", "integrity check failed"),
    (0x0A0, "TPM_RC_TICKET", "invalid ticket"),
    (
        0x0A1,
        "TPM_RC_RESERVED_BITS",
        "reserved bits not set to zero as required",
    ),
    (
        0x0A2,
        "TPM_RC_BAD_AUTH",
        "authorization failure without DA implications",
    ),
    (0x0A3, "TPM_RC_EXPIRED", "the policy has expired"),
    (
        0x0A4,
        "TPM_RC_POLICY_CC",
        "the commandCode in the policy is not the commandCode of the command",
    ),
    (
        0x0A5,
        "TPM_RC_BINDING",
        "public and sensitive portions of an object are not cryptographically bound",
    ),
    (0x0A6, "TPM_RC_CURVE", "curve not supported"),
    (
        0x0A7,
        "TPM_RC_ECC_POINT",
        "point is not on the required curve",
    ),
];

const RC_FMT1: u32 = 0x080;
const RC_VER1: u32 = 0x100;
const RC_VENDOR: u32 = 0x400;
const RC_WARN_BIT: u32 = 0x800;
const RC_P: u32 = 0x040;

/// Layer of Linux's TPM resource manager (`/dev/tpmrm0`), as in tpm2-tss.
pub const RESOURCE_MANAGER_LAYER: u8 = 11;

/// What a format-1 code is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The code applies to no particular handle, parameter or session.
    Command,
    /// Parameter N of the command (1-based).
    Parameter(u8),
    /// Handle N of the command (1-based).
    Handle(u8),
    /// Session N of the command (1-based).
    Session(u8),
}

impl ResponseCode {
    /// TPM_RC_INITIALIZE: TPM2_Startup was already run (or not yet run).
    pub const INITIALIZE: u32 = 0x100;
    /// TPM_RC_COMMAND_CODE: the TPM does not implement the command.
    pub const COMMAND_CODE: u32 = 0x143;
    /// TPM_RC_NV_DEFINED: the NV index is already defined.
    pub const NV_DEFINED: u32 = 0x14C;
    /// TPM_RC_RETRY: the TPM could not start the command; send it again.
    pub const RETRY: u32 = 0x922;
    /// TPM_RC_TESTING: the TPM is running self-tests; send the command again.
    pub const TESTING: u32 = 0x90A;
    /// TPM_RC_HANDLE: the handle is not correct for the use (format 1).
    pub const HANDLE: u32 = 0x08B;

    /// The software layer that produced the code (0: the TPM).
    pub fn layer(self) -> u8 {
        (self.0 >> 16) as u8
    }

    /// The code without layer, handle, parameter or session number: the value to compare
    /// with the named constants (`TPM_RC_NV_DEFINED`, `TPM_RC_HANDLE`, ...).
    pub fn base(self) -> u32 {
        let rc = self.0 & 0xFFFF;
        if rc & RC_FMT1 != 0 {
            RC_FMT1 | (rc & 0x3F)
        } else {
            rc
        }
    }

    /// For format-1 codes, the parameter, handle or session the error is about.
    pub fn subject(self) -> Subject {
        let rc = self.0 & 0xFFFF;
        if rc & RC_FMT1 == 0 {
            return Subject::Command;
        }
        if rc & RC_P != 0 {
            return Subject::Parameter(((rc >> 8) & 0xF) as u8);
        }
        let n = ((rc >> 8) & 0x7) as u8;
        match (n, rc & RC_WARN_BIT != 0) {
            (0, _) => Subject::Command,
            (n, true) => Subject::Session(n),
            (n, false) => Subject::Handle(n),
        }
    }

    /// The name and meaning of the code, when it is one we know.
    fn known(self) -> Option<(&'static str, &'static str)> {
        let base = self.base();
        let rc = self.0 & 0xFFFF;
        let table = if rc & RC_FMT1 != 0 {
            FORMAT1
        } else if rc & RC_VER1 != 0 && rc & RC_VENDOR == 0 {
            FORMAT0
        } else {
            return None;
        };
        table
            .iter()
            .find(|(code, _, _)| *code == base)
            .map(|(_, name, meaning)| (*name, *meaning))
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rc = self.0 & 0xFFFF;
        match self.known() {
            Some((name, meaning)) => write!(f, "{name} (0x{:x}: {meaning}", self.0)?,
            None if rc & RC_FMT1 == 0 && rc & RC_VER1 == 0 => {
                write!(f, "TPM 1.2 response code (0x{:x}", self.0)?
            }
            None if rc & RC_FMT1 == 0 && rc & RC_VENDOR != 0 => {
                write!(f, "vendor-defined response code (0x{:x}", self.0)?
            }
            None => write!(f, "unknown response code (0x{:x}", self.0)?,
        }
        match self.subject() {
            Subject::Command => {}
            Subject::Parameter(n) => write!(f, ", parameter {n}")?,
            Subject::Handle(n) => write!(f, ", handle {n}")?,
            Subject::Session(n) => write!(f, ", session {n}")?,
        }
        match self.layer() {
            0 => {}
            RESOURCE_MANAGER_LAYER => write!(
                f,
                ", refused by the kernel's resource manager /dev/tpmrm0, not the TPM"
            )?,
            layer => write!(f, ", from software layer {layer}, not the TPM")?,
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format0_codes_name_themselves() {
        let rc = ResponseCode(0x143);
        assert_eq!(rc.base(), ResponseCode::COMMAND_CODE);
        assert_eq!(rc.subject(), Subject::Command);
        assert_eq!(
            rc.to_string(),
            "TPM_RC_COMMAND_CODE (0x143: command code not supported)"
        );
        assert_eq!(
            ResponseCode(0x14C).to_string(),
            "TPM_RC_NV_DEFINED (0x14c: NV index or persistent object already defined)"
        );
        assert_eq!(
            ResponseCode(0x922).to_string(),
            "TPM_RC_RETRY (0x922: the TPM was not able to start the command)"
        );
    }

    #[test]
    fn format1_codes_name_parameter_handle_or_session() {
        // TPM_RC_SIZE for parameter 1: 0x095 | P | 1 << 8.
        let rc = ResponseCode(0x1D5);
        assert_eq!(rc.base(), 0x095);
        assert_eq!(rc.subject(), Subject::Parameter(1));
        assert_eq!(
            rc.to_string(),
            "TPM_RC_SIZE (0x1d5: structure is the wrong size, parameter 1)"
        );
        // TPM_RC_HANDLE for handle 1: 0x08B | 1 << 8.
        let rc = ResponseCode(0x18B);
        assert_eq!(rc.base(), ResponseCode::HANDLE);
        assert_eq!(rc.subject(), Subject::Handle(1));
        // TPM_RC_AUTH_FAIL for session 1: 0x08E | N (0x800) | 1 << 8.
        let rc = ResponseCode(0x98E);
        assert_eq!(rc.subject(), Subject::Session(1));
        assert_eq!(
            rc.to_string(),
            "TPM_RC_AUTH_FAIL (0x98e: the authorization HMAC check failed, session 1)"
        );
    }

    #[test]
    fn codes_from_other_layers_say_where_they_come_from() {
        // What Linux's /dev/tpmrm0 answers for a command code the TPM does not list.
        let rc = ResponseCode(0x000B_0143);
        assert_eq!(rc.layer(), RESOURCE_MANAGER_LAYER);
        assert_eq!(rc.base(), ResponseCode::COMMAND_CODE);
        assert_eq!(
            rc.to_string(),
            "TPM_RC_COMMAND_CODE (0xb0143: command code not supported, \
             refused by the kernel's resource manager /dev/tpmrm0, not the TPM)"
        );
        assert_eq!(
            ResponseCode(0x0005_0101).to_string(),
            "TPM_RC_FAILURE (0x50101: the TPM is in failure mode, from software layer 5, not the TPM)"
        );
    }

    #[test]
    fn unknown_codes_still_show_their_value() {
        assert_eq!(
            ResponseCode(0x17F).to_string(),
            "unknown response code (0x17f)"
        );
        assert_eq!(
            ResponseCode(0x401).to_string(),
            "TPM 1.2 response code (0x401)"
        );
        assert_eq!(
            ResponseCode(0x501).to_string(),
            "vendor-defined response code (0x501)"
        );
    }
}
