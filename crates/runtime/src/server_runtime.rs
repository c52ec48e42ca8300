//! The runtime a crew server picks once at startup: isolated dynos where the
//! host allows them, plain processes (each in its own copy of the slug)
//! otherwise or when asked.

use crate::{
    Console, DynoProcess, DynoSpec, ExitStatus, IsolatedGroup, IsolatedProcess, IsolatedRuntime,
    Output, PlainGroup, PlainProcess, PlainRuntime, ProcessGroup, Runtime, RuntimeError, Signal,
};

#[derive(Clone)]
pub enum ServerRuntime {
    Isolated(IsolatedRuntime),
    Plain(PlainRuntime),
}

pub enum ServerProcess {
    Isolated(IsolatedProcess),
    /// Boxed: a plain process carries its child handle and slug copy inline.
    Plain(Box<PlainProcess>),
}

#[derive(Clone)]
pub enum ServerGroup {
    Isolated(IsolatedGroup),
    Plain(PlainGroup),
}

impl ServerRuntime {
    pub fn is_isolated(&self) -> bool {
        matches!(self, ServerRuntime::Isolated(_))
    }

    /// The same runtime, whose isolated dynos run as `user` (an app's own uid
    /// and gid; `None` refuses to start them). Plain dynos run as crew.
    pub fn with_user(&self, user: Option<(u32, u32)>) -> ServerRuntime {
        match self {
            ServerRuntime::Isolated(r) => ServerRuntime::Isolated(r.with_user(user)),
            ServerRuntime::Plain(r) => ServerRuntime::Plain(r.clone()),
        }
    }
}

impl Runtime for ServerRuntime {
    type Process = ServerProcess;

    fn spawn(&self, spec: &DynoSpec) -> Result<ServerProcess, RuntimeError> {
        match self {
            ServerRuntime::Isolated(r) => r.spawn(spec).map(ServerProcess::Isolated),
            ServerRuntime::Plain(r) => r.spawn(spec).map(|p| ServerProcess::Plain(Box::new(p))),
        }
    }
}

impl DynoProcess for ServerProcess {
    type Group = ServerGroup;

    fn pid(&self) -> Option<u32> {
        match self {
            ServerProcess::Isolated(p) => p.pid(),
            ServerProcess::Plain(p) => p.pid(),
        }
    }

    fn address(&self) -> std::net::IpAddr {
        match self {
            ServerProcess::Isolated(p) => p.address(),
            ServerProcess::Plain(p) => p.address(),
        }
    }

    fn take_output(&mut self) -> Option<Output> {
        match self {
            ServerProcess::Isolated(p) => p.take_output(),
            ServerProcess::Plain(p) => p.take_output(),
        }
    }

    fn take_console(&mut self) -> Option<Console> {
        match self {
            ServerProcess::Isolated(p) => p.take_console(),
            ServerProcess::Plain(p) => p.take_console(),
        }
    }

    /// Only an isolated dyno has namespaces to enter; a plain one is refused
    /// rather than given a process that would not share its walls.
    fn enter(&self, spec: &DynoSpec) -> Result<crate::Entered, RuntimeError> {
        match self {
            ServerProcess::Isolated(p) => p.enter(spec),
            ServerProcess::Plain(_) => Err(RuntimeError::Inside {
                dyno: spec.name.clone(),
                reason: "this server runs its dynos without isolation, so there are no \
                         namespaces to enter; use `run` for a one-off instead"
                    .into(),
            }),
        }
    }

    fn group(&self) -> ServerGroup {
        match self {
            ServerProcess::Isolated(p) => ServerGroup::Isolated(p.group()),
            ServerProcess::Plain(p) => ServerGroup::Plain(p.group()),
        }
    }

    async fn wait(&mut self) -> Result<ExitStatus, RuntimeError> {
        match self {
            ServerProcess::Isolated(p) => p.wait().await,
            ServerProcess::Plain(p) => p.wait().await,
        }
    }
}

impl ProcessGroup for ServerGroup {
    fn signal(&self, signal: Signal) {
        match self {
            ServerGroup::Isolated(g) => g.signal(signal),
            ServerGroup::Plain(g) => g.signal(signal),
        }
    }

    fn alive(&self) -> bool {
        match self {
            ServerGroup::Isolated(g) => g.alive(),
            ServerGroup::Plain(g) => g.alive(),
        }
    }
}
