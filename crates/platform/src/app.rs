//! The running side of one app: its placement (where its dynos run) and its log.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crew_engine::{
    DynoInfo, EngineConfig, EngineError, LocalConfig, LocalPlacement, Placement, PortPool,
    RELEASE_DYNO, ReleaseCommand, ReleaseSpec, ReleaseType,
};
use crew_logs::{LineFramer, LogEvent, LogRing, OutputLimits, RingLimits};
use crew_procfile::{Formation, FormationChange, Quantity};
use crew_runtime::{DynoProcess, DynoSize, DynoSpec, Runtime, ServerRuntime, Signal};
use crew_store::{FormationRow, Release, Slug, Store};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::error::PlatformError;
use crate::slug;

/// What every dyno runs before its command, as Heroku's dynos do: the
/// buildpacks' `.profile.d` scripts, then the app's own `.profile`.
const PROFILE: &str = "for f in .profile.d/*.sh; do [ -r \"$f\" ] && . \"./$f\"; done; \
                       [ -r .profile ] && . ./.profile; ";

/// The PATH of an isolated dyno: the stack's directories.
const STACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A server dyno's grace between SIGTERM and SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The release command's limit, as on Heroku.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long past [`RELEASE_TIMEOUT`] a placement may take to stop a release
/// command and say so.
const RELEASE_GRACE: Duration = Duration::from_secs(120);

/// Events waiting for an app's log; see [`RunningApp::new`].
const LOG_QUEUE: usize = 256;

type Backends = tokio::sync::watch::Receiver<Arc<Vec<crew_engine::WebBackend>>>;

/// Makes one app's placement, given the app's name and its log.
pub type PlacementFactory =
    Arc<dyn Fn(&str, mpsc::Sender<LogEvent>) -> Box<dyn Placement> + Send + Sync>;

/// What an app's running side reads from its server to run a release: the
/// store, the server's runtime and the range of app uids. The platform lends
/// one for each call, so this module never reaches into `Platform` itself.
pub(crate) struct ReleaseContext<'a> {
    pub(crate) store: &'a Store,
    pub(crate) runtime: &'a ServerRuntime,
    pub(crate) app_uids: &'a RangeInclusive<u32>,
}

impl ReleaseContext<'_> {
    /// The uid and gid `app`'s isolated dynos and builds run as; `None` when
    /// dynos run plain. See `Platform::app_user`.
    pub(crate) fn app_user(&self, app: &str) -> Result<Option<(u32, u32)>, PlatformError> {
        if !self.runtime.is_isolated() {
            return Ok(None);
        }
        let uid = self.store.app_uid(app, self.app_uids.clone())?;
        Ok(Some((uid, uid)))
    }

    /// The server's runtime as `app`'s dynos use it: as its own user.
    pub(crate) fn runtime_of(&self, app: &str) -> ServerRuntime {
        runtime_as_app(self.runtime, self.store, self.app_uids, app)
    }
}

/// `runtime` as `app`'s dynos use it: isolated dynos as the app's own uid.
/// An app whose uid cannot be had gets a runtime that refuses to start its
/// dynos (and says why), never one that would borrow another's user.
pub(crate) fn runtime_as_app(
    runtime: &ServerRuntime,
    store: &Store,
    uids: &RangeInclusive<u32>,
    app: &str,
) -> ServerRuntime {
    if !runtime.is_isolated() {
        return runtime.clone();
    }
    match store.app_uid(app, uids.clone()) {
        Ok(uid) => runtime.with_user(Some((uid, uid))),
        // Only a full range or a broken database gets here; the dynos' start
        // errors then say the app has no uid.
        Err(_) => runtime.with_user(None),
    }
}

/// The router's error lines an app keeps apart from its log, so that the
/// failed requests of a busy app can still be found once the log's last
/// 10,000 lines no longer hold them: the latest 1,000, or as many as 256 KiB
/// holds (a sixteenth of what the log may hold; some 800 access lines of the
/// usual 250 bytes).
const ROUTER_ERROR_LINES: usize = 1_000;
const ROUTER_ERROR_BYTES: usize = 256 * 1024;

/// The running side of one app: where its dynos are placed, and its log.
pub struct RunningApp {
    name: String,
    ring: Arc<LogRing>,
    /// The router's latest error lines, which are also in `ring` until they
    /// leave it.
    router_error_lines: Arc<LogRing>,
    logs: mpsc::Sender<LogEvent>,
    placement: Box<dyn Placement>,
    router_log: Arc<dyn Fn(String) + Send + Sync>,
    /// How many of the router's requests failed, by Heroku error code, since
    /// the server started: the access lines themselves leave the ring.
    router_errors: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
    /// Whether the router answers every request with the maintenance page
    /// (`heroku maintenance:on`); the store has the lasting copy.
    maintenance: std::sync::atomic::AtomicBool,
}

impl RunningApp {
    pub(crate) fn new(name: &str, placements: &PlacementFactory) -> RunningApp {
        let ring = Arc::new(LogRing::with_limits(RingLimits::SERVER));
        let router_error_lines = Arc::new(LogRing::with_limits(RingLimits {
            lines: ROUTER_ERROR_LINES,
            bytes: ROUTER_ERROR_BYTES,
            ..RingLimits::SERVER
        }));
        RunningApp::with_log(name, placements, ring, router_error_lines, Arc::default())
    }

    /// The running side of an app that was `previous` under another name: a
    /// new placement (names of services and dynos follow the app's), the same
    /// log, router error lines and router counts.
    pub(crate) fn renamed(
        previous: &RunningApp,
        name: &str,
        placements: &PlacementFactory,
    ) -> RunningApp {
        let runtime = RunningApp::with_log(
            name,
            placements,
            previous.ring.clone(),
            previous.router_error_lines.clone(),
            previous.router_errors.clone(),
        );
        runtime.set_maintenance(previous.in_maintenance());
        runtime
    }

    fn with_log(
        name: &str,
        placements: &PlacementFactory,
        ring: Arc<LogRing>,
        router_error_lines: Arc<LogRing>,
        router_errors: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
    ) -> RunningApp {
        // Dyno output never waits for this channel (it is dropped and counted
        // when the channel is full), so its length bounds what the app's log
        // holds in flight: 256 blocks of at most one 64 KiB read and one
        // 10,000-byte line each.
        let (logs, mut rx) = mpsc::channel::<LogEvent>(LOG_QUEUE);
        let feed = ring.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                feed.push(&event);
            }
        });
        RunningApp {
            name: name.to_string(),
            router_log: router_log(
                ring.clone(),
                router_error_lines.clone(),
                router_errors.clone(),
            ),
            router_errors,
            router_error_lines,
            ring,
            placement: placements(name, logs.clone()),
            logs,
            maintenance: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn set_maintenance(&self, on: bool) {
        self.maintenance
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the router holds the app's requests for maintenance.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The app's web dynos for the router; an empty list before the first
    /// release.
    pub(crate) fn web_backends(&self) -> Backends {
        self.placement.web_backends()
    }

    pub(crate) fn router_log(&self) -> Arc<dyn Fn(String) + Send + Sync> {
        self.router_log.clone()
    }

    /// The router's failed requests by error code (`H13`), since the server
    /// started.
    pub fn router_errors(&self) -> BTreeMap<String, u64> {
        self.router_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn ring(&self) -> Arc<LogRing> {
        self.ring.clone()
    }

    /// The router's latest error lines, kept apart from [`RunningApp::ring`].
    pub fn router_error_lines(&self) -> Arc<LogRing> {
        self.router_error_lines.clone()
    }

    /// A platform event in the app's log, as `crew[SOURCE]: text`.
    pub(crate) async fn event(&self, source: &str, text: impl Into<String>) {
        let source: Arc<str> = Arc::from(source);
        let _ = self.logs.send(LogEvent::platform(&source, text)).await;
    }

    /// Runs the app's current release with its stored formation: starts it, or
    /// rolls the running dynos over to it.
    pub(crate) async fn boot(&self, server: &ReleaseContext<'_>) -> Result<(), PlatformError> {
        let release = server.store.current_release(&self.name)?;
        let Some(slug_id) = &release.slug_id else {
            return Ok(());
        };
        let slug = server.store.slug(slug_id)?;
        let rows = server.store.formation(&self.name)?;
        let spec = self.release_spec(server, &release, &slug, &rows)?;
        let formation = formation_of(&spec.types, &rows)?;
        self.placement
            .apply(spec, formation)
            .await
            .map_err(engine_error)
    }

    /// `release` as a placement takes it, its slug extracted on this machine:
    /// its process types with the sizes the formation `rows` give them, and
    /// the dynos' environment. What `boot` applies and what a release command
    /// runs with are made here alike.
    pub(crate) fn release_spec(
        &self,
        server: &ReleaseContext<'_>,
        release: &Release,
        slug: &Slug,
        rows: &[FormationRow],
    ) -> Result<ReleaseSpec, PlatformError> {
        let archive = PathBuf::from(&slug.path);
        let group = server.app_user(&self.name)?.map(|(_, gid)| gid);
        let dir = slug::extract(&archive, group)
            .map_err(PlatformError::io(format!("extracting slug {}", slug.id)))?;
        let types: Vec<ReleaseType> = slug
            .process_types
            .iter()
            .map(|(name, command)| ReleaseType {
                name: name.clone(),
                command: command.clone(),
                // Sizes were checked when they were set.
                size: rows
                    .iter()
                    .find(|r| &r.process_type == name)
                    .and_then(|r| DynoSize::parse(&r.size).ok()),
            })
            .collect();
        Ok(ReleaseSpec {
            app: self.name.clone(),
            version: release.version,
            types,
            env: dyno_env(server.runtime, &dir, &release.config),
            slug_archive: archive,
            slug_dir: dir,
            command_prefix: Some(PROFILE.to_string()),
        })
    }

    /// Runs `release`'s release command `command` and says whether it
    /// succeeded: where the app's dynos run, if its placement runs it (a
    /// cluster's one-off of the new release), else on this machine. Each
    /// line of its output goes to `say`. An engine that could not run it is
    /// an error in the engine's words.
    pub(crate) async fn release_command(
        &self,
        server: &ReleaseContext<'_>,
        release: ReleaseSpec,
        command: &str,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<Result<(), String>, PlatformError> {
        let (output, mut lines) = mpsc::unbounded_channel();
        let request = ReleaseCommand {
            command: command.to_string(),
            timeout: RELEASE_TIMEOUT,
            output,
        };
        let run = self.placement.release_command(release.clone(), request);
        // The placement enforces the limit on the command itself; this
        // deadline only guards against a placement that never answers.
        let run = tokio::time::timeout(RELEASE_TIMEOUT + RELEASE_GRACE, run);
        tokio::pin!(run);
        let ran = loop {
            tokio::select! {
                ran = &mut run => break ran,
                Some(line) = lines.recv() => say(format!("       {line}")),
            }
        };
        while let Ok(line) = lines.try_recv() {
            say(format!("       {line}"));
        }
        match ran {
            Ok(Ok(Some(status))) if status.success() => Ok(Ok(())),
            Ok(Ok(Some(status))) => Ok(Err(exit_reason(status))),
            Ok(Ok(None)) => {
                let runtime = server.runtime_of(&self.name);
                Ok(run_release_command(&runtime, &release, command, say).await)
            }
            Ok(Err(e)) => Err(engine_error(e)),
            Err(_) => Err(PlatformError::Invalid(format!(
                "the engine did not report how the release command ended within {} s",
                (RELEASE_TIMEOUT + RELEASE_GRACE).as_secs()
            ))),
        }
    }

    pub(crate) async fn scale(&self, rows: &[FormationRow]) -> Result<(), PlatformError> {
        let changes: Vec<FormationChange> = rows
            .iter()
            .map(|r| FormationChange {
                process_type: r.process_type.clone(),
                quantity: Quantity::Set(r.quantity),
                size: None,
            })
            .collect();
        self.placement.scale(changes).await.map_err(engine_error)
    }

    pub(crate) async fn ps(&self) -> Vec<DynoInfo> {
        self.placement.ps().await
    }

    pub(crate) async fn run(
        &self,
        request: crew_engine::RunRequest,
    ) -> Result<(DynoInfo, Option<crew_engine::Attachment>), PlatformError> {
        // Every placement knows whether it has a release; the platform names
        // the app in the answer.
        self.placement.run(request).await.map_err(|e| match e {
            EngineError::NoRelease => PlatformError::Invalid(format!(
                "{} has no release to run yet: push one first",
                self.name
            )),
            other => engine_error(other),
        })
    }

    pub(crate) async fn run_inside(
        &self,
        dyno: String,
        request: crew_engine::RunRequest,
    ) -> Result<crew_engine::Attachment, PlatformError> {
        self.placement
            .run_inside(dyno, request)
            .await
            .map_err(engine_error)
    }

    pub(crate) async fn restart(&self, target: Option<String>) -> Result<(), PlatformError> {
        self.placement.restart(target).await.map_err(engine_error)
    }

    pub(crate) async fn stop_dyno(&self, target: String) -> Result<(), PlatformError> {
        self.placement.stop(target).await.map_err(engine_error)
    }

    pub(crate) fn shutdown(&self) {
        self.placement.shutdown();
    }

    /// Stops every dyno and waits until they are gone: the placement's
    /// `destroy`, under its name.
    pub(crate) async fn destroy(&self) {
        self.placement.destroy().await;
    }
}

/// The reference placement: crew's own engine on this machine, through the
/// server's runtime as each app's own user (`runtime_of`).
pub(crate) fn local_placements(
    runtime_of: Arc<dyn Fn(&str) -> ServerRuntime + Send + Sync>,
    ports: Arc<PortPool>,
    drain_requests: bool,
) -> PlacementFactory {
    Arc::new(move |app, logs| {
        let config = LocalConfig {
            engine: EngineConfig {
                stop_timeout: STOP_TIMEOUT,
                keep_alive: true,
                boot_timeout: Duration::from_secs(60),
                drain_requests,
                output_limits: Some(OutputLimits::SERVER),
            },
            ports: ports.clone(),
        };
        Box::new(LocalPlacement::new(runtime_of(app), config, logs))
    })
}

/// Writes router lines to the app's log without ever making a request wait for
/// a task, and counts the errors among them by code.
fn router_log(
    ring: Arc<LogRing>,
    error_lines: Arc<LogRing>,
    errors: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
) -> Arc<dyn Fn(String) + Send + Sync> {
    let source: Arc<str> = Arc::from("router");
    // Straight into the ring, not through the app's log channel: a channel
    // hop per request woke the task that feeds the ring for every line, which
    // cost the router more than proxying did. Router lines may therefore
    // interleave with dyno lines a little differently than they happened.
    Arc::new(move |line: String| {
        let code = line
            .strip_prefix("at=error code=")
            .and_then(|rest| rest.split(' ').next());
        if let Some(code) = code {
            let mut errors = errors.lock().unwrap_or_else(|p| p.into_inner());
            match errors.get_mut(code) {
                Some(count) => *count += 1,
                None => {
                    errors.insert(code.to_string(), 1);
                }
            }
        }
        // One event for both, so that a line in both has one time, by which
        // a reader tells the copies apart.
        let error = code.is_some();
        let event = LogEvent::platform(&source, line);
        if error {
            error_lines.push(&event);
        }
        ring.push(&event)
    })
}

fn engine_error(e: EngineError) -> PlatformError {
    match e {
        EngineError::UnknownDyno(d) => PlatformError::UnknownDyno(d),
        EngineError::ShuttingDown => PlatformError::ShuttingDown,
        EngineError::Formation(f) => PlatformError::Formation(f),
        EngineError::Port { .. } | EngineError::NoRelease | EngineError::Engine(_) => {
            PlatformError::Invalid(e.to_string())
        }
    }
}

/// The engine's formation for a release's types from the stored rows.
fn formation_of(types: &[ReleaseType], rows: &[FormationRow]) -> Result<Formation, PlatformError> {
    let mut formation = Formation::new(types.iter().map(|t| t.name.clone()), 0);
    let changes: Vec<FormationChange> = rows
        .iter()
        .filter(|r| types.iter().any(|t| t.name == r.process_type))
        .map(|r| FormationChange {
            process_type: r.process_type.clone(),
            quantity: Quantity::Set(r.quantity),
            size: None,
        })
        .collect();
    if !changes.is_empty() {
        formation.apply(&changes)?;
    }
    Ok(formation)
}

/// A dyno's environment: a small base, then the release's config vars.
fn dyno_env(
    runtime: &ServerRuntime,
    dir: &Path,
    config: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    // An isolated dyno sees only the stack, so the server's own PATH would name
    // directories that are not there.
    let path = match runtime {
        ServerRuntime::Isolated(_) => STACK_PATH.to_string(),
        ServerRuntime::Plain(_) => std::env::var("PATH").unwrap_or_else(|_| STACK_PATH.into()),
    };
    let mut env = vec![
        ("PATH".to_string(), path),
        ("HOME".to_string(), dir.display().to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        // Dyno output goes through a pipe to the log; unbuffered Python shows it
        // as it happens.
        ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
    ];
    for (key, value) in config {
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }
    env
}

/// Makes the app's bare repository and its pre-receive hook, which hands the
/// pushed commit to this server for building.
pub(crate) fn init_repo(repo: &Path, exe: &Path, app: &str) -> std::io::Result<()> {
    crate::private::create_dirs(repo)?;
    let status = std::process::Command::new("git")
        .args(["init", "--bare", "--quiet", "--shared=0600"])
        .arg(repo)
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "`git init --bare` failed: {status}"
        )));
    }
    configure_repo(repo)?;
    write_hook(repo, exe, app)
}

/// The repository's pre-receive hook, which names the app: written when the
/// repository is made, and again when the app is renamed.
pub(crate) fn write_hook(repo: &Path, exe: &Path, app: &str) -> std::io::Result<()> {
    let hook = repo.join("hooks").join("pre-receive");
    std::fs::create_dir_all(repo.join("hooks"))?;
    let quoted = exe.display().to_string().replace('\'', "'\\''");
    let partial = repo.join("hooks").join("pre-receive.partial");
    std::fs::write(
        &partial,
        format!("#!/bin/sh\nexec '{quoted}' __pre-receive {app}\n"),
    )?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&partial, &hook)
}

/// What every app repository is set to, new or made by an older crew:
/// - its files are private (`core.sharedRepository`);
/// - a push's objects are checked (`fsckObjects`), so a malformed tree or a
///   path like `.git/hooks` in one is refused before anything reads it;
/// - git's automatic housekeeping after a push runs in the foreground: when it
///   detaches, its process outlives `git receive-pack` and is handed to the
///   server (a subreaper), which is not its parent and left it a zombie.
const REPO_SETTINGS: &[(&str, &str)] = &[
    ("receive.fsckObjects", "true"),
    ("transfer.fsckObjects", "true"),
    ("gc.autoDetach", "false"),
    ("maintenance.autoDetach", "false"),
    // Files only crew's user can read, as everything in the data dir.
    ("core.sharedRepository", "0600"),
];

/// Applies [`REPO_SETTINGS`] to the bare repository `repo`.
pub(crate) fn configure_repo(repo: &Path) -> std::io::Result<()> {
    for (key, value) in REPO_SETTINGS {
        let status = std::process::Command::new("git")
            .arg("config")
            .arg("--file")
            .arg(repo.join("config"))
            .args([key, value])
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "`git config {key} {value}` failed: {status}"
            )));
        }
    }
    Ok(())
}

/// Runs a release's `release` command on this machine, in its slug, and says
/// whether it succeeded.
pub(crate) async fn run_release_command(
    runtime: &ServerRuntime,
    release: &ReleaseSpec,
    command: &str,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), String> {
    let spec = DynoSpec {
        name: RELEASE_DYNO.into(),
        command: format!(
            "{}{command}",
            release.command_prefix.as_deref().unwrap_or_default()
        ),
        env: release.env.clone(),
        cwd: release.slug_dir.clone(),
        ..DynoSpec::default()
    };
    let mut process = match runtime.spawn(&spec) {
        Ok(p) => p,
        Err(e) => return Err(e.to_string()),
    };
    let group = process.group();
    if let Some(mut output) = process.take_output() {
        let mut framer = LineFramer::new();
        while let Ok(n) = output.read_buf(framer.read_buf()).await {
            if n == 0 {
                break;
            }
            while let Some(lines) = framer.complete_lines() {
                for line in String::from_utf8_lossy(&lines).lines() {
                    say(format!("       {line}"));
                }
            }
        }
        if let Some(rest) = framer.take_partial() {
            say(format!(
                "       {}",
                String::from_utf8_lossy(&rest).trim_end()
            ));
        }
    }
    match tokio::time::timeout(RELEASE_TIMEOUT, process.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(exit_reason(status)),
        Ok(Err(e)) => {
            crew_runtime::ProcessGroup::signal(&group, Signal::Kill);
            Err(format!("it could not be waited for: {e}"))
        }
        Err(_) => {
            crew_runtime::ProcessGroup::signal(&group, Signal::Kill);
            Err(format!(
                "it ran longer than {} s and was killed",
                RELEASE_TIMEOUT.as_secs()
            ))
        }
    }
}

/// Why a release command that ended failed, in words.
fn exit_reason(status: crew_runtime::ExitStatus) -> String {
    format!("it exited with status {}", status.code())
}
