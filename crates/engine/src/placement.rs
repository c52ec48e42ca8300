//! Where one app's formation runs: the seam between the platform and crew's own
//! engine on this machine, or a cluster.
//!
//! The platform keeps the formation and the releases; a [`Placement`] only makes
//! them real, and reports back. [`LocalPlacement`] is the reference: crew's own
//! engine on this machine, through a [`Runtime`]. A remote engine (Swarm,
//! Kubernetes) implements the same trait and is held to the same conformance
//! tests. Every method is about one app; the placement is made for it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crew_logs::LogEvent;
use crew_procfile::{Formation, FormationChange};
use crew_runtime::{DynoSize, ExitStatus, Runtime, Signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::{
    AppSpec, Attachment, DynoInfo, EngineConfig, EngineError, EngineHandle, Outcome, Ports,
    ProcessTypeSpec, RunRequest, ShutdownReason, TypeSettings, WebBackend,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A release as a placement needs it.
#[derive(Debug, Clone)]
pub struct ReleaseSpec {
    pub app: String,
    pub version: u32,
    /// Process types in Procfile order, with their commands and sizes.
    pub types: Vec<ReleaseType>,
    /// The config vars and crew's base environment; placements add PORT, DYNO, PS.
    pub env: Vec<(String, String)>,
    /// The slug as built (`.tar.gz`), for placements that ship it elsewhere.
    pub slug_archive: PathBuf,
    /// The slug extracted on this machine, for placements that run it here.
    pub slug_dir: PathBuf,
    /// Shell text run before every command (sourcing `.profile.d`).
    pub command_prefix: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ReleaseType {
    pub name: String,
    pub command: String,
    pub size: Option<DynoSize>,
}

/// The dyno a release command runs as, on every engine. Heroku numbers them
/// (`release.1234`); crew runs one release command at a time per release,
/// so the number says nothing and stays 1.
pub const RELEASE_DYNO: &str = "release.1";

/// A release's `release` command (Heroku's release phase): run once, as a
/// one-off of the release it belongs to, before that release becomes current.
#[derive(Debug, Clone)]
pub struct ReleaseCommand {
    /// The Procfile's `release:` line, run like any dyno's command.
    pub command: String,
    /// How long it may run (an hour on Heroku); past that it is stopped and
    /// the release fails.
    pub timeout: Duration,
    /// Each line of its output, stdout and stderr alike, without the line
    /// end, as it comes: the platform shows them to the pusher.
    pub output: mpsc::UnboundedSender<String>,
}

/// One app's dynos, wherever they run. Errors use the engine's words.
pub trait Placement: Send + Sync + 'static {
    /// Runs `release` with `formation`: the first time, starts it; later, rolls
    /// the app over to it (new web dynos up before old ones go).
    fn apply(
        &self,
        release: ReleaseSpec,
        formation: Formation,
    ) -> BoxFuture<'_, Result<(), EngineError>>;
    /// Changes quantities (and sizes) of types the running release has.
    fn scale(&self, changes: Vec<FormationChange>) -> BoxFuture<'_, Result<(), EngineError>>;
    fn ps(&self) -> BoxFuture<'_, Vec<DynoInfo>>;
    /// A one-off dyno from the applied release; attached when the request's
    /// input is a pipe or a terminal.
    fn run(
        &self,
        request: RunRequest,
    ) -> BoxFuture<'_, Result<(DynoInfo, Option<Attachment>), EngineError>>;
    /// `run:inside`: a process inside the running dyno `dyno`, attached.
    /// Placements that cannot say so.
    fn run_inside(
        &self,
        dyno: String,
        request: RunRequest,
    ) -> BoxFuture<'_, Result<Attachment, EngineError>> {
        let _ = (dyno, request);
        Box::pin(async {
            Err(EngineError::Engine(
                "run:inside is not supported on this placement yet; use `run` for a one-off".into(),
            ))
        })
    }
    /// One dyno (`web.2`), one type (`web`) or, with `None`, everything.
    fn restart(&self, target: Option<String>) -> BoxFuture<'_, Result<(), EngineError>>;
    /// One dyno or one type, down until restarted or scaled.
    fn stop(&self, target: String) -> BoxFuture<'_, Result<(), EngineError>>;
    /// Where the router sends the app's requests, kept current.
    fn web_backends(&self) -> watch::Receiver<Arc<Vec<WebBackend>>>;
    /// Stops every dyno gracefully and waits until they are gone; the
    /// placement is done after this.
    fn destroy(&self) -> BoxFuture<'_, ()>;
    /// Asks every dyno to stop without waiting (the server is going down).
    fn shutdown(&self);
    /// Runs `release`'s release command where this placement runs dynos, with
    /// the release's image and config, and gives its exit status. `Ok(None)`
    /// means the placement leaves it to the platform, which runs it on its
    /// own machine: the default, right for crew's own engine on this machine. `release`
    /// is not applied: its dynos start only when the platform applies it.
    fn release_command(
        &self,
        release: ReleaseSpec,
        command: ReleaseCommand,
    ) -> BoxFuture<'_, Result<Option<ExitStatus>, EngineError>> {
        let _ = (release, command);
        Box::pin(async { Ok(None) })
    }
}

/// How the local placement runs dynos.
#[derive(Clone)]
pub struct LocalConfig {
    pub engine: EngineConfig,
    pub ports: Arc<crate::PortPool>,
}

struct Running {
    handle: EngineHandle,
    task: JoinHandle<Outcome>,
}

/// crew's own engine on this machine: the reference placement.
pub struct LocalPlacement<R: Runtime + Clone> {
    runtime: R,
    config: LocalConfig,
    logs: mpsc::Sender<LogEvent>,
    running: tokio::sync::Mutex<Option<Running>>,
    backends: std::sync::Mutex<watch::Receiver<Arc<Vec<WebBackend>>>>,
}

impl<R: Runtime + Clone> LocalPlacement<R> {
    pub fn new(runtime: R, config: LocalConfig, logs: mpsc::Sender<LogEvent>) -> Self {
        let (_, none) = watch::channel(Arc::new(Vec::new()));
        LocalPlacement {
            runtime,
            config,
            logs,
            running: tokio::sync::Mutex::new(None),
            backends: std::sync::Mutex::new(none),
        }
    }

    async fn handle(&self) -> Option<EngineHandle> {
        self.running.lock().await.as_ref().map(|r| r.handle.clone())
    }
}

impl<R: Runtime + Clone> Placement for LocalPlacement<R> {
    fn apply(
        &self,
        release: ReleaseSpec,
        formation: Formation,
    ) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            let app = AppSpec {
                types: release
                    .types
                    .into_iter()
                    .map(|t| ProcessTypeSpec {
                        name: t.name,
                        command: t.command,
                        settings: TypeSettings::default(),
                        size: t.size,
                    })
                    .collect(),
                env: release.env,
                cwd: release.slug_dir,
                ports: Ports::Pool(self.config.ports.clone()),
                command_prefix: release.command_prefix,
                release: Some(release.version),
            };
            let mut running = self.running.lock().await;
            match running.as_ref() {
                Some(r) if !r.task.is_finished() => r.handle.deploy(app, formation),
                _ => {
                    let (handle, task) = crate::start(
                        self.runtime.clone(),
                        app,
                        formation,
                        self.config.engine.clone(),
                        self.logs.clone(),
                    );
                    *self.backends.lock().unwrap_or_else(|p| p.into_inner()) =
                        handle.web_backends();
                    *running = Some(Running { handle, task });
                }
            }
            Ok(())
        })
    }

    fn scale(&self, changes: Vec<FormationChange>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            let Some(handle) = self.handle().await else {
                return Ok(());
            };
            let known = handle.formation().await;
            let changes: Vec<FormationChange> = changes
                .into_iter()
                .filter(|c| {
                    known
                        .as_ref()
                        .is_some_and(|f| f.get(&c.process_type).is_some())
                })
                .collect();
            if changes.is_empty() {
                return Ok(());
            }
            handle.scale(changes).await.map(|_| ())
        })
    }

    fn ps(&self) -> BoxFuture<'_, Vec<DynoInfo>> {
        Box::pin(async move {
            match self.handle().await {
                Some(handle) => handle.ps().await,
                None => Vec::new(),
            }
        })
    }

    fn run(
        &self,
        request: RunRequest,
    ) -> BoxFuture<'_, Result<(DynoInfo, Option<Attachment>), EngineError>> {
        Box::pin(async move {
            match self.handle().await {
                Some(handle) => handle.run(request).await,
                None => Err(EngineError::NoRelease),
            }
        })
    }

    fn run_inside(
        &self,
        dyno: String,
        request: RunRequest,
    ) -> BoxFuture<'_, Result<Attachment, EngineError>> {
        Box::pin(async move {
            match self.handle().await {
                Some(handle) => handle.run_inside(dyno, request).await,
                None => Err(EngineError::UnknownDyno(dyno)),
            }
        })
    }

    fn restart(&self, target: Option<String>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            match (self.handle().await, target) {
                (Some(handle), target) => handle.restart(target).await.map(|_| ()),
                (None, Some(t)) => Err(EngineError::UnknownDyno(t)),
                (None, None) => Ok(()),
            }
        })
    }

    fn stop(&self, target: String) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            match self.handle().await {
                Some(handle) => handle.stop(target).await.map(|_| ()),
                None => Err(EngineError::UnknownDyno(target)),
            }
        })
    }

    fn web_backends(&self) -> watch::Receiver<Arc<Vec<WebBackend>>> {
        self.backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn destroy(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let running = self.running.lock().await.take();
            if let Some(running) = running {
                running
                    .handle
                    .shutdown(ShutdownReason::Signal(Signal::Term));
                let _ = running.task.await;
            }
        })
    }

    fn shutdown(&self) {
        if let Ok(running) = self.running.try_lock()
            && let Some(running) = running.as_ref()
        {
            running
                .handle
                .shutdown(ShutdownReason::Signal(Signal::Term));
        }
    }
}

/// An app whose placement could not be made: every request says why, and it
/// runs nothing.
pub struct FailedPlacement {
    why: String,
}

impl FailedPlacement {
    pub fn new(why: impl Into<String>) -> FailedPlacement {
        FailedPlacement { why: why.into() }
    }

    fn error(&self) -> EngineError {
        EngineError::Engine(self.why.clone())
    }
}

impl Placement for FailedPlacement {
    fn apply(&self, _: ReleaseSpec, _: Formation) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { Err(self.error()) })
    }

    fn scale(&self, _: Vec<FormationChange>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { Err(self.error()) })
    }

    fn ps(&self) -> BoxFuture<'_, Vec<DynoInfo>> {
        Box::pin(async { Vec::new() })
    }

    fn run(
        &self,
        _: RunRequest,
    ) -> BoxFuture<'_, Result<(DynoInfo, Option<Attachment>), EngineError>> {
        Box::pin(async move { Err(self.error()) })
    }

    fn restart(&self, _: Option<String>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { Err(self.error()) })
    }

    fn stop(&self, _: String) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { Err(self.error()) })
    }

    fn web_backends(&self) -> watch::Receiver<Arc<Vec<WebBackend>>> {
        watch::channel(Arc::new(Vec::new())).1
    }

    fn destroy(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn shutdown(&self) {}

    /// Refused like everything else: the app's dynos would run on a cluster
    /// that could not be reached, so its release command must not run on
    /// this machine instead.
    fn release_command(
        &self,
        _: ReleaseSpec,
        _: ReleaseCommand,
    ) -> BoxFuture<'_, Result<Option<ExitStatus>, EngineError>> {
        Box::pin(async move { Err(self.error()) })
    }
}
