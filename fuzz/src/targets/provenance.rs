//! zoa-init provenance (`zoa-init.provenance.json`, and `init.provenance` in any build.json
//! a diff or verify reads): refused cleanly or parsed; what parses re-serialises to a
//! document that parses to the same value, and compares equal to itself.
use zoa::init_build::provenance::{changes, Provenance};

pub fn run(data: &[u8]) {
    let Ok(p) = Provenance::parse("fuzz", data) else {
        return;
    };
    let again = Provenance::parse("fuzz", &p.to_json()).expect("canonical form parses");
    assert_eq!(again, p);
    assert!(changes(&p, &again).is_empty());
}
