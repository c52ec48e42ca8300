//! Parsers for the text that describes a crew app: the `Procfile`, the `.env` file,
//! formation expressions such as `web=2,worker+1`, and the local port formula;
//! and how a Procfile command line is handed to `sh -c` ([`shell::exec_form`]),
//! which every placement shares.
//!
//! Theory of operation: every function here takes text (or numbers) and returns
//! values or a typed error that names the offending line or expression. The crate
//! never touches the filesystem, the process environment or the clock. Reading the
//! files, choosing the base port from `-p`/`PORT`, and deciding what a warning means
//! to the user are the callers' business. Keeping this layer pure is what lets
//! both the local runner and the server share one definition of the grammar, and
//! lets the grammar be tested exhaustively with plain string tables.
//!
//! Nothing here guesses: an ambiguous or malformed input is either a warning the
//! caller can show (an unrecognised Procfile line) or an error, never a silent
//! fallback.

mod formation;
mod ports;
mod procfile;

pub mod dotenv;
pub mod shell;

pub use formation::{
    Formation, FormationChange, FormationError, MAX_QUANTITY, Quantity, parse_changes,
};
pub use ports::{DEFAULT_BASE_PORT, PORTS_PER_TYPE, PortError, port_for};
pub use procfile::{ProcessType, Procfile, ProcfileError, Warning};

/// Splits text into lines numbered from 1, dropping one trailing `\r` so that
/// CRLF files behave exactly like LF files. A leading UTF-8 byte-order mark is
/// dropped too: Windows editors add it, and it would otherwise become part of the
/// first key or process type name.
pub(crate) fn numbered_lines(src: &str) -> impl Iterator<Item = (usize, &str)> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    // `split` yields one empty piece after a final newline; it is blank, so every
    // caller skips it, and no line numbers shift.
    src.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .enumerate()
        .map(|(i, line)| (i + 1, line))
}

/// Whether `s` is a non-empty run of `[A-Za-z0-9_-]`, the alphabet shared by
/// process type names and dyno sizes.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parser must answer every input with a value or an error, never a
    /// panic. Short strings over the characters the grammars care about (plus a
    /// multi-byte one, to catch slicing inside a character) cover the corners.
    #[test]
    fn no_input_panics() {
        const ALPHABET: &[char] = &[
            'a', '1', '=', '+', '-', ':', ',', ' ', '#', '"', '\'', '\\', '\n', '\r', 'é',
        ];
        let mut inputs = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for c in ALPHABET {
                    let mut s = prefix.clone();
                    s.push(*c);
                    next.push(s);
                }
            }
            inputs.extend(next.iter().cloned());
            frontier = next;
        }
        let mut formation = Formation::new(["a", "a-1"].map(String::from), 1);
        for input in &inputs {
            let _ = Procfile::parse(input);
            let _ = dotenv::parse(input);
            let _ = input.parse::<Quantity>();
            if let Ok(changes) = parse_changes([input.as_str()]) {
                let _ = formation.apply(&changes);
            }
        }
    }
}
