//! Issue 3: the live formation. A running `crew start` serves a control socket in
//! the app directory, and `crew ps`, `scale`, `restart`, `stop`, `logs` and `run`
//! drive it from the same directory; `--keep-alive` and `crew.toml` decide what an
//! exit means.
//!
//! Each test starts its own `crew start` in a temp dir on its own ports, drives it
//! with the client commands as a user would, and checks pids, ports, states and
//! that no process is left at the end.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde::Deserialize;

const SOCKET: &str = ".crew.sock";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One process as `crew ps --json` shows it.
#[derive(Debug, Clone, Deserialize)]
struct Proc {
    name: String,
    #[serde(rename = "type")]
    process_type: String,
    state: String,
    command: String,
    updated_at: String,
    pid: Option<i32>,
    port: Option<u16>,
    restarts: u32,
    restart_in: Option<u64>,
}

/// One line of `crew logs`: `2026-11-27T10:14:40.123456+00:00 app[web.1]: text`.
#[derive(Debug, Clone)]
struct LogLine {
    at: chrono::DateTime<chrono::FixedOffset>,
    origin: String,
    source: String,
    text: String,
}

impl LogLine {
    fn parse(line: &str) -> Option<LogLine> {
        let (stamp, rest) = line.split_once(' ')?;
        // `%Y-%m-%dT%H:%M:%S%.6f+00:00`: microseconds, always UTC.
        let shape_ok = stamp.len() == 32
            && stamp.as_bytes()[10] == b'T'
            && stamp.as_bytes()[19] == b'.'
            && stamp.ends_with("+00:00");
        if !shape_ok {
            return None;
        }
        let at = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
        let (origin, rest) = rest.split_once('[')?;
        let (source, text) = rest.split_once("]: ")?;
        Some(LogLine {
            at,
            origin: origin.to_owned(),
            source: source.to_owned(),
            text: text.to_owned(),
        })
    }

    fn is(&self, source: &str, text: &str) -> bool {
        self.source == source && self.text.starts_with(text)
    }
}

/// The lines from `source` whose text starts with `text`.
fn matching<'a>(logs: &'a [LogLine], source: &str, text: &str) -> Vec<&'a LogLine> {
    logs.iter().filter(|l| l.is(source, text)).collect()
}

fn position(logs: &[LogLine], source: &str, text: &str) -> Option<usize> {
    logs.iter().position(|l| l.is(source, text))
}

fn seconds_between(a: &LogLine, b: &LogLine) -> f64 {
    (b.at - a.at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

fn show(logs: &[LogLine]) -> String {
    logs.iter()
        .map(|l| {
            format!(
                "{} {}[{}]: {}",
                l.at.format("%H:%M:%S%.3f"),
                l.origin,
                l.source,
                l.text
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running `crew start` and the app it runs.
struct Live {
    // Declared first so it drops first: the run is killed before its directory goes.
    crew: Crew,
    app: App,
    base: u16,
    // Held until the run is gone.
    _ports: PortBlock,
}

impl Live {
    /// Starts `crew start -p BASE ARGS…` in `app` (`types` process types, for the
    /// port block) and waits until its control socket answers.
    fn start(app: App, types: u16, args: &[&str]) -> Live {
        let ports = port_block(types, 5);
        let base = ports.base;
        let mut argv = vec![String::from("start"), String::from("-p"), base.to_string()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let mut crew = app.spawn(&argv);
        let ready = poll_until(SOON, || {
            crew.try_status().is_some()
                || (app.exists(SOCKET) && app.run_client(&["ps"]).code() == Some(0))
        });
        if !ready || crew.try_status().is_some() {
            panic!(
                "`crew {}` never answered on its socket\n{}",
                argv.join(" "),
                crew.report()
            );
        }
        Live {
            crew,
            app,
            base,
            _ports: ports,
        }
    }

    /// The app's name in API paths: its directory's name.
    fn name(&self) -> String {
        self.app
            .path()
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned()
    }

    /// Runs a client command in the app directory, to its end.
    fn run(&self, args: &[&str]) -> Finished {
        self.app.run_client(args)
    }

    /// Runs a client command in `dir`, to its end.
    fn run_in(&self, dir: &Path, args: &[&str]) -> Finished {
        let mut command = self.app.command(args);
        command.current_dir(dir);
        let mut client = Crew::spawn_client(command);
        client.wait_exit(SOON);
        client.finished()
    }

    /// Runs a client command that must succeed, and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_no_panic(&out.stderr);
        assert_eq!(
            out.code(),
            Some(0),
            "`crew {}` failed\n{}\n=== crew start ===\n{}",
            args.join(" "),
            out.report(),
            self.crew.report()
        );
        out.stdout()
    }

    fn ps(&self) -> Vec<Proc> {
        let json = self.ok(&["ps", "--json"]);
        serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("`crew ps --json` is not a list of dynos: {e}\n{json}"))
    }

    fn get(&self, name: &str) -> Proc {
        let ps = self.ps();
        ps.iter()
            .find(|p| p.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} is not in ps: {ps:#?}"))
    }

    /// The row of `crew ps`'s table for `name`.
    fn ps_row(&self, name: &str) -> Option<String> {
        self.ok(&["ps"])
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(str::to_owned)
    }

    /// Polls `crew ps --json` until `done` holds.
    fn wait_ps(&self, what: &str, done: impl Fn(&[Proc]) -> bool) -> Vec<Proc> {
        let mut last = Vec::new();
        if poll_until(SOON, || {
            last = self.ps();
            done(&last)
        }) {
            return last;
        }
        panic!(
            "timed out waiting for {what}; last ps: {last:#?}\n=== crew start ===\n{}",
            self.crew.report()
        );
    }

    /// Waits until every one of `names` is `up` with a pid.
    fn wait_up(&self, names: &[&str]) -> Vec<Proc> {
        self.wait_ps(&format!("{names:?} to be up"), |ps| {
            names.iter().all(|n| {
                ps.iter()
                    .any(|p| p.name == *n && p.state == "up" && p.pid.is_some())
            })
        })
    }

    /// The names in `crew ps`, in its order.
    fn names(&self) -> Vec<String> {
        self.ps().into_iter().map(|p| p.name).collect()
    }

    fn pid(&self, name: &str) -> i32 {
        self.get(name)
            .pid
            .unwrap_or_else(|| panic!("{name} has no pid"))
    }

    /// `crew logs -n 10000 ARGS…`, every line parsed (a line that is not in
    /// Heroku's format fails the test).
    fn logs(&self, args: &[&str]) -> Vec<LogLine> {
        let mut argv = vec!["logs", "-n", "10000"];
        argv.extend_from_slice(args);
        parse_logs(&self.ok(&argv))
    }

    /// Polls `crew logs` until `done` holds.
    fn wait_logs(&self, what: &str, done: impl Fn(&[LogLine]) -> bool) -> Vec<LogLine> {
        let mut last = Vec::new();
        if poll_until(SOON, || {
            last = self.logs(&[]);
            done(&last)
        }) {
            return last;
        }
        panic!(
            "timed out waiting for {what} in `crew logs`:\n{}\n=== crew start ===\n{}",
            show(&last),
            self.crew.report()
        );
    }

    /// Waits for a line from `source` starting with `text`.
    fn wait_line(&self, source: &str, text: &str) -> Vec<LogLine> {
        self.wait_logs(&format!("{source}: {text}"), |l| {
            position(l, source, text).is_some()
        })
    }

    fn assert_running(&mut self) {
        assert!(
            self.crew.try_status().is_none(),
            "crew start ended, but the run should go on\n{}",
            self.crew.report()
        );
    }

    /// The run ended: its socket is gone and so is every process it started.
    fn assert_cleaned_up(&self) {
        assert!(
            !self.app.exists(SOCKET),
            "the control socket outlived the run\n{}",
            self.crew.report()
        );
        for pid in self.crew.announced_pids() {
            assert_group_gone(pid, Duration::from_secs(2), "after the run ended");
        }
    }

    /// Ends the run with SIGTERM and checks that nothing is left.
    fn finish(mut self) {
        self.assert_running();
        self.crew.signal(Signal::TERM);
        let code = self.crew.wait_code(SOON);
        assert_eq!(
            code,
            143,
            "SIGTERM ends the run with 143\n{}",
            self.crew.report()
        );
        self.assert_cleaned_up();
    }
}

fn parse_logs(text: &str) -> Vec<LogLine> {
    text.lines()
        .map(|l| {
            LogLine::parse(l).unwrap_or_else(|| panic!("not a Heroku log line: {l:?}\nin:\n{text}"))
        })
        .collect()
}

/// A Procfile line for a `web` that serves HTTP on its PORT.
fn web_line() -> String {
    format!("web: {}\n", http_server_command())
}

/// A script that says `worker.1 ready`, and on SIGINT or SIGTERM says
/// `worker.1 got INT` (or `TERM`) and exits 0. Python, since a shell's trap can
/// miss a signal that also kills the `sleep` it waits for.
const REPORTER_PY: &str = "\
import os, signal, sys, time
def say(text):
    os.write(1, (os.environ['DYNO'] + ' ' + text + '\\n').encode())
def said(number, frame):
    say('got ' + signal.Signals(number).name[3:])
    sys.exit(0)
signal.signal(signal.SIGINT, said)
signal.signal(signal.SIGTERM, said)
say('ready')
time.sleep(100)
";

/// An app whose `worker` is the signal reporter.
fn reporter_app() -> App {
    let app = App::with_procfile("worker: exec python3 report.py\n");
    app.write("report.py", REPORTER_PY);
    app
}

fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The inodes of the sockets process `pid` holds open.
fn socket_inodes(pid: i32) -> BTreeSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    fds.filter_map(|fd| {
        let target = std::fs::read_link(fd.ok()?.path()).ok()?;
        let target = target.to_str()?;
        target
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

/// The inodes of every listening TCP socket on the machine (IPv4 and IPv6).
fn tcp_listening_inodes() -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // `st` 0A is LISTEN.
            if fields.get(3) == Some(&"0A")
                && let Some(inode) = fields.get(9).and_then(|i| i.parse().ok())
            {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// One HTTP/1.1 request over the control socket: the status and the body.
fn http(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream.set_read_timeout(Some(SOON)).expect("a read timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // One write; and a server that answers before reading the body may close
    // early, which is no error here: its answer is what counts.
    if let Err(e) = stream.write_all(request.as_bytes())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        panic!("sending {method} {path}: {e}");
    }
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .unwrap_or_else(|e| panic!("reading the answer to {method} {path}: {e}"));
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

// ---------------------------------------------------------------------------
// 1. The control socket
// ---------------------------------------------------------------------------

#[test]
fn control_socket_is_a_private_unix_socket_and_crew_listens_on_no_tcp_port() {
    let live = Live::start(App::with_procfile("worker: exec sleep 100\n"), 1, &[]);
    let meta = std::fs::symlink_metadata(live.app.join(SOCKET)).expect("the socket exists");
    assert!(
        meta.file_type().is_socket(),
        "{SOCKET} is not a socket: {meta:?}"
    );
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "{SOCKET} must be readable and writable by its owner only"
    );

    // The check itself works: a TCP listener of ours is found.
    let ours = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
    let own = socket_inodes(std::process::id() as i32);
    assert!(
        own.intersection(&tcp_listening_inodes()).next().is_some(),
        "cannot see this test's own TCP listener in /proc/net/tcp"
    );
    drop(ours);

    let crews = socket_inodes(live.crew.pid());
    assert!(!crews.is_empty(), "crew holds no socket at all");
    let listening: Vec<u64> = crews
        .intersection(&tcp_listening_inodes())
        .copied()
        .collect();
    assert!(
        listening.is_empty(),
        "crew start listens on TCP (socket inodes {listening:?}); its API must be the Unix socket only"
    );
    live.finish();
}

#[test]
fn control_api_answers_platform_api_routes_in_json_over_the_socket() {
    let live = Live::start(
        App::with_procfile("worker: echo \"hello $DYNO\"; exec sleep 100\n"),
        1,
        &[],
    );
    live.wait_up(&["worker.1"]);
    let socket = live.app.join(SOCKET);
    let app = live.name();

    let (status, body) = http(&socket, "GET", &format!("/apps/{app}/dynos"), "");
    assert_eq!(status, 200, "{body}");
    let dynos = json(&body);
    assert_eq!(dynos[0]["name"], "worker.1", "{body}");
    assert_eq!(dynos[0]["type"], "worker", "{body}");
    assert_eq!(dynos[0]["state"], "up", "{body}");
    assert_eq!(dynos[0]["app"]["name"], app.as_str(), "{body}");

    let (status, body) = http(
        &socket,
        "PATCH",
        &format!("/apps/{app}/formation"),
        r#"{"updates":[{"type":"worker","quantity":"+1"}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)[0]["type"], "worker", "{body}");
    assert_eq!(json(&body)[0]["quantity"], 2, "{body}");
    let (status, body) = http(&socket, "GET", &format!("/apps/{app}/formation"), "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)[0]["quantity"], 2, "{body}");
    let first = live.wait_up(&["worker.2"]);
    let first = first
        .iter()
        .find(|p| p.name == "worker.2")
        .expect("worker.2");

    let (status, body) = http(
        &socket,
        "POST",
        &format!("/apps/{app}/dynos/worker.2/actions/stop"),
        "{}",
    );
    assert!((200..300).contains(&status), "stop: {status} {body}");
    live.wait_ps("worker.2 down", |ps| {
        ps.iter().any(|p| p.name == "worker.2" && p.state == "down")
    });

    let (status, body) = http(
        &socket,
        "DELETE",
        &format!("/apps/{app}/dynos/worker.2"),
        "",
    );
    assert!((200..300).contains(&status), "restart: {status} {body}");
    let again = live.wait_up(&["worker.2"]);
    let again = again
        .iter()
        .find(|p| p.name == "worker.2")
        .expect("worker.2");
    assert_ne!(again.pid, first.pid, "the restart made a new process");

    let (status, body) = http(
        &socket,
        "POST",
        &format!("/apps/{app}/log-sessions"),
        r#"{"dyno":"worker.2","lines":100}"#,
    );
    assert!((200..300).contains(&status), "log session: {status} {body}");
    let url = json(&body)["logplex_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no logplex_url in {body}"))
        .to_owned();
    let (status, log) = http(&socket, "GET", &url, "");
    assert_eq!(status, 200, "{log}");
    assert!(log.contains(" app[worker.2]: hello worker.2\n"), "{log}");
    assert!(
        !log.contains("[worker.1]"),
        "the session asked for worker.2 only\n{log}"
    );

    let (status, body) = http(&socket, "GET", "/apps/some-other-app/dynos", "");
    assert_eq!(status, 404, "{body}");
    assert_eq!(json(&body)["id"], "not_found", "{body}");
    live.finish();
}

#[test]
fn clients_find_the_socket_from_a_subdirectory() {
    let live = Live::start(App::with_procfile("worker: exec sleep 100\n"), 1, &[]);
    let deep = live.app.join("src/deep/er");
    std::fs::create_dir_all(&deep).expect("a subdirectory");
    let ps = live.run_in(&deep, &["ps"]);
    assert_eq!(ps.code(), Some(0), "{}", ps.report());
    assert!(
        ps.stdout().lines().any(|l| l.starts_with("worker.1 ")),
        "{}",
        ps.report()
    );
    let scale = live.run_in(&deep, &["scale"]);
    assert_eq!(scale.code(), Some(0), "{}", scale.report());
    assert_eq!(scale.stdout(), "worker=1\n", "{}", scale.report());
    live.finish();
}

#[test]
fn a_stale_socket_from_a_dead_run_is_replaced_on_start() {
    let app = App::with_procfile("worker: exec sleep 100\n");
    // Bound by a process that then dies, as a killed run would leave it. (A
    // listener bound here could live on for a moment in a child another test
    // is forking.)
    let made = Command::new("python3")
        .args([
            "-c",
            "import socket; socket.socket(socket.AF_UNIX).bind('.crew.sock')",
        ])
        .current_dir(app.path())
        .status()
        .expect("running python3");
    assert!(made.success(), "binding the dead socket");
    assert!(app.exists(SOCKET), "the dead socket file stays behind");
    assert!(
        UnixStream::connect(app.join(SOCKET)).is_err(),
        "nobody answers on the dead socket"
    );
    let live = Live::start(app, 1, &[]);
    live.wait_up(&["worker.1"]);
    assert!(
        UnixStream::connect(live.app.join(SOCKET)).is_ok(),
        "the new run answers on {SOCKET}"
    );
    live.finish();
}

#[test]
fn a_second_start_in_the_same_directory_fails_and_leaves_the_first_running() {
    let mut live = Live::start(App::with_procfile("worker: exec sleep 100\n"), 1, &[]);
    let worker = live.wait_up(&["worker.1"]);
    let second = live.app.run(&["start", "-p", &live.base.to_string()]);
    second.assert_clean_error(&["already running", SOCKET]);
    live.assert_running();
    assert!(
        UnixStream::connect(live.app.join(SOCKET)).is_ok(),
        "the first run's socket still answers"
    );
    assert_eq!(
        live.pid("worker.1"),
        worker[0].pid.expect("a pid"),
        "the first run's worker is untouched"
    );
    live.finish();
}

#[test]
fn the_socket_is_removed_when_the_run_ends_and_clients_then_say_nothing_runs() {
    let mut live = Live::start(App::with_procfile("worker: exec sleep 100\n"), 1, &[]);
    live.crew.signal(Signal::INT);
    assert_eq!(live.crew.wait_code(SOON), 130, "{}", live.crew.report());
    live.assert_cleaned_up();
    live.run(&["ps"])
        .assert_clean_error(&["no running `crew start`"]);
}

// ---------------------------------------------------------------------------
// 2. crew ps
// ---------------------------------------------------------------------------

#[test]
fn ps_lists_every_process_with_state_age_pid_port_and_command() {
    let live = Live::start(
        App::with_procfile(&format!("{}worker: exec sleep 100\n", web_line())),
        2,
        &[],
    );
    live.wait_up(&["web.1", "worker.1"]);
    let table = live.ok(&["ps"]);
    let lines: Vec<&str> = table.lines().collect();
    let header = lines[0];
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["Process", "State", "PID", "Port", "Command"],
        "{table}"
    );
    assert!(
        lines[1].chars().all(|c| c == '-' || c == ' '),
        "a rule under the header\n{table}"
    );
    let columns: Vec<usize> = ["Process", "State", "PID", "Port", "Command"]
        .iter()
        .map(|h| header.find(h).expect("a column"))
        .collect();
    let cells = |row: &str| -> Vec<String> {
        (0..columns.len())
            .map(|i| {
                let end = columns.get(i + 1).copied().unwrap_or(row.len());
                row[columns[i]..end].trim().to_owned()
            })
            .collect()
    };
    assert_eq!(lines.len(), 4, "two processes\n{table}");
    let expect = [
        (
            "web.1",
            live.crew.pid_of("web.1"),
            live.base,
            http_server_command(),
        ),
        (
            "worker.1",
            live.crew.pid_of("worker.1"),
            live.base + 100,
            String::from("exec sleep 100"),
        ),
    ];
    for (row, (name, pid, port, command)) in lines[2..].iter().zip(expect) {
        let cells = cells(row);
        assert_eq!(cells[0], name, "{table}");
        let age = cells[1]
            .strip_prefix("up for ")
            .unwrap_or_else(|| panic!("{name} should be `up for …`\n{table}"));
        assert!(
            age.ends_with('s') && age[..age.len() - 1].parse::<u32>().is_ok(),
            "an age like `2s`\n{table}"
        );
        assert_eq!(cells[2], pid.to_string(), "{table}");
        assert_eq!(cells[3], port.to_string(), "{table}");
        assert_eq!(cells[4], command, "{table}");
    }
    live.finish();
}

#[test]
fn ps_json_lists_the_api_dyno_objects() {
    let live = Live::start(
        App::with_procfile(&format!("{}worker: exec sleep 100\n", web_line())),
        2,
        &[],
    );
    let ps = live.wait_up(&["web.1", "worker.1"]);
    let names: Vec<&str> = ps.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web.1", "worker.1"], "Procfile order: {ps:#?}");
    let web = &ps[0];
    assert_eq!(web.process_type, "web");
    assert_eq!(web.pid, Some(live.crew.pid_of("web.1")));
    assert_eq!(web.port, Some(live.base));
    assert_eq!(web.command, http_server_command());
    assert_eq!((web.restarts, web.restart_in), (0, None));
    let worker = &ps[1];
    assert_eq!(worker.process_type, "worker");
    assert_eq!(worker.pid, Some(live.crew.pid_of("worker.1")));
    assert_eq!(worker.port, Some(live.base + 100));
    for p in &ps {
        assert!(
            chrono::DateTime::parse_from_rfc3339(&p.updated_at).is_ok(),
            "updated_at is a time: {p:?}"
        );
    }
    live.finish();
}

#[test]
fn a_web_process_is_starting_until_its_port_accepts_connections_then_up() {
    let live = Live::start(
        App::with_procfile(&format!(
            "web: until [ -e bind-now ]; do sleep 0.05; done; {}\nworker: exec sleep 100\n",
            http_server_command()
        )),
        2,
        &[],
    );
    // Another type is up as soon as it has spawned.
    live.wait_up(&["worker.1"]);
    for _ in 0..5 {
        let web = live.get("web.1");
        assert_eq!(web.state, "starting", "web.1 has not bound PORT: {web:?}");
        assert!(web.pid.is_some(), "a starting web runs: {web:?}");
        assert!(!accepts(live.base), "nothing listens on web.1's PORT yet");
        std::thread::sleep(Duration::from_millis(50));
    }
    let row = live.ps_row("web.1").expect("a web.1 row");
    assert!(row.contains("starting for "), "{row}");

    live.app.write("bind-now", "");
    live.wait_up(&["web.1"]);
    assert!(accepts(live.base), "web.1 is up, so its PORT accepts");
    let logs = live.wait_line("web.1", "State changed from starting to up");
    let starting = position(&logs, "web.1", "Starting process with command").expect("a start");
    let up = position(&logs, "web.1", "State changed from starting to up").expect("up");
    assert!(starting < up, "{}", show(&logs));
    live.finish();
}

#[test]
fn a_web_process_that_never_binds_is_killed_at_the_boot_timeout_and_crashes() {
    let live = Live::start(
        App::with_procfile("web: exec sleep 100\nworker: exec sleep 100\n"),
        2,
        &["--keep-alive", "--boot-timeout", "1"],
    );
    let first = live.crew.pid_of("web.1");
    let worker = live.crew.pid_of("worker.1");
    let logs = live.wait_line("web.1", "State changed from starting to crashed");
    let start = matching(&logs, "web.1", "Starting process with command")[0];
    let r10 = matching(&logs, "web.1", "Error R10 (Boot timeout)");
    let r10 = r10
        .first()
        .unwrap_or_else(|| panic!("no R10 line\n{}", show(&logs)));
    assert_eq!(r10.origin, "crew", "{}", show(&logs));
    let waited = seconds_between(start, r10);
    assert!(
        (0.9..5.0).contains(&waited),
        "R10 came {waited:.2}s after the start, not after the 1 s boot timeout\n{}",
        show(&logs)
    );
    let r10_at = position(&logs, "web.1", "Error R10").expect("R10");
    let killed = position(&logs, "web.1", "Process exited with status 137").expect("a SIGKILL");
    let crashed =
        position(&logs, "web.1", "State changed from starting to crashed").expect("crashed");
    assert!(r10_at < killed && killed < crashed, "{}", show(&logs));
    assert_group_gone(
        first,
        Duration::from_secs(2),
        "web.1 after its boot timeout",
    );
    live.wait_ps("web.1 crashed", |ps| {
        ps.iter().any(|p| p.name == "web.1" && p.state == "crashed")
    });
    assert_eq!(live.pid("worker.1"), worker, "worker.1 is untouched");
    live.finish();
}

#[test]
fn boot_timeout_in_crew_toml_kills_a_web_that_never_binds() {
    let app = App::with_procfile("web: exec sleep 100\nworker: exec sleep 100\n");
    app.write("crew.toml", "[web]\nboot_timeout = 1\n");
    let mut live = Live::start(app, 2, &[]);
    // Without --keep-alive, the crash ends the run (foreman's rule).
    let code = live.crew.wait_code(SOON);
    assert_ne!(code, 0, "{}", live.crew.report());
    live.crew.wait_for(
        "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within 1 seconds of launch",
        SOON,
    );
    assert!(
        live.crew.age() >= Duration::from_millis(900),
        "the boot timeout is 1 s"
    );
    live.assert_cleaned_up();
}

// ---------------------------------------------------------------------------
// 3. crew scale
// ---------------------------------------------------------------------------

#[test]
fn scale_up_starts_the_next_numbers_on_formula_ports_and_touches_nothing_else() {
    let live = Live::start(
        App::with_procfile(&format!("{}worker: exec sleep 100\n", web_line())),
        2,
        &[],
    );
    let before = live.wait_up(&["web.1", "worker.1"]);
    let out = live.ok(&["scale", "web=3"]);
    assert_eq!(out, "Scaling web processes... done, now running 3\n");
    let after = live.wait_up(&["web.1", "web.2", "web.3"]);
    let webs: Vec<(&str, Option<u16>)> = after
        .iter()
        .filter(|p| p.process_type == "web")
        .map(|p| (p.name.as_str(), p.port))
        .collect();
    let base = live.base;
    assert_eq!(
        webs,
        [
            ("web.1", Some(base)),
            ("web.2", Some(base + 1)),
            ("web.3", Some(base + 2))
        ]
    );
    assert!(accepts(base + 1) && accepts(base + 2), "the new webs serve");
    for name in ["web.1", "worker.1"] {
        let old = before.iter().find(|p| p.name == name).expect("before");
        let new = after.iter().find(|p| p.name == name).expect("after");
        assert_eq!(old.pid, new.pid, "{name} was touched by the scale");
    }
    assert_eq!(
        Some(live.crew.pid_of("web.2")),
        after[1].pid,
        "the foreground announced web.2"
    );
    live.finish();
}

#[test]
fn scale_down_stops_the_highest_numbers_first_gracefully() {
    let live = Live::start(reporter_app(), 1, &["-m", "worker=3"]);
    live.wait_logs("every worker ready", |l| {
        (1..=3).all(|n| {
            let name = format!("worker.{n}");
            position(l, &name, &format!("{name} ready")).is_some()
        })
    });
    let before = live.ps();
    let pid = |name: &str| {
        before
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.pid)
            .expect("a pid")
    };
    let out = live.ok(&["scale", "worker=1"]);
    assert_eq!(out, "Scaling worker processes... done, now running 1\n");
    live.wait_ps("only worker.1 left", |ps| {
        ps.iter().map(|p| p.name.as_str()).eq(["worker.1"])
    });
    assert_group_gone(pid("worker.3"), SOON, "worker.3 after the scale down");
    assert_group_gone(pid("worker.2"), SOON, "worker.2 after the scale down");

    let logs = live.wait_logs("both exits", |l| {
        ["worker.2", "worker.3"]
            .iter()
            .all(|n| position(l, n, "Process exited with status").is_some())
    });
    let stop3 = position(&logs, "worker.3", "Stopping all processes with SIGTERM");
    let stop2 = position(&logs, "worker.2", "Stopping all processes with SIGTERM");
    assert!(
        matches!((stop3, stop2), (Some(a), Some(b)) if a < b),
        "worker.3 is stopped before worker.2\n{}",
        show(&logs)
    );
    for n in ["worker.2", "worker.3"] {
        assert!(
            position(&logs, n, &format!("{n} got TERM")).is_some(),
            "{n} got SIGTERM first\n{}",
            show(&logs)
        );
        assert!(
            position(&logs, n, "Process exited with status 0").is_some(),
            "{n} finished its own shutdown (not SIGKILL)\n{}",
            show(&logs)
        );
    }
    assert!(
        position(&logs, "worker.1", "Stopping").is_none(),
        "worker.1 is not touched\n{}",
        show(&logs)
    );
    assert_eq!(live.pid("worker.1"), pid("worker.1"));
    live.finish();
}

#[test]
fn scale_up_after_a_scale_down_takes_the_lowest_free_number() {
    let live = Live::start(
        App::with_procfile("worker: exec sleep 100\n"),
        1,
        &["-m", "worker=3"],
    );
    live.wait_up(&["worker.1", "worker.2", "worker.3"]);
    live.ok(&["scale", "worker=1"]);
    live.wait_ps("only worker.1 left", |ps| {
        ps.iter().map(|p| p.name.as_str()).eq(["worker.1"])
    });
    let out = live.ok(&["scale", "worker+1"]);
    assert_eq!(out, "Scaling worker processes... done, now running 2\n");
    let ps = live.wait_up(&["worker.1", "worker.2"]);
    let names: Vec<&str> = ps.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["worker.1", "worker.2"]);
    assert_eq!(ps[1].port, Some(live.base + 1));
    live.finish();
}

#[test]
fn scale_applies_absolute_and_relative_changes_to_several_types_at_once() {
    let live = Live::start(
        App::with_procfile(&format!(
            "{}worker: exec sleep 100\nclock: exec sleep 100\n",
            web_line()
        )),
        3,
        &["-m", "web=1,worker=1,clock=2"],
    );
    let before = live.wait_up(&["web.1", "worker.1", "clock.1", "clock.2"]);
    let out = live.ok(&["scale", "web=3", "worker+1", "clock-1"]);
    assert_eq!(
        out,
        "Scaling web processes... done, now running 3\n\
         Scaling worker processes... done, now running 2\n\
         Scaling clock processes... done, now running 1\n"
    );
    live.wait_up(&["web.1", "web.2", "web.3", "worker.1", "worker.2", "clock.1"]);
    let after = live.wait_ps("clock.2 gone", |ps| ps.iter().all(|p| p.name != "clock.2"));
    let ports: Vec<(&str, Option<u16>)> = after.iter().map(|p| (p.name.as_str(), p.port)).collect();
    let b = live.base;
    assert_eq!(
        ports,
        [
            ("web.1", Some(b)),
            ("web.2", Some(b + 1)),
            ("web.3", Some(b + 2)),
            ("worker.1", Some(b + 100)),
            ("worker.2", Some(b + 101)),
            ("clock.1", Some(b + 200)),
        ]
    );
    for name in ["web.1", "worker.1", "clock.1"] {
        let old = before.iter().find(|p| p.name == name).expect("before");
        let new = after.iter().find(|p| p.name == name).expect("after");
        assert_eq!(old.pid, new.pid, "{name} was touched by the scale");
    }
    assert_eq!(live.ok(&["scale"]), "web=3 worker=2 clock=1\n");
    live.finish();
}

#[test]
fn scale_takes_the_comma_form() {
    let live = Live::start(
        App::with_procfile("worker: exec sleep 100\nclock: exec sleep 100\n"),
        2,
        &[],
    );
    live.wait_up(&["worker.1", "clock.1"]);
    let out = live.ok(&["scale", "worker=2,clock=0"]);
    assert_eq!(
        out,
        "Scaling worker processes... done, now running 2\n\
         Scaling clock processes... done, now running 0\n"
    );
    live.wait_ps("worker.1 and worker.2 only", |ps| {
        ps.iter()
            .map(|p| p.name.as_str())
            .eq(["worker.1", "worker.2"])
    });
    assert_eq!(live.ok(&["scale"]), "worker=2 clock=0\n");
    live.finish();
}

#[test]
fn scale_without_arguments_prints_the_formation_in_procfile_order() {
    let live = Live::start(
        App::with_procfile("web: exec sleep 100\nworker: exec sleep 100\nclock: exec sleep 100\n"),
        3,
        &["-m", "web=2,worker=0,clock=1"],
    );
    assert_eq!(live.ok(&["scale"]), "web=2 worker=0 clock=1\n");
    live.finish();
}

#[test]
fn scale_errors_change_nothing() {
    let live = Live::start(
        App::with_procfile("worker: exec sleep 100\nclock: exec sleep 100\n"),
        2,
        &["-m", "worker=2,clock=1"],
    );
    let snapshot = |ps: Vec<Proc>| -> Vec<(String, Option<i32>)> {
        ps.into_iter().map(|p| (p.name, p.pid)).collect()
    };
    let before = snapshot(live.wait_up(&["worker.1", "worker.2", "clock.1"]));
    let cases: [(&[&str], &str); 10] = [
        (&["bogus=1"], "bogus"),
        (&["worker-5"], "worker"),
        (&["clock-2"], "clock"),
        (&["worker=abc"], "worker=abc"),
        (&["worker"], "worker"),
        (&["=2"], "=2"),
        (&["worker=-1"], "worker=-1"),
        (&["worker=3", "bogus=1"], "bogus"),
        (&["worker=3,bogus=1"], "bogus"),
        (&["clock-1", "worker-3"], "worker"),
    ];
    for (changes, needle) in cases {
        let mut args = vec!["scale"];
        args.extend_from_slice(changes);
        let out = live.run(&args);
        let report = format!("`crew {}`\n{}", args.join(" "), out.report());
        assert_no_panic(&out.stderr);
        assert_ne!(out.code(), Some(0), "{report}");
        assert!(out.stderr.contains("crew: error:"), "{report}");
        assert!(
            out.stderr.contains(needle),
            "should name {needle:?}\n{report}"
        );
        assert!(!out.stdout().contains("Scaling"), "{report}");
        assert_eq!(live.ok(&["scale"]), "worker=2 clock=1\n", "{report}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        snapshot(live.ps()),
        before,
        "no process was started or stopped"
    );
    assert_eq!(
        live.crew.announced_pids().len(),
        3,
        "nothing new started\n{}",
        live.crew.report()
    );
    live.finish();
}

// ---------------------------------------------------------------------------
// 4. crew restart and crew stop
// ---------------------------------------------------------------------------

/// Two webs and a worker, all up.
fn two_webs_and_a_worker(args: &[&str]) -> (Live, Vec<Proc>) {
    let mut argv = vec!["-m", "web=2,worker=1"];
    argv.extend_from_slice(args);
    let live = Live::start(
        App::with_procfile(&format!("{}worker: exec sleep 100\n", web_line())),
        2,
        &argv,
    );
    let ps = live.wait_up(&["web.1", "web.2", "worker.1"]);
    (live, ps)
}

fn pid_in(ps: &[Proc], name: &str) -> Option<i32> {
    ps.iter().find(|p| p.name == name).and_then(|p| p.pid)
}

#[test]
fn restart_of_one_process_replaces_only_its_pid() {
    let (live, before) = two_webs_and_a_worker(&[]);
    let old = pid_in(&before, "web.2").expect("a pid");
    assert_eq!(live.ok(&["restart", "web.2"]), "Restarting web.2... done\n");
    let after = live.wait_ps("a new web.2 up", |ps| {
        ps.iter()
            .any(|p| p.name == "web.2" && p.state == "up" && p.pid.is_some_and(|p| p != old))
    });
    assert_group_gone(old, SOON, "the old web.2");
    for name in ["web.1", "worker.1"] {
        assert_eq!(
            pid_in(&before, name),
            pid_in(&after, name),
            "{name} was touched"
        );
    }
    let logs = live.wait_line("web.2", "Process exited with status 143");
    assert!(
        position(&logs, "web.2", "Restarting").is_some(),
        "{}",
        show(&logs)
    );
    live.finish();
}

#[test]
fn restart_of_a_type_restarts_only_that_type() {
    let (live, before) = two_webs_and_a_worker(&[]);
    assert_eq!(live.ok(&["restart", "web"]), "Restarting web... done\n");
    let after = live.wait_ps("new webs up", |ps| {
        ["web.1", "web.2"].iter().all(|n| {
            ps.iter().any(|p| {
                p.name == *n && p.state == "up" && p.pid.is_some() && p.pid != pid_in(&before, n)
            })
        })
    });
    for name in ["web.1", "web.2"] {
        assert_group_gone(pid_in(&before, name).expect("a pid"), SOON, name);
    }
    assert_eq!(
        pid_in(&before, "worker.1"),
        pid_in(&after, "worker.1"),
        "worker.1 was touched"
    );
    live.finish();
}

#[test]
fn restart_without_a_target_restarts_every_process() {
    let (live, before) = two_webs_and_a_worker(&[]);
    assert_eq!(live.ok(&["restart"]), "Restarting all processes... done\n");
    live.wait_ps("every process replaced and up", |ps| {
        ps.len() == 3
            && ps
                .iter()
                .all(|p| p.state == "up" && p.pid.is_some() && p.pid != pid_in(&before, &p.name))
    });
    for p in &before {
        assert_group_gone(p.pid.expect("a pid"), SOON, &p.name);
    }
    live.finish();
}

#[test]
fn restart_and_stop_of_an_unknown_process_fail_and_change_nothing() {
    let live = Live::start(App::with_procfile("worker: exec sleep 100\n"), 1, &[]);
    let pid = live.wait_up(&["worker.1"])[0].pid;
    for args in [
        ["restart", "worker.9"],
        ["restart", "web"],
        ["stop", "worker.9"],
    ] {
        let out = live.run(&args);
        assert_no_panic(&out.stderr);
        assert_ne!(out.code(), Some(0), "{}", out.report());
        assert!(
            out.stderr.contains("crew: error:") && out.stderr.contains(args[1]),
            "{}",
            out.report()
        );
    }
    assert_eq!(live.get("worker.1").pid, pid);
    live.finish();
}

#[test]
fn stop_leaves_the_process_down_keeps_the_count_and_restart_brings_it_back() {
    let (mut live, before) = two_webs_and_a_worker(&[]);
    let old = pid_in(&before, "web.2").expect("a pid");
    assert_eq!(live.ok(&["stop", "web.2"]), "Stopping web.2... done\n");
    live.wait_ps("web.2 down", |ps| {
        ps.iter()
            .any(|p| p.name == "web.2" && p.state == "down" && p.pid.is_none())
    });
    assert_group_gone(old, SOON, "the stopped web.2");
    let row = live.ps_row("web.2").expect("web.2 is still listed");
    assert!(row.contains("down for "), "{row}");
    assert_eq!(live.ok(&["scale"]), "web=2 worker=1\n", "the count is kept");
    let logs = live.wait_line("web.2", "State changed from up to down");
    assert!(
        position(&logs, "web.2", "Process exited with status 143").is_some(),
        "{}",
        show(&logs)
    );
    // A stop is not an exit that ends the run.
    std::thread::sleep(Duration::from_millis(300));
    live.assert_running();
    let after = live.ps();
    for name in ["web.1", "worker.1"] {
        assert_eq!(
            pid_in(&before, name),
            pid_in(&after, name),
            "{name} was touched"
        );
    }

    assert_eq!(live.ok(&["restart", "web.2"]), "Restarting web.2... done\n");
    let back = live.wait_up(&["web.2"]);
    assert_ne!(pid_in(&back, "web.2"), Some(old));
    live.finish();
}

#[test]
fn a_stopped_process_stays_down_under_keep_alive() {
    let live = Live::start(
        App::with_procfile("worker: exec sleep 100\n"),
        1,
        &["--keep-alive", "-m", "worker=2"],
    );
    live.wait_up(&["worker.1", "worker.2"]);
    live.ok(&["stop", "worker.2"]);
    live.wait_ps("worker.2 down", |ps| {
        ps.iter().any(|p| p.name == "worker.2" && p.state == "down")
    });
    // Longer than the first backoff steps: the restart rule must leave it alone.
    std::thread::sleep(Duration::from_millis(1500));
    let worker = live.get("worker.2");
    assert_eq!(
        (worker.state.as_str(), worker.pid, worker.restarts),
        ("down", None, 0),
        "{worker:?}"
    );
    let logs = live.logs(&["--ps", "worker.2"]);
    assert_eq!(
        matching(&logs, "worker.2", "Starting process").len(),
        1,
        "{}",
        show(&logs)
    );
    live.finish();
}

// ---------------------------------------------------------------------------
// 5. crew logs
// ---------------------------------------------------------------------------

#[test]
fn logs_show_app_and_lifecycle_lines_in_herokus_format() {
    let live = Live::start(
        App::with_procfile("worker: echo \"hello from $DYNO\"; exec sleep 100\n"),
        1,
        &[],
    );
    live.wait_line("worker.1", "hello from worker.1");
    live.ok(&["stop", "worker.1"]);
    // Every line parses as `TIMESTAMP origin[source]: text`.
    let logs = live.wait_line("worker.1", "State changed from up to down");
    let hello = &matching(&logs, "worker.1", "hello from worker.1")[0];
    assert_eq!(hello.origin, "app", "{}", show(&logs));
    let expected = [
        "Starting process with command `echo \"hello from $DYNO\"; exec sleep 100`",
        "State changed from starting to up",
        "Stopping all processes with SIGTERM",
        "Process exited with status 143",
        "State changed from up to down",
    ];
    let mut last = 0;
    for text in expected {
        let at = logs
            .iter()
            .enumerate()
            .skip(last)
            .find(|(_, l)| l.origin == "crew" && l.is("worker.1", text))
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no crew[worker.1]: {text} in order\n{}", show(&logs)));
        last = at;
    }
    live.finish();
}

#[test]
fn logs_n_shows_the_last_n_lines_and_100_by_default() {
    let live = Live::start(
        App::with_procfile(
            "worker: i=1; while [ $i -le 150 ]; do echo \"line $i\"; i=$((i+1)); done; exec sleep 100\n",
        ),
        1,
        &[],
    );
    live.wait_line("worker.1", "line 150");
    let last5 = parse_logs(&live.ok(&["logs", "-n", "5", "--source", "app"]));
    let texts: Vec<&str> = last5.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(
        texts,
        ["line 146", "line 147", "line 148", "line 149", "line 150"]
    );
    let default = parse_logs(&live.ok(&["logs"]));
    assert_eq!(default.len(), 100, "{}", show(&default));
    assert!(
        position(&default, "worker.1", "line 150").is_some(),
        "the newest lines"
    );
    assert!(
        default.iter().all(|l| l.text != "line 1"),
        "the oldest lines are not among the last 100"
    );
    live.finish();
}

#[test]
fn logs_ps_shows_only_that_process_or_type() {
    let live = Live::start(
        App::with_procfile(
            "worker: echo \"hi from $DYNO\"; exec sleep 100\nclock: echo \"hi from $DYNO\"; exec sleep 100\n",
        ),
        2,
        &["-m", "worker=2,clock=1"],
    );
    live.wait_logs("every hi", |l| {
        ["worker.1", "worker.2", "clock.1"]
            .iter()
            .all(|n| position(l, n, "hi from").is_some())
    });
    let sources =
        |logs: &[LogLine]| -> BTreeSet<String> { logs.iter().map(|l| l.source.clone()).collect() };
    let one = live.logs(&["--ps", "worker.1"]);
    assert_eq!(
        sources(&one),
        BTreeSet::from(["worker.1".to_owned()]),
        "{}",
        show(&one)
    );
    assert!(position(&one, "worker.1", "hi from worker.1").is_some());
    assert!(position(&one, "worker.1", "State changed").is_some());
    let kind = live.logs(&["--ps", "worker"]);
    assert_eq!(
        sources(&kind),
        BTreeSet::from(["worker.1".to_owned(), "worker.2".to_owned()]),
        "{}",
        show(&kind)
    );
    live.finish();
}

#[test]
fn logs_source_separates_the_apps_lines_from_crews() {
    let live = Live::start(
        App::with_procfile("worker: echo \"hi from $DYNO\"; exec sleep 100\n"),
        1,
        &[],
    );
    live.wait_line("worker.1", "hi from worker.1");
    let app = live.logs(&["--source", "app"]);
    assert!(
        !app.is_empty() && app.iter().all(|l| l.origin == "app"),
        "{}",
        show(&app)
    );
    let crew = live.logs(&["--source", "crew"]);
    assert!(
        !crew.is_empty() && crew.iter().all(|l| l.origin == "crew"),
        "{}",
        show(&crew)
    );
    let bad = live.run(&["logs", "--source", "bogus"]);
    assert_no_panic(&bad.stderr);
    assert_ne!(bad.code(), Some(0), "{}", bad.report());
    assert!(bad.stderr.contains("bogus"), "{}", bad.report());
    live.finish();
}

#[test]
fn logs_tail_follows_new_lines_as_they_come() {
    let live = Live::start(
        App::with_procfile("worker: echo \"hello $DYNO\"; exec sleep 100\n"),
        1,
        &[],
    );
    live.wait_line("worker.1", "hello worker.1");
    let mut tail = Crew::spawn_client(live.app.command(&["logs", "-t", "-n", "1"]));
    tail.wait_until("the backlog line", SOON, |out| out.lines >= 1);
    live.ok(&["restart", "worker.1"]);
    tail.wait_until("the restart and the new hello", SOON, |out| {
        let text = out.text();
        text.find(" crew[worker.1]: Restarting\n")
            .is_some_and(|at| text[at..].contains(" app[worker.1]: hello worker.1\n"))
    });
    parse_logs(&tail.stdout());
    assert!(
        tail.try_status().is_none(),
        "`crew logs -t` keeps following"
    );
    live.finish();
    // Nothing is left to follow: it ends.
    tail.wait_exit(SOON);
}

#[test]
fn logs_tail_ends_cleanly_when_the_run_ends() {
    let live = Live::start(
        App::with_procfile("worker: echo hi; exec sleep 100\n"),
        1,
        &[],
    );
    live.wait_line("worker.1", "hi");
    let mut tail = Crew::spawn_client(live.app.command(&["logs", "-t", "-n", "1"]));
    tail.wait_until("the backlog line", SOON, |out| out.lines >= 1);
    live.finish();
    let code = tail.wait_code(SOON);
    assert_no_panic(&tail.stderr());
    assert_eq!(
        (code, tail.stderr().as_str()),
        (0, ""),
        "the log simply ends with the run\n{}",
        tail.report()
    );
}

// ---------------------------------------------------------------------------
// 6. --keep-alive and crew.toml
// ---------------------------------------------------------------------------

#[test]
fn keep_alive_restarts_a_crash_at_once_then_after_1s_then_2s() {
    let mut live = Live::start(
        App::with_procfile(&format!(
            "{}worker: echo \"crash $DYNO\"; exit 3\n",
            web_line()
        )),
        2,
        &["--keep-alive"],
    );
    let web = live.wait_up(&["web.1"]);
    let logs = live.wait_logs("three restarts of worker.1", |l| {
        restart_delays(l, "worker.1", None).len() >= 3
    });
    let delays = restart_delays(&logs, "worker.1", None);
    let report = format!(
        "waits from each exit to the next start: {delays:.2?}\n{}",
        show(&logs)
    );
    assert!(
        delays[0] < 0.5,
        "the first crash restarts at once\n{report}"
    );
    assert!(
        (0.9..1.9).contains(&delays[1]),
        "the second waits 1 s\n{report}"
    );
    assert!(
        (1.9..3.2).contains(&delays[2]),
        "the third waits 2 s\n{report}"
    );
    assert!(
        matching(&logs, "worker.1", "Process exited with status 3").len() >= 3,
        "{report}"
    );

    // Now it waits 4 s; ps shows the wait and the count.
    let mut row = String::new();
    let seen = poll_until(SOON, || {
        row = live.ps_row("worker.1").unwrap_or_default();
        row.contains("crashed (restart in ")
    });
    assert!(seen, "ps never showed the backoff: {row}");
    assert!(row.contains(", 3 restarts)"), "{row}");
    let worker = live.get("worker.1");
    assert_eq!(worker.restarts, 3, "{worker:?}");
    assert!(
        worker.restart_in.is_some_and(|s| (1..=4).contains(&s)),
        "{worker:?}"
    );

    live.assert_running();
    assert_eq!(
        live.pid("web.1"),
        web[0].pid.expect("a pid"),
        "web.1 untouched"
    );
    live.finish();
}

#[test]
fn without_keep_alive_the_first_exit_still_ends_the_run() {
    let mut live = Live::start(
        App::with_procfile(&format!(
            "{}worker: until [ -e go ]; do sleep 0.05; done; exit 3\n",
            web_line()
        )),
        2,
        &[],
    );
    live.wait_up(&["web.1", "worker.1"]);
    live.app.write("go", "");
    assert_eq!(live.crew.wait_code(SOON), 3, "{}", live.crew.report());
    live.crew.wait_for("sending SIGTERM to all processes", SOON);
    live.assert_cleaned_up();
}

/// Waits until `worker.1` has crashed a few times under `--keep-alive`, so its
/// next wait is at least 2 s.
fn crash_looping_worker() -> Live {
    let live = Live::start(
        App::with_procfile("worker: echo crash; exit 3\n"),
        1,
        &["--keep-alive"],
    );
    live.wait_ps("worker.1 backing off", |ps| {
        ps.iter()
            .any(|p| p.name == "worker.1" && p.restarts >= 2 && p.restart_in.is_some())
    });
    live
}

/// For each exit of `name` (at or after `since`), how long until it started
/// again: the backoff, as the log shows it.
fn restart_delays(
    logs: &[LogLine],
    name: &str,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<f64> {
    let mut delays = Vec::new();
    let mut exit: Option<&LogLine> = None;
    for line in logs.iter().filter(|l| since.is_none_or(|t| l.at >= t)) {
        if line.is(name, "Process exited with status") {
            exit = Some(line);
        } else if line.is(name, "Starting process")
            && let Some(exit) = exit.take()
        {
            delays.push(seconds_between(exit, line));
        }
    }
    delays
}

/// Checks that the first crash of `worker.1` after `since` restarts at once.
fn assert_backoff_started_over(live: &Live, since: chrono::DateTime<chrono::Utc>) {
    let logs = live.wait_logs("a restart of worker.1", |l| {
        !restart_delays(l, "worker.1", Some(since)).is_empty()
    });
    let delay = restart_delays(&logs, "worker.1", Some(since))[0];
    assert!(
        delay < 0.5,
        "after the reset, the first crash restarts at once (waited {delay:.2}s)\n{}",
        show(&logs)
    );
}

#[test]
fn keep_alive_backoff_starts_over_after_crew_restart() {
    let live = crash_looping_worker();
    let since = chrono::Utc::now();
    assert_eq!(
        live.ok(&["restart", "worker.1"]),
        "Restarting worker.1... done\n"
    );
    assert_backoff_started_over(&live, since);
    live.finish();
}

#[test]
fn keep_alive_backoff_starts_over_after_scaling_to_zero() {
    let live = crash_looping_worker();
    live.ok(&["scale", "worker=0"]);
    live.wait_ps("no worker", |ps| ps.is_empty());
    let since = chrono::Utc::now();
    live.ok(&["scale", "worker=1"]);
    assert_backoff_started_over(&live, since);
    live.finish();
}

/// Waits for `name`'s first exit, gives a restart time to happen, and checks
/// none did.
fn assert_not_restarted(live: &mut Live, name: &str, status: i32) -> Proc {
    live.wait_line(name, &format!("Process exited with status {status}"));
    std::thread::sleep(Duration::from_millis(1200));
    let logs = live.logs(&["--ps", name]);
    assert_eq!(
        matching(&logs, name, "Starting process").len(),
        1,
        "{name} was restarted\n{}",
        show(&logs)
    );
    let p = live.get(name);
    assert!(
        p.pid.is_none() && p.restarts == 0 && p.restart_in.is_none(),
        "{p:?}"
    );
    assert!(
        !matches!(p.state.as_str(), "up" | "starting"),
        "{name} is not running: {p:?}"
    );
    live.assert_running();
    p
}

#[test]
fn crew_toml_restart_on_failure_restarts_a_failure_even_without_keep_alive() {
    let app = App::with_procfile(&format!("{}fail: echo failing; exit 1\n", web_line()));
    app.write("crew.toml", "[fail]\nrestart = \"on-failure\"\n");
    let mut live = Live::start(app, 2, &[]);
    let web = live.wait_up(&["web.1"]);
    live.wait_logs("a restart of fail.1", |l| {
        matching(l, "fail.1", "Starting process").len() >= 2
    });
    live.wait_ps("fail.1 counted as restarted", |ps| {
        ps.iter().any(|p| p.name == "fail.1" && p.restarts >= 1)
    });
    live.assert_running();
    assert_eq!(live.get("web.1").pid, web[0].pid, "web.1 untouched");
    live.finish();
}

#[test]
fn crew_toml_restart_on_failure_leaves_a_clean_exit_alone() {
    let app = App::with_procfile(&format!("{}ok: echo finished; exit 0\n", web_line()));
    app.write("crew.toml", "[ok]\nrestart = \"on-failure\"\n");
    let mut live = Live::start(app, 2, &["--keep-alive"]);
    assert_not_restarted(&mut live, "ok.1", 0);
    live.finish();
}

#[test]
fn crew_toml_restart_never_leaves_a_crash_down_under_keep_alive() {
    let app = App::with_procfile(&format!("{}once: exit 3\n", web_line()));
    app.write("crew.toml", "[once]\nrestart = \"never\"\n");
    let mut live = Live::start(app, 2, &["--keep-alive"]);
    let p = assert_not_restarted(&mut live, "once.1", 3);
    assert_eq!(p.state, "crashed", "{p:?}");
    live.finish();
}

/// A web that serves and a `release` that exits 0 when told, with `may_exit`.
fn may_exit_app(release_code: i32) -> App {
    let app = App::with_procfile(&format!(
        "{}release: echo releasing; until [ -e go ]; do sleep 0.05; done; exit {release_code}\n",
        web_line()
    ));
    app.write("crew.toml", "[release]\nmay_exit = true\n");
    app
}

#[test]
fn crew_toml_may_exit_lets_a_one_shot_finish_without_ending_the_run() {
    let mut live = Live::start(may_exit_app(0), 2, &[]);
    let web = live.wait_up(&["web.1", "release.1"]);
    live.app.write("go", "");
    live.wait_ps("release.1 complete", |ps| {
        ps.iter()
            .any(|p| p.name == "release.1" && p.state == "complete")
    });
    std::thread::sleep(Duration::from_millis(300));
    live.assert_running();
    assert_eq!(
        live.get("web.1").pid,
        pid_in(&web, "web.1"),
        "web.1 untouched"
    );
    let row = live.ps_row("release.1").expect("release.1 is listed");
    assert!(row.contains("complete"), "{row}");
    live.finish();
}

#[test]
fn crew_toml_may_exit_one_shot_is_not_restarted_under_keep_alive() {
    let mut live = Live::start(may_exit_app(0), 2, &["--keep-alive"]);
    live.wait_up(&["web.1", "release.1"]);
    live.app.write("go", "");
    let p = assert_not_restarted(&mut live, "release.1", 0);
    assert_eq!(p.state, "complete", "{p:?}");
    live.finish();
}

#[test]
fn crew_toml_may_exit_does_not_excuse_a_failure() {
    let mut live = Live::start(may_exit_app(4), 2, &[]);
    live.wait_up(&["web.1", "release.1"]);
    live.app.write("go", "");
    assert_eq!(live.crew.wait_code(SOON), 4, "{}", live.crew.report());
    live.assert_cleaned_up();
}

fn stop_signal_app() -> App {
    let app = reporter_app();
    app.write("crew.toml", "[worker]\nstop_signal = \"INT\"\n");
    app
}

#[test]
fn crew_toml_stop_signal_is_what_crew_stop_sends() {
    let live = Live::start(stop_signal_app(), 1, &[]);
    live.wait_line("worker.1", "worker.1 ready");
    assert_eq!(live.ok(&["stop", "worker"]), "Stopping worker... done\n");
    let logs = live.wait_line("worker.1", "Process exited with status 0");
    assert!(
        position(&logs, "worker.1", "Stopping all processes with SIGINT").is_some(),
        "{}",
        show(&logs)
    );
    assert!(
        position(&logs, "worker.1", "worker.1 got INT").is_some(),
        "{}",
        show(&logs)
    );
    assert!(
        position(&logs, "worker.1", "worker.1 got TERM").is_none(),
        "{}",
        show(&logs)
    );
    live.finish();
}

#[test]
fn crew_toml_stop_signal_is_what_ending_the_run_sends() {
    let mut live = Live::start(stop_signal_app(), 1, &[]);
    live.wait_line("worker.1", "worker.1 ready");
    live.crew.signal(Signal::TERM);
    assert_eq!(live.crew.wait_code(SOON), 143, "{}", live.crew.report());
    let stdout = live.crew.stdout();
    assert!(
        stdout.contains("| worker.1 got INT\n") && !stdout.contains("got TERM"),
        "worker.1's stop signal is INT\n{}",
        live.crew.report()
    );
    live.assert_cleaned_up();
}

#[test]
fn crew_toml_stop_timeout_is_when_sigkill_follows() {
    let app = App::with_procfile("worker: trap '' TERM; echo ready; exec sleep 100\n");
    app.write("crew.toml", "[worker]\nstop_timeout = 1\n");
    let live = Live::start(app, 1, &["-t", "20"]);
    live.wait_line("worker.1", "ready");
    live.ok(&["stop", "worker.1"]);
    let logs = live.wait_line("worker.1", "Process exited with status 137");
    let stop = matching(&logs, "worker.1", "Stopping all processes with SIGTERM");
    let killed = matching(&logs, "worker.1", "Process exited with status 137");
    let waited = seconds_between(stop[0], killed[0]);
    assert!(
        (0.9..4.0).contains(&waited),
        "SIGKILL after the 1 s stop_timeout, not -t 20 (took {waited:.2}s)\n{}",
        show(&logs)
    );
    live.finish();
}

#[test]
fn a_bad_crew_toml_is_an_error_naming_the_file() {
    let app = App::with_procfile("web: exec sleep 100\nworker: exec sleep 100\n");
    let file = app.join("crew.toml").display().to_string();
    let cases = [
        ("[web]\nstop_sginal = \"INT\"\n", "stop_sginal"),
        ("[nope]\nmay_exit = true\n", "[nope]"),
        ("[worker]\nstop_signal = \"BOGUS\"\n", "BOGUS"),
        ("[worker]\nrestart = \"sometimes\"\n", "sometimes"),
        ("[web]\nboot_timeout = \"soon\"\n", "boot_timeout"),
        ("[web\n", "line 1"),
    ];
    for (text, needle) in cases {
        app.write("crew.toml", text);
        let ports = port_block(2, 1);
        let out = app.run(&["start", "-p", &ports.base.to_string()]);
        let context = format!("crew.toml:\n{text}");
        assert!(
            out.stderr.contains(&file),
            "the error names {file}\n{context}\n{}",
            out.report()
        );
        out.assert_clean_error(&[needle]);
        assert!(!app.exists(SOCKET), "no socket is left behind\n{context}");
    }
}

// ---------------------------------------------------------------------------
// 7. crew run
// ---------------------------------------------------------------------------

/// `crew run` of a command that prints `$DYNO` and runs until `file` exists.
fn one_off(live: &Live, dir: &Path, file: &str) -> Crew {
    let mut command = live.app.command(&[
        "run",
        &format!("echo \"DYNO=$DYNO\"; until [ -e '{file}' ]; do sleep 0.05; done"),
    ]);
    command.current_dir(dir);
    Crew::spawn(command)
}

#[test]
fn crew_run_shows_as_run_n_in_ps_while_it_runs() {
    let live = Live::start(App::with_procfile("worker: exec sleep 100\n"), 1, &[]);
    live.wait_up(&["worker.1"]);
    let root = live.app.path().to_path_buf();
    let mut first = one_off(&live, &root, "done-1");
    first.wait_for("DYNO=run.1\n", SOON);
    let mut second = one_off(&live, &root, "done-2");
    second.wait_for("DYNO=run.2\n", SOON);
    let ps = live.wait_up(&["run.1", "run.2"]);
    let run1 = ps.iter().find(|p| p.name == "run.1").expect("run.1");
    assert_eq!(
        run1.pid,
        Some(first.pid()),
        "crew run execs, keeping its pid"
    );
    assert_eq!(run1.process_type, "run");
    assert!(run1.command.contains("until [ -e 'done-1' ]"), "{run1:?}");
    let row = live.ps_row("run.2").expect("run.2 in the table");
    assert!(row.contains("up for "), "{row}");

    live.app.write("done-1", "");
    assert_eq!(first.wait_code(SOON), 0, "{}", first.report());
    live.wait_ps("run.1 gone", |ps| ps.iter().all(|p| p.name != "run.1"));
    assert!(live.names().contains(&"run.2".to_owned()));
    live.app.write("done-2", "");
    assert_eq!(second.wait_code(SOON), 0, "{}", second.report());
    let ps = live.wait_ps("run.2 gone", |ps| {
        ps.iter().all(|p| p.process_type != "run")
    });
    assert_eq!(
        ps.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["worker.1"]
    );
    live.finish();
}

#[test]
fn crew_run_from_a_subdirectory_also_shows_in_ps() {
    let live = Live::start(App::with_procfile("worker: exec sleep 100\n"), 1, &[]);
    let sub = live.app.join("scripts");
    std::fs::create_dir_all(&sub).expect("a subdirectory");
    let mut run = one_off(&live, &sub, "done");
    run.wait_for("DYNO=run.1\n", SOON);
    live.wait_up(&["run.1"]);
    live.app.write("scripts/done", "");
    assert_eq!(run.wait_code(SOON), 0, "{}", run.report());
    live.wait_ps("run.1 gone", |ps| ps.iter().all(|p| p.name != "run.1"));
    live.finish();
}

#[test]
fn crew_stop_ends_a_registered_crew_run() {
    let live = Live::start(App::with_procfile("worker: exec sleep 100\n"), 1, &[]);
    let root = live.app.path().to_path_buf();
    let mut run = one_off(&live, &root, "never");
    run.wait_for("DYNO=run.1\n", SOON);
    live.wait_up(&["run.1"]);
    assert_eq!(live.ok(&["stop", "run.1"]), "Stopping run.1... done\n");
    let status = run.wait_exit(SOON);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15),
        "{}",
        run.report()
    );
    live.wait_ps("run.1 gone", |ps| ps.iter().all(|p| p.name != "run.1"));
    live.finish();
}
