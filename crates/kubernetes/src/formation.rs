//! The formation on the cluster: scale (each Deployment's scale
//! subresource), restart (a rollout, or one pod deleted) and stop (a type
//! at zero replicas, or one dyno's pod or Job deleted).

use crew_cluster::object_name;
use crew_engine::EngineError;
use crew_procfile::FormationChange;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch};
use serde_json::json;

use crate::RESTARTED_AT;
use crate::placement::KubernetesPlacement;
use crate::pods::PodDyno;
use crate::requests::{cluster_error, ignore_missing, kube_error, manager};

impl KubernetesPlacement {
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
    async fn find(&self, name: &str) -> Result<PodDyno, EngineError> {
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

    pub(crate) async fn restart_target(&self, target: Option<String>) -> Result<(), EngineError> {
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

    pub(crate) async fn stop_target(&self, target: String) -> Result<(), EngineError> {
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

    pub(crate) async fn scale_types(
        &self,
        changes: Vec<FormationChange>,
    ) -> Result<(), EngineError> {
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
}
