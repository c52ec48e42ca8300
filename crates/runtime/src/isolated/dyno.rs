//! A running isolated dyno as its handles share it ([`Dyno`]: the init's
//! pidfd, the cgroup, the network lease), and the task that watches it until
//! its app exits ([`supervise`]): memory events, the exit status, and the
//! cgroup's removal once the init is gone.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use super::cgroup::DynoCgroup;
use super::memory::MemoryWatch;
use crate::dyno_network::Lease;
use crate::os;
use crate::{ExitStatus, Signal};

/// How often a running dyno's memory counters are read.
const MEMORY_POLL: Duration = Duration::from_millis(500);

/// What the process handle, its group and its supervisor share.
pub(super) struct Dyno {
    /// The init's pid on the host.
    pub(super) pid: u32,
    pub(super) pidfd: OwnedFd,
    pub(super) cgroup: DynoCgroup,
    /// Its address, given back when the last handle on the dyno goes.
    pub(super) lease: Option<Lease>,
}

impl Dyno {
    pub(super) fn exited(&self) -> bool {
        os::pidfd_exited(&self.pidfd)
    }

    pub(super) fn kill(&self) {
        os::pidfd_signal(&self.pidfd, Signal::Kill);
        self.cgroup.kill();
    }
}

/// Watches one dyno until its app exits: memory events become R14/R15 lines
/// (and a kill), then the exit status goes to `wait`, and once the init is
/// gone too the cgroup is removed.
///
/// The status is taken from the status pipe as soon as the init writes it:
/// by then every other process of the dyno is killed and reaped (see
/// `crate::init::child::init_loop`), and only the init's own exit is left, in which the
/// kernel tears down the dyno's namespaces; that need not delay the report.
/// If the pipe closes without a status, the init died (a kill) and its own
/// status is the dyno's.
pub(super) async fn supervise(
    dyno: Arc<Dyno>,
    status_pipe: OwnedFd,
    quota: u64,
    notices: mpsc::UnboundedSender<String>,
    done: oneshot::Sender<io::Result<ExitStatus>>,
) {
    let mut watch = MemoryWatch::new(quota);
    let mut counters = (0, 0);
    let mut observe = |watch: &mut MemoryWatch| {
        let now = dyno.cgroup.counters();
        if now == counters {
            return;
        }
        counters = now;
        let verdict = watch.observe(dyno.cgroup.memory(), Instant::now());
        for line in verdict.lines {
            let _ = notices.send(line);
        }
        if verdict.kill {
            dyno.kill();
        }
    };
    let mut tick = tokio::time::interval(MEMORY_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let exit = dyno.pidfd.try_clone().and_then(os::async_readable).ok();
    // Without a registered pipe, fall back to waiting for the init's exit,
    // after which the status is in the pipe all the same.
    let (status_pipe, status) = match os::async_readable(status_pipe) {
        Ok(pipe) => {
            loop {
                tokio::select! {
                    ready = readable(&pipe) => if ready { break },
                    _ = tick.tick() => observe(&mut watch),
                }
            }
            let status = os::read_status(pipe.get_ref());
            (Some(pipe), status)
        }
        Err(_) => (None, None),
    };
    let result = match status {
        Some(raw) => Ok(ExitStatus::from_wait(raw)),
        None => {
            while !dyno.exited() {
                tokio::select! {
                    () = exited(&dyno, exit.as_ref()) => {}
                    _ = tick.tick() => observe(&mut watch),
                }
            }
            match os::pidfd_reap(&dyno.pidfd, true) {
                Ok(Some(ExitStatus::Code(code))) => Ok(status_pipe
                    .as_ref()
                    .and_then(|p| os::read_status(p.get_ref()))
                    .map(ExitStatus::from_wait)
                    .unwrap_or(ExitStatus::Code(code))),
                Ok(Some(signaled)) => Ok(signaled),
                Ok(None) => Err(io::Error::other("the dyno's init vanished")),
                Err(e) => Err(e),
            }
        }
    };
    observe(&mut watch);
    // After an R15 the dyno was killed, even if its app managed a clean exit
    // before the kill landed: say so, so the engine treats it as a crash.
    let result = result.map(|status| {
        if watch.killed() && status.success() {
            ExitStatus::Signaled(Signal::Kill.number())
        } else {
            status
        }
    });
    drop(notices);
    let _ = done.send(result);
    // The init finishes its exit (or was reaped above); then its cgroup goes.
    while !dyno.exited() {
        exited(&dyno, exit.as_ref()).await;
    }
    drop(exit);
    let _ = os::pidfd_reap(&dyno.pidfd, false);
    dyno.cgroup.kill();
    for _ in 0..100 {
        if dyno.cgroup.remove() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(cgroup = %dyno.cgroup.path().display(), "could not remove a dyno's cgroup");
}

/// Resolves when a pipe has something to read or was closed: `true` then,
/// `false` on a spurious wake-up.
async fn readable(pipe: &AsyncFd<OwnedFd>) -> bool {
    match pipe.readable().await {
        Ok(mut guard) => {
            if os::poll_readable(pipe.get_ref()) {
                true
            } else {
                guard.clear_ready();
                false
            }
        }
        // The reactor failed: the pidfd path takes over.
        Err(_) => true,
    }
}

/// Resolves when the pidfd may have become readable.
async fn exited(dyno: &Dyno, fd: Option<&AsyncFd<OwnedFd>>) {
    match fd {
        Some(fd) => match fd.readable().await {
            Ok(mut guard) => {
                if !dyno.exited() {
                    guard.clear_ready();
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        },
        None => tokio::time::sleep(Duration::from_millis(50)).await,
    }
}
