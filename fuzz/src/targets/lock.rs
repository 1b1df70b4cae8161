//! Lock files (`RECIPE.lock`) arrive in pull requests beside the recipe: parsing must refuse
//! malformed TOML and unknown versions cleanly, and a lock that parses must write back
//! (`zoa lock`'s canonical form) to text that parses to the same inputs and is stable.
use std::path::Path;

use zoa::recipe::lock::Lock;

pub fn run(data: &[u8]) {
    // Lock::read reads the file into a String: other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.lock");
    let Ok(lock) = Lock::parse(path, text) else {
        return;
    };
    let written = lock.to_toml();
    let back = Lock::parse(path, &written)
        .unwrap_or_else(|e| panic!("the written lock is refused: {e}\n{written}"));
    let mut sorted = lock.clone();
    sorted.inputs.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(back, sorted, "writing changed the lock:\n{written}");
    assert_eq!(back.to_toml(), written, "the written form is not stable");
}
