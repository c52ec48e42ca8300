//! Web pods reached through the API server, for a crew server outside the
//! cluster's network.
//!
//! Pod IPs are routed only inside the cluster. With
//! [`crate::KubernetesConfig::port_forward`], each web pod gets a listener
//! on this machine's loopback, and each connection made to it is carried to
//! the pod's `PORT` over the API server's `pods/portforward` (one WebSocket
//! per connection, the way `kubectl port-forward` carries each of its
//! connections). The router keeps its connections to dynos alive, so the
//! handshake is paid once per kept connection, not once per request. It is
//! slower than reaching pod IPs directly, and every byte passes through the
//! API server; it is for when nothing else reaches the pods.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The open listeners, by pod and port.
pub(crate) struct Forwards {
    pods: Api<Pod>,
    open: HashMap<(String, u16), Forward>,
}

/// One pod's port, on loopback.
struct Forward {
    addr: SocketAddr,
    listener: JoinHandle<()>,
}

impl Drop for Forward {
    /// Stops accepting; connections already carried go on until they end.
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Forwards {
    pub(crate) fn new(pods: Api<Pod>) -> Forwards {
        Forwards {
            pods,
            open: HashMap::new(),
        }
    }

    /// The loopback address that reaches `pod`'s `port`; the first ask
    /// opens its listener.
    pub(crate) async fn local_addr(&mut self, pod: &str, port: u16) -> std::io::Result<SocketAddr> {
        let key = (pod.to_string(), port);
        if let Some(forward) = self.open.get(&key) {
            return Ok(forward.addr);
        }
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept(listener, self.pods.clone(), pod.to_string(), port));
        self.open.insert(
            key,
            Forward {
                addr,
                listener: task,
            },
        );
        Ok(addr)
    }

    /// Closes the listeners of the pods not in `keep`.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.open.retain(|(pod, _), _| keep(pod));
    }
}

async fn accept(listener: TcpListener, pods: Api<Pod>, pod: String, port: u16) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of file descriptors, most likely: let connections end.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(carry(client, pods.clone(), pod.clone(), port));
    }
}

/// Carries one connection to the pod and back. A forward the API server
/// refuses closes the connection unanswered, which the router reports as
/// it does a dyno that closed without a response.
async fn carry(mut client: TcpStream, pods: Api<Pod>, pod: String, port: u16) {
    let mut forwarder = match pods.portforward(&pod, &[port]).await {
        Ok(forwarder) => forwarder,
        Err(e) => {
            tracing::warn!("port-forward to pod {pod} port {port}: {e}");
            return;
        }
    };
    if let Some(mut upstream) = forwarder.take_stream(port) {
        let _ = client.set_nodelay(true);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!("port-forward to pod {pod} port {port}: {e}");
        }
    }
    if let Err(e) = forwarder.join().await {
        tracing::debug!("port-forward to pod {pod} port {port} ended: {e}");
    }
}
