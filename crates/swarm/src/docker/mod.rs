//! A small Docker Engine API client over the daemon's Unix socket, pinned to
//! API v1.41 (the newest that Debian 12's dockerd 20.10 accepts; a newer
//! client version is refused outright).
//!
//! This file holds the client, [`Docker`], and its error; the transport
//! (`transport.rs`) and the answers' types (`objects.rs`) are each their
//! own, and the typed calls are grouped by the resource they act on:
//! `daemon.rs` (the daemon and its swarm), `images.rs`, `networks.rs`,
//! `services.rs` (services, tasks, their logs) and `containers.rs`.

mod containers;
mod daemon;
mod images;
mod networks;
mod objects;
mod services;
mod transport;

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

pub use self::objects::{
    AttachedNetwork, AttachedNetworkSpec, ContainerInspect, ContainerState, ContainerStatus,
    ContainerSummary, ImageSummary, Info, JoinTokens, ManagerStatus, NetworkAttachment,
    NetworkSummary, Node, NodeStatus, ObjectVersion, PortConfig, PortStatus, Service, SwarmInfo,
    SwarmInspect, Task, TaskStatus, Version,
};
pub use self::services::LogStream;

/// The Engine API version every request is made with.
pub const API_VERSION: &str = "1.41";

/// A connection that stopped being HTTP: an attached container's stdin and
/// output.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("could not reach dockerd at {socket}: {source}")]
    Connect {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to dockerd at {socket}: {source}")]
    Http {
        socket: String,
        #[source]
        source: hyper::Error,
    },
    /// The daemon said no, in its own words.
    #[error("dockerd refused {what}: {message} ({status})")]
    Api {
        what: String,
        status: u16,
        message: String,
    },
    /// A streamed operation (load, push) that the daemon accepted and then
    /// reported failed, in its (or the registry's) words.
    #[error("{what} failed: {message}")]
    Failed { what: String, message: String },
    #[error("dockerd answered {what} with something unexpected: {detail}")]
    Decode { what: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl DockerError {
    /// Whether the object asked about does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::Api { status: 404, .. })
    }
}

/// One daemon.
#[derive(Debug, Clone)]
pub struct Docker {
    socket: PathBuf,
}

/// Label filters as the API takes them: `{"label": ["k=v"]}`.
pub fn label_filter(key: &str, value: &str) -> Value {
    json!({ "label": [format!("{key}={value}")] })
}

impl Docker {
    /// The daemon listening on `socket`. Nothing is contacted yet.
    pub fn new(socket: impl Into<PathBuf>) -> Docker {
        Docker {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}
