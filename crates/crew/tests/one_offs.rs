//! One-off dynos on a server (issue 16): what `crew run -a APP` and
//! `crew run:detached` hand the dyno, its stdin, stopping one, and their names.

mod common;
mod platform;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{CREW, poll_until};
use platform::{DEPLOY, Server, TestServer, repo};

/// A server with `app` deployed from a Procfile with one idle worker.
fn deployed(app: &str) -> Option<(Server, common::App)> {
    let server = TestServer::new().start()?;
    let repo = repo(&server, "worker: while true; do sleep 1; done\n");
    server.deploy(repo.path(), app);
    Some((server, repo))
}

/// The `run.N` that `crew run:detached` announced.
fn announced(out: &str) -> String {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("run.").map(|n| n.trim_end_matches(',')))
        .map(|n| format!("run.{n}"))
        .unwrap_or_else(|| panic!("no run.N in: {out}"))
}

/// Waits until the app's log has `needle`; the log on failure.
fn wait_log(server: &Server, dir: &std::path::Path, app: &str, needle: &str) {
    let mut log = String::new();
    let seen = poll_until(DEPLOY, || {
        log = server.ok(dir, &["logs", "-a", app, "-n", "500"]);
        log.contains(needle)
    });
    assert!(seen, "missing `{needle}` in the log:\n{log}");
}

/// Arguments with everything a shell would otherwise act on.
const TRICKY: &[&str] = &[
    "one two",
    "it's",
    "\"double\"",
    "$HOME",
    "a;id",
    "(x)",
    "first\nsecond",
    "héllo ☃",
    "*",
    "",
];

fn bracketed() -> String {
    TRICKY.iter().map(|a| format!("[{a}]\n")).collect()
}

#[test]
fn several_arguments_reach_a_server_one_off_exactly() {
    let Some((server, repo)) = deployed("argv") else {
        return;
    };
    let dir = repo.path();

    // Attached: a program and its exact arguments.
    let mut args = vec!["run", "-a", "argv", "--no-tty", "printf", "[%s]\\n"];
    args.extend(TRICKY);
    let (_, out, err) = server.cli(dir, &args);
    assert_eq!(out.replace("\r\n", "\n"), bracketed(), "stderr: {err}");

    // `--` and `sh -c SCRIPT`: the script is one argument, with its quotes,
    // `$` and `;`, and its exit code comes back.
    let (ok, out, err) = server.cli(
        dir,
        &[
            "run",
            "-a",
            "argv",
            "--no-tty",
            "--env-var",
            "FOO=bar",
            "--",
            "sh",
            "-c",
            "echo \"run $FOO\"; exit 7",
        ],
    );
    assert!(!ok, "{out}{err}");
    assert_eq!(out.trim(), "run bar", "stderr: {err}");

    // One argument is still a shell command line.
    let (_, out, _) = server.cli(dir, &["run", "-a", "argv", "--no-tty", "echo $((6 * 7))"]);
    assert_eq!(out.trim(), "42");

    // Detached: the same argv, its lines in the log.
    let mut args = vec!["run:detached", "-a", "argv", "printf", "<%s>\\n"];
    args.extend(TRICKY);
    let name = announced(&server.ok(dir, &args));
    wait_log(
        &server,
        dir,
        "argv",
        &format!("crew[{name}]: Process exited with status 0"),
    );
    let log = server.ok(dir, &["logs", "-a", "argv", "--ps", &name, "-n", "100"]);
    let printed: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(&format!("app[{name}]: ")).map(|(_, t)| t))
        .collect();
    // An argument with a newline is two lines of the log.
    let expected: Vec<String> = TRICKY
        .iter()
        .flat_map(|a| {
            format!("<{a}>")
                .split('\n')
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(printed, expected, "{log}");
}

#[test]
fn each_dyno_has_its_own_stdin() {
    let Some((server, repo)) = deployed("stdin") else {
        return;
    };
    let dir = repo.path();

    // Detached: end of file at once, so a reader of stdin ends.
    let name = announced(&server.ok(
        dir,
        &["run:detached", "-a", "stdin", "cat; echo \"stdin closed\""],
    ));
    wait_log(&server, dir, "stdin", &format!("app[{name}]: stdin closed"));
    wait_log(
        &server,
        dir,
        "stdin",
        &format!("crew[{name}]: State changed from up to complete"),
    );

    // A formation dyno reads /dev/null too, not a pipe the server holds.
    server.ok(dir, &["scale", "-a", "stdin", "worker=1"]);
    let ps = server.wait_up(dir, "stdin", 1);
    let pid = platform::dyno_pids(&ps)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no pid in:\n{ps}"));
    // The pid is the app's, or (isolated) its init's, which lets go of the
    // app's descriptors once the app runs: then the app is its child.
    let app = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .filter(|_| !std::path::Path::new(&format!("/proc/{pid}/fd/0")).exists())
        .and_then(|children| children.split_whitespace().next()?.parse::<i32>().ok())
        .unwrap_or(pid);
    let stdin = std::fs::read_link(format!("/proc/{app}/fd/0"))
        .unwrap_or_else(|e| panic!("worker.1's stdin (pid {app}, dyno pid {pid}): {e}"));
    assert_eq!(stdin, std::path::Path::new("/dev/null"));

    // Attached: the client's stream, to its end.
    let mut child = Command::new(CREW)
        .args(["run", "-a", "stdin", "--no-tty", "cat; echo \"[end]\""])
        .current_dir(dir)
        .env("HOME", server.home.path())
        .env("CREW_API_URL", &server.url)
        .env("CREW_API_KEY", server.token())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crew run");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(b"typed here\n").expect("write to crew run");
    }
    let output = child.wait_with_output().expect("crew run ends");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("typed here\n[end]"),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_running_one_off_can_be_stopped_and_restarting_it_ends_it() {
    let Some((server, repo)) = deployed("halt") else {
        return;
    };
    let dir = repo.path();
    for verb in ["stop", "restart"] {
        let name = announced(&server.ok(dir, &["run:detached", "-a", "halt", "sleep 1000"]));
        wait_log(
            &server,
            dir,
            "halt",
            &format!("crew[{name}]: State changed from starting to up"),
        );
        let (ok, out, err) = server.cli(dir, &[verb, "-a", "halt", &name]);
        assert!(ok, "crew {verb} {name}: {out}{err}");
        wait_log(
            &server,
            dir,
            "halt",
            &format!("crew[{name}]: State changed from up to complete"),
        );
        let log = server.ok(dir, &["logs", "-a", "halt", "--ps", &name, "-n", "50"]);
        assert!(
            log.contains("Stopping all processes with SIGTERM")
                && log.contains("Process exited with status 143"),
            "{log}"
        );
        let ps = server.ok(dir, &["ps", "-a", "halt"]);
        assert!(
            !ps.lines().any(|l| l.contains(&name) && l.contains(" up ")),
            "{ps}"
        );
    }
}

#[test]
fn one_off_names_are_never_reused_and_a_missing_command_says_so() {
    let Some((server, repo)) = deployed("names") else {
        return;
    };
    let dir = repo.path();
    let mut names = Vec::new();
    for _ in 0..3 {
        let name = announced(&server.ok(
            dir,
            &["run:detached", "-a", "names", "no-such-command-for-crew"],
        ));
        // Each one is over before the next starts: a free number is not
        // reason enough to hand it out again.
        wait_log(
            &server,
            dir,
            "names",
            &format!("crew[{name}]: Process exited with status 127 (the command was not found)"),
        );
        names.push(name);
    }
    for name in &names {
        let number = name.trim_start_matches("run.");
        assert!(
            number.len() == 4 && number.parse::<u32>().is_ok(),
            "not a Heroku-style one-off name: {name}"
        );
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a name was reused: {names:?}");
}
