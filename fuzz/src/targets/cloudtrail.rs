//! CloudTrail log files come from a bucket anyone with write access to it can fill, and
//! LookupEvents answers from the network: parsing must refuse malformed text cleanly,
//! and classifying whatever parses must never panic (the audit walks arbitrary request
//! and response JSON).
use zoa::audit::scope::Deploy;
use zoa::audit::{trail, Audit, KnownRelease};

pub fn run(bytes: &[u8]) {
    let Ok(records) = trail::parse_log("fuzz.json", bytes) else {
        return;
    };
    let deploy = Deploy {
        deployment: "demo".into(),
        regions: vec!["us-east-1".into()],
        key: ["k-1".to_string(), "alias/zoa-demo".to_string()].into(),
        images: ["ami-1".to_string()].into(),
        snapshots: ["snap-1".to_string()].into(),
        instances: ["i-1".to_string()].into(),
        launch_templates: ["lt-1".to_string()].into(),
        key_policy_sha256: Some("00".repeat(32)),
        ..Deploy::default()
    };
    let releases = vec![KnownRelease {
        release: "demo 1".into(),
        pcrs: [(4, "aa".to_string()), (12, "bb".to_string())].into(),
    }];
    for deploys in [vec![deploy], Vec::new()] {
        let audit = Audit {
            deploys,
            releases: releases.clone(),
            ..Audit::default()
        };
        let report = audit.run(records.clone());
        assert!(report.events <= records.len());
        serde_json::to_string(&report).expect("a report serialises");
    }
}
