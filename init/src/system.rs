//! Host name and kernel modules.

use std::ffi::CStr;
use std::fs::File;

/// `sethostname(2)`.
pub fn set_hostname(name: &str) -> Result<(), String> {
    rustix::system::sethostname(name.as_bytes())
        .map_err(|e| format!("sethostname {name:?}: {}", std::io::Error::from(e)))
}

/// Loads one module with `finit_module(2)`, no parameters, no flags.
pub fn load_module(path: &str) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("module {path}: open: {e}"))?;
    const NO_PARAMS: &CStr = c"";
    rustix::system::finit_module(&file, NO_PARAMS, 0).map_err(|e| {
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
    fn missing_module_is_named_in_the_error() {
        let e = load_module("/nonexistent/zoa-test.ko").unwrap_err();
        assert!(
            e.starts_with("module /nonexistent/zoa-test.ko: open: "),
            "{e}"
        );
    }
}
