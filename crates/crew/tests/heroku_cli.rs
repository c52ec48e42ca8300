//! The official Heroku CLI against `crew server`: `HEROKU_HOST` pointed at a
//! real server on loopback, `HEROKU_API_KEY` set to its token and a private
//! `HOME`, each command's output checked and the server's state read back
//! through crew's own CLI.
//!
//! The CLI is installed once per machine with `npm install --prefix
//! target/tmp/heroku-cli-VERSION heroku@VERSION` (about 45 s the first time,
//! nothing after that); without npm, node 20 or a registry the tests are
//! skipped.

mod common;
mod platform;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{App, Crew, poll_until};
use platform::{DEPLOY, Server, have_git, repo};

/// The CLI release these tests pin.
const HEROKU_VERSION: &str = "11.10.0";

/// How long one CLI command may take (node starts in about a second).
const COMMAND: Duration = Duration::from_secs(60);

/// Where the CLI is installed, or why it could not be.
fn installed_cli() -> Result<PathBuf, String> {
    static CLI: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CLI.get_or_init(install_cli).clone()
}

fn install_cli() -> Result<PathBuf, String> {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node is not installed ({e})"))?;
    let version = String::from_utf8_lossy(&node.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(format!(
            "heroku@{HEROKU_VERSION} needs node 20 or later, not {version}"
        ));
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("heroku-cli-{HEROKU_VERSION}"));
    let bin = dir.join("node_modules/.bin/heroku");
    if bin.exists() {
        return Ok(bin);
    }
    // Installs beside the final place and renames, so that test binaries run
    // at the same time never see half an install.
    let partial = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)
        .map_err(|e| format!("creating {}: {e}", partial.display()))?;
    let started = Instant::now();
    let output = Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(&partial)
        .arg(format!("heroku@{HEROKU_VERSION}"))
        .args([
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
            "--fetch-retries=1",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("npm is not installed ({e})"))?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("npm error") || l.starts_with("npm ERR!"))
            .take(4)
            .collect();
        return Err(format!(
            "npm could not install heroku@{HEROKU_VERSION} (no registry?): {}",
            if errors.is_empty() {
                common::tail(&stderr, 400)
            } else {
                errors.join("; ")
            }
        ));
    }
    eprintln!(
        "installed heroku@{HEROKU_VERSION} in {:.0?} into {}",
        started.elapsed(),
        dir.display()
    );
    if std::fs::rename(&partial, &dir).is_err() {
        // Another test binary got there first.
        let _ = std::fs::remove_dir_all(&partial);
    }
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("npm installed no {}", bin.display()))
    }
}

/// The Heroku CLI pointed at one server, with a HOME of its own.
struct Heroku {
    bin: PathBuf,
    home: App,
    url: String,
    token: String,
    /// The CA certificate the CLI trusts (`NODE_EXTRA_CA_CERTS`), when it
    /// talks to the server over TLS.
    ca: Option<PathBuf>,
}

impl Heroku {
    /// `None` (and a `skipped:` line) when the CLI cannot be had here.
    fn new(server: &Server) -> Option<Heroku> {
        match installed_cli() {
            Ok(bin) => Some(Heroku {
                bin,
                home: App::new(),
                url: server.url.clone(),
                token: server.token(),
                ca: None,
            }),
            Err(why) => {
                eprintln!("skipped: {why}");
                None
            }
        }
    }

    /// The CLI pointed at the server's `https://` URL, trusting crew's CA
    /// the way `crew server` says to.
    fn over_tls(server: &Server) -> Option<Heroku> {
        let mut heroku = Heroku::new(server)?;
        heroku.url = server.url.replacen("http://", "https://", 1);
        heroku.ca = Some(server.data().join("tls/ca.pem"));
        Some(heroku)
    }

    /// `git ARGS` in `dir` as the CLI's user: its HOME (the credential
    /// helper the CLI put in .gitconfig), the CLI on PATH and its variables.
    fn git(&self, dir: &Path, args: &[&str]) -> (bool, String) {
        let git = self.command(dir, &[]);
        let bin_dir = self.bin.parent().map(Path::to_path_buf).unwrap_or_default();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin_dir];
        dirs.extend(std::env::split_paths(&path));
        let output = Command::new("git")
            .args(args)
            .current_dir(dir)
            .envs(git.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env("PATH", std::env::join_paths(dirs).unwrap_or_default())
            .env("GIT_TERMINAL_PROMPT", "0")
            // Which CA git trusts is the repository's http.sslCAInfo, not
            // the machine's environment (which overrides it).
            .env_remove("GIT_SSL_CAINFO")
            .env_remove("CURL_CA_BUNDLE")
            .stdin(Stdio::null())
            .output()
            .expect("running git");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command.args(args).current_dir(dir).stdin(Stdio::null());
        // Nothing of the user's own Heroku or XDG setup may leak in, and the
        // CLI's config, cache, .netrc and .gitconfig stay in its private HOME.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("HEROKU_") || key.starts_with("XDG_") {
                command.env_remove(&key);
            }
        }
        for key in ["FORCE_COLOR", "NODE_OPTIONS", "DEBUG", "GIT_CONFIG_GLOBAL"] {
            command.env_remove(key);
        }
        command
            .env("HOME", self.home.path())
            .env("HEROKU_HOST", &self.url)
            .env("HEROKU_API_KEY", &self.token)
            // GET /account also asks "particleboard" about delinquency: keep
            // that on the same server instead of heroku.com.
            .env("HEROKU_PARTICLEBOARD_URL", &self.url)
            // No telemetry, update checks or auto-updates: nothing leaves
            // loopback.
            .env("DISABLE_TELEMETRY", "true")
            .env("HEROKU_SKIP_NEW_VERSION_CHECK", "true")
            .env("HEROKU_DISABLE_AUTOUPDATE", "true")
            .env("NO_COLOR", "1")
            .env("COLUMNS", "200");
        match &self.ca {
            Some(ca) => command.env("NODE_EXTRA_CA_CERTS", ca),
            None => command.env_remove("NODE_EXTRA_CA_CERTS"),
        };
        command
    }

    /// `heroku ARGS` in `dir`: whether it succeeded, its stdout and stderr.
    fn run(&self, dir: &Path, args: &[&str]) -> (bool, String, String) {
        let mut cli = Crew::spawn_client(self.command(dir, args));
        let status = cli.wait_exit(COMMAND);
        (status.success(), cli.stdout(), cli.stderr())
    }

    /// `heroku ARGS`, which must succeed; its stdout and stderr together
    /// (progress like `Scaling dynos... done` and warnings go to stderr).
    fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let (out, err) = self.both(dir, args);
        format!("{out}{err}")
    }

    /// `heroku ARGS`, which must succeed; its stdout alone.
    fn stdout(&self, dir: &Path, args: &[&str]) -> String {
        self.both(dir, args).0
    }

    fn both(&self, dir: &Path, args: &[&str]) -> (String, String) {
        let (ok, out, err) = self.run(dir, args);
        assert!(ok, "heroku {args:?} failed:\n{out}\n{err}");
        (out, err)
    }
}

fn assert_has(text: &str, expected: &[&str]) {
    for e in expected {
        assert!(text.contains(e), "missing `{e}` in:\n{text}");
    }
}

/// Pushes `dir`'s main to `app` over crew's smart HTTP, with the token git
/// needs in the repository's own config.
fn push(server: &Server, dir: &Path, app: &str) -> String {
    let url = format!("{}/{app}.git", server.url);
    let header = format!("http.{}/.extraHeader", server.url);
    let bearer = format!("Authorization: Bearer {}", server.token());
    for args in [
        ["remote", "add", "crew", url.as_str()],
        ["config", header.as_str(), bearer.as_str(), "--add"],
    ] {
        let (ok, text) = server.git(dir, &args);
        assert!(ok, "git {args:?}: {text}");
    }
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(ok, "push failed:\n{text}");
    text
}

/// The pid of `dyno` in `crew ps --json`, when it is up.
fn pid_of(server: &Server, dir: &Path, app: &str, dyno: &str) -> Option<u64> {
    let json = server.ok(dir, &["ps", "--json", "-a", app]);
    let dynos: serde_json::Value = serde_json::from_str(&json).ok()?;
    dynos.as_array()?.iter().find_map(|d| {
        (d["name"] == dyno && d["state"] == "up")
            .then(|| d["pid"].as_u64())
            .flatten()
    })
}

/// Waits until `dyno` is up with a pid other than `old`.
fn wait_new_pid(server: &Server, dir: &Path, app: &str, dyno: &str, old: u64) -> u64 {
    let mut now = None;
    let changed = poll_until(DEPLOY, || {
        now = pid_of(server, dir, app, dyno);
        now.is_some_and(|p| p != old)
    });
    assert!(
        changed,
        "{dyno} was not restarted (pid {old}):\n{}",
        server.ok(dir, &["ps", "-a", app])
    );
    now.unwrap_or_default()
}

fn state_of(server: &Server, dir: &Path, app: &str, dyno: &str) -> String {
    let json = server.ok(dir, &["ps", "--json", "-a", app]);
    let dynos: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    dynos
        .as_array()
        .and_then(|all| all.iter().find(|d| d["name"] == dyno))
        .and_then(|d| d["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

#[test]
fn the_heroku_cli_creates_apps_and_manages_config_and_releases() {
    if !have_git() {
        return;
    }
    let server = Server::start();
    let Some(heroku) = Heroku::new(&server) else {
        return;
    };
    let started = Instant::now();
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    let port = server.url.trim_start_matches("http://");

    let out = heroku.ok(dir, &["apps:create", "shop"]);
    assert_has(
        &out,
        &[
            "Creating shop... done",
            &format!(
                "http://shop.localhost:{}/ | https://{port}/shop.git",
                server.router
            ),
        ],
    );
    // Inside a repository it adds its `heroku` remote, and its credential
    // helper went into the private HOME's .gitconfig, not the user's.
    let (_, remotes) = server.git(dir, &["remote", "-v"]);
    assert!(
        remotes.contains(&format!("heroku\thttps://{port}/shop.git")),
        "{remotes}"
    );
    let gitconfig = std::fs::read_to_string(heroku.home.join(".gitconfig")).unwrap_or_default();
    assert!(gitconfig.contains("heroku git:credentials"), "{gitconfig}");
    assert!(server.ok(dir, &["apps"]).contains("shop"));

    let text = push(&server, dir, "shop");
    assert!(text.contains("Released v2"), "{text}");

    let out = heroku.ok(dir, &["apps"]);
    assert_has(&out, &["=== crew@localhost Apps", "shop (local)"]);
    let out = heroku.ok(dir, &["apps:info", "-a", "shop"]);
    assert_has(
        &out,
        &[
            "=== shop",
            &format!("Git URL:        {}/shop.git", server.url),
            &format!("Web URL:        http://shop.localhost:{}/", server.router),
            "Owner:          crew@localhost",
            "Region:         local",
            "Stack:          crew",
        ],
    );

    let out = heroku.ok(dir, &["config", "-a", "shop"]);
    assert!(out.contains("=== shop Config Vars"), "{out}");
    let out = heroku.ok(dir, &["config:set", "FOO=bar", "BAZ=qux", "-a", "shop"]);
    assert_has(
        &out,
        &[
            "Setting FOO, BAZ and restarting shop... done, v3",
            "BAZ: qux",
            "FOO: bar",
        ],
    );
    assert_eq!(
        server.ok(dir, &["config:get", "FOO", "-a", "shop"]).trim(),
        "bar"
    );
    let out = heroku.ok(dir, &["config:unset", "BAZ", "-a", "shop"]);
    assert!(
        out.contains("Unsetting BAZ and restarting shop... done, v4"),
        "{out}"
    );
    assert_eq!(
        server.ok(dir, &["config:get", "BAZ", "-a", "shop"]).trim(),
        ""
    );
    let out = heroku.ok(dir, &["config", "-a", "shop"]);
    assert!(out.contains("FOO: bar") && !out.contains("BAZ"), "{out}");

    let out = heroku.ok(dir, &["releases", "-a", "shop"]);
    assert!(out.contains("=== shop Releases - Current: v4"), "{out}");
    for (version, change) in [
        ("v4", "Remove BAZ config vars"),
        ("v3", "Set BAZ, FOO config vars"),
        ("v2", "Deploy "),
        ("v1", "Initial release"),
    ] {
        let row = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{version} ")))
            .unwrap_or_default();
        assert!(
            row.contains(change) && row.contains("crew@localhost"),
            "{version}:\n{out}"
        );
    }
    // `-n 2` is a `Range: version ..; max=2, order=desc`: one page.
    let out = heroku.ok(dir, &["releases", "-n", "2", "-a", "shop"]);
    assert!(out.contains(" v4 ") && out.contains(" v3 "), "{out}");
    assert!(!out.contains(" v2 "), "{out}");

    let out = heroku.ok(dir, &["releases:info", "-a", "shop"]);
    assert_has(
        &out,
        &[
            "=== Release v4",
            "By:                     crew@localhost",
            "Change:                 Remove BAZ config vars",
            "Eligible for Rollback?: Yes",
            "=== v4 Config vars",
            "FOO: bar",
        ],
    );
    let out = heroku.ok(dir, &["releases:info", "v3", "-a", "shop"]);
    assert_has(&out, &["=== Release v3", "BAZ: qux", "FOO: bar"]);

    // Without a version, back to the one before the current.
    let out = heroku.ok(dir, &["rollback", "-a", "shop"]);
    assert_has(
        &out,
        &[
            "Rolling back shop to v3... done, v5",
            "To undo, run: heroku rollback v4",
        ],
    );
    assert_eq!(
        server.ok(dir, &["config:get", "BAZ", "-a", "shop"]).trim(),
        "qux"
    );
    let out = heroku.ok(dir, &["rollback", "v2", "-a", "shop"]);
    assert!(out.contains("Rolling back shop to v2... done, v6"), "{out}");
    assert_eq!(
        server.ok(dir, &["config:get", "FOO", "-a", "shop"]).trim(),
        ""
    );
    let releases = server.ok(dir, &["releases", "-a", "shop"]);
    assert_has(&releases, &["Rollback to v3", "Rollback to v2"]);

    // Errors come back as Heroku's CLI shows them.
    let (ok, _, err) = heroku.run(dir, &["apps:info", "-a", "nope"]);
    assert!(!ok, "{err}");
    assert_has(&err, &["Error ID: not_found"]);
    eprintln!(
        "apps, config and releases through the Heroku CLI took {:.0?}",
        started.elapsed()
    );
}

#[test]
fn the_heroku_cli_scales_restarts_stops_reads_logs_and_runs_one_offs() {
    if !have_git() {
        return;
    }
    let server = Server::start();
    let Some(heroku) = Heroku::new(&server) else {
        return;
    };
    let started = Instant::now();
    let app = repo(
        &server,
        "web: python3 -m http.server $PORT\nworker: while true; do echo \"tick $DYNO\"; sleep 0.3; done\n",
    );
    let dir = app.path();
    // crew's own apps:create adds a `crew` remote that carries the token.
    server.ok(dir, &["apps:create", "demo"]);
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(ok, "push failed:\n{text}");
    server.wait_up(dir, "demo", 1);

    let out = heroku.ok(dir, &["ps", "-a", "demo"]);
    assert_has(
        &out,
        &[
            "=== web (standard-1x): python3 -m http.server $PORT (1)",
            "web.1: up ",
        ],
    );

    let out = heroku.ok(dir, &["ps:scale", "web=2", "worker+1", "-a", "demo"]);
    assert!(
        out.contains(
            "Scaling dynos... done, now running web at 2:standard-1x, worker at 1:standard-1x"
        ),
        "{out}"
    );
    server.wait_up(dir, "demo", 3);
    let out = heroku.stdout(dir, &["ps:scale", "-a", "demo"]);
    assert_eq!(out.trim(), "web=2:standard-1x worker=1:standard-1x");
    let out = heroku.ok(dir, &["ps", "-a", "demo"]);
    assert_has(
        &out,
        &[
            "=== web (standard-1x): python3 -m http.server $PORT (2)",
            "web.1: up ",
            "web.2: up ",
            "=== worker (standard-1x): while true; do echo \"tick $DYNO\"; sleep 0.3; done (1)",
            "worker.1: up ",
        ],
    );

    // Logs: the last lines, by type and source, and following them.
    let seen = poll_until(DEPLOY, || {
        heroku
            .ok(dir, &["logs", "-n", "50", "-a", "demo"])
            .contains("app[worker.1]: tick worker.1")
    });
    assert!(seen, "{}", heroku.ok(dir, &["logs", "-a", "demo"]));
    let out = heroku.stdout(dir, &["logs", "-n", "5", "-p", "worker", "-a", "demo"]);
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(out.lines().all(|l| l.contains("[worker.1]:")), "{out}");
    let out = heroku.ok(dir, &["logs", "-n", "200", "-s", "heroku", "-a", "demo"]);
    assert_has(
        &out,
        &[
            "crew[api]: Scaled to",
            "crew[web.2]: State changed from starting to up",
        ],
    );
    assert!(!out.contains("app[worker.1]"), "{out}");
    let tail = Crew::spawn_client(heroku.command(
        dir,
        &["logs", "--tail", "-n", "1", "-p", "worker", "-a", "demo"],
    ));
    tail.wait_until("new lines while tailing", DEPLOY, |out| out.lines >= 3);
    let tailed = tail.stdout();
    let ticks = tailed
        .lines()
        .filter(|l| l.contains("app[worker.1]: tick worker.1"))
        .count();
    assert!(ticks >= 2, "{tailed}");
    drop(tail);

    // Restarts: one dyno, a type, everything.
    let web1 = pid_of(&server, dir, "demo", "web.1").unwrap_or_default();
    let web2 = pid_of(&server, dir, "demo", "web.2").unwrap_or_default();
    let worker = pid_of(&server, dir, "demo", "worker.1").unwrap_or_default();
    let out = heroku.ok(dir, &["ps:restart", "web.1", "-a", "demo"]);
    assert!(
        out.contains("Restarting dyno web.1 on demo... done"),
        "{out}"
    );
    let web1 = wait_new_pid(&server, dir, "demo", "web.1", web1);
    assert_eq!(
        pid_of(&server, dir, "demo", "web.2"),
        Some(web2),
        "web.2 was touched"
    );
    let out = heroku.ok(dir, &["ps:restart", "web", "-a", "demo"]);
    assert!(out.contains("Restarting dyno web on demo... done"), "{out}");
    let web1 = wait_new_pid(&server, dir, "demo", "web.1", web1);
    let web2 = wait_new_pid(&server, dir, "demo", "web.2", web2);
    assert_eq!(
        pid_of(&server, dir, "demo", "worker.1"),
        Some(worker),
        "worker.1 was touched"
    );
    let out = heroku.ok(dir, &["ps:restart", "-p", "worker", "-a", "demo"]);
    assert!(
        out.contains("Restarting all worker dynos on demo... done"),
        "{out}"
    );
    let worker = wait_new_pid(&server, dir, "demo", "worker.1", worker);
    let out = heroku.ok(dir, &["ps:restart", "-a", "demo"]);
    assert!(
        out.contains("Restarting all dynos on demo... done"),
        "{out}"
    );
    wait_new_pid(&server, dir, "demo", "web.1", web1);
    wait_new_pid(&server, dir, "demo", "web.2", web2);
    wait_new_pid(&server, dir, "demo", "worker.1", worker);

    // Stops: one dyno, then a type; the formation keeps its counts.
    let out = heroku.ok(dir, &["ps:stop", "web.1", "-a", "demo"]);
    assert!(out.contains("Stopping dyno web.1 on demo... done"), "{out}");
    assert!(
        poll_until(DEPLOY, || state_of(&server, dir, "demo", "web.1") == "down"),
        "{}",
        server.ok(dir, &["ps", "-a", "demo"])
    );
    assert_eq!(state_of(&server, dir, "demo", "web.2"), "up");
    let out = heroku.ok(dir, &["ps:stop", "-p", "worker", "-a", "demo"]);
    assert!(
        out.contains("Stopping all worker dynos on demo... done"),
        "{out}"
    );
    assert!(poll_until(DEPLOY, || state_of(
        &server, dir, "demo", "worker.1"
    ) == "down"));
    let out = heroku.ok(dir, &["ps", "-a", "demo"]);
    assert_has(&out, &["web.1: down ", "web.2: up ", "worker.1: down "]);
    assert_eq!(
        server.ok(dir, &["scale", "-a", "demo"]).trim(),
        "web=2 worker=1"
    );

    // One-offs: detached works, with its output in the log; attached too.
    let out = heroku.ok(
        dir,
        &[
            "run:detached",
            "-e",
            "GREETING=hello",
            "-a",
            "demo",
            "echo $GREETING from $DYNO",
        ],
    );
    let run = out
        .split_whitespace()
        .find(|w| w.starts_with("run."))
        .map(|w| w.trim_end_matches(','))
        .unwrap_or_default()
        .to_string();
    assert_has(
        &out,
        &[
            &format!("Running echo $GREETING from $DYNO on demo... done, {run}"),
            &format!("Run heroku logs --app demo --dyno {run} to view the output."),
        ],
    );
    let seen = poll_until(DEPLOY, || {
        heroku
            .ok(dir, &["logs", "--dyno", &run, "-a", "demo"])
            .contains(&format!("app[{run}]: hello from {run}"))
    });
    assert!(
        seen,
        "{}",
        heroku.ok(dir, &["logs", "-n", "50", "-a", "demo"])
    );
    // A running one-off stops when asked, and ends complete.
    let out = heroku.ok(dir, &["run:detached", "-a", "demo", "sleep 1000"]);
    let sleeper = out
        .split_whitespace()
        .find(|w| w.starts_with("run."))
        .map(|w| w.trim_end_matches(','))
        .unwrap_or_default()
        .to_string();
    assert!(
        poll_until(DEPLOY, || state_of(&server, dir, "demo", &sleeper) == "up"),
        "{}",
        server.ok(dir, &["ps", "-a", "demo"])
    );
    let out = heroku.ok(dir, &["ps:stop", &sleeper, "-a", "demo"]);
    assert!(out.contains(&format!("Stopping dyno {sleeper}")), "{out}");
    assert!(
        poll_until(DEPLOY, || state_of(&server, dir, "demo", &sleeper) != "up"),
        "{}",
        server.ok(dir, &["ps", "-a", "demo"])
    );
    let seen = poll_until(DEPLOY, || {
        heroku
            .ok(dir, &["logs", "--dyno", &sleeper, "-a", "demo"])
            .contains(&format!(
                "crew[{sleeper}]: State changed from up to complete"
            ))
    });
    assert!(
        seen,
        "{}",
        heroku.ok(dir, &["logs", "-n", "50", "-a", "demo"])
    );
    // Attached, the rendezvous is TLS even when the API is asked over plain
    // HTTP: it works once the CLI trusts crew's CA.
    let mut command = heroku.command(dir, &["run", "-a", "demo", "echo attached"]);
    command.env("NODE_EXTRA_CA_CERTS", server.data().join("tls/ca.pem"));
    let mut cli = Crew::spawn_client(command);
    let status = cli.wait_exit(COMMAND);
    assert!(
        status.success() && cli.stdout().contains("attached"),
        "{}{}",
        cli.stdout(),
        cli.stderr()
    );
    eprintln!(
        "ps, logs and run through the Heroku CLI took {:.0?}",
        started.elapsed()
    );
}

/// `heroku ps:type` and `heroku ps:resize` send a size without a quantity;
/// a new size restarts that type's dynos and no other.
#[test]
fn the_heroku_cli_resizes_one_type_and_only_that_type_restarts() {
    if !have_git() {
        return;
    }
    let server = Server::start();
    let Some(heroku) = Heroku::new(&server) else {
        return;
    };
    let app = repo(
        &server,
        "web: python3 -m http.server $PORT\nworker: while true; do sleep 1; done\n",
    );
    let dir = app.path();
    server.ok(dir, &["apps:create", "resize"]);
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(ok, "push failed:\n{text}");
    server.ok(dir, &["scale", "web=1", "worker=1"]);
    server.wait_up(dir, "resize", 2);
    let web = pid_of(&server, dir, "resize", "web.1").unwrap_or_default();
    let worker = pid_of(&server, dir, "resize", "worker.1").unwrap_or_default();

    heroku.ok(dir, &["ps:type", "web=standard-2x", "-a", "resize"]);
    let web = wait_new_pid(&server, dir, "resize", "web.1", web);
    server.wait_up(dir, "resize", 2);
    assert_eq!(
        pid_of(&server, dir, "resize", "worker.1"),
        Some(worker),
        "resizing web restarted the worker"
    );

    heroku.ok(dir, &["ps:resize", "worker=2X", "-a", "resize"]);
    wait_new_pid(&server, dir, "resize", "worker.1", worker);
    server.wait_up(dir, "resize", 2);
    assert_eq!(
        pid_of(&server, dir, "resize", "web.1"),
        Some(web),
        "resizing the worker restarted web"
    );
    let out = heroku.stdout(dir, &["ps:scale", "-a", "resize"]);
    assert_eq!(out.trim(), "web=1:standard-2x worker=1:standard-2x");
}

#[test]
fn git_push_heroku_main_works_over_https_with_the_clis_credential_helper() {
    if !have_git() {
        return;
    }
    let server = Server::start();
    let Some(heroku) = Heroku::over_tls(&server) else {
        return;
    };
    let out = server.output();
    let ca = server.data().join("tls/ca.pem");
    assert_has(
        &out,
        &[
            "the API answers TLS on the same port: https://",
            &format!("export NODE_EXTRA_CA_CERTS={}", ca.display()),
            &format!(".sslCAInfo {}", ca.display()),
        ],
    );
    let key = std::fs::metadata(server.data().join("tls/ca-key.pem")).expect("the CA key");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    let port = server.url.trim_start_matches("http://");

    // The whole API over TLS: the CLI verifies crew's certificate against
    // the CA it was told to trust.
    let out = heroku.ok(dir, &["apps:create", "shop"]);
    assert!(out.contains("Creating shop... done"), "{out}");
    let (_, remotes) = heroku.git(dir, &["remote", "-v"]);
    let remote = format!("https://{port}/shop.git");
    assert!(remotes.contains(&format!("heroku\t{remote}")), "{remotes}");

    // Without trusting the CA, git refuses the certificate.
    let (ok, text) = heroku.git(dir, &["ls-remote", "heroku"]);
    assert!(!ok, "git trusted an unknown CA:\n{text}");

    // `crew git:remote` makes the repository trust crew's CA for the
    // server's https URL (http.URL.sslCAInfo); then the push goes through
    // with the CLI's credential helper (Basic, the token as password).
    let out = server.ok(dir, &["git:remote", "-a", "shop"]);
    assert!(out.contains("trusts crew's CA"), "{out}");
    let (_, config) = heroku.git(dir, &["config", "--local", "--list"]);
    assert!(
        config.contains(&format!("http.https://{port}/.sslcainfo={}", ca.display())),
        "{config}"
    );
    let (ok, text) = heroku.git(dir, &["push", "heroku", "main"]);
    assert!(ok, "git push heroku main failed:\n{text}");
    assert!(text.contains("Released v2"), "{text}");

    // Plain HTTP keeps working on the same port: `git push crew main`.
    let (ok, text) = server.git(dir, &["commit", "--allow-empty", "-qm", "second"]);
    assert!(ok, "{text}");
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(ok && text.contains("Released v3"), "{text}");

    // A TLS client without the token is refused like a plain one.
    let (ok, text) = heroku.git(
        dir,
        &[
            "-c",
            "credential.helper=",
            "ls-remote",
            &format!("https://{port}/shop.git"),
        ],
    );
    assert!(
        !ok,
        "an https request without the token was served:\n{text}"
    );
}

/// Whether `name` is `adjective-noun-NNNN` and fits crew's app-name rule.
fn heroku_style(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() == 3
        && name.len() <= 30
        && parts[..2]
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[2].len() == 4
        && parts[2].bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn heroku_create_without_a_name_makes_a_heroku_style_one() {
    if !have_git() {
        return;
    }
    let server = Server::start();
    let Some(heroku) = Heroku::over_tls(&server) else {
        return;
    };
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();

    let out = heroku.ok(dir, &["create"]);
    let made = out
        .split_whitespace()
        .find(|w| heroku_style(w))
        .unwrap_or_else(|| panic!("no new app name in:\n{out}"))
        .to_string();
    assert!(out.contains("Creating app... done"), "{out}");
    let (_, remotes) = heroku.git(dir, &["remote", "-v"]);
    assert!(remotes.contains(&format!("/{made}.git")), "{remotes}");

    // The one stack and region, and no add-ons.
    let out = heroku.ok(dir, &["stack", "-a", &made]);
    assert_has(&out, &["Available Stacks", "* crew"]);
    let out = heroku.ok(dir, &["regions"]);
    assert_has(&out, &["local", "This crew server", "Common Runtime"]);
    let out = heroku.ok(dir, &["addons", "-a", &made]);
    assert!(out.contains("No add-ons"), "{out}");

    // `crew apps:create` too, and never a name in use.
    let mut names = vec![made];
    for _ in 0..3 {
        let out = server.ok(dir, &["apps:create"]);
        let name = out
            .lines()
            .find_map(|l| l.strip_prefix("Created "))
            .unwrap_or_else(|| panic!("no `Created NAME` in:\n{out}"))
            .trim()
            .to_string();
        assert!(heroku_style(&name), "{name}");
        assert!(!names.contains(&name), "{name} made twice");
        names.push(name);
    }
    let apps = server.ok(dir, &["apps"]);
    for name in &names {
        assert!(apps.contains(name.as_str()), "{name} missing in:\n{apps}");
    }
}

#[test]
fn heroku_run_attaches_through_the_rendezvous() {
    if !have_git() {
        return;
    }
    let server = Server::start();
    let Some(heroku) = Heroku::over_tls(&server) else {
        return;
    };
    let app = repo(
        &server,
        "worker: while true; do sleep 1; done\ngreet: echo greeting-from-the-procfile\n",
    );
    let dir = app.path();
    heroku.ok(dir, &["apps:create", "shop"]);
    push(&server, dir, "shop");

    let out = heroku.stdout(dir, &["run", "-a", "shop", "echo", "hello-from-the-dyno"]);
    assert!(out.contains("hello-from-the-dyno"), "{out}");
    // A first word naming a process type runs that type's command.
    let out = heroku.stdout(dir, &["run", "-a", "shop", "greet"]);
    assert!(out.contains("greeting-from-the-procfile"), "{out}");

    // -x: the dyno's exit code is the CLI's.
    let (ok, out, err) = heroku.run(
        dir,
        &["run", "-x", "-a", "shop", "--", "sh", "-c", "exit 3"],
    );
    assert!(!ok, "{out}{err}");
    let mut cli = Crew::spawn_client(heroku.command(
        dir,
        &["run", "-x", "-a", "shop", "--", "sh", "-c", "exit 3"],
    ));
    assert_eq!(cli.wait_exit(COMMAND).code(), Some(3), "{}", cli.stderr());
    let (ok, out, err) = heroku.run(dir, &["run", "-x", "-a", "shop", "true"]);
    assert!(ok, "{out}{err}");

    // Without a terminal, the end of stdin is the dyno's end of input.
    let mut command = heroku.command(dir, &["run", "--no-tty", "-a", "shop", "cat"]);
    command.stdin(Stdio::piped());
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running heroku");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hi\n").expect("writing stdin");
    }
    let deadline = Instant::now() + COMMAND;
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("heroku's output");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && out.contains("hi"),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A tmux server of the test's own, killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut tmux = Command::new("tmux");
        tmux.arg("-S").arg(&self.socket);
        tmux
    }

    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "cli"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn keys(&self, keys: &[&str]) {
        let status = self
            .command()
            .args(["send-keys", "-t", "cli"])
            .args(keys)
            .status();
        assert!(status.is_ok_and(|s| s.success()), "tmux send-keys {keys:?}");
    }

    fn wait_screen(&self, what: &str) -> String {
        let mut screen = String::new();
        let seen = poll_until(COMMAND, || {
            screen = self.screen();
            screen.contains(what)
        });
        assert!(seen, "`{what}` never showed:\n{screen}");
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .command()
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn heroku_run_bash_is_interactive_in_a_terminal() {
    if !have_git() {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: no tmux");
        return;
    }
    let server = Server::start();
    let Some(heroku) = Heroku::over_tls(&server) else {
        return;
    };
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    heroku.ok(dir, &["apps:create", "shop"]);
    push(&server, dir, "shop");

    let tmux = Tmux {
        socket: heroku.home.join("tmux.sock"),
    };
    let cli = heroku.command(dir, &["run", "-a", "shop", "bash"]);
    // tmux runs the CLI in a terminal of 100x30 with this environment.
    let mut start = tmux.command();
    start
        .args(["new-session", "-d", "-s", "cli", "-x", "100", "-y", "30"])
        .current_dir(dir)
        .envs(cli.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("COLUMNS")
        .env_remove("TMUX")
        .env("TERM", "xterm")
        .arg(format!(
            "{} run -a shop bash; sleep 600",
            heroku.bin.display()
        ));
    let status = start.status().expect("running tmux");
    assert!(status.success(), "tmux new-session failed");

    tmux.wait_screen("up, run.");
    // Typed keys reach the dyno's shell, and its terminal has the CLI's size.
    tmux.keys(&["echo $((6*7)) $(stty size)", "Enter"]);
    tmux.wait_screen("42 30 100");
    // Ctrl-C interrupts what runs in the dyno, not the session.
    tmux.keys(&["sleep 600", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.keys(&["C-c"]);
    tmux.keys(&["echo still-$((1+1))", "Enter"]);
    tmux.wait_screen("still-2");
    // `exit` ends the dyno and the CLI.
    tmux.keys(&["exit", "Enter"]);
    let ended = poll_until(COMMAND, || {
        let ps = server.ok(dir, &["ps", "--json", "-a", "shop"]);
        !ps.contains("\"run.")
            || ps
                .split("\"run.")
                .skip(1)
                .all(|d| !d.contains("\"up\"") && !d.contains("\"starting\""))
    });
    assert!(ended, "the one-off still runs:\n{}", tmux.screen());
}
