//! Fetching a fresh attestation document from a zoa image's TLS front (DESIGN.md, "Attested
//! TLS"): a TLS 1.3 connection that trusts no CA (the certificate is self-signed; trust comes
//! from the document), `GET /.well-known/zoa/attestation?nonce=<hex>` over that very
//! connection, and the SubjectPublicKeyInfo the server presented on it, which the document
//! must bind. [`check`](super::check::check) then judges the three together.

use super::check::Expectation;
use super::MAX_DOCUMENT_LEN;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The endpoint's path (the interface contract).
pub const ATTESTATION_PATH: &str = "/.well-known/zoa/attestation";

/// `https://HOST[:PORT][/]`: where a zoa image's TLS front answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A DNS name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

impl FromStr for Target {
    type Err = FetchError;

    fn from_str(url: &str) -> Result<Target, FetchError> {
        let bad = |why: &str| FetchError::Url(format!("{url:?}: {why}"));
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("must start with https://"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(bad("give only https://HOST[:PORT]"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("not HOST[:PORT]"))?;
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port must be 1 to 65535"))?,
        };
        if host.is_empty() || ServerName::try_from(host).is_err() {
            return Err(bad("not a host name or address"));
        }
        Ok(Target {
            host: host.to_owned(),
            port,
        })
    }
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

/// Why no document came back. None of these is a verdict on a document: the CLI exits 1.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Url(String),
    #[error("{target}: connecting: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("{target}: TLS: {source}")]
    Tls {
        target: String,
        source: std::io::Error,
    },
    #[error("{target}: no certificate was presented")]
    NoCertificate { target: String },
    #[error("{target}: the certificate presented is not X.509: {detail}")]
    Certificate { target: String, detail: String },
    #[error("{target}: HTTP: {detail}")]
    Http { target: String, detail: String },
    #[error("{target}{ATTESTATION_PATH}: answered {status}: {text}")]
    Status {
        target: String,
        status: u16,
        text: String,
    },
    #[error("{target}: no answer within {}s", .limit.as_secs())]
    Timeout { target: String, limit: Duration },
    #[error("starting the network runtime: {0}")]
    Runtime(std::io::Error),
    #[error("no random nonce: {0}")]
    Random(String),
}

/// Bytes of the random nonce zoa sends a server.
pub const NONCE_LEN: usize = 32;

/// A fresh nonce from OpenSSL's random generator.
pub fn random_nonce() -> Result<[u8; NONCE_LEN], FetchError> {
    let mut nonce = [0u8; NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce).map_err(|e| FetchError::Random(e.to_string()))?;
    Ok(nonce)
}

/// `expect` for one exchange: the document must also echo `nonce` and bind `spki`, the
/// key the connection it came over presented.
pub fn for_exchange(expect: &Expectation, nonce: &[u8], spki: &[u8]) -> Expectation {
    Expectation {
        nonce: Some(nonce.to_vec()),
        spki_sha384: Some(openssl::sha::sha384(spki)),
        ..expect.clone()
    }
}

/// What one connection gave: the document and the key that connection was made with.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The response body, as the server sent it.
    pub document: Vec<u8>,
    /// The DER SubjectPublicKeyInfo of the certificate the server presented.
    pub spki: Vec<u8>,
}

/// Opens a TLS connection to `target` and asks it for a document with `nonce`, all within
/// `limit`. Blocking (its own small runtime).
pub fn fetch(target: &Target, nonce: &[u8], limit: Duration) -> Result<Fetched, FetchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FetchError::Runtime)?;
    runtime.block_on(fetch_async(target, nonce, limit))
}

/// [`fetch`] inside a runtime.
pub async fn fetch_async(
    target: &Target,
    nonce: &[u8],
    limit: Duration,
) -> Result<Fetched, FetchError> {
    tokio::time::timeout(limit, fetch_unbounded(target, nonce))
        .await
        .map_err(|_| FetchError::Timeout {
            target: target.to_string(),
            limit,
        })?
}

async fn fetch_unbounded(target: &Target, nonce: &[u8]) -> Result<Fetched, FetchError> {
    let tls = connect(target).await?;
    let spki = presented_spki(target, &tls)?;
    let mut http = http_over(target, tls).await?;
    let document = document_over(&mut http, target, nonce).await?;
    Ok(Fetched { document, spki })
}

/// A request or response body of any kind (the proxy forwards clients' bodies on the
/// connections it attests over).
pub type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// HTTP/1.1 over an established TLS connection; the connection's task runs on the current
/// runtime until the returned sender is dropped.
pub async fn http_over(
    target: &Target,
    tls: TlsStream<TcpStream>,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, FetchError> {
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| FetchError::Http {
                target: target.to_string(),
                detail: e.to_string(),
            })?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A TLS 1.3 connection (ALPN `http/1.1`) that accepts the server's self-signed
/// certificate: the attestation document decides whether the key is trusted.
pub async fn connect(target: &Target) -> Result<TlsStream<TcpStream>, FetchError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| FetchError::Connect {
            target: target.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let name =
        ServerName::try_from(target.host.clone()).map_err(|e| FetchError::Url(e.to_string()))?;
    TlsConnector::from(Arc::new(client_config()))
        .connect(name, tcp)
        .await
        .map_err(|source| FetchError::Tls {
            target: target.to_string(),
            source,
        })
}

/// The client side: TLS 1.3 only, aws-lc-rs, certificates deferred to the attestation.
pub fn client_config() -> ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AttestedKeyVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        // aws-lc-rs supports TLS 1.3: this cannot fail.
        .unwrap_or_else(|_| unreachable!("aws-lc-rs supports TLS 1.3"))
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// The SubjectPublicKeyInfo (DER, as sent) of the certificate the server presented on `tls`.
pub fn presented_spki(target: &Target, tls: &TlsStream<TcpStream>) -> Result<Vec<u8>, FetchError> {
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| FetchError::NoCertificate {
            target: target.to_string(),
        })?;
    let parsed =
        webpki::EndEntityCert::try_from(certificate).map_err(|e| FetchError::Certificate {
            target: target.to_string(),
            detail: e.to_string(),
        })?;
    Ok(parsed.subject_public_key_info().as_ref().to_vec())
}

/// `GET` a document with `nonce` over `http` (an attested connection's HTTP/1.1), its body
/// bounded by [`MAX_DOCUMENT_LEN`].
pub async fn document_over(
    http: &mut hyper::client::conn::http1::SendRequest<Body>,
    target: &Target,
    nonce: &[u8],
) -> Result<Vec<u8>, FetchError> {
    let failed = |detail: String| FetchError::Http {
        target: target.to_string(),
        detail,
    };
    let empty = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    let request = hyper::Request::get(format!("{ATTESTATION_PATH}?nonce={}", hex::encode(nonce)))
        .header(hyper::header::HOST, host_header(target))
        .body(empty)
        .map_err(|e| failed(e.to_string()))?;
    http.ready().await.map_err(|e| failed(e.to_string()))?;
    let response = http
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_DOCUMENT_LEN)
        .collect()
        .await
        .map_err(|e| failed(format!("reading the document: {e}")))?
        .to_bytes();
    if status != 200 {
        return Err(FetchError::Status {
            target: target.to_string(),
            status,
            text: printable_excerpt(&body),
        });
    }
    Ok(body.to_vec())
}

/// The `Host` header for `target`.
pub fn host_header(target: &Target) -> String {
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    if target.port == 443 {
        host
    } else {
        format!("{host}:{}", target.port)
    }
}

/// At most 200 printable characters of a server's error text (it is the server's, and
/// goes to a terminal).
fn printable_excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Accepts any certificate but still checks the handshake signature: the server proves it
/// holds the key of the certificate it sent, and the attestation document says whose key
/// that may be. Without the document check this would trust anyone; it is only used with it.
#[derive(Debug)]
struct AttestedKeyVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AttestedKeyVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = |s: &str| s.parse::<Target>().map(|t| (t.host, t.port));
        assert_eq!(
            t("https://example.com").unwrap(),
            ("example.com".into(), 443)
        );
        assert_eq!(
            t("https://example.com:8443/").unwrap(),
            ("example.com".into(), 8443)
        );
        assert_eq!(
            t("https://10.0.0.1:8080").unwrap(),
            ("10.0.0.1".into(), 8080)
        );
        assert_eq!(t("https://[::1]:8080").unwrap(), ("::1".into(), 8080));
        assert_eq!(t("https://[::1]").unwrap(), ("::1".into(), 443));
        for bad in [
            "http://example.com",
            "example.com",
            "https://",
            "https://example.com:0",
            "https://example.com:65536",
            "https://example.com:x",
            "https://example.com/v1/models",
            "https://user@example.com",
            "https://[::1",
            "https://exa mple.com",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn targets_print_as_urls() {
        let v6: Target = "https://[::1]:8080".parse().unwrap();
        assert_eq!(v6.to_string(), "https://[::1]:8080");
        assert_eq!(host_header(&v6), "[::1]:8080");
        let v4: Target = "https://example.com".parse().unwrap();
        assert_eq!(host_header(&v4), "example.com");
    }

    #[test]
    fn server_error_text_is_shortened_and_made_printable() {
        let long = format!("bad\x1b[31m{}", "x".repeat(500));
        let excerpt = printable_excerpt(long.as_bytes());
        assert_eq!(excerpt.chars().count(), 200);
        assert!(!excerpt.contains('\x1b'));
    }
}
