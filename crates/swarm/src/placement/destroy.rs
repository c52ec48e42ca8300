//! Tearing an app down on a swarm: the gateway, the services, their
//! containers on every daemon, the network and the images, each waited
//! for as long as Swarm takes to let go of it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::app::{SwarmApp, lock};
use crate::docker::label_filter;
use crate::spec::{LABEL_APP, network_name};

impl SwarmApp {
    pub(super) async fn destroy(&self) {
        self.stop_background();
        // Before the containers are waited for: it never ends by itself.
        self.gateway.remove(&self.docker).await;
        let app = label_filter(LABEL_APP, &self.app);
        if let Ok(services) = self.docker.services(&app).await {
            for s in services {
                let _ = self.docker.service_remove(&s.id).await;
            }
        }
        // Removing a service stops its tasks with their grace; wait for the
        // containers (attached one-offs' too) to be gone.
        let deadline =
            tokio::time::Instant::now() + self.config.stop_grace + Duration::from_secs(15);
        let mut daemons = vec![self.docker.clone()];
        daemons.extend(self.config.image_nodes.iter().cloned());
        for docker in &daemons {
            loop {
                // The containers of tasks that have ended (the history Swarm
                // keeps too) would go only when Swarm's reaper gets to them:
                // they are removed now, and only running ones waited for.
                let mut left = Vec::new();
                for c in docker.containers(&app).await.unwrap_or_default() {
                    if matches!(c.state.as_str(), "exited" | "dead" | "created") {
                        let _ = docker.container_remove(&c.id).await;
                    } else {
                        left.push(c);
                    }
                }
                if left.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    for c in left {
                        let _ = docker.container_remove(&c.id).await;
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        // The network detaches from the tasks lazily; try for a while.
        let network = network_name(&self.app);
        for _ in 0..40 {
            match self
                .docker
                .networks(&json!({ "name": [network.clone()] }))
                .await
            {
                Ok(found) => {
                    let Some(n) = found.iter().find(|n| n.name == network) else {
                        break;
                    };
                    if self.docker.network_remove(&n.id).await.is_ok() {
                        break;
                    }
                }
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for docker in &daemons {
            if let Ok(images) = docker.images(&app).await {
                for image in images {
                    let _ = docker.image_remove(&image.id).await;
                }
            }
        }
        lock(&self.pushed).clear();
        *self.applied.lock().await = None;
        self.backends.send_replace(Arc::new(Vec::new()));
    }
}
