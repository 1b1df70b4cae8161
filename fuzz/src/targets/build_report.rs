//! `build.json` comes with any release a verifier or an auditor is handed (`zoa verify`,
//! `zoa diff`): parsing must refuse malformed JSON and unknown formats cleanly, and a
//! report that parses must write back to bytes that parse and write the same again.
use zoa::image::report::BuildReport;

pub fn run(data: &[u8]) {
    let Ok(report) = BuildReport::parse(data) else {
        return;
    };
    let written = report.to_json().expect("a parsed report serialises");
    let back = BuildReport::parse(&written).expect("the written report parses");
    assert_eq!(
        back.to_json().expect("serialises"),
        written,
        "build.json's written form is not stable"
    );
}
