//! Processes: the hooks crew sets on the `Command`s it spawns (parent-death
//! signal, default signal dispositions, a controlling terminal), signals to
//! a process or a group, what `/proc` says about one, reaping, and crew's own
//! process (subreaper, descriptor limit, effective user, umask).
//!
//! Everything here works on processes by pid or group; the dyno's init, which
//! crew starts without `Command`, is in `clone` and `linux_sys`.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;

use rustix::process::{Pid, WaitOptions};

use crate::{ExitStatus, Signal};

pub(super) fn to_os(signal: Signal) -> rustix::process::Signal {
    use rustix::process::Signal as S;
    match signal {
        Signal::Hup => S::HUP,
        Signal::Int => S::INT,
        Signal::Quit => S::QUIT,
        Signal::Kill => S::KILL,
        Signal::Usr1 => S::USR1,
        Signal::Usr2 => S::USR2,
        Signal::Term => S::TERM,
    }
}

pub(super) fn pid(raw: u32) -> Option<Pid> {
    i32::try_from(raw).ok().and_then(Pid::from_raw)
}

/// Makes the child die with SIGKILL when the thread that spawned it exits. Linux
/// ties this to the spawning thread, so crew only spawns from long-lived runtime
/// threads; the watchdog covers the rest.
pub fn die_with_parent(command: &mut std::process::Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which
    // is async-signal-safe and touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(io::Error::from)
        });
    }
}

/// Starts the child with every signal at its default action and none blocked,
/// as an isolated dyno starts. Ignored signals survive exec: under `nohup`, or
/// `crew server &` from a script (which ignores SIGINT and SIGQUIT), a dyno
/// would otherwise ignore the SIGHUP of a closed `crew run` or the signals
/// crew stops it with.
pub fn default_signals(command: &mut std::process::Command) {
    // SAFETY: the closure runs between fork and exec and only calls
    // sigaction(2) and sigprocmask(2), both async-signal-safe, on this
    // process's own signal state, with a zeroed (SIG_DFL) action and an empty
    // set that live on its stack.
    unsafe {
        command.pre_exec(|| {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            for signal in 1..libc::SIGRTMAX() {
                if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                    libc::sigaction(signal, &default, std::ptr::null_mut());
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Makes the child the leader of a new session whose controlling terminal is its
/// stdin, so the terminal's Ctrl-C, window changes and hang-up reach it. Used
/// instead of a new process group: a group leader cannot start a session.
pub fn take_terminal(command: &mut std::process::Command) {
    // SAFETY: the closure runs between fork and exec and only calls setsid(2) and
    // ioctl(2) on descriptor 0, both async-signal-safe, touching no memory shared
    // with the parent.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid().map_err(io::Error::from)?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin()).map_err(io::Error::from)
        });
    }
}

/// Raises the soft limit on open files to the hard limit, so a server's
/// connections, pipes and dynos have all the descriptors the system allows;
/// gives the limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(hard) = limit.maximum else {
        // No hard limit: keep the soft one, which the kernel already allows.
        return Ok(limit.current.unwrap_or(u64::MAX));
    };
    if limit.current.is_some_and(|soft| soft >= hard) {
        return Ok(hard);
    }
    setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    )?;
    Ok(hard)
}

/// Orphaned descendants are re-parented to crew instead of init, so crew can find
/// processes that left their group and reap what init here would leave as zombies.
pub fn become_subreaper() -> io::Result<()> {
    rustix::process::set_child_subreaper(rustix::process::getpid().into()).map_err(io::Error::from)
}

/// Signals every process in the group. A group that is already gone is fine.
pub fn signal_group(pgid: u32, signal: Signal) {
    if let Some(pgid) = pid(pgid) {
        let _ = rustix::process::kill_process_group(pgid, to_os(signal));
    }
}

pub fn signal_process(target: u32, signal: Signal) {
    if let Some(target) = pid(target) {
        let _ = rustix::process::kill_process(target, to_os(signal));
    }
}

/// `kill(-group, signal)` with a raw signal number: every process of one
/// process group (for signals the `Signal` enum does not name).
pub(crate) fn signal_group_raw(group: i32, signal: i32) {
    if group <= 0 {
        return;
    }
    // SAFETY: kill(2) with a negative pid names that process group and
    // nothing else; `group` > 0 so it is never -1 (every process).
    unsafe { libc::kill(-group, signal) };
}

/// Whether any process, zombies included, is still in the group.
pub fn group_exists(pgid: u32) -> bool {
    match pid(pgid) {
        Some(pgid) => rustix::process::test_kill_process_group(pgid).is_ok(),
        None => false,
    }
}

/// The pids of crew's own children, read from `/proc`.
pub fn own_children() -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return children;
    };
    for task in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(task.path().join("children")) {
            children.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    children.sort_unstable();
    children.dedup();
    children
}

/// The process state letter from `/proc/PID/stat` (`Z` for a zombie).
pub fn process_state(target: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{target}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces or parens.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// The process group of a process, from `/proc/PID/stat`.
pub fn process_group_of(target: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{target}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: state, ppid, pgrp.
    after.split_whitespace().nth(2)?.parse().ok()
}

/// The command line of a process, for reports.
pub fn command_line(target: u32) -> String {
    match fs::read(format!("/proc/{target}/cmdline")) {
        Ok(raw) => String::from_utf8_lossy(&raw)
            .split('\0')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => String::from("?"),
    }
}

/// Reaps one child if it has exited.
pub fn reap(target: u32) -> Option<ExitStatus> {
    let (_, status) = rustix::process::waitpid(pid(target), WaitOptions::NOHANG).ok()??;
    Some(match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signaled(sig),
        (None, None) => ExitStatus::Code(-1),
    })
}

/// Waits for a child to exit and reaps it.
pub(crate) fn reap_blocking(target: u32) -> Option<ExitStatus> {
    let (_, status) = rustix::process::waitpid(pid(target), WaitOptions::empty()).ok()??;
    Some(match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signaled(sig),
        (None, None) => ExitStatus::Code(-1),
    })
}

/// Whether a process (not a zombie) with this pid exists. For processes crew did
/// not start, such as a `crew run` that registered itself.
pub fn process_alive(target: u32) -> bool {
    match pid(target) {
        Some(p) => {
            rustix::process::test_kill_process(p).is_ok() && process_state(target) != Some('Z')
        }
        None => false,
    }
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Binds a Unix socket that only this user can connect to: the mode is 0600
/// from the moment the socket exists, since the umask is tightened around bind.
pub fn bind_private_socket(path: &std::path::Path) -> io::Result<std::os::unix::net::UnixListener> {
    use rustix::fs::Mode;
    let old = rustix::process::umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    rustix::process::umask(old);
    bound
}
