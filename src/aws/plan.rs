//! A deploy as data: the ordered steps and, for each, the API calls with their parameters.
//!
//! `zoa deploy --plan` prints this and calls nothing that mutates; `zoa deploy` builds the
//! same plan and then executes it step by step, building each request from the same spec
//! the plan shows, so the plan is what happens. Values only known once an earlier step ran
//! (a snapshot id, a key ARN) appear as `<snapshot-id>`-style placeholders.

use serde::Serialize;
use serde_json::Value;

/// What a step will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "action", content = "id")]
pub enum Action {
    /// Create the resource with the calls listed.
    Create,
    /// The resource exists (recorded or found by name/tags) and is kept as is.
    Keep(String),
    /// Remove the resource with the calls listed (`zoa destroy`).
    Remove,
}

/// One API call: `service:Operation` and its parameters as the API documents them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub api: String,
    pub params: Value,
}

impl Call {
    pub fn new(api: &str, params: Value) -> Call {
        Call {
            api: api.to_owned(),
            params,
        }
    }
}

/// One step of a deploy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Stable step name ("disk", "snapshot", "image", "role", …).
    pub step: &'static str,
    /// What it is, for people.
    pub resource: String,
    #[serde(flatten)]
    pub action: Action,
    /// The calls a `Create` makes, in order (empty for `Keep`).
    pub calls: Vec<Call>,
}

/// The command a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    Deploy,
    Rollout,
    Destroy,
}

/// A whole deploy, rollout or destroy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub command: Command,
    pub deployment: String,
    pub release: String,
    /// How the AMI boots, and so which PCRs the KMS key binds (not for a destroy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<crate::aws::policy::BootMode>,
    pub account_id: String,
    pub region: String,
    pub steps: Vec<Step>,
    /// Consequences people must read before applying (e.g. an irreversible policy lock).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Human output: one block per step, every call with its parameters (policy documents
    /// in full, for review).
    pub fn render_text(&self) -> String {
        let mut out = match self.command {
            Command::Destroy => format!(
                "destroy {} ({}) in account {} in {}\n",
                self.deployment, self.release, self.account_id, self.region
            ),
            Command::Deploy | Command::Rollout => format!(
                "{} {} of {} to account {} in {}\n",
                if self.command == Command::Deploy {
                    "deploy"
                } else {
                    "rollout"
                },
                self.deployment,
                self.release,
                self.account_id,
                self.region
            ),
        };
        if let Some(mode) = self.boot_mode.filter(|m| !m.is_standard()) {
            out.push_str(&format!(
                "boot: {mode} (the AMI enrolls the release's UefiData; the key binds these PCRs)\n"
            ));
        }
        for step in &self.steps {
            match &step.action {
                Action::Keep(id) => out.push_str(&format!(
                    "= {:<16} {} (exists: {id})\n",
                    step.step, step.resource
                )),
                Action::Create | Action::Remove => {
                    let sign = if step.action == Action::Remove {
                        '-'
                    } else {
                        '+'
                    };
                    out.push_str(&format!("{sign} {:<16} {}\n", step.step, step.resource));
                    for call in &step.calls {
                        out.push_str(&format!("    {}\n", call.api));
                        let text = serde_json::to_string_pretty(&call.params).unwrap_or_default();
                        for line in text.lines() {
                            out.push_str("      ");
                            out.push_str(line);
                            out.push('\n');
                        }
                    }
                }
            }
        }
        let creates = self
            .steps
            .iter()
            .filter(|s| s.action == Action::Create)
            .count();
        let removes = self
            .steps
            .iter()
            .filter(|s| s.action == Action::Remove)
            .count();
        if self.command == Command::Destroy {
            out.push_str(&format!("{removes} to remove\n"));
        } else {
            out.push_str(&format!(
                "{creates} to create, {} unchanged\n",
                self.steps.len() - creates
            ));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_lists_calls_of_created_steps_only() {
        let plan = Plan {
            command: Command::Deploy,
            deployment: "demo".into(),
            release: "demo 1".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            boot_mode: Some(crate::aws::policy::BootMode::Standard),
            steps: vec![
                Step {
                    step: "snapshot",
                    resource: "EBS snapshot of disk.raw".into(),
                    action: Action::Keep("snap-1".into()),
                    calls: vec![],
                },
                Step {
                    step: "image",
                    resource: "AMI zoa-demo".into(),
                    action: Action::Create,
                    calls: vec![Call::new(
                        "ec2:RegisterImage",
                        json!({"TpmSupport": "v2.0"}),
                    )],
                },
            ],
            warnings: vec!["irreversible".into()],
        };
        let text = plan.render_text();
        assert!(text.contains("= snapshot"), "{text}");
        assert!(text.contains("exists: snap-1"), "{text}");
        assert!(text.contains("+ image"), "{text}");
        assert!(text.contains("ec2:RegisterImage"), "{text}");
        assert!(text.contains("\"TpmSupport\": \"v2.0\""), "{text}");
        assert!(text.contains("1 to create, 1 unchanged"), "{text}");
        assert!(text.ends_with("warning: irreversible\n"), "{text}");
        let v = serde_json::to_value(&plan).unwrap();
        assert_eq!(v["steps"][0]["action"], "keep");
        assert_eq!(v["steps"][0]["id"], "snap-1");
        assert_eq!(v["steps"][1]["action"], "create");
    }
}
