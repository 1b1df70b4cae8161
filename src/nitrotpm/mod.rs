//! An emulated NitroTPM: swtpm, plus the Nitro Security Module that AWS's NitroTPM answers
//! the vendor command `TPM2_VENDOR_AWS_NSM_REQUEST` (0x20000001) with. It stands between the
//! guest (QEMU) and swtpm: every TPM command goes through to swtpm, except
//!
//! - the vendor command: the NSM request is read from the NV index the command names (under
//!   the index's own password authorization), the SHA-384 PCRs are read from swtpm at that
//!   moment (never computed from a prediction), and the answer, a document signed by the
//!   emulator's test CA ([`ca`]), is written back into the same index, as NitroTPM does;
//! - NV indexes larger than swtpm's 2 KiB, which NitroTPM takes (the NSM exchange uses 8 KiB,
//!   an attestation document being about 5 KiB): the emulator holds their contents ([`nv`])
//!   and reports `TPM_PT_NV_INDEX_MAX` as [`NV_INDEX_MAX`].
//!
//! Nothing the emulator signs chains to the AWS Nitro root: it is for rehearsing an attested
//! boot on one machine (`zoa boot --nitrotpm`) and for the tests.

pub mod ca;
pub mod nsm;
pub mod nv;
pub mod relay;
pub mod swtpm;
pub mod wire;

use std::collections::BTreeMap;

use zoa_init::tpm2::marshal::{parse_response, Command, ST_NO_SESSIONS};
use zoa_init::tpm2::{Tpm, Transport, TransportError, CC_VENDOR_AWS_NSM_REQUEST};

use nv::{VirtualIndex, NV_AUTHREAD, NV_AUTHWRITE};
use wire::{rc, GuestCommand};

/// The largest NV index the emulated NitroTPM takes: what the NSM exchange of AWS's
/// `nitro-tpm-attest` defines.
pub const NV_INDEX_MAX: u16 = 8192;

/// swtpm's largest NV index when it does not say (libtpms' `MAX_NV_INDEX_SIZE`).
const SWTPM_NV_INDEX_MAX: u16 = 2048;

/// The emulator over swtpm's data channel.
pub struct Emulator<T: Transport> {
    swtpm: T,
    nsm: nsm::Nsm,
    nv: BTreeMap<u32, VirtualIndex>,
    swtpm_nv_max: Option<u16>,
}

impl<T: Transport> Emulator<T> {
    pub fn new(swtpm: T, nsm: nsm::Nsm) -> Emulator<T> {
        Emulator {
            swtpm,
            nsm,
            nv: BTreeMap::new(),
            swtpm_nv_max: None,
        }
    }

    /// The emulated NSM (its CA's root, for verifiers).
    pub fn nsm(&self) -> &nsm::Nsm {
        &self.nsm
    }

    /// Answers one guest command.
    pub fn handle(&mut self, command: &[u8]) -> Vec<u8> {
        let code = command
            .get(6..10)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let answered = match code {
            CC_VENDOR_AWS_NSM_REQUEST => Some(self.nsm_request(command)),
            wire::CC_NV_DEFINE_SPACE => self.define(command),
            wire::CC_NV_WRITE => self.nv_write(command),
            wire::CC_NV_READ => self.nv_read(command),
            wire::CC_NV_READ_PUBLIC => self.nv_read_public(command),
            wire::CC_NV_UNDEFINE_SPACE => Some(self.undefine(command, 2, 1)),
            wire::CC_NV_UNDEFINE_SPACE_SPECIAL => Some(self.undefine(command, 2, 0)),
            wire::CC_GET_CAPABILITY => Some(self.get_capability(command)),
            _ => None,
        };
        answered.unwrap_or_else(|| self.forward(command))
    }

    fn forward(&mut self, command: &[u8]) -> Vec<u8> {
        match self.swtpm.transact(command) {
            Ok(r) => r,
            Err(e) => {
                log::error!("emulated NitroTPM: swtpm: {e}");
                wire::error(rc::FAILURE)
            }
        }
    }

    fn tpm(&mut self) -> Tpm<'_> {
        Tpm::new(&mut self.swtpm)
    }

    fn swtpm_nv_max(&mut self) -> u16 {
        if let Some(max) = self.swtpm_nv_max {
            return max;
        }
        let max = self
            .tpm()
            .tpm_property(wire::PT_NV_INDEX_MAX)
            .ok()
            .flatten()
            .and_then(|m| u16::try_from(m).ok())
            .unwrap_or(SWTPM_NV_INDEX_MAX);
        self.swtpm_nv_max = Some(max);
        max
    }

    /// NV_DefineSpace of an ordinary index larger than swtpm takes: a one-byte shadow in
    /// swtpm (which checks the owner's authorization), the contents here.
    fn define(&mut self, command: &[u8]) -> Option<Vec<u8>> {
        let guest = GuestCommand::parse(command, 1)?;
        let request = nv::parse_define(guest.params)?;
        let ordinary = request.attributes & wire::NV_TYPE_MASK == 0;
        if !ordinary || request.data_size <= self.swtpm_nv_max() || request.data_size > NV_INDEX_MAX
        {
            return None;
        }
        let response = self.forward(&nv::shadow_define(&guest, &request)?);
        if wire::response_code(&response) == 0 {
            self.nv.insert(request.index, VirtualIndex::new(&request));
        }
        Some(response)
    }

    fn undefine(&mut self, command: &[u8], handles: usize, index_at: usize) -> Vec<u8> {
        let index =
            GuestCommand::parse(command, handles).and_then(|g| g.handles.get(index_at).copied());
        let response = self.forward(command);
        if let Some(index) = index.filter(|_| wire::response_code(&response) == 0) {
            self.nv.remove(&index);
        }
        response
    }

    /// The virtual index a command's handle `at` names, with the command.
    fn virtual_target<'c>(
        &self,
        command: &'c [u8],
        handles: usize,
        at: usize,
    ) -> Option<(GuestCommand<'c>, u32)> {
        let guest = GuestCommand::parse(command, handles)?;
        let index = *guest.handles.get(at)?;
        self.nv.contains_key(&index).then_some((guest, index))
    }

    fn nv_write(&mut self, command: &[u8]) -> Option<Vec<u8>> {
        let (guest, index) = self.virtual_target(command, 2, 1)?;
        let nv = self.nv.get_mut(&index)?;
        Some(
            match nv
                .authorize(&guest, NV_AUTHWRITE)
                .and_then(|s| nv.write(guest.params).map(|()| s))
            {
                Ok(session) => wire::success_with_session(&[], session),
                Err(code) => wire::error(code),
            },
        )
    }

    fn nv_read(&mut self, command: &[u8]) -> Option<Vec<u8>> {
        let (guest, index) = self.virtual_target(command, 2, 1)?;
        let nv = self.nv.get(&index)?;
        Some(
            match nv
                .authorize(&guest, NV_AUTHREAD)
                .and_then(|s| nv.read(guest.params).map(|d| (s, d)))
            {
                Ok((session, data)) => {
                    let mut params = Vec::with_capacity(data.len() + 2);
                    wire::put_tpm2b(&mut params, data);
                    wire::success_with_session(&params, session)
                }
                Err(code) => wire::error(code),
            },
        )
    }

    fn nv_read_public(&mut self, command: &[u8]) -> Option<Vec<u8>> {
        let (_, index) = self.virtual_target(command, 1, 0)?;
        let nv = self.nv.get(&index)?;
        let name = nv.name()?;
        let mut params = Vec::new();
        wire::put_tpm2b(&mut params, &nv.public_area());
        wire::put_tpm2b(&mut params, &name);
        Some(wire::success(&params))
    }

    /// GetCapability, with `TPM_PT_NV_INDEX_MAX` raised to what the emulator takes.
    fn get_capability(&mut self, command: &[u8]) -> Vec<u8> {
        let mut response = self.forward(command);
        if wire::response_code(&response) == 0 {
            raise_nv_index_max(&mut response);
        }
        response
    }

    /// The vendor command: authorize as the index's owner would (its password), read the
    /// request, answer from the NSM into the same index.
    fn nsm_request(&mut self, command: &[u8]) -> Vec<u8> {
        let Some(guest) = GuestCommand::parse(command, 2) else {
            return wire::error(rc::COMMAND_SIZE);
        };
        let Some(session) = guest.session else {
            log::warn!(
                "emulated NitroTPM: the NSM request must be authorized with the index's password"
            );
            return wire::error(rc::AUTH_UNAVAILABLE);
        };
        let index = guest.handles[0];
        if guest.handles[1] != index {
            return wire::error(rc::NV_AUTHORIZATION);
        }
        let request = match self.nv.get(&index) {
            Some(nv) => match nv.authorize(&guest, NV_AUTHREAD | NV_AUTHWRITE) {
                Ok(_) if !nv.written => return wire::error(rc::NV_UNINITIALIZED),
                Ok(_) => nv.data.clone(),
                Err(code) => return wire::error(code),
            },
            None => match self.read_swtpm_index(index, session.password) {
                Ok(data) => data,
                Err(code) => return wire::error(code),
            },
        };
        let pcrs = match read_sha384_pcrs(&mut self.swtpm) {
            Ok(p) => p,
            Err(e) => {
                log::error!("emulated NitroTPM: reading the PCRs from swtpm: {e}");
                return wire::error(rc::FAILURE);
            }
        };
        let mut answer = self.nsm.answer(&request, pcrs);
        let capacity = self
            .nv
            .get(&index)
            .map_or(request.len(), |nv| nv.data.len());
        if answer.len() > capacity {
            answer = nsm::error_bytes("BufferTooSmall");
        }
        let written = match self.nv.get_mut(&index) {
            Some(nv) => nv.put(&answer),
            None => self
                .tpm()
                .nv_write(index, session.password, &answer)
                .map_err(|e| tpm_code(&e)),
        };
        match written {
            Ok(()) => wire::success_with_session(&[], session),
            Err(code) => wire::error(code),
        }
    }

    /// The whole contents of an index swtpm holds, read with the guest's password.
    fn read_swtpm_index(&mut self, index: u32, password: &[u8]) -> Result<Vec<u8>, u32> {
        let mut tpm = self.tpm();
        let public = tpm.nv_read_public(index).map_err(|e| tpm_code(&e))?;
        tpm.nv_read(index, password, usize::from(public.data_size))
            .map_err(|e| tpm_code(&e))
    }
}

/// The TPM's response code in an error from zoa-init's client, else TPM_RC_FAILURE.
fn tpm_code(e: &zoa_init::tpm2::Tpm2Error) -> u32 {
    match e {
        zoa_init::tpm2::Tpm2Error::Tpm { rc, .. } => rc.0,
        _ => rc::FAILURE,
    }
}

/// Rewrites `TPM_PT_NV_INDEX_MAX` in a GetCapability(TPM_CAP_TPM_PROPERTIES) response:
/// moreData (u8), capability (u32), count (u32), then (property, value) pairs.
fn raise_nv_index_max(response: &mut [u8]) {
    const BODY: usize = 10;
    let u32_at = |r: &[u8], at: usize| {
        r.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    if response.get(..2) != Some(&ST_NO_SESSIONS.to_be_bytes()[..])
        || u32_at(response, BODY + 1) != Some(wire::CAP_TPM_PROPERTIES)
    {
        return;
    }
    let count = u32_at(response, BODY + 5).unwrap_or(0) as usize;
    for i in 0..count {
        let at = BODY + 9 + 8 * i;
        if u32_at(response, at) == Some(wire::PT_NV_INDEX_MAX) {
            if let Some(value) = response.get_mut(at + 4..at + 8) {
                value.copy_from_slice(&u32::from(NV_INDEX_MAX).to_be_bytes());
            }
        }
    }
}

/// Seen from the guest, the emulator is a TPM: a command in, its response out.
impl<T: Transport> Transport for Emulator<T> {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        Ok(self.handle(command))
    }
}

/// TPM2_PCR_Read of the SHA-384 bank, PCRs 0–23. libtpms returns at most 8 digests per
/// call and says which in its selection, so this asks until all came, and again from the
/// start if the PCR update counter moved in between (a snapshot of one moment).
pub fn read_sha384_pcrs(swtpm: &mut dyn Transport) -> Result<BTreeMap<u32, Vec<u8>>, String> {
    'snapshot: for _ in 0..4 {
        let mut wanted: u32 = 0x00FF_FFFF;
        let mut pcrs = BTreeMap::new();
        let mut counter = None;
        while wanted != 0 {
            let mut c = Command::new("TPM2_PCR_Read", ST_NO_SESSIONS, wire::CC_PCR_READ);
            c.u32(1).u16(wire::ALG_SHA384).u8(3);
            c.bytes(&wanted.to_le_bytes()[..3]);
            let bytes = c.finish().map_err(|e| e.to_string())?;
            let response = swtpm.transact(&bytes).map_err(|e: TransportError| e.0)?;
            let mut p = parse_response(c.name(), &response, 0)
                .map_err(|e| e.to_string())?
                .params;
            let update = p.u32().map_err(|e| e.to_string())?;
            if counter.is_some_and(|c| c != update) {
                continue 'snapshot;
            }
            counter = Some(update);
            let selections = p.u32().map_err(|e| e.to_string())?;
            let mut got: u32 = 0;
            for _ in 0..selections {
                let alg = p.u16().map_err(|e| e.to_string())?;
                let size = p.u8().map_err(|e| e.to_string())?;
                let select = p.take(usize::from(size)).map_err(|e| e.to_string())?;
                if alg == wire::ALG_SHA384 {
                    got = select
                        .iter()
                        .take(4)
                        .enumerate()
                        .fold(0, |acc, (i, b)| acc | (u32::from(*b) << (8 * i)));
                }
            }
            let count = p.u32().map_err(|e| e.to_string())?;
            let indexes: Vec<u32> = (0..24).filter(|i| got & (1 << i) != 0).collect();
            if indexes.is_empty() || count as usize != indexes.len() {
                return Err(format!(
                    "swtpm returned {count} SHA-384 digests for selection 0x{got:06x}: is the SHA-384 bank allocated?"
                ));
            }
            for i in indexes {
                let digest = p.tpm2b().map_err(|e| e.to_string())?;
                if digest.len() != 48 {
                    return Err(format!("PCR{i}: {} bytes, not 48", digest.len()));
                }
                pcrs.insert(i, digest.to_vec());
            }
            wanted &= !got;
        }
        return Ok(pcrs);
    }
    Err("the PCRs kept changing while they were read".into())
}

#[cfg(test)]
mod front_fixture;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
