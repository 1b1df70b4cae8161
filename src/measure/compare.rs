//! Comparing a prediction with a real TCG2 event log, event by event.

use super::eventlog::{EventLog, LogEvent, TPM_ALG_SHA256, TPM_ALG_SHA384};
use super::types::{Bank, Measurements, Pcr, PredictedEvent};

/// How one predicted PCR compares with the log.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct PcrAgreement {
    pub pcr: Pcr,
    pub events: usize,
}

/// The first difference between prediction and log.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("event log disagrees: PCR{pcr} event {position}: {explanation}")]
pub struct Mismatch {
    pub pcr: Pcr,
    /// 1-based position among this PCR's events.
    pub position: usize,
    pub explanation: String,
}

fn short(hex: &str) -> String {
    format!("{}…", &hex[..hex.len().min(16)])
}

fn describe_log(e: &LogEvent) -> String {
    format!(
        "log event #{} at byte {} ({} {})",
        e.index,
        e.offset,
        e.type_name(),
        e.describe()
    )
}

fn compare_one(
    pcr: Pcr,
    position: usize,
    p: &PredictedEvent,
    l: &LogEvent,
) -> Result<(), Mismatch> {
    let mismatch = |explanation: String| Mismatch {
        pcr,
        position,
        explanation,
    };
    if l.type_name() != p.event_type {
        return Err(mismatch(format!(
            "predicted {} ({}), but the {} has another type",
            p.event_type,
            p.what,
            describe_log(l)
        )));
    }
    for bank in Bank::ALL {
        let alg = match bank {
            Bank::Sha256 => TPM_ALG_SHA256,
            Bank::Sha384 => TPM_ALG_SHA384,
        };
        let Some(actual) = l.digest(alg) else {
            continue;
        };
        let actual = hex::encode(actual);
        let predicted = p.digests.get(bank);
        if actual != predicted {
            return Err(mismatch(format!(
                "{} {}: predicted {} {}, the {} has {}",
                p.event_type,
                p.what,
                bank,
                short(predicted),
                describe_log(l),
                short(&actual)
            )));
        }
    }
    Ok(())
}

/// Compares every predicted PCR's events with the log's events for that PCR, in order.
/// Returns the per-PCR agreement, or the first event that differs.
pub fn compare(m: &Measurements, log: &EventLog) -> Result<Vec<PcrAgreement>, Mismatch> {
    let mut out = Vec::new();
    for &pcr in m.pcrs.keys() {
        let predicted: Vec<&PredictedEvent> = m.events.iter().filter(|e| e.pcr == pcr).collect();
        let logged: Vec<&LogEvent> = log.events_for_pcr(pcr.into()).collect();
        for (i, p) in predicted.iter().enumerate() {
            let Some(l) = logged.get(i) else {
                return Err(Mismatch {
                    pcr,
                    position: i + 1,
                    explanation: format!(
                        "predicted {} ({}), but the log has only {} event(s) for this PCR",
                        p.event_type,
                        p.what,
                        logged.len()
                    ),
                });
            };
            compare_one(pcr, i + 1, p, l)?;
        }
        if let Some(extra) = logged.get(predicted.len()) {
            return Err(Mismatch {
                pcr,
                position: predicted.len() + 1,
                explanation: format!(
                    "the log has an event the prediction lacks: {}",
                    describe_log(extra)
                ),
            });
        }
        out.push(PcrAgreement {
            pcr,
            events: predicted.len(),
        });
    }
    Ok(out)
}
