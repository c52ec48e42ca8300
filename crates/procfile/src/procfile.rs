//! The Procfile: `type: command` lines, in file order.
//!
//! The grammar is foreman's regex `^([A-Za-z0-9_-]+):[ \t]*(.+)$`, matched by hand
//! on each line after a trailing `\r` is dropped. Unlike foreman, a line that does
//! not match is reported (with its line number) instead of vanishing, and a
//! duplicate type is an error instead of silently replacing the first one.

use std::fmt;

use serde::Serialize;

use crate::{is_name, numbered_lines};

/// One `type: command` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessType {
    pub name: String,
    /// The command exactly as written, minus surrounding whitespace. It is handed
    /// to `sh -c` untouched: `$VAR` is the shell's job, never ours.
    pub command: String,
    /// 1-based line number in the Procfile.
    pub line: usize,
}

/// A line that is neither blank, a comment, nor a `type: command` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// 1-based line number in the Procfile.
    pub line: usize,
    /// The offending line, without its line ending.
    pub text: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: ignored `{}` (not a `type: command` line)",
            self.line, self.text
        )
    }
}

/// A parsed Procfile: at least one process type, in file order, plus the
/// warnings for lines that were skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Procfile {
    types: Vec<ProcessType>,
    warnings: Vec<Warning>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProcfileError {
    #[error(
        "line {second_line}: duplicate process type `{name}` (first defined on line {first_line})"
    )]
    Duplicate {
        name: String,
        first_line: usize,
        second_line: usize,
    },
    #[error("no processes defined")]
    Empty,
}

impl Procfile {
    /// Parses Procfile text. Unrecognised lines become [`Warning`]s rather than
    /// errors because foreman ignores them and existing Procfiles rely on that;
    /// a duplicate type or a file with no types at all is an error because there
    /// is no right guess for what was meant.
    pub fn parse(src: &str) -> Result<Procfile, ProcfileError> {
        let mut types: Vec<ProcessType> = Vec::new();
        let mut warnings = Vec::new();
        for (line, text) in numbered_lines(src) {
            let trimmed = text.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((name, command)) = match_line(text) else {
                warnings.push(Warning {
                    line,
                    text: text.to_owned(),
                });
                continue;
            };
            if let Some(first) = types.iter().find(|t| t.name == name) {
                return Err(ProcfileError::Duplicate {
                    name: name.to_owned(),
                    first_line: first.line,
                    second_line: line,
                });
            }
            types.push(ProcessType {
                name: name.to_owned(),
                command: command.to_owned(),
                line,
            });
        }
        if types.is_empty() {
            return Err(ProcfileError::Empty);
        }
        Ok(Procfile { types, warnings })
    }

    /// Process types in file order.
    pub fn types(&self) -> &[ProcessType] {
        &self.types
    }

    pub fn get(&self, name: &str) -> Option<&ProcessType> {
        self.types.iter().find(|t| t.name == name)
    }

    /// Position of `name` in file order. The port formula depends on it, so it
    /// counts every type, including ones scaled to zero.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| t.name == name)
    }

    /// Type names in file order.
    pub fn names(&self) -> Vec<&str> {
        self.types.iter().map(|t| t.name.as_str()).collect()
    }

    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }
}

/// Matches `^([A-Za-z0-9_-]+):[ \t]*(.+)$` and returns the name and the command
/// with trailing whitespace removed. A command that is empty after trimming
/// (`web:` or `web:   `) does not match: the regex would accept `web: ` with a
/// one-space command, but a blank command can only ever fail at start time, so it
/// is better reported now.
fn match_line(line: &str) -> Option<(&str, &str)> {
    let (name, rest) = line.split_once(':')?;
    if !is_name(name) {
        return None;
    }
    let command = rest.trim_start_matches([' ', '\t']).trim_end();
    if command.is_empty() {
        return None;
    }
    Some((name, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (source, expected `(name, command, line)` triples, expected warning lines)
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str, usize)],
        &'static [usize],
    );

    #[test]
    fn grammar_table() {
        let cases: &[Case] = &[
            // research §5 item 1: CRLF, a comment, no-space form, extra spaces, a bad line.
            (
                "# comment\r\nweb:cmd\r\nworker:  cmd2\r\n+bad: x\r\n",
                &[("web", "cmd", 2), ("worker", "cmd2", 3)],
                &[4],
            ),
            (
                "web: bundle exec puma",
                &[("web", "bundle exec puma", 1)],
                &[],
            ),
            ("web:cmd", &[("web", "cmd", 1)], &[]),
            ("web:\tcmd", &[("web", "cmd", 1)], &[]),
            ("web: \t cmd  \t ", &[("web", "cmd", 1)], &[]),
            // Order is file order, not alphabetical.
            (
                "worker: w\nweb: x\nclock: c\n",
                &[("worker", "w", 1), ("web", "x", 2), ("clock", "c", 3)],
                &[],
            ),
            // Names use [A-Za-z0-9_-].
            (
                "web-2: a\nmy_worker: b\n9: c\n",
                &[("web-2", "a", 1), ("my_worker", "b", 2), ("9", "c", 3)],
                &[],
            ),
            // Only the first colon separates; the command may hold more.
            ("web: echo a:b: c\n", &[("web", "echo a:b: c", 1)], &[]),
            // `$VAR` is kept verbatim for the shell.
            ("web: echo $PORTAL", &[("web", "echo $PORTAL", 1)], &[]),
            // Blank lines and comments (even indented) are skipped silently.
            (
                "\n   \n\t\n  # indented comment\n#c\nweb: x\n\n",
                &[("web", "x", 6)],
                &[],
            ),
            // Lines that do not match become warnings with their line numbers.
            (
                "web: x\n+bad: x\nweb:\nworker:   \n  indented: x\nno colon\n: cmd\nw b: c\n",
                &[("web", "x", 1)],
                &[2, 3, 4, 5, 6, 7, 8],
            ),
            // A comment after a command is part of the command (the shell drops it).
            ("web: run # note", &[("web", "run # note", 1)], &[]),
            // A lone CR in the middle of a line is not a line ending.
            ("web: a\rb\r\n", &[("web", "a\rb", 1)], &[]),
            // No final newline.
            (
                "web: x\r\nworker: y",
                &[("web", "x", 1), ("worker", "y", 2)],
                &[],
            ),
            // A byte-order mark does not glue itself to the first name.
            ("\u{feff}web: x\n", &[("web", "x", 1)], &[]),
            // Non-ASCII names are not names.
            ("wéb: x\nweb: y\n", &[("web", "y", 2)], &[1]),
        ];
        for (src, want_types, want_warnings) in cases {
            let pf = Procfile::parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
            let got: Vec<(&str, &str, usize)> = pf
                .types()
                .iter()
                .map(|t| (t.name.as_str(), t.command.as_str(), t.line))
                .collect();
            assert_eq!(&got, want_types, "types for {src:?}");
            let got_warnings: Vec<usize> = pf.warnings().iter().map(|w| w.line).collect();
            assert_eq!(&got_warnings, want_warnings, "warnings for {src:?}");
        }
    }

    #[test]
    fn error_table() {
        let dup = |name: &str, first_line, second_line| ProcfileError::Duplicate {
            name: name.into(),
            first_line,
            second_line,
        };
        let cases: &[(&str, ProcfileError)] = &[
            ("", ProcfileError::Empty),
            ("\n\n", ProcfileError::Empty),
            ("# just a comment\r\n# another\r\n", ProcfileError::Empty),
            ("+bad: x\nweb:\n", ProcfileError::Empty),
            ("\u{feff}", ProcfileError::Empty),
            ("web: a\nweb: b\n", dup("web", 1, 2)),
            ("web: a\nworker: w\n\n# c\nweb: b\n", dup("web", 1, 5)),
            // The first duplicate found is reported.
            ("a: 1\nb: 2\nb: 3\na: 4\n", dup("b", 2, 3)),
            // Names are case-sensitive, so these are not duplicates; a later real one is.
            ("web: a\nWeb: b\nWeb: c\n", dup("Web", 2, 3)),
        ];
        for (src, want) in cases {
            assert_eq!(Procfile::parse(src).as_ref(), Err(want), "{src:?}");
        }
    }

    #[test]
    fn error_messages() {
        let err = Procfile::parse("web: a\nworker: b\nweb: c\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3: duplicate process type `web` (first defined on line 1)"
        );
        assert_eq!(
            Procfile::parse("# nothing\n").unwrap_err().to_string(),
            "no processes defined"
        );
    }

    #[test]
    fn warning_display() {
        let pf = Procfile::parse("# comment\r\nweb:cmd\r\nworker:  cmd2\r\n+bad: x\r\n").unwrap();
        assert_eq!(pf.warnings().len(), 1);
        assert_eq!(
            pf.warnings()[0].to_string(),
            "line 4: ignored `+bad: x` (not a `type: command` line)"
        );
    }

    #[test]
    fn lookups() {
        let pf = Procfile::parse("web: w\nworker: k\nclock: c\n").unwrap();
        assert_eq!(pf.names(), ["web", "worker", "clock"]);
        let cases: &[(&str, Option<usize>, Option<&str>)] = &[
            ("web", Some(0), Some("w")),
            ("worker", Some(1), Some("k")),
            ("clock", Some(2), Some("c")),
            ("Web", None, None),
            ("", None, None),
        ];
        for (name, index, command) in cases {
            assert_eq!(pf.index_of(name), *index, "{name}");
            assert_eq!(pf.get(name).map(|t| t.command.as_str()), *command, "{name}");
        }
    }
}
