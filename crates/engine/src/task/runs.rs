//! A slot's runs: launching one, what its dyno task reports, and what its
//! exit means.
//!
//! Two rules decide that (see the crate's opening comment): foreman's, where
//! the first exit nobody asked for ends the whole run, and the manifold's,
//! where a crashed dyno comes back on the `Backoff` schedule. Both live in
//! `on_exit` and `on_gone`.

use std::time::{Duration, SystemTime};

use crew_logs::LogEvent;
use crew_runtime::{DynoInput, DynoSpec, ExitStatus, Runtime, Signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::spawn::{command_line, dyno_env, exit_line};
use super::{AfterRun, Engine, Message, Run, Slot, SlotKey};
use crate::dyno::{Event, Launch};
use crate::{DynoState, Ports, RestartPolicy, ShutdownReason};

impl<R: Runtime> Engine<R> {
    pub(super) fn set_state(&mut self, key: SlotKey, state: DynoState) {
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
        self.log_lifecycle(&name, line);
    }

    /// Starts a new run of a slot.
    pub(super) fn launch(&mut self, key: SlotKey) {
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
            probe_port: slot.is_web().then_some(port),
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
        slot.after_run = AfterRun::Decide;
        slot.restart_at = None;
        let name = slot.name.clone();
        self.log_lifecycle(&name, format!("Starting process with command `{command}`"));
        self.spawn_dyno(launch, control_rx, move |event| Message::Dyno(id, event));
    }

    pub(super) fn slot_of_run(&self, id: u64) -> Option<SlotKey> {
        self.slots
            .iter()
            .find(|(_, s)| s.run.as_ref().is_some_and(|r| r.id == id))
            .map(|(k, _)| *k)
    }

    pub(super) fn on_event(&mut self, id: u64, event: Event) {
        let Some(key) = self.slot_of_run(id) else {
            return;
        };
        match event {
            Event::Spawned { pid, address } => {
                let is_web = self.slots.get(&key).is_some_and(Slot::is_web);
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

    /// The leader is gone (or never started). Decides what the exit means.
    pub(super) fn on_exit(&mut self, key: SlotKey, status: Option<ExitStatus>) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        slot.pid = None;
        let name = slot.name.clone();
        let after_run = slot.after_run;
        let settings = slot.spec.settings.clone();
        if let Some(status) = status {
            self.log_lifecycle(&name, exit_line(status.code()));
        }
        if after_run != AfterRun::Decide || self.shutdown.is_some() {
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
                slot.after_run = AfterRun::StayDown;
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
                slot.after_run = AfterRun::StayDown;
            }
        }
    }

    /// The run is over and nothing of it is left.
    pub(super) fn on_gone(&mut self, key: SlotKey) {
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
        match slot.after_run {
            AfterRun::Remove => {
                self.slots.remove(&key);
                self.launch_waiting();
            }
            _ if shutting_down => {
                if slot.state != DynoState::Crashed {
                    self.set_state(key, DynoState::Down);
                }
            }
            AfterRun::Restart => {
                slot.backoff.reset();
                self.launch(key);
            }
            AfterRun::StayDown => {
                if slot.state != DynoState::Complete && slot.state != DynoState::Crashed {
                    self.set_state(key, DynoState::Down);
                }
            }
            AfterRun::Decide => {
                let uptime = slot.up_at.map_or(Duration::ZERO, |t| t.elapsed());
                let delay = slot.backoff.crash(uptime);
                slot.restart_at = Some(Instant::now() + delay);
            }
        }
    }

    pub(super) fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<SlotKey> = self
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
}
