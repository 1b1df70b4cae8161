//! `zoa keygen`, `zoa sign`, `zoa verify`, `zoa diff` and `zoa log`: signed releases,
//! checked, compared and logged.

use super::exit::ExitStatus;
use anyhow::Result;
use std::path::Path;

use super::args::{DiffArgs, KeygenArgs, LogCommand, SignArgs, VerifyArgs};

use super::inputs::{fetch_settings, load_recipe};
use super::output::print_json;
use zoa::image::BuildOptions;
use zoa::progress::Progress;
use zoa::release::keys::Password;

pub fn keygen(args: &KeygenArgs, quiet: bool) -> Result<ExitStatus> {
    if args.secure_boot {
        return super::secureboot::keygen(args, quiet);
    }
    let password = Password::choose(args.no_password, args.password.password_file.clone());
    let files = zoa::release::keys::keygen(&args.out, &password, args.force)?;
    if args.json {
        print_json(&serde_json::json!({
            "secret_key": files.secret, "public_key": files.public, "key_id": files.key_id
        }))?;
    } else if !quiet {
        println!(
            "wrote {} and {} (key id {})",
            files.secret.display(),
            files.public.display(),
            files.key_id
        );
    }
    Ok(ExitStatus::OK)
}

pub fn sign(args: &SignArgs, quiet: bool) -> Result<ExitStatus> {
    // An unencrypted (CI) key is used as is; an encrypted one asks for its password.
    let password = Password::choose(false, args.password.password_file.clone());
    let regions = args
        .regions
        .as_ref()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    if regions.is_empty() {
        warn_if_regions_dropped(&args.dir);
    }
    let signed = zoa::release::sign(
        &args.dir,
        &args.key,
        &password,
        args.uefi_data.as_deref(),
        &regions,
    )?;
    if args.json {
        print_json(&signed)?;
    } else if !quiet {
        print_signed(&signed);
    }
    Ok(ExitStatus::OK)
}

/// Signing again without `--regions` lifts a residency restriction the release had: say
/// so (the old release.json is only read for this warning, not trusted).
fn warn_if_regions_dropped(dir: &Path) {
    let path = dir.join(zoa::release::manifest::MANIFEST_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    if let Ok(old) = zoa::release::manifest::Manifest::parse(&path.display().to_string(), &bytes) {
        if !old.regions.is_empty() {
            eprintln!(
                "warning: {} allowed only {}; this signature allows every region (give --regions {} to keep them)",
                path.display(),
                old.regions.join(", "),
                old.regions.join(",")
            );
        }
    }
}

fn print_signed(signed: &zoa::release::Signed) {
    println!(
        "signed {} ({})\n       {}",
        signed.manifest.display(),
        signed.trusted_comment,
        signed.signature.display()
    );
    if let Some(blob) = &signed.uefi_data {
        println!(
            "       {} (AMI UefiData; measured with Secure Boot {})",
            blob.display(),
            if signed.secure_boot {
                "on"
            } else {
                "off: it enrolls no PK"
            }
        );
    }
    if !signed.regions.is_empty() {
        println!("       deployable only in {}", signed.regions.join(", "));
    }
}

pub fn verify(args: &VerifyArgs, quiet: bool, progress: Progress) -> Result<ExitStatus> {
    let rebuild = match &args.rebuild {
        Some(path) => Some((
            load_recipe(path)?,
            BuildOptions {
                out_dir: None,
                locked: false,
                fetcher: fetch_settings(&args.inputs),
                init_binary: args.init.clone(),
                sign_with: None,
                progress,
            },
        )),
        None => None,
    };
    let report = zoa::release::verify(
        &args.dir,
        &args.pubkey,
        rebuild.as_ref().map(|(r, o)| (r, o)),
    )?
    .into_report();
    if let Some(w) = &report.warning {
        eprintln!("zoa: warning: {w}");
    }
    if args.json {
        print_json(&report)?;
    } else if !quiet {
        print_verified(&report);
    }
    Ok(ExitStatus::OK)
}

fn print_verified(report: &zoa::release::Verification) {
    println!(
        "verified {} {} (key {}): signature, {} artifacts, {}{}",
        report.name,
        report.version,
        report.key_id,
        report.artifacts_checked.len(),
        report.pcrs_checked.join(" "),
        if report.rebuilt.is_some() {
            ", rebuilt byte for byte"
        } else {
            ""
        }
    );
    if !report.regions.is_empty() {
        println!("deployable only in {}", report.regions.join(", "));
    }
}

pub fn diff(args: &DiffArgs) -> Result<ExitStatus> {
    use zoa::release::diff::{self, Side};
    let report = diff::diff(&Side::detect(&args.a)?, &Side::detect(&args.b)?)?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", report.render_text());
    }
    if args.exit_code && !report.identical {
        return Ok(ExitStatus::DIFFERENT);
    }
    Ok(ExitStatus::OK)
}

pub fn log(cmd: &LogCommand, quiet: bool) -> Result<ExitStatus> {
    match cmd {
        LogCommand::Append { log, dir, pubkey } => append_to_log(log, dir, pubkey, quiet)?,
        LogCommand::Verify { log, pubkey, json } => verify_log(log, pubkey, *json, quiet)?,
    }
    Ok(ExitStatus::OK)
}

fn append_to_log(
    log: &Path,
    dir: &Path,
    pubkeys: &[std::path::PathBuf],
    quiet: bool,
) -> Result<()> {
    let entry = zoa::release::log::append(log, dir, pubkeys)?;
    if !quiet {
        println!(
            "appended {} {} as entry {} of {}",
            entry.name,
            entry.version,
            entry.seq,
            log.display()
        );
    }
    Ok(())
}

fn verify_log(log: &Path, pubkeys: &[std::path::PathBuf], json: bool, quiet: bool) -> Result<()> {
    let summary = zoa::release::log::verify(log, pubkeys)?;
    if json {
        print_json(&summary)?;
    } else if !quiet {
        println!(
            "{}: {} entries, chain and signatures valid (head {})",
            log.display(),
            summary.entries,
            summary.head
        );
        for r in &summary.releases {
            println!(
                "  {:>3}  {} {}  manifest {}  key {}",
                r.seq, r.name, r.version, r.manifest_sha256, r.key_id
            );
        }
    }
    Ok(())
}
