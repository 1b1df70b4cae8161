//! The fuzz targets' bodies, one module per target, each `run(&[u8])`.
//!
//! They live here, not in `fuzz_targets/`, so that two harnesses share them: `cargo fuzz`
//! (each `fuzz_targets/NAME.rs` only hands libFuzzer's input to `NAME::run`) and the main
//! test suite's corpus replay (`integration/fuzz_corpora.rs`), which runs every committed
//! corpus file through the same code on each CI run without a sanitizer build.

pub mod attestation;
pub mod attestation_query;
pub mod build_report;
pub mod cloudtrail;
pub mod deb;
pub mod dhcp;
pub mod elf;
pub mod esl;
pub mod eventlog;
pub mod init_config;
pub mod initramfs;
pub mod lock;
pub mod manifest;
pub mod nitrotpm;
pub mod provenance;
pub mod recipe;
pub mod recipient;
pub mod sealed;
pub mod signature;
pub mod tpm2;
pub mod uefidata;
pub mod uki;
pub mod userdata;

/// Every target: its `cargo fuzz` name, what it parses (the campaign's table), its body.
pub const ALL: &[(&str, &str, fn(&[u8]))] = &[
    ("attestation", "NSM/NitroTPM attestation documents (COSE_Sign1, CBOR): parse, signature check, sign-and-reparse", attestation::run),
    ("attestation_query", "the query of zoa-init's attestation endpoint, from any client", attestation_query::run),
    ("build_report", "`build.json` build reports: parse and write-back round trip", build_report::run),
    ("cloudtrail", "CloudTrail log files and LookupEvents output, and `zoa audit`'s classification", cloudtrail::run),
    ("deb", "Debian packages: ar, control and data tar (xz, gzip, zstd, none), extraction root", deb::run),
    ("dhcp", "DHCP replies (zoa-init) and the lease taken from an ACK", dhcp::run),
    ("elf", "ELF headers and dynamic sections (interpreter, `DT_NEEDED`, rpath)", elf::run),
    ("esl", "EFI signature lists and `.auth` payloads, with write-back round trips", esl::run),
    ("eventlog", "TCG2 binary event logs: parse, replay, render, JSON", eventlog::run),
    ("init_config", "zoa-init's `/etc/zoa/init.json`, with the normalised-form round trip", init_config::run),
    ("initramfs", "newc cpio archives, plain, zstd or gzip", initramfs::run),
    ("lock", "`RECIPE.lock` lock files, with the write-back round trip", lock::run),
    ("manifest", "`release.json` manifests, trusted comments, release logs", manifest::run),
    ("nitrotpm", "guest TPM command streams through the emulated NitroTPM", nitrotpm::run),
    ("provenance", "zoa-init provenance records, with the canonical-form round trip", provenance::run),
    ("recipe", "TOML image recipes, parse and validation", recipe::run),
    ("recipient", "KMS `CiphertextForRecipient` CMS envelopes, opened by zoa-init", recipient::run),
    ("sealed", "`zoa seal` envelopes and `deploy.json` deploy records", sealed::run),
    ("signature", "minisign public keys, signatures and their verification", signature::run),
    ("tpm2", "TPM2 responses, response codes, the NSM's CBOR answer, the attestation exchange", tpm2::run),
    ("uefidata", "AMI `UefiData` blobs, with the write-back round trip", uefidata::run),
    ("uki", "PE/UKI images: headers, sections, `zoa check`, the PCR prediction", uki::run),
    ("userdata", "EC2 user data documents and the sealed envelopes in them (zoa-init)", userdata::run),
];
