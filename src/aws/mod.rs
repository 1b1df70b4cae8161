//! `zoa deploy` and friends: a signed release onto EC2 with zero operator access.
//!
//! One submodule per concern: [`policy`] renders the KMS key policy and the instance
//! role's IAM policies from `templates/`; [`state`] is the deploy record (`deploy.json`)
//! that makes a rerun resume; [`plan`] is the list of API calls a deploy makes, printed by
//! `--plan` and executed by [`deploy`]; [`destroy`] removes what a deploy created;
//! [`rollout`] moves a fleet to a new release; [`deployer`] is the least-privilege IAM
//! policy a CI role needs for those three; [`seal`] makes the envelopes that
//! [`userdata`] puts in the instances' user data; [`image_config`] reads what the image
//! expects of a deploy (the model it pins, the secrets it unseals).
//!
//! Every AWS call goes through the AWS SDK for Rust with the standard configuration chain
//! (environment, profiles, SSO, `AWS_ENDPOINT_URL`), so the same code runs against AWS and
//! against the emulator in the integration suite.

pub mod calls;
pub mod deploy;
pub mod deployer;
pub mod destroy;
pub mod image_config;
pub mod plan;
pub mod policy;
pub mod remedy;
pub mod rollout;
pub mod seal;
pub mod state;
pub mod userdata;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::request_id::RequestId;
pub use remedy::Remedy;

/// Where and as whom to talk to AWS: unset fields come from the standard chain.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Overrides every service endpoint (the emulator); `AWS_ENDPOINT_URL` does the same.
    pub endpoint_url: Option<String>,
}

/// Errors of the AWS stage. Each names the step, and for API failures the operation, the
/// error code and the request id, so an operator can find the call in CloudTrail.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{step}: {operation} failed: {code}: {message}{}", request_suffix(.request_id))]
    Api {
        step: String,
        operation: String,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    #[error("{step}: {message}")]
    Step { step: String, message: String },
    /// A refusal the user can act on: `remedy` says how, in the library's terms.
    #[error("{subject}: {message}")]
    Refused {
        subject: String,
        message: String,
        remedy: Remedy,
    },
    #[error("no AWS region: none in AWS_REGION or in the AWS profile's `region`")]
    NoRegion,
    #[error("{release} is signed for deployment in {} only, not in {region} (release.json `regions`)", allowed.join(", "))]
    RegionNotAllowed {
        release: String,
        region: String,
        allowed: Vec<String>,
    },
    #[error("no AWS credentials found ({0}): set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an instance role")]
    NoCredentials(String),
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file}: records a deploy in {recorded}, but the configured region is {configured}")]
    WrongRegion {
        file: String,
        recorded: String,
        configured: String,
    },
    #[error(transparent)]
    Release(#[from] crate::release::ReleaseError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Unbound(#[from] crate::release::binding::UnboundPcr),
}

fn request_suffix(id: &Option<String>) -> String {
    match id {
        Some(id) => format!(" (request id {id})"),
        None => String::new(),
    }
}

impl AwsError {
    pub(crate) fn step(step: &str, message: impl Into<String>) -> AwsError {
        AwsError::Step {
            step: step.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn refused(subject: &str, message: impl Into<String>, remedy: Remedy) -> AwsError {
        AwsError::Refused {
            subject: subject.to_owned(),
            message: message.into(),
            remedy,
        }
    }

    pub(crate) fn file_refused(
        path: &std::path::Path,
        message: impl std::fmt::Display,
        remedy: Remedy,
    ) -> AwsError {
        AwsError::refused(&path.display().to_string(), message.to_string(), remedy)
    }

    pub(crate) fn file(path: &std::path::Path, message: impl std::fmt::Display) -> AwsError {
        AwsError::File {
            file: path.display().to_string(),
            message: message.to_string(),
        }
    }
}

/// An error and its sources on one line, each message once (wrappers often repeat
/// their source's text).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let m = s.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        source = s.source();
    }
    text
}

/// Converts an SDK error into an [`AwsError`] naming the step and operation.
pub(crate) fn api_error<E>(step: &str, operation: &str, err: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let request_id = err.request_id().map(str::to_owned);
    let code = err.code().map(str::to_owned);
    let message = err.message().map(str::to_owned);
    let (code, message) = match (code, message) {
        (Some(c), m) => (c, m.unwrap_or_default()),
        // No service error: a transport failure (timeout, refused connection, DNS). The
        // SDK's display of the whole chain says which.
        (None, _) => {
            // The causes' own messages, joined: DisplayErrorContext would add a debug dump.
            let text = error_chain(&err);
            let code = match &err {
                SdkError::TimeoutError(_) => "Timeout",
                SdkError::DispatchFailure(d) if d.is_timeout() => "Timeout",
                SdkError::DispatchFailure(_) => "ConnectionError",
                SdkError::ConstructionFailure(_) => "InvalidRequest",
                _ => "Error",
            };
            if text.contains("no credentials") || text.contains("NoCredentials") {
                return AwsError::NoCredentials(format!("{step}: {operation}"));
            }
            (code.to_owned(), text)
        }
    };
    AwsError::Api {
        step: step.to_owned(),
        operation: operation.to_owned(),
        code,
        message,
        request_id,
    }
}

/// The service clients one deploy uses, built from one shared configuration.
#[derive(Debug, Clone)]
pub struct Clients {
    pub region: String,
    pub ec2: aws_sdk_ec2::Client,
    pub ebs: aws_sdk_ebs::Client,
    pub kms: aws_sdk_kms::Client,
    pub iam: aws_sdk_iam::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub sts: aws_sdk_sts::Client,
    /// `zoa audit --lookup`. LookupEvents allows two calls a second: this client retries
    /// throttling ten times, with backoff, where the others keep the SDK's three.
    pub cloudtrail: aws_sdk_cloudtrail::Client,
    /// `zoa deploy --expose privatelink`: the internal Network Load Balancer.
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
}

impl Clients {
    /// Loads the standard configuration chain with `options` on top.
    pub async fn connect(options: &AwsOptions) -> Result<Clients, AwsError> {
        // A dead connection fails a call (and the SDK retries it) instead of hanging a
        // deploy forever: the SDK sets no read timeout by default.
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .build();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or(AwsError::NoRegion)?;
        validate_region(&region)?;
        Ok(Clients {
            region,
            ec2: aws_sdk_ec2::Client::new(&config),
            ebs: aws_sdk_ebs::Client::new(&config),
            kms: aws_sdk_kms::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            sts: aws_sdk_sts::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            cloudtrail: aws_sdk_cloudtrail::Client::from_conf(
                aws_sdk_cloudtrail::config::Builder::from(&config)
                    .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(10))
                    .build(),
            ),
        })
    }

    /// The account and partition the credentials belong to (sts:GetCallerIdentity, which
    /// needs no permission and changes nothing).
    pub async fn account(&self) -> Result<Account, AwsError> {
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| api_error("credentials", "sts:GetCallerIdentity", e))?;
        let account_id = out
            .account()
            .ok_or_else(|| AwsError::step("credentials", "GetCallerIdentity returned no account"))?
            .to_owned();
        let arn = out.arn().unwrap_or_default().to_owned();
        let partition = arn.split(':').nth(1).unwrap_or("aws").to_owned();
        Ok(Account {
            account_id,
            partition,
            caller_arn: arn,
        })
    }
}

/// Who the credentials are.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Account {
    pub account_id: String,
    pub partition: String,
    pub caller_arn: String,
}

/// A region name must look like one (`us-east-1`, `eu-central-2`, `us-gov-west-1`): a typo
/// would otherwise surface as a DNS failure deep inside the first call.
fn validate_region(region: &str) -> Result<(), AwsError> {
    if crate::release::regions::is_region_name(region) {
        Ok(())
    } else {
        Err(AwsError::step(
            "configuration",
            format!("{region:?} is not an AWS region name (e.g. us-east-1)"),
        ))
    }
}

/// A runtime for the async SDK, used by the synchronous CLI.
pub fn runtime() -> Result<tokio::runtime::Runtime, AwsError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| AwsError::step("runtime", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names themselves are `release::regions`' to judge (tested there); this is the
    /// error a deploy reports for one that cannot be a region.
    #[test]
    fn a_region_that_cannot_be_one_is_named() {
        assert!(validate_region("eu-central-2").is_ok());
        let e = validate_region("Frankfurt").unwrap_err().to_string();
        assert!(e.contains("\"Frankfurt\" is not an AWS region name"), "{e}");
    }
}
