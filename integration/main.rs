//! zoa's end-to-end suite, as one test binary: each module below was a test binary of its
//! own. One binary links zoa and the AWS SDK once instead of two dozen times (minutes of CI
//! link time and gigabytes of disk: CI once ran out of it), and lets libtest keep both
//! cores busy across the whole suite rather than idling at the tail of each binary.
//! Run one part with `cargo test --test integration deploy::`.

mod common;

mod attest;
mod attested_boot;
mod attested_kms;
mod bad_input;
mod boot_cmd;
mod build;
mod deploy;
mod deploy_secureboot;
mod deployer;
mod diff;
mod fuzz_corpora;
mod inference;
mod keys;
mod measure;
mod measure_boot;
mod moto_harness;
mod release;
mod reproducible_init;
mod rollout;
mod seal;
mod sealed;
mod secureboot_boot;
mod secureboot_sign;
mod uefidata;
mod unseal;
