//! Issue 2, point 3: what `crew start` does with the bytes processes write.
//! Lines are never torn, partial lines show up, odd bytes pass through.

mod common;

use std::time::Duration;

use common::*;

const LINES_PER_WRITER: usize = 10_000;
const LINE_LEN: usize = 4096;

/// Writes LINES_PER_WRITER lines of exactly LINE_LEN bytes plus `\n`, each
/// `NAME-IIIII-xxx…`, as fast as it can, in writes of uneven sizes that cut
/// lines anywhere.
const WRITER: &str = r#"
import os, sys
name = sys.argv[1]
count, width = int(sys.argv[2]), int(sys.argv[3])
lines = []
for i in range(count):
    head = f"{name}-{i:05d}-".encode()
    lines.append(head + b"x" * (width - len(head)) + b"\n")
data = memoryview(b"".join(lines))
sizes = [4097, 1, 65536, 3000, 100000, 7, 8192, 4096, 65535]
pos = k = 0
while pos < len(data):
    pos += os.write(1, data[pos:pos + sizes[k % len(sizes)]])
    k += 1
"#;

#[test]
fn output_is_never_torn_between_two_fast_writers() {
    let app = App::new();
    app.write("writer.py", WRITER);
    // The writers stay up afterwards: the first exit would stop the run.
    app.write(
        "Procfile",
        format!(
            "alpha: python3 writer.py alpha {LINES_PER_WRITER} {LINE_LEN}; exec sleep 100\n\
             bravo: python3 writer.py bravo {LINES_PER_WRITER} {LINE_LEN}; exec sleep 100\n"
        ),
    );
    let mut crew = app.spawn(&["start", "--no-timestamp", "--no-color", "-t", "1"]);
    let expected = 2 * LINES_PER_WRITER;
    // Two `started with pid` lines come first.
    crew.wait_until(&format!("{expected} lines of output"), SLOW, |out| {
        out.lines >= expected + 2
    });
    crew.signal(Signal::TERM);
    assert_eq!(crew.wait_code(SOON), 143, "{}", crew.report());

    let filler = vec![b'x'; LINE_LEN];
    let problems = crew.with_stdout(|out| {
        let mut next = [0usize; 2];
        let mut problems = Vec::new();
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &out.bytes) {
            let line = &out.bytes[start..end];
            start = end + 1;
            if line.starts_with(b"system  | ") {
                continue;
            }
            let which = if line.starts_with(b"alpha.1 | ") {
                0
            } else if line.starts_with(b"bravo.1 | ") {
                1
            } else {
                problems.push(format!(
                    "line without a dyno prefix: {:?}",
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                ));
                continue;
            };
            let payload = &line[10..];
            if payload.len() < 200 {
                let text = String::from_utf8_lossy(payload);
                if ["started with pid ", "terminated by ", "exited with code "]
                    .iter()
                    .any(|s| text.starts_with(s))
                {
                    continue;
                }
            }
            let name = ["alpha", "bravo"][which];
            let head = format!("{name}-{:05}-", next[which]);
            let intact = payload.len() == LINE_LEN
                && payload.starts_with(head.as_bytes())
                && payload[head.len()..] == filler[head.len()..];
            if !intact {
                problems.push(format!(
                    "{name} line {}: expected {head}x… ({LINE_LEN} bytes), got {} bytes starting {:?}",
                    next[which],
                    payload.len(),
                    String::from_utf8_lossy(&payload[..payload.len().min(40)])
                ));
            }
            next[which] += 1;
        }
        if start != out.bytes.len() {
            problems.push("the output ends without a newline".to_owned());
        }
        if next != [LINES_PER_WRITER, LINES_PER_WRITER] {
            problems.push(format!(
                "expected {LINES_PER_WRITER} lines from each writer, got alpha {} and bravo {}",
                next[0], next[1]
            ));
        }
        problems
    });
    assert!(
        problems.is_empty(),
        "{} problems, the first ones:\n{}",
        problems.len(),
        problems[..problems.len().min(10)].join("\n")
    );
}

#[test]
fn a_partial_line_shows_up_without_a_newline() {
    let app = App::with_procfile("web: printf 'Password: '; exec sleep 100\n");
    let mut crew = app.spawn(&["start", "--no-timestamp"]);
    crew.pid_of("web.1");
    // Flushed after ~100 ms idle; the process sleeps for 100 s, so seeing it at
    // all proves the idle flush. The deadline leaves room for a loaded machine.
    crew.wait_for("web.1  | Password: ", Duration::from_secs(3));
    crew.signal(Signal::TERM);
    crew.wait_exit(SOON);
}

#[test]
fn a_last_line_without_a_newline_is_not_lost() {
    let app = App::with_procfile("web: printf 'last words'\n");
    let out = app.run(&["start", "--no-timestamp"]);
    out.assert_code(0);
    assert!(
        out.stdout().contains("web.1  | last words\n"),
        "{}",
        out.report()
    );
}

#[test]
fn invalid_utf8_passes_through() {
    let app = App::with_procfile("web: printf 'bad \\377\\376 bytes\\n'\n");
    let out = app.run(&["start", "--no-timestamp", "--no-color"]);
    out.assert_code(0);
    assert_no_panic(&out.stderr);
    assert!(
        memchr::memmem::find(&out.stdout, b"web.1  | bad \xff\xfe bytes\n").is_some(),
        "the bytes should pass through untouched\n{}",
        out.report()
    );
}

#[test]
fn ansi_codes_from_a_process_pass_through() {
    let app = App::with_procfile("web: printf '\\033[31mred\\033[0m plain\\n'\n");
    let out = app.run(&["start", "--no-timestamp", "--no-color"]);
    out.assert_code(0);
    assert!(
        memchr::memmem::find(&out.stdout, b"web.1  | \x1b[31mred\x1b[0m plain\n").is_some(),
        "{}",
        out.report()
    );
}

#[test]
fn a_process_colour_cannot_tint_the_next_prefix() {
    // The process leaves red switched on; with --color every prefix starts
    // with a reset.
    let app =
        App::with_procfile("web: printf '\\033[31munterminated\\n'; echo next; exec sleep 100\n");
    let mut crew = app.spawn(&["start", "--no-timestamp", "--color"]);
    crew.wait_for("next\n", SOON);
    crew.signal(Signal::TERM);
    crew.wait_exit(SOON);
    let stdout = crew.stdout_bytes();
    let line_start = memchr::memmem::find(&stdout, b"unterminated\n").expect("the line") + 13;
    assert!(
        stdout[line_start..].starts_with(b"\x1b[0m"),
        "the line after an unterminated colour should start with a reset\n{}",
        crew.report()
    );
}

#[test]
fn a_one_mib_line_passes_through_intact() {
    let app = App::with_procfile("web: head -c 1048576 /dev/zero | tr '\\0' a; echo; echo after\n");
    let out = app.run(&["start", "--no-timestamp", "--no-color"]);
    out.assert_code(0);
    assert_no_panic(&out.stderr);
    let stdout = &out.stdout;
    let at = memchr::memmem::find(stdout, b"web.1  | aaaa")
        .unwrap_or_else(|| panic!("the long line is missing\n{}", out.report()));
    let body = &stdout[at + 9..];
    let len = memchr::memchr(b'\n', body).expect("the long line ends");
    assert_eq!(len, 1 << 20, "the 1 MiB line was cut or padded");
    assert!(
        body[..len].iter().all(|b| *b == b'a'),
        "the 1 MiB line was altered"
    );
    assert!(
        out.stdout().contains("web.1  | after\n"),
        "output goes on after the long line\n{}",
        out.report()
    );
}

#[test]
fn a_process_stdin_stays_open_and_silent() {
    // foreman PR #803: a watcher that reads stdin must not see EOF at once.
    let app = App::with_procfile("web: cat; echo \"stdin ended\"\n");
    let mut crew = app.spawn(&["start", "--no-timestamp"]);
    let web = crew.pid_of("web.1");
    let stdin = std::fs::read_link(format!("/proc/{web}/fd/0")).unwrap_or_else(|e| {
        panic!(
            "web.1 (pid {web}) is gone already; did its stdin end? ({e})\n{}",
            crew.report()
        )
    });
    assert_ne!(
        stdin,
        std::path::Path::new("/dev/null"),
        "a process's stdin should not be /dev/null"
    );
    crew.signal(Signal::TERM);
    let code = crew.wait_code(SOON);
    assert!(
        code == 143 && !crew.stdout().contains("stdin ended"),
        "cat saw end of file before the stop\n{}",
        crew.report()
    );
}

#[test]
fn output_written_just_before_an_exit_is_not_lost() {
    let app = App::new();
    app.write("writer.py", WRITER);
    app.write("Procfile", "web: exec python3 writer.py web 10000 100\n");
    let out = app.run(&["start", "--no-timestamp", "--no-color"]);
    out.assert_code(0);
    let lines = lines(&out.stdout);
    let written: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("web.1  | web-"))
        .collect();
    assert_eq!(written.len(), 10_000, "lines were lost\n{}", out.report());
    assert!(
        written
            .last()
            .is_some_and(|l| l.starts_with("web.1  | web-09999-")),
        "the last line came out of order\n{}",
        out.report()
    );
    let last_line = lines.iter().rposition(|l| l.starts_with("web.1  | web-"));
    let exit_line = lines
        .iter()
        .position(|l| l == "web.1  | exited with code 0");
    assert!(
        exit_line.is_some() && exit_line > last_line,
        "`exited with code 0` should follow the process's last line\n{}",
        out.report()
    );
}
