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

/// The kernel's `struct clone_args` for `clone3`: every field is 64 bits
/// wide on every architecture. (The libc crate has it on a few only.)
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3`'s flag for starting the child in the cgroup v2 group `cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Whether `clone3` can start a process in a cgroup v2 group here: Linux 5.7
/// or later, and no seccomp filter refusing `clone3` (Docker's default
/// profile answers ENOSYS). Asks with the largest descriptor number, which
/// cannot be open: EBADF means the kernel got as far as looking the group up.
pub(crate) fn can_clone_into_cgroup() -> bool {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: i32::MAX as u64,
        ..CloneArgs::default()
    };
    // SAFETY: the group's descriptor is not open, so the kernel refuses
    // before any child exists; were one made all the same, it leaves at once
    // (only a system call) and is reaped here.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        0 => exit_now(0),
        pid if pid > 0 => {
            let _ = super::reap_blocking(u32::try_from(pid).unwrap_or(0));
            true
        }
        _ => errno().0 == libc::EBADF,
    }
}

/// Starts a dyno's init: a child in new mount, pid, uts and ipc namespaces (so it
/// is pid 1 of its own) that walks `steps` through `sys`, forks the app and
/// stays as its init; see `init::child::dyno_init`. With `cgroup` (a cgroup v2
/// group's directory) it starts in that group. Returns the child's pid.
pub(crate) fn clone_dyno(
    sys: &LinuxSys<'_>,
    steps: &[Step],
    fds: &[RawFd; CHILD_FDS],
    timed: bool,
    cgroup: Option<RawFd>,
) -> io::Result<u32> {
    let namespaces =
        (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) as u64;
    // SAFETY (both calls): the child is a copy of this process with only this
    // thread, so locks held by other threads (the allocator's among them) stay
    // held forever in it. It runs `dyno_init`, which only walks data built
    // before this call and makes system calls through `LinuxSys` (no
    // allocation, no locks, no panics), and then leaves with _exit, so no
    // destructor or atexit handler of the copy runs.
    let ret = match cgroup {
        None => unsafe { raw_clone((namespaces | libc::SIGCHLD as u64) as libc::c_ulong) },
        Some(dir) => {
            let args = CloneArgs {
                flags: namespaces | CLONE_INTO_CGROUP,
                exit_signal: libc::SIGCHLD as u64,
                cgroup: u64::try_from(dir).map_err(|_| io::Error::other("a bad descriptor"))?,
                ..CloneArgs::default()
            };
            // SAFETY: as above; `args` is a valid clone_args for the
            // duration of the call, and stack 0 means fork semantics (the
            // child continues on a copy of this stack).
            unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            }
        }
    };
    match ret {
        r if r < 0 && cgroup.is_some() => {
            let e = io::Error::last_os_error();
            Err(match e.raw_os_error() {
                Some(libc::ENOSYS | libc::E2BIG) => io::Error::new(
                    e.kind(),
                    format!(
                        "cannot clone a dyno into its cgroup v2 group (Linux 5.7 or later is needed): {e}"
                    ),
                ),
                _ => e,
            })
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Signal;
    use crate::os::{ExecImage, LinuxSys, is_root, pipe, reap_blocking, signal_process};
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    /// Where a cgroup v2 hierarchy is mounted, if anywhere (on a v1 host,
    /// often a unified one without controllers).
    fn cgroup2_mount() -> Option<PathBuf> {
        let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
        info.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
    }

    /// The dyno's init, cloned with a v2 group's directory, is born in that
    /// group: it never joins it, so never takes the kernel's lock on
    /// thread groups (see `DynoCgroup::clone_dir`).
    #[test]
    fn an_init_cloned_with_a_v2_group_is_born_in_it() {
        if !is_root() {
            eprintln!("skipped: needs root (an_init_cloned_with_a_v2_group_is_born_in_it)");
            return;
        }
        let Some(mount) = cgroup2_mount() else {
            eprintln!("skipped: no cgroup v2 hierarchy is mounted here");
            return;
        };
        let name = format!("crew-clone3-test-{}", std::process::id());
        let group = mount.join(&name);
        fs::create_dir(&group).unwrap();
        let dir = fs::File::open(&group).unwrap();
        // No setup steps: the init starts its app, which sleeps until killed.
        let image = ExecImage {
            program: c"/bin/sleep".into(),
            argv: vec![c"sleep".into(), c"60".into()],
            envp: vec![],
            terminal: false,
        };
        let works = can_clone_into_cgroup();
        let sys = LinuxSys::new(&image, None);
        let null = fs::File::open("/dev/null").unwrap();
        let (_setup_r, setup_w) = pipe().unwrap();
        let (_status_r, status_w) = pipe().unwrap();
        let (go_r, _go_w) = pipe().unwrap();
        let n = null.as_raw_fd();
        let fds = [
            n,
            n,
            n,
            setup_w.as_raw_fd(),
            status_w.as_raw_fd(),
            go_r.as_raw_fd(),
            n,
            n,
        ];
        let pid = clone_dyno(&sys, &[], &fds, false, Some(dir.as_raw_fd()));
        let membership = pid
            .as_ref()
            .ok()
            .and_then(|pid| fs::read_to_string(format!("/proc/{pid}/cgroup")).ok());
        if let Ok(pid) = &pid {
            signal_process(*pid, Signal::Kill);
            reap_blocking(*pid);
        }
        // The group goes once the init's pid namespace (the app) is gone too.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::remove_dir(&group).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The probe says what the clone found.
        assert_eq!(works, pid.is_ok(), "probe {works}, clone {pid:?}");
        let Ok(pid) = pid else {
            eprintln!("skipped: clone3 cannot start a process in a group here");
            return;
        };
        let membership = membership.expect("the init's /proc/PID/cgroup");
        assert!(
            membership
                .lines()
                .any(|l| l.starts_with("0::") && l.ends_with(&format!("/{name}"))),
            "init {pid} is not in {name}: {membership}"
        );
        assert!(!group.exists(), "{} was left behind", group.display());
    }
}
