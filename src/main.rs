//! The `zoa` command line: parses arguments with clap and calls the library.

mod aws_cmd;
mod cli;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use std::path::Path;
use std::process::ExitCode;

use cli::{
    BootArgs, BuildArgs, BuildInitArgs, CheckArgs, Cli, Command, DiffArgs, EventlogArgs, InputArgs,
    KeygenArgs, LockArgs, LogCommand, ManpageArgs, MeasureArgs, MeasureFormat, OnOff, SignArgs,
    VerifyArgs,
};
use zoa::image::{self, BuildError, BuildOptions, FetchSettings};
use zoa::progress::Progress;
use zoa::recipe::Recipe;
use zoa::release::keys::Password;
use zoa::release::ReleaseError;

/// Exit status of a policy violation (distinct from other errors, for CI gates).
const EXIT_POLICY: u8 = 3;
/// Exit status when a real event log disagrees with the prediction.
const EXIT_EVENTLOG_MISMATCH: u8 = 4;
/// Exit statuses of `zoa verify` verdicts.
const EXIT_BAD_SIGNATURE: u8 = 10;
const EXIT_ARTIFACT_MISMATCH: u8 = 11;
const EXIT_MEASUREMENT_MISMATCH: u8 = 12;
const EXIT_NOT_REPRODUCIBLE: u8 = 13;
/// Exit status of `zoa diff --exit-code` when the two sides differ.
const EXIT_DIFFERENT: u8 = 5;
/// Largest event log read (real ones are tens of KiB).
const MAX_EVENTLOG_BYTES: u64 = 64 << 20;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(&cli) {
        Ok(code) => code,
        Err(err) => {
            let code = exit_code_of(&err);
            eprintln!("zoa: error: {}", one_line(&err));
            ExitCode::from(code)
        }
    }
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        (false, _) => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp(None)
        .format_target(false)
        .init();
}

/// The error chain on one line: "context: cause: cause".
fn one_line(err: &anyhow::Error) -> String {
    let parts: Vec<String> = err
        .chain()
        .map(|e| e.to_string().replace('\n', " "))
        .collect();
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        // thiserror's transparent wrappers repeat their source; print each message once.
        if !out.iter().any(|o| o.contains(&p)) {
            out.push(p);
        }
    }
    out.join(": ")
}

fn exit_code_of(err: &anyhow::Error) -> u8 {
    if err
        .downcast_ref::<zoa::measure::compare::Mismatch>()
        .is_some()
    {
        return EXIT_EVENTLOG_MISMATCH;
    }
    let release_error = err.downcast_ref::<ReleaseError>().or_else(|| {
        match err.downcast_ref::<zoa::aws::AwsError>() {
            Some(zoa::aws::AwsError::Release(e)) => Some(e),
            _ => None,
        }
    });
    if let Some(e) = release_error {
        match e {
            ReleaseError::BadSignature(_) => return EXIT_BAD_SIGNATURE,
            ReleaseError::ArtifactMismatch(_) => return EXIT_ARTIFACT_MISMATCH,
            ReleaseError::MeasurementMismatch(_) => return EXIT_MEASUREMENT_MISMATCH,
            ReleaseError::NotReproducible(_) => return EXIT_NOT_REPRODUCIBLE,
            _ => {}
        }
    }
    match err.downcast_ref::<BuildError>() {
        Some(BuildError::Policy(_)) => EXIT_POLICY,
        _ => 1,
    }
}

fn read_eventlog(path: &Path) -> Result<zoa::measure::eventlog::EventLog> {
    use std::io::Read;
    // Read through a bounded reader: the live sysfs file reports a length of 0.
    let file = std::fs::File::open(path)
        .with_context(|| format!("{}: cannot read event log", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_EVENTLOG_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: cannot read event log", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_EVENTLOG_BYTES,
        "{}: more than {MAX_EVENTLOG_BYTES} bytes is too large for an event log",
        path.display()
    );
    zoa::measure::eventlog::parse(&bytes).with_context(|| format!("{}", path.display()))
}

fn eventlog(args: &EventlogArgs) -> Result<ExitCode> {
    let log = read_eventlog(&args.file)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&log.to_json())?);
    } else {
        print!("{}", log.render_text());
    }
    Ok(ExitCode::SUCCESS)
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let progress = Progress::new(!cli.quiet);
    match &cli.command {
        Command::Build(args) => build(args, cli.quiet, progress),
        Command::BuildInit(args) => build_init(args, cli.quiet),
        Command::Lock(args) => lock(args, cli.quiet, progress),
        Command::Check(args) => check(args, cli.quiet, progress),
        Command::Measure(args) => measure(args, cli.quiet),
        Command::Eventlog(args) => eventlog(args),
        Command::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "zoa",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage(args) => manpage(args),
        Command::Boot(args) => boot(args, cli.quiet),
        Command::Keygen(args) => keygen(args, cli.quiet),
        Command::SignUki(args) => sign_uki(args, cli.quiet),
        Command::Sign(args) => sign(args, cli.quiet),
        Command::Verify(args) => verify(args, cli.quiet, progress),
        Command::Diff(args) => diff(args),
        Command::Log(cmd) => release_log(cmd, cli.quiet),
        Command::Deploy(args) => aws_cmd::deploy(args, cli.quiet, progress),
        Command::Rollout(args) => aws_cmd::rollout(args, cli.quiet, progress),
        Command::Destroy(args) => aws_cmd::destroy(args, cli.quiet, progress),
        Command::Policy(args) => aws_cmd::policy(args),
        Command::Seal(args) => aws_cmd::seal(args, cli.quiet),
    }
}

fn fetch_settings(args: &InputArgs) -> FetchSettings {
    let mut inputs_dirs = args.inputs.clone();
    if let Some(env) = std::env::var_os("ZOA_INPUTS") {
        inputs_dirs.extend(std::env::split_paths(&env).filter(|p| !p.as_os_str().is_empty()));
    }
    FetchSettings {
        cache_dir: args
            .cache
            .clone()
            .unwrap_or_else(zoa::fetch::default_cache_dir),
        inputs_dirs,
        offline: args.offline,
    }
}

fn load_recipe(path: &Path) -> Result<Recipe> {
    Ok(Recipe::load(path)?)
}

fn build_init(args: &BuildInitArgs, quiet: bool) -> Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}

fn build(args: &BuildArgs, quiet: bool, progress: Progress) -> Result<ExitCode> {
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
    let uki = &built.report.outputs[0];
    if args.json {
        let summary = serde_json::json!({
            "name": built.report.name,
            "version": built.report.version,
            "out_dir": built.out_dir,
            "uki": {"path": built.uki, "sha256": uki.sha256, "size": uki.size},
            "build_json": built.build_json,
            "sbom": built.sbom,
            "init": {
                "sha256": built.report.init.file.sha256,
                "provenance": built.report.init.provenance.is_some(),
            },
            "policy_exceptions": built.report.policy.exceptions.len(),
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if !quiet {
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
    Ok(ExitCode::SUCCESS)
}

fn lock(args: &LockArgs, quiet: bool, progress: Progress) -> Result<ExitCode> {
    let recipe = load_recipe(&args.recipe)?;
    let lock = image::lock(&recipe, &fetch_settings(&args.inputs), &progress)?;
    let path = recipe.lock_path();
    lock.write(&path)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&lock)?);
    } else if !quiet {
        println!("wrote {} ({} inputs)", path.display(), lock.inputs.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn check(args: &CheckArgs, quiet: bool, progress: Progress) -> Result<ExitCode> {
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
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !quiet {
        for v in &report.violations {
            println!(
                "violation {} {}: {} ({})",
                v.rule,
                v.path,
                v.detail,
                rule_reason(v.rule)
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
    if report.passed() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "zoa: error: policy: {} violation(s): {}",
            report.violations.len(),
            report.violation_summary()
        );
        Ok(ExitCode::from(EXIT_POLICY))
    }
}

/// A build directory stands for its uki.efi.
fn uki_path(p: &Path) -> std::path::PathBuf {
    if p.is_dir() {
        p.join("uki.efi")
    } else {
        p.to_owned()
    }
}

fn measure(args: &MeasureArgs, quiet: bool) -> Result<ExitCode> {
    let opts = zoa::measure::MeasureOptions {
        pk: args.pk.clone(),
        kek: args.kek.clone(),
        db: args.db.clone(),
        dbx: args.dbx.clone(),
        uefi_data: args.uefi_data.clone(),
        secure_boot: args.secure_boot.map(|s| s == OnOff::On),
    };
    let uki = uki_path(&args.uki);
    let m = zoa::measure::predict(&uki, &opts)?;
    if let Some(path) = &args.eventlog {
        let log = read_eventlog(path)?;
        let agreed = zoa::measure::compare::compare(&m, &log)
            .map_err(|e| anyhow::Error::new(e).context(format!("{}", path.display())))?;
        if !quiet {
            let parts: Vec<String> = agreed
                .iter()
                .map(|a| format!("PCR{} ({} events)", a.pcr, a.events))
                .collect();
            eprintln!(
                "zoa: event log {} agrees with the prediction: {}",
                path.display(),
                parts.join(", ")
            );
        }
    }
    match args.format {
        MeasureFormat::Nitro => print!("{}", zoa::measure::render_nitro(&m)?),
        MeasureFormat::Zoa => println!("{}", serde_json::to_string_pretty(&m)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn rule_reason(id: &str) -> &'static str {
    zoa::image::policy::Rule::from_id(id)
        .map(|r| r.reason())
        .unwrap_or("")
}

fn manpage(args: &ManpageArgs) -> Result<ExitCode> {
    let cmd = Cli::command();
    match &args.out {
        None => {
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("{}: cannot write man pages", dir.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The PCRs `zoa boot` shows: the ones `zoa measure` predicts.
const BOOT_PCRS: [u32; 4] = [4, 7, 11, 12];

fn boot(args: &BootArgs, quiet: bool) -> Result<ExitCode> {
    let opts = zoa::boot::BootOptions {
        uki: uki_path(&args.target),
        forwards: args.forwards.clone(),
        extra_disks: args.disks.clone(),
        timeout: args.timeout.map(std::time::Duration::from_secs),
        memory_mib: args.memory,
        cpus: args.cpus,
        echo_console: !args.json && !quiet,
        work_dir: args.work_dir.clone(),
        power_button: None,
    };
    // The prediction is made first: a UKI zoa cannot predict still boots, but says so.
    let prediction = zoa::measure::predict(&opts.uki, &zoa::measure::MeasureOptions::default());
    let out = zoa::boot::boot(&opts)?;
    let ok = out.powered_off && out.fatal.is_none();
    let mut mismatches = Vec::new();
    if let Ok(m) = &prediction {
        for pcr in BOOT_PCRS {
            for bank in ["sha256", "sha384"] {
                let predicted = m.pcr(pcr).map(|d| {
                    if bank == "sha256" {
                        &d.sha256
                    } else {
                        &d.sha384
                    }
                });
                if let (Some(p), Some(g)) = (predicted, out.pcr(bank, pcr)) {
                    if p != g {
                        mismatches.push(format!("{bank} PCR{pcr}"));
                    }
                }
            }
        }
    }
    if args.json {
        let mut pcrs = serde_json::Map::new();
        for pcr in 0..=12u32 {
            let mut banks = serde_json::Map::new();
            for bank in ["sha256", "sha384"] {
                if let Some(v) = out.pcr(bank, pcr) {
                    banks.insert(bank.to_owned(), v.into());
                }
            }
            if !banks.is_empty() {
                pcrs.insert(pcr.to_string(), banks.into());
            }
        }
        let summary = serde_json::json!({
            "uki": opts.uki,
            "powered_off": out.powered_off,
            "fatal": out.fatal,
            "qemu_exit_code": out.exit_status.code(),
            "elapsed_secs": out.elapsed.as_secs_f64(),
            "pcrs": pcrs,
            "prediction": match &prediction {
                Ok(m) => serde_json::to_value(&m.pcrs)?,
                Err(e) => serde_json::json!({"error": e.to_string()}),
            },
            "matches_prediction": prediction.is_ok() && mismatches.is_empty(),
            "eventlog": out.eventlog.as_ref().map(|log| serde_json::json!({
                "size": log.len(),
                "sha256": zoa::digest::sha256_bytes(log),
            })),
            "console": out.console,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if !quiet {
        println!(
            "\nguest PCRs ({:.1} s), against `zoa measure`:",
            out.elapsed.as_secs_f64()
        );
        for pcr in BOOT_PCRS {
            for bank in ["sha256", "sha384"] {
                let value = out.pcr(bank, pcr).unwrap_or("(not printed by the guest)");
                let verdict = match &prediction {
                    Ok(m) => match m.pcr(pcr).map(|d| {
                        if bank == "sha256" {
                            &d.sha256
                        } else {
                            &d.sha384
                        }
                    }) {
                        Some(p) if p == value => "= predicted".to_owned(),
                        Some(p) => format!("!= predicted {p}"),
                        None => "(not predicted)".to_owned(),
                    },
                    Err(_) => String::new(),
                };
                println!("  PCR{pcr:<3} {bank}  {value}  {verdict}");
            }
        }
        if let Err(e) = &prediction {
            println!("  no prediction: {e}");
        }
    }
    if let Some(fatal) = &out.fatal {
        eprintln!("zoa: error: the guest's init failed: {fatal}");
    } else if !out.powered_off {
        eprintln!(
            "zoa: error: the guest stopped without powering off (QEMU {}): see the console above",
            out.exit_status
        );
    }
    if !mismatches.is_empty() {
        eprintln!(
            "zoa: error: booted PCRs differ from the prediction: {}",
            mismatches.join(", ")
        );
        return Ok(ExitCode::from(EXIT_EVENTLOG_MISMATCH));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn keygen(args: &KeygenArgs, quiet: bool) -> Result<ExitCode> {
    if args.secure_boot {
        return secure_boot_keygen(args, quiet);
    }
    let password = Password::choose(args.no_password, args.password.password_file.clone());
    let files = zoa::release::keys::keygen(&args.out, &password, args.force)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "secret_key": files.secret, "public_key": files.public, "key_id": files.key_id
            }))?
        );
    } else if !quiet {
        println!(
            "wrote {} and {} (key id {})",
            files.secret.display(),
            files.public.display(),
            files.key_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn secure_boot_keygen(args: &KeygenArgs, quiet: bool) -> Result<ExitCode> {
    let keys = zoa::secureboot::keys::keygen_secure_boot(&args.out, &args.name, args.force)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&keys)?);
    } else if !quiet {
        for k in &keys.keys {
            println!(
                "wrote {}, {} and {} ({})",
                k.key.display(),
                k.cert.display(),
                k.cer.display(),
                k.subject
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sign_uki(args: &cli::SignUkiArgs, quiet: bool) -> Result<ExitCode> {
    // clap requires one of --out and --in-place.
    let output = args.out.as_deref().unwrap_or(&args.uki);
    let signed = zoa::secureboot::sign::sign_pe_files(
        &args.uki,
        output,
        &args.key,
        &args.cert,
        &args.chain,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&signed)?);
    } else if !quiet {
        println!(
            "signed {} ({}; Authenticode sha256 {})",
            signed.output.display(),
            signed.signer,
            signed.authenticode_sha256
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn sign(args: &SignArgs, quiet: bool) -> Result<ExitCode> {
    // An unencrypted (CI) key is used as is; an encrypted one asks for its password.
    let password = Password::choose(false, args.password.password_file.clone());
    let signed = zoa::release::sign(&args.dir, &args.key, &password, args.uefi_data.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&signed)?);
    } else if !quiet {
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
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(args: &VerifyArgs, quiet: bool, progress: Progress) -> Result<ExitCode> {
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
    )?;
    if let Some(w) = &report.warning {
        eprintln!("zoa: warning: {w}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !quiet {
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
    }
    Ok(ExitCode::SUCCESS)
}

fn diff(args: &DiffArgs) -> Result<ExitCode> {
    use zoa::release::diff::{self, Side};
    let report = diff::diff(&Side::detect(&args.a)?, &Side::detect(&args.b)?)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_text());
    }
    if args.exit_code && !report.identical {
        return Ok(ExitCode::from(EXIT_DIFFERENT));
    }
    Ok(ExitCode::SUCCESS)
}

fn release_log(cmd: &LogCommand, quiet: bool) -> Result<ExitCode> {
    match cmd {
        LogCommand::Append { log, dir, pubkey } => {
            let entry = zoa::release::log::append(log, dir, pubkey)?;
            if !quiet {
                println!(
                    "appended {} {} as entry {} of {}",
                    entry.name,
                    entry.version,
                    entry.seq,
                    log.display()
                );
            }
        }
        LogCommand::Verify { log, pubkey, json } => {
            let summary = zoa::release::log::verify(log, pubkey)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
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
        }
    }
    Ok(ExitCode::SUCCESS)
}
