//! The router end to end: a real server, real pushes, real HTTP through it.

mod common;
mod platform;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{App, poll_until};
use platform::{DEPLOY, Server, TestServer, commit_all, http_get, repo};

/// Answers with its DYNO and the request's headers; echoes the bytes of an
/// upgraded connection; `/slow?s=N` waits N seconds first.
const ECHO_APP: &str = r#"
import os, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.rsplit("=", 1)[-1]))
        if self.headers.get("Upgrade"):
            self.send_response(101)
            self.send_header("Upgrade", self.headers["Upgrade"])
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.connection.recv(4096)
                if not data:
                    break
                self.connection.sendall(data)
            self.close_connection = True
            return
        lines = ["dyno=%s" % os.environ.get("DYNO"), "greeting=%s" % os.environ.get("GREETING")]
        lines += ["%s: %s" % (k.lower(), v) for k, v in self.headers.items()]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Echo).serve_forever()
"#;

fn echo_repo(server: &Server, procfile: &str) -> App {
    let app = repo(server, procfile);
    app.write("echo.py", ECHO_APP);
    commit_all(server, app.path(), "echo app");
    app
}

fn deploy(server: &Server, app: &App, name: &str) {
    server.ok(app.path(), &["apps:create", name]);
    server.push(app.path());
}

#[test]
fn requests_spread_over_the_web_dynos_with_forwarding_headers() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = echo_repo(&server, "web: python3 echo.py\n");
    deploy(&server, &app, "spread");
    server.ok(app.path(), &["scale", "web=3"]);
    server.wait_up(app.path(), "spread", 3);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let (status, body) = http_get(server.router, "spread.localhost", "/", &[]);
        assert_eq!(status, 200, "{body}");
        if let Some(line) = body.lines().find(|l| l.starts_with("dyno=")) {
            seen.insert(line.to_string());
        }
    }
    assert_eq!(seen.len(), 3, "requests reached only {seen:?}");

    let (_, body) = http_get(
        server.router,
        "spread.localhost",
        "/",
        &[("X-Request-Id", "abc-123")],
    );
    assert!(body.contains("x-request-id: abc-123"), "{body}");
    assert!(body.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(body.contains("x-forwarded-proto: http"), "{body}");
    assert!(
        body.contains(&format!("x-forwarded-port: {}", server.router)),
        "{body}"
    );
    let (_, body) = http_get(server.router, "spread.localhost", "/", &[]);
    assert!(
        body.contains("x-request-id: "),
        "a new request id is made: {body}"
    );

    let logs = server.ok(app.path(), &["logs", "--ps", "router", "-n", "5"]);
    let line = logs.lines().last().unwrap_or_default();
    for part in [
        "crew[router]: at=info method=GET path=\"/\" host=spread.localhost request_id=",
        "fwd=\"127.0.0.1\" dyno=web.",
        "connect=",
        "service=",
        "status=200 bytes=",
    ] {
        assert!(line.contains(part), "missing `{part}` in {line}");
    }
}

#[test]
fn unknown_hosts_get_a_404_and_custom_domains_route() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = echo_repo(&server, "web: python3 echo.py\n");
    deploy(&server, &app, "named");
    server.wait_up(app.path(), "named", 1);
    let (status, _) = http_get(server.router, "nobody.localhost", "/", &[]);
    assert_eq!(status, 404);
    let (status, _) = http_get(server.router, "www.example.com", "/", &[]);
    assert_eq!(status, 404);
    server.ok(app.path(), &["domains:add", "www.example.com"]);
    assert!(
        server
            .ok(app.path(), &["domains"])
            .contains("www.example.com")
    );
    let (status, body) = http_get(server.router, "www.example.com:80", "/", &[]);
    assert_eq!(status, 200, "{body}");
    server.ok(app.path(), &["domains:remove", "www.example.com"]);
    let (status, _) = http_get(server.router, "www.example.com", "/", &[]);
    assert_eq!(status, 404);
}

/// The error code a 503 names, and that the log names it too.
fn expect_error(server: &Server, app: &App, host: &str, path: &str, code: &str) {
    let (status, body) = http_get(server.router, host, path, &[]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(code), "the page should name {code}: {body}");
    let logged = poll_until(Duration::from_secs(10), || {
        server
            .ok(app.path(), &["logs", "--ps", "router", "-n", "20"])
            .contains(&format!("at=error code={code}"))
    });
    assert!(logged, "no {code} line in the log");
}

#[test]
fn no_web_dynos_is_h14_and_crashed_ones_are_h10() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = echo_repo(&server, "web: python3 echo.py\n");
    deploy(&server, &app, "errs");
    server.wait_up(app.path(), "errs", 1);
    server.ok(app.path(), &["scale", "web=0"]);
    expect_error(&server, &app, "errs.localhost", "/", "H14");

    std::fs::write(app.join("Procfile"), "web: exit 1\n").expect("write");
    commit_all(&server, app.path(), "crash");
    server.push(app.path());
    server.ok(app.path(), &["scale", "web=1"]);
    let crashed = poll_until(DEPLOY, || {
        server.ok(app.path(), &["ps"]).contains("crashed")
    });
    assert!(crashed, "{}", server.ok(app.path(), &["ps"]));
    expect_error(&server, &app, "errs.localhost", "/", "H10");
}

#[test]
fn slow_boots_slow_requests_and_unreachable_dynos_have_their_codes() {
    let Some(server) = TestServer::new()
        .flags(&["--boot-wait", "2", "--request-timeout", "2"])
        .start()
    else {
        return;
    };
    let app = echo_repo(&server, "web: python3 echo.py\n");
    deploy(&server, &app, "slow");
    server.wait_up(app.path(), "slow", 1);
    expect_error(&server, &app, "slow.localhost", "/slow?s=4", "H12");

    // A web dyno that never binds: requests wait for it, then H20.
    std::fs::write(app.join("Procfile"), "web: sleep 1000\n").expect("write");
    commit_all(&server, app.path(), "never binds");
    server.push(app.path());
    // The old release serves until the new one is up, which never happens:
    // scale to zero and back, so only the new release's dyno is left.
    server.ok(app.path(), &["scale", "web=0"]);
    server.ok(app.path(), &["scale", "web=1"]);
    let started = Instant::now();
    expect_error(&server, &app, "slow.localhost", "/", "H20");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "H20 came before the boot wait"
    );

    // A dyno that bound its port, was found up, then stopped listening.
    app.write(
        "gone.py",
        "import os, socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', int(os.environ['PORT'])))\ns.listen()\ntime.sleep(1.5)\ns.close()\ntime.sleep(1000)\n",
    );
    std::fs::write(app.join("Procfile"), "web: python3 gone.py\n").expect("write");
    commit_all(&server, app.path(), "unreachable");
    server.push(app.path());
    server.wait_up(app.path(), "slow", 1);
    std::thread::sleep(Duration::from_secs(2));
    expect_error(&server, &app, "slow.localhost", "/", "H19");
}

#[test]
fn websockets_and_other_upgrades_pass_through() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = echo_repo(&server, "web: python3 echo.py\n");
    deploy(&server, &app, "ws");
    server.wait_up(app.path(), "ws", 1);
    let mut stream = TcpStream::connect(("127.0.0.1", server.router)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read the 101");
        assert!(
            n == 1,
            "closed before the 101: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for message in [&b"hello"[..], b"\x81\x05world", &[0u8; 3000]] {
        stream.write_all(message).expect("write");
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).expect("read the echo");
        assert_eq!(echoed, message);
    }
}

#[test]
fn deploys_config_changes_restarts_rollbacks_and_scaling_drop_no_request() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = echo_repo(&server, "web: python3 echo.py\n");
    deploy(&server, &app, "steady");
    server.ok(app.path(), &["scale", "web=2"]);
    server.wait_up(app.path(), "steady", 2);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let router = server.router;
    let load = {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(240);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (status, body) = http_get(router, "steady.localhost", "/", &[]);
                if status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else if let Ok(mut f) = failures.lock() {
                    f.push(format!("{status}: {}", body.lines().last().unwrap_or("")));
                }
            }
        })
    };
    let served = |n: usize| {
        let target = ok.load(Ordering::Relaxed) + n;
        assert!(
            poll_until(DEPLOY, || ok.load(Ordering::Relaxed) >= target),
            "the load stopped getting answers"
        );
    };
    served(20);
    server.ok(app.path(), &["config:set", "GREETING=hi"]);
    served(20);
    let seen = poll_until(DEPLOY, || {
        http_get(router, "steady.localhost", "/", &[])
            .1
            .contains("greeting=hi")
    });
    assert!(seen, "the new release never answered");
    server.ok(app.path(), &["restart"]);
    served(20);
    server.ok(app.path(), &["restart", "web.1"]);
    served(20);
    server.ok(app.path(), &["scale", "web=3"]);
    served(20);
    server.ok(app.path(), &["scale", "web=1"]);
    served(20);
    app.write("touched", "1\n");
    commit_all(&server, app.path(), "another deploy");
    let (pushed, text) = server.git(app.path(), &["push", "crew", "main"]);
    assert!(pushed, "{text}");
    served(20);
    server.ok(app.path(), &["rollback"]);
    served(20);
    server.wait_up(app.path(), "steady", 1);
    served(20);
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        failures.len() + ok.load(Ordering::Relaxed),
        &failures[..failures.len().min(10)]
    );
}
