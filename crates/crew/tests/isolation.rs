//! Server dynos, isolated (as root) or plain (the fallback), end to end: what a
//! dyno can see, what it keeps, its limits, and one-offs attached through a
//! real pseudo-terminal.

mod common;
mod platform;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CREW, SOON, poll_until};
use platform::{DEPLOY, Server, TestServer, commit_all, dyno_pids, have_git, repo};

/// A server whose dynos are isolated, or `None` (and why, on stderr) where this
/// host cannot isolate them.
fn isolated_server() -> Option<Server> {
    TestServer::new().isolated_dynos().start()
}

/// Pushes a Procfile app (plus `files`) as `name`, and waits for `up` dynos.
fn deploy(server: &Server, name: &str, procfile: &str, files: &[(&str, &str)]) -> common::App {
    let app = repo(server, procfile);
    for (path, contents) in files {
        if let Some(parent) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(app.join(&parent.to_string_lossy())).expect("mkdir");
        }
        app.write(path, contents);
    }
    if !files.is_empty() {
        commit_all(server, app.path(), "files");
    }
    server.ok(app.path(), &["apps:create", name]);
    server.push(app.path());
    app
}

/// `crew run -a APP COMMAND` with pipes; its stdout.
fn run(server: &Server, app: &common::App, name: &str, command: &str) -> String {
    let (ok, out, err) = server.cli(app.path(), &["run", "-a", name, command]);
    assert!(ok, "crew run {command:?} failed:\n{out}\n{err}");
    out
}

#[test]
fn isolated_dynos_see_only_themselves_and_start_pristine() {
    let Some(server) = isolated_server() else {
        return;
    };
    let alpha = deploy(
        &server,
        "alpha",
        "worker: sleep 1000\n",
        &[(
            ".profile.d/greet.sh",
            "export GREETING=hello-from-profile\n",
        )],
    );
    let beta = deploy(&server, "beta", "worker: sleep 1001\n", &[]);
    server.ok(alpha.path(), &["scale", "-a", "alpha", "worker=1"]);
    server.ok(beta.path(), &["scale", "-a", "beta", "worker=1"]);
    server.wait_up(alpha.path(), "alpha", 1);
    server.wait_up(beta.path(), "beta", 1);

    let who = run(
        &server,
        &alpha,
        "alpha",
        "hostname; id -u; echo $HOME; pwd; echo $GREETING",
    );
    let lines: Vec<&str> = who.lines().collect();
    assert!(lines[0].starts_with("run."), "{who}");
    // The app's own uid (see dyno_identity.rs), never nobody's.
    let uid: u32 = lines[1].parse().expect("a uid");
    assert!(uid >= 2_000_000_000, "{who}");
    assert_eq!(lines[2..], ["/app", "/app", "hello-from-profile"], "{who}");

    // Writes vanish with the dyno; the next one starts from the slug.
    let wrote = run(
        &server,
        &alpha,
        "alpha",
        "echo kept > /app/scratch && cat /app/scratch && touch /tmp/t",
    );
    assert_eq!(wrote.trim(), "kept");
    let next = run(
        &server,
        &alpha,
        "alpha",
        "test -e /app/scratch && echo seen || echo gone; ls -A /tmp | wc -l",
    );
    assert_eq!(next.split_whitespace().collect::<Vec<_>>(), ["gone", "0"]);

    // Its own processes only: not the worker of its app, not the host's.
    let procs = run(&server, &alpha, "alpha", "ps -eo args");
    assert!(!procs.contains("sleep 1000"), "{procs}");
    assert!(!procs.contains("crew server"), "{procs}");
    assert!(procs.lines().count() <= 5, "{procs}");

    // Not another app's files, nor the server's data.
    let slugs = server.data().join("apps").join("beta");
    assert!(slugs.is_dir());
    let data = server.data();
    let seen = run(
        &server,
        &alpha,
        "alpha",
        &format!(
            "for p in {} {} /root; do test -e $p && echo visible $p || echo hidden; done",
            slugs.display(),
            data.display()
        ),
    );
    assert_eq!(
        seen.lines().filter(|l| *l == "hidden").count(),
        3,
        "only the dyno's own root may show: {seen}"
    );

    // The stack is read-only and /dev is small.
    let stack = run(
        &server,
        &alpha,
        "alpha",
        "touch /usr/x 2>/dev/null && echo writable || echo read-only; test -e /dev/mem && echo mem || echo no-mem; test -e /dev/null && echo null",
    );
    assert_eq!(
        stack.split_whitespace().collect::<Vec<_>>(),
        ["read-only", "no-mem", "null"]
    );
}

#[test]
fn sizes_set_limits_show_in_ps_and_memory_hogs_are_killed() {
    let Some(server) = isolated_server() else {
        return;
    };
    let hog = "import time\nheld = []\nwhile True:\n    held.append(b'x' * (4 << 20))\n    time.sleep(0.05)\n";
    let app = deploy(
        &server,
        "sized",
        "worker: sleep 1000\nhog: python3 hog.py\n",
        &[("hog.py", hog)],
    );
    let dir = app.path();
    server.ok(dir, &["scale", "-a", "sized", "worker=1:standard-2x"]);
    let ps = server.wait_up(dir, "sized", 1);
    assert!(ps.contains("standard-2x"), "{ps}");
    let pid = dyno_pids(&ps)[0];
    assert_eq!(memory_limit(pid), Some(1 << 30), "the cgroup of pid {pid}");

    let (ok, _, err) = server.cli(dir, &["scale", "-a", "sized", "worker=1:huge"]);
    assert!(!ok && err.contains("unknown dyno size `huge`"), "{err}");
    assert!(err.contains("performance-m"), "{err}");
    let (ok, _, err) = server.cli(dir, &["run", "-a", "sized", "--size", "tiny", "true"]);
    assert!(!ok && err.contains("unknown dyno size `tiny`"), "{err}");
    let big = run(&server, &app, "sized", "echo ran");
    assert_eq!(big.trim(), "ran");

    // 512 MiB for a standard-1x hog: R14 on the way up, R15 and a kill at the
    // limit, then a restart on the backoff.
    server.ok(dir, &["scale", "-a", "sized", "hog=1"]);
    let mut logs = String::new();
    let restarted = poll_until(DEPLOY, || {
        logs = server.ok(dir, &["logs", "-a", "sized", "-n", "500"]);
        logs.contains("Error R15 (Memory quota vastly exceeded)")
            && logs.contains("crew[hog.1]: State changed from crashed to starting")
    });
    assert!(restarted, "{logs}");
    assert!(logs.contains("Error R14 (Memory quota exceeded)"), "{logs}");
    server.ok(dir, &["scale", "-a", "sized", "hog=0"]);
}

/// The memory limit of the cgroup a host pid is in, v1 or v2.
fn memory_limit(pid: i32) -> Option<u64> {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in groups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        } else if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/memory.max")
        } else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(file) {
            return text.trim().parse().ok();
        }
    }
    None
}

#[test]
fn stopping_a_dyno_kills_what_it_daemonized() {
    let Some(server) = isolated_server() else {
        return;
    };
    let app = deploy(
        &server,
        "daemons",
        "worker: setsid sh -c 'exec sleep 4321' & sleep 1000\n",
        &[],
    );
    let dir = app.path();
    server.ok(dir, &["scale", "-a", "daemons", "worker=1"]);
    server.wait_up(dir, "daemons", 1);
    assert!(poll_until(SOON, || host_processes("sleep 4321") == 1));
    server.ok(dir, &["scale", "-a", "daemons", "worker=0"]);
    let gone = poll_until(SOON, || host_processes("sleep 4321") == 0);
    assert!(gone, "a daemonized process outlived its dyno");
}

/// How many host processes have exactly this command line.
fn host_processes(args: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).replace('\0', " ").trim() == args)
        .count()
}

#[test]
fn without_isolation_each_dyno_gets_its_own_copy_of_the_slug() {
    let Some(server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    assert!(
        server
            .output()
            .contains("dyno isolation: off (--isolation off)"),
        "{}",
        server.output()
    );
    let app = deploy(&server, "plain", "worker: sleep 1000\n", &[]);
    let info = server.ok(app.path(), &["apps:info", "-a", "plain"]);
    assert!(info.contains("Isolation: off"), "{info}");
    let wrote = run(&server, &app, "plain", "echo mine > written && cat written");
    assert_eq!(wrote.trim(), "mine");
    let next = run(
        &server,
        &app,
        "plain",
        "test -e written && echo seen || echo gone",
    );
    assert_eq!(next.trim(), "gone");
    let copies = server.data().join("dynos");
    let cleared = poll_until(SOON, || {
        std::fs::read_dir(&copies).map_or(true, |mut d| d.next().is_none())
    });
    assert!(
        cleared,
        "copies of the slug were left in {}",
        copies.display()
    );
}

// ---------------------------------------------------------------------------
// An attached one-off through a real pseudo-terminal
// ---------------------------------------------------------------------------

/// `crew run -a APP COMMAND` on the dyno side of a new pseudo-terminal; the
/// test holds the other side, as a terminal emulator would.
struct Terminal {
    controller: Arc<OwnedFd>,
    seen: Arc<Mutex<Vec<u8>>>,
    crew: std::process::Child,
}

impl Terminal {
    fn open(server: &Server, dir: &std::path::Path, args: &[&str]) -> Terminal {
        use rustix::pty::OpenptFlags;
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let controller = rustix::pty::openpt(flags).expect("openpt");
        rustix::pty::grantpt(&controller).expect("grantpt");
        rustix::pty::unlockpt(&controller).expect("unlockpt");
        let dyno_side = rustix::pty::ioctl_tiocgptpeer(&controller, flags).expect("the pty");
        resize(&controller, 80, 24);
        let crew = Command::new(CREW)
            .args(args)
            .current_dir(dir)
            .env("HOME", server.home.path())
            .env("CREW_API_URL", &server.url)
            .env("CREW_API_KEY", server.token())
            .env("TERM", "xterm")
            .stdin(Stdio::from(dyno_side.try_clone().expect("dup")))
            .stdout(Stdio::from(dyno_side.try_clone().expect("dup")))
            .stderr(Stdio::from(dyno_side))
            .spawn()
            .expect("crew run");
        let controller = Arc::new(controller);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (reader, sink) = (controller.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut file = std::fs::File::from(reader.try_clone().expect("dup"));
            let mut buf = [0u8; 4096];
            while let Ok(n) = file.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            controller,
            seen,
            crew,
        }
    }

    fn type_keys(&self, keys: &str) {
        let mut file = std::fs::File::from(self.controller.try_clone().expect("dup"));
        file.write_all(keys.as_bytes()).expect("typing");
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits for `text` to appear after what was on screen before.
    fn expect(&self, from: usize, text: &str) {
        let shown = poll_until(SOON, || self.screen()[from..].contains(text));
        assert!(
            shown,
            "the terminal never showed {text:?}:\n{}",
            self.screen()
        );
    }

    fn exit_code(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + SOON;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.crew.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.crew.kill();
        let _ = self.crew.wait();
    }
}

fn resize(terminal: &OwnedFd, cols: u16, rows: u16) {
    crew_runtime::os::set_window_size(terminal, cols, rows).expect("setting the window size");
}

#[test]
fn an_attached_one_off_is_a_terminal_session() {
    if !have_git() {
        return;
    }
    // Isolated as root, plain otherwise; and plain on purpose.
    terminal_session(&Server::start());
    terminal_session(&Server::start_with(&["--isolation", "off"]));
}

fn terminal_session(server: &Server) {
    let app = deploy(server, "console", "worker: sleep 1000\n", &[]);
    let dir = app.path();

    let mut term = Terminal::open(server, dir, &["run", "-a", "console", "PS1='dyno> ' sh"]);
    term.expect(0, "dyno> ");
    // An isolated dyno's terminal is its own, on its own devpts.
    let mark = term.screen().len();
    term.type_keys("tty\n");
    if server.output().contains("dyno isolation: on") {
        term.expect(mark, "/dev/pts/0");
    } else {
        term.expect(mark, "/dev/pts/");
    }
    assert!(!term.screen().contains("not a tty"), "{}", term.screen());
    term.type_keys("echo $((6 * 7)) $TERM\n");
    term.expect(0, "42 xterm");
    let mark = term.screen().len();
    term.type_keys("stty size\n");
    term.expect(mark, "24 80");

    // A new window size, and the SIGWINCH a terminal sends with it.
    resize(&term.controller, 132, 50);
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&term.crew),
        rustix::process::Signal::WINCH,
    )
    .expect("SIGWINCH");
    let resized = poll_until(SOON, || {
        let mark = term.screen().len();
        term.type_keys("stty size\n");
        poll_until(Duration::from_millis(500), || {
            term.screen()[mark..].contains("50 132")
        })
    });
    assert!(resized, "{}", term.screen());

    // Ctrl-C reaches the dyno's foreground job, not the session.
    term.type_keys("sleep 60; echo slept-$((2 + 3))\n");
    std::thread::sleep(Duration::from_millis(300));
    let mark = term.screen().len();
    term.type_keys("\x03");
    term.type_keys("echo after-interrupt\n");
    term.expect(mark, "after-interrupt");
    assert!(!term.screen().contains("slept-5"), "{}", term.screen());

    term.type_keys("exit 5\n");
    assert_eq!(term.exit_code(), Some(5), "{}", term.screen());

    // Closing the client hangs the dyno up.
    let mut term = Terminal::open(server, dir, &["run", "-a", "console", "sleep 600"]);
    let listed = poll_until(SOON, || {
        server
            .ok(dir, &["ps", "-a", "console"])
            .contains("sleep 600")
    });
    assert!(listed, "{}", term.screen());
    let _ = term.crew.kill();
    let _ = term.crew.wait();
    let hung_up = poll_until(SOON, || {
        server
            .ok(dir, &["logs", "-a", "console", "-n", "50"])
            .contains("terminated by SIGHUP")
    });
    assert!(
        hung_up,
        "{}",
        server.ok(dir, &["logs", "-a", "console", "-n", "50"])
    );
}
