//! Secure Boot: the project's own PK/KEK/db keys and Authenticode signatures on UKIs
//! (signing, and verifying as firmware does). The formats they use (PE, ESLs, the AMI
//! `UefiData` variable store) are in [`crate::uefi`].

pub mod keys;
pub mod sign;
