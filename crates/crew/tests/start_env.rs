//! Issue 2, point 3: what `crew start` runs and with which environment: PORT,
//! DYNO, PS, `.env`, `-e`, the types named on the command line and `-m`/`-c`.

mod common;

use common::*;

/// Starts crew, waits for every `needle` on stdout, stops it with SIGTERM and
/// returns stdout.
fn output_of(app: &App, args: &[&str], needles: &[&str]) -> String {
    let mut crew = app.spawn(args);
    for needle in needles {
        crew.wait_for(needle, SOON);
    }
    crew.signal(Signal::TERM);
    let code = crew.wait_code(SOON);
    assert_eq!(
        code,
        143,
        "SIGTERM should end the run with 143\n{}",
        crew.report()
    );
    crew.stdout()
}

/// Each type prints its DYNO and PORT, then stays up.
const PORTS_PROCFILE: &str = "\
web: echo \"$DYNO PORT=$PORT\"; exec sleep 100
worker: echo \"$DYNO PORT=$PORT\"; exec sleep 100
clock: echo \"$DYNO PORT=$PORT\"; exec sleep 100
";

#[test]
fn port_follows_the_formula_and_a_type_scaled_to_zero_keeps_its_slot() {
    let app = App::with_procfile(PORTS_PROCFILE);
    let stdout = output_of(
        &app,
        &["start", "--no-timestamp", "-m", "web=2,worker=0,clock=1"],
        &[
            "web.1   | web.1 PORT=5000\n",
            "web.2   | web.2 PORT=5001\n",
            "clock.1 | clock.1 PORT=5200\n",
        ],
    );
    assert!(
        !stdout.contains("worker."),
        "worker=0 starts no worker\n{stdout}"
    );
}

#[test]
fn port_flag_sets_the_base_over_dotenv_and_shell() {
    let app = App::with_procfile(PORTS_PROCFILE);
    app.write(".env", "PORT=7000\n");
    let mut command = app.command(&["start", "--no-timestamp", "-p", "6000"]);
    command.env("PORT", "8000");
    let mut crew = Crew::spawn(command);
    crew.wait_for("web.1    | web.1 PORT=6000\n", SOON);
    crew.wait_for("worker.1 | worker.1 PORT=6100\n", SOON);
    crew.wait_for("clock.1  | clock.1 PORT=6200\n", SOON);
    crew.signal(Signal::TERM);
    crew.wait_exit(SOON);
}

#[test]
fn dotenv_port_sets_the_base_over_the_shell() {
    let app = App::with_procfile(PORTS_PROCFILE);
    app.write(".env", "PORT=7000\n");
    let mut command = app.command(&["start", "--no-timestamp"]);
    command.env("PORT", "8000");
    let mut crew = Crew::spawn(command);
    crew.wait_for("web.1    | web.1 PORT=7000\n", SOON);
    crew.wait_for("worker.1 | worker.1 PORT=7100\n", SOON);
    crew.signal(Signal::TERM);
    crew.wait_exit(SOON);
}

#[test]
fn shell_port_sets_the_base_without_flag_or_dotenv() {
    let app = App::with_procfile(PORTS_PROCFILE);
    let mut command = app.command(&["start", "--no-timestamp"]);
    command.env("PORT", "8000");
    let mut crew = Crew::spawn(command);
    crew.wait_for("web.1    | web.1 PORT=8000\n", SOON);
    crew.wait_for("clock.1  | clock.1 PORT=8200\n", SOON);
    crew.signal(Signal::TERM);
    crew.wait_exit(SOON);
}

#[test]
fn dyno_and_ps_name_each_instance() {
    let app = App::with_procfile("web: echo \"DYNO=$DYNO PS=$PS\"; exec sleep 100\n");
    output_of(
        &app,
        &["start", "--no-timestamp", "-m", "web=2"],
        &[
            "web.1  | DYNO=web.1 PS=web.1\n",
            "web.2  | DYNO=web.2 PS=web.2\n",
        ],
    );
}

#[test]
fn dotenv_in_the_root_is_read_by_default() {
    let app = App::with_procfile("web: echo \"GREETING=$GREETING\"\n");
    app.write(".env", "GREETING=hello from dotenv\n");
    let out = app.run(&["start", "--no-timestamp"]);
    out.assert_code(0);
    assert!(
        out.stdout()
            .contains("web.1  | GREETING=hello from dotenv\n"),
        "{}",
        out.report()
    );
}

#[test]
fn dotenv_values_follow_the_documented_dialect() {
    let app = App::with_procfile(
        "web: printf '[%s]' \"$A\" \"$B\" \"$C\" \"$E\" \"$F\"; printf '\\n'; [ \"${E+set}\" = set ] && echo E-is-set\n",
    );
    app.write(
        ".env",
        "export A=1\r\nB=\"x y\" # c\r\nC='$HOME'\r\nE=\r\nF=a b\r\n",
    );
    let out = app.run(&["start", "--no-timestamp"]);
    out.assert_code(0);
    let stdout = out.stdout();
    assert!(
        stdout.contains("web.1  | [1][x y][$HOME][][a b]\n"),
        "{}",
        out.report()
    );
    assert!(stdout.contains("web.1  | E-is-set\n"), "{}", out.report());
}

#[test]
fn env_flag_reads_every_listed_file() {
    let app = App::with_procfile("web: echo \"A=$A B=$B\"\n");
    app.write("one.env", "A=from-one\n");
    app.write("two.env", "B=from-two\n");
    let out = app.run(&["start", "--no-timestamp", "-e", "one.env,two.env"]);
    out.assert_code(0);
    assert!(
        out.stdout().contains("web.1  | A=from-one B=from-two\n"),
        "{}",
        out.report()
    );
}

#[test]
fn env_flag_replaces_the_default_dotenv() {
    let app = App::with_procfile("web: echo \"A=$A D=$D\"\n");
    app.write(".env", "D=from-default\n");
    app.write("one.env", "A=from-one\n");
    let out = app.run(&["start", "--no-timestamp", "-e", "one.env"]);
    out.assert_code(0);
    assert!(
        out.stdout().contains("web.1  | A=from-one D=\n"),
        "{}",
        out.report()
    );
}

#[test]
fn crew_never_substitutes_variables_itself() {
    // foreman's gsub turned `$PORTAL` into `5000AL`; the shell must do it.
    let app = App::with_procfile("web: echo \"got $PORTAL\"\n");
    app.write(".env", "PORTAL=x\n");
    let out = app.run(&["start", "--no-timestamp"]);
    out.assert_code(0);
    assert!(
        out.stdout().contains("web.1  | got x\n"),
        "{}",
        out.report()
    );
}

#[test]
fn python_output_is_unbuffered() {
    let app = App::with_procfile("web: echo \"PYTHONUNBUFFERED=$PYTHONUNBUFFERED\"\n");
    let out = app.run(&["start", "--no-timestamp"]);
    out.assert_code(0);
    assert!(
        out.stdout().contains("web.1  | PYTHONUNBUFFERED=1\n"),
        "{}",
        out.report()
    );
}

#[test]
fn processes_run_in_the_app_root() {
    let app = App::new();
    app.write("site/Procfile", "web: pwd\n");
    let out = app.run(&["start", "--no-timestamp", "-f", "site/Procfile"]);
    out.assert_code(0);
    let expected = format!("web.1  | {}\n", app.join("site").display());
    assert!(out.stdout().contains(&expected), "{}", out.report());
}

#[test]
fn root_flag_sets_where_processes_run() {
    let app = App::with_procfile("web: pwd\n");
    std::fs::create_dir(app.join("elsewhere")).expect("mkdir");
    let out = app.run(&[
        "start",
        "--no-timestamp",
        "-f",
        "Procfile",
        "-d",
        "elsewhere",
    ]);
    out.assert_code(0);
    let expected = format!("web.1  | {}\n", app.join("elsewhere").display());
    assert!(out.stdout().contains(&expected), "{}", out.report());
}

const TWO_TYPES: &str = "\
web: echo \"web up as $DYNO\"; exec sleep 100
worker: touch worker-ran; echo \"worker up as $DYNO\"; exec sleep 100
";

#[test]
fn start_with_a_type_runs_only_that_type() {
    let app = App::with_procfile("web: echo web-ran\nworker: touch worker-ran; exec sleep 100\n");
    let out = app.run(&["start", "--no-timestamp", "web"]);
    out.assert_code(0);
    assert!(
        out.stdout().contains("web.1  | web-ran\n"),
        "{}",
        out.report()
    );
    assert!(!out.stdout().contains("worker"), "{}", out.report());
    assert!(!app.exists("worker-ran"), "the worker must not have run");
}

#[test]
fn formation_all_sets_every_type() {
    let app = App::with_procfile(TWO_TYPES);
    output_of(
        &app,
        &["start", "--no-timestamp", "-m", "all=2"],
        &[
            "web.1    | web up as web.1\n",
            "web.2    | web up as web.2\n",
            "worker.1 | worker up as worker.1\n",
            "worker.2 | worker up as worker.2\n",
        ],
    );
}

#[test]
fn formation_entries_apply_left_to_right() {
    let app = App::with_procfile(TWO_TYPES);
    let stdout = output_of(
        &app,
        &["start", "--no-timestamp", "-m", "all=2,worker=0"],
        &["web.1  | web up as web.1\n", "web.2  | web up as web.2\n"],
    );
    assert!(!stdout.contains("worker."), "{stdout}");
    assert!(!app.exists("worker-ran"));
}

#[test]
fn honcho_c_flag_sets_the_formation() {
    let app = App::with_procfile(TWO_TYPES);
    let stdout = output_of(
        &app,
        &["start", "--no-timestamp", "-c", "web=2,worker=0"],
        &["web.1  | web up as web.1\n", "web.2  | web up as web.2\n"],
    );
    assert!(!stdout.contains("worker."), "{stdout}");
}

#[test]
fn unknown_type_argument_is_an_error_and_starts_nothing() {
    let app = App::with_procfile("web: touch web-ran; exec sleep 100\n");
    app.run(&["start", "wbe"]).assert_clean_error(&["wbe"]);
    assert!(!app.exists("web-ran"), "nothing may start");
}

#[test]
fn unknown_type_in_formation_is_an_error_and_starts_nothing() {
    let app = App::with_procfile("web: touch web-ran; exec sleep 100\n");
    app.run(&["start", "-m", "web=1,wrker=2"])
        .assert_clean_error(&["wrker"]);
    assert!(!app.exists("web-ran"), "nothing may start");
}

#[test]
fn foreman_long_flags_work() {
    let app = App::new();
    app.write(
        "config/Procfile",
        "web: echo \"$DYNO PORT=$PORT A=$A B=$B in $(pwd)\"; exec sleep 100\n",
    );
    app.write("srv/a.env", "A=1\n");
    app.write("srv/b.env", "B=2\n");
    let root = app.join("srv").display().to_string();
    output_of(
        &app,
        &[
            "start",
            "--no-timestamp",
            "--procfile",
            "config/Procfile",
            "--root",
            "srv",
            "--env",
            "a.env",
            "--env",
            "b.env",
            "--formation",
            "web=2",
            "--port",
            "6000",
            "--timeout",
            "1",
        ],
        &[
            &format!("web.1  | web.1 PORT=6000 A=1 B=2 in {root}\n"),
            &format!("web.2  | web.2 PORT=6001 A=1 B=2 in {root}\n"),
        ],
    );
}

#[test]
fn honcho_concurrency_long_flag_works() {
    let app = App::with_procfile(TWO_TYPES);
    let stdout = output_of(
        &app,
        &["start", "--no-timestamp", "--concurrency", "web=2,worker=0"],
        &["web.1  | web up as web.1\n", "web.2  | web up as web.2\n"],
    );
    assert!(!stdout.contains("worker."), "{stdout}");
}

#[test]
fn crlf_procfile_commands_run_without_a_stray_cr() {
    let app = App::with_procfile("# comment\r\nweb:echo \"[$DYNO]\"\r\n");
    let out = app.run(&["start", "--no-timestamp"]);
    out.assert_code(0);
    assert!(
        out.stdout().contains("web.1  | [web.1]\n"),
        "{}",
        out.report()
    );
}

/// A crew started with signals ignored (`nohup`, or `crew start &` from a
/// script, which ignores SIGINT and SIGQUIT) starts its processes with every
/// signal at its default: ignored signals survive exec, and a process that
/// ignored SIGHUP or SIGINT would not stop the way crew stops it.
#[test]
fn processes_start_with_no_signal_ignored_or_blocked() {
    let app = App::with_procfile(
        "web: grep -E '^Sig(Ign|Blk)' /proc/self/status | tr '\\t' ' '; exec sleep 100\n",
    );
    let mut command = app.shell("trap '' HUP INT QUIT; exec \"$CREW\" start --no-timestamp");
    command.env("CREW", CREW);
    let mut crew = Crew::spawn(command);
    crew.wait_for("web.1  | SigBlk: 0000000000000000\n", SOON);
    crew.wait_for("web.1  | SigIgn: ", SOON);
    crew.signal(Signal::TERM);
    crew.wait_code(SOON);
    let stdout = crew.stdout();
    let ignored = stdout
        .lines()
        .find_map(|l| l.split_once("SigIgn: "))
        .and_then(|(_, mask)| u64::from_str_radix(mask.trim(), 16).ok())
        .expect("the SigIgn line");
    // Signals 1 to 31; glibc keeps the real-time ones above for itself.
    assert_eq!(
        ignored & 0x7fff_ffff,
        0,
        "signals ignored: {ignored:#x}\n{stdout}"
    );
}
