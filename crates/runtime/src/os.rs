//! The operating-system calls crew makes about processes. This is the only module
//! in crew with `unsafe` code; everything else goes through these functions.

use std::ffi::{CStr, CString, c_char};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use rustix::process::{Pid, WaitOptions};

use crate::init::child::{app_main, dyno_init};
use crate::init::step::Step;
use crate::init::sys::{CHILD_FDS, Errno, Sys, SysResult};
use crate::{ExitStatus, Signal};

fn to_os(signal: Signal) -> rustix::process::Signal {
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

fn pid(raw: u32) -> Option<Pid> {
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

/// A new pseudo-terminal of `cols` × `rows`: the controlling side (non-blocking)
/// and the dyno's side.
pub fn open_terminal(cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::OpenptFlags;
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let controller = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&controller)?;
    rustix::pty::unlockpt(&controller)?;
    let dyno_side = rustix::pty::ioctl_tiocgptpeer(&controller, flags)?;
    set_window_size(&controller, cols, rows)?;
    rustix::io::ioctl_fionbio(&controller, true)?;
    Ok((controller, dyno_side))
}

/// A connected pair of Unix stream sockets (close-on-exec).
pub(crate) fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

/// Takes the descriptor a dyno's init sent over `socket` (see
/// `Step::Terminal`), without waiting: it was sent before the init said it
/// was ready.
pub(crate) fn receive_fd(socket: &OwnedFd) -> io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::mem::MaybeUninit;
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    rustix::net::recvmsg(
        socket,
        &mut [io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(io::Error::other("the dyno's init sent no terminal"))
}

/// Sets a terminal's window size; the kernel then sends SIGWINCH to its
/// foreground process group.
pub fn set_window_size(terminal: impl AsFd, cols: u16, rows: u16) -> io::Result<()> {
    rustix::termios::tcsetwinsize(
        terminal,
        rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .map_err(io::Error::from)
}

/// Orphaned descendants are re-parented to crew instead of init, so crew can find
/// processes that left their group and reap what init here would leave as zombies.
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

/// Whether any process, zombies included, is still in the group.
pub fn group_exists(pgid: u32) -> bool {
    match pid(pgid) {
        Some(pgid) => rustix::process::test_kill_process_group(pgid).is_ok(),
        None => false,
    }
}

/// A pipe whose ends are closed on exec; `Command` dups the child's ends into place.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io::Error::from)
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

/// Binds a Unix socket that only this user can connect to: the mode is 0600
/// from the moment the socket exists, since the umask is tightened around bind.
pub fn bind_private_socket(path: &std::path::Path) -> io::Result<std::os::unix::net::UnixListener> {
    use rustix::fs::Mode;
    let old = rustix::process::umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    rustix::process::umask(old);
    bound
}

// ---------------------------------------------------------------------------
// Isolated dynos: the `clone` into new namespaces, the init's system calls
// (`LinuxSys`), and the parent's handles on a dyno (pidfd, pipes).
// ---------------------------------------------------------------------------

/// The `errno` of the last failed call on this thread. Reading it allocates nothing.
fn errno() -> Errno {
    Errno(
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

fn rustix_errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

fn check(ret: libc::c_int) -> SysResult {
    if ret < 0 { Err(errno()) } else { Ok(()) }
}

/// The program, arguments and environment of a dyno's app, ready for `execve`.
pub(crate) struct ExecImage {
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Stdin is a terminal the app should control.
    pub terminal: bool,
}

/// The real system calls of a dyno's init. Built by the thread that clones, before
/// the clone, so the child only reads memory that was already there.
pub(crate) struct LinuxSys<'a> {
    program: &'a CStr,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// Where this process's command line lives, to overwrite it in the init.
    cmdline: Option<(usize, usize)>,
    terminal: bool,
    /// The stack the app's process runs on from its start to its exec (see
    /// [`Sys::spawn_app`]), in the init's memory.
    app_stack: Box<std::cell::UnsafeCell<AppStack>>,
}

/// Room for `app_main`: a few calls deep, a signal set, no more.
const APP_STACK_BYTES: usize = 64 * 1024;

#[repr(C, align(16))]
struct AppStack([u8; APP_STACK_BYTES]);

impl<'a> LinuxSys<'a> {
    pub(crate) fn new(image: &'a ExecImage, cmdline: Option<(usize, usize)>) -> LinuxSys<'a> {
        let list = |items: &'a [CString]| {
            items
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        LinuxSys {
            program: &image.program,
            argv: list(&image.argv),
            envp: list(&image.envp),
            cmdline,
            terminal: image.terminal,
            app_stack: Box::new(std::cell::UnsafeCell::new(AppStack([0; APP_STACK_BYTES]))),
        }
    }
}

/// Where the app's process starts (see [`Sys::spawn_app`]).
extern "C" fn app_entry(sys: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `sys` is the `LinuxSys` whose `spawn_app` made this process. It
    // lives in the memory this process shares with the init, which is
    // suspended in that call (CLONE_VFORK) until this process execs or exits,
    // so the borrow outlives every use here.
    let sys = unsafe { &*(sys as *const LinuxSys<'static>) };
    app_main(sys)
}

fn full_signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset initialises all of it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    }
}

fn write_all(fd: RawFd, bytes: &[u8]) {
    // SAFETY: `bytes` is a live slice; a short or failed write only loses the record.
    let _ = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

impl Sys for LinuxSys<'_> {
    fn block_signals(&self) -> SysResult {
        let set = full_signal_set();
        // SAFETY: a zeroed sigaction with SIG_DFL is a valid disposition; `set` is
        // initialised. SIGCHLD must not be ignored in init, or children would be
        // reaped by the kernel before init sees their status.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGCHLD, &dfl, std::ptr::null_mut());
            check(libc::sigprocmask(
                libc::SIG_SETMASK,
                &set,
                std::ptr::null_mut(),
            ))
        }
    }

    fn arrange_fds(&self, fds: &[RawFd; CHILD_FDS]) -> SysResult {
        // First copy every source above the target range, so moving one into
        // place can never overwrite another that is still needed.
        let mut high = [-1; CHILD_FDS];
        for (slot, &source) in high.iter_mut().zip(fds) {
            // SAFETY: fcntl on a descriptor number; failure is reported.
            let copy = unsafe { libc::fcntl(source, libc::F_DUPFD_CLOEXEC, 64) };
            if copy < 0 {
                return Err(errno());
            }
            *slot = copy;
        }
        for (target, &copy) in (0..).zip(&high) {
            // stdin, stdout and stderr stay open across exec; the rest close.
            let flags = if target < 3 { 0 } else { libc::O_CLOEXEC };
            // SAFETY: dup3 on descriptor numbers; `copy` >= 64 never equals `target`.
            check(unsafe { libc::dup3(copy, target, flags) })?;
        }
        let first = CHILD_FDS as libc::c_uint;
        // SAFETY: close_range closes descriptors this process owns and nothing
        // else; every one crew needs in the init is below `first`.
        let closed = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
        if closed < 0 {
            // Kernels before 5.9: close them one by one.
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(1 << 20)
                .min(1 << 20);
            for n in CHILD_FDS as u64..limit {
                // SAFETY: closing a descriptor number; EBADF for unused ones is fine.
                unsafe { libc::close(n as RawFd) };
            }
        }
        Ok(())
    }

    fn set_death_signal(&self) -> SysResult {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
            .map_err(rustix_errno)
    }

    fn join_cgroup(&self, fd: RawFd) -> SysResult {
        // SAFETY: writes one byte from a live buffer to a descriptor number.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n < 0 { Err(errno()) } else { Ok(()) }
    }

    fn new_cgroup_namespace(&self) -> SysResult {
        // SAFETY: unshare only changes this process's namespaces; the process has
        // a single thread here.
        check(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) })
    }

    fn set_process_name(&self, name: &CStr) -> SysResult {
        rustix::thread::set_name(name).map_err(rustix_errno)?;
        if let Some((start, end)) = self.cmdline
            && end > start
        {
            let len = end - start;
            let name = name.to_bytes();
            let keep = name.len().min(len.saturating_sub(1));
            // SAFETY: [start, end) is this process's argument area, read from
            // /proc/self/stat by the parent of the clone: mapped and writable for
            // the whole life of the process, and in this child a private copy that
            // nothing reads any more. Writing it is what changes the command line
            // `ps` shows, so the dyno does not see crew's arguments.
            unsafe {
                let area = start as *mut u8;
                std::ptr::write_bytes(area, 0, len);
                std::ptr::copy_nonoverlapping(name.as_ptr(), area, keep);
            }
        }
        Ok(())
    }

    fn make_mounts_private(&self) -> SysResult {
        use rustix::mount::MountPropagationFlags as P;
        rustix::mount::mount_change(c"/", P::REC | P::PRIVATE).map_err(rustix_errno)
    }

    fn open_dir(&self, path: &CStr, fd: RawFd) -> SysResult {
        // SAFETY: open with a NUL-terminated path; the result is checked.
        let opened = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if opened < 0 {
            return Err(errno());
        }
        if opened != fd {
            // SAFETY: dup3 and close on descriptors this process owns.
            unsafe {
                let moved = libc::dup3(opened, fd, libc::O_CLOEXEC);
                let failure = errno();
                libc::close(opened);
                if moved < 0 {
                    return Err(failure);
                }
            }
        }
        Ok(())
    }

    fn mount(
        &self,
        source: &CStr,
        target: &CStr,
        fstype: &CStr,
        flags: u64,
        data: &CStr,
    ) -> SysResult {
        let flags = rustix::mount::MountFlags::from_bits_retain(flags as libc::c_uint);
        rustix::mount::mount(source, target, fstype, flags, data).map_err(rustix_errno)
    }

    fn bind(&self, source: &CStr, target: &CStr) -> SysResult {
        rustix::mount::mount_bind_recursive(source, target).map_err(rustix_errno)
    }

    fn remount(&self, target: &CStr, flags: u64) -> SysResult {
        let flags = rustix::mount::MountFlags::BIND
            | rustix::mount::MountFlags::from_bits_retain(flags as libc::c_uint);
        rustix::mount::mount_remount(target, flags, c"").map_err(rustix_errno)
    }

    fn mkdir(&self, path: &CStr, mode: u32) -> SysResult {
        rustix::fs::mkdir(path, rustix::fs::Mode::from_raw_mode(mode)).map_err(rustix_errno)
    }

    fn create_file(&self, path: &CStr) -> SysResult {
        use rustix::fs::{Mode, OFlags};
        rustix::fs::open(
            path,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map(drop)
        .map_err(rustix_errno)
    }

    fn make_device(&self, path: &CStr, rdev: u64) -> SysResult {
        use rustix::fs::{FileType, Mode};
        let mode = Mode::from_raw_mode(0o666);
        rustix::fs::mknodat(rustix::fs::CWD, path, FileType::CharacterDevice, mode, rdev)
            .map_err(rustix_errno)?;
        // mknod applies the umask; the node must be usable by the app.
        rustix::fs::chmod(path, mode).map_err(rustix_errno)
    }

    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult {
        rustix::fs::symlink(target, link).map_err(rustix_errno)
    }

    fn chown(&self, path: &CStr, uid: u32, gid: u32) -> SysResult {
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw_unchecked(uid)),
            Some(rustix::fs::Gid::from_raw_unchecked(gid)),
        )
        .map_err(rustix_errno)
    }

    fn close(&self, fd: RawFd) -> SysResult {
        // SAFETY: closes a descriptor number this process owns in its fixed layout.
        check(unsafe { libc::close(fd) })
    }

    fn set_hostname(&self, name: &CStr) -> SysResult {
        rustix::system::sethostname(name.to_bytes()).map_err(rustix_errno)
    }

    fn chdir(&self, path: &CStr) -> SysResult {
        rustix::process::chdir(path).map_err(rustix_errno)
    }

    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult {
        rustix::process::pivot_root(new_root, put_old).map_err(rustix_errno)
    }

    fn detach(&self, path: &CStr) -> SysResult {
        rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH).map_err(rustix_errno)
    }

    fn drop_groups(&self) -> SysResult {
        rustix::thread::set_thread_groups(&[]).map_err(rustix_errno)
    }

    fn set_gid(&self, gid: u32) -> SysResult {
        let gid = rustix::fs::Gid::from_raw_unchecked(gid);
        rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(rustix_errno)
    }

    fn set_uid(&self, uid: u32) -> SysResult {
        let uid = rustix::fs::Uid::from_raw_unchecked(uid);
        rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(rustix_errno)
    }

    fn no_new_privs(&self) -> SysResult {
        rustix::thread::set_no_new_privs(true).map_err(rustix_errno)
    }

    fn drop_bounding_set(&self) -> SysResult {
        use rustix::thread::{CapabilitySet, remove_capability_from_bounding_set};
        // Capability numbers run from 0 to the kernel's last one; past it the
        // kernel answers EINVAL.
        for number in 0..64 {
            match remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(1 << number))
            {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::INVAL => return Ok(()),
                Err(e) => return Err(rustix_errno(e)),
            }
        }
        Ok(())
    }

    fn clear_capabilities(&self) -> SysResult {
        use rustix::thread::{CapabilitySet, CapabilitySets};
        rustix::thread::clear_ambient_capability_set().map_err(rustix_errno)?;
        let none = CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        };
        rustix::thread::set_capabilities(None, none).map_err(rustix_errno)
    }

    fn install_seccomp(&self, filter: &[seccompiler::sock_filter]) -> SysResult {
        let len = libc::c_ushort::try_from(filter.len()).map_err(|_| Errno(libc::EINVAL))?;
        let program = libc::sock_fprog {
            len,
            // `seccompiler::sock_filter` is `#[repr(C)]` with the fields of the
            // kernel's `struct sock_filter`, in the same order.
            filter: filter.as_ptr().cast_mut().cast(),
        };
        // SAFETY: the kernel copies `len` instructions from `filter`, a live
        // slice, during the call and keeps no pointer to it.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &program as *const libc::sock_fprog,
            )
        };
        if ret < 0 { Err(errno()) } else { Ok(()) }
    }

    fn open_terminal(&self, ptmx: &CStr, uid: u32, gid: u32, cols: u16, rows: u16) -> SysResult {
        use rustix::fs::{Mode, OFlags};
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        use std::mem::MaybeUninit;
        let controller = rustix::fs::open(
            ptmx,
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(rustix_errno)?;
        rustix::pty::unlockpt(&controller).map_err(rustix_errno)?;
        let flags = rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY;
        let dyno_side = rustix::pty::ioctl_tiocgptpeer(&controller, flags).map_err(rustix_errno)?;
        rustix::fs::fchown(
            &dyno_side,
            Some(rustix::fs::Uid::from_raw_unchecked(uid)),
            Some(rustix::fs::Gid::from_raw_unchecked(gid)),
        )
        .map_err(rustix_errno)?;
        set_window_size(&controller, cols, rows)
            .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [controller.as_fd()];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(Errno(libc::ENOBUFS));
        }
        // SAFETY: descriptor 0 is the socket to the parent, open for the whole
        // call (arranged there before the setup began).
        let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
        rustix::net::sendmsg(
            socket,
            &[io::IoSlice::new(&[0u8])],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(rustix_errno)?;
        for target in 0..3 {
            // SAFETY: dup2 onto the fixed standard descriptors of this process;
            // the socket at 0 is closed by it, as intended.
            check(unsafe { libc::dup2(dyno_side.as_raw_fd(), target) })?;
        }
        Ok(())
    }

    fn parent_alive(&self, fd: RawFd) -> bool {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one live pollfd without waiting.
        let n = unsafe { libc::poll(&mut poll, 1, 0) };
        !(n > 0 && poll.revents & (libc::POLLHUP | libc::POLLERR) != 0)
    }

    fn spawn_app(&self) -> SysResult<i32> {
        let stack = self.app_stack.get().cast::<u8>();
        // SAFETY: `posix_spawn`'s way. The child shares this process's memory
        // (CLONE_VM) but not its signal handlers, and runs `app_entry` on a
        // stack of its own (the top of `app_stack`, 16-byte aligned as the
        // struct is) while this process is suspended (CLONE_VFORK) until it
        // execs or exits, so nothing here runs beside it. It only makes system
        // calls on data built before the init's clone.
        let pid = unsafe {
            libc::clone(
                app_entry,
                stack.add(APP_STACK_BYTES).cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::from_ref(self).cast_mut().cast(),
            )
        };
        if pid < 0 { Err(errno()) } else { Ok(pid) }
    }

    fn exec_app(&self) -> Errno {
        // SAFETY: resets this process's own signal state, then execs with
        // NUL-terminated arrays of pointers to CStrings that outlive the call
        // (they belong to the plan the parent keeps until the clone returned).
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            for signal in 1..libc::SIGRTMAX() {
                if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                    libc::sigaction(signal, &dfl, std::ptr::null_mut());
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::setsid();
            if self.terminal {
                // Stdin is the dyno's terminal: make it this session's, so Ctrl-C
                // and window changes reach the app. A failure leaves the app
                // running without job control rather than not at all.
                libc::ioctl(0, libc::TIOCSCTTY, 0);
            }
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            );
        }
        errno()
    }

    fn report(&self, fd: RawFd, step: u32, errno: i32) {
        let mut record = [0u8; 8];
        record[..4].copy_from_slice(&step.to_le_bytes());
        record[4..].copy_from_slice(&errno.to_le_bytes());
        write_all(fd, &record);
    }

    fn wait_signal(&self) -> SysResult<i32> {
        let set = full_signal_set();
        // SAFETY: waits for a signal in an initialised set; no siginfo is wanted.
        let signal = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if signal < 0 { Err(errno()) } else { Ok(signal) }
    }

    fn reap(&self) -> Option<(i32, i32)> {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a live integer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        (pid > 0).then_some((pid, status))
    }

    fn reap_all(&self) {
        loop {
            // SAFETY: waitpid with no status pointer reaps any child, blocking.
            let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) };
            if pid < 0 && errno().0 != libc::EINTR {
                // ECHILD: none is left.
                return;
            }
        }
    }

    fn signal_all(&self, signal: i32) {
        // SAFETY: kill(-1) from pid 1 of the dyno's pid namespace reaches every
        // other process of that namespace and nothing outside it.
        unsafe { libc::kill(-1, signal) };
    }

    fn write_status(&self, fd: RawFd, status: i32) {
        write_all(fd, &status.to_le_bytes());
    }
}

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
            let code = dyno_init(sys, steps, fds);
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

/// Waits for a child to exit and reaps it.
pub(crate) fn reap_blocking(target: u32) -> Option<ExitStatus> {
    let (_, status) = rustix::process::waitpid(pid(target), WaitOptions::empty()).ok()??;
    Some(match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signaled(sig),
        (None, None) => ExitStatus::Code(-1),
    })
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Opens a directory as an `O_PATH` handle (the overlay's lower layer).
pub(crate) fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

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

/// Whether a read from `fd` would not block now (data, end of file or an
/// exited process).
pub(crate) fn poll_readable(fd: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
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

/// Reads the 8-byte records of a dyno's setup pipe until it closes, for at most
/// `timeout`. `Err(TimedOut)` if it does not close in time.
pub(crate) fn read_setup_records(fd: &OwnedFd, timeout: Duration) -> io::Result<Vec<(u32, i32)>> {
    use rustix::event::{PollFd, PollFlags};
    let deadline = std::time::Instant::now() + timeout;
    let mut records = Vec::new();
    let mut buf = [0u8; 64];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        let wait = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&wait)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return Ok(records),
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                while pending.len() >= 8 {
                    let step = u32::from_le_bytes([pending[0], pending[1], pending[2], pending[3]]);
                    let errno =
                        i32::from_le_bytes([pending[4], pending[5], pending[6], pending[7]]);
                    records.push((step, errno));
                    pending.drain(..8);
                }
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads the init's report of the app's wait status, if it wrote one.
pub(crate) fn read_status(fd: &OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    match rustix::io::read(fd, &mut buf) {
        Ok(4) => Some(i32::from_le_bytes(buf)),
        _ => None,
    }
}

/// Makes a descriptor non-blocking (for the status pipe, read after the exit).
pub(crate) fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    rustix::io::ioctl_fionbio(fd, true).map_err(io::Error::from)
}

/// The raw number of a descriptor, for the layout the init arranges.
pub(crate) fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

/// Registers a descriptor with tokio's reactor to wait for it to become readable.
/// A descriptor registered with tokio for reading and writing.
pub(crate) fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the
    // same for the AsyncFd's whole life.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            fd,
            tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE,
        )
        .map_err(io::Error::from)
    }
}

pub(crate) fn async_readable(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the
    // same for the AsyncFd's whole life.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            .map_err(io::Error::from)
    }
}

/// Opens a process's network namespace, `/proc/PID/ns/net`.
pub(crate) fn open_network_namespace(pid: u32) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        format!("/proc/{pid}/ns/net"),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Moves the calling thread, and only it, into the network namespace `ns`.
/// Needs `CAP_SYS_ADMIN` over the namespace.
pub(crate) fn enter_network_namespace(ns: &OwnedFd) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(io::Error::from)
}

/// A new, unconnected, non-blocking TCP socket, in the calling thread's
/// network namespace.
pub(crate) fn tcp_socket(ipv6: bool) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if ipv6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(io::Error::from)
}

/// Moves the calling thread, and only it, into a new, empty network
/// namespace (see `dyno_network`: the thread goes back with
/// [`enter_network_namespace`]).
pub(crate) fn new_thread_network_namespace() -> io::Result<()> {
    // SAFETY: only a new network namespace is asked for, never
    // `CLONE_FILES` (the flag that could leave other threads with a
    // descriptor table of their own), so no other thread is affected.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(io::Error::from)
}

/// The network namespace of the calling thread (not of the process: a
/// thread may have entered another).
pub(crate) fn open_thread_network_namespace() -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        "/proc/thread-self/ns/net",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}
