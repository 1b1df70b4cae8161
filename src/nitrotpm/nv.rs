//! NV indexes larger than swtpm holds. NitroTPM takes the 8 KiB index AWS's
//! `nitro-tpm-attest` defines for the NSM exchange; libtpms (swtpm) takes at most 2 KiB
//! (`TPM_PT_NV_INDEX_MAX`), less than an attestation document. So the emulator keeps the
//! contents of such an index itself, and swtpm a one-byte shadow of it under the same handle,
//! attributes and authValue: swtpm still checks the owner authorization of the define and
//! the undefine, reserves the handle and lists it, and the emulator answers the reads,
//! writes and public-area reads of the index.
//!
//! Only what the NSM exchange needs is emulated: an ordinary index, read and written under
//! its own authValue with a password session (what zoa-init and vaportpm use). Any other
//! authorization of these indexes is answered `TPM_RC_AUTH_UNAVAILABLE` and logged.

use openssl::hash::{hash, MessageDigest};
use zoa_init::tpm2::marshal::{Command, Reader, ST_SESSIONS};

use super::wire::{self, rc, GuestCommand, PasswordSession};

/// TPMA_NV_AUTHWRITE and TPMA_NV_AUTHREAD (Part 2, Table 204).
pub const NV_AUTHWRITE: u32 = 1 << 2;
pub const NV_AUTHREAD: u32 = 1 << 18;

/// An index the emulator holds.
#[derive(Debug, Clone)]
pub struct VirtualIndex {
    pub index: u32,
    pub name_alg: u16,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub auth_value: Vec<u8>,
    pub data: Vec<u8>,
    pub written: bool,
}

/// TPMS_NV_PUBLIC as a define command carries it.
#[derive(Debug, Clone)]
pub struct DefineRequest<'a> {
    pub auth_value: &'a [u8],
    pub index: u32,
    pub name_alg: u16,
    pub attributes: u32,
    pub auth_policy: &'a [u8],
    pub data_size: u16,
}

/// The parameters of TPM2_NV_DefineSpace: TPM2B_AUTH, then TPM2B_NV_PUBLIC.
pub fn parse_define(params: &[u8]) -> Option<DefineRequest<'_>> {
    let mut r = Reader::over("TPM2_NV_DefineSpace", params);
    let auth_value = r.tpm2b().ok()?;
    let public = r.tpm2b().ok()?;
    r.finish().ok()?;
    let mut p = Reader::over("TPMS_NV_PUBLIC", public);
    let request = DefineRequest {
        auth_value,
        index: p.u32().ok()?,
        name_alg: p.u16().ok()?,
        attributes: p.u32().ok()?,
        auth_policy: p.tpm2b().ok()?,
        data_size: p.u16().ok()?,
    };
    p.finish().ok()?;
    Some(request)
}

/// The define command for swtpm's one-byte shadow of `request`: the guest's handle and
/// authorization area, the same public area with a data size of 1.
pub fn shadow_define(command: &GuestCommand<'_>, request: &DefineRequest<'_>) -> Option<Vec<u8>> {
    let public = nv_public(
        request.index,
        request.name_alg,
        request.attributes,
        request.auth_policy,
        1,
    );
    let mut c = Command::new("TPM2_NV_DefineSpace", ST_SESSIONS, command.code);
    for h in &command.handles {
        c.u32(*h);
    }
    c.u32(u32::try_from(command.auth_area.len()).ok()?)
        .bytes(command.auth_area);
    c.tpm2b(request.auth_value).ok()?.tpm2b(&public).ok()?;
    c.finish().ok()
}

/// TPMS_NV_PUBLIC: index, nameAlg, attributes, authPolicy (TPM2B), dataSize.
fn nv_public(index: u32, name_alg: u16, attributes: u32, auth_policy: &[u8], size: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&name_alg.to_be_bytes());
    out.extend_from_slice(&attributes.to_be_bytes());
    wire::put_tpm2b(&mut out, auth_policy);
    out.extend_from_slice(&size.to_be_bytes());
    out
}

impl VirtualIndex {
    pub fn new(request: &DefineRequest<'_>) -> VirtualIndex {
        VirtualIndex {
            index: request.index,
            name_alg: request.name_alg,
            attributes: request.attributes,
            auth_policy: request.auth_policy.to_vec(),
            auth_value: request.auth_value.to_vec(),
            data: vec![0; usize::from(request.data_size)],
            written: false,
        }
    }

    /// TPMS_NV_PUBLIC as the TPM reports it (TPMA_NV_WRITTEN once written).
    pub fn public_area(&self) -> Vec<u8> {
        let written = if self.written { wire::NV_WRITTEN } else { 0 };
        nv_public(
            self.index,
            self.name_alg,
            self.attributes | written,
            &self.auth_policy,
            self.data.len() as u16,
        )
    }

    /// The index's Name: nameAlg, then the nameAlg digest of the public area (Part 1, §16).
    pub fn name(&self) -> Option<Vec<u8>> {
        let md = match self.name_alg {
            wire::ALG_SHA256 => MessageDigest::sha256(),
            wire::ALG_SHA384 => MessageDigest::sha384(),
            wire::ALG_SHA512 => MessageDigest::sha512(),
            _ => return None,
        };
        let digest = hash(md, &self.public_area()).ok()?;
        let mut name = self.name_alg.to_be_bytes().to_vec();
        name.extend_from_slice(&digest);
        Some(name)
    }

    /// Checks a read or write of this index: by the index itself (`needed`: AUTHREAD or
    /// AUTHWRITE), with a password session holding its authValue. Returns the session, or
    /// the response code to answer.
    pub fn authorize<'a>(
        &self,
        command: &GuestCommand<'a>,
        needed: u32,
    ) -> Result<PasswordSession<'a>, u32> {
        let Some(session) = command.session else {
            log::warn!(
                "emulated NitroTPM: NV index 0x{:08x} is held by the emulator, which takes only password authorization",
                self.index
            );
            return Err(rc::AUTH_UNAVAILABLE);
        };
        if command.handles.first() != Some(&self.index) || self.attributes & needed == 0 {
            return Err(rc::NV_AUTHORIZATION);
        }
        if !wire::password_matches(session.password, &self.auth_value) {
            return Err(rc::AUTH_FAIL_SESSION_1);
        }
        Ok(session)
    }

    /// TPM2_NV_Write's parameters: TPM2B data, u16 offset.
    pub fn write(&mut self, params: &[u8]) -> Result<(), u32> {
        let mut r = Reader::over("TPM2_NV_Write", params);
        let data = r.tpm2b().map_err(|_| rc::SIZE_PARAMETER_1)?;
        let offset = usize::from(r.u16().map_err(|_| rc::SIZE_PARAMETER_1)?);
        let end = offset + data.len();
        if end > self.data.len() {
            return Err(rc::NV_RANGE);
        }
        self.data[offset..end].copy_from_slice(data);
        self.written = true;
        Ok(())
    }

    /// TPM2_NV_Read's parameters: u16 size, u16 offset; returns the bytes.
    pub fn read(&self, params: &[u8]) -> Result<&[u8], u32> {
        let mut r = Reader::over("TPM2_NV_Read", params);
        let size = usize::from(r.u16().map_err(|_| rc::SIZE_PARAMETER_1)?);
        let offset = usize::from(r.u16().map_err(|_| rc::SIZE_PARAMETER_1)?);
        if !self.written {
            return Err(rc::NV_UNINITIALIZED);
        }
        self.data.get(offset..offset + size).ok_or(rc::NV_RANGE)
    }

    /// Replaces the contents from offset 0 (the NSM's answer).
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), u32> {
        let target = self.data.get_mut(..bytes.len()).ok_or(rc::NV_RANGE)?;
        target.copy_from_slice(bytes);
        self.written = true;
        Ok(())
    }
}
