//! Finding and reading an app on disk: its Procfile, its env files, its ports.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use crew_procfile::{DEFAULT_BASE_PORT, Procfile, dotenv};

use crate::cli::{EnvArgs, ProcfileArgs};

/// Where an app lives.
pub struct Location {
    pub root: PathBuf,
    pub procfile: PathBuf,
}

/// foreman's rules, with honcho's `PROCFILE`: the Procfile is `-f`, else
/// `PROCFILE` from the env files (the last one that sets it), else `PROCFILE`
/// from the shell, else `ROOT/Procfile`. The root is `-d`, else the directory of
/// a `-f` Procfile, else the current directory. A `PROCFILE` path is relative to
/// the root, and does not move it: the env files that named it live there.
pub fn locate(args: &ProcfileArgs, env_files: &[PathBuf]) -> Result<Location> {
    let cwd = std::env::current_dir().context("finding the current directory")?;
    if let Some(p) = &args.procfile {
        let procfile = cwd.join(p);
        let root = match &args.root {
            Some(root) => cwd.join(root),
            None => procfile
                .parent()
                .map_or_else(|| cwd.clone(), Path::to_path_buf),
        };
        return Ok(Location { root, procfile });
    }
    let root = match &args.root {
        Some(root) => cwd.join(root),
        None => cwd,
    };
    let mut named = None;
    for file in env_file_paths(&root, env_files) {
        let text = read_text(&file, "env file")?;
        let entries =
            dotenv::parse(&text).with_context(|| format!("env file {}", file.display()))?;
        if let Some((_, value)) = entries.into_iter().rev().find(|(k, _)| k == "PROCFILE") {
            named = Some(value);
        }
    }
    if named.is_none() {
        named = std::env::var("PROCFILE").ok();
    }
    let procfile = match named.filter(|p| !p.trim().is_empty()) {
        Some(p) => root.join(p.trim()),
        None => root.join("Procfile"),
    };
    Ok(Location { root, procfile })
}

/// The env files to read: the given ones relative to the root, else `ROOT/.env`
/// when it is a file.
pub fn env_file_paths(root: &Path, given: &[PathBuf]) -> Vec<PathBuf> {
    if given.is_empty() {
        Some(root.join(".env"))
            .filter(|p| p.is_file())
            .into_iter()
            .collect()
    } else {
        given.iter().map(|f| root.join(f)).collect()
    }
}

impl Location {
    /// The root, which processes run in, must exist.
    pub fn require_root(&self) -> Result<()> {
        if !self.root.is_dir() {
            bail!("app directory {} does not exist", self.root.display());
        }
        Ok(())
    }
}

/// Reads and parses the Procfile, printing its warnings to stderr.
pub fn read_procfile(path: &Path) -> Result<Procfile> {
    let text = read_text(path, "Procfile")?;
    let procfile =
        Procfile::parse(&text).with_context(|| format!("Procfile {}", path.display()))?;
    for warning in procfile.warnings() {
        eprintln!("crew: warning: Procfile {}: {warning}", path.display());
    }
    Ok(procfile)
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| match std::fs::metadata(path) {
        Err(_) => format!("no {what} at {}", path.display()),
        Ok(_) => format!("reading {what} {}", path.display()),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {} is not UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// The environment every process of the app starts from, and the base port.
pub struct Environment {
    pub vars: Vec<(String, String)>,
    pub port_base: u16,
}

/// The base port by foreman's precedence: `-p`, then the last `PORT` of the
/// env files (with the file it came from), then the shell's `PORT`, then
/// 5000.
pub(crate) fn base_port(flag: Option<u16>, file_port: Option<(String, PathBuf)>) -> Result<u16> {
    Ok(match (flag, file_port) {
        (Some(port), _) => port,
        (None, Some((value, file))) => value
            .trim()
            .parse()
            .with_context(|| format!("PORT={value} in {} is not a port number", file.display()))?,
        (None, None) => match std::env::var("PORT") {
            Ok(value) if !value.is_empty() => value
                .trim()
                .parse()
                .with_context(|| format!("PORT={value} in the environment is not a port number"))?,
            _ => DEFAULT_BASE_PORT,
        },
    })
}

/// The shell's environment, then the env files on top (foreman's precedence), then
/// `PYTHONUNBUFFERED=1` unless something set it, since output goes through a pipe.
pub fn environment(root: &Path, args: &EnvArgs) -> Result<Environment> {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let files = env_file_paths(root, &args.env);
    let mut file_port = None;
    for file in &files {
        let text = read_text(file, "env file")?;
        let entries =
            dotenv::parse(&text).with_context(|| format!("env file {}", file.display()))?;
        for (key, value) in entries {
            if key == "PORT" {
                file_port = Some((value.clone(), file.clone()));
            }
            set(&mut vars, key, value);
        }
    }
    if !vars.iter().any(|(k, _)| k == "PYTHONUNBUFFERED") {
        vars.push(("PYTHONUNBUFFERED".into(), "1".into()));
    }
    let port_base = base_port(args.port, file_port)?;
    if port_base == 0 {
        bail!("the base port must be between 1 and 65535");
    }
    Ok(Environment { vars, port_base })
}

fn set(vars: &mut Vec<(String, String)>, key: String, value: String) {
    match vars.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => vars.push((key, value)),
    }
}
