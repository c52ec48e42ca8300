//! Programs that are not dynos, run behind a dyno's walls: the steps of a
//! build (`bin/detect`, `bin/compile`, `bin/release`, `git clone` of a
//! buildpack).
//!
//! A sandboxed program starts exactly as a dyno does (`plan::build_for`,
//! `launch`): its own mount, pid, uts, ipc and cgroup namespaces, the stack
//! read-only, a fresh `/proc` and `/dev`, the parent-death signal, a cgroup
//! with memory and pids limits, and an unprivileged user; whatever is added to
//! that path for dynos applies here too. Only two things differ: what it sees
//! beside the stack is a list of host directories bound at fixed places
//! ([`SandboxBind`]) instead of an overlay over a slug, and it is driven
//! synchronously (a build runs on a blocking thread), with its stdout and
//! stderr as plain pipes.
//!
//! Invariants:
//! - When [`Sandboxed::wait`] returns, or a [`Sandboxed`] is dropped, every
//!   process of the program is gone: its init was pid 1 of the pid namespace
//!   they all live in (`setsid` daemons too), and its cgroup is killed.
//! - The program's environment is exactly [`SandboxSpec::env`].

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::cgroup::DynoCgroup;
use super::launch::{ChildIo, ChildPlan, launch};
use super::plan::{self, SandboxBind, Workspace};
use super::runtime::{IsolatedRuntime, cgroup_safe, next_id, remove_soon};
use crate::dyno_network::Lease;
use crate::os::{self, ExecImage};
use crate::{DynoSize, ExitStatus, RuntimeError, Signal};

/// One program to run sandboxed.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The hostname, and part of the cgroup's name (`build`).
    pub name: String,
    /// The program (an absolute path inside the sandbox) and its arguments;
    /// executed directly, without a shell.
    pub argv: Vec<String>,
    /// The complete environment; nothing else is passed.
    pub env: Vec<(String, String)>,
    /// Host directories and where the program sees them. It starts in `/app`.
    pub binds: Vec<SandboxBind>,
    /// The user and group the program runs as.
    pub uid: u32,
    pub gid: u32,
    /// The memory and process limits of the program and all it starts.
    pub limits: DynoSize,
    /// Whether stderr is a pipe of its own, rather than merged into stdout in
    /// write order.
    pub separate_stderr: bool,
}

/// A running sandboxed program. Dropping it kills everything of it.
pub struct Sandboxed {
    pid: u32,
    pidfd: OwnedFd,
    status_pipe: OwnedFd,
    cgroup: DynoCgroup,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    status: Option<ExitStatus>,
    /// The program's address on crew's bridge, held while it runs.
    _lease: Option<Lease>,
}

impl IsolatedRuntime {
    /// Starts `spec` behind the walls of an isolated dyno (see
    /// [`crate::isolated::sandbox`]). Needs no tokio runtime.
    pub fn sandbox(&self, spec: &SandboxSpec) -> Result<Sandboxed, RuntimeError> {
        let shared = &self.shared;
        let fail = |source: io::Error| RuntimeError::Spawn {
            dyno: spec.name.clone(),
            command: spec.argv.join(" "),
            cwd: plan::APP.to_string(),
            source,
        };
        let invalid = |what: &str| fail(io::Error::new(io::ErrorKind::InvalidInput, what));
        if spec.uid == u32::MAX || spec.gid == u32::MAX {
            return Err(invalid("the uid and gid may not be -1"));
        }
        if let Some(bad) = spec
            .binds
            .iter()
            .find(|b| !b.inside.is_absolute() || !b.host.is_absolute())
        {
            return Err(invalid(&format!(
                "{} -> {}: sandbox binds are absolute paths",
                bad.host.display(),
                bad.inside.display()
            )));
        }
        let image = exec_image(spec).map_err(fail)?;
        let setup = plan::Setup {
            hostname: &spec.name,
            uid: spec.uid,
            gid: spec.gid,
            terminal: None,
        };
        let steps = plan::build_for(&shared.layout, &setup, Workspace::Binds(&spec.binds))
            .map_err(|_| invalid("the name or a bind path contains a NUL byte"))?;
        let n = next_id();
        let id = format!("{}-{n}-{}", std::process::id(), cgroup_safe(&spec.name));
        // A network of its own, as a dyno has (package registries through the
        // NAT, nothing of the host): taken first, so an error leaves nothing.
        let network = self.take_network().map_err(fail)?;
        let cgroup = shared.cgroups.create(&id, &spec.limits).map_err(fail)?;
        let started = (|| {
            let stdin = std::fs::File::open("/dev/null")?;
            let (stdout, stdout_w) = os::pipe()?;
            let (stderr, errors) = if spec.separate_stderr {
                let (r, w) = os::pipe()?;
                (Some(r), Some(w))
            } else {
                (None, None)
            };
            let io = ChildIo {
                stdin: stdin.into(),
                output: stdout_w,
                errors,
            };
            let plan = Arc::new(ChildPlan {
                steps,
                image,
                timed: false,
            });
            let launched = launch(
                plan,
                io,
                network.namespace,
                &cgroup,
                shared.config.setup_timeout,
            )?;
            Ok((launched, stdout, stderr))
        })();
        match started {
            Ok((launched, stdout, stderr)) => Ok(Sandboxed {
                pid: launched.pid,
                pidfd: launched.pidfd,
                status_pipe: launched.status,
                cgroup,
                stdout: Some(stdout),
                stderr,
                status: None,
                _lease: network.lease,
            }),
            Err(e) => {
                cgroup.kill();
                remove_soon(&cgroup);
                Err(fail(e))
            }
        }
    }
}

/// `argv` as it is, with exactly the spec's environment.
fn exec_image(spec: &SandboxSpec) -> io::Result<ExecImage> {
    use std::ffi::CString;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    let nul = |_| invalid("an argument or environment variable contains a NUL byte");
    let program = spec
        .argv
        .first()
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| invalid("the program must be an absolute path"))?;
    let mut envp = Vec::with_capacity(spec.env.len());
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') {
            return Err(invalid(
                "an environment variable has an empty name or one with `=`",
            ));
        }
        envp.push(CString::new(format!("{key}={value}")).map_err(nul)?);
    }
    Ok(ExecImage {
        program: CString::new(program.as_str()).map_err(nul)?,
        argv: spec
            .argv
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(nul))
            .collect::<io::Result<_>>()?,
        envp,
        terminal: false,
    })
}

impl Sandboxed {
    /// The host pid of the program's init.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The read end of the program's stdout (and stderr, when merged); `None`
    /// after the first call.
    pub fn take_stdout(&mut self) -> Option<OwnedFd> {
        self.stdout.take()
    }

    /// The read end of its own stderr, when asked for; `None` after the first call.
    pub fn take_stderr(&mut self) -> Option<OwnedFd> {
        self.stderr.take()
    }

    /// Whether the program has exited (and with it everything it started).
    pub fn exited(&self) -> bool {
        self.status.is_some() || os::pidfd_exited(&self.pidfd)
    }

    /// Kills the program and everything it started, at once.
    pub fn kill(&self) {
        if self.status.is_none() {
            os::pidfd_signal(&self.pidfd, Signal::Kill);
        }
        self.cgroup.kill();
    }

    /// Waits for the program to exit; by then nothing of it is left running.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = match os::pidfd_reap(&self.pidfd, true)? {
            Some(ExitStatus::Code(code)) => os::read_status(&self.status_pipe)
                .map(ExitStatus::from_wait)
                .unwrap_or(ExitStatus::Code(code)),
            Some(signaled) => signaled,
            None => return Err(io::Error::other("the sandbox's init vanished")),
        };
        self.status = Some(status);
        // The kernel killed the rest of the pid namespace with its init; the
        // cgroup is the belt and braces.
        self.cgroup.kill();
        Ok(status)
    }

    /// Whether the kernel's OOM killer struck inside the sandbox: the memory
    /// limit was reached.
    pub fn ran_out_of_memory(&self) -> bool {
        self.cgroup.counters().1 > 0
    }
}

impl Drop for Sandboxed {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
            let _ = os::pidfd_reap(&self.pidfd, true);
        }
        self.cgroup.kill();
        remove_soon(&self.cgroup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            name: "build".into(),
            argv: vec!["/buildpack/bin/compile".into(), "/app".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            binds: vec![],
            uid: 1000,
            gid: 1000,
            limits: DynoSize::default(),
            separate_stderr: false,
        }
    }

    #[test]
    fn the_program_runs_as_given_with_only_the_given_environment() {
        let image = exec_image(&spec()).unwrap();
        assert_eq!(image.program.to_str().unwrap(), "/buildpack/bin/compile");
        let argv: Vec<&str> = image.argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(argv, ["/buildpack/bin/compile", "/app"]);
        let env: Vec<&str> = image.envp.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(env, ["PATH=/usr/bin:/bin"]);
    }

    #[test]
    fn relative_programs_and_bad_variables_are_refused() {
        let mut relative = spec();
        relative.argv[0] = "bin/compile".into();
        assert!(exec_image(&relative).is_err());
        let mut empty = spec();
        empty.argv.clear();
        assert!(exec_image(&empty).is_err());
        let mut bad = spec();
        bad.env.push(("A=B".into(), "x".into()));
        assert!(exec_image(&bad).is_err());
        let mut nul = spec();
        nul.argv.push("a\0b".into());
        assert!(exec_image(&nul).is_err());
    }
}
