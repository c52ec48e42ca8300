//! Issue 2, point 4: `crew run COMMAND…` and `crew run TYPE`: one command with
//! the app's environment, its stdio, TTY, signals and exit code its own.

mod common;

use std::process::Stdio;

use common::*;

#[test]
fn run_returns_the_command_exit_code() {
    let app = App::new();
    app.run(&["run", "exit 3"]).assert_code(3);
}

#[test]
fn run_execs_several_arguments_without_a_shell() {
    let app = App::new();
    let out = app.run(&["run", "printf", "%s|", "a b", "$HOME", "*"]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "a b|$HOME|*|", "{}", out.report());
}

#[test]
fn run_passes_a_program_exit_code_back_too() {
    let app = App::new();
    app.run(&["run", "sh", "-c", "exit 4"]).assert_code(4);
}

#[test]
fn run_reports_a_missing_program_with_127() {
    let app = App::new();
    let out = app.run(&["run", "no-such-program-for-crew", "arg"]);
    out.assert_code(127);
    assert!(
        out.stderr.contains("no-such-program-for-crew"),
        "the error names the program\n{}",
        out.report()
    );
    assert_no_panic(&out.stderr);
}

#[test]
fn run_replaces_itself_with_the_command() {
    // exec: the command has crew's pid, so the terminal and signals are its own.
    let app = App::new();
    let mut crew = app.spawn(&["run", "echo $$"]);
    crew.wait_exit(SOON);
    assert_eq!(
        crew.stdout(),
        format!("{}\n", crew.pid()),
        "{}",
        crew.report()
    );
}

#[test]
fn run_sets_port_dyno_ps_and_reads_dotenv() {
    let app = App::new();
    app.write(".env", "GREETING=hi there\n");
    let out = app.run(&["run", "echo \"$PORT $DYNO $PS $GREETING\""]);
    out.assert_code(0);
    assert_eq!(
        out.stdout(),
        "5000 run.1 run.1 hi there\n",
        "{}",
        out.report()
    );
}

#[test]
fn run_reads_env_files_given_with_e() {
    let app = App::new();
    app.write("one.env", "A=from-one\n");
    app.write("two.env", "B=from-two\n");
    let out = app.run(&["run", "-e", "one.env,two.env", "echo \"$A $B\""]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "from-one from-two\n", "{}", out.report());
}

#[test]
fn run_takes_the_port_flag() {
    let app = App::new();
    let out = app.run(&["run", "-p", "6000", "echo $PORT"]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "6000\n", "{}", out.report());
}

#[test]
fn run_with_a_type_runs_that_type_command() {
    let app =
        App::with_procfile("web: echo \"web command on $PORT as $DYNO\"\nworker: echo worker\n");
    let out = app.run(&["run", "web"]);
    out.assert_code(0);
    assert_eq!(
        out.stdout(),
        "web command on 5000 as run.1\n",
        "{}",
        out.report()
    );
}

#[test]
fn run_passes_stdin_through() {
    let app = App::new();
    let mut command = app.command(&["run", "read first; echo \"got $first\"; cat"]);
    command.stdin(Stdio::piped());
    let mut crew = Crew::spawn(command);
    crew.write_stdin(b"hello\nrest of the input\n");
    crew.close_stdin();
    assert_eq!(crew.wait_code(SOON), 0, "{}", crew.report());
    assert_eq!(
        crew.stdout(),
        "got hello\nrest of the input\n",
        "{}",
        crew.report()
    );
}

#[test]
fn run_passes_stdout_and_stderr_through_without_a_prefix() {
    let app = App::new();
    let out = app.run(&["run", "echo to-out; echo to-err >&2"]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "to-out\n");
    assert_eq!(out.stderr, "to-err\n");
}

#[test]
fn run_keeps_a_terminal_a_terminal() {
    let app = App::new();
    let mut crew = Crew::spawn(app.command_in_pty(&[
        "run",
        "test -t 0 && test -t 1 && test -t 2 && echo all-three-are-ttys",
    ]));
    let code = crew.wait_code(SOON);
    assert_eq!(
        code,
        0,
        "stdin, stdout or stderr is not a TTY\n{}",
        crew.report()
    );
    assert!(
        crew.stdout().contains("all-three-are-ttys"),
        "{}",
        crew.report()
    );
}

/// Sends `signal` to `crew run`'s pid and expects the command's trap to run.
fn forwards(signal: Signal, name: &str) {
    let app = App::new();
    let script =
        format!("trap 'echo got {name}; exit 7' {name}; echo ready; while :; do sleep 0.1; done");
    let mut crew = Crew::spawn(app.command_with_default_signals(&["run", script.as_str()]));
    crew.wait_for("ready\n", SOON);
    crew.signal(signal);
    let code = crew.wait_code(SOON);
    assert_eq!(
        crew.stdout(),
        format!("ready\ngot {name}\n"),
        "the command should have trapped SIG{name}\n{}",
        crew.report()
    );
    assert_eq!(code, 7, "{}", crew.report());
}

#[test]
fn run_forwards_sigterm_to_the_command() {
    forwards(Signal::TERM, "TERM");
}

#[test]
fn run_forwards_sigint_to_the_command() {
    forwards(Signal::INT, "INT");
}

#[test]
fn run_forwards_sighup_to_the_command() {
    forwards(Signal::HUP, "HUP");
}
