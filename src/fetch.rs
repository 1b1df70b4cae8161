//! Pinned inputs, cached by digest. Every input is pinned by sha256 and lists sources
//! tried in order; the digest decides, so any copy anywhere (the cache, a directory of
//! pre-fetched files, a local path, the archive, a snapshot service, a mirror) is as good
//! as another.
//!
//! Resolution order: the cache (`<cache>/sha256/<hex>`), then the inputs directories (by
//! file name, then by digest), then the pin's sources in order. Only downloads are copied
//! into the cache; local files are used where they are.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::digest;

/// How long to wait for a connection, and for each read of a download, before giving up
/// on that source (a stalled mirror must not hang a build forever).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors fetching an input.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The pin's digest is not a sha256 in the canonical form.
    #[error("input {name}: sha256 {sha256:?} is not 64 lowercase hex digits")]
    BadPin { name: String, sha256: String },
    /// No place provided bytes with the pinned digest; `attempts` says what each gave.
    #[error(
        "input {name} (sha256 {sha256}): no source provided it: {}",
        attempts_line(.attempts)
    )]
    NotFound {
        name: String,
        sha256: String,
        attempts: Vec<Attempt>,
    },
}

/// One place [`Fetcher::fetch`] looked, and why it did not provide the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The source as written in the pin, or `inputs:<path>` for an inputs directory.
    pub source: String,
    /// What went wrong: `not found`, `sha256 mismatch: got <hex>`, `HTTP 404`, `offline`, ...
    pub problem: String,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.problem)
    }
}

fn attempts_line(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no sources are listed and no inputs directory is given".to_owned();
    }
    attempts
        .iter()
        .map(Attempt::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A pinned input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The input's name in the recipe (used in messages).
    pub name: String,
    /// Expected sha256, 64 lowercase hex digits.
    pub sha256: String,
    /// Where to get it, tried in order: `https://…`, `http://…`, `file:PATH` or a plain
    /// path relative to the recipe's directory.
    pub sources: Vec<String>,
}

/// A verified local copy of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// A file whose sha256 is the pin's.
    pub path: PathBuf,
    /// What provided the bytes: `cache`, `inputs:<path>`, the local source as written, or
    /// the URL.
    pub source: String,
    /// Size in bytes.
    pub size: u64,
}

/// Resolves pins to verified local files.
#[derive(Debug)]
pub struct Fetcher {
    cache_dir: PathBuf,
    inputs_dirs: Vec<PathBuf>,
    base_dir: PathBuf,
    offline: bool,
    show_progress: bool,
    /// Digests of inputs-directory files, so a build with many inputs hashes each file
    /// once. Keyed by path; size and mtime detect a file replaced in the meantime.
    scanned: Mutex<Scanned>,
}

#[derive(Debug, Default)]
struct Scanned {
    digests: HashMap<PathBuf, (u64, Option<SystemTime>, String)>,
    /// Files actually hashed (tests check the memo works).
    hashed: usize,
}

/// `$ZOA_CACHE` if set, else the user's cache directory + `zoa` (e.g. `~/.cache/zoa`).
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ZOA_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("zoa")
}

/// Decodes `%XX` escapes (Debian file names of packages with an epoch carry `%3a`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            if let (Some(h), Some(l)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What kind of source a pin lists.
enum Source<'a> {
    Url(&'a str),
    Local(PathBuf),
    Unsupported,
}

fn classify<'a>(source: &'a str, base_dir: &Path) -> Source<'a> {
    if source.starts_with("https://") || source.starts_with("http://") {
        return Source::Url(source);
    }
    if let Some(rest) = source.strip_prefix("file://") {
        // file:///abs/path; a host part (file://host/...) is not a local file.
        return if rest.starts_with('/') {
            Source::Local(PathBuf::from(rest))
        } else {
            Source::Unsupported
        };
    }
    if let Some(rest) = source.strip_prefix("file:") {
        return Source::Local(base_dir.join(rest));
    }
    // Any other "scheme://" (ftp, s3, ...) would otherwise be taken for a relative path.
    if let Some((scheme, _)) = source.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+')
        {
            return Source::Unsupported;
        }
    }
    Source::Local(base_dir.join(source))
}

/// The file name a source would have in an inputs directory: its last path component
/// (query and fragment dropped for URLs).
fn file_name_of(source: &str) -> &str {
    let path = if source.contains("://") {
        source.split(['?', '#']).next().unwrap_or(source)
    } else {
        source
    };
    path.rsplit('/').next().unwrap_or(path)
}

/// A one-line description of an I/O failure on a local file.
fn io_problem(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        "not found".to_owned()
    } else {
        e.to_string()
    }
}

impl Fetcher {
    /// `cache_dir`: the content-addressed cache (see [`default_cache_dir`]);
    /// `inputs_dirs`: directories of pre-fetched files (`--inputs DIR`, `ZOA_INPUTS`);
    /// `base_dir`: the recipe's directory, for relative local sources.
    pub fn new(cache_dir: PathBuf, inputs_dirs: Vec<PathBuf>, base_dir: PathBuf) -> Self {
        Fetcher {
            cache_dir,
            inputs_dirs,
            base_dir,
            offline: false,
            show_progress: false,
            scanned: Mutex::new(Scanned::default()),
        }
    }

    /// When true, never use the network: URL sources fail with `offline`.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// When true, show a progress bar for downloads (on a terminal only).
    pub fn show_progress(mut self, show: bool) -> Self {
        self.show_progress = show;
        self
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir.join("sha256").join(sha256)
    }

    /// Returns the path of a local file whose sha256 equals `pin.sha256`, and where it
    /// came from. Tries the cache, the inputs directories, then each source in order; the
    /// error lists every attempt.
    pub fn fetch(&self, pin: &Pin) -> Result<Fetched, FetchError> {
        if !digest::is_sha256_hex(&pin.sha256) {
            return Err(FetchError::BadPin {
                name: pin.name.clone(),
                sha256: pin.sha256.clone(),
            });
        }
        if let Some(found) = self.lookup_cache(pin) {
            return Ok(found);
        }
        let mut attempts = Vec::new();
        if let Some(found) = self.lookup_inputs_dirs(pin, &mut attempts) {
            return Ok(found);
        }
        for source in &pin.sources {
            let result = match classify(source, &self.base_dir) {
                Source::Url(_) if self.offline => Err("offline".to_owned()),
                Source::Url(url) => self.download(pin, url),
                Source::Local(path) => self.local(pin, source, path),
                Source::Unsupported => {
                    Err("unsupported source (use https://, http://, file: or a path)".to_owned())
                }
            };
            match result {
                Ok(found) => {
                    log::debug!("input {}: from {}", pin.name, found.source);
                    return Ok(found);
                }
                Err(problem) => attempts.push(Attempt {
                    source: source.clone(),
                    // One line whatever the underlying error says.
                    problem: problem.replace(['\n', '\r'], " "),
                }),
            }
        }
        Err(FetchError::NotFound {
            name: pin.name.clone(),
            sha256: pin.sha256.clone(),
            attempts,
        })
    }

    /// A verified cache entry. A corrupt entry (disk error, manual edit) is removed so
    /// the input is fetched again.
    fn lookup_cache(&self, pin: &Pin) -> Option<Fetched> {
        let path = self.cache_path(&pin.sha256);
        match digest::sha256_file(&path) {
            Ok((got, size)) if got == pin.sha256 => Some(Fetched {
                path,
                source: "cache".to_owned(),
                size,
            }),
            Ok((got, _)) => {
                log::warn!(
                    "cache entry {} is corrupt (sha256 {got}); removing it",
                    path.display()
                );
                if let Err(e) = fs::remove_file(&path) {
                    log::warn!("cannot remove {}: {e}", path.display());
                }
                None
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                log::warn!("cache entry {} unreadable: {e}", path.display());
                None
            }
        }
    }

    /// The file's digest, hashed once per Fetcher unless the file changed.
    fn digest_of(&self, path: &Path) -> io::Result<(String, u64)> {
        let meta = fs::metadata(path)?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let stamp = (meta.len(), meta.modified().ok());
        {
            let memo = self.scanned.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((len, mtime, d)) = memo.digests.get(path) {
                if (*len, *mtime) == stamp {
                    return Ok((d.clone(), *len));
                }
            }
        }
        let (d, size) = digest::sha256_file(path)?;
        let mut memo = self.scanned.lock().unwrap_or_else(PoisonError::into_inner);
        memo.hashed += 1;
        memo.digests
            .insert(path.to_owned(), (stamp.0, stamp.1, d.clone()));
        Ok((d, size))
    }

    /// Candidate file names for an inputs directory: each source's last component, as
    /// written and percent-decoded (`pkg_1%3a2.deb` and `pkg_1:2.deb`).
    fn candidate_names(pin: &Pin) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for source in &pin.sources {
            let last = file_name_of(source);
            for name in [last.to_owned(), percent_decode(last)] {
                // A decoded "%2F" or ".." must not walk out of the directory.
                let usable =
                    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']);
                if usable && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    fn lookup_inputs_dirs(&self, pin: &Pin, attempts: &mut Vec<Attempt>) -> Option<Fetched> {
        let names = Self::candidate_names(pin);
        let found = |path: PathBuf, size: u64| Fetched {
            source: format!("inputs:{}", path.display()),
            path,
            size,
        };
        for dir in &self.inputs_dirs {
            // By name first: no hashing of unrelated files in the common case.
            for name in &names {
                let path = dir.join(name);
                match self.digest_of(&path) {
                    Ok((d, size)) if d == pin.sha256 => return Some(found(path, size)),
                    Ok((d, _)) => attempts.push(Attempt {
                        source: format!("inputs:{}", path.display()),
                        problem: format!("sha256 mismatch: got {d}"),
                    }),
                    Err(_) => {}
                }
            }
        }
        for dir in &self.inputs_dirs {
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) => {
                    attempts.push(Attempt {
                        source: format!("inputs:{}", dir.display()),
                        problem: io_problem(&e),
                    });
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            // Sorted, so the same directory always gives the same answer.
            files.sort();
            for path in files {
                if let Ok((d, size)) = self.digest_of(&path) {
                    if d == pin.sha256 {
                        return Some(found(path, size));
                    }
                }
            }
            attempts.push(Attempt {
                source: format!("inputs:{}", dir.display()),
                problem: "not found (no file of that name or digest)".to_owned(),
            });
        }
        None
    }

    /// A local file, used in place (not copied into the cache).
    fn local(&self, pin: &Pin, source: &str, path: PathBuf) -> Result<Fetched, String> {
        let (got, size) = digest::sha256_file(&path).map_err(|e| io_problem(&e))?;
        if got != pin.sha256 {
            // info, not warn: on failure the error lists this attempt already, and the
            // contract is one line on stderr.
            log::info!(
                "input {}: {} has sha256 {got}, not the pinned {}; skipping it",
                pin.name,
                path.display(),
                pin.sha256
            );
            return Err(format!("sha256 mismatch: got {got}"));
        }
        Ok(Fetched {
            path,
            source: source.to_owned(),
            size,
        })
    }

    /// Downloads into a temporary file in the cache, hashing while streaming, and moves it
    /// to `<cache>/sha256/<hex>` only if the digest matches. The temporary file is deleted
    /// on every failure, so the cache never holds a partial or wrong file.
    fn download(&self, pin: &Pin, url: &str) -> Result<Fetched, String> {
        let tmp_dir = self.cache_dir.join("tmp");
        let final_dir = self.cache_dir.join("sha256");
        for dir in [&tmp_dir, &final_dir] {
            fs::create_dir_all(dir).map_err(|e| format!("cache {}: {e}", dir.display()))?;
        }
        log::info!("input {}: downloading {url}", pin.name);
        let agent = agent_for(url);
        let response = agent.get(url).call().map_err(|e| match e {
            ureq::Error::StatusCode(code) => format!("HTTP {code}"),
            other => other.to_string(),
        })?;
        let total = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bar =
            crate::progress::Progress::new(self.show_progress).bytes(total.unwrap_or(0), &pin.name);
        let mut tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| format!("cache {}: {e}", tmp_dir.display()))?;
        let mut body = response.into_body().into_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("download failed after {size} bytes: {e}")),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| format!("cache {}: {e}", tmp_dir.display()))?;
            size += n as u64;
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        let got = hex::encode(hasher.finalize());
        if got != pin.sha256 {
            // Dropping `tmp` deletes the file.
            return Err(format!("sha256 mismatch: got {got}"));
        }
        // No fsync: the cache is re-verified on every use, so a file torn by a crash is
        // detected and fetched again.
        let dest = self.cache_path(&pin.sha256);
        crate::fsio::persist(tmp, &dest, crate::fsio::Persist::REPLACE)
            .map_err(|e| format!("cache {}: {e}", dest.display()))?;
        Ok(Fetched {
            path: dest,
            source: url.to_owned(),
            size,
        })
    }
}

/// An HTTP agent with timeouts. Proxies come from the environment as usual, except for
/// loopback hosts, which a proxy cannot reach on our behalf.
fn agent_for(url: &str) -> ureq::Agent {
    let host = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
        .unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(READ_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT));
    if loopback {
        config = config.proxy(None);
    }
    config.build().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    fn pin(name: &str, data: &[u8], sources: &[&str]) -> Pin {
        Pin {
            name: name.into(),
            sha256: digest::sha256_bytes(data),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// The shared pinned inputs directory, if present.
    fn shared_inputs() -> Option<PathBuf> {
        let candidates = [
            std::env::var_os("ZOA_SHARED_INPUTS").map(PathBuf::from),
            Some(PathBuf::from("/work/shared/inputs")),
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/inputs")),
        ];
        let found = candidates.into_iter().flatten().find(|d| d.is_dir());
        if found.is_none() {
            eprintln!("shared inputs not found (set ZOA_SHARED_INPUTS); skipping");
        }
        found
    }

    /// Answers `responses.len()` HTTP requests on a loopback port, in order, each with
    /// (status line, body). Returns the base URL.
    fn serve(responses: Vec<(&'static str, Vec<u8>)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (status, body) in responses {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        format!("http://{addr}")
    }

    fn dir_is_empty(dir: &Path) -> bool {
        fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
    }

    #[test]
    fn real_inputs_dir_by_url_file_name() {
        let Some(inputs) = shared_inputs() else {
            return;
        };
        let sums = fs::read_to_string(inputs.join("SHA256SUMS")).unwrap();
        let name = "llama.cpp-tools_1%3a0.7.0+dfsg-2_amd64.deb";
        let sha = sums
            .lines()
            .find_map(|l| {
                l.split_once("  ")
                    .filter(|(_, f)| *f == name)
                    .map(|(h, _)| h)
            })
            .or_else(|| {
                sums.lines()
                    .find(|l| l.ends_with(name))
                    .and_then(|l| l.split_whitespace().next())
            })
            .unwrap()
            .to_owned();
        let d = tempfile::tempdir().unwrap();
        let f = Fetcher::new(
            d.path().join("cache"),
            vec![inputs.clone()],
            d.path().into(),
        )
        .offline(true);
        let p = Pin {
            name: "tools".into(),
            sha256: sha,
            sources: vec![format!(
                "https://deb.debian.org/debian/pool/main/l/llama.cpp/{name}"
            )],
        };
        let got = f.fetch(&p).unwrap();
        assert_eq!(got.path, inputs.join(name));
        assert_eq!(
            got.source,
            format!("inputs:{}", inputs.join(name).display())
        );
        assert_eq!(got.size, fs::metadata(inputs.join(name)).unwrap().len());
        // Found by name: nothing else in the directory was hashed, nothing was cached.
        assert_eq!(f.scanned.lock().unwrap().hashed, 1);
        assert!(dir_is_empty(&d.path().join("cache")));
    }

    #[test]
    fn inputs_dir_by_decoded_name_and_by_digest_scan() {
        let d = tempfile::tempdir().unwrap();
        let inputs = d.path().join("inputs");
        fs::create_dir(&inputs).unwrap();
        fs::write(inputs.join("pkg_1:2_amd64.deb"), b"by name").unwrap();
        fs::write(inputs.join("renamed.deb"), b"by digest").unwrap();
        fs::write(inputs.join("other.deb"), b"other").unwrap();
        let f = Fetcher::new(
            d.path().join("cache"),
            vec![inputs.clone()],
            d.path().into(),
        )
        .offline(true);

        let got = f
            .fetch(&pin(
                "n",
                b"by name",
                &["https://x.invalid/pool/pkg_1%3a2_amd64.deb?x=1"],
            ))
            .unwrap();
        assert_eq!(got.path, inputs.join("pkg_1:2_amd64.deb"));
        assert!(got.source.starts_with("inputs:"), "{}", got.source);

        let got = f
            .fetch(&pin(
                "d",
                b"by digest",
                &["https://x.invalid/pool/original-name.deb"],
            ))
            .unwrap();
        assert_eq!(got.path, inputs.join("renamed.deb"));
        assert_eq!(got.size, 9);
        let hashed = f.scanned.lock().unwrap().hashed;
        assert_eq!(hashed, 3);
        // A second scan reuses the remembered digests.
        let e = f.fetch(&pin("m", b"missing", &[])).unwrap_err().to_string();
        assert_eq!(f.scanned.lock().unwrap().hashed, hashed);
        assert!(e.contains("input m") && e.contains("not found"), "{e}");
        // Never copied into the cache.
        assert!(!d.path().join("cache/sha256").exists());
    }

    #[test]
    fn relative_and_file_sources_are_used_in_place() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("recipe");
        fs::create_dir_all(base.join("files")).unwrap();
        fs::write(base.join("files/local.bin"), b"local").unwrap();
        let f = Fetcher::new(d.path().join("cache"), vec![], base.clone());
        let got = f.fetch(&pin("l", b"local", &["files/local.bin"])).unwrap();
        assert_eq!(
            got,
            Fetched {
                path: base.join("files/local.bin"),
                source: "files/local.bin".into(),
                size: 5
            }
        );
        let got = f
            .fetch(&pin("l", b"local", &["file:files/local.bin"]))
            .unwrap();
        assert_eq!(got.path, base.join("files/local.bin"));
        let abs = format!("file://{}", base.join("files/local.bin").display());
        let got = f.fetch(&pin("l", b"local", &[abs.as_str()])).unwrap();
        assert_eq!(got.source, abs);
        assert!(!d.path().join("cache").exists());
    }

    #[test]
    fn failures_list_every_attempt_on_one_line() {
        let d = tempfile::tempdir().unwrap();
        let inputs = d.path().join("inputs");
        fs::create_dir(&inputs).unwrap();
        fs::write(d.path().join("a.bin"), b"wrong").unwrap();
        let wrong = digest::sha256_bytes(b"wrong");
        let f = Fetcher::new(d.path().join("cache"), vec![inputs], d.path().into()).offline(true);
        let e = f
            .fetch(&pin(
                "kernel",
                b"right",
                &[
                    "a.bin",
                    "missing.bin",
                    "https://x.invalid/a.bin",
                    "ftp://x/a.bin",
                ],
            ))
            .unwrap_err();
        let FetchError::NotFound { attempts, .. } = &e else {
            panic!("{e}");
        };
        assert_eq!(attempts.len(), 5, "{attempts:?}");
        let msg = e.to_string();
        assert!(msg.starts_with("input kernel (sha256 "), "{msg}");
        assert!(
            msg.contains(&format!("a.bin: sha256 mismatch: got {wrong}")),
            "{msg}"
        );
        assert!(msg.contains("missing.bin: not found"), "{msg}");
        assert!(msg.contains("https://x.invalid/a.bin: offline"), "{msg}");
        assert!(msg.contains("ftp://x/a.bin: unsupported source"), "{msg}");
        assert!(
            msg.contains("inputs:") && msg.contains("not found"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn offline_with_only_a_url_fails_clearly() {
        let d = tempfile::tempdir().unwrap();
        let f = Fetcher::new(d.path().join("cache"), vec![], d.path().into()).offline(true);
        let e = f
            .fetch(&pin(
                "stub",
                b"x",
                &["https://deb.debian.org/debian/pool/x.deb"],
            ))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "input stub (sha256 {}): no source provided it: \
                 https://deb.debian.org/debian/pool/x.deb: offline",
                digest::sha256_bytes(b"x")
            )
        );
    }

    #[test]
    fn bad_pins_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = Fetcher::new(d.path().into(), vec![], d.path().into());
        for sha in ["ABC", &"A".repeat(64), &"0".repeat(63), &"g".repeat(64)] {
            let p = Pin {
                name: "x".into(),
                sha256: sha.to_owned(),
                sources: vec![],
            };
            let e = f.fetch(&p).unwrap_err();
            assert!(matches!(e, FetchError::BadPin { .. }), "{e}");
            assert!(e.to_string().contains("64 lowercase hex"), "{e}");
        }
    }

    #[test]
    fn download_is_cached_and_a_corrupt_cache_entry_replaced() {
        let d = tempfile::tempdir().unwrap();
        let body = b"downloaded bytes".to_vec();
        let base = serve(vec![("200 OK", body.clone()), ("200 OK", body.clone())]);
        let url = format!("{base}/pool/file.deb");
        let cache = d.path().join("cache");
        let f = Fetcher::new(cache.clone(), vec![], d.path().into());
        let p = pin("dl", &body, &[&url]);
        let got = f.fetch(&p).unwrap();
        assert_eq!(got.source, url);
        assert_eq!(got.path, cache.join("sha256").join(&p.sha256));
        assert_eq!(got.size, body.len() as u64);
        assert_eq!(fs::read(&got.path).unwrap(), body);
        // Cache hit: no request (the offline fetcher proves it).
        let offline = Fetcher::new(cache.clone(), vec![], d.path().into()).offline(true);
        assert_eq!(offline.fetch(&p).unwrap().source, "cache");
        // A corrupt entry is removed and ignored, then downloaded again.
        fs::write(&got.path, b"bit rot").unwrap();
        assert!(offline.fetch(&p).is_err());
        assert!(!got.path.exists());
        fs::write(&got.path, b"bit rot").unwrap();
        let again = f.fetch(&p).unwrap();
        assert_eq!(again.source, url);
        assert_eq!(fs::read(&again.path).unwrap(), body);
        assert!(dir_is_empty(&cache.join("tmp")));
    }

    #[test]
    fn http_errors_and_wrong_bytes_leave_nothing_in_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let base = serve(vec![
            ("404 Not Found", b"no".to_vec()),
            ("200 OK", b"other bytes".to_vec()),
        ]);
        let cache = d.path().join("cache");
        let f = Fetcher::new(cache.clone(), vec![], d.path().into());
        let missing = format!("{base}/missing.deb");
        let wrong = format!("{base}/wrong.deb");
        let e = f
            .fetch(&pin("w", b"wanted", &[&missing, &wrong]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{missing}: HTTP 404")), "{e}");
        assert!(
            e.contains(&format!(
                "{wrong}: sha256 mismatch: got {}",
                digest::sha256_bytes(b"other bytes")
            )),
            "{e}"
        );
        assert!(dir_is_empty(&cache.join("sha256")));
        assert!(dir_is_empty(&cache.join("tmp")));
    }

    #[test]
    fn helpers() {
        assert_eq!(percent_decode("a_1%3a2.deb"), "a_1:2.deb");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(file_name_of("https://h/p/a.deb?sig=1#f"), "a.deb");
        assert_eq!(file_name_of("dir/b.deb"), "b.deb");
        let p = pin("x", b"", &["https://h/p/%2E%2E", "https://h/a%2Fb"]);
        assert_eq!(Fetcher::candidate_names(&p), vec!["%2E%2E", "a%2Fb"]);
    }
}
