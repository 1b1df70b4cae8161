//! ELF objects come from the `.deb`s a recipe pins (the server and its libraries): the
//! reader that finds their interpreter and `DT_NEEDED` closure must refuse malformed
//! headers cleanly, and a static executable has neither.
pub fn run(data: &[u8]) {
    if let Ok(info) = zoa::image::elf::parse_elf("fuzz", data) {
        if info.is_static {
            assert!(info.interp.is_none() && info.needed.is_empty());
        }
    }
}
