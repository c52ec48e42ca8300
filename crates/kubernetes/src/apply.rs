//! A release onto the cluster: its image pushed (when crew builds images),
//! the namespace and the release's Secret applied (`stage`, which a release
//! command starts with too), then the Deployments and the web Service, and
//! what the release dropped deleted, with the Secrets nothing uses.

use std::collections::BTreeSet;
use std::sync::Arc;

use crew_cluster::image::{self, ImageSpec};
use crew_cluster::kubernetes::{self as manifests, MANAGED_BY};
use crew_cluster::registry::sha256_digest;
use crew_cluster::{Release, type_label};
use crew_engine::{EngineError, ReleaseSpec};
use crew_logs::LogEvent;
use crew_procfile::Formation;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use crate::FIELD_MANAGER;
use crate::placement::{Applied, KubernetesPlacement};
use crate::pods::TypeInfo;
use crate::requests::{cluster_error, ignore_missing, kube_error};
use crate::secrets;

impl KubernetesPlacement {
    /// Deletes the app's release Secrets that nothing needs any more
    /// ([`secrets`]). Housekeeping: a failure is logged, and the next apply
    /// tries again.
    pub(crate) async fn collect_secrets(&self, current: &str) {
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
    pub(crate) async fn refresh_backends(&self) {
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
    pub(crate) async fn stage(
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

    pub(crate) async fn apply_release(
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
}
