//! The initramfs reader (newc cpio, optionally zstd/gzip) used by `zoa check`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let _ = zoa::image::initramfs::read_archive(data, dir.path());
});
