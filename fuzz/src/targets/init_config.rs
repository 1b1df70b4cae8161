//! zoa-init's configuration (`/etc/zoa/init.json`, and `zoa-init --check-config FILE`):
//! parsing and validation must refuse any text cleanly, and a configuration that is accepted
//! must survive its normalised form: `to_json_pretty` parses back to the same configuration
//! and is stable.
use zoa_init::config::Config;

pub fn run(data: &[u8]) {
    // Config::load reads the file into a String: other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_json(text) {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let pretty = config.to_json_pretty();
    let back = Config::from_json(&pretty)
        .unwrap_or_else(|e| panic!("the normalised form is refused: {e}\n{pretty}"));
    assert_eq!(
        back, config,
        "normalising changed the configuration:\n{pretty}"
    );
    assert_eq!(
        back.to_json_pretty(),
        pretty,
        "the normalised form is not stable"
    );
}
