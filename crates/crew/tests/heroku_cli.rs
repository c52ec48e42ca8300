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
use platform::{DEPLOY, Server, TestServer, http_get, repo};

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
            // `buildpacks:set heroku/python` asks the buildpack registry for
            // the name's URL: crew answers for its built-in ones.
            .env(
                "HEROKU_BUILDPACK_REGISTRY_URL",
                format!("{}/buildpack-registry", self.url),
            )
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
    server.push(dir)
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
    let Some(server) = TestServer::new().start() else {
        return;
    };
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
    let Some(server) = TestServer::new().start() else {
        return;
    };
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
    server.deploy(dir, "demo");
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
    let web1 = wait_new_pid(&server, dir, "demo", "web.1", web1);
    let web2 = wait_new_pid(&server, dir, "demo", "web.2", web2);
    let worker = wait_new_pid(&server, dir, "demo", "worker.1", worker);

    // Stops (`ps:stop`, and `ps:kill`, the same command): as on Heroku, a
    // stopped formation dyno is started again per the formation, whose
    // counts stay as they were.
    let out = heroku.ok(dir, &["ps:stop", "web.1", "-a", "demo"]);
    assert!(out.contains("Stopping dyno web.1 on demo... done"), "{out}");
    wait_new_pid(&server, dir, "demo", "web.1", web1);
    assert_eq!(pid_of(&server, dir, "demo", "web.2"), Some(web2));
    let out = heroku.ok(dir, &["ps:kill", "web.2", "-a", "demo"]);
    assert!(out.contains("Stopping dyno web.2 on demo... done"), "{out}");
    wait_new_pid(&server, dir, "demo", "web.2", web2);
    let out = heroku.ok(dir, &["ps:kill", "-p", "worker", "-a", "demo"]);
    assert!(
        out.contains("Stopping all worker dynos on demo... done"),
        "{out}"
    );
    wait_new_pid(&server, dir, "demo", "worker.1", worker);
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
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let Some(heroku) = Heroku::new(&server) else {
        return;
    };
    let app = repo(
        &server,
        "web: python3 -m http.server $PORT\nworker: while true; do sleep 1; done\n",
    );
    let dir = app.path();
    server.deploy(dir, "resize");
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
    let Some(server) = TestServer::new().start() else {
        return;
    };
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
    let Some(server) = TestServer::new().start() else {
        return;
    };
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
    let Some(server) = TestServer::new().start() else {
        return;
    };
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
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: no tmux");
        return;
    }
    let Some(server) = TestServer::new().start() else {
        return;
    };
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

/// The first number of the `Uid:` line of `/proc/PID/status` on the host.
fn host_uid(pid: u64) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Host processes whose command line is `line` (arguments joined by spaces).
fn host_processes_running(line: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .is_ok_and(|c| c.trim_end() == line)
        })
        .collect()
}

#[test]
fn heroku_run_inside_enters_the_running_dyno_behind_its_walls() {
    let Some(server) = TestServer::new()
        .needs_root("run:inside's isolated dynos")
        .start()
    else {
        return;
    };
    let Some(heroku) = Heroku::over_tls(&server) else {
        return;
    };
    let shop = repo(
        &server,
        "worker: while true; do sleep 1; done # shop-worker-marker\n",
    );
    let other = repo(
        &server,
        "worker: while true; do sleep 1; done # other-app-marker\n",
    );
    let dir = shop.path();
    heroku.ok(dir, &["apps:create", "shop"]);
    push(&server, dir, "shop");
    heroku.ok(other.path(), &["apps:create", "other"]);
    push(&server, other.path(), "other");
    server.ok(dir, &["scale", "-a", "shop", "worker=1"]);
    server.ok(other.path(), &["scale", "-a", "other", "worker=1"]);
    server.wait_up(dir, "shop", 1);
    server.wait_up(other.path(), "other", 1);
    let init = pid_of(&server, dir, "shop", "worker.1").expect("worker.1's pid");
    let app_uid = host_uid(init).expect("the dyno's uid");
    assert_ne!(app_uid, 0);

    // `ps:wait` finishes: every dyno runs the latest release.
    let out = heroku.ok(dir, &["ps:wait", "-a", "shop"]);
    assert!(!out.contains("Error"), "{out}");
    heroku.ok(dir, &["ps:wait", "-a", "shop", "--type", "worker"]);
    heroku.ok(dir, &["ps:wait", "-a", "shop", "--with-run"]);
    server.ok(dir, &["ps:wait", "-a", "shop", "--type", "worker"]);

    // Inside the dyno: its hostname, environment, user, seccomp, its
    // processes and no other app's.
    let probe = "echo host=$(hostname) dyno=$DYNO uid=$(id -u) gid=$(id -g); \
                 grep -E '^(Seccomp|CapBnd|CapEff):' /proc/self/status; \
                 echo pwd=$(pwd); cat /proc/[0-9]*/cmdline";
    let out = heroku.stdout(
        dir,
        &[
            "run:inside",
            "worker.1",
            "-a",
            "shop",
            "-x",
            "--",
            "sh",
            "-c",
            probe,
        ],
    );
    assert_has(
        &out,
        &[
            "host=worker.1 dyno=worker.1",
            &format!("uid={app_uid} "),
            "pwd=/app",
            "shop-worker-marker",
        ],
    );
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("Seccomp:"), "2", "{out}");
    assert_eq!(field("CapBnd:"), "0000000000000000", "{out}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{out}");
    assert!(
        !out.contains("other-app-marker"),
        "another app seen:\n{out}"
    );
    assert!(!out.contains("crew server"), "the host seen:\n{out}");

    // The exit code comes back with -x.
    let mut cli = Crew::spawn_client(heroku.command(
        dir,
        &[
            "run:inside",
            "worker.1",
            "-a",
            "shop",
            "-x",
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
    ));
    assert_eq!(cli.wait_exit(COMMAND).code(), Some(3), "{}", cli.stderr());

    // crew's own client too, with the request's variables over the dyno's.
    let (ok, out, err) = server.cli(
        dir,
        &[
            "run:inside",
            "-a",
            "shop",
            "--env-var",
            "EXTRA=given",
            "worker.1",
            "echo $EXTRA $DYNO",
        ],
    );
    assert!(ok && out.contains("given worker.1"), "{out}{err}");

    // A missing dyno is a clear error, through either client.
    let (ok, out, err) = heroku.run(dir, &["run:inside", "worker.7", "-a", "shop", "true"]);
    assert!(
        !ok && format!("{out}{err}").contains("worker.7"),
        "{out}{err}"
    );
    let (ok, _, err) = server.cli(dir, &["run:inside", "-a", "shop", "web.1", "true"]);
    assert!(!ok && err.contains("web.1"), "{err}");

    // It runs as the app's user and lives in the dyno: stopping the dyno
    // (`ps:kill`) ends it, nothing of it is left on the host, and the
    // formation starts the dyno again.
    let mut inside = Crew::spawn_client(heroku.command(
        dir,
        &[
            "run:inside",
            "worker.1",
            "-a",
            "shop",
            "--",
            "sh",
            "-c",
            "echo started; exec sleep 6543",
        ],
    ));
    inside.wait_for("started", COMMAND);
    let sleepers = host_processes_running("sleep 6543");
    assert!(!sleepers.is_empty());
    for pid in &sleepers {
        assert_eq!(host_uid(u64::from(*pid)), Some(app_uid));
    }
    heroku.ok(dir, &["ps:kill", "worker.1", "-a", "shop"]);
    inside.wait_exit(COMMAND);
    assert!(
        poll_until(COMMAND, || host_processes_running("sleep 6543").is_empty()),
        "run:inside outlived its dyno"
    );
    wait_new_pid(&server, dir, "shop", "worker.1", init);
}

/// `crew ARGS` against `url`, with `home` as HOME, `extra` in the
/// environment and none of the machine's own CA settings.
fn crew_at(url: &str, token: &str, home: &Path, extra: &[(&str, &Path)]) -> Command {
    let mut command = Command::new(common::CREW);
    command
        .current_dir(home)
        .stdin(Stdio::null())
        .env("HOME", home)
        .env("CREW_API_URL", url)
        .env("CREW_API_KEY", token);
    for key in ["CREW_CA", "CREW_CA_CERT", "SSL_CERT_FILE"] {
        command.env_remove(key);
    }
    for (key, value) in extra {
        command.env(key, value);
    }
    command
}

fn outcome(mut command: Command, args: &[&str]) -> (bool, String) {
    let output = command.args(args).output().expect("running crew");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (output.status.success(), text)
}

#[test]
fn crews_own_client_speaks_https_and_refuses_a_ca_that_did_not_sign() {
    let server = Server::start();
    let https = server.url.replacen("http://", "https://", 1);
    let token = server.token();
    let ca = server.data().join("tls/ca.pem");
    let elsewhere = App::new();
    let other_ca = elsewhere.join("other-ca.pem");
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()])
        .expect("a certificate of another CA");
    std::fs::write(&other_ca, other.cert.pem()).expect("writing the other CA");

    // CREW_CA names the server's CA: https works, from another machine's
    // point of view (a HOME that knows no server).
    let (ok, text) = outcome(
        crew_at(&https, &token, elsewhere.path(), &[("CREW_CA", &ca)]),
        &["apps:create", "secure"],
    );
    assert!(ok, "{text}");
    let (ok, text) = outcome(
        crew_at(&https, &token, elsewhere.path(), &[("CREW_CA", &ca)]),
        &["apps"],
    );
    assert!(ok && text.contains("secure"), "{text}");
    // SSL_CERT_FILE too.
    let (ok, text) = outcome(
        crew_at(&https, &token, elsewhere.path(), &[("SSL_CERT_FILE", &ca)]),
        &["apps:info", "-a", "secure"],
    );
    assert!(ok && text.contains("secure"), "{text}");
    // On the server's own machine (its HOME names its data dir), its CA is
    // trusted with nothing set.
    let (ok, text) = outcome(crew_at(&https, &token, server.home.path(), &[]), &["apps"]);
    assert!(ok && text.contains("secure"), "{text}");

    // A CA that did not sign the server's certificate: a clear error, and
    // nothing sent in plain HTTP instead.
    let (ok, text) = outcome(
        crew_at(&https, &token, elsewhere.path(), &[("CREW_CA", &other_ca)]),
        &["apps:create", "downgraded"],
    );
    assert!(!ok, "a CA that did not sign was trusted:\n{text}");
    assert_has(&text, &["TLS", "CREW_CA"]);
    // An explicit CA is the only one trusted, even on the server's machine.
    let (ok, text) = outcome(
        crew_at(
            &https,
            &token,
            server.home.path(),
            &[("CREW_CA", &other_ca)],
        ),
        &["apps"],
    );
    assert!(!ok, "{text}");
    let (ok, text) = outcome(
        crew_at(&https, &token, elsewhere.path(), &[("CREW_CA", &ca)]),
        &["apps"],
    );
    assert!(ok && !text.contains("downgraded"), "{text}");
    // No CA at all (a HOME that knows no server, no bundle named).
    let missing = elsewhere.join("missing.pem");
    let (ok, text) = outcome(
        crew_at(&https, &token, elsewhere.path(), &[("CREW_CA", &missing)]),
        &["apps"],
    );
    assert!(!ok && text.contains("missing.pem"), "{text}");
}

#[test]
fn heroku_run_inside_bash_gets_a_terminal_from_the_dynos_devpts() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: no tmux");
        return;
    }
    let Some(server) = TestServer::new()
        .needs_root("run:inside's isolated dynos")
        .start()
    else {
        return;
    };
    let Some(heroku) = Heroku::over_tls(&server) else {
        return;
    };
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    heroku.ok(dir, &["apps:create", "shop"]);
    push(&server, dir, "shop");
    server.ok(dir, &["scale", "-a", "shop", "worker=1"]);
    server.wait_up(dir, "shop", 1);

    let tmux = Tmux {
        socket: heroku.home.join("tmux.sock"),
    };
    let cli = heroku.command(dir, &[]);
    let mut start = tmux.command();
    start
        .args(["new-session", "-d", "-s", "cli", "-x", "100", "-y", "30"])
        .current_dir(dir)
        .envs(cli.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("COLUMNS")
        .env_remove("TMUX")
        .env("TERM", "xterm")
        .arg(format!(
            "{} run:inside worker.1 -a shop bash; echo cli-ended; sleep 600",
            heroku.bin.display()
        ));
    let status = start.status().expect("running tmux");
    assert!(status.success(), "tmux new-session failed");
    // The terminal is one of the dyno's own devpts (its first is /dev/pts/0),
    // sized like the CLI's, and a controlling terminal (Ctrl-C works).
    tmux.keys(&["echo in-$(hostname) $(tty) $((6*7)) $(stty size)", "Enter"]);
    tmux.wait_screen("in-worker.1 /dev/pts/0 42 30 100");
    tmux.keys(&["sleep 600", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.keys(&["C-c"]);
    tmux.keys(&["echo still-$((1+1))", "Enter"]);
    tmux.wait_screen("still-2");
    tmux.keys(&["exit", "Enter"]);
    tmux.wait_screen("cli-ended");
    assert_eq!(state_of(&server, dir, "shop", "worker.1"), "up");
}

#[test]
fn run_inside_is_refused_clearly_where_dynos_are_not_isolated() {
    let Some(server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    server.deploy(dir, "plain");
    server.ok(dir, &["scale", "-a", "plain", "worker=1"]);
    server.wait_up(dir, "plain", 1);
    let (ok, out, err) = server.cli(dir, &["run:inside", "-a", "plain", "worker.1", "true"]);
    assert!(!ok, "{out}{err}");
    assert!(err.contains("without isolation"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(state_of(&server, dir, "plain", "worker.1"), "up");
}

/// One request to the API on a new connection, with the token when given:
/// the status and the body.
fn api(server: &Server, method: &str, path: &str, token: bool, body: &str) -> (u16, String) {
    let bearer = format!("Bearer {}", server.token());
    let mut headers = vec![("Content-Type", "application/json")];
    if token {
        headers.push(("Authorization", bearer.as_str()));
    }
    let response = server.api_request(method, path, &headers, body);
    (response.status, response.body().to_string())
}

#[test]
fn heroku_apps_rename_keeps_the_data_and_moves_the_remote() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let Some(heroku) = Heroku::over_tls(&server) else {
        return;
    };
    let app = repo(&server, "web: python3 -m http.server $PORT\n");
    let dir = app.path();
    let port = server.url.trim_start_matches("http://");
    heroku.ok(dir, &["apps:create", "shop"]);
    // The repository trusts crew's CA (and gets a `crew` remote).
    server.ok(dir, &["git:remote", "-a", "shop"]);
    let (ok, text) = heroku.git(dir, &["push", "heroku", "main"]);
    assert!(ok && text.contains("Released v2"), "{text}");
    heroku.ok(dir, &["config:set", "FOO=bar", "-a", "shop"]);
    heroku.ok(dir, &["domains:add", "www.shop.test", "-a", "shop"]);
    server.wait_up(dir, "shop", 1);
    assert_eq!(http_get(server.router, "shop.localhost", "/", &[]).0, 200);

    let out = heroku.ok(dir, &["apps:rename", "store", "-a", "shop"]);
    assert_has(
        &out,
        &[
            "Renaming shop to store... done",
            &format!(
                "http://store.localhost:{}/ | https://{port}/store.git",
                server.router
            ),
            "Git remote heroku updated",
        ],
    );
    let (_, remotes) = heroku.git(dir, &["remote", "-v"]);
    assert!(
        remotes.contains(&format!("heroku\thttps://{port}/store.git")),
        "{remotes}"
    );

    // Everything went with it: releases, config, domains, the log.
    let out = heroku.ok(dir, &["releases", "-a", "store"]);
    assert_has(
        &out,
        &["=== store Releases - Current: v3", "Set FOO config vars"],
    );
    assert_eq!(
        server.ok(dir, &["config:get", "FOO", "-a", "store"]).trim(),
        "bar"
    );
    assert!(
        heroku
            .ok(dir, &["domains", "-a", "store"])
            .contains("www.shop.test")
    );
    let log = heroku.ok(dir, &["logs", "-n", "200", "-a", "store"]);
    assert_has(
        &log,
        &[
            "crew[api]: Deploy ",
            "crew[api]: Renamed from shop to store",
        ],
    );
    // Its dynos run again under the new name, and the router follows.
    server.wait_up(dir, "store", 1);
    assert_eq!(http_get(server.router, "store.localhost", "/", &[]).0, 200);
    assert_eq!(http_get(server.router, "www.shop.test", "/", &[]).0, 200);
    assert_eq!(http_get(server.router, "shop.localhost", "/", &[]).0, 404);

    // The repository moved with its hook: the next push builds `store`.
    let (ok, text) = server.git(dir, &["commit", "--allow-empty", "-qm", "again"]);
    assert!(ok, "{text}");
    let (ok, text) = heroku.git(dir, &["push", "heroku", "main"]);
    assert!(ok && text.contains("Released v4"), "{text}");

    // The old name is free; a taken or invalid one is refused.
    heroku.ok(dir, &["apps:create", "shop"]);
    let (ok, out, err) = heroku.run(dir, &["apps:rename", "shop", "-a", "store"]);
    assert!(!ok, "{out}");
    assert_has(&err, &["the name `shop` is already taken"]);
    for bad in ["a/b", "..", "../etc", "Store", "x"] {
        let (ok, out, err) = heroku.run(dir, &["apps:rename", bad, "-a", "store"]);
        assert!(!ok, "{bad}: {out}");
        assert!(err.contains("is not a valid app name"), "{bad}: {err}");
    }
    assert!(
        server
            .ok(dir, &["apps:info", "-a", "store"])
            .contains("=== store")
    );

    // `crew apps:rename` too, and the `crew` remote follows.
    server.ok(dir, &["git:remote", "-a", "store"]);
    let out = server.ok(dir, &["apps:rename", "market", "-a", "store"]);
    assert_has(
        &out,
        &[
            "Renaming store to market... done",
            "/market.git",
            "Git remote crew updated",
        ],
    );
    let (_, remotes) = server.git(dir, &["remote", "-v"]);
    assert!(remotes.contains("/market.git"), "{remotes}");
    server.wait_up(dir, "market", 1);
    assert_eq!(http_get(server.router, "market.localhost", "/", &[]).0, 200);
}

#[test]
fn heroku_maintenance_makes_the_router_answer_503_with_h80_and_dynos_keep_running() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let Some(heroku) = Heroku::new(&server) else {
        return;
    };
    let app = repo(&server, "web: python3 -m http.server $PORT\n");
    let dir = app.path();
    server.deploy(dir, "demo");
    server.wait_up(dir, "demo", 1);
    let web = pid_of(&server, dir, "demo", "web.1").unwrap_or_default();

    assert_eq!(
        heroku.stdout(dir, &["maintenance", "-a", "demo"]).trim(),
        "off"
    );
    let out = heroku.ok(dir, &["maintenance:on", "-a", "demo"]);
    assert!(
        out.contains("Enabling maintenance mode for demo... done"),
        "{out}"
    );
    assert_eq!(
        heroku.stdout(dir, &["maintenance", "-a", "demo"]).trim(),
        "on"
    );
    let json = heroku.stdout(dir, &["apps:info", "--json", "-a", "demo"]);
    assert!(json.contains("\"maintenance\": true"), "{json}");
    assert!(
        server
            .ok(dir, &["apps:info", "-a", "demo"])
            .contains("Maintenance: on")
    );

    let (status, body) = http_get(server.router, "demo.localhost", "/", &[]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("maintenance"), "{body}");
    let seen = poll_until(DEPLOY, || {
        heroku
            .ok(dir, &["logs", "-n", "50", "-a", "demo"])
            .contains("crew[router]: at=info code=H80 desc=\"Maintenance mode\" method=GET path=\"/\" host=demo.localhost")
    });
    assert!(
        seen,
        "{}",
        heroku.ok(dir, &["logs", "-n", "50", "-a", "demo"])
    );
    // The dynos kept running through it.
    assert_eq!(pid_of(&server, dir, "demo", "web.1"), Some(web));

    let out = heroku.ok(dir, &["maintenance:off", "-a", "demo"]);
    assert!(
        out.contains("Disabling maintenance mode for demo... done"),
        "{out}"
    );
    assert_eq!(http_get(server.router, "demo.localhost", "/", &[]).0, 200);
    assert_eq!(pid_of(&server, dir, "demo", "web.1"), Some(web));

    // crew's own commands, and a missing app.
    assert!(
        server
            .ok(dir, &["maintenance:on", "-a", "demo"])
            .contains("done")
    );
    assert_eq!(server.ok(dir, &["maintenance", "-a", "demo"]).trim(), "on");
    assert_eq!(http_get(server.router, "demo.localhost", "/", &[]).0, 503);
    server.ok(dir, &["maintenance:off", "-a", "demo"]);
    assert_eq!(http_get(server.router, "demo.localhost", "/", &[]).0, 200);
    let (ok, _, err) = heroku.run(dir, &["maintenance:on", "-a", "nope"]);
    assert!(!ok && err.contains("no app named `nope`"), "{err}");
}

#[test]
fn heroku_domains_add_list_wait_and_remove() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let Some(heroku) = Heroku::new(&server) else {
        return;
    };
    let app = repo(&server, "web: python3 -m http.server $PORT\n");
    let dir = app.path();
    server.deploy(dir, "demo");
    server.wait_up(dir, "demo", 1);
    heroku.ok(dir, &["apps:create", "other"]);

    let out = heroku.ok(dir, &["domains:add", "www.example.test", "-a", "demo"]);
    assert_has(
        &out,
        &[
            "Adding www.example.test to demo... done",
            "point to the DNS Target 127.0.0.1",
        ],
    );
    assert!(!out.contains("enqueued"), "{out}");
    let out = heroku.ok(dir, &["domains", "-a", "demo"]);
    assert_has(
        &out,
        &[
            "=== demo Heroku Domain",
            "demo.localhost",
            "=== demo Custom Domains",
            "Domain Name",
            "www.example.test",
            "CNAME",
            "127.0.0.1",
        ],
    );
    heroku.ok(dir, &["domains:wait", "www.example.test", "-a", "demo"]);
    heroku.ok(dir, &["domains:wait", "-a", "demo"]);
    // The router routes it, as `crew domains:add` does.
    assert_eq!(http_get(server.router, "www.example.test", "/", &[]).0, 200);
    let crew = server.ok(dir, &["domains", "-a", "demo"]);
    assert!(
        crew.contains("www.example.test") && !crew.contains("demo.localhost"),
        "{crew}"
    );

    // Twice, another app's, and not a hostname: each a clear error.
    let (ok, _, err) = heroku.run(dir, &["domains:add", "www.example.test", "-a", "demo"]);
    assert!(!ok && err.contains("already in use by `demo`"), "{err}");
    let (ok, _, err) = heroku.run(dir, &["domains:add", "WWW.example.test", "-a", "other"]);
    assert!(!ok && err.contains("already in use by `demo`"), "{err}");
    for bad in ["bad host", "a..b", "other.localhost", "x/../y"] {
        let (ok, _, err) = heroku.run(dir, &["domains:add", bad, "-a", "demo"]);
        assert!(!ok, "{bad} was added");
        assert!(err.contains("Error"), "{bad}: {err}");
    }

    let out = heroku.ok(dir, &["domains:remove", "www.example.test", "-a", "demo"]);
    assert!(
        out.contains("Removing www.example.test from demo... done"),
        "{out}"
    );
    let out = heroku.ok(dir, &["domains", "-a", "demo"]);
    assert!(!out.contains("www.example.test"), "{out}");
    assert_eq!(http_get(server.router, "www.example.test", "/", &[]).0, 404);
    // The app's own hostname is not a custom domain to remove.
    let (ok, _, err) = heroku.run(dir, &["domains:remove", "demo.localhost", "-a", "demo"]);
    assert!(!ok && err.contains("own hostname"), "{err}");
    // Freed, another app may have it.
    heroku.ok(dir, &["domains:add", "www.example.test", "-a", "other"]);
}

#[test]
fn heroku_buildpacks_are_kept_with_the_app_and_the_next_push_uses_them() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let Some(heroku) = Heroku::new(&server) else {
        return;
    };
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    server.ok(dir, &["apps:create", "shop"]);

    let out = heroku.ok(dir, &["buildpacks", "-a", "shop"]);
    assert!(out.contains("shop has no Buildpacks."), "{out}");
    // Heroku's name for Python is crew's built-in python buildpack, which
    // refuses an app without Python: the push says so.
    let out = heroku.ok(dir, &["buildpacks:set", "heroku/python", "-a", "shop"]);
    assert!(
        out.contains("Buildpack set. Next release on shop will use heroku/python."),
        "{out}"
    );
    let out = heroku.ok(dir, &["buildpacks", "-a", "shop"]);
    assert_has(&out, &["=== shop Classic Buildpack", "heroku/python"]);
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(!ok, "a Procfile-only app built with heroku/python:\n{text}");
    assert!(text.to_lowercase().contains("python"), "{text}");

    // Set replaces the first; add appends; remove takes one out.
    heroku.ok(dir, &["buildpacks:set", "heroku/procfile", "-a", "shop"]);
    let out = heroku.ok(
        dir,
        &[
            "buildpacks:add",
            "https://example.test/extra.git",
            "-a",
            "shop",
        ],
    );
    assert_has(
        &out,
        &["1. heroku/procfile", "2. https://example.test/extra.git"],
    );
    heroku.ok(
        dir,
        &[
            "buildpacks:remove",
            "https://example.test/extra.git",
            "-a",
            "shop",
        ],
    );
    let out = heroku.ok(dir, &["buildpacks", "-a", "shop"]);
    assert!(
        out.contains("heroku/procfile") && !out.contains("extra"),
        "{out}"
    );
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(ok && text.contains("Released v2"), "{text}");

    // A name crew does not have is a clear error, and nothing changes.
    let (ok, out, err) = heroku.run(dir, &["buildpacks:set", "heroku/php", "-a", "shop"]);
    assert!(!ok, "{out}");
    assert!(err.contains("crew has heroku/ruby"), "{err}");
    assert!(
        heroku
            .ok(dir, &["buildpacks", "-a", "shop"])
            .contains("heroku/procfile")
    );

    let out = heroku.ok(dir, &["buildpacks:clear", "-a", "shop"]);
    assert!(
        out.contains("Buildpacks cleared. Next release on shop will detect buildpacks normally."),
        "{out}"
    );
    let out = server.ok(dir, &["buildpacks", "-a", "shop"]);
    assert!(out.contains("no buildpacks set"), "{out}");
    // crew's own commands set the same list.
    let out = server.ok(dir, &["buildpacks:set", "heroku/procfile", "-a", "shop"]);
    assert!(out.contains("1. heroku/procfile"), "{out}");
    assert!(
        heroku
            .ok(dir, &["buildpacks", "-a", "shop"])
            .contains("heroku/procfile")
    );
    server.ok(dir, &["buildpacks:clear", "-a", "shop"]);
    let (ok, text) = server.git(dir, &["commit", "--allow-empty", "-qm", "detected again"]);
    assert!(ok, "{text}");
    let (ok, text) = server.git(dir, &["push", "crew", "main"]);
    assert!(ok && text.contains("Released v3"), "{text}");
}

#[test]
fn heroku_releases_output_shows_what_the_release_command_printed() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let Some(heroku) = Heroku::over_tls(&server) else {
        return;
    };
    let app = repo(
        &server,
        "release: echo migrating the database; echo done migrating\nworker: while true; do sleep 1; done\n",
    );
    let dir = app.path();
    heroku.ok(dir, &["apps:create", "shop"]);
    let text = push(&server, dir, "shop");
    assert!(text.contains("Released v2"), "{text}");

    let out = heroku.stdout(dir, &["releases:output", "-a", "shop"]);
    assert_eq!(out, "migrating the database\ndone migrating\n");
    let out = heroku.stdout(dir, &["releases:output", "v2", "-a", "shop"]);
    assert!(out.contains("done migrating"), "{out}");
    // A config change runs the release command again, with output of its own.
    heroku.ok(dir, &["config:set", "A=1", "-a", "shop"]);
    assert!(
        heroku
            .stdout(dir, &["releases:output", "v3", "-a", "shop"])
            .contains("migrating the database")
    );
    let (_, err) = heroku.both(dir, &["releases:output", "v1", "-a", "shop"]);
    assert!(
        err.contains("Release v1 has no release output available."),
        "{err}"
    );
    let out = server.ok(dir, &["releases:output", "v2", "-a", "shop"]);
    assert!(out.contains("migrating the database"), "{out}");

    // The URL carries its own secret: no token needed, a wrong secret is
    // refused.
    let (status, json) = api(&server, "GET", "/apps/shop/releases/2", true, "");
    assert_eq!(status, 200, "{json}");
    let release: serde_json::Value = serde_json::from_str(&json).expect("a release");
    let url = release["output_stream_url"]
        .as_str()
        .expect("an output URL");
    let path = url.trim_start_matches(&server.url).to_string();
    assert!(path.starts_with("/release-outputs/"), "{url}");
    let (status, body) = api(&server, "GET", &path, false, "");
    assert_eq!(
        (status, body.contains("done migrating")),
        (200, true),
        "{body}"
    );
    let forged = format!("{}0", &path[..path.len() - 1]);
    let forged = if forged == path {
        format!("{}1", &path[..path.len() - 1])
    } else {
        forged
    };
    assert_eq!(api(&server, "GET", &forged, false, "").0, 404);
    assert_eq!(api(&server, "GET", &format!("{path}/x"), false, "").0, 401);
}

/// Attacks on `PATCH /apps/APP` and the new open routes, as a client with or
/// without the token.
#[test]
fn patching_an_app_refuses_hostile_fields_names_and_missing_apps() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = repo(&server, "worker: while true; do sleep 1; done\n");
    let dir = app.path();
    server.ok(dir, &["apps:create", "shop"]);
    server.ok(dir, &["apps:create", "other"]);
    let patch = |app: &str, body: &str| api(&server, "PATCH", &format!("/apps/{app}"), true, body);

    // Renaming over another app, to a path, or with fields it does not take.
    let (status, body) = patch("shop", r#"{"name":"other"}"#);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("already taken"), "{body}");
    for name in ["../other", "a/b", "..", "shop/../../x", "", "ab\u{0}c"] {
        let json = serde_json::json!({ "name": name }).to_string();
        let (status, body) = patch("shop", &json);
        assert_eq!(status, 422, "{name:?}: {body}");
    }
    for body in [
        r#"{"name":"x2","owner":{"email":"evil@example.com"}}"#,
        r#"{"maintenance":"yes"}"#,
        r#"{"build_stack":"heroku-24"}"#,
        r#"["shop"]"#,
        "not json",
    ] {
        let (status, answer) = patch("shop", body);
        assert_eq!(status, 422, "{body}: {answer}");
    }
    // Nothing changed.
    let apps = server.ok(dir, &["apps"]);
    assert!(
        apps.contains("shop") && apps.contains("other") && !apps.contains("x2"),
        "{apps}"
    );
    assert_eq!(server.ok(dir, &["maintenance", "-a", "shop"]).trim(), "off");

    let (status, body) = patch("nope", r#"{"maintenance":true}"#);
    assert_eq!(status, 404, "{body}");
    let (status, _) = api(
        &server,
        "PATCH",
        "/apps/shop",
        false,
        r#"{"maintenance":true}"#,
    );
    assert_eq!(status, 401);
    let (status, _) = api(
        &server,
        "PATCH",
        "/apps/shop",
        false,
        r#"{"name":"stolen"}"#,
    );
    assert_eq!(status, 401);
    assert_eq!(server.ok(dir, &["maintenance", "-a", "shop"]).trim(), "off");
    // The open routes are only the registry's answer and output URLs.
    for path in [
        "/apps/shop/buildpack-installations",
        "/apps/shop/domains/shop.localhost",
        "/release-outputs/x",
    ] {
        assert_eq!(api(&server, "GET", path, false, "").0, 401, "{path}");
    }
    assert_eq!(
        api(
            &server,
            "PUT",
            "/apps/shop/buildpack-installations",
            false,
            r#"{"updates":[]}"#
        )
        .0,
        401
    );
    assert_eq!(
        api(
            &server,
            "GET",
            "/buildpack-registry/buildpacks/heroku%2Fpython",
            false,
            ""
        )
        .0,
        200
    );
    assert_eq!(
        api(&server, "GET", "/release-outputs/x/y", false, "").0,
        404
    );
    // A buildpack list that is too long or not text.
    let many: Vec<serde_json::Value> = (0..100)
        .map(|i| serde_json::json!({ "buildpack": format!("https://example.test/{i}.git") }))
        .collect();
    let body = serde_json::json!({ "updates": many }).to_string();
    let (status, _) = api(
        &server,
        "PUT",
        "/apps/shop/buildpack-installations",
        true,
        &body,
    );
    assert_eq!(status, 422);
    let (status, _) = api(
        &server,
        "PUT",
        "/apps/shop/buildpack-installations",
        true,
        r#"{"updates":[{"buildpack":"relative/../path"}]}"#,
    );
    assert_eq!(status, 422);
}
