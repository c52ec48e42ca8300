//! crew's dynos on Docker Swarm: a small Engine API client ([`Docker`]) and
//! [`SwarmPlacement`], the [`crew_engine::Placement`] that runs one app's
//! formation as Swarm services.
//!
//! Theory of operation. crew keeps the truth (releases, config, formation);
//! Swarm realises it and keeps it running, also when crew itself is down. The
//! mapping is research §4.3's, and the same as `crew export swarm`'s
//! (crew-cluster supplies the names, the dyno's command line and the image):
//!
//! - **Release → image.** The slug over a base root filesystem becomes a
//!   docker-archive, loaded as `crew/APP:vN`. With a
//!   [`SwarmConfig::registry`] it is loaded into the manager's daemon only,
//!   tagged `REGISTRY/crew/APP:vN` and pushed, and the services name that,
//!   so each node pulls it when a task lands there. Without one it is loaded
//!   into every daemon that lacks it (the manager, and
//!   [`SwarmConfig::image_nodes`]).
//! - **Process type → service** `APP-TYPE`, labelled `heroku.app`,
//!   `heroku.type` and `heroku.release`: replicas = quantity, restart on any
//!   exit after [`SwarmConfig::restart_delay`], 30 s stop grace, web updated
//!   start-first, `PORT=5000`, `DYNO=TYPE.{{.Task.Slot}}` (Swarm's template;
//!   a replacement task keeps its slot, so `web.2` stays `web.2`), the config
//!   vars, and the app's own attachable overlay network `crew-APP`.
//! - **apply** loads the image, then creates or updates every type's service
//!   (an update with the service's version index, which Swarm rolls out) and
//!   removes the services of types the release dropped. **scale** updates
//!   replicas. **restart** bumps `ForceUpdate` (a type, or everything); for
//!   one dyno it stops that task's container gracefully, when it runs on this
//!   node, and Swarm starts a new task in the same slot. **stop TYPE** scales
//!   it to 0 and remembers the quantity for `restart`; Swarm cannot stop a
//!   single task (it would replace it), so `stop web.2` is refused.
//! - **ps** reads the tasks: per slot the task Swarm wants running (else the
//!   newest, to show a crash), in Heroku's states, with its node.
//! - **Logs**: one follower per service reads `service logs` (follow,
//!   timestamps, details) and sends each line as the dyno its task names.
//!   Lifecycle lines (`State changed from starting to up`, `Process exited
//!   with status N`) come from task state changes seen by a poller.
//! - **run**, detached: a `replicated-job` service `APP-run-N` that runs once
//!   and is never restarted; its output goes to the log, then its exit code
//!   (from the task's status), then the service is removed. Attached
//!   ([`SwarmPlacement::run_attached`]): a container on this node (Swarm
//!   cannot attach to a task), attached over a hijacked connection before it
//!   starts, with a terminal resized through the API, removed when it ends.
//! - **release command** (Heroku's release phase): before the platform
//!   applies a release, its image is made available as for an apply, and a
//!   container `APP-release-vN` of it runs on this node as an attached
//!   one-off does (`DYNO=release.1`, stdin closed), its output going to the
//!   platform line by line; its exit code is the answer, it is killed at
//!   the time limit, and it is removed however it ends.
//! - **Web backends**: the router joins the app's network through a
//!   gateway container `crew-APP-router` on this node (`gateway.rs`):
//!   crew makes the router's sockets in its network namespace, and each
//!   running web task, on any node, is a backend at its address on the
//!   overlay and `PORT`. Where the router cannot join (not root, or
//!   [`SwarmConfig::join_network`] off), each web task's published port is
//!   used instead: web tasks publish `PORT` in host mode on a port the
//!   daemon picks, reached at `127.0.0.1:port` on this node (the one behind
//!   the socket) and at `NODE-ADDRESS:port` on another, with the address
//!   the swarm reports for that node (`/nodes`, cached). The ingress mesh
//!   would give one port that spreads over every node, but needs IPVS in
//!   the kernel.
//! - **destroy** removes the gateway and the services, waits for their
//!   containers, removes the network and the app's images. **shutdown**
//!   stops only crew's own readers: the swarm keeps the formation (and the
//!   gateway), and a new placement for the app adopts its services.
//!
//! - **Health**: a web task has a health check that passes once a socket
//!   listens on `PORT` (read from the container's `/proc/net/tcp*` with
//!   shell builtins, as the stack only promises `/bin/sh`). Swarm counts
//!   the task as running only then, so it is `up`, a backend, and the point
//!   where a start-first update stops the old task, only once it listens.
//!   One that does not listen within [`SwarmConfig::boot_timeout`] is
//!   stopped and replaced, and logged as Heroku's R10.
//!
//! What Swarm does not give: restart backoff (a fixed delay instead).

pub mod docker;
mod gateway;
mod logline;
pub mod mux;
mod placement;
pub mod spec;

pub use docker::{Docker, DockerError};
pub use placement::{HangupGuard, SwarmAttachment, SwarmConfig, SwarmDyno, SwarmPlacement};

/// Why a Swarm operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Cluster(#[from] crew_cluster::ClusterError),
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl SwarmError {
    pub(crate) fn io(what: &str) -> impl FnOnce(std::io::Error) -> SwarmError + '_ {
        move |source| SwarmError::Io {
            what: what.to_string(),
            source,
        }
    }
}
