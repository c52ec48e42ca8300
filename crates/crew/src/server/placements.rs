//! Where a server's dynos run: this machine (isolated or plain, chosen from
//! what the host allows and `--isolation`), a Docker Swarm or a Kubernetes
//! cluster (`--backend`).
//!
//! Separate from the server's start because each choice probes the host or a
//! cluster and says in words what it found; `mod.rs` only prints the words.
//!
//! `ServerArgs` names the two enums here; so that this module never names it
//! back, the cluster factories take their flags as plain values
//! (`ClusterFlags`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use crew_runtime::{
    DynoNetwork, DynoNetworkConfig, IsolatedConfig, IsolatedRuntime, PlainRuntime, ServerRuntime,
};

/// `--isolation`: whether dynos are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// Isolated where the host allows it, plain otherwise.
    Auto,
    /// Isolated, or the server does not start.
    On,
    /// Plain processes, each in its own copy of its slug.
    Off,
}

/// `--backend`: where apps' dynos run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlacementKind {
    /// This machine, isolated or plain (see `--isolation`).
    Local,
    /// A Docker Swarm, through its manager's socket: a service per process type.
    Swarm,
    /// A Kubernetes cluster: a namespace per app, a Deployment per process type.
    Kubernetes,
}

/// The flags the Swarm and Kubernetes placements read.
pub struct ClusterFlags {
    /// `--docker-socket`: the swarm manager's.
    pub docker_socket: PathBuf,
    /// `--stack-rootfs`: what every release's image is built on.
    pub stack_rootfs: Option<PathBuf>,
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--port-forward`: reach web pods through the Kubernetes API server.
    pub port_forward: bool,
    /// `--registry`: where release images are pushed and pulled.
    pub registry: Option<String>,
}

/// The placement of every app on the cluster `kind` names, and where, in
/// words; `None` for this machine, whose runtime `choose_runtime` picks.
pub async fn cluster_placements(
    kind: PlacementKind,
    flags: &ClusterFlags,
) -> Result<Option<(crew_platform::PlacementFactory, String)>> {
    Ok(match kind {
        PlacementKind::Local => None,
        PlacementKind::Swarm => Some(swarm_placements(flags).await?),
        PlacementKind::Kubernetes => Some(kubernetes_placements(flags).await?),
    })
}

/// Isolated dynos where the host allows them and the user did not say no; plain
/// ones, each in its own copy of its slug, otherwise. Also says which, in words.
pub fn choose_runtime(
    wanted: Isolation,
    network: Option<DynoNetworkConfig>,
    plain: PlainRuntime,
    data: &Path,
    app_uids: (u32, u32),
) -> Result<(ServerRuntime, String)> {
    let copies = data.join("dynos");
    // Copies a killed server left behind belong to no dyno any more.
    let _ = std::fs::remove_dir_all(&copies);
    let plain = ServerRuntime::Plain(plain.with_slug_copies(copies));
    let fallback = "dynos run as plain processes, each in its own copy of its slug";
    if wanted == Isolation::Off {
        return Ok((plain, format!("off (--isolation off): {fallback}")));
    }
    // Probed before the network is made: a host that cannot isolate dynos
    // gets no bridge or table.
    if let Err(why) = IsolatedRuntime::new(IsolatedConfig {
        root_dir: data.join("root"),
        ..IsolatedConfig::default()
    })
    .and_then(|r| r.check())
    {
        return match wanted {
            Isolation::On => Err(anyhow::anyhow!(
                "dyno isolation was asked for (--isolation on) but: {why}"
            )),
            _ => Ok((plain, format!("off: {why}; {fallback}"))),
        };
    }
    let (network, network_text) = match network {
        None => (
            None,
            "dynos share the host's network (--dyno-network off)".to_string(),
        ),
        Some(config) => match DynoNetwork::start(config) {
            Ok(network) => {
                let text = format!("network: {}", network.description());
                (Some(network), text)
            }
            Err(why) if wanted == Isolation::On => {
                return Err(anyhow::anyhow!(
                    "dyno isolation was asked for (--isolation on) but no network per dyno \
                     can be had: {why} (--dyno-network off shares the host's network)"
                ));
            }
            Err(why) => (
                None,
                format!(
                    "dynos share the host's network, because no network per dyno can be had: {why}"
                ),
            ),
        },
    };
    let config = IsolatedConfig {
        root_dir: data.join("root"),
        network: network.clone(),
        ..IsolatedConfig::default()
    };
    let isolated = IsolatedRuntime::new(config).and_then(|r| r.check().map(|()| r));
    if isolated.is_err()
        && let Some(network) = &network
    {
        let _ = network.remove();
    }
    match (isolated, wanted) {
        (Ok(runtime), _) => {
            if let Some(owner) = host_id_in(app_uids) {
                anyhow::bail!(
                    "--app-uids {}-{} holds {owner} of this host; give apps a range no \
                     user or group has",
                    app_uids.0,
                    app_uids.1
                );
            }
            let text = format!(
                "on (namespaces, overlay /app, {}, seccomp, no capabilities, a uid per \
                 app from {}-{}); {network_text}",
                runtime.cgroup_description(),
                app_uids.0,
                app_uids.1
            );
            Ok((ServerRuntime::Isolated(runtime), text))
        }
        (Err(why), Isolation::On) => Err(anyhow::anyhow!(
            "dyno isolation was asked for (--isolation on) but: {why}"
        )),
        (Err(why), _) => Ok((plain, format!("off: {why}; {fallback}"))),
    }
}

/// A user or group of this host (from /etc/passwd and /etc/group) whose id is
/// in `range`, named: an app's dynos would share its files and signals.
fn host_id_in(range: (u32, u32)) -> Option<String> {
    for (file, what) in [("/etc/passwd", "user"), ("/etc/group", "group")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let mut fields = line.split(':');
            let name = fields.next().unwrap_or_default();
            let id = fields.nth(1).and_then(|id| id.parse::<u32>().ok());
            if let Some(id) = id
                && (range.0..=range.1).contains(&id)
            {
                return Some(format!("the {what} `{name}` ({id})"));
            }
        }
    }
    None
}

/// The Kubernetes placement of every app, with a client from the kubeconfig;
/// says where, in words. With `--registry`, every release's image is built on
/// `--stack-rootfs` and pushed there, so the rootfs is required with it.
async fn kubernetes_placements(
    flags: &ClusterFlags,
) -> Result<(crew_platform::PlacementFactory, String)> {
    let base_rootfs = match &flags.registry {
        Some(registry) => {
            crew_cluster::registry::Registry::new(registry).context("--registry")?;
            let rootfs = flags.stack_rootfs.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "--backend kubernetes --registry {registry} pushes every release's image \
                     there and needs --stack-rootfs ROOTFS.tar: the stack (at least /bin/sh) \
                     that the images are built on"
                )
            })?;
            if !rootfs.is_file() {
                anyhow::bail!("--stack-rootfs {}: no such file", rootfs.display());
            }
            Some(rootfs)
        }
        None => None,
    };
    let client = crew_kubernetes::client_from_kubeconfig(flags.kubeconfig.as_deref())
        .await
        .context("making a Kubernetes client from the kubeconfig")?;
    let config = crew_kubernetes::KubernetesConfig {
        registry: flags.registry.clone(),
        base_rootfs,
        port_forward: flags.port_forward,
        ..crew_kubernetes::KubernetesConfig::default()
    };
    let factory: crew_platform::PlacementFactory = Arc::new(move |app, logs| {
        match crew_kubernetes::KubernetesPlacement::new(client.clone(), app, config.clone(), logs) {
            Ok(placement) => Box::new(placement),
            Err(e) => Box::new(crew_engine::FailedPlacement::new(format!(
                "{app} cannot be placed on Kubernetes: {e}"
            ))),
        }
    });
    let cluster = match &flags.kubeconfig {
        Some(path) => format!("kubeconfig {}", path.display()),
        None => "the default kubeconfig".to_string(),
    };
    let images = match &flags.registry {
        Some(registry) => format!(
            "images pushed to {}",
            crew_cluster::registry::reference_name(registry)
        ),
        None => "no --registry: the cluster must have every crew/APP:vN image".to_string(),
    };
    let web = if flags.port_forward {
        "web pods through the API server's port-forward"
    } else {
        "web pods at their IPs"
    };
    Ok((factory, format!("kubernetes ({cluster}, {images}, {web})")))
}

/// The Swarm placement of every app, after checking that the socket leads to
/// a swarm manager; says where, in words.
async fn swarm_placements(
    flags: &ClusterFlags,
) -> Result<(crew_platform::PlacementFactory, String)> {
    let socket = &flags.docker_socket;
    let rootfs = flags.stack_rootfs.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "--backend swarm needs --stack-rootfs ROOTFS.tar: the stack (at least /bin/sh) \
             that every release's image is built on"
        )
    })?;
    if !rootfs.is_file() {
        anyhow::bail!("--stack-rootfs {}: no such file", rootfs.display());
    }
    if let Some(registry) = &flags.registry {
        crew_swarm::spec::check_registry(registry).context("--registry")?;
    }
    let docker = Arc::new(crew_swarm::Docker::new(socket.clone()));
    let info = docker
        .info()
        .await
        .with_context(|| format!("reaching dockerd at {}", socket.display()))?;
    if !info.swarm.control_available {
        anyhow::bail!(
            "dockerd at {} is not a swarm manager (swarm state: {}); run `docker swarm init` first",
            socket.display(),
            if info.swarm.local_node_state.is_empty() {
                "unknown"
            } else {
                &info.swarm.local_node_state
            }
        );
    }
    let config = crew_swarm::SwarmConfig {
        base_rootfs: Some(rootfs),
        registry: flags.registry.clone(),
        ..crew_swarm::SwarmConfig::default()
    };
    let factory: crew_platform::PlacementFactory = Arc::new(move |app, logs| {
        match crew_swarm::SwarmPlacement::new(docker.clone(), app, config.clone(), logs) {
            Ok(placement) => Box::new(placement),
            Err(e) => Box::new(crew_engine::FailedPlacement::new(format!(
                "{app} cannot be placed on the swarm: {e}"
            ))),
        }
    });
    let images = match &flags.registry {
        Some(registry) => format!("images pushed to {registry}"),
        None => "no --registry: release images exist on the manager only".to_string(),
    };
    Ok((
        factory,
        format!("swarm (dockerd at {}, {images})", socket.display()),
    ))
}
