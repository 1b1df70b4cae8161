//! Plan = apply, checked call by call: every mutating call the emulator recorded is paired
//! with the plan's call at the same position, and every parameter it carried is compared
//! with the plan's, as each AWS protocol puts it on the wire:
//!
//! - EC2's query protocol: lists as `Name.N` with the member's singular name
//!   (`TagSpecification.1.Tag.2.Value`), structures as `Name.Field`;
//! - IAM's and Auto Scaling's query protocol: lists as `Name.member.N`;
//! - KMS's JSON protocol: the JSON body as it is;
//! - the EBS direct APIs (REST): path labels, JSON body members, and header parameters.
//!
//! Policy documents (`*Document`, `Policy`) are JSON inside a string on the wire and are
//! compared as JSON.
//!
//! A plan shows `<...>` for what it cannot know. Without a space inside (`<snapshot-id>`)
//! it names one value: every place it appears must carry the same value, and the value is
//! returned so the caller can check it against the deploy record. With a space (`<the
//! block's SHA-256, base64>`) it describes a value that differs per call (block data,
//! user data contents, tokens) and matches any value.

use super::moto::Call;
use serde_json::Value;
use std::collections::BTreeMap;

/// Reads change nothing: Describe*, Get*, List*.
pub fn is_read_only(call: &Call) -> bool {
    let op = call.operation.as_str();
    op.starts_with("Describe") || op.starts_with("Get") || op.starts_with("List")
}

/// The plan's calls in order: `(api, params)`.
pub fn planned_calls(plan: &Value) -> Vec<(String, Value)> {
    plan["steps"]
        .as_array()
        .expect("plan.steps")
        .iter()
        .flat_map(|s| s["calls"].as_array().into_iter().flatten())
        .map(|c| {
            (
                c["api"].as_str().expect("call.api").to_owned(),
                c["params"].clone(),
            )
        })
        .collect()
}

/// The mutating calls, each `ebs:PutSnapshotBlock` run (parallel block uploads) as one
/// group.
pub fn mutating_groups(calls: &[Call]) -> Vec<Vec<&Call>> {
    let mut out: Vec<Vec<&Call>> = Vec::new();
    for c in calls
        .iter()
        .filter(|c| !is_read_only(c) && !c.operation.is_empty())
    {
        let blocks = c.is("ebs:PutSnapshotBlock");
        match out.last_mut() {
            Some(last) if blocks && last[0].is("ebs:PutSnapshotBlock") => last.push(c),
            _ => out.push(vec![c]),
        }
    }
    out
}

/// Asserts that the recorded mutating calls are exactly the plan's, in order, each with
/// exactly the plan's parameters. Returns what each naming placeholder stood for.
pub fn assert_calls_match_plan(plan: &Value, calls: &[Call]) -> BTreeMap<String, String> {
    let planned = planned_calls(plan);
    let sent = mutating_groups(calls);
    let names = |v: &[(String, Value)]| v.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>();
    let sent_names: Vec<String> = sent.iter().map(|g| g[0].name()).collect();
    assert_eq!(
        sent_names,
        names(&planned),
        "the mutating calls (left) are not the plan's (right)"
    );
    let mut bound = BTreeMap::new();
    for ((api, params), group) in planned.iter().zip(&sent) {
        for call in group {
            assert_call_matches(api, params, call, &mut bound);
        }
    }
    bound
}

/// One call against its planned parameters.
pub fn assert_call_matches(
    api: &str,
    planned: &Value,
    sent: &Call,
    bound: &mut BTreeMap<String, String>,
) {
    let want = flatten_for(sent, planned);
    let got = sent_params(sent, &want);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{api}: the parameters sent (right) are not the plan's (left)"
    );
    for (k, w) in &want {
        let g = &got[k];
        match (w, g) {
            (Value::String(w), Value::String(g)) => match_text(api, k, w, g, bound),
            (w @ (Value::Object(_) | Value::Array(_)), Value::String(g)) => {
                // A document sent as a string.
                let g: Value = serde_json::from_str(g)
                    .unwrap_or_else(|e| panic!("{api} {k}: not JSON as sent: {e}: {g}"));
                match_json(api, k, w, &g, bound);
            }
            (w, Value::String(g)) => {
                assert_eq!(&w.to_string(), g, "{api} {k}: sent (right), planned (left)")
            }
            (w, g) => match_json(api, k, w, g, bound),
        }
    }
}

/// The planned parameters keyed as the call's protocol sends them.
fn flatten_for(sent: &Call, planned: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    match sent.service.as_str() {
        "ec2" => flatten_query("", planned, &mut out, ListStyle::Ec2),
        "iam" | "autoscaling" | "sts" | "elasticloadbalancing" => {
            flatten_query("", planned, &mut out, ListStyle::Member)
        }
        // JSON protocols: compare the top-level members as values.
        _ => {
            for (k, v) in planned.as_object().expect("params are an object") {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
enum ListStyle {
    Ec2,
    Member,
}

/// EC2's query protocol names a list's members by the member shape's name: the list's
/// singular (`BlockDeviceMappings` → `BlockDeviceMapping.1`).
fn ec2_member_name(list: &str) -> String {
    match list {
        "IpPermissions" | "IpRanges" | "Ipv6Ranges" => list.to_owned(),
        // A network interface's groups (InstanceNetworkInterfaceSpecification.Groups).
        "Groups" => "SecurityGroupId".to_owned(),
        // Their members are named like the list itself on the wire.
        "AddAllowedPrincipals" | "RemoveAllowedPrincipals" => list.to_owned(),
        _ => list.strip_suffix('s').unwrap_or(list).to_owned(),
    }
}

fn is_document(key: &str) -> bool {
    key.ends_with("Document") || key == "Policy"
}

fn flatten_query(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>, style: ListStyle) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    _ if is_document(k) => {
                        out.insert(key(k), v.clone());
                    }
                    Value::Array(items) => {
                        let member = match style {
                            ListStyle::Ec2 => key(&ec2_member_name(k)),
                            ListStyle::Member => format!("{}.member", key(k)),
                        };
                        for (i, item) in items.iter().enumerate() {
                            flatten_query(&format!("{member}.{}", i + 1), item, out, style);
                        }
                    }
                    _ => flatten_query(&key(k), v, out, style),
                }
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// What the call carried, under the same keys as the plan, plus every key it carried that
/// the plan does not have (so that an unplanned parameter shows up as a difference).
fn sent_params(sent: &Call, want: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let mut got = BTreeMap::new();
    if !sent.form.is_empty() {
        for (k, v) in &sent.form {
            if k != "Action" && k != "Version" {
                got.insert(k.clone(), Value::String(v.clone()));
            }
        }
        return got;
    }
    if let Some(Value::Object(m)) = &sent.json {
        for (k, v) in m {
            got.insert(k.clone(), v.clone());
        }
    }
    // REST: labels, headers and the body are reached by API name.
    for k in want.keys() {
        if got.contains_key(k) {
            continue;
        }
        if k == "BlockData" {
            // The block itself (recorded empty when sent chunked); its checksum is checked.
            got.insert(k.clone(), Value::String("<block>".into()));
        } else if let Some(v) = sent.param(k) {
            got.insert(k.clone(), Value::String(v));
        }
    }
    got
}

fn match_json(
    api: &str,
    key: &str,
    want: &Value,
    got: &Value,
    bound: &mut BTreeMap<String, String>,
) {
    match (want, got) {
        (Value::String(w), Value::String(g)) => match_text(api, key, w, g, bound),
        (Value::Object(w), Value::Object(g)) => {
            // Members are unordered in JSON.
            let sorted = |m: &serde_json::Map<String, Value>| {
                let mut k: Vec<String> = m.keys().cloned().collect();
                k.sort();
                k
            };
            assert_eq!(
                sorted(w),
                sorted(g),
                "{api} {key}: members sent (right), planned (left)"
            );
            for (k, wv) in w {
                match_json(api, &format!("{key}.{k}"), wv, &g[k], bound);
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{api} {key}: list lengths differ");
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                match_json(api, &format!("{key}[{i}]"), wv, gv, bound);
            }
        }
        (w, g) => assert_eq!(w, g, "{api} {key}: sent (right), planned (left)"),
    }
}

/// A planned text against the sent one: literal parts equal, each `<placeholder>` matching
/// a value (bound by name when it has no space).
fn match_text(api: &str, key: &str, want: &str, got: &str, bound: &mut BTreeMap<String, String>) {
    let parts = split_placeholders(want);
    if parts.iter().all(|p| matches!(p, Part::Literal(_))) {
        assert_eq!(got, want, "{api} {key}: sent (left), planned (right)");
        return;
    }
    let mut rest = got;
    for (i, part) in parts.iter().enumerate() {
        match part {
            Part::Literal(l) => {
                rest = rest.strip_prefix(l.as_str()).unwrap_or_else(|| {
                    panic!("{api} {key}: sent {got:?} does not match planned {want:?}")
                });
            }
            Part::Placeholder(name) => {
                // The value runs up to the next literal (or the end).
                let value = match parts.get(i + 1) {
                    Some(Part::Literal(next)) => {
                        let at = rest.find(next.as_str()).unwrap_or_else(|| {
                            panic!("{api} {key}: sent {got:?} does not match planned {want:?}")
                        });
                        &rest[..at]
                    }
                    _ => rest,
                };
                assert!(
                    !value.is_empty(),
                    "{api} {key}: nothing sent for {name} ({got:?})"
                );
                if !name.contains(' ') {
                    let was = bound
                        .entry(name.clone())
                        .or_insert_with(|| value.to_owned());
                    assert_eq!(value, was, "{api} {key}: {name} stands for two values");
                }
                rest = &rest[value.len()..];
            }
        }
    }
    assert!(
        rest.is_empty(),
        "{api} {key}: sent {got:?} does not match planned {want:?}"
    );
}

enum Part {
    Literal(String),
    Placeholder(String),
}

fn split_placeholders(s: &str) -> Vec<Part> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>').map(|c| open + c) else {
            break;
        };
        if close == open + 1 {
            break;
        }
        if open > 0 {
            out.push(Part::Literal(rest[..open].to_owned()));
        }
        out.push(Part::Placeholder(rest[open..=close].to_owned()));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Part::Literal(rest.to_owned()));
    }
    out
}
