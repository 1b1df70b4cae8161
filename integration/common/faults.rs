//! A fault-injecting HTTP/1.1 proxy to put between a `zoa` command and moto.
//!
//! ```ignore
//! let moto = Moto::start();
//! let proxy = FaultProxy::start(&moto.endpoint());
//! proxy.fail("RegisterImage", 2, Fault::InternalError); // the first two fail
//! proxy.fail_nth(Matcher::path_prefix("/snapshots"), 3, 1, Fault::Drop); // the third
//! proxy.apply(&mut cmd); // AWS_ENDPOINT_URL = the proxy
//! ...
//! assert_eq!(proxy.count("RegisterImage"), 3);
//! ```
//!
//! Every request is decoded (service, operation: see [`Call`]) and counted. A request that
//! no rule claims goes to moto on a fresh connection (moto closes each one) and its answer
//! comes back on the client's connection, which is kept alive. Injected errors carry the
//! body each service's SDK parses for the error code, and an `x-amzn-RequestId` header
//! `zoa-fault-<n>` (the Rust SDK reads request ids from that header only).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::moto::http::{self, Head};
use super::moto::{apply_aws_env, Call};

/// What a rule does to a request it claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A server error in the service's own words (HTTP 500): EC2 `InternalError`, IAM
    /// `ServiceFailure`, AutoScaling and STS `InternalFailure`, KMS `KMSInternalException`,
    /// EBS `InternalServerException`.
    InternalError,
    /// Throttling: EC2 `RequestLimitExceeded` (HTTP 503, as EC2 sends it), IAM,
    /// AutoScaling and STS `Throttling` (400), KMS and EBS `ThrottlingException` (400).
    /// The Rust SDK retries all of them.
    Throttle,
    /// Any error code, in the service's error format.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// Reads the request, answers nothing for this long, then closes the connection.
    Timeout(Duration),
    /// Reads the request, then closes the connection without an answer.
    Drop,
    /// Answers with this body (HTTP 200, the service's content type) instead of moto: a
    /// stand-in for the few operations moto does not implement (AutoScaling's instance
    /// refresh), in the documented response shape. Used sparingly, and said so where used.
    Answer(String),
}

/// Which requests a rule counts.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// The decoded operation: `"CreateKey"`, or `"kms:CreateKey"` for one service only.
    Operation(String),
    /// The `X-Amz-Target` header contains this (JSON protocol: KMS).
    TargetContains(String),
    /// The form parameter `Action` is exactly this (query protocol: EC2, IAM, AutoScaling).
    Action(String),
    /// The request path starts with this (REST: the EBS direct APIs, `/snapshots`).
    PathPrefix(String),
    /// Every request.
    Any,
}

impl Matcher {
    pub fn operation(op: &str) -> Matcher {
        Matcher::Operation(op.to_string())
    }

    pub fn target_contains(s: &str) -> Matcher {
        Matcher::TargetContains(s.to_string())
    }

    pub fn action(a: &str) -> Matcher {
        Matcher::Action(a.to_string())
    }

    pub fn path_prefix(p: &str) -> Matcher {
        Matcher::PathPrefix(p.to_string())
    }

    pub fn matches(&self, call: &Call) -> bool {
        match self {
            Matcher::Operation(op) => call.is(op),
            Matcher::TargetContains(s) => call
                .header("x-amz-target")
                .is_some_and(|t| t.contains(s.as_str())),
            Matcher::Action(a) => call.form.iter().any(|(k, v)| k == "Action" && v == a),
            Matcher::PathPrefix(p) => call.path.starts_with(p.as_str()),
            Matcher::Any => true,
        }
    }
}

/// `"RegisterImage"` or `"ec2:RegisterImage"` as an operation matcher.
impl From<&str> for Matcher {
    fn from(op: &str) -> Matcher {
        Matcher::operation(op)
    }
}

/// A fault the proxy injected.
#[derive(Clone, Debug)]
pub struct Injected {
    /// `zoa-fault-<n>`, also the `x-amzn-RequestId` of an injected error.
    pub request_id: String,
    /// `service:Operation` of the request it answered.
    pub operation: String,
    pub fault: Fault,
}

struct Rule {
    matcher: Matcher,
    /// 1-based index of the first matching request to fail.
    first: usize,
    times: usize,
    fault: Fault,
    matched: usize,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    counts: BTreeMap<String, usize>,
    operations: Vec<String>,
    /// Every request seen, decoded (block uploads without their data).
    calls: Vec<Call>,
    injected: Vec<Injected>,
    /// `service:Operation` of each request moto refused (AccessDenied), with its message.
    refusals: Vec<(String, String)>,
}

/// Work run once, when the first request a matcher claims arrives (before it is forwarded).
type Hook = (Matcher, Box<dyn FnOnce() + Send>);

/// Decides the answer to each request a matcher claims (`None`: forward it): a stand-in for
/// behaviour moto lacks that depends on the request (KMS's `Recipient`).
pub type Responder = Box<dyn Fn(&Call) -> Option<Fault> + Send + Sync>;

struct Shared {
    upstream: SocketAddr,
    hooks: Mutex<Vec<Hook>>,
    responders: Mutex<Vec<(Matcher, Arc<Responder>)>>,
    ebs_block_size: Mutex<Option<u64>>,
    /// Stand-in answers to requests these match go to moto first, and its refusal (401,
    /// 403) wins.
    authorize_answers: Mutex<Vec<Matcher>>,
    /// An access key (id, secret) whose form-encoded requests are re-encoded and
    /// re-signed the way moto checks them (see [`FaultProxy::resign_for_moto`]).
    resign: Mutex<Option<(String, String)>>,
    /// moto's IAM refusals are re-written in the service's own error format.
    readable_refusals: AtomicBool,
    state: Mutex<State>,
    stop: AtomicBool,
    next_fault: AtomicU64,
    next_conn: AtomicU64,
    conns: Mutex<HashMap<u64, TcpStream>>,
}

/// The proxy: listens on 127.0.0.1, stops on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`, e.g. `Moto::endpoint()`).
    pub fn start(upstream_endpoint: &str) -> FaultProxy {
        let upstream: SocketAddr = upstream_endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream_endpoint}: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            hooks: Mutex::new(Vec::new()),
            responders: Mutex::new(Vec::new()),
            ebs_block_size: Mutex::new(None),
            authorize_answers: Mutex::new(Vec::new()),
            resign: Mutex::new(None),
            readable_refusals: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            next_fault: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
                    if let Ok(clone) = stream.try_clone() {
                        shared.conns.lock().unwrap().insert(id, clone);
                    }
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        let _ = serve(&shared, stream);
                        shared.conns.lock().unwrap().remove(&id);
                    });
                }
            })
        };
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points `cmd` at the proxy, with dummy credentials (see `apply_aws_env`).
    pub fn apply(&self, cmd: &mut Command) {
        apply_aws_env(cmd, &self.endpoint());
    }

    /// Runs `work` once, when the first request `matcher` matches arrives, before that
    /// request goes on: a fault point inside a running command (e.g. a file replaced
    /// after the command verified it and before it uploads).
    pub fn before(&self, matcher: impl Into<Matcher>, work: impl FnOnce() + Send + 'static) {
        self.shared
            .hooks
            .lock()
            .unwrap()
            .push((matcher.into(), Box::new(work)));
    }

    /// Stand-ins for the two AutoScaling calls moto lacks (instance refresh): every
    /// StartInstanceRefresh starts `refresh-1` of group `asg`, which every
    /// DescribeInstanceRefreshes then reports `Successful`, in the documented response
    /// shapes. (A real refresh replaces instances; nothing here boots them.)
    pub fn answer_instance_refreshes(&self, asg: &str) {
        const NS: &str = "http://autoscaling.amazonaws.com/doc/2011-01-01/";
        self.fail(
            "autoscaling:DescribeInstanceRefreshes",
            1_000_000,
            Fault::Answer(format!(
                "<DescribeInstanceRefreshesResponse xmlns=\"{NS}\"><DescribeInstanceRefreshesResult><InstanceRefreshes><member><InstanceRefreshId>refresh-1</InstanceRefreshId><AutoScalingGroupName>{asg}</AutoScalingGroupName><Status>Successful</Status><PercentageComplete>100</PercentageComplete></member></InstanceRefreshes></DescribeInstanceRefreshesResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeInstanceRefreshesResponse>"
            )),
        );
        self.fail(
            "autoscaling:StartInstanceRefresh",
            1_000_000,
            Fault::Answer(format!(
                "<StartInstanceRefreshResponse xmlns=\"{NS}\"><StartInstanceRefreshResult><InstanceRefreshId>refresh-1</InstanceRefreshId></StartInstanceRefreshResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></StartInstanceRefreshResponse>"
            )),
        );
    }

    /// Sends each request `matcher` matches that a stand-in answers ([`Fault::Answer`]) to
    /// moto first, and passes moto's answer on instead when moto refuses it (HTTP 401 or
    /// 403): with moto's IAM enforcement on, moto checks the caller's permission for an
    /// operation it does not implement before it says so, so the stand-in is authorized
    /// as moto's own operations are.
    pub fn authorize_answers_upstream(&self, matcher: impl Into<Matcher>) {
        self.shared
            .authorize_answers
            .lock()
            .unwrap()
            .push(matcher.into());
    }

    /// With moto's IAM enforcement on, moto checks a request's SigV4 signature over the
    /// form body *it* re-encodes from the parameters it parsed (werkzeug consumes the body:
    /// moto/core/responses.py), with Python's `urlencode`, which writes a space as `+`;
    /// the Rust SDK writes `%20`, so every query-protocol request with a space in a value
    /// (a description, a tag such as `zoa:release=tiny 1`) fails with AuthFailure. For
    /// requests signed with this access key, the proxy writes spaces as `+` (the same
    /// parameters) and signs the request again with the key, exactly as the SDK did
    /// (same headers, date and scope): moto then verifies a real signature and checks
    /// the caller's permissions as for any other request.
    pub fn resign_for_moto(&self, access_key_id: &str, secret: &str) {
        *self.shared.resign.lock().unwrap() = Some((access_key_id.to_owned(), secret.to_owned()));
    }

    /// moto writes its IAM refusals (`AccessDenied`, HTTP 403) in one XML shape for every
    /// service (`<ErrorResponse><Errors><Error>`), which the SDK's parsers of EC2, IAM,
    /// Auto Scaling (other XML shapes), KMS and EBS (JSON) cannot read: zoa would report
    /// an "unhandled error". From now on the proxy re-writes them in the service's own
    /// format, code and message unchanged.
    pub fn readable_refusals(&self) {
        self.shared.readable_refusals.store(true, Ordering::SeqCst);
    }

    /// Fails the first `times` requests that `matcher` matches.
    pub fn fail(&self, matcher: impl Into<Matcher>, times: usize, fault: Fault) {
        self.fail_nth(matcher, 1, times, fault);
    }

    /// Fails the `nth` (1-based) to the `nth + times - 1`th requests that `matcher`
    /// matches, counted from now. When several rules claim a request the first added wins;
    /// every rule counts every request it matches.
    pub fn fail_nth(&self, matcher: impl Into<Matcher>, nth: usize, times: usize, fault: Fault) {
        assert!(nth >= 1, "requests are counted from 1");
        self.shared.state.lock().unwrap().rules.push(Rule {
            matcher: matcher.into(),
            first: nth,
            times,
            fault,
            matched: 0,
        });
    }

    /// Rewrites the `BlockSize` of moto's StartSnapshot answers (512, where AWS says
    /// 524288): the `coldsnap` crate cuts its upload into blocks of that size, so with
    /// moto's 512 a 1 MiB image takes 2048 PutSnapshotBlock calls. moto checks neither
    /// the length nor the checksum of a block it is sent.
    pub fn set_ebs_block_size(&self, size: u64) {
        *self.shared.ebs_block_size.lock().unwrap() = Some(size);
    }

    /// Lets `respond` answer every request `matcher` claims that no rule claims; requests
    /// it returns `None` for go to moto.
    pub fn respond(&self, matcher: impl Into<Matcher>, respond: Responder) {
        self.shared
            .responders
            .lock()
            .unwrap()
            .push((matcher.into(), Arc::new(respond)));
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        self.shared.state.lock().unwrap().rules.clear();
    }

    /// How many requests of `operation` (`"RunInstances"` or `"ec2:RunInstances"`) the
    /// proxy has seen, faulted or not.
    pub fn count(&self, operation: &str) -> usize {
        let state = self.shared.state.lock().unwrap();
        state
            .counts
            .iter()
            .filter(|(k, _)| {
                *k == operation
                    || (!operation.contains(':')
                        && k.rsplit_once(':').is_some_and(|(_, op)| op == operation))
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests seen per `service:Operation` (`METHOD /path` when undecoded).
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.shared.state.lock().unwrap().counts.clone()
    }

    /// Every request seen, as `service:Operation`, in order of arrival.
    pub fn operations(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().operations.clone()
    }

    /// Every request seen, decoded, in order of arrival: the ones the proxy answered
    /// itself too (which moto's recording lacks).
    pub fn calls(&self) -> Vec<Call> {
        self.shared.state.lock().unwrap().calls.clone()
    }

    /// The faults injected so far, in order.
    pub fn injected(&self) -> Vec<Injected> {
        self.shared.state.lock().unwrap().injected.clone()
    }

    /// Forgets the counts, operations and injected faults (not the rules).
    pub fn reset_counts(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.counts.clear();
        state.operations.clear();
        state.calls.clear();
        state.injected.clear();
        state.refusals.clear();
    }

    /// The requests moto refused (`AccessDenied`) since the last `reset_counts`, as
    /// `(service:Operation, message)`, when [`readable_refusals`](Self::readable_refusals)
    /// is on.
    pub fn refusals(&self) -> Vec<(String, String)> {
        self.shared.state.lock().unwrap().refusals.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        for (_, c) in self.shared.conns.lock().unwrap().drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Shared {
    /// Counts the request and returns the fault to inject, if a rule claims it.
    fn decide(&self, call: &Call) -> Option<Injected> {
        let key = if call.operation.is_empty() {
            format!("{} {}", call.method, call.path)
        } else {
            call.name()
        };
        let mut state = self.state.lock().unwrap();
        *state.counts.entry(key.clone()).or_default() += 1;
        state.operations.push(key.clone());
        let mut kept = call.clone();
        if kept.is("ebs:PutSnapshotBlock") {
            kept.body.clear();
        }
        state.calls.push(kept);
        let mut chosen = None;
        for rule in state.rules.iter_mut() {
            if !rule.matcher.matches(call) {
                continue;
            }
            rule.matched += 1;
            let in_window = rule.matched >= rule.first && rule.matched < rule.first + rule.times;
            if chosen.is_none() && in_window {
                chosen = Some(rule.fault.clone());
            }
        }
        let fault = match chosen {
            Some(f) => f,
            None => {
                // Outside the state lock: a responder may call moto itself.
                drop(state);
                let responder = self
                    .responders
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(m, _)| m.matches(call))
                    .map(|(_, r)| Arc::clone(r))?;
                let fault = responder(call)?;
                state = self.state.lock().unwrap();
                fault
            }
        };
        let n = self.next_fault.fetch_add(1, Ordering::SeqCst);
        let injected = Injected {
            request_id: format!("zoa-fault-{n}"),
            operation: key,
            fault,
        };
        state.injected.push(injected.clone());
        Some(injected)
    }

    /// Sleeps up to `d`, returning early when the proxy stops.
    fn hold(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(20)));
        }
    }
}

impl Shared {
    fn run_hooks(&self, call: &Call) {
        let due: Vec<Hook> = {
            let mut hooks = self.hooks.lock().unwrap();
            let (due, keep) = hooks.drain(..).partition(|(m, _)| m.matches(call));
            *hooks = keep;
            due
        };
        for (_, work) in due {
            work();
        }
    }
}

/// Serves one client connection: requests one after another until it closes.
fn serve(shared: &Shared, client: TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client;
    loop {
        let Some(head) = http::read_head(&mut reader)? else {
            return Ok(());
        };
        let mut parts = head.start.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let version = parts.next().unwrap_or("HTTP/1.1").to_string();
        if head
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut body = http::read_request_body(&mut reader, &head)?;
        let mut head = head;
        if let Some((id, secret)) = shared.resign.lock().unwrap().clone() {
            resign_form(&mut head, &mut body, &target, &method, &id, &secret);
        }
        let connection = head.header("connection").unwrap_or("").to_ascii_lowercase();
        let close = connection.contains("close")
            || (version == "HTTP/1.0" && !connection.contains("keep-alive"));

        let call = Call::decode(&method, &target, &head.headers, &body);
        shared.run_hooks(&call);
        match shared.decide(&call) {
            None => {
                let (status, reason, headers, body) =
                    match forward(shared.upstream, &method, &target, &head, &body) {
                        Ok((up, body)) => {
                            let mut p = up.start.splitn(3, ' ');
                            p.next();
                            let status = p.next().and_then(|s| s.parse().ok()).unwrap_or(502);
                            let reason = p.next().unwrap_or("").to_string();
                            let body = match *shared.ebs_block_size.lock().unwrap() {
                                Some(size) if call.is("ebs:StartSnapshot") => {
                                    with_block_size(body, size)
                                }
                                _ => body,
                            };
                            match readable_refusal(shared, &call, status, &body) {
                                Some((status, headers, body)) => (status, reason, headers, body),
                                None => (status, reason, up.headers, body),
                            }
                        }
                        Err(e) => (
                            502,
                            "Bad Gateway".to_string(),
                            vec![("Content-Type".to_string(), "text/plain".to_string())],
                            format!("zoa fault proxy: upstream: {e}").into_bytes(),
                        ),
                    };
                write_response(
                    &mut writer,
                    status,
                    &reason,
                    &headers,
                    &body,
                    &method,
                    close,
                )?;
            }
            Some(Injected {
                fault: Fault::Drop, ..
            }) => {
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Injected {
                fault: Fault::Timeout(d),
                ..
            }) => {
                shared.hold(d);
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Injected {
                fault: Fault::Answer(_),
                ..
            }) if shared
                .authorize_answers
                .lock()
                .unwrap()
                .iter()
                .any(|m| m.matches(&call))
                && refused_upstream(
                    shared,
                    &method,
                    &target,
                    &head,
                    &body,
                    &mut writer,
                    close,
                )? =>
            {
                if close {
                    let _ = writer.shutdown(Shutdown::Both);
                    return Ok(());
                }
                continue;
            }
            Some(Injected {
                fault: Fault::Answer(body),
                request_id,
                ..
            }) => {
                let content_type = match call.service.as_str() {
                    "kms" | "cloudtrail" => "application/x-amz-json-1.1",
                    "ebs" => "application/json",
                    _ => "text/xml",
                };
                let headers = vec![
                    ("x-amzn-RequestId".to_string(), request_id),
                    ("Content-Type".to_string(), content_type.to_string()),
                ];
                write_response(
                    &mut writer,
                    200,
                    "OK",
                    &headers,
                    body.as_bytes(),
                    &method,
                    close,
                )?;
            }
            Some(Injected {
                fault, request_id, ..
            }) => {
                let (status, headers, body) = error_response(&call, &fault, &request_id);
                write_response(
                    &mut writer,
                    status,
                    reason_phrase(status),
                    &headers,
                    &body,
                    &method,
                    close,
                )?;
            }
        }
        if close {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Asks moto whether it lets the caller make the request (see
/// [`FaultProxy::authorize_answers_upstream`]); when it does not, writes moto's refusal to
/// the client and returns true.
fn refused_upstream(
    shared: &Shared,
    method: &str,
    target: &str,
    head: &Head,
    body: &[u8],
    writer: &mut TcpStream,
    close: bool,
) -> io::Result<bool> {
    let (up, up_body) = forward(shared.upstream, method, target, head, body)?;
    let status = http::status_of(&up);
    if status != 401 && status != 403 {
        return Ok(false);
    }
    let reason = up.start.splitn(3, ' ').nth(2).unwrap_or("").to_string();
    let call = Call::decode(method, target, &head.headers, body);
    let (headers, up_body) = match readable_refusal(shared, &call, status, &up_body) {
        Some((_, headers, body)) => (headers, body),
        None => (up.headers, up_body),
    };
    write_response(writer, status, &reason, &headers, &up_body, method, close)?;
    Ok(true)
}

/// An HTTP answer: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// See [`FaultProxy::readable_refusals`]: moto's `AccessDenied` in the service's format.
fn readable_refusal(shared: &Shared, call: &Call, status: u16, body: &[u8]) -> Option<Answer> {
    if status != 403 || !shared.readable_refusals.load(Ordering::SeqCst) {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let field = |tag: &str| {
        let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
        let end = start + text[start..].find(&format!("</{tag}>"))?;
        Some(text[start..end].to_owned())
    };
    let code = field("Code")?;
    if code != "AccessDenied" {
        return None;
    }
    let message = field("Message").unwrap_or_default();
    shared
        .state
        .lock()
        .unwrap()
        .refusals
        .push((call.name(), message.clone()));
    let fault = Fault::Error {
        status,
        code,
        message,
    };
    Some(error_response(call, &fault, "moto-refusal"))
}

/// See [`FaultProxy::resign_for_moto`]: a form body with `%20` in it, signed with key
/// `id`, gets `+` instead and a new signature over it.
fn resign_form(
    head: &mut Head,
    body: &mut Vec<u8>,
    target: &str,
    method: &str,
    id: &str,
    secret: &str,
) {
    use sha2::{Digest, Sha256};
    let form = head
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let Some(auth) = head.header("authorization").map(str::to_owned) else {
        return;
    };
    let credential = format!("Credential={id}/");
    if !form || !auth.contains(&credential) || !body.windows(3).any(|w| w == b"%20") {
        return;
    }
    let field = |name: &str| {
        auth.split(&format!("{name}="))
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    // "ID/DATE/REGION/SERVICE/aws4_request" → the part after "ID/".
    let scope = field("Credential")[id.len() + 1..].to_owned();
    let signed = field("SignedHeaders");
    *body = String::from_utf8_lossy(body)
        .replace("%20", "+")
        .into_bytes();
    let date = head.header("x-amz-date").unwrap_or_default().to_owned();
    let mut canonical_headers = String::new();
    for name in signed.split(';') {
        let value = if name == "content-length" {
            body.len().to_string()
        } else {
            head.header(name).unwrap_or_default().trim().to_owned()
        };
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let canonical = format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{}",
        hex::encode(Sha256::digest(&body[..]))
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in scope.split('/') {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac_sha256(&key, to_sign.as_bytes()));
    let new_auth = format!(
        "AWS4-HMAC-SHA256 Credential={id}/{scope}, SignedHeaders={signed}, Signature={signature}"
    );
    for (k, v) in head.headers.iter_mut() {
        if k.eq_ignore_ascii_case("authorization") {
            *v = new_auth.clone();
        }
    }
}

/// HMAC-SHA256 (RFC 2104), for [`resign_form`].
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// A StartSnapshot answer with another `BlockSize`.
fn with_block_size(body: Vec<u8>, size: u64) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(mut v) if v.get("BlockSize").is_some() => {
            v["BlockSize"] = size.into();
            v.to_string().into_bytes()
        }
        _ => body,
    }
}

/// Hop-by-hop and framing headers, which the proxy sets itself.
fn is_framing(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "content-length",
        "expect",
        "te",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Sends the request to `upstream` on a new connection, its body re-framed with a
/// Content-Length (a chunked body arrives whole), and reads the whole response.
fn forward(
    upstream: SocketAddr,
    method: &str,
    target: &str,
    head: &Head,
    body: &[u8],
) -> io::Result<(Head, Vec<u8>)> {
    let stream = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut headers: Vec<(&str, &str)> = head
        .headers
        .iter()
        .filter(|(k, _)| !is_framing(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    headers.push(("Connection", "close"));
    let mut writer = stream.try_clone()?;
    http::write_request(
        &mut writer,
        method,
        target,
        &upstream.to_string(),
        &headers,
        body,
    )?;
    let mut reader = BufReader::new(stream);
    let response = loop {
        let h = http::read_head(&mut reader)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if http::status_of(&h) != 100 {
            break h;
        }
    };
    let body = http::read_response_body(&mut reader, &response, method)?;
    Ok((response, body))
}

fn write_response(
    w: &mut TcpStream,
    status: u16,
    reason: &str,
    headers: &[(String, String)],
    body: &[u8],
    method: &str,
    close: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        // A HEAD answer keeps the upstream's Content-Length: it has no body to count.
        if !is_framing(k) || (method == "HEAD" && k.eq_ignore_ascii_case("content-length")) {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if method != "HEAD" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    w.write_all(out.as_bytes())?;
    if method != "HEAD" {
        w.write_all(body)?;
    }
    w.flush()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// The status, code and message of an error fault for `service`.
fn error_code(service: &str, fault: &Fault) -> (u16, String, String) {
    match fault {
        Fault::InternalError => {
            let code = match service {
                "ec2" => "InternalError",
                "iam" => "ServiceFailure",
                "kms" => "KMSInternalException",
                "ebs" => "InternalServerException",
                _ => "InternalFailure",
            };
            (
                500,
                code.to_string(),
                "zoa fault proxy: injected internal error".to_string(),
            )
        }
        Fault::Throttle => {
            let (status, code) = match service {
                "ec2" => (503, "RequestLimitExceeded"),
                "iam" | "autoscaling" | "sts" | "elasticloadbalancing" => (400, "Throttling"),
                _ => (400, "ThrottlingException"),
            };
            (
                status,
                code.to_string(),
                "zoa fault proxy: injected throttling: Rate exceeded".to_string(),
            )
        }
        Fault::Error {
            status,
            code,
            message,
        } => (*status, code.clone(), message.clone()),
        Fault::Timeout(_) | Fault::Drop | Fault::Answer(_) => {
            unreachable!("not an error response")
        }
    }
}

/// An error response in `call`'s service's format:
/// - EC2: `<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>`
/// - IAM, AutoScaling, STS, Elastic Load Balancing (awsQuery):
///   `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`
/// - KMS (awsJson1.1): `{"__type": CODE, "message": ..}`
/// - EBS (restJson1): `{"message": ..}` with the code in `x-amzn-ErrorType`
///
/// all with the id in `x-amzn-RequestId`.
fn error_response(call: &Call, fault: &Fault, request_id: &str) -> Answer {
    let (status, code, message) = error_code(&call.service, fault);
    let mut headers = vec![("x-amzn-RequestId".to_string(), request_id.to_string())];
    let body = match call.service.as_str() {
        "ec2" => {
            headers.push(("Content-Type".into(), "text/xml;charset=UTF-8".into()));
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
                 <Code>{}</Code><Message>{}</Message></Error></Errors>\
                 <RequestID>{}</RequestID></Response>",
                xml_escape(&code),
                xml_escape(&message),
                xml_escape(request_id)
            )
        }
        "iam" | "autoscaling" | "sts" | "elasticloadbalancing" => {
            headers.push(("Content-Type".into(), "text/xml".into()));
            let ns = match call.service.as_str() {
                "iam" => "https://iam.amazonaws.com/doc/2010-05-08/",
                "sts" => "https://sts.amazonaws.com/doc/2011-06-15/",
                "elasticloadbalancing" => {
                    "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"
                }
                _ => "http://autoscaling.amazonaws.com/doc/2011-01-01/",
            };
            let kind = if status >= 500 { "Receiver" } else { "Sender" };
            format!(
                "<ErrorResponse xmlns=\"{ns}\"><Error><Type>{kind}</Type><Code>{}</Code>\
                 <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
                xml_escape(&code),
                xml_escape(&message),
                xml_escape(request_id)
            )
        }
        "ebs" => {
            headers.push(("Content-Type".into(), "application/json".into()));
            headers.push(("x-amzn-ErrorType".into(), code.clone()));
            let mut body = serde_json::json!({ "message": message });
            if code == "ThrottlingException" {
                body["Reason"] = "ACCOUNT_THROTTLED".into();
            }
            body.to_string()
        }
        _ => {
            headers.push(("Content-Type".into(), "application/x-amz-json-1.1".into()));
            serde_json::json!({ "__type": code, "message": message }).to_string()
        }
    };
    (status, headers, body.into_bytes())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
