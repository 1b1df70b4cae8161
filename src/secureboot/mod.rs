//! Secure Boot: the project's own PK/KEK/db keys, Authenticode signatures on UKIs, EFI
//! signature lists and authenticated variables, and the AMI `UefiData` variable store.

pub mod esl;
pub mod keys;
pub mod sign;
pub mod uefidata;
