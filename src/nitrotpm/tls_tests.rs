//! Attested TLS end to end without QEMU: zoa-init's TLS front (the code the image runs)
//! with this emulator behind it, and zoa's client (`attestation::online`) and proxy
//! (`attestation::proxy`) in front of it. Here rather than next to those modules: the
//! emulator already depends on `attestation`, and tests must not turn that around.

/// zoa-init's front (the code the image runs) with the emulated NitroTPM behind it, and this
/// client in front of it: the whole attested-TLS exchange on loopback, no QEMU.
mod online {
    use super::super::front_fixture::{front, opener, pcr4_after_setup, setup, Setup};
    use crate::attestation::check::{check, Expectation, Verdict};
    use crate::attestation::online::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use std::time::Duration;
    use std::time::SystemTime;
    use zoa_init::front::attest::OpenTpm;
    use zoa_init::front::identity::Identity;

    const LIMIT: Duration = Duration::from_secs(30);

    fn expectation(s: &Setup, nonce: &[u8], fetched: &Fetched) -> Expectation {
        let spki_sha384: [u8; 48] = openssl::sha::sha384(&fetched.spki);
        Expectation {
            root: Some(s.root.clone()),
            max_age: Some(Duration::from_secs(300)),
            nonce: Some(nonce.to_vec()),
            spki_sha384: Some(spki_sha384),
            ..Expectation::default()
        }
    }

    /// `GET path` over a fresh connection: status and body.
    fn get(target: &Target, path: &str) -> (u16, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let tls = connect(target).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let request = hyper::Request::get(path)
                .header("host", "127.0.0.1")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body.to_vec())
        })
    }

    #[test]
    fn a_fresh_document_binds_the_key_of_this_very_connection() {
        let s = setup();
        let image = Identity::generate("llama-server").unwrap();
        let target = front(&image, &image, opener(&s.tpm), s.upstream);
        let nonce = [0x5a; 32];
        let fetched = fetch(&target, &nonce, LIMIT).unwrap();
        assert_eq!(
            fetched.spki, image.spki,
            "the SPKI as the front presented it"
        );
        let report = check(
            &fetched.document,
            &expectation(&s, &nonce, &fetched),
            SystemTime::now(),
        );
        assert_eq!(report.verdict, Verdict::Ok, "{:#?}", report.checks);
        assert_eq!(report.pcrs["4"], pcr4_after_setup());

        // Every other path reaches the server behind the front.
        assert_eq!(get(&target, "/v1/models"), (200, b"hello".to_vec()));
        // The endpoint refuses what the contract refuses, without echoing it.
        let (status, body) = get(&target, &format!("{ATTESTATION_PATH}?nonce=zz-MARKER"));
        assert_eq!(status, 400);
        assert!(!String::from_utf8_lossy(&body).contains("MARKER"));
        assert_eq!(
            get(
                &target,
                &format!("{ATTESTATION_PATH}?nonce={}", "00".repeat(65))
            )
            .0,
            400
        );
        // Without a nonce the document has none.
        let (status, document) = get(&target, ATTESTATION_PATH);
        assert_eq!(status, 200);
        let parsed = crate::attestation::parse(&document).unwrap();
        assert_eq!(parsed.document.nonce, None);
    }

    #[test]
    fn a_relay_with_its_own_key_passing_the_image_s_documents_through_is_refused() {
        let s = setup();
        let image = Identity::generate("llama-server").unwrap();
        let relay = Identity::generate("llama-server").unwrap();
        let target = front(&relay, &image, opener(&s.tpm), s.upstream);
        let nonce = [1; 16];
        let fetched = fetch(&target, &nonce, LIMIT).unwrap();
        let report = check(
            &fetched.document,
            &expectation(&s, &nonce, &fetched),
            SystemTime::now(),
        );
        assert_eq!(report.verdict, Verdict::KeyMismatch, "{:#?}", report.checks);
    }

    #[test]
    fn a_replayed_document_is_refused_by_its_nonce() {
        let s = setup();
        let image = Identity::generate("llama-server").unwrap();
        let target = front(&image, &image, opener(&s.tpm), s.upstream);
        let old = fetch(&target, &[1; 16], LIMIT).unwrap();
        let report = check(
            &old.document,
            &expectation(&s, &[2; 16], &old),
            SystemTime::now(),
        );
        assert_eq!(
            report.verdict,
            Verdict::NonceMismatch,
            "{:#?}",
            report.checks
        );
    }

    #[test]
    fn without_a_nitrotpm_the_endpoint_answers_503_and_serving_goes_on() {
        let s = setup();
        let image = Identity::generate("llama-server").unwrap();
        let no_tpm: OpenTpm = Box::new(|| Err("/dev/tpm0: no such device".into()));
        let target = front(&image, &image, no_tpm, s.upstream);
        match fetch(&target, &[1; 8], LIMIT) {
            Err(FetchError::Status { status: 503, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(get(&target, "/health"), (200, b"hello".to_vec()));
    }

    #[test]
    fn a_server_that_is_down_is_502() {
        let s = setup();
        let image = Identity::generate("llama-server").unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let target = front(&image, &image, opener(&s.tpm), port);
        assert_eq!(get(&target, "/health").0, 502);
    }
}

mod proxy {
    use super::super::front_fixture::{front, opener, pcr4_after_setup, setup, Setup, Switch};
    use super::super::swtpm::extend_sha384;
    use crate::attestation::check::ExpectedPcrs;
    use crate::attestation::check::{Expectation, Verdict};
    use crate::attestation::online::Target;
    use crate::attestation::proxy::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use zoa_init::front::identity::Identity;

    fn settings(s: &Setup, upstream: Target, pcr4: &str, max_age: Duration) -> Settings {
        Settings {
            upstream,
            expect: Expectation {
                root: Some(s.root.clone()),
                pcrs: vec![ExpectedPcrs {
                    release: None,
                    pcrs: [(4, pcr4.to_owned())].into(),
                }],
                ..Expectation::default()
            },
            max_age,
            timeout: Duration::from_secs(30),
        }
    }

    /// A proxy for `settings` on loopback, with its log lines: (base URL, log).
    fn start(
        rt: &tokio::runtime::Runtime,
        settings: Settings,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let (proxy, _) = rt
            .block_on(Proxy::attest_first(
                settings,
                Box::new(move |line| sink.lock().unwrap().push(line.to_owned())),
            ))
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(Arc::new(proxy).serve(listener));
        (base, log)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A plain-HTTP client, as curl would be.
    fn get(base: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent.get(format!("{base}/v1/models")).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    #[test]
    fn clients_reach_the_attested_server_and_each_attestation_is_logged() {
        let s = setup();
        let image = Identity::generate("llama-server").unwrap();
        let target = front(&image, &image, opener(&s.tpm), s.upstream);
        let rt = runtime();
        let (base, log) = start(
            &rt,
            settings(&s, target, &pcr4_after_setup(), Duration::ZERO),
        );
        assert_eq!(get(&base), (200, "hello".into()));
        assert_eq!(get(&base), (200, "hello".into()));
        // max_age 0: every new connection re-attested, each logged with the key.
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 3, "{log:#?}");
        let key = hex::encode(openssl::sha::sha384(&image.spki));
        assert!(
            log.iter()
                .all(|l| l.starts_with("zoa proxy: attested https://127.0.0.1:")
                    && l.ends_with(&key)),
            "{log:#?}"
        );
    }

    #[test]
    fn another_image_is_refused_before_anything_is_served() {
        let s = setup();
        let image = Identity::generate("llama-server").unwrap();
        let target = front(&image, &image, opener(&s.tpm), s.upstream);
        let rt = runtime();
        let refused = rt
            .block_on(Proxy::attest_first(
                settings(&s, target, &"00".repeat(48), Duration::from_secs(300)),
                Box::new(|_| {}),
            ))
            .err()
            .expect("refused");
        assert_eq!(refused.verdict(), Some(Verdict::PcrMismatch), "{refused}");
    }

    #[test]
    fn a_server_with_another_key_at_the_same_address_is_refused() {
        let s = setup();
        let image = Identity::generate("llama-server").unwrap();
        let first = front(&image, &image, opener(&s.tpm), s.upstream);
        let switch = Switch::new(first.port);
        let target: Target = format!("https://127.0.0.1:{}", switch.port)
            .parse()
            .unwrap();
        let rt = runtime();
        let (base, log) = start(
            &rt,
            settings(&s, target, &pcr4_after_setup(), Duration::from_secs(300)),
        );
        assert_eq!(get(&base).0, 200);
        // The same PCRs, honestly attested, but a new key (a reboot, or another instance):
        // the pinned key decides.
        let rebooted = Identity::generate("llama-server").unwrap();
        let second = front(&rebooted, &rebooted, opener(&s.tpm), s.upstream);
        switch.point_to(second.port);
        let (status, body) = get(&base);
        assert_eq!(status, 502, "{body}");
        assert!(log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("presents another TLS key")));
    }

    #[test]
    fn changed_pcrs_are_refused_at_the_next_attestation() {
        let s = setup();
        let image = Identity::generate("llama-server").unwrap();
        let target = front(&image, &image, opener(&s.tpm), s.upstream);
        let rt = runtime();
        let mut settings = settings(&s, target, &pcr4_after_setup(), Duration::ZERO);
        // Any PCR4 is accepted; only a change since the first attestation is refused.
        settings.expect.pcrs.clear();
        let (base, log) = start(&rt, settings);
        assert_eq!(get(&base).0, 200);
        extend_sha384(&mut *s.tpm.lock().unwrap(), 4, &[5; 48]).unwrap();
        assert_eq!(get(&base).0, 502);
        assert!(log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("PCRs changed")));
    }
}
