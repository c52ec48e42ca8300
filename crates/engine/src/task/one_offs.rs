//! One-offs, `run.N`, of both kinds: those this engine starts (`crew run`
//! on a server, detached or attached) and those a `crew run` under
//! `crew start` runs itself and only registers; and `run:inside`, a process
//! in a dyno that already runs.
//!
//! Separate from the formation's slots: a one-off is never restarted, keeps
//! no place in the formation, and is numbered on its own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crew_runtime::{DynoInput, DynoSpec, Runtime};
use tokio::sync::{mpsc, oneshot};

use super::spawn::{command_line, dyno_env, exit_line};
use super::{Engine, Message, OneOffSlot, Run};
use crate::dyno::{self, AttachEnds, Control, Event, Launch};
use crate::{
    Attachment, DynoInfo, DynoState, EngineError, ExternalOneOff, Hangup, Ports, RunRequest,
    TypeSettings,
};

/// How often a one-off started elsewhere is checked for life.
const ONE_OFF_POLL: Duration = Duration::from_millis(250);

/// How a new one-off is numbered.
#[derive(Debug, Clone, Copy)]
enum Numbering {
    /// A registered `crew run` under `crew start`: one more than any given
    /// so far (`run.1`, `run.2` …).
    Counted,
    /// A server one-off, as Heroku numbers them (`run.4821`): four digits at
    /// random, never one this engine gave before; past 9000 one-offs, 10000
    /// and up, counted.
    FourDigits,
}

impl<R: Runtime> Engine<R> {
    pub(super) fn add_one_off(&mut self, one_off: ExternalOneOff) -> Result<DynoInfo, EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        let (number, name) = self.new_one_off(Numbering::Counted);
        let slot = OneOffSlot {
            name: name.clone(),
            release: self.app.release,
            command: one_off.command.clone(),
            size: None,
            pid: Some(one_off.pid),
            port: self.app.ports.base(),
            state: DynoState::Up,
            since: SystemTime::now(),
            run: None,
        };
        let info = slot.info(number);
        self.one_offs.insert(number, slot);
        self.log_lifecycle(
            &name,
            format!("Starting process with command `{}`", one_off.command),
        );
        self.log_lifecycle(&name, "State changed from starting to up");
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
        Ok(info)
    }

    /// A new one-off's number and its name, `run.N`: the one place either is
    /// picked.
    fn new_one_off(&mut self, numbering: Numbering) -> (u32, Arc<str>) {
        let number = match numbering {
            Numbering::Counted => self.count_up(1),
            Numbering::FourDigits => self.four_digit_number(),
        };
        (number, Arc::from(format!("run.{number}")))
    }

    /// The next number counted up, `floor` at least: one more than any
    /// counted so far.
    fn count_up(&mut self, floor: u32) -> u32 {
        let number = self.one_off_next.max(floor);
        self.one_off_next = number.saturating_add(1);
        number
    }

    /// See [`Numbering::FourDigits`].
    fn four_digit_number(&mut self) -> u32 {
        use std::hash::{BuildHasher, Hasher};
        const FIRST: u32 = 1000;
        const SPAN: u32 = 9000;
        let used = &self.one_off_numbers;
        if used.len() >= SPAN as usize {
            return self.count_up(FIRST + SPAN);
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
    pub(super) fn run_one_off(
        &mut self,
        request: RunRequest,
    ) -> Result<(DynoInfo, Option<Attachment>), EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        let (number, name) = self.new_one_off(Numbering::FourDigits);
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
        self.log_lifecycle(&name, format!("Starting process with command `{command}`"));
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
    pub(super) fn run_inside(
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

    pub(super) fn on_one_off_event(&mut self, number: u32, event: Event) {
        let Some(one_off) = self.one_offs.get_mut(&number) else {
            return;
        };
        let name = one_off.name.clone();
        match event {
            Event::Spawned { pid, .. } => {
                one_off.pid = pid;
                one_off.state = DynoState::Up;
                one_off.since = SystemTime::now();
                self.log_lifecycle(&name, "State changed from starting to up");
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
                self.log_lifecycle(&name, line);
                self.log_lifecycle(&name, format!("State changed from {from} to complete"));
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

    pub(super) fn on_one_off_exit(&mut self, number: u32) {
        if let Some(one_off) = self.one_offs.remove(&number) {
            self.log_lifecycle(&one_off.name, "State changed from up to complete");
        }
    }

    /// Ends the one-offs `target` names (`run.4821`, or `run` for all of
    /// them when no process type is called that): SIGTERM, then SIGKILL after
    /// the stop timeout; each ends `complete`. `None` when it names none.
    pub(super) fn stop_one_offs(&mut self, target: &str) -> Option<Vec<String>> {
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
            let settings = TypeSettings::default();
            let signal = settings.stop_signal;
            match (&one_off.run, one_off.pid) {
                (Some(run), _) => {
                    let _ = run.control.send(self.stop_control(&settings));
                }
                // A `crew run` that registered itself: its own process, not
                // a child of this engine; it reports its end by going away.
                (None, Some(pid)) => crew_runtime::os::signal_process(pid, signal),
                (None, None) => continue,
            }
            self.log_lifecycle(&name, format!("Stopping all processes with {signal}"));
        }
        Some(names)
    }
}
