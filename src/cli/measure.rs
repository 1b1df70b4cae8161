//! `zoa measure` (the PCR prediction, optionally against a real event log) and
//! `zoa eventlog` (print and replay a TCG2 event log).

use super::exit::ExitStatus;
use anyhow::{Context, Result};
use std::path::Path;

use super::args::{EventlogArgs, MeasureArgs, MeasureFormat, OnOff};
use super::inputs::uki_path;
use super::output::print_json;
use zoa::measure::compare::PcrAgreement;
use zoa::measure::eventlog::EventLog;

/// Largest event log read (real ones are tens of KiB).
const MAX_EVENTLOG_BYTES: u64 = 64 << 20;

pub fn measure(args: &MeasureArgs, quiet: bool) -> Result<ExitStatus> {
    let opts = zoa::measure::MeasureOptions {
        pk: args.pk.clone(),
        kek: args.kek.clone(),
        db: args.db.clone(),
        dbx: args.dbx.clone(),
        uefi_data: args.uefi_data.clone().map(zoa::measure::Input::File),
        secure_boot: args.secure_boot.map(|s| s == OnOff::On),
    };
    let uki = uki_path(&args.uki);
    let image = zoa::uefi::file::ImageFile::open(&uki)
        .with_context(|| format!("{}: cannot read", uki.display()))?;
    let m = zoa::measure::predict(&image, &opts)?;
    if let Some(path) = &args.eventlog {
        let log = read_eventlog(path)?;
        let agreed = zoa::measure::compare::compare(&m, &log)
            .map_err(|e| anyhow::Error::new(e).context(format!("{}", path.display())))?;
        if !quiet {
            print_agreement(path, &agreed);
        }
    }
    match args.format {
        MeasureFormat::Nitro => print!("{}", zoa::measure::render_nitro(&m)?),
        MeasureFormat::Zoa => print_json(&m)?,
    }
    Ok(ExitStatus::OK)
}

fn print_agreement(path: &Path, agreed: &[PcrAgreement]) {
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

pub fn eventlog(args: &EventlogArgs) -> Result<ExitStatus> {
    let log = read_eventlog(&args.file)?;
    if args.json {
        print_json(&log.to_json())?;
    } else {
        print!("{}", log.render_text());
    }
    Ok(ExitStatus::OK)
}

fn read_eventlog(path: &Path) -> Result<EventLog> {
    use zoa::fsio::ReadBoundedError;
    // Read through a bounded reader: the live sysfs file reports a length of 0.
    let bytes = match zoa::fsio::read_bounded(path, MAX_EVENTLOG_BYTES) {
        Ok(bytes) => bytes,
        Err(ReadBoundedError::Io(e)) => {
            return Err(
                anyhow::Error::new(e).context(format!("{}: cannot read event log", path.display()))
            )
        }
        Err(ReadBoundedError::TooLarge) => anyhow::bail!(
            "{}: more than {MAX_EVENTLOG_BYTES} bytes is too large for an event log",
            path.display()
        ),
    };
    zoa::measure::eventlog::parse(&bytes).with_context(|| format!("{}", path.display()))
}
