//! Issue 2, point 3: what `crew start` prints: foreman's line format, the name
//! column, the lifecycle lines, and the format flags.

mod common;

use common::*;

const ESC: u8 = 0x1b;

#[test]
fn start_prints_time_name_and_text_for_every_line() {
    let app = App::with_procfile("web: echo hello from web\n");
    let out = app.run(&["start"]);
    out.assert_code(0);
    let lines = lines(&out.stdout);
    assert!(!lines.is_empty(), "{}", out.report());
    for line in &lines {
        let rest = strip_clock(line).unwrap_or_else(|| {
            panic!(
                "line {line:?} does not start with HH:MM:SS\n{}",
                out.report()
            )
        });
        assert!(
            rest.starts_with("web.1  | ") || rest.starts_with("system | "),
            "line {line:?} is not `HH:MM:SS NAME | text` with the name padded to 6\n{}",
            out.report()
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| strip_clock(l) == Some("web.1  | hello from web")),
        "the process's line is missing\n{}",
        out.report()
    );
}

#[test]
fn start_pads_the_name_column_to_the_longest_name() {
    let app = App::with_procfile(
        "web: echo from web; sleep 100\nlongworker: echo from longworker; sleep 100\n",
    );
    let mut crew = app.spawn(&["start", "--no-timestamp"]);
    crew.wait_for("web.1        | from web\n", SOON);
    crew.wait_for("longworker.1 | from longworker\n", SOON);
    crew.signal(Signal::TERM);
    crew.wait_exit(SOON);
    let stdout = crew.stdout();
    assert!(
        stdout.contains("system       | "),
        "`system` is padded like the rest\n{stdout}"
    );
    for line in stdout.lines() {
        assert_eq!(
            line.find(" | "),
            Some(12),
            "every line has its ` | ` in column 12: {line:?}\n{stdout}"
        );
    }
}

#[test]
fn start_reports_the_real_pid_of_each_process() {
    // `sh -c` is the process crew spawns, so its `$$` is the pid crew reports.
    let app = App::with_procfile("web: echo \"my pid is $$\"\n");
    let out = app.run(&["start", "--no-timestamp"]);
    out.assert_code(0);
    let stdout = out.stdout();
    let pid = out
        .pids
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no `web.1  | started with pid N` line\n{}", out.report()));
    assert!(
        stdout.contains(&format!("web.1  | started with pid {pid}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("web.1  | my pid is {pid}\n")),
        "the announced pid is not the process's pid\n{stdout}"
    );
}

#[test]
fn start_reports_a_process_exit_code_and_the_shutdown() {
    let app = App::with_procfile(
        "web: touch web-up; exec sleep 100\nworker: until [ -e web-up ]; do sleep 0.05; done; exit 3\n",
    );
    let out = app.run(&["start", "--no-timestamp"]);
    out.assert_code(3);
    let stdout = out.stdout();
    for expected in [
        "worker.1 | exited with code 3\n",
        "system   | sending SIGTERM to all processes\n",
        "web.1    | terminated by SIGTERM\n",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?}\n{}",
            out.report()
        );
    }
}

#[test]
fn start_shows_what_processes_write_to_stderr() {
    let app = App::with_procfile("web: echo to-stderr >&2\n");
    let out = app.run(&["start", "--no-timestamp"]);
    out.assert_code(0);
    assert!(
        out.stdout().contains("web.1  | to-stderr\n"),
        "{}",
        out.report()
    );
}

#[test]
fn no_timestamp_drops_the_clock_column() {
    let app = App::with_procfile("web: echo hello\n");
    let out = app.run(&["start", "--no-timestamp"]);
    out.assert_code(0);
    let lines = lines(&out.stdout);
    assert!(
        lines.contains(&"web.1  | hello".to_owned()),
        "{}",
        out.report()
    );
    for line in &lines {
        assert!(
            line.starts_with("web.1  | ") || line.starts_with("system | "),
            "line {line:?} still has a clock\n{}",
            out.report()
        );
    }
}

#[test]
fn no_prefix_prints_process_lines_exactly_as_written() {
    let app = App::with_procfile("web: printf 'plain line\\n  indented | with bar\\n'\n");
    let out = app.run(&["start", "--no-prefix"]);
    out.assert_code(0);
    let lines = lines(&out.stdout);
    assert!(
        lines.contains(&"plain line".to_owned())
            && lines.contains(&"  indented | with bar".to_owned()),
        "process lines should appear verbatim\n{}",
        out.report()
    );
    assert!(
        !out.stdout().contains("web.1"),
        "no name column with --no-prefix\n{}",
        out.report()
    );
}

#[test]
fn piped_output_has_no_colour_by_default() {
    let app = App::with_procfile("web: echo hello\n");
    let out = app.run(&["start"]);
    out.assert_code(0);
    assert!(
        !out.stdout.contains(&ESC),
        "ESC byte in piped output\n{}",
        out.report()
    );
}

#[test]
fn color_flag_forces_colour_on_a_pipe() {
    let app = App::with_procfile("web: echo hello\n");
    let out = app.run(&["start", "--color", "--no-timestamp"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains(&ESC),
        "--color should colour even into a pipe\n{}",
        out.report()
    );
    assert!(
        out.stdout().contains("hello\n"),
        "the text survives colouring\n{}",
        out.report()
    );
}

#[test]
fn a_terminal_gets_colour_by_default() {
    // The control for the two tests below: on a TTY, colour is on.
    let app = App::with_procfile("web: echo hello\n");
    let mut crew = Crew::spawn(app.command_in_pty(&["start"]));
    let code = crew.wait_code(SOON);
    assert_eq!(code, 0, "{}", crew.report());
    assert!(
        crew.stdout_bytes().contains(&ESC),
        "expected colour on a TTY\n{}",
        crew.report()
    );
}

#[test]
fn no_color_flag_disables_colour_on_a_terminal() {
    let app = App::with_procfile("web: echo hello\n");
    let mut crew = Crew::spawn(app.command_in_pty(&["start", "--no-color"]));
    let code = crew.wait_code(SOON);
    assert_eq!(code, 0, "{}", crew.report());
    assert!(crew.stdout().contains("hello"), "{}", crew.report());
    assert!(
        !crew.stdout_bytes().contains(&ESC),
        "ESC byte despite --no-color\n{}",
        crew.report()
    );
}

#[test]
fn no_color_env_disables_colour_on_a_terminal() {
    let app = App::with_procfile("web: echo hello\n");
    let mut command = app.command_in_pty(&["start"]);
    command.env("NO_COLOR", "1");
    let mut crew = Crew::spawn(command);
    let code = crew.wait_code(SOON);
    assert_eq!(code, 0, "{}", crew.report());
    assert!(crew.stdout().contains("hello"), "{}", crew.report());
    assert!(
        !crew.stdout_bytes().contains(&ESC),
        "ESC byte despite NO_COLOR=1\n{}",
        crew.report()
    );
}
