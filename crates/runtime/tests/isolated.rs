//! Isolated dynos on a real kernel. Every test but `probe_says_why` needs root
//! and prints `skipped: needs root` without it (CI runs them as root).

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crew_runtime::{
    DynoProcess, DynoSize, DynoSpec, ExitStatus, IsolatedConfig, IsolatedRuntime,
    IsolationUnavailable, ProcessGroup, Runtime, Signal,
};
use tokio::io::AsyncReadExt;

const MIB: u64 = 1024 * 1024;

fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .unwrap_or(u32::MAX)
}

fn config() -> IsolatedConfig {
    IsolatedConfig {
        root_dir: "/run/crew-test/root".into(),
        cgroup_name: "crew-test".into(),
        ..IsolatedConfig::default()
    }
}

/// The runtime, or `None` (with the skip line) when not root. As root it must work.
fn runtime(test: &str) -> Option<IsolatedRuntime> {
    if euid() != 0 {
        eprintln!("skipped: needs root ({test})");
        return None;
    }
    Some(IsolatedRuntime::new(config()).expect("isolation works as root"))
}

/// A slug: a file and a script, owned by the dyno's user the way a platform
/// should extract slugs, so the app may change them (in its own copy).
fn slug() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(p.join("hello.txt"), "hello from the slug\n").unwrap();
    std::fs::create_dir(p.join("bin")).unwrap();
    std::fs::write(
        p.join("bin/greet"),
        "#!/bin/sh\necho \"greetings from $0\"\n",
    )
    .unwrap();
    std::fs::set_permissions(p.join("bin/greet"), std::fs::Permissions::from_mode(0o755)).unwrap();
    if euid() == 0 {
        for f in [
            p.to_path_buf(),
            p.join("hello.txt"),
            p.join("bin"),
            p.join("bin/greet"),
        ] {
            std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
        }
    }
    dir
}

fn spec(name: &str, slug: &Path, command: &str) -> DynoSpec {
    DynoSpec {
        name: name.into(),
        command: command.into(),
        env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("DYNO".into(), name.into()),
        ],
        cwd: slug.to_path_buf(),
        ..DynoSpec::default()
    }
}

/// Runs a dyno to its end: its whole output and its status.
async fn run(rt: &IsolatedRuntime, spec: &DynoSpec) -> (String, ExitStatus) {
    let mut process = rt.spawn(spec).expect("the dyno starts");
    finish(&mut process).await
}

async fn finish(process: &mut crew_runtime::IsolatedProcess) -> (String, ExitStatus) {
    let mut output = process.take_output().unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(20), output.read_to_string(&mut text))
        .await
        .expect("output ends")
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), process.wait())
        .await
        .expect("the dyno exits")
        .unwrap();
    (text, status)
}

/// The host pids in a dyno's cgroup.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Gone, or a zombie nobody reaped yet (which is dead all the same).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn probe_says_why() {
    match IsolatedRuntime::probe() {
        Ok(()) => assert_eq!(euid(), 0),
        Err(IsolationUnavailable::NotRoot { euid: id }) => {
            assert_ne!(id, 0);
            let text = IsolationUnavailable::NotRoot { euid: id }.to_string();
            assert!(text.contains("needs root"), "{text}");
            eprintln!("skipped: needs root (probe: {text})");
        }
        Err(other) => panic!("isolation unavailable: {other}"),
    }
}

#[tokio::test]
async fn the_app_sees_its_slug_and_its_writes_vanish() {
    let Some(rt) = runtime("writes vanish") else {
        return;
    };
    let slug = slug();
    let (out, status) = run(
        &rt,
        &spec(
            "web.1",
            slug.path(),
            "cat /app/hello.txt; ./bin/greet; pwd; echo HOME=$HOME; \
             echo new > /app/new.txt && echo changed > /app/hello.txt && cat /app/new.txt; \
             mkdir /app/dir && echo made-dir",
        ),
    )
    .await;
    assert_eq!(status, ExitStatus::Code(0), "{out}");
    assert_eq!(
        out,
        "hello from the slug\ngreetings from ./bin/greet\n/app\nHOME=/app\nnew\nmade-dir\n"
    );
    // The slug itself is untouched.
    assert_eq!(
        std::fs::read_to_string(slug.path().join("hello.txt")).unwrap(),
        "hello from the slug\n"
    );
    assert!(!slug.path().join("new.txt").exists());

    // The next dyno starts from the pristine slug.
    let (out, status) = run(
        &rt,
        &spec(
            "web.1",
            slug.path(),
            "test -e /app/new.txt && echo present || echo absent; cat /app/hello.txt; \
             test -d /app/dir && echo dir || echo no-dir",
        ),
    )
    .await;
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(out, "absent\nhello from the slug\nno-dir\n");

    // Nothing of the dyno shows in the host's mount table.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("crew-root") && !mounts.contains("crew-app"));
}

#[tokio::test]
async fn tmp_is_fresh_and_private() {
    let Some(rt) = runtime("tmp") else {
        return;
    };
    let slug = slug();
    let marker = format!("crew-host-marker-{}", std::process::id());
    std::fs::write(std::env::temp_dir().join(&marker), "host").unwrap();
    let written = format!("crew-dyno-wrote-{}", std::process::id());
    let (out, _) = run(
        &rt,
        &spec(
            "worker.1",
            slug.path(),
            &format!(
                "ls -A /tmp | wc -l; test -e /tmp/{marker} && echo leak || echo private; \
                 echo x > /tmp/{written} && ls /tmp; stat -c %a /tmp"
            ),
        ),
    )
    .await;
    assert_eq!(out, format!("0\nprivate\n{written}\n1777\n"));
    assert!(!std::env::temp_dir().join(&written).exists());
    let (out, _) = run(&rt, &spec("worker.1", slug.path(), "ls -A /tmp | wc -l")).await;
    assert_eq!(out, "0\n");
    let _ = std::fs::remove_file(std::env::temp_dir().join(&marker));
}

#[tokio::test]
async fn the_dyno_sees_only_its_own_processes() {
    let Some(rt) = runtime("pid namespace") else {
        return;
    };
    let slug = slug();
    let (out, status) = run(
        &rt,
        &spec(
            "web.2",
            slug.path(),
            "echo self=$$; cat /proc/1/comm; ps -eo pid=,comm=",
        ),
    )
    .await;
    assert!(status.success(), "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("self=2"), "{out}");
    assert_eq!(lines.next(), Some("crew-init"), "{out}");
    let processes: Vec<(u32, String)> = lines
        .map(|l| {
            let (pid, comm) = l.trim().split_once(' ').unwrap();
            (pid.parse().unwrap(), comm.trim().to_string())
        })
        .collect();
    let names: Vec<&str> = processes.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(names, ["crew-init", "sh", "ps"], "{out}");
    assert_eq!(processes[0].0, 1);
    assert_eq!(processes[1].0, 2);
}

#[tokio::test]
async fn the_hostname_is_the_dyno_name() {
    let Some(rt) = runtime("hostname") else {
        return;
    };
    let slug = slug();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let (out, _) = run(
        &rt,
        &spec(
            "run.7",
            slug.path(),
            "hostname; cat /proc/sys/kernel/hostname",
        ),
    )
    .await;
    assert_eq!(out, "run.7\nrun.7\n");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host
    );
}

#[tokio::test]
async fn the_app_runs_unprivileged_with_home_app() {
    let Some(rt) = runtime("user") else {
        return;
    };
    let slug = slug();
    let (out, _) = run(
        &rt,
        &spec(
            "web.1",
            slug.path(),
            "id -u; id -g; echo $HOME; pwd; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; \
             touch /usr/crew-x 2>/dev/null || echo usr-ro; touch /crew-x 2>/dev/null || echo root-ro; \
             touch /etc/crew-x 2>/dev/null || echo etc-ro; cat /proc/1/environ 2>/dev/null || echo no-environ",
        ),
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..4], ["65534", "65534", "/app", "/app"], "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    for line in ["usr-ro", "root-ro", "etc-ro", "no-environ"] {
        assert!(lines.contains(&line), "{line} missing in {out}");
    }
}

#[tokio::test]
async fn host_files_outside_the_stack_are_absent() {
    let Some(rt) = runtime("host files") else {
        return;
    };
    // A crew data directory with the slug inside, as on a server.
    let data = tempfile::tempdir().unwrap();
    let slug_dir = data.path().join("apps/demo/slugs/v1");
    std::fs::create_dir_all(&slug_dir).unwrap();
    std::fs::write(slug_dir.join("hello.txt"), "hi\n").unwrap();
    std::fs::write(data.path().join("crew.db"), "secret").unwrap();
    let data_path = data.path().display().to_string();
    let (out, _) = run(
        &rt,
        &spec(
            "web.1",
            &slug_dir,
            &format!(
                "ls -A /; for p in /root /home /var /run {data_path} {data_path}/crew.db; do \
                 test -e $p && echo \"visible $p\"; done; echo done"
            ),
        ),
    )
    .await;
    let mut expected: BTreeSet<String> = ["app", "dev", "proc", "tmp"]
        .into_iter()
        .map(String::from)
        .collect();
    for top in ["usr", "etc", "bin", "lib", "lib64", "sbin"] {
        if std::fs::symlink_metadata(Path::new("/").join(top)).is_ok() {
            expected.insert(top.to_string());
        }
    }
    // A symlinked resolv.conf brings its target's top directory along.
    if let Ok(target) = std::fs::canonicalize("/etc/resolv.conf")
        && !target.starts_with("/etc")
        && !target.starts_with("/usr")
        && let Some(std::path::Component::Normal(top)) = target.components().nth(1)
    {
        expected.insert(top.to_string_lossy().into_owned());
    }
    let mut lines = out.lines();
    let listed: BTreeSet<String> = lines
        .by_ref()
        .take(expected.len())
        .map(String::from)
        .collect();
    assert_eq!(listed, expected, "{out}");
    assert_eq!(lines.collect::<Vec<_>>(), ["done"], "{out}");
}

#[tokio::test]
async fn a_memory_hog_gets_r14_r15_and_is_killed() {
    let Some(rt) = runtime("memory") else {
        return;
    };
    let slug = slug();
    let size = DynoSize {
        name: "test-48m".into(),
        memory_bytes: 48 * MIB,
        pids: 64,
    };
    let mut process = rt
        .spawn_sized(
            &spec(
                "web.1",
                slug.path(),
                "echo starting; tail /dev/zero; echo survived",
            ),
            &size,
        )
        .unwrap();
    let limit_file = if process.cgroup_path().join("memory.max").exists() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(
        std::fs::read_to_string(process.cgroup_path().join(limit_file))
            .unwrap()
            .trim(),
        (48 * MIB).to_string()
    );
    let (out, status) = finish(&mut process).await;
    eprintln!("memory hog: {status:?}\n{out}");
    assert!(out.starts_with("starting\n"), "{out}");
    assert!(
        out.contains("\nError R14 (Memory quota exceeded)\n"),
        "{out}"
    );
    assert!(
        out.contains("\nError R15 (Memory quota vastly exceeded)\n"),
        "{out}"
    );
    assert!(out.contains("Process running mem="), "{out}");
    assert!(!status.success(), "{status:?}");
}

#[tokio::test]
async fn the_pids_limit_holds() {
    let Some(rt) = runtime("pids") else {
        return;
    };
    let slug = slug();
    let size = DynoSize {
        name: "test-pids".into(),
        memory_bytes: 256 * MIB,
        pids: 16,
    };
    let mut process = rt
        .spawn_sized(
            // Not `worker.1`: tmp_is_fresh_and_private's runtime names its
            // cgroup the same (PID-1-worker.1) when the two run at once.
            &spec(
                "pids.1",
                slug.path(),
                "(i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done); \
                 set -- /proc/[0-9]*; echo procs=$#",
            ),
            &size,
        )
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(pids_dir(&process.cgroup_path()).join("pids.max"))
            .unwrap()
            .trim(),
        "16"
    );
    let (out, status) = finish(&mut process).await;
    assert!(status.success(), "{out}");
    let procs: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {out}"));
    assert!(procs <= 16, "{procs} processes under a limit of 16");
    assert!(out.contains("fork"), "no fork failure in {out}");
}

/// On v1 the pids group lives in its own hierarchy next to the memory one.
fn pids_dir(memory_dir: &Path) -> PathBuf {
    let text = memory_dir.display().to_string();
    PathBuf::from(text.replacen("/memory/", "/pids/", 1))
}

#[tokio::test]
async fn stop_kills_a_double_forked_setsid_child_and_kill_escalates() {
    let Some(rt) = runtime("stop") else {
        return;
    };
    let slug = slug();
    let mut process = rt
        .spawn(&spec(
            "web.3",
            slug.path(),
            "setsid sh -c 'sleep 301 &'; sleep 302",
        ))
        .unwrap();
    let group = process.group();
    let dir = pids_dir(&process.cgroup_path());
    // init, sh, the escapee and the foreground sleep.
    until("four processes", Duration::from_secs(5), || {
        cgroup_pids(&dir).len() >= 4
    })
    .await;
    let pids = cgroup_pids(&dir);
    assert!(group.alive());
    group.signal(Signal::Term);
    let (_, status) = finish(&mut process).await;
    assert_eq!(status, ExitStatus::Signaled(15));
    until("every process gone", Duration::from_secs(5), || {
        pids.iter().all(|p| dead(*p))
    })
    .await;
    until("the group empty", Duration::from_secs(5), || !group.alive()).await;

    // A dyno that ignores SIGTERM lives on until SIGKILL.
    let mut stubborn = rt
        .spawn(&spec(
            "web.4",
            slug.path(),
            "trap '' TERM; setsid sh -c 'sleep 303 &'; sleep 304",
        ))
        .unwrap();
    let group = stubborn.group();
    let dir = pids_dir(&stubborn.cgroup_path());
    until("four processes", Duration::from_secs(5), || {
        cgroup_pids(&dir).len() >= 4
    })
    .await;
    let pids = cgroup_pids(&dir);
    group.signal(Signal::Term);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        group.alive(),
        "SIGTERM was ignored, the dyno must still run"
    );
    group.signal(Signal::Kill);
    let (_, status) = finish(&mut stubborn).await;
    assert_eq!(status, ExitStatus::Signaled(9));
    until("every process gone", Duration::from_secs(5), || {
        pids.iter().all(|p| dead(*p))
    })
    .await;
    assert!(!group.alive());
}

#[tokio::test]
async fn exit_statuses_output_and_stdin() {
    let Some(rt) = runtime("status") else {
        return;
    };
    let slug = slug();
    let (_, status) = run(&rt, &spec("run.1", slug.path(), "exit 3")).await;
    assert_eq!(status, ExitStatus::Code(3));
    let (_, status) = run(&rt, &spec("run.2", slug.path(), "kill -TERM $$")).await;
    assert_eq!(status, ExitStatus::Signaled(15));
    // stdout and stderr are one stream; stdin is a /dev/null of its own: end
    // of file at once, so a reader of stdin ends (it did not when every dyno
    // shared one pipe nobody wrote to).
    let (out, status) = run(
        &rt,
        &spec(
            "run.3",
            slug.path(),
            "echo out; echo err >&2; timeout 5 cat; echo rc=$?; readlink /proc/self/fd/0",
        ),
    )
    .await;
    assert!(status.success());
    assert_eq!(out, "out\nerr\nrc=0\n/dev/null\n");
}

#[tokio::test]
async fn a_bad_slug_is_a_spawn_error_and_cgroups_go_away() {
    let Some(rt) = runtime("errors") else {
        return;
    };
    let err = rt
        .spawn(&spec("web.1", Path::new("/nonexistent/crew-slug"), "true"))
        .err()
        .expect("a missing slug fails");
    assert!(
        err.to_string().contains("cannot open the slug directory"),
        "{err}"
    );

    let slug = slug();
    let mut process = rt.spawn(&spec("web.9", slug.path(), "true")).unwrap();
    let dir = process.cgroup_path();
    assert!(dir.exists());
    finish(&mut process).await;
    until("the cgroup removed", Duration::from_secs(3), || {
        !dir.exists()
    })
    .await;
}

/// Not a test on its own: the process `crew_dies_and_its_dynos_die_too` starts
/// and SIGKILLs. It runs one dyno and prints the dyno's host pids.
#[tokio::test]
async fn helper_runs_a_dyno() {
    if std::env::var_os("CREW_ISOLATED_HELPER").is_none() {
        return;
    }
    let rt = IsolatedRuntime::new(config()).unwrap();
    let slug = slug();
    let process = rt
        .spawn(&spec(
            "web.1",
            slug.path(),
            "setsid sh -c 'sleep 305 &'; sleep 306",
        ))
        .unwrap();
    let dir = pids_dir(&process.cgroup_path());
    until("four processes", Duration::from_secs(5), || {
        cgroup_pids(&dir).len() >= 4
    })
    .await;
    let pids: Vec<String> = cgroup_pids(&dir).iter().map(u32::to_string).collect();
    println!("PIDS {} CGROUP {}", pids.join(","), dir.display());
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[test]
fn crew_dies_and_its_dynos_die_too() {
    if euid() != 0 {
        eprintln!("skipped: needs root (parent death)");
        return;
    }
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_runs_a_dyno",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CREW_ISOLATED_HELPER", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = helper.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // libtest prints `test helper_runs_a_dyno ... ` before the helper's own line.
    let line = loop {
        match seen.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                if let Some(at) = line.find("PIDS ") {
                    break line[at..].to_string();
                }
            }
            Err(e) => {
                let _ = helper.kill();
                panic!("the helper never started its dyno: {e}");
            }
        }
    };
    let mut words = line.split_whitespace().skip(1);
    let pids: Vec<u32> = words
        .next()
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let cgroup = PathBuf::from(words.nth(1).unwrap());
    assert!(pids.len() >= 4, "{line}");
    assert!(pids.iter().all(|p| !dead(*p)));

    helper.kill().unwrap(); // SIGKILL
    helper.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|p| dead(*p)) {
        assert!(
            Instant::now() < deadline,
            "dyno processes outlived their crew: {:?}",
            pids.iter().filter(|p| !dead(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The dead crew's cgroup is cleared by the next runtime that starts.
    IsolatedRuntime::new(config()).unwrap();
    assert!(!cgroup.exists(), "{} is left over", cgroup.display());
}

#[tokio::test]
async fn start_time() {
    let Some(rt) = runtime("timing") else {
        return;
    };
    let slug = slug();
    let spec = spec("run.1", slug.path(), "exit 0");
    let mut isolated = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let mut process = rt.spawn(&spec).unwrap();
        let started = t.elapsed();
        process.take_output();
        process.wait().await.unwrap();
        isolated.push((started, t.elapsed()));

        let t = Instant::now();
        std::process::Command::new("/bin/sh")
            .args(["-c", "exit 0"])
            .status()
            .unwrap();
        plain.push(t.elapsed());
    }
    isolated.sort();
    plain.sort();
    let median_exit = {
        let mut all: Vec<Duration> = isolated.iter().map(|(_, e)| *e).collect();
        all.sort();
        all[all.len() / 2]
    };
    eprintln!(
        "isolated dyno: spawn median {:?}, start-to-exit median {:?}; plain fork/exec of sh: median {:?}",
        isolated[isolated.len() / 2].0,
        median_exit,
        plain[plain.len() / 2]
    );
}

/// crew reports a dyno's exit as soon as its init writes the app's status,
/// without waiting for the init's own exit: so by then every other process
/// of the dyno (an orphaned daemon too) must already be killed and reaped.
#[tokio::test]
async fn the_exit_is_reported_only_once_every_other_process_is_gone() {
    let Some(rt) = runtime("exit_reported") else {
        return;
    };
    let slug = slug();
    let mut dyno = spec(
        "run.7",
        slug.path(),
        // Their output goes elsewhere, so the end of the dyno's output does
        // not wait for them.
        "setsid sh -c 'sleep 309 >/dev/null 2>&1 &'; sleep 310 >/dev/null 2>&1 & \
         read line; exit 4",
    );
    dyno.input = crew_runtime::DynoInput::Pipe;
    let mut process = rt.spawn(&dyno).unwrap();
    let mut console = process.take_console().expect("a console for stdin");
    let dir = pids_dir(&process.cgroup_path());
    // init, sh, the daemon and the background sleep.
    until("four processes", Duration::from_secs(5), || {
        cgroup_pids(&dir).len() >= 4
    })
    .await;
    let init = process.pid().unwrap();
    let others: Vec<u32> = cgroup_pids(&dir)
        .into_iter()
        .filter(|p| *p != init)
        .collect();
    assert!(others.len() >= 3, "{others:?}");
    use tokio::io::AsyncWriteExt;
    console.input.write_all(b"go\n").await.unwrap();
    let (_, status) = finish(&mut process).await;
    assert_eq!(status, ExitStatus::Code(4));
    let alive: Vec<u32> = others.iter().copied().filter(|p| !dead(*p)).collect();
    assert!(alive.is_empty(), "still there after the exit: {alive:?}");
}

/// The dyno's `/dev` has the usual character devices, usable by the app
/// (made with mknod, not bound from the host), and the app cannot make more.
#[tokio::test]
async fn dev_has_working_devices_and_no_way_to_make_more() {
    let Some(rt) = runtime("devices") else {
        return;
    };
    let slug = slug();
    let (out, status) = run(
        &rt,
        &spec(
            "run.8",
            slug.path(),
            "for d in null zero full random urandom; do \
               [ -c /dev/$d ] && stat -c \"$d %a %t,%T\" /dev/$d; done; \
             echo x > /dev/null && echo null-writable; \
             [ \"$(head -c 3 /dev/zero | od -An -tx1 | tr -d ' ')\" = 000000 ] && echo zeros; \
             [ \"$(head -c 16 /dev/urandom | wc -c)\" = 16 ] && echo random; \
             mknod /tmp/mem c 1 1 2>/dev/null || echo no-mknod; \
             grep -c ' /dev/null ' /proc/self/mounts",
        ),
    )
    .await;
    assert!(status.success() || status == ExitStatus::Code(1), "{out}");
    assert_eq!(
        out,
        "null 666 1,3\nzero 666 1,5\nfull 666 1,7\nrandom 666 1,8\nurandom 666 1,9\n\
         null-writable\nzeros\nrandom\nno-mknod\n0\n"
    );
}

/// A timed start says how long every part took, walls included, and the
/// dyno runs as any other: the bench's breakdown rests on this.
#[test]
fn a_timed_start_reports_each_part_of_the_start() {
    let Some(rt) = runtime("a_timed_start_reports_each_part_of_the_start") else {
        return;
    };
    let slug = slug();
    let timing = rt
        .time_start(&spec("timed.1", slug.path(), "true"))
        .expect("a timed start of `true`");
    let kinds: Vec<&str> = timing.parts.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(kinds.first(), Some(&"clone"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"app exec"), "{kinds:?}");
    for wall in [
        "join cgroup",
        "mount",
        "/proc walls",
        "pivot_root",
        "empty bounding set",
        "switch user",
        "seccomp filter",
    ] {
        assert!(kinds.contains(&wall), "no {wall} in {kinds:?}");
    }
    let unique: BTreeSet<&str> = kinds.iter().copied().collect();
    assert_eq!(unique.len(), kinds.len(), "each kind once: {kinds:?}");
    assert!(timing.total() > Duration::ZERO);
    // Not a speed check: a difference taken the wrong way round on the
    // wrapping clock would come out at over an hour.
    assert!(timing.total() < Duration::from_secs(600), "{timing:?}");
    // A failing app is an error, not a timing.
    let failed = rt.time_start(&spec("timed.2", slug.path(), "exit 3"));
    assert!(failed.is_err(), "{failed:?}");
}
