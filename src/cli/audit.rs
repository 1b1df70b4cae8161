//! `zoa audit`: CloudTrail records (files or LookupEvents) against deployments and the
//! signed release log.

use anyhow::Result;

use super::args::AuditArgs;
use super::aws::aws_options;
use super::exit::ExitStatus;
use super::output::print_json;
use zoa::audit::inputs::{deploy_scope, known_releases};
use zoa::audit::{lookup, trail, Audit, Report, Severity};

pub fn audit(args: &AuditArgs) -> Result<ExitStatus> {
    let deploys = args
        .deploys
        .iter()
        .map(|d| deploy_scope(d, &args.pubkey))
        .collect::<Result<Vec<_>, _>>()?;
    let releases = known_releases(&args.log, &args.pubkey)?;
    let audit = Audit {
        deploys,
        releases,
        since: args.since,
        until: args.until,
    };
    let mut live = Vec::new();
    let records = if args.lookup {
        let options = aws_options(&args.aws);
        let mut regions: Vec<String> = audit.deploys.iter().map(|d| d.region.clone()).collect();
        regions.extend(args.lookup_regions.iter().cloned());
        regions.sort();
        regions.dedup();
        let rt = zoa::aws::runtime()?;
        rt.block_on(async {
            live = lookup::live_policy_findings(&options, &audit.deploys).await?;
            lookup::records(&options, &regions, args.since, args.until).await
        })?
    } else {
        let mut records = Vec::new();
        for path in &args.paths {
            for file in trail::log_files(path)? {
                records.extend(trail::read_log(&file)?);
            }
        }
        records
    };
    let mut report = audit.run(records);
    report.add(live);
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.flagged() {
        ExitStatus::FLAGGED
    } else {
        ExitStatus::OK
    })
}

fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let matched = report
        .attested
        .iter()
        .filter(|a| a.release.is_some())
        .count();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{} events read; attested key uses: {} ({matched} of a signed release)",
        report.events,
        report.attested.len()
    );
    for a in &report.attested {
        let _ = writeln!(
            out,
            "  {}  {:<16} {}  {}",
            a.time,
            a.event_name,
            a.module_id,
            a.release.as_deref().unwrap_or("(no signed release)")
        );
    }
    let critical = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Critical)
        .count();
    if report.findings.is_empty() {
        let _ = writeln!(out, "nothing flagged");
        return out;
    }
    let _ = writeln!(
        out,
        "{} findings ({critical} critical, {} warning)",
        report.findings.len(),
        report.findings.len() - critical
    );
    for f in &report.findings {
        let severity = match f.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "warning ",
        };
        let _ = writeln!(
            out,
            "  {severity} {:<18} {}  {}  {}",
            f.kind.as_str(),
            f.time,
            f.region,
            f.detail
        );
        let _ = writeln!(
            out,
            "           by {}{}",
            f.principal.as_deref().unwrap_or("(no principal)"),
            f.event_id
                .as_deref()
                .map(|id| format!(", event {id}"))
                .unwrap_or_default()
        );
    }
    out
}
