//! IAM policy evaluation for the KMS stand-in (`kms.rs`): the part of AWS's evaluation logic
//! a key policy needs, as the IAM User Guide defines it ("Policy evaluation logic",
//! "IAM JSON policy elements: Condition operators"):
//!
//! - an explicit `Deny` in any matching statement wins; else an `Allow` allows; else the
//!   request is implicitly denied;
//! - a statement matches when its `Principal`, `Action` (glob `*`, `?`, case-insensitive)
//!   and `Resource` match and every condition holds: several operators AND, several keys
//!   under one operator AND, several values for one key OR;
//! - condition key names are case-insensitive; a key missing from the request makes a
//!   positive operator false and a negated one (`StringNot…`) true; `…IfExists` makes any
//!   operator true for a missing key; `Null` tests presence.
//!
//! An operator not listed here makes evaluation panic: the stand-in must never guess what
//! a condition in a policy under test means.

use serde_json::Value;
use std::collections::BTreeMap;

/// What is asked: who, which action, on what, with which condition keys.
#[derive(Debug, Clone)]
pub struct Request {
    pub principal: String,
    pub action: String,
    pub resource: String,
    /// Condition key (any case) → value.
    pub context: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow { sid: String },
    ExplicitDeny { sid: String },
    ImplicitDeny,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }
}

/// Evaluates one policy document (a key policy) for `request`.
pub fn evaluate(policy: &Value, request: &Request) -> Verdict {
    let statements = match &policy["Statement"] {
        Value::Array(s) => s.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        other => panic!("policy without statements: {other}"),
    };
    let context: BTreeMap<String, &str> = request
        .context
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    let mut allow = None;
    for (i, s) in statements.iter().enumerate() {
        let sid = s["Sid"].as_str().map_or(format!("#{i}"), str::to_owned);
        if !statement_matches(s, request, &context) {
            continue;
        }
        match s["Effect"].as_str() {
            Some("Deny") => return Verdict::ExplicitDeny { sid },
            Some("Allow") => {
                allow.get_or_insert(sid);
            }
            other => panic!("statement {sid}: Effect {other:?}"),
        }
    }
    allow.map_or(Verdict::ImplicitDeny, |sid| Verdict::Allow { sid })
}

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn statement_matches(s: &Value, r: &Request, context: &BTreeMap<String, &str>) -> bool {
    assert!(
        s.get("NotAction").is_none()
            && s.get("NotPrincipal").is_none()
            && s.get("NotResource").is_none(),
        "Not* elements are not evaluated by the stand-in: {s}"
    );
    principal_matches(&s["Principal"], &r.principal)
        && strings(&s["Action"])
            .iter()
            .any(|a| glob(a, &r.action, true))
        && strings(&s["Resource"])
            .iter()
            .any(|p| glob(p, &r.resource, false))
        && conditions_hold(&s["Condition"], context)
}

/// `"*"`, `{"AWS": "*"}`, or the principal's ARN. An account (`…:root` or a bare account
/// id) stands for every principal of that account: a key policy's delegation to IAM, whose
/// policies the stand-in takes as allowing (the instance role's does).
pub fn principal_matches(p: &Value, principal: &str) -> bool {
    let aws = match p {
        Value::String(s) if s == "*" => return true,
        Value::Object(o) => o.get("AWS").map(strings).unwrap_or_default(),
        _ => return false,
    };
    let account = principal.split(':').nth(4).unwrap_or("");
    aws.iter().any(|a| {
        *a == "*"
            || *a == principal
            || *a == account
            || (a.ends_with(":root") && a.split(':').nth(4) == Some(account))
    })
}

/// Matches `*` (any run) and `?` (one character).
pub fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = if ignore_case {
        (
            pattern.to_ascii_lowercase().chars().collect(),
            text.to_ascii_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), text.chars().collect())
    };
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(&p, &t)
}

fn conditions_hold(condition: &Value, context: &BTreeMap<String, &str>) -> bool {
    let Some(ops) = condition.as_object() else {
        return condition.is_null();
    };
    ops.iter().all(|(op, keys)| {
        let keys = keys
            .as_object()
            .unwrap_or_else(|| panic!("condition {op}: not an object"));
        keys.iter().all(|(key, values)| {
            holds(
                op,
                context.get(&key.to_ascii_lowercase()).copied(),
                &strings(values),
            )
        })
    })
}

pub fn holds(operator: &str, value: Option<&str>, wanted: &[&str]) -> bool {
    let (op, if_exists) = match operator.strip_suffix("IfExists") {
        Some(op) => (op, true),
        None => (operator, false),
    };
    if op == "Null" {
        // "true": the key must be absent; "false": present.
        return wanted.iter().any(|w| (*w == "true") == value.is_none());
    }
    let negated = op.starts_with("StringNot");
    let Some(value) = value else {
        return if_exists || negated;
    };
    let equal = |w: &&str| match op {
        "StringEquals" | "StringNotEquals" => *w == value,
        "StringEqualsIgnoreCase" | "StringNotEqualsIgnoreCase" => w.eq_ignore_ascii_case(value),
        "StringLike" | "StringNotLike" => glob(w, value, false),
        other => panic!("condition operator {other} is not evaluated by the stand-in"),
    };
    let any = wanted.iter().any(equal);
    if negated {
        !any
    } else {
        any
    }
}
