//! `zoa build`, `zoa build-init`, `zoa lock` and `zoa check`: from a recipe to an image,
//! and the shell-free policy on its own.

use super::exit::ExitStatus;
use anyhow::Result;

use super::args::{BuildArgs, BuildInitArgs, CheckArgs, LockArgs};

use super::inputs::{fetch_settings, load_recipe};
use super::output::print_json;
use zoa::image::{self, BuildOptions};
use zoa::progress::Progress;

pub fn build(args: &BuildArgs, quiet: bool, progress: Progress) -> Result<ExitStatus> {
    let recipe = load_recipe(&args.recipe)?;
    let opts = BuildOptions {
        out_dir: args.out.clone(),
        locked: args.locked,
        fetcher: fetch_settings(&args.inputs),
        init_binary: args.init.clone(),
        sign_with: args.sign_with.clone().map(|(key, cert)| image::SignWith {
            key,
            cert,
            chain: args.sign_chain.clone(),
        }),
        progress,
    };
    let built = image::build(&recipe, &opts)?;
    if args.json {
        print_json(&build_summary(&built))?;
    } else if !quiet {
        print_built(&built);
    }
    Ok(ExitStatus::OK)
}

/// `zoa build --json`: where the outputs are, their digests, and the policy outcome.
fn build_summary(built: &image::BuiltImage) -> serde_json::Value {
    let uki = &built.report.outputs[0];
    serde_json::json!({
        "name": built.report.name,
        "version": built.report.version,
        "out_dir": built.out_dir,
        "uki": {"path": built.uki, "sha256": uki.sha256, "size": uki.size},
        "build_json": built.build_json,
        "sbom": built.sbom,
        "init": {
            "sha256": built.report.init.sha256,
            "provenance": built.report.init.provenance.is_some(),
        },
        "policy_exceptions": built.report.policy.exceptions.len(),
    })
}

fn print_built(built: &image::BuiltImage) {
    let uki = &built.report.outputs[0];
    println!(
        "built {} ({} bytes, sha256 {})\n      {}\n      {}",
        built.uki.display(),
        uki.size,
        uki.sha256,
        built.build_json.display(),
        built.sbom.display()
    );
    for e in &built.report.policy.exceptions {
        eprintln!(
            "zoa: policy exception {} {}: {}",
            e.rule,
            e.path,
            e.excepted_because.as_deref().unwrap_or("")
        );
    }
}

pub fn build_init(args: &BuildInitArgs, quiet: bool) -> Result<ExitStatus> {
    use zoa::init_build::{self, InitBuildOptions};
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| args.source.join(init_build::TARGET_DIR));
    let opts = InitBuildOptions {
        source: args.source.clone(),
        out_dir,
        zig: args.zig.clone(),
        verbose: !quiet,
    };
    let ignored = init_build::ignored_environment();
    if !ignored.is_empty() && !quiet {
        eprintln!(
            "zoa build-init: ignoring {} from the environment (zoa-init is built in a cleared environment)",
            ignored.join(", ")
        );
    }
    let built = init_build::build_init(&opts)?;
    if args.json {
        std::io::Write::write_all(&mut std::io::stdout(), &built.provenance.to_json())?;
    } else if !quiet {
        eprintln!(
            "built {} (sha256 {}, rustc {}, zig {}); provenance: {}",
            built.binary.display(),
            built.provenance.binary.sha256,
            built.provenance.rustc.release,
            built.provenance.c_toolchain.version,
            built.provenance_path.display()
        );
    }
    Ok(ExitStatus::OK)
}

pub fn lock(args: &LockArgs, quiet: bool, progress: Progress) -> Result<ExitStatus> {
    let recipe = load_recipe(&args.recipe)?;
    let lock = image::lock(&recipe, &fetch_settings(&args.inputs), &progress)?;
    let path = recipe.lock_path();
    lock.write(&path)?;
    if args.json {
        print_json(&lock)?;
    } else if !quiet {
        println!("wrote {} ({} inputs)", path.display(), lock.inputs.len());
    }
    Ok(ExitStatus::OK)
}

pub fn check(args: &CheckArgs, quiet: bool, progress: Progress) -> Result<ExitStatus> {
    let report = if image::check::looks_like_pe(&args.target) {
        image::check::check_uki(&args.target)?
    } else {
        let recipe = load_recipe(&args.target)?;
        image::check::check_recipe(
            &recipe,
            &fetch_settings(&args.inputs),
            args.init.as_deref(),
            &progress,
        )?
    };
    if args.json {
        print_json(&report)?;
    } else if !quiet {
        print_policy_report(args, &report);
    }
    if report.passed() {
        Ok(ExitStatus::OK)
    } else {
        eprintln!(
            "zoa: error: policy: {} violation(s): {}",
            report.violations.len(),
            report.violation_summary()
        );
        Ok(ExitStatus::POLICY_VIOLATION)
    }
}

fn print_policy_report(args: &CheckArgs, report: &image::policy::PolicyReport) {
    for v in &report.violations {
        println!(
            "violation {} {}: {} ({})",
            v.rule,
            v.path,
            v.detail,
            rule_reason(&v.rule)
        );
    }
    for e in &report.exceptions {
        println!(
            "exception {} {}: {} (reason: {})",
            e.rule,
            e.path,
            e.detail,
            e.excepted_because.as_deref().unwrap_or("")
        );
    }
    if report.passed() {
        println!(
            "{}: shell-free policy passed ({} rules)",
            args.target.display(),
            report.rules.len()
        );
    }
}

/// Why a policy rule exists, for people reading a violation.
fn rule_reason(id: &str) -> &'static str {
    zoa::image::policy::Rule::from_id(id)
        .map(|r| r.reason())
        .unwrap_or("")
}
