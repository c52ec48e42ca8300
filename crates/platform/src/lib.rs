//! The platform: apps, deploys, releases, config and formations of a `crew server`.
//!
//! Everything durable is in the [`Store`]; everything running is in one engine
//! per app. On start the platform reads every app's current release and
//! formation from the store and starts its dynos, so a server that was killed
//! comes back to exactly what was last asked for. Every change a user makes goes
//! to the store first, then to the engine:
//! - a deploy builds a slug from pushed source with buildpacks, makes a release,
//!   runs its `release` command, and only then switches the engine to it;
//! - a config change or a rollback makes a release from an existing slug;
//! - a scale is stored, then applied.
//!
//! Each app has a log ring fed by its engine and by the platform's own events
//! (`crew[api]: Release v3 created`).
//!
//! An app's settings outside its releases are in `settings.rs`: a rename moves
//! its directory and repository and restarts its dynos under the new name (the
//! log ring goes along); maintenance mode is a flag the router reads on every
//! request; chosen buildpacks feed the next build. A release command's output
//! is kept with its release.

mod app;
mod error;
mod private;
mod settings;
mod slug;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crew_buildpack::{BuildIsolation, BuildRequest, BuildSandbox, Buildpacks};
use crew_engine::{DynoInfo, PortPool};
use crew_logs::LogRing;
use crew_procfile::FormationChange;
use crew_router::AppRoute;
use crew_runtime::{DynoSize, ServerRuntime};
use crew_store::{FormationRow, Release, ReleaseStatus, Store};

use crate::app::ReleaseContext;
pub use crate::app::{PlacementFactory, RunningApp};
pub use crate::error::PlatformError;
pub use crate::source::{MAX_SOURCE_BYTES, SourceId};
pub use crew_buildpack::PathBuildpacks;

/// A one-off dyno as a user asks for it.
#[derive(Debug, Clone, Default)]
pub struct OneOffRequest {
    pub command: String,
    pub env: Vec<(String, String)>,
    /// A dyno size by name (`standard-2x`); the default size without one.
    pub size: Option<String>,
    pub input: crew_runtime::DynoInput,
}

/// What `execve` and `sh -c` can take, checked before a one-off is made: a
/// command that is not empty and has no NUL, and variables whose names have
/// no `=` or NUL and whose values have no NUL. Otherwise the dyno would only
/// fail to start.
fn check_one_off(request: &OneOffRequest) -> Result<(), PlatformError> {
    if request.command.trim().is_empty() {
        return Err(PlatformError::Invalid("the command is empty".into()));
    }
    if request.command.contains('\0') {
        return Err(PlatformError::Invalid(
            "the command contains a NUL byte".into(),
        ));
    }
    for (name, value) in &request.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(PlatformError::Invalid(format!(
                "`{}` is not a valid environment variable name: it may not be empty or contain `=` or NUL",
                name.escape_debug()
            )));
        }
        if value.contains('\0') {
            return Err(PlatformError::Invalid(format!(
                "the value of environment variable `{name}` contains a NUL byte"
            )));
        }
    }
    Ok(())
}

/// A documented dyno size by name that fits in `room` bytes of memory (what
/// this host can give dynos, when they run here), or an error listing the
/// sizes or naming both numbers.
fn size_named(name: &str, room: Option<u64>) -> Result<DynoSize, PlatformError> {
    let size = DynoSize::parse(name).map_err(|e| PlatformError::Invalid(e.to_string()))?;
    match room {
        Some(room) if size.memory_bytes > room => Err(PlatformError::Invalid(format!(
            "dyno size {} needs {} of memory, and this server can give dynos at most {}",
            size.name,
            human_bytes(size.memory_bytes),
            human_bytes(room)
        ))),
        _ => Ok(size),
    }
}

/// `126 GiB`, `2.5 GiB`, `512 MiB`.
fn human_bytes(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    if bytes >= GIB {
        let tenths = bytes * 10 / GIB;
        if tenths.is_multiple_of(10) {
            format!("{} GiB", tenths / 10)
        } else {
            format!("{}.{} GiB", tenths / 10, tenths % 10)
        }
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

/// How long a build may take, as on Heroku.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What each program of a sandboxed build may use. 4 GiB holds what real
/// builds need at their peak (compiling a C extension or bundling a large
/// front end with webpack takes 1.5 to 3 GiB) while a runaway build cannot
/// take a server's memory from its dynos; 4,096 processes and threads are
/// ten times what `npm` with `node-gyp` or `make -j` start, and an eighth of
/// the default `pid_max`, so a fork bomb stops long before the host does.
pub fn build_limits() -> DynoSize {
    DynoSize {
        name: "build".to_string(),
        memory_bytes: 4 * 1024 * 1024 * 1024,
        pids: 4096,
    }
}

/// How the server's builds run, besides its runtime.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// The user and group sandboxed build programs run as.
    pub uid: u32,
    pub gid: u32,
    /// Variables of the server's environment every build gets (proxies, CA
    /// settings), with their values.
    pub env: Vec<(String, String)>,
    /// Which directories of this machine BUILDPACK_URL and `.buildpacks` may name.
    pub path_buildpacks: PathBuildpacks,
    pub limits: DynoSize,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            uid: 65533,
            gid: 65533,
            env: Vec::new(),
            path_buildpacks: PathBuildpacks::Nowhere,
            limits: build_limits(),
        }
    }
}

pub struct PlatformConfig {
    pub data: PathBuf,
    /// The crew binary, for git hooks and the watchdog.
    pub exe: PathBuf,
    pub ports: std::ops::RangeInclusive<u16>,
    /// Whether a router sends requests to the web dynos, which then drain
    /// before they stop.
    pub drain_requests: bool,
    /// How dynos are isolated, in words, for `apps:info`: `on (…)`, or `off: why`.
    pub isolation: String,
    /// Where apps' dynos run; `None` is this machine, through the runtime.
    pub placements: Option<PlacementFactory>,
    /// The uids (and gids, the same numbers) apps get, one each, for their
    /// isolated dynos and builds (`crew server --app-uids`).
    pub app_uids: RangeInclusive<u32>,
    pub builds: BuildSettings,
}

/// Builds run behind the dynos' walls when dynos are isolated here; otherwise
/// on the host, and every build says so.
fn build_isolation(
    runtime: &ServerRuntime,
    settings: &BuildSettings,
    dyno_isolation: &str,
) -> BuildIsolation {
    match runtime {
        ServerRuntime::Isolated(runtime) => BuildIsolation::Sandboxed(BuildSandbox {
            runtime: runtime.clone(),
            uid: settings.uid,
            gid: settings.gid,
            limits: settings.limits.clone(),
            env: settings.env.clone(),
        }),
        ServerRuntime::Plain(_) => BuildIsolation::Host {
            warning: Some(format!(
                "this build is not isolated: it runs on the server as crew's own user and \
                 sees all of the machine, because dyno isolation is {dyno_isolation}"
            )),
        },
    }
}

/// The default `--app-uids`: a block far above the uids and gids of the
/// host's users (login.defs hands out up to 60000), of systemd's dynamic users
/// (61184-65519) and of the usual subordinate-uid ranges of rootless
/// containers (100000 upwards, 65536 per user, and systemd-nspawn's
/// 524288-1879048191), and below 2^31, where some tools take a uid for
/// negative.
pub const DEFAULT_APP_UIDS: RangeInclusive<u32> = 2_000_000_000..=2_099_999_999;

/// The hostname suffix every app answers on without DNS setup.
pub const LOCAL_SUFFIX: &str = ".localhost";

pub struct Platform {
    data: PathBuf,
    exe: PathBuf,
    store: Arc<Store>,
    buildpacks: Buildpacks,
    runtime: ServerRuntime,
    isolation: String,
    placements: PlacementFactory,
    app_uids: RangeInclusive<u32>,
    /// The memory dynos can have when they run on this machine; `None` when
    /// a cluster places them elsewhere, or the host's memory is unknown.
    dyno_memory: Option<u64>,
    apps: Mutex<HashMap<String, Arc<RunningApp>>>,
    /// Custom domains, hostname → app, mirrored from the store for the router.
    domains: std::sync::RwLock<HashMap<String, String>>,
    /// Per app: one build at a time, and one release at a time.
    locks: Mutex<HashMap<String, Arc<AppLocks>>>,
}

/// What serialises an app's changes.
#[derive(Default)]
struct AppLocks {
    /// Held through a whole deploy, so pushes build one after another.
    build: tokio::sync::Mutex<()>,
    /// Held from making a release until its dynos run it (release command
    /// included): by a deploy once built, a config change and a rollback.
    /// Each starts from the release before it, so two at once would lose
    /// one's change: a config var set during a deploy's release command
    /// would be missing from the deploy's release, or the deploy's slug
    /// from the config change's.
    release: tokio::sync::Mutex<()>,
}

impl Platform {
    /// Opens the data directory and brings every app's formation back up.
    pub async fn open(
        config: PlatformConfig,
        runtime: ServerRuntime,
    ) -> Result<Arc<Platform>, PlatformError> {
        std::fs::create_dir_all(&config.data).map_err(PlatformError::io(format!(
            "creating {}",
            config.data.display()
        )))?;
        // Before anything is written there: nobody else reads the data dir.
        private::make_private(&config.data).map_err(PlatformError::io(format!(
            "making {} private",
            config.data.display()
        )))?;
        let db = config.data.join("crew.db");
        private::create_private_file(&db)
            .map_err(PlatformError::io(format!("creating {}", db.display())))?;
        let store = Arc::new(Store::open(&db)?);
        let buildpacks = Buildpacks::install_builtin(&config.data.join("buildpacks"))
            .map_err(|e| PlatformError::Build(e.to_string()))?
            .with_path_buildpacks(config.builds.path_buildpacks.clone())
            .with_isolation(build_isolation(&runtime, &config.builds, &config.isolation));
        let drain_requests = config.drain_requests;
        let ports = config.ports;
        let app_uids = config.app_uids.clone();
        let dyno_memory = config
            .placements
            .is_none()
            .then(crew_runtime::memory_for_dynos)
            .flatten();
        let placements = config.placements.unwrap_or_else(|| {
            let (runtime, store, uids) = (runtime.clone(), store.clone(), app_uids.clone());
            let runtime_of = move |app: &str| app::runtime_as_app(&runtime, &store, &uids, app);
            app::local_placements(
                Arc::new(runtime_of),
                Arc::new(PortPool::new(ports)),
                drain_requests,
            )
        });
        let platform = Arc::new(Platform {
            data: config.data,
            exe: config.exe,
            store,
            buildpacks,
            placements,
            app_uids,
            dyno_memory,
            runtime,
            isolation: config.isolation,
            apps: Mutex::new(HashMap::new()),
            domains: std::sync::RwLock::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        });
        platform.clean_up_cut_off_builds()?;
        // Again, now that the directories made above exist.
        private::make_private(&platform.data).map_err(PlatformError::io(format!(
            "making {} private",
            platform.data.display()
        )))?;
        for app in platform.store.apps()? {
            let repo = platform.repos().join(format!("{}.git", app.name));
            if repo.join("config").is_file()
                && let Err(e) = app::configure_repo(&repo)
            {
                eprintln!(
                    "crew: warning: configuring the git repository {}: {e}",
                    repo.display()
                );
            }
            for domain in platform.store.domains(&app.name)? {
                platform.remember_domain(&domain.hostname, Some(&app.name));
            }
            let running = platform.running_app(&app.name);
            running.set_maintenance(platform.store.app_settings(&app.name)?.maintenance);
            running.boot(&platform.release_context()).await?;
        }
        Ok(platform)
    }

    /// A server killed during a build left it `pending` and its scratch dir on
    /// disk; no build runs yet, so every pending one is failed and every
    /// scratch dir and source crew left there is removed. Only names crew
    /// makes are removed, and only in its own directories.
    fn clean_up_cut_off_builds(&self) -> Result<(), PlatformError> {
        for build in self.store.fail_unfinished_builds()? {
            eprintln!(
                "crew: build {} of {} was cut off by a stopped server: marked failed",
                build.id, build.app
            );
        }
        source::remove_leftovers(&self.scratch_dir(), &self.sources_dir());
        Ok(())
    }

    /// Where builds unpack their source: `DATA/tmp`.
    fn scratch_dir(&self) -> PathBuf {
        self.data.join("tmp")
    }

    /// Where uploaded sources wait for their build: `DATA/sources`.
    fn sources_dir(&self) -> PathBuf {
        self.data.join("sources")
    }

    /// Makes an empty source, private to crew, for a tarball to be uploaded to.
    pub fn create_source(&self) -> Result<SourceId, PlatformError> {
        source::create(&self.sources_dir())
            .map_err(PlatformError::io("making a place for the source"))
    }

    /// The file to write source `id`'s tarball to, emptied: it must have been
    /// made by [`Platform::create_source`] and not built yet. The caller stops
    /// at [`MAX_SOURCE_BYTES`].
    pub fn source_upload(&self, id: &SourceId) -> Result<std::fs::File, PlatformError> {
        source::open_for_upload(&self.sources_dir(), id)
    }

    fn remember_domain(&self, hostname: &str, app: Option<&str>) {
        let mut domains = self.domains.write().unwrap_or_else(|p| p.into_inner());
        match app {
            Some(app) => domains.insert(hostname.to_string(), app.to_string()),
            None => domains.remove(hostname),
        };
    }

    pub fn add_domain(
        &self,
        app: &str,
        hostname: &str,
    ) -> Result<crew_store::Domain, PlatformError> {
        let domain = self.store.add_domain(app, hostname)?;
        self.remember_domain(&domain.hostname, Some(app));
        Ok(domain)
    }

    pub fn remove_domain(&self, app: &str, hostname: &str) -> Result<(), PlatformError> {
        self.store.remove_domain(app, hostname)?;
        self.remember_domain(&hostname.to_ascii_lowercase(), None);
        Ok(())
    }

    /// The app a request's host names: `APP.localhost` (any subdomain of it
    /// too), or a custom domain, exact or one wildcard level up. In the
    /// router's own type, so the binary hands it over as it is.
    pub fn route(&self, host: &str) -> Option<AppRoute> {
        let running = |app: String| {
            let running = self
                .apps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&app)
                .cloned()?;
            Some((app, running))
        };
        let (app, running) = match host.strip_suffix(LOCAL_SUFFIX) {
            Some(rest) => running(rest.rsplit('.').next().unwrap_or(rest).to_string())?,
            None => {
                // Let go of the domains before taking the apps' lock.
                let app = {
                    let domains = self.domains.read().unwrap_or_else(|p| p.into_inner());
                    match domains.get(host) {
                        Some(app) => app.clone(),
                        None => {
                            let (_, parent) = host.split_once('.')?;
                            domains.get(&format!("*.{parent}"))?.clone()
                        }
                    }
                };
                running(app)?
            }
        };
        Some(AppRoute {
            backends: running.web_backends(),
            log: running.router_log(),
            maintenance: running.in_maintenance(),
            app,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How dynos are isolated here: `on (…)`, or `off: why`.
    pub fn isolation(&self) -> &str {
        &self.isolation
    }

    /// How builds run here, in words: `sandboxed (…)`, or `off: why`.
    pub fn build_isolation(&self) -> String {
        match self.buildpacks.isolation() {
            BuildIsolation::Sandboxed(sandbox) => format!(
                "sandboxed (namespaces and cgroup as for dynos, each app's own uid, {} of \
                 memory and {} processes per build step{})",
                crew_buildpack::human_size(sandbox.limits.memory_bytes),
                sandbox.limits.pids,
                if sandbox.env.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = sandbox.env.iter().map(|(k, _)| k.as_str()).collect();
                    format!(", passing on {}", names.join(" "))
                }
            ),
            BuildIsolation::Host { .. } => format!(
                "off: builds run on this machine as crew's own user and see all of it, \
                 because dyno isolation is {}",
                self.isolation
            ),
        }
    }

    /// The uid and gid `app`'s isolated dynos (formation, one-offs, the release
    /// command) and builds run as: its own, from `--app-uids`, held for its
    /// whole life. `None` when dynos run plain, as crew itself.
    pub fn app_user(&self, app: &str) -> Result<Option<(u32, u32)>, PlatformError> {
        self.release_context().app_user(app)
    }

    /// What an app's running side reads from this server to run a release.
    fn release_context(&self) -> ReleaseContext<'_> {
        ReleaseContext {
            store: &self.store,
            runtime: &self.runtime,
            app_uids: &self.app_uids,
        }
    }

    /// The buildpacks as `app`'s builds use them: sandboxed builds run as
    /// the app's own uid, as its dynos do.
    fn buildpacks_for(&self, app: &str) -> Result<Buildpacks, PlatformError> {
        let (BuildIsolation::Sandboxed(sandbox), Some((uid, gid))) =
            (self.buildpacks.isolation(), self.app_user(app)?)
        else {
            return Ok(self.buildpacks.clone());
        };
        let sandbox = BuildSandbox {
            uid,
            gid,
            ..sandbox.clone()
        };
        Ok(self
            .buildpacks
            .clone()
            .with_isolation(BuildIsolation::Sandboxed(sandbox)))
    }

    pub fn data(&self) -> &Path {
        &self.data
    }

    fn app_dir(&self, app: &str) -> PathBuf {
        self.data.join("apps").join(app)
    }

    pub fn repos(&self) -> PathBuf {
        self.data.join("repos")
    }

    /// The running side of an app, made on first use.
    pub fn running_app(&self, app: &str) -> Arc<RunningApp> {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.entry(app.to_string())
            .or_insert_with(|| Arc::new(RunningApp::new(app, &self.placements)))
            .clone()
    }

    /// The router's failed requests to `app` by error code since the server
    /// started; none for an app that has not run.
    pub fn router_errors(&self, app: &str) -> std::collections::BTreeMap<String, u64> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.get(app).map(|a| a.router_errors()).unwrap_or_default()
    }

    pub fn logs(&self, app: &str) -> Result<Arc<LogRing>, PlatformError> {
        self.store.app(app)?;
        Ok(self.running_app(app).ring())
    }

    /// The router's latest error lines for `app`, kept apart from its log
    /// (which has them too, until they leave it).
    pub fn router_error_lines(&self, app: &str) -> Result<Arc<LogRing>, PlatformError> {
        self.store.app(app)?;
        Ok(self.running_app(app).router_error_lines())
    }

    pub async fn create_app(&self, name: &str) -> Result<crew_store::App, PlatformError> {
        let app = self.store.create_app(name)?;
        // The app's uid from the start, so a full range refuses the app rather
        // than its first dyno.
        if let Err(e) = self.app_user(name) {
            let _ = self.store.destroy_app(name);
            return Err(e);
        }
        let repo = self.repos().join(format!("{name}.git"));
        app::init_repo(&repo, &self.exe, name).map_err(PlatformError::io(format!(
            "creating the git repository {}",
            repo.display()
        )))?;
        self.running_app(name)
            .event("api", format!("Release v1 created (app {name} created)"))
            .await;
        Ok(app)
    }

    pub async fn destroy_app(&self, name: &str) -> Result<(), PlatformError> {
        self.store.app(name)?;
        let running = self
            .apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(running) = running {
            running.destroy().await;
        }
        self.store.destroy_app(name)?;
        // The name passed the store's app-name rule (`^[a-z][a-z0-9-]{1,29}$`)
        // when the app was found, so both paths are crew's own, under DATA.
        let _ = std::fs::remove_dir_all(self.app_dir(name));
        let _ = std::fs::remove_dir_all(self.repos().join(format!("{name}.git")));
        Ok(())
    }

    fn locks(&self, app: &str) -> Arc<AppLocks> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(app.to_string())
            .or_default()
            .clone()
    }

    /// Builds the uploaded `source` into a slug and releases it. `out` gets
    /// every line the pusher should see. A failed build leaves the running
    /// release alone. The source is used up: its tarball and the directory it
    /// is unpacked into (`DATA/tmp/build-ID`) are removed either way.
    pub async fn deploy(
        self: &Arc<Self>,
        app: &str,
        source: SourceId,
        commit: String,
        out: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<Release, PlatformError> {
        self.store.app(app)?;
        let locks = self.locks(app);
        let _building = locks.build.lock().await;
        let running = self.running_app(app);
        let short = commit.chars().take(7).collect::<String>();
        running
            .event("api", format!("Build started for {short}"))
            .await;
        let tarball = source::path(&self.sources_dir(), &source)
            .map_err(|e| PlatformError::Invalid(e.to_string()))?;
        let build = self.store.create_build(app, &commit)?;
        let scratch = source::scratch_dir(&self.scratch_dir(), &build.id)
            .map_err(|e| PlatformError::Invalid(e.to_string()))?;
        let config = self.store.config(app)?;
        let dir = self.app_dir(app);
        private::create_dirs(&dir).map_err(PlatformError::io("creating the app's directory"))?;
        let slugs = dir.join("slugs");
        std::fs::create_dir_all(&slugs)
            .map_err(PlatformError::io("creating the slug directory"))?;
        let cache = dir.join("cache");
        std::fs::create_dir_all(&cache).map_err(PlatformError::io("creating the build cache"))?;
        let slug_path = slugs.join(format!("{}.tar.gz", build.id));

        let buildpacks = self
            .buildpacks_for(app)?
            .with_chosen(self.chosen_buildpacks(app)?);
        let app_name = app.to_string();
        let slug_for_build = slug_path.clone();
        let build_out = out.clone();
        let commit_for_build = commit.clone();
        let built = tokio::task::spawn_blocking(move || {
            let unpacked = source::unpack(&tarball, &scratch);
            let _ = std::fs::remove_file(&tarball);
            if let Err(e) = unpacked {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e);
            }
            let request = BuildRequest {
                app: &app_name,
                source: &scratch,
                cache: &cache,
                config: &config,
                slug_path: &slug_for_build,
                timeout: BUILD_TIMEOUT,
                source_version: Some(&commit_for_build),
            };
            let mut send = |line: &str| {
                let _ = build_out.send(line.to_string());
            };
            let result = buildpacks.build(&request, &mut send);
            // Made above by crew, under DATA/tmp, named for the build's id.
            let _ = std::fs::remove_dir_all(&scratch);
            Ok(result)
        })
        .await
        .map_err(|e| PlatformError::Build(format!("the build stopped: {e}")))?;
        let built = match built {
            Ok(built) => built,
            Err(e) => {
                let _ = out.send(format!(" !     The source could not be unpacked: {e}"));
                self.store
                    .finish_build(&build.id, crew_store::BuildStatus::Failed, None)?;
                running.event("api", "Build failed").await;
                return Err(PlatformError::Build(format!(
                    "the source could not be unpacked: {e}"
                )));
            }
        };
        let output = match built {
            Ok(output) => output,
            Err(e) => {
                for line in e.pusher_lines() {
                    let _ = out.send(line);
                }
                self.store
                    .finish_build(&build.id, crew_store::BuildStatus::Failed, None)?;
                running.event("api", "Build failed").await;
                return Err(PlatformError::Build(e.to_string()));
            }
        };
        let slug = self.store.create_slug(
            app,
            crew_store::NewSlug {
                path: slug_path.display().to_string(),
                process_types: output.process_types.clone(),
                commit: Some(commit.clone()),
                size: output.slug_size,
                buildpack: Some(output.buildpack.clone()),
                release_command: output.release_command.clone(),
            },
        )?;
        self.store.finish_build(
            &build.id,
            crew_store::BuildStatus::Succeeded,
            Some(&slug.id),
        )?;
        let _ = out.send("-----> Launching...".to_string());
        let _releasing = locks.release.lock().await;
        let mut config = self.store.config(app)?;
        for (key, value) in &output.config_vars {
            config.entry(key.clone()).or_insert_with(|| value.clone());
        }
        let release = self.store.create_release(
            app,
            crew_store::NewRelease {
                slug_id: Some(slug.id.clone()),
                config,
                description: format!("Deploy {short}"),
                status: ReleaseStatus::Pending,
            },
        )?;
        running.event("api", format!("Deploy {short}")).await;
        self.finish_release(app, release, Some(&out)).await
    }

    /// Runs the release command if the slug has one, then makes the release
    /// current and switches the dynos to it.
    async fn finish_release(
        &self,
        app: &str,
        release: Release,
        out: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Release, PlatformError> {
        let running = self.running_app(app);
        let slug = match &release.slug_id {
            Some(id) => Some(self.store.slug(id)?),
            None => None,
        };
        if let Some(slug) = &slug {
            // Extracted before the release can become current, also without
            // a release command: a slug that cannot be unpacked fails here.
            let spec = running.release_spec(
                &self.release_context(),
                &release,
                slug,
                &self.store.formation(app)?,
            )?;
            if let Some(command) = &slug.release_command {
                // Kept with the release for `heroku releases:output`, without
                // the pusher's indent.
                let output = Mutex::new(String::new());
                let say = |line: String| {
                    let mut kept = output.lock().unwrap_or_else(|p| p.into_inner());
                    if kept.len() <= 2 * crew_store::MAX_RELEASE_OUTPUT {
                        kept.push_str(line.strip_prefix("       ").unwrap_or(&line));
                        kept.push('\n');
                    }
                    drop(kept);
                    if let Some(out) = out {
                        let _ = out.send(line);
                    }
                };
                if let Some(out) = out {
                    let _ = out.send(format!("       Running release command `{command}`..."));
                }
                running
                    .event(
                        "api",
                        format!("Running release v{} commands", release.version),
                    )
                    .await;
                // Where the app's dynos run: the placement's engine, or this
                // machine when the placement leaves it here.
                let ran = running
                    .release_command(&self.release_context(), spec, command, &say)
                    .await;
                let keep = |output: &Mutex<String>| {
                    let text = output.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Err(e) = self.store.set_release_output(app, release.version, &text) {
                        eprintln!(
                            "crew: keeping the release command's output of {app} v{}: {e}",
                            release.version
                        );
                    }
                };
                if !matches!(ran, Ok(Ok(()))) {
                    self.store
                        .set_release_status(app, release.version, ReleaseStatus::Failed)?;
                    running
                        .event(
                            "api",
                            format!("Release v{} command failed", release.version),
                        )
                        .await;
                    let why = match ran {
                        Err(e) => {
                            say(format!(" !     {e}"));
                            format!(": {e}")
                        }
                        Ok(Err(why)) => format!(": {why}"),
                        Ok(Ok(())) => String::new(),
                    };
                    say(format!(
                        " !     Release command failed{why}; the current release keeps running."
                    ));
                    keep(&output);
                    return Err(PlatformError::Build(format!(
                        "release command `{command}` failed{why}"
                    )));
                }
                keep(&output);
            }
        }
        self.store
            .set_release_status(app, release.version, ReleaseStatus::Succeeded)?;
        running
            .event("api", format!("Release v{} created", release.version))
            .await;
        if let Some(out) = out {
            let _ = out.send(format!("       Released v{}", release.version));
        }
        let release = self.store.release(app, release.version)?;
        if slug.is_some() {
            running.boot(&self.release_context()).await?;
        }
        Ok(release)
    }

    pub async fn set_config(
        &self,
        app: &str,
        set: &BTreeMap<String, String>,
        unset: &[String],
    ) -> Result<Release, PlatformError> {
        let locks = self.locks(app);
        let _releasing = locks.release.lock().await;
        let release = self.store.update_config(app, set, unset, None)?;
        self.running_app(app)
            .event("api", release.description.clone())
            .await;
        self.finish_release(app, release, None).await
    }

    pub async fn rollback(&self, app: &str, version: u32) -> Result<Release, PlatformError> {
        let locks = self.locks(app);
        let _releasing = locks.release.lock().await;
        let release = self.store.rollback(app, version)?;
        self.running_app(app)
            .event("api", release.description.clone())
            .await;
        self.finish_release(app, release, None).await
    }

    /// Stores the new formation, then applies it. A new size restarts the
    /// app's dynos with it, new web dynos up before old ones stop.
    pub async fn scale(
        &self,
        app: &str,
        changes: &[FormationChange],
    ) -> Result<Vec<FormationRow>, PlatformError> {
        let changes = changes
            .iter()
            .map(|c| {
                let size = c
                    .size
                    .as_deref()
                    .map(|s| size_named(s, self.dyno_memory).map(|size| size.name))
                    .transpose()?;
                Ok(FormationChange { size, ..c.clone() })
            })
            .collect::<Result<Vec<_>, PlatformError>>()?;
        let rows = self.store.formation(app)?;
        let mut formation =
            crew_procfile::Formation::new(rows.iter().map(|r| r.process_type.clone()), 0);
        let current: Vec<FormationChange> = rows
            .iter()
            .map(|r| FormationChange {
                process_type: r.process_type.clone(),
                quantity: crew_procfile::Quantity::Set(r.quantity),
                size: None,
            })
            .collect();
        formation.apply(&current)?;
        formation.apply(&changes)?;
        let updated: Vec<FormationRow> = rows
            .iter()
            .map(|r| {
                let size = changes
                    .iter()
                    .rev()
                    .find(|c| c.process_type == r.process_type)
                    .and_then(|c| c.size.clone())
                    .unwrap_or_else(|| r.size.clone());
                FormationRow {
                    process_type: r.process_type.clone(),
                    quantity: formation.get(&r.process_type).unwrap_or(0),
                    size,
                }
            })
            .collect();
        let resized = updated
            .iter()
            .zip(&rows)
            .any(|(new, old)| new.size != old.size);
        let rows = self.store.set_formation(app, &updated)?;
        let running = self.running_app(app);
        let text: Vec<String> = rows
            .iter()
            .map(|r| format!("{}@{}:{}", r.process_type, r.quantity, r.size))
            .collect();
        running
            .event("api", format!("Scaled to {}", text.join(" ")))
            .await;
        if resized {
            running.boot(&self.release_context()).await?;
        } else {
            running.scale(&rows).await?;
        }
        Ok(rows)
    }

    pub async fn ps(&self, app: &str) -> Result<Vec<DynoInfo>, PlatformError> {
        self.store.app(app)?;
        Ok(self.running_app(app).ps().await)
    }

    /// Starts a one-off dyno from the current release; attached when the
    /// request's input is a pipe or a terminal.
    pub async fn run(
        &self,
        app: &str,
        request: OneOffRequest,
    ) -> Result<(DynoInfo, Option<crew_engine::Attachment>), PlatformError> {
        self.store.app(app)?;
        check_one_off(&request)?;
        let mut request = request;
        request.command = self.process_type_command(app, request.command);
        let size = request
            .size
            .as_deref()
            .map(|s| size_named(s, self.dyno_memory))
            .transpose()?;
        let running = self.running_app(app);
        running
            .event(
                "api",
                format!("Starting process with command `{}`", request.command),
            )
            .await;
        running
            .run(crew_engine::RunRequest {
                command: request.command,
                env: request.env,
                size,
                input: request.input,
            })
            .await
    }

    /// `run:inside`: `request` inside the running dyno `dyno` of `app`, in
    /// its namespaces and cgroup, as its user, with its environment plus the
    /// request's; attached (the input is a pipe or a terminal). A first word
    /// naming a process type runs that type's command, as for `run`.
    pub async fn run_inside(
        &self,
        app: &str,
        dyno: &str,
        request: OneOffRequest,
    ) -> Result<crew_engine::Attachment, PlatformError> {
        self.store.app(app)?;
        check_one_off(&request)?;
        if request.input == crew_runtime::DynoInput::Idle {
            return Err(PlatformError::Invalid(
                "run:inside is always attached: its input is a pipe or a terminal".into(),
            ));
        }
        let mut request = request;
        request.command = self.process_type_command(app, request.command);
        let running = self.running_app(app);
        running
            .event(
                "api",
                format!(
                    "Starting process with command `{}` inside {dyno}",
                    request.command
                ),
            )
            .await;
        running
            .run_inside(
                dyno.to_string(),
                crew_engine::RunRequest {
                    command: request.command,
                    env: request.env,
                    size: None,
                    input: request.input,
                },
            )
            .await
    }

    /// A one-off whose first word names a process type of the current
    /// release runs that type's command, the rest of the line after it, as
    /// `heroku run web` does; any other command is left as it is.
    fn process_type_command(&self, app: &str, command: String) -> String {
        let trimmed = command.trim_start();
        let (first, rest) =
            trimmed.split_at(trimmed.find(char::is_whitespace).unwrap_or(trimmed.len()));
        let slug = self
            .store
            .current_release(app)
            .ok()
            .and_then(|release| release.slug_id)
            .and_then(|id| self.store.slug(&id).ok());
        match slug.as_ref().and_then(|s| s.process_types.get(first)) {
            Some(type_command) => format!("{type_command}{rest}"),
            None => command,
        }
    }

    pub async fn restart(&self, app: &str, target: Option<String>) -> Result<(), PlatformError> {
        self.store.app(app)?;
        self.running_app(app).restart(target).await
    }

    pub async fn stop(&self, app: &str, target: String) -> Result<(), PlatformError> {
        self.store.app(app)?;
        self.running_app(app).stop_dyno(target).await
    }

    /// Stops every app's dynos gracefully.
    pub async fn shutdown(&self) {
        let apps: Vec<Arc<RunningApp>> = self
            .apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for app in &apps {
            app.shutdown();
        }
        for app in apps {
            app.destroy().await;
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn a_size_larger_than_the_host_is_refused_with_both_numbers() {
        const GIB: u64 = 1 << 30;
        let e = size_named("performance-2xl", Some(22 * GIB)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "dyno size performance-2xl needs 126 GiB of memory, and this server can give \
             dynos at most 22 GiB"
        );
        assert!(size_named("performance-m", Some(2 * GIB)).is_err());
        assert_eq!(
            size_named("performance-m", Some(22 * GIB)).unwrap().name,
            "performance-m"
        );
        assert!(
            size_named("performance-2xl", None).is_ok(),
            "elsewhere, no host to ask"
        );
        assert_eq!(human_bytes(5 * GIB / 2), "2.5 GiB");
    }
}
