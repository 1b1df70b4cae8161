//! The initramfs reader (newc cpio, optionally zstd/gzip) used by `zoa check`.

pub fn run(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let _ = zoa::image::initramfs::read_archive(data, dir.path());
}
