//! The system calls a dyno's init makes, behind one narrow trait.
//!
//! [`crate::os::LinuxSys`] makes the real calls; [`Recorder`] (tests only) writes
//! each call down, so the exact order of the setup can be checked without root.
//!
//! Everything here runs in the child of a `clone` from a multi-threaded process:
//! implementations must not allocate, lock or panic.

use std::ffi::CStr;
use std::os::fd::RawFd;

/// An `errno` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub i32);

impl Errno {
    pub(crate) fn io_error(self) -> std::io::Error {
        std::io::Error::from_raw_os_error(self.0)
    }
}

pub(crate) type SysResult<T = ()> = Result<T, Errno>;

/// How many descriptors the init is given, at fixed numbers (see `step::fd`).
pub(crate) const CHILD_FDS: usize = 8;

/// Mount flags, with the values of the Linux ABI (`MS_*`).
pub(crate) mod ms {
    pub const RDONLY: u64 = 1;
    pub const NOSUID: u64 = 2;
    pub const NODEV: u64 = 4;
    pub const NOEXEC: u64 = 8;
}

pub(crate) trait Sys {
    /// Blocks every signal that can be blocked; they queue until init waits for them.
    fn block_signals(&self) -> SysResult;
    /// Puts `fds[i]` at descriptor `i` and closes every other descriptor.
    fn arrange_fds(&self, fds: &[RawFd; CHILD_FDS]) -> SysResult;
    /// `PR_SET_PDEATHSIG(SIGKILL)`.
    fn set_death_signal(&self) -> SysResult;
    /// Writes `0` (this process, or on cgroup v1 this thread: its only one)
    /// into the cgroup file open at `fd`.
    fn join_cgroup(&self, fd: RawFd) -> SysResult;
    /// `unshare(CLONE_NEWCGROUP)`: the dyno's cgroup becomes its `/`.
    fn new_cgroup_namespace(&self) -> SysResult;
    /// Names the process (`comm` and the command line others see in `/proc`).
    fn set_process_name(&self, name: &CStr) -> SysResult;
    /// `mount(NULL, "/", NULL, MS_REC|MS_PRIVATE)`.
    fn make_mounts_private(&self) -> SysResult;
    /// Opens a directory (`O_PATH`) at descriptor `fd`.
    fn open_dir(&self, path: &CStr, fd: RawFd) -> SysResult;
    fn mount(
        &self,
        source: &CStr,
        target: &CStr,
        fstype: &CStr,
        flags: u64,
        data: &CStr,
    ) -> SysResult;
    /// `mount(source, target, MS_BIND|MS_REC)`.
    fn bind(&self, source: &CStr, target: &CStr) -> SysResult;
    /// `mount(NULL, target, MS_REMOUNT|MS_BIND|flags)`: changes a mount's flags.
    fn remount(&self, target: &CStr, flags: u64) -> SysResult;
    fn mkdir(&self, path: &CStr, mode: u32) -> SysResult;
    /// Creates an empty file to bind a file onto.
    fn create_file(&self, path: &CStr) -> SysResult;
    /// `mknod(path, S_IFCHR | 0666, rdev)`, whatever the umask.
    fn make_device(&self, path: &CStr, rdev: u64) -> SysResult;
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult;
    fn chown(&self, path: &CStr, uid: u32, gid: u32) -> SysResult;
    fn close(&self, fd: RawFd) -> SysResult;
    fn set_hostname(&self, name: &CStr) -> SysResult;
    fn chdir(&self, path: &CStr) -> SysResult;
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult;
    /// `umount2(path, MNT_DETACH)`.
    fn detach(&self, path: &CStr) -> SysResult;
    /// `setgroups(0, NULL)`.
    fn drop_groups(&self) -> SysResult;
    /// `setresgid(gid, gid, gid)`.
    fn set_gid(&self, gid: u32) -> SysResult;
    /// `setresuid(uid, uid, uid)`; drops every capability.
    fn set_uid(&self, uid: u32) -> SysResult;
    /// `PR_SET_NO_NEW_PRIVS`.
    fn no_new_privs(&self) -> SysResult;
    /// `PR_CAPBSET_DROP` of every capability the kernel knows.
    fn drop_bounding_set(&self) -> SysResult;
    /// `capset` to nothing and `PR_CAP_AMBIENT_CLEAR_ALL`.
    fn clear_capabilities(&self) -> SysResult;
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` with one compiled filter.
    fn install_seccomp(&self, filter: &[seccompiler::sock_filter]) -> SysResult;
    /// See [`super::step::Step::Terminal`].
    fn open_terminal(&self, ptmx: &CStr, uid: u32, gid: u32, cols: u16, rows: u16) -> SysResult;
    /// Whether the parent still holds its end of the go pipe.
    fn parent_alive(&self, fd: RawFd) -> bool;
    /// Starts the app's process: a child that shares the init's memory and
    /// runs [`super::child::app_main`] while the init waits, until it execs or
    /// exits (`vfork`'s way, as `posix_spawn` does: no copy of the address
    /// space is made only to be thrown away by the exec). Returns its pid.
    fn spawn_app(&self) -> SysResult<i32>;
    /// In the app's process: restores the signal mask and dispositions, starts a
    /// session and execs the command. Returns only on failure.
    fn exec_app(&self) -> Errno;
    /// Writes one 8-byte record (step, errno) to the setup pipe.
    fn report(&self, fd: RawFd, step: u32, errno: i32);
    /// The monotonic clock in microseconds, wrapping, for a timed setup.
    fn clock_micros(&self) -> u32;
    /// Waits for the next signal; returns its number.
    fn wait_signal(&self) -> SysResult<i32>;
    /// Reaps one exited child without blocking: (pid, raw wait status).
    fn reap(&self) -> Option<(i32, i32)>;
    /// Reaps every child, waiting for those still exiting, until none is left.
    fn reap_all(&self);
    /// `kill(-1, signal)`: every process of the dyno but init itself.
    fn signal_all(&self, signal: i32);
    /// Writes the app's raw wait status to the status pipe.
    fn write_status(&self, fd: RawFd, status: i32);
}

#[cfg(test)]
pub(crate) use recorder::Recorder;

#[cfg(test)]
mod recorder {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// A [`Sys`] that writes every call down and answers from a script.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub calls: RefCell<Vec<String>>,
        /// The call (by its recorded text's prefix) that should fail, with errno.
        pub fail: Option<(String, i32)>,
        /// What `parent_alive` answers.
        pub parent: bool,
        pub signals: RefCell<VecDeque<i32>>,
        pub reaped: RefCell<VecDeque<(i32, i32)>>,
    }

    impl Recorder {
        pub(crate) fn new() -> Recorder {
            Recorder {
                parent: true,
                ..Recorder::default()
            }
        }

        pub(crate) fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }

        fn call(&self, text: String) -> SysResult {
            let failed = self
                .fail
                .as_ref()
                .filter(|(prefix, _)| text.starts_with(prefix.as_str()))
                .map(|(_, errno)| Errno(*errno));
            self.calls.borrow_mut().push(text);
            match failed {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }

    fn s(c: &CStr) -> String {
        c.to_string_lossy().into_owned()
    }

    impl Sys for Recorder {
        fn block_signals(&self) -> SysResult {
            self.call("block signals".into())
        }
        fn arrange_fds(&self, fds: &[RawFd; CHILD_FDS]) -> SysResult {
            self.call(format!("arrange fds {fds:?}"))
        }
        fn set_death_signal(&self) -> SysResult {
            self.call("pdeathsig SIGKILL".into())
        }
        fn join_cgroup(&self, fd: RawFd) -> SysResult {
            self.call(format!("join cgroup on {fd}"))
        }
        fn new_cgroup_namespace(&self) -> SysResult {
            self.call("unshare cgroup".into())
        }
        fn set_process_name(&self, name: &CStr) -> SysResult {
            self.call(format!("name {}", s(name)))
        }
        fn make_mounts_private(&self) -> SysResult {
            self.call("mount / rprivate".into())
        }
        fn open_dir(&self, path: &CStr, fd: RawFd) -> SysResult {
            self.call(format!("open {} as {fd}", s(path)))
        }
        fn mount(
            &self,
            source: &CStr,
            target: &CStr,
            fstype: &CStr,
            flags: u64,
            data: &CStr,
        ) -> SysResult {
            self.call(format!(
                "mount {} {} on {} flags={flags:#x} data={}",
                s(fstype),
                s(source),
                s(target),
                s(data)
            ))
        }
        fn bind(&self, source: &CStr, target: &CStr) -> SysResult {
            self.call(format!("bind {} on {}", s(source), s(target)))
        }
        fn remount(&self, target: &CStr, flags: u64) -> SysResult {
            self.call(format!("remount {} flags={flags:#x}", s(target)))
        }
        fn mkdir(&self, path: &CStr, mode: u32) -> SysResult {
            self.call(format!("mkdir {} {mode:o}", s(path)))
        }
        fn make_device(&self, path: &CStr, rdev: u64) -> SysResult {
            self.call(format!("mknod {} {rdev:#x}", s(path)))
        }
        fn create_file(&self, path: &CStr) -> SysResult {
            self.call(format!("create {}", s(path)))
        }
        fn symlink(&self, target: &CStr, link: &CStr) -> SysResult {
            self.call(format!("symlink {} -> {}", s(link), s(target)))
        }
        fn chown(&self, path: &CStr, uid: u32, gid: u32) -> SysResult {
            self.call(format!("chown {} {uid}:{gid}", s(path)))
        }
        fn close(&self, fd: RawFd) -> SysResult {
            self.call(format!("close {fd}"))
        }
        fn set_hostname(&self, name: &CStr) -> SysResult {
            self.call(format!("hostname {}", s(name)))
        }
        fn chdir(&self, path: &CStr) -> SysResult {
            self.call(format!("chdir {}", s(path)))
        }
        fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult {
            self.call(format!("pivot_root {} {}", s(new_root), s(put_old)))
        }
        fn detach(&self, path: &CStr) -> SysResult {
            self.call(format!("umount detach {}", s(path)))
        }
        fn drop_groups(&self) -> SysResult {
            self.call("setgroups []".into())
        }
        fn set_gid(&self, gid: u32) -> SysResult {
            self.call(format!("setresgid {gid}"))
        }
        fn set_uid(&self, uid: u32) -> SysResult {
            self.call(format!("setresuid {uid}"))
        }
        fn no_new_privs(&self) -> SysResult {
            self.call("no_new_privs".into())
        }
        fn drop_bounding_set(&self) -> SysResult {
            self.call("drop bounding set".into())
        }
        fn clear_capabilities(&self) -> SysResult {
            self.call("clear capabilities".into())
        }
        fn install_seccomp(&self, filter: &[seccompiler::sock_filter]) -> SysResult {
            self.call(format!("seccomp {} instructions", filter.len()))
        }
        fn open_terminal(
            &self,
            ptmx: &CStr,
            uid: u32,
            gid: u32,
            cols: u16,
            rows: u16,
        ) -> SysResult {
            self.call(format!(
                "terminal {} for {uid}:{gid} {cols}x{rows}",
                s(ptmx)
            ))
        }
        fn parent_alive(&self, fd: RawFd) -> bool {
            let _ = self.call(format!("parent alive on {fd}"));
            self.parent
        }
        fn spawn_app(&self) -> SysResult<i32> {
            self.call("spawn app".into())?;
            Ok(2)
        }
        fn exec_app(&self) -> Errno {
            let _ = self.call("exec app".into());
            Errno(2)
        }
        fn report(&self, fd: RawFd, step: u32, errno: i32) {
            let _ = self.call(format!("report on {fd}: step {step} errno {errno}"));
        }
        fn clock_micros(&self) -> u32 {
            // Each reading a millisecond after the last, so a test sees
            // which record carries which.
            let n = self.calls.borrow().len();
            u32::try_from(n).unwrap_or(0) * 1000
        }
        fn wait_signal(&self) -> SysResult<i32> {
            let next = self.signals.borrow_mut().pop_front();
            self.call(format!("sigwait -> {next:?}"))?;
            // An empty script means the test forgot an exit: fail loudly.
            next.ok_or(Errno(22))
        }
        fn reap(&self) -> Option<(i32, i32)> {
            let next = self.reaped.borrow_mut().pop_front();
            let _ = self.call(format!("reap -> {next:?}"));
            next
        }
        fn reap_all(&self) {
            let _ = self.call("reap all".into());
        }
        fn signal_all(&self, signal: i32) {
            let _ = self.call(format!("kill -1 {signal}"));
        }
        fn write_status(&self, fd: RawFd, status: i32) {
            let _ = self.call(format!("status on {fd}: {status:#x}"));
        }
    }
}
