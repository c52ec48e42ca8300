//! [`SwarmConfig`]: how a placement runs its app (timings, images, the
//! router's way in). Its own file: it is the placement's whole input from
//! the server, and every part of the placement reads it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::docker::Docker;

/// How a [`SwarmPlacement`](crate::SwarmPlacement) runs its app.
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
