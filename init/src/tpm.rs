//! Reading the TPM through sysfs/securityfs and turning it into console lines.
//!
//! Every function here returns messages (without the `zoa-init: ` prefix) so
//! the framing is testable against a fake sysfs tree.

use sha2::{Digest, Sha256};
use std::path::Path;

/// The first TPM's sysfs directory.
pub const SYSFS_TPM0: &str = "/sys/class/tpm/tpm0";

/// The TCG2 binary event log (needs securityfs mounted).
pub const EVENTLOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// PCR banks printed, with their digest sizes in bytes.
pub const BANKS: [(&str, usize); 2] = [("sha256", 32), ("sha384", 48)];

/// PCRs printed: 0 to 12 inclusive.
pub const PCRS: std::ops::RangeInclusive<u32> = 0..=12;

/// Characters of base64 per `eventlog` line (76, as in MIME; a multiple of 4,
/// so every line but the last encodes exactly 57 bytes).
pub const BASE64_LINE: usize = 76;

const BYTES_PER_LINE: usize = BASE64_LINE / 4 * 3;

/// Normalises the text of `/sys/class/tpm/tpm0/pcr-<bank>/<n>` (upper-case
/// hex and a newline) to lower-case hex, checking it is a digest of
/// `digest_len` bytes.
pub fn normalise_pcr_hex(text: &str, digest_len: usize) -> Result<String, String> {
    let hex = text.trim_end_matches(['\n', '\r', ' ', '\t']);
    if hex.len() != digest_len * 2 {
        return Err(format!(
            "expected {} hex digits, got {} characters",
            digest_len * 2,
            hex.len()
        ));
    }
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("not hexadecimal: {hex:?}"));
    }
    Ok(hex.to_ascii_lowercase())
}

/// The `pcr ...` messages for `tpm_dir` (normally [`SYSFS_TPM0`]):
/// `pcr <bank> <n> <hex>` for each bank and PCR, or `pcr unavailable: <reason>`
/// once when there is no TPM, or once per bank whose files cannot be read
/// (the rest of that bank is skipped, the other bank is still printed).
pub fn pcr_lines(tpm_dir: &Path) -> Vec<String> {
    if let Err(e) = std::fs::metadata(tpm_dir) {
        return vec![format!(
            "pcr unavailable: no TPM: {}: {e}",
            tpm_dir.display()
        )];
    }
    let mut lines = Vec::new();
    for (bank, digest_len) in BANKS {
        for n in PCRS {
            let path = tpm_dir.join(format!("pcr-{bank}")).join(n.to_string());
            let value = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| normalise_pcr_hex(&text, digest_len));
            match value {
                Ok(hex) => lines.push(format!("pcr {bank} {n} {hex}")),
                Err(e) => {
                    lines.push(format!(
                        "pcr unavailable: {bank} bank: {}: {e}",
                        path.display()
                    ));
                    break;
                }
            }
        }
    }
    lines
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Standard base64 (RFC 4648 §4: `A–Z a–z 0–9 + /`, `=` padding).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (n >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The framed dump of an event log:
/// `eventlog-begin <size>`, then `eventlog <base64>` lines of at most
/// [`BASE64_LINE`] characters (the base64 of the whole log, cut every 76
/// characters), then `eventlog-end <sha256 hex of the raw log>`.
pub fn eventlog_lines(log: &[u8]) -> Vec<String> {
    let mut lines = Vec::with_capacity(log.len() / BYTES_PER_LINE + 3);
    lines.push(format!("eventlog-begin {}", log.len()));
    for chunk in log.chunks(BYTES_PER_LINE) {
        lines.push(format!("eventlog {}", base64(chunk)));
    }
    lines.push(format!("eventlog-end {}", hex(&Sha256::digest(log))));
    lines
}

/// Reads the event log at `path` (normally [`EVENTLOG`]) and frames it, or
/// says `eventlog unavailable: <reason>`.
pub fn eventlog_report(path: &Path) -> Vec<String> {
    match std::fs::read(path) {
        Ok(log) => eventlog_lines(&log),
        Err(e) => vec![format!("eventlog unavailable: {}: {e}", path.display())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_text_is_normalised_to_lowercase() {
        let upper = format!("{}\n", "AB01".repeat(16));
        assert_eq!(normalise_pcr_hex(&upper, 32).unwrap(), "ab01".repeat(16));
        let zeros = format!("{}\n", "0".repeat(96));
        assert_eq!(normalise_pcr_hex(&zeros, 48).unwrap(), "0".repeat(96));
        // Already lower case, no newline: unchanged.
        assert_eq!(
            normalise_pcr_hex(&"f".repeat(64), 32).unwrap(),
            "f".repeat(64)
        );
    }

    #[test]
    fn bad_pcr_text_is_refused() {
        assert!(normalise_pcr_hex("", 32).is_err());
        assert!(normalise_pcr_hex(&"A".repeat(96), 32).is_err());
        assert!(normalise_pcr_hex(&format!("{}G\n", "A".repeat(63)), 32)
            .unwrap_err()
            .contains("not hexadecimal"));
        assert!(normalise_pcr_hex(&format!(" {}", "A".repeat(63)), 32).is_err());
    }

    fn fake_tpm(dir: &Path, banks: &[(&str, usize)]) {
        for (bank, len) in banks {
            let d = dir.join(format!("pcr-{bank}"));
            std::fs::create_dir_all(&d).unwrap();
            for n in PCRS {
                let value = format!("{:02X}", n + 0xA0).repeat(*len);
                std::fs::write(d.join(n.to_string()), format!("{value}\n")).unwrap();
            }
        }
    }

    #[test]
    fn pcr_lines_cover_both_banks() {
        let dir = tempfile::tempdir().unwrap();
        fake_tpm(dir.path(), &BANKS);
        let lines = pcr_lines(dir.path());
        assert_eq!(lines.len(), 26);
        assert_eq!(lines[0], format!("pcr sha256 0 {}", "a0".repeat(32)));
        assert_eq!(lines[12], format!("pcr sha256 12 {}", "ac".repeat(32)));
        assert_eq!(lines[13], format!("pcr sha384 0 {}", "a0".repeat(48)));
        assert_eq!(lines[25], format!("pcr sha384 12 {}", "ac".repeat(48)));
    }

    #[test]
    fn missing_tpm_or_bank_says_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let none = pcr_lines(&dir.path().join("tpm0"));
        assert_eq!(none.len(), 1);
        assert!(none[0].starts_with("pcr unavailable: no TPM: "), "{none:?}");

        fake_tpm(dir.path(), &[("sha256", 32)]);
        let lines = pcr_lines(dir.path());
        assert_eq!(lines.len(), 14);
        assert!(lines[..13].iter().all(|l| l.starts_with("pcr sha256 ")));
        assert!(lines[13].starts_with("pcr unavailable: sha384 bank: "));
        assert!(lines[13].contains("pcr-sha384/0"));
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    /// `base64 -w 76` of the bytes 0..=255 (GNU coreutils).
    const ALL_BYTES_B64: [&str; 5] = [
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4",
        "OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3Bx",
        "cnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmq",
        "q6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj",
        "5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/w==",
    ];

    #[test]
    fn eventlog_framing_matches_known_vector() {
        let log: Vec<u8> = (0..=255u8).collect();
        let lines = eventlog_lines(&log);
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[0], "eventlog-begin 256");
        for (line, expected) in lines[1..6].iter().zip(ALL_BYTES_B64) {
            assert_eq!(line, &format!("eventlog {expected}"));
        }
        assert_eq!(
            lines[6],
            "eventlog-end 40aff2e9d2d8922e47afd4648e6967497158785fbd1da870e7110266bf944880"
        );
        // The body lines are the base64 of the whole log, cut every 76 chars.
        let body: String = lines[1..6]
            .iter()
            .map(|l| l.trim_start_matches("eventlog "))
            .collect();
        assert_eq!(body, base64(&log));
    }

    #[test]
    fn eventlog_framing_edges() {
        assert_eq!(
            eventlog_lines(&[]),
            [
                "eventlog-begin 0",
                "eventlog-end e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ]
        );
        // Exactly one full line: 57 bytes -> 76 characters, no padding.
        let lines = eventlog_lines(&[0u8; 57]);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].len(), "eventlog ".len() + BASE64_LINE);
        let lines = eventlog_lines(&[0u8; 58]);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2], "eventlog AA==");
    }

    #[test]
    fn eventlog_report_reads_or_says_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("binary_bios_measurements");
        let missing = eventlog_report(&path);
        assert_eq!(missing.len(), 1);
        assert!(missing[0].starts_with("eventlog unavailable: "));
        std::fs::write(&path, b"foobar").unwrap();
        let lines = eventlog_report(&path);
        assert_eq!(lines[0], "eventlog-begin 6");
        assert_eq!(lines[1], "eventlog Zm9vYmFy");
    }
}
