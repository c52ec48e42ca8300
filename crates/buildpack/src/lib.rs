//! Turning an app's source tree into a slug with classic (Heroku-style) buildpacks.
//!
//! Theory of operation. A build is one call to [`Buildpacks::build`]:
//!
//! 1. **Select.** [`Buildpacks::select`] picks the buildpacks: the app's
//!    `BUILDPACK_URL` config var (a git URL, an absolute path, or a built-in
//!    name), else a `.buildpacks` file in the source (one per line), else the
//!    built-ins in the order `ruby`, `python`, `nodejs`, `go`, `unsupported`
//!    (which only refuses apps crew recognises but cannot build), `procfile`.
//!    The first two are
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
//! Where the programs run is the [`BuildIsolation`] of [`Buildpacks`]:
//! - **Sandboxed** (a server that isolates its dynos): every program, `git
//!   clone` of a buildpack included, runs through the isolated dynos' launch
//!   path ([`crew_runtime::IsolatedRuntime::sandbox`]): its own mount, pid, uts,
//!   ipc and cgroup namespaces, a cgroup with memory and pids limits, the stack
//!   read-only, as the sandbox's unprivileged uid, and nothing of the host
//!   beside the stack but, at fixed places, BUILD_DIR at `/app` (so that paths
//!   baked in at build time are the dyno's paths too), CACHE_DIR at `/cache`,
//!   ENV_DIR at `/env` (read-only), the buildpack at `/buildpack` (read-only)
//!   and a fresh `/tmp`. The environment is only `PATH`, `HOME=/app`, `STACK`,
//!   `CREW_APP`, `SOURCE_VERSION` and the variables the operator passes on
//!   ([`BuildSandbox::env`]). When a program exits, everything it started is
//!   gone (its pid namespace dies with it).
//! - **On the host** (`--isolation off`, no root, and library use): each
//!   program is the leader of its own process group, runs as crew's user, and
//!   inherits crew's environment minus every `GIT_*` variable (a build runs
//!   inside a git pre-receive hook, whose `GIT_DIR` and quarantine settings
//!   would break any `git` the buildpack runs), plus `STACK=crew`, `CREW_APP`
//!   and `SOURCE_VERSION`. A server says so in every build's output.
//!
//! The whole build shares one deadline ([`BuildRequest::timeout`]); when it
//! passes, the running program and all it started are killed and the build
//! fails. Config vars are not in the programs' environment, only in ENV_DIR, as
//! the API prescribes.
//!
//! The pushed tree and the build directory are data: the files crew reads
//! itself (`.buildpacks`, `Procfile`) must be regular files and are opened
//! without following a symlink, copying the tree and packing the slug never
//! follow one, and a buildpack path (BUILDPACK_URL or `.buildpacks` naming a
//! directory on the server) is only used where [`PathBuildpacks`] allows.
//!
//! Output is given to the caller's `out` callback one line at a time, already in
//! the form the pusher sees (`-----> Python app detected`, 7-space detail lines);
//! failures carry the ` !     ` lines in [`BuildError::pusher_lines`].
//!
//! Callers must not run two builds of one app at once, since they would share
//! its cache directory.

mod builtin;
mod error;
mod limits;
mod release;
mod run;
mod slug;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crew_procfile::Procfile;
use crew_runtime::{DynoSize, IsolatedRuntime, SandboxBind, SandboxSpec};

pub use builtin::BUILTIN_NAMES;
pub use error::{BuildError, ERROR_PREFIX};
pub use limits::{MAX_SLUG_SIZE, human_size};
pub use release::{Release, ReleaseYamlError, parse_release};

use limits::deadline_after;
use run::{Job, Outcome, Output, Stream};

/// The value of `STACK` that buildpacks see.
pub const STACK: &str = "crew";

/// How many of git's last output lines a failed clone reports.
const GIT_ERROR_LINES: usize = 10;

/// `PATH` in a sandboxed build: the stack's directories, as on Heroku.
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The largest `Procfile` or `.buildpacks` crew reads.
const MAX_TREE_FILE: u64 = 1024 * 1024;

/// How much of `bin/release`'s YAML crew keeps, and of `bin/detect`'s lines.
const MAX_RELEASE_YAML: usize = 1024 * 1024;
const DETECT_LINES: usize = 16;

/// Where a sandboxed program sees each directory of the build.
mod inside {
    pub const BUILD: &str = "/app";
    pub const CACHE: &str = "/cache";
    pub const ENV: &str = "/env";
    pub const BUILDPACK: &str = "/buildpack";
    pub const TMP: &str = "/tmp";
}

/// Where the built-in buildpacks live on disk, and how builds run.
#[derive(Debug, Clone)]
pub struct Buildpacks {
    dir: PathBuf,
    isolation: BuildIsolation,
    paths: PathBuildpacks,
    /// The app's own list (`heroku buildpacks:set`), used when BUILDPACK_URL
    /// is not set.
    chosen: Vec<BuildpackSource>,
}

/// How a build's programs run (see the crate documentation).
#[derive(Clone)]
pub enum BuildIsolation {
    /// On this host, as crew's own user, with crew's environment. With a
    /// warning, every build's output starts with it (the server says why it
    /// cannot sandbox builds).
    Host { warning: Option<String> },
    /// Behind an isolated dyno's walls.
    Sandboxed(BuildSandbox),
}

impl fmt::Debug for BuildIsolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildIsolation::Host { warning } => {
                f.debug_struct("Host").field("warning", warning).finish()
            }
            BuildIsolation::Sandboxed(sandbox) => f
                .debug_struct("Sandboxed")
                .field("uid", &sandbox.uid)
                .field("gid", &sandbox.gid)
                .field("limits", &sandbox.limits)
                .finish_non_exhaustive(),
        }
    }
}

/// What a sandboxed build runs with.
#[derive(Clone)]
pub struct BuildSandbox {
    pub runtime: IsolatedRuntime,
    /// The user and group every program of the build runs as. BUILD_DIR,
    /// CACHE_DIR and ENV_DIR are given to them.
    pub uid: u32,
    pub gid: u32,
    /// Memory and processes of each program, all it starts included.
    pub limits: DynoSize,
    /// Variables passed on to every program as they are (the operator's proxy
    /// and CA settings), besides the fixed ones.
    pub env: Vec<(String, String)>,
}

/// Which directories of this machine BUILDPACK_URL and `.buildpacks` may name.
/// Both are request data, so a server allows none, or only those under a
/// directory its operator chose; local tools and tests allow any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathBuildpacks {
    Anywhere,
    Under(PathBuf),
    Nowhere,
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

impl BuildpackSource {
    /// Reads a buildpack as an app chooses it through the API: what
    /// [`BuildpackSource::parse`] reads, and also Heroku's names for the
    /// languages crew has built in (`heroku/python`, and the registry's and
    /// codon's `.tgz` URLs of them), which become crew's own buildpack.
    pub fn parse_choice(text: &str) -> Result<BuildpackSource, BuildError> {
        let text = text.trim();
        let text = text.strip_prefix("urn:buildpack:").unwrap_or(text);
        let heroku_name = text.strip_prefix("heroku/").or_else(|| {
            [
                "https://buildpack-registry.s3.amazonaws.com/buildpacks/heroku/",
                "https://codon-buildpacks.s3.amazonaws.com/buildpacks/heroku/",
            ]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix)?.strip_suffix(".tgz"))
        });
        match heroku_name {
            Some(name) if BUILTIN_NAMES.contains(&name) && name != "unsupported" => {
                Ok(BuildpackSource::Builtin(name.to_owned()))
            }
            Some(_) if !text.contains("://") => {
                Err(BuildError::InvalidBuildpackUrl(text.to_owned()))
            }
            _ => BuildpackSource::parse(text),
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
    /// The commit being built; buildpacks see it as `SOURCE_VERSION`.
    pub source_version: Option<&'a str>,
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
    cache: &'a Path,
    env_dir: &'a Path,
    /// The sandbox's `/tmp`.
    tmp_dir: &'a Path,
    source_version: Option<&'a str>,
    isolation: &'a BuildIsolation,
    deadline: Instant,
    timeout: Duration,
}

/// A directory of the build a buildpack program is given as an argument.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Build,
    Cache,
    Env,
}

impl Context<'_> {
    fn timed_out(&self) -> BuildError {
        BuildError::TimedOut {
            seconds: self.timeout.as_secs(),
        }
    }

    /// `bin/SCRIPT` of the buildpack in `dir`, given the `places` as arguments,
    /// with the build environment described in the crate docs.
    fn buildpack_job(&self, dir: &Path, script: &str, places: &[Place]) -> Job<'_> {
        match self.isolation {
            BuildIsolation::Host { .. } => {
                let mut cmd = Command::new(dir.join("bin").join(script));
                clear_git_env(&mut cmd);
                cmd.env("STACK", STACK)
                    .env("CREW_APP", self.app)
                    .current_dir(self.build_dir);
                if let Some(version) = self.source_version {
                    cmd.env("SOURCE_VERSION", version);
                }
                for place in places {
                    cmd.arg(match place {
                        Place::Build => self.build_dir,
                        Place::Cache => self.cache,
                        Place::Env => self.env_dir,
                    });
                }
                Job::Host(cmd)
            }
            BuildIsolation::Sandboxed(sandbox) => {
                let bind = |host: &Path, inside: &str, writable| SandboxBind {
                    host: host.to_path_buf(),
                    inside: PathBuf::from(inside),
                    writable,
                };
                let mut binds = vec![
                    bind(self.build_dir, inside::BUILD, true),
                    bind(dir, inside::BUILDPACK, false),
                    bind(self.tmp_dir, inside::TMP, true),
                ];
                let mut argv = vec![format!("{}/bin/{script}", inside::BUILDPACK)];
                for place in places {
                    let (host, at, writable) = match place {
                        Place::Build => (self.build_dir, inside::BUILD, true),
                        Place::Cache => (self.cache, inside::CACHE, true),
                        Place::Env => (self.env_dir, inside::ENV, false),
                    };
                    if !binds.iter().any(|b| b.inside == Path::new(at)) {
                        binds.push(bind(host, at, writable));
                    }
                    argv.push(at.to_string());
                }
                Job::Sandboxed(&sandbox.runtime, self.sandbox_spec(sandbox, argv, binds))
            }
        }
    }

    /// A sandboxed program with the fixed environment and the operator's.
    fn sandbox_spec(
        &self,
        sandbox: &BuildSandbox,
        argv: Vec<String>,
        binds: Vec<SandboxBind>,
    ) -> SandboxSpec {
        let mut env = vec![
            ("PATH".to_string(), SANDBOX_PATH.to_string()),
            ("HOME".to_string(), inside::BUILD.to_string()),
            ("STACK".to_string(), STACK.to_string()),
            ("CREW_APP".to_string(), self.app.to_string()),
        ];
        if let Some(version) = self.source_version {
            env.push(("SOURCE_VERSION".to_string(), version.to_string()));
        }
        for (key, value) in &sandbox.env {
            if !env.iter().any(|(k, _)| k == key) {
                env.push((key.clone(), value.clone()));
            }
        }
        SandboxSpec {
            name: "build".to_string(),
            argv,
            env,
            binds,
            uid: sandbox.uid,
            gid: sandbox.gid,
            limits: sandbox.limits.clone(),
            separate_stderr: false,
        }
    }

    /// Runs `job` under the deadline; a spawn failure names the program.
    fn run(
        &self,
        job: Job,
        output: Output,
        buildpack: &str,
        on_line: &mut dyn FnMut(Stream, &str),
    ) -> Result<ExitStatus, BuildError> {
        let program = PathBuf::from(job.program());
        match run::run(job, output, self.deadline, on_line) {
            Ok(Outcome::Exited {
                status,
                out_of_memory,
            }) => {
                if out_of_memory && let BuildIsolation::Sandboxed(sandbox) = self.isolation {
                    on_line(
                        Stream::Stderr,
                        &format!(
                            "{ERROR_PREFIX}{} ran out of memory: a build step may use {}.",
                            program.display(),
                            human_size(sandbox.limits.memory_bytes)
                        ),
                    );
                }
                Ok(status)
            }
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
    ///
    /// Builds then run on the host, with any path buildpack; see
    /// [`Self::with_isolation`] and [`Self::with_path_buildpacks`].
    pub fn install_builtin(dir: &Path) -> Result<Buildpacks, BuildError> {
        builtin::install(dir)?;
        Ok(Buildpacks {
            dir: dir.to_path_buf(),
            isolation: BuildIsolation::Host { warning: None },
            paths: PathBuildpacks::Anywhere,
            chosen: Vec::new(),
        })
    }

    /// How this server's builds run.
    pub fn with_isolation(mut self, isolation: BuildIsolation) -> Buildpacks {
        self.isolation = isolation;
        self
    }

    /// Which directories on this machine may be named as buildpacks.
    pub fn with_path_buildpacks(mut self, paths: PathBuildpacks) -> Buildpacks {
        self.paths = paths;
        self
    }

    pub fn isolation(&self) -> &BuildIsolation {
        &self.isolation
    }

    /// The buildpacks an app chose (in order), which its builds use unless
    /// BUILDPACK_URL names one; empty leaves the choice to `.buildpacks` and
    /// detection.
    pub fn with_chosen(mut self, chosen: Vec<BuildpackSource>) -> Buildpacks {
        self.chosen = chosen;
        self
    }

    /// The directory the built-ins were installed into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Which buildpacks a build of `source` with `config` will use: config var
    /// BUILDPACK_URL (a git URL or a local path), else a `.buildpacks` file in the
    /// source (one per line; blank lines and `#` comments skipped), else the
    /// built-ins tried in [`BUILTIN_NAMES`] order.
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
        if !self.chosen.is_empty() {
            return Ok(Selection {
                sources: self.chosen.clone(),
                explicit: true,
            });
        }
        if let Some(text) = read_tree_file(source, ".buildpacks")? {
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
        if let BuildIsolation::Host {
            warning: Some(warning),
        } = &self.isolation
        {
            out(&format!("{ERROR_PREFIX}Warning: {warning}"));
        }
        let selection = self.selection(req.source, req.config)?;
        // The sandbox's user owns what the build may change.
        let owner = match &self.isolation {
            BuildIsolation::Sandboxed(sandbox) => Some((sandbox.uid, sandbox.gid)),
            BuildIsolation::Host { .. } => None,
        };

        fs::create_dir_all(req.cache).map_err(BuildError::io_at("creating", req.cache))?;
        if let Some((uid, gid)) = owner {
            slug::give_tree(req.cache, uid, gid)?;
        }
        // Removed with everything in it when this function returns.
        let scratch = tempfile::Builder::new()
            .prefix("crew-build-")
            .tempdir()
            .map_err(BuildError::io("creating a build directory"))?;
        let build_dir = scratch.path().join("app");
        let env_dir = scratch.path().join("env");
        let tmp_dir = scratch.path().join("tmp");
        for dir in [&build_dir, &tmp_dir] {
            fs::create_dir(dir).map_err(BuildError::io_at("creating", dir))?;
            slug::give(dir, owner)?;
        }
        let ctx = Context {
            app: req.app,
            build_dir: &build_dir,
            cache: req.cache,
            env_dir: &env_dir,
            tmp_dir: &tmp_dir,
            source_version: req.source_version,
            isolation: &self.isolation,
            deadline,
            timeout: req.timeout,
        };
        slug::copy_tree(req.source, &build_dir, owner, deadline, &|| ctx.timed_out())?;
        write_env_dir(&env_dir, req.config, owner)?;

        let chosen = self.choose(&ctx, &selection, scratch.path(), out)?;

        let mut defaults = Release::default();
        for buildpack in &chosen {
            out(&format!("-----> {} app detected", buildpack.name));
            compile(&ctx, buildpack, out)?;
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
            BuildpackSource::Path(path) => self.allowed_path(path)?,
            BuildpackSource::Git(url) => {
                let dest = scratch.join(format!("buildpack-{index}"));
                out(&format!("-----> Fetching buildpack {url}"));
                git_clone(ctx, url, &dest)?;
                dest
            }
        };
        if !has_program(&dir, "compile") {
            return Err(BuildError::invalid(
                source.to_string(),
                "it has no bin/compile",
            ));
        }
        Ok(dir)
    }

    /// A path buildpack, if this server allows it: under the allowed
    /// directory, checked on the words first (no `..`), so that nothing
    /// outside it is even looked at, then once more with links resolved.
    fn allowed_path(&self, path: &Path) -> Result<PathBuf, BuildError> {
        let refused = |allowed: Option<&Path>| BuildError::PathRefused {
            path: path.display().to_string(),
            allowed: allowed.map(Path::to_path_buf),
        };
        match &self.paths {
            PathBuildpacks::Anywhere => Ok(path.to_path_buf()),
            PathBuildpacks::Nowhere => Err(refused(None)),
            PathBuildpacks::Under(dir) => {
                let plain = path
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
                if !plain || !path.starts_with(dir) || path == dir.as_path() {
                    return Err(refused(Some(dir)));
                }
                let real_dir = fs::canonicalize(dir).map_err(|_| refused(Some(dir)))?;
                let real = fs::canonicalize(path).map_err(|_| refused(Some(dir)))?;
                if real.starts_with(&real_dir) && real != real_dir {
                    Ok(real)
                } else {
                    Err(refused(Some(dir)))
                }
            }
        }
    }
}

/// Whether a buildpack has `bin/NAME`, without following a link on this
/// machine: a cloned buildpack belongs to the build, and its links mean
/// something only inside the sandbox.
fn has_program(dir: &Path, name: &str) -> bool {
    let bin = dir.join("bin");
    fs::symlink_metadata(&bin).is_ok_and(|m| m.is_dir())
        && fs::symlink_metadata(bin.join(name)).is_ok_and(|m| m.is_file() || m.is_symlink())
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
    if !has_program(dir, "detect") {
        return Ok(Some(fallback_name()));
    }
    let job = ctx.buildpack_job(dir, "detect", &[Place::Build]);
    let mut stdout = Vec::new();
    let status = ctx.run(
        job,
        Output::Separate,
        &source.to_string(),
        &mut |stream, line| {
            // The name is the first line; a detect that prints on and on
            // must not make crew keep it all.
            if stream == Stream::Stdout && stdout.len() < DETECT_LINES {
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
fn compile(ctx: &Context, buildpack: &Chosen, out: &mut dyn FnMut(&str)) -> Result<(), BuildError> {
    let places = [Place::Build, Place::Cache, Place::Env];
    let job = ctx.buildpack_job(&buildpack.dir, "compile", &places);
    let status = ctx.run(job, Output::Merged, &buildpack.name, &mut |_, line| {
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
    if !has_program(&buildpack.dir, "release") {
        return Ok(Release::default());
    }
    let job = ctx.buildpack_job(&buildpack.dir, "release", &[Place::Build]);
    let mut yaml = String::new();
    let mut too_long = false;
    let status = ctx.run(
        job,
        Output::Separate,
        &buildpack.name,
        &mut |stream, line| match stream {
            Stream::Stdout => {
                if yaml.len() + line.len() < MAX_RELEASE_YAML {
                    yaml.push_str(line);
                    yaml.push('\n');
                } else {
                    too_long = true;
                }
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
    if too_long {
        return Err(BuildError::ReleaseFailed {
            name: buildpack.name.clone(),
            status: format!(
                "it printed over {} of YAML",
                human_size(MAX_RELEASE_YAML as u64)
            ),
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
    let procfile = match read_tree_file(build_dir, "Procfile")? {
        Some(text) => Some(Procfile::parse(&text)?),
        None => None,
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
    let mut args = vec!["clone", "--depth", "1", "--quiet"];
    if let Some(reference) = reference {
        args.extend(["--branch", reference]);
    }
    // `--` so that a URL cannot be read as an option.
    args.extend(["--", repo]);
    let job = match ctx.isolation {
        BuildIsolation::Host { .. } => {
            let mut cmd = Command::new("git");
            clear_git_env(&mut cmd);
            // Never wait for a password nobody can type.
            cmd.env("GIT_TERMINAL_PROMPT", "0").args(args).arg(dest);
            Job::Host(cmd)
        }
        BuildIsolation::Sandboxed(sandbox) => {
            // The clone belongs to the build's user, and lands where the
            // buildpack will be seen.
            fs::create_dir(dest).map_err(BuildError::io_at("creating", dest))?;
            slug::give(dest, Some((sandbox.uid, sandbox.gid)))?;
            // git from PATH, through the shell; the URL stays one argument.
            let mut argv: Vec<String> = ["/bin/sh", "-c", "exec git \"$@\"", "git"]
                .into_iter()
                .chain(args)
                .map(str::to_owned)
                .collect();
            argv.push(inside::BUILDPACK.to_string());
            let binds = vec![
                SandboxBind {
                    host: dest.to_path_buf(),
                    inside: PathBuf::from(inside::BUILDPACK),
                    writable: true,
                },
                SandboxBind {
                    host: ctx.tmp_dir.to_path_buf(),
                    inside: PathBuf::from(inside::TMP),
                    writable: true,
                },
            ];
            let mut spec = ctx.sandbox_spec(sandbox, argv, binds);
            spec.env
                .push(("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()));
            Job::Sandboxed(&sandbox.runtime, spec)
        }
    };
    let mut output = Vec::new();
    let status = match run::run(job, Output::Merged, ctx.deadline, &mut |_, line| {
        output.push(line.to_owned());
    }) {
        Ok(Outcome::Exited { status, .. }) => status,
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
/// added). The directory and files are private to crew's user, or to the
/// sandbox's `owner`: values are secrets more often than not.
fn write_env_dir(
    dir: &Path,
    config: &BTreeMap<String, String>,
    owner: Option<(u32, u32)>,
) -> Result<(), BuildError> {
    fs::create_dir(dir).map_err(BuildError::io_at("creating", dir))?;
    slug::give(dir, owner)?;
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
        slug::give(&path, owner)?;
    }
    Ok(())
}

/// Reads `dir/name`, a file of the app that crew reads itself (`Procfile`,
/// `.buildpacks`): `None` if it is absent. Anything but a regular file is
/// refused and never followed or opened for reading (a link could name any
/// file of this machine, a FIFO would block), and so is one over 1 MiB or
/// not UTF-8.
fn read_tree_file(dir: &Path, name: &str) -> Result<Option<String>, BuildError> {
    let path = dir.join(name);
    let not_regular = |what| BuildError::NotARegularFile {
        name: name.to_string(),
        what,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path);
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(not_regular("a symbolic link"));
        }
        Err(e) => return Err(BuildError::io_at("reading", &path)(e)),
    };
    let meta = file
        .metadata()
        .map_err(BuildError::io_at("reading", &path))?;
    if !meta.is_file() {
        return Err(not_regular(if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        }));
    }
    if meta.size() > MAX_TREE_FILE {
        return Err(BuildError::io_at("reading", &path)(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is over {}", human_size(MAX_TREE_FILE)),
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TREE_FILE)
        .read_to_end(&mut bytes)
        .map_err(BuildError::io_at("reading", &path))?;
    String::from_utf8(bytes).map(Some).map_err(|_| {
        BuildError::io_at("reading", &path)(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the {name} is not UTF-8"),
        ))
    })
}

fn clear_git_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"GIT_") {
            cmd.env_remove(key);
        }
    }
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
    fn herokus_names_for_the_built_in_languages_are_crews_own() {
        for (text, want) in [
            ("heroku/python", "python"),
            ("heroku/nodejs", "nodejs"),
            ("urn:buildpack:heroku/ruby", "ruby"),
            (
                "https://buildpack-registry.s3.amazonaws.com/buildpacks/heroku/go.tgz",
                "go",
            ),
            (
                "https://codon-buildpacks.s3.amazonaws.com/buildpacks/heroku/nodejs.tgz",
                "nodejs",
            ),
            ("procfile", "procfile"),
        ] {
            assert_eq!(
                BuildpackSource::parse_choice(text).ok(),
                Some(BuildpackSource::Builtin(want.into())),
                "{text}"
            );
        }
        assert_eq!(
            BuildpackSource::parse_choice("https://github.com/heroku/heroku-buildpack-php").ok(),
            Some(BuildpackSource::Git(
                "https://github.com/heroku/heroku-buildpack-php".into()
            ))
        );
        for bad in ["heroku/php", "heroku/unsupported", "heroku/../x", "x/y", ""] {
            assert!(BuildpackSource::parse_choice(bad).is_err(), "{bad}");
        }
    }
}
