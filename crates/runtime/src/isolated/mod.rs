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

pub(crate) mod cgroup;
mod inside;
pub(crate) mod kernel;
mod launch;
pub(crate) mod memory;
mod output;
pub(crate) mod plan;
mod sandbox;

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use self::cgroup::{Cgroups, DynoCgroup};
use self::launch::{ChildIo, ChildPlan, Launched, launch};
use self::memory::MemoryWatch;
use self::output::DynoOutput;
pub use self::plan::SandboxBind;
use self::plan::{DEVICES, Device, Entry, Layout, Setup, Walls};
pub use self::sandbox::{SandboxSpec, Sandboxed};
use crate::dyno_network::{DynoNetwork, Lease};
use crate::os::{self, ExecImage};
use crate::terminal::{ConsoleFds, DynoStdio};
use crate::{
    Console, DynoInput, DynoProcess, DynoSize, DynoSpec, ExitStatus, Output, ProcessGroup, Runtime,
    RuntimeError, Signal,
};

/// How often a running dyno's memory counters are read.
const MEMORY_POLL: Duration = Duration::from_millis(500);

/// How isolated dynos are made. `Default` is what a server should use.
#[derive(Debug, Clone)]
pub struct IsolatedConfig {
    /// The user and group dynos run as unless a handle says otherwise (see
    /// [`IsolatedRuntime::with_user`]; a server gives every app its own). The
    /// top of `/app` belongs to them; the slug's own files keep their owners,
    /// so a slug meant to be changed in place should be extracted writable by
    /// this user or group.
    pub uid: u32,
    pub gid: u32,
    /// An empty directory the dyno's root is mounted on. Each dyno mounts over it
    /// in its own mount namespace, so one directory serves them all and the
    /// host never sees anything there.
    pub root_dir: PathBuf,
    /// Where cgroups are mounted (`/sys/fs/cgroup`): v2 if it holds
    /// `cgroup.controllers`, else the v1 hierarchies from `/proc/self/mountinfo`.
    pub cgroup_root: PathBuf,
    /// The parent cgroup of every dyno, under the hierarchy root.
    pub cgroup_name: String,
    /// Host paths shown read-only at the same place: the stack. Symlinks (such as
    /// `/bin -> usr/bin`) are copied as symlinks; missing paths are skipped.
    pub stack: Vec<PathBuf>,
    /// Further host files or directories to show read-only at the same place. A
    /// symlinked `/etc/resolv.conf` gets its target added by itself.
    pub extra_read_only: Vec<PathBuf>,
    /// The size of dynos whose process type has no size set.
    pub default_size: DynoSize,
    /// How long a dyno's setup may take before the start fails.
    pub setup_timeout: Duration,
    /// A network namespace per dyno on crew's bridge; `None`: dynos share
    /// the host's network.
    pub network: Option<DynoNetwork>,
}

impl Default for IsolatedConfig {
    fn default() -> Self {
        IsolatedConfig {
            uid: 65534,
            gid: 65534,
            root_dir: PathBuf::from("/run/crew/root"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_name: "crew".to_string(),
            stack: ["/usr", "/etc", "/bin", "/lib", "/lib64", "/sbin"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            extra_read_only: Vec::new(),
            default_size: DynoSize::default(),
            setup_timeout: Duration::from_secs(10),
            network: None,
        }
    }
}

/// Why dynos cannot be isolated here. The platform should then run them plain and
/// say so, with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsolationUnavailable {
    #[error("dyno isolation needs Linux")]
    NotLinux,
    #[error(
        "dyno isolation needs root (crew runs as uid {euid}); isolation for an \
         unprivileged crew through user namespaces is not implemented"
    )]
    NotRoot { euid: u32 },
    #[error("the kernel has no overlay filesystem (try `modprobe overlay`)")]
    NoOverlay,
    #[error("the kernel has no {0} namespaces")]
    NoNamespaces(String),
    #[error("no usable cgroups for memory and process limits: {0}")]
    NoCgroups(String),
    #[error("cannot prepare isolated dynos: {0}")]
    Setup(String),
    #[error("a test dyno could not start: {0}")]
    Failed(String),
}

/// Runs dynos isolated (see the module documentation). Cheap to clone: clones
/// share everything but the table of sizes when made with [`Self::for_app`].
///
/// ```no_run
/// use crew_runtime::{DynoSize, IsolatedConfig, IsolatedRuntime};
///
/// // Once, at server start: use isolation where it works, else say why.
/// let isolated = IsolatedRuntime::new(IsolatedConfig::default())
///     .and_then(|rt| rt.check().map(|()| rt));
/// match isolated {
///     Ok(rt) => {
///         // Per app: its own size table; `crew scale web=2:standard-2x` sets it.
///         let app = rt.for_app();
///         app.set_size("web", DynoSize::parse("standard-2x").unwrap());
///         // hand `app` to the engine as its `Runtime`
///     }
///     Err(why) => eprintln!("dynos run without isolation: {why}"),
/// }
/// ```
#[derive(Clone)]
pub struct IsolatedRuntime {
    shared: Arc<Shared>,
    sizes: Arc<Mutex<HashMap<String, DynoSize>>>,
    /// The user and group this handle's dynos run as; `None` refuses to start
    /// any (an app whose uid could not be had).
    user: Option<(u32, u32)>,
}

struct Shared {
    config: IsolatedConfig,
    layout: Layout,
    cgroups: Cgroups,
}

impl IsolatedRuntime {
    /// Checks that this host can isolate dynos, with the default configuration,
    /// by starting one test dyno. `Ok` means [`IsolatedRuntime::new`] with the
    /// defaults will work.
    pub fn probe() -> Result<(), IsolationUnavailable> {
        IsolatedRuntime::new(IsolatedConfig::default())?.check()
    }

    /// Prepares the runtime: checks privileges and kernel features, makes the
    /// parent cgroup, clears cgroups a dead crew left behind, and looks at the
    /// host's stack once. Does not start anything; see [`Self::check`].
    pub fn new(config: IsolatedConfig) -> Result<IsolatedRuntime, IsolationUnavailable> {
        if !cfg!(target_os = "linux") {
            return Err(IsolationUnavailable::NotLinux);
        }
        if !os::is_root() {
            return Err(IsolationUnavailable::NotRoot { euid: os::euid() });
        }
        for ns in ["mnt", "pid", "uts", "ipc", "cgroup"] {
            if !Path::new("/proc/self/ns").join(ns).exists() {
                return Err(IsolationUnavailable::NoNamespaces(ns.to_string()));
            }
        }
        let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
        {
            return Err(IsolationUnavailable::NoOverlay);
        }
        if config.uid == u32::MAX || config.gid == u32::MAX {
            return Err(IsolationUnavailable::Setup(
                "uid and gid may not be -1".into(),
            ));
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroups = Cgroups::detect(&config.cgroup_root, &mountinfo, &config.cgroup_name)
            .map_err(IsolationUnavailable::NoCgroups)?;
        cgroups
            .prepare()
            .map_err(|e| IsolationUnavailable::NoCgroups(e.to_string()))?;
        // Best effort: each dyno keeps its own limit even where the parent's
        // cannot be set (a parent that already holds more than the cap).
        if let Some(bytes) = crate::size::memory_for_dynos()
            && let Err(e) = cgroups.cap_memory(bytes)
        {
            tracing::warn!("cannot cap the memory of all dynos together: {e}");
        }
        cgroups.clean_stale(std::process::id(), os::process_alive);
        std::fs::create_dir_all(&config.root_dir).map_err(|e| {
            IsolationUnavailable::Setup(format!("cannot create {}: {e}", config.root_dir.display()))
        })?;
        let mut layout = layout(&config);
        layout.cgroup_files = cgroups.procs_file_count();
        layout.walls.seccomp = Arc::new(
            kernel::seccomp_filters()
                .map_err(|e| IsolationUnavailable::Setup(format!("seccomp filter: {e}")))?,
        );
        let user = Some((config.uid, config.gid));
        Ok(IsolatedRuntime {
            shared: Arc::new(Shared {
                config,
                layout,
                cgroups,
            }),
            sizes: Arc::new(Mutex::new(HashMap::new())),
            user,
        })
    }

    /// Starts a test dyno (`exit 0` over an empty slug) and waits for it. Needs no
    /// tokio runtime.
    pub fn check(&self) -> Result<(), IsolationUnavailable> {
        let n = next_id();
        let slug = std::env::temp_dir().join(format!("crew-probe-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&slug)
            .map_err(|e| IsolationUnavailable::Setup(format!("{}: {e}", slug.display())))?;
        let spec = DynoSpec {
            name: "probe.1".into(),
            command: "exit 0".into(),
            cwd: slug.clone(),
            ..DynoSpec::default()
        };
        let started = self.start(&spec, &DynoSize::default());
        let result = match started {
            Ok(Started {
                launched, cgroup, ..
            }) => {
                let status = os::pidfd_reap(&launched.pidfd, true);
                cgroup.kill();
                remove_soon(&cgroup);
                match status {
                    Ok(Some(ExitStatus::Code(0))) => Ok(()),
                    Ok(Some(other)) => Err(IsolationUnavailable::Failed(format!(
                        "it exited with status {}",
                        other.code()
                    ))),
                    Ok(None) => Err(IsolationUnavailable::Failed("it never exited".into())),
                    Err(e) => Err(IsolationUnavailable::Failed(e.to_string())),
                }
            }
            Err(e) => Err(IsolationUnavailable::Failed(e.to_string())),
        };
        let _ = std::fs::remove_dir(&slug);
        result
    }

    /// A handle for one app: the same machinery, its own table of sizes.
    pub fn for_app(&self) -> IsolatedRuntime {
        IsolatedRuntime {
            shared: self.shared.clone(),
            sizes: Arc::new(Mutex::new(HashMap::new())),
            user: self.user,
        }
    }

    /// The same handle (sizes shared), whose dynos run as `user` (uid, gid):
    /// an app's own. `None` makes every start fail, for an app whose uid could
    /// not be had: it must never borrow another's. Root (0) is refused at start.
    pub fn with_user(&self, user: Option<(u32, u32)>) -> IsolatedRuntime {
        IsolatedRuntime {
            shared: self.shared.clone(),
            sizes: self.sizes.clone(),
            user,
        }
    }

    /// The user and group this handle's dynos run as.
    pub fn user(&self) -> Option<(u32, u32)> {
        self.user
    }

    /// The size of dynos of `process_type` (`web`) started from now on through
    /// [`Runtime::spawn`]; running dynos keep theirs until restarted.
    pub fn set_size(&self, process_type: &str, size: DynoSize) {
        self.sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(process_type.to_string(), size);
    }

    /// The size a dyno named `web.1` gets: its type's, or the default.
    pub fn size_for(&self, dyno: &str) -> DynoSize {
        let sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        size_of(&sizes, &self.shared.config.default_size, dyno)
    }

    pub fn config(&self) -> &IsolatedConfig {
        &self.shared.config
    }

    /// `cgroup v2 at /sys/fs/cgroup` or `cgroup v1 (memory at …, pids at …)`.
    pub fn cgroup_description(&self) -> String {
        match self.shared.cgroups.hierarchy() {
            cgroup::Hierarchy::V2 { root } => format!("cgroup v2 at {}", root.display()),
            cgroup::Hierarchy::V1 { memory, pids } => format!(
                "cgroup v1 (memory at {}, pids at {})",
                memory.display(),
                pids.display()
            ),
        }
    }

    /// Starts a dyno with the limits of `size`.
    pub fn spawn_sized(
        &self,
        spec: &DynoSpec,
        size: &DynoSize,
    ) -> Result<IsolatedProcess, RuntimeError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            spawn_error(
                spec,
                io::Error::other("isolated dynos are started from within a tokio runtime"),
            )
        })?;
        let Started {
            launched,
            cgroup,
            output,
            console,
            lease,
        } = self.start(spec, size)?;
        let (notices, notices_rx) = mpsc::unbounded_channel();
        let dyno = Arc::new(Dyno {
            pid: launched.pid,
            pidfd: launched.pidfd,
            cgroup,
            lease,
        });
        let (done, done_rx) = oneshot::channel();
        let streams = {
            let _guard = handle.enter();
            crate::terminal::streams(&spec.name, output, console)
        };
        let (receiver, console) = match streams {
            Ok(s) => s,
            Err(e) => {
                dyno.kill();
                return Err(e);
            }
        };
        handle.spawn(supervise(
            dyno.clone(),
            launched.status,
            size.memory_bytes,
            notices,
            done,
        ));
        Ok(IsolatedProcess {
            name: spec.name.clone(),
            dyno,
            output: Some(Box::new(DynoOutput::new(receiver, notices_rx))),
            console,
            done: Some(done_rx),
            status: None,
            inside: inside::Target {
                runtime: self.clone(),
                slug: spec.cwd.clone(),
            },
        })
    }

    /// Everything up to a running app; synchronous.
    fn start(&self, spec: &DynoSpec, size: &DynoSize) -> Result<Started, RuntimeError> {
        let shared = &self.shared;
        let fail = |source| spawn_error(spec, source);
        let image = exec_image(spec).map_err(fail)?;
        let slug_error = |e: io::Error| {
            fail(io::Error::new(
                e.kind(),
                format!("cannot open the slug directory: {e}"),
            ))
        };
        let slug = std::fs::canonicalize(&spec.cwd).map_err(slug_error)?;
        drop(os::open_dir_path(&slug).map_err(slug_error)?);
        let (uid, gid) = match self.user {
            Some((uid, gid)) if uid != 0 && gid != 0 && uid != u32::MAX && gid != u32::MAX => {
                (uid, gid)
            }
            Some(_) => {
                return Err(fail(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "a dyno may not run as root or as uid -1",
                )));
            }
            None => {
                return Err(fail(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the app has no uid of its own to run its dynos as",
                )));
            }
        };
        let terminal = match spec.input {
            DynoInput::Terminal { cols, rows } => Some((cols, rows)),
            _ => None,
        };
        let setup = Setup {
            hostname: &spec.name,
            uid,
            gid,
            terminal,
        };
        let steps = plan::build(&shared.layout, &setup, &slug).map_err(|_| {
            fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the dyno name or slug path contains a NUL byte",
            ))
        })?;
        let n = next_id();
        let id = format!("{}-{n}-{}", std::process::id(), cgroup_safe(&spec.name));
        // Its network first: an error there leaves nothing to undo.
        let (namespace, lease) = self.take_network().map_err(fail)?;
        let cgroup = shared.cgroups.create(&id, size).map_err(fail)?;
        let pipe_error = |source| RuntimeError::Pipe {
            dyno: spec.name.clone(),
            source,
        };
        let result = (|| {
            if terminal.is_some() {
                // The terminal comes from the dyno's own devpts instance: its
                // init opens it and sends the controlling side back here.
                let (ours, theirs) = os::socket_pair().map_err(pipe_error)?;
                let io = ChildIo {
                    output: theirs.try_clone().map_err(pipe_error)?,
                    stdin: theirs,
                    errors: None,
                };
                let plan = Arc::new(ChildPlan { steps, image });
                let launched = launch(plan, io, namespace, &cgroup, shared.config.setup_timeout)
                    .map_err(fail)?;
                let received = os::receive_fd(&ours)
                    .and_then(|controller| {
                        os::set_nonblocking(&controller)?;
                        Ok((controller.try_clone()?, controller))
                    })
                    .map_err(pipe_error);
                return match received {
                    Ok((output, controller)) => {
                        Ok((launched, output, Some(ConsoleFds::Terminal { controller })))
                    }
                    Err(e) => {
                        os::pidfd_signal(&launched.pidfd, Signal::Kill);
                        let _ = os::pidfd_reap(&launched.pidfd, true);
                        Err(e)
                    }
                };
            }
            // An idle dyno (formation, detached one-off) reads a /dev/null of
            // its own, as on Heroku.
            let stdio = DynoStdio::new(spec.input, None).map_err(pipe_error)?;
            let io = ChildIo {
                stdin: stdio.stdin,
                output: stdio.stdout,
                errors: None,
            };
            drop(stdio.stderr);
            let plan = Arc::new(ChildPlan { steps, image });
            let launched =
                launch(plan, io, namespace, &cgroup, shared.config.setup_timeout).map_err(fail)?;
            Ok((launched, stdio.output, stdio.console))
        })();
        match result {
            Ok((launched, output, console)) => Ok(Started {
                launched,
                cgroup,
                output,
                console,
                lease,
            }),
            Err(e) => {
                cgroup.kill();
                remove_soon(&cgroup);
                Err(e)
            }
        }
    }
}

impl IsolatedRuntime {
    /// A network namespace of its own for the next dyno or sandboxed program,
    /// and its address, from the pool; neither without a dyno network.
    fn take_network(&self) -> io::Result<(Option<OwnedFd>, Option<Lease>)> {
        match &self.shared.config.network {
            Some(network) => {
                let prepared = network.take()?;
                Ok((Some(prepared.namespace), Some(prepared.lease)))
            }
            None => Ok((None, None)),
        }
    }
}

/// A number no other dyno (or probe, or sandboxed program) of this process
/// has: part of cgroup names, which two runtimes of one process (a test
/// binary's, say) would otherwise both call `PID-1-web.1`.
pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A dyno's size from its process type (the name up to the first dot).
fn size_of(sizes: &HashMap<String, DynoSize>, default: &DynoSize, dyno: &str) -> DynoSize {
    let process_type = dyno.split('.').next().unwrap_or(dyno);
    sizes
        .get(process_type)
        .cloned()
        .unwrap_or_else(|| default.clone())
}

struct Started {
    launched: Launched,
    cgroup: DynoCgroup,
    output: OwnedFd,
    console: Option<ConsoleFds>,
    /// The dyno's address, when it has a network of its own.
    lease: Option<Lease>,
}

fn spawn_error(spec: &DynoSpec, source: io::Error) -> RuntimeError {
    RuntimeError::Spawn {
        dyno: spec.name.clone(),
        command: spec.command.clone(),
        cwd: spec.cwd.display().to_string(),
        source,
    }
}

/// Tries to remove a group whose processes are gone, for a short while.
fn remove_soon(cgroup: &DynoCgroup) {
    for _ in 0..25 {
        if cgroup.remove() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn cgroup_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Runtime for IsolatedRuntime {
    type Process = IsolatedProcess;

    /// Starts a dyno with the spec's size, else its process type's (see
    /// [`IsolatedRuntime::set_size`]).
    fn spawn(&self, spec: &DynoSpec) -> Result<IsolatedProcess, RuntimeError> {
        let size = spec
            .size
            .clone()
            .unwrap_or_else(|| self.size_for(&spec.name));
        self.spawn_sized(spec, &size)
    }
}

/// The stack and devices as this host has them.
fn layout(config: &IsolatedConfig) -> Layout {
    let mut stack = Vec::new();
    for path in &config.stack {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let (Ok(target), Some(name)) = (std::fs::read_link(path), path.file_name()) {
                stack.push(Entry::Link {
                    name: PathBuf::from(name),
                    target,
                });
            }
        } else {
            stack.push(Entry::Bind {
                path: path.clone(),
                dir: meta.is_dir(),
            });
        }
    }
    let bound: Vec<PathBuf> = stack
        .iter()
        .filter_map(|e| match e {
            Entry::Bind { path, .. } => Some(path.clone()),
            Entry::Link { .. } | Entry::Replace { .. } => None,
        })
        .collect();
    let visible = |p: &Path| bound.iter().any(|b| p.starts_with(b));
    let mut extra = Vec::new();
    let resolv = Path::new("/etc/resolv.conf");
    let mut wanted: Vec<PathBuf> = config.extra_read_only.clone();
    let resolv_target = std::fs::symlink_metadata(resolv)
        .is_ok_and(|m| m.file_type().is_symlink())
        .then(|| std::fs::canonicalize(resolv).ok())
        .flatten();
    match (&config.network, resolv_target) {
        // A dyno with its own network cannot use a loopback resolver of the
        // host's: it sees crew's `resolv.conf` where its `/etc/resolv.conf`
        // leads.
        (Some(network), target) => {
            let path = target.unwrap_or_else(|| resolv.to_path_buf());
            extra.push(Entry::Replace {
                source: network.config().resolv_conf.clone(),
                exists: visible(&path),
                path,
            });
        }
        (None, Some(target)) => wanted.push(target),
        (None, None) => {}
    }
    for path in wanted {
        if !path.is_absolute() || visible(&path) {
            continue;
        }
        if let Ok(meta) = std::fs::metadata(&path) {
            extra.push(Entry::Bind {
                dir: meta.is_dir(),
                path,
            });
        }
    }
    let devices = DEVICES
        .iter()
        .filter_map(|name| {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let meta = std::fs::metadata(Path::new("/dev").join(name)).ok()?;
            meta.file_type().is_char_device().then(|| Device {
                name: name.to_string(),
                rdev: meta.rdev(),
            })
        })
        .collect();
    let walls = Walls {
        masked_proc: kernel::MASKED_PROC
            .iter()
            .filter_map(|name| Some((name.to_string(), kernel::proc_entry(name)?)))
            .collect(),
        read_only_proc: kernel::READ_ONLY_PROC
            .iter()
            .filter(|name| kernel::proc_entry(name).is_some())
            .map(|name| name.to_string())
            .collect(),
        seccomp: Arc::default(),
    };
    Layout {
        root: config.root_dir.clone(),
        stack,
        extra,
        devices,
        walls,
        cgroup_files: 1,
    }
}

/// `/bin/sh -c COMMAND` with the spec's environment, `HOME=/app`, and the slug's
/// host path in any value replaced by `/app`.
fn exec_image(spec: &DynoSpec) -> io::Result<ExecImage> {
    use std::ffi::CString;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    let slug = spec.cwd.to_str().map(|s| s.trim_end_matches('/'));
    let mut envp = Vec::with_capacity(spec.env.len() + 1);
    for (key, value) in &spec.env {
        if key == "HOME" {
            continue;
        }
        if key.is_empty() || key.contains('=') {
            return Err(invalid(
                "an environment variable has an empty name or one with `=`",
            ));
        }
        let value = match slug {
            Some(s) if !s.is_empty() => crate::slug_copy::rebase(value, s, plan::APP),
            _ => value.clone(),
        };
        envp.push(
            CString::new(format!("{key}={value}"))
                .map_err(|_| invalid("an environment variable contains a NUL byte"))?,
        );
    }
    envp.push(CString::new(format!("HOME={}", plan::APP)).map_err(|_| invalid("HOME"))?);
    let command = CString::new(spec.command.as_str())
        .map_err(|_| invalid("the command contains a NUL byte"))?;
    Ok(ExecImage {
        program: CString::new("/bin/sh").map_err(|_| invalid("sh"))?,
        argv: vec![
            CString::new("/bin/sh").map_err(|_| invalid("sh"))?,
            CString::new("-c").map_err(|_| invalid("-c"))?,
            command,
        ],
        envp,
        terminal: matches!(spec.input, DynoInput::Terminal { .. }),
    })
}

/// What the process handle, its group and its supervisor share.
struct Dyno {
    /// The init's pid on the host.
    pid: u32,
    pidfd: OwnedFd,
    cgroup: DynoCgroup,
    /// Its address, given back when the last handle on the dyno goes.
    lease: Option<Lease>,
}

impl Dyno {
    fn exited(&self) -> bool {
        os::pidfd_exited(&self.pidfd)
    }

    fn kill(&self) {
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
async fn supervise(
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

/// A running isolated dyno.
pub struct IsolatedProcess {
    name: String,
    dyno: Arc<Dyno>,
    output: Option<Output>,
    console: Option<Console>,
    done: Option<oneshot::Receiver<io::Result<ExitStatus>>>,
    status: Option<ExitStatus>,
    /// What `run:inside` needs to start a process behind the same walls.
    inside: inside::Target,
}

impl IsolatedProcess {
    /// The dyno's cgroup directory (on v1, the one in the memory hierarchy).
    pub fn cgroup_path(&self) -> PathBuf {
        self.dyno.cgroup.path().to_path_buf()
    }
}

impl DynoProcess for IsolatedProcess {
    type Group = IsolatedGroup;

    /// The host pid of the dyno's init (pid 1 inside).
    fn pid(&self) -> Option<u32> {
        Some(self.dyno.pid)
    }

    /// Its own address on crew's bridge, or loopback without a network.
    fn address(&self) -> std::net::IpAddr {
        match &self.dyno.lease {
            Some(lease) => lease.address().into(),
            None => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        }
    }

    fn take_output(&mut self) -> Option<Output> {
        self.output.take()
    }

    fn take_console(&mut self) -> Option<Console> {
        self.console.take()
    }

    fn enter(&self, spec: &DynoSpec) -> Result<crate::Entered, RuntimeError> {
        let mut target = self.inside.clone();
        target.slug = std::fs::canonicalize(&target.slug).map_err(|e| RuntimeError::Inside {
            dyno: spec.name.clone(),
            reason: format!("its slug directory: {e}"),
        })?;
        inside::enter(&self.dyno, &target, spec)
    }

    fn group(&self) -> IsolatedGroup {
        IsolatedGroup {
            dyno: self.dyno.clone(),
        }
    }

    /// Resolves when the app exits, with its status. By then every other
    /// process of the dyno is killed and reaped (only its init may still be
    /// finishing its own exit), and any R14/R15 line is in the output.
    async fn wait(&mut self) -> Result<ExitStatus, RuntimeError> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let wait_error = |source| RuntimeError::Wait {
            dyno: self.name.clone(),
            source,
        };
        // Awaited through a borrow, so a caller may drop this future (as a
        // `select!` loop does) and wait again later without losing the status.
        let done = self
            .done
            .as_mut()
            .ok_or_else(|| wait_error(io::Error::other("the dyno's status was already taken")))?;
        let received = done.await;
        self.done = None;
        let status = received
            .map_err(|_| wait_error(io::Error::other("the dyno's supervisor ended")))?
            .map_err(wait_error)?;
        self.status = Some(status);
        Ok(status)
    }
}

/// Every process of an isolated dyno.
#[derive(Clone)]
pub struct IsolatedGroup {
    dyno: Arc<Dyno>,
}

impl ProcessGroup for IsolatedGroup {
    /// SIGKILL kills the init, which takes the whole pid namespace, and every
    /// process in the cgroup. Other signals go to the init, which hands them to
    /// every process of the dyno.
    fn signal(&self, signal: Signal) {
        match signal {
            Signal::Kill => self.dyno.kill(),
            other => os::pidfd_signal(&self.dyno.pidfd, other),
        }
    }

    fn alive(&self) -> bool {
        !self.dyno.exited() || !self.dyno.cgroup.procs().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_gets_home_and_no_nul() {
        let spec = DynoSpec {
            name: "web.1".into(),
            command: "echo hi".into(),
            env: vec![
                ("HOME".into(), "/srv/slug".into()),
                ("PATH".into(), "/srv/slug/bin:/usr/bin".into()),
                ("PORT".into(), "5000".into()),
            ],
            cwd: "/srv/slug/".into(),
            ..DynoSpec::default()
        };
        let image = exec_image(&spec).unwrap();
        let env: Vec<String> = image
            .envp
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(env, ["PATH=/app/bin:/usr/bin", "PORT=5000", "HOME=/app"]);
        let argv: Vec<String> = image
            .argv
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(argv, ["/bin/sh", "-c", "echo hi"]);

        let mut bad = spec.clone();
        bad.command = "a\0b".into();
        assert_eq!(
            exec_image(&bad).err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidInput)
        );
        let mut bad = spec;
        bad.env.push(("A=B".into(), "x".into()));
        assert!(exec_image(&bad).is_err());
    }

    #[test]
    fn cgroup_names_are_tame() {
        assert_eq!(cgroup_safe("web.1"), "web.1");
        assert_eq!(cgroup_safe("run/../x y"), "run_.._x_y");
    }

    #[test]
    fn the_stack_copies_symlinks_and_skips_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let usr = dir.path().join("usr");
        std::fs::create_dir(&usr).unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.path().join("bin")).unwrap();
        let config = IsolatedConfig {
            stack: vec![usr.clone(), dir.path().join("bin"), dir.path().join("nope")],
            ..IsolatedConfig::default()
        };
        let layout = layout(&config);
        assert_eq!(
            layout.stack,
            [
                Entry::Bind {
                    path: usr,
                    dir: true
                },
                Entry::Link {
                    name: "bin".into(),
                    target: "usr/bin".into()
                }
            ]
        );
    }

    #[test]
    fn sizes_follow_the_process_type() {
        let mut sizes = HashMap::new();
        sizes.insert("web".to_string(), DynoSize::parse("standard-2x").unwrap());
        let default = DynoSize::default();
        assert_eq!(size_of(&sizes, &default, "web.3").name, "standard-2x");
        assert_eq!(size_of(&sizes, &default, "worker.1").name, "standard-1x");
        assert_eq!(size_of(&sizes, &default, "web").name, "standard-2x");
    }
}
