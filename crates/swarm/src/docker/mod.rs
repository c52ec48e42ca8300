//! A small Docker Engine API client over the daemon's Unix socket, pinned to
//! API v1.41 (the newest that Debian 12's dockerd 20.10 accepts; a newer
//! client version is refused outright).
//!
//! One request per connection: the daemon is local, a connect costs
//! microseconds, and it keeps streaming requests (logs, attach) from
//! holding up the others. Only the fields crew reads are modelled; a service's
//! spec is kept as raw JSON so that an update sends back exactly what the
//! daemon holds, with only the changed fields touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use crate::mux::{Demux, StreamKind};

/// The Engine API version every request is made with.
pub const API_VERSION: &str = "1.41";

type Body = BoxBody<Bytes, std::io::Error>;

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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Created {
    #[serde(rename = "ID", alias = "Id")]
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WaitResult {
    status_code: i64,
}

/// `X-Registry-Auth` without credentials: `{}` in base64url.
const NO_AUTH: &str = "e30=";

/// The first `error` of a streamed progress answer (one JSON object a line),
/// in the daemon's (or the registry's) words.
fn progress_error(answer: &[u8]) -> Option<String> {
    String::from_utf8_lossy(answer).lines().find_map(|line| {
        let v = serde_json::from_str::<Value>(line).ok()?;
        let error = v.get("error")?;
        Some(match error.as_str() {
            Some(text) => text.to_string(),
            None => error.to_string(),
        })
    })
}

/// Label filters as the API takes them: `{"label": ["k=v"]}`.
pub fn label_filter(key: &str, value: &str) -> Value {
    json!({ "label": [format!("{key}={value}")] })
}

/// Percent-encodes a query value: everything but RFC 3986's unreserved set.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn json_body(value: &Value) -> Body {
    Full::new(Bytes::from(value.to_string()))
        .map_err(|never| match never {})
        .boxed()
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

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        headers: &[(header::HeaderName, &str)],
        upgrade: bool,
    ) -> Result<Response<Incoming>, DockerError> {
        let socket = || self.socket.display().to_string();
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| DockerError::Connect {
                    socket: socket(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| DockerError::Http {
                socket: socket(),
                source,
            })?;
        // The connection runs until the response (and any upgraded stream)
        // is done with; its errors surface through the request.
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("/v{API_VERSION}{path}"))
            .header(header::HOST, "docker");
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        if upgrade {
            request = request
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "tcp");
        }
        let request = request.body(body).map_err(|e| DockerError::Decode {
            what: format!("{method} {path}"),
            detail: e.to_string(),
        })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| DockerError::Http {
                socket: socket(),
                source,
            })?;
        let status = response.status();
        if status.is_success()
            || status == StatusCode::NOT_MODIFIED
            || status == StatusCode::SWITCHING_PROTOCOLS
        {
            return Ok(response);
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        Err(DockerError::Api {
            what: format!("{method} {}", path.split('?').next().unwrap_or(path)),
            status: status.as_u16(),
            message,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Bytes, DockerError> {
        let (body, headers) = match body {
            Some(v) => (
                json_body(v),
                &[(header::CONTENT_TYPE, "application/json")][..],
            ),
            None => (empty(), &[][..]),
        };
        let response = self
            .send(method.clone(), path, body, headers, false)
            .await?;
        response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|source| DockerError::Http {
                socket: self.socket.display().to_string(),
                source,
            })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, DockerError> {
        let bytes = self.call(method.clone(), path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| DockerError::Decode {
            what: format!("{method} {}", path.split('?').next().unwrap_or(path)),
            detail: e.to_string(),
        })
    }

    pub async fn version(&self) -> Result<Version, DockerError> {
        self.get_json(Method::GET, "/version", None).await
    }

    pub async fn info(&self) -> Result<Info, DockerError> {
        self.get_json(Method::GET, "/info", None).await
    }

    /// Makes this daemon a one-node swarm's manager.
    pub async fn swarm_init(&self, advertise: &str, listen: &str) -> Result<(), DockerError> {
        let body = json!({ "AdvertiseAddr": advertise, "ListenAddr": listen });
        self.call(Method::POST, "/swarm/init", Some(&body)).await?;
        Ok(())
    }

    pub async fn swarm_join(
        &self,
        manager: &str,
        token: &str,
        advertise: &str,
        listen: &str,
    ) -> Result<(), DockerError> {
        let body = json!({
            "AdvertiseAddr": advertise,
            "ListenAddr": listen,
            "RemoteAddrs": [manager],
            "JoinToken": token,
        });
        self.call(Method::POST, "/swarm/join", Some(&body)).await?;
        Ok(())
    }

    pub async fn swarm_inspect(&self) -> Result<SwarmInspect, DockerError> {
        self.get_json(Method::GET, "/swarm", None).await
    }

    pub async fn swarm_leave(&self, force: bool) -> Result<(), DockerError> {
        let path = format!("/swarm/leave{}", query(&[("force", force.to_string())]));
        self.call(Method::POST, &path, None).await?;
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<Node>, DockerError> {
        self.get_json(Method::GET, "/nodes", None).await
    }

    /// Loads a docker-archive (`docker load`), streaming the file. The
    /// daemon reports a bad archive inside a 200 response, as a JSON message
    /// with `error`, so the whole answer is read and checked.
    pub async fn load_image(&self, archive: &Path) -> Result<(), DockerError> {
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(|source| DockerError::Io {
                what: format!("opening {}", archive.display()),
                source,
            })?;
        let chunks = futures_util::stream::unfold(file, |mut file| async move {
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Frame::data(Bytes::from(buf))), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        let body = BodyExt::boxed(StreamBody::new(chunks));
        let response = self
            .send(
                Method::POST,
                "/images/load?quiet=1",
                body,
                &[(header::CONTENT_TYPE, "application/x-tar")],
                false,
            )
            .await?;
        self.progress(response, "loading an image").await
    }

    /// Reads a streamed progress answer (load, push) to its end. Those
    /// report a failure inside a 200, as a JSON line with `error`, so a 200
    /// alone means nothing.
    async fn progress(&self, response: Response<Incoming>, what: &str) -> Result<(), DockerError> {
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|source| DockerError::Http {
                socket: self.socket.display().to_string(),
                source,
            })?;
        match progress_error(&bytes) {
            Some(message) => Err(DockerError::Failed {
                what: what.to_string(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Tags `source` (a name or an id) as `repo:tag` too.
    pub async fn image_tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), DockerError> {
        let path = format!(
            "/images/{source}/tag{}",
            query(&[("repo", repo.to_string()), ("tag", tag.to_string())])
        );
        self.call(Method::POST, &path, None).await?;
        Ok(())
    }

    /// Pushes `repo:tag` to the registry its name starts with, and waits
    /// until the push is done. No credentials: the registry header carries
    /// an empty auth config, which the API wants present.
    pub async fn image_push(&self, repo: &str, tag: &str) -> Result<(), DockerError> {
        let path = format!("/images/{repo}/push{}", query(&[("tag", tag.to_string())]));
        let response = self
            .send(
                Method::POST,
                &path,
                empty(),
                &[(header::HeaderName::from_static("x-registry-auth"), NO_AUTH)],
                false,
            )
            .await?;
        self.progress(response, &format!("pushing {repo}:{tag}"))
            .await
    }

    /// Whether an image of this name or id exists here.
    pub async fn image_exists(&self, name: &str) -> Result<bool, DockerError> {
        match self
            .call(Method::GET, &format!("/images/{name}/json"), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn images(&self, filters: &Value) -> Result<Vec<ImageSummary>, DockerError> {
        let path = format!("/images/json{}", query(&[("filters", filters.to_string())]));
        self.get_json(Method::GET, &path, None).await
    }

    pub async fn image_remove(&self, name: &str) -> Result<(), DockerError> {
        self.call(Method::DELETE, &format!("/images/{name}?force=1"), None)
            .await?;
        Ok(())
    }

    /// An attachable overlay network.
    pub async fn network_create(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, DockerError> {
        let body = json!({
            "Name": name,
            "Driver": "overlay",
            "Attachable": true,
            "CheckDuplicate": true,
            "Labels": labels,
        });
        let created: Created = self
            .get_json(Method::POST, "/networks/create", Some(&body))
            .await?;
        Ok(created.id)
    }

    pub async fn networks(&self, filters: &Value) -> Result<Vec<NetworkSummary>, DockerError> {
        let path = format!("/networks{}", query(&[("filters", filters.to_string())]));
        self.get_json(Method::GET, &path, None).await
    }

    pub async fn network_remove(&self, id: &str) -> Result<(), DockerError> {
        self.call(Method::DELETE, &format!("/networks/{id}"), None)
            .await?;
        Ok(())
    }

    pub async fn service_create(&self, spec: &Value) -> Result<String, DockerError> {
        let created: Created = self
            .get_json(Method::POST, "/services/create", Some(spec))
            .await?;
        Ok(created.id)
    }

    pub async fn service_inspect(&self, name: &str) -> Result<Service, DockerError> {
        self.get_json(Method::GET, &format!("/services/{name}"), None)
            .await
    }

    /// Replaces a service's spec. `version` is the index the caller read the
    /// service at; the daemon refuses the update if it has changed since
    /// (optimistic concurrency), rather than losing someone's change.
    pub async fn service_update(
        &self,
        id: &str,
        version: u64,
        spec: &Value,
    ) -> Result<(), DockerError> {
        let path = format!(
            "/services/{id}/update{}",
            query(&[("version", version.to_string())])
        );
        self.call(Method::POST, &path, Some(spec)).await?;
        Ok(())
    }

    pub async fn service_remove(&self, id: &str) -> Result<(), DockerError> {
        self.call(Method::DELETE, &format!("/services/{id}"), None)
            .await?;
        Ok(())
    }

    pub async fn services(&self, filters: &Value) -> Result<Vec<Service>, DockerError> {
        let path = format!("/services{}", query(&[("filters", filters.to_string())]));
        self.get_json(Method::GET, &path, None).await
    }

    pub async fn tasks(&self, filters: &Value) -> Result<Vec<Task>, DockerError> {
        let path = format!("/tasks{}", query(&[("filters", filters.to_string())]));
        self.get_json(Method::GET, &path, None).await
    }

    pub async fn task_inspect(&self, id: &str) -> Result<Task, DockerError> {
        self.get_json(Method::GET, &format!("/tasks/{id}"), None)
            .await
    }

    /// A service's output, stdout and stderr, each line prefixed with its
    /// time and with the task it came from (`details`). `since` is in Unix
    /// seconds; `follow` keeps the stream open for new lines and new tasks.
    pub async fn service_logs(
        &self,
        id: &str,
        since: f64,
        follow: bool,
    ) -> Result<LogStream, DockerError> {
        let path = format!(
            "/services/{id}/logs{}",
            query(&[
                ("stdout", "1".into()),
                ("stderr", "1".into()),
                ("timestamps", "1".into()),
                ("details", "1".into()),
                ("follow", if follow { "1" } else { "0" }.into()),
                ("since", format!("{since:.9}")),
            ])
        );
        let response = self.send(Method::GET, &path, empty(), &[], false).await?;
        Ok(LogStream {
            body: response.into_body(),
            demux: Demux::new(),
        })
    }

    pub async fn container_create(
        &self,
        name: &str,
        config: &Value,
    ) -> Result<String, DockerError> {
        let path = format!("/containers/create{}", query(&[("name", name.to_string())]));
        let created: Created = self.get_json(Method::POST, &path, Some(config)).await?;
        Ok(created.id)
    }

    /// Hijacks a connection for the container's stdin, stdout and stderr.
    /// Made before the start, so that no early output is lost.
    pub async fn container_attach(&self, id: &str) -> Result<Upgraded, DockerError> {
        let path = format!("/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1");
        let response = self.send(Method::POST, &path, empty(), &[], true).await?;
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|source| DockerError::Http {
                socket: self.socket.display().to_string(),
                source,
            })?;
        Ok(TokioIo::new(upgraded))
    }

    pub async fn container_start(&self, id: &str) -> Result<(), DockerError> {
        self.call(Method::POST, &format!("/containers/{id}/start"), None)
            .await?;
        Ok(())
    }

    /// Waits until the container is not running and returns its exit code;
    /// at once if it already ended.
    pub async fn container_wait(&self, id: &str) -> Result<i64, DockerError> {
        let result: WaitResult = self
            .get_json(
                Method::POST,
                &format!("/containers/{id}/wait?condition=not-running"),
                None,
            )
            .await?;
        Ok(result.status_code)
    }

    pub async fn container_resize(
        &self,
        id: &str,
        cols: u16,
        rows: u16,
    ) -> Result<(), DockerError> {
        let path = format!(
            "/containers/{id}/resize{}",
            query(&[("h", rows.to_string()), ("w", cols.to_string())])
        );
        self.call(Method::POST, &path, None).await?;
        Ok(())
    }

    pub async fn container_kill(&self, id: &str, signal: &str) -> Result<(), DockerError> {
        let path = format!(
            "/containers/{id}/kill{}",
            query(&[("signal", signal.to_string())])
        );
        self.call(Method::POST, &path, None).await?;
        Ok(())
    }

    /// SIGTERM (or the image's stop signal), then SIGKILL after `grace`
    /// seconds; returns once the container has stopped.
    pub async fn container_stop(&self, id: &str, grace: u64) -> Result<(), DockerError> {
        let path = format!(
            "/containers/{id}/stop{}",
            query(&[("t", grace.to_string())])
        );
        self.call(Method::POST, &path, None).await?;
        Ok(())
    }

    pub async fn container_inspect(&self, id: &str) -> Result<ContainerInspect, DockerError> {
        self.get_json(Method::GET, &format!("/containers/{id}/json"), None)
            .await
    }

    pub async fn container_remove(&self, id: &str) -> Result<(), DockerError> {
        self.call(Method::DELETE, &format!("/containers/{id}?force=1"), None)
            .await?;
        Ok(())
    }

    pub async fn containers(&self, filters: &Value) -> Result<Vec<ContainerSummary>, DockerError> {
        let path = format!(
            "/containers/json{}",
            query(&[("all", "1".into()), ("filters", filters.to_string())])
        );
        self.get_json(Method::GET, &path, None).await
    }
}

/// A multiplexed log response, read frame by frame.
pub struct LogStream {
    body: Incoming,
    demux: Demux,
}

impl LogStream {
    /// The next frame; `None` when the daemon ends the stream.
    pub async fn next(&mut self) -> Option<Result<(StreamKind, Bytes), DockerError>> {
        loop {
            if let Some(frame) = self.demux.next_frame() {
                return Some(Ok(frame));
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.demux.push(&data);
                    }
                }
                Err(e) => {
                    return Some(Err(DockerError::Decode {
                        what: "a log stream".to_string(),
                        detail: e.to_string(),
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            query(&[
                ("filters", r#"{"label":["a=b"]}"#.into()),
                ("x", "1".into())
            ]),
            "?filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D&x=1"
        );
    }

    #[test]
    fn progress_errors_are_found_in_a_200() {
        let pushed =
            b"{\"status\":\"The push refers to repository [10.0.0.1:5000/crew/shop]\"}\r\n\
            {\"status\":\"Pushed\",\"progressDetail\":{},\"id\":\"abc\"}\r\n\
            {\"status\":\"v1: digest: sha256:00 size: 528\"}\r\n";
        assert_eq!(progress_error(pushed), None);
        let refused = b"{\"status\":\"The push refers to repository [10.0.0.1:5000/crew/shop]\"}\n\
            {\"errorDetail\":{\"message\":\"Get \\\"https://10.0.0.1:5000/v2/\\\": connection refused\"},\
            \"error\":\"Get \\\"https://10.0.0.1:5000/v2/\\\": connection refused\"}\n";
        assert_eq!(
            progress_error(refused).as_deref(),
            Some("Get \"https://10.0.0.1:5000/v2/\": connection refused")
        );
        assert_eq!(progress_error(b"not json\n"), None);
    }

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
