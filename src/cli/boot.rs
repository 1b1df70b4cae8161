//! `zoa boot`: boot a UKI under QEMU + OVMF + swtpm and show the guest's PCRs against
//! `zoa measure`'s prediction (the comparison itself is [`zoa::boot::BootOutcome::compare_with`]).

use super::exit::ExitStatus;
use anyhow::{Context, Result};

use super::args::BootArgs;

use super::inputs::uki_path;
use super::output::print_json;
use base64::Engine as _;
use zoa::boot::{BootOptions, BootOutcome, PcrComparison};
use zoa::measure::{Bank, Input, MeasureError, MeasureOptions, Measurements, Pcr};
use zoa::release::manifest::UEFI_DATA_FILE;

/// The PCRs `zoa boot --json` reports (all the guest prints, predicted or not).
const JSON_PCRS: std::ops::RangeInclusive<u8> = 0..=12;

pub fn boot(args: &BootArgs, quiet: bool) -> Result<ExitStatus> {
    let opts = BootOptions {
        uki: uki_path(&args.target),
        forwards: args.forwards.clone(),
        extra_disks: args.disks.clone(),
        timeout: args.timeout.map(std::time::Duration::from_secs),
        memory_mib: args.memory,
        cpus: args.cpus,
        echo_console: !args.json && !quiet,
        work_dir: args.work_dir.clone(),
        power_button: None,
        nitrotpm: args.nitrotpm,
        attestation_root: args.attestation_root.clone(),
        secure_boot_vars: args.secure_boot_vars.clone(),
    };
    // The prediction is made first: a UKI zoa cannot predict still boots, but says so.
    let uki = zoa::uefi::file::ImageFile::open(&opts.uki)
        .with_context(|| format!("{}: cannot read", opts.uki.display()))?;
    let prediction = predict(args, &uki);
    let out = zoa::boot::boot_image(&opts, &uki)?;
    let rows = out.compare_with(prediction.as_ref().ok());
    let mismatches: Vec<String> = rows
        .iter()
        .filter(|r| r.differs())
        .map(|r| format!("{} PCR{}", r.bank, r.pcr))
        .collect();
    if args.json {
        print_json(&boot_summary(
            &opts,
            &out,
            &prediction,
            mismatches.is_empty(),
        )?)?;
    } else if !quiet {
        print_pcr_table(&out, &rows, &prediction);
    }
    report_guest_failure(&out);
    if !mismatches.is_empty() {
        eprintln!(
            "zoa: error: booted PCRs differ from the prediction: {}",
            mismatches.join(", ")
        );
        return Ok(ExitStatus::PREDICTION_MISMATCH);
    }
    Ok(if out.powered_off && out.fatal.is_none() {
        ExitStatus::OK
    } else {
        ExitStatus::ERROR
    })
}

/// What the boot should measure. With Secure Boot, PCR7 measures the enrolled keys, which
/// zoa reads only from a UefiData blob (`--uefi-data`, or the release's `uefi-data.bin`):
/// without one, PCR7 is left unpredicted rather than predicted for Secure Boot off.
fn predict(
    args: &BootArgs,
    uki: &zoa::uefi::file::ImageFile,
) -> Result<Measurements, MeasureError> {
    if args.secure_boot_vars.is_none() {
        return zoa::measure::predict(uki, &MeasureOptions::default());
    }
    let release_blob = args
        .target
        .is_dir()
        .then(|| args.target.join(UEFI_DATA_FILE))
        .filter(|p| p.is_file());
    match args.uefi_data.clone().or(release_blob) {
        Some(blob) => zoa::measure::predict(
            uki,
            &MeasureOptions {
                uefi_data: Some(Input::File(blob)),
                ..MeasureOptions::default()
            },
        ),
        None => {
            let mut m = zoa::measure::predict(uki, &MeasureOptions::default())?;
            if let Some(pcr7) = Pcr::new(7) {
                // What was predicted for PCR7 assumed Secure Boot off: none of it stays.
                m.pcrs.remove(&pcr7);
                m.events.retain(|e| e.pcr != pcr7);
                m.secure_boot = true;
                m.unpredicted.insert(
                    pcr7,
                    "the enrolled keys are in --secure-boot-vars, which zoa does not read: give them as --uefi-data".into(),
                );
            }
            Ok(m)
        }
    }
}

/// `zoa boot --json`: the outcome, every PCR the guest printed, and the prediction.
fn boot_summary(
    opts: &BootOptions,
    out: &BootOutcome,
    prediction: &Result<Measurements, MeasureError>,
    no_mismatch: bool,
) -> Result<serde_json::Value> {
    Ok(serde_json::json!({
        "uki": opts.uki,
        "powered_off": out.powered_off,
        "fatal": out.fatal,
        "qemu_exit_code": out.exit_status.code(),
        "elapsed_secs": out.elapsed.as_secs_f64(),
        "pcrs": guest_pcrs_json(out),
        "prediction": match prediction {
            Ok(m) => serde_json::to_value(&m.pcrs)?,
            Err(e) => serde_json::json!({"error": e.to_string()}),
        },
        "matches_prediction": prediction.is_ok() && no_mismatch,
        "eventlog": out.eventlog.as_ref().map(|log| serde_json::json!({
            "size": log.len(),
            "sha256": zoa::digest::sha256_bytes(log),
        })),
        // The emulated NitroTPM's documents (base64), for verifiers; empty otherwise.
        "attestation_documents": out
            .attestation_documents
            .iter()
            .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
            .collect::<Vec<_>>(),
        "console": out.console,
    }))
}

/// PCR index → bank → value, for the PCRs the guest printed.
fn guest_pcrs_json(out: &BootOutcome) -> serde_json::Map<String, serde_json::Value> {
    let mut pcrs = serde_json::Map::new();
    for pcr in JSON_PCRS.filter_map(Pcr::new) {
        let mut banks = serde_json::Map::new();
        for bank in Bank::ALL {
            if let Some(v) = out.pcr(bank, pcr) {
                banks.insert(bank.name().to_owned(), v.into());
            }
        }
        if !banks.is_empty() {
            pcrs.insert(pcr.to_string(), banks.into());
        }
    }
    pcrs
}

fn print_pcr_table(
    out: &BootOutcome,
    rows: &[PcrComparison],
    prediction: &Result<Measurements, MeasureError>,
) {
    println!(
        "\nguest PCRs ({:.1} s), against `zoa measure`:",
        out.elapsed.as_secs_f64()
    );
    for row in rows {
        let value = row
            .booted
            .as_deref()
            .unwrap_or("(not printed by the guest)");
        let verdict = if prediction.is_ok() {
            verdict(row)
        } else {
            String::new()
        };
        println!("  PCR{:<3} {}  {value}  {verdict}", row.pcr, row.bank);
    }
    if let Err(e) = prediction {
        println!("  no prediction: {e}");
    }
}

/// How a booted PCR compares with a prediction, for the table.
fn verdict(row: &PcrComparison) -> String {
    match &row.predicted {
        Some(p) if row.booted.as_ref() == Some(p) => "= predicted".to_owned(),
        Some(p) => format!("!= predicted {p}"),
        None => "(not predicted)".to_owned(),
    }
}

/// A guest whose init failed, or that stopped without powering off, is an error.
fn report_guest_failure(out: &BootOutcome) {
    if let Some(fatal) = &out.fatal {
        eprintln!("zoa: error: the guest's init failed: {fatal}");
    } else if !out.powered_off {
        eprintln!(
            "zoa: error: the guest stopped without powering off (QEMU {}): see the console above",
            out.exit_status
        );
    }
}
