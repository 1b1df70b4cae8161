//! Signature lists and `.auth` payloads come from files users pass (`--pk`, `--db`, ...)
//! and from firmware variable stores: the parsers must refuse anything malformed cleanly,
//! and whatever they accept must write back to exactly the same bytes.
use zoa::uefi::esl;

pub fn run(data: &[u8]) {
    if let Ok(lists) = esl::parse(data) {
        let again = esl::serialize(&lists).expect("parsed lists serialize");
        assert_eq!(again, data, "ESL round trip");
    }
    if let Ok(auth) = esl::parse_auth2(data) {
        let update = esl::VariableUpdate {
            name: "db",
            vendor: esl::EFI_IMAGE_SECURITY_DATABASE,
            attributes: esl::SECURE_BOOT_VARIABLE_ATTRIBUTES,
            timestamp: auth.timestamp,
            data: &auth.data,
        };
        assert_eq!(update.with_signature(&auth.pkcs7), data, "auth2 round trip");
    }
}
