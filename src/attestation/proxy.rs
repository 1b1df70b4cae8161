//! `zoa proxy URL --listen ADDR`: a local verifying proxy, so that unchanged clients (curl,
//! the OpenAI SDKs) send prompts only to an attested server. It attests the upstream before
//! the first request, pins the attested TLS key, checks that key on every new upstream
//! connection, re-attests on a new connection once the last attestation is older than
//! `max_age`, and refuses (closing the client's connection) when the key or the PCRs change.
//! Clients speak plain HTTP to it on loopback only.

use super::check::{check, Expectation, Report, Verdict};
use super::online::{self, document_over, http_over, presented_spki, Body, FetchError, Target};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A document's timestamp may be this old (clocks differ; the nonce already proves that
/// the document was made for this request).
const FRESHNESS: Duration = Duration::from_secs(300);

/// What the proxy is told.
pub struct Settings {
    pub upstream: Target,
    /// Root, PCRs and the like; the nonce and key binding are the proxy's own each time.
    pub expect: Expectation,
    /// Re-attest on the next new connection once the last attestation is this old.
    pub max_age: Duration,
    /// Limit for connecting to the upstream and for one attestation.
    pub timeout: Duration,
}

/// Why the proxy refuses the upstream.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Unreachable(#[from] FetchError),
    #[error("{upstream}: the attestation failed: {verdict:?}: {detail}")]
    NotAttested {
        upstream: String,
        verdict: Verdict,
        detail: String,
    },
    #[error("{upstream}: presents another TLS key (spki-sha384 {now}) than the attested one ({pinned}); restart the proxy to attest the new server")]
    KeyChanged {
        upstream: String,
        pinned: String,
        now: String,
    },
    #[error("{upstream}: its PCRs changed since the first attestation")]
    PcrsChanged { upstream: String },
}

impl Refusal {
    /// The verdict, when a document was judged.
    pub fn verdict(&self) -> Option<Verdict> {
        match self {
            Refusal::NotAttested { verdict, .. } => Some(*verdict),
            Refusal::PcrsChanged { .. } => Some(Verdict::PcrMismatch),
            Refusal::KeyChanged { .. } => Some(Verdict::KeyMismatch),
            Refusal::Unreachable(_) => None,
        }
    }
}

/// The pinned state: the key and PCRs of the first attestation, and when the last was.
struct Pinned {
    spki: Vec<u8>,
    pcrs: BTreeMap<String, String>,
    attested_at: Instant,
}

/// The proxy, once the upstream was attested.
pub struct Proxy {
    settings: Settings,
    pinned: Mutex<Pinned>,
    log: Box<dyn Fn(&str) + Send + Sync>,
}

impl Proxy {
    /// Attests the upstream on a connection of its own; the proxy exists only if that passes.
    /// `log` gets one line per attestation and per refusal.
    pub async fn attest_first(
        settings: Settings,
        log: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Result<(Proxy, Report), Refusal> {
        let (mut http, spki) = open_upstream(&settings).await?;
        let report = attest_over(&settings, &mut http, &spki).await?;
        log(&attested_line(&settings.upstream, &report, &spki));
        let pinned = Pinned {
            spki,
            pcrs: report.pcrs.clone(),
            attested_at: Instant::now(),
        };
        Ok((
            Proxy {
                settings,
                pinned: Mutex::new(pinned),
                log,
            },
            report,
        ))
    }

    /// Serves clients on `listener` until the runtime ends.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let _ = client.set_nodelay(true);
            tokio::spawn(self.clone().serve_client(client));
        }
    }

    /// One client connection: one upstream connection, checked before the first request.
    async fn serve_client(self: Arc<Self>, client: tokio::net::TcpStream) {
        let upstream = match self.checked_upstream().await {
            Ok(http) => Some(Arc::new(tokio::sync::Mutex::new(http))),
            Err(refusal) => {
                (self.log)(&format!("zoa proxy: refused: {refusal}"));
                None
            }
        };
        let host = online::host_header(&self.settings.upstream);
        let service = hyper::service::service_fn(move |req| {
            let upstream = upstream.clone();
            let host = host.clone();
            async move {
                Ok::<_, hyper::Error>(match upstream {
                    Some(http) => forward(req, &http, &host).await,
                    None => refused_answer(),
                })
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(client), service)
            .await;
    }

    /// A new upstream connection presenting the pinned key, re-attested over itself when
    /// the last attestation is older than `max_age`.
    async fn checked_upstream(&self) -> Result<SendRequest<Body>, Refusal> {
        let target = &self.settings.upstream;
        let (mut http, spki) = open_upstream(&self.settings).await?;
        let (pinned_spki, stale) = {
            let pinned = self.lock();
            let stale = pinned.attested_at.elapsed() >= self.settings.max_age;
            (pinned.spki.clone(), stale)
        };
        if spki != pinned_spki {
            return Err(Refusal::KeyChanged {
                upstream: target.to_string(),
                pinned: spki_digest(&pinned_spki),
                now: spki_digest(&spki),
            });
        }
        if stale {
            let report = attest_over(&self.settings, &mut http, &spki).await?;
            let mut pinned = self.lock();
            if report.pcrs != pinned.pcrs {
                return Err(Refusal::PcrsChanged {
                    upstream: target.to_string(),
                });
            }
            pinned.attested_at = Instant::now();
            (self.log)(&attested_line(target, &report, &spki));
        }
        Ok(http)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pinned> {
        self.pinned.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A new TLS connection to the upstream (within the timeout), HTTP/1.1 over it, and the
/// SubjectPublicKeyInfo it presented.
async fn open_upstream(settings: &Settings) -> Result<(SendRequest<Body>, Vec<u8>), Refusal> {
    let target = &settings.upstream;
    let tls = tokio::time::timeout(settings.timeout, online::connect(target))
        .await
        .map_err(|_| timeout(settings))??;
    let spki = presented_spki(target, &tls)?;
    Ok((http_over(target, tls).await?, spki))
}

fn timeout(settings: &Settings) -> Refusal {
    Refusal::Unreachable(FetchError::Timeout {
        target: settings.upstream.to_string(),
        limit: settings.timeout,
    })
}

/// A fresh document over `http`, checked with a new nonce and the key this connection
/// presented.
async fn attest_over(
    settings: &Settings,
    http: &mut SendRequest<Body>,
    spki: &[u8],
) -> Result<Report, Refusal> {
    let nonce = online::random_nonce()?;
    let document = tokio::time::timeout(
        settings.timeout,
        document_over(http, &settings.upstream, &nonce),
    )
    .await
    .map_err(|_| timeout(settings))??;
    let mut expect = online::for_exchange(&settings.expect, &nonce, spki);
    expect.max_age = Some(FRESHNESS);
    let report = check(&document, &expect, SystemTime::now());
    if report.verdict != Verdict::Ok {
        let detail = report
            .checks
            .iter()
            .find(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .unwrap_or_default();
        return Err(Refusal::NotAttested {
            upstream: settings.upstream.to_string(),
            verdict: report.verdict,
            detail,
        });
    }
    Ok(report)
}

fn spki_digest(spki: &[u8]) -> String {
    hex::encode(openssl::sha::sha384(spki))
}

fn attested_line(target: &Target, report: &Report, spki: &[u8]) -> String {
    let release = report
        .release
        .as_ref()
        .map(|r| format!("{} {}", r.name, r.version))
        .unwrap_or_else(|| "the expected PCRs".into());
    format!(
        "zoa proxy: attested {target}: {release} on {} at {}, key spki-sha384 {}",
        report.module_id.as_deref().unwrap_or("?"),
        report.timestamp.as_deref().unwrap_or("?"),
        spki_digest(spki)
    )
}

/// Forwards one client request over the attested upstream connection.
async fn forward(
    req: Request<Incoming>,
    http: &tokio::sync::Mutex<SendRequest<Body>>,
    host: &str,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Ok(host) = HeaderValue::from_str(host) {
        parts.headers.insert(HOST, host);
    }
    // Origin form: the upstream gets the path and query only.
    if let Some(path) = parts.uri.path_and_query().cloned() {
        parts.uri = path.into();
    }
    let request = Request::from_parts(parts, body.boxed());
    let mut http = http.lock().await;
    // The previous request's response must be finished before the next goes out.
    let sent = match http.ready().await {
        Ok(()) => http.send_request(request).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            format!("zoa proxy: the attested server did not answer: {e}\n"),
        ),
    }
}

fn refused_answer() -> Response<Body> {
    let mut response = text(
        StatusCode::BAD_GATEWAY,
        "zoa proxy: the upstream is not the attested server (see the proxy's log)\n".into(),
    );
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Headers of one hop (RFC 9110 section 7.6.1) and those `Connection` names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// The proxy listens on loopback only: it speaks plain HTTP to its clients.
pub fn check_listen(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr}: the proxy speaks plain HTTP to its clients, so it listens on a loopback address only (127.0.0.1 or ::1)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_listens_on_loopback_only() {
        assert!(check_listen("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(check_listen("[::1]:8080".parse().unwrap()).is_ok());
        assert!(check_listen("0.0.0.0:8080".parse().unwrap()).is_err());
        assert!(check_listen("10.0.0.5:8080".parse().unwrap()).is_err());
    }
}
