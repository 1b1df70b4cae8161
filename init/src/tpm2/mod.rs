//! TPM 2.0 commands over a character device, for NitroTPM attestation.
//!
//! zoa-init asks the Nitro Security Module (NSM) for an attestation document through the
//! NitroTPM: it writes the CBOR NSM request into an NV index, runs the AWS vendor command that
//! hands that index to the NSM, reads the CBOR response back from the same index, and
//! undefines the index. [`nsm::attestation_document`] does all of that; this module holds the
//! TPM 2.0 commands it needs (and a few the tests need), [`transport`] moves the bytes and
//! [`rc`] decodes response codes.
//!
//! # Facts used, and where they come from
//!
//! - Command framing, handles, password sessions, NV and capability commands: TPM 2.0
//!   Library Specification Parts 1–3 (command codes: `TPM2_CC_NV_UndefineSpace` 0x122,
//!   `NV_DefineSpace` 0x12A, `CreatePrimary` 0x131, `NV_Write` 0x137, `Startup` 0x144,
//!   `NV_Read` 0x14E, `FlushContext` 0x165, `NV_ReadPublic` 0x169, `GetCapability` 0x17A,
//!   `GetRandom` 0x17B; `TPM_RS_PW` 0x40000009, `TPM_RH_OWNER` 0x40000001, `TPM_RH_NULL`
//!   0x40000007; `TPM_PT_NV_BUFFER_MAX` = `TPM_PT_FIXED` + 44 = 0x12C, as in tpm2-tss's
//!   tss2_tpm2_types.h).
//! - The vendor command, from AWS's `nitro-tpm-attest` (aws/NitroTPM-Tools,
//!   nitro-tpm-attest/src/raw/tpm/mod.rs and raw/nsm_request.rs):
//!   `TPM2_VENDOR_AWS_NSM_REQUEST` = 0x20000001 (bit 29, the TPMA_CC vendor bit, plus 1), tag
//!   `TPM_ST_SESSIONS`, two handles — the NV index as the authorization handle, then the NV
//!   index again — one authorization session for the index, and no parameters (its cpHash is
//!   SHA-512 over the command code and the index's name twice). Success is a response code of
//!   0; the NSM's answer is written into the same NV index.
//! - The NV index, from the same tool (src/tss/message_buffer/mod.rs): defined in the owner
//!   hierarchy (empty owner auth) at the first free handle from `TPM2_NV_INDEX_FIRST`
//!   (0x01000000), retrying past a handle someone else defines first (`TPM_RC_NV_DEFINED`),
//!   type ordinary, attributes `TPMA_NV_AUTHREAD | TPMA_NV_AUTHWRITE` only, nameAlg SHA-512,
//!   a random 64-byte authValue, data size 8192 ("the plain attestation document will be
//!   almost 5 KiB and the optional parameters are each limited to 1 KiB"; we take less only
//!   if the TPM's `TPM_PT_NV_INDEX_MAX` is smaller, as swtpm's 2048 is). The CBOR request
//!   is written from offset 0 in chunks of at most `TPM_PT_NV_BUFFER_MAX`; after the vendor
//!   command the CBOR response is read from offset 0 (one CBOR item; the rest of the index is
//!   left-over bytes); the index is undefined afterwards, also on error.
//! - Sessions: `nitro-tpm-attest` authorizes the NV commands and the vendor command with a
//!   salted HMAC session (SHA-512, salt encrypted to the EK). zoa-init uses password sessions
//!   (`TPM_RS_PW`) instead: they need no EK, no RSA-OAEP and no KDF, and lockboot/vaportpm
//!   (crates/vaportpm-attest/src/nsm.rs) gets NitroTPM attestation documents with exactly
//!   that (empty password, nameAlg SHA-256, the same attributes and size). A salted session
//!   only protects the authValue from someone between us and the TPM; for zoa-init that is the
//!   hypervisor, which produces the attestation anyway.
//! - The device: `nitro-tpm-attest` defaults to `/dev/tpm0` (`TPM_DEVICE`), and vaportpm
//!   opens `/dev/tpm0` for the NSM request ("required for vendor commands"): Linux's resource
//!   manager (`/dev/tpmrm0`) only passes command codes the TPM lists in `TPM_CAP_COMMANDS`,
//!   and until "tpm: add vendor flag to command code validation" (Feb 2023, Linux 6.3) it
//!   dropped the vendor bit when comparing, so it refuses 0x20000001 itself, answering
//!   `TPM_RC_COMMAND_CODE` in layer 11 (0xb0143; drivers/char/tpm/tpm2-cmd.c, tpm2_find_cc,
//!   and tpm-dev-common.c). `/dev/tpm0` passes any command. Hence [`NSM_DEVICE`]. The kernel
//!   resends commands answered `TPM_RC_RETRY` or `TPM_RC_TESTING` (tpm-interface.c,
//!   tpm_transmit); [`Tpm`] does the same for transports without a kernel in between.
//! - The NSM messages (aws/aws-nitro-enclaves-nsm-api, src/api/mod.rs): serde's externally
//!   tagged enums in CBOR: the request is `{"Attestation": {"user_data": null, "nonce": null,
//!   "public_key": h'<DER>'}}`, the answer `{"Attestation": {"document": h'<COSE_Sign1>'}}`
//!   or `{"Error": "<ErrorCode>"}`. The document is an untagged COSE_Sign1, a CBOR array of
//!   four (bytes `84 44 a1 01 38 22 ...`: protected header {1: -35, ES384}).
//! - Sizes: the kernel's TPM buffer is 4096 bytes (`TPM_BUFSIZE`), which bounds every command
//!   and response here ([`MAX_MESSAGE`]).

pub mod marshal;
pub mod nsm;
pub mod rc;
#[cfg(test)]
pub(crate) mod swtpm;
pub mod transport;

use std::fmt;

use marshal::{parse_response, Command, ST_NO_SESSIONS, ST_SESSIONS};
pub use rc::ResponseCode;
pub use transport::{DeviceTransport, Transport, TransportError};

/// The device zoa-init sends the NSM request to. Not `/dev/tpmrm0`: see the module
/// documentation (the resource manager refuses vendor commands on older kernels).
pub const NSM_DEVICE: &str = "/dev/tpm0";

/// Largest command or response, in bytes (the kernel's `TPM_BUFSIZE`).
pub const MAX_MESSAGE: usize = 4096;

/// Largest NV_Read/NV_Write chunk we use, whatever the TPM allows: the reference
/// implementation's `MAX_NV_BUFFER_SIZE`, well inside [`MAX_MESSAGE`].
pub const MAX_NV_CHUNK: usize = 1024;

const CC_NV_UNDEFINE_SPACE: u32 = 0x122;
const CC_NV_DEFINE_SPACE: u32 = 0x12A;
const CC_CREATE_PRIMARY: u32 = 0x131;
const CC_NV_WRITE: u32 = 0x137;
const CC_STARTUP: u32 = 0x144;
const CC_NV_READ: u32 = 0x14E;
const CC_FLUSH_CONTEXT: u32 = 0x165;
const CC_NV_READ_PUBLIC: u32 = 0x169;
const CC_GET_CAPABILITY: u32 = 0x17A;
const CC_GET_RANDOM: u32 = 0x17B;
/// `TPM2_VENDOR_AWS_NSM_REQUEST`: NitroTPM's vendor command that hands an NV index holding an
/// NSM request to the NSM.
pub const CC_VENDOR_AWS_NSM_REQUEST: u32 = 0x2000_0001;

/// `TPM_RH_OWNER`: the owner (storage) hierarchy.
pub const RH_OWNER: u32 = 0x4000_0001;
/// `TPM_RH_NULL`: the null hierarchy (keys vanish at reset).
pub const RH_NULL: u32 = 0x4000_0007;
/// First and last handle of the NV index range (`TPM_HT_NV_INDEX`).
pub const NV_INDEX_FIRST: u32 = 0x0100_0000;
pub const NV_INDEX_LAST: u32 = 0x01FF_FFFF;
/// First and last transient object handle (`TPM_HT_TRANSIENT`).
pub const TRANSIENT_FIRST: u32 = 0x8000_0000;
pub const TRANSIENT_LAST: u32 = 0x80FF_FFFF;

const CAP_HANDLES: u32 = 0x1;
const CAP_TPM_PROPERTIES: u32 = 0x6;
/// `TPM_PT_NV_BUFFER_MAX`: the largest NV_Read/NV_Write data the TPM takes.
pub const PT_NV_BUFFER_MAX: u32 = 0x12C;
/// `TPM_PT_NV_INDEX_MAX`: the largest NV index data size the TPM allows.
pub const PT_NV_INDEX_MAX: u32 = 0x117;

/// `TPMA_NV_AUTHWRITE`: writes are authorized with the index's authValue.
pub const NV_AUTHWRITE: u32 = 1 << 2;
/// `TPMA_NV_AUTHREAD`: reads are authorized with the index's authValue.
pub const NV_AUTHREAD: u32 = 1 << 18;

/// `TPM_ALG_SHA256`, `TPM_ALG_SHA512`.
pub const ALG_SHA256: u16 = 0x000B;
pub const ALG_SHA512: u16 = 0x000D;
const ALG_ECC: u16 = 0x0023;
const ALG_ECDSA: u16 = 0x0018;
const ALG_NULL: u16 = 0x0010;
const ECC_NIST_P256: u16 = 0x0003;

/// Why a TPM operation failed. `Display` is one line naming the command and what went wrong,
/// fit for `zoa-init: fatal: attestation: <error>`; it never contains authorization values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tpm2Error {
    /// The TPM device could not be opened.
    Device(TransportError),
    /// The command could not be sent or its response not received.
    Transport {
        command: &'static str,
        error: TransportError,
    },
    /// The TPM (or the kernel in front of it) answered with a nonzero response code.
    Tpm {
        command: &'static str,
        rc: ResponseCode,
    },
    /// The response does not have the structure the command's response has.
    Malformed {
        command: &'static str,
        detail: String,
    },
    /// Something is larger than we send or accept.
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// The public key for the attestation request is empty.
    EmptyPublicKey,
    /// The random NV authorization value could not be generated.
    Random(String),
    /// Every NV index handle we tried was taken.
    NoFreeNvIndex { tries: usize },
    /// The NSM request or response could not be encoded or decoded.
    NsmMessage(String),
    /// The NSM answered the attestation request with `Error(code)`.
    NsmRefused { code: String },
    /// The NSM's document is not a COSE_Sign1 structure.
    NotCoseSign1(String),
    /// Undefining our NV index failed (`cause`: what failed before, if anything); the index
    /// stays defined in the TPM's non-volatile memory.
    LeftDefined {
        index: u32,
        cause: Option<Box<Tpm2Error>>,
        undefine: Box<Tpm2Error>,
    },
}

impl fmt::Display for Tpm2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tpm2Error::Device(error) => write!(f, "{error}"),
            Tpm2Error::Transport { command, error } => write!(f, "{command}: {error}"),
            Tpm2Error::Tpm { command, rc } => write!(f, "{command}: {rc}"),
            Tpm2Error::Malformed { command, detail } => {
                write!(f, "{command}: malformed response: {detail}")
            }
            Tpm2Error::TooLarge { what, len, max } => {
                write!(f, "{what} of {len} bytes; at most {max} are allowed")
            }
            Tpm2Error::EmptyPublicKey => {
                write!(f, "the public key for the NSM attestation request is empty")
            }
            Tpm2Error::Random(e) => {
                write!(f, "generating the NV index authorization value: {e}")
            }
            Tpm2Error::NoFreeNvIndex { tries } => write!(
                f,
                "no free NV index from 0x{NV_INDEX_FIRST:08x}: {tries} handles tried were taken"
            ),
            Tpm2Error::NsmMessage(detail) => write!(f, "NSM message: {detail}"),
            Tpm2Error::NsmRefused { code } => {
                write!(f, "the NSM refused the attestation request: Error({code})")
            }
            Tpm2Error::NotCoseSign1(detail) => {
                write!(
                    f,
                    "the NSM's attestation document is not a COSE_Sign1: {detail}"
                )
            }
            Tpm2Error::LeftDefined {
                index,
                cause: Some(cause),
                undefine,
            } => write!(
                f,
                "{cause}; then undefining NV index 0x{index:08x} failed too: {undefine}"
            ),
            Tpm2Error::LeftDefined {
                index,
                cause: None,
                undefine,
            } => write!(f, "undefining NV index 0x{index:08x} failed: {undefine}"),
        }
    }
}

impl std::error::Error for Tpm2Error {}

impl From<TransportError> for Tpm2Error {
    /// For [`DeviceTransport::open`]'s error.
    fn from(error: TransportError) -> Tpm2Error {
        Tpm2Error::Device(error)
    }
}

/// The public area of an NV index (TPMS_NV_PUBLIC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvPublic {
    pub index: u32,
    pub name_alg: u16,
    /// TPMA_NV bits, including the index type in bits 4–7 (0: ordinary).
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub data_size: u16,
}

impl NvPublic {
    fn marshal(&self) -> Result<Vec<u8>, Tpm2Error> {
        let mut c = Command::structure("TPMS_NV_PUBLIC");
        c.u32(self.index)
            .u16(self.name_alg)
            .u32(self.attributes)
            .tpm2b(&self.auth_policy)?
            .u16(self.data_size);
        c.finish()
    }
}

/// A primary key made by TPM2_CreatePrimary: its transient handle, its public area
/// (TPMT_PUBLIC) and its name (nameAlg || H(public area)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryKey {
    pub handle: u32,
    pub public_area: Vec<u8>,
    pub name: Vec<u8>,
    /// The ECC public point.
    pub x: Vec<u8>,
    pub y: Vec<u8>,
}

/// TPM 2.0 commands over a [`Transport`]. Authorization is by password sessions; the NV
/// chunk size is asked of the TPM once.
pub struct Tpm<'t> {
    transport: &'t mut dyn Transport,
    nv_chunk: Option<usize>,
}

impl<'t> Tpm<'t> {
    pub fn new(transport: &'t mut dyn Transport) -> Tpm<'t> {
        Tpm {
            transport,
            nv_chunk: None,
        }
    }

    /// Sends a finished command and returns the raw response. Like Linux's tpm_transmit, sends
    /// it again, after 20, 40, 80... ms, while the TPM answers TPM_RC_RETRY or TPM_RC_TESTING
    /// (swtpm answers the first NV write after startup with TPM_RC_RETRY; through the
    /// character device the kernel has already retried). Resending is safe: password
    /// sessions carry no nonces.
    fn run(&mut self, command: &Command) -> Result<Vec<u8>, Tpm2Error> {
        const RETRIES: u32 = 6;
        let bytes = command.finish()?;
        if bytes.len() > MAX_MESSAGE {
            return Err(Tpm2Error::TooLarge {
                what: command.name(),
                len: bytes.len(),
                max: MAX_MESSAGE,
            });
        }
        let mut delay = std::time::Duration::from_millis(20);
        for _ in 0..RETRIES {
            let response = self.transact(command.name(), &bytes)?;
            if !asks_for_retry(&response) {
                return Ok(response);
            }
            std::thread::sleep(delay);
            delay *= 2;
        }
        self.transact(command.name(), &bytes)
    }

    fn transact(&mut self, name: &'static str, bytes: &[u8]) -> Result<Vec<u8>, Tpm2Error> {
        self.transport
            .transact(bytes)
            .map_err(|error| Tpm2Error::Transport {
                command: name,
                error,
            })
    }

    /// Runs a command whose response has no parameters we need.
    fn run_expecting_nothing(&mut self, command: &Command) -> Result<(), Tpm2Error> {
        let response = self.run(command)?;
        let reply = parse_response(command.name(), &response, 0)?;
        reply.params.finish()
    }

    /// TPM2_Startup(TPM_SU_CLEAR). Firmware does this on real machines; swtpm needs it.
    pub fn startup_clear(&mut self) -> Result<(), Tpm2Error> {
        let mut c = Command::new("TPM2_Startup", ST_NO_SESSIONS, CC_STARTUP);
        c.u16(0x0000);
        self.run_expecting_nothing(&c)
    }

    /// TPM2_GetRandom: up to `count` bytes (the TPM may return fewer, at most a digest's worth).
    pub fn get_random(&mut self, count: u16) -> Result<Vec<u8>, Tpm2Error> {
        let mut c = Command::new("TPM2_GetRandom", ST_NO_SESSIONS, CC_GET_RANDOM);
        c.u16(count);
        let response = self.run(&c)?;
        let mut params = parse_response(c.name(), &response, 0)?.params;
        let bytes = params.tpm2b()?.to_vec();
        params.finish()?;
        if bytes.len() > usize::from(count) {
            return Err(Tpm2Error::Malformed {
                command: c.name(),
                detail: format!("{} bytes returned, {count} asked for", bytes.len()),
            });
        }
        Ok(bytes)
    }

    /// TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES) for one property; `None` when the TPM does
    /// not report it.
    pub fn tpm_property(&mut self, property: u32) -> Result<Option<u32>, Tpm2Error> {
        let mut c = Command::new("TPM2_GetCapability", ST_NO_SESSIONS, CC_GET_CAPABILITY);
        c.u32(CAP_TPM_PROPERTIES).u32(property).u32(1);
        let response = self.run(&c)?;
        let mut params = parse_response(c.name(), &response, 0)?.params;
        let _more_data = params.u8()?;
        expect_capability(c.name(), params.u32()?, CAP_TPM_PROPERTIES)?;
        let count = params.u32()?;
        let mut value = None;
        for _ in 0..count.min(64) {
            let (tag, v) = (params.u32()?, params.u32()?);
            if tag == property {
                value = Some(v);
            }
        }
        params.finish()?;
        Ok(value)
    }

    /// TPM2_GetCapability(TPM_CAP_HANDLES): the handles in use from `first` to `last`
    /// (inclusive), in order. Follows `moreData` for at most 64 responses.
    pub fn handles(&mut self, first: u32, last: u32) -> Result<Vec<u32>, Tpm2Error> {
        const MAX_ROUNDS: usize = 64;
        const PER_ROUND: u32 = 256;
        let mut found = Vec::new();
        let mut next = first;
        for _ in 0..MAX_ROUNDS {
            let mut c = Command::new("TPM2_GetCapability", ST_NO_SESSIONS, CC_GET_CAPABILITY);
            c.u32(CAP_HANDLES).u32(next).u32(PER_ROUND);
            let response = self.run(&c)?;
            let mut params = parse_response(c.name(), &response, 0)?.params;
            let more_data = params.u8()? != 0;
            expect_capability(c.name(), params.u32()?, CAP_HANDLES)?;
            let count = params.u32()?;
            if count > PER_ROUND {
                return Err(Tpm2Error::Malformed {
                    command: c.name(),
                    detail: format!("{count} handles returned, at most {PER_ROUND} asked for"),
                });
            }
            let mut batch = Vec::new();
            for _ in 0..count {
                batch.push(params.u32()?);
            }
            params.finish()?;
            let Some(&highest) = batch.last() else {
                return Ok(found);
            };
            found.extend(batch.into_iter().filter(|h| (first..=last).contains(h)));
            if !more_data || highest >= last {
                return Ok(found);
            }
            next = highest + 1;
        }
        Err(Tpm2Error::Malformed {
            command: "TPM2_GetCapability",
            detail: format!("still more handles after {MAX_ROUNDS} responses"),
        })
    }

    /// TPM2_CreatePrimary of an unrestricted ECDSA P-256 signing key (SHA-256 name, empty
    /// authValue) in `hierarchy` (e.g. [`RH_NULL`], [`RH_OWNER`]), authorized with the
    /// hierarchy's password. The key is transient: flush it with [`Tpm::flush_context`].
    pub fn create_primary_ecc_p256(
        &mut self,
        hierarchy: u32,
        hierarchy_auth: &[u8],
    ) -> Result<PrimaryKey, Tpm2Error> {
        // fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | sign.
        const ATTRIBUTES: u32 = 1 << 1 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 18;
        let mut template = Command::structure("TPMT_PUBLIC");
        template
            .u16(ALG_ECC)
            .u16(ALG_SHA256)
            .u32(ATTRIBUTES)
            .tpm2b(&[])? // authPolicy
            .u16(ALG_NULL) // symmetric: none (not a storage key)
            .u16(ALG_ECDSA)
            .u16(ALG_SHA256) // scheme: ECDSA with SHA-256
            .u16(ECC_NIST_P256)
            .u16(ALG_NULL) // kdf
            .tpm2b(&[])? // unique.x
            .tpm2b(&[])?; // unique.y
        let template = template.finish()?;

        let mut c = Command::new("TPM2_CreatePrimary", ST_SESSIONS, CC_CREATE_PRIMARY);
        c.u32(hierarchy).password_session(hierarchy_auth)?;
        // inSensitive: TPM2B_SENSITIVE_CREATE { userAuth: empty, data: empty }.
        c.tpm2b(&[0, 0, 0, 0])?
            .tpm2b(&template)?
            .tpm2b(&[])? // outsideInfo
            .u32(0); // creationPCR: no PCR selection
        let response = self.run(&c)?;
        let reply = parse_response(c.name(), &response, 1)?;
        let mut params = reply.params;
        let public_area = params.tpm2b()?.to_vec();
        let _creation_data = params.tpm2b()?;
        let _creation_hash = params.tpm2b()?;
        let (_tag, _hierarchy, _digest) = (params.u16()?, params.u32()?, params.tpm2b()?);
        let name = params.tpm2b()?.to_vec();
        params.finish()?;
        let (x, y) = ecc_point(c.name(), &public_area)?;
        Ok(PrimaryKey {
            handle: reply.handles[0],
            public_area,
            name,
            x,
            y,
        })
    }

    /// TPM2_FlushContext: unloads a transient object or session.
    pub fn flush_context(&mut self, handle: u32) -> Result<(), Tpm2Error> {
        let mut c = Command::new("TPM2_FlushContext", ST_NO_SESSIONS, CC_FLUSH_CONTEXT);
        c.u32(handle);
        self.run_expecting_nothing(&c)
    }

    /// TPM2_NV_DefineSpace in the owner hierarchy (authorized with `owner_auth`), with
    /// `index_auth` as the new index's authValue.
    pub fn nv_define_space(
        &mut self,
        owner_auth: &[u8],
        public: &NvPublic,
        index_auth: &[u8],
    ) -> Result<(), Tpm2Error> {
        let mut c = Command::new("TPM2_NV_DefineSpace", ST_SESSIONS, CC_NV_DEFINE_SPACE);
        c.u32(RH_OWNER).password_session(owner_auth)?;
        c.tpm2b(index_auth)?.tpm2b(&public.marshal()?)?;
        self.run_expecting_nothing(&c)
    }

    /// TPM2_NV_UndefineSpace in the owner hierarchy.
    pub fn nv_undefine_space(&mut self, owner_auth: &[u8], index: u32) -> Result<(), Tpm2Error> {
        let mut c = Command::new("TPM2_NV_UndefineSpace", ST_SESSIONS, CC_NV_UNDEFINE_SPACE);
        c.u32(RH_OWNER).u32(index).password_session(owner_auth)?;
        self.run_expecting_nothing(&c)
    }

    /// TPM2_NV_ReadPublic: an index's public area (fails with `TPM_RC_HANDLE` when the index
    /// is not defined).
    pub fn nv_read_public(&mut self, index: u32) -> Result<NvPublic, Tpm2Error> {
        let mut c = Command::new("TPM2_NV_ReadPublic", ST_NO_SESSIONS, CC_NV_READ_PUBLIC);
        c.u32(index);
        let response = self.run(&c)?;
        let mut params = parse_response(c.name(), &response, 0)?.params;
        let public = params.tpm2b()?;
        let _name = params.tpm2b()?;
        params.finish()?;
        let mut p = marshal::Reader::over(c.name(), public);
        let nv = NvPublic {
            index: p.u32()?,
            name_alg: p.u16()?,
            attributes: p.u32()?,
            auth_policy: p.tpm2b()?.to_vec(),
            data_size: p.u16()?,
        };
        p.finish()?;
        Ok(nv)
    }

    /// The NV_Read/NV_Write chunk size: `TPM_PT_NV_BUFFER_MAX` capped at [`MAX_NV_CHUNK`]
    /// (1024 when the TPM does not say).
    pub fn nv_chunk_size(&mut self) -> Result<usize, Tpm2Error> {
        if let Some(n) = self.nv_chunk {
            return Ok(n);
        }
        let n = match self.tpm_property(PT_NV_BUFFER_MAX)? {
            None => MAX_NV_CHUNK,
            Some(0) => {
                return Err(Tpm2Error::Malformed {
                    command: "TPM2_GetCapability",
                    detail: "TPM_PT_NV_BUFFER_MAX is 0".to_string(),
                })
            }
            Some(n) => usize::try_from(n).map_or(MAX_NV_CHUNK, |n| n.min(MAX_NV_CHUNK)),
        };
        self.nv_chunk = Some(n);
        Ok(n)
    }

    /// Sets the NV chunk size instead of asking the TPM (tests: many chunks from little data).
    pub fn set_nv_chunk_size(&mut self, n: usize) {
        self.nv_chunk = Some(n.clamp(1, MAX_NV_CHUNK));
    }

    /// TPM2_NV_Write of `data` from offset 0, in chunks, authorized with the index's own
    /// authValue (the index needs `TPMA_NV_AUTHWRITE`).
    pub fn nv_write(
        &mut self,
        index: u32,
        index_auth: &[u8],
        data: &[u8],
    ) -> Result<(), Tpm2Error> {
        check_nv_len(data.len())?;
        let chunk = self.nv_chunk_size()?;
        for (i, part) in data.chunks(chunk).enumerate() {
            let offset = nv_offset(i * chunk)?;
            let mut c = Command::new("TPM2_NV_Write", ST_SESSIONS, CC_NV_WRITE);
            c.u32(index).u32(index).password_session(index_auth)?;
            c.tpm2b(part)?.u16(offset);
            self.run_expecting_nothing(&c)?;
        }
        Ok(())
    }

    /// TPM2_NV_Read of `len` bytes from offset 0, in chunks, authorized with the index's own
    /// authValue (the index needs `TPMA_NV_AUTHREAD`).
    pub fn nv_read(
        &mut self,
        index: u32,
        index_auth: &[u8],
        len: usize,
    ) -> Result<Vec<u8>, Tpm2Error> {
        check_nv_len(len)?;
        let chunk = self.nv_chunk_size()?;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let size = chunk.min(len - out.len());
            let mut c = Command::new("TPM2_NV_Read", ST_SESSIONS, CC_NV_READ);
            c.u32(index).u32(index).password_session(index_auth)?;
            c.u16(nv_offset(size)?).u16(nv_offset(out.len())?);
            let response = self.run(&c)?;
            let mut params = parse_response(c.name(), &response, 0)?.params;
            let data = params.tpm2b()?;
            params.finish()?;
            if data.len() != size {
                return Err(Tpm2Error::Malformed {
                    command: c.name(),
                    detail: format!("{} bytes returned, {size} asked for", data.len()),
                });
            }
            out.extend_from_slice(data);
        }
        Ok(out)
    }

    /// `TPM2_VENDOR_AWS_NSM_REQUEST`: has the NSM process the request in NV index `index` and
    /// write its response there, authorized with the index's authValue.
    pub fn aws_nsm_request(&mut self, index: u32, index_auth: &[u8]) -> Result<(), Tpm2Error> {
        let mut c = Command::new(
            "NitroTPM vendor command TPM2_VENDOR_AWS_NSM_REQUEST (0x20000001)",
            ST_SESSIONS,
            CC_VENDOR_AWS_NSM_REQUEST,
        );
        c.u32(index).u32(index).password_session(index_auth)?;
        let response = self.run(&c)?;
        // Only the response code matters: like nitro-tpm-attest, do not insist on a
        // parameter or session area the vendor command's specification does not promise.
        marshal::check_response_code(c.name(), &response)
    }
}

/// Whether a response's code is TPM_RC_RETRY or TPM_RC_TESTING: "try again later".
fn asks_for_retry(response: &[u8]) -> bool {
    response
        .get(6..10)
        .map(|rc| u32::from_be_bytes([rc[0], rc[1], rc[2], rc[3]]))
        .is_some_and(|rc| rc == ResponseCode::RETRY || rc == ResponseCode::TESTING)
}

fn expect_capability(command: &'static str, got: u32, want: u32) -> Result<(), Tpm2Error> {
    if got != want {
        return Err(Tpm2Error::Malformed {
            command,
            detail: format!("capability 0x{got:x} returned, 0x{want:x} asked for"),
        });
    }
    Ok(())
}

/// NV data and offsets are u16 on the wire.
fn check_nv_len(len: usize) -> Result<(), Tpm2Error> {
    if len > usize::from(u16::MAX) {
        return Err(Tpm2Error::TooLarge {
            what: "NV data",
            len,
            max: usize::from(u16::MAX),
        });
    }
    Ok(())
}

fn nv_offset(n: usize) -> Result<u16, Tpm2Error> {
    u16::try_from(n).map_err(|_| Tpm2Error::TooLarge {
        what: "NV offset",
        len: n,
        max: usize::from(u16::MAX),
    })
}

/// The unique (public point) of an ECC TPMT_PUBLIC as made by
/// [`Tpm::create_primary_ecc_p256`].
fn ecc_point(command: &'static str, public_area: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Tpm2Error> {
    let mut p = marshal::Reader::over(command, public_area);
    let (kind, _name_alg, _attributes) = (p.u16()?, p.u16()?, p.u32()?);
    if kind != ALG_ECC {
        return Err(Tpm2Error::Malformed {
            command,
            detail: format!("public area of type 0x{kind:04x}; expected ECC"),
        });
    }
    let _auth_policy = p.tpm2b()?;
    let symmetric = p.u16()?;
    if symmetric != ALG_NULL {
        // key bits and mode follow a non-null symmetric algorithm.
        p.take(4)?;
    }
    let scheme = p.u16()?;
    if scheme != ALG_NULL {
        p.take(2)?;
    }
    let _curve = p.u16()?;
    let kdf = p.u16()?;
    if kdf != ALG_NULL {
        p.take(2)?;
    }
    let x = p.tpm2b()?.to_vec();
    let y = p.tpm2b()?.to_vec();
    p.finish()?;
    Ok((x, y))
}

#[cfg(test)]
mod tests {
    use super::swtpm::Swtpm;
    use super::*;
    use sha2::{Digest, Sha256};

    /// A started swtpm with TPM2_Startup done, or `None` (after saying so) without swtpm.
    fn started() -> Option<Swtpm> {
        let swtpm = Swtpm::start()?;
        let mut transport = swtpm.connect();
        Tpm::new(&mut transport).startup_clear().unwrap();
        Some(swtpm)
    }

    #[test]
    fn tpm2_startup_twice_is_tpm_rc_initialize() {
        let Some(swtpm) = started() else { return };
        let mut transport = swtpm.connect();
        let err = Tpm::new(&mut transport).startup_clear().unwrap_err();
        assert_eq!(
            err,
            Tpm2Error::Tpm {
                command: "TPM2_Startup",
                rc: ResponseCode(ResponseCode::INITIALIZE)
            }
        );
    }

    #[test]
    fn tpm2_get_random_returns_fresh_bytes() {
        let Some(swtpm) = started() else { return };
        let mut transport = swtpm.connect();
        let mut tpm = Tpm::new(&mut transport);
        let a = tpm.get_random(32).unwrap();
        let b = tpm.get_random(32).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
    }

    #[test]
    fn tpm2_create_primary_then_flush() {
        let Some(swtpm) = started() else { return };
        let mut transport = swtpm.connect();
        let mut tpm = Tpm::new(&mut transport);
        for hierarchy in [RH_NULL, RH_OWNER] {
            let key = tpm.create_primary_ecc_p256(hierarchy, b"").unwrap();
            assert!((TRANSIENT_FIRST..=TRANSIENT_LAST).contains(&key.handle));
            assert_eq!((key.x.len(), key.y.len()), (32, 32));
            // The TPM's name for the key is nameAlg || SHA-256(public area): our parse of
            // the public area is the TPM's.
            let mut name = ALG_SHA256.to_be_bytes().to_vec();
            name.extend_from_slice(&Sha256::digest(&key.public_area));
            assert_eq!(key.name, name);
            assert_eq!(
                tpm.handles(TRANSIENT_FIRST, TRANSIENT_LAST).unwrap(),
                [key.handle]
            );
            tpm.flush_context(key.handle).unwrap();
            assert_eq!(
                tpm.handles(TRANSIENT_FIRST, TRANSIENT_LAST).unwrap(),
                [0u32; 0]
            );
        }
        // A wrong hierarchy password is refused, and says which session.
        let err = tpm.create_primary_ecc_p256(RH_OWNER, b"wrong").unwrap_err();
        let Tpm2Error::Tpm { rc, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(rc.subject(), rc::Subject::Session(1), "{rc}");
    }

    #[test]
    fn tpm2_nv_define_write_read_undefine() {
        let Some(swtpm) = started() else { return };
        let mut transport = swtpm.connect();
        let mut tpm = Tpm::new(&mut transport);
        assert_eq!(
            tpm.nv_chunk_size().unwrap(),
            1024,
            "swtpm's TPM_PT_NV_BUFFER_MAX"
        );
        let index = NV_INDEX_FIRST + 0x42;
        let public = NvPublic {
            index,
            name_alg: ALG_SHA512,
            attributes: NV_AUTHREAD | NV_AUTHWRITE,
            auth_policy: Vec::new(),
            data_size: 2000,
        };
        let auth = [0x5A; 64];
        tpm.nv_define_space(b"", &public, &auth).unwrap();
        assert_eq!(tpm.nv_read_public(index).unwrap(), public);
        assert_eq!(tpm.handles(NV_INDEX_FIRST, NV_INDEX_LAST).unwrap(), [index]);

        // Two chunks of 1024 and 976 bytes, then 20 chunks of 100 over it.
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 251) as u8).collect();
        tpm.nv_write(index, &auth, &data).unwrap();
        assert_eq!(tpm.nv_read(index, &auth, data.len()).unwrap(), data);
        let reversed: Vec<u8> = data.iter().rev().copied().collect();
        tpm.set_nv_chunk_size(100);
        tpm.nv_write(index, &auth, &reversed).unwrap();
        assert_eq!(tpm.nv_read(index, &auth, 2000).unwrap(), reversed);

        // The index's password guards it.
        let err = tpm.nv_read(index, b"wrong", 10).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("TPM2_NV_Read: TPM_RC_AUTH_FAIL"),
            "{err}"
        );

        // Defining it again is TPM_RC_NV_DEFINED.
        let err = tpm.nv_define_space(b"", &public, &auth).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TPM2_NV_DefineSpace: TPM_RC_NV_DEFINED \
             (0x14c: NV index or persistent object already defined)"
        );

        tpm.nv_undefine_space(b"", index).unwrap();
        assert_eq!(
            tpm.handles(NV_INDEX_FIRST, NV_INDEX_LAST).unwrap(),
            [0u32; 0]
        );
        let err = tpm.nv_read_public(index).unwrap_err();
        let Tpm2Error::Tpm { rc, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(rc.base(), ResponseCode::HANDLE, "{rc}");
    }

    #[test]
    fn tpm2_nv_buffer_max_and_index_max_as_swtpm_reports_them() {
        let Some(swtpm) = started() else { return };
        let mut transport = swtpm.connect();
        let mut tpm = Tpm::new(&mut transport);
        assert_eq!(tpm.tpm_property(PT_NV_BUFFER_MAX).unwrap(), Some(1024));
        let index_max = tpm.tpm_property(PT_NV_INDEX_MAX).unwrap();
        eprintln!("swtpm TPM_PT_NV_INDEX_MAX: {index_max:?}");
        assert!(index_max.is_some());
    }
}
