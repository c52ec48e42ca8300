//! Issue 19, points 1 and 2: `crew export` to foreman's init formats, checked
//! by the programs that read them: `systemd-analyze verify` on the units,
//! supervisord and runit running the exported formation for real, launchd
//! plists read by python3's plistlib, and inittab lines run by sh and su.
//! Tests that need a tool (or root) say so and skip without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Each process writes what it got, and its pid, then waits to be stopped.
/// `%` (supervisord's interpolation) and ` ;` (its inline comments) are in the
/// command on purpose.
const RECORDING_PROCFILE: &str = "web: printf '%s|%s|%s|%s|%s\\n' \"$PORT\" \"$DYNO\" \"$PS\" \"$SECRET\" \"$QUOTED\" > \"env-$DYNO.txt\" ; echo $$ > \"pid-$DYNO\" ; exec sleep 1000\n\
worker: printf '%s|%s|%s|%s|%s\\n' \"$PORT\" \"$DYNO\" \"$PS\" \"$SECRET\" \"$QUOTED\" > \"env-$DYNO.txt\" ; echo $$ > \"pid-$DYNO\" ; exec sleep 1000\n";

/// Values every format must carry exactly: `$`, `%`, `;`, quotes, a backslash.
const RECORDING_ENV: &str = "SECRET='s3 cr$t 100%; it'\nQUOTED='say \"hi\" \\ back'\n";

fn recording_app() -> App {
    let app = App::with_procfile(RECORDING_PROCFILE);
    app.write(".env", RECORDING_ENV);
    app
}

fn expected_line(port: u16, dyno: &str) -> String {
    format!("{port}|{dyno}|{dyno}|s3 cr$t 100%; it|say \"hi\" \\ back\n")
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("running id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn alive(pid: i32) -> bool {
    // A zombie is gone as far as the formation is concerned.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn pid_of(app: &App, dyno: &str) -> i32 {
    read(&app.join(&format!("pid-{dyno}")))
        .trim()
        .parse()
        .expect("a pid")
}

/// A supervisor process (supervisord, runsvdir) in its own process group; on
/// drop the whole group and every recorded pid is killed.
struct Supervisor {
    child: Child,
    pids: Vec<i32>,
}

impl Supervisor {
    fn spawn(mut command: Command) -> Supervisor {
        use std::os::unix::process::CommandExt;
        command.process_group(0).stdin(Stdio::null());
        let child = command.spawn().expect("starting the supervisor");
        Supervisor {
            child,
            pids: Vec::new(),
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        poll_until(timeout, || matches!(self.child.try_wait(), Ok(Some(_))))
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Signals go through kill(2) directly: procps' `kill -KILL -PGID`
        // (4.0.2) sends to pid -1, every process the caller may signal.
        if let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
        }
        for pid in self
            .pids
            .iter()
            .filter_map(|&pid| rustix::process::Pid::from_raw(pid))
        {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_files(app: &App, dynos: &[&str]) {
    let ready = poll_until(Duration::from_secs(30), || {
        dynos.iter().all(|d| {
            std::fs::read_to_string(app.join(&format!("env-{d}.txt")))
                .is_ok_and(|t| t.ends_with('\n'))
                && std::fs::read_to_string(app.join(&format!("pid-{d}")))
                    .is_ok_and(|t| t.ends_with('\n'))
        })
    });
    assert!(ready, "the processes did not all start: {dynos:?}");
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        eprintln!("skipped: needs systemd-analyze (Debian's systemd)");
        return;
    }
    let app = recording_app();
    app.write(
        ".env",
        "SECRET='s3 cr$t %i 100%'\nMULTI=\"line one\\nline two\"\n",
    );
    let out = app.run(&["export", "systemd", "units", "-a", "shop", "-m", "web=2"]);
    out.assert_code(0);
    let units = app.join("units");
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(units.join("shop.target"))
        .arg(units.join("shop-web@1.service"))
        .arg(units.join("shop-web@2.service"))
        .arg(units.join("shop-worker@1.service"))
        .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
        .output()
        .expect("running systemd-analyze");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert_eq!(stderr, "", "systemd-analyze verify warned");
}

#[test]
fn systemd_layout_is_a_target_and_a_template_unit_per_type() {
    let app = recording_app();
    app.write(
        ".env",
        "SECRET='s3 cr$t %i 100%'\nMULTI=\"line one\\nline two\"\nPORT=6000\n",
    );
    let out = app.run(&[
        "export",
        "systemd",
        "units",
        "-a",
        "shop",
        "-m",
        "web=2",
        "--timeout",
        "20",
        "-u",
        "deploy",
    ]);
    out.assert_code(0);
    let units = app.join("units");
    let target = read(&units.join("shop.target"));
    assert!(
        target.contains("Wants=shop-web@1.service shop-web@2.service shop-worker@1.service\n"),
        "{target}"
    );
    assert!(target.contains("WantedBy=multi-user.target"), "{target}");
    let web = read(&units.join("shop-web@.service"));
    for line in [
        "PartOf=shop.target",
        "User=deploy",
        &format!("WorkingDirectory={}", app.path().display()),
        &format!("EnvironmentFile={}", units.join("shop.env").display()),
        "Environment=DYNO=web.%i PS=web.%i",
        "Restart=always",
        "KillMode=control-group",
        "TimeoutStopSec=20",
        "WantedBy=shop.target",
    ] {
        assert!(web.lines().any(|l| l == line), "no {line:?} in\n{web}");
    }
    // The port block comes from PORT in .env: web at 6000, worker at 6100.
    assert!(web.contains("PORT=$$((6000 + $$1 - 1))"), "{web}");
    let worker = read(&units.join("shop-worker@.service"));
    assert!(worker.contains("PORT=$$((6100 + $$1 - 1))"), "{worker}");
    // Config vars live in a file only root reads, in systemd's
    // EnvironmentFile quoting; PORT is the base, not a var.
    let env = read(&units.join("shop.env"));
    assert!(env.contains("SECRET=\"s3 cr\\$t %i 100%\"\n"), "{env}");
    assert!(env.contains("MULTI=\"line one\nline two\"\n"), "{env}");
    assert!(!env.contains("PORT"), "{env}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(units.join("shop.env"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn re_exporting_removes_what_the_earlier_export_wrote_and_nothing_else() {
    let app = recording_app();
    app.run(&["export", "systemd", "units", "-a", "shop"])
        .assert_code(0);
    app.write("units/shop-notes.txt", "mine");
    app.write("units/other.service", "[Service]\nExecStart=/bin/true\n");
    // worker leaves the Procfile.
    app.write("Procfile", "web: sleep 1000\n");
    let out = app.run(&["export", "systemd", "units", "-a", "shop"]);
    out.assert_code(0);
    assert!(
        out.stdout().contains(&format!(
            "removed {}",
            app.join("units/shop-worker@.service").display()
        )),
        "{}",
        out.report()
    );
    assert!(!app.exists("units/shop-worker@.service"));
    assert!(app.exists("units/shop-web@.service"));
    assert!(
        app.exists("units/shop-notes.txt"),
        "a file crew did not write stays"
    );
    assert!(
        app.exists("units/other.service"),
        "a file crew did not write stays"
    );
}

#[test]
fn re_exporting_fewer_processes_removes_their_files_only() {
    let app = recording_app();
    app.run(&["export", "upstart", "jobs", "-a", "shop", "-m", "web=3"])
        .assert_code(0);
    assert!(app.exists("jobs/shop-web-3.conf"));
    app.write("jobs/shop-web-9.conf", "# someone else's job\n");
    app.run(&[
        "export",
        "upstart",
        "jobs",
        "-a",
        "shop",
        "-m",
        "web=1,worker=0",
    ])
    .assert_code(0);
    assert!(app.exists("jobs/shop-web-1.conf"));
    assert!(!app.exists("jobs/shop-web-2.conf") && !app.exists("jobs/shop-web-3.conf"));
    assert!(!app.exists("jobs/shop-worker.conf") && !app.exists("jobs/shop-worker-1.conf"));
    assert!(
        app.exists("jobs/shop-web-9.conf"),
        "a file crew did not write stays"
    );
}

#[test]
fn a_file_crew_did_not_write_is_never_written_over() {
    let app = recording_app();
    app.write("units/shop.target", "# written by foreman\n");
    let out = app.run(&["export", "systemd", "units", "-a", "shop"]);
    out.assert_clean_error(&["shop.target", "exists"]);
    assert_eq!(
        read(&app.join("units/shop.target")),
        "# written by foreman\n"
    );
    assert!(
        !app.exists("units/shop-web@.service"),
        "nothing was written"
    );
}

#[test]
fn an_edited_manifest_cannot_make_crew_delete_outside_the_apps_files() {
    let app = recording_app();
    app.write("victim.txt", "keep me");
    app.write("units/other-app.service", "keep me");
    app.write(
        "units/.crew-export-shop.json",
        r#"{"format":"systemd","written":["../victim.txt","other-app.service","/etc/hostname"]}"#,
    );
    app.run(&["export", "systemd", "units", "-a", "shop"])
        .assert_code(0);
    assert!(app.exists("victim.txt") && app.exists("units/other-app.service"));
}

// ---------------------------------------------------------------------------
// supervisord
// ---------------------------------------------------------------------------

#[test]
fn supervisord_runs_the_exported_formation_with_its_env_and_ports_and_stops_it() {
    if !have("supervisord") || !have("supervisorctl") {
        eprintln!("skipped: needs supervisord and supervisorctl (Debian's supervisor)");
        return;
    }
    let app = recording_app();
    let user = current_user();
    let out = app.run(&[
        "export",
        "supervisord",
        "conf",
        "-a",
        "shop",
        "-m",
        "web=2,worker=1",
        "-u",
        &user,
        "-l",
        "logs",
    ]);
    out.assert_code(0);
    std::fs::create_dir_all(app.join("logs")).unwrap();
    let dir = app.path().display().to_string();
    let config = app.join("supervisord.conf");
    std::fs::write(
        &config,
        format!(
            "[unix_http_server]\nfile={dir}/supervisor.sock\n\n\
             [supervisord]\nlogfile={dir}/supervisord.log\npidfile={dir}/supervisord.pid\nnodaemon=true\n\n\
             [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{dir}/supervisor.sock\n\n\
             [include]\nfiles = {dir}/conf/*.conf\n"
        ),
    )
    .unwrap();
    let mut command = Command::new("supervisord");
    command
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut supervisor = Supervisor::spawn(command);
    wait_for_files(&app, &["web.1", "web.2", "worker.1"]);
    assert_eq!(
        read(&app.join("env-web.1.txt")),
        expected_line(5000, "web.1")
    );
    assert_eq!(
        read(&app.join("env-web.2.txt")),
        expected_line(5001, "web.2")
    );
    assert_eq!(
        read(&app.join("env-worker.1.txt")),
        expected_line(5100, "worker.1")
    );
    let pids: Vec<i32> = ["web.1", "web.2", "worker.1"]
        .iter()
        .map(|d| pid_of(&app, d))
        .collect();
    supervisor.pids = pids.clone();

    // supervisord calls a program RUNNING once it has stayed up `startsecs`
    // (1 s); until then it is STARTING.
    let names = ["shop:shop-web.1", "shop:shop-web.2", "shop:shop-worker.1"];
    let deadline = std::time::Instant::now() + SLOW;
    loop {
        let status = Command::new("supervisorctl")
            .arg("-c")
            .arg(&config)
            .arg("status")
            .output()
            .expect("running supervisorctl");
        let status = String::from_utf8_lossy(&status.stdout).into_owned();
        let not_running: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| {
                !status
                    .lines()
                    .any(|l| l.starts_with(name) && l.contains("RUNNING"))
            })
            .collect();
        if not_running.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{not_running:?} not RUNNING within {SLOW:?}:\n{status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let stop = Command::new("supervisorctl")
        .arg("-c")
        .arg(&config)
        .arg("shutdown")
        .output()
        .expect("running supervisorctl");
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stdout)
    );
    assert!(supervisor.wait_exit(SLOW), "supervisord did not exit");
    for pid in pids {
        assert!(
            poll_until(SOON, || !alive(pid)),
            "process {pid} outlived supervisord"
        );
    }
}

#[test]
fn supervisord_refuses_a_value_it_cannot_hold_naming_it() {
    let app = recording_app();
    app.write(".env", "MULTI=\"one\\ntwo\"\n");
    let out = app.run(&["export", "supervisord", "conf", "-a", "shop"]);
    out.assert_clean_error(&["MULTI", "line break"]);
    assert!(!app.exists("conf/shop.conf"));
}

// ---------------------------------------------------------------------------
// runit
// ---------------------------------------------------------------------------

#[test]
fn runsvdir_runs_the_exported_services_with_their_env_and_ports_and_stops_them() {
    if !have("runsvdir") || !have("chpst") || !have("svlogd") {
        eprintln!("skipped: needs runsvdir, chpst and svlogd (Debian's runit)");
        return;
    }
    if !is_root() {
        eprintln!("skipped: chpst -u needs root");
        return;
    }
    let app = recording_app();
    let out = app.run(&[
        "export",
        "runit",
        "services",
        "-a",
        "shop",
        "-m",
        "web=2,worker=1",
        "-u",
        "root",
        "-l",
        "logs",
    ]);
    out.assert_code(0);
    for service in ["shop-web.1", "shop-web.2", "shop-worker.1"] {
        assert!(app.exists(&format!("services/{service}/run")));
        assert!(app.exists(&format!("services/{service}/log/run")));
    }
    let mut command = Command::new("runsvdir");
    command
        .arg(app.join("services"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut supervisor = Supervisor::spawn(command);
    wait_for_files(&app, &["web.1", "web.2", "worker.1"]);
    assert_eq!(
        read(&app.join("env-web.1.txt")),
        expected_line(5000, "web.1")
    );
    assert_eq!(
        read(&app.join("env-web.2.txt")),
        expected_line(5001, "web.2")
    );
    assert_eq!(
        read(&app.join("env-worker.1.txt")),
        expected_line(5100, "worker.1")
    );
    let pids: Vec<i32> = ["web.1", "web.2", "worker.1"]
        .iter()
        .map(|d| pid_of(&app, d))
        .collect();
    supervisor.pids = pids.clone();
    assert!(
        poll_until(SOON, || app.join("logs/shop-web.1").is_dir()),
        "svlogd's directory was not made"
    );
    // runsvdir's documented stop: on SIGHUP it sends each runsv a TERM, and
    // runsv stops its service and log.
    if let Some(pid) = rustix::process::Pid::from_raw(supervisor.child.id() as i32) {
        let _ = rustix::process::kill_process(pid, Signal::HUP);
    }
    assert!(supervisor.wait_exit(SLOW), "runsvdir did not exit");
    for pid in pids {
        assert!(
            poll_until(SLOW, || !alive(pid)),
            "process {pid} outlived runit"
        );
    }
}

// ---------------------------------------------------------------------------
// launchd, upstart, daemon, inittab
// ---------------------------------------------------------------------------

#[test]
fn launchd_plists_parse_and_hold_the_exact_values() {
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        eprintln!("skipped: needs /usr/bin/python3 for plistlib");
        return;
    }
    let app = recording_app();
    app.write(
        ".env",
        "SECRET='<s3 & cr$t> 100%'\nMULTI=\"line one\\nline two\"\nQUOTED='say \"hi\" \\ back'\n",
    );
    let out = app.run(&[
        "export",
        "launchd",
        "agents",
        "-a",
        "shop",
        "-m",
        "web=2",
        "-l",
        "/var/log/shop",
        "--timeout",
        "9",
    ]);
    out.assert_code(0);
    let plist = app.join("agents/shop-web.2.plist");
    let json = Command::new(python)
        .arg("-c")
        .arg(
            "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        )
        .arg(&plist)
        .output()
        .expect("running python3");
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(value["Label"], "shop-web.2");
    let env = &value["EnvironmentVariables"];
    assert_eq!(env["SECRET"], "<s3 & cr$t> 100%");
    assert_eq!(env["MULTI"], "line one\nline two");
    assert_eq!(env["QUOTED"], "say \"hi\" \\ back");
    assert_eq!(env["PORT"], "5001");
    assert_eq!(env["DYNO"], "web.2");
    assert_eq!(value["ProgramArguments"][0], "/bin/sh");
    assert_eq!(value["ProgramArguments"][1], "-c");
    assert!(
        value["ProgramArguments"][2]
            .as_str()
            .unwrap()
            .ends_with("exec sleep 1000")
    );
    assert_eq!(value["KeepAlive"], true);
    assert_eq!(value["ExitTimeOut"], 9);
    assert_eq!(value["StandardOutPath"], "/var/log/shop/shop-web.2.log");
    assert_eq!(value["WorkingDirectory"], app.path().display().to_string());
}

#[test]
fn upstart_jobs_follow_foremans_layout_with_quoted_env() {
    let app = recording_app();
    app.write(".env", "SECRET=\"it's $x\"\n");
    let out = app.run(&[
        "export",
        "upstart",
        "jobs",
        "-a",
        "shop",
        "-u",
        "deploy",
        "--timeout",
        "8",
    ]);
    out.assert_code(0);
    let master = read(&app.join("jobs/shop.conf"));
    assert!(master.contains("start on runlevel [2345]"), "{master}");
    let web = read(&app.join("jobs/shop-web.conf"));
    assert!(
        web.contains("start on starting shop\n") && web.contains("stop on stopping shop\n"),
        "{web}"
    );
    let one = read(&app.join("jobs/shop-web-1.conf"));
    for line in [
        "start on starting shop-web",
        "respawn",
        "kill timeout 8",
        "env PORT='5000'",
        "env DYNO='web.1'",
        r#"env SECRET='it'"'"'s $x'"#,
        "setuid deploy",
        &format!("chdir {}", app.path().display()),
    ] {
        assert!(one.lines().any(|l| l == line), "no {line:?} in\n{one}");
    }
    assert!(
        one.lines().any(|l| l.starts_with("exec /bin/sh -c '")),
        "{one}"
    );
}

#[test]
fn daemon_jobs_run_each_process_through_start_stop_daemon() {
    let app = recording_app();
    let out = app.run(&[
        "export",
        "daemon",
        "jobs",
        "-a",
        "shop",
        "-u",
        "deploy",
        "-l",
        "/var/log/shop",
        "-r",
        "/run/shop",
    ]);
    out.assert_code(0);
    let master = read(&app.join("jobs/shop.conf"));
    assert!(
        master.contains("mkdir -p '/var/log/shop' '/run/shop'"),
        "{master}"
    );
    let one = read(&app.join("jobs/shop-worker-1.conf"));
    assert!(
        one.contains("exec start-stop-daemon --start --chuid 'deploy' --chdir ")
            && one.contains("--pidfile '/run/shop/shop-worker-1.pid' --exec /bin/sh -- -c '")
            && one.contains(">> '/var/log/shop/shop-worker-1.log' 2>&1"),
        "{one}"
    );
}

#[test]
fn inittab_replaces_its_own_block_and_keeps_the_rest_of_the_file() {
    let app = recording_app();
    app.write(
        "inittab",
        "id:2:initdefault:\n1:2345:respawn:/sbin/getty 38400 tty1\n",
    );
    app.run(&["export", "inittab", "inittab", "-a", "shop", "-m", "web=2"])
        .assert_code(0);
    let first = read(&app.join("inittab"));
    assert!(
        first.starts_with("id:2:initdefault:\n1:2345:respawn:/sbin/getty 38400 tty1\n"),
        "{first}"
    );
    assert!(
        first.contains(
            "# ----- crew shop processes -----\nSH01:2345:respawn:/bin/su - 'shop' -s /bin/sh -c "
        ),
        "{first}"
    );
    assert!(first.contains("\nSH03:"), "{first}");
    app.run(&[
        "export",
        "inittab",
        "inittab",
        "-a",
        "shop",
        "-m",
        "web=1,worker=0",
    ])
    .assert_code(0);
    let second = read(&app.join("inittab"));
    assert!(
        second.starts_with("id:2:initdefault:\n1:2345:respawn:/sbin/getty 38400 tty1\n"),
        "{second}"
    );
    assert_eq!(
        second.matches("# ----- crew shop processes -----").count(),
        1,
        "{second}"
    );
    assert!(
        second.contains("SH01:") && !second.contains("SH02:"),
        "{second}"
    );
    // Without a location (or with -), the block is printed.
    let printed = app.run(&["export", "inittab", "-a", "shop"]);
    printed.assert_code(0);
    assert!(
        printed
            .stdout()
            .starts_with("# ----- crew shop processes -----\n")
    );
}

#[test]
fn an_inittab_line_run_by_sh_and_su_gives_the_process_its_env_and_port() {
    if !is_root() || !Path::new("/bin/su").exists() {
        eprintln!("skipped: running an inittab line needs root and /bin/su");
        return;
    }
    let app = App::with_procfile(
        "web: true\nworker: printf '%s|%s|%s|%s|%s\\n' \"$PORT\" \"$DYNO\" \"$PS\" \"$SECRET\" \"$QUOTED\" > \"env-$DYNO.txt\"\n",
    );
    app.write(".env", RECORDING_ENV);
    let logs = app.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let out = app.run(&[
        "export", "inittab", "-a", "shop", "-u", "root", "-p", "7000", "-l", "logs",
    ]);
    out.assert_code(0);
    let stdout = out.stdout();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("SH02:"))
        .expect("worker's line");
    // init runs the process field with `sh -c "exec FIELD"`.
    let field = line.splitn(4, ':').nth(3).unwrap();
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {field}"))
        .stdin(Stdio::null())
        .status()
        .expect("running the line");
    assert!(status.success());
    assert_eq!(
        read(&app.join("env-worker.1.txt")),
        expected_line(7100, "worker.1")
    );
    assert!(logs.join("shop-worker.1.log").exists());
}

// ---------------------------------------------------------------------------
// Templates and bad input
// ---------------------------------------------------------------------------

#[test]
fn a_template_directory_replaces_crews_templates_file_by_file() {
    let app = recording_app();
    app.write(
        "tpl/process.service",
        "[Service]\n# mine: {{app}} {{type}} first port {{port}}\nUser={{user}}\nExecStart={{exec_start}}\n",
    );
    let out = app.run(&["export", "systemd", "units", "-a", "shop", "-t", "tpl"]);
    out.assert_code(0);
    let web = read(&app.join("units/shop-web@.service"));
    assert!(
        web.starts_with(
            "[Service]\n# mine: shop web first port 5000\nUser=shop\nExecStart=\"/bin/sh\""
        ),
        "{web}"
    );
    // The target still comes from crew's own template.
    assert!(read(&app.join("units/shop.target")).contains("Wants="));
    app.write("tpl/process.service", "[Service]\nUser={{usr}}\n");
    let out = app.run(&["export", "systemd", "units2", "-a", "shop", "-t", "tpl"]);
    out.assert_clean_error(&["{{usr}}", "process.service", "line 2"]);
}

#[test]
fn bad_input_is_a_clear_error() {
    let app = recording_app();
    let out = app.run(&["export", "bluepill", "out"]);
    assert_eq!(out.code(), Some(2), "{}", out.report());
    assert!(
        out.stderr.contains("invalid value 'bluepill'"),
        "{}",
        out.report()
    );
    app.run(&["export", "systemd", "out", "-a", "a/b"])
        .assert_clean_error(&["`a/b`", "app name"]);
    app.run(&["export", "systemd", "out", "-a", ".."])
        .assert_clean_error(&["`..`", "app name"]);
    app.run(&["export", "systemd", "Procfile", "-a", "shop"])
        .assert_clean_error(&["Procfile", "not a directory"]);
    app.run(&["export", "systemd", "-a", "shop"])
        .assert_clean_error(&["where to?", "/etc/systemd/system"]);
    app.run(&[
        "export",
        "supervisord",
        "conf",
        "-a",
        "shop",
        "-u",
        "root;rm",
    ])
    .assert_clean_error(&["`root;rm`", "user name"]);
    app.run(&["export", "runit", "sv", "-a", "shop", "-m", "nosuch=1"])
        .assert_clean_error(&["nosuch"]);
    app.run(&["export", "runit", "sv", "-a", "shop", "-m", "all=0"])
        .assert_clean_error(&["no process"]);
    app.run(&[
        "export", "systemd", "sv", "-a", "shop", "--slug", "x.tar.gz",
    ])
    .assert_clean_error(&["--slug"]);
    app.run(&["export", "inittab", "Procfile/x", "-a", "shop"])
        .assert_clean_error(&["Procfile"]);
    let spaced = App::new();
    spaced.write("my app/Procfile", "web: true\n");
    spaced
        .run(&["export", "systemd", "out", "-d", "my app"])
        .assert_clean_error(&["`my app`", "app name", "-a NAME"]);
}

#[test]
fn the_app_is_named_after_its_directory_by_default() {
    let app = App::new();
    app.write("shop/Procfile", "web: sleep 1000\n");
    let out = app.run(&["export", "systemd", "units", "-d", "shop"]);
    out.assert_code(0);
    assert!(app.exists("units/shop.target") && app.exists("units/shop-web@.service"));
    let _ = PathBuf::new();
}

#[test]
fn options_before_export_count_and_t_there_is_the_timeout() {
    let app = recording_app();
    app.write("Procfile.other", "clock: sleep 1000\n");
    let out = app.run(&[
        "-f",
        "Procfile.other",
        "-t",
        "20",
        "-p",
        "8000",
        "export",
        "systemd",
        "units",
        "-a",
        "shop",
    ]);
    out.assert_code(0);
    let clock = read(&app.join("units/shop-clock@.service"));
    assert!(clock.lines().any(|l| l == "TimeoutStopSec=20"), "{clock}");
    assert!(clock.contains("PORT=$$((8000 + $$1 - 1))"), "{clock}");
}

#[test]
fn re_exporting_never_follows_a_directory_that_became_a_link() {
    let app = recording_app();
    app.run(&["export", "runit", "services", "-a", "shop", "-m", "web=2"])
        .assert_code(0);
    assert!(app.exists("services/shop-web.2/run"));
    // Someone swaps web.2's service directory for a link to files crew
    // never wrote, named as crew's are.
    app.write("elsewhere/run", "#!/bin/sh\n");
    app.write("elsewhere/log/run", "#!/bin/sh\n");
    std::fs::remove_dir_all(app.join("services/shop-web.2")).unwrap();
    std::os::unix::fs::symlink(app.join("elsewhere"), app.join("services/shop-web.2")).unwrap();
    app.run(&["export", "runit", "services", "-a", "shop", "-m", "web=1"])
        .assert_code(0);
    assert!(app.exists("services/shop-web.1/run"));
    assert!(
        app.exists("elsewhere/run") && app.exists("elsewhere/log/run"),
        "files behind the link stay"
    );
}
