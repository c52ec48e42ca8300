//! Turning an app's source tree into a slug with classic (Heroku-style) buildpacks.
//!
//! Theory of operation. A build is one call to [`Buildpacks::build`]:
//!
//! 1. **Select.** [`Buildpacks::select`] picks the buildpacks: the app's
//!    `BUILDPACK_URL` config var (a git URL, an absolute path, or a built-in
//!    name), else a `.buildpacks` file in the source (one per line), else the
//!    built-ins in the order `python`, `nodejs`, `procfile`. The first two are
//!    *explicit*: every buildpack listed runs, and each must accept the app.
//!    The built-ins are *automatic*: the first whose `bin/detect` accepts the app
//!    is the only one that runs.
//! 2. **Copy.** The source is copied (without `.git`) into a fresh scratch
//!    directory, `$TMPDIR/crew-build-XXXX/app`, so the build never changes the
//!    checked-out tree and a failed build leaves nothing behind. Config vars are
//!    written to `…/env`, one file per var, for `bin/compile`'s ENV_DIR. Git
//!    buildpacks are cloned (`git clone --depth 1`) into `…/buildpack-N` on
//!    every build; a branch moves, so a cached clone would go stale.
//! 3. **Detect, compile, release** with the classic API: `bin/detect BUILD_DIR`
//!    (exit 0 and a name on stdout), `bin/compile BUILD_DIR CACHE_DIR ENV_DIR`
//!    (its stdout and stderr stream to the pusher line by line, merged in write
//!    order), `bin/release BUILD_DIR` (YAML, read by [`parse_release`]). Later
//!    buildpacks' defaults override earlier ones'.
//! 4. **Process types.** The app's Procfile (after compile, so a buildpack may
//!    write one) overrides and extends the buildpacks' `default_process_types`.
//!    A `release` type becomes [`BuildOutput::release_command`].
//! 5. **Compress** the build directory into a tar.gz at `slug_path`: files at
//!    the archive root, modes and symlinks kept, written under a temporary name
//!    and renamed, so a slug is whole or absent.
//!
//! Every program a build runs gets its own process group. The whole build shares
//! one deadline ([`BuildRequest::timeout`]); when it passes, the running group is
//! killed and the build fails. Buildpack programs inherit crew's environment
//! minus every `GIT_*` variable (a build runs inside a git pre-receive hook, whose
//! `GIT_DIR` and quarantine settings would break any `git` the buildpack runs),
//! plus `STACK=crew` and `CREW_APP`. Config vars are not in their environment,
//! only in ENV_DIR, as the API prescribes.
//!
//! Output is given to the caller's `out` callback one line at a time, already in
//! the form the pusher sees (`-----> Python app detected`, 7-space detail lines);
//! failures carry the ` !     ` lines in [`BuildError::pusher_lines`].
//!
//! Builds are not isolated here: a buildpack runs with crew's user and sees the
//! machine. Callers must not run two builds of one app at once, since they would
//! share its cache directory.

mod builtin;
mod error;
mod release;
mod run;
mod slug;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crew_procfile::Procfile;

pub use builtin::BUILTIN_NAMES;
pub use error::{BuildError, ERROR_PREFIX};
pub use release::{Release, ReleaseYamlError, parse_release};
pub use slug::human_size;

use run::{Outcome, Output, Stream};

/// Heroku's hard limit on a compressed slug; a larger one fails the build.
pub const MAX_SLUG_SIZE: u64 = 500 * 1024 * 1024;

/// The value of `STACK` that buildpacks see.
pub const STACK: &str = "crew";

/// How many of git's last output lines a failed clone reports.
const GIT_ERROR_LINES: usize = 10;

/// Where the built-in buildpacks live on disk.
#[derive(Debug, Clone)]
pub struct Buildpacks {
    dir: PathBuf,
}

/// One buildpack, as named by BUILDPACK_URL, a `.buildpacks` line, or the
/// built-in list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildpackSource {
    /// One of [`BUILTIN_NAMES`].
    Builtin(String),
    /// A buildpack directory on this machine.
    Path(PathBuf),
    /// A git URL, optionally `#ref` (a branch or tag: it is passed to
    /// `git clone --branch`).
    Git(String),
}

impl BuildpackSource {
    /// Reads one BUILDPACK_URL value or `.buildpacks` line: a built-in name, a
    /// URL with a scheme (`https://`, `file://`, ...) or `git@host:path`, or an
    /// absolute path. Anything else (a relative path, `org/name` shorthand) is
    /// refused rather than guessed at.
    pub fn parse(text: &str) -> Result<BuildpackSource, BuildError> {
        let text = text.trim();
        if BUILTIN_NAMES.contains(&text) {
            Ok(BuildpackSource::Builtin(text.to_owned()))
        } else if text.contains("://") || text.starts_with("git@") {
            Ok(BuildpackSource::Git(text.to_owned()))
        } else if text.starts_with('/') {
            Ok(BuildpackSource::Path(PathBuf::from(text)))
        } else {
            Err(BuildError::InvalidBuildpackUrl(text.to_owned()))
        }
    }
}

impl fmt::Display for BuildpackSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildpackSource::Builtin(name) => write!(f, "{name}"),
            BuildpackSource::Path(path) => write!(f, "{}", path.display()),
            BuildpackSource::Git(url) => write!(f, "{url}"),
        }
    }
}

/// Everything one build needs.
#[derive(Debug, Clone, Copy)]
pub struct BuildRequest<'a> {
    /// The app's name; buildpacks see it as `CREW_APP`.
    pub app: &'a str,
    /// A checked-out tree. It is only read: the build happens in a copy.
    pub source: &'a Path,
    /// The app's build cache, kept between builds (created if missing).
    pub cache: &'a Path,
    /// The app's config vars: written to ENV_DIR (one file per var) for
    /// `bin/compile`; `BUILDPACK_URL` also selects the buildpack.
    pub config: &'a BTreeMap<String, String>,
    /// Where the slug tar.gz goes. Written under a temporary name in the same
    /// directory and renamed, so it is whole or absent.
    pub slug_path: &'a Path,
    /// The limit for the whole build, from copying the source to the last byte
    /// of the slug.
    pub timeout: Duration,
}

/// What a successful build produced, besides the slug file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutput {
    /// Process type → command: the buildpacks' defaults, overridden and extended
    /// by the Procfile, without `release`.
    pub process_types: BTreeMap<String, String>,
    /// `config_vars` from `bin/release`. Defaults only: the caller must let the
    /// app's own config vars win.
    pub config_vars: BTreeMap<String, String>,
    /// The detected buildpack names (`Python`), comma-separated when several ran.
    pub buildpack: String,
    /// Size of the compressed slug in bytes.
    pub slug_size: u64,
    /// The `release:` process type, to run before the release goes live.
    pub release_command: Option<String>,
}

/// The result of selection, with how the candidates are to be used.
struct Selection {
    sources: Vec<BuildpackSource>,
    /// Chosen by the app (run all, each must detect) rather than the built-in
    /// list (first match wins).
    explicit: bool,
}

/// A buildpack ready to run: its directory and the name its `bin/detect` gave.
struct Chosen {
    dir: PathBuf,
    name: String,
}

/// The parts of a build that every step needs.
struct Context<'a> {
    app: &'a str,
    build_dir: &'a Path,
    deadline: Instant,
    timeout: Duration,
}

impl Context<'_> {
    fn timed_out(&self) -> BuildError {
        BuildError::TimedOut {
            seconds: self.timeout.as_secs(),
        }
    }

    /// A buildpack program with the build environment described in the crate docs.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        clear_git_env(&mut cmd);
        cmd.env("STACK", STACK)
            .env("CREW_APP", self.app)
            .current_dir(self.build_dir);
        cmd
    }

    /// Runs `cmd` under the deadline; a spawn failure names the program.
    fn run(
        &self,
        cmd: Command,
        output: Output,
        buildpack: &str,
        on_line: &mut dyn FnMut(Stream, &str),
    ) -> Result<ExitStatus, BuildError> {
        let program = PathBuf::from(cmd.get_program());
        match run::run(cmd, output, self.deadline, on_line) {
            Ok(Outcome::Exited(status)) => Ok(status),
            Ok(Outcome::TimedOut) => Err(self.timed_out()),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(BuildError::invalid(
                buildpack,
                format!("{} is not executable", program.display()),
            )),
            Err(e) => Err(BuildError::io_at("running", &program)(e)),
        }
    }
}

impl Buildpacks {
    /// Writes the built-in buildpacks (compiled into the binary) into `dir`, one
    /// directory per name with executable `bin/` scripts, so a server needs no
    /// checkout of the repo. Safe to call at every start: it overwrites.
    pub fn install_builtin(dir: &Path) -> Result<Buildpacks, BuildError> {
        builtin::install(dir)?;
        Ok(Buildpacks {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory the built-ins were installed into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Which buildpacks a build of `source` with `config` will use: config var
    /// BUILDPACK_URL (a git URL or a local path), else a `.buildpacks` file in the
    /// source (one per line; blank lines and `#` comments skipped), else the
    /// built-ins tried in order: python, nodejs, procfile.
    pub fn select(
        &self,
        source: &Path,
        config: &BTreeMap<String, String>,
    ) -> Result<Vec<BuildpackSource>, BuildError> {
        Ok(self.selection(source, config)?.sources)
    }

    fn selection(
        &self,
        source: &Path,
        config: &BTreeMap<String, String>,
    ) -> Result<Selection, BuildError> {
        if let Some(url) = config.get("BUILDPACK_URL").filter(|u| !u.trim().is_empty()) {
            return Ok(Selection {
                sources: vec![BuildpackSource::parse(url)?],
                explicit: true,
            });
        }
        let listing = source.join(".buildpacks");
        match fs::read_to_string(&listing) {
            Ok(text) => {
                let sources = text
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(BuildpackSource::parse)
                    .collect::<Result<Vec<_>, _>>()?;
                // An empty file asks for nothing in particular.
                if !sources.is_empty() {
                    return Ok(Selection {
                        sources,
                        explicit: true,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BuildError::io_at("reading", &listing)(e)),
        }
        Ok(Selection {
            sources: BUILTIN_NAMES
                .iter()
                .map(|name| BuildpackSource::Builtin((*name).to_owned()))
                .collect(),
            explicit: false,
        })
    }

    /// Runs the build, calling `out` with every line to show the pusher (already
    /// formatted). On failure, nothing is written at `slug_path`; show the error's
    /// [`BuildError::pusher_lines`] after the lines already given to `out`.
    pub fn build(
        &self,
        req: &BuildRequest,
        out: &mut dyn FnMut(&str),
    ) -> Result<BuildOutput, BuildError> {
        let deadline = deadline_after(req.timeout);
        let selection = self.selection(req.source, req.config)?;

        fs::create_dir_all(req.cache).map_err(BuildError::io_at("creating", req.cache))?;
        // Removed with everything in it when this function returns.
        let scratch = tempfile::Builder::new()
            .prefix("crew-build-")
            .tempdir()
            .map_err(BuildError::io("creating a build directory"))?;
        let build_dir = scratch.path().join("app");
        fs::create_dir(&build_dir).map_err(BuildError::io_at("creating", &build_dir))?;
        let ctx = Context {
            app: req.app,
            build_dir: &build_dir,
            deadline,
            timeout: req.timeout,
        };
        slug::copy_tree(req.source, &build_dir, deadline, &|| ctx.timed_out())?;
        let env_dir = scratch.path().join("env");
        write_env_dir(&env_dir, req.config)?;

        let chosen = self.choose(&ctx, &selection, scratch.path(), out)?;

        let mut defaults = Release::default();
        for buildpack in &chosen {
            out(&format!("-----> {} app detected", buildpack.name));
            compile(&ctx, buildpack, req.cache, &env_dir, out)?;
            let release = release(&ctx, buildpack, out)?;
            defaults
                .default_process_types
                .extend(release.default_process_types);
            defaults.config_vars.extend(release.config_vars);
        }

        let mut process_types =
            discover_process_types(&build_dir, defaults.default_process_types, out)?;
        let release_command = process_types.remove("release");

        out("-----> Compressing...");
        let slug_size =
            slug::write_slug(&build_dir, req.slug_path, MAX_SLUG_SIZE, deadline, &|| {
                ctx.timed_out()
            })?;
        out(&format!("       Done: {}", human_size(slug_size)));

        Ok(BuildOutput {
            process_types,
            config_vars: defaults.config_vars,
            buildpack: chosen
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            slug_size,
            release_command,
        })
    }

    /// Fetches the selected buildpacks and runs their `bin/detect`: all of them,
    /// each required to match, for an explicit list; until the first match for
    /// the built-ins. Nothing is compiled before every choice is made.
    fn choose(
        &self,
        ctx: &Context,
        selection: &Selection,
        scratch: &Path,
        out: &mut dyn FnMut(&str),
    ) -> Result<Vec<Chosen>, BuildError> {
        if !selection.explicit {
            out("-----> Determining which buildpack to use for this app");
            for source in &selection.sources {
                let dir = self.fetch(ctx, source, scratch, 0, out)?;
                if let Some(name) = detect(ctx, source, &dir)? {
                    return Ok(vec![Chosen { dir, name }]);
                }
            }
            return Err(BuildError::NoBuildpackDetected);
        }
        match selection.sources.as_slice() {
            [only] => out(&format!("-----> Using buildpack: {only}")),
            many => {
                out("-----> Using buildpacks:");
                for (i, source) in many.iter().enumerate() {
                    out(&format!("       {}. {source}", i + 1));
                }
            }
        }
        let mut chosen = Vec::new();
        for (i, source) in selection.sources.iter().enumerate() {
            let dir = self.fetch(ctx, source, scratch, i, out)?;
            match detect(ctx, source, &dir)? {
                Some(name) => chosen.push(Chosen { dir, name }),
                None => {
                    return Err(BuildError::Incompatible {
                        buildpack: source.to_string(),
                    });
                }
            }
        }
        Ok(chosen)
    }

    /// The directory of a buildpack, cloning it first if it lives in git.
    fn fetch(
        &self,
        ctx: &Context,
        source: &BuildpackSource,
        scratch: &Path,
        index: usize,
        out: &mut dyn FnMut(&str),
    ) -> Result<PathBuf, BuildError> {
        let dir = match source {
            BuildpackSource::Builtin(name) => {
                if !BUILTIN_NAMES.contains(&name.as_str()) {
                    return Err(BuildError::invalid(
                        name,
                        "there is no such built-in buildpack",
                    ));
                }
                self.dir.join(name)
            }
            BuildpackSource::Path(path) => path.clone(),
            BuildpackSource::Git(url) => {
                let dest = scratch.join(format!("buildpack-{index}"));
                out(&format!("-----> Fetching buildpack {url}"));
                git_clone(ctx, url, &dest)?;
                dest
            }
        };
        if !dir.join("bin").join("compile").is_file() {
            return Err(BuildError::invalid(
                source.to_string(),
                "it has no bin/compile",
            ));
        }
        Ok(dir)
    }
}

/// Runs `bin/detect BUILD_DIR`: `Some(name)` on exit 0. A buildpack without
/// `bin/detect` accepts every app, named after its directory, so that a
/// one-script buildpack chosen explicitly still works.
fn detect(
    ctx: &Context,
    source: &BuildpackSource,
    dir: &Path,
) -> Result<Option<String>, BuildError> {
    let fallback_name = || {
        let text = source.to_string();
        let last = text
            .split('#')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".git")
            .to_owned();
        if last.is_empty() { text } else { last }
    };
    let program = dir.join("bin").join("detect");
    if !program.exists() {
        return Ok(Some(fallback_name()));
    }
    let mut cmd = ctx.command(&program);
    cmd.arg(ctx.build_dir);
    let mut stdout = Vec::new();
    let status = ctx.run(
        cmd,
        Output::Separate,
        &source.to_string(),
        &mut |stream, line| {
            if stream == Stream::Stdout {
                stdout.push(line.to_owned());
            }
        },
    )?;
    if !status.success() {
        return Ok(None);
    }
    let name = stdout
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(fallback_name);
    Ok(Some(name))
}

/// Runs `bin/compile BUILD_DIR CACHE_DIR ENV_DIR`, passing every line through.
fn compile(
    ctx: &Context,
    buildpack: &Chosen,
    cache: &Path,
    env_dir: &Path,
    out: &mut dyn FnMut(&str),
) -> Result<(), BuildError> {
    let mut cmd = ctx.command(&buildpack.dir.join("bin").join("compile"));
    cmd.arg(ctx.build_dir).arg(cache).arg(env_dir);
    let status = ctx.run(cmd, Output::Merged, &buildpack.name, &mut |_, line| {
        out(line)
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::CompileFailed {
            name: buildpack.name.clone(),
            status: status.to_string(),
        })
    }
}

/// Runs `bin/release BUILD_DIR` and reads its YAML. Its stderr goes to the
/// pusher; a buildpack without `bin/release` declares nothing.
fn release(
    ctx: &Context,
    buildpack: &Chosen,
    out: &mut dyn FnMut(&str),
) -> Result<Release, BuildError> {
    let program = buildpack.dir.join("bin").join("release");
    if !program.exists() {
        return Ok(Release::default());
    }
    let mut cmd = ctx.command(&program);
    cmd.arg(ctx.build_dir);
    let mut yaml = String::new();
    let status = ctx.run(
        cmd,
        Output::Separate,
        &buildpack.name,
        &mut |stream, line| match stream {
            Stream::Stdout => {
                yaml.push_str(line);
                yaml.push('\n');
            }
            Stream::Stderr => out(line),
        },
    )?;
    if !status.success() {
        return Err(BuildError::ReleaseFailed {
            name: buildpack.name.clone(),
            status: status.to_string(),
        });
    }
    parse_release(&yaml).map_err(|error| BuildError::ReleaseYaml {
        name: buildpack.name.clone(),
        error,
    })
}

/// Merges the Procfile over the buildpacks' defaults and prints Heroku's
/// "Discovering process types" block. The two arrows line up when both lines
/// are shown; types are listed sorted.
fn discover_process_types(
    build_dir: &Path,
    defaults: BTreeMap<String, String>,
    out: &mut dyn FnMut(&str),
) -> Result<BTreeMap<String, String>, BuildError> {
    out("-----> Discovering process types");
    let path = build_dir.join("Procfile");
    let procfile = match fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| {
                BuildError::io_at("reading", &path)(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the Procfile is not UTF-8",
                ))
            })?;
            Some(Procfile::parse(&text)?)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(BuildError::io_at("reading", &path)(e)),
    };
    let mut types = defaults;
    let mut declared = Vec::new();
    if let Some(procfile) = &procfile {
        for warning in procfile.warnings() {
            out(&format!("{ERROR_PREFIX}Warning: Procfile {warning}"));
        }
        for t in procfile.types() {
            types.insert(t.name.clone(), t.command.clone());
            declared.push(t.name.as_str());
        }
    }
    declared.sort_unstable();
    let from_defaults: Vec<&str> = types
        .keys()
        .map(String::as_str)
        .filter(|name| !declared.contains(name))
        .collect();
    let list = |names: &[&str]| names.join(", ");
    match (procfile.is_some(), from_defaults.is_empty()) {
        (false, true) => return Err(BuildError::NoProcessTypes),
        (true, true) => out(&format!(
            "       Procfile declares types -> {}",
            list(&declared)
        )),
        (has_procfile, false) => {
            let declared = if has_procfile {
                list(&declared)
            } else {
                "(none)".to_owned()
            };
            out(&format!("       Procfile declares types     -> {declared}"));
            out(&format!(
                "       Default types for buildpack -> {}",
                list(&from_defaults)
            ));
        }
    }
    Ok(types)
}

/// `git clone --depth 1 [--branch REF] URL DEST`, quietly; git's own words are
/// shown only if it fails.
fn git_clone(ctx: &Context, url: &str, dest: &Path) -> Result<(), BuildError> {
    let (repo, reference) = match url.rsplit_once('#') {
        Some((repo, reference)) if !reference.is_empty() => (repo, Some(reference)),
        _ => (url.trim_end_matches('#'), None),
    };
    let mut cmd = Command::new("git");
    clear_git_env(&mut cmd);
    // Never wait for a password nobody can type.
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .args(["clone", "--depth", "1", "--quiet"]);
    if let Some(reference) = reference {
        cmd.arg("--branch").arg(reference);
    }
    // `--` so that a URL cannot be read as an option.
    cmd.arg("--").arg(repo).arg(dest);
    let mut output = Vec::new();
    let status = match run::run(cmd, Output::Merged, ctx.deadline, &mut |_, line| {
        output.push(line.to_owned());
    }) {
        Ok(Outcome::Exited(status)) => status,
        Ok(Outcome::TimedOut) => return Err(ctx.timed_out()),
        Err(e) => return Err(BuildError::io("running git")(e)),
    };
    if status.success() {
        return Ok(());
    }
    let skip = output.len().saturating_sub(GIT_ERROR_LINES);
    Err(BuildError::GitClone {
        url: url.to_owned(),
        output: output.split_off(skip),
    })
}

/// Writes one file per config var (name = key, contents = value, no newline
/// added). The directory and files are private to crew's user: values are
/// secrets more often than not.
fn write_env_dir(dir: &Path, config: &BTreeMap<String, String>) -> Result<(), BuildError> {
    fs::create_dir(dir).map_err(BuildError::io_at("creating", dir))?;
    for (name, value) in config {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(BuildError::InvalidConfigVar(name.clone()));
        }
        let path = dir.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(value.as_bytes()))
            .map_err(BuildError::io_at("writing", &path))?;
    }
    Ok(())
}

fn clear_git_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"GIT_") {
            cmd.env_remove(key);
        }
    }
}

/// `now + timeout`, saturating: a timeout too large for the clock means "never"
/// in practice, and must not panic.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildpack_sources_parse() {
        let cases = [
            ("python", BuildpackSource::Builtin("python".into())),
            (
                " https://github.com/a/b.git#v2 ",
                BuildpackSource::Git("https://github.com/a/b.git#v2".into()),
            ),
            (
                "git@github.com:a/b.git",
                BuildpackSource::Git("git@github.com:a/b.git".into()),
            ),
            (
                "file:///srv/bp",
                BuildpackSource::Git("file:///srv/bp".into()),
            ),
            ("/srv/bp", BuildpackSource::Path("/srv/bp".into())),
        ];
        for (text, want) in cases {
            assert_eq!(BuildpackSource::parse(text).ok(), Some(want), "{text}");
        }
        for bad in ["heroku/python", "./bp", "bp", ""] {
            assert!(
                matches!(
                    BuildpackSource::parse(bad),
                    Err(BuildError::InvalidBuildpackUrl(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn huge_timeouts_do_not_panic() {
        let _ = deadline_after(Duration::MAX);
    }
}
