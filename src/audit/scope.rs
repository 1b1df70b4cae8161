//! What an audit looks at: the resources of the deploys it was given (their key, AMI,
//! snapshots, instances, launch template), or everything when it was given none.

use std::collections::BTreeSet;

use crate::aws::state::DeployState;

/// One deploy's resources, by the identifiers CloudTrail records name them with.
#[derive(Debug, Clone, Default)]
pub struct Deploy {
    pub deployment: String,
    /// The region it was deployed in.
    pub region: String,
    /// The key, as deploy.json names it (ARN, else id), for the live policy check.
    pub key_ref: Option<String>,
    /// The regions its release is signed for; empty: any.
    pub regions: Vec<String>,
    /// Key id, key ARN, alias name.
    pub key: BTreeSet<String>,
    /// The SHA-256 of the key policy zoa last wrote, when recorded.
    pub key_policy_sha256: Option<String>,
    pub images: BTreeSet<String>,
    pub snapshots: BTreeSet<String>,
    /// Instances from deploy.json, and those the records show launched from the AMI or
    /// the launch template (an Auto Scaling group's, or an operator's).
    pub instances: BTreeSet<String>,
    pub launch_templates: BTreeSet<String>,
    /// Volumes the records show attached to the instances.
    pub volumes: BTreeSet<String>,
}

impl Deploy {
    pub fn from_state(state: &DeployState, regions: &[String]) -> Deploy {
        let set = |items: &[&Option<String>]| -> BTreeSet<String> {
            items.iter().filter_map(|i| i.as_ref().cloned()).collect()
        };
        Deploy {
            deployment: state.deployment.clone(),
            region: state.region.clone(),
            key_ref: state.key_arn.clone().or_else(|| state.key_id.clone()),
            regions: regions.to_vec(),
            key: set(&[&state.key_id, &state.key_arn, &state.key_alias]),
            key_policy_sha256: state.key_policy_sha256.clone(),
            images: set(&[&state.image_id]),
            snapshots: set(&[&state.snapshot_id, &state.model_snapshot_id]),
            instances: state.instance_ids.iter().cloned().collect(),
            launch_templates: set(&[&state.launch_template_id]),
            volumes: BTreeSet::new(),
        }
    }
}

/// Which part of a deploy an identifier in a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Key,
    Image,
    Snapshot,
    Instance,
    LaunchTemplate,
    Volume,
}

/// `s` names `id`: the identifier itself, or an ARN ending in `/id` or `:id`
/// (`arn:aws:kms:…:key/ID`, `arn:aws:kms:…:alias/NAME`, `arn:aws:ec2:…:instance/ID`).
fn names(s: &str, id: &str) -> bool {
    s == id
        || (s.len() > id.len()
            && s.ends_with(id)
            && matches!(s.as_bytes()[s.len() - id.len() - 1], b'/' | b':'))
}

impl Deploy {
    fn sets(&self) -> [(Part, &BTreeSet<String>); 6] {
        [
            (Part::Key, &self.key),
            (Part::Image, &self.images),
            (Part::Snapshot, &self.snapshots),
            (Part::Instance, &self.instances),
            (Part::LaunchTemplate, &self.launch_templates),
            (Part::Volume, &self.volumes),
        ]
    }

    /// The parts of this deploy that any of `strings` names.
    pub fn parts_named(&self, strings: &[&str]) -> BTreeSet<Part> {
        let mut out = BTreeSet::new();
        for (part, ids) in self.sets() {
            if ids.iter().any(|id| strings.iter().any(|s| names(s, id))) {
                out.insert(part);
            }
        }
        out
    }

    /// Whether `id` is one of this deploy's `part`.
    pub fn has(&self, part: Part, id: &str) -> bool {
        self.sets()
            .iter()
            .any(|(p, ids)| *p == part && ids.iter().any(|known| names(id, known)))
    }

    pub fn add(&mut self, part: Part, id: &str) {
        let set = match part {
            Part::Key => &mut self.key,
            Part::Image => &mut self.images,
            Part::Snapshot => &mut self.snapshots,
            Part::Instance => &mut self.instances,
            Part::LaunchTemplate => &mut self.launch_templates,
            Part::Volume => &mut self.volumes,
        };
        set.insert(id.to_owned());
    }

    /// Whether `region` is outside the release's allow-list.
    pub fn region_forbidden(&self, region: &str) -> bool {
        !self.regions.is_empty() && !region.is_empty() && !self.regions.iter().any(|r| r == region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_arns_name_a_resource_and_lookalikes_do_not() {
        assert!(names("i-0abc", "i-0abc"));
        assert!(names(
            "arn:aws:ec2:us-east-1:111122223333:instance/i-0abc",
            "i-0abc"
        ));
        assert!(names(
            "arn:aws:kms:us-east-1:111122223333:alias/zoa-demo",
            "alias/zoa-demo"
        ));
        assert!(!names("i-0abcd", "i-0abc"));
        assert!(!names("xi-0abc", "i-0abc"));
        assert!(!names("", "i-0abc"));
    }

    #[test]
    fn a_deploy_record_becomes_its_identifiers() {
        let state = DeployState {
            deployment: "demo".into(),
            key_id: Some("k-1".into()),
            key_arn: Some("arn:aws:kms:us-east-1:111122223333:key/k-1".into()),
            key_alias: Some("alias/zoa-demo".into()),
            image_id: Some("ami-1".into()),
            snapshot_id: Some("snap-1".into()),
            instance_ids: vec!["i-1".into()],
            ..DeployState::default()
        };
        let mut d = Deploy::from_state(&state, &["us-east-1".into()]);
        let parts = d.parts_named(&["arn:aws:kms:us-east-1:111122223333:key/k-1", "snap-1"]);
        assert_eq!(parts, BTreeSet::from([Part::Key, Part::Snapshot]));
        assert!(d.parts_named(&["ami-2", "i-2"]).is_empty());
        d.add(Part::Instance, "i-2");
        assert!(d.has(Part::Instance, "i-2"));
        assert!(d.region_forbidden("eu-west-1"));
        assert!(!d.region_forbidden("us-east-1"));
    }
}
