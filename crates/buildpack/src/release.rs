//! The YAML that `bin/release` prints, read by hand.
//!
//! The classic buildpack API only ever puts two maps of strings in it
//! (`default_process_types` and `config_vars`), plus `addons`, which crew ignores.
//! A full YAML library would accept far more than a buildpack can mean, so this
//! reads exactly that subset and rejects the rest with a line number:
//!
//! - `---` / `...` document markers, blank lines and `#` comments;
//! - top-level `key:` followed by indented `name: value` lines, or `key: {}`,
//!   `key: ~`, `key: null`, or `key:` with nothing under it (all empty);
//! - values plain (a ` #` starts a comment), `'single'` (`''` is a quote) or
//!   `"double"` (backslash escapes); an empty or `~`/`null` value means no entry;
//! - any other top-level key is skipped together with everything indented under it.
//!
//! Flow collections other than `{}`, block scalars (`|`, `>`), anchors, tags,
//! multi-line scalars and deeper nesting are errors rather than guesses.

use std::collections::BTreeMap;

/// What a buildpack's `bin/release` declares.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Release {
    pub default_process_types: BTreeMap<String, String>,
    /// Defaults only: an app's own config var of the same name always wins.
    pub config_vars: BTreeMap<String, String>,
}

/// A line of `bin/release` output outside the subset described in the module docs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ReleaseYamlError {
    /// 1-based line number in the output.
    pub line: usize,
    pub message: String,
}

#[derive(Clone, Copy)]
enum Target {
    ProcessTypes,
    ConfigVars,
}

enum Section {
    /// Before any key, or after a key whose map was empty: indentation is wrong here.
    None,
    /// Under a top-level key crew does not use (`addons`): skip whatever is there.
    Ignored,
    /// Under one of the two maps; the indent of its entries is fixed by the first one.
    Map(Target, Option<usize>),
}

#[derive(Debug, PartialEq)]
enum Value {
    /// Nothing, `~` or `null`.
    Null,
    /// `{}`.
    EmptyMap,
    Scalar(String),
}

/// Parses what `bin/release` printed.
pub fn parse_release(text: &str) -> Result<Release, ReleaseYamlError> {
    let mut release = Release::default();
    let mut section = Section::None;
    for (index, raw) in text.lines().enumerate() {
        let fail = |message: String| ReleaseYamlError {
            line: index + 1,
            message,
        };
        let body = raw.trim_start_matches(' ');
        let indent = raw.len() - body.len();
        if body.starts_with('\t') {
            return Err(fail("tab in indentation (YAML allows only spaces)".into()));
        }
        let content = body.trim_end();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if indent == 0 {
            if content == "---" || content == "..." {
                section = Section::None;
                continue;
            }
            if content.starts_with('-') {
                return Err(fail("a top-level list is not a release".into()));
            }
            let (key, rest) = split_key(content).map_err(fail)?;
            let target = match key.as_str() {
                "default_process_types" => Target::ProcessTypes,
                "config_vars" => Target::ConfigVars,
                _ => {
                    section = Section::Ignored;
                    continue;
                }
            };
            section = match parse_value(rest).map_err(fail)? {
                Value::Null => Section::Map(target, None),
                Value::EmptyMap => Section::None,
                Value::Scalar(_) => return Err(fail(format!("`{key}` must be a map"))),
            };
            continue;
        }
        let (target, entry_indent) = match &mut section {
            Section::Ignored => continue,
            Section::None => return Err(fail("indented line outside a map".into())),
            Section::Map(target, entry_indent) => (*target, entry_indent),
        };
        match *entry_indent {
            None => *entry_indent = Some(indent),
            Some(expected) if expected != indent => {
                return Err(fail(
                    "unexpected indentation (nested values are not supported)".into(),
                ));
            }
            Some(_) => {}
        }
        if content.starts_with("- ") || content == "-" {
            return Err(fail("expected `name: value`, found a list item".into()));
        }
        let (key, rest) = split_key(content).map_err(fail)?;
        let value = match parse_value(rest).map_err(fail)? {
            Value::Scalar(value) => value,
            // YAML's null: the buildpack declares the name without a value.
            Value::Null => continue,
            Value::EmptyMap => {
                return Err(fail(format!("`{key}` must be a string, not a map")));
            }
        };
        let map = match target {
            Target::ProcessTypes => &mut release.default_process_types,
            Target::ConfigVars => &mut release.config_vars,
        };
        if map.insert(key.clone(), value).is_some() {
            return Err(fail(format!("duplicate key `{key}`")));
        }
    }
    Ok(release)
}

/// Splits `key: rest` (the key plain or quoted). A plain key ends at the first `:`
/// that is followed by whitespace or the end of the line, as in YAML, so that
/// `web: node server.js --url=http://x` keeps its colons in the value.
fn split_key(content: &str) -> Result<(String, &str), String> {
    if content.starts_with(['"', '\'']) {
        let (key, after) = parse_quoted(content)?;
        let rest = after
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| format!("expected `:` after the key {key:?}"))?;
        if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
            return Err(format!("expected a space after `{key}:`"));
        }
        return Ok((key, rest));
    }
    let bytes = content.as_bytes();
    let colon = bytes
        .iter()
        .enumerate()
        .position(|(i, &b)| b == b':' && matches!(bytes.get(i + 1), None | Some(b' ' | b'\t')));
    let Some(colon) = colon else {
        return Err(format!("expected `key: value`, found `{content}`"));
    };
    let key = content[..colon].trim_end();
    if key.is_empty() {
        return Err("empty key".into());
    }
    Ok((key.to_owned(), &content[colon + 1..]))
}

fn parse_value(rest: &str) -> Result<Value, String> {
    let value = rest.trim();
    if value.starts_with(['"', '\'']) {
        let (text, after) = parse_quoted(value)?;
        let after = after.trim_start();
        if !(after.is_empty() || after.starts_with('#')) {
            return Err(format!("unexpected text after a quoted value: `{after}`"));
        }
        return Ok(Value::Scalar(text));
    }
    let value = strip_comment(value).trim_end();
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "{}" => return Ok(Value::EmptyMap),
        _ => {}
    }
    let refuse = |what: &str| Err(format!("{what} are not supported: `{value}`"));
    match value.as_bytes().first() {
        Some(b'{' | b'[') => refuse("flow collections"),
        Some(b'|' | b'>') => refuse("block scalars"),
        Some(b'&' | b'*') => refuse("anchors and aliases"),
        Some(b'!') => refuse("tags"),
        _ => Ok(Value::Scalar(value.to_owned())),
    }
}

/// In a plain scalar, `#` starts a comment only after whitespace.
fn strip_comment(value: &str) -> &str {
    if value.starts_with('#') {
        return "";
    }
    // The byte before `#` is ASCII whitespace, so slicing there is on a char boundary.
    match value
        .as_bytes()
        .windows(2)
        .position(|w| matches!(w, [b' ' | b'\t', b'#']))
    {
        Some(end) => &value[..end],
        None => value,
    }
}

/// Reads a quoted scalar at the start of `s`; returns it and what follows the
/// closing quote. Single quotes are literal except `''`; double quotes take the
/// usual backslash escapes.
fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let quote = match chars.next() {
        Some((_, q @ ('"' | '\''))) => q,
        _ => return Err("expected a quoted string".into()),
    };
    let mut text = String::new();
    while let Some((i, c)) = chars.next() {
        if quote == '\'' {
            if c != '\'' {
                text.push(c);
                continue;
            }
            if s[i + 1..].starts_with('\'') {
                text.push('\'');
                chars.next();
                continue;
            }
            return Ok((text, &s[i + 1..]));
        }
        match c {
            '"' => return Ok((text, &s[i + 1..])),
            '\\' => {
                let Some((_, escape)) = chars.next() else {
                    break;
                };
                let hex_digits = match escape {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => 0,
                };
                if hex_digits > 0 {
                    let mut code = 0u32;
                    for _ in 0..hex_digits {
                        let digit = chars
                            .next()
                            .and_then(|(_, d)| d.to_digit(16))
                            .ok_or_else(|| format!("bad \\{escape} escape"))?;
                        code = code * 16 + digit;
                    }
                    let c = char::from_u32(code)
                        .ok_or_else(|| format!("\\{escape}{code:x} is not a character"))?;
                    text.push(c);
                    continue;
                }
                text.push(match escape {
                    '\\' => '\\',
                    '"' => '"',
                    '/' => '/',
                    ' ' => ' ',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    'e' => '\u{1b}',
                    other => return Err(format!("unknown escape `\\{other}`")),
                });
            }
            c => text.push(c),
        }
    }
    Err("unterminated quoted string (multi-line strings are not supported)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn accepted_release_output() {
        type Pairs = &'static [(&'static str, &'static str)];
        // (case, bin/release output, default_process_types, config_vars)
        let cases: &[(&str, &str, Pairs, Pairs)] = &[
            ("empty output", "", &[], &[]),
            ("empty map", "---\ndefault_process_types: {}\n", &[], &[]),
            (
                "null map",
                "default_process_types: ~\nconfig_vars: null\n",
                &[],
                &[],
            ),
            (
                "key with nothing under it",
                "---\ndefault_process_types:\n",
                &[],
                &[],
            ),
            (
                "the API docs example",
                "---\naddons:\n  - heroku-postgresql\nconfig_vars:\n  PATH: /app/bin:/usr/bin\n\
                 default_process_types:\n  web: bundle exec rails server -p $PORT\n  \
                 worker: bundle exec rake jobs:work\n",
                &[
                    ("web", "bundle exec rails server -p $PORT"),
                    ("worker", "bundle exec rake jobs:work"),
                ],
                &[("PATH", "/app/bin:/usr/bin")],
            ),
            (
                "colons inside a plain value",
                "default_process_types:\n  web: node s.js --url=http://x:80/a\n",
                &[("web", "node s.js --url=http://x:80/a")],
                &[],
            ),
            (
                "comment after a plain value, # without a space kept",
                "default_process_types:\n  web: ./run a#b # the server\n",
                &[("web", "./run a#b")],
                &[],
            ),
            (
                "single quotes keep # and $ and double the quote",
                "default_process_types:\n  web: 'echo ''hi'' # $PORT'\n",
                &[("web", "echo 'hi' # $PORT")],
                &[],
            ),
            (
                "double quotes take escapes",
                "config_vars:\n  A: \"say \\\"hi\\\"\\tnow\\\\\"\n  B: \"\\u00e9\\x41\"\n",
                &[],
                &[("A", "say \"hi\"\tnow\\"), ("B", "éA")],
            ),
            (
                "quoted keys, trailing comment after quotes",
                "config_vars:\n  \"WEIRD KEY\": 'x' # why\n  'K2': \"\"\n",
                &[],
                &[("K2", ""), ("WEIRD KEY", "x")],
            ),
            (
                "null entries are skipped, numbers stay text",
                "config_vars:\n  GONE:\n  ALSO: ~\n  N: 0012\n  T: true\n",
                &[],
                &[("N", "0012"), ("T", "true")],
            ),
            (
                "CRLF, comments, document end and four-space indent",
                "---\r\n# made by a buildpack\r\ndefault_process_types:\r\n    web: ./web\r\n\r\n    # c\r\n    w2: ./w\r\n...\r\n",
                &[("w2", "./w"), ("web", "./web")],
                &[],
            ),
            (
                "unknown top-level keys and their children are skipped",
                "addons: []\nstack:\n  nested:\n    deeper: 1\ndefault_process_types:\n  web: x\n",
                &[("web", "x")],
                &[],
            ),
        ];
        for (name, text, procs, vars) in cases {
            let release = parse_release(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(release.default_process_types, map(procs), "{name}");
            assert_eq!(release.config_vars, map(vars), "{name}");
        }
    }

    #[test]
    fn rejected_release_output() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "scalar map",
                "default_process_types: web\n",
                1,
                "must be a map",
            ),
            (
                "flow map",
                "default_process_types: {web: x}\n",
                1,
                "flow collections",
            ),
            (
                "block scalar",
                "default_process_types:\n  web: |\n",
                2,
                "block scalars",
            ),
            ("alias", "config_vars:\n  A: *x\n", 2, "anchors"),
            ("tag", "config_vars:\n  A: !!str x\n", 2, "tags"),
            (
                "nesting",
                "config_vars:\n  A: x\n    B: y\n",
                3,
                "indentation",
            ),
            ("list in a map", "config_vars:\n  - A\n", 2, "list item"),
            ("orphan indent", "  web: x\n", 1, "outside a map"),
            (
                "indent after {}",
                "config_vars: {}\n  A: x\n",
                2,
                "outside a map",
            ),
            ("tab", "config_vars:\n\tA: x\n", 2, "tab"),
            ("no colon", "config_vars:\n  A\n", 2, "key: value"),
            (
                "duplicate",
                "config_vars:\n  A: 1\n  A: 2\n",
                3,
                "duplicate",
            ),
            (
                "unterminated",
                "config_vars:\n  A: \"x\n",
                2,
                "unterminated",
            ),
            (
                "bad escape",
                "config_vars:\n  A: \"\\q\"\n",
                2,
                "unknown escape",
            ),
            (
                "junk after quotes",
                "config_vars:\n  A: 'x' y\n",
                2,
                "after a quoted",
            ),
            ("top-level list", "- web\n", 1, "top-level list"),
        ];
        for (name, text, line, needle) in cases {
            match parse_release(text) {
                Ok(r) => panic!("{name}: accepted as {r:?}"),
                Err(e) => {
                    assert_eq!(e.line, *line, "{name}: {e}");
                    assert!(e.message.contains(needle), "{name}: {e}");
                }
            }
        }
    }
}
