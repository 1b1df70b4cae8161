//! `--expose privatelink`: the serving port behind an internal Network Load Balancer and
//! a VPC endpoint service, so that consumers in other VPCs or accounts (the allowed
//! principals) reach the attested TLS front without the internet. The load balancer
//! passes TCP through: TLS ends in the instance, where the attestation binds its key.

use super::{Deployment, EXPOSURE_PRIVATELINK};
use crate::aws::calls::ec2::{AllowEndpointServicePrincipals, CreateEndpointService};
use crate::aws::calls::elb::{
    CreateListener, CreateLoadBalancer, CreateTargetGroup, RegisterTargets,
};
use crate::aws::calls::Id;
use crate::aws::plan::{Action, Call, Step};
use crate::aws::{AwsError, Clients};

impl Deployment {
    pub(super) fn privatelink(&self) -> bool {
        self.state.exposure.as_deref() == Some(EXPOSURE_PRIVATELINK)
    }

    pub(super) fn target_group_id(&self) -> Id {
        Id::first_of(
            [
                self.found.target_group.as_ref(),
                self.state.target_group_arn.as_ref(),
            ],
            "target-group-arn",
        )
    }

    fn load_balancer_id(&self) -> Id {
        Id::first_of(
            [
                self.found.load_balancer.as_ref(),
                self.state.load_balancer_arn.as_ref(),
            ],
            "load-balancer-arn",
        )
    }

    fn endpoint_service_id(&self) -> Id {
        Id::first_of(
            [
                self.found.endpoint_service.as_ref().map(|s| &s.id),
                self.state.endpoint_service_id.as_ref(),
            ],
            "endpoint-service-id",
        )
    }

    /// The serving port; `prepare` refuses an exposure without one.
    fn exposed_port(&self) -> u16 {
        self.port.unwrap_or_default()
    }

    pub(super) fn target_group_spec(&self) -> CreateTargetGroup {
        CreateTargetGroup {
            name: self.names.target_group.clone(),
            vpc: self.network.vpc_id.clone(),
            port: self.exposed_port(),
            tags: self.tags(),
        }
    }

    pub(super) fn load_balancer_spec(&self) -> CreateLoadBalancer {
        CreateLoadBalancer {
            name: self.names.load_balancer.clone(),
            subnets: self.network.endpoint_subnets.clone(),
            tags: self.tags(),
        }
    }

    pub(super) fn listener_spec(&self) -> CreateListener {
        CreateListener {
            load_balancer: self.load_balancer_id(),
            target_group: self.target_group_id(),
            port: self.exposed_port(),
        }
    }

    pub(super) fn endpoint_service_spec(&self) -> CreateEndpointService {
        let lb = self.load_balancer_id();
        CreateEndpointService {
            client_token: self.token_once_known(
                "endpoint-service",
                &lb,
                &[],
                "derived from the load balancer's ARN",
            ),
            load_balancer: lb,
            tags: self.tags(),
        }
    }

    /// The allowed principals to add and remove, when they differ from the wanted ones.
    pub(super) fn principals_spec(&self) -> Option<AllowEndpointServicePrincipals> {
        let have = &self.found.service_principals;
        let want = &self.state.allowed_principals;
        let add: Vec<String> = want.iter().filter(|p| !have.contains(p)).cloned().collect();
        let remove: Vec<String> = have.iter().filter(|p| !want.contains(p)).cloned().collect();
        (!add.is_empty() || !remove.is_empty()).then(|| AllowEndpointServicePrincipals {
            service: self.endpoint_service_id(),
            add,
            remove,
        })
    }

    /// A single instance's registration in the target group (a fleet's Auto Scaling
    /// group registers its own): the instances not registered yet.
    pub(super) fn register_spec(&self) -> Option<RegisterTargets> {
        let instances: Vec<String> = if self.found.instances.is_empty() {
            vec!["<the launched instance's id>".to_owned()]
        } else {
            self.found
                .instances
                .iter()
                .filter(|i| !self.found.registered.contains(i))
                .cloned()
                .collect()
        };
        (!instances.is_empty()).then(|| RegisterTargets {
            target_group: self.target_group_id(),
            instances,
            port: self.exposed_port(),
        })
    }

    /// The steps before the instances: target group, load balancer, listener, endpoint
    /// service, and who may connect to it.
    pub(super) fn exposure_steps(&self) -> Vec<Step> {
        let f = &self.found;
        let keep_or_create =
            |step: &'static str, resource: String, existing: Option<String>, calls: Vec<Call>| {
                super::steps::step(step, resource, existing, calls)
            };
        let port = self.exposed_port();
        let mut steps = vec![
            keep_or_create(
                "target-group",
                format!(
                    "target group {}: tcp/{port} of the instances",
                    self.names.target_group
                ),
                f.target_group.clone(),
                vec![self.target_group_spec().call()],
            ),
            keep_or_create(
                "load-balancer",
                format!(
                    "internal Network Load Balancer {} in {}",
                    self.names.load_balancer,
                    self.network.endpoint_subnets.join(", ")
                ),
                f.load_balancer.clone(),
                vec![self.load_balancer_spec().call()],
            ),
            keep_or_create(
                "listener",
                format!(
                    "tcp/{port} forwarded to {} (TLS passes through)",
                    self.names.target_group
                ),
                f.listener.then(|| "in place".to_owned()),
                vec![self.listener_spec().call()],
            ),
            keep_or_create(
                "endpoint-service",
                "VPC endpoint service in front of the load balancer (PrivateLink)".to_owned(),
                f.endpoint_service.as_ref().map(|s| s.name.clone()),
                vec![self.endpoint_service_spec().call()],
            ),
        ];
        let principals = self.principals_spec();
        steps.push(keep_or_create(
            "endpoint-service-principals",
            format!(
                "who may connect an endpoint: {}",
                self.state.allowed_principals.join(", ")
            ),
            principals.is_none().then(|| "in place".to_owned()),
            principals.iter().map(|p| p.call()).collect(),
        ));
        steps
    }

    /// After a single instance is launched: its registration.
    pub(super) fn registration_step(&self) -> Option<Step> {
        let spec = self.register_spec()?;
        Some(Step {
            step: "targets",
            resource: format!("the instance in {}", self.names.target_group),
            action: Action::Create,
            calls: vec![spec.call()],
        })
    }

    pub(super) async fn create_target_group(&mut self, c: &Clients) -> Result<(), AwsError> {
        let arn = self.target_group_spec().send(c, "target group").await?;
        self.state.target_group_arn = Some(arn);
        self.save()
    }

    pub(super) async fn create_load_balancer(&mut self, c: &Clients) -> Result<(), AwsError> {
        let arn = self.load_balancer_spec().send(c, "load balancer").await?;
        self.state.load_balancer_arn = Some(arn);
        self.save()
    }

    pub(super) async fn create_listener(&mut self, c: &Clients) -> Result<(), AwsError> {
        self.listener_spec().send(c, "listener").await
    }

    pub(super) async fn create_endpoint_service(&mut self, c: &Clients) -> Result<(), AwsError> {
        let service = self
            .endpoint_service_spec()
            .send(c, "endpoint service")
            .await?;
        self.state.endpoint_service_id = Some(service.id);
        self.state.endpoint_service_name = Some(service.name);
        self.save()
    }

    pub(super) async fn set_service_principals(&mut self, c: &Clients) -> Result<(), AwsError> {
        match self.principals_spec() {
            Some(spec) => spec.send(c, "endpoint service principals").await,
            None => Ok(()),
        }
    }

    /// Registers the launched instance: found again first, since the launch step ran
    /// after the plan was made.
    pub(super) async fn register_targets(&mut self, c: &Clients) -> Result<(), AwsError> {
        let step = "targets";
        self.found = self.find_existing(c).await?;
        if self.found.instances.is_empty() {
            return Err(AwsError::step(step, "no instance to register"));
        }
        match self.register_spec() {
            Some(spec) => spec.send(c, step).await,
            None => Ok(()),
        }
    }
}
