//! Composing the image tree from a recipe: sysroot extraction, PID 1 and its config,
//! executables with their library closure, extra files, and the policy check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::elf::{self, ElfError};
use super::policy::{self, PolicyReport};
use super::sysroot::{Sysroot, SysrootError};
use super::tree::{ImageTree, Node, NodeKind, TreeError};
use super::{materialise, BuildError, FetchedInputs, InitRecord};
use crate::init_build::provenance::Provenance;
use crate::progress::Progress;
use crate::recipe::{self, Recipe};
use crate::uefi::file::ImageFile;
use crate::uefi::uki::{self, StubInfo, UkiError};

/// Where the image's config for PID 1 lives (inside the initramfs, so it is measured).
pub const INIT_CONFIG_PATH: &str = "/etc/zoa/init.json";

/// Directories every image has (mount points PID 1 uses).
const BASE_DIRS: &[&str] = &["/dev", "/proc", "/sys", "/run", "/tmp", "/etc", "/etc/zoa"];

/// Errors while composing the tree.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    Sysroot(#[from] SysrootError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("{what}: {message}")]
    Input { what: String, message: String },
    #[error("PID 1: {0}")]
    Init(String),
    #[error("PID 1: zoa-init not found next to zoa, and ZOA_INIT is not set")]
    InitNotFound,
}

/// The result of composing: everything the writer needs.
#[derive(Debug)]
pub struct Composed {
    pub tree: ImageTree,
    pub policy: PolicyReport,
    /// The kernel and the stub, each opened once: inspected, copied and hashed from here.
    pub kernel: ImageFile,
    pub kernel_release: Option<String>,
    pub stub: ImageFile,
    pub stub_info: StubInfo,
    pub init_record: InitRecord,
}

/// The bytes of `/etc/zoa/init.json`: zoa-init's normalised form (stable: fixed field
/// order, sorted maps, every default written out).
pub fn init_config_bytes(recipe: &Recipe) -> Vec<u8> {
    let config = recipe.init_config();
    if let Some(e) = config.unseal.as_ref().and_then(|u| u.endpoints.as_ref()) {
        log::warn!(
            "[init.unseal.endpoints]: this image unseals through IMDS {} and KMS {}, not the instance's: for rehearsals off EC2 only",
            e.imds.as_deref().unwrap_or("(the instance's)"),
            e.kms.as_deref().unwrap_or("(the region's)")
        );
    }
    config.to_json_pretty().into_bytes()
}

/// Finds the zoa-init binary: the explicit path, `$ZOA_INIT`, or next to the running
/// `zoa` (installed side by side, or where `zoa build-init` puts it in cargo's target
/// directory).
pub fn find_init_binary(explicit: Option<&Path>) -> Result<PathBuf, ComposeError> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("ZOA_INIT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| ComposeError::Init(e.to_string()))?;
    let mut candidates = Vec::new();
    for dir in exe.ancestors().skip(1).take(4) {
        candidates.push(dir.join("zoa-init"));
        // Where `zoa build-init` puts it, beside zoa in cargo's target directory.
        candidates.push(dir.join("zoa-init/zoa-init"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or(ComposeError::InitNotFound)
}

fn open_input(path: &Path, what: &str) -> Result<ImageFile, ComposeError> {
    ImageFile::open(path).map_err(|e| input_err(what, format!("{}: {e}", path.display())))
}

fn input_err(what: &str, message: impl ToString) -> ComposeError {
    ComposeError::Input {
        what: what.to_owned(),
        message: message.to_string(),
    }
}

/// Composes the image tree and runs the policy. `work` is a scratch directory.
pub fn compose(
    recipe: &Recipe,
    inputs: &FetchedInputs,
    work: &Path,
    init_binary: Option<&Path>,
    progress: &Progress,
) -> Result<Composed, BuildError> {
    let spec = &recipe.spec;
    let stub = open_input(&materialise(&spec.stub, inputs, work, "stub.efi")?, "stub")?;
    let (_, stub_info) = uki::inspect_stub(&stub)?;
    let kernel = open_input(
        &materialise(&spec.kernel, inputs, work, "vmlinuz")?,
        "kernel",
    )?;
    let kernel_release = uki::inspect_kernel(&kernel)?;

    let stage = progress.stage(format!(
        "extracting {} sysroot packages",
        spec.sysroot.packages.len()
    ));
    let root = work.join("sysroot");
    std::fs::create_dir(&root).map_err(|e| input_err("sysroot", e))?;
    let mut debs = Vec::new();
    for name in &spec.sysroot.packages {
        let path = inputs.path(name).to_owned();
        let info = crate::deb::read_info(&path)?;
        debs.push((format!("{} {}", info.package, info.version), path));
    }
    let sysroot = Sysroot::create(&root, &debs).map_err(ComposeError::from)?;
    stage.finish();

    let stage = progress.stage("composing the image".into());
    let mut tree = ImageTree::new();
    for d in BASE_DIRS {
        tree.insert(d, Node::dir(0o755, "zoa"))
            .map_err(ComposeError::from)?;
    }
    tree.insert(
        "/dev/console",
        Node {
            kind: NodeKind::CharDev { major: 5, minor: 1 },
            mode: 0o600,
            origin: "zoa".into(),
        },
    )
    .map_err(ComposeError::from)?;

    let init_path = match &spec.init.input {
        Some(name) => inputs.path(name).to_owned(),
        None => find_init_binary(init_binary)?,
    };
    let init_record = add_init(&mut tree, &init_path)?;
    tree.insert(
        INIT_CONFIG_PATH,
        Node::bytes(init_config_bytes(recipe), 0o644, "recipe [init]"),
    )
    .map_err(ComposeError::from)?;

    add_payload(recipe, inputs, &sysroot, &mut tree, work)?;
    stage.finish();

    let stage = progress.stage("checking the shell-free policy".into());
    let policy = policy::check(&tree, &spec.image.cmdline, &spec.policy.exceptions)
        .map_err(|e| input_err("policy check", e))?;
    stage.finish();
    Ok(Composed {
        tree,
        policy,
        kernel,
        kernel_release,
        stub,
        stub_info,
        init_record,
    })
}

fn add_init(tree: &mut ImageTree, init_path: &Path) -> Result<InitRecord, ComposeError> {
    let what = init_path.display().to_string();
    let bytes = std::fs::read(init_path).map_err(|e| ComposeError::Init(format!("{what}: {e}")))?;
    let info = elf::parse_elf(&what, &bytes).map_err(|e| ComposeError::Init(e.to_string()))?;
    if !info.is_static {
        return Err(ComposeError::Init(format!(
            "{what} is dynamically linked; PID 1 must be static (build zoa-init for x86_64-unknown-linux-musl)"
        )));
    }
    let sha256 = crate::digest::sha256_bytes(&bytes);
    let provenance =
        Provenance::read_for(init_path, &sha256).map_err(|e| ComposeError::Init(e.to_string()))?;
    if provenance.is_none() {
        log::warn!(
            "{what} has no provenance ({}): it was not built by `zoa build-init`, so nobody else can rebuild this image",
            Provenance::path_for(init_path).display()
        );
    }
    let size = bytes.len() as u64;
    tree.insert("/init", Node::bytes(bytes, 0o755, "zoa-init"))?;
    Ok(InitRecord {
        path: "/init".into(),
        sha256,
        size,
        provenance,
    })
}

fn origin_of(sysroot: &Sysroot, path: &str) -> String {
    sysroot.owner(path).unwrap_or("sysroot").to_owned()
}

/// Adds a sysroot path with the symlinks leading to it; returns the real path.
fn add_from_sysroot(
    sysroot: &Sysroot,
    tree: &mut ImageTree,
    path: &str,
) -> Result<String, ComposeError> {
    let resolved = sysroot.resolve(path)?;
    for (link, target) in &resolved.links {
        tree.insert(link, Node::symlink(target, &origin_of(sysroot, link)))?;
    }
    add_real(sysroot, tree, &resolved.real)?;
    Ok(resolved.real)
}

fn add_real(sysroot: &Sysroot, tree: &mut ImageTree, real: &str) -> Result<(), ComposeError> {
    use std::os::unix::fs::PermissionsExt;
    let host = sysroot.host_path(real);
    let meta = std::fs::symlink_metadata(&host).map_err(|e| input_err(real, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    let origin = origin_of(sysroot, real);
    if meta.is_dir() {
        tree.replace_dir_mode(real, mode, &origin)?;
    } else if meta.is_file() {
        tree.insert(real, Node::host_file(host, meta.len(), mode, &origin))?;
    } else {
        return Err(input_err(
            real,
            "is neither a file nor a directory in the sysroot",
        ));
    }
    Ok(())
}

/// Copies a sysroot directory recursively (sorted, symlinks kept as symlinks).
fn add_tree(sysroot: &Sysroot, tree: &mut ImageTree, dir: &str) -> Result<(), ComposeError> {
    let real = add_from_sysroot(sysroot, tree, dir)?;
    let host = sysroot.host_path(&real);
    let mut entries: Vec<_> = std::fs::read_dir(&host)
        .map_err(|e| input_err(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| input_err(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = format!("{real}/{name}");
        let ft = entry.file_type().map_err(|e| input_err(&child, e))?;
        if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(|e| input_err(&child, e))?;
            tree.insert(
                &child,
                Node::symlink(&target.to_string_lossy(), &origin_of(sysroot, &child)),
            )?;
        } else if ft.is_dir() {
            add_tree(sysroot, tree, &child)?;
        } else {
            add_real(sysroot, tree, &child)?;
        }
    }
    Ok(())
}

/// How errors name the `i`th `[[payload.files]]` entry.
fn payload_file_label(i: usize, f: &recipe::PayloadFile) -> String {
    format!("payload.files[{i}] ({})", f.path)
}

/// The `[[payload.files]]` taken from a package member (`input` + `member`), each written to
/// `work/payload-N` (N: its index), with one pass over each package's archive for all its
/// members.
fn extract_payload_members(
    recipe: &Recipe,
    inputs: &FetchedInputs,
    work: &Path,
) -> Result<BTreeMap<usize, PathBuf>, BuildError> {
    let mut by_input: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
    for (i, f) in recipe.spec.payload.files.iter().enumerate() {
        if let (None, None, Some(input), Some(member)) =
            (&f.content, &f.source, &f.input, &f.member)
        {
            by_input.entry(input).or_default().push((i, member));
        }
    }
    let mut dests = BTreeMap::new();
    for (input, wanted) in by_input {
        let mut files = Vec::with_capacity(wanted.len());
        for (i, _) in &wanted {
            let dest = work.join(format!("payload-{i}"));
            let file = std::fs::File::create(&dest).map_err(|e| {
                input_err(&payload_file_label(*i, &recipe.spec.payload.files[*i]), e)
            })?;
            files.push(file);
            dests.insert(*i, dest);
        }
        let mut requests: Vec<(&str, &mut dyn std::io::Write)> = wanted
            .iter()
            .zip(files.iter_mut())
            .map(|((_, member), file)| (*member, file as &mut dyn std::io::Write))
            .collect();
        crate::deb::copy_data_files(inputs.path(input), &mut requests)?;
    }
    Ok(dests)
}

fn add_payload(
    recipe: &Recipe,
    inputs: &FetchedInputs,
    sysroot: &Sysroot,
    tree: &mut ImageTree,
    work: &Path,
) -> Result<(), BuildError> {
    let p = &recipe.spec.payload;
    let mut elf_roots = Vec::new();
    for path in p.executables.iter().chain(&p.libraries) {
        let path = recipe::image_path(path).map_err(|m| input_err("payload", m))?;
        let real = add_from_sysroot(sysroot, tree, &path).map_err(BuildError::from)?;
        if !elf::is_elf(sysroot, &real) {
            return Err(input_err(
                &path,
                "is not an ELF file (only ELF executables and libraries are allowed)",
            )
            .into());
        }
        elf_roots.push(real);
    }
    let closure = elf::closure(sysroot, &elf_roots).map_err(ComposeError::from)?;
    for (link, target) in &closure.links {
        tree.insert(link, Node::symlink(target, &origin_of(sysroot, link)))
            .map_err(ComposeError::from)?;
    }
    for file in &closure.files {
        add_real(sysroot, tree, file)?;
    }
    for dir in &p.trees {
        let dir = recipe::image_path(dir).map_err(|m| input_err("payload.trees", m))?;
        add_tree(sysroot, tree, &dir)?;
    }
    let members = extract_payload_members(recipe, inputs, work)?;
    for (i, f) in p.files.iter().enumerate() {
        let what = payload_file_label(i, f);
        let path = recipe::image_path(&f.path).map_err(|m| input_err(&what, m))?;
        let (node_source, size, is_elf) = if let Some(content) = &f.content {
            let bytes = content.clone().into_bytes();
            let elf = bytes.starts_with(b"\x7fELF");
            (
                super::tree::FileSource::Bytes(bytes.clone()),
                bytes.len() as u64,
                elf,
            )
        } else if let Some(src) = &f.source {
            let rel = recipe::relative_inside(src).map_err(|m| input_err(&what, m))?;
            let host = recipe.base_dir.join(rel);
            let meta = std::fs::metadata(&host)
                .map_err(|e| input_err(&what, format!("{}: {e}", host.display())))?;
            if !meta.is_file() {
                return Err(
                    input_err(&what, format!("{} is not a regular file", host.display())).into(),
                );
            }
            let elf = starts_with_elf(&host);
            (super::tree::FileSource::Host(host), meta.len(), elf)
        } else if let Some(input) = &f.input {
            let host = match members.get(&i) {
                Some(dest) => dest.clone(),
                None => inputs.path(input).to_owned(),
            };
            let size = std::fs::metadata(&host)
                .map_err(|e| input_err(&what, e))?
                .len();
            let elf = starts_with_elf(&host);
            (super::tree::FileSource::Host(host), size, elf)
        } else {
            return Err(input_err(&what, "has no content").into());
        };
        let mode = match &f.mode {
            Some(m) => recipe::parse_mode(m).map_err(|e| input_err(&what, e))?,
            None if is_elf => 0o755,
            None => 0o644,
        };
        tree.insert(
            &path,
            Node {
                kind: NodeKind::File {
                    source: node_source,
                    size,
                },
                mode,
                origin: "recipe".into(),
            },
        )
        .map_err(ComposeError::from)?;
    }
    for l in &p.symlinks {
        let path = recipe::image_path(&l.path).map_err(|m| input_err("payload.symlinks", m))?;
        tree.insert(&path, Node::symlink(&l.target, "recipe"))
            .map_err(ComposeError::from)?;
    }
    for d in &p.dirs {
        let path = recipe::image_path(&d.path).map_err(|m| input_err("payload.dirs", m))?;
        let mode = match &d.mode {
            Some(m) => recipe::parse_mode(m).map_err(|e| input_err(&d.path, e))?,
            None => 0o755,
        };
        tree.replace_dir_mode(&path, mode, "recipe")
            .map_err(ComposeError::from)?;
    }
    Ok(())
}

fn starts_with_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| &magic == b"\x7fELF")
        .unwrap_or(false)
}

impl From<UkiError> for ComposeError {
    fn from(e: UkiError) -> Self {
        ComposeError::Input {
            what: "UKI".into(),
            message: e.to_string(),
        }
    }
}
