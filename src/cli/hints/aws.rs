//! Hints for the AWS stage's errors (a zoa built with the `aws` feature).

use zoa::aws::{AwsError, Remedy};

use super::release_hint;

/// The hint for an error of `zoa deploy`, `rollout`, `destroy`, `policy`, `seal` or `audit`.
pub(super) fn aws_hint(err: &AwsError) -> Option<String> {
    match err {
        AwsError::WrongRegion { recorded, .. } => Some(format!("pass --region {recorded}")),
        AwsError::NoRegion => Some("pass --region REGION".to_owned()),
        AwsError::RegionNotAllowed { allowed, .. } => Some(format!(
            "pass --region {} (or set AWS_REGION), or sign the release again with --regions naming this region",
            allowed.join(" or ")
        )),
        AwsError::Refused { remedy, .. } => Some(remedy_hint(remedy)),
        AwsError::Release(e) => release_hint(e),
        _ => None,
    }
}

/// Says a remedy with the flags of `zoa deploy`, `zoa rollout` and `zoa seal`.
fn remedy_hint(remedy: &Remedy) -> String {
    match remedy {
        Remedy::SignWithUefiData { dir } => format!(
            "sign it again with `zoa sign {} --uefi-data BLOB`",
            dir.display()
        ),
        Remedy::GiveModel { encrypted: false } => "pass --model FILE".to_owned(),
        Remedy::GiveModel { encrypted: true } => {
            "pass --model FILE (the age-encrypted file)".to_owned()
        }
        Remedy::Seal { dir, name } => format!(
            "seal it again with `zoa seal --key {} --name {name}`",
            dir.as_deref()
                .map_or("DIR".to_owned(), |d| d.display().to_string())
        ),
        Remedy::SecretName { given, sealed_as } => format!(
            "pass it as --secret {sealed_as}=FILE, or seal it again with --name {given}"
        ),
        Remedy::SealUnderOneKey => {
            "seal every --secret with the same `zoa seal --key DIR`".to_owned()
        }
        Remedy::DeployKeyFirst { dir } => format!(
            "deploy without --secret first (it creates the KMS key), seal with `zoa seal --key {} --name NAME`, then deploy again with --secret NAME=FILE",
            dir.display()
        ),
        Remedy::SecretsOrUserData => {
            "give --secret or --user-data, not both".to_owned()
        }
        Remedy::AnotherName => "deploy under another --name".to_owned(),
        Remedy::DestroyOrAnotherName => {
            "`zoa destroy` removes it, or deploy under another --name".to_owned()
        }
        Remedy::GiveSubnet => "pass --subnet".to_owned(),
        Remedy::DeployAsFleet => "deploy the new release with --fleet (or under another --name), then destroy the old one".to_owned(),
        Remedy::Reseal { names } => format!("pass --reseal NAME=FILE for {}", names.join(", ")),
        Remedy::NoReseal => "drop --reseal".to_owned(),
        Remedy::DeployedReleaseDir => {
            "--from must be the release directory that was deployed".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn hint_of(err: impl Into<anyhow::Error>) -> Option<String> {
        super::super::hint(&err.into())
    }

    #[test]
    fn refusals_get_their_flags_here() {
        let refused = |remedy| AwsError::Refused {
            subject: "configuration".into(),
            message: "m".into(),
            remedy,
        };
        let reseal = refused(Remedy::Reseal {
            names: vec!["api-key".into(), "token".into()],
        });
        assert_eq!(reseal.to_string(), "configuration: m");
        assert_eq!(
            hint_of(reseal).as_deref(),
            Some("pass --reseal NAME=FILE for api-key, token")
        );
        let sign = refused(Remedy::SignWithUefiData {
            dir: PathBuf::from("rel"),
        });
        assert_eq!(
            hint_of(sign).as_deref(),
            Some("sign it again with `zoa sign rel --uefi-data BLOB`")
        );
        let wrapped = anyhow::Error::from(refused(Remedy::GiveSubnet)).context("deploy");
        assert_eq!(
            super::super::hint(&wrapped).as_deref(),
            Some("pass --subnet")
        );
        assert_eq!(
            hint_of(AwsError::NoRegion).as_deref(),
            Some("pass --region REGION")
        );
        assert_eq!(
            hint_of(AwsError::Step {
                step: "s".into(),
                message: "plain".into()
            }),
            None
        );
    }
}
