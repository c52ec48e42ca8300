//! The router's place on an app's overlay network.
//!
//! crew's router is a process on the manager, not a container, and only
//! containers join overlay networks. So each app gets a gateway container,
//! `crew-APP-router`, on its network and on this node, that runs nothing
//! ([`spec::gateway_config`]); crew enters its network namespace with a
//! [`NetworkNamespace`] and makes the router's sockets to the web tasks
//! there. Those connections leave from the app's network, straight to each
//! task's address on it, on any node: no published port, no ingress mesh.
//!
//! Entering a namespace needs root (`CAP_SYS_ADMIN`). A server that may not,
//! or whose daemon's processes are not on this machine, reaches web tasks at
//! their host-mode published ports instead; [`Gateway::namespace`] answers
//! `None` then, and says why once.

use std::sync::{Arc, Mutex};

use crew_runtime::NetworkNamespace;

use crate::SwarmError;
use crate::docker::Docker;
use crate::spec::{self, gateway_name};

pub(crate) struct Gateway {
    app: String,
    /// Off: the router stays on published ports.
    enabled: bool,
    joined: Mutex<Joined>,
}

enum Joined {
    No,
    Yes {
        container: String,
        namespace: Arc<NetworkNamespace>,
    },
    /// The namespace cannot be entered from here; not tried again.
    Refused,
}

impl Gateway {
    pub(crate) fn new(app: &str, enabled: bool) -> Gateway {
        Gateway {
            app: app.to_string(),
            enabled,
            joined: Mutex::new(Joined::No),
        }
    }

    /// Makes the gateway from `image` if it is not there, and starts it if
    /// it is not running.
    pub(crate) async fn ensure(&self, docker: &Docker, image: &str) -> Result<(), SwarmError> {
        if !self.enabled || matches!(*lock(&self.joined), Joined::Refused) {
            return Ok(());
        }
        let name = gateway_name(&self.app);
        let running = match docker.container_inspect(&name).await {
            Ok(found) => found.state.running,
            Err(e) if e.is_not_found() => {
                docker
                    .container_create(&name, &spec::gateway_config(&self.app, image))
                    .await?;
                false
            }
            Err(e) => return Err(e.into()),
        };
        if !running {
            docker.container_start(&name).await?;
        }
        Ok(())
    }

    /// The namespace the app's network is reached from: the gateway's,
    /// entered once and kept while the gateway's process lives. A gateway
    /// that is missing is made from `image`, when there is one; one that
    /// stopped is started. `None` while there is no gateway yet, and for
    /// good once entering turned out not to be allowed.
    pub(crate) async fn namespace(
        &self,
        docker: &Docker,
        image: Option<&str>,
    ) -> Option<Arc<NetworkNamespace>> {
        if !self.enabled {
            return None;
        }
        match &*lock(&self.joined) {
            Joined::Refused => return None,
            Joined::Yes {
                container,
                namespace,
            } if owner(namespace.pid(), container) == Owner::Container => {
                return Some(namespace.clone());
            }
            _ => {}
        }
        let name = gateway_name(&self.app);
        let found = match docker.container_inspect(&name).await {
            Ok(found) if found.state.running && found.state.pid != 0 => found,
            Ok(_) => {
                let _ = docker.container_start(&name).await;
                return None;
            }
            Err(e) if e.is_not_found() => {
                if let Some(image) = image
                    && let Err(e) = self.ensure(docker, image).await
                {
                    tracing::warn!("making {}'s router gateway: {e}", self.app);
                }
                return None;
            }
            Err(e) => {
                tracing::debug!("reading {}'s router gateway: {e}", self.app);
                return None;
            }
        };
        let pid = found.state.pid;
        match owner(pid, &found.id) {
            Owner::Container => {}
            // It ended since the daemon said; the next poll looks again.
            Owner::Gone => return None,
            Owner::Other => {
                let why = format!(
                    "process {pid} on this machine is not the gateway container's \
                     (is the daemon on another machine, or in another pid namespace?)"
                );
                self.refuse(docker, &why).await;
                return None;
            }
        }
        match NetworkNamespace::of_process(pid) {
            Ok(namespace) => {
                let namespace = Arc::new(namespace);
                *lock(&self.joined) = Joined::Yes {
                    container: found.id,
                    namespace: namespace.clone(),
                };
                Some(namespace)
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let why = format!("entering its network namespace: {e} (needs root)");
                self.refuse(docker, &why).await;
                None
            }
            Err(e) => {
                tracing::debug!("entering {}'s router gateway: {e}", self.app);
                None
            }
        }
    }

    /// Gives up on the network for good, and removes the gateway, which is
    /// of no use then.
    async fn refuse(&self, docker: &Docker, why: &str) {
        tracing::warn!(
            "the router cannot join {}'s network {}: {why}; it reaches web dynos at \
             their nodes' published ports instead",
            self.app,
            spec::network_name(&self.app)
        );
        *lock(&self.joined) = Joined::Refused;
        let _ = docker.container_remove(&gateway_name(&self.app)).await;
    }

    /// Removes the gateway, whatever its state.
    pub(crate) async fn remove(&self, docker: &Docker) {
        let _ = docker.container_remove(&gateway_name(&self.app)).await;
        let mut joined = lock(&self.joined);
        if matches!(*joined, Joined::Yes { .. }) {
            *joined = Joined::No;
        }
    }
}

/// Whose process `pid` is, on this machine.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    /// The container's: its cgroup path names the container, whichever
    /// cgroup driver the daemon uses.
    Container,
    /// Something else's.
    Other,
    /// No process has that pid.
    Gone,
}

fn owner(pid: u32, container: &str) -> Owner {
    match std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
        Ok(cgroups) if !container.is_empty() && cgroups.contains(container) => Owner::Container,
        Ok(_) => Owner::Other,
        Err(_) => Owner::Gone,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_is_the_container_s_only_when_its_cgroup_names_it() {
        let me = std::process::id();
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").expect("our cgroups");
        // The last part of our own cgroup path stands in for a container id.
        let named = cgroups
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .find(|part| !part.is_empty());
        if let Some(named) = named {
            assert_eq!(owner(me, named), Owner::Container);
        }
        assert_eq!(
            owner(
                me,
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            ),
            Owner::Other
        );
        assert_eq!(owner(me, ""), Owner::Other, "an empty id names nothing");
        // Pids are at most 2^22 on Linux.
        assert_eq!(owner(u32::MAX - 1, "abc"), Owner::Gone);
    }
}
