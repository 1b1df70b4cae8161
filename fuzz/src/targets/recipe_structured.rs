//! Recipes built from structure, not bytes: `arbitrary` picks every field from a vocabulary
//! of valid and hostile values (traversal, absolute and empty paths, NUL bytes, names that
//! are almost valid, inputs that do not exist), the target writes them as TOML and parses
//! that. Plain bytes rarely get past the TOML grammar into validation; these do. An
//! accepted recipe must keep its promises, checked here independently of zoa's validators:
//! image paths are absolute and never climb, local sources stay in the recipe directory,
//! every input named exists, and writing the recipe back parses to the same recipe.
use arbitrary::{Arbitrary, Unstructured};
use std::path::{Component, Path};
use toml::{Table, Value};

/// Each vocabulary's valid values come first, then hostile ones (`VALID` of them valid);
/// `pick` takes a valid one three times in four, so whole recipes are often accepted and
/// validation of the rest runs deep.
struct Words {
    valid: usize,
    all: &'static [&'static str],
}

const NAMES: Words = Words {
    valid: 4,
    all: &[
        "demo",
        "llama-server",
        "1.0",
        "a_b",
        "",
        "a b",
        "../x",
        "x/y",
        "-",
        "é",
    ],
};
const IMAGE_PATHS: Words = Words {
    valid: 4,
    all: &[
        "/usr/bin/llama-server",
        "/models/m.gguf",
        "/./etc/zoa",
        "//usr//lib",
        "/",
        "",
        "usr/bin/x",
        "/usr/../etc/shadow",
        "/..",
        "/a/b/..",
        "/nul\0byte",
        "/ünïcode",
    ],
};
const LOCAL_PATHS: Words = Words {
    valid: 3,
    all: &[
        "model.gguf",
        "./a/b",
        "dir/",
        "../outside",
        "a/../../b",
        "/etc/passwd",
        "",
        ".",
        "a\0b",
    ],
};
const MEMBERS: Words = Words {
    valid: 4,
    all: &[
        "boot/vmlinuz",
        "./usr/lib/x",
        "/usr/lib/x",
        "a/./b",
        "../x",
        "",
    ],
};
const SHA256: Words = Words {
    valid: 1,
    all: &[
        "0000000000000000000000000000000000000000000000000000000000000000",
        "ABCDEF0000000000000000000000000000000000000000000000000000000000",
        "00",
        "",
    ],
};
const MODES: Words = Words {
    valid: 2,
    all: &["0644", "0o755", "4755", "17777", "x", ""],
};
const LINES: Words = Words {
    valid: 2,
    all: &["console=ttyS0", "init=/bin/sh", "a\nb", "nul\0", ""],
};

fn pick(u: &mut Unstructured, words: &Words) -> arbitrary::Result<&'static str> {
    let from = if u.ratio(3u8, 4u8)? {
        &words.all[..words.valid]
    } else {
        words.all
    };
    u.choose(from).copied()
}

fn text(u: &mut Unstructured, from: &Words) -> arbitrary::Result<Value> {
    Ok(Value::String(pick(u, from)?.to_owned()))
}

fn list(u: &mut Unstructured, from: &Words) -> arbitrary::Result<Value> {
    let n = u.int_in_range(0..=3)?;
    (0..n)
        .map(|_| text(u, from))
        .collect::<arbitrary::Result<_>>()
        .map(Value::Array)
}

fn table(entries: Vec<(&str, Value)>) -> Value {
    Value::Table(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

/// A recipe document: the required sections always, each optional part when `arbitrary`
/// says so.
fn recipe(u: &mut Unstructured) -> arbitrary::Result<Table> {
    let input_names: Vec<&str> = (0..u.int_in_range(1..=3)?)
        .map(|_| pick(u, &NAMES))
        .collect::<arbitrary::Result<_>>()?;
    let mut doc = Table::new();
    let mut image = vec![
        ("name", text(u, &NAMES)?),
        ("version", text(u, &NAMES)?),
        ("cmdline", text(u, &LINES)?),
    ];
    if bool::arbitrary(u)? {
        image.push(("source_date_epoch", Value::Integer(i64::arbitrary(u)?)));
    }
    if bool::arbitrary(u)? {
        image.push((
            "os_release",
            table(vec![(
                u.choose(&["ID", "VERSION_ID", "id", ""])?,
                text(u, &LINES)?,
            )]),
        ));
    }
    if bool::arbitrary(u)? {
        image.push((
            "compression",
            Value::String(u.choose(&["none", "zstd", "gzip", ""])?.to_string()),
        ));
    }
    if bool::arbitrary(u)? {
        let level = *u.choose(&[-1i64, 0, 1, 12, 19, 20, 22])?;
        image.push(("compression_level", Value::Integer(level)));
    }
    doc.insert("image".into(), table(image));
    let mut inputs = Table::new();
    for name in &input_names {
        let sources = list(u, &LOCAL_PATHS)?;
        inputs.insert(
            (*name).to_owned(),
            table(vec![("sha256", text(u, &SHA256)?), ("sources", sources)]),
        );
    }
    doc.insert("inputs".into(), Value::Table(inputs));
    let input_ref = |u: &mut Unstructured| -> arbitrary::Result<Value> {
        match u.choose(&input_names) {
            Ok(name) if u.ratio(7u8, 8u8)? => Ok(Value::String((*name).to_owned())),
            _ => text(u, &NAMES),
        }
    };
    for part in ["kernel", "stub"] {
        let mut r = vec![("input", input_ref(u)?)];
        if bool::arbitrary(u)? {
            r.push(("path", text(u, &MEMBERS)?));
        }
        doc.insert(part.into(), table(r));
    }
    let mut init = vec![("modules", list(u, &IMAGE_PATHS)?)];
    if bool::arbitrary(u)? {
        init.push(("hostname", text(u, &NAMES)?));
    }
    if bool::arbitrary(u)? {
        init.push((
            "server",
            table(vec![
                ("argv", list(u, &IMAGE_PATHS)?),
                ("cwd", text(u, &IMAGE_PATHS)?),
            ]),
        ));
    }
    doc.insert("init".into(), table(init));
    let mut files = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let mut f = vec![("path", text(u, &IMAGE_PATHS)?)];
        match u.int_in_range(0..=3)? {
            0 => f.push(("source", text(u, &LOCAL_PATHS)?)),
            1 => f.push(("content", text(u, &LINES)?)),
            2 => {
                f.push(("input", input_ref(u)?));
                f.push(("member", text(u, &MEMBERS)?));
            }
            _ => f.push(("member", text(u, &MEMBERS)?)),
        }
        if bool::arbitrary(u)? {
            f.push(("mode", text(u, &MODES)?));
        }
        files.push(table(f));
    }
    let mut links = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        links.push(table(vec![
            ("path", text(u, &IMAGE_PATHS)?),
            ("target", text(u, &LOCAL_PATHS)?),
        ]));
    }
    doc.insert(
        "payload".into(),
        table(vec![
            ("executables", list(u, &IMAGE_PATHS)?),
            ("trees", list(u, &IMAGE_PATHS)?),
            ("files", Value::Array(files)),
            ("symlinks", Value::Array(links)),
        ]),
    );
    Ok(doc)
}

/// Absolute, not the root, no `..` and no NUL: what every image path must be.
fn assert_image_path(p: &str) {
    assert!(
        p.starts_with('/') && !p.contains('\0'),
        "accepted image path {p:?}"
    );
    assert!(
        !p.split('/').any(|c| c == ".."),
        "accepted image path {p:?} climbs"
    );
    assert!(
        p.split('/').any(|c| !c.is_empty() && c != "."),
        "accepted the root {p:?}"
    );
}

/// Relative, inside the recipe directory.
fn assert_stays_inside(p: &str) {
    assert!(!p.is_empty() && !p.contains('\0'), "accepted source {p:?}");
    for c in Path::new(p).components() {
        assert!(
            matches!(c, Component::Normal(_) | Component::CurDir),
            "accepted source {p:?} leaves the recipe directory"
        );
    }
}

fn assert_promises_kept(r: &zoa::recipe::Recipe) {
    let image = &r.spec.image;
    if let Some(level) = image.zstd_level() {
        assert!(
            zoa::recipe::ZSTD_LEVELS.contains(&level),
            "accepted zstd level {level}"
        );
    } else {
        assert!(image.compression_level.is_none(), "a level without zstd");
    }
    let s = &r.spec;
    for reference in [&s.kernel.input, &s.stub.input] {
        assert!(
            s.inputs.contains_key(reference),
            "unknown input {reference:?}"
        );
    }
    for m in &s.init.modules {
        assert_image_path(m);
    }
    if let Some(server) = &s.init.server {
        assert_image_path(&server.argv[0]);
        if let Some(cwd) = &server.cwd {
            assert_image_path(cwd);
        }
    }
    let p = &s.payload;
    for path in p.executables.iter().chain(&p.trees) {
        assert_image_path(path);
    }
    for f in &p.files {
        assert_image_path(&f.path);
        if let Some(source) = &f.source {
            assert_stays_inside(source);
        }
        if let Some(input) = &f.input {
            assert!(s.inputs.contains_key(input), "unknown input {input:?}");
        }
    }
    for l in &p.symlinks {
        assert_image_path(&l.path);
    }
    for (name, input) in &s.inputs {
        assert!(
            !name.is_empty() && !name.contains('/'),
            "accepted input name {name:?}"
        );
        assert!(input.sha256.len() == 64 && !input.sources.is_empty());
    }
}

/// The recipe text `data` chooses, if it chooses a whole one.
pub fn render(data: &[u8]) -> Option<String> {
    let mut u = Unstructured::new(data);
    toml::to_string(&recipe(&mut u).ok()?).ok()
}

pub fn run(data: &[u8]) {
    let Some(text) = render(data) else {
        return;
    };
    let path = Path::new("fuzz/recipe.toml");
    match zoa::recipe::Recipe::parse(path, text.as_bytes()) {
        Ok(r) => {
            assert_promises_kept(&r);
            // Written back and read again, the recipe is the same recipe.
            let again = toml::to_string(&r.spec).expect("an accepted recipe serialises");
            let r2 = zoa::recipe::Recipe::parse(path, again.as_bytes())
                .unwrap_or_else(|e| panic!("the written-back recipe is refused: {e}\n{again}"));
            assert_eq!(
                serde_json::to_value(&r.spec).unwrap(),
                serde_json::to_value(&r2.spec).unwrap()
            );
            let _ = r.init_config();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
