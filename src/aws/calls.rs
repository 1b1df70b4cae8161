//! AWS calls as typed values: one spec per call, which `--plan` renders ([`RegisterImage::call`]
//! and friends give the `service:Operation` and its parameters as the API documents them)
//! and apply sends ([`RegisterImage::send`]). Both read the same fields, so the plan shows
//! every parameter the call will carry; a value only known once an earlier step ran is an
//! [`Id::Pending`] placeholder, and sending a spec that still holds one is refused.
//!
//! To add a call: a struct here with `call()` and `send()`, a builder for it on the stage
//! that makes it (`deploy`, `rollout`, `destroy`), and both the plan and the apply use
//! that builder.

use serde_json::{json, Value};
use std::time::Duration;

use aws_sdk_ec2::types as ec2t;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::plan::Call;
use super::userdata::UserDataSpec;
use super::{api_error, AwsError, Clients};

/// A resource id: known, or made by an earlier step of the same run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Known(String),
    /// What the plan shows instead (e.g. `snapshot-id`, shown as `<snapshot-id>`).
    Pending(&'static str),
}

impl Id {
    /// The first known value, else the placeholder.
    pub fn first_of(candidates: [Option<&String>; 2], placeholder: &'static str) -> Id {
        candidates
            .into_iter()
            .flatten()
            .next()
            .map(|v| Id::Known(v.clone()))
            .unwrap_or(Id::Pending(placeholder))
    }

    fn render(&self) -> String {
        match self {
            Id::Known(v) => v.clone(),
            Id::Pending(what) => format!("<{what}>"),
        }
    }

    fn require(&self, step: &str) -> Result<&str, AwsError> {
        match self {
            Id::Known(v) => Ok(v),
            Id::Pending(what) => Err(AwsError::step(
                step,
                format!("no {what} recorded (a bug in zoa: an earlier step did not run)"),
            )),
        }
    }
}

/// Tags as `(key, value)` pairs, in order.
pub type Tags = Vec<(String, String)>;

pub(crate) fn tags_json(tags: &Tags) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

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
}

impl InstanceSpec {
    fn metadata_options_json() -> Value {
        json!({"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled", "InstanceMetadataTags": "disabled"})
    }

    /// The parameters RunInstances and a launch template's data share.
    fn params(&self) -> Value {
        let mut p = json!({
            "ImageId": self.image.render(),
            "InstanceType": self.instance_type,
            "IamInstanceProfile": {"Name": self.instance_profile},
            "MetadataOptions": Self::metadata_options_json(),
            "SecurityGroupIds": [self.security_group.render()],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags_json(&self.instance_tags)}, {"ResourceType": "volume", "Tags": tags_json(&self.volume_tags)}],
        });
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
        let mut p = self.instance.params();
        p["MinCount"] = json!(1);
        p["MaxCount"] = json!(1);
        p["SubnetId"] = json!(self.subnet);
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
                .security_group_ids(sg)
                .set_subnet_id(self.subnet.clone())
                .tag_specifications(ec2_tag_spec(ec2t::ResourceType::Instance, &i.instance_tags))
                .tag_specifications(ec2_tag_spec(ec2t::ResourceType::Volume, &i.volume_tags))
                .set_user_data(i.user_data_b64())
                .client_token(token);
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
                "LaunchTemplateData": self.instance.params(),
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
        let data = ec2t::RequestLaunchTemplateData::builder()
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
            .security_group_ids(sg)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_ids_show_as_placeholders_and_cannot_be_sent() {
        let id = Id::first_of([None, None], "snapshot-id");
        assert_eq!(id.render(), "<snapshot-id>");
        assert!(id.require("image").is_err());
        let s = "snap-1".to_owned();
        let id = Id::first_of([None, Some(&s)], "snapshot-id");
        assert_eq!(id.require("image").unwrap(), "snap-1");
    }

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
}
