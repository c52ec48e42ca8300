//! No module of a crate imports a module that imports it back (ARCHITECTURE.md,
//! "Invariants"). Cargo already forbids cycles between crates; this keeps the
//! modules inside each crate pointing one way too.
//!
//! How an import is read, from the source text (no compiler needed):
//! - every path that starts with `crate::`, `super::` or `self::`, in `use`
//!   items (brace groups included) and in expressions and types, names the
//!   deepest module of the crate that the path walks through;
//! - a bare `use child::…` in a file names its child module `child`;
//! - `mod child;` is a declaration, not an import; a `pub use` re-export is a
//!   facade for the crate's users, not a dependency of the module, so neither
//!   counts;
//! - a file's unit tests (`#[cfg(test)]` modules) are left out: they look into
//!   the module they test by design.
//!
//! Module A depends on B if A's file (`a.rs` or `a/mod.rs`) names B or
//! something inside B. A cycle is a strongly connected set of two or more
//! modules; the test prints each with the lines that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root above crates/crew")
}

/// A module's path inside its crate: `[]` for the root, `["isolated", "plan"]`.
type ModulePath = Vec<String>;

/// Every module file of one crate's `src`, by module path.
fn modules(src: &Path) -> BTreeMap<ModulePath, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<ModulePath, PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut inner = prefix.to_vec();
                inner.push(name);
                walk(&path, &inner, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let module = match stem {
                    "lib" | "main" if prefix.is_empty() => Vec::new(),
                    "mod" => prefix.to_vec(),
                    // A crate's extra binaries are crates of their own.
                    _ if prefix == ["bin"] => continue,
                    _ => {
                        let mut m = prefix.to_vec();
                        m.push(stem.to_string());
                        m
                    }
                };
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// The text of a Rust file without comments, string and char literals, and
/// without its `#[cfg(test)]` items.
fn code_of(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            out.push_str(&"\n".repeat(rest[..end].matches('\n').count()));
            i += end;
        } else if let Some(raw) = raw_string_len(rest) {
            out.push_str("\"\"");
            out.push_str(&"\n".repeat(rest[..raw].matches('\n').count()));
            i += raw;
        } else if rest.starts_with('"') {
            let mut j = 1;
            let b = rest.as_bytes();
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let len = (j + 1).min(rest.len());
            out.push_str("\"\"");
            out.push_str(&"\n".repeat(rest[..len].matches('\n').count()));
            i += len;
        } else if let Some(len) = char_literal_len(rest) {
            out.push_str("' '");
            i += len;
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
        }
    }
    strip_test_items(&out)
}

/// `r"…"`, `r#"…"#`, `br"…"`: the literal's length.
fn raw_string_len(rest: &str) -> Option<usize> {
    let after_prefix = rest.strip_prefix("br").or_else(|| rest.strip_prefix('r'))?;
    let hashes = after_prefix.len() - after_prefix.trim_start_matches('#').len();
    let body = after_prefix[hashes..].strip_prefix('"')?;
    let closing = format!("\"{}", "#".repeat(hashes));
    let end = body.find(&closing)?;
    Some(rest.len() - body.len() + end + closing.len())
}

/// `'a'`, `'\n'`, `'\u{1F600}'` (not a lifetime): the literal's length.
fn char_literal_len(rest: &str) -> Option<usize> {
    let body = rest.strip_prefix('\'')?;
    if let Some(escaped) = body.strip_prefix('\\') {
        let end = escaped.find('\'')?;
        return Some(2 + end + 1);
    }
    let c = body.chars().next()?;
    body[c.len_utf8()..]
        .starts_with('\'')
        .then_some(1 + c.len_utf8() + 1)
}

/// Drops each item that follows `#[cfg(test)]`: a `mod x;`, or a `mod x { … }`.
fn strip_test_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // The item ends at the first `;` before any `{`, or at the `}` that
        // closes the first `{`.
        let semi = after.find(';');
        let brace = after.find('{');
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (_, Some(b)) => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (k, c) in after[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(s), None) => s + 1,
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths a use tree names, flattened: `crate::{a::X, b::{Y, Z}}` gives
/// `crate::a::X`, `crate::b::Y`, `crate::b::Z`.
fn flatten_use_tree(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_string()];
    };
    let prefix = tree[..open].trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(flatten_use_tree)
        .map(|p| {
            if p == "self" {
                prefix.trim_end_matches("::").to_string()
            } else {
                format!("{prefix}{p}")
            }
        })
        .collect()
}

/// One import found in a file: the path as written, and the line it is on.
struct Import {
    path: String,
    line: usize,
}

fn imports(code: &str) -> Vec<Import> {
    let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
    let mut out = Vec::new();
    // `use` items, whole, brace groups included; `pub use` re-exports skipped.
    let mut search = 0;
    while let Some(found) = code[search..].find("use ") {
        let at = search + found;
        search = at + 4;
        let before = code[..at].trim_end();
        let starts_item = before.is_empty()
            || before.ends_with(';')
            || before.ends_with('{')
            || before.ends_with('}')
            || before.ends_with(']');
        let is_word_start = at == 0 || !is_ident_char(code[..at].chars().last().unwrap_or(' '));
        if !is_word_start || !starts_item {
            continue;
        }
        let end = code[at..].find(';').map_or(code.len(), |e| at + e);
        for path in flatten_use_tree(&code[at + 4..end]) {
            out.push(Import {
                path,
                line: line_of(at),
            });
        }
        search = end;
    }
    // Paths in expressions and types.
    for anchor in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(anchor) {
            let at = from + found;
            from = at + anchor.len();
            let prev = code[..at].chars().last().unwrap_or(' ');
            if is_ident_char(prev) || prev == ':' {
                continue;
            }
            // Inside a `use` item: already counted above.
            let line_start = code[..at].rfind(['\n', ';']).map_or(0, |p| p + 1);
            if code[line_start..at].trim_start().starts_with("use ")
                || code[line_start..at].contains("use ")
            {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(is_ident_char(c) || c == ':'))
                .map_or(code.len(), |e| at + e);
            out.push(Import {
                path: code[at..end].to_string(),
                line: line_of(at),
            });
        }
    }
    out
}

/// The deepest module of `known` that `path`, written in `module`, walks through.
fn resolve(
    path: &str,
    module: &ModulePath,
    known: &BTreeMap<ModulePath, PathBuf>,
) -> Option<ModulePath> {
    let segments: Vec<&str> = path
        .split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let (mut base, rest): (ModulePath, &[&str]) = match segments.first() {
        Some(&"crate") => (Vec::new(), &segments[1..]),
        Some(&"self") => (module.clone(), &segments[1..]),
        Some(&"super") => {
            let mut base = module.clone();
            let mut k = 0;
            while segments.get(k) == Some(&"super") {
                base.pop()?;
                k += 1;
            }
            (base, &segments[k..])
        }
        // `use child::X` in a file: its own child module, if there is one.
        Some(first) => {
            let mut child = module.clone();
            child.push(first.to_string());
            if !known.contains_key(&child) {
                return None;
            }
            (module.clone(), &segments[..])
        }
        None => return None,
    };
    for segment in rest {
        let mut next = base.clone();
        next.push(segment.to_string());
        if known.contains_key(&next) {
            base = next;
        } else {
            break;
        }
    }
    Some(base)
}

fn name(module: &ModulePath) -> String {
    if module.is_empty() {
        "(crate root)".to_string()
    } else {
        module.join("::")
    }
}

/// Strongly connected components of two or more modules (Tarjan).
fn cycles(graph: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Vec<Vec<ModulePath>> {
    struct State<'g> {
        graph: &'g BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        index: BTreeMap<&'g ModulePath, usize>,
        low: BTreeMap<&'g ModulePath, usize>,
        stack: Vec<&'g ModulePath>,
        on_stack: BTreeSet<&'g ModulePath>,
        next: usize,
        out: Vec<Vec<ModulePath>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g ModulePath) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let Some((w, _)) = s.graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.out
}

/// Each crate's module cycles, described with the import lines that make them:
/// first between modules, then between the crate's top-level modules (a file
/// deep in `isolated/` importing `os` while `os` imports another file of
/// `isolated/` is a cycle between `os` and `isolated`).
fn module_cycles_of(src: &Path) -> Vec<String> {
    let known = modules(src);
    // (from, to) → where the first such import is written.
    let mut edges: BTreeMap<(ModulePath, ModulePath), String> = BTreeMap::new();
    for (module, file) in &known {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let code = code_of(&text);
        for import in imports(&code) {
            let Some(target) = resolve(&import.path, module, &known) else {
                continue;
            };
            edges.entry((module.clone(), target)).or_insert_with(|| {
                format!("{}:{}: `{}`", file.display(), import.line, import.path)
            });
        }
    }
    let top_level = |m: &ModulePath| m.iter().take(1).cloned().collect::<ModulePath>();
    let mut found = Vec::new();
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
    for (granularity, collapse) in [
        (
            "modules",
            &(|m: &ModulePath| m.clone()) as &dyn Fn(&ModulePath) -> ModulePath,
        ),
        ("top-level modules", &top_level),
    ] {
        let mut graph: BTreeMap<ModulePath, BTreeSet<ModulePath>> = known
            .keys()
            .map(|m| (collapse(m), BTreeSet::new()))
            .collect();
        for (from, to) in edges.keys() {
            let (from, to) = (collapse(from), collapse(to));
            if from != to {
                graph.entry(from).or_default().insert(to);
            }
        }
        for component in cycles(&graph) {
            // A cycle of top-level modules already shown between modules.
            if !reported.insert(component.iter().map(name).collect()) {
                continue;
            }
            let members: BTreeSet<&ModulePath> = component.iter().collect();
            let mut text = format!(
                "{} ({granularity}): {}",
                src.display(),
                component.iter().map(name).collect::<Vec<_>>().join(", ")
            );
            for ((from, to), line) in &edges {
                let (f, t) = (collapse(from), collapse(to));
                if f != t && members.contains(&f) && members.contains(&t) {
                    text.push_str(&format!("\n    {} → {}  ({line})", name(from), name(to)));
                }
            }
            found.push(text);
        }
    }
    found
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let crates = repo_root().join("crates");
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .expect("reading crates/")
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for src in dirs {
        found.extend(module_cycles_of(&src));
    }
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_cycle_through_super_and_through_a_use_group() {
    let dir = std::env::temp_dir().join(format!("crew-module-cycles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src/a")).unwrap();
    std::fs::write(
        dir.join("src/lib.rs"),
        "//! x\nmod a;\nmod b;\npub use a::Thing;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/a/mod.rs"),
        "mod inner;\nuse crate::{b::{self, Other}};\npub struct Thing;\n",
    )
    .unwrap();
    // a::inner → a (super), a → b (use group), b → a::inner (expression path).
    std::fs::write(
        dir.join("src/a/inner.rs"),
        "fn f() -> super::Thing { super::Thing }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/b.rs"),
        "// crate::a is named only in this comment\nfn g() { let s = \"crate::a\"; crate::a::inner::f(); }\n\
         #[cfg(test)]\nmod tests { use crate::a::Thing; }\n",
    )
    .unwrap();
    let found = module_cycles_of(&dir.join("src"));
    assert_eq!(found.len(), 2, "{found:?}");
    // The same cycle is not told twice.
    assert!(
        !found
            .iter()
            .any(|f| f.contains("(top-level modules): a, a::inner"))
    );
    assert!(
        found[0].contains("(modules): a, a::inner, b"),
        "{}",
        found[0]
    );
    assert!(
        found[1].contains("(top-level modules): a, b"),
        "{}",
        found[1]
    );
    // Without the expression path in b there is none: comments, strings,
    // tests and the root's re-export do not count.
    std::fs::write(
        dir.join("src/b.rs"),
        "// crate::a\nfn g() { let s = \"crate::a\"; }\n#[cfg(test)]\nmod tests { use crate::a::Thing; }\n",
    )
    .unwrap();
    assert!(module_cycles_of(&dir.join("src")).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
