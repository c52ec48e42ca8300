//! Attached one-offs: `crew run` with a terminal or a pipe, as a Job whose
//! pod crew attaches to through `pods/attach`.
//!
//! The Job is made by the placement (never retried, `restartPolicy: Never`,
//! its container with `stdin`, `stdinOnce` and, for a terminal, `tty`). This
//! module does the rest, in a task per one-off:
//!
//! 1. **Wait** for the Job's pod (label `batch.kubernetes.io/job-name`) to be
//!    `Running`, polling, until a deadline: an image pull can take minutes,
//!    but a pod stuck on a bad image or config fails at once with the
//!    kubelet's reason.
//! 2. **Attach** over a WebSocket (kube's `ws` feature; the channel protocol
//!    `v5.channel.k8s.io`, or `v4` from an older server): stdin, stdout, and
//!    stderr unless there is a terminal (a terminal has one stream). The
//!    attach's ends become the engine's [`Attachment`]: its stdout (and
//!    stderr, merged) is the output, its stdin the console's input, and a
//!    resize goes to the attach's terminal-size channel. The requested size is
//!    sent first, since the pod's terminal starts at the runtime's default.
//! 3. **The exit code.** The kubelet ends an attach with a `Status` on the
//!    error channel that says `Success` whatever the container's exit code
//!    (only `exec` reports `NonZeroExitCode`), so the code is taken from a
//!    status that carries one, else from the pod's
//!    `containerStatuses[].state.terminated.exitCode`, polled until a deadline
//!    once the attach has ended, as `kubectl run --attach` does.
//! 4. **Hang-up** (the client went away, or the session ended) deletes the
//!    Job, with its pod, which stops the process as a closing terminal would.
//!
//! A pod that ended before crew could attach (a quick command) is not an
//! error: its log is the output and its terminated state the exit code. What
//! it printed while running but before the attach was made is lost, as with
//! `kubectl run -i` ("If you don't see a command prompt, try pressing
//! enter"). With the v4 protocol, closing stdin (end of a pipe) can only be
//! said by closing the whole connection, so output after that is lost; the
//! exit code still comes from the pod.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crew_engine::{Attachment, Hangup};
use crew_logs::LogEvent;
use crew_runtime::{Console, ExitStatus, Output, Resize};
use futures_util::io::AsyncReadExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, DeleteParams, ListParams, LogParams, TerminalSize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::pods::{self, CONTAINER, terminated};

/// The label the Job controller puts on its pods.
const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// How much of a stream kube buffers between the WebSocket and crew, each
/// way: more than kube's 1 KiB, so that a burst of output is not a
/// round-trip per kilobyte.
const BUFFER: usize = 64 * 1024;
/// How long the output may take to drain after the exit is known.
const DRAIN: Duration = Duration::from_secs(5);

/// Deadlines and pacing of one attached session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How often the pod is looked at while waiting.
    pub poll: Duration,
    /// How long the pod may take to run (scheduling, image pull).
    pub start: Duration,
    /// How long an attached session may last: the Job's own deadline, and a
    /// little more for the cluster to end it.
    pub session: Duration,
    /// How long, after the attach ended, the pod may take to show its
    /// container's exit.
    pub exit: Duration,
}

/// One attached one-off, its Job made.
pub(crate) struct Session {
    pub pods: Api<Pod>,
    pub jobs: Api<Job>,
    pub job: String,
    /// `run.N`, for the app's log.
    pub dyno: Arc<str>,
    /// The terminal's size, when it has one.
    pub terminal: Option<(u16, u16)>,
    pub timing: Timing,
    pub logs: mpsc::Sender<LogEvent>,
}

/// Starts the session's task and hands back its ends. Dropping the hang-up
/// stops the task and deletes the Job.
pub(crate) fn start(session: Session) -> Attachment {
    let (io_tx, io_rx) = oneshot::channel();
    let (exit_tx, exit_rx) = oneshot::channel();
    let jobs = session.jobs.clone();
    let job = session.job.clone();
    let task = tokio::spawn(session.run(io_tx, exit_tx));
    let abort = task.abort_handle();
    let runtime = tokio::runtime::Handle::current();
    let hangup = Hangup::new(move || {
        abort.abort();
        // Background propagation: a Job deleted with the API's default
        // (orphan, for batch/v1) would leave its pod running.
        runtime.spawn(async move {
            match jobs.delete(&job, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(error) => tracing::warn!(%error, job, "deleting an attached one-off's Job"),
            }
        });
    });
    Attachment {
        io: io_rx,
        exit: exit_rx,
        hangup,
    }
}

type IoSender = oneshot::Sender<Result<(Output, Option<Console>), String>>;

/// Where the pod got to while crew waited.
pub(crate) enum Started {
    Running(String),
    /// It ran and ended already.
    Ended(Box<Pod>),
}

impl Session {
    async fn run(self, io: IoSender, exit: oneshot::Sender<ExitStatus>) {
        let started = wait_started(&self.pods, &self.job, self.timing.start, self.timing.poll);
        let pod = match started.await {
            Ok(Started::Running(pod)) => pod,
            Ok(Started::Ended(pod)) => return self.replay(*pod, io, exit).await,
            Err(why) => {
                let _ = io.send(Err(why));
                return;
            }
        };
        let tty = self.terminal.is_some();
        let params = AttachParams {
            container: Some(CONTAINER.to_string()),
            stdin: true,
            stdout: true,
            // kube refuses stderr with a terminal: a terminal is one stream.
            stderr: !tty,
            tty,
            max_stdin_buf_size: Some(BUFFER),
            max_stdout_buf_size: Some(BUFFER),
            max_stderr_buf_size: Some(BUFFER),
        };
        let mut attached = match self.pods.attach(&pod, &params).await {
            Ok(attached) => attached,
            Err(error) => {
                // The container may have ended between the look and the
                // attach: then its log has everything.
                if let Ok(Some(p)) = self.pods.get_opt(&pod).await
                    && ended(&p)
                {
                    return self.replay(p, io, exit).await;
                }
                let _ = io.send(Err(format!("attaching to pod {pod}: {error}")));
                return;
            }
        };
        let (output, copier): (Output, _) = match (attached.stdout(), attached.stderr()) {
            (Some(out), Some(err)) => {
                let (reader, writer) = tokio::io::duplex(BUFFER);
                (
                    Box::new(reader),
                    Some(tokio::spawn(merge(out, err, writer))),
                )
            }
            (Some(out), None) => (Box::new(out), None),
            _ => {
                let _ = io.send(Err("the attach gave no output stream".to_string()));
                return;
            }
        };
        let resize = match (self.terminal, attached.terminal_size()) {
            (Some((cols, rows)), Some(mut sizes)) => {
                // The first size is the one asked for; the channel holds 10,
                // and is empty now.
                let _ = sizes.try_send(size(cols, rows));
                let sizes = Mutex::new(sizes);
                Some(Resize::new(move |cols, rows| {
                    // A full channel drops this size; the next one wins anyway.
                    let _ = sizes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .try_send(size(cols, rows));
                }))
            }
            _ => None,
        };
        let console = attached.stdin().map(|input| Console {
            input: Box::new(input) as Box<dyn AsyncWrite + Send + Unpin>,
            resize,
        });
        let status = attached.take_status();
        if io.send(Ok((output, console))).is_err() {
            // Nobody is attached any more; the hang-up deletes the Job.
            return;
        }
        let status = match status {
            Some(status) => tokio::time::timeout(self.timing.session, status)
                .await
                .unwrap_or(None),
            None => None,
        };
        // The attach has ended (or is given up): its task goes with it.
        drop(attached);
        let code = match status.as_ref().and_then(status_exit_code) {
            Some(code) => Some(code),
            None => self.terminated_code(&pod).await,
        };
        if let Some(copier) = copier {
            let _ = tokio::time::timeout(DRAIN, copier).await;
        }
        let code = code.unwrap_or_else(|| {
            let said = status
                .as_ref()
                .and_then(|s| s.message.clone())
                .unwrap_or_default();
            tracing::warn!(pod, said, "an attached one-off's exit code is unknown");
            255
        });
        self.exited(code, exit).await;
    }

    /// A pod that ended before crew attached: its log, and its exit code.
    async fn replay(&self, pod: Pod, io: IoSender, exit: oneshot::Sender<ExitStatus>) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let read = async {
            let stream = self.pods.log_stream(&name, &LogParams::default()).await?;
            let mut stream = std::pin::pin!(stream);
            let mut text = Vec::new();
            stream
                .read_to_end(&mut text)
                .await
                .map_err(kube::Error::ReadEvents)?;
            Ok::<_, kube::Error>(text)
        };
        let text = match tokio::time::timeout(self.timing.exit, read).await {
            Ok(Ok(text)) => text,
            Ok(Err(error)) => {
                let _ = io.send(Err(format!("reading pod {name}'s log: {error}")));
                return;
            }
            Err(_) => {
                let _ = io.send(Err(format!("reading pod {name}'s log timed out")));
                return;
            }
        };
        let output: Output = Box::new(std::io::Cursor::new(text));
        if io.send(Ok((output, None))).is_err() {
            return;
        }
        let code = terminated(&pod).unwrap_or(255);
        self.exited(code, exit).await;
    }

    /// Polls the pod until its container shows how it ended, or the deadline.
    async fn terminated_code(&self, pod: &str) -> Option<i32> {
        let deadline = Instant::now() + self.timing.exit;
        loop {
            match self.pods.get_opt(pod).await {
                Ok(Some(p)) => {
                    if let Some(code) = terminated(&p) {
                        return Some(code);
                    }
                }
                // Deleted (stopped by someone) before it said anything.
                Ok(None) => return None,
                Err(error) => tracing::debug!(%error, pod, "reading a one-off's exit"),
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    async fn exited(&self, code: i32, exit: oneshot::Sender<ExitStatus>) {
        let _ = exit.send(ExitStatus::Code(code));
        let _ = self
            .logs
            .send(LogEvent::platform(
                &self.dyno,
                format!("Process exited with status {code}"),
            ))
            .await;
    }
}

/// Polls the pod of the Job `job` (one that is never retried) until it runs,
/// ends, is stuck, or `start` is over, looking every `poll`.
pub(crate) async fn wait_started(
    pods: &Api<Pod>,
    job: &str,
    start: Duration,
    poll: Duration,
) -> Result<Started, String> {
    let deadline = Instant::now() + start;
    let selector = format!("{JOB_NAME}={job}");
    loop {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| format!("waiting for the one-off's pod: {e}"))?;
        // A Job that is never retried has one pod; if the API shows
        // more (an old one being deleted), the newest is the one.
        let pod = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        if let Some(pod) = pod {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if ended(&pod) {
                return Ok(Started::Ended(Box::new(pod)));
            }
            if phase == Some("Failed") {
                return Err(format!("pod {name} failed: {}", why_failed(&pod)));
            }
            if phase == Some("Running") {
                return Ok(Started::Running(name));
            }
            if let Some(stuck) = pods::stuck(&pod) {
                return Err(format!("pod {name} cannot start: {stuck}"));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the one-off's pod did not run within {}s",
                start.as_secs()
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

fn size(cols: u16, rows: u16) -> TerminalSize {
    TerminalSize {
        width: cols,
        height: rows,
    }
}

/// Whether the pod's one-off container has ended for good.
fn ended(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed")) && terminated(pod).is_some()
}

/// What the pod's status says about a failure without a container exit
/// (a deadline, an eviction).
pub(crate) fn why_failed(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let reason = status.and_then(|s| s.reason.as_deref()).unwrap_or("Failed");
    match status.and_then(|s| s.message.as_deref()) {
        Some(message) => format!("{reason}: {message}"),
        None => reason.to_string(),
    }
}

/// The exit code in a status on the error channel, where the server put one:
/// `Failure`, reason `NonZeroExitCode`, a cause `ExitCode` whose message is
/// the number (what `exec` sends; the kubelet's attach says only `Success`,
/// which is no exit code).
pub(crate) fn status_exit_code(status: &Status) -> Option<i32> {
    if status.reason.as_deref() != Some("NonZeroExitCode") {
        return None;
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))?
        .message
        .as_deref()?
        .trim()
        .parse()
        .ok()
}

/// Copies two streams into one, chunk by chunk as they come, as a terminal
/// shows stdout and stderr; ends `out` once both have ended.
async fn merge(
    mut a: impl AsyncRead + Unpin,
    mut b: impl AsyncRead + Unpin,
    mut out: impl AsyncWrite + Unpin,
) {
    let mut buf_a = vec![0u8; 16 * 1024];
    let mut buf_b = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        // Which stream gave how much; the buffers are borrowed again after
        // the reads are done.
        let (from_a, n) = tokio::select! {
            read = a.read(&mut buf_a), if a_open => (true, read.unwrap_or(0)),
            read = b.read(&mut buf_b), if b_open => (false, read.unwrap_or(0)),
        };
        if n == 0 {
            if from_a {
                a_open = false;
            } else {
                b_open = false;
            }
            continue;
        }
        let chunk = if from_a { &buf_a[..n] } else { &buf_b[..n] };
        if out.write_all(chunk).await.is_err() {
            return;
        }
    }
    let _ = out.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(value: serde_json::Value) -> Status {
        serde_json::from_value(value).expect("a status")
    }

    #[test]
    fn an_exec_style_status_carries_the_exit_code() {
        let s = status(serde_json::json!({
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
        }));
        assert_eq!(status_exit_code(&s), Some(3));
    }

    #[test]
    fn success_or_another_failure_is_no_exit_code() {
        let s = status(serde_json::json!({"metadata": {}, "status": "Success"}));
        assert_eq!(status_exit_code(&s), None);
        let s = status(serde_json::json!({
            "metadata": {}, "status": "Failure", "reason": "InternalError",
            "message": "error attaching to container: container not running",
        }));
        assert_eq!(status_exit_code(&s), None);
    }

    #[tokio::test]
    async fn merge_passes_both_streams_and_ends_when_both_end() {
        let (a, mut a_w) = tokio::io::duplex(64);
        let (b, mut b_w) = tokio::io::duplex(64);
        let (mut out, out_w) = tokio::io::duplex(64);
        let task = tokio::spawn(merge(a, b, out_w));
        a_w.write_all(b"out\n").await.expect("write a");
        drop(a_w);
        b_w.write_all(b"err\n").await.expect("write b");
        drop(b_w);
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(5), out.read_to_string(&mut got))
            .await
            .expect("the merge ends")
            .expect("read");
        let mut lines: Vec<&str> = got.lines().collect();
        lines.sort();
        assert_eq!(lines, ["err", "out"]);
        task.await.expect("the task");
    }
}
