//! `crew export systemd|supervisord|upstart|launchd|runit|inittab|daemon`: a
//! local Procfile as the files an init system runs, foreman's formats.
//!
//! Theory of operation: a `Plan` is made from the Procfile, the env files
//! (their config vars only, never the shell's environment) and the options;
//! `formats` turns it into entries (files and directories, relative to the
//! location) through `template`; this module writes them.
//!
//! Invariants:
//! - Each process gets its config vars, then `PORT` by crew's rule (base + 100
//!   × type index + instance − 1), `DYNO` and `PS` (`web.1`).
//! - A location holds one manifest per app, `.crew-export-APP.json`, listing
//!   what that app's last export wrote. A re-export writes the new entries,
//!   then removes what the old manifest lists and the new one does not: only
//!   regular files and empty directories, never a path outside the location.
//! - A path that exists and is not in the app's manifest is never written over:
//!   the export fails before it writes anything.
//! - Files holding config vars are mode 0600 (0700 for runit's run script).

mod formats;
mod quote;
mod template;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use crew_procfile::{Formation, dotenv, parse_changes, port_for};
use serde::{Deserialize, Serialize};

use crate::app;
use crate::cli::{ExportArgs, ExportKind, ProcfileArgs};

/// foreman's seconds from SIGTERM to SIGKILL.
const DEFAULT_TIMEOUT: u64 = 5;

/// Everything the formats need to know.
pub struct Plan {
    pub app: String,
    pub user: String,
    pub log: PathBuf,
    pub run: PathBuf,
    pub root: PathBuf,
    /// Where the files go, absolute (systemd units name their env file by it).
    pub location: PathBuf,
    pub timeout: u64,
    /// The config vars from the env files, in order, without PORT, DYNO and PS.
    pub env: Vec<(String, String)>,
    pub types: Vec<TypePlan>,
}

pub struct TypePlan {
    pub name: String,
    /// The Procfile command, in the form `sh -c` gets it (`exec` for a simple one).
    pub command: String,
    pub quantity: u32,
    /// The port of instance 1; instance N has this + N − 1.
    pub first_port: u16,
}

impl Plan {
    /// Every process: its type, its number and its port.
    pub fn instances(&self) -> impl Iterator<Item = (&TypePlan, u32, u16)> {
        self.types.iter().flat_map(|t| {
            (1..=t.quantity).map(move |n| (t, n, t.first_port + u16::try_from(n - 1).unwrap_or(0)))
        })
    }
}

/// A file or directory to write, relative to the location.
pub struct Entry {
    pub path: String,
    /// None for a directory.
    pub contents: Option<String>,
    pub mode: u32,
}

impl Entry {
    fn file(path: &str, contents: String, mode: u32) -> Entry {
        Entry {
            path: path.to_string(),
            contents: Some(contents),
            mode,
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.to_string(),
            contents: None,
            mode: 0o755,
        }
    }
}

fn format_name(kind: ExportKind) -> &'static str {
    match kind {
        ExportKind::Systemd => "systemd",
        ExportKind::Supervisord => "supervisord",
        ExportKind::Upstart => "upstart",
        ExportKind::Launchd => "launchd",
        ExportKind::Runit => "runit",
        ExportKind::Inittab => "inittab",
        ExportKind::Daemon => "daemon",
        ExportKind::Kubernetes => "kubernetes",
        ExportKind::Swarm => "swarm",
        ExportKind::Image => "image",
    }
}

/// Where each format's files usually go, for the error without a location.
fn usual_location(kind: ExportKind) -> &'static str {
    match kind {
        ExportKind::Systemd => "/etc/systemd/system",
        ExportKind::Supervisord => "/etc/supervisor/conf.d",
        ExportKind::Upstart | ExportKind::Daemon => "/etc/init",
        ExportKind::Launchd => "~/Library/LaunchAgents",
        ExportKind::Runit => "/etc/service",
        _ => "DIR",
    }
}

pub fn export(args: &ExportArgs) -> Result<u8> {
    let format = format_name(args.kind);
    if args.run.is_some()
        || args.slug.is_some()
        || args.base.is_some()
        || args.image.is_some()
        || args.release.is_some()
        || args.output.is_some()
    {
        bail!(
            "--run, --slug, --base, --image, --release and -o are for kubernetes, swarm and image; `crew export {format}` writes to LOCATION"
        );
    }
    let location = match &args.location {
        Some(l) if l.as_os_str() == "-" && args.kind == ExportKind::Inittab => None,
        Some(l) => Some(l.clone()),
        None if args.kind == ExportKind::Inittab => None,
        None => bail!(
            "where to? `crew export {format} LOCATION`, such as `crew export {format} {}`",
            usual_location(args.kind)
        ),
    };
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let location = location.map(|l| cwd.join(l));
    if let Some(location) = &location {
        match (args.kind, std::fs::metadata(location)) {
            (ExportKind::Inittab, Ok(meta)) if !meta.is_file() => {
                bail!(
                    "{} is not a file: inittab's LOCATION is the inittab file to update (or - to print)",
                    location.display()
                )
            }
            (ExportKind::Inittab, _) => {}
            (_, Ok(meta)) if !meta.is_dir() => bail!(
                "{} is not a directory: `crew export {format}` writes its files into the directory LOCATION",
                location.display()
            ),
            _ => {}
        }
    }
    let plan = plan(args, &cwd, location.clone().unwrap_or_else(|| cwd.clone()))?;
    let templates = template::Templates::new(format, args.template.as_deref())?;
    if args.kind != ExportKind::Systemd && plan.instances().next().is_none() {
        bail!("the formation runs no process, so there is nothing to export (see -m)");
    }
    let entries = match args.kind {
        ExportKind::Systemd => formats::systemd(&plan, &templates)?,
        ExportKind::Supervisord => formats::supervisord(&plan, &templates)?,
        ExportKind::Runit => formats::runit(&plan, &templates)?,
        ExportKind::Launchd => formats::launchd(&plan, &templates)?,
        ExportKind::Upstart => formats::upstart(&plan, &templates, false)?,
        ExportKind::Daemon => formats::upstart(&plan, &templates, true)?,
        ExportKind::Inittab => {
            let lines = formats::inittab_lines(&plan, &templates)?;
            return write_inittab(&plan.app, &lines, location.as_deref());
        }
        ExportKind::Kubernetes | ExportKind::Swarm | ExportKind::Image => {
            bail!("`crew export {format}` is not an init format")
        }
    };
    let location = location.context("no location")?;
    write_entries(&plan.app, format, &location, &entries)?;
    Ok(0)
}

/// App names become file names, unit names and program names in every format.
fn validate_name(what: &str, name: &str, extra: &[char]) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c));
    if !ok {
        bail!(
            "`{name}` cannot be {what}: use 1 to 64 ASCII letters, digits, `_` and `-`{}, starting with a letter, digit or `_`",
            if extra.is_empty() { "" } else { " and `.`" }
        );
    }
    Ok(())
}

fn plan(args: &ExportArgs, cwd: &Path, location: PathBuf) -> Result<Plan> {
    let procfile_args = ProcfileArgs {
        procfile: args.procfile.clone(),
        root: args.root.clone(),
    };
    let place = app::locate(&procfile_args, &args.env)?;
    let procfile = app::read_procfile(&place.procfile)?;
    let name = match &args.app {
        Some(name) => name.clone(),
        None => place
            .root
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string(),
    };
    validate_name("an app name", &name, &[]).with_context(|| {
        if args.app.is_some() {
            "reading -a".to_string()
        } else {
            format!(
                "naming the app after its directory {}; pass -a NAME",
                place.root.display()
            )
        }
    })?;
    let user = args.user.clone().unwrap_or_else(|| name.clone());
    validate_name("a user name", &user, &['.']).context("reading -u")?;

    let mut env: Vec<(String, String)> = Vec::new();
    let mut file_port = None;
    for file in app::env_file_paths(&place.root, &args.env) {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading env file {}", file.display()))?;
        for (key, value) in
            dotenv::parse(&text).with_context(|| format!("env file {}", file.display()))?
        {
            if key == "PORT" {
                file_port = Some((value, file.clone()));
                continue;
            }
            if key == "DYNO" || key == "PS" {
                continue;
            }
            match env.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => env.push((key, value)),
            }
        }
    }
    let base = app::base_port(args.port, file_port)?;

    let mut formation = Formation::from_procfile(&procfile, 1);
    if !args.formation.is_empty() {
        let changes =
            parse_changes(args.formation.iter().map(String::as_str)).context("reading -m")?;
        formation.apply(&changes).context("reading -m")?;
    }
    let mut types = Vec::new();
    for (index, process) in procfile.types().iter().enumerate() {
        let quantity = formation.get(&process.name).unwrap_or(0);
        let first_port =
            port_for(base, index, 1).with_context(|| format!("the port for {}.1", process.name))?;
        if quantity > 0 {
            port_for(base, index, quantity)
                .with_context(|| format!("the port for {}.{quantity}", process.name))?;
        }
        types.push(TypePlan {
            name: process.name.clone(),
            command: crew_procfile::shell::exec_form(&process.command),
            quantity,
            first_port,
        });
    }
    let absolute = |p: &Path| cwd.join(p);
    Ok(Plan {
        log: args
            .log
            .as_deref()
            .map_or_else(|| PathBuf::from(format!("/var/log/{name}")), absolute),
        run: args
            .run_dir
            .as_deref()
            .map_or_else(|| PathBuf::from(format!("/var/run/{name}")), absolute),
        root: place.root,
        location,
        timeout: args.timeout.unwrap_or(DEFAULT_TIMEOUT),
        app: name,
        user,
        env,
        types,
    })
}

/// What one app's export wrote into a location.
#[derive(Serialize, Deserialize, Default)]
struct Manifest {
    format: String,
    /// Paths relative to the location; directories end in `/`.
    written: Vec<String>,
}

fn manifest_name(app: &str) -> String {
    format!(".crew-export-{app}.json")
}

/// A manifest path is used only if it is relative, plain, and one of this
/// app's names: an edited manifest cannot point crew anywhere else.
fn manifest_path_ok(app: &str, path: &str) -> bool {
    let trimmed = path.trim_end_matches('/');
    let components: Vec<Component> = Path::new(trimmed).components().collect();
    !trimmed.is_empty()
        && components.iter().all(|c| matches!(c, Component::Normal(_)))
        && trimmed.starts_with(app)
        && trimmed[app.len()..].starts_with(['-', '.', '@'])
}

/// Whether a directory between `location` and `relative`'s last component
/// is a symbolic link (or cannot be read).
fn through_a_link(location: &Path, relative: &str) -> bool {
    let mut at = location.to_path_buf();
    let parts: Vec<Component> = Path::new(relative).components().collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            _ => return true,
        }
    }
    false
}

fn read_manifest(app: &str, location: &Path) -> Result<Manifest> {
    let path = location.join(manifest_name(app));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut manifest: Manifest = serde_json::from_str(&text).with_context(|| {
        format!(
            "reading {} (crew's record of an earlier export)",
            path.display()
        )
    })?;
    manifest.written.retain(|p| manifest_path_ok(app, p));
    Ok(manifest)
}

fn entry_key(entry: &Entry) -> String {
    match entry.contents {
        Some(_) => entry.path.clone(),
        None => format!("{}/", entry.path),
    }
}

fn write_entries(app: &str, format: &str, location: &Path, entries: &[Entry]) -> Result<()> {
    std::fs::create_dir_all(location)
        .with_context(|| format!("creating {}", location.display()))?;
    let old = read_manifest(app, location)?;
    let old_set: BTreeSet<&str> = old.written.iter().map(String::as_str).collect();
    // Nothing is written over that an earlier export of this app did not write.
    for entry in entries {
        let path = location.join(&entry.path);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !old_set.contains(entry_key(entry).as_str()) {
            bail!(
                "{} exists, and no earlier `crew export` of {app} wrote it: move it away, or export elsewhere",
                path.display()
            );
        }
        let right_kind = match entry.contents {
            Some(_) => meta.is_file(),
            None => meta.is_dir(),
        };
        if !right_kind {
            bail!(
                "{} is not the {} crew wrote there: move it away, or export elsewhere",
                path.display(),
                if entry.contents.is_some() {
                    "file"
                } else {
                    "directory"
                }
            );
        }
    }
    let mut report = String::new();
    for entry in entries {
        let path = location.join(&entry.path);
        match &entry.contents {
            None => {
                if !path.is_dir() {
                    std::fs::create_dir(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                }
            }
            Some(contents) => {
                write_atomic(&path, contents.as_bytes(), entry.mode)?;
                report.push_str(&format!("wrote {}\n", path.display()));
            }
        }
    }
    let manifest = Manifest {
        format: format.to_string(),
        written: entries.iter().map(entry_key).collect(),
    };
    let text = serde_json::to_string_pretty(&manifest).context("writing the manifest")?;
    write_atomic(&location.join(manifest_name(app)), text.as_bytes(), 0o644)?;
    // What the earlier export wrote and this one did not: files first, then
    // directories from the deepest.
    let new_set: BTreeSet<String> = manifest.written.iter().cloned().collect();
    let mut stale: Vec<&String> = old
        .written
        .iter()
        .filter(|p| !new_set.contains(*p))
        .collect();
    stale.sort_by_key(|p| (p.ends_with('/'), std::cmp::Reverse(p.len())));
    for relative in stale {
        let path = location.join(relative.trim_end_matches('/'));
        // A directory on the way that became a link would lead outside
        // LOCATION: leave the path alone.
        if through_a_link(location, relative.trim_end_matches('/')) {
            eprintln!(
                "crew: warning: left {}: a directory on its way is now a link",
                path.display()
            );
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if relative.ends_with('/') && meta.is_dir() {
            match std::fs::remove_dir(&path) {
                Ok(()) => report.push_str(&format!("removed {}\n", path.display())),
                Err(_) => eprintln!(
                    "crew: warning: left {}: it holds files crew did not write",
                    path.display()
                ),
            }
        } else if !relative.ends_with('/') && meta.is_file() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            report.push_str(&format!("removed {}\n", path.display()));
        } else {
            eprintln!(
                "crew: warning: left {}: it is no longer what crew wrote there",
                path.display()
            );
        }
    }
    crate::say(&report);
    Ok(())
}

/// Writes beside the target and renames, so a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let parent = path.parent().context("a file has a directory")?;
    let mut temp = tempfile::Builder::new()
        .prefix(".crew-export-")
        .tempfile_in(parent)
        .with_context(|| format!("creating a file in {}", parent.display()))?;
    temp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    temp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The marker lines around an app's inittab lines.
fn inittab_markers(app: &str) -> (String, String) {
    (
        format!("# ----- crew {app} processes -----"),
        format!("# ----- end crew {app} processes -----"),
    )
}

/// Prints the inittab block, or puts it into the file: in place of the app's
/// earlier block if there is one, else at the end. The rest of the file stays
/// as it was.
fn write_inittab(app: &str, lines: &str, file: Option<&Path>) -> Result<u8> {
    let (begin, end) = inittab_markers(app);
    let block = format!("{begin}\n{lines}{end}\n");
    let Some(file) = file else {
        crate::say(&block);
        return Ok(0);
    };
    let (old, mode) = match std::fs::read_to_string(file) {
        Ok(text) => (
            text,
            std::fs::metadata(file).map_or(0o644, |m| m.permissions().mode() & 0o7777),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o644),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let old_lines: Vec<&str> = old.lines().collect();
    let start = old_lines.iter().position(|l| *l == begin);
    let stop = start.and_then(|s| old_lines[s..].iter().position(|l| *l == end).map(|e| s + e));
    let text = match (start, stop) {
        (Some(start), Some(stop)) => {
            let mut text = String::new();
            for line in &old_lines[..start] {
                text.push_str(line);
                text.push('\n');
            }
            text.push_str(&block);
            for line in &old_lines[stop + 1..] {
                text.push_str(line);
                text.push('\n');
            }
            text
        }
        (Some(_), None) => bail!(
            "{} has crew's line `{begin}` but not `{end}`: mend it by hand first",
            file.display()
        ),
        _ => {
            let mut text = old.clone();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&block);
            text
        }
    };
    write_atomic(file, text.as_bytes(), mode)?;
    crate::say(&format!("wrote {}\n", file.display()));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// web and worker, one each, for the formats' own tests.
    pub fn plan() -> Plan {
        Plan {
            app: "shop".into(),
            user: "shop".into(),
            log: "/var/log/shop".into(),
            run: "/var/run/shop".into(),
            root: "/srv/shop".into(),
            location: "/etc/systemd/system".into(),
            timeout: 5,
            env: vec![("GREETING".into(), "hi there".into())],
            types: vec![
                TypePlan {
                    name: "web".into(),
                    command: "exec python3 -m http.server $PORT".into(),
                    quantity: 1,
                    first_port: 5000,
                },
                TypePlan {
                    name: "worker".into(),
                    command: "exec python3 worker.py".into(),
                    quantity: 1,
                    first_port: 5100,
                },
            ],
        }
    }

    #[test]
    fn manifest_paths_stay_inside_the_apps_names() {
        assert!(manifest_path_ok("shop", "shop.target"));
        assert!(manifest_path_ok("shop", "shop-web@.service"));
        assert!(manifest_path_ok("shop", "shop-web.1/log/"));
        assert!(!manifest_path_ok("shop", "../shop.target"));
        assert!(!manifest_path_ok("shop", "/etc/passwd"));
        assert!(!manifest_path_ok("shop", "shop-web.1/../../x"));
        assert!(!manifest_path_ok("shop", "shopping.conf"));
        assert!(!manifest_path_ok("shop", "other.conf"));
    }
}
