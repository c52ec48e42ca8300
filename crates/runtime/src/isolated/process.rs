//! What the engine holds of an isolated dyno: [`IsolatedProcess`] (its
//! output, console, exit and `run:inside`) and [`IsolatedGroup`] (its
//! signals), made by [`IsolatedRuntime::spawn_sized`], the `Runtime` side of
//! the runtime.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::dyno::{Dyno, supervise};
use super::inside;
use super::output::DynoOutput;
use super::runtime::{IsolatedRuntime, Started, spawn_error};
use crate::os;
use crate::{
    Console, DynoProcess, DynoSize, DynoSpec, ExitStatus, Output, ProcessGroup, Runtime,
    RuntimeError, Signal,
};

impl IsolatedRuntime {
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
        } = self.start(spec, size, false)?;
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
