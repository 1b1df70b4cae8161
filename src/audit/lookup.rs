//! `zoa audit --lookup`: the records from CloudTrail's `LookupEvents` (the last 90 days
//! of management events, one region per call), and the live key policy of each deploy.
//!
//! LookupEvents filters on one attribute per call, so the audit asks once per event
//! source it reads whole (KMS, Session Manager, EC2 Instance Connect) and once per EC2
//! event name it classifies: EC2's own volume of read-only calls is never fetched.
//! LookupEvents allows two calls a second per account and region; the client retries
//! throttling with backoff (ten attempts) instead of failing the audit.

use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
use aws_smithy_types::DateTime;

use super::scope::Deploy;
use super::trail::Record;
use super::{live_policy_finding, Finding};
use crate::aws::{api_error, AwsError, AwsOptions, Clients};

/// Event sources read whole.
pub const SOURCES: [&str; 3] = [
    "kms.amazonaws.com",
    "ssm.amazonaws.com",
    "ec2-instance-connect.amazonaws.com",
];

/// EC2 event names the audit classifies (or follows, for AttachVolume).
pub const EC2_EVENTS: [&str; 15] = [
    "RunInstances",
    "CreateLaunchTemplateVersion",
    "AttachVolume",
    "GetConsoleOutput",
    "GetConsoleScreenshot",
    "ModifyInstanceAttribute",
    "ModifyImageAttribute",
    "ModifySnapshotAttribute",
    "CopyImage",
    "CopySnapshot",
    "CreateImage",
    "CreateSnapshot",
    "CreateSnapshots",
    "CreateStoreImageTask",
    "ExportImage",
];

/// Every record the queries above return for the window, in one region.
pub async fn lookup(
    client: &aws_sdk_cloudtrail::Client,
    since: Option<jiff::Timestamp>,
    until: Option<jiff::Timestamp>,
) -> Result<Vec<Record>, AwsError> {
    let queries = SOURCES
        .iter()
        .map(|s| (LookupAttributeKey::EventSource, *s))
        .chain(
            EC2_EVENTS
                .iter()
                .map(|e| (LookupAttributeKey::EventName, *e)),
        );
    let mut out = Vec::new();
    for (key, value) in queries {
        let attribute = LookupAttribute::builder()
            .attribute_key(key)
            .attribute_value(value)
            .build()
            .map_err(|e| AwsError::step("cloudtrail", e.to_string()))?;
        let mut pages = client
            .lookup_events()
            .lookup_attributes(attribute)
            .set_start_time(since.map(to_datetime))
            .set_end_time(until.map(to_datetime))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| api_error("cloudtrail", "cloudtrail:LookupEvents", e))?;
            for event in page.events() {
                let Some(text) = event.cloud_trail_event() else {
                    continue;
                };
                let record = serde_json::from_str(text).map_err(|e| {
                    AwsError::step(
                        "cloudtrail",
                        format!(
                            "LookupEvents returned event {} that is not a CloudTrail record: {e}",
                            event.event_id().unwrap_or("?")
                        ),
                    )
                })?;
                out.push(record);
            }
        }
    }
    Ok(out)
}

fn to_datetime(t: jiff::Timestamp) -> DateTime {
    DateTime::from_nanos(t.as_nanosecond()).unwrap_or(DateTime::from_secs(t.as_second()))
}

/// The SHA-256 of the key's live `default` policy text.
pub async fn live_policy_sha256(kms: &aws_sdk_kms::Client, key: &str) -> Result<String, AwsError> {
    let out = kms
        .get_key_policy()
        .key_id(key)
        .policy_name("default")
        .send()
        .await
        .map_err(|e| api_error("audit", "kms:GetKeyPolicy", e))?;
    Ok(crate::digest::sha256_bytes(
        out.policy().unwrap_or_default().as_bytes(),
    ))
}

/// The records of every region in `regions` (the configured region when empty).
pub async fn records(
    options: &AwsOptions,
    regions: &[String],
    since: Option<jiff::Timestamp>,
    until: Option<jiff::Timestamp>,
) -> Result<Vec<Record>, AwsError> {
    let regions: Vec<Option<String>> = if regions.is_empty() {
        vec![options.region.clone()]
    } else {
        regions.iter().cloned().map(Some).collect()
    };
    let mut out = Vec::new();
    for region in regions {
        let options = AwsOptions {
            region,
            ..options.clone()
        };
        let clients = Clients::connect(&options).await?;
        out.extend(lookup(&clients.cloudtrail, since, until).await?);
    }
    Ok(out)
}

/// For each deploy whose record has the policy's digest: a finding when the key's live
/// policy is not the one zoa wrote.
pub async fn live_policy_findings(
    options: &AwsOptions,
    deploys: &[Deploy],
) -> Result<Vec<Finding>, AwsError> {
    let mut out = Vec::new();
    for d in deploys {
        let (Some(key), Some(_)) = (&d.key_ref, &d.key_policy_sha256) else {
            continue;
        };
        let options = AwsOptions {
            region: Some(d.region.clone()),
            ..options.clone()
        };
        let clients = Clients::connect(&options).await?;
        let live = live_policy_sha256(&clients.kms, key).await?;
        out.extend(live_policy_finding(d, &d.region, &live));
    }
    Ok(out)
}
