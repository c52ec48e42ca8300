//! Quoting a value for each syntax an export writes into. Each function either
//! returns text that the reading program turns back into exactly `value`, or an
//! error saying why that syntax cannot hold it; nothing is dropped silently.

/// A POSIX shell word: single quotes, with `'` written as `'\''`.
pub fn sh(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// One word of a systemd `Exec*=` line: double quotes with C escapes (systemd
/// unquotes and unescapes these lines), `%%` for a literal `%` (specifiers are
/// resolved first) and `$$` for a literal `$` (systemd expands `$NAME` in
/// command lines).
pub fn systemd_exec_word(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            '\n' => out.push_str(r"\n"),
            '\t' => out.push_str(r"\t"),
            '\r' => out.push_str(r"\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A systemd setting that takes the rest of the line as it is (`User=`,
/// `WorkingDirectory=`, `EnvironmentFile=`): only specifiers need `%%`, and a
/// line break or control character cannot be held at all.
pub fn systemd_setting(what: &str, value: &str) -> Result<String, String> {
    if value.chars().any(char::is_control) {
        return Err(format!(
            "{what} holds a control character, which a systemd setting cannot hold"
        ));
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(format!(
            "{what} starts or ends with whitespace, which systemd would drop"
        ));
    }
    Ok(value.replace('%', "%%"))
}

/// A value in a systemd `EnvironmentFile=`: double quotes, in which systemd (as
/// a POSIX shell) takes `\` before `"`, `\`, `` ` `` and `$` as an escape, and a
/// line break as itself. Specifiers are not resolved in these files.
pub fn env_file_value(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// supervisord's config is INI read by Python's configparser with `;` and `#`
/// as inline comment starts after whitespace, and `%` as interpolation; a value
/// is one line.
fn supervisor_line(what: &str, value: &str) -> Result<(), String> {
    if value.contains(['\n', '\r']) {
        return Err(format!(
            "{what} holds a line break, which a supervisord setting cannot hold"
        ));
    }
    Ok(())
}

/// Breaks every whitespace-then-`;`/`#` pair with `gap` (text the later
/// parser reads as nothing), so configparser does not take the rest as a
/// comment.
fn break_comments(text: &str, gap: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous_space = false;
    for c in text.chars() {
        if previous_space && (c == ';' || c == '#') {
            out.push_str(gap);
        }
        previous_space = c == ' ' || c == '\t';
        out.push(c);
    }
    out
}

/// A supervisord `command=`: supervisord splits it with Python's POSIX
/// `shlex.split`, so each word is shell-quoted; `''` (an empty quoted string)
/// keeps a `;` or `#` from following whitespace.
pub fn supervisor_command(words: &[&str]) -> Result<String, String> {
    let mut quoted = Vec::new();
    for word in words {
        supervisor_line("the command", word)?;
        quoted.push(break_comments(&sh(word), "''"));
    }
    Ok(quoted.join(" ").replace('%', "%%"))
}

/// A supervisord path setting (`directory=`, `stdout_logfile=`).
pub fn supervisor_path(what: &str, value: &str) -> Result<String, String> {
    supervisor_line(what, value)?;
    if value.chars().any(char::is_control) || value.contains([';', '#']) {
        return Err(format!(
            "{what} holds `;`, `#` or a control character, which a supervisord path cannot hold"
        ));
    }
    Ok(value.replace('%', "%%"))
}

/// One `KEY="value"` of supervisord's `environment=`. supervisord reads these
/// with Python's non-POSIX shlex, which knows no escapes: a value is quoted
/// with whichever quote it does not hold, and loses any quote at its ends.
pub fn supervisor_env(key: &str, value: &str) -> Result<String, String> {
    let what = format!("the value of {key}");
    supervisor_line(&what, value)?;
    if value.starts_with(['"', '\'']) || value.ends_with(['"', '\'']) {
        return Err(format!(
            "{what} starts or ends with a quote, which supervisord's environment= strips"
        ));
    }
    let quote = if !value.contains('"') {
        '"'
    } else if !value.contains('\'') {
        '\''
    } else {
        return Err(format!(
            "{what} holds both kinds of quote, which supervisord's environment= cannot hold"
        ));
    };
    if break_comments(value, "x") != value {
        return Err(format!(
            "{what} holds `;` or `#` after whitespace, which supervisord reads as a comment"
        ));
    }
    Ok(format!("{key}={quote}{value}{quote}").replace('%', "%%"))
}

/// Text inside an XML element (a launchd property list). XML 1.0 cannot hold
/// control characters other than tab and line breaks, escaped or not.
pub fn xml(what: &str, value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' => out.push(c),
            '\r' => out.push_str("&#13;"),
            c if c.is_control() => {
                return Err(format!(
                    "{what} holds a control character, which a property list cannot hold"
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A value of an upstart `env KEY=VALUE` stanza: single quotes, with `'`
/// written as `'"'"'`; a stanza is one line.
pub fn upstart_env(key: &str, value: &str) -> Result<String, String> {
    if value.contains(['\n', '\r']) {
        return Err(format!(
            "the value of {key} holds a line break, which an upstart env stanza cannot hold"
        ));
    }
    Ok(format!("'{}'", value.replace('\'', r#"'"'"'"#)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// systemd's unquoting of one `Exec*=` word, as systemd.syntax(7) and
    /// systemd.service(5) describe it: specifiers (only `%%` here), then
    /// double-quote unquoting with C escapes, then `$$`.
    fn systemd_unquote(word: &str) -> String {
        let word = word.replace("%%", "%");
        let inner = word
            .strip_prefix('"')
            .and_then(|w| w.strip_suffix('"'))
            .expect("quoted");
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(char::from(u8::from_str_radix(&hex, 16).expect("hex")));
                }
                Some(other) => out.push(other),
                None => panic!("dangling backslash"),
            }
        }
        out.replace("$$", "$")
    }

    const HARD: &[&str] = &[
        "plain",
        "two words",
        "it's",
        "say \"hi\"",
        "$HOME and ${PATH}",
        "100% and %i %n",
        r"back\slash\n",
        "line\nbreak",
        "tab\there",
        "bell\x07",
        "",
        "ünïcödé ✓",
        "$$",
        "%%",
    ];

    #[test]
    fn systemd_exec_words_read_back_as_written() {
        for value in HARD {
            let word = systemd_exec_word(value);
            assert_eq!(systemd_unquote(&word), *value, "{word}");
            assert!(!word[1..word.len() - 1].contains('\n'), "{word}");
        }
    }

    #[test]
    fn shell_words_read_back_as_written() {
        for value in HARD {
            let quoted = sh(value);
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("printf %s {quoted}"))
                .output()
                .expect("running sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), *value, "{quoted}");
        }
    }

    #[test]
    fn env_file_values_escape_what_a_shell_double_quote_would_expand() {
        assert_eq!(
            env_file_value(r#"a "b" $c `d` \e"#),
            r#""a \"b\" \$c \`d\` \\e""#
        );
        assert_eq!(env_file_value("x\ny"), "\"x\ny\"");
        assert_eq!(env_file_value("50%"), "\"50%\"");
    }

    #[test]
    fn supervisor_values_keep_comments_and_interpolation_out() {
        assert_eq!(
            supervisor_command(&["/bin/sh", "-c", "echo 5% ; it's #1"]).as_deref(),
            Ok(r#"'/bin/sh' '-c' 'echo 5%% ''; it'\''s ''#1'"#)
        );
        assert_eq!(
            supervisor_env("A", "x y, 50%").as_deref(),
            Ok("A=\"x y, 50%%\"")
        );
        assert_eq!(
            supervisor_env("A", "say \"hi\" now").as_deref(),
            Ok("A='say \"hi\" now'")
        );
        assert!(supervisor_env("A", "a\nb").is_err());
        assert!(supervisor_env("A", "\"quoted\"").is_err());
        assert!(supervisor_env("A", "it's \"both\" here").is_err());
        assert!(supervisor_env("A", "x ;y").is_err());
        assert_eq!(supervisor_env("A", "x;y").as_deref(), Ok("A=\"x;y\""));
    }

    #[test]
    fn xml_escapes_markup_and_refuses_control_characters() {
        assert_eq!(
            xml("v", "a<b> & \"c\"\n").as_deref(),
            Ok("a&lt;b&gt; &amp; \"c\"\n")
        );
        assert!(xml("v", "bell\x07").is_err());
    }

    #[test]
    fn systemd_settings_double_percent_and_refuse_line_breaks() {
        assert_eq!(
            systemd_setting("d", "/srv/my app/100%").as_deref(),
            Ok("/srv/my app/100%%")
        );
        assert!(systemd_setting("d", "/srv/a\nb").is_err());
        assert!(systemd_setting("d", "/srv/a ").is_err());
    }
}
