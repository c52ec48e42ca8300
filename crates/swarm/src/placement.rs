//! [`SwarmPlacement`]: one app's formation as Swarm services.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufWriter;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crew_cluster::image::{ImageSpec, write_docker_archive};
use crew_cluster::{PORT, object_name, validate_app_name};
use crew_engine::{
    Attachment, BoxFuture, DynoInfo, DynoState, EngineError, Placement, RELEASE_DYNO,
    ReleaseCommand, ReleaseSpec, RunRequest, WebBackend,
};
use crew_logs::LogEvent;
use crew_procfile::{Formation, FormationChange};
use crew_runtime::{Console, DynoInput, ExitStatus, Output, Resize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::docker::{Docker, DockerError, LogStream, Service, Task, Upgraded, label_filter};
use crate::gateway::Gateway;
use crate::logline::parse_time;
use crate::spec::{
    self, LABEL_APP, LABEL_DYNO, LABEL_TYPE, RUN_TYPE, Timings, network_name, run_name,
};
use crate::{SwarmError, logline};

/// How a [`SwarmPlacement`] runs its app.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// A root filesystem tar (or tar.gz) laid under every release's slug:
    /// `/bin/sh` and whatever the slug's programs need. Without it an image
    /// holds the slug alone, which no dyno can start from.
    pub base_rootfs: Option<PathBuf>,
    /// Other nodes' daemons that get every release image loaded too, when
    /// there is no [`registry`](Self::registry): a node can only run an
    /// image it holds then.
    pub image_nodes: Vec<Arc<Docker>>,
    /// A registry (`HOST[:PORT][/PATH]`) every node can pull from: each
    /// release image is pushed there as `REGISTRY/crew/APP:vN` from the
    /// manager's daemon, and the services name it, so a node pulls it when
    /// a task lands there. Every daemon must trust the registry (TLS, or
    /// `--insecure-registry`).
    pub registry: Option<String>,
    /// How often the tasks are read for `ps`, lifecycle lines and backends.
    pub poll_interval: Duration,
    /// SIGTERM to SIGKILL: 30 s, as on Heroku.
    pub stop_grace: Duration,
    /// How long Swarm waits before replacing a task that exited. Swarm has
    /// no backoff: this is the whole restart policy.
    pub restart_delay: Duration,
    /// How often a web task's health check looks for a listener on `PORT`.
    /// A new web task is up (and a start-first update moves on) at the
    /// first check that finds one, so this bounds how late that is seen;
    /// each check is an exec in the container, so it is not free either.
    pub health_interval: Duration,
    /// How long a web task may take to listen on `PORT` before it counts as
    /// crashed (Heroku's R10): 60 s, as on Heroku.
    pub boot_timeout: Duration,
    /// Whether the router joins the app's overlay network (through a
    /// gateway container on this node, which needs root) and reaches web
    /// tasks at their addresses there. Off, or where it cannot, it reaches
    /// them at the ports they publish in host mode on their nodes.
    pub join_network: bool,
}

impl Default for SwarmConfig {
    fn default() -> SwarmConfig {
        SwarmConfig {
            base_rootfs: None,
            image_nodes: Vec::new(),
            registry: None,
            poll_interval: Duration::from_secs(1),
            stop_grace: Duration::from_secs(u64::from(crew_cluster::STOP_GRACE_SECONDS)),
            restart_delay: Duration::from_secs(5),
            health_interval: Duration::from_secs(2),
            boot_timeout: Duration::from_secs(60),
            join_network: true,
        }
    }
}

/// A dyno as Swarm places it: what `ps` shows, plus the node it runs on.
#[derive(Debug, Clone)]
pub struct SwarmDyno {
    pub info: DynoInfo,
    /// The Swarm node id (hostnames repeat across nodes; ids do not).
    pub node: Option<String>,
    /// The task behind the dyno now.
    pub task: String,
}

/// The ends of an attached one-off on this node, shaped like
/// [`crew_engine::Attachment`] (see the crate's notes on why it is not one).
pub struct SwarmAttachment {
    pub io: oneshot::Receiver<Result<(Output, Option<Console>), String>>,
    pub exit: oneshot::Receiver<ExitStatus>,
    /// Dropped, it sends the one-off SIGHUP, as a closing terminal would.
    pub hangup: HangupGuard,
}

/// Sends SIGHUP to an attached one-off's container when dropped.
pub struct HangupGuard {
    docker: Arc<Docker>,
    container: String,
    runtime: tokio::runtime::Handle,
}

impl Drop for HangupGuard {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let id = self.container.clone();
        // A container that has already ended answers 409; nothing to do then.
        self.runtime.spawn(async move {
            let _ = docker.container_kill(&id, "SIGHUP").await;
        });
    }
}

/// One app's dynos as Swarm services (research §4.3). Make it with
/// [`SwarmPlacement::new`]; see the crate's documentation for the mapping.
pub struct SwarmPlacement {
    shared: Arc<Shared>,
}

struct Shared {
    docker: Arc<Docker>,
    app: String,
    config: SwarmConfig,
    logs: mpsc::Sender<LogEvent>,
    applied: tokio::sync::Mutex<Option<Applied>>,
    /// Serialises reads of the swarm, so lifecycle lines come out once.
    refreshing: tokio::sync::Mutex<()>,
    view: Mutex<View>,
    backends: watch::Sender<Arc<Vec<WebBackend>>>,
    run_numbers: AtomicU32,
    /// Types stopped with `stop TYPE`, and the quantity `restart` gives back.
    stopped: Mutex<BTreeMap<String, u32>>,
    /// Images pushed to the registry by this placement; a release's image is
    /// pushed once per process, not at every apply.
    pushed: Mutex<BTreeSet<String>>,
    /// Log followers by service id.
    followers: Mutex<HashMap<String, JoinHandle<()>>>,
    /// The poller and the one-offs' watchers.
    background: Mutex<Vec<JoinHandle<()>>>,
    local_node: tokio::sync::OnceCell<String>,
    /// Other nodes' addresses, for their web tasks' backends.
    node_addrs: Mutex<NodeAddrs>,
    /// The router's way onto the app's network.
    gateway: Gateway,
    /// Log lines older than this are not replayed (a server that restarts
    /// adopts running services without repeating their history).
    since: SystemTime,
}

struct Applied {
    release: ReleaseSpec,
    formation: Formation,
}

/// Node id to the IP the node is reached at, as `/nodes` said when last
/// read. Addresses change rarely (a node that rejoins gets a new id), so the
/// list is read again only when a task runs on a node not in it, or once it
/// is older than [`NODE_ADDRS_MAX_AGE`].
#[derive(Default)]
struct NodeAddrs {
    addrs: HashMap<String, IpAddr>,
    /// Nodes listed without a usable address: known, so that they do not
    /// make every poll read the list again.
    without: BTreeSet<String>,
    read_at: Option<tokio::time::Instant>,
}

const NODE_ADDRS_MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct View {
    dynos: Vec<SwarmDyno>,
    /// Task id to dyno name, for log lines.
    task_dynos: HashMap<String, Arc<str>>,
    /// Each task's last state seen, for lifecycle lines.
    seen: HashMap<String, String>,
    primed: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn engine(e: impl std::fmt::Display) -> EngineError {
    EngineError::Engine(e.to_string())
}

fn task_time(task: &Task) -> SystemTime {
    parse_time(&task.created_at).unwrap_or(UNIX_EPOCH)
}

fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "complete" | "failed" | "rejected" | "shutdown" | "remove" | "orphaned"
    )
}

/// Swarm's task states in Heroku's words. A formation dyno's exit is a crash
/// whatever its code (`any` restarts it); a one-off's is its completion.
fn dyno_state(state: &str, one_off: bool) -> DynoState {
    match state {
        "running" => DynoState::Up,
        "complete" if one_off => DynoState::Complete,
        "complete" | "failed" | "rejected" => DynoState::Crashed,
        "shutdown" | "remove" | "orphaned" => DynoState::Down,
        _ => DynoState::Starting,
    }
}

/// The exit code a finished task reports; Swarm keeps it in the container
/// status, or only in its error text (`task: non-zero exit (3)`).
fn exit_code(task: &Task) -> i32 {
    if let Some(code) = task.exit_code()
        && (code != 0 || task.status.state == "complete")
    {
        return i32::try_from(code).unwrap_or(1);
    }
    let err = task.status.err.as_deref().unwrap_or("");
    if let Some(rest) = err.split("exit (").nth(1)
        && let Some(code) = rest.split(')').next().and_then(|c| c.parse().ok())
    {
        return code;
    }
    match task.status.state.as_str() {
        "complete" => 0,
        // Never started: what a shell says when it cannot run a command.
        "rejected" => 127,
        _ => 137,
    }
}

impl SwarmPlacement {
    /// The placement of `app` on the swarm that `docker` manages. Must be
    /// called inside a tokio runtime: it starts a task that reads the app's
    /// services every `config.poll_interval`. Services the app already has
    /// (crew restarted) are adopted as they are.
    pub fn new(
        docker: Arc<Docker>,
        app: &str,
        config: SwarmConfig,
        logs: mpsc::Sender<LogEvent>,
    ) -> Result<SwarmPlacement, SwarmError> {
        validate_app_name(app)?;
        if let Some(registry) = &config.registry {
            spec::check_registry(registry)?;
        }
        let (backends, _) = watch::channel(Arc::new(Vec::new()));
        let gateway = Gateway::new(app, config.join_network);
        let shared = Arc::new(Shared {
            docker,
            app: app.to_string(),
            config,
            logs,
            applied: tokio::sync::Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            view: Mutex::new(View::default()),
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
        });
        let poller = tokio::spawn(poll(shared.clone()));
        lock(&shared.background).push(poller);
        Ok(SwarmPlacement { shared })
    }

    /// The dynos with the nodes they run on, read from the swarm now.
    pub async fn dynos(&self) -> Vec<SwarmDyno> {
        if let Err(e) = self.shared.refresh().await {
            tracing::debug!("reading {}'s tasks: {e}", self.shared.app);
        }
        lock(&self.shared.view).dynos.clone()
    }

    /// An attached one-off, `run.N`, as a container on this node: the same
    /// image, environment and network as the app's dynos, with a terminal
    /// when the request has one (resized through the API), removed when it
    /// ends.
    pub async fn run_attached(
        &self,
        request: RunRequest,
    ) -> Result<(DynoInfo, SwarmAttachment), EngineError> {
        self.shared.run_attached(request).await.map_err(engine)
    }
}

impl Drop for SwarmPlacement {
    fn drop(&mut self) {
        self.shared.stop_background();
    }
}

async fn poll(shared: Arc<Shared>) {
    loop {
        if let Err(e) = shared.refresh().await {
            tracing::debug!("reading {}'s tasks: {e}", shared.app);
        }
        tokio::time::sleep(shared.config.poll_interval).await;
    }
}

impl Shared {
    fn timings(&self) -> Timings {
        Timings {
            stop_grace: self.config.stop_grace,
            restart_delay: self.config.restart_delay,
            health_interval: self.config.health_interval,
            boot_timeout: self.config.boot_timeout,
        }
    }

    fn stop_background(&self) {
        for task in lock(&self.background).drain(..) {
            task.abort();
        }
        for (_, task) in lock(&self.followers).drain() {
            task.abort();
        }
    }

    async fn local_node(&self) -> Result<String, DockerError> {
        self.local_node
            .get_or_try_init(|| async { Ok(self.docker.info().await?.swarm.node_id) })
            .await
            .cloned()
    }

    /// The addresses of `nodes` (ids), from the cache, or from `/nodes` when
    /// one is missing or the cache is old. A node without a usable address
    /// is left out; so are all of them if the swarm cannot be read and
    /// nothing was cached.
    async fn node_addresses(&self, nodes: &BTreeSet<&str>) -> HashMap<String, IpAddr> {
        {
            let cache = lock(&self.node_addrs);
            let fresh = cache
                .read_at
                .is_some_and(|at| at.elapsed() < NODE_ADDRS_MAX_AGE);
            let known = |n: &str| cache.addrs.contains_key(n) || cache.without.contains(n);
            if fresh && nodes.iter().all(|n| known(n)) {
                return cache.addrs.clone();
            }
        }
        match self.docker.nodes().await {
            Ok(list) => {
                let mut addrs = HashMap::new();
                let mut without = BTreeSet::new();
                for node in &list {
                    match node.ip() {
                        Some(ip) => {
                            addrs.insert(node.id.clone(), ip);
                        }
                        None => {
                            without.insert(node.id.clone());
                            tracing::warn!(
                                "node {} reports no usable address ({:?}); its web tasks get no traffic",
                                short_id(&node.id),
                                node.status.addr
                            );
                        }
                    }
                }
                let mut cache = lock(&self.node_addrs);
                cache.addrs = addrs;
                cache.without = without;
                cache.read_at = Some(tokio::time::Instant::now());
                cache.addrs.clone()
            }
            Err(e) => {
                tracing::debug!("reading the swarm's nodes: {e}");
                lock(&self.node_addrs).addrs.clone()
            }
        }
    }

    /// The router's backends for the running web tasks: each task's address
    /// on the app's network, reached from the gateway's namespace; or, where
    /// the router is not on the network, the port the task publishes in host
    /// mode on its node.
    async fn web_backends(&self, web_tasks: &[(Arc<str>, &Task)], local: &str) -> Vec<WebBackend> {
        if web_tasks.is_empty() {
            return Vec::new();
        }
        // Held while a release is applied (which makes the gateway itself)
        // or scaled; the next poll makes it then, if it is still missing.
        let image = match self.applied.try_lock() {
            Ok(applied) => applied.as_ref().map(|a| self.image(&a.release)),
            Err(_) => None,
        };
        let namespace = self.gateway.namespace(&self.docker, image.as_deref()).await;
        let network = network_name(&self.app);
        // Host-mode ports listen on every interface of their node. This
        // node is the one behind the socket, so on this machine: loopback
        // reaches it whatever its advertised address, and needs no route.
        // Other nodes are reached at the address the swarm knows them by.
        let remote: BTreeSet<&str> = web_tasks
            .iter()
            .filter(|(_, task)| namespace.is_none() || task.address_on(&network).is_none())
            .filter_map(|(_, task)| task.node_id.as_deref())
            .filter(|node| *node != local)
            .collect();
        let addrs = if remote.is_empty() {
            HashMap::new()
        } else {
            self.node_addresses(&remote).await
        };
        let mut backends = Vec::new();
        for (name, task) in web_tasks {
            let on_network = namespace
                .as_ref()
                .and_then(|ns| Some((task.address_on(&network)?, ns.clone())));
            let (addr, namespace) = match on_network {
                Some((ip, namespace)) => (SocketAddr::new(ip, PORT), Some(namespace)),
                None => {
                    let (Some(port), Some(node)) =
                        (task.published_port(PORT), task.node_id.as_deref())
                    else {
                        continue;
                    };
                    let ip = if node == local {
                        IpAddr::V4(Ipv4Addr::LOCALHOST)
                    } else {
                        match addrs.get(node) {
                            Some(ip) => *ip,
                            None => continue,
                        }
                    };
                    (SocketAddr::new(ip, port), None)
                }
            };
            backends.push(WebBackend {
                name: name.to_string(),
                addr,
                state: DynoState::Up,
                namespace,
                requests: Default::default(),
            });
        }
        backends.sort_by(|a, b| (&a.name, a.addr).cmp(&(&b.name, b.addr)));
        backends
    }

    async fn platform(&self, dyno: &str, text: impl Into<String>) {
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
    async fn services(&self) -> Result<Vec<Service>, DockerError> {
        self.docker
            .services(&label_filter(LABEL_APP, &self.app))
            .await
    }

    /// Reads the app's services and tasks once: the dynos for `ps`, the web
    /// backends, a log follower per service, and the lifecycle lines of
    /// whatever changed since the last read.
    async fn refresh(self: &Arc<Self>) -> Result<(), DockerError> {
        let _one = self.refreshing.lock().await;
        let services = self.services().await?;
        let local = self.local_node().await?;
        {
            let mut followers = lock(&self.followers);
            followers
                .retain(|id, task| !task.is_finished() && services.iter().any(|s| &s.id == id));
            for service in &services {
                if service.label(LABEL_TYPE) != Some(RUN_TYPE)
                    && !followers.contains_key(&service.id)
                {
                    let task = tokio::spawn(follow(self.clone(), service.id.clone()));
                    followers.insert(service.id.clone(), task);
                }
            }
        }
        let names: Vec<&str> = services.iter().map(Service::name).collect();
        let tasks = if names.is_empty() {
            Vec::new()
        } else {
            self.docker.tasks(&json!({ "service": names })).await?
        };

        let mut dynos = Vec::new();
        // Every running web task, with its dyno's name.
        let mut web_tasks: Vec<(Arc<str>, &Task)> = Vec::new();
        let mut task_dynos = HashMap::new();
        let mut names_by_task: HashMap<&str, (Arc<str>, bool, String)> = HashMap::new();
        for service in &services {
            let process_type = service.label(LABEL_TYPE).unwrap_or("unknown");
            let one_off = process_type == RUN_TYPE;
            let replicas = service.replicas().unwrap_or(0);
            let command = self.command_of(service);
            let mut slots: BTreeMap<u32, Vec<&Task>> = BTreeMap::new();
            for task in tasks.iter().filter(|t| t.service_id == service.id) {
                slots.entry(task.slot.unwrap_or(0)).or_default().push(task);
            }
            for (slot, mut history) in slots {
                history.sort_by_key(|t| task_time(t));
                let name: Arc<str> = if one_off {
                    Arc::from(service.label(LABEL_DYNO).unwrap_or("run"))
                } else {
                    Arc::from(format!("{process_type}.{slot}"))
                };
                for task in &history {
                    task_dynos.insert(task.id.clone(), name.clone());
                    names_by_task.insert(&task.id, (name.clone(), one_off, command.clone()));
                }
                let current = history
                    .iter()
                    .rev()
                    .find(|t| t.desired_state == "running")
                    .or_else(|| {
                        (one_off || u64::from(slot) <= replicas)
                            .then(|| history.last())
                            .flatten()
                    });
                let Some(current) = current else { continue };
                let state = dyno_state(&current.status.state, one_off);
                let port = current.published_port(PORT);
                let number = if one_off {
                    name.rsplit('.')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                } else {
                    slot
                };
                let restarts = history
                    .iter()
                    .filter(|t| {
                        t.id != current.id
                            && matches!(t.status.state.as_str(), "failed" | "rejected" | "complete")
                    })
                    .count();
                // Every running web task is a backend, not only the slot's
                // newest: during a start-first update the old task serves
                // until the new one runs, and then Swarm stops it.
                if process_type == "web" {
                    for task in history
                        .iter()
                        .filter(|t| t.status.state == "running" && t.desired_state == "running")
                    {
                        web_tasks.push((name.clone(), task));
                    }
                }
                dynos.push(SwarmDyno {
                    info: DynoInfo {
                        name: name.to_string(),
                        process_type: process_type.to_string(),
                        number,
                        state,
                        since: parse_time(&current.status.timestamp).unwrap_or(UNIX_EPOCH),
                        pid: None,
                        port,
                        command: command.clone(),
                        restarts: u32::try_from(restarts).unwrap_or(u32::MAX),
                        restart_in: None,
                        size: None,
                        node: current.node_id.as_deref().map(short_id),
                        // Tasks carry no release label yet: the platform
                        // names the current one.
                        release: None,
                    },
                    node: current.node_id.clone(),
                    task: current.id.clone(),
                });
            }
        }
        dynos.sort_by(|a, b| {
            (&a.info.process_type, a.info.number).cmp(&(&b.info.process_type, b.info.number))
        });
        let backends = self.web_backends(&web_tasks, &local).await;

        // Lifecycle lines, in Heroku's words, for formation dynos; one-offs'
        // watchers write their own.
        let mut lines = Vec::new();
        {
            let mut view = lock(&self.view);
            let primed = view.primed;
            let mut seen = HashMap::new();
            for task in &tasks {
                let state = task.status.state.clone();
                let before = view.seen.get(&task.id).cloned();
                seen.insert(task.id.clone(), state.clone());
                let Some((name, one_off, command)) = names_by_task.get(task.id.as_str()) else {
                    continue;
                };
                if !primed || *one_off || before.as_deref() == Some(state.as_str()) {
                    continue;
                }
                if before.as_deref().is_some_and(is_terminal) {
                    continue;
                }
                match state.as_str() {
                    "running" => {
                        if before.is_none() {
                            lines.push((
                                name.clone(),
                                format!("Starting process with command `{command}`"),
                            ));
                        }
                        lines.push((name.clone(), "State changed from starting to up".into()));
                    }
                    "failed" | "complete" => {
                        // Swarm stops a task whose health check never
                        // passed once the boot time is over: a web dyno
                        // that never bound its PORT.
                        let booting = before.as_deref() != Some("running");
                        let unhealthy = task
                            .status
                            .err
                            .as_deref()
                            .is_some_and(|e| e.contains("unhealthy"));
                        if booting && unhealthy {
                            lines.push((
                                name.clone(),
                                format!(
                                    "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within {} seconds of launch",
                                    self.config.boot_timeout.as_secs()
                                ),
                            ));
                        }
                        lines.push((
                            name.clone(),
                            format!("Process exited with status {}", exit_code(task)),
                        ));
                        let from = if booting && unhealthy {
                            "starting"
                        } else {
                            "up"
                        };
                        lines.push((
                            name.clone(),
                            format!("State changed from {from} to crashed"),
                        ));
                    }
                    "rejected" => {
                        let why = task.status.err.clone().unwrap_or_default();
                        lines.push((name.clone(), format!("Could not start: {why}")));
                        lines.push((
                            name.clone(),
                            "State changed from starting to crashed".into(),
                        ));
                    }
                    "shutdown" if before.as_deref() == Some("running") => {
                        lines.push((name.clone(), "State changed from up to down".into()));
                    }
                    _ => {}
                }
            }
            view.seen = seen;
            view.primed = true;
            view.dynos = dynos;
            view.task_dynos = task_dynos;
        }
        let backends = Arc::new(backends);
        self.backends.send_if_modified(|old| {
            if **old == *backends {
                false
            } else {
                *old = backends.clone();
                true
            }
        });
        for (dyno, text) in lines {
            self.platform(&dyno, text).await;
        }
        Ok(())
    }

    /// A service's Procfile command, from the release that made it.
    fn command_of(&self, service: &Service) -> String {
        if let Some(dyno) = service.label(LABEL_DYNO) {
            return format!("({dyno})");
        }
        let process_type = service.label(LABEL_TYPE).unwrap_or("");
        self.applied
            .try_lock()
            .ok()
            .and_then(|a| {
                a.as_ref()?
                    .release
                    .types
                    .iter()
                    .find(|t| t.name == process_type)
                    .map(|t| t.command.clone())
            })
            .unwrap_or_default()
    }

    /// The dyno a log line's task belongs to.
    async fn dyno_of_task(&self, service_type: &str, task: &str) -> Arc<str> {
        if let Some(name) = lock(&self.view).task_dynos.get(task) {
            return name.clone();
        }
        match self.docker.task_inspect(task).await {
            Ok(t) => {
                let name: Arc<str> = Arc::from(format!("{service_type}.{}", t.slot.unwrap_or(0)));
                lock(&self.view)
                    .task_dynos
                    .insert(task.to_string(), name.clone());
                name
            }
            Err(_) => Arc::from(service_type),
        }
    }

    async fn push_line(&self, service_type: &str, fixed: Option<&Arc<str>>, frame: &Bytes) {
        let Some(line) = logline::parse(frame) else {
            return;
        };
        let dyno = match (fixed, &line.task) {
            (Some(name), _) => name.clone(),
            (None, Some(task)) => self.dyno_of_task(service_type, task).await,
            (None, None) => Arc::from(service_type),
        };
        let _ = self
            .logs
            .send(LogEvent::Output {
                dyno,
                at: line.at.unwrap_or_else(SystemTime::now),
                lines: line.text,
            })
            .await;
    }

    /// The image the release's dynos run (see [`spec::image_reference`]).
    fn image(&self, release: &ReleaseSpec) -> String {
        spec::image_reference(release, self.config.registry.as_deref())
    }

    /// Makes the release's image available to every node: pushed to the
    /// registry, or without one loaded into every daemon that lacks it.
    async fn ensure_image(&self, release: &ReleaseSpec) -> Result<(), SwarmError> {
        match self.config.registry.as_deref() {
            Some(registry) => self.push_image(release, registry).await,
            None => self.load_image(release).await,
        }
    }

    /// Loads the image into this daemon if it has neither name of it, tags
    /// it for the registry and pushes it (the daemon pushes only the layers
    /// the registry lacks).
    async fn push_image(&self, release: &ReleaseSpec, registry: &str) -> Result<(), SwarmError> {
        let reference = self.image(release);
        if lock(&self.pushed).contains(&reference) {
            return Ok(());
        }
        let repo = spec::registry_repo(registry, &release.app);
        let tag = spec::version_tag(release);
        if !self.docker.image_exists(&reference).await? {
            let loaded = spec::image_tag(release);
            if !self.docker.image_exists(&loaded).await? {
                let archive = Self::write_image(release, self.config.base_rootfs.clone()).await?;
                self.docker.load_image(archive.path()).await?;
            }
            self.docker.image_tag(&loaded, &repo, &tag).await?;
        }
        self.docker.image_push(&repo, &tag).await?;
        lock(&self.pushed).insert(reference);
        Ok(())
    }

    /// Writes the image and loads it into every daemon that lacks it.
    async fn load_image(&self, release: &ReleaseSpec) -> Result<(), SwarmError> {
        let tag = spec::image_tag(release);
        let mut daemons = vec![self.docker.clone()];
        daemons.extend(self.config.image_nodes.iter().cloned());
        let mut missing = Vec::new();
        for docker in daemons {
            if !docker.image_exists(&tag).await? {
                missing.push(docker);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let archive = Self::write_image(release, self.config.base_rootfs.clone()).await?;
        for docker in missing {
            docker.load_image(archive.path()).await?;
        }
        Ok(())
    }

    /// The release's image as a docker-archive in a temporary file: the
    /// slug over `base`.
    async fn write_image(
        release: &ReleaseSpec,
        base: Option<PathBuf>,
    ) -> Result<tempfile::NamedTempFile, SwarmError> {
        let slug = release.slug_archive.clone();
        let image = ImageSpec::new(&release.app, release.version);
        tokio::task::spawn_blocking(move || -> Result<_, SwarmError> {
            let file =
                tempfile::NamedTempFile::new().map_err(SwarmError::io("a temporary file"))?;
            let out = BufWriter::new(file.as_file());
            write_docker_archive(&slug, base.as_deref(), &image, out)?;
            Ok(file)
        })
        .await
        .map_err(|e| SwarmError::Invalid(format!("writing the image: {e}")))?
    }

    async fn ensure_network(&self) -> Result<(), SwarmError> {
        let name = network_name(&self.app);
        let found = self
            .docker
            .networks(&json!({ "name": [name.clone()] }))
            .await?;
        if !found.iter().any(|n| n.name == name) {
            let labels = BTreeMap::from([(LABEL_APP.to_string(), self.app.clone())]);
            self.docker.network_create(&name, &labels).await?;
        }
        Ok(())
    }

    /// Reads a service, changes its spec and writes it back at the version
    /// read; tries again if someone else wrote in between.
    async fn update_service(
        &self,
        name: &str,
        change: impl Fn(&mut Value),
    ) -> Result<(), SwarmError> {
        let mut attempt = 0;
        loop {
            let service = self.docker.service_inspect(name).await?;
            let mut spec = service.spec.clone();
            change(&mut spec);
            match self
                .docker
                .service_update(&service.id, service.version.index, &spec)
                .await
            {
                Err(DockerError::Api { message, .. })
                    if message.contains("out of sequence") && attempt < 3 =>
                {
                    attempt += 1;
                }
                other => return other.map_err(SwarmError::from),
            }
        }
    }

    async fn apply(&self, release: ReleaseSpec, formation: Formation) -> Result<(), SwarmError> {
        let mut applied = self.applied.lock().await;
        for t in &release.types {
            object_name(&release.app, &t.name)?;
        }
        self.ensure_image(&release).await?;
        self.ensure_network().await?;
        let image = self.image(&release);
        if release.types.iter().any(|t| t.name == "web")
            && let Err(e) = self.gateway.ensure(&self.docker, &image).await
        {
            // Web tasks are still reached at their published ports.
            tracing::warn!("making {}'s router gateway: {e}", self.app);
        }
        let existing: HashMap<String, Service> = self
            .services()
            .await?
            .into_iter()
            .filter_map(|s| {
                let t = s.label(LABEL_TYPE)?.to_string();
                (t != RUN_TYPE).then_some((t, s))
            })
            .collect();
        for t in &release.types {
            let replicas = formation.get(&t.name).unwrap_or(0);
            match existing.get(&t.name) {
                Some(service) => {
                    let force = service.spec["TaskTemplate"]["ForceUpdate"]
                        .as_u64()
                        .unwrap_or(0);
                    let spec = spec::service_spec(
                        &release,
                        &image,
                        &t.name,
                        &t.command,
                        replicas,
                        force,
                        self.timings(),
                    )?;
                    self.docker
                        .service_update(&service.id, service.version.index, &spec)
                        .await?;
                }
                None => {
                    let spec = spec::service_spec(
                        &release,
                        &image,
                        &t.name,
                        &t.command,
                        replicas,
                        0,
                        self.timings(),
                    )?;
                    self.docker.service_create(&spec).await?;
                }
            }
        }
        for (process_type, service) in &existing {
            if !release.types.iter().any(|t| &t.name == process_type) {
                self.docker.service_remove(&service.id).await?;
            }
        }
        lock(&self.stopped).clear();
        *applied = Some(Applied { release, formation });
        Ok(())
    }

    async fn scale(&self, changes: Vec<FormationChange>) -> Result<(), SwarmError> {
        let mut applied = self.applied.lock().await;
        let Some(applied) = applied.as_mut() else {
            return Ok(());
        };
        let known: Vec<FormationChange> = changes
            .into_iter()
            .filter(|c| c.process_type == "all" || applied.formation.get(&c.process_type).is_some())
            .collect();
        let before = applied.formation.clone();
        applied
            .formation
            .apply(&known)
            .map_err(|e| SwarmError::Invalid(e.to_string()))?;
        for (process_type, quantity) in applied.formation.entries() {
            let stopped = lock(&self.stopped).remove(process_type).is_some();
            if before.get(process_type) == Some(*quantity) && !stopped {
                continue;
            }
            let name = object_name(&self.app, process_type)?;
            let quantity = *quantity;
            self.update_service(&name, |spec| {
                spec["Mode"] = json!({ "Replicated": { "Replicas": quantity } });
            })
            .await?;
        }
        Ok(())
    }

    async fn force_update(&self, process_type: &str) -> Result<(), SwarmError> {
        let name = object_name(&self.app, process_type)?;
        let restore = lock(&self.stopped).remove(process_type);
        self.update_service(&name, |spec| {
            let force = spec["TaskTemplate"]["ForceUpdate"].as_u64().unwrap_or(0);
            spec["TaskTemplate"]["ForceUpdate"] = json!(force + 1);
            if let Some(quantity) = restore {
                spec["Mode"] = json!({ "Replicated": { "Replicas": quantity } });
            }
        })
        .await
    }

    async fn types(&self) -> Vec<String> {
        self.applied
            .lock()
            .await
            .as_ref()
            .map(|a| a.release.types.iter().map(|t| t.name.clone()).collect())
            .unwrap_or_default()
    }

    /// `web.2` → (`web`, 2).
    fn split_dyno(target: &str) -> Option<(&str, u32)> {
        let (t, n) = target.rsplit_once('.')?;
        Some((t, n.parse().ok()?))
    }

    async fn restart(self: &Arc<Self>, target: Option<String>) -> Result<(), EngineError> {
        let types = self.types().await;
        match target {
            None => {
                for t in &types {
                    self.force_update(t).await.map_err(engine)?;
                }
                Ok(())
            }
            Some(t) if types.contains(&t) => self.force_update(&t).await.map_err(engine),
            Some(target) => {
                let Some((process_type, slot)) = Self::split_dyno(&target) else {
                    return Err(EngineError::UnknownDyno(target));
                };
                if !types.iter().any(|t| t == process_type) {
                    return Err(EngineError::UnknownDyno(target));
                }
                // One task: stop its container gracefully, and Swarm's
                // restart policy (`any`) starts a new task in the same slot.
                let dynos = {
                    self.refresh().await.map_err(engine)?;
                    lock(&self.view).dynos.clone()
                };
                let Some(dyno) = dynos.iter().find(|d| d.info.name == target) else {
                    return Err(EngineError::UnknownDyno(target));
                };
                let _ = slot;
                let local = self.local_node().await.map_err(engine)?;
                if dyno.node.as_deref() != Some(local.as_str()) {
                    return Err(EngineError::Engine(format!(
                        "{target} runs on another node, where crew cannot reach its container; restart `{process_type}` instead"
                    )));
                }
                let task = self.docker.task_inspect(&dyno.task).await.map_err(engine)?;
                let Some(container) = task.container_id().map(str::to_string) else {
                    return Err(EngineError::Engine(format!(
                        "{target} has no container yet"
                    )));
                };
                let docker = self.docker.clone();
                let grace = self.config.stop_grace.as_secs();
                tokio::spawn(async move {
                    let _ = docker.container_stop(&container, grace).await;
                });
                Ok(())
            }
        }
    }

    async fn stop(&self, target: String) -> Result<(), EngineError> {
        let types = self.types().await;
        if types.contains(&target) {
            let name = object_name(&self.app, &target).map_err(engine)?;
            let service = self.docker.service_inspect(&name).await.map_err(engine)?;
            let quantity = service.replicas().unwrap_or(0);
            self.update_service(&name, |spec| {
                spec["Mode"] = json!({ "Replicated": { "Replicas": 0 } });
            })
            .await
            .map_err(engine)?;
            lock(&self.stopped)
                .entry(target)
                .or_insert(u32::try_from(quantity).unwrap_or(0));
            return Ok(());
        }
        match Self::split_dyno(&target) {
            Some((t, _)) if types.iter().any(|k| k == t) => Err(EngineError::Engine(format!(
                "Swarm cannot stop one task of a service: it would start another in its slot. Stop `{t}`, or scale it down (the highest numbers go first)"
            ))),
            _ => Err(EngineError::UnknownDyno(target)),
        }
    }

    async fn current_release(&self) -> Result<ReleaseSpec, EngineError> {
        self.applied
            .lock()
            .await
            .as_ref()
            .map(|a| a.release.clone())
            .ok_or(EngineError::NoRelease)
    }

    /// The next `run.N`: one past the highest the swarm knows of for the
    /// app, or than this placement has handed out.
    async fn next_run_number(&self) -> u32 {
        let mut highest = 0;
        if let Ok(services) = self.services().await {
            for s in services {
                if let Some(n) = s
                    .label(LABEL_DYNO)
                    .and_then(|d| d.strip_prefix("run."))
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    highest = highest.max(n);
                }
            }
        }
        let next = highest + 1;
        let mine = self.run_numbers.fetch_max(next, Ordering::SeqCst);
        if mine >= next {
            self.run_numbers.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            next
        }
    }

    async fn run_detached(self: &Arc<Self>, request: RunRequest) -> Result<DynoInfo, EngineError> {
        let release = self.current_release().await?;
        let number = self.next_run_number().await;
        let spec = spec::job_spec(
            &release,
            &self.image(&release),
            number,
            &request.command,
            &request.env,
        );
        let id = self.docker.service_create(&spec).await.map_err(engine)?;
        let name: Arc<str> = Arc::from(format!("{RUN_TYPE}.{number}"));
        self.platform(
            &name,
            format!("Starting process with command `{}`", request.command),
        )
        .await;
        let watcher = tokio::spawn(watch_job(self.clone(), id, name.clone()));
        lock(&self.background).push(watcher);
        Ok(DynoInfo::starting_one_off(
            number,
            request.command,
            None,
            None,
        ))
    }

    async fn run_attached(
        self: &Arc<Self>,
        request: RunRequest,
    ) -> Result<(DynoInfo, SwarmAttachment), SwarmError> {
        let release = self
            .current_release()
            .await
            .map_err(|e| SwarmError::Invalid(e.to_string()))?;
        let number = self.next_run_number().await;
        let tty = match request.input {
            DynoInput::Terminal { cols, rows } => Some((cols, rows)),
            _ => None,
        };
        let config = spec::container_config(
            &release,
            &self.image(&release),
            &format!("{RUN_TYPE}.{number}"),
            &request.command,
            &request.env,
            tty,
        );
        let id = self
            .docker
            .container_create(&run_name(&self.app, number), &config)
            .await?;
        let name: Arc<str> = Arc::from(format!("{RUN_TYPE}.{number}"));
        let (io_tx, io_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        let hangup = HangupGuard {
            docker: self.docker.clone(),
            container: id.clone(),
            runtime: runtime.clone(),
        };
        self.platform(
            &name,
            format!("Starting process with command `{}`", request.command),
        )
        .await;
        let shared = self.clone();
        let dyno = name.clone();
        tokio::spawn(async move {
            let docker = shared.docker.clone();
            let attached = match attach_and_start(&docker, &id).await {
                Ok(a) => a,
                Err(e) => {
                    let _ = io_tx.send(Err(e.to_string()));
                    return;
                }
            };
            shared
                .platform(&dyno, "State changed from starting to up")
                .await;
            let (read, write) = tokio::io::split(attached);
            let mut copier = None;
            let output: Output = if tty.is_some() {
                Box::new(read)
            } else {
                let (reader, writer) = tokio::io::duplex(64 * 1024);
                copier = Some(tokio::spawn(demux_into(read, writer)));
                Box::new(reader)
            };
            let resize = tty.map(|_| {
                let docker = docker.clone();
                let id = id.clone();
                let runtime = runtime.clone();
                Resize::new(move |cols, rows| {
                    let docker = docker.clone();
                    let id = id.clone();
                    runtime.spawn(async move {
                        let _ = docker.container_resize(&id, cols, rows).await;
                    });
                })
            });
            let console = Console {
                input: Box::new(write),
                resize,
            };
            let _ = io_tx.send(Ok((output, Some(console))));
            let code = docker.container_wait(&id).await.unwrap_or(255);
            let code = i32::try_from(code).unwrap_or(255);
            // The output is complete before the container goes.
            if let Some(copier) = copier {
                let _ = copier.await;
            } else {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let _ = exit_tx.send(ExitStatus::Code(code));
            shared
                .platform(&dyno, format!("Process exited with status {code}"))
                .await;
            shared
                .platform(&dyno, "State changed from up to complete")
                .await;
            let _ = docker.container_remove(&id).await;
        });
        let info = DynoInfo::starting_one_off(number, request.command, None, None);
        Ok((
            info,
            SwarmAttachment {
                io: io_rx,
                exit: exit_rx,
                hangup,
            },
        ))
    }

    /// A release's release command: a container of the release's image on
    /// this node, made as an attached `crew run`'s is (the same environment,
    /// profile, user and network), named [`RELEASE_DYNO`]. Its output goes
    /// to `command.output` line by line; it is stopped once
    /// `command.timeout` is over, and removed however it ends.
    async fn release_command(
        &self,
        release: ReleaseSpec,
        command: ReleaseCommand,
    ) -> Result<ExitStatus, SwarmError> {
        // The image apply will run (pushed to the registry, or loaded), and
        // the network, which a first deploy has not made yet.
        self.ensure_image(&release).await?;
        self.ensure_network().await?;
        let name = spec::release_name(&release);
        // A container of this name is left from an attempt crew did not see
        // to its end (the server died during it); this attempt replaces it.
        let _ = self.docker.container_remove(&name).await;
        let config = spec::container_config(
            &release,
            &self.image(&release),
            RELEASE_DYNO,
            &command.command,
            &[],
            None,
        );
        let id = self.docker.container_create(&name, &config).await?;
        let container = Removal::new(self.docker.clone(), id.clone());
        let ran = self.run_release_container(&id, command).await;
        container.remove().await;
        ran
    }

    async fn run_release_container(
        &self,
        id: &str,
        command: ReleaseCommand,
    ) -> Result<ExitStatus, SwarmError> {
        use tokio::io::AsyncWriteExt;
        let attached = attach_and_start(&self.docker, id).await?;
        let (read, mut write) = tokio::io::split(attached);
        // It gets no input, as on Heroku, where the release phase is a
        // detached dyno: its stdin ends now, so a command that reads it
        // does not wait for ever.
        let _ = write.shutdown().await;
        let (reader, writer) = tokio::io::duplex(64 * 1024);
        let _copier = AbortOnDrop(tokio::spawn(demux_into(read, writer)));
        let mut forward = AbortOnDrop(tokio::spawn(forward_lines(reader, command.output)));
        let code = match tokio::time::timeout(command.timeout, self.docker.container_wait(id)).await
        {
            Ok(code) => code?,
            Err(_) => {
                let _ = self.docker.container_kill(id, "SIGKILL").await;
                return Err(SwarmError::Invalid(format!(
                    "{RELEASE_DYNO} did not finish within {} s and was stopped",
                    command.timeout.as_secs()
                )));
            }
        };
        // The attach stream ends with the container; what is still on its
        // way is passed on, for a little while.
        let _ = tokio::time::timeout(RELEASE_DRAIN, &mut forward.0).await;
        Ok(ExitStatus::Code(i32::try_from(code).unwrap_or(255)))
    }

    async fn destroy(&self) {
        self.stop_background();
        // Before the containers are waited for: it never ends by itself.
        self.gateway.remove(&self.docker).await;
        let app = label_filter(LABEL_APP, &self.app);
        if let Ok(services) = self.docker.services(&app).await {
            for s in services {
                let _ = self.docker.service_remove(&s.id).await;
            }
        }
        // Removing a service stops its tasks with their grace; wait for the
        // containers (attached one-offs' too) to be gone.
        let deadline =
            tokio::time::Instant::now() + self.config.stop_grace + Duration::from_secs(15);
        let mut daemons = vec![self.docker.clone()];
        daemons.extend(self.config.image_nodes.iter().cloned());
        for docker in &daemons {
            loop {
                // The containers of tasks that have ended (the history Swarm
                // keeps too) would go only when Swarm's reaper gets to them:
                // they are removed now, and only running ones waited for.
                let mut left = Vec::new();
                for c in docker.containers(&app).await.unwrap_or_default() {
                    if matches!(c.state.as_str(), "exited" | "dead" | "created") {
                        let _ = docker.container_remove(&c.id).await;
                    } else {
                        left.push(c);
                    }
                }
                if left.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    for c in left {
                        let _ = docker.container_remove(&c.id).await;
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        // The network detaches from the tasks lazily; try for a while.
        let network = network_name(&self.app);
        for _ in 0..40 {
            match self
                .docker
                .networks(&json!({ "name": [network.clone()] }))
                .await
            {
                Ok(found) => {
                    let Some(n) = found.iter().find(|n| n.name == network) else {
                        break;
                    };
                    if self.docker.network_remove(&n.id).await.is_ok() {
                        break;
                    }
                }
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for docker in &daemons {
            if let Ok(images) = docker.images(&app).await {
                for image in images {
                    let _ = docker.image_remove(&image.id).await;
                }
            }
        }
        lock(&self.pushed).clear();
        *self.applied.lock().await = None;
        self.backends.send_replace(Arc::new(Vec::new()));
    }
}

/// Copies a multiplexed attach stream's payloads (stdout and stderr alike)
/// into `out`, so the client reads what a terminal would show.
async fn demux_into(
    mut input: impl tokio::io::AsyncRead + Unpin,
    mut out: impl tokio::io::AsyncWrite + Unpin,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut demux = crate::mux::Demux::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match input.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        demux.push(&buf[..n]);
        while let Some((_, payload)) = demux.next_frame() {
            if out.write_all(&payload).await.is_err() {
                return;
            }
        }
    }
    let _ = out.shutdown().await;
}

/// Attaches to a created container, then starts it: attached first, so that
/// none of its output is lost. A container that cannot be attached to or
/// started is removed.
async fn attach_and_start(docker: &Docker, id: &str) -> Result<Upgraded, DockerError> {
    let attached = match docker.container_attach(id).await {
        Ok(attached) => attached,
        Err(e) => {
            let _ = docker.container_remove(id).await;
            return Err(e);
        }
    };
    if let Err(e) = docker.container_start(id).await {
        let _ = docker.container_remove(id).await;
        return Err(e);
    }
    Ok(attached)
}

/// How long a release command's last output may take to arrive once its
/// container has ended.
const RELEASE_DRAIN: Duration = Duration::from_secs(5);

/// Sends each line of `input` to `output`, without its line end; invalid
/// UTF-8 is replaced rather than dropped, and a last line without an end is
/// sent too.
async fn forward_lines(
    input: impl tokio::io::AsyncRead + Unpin,
    output: mpsc::UnboundedSender<String>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut input = tokio::io::BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        if output
            .send(text.trim_end_matches(['\n', '\r']).to_string())
            .is_err()
        {
            return;
        }
    }
}

/// A task that ends with its owner, whatever way the owner ends.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A container to remove: awaited on the way out, or, if its owner is
/// dropped before (the platform gave up waiting), in a task of its own.
struct Removal {
    docker: Arc<Docker>,
    id: Option<String>,
}

impl Removal {
    fn new(docker: Arc<Docker>, id: String) -> Removal {
        Removal {
            docker,
            id: Some(id),
        }
    }

    async fn remove(mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.docker.container_remove(&id).await;
        }
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if let (Some(id), Ok(runtime)) = (self.id.take(), tokio::runtime::Handle::try_current()) {
            let docker = self.docker.clone();
            runtime.spawn(async move {
                let _ = docker.container_remove(&id).await;
            });
        }
    }
}

/// Sends one service's output to the log for as long as the service exists.
async fn follow(shared: Arc<Shared>, id: String) {
    let process_type = match shared.docker.service_inspect(&id).await {
        Ok(s) => s.label(LABEL_TYPE).unwrap_or("unknown").to_string(),
        Err(_) => return,
    };
    let mut since = shared.since;
    loop {
        let from = since
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        match shared.docker.service_logs(&id, from, true).await {
            Ok(mut stream) => {
                while let Some(Ok((_, frame))) = stream.next().await {
                    if let Some(at) = logline::parse(&frame).and_then(|l| l.at) {
                        since = at + Duration::from_micros(1);
                    }
                    shared.push_line(&process_type, None, &frame).await;
                }
            }
            Err(e) if e.is_not_found() => return,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(e) = shared.docker.service_inspect(&id).await
            && e.is_not_found()
        {
            return;
        }
    }
}

async fn next_frame(stream: &mut Option<LogStream>) -> Option<Bytes> {
    match stream {
        Some(s) => match s.next().await {
            Some(Ok((_, frame))) => Some(frame),
            _ => {
                *stream = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

/// Follows a detached one-off: its output to the log, then its exit code
/// from the task's status, then the job service goes.
async fn watch_job(shared: Arc<Shared>, id: String, name: Arc<str>) {
    let docker = shared.docker.clone();
    let mut stream = docker.service_logs(&id, 0.0, true).await.ok();
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let mut up = false;
    let finished = loop {
        tokio::select! {
            frame = next_frame(&mut stream) => {
                if let Some(frame) = frame {
                    shared.push_line(RUN_TYPE, Some(&name), &frame).await;
                }
            }
            _ = tick.tick() => {
                let tasks = docker.tasks(&json!({ "service": [id.clone()] })).await;
                let Ok(tasks) = tasks else { continue };
                let Some(task) = tasks.iter().max_by_key(|t| task_time(t)) else { continue };
                let state = task.status.state.as_str();
                if !up && (state == "running" || is_terminal(state)) {
                    up = true;
                    shared.platform(&name, "State changed from starting to up").await;
                }
                if is_terminal(state) {
                    break task.clone();
                }
            }
        }
    };
    // Lines still on their way: read until the stream is quiet.
    while stream.is_some() {
        match tokio::time::timeout(Duration::from_millis(700), next_frame(&mut stream)).await {
            Ok(Some(frame)) => shared.push_line(RUN_TYPE, Some(&name), &frame).await,
            _ => break,
        }
    }
    if finished.status.state == "rejected"
        && let Some(err) = &finished.status.err
    {
        shared
            .platform(&name, format!("Could not start: {err}"))
            .await;
    }
    let code = exit_code(&finished);
    shared
        .platform(&name, format!("Process exited with status {code}"))
        .await;
    shared
        .platform(&name, "State changed from up to complete")
        .await;
    let _ = docker.service_remove(&id).await;
}

impl Placement for SwarmPlacement {
    fn apply(
        &self,
        release: ReleaseSpec,
        formation: Formation,
    ) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            self.shared
                .apply(release, formation)
                .await
                .map_err(engine)?;
            let _ = self.shared.refresh().await;
            Ok(())
        })
    }

    fn scale(&self, changes: Vec<FormationChange>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { self.shared.scale(changes).await.map_err(engine) })
    }

    fn ps(&self) -> BoxFuture<'_, Vec<DynoInfo>> {
        Box::pin(async move { self.dynos().await.into_iter().map(|d| d.info).collect() })
    }

    fn run(
        &self,
        request: RunRequest,
    ) -> BoxFuture<'_, Result<(DynoInfo, Option<Attachment>), EngineError>> {
        Box::pin(async move {
            if request.input == DynoInput::Idle {
                let info = self.shared.run_detached(request).await?;
                return Ok((info, None));
            }
            let (info, attached) = self.run_attached(request).await?;
            let SwarmAttachment { io, exit, hangup } = attached;
            let attachment = Attachment {
                io,
                exit,
                hangup: crew_engine::Hangup::new(move || drop(hangup)),
            };
            Ok((info, Some(attachment)))
        })
    }

    fn restart(&self, target: Option<String>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { self.shared.restart(target).await })
    }

    fn stop(&self, target: String) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { self.shared.stop(target).await })
    }

    fn web_backends(&self) -> watch::Receiver<Arc<Vec<WebBackend>>> {
        self.shared.backends.subscribe()
    }

    fn destroy(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.shared.destroy().await })
    }

    fn release_command(
        &self,
        release: ReleaseSpec,
        command: ReleaseCommand,
    ) -> BoxFuture<'_, Result<Option<ExitStatus>, EngineError>> {
        Box::pin(async move {
            self.shared
                .release_command(release, command)
                .await
                .map(Some)
                .map_err(engine)
        })
    }

    /// The server is going down, but the swarm keeps the formation running:
    /// that is what an engine is for. Only crew's own readers stop; a new
    /// placement for the app adopts the services.
    fn shutdown(&self) {
        self.shared.stop_background();
    }
}

/// A node's id as `docker node ls` shows it: its first 12 characters.
fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_states_map_to_herokus() {
        assert_eq!(dyno_state("running", false), DynoState::Up);
        assert_eq!(dyno_state("preparing", false), DynoState::Starting);
        assert_eq!(dyno_state("failed", false), DynoState::Crashed);
        assert_eq!(dyno_state("complete", false), DynoState::Crashed);
        assert_eq!(dyno_state("complete", true), DynoState::Complete);
        assert_eq!(dyno_state("shutdown", false), DynoState::Down);
    }

    #[test]
    fn times_keep_their_nanoseconds() {
        let t = parse_time("2026-11-27T20:11:16.324106628Z").expect("a time");
        let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
        assert_eq!(d.subsec_nanos(), 324_106_628);
    }
}
