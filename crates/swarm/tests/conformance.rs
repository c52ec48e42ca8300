//! The conformance suite: one set of checks, generic over a placement, run
//! against crew's own manifold ([`LocalPlacement`], the reference) and
//! against [`SwarmPlacement`] on a real dockerd of the test's own.
//!
//! The checks: scale up and down; a killed dyno replaced in the same slot; a
//! new release rolled out (every dyno on it, and web never without an up
//! backend); `run` detached (exit code and output in the log) and attached
//! (from the attachment); output arriving as log events.
//!
//! Swarm alone: a web task counts as up only once its `PORT` listens (the
//! health check), so the router never gets a backend that refuses, a
//! rollout keeps the old web dyno until the new one listens, and a web dyno
//! that never listens crashes with R10.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crew_engine::{
    DynoState, EngineConfig, LocalConfig, LocalPlacement, Placement, PortPool, ReleaseSpec,
    ReleaseType, RunRequest,
};
use crew_procfile::{Formation, FormationChange, Quantity};
use crew_runtime::{Console, DynoInput, ExitStatus, Output, PlainRuntime};
use crew_swarm::{SwarmConfig, SwarmPlacement};
use support::{Dockerd, Logs, http_get, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Prints its boot line with the release, then serves HTTP on PORT forever.
const WEB: &str = "echo \"boot $DYNO $RELEASE_NAME\"; while true; do printf 'HTTP/1.0 200 OK\\r\\n\\r\\n%s %s\\n' \"$DYNO\" \"$RELEASE_NAME\" | busybox nc -l -p \"$PORT\" >/dev/null 2>&1; done";
/// Prints its boot line, then a tick a second.
const WORKER: &str =
    "echo \"boot $DYNO $RELEASE_NAME\"; while true; do echo \"tick $DYNO\"; sleep 1; done";

/// What the suite needs beyond the trait: a way to kill a dyno as a crash
/// would, and an attached one-off.
trait Subject {
    type Held: Send;
    fn placement(&self) -> &dyn Placement;
    fn release(&self, version: u32) -> ReleaseSpec;
    /// Kills the dyno's process (or container) with SIGKILL.
    async fn kill(&self, dyno: &str);
    async fn attached(
        &self,
        request: RunRequest,
    ) -> (
        Output,
        Option<Console>,
        oneshot::Receiver<ExitStatus>,
        Self::Held,
    );
    /// How long the engine may take for each step.
    fn patience(&self) -> Duration;
}

fn release(
    app: &str,
    version: u32,
    slug: &(std::path::PathBuf, std::path::PathBuf),
) -> ReleaseSpec {
    ReleaseSpec {
        app: app.to_string(),
        version,
        types: vec![
            ReleaseType {
                name: "web".into(),
                command: WEB.into(),
                size: None,
            },
            ReleaseType {
                name: "worker".into(),
                command: WORKER.into(),
                size: None,
            },
        ],
        env: vec![
            ("RELEASE_NAME".into(), format!("v{version}")),
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ],
        slug_archive: slug.1.clone(),
        slug_dir: slug.0.clone(),
        command_prefix: None,
    }
}

fn formation(web: u32, worker: u32) -> Formation {
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
        let boot = lines
            .iter()
            .any(|(d, l, p)| d == "worker.1" && l == "boot worker.1 v1" && !p);
        let tick = lines
            .iter()
            .any(|(d, l, p)| d == "worker.1" && l == "tick worker.1" && !p);
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
    s.kill("worker.1").await;
    wait_for(
        "worker.1 crashed and back up in its slot",
        s.patience(),
        || async {
            let ps = s.placement().ps().await;
            let back = ps
                .iter()
                .any(|d| d.name == "worker.1" && d.state == DynoState::Up && d.restarts >= 1);
            let booted = logs
                .lines_since(from)
                .iter()
                .any(|(d, l, _)| d == "worker.1" && l == "boot worker.1 v1");
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
        want.iter()
            .all(|n| {
                lines
                    .iter()
                    .any(|(d, l, _)| d == n && *l == format!("boot {n} v2"))
            })
            .then_some(())
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

async fn check_run_attached<S: Subject>(s: &S) {
    let started = Instant::now();
    let (mut output, console, exit, held) = s
        .attached(RunRequest {
            command: "read line; echo \"got $line from $DYNO\"; exit 4".into(),
            input: DynoInput::Pipe,
            ..RunRequest::default()
        })
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

async fn suite<S: Subject>(s: &S, logs: &Logs) {
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

// --- crew's own manifold -----------------------------------------------

struct Local {
    placement: LocalPlacement<PlainRuntime>,
    slug: (std::path::PathBuf, std::path::PathBuf),
}

impl Subject for Local {
    type Held = crew_engine::Attachment;

    fn placement(&self) -> &dyn Placement {
        &self.placement
    }

    fn release(&self, version: u32) -> ReleaseSpec {
        release("local", version, &self.slug)
    }

    async fn kill(&self, dyno: &str) {
        let ps = self.placement.ps().await;
        let pid = ps
            .iter()
            .find(|d| d.name == dyno)
            .and_then(|d| d.pid)
            .expect("a pid");
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
        rustix::process::kill_process_group(pid, rustix::process::Signal::KILL).expect("kill");
    }

    async fn attached(
        &self,
        request: RunRequest,
    ) -> (
        Output,
        Option<Console>,
        oneshot::Receiver<ExitStatus>,
        Self::Held,
    ) {
        let (_, attachment) = self.placement.run(request).await.expect("run attached");
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

    fn patience(&self) -> Duration {
        Duration::from_secs(20)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_local() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (tx, rx) = mpsc::channel(1024);
    let logs = Logs::collect(rx);
    let runtime = PlainRuntime::new(None).expect("a plain runtime");
    let config = LocalConfig {
        engine: EngineConfig {
            stop_timeout: Duration::from_secs(2),
            keep_alive: true,
            boot_timeout: Duration::from_secs(20),
            in_flight: None,
        },
        ports: Arc::new(PortPool::new(41000..=41999)),
    };
    let subject = Local {
        placement: LocalPlacement::new(runtime, config, tx),
        slug: support::slug(dir.path()),
    };
    eprintln!("conformance against LocalPlacement:");
    suite(&subject, &logs).await;
}

// --- Swarm on a real dockerd --------------------------------------------

/// A web dyno that boots slowly: it listens 3 s after it starts.
const SLOW_WEB: &str = "echo \"boot $DYNO $RELEASE_NAME\"; sleep 3; echo \"$DYNO $RELEASE_NAME\" > /tmp/index.html; exec busybox httpd -f -p \"$PORT\" -h /tmp";
/// A web dyno that never listens.
const DEAF_WEB: &str = "echo \"boot $DYNO $RELEASE_NAME\"; exec sleep 1000";

fn web_release(
    version: u32,
    command: &str,
    slug: &(std::path::PathBuf, std::path::PathBuf),
) -> ReleaseSpec {
    let mut release = release("slow", version, slug);
    release.types = vec![ReleaseType {
        name: "web".into(),
        command: command.into(),
        size: None,
    }];
    release
}

/// What the backends watcher saw: each backend's answer to one `GET /` the
/// moment it first appeared, and whether the backends ever went empty again
/// once one was there.
#[derive(Default)]
struct FirstAnswers {
    answers: Vec<(String, std::net::SocketAddr, Result<String, String>)>,
    gap: Option<String>,
}

/// The health check on a real daemon: web tasks are up, and backends, only
/// once they listen.
async fn check_web_health(
    daemon: &Dockerd,
    rootfs: std::path::PathBuf,
    slug: &(std::path::PathBuf, std::path::PathBuf),
) {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel(1024);
    let logs = Logs::collect(rx);
    let boot_timeout = Duration::from_secs(4);
    let config = SwarmConfig {
        base_rootfs: Some(rootfs),
        poll_interval: Duration::from_millis(500),
        stop_grace: Duration::from_secs(2),
        restart_delay: Duration::from_secs(1),
        health_interval: Duration::from_secs(1),
        boot_timeout,
        ..SwarmConfig::default()
    };
    let placement =
        SwarmPlacement::new(daemon.docker.clone(), "slow", config, tx).expect("a placement");
    let seen = Arc::new(std::sync::Mutex::new(FirstAnswers::default()));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, done) = (seen.clone(), done.clone());
        let mut backends = placement.web_backends();
        tokio::spawn(async move {
            let mut known = BTreeSet::new();
            let mut had_one = false;
            while !done.load(Ordering::SeqCst) {
                let now = backends.borrow_and_update().clone();
                if now.is_empty() && had_one {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.gap.get_or_insert_with(|| "no backend".into());
                }
                had_one |= !now.is_empty();
                for b in now.iter().filter(|b| known.insert(b.addr)) {
                    // At once: a backend must answer the moment it is one.
                    let answer = http_get(b.addr, "/").await;
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.answers.push((b.name.clone(), b.addr, answer));
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), backends.changed()).await;
            }
        })
    };
    let answered = |want: &str| {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.answers
            .iter()
            .any(|(_, _, a)| a.as_deref().map(str::trim) == Ok(want))
    };

    // v1: the dyno is starting while it sleeps, up once it listens.
    let applied = Instant::now();
    placement
        .apply(web_release(1, SLOW_WEB, slug), formation(1, 0))
        .await
        .expect("apply v1");
    wait_for("a booting web.1", Duration::from_secs(30), || async {
        let lines = logs.lines();
        lines
            .iter()
            .any(|(d, l, p)| d == "web.1" && l == "boot web.1 v1" && !p)
            .then_some(())
    })
    .await;
    let ps = placement.ps().await;
    assert!(
        ps.iter().all(|d| d.state == DynoState::Starting),
        "web.1 is not up before it listens: {ps:?}"
    );
    assert!(
        placement.web_backends().borrow().is_empty(),
        "no backend before it listens"
    );
    wait_for(
        "web.1 v1 answering as a backend",
        Duration::from_secs(30),
        || async { answered("web.1 v1").then_some(()) },
    )
    .await;
    let up = applied.elapsed();
    assert!(
        up >= Duration::from_secs(3),
        "up after {up:?}, before its 3 s boot"
    );
    eprintln!("  slow web dyno up once it listens: {up:?}");

    // v2 rolls over start-first: the old dyno serves until the new listens.
    placement
        .apply(web_release(2, SLOW_WEB, slug), formation(1, 0))
        .await
        .expect("apply v2");
    wait_for(
        "web.1 v2 answering, alone",
        Duration::from_secs(40),
        || async {
            let b = placement.web_backends().borrow().clone();
            (answered("web.1 v2") && b.len() == 1).then_some(())
        },
    )
    .await;
    eprintln!("  slow rollout: {:?}", started.elapsed());

    // v3 never listens: R10 after the boot time, and v2 keeps serving.
    let from = logs.len();
    placement
        .apply(web_release(3, DEAF_WEB, slug), formation(1, 0))
        .await
        .expect("apply v3");
    let r10 = format!(
        "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within {} seconds of launch",
        boot_timeout.as_secs()
    );
    wait_for(
        "an R10 for the deaf web.1",
        Duration::from_secs(40),
        || async {
            let lines = logs.lines_since(from);
            lines
                .iter()
                .any(|(d, l, p)| d == "web.1" && *l == r10 && *p)
                .then_some(())
        },
    )
    .await;
    let lines = logs.lines_since(from);
    assert!(
        lines
            .iter()
            .any(|(d, l, p)| d == "web.1" && l == "State changed from starting to crashed" && *p),
        "the deaf dyno crashed while starting: {lines:?}"
    );
    let backends = placement.web_backends().borrow().clone();
    assert_eq!(backends.len(), 1, "v2's web dyno only: {backends:?}");
    let answer = http_get(backends[0].addr, "/").await;
    assert_eq!(
        answer.as_deref().map(str::trim),
        Ok("web.1 v2"),
        "v2 still serves"
    );
    eprintln!("  deaf web dyno: R10, v2 serving: {:?}", started.elapsed());

    done.store(true, Ordering::SeqCst);
    let _ = watcher.await;
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    for (name, addr, answer) in &seen.answers {
        assert!(
            answer.is_ok(),
            "{name} at {addr} refused the moment it became a backend: {answer:?}"
        );
    }
    assert_eq!(seen.gap, None, "the web backends went empty");
    placement.destroy().await;
    eprintln!("  web health checks: {:?}", started.elapsed());
}

struct Swarm {
    placement: SwarmPlacement,
    docker: Arc<crew_swarm::Docker>,
    slug: (std::path::PathBuf, std::path::PathBuf),
}

impl Subject for Swarm {
    type Held = crew_engine::Attachment;

    fn placement(&self) -> &dyn Placement {
        &self.placement
    }

    fn release(&self, version: u32) -> ReleaseSpec {
        release("shop", version, &self.slug)
    }

    async fn kill(&self, dyno: &str) {
        let dynos = self.placement.dynos().await;
        let task = &dynos
            .iter()
            .find(|d| d.info.name == dyno)
            .expect("the dyno")
            .task;
        let task = self.docker.task_inspect(task).await.expect("its task");
        let container = task.container_id().expect("its container");
        self.docker
            .container_kill(container, "SIGKILL")
            .await
            .expect("kill");
    }

    async fn attached(
        &self,
        request: RunRequest,
    ) -> (
        Output,
        Option<Console>,
        oneshot::Receiver<ExitStatus>,
        Self::Held,
    ) {
        let (_, attachment) = self.placement.run(request).await.expect("run attached");
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

    fn patience(&self) -> Duration {
        Duration::from_secs(60)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_swarm() {
    if let Some(why) = support::swarm_unavailable() {
        eprintln!("skipped: the Swarm conformance suite needs a real dockerd: {why}");
        return;
    }
    let started = Instant::now();
    let daemon = Dockerd::start(None).expect("dockerd");
    daemon
        .docker
        .swarm_init("127.0.0.1", &format!("127.0.0.1:{}", support::free_port()))
        .await
        .expect("swarm init");
    eprintln!("dockerd and swarm up: {:?}", started.elapsed());
    let dir = tempfile::tempdir().expect("temp dir");
    let (tx, rx) = mpsc::channel(1024);
    let logs = Logs::collect(rx);
    let config = SwarmConfig {
        base_rootfs: Some(support::busybox_rootfs(dir.path())),
        poll_interval: Duration::from_millis(500),
        stop_grace: Duration::from_secs(2),
        restart_delay: Duration::from_secs(1),
        ..SwarmConfig::default()
    };
    let subject = Swarm {
        placement: SwarmPlacement::new(daemon.docker.clone(), "shop", config, tx)
            .expect("a placement"),
        docker: daemon.docker.clone(),
        slug: support::slug(dir.path()),
    };
    eprintln!("conformance against SwarmPlacement:");
    suite(&subject, &logs).await;
    check_web_health(&daemon, support::busybox_rootfs(dir.path()), &subject.slug).await;
    let left = daemon
        .docker
        .containers(&serde_json::json!({}))
        .await
        .expect("containers");
    assert!(left.is_empty(), "containers left: {left:?}");
    drop(subject);
    drop(daemon);
    eprintln!("swarm tier: {:?}", started.elapsed());
}
