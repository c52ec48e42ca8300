//! The engine: it turns a desired formation into running dynos and keeps them so.
//!
//! One task, the engine ([`task`]), owns every dyno's state. Everything else
//! talks to it through an [`EngineHandle`], whose requests travel over a
//! channel: scale, restart, stop, ps, run, run inside a running dyno (which
//! that dyno's task answers, since only it holds the process) and shut down.
//! The task's state is a map of slots, one per numbered dyno of a release
//! generation (`task/slots.rs`; their runs in `task/runs.rs`, deploys and
//! rolling restarts in `task/deploy.rs`, draining web dynos in
//! `task/drain.rs`), the one-offs (`task/one_offs.rs`) and the shutdown
//! (`task/shutdown.rs`). Each dyno run has a task of its own ([`dyno`]) that
//! spawns through the [`Runtime`], pumps output into the log channel, probes
//! a web dyno's PORT, carries out stops, and reports back what happened. No
//! other code touches a child process.
//!
//! A server reaches an app's formation through the [`Placement`] trait:
//! [`LocalPlacement`] wraps this engine, and a remote engine can stand in.
//!
//! Two rules decide what an exit means:
//! - foreman's (the default locally): the first exit nobody asked for stops the
//!   whole run, and its code becomes the run's exit code;
//! - the manifold's (`keep_alive`): a crashed dyno is restarted on the
//!   [`restart::Backoff`] schedule, forever.

mod dyno;
pub mod placement;
mod ports;
pub mod restart;
mod task;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crew_logs::LogEvent;
use crew_procfile::{Formation, FormationChange, FormationError};
use crew_runtime::{Console, DynoInput, DynoSize, ExitStatus, Output, Runtime, Signal};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use placement::{
    BoxFuture, FailedPlacement, LocalConfig, LocalPlacement, Placement, RELEASE_DYNO,
    ReleaseCommand, ReleaseSpec, ReleaseType,
};
pub use ports::PortPool;

/// A process type as the engine runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessTypeSpec {
    pub name: String,
    pub command: String,
    pub settings: TypeSettings,
    /// The limits of this type's dynos, where the runtime enforces them.
    pub size: Option<DynoSize>,
}

/// When a dyno that exited on its own is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// Per-type overrides of the engine's defaults (`crew.toml` locally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSettings {
    pub stop_signal: Signal,
    pub stop_timeout: Option<Duration>,
    pub boot_timeout: Option<Duration>,
    /// `None` follows the run's rule: always with keep-alive, else never.
    pub restart: Option<RestartPolicy>,
    /// A clean exit (code 0) is the job being done, not a reason to stop the run.
    pub may_exit: bool,
}

impl Default for TypeSettings {
    fn default() -> TypeSettings {
        TypeSettings {
            stop_signal: Signal::Term,
            stop_timeout: None,
            boot_timeout: None,
            restart: None,
            may_exit: false,
        }
    }
}

/// What to run: the process types in Procfile order, and what every dyno shares.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub types: Vec<ProcessTypeSpec>,
    /// The environment every dyno starts from; crew adds PORT, DYNO and PS.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub ports: Ports,
    /// Shell text run before every command, such as sourcing `.profile.d`.
    pub command_prefix: Option<String>,
    /// The release these dynos run, on a server. Deploying the same release
    /// again (a resize) restarts only the types whose spec changed.
    pub release: Option<u32>,
}

/// Where dynos' PORTs come from.
#[derive(Debug, Clone)]
pub enum Ports {
    /// foreman's formula from a base port: stable names, stable ports.
    Formula { base: u16 },
    /// A fresh free port for every run, shared by every app of a server, so old
    /// and new dynos can overlap during a deploy.
    Pool(Arc<PortPool>),
}

impl Ports {
    /// The base port of the formula, if that is the scheme.
    pub fn base(&self) -> Option<u16> {
        match self {
            Ports::Formula { base } => Some(*base),
            Ports::Pool(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// From the stop signal to SIGKILL.
    pub stop_timeout: Duration,
    /// The manifold's rule instead of foreman's.
    pub keep_alive: bool,
    /// How long a web dyno may take to accept connections on PORT.
    pub boot_timeout: Duration,
    /// Whether a router sends requests to the web dynos: then a web dyno
    /// being stopped gets no new requests, and its signal waits until the
    /// ones under way (its [`WebBackend::requests`]) are done.
    pub drain_requests: bool,
    /// A server's bounds on a dyno's output: its lines cut at Heroku's length,
    /// and a flood dropped and counted (L10) rather than ever waited for.
    /// `None` is foreman's way: long lines pass, and a slow log makes the
    /// dynos wait.
    pub output_limits: Option<crew_logs::OutputLimits>,
}

/// Requests a router has under way to one web dyno: the router counts them,
/// and the engine, stopping the dyno, waits for none. One per dyno, shared
/// by every router thread, so counting is an atomic add and no lookup.
#[derive(Debug, Default)]
pub struct RequestCount(std::sync::atomic::AtomicUsize);

impl RequestCount {
    /// Counts one request until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> RequestGuard {
        // SeqCst, as `get`: a router counts a request, then looks whether the
        // dyno is still in the rotation; the engine takes it out, then looks
        // at the count. One of the two sees the other.
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        RequestGuard(self.clone())
    }

    pub fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One request counted by a [`RequestCount`].
pub struct RequestGuard(Arc<RequestCount>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        (self.0)
            .0
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A web dyno as a router sees it: where it listens and whether it may get
/// requests.
#[derive(Debug, Clone)]
pub struct WebBackend {
    pub name: String,
    /// Where it listens: loopback for a dyno on this machine, the node's
    /// address for one a cluster placed elsewhere.
    pub addr: std::net::SocketAddr,
    pub state: DynoState,
    /// The network namespace `addr` is reached from, when it is not this
    /// process's own: a container's on the overlay network the dyno is on.
    pub namespace: Option<std::sync::Arc<crew_runtime::NetworkNamespace>>,
    /// The requests under way to it, counted by the router.
    pub requests: Arc<RequestCount>,
}

/// Backends are the same when they are the same dyno at the same place in
/// the same state; their counts of requests are not compared.
impl PartialEq for WebBackend {
    fn eq(&self, other: &WebBackend) -> bool {
        (&self.name, self.addr, self.state, &self.namespace)
            == (&other.name, other.addr, other.state, &other.namespace)
    }
}

impl Eq for WebBackend {}

/// The lifecycle states, named as Heroku names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynoState {
    Starting,
    Up,
    Crashed,
    Down,
    /// A one-off, or a may-exit type, that finished.
    Complete,
}

impl DynoState {
    pub fn as_str(self) -> &'static str {
        match self {
            DynoState::Starting => "starting",
            DynoState::Up => "up",
            DynoState::Crashed => "crashed",
            DynoState::Down => "down",
            DynoState::Complete => "complete",
        }
    }
}

/// One dyno as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynoInfo {
    pub name: String,
    pub process_type: String,
    pub number: u32,
    pub state: DynoState,
    /// When the dyno entered its state.
    pub since: SystemTime,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub command: String,
    /// Automatic restarts after crashes.
    pub restarts: u32,
    /// For a crashed dyno: how long until the next restart.
    pub restart_in: Option<Duration>,
    /// The size the dyno was started with, if it was given one.
    pub size: Option<String>,
    /// The machine it runs on, for clusters with more than one; `None` here.
    pub node: Option<String>,
    /// The release (its version) the dyno was started on, where the engine
    /// knows it: during a rolling deploy old and new dynos differ.
    pub release: Option<u32>,
}

impl DynoInfo {
    /// A one-off, `run.NUMBER`, that was just asked to start: what every engine
    /// answers `run` with.
    pub fn starting_one_off(
        number: u32,
        command: String,
        port: Option<u16>,
        size: Option<String>,
    ) -> DynoInfo {
        DynoInfo {
            name: format!("run.{number}"),
            process_type: "run".into(),
            number,
            state: DynoState::Starting,
            since: SystemTime::now(),
            pid: None,
            port,
            command,
            restarts: 0,
            restart_in: None,
            size,
            node: None,
            release: None,
        }
    }
}

/// A one-off dyno to start.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub command: String,
    /// Added to the release's environment.
    pub env: Vec<(String, String)>,
    pub size: Option<DynoSize>,
    /// [`DynoInput::Idle`] runs the dyno detached, its output in the log; a pipe
    /// or a terminal attaches it, and its output goes to the [`Attachment`].
    pub input: DynoInput,
}

/// The ends of an attached one-off, for the client it is attached to.
pub struct Attachment {
    /// The output and console once the dyno runs, or why it could not start.
    pub io: oneshot::Receiver<Result<(Output, Option<Console>), String>>,
    /// The app's exit status.
    pub exit: oneshot::Receiver<ExitStatus>,
    /// Dropped, it hangs the dyno up: SIGHUP, as when a terminal closes.
    pub hangup: Hangup,
}

/// Hangs an attached dyno up (SIGHUP) when dropped, however its engine does it.
pub struct Hangup(Option<Box<dyn FnOnce() + Send>>);

impl Hangup {
    pub fn new(hang_up: impl FnOnce() + Send + 'static) -> Hangup {
        Hangup(Some(Box::new(hang_up)))
    }

    /// Through a local dyno's task.
    pub(crate) fn local(control: mpsc::UnboundedSender<dyno::Control>) -> Hangup {
        Hangup::new(move || {
            let _ = control.send(dyno::Control::Signal(Signal::Hup));
        })
    }
}

impl Drop for Hangup {
    fn drop(&mut self) {
        if let Some(hang_up) = self.0.take() {
            hang_up();
        }
    }
}

/// Why a run ends; decides the exit code when no dyno decided it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    Signal(Signal),
    /// The terminal went away (`crew start | head -1`).
    OutputClosed,
}

impl ShutdownReason {
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            ShutdownReason::Signal(s) => 128 + s.number(),
            ShutdownReason::OutputClosed => 141,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Formation(#[from] FormationError),
    #[error("no such process: {0}")]
    UnknownDyno(String),
    #[error("port for {dyno}: {reason}")]
    Port { dyno: String, reason: String },
    #[error("the formation is shutting down")]
    ShuttingDown,
    #[error("no release to run yet: push one first")]
    NoRelease,
    /// A remote engine refused or failed, in its own words.
    #[error("{0}")]
    Engine(String),
}

pub(crate) enum Request {
    Ps(oneshot::Sender<Vec<DynoInfo>>),
    Scale(
        Vec<FormationChange>,
        oneshot::Sender<Result<Formation, EngineError>>,
    ),
    Formation(oneshot::Sender<Formation>),
    Restart(
        Option<String>,
        oneshot::Sender<Result<Vec<String>, EngineError>>,
    ),
    Stop(String, oneshot::Sender<Result<Vec<String>, EngineError>>),
    RegisterOneOff(
        ExternalOneOff,
        oneshot::Sender<Result<DynoInfo, EngineError>>,
    ),
    Deploy(Box<AppSpec>, Formation),
    Run(
        RunRequest,
        oneshot::Sender<Result<(DynoInfo, Option<Attachment>), EngineError>>,
    ),
    /// `run:inside`: a process in the running dyno named first.
    Inside(
        String,
        RunRequest,
        oneshot::Sender<Result<Attachment, EngineError>>,
    ),
    Shutdown(ShutdownReason),
    Kill,
}

/// A one-off process started elsewhere (`crew run` execs itself) that the
/// formation lists as `run.N` while it lives.
#[derive(Debug, Clone)]
pub struct ExternalOneOff {
    pub command: String,
    pub pid: u32,
}

/// Talks to a running engine. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    requests: mpsc::UnboundedSender<Request>,
    backends: tokio::sync::watch::Receiver<Arc<Vec<WebBackend>>>,
}

impl EngineHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(make(tx)).ok()?;
        rx.await.ok()
    }

    /// The web dynos a router may send requests to, kept current: `up` ones
    /// take traffic; `starting` and `crashed` ones tell the router which error to
    /// give when no dyno is up. Dynos being stopped are not listed.
    pub fn web_backends(&self) -> tokio::sync::watch::Receiver<Arc<Vec<WebBackend>>> {
        self.backends.clone()
    }

    pub async fn ps(&self) -> Vec<DynoInfo> {
        self.ask(Request::Ps).await.unwrap_or_default()
    }

    pub async fn formation(&self) -> Option<Formation> {
        self.ask(Request::Formation).await
    }

    /// Applies every change or none, then starts and stops dynos to match.
    pub async fn scale(&self, changes: Vec<FormationChange>) -> Result<Formation, EngineError> {
        self.ask(|tx| Request::Scale(changes, tx))
            .await
            .unwrap_or(Err(EngineError::ShuttingDown))
    }

    /// Restarts one dyno (`web.2`), one type (`web`) or, with `None`, all.
    pub async fn restart(&self, target: Option<String>) -> Result<Vec<String>, EngineError> {
        self.ask(|tx| Request::Restart(target, tx))
            .await
            .unwrap_or(Err(EngineError::ShuttingDown))
    }

    /// Stops one dyno or one type; they stay down until restarted.
    pub async fn stop(&self, target: String) -> Result<Vec<String>, EngineError> {
        self.ask(|tx| Request::Stop(target, tx))
            .await
            .unwrap_or(Err(EngineError::ShuttingDown))
    }

    /// Lists a running one-off as `run.N`; the reply carries its name.
    pub async fn register_one_off(&self, one_off: ExternalOneOff) -> Result<DynoInfo, EngineError> {
        self.ask(|tx| Request::RegisterOneOff(one_off, tx))
            .await
            .unwrap_or(Err(EngineError::ShuttingDown))
    }

    /// Starts a one-off dyno, `run.N`, with the release's environment plus the
    /// request's. Detached, its output goes to the log; attached, to the
    /// returned [`Attachment`]. Either way it ends as `complete` after the line
    /// `Process exited with status N`.
    pub async fn run(
        &self,
        request: RunRequest,
    ) -> Result<(DynoInfo, Option<Attachment>), EngineError> {
        self.ask(|tx| Request::Run(request, tx))
            .await
            .unwrap_or(Err(EngineError::ShuttingDown))
    }

    /// Starts `request` inside the running dyno `dyno` (`web.1`, `run.3`):
    /// in its namespaces and cgroup, as its user, with its environment plus
    /// the request's (see [`crew_runtime::DynoProcess::enter`]). Always
    /// attached: the input is a pipe or a terminal.
    pub async fn run_inside(
        &self,
        dyno: String,
        request: RunRequest,
    ) -> Result<Attachment, EngineError> {
        self.ask(|tx| Request::Inside(dyno, request, tx))
            .await
            .unwrap_or(Err(EngineError::ShuttingDown))
    }

    /// Switches to a new release: its dynos start and the old ones stop. The
    /// formation may name new types; types the release dropped go to zero.
    pub fn deploy(&self, app: AppSpec, formation: Formation) {
        let _ = self
            .requests
            .send(Request::Deploy(Box::new(app), formation));
    }

    /// Stops every dyno gracefully and ends the run.
    pub fn shutdown(&self, reason: ShutdownReason) {
        let _ = self.requests.send(Request::Shutdown(reason));
    }

    /// SIGKILLs every dyno now.
    pub fn kill(&self) {
        let _ = self.requests.send(Request::Kill);
    }
}

/// Starts the engine with `formation` and returns its handle and the task that
/// resolves when the run is over.
pub fn start<R: Runtime>(
    runtime: R,
    app: AppSpec,
    formation: Formation,
    config: EngineConfig,
    logs: mpsc::Sender<LogEvent>,
) -> (EngineHandle, JoinHandle<Outcome>) {
    let (requests, inbox) = mpsc::unbounded_channel();
    let (backends_tx, backends) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let engine = task::Engine::new(runtime, app, formation, config, logs, backends_tx);
    let task = tokio::spawn(engine.run(inbox));
    (EngineHandle { requests, backends }, task)
}
