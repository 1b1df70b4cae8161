//! KMS answers an attested Decrypt with `CiphertextForRecipient`, a CMS EnvelopedData that
//! zoa-init opens with its boot key. The answer arrives over TLS from KMS, but whoever relays
//! or forges it must not make zoa-init panic or accept what it should refuse: every envelope
//! is parsed, its algorithms checked, and only then is the RSA key used.
//!
//! The `sealed` target covers the host's `zoa seal` envelopes; this one zoa-init's CMS path.
//! Input: the DER/BER envelope. Seeds made for this target's key get mutations past
//! RSAES-OAEP into AES-CBC and its padding: with the key as key.der and a certificate for it
//! (`openssl req -x509 -new -key key.der -keyform DER -subj /CN=fuzz -out cert.pem`),
//! `openssl cms -encrypt -binary -outform DER -aes256 -recip cert.pem -keyopt
//! rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256 -keyopt rsa_mgf1_md:sha256 -in PLAIN
//! -out corpus/recipient/NAME` (add `-stream -keyid` for KMS's BER shape).
use std::sync::OnceLock;

use base64::Engine;
use zoa_init::unseal::{open_recipient_ciphertext, RecipientKey, MAX_PLAINTEXT_LEN};

/// A throwaway RSA-2048 key (`openssl genpkey`, PKCS#8 DER, base64), fixed so that seed
/// envelopes made for it open. It protects nothing.
const KEY_PKCS8: &str = concat!(
    "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQC3LmZi4Drfbf2nUGRMET636nGeO9tKLPnH17//",
    "4d7EM01mm2vK1MYa1PiXgRjTTqvB3J7wFbFdi++THcYJEv8bg6N3Kcd1rhWJCi6iNTqiXN1+Pg/FGsrn5myHxWci",
    "JAVV3bClwcGwZGgeK9mZSBlURREvzke0mQwFANtcxfwrJx1+SpONWMZfwYZ71jyR2TBbdAQ9/NlLdc44csTg1fDt",
    "xhqeJtcda4mfhprvs/IeyWrFGZj0qLlGeXX/UTKplvdyeNUpZU4nomhIuKhYP5wJZ+ArXAckAW9XNz8LJJz9wgMD",
    "wrZWt49f1P85QwRQo14mpHrb5EU5OyKBdKpshBq3AgMBAAECggEAGHmDm+G3xqiB2TwIL+hR8pgewXSKknjl5V9H",
    "O59oeIXI6VUKFu9M322QdWBTT9BVadvaBIacIb0+WkVXyK3tazYFvjh/z5Jd4Dx9tJXbarFxCpqs2A9XXZqk6j25",
    "ejnz2IrRPPm2sPm0C5ac8TpNNWbbqqvWBXmOveW6aW/ZMcPt7jvcWMqgG4y2IfkxBlXH5AdxSSJYHxiojwmTvajD",
    "svaSy+HYC593iWxwesQGldA27q0l8PLfHCEjaGE8gygemG+8txRO5oc9wn7/e0+IZ4TxXa8Nh8ZIbCW1KQdLXSU3",
    "HZgYu9qj/h9YYYIdYhe3gj6mdmEBUbuvVq/0utz7OQKBgQDd015USlWoWIVoEu+6DwWcAh1ubvwKuHQRRlNN+9Li",
    "n5I6tJSx2H12FSHRDUOPKeBuvYkyi0rAQEL3wLbxcyBFcveQKNMIwDu37uaCLlmOudFVFP1U5A4nKz+R5AE+pgkf",
    "j9e0CtR6uWdts540/pzrCyJb2GJYArn+m+VW0matuwKBgQDTZu0ReAmNWpALitL9btWyhqxprzSJkv5lUKEN9bDf",
    "cDwvSNUMo4/Gn7oXoHLIi/Lzn11a/zn4x9XkOVc6wnTP3Gl8i9TXjzJoEVUd/3AVWWkzn85GJmJQfc4QiKB6MRMm",
    "3eboBkPlLYSBBIrt7yVsFQrgSrtxTwiHqxHN5sK5NQKBgBgeoYUcyA+UAH1+gZ6Df6KlADo/yxwHTmeKdAhot1d4",
    "7ld/xyNHXOz4A0NN4+ivLv4bkc1zI9+fnSh/ReUfFYU3qP990OSEsnmfemTxUT+ZqM9NhvYyDe/oXfMpDZGYUCmk",
    "ZFnpS41El6BwBWXRwZI1FblS3+6d7UdoABneqtd9AoGAYh9M/CW+MUkOwPy/r/hI4iNWVXuIJC8BO19wUb1vSlaa",
    "6Muib8pfSq8Kvjqv7Fvg+alHuJvseYevxM3EqjZl57EDmVaCBUem+tzIqDLPAGnOxbJwGOlqCrhJ9CymZ/DtVcX7",
    "jkiSLQaykPvdzFCLCx69PJwTYqVvbSE/E1X/nd0CgYAqoz6bZEuogIsOSMhotYpaog3o8XZqi+u6a0ufrSS62YVw",
    "oZmqmGImpYWrxwMwOXBKf/sZ7K7ZbkQbHpUG+GOyQy1BRNaDmINXPMI6zBIytez00HqSxtQzr1PjcMTkz+LpQAXx",
    "PDIbBE2hHX5my7Kmn4WAwezvxCgdlMyt0Usq1w==",
);

fn key() -> &'static RecipientKey {
    static KEY: OnceLock<RecipientKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let der = base64::engine::general_purpose::STANDARD
            .decode(KEY_PKCS8)
            .expect("the test key is base64");
        RecipientKey::from_pkcs8_der(&der).expect("the test key is an RSA-2048 PKCS#8 key")
    })
}

pub fn run(envelope: &[u8]) {
    match open_recipient_ciphertext(key(), envelope) {
        Ok(plaintext) => {
            assert!(plaintext.len() <= MAX_PLAINTEXT_LEN);
            // Opening is deterministic (the RSA blinding is random, its result is not).
            assert_eq!(
                open_recipient_ciphertext(key(), envelope).as_deref(),
                Ok(&plaintext[..])
            );
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains(['\n', '\r']), "{text:?}");
        }
    }
}
