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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{CREW, poll_until};
use platform::{DEPLOY, Server, commit_all, have_git, http_get, repo};

/// A web dyno: busybox's httpd serving `public/` on PORT.
const PROCFILE: &str = "web: /bin/busybox httpd -f -p $PORT -h /app/public\n\
                        worker: while true; do echo \"tick $DYNO\"; sleep 1; done\n";

fn get(port: u16, host: &str) -> (u16, String) {
    http_get(port, host, "/", &[])
}

#[test]
fn a_swarm_backed_server_deploys_scales_runs_and_serves() {
    if !have_git() {
        return;
    }
    if let Some(why) = swarm_support::swarm_unavailable() {
        eprintln!("skipped: the Swarm backend test needs a real dockerd: {why}");
        return;
    }
    let daemon = swarm_support::Dockerd::start(None).expect("dockerd");
    swarm_support::block_on(daemon.docker.swarm_init(
        "127.0.0.1",
        &format!("127.0.0.1:{}", swarm_support::free_port()),
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

    let app = repo(&server, PROCFILE);
    app.write("public/index.html", "hello v1\n");
    commit_all(&server, app.path(), "page");
    let dir = app.path();
    server.ok(dir, &["apps:create", "docked"]);
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(ok, "{text}");
    server.ok(dir, &["scale", "-a", "docked", "web=2", "worker=2"]);
    let ps = server.wait_up(dir, "docked", 4);
    let header = ps.lines().next().unwrap_or_default();
    assert!(header.contains("Node"), "ps shows each dyno's node: {ps}");

    let router = server.router;
    let served = poll_until(DEPLOY, || get(router, "docked.localhost").1 == "hello v1\n");
    assert!(served, "{:?}", get(router, "docked.localhost"));
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
    commit_all(&server, dir, "v2");
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(ok, "{text}");
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
}
