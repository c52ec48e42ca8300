//! The substitution `crew export -t DIR` templates use: `{{name}}` is replaced
//! by the variable `name`, already quoted for the file's syntax. Nothing else is
//! special; an unknown name is an error, so a typo never reaches an init
//! system. crew's own templates are written in the same language.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Where a format's templates come from: `-t DIR/NAME` when that file exists,
/// else crew's own.
pub struct Templates {
    format: &'static str,
    dir: Option<PathBuf>,
}

impl Templates {
    pub fn new(format: &'static str, dir: Option<&Path>) -> Result<Templates> {
        if let Some(dir) = dir
            && !dir.is_dir()
        {
            bail!(
                "the template directory {} is not a directory",
                dir.display()
            );
        }
        Ok(Templates {
            format,
            dir: dir.map(Path::to_path_buf),
        })
    }

    /// Renders template `name` with `vars`.
    pub fn render(&self, name: &str, vars: &[(&str, String)]) -> Result<String> {
        let (text, origin) = match self.dir.as_ref().map(|d| d.join(name)) {
            Some(path) if path.is_file() => (
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the template {}", path.display()))?,
                path.display().to_string(),
            ),
            _ => (
                builtin(self.format, name)
                    .with_context(|| format!("crew has no {} template {name}", self.format))?
                    .to_string(),
                format!("crew's {}/{name}", self.format),
            ),
        };
        substitute(&text, vars).with_context(|| format!("template {origin}"))
    }
}

/// Replaces every `{{name}}` in `text`.
pub fn substitute(text: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = after[..end].trim();
        let Some((_, value)) = vars.iter().find(|(k, _)| *k == name) else {
            let line = text[..text.len() - rest.len() + start]
                .lines()
                .count()
                .max(1);
            let known: Vec<&str> = vars.iter().map(|(k, _)| *k).collect();
            bail!(
                "line {line}: unknown variable {{{{{name}}}}}; this template gets {}",
                known.join(", ")
            );
        };
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn builtin(format: &str, name: &str) -> Option<&'static str> {
    Some(match (format, name) {
        ("systemd", "master.target") => include_str!("templates/systemd/master.target"),
        ("systemd", "process.service") => include_str!("templates/systemd/process.service"),
        ("supervisord", "program.conf") => include_str!("templates/supervisord/program.conf"),
        ("supervisord", "group.conf") => include_str!("templates/supervisord/group.conf"),
        ("runit", "run") => include_str!("templates/runit/run"),
        ("runit", "log-run") => include_str!("templates/runit/log-run"),
        ("launchd", "process.plist") => include_str!("templates/launchd/process.plist"),
        ("upstart", "master.conf") => include_str!("templates/upstart/master.conf"),
        ("upstart", "process_master.conf") => {
            include_str!("templates/upstart/process_master.conf")
        }
        ("upstart", "process.conf") => include_str!("templates/upstart/process.conf"),
        ("daemon", "master.conf") => include_str!("templates/daemon/master.conf"),
        ("daemon", "process_master.conf") => include_str!("templates/daemon/process_master.conf"),
        ("daemon", "process.conf") => include_str!("templates/daemon/process.conf"),
        ("inittab", "process") => include_str!("templates/inittab/process"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_replaced_and_unknown_ones_refused() {
        let vars = [("app", "shop".to_string()), ("port", "5000".to_string())];
        assert_eq!(
            substitute("{{app}} on {{ port }}, {{app}}", &vars).unwrap(),
            "shop on 5000, shop"
        );
        assert_eq!(substitute("{{ no end", &vars).unwrap(), "{{ no end");
        let error = substitute("a\nb {{apq}}", &vars).unwrap_err().to_string();
        assert!(
            error.contains("line 2") && error.contains("{{apq}}"),
            "{error}"
        );
        assert!(error.contains("app, port"), "{error}");
    }
}
