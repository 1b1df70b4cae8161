//! `zoa audit`: every use of a deploy's key and every access to its image and instances,
//! read from CloudTrail, with the attested key uses matched to the signed releases whose
//! PCRs they carry (DESIGN.md, "Audit").
//!
//! The audit reads records (from files, [`trail`], or `LookupEvents`, [`lookup`]), keeps
//! those in the time window, and classifies each in time order against the deploys'
//! resources ([`scope`]); instances the records show launched from a deploy's AMI or
//! launch template join its scope as they appear, so an instance an operator started
//! with a key pair is followed afterwards.

pub mod inputs;
pub mod lookup;
pub mod scope;
pub mod trail;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use scope::{Deploy, Part};
use trail::Record;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something happened that can expose data or widen who can use the key.
    Critical,
    /// An attempt that was refused, or a change that narrows access or was zoa's own.
    Warning,
}

/// The finding kinds of the interface contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    UnknownImage,
    UnattestedKeyUse,
    TrustChange,
    OperatorAccess,
    CopyOut,
    Region,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::UnknownImage => "unknown-image",
            Kind::UnattestedKeyUse => "unattested-key-use",
            Kind::TrustChange => "trust-change",
            Kind::OperatorAccess => "operator-access",
            Kind::CopyOut => "copy-out",
            Kind::Region => "region",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: Kind,
    /// The record's `eventID`; `None` for a finding from a live check (the key policy).
    pub event_id: Option<String>,
    pub time: String,
    pub event_name: String,
    pub region: String,
    pub principal: Option<String>,
    pub detail: String,
}

/// An attested key use, and the signed release whose PCRs it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attested {
    pub event_id: String,
    pub time: String,
    pub event_name: String,
    pub module_id: String,
    /// `"<name> <version>"`, or `None` when no signed release has these PCRs.
    pub release: Option<String>,
}

/// What `zoa audit --json` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Records read (after removing duplicates, before the time window).
    pub events: usize,
    pub attested: Vec<Attested>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn flagged(&self) -> bool {
        !self.findings.is_empty()
    }

    /// Adds findings made outside the records (the live key policy), in order.
    pub fn add(&mut self, findings: Vec<Finding>) {
        self.findings.extend(findings);
        self.sort();
    }

    /// Findings by severity (critical first), then time.
    fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            (a.severity, &a.time, a.kind, &a.event_id).cmp(&(
                b.severity,
                &b.time,
                b.kind,
                &b.event_id,
            ))
        });
        self.attested
            .sort_by(|a, b| (&a.time, &a.event_id).cmp(&(&b.time, &b.event_id)));
    }
}

/// A signed release's PCRs, as its key policy binds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRelease {
    /// `"<name> <version>"`.
    pub release: String,
    /// PCR index → lowercase hex (SHA-384).
    pub pcrs: BTreeMap<u32, String>,
}

/// The window and what to look at.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// Empty: every key, image and instance the records name (an account-wide audit).
    pub deploys: Vec<Deploy>,
    pub releases: Vec<KnownRelease>,
    pub since: Option<jiff::Timestamp>,
    pub until: Option<jiff::Timestamp>,
}

/// KMS operations that can carry a `Recipient` (an attestation document): the ways the
/// key releases data.
const RECIPIENT_OPS: [&str; 4] = [
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "DeriveSharedSecret",
];

/// KMS changes that can widen who may use the key, or move it.
const WIDENING: [&str; 9] = [
    "PutKeyPolicy",
    "CreateGrant",
    "ReplicateKey",
    "UpdatePrimaryRegion",
    "CreateAlias",
    "UpdateAlias",
    "CancelKeyDeletion",
    "EnableKey",
    "ImportKeyMaterial",
];

/// KMS changes that narrow or stop the key's use: worth knowing, not a breach.
const NARROWING: [&str; 5] = [
    "ScheduleKeyDeletion",
    "DisableKey",
    "DeleteAlias",
    "RetireGrant",
    "RevokeGrant",
];

/// What an operator can use to look into, or change, a running instance.
const OPERATOR_ACCESS: [(&str, &str); 6] = [
    ("ssm.amazonaws.com", "StartSession"),
    ("ec2-instance-connect.amazonaws.com", "SendSSHPublicKey"),
    (
        "ec2-instance-connect.amazonaws.com",
        "SendSerialConsoleSSHPublicKey",
    ),
    ("ec2.amazonaws.com", "GetConsoleOutput"),
    ("ec2.amazonaws.com", "GetConsoleScreenshot"),
    ("ec2.amazonaws.com", "ModifyInstanceAttribute"),
];

/// EC2 calls that copy an image, a snapshot or a volume out of the deploy, and the part
/// of the deploy each copies.
const COPIES: [(&str, Part); 7] = [
    ("CopyImage", Part::Image),
    ("CreateStoreImageTask", Part::Image),
    ("ExportImage", Part::Image),
    ("CopySnapshot", Part::Snapshot),
    ("CreateImage", Part::Instance),
    ("CreateSnapshots", Part::Instance),
    ("CreateSnapshot", Part::Volume),
];

impl Audit {
    /// Classifies `records` (any order, duplicates allowed).
    pub fn run(&self, records: Vec<Record>) -> Report {
        let mut seen = BTreeSet::new();
        let mut records: Vec<Record> = records
            .into_iter()
            .filter(|r| r.event_id.is_empty() || seen.insert(r.event_id.clone()))
            .collect();
        let mut report = Report {
            events: records.len(),
            ..Report::default()
        };
        records.sort_by_key(|r| r.time());
        let mut deploys = self.deploys.clone();
        for r in records.iter().filter(|r| self.in_window(r)) {
            follow_launches(&mut deploys, r);
            self.classify(&deploys, r, &mut report);
        }
        report.sort();
        report
    }

    fn in_window(&self, r: &Record) -> bool {
        let Some(t) = r.time() else { return false };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    fn classify(&self, deploys: &[Deploy], r: &Record, report: &mut Report) {
        let strings = r.strings();
        let touched: Vec<(&Deploy, BTreeSet<Part>)> = deploys
            .iter()
            .map(|d| (d, d.parts_named(&strings)))
            .filter(|(_, parts)| !parts.is_empty())
            .collect();
        let everything = self.deploys.is_empty();
        let touches = |part: Part| everything || touched.iter().any(|(_, p)| p.contains(&part));
        let mut flag = |kind, severity, detail: String| {
            report.findings.push(finding(r, kind, severity, detail));
        };
        let allowed_or_refused = if r.failed() {
            Severity::Warning
        } else {
            Severity::Critical
        };

        if r.event_source == "kms.amazonaws.com" && touches(Part::Key) {
            if RECIPIENT_OPS.contains(&r.event_name.as_str()) {
                match recipient(r) {
                    Some(recipient) => {
                        let entry = self.attested(r, recipient);
                        if entry.release.is_none() {
                            flag(
                                Kind::UnknownImage,
                                allowed_or_refused,
                                format!(
                                    "{} attested by {} with {}: no signed release in the log has these PCRs{}",
                                    r.api(),
                                    entry.module_id,
                                    describe_pcrs(recipient),
                                    outcome(r)
                                ),
                            );
                        }
                        report.attested.push(entry);
                    }
                    None => flag(
                        Kind::UnattestedKeyUse,
                        allowed_or_refused,
                        format!("{} without an attestation document{}", r.api(), outcome(r)),
                    ),
                }
            } else if r.event_name == "ReEncrypt" {
                flag(
                    Kind::UnattestedKeyUse,
                    allowed_or_refused,
                    format!(
                        "{}: decrypts under the key without an attestation document{}",
                        r.api(),
                        outcome(r)
                    ),
                );
            } else if WIDENING.contains(&r.event_name.as_str()) {
                let (severity, why) = self.widening_severity(&touched, r);
                flag(
                    Kind::TrustChange,
                    severity.max(allowed_or_refused),
                    format!("{}{}{}", r.api(), why, outcome(r)),
                );
            } else if NARROWING.contains(&r.event_name.as_str()) {
                flag(
                    Kind::TrustChange,
                    Severity::Warning,
                    format!("{}{}", r.api(), outcome(r)),
                );
            }
        }

        let operator = OPERATOR_ACCESS
            .iter()
            .any(|(source, name)| r.event_source == *source && r.event_name == *name);
        if operator && touches(Part::Instance) {
            flag(
                Kind::OperatorAccess,
                allowed_or_refused,
                format!("{} on {}{}", r.api(), instance_named(r), outcome(r)),
            );
        }
        if r.event_source == "ec2.amazonaws.com" {
            self.ec2_rules(r, &touches, &mut flag, allowed_or_refused);
        }

        for (d, _) in &touched {
            if d.region_forbidden(&r.aws_region) {
                flag(
                    Kind::Region,
                    allowed_or_refused,
                    format!(
                        "{} in {} on deployment {}'s resources: the release is signed for {} only{}",
                        r.api(),
                        r.aws_region,
                        d.deployment,
                        d.regions.join(", "),
                        outcome(r)
                    ),
                );
            }
        }
    }

    /// Key pairs on the deploy's launches, and copies and sharing of its image,
    /// snapshots, instances and volumes.
    fn ec2_rules(
        &self,
        r: &Record,
        touches: &dyn Fn(Part) -> bool,
        flag: &mut dyn FnMut(Kind, Severity, String),
        severity: Severity,
    ) {
        let name = r.event_name.as_str();
        let key_pair = r
            .request_parameters
            .as_ref()
            .and_then(|p| find_field(p, &["keyName", "KeyName"]));
        if let Some(key) = key_pair {
            let launch =
                name == "RunInstances" && (touches(Part::Image) || touches(Part::LaunchTemplate));
            let template = name == "CreateLaunchTemplateVersion" && touches(Part::LaunchTemplate);
            if launch || template {
                flag(
                    Kind::OperatorAccess,
                    severity,
                    format!(
                        "{} with key pair {key}: SSH into the image{}",
                        r.api(),
                        outcome(r)
                    ),
                );
            }
        }
        if let Some((_, part)) = COPIES.iter().find(|(n, _)| *n == name) {
            if touches(*part) {
                flag(
                    Kind::CopyOut,
                    severity,
                    format!("{}{}", r.api(), outcome(r)),
                );
            }
        }
        let shared = match name {
            "ModifyImageAttribute" => touches(Part::Image),
            "ModifySnapshotAttribute" => touches(Part::Snapshot),
            _ => false,
        };
        if shared {
            if let Some(with) = r.request_parameters.as_ref().and_then(shared_with) {
                flag(
                    Kind::CopyOut,
                    severity,
                    format!("{}: shared with {with}{}", r.api(), outcome(r)),
                );
            }
        }
    }

    fn attested(&self, r: &Record, recipient: &Value) -> Attested {
        let pcrs = recipient_pcrs(recipient);
        let release = self
            .releases
            .iter()
            .find(|k| {
                k.pcrs
                    .iter()
                    .all(|(i, v)| pcrs.get(i).is_some_and(|got| got.eq_ignore_ascii_case(v)))
            })
            .map(|k| k.release.clone());
        Attested {
            event_id: r.event_id.clone(),
            time: r.event_time.clone(),
            event_name: r.event_name.clone(),
            module_id: recipient
                .get("attestationDocumentModuleId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            release,
        }
    }

    /// A key-policy write that is exactly the policy zoa last wrote, or zoa's alias set on
    /// the deploy's own key, is a warning (an auditor still sees it); anything else that
    /// widens access is critical.
    fn widening_severity(
        &self,
        touched: &[(&Deploy, BTreeSet<Part>)],
        r: &Record,
    ) -> (Severity, String) {
        if r.event_name == "PutKeyPolicy" {
            let written = r
                .request("policy")
                .map(|p| crate::digest::sha256_bytes(p.as_bytes()));
            for (d, _) in touched {
                if written.is_some() && d.key_policy_sha256 == written {
                    return (
                        Severity::Warning,
                        format!(": the policy zoa wrote for deployment {}", d.deployment),
                    );
                }
            }
            let sha = written.map_or_else(|| "not recorded".to_owned(), |s| format!("sha256 {s}"));
            return (
                Severity::Critical,
                format!(": a policy zoa did not write ({sha})"),
            );
        }
        if r.event_name == "CreateAlias" {
            let alias = r.request("aliasName").unwrap_or("");
            let target = r.request("targetKeyId").unwrap_or("");
            for (d, _) in touched {
                if d.has(Part::Key, alias) && d.has(Part::Key, target) {
                    return (
                        Severity::Warning,
                        format!(": {alias} for deployment {}'s key", d.deployment),
                    );
                }
            }
        }
        (Severity::Critical, String::new())
    }
}

/// The live key policy differs from the one zoa wrote (deploy.json's
/// `key_policy_sha256`): whoever changed it, the key may now admit other callers.
pub fn live_policy_finding(d: &Deploy, region: &str, live_sha256: &str) -> Option<Finding> {
    let recorded = d.key_policy_sha256.as_deref()?;
    (recorded != live_sha256).then(|| Finding {
        severity: Severity::Critical,
        kind: Kind::TrustChange,
        event_id: None,
        time: jiff::Timestamp::now().to_string(),
        event_name: "GetKeyPolicy".to_owned(),
        region: region.to_owned(),
        principal: None,
        detail: format!(
            "the live key policy of deployment {} (sha256 {live_sha256}) is not the one zoa wrote (deploy.json: {recorded})",
            d.deployment
        ),
    })
}

fn finding(r: &Record, kind: Kind, severity: Severity, detail: String) -> Finding {
    Finding {
        severity,
        kind,
        event_id: Some(r.event_id.clone()),
        time: r.event_time.clone(),
        event_name: r.event_name.clone(),
        region: r.aws_region.clone(),
        principal: r.principal(),
        detail,
    }
}

fn outcome(r: &Record) -> String {
    match &r.error_code {
        Some(code) => format!(" (refused: {code})"),
        None => String::new(),
    }
}

fn recipient(r: &Record) -> Option<&Value> {
    r.additional_event_data
        .as_ref()?
        .get("recipient")
        .filter(|v| v.is_object())
}

/// `attestationDocumentNitroTPMPCR<N>` → N → value.
fn recipient_pcrs(recipient: &Value) -> BTreeMap<u32, String> {
    let Some(map) = recipient.as_object() else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(k, v)| {
            let n = k
                .strip_prefix("attestationDocumentNitroTPMPCR")?
                .parse()
                .ok()?;
            Some((n, v.as_str()?.to_ascii_lowercase()))
        })
        .collect()
}

fn describe_pcrs(recipient: &Value) -> String {
    let pcrs = recipient_pcrs(recipient);
    if pcrs.is_empty() {
        return "no NitroTPM PCRs".to_owned();
    }
    pcrs.iter()
        .map(|(i, v)| format!("PCR{i} {}…", &v[..v.len().min(16)]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn instance_named(r: &Record) -> String {
    ["instanceId", "target"]
        .iter()
        .find_map(|k| r.request(k))
        .unwrap_or("an instance")
        .to_owned()
}

/// The first non-empty string under any of `names`, at any depth.
fn find_field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a str> {
    match v {
        Value::Object(map) => names
            .iter()
            .find_map(|n| {
                map.get(*n)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| map.values().find_map(|c| find_field(c, names))),
        Value::Array(items) => items.iter().find_map(|c| find_field(c, names)),
        _ => None,
    }
}

/// Whom a ModifyImageAttribute/ModifySnapshotAttribute request adds (`…Permission.add`):
/// account ids, `all` (public), organisation ARNs. `None` when it adds no one.
fn shared_with(params: &Value) -> Option<String> {
    let mut whom = Vec::new();
    for attribute in ["launchPermission", "createVolumePermission"] {
        if let Some(add) = params.get(attribute).and_then(|a| a.get("add")) {
            let mut strings = Vec::new();
            trail::collect_strings(add, &mut strings);
            whom.extend(strings.into_iter().map(|s| {
                if s == "all" {
                    "all (public)".to_owned()
                } else {
                    s.to_owned()
                }
            }));
        }
    }
    (!whom.is_empty()).then(|| whom.join(", "))
}

/// Adds to each deploy the instances launched from its AMI or launch template, and the
/// volumes attached to its instances, as the records show them.
fn follow_launches(deploys: &mut [Deploy], r: &Record) {
    if r.event_source != "ec2.amazonaws.com" || r.failed() {
        return;
    }
    match r.event_name.as_str() {
        "RunInstances" => {
            let mut request = Vec::new();
            if let Some(p) = &r.request_parameters {
                trail::collect_strings(p, &mut request);
            }
            let launched = launched_instances(r);
            for d in deploys.iter_mut() {
                let parts = d.parts_named(&request);
                if parts.contains(&Part::Image) || parts.contains(&Part::LaunchTemplate) {
                    launched.iter().for_each(|i| d.add(Part::Instance, i));
                }
            }
        }
        "AttachVolume" => {
            if let (Some(instance), Some(volume)) = (r.request("instanceId"), r.request("volumeId"))
            {
                for d in deploys
                    .iter_mut()
                    .filter(|d| d.has(Part::Instance, instance))
                {
                    d.add(Part::Volume, volume);
                }
            }
        }
        _ => {}
    }
}

/// `responseElements.instancesSet.items[].instanceId` of a RunInstances record.
fn launched_instances(r: &Record) -> Vec<String> {
    r.response_elements
        .as_ref()
        .and_then(|e| e.pointer("/instancesSet/items"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("instanceId").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
