//! Library closure of ELF executables, resolved inside the sysroot only.
//!
//! Follows what glibc's ld.so does at run time: PT_INTERP, then for every DT_NEEDED the
//! DT_RPATH of the loading object and its loaders (when it has no DT_RUNPATH), then its
//! DT_RUNPATH, then the default directories; `$ORIGIN`/`$LIB`/`$PLATFORM` are expanded.
//! The image carries exactly the files found this way plus the symlinks on the way.

use goblin::elf::{header, program_header, Elf};
use std::collections::{BTreeSet, VecDeque};

use super::sysroot::{Resolved, Sysroot, SysrootError};

/// Where ld.so looks last (Debian x86_64; merged /usr makes /lib and /usr/lib the same,
/// so /usr is tried first to keep images small).
const DEFAULT_LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib",
    "/lib",
    "/usr/lib64",
    "/lib64",
];

/// Largest ELF file read whole for parsing (libraries are megabytes; this stops absurd input).
const MAX_ELF_BYTES: u64 = 1 << 30;

/// Errors of the closure walk.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{binary}: needs {library}, which is not in the sysroot (searched: {searched})")]
    MissingLibrary {
        binary: String,
        library: String,
        searched: String,
    },
    #[error("{binary}: its interpreter {interp} is not in the sysroot")]
    MissingInterpreter { binary: String, interp: String },
    #[error("{path}: not an ELF file for x86_64: {message}")]
    NotElf { path: String, message: String },
    #[error(transparent)]
    Sysroot(#[from] SysrootError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Everything needed to run a set of ELF objects.
#[derive(Debug, Default, Clone)]
pub struct Closure {
    /// Real (non-symlink) image paths of every ELF object, roots included.
    pub files: BTreeSet<String>,
    /// Every symlink followed: (image path, target).
    pub links: BTreeSet<(String, String)>,
}

impl Closure {
    fn add(&mut self, r: &Resolved) {
        self.files.insert(r.real.clone());
        self.links.extend(r.links.iter().cloned());
    }
}

/// The parts of an ELF object the closure needs.
#[derive(Debug, Clone, Default)]
pub struct ElfInfo {
    pub interp: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    /// True for a statically linked executable without PT_INTERP and DT_NEEDED.
    pub is_static: bool,
}

/// Parses the dynamic information of an ELF image.
pub fn parse_elf(path: &str, bytes: &[u8]) -> Result<ElfInfo, ElfError> {
    let not_elf = |m: String| ElfError::NotElf {
        path: path.to_owned(),
        message: m,
    };
    let elf = Elf::parse(bytes).map_err(|e| not_elf(e.to_string()))?;
    if elf.header.e_machine != header::EM_X86_64 || !elf.is_64 {
        return Err(not_elf(format!(
            "machine {} (64-bit: {})",
            elf.header.e_machine, elf.is_64
        )));
    }
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let has_interp = elf
        .program_headers
        .iter()
        .any(|p| p.p_type == program_header::PT_INTERP);
    Ok(ElfInfo {
        interp: elf.interpreter.map(str::to_owned),
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        is_static: !has_interp && elf.libraries.is_empty(),
    })
}

fn read_elf(sysroot: &Sysroot, image_path: &str) -> Result<ElfInfo, ElfError> {
    let host = sysroot.host_path(image_path);
    let io_err = |source| ElfError::Io {
        path: image_path.to_owned(),
        source,
    };
    let len = std::fs::metadata(&host).map_err(io_err)?.len();
    if len > MAX_ELF_BYTES {
        return Err(ElfError::NotElf {
            path: image_path.to_owned(),
            message: format!("{len} bytes is too large for an executable"),
        });
    }
    let bytes = std::fs::read(&host).map_err(io_err)?;
    parse_elf(image_path, &bytes)
}

/// True when the file starts with the ELF magic.
pub fn is_elf(sysroot: &Sysroot, image_path: &str) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(sysroot.host_path(image_path))
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| &magic == b"\x7fELF")
        .unwrap_or(false)
}

/// Expands `$ORIGIN`, `${ORIGIN}`, `$LIB` and `$PLATFORM` in a search path entry.
fn expand(entry: &str, origin: &str) -> String {
    entry
        .replace("${ORIGIN}", origin)
        .replace("$ORIGIN", origin)
        .replace("${LIB}", "lib/x86_64-linux-gnu")
        .replace("$LIB", "lib/x86_64-linux-gnu")
        .replace("${PLATFORM}", "x86_64")
        .replace("$PLATFORM", "x86_64")
}

fn dirname(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "/",
    }
}

/// Computes the closure of `roots` (absolute sysroot paths of executables or libraries).
pub fn closure(sysroot: &Sysroot, roots: &[String]) -> Result<Closure, ElfError> {
    let mut out = Closure::default();
    // (image path as found, real path, rpaths inherited from loaders)
    let mut queue: VecDeque<(String, Vec<String>)> = VecDeque::new();
    for root in roots {
        let r = sysroot.resolve(root)?;
        out.add(&r);
        queue.push_back((r.real.clone(), Vec::new()));
    }
    let mut visited = BTreeSet::new();
    while let Some((real, inherited_rpath)) = queue.pop_front() {
        if !visited.insert(real.clone()) {
            continue;
        }
        let info = read_elf(sysroot, &real)?;
        if let Some(interp) = &info.interp {
            let r = sysroot
                .resolve(interp)
                .map_err(|_| ElfError::MissingInterpreter {
                    binary: real.clone(),
                    interp: interp.clone(),
                })?;
            out.add(&r);
            queue.push_back((r.real.clone(), Vec::new()));
        }
        let origin = dirname(&real).to_owned();
        // DT_RPATH applies to the object's own needs and, transitively, to what it loads,
        // but only when the object has no DT_RUNPATH.
        let mut rpath_chain: Vec<String> = Vec::new();
        if info.runpath.is_empty() {
            rpath_chain.extend(info.rpath.iter().map(|e| expand(e, &origin)));
            rpath_chain.extend(inherited_rpath.iter().cloned());
        }
        let runpath: Vec<String> = info.runpath.iter().map(|e| expand(e, &origin)).collect();
        for lib in &info.needed {
            let r = find_library(sysroot, lib, &rpath_chain, &runpath).ok_or_else(|| {
                ElfError::MissingLibrary {
                    binary: real.clone(),
                    library: lib.clone(),
                    searched: search_dirs(&rpath_chain, &runpath).join(":"),
                }
            })?;
            out.add(&r);
            let passed_down = if info.runpath.is_empty() {
                rpath_chain.clone()
            } else {
                inherited_rpath.clone()
            };
            queue.push_back((r.real.clone(), passed_down));
        }
    }
    Ok(out)
}

fn search_dirs(rpath: &[String], runpath: &[String]) -> Vec<String> {
    rpath
        .iter()
        .chain(runpath.iter())
        .cloned()
        .chain(DEFAULT_LIB_DIRS.iter().map(|s| (*s).to_owned()))
        .collect()
}

fn find_library(
    sysroot: &Sysroot,
    lib: &str,
    rpath: &[String],
    runpath: &[String],
) -> Option<Resolved> {
    if lib.contains('/') {
        return sysroot.resolve(lib).ok();
    }
    search_dirs(rpath, runpath).iter().find_map(|dir| {
        let candidate = format!("{}/{lib}", dir.trim_end_matches('/'));
        let r = sysroot.resolve(&candidate).ok()?;
        // ld.so skips objects of the wrong class or machine and keeps searching.
        read_elf(sysroot, &r.real).ok().map(|_| r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_origin() {
        assert_eq!(expand("$ORIGIN/../lib", "/usr/bin"), "/usr/bin/../lib");
        assert_eq!(
            expand("${ORIGIN}/x:$LIB", "/a"),
            "/a/x:lib/x86_64-linux-gnu"
        );
        assert_eq!(dirname("/usr/bin/x"), "/usr/bin");
        assert_eq!(dirname("/x"), "/");
    }

    #[test]
    fn garbage_is_not_elf() {
        let e = parse_elf("/x", b"not an elf at all")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/x") && e.contains("not an ELF"), "{e}");
        assert!(parse_elf("/x", b"\x7fELF\x02\x01\x01").is_err());
    }

    #[test]
    fn host_binary_parses() {
        // The test binary itself is an x86_64 ELF: exercise the parser on a real object.
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(exe).unwrap();
        let info = parse_elf("/self", &bytes).unwrap();
        assert!(info.interp.is_some());
        assert!(info.needed.iter().any(|n| n.starts_with("libc.so")));
    }
}
