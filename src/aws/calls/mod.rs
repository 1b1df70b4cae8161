//! AWS calls as typed values: one spec per call, which `--plan` renders (`call()` gives
//! the `service:Operation` and its parameters as the API documents them) and apply sends
//! (`send()`). Both read the same fields, so the plan shows every parameter the call will
//! carry; a value only known once an earlier step ran is an [`Id::Pending`] placeholder,
//! and sending a spec that still holds one is refused.
//!
//! One file per service. A spec's `send` also owns what makes the call safe to repeat
//! (an "already exists" answer from an earlier attempt, a resource already gone): the
//! stages above decide what to call, these files how.
//!
//! To add a call: a struct in the service's file with `call()` and `send()`, a builder for
//! it on the stage that makes it (`deploy`, `rollout`, `destroy`), and both the plan and
//! the apply use that builder.

pub mod autoscaling;
pub mod ebs;
pub mod ec2;
pub mod elb;
pub mod iam;
pub mod kms;

use serde_json::{json, Value};

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{api_error, AwsError};

/// A resource id: known, or made by an earlier step of the same run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Known(String),
    /// What the plan shows instead (e.g. `snapshot-id`, shown as `<snapshot-id>`).
    Pending(&'static str),
}

impl Id {
    /// The first known value, else the placeholder.
    pub fn first_of(candidates: [Option<&String>; 2], placeholder: &'static str) -> Id {
        candidates
            .into_iter()
            .flatten()
            .next()
            .map(|v| Id::Known(v.clone()))
            .unwrap_or(Id::Pending(placeholder))
    }

    /// A recorded value, else the placeholder.
    pub fn recorded(value: Option<&String>, placeholder: &'static str) -> Id {
        Id::first_of([value, None], placeholder)
    }

    pub(crate) fn render(&self) -> String {
        match self {
            Id::Known(v) => v.clone(),
            Id::Pending(what) => format!("<{what}>"),
        }
    }

    pub(crate) fn require(&self, step: &str) -> Result<&str, AwsError> {
        match self {
            Id::Known(v) => Ok(v),
            Id::Pending(what) => Err(AwsError::step(
                step,
                format!("no {what} recorded (a bug in zoa: an earlier step did not run)"),
            )),
        }
    }
}

/// Tags as `(key, value)` pairs, in order.
pub type Tags = Vec<(String, String)>;

/// Tags as EC2, IAM and EBS name them (`Key`, `Value`).
pub(crate) fn tags_json(tags: &Tags) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

/// Whether a rendered value still holds a `<placeholder>` (a policy document naming a
/// key the run has not made yet): such a value is for the plan only, never sent.
pub(crate) fn has_placeholder(v: &Value) -> bool {
    match v {
        Value::String(s) => s
            .find('<')
            .is_some_and(|i| s[i..].find('>').is_some_and(|j| j > 1)),
        Value::Array(items) => items.iter().any(has_placeholder),
        Value::Object(m) => m.values().any(has_placeholder),
        _ => false,
    }
}

/// Refuses to send a document that still names something not made yet.
pub(crate) fn refuse_placeholders(
    step: &str,
    what: &str,
    document: &Value,
) -> Result<(), AwsError> {
    if has_placeholder(document) {
        return Err(AwsError::step(
            step,
            format!(
                "{what} names a resource not made yet (a bug in zoa: an earlier step did not run)"
            ),
        ));
    }
    Ok(())
}

/// What a call that may have been made before (a retried or resumed run) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This call made the change.
    Done,
    /// The change was there already (made by an earlier attempt, or the resource is gone).
    AlreadyThere,
}

/// A call's answer as an [`Outcome`]: the error codes `already` accepts mean the work
/// was done before (by an earlier attempt, or the resource is gone); any other error fails
/// the step.
pub(crate) fn outcome<T, E>(
    answer: Result<T, SdkError<E, HttpResponse>>,
    step: &str,
    api: &str,
    already: impl Fn(&str) -> bool,
) -> Result<Outcome, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match answer {
        Ok(_) => Ok(Outcome::Done),
        Err(e) if e.code().is_some_and(already) => Ok(Outcome::AlreadyThere),
        Err(e) => Err(api_error(step, api, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_ids_show_as_placeholders_and_cannot_be_sent() {
        let id = Id::first_of([None, None], "snapshot-id");
        assert_eq!(id.render(), "<snapshot-id>");
        assert!(id.require("image").is_err());
        let s = "snap-1".to_owned();
        let id = Id::first_of([None, Some(&s)], "snapshot-id");
        assert_eq!(id.require("image").unwrap(), "snap-1");
        assert_eq!(Id::recorded(Some(&s), "x"), Id::Known(s.clone()));
    }

    #[test]
    fn placeholders_are_found_anywhere_in_a_document() {
        assert!(has_placeholder(
            &json!({"Statement": [{"Resource": "arn:aws:kms:r:1:key/<key-id>"}]})
        ));
        assert!(!has_placeholder(&json!({"a": ["x < y", "<>", 1]})));
    }
}
