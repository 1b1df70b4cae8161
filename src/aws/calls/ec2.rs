//! EC2 calls: the AMI, instances, launch templates, security groups, snapshots.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_ec2::types as ec2t;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{outcome, tags_json, Id, Outcome, Tags};
use crate::aws::plan::Call;
use crate::aws::userdata::UserDataSpec;
use crate::aws::{api_error, AwsError, Clients};

pub(crate) fn ec2_tag_spec(resource: ec2t::ResourceType, tags: &Tags) -> ec2t::TagSpecification {
    let mut b = ec2t::TagSpecification::builder().resource_type(resource);
    for (k, v) in tags {
        b = b.tags(ec2t::Tag::builder().key(k).value(v).build());
    }
    b.build()
}

/// One EBS volume of an AMI.
#[derive(Debug, Clone)]
pub struct Volume {
    pub device: &'static str,
    pub snapshot: Id,
}

/// `ec2:RegisterImage`: a UEFI AMI with NitroTPM 2.0 and IMDSv2 only.
#[derive(Debug, Clone)]
pub struct RegisterImage {
    pub name: String,
    pub description: String,
    pub root_device: &'static str,
    pub volumes: Vec<Volume>,
    /// Base64 `UefiData` (the release's signed variable store), if any.
    pub uefi_data: Option<String>,
    pub tags: Tags,
}

impl RegisterImage {
    pub const API: &'static str = "ec2:RegisterImage";

    pub fn call(&self) -> Call {
        let mappings: Vec<Value> = self
            .volumes
            .iter()
            .map(|v| json!({"DeviceName": v.device, "Ebs": {"SnapshotId": v.snapshot.render(), "VolumeType": "gp3", "DeleteOnTermination": true}}))
            .collect();
        let mut params = json!({
            "Name": self.name,
            "Description": self.description,
            "Architecture": "x86_64",
            "BootMode": "uefi",
            "TpmSupport": "v2.0",
            "ImdsSupport": "v2.0",
            "EnaSupport": true,
            "VirtualizationType": "hvm",
            "RootDeviceName": self.root_device,
            "BlockDeviceMappings": mappings,
            "TagSpecifications": [{"ResourceType": "image", "Tags": tags_json(&self.tags)}],
        });
        if let Some(b64) = &self.uefi_data {
            params["UefiData"] = json!(b64);
        }
        Call::new(Self::API, params)
    }

    /// Registers the image; its id.
    pub async fn send(&self, c: &Clients, step: &str) -> Result<String, AwsError> {
        let mut mappings = Vec::new();
        for v in &self.volumes {
            mappings.push(
                ec2t::BlockDeviceMapping::builder()
                    .device_name(v.device)
                    .ebs(
                        ec2t::EbsBlockDevice::builder()
                            .snapshot_id(v.snapshot.require(step)?)
                            .volume_type(ec2t::VolumeType::Gp3)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        let out = c
            .ec2
            .register_image()
            .name(&self.name)
            .description(&self.description)
            .architecture(ec2t::ArchitectureValues::X8664)
            .boot_mode(ec2t::BootModeValues::Uefi)
            .tpm_support(ec2t::TpmSupportValues::V20)
            .imds_support(ec2t::ImdsSupportValues::V20)
            .ena_support(true)
            .virtualization_type("hvm")
            .root_device_name(self.root_device)
            .set_block_device_mappings(Some(mappings))
            .set_uefi_data(self.uefi_data.clone())
            .tag_specifications(ec2_tag_spec(ec2t::ResourceType::Image, &self.tags))
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        out.image_id()
            .map(str::to_owned)
            .ok_or_else(|| AwsError::step(step, "RegisterImage returned no image id"))
    }
}

/// What every instance of a deploy is launched with, alone or from a launch template:
/// the AMI, the instance profile, IMDSv2 with one hop, the security group, no key pair.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub image: Id,
    pub instance_type: String,
    pub instance_profile: String,
    pub security_group: Id,
    pub user_data: Option<UserDataSpec>,
    pub instance_tags: Tags,
    pub volume_tags: Tags,
    /// `false` for a private deploy: the primary interface gets no public address,
    /// whatever the subnet's default (a default VPC's subnets give one).
    pub public_address: bool,
}

impl InstanceSpec {
    fn metadata_options_json() -> Value {
        json!({"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled", "InstanceMetadataTags": "disabled"})
    }

    /// The parameters RunInstances and a launch template's data share. Without a public
    /// address, the group goes on the primary network interface (EC2 takes the group
    /// there, not beside an interface), with the subnet when one is given.
    fn params(&self, subnet: Option<&str>) -> Value {
        let mut p = json!({
            "ImageId": self.image.render(),
            "InstanceType": self.instance_type,
            "IamInstanceProfile": {"Name": self.instance_profile},
            "MetadataOptions": Self::metadata_options_json(),
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags_json(&self.instance_tags)}, {"ResourceType": "volume", "Tags": tags_json(&self.volume_tags)}],
        });
        if self.public_address {
            p["SecurityGroupIds"] = json!([self.security_group.render()]);
            if let Some(s) = subnet {
                p["SubnetId"] = json!(s);
            }
        } else {
            let mut interface = json!({
                "DeviceIndex": 0,
                "AssociatePublicIpAddress": false,
                "Groups": [self.security_group.render()],
            });
            if let Some(s) = subnet {
                interface["SubnetId"] = json!(s);
            }
            p["NetworkInterfaces"] = json!([interface]);
        }
        if let Some(ud) = &self.user_data {
            // The plan names the user data (size, sources); the contents never show.
            p["UserData"] = json!(ud.summary());
        }
        p
    }

    fn user_data_b64(&self) -> Option<String> {
        self.user_data.as_ref().map(UserDataSpec::base64)
    }
}

/// `ec2:RunInstances`: one instance.
#[derive(Debug, Clone)]
pub struct RunInstances {
    pub instance: InstanceSpec,
    pub subnet: Option<String>,
    /// Idempotency: derived from the image and security group, so known once they are.
    pub client_token: Id,
}

impl RunInstances {
    pub const API: &'static str = "ec2:RunInstances";

    pub fn call(&self) -> Call {
        let mut p = self.instance.params(self.subnet.as_deref());
        p["MinCount"] = json!(1);
        p["MaxCount"] = json!(1);
        p["ClientToken"] = json!(self.client_token.render());
        Call::new(Self::API, p)
    }

    /// Launches the instance; the ids EC2 returned.
    pub async fn send(&self, c: &Clients, step: &str) -> Result<Vec<String>, AwsError> {
        let i = &self.instance;
        let image = i.image.require(step)?;
        let sg = i.security_group.require(step)?;
        let token = self.client_token.require(step)?;
        let mut attempt = 0;
        let out = loop {
            let req = c
                .ec2
                .run_instances()
                .image_id(image)
                .instance_type(ec2t::InstanceType::from(i.instance_type.as_str()))
                .min_count(1)
                .max_count(1)
                .iam_instance_profile(
                    ec2t::IamInstanceProfileSpecification::builder()
                        .name(&i.instance_profile)
                        .build(),
                )
                .metadata_options(
                    ec2t::InstanceMetadataOptionsRequest::builder()
                        .http_tokens(ec2t::HttpTokensState::Required)
                        .http_put_response_hop_limit(1)
                        .http_endpoint(ec2t::InstanceMetadataEndpointState::Enabled)
                        .instance_metadata_tags(ec2t::InstanceMetadataTagsState::Disabled)
                        .build(),
                )
                .tag_specifications(ec2_tag_spec(ec2t::ResourceType::Instance, &i.instance_tags))
                .tag_specifications(ec2_tag_spec(ec2t::ResourceType::Volume, &i.volume_tags))
                .set_user_data(i.user_data_b64())
                .client_token(token);
            let req = if i.public_address {
                req.security_group_ids(sg)
                    .set_subnet_id(self.subnet.clone())
            } else {
                req.network_interfaces(
                    ec2t::InstanceNetworkInterfaceSpecification::builder()
                        .device_index(0)
                        .associate_public_ip_address(false)
                        .groups(sg)
                        .set_subnet_id(self.subnet.clone())
                        .build(),
                )
            };
            match req.send().await {
                Ok(out) => break out,
                // A new instance profile takes a few seconds to be usable by EC2.
                Err(e)
                    if attempt < 8
                        && e.code() == Some("InvalidParameterValue")
                        && e.message()
                            .is_some_and(|m| m.contains("iamInstanceProfile")) =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(2 * attempt)).await;
                }
                Err(e) => return Err(api_error(step, Self::API, e)),
            }
        };
        Ok(out
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect())
    }
}

/// `ec2:CreateLaunchTemplate`: what every instance of a fleet launches with.
#[derive(Debug, Clone)]
pub struct CreateLaunchTemplate {
    pub name: String,
    pub instance: InstanceSpec,
    pub tags: Tags,
    pub client_token: Id,
}

impl CreateLaunchTemplate {
    pub const API: &'static str = "ec2:CreateLaunchTemplate";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({
                "LaunchTemplateName": self.name,
                "LaunchTemplateData": self.instance.params(None),
                "TagSpecifications": [{"ResourceType": "launch-template", "Tags": tags_json(&self.tags)}],
                "ClientToken": self.client_token.render(),
            }),
        )
    }

    /// Creates the template; its id.
    pub async fn send(&self, c: &Clients, step: &str) -> Result<String, AwsError> {
        let i = &self.instance;
        let image = i.image.require(step)?;
        let sg = i.security_group.require(step)?;
        let token = self.client_token.require(step)?;
        let tags = |rt: ec2t::ResourceType, tags: &Tags| {
            let mut b = ec2t::LaunchTemplateTagSpecificationRequest::builder().resource_type(rt);
            for (k, v) in tags {
                b = b.tags(ec2t::Tag::builder().key(k).value(v).build());
            }
            b.build()
        };
        let data = ec2t::RequestLaunchTemplateData::builder();
        let data = if i.public_address {
            data.security_group_ids(sg)
        } else {
            data.network_interfaces(
                ec2t::LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .device_index(0)
                    .associate_public_ip_address(false)
                    .groups(sg)
                    .build(),
            )
        };
        let data = data
            .image_id(image)
            .instance_type(ec2t::InstanceType::from(i.instance_type.as_str()))
            .iam_instance_profile(
                ec2t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(&i.instance_profile)
                    .build(),
            )
            .metadata_options(
                ec2t::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(ec2t::LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .http_endpoint(ec2t::LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .instance_metadata_tags(ec2t::LaunchTemplateInstanceMetadataTagsState::Disabled)
                    .build(),
            )
            .tag_specifications(tags(ec2t::ResourceType::Instance, &i.instance_tags))
            .tag_specifications(tags(ec2t::ResourceType::Volume, &i.volume_tags))
            .set_user_data(i.user_data_b64())
            .build();
        let out = c
            .ec2
            .create_launch_template()
            .launch_template_name(&self.name)
            .launch_template_data(data)
            .tag_specifications(ec2_tag_spec(ec2t::ResourceType::LaunchTemplate, &self.tags))
            .client_token(token)
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        out.launch_template()
            .and_then(|t| t.launch_template_id())
            .map(str::to_owned)
            .ok_or_else(|| AwsError::step(step, "CreateLaunchTemplate returned no id"))
    }
}

/// `ec2:CreateSecurityGroup`, in the deploy's VPC. EC2 gives a new group an allow-all
/// egress rule; [`SecurityGroupRules`] takes it away.
#[derive(Debug, Clone)]
pub struct CreateSecurityGroup {
    pub name: String,
    pub description: String,
    pub vpc: String,
    pub tags: Tags,
}

impl CreateSecurityGroup {
    pub const API: &'static str = "ec2:CreateSecurityGroup";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({
                "GroupName": self.name,
                // The EC2 API Reference's name for it (the SDK calls it `description`).
                "GroupDescription": self.description,
                "VpcId": self.vpc,
                "TagSpecifications": [{"ResourceType": "security-group", "Tags": tags_json(&self.tags)}],
            }),
        )
    }

    /// Creates the group; its id.
    pub async fn send(&self, c: &Clients, step: &str) -> Result<String, AwsError> {
        let out = c
            .ec2
            .create_security_group()
            .group_name(&self.name)
            .description(&self.description)
            .vpc_id(&self.vpc)
            .tag_specifications(ec2_tag_spec(ec2t::ResourceType::SecurityGroup, &self.tags))
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        out.group_id()
            .map(str::to_owned)
            .ok_or_else(|| AwsError::step(step, "CreateSecurityGroup returned no id"))
    }
}

/// One security-group rule for one IP range, comparable, so a group's rules can be
/// checked against the wanted ones and a half-made group finished on a rerun.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IpRule {
    pub protocol: String,
    pub from: Option<i32>,
    pub to: Option<i32>,
    pub cidr: String,
}

/// A group's (ingress, egress) rules.
pub type IpRules = (BTreeSet<IpRule>, BTreeSet<IpRule>);

impl IpRule {
    pub fn tcp(port: i32, cidr: &str) -> IpRule {
        IpRule {
            protocol: "tcp".to_owned(),
            from: Some(port),
            to: Some(port),
            cidr: cidr.to_owned(),
        }
    }

    /// EC2's default egress rule of a new group: everything, everywhere.
    pub fn allow_all() -> IpRule {
        IpRule {
            protocol: "-1".to_owned(),
            from: None,
            to: None,
            cidr: "0.0.0.0/0".to_owned(),
        }
    }

    pub fn from_permissions(perms: &[ec2t::IpPermission]) -> BTreeSet<IpRule> {
        let mut out = BTreeSet::new();
        for p in perms {
            let protocol = p.ip_protocol().unwrap_or("-1").to_owned();
            let all = protocol == "-1";
            let rule = |cidr: &str| IpRule {
                protocol: protocol.clone(),
                from: if all { None } else { p.from_port() },
                to: if all { None } else { p.to_port() },
                cidr: cidr.to_owned(),
            };
            out.extend(p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).map(rule));
            // IPv6 ranges, prefix lists and group references are never zoa's: listing
            // them as unwanted makes the rerun remove them.
            out.extend(
                p.ipv6_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ipv6())
                    .map(rule),
            );
        }
        out
    }

    fn is_ipv6(&self) -> bool {
        self.cidr.contains(':')
    }

    fn to_permission(&self, description: Option<&str>) -> ec2t::IpPermission {
        let mut b = ec2t::IpPermission::builder()
            .ip_protocol(&self.protocol)
            .set_from_port(self.from)
            .set_to_port(self.to);
        if self.is_ipv6() {
            b = b.ipv6_ranges(
                ec2t::Ipv6Range::builder()
                    .cidr_ipv6(&self.cidr)
                    .set_description(description.map(str::to_owned))
                    .build(),
            );
        } else {
            b = b.ip_ranges(
                ec2t::IpRange::builder()
                    .cidr_ip(&self.cidr)
                    .set_description(description.map(str::to_owned))
                    .build(),
            );
        }
        b.build()
    }

    fn to_json(&self, description: Option<&str>) -> Value {
        let (list, field) = if self.is_ipv6() {
            ("Ipv6Ranges", "CidrIpv6")
        } else {
            ("IpRanges", "CidrIp")
        };
        let mut range = json!({ field: self.cidr });
        if let Some(d) = description {
            range["Description"] = json!(d);
        }
        let mut p = json!({"IpProtocol": self.protocol, list: [range]});
        if let (Some(f), Some(t)) = (self.from, self.to) {
            p["FromPort"] = json!(f);
            p["ToPort"] = json!(t);
        }
        p
    }
}

/// Which of EC2's four rule calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleCall {
    RevokeEgress,
    AuthorizeEgress,
    RevokeIngress,
    AuthorizeIngress,
}

impl RuleCall {
    pub fn api(self) -> &'static str {
        match self {
            RuleCall::RevokeEgress => "ec2:RevokeSecurityGroupEgress",
            RuleCall::AuthorizeEgress => "ec2:AuthorizeSecurityGroupEgress",
            RuleCall::RevokeIngress => "ec2:RevokeSecurityGroupIngress",
            RuleCall::AuthorizeIngress => "ec2:AuthorizeSecurityGroupIngress",
        }
    }
}

/// `ec2:{Authorize,Revoke}SecurityGroup{Ingress,Egress}`: some rules of one group.
#[derive(Debug, Clone)]
pub struct SecurityGroupRules {
    pub which: RuleCall,
    pub group: Id,
    pub rules: Vec<IpRule>,
    /// Shown on each range (authorize calls only: a revoke matches without it).
    pub description: Option<&'static str>,
}

impl SecurityGroupRules {
    pub fn call(&self) -> Call {
        let perms: Vec<Value> = self
            .rules
            .iter()
            .map(|r| r.to_json(self.description))
            .collect();
        Call::new(
            self.which.api(),
            json!({"GroupId": self.group.render(), "IpPermissions": perms}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<(), AwsError> {
        let group = self.group.require(step)?;
        let perms: Vec<ec2t::IpPermission> = self
            .rules
            .iter()
            .map(|r| r.to_permission(self.description))
            .collect();
        let perms = Some(perms);
        let api = self.which.api();
        let ec2 = &c.ec2;
        match self.which {
            RuleCall::RevokeEgress => ec2
                .revoke_security_group_egress()
                .group_id(group)
                .set_ip_permissions(perms)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api_error(step, api, e)),
            RuleCall::AuthorizeEgress => ec2
                .authorize_security_group_egress()
                .group_id(group)
                .set_ip_permissions(perms)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api_error(step, api, e)),
            RuleCall::RevokeIngress => ec2
                .revoke_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(perms)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api_error(step, api, e)),
            RuleCall::AuthorizeIngress => ec2
                .authorize_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(perms)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api_error(step, api, e)),
        }
    }
}

/// `ec2:TerminateInstances`.
#[derive(Debug, Clone)]
pub struct TerminateInstances {
    pub ids: Vec<String>,
}

impl TerminateInstances {
    pub const API: &'static str = "ec2:TerminateInstances";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"InstanceIds": self.ids}))
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<(), AwsError> {
        c.ec2
            .terminate_instances()
            .set_instance_ids(Some(self.ids.clone()))
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        Ok(())
    }
}

/// `ec2:CreateLaunchTemplateVersion` from the latest version with some data changed,
/// then `ec2:ModifyLaunchTemplate` making it the default (what an Auto Scaling group on
/// `$Latest` or the default launches next). Two calls, one change.
#[derive(Debug, Clone)]
pub struct NewDefaultTemplateVersion {
    pub template: Id,
    pub image: Option<Id>,
    /// The user data; `Pending` shows what will be there once earlier steps ran.
    pub user_data: Option<TemplateUserData>,
}

/// The user data of a new template version.
#[derive(Debug, Clone)]
pub enum TemplateUserData {
    Known(UserDataSpec),
    Pending(String),
}

impl NewDefaultTemplateVersion {
    pub const CREATE_API: &'static str = "ec2:CreateLaunchTemplateVersion";
    pub const MODIFY_API: &'static str = "ec2:ModifyLaunchTemplate";

    pub fn calls(&self) -> Vec<Call> {
        let mut data = json!({});
        if let Some(image) = &self.image {
            data["ImageId"] = json!(image.render());
        }
        match &self.user_data {
            Some(TemplateUserData::Known(ud)) => data["UserData"] = json!(ud.summary()),
            Some(TemplateUserData::Pending(what)) => data["UserData"] = json!(what),
            None => {}
        }
        let template = self.template.render();
        // Both calls take an idempotency token, which the SDK makes when none is given.
        let token = "<a fresh token the AWS SDK makes>";
        vec![
            Call::new(
                Self::CREATE_API,
                json!({"LaunchTemplateId": template, "SourceVersion": "$Latest", "LaunchTemplateData": data, "ClientToken": token}),
            ),
            Call::new(
                Self::MODIFY_API,
                json!({"LaunchTemplateId": template, "SetDefaultVersion": "<new version>", "ClientToken": token}),
            ),
        ]
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<(), AwsError> {
        let template = self.template.require(step)?;
        let mut data = ec2t::RequestLaunchTemplateData::builder();
        if let Some(image) = &self.image {
            data = data.image_id(image.require(step)?);
        }
        match &self.user_data {
            Some(TemplateUserData::Known(ud)) => data = data.user_data(ud.base64()),
            Some(TemplateUserData::Pending(what)) => {
                return Err(AwsError::step(
                    step,
                    format!("{what} not made yet (a bug in zoa: an earlier step did not run)"),
                ))
            }
            None => {}
        }
        let out = c
            .ec2
            .create_launch_template_version()
            .launch_template_id(template)
            .source_version("$Latest")
            .launch_template_data(data.build())
            .send()
            .await
            .map_err(|e| api_error(step, Self::CREATE_API, e))?;
        let version = out
            .launch_template_version()
            .and_then(|v| v.version_number())
            .ok_or_else(|| {
                AwsError::step(step, "CreateLaunchTemplateVersion returned no version")
            })?;
        c.ec2
            .modify_launch_template()
            .launch_template_id(template)
            .default_version(version.to_string())
            .send()
            .await
            .map_err(|e| api_error(step, Self::MODIFY_API, e))?;
        Ok(())
    }
}

/// `ec2:DeregisterImage`; an image already gone is no error.
#[derive(Debug, Clone)]
pub struct DeregisterImage {
    pub image: String,
}

impl DeregisterImage {
    pub const API: &'static str = "ec2:DeregisterImage";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"ImageId": self.image}))
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let answer = c.ec2.deregister_image().image_id(&self.image).send().await;
        outcome(answer, step, Self::API, |code| {
            code.starts_with("InvalidAMIID")
        })
    }
}

/// `ec2:DeleteSnapshot`; a snapshot already gone is no error.
#[derive(Debug, Clone)]
pub struct DeleteSnapshot {
    pub snapshot: String,
}

impl DeleteSnapshot {
    pub const API: &'static str = "ec2:DeleteSnapshot";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"SnapshotId": self.snapshot}))
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let answer = c
            .ec2
            .delete_snapshot()
            .snapshot_id(&self.snapshot)
            .send()
            .await;
        outcome(answer, step, Self::API, |code| {
            code == "InvalidSnapshot.NotFound"
        })
    }
}

/// `ec2:DeleteLaunchTemplate`; one already gone is no error.
#[derive(Debug, Clone)]
pub struct DeleteLaunchTemplate {
    pub id: String,
}

impl DeleteLaunchTemplate {
    pub const API: &'static str = "ec2:DeleteLaunchTemplate";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"LaunchTemplateId": self.id}))
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let answer = c
            .ec2
            .delete_launch_template()
            .launch_template_id(&self.id)
            .send()
            .await;
        outcome(answer, step, Self::API, |code| code.contains("NotFound"))
    }
}

/// `ec2:DeleteSecurityGroup`. Network interfaces of just-terminated instances linger for
/// a while, so a group still in use is tried again until `wait` runs out.
#[derive(Debug, Clone)]
pub struct DeleteSecurityGroup {
    pub id: String,
}

impl DeleteSecurityGroup {
    pub const API: &'static str = "ec2:DeleteSecurityGroup";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"GroupId": self.id}))
    }

    pub async fn send(&self, c: &Clients, step: &str, wait: Duration) -> Result<Outcome, AwsError> {
        let started = std::time::Instant::now();
        loop {
            match c
                .ec2
                .delete_security_group()
                .group_id(&self.id)
                .send()
                .await
            {
                Ok(_) => return Ok(Outcome::Done),
                Err(e) if e.code() == Some("InvalidGroup.NotFound") => {
                    return Ok(Outcome::AlreadyThere)
                }
                Err(e) if e.code() == Some("DependencyViolation") && started.elapsed() < wait => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Err(e) => return Err(api_error(step, Self::API, e)),
            }
        }
    }
}

/// `ec2:CreateVpcEndpoint`: an interface endpoint for one service, private DNS on (so
/// the service's usual name resolves to it inside the VPC), behind its own group.
#[derive(Debug, Clone)]
pub struct CreateVpcEndpoint {
    pub vpc: String,
    /// `com.amazonaws.REGION.kms`
    pub service: String,
    /// One subnet per Availability Zone (an interface endpoint takes no more).
    pub subnets: Vec<String>,
    pub security_group: Id,
    pub policy: Value,
    pub tags: Tags,
    /// Idempotency: derived from the endpoint's group, so known once it is (a deploy
    /// after `zoa destroy` has a new group, and so a new token).
    pub client_token: Id,
}

impl CreateVpcEndpoint {
    pub const API: &'static str = "ec2:CreateVpcEndpoint";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({
                "VpcEndpointType": "Interface",
                "VpcId": self.vpc,
                "ServiceName": self.service,
                "SubnetIds": self.subnets,
                "SecurityGroupIds": [self.security_group.render()],
                "PrivateDnsEnabled": true,
                "PolicyDocument": self.policy,
                "TagSpecifications": [{"ResourceType": "vpc-endpoint", "Tags": tags_json(&self.tags)}],
                "ClientToken": self.client_token.render(),
            }),
        )
    }

    /// Creates the endpoint; its id.
    pub async fn send(&self, c: &Clients, step: &str) -> Result<String, AwsError> {
        let sg = self.security_group.require(step)?;
        let token = self.client_token.require(step)?;
        super::refuse_placeholders(step, "the endpoint policy", &self.policy)?;
        let out = c
            .ec2
            .create_vpc_endpoint()
            .vpc_endpoint_type(ec2t::VpcEndpointType::Interface)
            .vpc_id(&self.vpc)
            .service_name(&self.service)
            .set_subnet_ids(Some(self.subnets.clone()))
            .security_group_ids(sg)
            .private_dns_enabled(true)
            .policy_document(self.policy.to_string())
            .tag_specifications(ec2_tag_spec(ec2t::ResourceType::VpcEndpoint, &self.tags))
            .client_token(token)
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        out.vpc_endpoint()
            .and_then(|e| e.vpc_endpoint_id())
            .map(str::to_owned)
            .ok_or_else(|| AwsError::step(step, "CreateVpcEndpoint returned no id"))
    }
}

/// `ec2:ModifyVpcEndpoint` of the policy only.
#[derive(Debug, Clone)]
pub struct SetVpcEndpointPolicy {
    pub endpoint: Id,
    pub policy: Value,
}

impl SetVpcEndpointPolicy {
    pub const API: &'static str = "ec2:ModifyVpcEndpoint";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({"VpcEndpointId": self.endpoint.render(), "PolicyDocument": self.policy}),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<(), AwsError> {
        let endpoint = self.endpoint.require(step)?;
        super::refuse_placeholders(step, "the endpoint policy", &self.policy)?;
        c.ec2
            .modify_vpc_endpoint()
            .vpc_endpoint_id(endpoint)
            .policy_document(self.policy.to_string())
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        Ok(())
    }
}

/// `ec2:DeleteVpcEndpoints`; an endpoint already gone is no error (EC2 answers it in
/// the response's `Unsuccessful` list, not as an error).
#[derive(Debug, Clone)]
pub struct DeleteVpcEndpoints {
    pub ids: Vec<String>,
}

impl DeleteVpcEndpoints {
    pub const API: &'static str = "ec2:DeleteVpcEndpoints";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"VpcEndpointIds": self.ids}))
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let out = c
            .ec2
            .delete_vpc_endpoints()
            .set_vpc_endpoint_ids(Some(self.ids.clone()))
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        unsuccessful_items(out.unsuccessful(), step, "DeleteVpcEndpoints")
    }
}

/// `ec2:CreateVpcEndpointServiceConfiguration`: a PrivateLink endpoint service in front
/// of the internal Network Load Balancer. Connections from the allowed principals are
/// accepted without a manual step: the allow-list is the gate.
#[derive(Debug, Clone)]
pub struct CreateEndpointService {
    pub load_balancer: Id,
    pub tags: Tags,
    /// Idempotency: derived from the load balancer, so known once it is.
    pub client_token: Id,
}

/// An endpoint service: its id and the service name consumers connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointService {
    pub id: String,
    pub name: String,
}

impl CreateEndpointService {
    pub const API: &'static str = "ec2:CreateVpcEndpointServiceConfiguration";

    pub fn call(&self) -> Call {
        Call::new(
            Self::API,
            json!({
                "NetworkLoadBalancerArns": [self.load_balancer.render()],
                "AcceptanceRequired": false,
                "TagSpecifications": [{"ResourceType": "vpc-endpoint-service", "Tags": tags_json(&self.tags)}],
                "ClientToken": self.client_token.render(),
            }),
        )
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<EndpointService, AwsError> {
        let out = c
            .ec2
            .create_vpc_endpoint_service_configuration()
            .network_load_balancer_arns(self.load_balancer.require(step)?)
            .acceptance_required(false)
            .tag_specifications(ec2_tag_spec(
                ec2t::ResourceType::VpcEndpointService,
                &self.tags,
            ))
            .client_token(self.client_token.require(step)?)
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        let config = out.service_configuration();
        match (
            config.and_then(|s| s.service_id()),
            config.and_then(|s| s.service_name()),
        ) {
            (Some(id), Some(name)) => Ok(EndpointService {
                id: id.to_owned(),
                name: name.to_owned(),
            }),
            _ => Err(AwsError::step(
                step,
                "CreateVpcEndpointServiceConfiguration returned no service id or name",
            )),
        }
    }
}

/// `ec2:ModifyVpcEndpointServicePermissions`: the principals (accounts, roles) allowed
/// to connect an endpoint to the service.
#[derive(Debug, Clone)]
pub struct AllowEndpointServicePrincipals {
    pub service: Id,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl AllowEndpointServicePrincipals {
    pub const API: &'static str = "ec2:ModifyVpcEndpointServicePermissions";

    pub fn call(&self) -> Call {
        let mut p = json!({"ServiceId": self.service.render()});
        if !self.add.is_empty() {
            p["AddAllowedPrincipals"] = json!(self.add);
        }
        if !self.remove.is_empty() {
            p["RemoveAllowedPrincipals"] = json!(self.remove);
        }
        Call::new(Self::API, p)
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<(), AwsError> {
        let nonempty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        c.ec2
            .modify_vpc_endpoint_service_permissions()
            .service_id(self.service.require(step)?)
            .set_add_allowed_principals(nonempty(&self.add))
            .set_remove_allowed_principals(nonempty(&self.remove))
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        Ok(())
    }
}

/// `ec2:DeleteVpcEndpointServiceConfigurations`; one already gone is no error.
#[derive(Debug, Clone)]
pub struct DeleteEndpointServices {
    pub ids: Vec<String>,
}

impl DeleteEndpointServices {
    pub const API: &'static str = "ec2:DeleteVpcEndpointServiceConfigurations";

    pub fn call(&self) -> Call {
        Call::new(Self::API, json!({"ServiceIds": self.ids}))
    }

    pub async fn send(&self, c: &Clients, step: &str) -> Result<Outcome, AwsError> {
        let out = c
            .ec2
            .delete_vpc_endpoint_service_configurations()
            .set_service_ids(Some(self.ids.clone()))
            .send()
            .await
            .map_err(|e| api_error(step, Self::API, e))?;
        unsuccessful_items(
            out.unsuccessful(),
            step,
            "DeleteVpcEndpointServiceConfigurations",
        )
    }
}

/// The answer of a batch delete that reports failures per item (`Unsuccessful`) instead
/// of as an error: an item already gone is no failure.
fn unsuccessful_items(
    items: &[ec2t::UnsuccessfulItem],
    step: &str,
    operation: &str,
) -> Result<Outcome, AwsError> {
    let failed: Vec<String> = items
        .iter()
        .filter_map(|u| u.error())
        .filter(|e| !e.code().is_some_and(|c| c.contains("NotFound")))
        .map(|e| format!("{}: {}", e.code().unwrap_or("?"), e.message().unwrap_or("")))
        .collect();
    if failed.is_empty() {
        Ok(Outcome::Done)
    } else {
        Err(AwsError::step(
            step,
            format!("{operation} refused: {}", failed.join("; ")),
        ))
    }
}

/// Whether a VPC endpoint's state is one of `names`. EC2 answers in lower case
/// (`deleted`), which the SDK's enum (`Deleted`) does not parse, so compare the text.
pub(crate) fn endpoint_state_in(state: Option<&ec2t::State>, names: &[&str]) -> bool {
    state.is_some_and(|s| names.iter().any(|n| s.as_str().eq_ignore_ascii_case(n)))
}

pub(crate) fn ec2_filter(name: &str, value: &str) -> ec2t::Filter {
    ec2t::Filter::builder().name(name).values(value).build()
}

/// The data of a launch template's latest version (image, user data, ...).
pub(crate) async fn latest_template_data(
    c: &Clients,
    launch_template_id: &str,
    step: &str,
) -> Result<Option<ec2t::ResponseLaunchTemplateData>, AwsError> {
    let out = c
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(launch_template_id)
        .versions("$Latest")
        .send()
        .await
        .map_err(|e| api_error(step, "ec2:DescribeLaunchTemplateVersions", e))?;
    Ok(out
        .launch_template_versions()
        .first()
        .and_then(|v| v.launch_template_data())
        .cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_image_renders_every_parameter() {
        let spec = RegisterImage {
            name: "zoa-x".into(),
            description: "d".into(),
            root_device: "/dev/xvda",
            volumes: vec![Volume {
                device: "/dev/xvda",
                snapshot: Id::Pending("snapshot-id"),
            }],
            uefi_data: Some("QUJD".into()),
            tags: vec![("k".into(), "v".into())],
        };
        let call = spec.call();
        assert_eq!(call.api, "ec2:RegisterImage");
        assert_eq!(call.params["TpmSupport"], "v2.0");
        assert_eq!(call.params["UefiData"], "QUJD");
        assert_eq!(
            call.params["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"],
            "<snapshot-id>"
        );
        assert_eq!(call.params["TagSpecifications"][0]["Tags"][0]["Key"], "k");
    }

    #[test]
    fn rules_render_ipv4_and_ipv6_ranges_under_their_own_names() {
        let spec = SecurityGroupRules {
            which: RuleCall::AuthorizeIngress,
            group: Id::Pending("security-group-id"),
            rules: vec![
                IpRule::tcp(8080, "10.0.0.0/8"),
                IpRule::tcp(8080, "2001:db8::/32"),
            ],
            description: Some("serving port"),
        };
        let call = spec.call();
        assert_eq!(call.api, "ec2:AuthorizeSecurityGroupIngress");
        assert_eq!(call.params["GroupId"], "<security-group-id>");
        let p = &call.params["IpPermissions"];
        assert_eq!(p[0]["IpRanges"][0]["CidrIp"], "10.0.0.0/8");
        assert_eq!(p[1]["Ipv6Ranges"][0]["CidrIpv6"], "2001:db8::/32");
        assert_eq!(p[1]["Ipv6Ranges"][0]["Description"], "serving port");
        assert_eq!(p[1]["FromPort"], 8080);
    }

    #[test]
    fn rules_read_from_ec2_permissions() {
        let perms = vec![
            ec2t::IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(ec2t::IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build(),
            ec2t::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(443)
                .to_port(443)
                .ipv6_ranges(ec2t::Ipv6Range::builder().cidr_ipv6("::/0").build())
                .build(),
        ];
        let rules = IpRule::from_permissions(&perms);
        assert!(rules.contains(&IpRule::allow_all()));
        assert!(rules.contains(&IpRule::tcp(443, "::/0")));
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn a_template_version_shows_both_calls() {
        let spec = NewDefaultTemplateVersion {
            template: Id::Known("lt-1".into()),
            image: Some(Id::Pending("image-id")),
            user_data: None,
        };
        let calls = spec.calls();
        assert_eq!(calls[0].api, "ec2:CreateLaunchTemplateVersion");
        assert_eq!(
            calls[0].params["LaunchTemplateData"]["ImageId"],
            "<image-id>"
        );
        assert_eq!(calls[1].api, "ec2:ModifyLaunchTemplate");
        assert_eq!(calls[1].params["LaunchTemplateId"], "lt-1");
    }
}
