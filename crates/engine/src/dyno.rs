//! One dyno's task: it owns the process from spawn to the last member of its group.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crew_logs::{LineFramer, LogEvent, OutputGate, OutputLimits};
use crew_runtime::{
    Console, DynoProcess, DynoSpec, ExitStatus, Output, ProcessGroup, Runtime, Signal,
};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A partial line is shown after this much quiet, so prompts appear.
const PARTIAL_LINE_IDLE: Duration = Duration::from_millis(100);
/// How long output may trail the leader's exit before the exit is reported. Some
/// processes left in the group can hold the pipe open for good.
const OUTPUT_DRAIN: Duration = Duration::from_millis(200);
/// How long to wait for SIGKILL to take effect before giving up on a group.
const KILL_GRACE: Duration = Duration::from_secs(2);
const GROUP_POLL: Duration = Duration::from_millis(20);

/// What the engine tells a dyno task.
#[derive(Debug)]
pub(crate) enum Control {
    /// Send `signal` to the whole dyno, then SIGKILL what is left after `timeout`.
    Stop { signal: Signal, timeout: Duration },
    /// SIGKILL the whole dyno now.
    Kill,
    /// Send `signal` to the whole dyno; nothing more.
    Signal(Signal),
    /// `run:inside`: start a process inside the running dyno.
    Enter(Box<Inside>),
}

/// A `run:inside` request on its way to the dyno's task, which answers it:
/// only that task holds the process to enter.
pub(crate) struct Inside {
    pub request: crate::RunRequest,
    pub reply: oneshot::Sender<Result<crate::Attachment, crate::EngineError>>,
}

impl std::fmt::Debug for Inside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inside")
            .field("command", &self.request.command)
            .finish()
    }
}

impl Inside {
    fn refuse(self, dyno: &str) {
        let _ = self.reply.send(Err(crate::EngineError::Engine(format!(
            "{dyno} is not running"
        ))));
    }
}

/// Starts `inside` in `process`, with the dyno's environment (the request's
/// variables replacing the dyno's of the same name), and answers it.
fn enter<P: DynoProcess>(process: &P, dyno: &DynoSpec, inside: Inside) {
    let Inside { request, reply } = inside;
    let mut env = dyno.env.clone();
    for (key, value) in request.env {
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => env.push((key, value)),
        }
    }
    let spec = DynoSpec {
        name: dyno.name.clone(),
        command: request.command,
        env,
        cwd: dyno.cwd.clone(),
        size: None,
        input: request.input,
    };
    let result = process.enter(&spec).map(|entered| {
        let (io, io_rx) = oneshot::channel();
        let _ = io.send(Ok((entered.output, entered.console)));
        let (exit, exit_rx) = oneshot::channel();
        let status = entered.exit;
        tokio::spawn(async move {
            let _ = exit.send(status.await);
        });
        crate::Attachment {
            io: io_rx,
            exit: exit_rx,
            hangup: crate::Hangup::new(entered.hangup),
        }
    });
    let _ = reply.send(result.map_err(|e| crate::EngineError::Engine(e.to_string())));
}

/// What a dyno task tells the engine.
#[derive(Debug)]
pub(crate) enum Event {
    Spawned {
        pid: Option<u32>,
        /// Where its listening sockets are reached (see
        /// [`DynoProcess::address`]).
        address: std::net::IpAddr,
    },
    SpawnFailed,
    /// The web dyno's PORT accepts connections.
    Up,
    /// The leader exited.
    Exited {
        status: ExitStatus,
    },
    /// Nothing of the dyno is left; the task is over.
    Gone,
}

pub(crate) struct Launch {
    pub spec: DynoSpec,
    /// For web dynos: the port whose first accepted connection makes it `up`.
    pub probe_port: Option<u16>,
    pub boot_timeout: Duration,
    pub stop_timeout: Duration,
    /// The server's bounds on the dyno's output; `None` locally.
    pub output_limits: Option<OutputLimits>,
    /// For an attached one-off: where its output and console go instead of the
    /// log, and where its exit status goes.
    pub attach: Option<AttachEnds>,
}

pub(crate) struct AttachEnds {
    pub io: oneshot::Sender<Result<(Output, Option<Console>), String>>,
    pub exit: oneshot::Sender<ExitStatus>,
}

pub(crate) async fn run<R: Runtime>(
    runtime: Arc<R>,
    launch: Launch,
    report: impl Fn(Event) + Send + 'static,
    logs: mpsc::Sender<LogEvent>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let name: Arc<str> = Arc::from(launch.spec.name.as_str());
    let (attach_io, attach_exit) = match launch.attach {
        Some(ends) => (Some(ends.io), Some(ends.exit)),
        None => (None, None),
    };
    let mut process = match runtime.spawn(&launch.spec) {
        Ok(p) => p,
        Err(e) => {
            if let Some(io) = attach_io {
                let _ = io.send(Err(e.to_string()));
            }
            let _ = logs.send(LogEvent::status(&name, e.to_string())).await;
            report(Event::SpawnFailed);
            report(Event::Gone);
            return;
        }
    };
    let group = process.group();
    let pid = process.pid();
    if let Some(pid) = pid {
        let _ = logs
            .send(LogEvent::status(&name, format!("started with pid {pid}")))
            .await;
    }
    let address = process.address();
    report(Event::Spawned { pid, address });
    let mut pump = match attach_io {
        Some(io) => {
            if let Some(output) = process.take_output() {
                let _ = io.send(Ok((output, process.take_console())));
            }
            None
        }
        None => process.take_output().map(|output| {
            tokio::spawn(pump(
                output,
                name.clone(),
                logs.clone(),
                launch.output_limits,
            ))
        }),
    };

    let mut stopping = StopTimer::default();
    let mut probe = launch.probe_port.map(|port| Probe {
        addr: (address, port).into(),
        deadline: Instant::now() + launch.boot_timeout,
        next: Instant::now(),
        interval: Duration::from_millis(10),
    });
    let status = loop {
        tokio::select! {
            status = process.wait() => break status,
            command = control.recv() => match command {
                Some(Control::Enter(inside)) => enter(&process, &launch.spec, *inside),
                other => stopping.apply(other, &group),
            },
            () = stopping.expired(), if stopping.armed() => stopping.escalate(&group),
            () = tokio::time::sleep_until(probe.as_ref().map_or_else(Instant::now, |p| p.next)), if probe.is_some() => {
                if let Some(p) = probe.as_mut() {
                    match p.check(launch.boot_timeout).await {
                        ProbeResult::Up => {
                            report(Event::Up);
                            probe = None;
                        }
                        ProbeResult::TimedOut(text) => {
                            let _ = logs.send(LogEvent::status(&name, text)).await;
                            group.signal(Signal::Kill);
                            probe = None;
                        }
                        ProbeResult::NotYet => {}
                    }
                }
            }
        }
    };
    // The leader is gone. Give its last output a moment, so the exit message comes
    // after it.
    if let Some(handle) = pump.as_mut()
        && tokio::time::timeout(OUTPUT_DRAIN, handle).await.is_ok()
    {
        pump = None;
    }
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            let _ = logs.send(LogEvent::status(&name, e.to_string())).await;
            ExitStatus::Code(-1)
        }
    };
    let _ = logs
        .send(LogEvent::status(&name, exit_message(status)))
        .await;
    if let Some(exit) = attach_exit {
        let _ = exit.send(status);
    }
    report(Event::Exited { status });

    // Whatever the leader left in its group goes too: gracefully unless a stop
    // already escalated.
    if group.alive() && !stopping.armed() && !stopping.killed {
        stopping.apply(
            Some(Control::Stop {
                signal: Signal::Term,
                timeout: launch.stop_timeout,
            }),
            &group,
        );
    }
    let mut poll = tokio::time::interval(GROUP_POLL);
    let mut kill_deadline: Option<Instant> = None;
    while group.alive() {
        tokio::select! {
            _ = poll.tick() => {}
            command = control.recv() => stopping.apply(command, &group),
            () = stopping.expired(), if stopping.armed() => stopping.escalate(&group),
        }
        if stopping.killed {
            let deadline = *kill_deadline.get_or_insert_with(|| Instant::now() + KILL_GRACE);
            if Instant::now() >= deadline {
                break;
            }
        }
    }
    if let Some(handle) = pump {
        let abort = handle.abort_handle();
        if tokio::time::timeout(OUTPUT_DRAIN, handle).await.is_err() {
            abort.abort();
        }
    }
    drop(process);
    report(Event::Gone);
}

fn exit_message(status: ExitStatus) -> String {
    match status.signal_name() {
        Some(name) => format!("terminated by {name}"),
        None => format!("exited with code {}", status.code()),
    }
}

/// The stop protocol's clock: a graceful signal, then SIGKILL at the deadline.
#[derive(Default)]
struct StopTimer {
    deadline: Option<Instant>,
    killed: bool,
}

impl StopTimer {
    fn armed(&self) -> bool {
        self.deadline.is_some()
    }

    async fn expired(&self) {
        match self.deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    }

    fn apply<G: ProcessGroup>(&mut self, command: Option<Control>, group: &G) {
        match command {
            Some(Control::Stop { signal, timeout }) => {
                group.signal(signal);
                if self.deadline.is_none() && !self.killed {
                    self.deadline = Some(Instant::now() + timeout);
                }
            }
            Some(Control::Signal(signal)) => group.signal(signal),
            Some(Control::Enter(inside)) => inside.refuse("the dyno"),
            // A closed channel means the engine is gone: nobody is left to wait for.
            Some(Control::Kill) | None => self.escalate(group),
        }
    }

    fn escalate<G: ProcessGroup>(&mut self, group: &G) {
        group.signal(Signal::Kill);
        self.deadline = None;
        self.killed = true;
    }
}

struct Probe {
    /// The dyno's own address and PORT.
    addr: std::net::SocketAddr,
    deadline: Instant,
    next: Instant,
    interval: Duration,
}

enum ProbeResult {
    Up,
    NotYet,
    TimedOut(String),
}

impl Probe {
    async fn check(&mut self, boot_timeout: Duration) -> ProbeResult {
        let connect = tokio::net::TcpStream::connect(self.addr);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), connect).await {
            return ProbeResult::Up;
        }
        if Instant::now() >= self.deadline {
            return ProbeResult::TimedOut(format!(
                "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within {} seconds of launch",
                boot_timeout.as_secs()
            ));
        }
        // Quick at first, since most servers bind within milliseconds, then
        // gentler for slow boots.
        self.next = Instant::now() + self.interval;
        self.interval = (self.interval * 2).min(Duration::from_millis(250));
        ProbeResult::NotYet
    }
}

/// Reads a dyno's output until EOF and sends it on as lines. With `limits` (a
/// server), it never waits for the log: a line is held up to the limit's length
/// at most, and output the log cannot take is dropped and counted.
async fn pump(
    mut output: Output,
    dyno: Arc<str>,
    logs: mpsc::Sender<LogEvent>,
    limits: Option<OutputLimits>,
) {
    let mut framer = match limits {
        Some(limits) => LineFramer::with_max_line(limits.max_line),
        None => LineFramer::new(),
    };
    let mut sink = Sink {
        logs,
        dyno,
        gate: limits.map(|limits| OutputGate::new(limits, std::time::Instant::now())),
    };
    loop {
        // A partial line, or an L10 line owed, goes out once the output rests.
        let read = if framer.has_partial() || sink.owes_notice() {
            match tokio::time::timeout(PARTIAL_LINE_IDLE, output.read_buf(framer.read_buf())).await
            {
                Ok(read) => read,
                Err(_) => {
                    if let Some(line) = framer.take_partial() {
                        sink.send(line).await;
                    }
                    sink.notice_now();
                    continue;
                }
            }
        } else {
            output.read_buf(framer.read_buf()).await
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                while let Some(lines) = framer.complete_lines() {
                    sink.send(lines).await;
                }
            }
        }
    }
    if let Some(line) = framer.take_partial() {
        sink.send(line).await;
    }
    sink.finish().await;
}

/// Where a pump's lines go: the app's log, through a gate on a server.
struct Sink {
    logs: mpsc::Sender<LogEvent>,
    dyno: Arc<str>,
    gate: Option<OutputGate>,
}

impl Sink {
    async fn send(&mut self, lines: bytes::Bytes) {
        let event = LogEvent::Output {
            dyno: self.dyno.clone(),
            at: SystemTime::now(),
            lines,
        };
        let Some(gate) = self.gate.as_mut() else {
            // foreman's way: a slow log makes the dyno wait.
            let _ = self.logs.send(event).await;
            return;
        };
        let LogEvent::Output { lines, .. } = &event else {
            return;
        };
        let now = std::time::Instant::now();
        if !gate.admit(lines, now) {
            return;
        }
        if let Some(text) = gate.notice(now, false)
            && self
                .logs
                .try_send(LogEvent::platform(&self.dyno, text))
                .is_ok()
        {
            gate.notice_sent(now);
        }
        if let Err(mpsc::error::TrySendError::Full(LogEvent::Output { lines, .. })) =
            self.logs.try_send(event)
        {
            gate.count_dropped(&lines);
        }
    }

    /// Whether messages were dropped and not yet reported.
    fn owes_notice(&self) -> bool {
        self.gate.as_ref().is_some_and(|gate| gate.dropped() > 0)
    }

    /// Reports what was dropped, if the log has room for the line now.
    fn notice_now(&mut self) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        let now = std::time::Instant::now();
        if let Some(text) = gate.notice(now, true)
            && self
                .logs
                .try_send(LogEvent::platform(&self.dyno, text))
                .is_ok()
        {
            gate.notice_sent(now);
        }
    }

    /// Says what was dropped since the last notice, so a flood that ends is
    /// still counted.
    async fn finish(mut self) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        if let Some(text) = gate.notice(std::time::Instant::now(), true) {
            let _ = self.logs.send(LogEvent::platform(&self.dyno, text)).await;
        }
    }
}
