//! Containers on this daemon: create, attach, start, wait, resize, signal,
//! stop, inspect, remove and list. Used for what Swarm cannot do with a
//! task: an attached one-off, a release command, the router's gateway.

use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::objects::{ContainerInspect, ContainerSummary, Created, WaitResult};
use super::transport::{empty, query};
use super::{Docker, DockerError, Upgraded};

impl Docker {
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
