//! The AMI UefiData blob is untrusted input (`GetInstanceUefiData`, a file a user passes):
//! the reader must refuse anything malformed cleanly and within its size caps, and
//! whatever it accepts must write and read back to the same variables.
use zoa::uefi::uefidata::UefiVarStore;

pub fn run(data: &[u8]) {
    if let Ok(store) = UefiVarStore::from_blob(data) {
        for v in &store.vars {
            assert_eq!(store.data(&v.name, &v.guid), Some(v.data.as_slice()));
        }
        let blob = store.to_blob().expect("a read store writes");
        // An input near the size cap made by a stronger deflate encoder may not fit again.
        if blob.len() > zoa::uefi::uefidata::MAX_BLOB_BYTES {
            return;
        }
        let back = UefiVarStore::from_blob(&blob).expect("a written store reads");
        assert_eq!(back, store);
    }
}
