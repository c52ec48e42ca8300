//! Issue 19, points 3 and 4: options before the subcommand (as honcho takes
//! its common ones), and `PROCFILE` from the env files or the shell.

mod common;

use common::*;

#[test]
fn a_procfile_given_before_check_is_read() {
    let app = App::with_procfile("web: true\n");
    app.write("Procfile.dev", "assets: true\nweb: true\n");
    let out = app.run(&["-f", "Procfile.dev", "check"]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "valid procfile detected (assets, web)\n");
}

#[test]
fn an_env_file_given_before_run_reaches_the_command() {
    let app = App::new();
    app.write(".env.test", "GREETING=from-the-test-env\n");
    let out = app.run(&["-e", ".env.test", "run", "echo $GREETING"]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "from-the-test-env\n", "{}", out.report());
}

#[test]
fn a_port_and_root_given_before_run_count() {
    let app = App::new();
    app.write("backend/Procfile", "api: true\n");
    let out = app.run(&[
        "-d",
        "backend",
        "-p",
        "7000",
        "run",
        "echo $PORT $(basename $PWD)",
    ]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "7000 backend\n", "{}", out.report());
}

#[test]
fn given_on_both_sides_the_one_after_the_subcommand_wins() {
    let app = App::with_procfile("web: true\n");
    app.write("Procfile.a", "a: true\n");
    app.write("Procfile.b", "b: true\n");
    let out = app.run(&["-f", "Procfile.a", "check", "-f", "Procfile.b"]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "valid procfile detected (b)\n");
    app.write(".env.a", "X=a\n");
    app.write(".env.b", "X=b\n");
    let out = app.run(&["-e", ".env.a", "run", "-e", ".env.b", "echo $X"]);
    assert_eq!(out.stdout(), "b\n", "{}", out.report());
}

#[test]
fn start_takes_its_options_before_the_subcommand() {
    let app = App::with_procfile("web: true\n");
    app.write("Procfile.dev", "job: echo port=$PORT\n");
    let out = app.run(&[
        "-f",
        "Procfile.dev",
        "-p",
        "6100",
        "--no-timestamp",
        "--no-color",
        "start",
    ]);
    out.assert_code(0);
    let stdout = out.stdout();
    assert!(stdout.contains("job.1  | port=6100"), "{}", out.report());
    assert!(
        stdout
            .lines()
            .all(|l| !l.starts_with(|c: char| c.is_ascii_digit())),
        "no timestamps\n{}",
        out.report()
    );
}

#[test]
fn an_option_the_command_has_no_use_for_is_refused_before_it_too() {
    let app = App::with_procfile("web: true\n");
    let out = app.run(&["-p", "6000", "check"]);
    out.assert_clean_error(&["-p", "no such option"]);
    let out = app.run(&["-f", "Procfile", "ps"]);
    out.assert_clean_error(&["-f", "no such option"]);
}

#[test]
fn procfile_in_the_env_file_picks_the_procfile() {
    let app = App::with_procfile("web: true\n");
    app.write("Procfile.dev", "assets: true\n");
    app.write(".env", "PROCFILE=Procfile.dev\n");
    let out = app.run(&["check"]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "valid procfile detected (assets)\n");
}

#[test]
fn procfile_from_an_env_file_given_with_e_and_before_the_subcommand() {
    let app = App::with_procfile("web: true\n");
    app.write("config/Procfile.test", "tests: echo in $(basename $PWD)\n");
    app.write(".env.test", "PROCFILE=config/Procfile.test\n");
    let out = app.run(&["-e", ".env.test", "check"]);
    assert_eq!(
        out.stdout(),
        "valid procfile detected (tests)\n",
        "{}",
        out.report()
    );
    // The root stays where the env file named it from.
    let out = app.run(&["-e", ".env.test", "run", "tests"]);
    let root = app
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(out.stdout(), format!("in {root}\n"), "{}", out.report());
}

#[test]
fn procfile_with_f_wins_over_procfile_in_the_env_file() {
    let app = App::with_procfile("web: true\n");
    app.write("Procfile.dev", "assets: true\n");
    app.write("Procfile.other", "other: true\n");
    app.write(".env", "PROCFILE=Procfile.dev\n");
    let out = app.run(&["check", "-f", "Procfile.other"]);
    assert_eq!(out.stdout(), "valid procfile detected (other)\n");
}

#[test]
fn procfile_from_the_shell_counts_and_the_env_file_wins_over_it() {
    let app = App::with_procfile("web: true\n");
    app.write("Procfile.shell", "shell: true\n");
    app.write("Procfile.dev", "assets: true\n");
    let out = app
        .command(&["check"])
        .env("PROCFILE", "Procfile.shell")
        .output()
        .expect("running crew");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "valid procfile detected (shell)\n"
    );
    app.write(".env", "PROCFILE=Procfile.dev\n");
    let out = app
        .command(&["check"])
        .env("PROCFILE", "Procfile.shell")
        .output()
        .expect("running crew");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "valid procfile detected (assets)\n"
    );
}

#[test]
fn procfile_naming_a_missing_file_is_an_error_naming_it() {
    let app = App::with_procfile("web: true\n");
    app.write(".env", "PROCFILE=Procfile.gone\n");
    let out = app.run(&["check"]);
    out.assert_clean_error(&["Procfile.gone"]);
}
