//! Talking to the image's inference server through a forwarded port.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The server answers `/health` within about a minute under TCG; far more means broken.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(480);

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(300)))
        .http_status_as_error(false)
        .build()
        .into()
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
