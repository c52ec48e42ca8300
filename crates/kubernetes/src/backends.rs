//! Where crew's router sends an app's requests on Kubernetes: the pods behind
//! the web Service, as its EndpointSlices list them (research §4.2).
//!
//! The EndpointSlice controller keeps, for the Service `APP-web`, slices
//! labelled `kubernetes.io/service-name=APP-web` with one endpoint per pod
//! that has an IP: its address, the Service's target port (the web
//! container's `http`, `PORT`), and its conditions. crew polls them (the
//! same choice as for logs: no watch, no resourceVersion bookkeeping) and
//! publishes each endpoint as a [`WebBackend`]:
//!
//! | endpoint | backend |
//! |---|---|
//! | `ready` (unset counts as ready, as the API says) | up |
//! | not ready, not `terminating` (booting: its PORT does not answer yet) | starting |
//! | not ready, `terminating` (being stopped) | down: no new requests |
//!
//! A backend is named as `ps` names the pod (`web.2`), from the endpoint's
//! `targetRef`; the pods are listed again only when the set of endpoints or
//! their terminating state changed, since that is what moves the numbers.
//!
//! Pod IPs are only reachable from inside the cluster's network: they are
//! for a crew server that runs in the cluster or on a node. A server
//! elsewhere sets [`crate::KubernetesConfig::port_forward`]: each backend is
//! then a loopback address whose connections go to the pod through the API
//! server ([`crate::port_forward`]), and an endpoint without a pod to
//! forward to is left out.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crew_cluster::PORT;
use crew_engine::{DynoState, WebBackend};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pods::{self, TypeInfo};
use crate::port_forward::Forwards;

/// The label the EndpointSlice controller puts on a Service's slices.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The web Service's port name, which its slices carry.
const HTTP: &str = "http";

/// One endpoint, before it has a dyno's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub pod: Option<String>,
    pub addr: SocketAddr,
    pub state: DynoState,
    pub terminating: bool,
}

/// Reads the slices and publishes the backends; keeps the pods' dyno names
/// between reads.
pub(crate) struct Poller {
    pub slices: Api<EndpointSlice>,
    pub pods: Api<Pod>,
    /// `APP-web`.
    pub service: String,
    /// Selects the app's pods, for their `ps` names.
    pub pod_selector: String,
    pub types: Arc<Mutex<Vec<(String, TypeInfo)>>>,
    pub backends: watch::Sender<Arc<Vec<WebBackend>>>,
    /// Where pods are reached through the API server instead of at their IPs.
    forwards: Option<Forwards>,
    /// Pod name → dyno name, as of the last pod list.
    names: HashMap<String, String>,
    /// The endpoints (pod, terminating) that list was for.
    named_for: BTreeSet<(String, bool)>,
}

impl Poller {
    pub(crate) fn new(
        slices: Api<EndpointSlice>,
        pods: Api<Pod>,
        service: String,
        pod_selector: String,
        types: Arc<Mutex<Vec<(String, TypeInfo)>>>,
        backends: watch::Sender<Arc<Vec<WebBackend>>>,
        forwards: Option<Forwards>,
    ) -> Poller {
        Poller {
            slices,
            pods,
            service,
            pod_selector,
            types,
            backends,
            forwards,
            names: HashMap::new(),
            named_for: BTreeSet::new(),
        }
    }

    /// Reads the slices once and publishes what changed.
    pub(crate) async fn refresh(&mut self) -> Result<(), kube::Error> {
        let slices = self
            .slices
            .list(&ListParams::default().labels(&format!("{SERVICE_NAME}={}", self.service)))
            .await?;
        let endpoints = endpoints(&slices.items);
        let key: BTreeSet<(String, bool)> = endpoints
            .iter()
            .filter_map(|e| Some((e.pod.clone()?, e.terminating)))
            .collect();
        if key != self.named_for {
            if key.is_empty() {
                self.names.clear();
            } else {
                let list = self
                    .pods
                    .list(&ListParams::default().labels(&self.pod_selector))
                    .await?;
                let types = self.types.lock().unwrap_or_else(|p| p.into_inner()).clone();
                self.names = pods::dynos(&list.items, &types)
                    .into_iter()
                    .map(|d| (d.pod, d.info.name))
                    .collect();
            }
            self.named_for = key;
        }
        let mut list: Vec<WebBackend> = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let addr = match (&mut self.forwards, &e.pod) {
                (None, _) => e.addr,
                (Some(forwards), Some(pod)) => {
                    match forwards.local_addr(pod, e.addr.port()).await {
                        Ok(addr) => addr,
                        Err(error) => {
                            tracing::warn!("a loopback port to forward to pod {pod}: {error}");
                            continue;
                        }
                    }
                }
                (Some(_), None) => continue,
            };
            list.push(WebBackend {
                // A pod crew does not know yet (made after the list) shows
                // under its own name until the next list.
                name: match &e.pod {
                    Some(pod) => self.names.get(pod).cloned().unwrap_or_else(|| pod.clone()),
                    None => e.addr.to_string(),
                },
                addr,
                state: e.state,
                // The router runs where pod addresses are routed, or reaches
                // them through loopback.
                namespace: None,
                requests: Default::default(),
            });
        }
        if let Some(forwards) = &mut self.forwards {
            let live = &self.named_for;
            forwards.retain(|pod| live.iter().any(|(p, _)| p == pod));
        }
        list.sort_by(|a, b| (&a.name, a.addr).cmp(&(&b.name, b.addr)));
        self.publish(list);
        Ok(())
    }

    /// Sends `list` when it differs from what receivers have, so that the
    /// router wakes only for a change.
    pub(crate) fn publish(&self, list: Vec<WebBackend>) {
        self.backends.send_if_modified(|old| {
            if **old == list {
                false
            } else {
                *old = Arc::new(list);
                true
            }
        });
    }
}

/// Polls every `interval` until aborted. The first read is the apply's.
pub(crate) fn spawn(poller: Arc<tokio::sync::Mutex<Poller>>, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(error) = poller.lock().await.refresh().await {
                // The last list stays: a cluster that does not answer for a
                // moment has not stopped its pods.
                tracing::debug!(%error, "listing the web Service's EndpointSlices");
            }
        }
    })
}

/// Every endpoint with an IP, each pod once: a dual-stack Service has a
/// slice per address family, and the IPv4 one is taken first.
pub(crate) fn endpoints(slices: &[EndpointSlice]) -> Vec<Endpoint> {
    let mut slices: Vec<&EndpointSlice> = slices
        .iter()
        .filter(|s| s.address_type == "IPv4" || s.address_type == "IPv6")
        .collect();
    slices.sort_by_key(|s| s.address_type != "IPv4");
    let mut seen_pods = BTreeSet::new();
    let mut out = Vec::new();
    for slice in slices {
        let port = port(slice);
        for endpoint in &slice.endpoints {
            // The API says consumers use the first address; the others are
            // the same pod's and not to be balanced across.
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
                .and_then(|r| r.name.clone());
            if let Some(pod) = &pod
                && !seen_pods.insert(pod.clone())
            {
                continue;
            }
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let state = match (ready, terminating) {
                (true, _) => DynoState::Up,
                (false, false) => DynoState::Starting,
                (false, true) => DynoState::Down,
            };
            out.push(Endpoint {
                pod,
                addr: SocketAddr::new(ip, port),
                state,
                terminating,
            });
        }
    }
    out
}

/// The slice's `http` port; its only port when unnamed; `PORT` otherwise.
fn port(slice: &EndpointSlice) -> u16 {
    let ports = slice.ports.as_deref().unwrap_or(&[]);
    let chosen = ports
        .iter()
        .find(|p| p.name.as_deref() == Some(HTTP))
        .or(match ports {
            [only] => Some(only),
            _ => None,
        });
    chosen
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).expect("a slice")
    }

    fn endpoint(ip: &str, pod: &str, conditions: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "addresses": [ip],
            "conditions": conditions,
            "targetRef": {"kind": "Pod", "name": pod, "namespace": "crew-shop"},
        })
    }

    #[test]
    fn conditions_map_to_states() {
        let s = slice(serde_json::json!({
            "metadata": {"name": "shop-web-abc"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 5000, "protocol": "TCP"}],
            "endpoints": [
                endpoint("10.0.0.1", "a", serde_json::json!({"ready": true, "serving": true, "terminating": false})),
                endpoint("10.0.0.2", "b", serde_json::json!({"ready": false, "serving": false, "terminating": false})),
                endpoint("10.0.0.3", "c", serde_json::json!({"ready": false, "serving": true, "terminating": true})),
                endpoint("10.0.0.4", "d", serde_json::json!({})),
            ],
        }));
        let got: Vec<(String, DynoState)> = endpoints(&[s])
            .into_iter()
            .map(|e| (e.addr.to_string(), e.state))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1:5000".to_string(), DynoState::Up),
                ("10.0.0.2:5000".to_string(), DynoState::Starting),
                ("10.0.0.3:5000".to_string(), DynoState::Down),
                ("10.0.0.4:5000".to_string(), DynoState::Up),
            ]
        );
    }

    #[test]
    fn a_dual_stack_pod_is_one_backend_on_ipv4_and_fqdn_slices_are_skipped() {
        let v6 = slice(serde_json::json!({
            "metadata": {"name": "v6"}, "addressType": "IPv6",
            "ports": [{"name": "http", "port": 5000}],
            "endpoints": [endpoint("fd00::1", "a", serde_json::json!({"ready": true}))],
        }));
        let v4 = slice(serde_json::json!({
            "metadata": {"name": "v4"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 5000}],
            "endpoints": [endpoint("10.0.0.1", "a", serde_json::json!({"ready": true}))],
        }));
        let fqdn = slice(serde_json::json!({
            "metadata": {"name": "f"}, "addressType": "FQDN",
            "endpoints": [endpoint("a.example", "x", serde_json::json!({"ready": true}))],
        }));
        let got: Vec<String> = endpoints(&[v6, fqdn, v4])
            .into_iter()
            .map(|e| e.addr.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.1:5000"]);
    }

    #[test]
    fn the_port_is_the_http_one_or_the_only_one_or_port() {
        let with = |ports: serde_json::Value| {
            port(&slice(serde_json::json!({
                "metadata": {}, "addressType": "IPv4", "endpoints": [], "ports": ports,
            })))
        };
        assert_eq!(
            with(
                serde_json::json!([{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}])
            ),
            8080
        );
        assert_eq!(with(serde_json::json!([{"port": 8081}])), 8081);
        assert_eq!(
            with(serde_json::json!([{"name": "a", "port": 1}, {"name": "b", "port": 2}])),
            PORT
        );
        assert_eq!(with(serde_json::json!([])), PORT);
    }
}
