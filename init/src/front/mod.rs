//! The attested TLS front on the serving port (DESIGN.md, "Attested TLS"): TLS 1.3 with a
//! key made at boot, `GET /.well-known/zoa/attestation?nonce=<hex>` answered with a
//! NitroTPM document that binds that key, and every other request forwarded to the
//! server on loopback, bodies streamed both ways as they come (server-sent events too).
//!
//! Nothing a client sends is printed or echoed: the front's error answers are fixed texts,
//! and its console lines carry counts and its own state only.

pub mod attest;
pub mod identity;

use attest::{Attester, BadQuery};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// A client has this long for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// And this long for each request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

type Body = BoxBody<Bytes, hyper::Error>;

/// How often the front prints its counts on the console (when they changed).
const COUNTS_EVERY: Duration = Duration::from_secs(60);

/// What the front serves with, shared by every connection.
pub struct Front {
    tls: Arc<ServerConfig>,
    attester: Attester,
    upstream: SocketAddr,
    attestations: Semaphore,
    connections: Arc<Semaphore>,
    counts: Counts,
}

/// What the console may learn about the traffic: numbers, never content.
#[derive(Default)]
pub struct Counts {
    forwarded: AtomicU64,
    documents: AtomicU64,
    attestation_failures: AtomicU64,
    refused: AtomicU64,
    upstream_errors: AtomicU64,
}

impl Counts {
    fn add(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed)
    }

    /// `tls counts requests <n> attestations <n> attestation-failures <n> refused <n>
    /// upstream-errors <n>`.
    pub fn line(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "tls counts requests {} attestations {} attestation-failures {} refused {} upstream-errors {}",
            get(&self.forwarded),
            get(&self.documents),
            get(&self.attestation_failures),
            get(&self.refused),
            get(&self.upstream_errors)
        )
    }
}

impl Front {
    /// A front with `identity`'s key and certificate, documents from `attester`, requests
    /// forwarded to `127.0.0.1:upstream_port`.
    pub fn new(
        identity: &identity::Identity,
        attester: Attester,
        upstream_port: u16,
        max_attestations: u32,
        max_connections: u32,
    ) -> Result<Front, String> {
        Ok(Front {
            tls: Arc::new(tls_config(identity)?),
            attester,
            upstream: SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port)),
            attestations: Semaphore::new(max_attestations as usize),
            connections: Arc::new(Semaphore::new(max_connections as usize)),
            counts: Counts::default(),
        })
    }

    /// Serves `listener` until the process ends, on a thread of its own (a single-threaded
    /// runtime: the work is I/O, and the TPM's turns run on its blocking pool).
    pub fn spawn(self, listener: TcpListener) -> Result<std::thread::JoinHandle<()>, String> {
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("tls: the serving socket: {e}"))?;
        std::thread::Builder::new()
            .name("tls-front".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(rt) => rt.block_on(Arc::new(self).serve(listener)),
                    Err(e) => crate::console::say(&format!("tls: no runtime: {e}")),
                }
            })
            .map_err(|e| format!("tls: starting the front's thread: {e}"))
    }

    async fn serve(self: Arc<Self>, listener: TcpListener) {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return crate::console::say(&format!("tls: the serving socket: {e}")),
        };
        let acceptor = TlsAcceptor::from(self.tls.clone());
        tokio::spawn(self.clone().print_counts());
        loop {
            let Ok(permit) = self.connections.clone().acquire_owned().await else {
                return;
            };
            let Ok((tcp, _)) = listener.accept().await else {
                // EMFILE and the like: try again shortly rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            // Each streamed event goes out as it comes: no Nagle delay waiting for the
            // client's ACK (it cost ~40 ms at the 99th percentile of time to first token).
            let _ = tcp.set_nodelay(true);
            let front = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let Ok(Ok(tls)) =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let front = front.clone();
                    async move { Ok::<_, hyper::Error>(front.route(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    }

    /// Prints [`Counts::line`] every [`COUNTS_EVERY`] when it changed.
    async fn print_counts(self: Arc<Self>) {
        let mut last = self.counts.line();
        loop {
            tokio::time::sleep(COUNTS_EVERY).await;
            let now = self.counts.line();
            if now != last {
                crate::console::say(&now);
                last = now;
            }
        }
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let response = if req.uri().path() == attest::PATH {
            self.clone()
                .attestation(req.method(), req.uri().query())
                .await
        } else {
            Counts::add(&self.counts.forwarded);
            forward(req, self.upstream).await
        };
        match response.status() {
            StatusCode::BAD_GATEWAY => Counts::add(&self.counts.upstream_errors),
            StatusCode::BAD_REQUEST
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::TOO_MANY_REQUESTS => Counts::add(&self.counts.refused),
            _ => 0,
        };
        response
    }

    /// The counts so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The attestation endpoint: `200` with the document, `400` for a bad query, `405` for
    /// another method, `429` when `max_attestations` are under way, `503` when the TPM
    /// gives none.
    async fn attestation(self: Arc<Self>, method: &Method, query: Option<&str>) -> Response<Body> {
        if method != Method::GET {
            return fixed(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        let nonce = match attest::nonce_from_query(query) {
            Ok(nonce) => nonce,
            Err(BadQuery(why)) => return fixed(StatusCode::BAD_REQUEST, &format!("{why}\n")),
        };
        let Ok(_turn) = self.attestations.try_acquire() else {
            return fixed(
                StatusCode::TOO_MANY_REQUESTS,
                "too many attestations at once\n",
            );
        };
        let front = self.clone();
        let made = tokio::task::spawn_blocking(move || front.attester.document(nonce.as_deref()));
        match made.await {
            Ok(Ok(document)) => {
                Counts::add(&self.counts.documents);
                let mut response = Response::new(full(Bytes::from(document)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/cbor"));
                response
            }
            Ok(Err(e)) => {
                // The first failure's reason, then only the count: a client must not be
                // able to flood the console.
                if Counts::add(&self.counts.attestation_failures) == 0 {
                    crate::console::say(&format!("tls attestation failed: {e}"));
                }
                fixed(StatusCode::SERVICE_UNAVAILABLE, "no attestation document\n")
            }
            Err(_) => {
                Counts::add(&self.counts.attestation_failures);
                fixed(StatusCode::SERVICE_UNAVAILABLE, "no attestation document\n")
            }
        }
    }
}

/// TLS 1.3 only, ALPN `http/1.1`, the boot's key and certificate, no client certificates.
fn tls_config(identity: &identity::Identity) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![identity.certificate.clone()], identity.private_key())
        .map_err(|e| format!("tls: the boot's key and certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Sends `req` to the server at `upstream` on a connection of its own and streams the
/// answer back. The server's being down is `502`, with a fixed text.
async fn forward(mut req: Request<Incoming>, upstream: SocketAddr) -> Response<Body> {
    remove_hop_by_hop(req.headers_mut());
    let Ok(tcp) = tokio::net::TcpStream::connect(upstream).await else {
        return fixed(StatusCode::BAD_GATEWAY, "the inference server is not up\n");
    };
    let _ = tcp.set_nodelay(true);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(tcp)).await
    else {
        return fixed(StatusCode::BAD_GATEWAY, "the inference server is not up\n");
    };
    tokio::spawn(connection);
    match sender.send_request(req).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(_) => fixed(
            StatusCode::BAD_GATEWAY,
            "the inference server did not answer\n",
        ),
    }
}

/// Headers that describe one hop (RFC 9110 section 7.6.1), and those `Connection` names:
/// each side of the front frames its own connection.
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

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An answer of the front's own: `status` and a fixed text.
fn fixed(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::copy_from_slice(text.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Binds the serving port on every IPv4 address (the instance's one interface).
pub fn bind(port: u16) -> Result<TcpListener, String> {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| format!("tls: port {port}: {e}"))
}
