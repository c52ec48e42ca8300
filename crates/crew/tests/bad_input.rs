//! Issue 2, point 5: bad input never panics. Every error says what was wrong
//! and where, exits non-zero, and starts nothing.

mod common;

use common::*;

const PROCFILE: &str = "web: touch web-ran; exec sleep 100\nworker: exec sleep 100\n";

fn app() -> App {
    App::with_procfile(PROCFILE)
}

#[test]
fn malformed_dotenv_names_the_file_and_line() {
    let app = app();
    app.write(".env", "A=1\n# fine\nthis is not an assignment\n");
    let path = app.join(".env").display().to_string();
    app.run(&["start"]).assert_clean_error(&[&path, "line 3"]);
    assert!(!app.exists("web-ran"));
}

#[test]
fn malformed_env_file_given_with_e_names_the_file_and_line() {
    let app = app();
    app.write("config/dev.env", "OK=1\nB=\"never closed\nC=3\n");
    let path = app.join("config/dev.env").display().to_string();
    app.run(&["start", "-e", "config/dev.env"])
        .assert_clean_error(&[&path, "line 2"]);
}

#[test]
fn malformed_dotenv_is_an_error_for_run_too() {
    let app = app();
    app.write(".env", "=no-name\n");
    let path = app.join(".env").display().to_string();
    let out = app.run(&["run", "echo ran"]);
    out.assert_clean_error(&[&path, "line 1"]);
    assert!(!out.stdout().contains("ran"), "{}", out.report());
}

#[test]
fn missing_env_file_is_named() {
    let app = app();
    let path = app.join("nope.env").display().to_string();
    app.run(&["start", "-e", "nope.env"])
        .assert_clean_error(&[&path]);
}

#[test]
fn non_utf8_procfile_is_a_clear_error() {
    let app = App::new();
    app.write("Procfile", b"web: echo caf\xe9\n".as_slice());
    let path = app.join("Procfile").display().to_string();
    app.run(&["check"]).assert_clean_error(&[&path, "UTF-8"]);
    app.run(&["start"]).assert_clean_error(&[&path, "UTF-8"]);
}

#[test]
fn non_utf8_dotenv_is_a_clear_error() {
    let app = app();
    app.write(".env", b"A=caf\xe9\n".as_slice());
    let path = app.join(".env").display().to_string();
    app.run(&["start"]).assert_clean_error(&[&path, "UTF-8"]);
}

#[test]
fn procfile_path_that_is_a_directory_is_a_clear_error() {
    let app = app();
    std::fs::create_dir(app.join("adir")).expect("mkdir");
    let path = app.join("adir").display().to_string();
    app.run(&["check", "-f", "adir"])
        .assert_clean_error(&[&path]);
}

#[test]
fn bad_formation_expression_is_an_error() {
    let app = app();
    app.run(&["start", "-m", "web=lots"])
        .assert_clean_error(&["web=lots"]);
    assert!(!app.exists("web-ran"));
}

#[test]
fn negative_formation_count_is_an_error() {
    let app = app();
    app.run(&["start", "-m", "web=-1"])
        .assert_clean_error(&["web=-1"]);
}

#[test]
fn empty_formation_expression_is_an_error() {
    let app = app();
    app.run(&["start", "-m", ""]).assert_clean_error(&[]);
}

#[test]
fn port_zero_is_an_error() {
    let app = app();
    app.run(&["start", "-p", "0"]).assert_clean_error(&["port"]);
}

#[test]
fn port_flag_out_of_range_is_an_error() {
    let app = app();
    app.run(&["start", "-p", "70000"])
        .assert_clean_error(&["70000"]);
}

#[test]
fn non_numeric_port_in_dotenv_names_the_file() {
    let app = app();
    app.write(".env", "PORT=abc\n");
    let path = app.join(".env").display().to_string();
    app.run(&["start"]).assert_clean_error(&["PORT=abc", &path]);
}

#[test]
fn non_numeric_port_in_the_shell_is_an_error() {
    let app = app();
    let mut command = app.command(&["start"]);
    command.env("PORT", "http");
    let mut crew = Crew::spawn(command);
    crew.wait_exit(SOON);
    crew.finished().assert_clean_error(&["PORT=http"]);
}

/// Regression: `crew start -p 65500` with two types printed `cannot start
/// worker.1: port … is past 65535` as a `system` line, started web anyway and
/// went on running (exit 0 once web ended).
#[test]
fn regression_ports_past_65535_fail_the_start_instead_of_starting_part_of_the_formation() {
    // web.1 would get 65500 and worker.1 65600, which is no port.
    let app = App::with_procfile("web: touch web-ran\nworker: touch worker-ran\n");
    app.run(&["start", "-p", "65500"])
        .assert_clean_error(&["65535"]);
    assert!(
        !app.exists("web-ran") && !app.exists("worker-ran"),
        "nothing may start"
    );
}

/// Regression: `crew start -m web=4294967295` died of SIGABRT with `memory
/// allocation of 103079215080 bytes failed` (the dyno-name list is built
/// before any limit is checked).
#[test]
fn regression_huge_instance_count_is_an_error_not_an_allocation_abort() {
    let app = app();
    app.run(&["start", "-m", "web=4294967295"])
        .assert_clean_error(&["web"]);
    assert!(!app.exists("web-ran"), "nothing may start");
}

#[test]
fn non_numeric_timeout_is_an_error() {
    let app = app();
    app.run(&["start", "-t", "soon"])
        .assert_clean_error(&["soon"]);
}

#[test]
fn missing_root_directory_is_named() {
    let app = app();
    let path = app.join("gone").display().to_string();
    app.run(&["start", "-f", "Procfile", "-d", "gone"])
        .assert_clean_error(&[&path]);
    assert!(!app.exists("web-ran"));
}

#[test]
fn unknown_flag_is_an_error() {
    let app = app();
    app.run(&["start", "--frobnicate"])
        .assert_clean_error(&["--frobnicate"]);
}

#[test]
fn run_without_a_command_is_an_error() {
    let app = app();
    app.run(&["run"]).assert_clean_error(&[]);
}

#[test]
fn port_forward_without_kubernetes_is_an_error() {
    let app = app();
    let data = app.join("data").display().to_string();
    app.run(&[
        "server",
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--router",
        "127.0.0.1:0",
        "--port-forward",
    ])
    .assert_clean_error(&["--port-forward", "--backend kubernetes"]);
}
