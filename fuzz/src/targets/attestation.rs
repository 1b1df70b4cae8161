//! Attestation documents come from the network (`zoa attest`) and from guests (the KMS
//! stand-in, the emulator's own checks): the reader must refuse garbage cleanly, and what
//! it accepts must survive a signature check without panicking. Round trip: a parsed
//! document written again by `sign` reads back to the same payload.
use std::sync::OnceLock;

fn key() -> &'static openssl::pkey::PKey<openssl::pkey::Private> {
    static KEY: OnceLock<openssl::pkey::PKey<openssl::pkey::Private>> = OnceLock::new();
    KEY.get_or_init(|| {
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap();
        openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap()
    })
}

pub fn run(data: &[u8]) {
    let Ok(signed) = zoa::attestation::parse(data) else {
        return;
    };
    let _ = signed.verify_signature();
    let written = zoa::attestation::sign(&signed.document, key()).expect("sign a parsed document");
    let again = zoa::attestation::parse(&written).expect("what sign writes parses");
    assert_eq!(again.document, signed.document);
}
