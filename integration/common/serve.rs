//! Talking to the image's inference server through a forwarded port: the demo images
//! serve it through zoa-init's attested TLS front, so these helpers speak HTTPS.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The server answers `/health` within about a minute under TCG; far more means broken.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(480);

/// An HTTPS client that does not check the front's certificate: it is self-signed, made
/// at boot, and only an attestation document can vouch for it. Tests about that binding
/// use `zoa attest`; these helpers are for what the server answers.
pub fn agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(true)
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(300)))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into()
}

/// `https://127.0.0.1:PORT`: the front on a forwarded port.
pub fn base(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// Polls `/health` until the server answers 200 (true), or the guest has stopped or
/// [`HEALTHY_WITHIN`] has passed (false).
pub fn wait_healthy<T>(agent: &ureq::Agent, base: &str, boot: &JoinHandle<T>) -> bool {
    let start = Instant::now();
    while !boot.is_finished() && start.elapsed() < HEALTHY_WITHIN {
        if let Ok(r) = agent.get(format!("{base}/health")).call() {
            if r.status() == 200 {
                eprintln!("healthy after {:?}", start.elapsed());
                return true;
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    false
}

/// `POST /v1/chat/completions` of "Say hello" for at most `max_tokens`, with the API key
/// as a bearer token when given: the status and the JSON answer.
pub fn chat(
    agent: &ureq::Agent,
    base: &str,
    api_key: Option<&str>,
    max_tokens: u32,
) -> (u16, serde_json::Value) {
    let mut request = agent
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json");
    if let Some(key) = api_key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let mut response = request
        .send(
            serde_json::json!({
                "messages": [{"role": "user", "content": "Say hello"}],
                "max_tokens": max_tokens,
                "temperature": 0,
            })
            .to_string(),
        )
        .expect("POST /v1/chat/completions");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("an answer");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

/// Requests carrying `marker` in every field a client controls: the prompt, the system
/// message, a grammar that does not parse (llama-server 0.7.0 echoes it in its log), a
/// JSON schema, a body that is not JSON, a header, the bearer token, the path and the
/// query. Returns what each was and its status (every one must get an answer).
pub fn send_markers(agent: &ureq::Agent, base: &str, marker: &str) -> Vec<(&'static str, u16)> {
    let chat = |body: serde_json::Value| {
        agent
            .post(format!("{base}/v1/chat/completions"))
            .header("content-type", "application/json")
            .send(body.to_string())
    };
    let message = |content: &str| serde_json::json!([{"role": "user", "content": content}]);
    let requests: Vec<(
        &'static str,
        Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    )> = vec![
        (
            "prompt",
            chat(serde_json::json!({"messages": message(marker), "max_tokens": 1})),
        ),
        (
            "system message",
            chat(serde_json::json!({
                "messages": [{"role": "system", "content": marker}, {"role": "user", "content": "hi"}],
                "max_tokens": 1,
            })),
        ),
        (
            "grammar",
            chat(serde_json::json!({
                "messages": message("hi"),
                "grammar": format!("root ::= {marker} ((("),
                "max_tokens": 1,
            })),
        ),
        (
            "json schema",
            chat(serde_json::json!({
                "messages": message("hi"),
                "json_schema": {"type": "object", "properties": {marker: {"type": marker}}},
                "max_tokens": 1,
            })),
        ),
        (
            "malformed json",
            agent
                .post(format!("{base}/v1/chat/completions"))
                .header("content-type", "application/json")
                .send(format!("{{\"messages\": [{marker}")),
        ),
        (
            "header",
            agent
                .get(format!("{base}/v1/models"))
                .header("x-zoa-marker", marker)
                .header("authorization", format!("Bearer {marker}"))
                .call(),
        ),
        ("path", agent.get(format!("{base}/{marker}")).call()),
        (
            "query",
            agent.get(format!("{base}/v1/models?q={marker}")).call(),
        ),
        (
            "attestation query",
            agent
                .get(format!("{base}/.well-known/zoa/attestation?nonce={marker}"))
                .call(),
        ),
    ];
    requests
        .into_iter()
        .map(|(what, r)| {
            let status = r
                .unwrap_or_else(|e| panic!("{what}: no answer: {e}"))
                .status();
            (what, status.as_u16())
        })
        .collect()
}
