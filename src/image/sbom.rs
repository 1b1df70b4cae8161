//! `sbom.spdx.json`: the image's software bill of materials, SPDX 2.3 (JSON).
//!
//! Everything that went into `uki.efi`: each pinned input (the Debian packages with name,
//! version and the `.deb`'s SHA-256; the kernel and the systemd stub are inputs too),
//! zoa-init with every crate compiled into it (version and Cargo.lock checksum) and the
//! toolchains that built it (rustc, zig), and zoa itself as the tool that assembled the
//! image. It is derived from `build.json` alone, so it is as reproducible as the image:
//! the creation time is the recipe's SOURCE_DATE_EPOCH and the document namespace names
//! the UKI's digest.

use serde::Serialize;
use std::collections::BTreeSet;

use super::{BuildReport, InputRecord, UKI_FILE};
use crate::init_build::provenance::{CrateRecord, Provenance};

/// The file name inside a build or release directory.
pub const SBOM_FILE: &str = "sbom.spdx.json";
const NOASSERTION: &str = "NOASSERTION";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    document_describes: Vec<String>,
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    name: String,
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    download_location: String,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    license_concluded: &'static str,
    license_declared: &'static str,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

impl Package {
    fn new(name: &str, spdx_id: String, version: Option<&str>) -> Package {
        Package {
            name: name.to_owned(),
            spdx_id,
            version_info: version.map(str::to_owned),
            download_location: NOASSERTION.to_owned(),
            files_analyzed: false,
            checksums: Vec::new(),
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION,
            copyright_text: NOASSERTION,
            primary_package_purpose: None,
            external_refs: Vec::new(),
            comment: None,
        }
    }

    fn sha256(mut self, hex: &str) -> Package {
        self.checksums.push(Checksum {
            algorithm: "SHA256",
            checksum_value: hex.to_owned(),
        });
        self
    }

    fn purl(mut self, purl: String) -> Package {
        self.external_refs.push(ExternalRef {
            reference_category: "PACKAGE-MANAGER",
            reference_type: "purl",
            reference_locator: purl,
        });
        self
    }

    fn purpose(mut self, p: &'static str) -> Package {
        self.primary_package_purpose = Some(p);
        self
    }

    fn comment(mut self, c: String) -> Package {
        self.comment = Some(c);
        self
    }
}

/// SPDX identifiers are `SPDXRef-` and `[A-Za-z0-9.-]+`, unique in the document.
struct Ids(BTreeSet<String>);

impl Ids {
    fn make(&mut self, kind: &str, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = format!("SPDXRef-{kind}-{clean}");
        let mut id = base.clone();
        let mut n = 2;
        while !self.0.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

/// Percent-encodes a purl component (RFC 3986 unreserved characters stay).
fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn relationship(a: &str, kind: &'static str, b: &str) -> Relationship {
    Relationship {
        spdx_element_id: a.to_owned(),
        relationship_type: kind,
        related_spdx_element: b.to_owned(),
    }
}

/// Where an input came from: its first `https://` source, if any.
fn download_location(sources: &[String]) -> String {
    sources
        .iter()
        .find(|s| s.starts_with("https://"))
        .cloned()
        .unwrap_or_else(|| NOASSERTION.to_owned())
}

fn input_package(ids: &mut Ids, input: &InputRecord, sources: &[String]) -> Package {
    let (name, version) = match (&input.package, &input.package_version) {
        (Some(p), Some(v)) => (p.as_str(), Some(v.as_str())),
        _ => (input.name.as_str(), None),
    };
    let mut p = Package::new(name, ids.make("Input", &input.name), version).sha256(&input.sha256);
    p.download_location = download_location(sources);
    if let (Some(pkg), Some(v)) = (&input.package, &input.package_version) {
        p = p
            .purl(format!(
                "pkg:deb/debian/{}@{}",
                purl_escape(pkg),
                purl_escape(v)
            ))
            .purpose("LIBRARY")
            .comment(format!("recipe input {:?} (a Debian package)", input.name));
    } else {
        p = p
            .purpose("FILE")
            .comment(format!("recipe input {:?}", input.name));
    }
    p
}

fn crate_package(ids: &mut Ids, c: &CrateRecord) -> Package {
    let mut p = Package::new(
        &c.name,
        ids.make("Crate", &format!("{}-{}", c.name, c.version)),
        Some(&c.version),
    )
    .purpose("LIBRARY");
    if let Some(sum) = &c.checksum {
        p = p.sha256(sum);
    }
    if c.source
        .as_deref()
        .is_some_and(|s| s.contains("crates.io-index"))
    {
        p.download_location = format!(
            "https://crates.io/api/v1/crates/{}/{}/download",
            c.name, c.version
        );
        p = p.purl(format!(
            "pkg:cargo/{}@{}",
            purl_escape(&c.name),
            purl_escape(&c.version)
        ));
    }
    if c.build_only {
        p = p.comment(
            "built to run on the build host only (build script or proc macro); not in the binary"
                .into(),
        );
    }
    p
}

/// zoa-init, the crates in it and the toolchains that made it.
fn init_packages(
    ids: &mut Ids,
    report: &BuildReport,
    image_id: &str,
    packages: &mut Vec<Package>,
    relationships: &mut Vec<Relationship>,
) {
    let init = &report.init;
    let init_id = ids.make("Init", "zoa-init");
    let Some(prov) = &init.provenance else {
        packages.push(
            Package::new("zoa-init", init_id.clone(), None)
                .sha256(&init.sha256)
                .purpose("APPLICATION")
                .comment("the image's PID 1 (/init); built without `zoa build-init`, so how it was made is not recorded".into()),
        );
        relationships.push(relationship(image_id, "CONTAINS", &init_id));
        return;
    };
    let (name, version) = prov
        .package
        .split_once(' ')
        .unwrap_or((prov.package.as_str(), ""));
    packages.push(
        Package::new(name, init_id.clone(), Some(version).filter(|v| !v.is_empty()))
            .sha256(&init.sha256)
            .purpose("APPLICATION")
            .comment(format!(
                "the image's PID 1 (/init), built by `zoa build-init` for {}; sources sha256 {}, Cargo.lock entries sha256 {}",
                prov.target, prov.sources.sha256, prov.cargo_lock_sha256
            )),
    );
    relationships.push(relationship(image_id, "CONTAINS", &init_id));
    for (id, pkg) in toolchain_packages(ids, prov) {
        relationships.push(relationship(&id, "BUILD_TOOL_OF", &init_id));
        packages.push(pkg);
    }
    for c in &prov.crates {
        let p = crate_package(ids, c);
        let rel = if c.build_only {
            relationship(&p.spdx_id, "BUILD_DEPENDENCY_OF", &init_id)
        } else {
            relationship(&init_id, "STATIC_LINK", &p.spdx_id)
        };
        relationships.push(rel);
        packages.push(p);
    }
}

fn toolchain_packages(ids: &mut Ids, prov: &Provenance) -> Vec<(String, Package)> {
    let rustc_id = ids.make("Tool", "rustc");
    let rustc = Package::new("rustc", rustc_id.clone(), Some(&prov.rustc.release))
        .purpose("APPLICATION")
        .comment(format!(
            "commit {} ({}), host {}, LLVM {}; {}",
            prov.rustc.commit_hash,
            prov.rustc.commit_date,
            prov.rustc.host,
            prov.rustc.llvm_version,
            prov.cargo
        ));
    let c = &prov.c_toolchain;
    let zig_id = ids.make("Tool", &c.name);
    let zig = Package::new(&c.name, zig_id.clone(), Some(&c.version))
        .sha256(&c.sha256)
        .purpose("APPLICATION")
        .comment(format!("the C compiler (target {})", c.target));
    vec![(rustc_id, rustc), (zig_id, zig)]
}

/// The SBOM of a build, as canonical JSON bytes (two-space indentation, trailing newline).
pub fn render(
    report: &BuildReport,
    input_sources: &dyn Fn(&str) -> Vec<String>,
) -> Result<Vec<u8>, serde_json::Error> {
    let uki = &report.outputs[0];
    let created = jiff::Timestamp::from_second(report.source_date_epoch as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
    let mut ids = Ids(BTreeSet::new());
    let image_id = ids.make("Image", &report.name);
    let mut packages = vec![
        Package::new(&report.name, image_id.clone(), Some(&report.version))
            .sha256(&uki.sha256)
            .purpose("OPERATING-SYSTEM")
            .comment(format!(
                "{UKI_FILE}: a Unified Kernel Image (systemd-stub {}, kernel {}), {} bytes",
                report.stub.version,
                report
                    .kernel
                    .release
                    .as_deref()
                    .unwrap_or("of unknown release"),
                uki.size
            )),
    ];
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", &image_id)];
    let zoa_id = ids.make("Tool", "zoa");
    packages.push(
        Package::new("zoa", zoa_id.clone(), Some(&report.zoa_version))
            .purpose("APPLICATION")
            .comment("assembled the image (zoa build)".into()),
    );
    relationships.push(relationship(&zoa_id, "BUILD_TOOL_OF", &image_id));
    for input in &report.inputs {
        let p = input_package(&mut ids, input, &input_sources(&input.name));
        relationships.push(relationship(&image_id, "CONTAINS", &p.spdx_id));
        packages.push(p);
    }
    init_packages(
        &mut ids,
        report,
        &image_id,
        &mut packages,
        &mut relationships,
    );
    let doc = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("{}-{}", report.name, report.version),
        document_namespace: format!(
            "https://zoa.invalid/spdx/{}-{}/{}",
            purl_escape(&report.name),
            purl_escape(&report.version),
            uki.sha256
        ),
        creation_info: CreationInfo {
            created,
            creators: vec![format!("Tool: zoa-{}", report.zoa_version)],
        },
        document_describes: vec![image_id],
        packages,
        relationships,
    };
    let mut out = serde_json::to_vec_pretty(&doc)?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_unique() {
        let mut ids = Ids(BTreeSet::new());
        let a = ids.make("Input", "libstdc++6");
        let b = ids.make("Input", "libstdc--6");
        assert_eq!(a, "SPDXRef-Input-libstdc--6");
        assert_eq!(b, "SPDXRef-Input-libstdc--6-2");
    }

    #[test]
    fn purls_escape_epochs_and_plus() {
        assert_eq!(purl_escape("1:0.7.0+dfsg-2"), "1%3A0.7.0%2Bdfsg-2");
        assert_eq!(purl_escape("2.43-7"), "2.43-7");
    }

    #[test]
    fn download_location_is_the_first_https_source() {
        let s = vec![
            "../inputs/x.deb".to_owned(),
            "https://deb.debian.org/x.deb".to_owned(),
            "https://snapshot.debian.org/file/1".to_owned(),
        ];
        assert_eq!(download_location(&s), "https://deb.debian.org/x.deb");
        assert_eq!(download_location(&s[..1]), NOASSERTION);
    }
}
