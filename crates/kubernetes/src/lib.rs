//! One app's dynos on a Kubernetes cluster: a [`crew_engine::Placement`]
//! over the cluster's API, with kube-rs.
//!
//! Theory of operation. crew's platform keeps the truth about an app (releases,
//! config, formation) in its own store; this placement only makes the cluster
//! match it, with the objects `crew_cluster::kubernetes` builds (research
//! §4.2), and reads the cluster back for `ps`, logs and the router. Nothing
//! is cached that the cluster knows better: `ps` lists the pods each time.
//!
//! - **the image**: with a registry and a base root filesystem in its
//!   config, an apply first builds the release's image (the slug at `/app`
//!   over the base, as `crew_cluster::image` writes it) and pushes it to the
//!   registry as `REGISTRY/crew/APP:vN` ([`crew_cluster::registry`]), once
//!   per release: a registry that already has that manifest is left alone,
//!   and blobs it has are not sent. Only then are the Deployments applied,
//!   so no pod is made before its image can be pulled.
//! - **apply** is server-side apply, with crew as the one field manager and
//!   `force`, of the namespace `crew-APP`, the release's immutable Secret
//!   `APP-config-vN`, a Deployment `APP-TYPE` per type and the Service
//!   `APP-web`; then the Deployments of types the release no longer has (and
//!   the Service, when `web` went) are deleted, and so are older releases'
//!   Secrets that no Deployment, live ReplicaSet, Job or pod still names
//!   ([`secrets`]). The Deployments' `replicas` are part of what crew
//!   applies: the platform hands every apply the whole formation, so the
//!   applied count is always the current one, and a first apply never starts
//!   a worker that the formation has at zero (a Deployment created without
//!   replicas gets one pod until it is scaled). Between
//!   applies, `scale` writes `replicas` through the scale subresource; the next
//!   apply takes the field back with the same number, which `force` allows
//!   without a conflict.
//! - **scale** merge-patches `spec.replicas` through the scale subresource.
//! - **restart** of a type (or of everything) patches the pod template's
//!   `kubectl.kubernetes.io/restartedAt` annotation, as `kubectl rollout
//!   restart` does: the Deployment rolls its pods, web new-before-old. Of one
//!   dyno, it deletes that pod and the Deployment makes a new one.
//! - **stop** of a type scales it to zero; the formation keeps its count, and
//!   a restart or the next apply brings it back. Of one dyno, it deletes the
//!   pod, which its Deployment replaces at once, as Heroku does with `ps:stop`
//!   of a dyno in a formation. Of a one-off, it deletes the Job.
//! - **ps** lists the app's pods and maps them with [`pods::state`]; names are
//!   synthesised (`web.1` by age), since Deployments have no ordinals.
//! - **run** creates a Job that is never retried, labelled `run.N`. Detached,
//!   that is all. Attached (a terminal or a pipe), its container also gets
//!   stdin (and a TTY for a terminal), and crew attaches to its pod through
//!   `pods/attach` ([`attach`]): the client's bytes go both ways, resizes
//!   reach the pod's terminal, the exit code comes from the pod, and a
//!   hang-up deletes the Job.
//! - **release command** (Heroku's release phase): before the platform
//!   applies a release, the image is pushed and the namespace and the
//!   release's Secret applied, as an apply starts; then a Job like a detached
//!   one-off's, labelled `release` / `release.1`, runs the command. Its pod's
//!   log is followed to the platform, the exit code comes from the
//!   container's terminated state, and the Job is deleted ([`release_command`]).
//!   No Deployment is touched.
//! - **logs**: a task per app, started by the first apply, polls the pods and
//!   follows each one's `pods/log` into the app's log ([`logs`]).
//! - **web backends**: every apply reads the EndpointSlices of the Service
//!   `APP-web`, and a task reads them again every poll: each endpoint is a
//!   backend at its pod's IP and `PORT`, up when ready, named as `ps` names
//!   its pod ([`backends`]). crew's router connects to those addresses
//!   directly, which works where pod IPs are routable: a crew server in the
//!   cluster, or on one of its nodes. Elsewhere, with
//!   [`KubernetesConfig::port_forward`], each backend is a loopback listener
//!   whose connections reach the pod through the API server's
//!   `pods/portforward` ([`port_forward`]).
//! - **destroy** deletes the namespace, which takes everything in it along,
//!   and waits until it is gone.

mod apply;
mod attach;
mod backends;
mod config;
mod formation;
mod logs;
mod one_off;
mod placement;
pub mod pods;
mod port_forward;
mod release_command;
mod requests;
mod secrets;

use std::path::Path;

use crew_cluster::registry::RegistryError;
use kube::Config;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use config::KubernetesConfig;
/// The client type, so that callers need no `kube` dependency of their own.
pub use kube::Client;
pub use placement::KubernetesPlacement;
pub use pods::{LogState, PodDyno, TypeInfo};

/// The field manager of everything crew writes, so that `managedFields` says
/// which fields are crew's.
pub const FIELD_MANAGER: &str = "crew";
/// The pod template annotation whose change rolls a Deployment's pods.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Why a placement could not be made or a client found.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error(transparent)]
    Name(#[from] crew_cluster::ClusterError),
    #[error(
        "`{0}` is not a valid namespace name: use lowercase letters, digits and dashes, at most 63 in all"
    )]
    Namespace(String),
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("finding a kubeconfig (KUBECONFIG, ~/.kube/config, or in-cluster): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("making a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A client for the cluster that `path` (a kubeconfig file, its current
/// context) names, or, without a path, the one kubectl would use:
/// `KUBECONFIG`, else `~/.kube/config`, else the pod's service account when
/// crew runs in a cluster.
pub async fn client_from_kubeconfig(path: Option<&Path>) -> Result<Client, KubernetesError> {
    let config = match path {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}
