//! Sandboxed builds (as root): a git buildpack is cloned and run behind the
//! walls as the build's user, and nothing of a build outlives it, a build
//! that runs out of time included.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crew_buildpack::{BuildError, BuildIsolation, BuildRequest, BuildSandbox, Buildpacks};
use crew_runtime::{DynoSize, IsolatedConfig, IsolatedRuntime};

const BUILD_UID: u32 = 61235;

/// Built-in buildpacks whose builds run sandboxed, with `visible` shown
/// read-only inside; `None` (and why) where that cannot be had.
fn sandboxed(root: &Path, visible: &Path) -> Option<Buildpacks> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: sandboxed builds need root (CI runs as root)");
        return None;
    }
    let git = Command::new("git").arg("--version").output();
    if !git.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no git (.ci/run installs it)");
        return None;
    }
    let config = IsolatedConfig {
        root_dir: root.join("root"),
        extra_read_only: vec![visible.to_path_buf()],
        ..IsolatedConfig::default()
    };
    let runtime = match IsolatedRuntime::new(config).and_then(|r| r.check().map(|()| r)) {
        Ok(runtime) => runtime,
        Err(why) => {
            eprintln!("skipped: this host cannot isolate: {why}");
            return None;
        }
    };
    let buildpacks = Buildpacks::install_builtin(&root.join("buildpacks"))
        .expect("install built-ins")
        .with_isolation(BuildIsolation::Sandboxed(BuildSandbox {
            runtime,
            uid: BUILD_UID,
            gid: BUILD_UID,
            limits: DynoSize {
                name: "build".into(),
                memory_bytes: 512 * 1024 * 1024,
                pids: 256,
            },
            env: Vec::new(),
        }));
    Some(buildpacks)
}

fn write(path: &Path, text: &str, executable: bool) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
    if executable {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// A git repository holding a buildpack whose compile runs `compile`.
fn git_buildpack(dir: &Path, compile: &str) -> PathBuf {
    git_buildpack_with(dir, compile, true)
}

fn git_buildpack_with(dir: &Path, compile: &str, executable: bool) -> PathBuf {
    write(&dir.join("bin/detect"), "#!/bin/sh\necho Gitpack\n", true);
    write(
        &dir.join("bin/compile"),
        &format!("#!/bin/sh\n{compile}\n"),
        executable,
    );
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "bp",
        ],
    ] {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }
    // The clone runs as the build's user, and git serves only repositories
    // of the user it runs as.
    let out = Command::new("chown")
        .args(["-R", &format!("{BUILD_UID}:{BUILD_UID}")])
        .arg(dir)
        .output()
        .expect("chown");
    assert!(out.status.success(), "chown: {out:?}");
    dir.to_path_buf()
}

/// Processes of this machine whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
                .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
                .filter(|line| line.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

struct Run {
    result: Result<crew_buildpack::BuildOutput, BuildError>,
    lines: Vec<String>,
}

fn build(buildpacks: &Buildpacks, root: &Path, name: &str, url: &str, timeout: Duration) -> Run {
    let root = root.join(name);
    let source = root.join("src");
    write(&source.join("Procfile"), "web: x\n", false);
    let config: BTreeMap<String, String> = [("BUILDPACK_URL".to_string(), url.to_string())].into();
    let slug = root.join("slugs/slug.tar.gz");
    let cache = root.join("cache");
    let request = BuildRequest {
        app: "demo",
        source: &source,
        cache: &cache,
        config: &config,
        slug_path: &slug,
        timeout,
        source_version: None,
    };
    let mut lines = Vec::new();
    let result = buildpacks.build(&request, &mut |l| lines.push(l.to_string()));
    Run { result, lines }
}

/// One test: two isolated runtimes in one process would name their cgroups
/// alike.
#[test]
fn a_git_buildpack_is_cloned_and_run_in_the_sandbox_and_nothing_outlives_a_build() {
    // Not under /tmp: the sandbox's /tmp is its own, so a read-only path
    // shown inside must lie elsewhere.
    let root = tempfile::Builder::new()
        .prefix("crew-sandbox-test-")
        .tempdir_in("/var/tmp")
        .expect("tempdir in /var/tmp");
    let repos = root.path().join("repos");
    fs::create_dir(&repos).expect("mkdir repos");
    let Some(buildpacks) = sandboxed(root.path(), &repos) else {
        return;
    };

    // Cloned and run as the build's user; its daemon dies with the step.
    let repo = git_buildpack(
        &repos.join("bp"),
        "echo \"uid=$(id -u) owner=$(stat -c %u /buildpack/bin/compile)\"\n\
         setsid sh -c 'sleep 31340.25' </dev/null >/dev/null 2>&1 &",
    );
    let url = format!("file://{}", repo.display());
    let run = build(
        &buildpacks,
        root.path(),
        "ok",
        &url,
        Duration::from_secs(120),
    );
    assert!(
        run.result.is_ok(),
        "{:?}\n{}",
        run.result,
        run.lines.join("\n")
    );
    let want = format!("uid={BUILD_UID} owner={BUILD_UID}");
    assert!(run.lines.contains(&want), "{}", run.lines.join("\n"));
    let left = processes_with("sleep 31340.25");
    assert!(left.is_empty(), "the build left {left:?}");

    // Out of time: killed whole, daemon and all.
    let repo = git_buildpack(
        &repos.join("slow"),
        "setsid sh -c 'sleep 31341.25' </dev/null >/dev/null 2>&1 &\nsleep 31341.25",
    );
    let url = format!("file://{}", repo.display());
    let run = build(
        &buildpacks,
        root.path(),
        "slow",
        &url,
        Duration::from_secs(5),
    );
    assert!(
        matches!(run.result, Err(BuildError::TimedOut { .. })),
        "{:?}\n{}",
        run.result,
        run.lines.join("\n")
    );
    let left = processes_with("sleep 31341.25");
    assert!(left.is_empty(), "the build left {left:?}");

    // A compile that cannot be executed is the buildpack's fault, said so.
    let repo = git_buildpack_with(&repos.join("noexec"), "true", false);
    let url = format!("file://{}", repo.display());
    let run = build(
        &buildpacks,
        root.path(),
        "noexec",
        &url,
        Duration::from_secs(120),
    );
    match &run.result {
        Err(BuildError::InvalidBuildpack { reason, .. }) => {
            assert!(reason.contains("is not executable"), "{reason}");
        }
        other => panic!("{other:?}\n{}", run.lines.join("\n")),
    }
}
