//! How commands print data: JSON on stdout, pretty-printed, one trailing newline.

use anyhow::Result;

/// Prints `value` as pretty JSON (two-space indent) and a newline on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
