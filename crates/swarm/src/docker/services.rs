//! Services and their tasks: create, inspect, update, remove and list, and
//! a service's logs as a stream of frames.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use hyper::body::Incoming;
use serde_json::Value;

use super::objects::{Created, Service, Task};
use super::transport::{empty, query};
use super::{Docker, DockerError};
use crate::mux::{Demux, StreamKind};

impl Docker {
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
