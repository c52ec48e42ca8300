//! One-offs on the cluster: a Job that is never retried, labelled `run.N`;
//! an attached one also gets stdin (and a TTY for a terminal), and crew
//! attaches to its pod ([`attach`](crate::attach)).

use std::sync::Arc;
use std::time::Duration;

use crew_cluster::kubernetes::{self as manifests, PROCESS_TYPE};
use crew_engine::{Attachment, DynoInfo, EngineError, RunRequest};
use crew_logs::LogEvent;
use crew_runtime::DynoInput;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::EnvVar;
use kube::api::{Api, ListParams};

use crate::attach;
use crate::placement::{HOST_ONLY, KubernetesPlacement};
use crate::pods;
use crate::requests::{cluster_error, kube_error, manager_post};

impl KubernetesPlacement {
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

    pub(crate) async fn run_one_off(
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
}

/// Names the one-off `run.N` on its pod and in its environment (where the
/// cluster would put the pod's name), keeps its command for `ps`, and adds the
/// request's own variables, which win over the config vars as `env` wins over
/// `envFrom`. An attached one-off's container gets stdin, closed when the
/// first attach ends (`stdinOnce`), and a TTY when the client has a terminal.
pub(crate) fn label_one_off(job: &mut Job, name: &str, request: &RunRequest) {
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
