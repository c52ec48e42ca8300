//! ARCHITECTURE.md cannot rot: every name it writes in backticks that looks
//! like a file, a type or a function must still exist.
//!
//! What counts (the same rules ARCHITECTURE.md states at its top):
//! - a path from the repository root, `crates/…`, `bench/…`, `buildpacks/…`,
//!   `examples/…`, `.ci/…` or a root file such as `Cargo.toml`: the file or
//!   directory exists;
//! - a `CamelCase` word: a struct, enum, trait, type alias or union of that
//!   name is defined in some `.rs` file of the workspace;
//! - `Type::member`: `Type` is defined, and a file that defines it also
//!   defines `fn member` or names `member` (a variant, a constant);
//! - `crate_or_crew_crate::module::item` (`crew_runtime::os`,
//!   `runtime::init::sys`): each module segment is a file of that crate
//!   (`module.rs` or `module/mod.rs`), and a last non-module segment is
//!   defined somewhere in the crate;
//! - `name()`: a function of that name is defined somewhere.
//!
//! Anything else in backticks (commands, log lines, environment variables)
//! is prose and is not checked. Fenced code blocks are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root above crates/crew")
}

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// What the workspace's Rust files define, by name.
#[derive(Default)]
struct Definitions {
    /// struct, enum, trait, type, union: name → files defining it.
    types: BTreeMap<String, BTreeSet<PathBuf>>,
    /// Functions, modules, constants, statics and macros.
    items: BTreeSet<String>,
    /// Per crate directory name (`runtime`), every name defined in it.
    by_crate: BTreeMap<String, BTreeSet<String>>,
    /// Per file, every name defined in it.
    by_file: BTreeMap<PathBuf, BTreeSet<String>>,
    /// The words of each file, for `Type::member`.
    text: BTreeMap<PathBuf, BTreeSet<String>>,
}

fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '!'))
        .filter(|w| !w.is_empty())
        .collect()
}

fn definitions(root: &Path) -> Definitions {
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("bench"), &mut files);
    let mut defs = Definitions::default();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let krate = file
            .strip_prefix(root.join("crates"))
            .ok()
            .and_then(|p| p.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let w = words(&text);
        for pair in w.windows(2) {
            let (keyword, name) = (pair[0], pair[1]);
            let is_type = matches!(keyword, "struct" | "enum" | "trait" | "type" | "union");
            let is_item = matches!(keyword, "fn" | "mod" | "const" | "static" | "macro_rules!");
            if is_type {
                defs.types
                    .entry(name.to_string())
                    .or_default()
                    .insert(file.clone());
            }
            if is_item {
                defs.items.insert(name.to_string());
            }
            if is_type || is_item {
                defs.by_file
                    .entry(file.clone())
                    .or_default()
                    .insert(name.to_string());
                if let Some(krate) = &krate {
                    defs.by_crate
                        .entry(krate.clone())
                        .or_default()
                        .insert(name.to_string());
                }
            }
        }
        let all = w.iter().map(|w| w.to_string()).collect();
        defs.text.insert(file, all);
    }
    defs
}

/// The backticked spans of `markdown` outside fenced blocks, with their
/// line numbers.
fn spans(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (index, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let (Some(inside), Some(_)) = (parts.next(), parts.next()) {
            out.push((index + 1, inside.to_string()));
        }
    }
    out
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `CamelCase`: a capital first, and a lower-case letter somewhere, so that
/// `PORT`, `H14` and `GET` are prose.
fn is_type_name(s: &str) -> bool {
    is_ident(s)
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.contains('_')
}

const ROOT_DIRS: &[&str] = &["crates/", "bench/", "buildpacks/", "examples/", ".ci/"];
const ROOT_FILES: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "README.md",
    "BENCHMARKS.md",
    "ARCHITECTURE.md",
];

/// Why `span` names nothing that exists, or `None` when it does (or is
/// prose).
fn stale(root: &Path, defs: &Definitions, span: &str) -> Option<String> {
    let span = span.trim();
    if ROOT_DIRS.iter().any(|d| span.starts_with(d)) || ROOT_FILES.contains(&span) {
        let path = span.trim_end_matches('/');
        return (!root.join(path).exists()).then(|| format!("no file or directory `{path}`"));
    }
    let (path, call) = match span.strip_suffix("()") {
        Some(path) => (path, true),
        None => (span, false),
    };
    let segments: Vec<&str> = path.split("::").collect();
    if !segments.iter().all(|s| is_ident(s)) {
        return None;
    }
    match segments.as_slice() {
        [name] if call => (!defs.items.contains(*name)).then(|| format!("no function `{name}`")),
        [name] if is_type_name(name) => {
            (!defs.types.contains_key(*name)).then(|| format!("no type `{name}`"))
        }
        [_] => None,
        [first, ..] if is_type_name(first) => member_stale(defs, &segments),
        [first, rest @ ..] => {
            if EXTERNAL.contains(first) {
                return None;
            }
            let roots = module_roots(root, defs, first);
            if roots.is_empty() {
                return Some(format!("no crate or module `{first}`"));
            }
            // The path is good if it resolves from any module of that name.
            let mut why = None;
            for (krate, module) in roots {
                match resolve(root, defs, &krate, module, rest) {
                    None => return None,
                    Some(reason) => why = Some(reason),
                }
            }
            why
        }
        [] => None,
    }
}

/// Roots that are not crew's: their paths are prose here.
const EXTERNAL: &[&str] = &[
    "std",
    "core",
    "alloc",
    "tokio",
    "axum",
    "hyper",
    "serde",
    "serde_json",
    "kube",
    "libc",
    "rustix",
    "clap",
    "anyhow",
    "thiserror",
];

/// Where a Rust path's first segment can point: a crate (`crew_runtime`,
/// `runtime`), as `(crate, its src)`, or every module file of that name
/// (`client` is `crates/crew/src/client.rs`), as `(crate, module dir)`.
fn module_roots(root: &Path, defs: &Definitions, first: &str) -> Vec<(String, PathBuf)> {
    let crates = root.join("crates");
    let name = first.strip_prefix("crew_").unwrap_or(first);
    if crates.join(name).join("src").is_dir() {
        return vec![(name.to_string(), crates.join(name).join("src"))];
    }
    defs.text
        .keys()
        .filter_map(|file| {
            let rel = file.strip_prefix(&crates).ok()?;
            let krate = rel
                .components()
                .next()?
                .as_os_str()
                .to_string_lossy()
                .into_owned();
            if rel.components().nth(1)?.as_os_str() != "src" {
                return None;
            }
            let stem = file.file_stem()?.to_string_lossy().into_owned();
            let parent = file.parent()?;
            if stem == first {
                Some((krate, parent.join(first)))
            } else if stem == "mod" && parent.file_name()? == first {
                Some((krate, parent.to_path_buf()))
            } else {
                None
            }
        })
        .collect()
}

/// The file of the module whose directory is `dir` (`x/` is `x.rs` or
/// `x/mod.rs`; a crate's `src/` is `lib.rs` or `main.rs`).
fn module_file(dir: &Path) -> Option<PathBuf> {
    if dir.file_name().is_some_and(|n| n == "src") {
        return ["lib.rs", "main.rs"]
            .iter()
            .map(|f| dir.join(f))
            .find(|f| f.is_file());
    }
    let as_file = dir.with_extension("rs");
    if as_file.is_file() {
        return Some(as_file);
    }
    Some(dir.join("mod.rs")).filter(|f| f.is_file())
}

/// Resolves `rest` from the module at `dir` of `krate`: each segment a
/// submodule, until an item, which the module defines (a crate root's
/// items may be re-exports, so any item of the crate will do there).
fn resolve(
    root: &Path,
    defs: &Definitions,
    krate: &str,
    dir: PathBuf,
    rest: &[&str],
) -> Option<String> {
    let mut dir = dir;
    for (i, segment) in rest.iter().enumerate() {
        let sub = dir.join(segment);
        if module_file(&sub).is_some() {
            dir = sub;
            continue;
        }
        if is_type_name(segment) && i + 1 < rest.len() {
            return member_stale(defs, &rest[i..]);
        }
        let at_root = dir.file_name().is_some_and(|n| n == "src");
        let known = if at_root {
            defs.by_crate
                .get(krate)
                .is_some_and(|n| n.contains(*segment))
        } else {
            module_file(&dir)
                .and_then(|f| defs.by_file.get(&f))
                .is_some_and(|n| n.contains(*segment))
        };
        return (!known).then(|| {
            format!(
                "`{segment}` is neither a module nor an item of {}",
                dir.strip_prefix(root).unwrap_or(&dir).display()
            )
        });
    }
    None
}

/// `Type::member…`: the type exists, and a file defining it has `member`.
fn member_stale(defs: &Definitions, segments: &[&str]) -> Option<String> {
    let ty = segments[0];
    let Some(files) = defs.types.get(ty) else {
        return Some(format!("no type `{ty}`"));
    };
    let member = segments[1];
    let defines_type = |file: &PathBuf| files.contains(file);
    let found = defs.text.iter().any(|(file, words)| {
        if !words.contains(ty) {
            return false;
        }
        let defines_member = defs.by_file.get(file).is_some_and(|n| n.contains(member));
        // A variant or an associated constant is named in the type's file.
        defines_member || (defines_type(file) && words.contains(member))
    });
    (!found).then(|| format!("`{ty}` has no `{member}`"))
}

#[test]
fn every_path_type_and_function_architecture_md_names_exists() {
    let root = repo_root();
    let map = root.join("ARCHITECTURE.md");
    let text = std::fs::read_to_string(&map).expect("reading ARCHITECTURE.md");
    let defs = definitions(&root);
    let spans = spans(&text);
    assert!(
        spans.len() > 100,
        "ARCHITECTURE.md names only {} things in backticks; did the parser break?",
        spans.len()
    );
    let stale: Vec<String> = spans
        .iter()
        .filter_map(|(line, span)| {
            stale(&root, &defs, span).map(|why| format!("ARCHITECTURE.md:{line}: `{span}`: {why}"))
        })
        .collect();
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md names what no longer exists (fix the map, or the name):\n{}",
        stale.join("\n")
    );
}

/// The checker itself: it must catch a renamed file, type and function, and
/// let prose through.
#[test]
fn the_checker_catches_what_is_gone_and_ignores_prose() {
    let root = repo_root();
    let defs = definitions(&root);
    let gone = [
        "crates/engine/src/no_such_file.rs",
        "NoSuchTypeAnywhere",
        "EngineHandle::no_such_method",
        "crew_runtime::no_such_module::Thing",
        "crew_engine::NoSuchType",
        "no_such_function_anywhere()",
    ];
    for span in gone {
        assert!(stale(&root, &defs, span).is_some(), "{span} passed");
    }
    let present = [
        "crates/engine/src/dyno.rs",
        "crates/runtime/src/isolated/",
        "EngineHandle",
        "EngineHandle::scale",
        "crew_runtime::os",
        "runtime::init::sys",
        "crew_procfile::shell::exec_form",
        "exec_form()",
        "crew scale web=3",
        "PORT",
        "std::process::Command",
        "/app",
    ];
    for span in present {
        assert_eq!(stale(&root, &defs, span), None, "{span}");
    }
}
