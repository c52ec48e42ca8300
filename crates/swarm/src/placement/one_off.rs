//! One-offs on a swarm. Detached (`crew run --detached`): a
//! `replicated-job` service `APP-run-N` that runs once, watched until it
//! ends for its output and exit code, then removed. Attached: a container
//! on this node, since Swarm cannot attach to a task.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crew_engine::{DynoInfo, EngineError, ReleaseSpec, RunRequest};
use crew_runtime::{Console, DynoInput, ExitStatus, Output, Resize};
use serde_json::json;
use tokio::sync::oneshot;

use super::app::{SwarmApp, engine_error, lock};
use super::attach::{attach_and_start, demux_into};
use super::logs::next_frame;
use super::view::{exit_code, is_terminal, task_time};
use crate::SwarmError;
use crate::docker::Docker;
use crate::spec::{self, LABEL_DYNO, RUN_TYPE, run_name};

/// The ends of an attached one-off on this node, shaped like
/// [`crew_engine::Attachment`] (see the crate's notes on why it is not one).
pub struct SwarmAttachment {
    pub io: oneshot::Receiver<Result<(Output, Option<Console>), String>>,
    pub exit: oneshot::Receiver<ExitStatus>,
    /// Dropped, it sends the one-off SIGHUP, as a closing terminal would.
    pub hangup: HangupGuard,
}

/// Sends SIGHUP to an attached one-off's container when dropped.
pub struct HangupGuard {
    docker: Arc<Docker>,
    container: String,
    runtime: tokio::runtime::Handle,
}

impl Drop for HangupGuard {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let id = self.container.clone();
        // A container that has already ended answers 409; nothing to do then.
        self.runtime.spawn(async move {
            let _ = docker.container_kill(&id, "SIGHUP").await;
        });
    }
}

impl SwarmApp {
    async fn current_release(&self) -> Result<ReleaseSpec, EngineError> {
        self.applied
            .lock()
            .await
            .as_ref()
            .map(|a| a.release.clone())
            .ok_or(EngineError::NoRelease)
    }

    /// The next `run.N`: one past the highest the swarm knows of for the
    /// app, or than this placement has handed out.
    async fn next_run_number(&self) -> u32 {
        let mut highest = 0;
        if let Ok(services) = self.services().await {
            for s in services {
                if let Some(n) = s
                    .label(LABEL_DYNO)
                    .and_then(|d| d.strip_prefix("run."))
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    highest = highest.max(n);
                }
            }
        }
        let next = highest + 1;
        let mine = self.run_numbers.fetch_max(next, Ordering::SeqCst);
        if mine >= next {
            self.run_numbers.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            next
        }
    }

    pub(super) async fn run_detached(
        self: &Arc<Self>,
        request: RunRequest,
    ) -> Result<DynoInfo, EngineError> {
        let release = self.current_release().await?;
        let number = self.next_run_number().await;
        let spec = spec::job_spec(
            &release,
            &self.image(&release),
            number,
            &request.command,
            &request.env,
        );
        let id = self
            .docker
            .service_create(&spec)
            .await
            .map_err(engine_error)?;
        let name: Arc<str> = Arc::from(format!("{RUN_TYPE}.{number}"));
        self.log_lifecycle(
            &name,
            format!("Starting process with command `{}`", request.command),
        )
        .await;
        let watcher = tokio::spawn(watch_job(self.clone(), id, name.clone()));
        lock(&self.background).push(watcher);
        Ok(DynoInfo::starting_one_off(
            number,
            request.command,
            None,
            None,
        ))
    }

    pub(super) async fn run_attached(
        self: &Arc<Self>,
        request: RunRequest,
    ) -> Result<(DynoInfo, SwarmAttachment), SwarmError> {
        let release = self
            .current_release()
            .await
            .map_err(|e| SwarmError::Invalid(e.to_string()))?;
        let number = self.next_run_number().await;
        let tty = match request.input {
            DynoInput::Terminal { cols, rows } => Some((cols, rows)),
            _ => None,
        };
        let config = spec::container_config(
            &release,
            &self.image(&release),
            &format!("{RUN_TYPE}.{number}"),
            &request.command,
            &request.env,
            tty,
        );
        let id = self
            .docker
            .container_create(&run_name(&self.app, number), &config)
            .await?;
        let name: Arc<str> = Arc::from(format!("{RUN_TYPE}.{number}"));
        let (io_tx, io_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        let hangup = HangupGuard {
            docker: self.docker.clone(),
            container: id.clone(),
            runtime: runtime.clone(),
        };
        self.log_lifecycle(
            &name,
            format!("Starting process with command `{}`", request.command),
        )
        .await;
        let shared = self.clone();
        let dyno = name.clone();
        tokio::spawn(async move {
            let docker = shared.docker.clone();
            let attached = match attach_and_start(&docker, &id).await {
                Ok(a) => a,
                Err(e) => {
                    let _ = io_tx.send(Err(e.to_string()));
                    return;
                }
            };
            shared
                .log_lifecycle(&dyno, "State changed from starting to up")
                .await;
            let (read, write) = tokio::io::split(attached);
            let mut copier = None;
            let output: Output = if tty.is_some() {
                Box::new(read)
            } else {
                let (reader, writer) = tokio::io::duplex(64 * 1024);
                copier = Some(tokio::spawn(demux_into(read, writer)));
                Box::new(reader)
            };
            let resize = tty.map(|_| {
                let docker = docker.clone();
                let id = id.clone();
                let runtime = runtime.clone();
                Resize::new(move |cols, rows| {
                    let docker = docker.clone();
                    let id = id.clone();
                    runtime.spawn(async move {
                        let _ = docker.container_resize(&id, cols, rows).await;
                    });
                })
            });
            let console = Console {
                input: Box::new(write),
                resize,
            };
            let _ = io_tx.send(Ok((output, Some(console))));
            let code = docker.container_wait(&id).await.unwrap_or(255);
            let code = i32::try_from(code).unwrap_or(255);
            // The output is complete before the container goes.
            if let Some(copier) = copier {
                let _ = copier.await;
            } else {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let _ = exit_tx.send(ExitStatus::Code(code));
            shared
                .log_lifecycle(&dyno, format!("Process exited with status {code}"))
                .await;
            shared
                .log_lifecycle(&dyno, "State changed from up to complete")
                .await;
            let _ = docker.container_remove(&id).await;
        });
        let info = DynoInfo::starting_one_off(number, request.command, None, None);
        Ok((
            info,
            SwarmAttachment {
                io: io_rx,
                exit: exit_rx,
                hangup,
            },
        ))
    }
}

/// Follows a detached one-off: its output to the log, then its exit code
/// from the task's status, then the job service goes.
async fn watch_job(shared: Arc<SwarmApp>, id: String, name: Arc<str>) {
    let docker = shared.docker.clone();
    let mut stream = docker.service_logs(&id, 0.0, true).await.ok();
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let mut up = false;
    let finished = loop {
        tokio::select! {
            frame = next_frame(&mut stream) => {
                if let Some(frame) = frame {
                    shared.push_line(RUN_TYPE, Some(&name), &frame).await;
                }
            }
            _ = tick.tick() => {
                let tasks = docker.tasks(&json!({ "service": [id.clone()] })).await;
                let Ok(tasks) = tasks else { continue };
                let Some(task) = tasks.iter().max_by_key(|t| task_time(t)) else { continue };
                let state = task.status.state.as_str();
                if !up && (state == "running" || is_terminal(state)) {
                    up = true;
                    shared.log_lifecycle(&name, "State changed from starting to up").await;
                }
                if is_terminal(state) {
                    break task.clone();
                }
            }
        }
    };
    // Lines still on their way: read until the stream is quiet.
    while stream.is_some() {
        match tokio::time::timeout(Duration::from_millis(700), next_frame(&mut stream)).await {
            Ok(Some(frame)) => shared.push_line(RUN_TYPE, Some(&name), &frame).await,
            _ => break,
        }
    }
    if finished.status.state == "rejected"
        && let Some(err) = &finished.status.err
    {
        shared
            .log_lifecycle(&name, format!("Could not start: {err}"))
            .await;
    }
    let code = exit_code(&finished);
    shared
        .log_lifecycle(&name, format!("Process exited with status {code}"))
        .await;
    shared
        .log_lifecycle(&name, "State changed from up to complete")
        .await;
    let _ = docker.service_remove(&id).await;
}
