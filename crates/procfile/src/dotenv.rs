//! The `.env` dialect.
//!
//! Every tool reads `.env` a little differently (foreman#56, foreman#561,
//! honcho's shlex quirks), so crew pins down one small dialect and rejects what
//! falls outside it instead of guessing:
//!
//! - blank lines and lines whose first non-blank character is `#` are skipped;
//! - `export KEY=value` is the same as `KEY=value`, so a file can also be sourced
//!   by a shell;
//! - keys match `[A-Za-z_][A-Za-z0-9_]*`; spaces around `=` are allowed;
//! - `KEY=` sets `KEY` to the empty string;
//! - an unquoted value is trimmed, and a `#` preceded by whitespace starts a
//!   comment: `A=a#b` keeps `a#b` (URL fragments, colour codes), while `A=a #b`
//!   is `a` and `A= #b` is empty; inner spaces are kept, so `A=a b` is `a b`;
//! - single quotes are literal: no escapes at all;
//! - double quotes understand `\n`, `\t`, `\r`, `\"`, `\\` and `\$`; any other
//!   backslash is kept as written;
//! - a quoted value may span lines (PEM keys), and either quote kind works;
//! - after a closing quote only whitespace and a `# comment` may follow;
//! - CRLF line endings are accepted anywhere, including inside quoted values,
//!   where they become `\n`;
//! - `$VAR` is never expanded: the shell that runs the command does that, and a
//!   half-way substitution here is how foreman turned `$PORTAL` into `5000AL`.
//!
//! A key given twice keeps its first position and its last value, so the result
//! reads like the file while behaving like sequential assignment.

use crate::numbered_lines;

/// A `.env` syntax error, naming the line it happened on (for an unterminated
/// quote, the line where the quote opened).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {message}")]
pub struct DotenvError {
    pub line: usize,
    pub message: String,
}

/// How much of a bad line an error message repeats. Values can be secrets, and
/// error messages end up in terminals and logs, so only a prefix is shown.
const QUOTE_LIMIT: usize = 40;

/// Parses `.env` text into `(key, value)` pairs in order of first appearance.
pub fn parse(src: &str) -> Result<Vec<(String, String)>, DotenvError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut lines = numbered_lines(src);
    while let Some((line_no, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |message: String| DotenvError {
            line: line_no,
            message,
        };
        let Some((raw_key, raw_value)) = strip_export(trimmed).split_once('=') else {
            return Err(err(format!(
                "expected KEY=VALUE, found `{}`",
                excerpt(trimmed)
            )));
        };
        let key = raw_key.trim();
        check_key(key).map_err(err)?;
        let value = parse_value(raw_value, line_no, &mut lines)?;
        if value.contains('\0') {
            // No process can receive it, and failing here names the line.
            return Err(err(format!("value of `{key}` contains a NUL character")));
        }
        match out.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => out.push((key.to_owned(), value)),
        }
    }
    Ok(out)
}

/// Drops a leading `export` keyword. It needs whitespace after it, so a key that
/// merely starts with "export" (`exporter=1`, or `export=1` itself) is left alone.
fn strip_export(line: &str) -> &str {
    match line.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => line,
    }
}

fn check_key(key: &str) -> Result<(), String> {
    let mut bytes = key.bytes();
    let Some(first) = bytes.next() else {
        return Err("missing key before `=`".to_owned());
    };
    let valid = (first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid key `{}` (use letters, digits and `_`, not starting with a digit)",
            excerpt(key)
        ))
    }
}

/// Parses everything after `=`. Quoted values may pull further lines out of
/// `lines`, which keeps the caller's line numbering right.
fn parse_value<'a>(
    raw: &str,
    line_no: usize,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
) -> Result<String, DotenvError> {
    let start = raw.trim_start();
    let quote = match start.chars().next() {
        Some(q @ ('"' | '\'')) => q,
        // The untrimmed text, so that `KEY= #x` sees the blank before `#`.
        _ => return Ok(unquoted(raw).to_owned()),
    };
    let mut value = String::new();
    let mut rest = &start[1..];
    let mut rest_line = line_no;
    loop {
        if let Some(after) = scan_quoted(rest, quote, &mut value) {
            check_trailer(after).map_err(|message| DotenvError {
                line: rest_line,
                message,
            })?;
            return Ok(value);
        }
        let Some((next_no, next)) = lines.next() else {
            let kind = if quote == '"' { "double" } else { "single" };
            return Err(DotenvError {
                line: line_no,
                message: format!("unterminated {kind} quote"),
            });
        };
        value.push('\n');
        rest = next;
        rest_line = next_no;
    }
}

/// An unquoted value ends at a `#` that follows whitespace, or at the end of the line.
fn unquoted(raw: &str) -> &str {
    let mut prev_blank = false;
    for (i, c) in raw.char_indices() {
        if c == '#' && prev_blank {
            return raw[..i].trim();
        }
        prev_blank = c == ' ' || c == '\t';
    }
    raw.trim()
}

/// Appends the quoted text in `s` to `value`. Returns what follows the closing
/// quote, or `None` if the quote does not close on this line.
fn scan_quoted<'s>(s: &'s str, quote: char, value: &mut String) -> Option<&'s str> {
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Some(&s[i + c.len_utf8()..]);
        }
        if c == '\\' && quote == '"' {
            match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((_, 'r')) => value.push('\r'),
                Some((_, e @ ('"' | '\\' | '$'))) => value.push(e),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                // A backslash at the end of a line stays; the newline follows it.
                None => value.push('\\'),
            }
            continue;
        }
        value.push(c);
    }
    None
}

fn check_trailer(after: &str) -> Result<(), String> {
    let after = after.trim_start();
    if after.is_empty() || after.starts_with('#') {
        Ok(())
    } else {
        Err(format!(
            "unexpected `{}` after closing quote (only a `# comment` may follow)",
            excerpt(after.trim_end())
        ))
    }
}

fn excerpt(s: &str) -> String {
    match s.char_indices().nth(QUOTE_LIMIT) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(src: &str) -> Vec<(String, String)> {
        parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"))
    }

    #[test]
    fn single_value_table() {
        // (file, key, expected value)
        let cases: &[(&str, &str, &str)] = &[
            // research §5 item 7
            ("export A=1", "A", "1"),
            ("B=\"x y\" # c", "B", "x y"),
            ("C='$HOME'", "C", "$HOME"),
            ("D=\"a\\nb\"", "D", "a\nb"),
            ("E=", "E", ""),
            ("F=a b", "F", "a b"),
            ("A=1\r\n", "A", "1"),
            ("G=a#b", "G", "a#b"),
            // comments on unquoted values
            ("G=a #b", "G", "a"),
            ("G=a\t# b", "G", "a"),
            ("G=#x", "G", "#x"),
            ("G= #x", "G", ""),
            ("G=a # b # c", "G", "a"),
            ("G=http://h/p#frag", "G", "http://h/p#frag"),
            // whitespace
            ("H = v", "H", "v"),
            ("H =v", "H", "v"),
            ("H=   v   ", "H", "v"),
            ("  H=v", "H", "v"),
            ("\tH=v\t", "H", "v"),
            ("H=  ", "H", ""),
            ("export\tH=v", "H", "v"),
            ("export   H = v", "H", "v"),
            // keys
            ("_=1", "_", "1"),
            ("_A1_b=1", "_A1_b", "1"),
            ("export=1", "export", "1"),
            ("exporter=1", "exporter", "1"),
            // values with `=` and quotes in the middle
            (
                "URL=postgres://u:p@h/db?a=b",
                "URL",
                "postgres://u:p@h/db?a=b",
            ),
            ("Q=a\"b", "Q", "a\"b"),
            ("Q=it's", "Q", "it's"),
            // single quotes: literal
            ("S='a\\nb'", "S", "a\\nb"),
            ("S='a \"b\" # c'", "S", "a \"b\" # c"),
            ("S=''", "S", ""),
            ("S='x' # c", "S", "x"),
            ("S='x'#c", "S", "x"),
            // double quotes: escapes
            ("D=\"\"", "D", ""),
            ("D=\"\\t\\r\"", "D", "\t\r"),
            ("D=\"say \\\"hi\\\"\"", "D", "say \"hi\""),
            ("D=\"a\\\\nb\"", "D", "a\\nb"),
            ("D=\"\\$HOME\"", "D", "$HOME"),
            ("D=\"$HOME\"", "D", "$HOME"),
            ("D=\"${X:-y}\"", "D", "${X:-y}"),
            ("D=\"a\\qb\"", "D", "a\\qb"),
            ("D=\"it's\"", "D", "it's"),
            ("D=\" padded \"", "D", " padded "),
            ("D=\"a # not a comment\"", "D", "a # not a comment"),
            ("D=\"x\"\t# c\r\n", "D", "x"),
            // multi-line quoted values
            ("K=\"line1\nline2\"", "K", "line1\nline2"),
            ("K=\"line1\r\nline2\r\n\"\r\n", "K", "line1\nline2\n"),
            ("K='a\n\n  b'", "K", "a\n\n  b"),
            (
                "K=\"-----BEGIN KEY-----\nMIIB\\nx\n-----END KEY-----\"",
                "K",
                "-----BEGIN KEY-----\nMIIB\nx\n-----END KEY-----",
            ),
            // no substitution, ever
            ("P=$PORT", "P", "$PORT"),
            ("P=${PORT}AL", "P", "${PORT}AL"),
            // unicode
            ("U=héllo wörld", "U", "héllo wörld"),
            ("U=\"ünï\"", "U", "ünï"),
            ("\u{feff}A=1", "A", "1"),
        ];
        for (src, key, value) in cases {
            assert_eq!(
                pairs(src),
                vec![(key.to_string(), value.to_string())],
                "{src:?}"
            );
        }
    }

    #[test]
    fn whole_file() {
        let src = "# app config\r\n\
                   export A=1\r\n\
                   \r\n\
                   B=\"x y\" # c\r\n\
                   C='$HOME'\r\n\
                   PEM=\"-----BEGIN-----\r\n\
                   abc\r\n\
                   -----END-----\"\r\n\
                   \x20\x20# indented comment\r\n\
                   E=\r\n\
                   A=2\r\n";
        let want: Vec<(String, String)> = [
            ("A", "2"),
            ("B", "x y"),
            ("C", "$HOME"),
            ("PEM", "-----BEGIN-----\nabc\n-----END-----"),
            ("E", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(pairs(src), want);
    }

    #[test]
    fn skipped_table() {
        let cases: &[&str] = &["", "\n", "\r\n\r\n", "# c", "   # c\n\t\n", "#A=1"];
        for src in cases {
            assert_eq!(pairs(src), vec![], "{src:?}");
        }
    }

    #[test]
    fn error_table() {
        // (file, line, message)
        let cases: &[(&str, usize, &str)] = &[
            (
                "A=1\nJUSTAWORD\n",
                2,
                "expected KEY=VALUE, found `JUSTAWORD`",
            ),
            ("export A", 1, "expected KEY=VALUE, found `export A`"),
            ("export", 1, "expected KEY=VALUE, found `export`"),
            (
                "1A=x",
                1,
                "invalid key `1A` (use letters, digits and `_`, not starting with a digit)",
            ),
            (
                "\n\nA-B=x",
                3,
                "invalid key `A-B` (use letters, digits and `_`, not starting with a digit)",
            ),
            (
                "A B=x",
                1,
                "invalid key `A B` (use letters, digits and `_`, not starting with a digit)",
            ),
            (
                "\"A\"=x",
                1,
                "invalid key `\"A\"` (use letters, digits and `_`, not starting with a digit)",
            ),
            ("=x", 1, "missing key before `=`"),
            (" = x", 1, "missing key before `=`"),
            ("A=\"open", 1, "unterminated double quote"),
            ("X=1\r\nA='open\r\nmore\r\n", 2, "unterminated single quote"),
            // The error names the opening line even after many more lines.
            ("A=1\nB=\"x\ny\nz\n", 2, "unterminated double quote"),
            // An escaped quote does not close.
            ("A=\"x\\\"", 1, "unterminated double quote"),
            (
                "B=\"x y\" z",
                1,
                "unexpected `z` after closing quote (only a `# comment` may follow)",
            ),
            (
                "B='x'y",
                1,
                "unexpected `y` after closing quote (only a `# comment` may follow)",
            ),
            // After a multi-line value, the trailer error points at the closing line.
            (
                "A=1\nB=\"x\ny\" junk\n",
                3,
                "unexpected `junk` after closing quote (only a `# comment` may follow)",
            ),
            // Line numbers after a multi-line value stay right.
            (
                "K=\"a\nb\nc\"\nbad line\n",
                4,
                "expected KEY=VALUE, found `bad line`",
            ),
            ("A=a\0b", 1, "value of `A` contains a NUL character"),
            ("A=\"x\ny\0\"", 1, "value of `A` contains a NUL character"),
        ];
        for (src, line, message) in cases {
            let want = DotenvError {
                line: *line,
                message: message.to_string(),
            };
            assert_eq!(parse(src), Err(want), "{src:?}");
        }
    }

    #[test]
    fn long_lines_are_cut_in_errors() {
        let secret = "s".repeat(100);
        let err = parse(&secret).unwrap_err();
        assert_eq!(
            err.message,
            format!("expected KEY=VALUE, found `{}…`", "s".repeat(40))
        );
    }

    #[test]
    fn display() {
        let err = parse("A=1\nnope\n").unwrap_err();
        assert_eq!(err.to_string(), "line 2: expected KEY=VALUE, found `nope`");
    }

    #[test]
    fn duplicates_keep_first_position_and_last_value() {
        let got = pairs("A=1\nB=2\nA=3\n");
        assert_eq!(
            got,
            vec![
                ("A".to_string(), "3".to_string()),
                ("B".to_string(), "2".to_string())
            ]
        );
    }
}
