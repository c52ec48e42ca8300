//! The kernel surface of an isolated dyno (issue 15, point 3): no user
//! namespaces, seccomp, no capabilities, no host `/proc` leaks, no host path in
//! its mount table, and its terminal from its own devpts. Needs root; skips
//! (and says so) otherwise.

use std::path::Path;
use std::time::Duration;

use crew_runtime::{
    DynoInput, DynoProcess, DynoSpec, ExitStatus, IsolatedConfig, IsolatedRuntime, Runtime,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config() -> IsolatedConfig {
    IsolatedConfig {
        root_dir: "/run/crew-walls-test/root".into(),
        cgroup_name: "crew-walls-test".into(),
        ..IsolatedConfig::default()
    }
}

fn runtime(test: &str) -> Option<IsolatedRuntime> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root ({test})");
        return None;
    }
    Some(IsolatedRuntime::new(config()).expect("isolation works as root"))
}

/// A slug directory, readable by everyone (these tests are about the kernel,
/// not about slug ownership).
fn slug() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("crew-walls-slug")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hi\n").unwrap();
    dir
}

/// Each test names its dyno apart: every test makes its own runtime, and the
/// cgroup names of two runtimes in one process would otherwise meet.
fn spec(slug: &Path, command: &str) -> DynoSpec {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    DynoSpec {
        name: format!("run.{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        command: command.into(),
        env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
        cwd: slug.to_path_buf(),
        ..DynoSpec::default()
    }
}

async fn run(rt: &IsolatedRuntime, spec: &DynoSpec) -> (String, ExitStatus) {
    let mut process = rt.spawn(spec).expect("the dyno starts");
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

#[tokio::test]
async fn a_dyno_cannot_make_a_user_namespace() {
    let Some(rt) = runtime("a_dyno_cannot_make_a_user_namespace") else {
        return;
    };
    let slug = slug();
    let (out, _) = run(
        &rt,
        &spec(
            slug.path(),
            "unshare -U true && echo userns-ok || echo userns-refused; \
             unshare -Urm true && echo rootns-ok || echo rootns-refused; \
             echo done",
        ),
    )
    .await;
    assert!(out.contains("userns-refused"), "{out}");
    assert!(out.contains("rootns-refused"), "{out}");
    assert!(!out.contains("-ok"), "{out}");
    assert!(out.contains("done"), "{out}");
}

#[tokio::test]
async fn a_dyno_runs_under_seccomp_with_no_capabilities() {
    let Some(rt) = runtime("a_dyno_runs_under_seccomp_with_no_capabilities") else {
        return;
    };
    let slug = slug();
    let (out, status) = run(
        &rt,
        &spec(
            slug.path(),
            "grep -E '^(Seccomp|Cap[A-Za-z]+|NoNewPrivs):' /proc/self/status",
        ),
    )
    .await;
    assert_eq!(status, ExitStatus::Code(0), "{out}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{name} in {out}"))
    };
    assert_eq!(field("Seccomp"), "2", "{out}");
    assert_eq!(field("NoNewPrivs"), "1", "{out}");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(caps), "0000000000000000", "{caps}: {out}");
    }
}

#[tokio::test]
async fn host_proc_entries_are_masked_or_read_only() {
    let Some(rt) = runtime("host_proc_entries_are_masked_or_read_only") else {
        return;
    };
    let slug = slug();
    let (out, _) = run(
        &rt,
        &spec(
            slug.path(),
            "for f in /proc/kcore /proc/keys /proc/timer_list /proc/interrupts; do \
               test -e $f || continue; \
               n=$(head -c 64 $f 2>/dev/null | wc -c); echo \"$f $n\"; done; \
             ls -A /proc/acpi /proc/scsi 2>/dev/null | grep -v ':$' | grep . && echo listed; \
             echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo sys-written; \
             echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written; \
             test -e /sys/kernel && echo sys-mounted; \
             for p in sys sysrq-trigger kcore interrupts; do test -e /proc/$p && echo exists:/proc/$p; done; \
             grep -E ' /proc/(sys|sysrq-trigger|kcore|interrupts) ' /proc/self/mountinfo; \
             echo done",
        ),
    )
    .await;
    assert!(out.contains("done"), "{out}");
    for line in out.lines().filter(|l| l.starts_with("/proc/")) {
        assert!(line.ends_with(" 0"), "a host /proc file can be read: {out}");
    }
    for leak in ["listed", "sys-written", "sysrq-written", "sys-mounted"] {
        assert!(!out.contains(leak), "{leak}: {out}");
    }
    // Unprivileged permissions already keep most of these shut; the mounts
    // keep them shut for anything that gets around those.
    let mount_of = |path: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(4) == Some(path))
            .unwrap_or_else(|| panic!("{path} is not covered: {out}"))
            .to_string()
    };
    let exists = |path: &str| out.contains(&format!("exists:{path}\n"));
    for path in ["/proc/sys", "/proc/sysrq-trigger"]
        .into_iter()
        .filter(|p| exists(p))
    {
        let options = mount_of(path);
        assert!(options.contains(" ro,"), "{path} is writable: {options}");
    }
    for path in ["/proc/kcore", "/proc/interrupts"]
        .into_iter()
        .filter(|p| exists(p))
    {
        mount_of(path);
    }
    assert!(exists("/proc/sys"), "{out}");
}

#[tokio::test]
async fn the_mount_table_names_no_host_path() {
    let Some(rt) = runtime("the_mount_table_names_no_host_path") else {
        return;
    };
    let slug = slug();
    let (out, status) = run(
        &rt,
        &spec(slug.path(), "cat /proc/self/mounts /proc/self/mountinfo"),
    )
    .await;
    assert_eq!(status, ExitStatus::Code(0), "{out}");
    assert!(out.contains(" /app overlay "), "{out}");
    let slug_path = slug.path().to_str().unwrap();
    assert!(!out.contains(slug_path), "the slug's path shows: {out}");
    assert!(
        !out.contains("crew-walls-test"),
        "the root's path shows: {out}"
    );
}

#[tokio::test]
async fn ordinary_commands_still_work_under_the_filter() {
    let Some(rt) = runtime("ordinary_commands_still_work_under_the_filter") else {
        return;
    };
    let slug = slug();
    let (out, status) = run(
        &rt,
        &spec(
            slug.path(),
            "echo x > /app/new.txt && cat /app/hello.txt /app/new.txt && \
             (sleep 0.01 & wait) && sh -c 'echo child' && ls /app | wc -l",
        ),
    )
    .await;
    assert_eq!(status, ExitStatus::Code(0), "{out}");
    assert_eq!(out, "hi\nx\nchild\n2\n");
}

/// `crew run` attached: the dyno's terminal is its own, so `tty` names it.
#[tokio::test]
async fn the_terminal_comes_from_the_dyno_devpts() {
    let Some(rt) = runtime("the_terminal_comes_from_the_dyno_devpts") else {
        return;
    };
    let slug = slug();
    let mut spec = spec(
        slug.path(),
        "tty; stty size; ls -1 /dev/pts; test -O \"$(tty)\" && echo owned",
    );
    spec.input = DynoInput::Terminal { cols: 91, rows: 17 };
    let mut process = rt.spawn(&spec).expect("the dyno starts");
    let mut output = process.take_output().unwrap();
    let console = process.take_console().expect("a console");
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(20), output.read_to_string(&mut text))
        .await
        .expect("output ends")
        .unwrap();
    let mut input = console.input;
    let _ = input.shutdown().await;
    let status = tokio::time::timeout(Duration::from_secs(20), process.wait())
        .await
        .expect("the dyno exits")
        .unwrap();
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(status, ExitStatus::Code(0), "{text}");
    assert_eq!(
        lines,
        ["/dev/pts/0", "17 91", "0", "ptmx", "owned"],
        "{text}"
    );
}

/// A handle without an app's uid, or with root's, starts nothing: an app never
/// borrows another's user, and never runs as root.
#[tokio::test]
async fn a_dyno_never_runs_as_root_or_without_its_own_user() {
    let Some(rt) = runtime("a_dyno_never_runs_as_root_or_without_its_own_user") else {
        return;
    };
    let slug = slug();
    for (user, why) in [
        (None, "no uid of its own"),
        (Some((0, 0)), "may not run as root"),
        (Some((2_000_000_000, 0)), "may not run as root"),
    ] {
        let refused = rt.with_user(user).spawn(&spec(slug.path(), "true"));
        let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains(why), "{user:?}: {error}");
    }
    let (out, status) = run(
        &rt.with_user(Some((2_000_000_007, 2_000_000_008))),
        &spec(slug.path(), "id -u; id -g; id -G; stat -c %u:%g /app"),
    )
    .await;
    assert_eq!(status, ExitStatus::Code(0), "{out}");
    assert_eq!(
        out,
        "2000000007\n2000000008\n2000000008\n2000000007:2000000008\n"
    );
}
