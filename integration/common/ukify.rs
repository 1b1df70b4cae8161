//! UKI features added the way ukify did before it wrote PE files itself: GNU objcopy's
//! `--add-section` with an explicit VMA, and each payload made by its own real tool
//! (openssl for the PCR public key, cpio for the microcode archive, dtc for the devicetree).
//! zoa's own assembler plays no part, so a boot of the result checks zoa's prediction, not
//! its writer — except in `multi_profile`, where objcopy cannot write the image.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use zoa::uefi::uki::UKI_SECTIONS;

fn u16_at(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
}

/// The first free section-aligned address after every section of the PE32+ `image`, as
/// objcopy counts it (ImageBase included: 252's stub links at 0, 257's and 262's do not),
/// and the section alignment.
fn end_of_image(image: &[u8]) -> (u64, u64) {
    let pe = u32_at(image, 0x3c) as usize;
    assert_eq!(&image[pe..pe + 4], b"PE\0\0", "not a PE image");
    let coff = pe + 4;
    let sections = u16_at(image, coff + 2) as usize;
    let optional = coff + 20;
    assert_eq!(u16_at(image, optional), 0x20b, "not PE32+");
    let image_base = u32_at(image, optional + 24) | (u32_at(image, optional + 28) << 32);
    let alignment = u32_at(image, optional + 32);
    let table = optional + u16_at(image, coff + 16) as usize;
    let end = (0..sections)
        .map(|i| table + 40 * i)
        .map(|h| u32_at(image, h + 12) + u32_at(image, h + 8))
        .max()
        .unwrap();
    (image_base + end.div_ceil(alignment) * alignment, alignment)
}

/// `uki` with `sections` (name, file) appended by objcopy, each at the next free
/// section-aligned address, written to `out`.
pub fn add_sections(uki: &Path, sections: &[(&str, PathBuf)], out: &Path) -> PathBuf {
    let (mut vma, alignment) = end_of_image(&std::fs::read(uki).unwrap());
    let mut objcopy = Command::new("objcopy");
    for (name, file) in sections {
        let len = std::fs::metadata(file).unwrap().len();
        objcopy
            .arg("--add-section")
            .arg(format!("{name}={}", file.display()))
            .arg("--set-section-flags")
            .arg(format!("{name}=data,readonly"))
            .arg("--change-section-vma")
            .arg(format!("{name}={vma:#x}"));
        vma = (vma + len).div_ceil(alignment) * alignment;
    }
    let o = objcopy
        .arg(uki)
        .arg(out)
        .output()
        .expect("objcopy (Debian package binutils)");
    assert!(
        o.status.success(),
        "objcopy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.to_owned()
}

/// A PEM public key for `.pcrpkey`, made by openssl.
pub fn pcr_public_key(dir: &Path) -> PathBuf {
    let key = dir.join("pcr-signing.key");
    let public = dir.join("pcr-signing.pub.pem");
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let (key_s, public_s) = (key.to_str().unwrap(), public.to_str().unwrap());
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        key_s,
    ]);
    openssl(&["pkey", "-pubout", "-in", key_s, "-out", public_s]);
    public
}

/// A `.pcrsig` as systemd-measure writes it: JSON naming bank, PCRs, public key
/// fingerprint, policy and signature. Its content is opaque to the stub, which passes it to
/// the OS unmeasured.
pub fn pcr_signature(dir: &Path) -> PathBuf {
    let path = dir.join("pcrsig.json");
    let json = serde_json::json!({
        "sha256": [{
            "pcrs": [11],
            "pkfp": "0".repeat(64),
            "pol": "1".repeat(64),
            "sig": "c2lnbmF0dXJl",
        }]
    });
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// An early-microcode archive for `.ucode` as the kernel looks for it (newc cpio, by the
/// cpio tool). Its blob is not microcode, so the kernel finds no update in it and goes on.
pub fn microcode_archive(dir: &Path) -> PathBuf {
    let root = dir.join("ucode-root");
    let blobs = root.join("kernel/x86/microcode");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join("GenuineIntel.bin"), b"not microcode\n").unwrap();
    let archive = dir.join("ucode.cpio");
    let o = Command::new("sh")
        .arg("-c")
        .arg("find kernel | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible")
        .current_dir(&root)
        .output()
        .expect("cpio");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(&archive, o.stdout).unwrap();
    archive
}

/// A flattened devicetree for `.dtb`, compiled by dtc. The stub installs it as the
/// firmware's devicetree table; an x86 kernel does not read that table.
pub fn devicetree_blob(dir: &Path) -> PathBuf {
    let source = dir.join("zoa-test.dts");
    std::fs::write(
        &source,
        "/dts-v1/;\n/ { compatible = \"zoa,test\"; model = \"zoa boot test\"; };\n",
    )
    .unwrap();
    let blob = dir.join("zoa-test.dtb");
    let o = Command::new("dtc")
        .args(["-I", "dts", "-O", "dtb", "-o"])
        .arg(&blob)
        .arg(&source)
        .output()
        .expect("dtc (Debian package device-tree-compiler)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    blob
}

/// A 2×2 24-bit BMP for `.splash` (the stub shows it when the firmware has a display; the
/// test VMs have none, which the stub shrugs off after measuring it).
pub fn splash_bitmap(dir: &Path) -> PathBuf {
    let (width, height) = (2u32, 2u32);
    let row = (width * 3).div_ceil(4) * 4;
    let pixels = row * height;
    let mut bmp = Vec::new();
    bmp.extend_from_slice(b"BM");
    bmp.extend_from_slice(&(54 + pixels).to_le_bytes());
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&width.to_le_bytes());
    bmp.extend_from_slice(&height.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&pixels.to_le_bytes());
    bmp.extend_from_slice(&[0; 16]);
    for _ in 0..height {
        for _ in 0..width {
            bmp.extend_from_slice(&[0x20, 0x80, 0xe0]);
        }
        bmp.resize(bmp.len() + (row - width * 3) as usize, 0);
    }
    let path = dir.join("splash.bmp");
    std::fs::write(&path, bmp).unwrap();
    path
}

/// The optional UKI features a stub of `major` knows and zoa predicts, made by their tools:
/// `.splash`, `.dtb`, `.pcrsig`, `.pcrpkey`, and `.ucode` from 257 on.
pub fn feature_sections(major: u32, dir: &Path) -> Vec<(&'static str, PathBuf)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut sections = vec![
        (".splash", splash_bitmap(dir)),
        (".dtb", devicetree_blob(dir)),
        (".pcrsig", pcr_signature(dir)),
        (".pcrpkey", pcr_public_key(dir)),
    ];
    if major >= 257 {
        sections.push((".ucode", microcode_archive(dir)));
    }
    sections
}

/// `uki` with [`feature_sections`] added by objcopy.
pub fn with_features(uki: &Path, major: u32, dir: &Path, out: &Path) -> PathBuf {
    add_sections(uki, &feature_sections(major, dir), out)
}

/// The stub of `stub_deb` and the payload of `uki` (the sections `zoa build` adds, taken out
/// by objcopy), plus `extra`, joined by objcopy alone: a UKI as ukify's
/// objcopy recipe built one, with no part of zoa's assembler in it.
pub fn objcopy_uki(
    stub_deb: &Path,
    uki: &Path,
    extra: Vec<(&'static str, PathBuf)>,
    dir: &Path,
    out: &Path,
) -> PathBuf {
    let stub = unpack_stub_deb(stub_deb, dir).join("linuxx64.efi.stub");
    let mut sections: Vec<(&str, PathBuf)> = UKI_SECTIONS
        .iter()
        .map(|name| (*name, section_bytes(uki, name, dir)))
        .collect();
    sections.extend(extra);
    add_sections(&stub, &sections, out)
}

/// The EFI binaries of a `systemd-boot-efi` package, unpacked by dpkg-deb.
fn unpack_stub_deb(stub_deb: &Path, dir: &Path) -> PathBuf {
    let unpacked = dir.join("stub-deb");
    if !unpacked.exists() {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("dpkg-deb")
            .arg("-x")
            .arg(stub_deb)
            .arg(&unpacked)
            .output()
            .expect("dpkg-deb");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    unpacked.join("usr/lib/systemd/boot/efi")
}

/// A command-line add-on as `ukify build --stub addonx64.efi.stub` makes one: systemd's
/// add-on stub (`addonx64.efi.stub` from the same `.deb` as the UKI's stub) with a
/// `.cmdline` section.
pub fn cmdline_addon(stub_deb: &Path, cmdline: &str, dir: &Path) -> PathBuf {
    let efi = unpack_stub_deb(stub_deb, dir);
    let cmdline_file = dir.join("addon.cmdline");
    std::fs::write(&cmdline_file, cmdline).unwrap();
    add_sections(
        &efi.join("addonx64.efi.stub"),
        &[(".cmdline", cmdline_file)],
        &dir.join("extra.addon.efi"),
    )
}

/// The bytes of `uki`'s section `name` (a name that appears once), by objcopy.
fn section_bytes(uki: &Path, name: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("section{name}"));
    let o = Command::new("objcopy")
        .args(["-O", "binary", "--only-section", name])
        .arg(uki)
        .arg(&out)
        .output()
        .expect("objcopy");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// A multi-profile UKI as `ukify --join-profile` lays one out: the stub of `stub_deb`, the
/// base sections of `uki`, then two profiles, each a `.profile` and its own `.cmdline`
/// (the base command line plus `zoa.profile=N`). Written by zoa's UKI assembler, since
/// objcopy cannot add a section name twice; the boot, not the writer, is the proof.
pub fn multi_profile(uki: &Path, stub_deb: &Path, dir: &Path, out: &Path) -> PathBuf {
    use zoa::uefi::uki::{assemble, NewSection, SectionData};
    let stub =
        zoa::uefi::file::ImageFile::open(&unpack_stub_deb(stub_deb, dir).join("linuxx64.efi.stub"))
            .unwrap();
    let base_cmdline = std::fs::read_to_string(section_bytes(uki, ".cmdline", dir)).unwrap();
    let file = |name: &'static str| NewSection {
        name,
        data: SectionData::File(section_bytes(uki, name, dir)),
    };
    let bytes = |name: &'static str, data: String| NewSection {
        name,
        data: SectionData::Bytes(data.into_bytes()),
    };
    let mut sections: Vec<NewSection> = UKI_SECTIONS.iter().map(|name| file(name)).collect();
    for profile in 0..2 {
        sections.push(bytes(
            ".profile",
            format!("ID=profile{profile}\nTITLE=zoa test profile {profile}\n"),
        ));
        sections.push(bytes(
            ".cmdline",
            format!("{base_cmdline} zoa.profile={profile}"),
        ));
    }
    let mut f = std::fs::File::create(out).unwrap();
    assemble(&stub, sections, 1_767_225_600, &mut f).unwrap();
    out.to_owned()
}
