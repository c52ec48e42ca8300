//! The conformance suite (`crew_testkit::conformance`, shared with
//! crew-kubernetes) against crew's own engine ([`LocalPlacement`], the
//! reference) and against [`SwarmPlacement`] on a real dockerd of the
//! test's own.
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
    ReleaseType,
};
use crew_runtime::PlainRuntime;
use crew_swarm::{SwarmConfig, SwarmPlacement};
use crew_testkit::conformance::{Subject, formation, release, suite};
use support::{Dockerd, Logs, backend_get, wait_for};
use tokio::sync::mpsc;

// --- crew's own engine ---------------------------------------------------

struct Local {
    placement: LocalPlacement<PlainRuntime>,
    slug: (std::path::PathBuf, std::path::PathBuf),
}

impl Subject for Local {
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

    fn patience(&self) -> Duration {
        // A deadline, not a timing: the Swarm run beside it in this binary
        // starts a dockerd and builds images on the same two cores.
        Duration::from_secs(60)
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
            drain_requests: false,
            output_limits: None,
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
                    let answer = backend_get(b, "/").await;
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
    // The tests run as root, so the router joins the app's network.
    assert!(
        backends[0].namespace.is_some(),
        "reached on the app's network: {backends:?}"
    );
    let answer = backend_get(&backends[0], "/").await;
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
        .swarm_init(
            "127.0.0.1",
            &format!("127.0.0.1:{}", crew_testkit::ports::free_port()),
        )
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
