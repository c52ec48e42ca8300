//! [`KubernetesPlacement`]: one app on a Kubernetes cluster, and its
//! [`Placement`] implementation. This file holds the struct, what every
//! part reads of it (the namespace, the selector, the release as
//! `crew_cluster` takes it), the background tasks and the teardown; the
//! operations are each in their own file, as further `impl
//! KubernetesPlacement` blocks: `apply.rs` (a release onto the cluster),
//! `formation.rs` (scale, restart, stop), `one_off.rs` (`crew run`) and
//! `release_command.rs` (Heroku's release phase).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crew_cluster::kubernetes::PART_OF;
use crew_cluster::registry::Registry;
use crew_cluster::{Process, Release, object_name, validate_app_name};
use crew_engine::{
    Attachment, BoxFuture, DynoInfo, EngineError, Placement, ReleaseCommand, ReleaseSpec,
    RunRequest, WebBackend,
};
use crew_logs::LogEvent;
use crew_procfile::{Formation, FormationChange};
use crew_runtime::ExitStatus;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::KubernetesConfig;
use crate::pods::{self, PodDyno, TypeInfo};
use crate::requests::{ignore_missing, kube_error};
use crate::{KubernetesError, backends, logs, port_forward};

/// Config vars the platform's base environment carries that mean something
/// else in a pod: the pod spec sets `HOME`, `PORT`, `DYNO` and `PS` itself,
/// and the server's `PATH` names directories of the server's machine, not of
/// the image.
pub(crate) const HOST_ONLY: &[&str] = &["HOME", "PATH", "PORT", "DYNO", "PS"];

/// What the last apply made, which later calls act on.
pub(crate) struct Applied {
    pub(crate) release: Release,
    pub(crate) formation: Formation,
    /// Types stopped by `stop TYPE`: at zero on the cluster, not in the formation.
    pub(crate) stopped: BTreeSet<String>,
}

/// One app on a Kubernetes cluster.
pub struct KubernetesPlacement {
    pub(crate) client: Client,
    pub(crate) app: String,
    pub(crate) namespace: String,
    pub(crate) config: KubernetesConfig,
    pub(crate) logs: mpsc::Sender<LogEvent>,
    pub(crate) applied: tokio::sync::Mutex<Option<Applied>>,
    /// The types' labels and what `ps` shows of them, shared with the log task.
    pub(crate) types: Arc<Mutex<Vec<(String, TypeInfo)>>>,
    /// The web dynos for the router, from the web Service's EndpointSlices.
    pub(crate) backends: watch::Sender<Arc<Vec<WebBackend>>>,
    /// Reads the slices: once at the end of every apply, then from its task.
    pub(crate) web: Arc<tokio::sync::Mutex<backends::Poller>>,
    pub(crate) follower: Mutex<Option<JoinHandle<()>>>,
    pub(crate) web_poller: Mutex<Option<JoinHandle<()>>>,
    /// Where release images are pushed, when the config has a registry and a
    /// base to build them on.
    pub(crate) registry: Option<Registry>,
    /// The releases (version and slug) whose images this placement has seen
    /// in the registry, so that applying one again (a restart of the
    /// formation's types, a rollback to it) neither rebuilds nor asks. The
    /// lock is held through a push, so two applies never push one image
    /// twice at once.
    pub(crate) pushed: tokio::sync::Mutex<BTreeSet<(u32, PathBuf)>>,
}

impl KubernetesPlacement {
    /// A placement for `app` on the cluster `client` talks to. Nothing is
    /// asked of the cluster until the first call; the log and backend tasks
    /// start with the first apply. Fails only on a name the cluster would
    /// refuse, or a registry that is no registry's name.
    pub fn new(
        client: Client,
        app: &str,
        config: KubernetesConfig,
        logs: mpsc::Sender<LogEvent>,
    ) -> Result<KubernetesPlacement, KubernetesError> {
        validate_app_name(app)?;
        let namespace = format!("{}-{app}", config.namespace_prefix);
        let label_ok = namespace.len() <= 63
            && namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && namespace.as_bytes()[0].is_ascii_lowercase();
        if !label_ok || config.namespace_prefix.is_empty() {
            return Err(KubernetesError::Namespace(namespace));
        }
        let registry = match (&config.registry, &config.base_rootfs) {
            (Some(registry), Some(_)) => Some(Registry::new(registry)?),
            _ => None,
        };
        let (backends, _) = watch::channel(Arc::new(Vec::new()));
        let types = Arc::new(Mutex::new(Vec::new()));
        let web = backends::Poller::new(
            Api::namespaced(client.clone(), &namespace),
            Api::namespaced(client.clone(), &namespace),
            object_name(app, "web")?,
            format!("{PART_OF}={app}"),
            Arc::clone(&types),
            backends.clone(),
            config
                .port_forward
                .then(|| port_forward::Forwards::new(Api::namespaced(client.clone(), &namespace))),
        );
        Ok(KubernetesPlacement {
            client,
            app: app.to_string(),
            namespace,
            config,
            logs,
            applied: tokio::sync::Mutex::new(None),
            types,
            backends,
            web: Arc::new(tokio::sync::Mutex::new(web)),
            follower: Mutex::new(None),
            web_poller: Mutex::new(None),
            registry,
            pushed: tokio::sync::Mutex::new(BTreeSet::new()),
        })
    }

    /// The app's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Every dyno with its pod and node, which [`DynoInfo`] has no room for.
    pub async fn dynos(&self) -> Result<Vec<PodDyno>, EngineError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(|e| kube_error("listing pods", e))?;
        let types = self.types.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(pods::dynos(&list.items, &types))
    }

    /// `app.kubernetes.io/part-of=APP`.
    pub(crate) fn selector(&self) -> String {
        format!("{PART_OF}={}", self.app)
    }

    pub(crate) fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The release as `crew_cluster` takes it.
    pub(crate) fn release(&self, spec: &ReleaseSpec, formation: &Formation) -> Release {
        Release {
            app: self.app.clone(),
            version: spec.version,
            description: String::new(),
            image: self.config.image(&self.app, spec.version),
            config: spec
                .env
                .iter()
                .filter(|(k, _)| !HOST_ONLY.contains(&k.as_str()))
                .cloned()
                .collect(),
            processes: spec
                .types
                .iter()
                .map(|t| Process {
                    name: t.name.clone(),
                    command: t.command.clone(),
                    quantity: formation.get(&t.name).unwrap_or(0),
                    memory_bytes: Some(t.size.clone().unwrap_or_default().memory_bytes),
                })
                .collect(),
        }
    }

    /// Moves an object into this placement's namespace, when its prefix is
    /// not `crew_cluster`'s.
    pub(crate) fn place(
        &self,
        metadata: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) {
        if metadata.namespace.is_some() {
            metadata.namespace = Some(self.namespace.clone());
        }
    }

    /// Starts the log and backend tasks, unless they run.
    pub(crate) fn start_tasks(&self) {
        let mut follower = self.follower.lock().unwrap_or_else(|p| p.into_inner());
        if follower.as_ref().is_none_or(|f| f.is_finished()) {
            *follower = Some(logs::spawn(logs::Source {
                pods: Api::namespaced(self.client.clone(), &self.namespace),
                selector: self.selector(),
                types: self.types.clone(),
                logs: self.logs.clone(),
                interval: self.config.poll_interval,
            }));
        }
        let mut poller = self.web_poller.lock().unwrap_or_else(|p| p.into_inner());
        if poller.as_ref().is_none_or(|f| f.is_finished()) {
            *poller = Some(backends::spawn(self.web.clone(), self.config.poll_interval));
        }
    }

    pub(crate) fn stop_tasks(&self) {
        for task in [&self.follower, &self.web_poller] {
            if let Some(f) = task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                f.abort();
            }
        }
    }

    pub(crate) async fn destroy_namespace(&self) -> Result<(), EngineError> {
        self.stop_tasks();
        self.web.lock().await.publish(Vec::new());
        *self.applied.lock().await = None;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        ignore_missing(
            namespaces
                .delete(&self.namespace, &DeleteParams::background())
                .await,
        )
        .map_err(|e| kube_error(&format!("deleting namespace {}", self.namespace), e))?;
        let deadline = tokio::time::Instant::now() + self.config.destroy_timeout;
        loop {
            match namespaces.get_opt(&self.namespace).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) if tokio::time::Instant::now() < deadline => {}
                Ok(Some(_)) => {
                    return Err(EngineError::Engine(format!(
                        "namespace {} is still terminating after {}s",
                        self.namespace,
                        self.config.destroy_timeout.as_secs()
                    )));
                }
                Err(e) => return Err(kube_error("waiting for the namespace to go", e)),
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }
}

impl Placement for KubernetesPlacement {
    fn apply(
        &self,
        release: ReleaseSpec,
        formation: Formation,
    ) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(self.apply_release(release, formation))
    }

    fn scale(&self, changes: Vec<FormationChange>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(self.scale_types(changes))
    }

    fn ps(&self) -> BoxFuture<'_, Vec<DynoInfo>> {
        Box::pin(async move {
            match self.dynos().await {
                Ok(dynos) => dynos.into_iter().map(|d| d.info).collect(),
                Err(error) => {
                    // The trait has no room for an error: an unreachable
                    // cluster shows as no dynos, and the server's log says why.
                    tracing::warn!(app = self.app, %error, "ps on Kubernetes");
                    Vec::new()
                }
            }
        })
    }

    fn run(
        &self,
        request: RunRequest,
    ) -> BoxFuture<'_, Result<(DynoInfo, Option<Attachment>), EngineError>> {
        Box::pin(self.run_one_off(request))
    }

    fn restart(&self, target: Option<String>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(self.restart_target(target))
    }

    fn stop(&self, target: String) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(self.stop_target(target))
    }

    fn web_backends(&self) -> watch::Receiver<Arc<Vec<WebBackend>>> {
        self.backends.subscribe()
    }

    fn destroy(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(error) = self.destroy_namespace().await {
                tracing::warn!(app = self.app, %error, "destroying on Kubernetes");
            }
        })
    }

    fn release_command(
        &self,
        release: ReleaseSpec,
        command: ReleaseCommand,
    ) -> BoxFuture<'_, Result<Option<ExitStatus>, EngineError>> {
        Box::pin(async move { self.run_release_command(release, command).await.map(Some) })
    }

    /// The dynos are the cluster's and outlive this server: only the log and
    /// backend tasks stop. The next server's apply finds them as they are;
    /// an attached one-off's session ends with the server's connections, and
    /// its hang-up deletes its Job.
    fn shutdown(&self) {
        self.stop_tasks();
    }
}

impl Drop for KubernetesPlacement {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}
