//! Networks: the app's attachable overlay, listed and removed.

use std::collections::BTreeMap;

use hyper::Method;
use serde_json::{Value, json};

use super::objects::{Created, NetworkSummary};
use super::transport::query;
use super::{Docker, DockerError};

impl Docker {
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
}
