//! What the daemon answers, in the part crew reads: the typed JSON of nodes,
//! services, tasks, containers, networks and images. Only the fields crew
//! reads are modelled; a service's spec is kept as raw JSON, so that an
//! update sends back exactly what the daemon holds.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub version: String,
    pub api_version: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    #[serde(default)]
    pub swarm: SwarmInfo,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmInfo {
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// `inactive`, `pending`, `active`, `error`, `locked`.
    #[serde(default)]
    pub local_node_state: String,
    #[serde(default)]
    pub control_available: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmInspect {
    pub join_tokens: JoinTokens,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinTokens {
    pub worker: String,
    pub manager: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub status: NodeStatus,
    /// Only on managers.
    #[serde(default)]
    pub manager_status: Option<ManagerStatus>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStatus {
    /// `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    /// The address the node is reached at, without a port.
    #[serde(default)]
    pub addr: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManagerStatus {
    /// The manager's Raft address, `IP:PORT`.
    #[serde(default)]
    pub addr: String,
}

impl Node {
    /// The IP other machines reach this node at. A manager can report
    /// `0.0.0.0` as its status address (when it listens on every
    /// interface); its Raft address names the real one then.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        let status = self
            .status
            .addr
            .parse::<std::net::IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified());
        status.or_else(|| {
            let raft = self.manager_status.as_ref()?.addr.as_str();
            let ip = raft.parse::<std::net::SocketAddr>().ok()?.ip();
            (!ip.is_unspecified()).then_some(ip)
        })
    }
}

/// A service as inspected: its id, the version an update must name, and its
/// spec as the daemon holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: ObjectVersion,
    pub spec: Value,
}

impl Service {
    pub fn name(&self) -> &str {
        self.spec.get("Name").and_then(Value::as_str).unwrap_or("")
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.spec.get("Labels")?.get(key)?.as_str()
    }

    /// The replica count of a replicated service.
    pub fn replicas(&self) -> Option<u64> {
        self.spec
            .get("Mode")?
            .get("Replicated")?
            .get("Replicas")?
            .as_u64()
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ObjectVersion {
    pub index: u64,
}

/// One task: a slot's attempt at running a container.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Replicated services' tasks have a slot; a job's tasks too.
    #[serde(default)]
    pub slot: Option<u32>,
    #[serde(rename = "NodeID", default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub desired_state: String,
    pub status: TaskStatus,
    #[serde(default)]
    pub created_at: String,
    pub version: ObjectVersion,
    /// The networks the task is on, with its addresses there.
    #[serde(default)]
    pub networks_attachments: Vec<NetworkAttachment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachment {
    pub network: AttachedNetwork,
    /// CIDR notation: `10.0.1.3/24`.
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetwork {
    pub spec: AttachedNetworkSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetworkSpec {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    #[serde(default)]
    pub timestamp: String,
    /// `new`, `pending`, `assigned`, `accepted`, `preparing`, `ready`,
    /// `starting`, `running`, `complete`, `shutdown`, `failed`, `rejected`,
    /// `remove`, `orphaned`.
    pub state: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub err: Option<String>,
    #[serde(default)]
    pub container_status: Option<ContainerStatus>,
    #[serde(default)]
    pub port_status: Option<PortStatus>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerStatus {
    #[serde(rename = "ContainerID", default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortStatus {
    #[serde(default)]
    pub ports: Option<Vec<PortConfig>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortConfig {
    #[serde(default)]
    pub target_port: u16,
    #[serde(default)]
    pub published_port: u16,
}

impl Task {
    /// The host port published for `target` (host-mode publishing).
    pub fn published_port(&self, target: u16) -> Option<u16> {
        self.status
            .port_status
            .as_ref()?
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.target_port == target && p.published_port != 0)
            .map(|p| p.published_port)
    }

    pub fn container_id(&self) -> Option<&str> {
        self.status
            .container_status
            .as_ref()?
            .container_id
            .as_deref()
    }

    pub fn exit_code(&self) -> Option<i64> {
        self.status.container_status.as_ref()?.exit_code
    }

    /// The task's address on the network named `network`.
    pub fn address_on(&self, network: &str) -> Option<std::net::IpAddr> {
        self.networks_attachments
            .iter()
            .filter(|a| a.network.spec.name == network)
            .flat_map(|a| &a.addresses)
            .find_map(|cidr| cidr.split('/').next()?.parse().ok())
    }
}

/// What `GET /containers/ID/json` says, in the part crew reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub id: String,
    pub state: ContainerState,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    #[serde(default)]
    pub running: bool,
    /// The container's first process on this machine; 0 when not running.
    #[serde(default)]
    pub pid: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    #[serde(default)]
    pub state: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSummary {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    pub id: String,
}

/// The id a create call answers with.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Created {
    #[serde(rename = "ID", alias = "Id")]
    pub(super) id: String,
}

/// What `POST /containers/ID/wait` answers.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WaitResult {
    pub(super) status_code: i64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_node_s_address_falls_back_to_its_raft_address() {
        let node = |status: &str, raft: Option<&str>| -> Node {
            let mut v = json!({ "ID": "n", "Status": { "State": "ready", "Addr": status } });
            if let Some(raft) = raft {
                v["ManagerStatus"] = json!({ "Leader": true, "Addr": raft });
            }
            serde_json::from_value(v).expect("a node")
        };
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("an ip");
        assert_eq!(node("10.0.0.2", None).ip(), Some(ip("10.0.0.2")));
        assert_eq!(
            node("0.0.0.0", Some("10.0.0.1:2377")).ip(),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            node("0.0.0.0", Some("[fd00::1]:2377")).ip(),
            Some(ip("fd00::1"))
        );
        assert_eq!(node("0.0.0.0", Some("0.0.0.0:2377")).ip(), None);
        assert_eq!(node("", None).ip(), None);
    }
}
