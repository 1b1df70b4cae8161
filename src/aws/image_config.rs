//! zoa-init's configuration as the release's UKI carries it (`/etc/zoa/init.json` in the
//! `.initrd`): what a deploy must supply for the image to boot — the model it pins
//! (`[init.model]`: size and SHA-256) and the secrets it unseals (`[init.unseal]`).
//!
//! Read from the verified `uki.efi`, so the pins are the signed ones. The archive is
//! read entry by entry and only up to that file; nothing else is extracted.

use std::io::Read;
use std::path::Path;

use zoa_init::config::Config;

use super::AwsError;
use crate::image::compose::INIT_CONFIG_PATH;
use crate::image::initramfs::decompressing_reader;
use crate::uefi::file::ImageFile;
use crate::uefi::pe::PeLayout;

/// init.json is a few KiB; anything much larger is not one.
const MAX_INIT_CONFIG_BYTES: u64 = 1024 * 1024;

/// zoa-init's configuration in the (verified) UKI, `None` when the image has none.
pub fn init_config(uki: &ImageFile) -> Result<Option<Config>, AwsError> {
    let malformed = |what: &str, e: &dyn std::fmt::Display| {
        AwsError::file(Path::new(uki.name()), format!("{what}: {e}"))
    };
    let layout = PeLayout::read(uki).map_err(|e| malformed("reading the PE", &e))?;
    let Some(initrd) = layout.section_reader(uki, ".initrd") else {
        return Ok(None);
    };
    let mut archive = decompressing_reader(initrd).map_err(|e| malformed(".initrd", &e))?;
    let wanted = INIT_CONFIG_PATH.trim_start_matches('/');
    loop {
        let mut entry =
            cpio::newc::Reader::new(&mut archive).map_err(|e| malformed(".initrd", &e))?;
        if entry.entry().is_trailer() {
            return Ok(None);
        }
        let name = entry
            .entry()
            .name()
            .trim_start_matches("./")
            .trim_start_matches('/');
        if name == wanted {
            let size = u64::from(entry.entry().file_size());
            if size > MAX_INIT_CONFIG_BYTES {
                return Err(malformed(INIT_CONFIG_PATH, &format!("{size} bytes")));
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| malformed(INIT_CONFIG_PATH, &e))?;
            return Config::from_json(&text)
                .map(Some)
                .map_err(|e| malformed(INIT_CONFIG_PATH, &e));
        }
        entry.finish().map_err(|e| malformed(".initrd", &e))?;
    }
}
