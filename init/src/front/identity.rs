//! The front's TLS identity: a P-384 key made at boot (it lives in this process's memory
//! only), a self-signed certificate for it, and the `user_data` that binds the key into
//! attestation documents (DESIGN.md, "Attested TLS").

use rcgen::{CertificateParams, KeyPair, PublicKeyData, PKCS_ECDSA_P384_SHA384};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha384};

/// What precedes the SPKI digest in `user_data`.
pub const BINDING_PREFIX: &[u8; 20] = b"zoa-tls-spki-sha384:";

/// Length of the binding: the prefix and a SHA-384 digest.
pub const BINDING_LEN: usize = BINDING_PREFIX.len() + 48;

/// A key and its certificate, made once per boot.
pub struct Identity {
    /// The self-signed certificate (DER) the server presents.
    pub certificate: CertificateDer<'static>,
    /// The certificate's DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    /// A fresh P-384 key and a self-signed certificate naming `hostname`. The certificate's
    /// validity is rcgen's default (1975 to 4096): clients trust the key because an
    /// attestation document binds it, never because of the certificate.
    pub fn generate(hostname: &str) -> Result<Identity, String> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)
            .map_err(|e| format!("generating the TLS key: {e}"))?;
        let params = CertificateParams::new(vec![hostname.to_owned()])
            .map_err(|e| format!("the TLS certificate for {hostname:?}: {e}"))?;
        let certificate = params
            .self_signed(&key)
            .map_err(|e| format!("signing the TLS certificate: {e}"))?;
        Ok(Identity {
            certificate: certificate.der().clone(),
            spki: key.subject_public_key_info(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// `zoa-tls-spki-sha384:` and the SHA-384 of the SubjectPublicKeyInfo.
    pub fn binding(&self) -> [u8; BINDING_LEN] {
        binding(&self.spki)
    }

    /// The private key, for the TLS configuration.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// The `user_data` that binds `spki` (DER SubjectPublicKeyInfo).
pub fn binding(spki: &[u8]) -> [u8; BINDING_LEN] {
    let mut out = [0u8; BINDING_LEN];
    out[..BINDING_PREFIX.len()].copy_from_slice(BINDING_PREFIX);
    out[BINDING_PREFIX.len()..].copy_from_slice(&Sha384::digest(spki));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_key_is_the_certificate_s_key() {
        let id = Identity::generate("llama-server").unwrap();
        // The SPKI is a DER SEQUENCE (id-ecPublicKey, secp384r1, 97-byte point): 120 bytes.
        assert_eq!(id.spki.len(), 120);
        assert_eq!(id.spki[0], 0x30);
        let cert = id.certificate.as_ref();
        assert!(
            cert.windows(id.spki.len()).any(|w| w == id.spki),
            "the certificate carries the SPKI verbatim"
        );
        let b = id.binding();
        assert_eq!(&b[..20], b"zoa-tls-spki-sha384:");
        assert_eq!(b[20..], Sha384::digest(&id.spki)[..]);
    }

    #[test]
    fn every_boot_has_its_own_key() {
        let a = Identity::generate("a").unwrap();
        let b = Identity::generate("a").unwrap();
        assert_ne!(a.spki, b.spki);
    }
}
