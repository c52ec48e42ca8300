//! Times a dyno running `true` from start to exit, under each way of making one,
//! on the same slug: plain fork/exec, crew's `PlainRuntime`, crew's
//! `IsolatedRuntime`, and the peers from Debian (bwrap, runc, crun). The bench's
//! `dyno` scenario (bench/dynos.py) runs it; it is an example so nothing ships.
//!
//! ```text
//! dyno_start SLUG_DIR RUNS [RUNTIME…]
//! ```
//!
//! Every runtime runs `/bin/sh -c true` in the slug (at `/app` where it is
//! isolated) with the same environment. The runtimes take turns, one run each per
//! round, so a slow drift of a shared machine hits them all alike; two untimed
//! runs each come first, and tell a runtime that cannot work here from one that
//! can. Prints one JSON object per runtime on stdout:
//! `{"runtime": …, "label": …, "version": …, "ms": [...]}`, or
//! `{"runtime": …, "label": …, "skipped": "why"}` when it is missing or failed:
//! a failure never turns into a number.
//!
//! Then, as many times again, crew's isolated runtime with a network starts
//! `true` with its init timing each step (`IsolatedRuntime::time_start`),
//! and one more object says what each part of its start took:
//! `{"runtime": "crew-isolated-net-steps", "parts": [["clone", [ms…]], …]}`.
//! Those runs are not in the rounds: the timing costs a write per step.
//!
//! The peers are timed from here, with `Command::status()`, so every row pays the
//! same price for starting a process from this program. As root it re-executes
//! itself under `unshare -m` first: the bwrap and runc rows need host-side mounts
//! (their overlay's writable layer, a scratch tmpfs), and these must neither reach
//! the host nor outlive the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crew_runtime::{
    DynoNetwork, DynoNetworkConfig, DynoProcess, DynoSpec, Ipv4Range, IsolatedConfig,
    IsolatedRuntime, PlainRuntime, Runtime, StartTiming,
};
use rustix::mount::{MountFlags, UnmountFlags};
use tokio::io::AsyncReadExt;

/// What every runtime runs with `/bin/sh -c`; `DYNO_START_COMMAND` replaces it,
/// to check by hand that each runtime really gives what its label says (for
/// example `id -u; hostname; touch /app/x && ls /app`). Its output then goes to
/// stderr; that of `true` is thrown away.
fn command() -> String {
    std::env::var("DYNO_START_COMMAND").unwrap_or_else(|_| "true".into())
}

fn shown() -> Stdio {
    if std::env::var_os("DYNO_START_COMMAND").is_some() {
        Stdio::from(std::io::stderr())
    } else {
        Stdio::null()
    }
}

fn argv() -> [String; 3] {
    ["/bin/sh".into(), "-c".into(), command()]
}
/// Untimed runs of each runtime before the rounds.
const WARMUP: usize = 2;
/// The untimed pause after every run, whichever the runtime: the work a run
/// leaves behind (the kernel releasing its namespaces and mounts, crew's
/// pool making the namespace that replaces the one taken) is done in it, not
/// in the next run's time, which may be another runtime's.
/// `DYNO_START_SETTLE_MS` changes it.
fn settle_pause() -> Duration {
    let ms = std::env::var("DYNO_START_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    Duration::from_millis(ms)
}

fn settle(contender: &mut dyn Contender) {
    contender.settle();
    std::thread::sleep(settle_pause());
}
/// Set on the re-executed copy, which runs in a mount namespace of its own.
const PRIVATE_ENV: &str = "CREW_DYNO_START_PRIVATE_MOUNTS";
/// The stack every isolated runtime shows read-only, as crew's default does.
const STACK: [&str; 6] = ["/usr", "/etc", "/bin", "/lib", "/lib64", "/sbin"];
/// The app's user, as in crew's default `IsolatedConfig`.
const UID: u32 = 65534;
/// crew's default dyno size (`standard-1x`), given to runc and crun as well.
const MEMORY_BYTES: u64 = 512 * 1024 * 1024;
const PIDS: u32 = 256;

const ALL: [&str; 8] = [
    "fork-exec",
    "crew-plain",
    "crew-isolated",
    "crew-isolated-net",
    "bwrap-ro",
    "bwrap-overlay",
    "runc",
    "crun",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dyno_start: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [slug, runs, wanted @ ..] = args.as_slice() else {
        return Err(format!(
            "usage: dyno_start SLUG_DIR RUNS [RUNTIME…] (runtimes: {})",
            ALL.join(" ")
        ));
    };
    let runs: usize = runs
        .parse()
        .map_err(|_| format!("RUNS must be a number, not {runs:?}"))?;
    for w in wanted {
        if !ALL.contains(&w.as_str()) {
            return Err(format!("unknown runtime {w} (known: {})", ALL.join(" ")));
        }
    }
    let slug = std::fs::canonicalize(slug).map_err(|e| format!("slug {slug}: {e}"))?;

    if is_root() && std::env::var_os(PRIVATE_ENV).is_none() && which("unshare").is_some() {
        // The copy does the work; this one only passes on its exit code.
        let status = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(std::env::current_exe().map_err(|e| e.to_string())?)
            .args(std::env::args_os().skip(1))
            .env(PRIVATE_ENV, "1")
            .status()
            .map_err(|e| format!("unshare: {e}"))?;
        std::process::exit(status.code().unwrap_or(2));
    }

    let scratch = Scratch::new()?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;

    let chosen: Vec<&'static str> = if wanted.is_empty() {
        ALL.to_vec()
    } else {
        ALL.iter()
            .copied()
            .filter(|n| wanted.iter().any(|w| w == n))
            .collect()
    };
    let mut rows: Vec<Row> = chosen
        .iter()
        .map(|name| Row::new(name, make(name, &slug, &scratch, &tokio)))
        .collect();

    for row in &mut rows {
        row.warm_up();
    }
    for round in 1..=runs {
        for row in &mut rows {
            row.time(round);
        }
    }
    for row in &rows {
        println!("{}", row.json());
    }
    for row in &mut rows {
        if let Some(line) = row.step_times(runs) {
            println!("{line}");
        }
    }
    Ok(())
}

/// One way of running a dyno.
trait Contender {
    /// What the report says it is.
    fn label(&self) -> String;
    fn version(&self) -> String {
        String::new()
    }
    /// Runs `true` once and returns how long it took, start to exit.
    fn once(&mut self) -> Result<Duration, String>;
    /// Waits, untimed, for what a run leaves to do in the background that
    /// the runtime itself knows of.
    fn settle(&mut self) {}
    /// One start timed step by step, where the runtime can.
    fn time_steps(&mut self) -> Option<Result<StartTiming, String>> {
        None
    }
}

struct Row<'a> {
    name: &'static str,
    contender: Result<Box<dyn Contender + 'a>, String>,
    ms: Vec<f64>,
}

impl<'a> Row<'a> {
    fn new(name: &'static str, contender: Result<Box<dyn Contender + 'a>, String>) -> Self {
        Row {
            name,
            contender,
            ms: Vec::new(),
        }
    }

    fn warm_up(&mut self) {
        for _ in 0..WARMUP {
            if let Ok(c) = &mut self.contender {
                let result = c.once();
                settle(c.as_mut());
                if let Err(why) = result {
                    self.contender = Err(format!("failed: {why}"));
                }
            }
        }
    }

    fn time(&mut self, round: usize) {
        if let Ok(c) = &mut self.contender {
            let result = c.once();
            settle(c.as_mut());
            match result {
                Ok(took) => self.ms.push(took.as_secs_f64() * 1000.0),
                Err(why) => self.contender = Err(format!("failed in round {round}: {why}")),
            }
        }
    }

    /// `runs` timed starts, as one JSON object of what each part took.
    fn step_times(&mut self, runs: usize) -> Option<String> {
        let contender = self.contender.as_mut().ok()?;
        let mut parts: Vec<(&'static str, Vec<String>)> = Vec::new();
        let runtime = format!("{}-steps", self.name);
        for _ in 0..runs {
            let timing = match contender.time_steps()? {
                Ok(timing) => timing,
                Err(why) => {
                    return Some(format!(
                        "{{\"runtime\": {}, \"skipped\": {}}}",
                        json_string(&runtime),
                        json_string(&format!("failed: {why}"))
                    ));
                }
            };
            settle(contender.as_mut());
            for (kind, took) in timing.parts {
                let ms = format!("{:.3}", took.as_secs_f64() * 1000.0);
                match parts.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, all)) => all.push(ms),
                    None => parts.push((kind, vec![ms])),
                }
            }
        }
        let parts: Vec<String> = parts
            .iter()
            .map(|(kind, ms)| format!("[{}, [{}]]", json_string(kind), ms.join(", ")))
            .collect();
        Some(format!(
            "{{\"runtime\": {}, \"parts\": [{}]}}",
            json_string(&runtime),
            parts.join(", ")
        ))
    }

    fn json(&self) -> String {
        let mut fields = BTreeMap::new();
        fields.insert("runtime", json_string(self.name));
        match &self.contender {
            Ok(c) => {
                fields.insert("label", json_string(&c.label()));
                fields.insert("version", json_string(&c.version()));
                let ms: Vec<String> = self.ms.iter().map(|m| format!("{m:.3}")).collect();
                fields.insert("ms", format!("[{}]", ms.join(", ")));
            }
            Err(why) => {
                fields.insert("skipped", json_string(why));
            }
        }
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}: {v}", json_string(k)))
            .collect();
        format!("{{{}}}", body.join(", "))
    }
}

fn make<'a>(
    name: &str,
    slug: &'a Path,
    scratch: &'a Scratch,
    tokio: &'a tokio::runtime::Runtime,
) -> Result<Box<dyn Contender + 'a>, String> {
    Ok(match name {
        "fork-exec" => Box::new(ForkExec { slug }),
        "crew-plain" => Box::new(CrewPlain::new(slug, tokio)?),
        "crew-isolated" => Box::new(CrewIsolated::new(slug, tokio)?),
        "crew-isolated-net" => Box::new(CrewIsolatedNet::new(slug, scratch, tokio)?),
        "bwrap-ro" => Box::new(Bwrap::new(slug, scratch, false)?),
        "bwrap-overlay" => Box::new(Bwrap::new(slug, scratch, true)?),
        "runc" => Box::new(Oci::new("runc", slug, scratch)?),
        "crun" => Box::new(Oci::new("crun", slug, scratch)?),
        other => return Err(format!("unknown runtime {other}")),
    })
}

fn env() -> Vec<(String, String)> {
    vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME".into(), "/app".into()),
        ("DYNO".into(), "run.1".into()),
    ]
}

fn spec(slug: &Path) -> DynoSpec {
    DynoSpec {
        name: "run.1".into(),
        // crew runs the command with `sh -c`, as every other runtime here does.
        command: command(),
        env: env(),
        cwd: slug.to_path_buf(),
        ..DynoSpec::default()
    }
}

/// Times an external command, quiet; on failure runs it once more with its stderr
/// captured, to say why.
fn time_command(make: impl Fn() -> Command) -> Result<Duration, String> {
    let start = Instant::now();
    let status = make()
        .stdin(Stdio::null())
        .stdout(shown())
        .stderr(shown())
        .status()
        .map_err(|e| e.to_string())?;
    let took = start.elapsed();
    if status.success() {
        return Ok(took);
    }
    let again = make().stdin(Stdio::null()).output();
    let why = match again {
        Ok(out) => String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string(),
        Err(e) => e.to_string(),
    };
    Err(format!("{status}: {why}"))
}

// ---------------------------------------------------------------- the runtimes

/// The floor: one process, no isolation.
struct ForkExec<'a> {
    slug: &'a Path,
}

impl Contender for ForkExec<'_> {
    fn label(&self) -> String {
        "`/bin/sh -c true` by `std::process::Command`, cwd the slug, no isolation".into()
    }

    fn once(&mut self) -> Result<Duration, String> {
        time_command(|| {
            let [sh, flag, script] = argv();
            let mut c = Command::new(sh);
            c.args([flag, script])
                .current_dir(self.slug)
                .env_clear()
                .envs(env());
            c
        })
    }
}

struct CrewPlain<'a> {
    runtime: PlainRuntime,
    spec: DynoSpec,
    tokio: &'a tokio::runtime::Runtime,
}

impl<'a> CrewPlain<'a> {
    fn new(slug: &Path, tokio: &'a tokio::runtime::Runtime) -> Result<Self, String> {
        Ok(CrewPlain {
            runtime: PlainRuntime::new(None).map_err(|e| e.to_string())?,
            spec: spec(slug),
            tokio,
        })
    }
}

impl Contender for CrewPlain<'_> {
    fn label(&self) -> String {
        "crew `PlainRuntime`: spawn, read the output to its end, wait".into()
    }

    fn once(&mut self) -> Result<Duration, String> {
        self.tokio
            .block_on(spawn_and_wait(&self.runtime, &self.spec))
    }
}

struct CrewIsolated<'a> {
    runtime: IsolatedRuntime,
    spec: DynoSpec,
    tokio: &'a tokio::runtime::Runtime,
}

impl<'a> CrewIsolated<'a> {
    fn new(slug: &Path, tokio: &'a tokio::runtime::Runtime) -> Result<Self, String> {
        let config = IsolatedConfig {
            root_dir: "/run/crew-bench/root".into(),
            cgroup_name: "crew-bench".into(),
            ..IsolatedConfig::default()
        };
        let runtime = IsolatedRuntime::new(config).map_err(|e| e.to_string())?;
        Ok(CrewIsolated {
            runtime,
            spec: spec(slug),
            tokio,
        })
    }
}

impl Contender for CrewIsolated<'_> {
    fn label(&self) -> String {
        format!(
            "crew `IsolatedRuntime`: mnt+pid+uts+ipc+cgroup namespaces, overlay /app on a \
             tmpfs, own /proc, /tmp and /dev, read-only stack, {}, uid {UID}; spawn, read \
             the output to its end, wait",
            self.runtime.cgroup_description()
        )
    }

    fn once(&mut self) -> Result<Duration, String> {
        self.tokio
            .block_on(spawn_and_wait(&self.runtime, &self.spec))
    }
}

/// crew's isolated runtime with a network namespace per dyno, on a bridge and
/// table of the bench's own (removed at the end), from the pool crew keeps.
struct CrewIsolatedNet<'a> {
    runtime: IsolatedRuntime,
    network: DynoNetwork,
    spec: DynoSpec,
    tokio: &'a tokio::runtime::Runtime,
}

impl<'a> CrewIsolatedNet<'a> {
    fn new(
        slug: &Path,
        scratch: &Scratch,
        tokio: &'a tokio::runtime::Runtime,
    ) -> Result<Self, String> {
        let _entered = tokio.enter();
        let network = DynoNetwork::start(DynoNetworkConfig {
            range: Ipv4Range::parse("10.214.250.0/24")?,
            bridge: "crewbench0".into(),
            // Only written to the dyno's resolv.conf; `true` asks nothing.
            dns_upstream: Some("192.0.2.53:53".parse().map_err(|_| "address")?),
            resolv_conf: scratch.dir.join("resolv.conf"),
            ..DynoNetworkConfig::default()
        })
        .map_err(|e| e.to_string())?;
        let config = IsolatedConfig {
            root_dir: "/run/crew-bench/root".into(),
            // Its own parent cgroup: dyno ids count per runtime, and the
            // other isolated row's would clash with these.
            cgroup_name: "crew-bench-net".into(),
            network: Some(network.clone()),
            ..IsolatedConfig::default()
        };
        let runtime = match IsolatedRuntime::new(config) {
            Ok(r) => r,
            Err(e) => {
                let _ = network.remove();
                return Err(e.to_string());
            }
        };
        Ok(CrewIsolatedNet {
            runtime,
            network,
            spec: spec(slug),
            tokio,
        })
    }
}

impl Drop for CrewIsolatedNet<'_> {
    fn drop(&mut self) {
        let _ = self.network.remove();
    }
}

impl Contender for CrewIsolatedNet<'_> {
    fn label(&self) -> String {
        format!(
            "as crew isolated, plus a network namespace of its own (loopback, a veth on \
             crew's bridge, NAT), taken from the pool crew prepares ahead; {}",
            self.runtime.cgroup_description()
        )
    }

    fn once(&mut self) -> Result<Duration, String> {
        self.tokio
            .block_on(spawn_and_wait(&self.runtime, &self.spec))
    }

    /// The pool makes the namespace that replaces the one taken.
    fn settle(&mut self) {
        self.network.wait_until_full(Duration::from_secs(10));
    }

    fn time_steps(&mut self) -> Option<Result<StartTiming, String>> {
        Some(
            self.runtime
                .time_start(&self.spec)
                .map_err(|e| e.to_string()),
        )
    }
}

/// Start to exit through crew's `Runtime` trait, as the engine uses it: the output
/// is drained too, since a server always reads it.
async fn spawn_and_wait<R: Runtime>(runtime: &R, spec: &DynoSpec) -> Result<Duration, String> {
    let start = Instant::now();
    let mut process = runtime.spawn(spec).map_err(|e| e.to_string())?;
    if let Some(mut output) = process.take_output() {
        let mut sink = Vec::new();
        output
            .read_to_end(&mut sink)
            .await
            .map_err(|e| format!("reading the output: {e}"))?;
        if std::env::var_os("DYNO_START_COMMAND").is_some() {
            eprint!("{}", String::from_utf8_lossy(&sink));
        }
    }
    let status = process.wait().await.map_err(|e| e.to_string())?;
    let took = start.elapsed();
    if !status.success() {
        return Err(format!("`true` exited with status {}", status.code()));
    }
    Ok(took)
}

/// bubblewrap. Debian bookworm's 0.8 has no `--overlay-src`, so with `overlay` the
/// overlay is mounted here, in this program's private mount namespace, and bound at
/// `/app`: what a runtime built on bwrap 0.8 would have to do. Where bwrap has the
/// option, it does the overlay itself.
struct Bwrap<'a> {
    slug: &'a Path,
    scratch: &'a Scratch,
    overlay: bool,
    native_overlay: bool,
    version: String,
}

impl<'a> Bwrap<'a> {
    fn new(slug: &'a Path, scratch: &'a Scratch, overlay: bool) -> Result<Self, String> {
        let bin = which("bwrap").ok_or("bwrap is not installed (Debian: bubblewrap)")?;
        let help = Command::new(&bin)
            .arg("--help")
            .output()
            .map_err(|e| format!("bwrap --help: {e}"))?;
        let native_overlay = String::from_utf8_lossy(&help.stdout).contains("--overlay-src");
        if overlay && !native_overlay && !scratch.private {
            return Err(
                "bwrap has no --overlay-src, and the overlay needs a private mount \
                 namespace (run as root with unshare installed)"
                    .into(),
            );
        }
        Ok(Bwrap {
            slug,
            scratch,
            overlay,
            native_overlay,
            version: first_line(&bin, "--version"),
        })
    }

    fn command(&self, app: Option<&Path>) -> Command {
        let mut c = Command::new("bwrap");
        c.args([
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup",
            "--die-with-parent",
            "--hostname",
            "run.1",
            "--uid",
            "65534",
            "--gid",
            "65534",
        ]);
        for dir in STACK {
            match std::fs::read_link(dir) {
                Ok(target) => {
                    c.arg("--symlink").arg(target).arg(dir);
                }
                Err(_) if Path::new(dir).exists() => {
                    c.args(["--ro-bind", dir, dir]);
                }
                Err(_) => {}
            }
        }
        c.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        match (self.overlay, app) {
            (true, Some(merged)) => {
                c.arg("--bind").arg(merged).arg("/app");
            }
            (true, None) => {
                c.arg("--overlay-src")
                    .arg(self.slug)
                    .args(["--tmp-overlay", "/app"]);
            }
            (false, _) => {
                c.arg("--ro-bind").arg(self.slug).arg("/app");
            }
        }
        c.args(["--chdir", "/app", "--clearenv"]);
        for (k, v) in env() {
            c.arg("--setenv").arg(k).arg(v);
        }
        c.args(argv());
        c
    }
}

impl Contender for Bwrap<'_> {
    fn label(&self) -> String {
        let app = match (self.overlay, self.native_overlay) {
            (false, _) => "`/app` a read-only bind of the slug (writes impossible)",
            (true, true) => {
                "`/app` an overlay of the slug (`--overlay-src SLUG --tmp-overlay /app`)"
            }
            (true, false) => {
                "`/app` an overlay of the slug mounted by the bench before each run \
                 (upper on a tmpfs, unmounted after) and `--bind` in, since bwrap 0.8 \
                 has no `--overlay-src`"
            }
        };
        format!(
            "bwrap, user+pid+ipc+uts+cgroup namespaces, read-only stack, fresh /proc, /dev \
             and /tmp, uid {UID}, {app}"
        )
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    fn once(&mut self) -> Result<Duration, String> {
        if !self.overlay || self.native_overlay {
            return time_command(|| self.command(None));
        }
        let start = Instant::now();
        let merged = self.scratch.overlay(self.slug)?;
        let ran = time_command(|| self.command(Some(&merged)));
        let cleaned = self.scratch.drop_overlay(&merged);
        let took = start.elapsed();
        ran?;
        cleaned?;
        Ok(took)
    }
}

/// runc or crun, on one OCI bundle: a read-only rootfs with the stack bound
/// read-only, an overlay of the slug at `/app` whose upper and work dirs are made
/// on a tmpfs before each run and removed after (the runtimes need them on the
/// host), fresh /proc, /dev and /tmp, crew's default limits in a cgroup.
struct Oci<'a> {
    bin: PathBuf,
    root: PathBuf,
    bundle: PathBuf,
    scratch: &'a Scratch,
    version: String,
    next: u64,
}

impl<'a> Oci<'a> {
    fn new(name: &str, slug: &Path, scratch: &'a Scratch) -> Result<Self, String> {
        let bin = which(name).ok_or(format!("{name} is not installed (Debian: {name})"))?;
        if !is_root() {
            return Err(format!(
                "{name} needs root here (rootless mode is not measured)"
            ));
        }
        let bundle = scratch.dir.join(format!("{name}-bundle"));
        let rootfs = bundle.join("rootfs");
        let mkdir =
            |p: &Path| std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()));
        mkdir(&rootfs)?;
        for dir in ["app", "tmp", "proc", "dev"] {
            mkdir(&rootfs.join(dir))?;
        }
        // runc gives a tmpfs the mode of the directory it covers, whatever the
        // mount options say.
        std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .map_err(|e| e.to_string())?;
        let mut mounts = vec![
            mount_json("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount_json(
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount_json("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777"]),
        ];
        for dir in STACK {
            let inside = rootfs.join(dir.trim_start_matches('/'));
            match std::fs::read_link(dir) {
                Ok(target) => std::os::unix::fs::symlink(&target, &inside)
                    .or_else(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => Ok(()),
                        _ => Err(e),
                    })
                    .map_err(|e| format!("{}: {e}", inside.display()))?,
                Err(_) if Path::new(dir).exists() => {
                    mkdir(&inside)?;
                    mounts.push(mount_json(
                        dir,
                        dir,
                        "bind",
                        &["rbind", "ro", "nosuid", "nodev"],
                    ));
                }
                Err(_) => {}
            }
        }
        let upper = scratch.dir.join(format!("{name}-upper"));
        let work = scratch.dir.join(format!("{name}-work"));
        let overlay_options = format!(
            "lowerdir={},upperdir={},workdir={}",
            slug.display(),
            upper.display(),
            work.display()
        );
        mounts.push(mount_json(
            "/app",
            "overlay",
            "overlay",
            &["nosuid", "nodev", &overlay_options],
        ));
        let args: Vec<String> = argv().iter().map(|a| json_string(a)).collect();
        let env: Vec<String> = env()
            .iter()
            .map(|(k, v)| json_string(&format!("{k}={v}")))
            .collect();
        let mut config = String::new();
        let _ = write!(
            config,
            r#"{{
  "ociVersion": "1.0.2",
  "process": {{
    "terminal": false,
    "user": {{"uid": {UID}, "gid": {UID}}},
    "args": [{args}],
    "env": [{env}],
    "cwd": "/app",
    "noNewPrivileges": true
  }},
  "root": {{"path": "rootfs", "readonly": true}},
  "hostname": "run.1",
  "mounts": [
    {mounts}
  ],
  "linux": {{
    "resources": {{
      "memory": {{"limit": {MEMORY_BYTES}}},
      "pids": {{"limit": {PIDS}}}
    }},
    "namespaces": [
      {{"type": "pid"}}, {{"type": "mount"}}, {{"type": "ipc"}},
      {{"type": "uts"}}, {{"type": "cgroup"}}
    ]
  }}
}}
"#,
            args = args.join(", "),
            env = env.join(", "),
            mounts = mounts.join(",\n    "),
        );
        std::fs::write(bundle.join("config.json"), config).map_err(|e| e.to_string())?;
        let root = scratch.dir.join(format!("{name}-state"));
        mkdir(&root)?;
        Ok(Oci {
            version: first_line(&bin, "--version"),
            bin,
            root,
            bundle,
            scratch,
            next: 0,
        })
    }

    fn upper_work(&self) -> [PathBuf; 2] {
        let name = self
            .bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        [
            self.scratch.dir.join(format!("{name}-upper")),
            self.scratch.dir.join(format!("{name}-work")),
        ]
    }
}

impl Contender for Oci<'_> {
    fn label(&self) -> String {
        let name = self
            .bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        format!(
            "`{} run` of an OCI bundle: pid+mount+ipc+uts+cgroup namespaces, read-only \
             rootfs with the stack bound read-only, overlay of the slug at `/app` (upper and \
             work dirs made on a tmpfs before the run, removed after: timed), fresh /proc, \
             /dev and /tmp, memory and pids limits as crew's standard-1x, uid {UID}",
            name.unwrap_or_default()
        )
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    fn once(&mut self) -> Result<Duration, String> {
        self.next += 1;
        let id = format!("crew-bench-{}-{}", std::process::id(), self.next);
        let start = Instant::now();
        let dirs = self.upper_work();
        for d in &dirs {
            std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        // The upper layer's root is `/app`'s: the app's, as crew makes it.
        std::os::unix::fs::chown(&dirs[0], Some(UID), Some(UID)).map_err(|e| e.to_string())?;
        let ran = time_command(|| {
            let mut c = Command::new(&self.bin);
            c.arg("--root")
                .arg(&self.root)
                .args(["run", "--bundle"])
                .arg(&self.bundle)
                .arg(&id);
            c
        });
        for d in &dirs {
            std::fs::remove_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let took = start.elapsed();
        ran?;
        Ok(took)
    }
}

// ---------------------------------------------------------------- helpers

/// A directory for bundles and overlay layers; a tmpfs when this program has its
/// own mount namespace (so it vanishes with it), else a plain temp dir.
struct Scratch {
    dir: PathBuf,
    private: bool,
}

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!("crew-dyno-start-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let private = std::env::var_os(PRIVATE_ENV).is_some();
        if private {
            rustix::mount::mount(
                "tmpfs",
                &dir,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                Some(c"mode=755"),
            )
            .map_err(|e| format!("tmpfs on {}: {e}", dir.display()))?;
        }
        Ok(Scratch { dir, private })
    }

    /// Mounts a fresh overlay of `slug` and returns where.
    fn overlay(&self, slug: &Path) -> Result<PathBuf, String> {
        let [upper, work, merged] = ["upper", "work", "merged"].map(|d| self.dir.join(d));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        // The upper layer's root is `/app`'s: left to root, whom bwrap's user
        // namespace maps to the app's uid, so the app may write there.
        let options = std::ffi::CString::new(format!(
            "lowerdir={},upperdir={},workdir={}",
            slug.display(),
            upper.display(),
            work.display()
        ))
        .map_err(|_| "a path holds a NUL byte".to_string())?;
        rustix::mount::mount(
            "overlay",
            &merged,
            "overlay",
            MountFlags::NOSUID | MountFlags::NODEV,
            options.as_c_str(),
        )
        .map_err(|e| format!("overlay on {}: {e}", merged.display()))?;
        Ok(merged)
    }

    fn drop_overlay(&self, merged: &Path) -> Result<(), String> {
        rustix::mount::unmount(merged, UnmountFlags::empty())
            .map_err(|e| format!("umount {}: {e}", merged.display()))?;
        for d in ["upper", "work", "merged"] {
            let d = self.dir.join(d);
            std::fs::remove_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.private {
            let _ = rustix::mount::unmount(&self.dir, UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mount_json(destination: &str, source: &str, kind: &str, options: &[&str]) -> String {
    let options: Vec<String> = options.iter().map(|o| json_string(o)).collect();
    format!(
        r#"{{"destination": {}, "type": {}, "source": {}, "options": [{}]}}"#,
        json_string(destination),
        json_string(kind),
        json_string(source),
        options.join(", ")
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn first_line(bin: &Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
