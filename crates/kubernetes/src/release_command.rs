//! The release command (Heroku's release phase) on a cluster: a release's
//! `release` command as a Job of the release, run before any of its
//! Deployments is applied.
//!
//! The Job is a detached one-off's (never retried, `restartPolicy: Never`),
//! labelled as the type `release` and the dyno `release.1`, so that `ps`
//! and the app's log name it as Heroku does. crew waits for its pod to run
//! (or to have ended already), follows the pod's log into the pusher's
//! output with the log task's reader, and takes the exit code from the
//! container's terminated state: `pods/log` ends when the container does,
//! and then the pod says how. The Job is deleted afterwards, with its pod.

use std::sync::Mutex;
use std::time::Duration;

use crew_cluster::kubernetes::{self as manifests, PROCESS_TYPE};
use crew_engine::{EngineError, RELEASE_DYNO, ReleaseCommand, ReleaseSpec, RunRequest};
use crew_procfile::Formation;
use crew_runtime::ExitStatus;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::attach::{self, Started};
use crate::one_off::label_one_off;
use crate::placement::KubernetesPlacement;
use crate::requests::{cluster_error, kube_error, manager_post};
use crate::{logs, pods};

/// The process type label of a release command's Job and pod.
pub(crate) const RELEASE_TYPE: &str = "release";

/// Names and labels a one-off's Job, and its pod, as `app`'s release
/// command: the cluster names it `APP-release-xxxxx`.
pub(crate) fn label(job: &mut Job, app: &str) {
    job.metadata.generate_name = Some(format!("{app}-{RELEASE_TYPE}-"));
    let set = |meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(PROCESS_TYPE.to_string(), RELEASE_TYPE.to_string());
    };
    set(&mut job.metadata);
    if let Some(spec) = job.spec.as_mut() {
        set(spec.template.metadata.get_or_insert_with(Default::default));
    }
}

/// How long a release command's pod may take, and how often it is looked at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long the pod may take to run (scheduling, the image pull).
    pub start: Duration,
    /// How often the pod is looked at while crew waits.
    pub poll: Duration,
    /// The command's whole limit, from now: its start included.
    pub limit: Duration,
}

/// Follows the release command of the Job `job` to its end: every line of
/// its pod's log to `output`, then its container's exit code. An error says
/// why there is no exit code (the pod never ran, was deleted, or the limit
/// was reached).
pub(crate) async fn follow(
    pods: &Api<Pod>,
    job: &str,
    timing: Timing,
    output: &mpsc::UnboundedSender<String>,
) -> Result<i32, String> {
    let deadline = Instant::now() + timing.limit;
    let over = || {
        format!(
            "the release command did not finish within {}s and was stopped",
            timing.limit.as_secs()
        )
    };
    let pod =
        match attach::wait_started(pods, job, timing.start.min(timing.limit), timing.poll).await? {
            Started::Running(pod) => pod,
            // Its whole log can still be read, and the loop below reads it.
            Started::Ended(pod) => pod.metadata.name.unwrap_or_default(),
        };
    // Lines already passed on are never passed on again when the log is
    // followed anew (its stream may end before the container does).
    let last = Mutex::new(None);
    loop {
        let read = logs::read_log(pods, &pod, true, &last, |_, line| {
            let text = String::from_utf8_lossy(&line);
            let sent = output.send(text.trim_end_matches(['\n', '\r']).to_string());
            std::future::ready(sent.is_ok())
        });
        if tokio::time::timeout_at(deadline, read).await.is_err() {
            return Err(over());
        }
        match pods.get_opt(&pod).await {
            Ok(Some(p)) => {
                if let Some(code) = pods::terminated(&p) {
                    return Ok(code);
                }
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed") {
                    return Err(format!("pod {pod} failed: {}", attach::why_failed(&p)));
                }
            }
            Ok(None) => return Err(format!("pod {pod} was deleted before it ended")),
            // Asked again after the next read.
            Err(error) => tracing::debug!(%error, pod, "reading the release command's pod"),
        }
        if Instant::now() >= deadline {
            return Err(over());
        }
        tokio::time::sleep(timing.poll).await;
    }
}

/// A release command's Job, deleted with its pod once crew is done with it:
/// awaited on the way out, or in a task of its own if crew stops waiting
/// first (the platform gave up).
pub(crate) struct JobRemoval {
    jobs: Api<Job>,
    name: Option<String>,
}

impl JobRemoval {
    pub(crate) fn new(jobs: Api<Job>, name: String) -> JobRemoval {
        JobRemoval {
            jobs,
            name: Some(name),
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    pub(crate) async fn delete(mut self) {
        if let Some(name) = self.name.take() {
            delete(&self.jobs, &name).await;
        }
    }
}

impl Drop for JobRemoval {
    fn drop(&mut self) {
        if let (Some(name), Ok(runtime)) = (self.name.take(), tokio::runtime::Handle::try_current())
        {
            let jobs = self.jobs.clone();
            runtime.spawn(async move { delete(&jobs, &name).await });
        }
    }
}

/// Background propagation: a Job deleted with the API's default (orphan, for
/// batch/v1) would leave its pod behind. A failure is only logged: the Job
/// has ended, and the cluster removes it an hour after anyway (its
/// `ttlSecondsAfterFinished`).
async fn delete(jobs: &Api<Job>, name: &str) {
    match jobs.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(error) => tracing::warn!(%error, job = name, "deleting the release command's Job"),
    }
}

impl KubernetesPlacement {
    /// A release's release command: a Job of the release (its image, its
    /// Secret), never retried, whose pod's log is followed into
    /// `command.output` and whose container's exit code is the answer. The
    /// Job goes afterwards, however it ended. The release's Deployments are
    /// not touched: the platform applies the release only if this succeeds.
    pub(crate) async fn run_release_command(
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
        label(&mut job, &self.app);
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
        let job = JobRemoval::new(jobs, name);
        let ran = follow(
            &Api::namespaced(self.client.clone(), &self.namespace),
            job.name(),
            Timing {
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
}
