//! Fetching pinned inputs. Every input is pinned by sha256 and lists sources tried in
//! order; the digest decides, so any copy anywhere (cache, a directory of pre-fetched
//! files, a local path, the archive, a snapshot service, a mirror) is as good as another.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::digest;

/// Errors fetching an input.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("input {name}: sha256 {sha256:?} is not 64 lowercase hex characters")]
    BadPin { name: String, sha256: String },
    #[error("input {name} (sha256 {sha256}): no source provided it: {attempts}")]
    Exhausted {
        name: String,
        sha256: String,
        attempts: String,
    },
    #[error("cache {dir}: {source}")]
    Cache {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// A pinned input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub sha256: String,
    pub sources: Vec<String>,
}

/// A verified local copy of an input.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    /// What provided the bytes: "cache", "inputs:<path>", a local path, or the URL.
    pub source: String,
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
    /// Digests of files in the inputs directories, computed once per file.
    scanned: Mutex<HashMap<PathBuf, String>>,
}

/// `$ZOA_CACHE`, else the user's cache directory + `zoa`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ZOA_CACHE") {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("zoa")
}

/// Decodes %XX escapes (file names of packages with an epoch carry `%3a`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
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

fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

impl Fetcher {
    pub fn new(cache_dir: PathBuf, inputs_dirs: Vec<PathBuf>, base_dir: PathBuf) -> Self {
        Fetcher {
            cache_dir,
            inputs_dirs,
            base_dir,
            offline: false,
            show_progress: false,
            scanned: Mutex::new(HashMap::new()),
        }
    }

    /// Never use the network.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Show a progress bar for downloads.
    pub fn show_progress(mut self, show: bool) -> Self {
        self.show_progress = show;
        self
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir.join("sha256").join(sha256)
    }

    /// Returns a local file whose sha256 equals the pin's.
    pub fn fetch(&self, pin: &Pin) -> Result<Fetched, FetchError> {
        if !digest::is_sha256_hex(&pin.sha256) {
            return Err(FetchError::BadPin {
                name: pin.name.clone(),
                sha256: pin.sha256.clone(),
            });
        }
        let mut attempts: Vec<String> = Vec::new();
        if let Some(f) = self.lookup_cache(pin) {
            return Ok(f);
        }
        if let Some(f) = self.lookup_inputs_dirs(pin) {
            return Ok(f);
        }
        if !self.inputs_dirs.is_empty() {
            attempts.push(format!(
                "inputs dirs {}: not found",
                self.inputs_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for source in &pin.sources {
            let result = if is_url(source) {
                if self.offline {
                    Err("offline".to_owned())
                } else {
                    self.download(pin, source)
                }
            } else {
                self.local(pin, source)
            };
            match result {
                Ok(f) => return Ok(f),
                Err(why) => attempts.push(format!("{source}: {why}")),
            }
        }
        Err(FetchError::Exhausted {
            name: pin.name.clone(),
            sha256: pin.sha256.clone(),
            attempts: attempts.join("; "),
        })
    }

    fn lookup_cache(&self, pin: &Pin) -> Option<Fetched> {
        let path = self.cache_path(&pin.sha256);
        let (got, size) = digest::sha256_file(&path).ok()?;
        if got == pin.sha256 {
            return Some(Fetched {
                path,
                source: "cache".into(),
                size,
            });
        }
        // A corrupt cache entry is removed, never trusted.
        log::warn!("cache entry {} is corrupt; removing it", path.display());
        let _ = std::fs::remove_file(&path);
        None
    }

    fn candidate_names(pin: &Pin) -> Vec<String> {
        let mut names = Vec::new();
        for s in &pin.sources {
            let last = s.rsplit('/').next().unwrap_or(s).to_owned();
            for n in [last.clone(), percent_decode(&last)] {
                if !n.is_empty() && !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names
    }

    fn digest_of(&self, path: &Path) -> Option<(String, u64)> {
        if let Ok(map) = self.scanned.lock() {
            if let Some(d) = map.get(path) {
                let size = std::fs::metadata(path).ok()?.len();
                return Some((d.clone(), size));
            }
        }
        let (d, size) = digest::sha256_file(path).ok()?;
        if let Ok(mut map) = self.scanned.lock() {
            map.insert(path.to_owned(), d.clone());
        }
        Some((d, size))
    }

    fn lookup_inputs_dirs(&self, pin: &Pin) -> Option<Fetched> {
        let names = Self::candidate_names(pin);
        let found = |path: PathBuf, size: u64| Fetched {
            source: format!("inputs:{}", path.display()),
            path,
            size,
        };
        for dir in &self.inputs_dirs {
            for name in &names {
                let p = dir.join(name);
                if let Some((d, size)) = self.digest_of(&p) {
                    if d == pin.sha256 {
                        return Some(found(p, size));
                    }
                }
            }
        }
        for dir in &self.inputs_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .map(|e| e.path())
                .collect();
            files.sort();
            for p in files {
                if let Some((d, size)) = self.digest_of(&p) {
                    if d == pin.sha256 {
                        return Some(found(p, size));
                    }
                }
            }
        }
        None
    }

    fn local(&self, pin: &Pin, source: &str) -> Result<Fetched, String> {
        let rel = source.strip_prefix("file:").unwrap_or(source);
        let path = self.base_dir.join(rel);
        let (got, size) =
            digest::sha256_file(&path).map_err(|e| format!("{} ({e})", path.display()))?;
        if got != pin.sha256 {
            return Err(format!("sha256 mismatch: got {got}"));
        }
        Ok(Fetched {
            path,
            source: source.to_owned(),
            size,
        })
    }

    fn download(&self, pin: &Pin, url: &str) -> Result<Fetched, String> {
        let dir = self.cache_dir.join("sha256");
        std::fs::create_dir_all(&dir).map_err(|e| format!("cache {}: {e}", dir.display()))?;
        let response = ureq::get(url).call().map_err(|e| match e {
            ureq::Error::StatusCode(code) => format!("HTTP {code}"),
            other => other.to_string(),
        })?;
        let total = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let progress = crate::progress::Progress::new(self.show_progress);
        let bar = progress.bytes(total.unwrap_or(0), &pin.name);
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| format!("cache {}: {e}", dir.display()))?;
        let mut reader = response.into_body().into_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| format!("download: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| format!("cache: {e}"))?;
            size += n as u64;
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        let got = hex::encode(hasher.finalize());
        if got != pin.sha256 {
            return Err(format!("sha256 mismatch: got {got}"));
        }
        let dest = self.cache_path(&pin.sha256);
        tmp.persist(&dest)
            .map_err(|e| format!("cache: {}", e.error))?;
        Ok(Fetched {
            path: dest,
            source: url.to_owned(),
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    fn pin(name: &str, data: &[u8], sources: &[&str]) -> Pin {
        Pin {
            name: name.into(),
            sha256: digest::sha256_bytes(data),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn local_source_inputs_dir_by_name_and_by_digest() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("recipe");
        let inputs = d.path().join("inputs");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&inputs).unwrap();
        std::fs::write(base.join("local.bin"), b"local").unwrap();
        std::fs::write(inputs.join("pkg_1%3a2.deb"), b"by name").unwrap();
        std::fs::write(inputs.join("renamed.deb"), b"by digest").unwrap();
        let f =
            Fetcher::new(d.path().join("cache"), vec![inputs.clone()], base.clone()).offline(true);

        let got = f.fetch(&pin("l", b"local", &["local.bin"])).unwrap();
        assert_eq!(got.path, base.join("local.bin"));
        assert_eq!(got.size, 5);
        let got = f
            .fetch(&pin(
                "n",
                b"by name",
                &["https://x.invalid/pool/pkg_1%3a2.deb"],
            ))
            .unwrap();
        assert!(got.source.starts_with("inputs:"), "{}", got.source);
        let got = f
            .fetch(&pin(
                "d",
                b"by digest",
                &["https://x.invalid/other-name.deb"],
            ))
            .unwrap();
        assert_eq!(got.path, inputs.join("renamed.deb"));
    }

    #[test]
    fn mismatch_and_offline_list_every_attempt() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.bin"), b"wrong").unwrap();
        let f = Fetcher::new(d.path().join("cache"), vec![], d.path().to_owned()).offline(true);
        let e = f
            .fetch(&pin(
                "x",
                b"right",
                &["a.bin", "missing.bin", "https://x.invalid/a.bin"],
            ))
            .unwrap_err()
            .to_string();
        assert!(e.contains("input x"), "{e}");
        assert!(e.contains("a.bin: sha256 mismatch"), "{e}");
        assert!(e.contains("missing.bin"), "{e}");
        assert!(e.contains("https://x.invalid/a.bin: offline"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn bad_pin_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = Fetcher::new(d.path().into(), vec![], d.path().into());
        let p = Pin {
            name: "x".into(),
            sha256: "ABC".into(),
            sources: vec![],
        };
        assert!(matches!(f.fetch(&p), Err(FetchError::BadPin { .. })));
    }

    /// Serves `body` for up to `n` requests on a loopback port; returns the URL.
    fn serve(body: &'static [u8], status: &'static str, n: usize) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(n) {
                let Ok(mut s) = stream else { continue };
                let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok() {
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(body);
            }
        });
        format!("http://{addr}/pool/file.deb")
    }

    #[test]
    fn download_verifies_caches_and_repairs_corrupt_cache() {
        let d = tempfile::tempdir().unwrap();
        let url = serve(b"downloaded bytes", "200 OK", 2);
        let f = Fetcher::new(d.path().join("cache"), vec![], d.path().into());
        let p = pin("dl", b"downloaded bytes", &[&url]);
        let got = f.fetch(&p).unwrap();
        assert_eq!(got.source, url);
        assert_eq!(std::fs::read(&got.path).unwrap(), b"downloaded bytes");
        // Cache hit.
        assert_eq!(f.fetch(&p).unwrap().source, "cache");
        // Corrupt the cache: it is removed and the download repeated.
        std::fs::write(&got.path, b"corrupt").unwrap();
        let again = f.fetch(&p).unwrap();
        assert_eq!(again.source, url);
        assert_eq!(std::fs::read(&again.path).unwrap(), b"downloaded bytes");
    }

    #[test]
    fn http_errors_and_wrong_content_leave_nothing_in_cache() {
        let d = tempfile::tempdir().unwrap();
        let missing = serve(b"", "404 Not Found", 1);
        let wrong = serve(b"other bytes", "200 OK", 1);
        let f = Fetcher::new(d.path().join("cache"), vec![], d.path().into());
        let e = f
            .fetch(&pin("w", b"wanted", &[&missing, &wrong]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTP 404"), "{e}");
        assert!(e.contains("sha256 mismatch"), "{e}");
        let left: Vec<_> = std::fs::read_dir(d.path().join("cache/sha256"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a_1%3a2.deb"), "a_1:2.deb");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
