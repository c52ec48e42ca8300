//! Pidfds: handles on a process (an isolated dyno's init, `run:inside`'s
//! supervisor) that cannot come to name another process once it is reaped,
//! unlike a pid.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::fd::poll_readable;
use super::process::{pid, to_os};
use crate::{ExitStatus, Signal};

pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = self::pid(pid).ok_or_else(|| io::Error::other("bad pid"))?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).map_err(io::Error::from)
}

/// Signals the process behind a pidfd; a process that is gone is fine.
pub(crate) fn pidfd_signal(pidfd: &OwnedFd, signal: Signal) {
    let _ = rustix::process::pidfd_send_signal(pidfd, to_os(signal));
}

/// Whether the process behind a pidfd has exited.
pub(crate) fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    poll_readable(pidfd)
}

/// Reaps the child behind a pidfd. `None` if it has not exited yet (or when
/// `block`, never).
pub(crate) fn pidfd_reap(pidfd: &OwnedFd, block: bool) -> io::Result<Option<ExitStatus>> {
    use rustix::process::{WaitId, WaitIdOptions};
    let mut options = WaitIdOptions::EXITED;
    if !block {
        options |= WaitIdOptions::NOHANG;
    }
    loop {
        match rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), options) {
            Ok(Some(status)) => {
                return Ok(Some(
                    match (status.exit_status(), status.terminating_signal()) {
                        (_, Some(sig)) => ExitStatus::Signaled(sig),
                        (Some(code), None) => ExitStatus::Code(code),
                        (None, None) => ExitStatus::Code(-1),
                    },
                ));
            }
            Ok(None) => return Ok(None),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
