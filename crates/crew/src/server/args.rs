//! The flags of `crew server`, and how each is parsed and checked.
//!
//! Here rather than in `cli` so that the server takes its own flags without
//! naming `cli`: `cli` names `ServerArgs`, and the arrow points one way.

use std::path::PathBuf;

use clap::Args;

use super::placements::{ClusterFlags, Isolation, PlacementKind};

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Where everything is kept [default: $XDG_DATA_HOME/crew or ~/.local/share/crew]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The API's address (and git's)
    #[arg(long, default_value = "127.0.0.1:8421", value_name = "ADDR")]
    pub listen: String,
    /// Where the router serves every app at http://APP.localhost:PORT/
    #[arg(long, default_value = "127.0.0.1:8420", value_name = "ADDR")]
    pub router: String,
    /// Seconds a request may take until its response starts (H12)
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub request_timeout: u64,
    /// Seconds a request waits for a booting app's first web dyno (H20)
    #[arg(long, default_value_t = 75, value_name = "SECONDS")]
    pub boot_wait: u64,
    /// The ports dynos get PORT from
    #[arg(long, default_value = "30000-39999", value_parser = port_range, value_name = "FIRST-LAST")]
    pub dyno_ports: (u16, u16),
    /// Whether dynos run isolated (namespaces, overlay, cgroups; needs root)
    #[arg(long, value_enum, default_value = "auto", env = "CREW_ISOLATION")]
    pub isolation: Isolation,
    /// The uids (and gids) apps get, one each, for their isolated dynos and
    /// builds; no user or group of this host may have one of them
    #[arg(
        long,
        default_value = "2000000000-2099999999",
        value_parser = uid_range,
        value_name = "FIRST-LAST",
        env = "CREW_APP_UIDS"
    )]
    pub app_uids: (u32, u32),
    /// Isolated dynos' addresses, each dyno in a network namespace of its own
    /// (the first address is the bridge's), or `off` to share the host's
    #[arg(long, default_value = "10.213.0.0/16", value_parser = dyno_network, value_name = "CIDR|off", env = "CREW_DYNO_NETWORK")]
    pub dyno_network: DynoNetworkChoice,
    /// The bridge isolated dynos are on; also the name of crew's nftables table
    #[arg(
        long,
        default_value = "crew0",
        value_name = "NAME",
        env = "CREW_DYNO_BRIDGE"
    )]
    pub dyno_bridge: String,
    /// The DNS server dynos use, relayed by crew when it is on loopback
    /// [default: the host's /etc/resolv.conf]
    #[arg(long, value_parser = dns_server, value_name = "IP[:PORT]", env = "CREW_DYNO_DNS")]
    pub dyno_dns: Option<std::net::SocketAddr>,
    /// Where apps' dynos run: this machine, or a Docker Swarm
    #[arg(long, value_enum, default_value = "local", env = "CREW_BACKEND")]
    pub backend: PlacementKind,
    /// --backend swarm: the manager's Docker socket
    #[arg(
        long,
        default_value = "/var/run/docker.sock",
        value_name = "PATH",
        env = "CREW_DOCKER_SOCKET"
    )]
    pub docker_socket: PathBuf,
    /// --backend swarm: the stack as a root filesystem tar (or tar.gz), laid
    /// under every release's slug in its image
    #[arg(long, value_name = "ROOTFS", env = "CREW_STACK_ROOTFS")]
    pub stack_rootfs: Option<PathBuf>,
    /// --backend kubernetes: the kubeconfig [default: KUBECONFIG, ~/.kube/config, in-cluster]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// --backend kubernetes: reach web pods through the API server's
    /// port-forward, for a server outside the cluster's network
    #[arg(long)]
    pub port_forward: bool,
    /// --backend kubernetes or swarm: where release images are pulled from
    /// (REGISTRY/crew/APP:vN); the swarm backend pushes them there
    #[arg(long, value_name = "REGISTRY", env = "CREW_REGISTRY")]
    pub registry: Option<String>,
    /// Sandboxed builds run as each app's own uid (see --app-uids); this
    /// user (never root) is only the build sandbox's default, kept for
    /// callers that build without an app uid
    #[arg(long, default_value = "65533:65533", value_parser = build_user, value_name = "UID[:GID]")]
    pub build_user: (u32, u32),
    /// A variable of the server's environment every build gets (a proxy or CA
    /// setting); repeat for more. http_proxy, https_proxy and no_proxy (in
    /// either case) are passed on whenever they are set
    #[arg(long = "build-env", value_name = "NAME", value_parser = variable_name)]
    pub build_env: Vec<String>,
    /// A directory whose buildpacks BUILDPACK_URL and .buildpacks may name by
    /// path; without it, builds take only git URLs and built-in names
    #[arg(long, value_name = "DIR")]
    pub buildpack_dir: Option<PathBuf>,
    /// A name clients reach the API by, besides localhost and 127.0.0.1: it
    /// goes into the TLS certificate crew makes; repeat for more
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostnames: Vec<String>,
    /// The API's TLS certificate chain (PEM) instead of one from crew's own
    /// CA; goes with --tls-key
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

fn build_user(text: &str) -> Result<(u32, u32), String> {
    let number = |part: &str| {
        part.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{part}` is not a numeric user or group id"))
    };
    let (uid, gid) = match text.split_once(':') {
        Some((uid, gid)) => (number(uid)?, number(gid)?),
        None => (number(text)?, number(text)?),
    };
    if uid == 0 || gid == 0 {
        return Err("builds never run as root (uid or gid 0)".to_string());
    }
    if uid == u32::MAX || gid == u32::MAX {
        return Err("the user and group may not be -1".to_string());
    }
    Ok((uid, gid))
}

fn variable_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains(['=', '\0']) {
        return Err(format!("`{text}` is not an environment variable's name"));
    }
    Ok(text.to_string())
}

/// `--dyno-network`: a range, or `off`.
#[derive(Debug, Clone, Copy)]
pub enum DynoNetworkChoice {
    Off,
    Range(crew_runtime::Ipv4Range),
}

fn dyno_network(text: &str) -> Result<DynoNetworkChoice, String> {
    if text == "off" {
        return Ok(DynoNetworkChoice::Off);
    }
    crew_runtime::Ipv4Range::parse(text).map(DynoNetworkChoice::Range)
}

fn dns_server(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(address) = text.parse::<std::net::SocketAddr>() {
        return Ok(address);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{text}` is not an IP address, with or without :PORT"))
}

fn port_range(text: &str) -> Result<(u16, u16), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not a range like 30000-39999"))?;
    let first: u16 = first
        .trim()
        .parse()
        .map_err(|_| format!("`{first}` is not a port"))?;
    let last: u16 = last
        .trim()
        .parse()
        .map_err(|_| format!("`{last}` is not a port"))?;
    if first == 0 || first > last {
        return Err(format!("`{text}` is not a range of ports"));
    }
    Ok((first, last))
}

fn uid_range(text: &str) -> Result<(u32, u32), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not a range like 2000000000-2099999999"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{s}` is not a uid"))
    };
    let (first, last) = (number(first)?, number(last)?);
    if first > last {
        return Err(format!(
            "`{text}` is not a range of uids (the first is above the last)"
        ));
    }
    // Root and the system's users, nobody (65534) and -1 must never be an app's.
    if first < 1000 || last >= u32::MAX - 1 || (first..=last).contains(&65534) {
        return Err(format!(
            "`{text}` holds uids apps may not have (below 1000, 65534 `nobody`, or -1 and -2)"
        ));
    }
    Ok((first, last))
}

impl ServerArgs {
    /// What the Swarm and Kubernetes placements read.
    pub fn cluster_flags(&self) -> ClusterFlags {
        ClusterFlags {
            docker_socket: self.docker_socket.clone(),
            stack_rootfs: self.stack_rootfs.clone(),
            kubeconfig: self.kubeconfig.clone(),
            port_forward: self.port_forward,
            registry: self.registry.clone(),
        }
    }
}
