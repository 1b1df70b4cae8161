//! zoa-init's unseal network path on the host: IMDSv2 credentials, kms:Decrypt with a
//! `Recipient`, the CMS answer and the `zoa seal` envelope.
//!
//! KMS is moto's server; envelopes are made by the real `zoa seal` against it. IMDS is a
//! stand-in written here (there is no emulator of it to run): an HTTP server that behaves as
//! IMDSv2 with `HttpTokens=required` does, refusing a GET without the session token.
//!
//! moto ignores `Recipient` and answers `Plaintext`, which zoa-init must refuse: that is the
//! behaviour checked against moto itself. For the success path a FaultProxy in front of moto
//! answers Decrypt as KMS does for an attested caller, with `CiphertextForRecipient` made by
//! `openssl cms` over the data key of the real envelope (which moto releases to a plain
//! Decrypt).

use crate::common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use base64::Engine;
use common::faults::{Fault, FaultProxy, Matcher};
use common::imds::{ImdsContent, ImdsStandIn, ACCESS_KEY_ID, IMDS_TOKEN, ROLE, SESSION_TOKEN};
use common::moto::{http, Moto};
use zoa_init::unseal::{unseal_envelopes, Envelope, RecipientKey, Secret, UnsealError};

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

const ATTESTATION_DOC: &[u8] = b"\x84\x44\xa1\x01\x38\x22stand-in NitroTPM attestation document";

/// A stand-in serving `region` and the role.
fn imds(region: &str) -> ImdsStandIn {
    ImdsStandIn::start(ImdsContent {
        region: region.to_string(),
        role: Some(ROLE.to_string()),
        ..Default::default()
    })
}

/// The stand-in's log is the IMDSv2 sequence: one token PUT with a TTL, then GETs of the
/// region, the role listing and the role's credentials, each with that token.
fn assert_imdsv2_sequence(stand_in: &ImdsStandIn) {
    let log = stand_in.requests();
    let summary: Vec<String> = log
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    assert_eq!(
        summary,
        [
            "PUT /latest/api/token 200",
            "GET /latest/meta-data/placement/region 200",
            "GET /latest/meta-data/iam/security-credentials/ 200",
            &format!("GET /latest/meta-data/iam/security-credentials/{ROLE} 200"),
        ],
        "{log:#?}"
    );
    assert_eq!(log[0].ttl.as_deref(), Some("300"), "{log:#?}");
    assert!(
        log[1..]
            .iter()
            .all(|r| r.token.as_deref() == Some(IMDS_TOKEN)),
        "{log:#?}"
    );
}

// --- KMS, envelopes, recipient ---------------------------------------------------------------

fn create_key(moto: &Moto, alias: &str) -> String {
    let r = moto.json("kms", "TrentService.CreateKey", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id = v["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let body = serde_json::json!({"AliasName": alias, "TargetKeyId": id});
    let r = moto.json("kms", "TrentService.CreateAlias", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    v["KeyMetadata"]["Arn"].as_str().unwrap().to_owned()
}

/// The data key of an envelope, from a plain Decrypt (moto releases it to anyone).
fn data_key(moto: &Moto, json: &[u8]) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    let body = serde_json::json!({
        "CiphertextBlob": v["encrypted_data_key"],
        "EncryptionContext": v["encryption_context"],
    });
    let r = moto.json("kms", "TrentService.Decrypt", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    b64().decode(v["Plaintext"].as_str().unwrap()).unwrap()
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command runs (.ci/deps installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The instance's ephemeral key, made by openssl (RSA key generation unoptimised is slow),
/// and a self-signed certificate for it, which `openssl cms -recip` needs.
struct Recipient {
    dir: tempfile::TempDir,
    key: RecipientKey,
    cert: PathBuf,
}

impl Recipient {
    fn new() -> Recipient {
        let dir = tempfile::tempdir().unwrap();
        let key_pem = dir.path().join("key.pem");
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            path(&key_pem),
        ]);
        let der = openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            path(&key_pem),
            "-outform",
            "DER",
        ]);
        let key = RecipientKey::from_pkcs8_der(&der).unwrap();
        let cert = dir.path().join("cert.pem");
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            path(&key_pem),
            "-subj",
            "/CN=zoa-unseal-test",
            "-days",
            "1",
            "-out",
            path(&cert),
        ]);
        Recipient { dir, key, cert }
    }

    /// `CiphertextForRecipient` as KMS makes it: CMS EnvelopedData, RSAES-OAEP-SHA-256 key
    /// transport to our key, AES-256-CBC content.
    fn ciphertext_for_recipient(&self, data_key: &[u8]) -> Vec<u8> {
        let input = self.dir.path().join("data-key");
        std::fs::write(&input, data_key).unwrap();
        openssl(&[
            "cms",
            "-encrypt",
            "-recip",
            path(&self.cert),
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
            "-aes-256-cbc",
            "-binary",
            "-outform",
            "DER",
            "-in",
            path(&input),
        ])
    }
}

/// The Decrypt answer of KMS to an attested caller (the documented response shape).
fn attested_answer(key_arn: &str, cms: &[u8]) -> Fault {
    Fault::Answer(
        serde_json::json!({
            "KeyId": key_arn,
            "CiphertextForRecipient": b64().encode(cms),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        })
        .to_string(),
    )
}

/// A moto with the deployment's key (`alias/zoa/demo`) and a sealed secret.
struct Lab {
    moto: Moto,
    dir: tempfile::TempDir,
    key_arn: String,
}

impl Lab {
    fn new() -> Lab {
        let moto = Moto::start();
        let key_arn = create_key(&moto, "alias/zoa/demo");
        Lab {
            moto,
            dir: tempfile::tempdir().unwrap(),
            key_arn,
        }
    }

    fn seal(&self, name: &str, secret: &[u8]) -> Vec<u8> {
        common::kms::zoa_seal(&self.moto, self.dir.path(), name, secret)
    }
}

fn unseal(
    imds: &ImdsStandIn,
    kms: &str,
    key: &RecipientKey,
    envelopes: &[Envelope],
) -> Result<Vec<Secret>, UnsealError> {
    unseal_envelopes(
        Some(&imds.endpoint()),
        Some(kms),
        ATTESTATION_DOC,
        key,
        envelopes,
    )
}

/// The error inside `UnsealError::Secret` for `name`.
fn for_secret(err: UnsealError, name: &str) -> UnsealError {
    match err {
        UnsealError::Secret { name: n, error } if n == name => *error,
        other => panic!("expected an error for secret {name:?}, got: {other}"),
    }
}

// --- tests -----------------------------------------------------------------------------------

/// Against moto itself: credentials and region come from IMDSv2, the Decrypt that reaches
/// moto carries our attestation document as Recipient with RSAES_OAEP_SHA_256, and moto's
/// Plaintext answer is refused.
#[test]
fn kms_gets_the_recipient_and_a_plaintext_answer_is_refused() {
    let lab = Lab::new();
    let sealed = lab.seal("model-key", b"the model key");
    let envelope = Envelope::parse(&sealed).unwrap();
    let recipient = Recipient::new();
    let stand_in = imds("us-east-1");

    lab.moto.start_recording();
    let err = unseal(
        &stand_in,
        &lab.moto.endpoint(),
        &recipient.key,
        std::slice::from_ref(&envelope),
    )
    .unwrap_err();
    let line = err.to_string();
    eprintln!("{line}");
    assert!(
        matches!(
            for_secret(err, "model-key"),
            UnsealError::KmsPlaintext { .. }
        ),
        "{line}"
    );
    assert!(
        line.starts_with("secret \"model-key\": kms:Decrypt answered with Plaintext")
            && line.contains("attestation was not honoured; refused"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
    assert_imdsv2_sequence(&stand_in);

    let calls = lab.moto.calls_of("kms:Decrypt");
    assert_eq!(calls.len(), 1, "{:?}", lab.moto.operations());
    let call = &calls[0];
    let sent: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
    assert_eq!(
        call.param("CiphertextBlob").as_deref(),
        sent["encrypted_data_key"].as_str()
    );
    assert_eq!(call.param("KeyId").as_deref(), Some(lab.key_arn.as_str()));
    assert_eq!(
        call.json_at("/EncryptionContext"),
        Some(&sent["encryption_context"])
    );
    assert_eq!(
        call.json_at("/Recipient/KeyEncryptionAlgorithm")
            .and_then(|v| v.as_str()),
        Some("RSAES_OAEP_SHA_256")
    );
    let doc = call
        .json_at("/Recipient/AttestationDocument")
        .and_then(|v| v.as_str())
        .expect("Recipient.AttestationDocument sent");
    assert_eq!(b64().decode(doc).unwrap(), ATTESTATION_DOC);
    // Signed with the stand-in's role credentials, for the region IMDS named.
    let auth = call.header("authorization").unwrap_or_default();
    assert!(
        auth.contains(&format!("Credential={ACCESS_KEY_ID}/"))
            && auth.contains("/us-east-1/kms/aws4_request"),
        "{auth}"
    );
    assert_eq!(call.header("x-amz-security-token"), Some(SESSION_TOKEN));
}

/// The success path: KMS's attested answer (through the proxy) opens with our key, and the
/// real `zoa seal` envelopes open byte-identical, in order.
#[test]
fn real_envelopes_open_through_ciphertext_for_recipient() {
    let lab = Lab::new();
    let first: Vec<u8> = (0u8..=255).chain(b"model key".iter().copied()).collect();
    let second = b"an API token".to_vec();
    let sealed = [
        lab.seal("model-key", &first),
        lab.seal("api-token", &second),
    ];
    let envelopes: Vec<Envelope> = sealed.iter().map(|s| Envelope::parse(s).unwrap()).collect();
    let recipient = Recipient::new();
    let proxy = FaultProxy::start(&lab.moto.endpoint());
    // moto cannot answer for a Recipient; the proxy answers as KMS would (the one stand-in
    // answer of this file), over each envelope's real data key.
    for (n, s) in sealed.iter().enumerate() {
        let cms = recipient.ciphertext_for_recipient(&data_key(&lab.moto, s));
        proxy.fail_nth(
            Matcher::operation("kms:Decrypt"),
            n + 1,
            1,
            attested_answer(&lab.key_arn, &cms),
        );
    }
    let stand_in = imds("us-east-1");

    let secrets = unseal(&stand_in, &proxy.endpoint(), &recipient.key, &envelopes).unwrap();
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets[0].name(), "model-key");
    assert_eq!(secrets[0].expose(), first.as_slice());
    assert_eq!(secrets[1].name(), "api-token");
    assert_eq!(secrets[1].expose(), second.as_slice());
    assert!(!format!("{secrets:?}").contains("API token"));
    assert_eq!(proxy.count("kms:Decrypt"), 2);
    assert_imdsv2_sequence(&stand_in);
}

/// KMS's own refusals, as moto makes them: the data key under another context, or asked of
/// another key. The line names the operation, the code and the request id.
#[test]
fn an_envelope_for_another_context_or_key_is_refused_by_kms() {
    let lab = Lab::new();
    let other_key = create_key(&lab.moto, "alias/zoa/other");
    let sealed = lab.seal("model-key", b"the model key");
    let recipient = Recipient::new();
    let stand_in = imds("us-east-1");

    let mut moved: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
    moved["encryption_context"]["zoa:deployment"] = "other".into();
    let mut rekeyed: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
    rekeyed["key_arn"] = other_key.into();
    for (case, json, code) in [
        ("another context", moved, "InvalidCiphertextException"),
        // AWS answers IncorrectKeyException; moto 5.2.5 answers AccessDeniedException.
        ("another key", rekeyed, "AccessDeniedException"),
    ] {
        let envelope = Envelope::parse(&serde_json::to_vec(&json).unwrap()).unwrap();
        let err = unseal(&stand_in, &lab.moto.endpoint(), &recipient.key, &[envelope]).unwrap_err();
        let line = err.to_string();
        eprintln!("{case}: {line}");
        match for_secret(err, "model-key") {
            UnsealError::Kms {
                code: c,
                request_id,
                ..
            } => {
                assert_eq!(c, code, "{case}: {line}");
                let id = request_id.unwrap_or_else(|| panic!("{case}: no request id: {line}"));
                assert!(line.ends_with(&format!("(request id {id})")), "{line}");
            }
            other => panic!("{case}: {other}"),
        }
        assert!(
            line.starts_with("secret \"model-key\": kms:Decrypt of a data key under arn:aws:kms:"),
            "{line}"
        );
    }
}

/// A tampered GCM ciphertext is refused after KMS released the (right) data key; a wrong
/// format is refused before any call.
#[test]
fn tampered_and_foreign_envelopes_are_refused() {
    let lab = Lab::new();
    let sealed = lab.seal("model-key", b"the model key");
    let recipient = Recipient::new();
    let proxy = FaultProxy::start(&lab.moto.endpoint());
    let cms = recipient.ciphertext_for_recipient(&data_key(&lab.moto, &sealed));
    proxy.fail(
        Matcher::operation("kms:Decrypt"),
        1,
        attested_answer(&lab.key_arn, &cms),
    );
    let stand_in = imds("us-east-1");

    let mut tampered: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
    let mut ct = b64()
        .decode(tampered["ciphertext"].as_str().unwrap())
        .unwrap();
    ct[0] ^= 0x01;
    tampered["ciphertext"] = b64().encode(ct).into();
    let envelope = Envelope::parse(&serde_json::to_vec(&tampered).unwrap()).unwrap();
    let err = unseal(&stand_in, &proxy.endpoint(), &recipient.key, &[envelope]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret \"model-key\": sealed envelope does not open: AES-256-GCM authentication \
         failed (a data key for another envelope, or the envelope was altered)"
    );
    assert_eq!(
        for_secret(err, "model-key"),
        UnsealError::EnvelopeAuthentication
    );
    assert_eq!(proxy.count("kms:Decrypt"), 1);

    let mut foreign: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
    foreign["format"] = "zoa-sealed/2".into();
    let err = Envelope::parse(&serde_json::to_vec(&foreign).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sealed envelope: format is \"zoa-sealed/2\"; this zoa-init opens \"zoa-sealed/1\""
    );
}

/// An instance without an instance profile: IMDS lists no role, and KMS is never called.
#[test]
fn imds_without_a_role_is_refused_before_kms() {
    let lab = Lab::new();
    let envelope = Envelope::parse(&lab.seal("model-key", b"s")).unwrap();
    let recipient = Recipient::new();
    let stand_in = ImdsStandIn::start(ImdsContent {
        region: "us-east-1".to_string(),
        role: None,
        ..Default::default()
    });
    lab.moto.start_recording();
    let err = unseal(&stand_in, &lab.moto.endpoint(), &recipient.key, &[envelope]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "instance metadata at {} lists no IAM role: launch the instance with the \
             deployment's instance profile",
            stand_in.endpoint()
        )
    );
    assert!(matches!(err, UnsealError::ImdsNoRole { .. }));
    assert!(
        lab.moto.operations().is_empty(),
        "{:?}",
        lab.moto.operations()
    );
}

/// The stand-in is strict: a GET without the session token is refused, and so is a token
/// PUT without a TTL. (What the tests above prove rests on this.)
#[test]
fn the_imds_stand_in_requires_imdsv2() {
    let stand_in = imds("us-east-1");
    let get = http::request(
        stand_in.addr(),
        "GET",
        "/latest/meta-data/placement/region",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(get.status, 401);
    let put = http::request(stand_in.addr(), "PUT", "/latest/api/token", &[], b"").unwrap();
    assert_eq!(put.status, 400);
    let put = http::request(
        stand_in.addr(),
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        b"",
    )
    .unwrap();
    assert_eq!((put.status, put.text()), (200, IMDS_TOKEN.to_string()));
}

/// IMDS that never answers, and IMDS with nothing listening: a bounded wait, then one line
/// naming IMDS, the step and the endpoint.
#[test]
fn unreachable_imds_fails_in_bounded_time() {
    let recipient = Recipient::new();
    let envelope = Envelope::parse(&fixture_envelope()).unwrap();
    // Accepts connections (the kernel does, from the backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_endpoint = format!("http://{}", silent.local_addr().unwrap());
    // Nothing listens here once the listener is dropped.
    let closed_endpoint = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for endpoint in [&silent_endpoint, &closed_endpoint] {
        let started = Instant::now();
        let err = unseal_envelopes(
            Some(endpoint),
            Some("http://127.0.0.1:9"),
            ATTESTATION_DOC,
            &recipient.key,
            std::slice::from_ref(&envelope),
        )
        .unwrap_err();
        let took = started.elapsed();
        let line = err.to_string();
        assert!(
            took < Duration::from_secs(20),
            "{endpoint}: {took:?}: {line}"
        );
        assert!(
            line.starts_with(&format!("instance metadata (IMDSv2) region: {endpoint}: ")),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
        eprintln!("{endpoint}: {took:?}: {line}");
    }
    drop(silent);
}

/// KMS over HTTPS with the embedded roots: a server whose certificate chains to a CA that is
/// not among them is refused during the handshake (`openssl s_server` with a leaf for
/// 127.0.0.1 from a test CA).
#[test]
fn kms_over_tls_refuses_a_certificate_from_an_unknown_ca() {
    let recipient = Recipient::new();
    let envelope = Envelope::parse(&fixture_envelope()).unwrap();
    let stand_in = imds("us-east-1");
    let server = TlsServer::start();
    let err = unseal(
        &stand_in,
        &format!("https://127.0.0.1:{}", server.port),
        &recipient.key,
        &[envelope],
    )
    .unwrap_err();
    let line = err.to_string();
    eprintln!("{line}");
    assert!(
        line.starts_with("secret \"model-key\": kms:Decrypt of a data key under")
            && line.contains("invalid peer certificate: UnknownIssuer"),
        "{line}"
    );
}

/// No envelopes: nothing to ask, so no call at all.
#[test]
fn no_envelopes_make_no_calls() {
    let recipient = Recipient::new();
    let stand_in = imds("us-east-1");
    let secrets = unseal(&stand_in, "http://127.0.0.1:9", &recipient.key, &[]).unwrap();
    assert!(secrets.is_empty());
    assert!(stand_in.requests().is_empty());
}

/// A well-formed envelope for tests that never reach KMS's answer.
fn fixture_envelope() -> Vec<u8> {
    serde_json::json!({
        "format": "zoa-sealed/1",
        "key_arn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "encryption_context": {"zoa:deployment": "demo", "zoa:secret": "model-key"},
        "algorithm": "AES-256-GCM",
        "encrypted_data_key": b64().encode([1u8; 184]),
        "nonce": b64().encode([2u8; 12]),
        "ciphertext": b64().encode([3u8; 32]),
    })
    .to_string()
    .into_bytes()
}

/// `openssl s_server` on a free local port, serving a certificate for 127.0.0.1 issued by a
/// CA made here.
struct TlsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        let p256 = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-new",
            "-subj",
            "/CN=zoa test CA",
            "-days",
            "1",
        ];
        ca.extend(p256);
        let (ca_key, ca_cert) = (file("ca.key"), file("ca.pem"));
        ca.extend(["-keyout", &ca_key, "-out", &ca_cert]);
        openssl(&ca);
        let mut csr = vec!["req", "-new", "-subj", "/CN=127.0.0.1"];
        csr.extend(p256);
        let (leaf_key, leaf_csr, leaf_cert) =
            (file("leaf.key"), file("leaf.csr"), file("leaf.pem"));
        csr.extend(["-keyout", &leaf_key, "-out", &leaf_csr]);
        openssl(&csr);
        let ext = file("leaf.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &leaf_csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &leaf_cert,
        ]);

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "-cert",
                &leaf_cert,
                "-key",
                &leaf_key,
                "-cert_chain",
                &ca_cert,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server runs");
        let server = TlsServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
