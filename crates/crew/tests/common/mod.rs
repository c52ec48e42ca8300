//! Shared helpers for the black-box tests: a temp-dir app, a handle on a running
//! `crew`, deadline-bound polling, and process and process-group checks.
//!
//! Every `crew` runs in its own process group. Dropping its [`Crew`] handle
//! SIGKILLs that group and the group of every pid crew reported (`started with pid
//! N`), so nothing leaks even when a test fails half-way.
//!
//! Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

/// The binary under test.
pub const CREW: &str = env!("CARGO_BIN_EXE_crew");

/// Deadline for things that should happen at once (a line printed, a quick
/// exit). Generous, since the suite runs in parallel on two cores; the polls
/// return as soon as the thing happens.
pub const SOON: Duration = Duration::from_secs(10);

/// Deadline for heavy work (tens of megabytes through crew).
pub const SLOW: Duration = Duration::from_secs(60);

pub use crew_testkit::wait::poll_until;

// ---------------------------------------------------------------------------
// The app on disk
// ---------------------------------------------------------------------------

/// An app in a fresh temporary directory.
pub struct App {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl App {
    /// An empty app directory.
    pub fn new() -> App {
        let dir = tempfile::Builder::new()
            .prefix("crew-test-")
            .tempdir()
            .expect("creating a temp dir");
        // crew reports absolute paths built from getcwd(), which resolves symlinks.
        let root = dir.path().canonicalize().expect("canonicalizing temp dir");
        App { dir, root }
    }

    /// An app whose `Procfile` is `text`.
    pub fn with_procfile(text: &str) -> App {
        let app = App::new();
        app.write("Procfile", text);
        app
    }

    /// Writes a file relative to the app root, creating directories as needed.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> &App {
        let path = self.root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating directories");
        }
        std::fs::write(&path, contents).expect("writing a file");
        self
    }

    /// The app's root (canonical).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A path inside the app.
    pub fn join(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Whether a file exists inside the app.
    pub fn exists(&self, name: &str) -> bool {
        self.root.join(name).exists()
    }

    /// A `crew ARGS…` command run in the app root, with a predictable
    /// environment: no PORT, no colour settings, stdin from /dev/null.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(CREW);
        command.args(args);
        self.prepare(&mut command);
        command
    }

    /// `crew ARGS…` run inside a pseudo-terminal (stdin, stdout and stderr are
    /// the pty), by a small python3 wrapper. The wrapper relays what crew writes
    /// to its own stdout and exits with crew's code.
    pub fn command_in_pty<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new("python3");
        command.arg("-c").arg(PTY_WRAPPER).arg(CREW).args(args);
        self.prepare(&mut command);
        command
    }

    /// `crew ARGS…` with SIGHUP, SIGINT and SIGQUIT at their defaults, by a
    /// python3 wrapper that then execs crew (same pid). Ignored signals
    /// survive exec, and a suite run under `nohup` or in the background of a
    /// script ignores them; a command that `crew run` execs could not trap
    /// them then, however crew behaves.
    pub fn command_with_default_signals<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new("python3");
        command
            .arg("-c")
            .arg(
                "import os, signal, sys\n\
                 for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):\n    \
                 signal.signal(s, signal.SIG_DFL)\n\
                 os.execv(sys.argv[1], sys.argv[1:])",
            )
            .arg(CREW)
            .args(args);
        self.prepare(&mut command);
        command
    }

    /// A `sh -c SCRIPT` run in the app root, where `$CREW` is the crew binary.
    pub fn shell(&self, script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script).env("CREW", CREW);
        self.prepare(&mut command);
        command
    }

    fn prepare(&self, command: &mut Command) {
        command.current_dir(&self.root).stdin(Stdio::null());
        for var in [
            "PORT",
            "NO_COLOR",
            "CLICOLOR",
            "CLICOLOR_FORCE",
            "FORCE_COLOR",
            "PYTHONUNBUFFERED",
            "DYNO",
            "PS",
            "PROCFILE",
        ] {
            command.env_remove(var);
        }
    }

    /// Spawns `crew ARGS…` in the background.
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Crew {
        Crew::spawn(self.command(args))
    }

    /// Runs `crew ARGS…` to its end (within [`SOON`]) and returns what it did.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Finished {
        let mut crew = self.spawn(args);
        crew.wait_exit(SOON);
        crew.finished()
    }

    /// Runs the client command `crew ARGS…` (`ps`, `logs`, …) to its end (within
    /// [`SOON`]). Unlike [`App::run`], the pids its output mentions are not
    /// killed afterwards.
    pub fn run_client<S: AsRef<OsStr>>(&self, args: &[S]) -> Finished {
        let mut crew = Crew::spawn_client(self.command(args));
        crew.wait_exit(SOON);
        crew.finished()
    }
}

impl Default for App {
    fn default() -> App {
        App::new()
    }
}

/// Runs argv[1..] under a fresh pty. Announces the child's pid on stderr so the
/// test harness can clean up after it, types what arrives on its own stdin into
/// the pty (so `\x03` is a real Ctrl-C), relays the pty's output, and exits with
/// the child's code (128 + N for a signal).
const PTY_WRAPPER: &str = r#"
import os, pty, select, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
sys.stderr.write(f"pty-child-pid={pid}\n")
sys.stderr.flush()
inputs = [fd, 0]
done = False
while not done:
    ready, _, _ = select.select(inputs, [], [])
    if 0 in ready:
        data = os.read(0, 1024)
        if data:
            os.write(fd, data)
        else:
            inputs.remove(0)
    if fd in ready:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            done = True
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"#;

// ---------------------------------------------------------------------------
// Captured output
// ---------------------------------------------------------------------------

/// Everything one of crew's output streams has produced so far.
#[derive(Default)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// Complete lines seen so far.
    pub lines: usize,
    /// Pids announced as `started with pid N` (or by the pty wrapper), with the
    /// line that announced them.
    pub pids: Vec<(String, i32)>,
    /// The stream reached end of file.
    pub closed: bool,
    line_start: usize,
}

impl Captured {
    fn append(&mut self, chunk: &[u8]) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(chunk);
        for nl in memchr::memchr_iter(b'\n', chunk) {
            let end = base + nl;
            let line = &self.bytes[self.line_start..end];
            // Only short lines can announce a pid; long ones are payload.
            if line.len() < 300 {
                for marker in ["started with pid ", "pty-child-pid="] {
                    if let Some(at) = memchr::memmem::find(line, marker.as_bytes()) {
                        let digits: String = line[at + marker.len()..]
                            .iter()
                            .take_while(|b| b.is_ascii_digit())
                            .map(|b| char::from(*b))
                            .collect();
                        if let Ok(pid) = digits.parse() {
                            let text = String::from_utf8_lossy(line).into_owned();
                            self.pids.push((text, pid));
                        }
                    }
                }
            }
            self.lines += 1;
            self.line_start = end + 1;
        }
    }

    /// Whether `needle` occurs anywhere in the stream.
    pub fn contains(&self, needle: &str) -> bool {
        memchr::memmem::find(&self.bytes, needle.as_bytes()).is_some()
    }

    /// The stream as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

type Shared = Arc<Mutex<Captured>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Captured> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn pump(mut source: impl Read + Send + 'static, sink: Shared) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match source.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => lock(&sink).append(&buf[..n]),
            }
        }
        lock(&sink).closed = true;
    });
}

/// Shows the end of a long text in a failure message.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {start} bytes before …]{}", &text[start..])
}

// ---------------------------------------------------------------------------
// A running crew
// ---------------------------------------------------------------------------

/// A running `crew` (or a shell or pty wrapper around it), in its own process
/// group, with stdout and stderr captured.
pub struct Crew {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Shared,
    err: Shared,
    status: Option<ExitStatus>,
    started: Instant,
    extra_groups: Vec<i32>,
    /// Whether dropping the handle kills the groups of the pids it announced.
    kill_announced: bool,
}

impl Crew {
    /// Spawns `command` as the leader of a new process group, stdout and stderr
    /// captured by reader threads.
    pub fn spawn(mut command: Command) -> Crew {
        command
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
        let out = Shared::default();
        let err = Shared::default();
        pump(child.stdout.take().expect("stdout"), out.clone());
        pump(child.stderr.take().expect("stderr"), err.clone());
        let stdin = child.stdin.take();
        Crew {
            child,
            stdin,
            out,
            err,
            status: None,
            started: Instant::now(),
            extra_groups: Vec::new(),
            kill_announced: true,
        }
    }

    /// Like [`Crew::spawn`], for a client command whose output may quote other
    /// processes' `started with pid N` lines (`crew logs`): dropping the handle
    /// kills only its own process group.
    pub fn spawn_client(command: Command) -> Crew {
        let mut crew = Crew::spawn(command);
        crew.kill_announced = false;
        crew
    }

    /// The pid of the process we spawned (crew itself, or its wrapper).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// How long ago it was spawned.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Also SIGKILL this process group when the handle is dropped.
    pub fn track_group(&mut self, pgid: i32) {
        self.extra_groups.push(pgid);
    }

    /// Writes to crew's stdin (the command must have `Stdio::piped()` stdin).
    pub fn write_stdin(&mut self, data: &[u8]) {
        self.stdin
            .as_mut()
            .expect("stdin was not piped")
            .write_all(data)
            .expect("writing to crew's stdin");
    }

    /// Closes crew's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Runs `f` on the stdout captured so far.
    pub fn with_stdout<R>(&self, f: impl FnOnce(&Captured) -> R) -> R {
        f(&lock(&self.out))
    }

    /// stdout so far, as text.
    pub fn stdout(&self) -> String {
        lock(&self.out).text()
    }

    /// stdout so far, as bytes.
    pub fn stdout_bytes(&self) -> Vec<u8> {
        lock(&self.out).bytes.clone()
    }

    /// stderr so far, as text.
    pub fn stderr(&self) -> String {
        lock(&self.err).text()
    }

    /// Both streams, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&self.stdout(), 4000),
            tail(&self.stderr(), 4000)
        )
    }

    /// Waits until stdout contains `needle`; panics with both streams if it does
    /// not within `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        if !poll_until(timeout, || lock(&self.out).contains(needle)) {
            panic!(
                "crew's stdout did not show {needle:?} within {timeout:?}\n{}",
                self.report()
            );
        }
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) {
        if !poll_until(timeout, || lock(&self.err).contains(needle)) {
            panic!(
                "crew's stderr did not show {needle:?} within {timeout:?}\n{}",
                self.report()
            );
        }
    }

    /// Waits until `done` holds for stdout; panics saying `what` otherwise.
    pub fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn(&Captured) -> bool) {
        if !poll_until(timeout, || done(&lock(&self.out))) {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.report()
            );
        }
    }

    /// The pid crew announced for `dyno` (`web.1  | started with pid N`), waiting
    /// for the announcement.
    pub fn pid_of(&self, dyno: &str) -> i32 {
        let mut found = None;
        let announced = poll_until(SOON, || {
            found = lock(&self.out)
                .pids
                .iter()
                .find(|(line, _)| name_column(line) == Some(dyno))
                .map(|(_, pid)| *pid);
            found.is_some()
        });
        if !announced {
            panic!(
                "crew never printed `{dyno} | started with pid N`\n{}",
                self.report()
            );
        }
        found.expect("found")
    }

    /// Every pid crew announced so far.
    pub fn announced_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = lock(&self.out).pids.iter().map(|(_, p)| *p).collect();
        pids.extend(lock(&self.err).pids.iter().map(|(_, p)| *p));
        pids
    }

    /// Sends `signal` to the spawned process only (not its group).
    pub fn signal(&self, signal: Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).expect("pid");
        rustix::process::kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("sending {signal:?} to crew: {e}"));
    }

    /// The exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits for the process to exit and for its output to reach end of file.
    /// Panics with both streams when it does not exit within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let waited = Instant::now();
        let mut status = None;
        if !poll_until(timeout, || {
            status = self.try_status();
            status.is_some()
        }) {
            panic!(
                "crew did not exit within {timeout:?} (pid {}, running {:?})\n{}",
                self.pid(),
                self.age(),
                self.report()
            );
        }
        // Output is complete once both pipes reach end of file. Something that
        // outlived crew may hold them open; that is for the test to judge, so
        // do not wait forever.
        let rest = timeout
            .saturating_sub(waited.elapsed())
            .max(Duration::from_secs(2));
        poll_until(rest, || lock(&self.out).closed && lock(&self.err).closed);
        status.expect("status")
    }

    /// Waits for the process to exit and returns its exit code, panicking if it
    /// was killed by a signal.
    pub fn wait_code(&mut self, timeout: Duration) -> i32 {
        let status = self.wait_exit(timeout);
        match status.code() {
            Some(code) => code,
            None => panic!(
                "crew was killed by signal {:?} instead of exiting\n{}",
                status.signal(),
                self.report()
            ),
        }
    }

    /// A summary of a finished run.
    pub fn finished(&mut self) -> Finished {
        Finished {
            status: self.try_status().expect("finished() before exit"),
            stdout: self.stdout_bytes(),
            stderr: self.stderr(),
            pids: self.announced_pids(),
        }
    }
}

/// The dyno name in a terminal line: `HH:MM:SS web.1  | …` or `web.1  | …`.
pub fn name_column(line: &str) -> Option<&str> {
    let rest = strip_clock(line).unwrap_or(line);
    let (name, _) = rest.split_once(" | ")?;
    Some(name.trim_end())
}

/// The line without its leading `HH:MM:SS `, if it has one.
pub fn strip_clock(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let ok = b.len() >= 9
        && b[0].is_ascii_digit()
        && b[1].is_ascii_digit()
        && b[2] == b':'
        && b[3].is_ascii_digit()
        && b[4].is_ascii_digit()
        && b[5] == b':'
        && b[6].is_ascii_digit()
        && b[7].is_ascii_digit()
        && b[8] == b' ';
    ok.then(|| &line[9..])
}

impl Drop for Crew {
    fn drop(&mut self) {
        let mut groups = vec![self.pid()];
        if self.kill_announced {
            groups.extend(self.announced_pids());
        }
        groups.extend(self.extra_groups.iter().copied());
        for pgid in groups {
            if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
                let _ = rustix::process::kill_process_group(pid, Signal::KILL);
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
        let _ = poll_until(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)) | Err(_))
        });
    }
}

/// A finished run of crew.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub pids: Vec<i32>,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn report(&self) -> String {
        format!(
            "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            tail(&self.stdout(), 4000),
            tail(&self.stderr, 4000)
        )
    }

    /// Asserts exit code `code`.
    pub fn assert_code(&self, code: i32) -> &Finished {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.report()
        );
        self
    }

    /// Asserts a clean failure: exited (not killed by a signal) with a non-zero
    /// code, said `crew: error:` or printed usage, never panicked, started
    /// nothing, and the error names every one of `needles`.
    pub fn assert_clean_error(&self, needles: &[&str]) -> &Finished {
        let report = self.report();
        assert!(
            self.status.signal().is_none(),
            "crew died of signal {:?} instead of reporting an error\n{report}",
            self.status.signal()
        );
        assert_ne!(self.code(), Some(0), "expected a failure\n{report}");
        assert_no_panic(&self.stderr);
        assert!(
            self.stderr.contains("error"),
            "expected an error message on stderr\n{report}"
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "the error should mention {needle:?}\n{report}"
            );
        }
        assert!(
            !self.stdout().contains("started with pid"),
            "nothing should have started\n{report}"
        );
        self
    }
}

/// Panics if `stderr` shows a Rust panic or an allocation abort.
pub fn assert_no_panic(stderr: &str) {
    for sign in [
        "panicked",
        "RUST_BACKTRACE",
        "stack backtrace",
        "memory allocation of",
    ] {
        assert!(
            !stderr.contains(sign),
            "crew crashed (stderr contains {sign:?}):\n{}",
            tail(stderr, 4000)
        );
    }
}

/// The lines of a byte stream, lossily decoded, without their `\n`.
pub fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------
// Processes and process groups
// ---------------------------------------------------------------------------

// Each test binary uses its own part of these.
#[allow(unused_imports)]
pub use crew_testkit::procs::{
    assert_gone, assert_group_gone, cmdline, group_members, is_alive, proc_stat, wait_group_size,
};

// ---------------------------------------------------------------------------
// Ports and a cheap web process
// ---------------------------------------------------------------------------

/// A block of ports held by one test for `crew start -p BASE`. Tests in this
/// binary and in others running at the same time never hold the same block: each
/// holder has a lock file in a shared temp directory. Dropping it frees the block.
pub struct PortBlock {
    pub base: u16,
    lock: PathBuf,
}

impl Drop for PortBlock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// Takes a block of ports whose formula ports for the first `types` process
/// types, `per_type` processes each, are free right now. The blocks sit below
/// Linux's ephemeral range, so outgoing connections do not take them.
pub fn port_block(types: u16, per_type: u16) -> PortBlock {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    const BLOCK: u32 = 400;
    const BLOCKS: u32 = 55;
    assert!(
        u32::from(types) * 100 <= BLOCK && per_type <= 100,
        "port_block: {types} types of {per_type} do not fit a block"
    );
    let dir = std::env::temp_dir().join("crew-test-ports");
    std::fs::create_dir_all(&dir).expect("creating the port lock directory");
    let spread = std::process::id() % BLOCKS;
    let deadline = Instant::now() + SLOW;
    loop {
        for _ in 0..BLOCKS {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let base = u16::try_from(FIRST + ((spread + n) % BLOCKS) * BLOCK).expect("a port");
            let lock = dir.join(base.to_string());
            if !take_lock(&lock) {
                continue;
            }
            let block = PortBlock { base, lock };
            let free = (0..types).all(|t| {
                (0..per_type)
                    .all(|i| std::net::TcpListener::bind(("127.0.0.1", base + 100 * t + i)).is_ok())
            });
            if free {
                return block;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no free block of ports for {types} types of {per_type} processes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates `lock` holding this process's pid, unless a live process holds it. A
/// lock whose holder died is cleared for a later try.
fn take_lock(lock: &Path) -> bool {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(lock)
    {
        Ok(mut file) => {
            let _ = write!(file, "{}", std::process::id());
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let holder = std::fs::read_to_string(lock)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok());
            // No pid yet: its holder is still writing it.
            if holder.is_some_and(|pid| !is_alive(pid)) {
                let _ = std::fs::remove_file(lock);
            }
            false
        }
        Err(_) => false,
    }
}

/// A shell command line that serves HTTP on `127.0.0.1:$PORT` until it is
/// killed, and dies of SIGTERM: the workspace's `fakeproc --listen` when `cargo
/// build` has built it beside crew, else python3's `http.server`.
pub fn http_server_command() -> String {
    let fakeproc = Path::new(CREW).with_file_name("fakeproc");
    if fakeproc.is_file() {
        format!("exec '{}' --listen", fakeproc.display())
    } else {
        String::from("exec python3 -m http.server \"$PORT\" --bind 127.0.0.1")
    }
}
