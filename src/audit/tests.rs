//! The rules, one record at a time. The records follow the shapes of the CloudTrail
//! examples in the KMS, EC2, Systems Manager and EC2 Instance Connect documentation
//! (written here, not copied), with this file's own identifiers.

use super::*;
use serde_json::json;

const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1111aaaa-22bb-33cc-44dd-555555eeeeee";
const PCR4: &str = "aa";
const PCR12: &str = "bb";

fn deploy() -> Deploy {
    let state = crate::aws::state::DeployState {
        deployment: "demo".into(),
        key_id: Some("1111aaaa-22bb-33cc-44dd-555555eeeeee".into()),
        key_arn: Some(KEY.into()),
        key_alias: Some("alias/zoa-demo".into()),
        key_policy_sha256: Some(crate::digest::sha256_bytes(b"{\"zoa\":1}")),
        image_id: Some("ami-0aaa".into()),
        snapshot_id: Some("snap-0aaa".into()),
        instance_ids: vec!["i-0aaa".into()],
        launch_template_id: Some("lt-0aaa".into()),
        ..Default::default()
    };
    Deploy::from_state(&state, &["us-east-1".into()])
}

fn audit() -> Audit {
    Audit {
        deploys: vec![deploy()],
        releases: vec![KnownRelease {
            release: "demo 1.0".into(),
            pcrs: [(4, PCR4.to_string()), (12, PCR12.to_string())].into(),
        }],
        ..Audit::default()
    }
}

/// A record: `source` is the service's short name (`kms`, `ec2`...).
fn rec(id: &str, source: &str, name: &str, fields: Value) -> Record {
    let mut v = json!({
        "eventVersion": "1.08",
        "eventID": id,
        "eventTime": format!("2026-12-01T10:00:{:02}Z", id.len()),
        "eventSource": format!("{source}.amazonaws.com"),
        "eventName": name,
        "awsRegion": "us-east-1",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/Alice"},
    });
    for (k, val) in fields.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn kms(id: &str, name: &str, extra: Value) -> Record {
    let mut fields = json!({
        "requestParameters": {"keyId": KEY},
        "resources": [{"ARN": KEY, "type": "AWS::KMS::Key"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    rec(id, "kms", name, fields)
}

fn attested(id: &str, pcr4: &str) -> Record {
    kms(
        id,
        "Decrypt",
        json!({"additionalEventData": {"recipient": {
            "attestationDocumentModuleId": "i-0aaa-tpm0000000000000000",
            "attestationDocumentNitroTPMPCR4": pcr4,
            "attestationDocumentNitroTPMPCR12": PCR12.to_uppercase(),
        }}}),
    )
}

fn kinds(report: &Report) -> Vec<(Kind, Severity, String)> {
    report
        .findings
        .iter()
        .map(|f| (f.kind, f.severity, f.event_id.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn attested_uses_are_matched_to_their_release_or_flagged() {
    let report = audit().run(vec![attested("a", PCR4), attested("bb", "cc")]);
    assert_eq!(report.events, 2);
    assert_eq!(report.attested.len(), 2);
    assert_eq!(report.attested[0].release.as_deref(), Some("demo 1.0"));
    assert_eq!(report.attested[0].module_id, "i-0aaa-tpm0000000000000000");
    assert_eq!(report.attested[1].release, None);
    assert_eq!(
        kinds(&report),
        [(Kind::UnknownImage, Severity::Critical, "bb".into())]
    );
    assert!(
        report.findings[0].detail.contains("PCR4 cc"),
        "{:?}",
        report.findings
    );
}

#[test]
fn key_uses_without_attestation_are_flagged_allowed_or_refused() {
    let refused = kms(
        "bb",
        "GenerateDataKey",
        json!({"errorCode": "AccessDeniedException"}),
    );
    let report = audit().run(vec![
        kms("a", "Decrypt", json!({})),
        refused,
        kms("ccc", "ReEncrypt", json!({})),
        // Sealing releases nothing: counted, not flagged.
        kms("dddd", "Encrypt", json!({})),
        kms("eeeee", "DescribeKey", json!({})),
    ]);
    assert_eq!(
        kinds(&report),
        [
            (Kind::UnattestedKeyUse, Severity::Critical, "a".into()),
            (Kind::UnattestedKeyUse, Severity::Critical, "ccc".into()),
            (Kind::UnattestedKeyUse, Severity::Warning, "bb".into()),
        ]
    );
    assert_eq!(
        report.findings[0].principal.as_deref(),
        Some("arn:aws:iam::111122223333:user/Alice")
    );
    assert!(report.findings[2]
        .detail
        .ends_with("(refused: AccessDeniedException)"));
}

#[test]
fn trust_changes_zoa_made_are_warnings_and_others_critical() {
    let put = |id: &str, policy: &str| {
        let mut r = kms(id, "PutKeyPolicy", json!({}));
        r.request_parameters =
            Some(json!({"keyId": KEY, "policyName": "default", "policy": policy}));
        r
    };
    let alias = |id: &str, target: &str| {
        let mut r = kms(id, "CreateAlias", json!({}));
        r.request_parameters = Some(json!({"aliasName": "alias/zoa-demo", "targetKeyId": target}));
        r.resources = None;
        r
    };
    let report = audit().run(vec![
        put("a", "{\"zoa\":1}"),
        put("bb", "{\"anyone\":1}"),
        kms("ccc", "CreateGrant", json!({})),
        kms("dddd", "ScheduleKeyDeletion", json!({})),
        alias("eeeee", KEY),
        alias("ffffff", "9999"),
        kms("ggggggg", "ReplicateKey", json!({})),
    ]);
    assert_eq!(
        kinds(&report),
        [
            (Kind::TrustChange, Severity::Critical, "bb".into()),
            (Kind::TrustChange, Severity::Critical, "ccc".into()),
            (Kind::TrustChange, Severity::Critical, "ffffff".into()),
            (Kind::TrustChange, Severity::Critical, "ggggggg".into()),
            (Kind::TrustChange, Severity::Warning, "a".into()),
            (Kind::TrustChange, Severity::Warning, "dddd".into()),
            (Kind::TrustChange, Severity::Warning, "eeeee".into()),
        ]
    );
    assert!(report.findings[0]
        .detail
        .contains("a policy zoa did not write"));
}

#[test]
fn operator_access_to_the_deploy_s_instances_is_flagged() {
    let report = audit().run(vec![
        rec("a", "ssm", "StartSession", json!({"requestParameters": {"target": "i-0aaa"}})),
        rec(
            "bb",
            "ec2-instance-connect",
            "SendSSHPublicKey",
            json!({"requestParameters": {"instanceId": "i-0aaa", "instanceOSUser": "root"}}),
        ),
        rec(
            "ccc",
            "ec2",
            "GetConsoleOutput",
            json!({"requestParameters": {"instanceId": "i-0aaa"}, "errorCode": "UnauthorizedOperation"}),
        ),
        // Another instance: not this deploy's.
        rec("dddd", "ec2", "GetConsoleOutput", json!({"requestParameters": {"instanceId": "i-0bbb"}})),
    ]);
    assert_eq!(
        kinds(&report),
        [
            (Kind::OperatorAccess, Severity::Critical, "a".into()),
            (Kind::OperatorAccess, Severity::Critical, "bb".into()),
            (Kind::OperatorAccess, Severity::Warning, "ccc".into()),
        ]
    );
}

#[test]
fn an_instance_launched_from_the_ami_with_a_key_pair_is_flagged_and_followed() {
    let launch = rec(
        "a",
        "ec2",
        "RunInstances",
        json!({
            "requestParameters": {"instancesSet": {"items": [{"imageId": "ami-0aaa", "minCount": 1, "maxCount": 1, "keyName": "ops"}]}},
            "responseElements": {"instancesSet": {"items": [{"instanceId": "i-0new", "imageId": "ami-0aaa"}]}},
        }),
    );
    let attach = rec(
        "bb",
        "ec2",
        "AttachVolume",
        json!({"requestParameters": {"instanceId": "i-0new", "volumeId": "vol-0new", "device": "/dev/sdf"}}),
    );
    let snapshot = rec(
        "ccc",
        "ec2",
        "CreateSnapshot",
        json!({"requestParameters": {"volumeId": "vol-0new"}}),
    );
    let console = rec(
        "dddd",
        "ec2",
        "GetConsoleScreenshot",
        json!({"requestParameters": {"instanceId": "i-0new"}}),
    );
    // Without a key pair, a launch of the AMI is the Auto Scaling group's business.
    let plain = rec(
        "eeeee",
        "ec2",
        "RunInstances",
        json!({"requestParameters": {"instancesSet": {"items": [{"imageId": "ami-0aaa"}]}}}),
    );
    let report = audit().run(vec![console, snapshot, attach, launch, plain]);
    assert_eq!(
        kinds(&report),
        [
            (Kind::OperatorAccess, Severity::Critical, "a".into()),
            (Kind::CopyOut, Severity::Critical, "ccc".into()),
            (Kind::OperatorAccess, Severity::Critical, "dddd".into()),
        ]
    );
    assert!(report.findings[0].detail.contains("key pair ops"));
}

#[test]
fn copies_and_sharing_leave_the_boundary_and_other_regions_are_flagged() {
    let share = rec(
        "a",
        "ec2",
        "ModifyImageAttribute",
        json!({"requestParameters": {"imageId": "ami-0aaa", "attributeType": "launchPermission",
            "launchPermission": {"add": {"items": [{"userId": "444455556666"}, {"group": "all"}]}}}}),
    );
    let unshare = rec(
        "bb",
        "ec2",
        "ModifySnapshotAttribute",
        json!({"requestParameters": {"snapshotId": "snap-0aaa",
            "createVolumePermission": {"remove": {"items": [{"userId": "444455556666"}]}}}}),
    );
    let mut copy = rec(
        "ccc",
        "ec2",
        "CopyImage",
        json!({"requestParameters": {"sourceImageId": "ami-0aaa", "sourceRegion": "us-east-1", "name": "copy"}}),
    );
    copy.aws_region = "eu-west-1".into();
    let report = audit().run(vec![share, unshare, copy]);
    assert_eq!(
        kinds(&report),
        [
            (Kind::CopyOut, Severity::Critical, "a".into()),
            (Kind::CopyOut, Severity::Critical, "ccc".into()),
            (Kind::Region, Severity::Critical, "ccc".into()),
        ]
    );
    assert!(
        report.findings[0]
            .detail
            .ends_with("shared with 444455556666, all (public)"),
        "{}",
        report.findings[0].detail
    );
    assert!(report.findings[2]
        .detail
        .contains("signed for us-east-1 only"));
}

#[test]
fn the_window_and_duplicates_are_applied_and_unrelated_keys_ignored() {
    let mut early = kms("a", "Decrypt", json!({}));
    early.event_time = "2026-11-30T23:59:59Z".into();
    let dup = kms("bb", "Decrypt", json!({}));
    let mut other = kms("ccc", "Decrypt", json!({}));
    other.request_parameters =
        Some(json!({"keyId": "arn:aws:kms:us-east-1:111122223333:key/other"}));
    other.resources = None;
    let mut a = audit();
    a.since = Some("2026-12-01T00:00:00Z".parse().unwrap());
    a.until = Some("2026-12-02T00:00:00Z".parse().unwrap());
    let report = a.run(vec![early, dup.clone(), dup, other.clone()]);
    assert_eq!(report.events, 3);
    assert_eq!(
        kinds(&report),
        [(Kind::UnattestedKeyUse, Severity::Critical, "bb".into())]
    );

    // With no deploy, every key is audited.
    let everything = Audit::default().run(vec![other]);
    assert_eq!(
        kinds(&everything),
        [(Kind::UnattestedKeyUse, Severity::Critical, "ccc".into())]
    );
}

#[test]
fn a_live_policy_other_than_zoa_s_is_a_trust_change() {
    let d = deploy();
    let recorded = d.key_policy_sha256.clone().unwrap();
    assert_eq!(live_policy_finding(&d, "us-east-1", &recorded), None);
    let f = live_policy_finding(&d, "us-east-1", "00").unwrap();
    assert_eq!(
        (f.kind, f.severity, f.event_id),
        (Kind::TrustChange, Severity::Critical, None)
    );
}

#[test]
fn the_report_serialises_to_the_contract() {
    let report = audit().run(vec![attested("a", "cc")]);
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["events"], 1);
    assert_eq!(
        v["attested"][0],
        json!({"event_id": "a", "time": "2026-12-01T10:00:01Z", "event_name": "Decrypt",
               "module_id": "i-0aaa-tpm0000000000000000", "release": null})
    );
    let f = &v["findings"][0];
    let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "severity",
            "kind",
            "event_id",
            "time",
            "event_name",
            "region",
            "principal",
            "detail"
        ]
    );
    assert_eq!(f["kind"], "unknown-image");
    assert_eq!(f["severity"], "critical");
}
