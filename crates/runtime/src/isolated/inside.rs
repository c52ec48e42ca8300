//! `run:inside`: a process started inside a running isolated dyno.
//!
//! The process must not be a way around any of the dyno's walls, so it gets
//! exactly the dyno's: crew forks a small supervisor, which
//! 1. joins the dyno's cgroup through files the parent opened (v1's `tasks`,
//!    v2's `cgroup.procs`), so it and all it starts count against the dyno's
//!    limits and die with the dyno's `cgroup.kill`;
//! 2. joins every namespace of the dyno's init at once (`setns` on its pidfd:
//!    mount, pid, uts, ipc, net and cgroup), which also makes its root and
//!    working directory the dyno's root;
//! 3. opens a terminal on the dyno's own devpts if one was asked for;
//! 4. forks the process (the first child to be in the dyno's pid namespace),
//!    which takes the tail of the dyno's own setup plan (an empty capability
//!    bounding set, the app's uid and gid, no_new_privs, the same seccomp
//!    filters, `chdir /app`) and execs `/bin/sh -c COMMAND` with the dyno's
//!    environment;
//! 5. stays outside the dyno's pid namespace, as root, only to reap that one
//!    child, pass signals to its session and report its wait status.
//!
//! When the dyno ends, the kernel kills every process of its pid namespace,
//! this one included, and the supervisor then exits too.
//!
//! Invariants:
//! - Between the fork and the exit, the supervisor and the process only walk
//!   data built before the fork and make system calls (no allocation, no
//!   locks), as the dyno's own init does.
//! - The privilege steps are the dyno plan's own (see [`privilege_steps`]),
//!   so a new wall in the plan is a wall here too.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::dyno::Dyno;
use super::exec_image::exec_image;
use super::plan;
use super::runtime::IsolatedRuntime;
use crate::init::step::{EXEC_STEP, READY_STEP, Step, fd};
use crate::init::sys::{CHILD_FDS, Errno, Sys};
use crate::os::{self, Forked, LinuxSys};
use crate::terminal::{ConsoleFds, DynoStdio};
use crate::{DynoInput, DynoSpec, Entered, ExitStatus, RuntimeError, Signal};

/// The setup record step number for "could not join the dyno's namespaces".
const SETNS_STEP: u32 = u32::MAX - 2;

/// How long the supervisor's setup may take.
const SETUP: Duration = Duration::from_secs(10);

/// What of a running dyno a process inside it needs.
#[derive(Clone)]
pub(crate) struct Target {
    pub runtime: IsolatedRuntime,
    /// The dyno's slug on the host (canonical), for the dyno's plan and for
    /// its environment's paths.
    pub slug: PathBuf,
}

/// The steps of a dyno's plan that drop to its walls, from the bounding set
/// on (the parent-death check is the init's, not ours).
pub(crate) fn privilege_steps(steps: &[Step]) -> Vec<Step> {
    let from = steps
        .iter()
        .position(|s| *s == Step::DropBoundingSet)
        .unwrap_or(steps.len());
    steps[from..]
        .iter()
        .filter(|s| !matches!(s, Step::CheckParent))
        .cloned()
        .collect()
}

/// Starts `spec` inside `dyno`. Must run inside a tokio runtime.
pub(crate) fn enter(
    dyno: &Arc<Dyno>,
    target: &Target,
    spec: &DynoSpec,
) -> Result<Entered, RuntimeError> {
    let fail = |reason: String| RuntimeError::Inside {
        dyno: spec.name.clone(),
        reason,
    };
    if dyno.exited() {
        return Err(fail("the dyno is not running".into()));
    }
    let (uid, gid) = match target.runtime.user {
        Some((uid, gid)) if uid != 0 && gid != 0 && uid != u32::MAX && gid != u32::MAX => {
            (uid, gid)
        }
        _ => return Err(fail("the app has no uid of its own".into())),
    };
    let terminal = match spec.input {
        DynoInput::Terminal { cols, rows } => Some((cols, rows)),
        _ => None,
    };
    let mut image_spec = spec.clone();
    image_spec.cwd = target.slug.clone();
    let image = exec_image(&image_spec).map_err(|e| fail(e.to_string()))?;
    let setup = plan::Setup {
        hostname: &spec.name,
        uid,
        gid,
        terminal: None,
    };
    let dyno_plan = plan::build(&target.runtime.shared.layout, &setup, &target.slug)
        .map_err(|_| fail("the dyno name or slug path contains a NUL byte".into()))?;
    let mut before = Vec::new();
    if let Some((cols, rows)) = terminal {
        before.push(Step::Terminal {
            ptmx: c("/dev/pts/ptmx")?,
            uid,
            gid,
            cols,
            rows,
        });
    }
    let after = privilege_steps(&dyno_plan);
    if !after.contains(&Step::SetUid(uid)) {
        return Err(fail("the dyno's plan has no drop to its user".into()));
    }
    let pidfd = os::pidfd_open(dyno.pid).map_err(|e| fail(format!("opening its init: {e}")))?;
    let pipe_error = |e: io::Error| fail(format!("making its pipes: {e}"));

    let (launched, output, console) = if terminal.is_some() {
        let (ours, theirs) = os::socket_pair().map_err(pipe_error)?;
        let io = [
            theirs.try_clone().map_err(pipe_error)?,
            theirs.try_clone().map_err(pipe_error)?,
            theirs,
        ];
        let launched = launch(dyno, &pidfd, &image, &before, &after, io).map_err(fail)?;
        let controller = os::receive_fd(&ours)
            .and_then(|controller| {
                os::set_nonblocking(&controller)?;
                Ok(controller)
            })
            .map_err(|e| {
                launched.kill();
                fail(format!("receiving its terminal: {e}"))
            })?;
        let output = controller.try_clone().map_err(pipe_error)?;
        (launched, output, Some(ConsoleFds::Terminal { controller }))
    } else {
        let stdio = DynoStdio::new(DynoInput::Pipe, None).map_err(pipe_error)?;
        let io = [stdio.stdin, stdio.stdout, stdio.stderr];
        let launched = launch(dyno, &pidfd, &image, &before, &after, io).map_err(fail)?;
        (launched, stdio.output, stdio.console)
    };
    let (output, console) = match crate::terminal::streams(&spec.name, output, console) {
        Ok(s) => s,
        Err(e) => {
            launched.kill();
            return Err(e);
        }
    };
    let Launched {
        pidfd: supervisor,
        status,
    } = launched;
    let supervisor = Arc::new(supervisor);
    let hangup = {
        let supervisor = supervisor.clone();
        Box::new(move || os::pidfd_signal(&supervisor, Signal::Hup)) as Box<dyn FnOnce() + Send>
    };
    let exit = Box::pin(async move { wait(&supervisor, &status).await });
    Ok(Entered {
        output,
        console,
        exit,
        hangup,
    })
}

fn c(text: &str) -> Result<CString, RuntimeError> {
    CString::new(text).map_err(|_| RuntimeError::Inside {
        dyno: String::new(),
        reason: format!("{text:?} contains a NUL byte"),
    })
}

/// The supervisor, running.
struct Launched {
    pidfd: OwnedFd,
    /// Where the supervisor writes the process's wait status.
    status: OwnedFd,
}

impl Launched {
    fn kill(&self) {
        os::pidfd_signal(&self.pidfd, Signal::Kill);
        let _ = os::pidfd_reap(&self.pidfd, true);
    }
}

/// Forks the supervisor with `io` as its descriptors 0, 1 and 2 (it joins the
/// dyno's cgroup itself) and waits until the process runs or its setup failed.
fn launch(
    dyno: &Dyno,
    target: &OwnedFd,
    image: &os::ExecImage,
    before: &[Step],
    after: &[Step],
    io: [OwnedFd; 3],
) -> Result<Launched, String> {
    let text = |what: &str, e: io::Error| format!("{what}: {e}");
    let (setup_r, setup_w) = os::pipe().map_err(|e| text("making a pipe", e))?;
    let (status_r, status_w) = os::pipe().map_err(|e| text("making a pipe", e))?;
    let (go_r, go_w) = os::pipe().map_err(|e| text("making a pipe", e))?;
    let procs = dyno
        .cgroup
        .join_files()
        .map_err(|e| text("opening the dyno's cgroup", e))?;
    let Some(first) = procs.first() else {
        return Err("the dyno's cgroup has no file to join it through".into());
    };
    // On v2 the second place holds the first file again (as for the init).
    let second = procs.get(1).unwrap_or(first);
    let fds: [RawFd; CHILD_FDS] = [
        io[0].as_raw_fd(),
        io[1].as_raw_fd(),
        io[2].as_raw_fd(),
        setup_w.as_raw_fd(),
        status_w.as_raw_fd(),
        go_r.as_raw_fd(),
        first.as_raw_fd(),
        second.as_raw_fd(),
    ];
    let sys = LinuxSys::new(image, None);
    let raw = Raw {
        target: target.as_raw_fd(),
        setup: setup_w.as_raw_fd(),
        cgroups: procs.iter().map(|f| f.as_raw_fd()).collect(),
    };
    let pid = match sys.fork() {
        Err(errno) => return Err(text("forking", errno.io_error())),
        Ok(Forked::Child) => {
            let code = supervise(&sys, &raw, before, after, &fds);
            os::exit_now(code)
        }
        Ok(Forked::Parent(pid)) => pid as u32,
    };
    drop((io, setup_w, status_w, go_r, raw, procs));
    let pidfd = match os::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            os::signal_process(pid, Signal::Kill);
            let _ = os::reap_blocking(pid);
            return Err(text("pidfd_open", e));
        }
    };
    let launched = Launched {
        pidfd,
        status: status_r,
    };
    let fail = |launched: Launched, why: String| {
        launched.kill();
        Err(why)
    };
    let records = os::read_setup_records(&setup_r, SETUP);
    drop(go_w);
    let records = match records {
        Ok(r) => r,
        Err(e) => return fail(launched, text("its setup", e)),
    };
    if let Some(&(step, errno)) = records.iter().find(|(step, _)| *step != READY_STEP) {
        let err = Errno(errno).io_error();
        let at = usize::try_from(step).ok();
        let why = match step {
            SETNS_STEP => format!("could not join the dyno's namespaces: {err}"),
            EXEC_STEP => format!("could not exec /bin/sh: {err}"),
            _ => match at.and_then(|i| before.iter().chain(after).nth(i)) {
                Some(step) => format!("could not {step}: {err}"),
                None => format!("could not start its process: {err}"),
            },
        };
        return fail(launched, why);
    }
    if records.is_empty() {
        return fail(launched, "its supervisor ended during setup".into());
    }
    os::set_nonblocking(&launched.status).map_err(|e| text("its status pipe", e))?;
    Ok(launched)
}

/// The descriptors the supervisor uses before it arranges its own.
struct Raw {
    target: RawFd,
    setup: RawFd,
    /// The files to join the dyno's cgroup through (two on cgroup v1). Made
    /// before the fork: the supervisor must not allocate.
    cgroups: Vec<RawFd>,
}

/// The supervisor (see the module's comment); returns its exit code.
fn supervise(
    sys: &LinuxSys<'_>,
    raw: &Raw,
    before: &[Step],
    after: &[Step],
    fds: &[RawFd; CHILD_FDS],
) -> i32 {
    if sys.block_signals().is_err() {
        return 126;
    }
    for &file in &raw.cgroups {
        if let Err(errno) = sys.join_cgroup(file) {
            sys.report(raw.setup, SETNS_STEP, errno.0);
            return 1;
        }
    }
    if let Err(errno) = join_namespaces(raw.target) {
        sys.report(raw.setup, SETNS_STEP, errno.0);
        return 1;
    }
    if sys.arrange_fds(fds).is_err() {
        return 126;
    }
    for (index, step) in before.iter().enumerate() {
        if let Err(errno) = step.run(sys) {
            sys.report(fd::SETUP, u32::try_from(index).unwrap_or(0), errno.0);
            return 1;
        }
    }
    match sys.fork() {
        Err(errno) => {
            sys.report(fd::SETUP, EXEC_STEP, errno.0);
            1
        }
        Ok(Forked::Child) => {
            for (index, step) in after.iter().enumerate() {
                if let Err(errno) = step.run(sys) {
                    let index = before.len() + index;
                    sys.report(fd::SETUP, u32::try_from(index).unwrap_or(0), errno.0);
                    return 1;
                }
            }
            let errno = sys.exec_app();
            sys.report(fd::SETUP, EXEC_STEP, errno.0);
            127
        }
        Ok(Forked::Parent(process)) => {
            sys.report(fd::SETUP, READY_STEP, 0);
            // Only the process holds its streams and the setup pipe now, so
            // its client sees their end when the process ends.
            for n in [0, 1, 2, fd::SETUP, fd::GO, fd::CGROUP, fd::CGROUP_PIDS] {
                let _ = sys.close(n);
            }
            forward_until_exit(sys, process)
        }
    }
}

/// Signals the supervisor passes on to the process's session.
const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Reaps the process and hands signals to its session (it is a session
/// leader: `exec_app` calls `setsid`); exits with the process's status.
fn forward_until_exit(sys: &LinuxSys<'_>, process: i32) -> i32 {
    loop {
        let signal = match sys.wait_signal() {
            Ok(s) => s,
            Err(errno) if errno.0 == libc::EINTR => continue,
            Err(_) => return 1,
        };
        if signal == libc::SIGCHLD {
            while let Some((pid, status)) = sys.reap() {
                if pid == process {
                    sys.write_status(fd::STATUS, status);
                    return ExitStatus::from_wait(status).code();
                }
            }
        } else if FORWARDED.contains(&signal) {
            // The process is a session (and group) leader: `exec_app` calls setsid.
            os::signal_group_raw(process, signal);
        }
    }
}

/// Joins every namespace of the process behind `pidfd` (Linux 5.8 or later).
fn join_namespaces(pidfd: RawFd) -> Result<(), Errno> {
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP;
    os::join_namespaces_of(pidfd, flags)
}

/// Resolves with the process's status once the supervisor exits.
async fn wait(supervisor: &OwnedFd, status: &OwnedFd) -> ExitStatus {
    let readable = supervisor.try_clone().and_then(os::async_readable).ok();
    while !os::pidfd_exited(supervisor) {
        match &readable {
            Some(fd) => match fd.readable().await {
                Ok(mut guard) => {
                    if !os::pidfd_exited(supervisor) {
                        guard.clear_ready();
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    drop(readable);
    match os::pidfd_reap(supervisor, true) {
        Ok(Some(ExitStatus::Code(code))) => os::read_status(status)
            .map(ExitStatus::from_wait)
            .unwrap_or(ExitStatus::Code(code)),
        Ok(Some(signaled)) => signaled,
        _ => ExitStatus::Code(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_privilege_steps_are_the_plans_tail_without_the_parent_check() {
        let steps = vec![
            Step::DeathSignal,
            Step::PivotRoot,
            Step::DropBoundingSet,
            Step::SetUid(7),
            Step::CheckParent,
            Step::Chdir(CString::new("/app").expect("no NUL")),
        ];
        assert_eq!(
            privilege_steps(&steps),
            vec![
                Step::DropBoundingSet,
                Step::SetUid(7),
                Step::Chdir(CString::new("/app").expect("no NUL")),
            ]
        );
        assert!(privilege_steps(&[Step::PivotRoot]).is_empty());
    }
}
