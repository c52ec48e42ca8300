//! How a dyno is made.
//!
//! The engine decides *when* a dyno runs; this crate decides *how*. A [`Runtime`]
//! turns a [`DynoSpec`] (name, command, environment, directory) into a running
//! [`DynoProcess`]: a leader whose exit can be awaited, one merged stream of its
//! stdout and stderr, and a [`ProcessGroup`] handle that signals every process the
//! dyno started, not just the leader.
//!
//! [`PlainRuntime`] runs dynos as ordinary processes, each the leader of its own
//! process group, so a stop reaches grandchildren too. Three things keep anything
//! from outliving crew:
//! - every leader gets `PR_SET_PDEATHSIG`;
//! - a [`watchdog`] process holds the list of live groups and kills them when its
//!   pipe from crew closes, which is how it learns crew was SIGKILLed;
//! - crew is a child subreaper, so orphans that leave their group (double fork and
//!   `setsid`) become crew's children and are found, reported and killed at the end.
//!
//! [`IsolatedRuntime`] runs each dyno in its own namespaces, over an overlay of
//! its slug, limited by a cgroup sized by a [`DynoSize`] (see [`isolated`]). Where
//! that is not possible, [`IsolatedRuntime::probe`] says why, and the platform
//! runs dynos plain. [`IsolatedRuntime::sandbox`] runs a program that is not a
//! dyno (a build step) behind the same walls, with host directories bound at
//! fixed places instead of a slug.
//!
//! A server picks one of the two at startup as its [`ServerRuntime`]; without
//! isolation, each of its dynos runs in a copy of its slug of its own.
//!
//! A dyno's stdin is normally nothing to read: on a server a `/dev/null` of its
//! own (end of file at once, as on Heroku), under `crew start` a pipe nobody
//! writes to. An attached one-off gets
//! a [`Console`] instead: a pipe to its stdin, or a new pseudo-terminal that is
//! its stdin, stdout and stderr and its controlling terminal.
//!
//! A running isolated dyno can take one more process, behind exactly its
//! walls (`run:inside`, [`DynoProcess::enter`], see `isolated::inside`); a
//! plain one refuses.
//!
//! A [`NetworkNamespace`] makes sockets in another process's network
//! namespace, so that a router can reach dynos on a network this machine is
//! not on (a Swarm overlay, through a container that is).
//!
//! With a [`DynoNetwork`], each isolated dyno also has a network namespace
//! of its own on crew's bridge (see [`dyno_network`]); a dyno's
//! [`DynoProcess::address`] is where the router reaches it.
//!
//! An isolated dyno's setup is data: `isolated::plan` computes its steps in
//! the parent, and the child of the `clone` (the dyno's init, `init::child`)
//! only walks them through the `Sys` trait (`init::sys`), allocating nothing.
//!
//! All `unsafe` code of crew lives in [`os`] (the directory `os/`): among it
//! the `clone` and `LinuxSys`, the real `Sys`. Modules point one way:
//! `isolated` and the other runtimes call `os`, and `os` calls only `init`,
//! which knows nothing of either.

pub mod dyno_network;
mod init;
pub mod isolated;
mod network_namespace;
// The one module allowed `unsafe` (the workspace denies it everywhere else,
// see the root Cargo.toml): the libc calls that rustix does not wrap safely
// (clone into new namespaces, a child's signal dispositions, the dyno init's
// async-signal-safe `LinuxSys`, fd passing). One directory, `os/`, so a
// reviewer can audit every `unsafe` of crew together.
#[allow(unsafe_code)]
pub mod os;
mod plain;
mod server_runtime;
mod signal;
mod size;
mod slug_copy;
mod terminal;
pub mod watchdog;

use std::future::Future;
use std::path::PathBuf;

pub use dyno_network::{DynoNetwork, DynoNetworkConfig, Ipv4Range, NetworkUnavailable};
pub use isolated::{
    IsolatedConfig, IsolatedGroup, IsolatedProcess, IsolatedRuntime, IsolationUnavailable,
    SandboxBind, SandboxSpec, Sandboxed, StartTiming,
};
pub use network_namespace::NetworkNamespace;
pub use plain::{PlainGroup, PlainProcess, PlainRuntime};
pub use server_runtime::{ServerGroup, ServerProcess, ServerRuntime};
pub use signal::{ExitStatus, Signal};
pub use size::{DynoSize, UnknownSize, host_memory, memory_for_dynos};
pub use terminal::{Console, Resize};

/// Everything needed to start one dyno.
#[derive(Debug, Clone, Default)]
pub struct DynoSpec {
    /// `web.1`, `run.3`.
    pub name: String,
    /// Run with `sh -c`, so the shell does all expansion.
    pub command: String,
    /// The complete environment of the process; nothing is inherited besides it.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// The dyno's limits, where the runtime enforces any; `None` is the
    /// runtime's default.
    pub size: Option<DynoSize>,
    pub input: DynoInput,
}

/// What a dyno's stdin is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DynoInput {
    /// Nothing to read. A server's dyno gets a `/dev/null` of its own (end of
    /// file at once, as on Heroku); under `crew start`, a pipe nobody writes
    /// to, open and never delivering data, so watchers that exit on
    /// end-of-file keep running.
    #[default]
    Idle,
    /// A pipe whose other end is the process's [`Console`] (`crew run --no-tty`).
    Pipe,
    /// A new terminal of this size, stdin, stdout and stderr at once, whose
    /// controlling side is the [`Console`] (`crew run` attached).
    Terminal { cols: u16, rows: u16 },
}

/// The merged stdout and stderr of a dyno.
pub type Output = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("could not start `{command}` for {dyno} in {cwd}: {source}")]
    Spawn {
        dyno: String,
        command: String,
        cwd: String,
        source: std::io::Error,
    },
    #[error("could not make a pipe for {dyno}: {source}")]
    Pipe {
        dyno: String,
        source: std::io::Error,
    },
    #[error("waiting for {dyno} failed: {source}")]
    Wait {
        dyno: String,
        source: std::io::Error,
    },
    /// `run:inside` could not start its process in the dyno.
    #[error("cannot run a process inside {dyno}: {reason}")]
    Inside { dyno: String, reason: String },
}

/// A process started inside a running dyno (`run:inside`): its own output
/// and console, its exit, and a hang-up for when its client goes.
pub struct Entered {
    pub output: Output,
    pub console: Option<Console>,
    /// The process's exit status (its whole session is in the dyno, and dies
    /// with it).
    pub exit: std::pin::Pin<Box<dyn Future<Output = ExitStatus> + Send>>,
    /// Sends SIGHUP to the process, as when its terminal closes.
    pub hangup: Box<dyn FnOnce() + Send>,
}

/// Makes dynos. Implemented by the plain process runtime and by test doubles.
pub trait Runtime: Send + Sync + 'static {
    type Process: DynoProcess;
    fn spawn(&self, spec: &DynoSpec) -> Result<Self::Process, RuntimeError>;
}

/// One running dyno.
pub trait DynoProcess: Send + 'static {
    type Group: ProcessGroup;
    /// The leader's pid, when the runtime has one to show.
    fn pid(&self) -> Option<u32>;
    /// Where the dyno's listening sockets are reached from this host: its own
    /// address when it has a network namespace, loopback when it shares the
    /// host's network.
    fn address(&self) -> std::net::IpAddr {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    }
    /// The merged output; `None` after the first call. With a terminal, what the
    /// terminal shows.
    fn take_output(&mut self) -> Option<Output>;
    /// The dyno's stdin and window size, when it was started with
    /// [`DynoInput::Pipe`] or [`DynoInput::Terminal`]; `None` after the first call.
    fn take_console(&mut self) -> Option<Console> {
        None
    }
    /// Starts `spec` (command, environment, input) inside this running dyno:
    /// in its namespaces and cgroup, as its user, behind its walls. Runtimes
    /// that cannot say why.
    fn enter(&self, spec: &DynoSpec) -> Result<Entered, RuntimeError> {
        Err(RuntimeError::Inside {
            dyno: spec.name.clone(),
            reason: "this runtime cannot start a process inside a running dyno".into(),
        })
    }
    /// A handle that can signal the dyno while its exit is being awaited.
    fn group(&self) -> Self::Group;
    /// Resolves when the leader exits.
    fn wait(&mut self) -> impl Future<Output = Result<ExitStatus, RuntimeError>> + Send;
}

/// Every process of one dyno.
pub trait ProcessGroup: Clone + Send + Sync + 'static {
    /// Sends `signal` to every process of the dyno. Sending to a dyno that is
    /// already gone is not an error.
    fn signal(&self, signal: Signal);
    /// Whether any process of the dyno is still alive.
    fn alive(&self) -> bool;
}
