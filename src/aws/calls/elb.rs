//! Elastic Load Balancing (v2) calls: the internal Network Load Balancer a PrivateLink
//! endpoint service fronts, its target group and listener.

use serde_json::json;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types as elbt;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{Id, Outcome, Tags};
use crate::aws::plan::Call;
use crate::aws::{api_error, AwsError, Clients};

fn elb_tags(tags: &Tags) -> Vec<elbt::Tag> {
    tags.iter()
        .map(|(k, v)| elbt::Tag::builder().key(k).value(v).build())
        .collect()
}

fn tags_json(tags: &Tags) -> serde_json::Value {
    json!(tags
        .iter()
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect::<Vec<_>>())
}

/// `elasticloadbalancing:CreateTargetGroup`: TCP to the serving port of the instances,
/// health-checked over TCP (the TLS front answers; no HTTP path needed).
#[derive(Debug, Clone)]
pub struct CreateTargetGroup {
    pub name: String,
    pub vpc: String,
    pub port: u16,
    pub tags: Tags,
}

impl CreateTargetGroup {
    pub const API: &'static str = "elasticloadbalancing:CreateTargetGroup";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({
                "Name": self.name,
                "Protocol": "TCP",
                "Port": self.port,
                "VpcId": self.vpc,
                "TargetType": "instance",
                "HealthCheckProtocol": "TCP",
                "Tags": tags_json(&self.tags),
            }),
        )
    }

    /// Creates the group (an identical one answers with the same ARN); its ARN.
    pub async fn send(&self, c: &Clients, step: &str) -> Result<String, AwsError> {
        let out = c
            .elb
            .create_target_group()
            .name(&self.name)
            .protocol(elbt::ProtocolEnum::Tcp)
            .port(i32::from(self.port))
            .vpc_id(&self.vpc)
            .target_type(elbt::TargetTypeEnum::Instance)
            .health_check_protocol(elbt::ProtocolEnum::Tcp)
            .set_tags(Some(elb_tags(&self.tags)))
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        out.target_groups()
            .first()
            .and_then(|g| g.target_group_arn())
            .map(str::to_owned)
            .ok_or_else(|| AwsError::step(step, "CreateTargetGroup returned no ARN"))
    }
}

/// `elasticloadbalancing:CreateLoadBalancer`: an internal Network Load Balancer, one
/// subnet per Availability Zone.
#[derive(Debug, Clone)]
pub struct CreateLoadBalancer {
    pub name: String,
    pub subnets: Vec<String>,
    pub tags: Tags,
}

impl CreateLoadBalancer {
    pub const API: &'static str = "elasticloadbalancing:CreateLoadBalancer";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({
                "Name": self.name,
                "Type": "network",
                "Scheme": "internal",
                "Subnets": self.subnets,
                "Tags": tags_json(&self.tags),
            }),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<String, AwsError> {
        let out = c
            .elb
            .create_load_balancer()
            .name(&self.name)
            .r#type(elbt::LoadBalancerTypeEnum::Network)
            .scheme(elbt::LoadBalancerSchemeEnum::Internal)
            .set_subnets(Some(self.subnets.clone()))
            .set_tags(Some(elb_tags(&self.tags)))
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        out.load_balancers()
            .first()
            .and_then(|l| l.load_balancer_arn())
            .map(str::to_owned)
            .ok_or_else(|| AwsError::step(step, "CreateLoadBalancer returned no ARN"))
    }
}

/// `elasticloadbalancing:CreateListener`: TCP on the serving port, forwarded to the target
/// group (TLS passes through: the instances' attested front terminates it).
#[derive(Debug, Clone)]
pub struct CreateListener {
    pub load_balancer: Id,
    pub target_group: Id,
    pub port: u16,
}

impl CreateListener {
    pub const API: &'static str = "elasticloadbalancing:CreateListener";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({
                "LoadBalancerArn": self.load_balancer.render(),
                "Protocol": "TCP",
                "Port": self.port,
                "DefaultActions": [{"Type": "forward", "TargetGroupArn": self.target_group.render()}],
            }),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<(), AwsError> {
        let forward = elbt::Action::builder()
            .r#type(elbt::ActionTypeEnum::Forward)
            .target_group_arn(self.target_group.require(step)?)
            .build();
        c.elb
            .create_listener()
            .load_balancer_arn(self.load_balancer.require(step)?)
            .protocol(elbt::ProtocolEnum::Tcp)
            .port(i32::from(self.port))
            .default_actions(forward)
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        Ok(())
    }
}

/// `elasticloadbalancing:RegisterTargets`: a single instance's serving port (a fleet's
/// Auto Scaling group registers its own instances).
#[derive(Debug, Clone)]
pub struct RegisterTargets {
    pub target_group: Id,
    pub instances: Vec<String>,
    pub port: u16,
}

impl RegisterTargets {
    pub const API: &'static str = "elasticloadbalancing:RegisterTargets";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({
                "TargetGroupArn": self.target_group.render(),
                "Targets": self.instances.iter().map(|i| json!({"Id": i, "Port": self.port})).collect::<Vec<_>>(),
            }),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<(), AwsError> {
        let mut req = c
            .elb
            .register_targets()
            .target_group_arn(self.target_group.require(step)?);
        for i in &self.instances {
            req = req.targets(
                elbt::TargetDescription::builder()
                    .id(i)
                    .port(i32::from(self.port))
                    .build(),
            );
        }
        req.send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        Ok(())
    }
}

/// `elasticloadbalancing:DeleteLoadBalancer` (its listeners go with it); one already
/// gone is no error.
#[derive(Debug, Clone)]
pub struct DeleteLoadBalancer {
    pub arn: String,
}

impl DeleteLoadBalancer {
    pub const API: &'static str = "elasticloadbalancing:DeleteLoadBalancer";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"LoadBalancerArn": self.arn}))
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let answer = c
            .elb
            .delete_load_balancer()
            .load_balancer_arn(&self.arn)
            .send()
            .await;
        super::outcome(answer, step, Self::API, |code| {
            code == "LoadBalancerNotFound"
        })
    }
}

/// `elasticloadbalancing:DeleteTargetGroup`. A group stays "in use" for a little while
/// after its load balancer is deleted, so that answer is tried again until `wait` runs
/// out.
#[derive(Debug, Clone)]
pub struct DeleteTargetGroup {
    pub arn: String,
}

impl DeleteTargetGroup {
    pub const API: &'static str = "elasticloadbalancing:DeleteTargetGroup";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"TargetGroupArn": self.arn}))
    }

    pub async fn send(&self, c: &Clients, step: &str, wait: Duration) -> Result<Outcome, AwsError> {
        let started = std::time::Instant::now();
        loop {
            match c
                .elb
                .delete_target_group()
                .target_group_arn(&self.arn)
                .send()
                .await
            {
                Ok(_) => return Ok(Outcome::Done),
                Err(e) if e.code() == Some("TargetGroupNotFound") => {
                    return Ok(Outcome::AlreadyThere)
                }
                Err(e) if e.code() == Some("ResourceInUse") && started.elapsed() < wait => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Err(e) => return Err(api_error(step, Self::API, e)),
            }
        }
    }
}

/// The ARN of the load balancer named `name`, if there is one.
pub async fn find_load_balancer(
    c: &Clients,
    name: &str,
    step: &str,
) -> Result<Option<String>, AwsError> {
    match c.elb.describe_load_balancers().names(name).send().await {
        Ok(out) => Ok(out
            .load_balancers()
            .first()
            .and_then(|l| l.load_balancer_arn())
            .map(str::to_owned)),
        Err(e) if e.code() == Some("LoadBalancerNotFound") => Ok(None),
        Err(e) => Err(api_error(
            step,
            "elasticloadbalancing:DescribeLoadBalancers",
            e,
        )),
    }
}

/// The ARN of the target group named `name`, if there is one.
pub async fn find_target_group(
    c: &Clients,
    name: &str,
    step: &str,
) -> Result<Option<String>, AwsError> {
    match c.elb.describe_target_groups().names(name).send().await {
        Ok(out) => Ok(out
            .target_groups()
            .first()
            .and_then(|g| g.target_group_arn())
            .map(str::to_owned)),
        Err(e) if e.code() == Some("TargetGroupNotFound") => Ok(None),
        Err(e) => Err(api_error(
            step,
            "elasticloadbalancing:DescribeTargetGroups",
            e,
        )),
    }
}
