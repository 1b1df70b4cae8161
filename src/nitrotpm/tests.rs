//! The emulator between zoa-init's own NitroTPM client (the code that runs in the image) and
//! a real swtpm: the document it gets must verify, chain to the emulator's root, and carry
//! the PCRs swtpm holds at that moment.

use super::swtpm::{extend_sha384, Stream, Swtpm};
use super::*;
use crate::attestation;
use nv::{NV_AUTHREAD, NV_AUTHWRITE};
use std::time::SystemTime;
use zoa_init::tpm2::marshal::Command;

fn emulator(swtpm: &Swtpm) -> Emulator<Stream> {
    let nsm = nsm::Nsm::new(
        ca::TestCa::new().unwrap(),
        "i-0123456789abcdef0-tpm0000000000000000".into(),
    );
    Emulator::new(swtpm.connect().expect("connect to swtpm"), nsm)
}

fn sha384(data: &[u8]) -> Vec<u8> {
    openssl::hash::hash(openssl::hash::MessageDigest::sha384(), data)
        .unwrap()
        .to_vec()
}

#[test]
fn zoa_init_gets_a_document_with_the_pcrs_swtpm_holds_now() {
    let swtpm = Swtpm::start().expect("swtpm");
    let mut emu = emulator(&swtpm);
    let root = emu.nsm().ca.root_der().unwrap();
    let spki = vec![0x30, 0x82, 0x01, 0x22, 0xAA];
    extend_sha384(&mut emu, 4, &[7; 48]).unwrap();

    let doc_bytes = zoa_init::tpm2::nsm::attestation_document(&mut emu, &spki)
        .expect("zoa-init's NSM request through the emulator");
    let signed = attestation::parse(&doc_bytes).unwrap();
    signed.verify_signature().unwrap();
    signed.verify_chain(&root, SystemTime::now()).unwrap();
    let d = &signed.document;
    assert_eq!(d.kind, attestation::Kind::NitroTpm);
    assert_eq!(d.public_key.as_deref(), Some(&spki[..]));
    assert_eq!((d.user_data.as_ref(), d.nonce.as_ref()), (None, None));
    assert_eq!(d.pcrs.len(), 24);
    // PCR4 is what the extend made of it, computed here independently; PCR5 untouched.
    let mut pcr4 = vec![0u8; 48];
    pcr4.extend_from_slice(&[7; 48]);
    assert_eq!(d.pcrs[&4], sha384(&pcr4));
    assert_eq!(d.pcrs[&5], vec![0; 48]);
    // PCRs 17-22 start as all ones (never reset at locality 0), as in EC2's documents.
    assert_eq!(d.pcrs[&17], vec![0xFF; 48]);
    // And all of them are what swtpm answers a plain PCR_Read passed through.
    let direct = read_sha384_pcrs(&mut emu).unwrap();
    assert_eq!(d.pcrs, direct);

    // A later document sees a later PCR value: read at the moment of the request.
    extend_sha384(&mut emu, 4, &[8; 48]).unwrap();
    let again = zoa_init::tpm2::nsm::attestation_document(&mut emu, &spki).unwrap();
    let again = attestation::parse(&again).unwrap().document;
    let mut next = d.pcrs[&4].clone();
    next.extend_from_slice(&[8; 48]);
    assert_eq!(again.pcrs[&4], sha384(&next));
    // The exchange left no index behind (zoa-init undefines it; the emulator forgets it).
    assert!(emu.nv.is_empty());
}

#[test]
fn the_large_index_is_emulated_and_guarded_by_its_password() {
    let swtpm = Swtpm::start().expect("swtpm");
    let mut emu = emulator(&swtpm);
    check_large_index(&mut Tpm::new(&mut emu));
    assert!(emu.nv.is_empty());
}

fn check_large_index(tpm: &mut Tpm<'_>) {
    assert_eq!(
        tpm.tpm_property(wire::PT_NV_INDEX_MAX).unwrap(),
        Some(u32::from(NV_INDEX_MAX))
    );
    let public = zoa_init::tpm2::NvPublic {
        index: 0x0100_0042,
        name_alg: wire::ALG_SHA256,
        attributes: NV_AUTHREAD | NV_AUTHWRITE,
        auth_policy: Vec::new(),
        data_size: 8192,
    };
    tpm.nv_define_space(b"", &public, b"pw").unwrap();
    // Listed by swtpm (the shadow), reported with its real size and no WRITTEN bit yet.
    assert!(tpm
        .handles(0x0100_0000, 0x01FF_FFFF)
        .unwrap()
        .contains(&0x0100_0042));
    assert_eq!(tpm.nv_read_public(0x0100_0042).unwrap(), public);
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    tpm.nv_write(0x0100_0042, b"pw", &data).unwrap();
    assert_eq!(tpm.nv_read(0x0100_0042, b"pw", 5000).unwrap(), data);
    let wrong = tpm.nv_read(0x0100_0042, b"nope", 10).unwrap_err();
    assert!(
        matches!(&wrong, zoa_init::tpm2::Tpm2Error::Tpm { rc, .. } if rc.0 == rc::AUTH_FAIL_SESSION_1),
        "{wrong}"
    );
    let beyond = tpm.nv_read(0x0100_0042, b"pw", 8193).unwrap_err();
    assert!(beyond.to_string().contains("0x"), "{beyond}");
    tpm.nv_undefine_space(b"", 0x0100_0042).unwrap();
    assert!(tpm.nv_read_public(0x0100_0042).is_err());
}

/// A hostile guest's commands (random bytes shaped like the commands the emulator reads
/// itself: the NSM request, NV define/read/write/read-public/undefine, GetCapability)
/// never make the emulator panic, and every answer is one whole response. The swtpm side
/// answers every forwarded command with a bare success. The fuzz target `nitrotpm` runs the
/// same property on arbitrary streams.
#[test]
fn hostile_guest_commands_get_responses_not_panics() {
    struct Bare;
    impl Transport for Bare {
        fn transact(&mut self, _: &[u8]) -> Result<Vec<u8>, TransportError> {
            Ok(vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0])
        }
    }
    let nsm = nsm::Nsm::new(ca::TestCa::new().unwrap(), "i-0-tpm0".into());
    let mut emu = Emulator::new(Bare, nsm);
    let codes = [
        CC_VENDOR_AWS_NSM_REQUEST,
        wire::CC_NV_DEFINE_SPACE,
        wire::CC_NV_WRITE,
        wire::CC_NV_READ,
        wire::CC_NV_READ_PUBLIC,
        wire::CC_NV_UNDEFINE_SPACE,
        wire::CC_NV_UNDEFINE_SPACE_SPECIAL,
        wire::CC_GET_CAPABILITY,
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..3000 {
        let code = codes[(next() % codes.len() as u64) as usize];
        let tag: u16 = if next() % 2 == 0 { 0x8001 } else { 0x8002 };
        let body_len = (next() % 96) as usize;
        let mut body: Vec<u8> = (0..body_len).map(|_| next() as u8).collect();
        // Often a handle in the NV range, and sometimes a well-formed define of a large
        // index, so the virtual-index paths are reached.
        if body.len() >= 4 && next() % 2 == 0 {
            body[..4].copy_from_slice(&0x0100_0007u32.to_be_bytes());
        }
        if round % 10 == 0 {
            let mut c = Command::new(
                "define",
                zoa_init::tpm2::marshal::ST_SESSIONS,
                wire::CC_NV_DEFINE_SPACE,
            );
            c.u32(0x4000_0001).password_session(b"").unwrap();
            c.tpm2b(b"pw").unwrap();
            let mut public = Vec::new();
            public.extend_from_slice(&0x0100_0007u32.to_be_bytes());
            public.extend_from_slice(&wire::ALG_SHA256.to_be_bytes());
            public.extend_from_slice(&(NV_AUTHREAD | NV_AUTHWRITE).to_be_bytes());
            public.extend_from_slice(&[0, 0]);
            public.extend_from_slice(&((next() % 9000) as u16).to_be_bytes());
            c.tpm2b(&public).unwrap();
            let r = emu.handle(&c.finish().unwrap());
            assert_eq!(
                r.len(),
                u32::from_be_bytes([r[2], r[3], r[4], r[5]]) as usize
            );
            continue;
        }
        let mut command = Vec::new();
        command.extend_from_slice(&tag.to_be_bytes());
        let size = if next() % 8 == 0 {
            next() as u32
        } else {
            (10 + body.len()) as u32
        };
        command.extend_from_slice(&size.to_be_bytes());
        command.extend_from_slice(&code.to_be_bytes());
        command.extend_from_slice(&body);
        let r = emu.handle(&command);
        assert!(r.len() >= 10, "round {round}: {r:02x?}");
        assert_eq!(
            r.len(),
            u32::from_be_bytes([r[2], r[3], r[4], r[5]]) as usize,
            "round {round}"
        );
    }
}
