//! kms:Decrypt with a `Recipient`, and the whole unseal: IMDS, KMS, the CMS answer, the envelope.
//!
//! KMS decrypts an envelope's data key only for an instance whose attestation document
//! satisfies the key policy, and then answers `CiphertextForRecipient` (the data key encrypted
//! to the public key in the document) instead of `Plaintext`. An answer that carries
//! `Plaintext` means the attestation was not honoured (an emulator, or a key policy that
//! releases the data key without it), and is refused: the deployment would be unsafe, and
//! booting on would hide that.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::decrypt::{DecryptError, DecryptOutput};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyEncryptionMechanism, RecipientInfo};
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use base64::Engine;
use zeroize::Zeroizing;

use super::envelope::{Envelope, Secret};
use super::imds::{describe, Imds};
use super::userdata::UserData;
use super::{open_recipient_ciphertext, RecipientKey, UnsealError};

/// Generous for one small request, and still a bound: a boot must not hang on KMS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(15);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// The SDK's standard retries (throttling, 5xx, transport errors), three attempts in all.
const ATTEMPTS: u32 = 3;

/// Opens `envelopes` at boot, all or none.
///
/// Fetches the region and the instance role's credentials from IMDSv2, then for each envelope
/// calls kms:Decrypt with its data key, key ARN and encryption context and with
/// `Recipient = {attestation_doc, RSAES_OAEP_SHA_256}`, opens `CiphertextForRecipient` with
/// `key` (the key whose public half is in `attestation_doc`), and opens the envelope with the
/// data key. The data keys are zeroed as soon as each envelope is open.
///
/// `imds_endpoint` and `kms_endpoint` override the defaults (`http://169.254.169.254` and the
/// region's KMS endpoint) for tests; production passes `None`. Runs its own current-thread
/// tokio runtime, so call it from synchronous code only. With no envelopes it makes no call.
pub fn unseal_envelopes(
    imds_endpoint: Option<&str>,
    kms_endpoint: Option<&str>,
    attestation_doc: &[u8],
    key: &RecipientKey,
    envelopes: &[Envelope],
) -> Result<Vec<Secret>, UnsealError> {
    if envelopes.is_empty() {
        return Ok(Vec::new());
    }
    block_on(async {
        let http = https_client()?;
        let imds = Imds::new(imds_endpoint, http.clone())?;
        open_all(&imds, kms_endpoint, http, attestation_doc, key, envelopes).await
    })
}

/// What zoa-init does at boot: the instance's user data from IMDSv2 ([`UserData`]), the
/// envelopes of `names` in it, then [`unseal_envelopes`]' exchange for each.
pub fn unseal_user_data(
    imds_endpoint: Option<&str>,
    kms_endpoint: Option<&str>,
    attestation_doc: &[u8],
    key: &RecipientKey,
    names: &[&str],
) -> Result<Vec<Secret>, UnsealError> {
    block_on(async {
        let http = https_client()?;
        let imds = Imds::new(imds_endpoint, http.clone())?;
        let text = imds.user_data().await?;
        let envelopes = UserData::parse(text.as_bytes())?.envelopes(names)?;
        open_all(&imds, kms_endpoint, http, attestation_doc, key, &envelopes).await
    })
}

/// Runs `work` on a current-thread runtime made for it (zoa-init is synchronous otherwise).
fn block_on<T>(
    work: impl std::future::Future<Output = Result<T, UnsealError>>,
) -> Result<T, UnsealError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| UnsealError::Runtime(e.to_string()))?
        .block_on(work)
}

/// Region and role credentials from `imds`, then each envelope through KMS, all or none.
async fn open_all(
    imds: &Imds,
    kms_endpoint: Option<&str>,
    http: SharedHttpClient,
    attestation_doc: &[u8],
    key: &RecipientKey,
    envelopes: &[Envelope],
) -> Result<Vec<Secret>, UnsealError> {
    let region = imds.region().await?;
    let credentials = imds.role_credentials().await?;
    let kms = Kms::new(region, credentials, kms_endpoint, http);
    let mut secrets = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        let secret = kms
            .unseal(envelope, attestation_doc, key)
            .await
            .map_err(|error| UnsealError::Secret {
                name: envelope.name().to_owned(),
                error: Box::new(error),
            })?;
        secrets.push(secret);
    }
    Ok(secrets)
}

/// The one HTTPS client of the unseal (IMDS is plain HTTP through the same client): rustls with
/// aws-lc-rs, trusting Mozilla's roots as compiled in by webpki-root-certs. The image has no
/// certificate store, and the SDK's default client would look for one.
fn https_client() -> Result<SharedHttpClient, UnsealError> {
    let tls = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(embedded_roots_pem()))
        .build()
        .map_err(|e| UnsealError::Tls(describe(&e)))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(tls)
        .build_https())
}

/// webpki-root-certs' certificates as one PEM bundle, the form the SDK's trust store takes.
fn embedded_roots_pem() -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut pem = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let text = b64.encode(cert.as_ref());
        // PEM lines are 64 characters (RFC 7468); base64 text is ASCII, so bytes are chars.
        for line in text.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

/// A KMS client for one region and set of credentials.
struct Kms {
    client: aws_sdk_kms::Client,
}

impl Kms {
    fn new(
        region: Region,
        credentials: Credentials,
        endpoint: Option<&str>,
        http: SharedHttpClient,
    ) -> Kms {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let mut config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region)
            .credentials_provider(credentials)
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(ATTEMPTS));
        if let Some(url) = endpoint {
            config = config.endpoint_url(url);
        }
        Kms {
            client: aws_sdk_kms::Client::from_conf(config.build()),
        }
    }

    /// One envelope: Decrypt for the recipient, open the CMS answer, open the envelope.
    async fn unseal(
        &self,
        envelope: &Envelope,
        attestation_doc: &[u8],
        key: &RecipientKey,
    ) -> Result<Secret, UnsealError> {
        let answer = self
            .decrypt_for_recipient(envelope, attestation_doc)
            .await?;
        let data_key = Zeroizing::new(open_recipient_ciphertext(key, &answer)?);
        envelope.open(&data_key)
    }

    /// kms:Decrypt of the envelope's data key for the recipient; returns CiphertextForRecipient.
    async fn decrypt_for_recipient(
        &self,
        envelope: &Envelope,
        attestation_doc: &[u8],
    ) -> Result<Vec<u8>, UnsealError> {
        let recipient = RecipientInfo::builder()
            .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
            .attestation_document(Blob::new(attestation_doc))
            .build();
        let context: HashMap<String, String> = envelope
            .encryption_context()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let answer = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(envelope.encrypted_data_key()))
            .key_id(envelope.key_arn())
            .set_encryption_context(Some(context))
            .recipient(recipient)
            .send()
            .await
            .map_err(|e| decrypt_error(envelope.key_arn(), e))?;
        recipient_ciphertext(answer, envelope.key_arn())
    }
}

/// A failed kms:Decrypt as one line: the service's code, message and request id, or the
/// transport failure's causes.
fn decrypt_error(key_arn: &str, e: SdkError<DecryptError>) -> UnsealError {
    let request_id = e.request_id().map(str::to_owned);
    let (code, message) = match e.code() {
        Some(code) => (code.to_owned(), e.message().unwrap_or_default().to_owned()),
        None => {
            let code = match &e {
                SdkError::TimeoutError(_) => "Timeout",
                SdkError::DispatchFailure(d) if d.is_timeout() => "Timeout",
                SdkError::DispatchFailure(_) => "ConnectionError",
                _ => "Error",
            };
            (code.to_owned(), describe(&e))
        }
    };
    UnsealError::Kms {
        key_arn: key_arn.to_owned(),
        code,
        message,
        request_id,
    }
}

/// Takes `CiphertextForRecipient` from a Decrypt answer, refusing one that carries `Plaintext`
/// (which is zeroed here), lacks the ciphertext, or names another key.
fn recipient_ciphertext(mut answer: DecryptOutput, key_arn: &str) -> Result<Vec<u8>, UnsealError> {
    let request_id = answer.request_id().map(str::to_owned);
    // Zeroed when dropped, which is at once on every path.
    let plaintext = answer
        .plaintext
        .take()
        .map(|p| Zeroizing::new(p.into_inner()));
    if plaintext.is_some_and(|p| !p.is_empty()) {
        return Err(UnsealError::KmsPlaintext { request_id });
    }
    if let Some(id) = answer.key_id.as_deref() {
        if id != key_arn {
            return Err(UnsealError::KmsAnswer {
                detail: format!("KeyId is {id:?}, not the envelope's {key_arn:?}"),
                request_id,
            });
        }
    }
    match answer.ciphertext_for_recipient.take() {
        Some(c) if !c.as_ref().is_empty() => Ok(c.into_inner()),
        _ => Err(UnsealError::KmsAnswer {
            detail: "no CiphertextForRecipient".to_owned(),
            request_id,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kms::types::EncryptionAlgorithmSpec;

    const ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn answer() -> aws_sdk_kms::operation::decrypt::builders::DecryptOutputBuilder {
        DecryptOutput::builder()
            .key_id(ARN)
            .encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
    }

    #[test]
    fn takes_the_ciphertext_for_recipient() {
        let a = answer()
            .ciphertext_for_recipient(Blob::new(b"cms".to_vec()))
            .build();
        assert_eq!(recipient_ciphertext(a, ARN).unwrap(), b"cms");
        // KMS documents Plaintext as "null or empty" when a Recipient is given.
        let a = answer()
            .plaintext(Blob::new(Vec::new()))
            .ciphertext_for_recipient(Blob::new(b"cms".to_vec()))
            .build();
        assert_eq!(recipient_ciphertext(a, ARN).unwrap(), b"cms");
    }

    #[test]
    fn refuses_plaintext_even_beside_a_ciphertext() {
        let a = answer()
            .plaintext(Blob::new(vec![1u8; 32]))
            .ciphertext_for_recipient(Blob::new(b"cms".to_vec()))
            .build();
        let err = recipient_ciphertext(a, ARN).unwrap_err();
        assert_eq!(err, UnsealError::KmsPlaintext { request_id: None });
        assert!(err.to_string().contains("Plaintext"), "{err}");
    }

    #[test]
    fn refuses_a_missing_ciphertext_or_another_key() {
        let err = recipient_ciphertext(answer().build(), ARN).unwrap_err();
        assert!(
            err.to_string().contains("no CiphertextForRecipient"),
            "{err}"
        );
        let a = answer()
            .key_id(ARN.replace("1234abcd", "5678abcd"))
            .ciphertext_for_recipient(Blob::new(b"cms".to_vec()))
            .build();
        let err = recipient_ciphertext(a, ARN).unwrap_err();
        assert!(err.to_string().contains("KeyId is"), "{err}");
    }

    #[test]
    fn embedded_roots_are_pem_certificates() {
        let pem = String::from_utf8(embedded_roots_pem()).unwrap();
        let count = pem.matches("-----BEGIN CERTIFICATE-----").count();
        assert_eq!(count, webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(count > 100, "{count} roots");
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert!(https_client().is_ok());
        // An independent reader finds every certificate in the bundle.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("roots.pem");
        std::fs::write(&file, &pem).unwrap();
        let Ok(out) = std::process::Command::new("openssl")
            .args(["storeutl", "-noout", "-certs"])
            .arg(&file)
            .output()
        else {
            eprintln!("skipping the openssl check: the `openssl` command is not installed");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(&format!("Total found: {count}")), "{text}");
    }
}
