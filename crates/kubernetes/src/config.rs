//! [`KubernetesConfig`]: how a placement reaches the cluster and names
//! things on it. Its own file: it is the placement's whole input from the
//! server, besides the client.

use std::path::PathBuf;
use std::time::Duration;

/// How a placement reaches the cluster and names things on it.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// The registry the release images are pulled from: a release's image is
    /// `REGISTRY/crew/APP:vN`, or `crew/APP:vN` (what `crew export image`
    /// tags) without one. `HOST[:PORT][/PATH]`; an `http://` or `https://`
    /// in front says how to push (see [`crew_cluster::registry`]) and is not
    /// part of the image's name.
    pub registry: Option<String>,
    /// The stack as a root filesystem tar (or tar.gz), laid under the slug in
    /// every release's image. With a registry too, each release's image is
    /// built and pushed there before its Deployments are applied; without
    /// either, the images must reach the cluster some other way.
    pub base_rootfs: Option<PathBuf>,
    /// An app's namespace is `PREFIX-APP`; `crew` by default, as `crew export
    /// kubernetes` writes.
    pub namespace_prefix: String,
    /// How often the log task lists the pods.
    pub poll_interval: Duration,
    /// How long `destroy` waits for the namespace to be gone.
    pub destroy_timeout: Duration,
    /// How long an attached one-off's pod may take to run (scheduling, the
    /// image pull) before `crew run` gives up.
    pub attach_timeout: Duration,
    /// How often an attached one-off's pod is looked at while crew waits for
    /// it to run and, after the session, for its exit code.
    pub attach_poll: Duration,
    /// Reach web pods through the API server's `pods/portforward` from
    /// loopback listeners, instead of at their IPs: for a crew server
    /// outside the cluster's network (see the `port_forward` module).
    pub port_forward: bool,
}

impl Default for KubernetesConfig {
    fn default() -> KubernetesConfig {
        KubernetesConfig {
            registry: None,
            base_rootfs: None,
            namespace_prefix: "crew".to_string(),
            poll_interval: Duration::from_secs(3),
            destroy_timeout: Duration::from_secs(120),
            attach_timeout: Duration::from_secs(300),
            attach_poll: Duration::from_millis(500),
            port_forward: false,
        }
    }
}

impl KubernetesConfig {
    /// The image of one release of `app`.
    pub fn image(&self, app: &str, version: u32) -> String {
        match self
            .registry
            .as_deref()
            .map(crew_cluster::registry::reference_name)
        {
            Some(registry) if !registry.is_empty() => format!("{registry}/crew/{app}:v{version}"),
            _ => format!("crew/{app}:v{version}"),
        }
    }
}
