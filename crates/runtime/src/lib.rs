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
//! runs dynos plain.
//!
//! All `unsafe` code of crew lives in [`os`].

pub mod isolated;
pub mod os;
mod plain;
pub mod shell;
mod signal;
mod size;
pub mod watchdog;

use std::future::Future;
use std::path::PathBuf;

pub use isolated::{
    IsolatedConfig, IsolatedGroup, IsolatedProcess, IsolatedRuntime, IsolationUnavailable,
};
pub use plain::{PlainProcess, PlainRuntime};
pub use signal::{ExitStatus, Signal};
pub use size::{DynoSize, UnknownSize};

/// Everything needed to start one dyno.
#[derive(Debug, Clone)]
pub struct DynoSpec {
    /// `web.1`, `run.3`.
    pub name: String,
    /// Run with `sh -c`, so the shell does all expansion.
    pub command: String,
    /// The complete environment of the process; nothing is inherited besides it.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
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
    /// The merged output; `None` after the first call.
    fn take_output(&mut self) -> Option<Output>;
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
