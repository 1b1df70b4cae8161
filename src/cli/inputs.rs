//! What several commands read the same way: recipes, input locations, a UKI or the build
//! directory that holds one.

use anyhow::Result;
use std::path::{Path, PathBuf};

use super::args::InputArgs;
use zoa::image::{FetchSettings, UKI_FILE};
use zoa::recipe::Recipe;

/// Where inputs are looked up: `--inputs` directories, then `ZOA_INPUTS`, then the cache.
pub fn fetch_settings(args: &InputArgs) -> FetchSettings {
    let mut inputs_dirs = args.inputs.clone();
    if let Some(env) = std::env::var_os("ZOA_INPUTS") {
        inputs_dirs.extend(std::env::split_paths(&env).filter(|p| !p.as_os_str().is_empty()));
    }
    FetchSettings {
        cache_dir: args
            .cache
            .clone()
            .unwrap_or_else(zoa::fetch::default_cache_dir),
        inputs_dirs,
        offline: args.offline,
    }
}

/// Reads and checks a recipe (its errors name the file and field).
pub fn load_recipe(path: &Path) -> Result<Recipe> {
    Ok(Recipe::load(path)?)
}

/// A build directory stands for its uki.efi.
pub fn uki_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join(UKI_FILE)
    } else {
        p.to_owned()
    }
}
