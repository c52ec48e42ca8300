//! Issue 2, point 2: `crew check [-f PROCFILE]`.

mod common;

use common::*;

#[test]
fn check_lists_the_types_in_file_order() {
    let app = App::with_procfile(
        "web: python3 -m http.server $PORT\nworker: sleep 100\nclock: sleep 100\n",
    );
    let out = app.run(&["check"]);
    out.assert_code(0);
    assert_eq!(
        out.stdout(),
        "valid procfile detected (web, worker, clock)\n",
        "{}",
        out.report()
    );
    assert!(
        !out.stderr.contains("warning"),
        "a clean Procfile has no warnings\n{}",
        out.report()
    );
}

#[test]
fn check_accepts_crlf_line_endings_and_no_space_after_the_colon() {
    let app = App::with_procfile("# comment\r\nweb:cmd\r\nworker:  cmd2\r\n");
    let out = app.run(&["check"]);
    out.assert_code(0);
    assert_eq!(
        out.stdout(),
        "valid procfile detected (web, worker)\n",
        "{}",
        out.report()
    );
    assert!(
        !out.stderr.contains('\r'),
        "no stray CR in messages\n{}",
        out.report()
    );
}

#[test]
fn check_warns_about_a_non_matching_line_with_its_line_number() {
    // research/local-managers.md §5.1, verbatim, with CRLF endings.
    let app = App::with_procfile("# comment\r\nweb:cmd\r\nworker:  cmd2\r\n+bad: x\r\n");
    let out = app.run(&["check"]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "valid procfile detected (web, worker)\n");
    assert!(
        out.stderr.contains("crew: warning:") && out.stderr.contains("line 4"),
        "expected a warning naming line 4\n{}",
        out.report()
    );
    assert!(
        out.stderr.contains("+bad: x"),
        "the warning should quote the line\n{}",
        out.report()
    );
}

#[test]
fn check_rejects_a_duplicate_type_naming_both_lines() {
    let app = App::with_procfile("web: one\nworker: two\n\nweb: three\n");
    let out = app.run(&["check"]);
    out.assert_clean_error(&["duplicate", "`web`", "line 4", "line 1"]);
    assert_eq!(out.stdout(), "", "no `valid procfile` line on error");
}

#[test]
fn start_rejects_a_duplicate_type_and_starts_nothing() {
    let app = App::with_procfile("web: touch first-ran\nweb: touch second-ran\n");
    let out = app.run(&["start"]);
    out.assert_clean_error(&["duplicate", "line 1", "line 2"]);
    assert!(!app.exists("first-ran") && !app.exists("second-ran"));
}

#[test]
fn check_rejects_an_empty_procfile() {
    let app = App::with_procfile("");
    app.run(&["check"])
        .assert_code(1)
        .assert_clean_error(&["no processes defined"]);
}

#[test]
fn check_rejects_a_comment_only_procfile() {
    let app = App::with_procfile("# web: not really\n\n   \n# worker: neither\n");
    app.run(&["check"])
        .assert_code(1)
        .assert_clean_error(&["no processes defined"]);
}

#[test]
fn start_never_guesses_a_command_for_an_empty_procfile() {
    let app = App::with_procfile("# nothing here\n");
    app.write(
        "package.json",
        "{\"scripts\":{\"start\":\"touch guessed\"}}",
    );
    app.run(&["start"])
        .assert_clean_error(&["no processes defined"]);
    assert!(!app.exists("guessed"));
}

#[test]
fn check_names_the_missing_procfile_path() {
    let app = App::new();
    let out = app.run(&["check"]);
    let tried = app.join("Procfile");
    out.assert_clean_error(&[&tried.display().to_string()]);
}

#[test]
fn check_names_the_missing_path_given_with_f() {
    let app = App::with_procfile("web: true\n");
    let out = app.run(&["check", "-f", "config/Procfile.dev"]);
    let tried = app.join("config/Procfile.dev");
    out.assert_clean_error(&[&tried.display().to_string()]);
}

#[test]
fn check_reads_the_file_given_with_f() {
    let app = App::with_procfile("web: true\n");
    app.write("Procfile.dev", "assets: true\nweb: true\n");
    let out = app.run(&["check", "-f", "Procfile.dev"]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "valid procfile detected (assets, web)\n");
}

#[test]
fn check_reads_the_procfile_in_the_root_given_with_d() {
    let app = App::new();
    app.write("backend/Procfile", "api: true\n");
    let out = app.run(&["check", "-d", "backend"]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "valid procfile detected (api)\n");
}

#[test]
fn check_says_foremans_line_on_stdout_and_honchos_on_stderr() {
    // foreman's scripts read stdout; honcho's read stderr (it logs the line).
    let app = App::with_procfile("web: true\nworker: true\n");
    let out = app.run(&["check"]);
    out.assert_code(0);
    assert_eq!(out.stdout(), "valid procfile detected (web, worker)\n");
    assert_eq!(out.stderr, "Valid procfile detected (web, worker)\n");
}

#[test]
fn check_says_it_once_when_both_streams_are_one() {
    let app = App::with_procfile("web: true\n");
    let out = app
        .shell("\"$CREW\" check 2>&1")
        .output()
        .expect("running sh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "valid procfile detected (web)\n"
    );
}
