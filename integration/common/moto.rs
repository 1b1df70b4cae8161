//! A private moto server (an AWS API emulator) per test, and readers of what it was sent.
//!
//! `Moto::start()` runs `$ZOA_MOTO_SERVER` (made by `.ci/deps`, exported by `.ci/env`) on
//! 127.0.0.1 with a port of the kernel's choosing, and kills it when dropped. `apply` points
//! a `zoa` command at it with dummy credentials and none of the developer's own AWS config.
//!
//! moto's recorder keeps every request it serves, whole, even the parameters that moto
//! itself ignores (RegisterImage's `TpmSupport`, for one): `recording()` reads them back and
//! `Recorded::call()` names each one's service, operation and parameters.
//!
//! What moto 5.2.5 keeps and checks, as tried (account 123456789012):
//! - EBS direct APIs: StartSnapshot answers `BlockSize: 512` (AWS: 524288, and coldsnap
//!   cuts its upload by it: see `FaultProxy::set_ebs_block_size`), ignores ClientToken,
//!   Encrypted and KmsKeyArn; PutSnapshotBlock checks neither checksum nor length;
//!   CompleteSnapshot checks nothing; the snapshot is "completed" in DescribeSnapshots
//!   (with its tags) from StartSnapshot on; ListChangedBlocks and an unknown snapshot id
//!   are HTTP 500 with an HTML body.
//! - RegisterImage keeps only Name and Description: no tags, block devices (a 15 GiB
//!   `/dev/sda1` from an auto-created snapshot instead), architecture, ENA, TPM or IMDS
//!   support; BootMode reads "uefi" for every image. Names may repeat; unknown snapshots
//!   pass. DescribeImageAttribute tpmSupport/imdsSupport/uefiData is HTTP 500.
//! - RunInstances: unknown AMIs are refused (MOTO_ENABLE_AMI_VALIDATION), unknown
//!   instance types are not; ClientToken is not idempotent; the `client-token` filter is
//!   HTTP 500. AutoScaling instances get only the template's image and type (no profile,
//!   metadata options or security groups); instance refreshes are not implemented (500).
//! - KMS enforces no key policy, takes any policy text, ignores Decrypt's Recipient, and
//!   GetKeyPolicy needs PolicyName; ScheduleKeyDeletion takes only a bare key id and
//!   silently does nothing outside 7..=30 days.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The account moto answers as.
pub const ACCOUNT_ID: &str = "123456789012";
/// The region `apply` sets.
pub const REGION: &str = "us-east-1";

const LOG_LINES: usize = 200;
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto_server, killed and reaped on drop.
pub struct Moto {
    child: Child,
    watchdog: Option<Child>,
    addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<JoinHandle<()>>,
    /// moto's working directory and recording file, removed after it is killed.
    _dir: tempfile::TempDir,
}

/// The moto_server to run: `$ZOA_MOTO_SERVER`, else `moto_server` on PATH.
pub fn moto_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ZOA_MOTO_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "ZOA_MOTO_SERVER={} does not exist: run .ci/deps, then `. .ci/env`",
            p.display()
        );
        return p;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("moto_server");
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "moto_server not found: run .ci/deps (it installs moto into ~/.cache/zoa-ci/venv), \
         then `. .ci/env` to set ZOA_MOTO_SERVER"
    );
}

impl Moto {
    /// Starts moto with `MOTO_EC2_LOAD_DEFAULT_AMIS=false MOTO_ENABLE_AMI_VALIDATION=true`.
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// Starts moto with extra environment variables (e.g.
    /// `MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION=true`). moto reads its boolean settings as
    /// "set to anything non-empty", so "false" turns them on too: leave a setting out to
    /// keep it off.
    pub fn start_with_env(extra: &[(&str, &str)]) -> Moto {
        let bin = moto_server_binary();
        let dir = tempfile::tempdir().expect("tempdir for moto");
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", "0"])
            .current_dir(dir.path())
            .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
            .env("MOTO_ENABLE_AMI_VALIDATION", "true")
            // The recorder appends to this file; the default is ./moto_recording.
            .env("MOTO_RECORDER_FILEPATH", dir.path().join("recording.jsonl"))
            .env_remove("MOTO_ENABLE_RECORDING")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}: run .ci/deps", bin.display()));
        let watchdog = spawn_watchdog(child.id());

        // werkzeug logs to stderr: a warning, then " * Running on http://127.0.0.1:PORT",
        // then one line per request. Both pipes are drained for good, so that moto never
        // blocks on a full pipe; the last lines are kept for diagnostics.
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let mut readers = Vec::new();
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        readers.push(spawn_drain(stderr, Arc::clone(&log), Some(port_tx.clone())));
        readers.push(spawn_drain(stdout, Arc::clone(&log), Some(port_tx)));

        let mut moto = Moto {
            child,
            watchdog,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            readers,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            match port_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(port) => break port,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    moto.fail_start("moto_server closed its output without saying its port")
                }
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                moto.fail_start(&format!("moto_server exited: {status}"));
            }
            if Instant::now() > deadline {
                moto.fail_start("moto_server did not say its port in time");
            }
        };
        moto.addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Wait until it answers; this also creates the (empty) recording file.
        loop {
            match http::request(
                moto.addr,
                "POST",
                "/moto-api/recorder/reset-recording",
                &[],
                b"",
            ) {
                Ok(r) if r.status == 200 => break,
                _ if Instant::now() > deadline => moto.fail_start("moto_server does not answer"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        moto
    }

    fn fail_start(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        panic!("{why}; its last output:\n{}", self.log_tail());
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The moto_server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines moto printed (ANSI colours stripped).
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter().map(|l| format!("{l}\n")).collect()
    }

    /// Points `cmd` at this moto, with dummy credentials: see [`apply_aws_env`].
    pub fn apply(&self, cmd: &mut Command) {
        apply_aws_env(cmd, &self.endpoint());
    }

    /// Forgets every resource (`/moto-api/reset`); the recording is kept.
    pub fn reset(&self) {
        self.moto_api("/moto-api/reset");
    }

    /// Turns moto's IAM enforcement on or off, from the next request on: moto's
    /// `INITIAL_NO_AUTH_ACTION_COUNT` (the number of requests it serves before it checks
    /// each one's signature and the caller's IAM policies), set through its
    /// `/moto-api/reset-auth` to 0 (on) or infinity (off, moto's default). The same
    /// setting as the environment variable, but switchable between a test's steps: the
    /// test's own set-up calls (unsigned) run with it off.
    pub fn set_iam_enforcement(&self, on: bool) {
        let count: &[u8] = if on { b"0" } else { b"inf" };
        let r = http::request(self.addr, "POST", "/moto-api/reset-auth", &[], count)
            .unwrap_or_else(|e| panic!("moto reset-auth: {e}\n{}", self.log_tail()));
        assert_eq!(r.status, 200, "moto reset-auth: {}", r.text());
    }

    /// Records every request from now on (except those to /moto-api).
    pub fn start_recording(&self) {
        self.moto_api("/moto-api/recorder/start-recording");
    }

    pub fn stop_recording(&self) {
        self.moto_api("/moto-api/recorder/stop-recording");
    }

    /// Empties the recording (recording itself stays on or off).
    pub fn clear_recording(&self) {
        self.moto_api("/moto-api/recorder/reset-recording");
    }

    /// The requests recorded so far, oldest first. moto records a request before it
    /// handles it, so failed ones are there too, and SDK retries once per attempt. A body
    /// sent chunked (no Content-Length) is recorded empty: through a `FaultProxy` it
    /// arrives with a Content-Length.
    pub fn recording(&self) -> Vec<Recorded> {
        let r = self.moto_api("/moto-api/recorder/download-recording");
        parse_recording(&String::from_utf8_lossy(&r.body))
    }

    /// The recording, decoded.
    pub fn calls(&self) -> Vec<Call> {
        self.recording().iter().map(Recorded::call).collect()
    }

    /// The recorded operations as `service:Operation`, oldest first.
    pub fn operations(&self) -> Vec<String> {
        self.calls().iter().map(Call::name).collect()
    }

    /// The recorded calls of one operation (`"RunInstances"` or `"ec2:RunInstances"`).
    pub fn calls_of(&self, operation: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.is(operation))
            .collect()
    }

    fn moto_api(&self, path: &str) -> http::Response {
        let r = http::request(self.addr, "POST", path, &[], b"")
            .unwrap_or_else(|e| panic!("moto {path}: {e}\n{}", self.log_tail()));
        assert_eq!(
            r.status,
            200,
            "moto {path}: {}\n{}",
            r.text(),
            self.log_tail()
        );
        r
    }

    /// An unsigned query-protocol call (EC2, IAM, AutoScaling, STS): see [`http::query`].
    pub fn query(&self, service: &str, action: &str, params: &[(&str, &str)]) -> http::Response {
        http::query(self.addr, service, action, params).expect("moto answers")
    }

    /// An unsigned JSON-protocol call: see [`http::json`].
    pub fn json(&self, service: &str, target: &str, body: &str) -> http::Response {
        http::json(self.addr, service, target, body).expect("moto answers")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The watchdog goes first: once moto is reaped its pid may be reused.
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// A shell that kills `pid` when its stdin closes, i.e. when this test process ends in any
/// way, even one that skips `Drop` (SIGKILL, `abort`).
fn spawn_watchdog(pid: u32) -> Option<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read _ignored; kill -9 {pid} 2>/dev/null"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

fn spawn_drain(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<VecDeque<String>>>,
    port_tx: Option<mpsc::Sender<u16>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut port_tx = port_tx;
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = strip_ansi(&String::from_utf8_lossy(&buf));
            let line = line.trim_end().to_string();
            if let Some(port) = port_tx.as_ref().and(running_on_port(&line)) {
                let _ = port_tx.take().expect("checked").send(port);
            }
            let mut log = log.lock().unwrap();
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line);
        }
    })
}

/// The port in werkzeug's " * Running on http://127.0.0.1:PORT".
fn running_on_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("Running on http://")? + "Running on http://".len()..];
    let after_colon = &rest[rest.rfind(':')? + 1..];
    let digits: String = after_colon
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().filter(|p| *p != 0)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Points an AWS SDK program at `endpoint` (moto, or a fault proxy in front of it) with
/// dummy credentials in us-east-1, and keeps the developer's own AWS configuration out:
/// every other `AWS_*` variable is removed (profiles, session tokens, per-service
/// endpoints, `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`, retry settings...), the config and
/// credentials files point at paths that do not exist, and instance metadata is off.
/// Set a test's own `AWS_*` overrides after this.
pub fn apply_aws_env(cmd: &mut Command, endpoint: &str) {
    let inherited = std::env::vars_os().map(|(k, _)| k);
    let set_on_cmd: Vec<_> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
    for k in inherited.chain(set_on_cmd) {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let nowhere = std::env::temp_dir().join("zoa-no-such-aws-config");
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", nowhere.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", nowhere.join("credentials"));
}

/// One request as moto's recorder keeps it (`/moto-api/recorder/download-recording` is
/// JSON lines of `{"headers": {..}, "method": "POST", "url": "http://127.0.0.1:PORT/path?q",
/// "body": "..", "body_encoded": true}`, the body base64 when `body_encoded`).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The path and query of the URL.
    pub fn target(&self) -> &str {
        let rest = self
            .url
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or(&self.url);
        rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn call(&self) -> Call {
        Call::decode(&self.method, self.target(), &self.headers, &self.body)
    }
}

/// Parses a download of moto's recorder.
pub fn parse_recording(text: &str) -> Vec<Recorded> {
    use base64::Engine as _;
    let mut out = Vec::new();
    // moto's threads append to one file, and two large bodies written at once (parallel
    // PutSnapshotBlock calls) can end up on one line: read every whole object on a line.
    let values = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(|line| {
            serde_json::Deserializer::from_str(line)
                .into_iter::<serde_json::Value>()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
    for v in values {
        let headers = v["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let body = match v["body"].as_str() {
            None => Vec::new(),
            Some(b) if v["body_encoded"].as_bool() == Some(true) => {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .expect("recorded body is base64")
            }
            Some(b) => b.as_bytes().to_vec(),
        };
        out.push(Recorded {
            method: v["method"].as_str().unwrap_or_default().to_string(),
            url: v["url"].as_str().unwrap_or_default().to_string(),
            headers,
            body,
        });
    }
    out
}

/// One AWS API call, decoded from its HTTP request.
///
/// - query protocol (EC2, IAM, AutoScaling, STS): a form body `Action=..&Version=..&..`,
///   its pairs in `form` (lists flattened as `TagSpecification.1.Tag.1.Key`);
/// - JSON protocol (KMS): `X-Amz-Target: TrentService.CreateKey`, the body in `json`;
/// - REST-JSON (the EBS direct APIs): the operation from method and path, path labels in
///   `labels`, the JSON body in `json`, header and query parameters reachable by their
///   API names through `param` (`DataLength`, `Checksum`, `BlockToken`, ...).
#[derive(Clone, Debug, Default)]
pub struct Call {
    /// `ec2`, `iam`, `autoscaling`, `kms`, `ebs`, `sts`, or "" when unknown.
    pub service: String,
    /// e.g. `RegisterImage`, or "" when unknown.
    pub operation: String,
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
    pub json: Option<serde_json::Value>,
    pub labels: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The EBS direct APIs' header-bound parameters.
const EBS_HEADERS: &[(&str, &str)] = &[
    ("DataLength", "x-amz-data-length"),
    ("Checksum", "x-amz-checksum"),
    ("ChecksumAlgorithm", "x-amz-checksum-algorithm"),
    (
        "ChecksumAggregationMethod",
        "x-amz-checksum-aggregation-method",
    ),
    ("ChangedBlocksCount", "x-amz-changedblockscount"),
    ("Progress", "x-amz-progress"),
];

/// The EBS direct APIs' query-bound parameters.
const EBS_QUERY: &[(&str, &str)] = &[
    ("BlockToken", "blockToken"),
    ("NextToken", "pageToken"),
    ("MaxResults", "maxResults"),
    ("StartingBlockIndex", "startingBlockIndex"),
    ("FirstSnapshotId", "firstSnapshotId"),
];

impl Call {
    /// Decodes a request: `target` is the request-line target (path and query).
    pub fn decode(method: &str, target: &str, headers: &[(String, String)], body: &[u8]) -> Call {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut call = Call {
            method: method.to_string(),
            path: path.to_string(),
            query: parse_form(query.as_bytes()),
            headers: headers.to_vec(),
            body: body.to_vec(),
            ..Call::default()
        };
        let content_type = header(headers, "content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.contains("x-www-form-urlencoded")
            || (content_type.is_empty() && body.starts_with(b"Action="))
        {
            call.form = parse_form(body);
        }
        if content_type.contains("json") || body.first() == Some(&b'{') {
            call.json = serde_json::from_slice(body).ok();
        }

        let signed = header(headers, "authorization").and_then(signing_service);
        let target_header = header(headers, "x-amz-target");
        let action = call
            .form_param("Action")
            .or_else(|| form_get(&call.query, "Action"))
            .map(str::to_string);

        if let Some(t) = target_header {
            // `TrentService.Decrypt`; CloudTrail's prefix has dots of its own
            // (`com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents`).
            let (prefix, op) = t.rsplit_once('.').unwrap_or(("", t));
            call.operation = op.to_string();
            call.service = signed.clone().unwrap_or_else(|| json_service(prefix));
        } else if let Some(action) = action {
            call.operation = action;
            let version = call
                .form_param("Version")
                .or_else(|| form_get(&call.query, "Version"))
                .unwrap_or_default();
            call.service = signed
                .clone()
                .unwrap_or_else(|| query_service(version).to_string());
        } else if path == "/snapshots" || path.starts_with("/snapshots/") {
            call.service = signed.clone().unwrap_or_else(|| "ebs".to_string());
            let (op, labels) = ebs_route(method, path);
            call.operation = op.to_string();
            call.labels = labels;
        } else if let Some(s) = signed {
            call.service = s;
        }
        call
    }

    /// `service:Operation`
    pub fn name(&self) -> String {
        format!("{}:{}", self.service, self.operation)
    }

    /// True for `"Operation"` or `"service:Operation"`.
    pub fn is(&self, operation: &str) -> bool {
        match operation.split_once(':') {
            Some((s, o)) => s == self.service && o == self.operation,
            None => operation == self.operation,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The SDK's attempt number (`amz-sdk-request: attempt=2; max=3`), when it sent one.
    pub fn attempt(&self) -> Option<u32> {
        self.header("amz-sdk-request")?
            .split(';')
            .find_map(|p| p.trim().strip_prefix("attempt="))?
            .parse()
            .ok()
    }

    fn form_param(&self, name: &str) -> Option<&str> {
        form_get(&self.form, name)
    }

    /// A parameter by its API name: a form pair (`BlockDeviceMapping.1.Ebs.SnapshotId`), a
    /// top-level JSON member (strings as they are, other values as JSON), a path label, a
    /// query parameter, or one of the EBS header parameters.
    pub fn param(&self, name: &str) -> Option<String> {
        if let Some(v) = self.form_param(name) {
            return Some(v.to_string());
        }
        if let Some(v) = self.json.as_ref().and_then(|j| j.get(name)) {
            return Some(match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        if let Some(v) = form_get(&self.labels, name) {
            return Some(v.to_string());
        }
        if let Some(v) = form_get(&self.query, name) {
            return Some(v.to_string());
        }
        if let Some((_, q)) = EBS_QUERY.iter().find(|(n, _)| *n == name) {
            if let Some(v) = form_get(&self.query, q) {
                return Some(v.to_string());
            }
        }
        if let Some((_, h)) = EBS_HEADERS.iter().find(|(n, _)| *n == name) {
            return self.header(h).map(str::to_string);
        }
        None
    }

    /// The form pairs whose key starts with `prefix`, e.g. `"TagSpecification.1."`.
    pub fn params_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.form
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// A JSON Pointer (`/Tags/0/TagKey`) into the JSON body.
    pub fn json_at(&self, pointer: &str) -> Option<&serde_json::Value> {
        self.json.as_ref()?.pointer(pointer)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn form_get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The service of a SigV4 `Authorization` header's credential scope
/// (`AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/ec2/aws4_request, ...`).
fn signing_service(auth: &str) -> Option<String> {
    let cred = auth.split("Credential=").nth(1)?;
    let scope = cred.split([',', ' ']).next()?;
    let parts: Vec<&str> = scope.split('/').collect();
    (parts.len() == 5).then(|| parts[3].to_ascii_lowercase())
}

fn json_service(target_prefix: &str) -> String {
    match target_prefix {
        "TrentService" => "kms".to_string(),
        p if p.starts_with("com.amazonaws.cloudtrail.") => "cloudtrail".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

fn query_service(version: &str) -> &'static str {
    match version {
        "2016-11-15" => "ec2",
        "2010-05-08" => "iam",
        "2011-01-01" => "autoscaling",
        "2011-06-15" => "sts",
        "2015-12-01" => "elasticloadbalancing",
        _ => "",
    }
}

/// The EBS direct APIs' routes.
fn ebs_route(method: &str, path: &str) -> (&'static str, Vec<(String, String)>) {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let label = |k: &str, v: &str| (k.to_string(), percent_decode(v.as_bytes(), false));
    match (method, segs.as_slice()) {
        ("POST", ["snapshots"]) => ("StartSnapshot", vec![]),
        ("POST", ["snapshots", "completion", id]) => {
            ("CompleteSnapshot", vec![label("SnapshotId", id)])
        }
        ("PUT", ["snapshots", id, "blocks", idx]) => (
            "PutSnapshotBlock",
            vec![label("SnapshotId", id), label("BlockIndex", idx)],
        ),
        ("GET", ["snapshots", id, "blocks", idx]) => (
            "GetSnapshotBlock",
            vec![label("SnapshotId", id), label("BlockIndex", idx)],
        ),
        ("GET", ["snapshots", id, "blocks"]) => {
            ("ListSnapshotBlocks", vec![label("SnapshotId", id)])
        }
        ("GET", ["snapshots", id, "changedblocks"]) => {
            ("ListChangedBlocks", vec![label("SecondSnapshotId", id)])
        }
        _ => ("", vec![]),
    }
}

/// `application/x-www-form-urlencoded` pairs.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut kv = p.splitn(2, |b| *b == b'=');
            let k = kv.next().unwrap_or_default();
            let v = kv.next().unwrap_or_default();
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

fn percent_decode(s: &[u8], plus_is_space: bool) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < s.len()
                && s[i + 1].is_ascii_hexdigit()
                && s[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&s[i + 1..i + 3]).expect("ASCII hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A small HTTP/1.1 client and message reader over `std::net`, enough for moto's API, the
/// fault proxy and tests that speak to either without an AWS SDK.
pub mod http {
    use super::*;
    use std::io::Write;

    #[derive(Clone, Debug)]
    pub struct Response {
        pub status: u16,
        pub reason: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Response {
        pub fn header(&self, name: &str) -> Option<&str> {
            super::header(&self.headers, name)
        }

        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// A request or response head: the start line and the header fields.
    #[derive(Clone, Debug)]
    pub struct Head {
        pub start: String,
        pub headers: Vec<(String, String)>,
    }

    impl Head {
        pub fn header(&self, name: &str) -> Option<&str> {
            super::header(&self.headers, name)
        }

        fn is_chunked(&self) -> bool {
            self.header("transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        }

        fn content_length(&self) -> io::Result<Option<usize>> {
            self.header("content-length")
                .map(|v| {
                    v.trim().parse().map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
                    })
                })
                .transpose()
        }
    }

    /// Reads a head; `None` on a clean end of stream before its first byte.
    pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
        let mut start = String::new();
        loop {
            start.clear();
            if read_line(r, &mut start)? == 0 {
                return Ok(None);
            }
            // Tolerate stray blank lines between messages (RFC 9112 §2.2).
            if !start.trim().is_empty() {
                break;
            }
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if read_line(r, &mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad header line"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(Some(Head {
            start: start.trim_end_matches(['\r', '\n']).to_string(),
            headers,
        }))
    }

    fn read_line(r: &mut impl BufRead, out: &mut String) -> io::Result<usize> {
        let mut buf = Vec::new();
        let n = r.by_ref().take(64 * 1024).read_until(b'\n', &mut buf)?;
        out.push_str(&String::from_utf8_lossy(&buf));
        Ok(n)
    }

    /// Reads a request body: chunked, Content-Length, or none.
    pub fn read_request_body(r: &mut impl BufRead, head: &Head) -> io::Result<Vec<u8>> {
        if head.is_chunked() {
            read_chunked(r)
        } else if let Some(n) = head.content_length()? {
            let mut body = vec![0; n];
            r.read_exact(&mut body)?;
            Ok(body)
        } else {
            Ok(Vec::new())
        }
    }

    /// Reads a response body: chunked, Content-Length, or up to the end of the stream.
    pub fn read_response_body(
        r: &mut impl BufRead,
        head: &Head,
        request_method: &str,
    ) -> io::Result<Vec<u8>> {
        let status = status_of(head);
        if request_method == "HEAD" || status / 100 == 1 || status == 204 || status == 304 {
            return Ok(Vec::new());
        }
        if head.is_chunked() {
            read_chunked(r)
        } else if let Some(n) = head.content_length()? {
            let mut body = vec![0; n];
            r.read_exact(&mut body)?;
            Ok(body)
        } else {
            let mut body = Vec::new();
            r.read_to_end(&mut body)?;
            Ok(body)
        }
    }

    fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            if read_line(r, &mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let size = line.trim().split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, up to a blank line.
                loop {
                    let mut t = String::new();
                    if read_line(r, &mut t)? == 0 || t.trim().is_empty() {
                        return Ok(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = String::new();
            read_line(r, &mut crlf)?;
        }
    }

    pub fn status_of(head: &Head) -> u16 {
        head.start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Writes a request with a Content-Length body (and the given headers, which should
    /// not include Content-Length or Transfer-Encoding).
    pub fn write_request(
        w: &mut impl Write,
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut head = format!("{method} {target} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {host}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        w.write_all(head.as_bytes())?;
        w.write_all(body)?;
        w.flush()
    }

    /// A client connection that may carry several requests (keep-alive).
    pub struct Conn {
        reader: BufReader<TcpStream>,
        host: String,
    }

    impl Conn {
        pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
            Ok(Conn {
                reader: BufReader::new(stream),
                host: addr.to_string(),
            })
        }

        pub fn stream(&self) -> &TcpStream {
            self.reader.get_ref()
        }

        /// Sends one request and reads its response.
        pub fn send(
            &mut self,
            method: &str,
            target: &str,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> io::Result<Response> {
            let host = self.host.clone();
            write_request(self.reader.get_mut(), method, target, &host, headers, body)?;
            self.read_response(method)
        }

        /// Sends raw bytes (e.g. a hand-made chunked request) and reads one response.
        pub fn send_raw(&mut self, bytes: &[u8], method: &str) -> io::Result<Response> {
            self.reader.get_mut().write_all(bytes)?;
            self.read_response(method)
        }

        pub fn read_response(&mut self, method: &str) -> io::Result<Response> {
            let head = loop {
                let head = read_head(&mut self.reader)?
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                if status_of(&head) != 100 {
                    break head;
                }
            };
            let body = read_response_body(&mut self.reader, &head, method)?;
            let mut parts = head.start.splitn(3, ' ');
            parts.next();
            let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let reason = parts.next().unwrap_or("").to_string();
            Ok(Response {
                status,
                reason,
                headers: head.headers,
                body,
            })
        }
    }

    /// One request on a fresh connection (`Connection: close`).
    pub fn request(
        addr: SocketAddr,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        all.push(("Connection", "close"));
        Conn::connect(addr)?.send(method, target, &all, body)
    }

    /// A SigV4-shaped `Authorization` header for `service`. moto checks no signature but
    /// routes a request by the service in its credential scope: an unsigned form POST is
    /// taken for S3.
    pub fn fake_auth(service: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=testing/20240101/{REGION}/{service}/aws4_request, \
             SignedHeaders=host, Signature=0000"
        )
    }

    /// The API version of a query-protocol service.
    pub fn query_version(service: &str) -> &'static str {
        match service {
            "ec2" => "2016-11-15",
            "iam" => "2010-05-08",
            "autoscaling" => "2011-01-01",
            "sts" => "2011-06-15",
            "elasticloadbalancing" => "2015-12-01",
            other => panic!("no query-protocol version known for {other}"),
        }
    }

    /// The form body of a query-protocol call.
    pub fn query_body(service: &str, action: &str, params: &[(&str, &str)]) -> String {
        let mut body = format!("Action={action}&Version={}", query_version(service));
        for (k, v) in params {
            body.push_str(&format!("&{}={}", form_encode(k), form_encode(v)));
        }
        body
    }

    /// A query-protocol call (`Action=..&Version=..` form POST to `/`).
    pub fn query(
        addr: SocketAddr,
        service: &str,
        action: &str,
        params: &[(&str, &str)],
    ) -> io::Result<Response> {
        let auth = fake_auth(service);
        request(
            addr,
            "POST",
            "/",
            &[
                ("Authorization", &auth),
                (
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                ),
            ],
            query_body(service, action, params).as_bytes(),
        )
    }

    /// A JSON-protocol call, e.g. `json(addr, "kms", "TrentService.CreateKey", "{}")`.
    pub fn json(addr: SocketAddr, service: &str, target: &str, body: &str) -> io::Result<Response> {
        let auth = fake_auth(service);
        request(
            addr,
            "POST",
            "/",
            &[
                ("Authorization", &auth),
                ("X-Amz-Target", target),
                ("Content-Type", "application/x-amz-json-1.1"),
            ],
            body.as_bytes(),
        )
    }
}
