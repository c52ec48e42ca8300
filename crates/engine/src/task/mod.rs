//! The engine task: the one owner of every dyno's state.
//!
//! Requests come from `EngineHandle`, reports from dyno tasks; `run` handles
//! one message at a time, so no lock guards a slot. A slot is one numbered
//! dyno of one release generation (`SlotKey`); a run is one life of it.
//!
//! Invariants:
//! - Only this task mutates `slots` and `one_offs`; dyno tasks, the drain
//!   waits and the one-off watchers only report, as `Message`s.
//! - A slot's `run` is `Some` from `launch` until its `Gone` event.
//! - Outside shutdown, `reconcile` retires an old generation's web slots only
//!   once `web_handoff_ready()`: the new generation's are past starting.
//! - Outside shutdown, with `drain_requests`, a running web dyno is out of
//!   the router's rotation before its stop signal goes out (`stop_slot`).
//! - Every stop this task sends a run is built by `stop_control`: the
//!   type's signal, then SIGKILL after its timeout.
//! - Lifecycle lines wait in `pending`, flushed in order after each request,
//!   report or restart timer.
//!
//! Where the rest is: `slots` (the formation's slots; scale, restart, stop),
//! `runs` (launching a run and what its exit means), `deploy` (generations),
//! `drain` (stopping a slot; the router's list), `one_offs`, `shutdown`,
//! `spawn` (what slot dynos and one-offs share in starting). Each adds an
//! `impl Engine` block and imports from here (and `spawn`); this file
//! imports none of them, so the modules stay acyclic.
//!
//! Not here: spawning and the child process (`dyno::run`, through the
//! `Runtime`), backoff timing (`restart`), the server's port pool (`ports`).

mod deploy;
mod drain;
mod one_offs;
mod runs;
mod shutdown;
mod slots;
mod spawn;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crew_logs::LogEvent;
use crew_procfile::Formation;
use crew_runtime::Runtime;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dyno::{Control, Event};
use crate::restart::Backoff;
use crate::{
    AppSpec, DynoInfo, DynoState, EngineConfig, Outcome, ProcessTypeSpec, Request, RequestCount,
    ShutdownReason, WebBackend,
};

/// The process type that gets HTTP requests, as on Heroku.
const WEB: &str = "web";

/// What happens to a slot once its current run is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterRun {
    /// Nobody asked it to stop: the restart policy decides.
    Decide,
    Restart,
    StayDown,
    Remove,
}

/// A run of a slot that is still going.
struct Run {
    id: u64,
    control: mpsc::UnboundedSender<Control>,
}

/// Which slot: release generation, then Procfile order, then number. A deploy
/// bumps the generation, so old and new dynos of the same name can overlap.
type SlotKey = (u32, usize, u32);

/// One numbered place in the formation (`web.2`) and its current run, if any.
struct Slot {
    /// The type as the slot's own release defined it.
    spec: Arc<ProcessTypeSpec>,
    /// That release's version, where the app has one.
    release: Option<u32>,
    number: u32,
    name: Arc<str>,
    /// Fixed by the formula locally; taken from the pool for each run on a server.
    port: Option<u16>,
    /// Where the current run listens: loopback, or its own network's address.
    address: std::net::IpAddr,
    state: DynoState,
    since: SystemTime,
    up_at: Option<Instant>,
    pid: Option<u32>,
    run: Option<Run>,
    after_run: AfterRun,
    backoff: Backoff,
    restarts: u32,
    restart_at: Option<Instant>,
    /// A web dyno on its way out: no new requests, its stop waits for the ones
    /// it has.
    draining: bool,
    /// The current run was told to stop: later asks (a deploy reconciles on
    /// every event) only change `after_run`, so one stop is one signal and one line.
    stopping: bool,
    /// A new release's dyno waiting for the old dyno of the same name to be
    /// gone before it starts, so that their lines never mix under one name.
    waiting: bool,
    /// The router's requests under way to it.
    requests: Arc<RequestCount>,
}

impl Slot {
    /// Web dynos are the ones a router sends requests to: they are probed on
    /// PORT, drain before they stop, and overlap across a deploy.
    fn is_web(&self) -> bool {
        self.spec.name == WEB
    }
}

/// A one-off: either started here (`run` is its task) or a `crew run` that
/// registered its own pid.
struct OneOffSlot {
    name: Arc<str>,
    /// The release it started on.
    release: Option<u32>,
    command: String,
    size: Option<String>,
    pid: Option<u32>,
    port: Option<u16>,
    state: DynoState,
    since: SystemTime,
    run: Option<Run>,
}

impl OneOffSlot {
    /// Its row in `ps`.
    fn info(&self, number: u32) -> DynoInfo {
        DynoInfo {
            name: self.name.to_string(),
            process_type: "run".into(),
            number,
            state: self.state,
            since: self.since,
            pid: self.pid,
            port: self.port,
            command: self.command.clone(),
            restarts: 0,
            restart_in: None,
            size: self.size.clone(),
            node: None,
            release: self.release,
        }
    }
}

/// What a task tells the engine.
enum Message {
    Dyno(u64, Event),
    OneOffExited(u32),
    /// An event of a one-off the engine runs itself (`run.N`), as `Dyno`
    /// is one of a slot's. An `ExternalOneOff` only reports `OneOffExited`.
    OneOff(u32, Event),
    /// A draining web dyno has no requests left: its stop can go out. Named
    /// by its run, since a restart may move the slot to a new generation
    /// while it drains.
    Drained(u64),
}

pub(crate) struct Engine<R: Runtime> {
    runtime: Arc<R>,
    app: AppSpec,
    /// The current release's types, shared with the slots made from them.
    types: Vec<Arc<ProcessTypeSpec>>,
    generation: u32,
    formation: Formation,
    config: EngineConfig,
    logs: mpsc::Sender<LogEvent>,
    /// Lines produced while handling a message, sent once it is handled.
    pending: Vec<LogEvent>,
    /// In `SlotKey` order: generation, then Procfile order, then number.
    slots: BTreeMap<SlotKey, Slot>,
    one_offs: BTreeMap<u32, OneOffSlot>,
    /// The four-digit one-off numbers handed out so far (at most 9000): never
    /// given again, so that `logs --ps run.4821` shows one run only.
    one_off_numbers: std::collections::HashSet<u32>,
    /// The next number counted up: a registered `crew run`'s, or a server
    /// one-off's once every four-digit one is used.
    one_off_next: u32,
    messages_tx: mpsc::UnboundedSender<Message>,
    messages: mpsc::UnboundedReceiver<Message>,
    next_run: u64,
    shutdown: Option<ShutdownReason>,
    exit_code: Option<i32>,
    backends: tokio::sync::watch::Sender<Arc<Vec<WebBackend>>>,
}

impl<R: Runtime> Engine<R> {
    pub(crate) fn new(
        runtime: R,
        app: AppSpec,
        formation: Formation,
        config: EngineConfig,
        logs: mpsc::Sender<LogEvent>,
        backends: tokio::sync::watch::Sender<Arc<Vec<WebBackend>>>,
    ) -> Engine<R> {
        let (messages_tx, messages) = mpsc::unbounded_channel();
        Engine {
            runtime: Arc::new(runtime),
            types: app.types.iter().cloned().map(Arc::new).collect(),
            generation: 0,
            app,
            formation,
            config,
            logs,
            pending: Vec::new(),
            slots: BTreeMap::new(),
            one_offs: BTreeMap::new(),
            one_off_numbers: std::collections::HashSet::new(),
            one_off_next: 1,
            messages_tx,
            messages,
            next_run: 0,
            shutdown: None,
            exit_code: None,
            backends,
        }
    }

    pub(crate) async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Request>) -> Outcome {
        self.reconcile();
        self.flush().await;
        let mut inbox_open = true;
        loop {
            if self.shutdown.is_some()
                && self.slots.values().all(|s| s.run.is_none())
                && self.one_offs.values().all(|o| o.run.is_none())
            {
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
                    Some(r) => self.handle(r),
                    None => inbox_open = false,
                },
                Some(message) = self.messages.recv() => match message {
                    Message::Dyno(id, event) => self.on_event(id, event),
                    Message::OneOffExited(number) => self.on_one_off_exit(number),
                    Message::OneOff(number, event) => self.on_one_off_event(number, event),
                    Message::Drained(run) => self.drained(run),
                },
                () = sleep_until(next_restart), if next_restart.is_some() => self.restart_due(),
            }
            self.publish_backends();
            self.flush().await;
        }
        self.publish_backends();
        Outcome {
            exit_code: self.exit_code.unwrap_or(0),
        }
    }

    async fn flush(&mut self) {
        for event in std::mem::take(&mut self.pending) {
            let _ = self.logs.send(event).await;
        }
    }

    fn log_lifecycle(&mut self, dyno: &Arc<str>, text: impl Into<String>) {
        self.pending.push(LogEvent::platform(dyno, text));
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Ps(reply) => {
                let _ = reply.send(self.ps());
            }
            Request::Formation(reply) => {
                let _ = reply.send(self.formation.clone());
            }
            Request::Scale(changes, reply) => {
                let _ = reply.send(self.scale(&changes));
            }
            Request::Restart(target, reply) => {
                let _ = reply.send(self.restart(target.as_deref()));
            }
            Request::Stop(target, reply) => {
                let _ = reply.send(self.stop(&target));
            }
            Request::RegisterOneOff(one_off, reply) => {
                let _ = reply.send(self.add_one_off(one_off));
            }
            Request::Run(request, reply) => {
                let _ = reply.send(self.run_one_off(request));
            }
            Request::Inside(dyno, request, reply) => self.run_inside(&dyno, request, reply),
            Request::Deploy(app, formation) => self.deploy(*app, formation),
            Request::Shutdown(reason) => self.begin_shutdown(reason),
            Request::Kill => self.kill_all(),
        }
    }

    fn ps(&self) -> Vec<DynoInfo> {
        let now = Instant::now();
        let formation = self.slots.values().map(|s| {
            let spec = &s.spec;
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
                size: spec.size.as_ref().map(|s| s.name.clone()),
                node: None,
                release: s.release,
            }
        });
        let one_offs = self.one_offs.iter().map(|(number, o)| o.info(*number));
        formation.chain(one_offs).collect()
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
