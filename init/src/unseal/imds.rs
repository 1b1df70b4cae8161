//! The instance's region and role credentials, from the EC2 instance metadata service.
//!
//! IMDSv2 only (aws-config's client): a session token from `PUT /latest/api/token` (with
//! `X-aws-ec2-metadata-token-ttl-seconds`), then GETs carrying it in
//! `X-aws-ec2-metadata-token`. zoa deploys with `HttpTokens=required` and a PUT response hop
//! limit of 1, so only the instance itself (not a container or a forwarded packet) gets a token.
//!
//! The endpoint is always set explicitly: nothing in the environment or a profile file steers
//! where zoa-init fetches credentials from.

use std::error::Error;
use std::time::Duration;

use aws_config::imds::client::error::ImdsError;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::imds::Client;
use aws_config::provider_config::ProviderConfig;
use aws_config::BehaviorVersion;
use aws_sdk_kms::config::{Credentials, ProvideCredentials, Region, SharedHttpClient};

use super::UnsealError;

/// The IMDS address on every EC2 instance (IPv4).
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// Long enough for one unseal, and above the client's 120 s refresh margin so that one token
/// serves every GET.
const TOKEN_TTL: Duration = Duration::from_secs(300);
/// IMDS is a link-local service that answers in milliseconds: waiting longer only delays a
/// boot that has already failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const ATTEMPTS: u32 = 3;
/// Bound on one IMDS call, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

const REGION_PATH: &str = "/latest/meta-data/placement/region";
const ROLES_PATH: &str = "/latest/meta-data/iam/security-credentials/";
const USER_DATA_PATH: &str = "/latest/user-data";

/// A client of one IMDS endpoint.
pub(super) struct Imds {
    client: Client,
    config: ProviderConfig,
    endpoint: String,
}

impl Imds {
    /// A client of `endpoint` (default [`DEFAULT_IMDS_ENDPOINT`]) over `http`.
    pub(super) fn new(endpoint: Option<&str>, http: SharedHttpClient) -> Result<Imds, UnsealError> {
        let endpoint = endpoint.unwrap_or(DEFAULT_IMDS_ENDPOINT).to_owned();
        let config = ProviderConfig::without_region()
            .with_http_client(http)
            .with_behavior_version(Some(BehaviorVersion::latest()));
        let client = Client::builder()
            .configure(&config)
            .endpoint(&endpoint)
            .map_err(|e| UnsealError::Imds {
                step: "endpoint",
                detail: format!("{endpoint:?}: {e}"),
            })?
            .token_ttl(TOKEN_TTL)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .max_attempts(ATTEMPTS)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        Ok(Imds {
            client,
            config,
            endpoint,
        })
    }

    /// The instance's region (`placement/region`), which names the KMS endpoint.
    pub(super) async fn region(&self) -> Result<Region, UnsealError> {
        let region = self
            .client
            .get(REGION_PATH)
            .await
            .map_err(|e| self.error("region", &e))?;
        let region = region.as_ref().trim();
        if !is_region_name(region) {
            return Err(UnsealError::Imds {
                step: "region",
                detail: format!("{REGION_PATH} is {region:?}, not a region name"),
            });
        }
        Ok(Region::new(region.to_owned()))
    }

    /// Temporary credentials of the instance's role: its name from the role listing (404: the
    /// instance has no instance profile), then aws-config's provider for its credentials.
    pub(super) async fn role_credentials(&self) -> Result<Credentials, UnsealError> {
        let role = self.role_name().await?;
        let provider = ImdsCredentialsProvider::builder()
            .configure(&self.config)
            .imds_client(self.client.clone())
            .profile(role.clone())
            .build();
        provider
            .provide_credentials()
            .await
            .map_err(|e| UnsealError::Imds {
                step: "role credentials",
                detail: format!("role {role:?} at {}: {}", self.endpoint, describe(&e)),
            })
    }

    /// The instance's user data (404: it has none).
    pub(super) async fn user_data(&self) -> Result<String, UnsealError> {
        match self.client.get(USER_DATA_PATH).await {
            Ok(text) => Ok(text.as_ref().to_owned()),
            Err(ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => {
                Err(UnsealError::UserData {
                    detail: format!(
                        "the instance has none ({}); `zoa deploy --secret NAME=FILE` puts the \
                         sealed secrets there",
                        self.endpoint
                    ),
                })
            }
            Err(e) => Err(self.error("user data", &e)),
        }
    }

    async fn role_name(&self) -> Result<String, UnsealError> {
        let listing = match self.client.get(ROLES_PATH).await {
            Ok(listing) => listing,
            Err(ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => {
                return Err(UnsealError::ImdsNoRole {
                    endpoint: self.endpoint.clone(),
                })
            }
            Err(e) => return Err(self.error("role name", &e)),
        };
        // One role per line; an instance profile holds exactly one.
        match listing.as_ref().lines().next().map(str::trim) {
            Some(role) if !role.is_empty() => Ok(role.to_owned()),
            _ => Err(UnsealError::ImdsNoRole {
                endpoint: self.endpoint.clone(),
            }),
        }
    }

    fn error(&self, step: &'static str, e: &ImdsError) -> UnsealError {
        UnsealError::Imds {
            step,
            detail: format!("{}: {}", self.endpoint, describe(e)),
        }
    }
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`: what we put into a KMS host name.
fn is_region_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
}

/// An error and its causes on one line, each message once. An IMDS error response is shown as
/// its status only: aws-config's own text for it includes the whole response.
pub(super) fn describe(err: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let message = match e.downcast_ref::<ImdsError>() {
            Some(ImdsError::ErrorResponse(r)) => {
                format!("IMDS answered HTTP {}", r.response().status().as_u16())
            }
            _ => e.to_string(),
        };
        if !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
        next = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for ok in ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1"] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "us-east-1a",
            "us--1",
            "a.b-c-1",
            "x/y-z-1",
        ] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }
}
