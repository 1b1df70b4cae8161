//! The moto harness itself (`common::moto`, `common::faults`), with plain HTTP and no AWS
//! SDK: moto starts and stops without leaving a process behind, its recorder keeps whole
//! requests and they decode to service, operation and parameters, and the fault proxy
//! answers with the injected faults, then passes requests through.
//!
//! Needs moto_server: `.ci/deps` installs it, `. .ci/env` sets ZOA_MOTO_SERVER.

use crate::common;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::faults::{Fault, FaultProxy, Matcher};
use common::moto::http::{self, Conn};
use common::moto::{apply_aws_env, parse_recording, Call, Moto, ACCOUNT_ID};

fn ebs_auth() -> String {
    http::fake_auth("ebs")
}

#[test]
fn moto_starts_answers_resets_and_is_gone_after_drop() {
    let moto = Moto::start();
    let pid = moto.pid();
    let addr = moto.addr();
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    let r = moto.query("ec2", "DescribeRegions", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<regionName>us-east-1</regionName>"));
    // moto checks no signature but routes by the service of the credential scope: the same
    // form POST without Authorization is taken for S3 (ListBuckets).
    let body = http::query_body("ec2", "DescribeRegions", &[]);
    let r = http::request(
        addr,
        "POST",
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .unwrap();
    assert!(r.text().contains("ListAllMyBucketsResult"), "{}", r.text());

    let mut cmd = Command::new("true");
    moto.apply(&mut cmd);
    let endpoint = moto.endpoint();
    assert!(cmd
        .get_envs()
        .any(|(k, v)| k == "AWS_ENDPOINT_URL" && v == Some(endpoint.as_ref())));

    // reset() forgets every resource.
    let keys = |moto: &Moto| -> usize {
        let r = moto.json("kms", "TrentService.ListKeys", "{}");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["Keys"].as_array().unwrap().len()
    };
    moto.json("kms", "TrentService.CreateKey", "{}");
    assert_eq!(keys(&moto), 1);
    moto.reset();
    assert_eq!(keys(&moto), 0);
    // The request shows in moto's log, which the harness keeps draining.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !moto.log_tail().contains("\"POST / HTTP/1.1\" 200") {
        assert!(
            Instant::now() < deadline,
            "no request log:\n{}",
            moto.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    drop(moto);
    // Killed and reaped: no process, not even a zombie, and nothing listens any more.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn recorder_keeps_whole_requests_and_they_decode() {
    let moto = Moto::start();
    moto.start_recording();

    // EC2 (query protocol): moto keeps only the name and description of a registered
    // image, but the recording has every parameter.
    let r = moto.query(
        "ec2",
        "RegisterImage",
        &[
            ("Name", "zoa-demo-1"),
            ("Architecture", "x86_64"),
            ("BootMode", "uefi"),
            ("TpmSupport", "v2.0"),
            ("ImdsSupport", "v2.0"),
            ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
            (
                "BlockDeviceMapping.1.Ebs.SnapshotId",
                "snap-0123456789abcdef0",
            ),
            ("TagSpecification.1.ResourceType", "image"),
            ("TagSpecification.1.Tag.1.Key", "zoa:release"),
            ("TagSpecification.1.Tag.1.Value", "demo 1.0"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let image_id = between(&r.text(), "<imageId>", "</imageId>");
    let described = moto.query("ec2", "DescribeImages", &[("ImageId.1", &image_id)]);
    assert!(
        !described.text().contains("tpmSupport"),
        "{}",
        described.text()
    );

    // KMS (JSON protocol).
    let policy = r#"{"Version":"2012-10-17","Statement":[]}"#;
    let r = moto.json(
        "kms",
        "TrentService.CreateKey",
        &serde_json::json!({
            "Policy": policy,
            "BypassPolicyLockoutSafetyCheck": true,
            "Tags": [{"TagKey": "zoa:release", "TagValue": "demo"}],
        })
        .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // EBS direct APIs (REST-JSON): StartSnapshot, then PutSnapshotBlock with its
    // parameters in the path and headers.
    let auth = ebs_auth();
    let r = http::request(
        moto.addr(),
        "POST",
        "/snapshots",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"VolumeSize": 1, "Tags": [{"Key": "zoa", "Value": "x"}]}"#,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let snapshot: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let snapshot_id = snapshot["SnapshotId"].as_str().unwrap().to_string();
    // moto's block size: 512 bytes, where AWS says 524288.
    assert_eq!(snapshot["BlockSize"], 512);
    let block = vec![7u8; 512];
    let r = http::request(
        moto.addr(),
        "PUT",
        &format!("/snapshots/{snapshot_id}/blocks/0"),
        &[
            ("Authorization", &auth),
            ("x-amz-Data-Length", "512"),
            ("x-amz-Checksum", "not-checked-by-moto"),
            ("x-amz-Checksum-Algorithm", "SHA256"),
        ],
        &block,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());

    let calls = moto.calls();
    let names: Vec<String> = calls.iter().map(Call::name).collect();
    assert_eq!(
        names,
        [
            "ec2:RegisterImage",
            "ec2:DescribeImages",
            "kms:CreateKey",
            "ebs:StartSnapshot",
            "ebs:PutSnapshotBlock"
        ]
    );
    let register = &calls[0];
    assert_eq!(register.param("TpmSupport").as_deref(), Some("v2.0"));
    assert_eq!(
        register
            .param("BlockDeviceMapping.1.Ebs.SnapshotId")
            .as_deref(),
        Some("snap-0123456789abcdef0")
    );
    assert_eq!(
        register.params_with_prefix("TagSpecification.1.Tag.1."),
        [
            (
                "TagSpecification.1.Tag.1.Key".to_string(),
                "zoa:release".to_string()
            ),
            (
                "TagSpecification.1.Tag.1.Value".to_string(),
                "demo 1.0".to_string()
            ),
        ]
    );
    let create_key = &calls[2];
    assert_eq!(create_key.param("Policy").as_deref(), Some(policy));
    assert_eq!(
        create_key
            .param("BypassPolicyLockoutSafetyCheck")
            .as_deref(),
        Some("true")
    );
    assert_eq!(create_key.json_at("/Tags/0/TagKey").unwrap(), "zoa:release");
    assert_eq!(calls[3].json_at("/VolumeSize").unwrap(), 1);
    let put = &calls[4];
    assert_eq!(put.param("SnapshotId"), Some(snapshot_id));
    assert_eq!(put.param("BlockIndex").as_deref(), Some("0"));
    assert_eq!(put.param("DataLength").as_deref(), Some("512"));
    assert_eq!(
        put.param("Checksum").as_deref(),
        Some("not-checked-by-moto")
    );
    assert_eq!(put.body, block);

    // Off: not recorded. Cleared: empty.
    moto.stop_recording();
    moto.query("ec2", "DescribeRegions", &[]);
    assert_eq!(moto.recording().len(), 5);
    moto.clear_recording();
    assert!(moto.recording().is_empty());
}

#[test]
fn apply_points_a_command_at_the_endpoint_and_nothing_else() {
    let endpoint = "http://127.0.0.1:9";
    let mut cmd = Command::new("env");
    cmd.env("AWS_PROFILE", "production")
        .env("AWS_SESSION_TOKEN", "real")
        .env("AWS_ENDPOINT_URL_EC2", "https://ec2.example.invalid")
        .env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true");
    apply_aws_env(&mut cmd, endpoint);
    let out = cmd.output().unwrap();
    let env = String::from_utf8(out.stdout).unwrap();
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    assert_eq!(get("AWS_ENDPOINT_URL").as_deref(), Some(endpoint));
    assert_eq!(get("AWS_ACCESS_KEY_ID").as_deref(), Some("testing"));
    assert_eq!(get("AWS_SECRET_ACCESS_KEY").as_deref(), Some("testing"));
    assert_eq!(get("AWS_REGION").as_deref(), Some("us-east-1"));
    assert_eq!(get("AWS_EC2_METADATA_DISABLED").as_deref(), Some("true"));
    for file in ["AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"] {
        let p = get(file).unwrap();
        assert!(!Path::new(&p).exists(), "{file}={p} exists");
    }
    for gone in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL_EC2",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    ] {
        assert_eq!(get(gone), None, "{gone} leaked");
    }
}

#[test]
fn fault_proxy_fails_drops_holds_then_passes_through() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint());
    proxy.fail("DescribeRegions", 2, Fault::InternalError);

    let auth = http::fake_auth("ec2");
    let body = http::query_body("ec2", "DescribeRegions", &[]);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let mut conn = Conn::connect(proxy.addr()).unwrap();
    for n in 1..=2 {
        let r = conn.send("POST", "/", &headers, body.as_bytes()).unwrap();
        let id = format!("zoa-fault-{n}");
        assert_eq!(r.status, 500);
        assert_eq!(r.header("x-amzn-RequestId"), Some(id.as_str()));
        let text = r.text();
        assert!(
            text.contains("<Response><Errors><Error><Code>InternalError</Code>"),
            "{text}"
        );
        assert!(
            text.contains(&format!("<RequestID>{id}</RequestID>")),
            "{text}"
        );
    }
    // The same connection, kept alive, now reaches moto.
    let r = conn.send("POST", "/", &headers, body.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("DescribeRegionsResponse"));
    assert!(r
        .header("x-amzn-RequestId")
        .is_some_and(|id| !id.starts_with("zoa-fault")));

    assert_eq!(proxy.count("DescribeRegions"), 3);
    assert_eq!(proxy.count("ec2:DescribeRegions"), 3);
    assert_eq!(proxy.count("kms:DescribeRegions"), 0);
    assert_eq!(proxy.injected().len(), 2);
    assert_eq!(proxy.injected()[1].operation, "ec2:DescribeRegions");

    proxy.fail("DescribeRegions", 1, Fault::Drop);
    proxy.fail(
        "DescribeRegions",
        2,
        Fault::Timeout(Duration::from_millis(400)),
    );
    // Dropped: the connection closes with no answer.
    let r = http::query(proxy.addr(), "ec2", "DescribeRegions", &[]);
    assert!(r.is_err(), "{r:?}");
    // Held: no answer for the duration, then closed.
    let start = Instant::now();
    let r = http::query(proxy.addr(), "ec2", "DescribeRegions", &[]);
    assert!(r.is_err(), "{r:?}");
    assert!(start.elapsed() >= Duration::from_millis(400));
    // The next one passes.
    let r = http::query(proxy.addr(), "ec2", "DescribeRegions", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(proxy.count("DescribeRegions"), 6);
}

#[test]
fn fault_proxy_speaks_each_services_error_format() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint());
    proxy.fail(Matcher::target_contains("CreateKey"), 1, Fault::Throttle);
    proxy.fail(Matcher::action("RunInstances"), 1, Fault::Throttle);
    proxy.fail("iam:CreateRole", 1, Fault::InternalError);
    proxy.fail("autoscaling:CreateAutoScalingGroup", 1, Fault::Throttle);
    proxy.fail(Matcher::path_prefix("/snapshots"), 1, Fault::Throttle);
    // The second ListAliases only.
    proxy.fail_nth(
        "ListAliases",
        2,
        1,
        Fault::Error {
            status: 400,
            code: "AccessDeniedException".into(),
            message: "no <way> & no how".into(),
        },
    );

    let kms = http::json(proxy.addr(), "kms", "TrentService.CreateKey", "{}").unwrap();
    assert_eq!(kms.status, 400);
    assert_eq!(
        kms.header("Content-Type"),
        Some("application/x-amz-json-1.1")
    );
    let v: serde_json::Value = serde_json::from_slice(&kms.body).unwrap();
    assert_eq!(v["__type"], "ThrottlingException");
    assert!(v["message"].is_string());

    let ec2 = http::query(proxy.addr(), "ec2", "RunInstances", &[]).unwrap();
    assert_eq!(ec2.status, 503);
    assert!(
        ec2.text().contains("<Code>RequestLimitExceeded</Code>"),
        "{}",
        ec2.text()
    );

    let iam = http::query(proxy.addr(), "iam", "CreateRole", &[]).unwrap();
    assert_eq!(iam.status, 500);
    let text = iam.text();
    assert!(text.starts_with("<ErrorResponse"), "{text}");
    assert!(
        text.contains("<Type>Receiver</Type><Code>ServiceFailure</Code>"),
        "{text}"
    );
    assert!(
        text.contains("<RequestId>zoa-fault-3</RequestId>"),
        "{text}"
    );

    let asg = http::query(proxy.addr(), "autoscaling", "CreateAutoScalingGroup", &[]).unwrap();
    assert_eq!(asg.status, 400);
    assert!(
        asg.text().contains("<Code>Throttling</Code>"),
        "{}",
        asg.text()
    );

    let auth = ebs_auth();
    let ebs = http::request(
        proxy.addr(),
        "POST",
        "/snapshots",
        &[("Authorization", &auth)],
        br#"{"VolumeSize": 1}"#,
    )
    .unwrap();
    assert_eq!(ebs.status, 400);
    assert_eq!(ebs.header("x-amzn-ErrorType"), Some("ThrottlingException"));
    assert_eq!(ebs.header("x-amzn-RequestId"), Some("zoa-fault-5"));

    let first = http::json(proxy.addr(), "kms", "TrentService.ListAliases", "{}").unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let second = http::json(proxy.addr(), "kms", "TrentService.ListAliases", "{}").unwrap();
    assert_eq!(second.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(v["__type"], "AccessDeniedException");
    assert_eq!(v["message"], "no <way> & no how");
    let third = http::json(proxy.addr(), "kms", "TrentService.ListAliases", "{}").unwrap();
    assert_eq!(third.status, 200);

    // Each rule fired once: the retried calls now pass.
    let kms = http::json(proxy.addr(), "kms", "TrentService.CreateKey", "{}").unwrap();
    assert_eq!(kms.status, 200, "{}", kms.text());
    let counts = proxy.counts();
    assert_eq!(counts["kms:CreateKey"], 2);
    assert_eq!(counts["kms:ListAliases"], 3);
    assert_eq!(counts["ebs:StartSnapshot"], 1);
    assert_eq!(proxy.injected().len(), 6);
}

#[test]
fn fault_proxy_forwards_chunked_bodies_and_can_fix_the_ebs_block_size() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint());
    moto.start_recording();

    let body = http::query_body("ec2", "DescribeRegions", &[("RegionName.1", "eu-west-1")]);
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\
         Expect: 100-continue\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        proxy.addr(),
        http::fake_auth("ec2"),
        a.len(),
        b.len(),
    );
    let mut conn = Conn::connect(proxy.addr()).unwrap();
    let r = conn.send_raw(raw.as_bytes(), "POST").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("<regionName>eu-west-1</regionName>"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("us-east-1"), "{}", r.text());

    // moto's EBS block size, rewritten to AWS's.
    proxy.set_ebs_block_size(524288);
    let auth = ebs_auth();
    let r = http::request(
        proxy.addr(),
        "POST",
        "/snapshots",
        &[("Authorization", &auth)],
        br#"{"VolumeSize": 1}"#,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["BlockSize"], 524288);
    assert!(v["SnapshotId"].as_str().unwrap().starts_with("snap-"));

    let recorded = moto.recording();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].body, body.as_bytes());
    assert_eq!(recorded[0].header("Transfer-Encoding"), None);
}

#[test]
fn calls_decode_without_a_server() {
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // Query protocol, service from the signature's scope, SDK attempt number.
    let c = Call::decode(
        "POST",
        "/",
        &h(&[
            ("Authorization", &http::fake_auth("autoscaling")),
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("amz-sdk-request", "ttl=20240101T000000Z; attempt=2; max=3"),
        ]),
        b"Action=StartInstanceRefresh&Version=2011-01-01&AutoScalingGroupName=zoa%2Fa+b",
    );
    assert_eq!(c.name(), "autoscaling:StartInstanceRefresh");
    assert_eq!(c.param("AutoScalingGroupName").as_deref(), Some("zoa/a b"));
    assert_eq!(c.attempt(), Some(2));

    // Unsigned: the service from the API version or the target prefix.
    let c = Call::decode("POST", "/", &[], b"Action=CreateRole&Version=2010-05-08");
    assert_eq!(c.name(), "iam:CreateRole");
    let c = Call::decode(
        "POST",
        "/",
        &h(&[("X-Amz-Target", "TrentService.ScheduleKeyDeletion")]),
        br#"{"KeyId": "k", "PendingWindowInDays": 7}"#,
    );
    assert_eq!(c.name(), "kms:ScheduleKeyDeletion");
    assert_eq!(c.param("PendingWindowInDays").as_deref(), Some("7"));

    // EBS routes.
    for (method, target, op) in [
        ("POST", "/snapshots", "StartSnapshot"),
        ("POST", "/snapshots/completion/snap-1", "CompleteSnapshot"),
        ("PUT", "/snapshots/snap-1/blocks/3", "PutSnapshotBlock"),
        (
            "GET",
            "/snapshots/snap-1/blocks/3?blockToken=t",
            "GetSnapshotBlock",
        ),
        (
            "GET",
            "/snapshots/snap-1/blocks?maxResults=10",
            "ListSnapshotBlocks",
        ),
        (
            "GET",
            "/snapshots/snap-1/changedblocks",
            "ListChangedBlocks",
        ),
    ] {
        let c = Call::decode(method, target, &[], b"");
        assert_eq!(c.name(), format!("ebs:{op}"), "{method} {target}");
    }
    let c = Call::decode("GET", "/snapshots/snap-1/blocks/3?blockToken=t", &[], b"");
    assert_eq!(c.param("BlockToken").as_deref(), Some("t"));
    assert_eq!(c.param("BlockIndex").as_deref(), Some("3"));
    let c = Call::decode(
        "POST",
        "/snapshots/completion/snap-1",
        &h(&[
            ("x-amz-ChangedBlocksCount", "4"),
            ("x-amz-Checksum-Aggregation-Method", "LINEAR"),
        ]),
        b"",
    );
    assert_eq!(c.param("SnapshotId").as_deref(), Some("snap-1"));
    assert_eq!(c.param("ChangedBlocksCount").as_deref(), Some("4"));
    assert_eq!(
        c.param("ChecksumAggregationMethod").as_deref(),
        Some("LINEAR")
    );

    // A recorder line as moto writes it.
    let line = format!(
        r#"{{"headers": {{"Host": "127.0.0.1:5000", "X-Amz-Target": "TrentService.CreateAlias", "Content-Type": "application/x-amz-json-1.1"}}, "method": "POST", "url": "http://127.0.0.1:5000/", "body": "{}", "body_encoded": true}}"#,
        base64_of(br#"{"AliasName": "alias/zoa", "TargetKeyId": "k"}"#)
    );
    let rec = parse_recording(&format!("{line}\n{line}\n"));
    assert_eq!(rec.len(), 2);
    assert_eq!(rec[0].target(), "/");
    let c = rec[0].call();
    assert_eq!(c.name(), "kms:CreateAlias");
    assert_eq!(c.param("AliasName").as_deref(), Some("alias/zoa"));
    assert_eq!(ACCOUNT_ID, "123456789012");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The text between the first `start` and the next `end`.
fn between(s: &str, start: &str, end: &str) -> String {
    let from = s.find(start).unwrap_or_else(|| panic!("no {start} in {s}")) + start.len();
    let len = s[from..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end} in {s}"));
    s[from..from + len].to_string()
}
