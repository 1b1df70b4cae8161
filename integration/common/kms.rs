//! A KMS that honours `Recipient`, for the tests: moto behind a [`FaultProxy`] whose
//! responder does what moto does not (it ignores `Recipient` and policies alike).
//!
//! For `Decrypt`, `GenerateDataKey` and `GenerateRandom`, as the KMS Developer Guide
//! describes them ("How AWS KMS supports NitroTPM", condition keys
//! `kms:RecipientAttestation:NitroTPMPCR<N>`):
//!
//! 1. a `Recipient` document must be a NitroTPM attestation document whose ES384
//!    signature verifies and whose chain leads to the trusted root (the emulated
//!    NitroTPM's, given at start) at the document's time, with `RSAES_OAEP_SHA_256`;
//!    otherwise `ValidationException`;
//! 2. the key's policy, read back from moto (`GetKeyPolicy`, never a copy), is evaluated
//!    (`iam.rs`) for the caller (from the request's SigV4 access key id), the action and
//!    the request context: `kms:RecipientAttestation:NitroTPMPCR<N>` for each PCR of the
//!    document, lower-case hex, only when a document came; a denial is
//!    `AccessDeniedException`;
//! 3. allowed with a document: moto does the cryptography without the `Recipient`, and the
//!    plaintext goes back only as `CiphertextForRecipient` (CMS EnvelopedData,
//!    RSAES-OAEP-SHA-256 to the document's `public_key`, subjectKeyIdentifier recipient,
//!    AES-256-CBC content, as `openssl cms` makes it), `Plaintext` left out; allowed without
//!    one: moto answers as it is.
//!
//! Every decision is logged (stderr and [`AttestingKms::decisions`]) with the PCRs compared.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};

use super::faults::{Fault, FaultProxy, Matcher};
use super::iam::{self, Verdict};
use super::moto::{http, Call, Moto};

/// One decision of the stand-in.
#[derive(Debug, Clone)]
pub struct Decision {
    pub operation: String,
    pub principal: String,
    pub key: Option<String>,
    /// PCR index → lower-case hex, from the verified document (empty without one).
    pub pcrs: BTreeMap<u32, String>,
    /// The policy's verdict, or why the request was refused before it.
    pub outcome: Result<Verdict, String>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(&self.outcome, Ok(v) if v.allowed())
    }
}

/// The stand-in: point clients at [`AttestingKms::endpoint`].
pub struct AttestingKms {
    pub proxy: FaultProxy,
    decisions: Arc<Mutex<Vec<Decision>>>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The roots documents may chain to.
#[derive(Clone, Debug)]
pub enum Trust {
    Der(Vec<u8>),
    /// PEM files read at each request: `zoa boot --attestation-root` writes one only when
    /// its guest starts, after the stand-in, and each boot makes its own test CA (so
    /// machines booted side by side are several roots). Files not written yet are skipped.
    PemFiles(Vec<std::path::PathBuf>),
}

impl Trust {
    fn roots_der(&self) -> Result<Vec<Vec<u8>>, String> {
        match self {
            Trust::Der(d) => Ok(vec![d.clone()]),
            Trust::PemFiles(files) => {
                let mut roots = Vec::new();
                for p in files.iter().filter(|p| p.exists()) {
                    let pem = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
                    let der = openssl::x509::X509::from_pem(&pem)
                        .and_then(|c| c.to_der())
                        .map_err(|e| format!("{}: {e}", p.display()))?;
                    roots.push(der);
                }
                match roots.is_empty() {
                    true => Err(format!("no trusted root written yet ({files:?})")),
                    false => Ok(roots),
                }
            }
        }
    }
}

struct Setup {
    moto: SocketAddr,
    root: Trust,
    /// Access key id → principal ARN.
    principals: BTreeMap<String, String>,
    decisions: Arc<Mutex<Vec<Decision>>>,
}

impl AttestingKms {
    /// In front of `moto`; documents must chain to `root` (DER); `principals` maps the
    /// access key ids callers sign with to their ARNs.
    pub fn start(moto: &Moto, root: Trust, principals: &[(&str, &str)]) -> AttestingKms {
        let proxy = FaultProxy::start(&moto.endpoint());
        let decisions = Arc::new(Mutex::new(Vec::new()));
        let setup = Setup {
            moto: moto.addr(),
            root,
            principals: principals
                .iter()
                .map(|(k, a)| (k.to_string(), a.to_string()))
                .collect(),
            decisions: Arc::clone(&decisions),
        };
        proxy.respond(
            Matcher::target_contains("TrentService."),
            Box::new(move |call| setup.answer(call)),
        );
        AttestingKms { proxy, decisions }
    }

    pub fn endpoint(&self) -> String {
        self.proxy.endpoint()
    }

    pub fn decisions(&self) -> Vec<Decision> {
        self.decisions.lock().unwrap().clone()
    }
}

fn error(code: &str, message: String) -> Fault {
    Fault::Error {
        status: 400,
        code: code.into(),
        message,
    }
}

impl Setup {
    fn answer(&self, call: &Call) -> Option<Fault> {
        let op = call.operation.as_str();
        if !["Decrypt", "GenerateDataKey", "GenerateRandom"].contains(&op) {
            return None;
        }
        let body = call.json.clone().unwrap_or_else(|| json!({}));
        let principal = self.principal(call);
        let mut decision = Decision {
            operation: op.to_string(),
            principal: principal.clone(),
            key: None,
            pcrs: BTreeMap::new(),
            outcome: Err(String::new()),
        };
        let fault = self.decide(call, &body, &mut decision);
        eprintln!(
            "kms stand-in: {op} by {principal} on {}: {} (PCRs {})",
            decision.key.as_deref().unwrap_or("-"),
            match &decision.outcome {
                Ok(v) => format!("{v:?}"),
                Err(e) => format!("refused: {e}"),
            },
            if decision.pcrs.is_empty() {
                "none: no attestation".to_string()
            } else {
                [4, 7, 12]
                    .iter()
                    .filter_map(|i| decision.pcrs.get(i).map(|v| format!("{i}={}…", &v[..16])))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        self.decisions.lock().unwrap().push(decision);
        fault
    }

    /// The caller: the access key id of the SigV4 `Authorization` header, mapped.
    fn principal(&self, call: &Call) -> String {
        let akid = call
            .header("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').next())
            .unwrap_or("");
        self.principals
            .get(akid)
            .cloned()
            .unwrap_or_else(|| format!("arn:aws:iam::000000000000:user/unknown-{akid}"))
    }

    fn decide(&self, call: &Call, body: &Value, d: &mut Decision) -> Option<Fault> {
        let op = call.operation.as_str();
        let recipient = &body["Recipient"];
        let document = if recipient.is_null() {
            None
        } else {
            match self.verified_document(recipient) {
                Ok(doc) => Some(doc),
                Err(why) => {
                    d.outcome = Err(why.clone());
                    return Some(error("ValidationException", why));
                }
            }
        };
        if let Some(doc) = &document {
            d.pcrs = doc.pcrs.iter().map(|(i, v)| (*i, hex::encode(v))).collect();
        }
        // moto does the work without the Recipient (it would answer Plaintext anyway).
        let mut plain = body.clone();
        if let Some(o) = plain.as_object_mut() {
            o.remove("Recipient");
        }
        let answer = match http::json(
            self.moto,
            "kms",
            &format!("TrentService.{op}"),
            &plain.to_string(),
        ) {
            Ok(r) if r.status == 200 => serde_json::from_slice::<Value>(&r.body).ok()?,
            // moto's own refusal (wrong key, wrong context) goes back as moto made it.
            _ => return None,
        };
        let verdict = match answer["KeyId"].as_str() {
            Some(key) => {
                d.key = Some(key.to_string());
                let policy = self.key_policy(key)?;
                iam::evaluate(
                    &policy,
                    &iam::Request {
                        principal: d.principal.clone(),
                        action: format!("kms:{op}"),
                        resource: key.to_string(),
                        context: d
                            .pcrs
                            .iter()
                            .map(|(i, v)| {
                                (
                                    format!("kms:RecipientAttestation:NitroTPMPCR{i}"),
                                    v.clone(),
                                )
                            })
                            .collect(),
                    },
                )
            }
            // GenerateRandom uses no key: nothing in a key policy applies.
            None => Verdict::Allow {
                sid: "(no key)".into(),
            },
        };
        d.outcome = Ok(verdict.clone());
        if !verdict.allowed() {
            return Some(error(
                "AccessDeniedException",
                format!(
                    "User: {} is not authorized to perform: kms:{op} on resource: {} because of the key policy ({verdict:?})",
                    d.principal,
                    d.key.as_deref().unwrap_or("*")
                ),
            ));
        }
        let doc = document?;
        let plaintext = b64().decode(answer["Plaintext"].as_str()?).ok()?;
        let cms = envelope_to(doc.public_key.as_deref()?, &plaintext);
        let mut out = answer;
        let o = out.as_object_mut()?;
        o.remove("Plaintext");
        o.insert("CiphertextForRecipient".into(), json!(b64().encode(cms)));
        Some(Fault::Answer(out.to_string()))
    }

    fn verified_document(&self, recipient: &Value) -> Result<zoa::attestation::Document, String> {
        if recipient["KeyEncryptionAlgorithm"] != "RSAES_OAEP_SHA_256" {
            return Err(format!(
                "KeyEncryptionAlgorithm {}: only RSAES_OAEP_SHA_256",
                recipient["KeyEncryptionAlgorithm"]
            ));
        }
        let bytes = recipient["AttestationDocument"]
            .as_str()
            .and_then(|s| b64().decode(s).ok())
            .ok_or("AttestationDocument is not base64")?;
        let signed = zoa::attestation::parse(&bytes).map_err(|e| e.to_string())?;
        signed.verify_signature().map_err(|e| e.to_string())?;
        // Chained to any one of the roots; the last failure says why when none fits.
        let mut why = String::new();
        let chained = self.root.roots_der()?.iter().any(|root| {
            signed
                .verify_chain(root, signed.document.timestamp())
                .map_err(|e| why = e.to_string())
                .is_ok()
        });
        if !chained {
            return Err(why);
        }
        if signed.document.kind != zoa::attestation::Kind::NitroTpm {
            return Err("not a NitroTPM document".into());
        }
        Ok(signed.document)
    }

    fn key_policy(&self, key: &str) -> Option<Value> {
        let body = json!({"KeyId": key, "PolicyName": "default"}).to_string();
        let r = http::json(self.moto, "kms", "TrentService.GetKeyPolicy", &body).ok()?;
        let v: Value = serde_json::from_slice(&r.body).ok()?;
        serde_json::from_str(v["Policy"].as_str()?).ok()
    }
}

/// CMS EnvelopedData of `data` to the RSA key `spki` (DER SubjectPublicKeyInfo) as KMS
/// makes `CiphertextForRecipient`. `openssl cms` wants a certificate: one is made for the
/// key (self-issued by a throwaway key; only its public key and identifier are used).
pub fn envelope_to(spki: &[u8], data: &[u8]) -> Vec<u8> {
    use openssl::x509::extension::SubjectKeyIdentifier;
    let public = openssl::pkey::PKey::public_key_from_der(spki).expect("an RSA public key");
    let signer = openssl::pkey::PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "zoa recipient").unwrap();
    let name = name.build();
    let mut b = openssl::x509::X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&public).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(ski).unwrap();
    b.sign(&signer, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("recipient.pem");
    let input = dir.path().join("data");
    std::fs::write(&cert, b.build().to_pem().unwrap()).unwrap();
    std::fs::write(&input, data).unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let out = Command::new("openssl")
        .args(["cms", "-encrypt", "-keyid", "-recip", &p(&cert)])
        .args([
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
        ])
        .args([
            "-aes-256-cbc",
            "-binary",
            "-outform",
            "DER",
            "-in",
            &p(&input),
        ])
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl cms: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `zoa seal --key alias/zoa/demo --name NAME` of `secret` against moto: the envelope's JSON.
pub fn zoa_seal(moto: &Moto, dir: &Path, name: &str, secret: &[u8]) -> Vec<u8> {
    let input = dir.join(format!("{name}.secret"));
    let output = dir.join(format!("{name}.sealed.json"));
    std::fs::write(&input, secret).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_zoa"));
    moto.apply(&mut cmd);
    cmd.args([
        "seal",
        "--quiet",
        "--key",
        "alias/zoa/demo",
        "--name",
        name,
        "--in",
    ])
    .arg(&input)
    .arg("--out")
    .arg(&output);
    let o = super::run(&mut cmd);
    assert!(o.status.success(), "zoa seal: {}", super::stderr(&o));
    std::fs::read(&output).unwrap()
}
