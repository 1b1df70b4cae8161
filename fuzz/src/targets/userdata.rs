//! EC2 user data is set by whoever launches the instance and zoa-init reads it from IMDS at
//! boot: the zoa-user-data/1 document and the zoa-sealed/1 envelopes in it must be refused
//! cleanly when malformed, and what is accepted must survive the round trips zoa-init and
//! `zoa deploy` put it through.
//!
//! There is one envelope parser, zoa-init's (`zoa_init::unseal`); `zoa seal` checks each
//! envelope it writes with it.
//!
//! Input: a mode byte, then JSON. Even modes: user data; odd modes: one envelope. Envelopes
//! sealed under the all-zero data key (as seeds) still open after harmless mutations.
use zoa_init::unseal::{Envelope, UnsealError, UserData, USER_DATA_FORMAT};

/// The data key the seed envelopes are sealed under.
const DATA_KEY: [u8; 32] = [0; 32];

pub fn run(data: &[u8]) {
    let Some((&mode, json)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_user_data(json);
    } else {
        check_envelope(json);
    }
}

fn check_user_data(json: &[u8]) {
    let user_data = match UserData::parse(json) {
        Ok(user_data) => user_data,
        Err(e) => return check_error(&e),
    };
    assert_eq!(user_data.format, USER_DATA_FORMAT);
    if let Ok(text) = user_data.to_json() {
        let back = UserData::parse(text.as_bytes()).expect("to_json's output parses");
        assert_eq!(back, user_data, "user data changed in a round trip: {text}");
    }
    // Every name on its own (as zoa-init asks for them, from its config), then all at once.
    let names: Vec<&str> = user_data.secrets.keys().map(String::as_str).collect();
    for name in &names {
        check_envelopes(&user_data, &[name]);
    }
    check_envelopes(&user_data, &names);
    check_envelopes(&user_data, &["not-there"]);
}

fn check_envelopes(user_data: &UserData, names: &[&str]) {
    match user_data.envelopes(names) {
        Ok(envelopes) => {
            let got: Vec<&str> = envelopes.iter().map(Envelope::name).collect();
            assert_eq!(got, names);
        }
        Err(e) => check_error(&e),
    }
}

fn check_envelope(json: &[u8]) {
    let envelope = match Envelope::parse(json) {
        Ok(envelope) => envelope,
        Err(e) => return check_error(&e),
    };

    let name = envelope.name();
    assert!(!name.is_empty());
    assert!((1..=2048).contains(&envelope.key_arn().len()));
    assert!((1..=6144).contains(&envelope.encrypted_data_key().len()));
    let context_len: usize = envelope
        .encryption_context()
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    assert!(context_len <= 8192);

    match &envelope.open(&DATA_KEY) {
        Ok(secret) => {
            assert_eq!(secret.name(), name);
            assert!(secret.expose().len() <= 8 * 1024);
        }
        Err(e) => check_error(e),
    }

    // Into user data (as `zoa deploy --secret` does) and back out (as zoa-init does): the
    // same envelope.
    let mut user_data = UserData::default();
    if user_data.insert(name, json).is_ok() {
        if let Ok(text) = user_data.to_json() {
            let back = UserData::parse(text.as_bytes()).expect("to_json's output parses");
            assert_eq!(back, user_data);
            let envelopes = back
                .envelopes(&[name])
                .expect("the inserted envelope is there");
            assert!(
                envelopes == [envelope.clone()],
                "{envelopes:?} != {envelope:?}"
            );
        }
    }
}

/// Errors become a `zoa-init: fatal: unseal: ...` line. (Not checked for newlines: serde's
/// messages quote unknown keys raw; the console line replaces control characters.)
fn check_error(e: &UnsealError) {
    assert!(!e.to_string().is_empty());
}
