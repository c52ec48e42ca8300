//! The formation as Swarm services: apply (a service per process type,
//! created, updated in place or removed), scale (replicas), restart
//! (`ForceUpdate`, or one task's container stopped) and stop (a type scaled
//! to zero, its quantity kept for `restart`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crew_cluster::object_name;
use crew_engine::{EngineError, ReleaseSpec};
use crew_procfile::{Formation, FormationChange};
use serde_json::{Value, json};

use super::app::{Applied, SwarmApp, engine_error, lock};
use crate::SwarmError;
use crate::docker::{DockerError, Service};
use crate::spec::{self, LABEL_APP, LABEL_TYPE, RUN_TYPE, network_name};

impl SwarmApp {
    pub(super) async fn ensure_network(&self) -> Result<(), SwarmError> {
        let name = network_name(&self.app);
        let found = self
            .docker
            .networks(&json!({ "name": [name.clone()] }))
            .await?;
        if !found.iter().any(|n| n.name == name) {
            let labels = BTreeMap::from([(LABEL_APP.to_string(), self.app.clone())]);
            self.docker.network_create(&name, &labels).await?;
        }
        Ok(())
    }

    /// Reads a service, changes its spec and writes it back at the version
    /// read; tries again if someone else wrote in between.
    async fn update_service(
        &self,
        name: &str,
        change: impl Fn(&mut Value),
    ) -> Result<(), SwarmError> {
        let mut attempt = 0;
        loop {
            let service = self.docker.service_inspect(name).await?;
            let mut spec = service.spec.clone();
            change(&mut spec);
            match self
                .docker
                .service_update(&service.id, service.version.index, &spec)
                .await
            {
                Err(DockerError::Api { message, .. })
                    if message.contains("out of sequence") && attempt < 3 =>
                {
                    attempt += 1;
                }
                other => return other.map_err(SwarmError::from),
            }
        }
    }

    pub(super) async fn apply(
        &self,
        release: ReleaseSpec,
        formation: Formation,
    ) -> Result<(), SwarmError> {
        let mut applied = self.applied.lock().await;
        for t in &release.types {
            object_name(&release.app, &t.name)?;
        }
        self.ensure_image(&release).await?;
        self.ensure_network().await?;
        let image = self.image(&release);
        if release.types.iter().any(|t| t.name == "web")
            && let Err(e) = self.gateway.ensure(&self.docker, &image).await
        {
            // Web tasks are still reached at their published ports.
            tracing::warn!("making {}'s router gateway: {e}", self.app);
        }
        let existing: HashMap<String, Service> = self
            .services()
            .await?
            .into_iter()
            .filter_map(|s| {
                let t = s.label(LABEL_TYPE)?.to_string();
                (t != RUN_TYPE).then_some((t, s))
            })
            .collect();
        for t in &release.types {
            let replicas = formation.get(&t.name).unwrap_or(0);
            let service = existing.get(&t.name);
            // An existing service keeps its ForceUpdate counter.
            let force = service
                .and_then(|s| s.spec["TaskTemplate"]["ForceUpdate"].as_u64())
                .unwrap_or(0);
            let spec = spec::service_spec(
                &release,
                &image,
                &t.name,
                &t.command,
                replicas,
                force,
                self.timings(),
            )?;
            match service {
                Some(service) => {
                    self.docker
                        .service_update(&service.id, service.version.index, &spec)
                        .await?;
                }
                None => {
                    self.docker.service_create(&spec).await?;
                }
            }
        }
        for (process_type, service) in &existing {
            if !release.types.iter().any(|t| &t.name == process_type) {
                self.docker.service_remove(&service.id).await?;
            }
        }
        lock(&self.stopped).clear();
        *applied = Some(Applied { release, formation });
        Ok(())
    }

    pub(super) async fn scale(&self, changes: Vec<FormationChange>) -> Result<(), SwarmError> {
        let mut applied = self.applied.lock().await;
        let Some(applied) = applied.as_mut() else {
            return Ok(());
        };
        let known: Vec<FormationChange> = changes
            .into_iter()
            .filter(|c| c.process_type == "all" || applied.formation.get(&c.process_type).is_some())
            .collect();
        let before = applied.formation.clone();
        applied
            .formation
            .apply(&known)
            .map_err(|e| SwarmError::Invalid(e.to_string()))?;
        for (process_type, quantity) in applied.formation.entries() {
            let stopped = lock(&self.stopped).remove(process_type).is_some();
            if before.get(process_type) == Some(*quantity) && !stopped {
                continue;
            }
            let name = object_name(&self.app, process_type)?;
            let quantity = *quantity;
            self.update_service(&name, |spec| {
                spec["Mode"] = json!({ "Replicated": { "Replicas": quantity } });
            })
            .await?;
        }
        Ok(())
    }

    async fn force_update(&self, process_type: &str) -> Result<(), SwarmError> {
        let name = object_name(&self.app, process_type)?;
        let restore = lock(&self.stopped).remove(process_type);
        self.update_service(&name, |spec| {
            let force = spec["TaskTemplate"]["ForceUpdate"].as_u64().unwrap_or(0);
            spec["TaskTemplate"]["ForceUpdate"] = json!(force + 1);
            if let Some(quantity) = restore {
                spec["Mode"] = json!({ "Replicated": { "Replicas": quantity } });
            }
        })
        .await
    }

    pub(super) async fn types(&self) -> Vec<String> {
        self.applied
            .lock()
            .await
            .as_ref()
            .map(|a| a.release.types.iter().map(|t| t.name.clone()).collect())
            .unwrap_or_default()
    }

    /// `web.2` → (`web`, 2).
    fn split_dyno(target: &str) -> Option<(&str, u32)> {
        let (t, n) = target.rsplit_once('.')?;
        Some((t, n.parse().ok()?))
    }

    pub(super) async fn restart(
        self: &Arc<Self>,
        target: Option<String>,
    ) -> Result<(), EngineError> {
        let types = self.types().await;
        match target {
            None => {
                for t in &types {
                    self.force_update(t).await.map_err(engine_error)?;
                }
                Ok(())
            }
            Some(t) if types.contains(&t) => self.force_update(&t).await.map_err(engine_error),
            Some(target) => {
                let Some((process_type, _)) = Self::split_dyno(&target) else {
                    return Err(EngineError::UnknownDyno(target));
                };
                if !types.iter().any(|t| t == process_type) {
                    return Err(EngineError::UnknownDyno(target));
                }
                // One task: stop its container gracefully, and Swarm's
                // restart policy (`any`) starts a new task in the same slot.
                let dynos = {
                    self.refresh().await.map_err(engine_error)?;
                    lock(&self.snapshot).dynos.clone()
                };
                let Some(dyno) = dynos.iter().find(|d| d.info.name == target) else {
                    return Err(EngineError::UnknownDyno(target));
                };
                let local = self.local_node().await.map_err(engine_error)?;
                if dyno.node.as_deref() != Some(local.as_str()) {
                    return Err(EngineError::Engine(format!(
                        "{target} runs on another node, where crew cannot reach its container; restart `{process_type}` instead"
                    )));
                }
                let task = self
                    .docker
                    .task_inspect(&dyno.task)
                    .await
                    .map_err(engine_error)?;
                let Some(container) = task.container_id().map(str::to_string) else {
                    return Err(EngineError::Engine(format!(
                        "{target} has no container yet"
                    )));
                };
                let docker = self.docker.clone();
                let grace = self.config.stop_grace.as_secs();
                tokio::spawn(async move {
                    let _ = docker.container_stop(&container, grace).await;
                });
                Ok(())
            }
        }
    }

    pub(super) async fn stop(&self, target: String) -> Result<(), EngineError> {
        let types = self.types().await;
        if types.contains(&target) {
            let name = object_name(&self.app, &target).map_err(engine_error)?;
            let service = self
                .docker
                .service_inspect(&name)
                .await
                .map_err(engine_error)?;
            let quantity = service.replicas().unwrap_or(0);
            self.update_service(&name, |spec| {
                spec["Mode"] = json!({ "Replicated": { "Replicas": 0 } });
            })
            .await
            .map_err(engine_error)?;
            lock(&self.stopped)
                .entry(target)
                .or_insert(u32::try_from(quantity).unwrap_or(0));
            return Ok(());
        }
        match Self::split_dyno(&target) {
            Some((t, _)) if types.iter().any(|k| k == t) => Err(EngineError::Engine(format!(
                "Swarm cannot stop one task of a service: it would start another in its slot. Stop `{t}`, or scale it down (the highest numbers go first)"
            ))),
            _ => Err(EngineError::UnknownDyno(target)),
        }
    }
}
