//! What to do about an error, in the command line's words. The library's errors say what
//! is wrong; the flag or command that fixes it is named here, once, for every command.

use std::error::Error;

use zoa::image::compose::ComposeError;
use zoa::image::BuildError;
use zoa::init_build::InitBuildError;
use zoa::release::keys::{KeyError, PASSWORD_ENV};
use zoa::release::ReleaseError;
use zoa::secureboot::keys::SecureBootKeyError;
use zoa::secureboot::sign::SignError;

#[cfg(feature = "aws")]
mod aws;

/// The hint for the first error in the chain that has one.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(hint_for)
}

/// Looks inside zoa's wrapper errors too: their `#[error(transparent)]` variants pass
/// `source()` through, so the wrapped error never appears in the chain by itself.
fn hint_for(err: &(dyn Error + 'static)) -> Option<String> {
    if let Some(e) = err.downcast_ref::<KeyError>() {
        return key_hint(e);
    }
    if let Some(e) = err.downcast_ref::<SecureBootKeyError>() {
        return secure_boot_key_hint(e);
    }
    if let Some(e) = err.downcast_ref::<SignError>() {
        return sign_hint(e);
    }
    if let Some(e) = err.downcast_ref::<ReleaseError>() {
        return release_hint(e);
    }
    match err.downcast_ref::<BuildError>() {
        Some(BuildError::Sign(e)) => return sign_hint(e),
        Some(BuildError::Compose(ComposeError::InitNotFound)) => return Some(NO_INIT.to_owned()),
        _ => {}
    }
    if let Some(ComposeError::InitNotFound) = err.downcast_ref::<ComposeError>() {
        return Some(NO_INIT.to_owned());
    }
    if let Some(InitBuildError::NoZig { version, .. }) = err.downcast_ref::<InitBuildError>() {
        return Some(format!(
            "install zig {version} as .ci/deps does (the pinned `ziglang` wheel), pass --zig FILE, or set ZOA_ZIG"
        ));
    }
    #[cfg(feature = "aws")]
    if let Some(e) = err.downcast_ref::<zoa::aws::AwsError>() {
        return aws::aws_hint(e);
    }
    None
}

fn release_hint(err: &ReleaseError) -> Option<String> {
    match err {
        ReleaseError::Key(e) => key_hint(e),
        _ => None,
    }
}

const NO_INIT: &str =
    "build it with `zoa build-init` (in the zoa checkout), pass --init FILE, or set ZOA_INIT";

const OVERWRITE: &str = "pass --force to replace it, or choose another --out prefix";

fn key_hint(err: &KeyError) -> Option<String> {
    let text = match err {
        KeyError::Exists { .. } => OVERWRITE.to_owned(),
        KeyError::PasswordEnvUnset => format!(
            "set {PASSWORD_ENV}, pass --password-file FILE, or use --no-password for an unencrypted key"
        ),
        KeyError::PasswordEmpty { .. } => {
            "or use --no-password for an unencrypted key".to_owned()
        }
        KeyError::NoTerminal | KeyError::PasswordRequired { .. } => format!(
            "set {PASSWORD_ENV} or pass --password-file FILE (for a new CI key: --no-password)"
        ),
        _ => return None,
    };
    Some(text)
}

fn secure_boot_key_hint(err: &SecureBootKeyError) -> Option<String> {
    match err {
        SecureBootKeyError::Exists { .. } => Some(OVERWRITE.to_owned()),
        SecureBootKeyError::BadKey { .. } | SecureBootKeyError::BadCertificate { .. } => Some(
            "`zoa keygen --secure-boot --out PREFIX` writes PREFIX-db.key and PREFIX-db.crt"
                .to_owned(),
        ),
        _ => None,
    }
}

fn sign_hint(err: &SignError) -> Option<String> {
    match err {
        SignError::NotRsa { .. } => Some("`zoa keygen --secure-boot` makes RSA keys".to_owned()),
        SignError::Key(e) => secure_boot_key_hint(e),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    fn hint_of(err: impl Into<anyhow::Error>) -> Option<String> {
        hint(&err.into())
    }

    #[test]
    fn a_missing_init_names_where_one_comes_from() {
        assert!(hint_of(BuildError::Compose(ComposeError::InitNotFound))
            .is_some_and(|h| h.contains("--init FILE")));
    }

    /// Every long flag of every `zoa` subcommand.
    fn all_flags(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                out.insert(format!("--{long}"));
            }
        }
        for sub in cmd.get_subcommands() {
            all_flags(sub, out);
        }
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The rule this module exists for, checked on the sources: outside `src/cli` and
    /// `main.rs`, no string literal spells one of zoa's flags. Doc comments may (they
    /// describe the CLI a value comes from); arguments passed to other programs are
    /// skipped by their shape (`.arg(..)`, or a line that is only the argument).
    #[test]
    fn the_library_never_names_a_flag() {
        let mut flags = BTreeSet::new();
        all_flags(&super::super::args::Cli::command(), &mut flags);
        // Flags of other programs the library runs, spelled the same as one of zoa's.
        for theirs in [
            "--version",
            "--target",
            "--quiet",
            "--release",
            "--locked",
            "--json",
        ] {
            flags.remove(theirs);
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut found = Vec::new();
        for file in files {
            let rel = file.strip_prefix(&src).unwrap();
            if rel.starts_with("cli") || rel == Path::new("main.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let t = line.trim_start();
                if t.starts_with("//") || t.starts_with('"') || line.contains(".arg") {
                    continue;
                }
                let Some(quoted) = line.split_once('"').map(|(_, rest)| rest) else {
                    continue;
                };
                for flag in &flags {
                    let named = quoted.match_indices(flag.as_str()).any(|(i, _)| {
                        !quoted[i + flag.len()..]
                            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
                    });
                    if named {
                        found.push(format!("{}:{}: {flag}", rel.display(), n + 1));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "flags in library strings:\n{}",
            found.join("\n")
        );
    }
}
