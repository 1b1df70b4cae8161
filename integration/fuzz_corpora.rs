//! The fuzz corpora (`fuzz/corpus/<target>/`, seeds from real tools and what the campaign
//! found and minimised) replayed once through their targets' code, shared with `cargo fuzz`
//! (`fuzz/src/targets`): a parser change that panics on, or breaks the round trip of, an
//! input fuzzing has already seen fails CI. A regression gate, not a campaign: no
//! sanitizer, no mutation.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/src/targets/mod.rs"]
mod targets;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// File names (without `.rs`) in one of fuzz/'s directories.
fn stems(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect()
}

#[test]
fn every_target_is_replayed_and_has_a_corpus() {
    let known: BTreeSet<String> = targets::ALL.iter().map(|t| t.name.to_string()).collect();
    for t in targets::ALL {
        // The campaign's table takes this line as it is (one line, no table syntax).
        assert!(
            !t.parses.is_empty() && !t.parses.contains(['|', '\n']),
            "{}: say in one line what it parses",
            t.name
        );
    }
    assert_eq!(
        stems(&fuzz_dir().join("fuzz_targets")),
        known,
        "fuzz/fuzz_targets and fuzz/src/targets/mod.rs's ALL list different targets"
    );
    assert_eq!(
        stems(&fuzz_dir().join("corpus")),
        known,
        "every target has a committed corpus directory (fuzz/seeds), and no other is there"
    );
}

#[test]
fn committed_corpora_replay_without_a_failure() {
    let mut failures = Vec::new();
    let mut replayed = 0usize;
    for target in targets::ALL {
        let (name, run) = (target.name, target.run);
        let dir = fuzz_dir().join("corpus").join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // named by the test above
        };
        let mut files: Vec<PathBuf> = entries.map(|e| e.expect("corpus entry").path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(file.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus input(s) failed their target (the panics are printed above; reproduce \
         one with `cargo fuzz run TARGET FILE` in fuzz/):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(replayed > 0, "no corpus input was replayed");
}
