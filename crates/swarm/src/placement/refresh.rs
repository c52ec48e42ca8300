//! The poller: reads the app's services and tasks every poll interval (and
//! whenever `ps`, an apply or a one-dyno restart needs them now), and turns
//! each read into the dynos, the router's backends, a log follower per
//! service and the lifecycle lines. What a read means is `view.rs`'s, as
//! pure functions; this file does the reading and the writing.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use super::app::{SwarmApp, lock};
use super::logs::follow;
use super::view::{self, TaskSnapshot, dynos_from_tasks, lifecycle_lines};
use crate::docker::{DockerError, Service};
use crate::spec::{LABEL_TYPE, RUN_TYPE};

/// Refreshes `shared` every poll interval, for as long as the placement
/// lives (it aborts this task when it goes).
pub(super) async fn poll(shared: Arc<SwarmApp>) {
    loop {
        if let Err(e) = shared.refresh().await {
            tracing::debug!("reading {}'s tasks: {e}", shared.app);
        }
        tokio::time::sleep(shared.config.poll_interval).await;
    }
}

impl SwarmApp {
    /// Reads the app's services and tasks once: the dynos for `ps`, the web
    /// backends, a log follower per service, and the lifecycle lines of
    /// whatever changed since the last read.
    pub(super) async fn refresh(self: &Arc<Self>) -> Result<(), DockerError> {
        let _one = self.refreshing.lock().await;
        let services = self.services().await?;
        let local = self.local_node().await?;
        self.follow_services(&services);
        let names: Vec<&str> = services.iter().map(Service::name).collect();
        let tasks = if names.is_empty() {
            Vec::new()
        } else {
            self.docker.tasks(&json!({ "service": names })).await?
        };

        let commands: HashMap<String, String> = services
            .iter()
            .map(|s| (s.id.clone(), self.command_of(s)))
            .collect();
        let read = dynos_from_tasks(&services, &tasks, &commands);
        let backends = self.web_backends(&read.web_tasks, &local).await;

        let lines = {
            let mut snapshot = lock(&self.snapshot);
            let lines = lifecycle_lines(&snapshot, &tasks, &read, self.config.boot_timeout);
            *snapshot = TaskSnapshot {
                dynos: read.dynos,
                task_dynos: read.task_dynos,
                seen: view::states(&tasks),
                primed: true,
            };
            lines
        };
        let backends = Arc::new(backends);
        self.backends.send_if_modified(|old| {
            if **old == *backends {
                false
            } else {
                *old = backends.clone();
                true
            }
        });
        for (dyno, text) in lines {
            self.log_lifecycle(&dyno, text).await;
        }
        Ok(())
    }

    /// A log follower for each of `services` that has none (one-offs'
    /// watchers follow their own), and none for services that are gone.
    fn follow_services(self: &Arc<Self>, services: &[Service]) {
        let mut followers = lock(&self.followers);
        followers.retain(|id, task| !task.is_finished() && services.iter().any(|s| &s.id == id));
        for service in services {
            if service.label(LABEL_TYPE) != Some(RUN_TYPE) && !followers.contains_key(&service.id) {
                let task = tokio::spawn(follow(self.clone(), service.id.clone()));
                followers.insert(service.id.clone(), task);
            }
        }
    }
}
