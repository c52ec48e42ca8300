//! The manifold: it turns a desired formation into running dynos and keeps them so.
//!
//! One task, the engine, owns every dyno's state. Everything else talks to it
//! through an [`EngineHandle`], whose requests travel over a channel: scale,
//! restart, stop, ps and shut down. Each dyno run has a task of its own
//! ([`dyno`]) that spawns through the [`Runtime`], pumps output into the log
//! channel, probes a web dyno's PORT, carries out stops, and reports back what
//! happened. No other code touches a child process.
//!
//! Two rules decide what an exit means:
//! - foreman's (the default locally): the first exit nobody asked for stops the
//!   whole run, and its code becomes the run's exit code;
//! - the manifold's (`keep_alive`): a crashed dyno is restarted on the
//!   [`restart::Backoff`] schedule, forever.

mod dyno;
pub mod restart;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crew_logs::LogEvent;
use crew_procfile::{Formation, FormationChange, FormationError};
use crew_runtime::{DynoSpec, Runtime, Signal};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::dyno::{Control, Event, Launch};
use crate::restart::Backoff;

/// A process type as the engine runs it.
#[derive(Debug, Clone)]
pub struct ProcessTypeSpec {
    pub name: String,
    pub command: String,
}

/// What to run: the process types in Procfile order, and what every dyno shares.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub types: Vec<ProcessTypeSpec>,
    /// The environment every dyno starts from; crew adds PORT, DYNO and PS.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub port_base: u16,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// From the stop signal to SIGKILL.
    pub stop_timeout: Duration,
    /// The manifold's rule instead of foreman's.
    pub keep_alive: bool,
    /// How long a web dyno may take to accept connections on PORT.
    pub boot_timeout: Duration,
}

/// The lifecycle states, named as Heroku names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynoState {
    Starting,
    Up,
    Crashed,
    Down,
}

impl DynoState {
    pub fn as_str(self) -> &'static str {
        match self {
            DynoState::Starting => "starting",
            DynoState::Up => "up",
            DynoState::Crashed => "crashed",
            DynoState::Down => "down",
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
    pub port: u16,
    pub command: String,
    /// Automatic restarts after crashes.
    pub restarts: u32,
    /// For a crashed dyno: how long until the next restart.
    pub restart_in: Option<Duration>,
}

/// Why a run ends; decides the exit code when no dyno decided it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    Signal(Signal),
    /// The terminal went away (`crew start | head -1`).
    OutputClosed,
}

impl ShutdownReason {
    fn exit_code(self) -> i32 {
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
}

enum Request {
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
    Shutdown(ShutdownReason),
    Kill,
}

/// Talks to a running engine. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    requests: mpsc::UnboundedSender<Request>,
}

impl EngineHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(make(tx)).ok()?;
        rx.await.ok()
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
    let (events_tx, events) = mpsc::unbounded_channel();
    let engine = Engine {
        runtime: Arc::new(runtime),
        app,
        formation,
        config,
        logs,
        slots: BTreeMap::new(),
        events_tx,
        next_run: 0,
        shutdown: None,
        exit_code: None,
    };
    let task = tokio::spawn(engine.run(inbox, events));
    (EngineHandle { requests }, task)
}

/// What happens to a slot once its current run is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// It crashed or was never asked to stop: crash handling decides.
    Crash,
    Restart,
    StayDown,
    Remove,
}

/// A run of a slot that is still going.
struct Run {
    id: u64,
    control: mpsc::UnboundedSender<Control>,
    /// The leader has exited; the task is still cleaning up.
    exited: bool,
}

/// One numbered place in the formation (`web.2`) and its current run, if any.
struct Slot {
    type_index: usize,
    number: u32,
    name: Arc<str>,
    port: u16,
    state: DynoState,
    since: SystemTime,
    up_at: Option<Instant>,
    pid: Option<u32>,
    run: Option<Run>,
    next: Next,
    backoff: Backoff,
    restarts: u32,
    restart_at: Option<Instant>,
}

struct Engine<R: Runtime> {
    runtime: Arc<R>,
    app: AppSpec,
    formation: Formation,
    config: EngineConfig,
    logs: mpsc::Sender<LogEvent>,
    /// Keyed by (type index, number): Procfile order, then number.
    slots: BTreeMap<(usize, u32), Slot>,
    events_tx: mpsc::UnboundedSender<(u64, Event)>,
    next_run: u64,
    shutdown: Option<ShutdownReason>,
    exit_code: Option<i32>,
}

impl<R: Runtime> Engine<R> {
    async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Request>,
        mut events: mpsc::UnboundedReceiver<(u64, Event)>,
    ) -> Outcome {
        self.reconcile().await;
        let mut inbox_open = true;
        loop {
            if self.shutdown.is_some() && self.slots.values().all(|s| s.run.is_none()) {
                break;
            }
            let next_restart = self
                .slots
                .values()
                .filter_map(|s| s.restart_at)
                .min()
                .filter(|_| self.shutdown.is_none());
            tokio::select! {
                request = inbox.recv(), if inbox_open => match request {
                    Some(r) => self.handle(r).await,
                    None => inbox_open = false,
                },
                Some((id, event)) = events.recv() => self.on_event(id, event).await,
                () = sleep_until(next_restart), if next_restart.is_some() => self.restart_due().await,
            }
        }
        Outcome {
            exit_code: self.exit_code.unwrap_or(0),
        }
    }

    async fn log(&self, event: LogEvent) {
        let _ = self.logs.send(event).await;
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Ps(reply) => {
                let _ = reply.send(self.ps());
            }
            Request::Formation(reply) => {
                let _ = reply.send(self.formation.clone());
            }
            Request::Scale(changes, reply) => {
                let result = self.scale(&changes).await;
                let _ = reply.send(result);
            }
            Request::Restart(target, reply) => {
                let result = self.restart(target.as_deref()).await;
                let _ = reply.send(result);
            }
            Request::Stop(target, reply) => {
                let result = self.stop(&target);
                let _ = reply.send(result);
            }
            Request::Shutdown(reason) => self.begin_shutdown(reason).await,
            Request::Kill => {
                self.log(LogEvent::system("sending SIGKILL to all processes"))
                    .await;
                if self.shutdown.is_none() {
                    self.shutdown = Some(ShutdownReason::Signal(Signal::Int));
                    self.exit_code.get_or_insert(130);
                }
                for slot in self.slots.values_mut() {
                    slot.next = Next::Remove;
                    slot.restart_at = None;
                    if let Some(run) = &slot.run {
                        let _ = run.control.send(Control::Kill);
                    }
                }
            }
        }
    }

    fn ps(&self) -> Vec<DynoInfo> {
        let now = Instant::now();
        self.slots
            .values()
            .map(|s| {
                let spec = &self.app.types[s.type_index];
                DynoInfo {
                    name: s.name.to_string(),
                    process_type: spec.name.clone(),
                    number: s.number,
                    state: s.state,
                    since: s.since,
                    pid: s.pid,
                    port: s.port,
                    command: spec.command.clone(),
                    restarts: s.restarts,
                    restart_in: s.restart_at.map(|at| at.saturating_duration_since(now)),
                }
            })
            .collect()
    }

    async fn scale(&mut self, changes: &[FormationChange]) -> Result<Formation, EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        let mut formation = self.formation.clone();
        formation.apply(changes)?;
        self.formation = formation;
        self.reconcile().await;
        Ok(self.formation.clone())
    }

    /// Starts missing slots and stops surplus ones, highest numbers first.
    async fn reconcile(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let wanted: Vec<(usize, u32)> = self
            .app
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| (i, self.formation.get(&t.name).unwrap_or(0)))
            .collect();
        let surplus: Vec<(usize, u32)> = self
            .slots
            .keys()
            .rev()
            .filter(|(i, n)| wanted.get(*i).is_none_or(|(_, q)| n > q))
            .copied()
            .collect();
        for key in surplus {
            self.retire(key);
        }
        for (type_index, quantity) in wanted {
            for number in 1..=quantity {
                let key = (type_index, number);
                match self.slots.get_mut(&key) {
                    // A slot being retired by an earlier scale-down comes back.
                    Some(slot) if slot.next == Next::Remove => slot.next = Next::Restart,
                    Some(_) => {}
                    None => {
                        if let Err(e) = self.add_slot(type_index, number).await {
                            self.log(LogEvent::system(e.to_string())).await;
                        }
                    }
                }
            }
        }
    }

    /// Stops a slot for good and drops it once its run is over.
    fn retire(&mut self, key: (usize, u32)) {
        let timeout = self.config.stop_timeout;
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        match &slot.run {
            Some(run) => {
                slot.next = Next::Remove;
                let _ = run.control.send(Control::Stop {
                    signal: Signal::Term,
                    timeout,
                });
            }
            None => {
                self.slots.remove(&key);
            }
        }
    }

    async fn add_slot(&mut self, type_index: usize, number: u32) -> Result<(), EngineError> {
        let type_name = &self.app.types[type_index].name;
        let name: Arc<str> = Arc::from(format!("{type_name}.{number}"));
        let port =
            crew_procfile::port_for(self.app.port_base, type_index, number).map_err(|e| {
                EngineError::Port {
                    dyno: name.to_string(),
                    reason: e.to_string(),
                }
            })?;
        self.slots.insert(
            (type_index, number),
            Slot {
                type_index,
                number,
                name,
                port,
                state: DynoState::Starting,
                since: SystemTime::now(),
                up_at: None,
                pid: None,
                run: None,
                next: Next::Crash,
                backoff: Backoff::default(),
                restarts: 0,
                restart_at: None,
            },
        );
        self.launch((type_index, number));
        Ok(())
    }

    /// Starts a new run of a slot.
    fn launch(&mut self, key: (usize, u32)) {
        let id = self.next_run;
        self.next_run += 1;
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let spec = &self.app.types[slot.type_index];
        let mut env = self.app.env.clone();
        env.retain(|(k, _)| !matches!(k.as_str(), "PORT" | "DYNO" | "PS"));
        env.push(("PORT".into(), slot.port.to_string()));
        env.push(("DYNO".into(), slot.name.to_string()));
        env.push(("PS".into(), slot.name.to_string()));
        let launch = Launch {
            id,
            spec: DynoSpec {
                name: slot.name.to_string(),
                command: spec.command.clone(),
                env,
                cwd: self.app.cwd.clone(),
            },
            probe_port: (spec.name == "web").then_some(slot.port),
            boot_timeout: self.config.boot_timeout,
            stop_timeout: self.config.stop_timeout,
        };
        let (control, control_rx) = mpsc::unbounded_channel();
        slot.run = Some(Run {
            id,
            control,
            exited: false,
        });
        slot.state = DynoState::Starting;
        slot.since = SystemTime::now();
        slot.up_at = None;
        slot.pid = None;
        slot.next = Next::Crash;
        slot.restart_at = None;
        tokio::spawn(dyno::run(
            self.runtime.clone(),
            launch,
            self.events_tx.clone(),
            self.logs.clone(),
            control_rx,
        ));
    }

    fn slot_of_run(&mut self, id: u64) -> Option<(usize, u32)> {
        self.slots
            .iter()
            .find(|(_, s)| s.run.as_ref().is_some_and(|r| r.id == id))
            .map(|(k, _)| *k)
    }

    async fn on_event(&mut self, id: u64, event: Event) {
        let Some(key) = self.slot_of_run(id) else {
            return;
        };
        let keep_alive = self.config.keep_alive;
        let shutting_down = self.shutdown.is_some();
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        match event {
            Event::Spawned { pid } => {
                slot.pid = pid;
                if slot.type_index_is_web(&self.app) {
                    return;
                }
                slot.state = DynoState::Up;
                slot.since = SystemTime::now();
                slot.up_at = Some(Instant::now());
            }
            Event::Up => {
                if slot.state == DynoState::Starting {
                    slot.state = DynoState::Up;
                    slot.since = SystemTime::now();
                    slot.up_at = Some(Instant::now());
                }
            }
            Event::SpawnFailed | Event::Exited { .. } => {
                if let Some(run) = slot.run.as_mut() {
                    run.exited = true;
                }
                let status = match event {
                    Event::Exited { status } => Some(status),
                    _ => None,
                };
                let expected = slot.next != Next::Crash || shutting_down;
                slot.pid = None;
                if expected {
                    return;
                }
                slot.state = DynoState::Crashed;
                slot.since = SystemTime::now();
                if !keep_alive {
                    // foreman's rule: the first process to go takes the run with it.
                    let code = status.map_or(1, |s| s.code());
                    self.exit_code.get_or_insert(code);
                    self.begin_shutdown(ShutdownReason::Signal(Signal::Term))
                        .await;
                }
            }
            Event::Gone => {
                slot.run = None;
                slot.pid = None;
                match slot.next {
                    Next::Remove => {
                        self.slots.remove(&key);
                    }
                    _ if shutting_down => {
                        slot.state = DynoState::Down;
                        slot.since = SystemTime::now();
                    }
                    Next::Restart => {
                        slot.backoff.reset();
                        self.launch(key);
                    }
                    Next::StayDown => {
                        slot.state = DynoState::Down;
                        slot.since = SystemTime::now();
                    }
                    Next::Crash => {
                        let uptime = slot.up_at.map_or(Duration::ZERO, |t| t.elapsed());
                        let delay = slot.backoff.crash(uptime);
                        slot.restart_at = Some(Instant::now() + delay);
                    }
                }
            }
        }
    }

    async fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(usize, u32)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.restart_at.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.restarts += 1;
            }
            self.launch(key);
        }
    }

    /// The slots a target names: `web.2`, `web`, or all of them.
    fn targets(&self, target: Option<&str>) -> Result<Vec<(usize, u32)>, EngineError> {
        let keys: Vec<(usize, u32)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.next != Next::Remove)
            .filter(|(_, s)| match target {
                None => true,
                Some(t) => &*s.name == t || self.app.types[s.type_index].name == t,
            })
            .map(|(k, _)| *k)
            .collect();
        match target {
            Some(t) if keys.is_empty() => Err(EngineError::UnknownDyno(t.to_string())),
            _ => Ok(keys),
        }
    }

    async fn restart(&mut self, target: Option<&str>) -> Result<Vec<String>, EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        let keys = self.targets(target)?;
        let timeout = self.config.stop_timeout;
        let mut names = Vec::new();
        for key in keys {
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            names.push(slot.name.to_string());
            slot.backoff.reset();
            match &slot.run {
                Some(run) => {
                    slot.next = Next::Restart;
                    let _ = run.control.send(Control::Stop {
                        signal: Signal::Term,
                        timeout,
                    });
                }
                None => self.launch(key),
            }
        }
        Ok(names)
    }

    fn stop(&mut self, target: &str) -> Result<Vec<String>, EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        let keys = self.targets(Some(target))?;
        let timeout = self.config.stop_timeout;
        let mut names = Vec::new();
        for key in keys {
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            names.push(slot.name.to_string());
            slot.restart_at = None;
            match &slot.run {
                Some(run) => {
                    slot.next = Next::StayDown;
                    let _ = run.control.send(Control::Stop {
                        signal: Signal::Term,
                        timeout,
                    });
                }
                None => {
                    slot.state = DynoState::Down;
                    slot.since = SystemTime::now();
                }
            }
        }
        Ok(names)
    }

    async fn begin_shutdown(&mut self, reason: ShutdownReason) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(reason);
        self.exit_code.get_or_insert(reason.exit_code());
        self.log(LogEvent::system("sending SIGTERM to all processes"))
            .await;
        let timeout = self.config.stop_timeout;
        for slot in self.slots.values_mut() {
            slot.restart_at = None;
            if let Some(run) = &slot.run {
                let _ = run.control.send(Control::Stop {
                    signal: Signal::Term,
                    timeout,
                });
            }
        }
    }
}

impl Slot {
    fn type_index_is_web(&self, app: &AppSpec) -> bool {
        app.types[self.type_index].name == "web"
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
