//! CloudTrail records: what `zoa audit` reads, from delivered log files or `LookupEvents`.
//!
//! A trail delivers `{"Records": [...]}` objects, gzip-compressed, under
//! `AWSLogs/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/*.json.gz`, with digest files beside them
//! under `CloudTrail-Digest/` (no records: skipped). `aws cloudtrail lookup-events` prints
//! `{"Events": [{"CloudTrailEvent": "<record as a JSON string>", ...}]}`; both shapes are
//! read. The record fields used are those of the CloudTrail record contents reference;
//! the rest of a record is kept as JSON, since each service fills `requestParameters`
//! and `responseElements` in its own shape.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

/// A delivered log file is a few MB; this bounds a file, compressed or not, and what a
/// compressed one expands to (a hostile `.gz` cannot fill memory).
pub const MAX_FILE_LEN: u64 = 256 << 20;

#[derive(Debug, Error)]
pub enum TrailError {
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    #[error("{file}: not a CloudTrail log ({why})")]
    NotALog { file: String, why: String },
    #[error("{file}: record {index}: {why}")]
    BadRecord {
        file: String,
        index: usize,
        why: String,
    },
}

/// One CloudTrail record, with the fields the audit reads.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(rename = "eventID", default)]
    pub event_id: String,
    pub event_time: String,
    pub event_source: String,
    pub event_name: String,
    #[serde(default)]
    pub aws_region: String,
    #[serde(default)]
    pub user_identity: Option<Value>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub request_parameters: Option<Value>,
    #[serde(default)]
    pub response_elements: Option<Value>,
    #[serde(default)]
    pub additional_event_data: Option<Value>,
    #[serde(default)]
    pub resources: Option<Vec<Resource>>,
}

/// An entry of a record's `resources` list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Resource {
    #[serde(rename = "ARN", default)]
    pub arn: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

impl Record {
    /// The record's time, when it parses (RFC 3339, as CloudTrail writes it).
    pub fn time(&self) -> Option<jiff::Timestamp> {
        self.event_time.parse().ok()
    }

    /// `kms:Decrypt`-style name: the service's short name and the event.
    pub fn api(&self) -> String {
        let service = self
            .event_source
            .strip_suffix(".amazonaws.com")
            .unwrap_or(&self.event_source);
        format!("{service}:{}", self.event_name)
    }

    /// Whether the call was refused (any `errorCode`: AccessDenied, a KMS exception...).
    pub fn failed(&self) -> bool {
        self.error_code.is_some()
    }

    /// Who made the call: the caller's ARN, else the service that acted, else its type.
    pub fn principal(&self) -> Option<String> {
        let who = self.user_identity.as_ref()?;
        ["arn", "invokedBy", "principalId", "type"]
            .iter()
            .find_map(|k| who.get(k).and_then(Value::as_str))
            .map(str::to_owned)
    }

    /// A string field of `requestParameters` (top level).
    pub fn request(&self, name: &str) -> Option<&str> {
        self.request_parameters.as_ref()?.get(name)?.as_str()
    }

    /// Every string in the request, the response and the resource ARNs: the identifiers
    /// an event names, wherever the service put them.
    pub fn strings(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for v in [&self.request_parameters, &self.response_elements]
            .into_iter()
            .flatten()
        {
            collect_strings(v, &mut out);
        }
        for r in self.resources.iter().flatten() {
            out.extend(r.arn.as_deref());
        }
        out
    }
}

/// Every string in `v`, at any depth.
pub fn collect_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}

/// The records of one log file's text (either shape; see the module's comment).
pub fn parse_log(file: &str, text: &[u8]) -> Result<Vec<Record>, TrailError> {
    let top: Value = serde_json::from_slice(text).map_err(|e| TrailError::NotALog {
        file: file.to_owned(),
        why: format!("not JSON: {e}"),
    })?;
    let not_a_log = |why: &str| TrailError::NotALog {
        file: file.to_owned(),
        why: why.to_owned(),
    };
    let bad = |index, why: String| TrailError::BadRecord {
        file: file.to_owned(),
        index,
        why,
    };
    if let Some(records) = top.get("Records") {
        let records = records
            .as_array()
            .ok_or_else(|| not_a_log("\"Records\" is not a list"))?;
        records
            .iter()
            .enumerate()
            .map(|(i, r)| checked(Record::deserialize(r)).map_err(|e| bad(i, e)))
            .collect()
    } else if let Some(events) = top.get("Events") {
        let events = events
            .as_array()
            .ok_or_else(|| not_a_log("\"Events\" is not a list"))?;
        events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let inner = e
                    .get("CloudTrailEvent")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(i, "no CloudTrailEvent text".into()))?;
                checked(serde_json::from_str(inner)).map_err(|e| bad(i, e))
            })
            .collect()
    } else {
        Err(not_a_log("no \"Records\" or \"Events\" list"))
    }
}

/// A record whose time does not parse cannot be placed in a window: refused, not skipped.
fn checked(r: Result<Record, serde_json::Error>) -> Result<Record, String> {
    let r = r.map_err(|e| e.to_string())?;
    match r.time() {
        Some(_) => Ok(r),
        None => Err(format!(
            "eventTime {:?} is not an RFC 3339 time",
            r.event_time
        )),
    }
}

/// Reads one log file, gunzipping a `.gz` one, within [`MAX_FILE_LEN`].
pub fn read_log(path: &Path) -> Result<Vec<Record>, TrailError> {
    let name = path.display().to_string();
    let io = |e: std::io::Error| TrailError::Io {
        file: name.clone(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = Vec::new();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let reader: Box<dyn Read> = if gz {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    reader
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(TrailError::Io {
            file: name,
            message: format!("larger than {} MiB (uncompressed)", MAX_FILE_LEN >> 20),
        });
    }
    parse_log(&name, &text)
}

/// The log files under `path`: the file itself, or every `*.json`/`*.json.gz` below a
/// directory (sorted, so the order is the same on every machine), digest files left out.
pub fn log_files(path: &Path) -> Result<Vec<PathBuf>, TrailError> {
    let meta = std::fs::metadata(path).map_err(|e| TrailError::Io {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    walk(path, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), TrailError> {
    let io = |e: std::io::Error| TrailError::Io {
        file: dir.display().to_string(),
        message: e.to_string(),
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Digest files prove the log's integrity; they hold no records.
        if name.contains("CloudTrail-Digest") {
            continue;
        }
        // Symbolic links are not followed: a link loop must not hang the audit.
        let kind = entry.file_type().map_err(io)?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() && (name.ends_with(".json") || name.ends_with(".json.gz")) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const DECRYPT: &str = r#"{"eventVersion":"1.08","eventID":"e1","eventTime":"2026-12-01T10:00:00Z",
        "eventSource":"kms.amazonaws.com","eventName":"Decrypt","awsRegion":"us-east-1",
        "userIdentity":{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/r/i-1"},
        "requestParameters":{"keyId":"arn:aws:kms:us-east-1:111122223333:key/k-1"},
        "responseElements":null,
        "resources":[{"ARN":"arn:aws:kms:us-east-1:111122223333:key/k-1","type":"AWS::KMS::Key"}]}"#;

    #[test]
    fn both_shapes_read_and_a_record_names_its_identifiers() {
        let records = parse_log("f", format!(r#"{{"Records":[{DECRYPT}]}}"#).as_bytes()).unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.api(), "kms:Decrypt");
        assert!(!r.failed());
        assert_eq!(
            r.principal().as_deref(),
            Some("arn:aws:sts::111122223333:assumed-role/r/i-1")
        );
        assert_eq!(r.time().unwrap().to_string(), "2026-12-01T10:00:00Z");
        assert_eq!(
            r.strings(),
            vec![
                "arn:aws:kms:us-east-1:111122223333:key/k-1",
                "arn:aws:kms:us-east-1:111122223333:key/k-1"
            ]
        );

        let inner =
            serde_json::to_string(&serde_json::from_str::<Value>(DECRYPT).unwrap()).unwrap();
        let lookup = serde_json::json!({"Events": [{"EventId": "e1", "CloudTrailEvent": inner}]});
        let again = parse_log("g", lookup.to_string().as_bytes()).unwrap();
        assert_eq!(again, records);
    }

    #[test]
    fn bad_logs_get_errors_naming_the_file_and_the_record() {
        let e = parse_log("a.json", b"[1,2]").unwrap_err().to_string();
        assert_eq!(
            e,
            "a.json: not a CloudTrail log (no \"Records\" or \"Events\" list)"
        );
        let e = parse_log("a.json", b"{\"Records\": 3}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"Records\" is not a list"), "{e}");
        let e = parse_log("a.json", br#"{"Records":[{"eventName":"X"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a.json: record 0: missing field"), "{e}");
        let e = parse_log("a.json", b"{\"Rec").unwrap_err().to_string();
        assert!(e.contains("not JSON"), "{e}");
    }

    #[test]
    fn directories_are_walked_for_logs_and_gzip_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir
            .path()
            .join("AWSLogs/111122223333/CloudTrail/us-east-1/2026/12/01");
        std::fs::create_dir_all(&day).unwrap();
        let text = format!(r#"{{"Records":[{DECRYPT}]}}"#);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        std::fs::write(day.join("a.json.gz"), gz.finish().unwrap()).unwrap();
        std::fs::write(day.join("b.json"), &text).unwrap();
        std::fs::write(day.join("notes.txt"), "not a log").unwrap();
        let digest = dir
            .path()
            .join("AWSLogs/111122223333/CloudTrail-Digest/us-east-1");
        std::fs::create_dir_all(&digest).unwrap();
        std::fs::write(digest.join("d.json.gz"), "not even gzip").unwrap();

        let files = log_files(dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.json.gz", "b.json"]);
        for f in &files {
            assert_eq!(read_log(f).unwrap().len(), 1);
        }
        let bad = day.join("c.json.gz");
        std::fs::write(&bad, "plain text, not gzip").unwrap();
        let e = read_log(&bad).unwrap_err().to_string();
        assert!(e.starts_with(&bad.display().to_string()), "{e}");
    }
}
