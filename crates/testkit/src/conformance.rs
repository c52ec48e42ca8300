//! The conformance suite: one set of checks, generic over a placement,
//! which every placement crate's conformance test runs against its placement
//! ([`Subject`]): crew-swarm's against `LocalPlacement` (the reference) and
//! `SwarmPlacement`, crew-kubernetes' against `KubernetesPlacement`. Both
//! take it from this crate, so the checks cannot drift apart.
//!
//! The checks: scale up and down; a killed dyno back in its slot; a new
//! release rolled out (every dyno on it, and web never without an up
//! backend); `run` detached (exit code and output in the log) and attached
//! (from the attachment); output arriving as log events.
//!
//! Where a placement cannot meet a check as written by its design, not by a
//! gap, its subject says so through a capability ([`Naming`],
//! [`Recovery`]), whose default is the strict behaviour of crew's own
//! engine; the check then asks for what that design does promise.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crew_engine::{Attachment, DynoState, Placement, ReleaseSpec, RunRequest};
use crew_procfile::{Formation, FormationChange, Quantity};
use crew_runtime::{Console, DynoInput, ExitStatus, Output};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::placement::{Logs, web_and_worker_release};
use crate::wait::wait_for;

/// Prints its boot line with the release, then serves HTTP on PORT forever.
pub const WEB: &str = "echo \"boot $DYNO $RELEASE_NAME\"; while true; do printf 'HTTP/1.0 200 OK\\r\\n\\r\\n%s %s\\n' \"$DYNO\" \"$RELEASE_NAME\" | busybox nc -l -p \"$PORT\" >/dev/null 2>&1; done";
/// Prints its boot line, then a tick a second.
pub const WORKER: &str =
    "echo \"boot $DYNO $RELEASE_NAME\"; while true; do echo \"tick $DYNO\"; sleep 1; done";

/// How a placement names its dynos, which decides how a log line is tied to
/// the dyno that printed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// A dyno keeps its `ps` name (`worker.1`) from start to end: it is its
    /// `$DYNO` and the name its log lines carry. crew's engine and Swarm
    /// (a task's slot is its number).
    Fixed,
    /// `ps` numbers a type's dynos as a view (oldest first) that shifts as
    /// they come and go, and `$DYNO` inside is the dyno's own name on the
    /// cluster. Kubernetes: a Deployment's pods have no ordinals, so `$DYNO`
    /// is the pod's name, and a pod's lines carry the number it had when crew
    /// began reading them (a new pod that is `web.2` beside an old `web.1`
    /// is `web.1` once the old one goes). A line is then tied to its dyno by
    /// the `$DYNO` it prints ([`Subject::dyno_var`]), which no other dyno
    /// has, and to its process type by its name.
    View,
}

/// What becomes of a dyno whose process was killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// It is restarted in its slot, and `ps` counts the restart.
    Restart,
    /// A new dyno replaces it under the same name, with its own `$DYNO`
    /// and a restart count of its own. Kubernetes: nothing outside a pod's
    /// node can make its container crash (SIGKILL from inside the pod's PID
    /// namespace does not reach its init, and the API has no verb for it),
    /// so the subject's `kill` deletes the pod at once, and its Deployment
    /// makes a new one in its place.
    Replace,
}

/// A placement under test, with what the suite needs beyond the trait.
// Only tests implement it and await it on their own runtime: no `Send`
// bound is needed on its futures.
#[allow(async_fn_in_trait)]
pub trait Subject {
    fn placement(&self) -> &dyn Placement;
    fn release(&self, version: u32) -> ReleaseSpec;
    /// Kills the dyno as a crash would: its process (or container) dies
    /// with SIGKILL, or as near to that as the placement allows ([`Recovery`]).
    async fn kill(&self, dyno: &str);
    /// How long the engine may take for each step.
    fn patience(&self) -> Duration;
    /// What `$DYNO` says inside the dyno that `ps` now calls `dyno`, if
    /// there is one.
    async fn dyno_var(&self, dyno: &str) -> Option<String> {
        Some(dyno.to_string())
    }
    fn naming(&self) -> Naming {
        Naming::Fixed
    }
    fn recovery(&self) -> Recovery {
        Recovery::Restart
    }
}

pub fn release(
    app: &str,
    version: u32,
    slug: &(std::path::PathBuf, std::path::PathBuf),
) -> ReleaseSpec {
    web_and_worker_release(app, version, WEB, WORKER, slug)
}

pub fn formation(web: u32, worker: u32) -> Formation {
    let mut f = Formation::new(["web".to_string(), "worker".to_string()], 0);
    f.apply(&[set("web", web), set("worker", worker)])
        .expect("a formation");
    f
}

fn set(process_type: &str, n: u32) -> FormationChange {
    FormationChange {
        process_type: process_type.into(),
        quantity: Quantity::Set(n),
        size: None,
    }
}

/// The names of the dynos that are up, once the set is exactly `want`.
async fn wait_up<S: Subject>(s: &S, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    wait_for(&format!("exactly {want:?} up"), s.patience(), || async {
        let ps = s.placement().ps().await;
        let names: BTreeSet<String> = ps.iter().map(|d| d.name.clone()).collect();
        let all_up = ps.iter().all(|d| d.state == DynoState::Up);
        (names == want && all_up).then_some(())
    })
    .await;
}

/// Whether `lines` has the output line `text($DYNO)` of the dyno that `ps`
/// now calls `dyno`: from that very name where names are fixed, from a dyno
/// of its type where they are a view (the `$DYNO` in the text is the
/// dyno's alone).
async fn printed<S: Subject>(
    s: &S,
    lines: &[(String, String, bool)],
    dyno: &str,
    text: impl Fn(&str) -> String,
) -> bool {
    let Some(own) = s.dyno_var(dyno).await else {
        return false;
    };
    let want = text(&own);
    let of_type =
        |d: &str| d.split_once('.').map(|(t, _)| t) == dyno.split_once('.').map(|(t, _)| t);
    lines.iter().any(|(d, l, platform)| {
        !platform
            && *l == want
            && match s.naming() {
                Naming::Fixed => d == dyno,
                Naming::View => of_type(d),
            }
    })
}

async fn check_first_release_and_logs<S: Subject>(s: &S, logs: &Logs) {
    let started = Instant::now();
    s.placement()
        .apply(s.release(1), formation(1, 1))
        .await
        .expect("apply v1");
    wait_up(s, &["web.1", "worker.1"]).await;
    wait_for("a web backend that is up", s.patience(), || async {
        let backends = s.placement().web_backends().borrow().clone();
        backends
            .iter()
            .any(|b| b.name == "web.1" && b.state == DynoState::Up)
            .then_some(())
    })
    .await;
    wait_for("worker.1's output as log events", s.patience(), || async {
        let lines = logs.lines();
        let boot = printed(s, &lines, "worker.1", |n| format!("boot {n} v1")).await;
        let tick = printed(s, &lines, "worker.1", |n| format!("tick {n}")).await;
        (boot && tick).then_some(())
    })
    .await;
    wait_for("the platform's `up` line", s.patience(), || async {
        logs.lines()
            .iter()
            .any(|(d, l, p)| d == "web.1" && l == "State changed from starting to up" && *p)
            .then_some(())
    })
    .await;
    eprintln!("  first release, logs: {:?}", started.elapsed());
}

async fn check_scale<S: Subject>(s: &S) {
    let started = Instant::now();
    s.placement()
        .scale(vec![set("worker", 3)])
        .await
        .expect("scale up");
    wait_up(s, &["web.1", "worker.1", "worker.2", "worker.3"]).await;
    s.placement()
        .scale(vec![FormationChange {
            process_type: "worker".into(),
            quantity: Quantity::Sub(2),
            size: None,
        }])
        .await
        .expect("scale down");
    wait_up(s, &["web.1", "worker.1"]).await;
    eprintln!("  scale: {:?}", started.elapsed());
}

async fn check_killed_dyno_comes_back<S: Subject>(s: &S, logs: &Logs) {
    let started = Instant::now();
    let from = logs.len();
    let killed = s.dyno_var("worker.1").await.expect("worker.1 is there");
    s.kill("worker.1").await;
    wait_for(
        "worker.1 crashed and back up in its slot",
        s.patience(),
        || async {
            let ps = s.placement().ps().await;
            let back = match s.recovery() {
                Recovery::Restart => ps
                    .iter()
                    .any(|d| d.name == "worker.1" && d.state == DynoState::Up && d.restarts >= 1),
                Recovery::Replace => {
                    ps.iter()
                        .any(|d| d.name == "worker.1" && d.state == DynoState::Up)
                        && s.dyno_var("worker.1")
                            .await
                            .is_some_and(|own| own != killed)
                }
            };
            let booted = printed(s, &logs.lines_since(from), "worker.1", |n| {
                format!("boot {n} v1")
            })
            .await;
            (back && booted).then_some(())
        },
    )
    .await;
    eprintln!("  killed dyno replaced: {:?}", started.elapsed());
}

async fn check_rollout<S: Subject>(s: &S, logs: &Logs) {
    let started = Instant::now();
    // Watch the web backends through the whole rollout: once one is up,
    // one must stay up.
    let mut backends = s.placement().web_backends();
    let gap = Arc::new(std::sync::Mutex::new(None::<String>));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (gap, done) = (gap.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let up = backends
                    .borrow_and_update()
                    .iter()
                    .any(|b| b.state == DynoState::Up);
                if !up {
                    let seen = format!("{:?}", *backends.borrow());
                    gap.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(seen);
                }
                if tokio::time::timeout(Duration::from_millis(100), backends.changed())
                    .await
                    .is_ok_and(|r| r.is_err())
                {
                    break;
                }
            }
        })
    };
    let from = logs.len();
    s.placement()
        .apply(s.release(2), formation(2, 1))
        .await
        .expect("apply v2");
    wait_for("every dyno booted on v2", s.patience(), || async {
        let ps = s.placement().ps().await;
        let names: BTreeSet<String> = ps.iter().map(|d| d.name.clone()).collect();
        let want: BTreeSet<String> = ["web.1", "web.2", "worker.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if names != want || ps.iter().any(|d| d.state != DynoState::Up) {
            return None;
        }
        let lines = logs.lines_since(from);
        for n in &want {
            if !printed(s, &lines, n, |own| format!("boot {own} v2")).await {
                return None;
            }
        }
        Some(())
    })
    .await;
    // The old web dyno is gone from the backends too.
    wait_for("two web backends", s.patience(), || async {
        let b = s.placement().web_backends().borrow().clone();
        (b.len() == 2 && b.iter().all(|b| b.state == DynoState::Up)).then_some(())
    })
    .await;
    done.store(true, Ordering::SeqCst);
    let _ = watcher.await;
    let gap = gap.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(
        gap, None,
        "the web backends had no up dyno during the rollout"
    );
    eprintln!("  rollout: {:?}", started.elapsed());
}

async fn check_run_detached<S: Subject>(s: &S, logs: &Logs) {
    let started = Instant::now();
    let (info, attachment) = s
        .placement()
        .run(RunRequest {
            command: "echo \"one-off $DYNO\"; exit 3".into(),
            ..RunRequest::default()
        })
        .await
        .expect("run detached");
    assert!(attachment.is_none());
    let name = info.name.clone();
    assert!(name.starts_with("run."), "{name}");
    // A one-off's `$DYNO` is its `run.N` on every backend: it is the name
    // `crew run` prints, and the one `ps` keeps for it.
    wait_for(
        "the one-off's output and exit code in the log",
        s.patience(),
        || async {
            let lines = logs.lines();
            let output = lines
                .iter()
                .any(|(d, l, p)| *d == name && *l == format!("one-off {name}") && !p);
            let exit = lines
                .iter()
                .position(|(d, l, p)| *d == name && l == "Process exited with status 3" && *p);
            let output_first = lines
                .iter()
                .position(|(d, l, _)| *d == name && *l == format!("one-off {name}"));
            (output && exit.is_some() && output_first < exit).then_some(())
        },
    )
    .await;
    eprintln!("  run detached: {:?}", started.elapsed());
}

/// An attached one-off through the placement: its output, console and exit
/// status, and the attachment, whose drop hangs the one-off up.
async fn attached(
    placement: &dyn Placement,
    request: RunRequest,
) -> (
    Output,
    Option<Console>,
    oneshot::Receiver<ExitStatus>,
    Attachment,
) {
    let (_, attachment) = placement.run(request).await.expect("run attached");
    let mut attachment = attachment.expect("an attachment");
    let (output, console) = (&mut attachment.io)
        .await
        .expect("io")
        .expect("the one-off started");
    let (tx, rx) = oneshot::channel();
    let exit = std::mem::replace(&mut attachment.exit, rx);
    drop(tx);
    (output, console, exit, attachment)
}

async fn check_run_attached<S: Subject>(s: &S) {
    let started = Instant::now();
    let (mut output, console, exit, held) = attached(
        s.placement(),
        RunRequest {
            command: "read line; echo \"got $line from $DYNO\"; exit 4".into(),
            input: DynoInput::Pipe,
            ..RunRequest::default()
        },
    )
    .await;
    let mut console = console.expect("a console for a piped one-off");
    console.input.write_all(b"hi\n").await.expect("stdin");
    console.input.shutdown().await.expect("close stdin");
    let mut text = String::new();
    tokio::time::timeout(s.patience(), output.read_to_string(&mut text))
        .await
        .expect("the output ends")
        .expect("the output");
    let status = tokio::time::timeout(s.patience(), exit)
        .await
        .expect("an exit in time")
        .expect("an exit status");
    assert_eq!(status, ExitStatus::Code(4));
    assert!(text.contains("got hi from run."), "{text:?}");
    drop(held);
    eprintln!("  run attached: {:?}", started.elapsed());
}

/// Every check, in order, then `destroy`, after which no dyno is left.
pub async fn suite<S: Subject>(s: &S, logs: &Logs) {
    check_first_release_and_logs(s, logs).await;
    check_scale(s).await;
    check_killed_dyno_comes_back(s, logs).await;
    check_run_detached(s, logs).await;
    check_run_attached(s).await;
    check_rollout(s, logs).await;
    let started = Instant::now();
    s.placement().destroy().await;
    assert!(
        s.placement().ps().await.is_empty(),
        "dynos left after destroy"
    );
    eprintln!("  destroy: {:?}", started.elapsed());
}
