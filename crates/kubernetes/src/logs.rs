//! The app's log from the cluster: every pod's output, and crew's lines about
//! state changes, into the app's log channel.
//!
//! One task per app polls the pod list every few seconds, the simplest thing
//! that sees pods come and go without a watch (which would need kube's
//! `runtime` feature and resourceVersion bookkeeping). For each pod whose
//! container runs, a follower reads `pods/log?follow=true&timestamps=true`
//! until the stream ends, which it does when the container exits. A container
//! that restarts is followed again from the last line's timestamp, and lines
//! not newer than that are dropped, so a restart neither loses nor repeats
//! lines. A pod that ran and ended between two polls (a short one-off, a quick
//! crash) is read once, without follow.
//! A one-off that ended says `Process exited with status N` once its log has
//! been read. An attached one-off's pod gets its state lines but not its
//! output, which is the attached client's, as crew's own attached one-offs
//! keep theirs out of the log.
//!
//! What is lost: output the kubelet no longer keeps (it keeps the current and
//! the previous container's), and lines written while crew's server was down.
//! History beyond that needs a log shipper, which stays on paper.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use crew_engine::DynoState;
use crew_logs::LogEvent;
use futures_util::io::AsyncBufReadExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, LogParams};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::pods::{self, LogState, TypeInfo};

/// What the poller knows of one pod between polls.
#[derive(Default)]
struct Seen {
    state: Option<DynoState>,
    /// The timestamp of the last line passed on.
    last: Arc<Mutex<Option<Timestamp>>>,
    follower: Option<Follower>,
    /// The restart count whose ended container was read, so it is read once.
    read_ended: Option<u32>,
    /// A one-off's `Process exited with status N` was written.
    exit_said: bool,
}

/// A follower task, aborted when dropped: aborting the poller drops what it
/// knows, and so stops every follower with it, where a bare `JoinHandle`
/// would leave them reading.
struct Follower(JoinHandle<()>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where the poller looks, and where lines go.
pub(crate) struct Source {
    pub pods: Api<Pod>,
    pub selector: String,
    pub types: Arc<Mutex<Vec<(String, TypeInfo)>>>,
    pub logs: mpsc::Sender<LogEvent>,
    pub interval: Duration,
}

/// Polls until the log channel closes or the task is aborted. The first poll
/// waits one interval, since `apply` has just made the pods.
pub(crate) fn spawn(source: Source) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: HashMap<String, Seen> = HashMap::new();
        loop {
            tokio::time::sleep(source.interval).await;
            if source.logs.is_closed() {
                break;
            }
            let list = match source
                .pods
                .list(&ListParams::default().labels(&source.selector))
                .await
            {
                Ok(list) => list.items,
                Err(error) => {
                    tracing::debug!(%error, "listing pods for logs");
                    continue;
                }
            };
            let types = source
                .types
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let dynos = pods::dynos(&list, &types);
            seen.retain(|uid, _| dynos.iter().any(|d| d.uid == *uid));
            for dyno in dynos {
                let name: Arc<str> = Arc::from(dyno.info.name.as_str());
                let entry = seen.entry(dyno.uid.clone()).or_default();
                match entry.state {
                    Some(before) if before != dyno.info.state => {
                        let event = LogEvent::platform(
                            &name,
                            format!(
                                "State changed from {} to {}",
                                before.as_str(),
                                dyno.info.state.as_str()
                            ),
                        );
                        if source.logs.send(event).await.is_err() {
                            return;
                        }
                    }
                    _ => {}
                }
                entry.state = Some(dyno.info.state);
                if dyno.attached || entry.follower.as_ref().is_some_and(|f| !f.0.is_finished()) {
                    continue;
                }
                let follow = match dyno.logs {
                    LogState::Running => true,
                    LogState::Ended { restarts } if entry.read_ended != Some(restarts) => {
                        entry.read_ended = Some(restarts);
                        false
                    }
                    _ => {
                        // Its log read to the end, a one-off says how it ended,
                        // after its output, as crew's own one-offs do (an
                        // attached one's session says it itself).
                        if let (Some(_), Some(code), false) =
                            (&dyno.job, dyno.exit_code, entry.exit_said)
                        {
                            entry.exit_said = true;
                            let event = LogEvent::platform(
                                &name,
                                format!("Process exited with status {code}"),
                            );
                            if source.logs.send(event).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                };
                entry.follower = Some(Follower(tokio::spawn(read(
                    source.pods.clone(),
                    dyno.pod,
                    name,
                    follow,
                    entry.last.clone(),
                    source.logs.clone(),
                ))));
            }
        }
    })
}

/// Reads one pod's log from after `last`, each line an event under `dyno`.
async fn read(
    pods: Api<Pod>,
    pod: String,
    dyno: Arc<str>,
    follow: bool,
    last: Arc<Mutex<Option<Timestamp>>>,
    logs: mpsc::Sender<LogEvent>,
) {
    read_log(&pods, &pod, follow, &last, |at, mut line| {
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let event = LogEvent::Output {
            dyno: dyno.clone(),
            at: SystemTime::from(at),
            lines: Bytes::from(line),
        };
        let logs = logs.clone();
        async move { logs.send(event).await.is_ok() }
    })
    .await;
}

/// Reads one pod's log (its only container's, or a Job's) with timestamps,
/// following it while the container runs if `follow`, and hands each line
/// newer than `last` to `line` with its time, `last` moved on first. The
/// read ends with the stream (the container ended, or the connection did),
/// or when `line` answers false. Read again with the same `last`, a log
/// neither loses nor repeats a line.
pub(crate) async fn read_log<F, Fut>(
    pods: &Api<Pod>,
    pod: &str,
    follow: bool,
    last: &Mutex<Option<Timestamp>>,
    mut line: F,
) where
    F: FnMut(Timestamp, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // kube sends sinceTime rounded to the nearest second, which can round
    // up past lines not yet passed on; floored here, the rounding changes
    // nothing, and the lines of that second already passed on are dropped
    // below by their timestamps.
    let since = last
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .and_then(|t| Timestamp::from_second(t.as_second()).ok());
    let params = LogParams {
        follow,
        timestamps: true,
        since_time: since,
        ..LogParams::default()
    };
    let stream = match pods.log_stream(pod, &params).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%error, pod, "reading a pod's log");
            return;
        }
    };
    let mut stream = std::pin::pin!(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stream.read_until(b'\n', &mut buf).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, pod, "a pod's log stream ended");
                return;
            }
        }
        let Some((at, text)) = split_timestamp(&buf) else {
            continue;
        };
        {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|l| at <= l) {
                continue;
            }
            *last = Some(at);
        }
        if !line(at, text.to_vec()).await {
            return;
        }
    }
}

/// `2026-01-01T00:00:01.5Z hello\n` → the time and `hello\n`. The kubelet
/// puts an RFC 3339 time and one space before every line when asked for
/// timestamps; a line without one is not the kubelet's and is skipped.
pub(crate) fn split_timestamp(line: &[u8]) -> Option<(Timestamp, &[u8])> {
    let space = line.iter().position(|&b| b == b' ')?;
    let stamp = std::str::from_utf8(&line[..space]).ok()?;
    let at: Timestamp = stamp.parse().ok()?;
    Some((at, &line[space + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_splits_into_its_time_and_text() {
        let (at, text) = split_timestamp(b"2026-01-01T00:00:01.5Z hello world\n").expect("split");
        assert_eq!(at.to_string(), "2026-01-01T00:00:01.5Z");
        assert_eq!(text, b"hello world\n");
    }

    #[test]
    fn text_may_be_empty_or_not_utf8() {
        let (_, text) = split_timestamp(b"2026-01-01T00:00:01Z \n").expect("split");
        assert_eq!(text, b"\n");
        let (_, text) = split_timestamp(b"2026-01-01T00:00:01Z \xff\xfe\n").expect("split");
        assert_eq!(text, b"\xff\xfe\n");
    }

    #[test]
    fn a_line_without_a_time_is_skipped() {
        assert!(split_timestamp(b"hello world\n").is_none());
        assert!(split_timestamp(b"nospace").is_none());
    }
}
