//! An IMDSv2 stand-in (there is no emulator of it to run): an HTTP server that behaves as
//! IMDSv2 with `HttpTokens=required` does, refusing a GET without the session token, and
//! hands out the instance role's credentials.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::moto::http;

/// What the stand-in hands out as the instance role's credentials.
pub const ACCESS_KEY_ID: &str = "ASIAZOAIMDSSTANDIN01";
pub const SECRET_ACCESS_KEY: &str = "zoa-imds-stand-in-secret-access-key";
pub const SESSION_TOKEN: &str = "zoa-imds-stand-in-session-token";
pub const ROLE: &str = "zoa-demo-instance";
pub const IMDS_TOKEN: &str = "zoa-imds-session-token-AQAEAFTNrA4eEGx0AQgJ1arIq";

/// The role's ARN in moto's default account.
pub fn role_arn() -> String {
    format!("arn:aws:iam::123456789012:role/{ROLE}")
}

/// One request the stand-in saw.
#[derive(Clone, Debug)]
pub struct ImdsRequest {
    pub method: String,
    pub path: String,
    /// `X-aws-ec2-metadata-token`, when sent.
    pub token: Option<String>,
    /// `X-aws-ec2-metadata-token-ttl-seconds`, when sent.
    pub ttl: Option<String>,
    pub status: u16,
}

/// IMDSv2 on 127.0.0.1: `PUT /latest/api/token` needs a TTL header of 1 to 21600 seconds;
/// every GET needs the token it handed out (401 otherwise, as with `HttpTokens=required`).
pub struct ImdsStandIn {
    addr: SocketAddr,
    content: Arc<Mutex<ImdsContent>>,
    log: Arc<Mutex<Vec<ImdsRequest>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Clone, Default)]
pub struct ImdsContent {
    pub region: String,
    pub role: Option<String>,
    /// `/latest/user-data` (404 when `None`, as IMDS answers for an instance without).
    pub user_data: Option<Vec<u8>>,
}

impl ImdsStandIn {
    pub fn start(content: ImdsContent) -> ImdsStandIn {
        let content = Arc::new(Mutex::new(content));
        let shared = Arc::clone(&content);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (log, content) = (Arc::clone(&log), Arc::clone(&shared));
                    std::thread::spawn(move || serve_imds(conn, &content, &log));
                }
            })
        };
        ImdsStandIn {
            addr,
            content,
            log,
            stop,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What `/latest/user-data` answers from now on.
    pub fn set_user_data(&self, data: Vec<u8>) {
        self.content.lock().unwrap().user_data = Some(data);
    }

    pub fn requests(&self) -> Vec<ImdsRequest> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ImdsStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

/// Serves one keep-alive connection until the client closes it.
fn serve_imds(conn: TcpStream, content: &Mutex<ImdsContent>, log: &Mutex<Vec<ImdsRequest>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    while let Ok(Some(head)) = http::read_head(&mut reader) {
        if http::read_request_body(&mut reader, &head).is_err() {
            return;
        }
        let mut start = head.start.split_whitespace();
        let method = start.next().unwrap_or("").to_string();
        let path = start.next().unwrap_or("").to_string();
        let token = head.header("x-aws-ec2-metadata-token").map(str::to_string);
        let ttl = head
            .header("x-aws-ec2-metadata-token-ttl-seconds")
            .map(str::to_string);
        let now = content.lock().unwrap().clone();
        let (status, headers, body) = imds_answer(&now, &method, &path, &token, &ttl);
        log.lock().unwrap().push(ImdsRequest {
            method,
            path,
            token,
            ttl,
            status,
        });
        let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&body);
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

fn imds_answer(
    content: &ImdsContent,
    method: &str,
    path: &str,
    token: &Option<String>,
    ttl: &Option<String>,
) -> (u16, Vec<(String, String)>, String) {
    let text = |status: u16, body: &str| (status, Vec::new(), body.to_string());
    if method == "PUT" && path == "/latest/api/token" {
        return match ttl.as_deref().map(str::parse::<u32>) {
            Some(Ok(secs)) if (1..=21600).contains(&secs) => (
                200,
                vec![(
                    "X-aws-ec2-metadata-token-ttl-seconds".to_string(),
                    secs.to_string(),
                )],
                IMDS_TOKEN.to_string(),
            ),
            _ => text(
                400,
                "missing or invalid X-aws-ec2-metadata-token-ttl-seconds",
            ),
        };
    }
    if method != "GET" {
        return text(405, "");
    }
    if token.as_deref() != Some(IMDS_TOKEN) {
        return text(401, "");
    }
    let roles = "/latest/meta-data/iam/security-credentials/";
    match (path, &content.role) {
        ("/latest/meta-data/placement/region", _) => text(200, &content.region),
        ("/latest/user-data", _) => match &content.user_data {
            Some(d) => (200, Vec::new(), String::from_utf8_lossy(d).into_owned()),
            None => text(404, ""),
        },
        (p, Some(role)) if p == roles => text(200, role),
        (p, Some(role)) if p.strip_prefix(roles) == Some(role.as_str()) => {
            let credentials = serde_json::json!({
                "Code": "Success",
                "LastUpdated": "2026-01-01T00:00:00Z",
                "Type": "AWS-HMAC",
                "AccessKeyId": ACCESS_KEY_ID,
                "SecretAccessKey": SECRET_ACCESS_KEY,
                "Token": SESSION_TOKEN,
                "Expiration": "2100-01-01T00:00:00Z",
            });
            text(200, &credentials.to_string())
        }
        _ => text(404, ""),
    }
}
