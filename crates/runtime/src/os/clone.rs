//! New processes without std's `Command`: the `clone` of an isolated dyno's
//! init into new namespaces, and the plain fork of `run:inside`'s
//! supervisor, which then joins a running dyno's namespaces.
//!
//! Both children are copies of a multi-threaded process with one thread:
//! they may only make system calls until they exec or `_exit`.

use std::fs;
use std::io;
use std::os::fd::RawFd;

use super::linux_sys::{LinuxSys, check, errno};
use crate::init::child::dyno_init;
use crate::init::step::Step;
use crate::init::sys::{CHILD_FDS, SysResult};

/// Which side of a plain fork the caller is on (`run:inside`'s supervisor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    Child,
    Parent(i32),
}

impl LinuxSys<'_> {
    /// A plain fork (no new namespaces), for `run:inside`'s supervisor and its
    /// one process. The child may only make system calls until it execs or
    /// calls [`exit_now`].
    pub(crate) fn fork(&self) -> SysResult<Forked> {
        // SAFETY: a raw clone with only SIGCHLD is fork(2) without glibc's atfork
        // handlers (whose locks may be held by threads that do not exist in this
        // copy). The child only makes system calls and then execs or _exits.
        let ret = unsafe { raw_clone(libc::SIGCHLD as libc::c_ulong) };
        match ret {
            r if r < 0 => Err(errno()),
            0 => Ok(Forked::Child),
            pid => Ok(Forked::Parent(pid as i32)),
        }
    }
}

/// Ends a forked child at once, without running anything of the parent's
/// copy (no atexit handlers, no destructors, no stdio flush).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) only ends this process.
    unsafe { libc::_exit(code) }
}

/// Joins the namespaces `flags` names of the process behind `pidfd` (setns on
/// a pidfd: Linux 5.8 or later), all at once.
pub(crate) fn join_namespaces_of(pidfd: RawFd, flags: libc::c_int) -> SysResult {
    // SAFETY: setns(2) on a descriptor number this process holds; it changes
    // only this (single-threaded, freshly forked) process's namespaces.
    check(unsafe { libc::setns(pidfd, flags) })
}

/// `clone(flags)` with no new stack: fork semantics, plus whatever namespaces
/// `flags` asks for.
///
/// # Safety
/// The child runs on a copy of the caller's memory with only the calling thread:
/// it may only make system calls until it execs or `_exit`s.
unsafe fn raw_clone(flags: libc::c_ulong) -> libc::c_long {
    // s390 takes the stack first and the flags second.
    #[cfg(target_arch = "s390x")]
    // SAFETY: see the function's contract.
    let ret = unsafe { libc::syscall(libc::SYS_clone, 0usize, flags, 0usize, 0usize, 0usize) };
    #[cfg(not(target_arch = "s390x"))]
    // SAFETY: see the function's contract.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    ret
}

/// Starts a dyno's init: a child in new mount, pid, uts and ipc namespaces (so it
/// is pid 1 of its own) that walks `steps` through `sys`, forks the app and
/// stays as its init; see `init::child::dyno_init`. Returns the child's pid.
pub(crate) fn clone_dyno(
    sys: &LinuxSys<'_>,
    steps: &[Step],
    fds: &[RawFd; CHILD_FDS],
    timed: bool,
) -> io::Result<u32> {
    let flags = (libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: the child is a copy of this process with only this thread, so locks
    // held by other threads (the allocator's among them) stay held forever in it.
    // It runs `dyno_init`, which only walks data built before this call and makes
    // system calls through `LinuxSys` (no allocation, no locks, no panics), and
    // then leaves with _exit, so no destructor or atexit handler of the copy runs.
    let ret = unsafe { raw_clone(flags) };
    match ret {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => {
            let code = dyno_init(sys, steps, fds, timed);
            // SAFETY: ends the child without running anything of the parent's copy.
            unsafe { libc::_exit(code) }
        }
        pid => u32::try_from(pid).map_err(|_| io::Error::other("clone returned a bad pid")),
    }
}

/// Where this process's argument strings are, from `/proc/self/stat`.
pub(crate) fn cmdline_area() -> Option<(usize, usize)> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields 48 and 49 (arg_start, arg_end); `after` starts at field 3.
    let mut fields = after.split_whitespace().skip(45);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    Some((start, end))
}
