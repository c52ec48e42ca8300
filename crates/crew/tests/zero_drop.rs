//! Operations under load drop no request (issue 22): keep-alive clients send
//! GETs through the router without a pause while the app's config changes, it
//! restarts (all of it, one dyno), rolls back and a web dyno is killed, a few
//! rounds over.

mod common;
mod platform;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{App, poll_until};
use platform::{DEPLOY, TestServer, commit_all, dyno_pids, repo};

/// Answers every GET with its DYNO, on kept-alive connections, as the demo
/// app's Python server does.
const APP: &str = r#"
import os
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = ("dyno=%s\n" % os.environ.get("DYNO")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Hello).serve_forever()
"#;

const CLIENTS: usize = 4;
const ROUNDS: usize = 2;

/// One kept-alive connection to the router, opened again when the router
/// closes it (which is not a failure: a client retries on a new connection
/// only when no response came).
struct KeepAlive {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    /// The status of one GET and the last line of its body, or why there was
    /// none.
    fn get(&mut self) -> Result<(u16, String), String> {
        let fresh = self.conn.is_none();
        if fresh {
            let stream = TcpStream::connect(("127.0.0.1", self.port))
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            self.conn = Some(BufReader::new(stream));
        }
        match self.exchange() {
            Ok((status, keep, last)) => {
                if !keep {
                    self.conn = None;
                }
                Ok((status, last))
            }
            Err(e) => {
                self.conn = None;
                // A kept connection the router closed while idle: as any
                // HTTP client does, try once on a new one.
                if fresh { Err(e) } else { self.get() }
            }
        }
    }

    fn exchange(&mut self) -> Result<(u16, bool, String), String> {
        let conn = self.conn.as_mut().ok_or("no connection")?;
        conn.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: steady.localhost\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        conn.read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line: {line:?}"))?;
        let mut length = 0usize;
        let mut keep = true;
        loop {
            line.clear();
            conn.read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(|_| "bad content-length")?;
            }
            if lower == "connection: close" {
                keep = false;
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
        let body = String::from_utf8_lossy(&body);
        let last = body.trim_end().lines().last().unwrap_or("").to_string();
        Ok((status, keep, last))
    }
}

/// Clients sending GETs until dropped; what failed is kept.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..CLIENTS)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(300);
                    let mut client = KeepAlive { port, conn: None };
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match client.get() {
                            Ok((200, _)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                if let Ok(mut f) = failures.lock() {
                                    f.push(format!("{other:?}"));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            threads,
        }
    }

    /// Waits for `n` more answers, so that each operation happens under load.
    fn served(&self, n: usize) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        assert!(
            poll_until(DEPLOY, || self.ok.load(Ordering::Relaxed) >= target),
            "the load stopped getting answers"
        );
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn config_changes_restarts_rollbacks_and_a_crash_under_keep_alive_load_drop_no_get() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app: App = repo(&server, "web: python3 app.py\n");
    app.write("app.py", APP);
    commit_all(&server, app.path(), "app");
    server.ok(app.path(), &["apps:create", "steady"]);
    let (pushed, text) = server.git(app.path(), &["push", "crew", "main"]);
    assert!(pushed, "{text}");
    server.ok(app.path(), &["scale", "web=2"]);
    server.wait_up(app.path(), "steady", 2);

    let load = Load::start(server.router);
    load.served(200);
    for round in 0..ROUNDS {
        server.ok(app.path(), &["config:set", &format!("ROUND={round}")]);
        load.served(200);
        server.wait_up(app.path(), "steady", 2);
        load.served(200);
        server.ok(app.path(), &["restart"]);
        load.served(200);
        server.wait_up(app.path(), "steady", 2);
        server.ok(app.path(), &["restart", "web.1"]);
        load.served(200);
        server.wait_up(app.path(), "steady", 2);
        server.ok(app.path(), &["rollback"]);
        load.served(200);
        let ps = server.wait_up(app.path(), "steady", 2);
        load.served(200);
        // A crash: the GETs on the dyno's kept connections, and the one it was
        // answering, go to the other dyno.
        let pid = dyno_pids(&ps).first().copied().expect("a dyno's pid");
        let dyno = rustix::process::Pid::from_raw(pid).expect("a dyno's pid is positive");
        rustix::process::kill_process(dyno, rustix::process::Signal::KILL)
            .unwrap_or_else(|e| panic!("kill -KILL {pid}: {e}"));
        load.served(200);
        server.wait_up(app.path(), "steady", 2);
        load.served(200);
    }
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        failures.len() + ok,
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn apps_info_counts_the_routers_failed_requests_by_code() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app: App = repo(&server, "web: python3 app.py\n");
    app.write("app.py", APP);
    commit_all(&server, app.path(), "app");
    server.ok(app.path(), &["apps:create", "steady"]);
    let (pushed, text) = server.git(app.path(), &["push", "crew", "main"]);
    assert!(pushed, "{text}");
    server.wait_up(app.path(), "steady", 1);
    let info = server.ok(app.path(), &["apps:info"]);
    assert!(!info.contains("Router errors"), "{info}");
    server.ok(app.path(), &["scale", "web=0"]);
    let mut client = KeepAlive {
        port: server.router,
        conn: None,
    };
    for _ in 0..3 {
        let got = client.get();
        assert!(matches!(&got, Ok((503, _))), "{got:?}");
    }
    let mut info = String::new();
    let counted = poll_until(DEPLOY, || {
        info = server.ok(app.path(), &["apps:info"]);
        info.contains("Router errors: H14 3\n")
    });
    assert!(counted, "{info}");
}

/// A web dyno that takes a while to boot, and answers every GET with a token
/// of its own run, so a test can tell an old run from a new one.
const SLOW_BOOT_APP: &str = r#"
import os, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

RUN = os.urandom(8).hex()
# Far longer than a request takes: while it boots, only the old run can answer.
time.sleep(4)

class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = ("run=%s\n" % RUN).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Hello).serve_forever()
"#;

#[test]
fn a_restart_keeps_the_old_web_dyno_serving_until_the_new_one_is_up() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app: App = repo(&server, "web: python3 app.py\n");
    app.write("app.py", SLOW_BOOT_APP);
    commit_all(&server, app.path(), "app");
    server.ok(app.path(), &["apps:create", "steady"]);
    let (pushed, text) = server.git(app.path(), &["push", "crew", "main"]);
    assert!(pushed, "{text}");
    server.wait_up(app.path(), "steady", 1);
    let mut client = KeepAlive {
        port: server.router,
        conn: None,
    };
    let mut run = match client.get() {
        Ok((200, run)) => run,
        other => panic!("the first GET: {other:?}"),
    };
    // The whole app, the type and the one dyno: each starts a new run beside
    // the old one, which answers until the new one is up. Stopping the old
    // one first left the app with no dyno to answer for the new one's boot.
    for target in [None, Some("web"), Some("web.1")] {
        let mut args = vec!["restart"];
        args.extend(target);
        server.ok(app.path(), &args);
        let mut answers = Vec::new();
        let replaced = poll_until(DEPLOY, || match client.get() {
            Ok((200, now)) => {
                let new = now != run;
                answers.push(now);
                new
            }
            other => panic!("crew {args:?}: a GET failed: {other:?}"),
        });
        assert!(replaced, "crew {args:?}: the new run never answered");
        assert!(
            answers.len() > 1 && answers[0] == run,
            "crew {args:?}: the old run stopped answering before the new one was up: {answers:?}"
        );
        run = answers.pop().unwrap_or_default();
        server.wait_up(app.path(), "steady", 1);
    }
}

#[test]
fn the_routers_error_lines_outlive_the_logs_last_ten_thousand_lines() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    // `flood` writes more lines than an app's log keeps.
    let app: App = repo(
        &server,
        "web: python3 app.py\nflood: python3 -c 'print(*range(12000), sep=chr(10))' && exec sleep 1000\n",
    );
    app.write("app.py", APP);
    commit_all(&server, app.path(), "app");
    server.ok(app.path(), &["apps:create", "steady"]);
    let (pushed, text) = server.git(app.path(), &["push", "crew", "main"]);
    assert!(pushed, "{text}");
    server.wait_up(app.path(), "steady", 1);
    server.ok(app.path(), &["scale", "web=0"]);
    let mut client = KeepAlive {
        port: server.router,
        conn: None,
    };
    for _ in 0..3 {
        let got = client.get();
        assert!(matches!(&got, Ok((503, _))), "{got:?}");
    }
    server.ok(app.path(), &["scale", "flood=1"]);
    let mut last = String::new();
    let flooded = poll_until(DEPLOY, || {
        last = server.ok(app.path(), &["logs", "-n", "1", "--ps", "flood"]);
        last.trim_end().ends_with(": 11999")
    });
    assert!(flooded, "the flood never ended: {last}");
    // The ring has let the failed requests' lines go...
    let ring = server.ok(app.path(), &["logs", "-n", "1500", "--ps", "router"]);
    assert!(!ring.contains("code=H14"), "{ring}");
    // ...and the router's own log still has them, in order, once each.
    let router = server.ok(app.path(), &["logs", "-n", "1500", "--source", "router"]);
    let failed: Vec<&str> = router.lines().filter(|l| l.contains("code=H14")).collect();
    assert_eq!(failed.len(), 3, "{router}");
    assert!(
        failed.iter().all(|l| l.contains("crew[router]: at=error")),
        "{router}"
    );
    // A dyno's lines are never the router's: asking for both is refused.
    let (ok, out, err) = server.cli(app.path(), &["logs", "--ps", "web", "--source", "router"]);
    assert!(!ok && err.contains("`web`"), "{out}{err}");
    assert!(!err.contains("panicked"), "{err}");
}
