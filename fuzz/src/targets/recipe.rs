//! The recipe parser and validator must never panic, whatever the bytes.

pub fn run(data: &[u8]) {
    let _ = zoa::recipe::Recipe::parse(std::path::Path::new("fuzz.toml"), data);
}
