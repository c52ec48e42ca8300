//! Dyno walls, end to end (issue 15, points 2 to 4, and issue 14.4): each app's
//! dynos run as its own uid, its slug on disk is root's and its group's only,
//! and a dyno meets a kernel surface like a container's. Needs root (CI runs
//! as root); skips and says so otherwise.

mod common;
mod platform;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use platform::{Server, TestServer, commit_all, dyno_pids, repo};

/// The default `--app-uids`.
const APP_UIDS: std::ops::RangeInclusive<u32> = 2_000_000_000..=2_099_999_999;

/// A server whose dynos are isolated, or `None` (and why) where this host
/// cannot isolate them.
fn isolated_server(test: &str) -> Option<Server> {
    let server = TestServer::new().isolated_dynos().start();
    if server.is_none() {
        eprintln!("skipped: {test}");
    }
    server
}

/// Pushes a Procfile app (plus `files`) as `name`.
fn deploy(server: &Server, name: &str, procfile: &str, files: &[(&str, &str)]) -> common::App {
    let app = repo(server, procfile);
    for (path, contents) in files {
        app.write(path, contents);
    }
    if !files.is_empty() {
        commit_all(server, app.path(), "files");
    }
    server.ok(app.path(), &["apps:create", name]);
    server.push(app.path());
    app
}

/// `crew run -a APP COMMAND` with pipes: its stdout, and whether it succeeded.
fn run(server: &Server, app: &common::App, name: &str, command: &str) -> (bool, String) {
    let (ok, out, err) = server.cli(app.path(), &["run", "-a", name, command]);
    (ok, format!("{out}{err}"))
}

/// A host process's real uid and gid, from /proc.
fn ids_of(pid: i32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a live pid");
    let field = |name: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("an id")
    };
    (field("Uid:"), field("Gid:"))
}

/// The app's processes on the host: the init the engine reports and its
/// children (the app's own command).
fn app_process(server: &Server, dir: &Path, name: &str) -> i32 {
    let ps = server.wait_up(dir, name, 1);
    let init = dyno_pids(&ps)[0];
    let children =
        std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(init)
}

/// Runs `sh -c script` on the host as `uid`:`gid` with no other groups: what
/// a process of that app that got out of its dyno could do.
fn as_user(uid: u32, gid: u32, script: &str) -> std::process::Output {
    Command::new("/bin/sh")
        .args(["-c", script])
        .uid(uid)
        // As root, std drops every supplementary group with the switch.
        .gid(gid)
        .output()
        .expect("sh as another user")
}

/// The extracted slug directories of an app.
fn slug_dirs(server: &Server, app: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut stack = vec![server.data().join("apps").join(app)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && path.join("Procfile").exists() {
                dirs.push(path);
            } else if path.is_dir() {
                stack.push(path);
            }
        }
    }
    dirs
}

#[test]
fn each_app_runs_as_its_own_uid_and_cannot_reach_another() {
    let Some(server) = isolated_server("each_app_runs_as_its_own_uid_and_cannot_reach_another")
    else {
        return;
    };
    let alpha = deploy(&server, "alpha", "worker: sleep 1000\n", &[]);
    let beta = deploy(
        &server,
        "beta",
        "worker: sleep 1001\n",
        &[("secret.txt", "beta's code\n")],
    );
    server.ok(alpha.path(), &["scale", "-a", "alpha", "worker=1"]);
    server.ok(beta.path(), &["scale", "-a", "beta", "worker=1"]);

    // Formation dynos: each app's own uid, from the server's range.
    let alpha_pid = app_process(&server, alpha.path(), "alpha");
    let beta_pid = app_process(&server, beta.path(), "beta");
    let (alpha_uid, alpha_gid) = ids_of(alpha_pid);
    let (beta_uid, beta_gid) = ids_of(beta_pid);
    assert_ne!(alpha_uid, beta_uid);
    assert!(APP_UIDS.contains(&alpha_uid) && APP_UIDS.contains(&beta_uid));
    assert_eq!((alpha_gid, beta_gid), (alpha_uid, beta_uid));

    // One-offs: the same uid as their app's formation, whatever the dyno.
    let (ok, ids) = run(&server, &alpha, "alpha", "id -u; id -g; id -G");
    assert!(ok, "{ids}");
    let ids: Vec<u32> = ids
        .split_whitespace()
        .filter_map(|i| i.parse().ok())
        .collect();
    assert_eq!(ids, [alpha_uid, alpha_uid, alpha_uid]);

    // A process of alpha's uid cannot signal beta's dyno ...
    let kill = as_user(alpha_uid, alpha_gid, &format!("kill -0 {beta_pid}"));
    assert!(!kill.status.success(), "alpha's uid may signal beta's dyno");
    assert!(
        String::from_utf8_lossy(&kill.stderr).contains("not permitted"),
        "{}",
        String::from_utf8_lossy(&kill.stderr)
    );
    // ... nor read or write beta's slug, which is root's and beta's group's.
    let slugs = slug_dirs(&server, "beta");
    assert!(!slugs.is_empty(), "no extracted slug of beta");
    for slug in &slugs {
        for path in [slug.clone(), slug.join("secret.txt"), slug.join("Procfile")] {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (0, beta_gid), "{path:?}");
            assert_eq!(meta.mode() & 0o007, 0, "others may use {path:?}");
            assert_eq!(meta.mode() & 0o6000, 0, "set-id bits on {path:?}");
        }
        let secret = slug.join("secret.txt");
        let read = as_user(
            alpha_uid,
            alpha_gid,
            &format!(
                "cat '{}' || echo x >> '{}'",
                secret.display(),
                secret.display()
            ),
        );
        assert!(!read.status.success(), "alpha's uid reached beta's slug");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "beta's code\n");
        // Nor can `nobody`, which every dyno used to be.
        let nobody = as_user(65534, 65534, &format!("cat '{}'", secret.display()));
        assert!(!nobody.status.success(), "nobody reads beta's slug");
    }

    // Beta itself still reads and changes its /app (through the overlay).
    let (ok, out) = run(
        &server,
        &beta,
        "beta",
        "cat secret.txt && echo changed >> secret.txt && tail -n 1 secret.txt && \
         mkdir -p tmp/pids && echo 1 > tmp/pids/server.pid && cat tmp/pids/server.pid",
    );
    assert!(ok, "{out}");
    assert_eq!(out, "beta's code\nchanged\n1\n");
    for slug in &slugs {
        assert_eq!(
            std::fs::read_to_string(slug.join("secret.txt")).unwrap(),
            "beta's code\n",
            "a dyno's write reached the slug on disk"
        );
    }
}

#[test]
fn a_dyno_meets_a_container_kernel_surface() {
    let Some(server) = isolated_server("a_dyno_meets_a_container_kernel_surface") else {
        return;
    };
    let app = deploy(&server, "walled", "worker: sleep 1000\n", &[]);
    let (_, out) = run(
        &server,
        &app,
        "walled",
        "unshare -U true 2>/dev/null && echo userns-made || echo userns-refused; \
         unshare -Urm true 2>/dev/null && echo rootns-made || echo rootns-refused; \
         grep -E '^(Seccomp|CapBnd|CapEff):' /proc/self/status; \
         head -c 16 /proc/kcore 2>/dev/null | wc -c; \
         echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo sys-written; \
         echo end",
    );
    assert!(out.contains("userns-refused"), "{out}");
    assert!(out.contains("rootns-refused"), "{out}");
    assert!(!out.contains("-made"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(!out.contains("sys-written"), "{out}");
    assert!(out.contains("end"), "{out}");

    // The mount table names nothing of the host: not the data dir, not the slug.
    let (ok, mounts) = run(
        &server,
        &app,
        "walled",
        "cat /proc/self/mounts /proc/self/mountinfo",
    );
    assert!(ok, "{mounts}");
    assert!(mounts.contains(" /app overlay "), "{mounts}");
    let data = server.data();
    let data = data.to_str().unwrap();
    assert!(!mounts.contains(data), "the data dir shows: {mounts}");
    for slug in slug_dirs(&server, "walled") {
        assert!(!mounts.contains(slug.to_str().unwrap()), "{mounts}");
    }
}

/// Ordinary programs still work under the filter and as the app's own uid: a
/// Python virtualenv (pip's own install runs subprocesses), node, sh.
#[test]
fn ordinary_apps_still_run() {
    let Some(server) = isolated_server("ordinary_apps_still_run") else {
        return;
    };
    let app = deploy(&server, "ordinary", "worker: sleep 1000\n", &[]);
    let mut checks = vec![(
        "sh -c 'echo $((1 + 1))' && (sleep 0.01 & wait) && echo sh-ok".to_string(),
        "sh-ok",
    )];
    if Path::new("/usr/bin/python3").exists() {
        checks.push((
            "python3 -m venv /tmp/venv && /tmp/venv/bin/python -c \
             'import subprocess, threading, multiprocessing; \
              print(subprocess.check_output([\"echo\", \"venv-ok\"]).decode().strip())'"
                .to_string(),
            "venv-ok",
        ));
    }
    if Path::new("/usr/bin/node").exists() {
        checks.push((
            "node -e \"require('child_process').exec('echo node-ok', (e, out) => \
             process.stdout.write(out))\""
                .to_string(),
            "node-ok",
        ));
    }
    for (command, expected) in checks {
        let (ok, out) = run(&server, &app, "ordinary", &command);
        assert!(ok && out.contains(expected), "{command}:\n{out}");
    }
}
