//! `zoa check`: the shell-free policy alone, on a recipe (before building) or on a built
//! UKI (its `.initrd` and `.cmdline`, read back from the PE file).

use std::path::Path;

use super::policy::{self, PolicyReport};
use super::{compose, fetch_all, scratch_dir, BuildError, FetchSettings};
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::uefi::file::ImageFile;
use crate::uefi::pe::PeLayout;

/// Largest `.cmdline` accepted (the kernel's own limit on x86 is 2 KiB; stay generous).
const MAX_CMDLINE_BYTES: u64 = 64 * 1024;

/// True when the file starts like a PE image ("MZ").
pub fn looks_like_pe(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| &magic == b"MZ")
        .unwrap_or(false)
}

/// Checks a recipe: fetches its inputs, composes the tree (nothing is written) and runs
/// the policy with the recipe's exceptions.
pub fn check_recipe(
    recipe: &Recipe,
    settings: &FetchSettings,
    init: Option<&Path>,
    progress: &Progress,
) -> Result<PolicyReport, BuildError> {
    let inputs = fetch_all(recipe, settings, progress)?;
    let work = scratch_dir("zoa-check-")?;
    let composed = compose::compose(recipe, &inputs, work.path(), init, progress)?;
    Ok(composed.policy)
}

/// Checks a built UKI: every file of its initramfs and its command line. There are no
/// exceptions here: a UKI carries no recipe, so every finding is reported.
pub fn check_uki(path: &Path) -> Result<PolicyReport, BuildError> {
    let uki = ImageFile::open(path).map_err(|e| BuildError::Output {
        path: path.to_owned(),
        message: format!("cannot read: {e}"),
    })?;
    let layout = PeLayout::read(&uki).map_err(crate::uefi::uki::UkiError::from)?;
    let cmdline = layout
        .read_section(&uki, ".cmdline", MAX_CMDLINE_BYTES)
        .map_err(crate::uefi::uki::UkiError::from)?
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches(['\0', '\n'])
                .to_owned()
        })
        .unwrap_or_default();
    let initrd = layout
        .section_reader(&uki, ".initrd")
        .ok_or_else(|| BuildError::Output {
            path: path.to_owned(),
            message: "has no .initrd section: not a UKI built for zoa".into(),
        })?;
    let spill = scratch_dir("zoa-check-")?;
    let tree = super::initramfs::read_archive(initrd, spill.path())?;
    let report = policy::check(&tree, &cmdline, &[]).map_err(|e| BuildError::Output {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(report)
}
