//! How a Procfile command line is handed to `sh -c`.

/// Characters that make a command line more than one simple command.
const COMPOUND: &[char] = &[
    ';', '&', '|', '\n', '(', ')', '<', '>', '`', '{', '}', '#', '!',
];

/// Keywords and builtins that are not programs: `exec exit 3` would fail.
const NOT_PROGRAMS: &[&str] = &[
    "exec", "if", "for", "while", "until", "case", "do", "then", "function", "select", "[[", "!",
    "time", "exit", "return", "cd", "export", "set", "unset", "trap", "source", ".", "eval",
    "shift", "ulimit", "umask", "wait", "alias", "unalias", "read", "readonly", "local", "break",
    "continue", "getopts", "hash", "type", "command", "jobs", "fg", "bg", "times",
];

/// `exec CMD` for a simple command, so the shell replaces itself with the
/// program: then the program is the dyno's leader, gets signals first hand, and
/// its exit code is the dyno's. (dash, Debian's `sh`, does not do this by
/// itself.) Anything more than one simple command (`a && b`, `x; y`, pipes,
/// redirections, leading `VAR=value` assignments, shell keywords) is left as it
/// is, since `exec` would change what it means.
pub fn exec_form(command: &str) -> String {
    let trimmed = command.trim();
    let first = trimmed.split_whitespace().next().unwrap_or("");
    let keyword = NOT_PROGRAMS.contains(&first);
    if trimmed.is_empty() || keyword || first.contains('=') || compound(trimmed) {
        command.to_string()
    } else {
        format!("exec {trimmed}")
    }
}

/// Whether a command line has a compound character outside quotes: inside
/// them (`python3 -c "a; b"`) they are only text. An unclosed quote counts as
/// compound, since the line is not understood.
fn compound(line: &str) -> bool {
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => {
                chars.next();
            }
            (Some('"'), '"') => quote = None,
            (Some('"'), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, c) if COMPOUND.contains(&c) => return true,
            (None, _) => {}
            (Some(_), _) => {}
        }
    }
    quote.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_simple_commands_are_execed() {
        let cases = [
            ("python3 web.py", "exec python3 web.py"),
            (
                "  node web.js --port $PORT ",
                "exec node web.js --port $PORT",
            ),
            (
                "bundle exec puma -C config/puma.rb",
                "exec bundle exec puma -C config/puma.rb",
            ),
            ("exec sleep 1", "exec sleep 1"),
            ("a && b", "a && b"),
            ("a; b", "a; b"),
            ("yes | head -n 3", "yes | head -n 3"),
            ("echo hi > out", "echo hi > out"),
            ("sleep 1000 & wait", "sleep 1000 & wait"),
            ("FOO=bar node web.js", "FOO=bar node web.js"),
            ("while true; do x; done", "while true; do x; done"),
            ("trap '' TERM; exec sleep 1", "trap '' TERM; exec sleep 1"),
            ("echo $(date)", "echo $(date)"),
            (
                "python3 -c \"import sys; print(1)\"",
                "exec python3 -c \"import sys; print(1)\"",
            ),
            ("sh -c 'a; b'", "exec sh -c 'a; b'"),
            ("echo 'unclosed", "echo 'unclosed"),
            ("echo a\\;b", "exec echo a\\;b"),
            ("", ""),
            ("exit 7", "exit 7"),
            ("cd sub", "cd sub"),
        ];
        for (input, want) in cases {
            assert_eq!(exec_form(input), want, "{input:?}");
        }
    }
}
