//! The PE/UKI reader: header parsing, section lookup, `zoa check` on a UKI, and the
//! Authenticode/PCR prediction over it.

pub fn run(data: &[u8]) {
    let _ = zoa::uefi::pe::PeLayout::parse("fuzz.efi", data, data.len() as u64);
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("uki.efi");
    if std::fs::write(&path, data).is_ok() {
        let _ = zoa::image::check::check_uki(&path);
        let Ok(image) = zoa::uefi::file::ImageFile::open(&path) else {
            return;
        };
        let _ = zoa::uefi::uki::inspect_stub(&image);
        let _ = zoa::uefi::uki::inspect_kernel(&image);
        // Prediction parses sections, .sdmagic and the embedded kernel's headers, and
        // computes Authenticode ranges for both.
        let _ = zoa::measure::predict(&image, &zoa::measure::MeasureOptions::default());
    }
}
