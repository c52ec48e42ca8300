//! The router's backends on a swarm: each running web task, reached at its
//! address on the app's overlay from the gateway's namespace, or, where the
//! router is not on the network, at the port it publishes in host mode on
//! its node. Its own file because it is the one part of a read that needs
//! more than the tasks: the gateway, and the other nodes' addresses.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crew_cluster::PORT;
use crew_engine::{DynoState, WebBackend};

use super::app::{NODE_ADDRS_MAX_AGE, SwarmApp, lock};
use super::view::short_id;
use crate::docker::Task;
use crate::spec::network_name;

impl SwarmApp {
    /// The addresses of `nodes` (ids), from the cache, or from `/nodes` when
    /// one is missing or the cache is old. A node without a usable address
    /// is left out; so are all of them if the swarm cannot be read and
    /// nothing was cached.
    async fn node_addresses(&self, nodes: &BTreeSet<&str>) -> HashMap<String, IpAddr> {
        {
            let cache = lock(&self.node_addrs);
            let fresh = cache
                .read_at
                .is_some_and(|at| at.elapsed() < NODE_ADDRS_MAX_AGE);
            let known = |n: &str| cache.addrs.contains_key(n) || cache.without.contains(n);
            if fresh && nodes.iter().all(|n| known(n)) {
                return cache.addrs.clone();
            }
        }
        match self.docker.nodes().await {
            Ok(list) => {
                let mut addrs = HashMap::new();
                let mut without = BTreeSet::new();
                for node in &list {
                    match node.ip() {
                        Some(ip) => {
                            addrs.insert(node.id.clone(), ip);
                        }
                        None => {
                            without.insert(node.id.clone());
                            tracing::warn!(
                                "node {} reports no usable address ({:?}); its web tasks get no traffic",
                                short_id(&node.id),
                                node.status.addr
                            );
                        }
                    }
                }
                let mut cache = lock(&self.node_addrs);
                cache.addrs = addrs;
                cache.without = without;
                cache.read_at = Some(tokio::time::Instant::now());
                cache.addrs.clone()
            }
            Err(e) => {
                tracing::debug!("reading the swarm's nodes: {e}");
                lock(&self.node_addrs).addrs.clone()
            }
        }
    }

    /// The router's backends for the running web tasks: each task's address
    /// on the app's network, reached from the gateway's namespace; or, where
    /// the router is not on the network, the port the task publishes in host
    /// mode on its node.
    pub(super) async fn web_backends(
        &self,
        web_tasks: &[(Arc<str>, &Task)],
        local: &str,
    ) -> Vec<WebBackend> {
        if web_tasks.is_empty() {
            return Vec::new();
        }
        // Held while a release is applied (which makes the gateway itself)
        // or scaled; the next poll makes it then, if it is still missing.
        let image = match self.applied.try_lock() {
            Ok(applied) => applied.as_ref().map(|a| self.image(&a.release)),
            Err(_) => None,
        };
        let namespace = self.gateway.namespace(&self.docker, image.as_deref()).await;
        let network = network_name(&self.app);
        // Host-mode ports listen on every interface of their node. This
        // node is the one behind the socket, so on this machine: loopback
        // reaches it whatever its advertised address, and needs no route.
        // Other nodes are reached at the address the swarm knows them by.
        let remote: BTreeSet<&str> = web_tasks
            .iter()
            .filter(|(_, task)| namespace.is_none() || task.address_on(&network).is_none())
            .filter_map(|(_, task)| task.node_id.as_deref())
            .filter(|node| *node != local)
            .collect();
        let addrs = if remote.is_empty() {
            HashMap::new()
        } else {
            self.node_addresses(&remote).await
        };
        let mut backends = Vec::new();
        for (name, task) in web_tasks {
            let on_network = namespace
                .as_ref()
                .and_then(|ns| Some((task.address_on(&network)?, ns.clone())));
            let (addr, namespace) = match on_network {
                Some((ip, namespace)) => (SocketAddr::new(ip, PORT), Some(namespace)),
                None => {
                    let (Some(port), Some(node)) =
                        (task.published_port(PORT), task.node_id.as_deref())
                    else {
                        continue;
                    };
                    let ip = if node == local {
                        IpAddr::V4(Ipv4Addr::LOCALHOST)
                    } else {
                        match addrs.get(node) {
                            Some(ip) => *ip,
                            None => continue,
                        }
                    };
                    (SocketAddr::new(ip, port), None)
                }
            };
            backends.push(WebBackend {
                name: name.to_string(),
                addr,
                state: DynoState::Up,
                namespace,
                requests: Default::default(),
            });
        }
        backends.sort_by(|a, b| (&a.name, a.addr).cmp(&(&b.name, b.addr)));
        backends
    }
}
