//! Issue 2, point 3: how `crew start` stops. Process groups, signals, the
//! SIGKILL escalation, foreman's rule, exit codes, and no leftovers.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// A shell that traps SIGTERM, says so, and keeps running. It announces
/// `ready` once the trap is in place.
const TERM_TRAPPER: &str = "trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.1; done";

#[test]
fn first_exit_stops_everything_and_crew_exits_with_its_code() {
    let app = App::with_procfile(
        "web: touch web-up; exec sleep 100\n\
         worker: until [ -e web-up ]; do sleep 0.05; done; exit 42\n",
    );
    let mut crew = app.spawn(&["start", "--no-timestamp"]);
    let web = crew.pid_of("web.1");
    let code = crew.wait_code(SOON);
    assert_eq!(
        code,
        42,
        "crew exits with the first exit's code\n{}",
        crew.report()
    );
    let stdout = crew.stdout();
    for expected in [
        "worker.1 | exited with code 42\n",
        "system   | sending SIGTERM to all processes\n",
        "web.1    | terminated by SIGTERM\n",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?}\n{}",
            crew.report()
        );
    }
    assert_group_gone(web, Duration::from_secs(2), "after the run");
}

#[test]
fn a_first_exit_of_zero_ends_the_run_with_zero() {
    let app = App::with_procfile(
        "web: touch web-up; exec sleep 100\n\
         worker: until [ -e web-up ]; do sleep 0.05; done; exit 0\n",
    );
    let mut crew = app.spawn(&["start", "--no-timestamp"]);
    let code = crew.wait_code(SOON);
    assert_eq!(
        code,
        0,
        "the processes crew SIGTERMed must not change the code\n{}",
        crew.report()
    );
}

fn stops_on_signal(signal: Signal, name: &str, expected_code: i32) {
    let app = App::with_procfile("web: exec sleep 100\nworker: exec sleep 100\n");
    let mut crew = app.spawn(&["start", "--no-timestamp"]);
    let web = crew.pid_of("web.1");
    let worker = crew.pid_of("worker.1");
    crew.signal(signal);
    let code = crew.wait_code(SOON);
    assert_eq!(code, expected_code, "{}", crew.report());
    let stdout = crew.stdout();
    assert!(
        stdout.contains(&format!("system   | {name} received, starting shutdown\n")),
        "{}",
        crew.report()
    );
    assert!(
        stdout.contains("system   | sending SIGTERM to all processes\n"),
        "{}",
        crew.report()
    );
    assert_group_gone(web, Duration::from_secs(2), "web.1 after the stop");
    assert_group_gone(worker, Duration::from_secs(2), "worker.1 after the stop");
}

#[test]
fn sigint_stops_everything_and_exits_130() {
    stops_on_signal(Signal::INT, "INT", 130);
}

#[test]
fn sigterm_stops_everything_and_exits_143() {
    stops_on_signal(Signal::TERM, "TERM", 143);
}

#[test]
fn sighup_stops_everything_and_exits_129() {
    stops_on_signal(Signal::HUP, "HUP", 129);
}

#[test]
fn each_process_leads_its_own_process_group() {
    let app = App::with_procfile("web: exec sleep 100\nworker: exec sleep 100\n");
    let mut crew = app.spawn(&["start"]);
    for dyno in ["web.1", "worker.1"] {
        let pid = crew.pid_of(dyno);
        let (_, pgid) = proc_stat(pid).expect("the process is running");
        assert_eq!(pgid, pid, "{dyno} should lead its own process group");
        assert_ne!(pgid, crew.pid(), "{dyno} must not share crew's group");
    }
    crew.signal(Signal::TERM);
    crew.wait_exit(SOON);
}

#[test]
fn second_sigint_kills_at_once() {
    let app = App::with_procfile(&format!("web: {TERM_TRAPPER}\n"));
    let mut crew = app.spawn(&["start", "--no-timestamp", "-t", "30"]);
    let web = crew.pid_of("web.1");
    crew.wait_for("web.1  | ready\n", SOON);
    crew.signal(Signal::INT);
    crew.wait_for("web.1  | got TERM\n", SOON);
    assert!(
        crew.try_status().is_none(),
        "the trapper keeps crew waiting"
    );
    let second = Instant::now();
    crew.signal(Signal::INT);
    let code = crew.wait_code(SOON);
    let took = second.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a second Ctrl-C must not wait for -t 30 (took {took:?})\n{}",
        crew.report()
    );
    assert_eq!(code, 130, "{}", crew.report());
    assert!(
        crew.stdout()
            .contains("system | sending SIGKILL to all processes\n"),
        "crew should say it is killing\n{}",
        crew.report()
    );
    assert_group_gone(web, Duration::from_secs(2), "after the second Ctrl-C");
}

/// Says which stop signals it gets; leaves on SIGTERM.
const SIGNAL_COUNTER: &str = "trap 'echo got INT' INT; trap 'echo got TERM; exit 0' TERM; \
     echo ready; while :; do sleep 0.1; done";

/// `crew start ARGS…` in a pseudo-terminal whose keyboard is `write_stdin`.
fn start_in_terminal(app: &App, args: &[&str]) -> Crew {
    let mut command = app.command_in_pty(args);
    command.stdin(Stdio::piped());
    Crew::spawn(command)
}

#[test]
fn ctrl_c_in_a_terminal_sends_each_process_exactly_one_stop_signal() {
    // The terminal sends SIGINT to its foreground group, which is crew's. The
    // processes must hear only crew's SIGTERM, not the terminal's SIGINT too.
    let app = App::with_procfile(&format!(
        "web: {SIGNAL_COUNTER}\nworker: {SIGNAL_COUNTER}\n"
    ));
    let mut crew = start_in_terminal(&app, &["start", "--no-timestamp", "--no-color"]);
    let web = crew.pid_of("web.1");
    let worker = crew.pid_of("worker.1");
    crew.wait_for("web.1    | ready", SOON);
    crew.wait_for("worker.1 | ready", SOON);
    crew.write_stdin(b"\x03");
    let code = crew.wait_code(SOON);
    assert_eq!(code, 130, "Ctrl-C ends the run with 130\n{}", crew.report());
    let stdout = crew.stdout();
    assert!(
        stdout.contains("web.1    | got TERM") && stdout.contains("worker.1 | got TERM"),
        "each process gets crew's SIGTERM\n{}",
        crew.report()
    );
    assert!(
        !stdout.contains("got INT"),
        "a process got the terminal's SIGINT as well as crew's SIGTERM\n{}",
        crew.report()
    );
    assert_group_gone(web, Duration::from_secs(2), "web.1 after Ctrl-C");
    assert_group_gone(worker, Duration::from_secs(2), "worker.1 after Ctrl-C");
}

#[test]
fn a_second_ctrl_c_in_a_terminal_kills_at_once() {
    let app = App::with_procfile(&format!("web: {TERM_TRAPPER}\n"));
    let mut crew = start_in_terminal(&app, &["start", "--no-timestamp", "--no-color", "-t", "30"]);
    let web = crew.pid_of("web.1");
    crew.wait_for("web.1  | ready", SOON);
    crew.write_stdin(b"\x03");
    crew.wait_for("web.1  | got TERM", SOON);
    let second = Instant::now();
    crew.write_stdin(b"\x03");
    let code = crew.wait_code(SOON);
    let took = second.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a second Ctrl-C must not wait for -t 30 (took {took:?})\n{}",
        crew.report()
    );
    assert_eq!(code, 130, "{}", crew.report());
    assert_group_gone(web, Duration::from_secs(2), "after the second Ctrl-C");
}

#[test]
fn a_process_that_traps_sigterm_gets_sigkill_after_the_timeout() {
    let app = App::with_procfile(&format!("web: {TERM_TRAPPER}\n"));
    let mut crew = app.spawn(&["start", "--no-timestamp", "-t", "1"]);
    let web = crew.pid_of("web.1");
    crew.wait_for("web.1  | ready\n", SOON);
    let stop = Instant::now();
    crew.signal(Signal::TERM);
    crew.wait_for("web.1  | got TERM\n", SOON);
    let code = crew.wait_code(SOON);
    let took = stop.elapsed();
    assert_eq!(code, 143, "{}", crew.report());
    assert!(
        took >= Duration::from_millis(900),
        "SIGKILL came before the -t 1 grace period was over (after {took:?})\n{}",
        crew.report()
    );
    assert!(
        took < Duration::from_secs(6),
        "SIGKILL should follow -t 1 closely (took {took:?})\n{}",
        crew.report()
    );
    assert!(
        crew.stdout().contains("web.1  | terminated by SIGKILL\n"),
        "crew should report the SIGKILL\n{}",
        crew.report()
    );
    assert_group_gone(web, Duration::from_secs(2), "after the SIGKILL");
}

#[test]
fn no_grandchildren_are_left_after_a_stop() {
    let app = App::with_procfile("web: sleep 1000 & sleep 1000 & wait\n");
    let mut crew = app.spawn(&["start", "--no-timestamp", "-t", "1"]);
    let web = crew.pid_of("web.1");
    // The shell and both sleeps.
    wait_group_size(web, 3, SOON);
    crew.signal(Signal::INT);
    assert_eq!(crew.wait_code(SOON), 130, "{}", crew.report());
    assert_group_gone(web, Duration::from_secs(2), "after Ctrl-C");
}

#[test]
fn no_grandchildren_are_left_when_the_whole_group_ignores_sigterm() {
    // SIG_IGN is inherited, so the sleeps ignore SIGTERM too: only SIGKILL works.
    let app = App::with_procfile("web: trap '' TERM; sleep 1000 & sleep 1000 & wait\n");
    let mut crew = app.spawn(&["start", "--no-timestamp", "-t", "1"]);
    let web = crew.pid_of("web.1");
    wait_group_size(web, 3, SOON);
    crew.signal(Signal::TERM);
    assert_eq!(crew.wait_code(SOON), 143, "{}", crew.report());
    assert_group_gone(web, Duration::from_secs(2), "after the SIGKILL escalation");
}

#[test]
fn a_process_that_leaves_its_group_is_reported_and_killed() {
    let app = App::with_procfile("web: setsid sleep 1000 & echo \"escapee $!\"; exec sleep 100\n");
    let mut crew = app.spawn(&["start", "--no-timestamp", "-t", "1"]);
    crew.wait_for("escapee ", SOON);
    let escapee: i32 = crew
        .stdout()
        .split("escapee ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .expect("the escapee's pid");
    crew.track_group(escapee);
    assert!(
        poll_until(SOON, || proc_stat(escapee)
            .is_some_and(|(_, pgid)| pgid == escapee)),
        "setsid should have moved the sleep to its own group"
    );
    crew.signal(Signal::INT);
    crew.wait_exit(SOON);
    assert!(
        crew.stdout().contains(&format!("{escapee} (sleep 1000)")),
        "crew should name the process that escaped\n{}",
        crew.report()
    );
    assert_gone(
        escapee,
        Duration::from_secs(2),
        "the escapee after the stop",
    );
}

#[test]
fn killing_crew_kills_its_processes_and_their_children() {
    let app = App::with_procfile(
        "web: sleep 1000 & sleep 1000 & wait\nworker: trap '' TERM; exec sleep 1000\n",
    );
    let mut crew = app.spawn(&["start", "--no-timestamp"]);
    let web = crew.pid_of("web.1");
    let worker = crew.pid_of("worker.1");
    wait_group_size(web, 3, SOON);
    wait_group_size(worker, 1, SOON);
    crew.signal(Signal::KILL);
    let status = crew.wait_exit(SOON);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert_group_gone(
        web,
        Duration::from_secs(3),
        "web.1 after crew was SIGKILLed",
    );
    assert_group_gone(
        worker,
        Duration::from_secs(3),
        "worker.1 after crew was SIGKILLed",
    );
}

#[test]
fn start_piped_into_head_ends_gracefully_without_leftovers() {
    let app = App::with_procfile(
        "web: echo $$ > web.pid; while :; do echo tick; sleep 0.05; done\n\
         worker: echo $$ > worker.pid; exec yes worker-line\n",
    );
    // `head -1` starts reading once both processes run, so the pipe closes on a
    // live formation.
    let mut pipeline = Crew::spawn(app.shell(
        "\"$CREW\" start | { until [ -s web.pid ] && [ -s worker.pid ]; do sleep 0.05; done; head -1; }",
    ));
    let pid_in = |name: &str| -> Option<i32> {
        std::fs::read_to_string(app.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    assert!(
        poll_until(SOON, || pid_in("web.pid").is_some()
            && pid_in("worker.pid").is_some()),
        "the processes never started\n{}",
        pipeline.report()
    );
    let groups = [pid_in("web.pid").unwrap(), pid_in("worker.pid").unwrap()];
    for pgid in groups {
        pipeline.track_group(pgid);
    }
    let status = pipeline.wait_exit(SOON);
    assert_no_panic(&pipeline.stderr());
    assert_eq!(
        pipeline.stdout().lines().count(),
        1,
        "head printed its line\n{}",
        pipeline.report()
    );
    assert!(status.code().is_some(), "{}", pipeline.report());
    for pgid in groups {
        assert_group_gone(pgid, Duration::from_secs(2), "after `crew start | head -1`");
    }
}
