//! The recipe parser and validator must never panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = zoa::recipe::Recipe::parse(std::path::Path::new("fuzz.toml"), data);
});
