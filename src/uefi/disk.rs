//! A deterministic bootable disk: a raw GPT disk with one FAT32 EFI System Partition
//! holding the UKI as `EFI/BOOT/BOOTX64.EFI`, the removable-media path UEFI firmware
//! boots without any boot variable.
//!
//! Determinism: the disk GUID, the partition GUID and the FAT volume serial come from a
//! caller-given seed (in practice the UKI's SHA-256), every FAT timestamp is the DOS
//! epoch, and the geometry is a function of the UKI size alone. The same UKI and seed
//! give the same bytes on every machine, at every time.
//!
//! Layout (512-byte sectors): protective MBR and primary GPT in the first MiB, the ESP
//! from LBA 2048 (1 MiB aligned) for a whole number of MiB, then one MiB that holds the
//! backup GPT at its end.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition::Partition;
use gpt::partition_types;
use sha2::{Digest, Sha256};

use super::file::ImageFile;
use crate::fsio;

/// The GPT partition type of an EFI System Partition.
pub const ESP_TYPE_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Where the UKI lives inside the ESP: the default boot path of x86-64 UEFI firmware.
pub const BOOT_FILE: &str = "EFI/BOOT/BOOTX64.EFI";
/// The GPT partition name of the ESP.
pub const ESP_NAME: &str = "EFI System Partition";
/// The FAT volume label (11 bytes, space padded, as FAT stores it).
const VOLUME_LABEL: [u8; 11] = *b"ZOA-ESP    ";

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
/// First LBA of the ESP: 1 MiB, the alignment every partitioning tool uses.
const ESP_FIRST_LBA: u64 = MIB / SECTOR;
/// FAT32 needs at least 65,525 clusters; with the 512-byte clusters fatfs picks for
/// volumes up to 260 MB that is ~33.5 MB of data plus the FATs. 40 MiB keeps well clear
/// of the FAT16/FAT32 boundary, where tools disagree about the type.
const MIN_ESP_MIB: u64 = 40;
/// The largest file FAT32 can hold.
const FAT32_MAX_FILE: u64 = u32::MAX as u64;

/// What [`write_esp_disk`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// The disk image.
    pub path: PathBuf,
    /// Total size in bytes (a whole number of MiB).
    pub size: u64,
    /// GPT disk GUID (uppercase, hyphenated, as `sfdisk` prints it).
    pub disk_guid: String,
    /// GPT unique partition GUID of the ESP (uppercase, hyphenated).
    pub partition_guid: String,
    /// Byte offset of the ESP in the image.
    pub esp_offset: u64,
    /// Size of the ESP in bytes.
    pub esp_size: u64,
    /// FAT volume serial number.
    pub volume_id: u32,
    /// Size of `EFI/BOOT/BOOTX64.EFI` (the UKI) in bytes.
    pub uki_size: u64,
}

/// Errors of [`write_esp_disk`]; each names the file and the step.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{}: cannot read the UKI: {source}", path.display())]
    Uki { path: PathBuf, source: io::Error },
    #[error("{}: the UKI is empty: nothing to boot", path.display())]
    EmptyUki { path: PathBuf },
    #[error("{}: {size} bytes is larger than a FAT32 file can be (4 GiB - 1)", path.display())]
    UkiTooLarge { path: PathBuf, size: u64 },
    #[error("{}: writing the boot disk: {step}: {source}", path.display())]
    Write {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    #[error("{}: writing the boot disk: {source}", path.display())]
    Place {
        path: PathBuf,
        source: fsio::WriteError,
    },
    #[error("{}: writing the GPT partition table: {source}", path.display())]
    Gpt {
        path: PathBuf,
        source: gpt::GptError,
    },
    #[error("{}: writing the protective MBR: {source}", path.display())]
    Mbr {
        path: PathBuf,
        source: gpt::mbr::MBRError,
    },
}

/// Writes `out`: a raw GPT disk whose only partition is a FAT32 EFI System Partition
/// holding `uki` as `EFI/BOOT/BOOTX64.EFI`.
///
/// The bytes depend only on the UKI and `seed` (GUIDs and volume serial are derived from
/// it). The UKI is streamed, so memory does not grow with its size. The image is written
/// to a temporary file next to `out` and renamed over it, so `out` is either the old file
/// or the complete new one. The image is sparse where it is zero.
pub fn write_esp_disk(uki: &ImageFile, out: &Path, seed: &[u8; 32]) -> Result<DiskInfo, DiskError> {
    let place_err = |source| DiskError::Place {
        path: out.to_owned(),
        source,
    };
    // The image is derived from the UKI (anyone can re-create it), so it is not secret:
    // world-readable like the UKI itself.
    let tmp = fsio::temp_for(out, fsio::PUBLIC).map_err(place_err)?;
    // `tmp` stays owned here so the temporary file is removed on every error path.
    let info = write_esp_disk_into(uki, tmp.as_file(), out, seed)?;
    // No fsync: the image is a derived artefact that is cheap to write again, and
    // `zoa boot` writes one per run into a temporary directory.
    fsio::persist(tmp, out, fsio::Persist::REPLACE).map_err(place_err)?;
    Ok(info)
}

/// Writes the disk image into `file` (which must be empty; `name` is what messages and
/// [`DiskInfo::path`] call it): for a caller that keeps the image private (an unnamed
/// temporary file, as `zoa deploy` does, so the bytes it uploads are the ones it wrote).
pub fn write_esp_disk_into(
    uki: &ImageFile,
    file: &File,
    name: &Path,
    seed: &[u8; 32],
) -> Result<DiskInfo, DiskError> {
    let out = name;
    let uki_path = PathBuf::from(uki.name());
    let uki_err = |source| DiskError::Uki {
        path: uki_path.clone(),
        source,
    };
    let uki_size = uki.len();
    if uki_size == 0 {
        return Err(DiskError::EmptyUki { path: uki_path });
    }
    if uki_size > FAT32_MAX_FILE {
        return Err(DiskError::UkiTooLarge {
            path: uki_path,
            size: uki_size,
        });
    }
    let geometry = Geometry::for_uki(uki_size);
    let ids = Ids::derive(seed);

    let write_err = |step: &'static str| {
        let path = out.to_owned();
        move |source| DiskError::Write { path, step, source }
    };
    // Work on cloned handles: the GPT writer takes ownership of its device.
    let mut file = file
        .try_clone()
        .map_err(write_err("opening the temporary file"))?;
    file.set_len(geometry.disk_size)
        .map_err(write_err("sizing the image"))?;

    write_partition_table(
        file.try_clone()
            .map_err(write_err("opening the temporary file"))?,
        &geometry,
        &ids,
    )
    .map_err(|e| e.at(out))?;

    let mut esp = Slice::new(&mut file, geometry.esp_offset(), geometry.esp_size());
    format_esp(&mut esp, &ids).map_err(write_err("formatting the FAT32 ESP"))?;
    esp.seek(SeekFrom::Start(0))
        .map_err(write_err("formatting the FAT32 ESP"))?;
    copy_uki(&mut esp, &mut uki.reader(), uki_size).map_err(|e| match e {
        CopyError::Read(source) => uki_err(source),
        CopyError::Write(source) => DiskError::Write {
            path: out.to_owned(),
            step: "copying the UKI into the ESP",
            source,
        },
    })?;
    fix_root_subdir_parents(&mut esp).map_err(write_err("fixing the '..' entry of EFI"))?;
    file.flush().map_err(write_err("flushing the image"))?;

    Ok(DiskInfo {
        path: out.to_owned(),
        size: geometry.disk_size,
        disk_guid: ids.disk_guid.hyphenated().to_string().to_uppercase(),
        partition_guid: ids.partition_guid.hyphenated().to_string().to_uppercase(),
        esp_offset: geometry.esp_offset(),
        esp_size: geometry.esp_size(),
        volume_id: ids.volume_id,
        uki_size,
    })
}

/// Sizes, all derived from the UKI size.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    esp_mib: u64,
    disk_size: u64,
}

impl Geometry {
    fn for_uki(uki_size: u64) -> Geometry {
        // FAT overhead: two FATs of 4 bytes per 512-byte cluster (1/64 of the volume),
        // reserved sectors and directory clusters; 1/32 + 2 MiB covers it with room.
        let need = uki_size + uki_size / 32 + 2 * MIB;
        let esp_mib = need.div_ceil(MIB).max(MIN_ESP_MIB);
        Geometry {
            esp_mib,
            // 1 MiB before the ESP (MBR, primary GPT), 1 MiB after (backup GPT).
            disk_size: (esp_mib + 2) * MIB,
        }
    }

    fn esp_offset(&self) -> u64 {
        ESP_FIRST_LBA * SECTOR
    }

    fn esp_size(&self) -> u64 {
        self.esp_mib * MIB
    }

    fn total_lbas(&self) -> u64 {
        self.disk_size / SECTOR
    }
}

/// The identifiers of one disk, derived from the seed.
#[derive(Debug, Clone, Copy)]
struct Ids {
    disk_guid: uuid::Uuid,
    partition_guid: uuid::Uuid,
    volume_id: u32,
}

impl Ids {
    fn derive(seed: &[u8; 32]) -> Ids {
        let guid = |label: &str| {
            let h = derive(seed, label);
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&h[..16]);
            // RFC 9562 version 8 ("custom"): the form meant for hash-derived UUIDs other
            // than SHA-1 (v5); the builder sets the version and variant bits.
            uuid::Builder::from_custom_bytes(bytes).into_uuid()
        };
        let disk_guid = guid("zoa disk guid");
        let partition_guid = guid("zoa esp partition guid");
        let h = derive(seed, "zoa esp volume id");
        Ids {
            disk_guid,
            partition_guid,
            volume_id: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        }
    }
}

/// sha256(seed || label): independent values from one seed.
fn derive(seed: &[u8; 32], label: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(label.as_bytes());
    h.finalize().into()
}

/// A GPT or MBR error before the output path is known to it.
enum TableError {
    Gpt(gpt::GptError),
    Mbr(gpt::mbr::MBRError),
}

impl TableError {
    fn at(self, path: &Path) -> DiskError {
        match self {
            TableError::Gpt(source) => DiskError::Gpt {
                path: path.to_owned(),
                source,
            },
            TableError::Mbr(source) => DiskError::Mbr {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// Writes the protective MBR and both GPT headers and partition arrays.
fn write_partition_table(file: File, g: &Geometry, ids: &Ids) -> Result<(), TableError> {
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(file, Some(ids.disk_guid))
        .map_err(TableError::Gpt)?;
    let esp = Partition {
        part_type_guid: partition_types::EFI,
        part_guid: ids.partition_guid,
        first_lba: ESP_FIRST_LBA,
        last_lba: ESP_FIRST_LBA + g.esp_size() / SECTOR - 1,
        flags: 0,
        name: ESP_NAME.to_owned(),
    };
    disk.update_partitions(BTreeMap::from([(1, esp)]))
        .map_err(TableError::Gpt)?;
    let mut file = disk.write().map_err(TableError::Gpt)?;
    // The protective partition covers the whole disk after LBA 0 (capped at 2 TiB, as
    // the UEFI specification says for larger disks).
    let protective = u32::try_from(g.total_lbas() - 1).unwrap_or(u32::MAX);
    ProtectiveMBR::with_lb_size(protective)
        .overwrite_lba0(&mut file)
        .map_err(TableError::Mbr)?;
    Ok(())
}

/// Every FAT timestamp: the DOS epoch, 1980-01-01 00:00:00. Never the current time.
#[derive(Debug)]
struct FixedTime;

static FIXED_TIME: FixedTime = FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

fn fs_options() -> fatfs::FsOptions {
    fatfs::FsOptions::new()
        .time_provider(&FIXED_TIME)
        .update_accessed_date(false)
}

/// Formats the ESP as FAT32 with the derived volume serial.
fn format_esp(esp: &mut Slice<'_>, ids: &Ids) -> io::Result<()> {
    let options = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .volume_id(ids.volume_id)
        .volume_label(VOLUME_LABEL);
    fatfs::format_volume(esp, options)
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Creates `EFI/BOOT/BOOTX64.EFI` and streams the UKI into it.
fn copy_uki(esp: &mut Slice<'_>, uki: &mut impl Read, uki_size: u64) -> Result<(), CopyError> {
    let fs = fatfs::FileSystem::new(esp, fs_options()).map_err(CopyError::Write)?;
    {
        let root = fs.root_dir();
        let boot = root
            .create_dir("EFI")
            .and_then(|efi| efi.create_dir("BOOT"))
            .map_err(CopyError::Write)?;
        let mut dst = boot.create_file("BOOTX64.EFI").map_err(CopyError::Write)?;
        // fatfs writes at most one cluster per call; the 1 MiB buffer saves read
        // syscalls and bounds memory whatever the UKI size.
        let mut src = uki.take(uki_size);
        let mut buf = vec![0u8; 1 << 20];
        let mut copied = 0u64;
        loop {
            let n = src.read(&mut buf).map_err(CopyError::Read)?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n]).map_err(CopyError::Write)?;
            copied += n as u64;
        }
        if copied != uki_size {
            return Err(CopyError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the UKI changed while it was copied ({copied} of {uki_size} bytes)"),
            )));
        }
        dst.flush().map_err(CopyError::Write)?;
    }
    // Count the free clusters so the FSInfo sector holds the true count instead of
    // "unknown" (fsck.fat reports an unknown count, and firmware may recount slowly).
    fs.stats().map_err(CopyError::Write)?;
    fs.unmount().map_err(CopyError::Write)
}

/// Little-endian integer fields of the FAT32 boot sector.
fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// Points the `..` entry of every directory in the root at cluster 0.
///
/// The FAT specification says a `..` entry whose parent is the root directory holds
/// cluster 0, on FAT32 too; fatfs 0.3.6 writes the root's real cluster (2) instead.
/// Firmware ignores `..`, but fsck.fat reports it as an error, so it is fixed here, after
/// fatfs has unmounted the volume, by reading the geometry from the boot sector.
fn fix_root_subdir_parents(esp: &mut Slice<'_>) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut boot = [0u8; 512];
    esp.seek(SeekFrom::Start(0))?;
    esp.read_exact(&mut boot)?;
    let bytes_per_sector = le16(&boot, 11);
    let sectors_per_cluster = u64::from(boot[13]);
    let reserved = le16(&boot, 14);
    let fats = u64::from(boot[16]);
    let sectors_per_fat = le32(&boot, 36);
    let root_cluster = le32(&boot, 44);
    if bytes_per_sector != SECTOR || sectors_per_cluster == 0 || root_cluster < 2 {
        return Err(bad("unexpected FAT32 boot sector"));
    }
    let data_start = (reserved + fats * sectors_per_fat) * SECTOR;
    let cluster_size = sectors_per_cluster * SECTOR;
    let cluster_offset = |c: u64| data_start + (c - 2) * cluster_size;
    let cluster_len = usize::try_from(cluster_size).map_err(|_| bad("cluster too large"))?;

    // The root holds one directory (EFI): its first cluster is enough.
    let mut root = vec![0u8; cluster_len];
    esp.seek(SeekFrom::Start(cluster_offset(root_cluster)))?;
    esp.read_exact(&mut root)?;
    for entry in root.chunks_exact(32) {
        let attr = entry[11];
        match entry[0] {
            0x00 => break,    // end of directory
            0xE5 => continue, // deleted
            _ if attr == 0x0F || attr & 0x08 != 0 || attr & 0x10 == 0 => continue, // LFN, label, file
            _ => {}
        }
        let first = (le16(entry, 20) << 16) | le16(entry, 26);
        if first < 2 {
            return Err(bad("directory without a cluster"));
        }
        // Entry 0 is ".", entry 1 is "..".
        let dotdot = cluster_offset(first) + 32;
        let mut dd = [0u8; 32];
        esp.seek(SeekFrom::Start(dotdot))?;
        esp.read_exact(&mut dd)?;
        if &dd[..11] != b"..         " {
            return Err(bad("no '..' entry in the second slot"));
        }
        dd[20..22].fill(0);
        dd[26..28].fill(0);
        esp.seek(SeekFrom::Start(dotdot))?;
        esp.write_all(&dd)?;
    }
    Ok(())
}

/// A window `[start, start + len)` of a file, seen as a device of `len` bytes: what
/// fatfs formats and writes, so it can never touch the GPT around the partition.
#[derive(Debug)]
struct Slice<'a> {
    file: &'a mut File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Slice<'a> {
    fn new(file: &'a mut File, start: u64, len: u64) -> Slice<'a> {
        Slice {
            file,
            start,
            len,
            pos: 0,
        }
    }

    /// How many of `want` bytes fit before the end of the window.
    fn clamp(&self, want: usize) -> usize {
        let left = self.len.saturating_sub(self.pos);
        usize::try_from(left).map_or(want, |left| want.min(left))
    }
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.clamp(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.file.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Slice<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.clamp(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the ESP",
            ));
        }
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let put = self.file.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Slice<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) if p <= self.len => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the ESP",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(p: &std::path::Path) -> crate::uefi::file::ImageFile {
        crate::uefi::file::ImageFile::open(p).unwrap()
    }
    use std::process::Command;

    /// A fake UKI of `len` bytes with varied content (not all zeros, so holes in the
    /// image cannot hide a missing copy).
    fn fake_uki(dir: &Path, len: usize) -> PathBuf {
        let path = dir.join("uki.efi");
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::write(&path, data).unwrap();
        path
    }

    fn read_esp_file(disk: &Path, info: &DiskInfo) -> Vec<u8> {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(disk)
            .unwrap();
        let slice = Slice::new(&mut f, info.esp_offset, info.esp_size);
        let fs = fatfs::FileSystem::new(slice, fs_options()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        assert_eq!(fs.volume_id(), info.volume_id);
        let mut out = Vec::new();
        fs.root_dir()
            .open_file(BOOT_FILE)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        let entry = fs
            .root_dir()
            .open_dir("EFI/BOOT")
            .unwrap()
            .iter()
            .map(|e| e.unwrap())
            .find(|e| e.short_file_name_as_bytes() == b"BOOTX64.EFI")
            .unwrap();
        let epoch = fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        };
        assert_eq!(entry.modified().date, epoch);
        assert_eq!(entry.created().date, epoch);
        out
    }

    #[test]
    fn same_input_same_bytes_and_readable_back() {
        let dir = tempfile::tempdir().unwrap();
        let uki = fake_uki(dir.path(), 3 * 1024 * 1024 + 123);
        let seed = [7u8; 32];
        let a = dir.path().join("a.raw");
        let b = dir.path().join("b.raw");
        let ia = write_esp_disk(&open(&uki), &a, &seed).unwrap();
        let ib = write_esp_disk(&open(&uki), &b, &seed).unwrap();
        assert_eq!(ia.disk_guid, ib.disk_guid);
        let (da, db) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(da == db, "same UKI and seed gave different images");
        assert_eq!(da.len() as u64, ia.size);
        assert_eq!(ia.size, (MIN_ESP_MIB + 2) * MIB);
        assert_eq!(read_esp_file(&a, &ia), std::fs::read(&uki).unwrap());
        // No temporary files left next to the output.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn seed_changes_only_identifiers() {
        let dir = tempfile::tempdir().unwrap();
        let uki = fake_uki(dir.path(), 100_000);
        let a = write_esp_disk(&open(&uki), &dir.path().join("a.raw"), &[1; 32]).unwrap();
        let b = write_esp_disk(&open(&uki), &dir.path().join("b.raw"), &[2; 32]).unwrap();
        assert_ne!(a.disk_guid, b.disk_guid);
        assert_ne!(a.partition_guid, b.partition_guid);
        assert_ne!(a.disk_guid, a.partition_guid);
        assert_ne!(a.volume_id, b.volume_id);
        assert_eq!(a.size, b.size);
        for info in [&a, &b] {
            let g = uuid::Uuid::parse_str(&info.disk_guid).unwrap();
            assert_eq!(g.get_version_num(), 8);
            assert_eq!(g.get_variant(), uuid::Variant::RFC4122);
        }
    }

    #[test]
    fn partition_table_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let uki = fake_uki(dir.path(), 200_000);
        let disk = dir.path().join("disk.raw");
        let info = write_esp_disk(&open(&uki), &disk, &[3; 32]).unwrap();

        let gpt = gpt::GptConfig::new()
            .logical_block_size(LogicalBlockSize::Lb512)
            .open(&disk)
            .unwrap();
        assert_eq!(
            gpt.guid().hyphenated().to_string().to_uppercase(),
            info.disk_guid
        );
        let parts: Vec<_> = gpt.partitions().values().filter(|p| p.is_used()).collect();
        assert_eq!(parts.len(), 1);
        let p = parts[0];
        assert_eq!(p.part_type_guid, partition_types::EFI);
        assert_eq!(
            p.part_guid.hyphenated().to_string().to_uppercase(),
            info.partition_guid
        );
        assert_eq!(p.first_lba * SECTOR, info.esp_offset);
        assert_eq!((p.last_lba - p.first_lba + 1) * SECTOR, info.esp_size);
        assert_eq!(p.name, ESP_NAME);
        // Both headers are valid.
        assert!(gpt.primary_header().is_ok() && gpt.backup_header().is_ok());
        let mut f = File::open(&disk).unwrap();
        let mbr = ProtectiveMBR::from_disk(&mut f, LogicalBlockSize::Lb512).unwrap();
        assert_eq!(mbr.partition(0).unwrap().os_type, 0xEE);

        // util-linux agrees, when it is installed.
        let Ok(o) = Command::new("sfdisk").arg("--json").arg(&disk).output() else {
            eprintln!("sfdisk not installed: skipping the util-linux cross-check");
            return;
        };
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let t = &j["partitiontable"];
        assert_eq!(t["label"], "gpt");
        assert_eq!(t["id"], info.disk_guid.as_str());
        assert_eq!(t["sectorsize"], 512);
        let p = &t["partitions"][0];
        assert_eq!(p["type"], ESP_TYPE_GUID);
        assert_eq!(p["uuid"], info.partition_guid.as_str());
        assert_eq!(p["start"], 2048);
        assert_eq!(p["size"], info.esp_size / SECTOR);
        assert_eq!(p["name"], ESP_NAME);
        assert_eq!(t["partitions"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn fsck_vfat_finds_no_errors() {
        let dir = tempfile::tempdir().unwrap();
        let uki = fake_uki(dir.path(), 1_500_000);
        let disk = dir.path().join("disk.raw");
        let info = write_esp_disk(&open(&uki), &disk, &[4; 32]).unwrap();
        // fsck.vfat has no --offset: copy the partition out.
        let part = dir.path().join("esp.img");
        let mut src = File::open(&disk).unwrap();
        src.seek(SeekFrom::Start(info.esp_offset)).unwrap();
        let mut dst = File::create(&part).unwrap();
        let n = io::copy(&mut src.take(info.esp_size), &mut dst).unwrap();
        assert_eq!(n, info.esp_size);
        drop(dst);
        let Ok(o) = Command::new("fsck.vfat").arg("-n").arg(&part).output() else {
            eprintln!("fsck.vfat not installed: skipping the dosfstools cross-check");
            return;
        };
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "fsck.vfat -n: {out}");
        // A clean volume gives exactly the version line and the summary line, e.g.
        // "esp.img: 4 files, 2933/80650 clusters"; anything else is a finding.
        let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 2, "fsck.vfat -n reported findings: {out}");
        assert!(lines[1].contains(" files, "), "fsck.vfat -n: {out}");
    }

    #[test]
    fn size_follows_the_uki() {
        assert_eq!(Geometry::for_uki(1).esp_mib, MIN_ESP_MIB);
        let g = Geometry::for_uki(60 * MIB);
        assert!(g.esp_size() >= 60 * MIB + 60 * MIB / 64 + MIB);
        assert_eq!(g.disk_size % MIB, 0);
    }

    #[test]
    fn refuses_empty_and_missing_uki() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.efi");
        std::fs::write(&empty, b"").unwrap();
        let out = dir.path().join("disk.raw");
        let e = write_esp_disk(&open(&empty), &out, &[0; 32]).unwrap_err();
        assert!(matches!(e, DiskError::EmptyUki { .. }), "{e}");
        assert!(!out.exists());
    }

    #[test]
    fn slice_stays_inside_its_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = tempfile::tempfile_in(dir.path()).unwrap();
        f.set_len(30).unwrap();
        let mut s = Slice::new(&mut f, 10, 10);
        s.write_all(&[1u8; 10]).unwrap();
        assert!(s.write(&[2]).is_err());
        assert!(s.seek(SeekFrom::Start(11)).is_err());
        s.seek(SeekFrom::End(-2)).unwrap();
        let mut b = Vec::new();
        s.read_to_end(&mut b).unwrap();
        assert_eq!(b, [1, 1]);
        let mut all = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut all).unwrap();
        assert_eq!(&all[..10], &[0; 10]);
        assert_eq!(&all[20..], &[0; 10]);
    }
}
