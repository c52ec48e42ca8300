//! [`SwarmApp`]: the state one app's placement shares with its background
//! tasks (the poller, the log followers, the one-offs' watchers), and the
//! few helpers every part of the placement uses.
//!
//! Every other file of the placement adds an `impl SwarmApp` for the one
//! thing it does; this one sits below them all and names none of them, so
//! the modules import one way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crew_engine::{EngineError, ReleaseSpec, WebBackend};
use crew_logs::LogEvent;
use crew_procfile::Formation;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::SwarmConfig;
use super::view::{self, TaskSnapshot};
use crate::docker::{Docker, DockerError, Service, label_filter};
use crate::gateway::Gateway;
use crate::spec::{LABEL_APP, Timings};

/// One app on the swarm: what the placement knows and holds for it. Shared
/// (in an `Arc`) by [`SwarmPlacement`](crate::SwarmPlacement) and the tasks
/// it starts.
pub(super) struct SwarmApp {
    pub(super) docker: Arc<Docker>,
    pub(super) app: String,
    pub(super) config: SwarmConfig,
    pub(super) logs: mpsc::Sender<LogEvent>,
    pub(super) applied: tokio::sync::Mutex<Option<Applied>>,
    /// Serialises reads of the swarm, so lifecycle lines come out once.
    pub(super) refreshing: tokio::sync::Mutex<()>,
    pub(super) snapshot: Mutex<TaskSnapshot>,
    pub(super) backends: watch::Sender<Arc<Vec<WebBackend>>>,
    pub(super) run_numbers: AtomicU32,
    /// Types stopped with `stop TYPE`, and the quantity `restart` gives back.
    pub(super) stopped: Mutex<BTreeMap<String, u32>>,
    /// Images pushed to the registry by this placement; a release's image is
    /// pushed once per process, not at every apply.
    pub(super) pushed: Mutex<BTreeSet<String>>,
    /// Log followers by service id.
    pub(super) followers: Mutex<HashMap<String, JoinHandle<()>>>,
    /// The poller and the one-offs' watchers.
    pub(super) background: Mutex<Vec<JoinHandle<()>>>,
    pub(super) local_node: tokio::sync::OnceCell<String>,
    /// Other nodes' addresses, for their web tasks' backends.
    pub(super) node_addrs: Mutex<NodeAddrs>,
    /// The router's way onto the app's network.
    pub(super) gateway: Gateway,
    /// Log lines older than this are not replayed (a server that restarts
    /// adopts running services without repeating their history).
    pub(super) since: SystemTime,
}

/// The release and formation last applied.
pub(super) struct Applied {
    pub(super) release: ReleaseSpec,
    pub(super) formation: Formation,
}

/// Node id to the IP the node is reached at, as `/nodes` said when last
/// read. Addresses change rarely (a node that rejoins gets a new id), so the
/// list is read again only when a task runs on a node not in it, or once it
/// is older than [`NODE_ADDRS_MAX_AGE`].
#[derive(Default)]
pub(super) struct NodeAddrs {
    pub(super) addrs: HashMap<String, IpAddr>,
    /// Nodes listed without a usable address: known, so that they do not
    /// make every poll read the list again.
    pub(super) without: BTreeSet<String>,
    pub(super) read_at: Option<tokio::time::Instant>,
}

pub(super) const NODE_ADDRS_MAX_AGE: Duration = Duration::from_secs(60);

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Any error, as the [`crew_engine::Placement`] trait reports it.
pub(super) fn engine_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Engine(e.to_string())
}

impl SwarmApp {
    /// Nothing is read from the swarm yet: the first refresh adopts what is
    /// there.
    pub(super) fn new(
        docker: Arc<Docker>,
        app: &str,
        config: SwarmConfig,
        logs: mpsc::Sender<LogEvent>,
    ) -> SwarmApp {
        let (backends, _) = watch::channel(Arc::new(Vec::new()));
        let gateway = Gateway::new(app, config.join_network);
        SwarmApp {
            docker,
            app: app.to_string(),
            config,
            logs,
            applied: tokio::sync::Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            snapshot: Mutex::new(TaskSnapshot::default()),
            backends,
            run_numbers: AtomicU32::new(0),
            stopped: Mutex::new(BTreeMap::new()),
            pushed: Mutex::new(BTreeSet::new()),
            followers: Mutex::new(HashMap::new()),
            background: Mutex::new(Vec::new()),
            local_node: tokio::sync::OnceCell::new(),
            node_addrs: Mutex::new(NodeAddrs::default()),
            gateway,
            since: SystemTime::now(),
        }
    }

    pub(super) fn timings(&self) -> Timings {
        Timings {
            stop_grace: self.config.stop_grace,
            restart_delay: self.config.restart_delay,
            health_interval: self.config.health_interval,
            boot_timeout: self.config.boot_timeout,
        }
    }

    pub(super) fn stop_background(&self) {
        for task in lock(&self.background).drain(..) {
            task.abort();
        }
        for (_, task) in lock(&self.followers).drain() {
            task.abort();
        }
    }

    pub(super) async fn local_node(&self) -> Result<String, DockerError> {
        self.local_node
            .get_or_try_init(|| async { Ok(self.docker.info().await?.swarm.node_id) })
            .await
            .cloned()
    }

    /// Writes a lifecycle line, `crew[DYNO]: TEXT`, to the app's log.
    pub(super) async fn log_lifecycle(&self, dyno: &str, text: impl Into<String>) {
        let _ = self
            .logs
            .send(LogEvent::Platform {
                dyno: Arc::from(dyno),
                at: SystemTime::now(),
                text: text.into(),
            })
            .await;
    }

    /// The app's services, one-offs' included.
    pub(super) async fn services(&self) -> Result<Vec<Service>, DockerError> {
        self.docker
            .services(&label_filter(LABEL_APP, &self.app))
            .await
    }

    /// A service's Procfile command, from the release that made it.
    pub(super) fn command_of(&self, service: &Service) -> String {
        let applied = self.applied.try_lock().ok();
        let release = applied
            .as_ref()
            .and_then(|a| a.as_ref())
            .map(|a| &a.release);
        view::command_of(service, release)
    }
}
