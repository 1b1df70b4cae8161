//! Auto Scaling calls: the fleet and its instance refreshes.

use serde_json::json;
use std::time::{Duration, Instant};

use super::{outcome, Id, Outcome, Tags};
use crate::aws::plan::Call;
use crate::aws::{api_error, AwsError, Clients};

/// `autoscaling:CreateAutoScalingGroup`: `count` instances from the launch template's
/// `$Latest` version, spread over the subnets, the deployment's tags on each instance.
#[derive(Debug, Clone)]
pub struct CreateAutoScalingGroup {
    pub name: String,
    pub template: Id,
    pub count: i32,
    pub subnets: Vec<String>,
    /// A PrivateLink exposure's target group: the group registers its instances.
    pub target_groups: Vec<Id>,
    pub tags: Tags,
}

impl CreateAutoScalingGroup {
    pub const API: &'static str = "autoscaling:CreateAutoScalingGroup";

    pub fn call(&self) -> Call {
        let mut p = json!({
                "AutoScalingGroupName": self.name,
                "LaunchTemplate": {"LaunchTemplateId": self.template.render(), "Version": "$Latest"},
                "MinSize": self.count,
                "MaxSize": self.count,
                "DesiredCapacity": self.count,
                "VPCZoneIdentifier": self.subnets.join(","),
                "Tags": self.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v, "PropagateAtLaunch": true})).collect::<Vec<_>>(),
        });
        if !self.target_groups.is_empty() {
            p["TargetGroupARNs"] = json!(self
                .target_groups
                .iter()
                .map(Id::render)
                .collect::<Vec<_>>());
        }
        Call::new(Self::API, p)
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let tags = self
            .tags
            .iter()
            .map(|(k, v)| {
                aws_sdk_autoscaling::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .propagate_at_launch(true)
                    .build()
            })
            .collect();
        let out = c
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(&self.name)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(self.template.require(step)?)
                    .version("$Latest")
                    .build(),
            )
            .min_size(self.count)
            .max_size(self.count)
            .desired_capacity(self.count)
            .vpc_zone_identifier(self.subnets.join(","))
            .set_target_group_arns(if self.target_groups.is_empty() {
                None
            } else {
                Some(
                    self.target_groups
                        .iter()
                        .map(|t| t.require(step).map(str::to_owned))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            })
            .set_tags(Some(tags))
            .send()
            .await;
        outcome(out, step, Self::API, |code| code == "AlreadyExists")
    }
}

/// `autoscaling:StartInstanceRefresh`: replace the group's instances, keeping a share in
/// service.
#[derive(Debug, Clone)]
pub struct StartInstanceRefresh {
    pub group: String,
    pub min_healthy_percentage: i32,
}

/// A refresh this call started, or one already running (from an interrupted run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    Started(Option<String>),
    AlreadyRunning,
}

impl StartInstanceRefresh {
    pub const API: &'static str = "autoscaling:StartInstanceRefresh";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"AutoScalingGroupName": self.group, "Preferences": {"MinHealthyPercentage": self.min_healthy_percentage}}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Refresh, AwsError> {
        let out = c
            .autoscaling
            .start_instance_refresh()
            .auto_scaling_group_name(&self.group)
            .preferences(
                aws_sdk_autoscaling::types::RefreshPreferences::builder()
                    .min_healthy_percentage(self.min_healthy_percentage)
                    .build(),
            )
            .send()
            .await;
        match out {
            Ok(out) => Ok(Refresh::Started(
                out.instance_refresh_id().map(str::to_owned),
            )),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_instance_refresh_in_progress_fault()) =>
            {
                Ok(Refresh::AlreadyRunning)
            }
            Err(e) => Err(api_error(step, Self::API, e)),
        }
    }
}

impl StartInstanceRefresh {
    /// Starts the refresh (or finds one running, from an interrupted run) and waits for
    /// its verdict. `rerun` is the command that resumes after a failure or a timeout.
    pub async fn send_and_wait(
        &self,
        c: &Clients,
        step: &str,
        wait: Duration,
        rerun: &str,
    ) -> Result<(), AwsError> {
        let refresh_id = match self.send(c, step).await? {
            Refresh::Started(id) => id,
            Refresh::AlreadyRunning => None,
        };
        let begin = Instant::now();
        loop {
            let mut req = c
                .autoscaling
                .describe_instance_refreshes()
                .auto_scaling_group_name(&self.group)
                .max_records(1);
            if let Some(id) = &refresh_id {
                req = req.instance_refresh_ids(id);
            }
            let out = req
                .send()
                .await
                .map_err(|e| api_error(step, "autoscaling:DescribeInstanceRefreshes", e))?;
            let latest = out.instance_refreshes().first();
            let status = latest
                .and_then(|r| r.status())
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            match status.as_str() {
                "Successful" => return Ok(()),
                "Failed" | "Cancelled" | "RollbackSuccessful" | "RollbackFailed" => {
                    let reason = latest
                        .and_then(|r| r.status_reason())
                        .unwrap_or("no reason given");
                    return Err(AwsError::step(
                        step,
                        format!("{status}: {reason}; the instances not replaced yet keep running as they are (and keep unsealing); fix the cause and run `{rerun}` again"),
                    ));
                }
                _ => {}
            }
            if begin.elapsed() > wait {
                return Err(AwsError::step(
                    step,
                    format!(
                        "still {status} after {} s: run `{rerun}` again to keep waiting",
                        wait.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }
}

/// `autoscaling:DeleteAutoScalingGroup` with its instances (`ForceDelete`).
#[derive(Debug, Clone)]
pub struct DeleteAutoScalingGroup {
    pub name: String,
}

impl DeleteAutoScalingGroup {
    pub const API: &'static str = "autoscaling:DeleteAutoScalingGroup";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"AutoScalingGroupName": self.name, "ForceDelete": true}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<(), AwsError> {
        c.autoscaling
            .delete_auto_scaling_group()
            .auto_scaling_group_name(&self.name)
            .force_delete(true)
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        Ok(())
    }
}
