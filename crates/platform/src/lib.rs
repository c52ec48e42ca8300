//! The platform: apps, deploys, releases, config and formations of a `crew server`.
//!
//! Everything durable is in the [`Store`]; everything running is in one
//! placement per app (an engine on this machine, or a cluster's services).
//! On start the platform reads every app's current release and formation from
//! the store and starts its dynos, so a server that was killed comes back to
//! exactly what was last asked for. Every change a user makes goes to the
//! store first, then to the placement:
//! - a deploy builds a slug from pushed source with buildpacks, makes a release,
//!   runs its `release` command, and only then switches the dynos to it;
//! - a config change or a rollback makes a release from an existing slug;
//! - a scale is stored, then applied.
//!
//! Each app has a log ring fed by its placement and by the platform's own events
//! (`crew[api]: Release v3 created`).
//!
//! An app's settings outside its releases are in `settings.rs`: a rename moves
//! its directory and repository and restarts its dynos under the new name (the
//! log ring goes along); maintenance mode is a flag the router reads on every
//! request; chosen buildpacks feed the next build. A release command's output
//! is kept with its release.
//!
//! This file holds the [`Platform`], how it is opened, and what every part
//! shares (paths, the per-app locks, the running side of each app). Each
//! part is its own `impl Platform` in the module that owns it: `apps.rs`
//! (create, destroy, `apps:info`), `deploy.rs` (sources and builds),
//! `release.rs` (finishing a release, config, rollback), `formation.rs`
//! (scale, ps, restart, stop), `one_off.rs` (run, run:inside), `routes.rs`
//! (domains, which app a host names), `logs.rs`. `app.rs` is one app's
//! running side, and never reaches into `Platform`. These modules import this
//! file; this file imports none of them, so no module imports one that
//! imports it back.

mod app;
mod apps;
mod deploy;
mod error;
mod formation;
mod logs;
mod one_off;
mod private;
mod release;
mod routes;
mod settings;
mod size;
mod slug;
mod source;

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crew_buildpack::{BuildIsolation, BuildSandbox, Buildpacks};
use crew_engine::PortPool;
use crew_runtime::{DynoSize, ServerRuntime};
use crew_store::Store;

use crate::app::ReleaseContext;
pub use crate::app::{PlacementFactory, RunningApp};
pub use crate::error::PlatformError;
pub use crate::one_off::OneOffRequest;
pub use crate::routes::LOCAL_SUFFIX;
pub use crate::source::{MAX_SOURCE_BYTES, SourceId};
pub use crew_buildpack::PathBuildpacks;

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

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What an app's running side reads from this server to run a release.
    fn release_context(&self) -> ReleaseContext<'_> {
        ReleaseContext {
            store: &self.store,
            runtime: &self.runtime,
            app_uids: &self.app_uids,
        }
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

    fn locks(&self, app: &str) -> Arc<AppLocks> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(app.to_string())
            .or_default()
            .clone()
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
