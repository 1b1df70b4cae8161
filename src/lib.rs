//! zoa — zero-operator-access boot images for AI inference on AWS.
//!
//! The library follows the release pipeline, one module per stage:
//! [`recipe`] (what to build, pinned) and [`init_build`] (the image's PID 1, built
//! reproducibly) → [`image`] (the UKI and its `build.json`) →
//! measure → release → deploy. `main.rs` only wires the command line to these calls.
//! The deploy stage ([`aws`], and [`audit`] of what deploys did) is the `aws` feature's
//! (on by default).

pub mod attestation;
#[cfg(feature = "aws")]
pub mod audit;
#[cfg(feature = "aws")]
pub mod aws;
pub mod boot;
pub mod deb;
pub mod digest;
pub mod fetch;
pub mod fsio;
pub mod image;
pub mod init_build;
pub mod measure;
pub mod nitrotpm;
pub mod progress;
pub mod recipe;
pub mod release;
pub mod secureboot;
pub mod uefi;
