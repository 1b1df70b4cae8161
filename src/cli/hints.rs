//! What to do about an error, in the command line's words. The library's errors say what
//! is wrong; the flag or command that fixes it is named here, once, for every command.

use std::error::Error;

use zoa::aws::AwsError;
use zoa::image::BuildError;
use zoa::release::keys::{KeyError, PASSWORD_ENV};
use zoa::release::ReleaseError;
use zoa::secureboot::keys::SecureBootKeyError;
use zoa::secureboot::sign::SignError;

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
    if let Some(BuildError::Sign(e)) = err.downcast_ref::<BuildError>() {
        return sign_hint(e);
    }
    match err.downcast_ref::<AwsError>()? {
        AwsError::WrongRegion { recorded, .. } => Some(format!("pass --region {recorded}")),
        AwsError::Release(e) => release_hint(e),
        _ => None,
    }
}

fn release_hint(err: &ReleaseError) -> Option<String> {
    match err {
        ReleaseError::Key(e) => key_hint(e),
        _ => None,
    }
}

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
