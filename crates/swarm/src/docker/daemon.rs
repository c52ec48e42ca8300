//! The daemon and its swarm: version, info, init, join and leave, and the
//! swarm's nodes.

use hyper::Method;
use serde_json::json;

use super::objects::{Info, Node, SwarmInspect, Version};
use super::transport::query;
use super::{Docker, DockerError};

impl Docker {
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
}
