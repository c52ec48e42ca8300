//! [`IsolatedRuntime`]: the checks that a host can isolate dynos, the
//! handles a server gives each app (its own sizes, its own user), and the
//! synchronous start of a dyno up to its running app (cgroup, network,
//! plan, `launch`, its stdio).
//!
//! What watches a started dyno and the process handle the engine gets are in
//! `process` and `dyno`; `sandbox` starts programs that are not dynos through
//! the same handle.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cgroup::{self, Cgroups, DynoCgroup};
use super::config::{IsolatedConfig, IsolationUnavailable};
use super::exec_image::exec_image;
use super::host_layout::layout;
use super::kernel;
use super::launch::{ChildIo, ChildPlan, Launched, SetupTiming, launch};
use super::plan::{self, Layout, Setup};
use crate::dyno_network::{Lease, Starting};
use crate::os;
use crate::terminal::{ConsoleFds, DynoStdio};
use crate::{DynoInput, DynoSize, DynoSpec, ExitStatus, RuntimeError, Signal};

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
    pub(super) shared: Arc<Shared>,
    sizes: Arc<Mutex<HashMap<String, DynoSize>>>,
    /// The user and group this handle's dynos run as; `None` refuses to start
    /// any (an app whose uid could not be had).
    pub(super) user: Option<(u32, u32)>,
}

/// What every handle of one runtime shares.
pub(super) struct Shared {
    pub(super) config: IsolatedConfig,
    pub(super) layout: Layout,
    pub(super) cgroups: Cgroups,
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
        let mut cgroups = Cgroups::detect(&config.cgroup_root, &mountinfo, &config.cgroup_name)
            .map_err(IsolationUnavailable::NoCgroups)?;
        if matches!(cgroups.hierarchy(), cgroup::Hierarchy::V2 { .. })
            && !os::can_clone_into_cgroup()
        {
            cgroups.join_after_clone();
        }
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
        layout.cgroup_files = cgroups.join_file_count();
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
        let started = self.start(&spec, &DynoSize::default(), false);
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
    /// Starts a dyno whose init times each step of its setup, waits for it,
    /// and says how long each part of the start took: the bench's measure
    /// of what each wall costs. The timing adds one write per step. Needs no
    /// tokio runtime. The dyno reads nothing (`/dev/null`) and its output is
    /// closed at once, so a command that writes fails rather than blocks;
    /// it waits for the command's exit, so give it one that ends (`true`).
    pub fn time_start(&self, spec: &DynoSpec) -> Result<StartTiming, RuntimeError> {
        let fail = |source| spawn_error(spec, source);
        let size = self.size_for(&spec.name);
        let spec = DynoSpec {
            input: DynoInput::Idle,
            ..spec.clone()
        };
        let started = self.start(&spec, &size, true)?;
        drop(started.output);
        drop(started.console);
        let status = os::pidfd_reap(&started.launched.pidfd, true);
        started.cgroup.kill();
        remove_soon(&started.cgroup);
        match status {
            Ok(Some(status)) if status.success() => {}
            Ok(Some(status)) => {
                return Err(fail(io::Error::other(format!(
                    "the dyno exited with status {}",
                    status.code()
                ))));
            }
            Ok(None) => return Err(fail(io::Error::other("the dyno never exited"))),
            Err(e) => return Err(fail(e)),
        }
        let timing = started
            .launched
            .timing
            .ok_or_else(|| fail(io::Error::other("the init sent no times")))?;
        Ok(StartTiming::from_setup(&timing))
    }

    /// Everything up to a running app; synchronous. `timed`: see
    /// [`IsolatedRuntime::time_start`].
    pub(super) fn start(
        &self,
        spec: &DynoSpec,
        size: &DynoSize,
        timed: bool,
    ) -> Result<Started, RuntimeError> {
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
        let network = self.take_network().map_err(fail)?;
        let cgroup = shared.cgroups.create(&id, size).map_err(fail)?;
        let pipe_error = |source| RuntimeError::Pipe {
            dyno: spec.name.clone(),
            source,
        };
        let plan = Arc::new(ChildPlan {
            steps,
            image,
            timed,
        });
        let timeout = shared.config.setup_timeout;
        let launch_dyno =
            |io: ChildIo| launch(plan, io, network.namespace, &cgroup, timeout).map_err(fail);
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
                let launched = launch_dyno(io)?;
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
            let launched = launch_dyno(io)?;
            Ok((launched, stdio.output, stdio.console))
        })();
        match result {
            Ok((launched, output, console)) => Ok(Started {
                launched,
                cgroup,
                output,
                console,
                lease: network.lease,
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
    /// its address, and the mark to hold until the app runs, from the pool;
    /// none of them without a dyno network.
    pub(super) fn take_network(&self) -> io::Result<TakenNetwork> {
        match &self.shared.config.network {
            Some(network) => {
                let (prepared, starting) = network.take()?;
                Ok(TakenNetwork {
                    namespace: Some(prepared.namespace),
                    lease: Some(prepared.lease),
                    _starting: Some(starting),
                })
            }
            None => Ok(TakenNetwork {
                namespace: None,
                lease: None,
                _starting: None,
            }),
        }
    }
}

/// What [`IsolatedRuntime::take_network`] gives a start.
pub(super) struct TakenNetwork {
    pub(super) namespace: Option<OwnedFd>,
    pub(super) lease: Option<Lease>,
    /// Dropped with the rest once the start is over.
    _starting: Option<Starting>,
}

/// A number no other dyno (or probe, or sandboxed program) of this process
/// has: part of cgroup names, which two runtimes of one process (a test
/// binary's, say) would otherwise both call `PID-1-web.1`.
pub(super) fn next_id() -> u64 {
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

/// A dyno whose app runs, before anything watches it.
/// How long each part of one dyno's start took
/// ([`IsolatedRuntime::time_start`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartTiming {
    /// In the order they came: `clone` (from the start of the launch to the
    /// init's first instruction), then each kind of step with the time all
    /// its steps took together, then `app exec` (from the last step until
    /// the parent sees the app's exec).
    pub parts: Vec<(&'static str, Duration)>,
}

impl StartTiming {
    fn from_setup(setup: &SetupTiming) -> StartTiming {
        let span = |from: u32, to: u32| Duration::from_micros(u64::from(to.wrapping_sub(from)));
        let mut parts: Vec<(&'static str, Duration)> =
            vec![("clone", span(setup.began, setup.init))];
        let mut last = setup.init;
        for &(kind, ended) in &setup.steps {
            let took = span(last, ended);
            last = ended;
            match parts.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, sum)) => *sum += took,
                None => parts.push((kind, took)),
            }
        }
        parts.push(("app exec", span(last, setup.ready)));
        StartTiming { parts }
    }

    /// From the start of the launch to the app's exec.
    pub fn total(&self) -> Duration {
        self.parts.iter().map(|(_, d)| *d).sum()
    }
}

pub(super) struct Started {
    pub(super) launched: Launched,
    pub(super) cgroup: DynoCgroup,
    pub(super) output: OwnedFd,
    pub(super) console: Option<ConsoleFds>,
    /// The dyno's address, when it has a network of its own.
    pub(super) lease: Option<Lease>,
}

pub(super) fn spawn_error(spec: &DynoSpec, source: io::Error) -> RuntimeError {
    RuntimeError::Spawn {
        dyno: spec.name.clone(),
        command: spec.command.clone(),
        cwd: spec.cwd.display().to_string(),
        source,
    }
}

/// Tries to remove a group whose processes are gone, for a short while.
pub(super) fn remove_soon(cgroup: &DynoCgroup) {
    for _ in 0..25 {
        if cgroup.remove() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub(super) fn cgroup_safe(name: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_names_are_tame() {
        assert_eq!(cgroup_safe("web.1"), "web.1");
        assert_eq!(cgroup_safe("run/../x y"), "run_.._x_y");
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
