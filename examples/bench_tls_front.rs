//! Benchmark (not a test): what zoa-init's attested TLS front adds in front of an inference
//! server, and how long `zoa attest https://…` takes, on this host, in one run.
//!
//! - Time to first token of a streamed completion (server-sent events), p50 and p99, straight
//!   to the server over loopback HTTP and through the front (TLS 1.3, one kept-alive
//!   connection each, as an SDK keeps one), alternating.
//! - Throughput of a long event stream through each path.
//! - `zoa attest` end to end: connect, TLS, a fresh document from the emulated NitroTPM over
//!   swtpm, and the whole check.
//!
//! The server is a stand-in that streams like llama-server (`data: {…}\n\n` events, one write
//! each): llama.cpp's own binary is built for Debian sid and does not run on every host, and
//! the point is the front's cost, not the model's.
//!
//! Run: `cargo run --release --example bench_tls_front [ROUNDS]`

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zoa::attestation::check::{check, Expectation, Verdict};
use zoa::attestation::online::{self, Body, Target};
use zoa::nitrotpm::{ca::TestCa, nsm::Nsm, swtpm::Swtpm, Emulator};
use zoa_init::front::attest::{Attester, OpenTpm};
use zoa_init::front::identity::Identity;
use zoa_init::front::{bind, Front};
use zoa_init::tpm2::{Transport, TransportError};

/// Events in a short completion (time to first token) and in a long one (throughput).
const SHORT_EVENTS: usize = 16;
const LONG_EVENTS: usize = 200_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(500), |a| a.parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let swtpm = Swtpm::start()?;
    let nsm = Nsm::new(TestCa::new()?, "i-0123456789abcdef0-tpm0".into());
    let emulator = Emulator::new(swtpm.connect()?, nsm);
    let root = emulator.nsm().ca.root_der()?;
    let tpm = Arc::new(Mutex::new(emulator));

    let upstream = runtime.block_on(start_event_server())?;
    let identity = Identity::generate("bench")?;
    let attester = Attester::new(opener(&tpm), &identity.binding());
    let listener = bind(0)?;
    let front_port = listener.local_addr()?.port();
    Front::new(&identity, attester, upstream.port(), 4, 64)?.spawn(listener)?;
    let target: Target = format!("https://127.0.0.1:{front_port}").parse()?;

    runtime.block_on(async {
        let mut direct = plain_http(upstream).await?;
        let mut fronted = attested_http(&target).await?;
        let (mut ttft_direct, mut ttft_front) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            first_event(&mut direct, SHORT_EVENTS).await?;
            first_event(&mut fronted, SHORT_EVENTS).await?;
        }
        for _ in 0..rounds {
            ttft_direct.push(first_event(&mut direct, SHORT_EVENTS).await?);
            ttft_front.push(first_event(&mut fronted, SHORT_EVENTS).await?);
        }
        let (d50, d99) = percentiles(&mut ttft_direct);
        let (f50, f99) = percentiles(&mut ttft_front);
        println!("time to first event, {rounds} streamed requests each, alternating:");
        println!("  direct (HTTP, loopback)  p50 {d50:>9.1?}  p99 {d99:>9.1?}");
        println!("  through the TLS front    p50 {f50:>9.1?}  p99 {f99:>9.1?}");
        println!(
            "  added by the front       p50 {:>9.1?}  p99 {:>9.1?}",
            f50.saturating_sub(d50),
            f99.saturating_sub(d99)
        );

        let mut best = (0f64, 0f64);
        for _ in 0..3 {
            best.0 = best.0.max(stream_rate(&mut direct, LONG_EVENTS).await?);
            best.1 = best.1.max(stream_rate(&mut fronted, LONG_EVENTS).await?);
        }
        println!("streamed throughput, {LONG_EVENTS} events, best of 3:");
        println!("  direct {:.1} MB/s, through the front {:.1} MB/s: {:.1}% lost", best.0, best.1, 100.0 * (1.0 - best.1 / best.0));

        let mut attest_times = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let nonce = online::random_nonce()?;
            let fetched = online::fetch_async(&target, &nonce, Duration::from_secs(30)).await?;
            let anchor = Expectation {
                root: Some(root.clone()),
                max_age: Some(Duration::from_secs(300)),
                ..Expectation::default()
            };
            let expect = online::for_exchange(&anchor, &nonce, &fetched.spki);
            let report = check(&fetched.document, &expect, SystemTime::now());
            assert_eq!(report.verdict, Verdict::Ok, "{:?}", report.checks);
            attest_times.push(started.elapsed());
        }
        let (a50, a99) = percentiles(&mut attest_times);
        println!("zoa attest end to end (emulated NitroTPM over swtpm), 20 runs: p50 {a50:.1?}, max {a99:.1?}");
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    drop(swtpm);
    Ok(())
}

struct Shared(Arc<Mutex<Emulator<zoa::nitrotpm::swtpm::Stream>>>);

impl Transport for Shared {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.0
            .lock()
            .map_err(|_| TransportError("poisoned".into()))?
            .transact(command)
    }
}

fn opener(tpm: &Arc<Mutex<Emulator<zoa::nitrotpm::swtpm::Stream>>>) -> OpenTpm {
    let tpm = tpm.clone();
    Box::new(move || Ok(Box::new(Shared(tpm.clone())) as Box<dyn Transport + Send>))
}

/// A server that answers `GET /events?n=N` with N server-sent events, each its own write,
/// chunked, on kept-alive connections.
async fn start_event_server() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&seen[..end]).to_string();
                    seen.drain(..end + 4);
                    let n: usize = head
                        .split_once("n=")
                        .and_then(|(_, rest)| rest.split(' ').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1);
                    let header = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    if conn.write_all(header.as_bytes()).await.is_err() {
                        return;
                    }
                    let event = b"data: {\"choices\":[{\"delta\":{\"content\":\" token\"},\"index\":0}],\"object\":\"chat.completion.chunk\"}\n\n";
                    for _ in 0..n {
                        let chunk =
                            [format!("{:x}\r\n", event.len()).as_bytes(), event, b"\r\n"].concat();
                        if conn.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                    if conn.write_all(b"0\r\n\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

async fn plain_http(addr: SocketAddr) -> Result<SendRequest<Body>, Box<dyn std::error::Error>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn attested_http(target: &Target) -> Result<SendRequest<Body>, Box<dyn std::error::Error>> {
    let tls = online::connect(target).await?;
    Ok(online::http_over(target, tls).await?)
}

fn request(n: usize) -> hyper::Request<Body> {
    hyper::Request::get(format!("/events?n={n}"))
        .header("host", "127.0.0.1")
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap_or_else(|_| unreachable!("a valid request"))
}

/// Sends a streamed request, returns the time to its first body bytes, and drains the rest.
async fn first_event(
    http: &mut SendRequest<Body>,
    events: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    http.ready().await?;
    let mut body = http.send_request(request(events)).await?.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        if frame?.data_ref().is_some_and(|d| !d.is_empty()) && first.is_none() {
            first = Some(started.elapsed());
        }
    }
    Ok(first.unwrap_or_else(|| started.elapsed()))
}

/// MB/s of one long stream's body.
async fn stream_rate(
    http: &mut SendRequest<Body>,
    events: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    http.ready().await?;
    let mut body = http.send_request(request(events)).await?.into_body();
    let mut bytes = 0usize;
    while let Some(frame) = body.frame().await {
        bytes += frame?.data_ref().map_or(0, |d| d.len());
    }
    Ok(bytes as f64 / 1e6 / started.elapsed().as_secs_f64())
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}
