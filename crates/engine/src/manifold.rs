//! The engine task: the only owner of dyno state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crew_logs::LogEvent;
use crew_procfile::{Formation, FormationChange};
use crew_runtime::{DynoInput, DynoSpec, ExitStatus, Runtime, Signal};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::dyno::{self, AttachEnds, Control, Event, Launch};
use crate::restart::Backoff;
use crate::{
    AppSpec, Attachment, DynoInfo, DynoState, EngineConfig, EngineError, Hangup, OneOff, Outcome,
    Ports, ProcessTypeSpec, Request, RequestCount, RestartPolicy, RunRequest, ShutdownReason,
    WebBackend,
};

/// How often a one-off started elsewhere is checked for life.
const ONE_OFF_POLL: Duration = Duration::from_millis(250);

/// What happens to a slot once its current run is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
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
type Key = (u32, usize, u32);

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
    next: Next,
    backoff: Backoff,
    restarts: u32,
    restart_at: Option<Instant>,
    /// A web dyno on its way out: no new requests, its stop waits for the ones
    /// it has.
    draining: bool,
    /// The current run was told to stop: later asks (a deploy reconciles on
    /// every event) only change `next`, so one stop is one signal and one line.
    stopping: bool,
    /// A new release's dyno waiting for the old dyno of the same name to be
    /// gone before it starts, so that their lines never mix under one name.
    waiting: bool,
    /// The router's requests under way to it.
    requests: Arc<RequestCount>,
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

/// What a task tells the engine.
enum Message {
    Dyno(u64, Event),
    OneOffExited(u32),
    OneOff(u32, Event),
    /// A draining web dyno has no requests left: its stop can go out. Named
    /// by its run, since a restart may move the slot to a new generation
    /// while it drains.
    Drained(u64),
}

/// The longest a web dyno's stop waits for its requests to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
const DRAIN_POLL: Duration = Duration::from_millis(20);

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
    /// Keyed by (type index, number): Procfile order, then number.
    slots: BTreeMap<Key, Slot>,
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

    fn platform(&mut self, dyno: &Arc<str>, text: impl Into<String>) {
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
            Request::OneOff(one_off, reply) => {
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
        let one_offs = self.one_offs.iter().map(|(number, o)| DynoInfo {
            name: o.name.to_string(),
            process_type: "run".into(),
            number: *number,
            state: o.state,
            since: o.since,
            pid: o.pid,
            port: o.port,
            command: o.command.clone(),
            restarts: 0,
            restart_in: None,
            size: o.size.clone(),
            node: None,
            release: o.release,
        });
        formation.chain(one_offs).collect()
    }

    fn scale(&mut self, changes: &[FormationChange]) -> Result<Formation, EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        let mut formation = self.formation.clone();
        formation.apply(changes)?;
        // Ports are checked before anything changes, so a bad scale changes nothing.
        if let Some(base) = self.app.ports.base() {
            for (index, spec) in self.app.types.iter().enumerate() {
                let quantity = formation.get(&spec.name).unwrap_or(0);
                if quantity > 0 {
                    crew_procfile::port_for(base, index, quantity).map_err(|e| {
                        EngineError::Port {
                            dyno: format!("{}.{quantity}", spec.name),
                            reason: e.to_string(),
                        }
                    })?;
                }
            }
        }
        // A type scaled to zero forgets its crash history.
        self.formation = formation;
        self.reconcile();
        Ok(self.formation.clone())
    }

    /// Starts missing slots and stops surplus ones, highest numbers first.
    fn reconcile(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let wanted: Vec<u32> = self
            .app
            .types
            .iter()
            .map(|t| self.formation.get(&t.name).unwrap_or(0))
            .collect();
        let generation = self.generation;
        // New slots first: whether old web dynos may go depends on the new
        // ones, which must exist (and be starting) before that is asked.
        for (type_index, quantity) in wanted.iter().enumerate() {
            for number in 1..=*quantity {
                let key = (generation, type_index, number);
                match self.slots.get_mut(&key) {
                    // A slot still being retired by an earlier scale-down comes back.
                    Some(slot) if slot.next == Next::Remove => slot.next = Next::Restart,
                    Some(_) => {}
                    None => self.add_slot(type_index, number),
                }
            }
        }
        let handoff = self.web_handoff_ready();
        let surplus: Vec<Key> = self
            .slots
            .iter()
            .rev()
            .filter(|((g, i, n), s)| {
                if *g != generation {
                    // Old web dynos serve until the new ones are up.
                    s.spec.name != "web" || handoff
                } else {
                    wanted.get(*i).is_none_or(|q| n > q)
                }
            })
            .map(|(k, _)| *k)
            .collect();
        for key in surplus {
            self.retire(key);
        }
    }

    fn stop_control(&self, spec: &ProcessTypeSpec) -> Control {
        let settings = &spec.settings;
        Control::Stop {
            signal: settings.stop_signal,
            timeout: settings.stop_timeout.unwrap_or(self.config.stop_timeout),
        }
    }

    /// Asks a slot's run to stop; `next` says what happens after. A web dyno
    /// first leaves the router and finishes its requests.
    fn stop_slot(&mut self, key: Key, next: Next) {
        let drain = self.config.drain_requests;
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        slot.next = next;
        slot.restart_at = None;
        let Some(run_id) = slot.run.as_ref().map(|r| r.id) else {
            return;
        };
        if slot.draining || slot.stopping {
            return;
        }
        match (drain, slot.port, slot.spec.name == "web") {
            (true, Some(_), true) => {
                slot.draining = true;
                let messages = self.messages_tx.clone();
                let requests = slot.requests.clone();
                // Out of the rotation before its count is looked at: a router
                // counts a request, then checks the dyno is still in it.
                self.publish_backends();
                tokio::spawn(async move {
                    let deadline = Instant::now() + DRAIN_LIMIT;
                    // The router may still be picking this dyno for a request
                    // that started before it saw the change.
                    tokio::time::sleep(DRAIN_POLL).await;
                    while requests.get() > 0 && Instant::now() < deadline {
                        tokio::time::sleep(DRAIN_POLL).await;
                    }
                    let _ = messages.send(Message::Drained(run_id));
                });
            }
            _ => self.send_stop(key),
        }
    }

    fn drained(&mut self, run_id: u64) {
        if let Some(key) = self.slot_of_run(run_id) {
            self.send_stop(key);
        }
    }

    fn send_stop(&mut self, key: Key) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if slot.stopping {
            return;
        }
        slot.stopping = slot.run.is_some();
        let Some(slot) = self.slots.get(&key) else {
            return;
        };
        let control = self.stop_control(&slot.spec);
        let name = slot.name.clone();
        if let Some(run) = &slot.run {
            let said = match &control {
                Control::Stop { signal, .. } => Some(*signal),
                _ => None,
            };
            let _ = run.control.send(control);
            if let Some(signal) = said {
                self.platform(&name, format!("Stopping all processes with {signal}"));
            }
        }
    }

    /// What a router may use, published whenever it changes. A draining dyno
    /// takes no requests: one that restarts shows as starting, so requests wait
    /// for it; one that goes for good, and a stopped one, are left out.
    fn publish_backends(&mut self) {
        let backends: Vec<WebBackend> = self
            .slots
            .values()
            .filter(|s| s.spec.name == "web" && s.state != DynoState::Down)
            .filter_map(|s| {
                let leaving = s.next == Next::Remove || (s.draining && s.next == Next::StayDown);
                if leaving {
                    return None;
                }
                let state = if s.draining {
                    DynoState::Starting
                } else {
                    s.state
                };
                Some(WebBackend {
                    name: s.name.to_string(),
                    // A crashed dyno between runs has no port; only `up` ones are
                    // ever connected to, and they always have one.
                    addr: (s.address, s.port.unwrap_or(0)).into(),
                    state,
                    namespace: None,
                    requests: s.requests.clone(),
                })
            })
            .collect();
        self.backends.send_if_modified(|current| {
            if **current == backends {
                false
            } else {
                *current = Arc::new(backends);
                true
            }
        });
    }

    /// Whether an older release's web dynos can go: the current one's are all
    /// past starting, so a request always finds an `up` dyno during a deploy.
    /// Whether the old release's web dynos may go: the current release's web
    /// dynos that are wanted (none, after `scale web=0`) are all past starting.
    fn web_handoff_ready(&self) -> bool {
        let wanted = self.formation.get("web").unwrap_or(0);
        self.slots
            .iter()
            .filter(|((g, _, n), s)| {
                *g == self.generation
                    && s.spec.name == "web"
                    && *n <= wanted
                    && s.next != Next::Remove
            })
            .all(|(_, s)| s.state != DynoState::Starting)
    }

    /// Stops a slot for good and drops it once its run is over.
    fn retire(&mut self, key: Key) {
        match self.slots.get(&key).map(|s| s.run.is_some()) {
            Some(true) => self.stop_slot(key, Next::Remove),
            Some(false) => {
                self.slots.remove(&key);
            }
            None => {}
        }
    }

    fn add_slot(&mut self, type_index: usize, number: u32) {
        let Some(spec) = self.types.get(type_index).cloned() else {
            return;
        };
        let name: Arc<str> = Arc::from(format!("{}.{number}", spec.name));
        let port = match self.app.ports.base() {
            Some(base) => match crew_procfile::port_for(base, type_index, number) {
                Ok(port) => Some(port),
                Err(e) => {
                    self.pending
                        .push(LogEvent::system(format!("cannot start {name}: {e}")));
                    return;
                }
            },
            None => None,
        };
        let key = (self.generation, type_index, number);
        self.slots.insert(
            key,
            Slot {
                spec,
                release: self.app.release,
                number,
                name,
                port,
                address: std::net::Ipv4Addr::LOCALHOST.into(),
                state: DynoState::Down,
                since: SystemTime::now(),
                up_at: None,
                pid: None,
                run: None,
                next: Next::Decide,
                backoff: Backoff::default(),
                restarts: 0,
                restart_at: None,
                draining: false,
                stopping: false,
                waiting: false,
                requests: Arc::default(),
            },
        );
        if self.older_twin_running(key) {
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.waiting = true;
            }
        } else {
            self.launch(key);
        }
    }

    /// Whether an older release's dyno of the same name still runs, for a
    /// dyno that is not web: as on Heroku, the old one stops before the new
    /// one starts, so `crew logs --ps worker.2` shows one run after the other.
    /// Web dynos overlap instead, so that requests always find one up.
    fn older_twin_running(&self, key: Key) -> bool {
        let Some(slot) = self.slots.get(&key) else {
            return false;
        };
        slot.spec.name != "web"
            && self
                .slots
                .iter()
                .any(|((g, _, _), s)| *g < key.0 && s.name == slot.name && s.run.is_some())
    }

    /// Starts the dynos that waited for an older twin now gone.
    fn launch_waiting(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let ready: Vec<Key> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                s.waiting && s.run.is_none() && matches!(s.next, Next::Decide | Next::Restart)
            })
            .map(|(k, _)| *k)
            .filter(|k| !self.older_twin_running(*k))
            .collect();
        for key in ready {
            self.launch(key);
        }
    }

    fn set_state(&mut self, key: Key, state: DynoState) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if slot.state == state {
            return;
        }
        let line = format!(
            "State changed from {} to {}",
            slot.state.as_str(),
            state.as_str()
        );
        slot.state = state;
        slot.since = SystemTime::now();
        // Kept through the crash that follows: the backoff needs the uptime.
        if state == DynoState::Up {
            slot.up_at = Some(Instant::now());
        }
        let name = slot.name.clone();
        self.platform(&name, line);
    }

    /// Starts a new run of a slot.
    fn launch(&mut self, key: Key) {
        let id = self.next_run;
        self.next_run += 1;
        self.set_state(key, DynoState::Starting);
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if let Ports::Pool(pool) = &self.app.ports
            && slot.port.is_none()
        {
            slot.port = pool.take();
        }
        let Some(port) = slot.port else {
            let name = slot.name.clone();
            self.pending.push(LogEvent::system(format!(
                "cannot start {name}: no free port left in the pool"
            )));
            self.set_state(key, DynoState::Crashed);
            return;
        };
        let spec = slot.spec.clone();
        let env = dyno_env(&self.app.env, Vec::new(), &slot.name, Some(port));
        let launch = Launch {
            spec: DynoSpec {
                name: slot.name.to_string(),
                command: command_line(self.app.command_prefix.as_deref(), &spec.command),
                env,
                cwd: self.app.cwd.clone(),
                size: spec.size.clone(),
                input: DynoInput::Idle,
            },
            probe_port: (spec.name == "web").then_some(port),
            boot_timeout: spec
                .settings
                .boot_timeout
                .unwrap_or(self.config.boot_timeout),
            stop_timeout: spec
                .settings
                .stop_timeout
                .unwrap_or(self.config.stop_timeout),
            output_limits: self.config.output_limits,
            attach: None,
        };
        let command = spec.command.clone();
        let (control, control_rx) = mpsc::unbounded_channel();
        slot.run = Some(Run { id, control });
        slot.pid = None;
        slot.up_at = None;
        slot.draining = false;
        slot.stopping = false;
        slot.waiting = false;
        slot.next = Next::Decide;
        slot.restart_at = None;
        let name = slot.name.clone();
        self.platform(&name, format!("Starting process with command `{command}`"));
        self.spawn_dyno(launch, control_rx, move |event| Message::Dyno(id, event));
    }

    /// Starts a dyno task whose reports reach the engine as `message(event)`.
    fn spawn_dyno(
        &self,
        launch: Launch,
        control: mpsc::UnboundedReceiver<Control>,
        message: impl Fn(Event) -> Message + Send + 'static,
    ) {
        let messages = self.messages_tx.clone();
        let report = move |event| {
            let _ = messages.send(message(event));
        };
        tokio::spawn(dyno::run(
            self.runtime.clone(),
            launch,
            report,
            self.logs.clone(),
            control,
        ));
    }

    fn slot_of_run(&self, id: u64) -> Option<Key> {
        self.slots
            .iter()
            .find(|(_, s)| s.run.as_ref().is_some_and(|r| r.id == id))
            .map(|(k, _)| *k)
    }

    fn on_event(&mut self, id: u64, event: Event) {
        let Some(key) = self.slot_of_run(id) else {
            return;
        };
        match event {
            Event::Spawned { pid, address } => {
                let is_web = self.is_web(key);
                if let Some(slot) = self.slots.get_mut(&key) {
                    slot.pid = pid;
                    slot.address = address;
                }
                if !is_web {
                    self.set_state(key, DynoState::Up);
                }
            }
            Event::Up => {
                if self.slots.get(&key).map(|s| s.state) == Some(DynoState::Starting) {
                    self.set_state(key, DynoState::Up);
                }
            }
            Event::SpawnFailed => self.on_exit(key, None),
            Event::Exited { status } => self.on_exit(key, Some(status)),
            Event::Gone => self.on_gone(key),
        }
        if self.slots.keys().any(|(g, _, _)| *g != self.generation) {
            self.reconcile();
        }
    }

    fn is_web(&self, key: Key) -> bool {
        self.slots.get(&key).is_some_and(|s| s.spec.name == "web")
    }

    /// The leader is gone (or never started). Decides what the exit means.
    fn on_exit(&mut self, key: Key, status: Option<ExitStatus>) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        slot.pid = None;
        let name = slot.name.clone();
        let next = slot.next;
        let settings = slot.spec.settings.clone();
        if let Some(status) = status {
            self.platform(&name, exit_line(status.code()));
        }
        if next != Next::Decide || self.shutdown.is_some() {
            return;
        }
        let success = status.is_some_and(ExitStatus::success);
        let policy = settings.restart.unwrap_or(if self.config.keep_alive {
            RestartPolicy::Always
        } else {
            RestartPolicy::Never
        });
        let restart = match policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        };
        // A may-exit type exiting 0 is done, whatever the restart policy.
        if settings.may_exit && success {
            self.set_state(key, DynoState::Complete);
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.next = Next::StayDown;
            }
        } else if restart {
            self.set_state(key, DynoState::Crashed);
        } else if !self.config.keep_alive {
            // foreman's rule: the first process to go takes the run with it.
            self.set_state(key, DynoState::Crashed);
            self.exit_code
                .get_or_insert(status.map_or(1, ExitStatus::code));
            self.begin_shutdown(ShutdownReason::Signal(Signal::Term));
        } else {
            self.set_state(key, DynoState::Crashed);
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.next = Next::StayDown;
            }
        }
    }

    /// The run is over and nothing of it is left.
    fn on_gone(&mut self, key: Key) {
        let shutting_down = self.shutdown.is_some();
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        slot.run = None;
        slot.pid = None;
        if let Ports::Pool(pool) = &self.app.ports
            && let Some(port) = slot.port.take()
        {
            pool.give_back(port);
        }
        match slot.next {
            Next::Remove => {
                self.slots.remove(&key);
                self.launch_waiting();
            }
            _ if shutting_down => {
                if slot.state != DynoState::Crashed {
                    self.set_state(key, DynoState::Down);
                }
            }
            Next::Restart => {
                slot.backoff.reset();
                self.launch(key);
            }
            Next::StayDown => {
                if slot.state != DynoState::Complete && slot.state != DynoState::Crashed {
                    self.set_state(key, DynoState::Down);
                }
            }
            Next::Decide => {
                let uptime = slot.up_at.map_or(Duration::ZERO, |t| t.elapsed());
                let delay = slot.backoff.crash(uptime);
                slot.restart_at = Some(Instant::now() + delay);
            }
        }
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<Key> = self
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
    fn targets(&self, target: Option<&str>) -> Result<Vec<Key>, EngineError> {
        let keys: Vec<Key> = self
            .slots
            .iter()
            .filter(|(_, s)| s.next != Next::Remove)
            .filter(|(_, s)| match target {
                None => true,
                Some(t) => &*s.name == t || s.spec.name == t,
            })
            .map(|(k, _)| *k)
            .collect();
        match target {
            Some(t) if keys.is_empty() => Err(EngineError::UnknownDyno(t.to_string())),
            _ => Ok(keys),
        }
    }

    fn restart(&mut self, target: Option<&str>) -> Result<Vec<String>, EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        // A one-off is not restarted, as on Heroku: restarting it ends it.
        if let Some(stopped) = target.and_then(|t| self.stop_one_offs(t)) {
            return Ok(stopped);
        }
        let keys = self.targets(target)?;
        let mut names = Vec::new();
        let mut rolling = Vec::new();
        for key in keys {
            let rolls = self.rolls(key);
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            names.push(slot.name.to_string());
            slot.backoff.reset();
            let name = slot.name.clone();
            let running = slot.run.is_some();
            // An older release's web dyno is being replaced already, and
            // serves until its replacement is up.
            let replaced = key.0 != self.generation && slot.spec.name == "web";
            self.platform(&name, "Restarting");
            if replaced {
                continue;
            } else if rolls {
                rolling.push(key);
            } else if running {
                self.stop_slot(key, Next::Restart);
            } else {
                self.launch(key);
            }
        }
        if !rolling.is_empty() {
            self.roll(&rolling);
        }
        Ok(names)
    }

    /// Whether a restart replaces this dyno as a deploy does, a new run beside
    /// the old one that serves until the new one is up, rather than stopping it
    /// first: an `up` web dyno of the current release on a server, whose
    /// dynos drain their requests and take their ports from a pool (two runs
    /// of `web.1` cannot share the fixed port `crew start` gives it).
    fn rolls(&self, key: Key) -> bool {
        self.config.drain_requests
            && matches!(self.app.ports, Ports::Pool(_))
            && key.0 == self.generation
            && self.slots.get(&key).is_some_and(|s| {
                s.spec.name == "web"
                    && s.state == DynoState::Up
                    && s.run.is_some()
                    && s.next == Next::Decide
                    && !s.draining
                    && !s.stopping
            })
    }

    /// Restarts the web dynos `keys` the way a deploy replaces them: every
    /// other slot of the current generation moves, as it is, to a new one, so
    /// that reconcile starts a new run for each of `keys` there and retires
    /// the old ones once the new ones are past starting. Without this a
    /// restart of the whole app, or of `web`, left no dyno to route to until
    /// the new ones were up.
    fn roll(&mut self, keys: &[Key]) {
        let old = self.generation;
        self.generation += 1;
        let moving: Vec<Key> = self
            .slots
            .keys()
            .filter(|k| k.0 == old && !keys.contains(k))
            .copied()
            .collect();
        for key in moving {
            if let Some(slot) = self.slots.remove(&key) {
                self.slots.insert((self.generation, key.1, key.2), slot);
            }
        }
        self.reconcile();
    }

    fn stop(&mut self, target: &str) -> Result<Vec<String>, EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        if let Some(stopped) = self.stop_one_offs(target) {
            return Ok(stopped);
        }
        let keys = self.targets(Some(target))?;
        let mut names = Vec::new();
        for key in keys {
            let Some(slot) = self.slots.get(&key) else {
                continue;
            };
            names.push(slot.name.to_string());
            if slot.run.is_some() {
                self.stop_slot(key, Next::StayDown);
            } else {
                if let Some(slot) = self.slots.get_mut(&key) {
                    slot.restart_at = None;
                    slot.next = Next::StayDown;
                }
                self.set_state(key, DynoState::Down);
            }
        }
        Ok(names)
    }

    /// Ends the one-offs `target` names (`run.4821`, or `run` for all of
    /// them when no process type is called that): SIGTERM, then SIGKILL after
    /// the stop timeout; each ends `complete`. `None` when it names none.
    fn stop_one_offs(&mut self, target: &str) -> Option<Vec<String>> {
        let all = target == "run" && !self.slots.values().any(|s| s.spec.name == "run");
        let chosen: Vec<u32> = self
            .one_offs
            .iter()
            .filter(|(_, o)| all || &*o.name == target)
            .map(|(n, _)| *n)
            .collect();
        if chosen.is_empty() {
            return None;
        }
        let mut names = Vec::new();
        for number in chosen {
            let Some(one_off) = self.one_offs.get(&number) else {
                continue;
            };
            let name = one_off.name.clone();
            names.push(name.to_string());
            if one_off.state == DynoState::Complete {
                continue;
            }
            let signal = Signal::Term;
            match (&one_off.run, one_off.pid) {
                (Some(run), _) => {
                    let _ = run.control.send(Control::Stop {
                        signal,
                        timeout: self.config.stop_timeout,
                    });
                }
                // A `crew run` that registered itself: its own process, not
                // a child of this engine; it reports its end by going away.
                (None, Some(pid)) => crew_runtime::os::signal_process(pid, signal),
                (None, None) => continue,
            }
            self.platform(&name, format!("Stopping all processes with {signal}"));
        }
        Some(names)
    }

    fn deploy(&mut self, app: AppSpec, formation: Formation) {
        if self.shutdown.is_some() {
            return;
        }
        let same_release = app.release.is_some()
            && app.release == self.app.release
            && app.env == self.app.env
            && app.cwd == self.app.cwd
            && app.command_prefix == self.app.command_prefix;
        let old = self.generation;
        self.generation += 1;
        self.types = app.types.iter().cloned().map(Arc::new).collect();
        self.app = app;
        self.formation = formation;
        if same_release {
            self.carry_over(old);
        }
        // The new generation starts; every slot of the old one is retired.
        self.reconcile();
    }

    /// Moves the running dynos of generation `old` whose type is the same in
    /// the new one into it, so that they keep running: applying the same
    /// release with one type resized restarts that type only.
    fn carry_over(&mut self, old: u32) {
        let keys: Vec<Key> = self
            .slots
            .iter()
            .filter(|((g, _, _), s)| {
                *g == old && s.next == Next::Decide && !s.draining && !s.stopping && !s.waiting
            })
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(slot) = self.slots.get(&key) else {
                continue;
            };
            let Some((index, spec)) = self
                .types
                .iter()
                .enumerate()
                .find(|(_, t)| t.name == slot.spec.name)
            else {
                continue;
            };
            if **spec != *slot.spec {
                continue;
            }
            let spec = spec.clone();
            if let Some(mut slot) = self.slots.remove(&key) {
                slot.spec = spec;
                self.slots.insert((self.generation, index, key.2), slot);
            }
        }
    }

    fn add_one_off(&mut self, one_off: OneOff) -> Result<DynoInfo, EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        let number = self.next_local_one_off_number();
        let name: Arc<str> = Arc::from(format!("run.{number}"));
        let since = SystemTime::now();
        self.one_offs.insert(
            number,
            OneOffSlot {
                name: name.clone(),
                release: self.app.release,
                command: one_off.command.clone(),
                size: None,
                pid: Some(one_off.pid),
                port: self.app.ports.base(),
                state: DynoState::Up,
                since,
                run: None,
            },
        );
        self.platform(
            &name,
            format!("Starting process with command `{}`", one_off.command),
        );
        self.platform(&name, "State changed from starting to up");
        let messages = self.messages_tx.clone();
        let pid = one_off.pid;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ONE_OFF_POLL);
            loop {
                tick.tick().await;
                if !crew_runtime::os::process_alive(pid) {
                    let _ = messages.send(Message::OneOffExited(number));
                    break;
                }
            }
        });
        Ok(DynoInfo {
            name: name.to_string(),
            process_type: "run".into(),
            number,
            state: DynoState::Up,
            since,
            pid: Some(one_off.pid),
            port: self.app.ports.base(),
            command: one_off.command,
            restarts: 0,
            restart_in: None,
            size: None,
            node: None,
            release: self.app.release,
        })
    }

    /// A registered `crew run`'s number under `crew start`: one more than
    /// any given so far (`run.1`, `run.2` …), never one given before.
    fn next_local_one_off_number(&mut self) -> u32 {
        let number = self.one_off_next;
        self.one_off_next = number.saturating_add(1);
        number
    }

    /// A server one-off's number as Heroku gives them (`run.4821`): four digits at
    /// random, never one this engine gave before; past 9000 one-offs, 10000
    /// and up, counted.
    fn next_one_off_number(&mut self) -> u32 {
        use std::hash::{BuildHasher, Hasher};
        const FIRST: u32 = 1000;
        const SPAN: u32 = 9000;
        let used = &self.one_off_numbers;
        if used.len() >= SPAN as usize {
            let number = self.one_off_next.max(FIRST + SPAN);
            self.one_off_next = number.saturating_add(1);
            return number;
        }
        let number = if used.len() < (SPAN / 2) as usize {
            // Random draws while at most half are taken: a free one within a
            // few tries.
            std::iter::repeat_with(|| {
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_usize(used.len());
                FIRST + (hasher.finish() % u64::from(SPAN)) as u32
            })
            .find(|n| !used.contains(n))
        } else {
            (FIRST..FIRST + SPAN).find(|n| !used.contains(n))
        };
        // Fewer than SPAN are used, so the scan finds one.
        let number = number.unwrap_or(FIRST + SPAN);
        self.one_off_numbers.insert(number);
        number
    }

    /// Starts a one-off dyno from the current release, `run.N`. Detached, its
    /// output goes to the log like any dyno's; it ends as `complete`.
    fn run_one_off(
        &mut self,
        request: RunRequest,
    ) -> Result<(DynoInfo, Option<Attachment>), EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        let number = self.next_one_off_number();
        let name: Arc<str> = Arc::from(format!("run.{number}"));
        let port = match &self.app.ports {
            Ports::Formula { base } => Some(*base),
            Ports::Pool(pool) => pool.take(),
        };
        let env = dyno_env(&self.app.env, request.env, &name, port);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (attach, attachment) = if request.input == DynoInput::Idle {
            (None, None)
        } else {
            let (io, io_rx) = oneshot::channel();
            let (exit, exit_rx) = oneshot::channel();
            (
                Some(AttachEnds { io, exit }),
                Some(Attachment {
                    io: io_rx,
                    exit: exit_rx,
                    hangup: Hangup::local(control.clone()),
                }),
            )
        };
        let size = request.size.as_ref().map(|s| s.name.clone());
        let launch = Launch {
            spec: DynoSpec {
                name: name.to_string(),
                command: command_line(self.app.command_prefix.as_deref(), &request.command),
                env,
                cwd: self.app.cwd.clone(),
                size: request.size,
                input: request.input,
            },
            probe_port: None,
            boot_timeout: self.config.boot_timeout,
            stop_timeout: self.config.stop_timeout,
            output_limits: self.config.output_limits,
            attach,
        };
        let since = SystemTime::now();
        let command = request.command;
        self.one_offs.insert(
            number,
            OneOffSlot {
                name: name.clone(),
                release: self.app.release,
                command: command.clone(),
                size: size.clone(),
                pid: None,
                port,
                state: DynoState::Starting,
                since,
                run: Some(Run { id: 0, control }),
            },
        );
        self.platform(&name, format!("Starting process with command `{command}`"));
        self.spawn_dyno(launch, control_rx, move |event| {
            Message::OneOff(number, event)
        });
        let info = DynoInfo {
            since,
            ..DynoInfo::starting_one_off(number, command, port, size)
        };
        Ok((info, attachment))
    }

    /// `run:inside`: hands the request to the running dyno's task, which
    /// answers it (see [`dyno::Inside`]).
    fn run_inside(
        &mut self,
        dyno: &str,
        mut request: RunRequest,
        reply: oneshot::Sender<Result<Attachment, EngineError>>,
    ) {
        let running = |state: DynoState, pid: Option<u32>| {
            state == DynoState::Up || (state == DynoState::Starting && pid.is_some())
        };
        let formation = self
            .slots
            .values()
            .filter(|s| &*s.name == dyno && !s.stopping && running(s.state, s.pid))
            .find_map(|s| s.run.as_ref());
        let one_off = self
            .one_offs
            .values()
            .filter(|o| &*o.name == dyno && running(o.state, o.pid))
            .find_map(|o| o.run.as_ref());
        let Some(run) = formation.or(one_off) else {
            let known = self.slots.values().any(|s| &*s.name == dyno)
                || self.one_offs.values().any(|o| &*o.name == dyno);
            let _ = reply.send(Err(if known {
                EngineError::Engine(format!("{dyno} is not running"))
            } else {
                EngineError::UnknownDyno(dyno.to_string())
            }));
            return;
        };
        request.command = command_line(self.app.command_prefix.as_deref(), &request.command);
        let inside = dyno::Inside { request, reply };
        if let Err(refused) = run.control.send(Control::Enter(Box::new(inside)))
            && let Control::Enter(inside) = refused.0
        {
            let _ = inside
                .reply
                .send(Err(EngineError::Engine(format!("{dyno} is not running"))));
        }
    }

    fn on_one_off_event(&mut self, number: u32, event: Event) {
        let Some(one_off) = self.one_offs.get_mut(&number) else {
            return;
        };
        let name = one_off.name.clone();
        match event {
            Event::Spawned { pid, .. } => {
                one_off.pid = pid;
                one_off.state = DynoState::Up;
                one_off.since = SystemTime::now();
                self.platform(&name, "State changed from starting to up");
            }
            Event::Up => {}
            Event::SpawnFailed | Event::Exited { .. } => {
                // A dyno that could not start has said why already; its
                // 127 is the shell's word for it, not a command not found.
                let line = match event {
                    Event::Exited { status } => exit_line(status.code()),
                    _ => String::from("Process exited with status 127"),
                };
                let from = one_off.state.as_str();
                one_off.pid = None;
                one_off.state = DynoState::Complete;
                one_off.since = SystemTime::now();
                self.platform(&name, line);
                self.platform(&name, format!("State changed from {from} to complete"));
            }
            Event::Gone => {
                if let Some(one_off) = self.one_offs.remove(&number)
                    && let (Ports::Pool(pool), Some(port)) = (&self.app.ports, one_off.port)
                {
                    pool.give_back(port);
                }
            }
        }
    }

    fn on_one_off_exit(&mut self, number: u32) {
        if let Some(one_off) = self.one_offs.remove(&number) {
            self.platform(&one_off.name, "State changed from up to complete");
        }
    }

    fn begin_shutdown(&mut self, reason: ShutdownReason) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(reason);
        self.exit_code.get_or_insert(reason.exit_code());
        self.pending
            .push(LogEvent::system("sending SIGTERM to all processes"));
        for one_off in self.one_offs.values() {
            if let Some(run) = &one_off.run {
                let _ = run.control.send(Control::Stop {
                    signal: Signal::Term,
                    timeout: self.config.stop_timeout,
                });
            }
        }
        let keys: Vec<Key> = self.slots.keys().copied().collect();
        for key in keys {
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.restart_at = None;
                let control = Control::Stop {
                    signal: slot.spec.settings.stop_signal,
                    timeout: slot
                        .spec
                        .settings
                        .stop_timeout
                        .unwrap_or(self.config.stop_timeout),
                };
                if let Some(run) = &slot.run {
                    let _ = run.control.send(control);
                }
            }
        }
    }

    fn kill_all(&mut self) {
        self.pending
            .push(LogEvent::system("sending SIGKILL to all processes"));
        if self.shutdown.is_none() {
            self.shutdown = Some(ShutdownReason::Signal(Signal::Int));
            self.exit_code.get_or_insert(130);
        }
        for one_off in self.one_offs.values() {
            if let Some(run) = &one_off.run {
                let _ = run.control.send(Control::Kill);
            }
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

/// A dyno's environment: the release's, then `extra`, then PORT, DYNO and PS,
/// which are crew's to set.
fn dyno_env(
    base: &[(String, String)],
    extra: Vec<(String, String)>,
    name: &str,
    port: Option<u16>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| {
            !matches!(k.as_str(), "PORT" | "DYNO" | "PS") && !extra.iter().any(|(e, _)| e == k)
        })
        .cloned()
        .collect();
    env.extend(extra);
    if let Some(port) = port {
        env.push(("PORT".into(), port.to_string()));
    }
    env.push(("DYNO".into(), name.to_string()));
    env.push(("PS".into(), name.to_string()));
    env
}

/// Heroku's `Process exited with status N`, and what the shell's own codes
/// mean, so that a dyno that could not start says why.
fn exit_line(code: i32) -> String {
    let why = match code {
        127 => " (the command was not found)",
        126 => " (the command could not be executed)",
        _ => "",
    };
    format!("Process exited with status {code}{why}")
}

/// What `sh -c` runs for a command: the release's prefix, then the command,
/// `exec`ed when it is a simple one.
fn command_line(prefix: Option<&str>, command: &str) -> String {
    let command = crew_procfile::shell::exec_form(command);
    match prefix {
        Some(prefix) => format!("{prefix}{command}"),
        None => command,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
