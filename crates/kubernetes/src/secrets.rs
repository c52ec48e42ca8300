//! Garbage collection of release Secrets.
//!
//! Every release applies its own immutable Secret, `APP-config-vN`, and
//! nothing else ever deletes one, so without this they pile up, one per
//! deploy and per config change. After an apply, crew deletes the app's
//! release Secrets that nothing in the namespace can still need, and never
//! the current one. "Need" is wider than the Deployments' templates:
//!
//! - a **Deployment** (any, not only crew's) names it in its pod template;
//! - a **ReplicaSet** that still wants pods names it: during a rolling
//!   deploy the previous release's ReplicaSet runs on, and a pod it
//!   replaces (a node died) would fail with `CreateContainerConfigError`
//!   without its Secret; one scaled to zero is only history, which crew does
//!   not use (a rollback re-applies the old release, Secret included);
//! - a **Job** (a one-off of an older release) names it;
//! - a **Pod** names it: a container that restarts in place reads its
//!   environment again.
//!
//! So the previous release's Secret usually goes with the apply after the
//! one that replaced it, once its pods are gone. A Secret is only a
//! candidate when it carries crew's labels (`part-of=APP`, `managed-by=crew`,
//! a `crew/release`) and is named as a release Secret; anything else in the
//! namespace is someone else's.
//!
//! A one-off created from the previous release while the apply runs, after
//! the Jobs were listed, could lose its Secret; crew reads the applied
//! release for a one-off only once the apply is done, which keeps that
//! window to a one-off started in the very moment of the switch.

use std::collections::BTreeSet;

use crew_cluster::kubernetes::{MANAGED_BY, PART_OF, RELEASE};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodSpec, Secret};
use kube::api::{Api, DeleteParams, ListParams};

/// Where the collector looks, in one namespace.
pub(crate) struct Collector {
    pub app: String,
    pub secrets: Api<Secret>,
    pub deployments: Api<Deployment>,
    pub replica_sets: Api<ReplicaSet>,
    pub jobs: Api<Job>,
    pub pods: Api<Pod>,
}

impl Collector {
    /// Deletes the app's release Secrets other than `current` that nothing
    /// needs; returns their names.
    pub(crate) async fn collect(&self, current: &str) -> Result<Vec<String>, kube::Error> {
        let labels = format!("{PART_OF}={},{MANAGED_BY}=crew,{RELEASE}", self.app);
        let candidates: Vec<String> = self
            .secrets
            .list(&ListParams::default().labels(&labels))
            .await?
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .filter(|name| name != current && is_release_secret(&self.app, name))
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let all = ListParams::default();
        let mut used = BTreeSet::new();
        for d in self.deployments.list(&all).await?.items {
            if let Some(spec) = d.spec.and_then(|s| s.template.spec) {
                secret_refs(&spec, &mut used);
            }
        }
        for rs in self.replica_sets.list(&all).await?.items {
            let Some(spec) = rs.spec else { continue };
            if spec.replicas.unwrap_or(1) == 0 {
                continue;
            }
            if let Some(pod) = spec.template.and_then(|t| t.spec) {
                secret_refs(&pod, &mut used);
            }
        }
        for job in self.jobs.list(&all).await?.items {
            if let Some(spec) = job.spec.and_then(|s| s.template.spec) {
                secret_refs(&spec, &mut used);
            }
        }
        for pod in self.pods.list(&all).await?.items {
            if let Some(spec) = pod.spec {
                secret_refs(&spec, &mut used);
            }
        }
        let mut deleted = Vec::new();
        for name in candidates {
            if used.contains(&name) {
                continue;
            }
            match self.secrets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(error) => return Err(error),
            }
            deleted.push(name);
        }
        Ok(deleted)
    }
}

/// `APP-config-vN`, as `crew_cluster` names a release's Secret.
fn is_release_secret(app: &str, name: &str) -> bool {
    name.strip_prefix(app)
        .and_then(|rest| rest.strip_prefix("-config-v"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every Secret a pod spec names: in its containers' `envFrom` and `env`,
/// its volumes (plain and projected), and its image pull secrets.
pub(crate) fn secret_refs(spec: &PodSpec, out: &mut BTreeSet<String>) {
    let containers = || {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
    };
    for container in containers() {
        for from in container.env_from.iter().flatten() {
            if let Some(secret) = &from.secret_ref {
                out.insert(secret.name.clone());
            }
        }
    }
    // Ephemeral containers (debugging) cannot use envFrom, but can env.
    let envs = containers()
        .map(|c| &c.env)
        .chain(spec.ephemeral_containers.iter().flatten().map(|c| &c.env));
    for var in envs.flatten().flatten() {
        if let Some(key) = var
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            out.insert(key.name.clone());
        }
    }
    for volume in spec.volumes.iter().flatten() {
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            out.insert(name);
        }
        let projected = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
        for source in projected.into_iter().flatten() {
            if let Some(secret) = &source.secret {
                out.insert(secret.name.clone());
            }
        }
    }
    for pull in spec.image_pull_secrets.iter().flatten() {
        out.insert(pull.name.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_release_names_are_candidates() {
        assert!(is_release_secret("shop", "shop-config-v12"));
        assert!(!is_release_secret("shop", "shop-config-v"));
        assert!(!is_release_secret("shop", "shop-config-vlatest"));
        assert!(!is_release_secret("shop", "shopping-config-v1"));
        assert!(!is_release_secret("shop", "shop-tls"));
    }

    #[test]
    fn every_place_a_pod_names_a_secret_counts() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{
                "name": "web",
                "envFrom": [{"secretRef": {"name": "a"}}, {"configMapRef": {"name": "not-a-secret"}}],
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "b", "key": "k"}}}],
            }],
            "initContainers": [{"name": "init", "envFrom": [{"secretRef": {"name": "c"}}]}],
            "volumes": [
                {"name": "v", "secret": {"secretName": "d"}},
                {"name": "p", "projected": {"sources": [{"secret": {"name": "e"}}]}},
            ],
            "imagePullSecrets": [{"name": "f"}],
        }))
        .expect("a pod spec");
        let mut used = BTreeSet::new();
        secret_refs(&spec, &mut used);
        assert_eq!(
            used.into_iter().collect::<Vec<_>>(),
            ["a", "b", "c", "d", "e", "f"]
        );
    }
}
