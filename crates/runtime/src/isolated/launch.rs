//! The parent's side of starting a dyno: one long-lived thread makes every
//! `clone` (the init's parent-death signal follows that thread, so it must live
//! as long as crew), and the caller then reads the init's setup report. The
//! init is cloned into its cgroup (v2) or joins it itself through the files
//! opened here (v1), so nothing waits for a round trip between the two.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::cgroup::DynoCgroup;
use super::plan::describe;
use crate::init::step::{READY_STEP, Step, TIMING_BEGIN, is_timing};
use crate::init::sys::{CHILD_FDS, Errno};
use crate::os::{self, ExecImage, LinuxSys};
use crate::{ExitStatus, Signal};

/// Everything the init needs, built before the clone.
pub(crate) struct ChildPlan {
    pub steps: Vec<Step>,
    pub image: ExecImage,
    /// The init reports when each step ended ([`SetupTiming`]).
    pub timed: bool,
}

struct CloneRequest {
    plan: Arc<ChildPlan>,
    fds: [RawFd; CHILD_FDS],
    /// The network namespace the init starts in; `None`: the host's.
    network: Option<OwnedFd>,
    /// The cgroup v2 group the init starts in; `None`: it joins its group
    /// itself (v1).
    cgroup_dir: Option<fs::File>,
    reply: mpsc::SyncSender<io::Result<u32>>,
}

/// The thread that clones. It never ends: the channel's sender is a static.
///
/// A dyno with a network of its own is cloned into it: the thread enters the
/// dyno's network namespace for the `clone` (the child starts where its
/// parent thread is) and comes back to the host's at once.
fn spawner() -> io::Result<&'static mpsc::Sender<CloneRequest>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<CloneRequest>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<CloneRequest>();
            let cmdline = os::cmdline_area();
            std::thread::Builder::new()
                .name("crew-dynos".into())
                .spawn(move || {
                    let host = os::open_thread_network_namespace();
                    // Once the thread could not come back from a dyno's
                    // network, every later dyno would start in it: refuse.
                    let mut lost = false;
                    for request in rx {
                        // Allocation happens here, before the clone; the child
                        // only reads what already exists.
                        let sys = LinuxSys::new(&request.plan.image, cmdline);
                        let steps = &request.plan.steps;
                        let fds = request.fds;
                        let cgroup = request.cgroup_dir.as_ref().map(AsRawFd::as_raw_fd);
                        let result = match (&request.network, &host) {
                            _ if lost => Err(io::Error::other(
                                "the thread that starts dynos is stuck in a dyno's network",
                            )),
                            (None, _) => {
                                os::clone_dyno(&sys, steps, &fds, request.plan.timed, cgroup)
                            }
                            (Some(_), Err(e)) => Err(io::Error::new(
                                e.kind(),
                                format!("cannot open the host's network namespace: {e}"),
                            )),
                            (Some(network), Ok(host)) => {
                                match os::enter_network_namespace(network) {
                                    Ok(()) => {
                                        let result = os::clone_dyno(
                                            &sys,
                                            steps,
                                            &fds,
                                            request.plan.timed,
                                            cgroup,
                                        );
                                        lost = os::enter_network_namespace(host).is_err();
                                        result
                                    }
                                    Err(e) => Err(io::Error::new(
                                        e.kind(),
                                        format!("cannot enter the dyno's network namespace: {e}"),
                                    )),
                                }
                            }
                        };
                        drop(request.network);
                        let _ = request.reply.send(result);
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
        .ok_or_else(|| io::Error::other("cannot start the thread that starts dynos"))
}

/// A dyno whose app is running.
pub(crate) struct Launched {
    pub pid: u32,
    pub pidfd: OwnedFd,
    /// Where init writes the app's wait status before it exits (non-blocking).
    pub status: OwnedFd,
    /// For a timed plan, when each part of the start ended.
    pub timing: Option<SetupTiming>,
}

/// When each part of a timed start ended, on the monotonic clock in
/// microseconds (wrapping; see `os::monotonic_micros`).
pub(crate) struct SetupTiming {
    /// When `launch` began, in the parent.
    pub began: u32,
    /// When the init began, before its first step.
    pub init: u32,
    /// When each step ended: (its [`Step::kind`], time).
    pub steps: Vec<(&'static str, u32)>,
    /// When the parent saw the setup end: the app's exec.
    pub ready: u32,
}

/// What the init's descriptors 0, 1 and 2 are.
pub(crate) struct ChildIo {
    pub stdin: OwnedFd,
    pub output: OwnedFd,
    /// A stderr of its own; `None` merges it into `output`.
    pub errors: Option<OwnedFd>,
}

/// Clones the init, which joins `cgroup`, and waits until its app runs or its
/// setup failed. On failure nothing of the dyno is left running.
pub(crate) fn launch(
    plan: Arc<ChildPlan>,
    io: ChildIo,
    network: Option<OwnedFd>,
    cgroup: &DynoCgroup,
    timeout: Duration,
) -> io::Result<Launched> {
    let began = os::monotonic_micros();
    let (setup_r, setup_w) = os::pipe()?;
    let (status_r, status_w) = os::pipe()?;
    let (go_r, go_w) = os::pipe()?;
    let procs = cgroup.join_files()?;
    let cgroup_dir = cgroup.clone_dir()?;
    let Some(first) = procs.first() else {
        return Err(io::Error::other(
            "a cgroup without a file to join it through",
        ));
    };
    // On v2 the second place holds the first file again; only v1's plan
    // writes to it.
    let second = procs.get(1).unwrap_or(first);
    let fds = [
        os::raw(&io.stdin),
        os::raw(&io.output),
        os::raw(io.errors.as_ref().unwrap_or(&io.output)),
        os::raw(&setup_w),
        os::raw(&status_w),
        os::raw(&go_r),
        first.as_raw_fd(),
        second.as_raw_fd(),
    ];
    let (reply, answer) = mpsc::sync_channel(1);
    spawner()?
        .send(CloneRequest {
            plan: plan.clone(),
            fds,
            network,
            cgroup_dir,
            reply,
        })
        .map_err(|_| io::Error::other("the thread that starts dynos is gone"))?;
    let pid = answer
        .recv()
        .map_err(|_| io::Error::other("the thread that starts dynos is gone"))??;
    // The child has its copies; ours must close so end-of-file can happen.
    drop((io, setup_w, status_w, go_r, procs));

    let pidfd = match os::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            os::signal_process(pid, Signal::Kill);
            let _ = os::reap_blocking(pid);
            return Err(io::Error::new(
                e.kind(),
                format!("pidfd_open failed (Linux 5.3 or later is needed): {e}"),
            ));
        }
    };
    let fail = |pidfd: &OwnedFd, error: io::Error| -> io::Result<Launched> {
        os::pidfd_signal(pidfd, Signal::Kill);
        let _ = os::pidfd_reap(pidfd, true);
        Err(error)
    };
    let records = os::read_setup_records(&setup_r, timeout);
    let ready = os::monotonic_micros();
    let mut timings = None;
    drop(go_w);
    let records = match records {
        Ok(mut records) if plan.timed => {
            let mut timing = SetupTiming {
                began,
                init: began,
                steps: Vec::new(),
                ready,
            };
            records.retain(|&(step, time)| {
                if !is_timing(step) {
                    return true;
                }
                // The time travels in the errno field's bits.
                let time = time as u32;
                if step == TIMING_BEGIN {
                    timing.init = time;
                } else {
                    let index = (step & 0x3fff_ffff) as usize;
                    let kind = plan.steps.get(index).map_or("?", Step::kind);
                    timing.steps.push((kind, time));
                }
                false
            });
            timings = Some(timing);
            records
        }
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            return fail(
                &pidfd,
                io::Error::new(
                    e.kind(),
                    format!("the dyno's setup took longer than {timeout:?}"),
                ),
            );
        }
        Err(e) => return fail(&pidfd, e),
    };
    if let Some(&(step, errno)) = records.iter().find(|(step, _)| *step != READY_STEP) {
        let kind = Errno(errno).io_error().kind();
        return fail(
            &pidfd,
            io::Error::new(kind, describe(&plan.steps, step, Errno(errno))),
        );
    }
    if records.is_empty() {
        let status = os::pidfd_reap(&pidfd, true).ok().flatten();
        let text = match status {
            Some(ExitStatus::Code(126)) => {
                "the dyno's init could not arrange its descriptors".to_string()
            }
            Some(s) => format!("the dyno's init ended during setup (status {})", s.code()),
            None => "the dyno's init ended during setup".to_string(),
        };
        return fail(&pidfd, io::Error::other(text));
    }
    os::set_nonblocking(&status_r)?;
    Ok(Launched {
        pid,
        pidfd,
        status: status_r,
        timing: timings,
    })
}
