//! The TCG2 event log parser (`zoa eventlog`, `zoa measure --eventlog`) reads logs copied
//! off machines: it must refuse anything malformed cleanly, and whatever it accepts must
//! replay, render and serialise without panicking.

pub fn run(data: &[u8]) {
    if let Ok(log) = zoa::measure::eventlog::parse(data) {
        let _ = log.replay();
        let _ = log.render_text();
        let _ = log.to_json();
    }
}
