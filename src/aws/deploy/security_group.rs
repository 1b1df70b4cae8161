//! The deployment's security group: the serving port from each `--allow-cidr`, egress
//! HTTPS only, never SSH. A rerun brings a half-made or edited group back to exactly the
//! wanted rules.

use std::collections::BTreeSet;

use super::Deployment;
use crate::aws::calls::ec2::{CreateSecurityGroup, IpRule, IpRules, RuleCall, SecurityGroupRules};
use crate::aws::calls::Id;
use crate::aws::{AwsError, Clients};

/// The changes that turn `have` into `want`, as (revoke, authorize).
fn rule_diff(have: &BTreeSet<IpRule>, want: &BTreeSet<IpRule>) -> (Vec<IpRule>, Vec<IpRule>) {
    (
        have.difference(want).cloned().collect(),
        want.difference(have).cloned().collect(),
    )
}

/// A group's rules as found, or EC2's defaults for a group about to be created.
fn rules_of(group: &Option<String>, found: &IpRules) -> IpRules {
    match group {
        Some(_) => found.clone(),
        None => (BTreeSet::new(), BTreeSet::from([IpRule::allow_all()])),
    }
}

/// The calls that turn a group's `have` into `want`, in a safe order (egress narrowed
/// before anything is opened).
fn changes(
    group: Id,
    have: &IpRules,
    want: &IpRules,
    egress_description: Option<&'static str>,
    ingress_description: Option<&'static str>,
) -> Vec<SecurityGroupRules> {
    let (revoke_in, add_in) = rule_diff(&have.0, &want.0);
    let (revoke_out, add_out) = rule_diff(&have.1, &want.1);
    [
        (RuleCall::RevokeEgress, revoke_out, None),
        (RuleCall::AuthorizeEgress, add_out, egress_description),
        (RuleCall::RevokeIngress, revoke_in, None),
        (RuleCall::AuthorizeIngress, add_in, ingress_description),
    ]
    .into_iter()
    .filter(|(_, rules, _)| !rules.is_empty())
    .map(|(which, rules, description)| SecurityGroupRules {
        which,
        group: group.clone(),
        rules,
        description,
    })
    .collect()
}

impl Deployment {
    pub(super) fn security_group_id(&self) -> Id {
        Id::first_of(
            [
                self.found.security_group.as_ref(),
                self.state.security_group_id.as_ref(),
            ],
            "security-group-id",
        )
    }

    pub(super) fn ingress_summary(&self) -> String {
        let egress = if self.state.private {
            format!(
                "egress HTTPS inside the VPC ({}) only",
                self.network.vpc_cidr
            )
        } else {
            "egress HTTPS only".to_owned()
        };
        match (self.port, self.options.allow_cidr.is_empty()) {
            (_, true) | (None, _) => format!("no ingress; {egress}"),
            (Some(p), false) => format!(
                "tcp/{p} from {}; {egress}",
                self.options.allow_cidr.join(", ")
            ),
        }
    }

    pub(super) fn endpoint_group_id(&self) -> Id {
        Id::first_of(
            [
                self.found.endpoint_group.as_ref(),
                self.state.endpoint_security_group_id.as_ref(),
            ],
            "endpoint-security-group-id",
        )
    }

    pub(super) fn create_endpoint_group_spec(&self) -> CreateSecurityGroup {
        CreateSecurityGroup {
            name: self.names.kms_endpoint_group.clone(),
            description: format!(
                "zoa {}: the KMS endpoint, HTTPS from the VPC only",
                self.deployment
            ),
            vpc: self.network.vpc_id.clone(),
            tags: self.tags(),
        }
    }

    /// The endpoint group's rules: HTTPS in from the VPC, nothing out (the endpoint's
    /// interfaces answer; they never call out).
    pub(super) fn wanted_endpoint_rules(&self) -> IpRules {
        (
            BTreeSet::from([IpRule::tcp(443, &self.network.vpc_cidr)]),
            BTreeSet::new(),
        )
    }

    pub(super) fn current_endpoint_rules(&self) -> IpRules {
        rules_of(&self.found.endpoint_group, &self.found.endpoint_group_rules)
    }

    pub(super) fn endpoint_rule_changes(&self, have: &IpRules) -> Vec<SecurityGroupRules> {
        changes(
            self.endpoint_group_id(),
            have,
            &self.wanted_endpoint_rules(),
            None,
            Some("HTTPS from the VPC"),
        )
    }

    pub(super) fn create_security_group_spec(&self) -> CreateSecurityGroup {
        CreateSecurityGroup {
            name: self.names.security_group.clone(),
            description: format!("zoa {}: serving port only, no SSH", self.deployment),
            vpc: self.network.vpc_id.clone(),
            tags: self.tags(),
        }
    }

    /// The group's rules: the serving port from each --allow-cidr (nothing without one),
    /// and egress HTTPS only. The default allow-all egress goes: the image only needs
    /// HTTPS (KMS, and S3 when models come from there); DNS to the VPC resolver and IMDS
    /// are not subject to security groups. A private deploy's HTTPS stays inside the
    /// VPC, where the KMS endpoint is: nothing outside it is reachable.
    pub(super) fn wanted_rules(&self) -> IpRules {
        let mut ingress: BTreeSet<IpRule> = match self.port {
            Some(p) => self
                .options
                .allow_cidr
                .iter()
                .map(|c| IpRule::tcp(i32::from(p), c))
                .collect(),
            None => BTreeSet::new(),
        };
        // Behind PrivateLink, connections and health checks come from the load
        // balancer's addresses in the VPC.
        if let (true, Some(p)) = (self.privatelink(), self.port) {
            ingress.insert(IpRule::tcp(i32::from(p), &self.network.vpc_cidr));
        }
        let https_to = if self.state.private {
            self.network.vpc_cidr.as_str()
        } else {
            "0.0.0.0/0"
        };
        (ingress, BTreeSet::from([IpRule::tcp(443, https_to)]))
    }

    /// The rules the group has (a group about to be created has EC2's defaults).
    pub(super) fn current_rules(&self) -> IpRules {
        rules_of(&self.found.security_group, &self.found.security_group_rules)
    }

    /// The calls that turn `have` into the wanted rules, in a safe order (egress narrowed
    /// before anything is opened); the plan and the apply both take them from here.
    pub(super) fn rule_changes(&self, have: &IpRules) -> Vec<SecurityGroupRules> {
        changes(
            self.security_group_id(),
            have,
            &self.wanted_rules(),
            Some("HTTPS to AWS APIs"),
            Some("serving port"),
        )
    }

    pub(super) async fn create_security_group(&mut self, c: &Clients) -> Result<(), AwsError> {
        let id = self
            .create_security_group_spec()
            .send(c, "security group")
            .await?;
        self.state.security_group_id = Some(id);
        self.save()
    }

    pub(super) async fn create_endpoint_group(&mut self, c: &Clients) -> Result<(), AwsError> {
        let id = self
            .create_endpoint_group_spec()
            .send(c, "kms endpoint group")
            .await?;
        self.state.endpoint_security_group_id = Some(id);
        self.save()
    }

    pub(super) async fn set_endpoint_group_rules(&mut self, c: &Clients) -> Result<(), AwsError> {
        let step = "kms endpoint group rules";
        let (id, have) = self
            .find_group(c, &self.names.kms_endpoint_group)
            .await?
            .ok_or_else(|| AwsError::step(step, "the endpoint's security group is gone"))?;
        self.found.endpoint_group = Some(id);
        for change in self.endpoint_rule_changes(&have) {
            change.send(c, step).await?;
        }
        Ok(())
    }

    /// Brings the group's rules to the wanted ones, from what it has now.
    pub(super) async fn set_security_group_rules(&mut self, c: &Clients) -> Result<(), AwsError> {
        let step = "security group rules";
        let (id, have) = self
            .find_security_group(c)
            .await?
            .ok_or_else(|| AwsError::step(step, "the security group is gone"))?;
        self.found.security_group = Some(id);
        for change in self.rule_changes(&have) {
            change.send(c, step).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_group_rules_diff_to_exactly_the_wanted_ones() {
        let https = IpRule::tcp(443, "0.0.0.0/0");
        let serve = IpRule::tcp(8080, "203.0.113.0/24");
        // A new group: the default allow-all egress goes, HTTPS comes, the port opens.
        let have: IpRules = (BTreeSet::new(), BTreeSet::from([IpRule::allow_all()]));
        let want: IpRules = (
            BTreeSet::from([serve.clone()]),
            BTreeSet::from([https.clone()]),
        );
        assert_eq!(
            rule_diff(&have.1, &want.1),
            (vec![IpRule::allow_all()], vec![https.clone()])
        );
        assert_eq!(rule_diff(&have.0, &want.0), (vec![], vec![serve.clone()]));
        // A group someone opened to SSH: the extra rule is revoked, nothing else changes.
        let ssh = IpRule::tcp(22, "0.0.0.0/0");
        let have: IpRules = (
            BTreeSet::from([serve.clone(), ssh.clone()]),
            BTreeSet::from([https.clone()]),
        );
        assert_eq!(rule_diff(&have.0, &want.0), (vec![ssh], vec![]));
        assert_eq!(rule_diff(&have.1, &want.1), (vec![], vec![]));
    }
}
