//! Attached `crew run` on Kubernetes, against a stand-in API server.
//!
//! These tests are **our reading of the Kubernetes API, not evidence that a
//! real cluster behaves so**. The stand-in is a real HTTP/1.1 server on
//! 127.0.0.1 (hyper) that a kube `Client` reaches over TCP, as it would an
//! API server: it answers the apply, the Job's create, the pod list with the
//! phases we chose, and the `pods/attach` WebSocket upgrade, where it speaks
//! the channel protocol as we read kube-rs and the Kubernetes sources (the
//! subprotocols `v5.channel.k8s.io` and `v4.channel.k8s.io`; every binary
//! message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 a `Status`
//! as JSON, 4 a terminal size as JSON, and in v5 255 to close a channel).
//! It echoes stdin to stdout. What a kubelet does (when output starts, what
//! the status says, how the container's stdin closes) is only as faithful as
//! that reading; no cluster runs in CI.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crew_engine::{Attachment, Placement, ReleaseSpec, ReleaseType, RunRequest};
use crew_kubernetes::{KubernetesConfig, KubernetesPlacement};
use crew_logs::LogEvent;
use crew_procfile::Formation;
use crew_runtime::{DynoInput, ExitStatus};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use common::{
    channel, empty_list, json_body, json_response, method_not_allowed, upgrade_websocket,
};

const NS: &str = "/api/v1/namespaces/crew-shop";
const JOBS: &str = "/apis/batch/v1/namespaces/crew-shop/jobs";
const JOB: &str = "shop-run-q8z2k";
const POD: &str = "shop-run-q8z2k-7xk2p";
/// Every wait of these tests ends by then.
const WAIT: Duration = Duration::from_secs(20);

/// How the stand-in ends an attach session.
#[derive(Clone, Copy)]
enum Finish {
    /// A `Failure` status with reason `NonZeroExitCode`, as `exec` sends.
    ExitCode(i32),
    /// `Success`, as the kubelet's attach sends whatever the exit code; the
    /// pod then shows the container's exit.
    Success { pod_exit: i32 },
}

/// What a test's stand-in does.
#[derive(Clone)]
struct Script {
    /// The subprotocol it picks from the client's offer.
    protocol: &'static str,
    /// The Job's pod, one entry per list of it; the last one repeats.
    pods: Vec<Value>,
    finish: Finish,
    /// Sent on stderr for every stdin message, when the attach has stderr.
    stderr: &'static [u8],
    /// The pod's log, for a pod that ended before the attach.
    log: &'static str,
}

/// What the stand-in saw.
#[derive(Default)]
struct Seen {
    requests: Vec<String>,
    job: Option<Value>,
    attach_query: BTreeMap<String, String>,
    protocol_offer: String,
    resizes: Vec<Value>,
    stdin_closed: bool,
    deleted: Vec<(String, Value)>,
}

struct Stand {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

impl Stand {
    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().expect("the stand-in's record"))
    }

    /// Waits until `f` holds of what the stand-in saw.
    async fn until(&self, what: &str, f: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.seen(&f) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stand-in never saw {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn stand_in(script: Script) -> Stand {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = (Arc::new(script), seen.clone(), Arc::new(Mutex::new(0usize)));
    let url = common::serve(move |request| {
        let (script, seen, lists) = state.clone();
        handle(request, script, seen, lists)
    })
    .await;
    Stand { url, seen }
}

fn query(request: &Request<Incoming>) -> BTreeMap<String, String> {
    common::query_pairs(request.uri().query())
}

async fn handle(
    mut request: Request<Incoming>,
    script: Arc<Script>,
    seen: Arc<Mutex<Seen>>,
    lists: Arc<Mutex<usize>>,
) -> Response<Full<Bytes>> {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = query(&request);
    seen.lock()
        .expect("record")
        .requests
        .push(format!("{method} {path}"));
    if path == format!("{NS}/pods/{POD}/attach") {
        return upgrade(&mut request, query, script, seen);
    }
    let body = json_body(request).await;
    match (method.as_str(), path.as_str()) {
        // The apply: server-side apply answers with the object.
        ("PATCH", _) => json_response(200, &body),
        ("POST", JOBS) => {
            let mut made = body.clone();
            made["metadata"]["name"] = json!(JOB);
            seen.lock().expect("record").job = Some(body);
            json_response(201, &made)
        }
        ("GET", p) if p == format!("{NS}/pods") => {
            let selector = query.get("labelSelector").cloned().unwrap_or_default();
            if selector != format!("batch.kubernetes.io/job-name={JOB}") {
                return json_response(200, &empty_list());
            }
            let mut n = lists.lock().expect("count");
            let pod = &script.pods[(*n).min(script.pods.len() - 1)];
            *n += 1;
            json_response(
                200,
                &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod]}),
            )
        }
        ("GET", p) if p == format!("{NS}/pods/{POD}") => match script.finish {
            Finish::Success { pod_exit } => json_response(
                200,
                &pod(
                    if pod_exit == 0 { "Succeeded" } else { "Failed" },
                    json!({"terminated": {"exitCode": pod_exit, "reason": "Error"}}),
                ),
            ),
            Finish::ExitCode(_) => json_response(200, script.pods.last().expect("a pod")),
        },
        ("GET", p) if p == format!("{NS}/pods/{POD}/log") => Response::builder()
            .status(200)
            .body(Full::new(Bytes::from_static(script.log.as_bytes())))
            .expect("a response"),
        ("GET", _) => json_response(200, &empty_list()),
        ("DELETE", _) => {
            seen.lock().expect("record").deleted.push((path, body));
            json_response(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            )
        }
        _ => method_not_allowed(),
    }
}

/// Answers the attach's upgrade, and runs the session on the upgraded
/// connection once hyper hands it over.
fn upgrade(
    request: &mut Request<Incoming>,
    query: BTreeMap<String, String>,
    script: Arc<Script>,
    seen: Arc<Mutex<Seen>>,
) -> Response<Full<Bytes>> {
    let stderr = query.get("stderr").is_some_and(|v| v == "true");
    {
        let mut seen = seen.lock().expect("record");
        seen.attach_query = query;
        seen.protocol_offer = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
    }
    let protocol = script.protocol;
    upgrade_websocket(request, protocol, move |ws| async move {
        session(ws, &script, &seen, stderr).await;
    })
}

/// The attached container, as the stand-in plays it: stdin echoed to stdout
/// (and a line on stderr when the attach has it); a line `exit` or the end
/// of stdin ends it, with the script's status on channel 3.
async fn session<S>(mut ws: WebSocketStream<S>, script: &Script, seen: &Mutex<Seen>, stderr: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Ok(Some(Ok(message))) = tokio::time::timeout(WAIT, ws.next()).await {
        let Message::Binary(frame) = message else {
            if message.is_close() {
                return;
            }
            continue;
        };
        let Some((&number, payload)) = frame.split_first() else {
            continue;
        };
        match number {
            0 => {
                if ws.send(channel(1, payload)).await.is_err() {
                    return;
                }
                if stderr
                    && !script.stderr.is_empty()
                    && ws.send(channel(2, script.stderr)).await.is_err()
                {
                    return;
                }
                if String::from_utf8_lossy(payload)
                    .lines()
                    .any(|l| l.trim() == "exit")
                {
                    break;
                }
            }
            4 => {
                let size: Value = serde_json::from_slice(payload).expect("a terminal size as JSON");
                seen.lock().expect("record").resizes.push(size);
            }
            // v5: the client closed a channel; [255, 0] is stdin.
            255 if payload == [0] => {
                seen.lock().expect("record").stdin_closed = true;
                break;
            }
            other => panic!("a message on channel {other} from the client"),
        }
    }
    let status = match script.finish {
        Finish::ExitCode(code) => json!({
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": format!("command terminated with non-zero exit code: exit code {code}"),
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Finish::Success { .. } => json!({"metadata": {}, "status": "Success"}),
    };
    let status = serde_json::to_vec(&status).expect("json");
    let _ = ws.send(channel(3, &status)).await;
    let _ = ws.close(None).await;
}

/// The bodies of the deletes of the one-off's Job.
fn job_deletes(seen: &Seen) -> Vec<Value> {
    seen.deleted
        .iter()
        .filter(|(path, _)| *path == format!("{JOBS}/{JOB}"))
        .map(|(_, body)| body.clone())
        .collect()
}

/// The one-off's pod in `phase`, its container in `state`.
fn pod(phase: &str, state: Value) -> Value {
    json!({
        "metadata": {
            "name": POD,
            "uid": "uid-pod",
            "namespace": "crew-shop",
            "creationTimestamp": "2026-01-01T00:00:01Z",
            "labels": {
                "app.kubernetes.io/part-of": "shop",
                "crew/process-type": "run",
                "batch.kubernetes.io/job-name": JOB,
            },
        },
        "spec": {"containers": [{"name": "run"}]},
        "status": {"phase": phase, "containerStatuses": [{
            "name": "run", "image": "i", "imageID": "", "ready": phase == "Running",
            "restartCount": 0, "state": state,
        }]},
    })
}

fn pending() -> Value {
    pod(
        "Pending",
        json!({"waiting": {"reason": "ContainerCreating"}}),
    )
}

fn running() -> Value {
    pod(
        "Running",
        json!({"running": {"startedAt": "2026-01-01T00:00:02Z"}}),
    )
}

fn release() -> ReleaseSpec {
    ReleaseSpec {
        app: "shop".to_string(),
        version: 3,
        types: vec![ReleaseType {
            name: "worker".to_string(),
            command: "python3 worker.py".to_string(),
            size: None,
        }],
        env: vec![("LANG".to_string(), "C.UTF-8".to_string())],
        slug_archive: PathBuf::new(),
        slug_dir: PathBuf::new(),
        command_prefix: None,
    }
}

/// A placement on the stand-in with v3 applied, and its log.
async fn placement(stand: &Stand) -> (KubernetesPlacement, mpsc::Receiver<LogEvent>) {
    let config = kube::Config::new(stand.url.parse().expect("a URL"));
    let client = kube::Client::try_from(config).expect("a client");
    let (logs, events) = mpsc::channel(64);
    let placement = KubernetesPlacement::new(
        client,
        "shop",
        KubernetesConfig {
            // The log task stays asleep: it is not what these tests are about.
            poll_interval: Duration::from_secs(3600),
            attach_poll: Duration::from_millis(20),
            attach_timeout: Duration::from_secs(10),
            ..KubernetesConfig::default()
        },
        logs,
    )
    .expect("a placement");
    let formation = Formation::new(["worker".to_string()], 0);
    tokio::time::timeout(WAIT, placement.apply(release(), formation))
        .await
        .expect("the apply within the deadline")
        .expect("the apply");
    (placement, events)
}

async fn attach(placement: &KubernetesPlacement, input: DynoInput) -> Attachment {
    let request = RunRequest {
        command: "bash".to_string(),
        input,
        ..RunRequest::default()
    };
    let (info, attachment) = tokio::time::timeout(WAIT, placement.run(request))
        .await
        .expect("run within the deadline")
        .expect("run");
    assert_eq!(info.name, "run.1");
    attachment.expect("an attached run has an attachment")
}

/// Reads `output` until it has `want`, within the deadline.
async fn read_until(
    output: &mut (impl tokio::io::AsyncRead + Unpin),
    got: &mut Vec<u8>,
    want: &str,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(got).contains(want) {
        let n = tokio::time::timeout_at(deadline, output.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{want:?} within the deadline; got {:?}",
                    String::from_utf8_lossy(got)
                )
            })
            .expect("read");
        assert!(
            n > 0,
            "the output ended before {want:?}: {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

async fn until_end(output: &mut (impl tokio::io::AsyncRead + Unpin), got: &mut Vec<u8>) {
    tokio::time::timeout(WAIT, output.read_to_end(got))
        .await
        .expect("the output ends within the deadline")
        .expect("read");
}

#[tokio::test]
async fn a_terminal_run_attaches_carries_bytes_and_resizes_and_exits_with_the_code() {
    let stand = stand_in(Script {
        protocol: "v5.channel.k8s.io",
        pods: vec![pending(), pending(), running()],
        finish: Finish::ExitCode(3),
        stderr: b"",
        log: "",
    })
    .await;
    let (placement, mut events) = placement(&stand).await;
    let attachment = attach(&placement, DynoInput::Terminal { cols: 80, rows: 24 }).await;

    // The Job: never retried, its container with stdin once and a TTY.
    let job = stand.seen(|s| s.job.clone()).expect("the Job was created");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let template = &job["spec"]["template"];
    assert_eq!(template["spec"]["restartPolicy"], "Never");
    assert_eq!(template["metadata"]["annotations"]["crew/attached"], "true");
    let container = &template["spec"]["containers"][0];
    assert_eq!(container["name"], "run");
    assert_eq!(container["stdin"], true);
    assert_eq!(container["stdinOnce"], true);
    assert_eq!(container["tty"], true);

    let (mut output, console) = tokio::time::timeout(WAIT, attachment.io)
        .await
        .expect("the pod runs within the deadline")
        .expect("the io end")
        .expect("attached");
    let mut console = console.expect("a console");
    let query = stand.seen(|s| s.attach_query.clone());
    assert_eq!(query.get("stdin").map(String::as_str), Some("true"));
    assert_eq!(query.get("stdout").map(String::as_str), Some("true"));
    assert_eq!(query.get("tty").map(String::as_str), Some("true"));
    assert_eq!(query.get("container").map(String::as_str), Some("run"));
    assert_eq!(query.get("stderr"), None, "a terminal is one stream");
    assert!(
        stand.seen(|s| s.protocol_offer.contains("v5.channel.k8s.io")),
        "kube offers the channel protocol"
    );
    let lists = stand.seen(|s| {
        s.requests
            .iter()
            .filter(|r| *r == &format!("GET {NS}/pods"))
            .count()
    });
    assert_eq!(lists, 3, "crew waited through Pending until Running");

    // The size asked for arrives first, then a resize.
    stand
        .until("the first terminal size", |s| !s.resizes.is_empty())
        .await;
    console
        .resize
        .as_ref()
        .expect("a terminal can be resized")
        .set(100, 30);
    stand.until("the resize", |s| s.resizes.len() == 2).await;
    assert_eq!(
        stand.seen(|s| s.resizes.clone()),
        [
            json!({"Width": 80, "Height": 24}),
            json!({"Width": 100, "Height": 30})
        ]
    );

    // Bytes both ways.
    let mut got = Vec::new();
    console
        .input
        .write_all(
            b"hello
",
        )
        .await
        .expect("stdin");
    read_until(
        &mut output,
        &mut got,
        "hello
",
    )
    .await;
    console
        .input
        .write_all(
            b"exit
",
        )
        .await
        .expect("stdin");
    until_end(&mut output, &mut got).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "hello
exit
"
    );

    let status = tokio::time::timeout(WAIT, attachment.exit)
        .await
        .expect("the exit within the deadline")
        .expect("an exit status");
    assert_eq!(status, ExitStatus::Code(3));

    // The app's log says it started and how it ended; its output is the
    // client's, not the log's.
    let mut lines = Vec::new();
    while lines.len() < 2 {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(LogEvent::Platform { dyno, text, .. })) => {
                lines.push(format!("{dyno}: {text}"))
            }
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            _ => panic!("log lines within the deadline; got {lines:?}"),
        }
    }
    assert_eq!(
        lines,
        [
            "run.1: Starting process with command `bash`",
            "run.1: Process exited with status 3",
        ]
    );

    // Hanging up deletes the Job, with its pod.
    assert_eq!(stand.seen(job_deletes), Vec::<Value>::new());
    drop(attachment.hangup);
    stand
        .until("the Job's delete", |s| !job_deletes(s).is_empty())
        .await;
    assert_eq!(
        stand.seen(job_deletes),
        [json!({"propagationPolicy": "Background"})],
        "the Job goes, and its pod with it"
    );
}

#[tokio::test]
async fn a_piped_run_merges_stderr_ends_stdin_and_takes_the_exit_code_from_the_pod() {
    let stand = stand_in(Script {
        protocol: "v5.channel.k8s.io",
        pods: vec![running()],
        finish: Finish::Success { pod_exit: 7 },
        stderr: b"warning
",
        log: "",
    })
    .await;
    let (placement, _events) = placement(&stand).await;
    let attachment = attach(&placement, DynoInput::Pipe).await;
    let job = stand.seen(|s| s.job.clone()).expect("the Job was created");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["stdin"], true);
    assert_eq!(container["stdinOnce"], true);
    assert_eq!(container["tty"], false);

    let (mut output, console) = tokio::time::timeout(WAIT, attachment.io)
        .await
        .expect("attached within the deadline")
        .expect("the io end")
        .expect("attached");
    let mut console = console.expect("a console");
    assert!(console.resize.is_none(), "a pipe has no size");
    let query = stand.seen(|s| s.attach_query.clone());
    assert_eq!(query.get("stderr").map(String::as_str), Some("true"));
    assert_eq!(query.get("tty"), None);

    let mut got = Vec::new();
    console
        .input
        .write_all(
            b"ping
",
        )
        .await
        .expect("stdin");
    read_until(
        &mut output,
        &mut got,
        "warning
",
    )
    .await;
    read_until(
        &mut output,
        &mut got,
        "ping
",
    )
    .await;
    // The end of the client's input ends the container's stdin (v5 closes
    // the channel), and the stand-in's container ends with it.
    console.input.shutdown().await.expect("end of input");
    until_end(&mut output, &mut got).await;
    stand.until("stdin closed", |s| s.stdin_closed).await;

    let status = tokio::time::timeout(WAIT, attachment.exit)
        .await
        .expect("the exit within the deadline")
        .expect("an exit status");
    assert_eq!(
        status,
        ExitStatus::Code(7),
        "the attach said Success; the pod's terminated state has the code"
    );
    assert!(
        stand.seen(|s| s.requests.contains(&format!("GET {NS}/pods/{POD}"))),
        "the pod was read for its exit"
    );
    drop(attachment.hangup);
    stand
        .until("the Job's delete", |s| !job_deletes(s).is_empty())
        .await;
}

#[tokio::test]
async fn the_older_v4_protocol_works_too() {
    let stand = stand_in(Script {
        protocol: "v4.channel.k8s.io",
        pods: vec![running()],
        finish: Finish::ExitCode(0),
        stderr: b"",
        log: "",
    })
    .await;
    let (placement, _events) = placement(&stand).await;
    let attachment = attach(
        &placement,
        DynoInput::Terminal {
            cols: 120,
            rows: 40,
        },
    )
    .await;
    let (mut output, console) = tokio::time::timeout(WAIT, attachment.io)
        .await
        .expect("attached within the deadline")
        .expect("the io end")
        .expect("attached");
    let mut console = console.expect("a console");
    let mut got = Vec::new();
    console
        .input
        .write_all(
            b"exit
",
        )
        .await
        .expect("stdin");
    until_end(&mut output, &mut got).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "exit
"
    );
    let status = tokio::time::timeout(WAIT, attachment.exit)
        .await
        .expect("the exit within the deadline")
        .expect("an exit status");
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(
        stand.seen(|s| s.resizes.clone()),
        [json!({"Width": 120, "Height": 40})]
    );
}

#[tokio::test]
async fn a_pod_that_ended_before_the_attach_gives_its_log_and_exit_code() {
    let stand = stand_in(Script {
        protocol: "v5.channel.k8s.io",
        pods: vec![pod(
            "Failed",
            json!({"terminated": {"exitCode": 2, "reason": "Error"}}),
        )],
        finish: Finish::ExitCode(0),
        stderr: b"",
        log: "usage: rake [options]\n",
    })
    .await;
    let (placement, _events) = placement(&stand).await;
    let attachment = attach(&placement, DynoInput::Pipe).await;
    let (mut output, console) = tokio::time::timeout(WAIT, attachment.io)
        .await
        .expect("within the deadline")
        .expect("the io end")
        .expect("the log as the output");
    assert!(console.is_none(), "nothing is left to type into");
    let mut got = Vec::new();
    until_end(&mut output, &mut got).await;
    assert_eq!(String::from_utf8_lossy(&got), "usage: rake [options]\n");
    let status = tokio::time::timeout(WAIT, attachment.exit)
        .await
        .expect("the exit within the deadline")
        .expect("an exit status");
    assert_eq!(status, ExitStatus::Code(2));
    assert!(
        stand.seen(|s| !s.requests.iter().any(|r| r.ends_with("/attach"))),
        "no attach to an ended pod"
    );
}

#[tokio::test]
async fn a_pod_stuck_on_its_image_fails_the_run_with_the_reason() {
    let stand = stand_in(Script {
        protocol: "v5.channel.k8s.io",
        pods: vec![pod(
            "Pending",
            json!({"waiting": {"reason": "ImagePullBackOff",
                               "message": "Back-off pulling image \"crew/shop:v3\""}}),
        )],
        finish: Finish::ExitCode(0),
        stderr: b"",
        log: "",
    })
    .await;
    let (placement, _events) = placement(&stand).await;
    let attachment = attach(&placement, DynoInput::Terminal { cols: 80, rows: 24 }).await;
    let error = match tokio::time::timeout(WAIT, attachment.io)
        .await
        .expect("within the deadline")
        .expect("the io end")
    {
        Ok(_) => panic!("a stuck pod cannot be attached"),
        Err(e) => e,
    };
    assert!(error.contains("ImagePullBackOff"), "{error}");
    assert!(error.contains("crew/shop:v3"), "{error}");
}
