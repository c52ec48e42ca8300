//! One app cannot exhaust the server (issue 14, point 5): a log flood, a
//! connection flood, an oversized config and an oversized dyno each meet a
//! bound, and the server keeps answering.

mod common;
mod platform;

use std::time::{Duration, Instant};

use common::poll_until;
use platform::{DEPLOY, Server, TestServer, have_git, repo};

/// The peak a server may reach while one of its dynos floods its log.
const RSS_LIMIT_KB: u64 = 100 * 1024;

/// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`).
fn status_kb(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn deploy(server: &Server, name: &str, procfile: &str) -> common::App {
    let app = repo(server, procfile);
    server.ok(app.path(), &["apps:create", name]);
    server.push(app.path());
    server.ok(app.path(), &["scale", "worker=1", "-a", name]);
    app
}

#[test]
fn a_dyno_flooding_its_log_with_long_lines_loses_its_own_lines_not_the_servers_memory() {
    let Some(server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let pid = server.pid().expect("the server runs");
    // 4 GiB of 100,000-byte lines, ten times Heroku's limit, as fast as a pipe
    // takes them. The flood leaves the dyno's budget spent: two quiet seconds
    // refill it, so the end marker gets in.
    let app = deploy(
        &server,
        "flood",
        "worker: yes \"$(head -c 99999 /dev/zero | tr '\\0' x)\" | head -c 4294967296; \
         echo; sleep 2; echo flood over; exec sleep 1000\n",
    );
    let dir = app.path();
    let started = Instant::now();
    let mut answered = 0;
    let mut peak_rss = 0;
    // Ample: 4 GiB take some 40 s through a debug build on a busy 2-core
    // machine; the bound under test is memory, not speed.
    let over = poll_until(Duration::from_secs(480), || {
        std::thread::sleep(Duration::from_millis(500));
        peak_rss = peak_rss.max(status_kb(pid, "VmRSS").unwrap_or(0));
        // The API still answers while the dyno floods.
        let (ok, out, err) = server.cli(dir, &["ps", "-a", "flood"]);
        assert!(ok, "crew ps during the flood:\n{out}\n{err}");
        answered += 1;
        let (_, logs, _) = server.cli(dir, &["logs", "-a", "flood", "-n", "20", "-d", "worker"]);
        logs.contains("app[worker.1]: flood over")
    });
    let took = started.elapsed();
    let hwm = status_kb(pid, "VmHWM").unwrap_or(0);
    eprintln!(
        "log flood: 4 GiB in {:.1} s; server peak RSS {} kB (VmHWM), {} kB highest VmRSS sampled; \
         the API answered {answered} times meanwhile",
        took.as_secs_f64(),
        hwm,
        peak_rss
    );
    assert!(over, "the flood did not end in time");
    assert!(
        hwm < RSS_LIMIT_KB,
        "the server grew to {hwm} kB while one dyno flooded its log"
    );
    let logs = server.ok(dir, &["logs", "-a", "flood", "-n", "10000"]);
    assert!(
        logs.lines().any(
            |l| l.contains("crew[worker.1]: Error L10 (output buffer overflow): ")
                && l.contains(" messages dropped since ")
        ),
        "no L10 line in:\n{}",
        common::tail(&logs, 2000)
    );
    let app_lines: Vec<&str> = logs
        .lines()
        .filter_map(|l| l.split_once(" app[worker.1]: ").map(|(_, text)| text))
        .collect();
    assert!(app_lines.len() > 2, "{}", common::tail(&logs, 2000));
    for text in &app_lines {
        let body = text.strip_suffix(" [line cut]").unwrap_or(text);
        assert!(
            body.len() <= 10_000,
            "a line of {} bytes was kept",
            body.len()
        );
    }
    assert!(
        app_lines.iter().any(|t| t.ends_with(" [line cut]")),
        "no line says it was cut"
    );
}

#[test]
fn the_server_answers_once_the_flood_is_over() {
    // Kept apart from the flood test so that one failing says which part broke.
    let Some(server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let app = deploy(
        &server,
        "burst",
        "worker: yes line | head -c 5000000; sleep 2; echo burst over; exec sleep 1000\n",
    );
    let done = poll_until(DEPLOY, || {
        let (_, logs, _) = server.cli(app.path(), &["logs", "-a", "burst", "-n", "5"]);
        logs.contains("burst over")
    });
    assert!(done, "the burst did not end");
    let logs = server.ok(app.path(), &["logs", "-a", "burst", "-n", "10000"]);
    let kept = logs
        .lines()
        .filter(|l| l.ends_with("app[worker.1]: line"))
        .count();
    assert!(kept > 0 && kept <= 10_000, "{kept} lines kept");
    assert!(
        logs.contains("Error L10 (output buffer overflow): "),
        "{}",
        common::tail(&logs, 500)
    );
}

/// A `crew server` started with a hard limit of `nofile` open files, so a
/// flood that a test can open reaches it; with the client env to reach it.
struct SmallServer {
    crew: common::Crew,
    home: common::App,
    url: String,
    router: u16,
}

impl SmallServer {
    fn start(nofile: u32) -> Option<SmallServer> {
        if std::process::Command::new("prlimit")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: prlimit (util-linux) is not installed");
            return None;
        }
        let home = common::App::new();
        let url = format!("127.0.0.1:{}", platform::free_port());
        let mut command = std::process::Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg(common::CREW)
            .args(["server", "--isolation", "off", "--data"])
            .arg(home.join("data"))
            .args(["--listen", &url, "--router", "127.0.0.1:0"])
            .args(["--dyno-ports", "47600-47650"])
            .env("HOME", home.path())
            .current_dir(home.path());
        let crew = common::Crew::spawn(command);
        crew.wait_for("router serving every app at", common::SOON);
        let router = crew
            .stdout()
            .lines()
            .find_map(|l| l.split("localhost:").nth(1))
            .and_then(|rest| rest.trim_end_matches('/').parse().ok())
            .unwrap_or(0);
        Some(SmallServer {
            crew,
            home,
            url: format!("http://{url}"),
            router,
        })
    }

    /// `crew ARGS` against this server; a run past `CLI_DEADLINE` is killed
    /// and fails.
    fn cli(&self, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
        let token = std::fs::read_to_string(self.home.join("data/api-token")).unwrap_or_default();
        let out = tempfile::NamedTempFile::new().expect("a temp file");
        let mut child = std::process::Command::new(common::CREW)
            .args(args)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(out.reopen().expect("reopen"))
            .stderr(out.reopen().expect("reopen"))
            .env("HOME", self.home.path())
            .env("CREW_API_URL", &self.url)
            .env("CREW_API_KEY", token.trim())
            .spawn()
            .expect("running crew");
        let mut status = None;
        poll_until(CLI_DEADLINE, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let text = std::fs::read_to_string(out.path()).unwrap_or_default();
        (status.is_some_and(|s| s.success()), text)
    }
}

/// Long enough for a debug `crew run` on a busy machine, far shorter than
/// the router's 55 s idle limit, which would free a stuck server by itself.
const CLI_DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn a_flood_of_router_connections_leaves_the_api_and_crew_run_answering() {
    if !have_git() {
        return;
    }
    let Some(server) = SmallServer::start(2048) else {
        return;
    };
    let app = common::App::with_procfile("worker: exec sleep 1000\n");
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.email=dev@example.com", "-c", "user.name=dev"])
            .args(args)
            .current_dir(app.path())
            .env("HOME", server.home.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "first"]);
    let (ok, out) = server.cli(app.path(), &["apps:create", "walls"]);
    assert!(ok, "{out}");
    let push = std::process::Command::new("git")
        .args(["push", "crew", "main"])
        .current_dir(app.path())
        .env("HOME", server.home.path())
        .output()
        .expect("git push");
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );

    // More connections than the server has descriptors, each sending one
    // header line and then nothing, as the flood that took the server down.
    let mut flood = Vec::new();
    let router = std::net::SocketAddr::from(([127, 0, 0, 1], server.router));
    // A connect that times out (a full listen queue) counts as an attempt, so
    // the loop ends whatever the server does.
    let mut attempts = 0;
    while attempts < 2500 {
        attempts += 1;
        if let Ok(mut stream) =
            std::net::TcpStream::connect_timeout(&router, Duration::from_millis(500))
        {
            use std::io::Write;
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: walls.localhost\r\n");
            flood.push(stream);
        }
        if attempts - flood.len() > 20 {
            break;
        }
    }
    assert!(
        flood.len() > 2048,
        "only {} connections opened",
        flood.len()
    );
    // Keep the flood alive: a byte now and then is not idle.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = {
        let stop = stop.clone();
        let mut flood: Vec<_> = flood.iter().filter_map(|s| s.try_clone().ok()).collect();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for stream in &mut flood {
                    use std::io::Write;
                    let _ = stream.write_all(b"X");
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };
    let (ok, out) = server.cli(app.path(), &["apps"]);
    assert!(
        ok && out.contains("walls"),
        "the API under the flood: {out}"
    );
    let (ok, out) = server.cli(app.path(), &["run", "-a", "walls", "echo still here"]);
    assert!(
        ok && out.contains("still here"),
        "crew run under the flood: {out}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = trickle.join();
    drop(flood);
    drop(server.crew);
}
