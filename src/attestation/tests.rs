//! Against the real NitroTPM and Nitro Enclave documents in `testdata/` (an independent source: EC2 made
//! them), and round trips of what [`sign`] writes.

use super::*;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;

fn real(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/attestation/testdata")
        .join(name);
    hex::decode(std::fs::read_to_string(path).unwrap().trim()).unwrap()
}

const REAL: [&str; 2] = [
    "nitrotpm-vaportpm-21a610c.hex",
    "nitrotpm-vaportpm-5ad2647.hex",
];

const ENCLAVE: &str = "enclave-eternis-0de6377.hex";

fn sha256_hex(b: &[u8]) -> String {
    crate::digest::sha256_bytes(b)
}

#[test]
fn real_nitrotpm_documents_parse_verify_and_chain_to_the_aws_root() {
    for name in REAL {
        let bytes = real(name);
        let signed = parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = &signed.document;
        assert_eq!(d.kind, Kind::NitroTpm, "{name}");
        assert!(
            d.module_id.starts_with("i-") && d.module_id.ends_with("-tpm0000000000000000"),
            "{name}: {}",
            d.module_id
        );
        assert_eq!(d.pcrs.len(), 24, "{name}");
        assert!(d.pcrs.values().all(|p| p.len() == 48), "{name}");
        // PCRs 17-22 of a NitroTPM are all 0xFF (locality 4 PCRs never reset), 11-16 zero.
        assert_eq!(d.pcrs[&17], vec![0xFF; 48], "{name}");
        assert_eq!(d.pcrs[&11], vec![0; 48], "{name}");
        assert_eq!(d.cabundle.len(), 4, "{name}");
        assert_eq!(
            sha256_hex(&d.cabundle[0]),
            AWS_NITRO_ROOT_G1_SHA256,
            "{name}"
        );
        assert!(d.nonce.is_some() && d.user_data.is_none(), "{name}");
        signed
            .verify_signature()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        signed
            .verify_chain(&d.cabundle[0], d.timestamp())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // Three hours and a minute later the leaf has expired.
        let later = d.timestamp() + Duration::from_secs(3 * 3600 + 60);
        assert!(matches!(
            signed.verify_chain(&d.cabundle[0], later),
            Err(AttestationError::Expired(_))
        ));
    }
}

/// A real Nitro Enclave document (`pcrs`, 16 of them; a debug-mode enclave, so PCR0-2
/// are zero): recognised as such, signed, and chained to the same AWS root.
#[test]
fn a_real_nitro_enclave_document_is_recognised_and_verified() {
    use super::check::{check, Expectation, Verdict};
    let bytes = real(ENCLAVE);
    let signed = parse(&bytes).unwrap();
    let d = &signed.document;
    assert_eq!(d.kind, Kind::Enclave);
    assert_eq!(d.module_id, "i-0bbf1bfe232b8c2ce-enc0191ba35c9d1b77a");
    assert_eq!(d.pcrs.len(), 16);
    assert!(d.pcrs.values().all(|p| p.len() == 48));
    assert_eq!(d.pcrs[&0], vec![0; 48]);
    assert_ne!(d.pcrs[&3], vec![0; 48]);
    assert_eq!(sha256_hex(&d.cabundle[0]), AWS_NITRO_ROOT_G1_SHA256);
    signed.verify_signature().unwrap();
    signed.verify_chain(&d.cabundle[0], d.timestamp()).unwrap();

    let now = d.timestamp() + Duration::from_secs(30);
    let report = check(&bytes, &Expectation::default(), now);
    assert_eq!(report.verdict, Verdict::Ok, "{:#?}", report.checks);
    assert_eq!(report.kind, Some(Kind::Enclave));
    assert!(report.checks[0].detail.contains("Nitro Enclave"));
    let mut flipped = bytes.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 1;
    assert_eq!(
        check(&flipped, &Expectation::default(), now).verdict,
        Verdict::BadSignature
    );
}

#[test]
fn one_flipped_bit_anywhere_in_the_payload_or_signature_is_refused() {
    let bytes = real(REAL[0]);
    let signed = parse(&bytes).unwrap();
    // The payload starts after `84 44 a1013822 a0 59 LLLL`.
    for offset in [10, 100, 2000, bytes.len() - 50] {
        let mut b = bytes.clone();
        b[offset] ^= 0x01;
        let verdict = parse(&b).and_then(|s| s.verify_signature());
        assert!(verdict.is_err(), "bit flipped at {offset} accepted");
    }
    // Another root: the chain is refused.
    let other = self_signed_p384("other root");
    assert!(matches!(
        signed.verify_chain(&other.1.to_der().unwrap(), signed.document.timestamp()),
        Err(AttestationError::UntrustedChain(_))
    ));
}

#[test]
fn malformed_documents_get_clear_errors() {
    let cases: [(&[u8], &str); 5] = [
        (b"", "not CBOR"),
        (&[0x83, 0x40, 0xA0, 0x40], "4 items"),
        (&[0x84, 0x40, 0xA0, 0x40, 0x40], "protected header"),
        (
            &[0x84, 0x44, 0xA1, 0x01, 0x38, 0x26, 0xA0, 0x40, 0x40],
            "ES384 (-35)",
        ),
        (
            &[0x84, 0x44, 0xA1, 0x01, 0x38, 0x22, 0xA0, 0x40, 0x41, 0],
            "96 bytes",
        ),
    ];
    for (bytes, want) in cases {
        let e = parse(bytes).unwrap_err().to_string();
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
    assert!(parse(&vec![0; MAX_DOCUMENT_LEN + 1])
        .unwrap_err()
        .to_string()
        .contains("at most"));
}

fn self_signed_p384(cn: &str) -> (PKey<Private>, X509) {
    let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let mut bc = openssl::x509::extension::BasicConstraints::new();
    b.append_extension(bc.critical().ca().build().unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha384()).unwrap();
    (key, b.build())
}

#[test]
fn what_sign_writes_has_the_shape_of_a_real_document_and_reads_back() {
    let real_bytes = real(REAL[0]);
    let (key, cert) = self_signed_p384("leaf");
    let doc = Document {
        kind: Kind::NitroTpm,
        module_id: "i-0123456789abcdef0-tpm0000000000000000".into(),
        timestamp_ms: 1_770_017_308_379,
        pcrs: (0..24).map(|i| (i, vec![i as u8; 48])).collect(),
        certificate: cert.to_der().unwrap(),
        cabundle: vec![cert.to_der().unwrap()],
        public_key: Some(vec![0x30, 0x03, 0x02, 0x01, 0x05]),
        user_data: None,
        nonce: Some(b"fresh".to_vec()),
    };
    let bytes = sign(&doc, &key).unwrap();
    // The same framing bytes as EC2's: untagged array, ES384 header, empty unprotected map,
    // payload in a two-byte-length byte string, an indefinite-length map starting with
    // module_id.
    assert_eq!(bytes[..7], real_bytes[..7]);
    assert_eq!(bytes[7], 0x59);
    assert_eq!(
        bytes[10..12],
        real_bytes[10..12],
        "bf 69 (indefinite map, module_id)"
    );
    let signed = parse(&bytes).unwrap();
    assert_eq!(signed.document, doc);
    signed.verify_signature().unwrap();
    signed
        .verify_chain(&cert.to_der().unwrap(), SystemTime::now())
        .unwrap();
    // Signed by another key than the certificate's: refused.
    let (other, _) = self_signed_p384("other");
    let forged = parse(&sign(&doc, &other).unwrap()).unwrap();
    assert!(matches!(
        forged.verify_signature(),
        Err(AttestationError::BadSignature(_))
    ));
}

mod verdicts {
    use super::super::check::*;
    use super::*;

    fn pcr_hex(doc: &Document, i: u32) -> String {
        hex::encode(&doc.pcrs[&i])
    }

    #[test]
    fn the_embedded_root_is_the_published_aws_nitro_root() {
        assert_eq!(sha256_hex(AWS_NITRO_ROOT_G1), AWS_NITRO_ROOT_G1_SHA256);
    }

    /// A real EC2 document, with no --root: genuine against the embedded AWS root at its
    /// own time; with its PCR4 expected, the release is named; each expectation it does
    /// not meet gives its own verdict.
    #[test]
    fn real_documents_get_each_verdict() {
        let bytes = real(REAL[0]);
        let doc = parse(&bytes).unwrap().document;
        let now = doc.timestamp() + Duration::from_secs(30);
        let ok = check(&bytes, &Expectation::default(), now);
        assert_eq!(ok.verdict, Verdict::Ok, "{:#?}", ok.checks);
        assert_eq!(ok.kind, Some(Kind::NitroTpm));
        assert_eq!(ok.timestamp.as_deref(), Some("2026-02-02T07:28:28.379Z"));
        assert_eq!(ok.pcrs.len(), 24);

        let expect = |pcrs: &[(u32, String)]| Expectation {
            pcrs: vec![ExpectedPcrs {
                release: Some("demo 1.0".into()),
                pcrs: pcrs.iter().cloned().collect(),
            }],
            ..Default::default()
        };
        let right = expect(&[(4, pcr_hex(&doc, 4)), (12, pcr_hex(&doc, 12))]);
        let r = check(&bytes, &right, now);
        assert_eq!(r.verdict, Verdict::Ok);
        assert_eq!(r.release.unwrap().version, "1.0");
        let wrong = expect(&[(4, "00".repeat(48))]);
        let r = check(&bytes, &wrong, now);
        assert_eq!(r.verdict, Verdict::PcrMismatch);
        assert!(
            r.checks.last().unwrap().detail.contains("PCR4 is "),
            "{:?}",
            r.checks
        );

        let stale = Expectation {
            max_age: Some(Duration::from_secs(10)),
            ..Default::default()
        };
        assert_eq!(check(&bytes, &stale, now).verdict, Verdict::Stale);
        let nonce = Expectation {
            nonce: Some(b"another".to_vec()),
            ..Default::default()
        };
        assert_eq!(check(&bytes, &nonce, now).verdict, Verdict::NonceMismatch);
        let right_nonce = Expectation {
            nonce: doc.nonce.clone(),
            ..Default::default()
        };
        assert_eq!(check(&bytes, &right_nonce, now).verdict, Verdict::Ok);
        let key = Expectation {
            spki_sha384: Some([7; 48]),
            ..Default::default()
        };
        assert_eq!(check(&bytes, &key, now).verdict, Verdict::KeyMismatch);

        // A day later, at the verifier's clock: the leaf has expired.
        let later = Expectation {
            at: Some(doc.timestamp() + Duration::from_secs(86_400)),
            ..Default::default()
        };
        assert_eq!(check(&bytes, &later, now).verdict, Verdict::Expired);
        // Another root: not AWS's chain.
        let (_, other) = self_signed_p384("other");
        let rooted = Expectation {
            root: Some(other.to_der().unwrap()),
            ..Default::default()
        };
        assert_eq!(check(&bytes, &rooted, now).verdict, Verdict::UntrustedChain);
        let mut flipped = bytes.clone();
        flipped[3000] ^= 1;
        assert!(matches!(
            check(&flipped, &Expectation::default(), now).verdict,
            Verdict::BadSignature | Verdict::Malformed
        ));
        assert_eq!(
            check(b"junk", &Expectation::default(), now).verdict,
            Verdict::Malformed
        );
    }

    #[test]
    fn a_tls_key_binding_is_prefix_and_digest() {
        let (key, cert) = self_signed_p384("leaf");
        let spki = [9u8; 48];
        let mut user_data = TLS_BINDING_PREFIX.to_vec();
        user_data.extend_from_slice(&spki);
        let doc = Document {
            kind: Kind::NitroTpm,
            module_id: "i-0123456789abcdef0-tpm0000000000000000".into(),
            timestamp_ms: 1_770_017_308_379,
            pcrs: (0..24).map(|i| (i, vec![0; 48])).collect(),
            certificate: cert.to_der().unwrap(),
            cabundle: vec![cert.to_der().unwrap()],
            public_key: None,
            user_data: Some(user_data),
            nonce: None,
        };
        let bytes = sign(&doc, &key).unwrap();
        let expect = |spki| Expectation {
            root: Some(cert.to_der().unwrap()),
            at: Some(SystemTime::now()),
            spki_sha384: Some(spki),
            ..Default::default()
        };
        assert_eq!(
            check(&bytes, &expect(spki), SystemTime::now()).verdict,
            Verdict::Ok
        );
        assert_eq!(
            check(&bytes, &expect([8; 48]), SystemTime::now()).verdict,
            Verdict::KeyMismatch
        );
    }
}
