//! Running one buildpack program (or `git clone`) under the build's deadline.
//!
//! A program runs one of two ways ([`Job`]):
//! - **sandboxed**, through [`IsolatedRuntime::sandbox`]: behind an isolated
//!   dyno's walls, as pid 1's only child in a pid namespace of its own and in a
//!   cgroup, so that everything it started, `setsid` daemons included, dies with
//!   it;
//! - **on the host**, in a process group of its own, so that on expiry one
//!   signal reaches everything it started (`npm` spawns `node`, which spawns
//!   `node-gyp`, ...). A process that leaves the group on purpose (`setsid`)
//!   escapes that; only the sandbox holds it.
//!
//! Either way everything is killed as soon as the program itself exits: a build
//! step that leaves a process behind would otherwise hold the output pipe open
//! and keep the build waiting, and nothing a build starts should outlive it.
//!
//! Output is read by one thread per pipe and handed back over a channel, so the
//! caller's line callback runs on the calling thread (it is `FnMut`, not `Send`)
//! while the deadline is checked between lines.

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crew_runtime::{IsolatedRuntime, SandboxSpec, Sandboxed};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process_group, waitid};

/// Lines longer than this are passed on in pieces, so that a program printing
/// without newlines cannot make crew buffer without bound.
const MAX_LINE: u64 = 64 * 1024;

/// How often the exit of the program is checked while its output is quiet.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// How a program's output reaches the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// stdout and stderr share one pipe, so their lines keep the order in which
    /// they were written (what a pusher should see from `bin/compile`). Every
    /// line is reported as [`Stream::Stdout`].
    Merged,
    /// Two pipes, for programs whose stdout is data (`bin/detect`, `bin/release`).
    Separate,
}

pub(crate) enum Outcome {
    Exited {
        status: ExitStatus,
        /// The sandbox's memory limit was hit and the kernel killed in it.
        out_of_memory: bool,
    },
    TimedOut,
}

/// A program to run, and where.
pub(crate) enum Job<'a> {
    Host(Command),
    Sandboxed(&'a IsolatedRuntime, SandboxSpec),
}

impl Job<'_> {
    /// What runs, for messages.
    pub(crate) fn program(&self) -> String {
        match self {
            Job::Host(cmd) => cmd.get_program().to_string_lossy().into_owned(),
            Job::Sandboxed(_, spec) => spec.argv.first().cloned().unwrap_or_default(),
        }
    }
}

/// A started program: the two ways behind one face.
trait Running {
    /// Whether the program itself has exited, without reaping it.
    fn exited(&mut self) -> io::Result<bool>;
    /// Kills what is left of it and collects its status.
    fn finish(&mut self) -> io::Result<ExitStatus>;
    /// Kills everything of it now and reaps it.
    fn kill(&mut self);
    fn out_of_memory(&self) -> bool {
        false
    }
}

struct HostProgram {
    child: Child,
    group: Pid,
}

impl Running for HostProgram {
    fn exited(&mut self) -> io::Result<bool> {
        has_exited(self.group)
    }

    fn finish(&mut self) -> io::Result<ExitStatus> {
        kill_group(self.group);
        self.child.wait()
    }

    fn kill(&mut self) {
        kill_group(self.group);
        let _ = self.child.wait();
    }
}

impl Running for Sandboxed {
    fn exited(&mut self) -> io::Result<bool> {
        Ok(Sandboxed::exited(self))
    }

    fn finish(&mut self) -> io::Result<ExitStatus> {
        let status = self.wait()?;
        Ok(match status {
            crew_runtime::ExitStatus::Code(code) => ExitStatus::from_raw((code & 0xff) << 8),
            crew_runtime::ExitStatus::Signaled(signal) => ExitStatus::from_raw(signal & 0x7f),
        })
    }

    fn kill(&mut self) {
        Sandboxed::kill(self);
        let _ = self.wait();
    }

    fn out_of_memory(&self) -> bool {
        self.ran_out_of_memory()
    }
}

enum Message {
    Line(Stream, String),
    Closed,
}

/// Runs `job` to completion or until `deadline`, calling `on_line` with each
/// line of output (without its line ending; invalid UTF-8 replaced). On expiry
/// everything of it is killed and reaped before this returns.
pub(crate) fn run(
    job: Job,
    output: Output,
    deadline: Instant,
    on_line: &mut dyn FnMut(Stream, &str),
) -> io::Result<Outcome> {
    let (mut program, stdout, stderr): (Box<dyn Running>, _, _) = match job {
        Job::Host(cmd) => {
            let (program, stdout, stderr) = start_on_host(cmd, output)?;
            (Box::new(program), stdout, stderr)
        }
        Job::Sandboxed(runtime, mut spec) => {
            spec.separate_stderr = output == Output::Separate;
            let mut sandboxed = runtime.sandbox(&spec).map_err(start_error)?;
            let stdout = sandboxed
                .take_stdout()
                .map(|fd| Box::new(std::fs::File::from(fd)) as Box<dyn Read + Send>)
                .ok_or_else(|| io::Error::other("the sandbox has no output"))?;
            let stderr = sandboxed
                .take_stderr()
                .map(|fd| Box::new(std::fs::File::from(fd)) as Box<dyn Read + Send>);
            (Box::new(sandboxed), stdout, stderr)
        }
    };
    follow(program.as_mut(), stdout, stderr, deadline, on_line)
}

type Pipe = Box<dyn Read + Send>;

/// A sandbox that did not start, with the kind of what went wrong kept (a
/// program that is not executable is the buildpack's fault, not crew's).
fn start_error(error: crew_runtime::RuntimeError) -> io::Error {
    use crew_runtime::RuntimeError;
    let kind = match &error {
        RuntimeError::Spawn { source, .. }
        | RuntimeError::Pipe { source, .. }
        | RuntimeError::Wait { source, .. } => source.kind(),
        RuntimeError::Inside { .. } => io::ErrorKind::Other,
    };
    io::Error::new(kind, error.to_string())
}

/// Starts `cmd` as the leader of a new process group, with its output on pipes.
fn start_on_host(
    mut cmd: Command,
    output: Output,
) -> io::Result<(HostProgram, Pipe, Option<Pipe>)> {
    let (stdout_read, stdout_write) = io::pipe()?;
    let stderr_read = match output {
        Output::Merged => {
            cmd.stderr(stdout_write.try_clone()?);
            None
        }
        Output::Separate => {
            let (read, write) = io::pipe()?;
            cmd.stderr(write);
            Some(read)
        }
    };
    cmd.stdout(stdout_write)
        .stdin(Stdio::null())
        .process_group(0);
    let child = spawn(&mut cmd);
    // The Command holds our copies of the write ends; until they are closed the
    // readers would never see end-of-file.
    drop(cmd);
    let child = child?;
    let group = Pid::from_child(&child);
    Ok((
        HostProgram { child, group },
        Box::new(stdout_read),
        stderr_read.map(|r| Box::new(r) as Pipe),
    ))
}

/// Passes `program`'s lines on until its output closes and it has exited, or
/// until the deadline.
fn follow(
    program: &mut dyn Running,
    stdout: Pipe,
    stderr: Option<Pipe>,
    deadline: Instant,
    on_line: &mut dyn FnMut(Stream, &str),
) -> io::Result<Outcome> {
    let (tx, rx) = mpsc::channel();
    let mut open = 1;
    spawn_reader(stdout, Stream::Stdout, tx.clone());
    if let Some(read) = stderr {
        open += 1;
        spawn_reader(read, Stream::Stderr, tx.clone());
    }
    drop(tx);

    let mut status = None;
    let exited = |program: &dyn Running, status| Outcome::Exited {
        status,
        out_of_memory: program.out_of_memory(),
    };
    while open > 0 {
        if status.is_none() && program.exited()? {
            status = Some(program.finish()?);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(time_out(program));
        }
        match rx.recv_timeout((deadline - now).min(POLL)) {
            Ok(Message::Line(stream, line)) => on_line(stream, &line),
            Ok(Message::Closed) => open -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // The output is closed, but a program may close it and carry on running.
    loop {
        if let Some(done) = status {
            return Ok(exited(program, done));
        }
        if program.exited()? {
            status = Some(program.finish()?);
            continue;
        }
        if Instant::now() >= deadline {
            return Ok(time_out(program));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Spawns, retrying briefly on ETXTBSY: a script written a moment ago can be
/// "busy" because another thread of this process forked while the script was
/// still open for writing, and the fork holds that descriptor until it execs.
fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && attempts < 50 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Whether the program has exited, without reaping it. Until it is reaped its
/// pid, which is also the group's id, cannot be reused, so the group kill that
/// follows cannot reach an unrelated process.
fn has_exited(group: Pid) -> io::Result<bool> {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    loop {
        match waitid(WaitId::Pid(group), options) {
            Ok(status) => return Ok(status.is_some()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn time_out(program: &mut dyn Running) -> Outcome {
    program.kill();
    // The reader threads are not joined: they end when the last killed process's
    // pipe end closes, and their channel is simply dropped.
    Outcome::TimedOut
}

/// SIGKILL to the group: a build step gets no grace period, as Heroku's doesn't.
/// An error means the group is already empty (ESRCH), which is the goal.
fn kill_group(group: Pid) {
    let _ = kill_process_group(group, Signal::KILL);
}

fn spawn_reader(pipe: Pipe, stream: Stream, tx: mpsc::Sender<Message>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send(Message::Line(stream, line)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(Message::Closed);
    });
}
