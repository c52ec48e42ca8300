use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::slug_copy::SlugCopy;
use crate::terminal::{self, DynoStdio};
use crate::watchdog::Watchdog;
use crate::{
    Console, DynoProcess, DynoSpec, ExitStatus, Output, ProcessGroup, Runtime, RuntimeError,
    Signal, os,
};

/// Runs dynos as plain processes on this machine, each in its own process group.
#[derive(Clone)]
pub struct PlainRuntime {
    shared: Arc<Shared>,
    /// Where each dyno gets its own copy of its slug, if it should.
    slug_copies: Option<PathBuf>,
    /// Idle dynos read `/dev/null` rather than the shared idle pipe (a server's).
    null_stdin: bool,
}

struct Shared {
    /// Children get the read end of a pipe nobody writes to: a stdin that stays
    /// open and never delivers data, so watchers that exit on EOF keep running.
    idle_stdin: OwnedFd,
    _idle_stdin_writer: OwnedFd,
    /// Leaders are reaped by tokio. The orphan reaper must never reap one, so the
    /// set is locked across each spawn. A leader's pid is also its group's id.
    leaders: Mutex<HashSet<u32>>,
    watchdog: Option<Watchdog>,
}

/// A process that is still running after its dyno was stopped: it left its
/// process group (double fork and `setsid`), so group signals missed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escapee {
    pub pid: u32,
    pub command: String,
}

impl PlainRuntime {
    /// Makes crew a subreaper and sets up the shared stdin. `watchdog` is optional
    /// so tests can run without a second binary.
    pub fn new(watchdog: Option<Watchdog>) -> std::io::Result<PlainRuntime> {
        os::become_subreaper()?;
        let (idle_stdin, writer) = os::pipe()?;
        Ok(PlainRuntime {
            shared: Arc::new(Shared {
                idle_stdin,
                _idle_stdin_writer: writer,
                leaders: Mutex::new(HashSet::new()),
                watchdog,
            }),
            slug_copies: None,
            null_stdin: false,
        })
    }

    /// This runtime, but every dyno runs in its own copy of its directory, made
    /// under `dir` at start and removed when the dyno is gone, so what one dyno
    /// writes no other dyno sees; and an idle dyno's stdin is a `/dev/null`
    /// of its own, as on Heroku. A server without isolation runs dynos so.
    pub fn with_slug_copies(&self, dir: PathBuf) -> PlainRuntime {
        PlainRuntime {
            shared: self.shared.clone(),
            slug_copies: Some(dir),
            null_stdin: true,
        }
    }

    fn leaders(&self) -> MutexGuard<'_, HashSet<u32>> {
        self.shared
            .leaders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Orphans re-parented to crew: every child that is neither a dyno leader nor
    /// the watchdog.
    fn orphans(&self, leaders: &HashSet<u32>) -> Vec<u32> {
        let watchdog = self.shared.watchdog.as_ref().map(Watchdog::pid);
        os::own_children()
            .into_iter()
            .filter(|pid| !leaders.contains(pid) && Some(*pid) != watchdog)
            .collect()
    }

    /// Reaps orphans that have exited. Without this they would stay zombies and
    /// keep their old process group looking alive. Only members of a live dyno's
    /// group are reaped: other code in crew (git, buildpacks) waits for its own
    /// children, and reaping one of those would steal its exit status.
    pub fn reap_orphans(&self) {
        let leaders = self.leaders();
        for pid in self.orphans(&leaders) {
            if os::process_state(pid) == Some('Z')
                && os::process_group_of(pid).is_some_and(|g| leaders.contains(&g))
            {
                os::reap(pid);
            }
        }
    }

    /// Reaps orphans whenever a child exits, for as long as the runtime lives.
    pub fn spawn_orphan_reaper(&self) -> tokio::task::JoinHandle<()> {
        let runtime = self.clone();
        tokio::spawn(async move {
            let mut sigchld =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                match sigchld.as_mut() {
                    Some(s) => {
                        tokio::select! {
                            _ = s.recv() => {}
                            _ = tick.tick() => {}
                        }
                    }
                    None => {
                        tick.tick().await;
                    }
                }
                runtime.reap_orphans();
            }
        })
    }

    /// Processes that outlived their dynos. Call once every dyno is gone.
    pub fn escapees(&self) -> Vec<Escapee> {
        self.reap_orphans();
        let leaders = self.leaders();
        self.orphans(&leaders)
            .into_iter()
            .filter(|pid| os::process_state(*pid).is_some_and(|s| s != 'Z'))
            .map(|pid| Escapee {
                pid,
                command: os::command_line(pid),
            })
            .collect()
    }

    /// Kills escapees and reaps them.
    pub fn kill_escapees(&self, escapees: &[Escapee]) {
        for e in escapees {
            os::signal_process(e.pid, Signal::Kill);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            self.reap_orphans();
            if self.escapees().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Runtime for PlainRuntime {
    type Process = PlainProcess;

    fn spawn(&self, spec: &DynoSpec) -> Result<PlainProcess, RuntimeError> {
        let pipe_error = |source| RuntimeError::Pipe {
            dyno: spec.name.clone(),
            source,
        };
        let copy = match &self.slug_copies {
            Some(copies) => {
                Some(
                    SlugCopy::make(copies, spec).map_err(|source| RuntimeError::Spawn {
                        dyno: spec.name.clone(),
                        command: spec.command.clone(),
                        cwd: spec.cwd.display().to_string(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let spec = match &copy {
            Some(copy) => &copy.spec,
            None => spec,
        };
        let idle = (!self.null_stdin).then_some(&self.shared.idle_stdin);
        let stdio = DynoStdio::new(spec.input, idle).map_err(pipe_error)?;

        let mut command = std::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&spec.command)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::from(stdio.stdin))
            .stdout(Stdio::from(stdio.stdout))
            .stderr(Stdio::from(stdio.stderr));
        if stdio.terminal {
            // A session of its own is also a process group of its own.
            os::take_terminal(&mut command);
        } else {
            command.process_group(0);
        }
        os::default_signals(&mut command);
        os::die_with_parent(&mut command);
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(false);

        let mut leaders = self.leaders();
        let child = command.spawn().map_err(|source| RuntimeError::Spawn {
            dyno: spec.name.clone(),
            command: spec.command.clone(),
            cwd: spec.cwd.display().to_string(),
            source,
        })?;
        // Our copies of the dyno's ends live in `command`; they must close so the
        // output reaches its end when the dyno's processes are gone.
        drop(command);
        let pid = child.id().unwrap_or(0);
        leaders.insert(pid);
        drop(leaders);
        if let Some(w) = &self.shared.watchdog {
            w.register(pid);
        }
        let (output, console) = terminal::streams(&spec.name, stdio.output, stdio.console)?;
        Ok(PlainProcess {
            name: spec.name.clone(),
            child,
            pid,
            output: Some(output),
            console,
            runtime: self.clone(),
            _copy: copy,
        })
    }
}

/// A dyno running as a plain process group.
pub struct PlainProcess {
    name: String,
    child: tokio::process::Child,
    pid: u32,
    output: Option<Output>,
    console: Option<Console>,
    runtime: PlainRuntime,
    /// The dyno's own copy of its slug, removed with the process.
    _copy: Option<SlugCopy>,
}

impl DynoProcess for PlainProcess {
    type Group = PlainGroup;

    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn take_output(&mut self) -> Option<Output> {
        self.output.take()
    }

    fn take_console(&mut self) -> Option<Console> {
        self.console.take()
    }

    fn group(&self) -> PlainGroup {
        PlainGroup { pgid: self.pid }
    }

    async fn wait(&mut self) -> Result<ExitStatus, RuntimeError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|source| RuntimeError::Wait {
                dyno: self.name.clone(),
                source,
            })?;
        Ok(status.into())
    }
}

impl Drop for PlainProcess {
    fn drop(&mut self) {
        self.runtime.leaders().remove(&self.pid);
        if let Some(w) = &self.runtime.shared.watchdog {
            w.unregister(self.pid);
        }
    }
}

/// The process group of a plain dyno; its id is the leader's pid.
#[derive(Debug, Clone, Copy)]
pub struct PlainGroup {
    pgid: u32,
}

impl ProcessGroup for PlainGroup {
    fn signal(&self, signal: Signal) {
        os::signal_group(self.pgid, signal);
    }

    fn alive(&self) -> bool {
        os::group_exists(self.pgid)
    }
}
