//! `crew server --backend swarm` end to end, on a real dockerd that the test
//! starts on a private socket and data root: a git push becomes services,
//! `ps`, `scale`, `logs` and `run` go through the swarm, and the router keeps
//! serving through a deploy. Needs root and Debian's docker.io and
//! busybox-static (`.ci/run` installs them); says so and skips otherwise.

mod common;
mod platform;
#[path = "../../swarm/tests/support/mod.rs"]
mod swarm_support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{CREW, poll_until};
use platform::{DEPLOY, Server, commit_all, have_git, http_get, repo};

/// A web dyno: busybox's httpd serving `public/` on PORT.
const PROCFILE: &str = "web: /bin/busybox httpd -f -p $PORT -h /app/public\n\
                        worker: while true; do echo \"tick $DYNO\"; sleep 1; done\n";

fn get(port: u16, host: &str) -> (u16, String) {
    http_get(port, host, "/", &[])
}

/// A `crew server --backend swarm` on a dockerd of the test's own, a swarm
/// manager. The server goes first, then the daemon, then the turn.
struct SwarmServer {
    server: Server,
    daemon: swarm_support::Dockerd,
    _turn: MutexGuard<'static, ()>,
}

/// One daemon at a time: two in the host's network namespace would fight
/// over `docker0` and its iptables rules.
static ONE_DAEMON: Mutex<()> = Mutex::new(());

/// The server, or `None` (the test is skipped, and says why) where no real
/// dockerd can run.
fn swarm_server() -> Option<SwarmServer> {
    if !have_git() {
        return None;
    }
    if let Some(why) = swarm_support::swarm_unavailable() {
        eprintln!("skipped: the Swarm backend test needs a real dockerd: {why}");
        return None;
    }
    // A test that failed holding the turn has cleaned up after itself.
    let turn = ONE_DAEMON.lock().unwrap_or_else(|p| p.into_inner());
    let daemon = swarm_support::Dockerd::start(None).expect("dockerd");
    swarm_support::block_on(daemon.docker.swarm_init(
        "127.0.0.1",
        &format!("127.0.0.1:{}", crew_testkit::ports::free_port()),
    ))
    .expect("swarm init");
    let rootfs = swarm_support::busybox_rootfs(daemon.dir.path());
    let socket = daemon.socket.display().to_string();
    let rootfs_arg = rootfs.display().to_string();
    let server = Server::start_with(&[
        "--backend",
        "swarm",
        "--docker-socket",
        &socket,
        "--stack-rootfs",
        &rootfs_arg,
    ]);
    assert!(
        server.output().contains("dynos run on swarm"),
        "{}",
        server.output()
    );
    Some(SwarmServer {
        server,
        daemon,
        _turn: turn,
    })
}

#[test]
fn a_swarm_backed_server_deploys_scales_runs_and_serves() {
    let Some(swarm) = swarm_server() else {
        return;
    };
    let (server, daemon) = (&swarm.server, &swarm.daemon);
    let app = repo(server, PROCFILE);
    app.write("public/index.html", "hello v1\n");
    commit_all(server, app.path(), "page");
    let dir = app.path();
    server.deploy(dir, "docked");
    server.ok(dir, &["scale", "-a", "docked", "web=2", "worker=2"]);
    let ps = server.wait_up(dir, "docked", 4);
    let header = ps.lines().next().unwrap_or_default();
    assert!(header.contains("Node"), "ps shows each dyno's node: {ps}");

    let router = server.router;
    let served = poll_until(DEPLOY, || get(router, "docked.localhost").1 == "hello v1\n");
    assert!(served, "{:?}", get(router, "docked.localhost"));
    // The router's place on the app's network.
    let gateway = swarm_support::block_on(daemon.docker.container_inspect("crew-docked-router"));
    assert!(
        gateway.as_ref().is_ok_and(|g| g.state.running),
        "the router's gateway runs: {gateway:?}"
    );
    let logged = poll_until(DEPLOY, || {
        let logs = server.ok(dir, &["logs", "-a", "docked", "-n", "200"]);
        logs.contains("app[worker.1]: tick worker.1")
            && logs.contains("app[worker.2]: tick worker.2")
    });
    assert!(
        logged,
        "{}",
        server.ok(dir, &["logs", "-a", "docked", "-n", "200"])
    );

    // One-offs: attached (output and exit code back here) and detached.
    let output = Command::new(CREW)
        .args(["run", "-a", "docked", "echo one-off $DYNO; exit 3"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .env("HOME", server.home.path())
        .env("CREW_API_URL", &server.url)
        .env("CREW_API_KEY", server.token())
        .output()
        .expect("crew run");
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(out.contains("one-off run."), "{out}");
    server.ok(
        dir,
        &["run:detached", "-a", "docked", "echo detached-$((6 * 7))"],
    );
    let detached = poll_until(DEPLOY, || {
        server
            .ok(dir, &["logs", "-a", "docked", "-n", "300"])
            .contains("detached-42")
    });
    assert!(detached);

    // A deploy under load: every request through the router is answered.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = {
        let (stop, answered, failures) = (stop.clone(), answered.clone(), failures.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(240);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (status, body) = get(router, "docked.localhost");
                if status == 200 {
                    answered.fetch_add(1, Ordering::Relaxed);
                } else if let Ok(mut f) = failures.lock() {
                    f.push(format!("{status}: {}", body.lines().last().unwrap_or("")));
                }
            }
        })
    };
    assert!(poll_until(DEPLOY, || answered.load(Ordering::Relaxed) >= 20));
    app.write("public/index.html", "hello v2\n");
    commit_all(server, dir, "v2");
    server.push(dir);
    let rolled = poll_until(DEPLOY, || get(router, "docked.localhost").1 == "hello v2\n");
    let before = answered.load(Ordering::Relaxed);
    assert!(poll_until(DEPLOY, || answered.load(Ordering::Relaxed) >= before + 20));
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    assert!(rolled, "the new release never answered");
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the deploy: {:?}",
        failures.len(),
        failures.len() + answered.load(Ordering::Relaxed),
        &failures[..failures.len().min(10)]
    );

    // Scaling down and destroying leave no service behind.
    server.ok(dir, &["scale", "-a", "docked", "worker=0"]);
    server.wait_up(dir, "docked", 2);
    server.ok(
        dir,
        &["apps:destroy", "-a", "docked", "--confirm", "docked"],
    );
    let services = swarm_support::block_on(
        daemon
            .docker
            .services(&crew_swarm::docker::label_filter("heroku.app", "docked")),
    );
    assert!(
        services.as_ref().is_ok_and(|s| s.is_empty()),
        "{services:?}"
    );
    let gateway = swarm_support::block_on(daemon.docker.container_inspect("crew-docked-router"));
    assert!(
        gateway.as_ref().is_err_and(|e| e.is_not_found()),
        "the gateway goes with the app: {gateway:?}"
    );
}

/// A release command that shows where it runs: the release's page (its
/// slug), a config var, and how many users its `/etc/passwd` has, counted
/// with shell builtins; then it writes into `/app`.
const RELEASING: &str = "web: /bin/busybox httpd -f -p $PORT -h /app/public\n\
     release: n=0; while read -r line; do n=$((n + 1)); done < /etc/passwd; \
     echo \"$DYNO serves $(cat /app/public/index.html) and says $GREETING, among $n users\"; \
     echo made > /app/release-made\n";

/// The same web, and a release command that fails after saying which page
/// its release has.
const FAILING: &str = "web: /bin/busybox httpd -f -p $PORT -h /app/public\n\
     release: echo \"failing on $(cat /app/public/index.html)\"; exit 3\n";

/// The release command's containers of `app` that the daemon still has.
fn release_containers(daemon: &swarm_support::Dockerd, app: &str) -> usize {
    let filters = serde_json::json!({
        "label": [format!("heroku.app={app}"), "heroku.type=release".to_string()],
    });
    swarm_support::block_on(daemon.docker.containers(&filters))
        .expect("listing containers")
        .len()
}

/// Heroku's release phase on the swarm: the release command runs as a
/// container of the new release (its image, its config), not on the server,
/// its output reaches the pusher, and a failing one fails the push while
/// the release before it keeps serving.
#[test]
fn the_release_command_runs_in_a_container_of_the_new_release() {
    let Some(swarm) = swarm_server() else {
        return;
    };
    let (server, daemon) = (&swarm.server, &swarm.daemon);
    let app = repo(server, RELEASING);
    app.write("public/index.html", "hello v1\n");
    commit_all(server, app.path(), "page");
    let dir = app.path();
    server.ok(dir, &["apps:create", "phased"]);
    server.ok(dir, &["config:set", "-a", "phased", "GREETING=bonjour"]);
    let text = server.push(dir);
    assert!(
        text.contains("release.1 serves hello v1 and says bonjour,"),
        "the release command's output, with its release's slug and config, reaches the pusher:\n{text}"
    );
    assert!(
        text.contains("among 2 users"),
        "it ran on the stack's root filesystem (root and nobody), not on the server's, which has more:\n{text}"
    );
    assert!(text.contains("Released v3"), "{text}");
    let slugs = server.data().join("apps").join("phased").join("slugs");
    for entry in std::fs::read_dir(&slugs)
        .expect("the slug directory")
        .flatten()
    {
        assert!(
            !entry.path().join("release-made").exists(),
            "what it wrote in /app stayed in its container, not in {}",
            entry.path().display()
        );
    }
    assert_eq!(
        release_containers(daemon, "phased"),
        0,
        "its container went"
    );

    server.ok(dir, &["scale", "-a", "phased", "web=1"]);
    server.wait_up(dir, "phased", 1);
    let router = server.router;
    let served = poll_until(DEPLOY, || get(router, "phased.localhost").1 == "hello v1\n");
    assert!(served, "{:?}", get(router, "phased.localhost"));

    // A failing release command: the push is refused, the release fails,
    // and v3 keeps serving.
    app.write("public/index.html", "hello v2\n");
    app.write("Procfile", FAILING);
    commit_all(server, dir, "a release that fails");
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(!ok, "a failed release command was accepted:\n{text}");
    assert!(
        text.contains("failing on hello v2"),
        "it ran the new release's slug:\n{text}"
    );
    assert!(
        text.contains(
            "Release command failed: it exited with status 3; the current release keeps running."
        ),
        "{text}"
    );
    assert!(!text.contains("Released v4"), "{text}");
    let releases = server.ok(dir, &["releases", "-a", "phased"]);
    let current = releases
        .lines()
        .find(|l| l.contains("(current)"))
        .unwrap_or_default();
    assert!(current.starts_with("v3"), "{releases}");
    for _ in 0..5 {
        assert_eq!(
            get(router, "phased.localhost"),
            (200, "hello v1\n".to_string()),
            "the release before keeps serving"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        release_containers(daemon, "phased"),
        0,
        "its container went"
    );

    server.ok(
        dir,
        &["apps:destroy", "-a", "phased", "--confirm", "phased"],
    );
}
