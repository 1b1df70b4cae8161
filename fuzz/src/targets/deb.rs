//! The .deb reader (ar + compressed tar) must refuse garbage cleanly and never write
//! outside its extraction root.

pub fn run(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let deb = dir.path().join("in.deb");
    let root = dir.path().join("root");
    if std::fs::write(&deb, data).is_err() || std::fs::create_dir(&root).is_err() {
        return;
    }
    let _ = zoa::deb::read_info(&deb);
    let _ = zoa::deb::extract_data(&deb, &root);
    let _ = zoa::deb::copy_data_file(&deb, "boot/vmlinuz", &mut std::io::sink());
}
