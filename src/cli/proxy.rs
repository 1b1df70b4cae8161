//! `zoa proxy URL --listen ADDR`: attest the server, then forward loopback clients to it
//! over attested TLS only (the library's `attestation::proxy`).

use anyhow::{Context, Result};
use std::sync::Arc;

use super::args::ProxyArgs;
use super::attest::{expectation, status_of};
use super::exit::ExitStatus;
use zoa::attestation::proxy::{check_listen, Proxy, Settings};

pub fn proxy(args: &ProxyArgs) -> Result<ExitStatus> {
    check_listen(args.listen).map_err(anyhow::Error::msg)?;
    let settings = Settings {
        upstream: args.url.parse()?,
        expect: expectation(&args.expect)?,
        max_age: args.max_age,
        timeout: args.timeout,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the proxy's runtime")?;
    runtime.block_on(async {
        let log = Box::new(|line: &str| eprintln!("{line}"));
        let proxy = match Proxy::attest_first(settings, log).await {
            Ok((proxy, _report)) => proxy,
            Err(refusal) => match refusal.verdict() {
                // A judged document: its verdict's status, as `zoa attest` gives.
                Some(verdict) => {
                    eprintln!("zoa: error: {refusal}");
                    return Ok(status_of(verdict));
                }
                None => return Err(anyhow::Error::new(refusal)),
            },
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!(
            "zoa proxy: http://{} -> {} (attested TLS only)",
            args.listen, args.url
        );
        Arc::new(proxy).serve(listener).await;
        Ok(ExitStatus::OK)
    })
}
