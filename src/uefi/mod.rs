//! The ground floor: the UEFI and PE formats every stage reads and writes. Nothing here
//! knows about recipes, releases or AWS; `image`, `measure`, `secureboot`, `release` and
//! `aws` build on it.
//!
//! - [`file`]: an image opened once, read by offset; private copies of checked bytes.
//! - [`pe`]: reading a PE/COFF image's layout (headers, sections, data directories).
//! - [`uki`]: the Unified Kernel Image: the stub's `.sdmagic`, assembling sections.
//! - [`hashing`]: streaming, parallel hashing of byte ranges in both PCR banks.
//! - [`authenticode`]: the Authenticode digest of a PE image (what firmware measures).
//! - [`esl`]: GUIDs, EFI signature lists and authenticated variables.
//! - [`uefidata`]: the AMI `UefiData` variable store (Secure Boot variables for EC2).
//! - [`disk`]: the GPT disk with one EFI System Partition that boots a UKI.

pub mod authenticode;
pub mod disk;
pub mod esl;
pub mod file;
pub mod hashing;
pub mod pe;
pub mod uefidata;
pub mod uki;
