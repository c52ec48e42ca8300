//! Running one buildpack program (or `git clone`) under the build's deadline.
//!
//! Every program is started in a process group of its own, so that on expiry one
//! signal reaches everything it started (`npm` spawns `node`, which spawns
//! `node-gyp`, ...). The group is also killed as soon as the program itself exits:
//! a build step that leaves a process behind would otherwise hold the output pipe
//! open and keep the build waiting, and nothing a build starts should outlive it.
//! A process that leaves the group on purpose (`setsid`) escapes both; the
//! isolated dyno work is where a build gets a cgroup that nothing escapes.
//!
//! Output is read by one thread per pipe and handed back over a channel, so the
//! caller's line callback runs on the calling thread (it is `FnMut`, not `Send`)
//! while the deadline is checked between lines.

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

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
    Exited(ExitStatus),
    TimedOut,
}

enum Message {
    Line(Stream, String),
    Closed,
}

/// Runs `cmd` to completion or until `deadline`, calling `on_line` with each line
/// of output (without its line ending; invalid UTF-8 replaced). On expiry the
/// whole process group is killed and reaped before this returns.
pub(crate) fn run(
    mut cmd: Command,
    output: Output,
    deadline: Instant,
    on_line: &mut dyn FnMut(Stream, &str),
) -> io::Result<Outcome> {
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
    let mut child = child?;
    let group = Pid::from_child(&child);

    let (tx, rx) = mpsc::channel();
    let mut open = 1;
    spawn_reader(stdout_read, Stream::Stdout, tx.clone());
    if let Some(read) = stderr_read {
        open += 1;
        spawn_reader(read, Stream::Stderr, tx.clone());
    }
    drop(tx);

    let mut status = None;
    while open > 0 {
        if status.is_none() && has_exited(group)? {
            kill_group(group);
            status = Some(child.wait()?);
        }
        let now = Instant::now();
        if now >= deadline {
            return time_out(&mut child, group);
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
        if let Some(exited) = status {
            return Ok(Outcome::Exited(exited));
        }
        if has_exited(group)? {
            kill_group(group);
            status = Some(child.wait()?);
            continue;
        }
        if Instant::now() >= deadline {
            return time_out(&mut child, group);
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

fn time_out(child: &mut Child, group: Pid) -> io::Result<Outcome> {
    kill_group(group);
    child.wait()?;
    // The reader threads are not joined: they end when the last killed process's
    // pipe end closes, and their channel is simply dropped.
    Ok(Outcome::TimedOut)
}

/// SIGKILL to the group: a build step gets no grace period, as Heroku's doesn't.
/// An error means the group is already empty (ESRCH), which is the goal.
fn kill_group(group: Pid) {
    let _ = kill_process_group(group, Signal::KILL);
}

fn spawn_reader(pipe: io::PipeReader, stream: Stream, tx: mpsc::Sender<Message>) {
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
