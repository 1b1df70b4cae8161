//! The emulator's test CA: root → intermediate → short-lived leaf, P-384 and ECDSA-SHA384
//! as AWS's Nitro PKI. Made fresh per emulator; its names say that it is a test CA, and
//! nothing it signs chains to the AWS Nitro root.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Name, X509NameBuilder, X509};

/// How long a leaf lives: three hours, as AWS's.
const LEAF_LIFETIME: Duration = Duration::from_secs(3 * 3600);
/// The CA certificates: a month (a boot rehearsal lasts minutes).
const CA_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Clone)]
struct Issuer {
    key: PKey<Private>,
    cert: X509,
}

/// The chain the emulated NSM signs with.
#[derive(Clone)]
pub struct TestCa {
    root: Issuer,
    intermediate: Issuer,
    leaf: Option<(SystemTime, Issuer)>,
}

fn p384() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::SECP384R1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn name(cn: &str) -> Result<X509Name, ErrorStack> {
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_text("O", "zoa emulated NitroTPM (test only, not AWS)")?;
    n.append_entry_by_text("CN", cn)?;
    Ok(n.build())
}

fn asn1_time(t: SystemTime) -> Result<Asn1Time, ErrorStack> {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Asn1Time::from_unix(i64::try_from(secs).unwrap_or(i64::MAX) as _)
}

/// What a certificate of the chain is for; its lifetime and extensions follow from it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Ca,
    Leaf,
}

fn certificate(
    subject: &str,
    key: &PKey<Private>,
    issuer: Option<&Issuer>,
    from: SystemTime,
    role: Role,
) -> Result<X509, ErrorStack> {
    let lifetime = match role {
        Role::Ca => CA_LIFETIME,
        Role::Leaf => LEAF_LIFETIME,
    };
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let serial = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&serial)?;
    let subject_name = name(subject)?;
    b.set_subject_name(&subject_name)?;
    match issuer {
        Some(i) => b.set_issuer_name(i.cert.subject_name())?,
        None => b.set_issuer_name(&subject_name)?,
    }
    b.set_pubkey(key)?;
    let (not_before, not_after) = (asn1_time(from)?, asn1_time(from + lifetime)?);
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    if role == Role::Leaf {
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .non_repudiation()
                .build()?,
        )?;
    } else {
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .digital_signature()
                .build()?,
        )?;
    }
    let signer = issuer.map_or(key, |i| &i.key);
    b.sign(signer, MessageDigest::sha384())?;
    Ok(b.build())
}

impl TestCa {
    /// A new root and intermediate, valid from a minute ago (clock skew between host and
    /// guest) for a month.
    pub fn new() -> Result<TestCa, ErrorStack> {
        let from = SystemTime::now() - Duration::from_secs(60);
        let root_key = p384()?;
        let root = Issuer {
            cert: certificate(
                "zoa emulated NitroTPM root",
                &root_key,
                None,
                from,
                Role::Ca,
            )?,
            key: root_key,
        };
        let key = p384()?;
        let intermediate = Issuer {
            cert: certificate(
                "zoa emulated NitroTPM intermediate",
                &key,
                Some(&root),
                from,
                Role::Ca,
            )?,
            key,
        };
        Ok(TestCa {
            root,
            intermediate,
            leaf: None,
        })
    }

    /// The root certificate (PEM), for verifiers (`--attestation-root`).
    pub fn root_pem(&self) -> Result<Vec<u8>, ErrorStack> {
        self.root.cert.to_pem()
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> Result<Vec<u8>, ErrorStack> {
        self.root.cert.to_der()
    }

    /// `cabundle`: root first, then the intermediate.
    pub fn bundle(&self) -> Vec<Vec<u8>> {
        [&self.root.cert, &self.intermediate.cert]
            .iter()
            .filter_map(|c| c.to_der().ok())
            .collect()
    }

    /// The leaf's key and certificate (DER) at `now`: a new leaf when there is none or the
    /// current one has less than an hour left.
    pub fn leaf(&mut self, now: SystemTime) -> Result<(PKey<Private>, Vec<u8>), ErrorStack> {
        let stale = self
            .leaf
            .as_ref()
            .is_none_or(|(made, _)| now >= *made + LEAF_LIFETIME - Duration::from_secs(3600));
        if stale {
            let key = p384()?;
            let cert = certificate(
                "zoa emulated NitroTPM leaf",
                &key,
                Some(&self.intermediate),
                now - Duration::from_secs(1),
                Role::Leaf,
            )?;
            self.leaf = Some((now, Issuer { key, cert }));
        }
        let (_, leaf) = self.leaf.as_ref().ok_or_else(ErrorStack::get)?;
        Ok((leaf.key.clone(), leaf.cert.to_der()?))
    }
}
