//! A `crew server` for tests: its own data dir and HOME, free ports, and the
//! CLI and git pointed at it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{App, CREW, Crew, SOON, Signal, poll_until};
// Each test binary uses its own part of these.
#[allow(unused_imports)]
pub use crew_testkit::{http::http_get, ports::free_port, procs::pids_alive};

pub const DEPLOY: Duration = Duration::from_secs(90);

pub fn have_git() -> bool {
    let found = Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: git is not installed (.ci/run installs it)");
    }
    found
}

/// A test server's flags and environment, given one at a time; `start`
/// starts it, or skips the test when git is missing (every server test
/// pushes).
#[derive(Default)]
pub struct TestServer {
    extra: Vec<String>,
    env: Vec<(String, String)>,
    /// What needs root, when something does: without it the test skips.
    root_for: Option<String>,
    /// Skip unless the server isolates its dynos.
    isolated_only: bool,
}

impl TestServer {
    pub fn new() -> TestServer {
        TestServer::default()
    }

    /// `--isolation MODE`.
    pub fn isolation(self, mode: &str) -> TestServer {
        self.flags(&["--isolation", mode])
    }

    /// More `crew server` flags.
    pub fn flags(mut self, flags: &[&str]) -> TestServer {
        self.extra.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// More variables in the server's environment.
    pub fn envs(mut self, env: &[(&str, &str)]) -> TestServer {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Skip the test unless it runs as root: `what` (plural) needs it.
    pub fn needs_root(mut self, what: &str) -> TestServer {
        self.root_for = Some(what.to_string());
        self
    }

    /// Skip the test unless the server isolates its dynos (root, and a host
    /// that allows it).
    pub fn isolated_dynos(mut self) -> TestServer {
        self.isolated_only = true;
        self.needs_root("isolated dynos")
    }

    /// The server, up; `None` (after a `skipped:` line saying why) without
    /// git, or without what `needs_root` or `isolated_dynos` asked for.
    pub fn start(self) -> Option<Server> {
        if !have_git() {
            return None;
        }
        if let Some(what) = &self.root_for
            && !rustix::process::geteuid().is_root()
        {
            eprintln!("skipped: {what} need root (CI runs as root)");
            return None;
        }
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let server = Server::start_with_env(&extra, &env);
        if self.isolated_only && !server.output().contains("dyno isolation: on") {
            eprintln!(
                "skipped: this host cannot isolate dynos:\n{}",
                server.output()
            );
            return None;
        }
        Some(server)
    }
}

/// A server on its own data dir and HOME, and what clients need to reach it.
pub struct Server {
    pub home: App,
    pub url: String,
    crew: Option<Crew>,
    pub dyno_ports: String,
    /// The router's port, read from the server's first lines.
    pub router: u16,
    /// More `crew server` flags.
    pub extra: Vec<String>,
    /// More variables in the server's environment.
    pub env: Vec<(String, String)>,
    /// Its isolated dynos' range and bridge (one of each per server, as
    /// with ports, since servers of one binary run side by side).
    pub dyno_network: String,
    pub dyno_bridge: String,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_with_env(extra, &[])
    }

    /// A server with more flags and more variables in its environment.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let home = App::new();
        let url = format!("http://127.0.0.1:{}", free_port());
        // A range of PORTs per server: servers of one test binary run side by
        // side, and two of them handing out the same port makes one dyno
        // crash-loop on a bind until the other lets go.
        static SERVERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 20;
        let first = 20000 + ((std::process::id() % 20) * 2000 + n * 100) as u16;
        let mut server = Server {
            home,
            url,
            crew: None,
            dyno_ports: format!("{first}-{}", first + 99),
            router: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dyno_network: format!("10.{}.{n}.0/24", 200 + std::process::id() % 20),
            dyno_bridge: format!("crewt{}x{n}", std::process::id() % 20),
        };
        server.boot();
        server
    }

    pub fn data(&self) -> PathBuf {
        self.home.join("data")
    }

    pub fn boot(&mut self) {
        let mut command = Command::new(CREW);
        command
            .args(["server", "--data"])
            .arg(self.data())
            .args(["--listen", self.url.trim_start_matches("http://")])
            .args(["--dyno-ports", &self.dyno_ports])
            .args(["--router", "127.0.0.1:0"])
            .args(self.extra.iter())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("HOME", self.home.path())
            .current_dir(self.home.path());
        if !self.extra.iter().any(|flag| flag == "--dyno-network") {
            command.args(["--dyno-network", &self.dyno_network]);
        }
        command.args(["--dyno-bridge", &self.dyno_bridge]);
        let crew = Crew::spawn(command);
        crew.wait_for("router serving every app at", SOON);
        self.router = crew
            .stdout()
            .lines()
            .find_map(|l| l.split("localhost:").nth(1))
            .and_then(|rest| rest.trim_end_matches('/').parse().ok())
            .unwrap_or(0);
        self.crew = Some(crew);
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.crew.as_ref().map(|c| c.pid())
    }

    /// What the server printed so far.
    pub fn output(&self) -> String {
        self.crew.as_ref().map(|c| c.stdout()).unwrap_or_default()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data().join("api-token"))
            .expect("the token file")
            .trim()
            .to_string()
    }

    /// `crew ARGS` as a client of this server, in `dir`.
    pub fn cli(&self, dir: &Path, args: &[&str]) -> (bool, String, String) {
        // stdin is never the terminal the tests run in: `crew run -a` would
        // put it in raw mode.
        let output = Command::new(CREW)
            .args(args)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .env("HOME", self.home.path())
            .env("CREW_API_URL", &self.url)
            .env("CREW_API_KEY", self.token())
            .output()
            .expect("running crew");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    pub fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(dir, args);
        assert!(ok, "crew {args:?} failed:\n{out}\n{err}");
        assert!(!err.contains("panicked"), "{err}");
        out
    }

    pub fn git(&self, dir: &Path, args: &[&str]) -> (bool, String) {
        let output = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("HOME", self.home.path())
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .expect("running git");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    /// One request to the server's API on a new connection, with `headers`
    /// (the token only if they carry it).
    pub fn api_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> crew_testkit::http::Response {
        let address = self.url.trim_start_matches("http://");
        let port = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the server's port");
        crew_testkit::http::request(port, address, method, path, headers, body)
    }

    /// `crew apps:create NAME` in the app repository at `dir` (which adds
    /// the `crew` remote), then `git push crew main`; fails the test if
    /// either fails, and returns what the push printed.
    pub fn deploy(&self, dir: &Path, name: &str) -> String {
        self.ok(dir, &["apps:create", name]);
        self.push(dir)
    }

    /// `git push crew main` from `dir`; fails the test if the push fails,
    /// and returns what it printed.
    pub fn push(&self, dir: &Path) -> String {
        let (ok, text) = self.git(dir, &["push", "crew", "main"]);
        assert!(ok, "git push crew main failed:\n{text}");
        text
    }

    /// Waits until `crew ps` shows `count` dynos, all up.
    pub fn wait_up(&self, dir: &Path, app: &str, count: usize) -> String {
        let mut last = String::new();
        let done = poll_until(DEPLOY, || {
            let (_, out, _) = self.cli(dir, &["ps", "-a", app]);
            last = out;
            let rows: Vec<&str> = last.lines().skip(2).collect();
            rows.len() == count && rows.iter().all(|r| r.contains(" up for "))
        });
        assert!(done, "expected {count} dynos up, ps says:\n{last}");
        last
    }

    pub fn kill(&mut self, signal: Signal) {
        if let Some(crew) = self.crew.as_mut() {
            crew.signal(signal);
            crew.wait_exit(Duration::from_secs(60));
        }
        self.crew = None;
    }
}

/// A killed server leaves its dyno network's bridge and table behind (the
/// next server on them replaces them); a test's server takes them along.
impl Drop for Server {
    fn drop(&mut self) {
        drop(self.crew.take());
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.dyno_bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.dyno_bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A git repository with a Procfile-only app.
pub fn repo(server: &Server, procfile: &str) -> App {
    let app = App::with_procfile(procfile);
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["config", "user.email", "dev@example.com"],
        &["config", "user.name", "dev"],
        &["add", "."],
        &["commit", "-qm", "first"],
    ] {
        let (ok, text) = server.git(app.path(), args);
        assert!(ok, "git {args:?}: {text}");
    }
    app
}

/// The PID column of `crew ps`, wherever the columns before it put it.
pub fn dyno_pids(ps: &str) -> Vec<i32> {
    let Some(column) = ps.lines().next().and_then(|h| h.find("PID")) else {
        return Vec::new();
    };
    ps.lines()
        .skip(2)
        .filter_map(|l| l.get(column..)?.split_whitespace().next()?.parse().ok())
        .collect()
}

pub fn commit_all(server: &Server, dir: &Path, message: &str) {
    for args in [&["add", "-A"][..], &["commit", "-qm", message]] {
        let (ok, text) = server.git(dir, args);
        assert!(ok, "git {args:?}: {text}");
    }
}
