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
pub mod recipe_structured;
pub mod recipient;
pub mod sealed;
pub mod signature;
pub mod tpm2;
pub mod uefidata;
pub mod uki;
pub mod userdata;

/// A fuzz target.
pub struct Target {
    /// Its `cargo fuzz` name (`fuzz_targets/NAME.rs`, `corpus/NAME/`).
    pub name: &'static str,
    /// What it parses, for the campaign's table.
    pub parses: &'static str,
    /// Its body.
    pub run: fn(&[u8]),
}

/// Every target.
pub const ALL: &[Target] = &[
    Target {
        name: "attestation",
        parses: "NSM/NitroTPM attestation documents (COSE_Sign1, CBOR): parse, signature check, sign-and-reparse",
        run: attestation::run,
    },
    Target {
        name: "attestation_query",
        parses: "the query of zoa-init's attestation endpoint, from any client",
        run: attestation_query::run,
    },
    Target {
        name: "build_report",
        parses: "`build.json` build reports: parse and write-back round trip",
        run: build_report::run,
    },
    Target {
        name: "cloudtrail",
        parses: "CloudTrail log files and LookupEvents output, and `zoa audit`'s classification",
        run: cloudtrail::run,
    },
    Target {
        name: "deb",
        parses: "Debian packages: ar, control and data tar (xz, gzip, zstd, none), extraction root",
        run: deb::run,
    },
    Target {
        name: "dhcp",
        parses: "DHCP replies (zoa-init) and the lease taken from an ACK",
        run: dhcp::run,
    },
    Target {
        name: "elf",
        parses: "ELF headers and dynamic sections (interpreter, `DT_NEEDED`, rpath)",
        run: elf::run,
    },
    Target {
        name: "esl",
        parses: "EFI signature lists and `.auth` payloads, with write-back round trips",
        run: esl::run,
    },
    Target {
        name: "eventlog",
        parses: "TCG2 binary event logs: parse, replay, render, JSON",
        run: eventlog::run,
    },
    Target {
        name: "init_config",
        parses: "zoa-init's `/etc/zoa/init.json`, with the normalised-form round trip",
        run: init_config::run,
    },
    Target {
        name: "initramfs",
        parses: "newc cpio archives, plain, zstd or gzip",
        run: initramfs::run,
    },
    Target {
        name: "lock",
        parses: "`RECIPE.lock` lock files, with the write-back round trip",
        run: lock::run,
    },
    Target {
        name: "manifest",
        parses: "`release.json` manifests, trusted comments, release logs",
        run: manifest::run,
    },
    Target {
        name: "nitrotpm",
        parses: "guest TPM command streams through the emulated NitroTPM",
        run: nitrotpm::run,
    },
    Target {
        name: "provenance",
        parses: "zoa-init provenance records, with the canonical-form round trip",
        run: provenance::run,
    },
    Target {
        name: "recipe",
        parses: "TOML image recipes, parse and validation",
        run: recipe::run,
    },
    Target {
        name: "recipe_structured",
        parses: "image recipes built by `arbitrary` from hostile fields (validation and write-back)",
        run: recipe_structured::run,
    },
    Target {
        name: "recipient",
        parses: "KMS `CiphertextForRecipient` CMS envelopes, opened by zoa-init",
        run: recipient::run,
    },
    Target {
        name: "sealed",
        parses: "`zoa seal` envelopes and `deploy.json` deploy records",
        run: sealed::run,
    },
    Target {
        name: "signature",
        parses: "minisign public keys, signatures and their verification",
        run: signature::run,
    },
    Target {
        name: "tpm2",
        parses: "TPM2 responses, response codes, the NSM's CBOR answer, the attestation exchange",
        run: tpm2::run,
    },
    Target {
        name: "uefidata",
        parses: "AMI `UefiData` blobs, with the write-back round trip",
        run: uefidata::run,
    },
    Target {
        name: "uki",
        parses: "PE/UKI images: headers, sections, `zoa check`, the PCR prediction",
        run: uki::run,
    },
    Target {
        name: "userdata",
        parses: "EC2 user data documents and the sealed envelopes in them (zoa-init)",
        run: userdata::run,
    },
];
