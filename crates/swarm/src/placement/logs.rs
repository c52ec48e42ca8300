//! The app's output on a swarm: one follower per service reads `service
//! logs` (follow, timestamps, details) and sends each line as the dyno its
//! task names. Lines older than the placement are not replayed, so a server
//! that restarts adopts running services without repeating their history.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crew_logs::LogEvent;

use super::app::{SwarmApp, lock};
use crate::docker::LogStream;
use crate::logline;
use crate::spec::LABEL_TYPE;

impl SwarmApp {
    /// The dyno a log line's task belongs to.
    async fn dyno_of_task(&self, service_type: &str, task: &str) -> Arc<str> {
        if let Some(name) = lock(&self.snapshot).task_dynos.get(task) {
            return name.clone();
        }
        match self.docker.task_inspect(task).await {
            Ok(t) => {
                let name: Arc<str> = Arc::from(format!("{service_type}.{}", t.slot.unwrap_or(0)));
                lock(&self.snapshot)
                    .task_dynos
                    .insert(task.to_string(), name.clone());
                name
            }
            Err(_) => Arc::from(service_type),
        }
    }

    /// Sends one frame of `service logs` to the app's log, as the dyno
    /// `fixed` names, or else as its task's.
    pub(super) async fn push_line(
        &self,
        service_type: &str,
        fixed: Option<&Arc<str>>,
        frame: &Bytes,
    ) {
        let Some(line) = logline::parse(frame) else {
            return;
        };
        let dyno = match (fixed, &line.task) {
            (Some(name), _) => name.clone(),
            (None, Some(task)) => self.dyno_of_task(service_type, task).await,
            (None, None) => Arc::from(service_type),
        };
        let _ = self
            .logs
            .send(LogEvent::Output {
                dyno,
                at: line.at.unwrap_or_else(SystemTime::now),
                lines: line.text,
            })
            .await;
    }
}

/// Sends one service's output to the log for as long as the service exists.
pub(super) async fn follow(shared: Arc<SwarmApp>, id: String) {
    let process_type = match shared.docker.service_inspect(&id).await {
        Ok(s) => s.label(LABEL_TYPE).unwrap_or("unknown").to_string(),
        Err(_) => return,
    };
    let mut since = shared.since;
    loop {
        let from = since
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        match shared.docker.service_logs(&id, from, true).await {
            Ok(mut stream) => {
                while let Some(Ok((_, frame))) = stream.next().await {
                    if let Some(at) = logline::parse(&frame).and_then(|l| l.at) {
                        since = at + Duration::from_micros(1);
                    }
                    shared.push_line(&process_type, None, &frame).await;
                }
            }
            Err(e) if e.is_not_found() => return,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(e) = shared.docker.service_inspect(&id).await
            && e.is_not_found()
        {
            return;
        }
    }
}

pub(super) async fn next_frame(stream: &mut Option<LogStream>) -> Option<Bytes> {
    match stream {
        Some(s) => match s.next().await {
            Some(Ok((_, frame))) => Some(frame),
            _ => {
                *stream = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}
