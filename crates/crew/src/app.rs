//! Finding and reading an app on disk: its Procfile, its env files, its ports.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use crew_procfile::{DEFAULT_BASE_PORT, Procfile, dotenv};

use crate::cli::{AppArgs, EnvArgs};

/// Where an app lives.
pub struct Location {
    pub root: PathBuf,
    pub procfile: PathBuf,
}

/// foreman's rules: the Procfile is `-f`, else `ROOT/Procfile`; the root is `-d`,
/// else the Procfile's directory.
pub fn locate(args: &AppArgs) -> Result<Location> {
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let procfile = match (&args.procfile, &args.root) {
        (Some(p), _) => cwd.join(p),
        (None, Some(root)) => cwd.join(root).join("Procfile"),
        (None, None) => cwd.join("Procfile"),
    };
    let root = match &args.root {
        Some(root) => cwd.join(root),
        None => procfile
            .parent()
            .map_or_else(|| cwd.clone(), Path::to_path_buf),
    };
    Ok(Location { root, procfile })
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

/// The shell's environment, then the env files on top (foreman's precedence), then
/// `PYTHONUNBUFFERED=1` unless something set it, since output goes through a pipe.
pub fn environment(root: &Path, args: &EnvArgs) -> Result<Environment> {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let files: Vec<PathBuf> = if args.env.is_empty() {
        let default = root.join(".env");
        if default.is_file() {
            vec![default]
        } else {
            Vec::new()
        }
    } else {
        args.env.iter().map(|f| root.join(f)).collect()
    };
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
    let port_base =
        match (args.port, file_port) {
            (Some(port), _) => port,
            (None, Some((value, file))) => value.trim().parse().with_context(|| {
                format!("PORT={value} in {} is not a port number", file.display())
            })?,
            (None, None) => match std::env::var("PORT") {
                Ok(value) if !value.is_empty() => value.trim().parse().with_context(|| {
                    format!("PORT={value} in the environment is not a port number")
                })?,
                _ => DEFAULT_BASE_PORT,
            },
        };
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
