//! `crew server` end to end: a real server in a temp dir, real `git push`es,
//! driven through the CLI.

mod common;
mod platform;

use std::process::Command;
use std::time::Duration;

use common::{CREW, SOON, Signal, poll_until};
use platform::{DEPLOY, Server, TestServer, commit_all, dyno_pids, have_git, pids_alive, repo};

#[test]
fn the_api_wants_the_token_and_keeps_it_private() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.data().join("api-token"))
            .expect("token file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let (ok, _, err) = {
        let output = Command::new(CREW)
            .args(["apps"])
            .env("HOME", server.home.path())
            .env("CREW_API_URL", &server.url)
            .env("CREW_API_KEY", "wrong")
            .output()
            .expect("crew apps");
        (
            output.status.success(),
            String::new(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert!(!ok);
    assert!(err.contains("Invalid credentials"), "{err}");
}

#[test]
fn apps_are_created_listed_and_refused_when_bad() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let dir = server.home.path();
    let out = server.ok(dir, &["apps:create", "shop"]);
    assert!(out.contains(&format!("{}/shop.git", server.url)), "{out}");
    assert!(server.ok(dir, &["apps"]).contains("shop"));
    assert!(
        server
            .ok(dir, &["apps:info", "-a", "shop"])
            .contains("=== shop")
    );
    for bad in ["Shop", "s", "1shop", "shop_1"] {
        let (ok, _, err) = server.cli(dir, &["apps:create", bad]);
        assert!(!ok && err.contains("not a valid app name"), "{bad}: {err}");
    }
    let (ok, _, err) = server.cli(dir, &["apps:create", "shop"]);
    assert!(!ok && err.contains("already taken"), "{err}");
    for run in ["run", "run:detached"] {
        let (ok, _, err) = server.cli(dir, &[run, "-a", "shop", "true"]);
        assert!(
            !ok && err.contains("shop has no release to run yet: push one first"),
            "{run}: {err}"
        );
    }
    let (ok, _, err) = server.cli(dir, &["apps:destroy", "-a", "shop"]);
    assert!(!ok && err.contains("--confirm shop"), "{err}");
    server.ok(dir, &["apps:destroy", "-a", "shop", "--confirm", "shop"]);
    assert!(!server.ok(dir, &["apps"]).contains("shop"));
}

#[test]
fn a_push_deploys_and_the_formation_follows_scale_config_and_rollback() {
    let Some(mut server) = TestServer::new().start() else {
        return;
    };
    let app = repo(
        &server,
        "web: python3 -m http.server $PORT\nworker: while true; do echo \"tick $DYNO ${FOO:-unset}\"; sleep 0.2; done\n",
    );
    let dir = app.path();
    let out = server.ok(dir, &["apps:create", "demo"]);
    assert!(out.contains("Git remote crew added"), "{out}");

    let text = server.push(dir);
    for expected in [
        "-----> Procfile app detected",
        "Procfile declares types -> web, worker",
        "-----> Compressing...",
        "-----> Launching...",
        "Released v2",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    // The remote makes `-a` unnecessary inside the repository.
    server.wait_up(dir, "demo", 1);

    let out = server.ok(dir, &["scale", "web=2", "worker=1"]);
    assert!(
        out.contains("Scaling web processes... done, now running 2"),
        "{out}"
    );
    let ps = server.wait_up(dir, "demo", 3);
    assert!(ps.contains("web.2") && ps.contains("worker.1"), "{ps}");
    assert_eq!(server.ok(dir, &["scale"]).trim(), "web=2 worker=1");

    let out = server.ok(dir, &["config:set", "FOO=bar"]);
    assert!(out.contains("done, v3"), "{out}");
    assert_eq!(server.ok(dir, &["config:get", "FOO"]).trim(), "bar");
    let seen = poll_until(DEPLOY, || {
        server
            .ok(dir, &["logs", "--ps", "worker", "-n", "5"])
            .contains("app[worker.1]: tick worker.1 bar")
    });
    assert!(seen, "the worker never saw FOO=bar");

    let releases = server.ok(dir, &["releases"]);
    assert!(releases.contains("Set FOO config vars"), "{releases}");
    assert!(releases.contains("Deploy "), "{releases}");
    let out = server.ok(dir, &["rollback", "v2"]);
    assert!(out.contains("done, v4"), "{out}");
    assert_eq!(server.ok(dir, &["config:get", "FOO"]).trim(), "");
    assert!(
        server
            .ok(dir, &["releases:info", "v4"])
            .contains("Rollback to v2")
    );

    let logs = server.ok(dir, &["logs", "-n", "200"]);
    for expected in [
        "crew[api]: Deploy ",
        "Release v3 created",
        "Scaled to web@2",
        "State changed from starting to up",
    ] {
        assert!(
            logs.contains(expected),
            "missing `{expected}` in logs:\n{logs}"
        );
    }

    // The server dies hard and comes back: nothing of the old one keeps running,
    // and the formation is back.
    let before = dyno_pids(&server.wait_up(dir, "demo", 3));
    server.kill(Signal::KILL);
    assert!(
        poll_until(SOON, || pids_alive(&before).is_empty()),
        "dynos outlived the killed server: {:?}",
        pids_alive(&before)
    );
    server.boot();
    let ps = server.wait_up(dir, "demo", 3);
    assert!(ps.contains("web.2"), "{ps}");
    let after = dyno_pids(&ps);
    server.kill(Signal::TERM);
    assert!(
        poll_until(Duration::from_secs(40), || pids_alive(&after).is_empty()),
        "a clean stop left dynos running"
    );
}

#[test]
fn a_failed_build_rejects_the_push_and_the_release_keeps_running() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = repo(
        &server,
        "worker: while true; do echo alive; sleep 0.2; done\n",
    );
    let dir = app.path();
    server.deploy(dir, "steady");
    server.ok(dir, &["scale", "worker=1"]);
    let before = dyno_pids(&server.wait_up(dir, "steady", 1));

    // No Procfile and nothing else: no buildpack applies.
    std::fs::remove_file(app.join("Procfile")).expect("remove Procfile");
    std::fs::write(app.join("README"), "nothing to run\n").expect("write");
    for args in [&["add", "-A"][..], &["commit", "-qm", "break it"]] {
        let (ok, text) = server.git(dir, args);
        assert!(ok, "{text}");
    }
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(!ok, "a push with nothing to build was accepted:\n{text}");
    assert!(text.contains(" !     "), "{text}");
    assert!(text.contains("pre-receive hook declined"), "{text}");
    let ps = server.wait_up(dir, "steady", 1);
    assert_eq!(dyno_pids(&ps), before, "the running release was touched");
    assert!(!server.ok(dir, &["releases"]).contains("v3"));
}

#[test]
fn a_python_app_gets_a_virtualenv_and_runs_from_it() {
    if !have_git() {
        return;
    }
    let venv = Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .status()
        .is_ok_and(|s| s.success());
    if !venv {
        eprintln!("skipped: python3 with venv is not installed (.ci/run installs python3-venv)");
        return;
    }
    let server = Server::start();
    let app = repo(
        &server,
        "worker: python -c 'import sys; print(\"python at\", sys.prefix)' && sleep 1000\n",
    );
    app.write("requirements.txt", "");
    commit_all(&server, app.path(), "python");
    let text = server.deploy(app.path(), "pyapp");
    assert!(text.contains("-----> Python app detected"), "{text}");
    server.ok(app.path(), &["scale", "worker=1"]);
    let seen = poll_until(DEPLOY, || {
        server
            .ok(app.path(), &["logs", "--source", "app", "-n", "20"])
            .contains(".venv")
    });
    assert!(
        seen,
        "the worker did not run the slug's virtualenv python:\n{}",
        server.ok(app.path(), &["logs", "-n", "50"])
    );
}

#[test]
fn a_node_app_is_built_with_npm() {
    if !have_git() {
        return;
    }
    let npm = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !npm {
        eprintln!("skipped: npm is not installed (.ci/run installs nodejs and npm)");
        return;
    }
    let server = Server::start();
    let app = repo(
        &server,
        "worker: node -e 'console.log(\"node says hi\")' && sleep 1000\n",
    );
    app.write(
        "package.json",
        r#"{"name": "nodeapp", "version": "1.0.0", "private": true}"#,
    );
    commit_all(&server, app.path(), "node");
    let text = server.deploy(app.path(), "nodeapp");
    assert!(text.contains("app detected"), "{text}");
    server.ok(app.path(), &["scale", "worker=1"]);
    let seen = poll_until(DEPLOY, || {
        server
            .ok(app.path(), &["logs", "-n", "20"])
            .contains("app[worker.1]: node says hi")
    });
    assert!(seen, "{}", server.ok(app.path(), &["logs", "-n", "50"]));
}

#[test]
fn the_release_command_gates_the_release() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = repo(
        &server,
        "release: echo migrating; touch migrated\nworker: while true; do sleep 1; done\n",
    );
    let dir = app.path();
    let text = server.deploy(dir, "gated");
    assert!(
        text.contains("migrating"),
        "the release output reaches the pusher:\n{text}"
    );
    assert!(text.contains("Released v2"), "{text}");

    // A failing release command: the push is refused and v2 stays current.
    std::fs::write(
        app.join("Procfile"),
        "release: echo nope; exit 3\nworker: while true; do sleep 1; done\n",
    )
    .expect("write Procfile");
    commit_all(&server, dir, "bad release");
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(!ok, "a failed release command was accepted:\n{text}");
    assert!(text.contains("nope"), "{text}");
    assert!(
        text.contains("Release command failed: it exited with status 3"),
        "the pusher is not told the exit code:\n{text}"
    );
    let releases = server.ok(dir, &["releases"]);
    assert!(
        releases.contains("v2") && releases.contains("(current)"),
        "{releases}"
    );
    let current = releases
        .lines()
        .find(|l| l.contains("(current)"))
        .unwrap_or_default();
    assert!(current.starts_with("v2"), "{releases}");
}

/// A config change made while a deploy's release command runs waits for
/// that release, then starts from it: neither the pushed code nor the new
/// var is lost.
#[test]
fn a_config_change_during_a_release_command_keeps_both() {
    if !have_git() {
        return;
    }
    // The release command waits until something listens on this port of the
    // host's loopback, so its dynos share the host's network here: with a
    // network of its own (the default) a dyno cannot reach the host at all,
    // and its /tmp is its own too.
    let server = Server::start_with(&["--dyno-network", "off"]);
    let gate = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let app = repo(
        &server,
        "worker: while true; do echo \"tick one ${FOO:-unset}\"; sleep 0.2; done\n",
    );
    let dir = app.path();
    server.deploy(dir, "queued");
    server.ok(dir, &["scale", "worker=1"]);
    std::fs::write(
        app.join("Procfile"),
        format!(
            "release: until python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {}))' \
             2>/dev/null; do sleep 0.1; done; echo released\n\
             worker: while true; do echo \"tick two ${{FOO:-unset}}\"; sleep 0.2; done\n",
            gate.port()
        ),
    )
    .expect("write Procfile");
    commit_all(&server, dir, "two");
    std::thread::scope(|scope| {
        let push = scope.spawn(|| server.git(dir, &["push", "crew", "main"]));
        let releasing = poll_until(DEPLOY, || {
            server
                .ok(dir, &["logs", "-n", "50"])
                .contains("Running release v3 commands")
        });
        assert!(releasing, "{}", server.ok(dir, &["logs", "-n", "50"]));
        let set = scope.spawn(|| server.ok(dir, &["config:set", "FOO=bar"]));
        let waited = !poll_until(Duration::from_secs(1), || set.is_finished());
        // Opened before any assertion, so that a failing test does not
        // leave the push waiting.
        let _open = std::net::TcpListener::bind(gate).expect("open the gate");
        let (ok, text) = push.join().expect("the push");
        assert!(
            waited,
            "the config change did not wait for the release in progress"
        );
        assert!(ok && text.contains("Released v3"), "{text}");
        let out = set.join().expect("config:set");
        assert!(out.contains("done, v4"), "{out}");
    });
    let both = poll_until(DEPLOY, || {
        server
            .ok(dir, &["logs", "--ps", "worker", "-n", "5"])
            .contains("tick two bar")
    });
    assert!(
        both,
        "the running release lost the push or the var: {}",
        server.ok(dir, &["logs", "-n", "40"])
    );
}

#[test]
fn one_offs_run_attached_and_detached() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    server.deploy(dir, "oneoff");
    let (ok, out, err) = server.cli(dir, &["run", "-a", "oneoff", "echo hi from $DYNO; exit 7"]);
    assert!(!ok, "{out}{err}");
    assert!(out.contains("hi from run."), "{out}{err}");
    let code = Command::new(CREW)
        .args(["run", "-a", "oneoff", "exit 7"])
        .env("HOME", server.home.path())
        .env("CREW_API_URL", &server.url)
        .env("CREW_API_KEY", server.token())
        .status()
        .expect("crew run")
        .code();
    assert_eq!(code, Some(7));
    let out = server.ok(
        dir,
        &["run:detached", "-a", "oneoff", "sleep 0.5; echo later"],
    );
    assert!(out.contains("run."), "{out}");
    let seen = poll_until(DEPLOY, || {
        server
            .ok(dir, &["logs", "--ps", "run", "-n", "50"])
            .contains("later")
    });
    assert!(seen, "{}", server.ok(dir, &["logs", "-n", "50"]));
}

/// One HTTP/1.1 request with the server's token: the status and the body.
fn api(server: &Server, method: &str, path: &str, body: &str) -> (u16, String) {
    let bearer = format!("Bearer {}", server.token());
    let response = server.api_request(
        method,
        path,
        &[
            ("Authorization", bearer.as_str()),
            ("Accept", "application/vnd.heroku+json; version=3"),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    (response.status, response.text)
}

#[test]
fn names_domains_and_one_off_requests_that_cannot_work_are_refused() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let dir = server.home.path();
    // The app name is a DNS label in APP.localhost.
    for bad in ["ok-name-", "a-"] {
        let (ok, _, err) = server.cli(dir, &["apps:create", bad]);
        assert!(!ok && err.contains("not a valid app name"), "{bad}: {err}");
    }
    server.ok(dir, &["apps:create", "strict"]);
    for bad in ["shop.localhost", "localhost", "x.y.LOCALHOST"] {
        let (ok, _, err) = server.cli(dir, &["domains:add", "-a", "strict", bad]);
        assert!(!ok && err.contains("localhost"), "{bad}: {err}");
    }
    assert!(
        !server
            .ok(dir, &["domains", "-a", "strict"])
            .contains("localhost")
    );
    // A one-off that could only fail to start is a 422 that says why (not
    // the "no release yet" of a good request), and no dyno.
    for (body, why) in [
        (
            r#"{"command": "true", "env": {"A=B": "x"}}"#,
            "`A=B` is not a valid environment variable name",
        ),
        (
            r#"{"command": "true", "env": {"": "x"}}"#,
            "`` is not a valid environment variable name",
        ),
        (
            r#"{"command": "true", "env": {"A": "x\u0000y"}}"#,
            "`A` contains a NUL byte",
        ),
        (
            r#"{"command": "echo a\u0000b"}"#,
            "the command contains a NUL byte",
        ),
        (r#"{"command": ""}"#, "the command is empty"),
        (r#"{"command": "   "}"#, "the command is empty"),
    ] {
        let (status, text) = api(&server, "POST", "/apps/strict/dynos", body);
        assert!(status == 422 && text.contains(why), "{body}: {text}");
    }
    let (status, text) = api(
        &server,
        "POST",
        "/apps/strict/dynos",
        r#"{"command": "true"}"#,
    );
    assert!(status == 422 && text.contains("no release"), "{text}");
    let (ok, _, err) = server.cli(dir, &["run:detached", "-a", "strict", ""]);
    assert!(!ok && err.contains("empty"), "{err}");
}

#[test]
fn a_rollback_to_a_release_without_a_slug_is_refused() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    server.deploy(dir, "backwards");
    // With one deploy, the previous release is v1, which has no code.
    for args in [&["rollback"][..], &["rollback", "v1"]] {
        let (ok, out, err) = server.cli(dir, args);
        assert!(!ok, "{args:?} was accepted: {out}{err}");
        assert!(err.contains("v1") && err.contains("no slug"), "{err}");
    }
    let (status, text) = api(
        &server,
        "POST",
        "/apps/backwards/releases",
        r#"{"release": "1"}"#,
    );
    assert_eq!(status, 422, "{text}");
    let releases = server.ok(dir, &["releases"]);
    let current = releases
        .lines()
        .find(|l| l.contains("(current)"))
        .unwrap_or_default();
    assert!(current.starts_with("v2"), "{releases}");
    assert!(!releases.contains("Rollback"), "{releases}");
}

/// During a new release's restart, each old dyno is stopped once, and its
/// lines end before its successor of the same name starts.
#[test]
fn a_restart_stops_each_dyno_once_and_old_lines_end_before_the_new_start() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = repo(
        &server,
        "worker: trap 'echo \"bye $V\"; exit 0' TERM; while true; do echo \"tick ${V:-one}\"; sleep 0.1; done\n",
    );
    let dir = app.path();
    server.deploy(dir, "quiet");
    server.ok(dir, &["scale", "worker=2"]);
    server.wait_up(dir, "quiet", 2);
    server.ok(dir, &["config:set", "V=two"]);
    for worker in ["worker.1", "worker.2"] {
        let mut log = String::new();
        let done = poll_until(DEPLOY, || {
            log = server.ok(dir, &["logs", "--ps", worker, "-n", "1000"]);
            log.contains(&format!("app[{worker}]: tick two"))
        });
        assert!(done, "{log}");
        let stops = log
            .lines()
            .filter(|l| l.contains("Stopping all processes with"))
            .count();
        assert_eq!(stops, 1, "{log}");
        let second_start = log
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains("Starting process with command"))
            .map(|(i, _)| i)
            .nth(1)
            .unwrap_or_else(|| panic!("no second start:\n{log}"));
        let old_after_new = log
            .lines()
            .skip(second_start)
            .any(|l| l.contains("tick one") || l.contains("Process exited"));
        assert!(
            !old_after_new,
            "the old {worker} spoke after the new one started:\n{log}"
        );
        assert!(
            log.lines()
                .take(second_start)
                .any(|l| l.contains("Process exited with status 0")),
            "{log}"
        );
    }
}

#[test]
fn git_remote_adds_the_remote_of_an_app_that_exists() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    // Made elsewhere (here: outside any repository).
    server.ok(server.home.path(), &["apps:create", "elsewhere"]);
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    let (ok, _, err) = server.cli(dir, &["apps:create", "elsewhere"]);
    assert!(!ok && err.contains("crew git:remote -a elsewhere"), "{err}");
    let out = server.ok(dir, &["git:remote", "-a", "elsewhere"]);
    assert!(
        out.contains(&format!(
            "Git remote crew added: {}/elsewhere.git",
            server.url
        )),
        "{out}"
    );
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(ok && text.contains("Released v2"), "{text}");
    let (ok, _, err) = server.cli(dir, &["git:remote", "-a", "nowhere"]);
    assert!(!ok && err.contains("nowhere"), "{err}");
}

/// Inside a running `crew start`, `crew ps` means it, even in a repository
/// whose `crew` remote names a server; `-a` still means the server.
#[test]
fn the_nearest_crew_start_wins_over_a_git_remote() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    server.ok(dir, &["apps:create", "remote-app"]);
    let local = app.spawn(&["start"]);
    local.wait_for("worker.1", SOON);
    let sub = app.join("sub");
    std::fs::create_dir_all(&sub).expect("mkdir");
    for place in [dir, sub.as_path()] {
        let mut ps = String::new();
        let found = poll_until(SOON, || {
            let (_, out, _) = server.cli(place, &["ps"]);
            ps = out;
            ps.contains("worker.1")
        });
        assert!(
            found,
            "crew ps in {} did not show the local worker:\n{ps}",
            place.display()
        );
    }
    // -a is the server's app, which has no release yet.
    let out = server.ok(dir, &["ps", "-a", "remote-app"]);
    assert!(!out.contains("worker.1"), "{out}");
    // Server-only commands still follow the remote.
    assert!(server.ok(dir, &["releases"]).contains("v1"));
    drop(local);
    // Outside any app: what to do, both ways.
    let (ok, _, err) = server.cli(server.home.path(), &["ps"]);
    assert!(
        !ok && err.contains("crew start") && err.contains("-a APP"),
        "{err}"
    );
}

/// A one-off whose environment the kernel refuses (one value over 128 KiB
/// is E2BIG for `execve`) says so on its `crew[run.N]` line.
#[test]
fn a_dyno_that_cannot_start_says_why() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    server.deploy(dir, "toobig");
    let body = format!(
        r#"{{"command": "true", "env": {{"BIG": "{}"}}}}"#,
        "x".repeat(200 * 1024)
    );
    let (status, text) = api(&server, "POST", "/apps/toobig/dynos", &body);
    assert_eq!(status, 201, "{text}");
    let mut log = String::new();
    let said = poll_until(DEPLOY, || {
        log = server.ok(dir, &["logs", "-n", "50"]);
        log.lines()
            .any(|l| l.contains("crew[run.") && l.contains("Argument list too long"))
            && log.contains("to complete")
    });
    assert!(said, "{log}");
    assert!(!log.contains("not found"), "{log}");
}
