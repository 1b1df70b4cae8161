//! Host name and kernel modules.

use std::ffi::CStr;
use std::fs::File;

/// `sethostname(2)`.
pub fn set_hostname(name: &str) -> Result<(), String> {
    rustix::system::sethostname(name.as_bytes())
        .map_err(|e| format!("sethostname {name:?}: {}", std::io::Error::from(e)))
}

/// `MODULE_INIT_COMPRESSED_FILE` (linux/module.h): the kernel decompresses the file
/// itself (CONFIG_MODULE_DECOMPRESS), so zoa-init needs no xz/zstd/gzip code.
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

/// `finit_module` flags for a module file: compressed ones (`.ko.xz`, `.ko.zst`,
/// `.ko.gz`) are decompressed by the kernel.
pub fn module_flags(path: &str) -> i32 {
    let compressed = [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| path.ends_with(ext));
    if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    }
}

/// Loads one module with `finit_module(2)`, no parameters.
pub fn load_module(path: &str) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("module {path}: open: {e}"))?;
    const NO_PARAMS: &CStr = c"";
    rustix::system::finit_module(&file, NO_PARAMS, module_flags(path)).map_err(|e| {
        // The kernel answers ENOENT for an unresolved symbol.
        let hint = if e == rustix::io::Errno::NOENT {
            " (unknown symbol? load the modules it depends on first)"
        } else {
            ""
        };
        format!(
            "module {path}: finit_module: {}{hint}",
            std::io::Error::from(e)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_modules_are_flagged() {
        assert_eq!(module_flags("/m/virtio.ko"), 0);
        for p in ["/m/virtio.ko.xz", "/m/virtio.ko.zst", "/m/virtio.ko.gz"] {
            assert_eq!(module_flags(p), MODULE_INIT_COMPRESSED_FILE, "{p}");
        }
    }

    #[test]
    fn missing_module_is_named_in_the_error() {
        let e = load_module("/nonexistent/zoa-test.ko").unwrap_err();
        assert!(
            e.starts_with("module /nonexistent/zoa-test.ko: open: "),
            "{e}"
        );
    }
}
