//! Two nodes, for real: a Swarm of two dockerds, one on the host (the
//! manager) and one in a network namespace the test makes (the worker),
//! joined over a veth pair in a private /30. Worker and web dynos are placed
//! on both; every web dyno, on either node, must be a web backend at its
//! address on the app's overlay network, and answer HTTP there to a
//! connection made from the router's gateway. Then the worker's daemon is
//! killed, as a machine dies, and every dyno must be back on the manager
//! within 90 s, the web ones serving from there.
//!
//! A second test gives the placement a registry (Debian's `docker-registry`
//! on the host's end of the veth) and no daemon to load images into: the
//! worker can only run its dynos by pulling the pushed release image. It
//! also keeps the router off the app's network, so web dynos must be
//! reached at the ports they publish on their nodes.
//! The tests take turns: each makes a whole cluster, and their network
//! names come from the pid.
//!
//! All traffic stays inside what the test made: the veth pair, the
//! namespace, the daemons' own bridges and overlay. The worker's daemon is
//! started with `nsenter --net` rather than `ip netns exec`, which would
//! remount /sys and hide the cgroup mounts dockerd needs (research §3).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crew_engine::{DynoState, Placement, ReleaseSpec, WebBackend};
use crew_procfile::Formation;
use crew_swarm::{SwarmConfig, SwarmDyno, SwarmPlacement};
use crew_testkit::ports::free_port_on;
use crew_testkit::registry::TestRegistry;
use support::{Dockerd, Logs, backend_get, http_get, wait_for};
use tokio::sync::mpsc;

const WORKER: &str =
    "echo \"boot $DYNO $RELEASE_NAME\"; while true; do echo \"tick $DYNO\"; sleep 1; done";
/// Serves its own dyno name over HTTP on PORT, with busybox's httpd.
const WEB: &str = "echo \"boot $DYNO $RELEASE_NAME\"; echo \"$DYNO\" > /tmp/index.html; exec busybox httpd -f -p \"$PORT\" -h /tmp";
/// Of each type: with two nodes, Swarm's spread puts some of each on both.
const DYNOS: u32 = 4;
/// The bound for a dead node's dynos to be running elsewhere.
const FAILOVER: Duration = Duration::from_secs(90);

/// One cluster at a time (see the module's notes).
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why this test cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if let Some(why) = support::swarm_unavailable() {
        return Some(why);
    }
    for (program, package) in [("ip", "iproute2"), ("nsenter", "util-linux")] {
        let found = Command::new(program)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "`{program}` is not installed (apt-get install {package})"
            ));
        }
    }
    None
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn netns_exists(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

/// An IPv4 prefix, as `(network, mask)`.
type Prefix = (u32, u32);

fn parse_prefix(text: &str) -> Option<Prefix> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().ok()?),
        None => (text, 32),
    };
    let addr = u32::from(addr.parse::<Ipv4Addr>().ok()?);
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    Some((addr & mask, mask))
}

fn overlaps(a: Prefix, b: Prefix) -> bool {
    let mask = a.1 & b.1;
    a.0 & mask == b.0 & mask
}

/// Every prefix the host already uses: its addresses' subnets and its
/// routes in every table, the default route aside (it covers everything
/// and is no address in use).
fn prefixes_in_use() -> Result<Vec<Prefix>, String> {
    let mut used = Vec::new();
    for line in ip(&["-o", "-4", "addr", "show"])?.lines() {
        let mut words = line.split_whitespace();
        if words.any(|w| w == "inet")
            && let Some(p) = words.next().and_then(parse_prefix)
        {
            used.push(p);
        }
    }
    for line in ip(&["-4", "route", "show", "table", "all"])?.lines() {
        let mut words = line.split_whitespace().peekable();
        // Route types come before the destination: `local 10.0.0.1 dev …`.
        if words.peek().is_some_and(|w| {
            matches!(
                *w,
                "unicast"
                    | "local"
                    | "broadcast"
                    | "multicast"
                    | "anycast"
                    | "blackhole"
                    | "unreachable"
                    | "prohibit"
                    | "throw"
                    | "nat"
            )
        }) {
            words.next();
        }
        if let Some(p) = words.next().and_then(parse_prefix) {
            used.push(p);
        }
    }
    Ok(used)
}

/// A /30 in 10.77.0.0/16 that nothing on the host uses, starting from one
/// the pid picks so two runs at once do not meet: `(host end, netns end)`.
fn pick_subnet() -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let used = prefixes_in_use()?;
    let base = u32::from(Ipv4Addr::new(10, 77, 0, 0));
    let pid = std::process::id();
    for attempt in 0..256u32 {
        let block = base + (pid.wrapping_add(attempt.wrapping_mul(97)) % 16384) * 4;
        if used.iter().all(|p| !overlaps(*p, (block, !3))) {
            return Ok((Ipv4Addr::from(block + 1), Ipv4Addr::from(block + 2)));
        }
    }
    Err("no free /30 in 10.77.0.0/16".into())
}

/// The namespace and the veth pair. Made first and dropped last, after the
/// daemons that use them.
struct Net {
    ns: String,
    host_link: String,
    ns_link: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl Net {
    fn create() -> Result<Net, String> {
        let pid = std::process::id();
        let (host_ip, ns_ip) = pick_subnet()?;
        // Link names stop at 15 bytes: `crew2n` + a pid of up to 7 digits
        // + one letter fits.
        let (ns, host_link, ns_link) = (
            format!("crew-2n-{pid}"),
            format!("crew2n{pid}h"),
            format!("crew2n{pid}w"),
        );
        // Checked before the guard exists: what is there already is not
        // this run's to delete.
        if netns_exists(&ns) || link_exists(&host_link) || link_exists(&ns_link) {
            return Err(format!(
                "{ns}, {host_link} or {ns_link} is there already (a run that did not clean up?)"
            ));
        }
        ip(&["netns", "add", &ns])?;
        let net = Net {
            ns,
            host_link,
            ns_link,
            host_ip,
            ns_ip,
        };
        // From here on, the drop undoes whatever was done.
        ip(&[
            "link",
            "add",
            &net.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &net.ns_link,
        ])?;
        ip(&["link", "set", &net.ns_link, "netns", &net.ns])?;
        let host_cidr = format!("{host_ip}/30");
        let ns_cidr = format!("{ns_ip}/30");
        ip(&["addr", "add", &host_cidr, "dev", &net.host_link])?;
        ip(&["link", "set", &net.host_link, "up"])?;
        ip(&["-n", &net.ns, "addr", "add", &ns_cidr, "dev", &net.ns_link])?;
        ip(&["-n", &net.ns, "link", "set", &net.ns_link, "up"])?;
        ip(&["-n", &net.ns, "link", "set", "lo", "up"])?;
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting one end of a veth deletes both.
        if link_exists(&self.host_link) {
            let _ = ip(&["link", "del", &self.host_link]);
        }
        if netns_exists(&self.ns) {
            let _ = ip(&["netns", "del", &self.ns]);
        }
    }
}

/// The daemons and their network, in the order they are torn down (fields
/// drop in order): the worker, the manager (each leaves the swarm if it
/// still runs and is stopped by pid), the registry if any, then the
/// namespace and the veth pair.
struct Cluster {
    worker: Dockerd,
    manager: Dockerd,
    registry: Option<TestRegistry>,
    manager_node: String,
    worker_node: String,
    net: Net,
}

impl Cluster {
    /// Two nodes; with `with_registry`, a registry on the host's end of the
    /// veth too, which both daemons trust over plain HTTP.
    async fn start(with_registry: bool) -> Cluster {
        let net = Net::create().expect("the namespace and veth pair");
        eprintln!(
            "netns {}, veth {} {} <-> {} {}",
            net.ns, net.host_link, net.host_ip, net.ns_link, net.ns_ip
        );
        let registry = if with_registry {
            let registry = TestRegistry::start_on(net.host_ip.into(), "")
                .expect("the registry")
                .expect("docker-registry is installed");
            eprintln!("registry on {}", registry.addr);
            Some(registry)
        } else {
            None
        };
        let insecure: Vec<String> = registry
            .iter()
            .map(|r| format!("--insecure-registry={}", r.addr))
            .collect();
        let worker_flags: Vec<&str> = insecure.iter().map(String::as_str).collect();
        // Without iptables the host daemon leaves no rules behind (dockerd
        // does not remove its own when it stops), and the test needs none:
        // its traffic is between the nodes, over the veth and the overlay.
        let mut manager_flags = vec!["--iptables=false"];
        manager_flags.extend(&worker_flags);
        let manager = Dockerd::start_with(None, &manager_flags).expect("the manager's dockerd");
        let worker =
            Dockerd::start_with(Some(&net.ns), &worker_flags).expect("the worker's dockerd");
        // The manager advertises its veth end, the only address of it the
        // worker can reach.
        let manager_addr = format!("{}:{}", net.host_ip, free_port_on(net.host_ip));
        manager
            .docker
            .swarm_init(&net.host_ip.to_string(), &manager_addr)
            .await
            .expect("swarm init");
        let token = manager
            .docker
            .swarm_inspect()
            .await
            .expect("the join tokens")
            .join_tokens
            .worker;
        // The namespace is the worker's own: Swarm's usual port is free.
        worker
            .docker
            .swarm_join(
                &manager_addr,
                &token,
                &net.ns_ip.to_string(),
                &format!("{}:2377", net.ns_ip),
            )
            .await
            .expect("swarm join");
        // Both nodes report the same hostname; only the ids tell them apart.
        let manager_node = manager.docker.info().await.expect("info").swarm.node_id;
        let worker_node = worker.docker.info().await.expect("info").swarm.node_id;
        assert_ne!(manager_node, worker_node);
        let docker = manager.docker.clone();
        wait_for("both nodes ready", Duration::from_secs(30), || async {
            let nodes = docker.nodes().await.ok()?;
            let ready = nodes.iter().filter(|n| n.status.state == "ready").count();
            (ready == 2).then_some(())
        })
        .await;
        Cluster {
            worker,
            manager,
            registry,
            manager_node,
            worker_node,
            net,
        }
    }

    /// What must be gone once the cluster is dropped.
    fn traces(&self) -> Traces {
        let mut dirs = vec![
            self.manager.dir.path().to_path_buf(),
            self.worker.dir.path().to_path_buf(),
        ];
        dirs.extend(self.registry.iter().map(|r| r.dir.path().to_path_buf()));
        Traces {
            dirs,
            ns: self.net.ns.clone(),
            links: vec![self.net.host_link.clone(), self.net.ns_link.clone()],
        }
    }
}

struct Traces {
    dirs: Vec<PathBuf>,
    ns: String,
    links: Vec<String>,
}

impl Traces {
    /// Whatever is still there of the test: processes that name a
    /// daemon's directory, the directories, the namespace, the links.
    fn left(&self) -> Vec<String> {
        let mut left = Vec::new();
        let markers: Vec<String> = self
            .dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if markers.iter().any(|m| cmdline.contains(m.as_str())) {
                    left.push(format!(
                        "process {}: {cmdline}",
                        entry.file_name().to_string_lossy()
                    ));
                }
            }
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mountinfo.lines() {
            if markers.iter().any(|m| line.contains(m.as_str())) {
                left.push(format!("mount: {line}"));
            }
        }
        for dir in &self.dirs {
            if dir.exists() {
                left.push(format!("directory {}", dir.display()));
            }
        }
        let namespaces = ip(&["netns", "list"]).unwrap_or_default();
        if namespaces
            .lines()
            .any(|l| l.split_whitespace().next() == Some(self.ns.as_str()))
        {
            left.push(format!("netns {}", self.ns));
        }
        for link in &self.links {
            if link_exists(link) {
                left.push(format!("link {link}"));
            }
        }
        left
    }
}

fn release(slug: &(PathBuf, PathBuf)) -> ReleaseSpec {
    support::web_and_worker_release("pair", 1, WEB, WORKER, slug)
}

fn all_dynos() -> BTreeSet<String> {
    (1..=DYNOS)
        .flat_map(|n| [format!("web.{n}"), format!("worker.{n}")])
        .collect()
}

/// How the router must reach a web dyno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// At its address on the app's overlay network, from the gateway's
    /// namespace, wherever it runs.
    Network,
    /// At the port it publishes in host mode, on this IP.
    Published(IpAddr),
}

fn reach(backend: &WebBackend) -> Reach {
    match backend.namespace {
        Some(_) => Reach::Network,
        None => Reach::Published(backend.addr.ip()),
    }
}

/// Waits until the web backends are exactly `want` (dyno to how it must be
/// reached), then until every one answers `GET /` with its own name.
async fn check_backends(placement: &SwarmPlacement, want: &BTreeMap<String, Reach>) {
    let mut receiver = placement.web_backends();
    let describe = |b: &[WebBackend]| -> String {
        b.iter()
            .map(|b| format!("{} at {} {:?} {:?}", b.name, b.addr, reach(b), b.state))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let backends = loop {
        let backends = receiver.borrow_and_update().clone();
        let got: BTreeMap<String, Reach> = backends
            .iter()
            .filter(|b| b.state == DynoState::Up)
            .map(|b| (b.name.clone(), reach(b)))
            .collect();
        if &got == want && backends.len() == want.len() {
            eprintln!("web backends: {}", describe(&backends));
            break backends;
        }
        assert!(
            Instant::now() < deadline,
            "after 30 s the web backends are {}, not {want:?}",
            describe(&backends)
        );
        let _ = tokio::time::timeout(Duration::from_millis(500), receiver.changed()).await;
    };
    // A task runs once its container has started; its httpd may take a
    // moment more to listen.
    for backend in backends.iter() {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match backend_get(backend, "/").await {
                Ok(body) if body.trim() == backend.name => {
                    eprintln!("GET http://{}/ answered {:?}", backend.addr, body.trim());
                    break;
                }
                outcome => assert!(
                    Instant::now() < deadline,
                    "GET http://{}/ ({}) after 20 s: {outcome:?}",
                    backend.addr,
                    backend.name
                ),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Waits until each of `dynos` has printed `line(dyno)` (its own output, not
/// a platform line) in the log events from index `from` on.
async fn wait_printed(
    logs: &Logs,
    from: usize,
    dynos: &[String],
    what: &str,
    line: impl Fn(&str) -> String,
) {
    wait_for(what, Duration::from_secs(20), || async {
        let lines = logs.lines_since(from);
        dynos
            .iter()
            .all(|n| {
                let want = line(n);
                lines.iter().any(|(d, l, p)| d == n && *l == want && !p)
            })
            .then_some(())
    })
    .await;
}

/// `worker.1 up on manager, …`, for failure messages.
fn describe(dynos: &[SwarmDyno], cluster: &Cluster) -> String {
    dynos
        .iter()
        .map(|d| {
            let node = match d.node.as_deref() {
                Some(n) if n == cluster.manager_node => "manager",
                Some(n) if n == cluster.worker_node => "worker",
                Some(_) => "another node",
                None => "no node",
            };
            format!("{} {:?} on {node}", d.info.name, d.info.state)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_a_dead_node_s_dynos_come_back_on_the_other() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: the two-node Swarm test needs root and real daemons: {why}");
        return;
    }
    let _one = ONE_CLUSTER.lock().await;
    let started = Instant::now();
    let mut cluster = Cluster::start(false).await;
    let traces = cluster.traces();
    eprintln!("two nodes ready: {:?}", started.elapsed());

    let dir = tempfile::tempdir().expect("temp dir");
    let (tx, rx) = mpsc::channel(1024);
    let logs = Logs::collect(rx);
    let config = SwarmConfig {
        base_rootfs: Some(support::busybox_rootfs(dir.path())),
        // No registry: the worker can only run what is loaded into it.
        image_nodes: vec![cluster.worker.docker.clone()],
        registry: None,
        poll_interval: Duration::from_millis(500),
        stop_grace: Duration::from_secs(2),
        restart_delay: Duration::from_secs(1),
        ..SwarmConfig::default()
    };
    // Declared after the cluster, so dropped before it also on a panic:
    // crew's readers go before the daemons they read.
    let placement = SwarmPlacement::new(cluster.manager.docker.clone(), "pair", config, tx)
        .expect("a placement");
    let slug = support::slug(dir.path());
    placement
        .apply(
            release(&slug),
            Formation::new(["web".to_string(), "worker".to_string()], DYNOS),
        )
        .await
        .expect("apply v1");

    // Swarm spreads a service's tasks over the nodes; both must have some
    // of each type.
    let placed = Instant::now();
    let deadline = placed + Duration::from_secs(60);
    let (on_worker, web_nodes) = loop {
        let dynos = placement.dynos().await;
        let names: BTreeSet<String> = dynos.iter().map(|d| d.info.name.clone()).collect();
        let up = dynos.iter().all(|d| d.info.state == DynoState::Up);
        let on = |node: &str| -> Vec<String> {
            dynos
                .iter()
                .filter(|d| d.node.as_deref() == Some(node))
                .map(|d| d.info.name.clone())
                .collect()
        };
        let (on_manager, on_worker) = (on(&cluster.manager_node), on(&cluster.worker_node));
        let both = ["web.", "worker."].iter().all(|t| {
            on_manager.iter().any(|n| n.starts_with(t))
                && on_worker.iter().any(|n| n.starts_with(t))
        });
        if names == all_dynos() && up && both {
            eprintln!(
                "placed in {:?}: {on_manager:?} on the manager, {on_worker:?} on the worker",
                placed.elapsed()
            );
            let web_nodes: BTreeMap<String, String> = dynos
                .iter()
                .filter(|d| d.info.process_type == "web")
                .filter_map(|d| Some((d.info.name.clone(), d.node.clone()?)))
                .collect();
            break (on_worker, web_nodes);
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s the dynos are not up on both nodes: {}",
            describe(&dynos, &cluster)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Every web dyno is a backend on the app's overlay network, on either
    // node, and each answers there, over a connection the test makes from
    // the router's gateway (across the nodes' VXLAN for the worker's).
    let want: BTreeMap<String, Reach> = web_nodes
        .keys()
        .map(|name| (name.clone(), Reach::Network))
        .collect();
    check_backends(&placement, &want).await;

    // The worker's dynos really run: their output reaches crew.
    let workers: Vec<String> = on_worker
        .iter()
        .filter(|n| n.starts_with("worker."))
        .cloned()
        .collect();
    wait_printed(
        &logs,
        0,
        &workers,
        "output from the worker node's dynos",
        |n| format!("tick {n}"),
    )
    .await;

    // The node dies: its daemon, containerd, shims and containers, at once.
    let killed = Instant::now();
    cluster.worker.kill();
    eprintln!("killed the worker's dockerd (pid {})", cluster.worker.pid());
    let from = logs.len();
    let deadline = killed + FAILOVER;
    loop {
        let dynos = placement.dynos().await;
        let names: BTreeSet<String> = dynos.iter().map(|d| d.info.name.clone()).collect();
        let home = dynos.iter().all(|d| {
            d.info.state == DynoState::Up && d.node.as_deref() == Some(&cluster.manager_node)
        });
        if names == all_dynos() && home {
            eprintln!(
                "every dyno running on the manager {:?} after the kill ({} moved: {on_worker:?})",
                killed.elapsed(),
                on_worker.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{FAILOVER:?} after the worker died, not every dyno runs on the manager: {}",
            describe(&dynos, &cluster)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The web dynos all serve from the manager now.
    let home: BTreeMap<String, Reach> = (1..=DYNOS)
        .map(|n| (format!("web.{n}"), Reach::Network))
        .collect();
    check_backends(&placement, &home).await;
    // The moved dynos booted again, on the manager, under their names.
    wait_printed(
        &logs,
        from,
        &on_worker,
        "the moved dynos' boot lines",
        |n| format!("boot {n} v1"),
    )
    .await;

    let teardown = Instant::now();
    drop(placement);
    drop(cluster);
    drop(dir);
    let left = traces.left();
    assert!(left.is_empty(), "left behind: {left:#?}");
    eprintln!(
        "torn down in {:?}; two-node test: {:?}",
        teardown.elapsed(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_pull_release_images_from_a_registry() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: the two-node registry test needs root and real daemons: {why}");
        return;
    }
    if support::which("docker-registry").is_none() {
        eprintln!(
            "skipped: the two-node registry test needs a registry to push to, and \
             `docker-registry` is not installed (apt-get install docker-registry)"
        );
        return;
    }
    let _one = ONE_CLUSTER.lock().await;
    let started = Instant::now();
    let cluster = Cluster::start(true).await;
    let traces = cluster.traces();
    let registry = cluster.registry.as_ref().expect("a registry").addr;
    eprintln!("two nodes and a registry ready: {:?}", started.elapsed());

    let dir = tempfile::tempdir().expect("temp dir");
    let (tx, rx) = mpsc::channel(1024);
    let logs = Logs::collect(rx);
    let config = SwarmConfig {
        base_rootfs: Some(support::busybox_rootfs(dir.path())),
        // Nothing is loaded into the worker: it must pull.
        image_nodes: Vec::new(),
        registry: Some(registry.to_string()),
        poll_interval: Duration::from_millis(500),
        stop_grace: Duration::from_secs(2),
        restart_delay: Duration::from_secs(1),
        // The other test reaches web dynos on the app's network; this one
        // proves the way a server that may not join it takes.
        join_network: false,
        ..SwarmConfig::default()
    };
    let placement = SwarmPlacement::new(cluster.manager.docker.clone(), "pair", config.clone(), tx)
        .expect("a placement");
    let slug = support::slug(dir.path());
    let pushed = format!("{registry}/crew/pair:v1");
    placement
        .apply(
            release(&slug),
            Formation::new(["web".to_string(), "worker".to_string()], 2),
        )
        .await
        .expect("apply v1 with a registry");
    // The registry holds the release, under the name the services use.
    let tags = http_get(registry, "/v2/crew/pair/tags/list")
        .await
        .expect("the registry's tags");
    assert!(tags.contains("\"v1\""), "the registry has {tags}");
    let service = cluster
        .manager
        .docker
        .service_inspect("pair-worker")
        .await
        .expect("the worker service");
    assert_eq!(
        service.spec["TaskTemplate"]["ContainerSpec"]["Image"], pushed,
        "the service names the pushed image"
    );

    // Every dyno runs, some on the worker node, which could only pull.
    let want = (1..=2)
        .flat_map(|n| [format!("web.{n}"), format!("worker.{n}")])
        .collect::<BTreeSet<String>>();
    let deadline = Instant::now() + Duration::from_secs(90);
    let dynos = loop {
        let dynos = placement.dynos().await;
        let names: BTreeSet<String> = dynos.iter().map(|d| d.info.name.clone()).collect();
        let up = dynos.iter().all(|d| d.info.state == DynoState::Up);
        let on_worker = dynos
            .iter()
            .any(|d| d.node.as_deref() == Some(cluster.worker_node.as_str()));
        if names == want && up && on_worker {
            eprintln!(
                "placed from the registry in {:?}: {}",
                started.elapsed(),
                describe(&dynos, &cluster)
            );
            break dynos;
        }
        assert!(
            Instant::now() < deadline,
            "after 90 s the dynos are not up on both nodes: {}",
            describe(&dynos, &cluster)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        cluster
            .worker
            .docker
            .image_exists(&pushed)
            .await
            .expect("the worker's images"),
        "the worker pulled {pushed}"
    );
    assert!(
        !cluster
            .worker
            .docker
            .image_exists("crew/pair:v1")
            .await
            .expect("the worker's images"),
        "nothing was loaded into the worker"
    );
    // The pulled image runs: the worker node's dynos boot and serve.
    let on_worker: Vec<String> = dynos
        .iter()
        .filter(|d| d.node.as_deref() == Some(cluster.worker_node.as_str()))
        .map(|d| d.info.name.clone())
        .collect();
    wait_printed(
        &logs,
        0,
        &on_worker,
        "boot lines from the worker node's dynos",
        |n| format!("boot {n} v1"),
    )
    .await;
    // Off the app's network, web dynos are reached at their published
    // ports: loopback on the manager (the node behind the socket), the
    // worker's address on the worker.
    let web: BTreeMap<String, Reach> = dynos
        .iter()
        .filter(|d| d.info.process_type == "web")
        .map(|d| {
            let ip = if d.node.as_deref() == Some(cluster.manager_node.as_str()) {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V4(cluster.net.ns_ip)
            };
            (d.info.name.clone(), Reach::Published(ip))
        })
        .collect();
    check_backends(&placement, &web).await;

    // A registry that cannot be reached fails the deploy, in the daemon's
    // words, before any service is made.
    let (tx, _rx) = mpsc::channel(1024);
    let nowhere = SocketAddr::new(
        IpAddr::V4(cluster.net.host_ip),
        free_port_on(cluster.net.host_ip),
    );
    let unreachable = SwarmPlacement::new(
        cluster.manager.docker.clone(),
        "lost",
        SwarmConfig {
            registry: Some(nowhere.to_string()),
            ..config
        },
        tx,
    )
    .expect("a placement");
    let mut lost = release(&slug);
    lost.app = "lost".into();
    let failed = Instant::now();
    let err = unreachable
        .apply(
            lost,
            Formation::new(["web".to_string(), "worker".to_string()], 1),
        )
        .await
        .expect_err("a push to nowhere fails");
    eprintln!(
        "the push to nowhere failed in {:?}: {err}",
        failed.elapsed()
    );
    let err = err.to_string();
    assert!(
        err.contains(&nowhere.to_string()) && err.contains("refused"),
        "the error names the registry and why: {err}"
    );
    assert!(
        matches!(
            cluster.manager.docker.service_inspect("lost-web").await,
            Err(e) if e.is_not_found()
        ),
        "no service for a release whose image was not pushed"
    );
    unreachable.destroy().await;

    let teardown = Instant::now();
    drop(placement);
    drop(unreachable);
    drop(cluster);
    drop(dir);
    let left = traces.left();
    assert!(left.is_empty(), "left behind: {left:#?}");
    eprintln!(
        "torn down in {:?}; registry test: {:?}",
        teardown.elapsed(),
        started.elapsed()
    );
}

#[test]
fn prefixes_overlap_by_the_shorter_mask() {
    let p = |s| parse_prefix(s).expect("a prefix");
    assert!(overlaps(p("10.77.0.0/16"), p("10.77.3.4/30")));
    assert!(overlaps(p("10.77.3.5"), p("10.77.3.4/30")));
    assert!(!overlaps(p("10.77.3.8/30"), p("10.77.3.4/30")));
    assert!(!overlaps(p("192.0.2.0/24"), p("10.77.3.4/30")));
    assert_eq!(
        p("10.77.3.6/30"),
        (u32::from(Ipv4Addr::new(10, 77, 3, 4)), !3)
    );
}
