//! Builds behind walls, end to end through a real `git push` to a real
//! server: what a hostile buildpack (or a hostile package that pip builds)
//! can reach, that nothing of a build outlives it, and that the files crew
//! reads itself from a pushed tree are never followed through a link.

mod common;
mod platform;

use std::path::Path;
use std::time::Duration;

use common::{App, poll_until};
use platform::{Server, TestServer, commit_all, repo};

/// The sandbox's default build user in these tests (not crew's default). A
/// build runs as its app's own uid instead (issue 15.2), never as this one.
const BUILD_USER: &str = "61234";

/// A build ran as its app's own uid (from crew's default `--app-uids`), not
/// root, not the shared build user.
fn ran_as_the_app(output: &str) {
    let uids = reported(output, "uid");
    let uid: Option<u32> = uids.first().and_then(|u| u.parse().ok());
    assert!(
        uids.len() == 1 && uid.is_some_and(|u| (2_000_000_000..=2_099_999_999).contains(&u)),
        "{output}"
    );
}

/// A variable only the server has: no build may see it.
const SERVER_SECRET: (&str, &str) = ("CREW_TEST_SERVER_SECRET", "server-secret-4d1f");

/// A variable the operator passes on with `--build-env`.
const PASSED_ON: (&str, &str) = ("CREW_TEST_CA_BUNDLE", "/etc/ssl/certs/test.pem");

/// A root server whose builds are sandboxed, path buildpacks allowed under
/// `buildpacks`; `None` (and why) where that cannot be had.
fn sandboxed_server(buildpacks: &Path) -> Option<Server> {
    let dir = buildpacks.to_string_lossy().into_owned();
    let server = TestServer::new()
        .needs_root("sandboxed builds")
        .flags(&["--buildpack-dir", &dir, "--build-user", BUILD_USER])
        .flags(&["--build-env", PASSED_ON.0])
        .envs(&[SERVER_SECRET, PASSED_ON])
        .start()?;
    let said = server.output();
    if !said.contains("build isolation: sandboxed") {
        eprintln!("skipped: this host cannot isolate builds:\n{said}");
        return None;
    }
    Some(server)
}

/// Writes an executable `bin/compile` (and `bin/detect`) of a buildpack.
fn buildpack(dir: &Path, name: &str, compile: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join(name).join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    for (script, body) in [("compile", compile), ("detect", "echo Hostile")] {
        let path = bin.join(script);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir.join(name).display().to_string()
}

/// Processes of this machine whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            found.push(format!("{}: {line}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

/// Pushes `app` as `name`; whether git succeeded, and everything it printed.
fn push(server: &Server, app: &App, name: &str) -> (bool, String) {
    server.ok(app.path(), &["apps:create", name]);
    server.git(app.path(), &["push", "crew", "main"])
}

/// The lines a hostile script reports, `KEY=VALUE` after `report:`.
fn reported<'a>(output: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("report: {key}=");
    output
        .lines()
        .filter_map(|l| l.trim_start_matches("remote:").trim().strip_prefix(&prefix))
        .map(str::trim)
        .collect()
}

/// What a hostile build step tries, as shell: it reports each attempt on a
/// `report: KEY=VALUE` line, then leaves a `setsid` daemon behind.
fn hostile_script(data: &Path, daemon: &str) -> String {
    let token = data.join("api-token").display().to_string();
    let db = data.join("crew.db").display().to_string();
    let apps = data.join("apps").display().to_string();
    format!(
        r#"
echo "report: uid=$(id -u)"
for f in '{token}' '{db}'; do
    if cat "$f" >/dev/null 2>&1; then echo "report: read=$f"; else echo "report: unreadable=$f"; fi
done
if ls '{apps}' >/dev/null 2>&1; then echo "report: saw=apps"; else echo "report: hidden=apps"; fi
if touch /etc/crew-build-was-here 2>/dev/null; then echo "report: wrote=/etc"; else echo "report: readonly=/etc"; fi
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' | sort); do echo "report: env=$name"; done
echo "report: secret=$(cat "$3/SECRET_VAR")"
echo "report: cwd=$(pwd) args=$*"
echo "report: passed=${{CREW_TEST_CA_BUNDLE:-}}"
touch "$2/kept-in-cache"
setsid sh -c 'sleep {daemon}' </dev/null >/dev/null 2>&1 &
echo "web: sleep 1000" > "$1/Procfile"
"#
    )
}

#[test]
fn a_hostile_buildpack_reaches_nothing_of_the_server_and_leaves_nothing_running() {
    let buildpacks = App::new();
    let Some(server) = sandboxed_server(buildpacks.path()) else {
        return;
    };
    let daemon = "31337.25";
    let hostile = buildpack(
        buildpacks.path(),
        "hostile",
        &hostile_script(&server.data(), daemon),
    );
    let app = repo(&server, "web: sleep 1000\n");
    app.write(".buildpacks", format!("{hostile}\n"));
    commit_all(&server, app.path(), "hostile buildpack");
    server.ok(app.path(), &["apps:create", "hostile"]);
    server.ok(
        app.path(),
        &["config:set", "-a", "hostile", "SECRET_VAR=for-the-build"],
    );
    let output = server.push(app.path());
    assert!(output.contains("Released v"), "{output}");

    // Not root: the app's own uid.
    ran_as_the_app(&output);
    // Nothing of the data dir: not the token, not the database, not other apps.
    assert!(reported(&output, "read").is_empty(), "{output}");
    assert_eq!(reported(&output, "unreadable").len(), 2, "{output}");
    assert_eq!(reported(&output, "hidden"), ["apps"], "{output}");
    // The stack is read-only.
    assert_eq!(reported(&output, "readonly"), ["/etc"], "{output}");
    assert!(!Path::new("/etc/crew-build-was-here").exists());
    // Only the fixed variables and what the operator passed on.
    let env = reported(&output, "env");
    assert!(!env.contains(&SERVER_SECRET.0), "{env:?}");
    assert!(!output.contains(SERVER_SECRET.1), "{output}");
    for name in ["PATH", "HOME", "STACK", "SOURCE_VERSION", "CREW_APP"] {
        assert!(env.contains(&name), "{name} missing from {env:?}");
    }
    let allowed = [
        "PATH",
        "HOME",
        "STACK",
        "SOURCE_VERSION",
        "CREW_APP",
        PASSED_ON.0,
        // The shell's own.
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ];
    let extra: Vec<&&str> = env.iter().filter(|n| !allowed.contains(n)).collect();
    assert!(extra.is_empty(), "unexpected variables {extra:?}");
    assert_eq!(reported(&output, "passed"), [PASSED_ON.1], "{output}");
    // Config vars in ENV_DIR, as always; crew's fixed paths, not the host's.
    assert_eq!(reported(&output, "secret"), ["for-the-build"], "{output}");
    assert_eq!(
        reported(&output, "cwd"),
        ["/app args=/app /cache /env"],
        "{output}"
    );
    // The cache is the app's, kept for the next build.
    assert!(
        server
            .data()
            .join("apps/hostile/cache/kept-in-cache")
            .exists()
    );
    // Nothing of the build outlives it: the `setsid` daemon is gone by the
    // time the push reports the release.
    let left = processes_with(&format!("sleep {daemon}"));
    assert!(left.is_empty(), "the build left {left:?}");
}

#[test]
fn a_package_that_pip_builds_runs_sandboxed_too() {
    let buildpacks = App::new();
    let Some(server) = sandboxed_server(buildpacks.path()) else {
        return;
    };
    let venv = std::process::Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .status()
        .is_ok_and(|s| s.success());
    if !venv {
        eprintln!("skipped: python3 with venv is not installed (.ci/run installs python3-venv)");
        return;
    }
    let daemon = "31338.25";
    let token = server.data().join("api-token").display().to_string();
    let app = repo(&server, "web: python3 -m http.server $PORT\n");
    app.write("requirements.txt", "./pkg\n");
    app.write(
        "pkg/pyproject.toml",
        "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n",
    );
    // An in-tree build backend: pip runs it while it installs requirements.
    app.write(
        "pkg/backend.py",
        format!(
            r#"import os, subprocess, sys
def say(line):
    print("report: " + line, flush=True)
say("uid=%d" % os.getuid())
try:
    open({token:?}).read()
    say("read=token")
except OSError:
    say("unreadable=token")
say("secret=%s" % os.environ.get({secret:?}, ""))
subprocess.Popen(["setsid", "sleep", {daemon:?}], stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
raise SystemExit("report: done")
"#,
            secret = SERVER_SECRET.0,
        ),
    );
    commit_all(&server, app.path(), "a package with an in-tree backend");
    let (ok, output) = push(&server, &app, "pipapp");
    // The backend fails the build on purpose, so that pip shows its output.
    assert!(!ok, "{output}");
    ran_as_the_app(&output);
    assert_eq!(reported(&output, "unreadable"), ["token"], "{output}");
    assert_eq!(reported(&output, "secret"), [""], "{output}");
    let left = processes_with(&format!("sleep {daemon}"));
    assert!(left.is_empty(), "the build left {left:?}");
}

#[test]
fn a_killed_server_takes_its_running_build_with_it() {
    let buildpacks = App::new();
    let Some(mut server) = sandboxed_server(buildpacks.path()) else {
        return;
    };
    let daemon = "31339.25";
    let slow = buildpack(
        buildpacks.path(),
        "slow",
        &format!(
            "setsid sh -c 'sleep {daemon}' </dev/null >/dev/null 2>&1 &\necho started\nsleep {daemon}"
        ),
    );
    let app = repo(&server, "web: sleep 1000\n");
    app.write(".buildpacks", format!("{slow}\n"));
    commit_all(&server, app.path(), "slow buildpack");
    server.ok(app.path(), &["apps:create", "slow"]);
    let mut git = std::process::Command::new("git")
        .args(["push", "crew", "main"])
        .current_dir(app.path())
        .env("HOME", server.home.path())
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git push");
    let started = poll_until(Duration::from_secs(60), || {
        processes_with(&format!("sleep {daemon}")).len() >= 2
    });
    assert!(started, "the build never started");
    // The running step is limited by a cgroup of its own.
    let prefix = format!("{}-", server.pid().expect("the server runs"));
    let limits = build_cgroup_limits(&prefix);
    assert_eq!(
        limits,
        Some((4 * 1024 * 1024 * 1024, 4096)),
        "the build's cgroup limits"
    );
    server.kill(common::Signal::KILL);
    let gone = poll_until(Duration::from_secs(10), || {
        processes_with(&format!("sleep {daemon}")).is_empty()
    });
    let _ = git.kill();
    let _ = git.wait();
    assert!(
        gone,
        "the build outlived the server: {:?}",
        processes_with(&format!("sleep {daemon}"))
    );
}

/// The memory and pids limits of the running build step of the server whose
/// cgroups start with `prefix`, on cgroup v2 or v1.
fn build_cgroup_limits(prefix: &str) -> Option<(u64, u64)> {
    let find = |parent: &str| -> Option<std::path::PathBuf> {
        std::fs::read_dir(parent).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with(prefix) && name.ends_with("-build")).then(|| e.path())
        })
    };
    let read = |path: std::path::PathBuf| -> Option<u64> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    if let Some(dir) = find("/sys/fs/cgroup/crew") {
        return Some((read(dir.join("memory.max"))?, read(dir.join("pids.max"))?));
    }
    let memory = find("/sys/fs/cgroup/memory/crew")?;
    let pids = find("/sys/fs/cgroup/pids/crew")?;
    Some((
        read(memory.join("memory.limit_in_bytes"))?,
        read(pids.join("pids.max"))?,
    ))
}

#[test]
fn path_buildpacks_outside_the_operators_directory_are_refused() {
    let buildpacks = App::new();
    let Some(server) = sandboxed_server(buildpacks.path()) else {
        return;
    };
    // A directory the request names that is not under --buildpack-dir, once
    // plainly and once through `..`.
    let elsewhere = App::new();
    let outside = buildpack(elsewhere.path(), "outside", "echo ran-outside; exit 1");
    let sneaky = format!("{}/../{}", buildpacks.path().display(), outside);
    let app = repo(&server, "web: sleep 1000\n");
    server.ok(app.path(), &["apps:create", "paths"]);
    for url in [outside.as_str(), sneaky.as_str(), "/etc"] {
        server.ok(
            app.path(),
            &["config:set", "-a", "paths", &format!("BUILDPACK_URL={url}")],
        );
        let (ok, output) = server.git(app.path(), &["push", "crew", "main"]);
        assert!(!ok, "{output}");
        assert!(output.contains("is a path on the server"), "{output}");
        assert!(!output.contains("ran-outside"), "{output}");
    }
}

/// A server with isolation off: builds run as today, but say so. Any user.
fn plain_server() -> Option<Server> {
    TestServer::new().isolation("off").start()
}

#[test]
fn an_unisolated_build_says_so() {
    let Some(server) = plain_server() else {
        return;
    };
    assert!(
        server.output().contains("build isolation: off: "),
        "{}",
        server.output()
    );
    let app = repo(&server, "web: sleep 1000\n");
    let (ok, output) = push(&server, &app, "plain");
    assert!(ok, "{output}");
    assert!(
        output.contains(" !     Warning: this build is not isolated"),
        "{output}"
    );
}

#[test]
fn a_symlinked_procfile_is_refused_not_followed() {
    let Some(server) = plain_server() else {
        return;
    };
    // A file of this machine that the pusher must never see.
    let secret = App::new();
    secret.write("secret", "web: echo host-secret-7f3a\n");
    let app = repo(&server, "web: sleep 1000\n");
    std::fs::remove_file(app.join("Procfile")).expect("rm Procfile");
    std::os::unix::fs::symlink(secret.join("secret"), app.join("Procfile")).expect("symlink");
    commit_all(&server, app.path(), "a linked Procfile");
    let (ok, output) = push(&server, &app, "linked");
    assert!(!ok, "{output}");
    assert!(output.contains("Procfile is a symbolic link"), "{output}");
    assert!(!output.contains("host-secret-7f3a"), "{output}");
    let (_, formation, _) = server.cli(app.path(), &["ps", "-a", "linked"]);
    assert!(!formation.contains("host-secret-7f3a"), "{formation}");

    // The same for .buildpacks.
    let app = repo(&server, "web: sleep 1000\n");
    std::os::unix::fs::symlink(secret.join("secret"), app.join(".buildpacks")).expect("symlink");
    commit_all(&server, app.path(), "a linked .buildpacks");
    let (ok, output) = push(&server, &app, "linked-list");
    assert!(!ok, "{output}");
    assert!(
        output.contains(".buildpacks is a symbolic link"),
        "{output}"
    );
    assert!(!output.contains("host-secret-7f3a"), "{output}");
}
