//! Release signing keys and signatures, in minisign's formats.
//!
//! `zoa keygen` writes a minisign key pair, `zoa sign` makes a prehashed minisign
//! signature over `release.json`, and `zoa verify` checks one. All key and signature work
//! goes through the `minisign` crate, so the files interoperate with the `minisign`
//! command-line tool both ways: what zoa signs, `minisign -V` verifies, and zoa verifies
//! what `minisign -S` signs.
//!
//! Passwords come from [`Password`]; they are never printed or logged. Passwords and the
//! bytes of secret key files are held in [`Zeroizing`] buffers, zeroed when dropped. What
//! the `minisign` crate holds is out of zoa's reach: it takes passwords by value and its
//! `SecretKey` is not zeroed on drop, so zoa hands over its own buffer rather than a copy.

use std::ffi::OsString;
use std::io::{Cursor, IsTerminal};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::fsio::{self, ReadBoundedError};
use minisign::{ErrorKind, KeyPair, PublicKey, SecretKey, SecretKeyBox, SignatureBox};
use zeroize::Zeroizing;

/// The environment variable [`Password::Env`] reads.
pub const PASSWORD_ENV: &str = "ZOA_KEY_PASSWORD";

/// The untrusted comment of every signature zoa makes. Nothing checks it: minisign
/// signs only the trusted comment.
pub const UNTRUSTED_COMMENT: &str = "signature from zoa secret key";

/// Key files are a few hundred bytes; the cap keeps a wrong path (a disk image, say)
/// from being read into memory whole.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The Ed25519 signature inside a minisign signature line: algorithm (2 bytes),
/// key id (8), signature (64).
const SIGNATURE_LINE_BYTES: usize = 74;

/// The Ed25519 signature over the trusted comment (a .minisig's fourth line).
const GLOBAL_SIGNATURE_BYTES: usize = 64;

/// Where a secret key's password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// No password: the secret key is stored unencrypted (CI keys kept in a secret store).
    None,
    /// The `ZOA_KEY_PASSWORD` environment variable.
    Env,
    /// The first line of this file, its trailing newline stripped.
    File(PathBuf),
    /// Asked on the terminal; an error when standard input is not a terminal.
    Prompt,
}

/// Errors of key generation, password handling and signing.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: already exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("{prefix:?}: not a key file prefix: give a path without a trailing slash, such as keys/release (for keys/release.key and keys/release.pub)")]
    BadPrefix { prefix: PathBuf },
    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{PASSWORD_ENV} is not set: no key password was given")]
    PasswordEnvUnset,
    #[error("{PASSWORD_ENV} is not valid UTF-8: minisign passwords are text; set it to the key password")]
    PasswordEnvNotUtf8,
    #[error("{origin}: the password is empty: give a non-empty password")]
    PasswordEmpty { origin: String },
    #[error(
        "{path}: the password file is not valid UTF-8 text: write the password as its first line"
    )]
    PasswordFileNotUtf8 { path: PathBuf },
    #[error("cannot ask for the key password: standard input is not a terminal")]
    NoTerminal,
    #[error("cannot read the key password from the terminal: {source}")]
    Prompt { source: std::io::Error },
    #[error("the two passwords typed differ: run again and type the same password twice")]
    PasswordMismatch,
    #[error("{path}: the secret key is password-protected, and no password was given (run on a terminal to be asked)")]
    PasswordRequired { path: PathBuf },
    #[error("{path}: wrong password for this secret key (or the key file is damaged): check the password and that this is the intended key")]
    WrongPassword { path: PathBuf },
    #[error("{path}: not a minisign secret key ({detail}): give the PREFIX.key file written by `zoa keygen` or `minisign -G`")]
    MalformedSecretKey { path: PathBuf, detail: String },
    #[error("cannot generate a key pair: {detail}")]
    Generate { detail: String },
    #[error("trusted comment {comment:?} {problem}: a minisign trusted comment is one line without leading or trailing blanks")]
    BadTrustedComment {
        comment: String,
        problem: &'static str,
    },
    #[error("{path}: cannot sign with this key: {detail}")]
    Sign { path: PathBuf, detail: String },
}

/// Errors of signature verification. Separate from [`KeyError`] because the CLI gives a
/// signature that does not verify its own exit status.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("{path}: cannot read the public key: {source}")]
    PublicKeyUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a minisign public key ({detail}): give the two-line PREFIX.pub file written by `zoa keygen` or `minisign -G`")]
    MalformedPublicKey { path: PathBuf, detail: String },
    #[error("malformed minisign signature ({detail}): expected the four-line .minisig file written by `zoa sign` or `minisign -S`")]
    MalformedSignature { detail: String },
    #[error("signed by key {signature_key_id}, not {public_key_id} ({path}): verify with the public key of {signature_key_id}, or re-sign with the key of {public_key_id}")]
    WrongKey {
        signature_key_id: String,
        public_key_id: String,
        path: PathBuf,
    },
    #[error("signed by key {signature_key_id}, which is none of the trusted keys ({trusted}): add its public key, or re-sign")]
    UntrustedKey {
        signature_key_id: String,
        trusted: String,
    },
    #[error("invalid signature by key {key_id}: the signed data or the trusted comment was changed after signing (or the signature is damaged); re-sign or restore the original files")]
    Invalid { key_id: String },
}

/// The files `zoa keygen` wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyFiles {
    /// `PREFIX.key`, mode 0600.
    pub secret: PathBuf,
    /// `PREFIX.pub`.
    pub public: PathBuf,
    /// The key id in hex, as minisign shows it (16 upper-case digits).
    pub key_id: String,
}

/// What a valid signature says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// The signed trusted comment (without the `trusted comment: ` prefix).
    pub trusted_comment: String,
    /// The signing key's id in hex, as minisign shows it.
    pub key_id: String,
}

impl Password {
    /// The usual choice for a command line: `--no-password`, else `--password-file`,
    /// else `ZOA_KEY_PASSWORD` when it is set, else a terminal prompt.
    pub fn choose(no_password: bool, password_file: Option<PathBuf>) -> Password {
        if no_password {
            Password::None
        } else if let Some(file) = password_file {
            Password::File(file)
        } else if std::env::var_os(PASSWORD_ENV).is_some() {
            Password::Env
        } else {
            Password::Prompt
        }
    }

    /// The password, or `None` for [`Password::None`]. With `confirm`, a prompt asks
    /// twice (for a new key, where a typo would lock the key away for good).
    pub fn resolve(&self, confirm: bool) -> Result<Option<Zeroizing<String>>, KeyError> {
        match self {
            Password::None => Ok(None),
            Password::Env => password_from_env(std::env::var_os(PASSWORD_ENV)).map(Some),
            Password::File(path) => password_from_file(path).map(Some),
            Password::Prompt => {
                // rpassword reads /dev/tty, but a job without a terminal on stdin (CI) must
                // fail at once instead of waiting on a terminal nobody watches.
                if !std::io::stdin().is_terminal() {
                    return Err(KeyError::NoTerminal);
                }
                let prompt = |p: &str| {
                    rpassword::prompt_password(p)
                        .map(Zeroizing::new)
                        .map_err(|source| KeyError::Prompt { source })
                };
                let first = prompt("Key password: ")?;
                if confirm && *prompt("Key password (again): ")? != *first {
                    return Err(KeyError::PasswordMismatch);
                }
                non_empty(first, "the terminal prompt").map(Some)
            }
        }
    }
}

fn non_empty(password: Zeroizing<String>, origin: &str) -> Result<Zeroizing<String>, KeyError> {
    if password.is_empty() {
        return Err(KeyError::PasswordEmpty {
            origin: origin.to_owned(),
        });
    }
    Ok(password)
}

/// The password from `ZOA_KEY_PASSWORD`'s value (taken as a parameter so tests need not
/// change the process environment).
fn password_from_env(value: Option<OsString>) -> Result<Zeroizing<String>, KeyError> {
    let value = value.ok_or(KeyError::PasswordEnvUnset)?;
    let value = match String::from_utf8(value.into_vec()) {
        Ok(text) => Zeroizing::new(text),
        Err(e) => {
            drop(Zeroizing::new(e.into_bytes()));
            return Err(KeyError::PasswordEnvNotUtf8);
        }
    };
    non_empty(value, PASSWORD_ENV)
}

fn password_from_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let bytes = read_limited_secret(path).map_err(|e| match e {
        ReadBoundedError::Io(source) => KeyError::Io {
            path: path.to_owned(),
            action: "read the password file",
            source,
        },
        ReadBoundedError::TooLarge => KeyError::Io {
            path: path.to_owned(),
            action: "read the password file",
            source: std::io::Error::other("larger than 64 KiB; the password is its first line"),
        },
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::PasswordFileNotUtf8 {
        path: path.to_owned(),
    })?;
    // Only the line ending goes: blanks inside or around a password are part of it.
    let first = text.split('\n').next().unwrap_or_default();
    let first = first.strip_suffix('\r').unwrap_or(first);
    non_empty(
        Zeroizing::new(first.to_owned()),
        &path.display().to_string(),
    )
}

/// The password as the `minisign` crate takes it: by value, dropped without being zeroed.
/// Handing over zoa's own buffer leaves no second copy behind.
fn for_minisign(mut password: Zeroizing<String>) -> String {
    std::mem::take(&mut *password)
}

/// Reads at most [`MAX_KEY_FILE`] bytes; more is an error rather than a silent cut.
fn read_limited(path: &Path) -> Result<Vec<u8>, ReadBoundedError> {
    fsio::read_bounded(path, MAX_KEY_FILE)
}

/// [`read_limited`] for secret key and password files: zeroed when dropped.
fn read_limited_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, ReadBoundedError> {
    fsio::read_secret_file(path, MAX_KEY_FILE)
}

/// `PREFIX` + `suffix`, appended rather than replacing an extension: a prefix such as
/// `keys/release-1.2` must give `keys/release-1.2.key`.
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A minisign key id: the 8 id bytes read as a little-endian integer, in 16 upper-case
/// hex digits (as the minisign crate writes it; the `minisign` CLI drops leading zeros).
fn key_id(keynum: &[u8]) -> String {
    match <[u8; 8]>::try_from(keynum) {
        Ok(bytes) => format!("{:016X}", u64::from_le_bytes(bytes)),
        // The crate always gives 8 bytes; show whatever it gave rather than fail.
        Err(_) => hex::encode_upper(keynum),
    }
}

/// `zoa keygen`: a minisign key pair at `PREFIX.key` (mode 0600) and `PREFIX.pub`.
///
/// Refuses to overwrite existing files unless `force`. Each file is written to a
/// temporary file in the same directory and renamed into place, and a failure part-way
/// removes what this call created, so no half-written key is ever left behind.
pub fn keygen(prefix: &Path, password: &Password, force: bool) -> Result<KeyFiles, KeyError> {
    // "keys/" would give the hidden files "keys/.key" and "keys/.pub": surely a mistake.
    if prefix.file_name().is_none() || prefix.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(KeyError::BadPrefix {
            prefix: prefix.to_owned(),
        });
    }
    let secret_path = with_suffix(prefix, ".key");
    let public_path = with_suffix(prefix, ".pub");
    if !force {
        for path in [&secret_path, &public_path] {
            // symlink_metadata: a dangling symlink is still something we must not replace.
            if path.symlink_metadata().is_ok() {
                return Err(KeyError::Exists { path: path.clone() });
            }
        }
    }
    let dir = match secret_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(KeyError::Io {
            path: dir,
            action: "write the key pair into this directory",
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such directory; create it first",
            ),
        });
    }

    let pass = password.resolve(true)?;
    let generate_err = |e: minisign::PError| KeyError::Generate {
        detail: e.to_string(),
    };
    let (pair, secret_comment) = match pass {
        None => (
            KeyPair::generate_unencrypted_keypair().map_err(generate_err)?,
            "zoa secret key (unencrypted)",
        ),
        Some(pw) => (
            KeyPair::generate_encrypted_keypair(Some(for_minisign(pw))).map_err(generate_err)?,
            "zoa secret key (password-protected)",
        ),
    };
    // Unencrypted (--no-password), this text is the secret key itself.
    let secret_text = Zeroizing::new(
        pair.sk
            .to_box(Some(secret_comment))
            .map_err(generate_err)?
            .into_string(),
    );
    let public_text = pair.pk.to_box().map_err(generate_err)?.to_bytes();

    let secret_tmp = write_temp(&secret_path, secret_text.as_bytes(), fsio::PRIVATE)?;
    let public_tmp = write_temp(&public_path, &public_text, fsio::PUBLIC)?;
    persist(secret_tmp, &secret_path, force)?;
    if let Err(e) = persist(public_tmp, &public_path, force) {
        // Without its public half the secret key is useless and confusing: take it back.
        let _ = std::fs::remove_file(&secret_path);
        return Err(e);
    }
    Ok(KeyFiles {
        secret: secret_path,
        public: public_path,
        key_id: key_id(pair.pk.keynum()),
    })
}

/// A temporary file beside `target` holding `bytes`, with `mode` from the start.
fn write_temp(target: &Path, bytes: &[u8], mode: u32) -> Result<tempfile::NamedTempFile, KeyError> {
    fsio::write_temp(target, bytes, mode).map_err(|e| KeyError::Io {
        path: target.to_owned(),
        action: e.step,
        source: e.source,
    })
}

/// Moves a key file into place, synced first (a key cannot be made again); an existing
/// file is only replaced with `force`.
fn persist(tmp: tempfile::NamedTempFile, target: &Path, force: bool) -> Result<(), KeyError> {
    let how = fsio::Persist {
        sync: true,
        replace: force,
    };
    fsio::persist(tmp, target, how).map_err(|e| {
        if e.source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: target.to_owned(),
            }
        } else {
            KeyError::Io {
                path: target.to_owned(),
                action: e.step,
                source: e.source,
            }
        }
    })
}

/// Loads a secret key, asking `password` only when the key is encrypted (so an
/// unencrypted CI key never triggers a prompt).
fn load_secret_key(path: &Path, password: &Password) -> Result<SecretKey, KeyError> {
    let malformed = |detail: String| KeyError::MalformedSecretKey {
        path: path.to_owned(),
        detail,
    };
    // An unencrypted key file is the secret key itself.
    let bytes = read_limited_secret(path).map_err(|e| match e {
        ReadBoundedError::Io(source) => KeyError::Io {
            path: path.to_owned(),
            action: "read the secret key",
            source,
        },
        ReadBoundedError::TooLarge => malformed("larger than 64 KiB".into()),
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed("not UTF-8 text".into()))?;
    let decoded = decode_secret_key_line(text).map_err(malformed)?;
    let key_box = SecretKeyBox::from_string(text).map_err(|e| malformed(e.to_string()))?;
    if !decoded.key.is_encrypted() {
        if *password != Password::None && *password != Password::Prompt {
            log::warn!(
                "{}: the secret key is not password-protected; the password given is not used",
                path.display()
            );
        }
        return match SecretKey::from_unencrypted_box(key_box) {
            Ok(sk) => Ok(sk),
            // `minisign -G -W` (0.11) leaves an unencrypted key's checksum all zeros and
            // never checks it, while the crate insists on it. Such a key is used as
            // decoded: `sign` verifies each new signature with the key's own public
            // half, which still catches a damaged secret.
            Err(e) if matches!(e.kind(), ErrorKind::Verify) && decoded.zero_checksum => {
                Ok(decoded.key)
            }
            Err(e) => Err(malformed(e.to_string())),
        };
    }
    let pass = password
        .resolve(false)?
        .ok_or_else(|| KeyError::PasswordRequired {
            path: path.to_owned(),
        })?;
    SecretKey::from_box(key_box, Some(for_minisign(pass))).map_err(|e| match e.kind() {
        // After decryption the crate checks the key's checksum: a mismatch means the
        // password was wrong (or the file damaged; the two cannot be told apart).
        ErrorKind::Verify => KeyError::WrongPassword {
            path: path.to_owned(),
        },
        _ => malformed(e.to_string()),
    })
}

/// A secret key line decoded by the crate, before any checksum or password check.
struct DecodedSecretKey {
    key: SecretKey,
    /// The trailing 32-byte checksum is all zeros, as `minisign -W` writes it.
    zero_checksum: bool,
}

/// Decodes the key line of a secret key file with the crate (`SecretKey::from_bytes`),
/// so that `SecretKey::is_encrypted` can tell whether a password is needed before
/// anyone is asked for one: the crate's loaders cannot say so without a password.
fn decode_secret_key_line(text: &str) -> Result<DecodedSecretKey, String> {
    let mut lines = text.lines();
    let _comment = lines.next().ok_or("the file is empty")?;
    let line = lines
        .next()
        .ok_or("the key line after the comment is missing")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .map(Zeroizing::new)
        .map_err(|e| format!("the key line is not base64: {e}"))?;
    let key =
        SecretKey::from_bytes(&bytes).map_err(|e| format!("the key line is too short: {e}"))?;
    Ok(DecodedSecretKey {
        key,
        zero_checksum: bytes.ends_with(&[0u8; 32]),
    })
}

fn check_trusted_comment(comment: &str) -> Result<(), KeyError> {
    let problem = if comment.contains(['\n', '\r']) {
        Some("spans several lines")
    } else if comment.trim() != comment {
        // minisign trims the comment line when reading, so blanks at the ends would
        // make a signature that never verifies.
        Some("has leading or trailing blanks")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(KeyError::BadTrustedComment {
            comment: comment.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Signs `data` (the bytes of `release.json`) with the secret key file and returns the
/// text of the `.minisig` file: a prehashed signature (BLAKE2b-512, then Ed25519), the
/// kind `minisign` 0.11 makes by default, with `trusted_comment` signed too.
pub fn sign(
    secret_key: &Path,
    password: &Password,
    data: &[u8],
    trusted_comment: &str,
) -> Result<String, KeyError> {
    check_trusted_comment(trusted_comment)?;
    let sk = load_secret_key(secret_key, password)?;
    let sign_err = |e: minisign::PError| KeyError::Sign {
        path: secret_key.to_owned(),
        detail: format!("{e}; the key file may be damaged"),
    };
    // Passing the public half makes the crate verify the fresh signature before
    // returning it, so a corrupt key cannot produce a release nobody can verify.
    let pk = PublicKey::from_secret_key(&sk).map_err(sign_err)?;
    let signature = minisign::sign(
        Some(&pk),
        &sk,
        Cursor::new(data),
        Some(trusted_comment),
        Some(UNTRUSTED_COMMENT),
    )
    .map_err(sign_err)?;
    Ok(signature.into_string())
}

/// Reads and parses a minisign public key file.
fn load_public_key(path: &Path) -> Result<PublicKey, SignatureError> {
    let malformed = |detail: String| SignatureError::MalformedPublicKey {
        path: path.to_owned(),
        detail,
    };
    let bytes = read_limited(path).map_err(|e| match e {
        ReadBoundedError::Io(source) => SignatureError::PublicKeyUnreadable {
            path: path.to_owned(),
            source,
        },
        ReadBoundedError::TooLarge => malformed("larger than 64 KiB".into()),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("the file is empty".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| malformed("not UTF-8 text".into()))?;
    let pk = PublicKey::from_box(text.into()).map_err(|e| malformed(e.to_string()))?;
    // The crate accepts any algorithm tag here; minisign keys are always "Ed".
    if pk.to_bytes().get(..2) != Some(b"Ed".as_slice()) {
        return Err(malformed("the key's algorithm is not Ed25519".into()));
    }
    Ok(pk)
}

/// Parses the text of a `.minisig` file, strictly: besides the crate's parse, the
/// signature lines must decode to exactly the sizes minisign writes. The crate ignores
/// extra bytes on the second line and panics on a short fourth line, so both are checked
/// here first.
fn parse_signature(text: &str) -> Result<SignatureBox, SignatureError> {
    let malformed = |detail: String| SignatureError::MalformedSignature { detail };
    let lines: Vec<&str> = text.lines().collect();
    let decoded_len = |index: usize, what: &str, want: usize| -> Result<(), SignatureError> {
        let line = lines
            .get(index)
            .ok_or_else(|| malformed(format!("the {what} line is missing")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(line.trim())
            .map_err(|e| malformed(format!("the {what} line is not base64: {e}")))?;
        if bytes.len() != want {
            return Err(malformed(format!(
                "the {what} line holds {} bytes, not {want}",
                bytes.len()
            )));
        }
        Ok(())
    };
    let sig = SignatureBox::from_string(text).map_err(|e| malformed(e.to_string()))?;
    decoded_len(1, "signature", SIGNATURE_LINE_BYTES)?;
    decoded_len(3, "trusted comment signature", GLOBAL_SIGNATURE_BYTES)?;
    Ok(sig)
}

/// Verifies `signature` (the text of a `.minisig` file) over `data` with the public key
/// file, and returns the signed trusted comment and the key id.
///
/// Accepts prehashed signatures (minisign's default) and legacy ones (`minisign -S -l`),
/// as the `minisign` tool does: both are Ed25519 signatures by the same key.
pub fn verify(public_key: &Path, data: &[u8], signature: &str) -> Result<Verified, SignatureError> {
    let pk = load_public_key(public_key)?;
    let sig = parse_signature(signature)?;
    let public_key_id = key_id(pk.keynum());
    let signature_key_id = key_id(sig.keynum());
    // Checked here, before the crate's verify, to name both keys in our own words.
    if signature_key_id != public_key_id {
        return Err(SignatureError::WrongKey {
            signature_key_id,
            public_key_id,
            path: public_key.to_owned(),
        });
    }
    minisign::verify(&pk, &sig, Cursor::new(data), true, false, true).map_err(|_| {
        SignatureError::Invalid {
            key_id: public_key_id.clone(),
        }
    })?;
    let trusted_comment =
        sig.trusted_comment()
            .map_err(|e| SignatureError::MalformedSignature {
                detail: e.to_string(),
            })?;
    Ok(Verified {
        trusted_comment,
        key_id: public_key_id,
    })
}

/// Verifies a signature with whichever of `public_keys` made it (the signature names its key
/// id), so that a log can span a key rotation.
pub fn verify_any(
    public_keys: &[PathBuf],
    data: &[u8],
    signature: &str,
) -> Result<Verified, SignatureError> {
    let sig = parse_signature(signature)?;
    let signature_key_id = key_id(sig.keynum());
    let mut trusted = Vec::with_capacity(public_keys.len());
    for path in public_keys {
        let id = key_id(load_public_key(path)?.keynum());
        if id == signature_key_id {
            return verify(path, data, signature);
        }
        trusted.push(format!("{id} in {}", path.display()));
    }
    Err(SignatureError::UntrustedKey {
        signature_key_id,
        trusted: trusted.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[test]
    fn env_password_rules() {
        assert!(matches!(
            password_from_env(None),
            Err(KeyError::PasswordEnvUnset)
        ));
        assert!(matches!(
            password_from_env(Some("".into())),
            Err(KeyError::PasswordEmpty { .. })
        ));
        assert_eq!(
            password_from_env(Some(" s3cret ".into()))
                .expect("password")
                .as_str(),
            " s3cret "
        );
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![0xff, 0xfe]);
        assert!(matches!(
            password_from_env(Some(bad)),
            Err(KeyError::PasswordEnvNotUtf8)
        ));
    }

    #[test]
    fn password_file_first_line_only() {
        let dir = tmp();
        let f = dir.path().join("pw");
        std::fs::write(&f, "hunter2\r\nsecond line\n").expect("write");
        assert_eq!(
            Password::File(f.clone())
                .resolve(false)
                .expect("pw")
                .as_deref()
                .map(String::as_str),
            Some("hunter2")
        );
        std::fs::write(&f, "no newline").expect("write");
        assert_eq!(
            Password::File(f.clone())
                .resolve(true)
                .expect("pw")
                .as_deref()
                .map(String::as_str),
            Some("no newline")
        );
        std::fs::write(&f, "\nlater").expect("write");
        let e = Password::File(f.clone()).resolve(false).expect_err("empty");
        assert!(e.to_string().contains("the password is empty"), "{e}");
        let missing = dir.path().join("missing");
        let e = Password::File(missing.clone())
            .resolve(false)
            .expect_err("missing");
        assert!(
            e.to_string().starts_with(&missing.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn none_resolves_to_no_password() {
        assert_eq!(Password::None.resolve(true).expect("none"), None);
    }

    #[test]
    fn choose_prefers_explicit_flags() {
        assert_eq!(Password::choose(true, Some("f".into())), Password::None);
        assert_eq!(
            Password::choose(false, Some("f".into())),
            Password::File("f".into())
        );
    }

    #[test]
    fn prompt_refused_without_terminal() {
        // Under `cargo test` stdin is not a terminal when run by CI; skip where it is.
        if std::io::stdin().is_terminal() {
            return;
        }
        assert!(matches!(
            Password::Prompt.resolve(false),
            Err(KeyError::NoTerminal)
        ));
    }

    #[test]
    fn directory_prefix_is_refused() {
        for prefix in ["", "keys/", "/", ".."] {
            let e = keygen(Path::new(prefix), &Password::None, false).expect_err(prefix);
            assert!(matches!(e, KeyError::BadPrefix { .. }), "{prefix}: {e}");
        }
    }

    #[test]
    fn suffix_is_appended_not_replaced() {
        assert_eq!(
            with_suffix(Path::new("k/release-1.2"), ".key"),
            PathBuf::from("k/release-1.2.key")
        );
    }

    #[test]
    fn key_id_matches_minisign_display() {
        assert_eq!(
            key_id(&[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0xAB]),
            "AB07060504030201"
        );
    }

    #[test]
    fn trusted_comment_must_be_one_trimmed_line() {
        assert!(check_trusted_comment("zoa-release name=a version=1 manifest-sha256=00").is_ok());
        assert!(check_trusted_comment("a\nb").is_err());
        assert!(check_trusted_comment("a ").is_err());
        assert!(check_trusted_comment(" a").is_err());
    }

    #[test]
    fn unencrypted_round_trip_and_key_id() {
        let dir = tmp();
        let files = keygen(&dir.path().join("k"), &Password::None, false).expect("keygen");
        assert_eq!(files.key_id.len(), 16);
        let pub_text = std::fs::read_to_string(&files.public).expect("pub");
        assert!(pub_text.contains(&files.key_id), "{pub_text}");
        let sig = sign(&files.secret, &Password::None, b"data", "hello world").expect("sign");
        assert!(
            sig.starts_with("untrusted comment: signature from zoa secret key\n"),
            "{sig}"
        );
        let v = verify(&files.public, b"data", &sig).expect("verify");
        assert_eq!(v.trusted_comment, "hello world");
        assert_eq!(v.key_id, files.key_id);
    }

    #[test]
    fn short_trusted_comment_signature_is_malformed_not_a_panic() {
        let dir = tmp();
        let files = keygen(&dir.path().join("k"), &Password::None, false).expect("keygen");
        let sig = sign(&files.secret, &Password::None, b"data", "c").expect("sign");
        let mut lines: Vec<String> = sig.lines().map(str::to_owned).collect();
        lines[3] = "AAAA".into();
        let e = verify(&files.public, b"data", &(lines.join("\n") + "\n")).expect_err("short");
        assert!(
            matches!(e, SignatureError::MalformedSignature { .. }),
            "{e}"
        );
        // Extra bytes after the Ed25519 signature: minisign rejects it, so do we.
        let mut long = base64::engine::general_purpose::STANDARD
            .decode(sig.lines().nth(1).expect("line"))
            .expect("b64");
        long.extend_from_slice(b"extra");
        lines = sig.lines().map(str::to_owned).collect();
        lines[1] = base64::engine::general_purpose::STANDARD.encode(long);
        let e = verify(&files.public, b"data", &(lines.join("\n") + "\n")).expect_err("long");
        assert!(
            matches!(e, SignatureError::MalformedSignature { .. }),
            "{e}"
        );
    }

    #[test]
    fn encrypted_key_needs_its_password() {
        let dir = tmp();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "correct horse\n").expect("write");
        let files =
            keygen(&dir.path().join("k"), &Password::File(pw.clone()), false).expect("keygen");
        let e = sign(&files.secret, &Password::None, b"x", "c").expect_err("no password");
        assert!(matches!(e, KeyError::PasswordRequired { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&files.secret.display().to_string()),
            "{e}"
        );
    }

    /// Rewrites the key line of an unencrypted secret key file (test helper: the layout
    /// is minisign's, 158 bytes with the 32-byte checksum last).
    fn edit_key_line(path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
        let text = std::fs::read_to_string(path).expect("read key");
        let lines: Vec<&str> = text.lines().collect();
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(lines[1])
            .expect("b64");
        assert_eq!(bytes.len(), 158);
        edit(&mut bytes);
        let line = base64::engine::general_purpose::STANDARD.encode(&bytes);
        std::fs::write(path, format!("{}\n{line}\n", lines[0])).expect("write key");
    }

    #[test]
    fn unencrypted_key_without_checksum_like_minisign_w() {
        let dir = tmp();
        let files = keygen(&dir.path().join("k"), &Password::None, false).expect("keygen");
        edit_key_line(&files.secret, |b| b[126..].fill(0));
        let sig = sign(&files.secret, &Password::None, b"d", "c").expect("zero checksum accepted");
        verify(&files.public, b"d", &sig).expect("verify");
        // A damaged secret scalar is still caught, by the signature self-check.
        edit_key_line(&files.secret, |b| b[70] ^= 0x40);
        let e = sign(&files.secret, &Password::None, b"d", "c").expect_err("damaged");
        assert!(matches!(e, KeyError::Sign { .. }), "{e}");
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    #[test]
    fn unencrypted_key_with_wrong_checksum_is_refused() {
        let dir = tmp();
        let files = keygen(&dir.path().join("k"), &Password::None, false).expect("keygen");
        edit_key_line(&files.secret, |b| b[130] ^= 1);
        let e = sign(&files.secret, &Password::None, b"d", "c").expect_err("bad checksum");
        assert!(matches!(e, KeyError::MalformedSecretKey { .. }), "{e}");
    }

    #[test]
    fn secret_key_garbage_is_named() {
        let dir = tmp();
        let f = dir.path().join("bad.key");
        for text in [
            "",
            "only a comment\n",
            "untrusted comment: x\n!!!not base64!!!\n",
            "untrusted comment: x\nRWQAAA==\n",
        ] {
            std::fs::write(&f, text).expect("write");
            let e = sign(&f, &Password::None, b"x", "c").expect_err("garbage");
            assert!(
                matches!(e, KeyError::MalformedSecretKey { .. }),
                "{text:?}: {e}"
            );
            assert!(e.to_string().starts_with(&f.display().to_string()), "{e}");
        }
    }
}
