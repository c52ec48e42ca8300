//! Isolated dynos: each one in its own mount, pid, uts, ipc and cgroup
//! namespaces, seeing its slug at `/app` through an overlay whose writable layer
//! lives on a tmpfs (so writes vanish at exit), a fresh `/tmp`, its own `/proc`
//! (host-revealing entries masked or read-only), a minimal `/dev` with its own
//! devpts, and the host's `/usr` and `/etc` read-only; limited by a cgroup;
//! running as an unprivileged user (a server gives each app its own, see
//! [`IsolatedRuntime::with_user`]) with no capabilities, not even in its bounding
//! set, and under seccomp filters in the spirit of Docker's default profile (no
//! user namespaces, mounts, ptrace, keys, bpf ...; see `kernel`).
//!
//! How a dyno starts (see `plan::build` for the exact steps):
//! 1. the parent makes the dyno's cgroup and writes its limits;
//! 2. one long-lived thread `clone`s the init into new namespaces, so it is pid 1
//!    of its own pid namespace, with `PR_SET_PDEATHSIG(SIGKILL)`;
//! 3. the init writes itself into the cgroup (through files the parent opened);
//! 4. the init mounts the new root (the overlay by paths relative to it, so the
//!    dyno's mount table names no host path), `pivot_root`s into it, sets the
//!    hostname, opens the dyno's terminal on its own devpts if it has one (and
//!    sends the controlling side back over a socket), empties the capability
//!    bounding set, drops to the app's user, installs the seccomp filters
//!    (compiled in the parent), forks the app (`/bin/sh -c CMD` in `/app`) and
//!    stays as a tiny init: it reaps orphans, hands every signal it gets to all
//!    processes of the dyno (`kill(-1)`), and exits with the app's status when the
//!    app exits. The kernel then kills whatever is left in the pid namespace and
//!    frees every mount with it.
//!
//! A stop therefore reaches every process, double-forked `setsid` daemons too,
//! and SIGKILL to the init (or crew's death, through the parent-death signal)
//! ends the whole dyno. The cgroup is the belt and braces: `alive` looks at it,
//! and a kill also goes to every process in it (`cgroup.kill` on v2).
//!
//! The parent's side lives here, one file each: the configuration (`config`),
//! the runtime and its start of a dyno (`runtime`), the engine's handles
//! (`process`), the supervisor of a running dyno (`dyno`), the host's layout
//! (`host_layout`), the plan (`plan`), what the init execs (`exec_image`), the
//! clone thread (`launch`), cgroups, seccomp (`kernel`), memory verdicts,
//! output, `run:inside` (`inside`) and build steps (`sandbox`). What the
//! init runs after the `clone` is `crate::init`; the system calls are
//! `crate::os`. This file only declares and re-exports, so that every
//! dependency between the others points one way.

pub(crate) mod cgroup;
mod config;
mod dyno;
mod exec_image;
mod host_layout;
mod inside;
pub(crate) mod kernel;
mod launch;
pub(crate) mod memory;
mod output;
pub(crate) mod plan;
mod process;
mod runtime;
mod sandbox;

pub use self::config::{IsolatedConfig, IsolationUnavailable};
pub use self::plan::SandboxBind;
pub use self::process::{IsolatedGroup, IsolatedProcess};
pub use self::runtime::{IsolatedRuntime, StartTiming};
pub use self::sandbox::{SandboxSpec, Sandboxed};
