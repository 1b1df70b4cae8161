//! The AWS regions a release may be deployed in (`zoa sign --regions`): part of the signed
//! `release.json`, so that a residency rule travels with the release instead of living in
//! whoever runs the deploy.

/// Whether `name` is spelled like an AWS region (`us-east-1`, `eu-central-2`,
/// `us-gov-west-1`): lowercase words and a number, joined by `-`. Whether the region
/// exists is AWS's to say; this only refuses what cannot be one.
///
/// zoa-init has the same rule for the KMS host name it builds (`init/src/unseal/imds.rs`);
/// it is not shared because zoa-init's sources are part of every reference release.
pub fn is_region_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
}

/// `R[,R...]` as `zoa sign --regions` takes it: every name checked, duplicates removed,
/// sorted (the signed bytes do not depend on the order they were typed in).
pub fn parse_list(list: &str) -> Result<Vec<String>, String> {
    let mut regions = Vec::new();
    for name in list.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(format!(
                "{list:?}: an empty region name; give R[,R...], e.g. eu-central-1,eu-west-1"
            ));
        }
        if !is_region_name(name) {
            return Err(format!(
                "{name:?} is not an AWS region name (e.g. eu-central-1)"
            ));
        }
        regions.push(name.to_owned());
    }
    regions.sort();
    regions.dedup();
    Ok(regions)
}

/// Whether a release signed for `allowed` (empty: no restriction) may be deployed in
/// `region`.
pub fn allows(allowed: &[String], region: &str) -> bool {
    allowed.is_empty() || allowed.iter().any(|r| r == region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-5",
        ] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "us--east-1",
            "us-east-1a",
            "us_east_1",
            "eu-west-1 ",
            "global",
        ] {
            assert!(!is_region_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn lists_are_checked_sorted_and_deduplicated() {
        assert_eq!(
            parse_list("eu-west-1, eu-central-1,eu-west-1").unwrap(),
            ["eu-central-1", "eu-west-1"]
        );
        let e = parse_list("eu-west-1,,eu-central-1").unwrap_err();
        assert!(e.contains("empty region name"), "{e}");
        let e = parse_list("eu-west-1,Frankfurt").unwrap_err();
        assert!(e.contains("\"Frankfurt\" is not an AWS region name"), "{e}");
        assert!(parse_list("").is_err());
    }

    #[test]
    fn an_empty_list_allows_every_region() {
        assert!(allows(&[], "ap-south-1"));
        let eu = ["eu-central-1".to_owned()];
        assert!(allows(&eu, "eu-central-1"));
        assert!(!allows(&eu, "us-east-1"));
    }
}
