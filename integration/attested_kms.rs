//! The unseal against a KMS that enforces the key policy: zoa-init's own code (NSM request,
//! IMDSv2, kms:Decrypt with a Recipient, the CMS answer, the envelope) with an attestation
//! document from the emulated NitroTPM over a real swtpm, the key policy `zoa deploy`
//! writes (rendered by `zoa::aws::policy`, created in moto and read back from it by the
//! stand-in), envelopes from the real `zoa seal`, and the KMS stand-in of
//! `common/kms.rs`, which evaluates that policy for each request.
//!
//! What this shows that the split tests could not: the PCR indexes and condition keys the
//! policy names are the ones a document carries, with values as swtpm computes them, and a
//! document the key does not bind is refused by the policy, not by a test's decision.

use crate::common;

use std::collections::BTreeMap;

use base64::Engine;
use common::iam::Verdict;
use common::imds::{role_arn, ImdsContent, ImdsStandIn, ACCESS_KEY_ID, ROLE};
use common::kms::{AttestingKms, Trust};
use common::moto::{http, Moto};
use zoa::aws::policy::{key_policy, BootMode, KeyPolicyInput, PcrBinding};
use zoa::nitrotpm::{ca::TestCa, nsm::Nsm, swtpm, Emulator};
use zoa_init::unseal::{unseal_envelopes, Envelope, RecipientKey, UnsealError};

const ACCOUNT: &str = "123456789012";

fn sha384(b: &[u8]) -> Vec<u8> {
    openssl::hash::hash(openssl::hash::MessageDigest::sha384(), b)
        .unwrap()
        .to_vec()
}

/// A PCR after one extend of `digest` from all zeros, computed here (not read back).
fn extended_once(digest: &[u8; 48]) -> String {
    let mut m = vec![0u8; 48];
    m.extend_from_slice(digest);
    hex::encode(sha384(&m))
}

const ZERO_PCR: &str = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

/// A booted machine: swtpm with PCRs extended as a boot would, behind the emulator.
struct Machine {
    _swtpm: swtpm::Swtpm,
    emulator: Emulator<swtpm::Stream>,
}

impl Machine {
    fn booted(nsm: &Nsm, extends: &[(u32, [u8; 48])]) -> Machine {
        let tpm = swtpm::Swtpm::start().expect("swtpm");
        let mut emulator = Emulator::new(tpm.connect().expect("connect"), nsm.clone());
        for (pcr, digest) in extends {
            swtpm::extend_sha384(&mut emulator, *pcr, digest).unwrap();
        }
        Machine {
            _swtpm: tpm,
            emulator,
        }
    }

    /// What zoa-init does at boot: its NSM request, through the (emulated) NitroTPM.
    fn attest(&mut self, key: &RecipientKey) -> Vec<u8> {
        zoa_init::tpm2::nsm::attestation_document(
            &mut self.emulator,
            &key.public_key_der().unwrap(),
        )
        .expect("attestation through the emulated NitroTPM")
    }
}

/// An RSA-2048 recipient key (made by OpenSSL: the pure-Rust generator is slow unoptimised).
fn recipient_key() -> RecipientKey {
    recipient_key_pem().0
}

/// A recipient key and its private key in PEM, for `openssl cms -decrypt`.
fn recipient_key_pem() -> (RecipientKey, Vec<u8>) {
    let pkey = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let der = pkey.private_key_to_pkcs8().unwrap();
    (
        RecipientKey::from_pkcs8_der(&der).unwrap(),
        pkey.private_key_to_pem_pkcs8().unwrap(),
    )
}

fn binding(release: &str, mode: BootMode, boot_pcr: &str, pcr12: &str) -> PcrBinding {
    PcrBinding {
        release: release.into(),
        mode,
        boot_pcr: boot_pcr.into(),
        pcr12: pcr12.into(),
    }
}

/// moto with a key under zoa's policy for `bindings`, a sealed secret, IMDS, the stand-in.
struct Lab {
    moto: Moto,
    nsm: Nsm,
    kms: AttestingKms,
    imds: ImdsStandIn,
    key_arn: String,
    envelope: Envelope,
    _dir: tempfile::TempDir,
}

fn policy_for(bindings: Vec<PcrBinding>) -> serde_json::Value {
    key_policy(&KeyPolicyInput {
        partition: "aws".into(),
        account_id: ACCOUNT.into(),
        admin_principals: vec![format!("arn:aws:iam::{ACCOUNT}:root")],
        instance_role_arn: role_arn(),
        sealer_principals: vec![format!("arn:aws:iam::{ACCOUNT}:user/moto")],
        bindings,
        lock: false,
        vpc_endpoint: None,
    })
    .expect("zoa's key policy renders")
}

impl Lab {
    /// A key bound to one standard-boot release: PCR4 after one extend of `pcr4`, PCR12
    /// untouched.
    fn standard(pcr4: &[u8; 48]) -> Lab {
        Lab::new(vec![binding(
            "demo 1",
            BootMode::Standard,
            &extended_once(pcr4),
            ZERO_PCR,
        )])
    }

    /// A KMS request signed (in name) by the instance role, through the stand-in.
    fn kms_as_role(&self, target: &str, body: &serde_json::Value) -> http::Response {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00"
        );
        http::request(
            self.kms.proxy.addr(),
            "POST",
            "/",
            &[
                ("Authorization", auth.as_str()),
                ("X-Amz-Target", target),
                ("Content-Type", "application/x-amz-json-1.1"),
            ],
            body.to_string().as_bytes(),
        )
        .unwrap()
    }

    fn new(bindings: Vec<PcrBinding>) -> Lab {
        let moto = Moto::start();
        let create = serde_json::json!({
            "Policy": policy_for(bindings).to_string(),
            "BypassPolicyLockoutSafetyCheck": true,
        });
        let r = moto.json("kms", "TrentService.CreateKey", &create.to_string());
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let key_arn = v["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
        let alias = serde_json::json!({"AliasName": "alias/zoa/demo", "TargetKeyId": key_arn});
        let r = moto.json("kms", "TrentService.CreateAlias", &alias.to_string());
        assert_eq!(r.status, 200, "{}", r.text());
        let dir = tempfile::tempdir().unwrap();
        let envelope = Envelope::parse(&common::kms::zoa_seal(
            &moto,
            dir.path(),
            "api-key",
            b"the API key",
        ))
        .unwrap();
        let nsm = Nsm::new(
            TestCa::new().unwrap(),
            "i-0123456789abcdef0-tpm0000000000000000".into(),
        );
        let root = nsm.ca.root_der().unwrap();
        let kms = AttestingKms::start(&moto, Trust::Der(root), &[(ACCESS_KEY_ID, &role_arn())]);
        let imds = ImdsStandIn::start(ImdsContent {
            region: "us-east-1".into(),
            role: Some(ROLE.into()),
            ..Default::default()
        });
        Lab {
            moto,
            nsm,
            kms,
            imds,
            key_arn,
            envelope,
            _dir: dir,
        }
    }

    /// zoa-init's unseal of the secret with `document`.
    fn unseal(&self, document: &[u8], key: &RecipientKey) -> Result<Vec<u8>, UnsealError> {
        let secrets = unseal_envelopes(
            Some(&self.imds.endpoint()),
            Some(&self.kms.endpoint()),
            document,
            key,
            std::slice::from_ref(&self.envelope),
        )?;
        Ok(secrets[0].expose().to_vec())
    }

    fn put_policy(&self, bindings: Vec<PcrBinding>) {
        let body = serde_json::json!({
            "KeyId": self.key_arn,
            "PolicyName": "default",
            "Policy": policy_for(bindings).to_string(),
            "BypassPolicyLockoutSafetyCheck": true,
        });
        let r = self
            .moto
            .json("kms", "TrentService.PutKeyPolicy", &body.to_string());
        assert_eq!(r.status, 200, "{}", r.text());
    }

    fn last_decision(&self) -> common::kms::Decision {
        self.kms.decisions().pop().expect("a decision")
    }
}

#[test]
fn the_bound_image_unseals_and_one_pcr_away_is_refused_by_the_policy() {
    let (a, b) = ([0xA4; 48], [0xB4; 48]);
    let lab = Lab::standard(&a);
    let key = recipient_key();

    let mut bound = Machine::booted(&lab.nsm, &[(4, a)]);
    let secret = lab
        .unseal(&bound.attest(&key), &key)
        .expect("the bound image unseals");
    assert_eq!(secret, b"the API key");
    let d = lab.last_decision();
    assert_eq!(d.operation, "Decrypt");
    assert_eq!(d.principal, role_arn());
    assert_eq!(
        d.pcrs[&4],
        extended_once(&a),
        "the document holds swtpm's PCR4"
    );
    assert_eq!(
        d.outcome,
        Ok(Verdict::Allow {
            sid: "ZoaInstanceUse0".into()
        })
    );

    let mut other = Machine::booted(&lab.nsm, &[(4, b)]);
    let err = lab.unseal(&other.attest(&key), &key).unwrap_err();
    assert!(err.to_string().contains("AccessDeniedException"), "{err}");
    assert_eq!(
        lab.last_decision().outcome,
        Ok(Verdict::ExplicitDeny {
            sid: "ZoaDenyUnattestedPcr4".into()
        })
    );
    // A changed PCR12 (a command line given at launch) is refused as well.
    let mut injected = Machine::booted(&lab.nsm, &[(4, a), (12, [0x12; 48])]);
    let err = lab.unseal(&injected.attest(&key), &key).unwrap_err();
    assert!(err.to_string().contains("AccessDeniedException"), "{err}");
    assert_eq!(
        lab.last_decision().outcome,
        Ok(Verdict::ExplicitDeny {
            sid: "ZoaDenyUnattestedPcr12".into()
        })
    );
}

#[test]
fn without_a_genuine_document_nothing_is_released() {
    let a = [0xA4; 48];
    let lab = Lab::standard(&a);
    let key = recipient_key();

    // The instance role without an attestation: the policy denies it.
    let body = serde_json::json!({
        "CiphertextBlob": base64::engine::general_purpose::STANDARD.encode(lab.envelope.encrypted_data_key()),
        "EncryptionContext": lab.envelope.encryption_context(),
        "KeyId": lab.key_arn,
    });
    let r = lab.kms_as_role("TrentService.Decrypt", &body);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("AccessDeniedException"), "{}", r.text());
    let d = lab.last_decision();
    assert!(d.pcrs.is_empty());
    assert_eq!(
        d.outcome,
        Ok(Verdict::ExplicitDeny {
            sid: "ZoaDenyUnattestedPcr4".into()
        })
    );

    // The right PCRs, signed by a CA the KMS does not trust.
    let forger = Nsm::new(
        TestCa::new().unwrap(),
        "i-0123456789abcdef0-tpm0000000000000000".into(),
    );
    let mut forged = Machine::booted(&forger, &[(4, a)]);
    let err = lab.unseal(&forged.attest(&key), &key).unwrap_err();
    assert!(err.to_string().contains("ValidationException"), "{err}");
    assert!(
        matches!(&lab.last_decision().outcome, Err(why) if why.contains("chain")),
        "{:?}",
        lab.last_decision()
    );

    // A genuine document whose bytes were altered after signing.
    let mut genuine = Machine::booted(&lab.nsm, &[(4, a)]);
    let mut doc = genuine.attest(&key);
    let at = doc.len() / 2;
    doc[at] ^= 1;
    let err = lab.unseal(&doc, &key).unwrap_err();
    assert!(err.to_string().contains("ValidationException"), "{err}");
}

#[test]
fn a_rollout_admits_both_releases_then_only_the_new_one() {
    let (old, new) = ([0x01; 48], [0x02; 48]);
    let lab = Lab::standard(&old);
    let key = recipient_key();
    let mut old_machine = Machine::booted(&lab.nsm, &[(4, old)]);
    let mut new_machine = Machine::booted(&lab.nsm, &[(4, new)]);
    let both = vec![
        binding("demo 1", BootMode::Standard, &extended_once(&old), ZERO_PCR),
        binding("demo 2", BootMode::Standard, &extended_once(&new), ZERO_PCR),
    ];
    assert!(
        lab.unseal(&new_machine.attest(&key), &key).is_err(),
        "before the rollout"
    );
    lab.put_policy(both);
    for m in [&mut old_machine, &mut new_machine] {
        assert_eq!(lab.unseal(&m.attest(&key), &key).unwrap(), b"the API key");
    }
    lab.put_policy(vec![binding(
        "demo 2",
        BootMode::Standard,
        &extended_once(&new),
        ZERO_PCR,
    )]);
    assert!(
        lab.unseal(&old_machine.attest(&key), &key).is_err(),
        "after it, the old is refused"
    );
    assert_eq!(
        lab.unseal(&new_machine.attest(&key), &key).unwrap(),
        b"the API key"
    );
}

#[test]
fn a_secure_boot_key_binds_pcr7_and_pcr12() {
    let (db, other_db, kernel) = ([0x07; 48], [0x70; 48], [0x44; 48]);
    let lab = Lab::new(vec![binding(
        "demo 1",
        BootMode::SecureBoot,
        &extended_once(&db),
        ZERO_PCR,
    )]);
    let key = recipient_key();
    // PCR4 is not bound: any kernel signed by the enrolled db key is admitted.
    let mut signed = Machine::booted(&lab.nsm, &[(7, db), (4, kernel)]);
    assert_eq!(
        lab.unseal(&signed.attest(&key), &key).unwrap(),
        b"the API key"
    );
    let mut foreign = Machine::booted(&lab.nsm, &[(7, other_db), (4, kernel)]);
    assert!(lab.unseal(&foreign.attest(&key), &key).is_err());
    assert_eq!(
        lab.last_decision().outcome,
        Ok(Verdict::ExplicitDeny {
            sid: "ZoaDenyUnattestedPcr7".into()
        })
    );
    let by_pcr: BTreeMap<u32, String> = lab.last_decision().pcrs;
    assert_eq!(by_pcr[&7], extended_once(&other_db));
}

// --- the policy evaluator of the stand-in, on its own ---------------------------------------

mod evaluator {
    use super::common::iam::*;
    use serde_json::json;

    fn req(principal: &str, action: &str, ctx: &[(&str, &str)]) -> Request {
        Request {
            principal: principal.into(),
            action: action.into(),
            resource: "arn:aws:kms:us-east-1:123456789012:key/k".into(),
            context: ctx
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The shape of zoa's key policy: an attested allow, a deny of anything else.
    #[test]
    fn attested_allow_and_unattested_deny() {
        let role = "arn:aws:iam::123456789012:role/zoa-demo";
        let p = json!({"Statement": [
            {"Sid": "Use", "Effect": "Allow", "Principal": {"AWS": role},
             "Action": ["kms:Decrypt"], "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:NitroTPMPCR4": "AA"}}},
            {"Sid": "Deny4", "Effect": "Deny", "Principal": {"AWS": "*"},
             "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:NitroTPMPCR4": ["aa", "bb"]}}}
        ]});
        let pcr4 = "kms:recipientattestation:nitrotpmpcr4";
        assert!(evaluate(&p, &req(role, "kms:Decrypt", &[(pcr4, "aa")])).allowed());
        assert_eq!(
            evaluate(&p, &req(role, "kms:Decrypt", &[(pcr4, "cc")])),
            Verdict::ExplicitDeny {
                sid: "Deny4".into()
            }
        );
        // No attestation: the negated condition holds for a missing key, so Deny.
        assert_eq!(
            evaluate(&p, &req(role, "kms:Decrypt", &[])),
            Verdict::ExplicitDeny {
                sid: "Deny4".into()
            }
        );
        // Another release's PCR the deny tolerates but the allow does not name.
        assert_eq!(
            evaluate(&p, &req(role, "kms:Decrypt", &[(pcr4, "bb")])),
            Verdict::ImplicitDeny
        );
        // Another principal, another action.
        let other = "arn:aws:iam::123456789012:role/other";
        assert_eq!(
            evaluate(&p, &req(other, "kms:Decrypt", &[(pcr4, "aa")])),
            Verdict::ImplicitDeny
        );
        assert_eq!(
            evaluate(&p, &req(role, "kms:Encrypt", &[(pcr4, "aa")])),
            Verdict::ImplicitDeny
        );
    }

    #[test]
    fn operators_if_exists_null_and_globs() {
        assert!(holds("StringEqualsIfExists", None, &["x"]));
        assert!(!holds("StringEquals", None, &["x"]));
        assert!(holds("Null", None, &["true"]));
        assert!(!holds("Null", Some("v"), &["true"]));
        assert!(holds(
            "StringLike",
            Some("arn:aws:iam::1:role/zoa-a"),
            &["arn:aws:iam::1:role/zoa-*"]
        ));
        assert!(glob("kms:*", "KMS:Decrypt", true));
        assert!(!glob("kms:Re*", "kms:Decrypt", true));
        assert!(principal_matches(
            &json!({"AWS": "arn:aws:iam::123456789012:root"}),
            "arn:aws:iam::123456789012:role/r"
        ));
        assert!(!principal_matches(
            &json!({"AWS": "arn:aws:iam::999999999999:root"}),
            "arn:aws:iam::123456789012:role/r"
        ));
    }

    #[test]
    #[should_panic(expected = "not evaluated")]
    fn an_unknown_operator_is_not_guessed() {
        holds("NumericLessThan", Some("1"), &["2"]);
    }
}

/// The other operations KMS takes a `Recipient` for: GenerateDataKey answers the data key
/// only inside `CiphertextForRecipient` (and its copy under the KMS key as
/// `CiphertextBlob`, no `Plaintext`), GenerateRandom likewise; both open with `openssl cms`
/// and the recipient's private key. And the data key is the one the blob decrypts to.
#[test]
fn generate_data_key_and_generate_random_answer_only_the_recipient() {
    let a = [0xA4; 48];
    let lab = Lab::standard(&a);
    let (key, pem) = recipient_key_pem();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.pem");
    std::fs::write(&key_file, pem).unwrap();
    let mut m = Machine::booted(&lab.nsm, &[(4, a)]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let recipient = serde_json::json!({
        "AttestationDocument": b64.encode(m.attest(&key)),
        "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
    });
    let call = |target: &str, body: serde_json::Value| {
        let r = lab.kms_as_role(target, &body);
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()
    };
    let open = |v: &serde_json::Value| {
        let cms = b64
            .decode(
                v["CiphertextForRecipient"]
                    .as_str()
                    .expect("CiphertextForRecipient"),
            )
            .unwrap();
        // openssl, independently of the stand-in's and zoa-init's CMS code.
        let input = dir.path().join("cms.der");
        std::fs::write(&input, cms).unwrap();
        let o = std::process::Command::new("openssl")
            .args(["cms", "-decrypt", "-inform", "DER", "-binary", "-inkey"])
            .arg(&key_file)
            .arg("-in")
            .arg(&input)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };

    let v = call(
        "TrentService.GenerateDataKey",
        serde_json::json!({"KeyId": lab.key_arn, "KeySpec": "AES_256", "Recipient": recipient}),
    );
    assert!(v.get("Plaintext").is_none(), "{v}");
    let data_key = open(&v);
    assert_eq!(data_key.len(), 32);
    // The CiphertextBlob is the same data key under the KMS key (moto decrypts it).
    let plain = lab.moto.json(
        "kms",
        "TrentService.Decrypt",
        &serde_json::json!({"CiphertextBlob": v["CiphertextBlob"]}).to_string(),
    );
    let plain: serde_json::Value = serde_json::from_slice(&plain.body).unwrap();
    assert_eq!(
        b64.decode(plain["Plaintext"].as_str().unwrap()).unwrap(),
        data_key
    );

    let v = call(
        "TrentService.GenerateRandom",
        serde_json::json!({"NumberOfBytes": 24, "Recipient": recipient}),
    );
    assert!(v.get("Plaintext").is_none(), "{v}");
    assert_eq!(open(&v).len(), 24);
    let ops: Vec<String> = lab
        .kms
        .decisions()
        .iter()
        .map(|d| d.operation.clone())
        .collect();
    assert_eq!(ops, ["GenerateDataKey", "GenerateRandom"]);
}
