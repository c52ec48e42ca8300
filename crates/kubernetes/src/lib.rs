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
//!   container's terminated state, and the Job is deleted ([`release_phase`]).
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

mod attach;
mod backends;
mod logs;
pub mod pods;
mod port_forward;
mod release_phase;
mod secrets;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crew_cluster::image::{self, ImageSpec};
use crew_cluster::kubernetes::{self as manifests, MANAGED_BY, PART_OF, PROCESS_TYPE};
use crew_cluster::registry::{Registry, RegistryError, sha256_digest};
use crew_cluster::{Process, Release, object_name, type_label, validate_app_name};
use crew_engine::{
    Attachment, BoxFuture, DynoInfo, EngineError, Placement, RELEASE_DYNO, ReleaseCommand,
    ReleaseSpec, RunRequest, WebBackend,
};
use crew_logs::LogEvent;
use crew_procfile::{Formation, FormationChange};
use crew_runtime::{DynoInput, ExitStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Namespace, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::Config;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The client type, so that callers need no `kube` dependency of their own.
pub use kube::Client;
pub use pods::{Dyno, LogState, TypeInfo};

/// The field manager of everything crew writes, so that `managedFields` says
/// which fields are crew's.
pub const FIELD_MANAGER: &str = "crew";
/// The pod template annotation whose change rolls a Deployment's pods.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Config vars the platform's base environment carries that mean something
/// else in a pod: the pod spec sets `HOME`, `PORT`, `DYNO` and `PS` itself,
/// and the server's `PATH` names directories of the server's machine, not of
/// the image.
const HOST_ONLY: &[&str] = &["HOME", "PATH", "PORT", "DYNO", "PS"];

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

/// What the last apply made, which later calls act on.
struct Applied {
    release: Release,
    formation: Formation,
    /// Types stopped by `stop TYPE`: at zero on the cluster, not in the formation.
    stopped: BTreeSet<String>,
}

/// One app on a Kubernetes cluster.
pub struct KubernetesPlacement {
    client: Client,
    app: String,
    namespace: String,
    config: KubernetesConfig,
    logs: mpsc::Sender<LogEvent>,
    applied: tokio::sync::Mutex<Option<Applied>>,
    /// The types' labels and what `ps` shows of them, shared with the log task.
    types: Arc<Mutex<Vec<(String, TypeInfo)>>>,
    /// The web dynos for the router, from the web Service's EndpointSlices.
    backends: watch::Sender<Arc<Vec<WebBackend>>>,
    /// Reads the slices: once at the end of every apply, then from its task.
    web: Arc<tokio::sync::Mutex<backends::Poller>>,
    follower: Mutex<Option<JoinHandle<()>>>,
    web_poller: Mutex<Option<JoinHandle<()>>>,
    /// Where release images are pushed, when the config has a registry and a
    /// base to build them on.
    registry: Option<Registry>,
    /// The releases (version and slug) whose images this placement has seen
    /// in the registry, so that applying one again (a restart of the
    /// formation's types, a rollback to it) neither rebuilds nor asks. The
    /// lock is held through a push, so two applies never push one image
    /// twice at once.
    pushed: tokio::sync::Mutex<BTreeSet<(u32, PathBuf)>>,
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
    pub async fn dynos(&self) -> Result<Vec<Dyno>, EngineError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(|e| kube_error("listing pods", e))?;
        let types = self.types.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(pods::dynos(&list.items, &types))
    }

    /// `app.kubernetes.io/part-of=APP`.
    fn selector(&self) -> String {
        format!("{PART_OF}={}", self.app)
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The release as `crew_cluster` takes it.
    fn release(&self, spec: &ReleaseSpec, formation: &Formation) -> Release {
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
    fn place(&self, metadata: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
        if metadata.namespace.is_some() {
            metadata.namespace = Some(self.namespace.clone());
        }
    }

    /// Starts the log and backend tasks, unless they run.
    fn start_tasks(&self) {
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

    fn stop_tasks(&self) {
        for task in [&self.follower, &self.web_poller] {
            if let Some(f) = task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                f.abort();
            }
        }
    }

    /// Deletes the app's release Secrets that nothing needs any more
    /// ([`secrets`]). Housekeeping: a failure is logged, and the next apply
    /// tries again.
    async fn collect_secrets(&self, current: &str) {
        let collector = secrets::Collector {
            app: self.app.clone(),
            secrets: Api::namespaced(self.client.clone(), &self.namespace),
            deployments: Api::namespaced(self.client.clone(), &self.namespace),
            replica_sets: Api::namespaced(self.client.clone(), &self.namespace),
            jobs: Api::namespaced(self.client.clone(), &self.namespace),
            pods: Api::namespaced(self.client.clone(), &self.namespace),
        };
        match collector.collect(current).await {
            Ok(deleted) if !deleted.is_empty() => {
                tracing::info!(
                    app = self.app,
                    ?deleted,
                    "deleted release Secrets nothing uses"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(app = self.app, %error, "collecting old release Secrets"),
        }
    }

    /// Reads the web Service's EndpointSlices now, so that the router knows
    /// the web dynos as soon as an apply returns (a restarted server's first
    /// apply finds them running), not one poll later.
    async fn refresh_backends(&self) {
        if let Err(error) = self.web.lock().await.refresh().await {
            // The poller tries again; an apply that did its work succeeded.
            tracing::warn!(app = self.app, %error, "listing the web Service's EndpointSlices");
        }
    }

    /// Makes ready what any pod of `spec` needs before one is made: its
    /// image in the registry (when crew pushes images), the app's namespace
    /// and the release's Secret of config vars. Returns the release and its
    /// objects, moved into the namespace. An apply and a release command
    /// both start here.
    async fn stage(
        &self,
        spec: &ReleaseSpec,
        formation: &Formation,
    ) -> Result<(Release, manifests::Manifests), EngineError> {
        let release = self.release(spec, formation);
        let mut objects = manifests::manifests(&release).map_err(cluster_error)?;
        // Before anything on the cluster names the image.
        self.push_image(spec, &release.image).await?;
        objects.namespace.metadata.name = Some(self.namespace.clone());
        self.place(&mut objects.secret.metadata);
        for d in &mut objects.deployments {
            self.place(&mut d.metadata);
        }
        if let Some(s) = &mut objects.service {
            self.place(&mut s.metadata);
        }
        let ssa = PatchParams::apply(FIELD_MANAGER).force();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .patch(&self.namespace, &ssa, &Patch::Apply(&objects.namespace))
            .await
            .map_err(|e| kube_error("applying the namespace", e))?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = manifests::secret_name(&release);
        secrets
            .patch(&secret, &ssa, &Patch::Apply(&objects.secret))
            .await
            .map_err(|e| kube_error(&format!("applying Secret {secret}"), e))?;
        Ok((release, objects))
    }

    async fn apply_release(
        &self,
        spec: ReleaseSpec,
        formation: Formation,
    ) -> Result<(), EngineError> {
        let (release, objects) = self.stage(&spec, &formation).await?;
        let secret = manifests::secret_name(&release);
        let ssa = PatchParams::apply(FIELD_MANAGER).force();
        let deployments = self.deployments();
        let mut keep = BTreeSet::new();
        for deployment in &objects.deployments {
            let name = deployment.metadata.name.clone().unwrap_or_default();
            deployments
                .patch(&name, &ssa, &Patch::Apply(deployment))
                .await
                .map_err(|e| kube_error(&format!("applying Deployment {name}"), e))?;
            keep.insert(name);
        }
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let web_service = format!("{}-web", self.app);
        match &objects.service {
            Some(service) => {
                services
                    .patch(&web_service, &ssa, &Patch::Apply(service))
                    .await
                    .map_err(|e| kube_error(&format!("applying Service {web_service}"), e))?;
            }
            None => ignore_missing(
                services
                    .delete(&web_service, &DeleteParams::default())
                    .await,
            )
            .map_err(|e| kube_error(&format!("deleting Service {web_service}"), e))?,
        }
        // Types the release dropped: their Deployments are crew's (labelled
        // so) and no longer in the release. Only those; anything else in the
        // namespace is someone else's.
        let existing = deployments
            .list(&ListParams::default().labels(&format!("{},{MANAGED_BY}=crew", self.selector())))
            .await
            .map_err(|e| kube_error("listing Deployments", e))?;
        for old in existing.items {
            let Some(name) = old.metadata.name else {
                continue;
            };
            if keep.contains(&name) {
                continue;
            }
            ignore_missing(deployments.delete(&name, &DeleteParams::background()).await)
                .map_err(|e| kube_error(&format!("deleting Deployment {name}"), e))?;
        }
        let types = spec
            .types
            .iter()
            .filter_map(|t| {
                let label = type_label(&t.name).ok()?;
                Some((
                    label,
                    TypeInfo {
                        name: t.name.clone(),
                        command: t.command.clone(),
                        size: t.size.as_ref().map(|s| s.name.clone()),
                    },
                ))
            })
            .collect();
        *self.types.lock().unwrap_or_else(|p| p.into_inner()) = types;
        *self.applied.lock().await = Some(Applied {
            release,
            formation,
            stopped: BTreeSet::new(),
        });
        // After `applied` changed, so that a one-off made from now on names
        // the new Secret, which is never collected.
        self.collect_secrets(&secret).await;
        self.refresh_backends().await;
        self.start_tasks();
        Ok(())
    }

    /// Builds the release's image and pushes it as `reference`, unless the
    /// registry already has it: the same manifest digest under the tag. The
    /// image is built to know that digest, since a tag alone could hold
    /// another slug's image (a crew whose data was reset numbers its
    /// releases from v1 again). Without a registry and a base, does nothing.
    async fn push_image(&self, spec: &ReleaseSpec, reference: &str) -> Result<(), EngineError> {
        let (Some(registry), Some(base)) = (&self.registry, &self.config.base_rootfs) else {
            return Ok(());
        };
        let mut pushed = self.pushed.lock().await;
        let key = (spec.version, spec.slug_archive.clone());
        if pushed.contains(&key) {
            return Ok(());
        }
        let failed = |e: &dyn std::fmt::Display| {
            EngineError::Engine(format!("kubernetes: pushing the image {reference}: {e}"))
        };
        let slug = spec.slug_archive.clone();
        let base = base.clone();
        let image_spec = ImageSpec::new(&self.app, spec.version);
        let built =
            tokio::task::spawn_blocking(move || image::build(&slug, Some(&base), &image_spec))
                .await
                .map_err(|e| failed(&e))?
                .map_err(|e| failed(&e))?;
        let manifest = built.oci_manifest().map_err(|e| failed(&e))?;
        let digest = sha256_digest(&manifest);
        let repository = registry.repository(&format!("crew/{}", self.app));
        let tag = format!("v{}", spec.version);
        let theirs = registry
            .manifest_digest(&repository, &tag)
            .await
            .map_err(|e| failed(&e))?;
        if theirs.as_deref() == Some(digest.as_str()) {
            tracing::info!(app = self.app, image = reference, "already in the registry");
        } else {
            if let Some(theirs) = theirs {
                tracing::warn!(
                    app = self.app,
                    image = reference,
                    theirs,
                    ours = digest,
                    "the registry's image under this tag is another; replacing it"
                );
            }
            let done = registry
                .push(&repository, &tag, &built)
                .await
                .map_err(|e| failed(&e))?;
            tracing::info!(
                app = self.app,
                image = reference,
                digest = done.digest,
                uploaded = done.uploaded.len(),
                skipped = done.skipped.len(),
                "pushed"
            );
            let source: Arc<str> = Arc::from("api");
            // The platform's log, where the deploy's other lines are; a
            // closed log (the app going) does not fail the apply.
            let _ = self
                .logs
                .send(LogEvent::platform(&source, format!("Pushed {reference}")))
                .await;
        }
        pushed.insert(key);
        Ok(())
    }

    async fn set_replicas(&self, process_type: &str, replicas: u32) -> Result<(), EngineError> {
        let name = object_name(&self.app, process_type).map_err(cluster_error)?;
        let replicas = i32::try_from(replicas).map_err(|_| {
            EngineError::Engine(format!(
                "{replicas} dynos of {process_type} is more than Kubernetes can count"
            ))
        })?;
        self.deployments()
            .patch_scale(
                &name,
                &manager(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .map_err(|e| kube_error(&format!("scaling Deployment {name}"), e))?;
        Ok(())
    }

    async fn roll(&self, process_type: &str) -> Result<(), EngineError> {
        let name = object_name(&self.app, process_type).map_err(cluster_error)?;
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT: Timestamp::now().to_string(),
        }}}}});
        self.deployments()
            .patch(&name, &manager(), &Patch::Strategic(patch))
            .await
            .map_err(|e| kube_error(&format!("restarting Deployment {name}"), e))?;
        Ok(())
    }

    /// The dyno `name` (`web.2`) as `ps` numbers it now.
    async fn find(&self, name: &str) -> Result<Dyno, EngineError> {
        self.dynos()
            .await?
            .into_iter()
            .find(|d| d.info.name == name)
            .ok_or_else(|| EngineError::UnknownDyno(name.to_string()))
    }

    async fn delete_pod(&self, pod: &str) -> Result<(), EngineError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        ignore_missing(pods.delete(pod, &DeleteParams::default()).await)
            .map_err(|e| kube_error(&format!("deleting pod {pod}"), e))
    }

    async fn restart_target(&self, target: Option<String>) -> Result<(), EngineError> {
        let mut applied = self.applied.lock().await;
        let Some(applied) = applied.as_mut() else {
            return match target {
                Some(t) => Err(EngineError::UnknownDyno(t)),
                None => Ok(()),
            };
        };
        let types: Vec<String> = match &target {
            None => applied
                .release
                .processes
                .iter()
                .map(|p| p.name.clone())
                .collect(),
            Some(t) if applied.formation.get(t).is_some() => vec![t.clone()],
            Some(t) => {
                let dyno = self.find(t).await?;
                return self.delete_pod(&dyno.pod).await;
            }
        };
        for t in types {
            if applied.stopped.contains(&t) {
                let quantity = applied.formation.get(&t).unwrap_or(0);
                self.set_replicas(&t, quantity).await?;
                applied.stopped.remove(&t);
            }
            self.roll(&t).await?;
        }
        Ok(())
    }

    async fn stop_target(&self, target: String) -> Result<(), EngineError> {
        let mut applied = self.applied.lock().await;
        let Some(applied) = applied.as_mut() else {
            return Err(EngineError::UnknownDyno(target));
        };
        if applied.formation.get(&target).is_some() {
            self.set_replicas(&target, 0).await?;
            applied.stopped.insert(target);
            return Ok(());
        }
        let dyno = self.find(&target).await?;
        if dyno.info.process_type == "run" {
            // The Job, not only its pod: a Job would make a new pod.
            let Some(job) = dyno.job else {
                return self.delete_pod(&dyno.pod).await;
            };
            let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
            return ignore_missing(jobs.delete(&job, &DeleteParams::background()).await)
                .map_err(|e| kube_error(&format!("deleting Job {job}"), e));
        }
        self.delete_pod(&dyno.pod).await
    }

    async fn scale_types(&self, changes: Vec<FormationChange>) -> Result<(), EngineError> {
        let mut applied = self.applied.lock().await;
        let Some(applied) = applied.as_mut() else {
            return Ok(());
        };
        let changes: Vec<FormationChange> = changes
            .into_iter()
            .filter(|c| applied.formation.get(&c.process_type).is_some())
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        let mut next = applied.formation.clone();
        next.apply(&changes)?;
        // Every type named is set, even to the count it has: that is what
        // brings a stopped type back.
        for (process_type, quantity) in next.entries() {
            if changes.iter().any(|c| c.process_type == *process_type) {
                self.set_replicas(process_type, *quantity).await?;
                applied.stopped.remove(process_type);
            }
        }
        for process in &mut applied.release.processes {
            process.quantity = next.get(&process.name).unwrap_or(0);
        }
        applied.formation = next;
        Ok(())
    }

    /// Makes the one-off's Job: `run.N`, one more than the highest number of
    /// the app's one-offs the cluster still has. For an attached one, its
    /// container takes stdin (and a TTY for a terminal). Returns the number
    /// and the Job's name, which the cluster generated.
    async fn create_one_off(&self, request: &RunRequest) -> Result<(u32, String), EngineError> {
        let release = match self.applied.lock().await.as_ref() {
            Some(applied) => applied.release.clone(),
            None => return Err(EngineError::NoRelease),
        };
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let existing = jobs
            .list(&ListParams::default().labels(&format!("{},{PROCESS_TYPE}=run", self.selector())))
            .await
            .map_err(|e| kube_error("listing Jobs", e))?;
        let number = existing
            .items
            .iter()
            .filter_map(|j| {
                j.metadata
                    .labels
                    .as_ref()?
                    .get(pods::DYNO)?
                    .strip_prefix("run.")?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
            + 1;
        let name = format!("run.{number}");
        let mut job = manifests::run_job(&release, &request.command, &Default::default())
            .map_err(cluster_error)?;
        self.place(&mut job.metadata);
        label_one_off(&mut job, &name, request);
        let made = jobs
            .create(&manager_post(), &job)
            .await
            .map_err(|e| kube_error("creating the one-off's Job", e))?;
        let job = made.metadata.name.ok_or_else(|| {
            EngineError::Engine("kubernetes: the one-off's Job came back without a name".into())
        })?;
        tracing::debug!(job, dyno = name, "one-off created");
        Ok((number, job))
    }

    async fn run_one_off(
        &self,
        request: RunRequest,
    ) -> Result<(DynoInfo, Option<Attachment>), EngineError> {
        let terminal = match request.input {
            DynoInput::Idle => None,
            DynoInput::Pipe => Some(None),
            DynoInput::Terminal { cols, rows } => Some(Some((cols, rows))),
        };
        let (number, job) = self.create_one_off(&request).await?;
        let info = DynoInfo::starting_one_off(
            number,
            request.command.clone(),
            Some(crew_cluster::PORT),
            request.size.map(|s| s.name),
        );
        let Some(terminal) = terminal else {
            return Ok((info, None));
        };
        let dyno: Arc<str> = Arc::from(info.name.as_str());
        // Best effort, as every line of the app's log: a full log channel
        // must not hold the one-off up.
        let _ = self.logs.try_send(LogEvent::platform(
            &dyno,
            format!("Starting process with command `{}`", request.command),
        ));
        let attachment = attach::start(attach::Session {
            pods: Api::namespaced(self.client.clone(), &self.namespace),
            jobs: Api::namespaced(self.client.clone(), &self.namespace),
            job,
            dyno,
            terminal,
            timing: attach::Timing {
                poll: self.config.attach_poll,
                start: self.config.attach_timeout,
                session: Duration::from_secs(u64::from(
                    manifests::RunOptions::default().deadline_seconds,
                )) + Duration::from_secs(60),
                exit: Duration::from_secs(u64::from(crew_cluster::STOP_GRACE_SECONDS) + 30),
            },
            logs: self.logs.clone(),
        });
        Ok((info, Some(attachment)))
    }

    /// A release's release command: a Job of the release (its image, its
    /// Secret), never retried, whose pod's log is followed into
    /// `command.output` and whose container's exit code is the answer. The
    /// Job goes afterwards, however it ended. The release's Deployments are
    /// not touched: the platform applies the release only if this succeeds.
    async fn release_phase(
        &self,
        spec: ReleaseSpec,
        command: ReleaseCommand,
    ) -> Result<ExitStatus, EngineError> {
        // The Deployments' replicas are all a formation would change, and
        // no Deployment is applied here.
        let formation = Formation::new(spec.types.iter().map(|t| t.name.clone()), 0);
        let (release, _) = self.stage(&spec, &formation).await?;
        let options = manifests::RunOptions {
            deadline_seconds: u32::try_from(command.timeout.as_secs()).unwrap_or(u32::MAX),
            ..manifests::RunOptions::default()
        };
        let mut job =
            manifests::run_job(&release, &command.command, &options).map_err(cluster_error)?;
        self.place(&mut job.metadata);
        label_one_off(
            &mut job,
            RELEASE_DYNO,
            &RunRequest {
                command: command.command.clone(),
                ..RunRequest::default()
            },
        );
        release_phase::label(&mut job, &self.app);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let made = jobs
            .create(&manager_post(), &job)
            .await
            .map_err(|e| kube_error("creating the release command's Job", e))?;
        let name = made.metadata.name.ok_or_else(|| {
            EngineError::Engine(
                "kubernetes: the release command's Job came back without a name".into(),
            )
        })?;
        tracing::debug!(job = name, "release command started");
        let job = release_phase::JobRemoval::new(jobs, name);
        let ran = release_phase::follow(
            &Api::namespaced(self.client.clone(), &self.namespace),
            job.name(),
            release_phase::Timing {
                start: self.config.attach_timeout,
                poll: self.config.attach_poll,
                limit: command.timeout,
            },
            &command.output,
        )
        .await;
        job.delete().await;
        ran.map(ExitStatus::Code)
            .map_err(|why| EngineError::Engine(format!("kubernetes: {why}")))
    }

    async fn destroy_namespace(&self) -> Result<(), EngineError> {
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

/// Names the one-off `run.N` on its pod and in its environment (where the
/// cluster would put the pod's name), keeps its command for `ps`, and adds the
/// request's own variables, which win over the config vars as `env` wins over
/// `envFrom`. An attached one-off's container gets stdin, closed when the
/// first attach ends (`stdinOnce`), and a TTY when the client has a terminal.
fn label_one_off(job: &mut Job, name: &str, request: &RunRequest) {
    let label = |meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(pods::DYNO.to_string(), name.to_string());
    };
    label(&mut job.metadata);
    let Some(spec) = job.spec.as_mut() else {
        return;
    };
    let template = spec.template.metadata.get_or_insert_with(Default::default);
    label(template);
    let annotations = template.annotations.get_or_insert_with(Default::default);
    annotations.insert(pods::COMMAND.to_string(), request.command.clone());
    let attached = !matches!(request.input, DynoInput::Idle);
    if attached {
        annotations.insert(pods::ATTACHED.to_string(), "true".to_string());
    }
    let Some(pod) = spec.template.spec.as_mut() else {
        return;
    };
    for container in &mut pod.containers {
        if attached {
            container.stdin = Some(true);
            container.stdin_once = Some(true);
            container.tty = Some(matches!(request.input, DynoInput::Terminal { .. }));
        }
        let env = container.env.get_or_insert_with(Vec::new);
        for var in env.iter_mut() {
            if var.name == "DYNO" || var.name == "PS" {
                var.value = Some(name.to_string());
                var.value_from = None;
            }
        }
        for (key, value) in &request.env {
            if HOST_ONLY.contains(&key.as_str()) {
                continue;
            }
            env.retain(|v| v.name != *key);
            env.push(EnvVar {
                name: key.clone(),
                value: Some(value.clone()),
                ..EnvVar::default()
            });
        }
    }
}

fn manager() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

fn manager_post() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// A delete of something already gone is done.
fn ignore_missing<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The cluster's refusal in its own words, with what crew was doing.
fn kube_error(what: &str, error: kube::Error) -> EngineError {
    match error {
        kube::Error::Api(status) => EngineError::Engine(format!(
            "kubernetes: {what}: {} ({} {})",
            status.message, status.code, status.reason
        )),
        other => EngineError::Engine(format!("kubernetes: {what}: {other}")),
    }
}

fn cluster_error(error: crew_cluster::ClusterError) -> EngineError {
    EngineError::Engine(error.to_string())
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
        Box::pin(async move { self.release_phase(release, command).await.map(Some) })
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
