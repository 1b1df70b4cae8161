//! `zoa verify` and `zoa log verify` read public keys and signatures that anyone may hand
//! them: whatever the text, key parsing, signature parsing and verification must refuse it
//! cleanly and never panic.
//!
//! Input: a mode byte, then a public key file, a NUL, a signature file, a NUL and the
//! signed data (as `minisign -G` and `minisign -S` write them). Mode 0 (mod 3) uses all
//! three; 1 a fixed valid key; 2 a fixed valid key, data and signature with one line (by
//! `mode / 3`) replaced by the signature field's text.
use std::io::Write;

/// A real key pair's public half (a throwaway key made with `minisign -G -W`), so inputs
/// get past the key parser into signature parsing and Ed25519 verification.
const PUBLIC_KEY: &str = "untrusted comment: minisign public key 3E9A6B240D2D13BF
RWS/Ey0NJGuaPvYY/v7aCRpLsisqIshUzqLptqo4dMyGKjDXZZU7RlCK
";

/// A valid signature by that key over `SIGNED_DATA`: replacing one of its lines with
/// fuzzed text reaches checks that random text alone would not (a matching key id with
/// a short trusted-comment signature, say).
const SIGNATURE: [&str; 4] = [
    "untrusted comment: signature from minisign secret key",
    "RUS/Ey0NJGuaPpQ+dO8GNA/Nd5KGx9TzriKJP3oCuo+MApcPZezxrj3oKGthdElzcQoPzknqV6z5hz1QBlXFMdKOv/0d4n8DHQQ=",
    "trusted comment: some comment",
    "fJ6lbdlx1flBp6GOBj1mH5bwEJ2XEdQX4g/tIPRY4UpsXj0T2bGrMyenfenYUIDpy7KorseyinYBICpdWelYCA==",
];
const SIGNED_DATA: &[u8] = b"hello\n";

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut fields = rest.splitn(3, |&b| b == 0);
    let key_text = String::from_utf8_lossy(fields.next().unwrap_or_default());
    let text = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let data = fields.next().unwrap_or_default();
    let (key, signature, data): (&str, String, &[u8]) = match mode % 3 {
        // Everything fuzzed.
        0 => (&key_text, text, data),
        // A valid key, a fuzzed signature and data.
        1 => (PUBLIC_KEY, text, data),
        // A valid key and data, the valid signature with one line replaced.
        _ => {
            let mut lines = SIGNATURE.map(str::to_owned);
            lines[usize::from(mode / 3) % 4] = text;
            (PUBLIC_KEY, lines.join("\n") + "\n", SIGNED_DATA)
        }
    };
    // verify takes a path, as `zoa verify --pubkey PUB` does.
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(key.as_bytes()).is_err() {
        return;
    }
    let _ = zoa::release::keys::verify(file.path(), data, &signature);
}
