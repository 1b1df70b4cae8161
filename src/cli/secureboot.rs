//! `zoa keygen --secure-boot` and `zoa sign-uki`: UEFI Secure Boot keys and Authenticode
//! signatures.

use super::exit::ExitStatus;
use anyhow::Result;

use super::args::{KeygenArgs, SignUkiArgs};
use super::output::print_json;

/// `zoa keygen --secure-boot`: PK, KEK and db keys with their certificates.
pub fn keygen(args: &KeygenArgs, quiet: bool) -> Result<ExitStatus> {
    let keys = zoa::secureboot::keys::keygen_secure_boot(&args.out, &args.name, args.force)?;
    if args.json {
        print_json(&keys)?;
    } else if !quiet {
        for k in &keys.keys {
            println!(
                "wrote {}, {} and {} ({})",
                k.key.display(),
                k.cert.display(),
                k.cer.display(),
                k.subject
            );
        }
    }
    Ok(ExitStatus::OK)
}

pub fn sign_uki(args: &SignUkiArgs, quiet: bool) -> Result<ExitStatus> {
    // clap requires one of --out and --in-place.
    let output = args.out.as_deref().unwrap_or(&args.uki);
    let signed = zoa::secureboot::sign::sign_pe_files(
        &args.uki,
        output,
        &args.key,
        &args.cert,
        &args.chain,
    )?;
    if args.json {
        print_json(&signed)?;
    } else if !quiet {
        println!(
            "signed {} ({}; Authenticode sha256 {})",
            signed.output.display(),
            signed.signer,
            signed.authenticode_sha256
        );
    }
    Ok(ExitStatus::OK)
}
