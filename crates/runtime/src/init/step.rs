//! The setup plan's vocabulary: each [`Step`] the init can take and how it is
//! walked through [`Sys`], the descriptor numbers the init works with, and
//! the step numbers of its setup records.
//!
//! Separate from the plan itself (`crate::isolated::plan`, which decides the
//! steps from a host's layout) because both sides of the `clone` need it: the
//! parent builds and describes steps, the init (`super::child`, started by
//! `crate::os`) walks them. It depends on nothing but [`Sys`].

use std::ffi::CString;
use std::fmt;
use std::sync::Arc;

use seccompiler::BpfProgram;

use super::sys::{Sys, SysResult};

/// Descriptor numbers inside the init (see [`Sys::arrange_fds`]).
pub(crate) mod fd {
    use std::os::fd::RawFd;
    // 0 is the idle stdin, 1 and 2 the output pipe.
    /// Setup records to the parent; closed on exec.
    pub const SETUP: RawFd = 3;
    /// The app's final wait status, written by init just before it exits.
    pub const STATUS: RawFd = 4;
    /// Held open by the parent until the setup is done: its hang-up means the
    /// parent is gone.
    pub const GO: RawFd = 5;
    /// The file through which the init moves itself into the dyno's cgroup:
    /// on v1 the memory hierarchy's `tasks`; on v2 `cgroup.procs`, used only
    /// where the init could not be cloned into its group (and closed unused
    /// otherwise).
    pub const CGROUP: RawFd = 6;
    /// On cgroup v1, the pids hierarchy's `tasks`.
    pub const CGROUP_PIDS: RawFd = 7;
    /// The slug directory (`O_PATH`), the overlay's lower layer. Opened by the
    /// init itself: overlay refuses a layer from another mount namespace.
    pub const SLUG: RawFd = 8;
}

/// The setup record step number for "exec of the app failed".
pub(crate) const EXEC_STEP: u32 = u32::MAX;
/// The setup record step number for "setup done, the app is started".
pub(crate) const READY_STEP: u32 = u32::MAX - 1;
/// Set on the step number of a record that carries, instead of an errno,
/// the time the step ended ([`Sys::clock_micros`]), when the parent asked for
/// a timed setup: the bench's measure of what each wall costs. Step numbers
/// are far below it, and [`READY_STEP`] and [`EXEC_STEP`] have the bit
/// above it set too, so [`is_timing`] tells them apart.
pub(crate) const TIMING_STEP: u32 = 0x4000_0000;
/// The step number of the timing record sent before the first step.
pub(crate) const TIMING_BEGIN: u32 = TIMING_STEP | 0x3fff_ffff;

/// Whether a setup record is a timing record.
pub(crate) fn is_timing(step: u32) -> bool {
    step & 0xc000_0000 == TIMING_STEP
}

/// One thing the init does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    DeathSignal,
    /// Writes the init into the cgroup file at this descriptor (the
    /// parent opened it): the init joins its dyno's cgroup itself, with no
    /// round trip to the parent.
    JoinCgroup(i32),
    NewCgroupNamespace,
    Name(CString),
    PrivateMounts,
    OpenDir {
        path: CString,
        fd: i32,
    },
    Mount {
        source: CString,
        target: CString,
        fstype: CString,
        flags: u64,
        data: CString,
    },
    Bind {
        source: CString,
        target: CString,
    },
    Remount {
        target: CString,
        flags: u64,
    },
    Mkdir {
        path: CString,
        mode: u32,
    },
    CreateFile(CString),
    /// A character device node, `rw-rw-rw-`, as the host's `/dev/null` is.
    Device {
        path: CString,
        rdev: u64,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    Chown {
        path: CString,
        uid: u32,
        gid: u32,
    },
    Close(i32),
    Hostname(CString),
    Chdir(CString),
    /// `pivot_root(".", ".")`, from inside the new root.
    PivotRoot,
    /// `umount2(".", MNT_DETACH)`: lets go of the old root stacked on top.
    DetachOldRoot,
    DropGroups,
    SetGid(u32),
    SetUid(u32),
    NoNewPrivs,
    /// Empties the capability bounding set (needs root: before the drop).
    DropBoundingSet,
    /// Clears the inheritable and ambient capabilities (after the drop, when
    /// the permitted and effective ones are gone too).
    ClearCapabilities,
    /// Installs the seccomp filters, compiled in the parent.
    Seccomp(Arc<Vec<BpfProgram>>),
    /// Opens a terminal on the dyno's own devpts instance (`ptmx`), gives its
    /// dyno side to `uid`:`gid`, sends the controlling side to the parent over
    /// descriptor 0 (a socket) and makes the dyno side descriptors 0, 1 and 2.
    Terminal {
        ptmx: CString,
        uid: u32,
        gid: u32,
        cols: u16,
        rows: u16,
    },
    /// Ends the setup quietly if the parent died before the death signal was armed.
    CheckParent,
}

impl Step {
    /// What kind of thing the step does, in a word or two: how a timed
    /// setup's steps are grouped in the bench's report.
    pub(crate) fn kind(&self) -> &'static str {
        // The walls over /proc's entries (hidden, or read-only) are counted
        // apart from the root's other mounts.
        let in_proc = |target: &CString| target.as_bytes().windows(6).any(|w| w == b"/proc/");
        match self {
            Step::Mount { target, .. }
            | Step::Bind { target, .. }
            | Step::Remount { target, .. }
                if in_proc(target) =>
            {
                "/proc walls"
            }
            Step::DeathSignal => "parent-death signal",
            Step::JoinCgroup(_) => "join cgroup",
            Step::NewCgroupNamespace => "cgroup namespace",
            Step::Name(_) => "name",
            Step::PrivateMounts => "private mounts",
            Step::OpenDir { .. } => "open slug",
            Step::Mount { .. } => "mount",
            Step::Bind { .. } => "bind",
            Step::Remount { .. } => "read-only remount",
            Step::Mkdir { .. } => "mkdir",
            Step::CreateFile(_) => "create file",
            Step::Device { .. } => "device node",
            Step::Symlink { .. } => "symlink",
            Step::Chown { .. } => "chown",
            Step::Close(_) => "close",
            Step::Hostname(_) => "hostname",
            Step::Chdir(_) => "chdir",
            Step::PivotRoot => "pivot_root",
            Step::DetachOldRoot => "detach old root",
            Step::DropGroups | Step::SetGid(_) | Step::SetUid(_) => "switch user",
            Step::NoNewPrivs => "no_new_privs",
            Step::DropBoundingSet => "empty bounding set",
            Step::ClearCapabilities => "clear capabilities",
            Step::Seccomp(_) => "seccomp filter",
            Step::Terminal { .. } => "terminal",
            Step::CheckParent => "check parent",
        }
    }
}

/// What walking a step means for the rest of the setup.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// The parent is gone; exit without a word.
    Abort,
}

impl Step {
    pub(crate) fn run<S: Sys>(&self, sys: &S) -> SysResult<Flow> {
        match self {
            Step::DeathSignal => sys.set_death_signal()?,
            Step::JoinCgroup(n) => sys.join_cgroup(*n)?,
            Step::NewCgroupNamespace => sys.new_cgroup_namespace()?,
            Step::Name(name) => sys.set_process_name(name)?,
            Step::PrivateMounts => sys.make_mounts_private()?,
            Step::OpenDir { path, fd } => sys.open_dir(path, *fd)?,
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => sys.mount(source, target, fstype, *flags, data)?,
            Step::Bind { source, target } => sys.bind(source, target)?,
            Step::Remount { target, flags } => sys.remount(target, *flags)?,
            Step::Mkdir { path, mode } => sys.mkdir(path, *mode)?,
            Step::CreateFile(path) => sys.create_file(path)?,
            Step::Device { path, rdev } => sys.make_device(path, *rdev)?,
            Step::Symlink { target, link } => sys.symlink(target, link)?,
            Step::Chown { path, uid, gid } => sys.chown(path, *uid, *gid)?,
            Step::Close(n) => sys.close(*n)?,
            Step::Hostname(name) => sys.set_hostname(name)?,
            Step::Chdir(path) => sys.chdir(path)?,
            Step::PivotRoot => sys.pivot_root(c".", c".")?,
            Step::DetachOldRoot => sys.detach(c".")?,
            Step::DropGroups => sys.drop_groups()?,
            Step::SetGid(gid) => sys.set_gid(*gid)?,
            Step::SetUid(uid) => sys.set_uid(*uid)?,
            Step::NoNewPrivs => sys.no_new_privs()?,
            Step::DropBoundingSet => sys.drop_bounding_set()?,
            Step::ClearCapabilities => sys.clear_capabilities()?,
            Step::Seccomp(filters) => {
                for filter in filters.iter() {
                    sys.install_seccomp(filter)?;
                }
            }
            Step::Terminal {
                ptmx,
                uid,
                gid,
                cols,
                rows,
            } => sys.open_terminal(ptmx, *uid, *gid, *cols, *rows)?,
            Step::CheckParent => {
                if !sys.parent_alive(fd::GO) {
                    return Ok(Flow::Abort);
                }
            }
        }
        Ok(Flow::Continue)
    }
}

/// For error messages: what the step was doing.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Step::DeathSignal => write!(f, "set the parent-death signal"),
            Step::JoinCgroup(_) => write!(f, "join the dyno's cgroup"),
            Step::NewCgroupNamespace => write!(f, "make a cgroup namespace"),
            Step::Name(n) => write!(f, "name the init `{}`", s(n)),
            Step::PrivateMounts => write!(f, "make the mounts private"),
            Step::OpenDir { path, .. } => write!(f, "open the slug directory {}", s(path)),
            Step::Mount { fstype, target, .. } => write!(f, "mount {} on {}", s(fstype), s(target)),
            Step::Bind { source, target } => write!(f, "bind {} on {}", s(source), s(target)),
            Step::Remount { target, .. } => write!(f, "make {} read-only", s(target)),
            Step::Mkdir { path, .. } => write!(f, "make the directory {}", s(path)),
            Step::CreateFile(p) => write!(f, "create {}", s(p)),
            Step::Device { path, .. } => write!(f, "make the device {}", s(path)),
            Step::Symlink { target, link } => write!(f, "link {} to {}", s(link), s(target)),
            Step::Chown { path, uid, gid } => write!(f, "give {} to {uid}:{gid}", s(path)),
            Step::Close(n) => write!(f, "close descriptor {n}"),
            Step::Hostname(n) => write!(f, "set the hostname to {}", s(n)),
            Step::Chdir(p) => write!(f, "change directory to {}", s(p)),
            Step::PivotRoot => write!(f, "pivot_root into the new root"),
            Step::DetachOldRoot => write!(f, "detach the old root"),
            Step::DropGroups => write!(f, "drop supplementary groups"),
            Step::SetGid(g) => write!(f, "switch to group {g}"),
            Step::SetUid(u) => write!(f, "switch to user {u}"),
            Step::NoNewPrivs => write!(f, "set no_new_privs"),
            Step::DropBoundingSet => write!(f, "empty the capability bounding set"),
            Step::ClearCapabilities => write!(f, "clear the remaining capabilities"),
            Step::Seccomp(_) => write!(f, "install the seccomp filter"),
            Step::Terminal { ptmx, .. } => write!(f, "open a terminal on {}", s(ptmx)),
            Step::CheckParent => write!(f, "check that crew is still there"),
        }
    }
}
