//! [`LinuxSys`]: the real system calls of an isolated dyno's init, the
//! implementation of `init::sys::Sys` (the trait, its rules and its test
//! double are in `init::sys`; the walk that calls it is `init::child`).
//!
//! Everything here runs in the child of a `clone` from a multi-threaded
//! process: no allocation, no lock, no panic. What needs memory is built by
//! [`LinuxSys::new`], before the clone.

use std::ffi::{CStr, CString, c_char};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use super::pty::set_window_size;
use crate::init::child::app_main;
use crate::init::sys::{CHILD_FDS, Errno, Sys, SysResult};

/// The `errno` of the last failed call on this thread. Reading it allocates nothing.
pub(super) fn errno() -> Errno {
    Errno(
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

fn rustix_errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

pub(super) fn check(ret: libc::c_int) -> SysResult {
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

    fn clock_micros(&self) -> u32 {
        super::monotonic_micros()
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
