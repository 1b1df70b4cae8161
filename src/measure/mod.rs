//! Measuring a UKI: predicting the PCR values firmware and stub will record when it
//! boots, in both SHA-256 and SHA-384 banks, with the events that produce them.

pub mod authority;
pub mod compare;
pub mod eventlog;
pub mod predict;
pub mod types;

pub use predict::{predict, Input, MeasureError, MeasureOptions};
pub use types::{Bank, Digests, Measurements, Pcr, PredictedEvent};

/// The output of AWS `nitro-tpm-pcr-compute`, byte for byte: SHA-384 PCR4, PCR7, PCR12,
/// pretty-printed with two-space indentation, keys in this order, one trailing newline.
pub fn render_nitro(m: &Measurements) -> Result<String, MeasureError> {
    let get = |pcr: Pcr| {
        m.pcr(pcr)
            .map(|d| d.sha384.clone())
            .ok_or_else(|| MeasureError::Refused {
                file: "measurement".into(),
                message: format!(
                    "PCR{pcr} is not predicted ({}); the nitro format needs it",
                    m.unpredicted
                        .get(&pcr)
                        .map(String::as_str)
                        .unwrap_or("unknown reason")
                ),
            })
    };
    let (pcr4, pcr7, pcr12) = (get(Pcr::PCR4)?, get(Pcr::PCR7)?, get(Pcr::PCR12)?);
    // Hand-written so key order and formatting can never drift with a serializer.
    Ok(format!(
        "{{\n  \"Measurements\": {{\n    \"HashAlgorithm\": \"SHA384\",\n    \"PCR4\": \"{pcr4}\",\n    \"PCR7\": \"{pcr7}\",\n    \"PCR12\": \"{pcr12}\"\n  }}\n}}\n"
    ))
}
