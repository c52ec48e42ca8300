//! One app cannot exhaust the server (issue 14, point 5): a log flood, a
//! connection flood, an oversized config and an oversized dyno each meet a
//! bound, and the server keeps answering.

mod common;
mod platform;

use std::time::{Duration, Instant};

use common::poll_until;
use platform::{DEPLOY, Server, have_git, repo};

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
    let (ok, text) = server.git(app.path(), &["push", "crew", "main"]);
    assert!(ok, "{text}");
    server.ok(app.path(), &["scale", "worker=1", "-a", name]);
    app
}

#[test]
fn a_dyno_flooding_its_log_with_long_lines_loses_its_own_lines_not_the_servers_memory() {
    if !have_git() {
        return;
    }
    let server = Server::start_with(&["--isolation", "off"]);
    let pid = server.pid().expect("the server runs");
    // 4 GiB of 100,000-byte lines, ten times Heroku's limit, as fast as a pipe
    // takes them.
    let app = deploy(
        &server,
        "flood",
        "worker: yes \"$(head -c 99999 /dev/zero | tr '\\0' x)\" | head -c 4294967296; \
         echo flood over; exec sleep 1000\n",
    );
    let dir = app.path();
    let started = Instant::now();
    let mut answered = 0;
    let mut peak_rss = 0;
    let over = poll_until(Duration::from_secs(300), || {
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
    if !have_git() {
        return;
    }
    let server = Server::start_with(&["--isolation", "off"]);
    let app = deploy(
        &server,
        "burst",
        "worker: yes line | head -c 50000000; echo burst over; exec sleep 1000\n",
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
