//! A network namespace per isolated dyno, on a bridge of crew's own.
//!
//! Each dyno gets a network namespace with its own loopback and one veth,
//! `eth0`, whose other end is a port of crew's bridge (`crew0`). The bridge
//! holds the range's first address, the dynos' gateway; every dyno has an
//! address of the range (the operator picks it) and a default route through
//! the gateway. What a dyno may reach is one nftables table of crew's own
//! (see [`firewall`]): the internet through NAT, and nothing of the host but
//! replies to connections the host made (the router's), and crew's DNS relay
//! when there is one. Every port is an isolated bridge port, so dynos do not
//! reach each other either, those of one app included: as on Heroku's
//! Common Runtime, a dyno is reached through the router only.
//!
//! Why a bridge and not routed veth pairs: one address on the host serves as
//! every dyno's gateway, the whole range is one connected route, and the
//! wall between dynos is one flag per port (`isolated on`) rather than a
//! route and a rule per dyno.
//!
//! Making a namespace and a veth takes milliseconds, more than the rest of a
//! dyno's start, so a background thread keeps a few ready ([`Prepared`]):
//! it makes the namespace (`unshare` on itself), configures it over netlink
//! from inside, and comes back. It makes them ahead, not while dynos start
//! unless the pool runs low (see [`when_to_make`]): making one beside a
//! start slowed that start by a fifth on a machine of two cores, since both
//! want the CPU and the kernel's network locks. A dyno's init is cloned straight into one
//! (the cloning thread enters it for the `clone`), and crew lets go of it:
//! the namespace then lives exactly as long as the dyno's processes, and the
//! kernel removes its veth with it. Nothing is left to clean after a
//! `kill -9` of crew but the bridge and the table, and [`DynoNetwork::start`]
//! replaces both.
//!
//! Invariants:
//! - crew changes only its bridge, its table, the veths it made and,
//!   if it was off, `net.ipv4.ip_forward` (said at start).
//! - An address is leased to one dyno (or one prepared namespace) at a time,
//!   and handed out again as late as possible (round robin), since the
//!   kernel frees a namespace some time after its last process.

mod dns;
mod firewall;
mod netlink;
mod nftables;

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use self::netlink::Netlink;
use crate::os;

/// An IPv4 network, `10.213.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Range {
    base: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Range {
    /// Parses `A.B.C.D/N`; the address must be the network's first (no host
    /// bits), and the range must hold at least a gateway and two dynos.
    pub fn parse(text: &str) -> Result<Ipv4Range, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a network like 10.213.0.0/16"))?;
        let base: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("`{address}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=29).contains(p))
            .ok_or_else(|| format!("the prefix length of `{text}` must be 8 to 29"))?;
        let range = Ipv4Range { base, prefix };
        if u32::from(base) & !range.mask() != 0 {
            return Err(format!(
                "`{text}` has host bits set; the network is {}",
                Ipv4Range {
                    base: Ipv4Addr::from(u32::from(base) & range.mask()),
                    prefix
                }
            ));
        }
        Ok(range)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether two networks share any address.
    pub fn overlaps(&self, other: Ipv4Addr, other_prefix: u8) -> bool {
        let shorter = self.prefix.min(other_prefix);
        let mask = if shorter == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(shorter))
        };
        u32::from(self.base) & mask == u32::from(other) & mask
    }

    /// The `n`th address of the range (0 is the network's own).
    fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }

    /// How many addresses dynos can have: all but the network's, the
    /// gateway's and the broadcast address.
    fn dyno_addresses(&self) -> u32 {
        (1u32 << (32 - u32::from(self.prefix))) - 3
    }
}

impl fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// How the dyno network is made.
#[derive(Debug, Clone)]
pub struct DynoNetworkConfig {
    /// The dynos' addresses; the first is the bridge's (the gateway).
    pub range: Ipv4Range,
    /// The bridge's name, also the name of crew's nftables table.
    pub bridge: String,
    /// The DNS server dynos use, through crew's relay when it is on loopback
    /// or not on port 53. `None`: the host's `/etc/resolv.conf`.
    pub dns_upstream: Option<SocketAddr>,
    /// Where crew writes the `resolv.conf` dynos see.
    pub resolv_conf: PathBuf,
    /// How many namespaces are kept ready.
    pub pool: usize,
    /// How long a start may wait for a namespace.
    pub timeout: Duration,
}

impl Default for DynoNetworkConfig {
    fn default() -> Self {
        DynoNetworkConfig {
            range: Ipv4Range {
                base: Ipv4Addr::new(10, 213, 0, 0),
                prefix: 16,
            },
            bridge: "crew0".into(),
            dns_upstream: None,
            resolv_conf: PathBuf::from("/run/crew/resolv.conf"),
            pool: 8,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why dynos cannot have networks of their own here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkUnavailable {
    #[error("a network per dyno needs root (crew runs as uid {0})")]
    NotRoot(u32),
    #[error("the kernel has no network namespaces")]
    NoNamespaces,
    #[error(
        "the dyno network {range} overlaps this host's {what} {network}; \
         choose another range with --dyno-network"
    )]
    Clash {
        range: String,
        what: &'static str,
        network: String,
    },
    #[error("`{0}` is not a usable bridge name (1 to 15 letters, digits, `-` or `_`)")]
    BadName(String),
    #[error("cannot {0}")]
    Setup(String),
}

/// Dyno networks on this host: the bridge, the walls, the DNS relay, and a
/// pool of namespaces made ahead. Cheap to clone.
#[derive(Clone)]
pub struct DynoNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    config: DynoNetworkConfig,
    gateway: Ipv4Addr,
    bridge_index: u32,
    host_namespace: OwnedFd,
    pool: Mutex<Pool>,
    /// Signalled when a namespace is made ready or the maker fails.
    filled: Condvar,
    /// Signalled when one is taken, and when a dyno's start ends.
    drained: Condvar,
    leases: Mutex<Leases>,
    description: String,
}

#[derive(Default)]
struct Pool {
    ready: VecDeque<Prepared>,
    /// Why the last namespace could not be made; cleared by the next success.
    failure: Option<String>,
    /// The maker cannot go on (it could not come back to the host's
    /// namespace): no more namespaces, ever.
    broken: bool,
    /// Dynos between taking a namespace and their app's start.
    starting: usize,
    /// When the last of them started (or failed to).
    last_start: Option<Instant>,
}

#[derive(Default)]
struct Leases {
    used: HashSet<u32>,
    next: u32,
}

/// A namespace made ready for one dyno.
pub(crate) struct Prepared {
    pub namespace: OwnedFd,
    pub lease: Lease,
}

/// Held by a dyno from taking its namespace until its app runs (or its
/// start failed): the pool makes no namespace meanwhile.
pub(crate) struct Starting {
    network: Arc<Inner>,
}

impl Drop for Starting {
    fn drop(&mut self) {
        let mut pool = self.network.lock_pool();
        pool.starting = pool.starting.saturating_sub(1);
        pool.last_start = Some(Instant::now());
        self.network.drained.notify_all();
    }
}

/// A dyno's address, its own until dropped.
pub(crate) struct Lease {
    address: Ipv4Addr,
    n: u32,
    network: Arc<Inner>,
}

impl Lease {
    pub(crate) fn address(&self) -> Ipv4Addr {
        self.address
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.network
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .used
            .remove(&self.n);
    }
}

impl fmt::Debug for DynoNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DynoNetwork({})", self.inner.description)
    }
}

impl DynoNetwork {
    /// Makes (or remakes) the bridge and the table, starts the DNS relay if
    /// one is needed (on the current tokio runtime), writes the dynos'
    /// `resolv.conf`, and makes the first namespace, so that a host that
    /// cannot make veths is found out now.
    pub fn start(config: DynoNetworkConfig) -> Result<DynoNetwork, NetworkUnavailable> {
        if !os::is_root() {
            return Err(NetworkUnavailable::NotRoot(os::euid()));
        }
        if !Path::new("/proc/self/ns/net").exists() {
            return Err(NetworkUnavailable::NoNamespaces);
        }
        let name_ok = !config.bridge.is_empty()
            && config.bridge.len() <= 15
            && config
                .bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(NetworkUnavailable::BadName(config.bridge.clone()));
        }
        let range = config.range;
        let gateway = range.host(1);
        let mut host = Netlink::open().map_err(setup("open a netlink socket"))?;
        firewall::remove(&config.bridge).map_err(setup("remove crew's old nftables table"))?;
        if let Some(old) = host
            .link_index(&config.bridge)
            .map_err(setup("look for an old bridge"))?
        {
            host.delete_link(old)
                .map_err(setup(&format!("remove the old bridge {}", config.bridge)))?;
        }
        check_clashes(&mut host, range)?;

        let resolver = Resolver::choose(config.dns_upstream, &read_host_resolv_conf());
        let ip_forward = Path::new("/proc/sys/net/ipv4/ip_forward");
        let forwarding =
            std::fs::read_to_string(ip_forward).map_err(setup("read net.ipv4.ip_forward"))?;
        let turned_on = forwarding.trim() == "0";
        if turned_on {
            std::fs::write(ip_forward, "1").map_err(setup("turn on net.ipv4.ip_forward"))?;
        }

        let bridge_index = host
            .add_bridge(&config.bridge)
            .map_err(setup(&format!("make the bridge {}", config.bridge)))?;
        // No IPv6 on the bridge: dynos get none, and the host answers them on
        // nothing. Best effort: a host without IPv6 has no such file.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", config.bridge),
            "1",
        );
        host.add_address(bridge_index, gateway, range.prefix)
            .map_err(setup("give the bridge its address"))?;
        host.set_up(bridge_index)
            .map_err(setup("set the bridge up"))?;
        let walls = firewall::Walls {
            table: &config.bridge,
            bridge: &config.bridge,
            range,
            gateway,
            dns_on_gateway: matches!(resolver, Resolver::Relay(_)),
        };
        firewall::apply(&walls.script()).map_err(setup("write crew's nftables table"))?;
        let failed = |e: NetworkUnavailable| {
            let _ = firewall::remove(&config.bridge);
            if let Ok(mut netlink) = Netlink::open() {
                let _ = netlink.delete_link(bridge_index);
            }
            e
        };

        let dns_text = match &resolver {
            Resolver::Servers(servers) if servers.is_empty() => "no DNS servers".to_string(),
            Resolver::Servers(servers) => format!(
                "DNS {}",
                servers
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Resolver::Relay(upstream) => {
                let runtime = match tokio::runtime::Handle::try_current() {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(failed(NetworkUnavailable::Setup(
                            "relay DNS outside a tokio runtime".into(),
                        )));
                    }
                };
                if let Err(e) = dns::start(&runtime, SocketAddr::new(gateway.into(), 53), *upstream)
                {
                    return Err(failed(NetworkUnavailable::Setup(format!(
                        "listen for DNS on {gateway}:53: {e}"
                    ))));
                }
                format!("DNS through crew's relay on {gateway} to {upstream}")
            }
        };
        let resolv = resolver.resolv_conf(gateway, &read_host_resolv_conf());
        if let Some(parent) = config.resolv_conf.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::fs::write(&config.resolv_conf, resolv) {
            return Err(failed(NetworkUnavailable::Setup(format!(
                "write {}: {e}",
                config.resolv_conf.display()
            ))));
        }
        let host_namespace = match os::open_thread_network_namespace() {
            Ok(ns) => ns,
            Err(e) => {
                return Err(failed(NetworkUnavailable::Setup(format!(
                    "open this thread's network namespace: {e}"
                ))));
            }
        };
        let description = format!(
            "a namespace per dyno on bridge {} ({range}, gateway {gateway}), NAT out, \
             no dyno-to-dyno or dyno-to-host traffic, {dns_text}{}",
            config.bridge,
            if turned_on {
                "; turned on net.ipv4.ip_forward"
            } else {
                ""
            }
        );
        let network = DynoNetwork {
            inner: Arc::new(Inner {
                config,
                gateway,
                bridge_index,
                host_namespace,
                pool: Mutex::new(Pool::default()),
                filled: Condvar::new(),
                drained: Condvar::new(),
                leases: Mutex::new(Leases::default()),
                description,
            }),
        };
        let maker = network.inner.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("crew-netns".into())
            .spawn(move || make_namespaces(maker, host))
        {
            return Err(NetworkUnavailable::Setup(format!(
                "start the thread that makes namespaces: {e}"
            )));
        }
        // The first namespace proves the host can make them.
        match network.take() {
            Ok((first, _)) => {
                drop(first);
                Ok(network)
            }
            Err(e) => {
                let _ = network.remove();
                Err(NetworkUnavailable::Setup(format!(
                    "make a dyno's network: {e}"
                )))
            }
        }
    }

    /// What the network is, in words, for startup and `apps:info`.
    pub fn description(&self) -> &str {
        &self.inner.description
    }

    pub fn config(&self) -> &DynoNetworkConfig {
        &self.inner.config
    }

    /// The bridge's address, the dynos' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.inner.gateway
    }

    /// Waits until the pool is full, or `timeout` has passed; whether it is.
    /// For benches and tests, so that what they time next does not share the
    /// machine with the making of namespaces.
    pub fn wait_until_full(&self, timeout: Duration) -> bool {
        let inner = &self.inner;
        // A timeout too long to add is as good as none.
        let deadline = Instant::now().checked_add(timeout);
        let mut pool = inner.lock_pool();
        loop {
            if pool.ready.len() >= inner.config.pool.max(1) {
                return true;
            }
            if pool.broken {
                return false;
            }
            pool = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    inner
                        .filled
                        .wait_timeout(pool, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => inner.filled.wait(pool).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Removes the table and the bridge. Dynos still running lose the
    /// network; for tests and for a server that could not start.
    pub fn remove(&self) -> io::Result<()> {
        let _ = firewall::remove(&self.inner.config.bridge);
        let _ = std::fs::remove_file(&self.inner.config.resolv_conf);
        Netlink::open()?.delete_link(self.inner.bridge_index)
    }

    /// A namespace ready for a dyno: from the pool, or the next one made.
    /// The dyno holds the [`Starting`] until its app runs.
    pub(crate) fn take(&self) -> io::Result<(Prepared, Starting)> {
        let inner = &self.inner;
        let mut pool = inner.lock_pool();
        let deadline = Instant::now() + inner.config.timeout;
        loop {
            if let Some(prepared) = pool.ready.pop_front() {
                pool.starting += 1;
                inner.drained.notify_all();
                let starting = Starting {
                    network: inner.clone(),
                };
                return Ok((prepared, starting));
            }
            if pool.broken
                && let Some(why) = &pool.failure
            {
                return Err(io::Error::other(why.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    match &pool.failure {
                        Some(why) => format!("no network namespace could be made: {why}"),
                        None => "no network namespace was ready in time".to_string(),
                    },
                ));
            }
            pool = inner
                .filled
                .wait_timeout(pool, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Inner {
    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lease(self: &Arc<Inner>) -> io::Result<Lease> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let count = self.config.range.dyno_addresses();
        for _ in 0..count {
            // Dynos have the range's addresses from its third on.
            let n = 2 + leases.next % count;
            leases.next = (leases.next + 1) % count;
            if leases.used.insert(n) {
                return Ok(Lease {
                    address: self.config.range.host(n),
                    n,
                    network: self.clone(),
                });
            }
        }
        Err(io::Error::other(format!(
            "every address of {} is taken",
            self.config.range
        )))
    }
}

/// How long the pool waits after the last dyno started before it makes
/// namespaces again: dynos that start together (a deploy, a scale) all find
/// the machine to themselves.
const REFILL_QUIET: Duration = Duration::from_millis(20);

/// The pool's thread: keeps `pool` namespaces ready.
fn make_namespaces(inner: Arc<Inner>, mut host: Netlink) {
    let mut made: u32 = 0;
    let tag = std::process::id() & 0xff_ffff;
    loop {
        drop(wait_for_room(&inner));
        made = made.wrapping_add(1) & 0xfff_ffff;
        let name = format!("cw{tag:06x}{made:07x}");
        let result = prepare(&inner, &mut host, &name);
        let mut pool = inner.lock_pool();
        let pause = match result {
            Ok(prepared) => {
                pool.failure = None;
                pool.ready.push_back(prepared);
                false
            }
            Err(Failure::Lost(why)) => {
                pool.failure = Some(why);
                pool.broken = true;
                inner.filled.notify_all();
                return;
            }
            Err(Failure::Once(why)) => {
                tracing::warn!(%why, "could not make a dyno's network namespace");
                pool.failure = Some(why);
                true
            }
        };
        inner.filled.notify_all();
        drop(pool);
        if pause {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Waits until the pool should make a namespace (see [`when_to_make`]).
fn wait_for_room(inner: &Inner) -> MutexGuard<'_, Pool> {
    let mut pool = inner.lock_pool();
    loop {
        let when = when_to_make(
            pool.ready.len(),
            inner.config.pool.max(1),
            pool.starting,
            pool.last_start.map(|at| at.elapsed()),
        );
        pool = match when {
            Make::Now => return pool,
            Make::WhenSignalled => inner.drained.wait(pool).unwrap_or_else(|p| p.into_inner()),
            Make::After(left) => {
                inner
                    .drained
                    .wait_timeout(pool, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
    }
}

/// When the pool makes its next namespace.
#[derive(Debug, PartialEq, Eq)]
enum Make {
    Now,
    /// Once a namespace is taken or a start ends.
    WhenSignalled,
    /// After this long, unless something happens first.
    After(Duration),
}

/// The pool's rule: a pool of `size` with `ready` namespaces makes one when
/// it has room and no dyno is starting and none has for [`REFILL_QUIET`]
/// (`since_last_start`); or at once when it runs low (under a quarter
/// full), since a start would otherwise soon wait for one.
fn when_to_make(
    ready: usize,
    size: usize,
    starting: usize,
    since_last_start: Option<Duration>,
) -> Make {
    let low = (size / 4).max(1);
    if ready >= size {
        return Make::WhenSignalled;
    }
    if ready < low {
        return Make::Now;
    }
    if starting > 0 {
        return Make::WhenSignalled;
    }
    match since_last_start {
        Some(since) if since < REFILL_QUIET => Make::After(REFILL_QUIET - since),
        _ => Make::Now,
    }
}

enum Failure {
    /// This namespace failed; the next may not.
    Once(String),
    /// The thread could not come back to the host's namespace.
    Lost(String),
}

/// Makes one namespace: loopback up, `eth0` with a leased address and a
/// default route through the gateway, its peer `host_name` an isolated port
/// of the bridge. Runs on the pool's thread, which it moves into the new
/// namespace and back.
fn prepare(inner: &Arc<Inner>, host: &mut Netlink, host_name: &str) -> Result<Prepared, Failure> {
    let lease = inner.lease().map_err(once("lease an address"))?;
    os::new_thread_network_namespace().map_err(once("make a network namespace"))?;
    let inside = (|| -> io::Result<OwnedFd> {
        let namespace = os::open_thread_network_namespace()?;
        let mut netlink = Netlink::open()?;
        // The loopback device is always the first link of a namespace.
        netlink.set_up(1)?;
        netlink.add_veth("eth0", host_name, inner.host_namespace.as_raw_fd())?;
        let eth0 = netlink
            .link_index("eth0")?
            .ok_or_else(|| io::Error::other("eth0 vanished once made"))?;
        netlink.add_address(eth0, lease.address(), inner.config.range.prefix)?;
        // IPv6 on eth0 could reach nothing (the bridge has none, and the
        // walls drop what a dyno sends over it); off before eth0 is up, the
        // kernel sends no address checks, router solicitations or
        // multicast reports from every new dyno. Loopback keeps `::1`.
        // Best effort, as for the bridge.
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1");
        netlink.set_up(eth0)?;
        netlink.add_default_route(inner.gateway)?;
        // An app that listens on 127.0.0.1 (the default of many frameworks,
        // and what worked before dynos had networks) is still reached:
        // TCP from eth0 goes on to the dyno's own loopback. Both are made
        // here, on this thread, so they land in the dyno's namespace (the
        // sysctl file and the netfilter socket are the thread's
        // namespace's).
        std::fs::write("/proc/sys/net/ipv4/conf/eth0/route_localnet", "1")?;
        nftables::apply_loopback_forward()?;
        Ok(namespace)
    })();
    if let Err(e) = os::enter_network_namespace(&inner.host_namespace) {
        return Err(Failure::Lost(format!(
            "the thread making namespaces could not come back to the host's: {e}"
        )));
    }
    // On failure the namespace goes with its last descriptor, and the veth
    // with it.
    let namespace = inside.map_err(once("set up a dyno's network namespace"))?;
    let index = host
        .link_index(host_name)
        .map_err(once("find the host's end of a veth"))?
        .ok_or_else(|| Failure::Once(format!("the veth {host_name} vanished")))?;
    // A bridge port needs no IPv6 of its own (the bridge has none either):
    // turned off before the port is up, the host never gives it a
    // link-local address, nor runs address checks and multicast reports on
    // it for the dyno's lifetime. Best effort: a host without IPv6 has no
    // such file.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{host_name}/disable_ipv6"),
        "1",
    );
    host.attach_isolated(index, inner.bridge_index)
        .map_err(once("attach a veth to the bridge"))?;
    Ok(Prepared { namespace, lease })
}

/// An error of a step of the setup, saying which.
fn setup(what: &str) -> impl FnOnce(io::Error) -> NetworkUnavailable + '_ {
    move |e| NetworkUnavailable::Setup(format!("{what}: {e}"))
}

fn once(what: &str) -> impl FnOnce(io::Error) -> Failure + '_ {
    move |e| Failure::Once(format!("{what}: {e}"))
}

/// Dynos never see another host's error: a clash with the host's routes or
/// addresses is refused at start.
fn check_clashes(host: &mut Netlink, range: Ipv4Range) -> Result<(), NetworkUnavailable> {
    let setup = |e: io::Error| NetworkUnavailable::Setup(format!("read the host's routes: {e}"));
    for (destination, prefix) in host.ipv4_routes().map_err(setup)? {
        // The default route overlaps everything and is no clash.
        if prefix > 0 && range.overlaps(destination, prefix) {
            return Err(NetworkUnavailable::Clash {
                range: range.to_string(),
                what: "route to",
                network: format!("{destination}/{prefix}"),
            });
        }
    }
    for (address, _) in host.ipv4_addresses().map_err(setup)? {
        if range.overlaps(address, 32) {
            return Err(NetworkUnavailable::Clash {
                range: range.to_string(),
                what: "address",
                network: address.to_string(),
            });
        }
    }
    Ok(())
}

fn read_host_resolv_conf() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

/// Where dynos send DNS.
#[derive(Debug, PartialEq, Eq)]
enum Resolver {
    /// Straight to these servers, through the NAT.
    Servers(Vec<IpAddr>),
    /// To crew's relay on the gateway, which sends on to this server.
    Relay(SocketAddr),
}

impl Resolver {
    fn choose(configured: Option<SocketAddr>, host_resolv_conf: &str) -> Resolver {
        let needs_relay = |a: &SocketAddr| a.ip().is_loopback() || a.port() != 53;
        if let Some(upstream) = configured {
            return if needs_relay(&upstream) {
                Resolver::Relay(upstream)
            } else {
                Resolver::Servers(vec![upstream.ip()])
            };
        }
        let servers: Vec<IpAddr> = host_resolv_conf
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some("nameserver"))
                    .then(|| words.next().and_then(|w| w.parse().ok()))
                    .flatten()
            })
            .collect();
        // No nameserver line means the local one, to the C library.
        let local = servers
            .iter()
            .find(|s| s.is_loopback())
            .copied()
            .or_else(|| {
                servers
                    .is_empty()
                    .then_some(IpAddr::V4(Ipv4Addr::LOCALHOST))
            });
        match local {
            Some(ip) => Resolver::Relay(SocketAddr::new(ip, 53)),
            None => Resolver::Servers(servers.into_iter().filter(IpAddr::is_ipv4).collect()),
        }
    }

    /// The dynos' `resolv.conf`: the host's `search` and `options` lines, and
    /// the servers dynos can reach.
    fn resolv_conf(&self, gateway: Ipv4Addr, host_resolv_conf: &str) -> String {
        let mut text = String::from("# written by crew for its dynos\n");
        for line in host_resolv_conf.lines() {
            let first = line.split_whitespace().next();
            if matches!(first, Some("search" | "domain" | "options")) {
                text.push_str(line.trim());
                text.push('\n');
            }
        }
        match self {
            Resolver::Servers(servers) => {
                for server in servers {
                    text.push_str(&format!("nameserver {server}\n"));
                }
            }
            Resolver::Relay(_) => text.push_str(&format!("nameserver {gateway}\n")),
        }
        text
    }
}

#[cfg(test)]
mod tests;
