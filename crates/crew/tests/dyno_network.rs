//! Each isolated dyno in a network namespace of its own (issue 15, point 1),
//! proven from inside dynos, as root: what one app's dyno can reach, that it
//! cannot squat or steal another app's port, that it reaches the outside
//! through NAT and names through crew's DNS relay, and that nothing of the
//! network outlives its dynos or a killed server.
//!
//! Traffic goes only to loopback and to namespaces and interfaces these tests
//! make themselves (the "internet" is a namespace behind a veth).

mod common;
mod platform;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{CREW, SOON, Signal, poll_until};
use platform::{DEPLOY, Server, TestServer, commit_all, have_git, http_get, repo};

/// Tries each `HOST:PORT` it is given and prints `HOST:PORT open` or
/// `HOST:PORT closed REASON`.
const PROBE: &str = r#"
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(1.5)
    try:
        s.connect((host, int(port)))
        print(target, "open", flush=True)
    except Exception as e:
        print(target, "closed", type(e).__name__, flush=True)
    finally:
        s.close()
"#;

/// A web server that, like gunicorn `--reuse-port`, binds PORT with
/// SO_REUSEPORT: on a shared network, anyone of the same uid can then bind
/// it too and take part of its requests.
const REUSEPORT_WEB: &str = r#"
import os, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("0.0.0.0", int(os.environ["PORT"])))
s.listen(64)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nbeta serves\n")
    c.close()
"#;

/// Binds every port of a range it can, and `PORT` with SO_REUSEPORT, answers
/// "stolen" on all of them, and says how many it got.
const SQUAT: &str = r#"
import socket, sys, threading, time
target, first, last, hold = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
held = []
for port in [target] + list(range(first, last + 1)):
    for host in ("0.0.0.0", "127.0.0.1"):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((host, port))
            s.listen(16)
            held.append(s)
        except OSError:
            s.close()
def serve(s):
    while True:
        c, _ = s.accept()
        c.sendall(b"HTTP/1.0 200 OK\r\n\r\nstolen")
        c.close()
for s in held:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("bound", len(held), flush=True)
time.sleep(hold)
"#;

fn have_nft() -> bool {
    let found = Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: nft is not installed (.ci/run installs nftables)");
    }
    found
}

/// A server whose isolated dynos have networks of their own, or `None` (and
/// why, on stderr).
fn network_server(extra: &[&str]) -> Option<Server> {
    if !have_nft() {
        return None;
    }
    let server = TestServer::new()
        .needs_root("networks per dyno")
        .flags(extra)
        .start()?;
    let said = server.output();
    if !said.contains("network: a namespace per dyno") {
        eprintln!("skipped: this host cannot give dynos networks of their own:\n{said}");
        return None;
    }
    Some(server)
}

fn deploy(server: &Server, name: &str, procfile: &str, files: &[(&str, &str)]) -> common::App {
    let app = repo(server, procfile);
    for (path, contents) in files {
        app.write(path, contents);
    }
    if !files.is_empty() {
        commit_all(server, app.path(), "files");
    }
    server.ok(app.path(), &["apps:create", name]);
    server.push(app.path());
    app
}

fn run(server: &Server, app: &common::App, name: &str, command: &str) -> String {
    let (ok, out, err) = server.cli(app.path(), &["run", "-a", name, command]);
    assert!(ok, "crew run {command:?} failed:\n{out}\n{err}");
    out
}

/// The gateway of the server's range: its first address.
fn gateway(server: &Server) -> Ipv4Addr {
    let base: Ipv4Addr = server
        .dyno_network
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("the server's range");
    Ipv4Addr::from(u32::from(base) + 1)
}

/// Where `app`'s web dyno said it listens
/// (`web: echo addr $(hostname -I):$PORT; …`).
fn announced_address(server: &Server, app: &common::App, name: &str) -> String {
    let mut found = None;
    let seen = poll_until(DEPLOY, || {
        let logs = server.ok(app.path(), &["logs", "-n", "100", "-a", name]);
        found = logs
            .lines()
            .rev()
            .find_map(|l| l.split("addr ").nth(1))
            .map(|a| a.split_whitespace().next().unwrap_or("").to_string());
        found.is_some()
    });
    assert!(seen, "the web dyno never said its address");
    found.unwrap_or_default()
}

fn pool_port(server: &Server) -> (u16, u16) {
    let (first, last) = server.dyno_ports.split_once('-').expect("a range");
    (
        first.parse().expect("a port"),
        last.parse().expect("a port"),
    )
}

/// A host listener on every address, counting what it accepts.
struct HostListener {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl HostListener {
    fn start() -> HostListener {
        let listener = TcpListener::bind("0.0.0.0:0").expect("listen on the host");
        let port = listener.local_addr().expect("address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stream.is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        HostListener { port, accepted }
    }
}

/// A veth pair of the host's with one address, removed when dropped: a host
/// address that is not loopback (a veth, since not every kernel has dummy
/// interfaces).
struct HostAddress(String);

impl HostAddress {
    fn add(name: &str, address: &str) -> Option<HostAddress> {
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let _ = Command::new("ip")
            .args(["link", "delete", name])
            .stderr(Stdio::null())
            .status();
        let peer = format!("{name}p");
        if !ok(&["link", "add", name, "type", "veth", "peer", "name", &peer]) {
            eprintln!("no veth here: the non-loopback host address is not tried");
            return None;
        }
        let dummy = HostAddress(name.to_string());
        assert!(ok(&["addr", "add", address, "dev", name]));
        assert!(ok(&["link", "set", name, "up"]));
        Some(dummy)
    }
}

impl Drop for HostAddress {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "delete", &self.0])
            .status();
    }
}

#[test]
fn a_dyno_reaches_neither_the_host_nor_another_apps_dyno() {
    let Some(server) = network_server(&[]) else {
        return;
    };
    let host = HostListener::start();
    let tag = std::process::id() % 1000;
    let dummy_address = format!("198.51.100.{}", 1 + tag % 250);
    let dummy = HostAddress::add(&format!("crewtd{tag}"), &format!("{dummy_address}/32"));

    let beta = deploy(
        &server,
        "beta",
        "web: echo addr $(hostname -I | cut -d' ' -f1):$PORT; exec python3 -m http.server $PORT\n",
        &[("index.html", "beta serves\n")],
    );
    server.wait_up(beta.path(), "beta", 1);
    let beta_web = announced_address(&server, &beta, "beta");
    let (beta_address, beta_port) = beta_web.split_once(':').expect("ADDRESS:PORT");
    let beta_port: u16 = beta_port.parse().expect("PORT");
    assert!(
        beta_address.parse::<Ipv4Addr>().is_ok() && beta_address != "127.0.0.1",
        "{beta_web}"
    );
    let (status, body) = http_get(server.router, "beta.localhost", "/", &[]);
    assert_eq!((status, body.trim()), (200, "beta serves"));

    let alpha = deploy(
        &server,
        "alpha",
        "worker: sleep 1000\n",
        &[("probe.py", PROBE)],
    );
    let api_port: u16 = server
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the API's port");
    let gateway = gateway(&server);
    let mut targets = vec![
        // What a dyno sharing the host's network reached before.
        format!("127.0.0.1:{}", host.port),
        format!("127.0.0.1:{api_port}"),
        format!("127.0.0.1:{}", server.router),
        format!("127.0.0.1:{beta_port}"),
        // The host through the bridge, and the other app's dyno directly.
        format!("{gateway}:{}", host.port),
        format!("{gateway}:{api_port}"),
        format!("{gateway}:{}", server.router),
        format!("{beta_address}:{beta_port}"),
    ];
    if dummy.is_some() {
        targets.push(format!("{dummy_address}:{}", host.port));
    }
    let said = run(
        &server,
        &alpha,
        "alpha",
        &format!("python3 probe.py {}", targets.join(" ")),
    );
    for target in &targets {
        let line = said
            .lines()
            .find(|l| l.starts_with(&format!("{target} ")))
            .unwrap_or_else(|| panic!("no answer for {target}:\n{said}"));
        assert!(
            line.contains(" closed "),
            "alpha's dyno reached {target}:\n{said}"
        );
    }
    assert_eq!(host.accepted.load(Ordering::SeqCst), 0, "{said}");

    // The host itself still reaches the dyno (the router does, too: above).
    assert!(
        std::net::TcpStream::connect_timeout(
            &format!("{beta_address}:{beta_port}")
                .parse()
                .expect("address"),
            SOON
        )
        .is_ok()
    );
    drop(dummy);
}

#[test]
fn a_one_off_cannot_squat_or_steal_another_apps_port() {
    let Some(server) = network_server(&[]) else {
        return;
    };
    let beta = deploy(
        &server,
        "beta",
        "web: echo addr $(hostname -I | cut -d' ' -f1):$PORT; exec python3 web.py\n",
        &[("web.py", REUSEPORT_WEB)],
    );
    server.wait_up(beta.path(), "beta", 1);
    let beta_web = announced_address(&server, &beta, "beta");
    let beta_port: u16 = beta_web
        .split_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("PORT");
    let alpha = deploy(
        &server,
        "alpha",
        "worker: sleep 1000\n",
        &[("squat.py", SQUAT)],
    );

    // Every port of the pool, and beta's with SO_REUSEPORT, held for a while.
    let (first, last) = pool_port(&server);
    let mut squatter = Command::new(CREW)
        .args([
            "run",
            "--no-tty",
            "-a",
            "alpha",
            &format!("python3 squat.py {beta_port} {first} {last} 60"),
        ])
        .current_dir(alpha.path())
        .env("HOME", server.home.path())
        .env("CREW_API_URL", &server.url)
        .env("CREW_API_KEY", server.token())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("crew run");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = squatter.stdout.take().expect("stdout");
    let _squatter = Kill(squatter);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let bound = rx
        .recv_timeout(DEPLOY)
        .expect("the squatter says what it bound");
    let count: usize = bound
        .strip_prefix("bound ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // In its own namespace every bind succeeds, and takes nothing from beta.
    assert!(count > 100, "{bound}");

    for _ in 0..20 {
        let (status, body) = http_get(server.router, "beta.localhost", "/", &[]);
        assert_eq!((status, body.trim()), (200, "beta serves"));
    }
    // A restart of beta while the squatter holds every port still comes up.
    server.ok(beta.path(), &["restart", "-a", "beta"]);
    std::thread::sleep(Duration::from_millis(500));
    server.wait_up(beta.path(), "beta", 1);
    for _ in 0..20 {
        let (status, body) = http_get(server.router, "beta.localhost", "/", &[]);
        assert_eq!((status, body.trim()), (200, "beta serves"));
    }
}

/// A network namespace standing for the internet, behind a veth from the
/// host, with a listener that answers with the address it saw. Removed when
/// dropped.
struct Internet {
    namespace: String,
    host_link: String,
    listener: Option<std::process::Child>,
}

impl Internet {
    fn start(tag: u32) -> Internet {
        let namespace = format!("crewtinet{tag}");
        let host_link = format!("crewti{tag}");
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("ip");
            assert!(status.success(), "ip {args:?}");
        };
        let _ = Command::new("ip")
            .args(["netns", "delete", &namespace])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "delete", &host_link])
            .stderr(Stdio::null())
            .status();
        let mut internet = Internet {
            namespace: namespace.clone(),
            host_link: host_link.clone(),
            listener: None,
        };
        let octet = tag % 60;
        ip(&["netns", "add", &namespace]);
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", "inet0", "netns", &namespace,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("198.18.{octet}.1/30"),
            "dev",
            &host_link,
        ]);
        ip(&["link", "set", &host_link, "up"]);
        ip(&[
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("198.18.{octet}.2/30"),
            "dev",
            "inet0",
        ]);
        ip(&["-n", &namespace, "link", "set", "inet0", "up"]);
        ip(&["-n", &namespace, "link", "set", "lo", "up"]);
        let listener = Command::new("ip")
            .args(["netns", "exec", &namespace, "/usr/bin/python3", "-c"])
            .arg(
                "import socket\n\
                 s = socket.socket()\n\
                 s.bind(('0.0.0.0', 8080))\n\
                 s.listen(8)\n\
                 print('listening', flush=True)\n\
                 while True:\n\
                 \x20   c, peer = s.accept()\n\
                 \x20   c.sendall(('seen from ' + peer[0] + '\\n').encode())\n\
                 \x20   c.close()\n",
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("a listener in the namespace");
        internet.listener = Some(listener);
        if let Some(out) = internet.listener.as_mut().and_then(|l| l.stdout.take()) {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            assert_eq!(line.trim(), "listening");
        }
        internet
    }

    fn address(&self, tag: u32) -> String {
        format!("198.18.{}.2", tag % 60)
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = listener.kill();
            let _ = listener.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.namespace])
            .status();
    }
}

#[test]
fn outbound_traffic_reaches_the_internet_through_nat() {
    let Some(server) = network_server(&[]) else {
        return;
    };
    let tag = std::process::id() % 1000;
    let internet = Internet::start(tag);
    let alpha = deploy(&server, "alpha", "worker: sleep 1000\n", &[]);
    let said = run(
        &server,
        &alpha,
        "alpha",
        &format!(
            "python3 -c \"import socket; s = socket.create_connection(('{}', 8080), 5); \
             print(s.recv(100).decode().strip())\"",
            internet.address(tag)
        ),
    );
    // The outside sees the host's address on that link, not the dyno's.
    assert_eq!(
        said.trim(),
        format!("seen from 198.18.{}.1", tag % 60),
        "{said}"
    );
}

/// Many frameworks listen on 127.0.0.1 unless told otherwise; inside its own
/// network a dyno's loopback is its own, so the router reaches such a web
/// dyno only through the rule in the dyno's namespace that sends TCP
/// arriving on eth0 on to loopback (written by crew over netlink).
#[test]
fn a_web_dyno_listening_only_on_its_loopback_is_reached_through_the_router() {
    let Some(server) = network_server(&[]) else {
        return;
    };
    let gamma = deploy(
        &server,
        "gamma",
        "web: exec python3 -m http.server $PORT --bind 127.0.0.1\n",
        &[("index.html", "gamma on loopback\n")],
    );
    server.wait_up(gamma.path(), "gamma", 1);
    let (status, body) = http_get(server.router, "gamma.localhost", "/", &[]);
    assert_eq!((status, body.trim()), (200, "gamma on loopback"), "{body}");
}

/// A DNS server on loopback that answers every A question with 203.0.113.7.
fn dns_server() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = socket.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            // The question: labels up to a zero byte, then type and class.
            let mut end = 12;
            while end < n && buf[end] != 0 {
                end += usize::from(buf[end]) + 1;
            }
            let end = end + 5;
            if end > n {
                continue;
            }
            let is_a = buf[end - 4..end - 2] == [0, 1];
            let mut answer = Vec::new();
            answer.extend_from_slice(&buf[0..2]);
            answer.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
            answer.extend_from_slice(&buf[12..end]);
            if is_a {
                answer
                    .extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 7]);
            }
            let _ = socket.send_to(&answer, from);
        }
    });
    port
}

#[test]
fn names_resolve_through_crews_dns_relay() {
    let port = dns_server();
    let dns = format!("127.0.0.1:{port}");
    let Some(server) = network_server(&["--dyno-dns", &dns]) else {
        return;
    };
    let alpha = deploy(&server, "alpha", "worker: sleep 1000\n", &[]);
    let said = run(
        &server,
        &alpha,
        "alpha",
        "python3 -c \"import socket; print(socket.gethostbyname('shop.example.test'))\"; \
         grep nameserver /etc/resolv.conf",
    );
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines,
        ["203.0.113.7", &format!("nameserver {}", gateway(&server))],
        "{said}"
    );
    let info = server.ok(alpha.path(), &["apps:info", "-a", "alpha"]);
    assert!(info.contains("network: a namespace per dyno"), "{info}");
}

#[test]
fn a_range_that_clashes_with_the_host_is_refused_or_shared_with_a_reason() {
    if !have_git() || !rustix::process::geteuid().is_root() || !have_nft() {
        eprintln!("skipped: needs git, root and nft");
        return;
    }
    // 127.0.0.1 is on every host's loopback.
    let clash = ["--dyno-network", "127.0.0.0/16"];
    let home = common::App::new();
    let mut refused = common::Crew::spawn({
        let mut command = Command::new(CREW);
        command
            .args(["server", "--isolation", "on", "--data"])
            .arg(home.join("data"))
            .args(["--listen", "127.0.0.1:0", "--router", "127.0.0.1:0"])
            .args(clash)
            .args([
                "--dyno-bridge",
                &format!("crewtc{}", std::process::id() % 1000),
            ])
            .env("HOME", home.path());
        command
    });
    let code = refused.wait_code(SOON);
    assert_ne!(code, 0);
    let said = refused.stderr();
    assert!(
        said.contains("--isolation on") && said.contains("overlaps this host's address 127.0.0.1"),
        "{said}"
    );

    // Without `on`, dynos are isolated but share the host's network, and the
    // server says why.
    let server = Server::start_with(&clash);
    let said = server.output();
    assert!(
        said.contains("dynos share the host's network, because no network per dyno can be had")
            || !said.contains("dyno isolation: on"),
        "{said}"
    );
    assert!(!std::path::Path::new(&format!("/sys/class/net/{}", server.dyno_bridge)).exists());
}

/// The host ends of dyno veths on the server's bridge.
fn bridge_ports(server: &Server) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{}/brif", server.dyno_bridge))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Links named like the veths one server process makes.
fn veths_of(pid: i32) -> usize {
    let tag = format!("cw{:06x}", (pid as u32) & 0xff_ffff);
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&tag))
                .count()
        })
        .unwrap_or(0)
}

fn table(server: &Server) -> String {
    let out = Command::new("nft")
        .args(["list", "table", "inet", &server.dyno_bridge])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nothing_of_the_network_outlives_200_one_offs_or_a_killed_server() {
    let Some(mut server) = network_server(&[]) else {
        return;
    };
    let alpha = deploy(&server, "alpha", "worker: sleep 1000\n", &[]);
    server.ok(alpha.path(), &["scale", "-a", "alpha", "worker=1"]);
    server.wait_up(alpha.path(), "alpha", 1);
    let pid = server.pid().expect("the server runs");
    // The pool's namespaces and the worker's.
    let settled = bridge_ports(&server);
    assert!(settled >= 1, "no veth on the bridge");

    for i in 0..200 {
        let said = run(&server, &alpha, "alpha", "echo $((1 + 1))");
        assert_eq!(said.trim(), "2", "one-off {i}");
    }
    let back = poll_until(Duration::from_secs(30), || {
        bridge_ports(&server) <= settled && veths_of(pid) <= settled
    });
    assert!(
        back,
        "{} ports on the bridge and {} veths after 200 one-offs, {settled} before",
        bridge_ports(&server),
        veths_of(pid)
    );
    let rules = table(&server);
    assert_eq!(rules.matches("chain ").count(), 3, "{rules}");

    // A SIGKILLed server's dynos and namespaces go with it; the next server
    // replaces the bridge and the table.
    server.kill(Signal::KILL);
    let gone = poll_until(Duration::from_secs(30), || veths_of(pid) == 0);
    assert!(
        gone,
        "{} veths of the killed server are left",
        veths_of(pid)
    );
    server.boot();
    assert!(
        server.output().contains("network: a namespace per dyno"),
        "{}",
        server.output()
    );
    let rules = table(&server);
    assert_eq!(rules.matches("chain ").count(), 3, "{rules}");
    assert_eq!(rules.matches("masquerade").count(), 1, "{rules}");
    server.wait_up(alpha.path(), "alpha", 1);
    assert_eq!(run(&server, &alpha, "alpha", "echo again").trim(), "again");

    // A server that stops takes its bridge and table along.
    server.kill(Signal::TERM);
    assert!(!std::path::Path::new(&format!("/sys/class/net/{}", server.dyno_bridge)).exists());
    assert_eq!(table(&server), "");
}
