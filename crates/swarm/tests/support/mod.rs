//! Test support: a real dockerd of the test's own, and (from crew-testkit,
//! shared with crew-kubernetes' tests) a busybox root filesystem for images,
//! a test slug, a log collector and deadlines.
//!
//! The daemon gets its own data root, exec root, pidfile and socket under a
//! temp dir, so it shares nothing with any other docker on the machine. Its
//! guard cleans up even when a test panics: it leaves the swarm, stops the
//! daemon by pid (SIGTERM, then SIGKILL), kills any container, shim or
//! containerd it left (and the containers' cgroups), unmounts what it
//! mounted under its roots and deletes the bridges it made.

#![allow(dead_code)]

// Each including test uses its own part of these.
#[allow(unused_imports)]
pub use crew_testkit::placement::*;
use crew_testkit::procs::is_alive;
#[allow(unused_imports)]
pub use crew_testkit::wait::wait_for;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crew_engine::WebBackend;
use crew_swarm::Docker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why the Swarm tests cannot run here, if they cannot.
pub fn swarm_unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root: dockerd needs root".into());
    }
    if which("dockerd").is_none() {
        return Some("dockerd is not installed (apt-get install docker.io)".into());
    }
    if busybox().is_none() {
        return Some("busybox is not installed (apt-get install busybox-static)".into());
    }
    None
}

pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// A dockerd of the test's own.
pub struct Dockerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Child,
    /// Bridges that did not exist before this daemon, deleted at the end.
    made_links: Vec<&'static str>,
    pub docker: Arc<Docker>,
}

impl Dockerd {
    /// Starts dockerd, in the network namespace `netns` if given (entered
    /// with `nsenter --net`, which keeps the host's /sys and its cgroup
    /// mounts; `ip netns exec` would remount /sys and hide them).
    pub fn start(netns: Option<&str>) -> Result<Dockerd, String> {
        Dockerd::start_with(netns, &[])
    }

    /// [`Dockerd::start`] with more daemon flags.
    pub fn start_with(netns: Option<&str>, extra: &[&str]) -> Result<Dockerd, String> {
        let dir = tempfile::Builder::new()
            .prefix("crew-dockerd-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("temp dir: {e}"))?;
        let root = dir.path();
        let socket = root.join("docker.sock");
        let made_links: Vec<&'static str> = if netns.is_some() {
            Vec::new()
        } else {
            ["docker0", "docker_gwbridge"]
                .into_iter()
                .filter(|l| !link_exists(l))
                .collect()
        };
        let log = std::fs::File::create(root.join("dockerd.log")).map_err(|e| e.to_string())?;
        let dockerd = which("dockerd").ok_or("no dockerd")?;
        let mut args: Vec<String> = vec![
            format!("--data-root={}", root.join("data").display()),
            format!("--exec-root={}", root.join("exec").display()),
            format!("--pidfile={}", root.join("docker.pid").display()),
            format!("--host=unix://{}", socket.display()),
            // No metrics, no experimental, nothing on TCP.
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/var/run/netns/{ns}")).arg(&dockerd);
                c
            }
            None => Command::new(&dockerd),
        };
        let child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting dockerd: {e}"))?;
        let docker = Arc::new(Docker::new(&socket));
        let mut daemon = Dockerd {
            dir,
            socket,
            child,
            made_links,
            docker,
        };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if daemon.socket.exists() && block_on(daemon.docker.version()).is_ok() {
                return Ok(daemon);
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!(
                    "dockerd exited with {status}: {}",
                    daemon.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("dockerd did not answer: {}", daemon.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Kills the daemon at once (a node dying), its containerd, shims and
    /// containers with it, leaving the rest of the cleanup to the drop.
    pub fn kill(&mut self) {
        // Read before anything dies: once a shim is gone its containers are
        // reparented and no longer tell whose they are.
        let leftovers = self.leftovers();
        let _ = self.child.kill();
        let _ = self.child.wait();
        leftovers.kill();
    }

    /// What this daemon started that can outlive it: containerd and the
    /// container shims (their command lines name its exec root), the
    /// containers' first processes (each a shim's child) and the cgroups
    /// runc made for them.
    fn leftovers(&self) -> Leftovers {
        let marker = self.dir.path().to_string_lossy().to_string();
        let processes = processes();
        let own: Vec<i32> = processes
            .iter()
            .filter(|p| p.cmdline.contains(&marker))
            .map(|p| p.pid)
            .collect();
        let shims: Vec<&Process> = processes
            .iter()
            .filter(|p| own.contains(&p.pid) && p.cmdline.contains("containerd-shim"))
            .collect();
        let containers: Vec<i32> = processes
            .iter()
            .filter(|p| shims.iter().any(|s| s.pid == p.ppid))
            .map(|p| p.pid)
            .collect();
        // A container's cgroup is named after its id, which the shim's
        // command line carries (`-id ID`); the path comes from the
        // container's process, so both cgroup layouts are covered.
        let mut cgroups = Vec::new();
        for pid in &containers {
            let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            for line in text.lines() {
                let Some(path) = line.splitn(3, ':').nth(2) else {
                    continue;
                };
                let named_by_a_shim = shims.iter().any(|s| {
                    s.cmdline
                        .split('\0')
                        .skip_while(|a| *a != "-id")
                        .nth(1)
                        .is_some_and(|id| !id.is_empty() && path.ends_with(id))
                });
                if named_by_a_shim && !cgroups.iter().any(|c| c == path) {
                    cgroups.push(path.to_string());
                }
            }
        }
        Leftovers {
            containers,
            own,
            cgroups,
        }
    }

    fn unmount_all(&self) {
        let root = self.dir.path().to_string_lossy().to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|p| p.starts_with(&root))
            .collect();
        // Deepest first.
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = rustix::mount::unmount(p.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = block_on(self.docker.swarm_leave(true));
            if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.leftovers().kill();
        self.unmount_all();
        for link in &self.made_links {
            if link_exists(link) {
                let _ = Command::new("ip").args(["link", "del", link]).status();
            }
        }
    }
}

/// A process as `/proc` shows it: the command line keeps its NULs.
struct Process {
    pid: i32,
    ppid: i32,
    cmdline: String,
}

fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let ppid = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .parse()
                .ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            Some(Process {
                pid,
                ppid,
                cmdline: String::from_utf8_lossy(&cmdline).into_owned(),
            })
        })
        .collect()
}

struct Leftovers {
    containers: Vec<i32>,
    own: Vec<i32>,
    cgroups: Vec<String>,
}

impl Leftovers {
    /// SIGKILLs the containers first, while their shims still reap them,
    /// then the shims and containerd; then removes the emptied cgroups,
    /// which nobody else would (runc removes them when told by a shim).
    fn kill(&self) {
        let signal = |pids: &[i32]| {
            for pid in pids {
                if let Some(pid) = rustix::process::Pid::from_raw(*pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        };
        signal(&self.containers);
        signal(&self.own);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .containers
            .iter()
            .chain(&self.own)
            .any(|p| is_alive(*p))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.cgroups.is_empty() {
            return;
        }
        // cgroup v1 mounts a hierarchy per controller under /sys/fs/cgroup,
        // v2 one at the top (or at `unified` beside v1's).
        let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            roots.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        for cgroup in &self.cgroups {
            for root in &roots {
                let dir = root.join(cgroup.trim_start_matches('/'));
                // A cgroup whose last process just died can be busy for a
                // moment.
                for _ in 0..20 {
                    if !dir.is_dir() || std::fs::remove_dir(&dir).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// Runs a future to completion from synchronous code, also from inside a
/// runtime (on a thread of its own).
pub fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(future)
        })
        .join()
        .expect("the runtime thread")
    })
}

/// A TCP port on loopback that nothing listens on right now.
pub fn bytes(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

/// `GET path` from `addr`, over a connection of the test's own: the body of
/// a 200, or why not.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    get_over(tokio::net::TcpStream::connect(addr), addr, path).await
}

/// `GET path` from a web backend, as the router reaches it: from the
/// namespace it names (the app's network) if it names one.
pub async fn backend_get(backend: &WebBackend, path: &str) -> Result<String, String> {
    match &backend.namespace {
        Some(namespace) => get_over(namespace.connect(backend.addr), backend.addr, path).await,
        None => http_get(backend.addr, path).await,
    }
}

async fn get_over(
    connecting: impl std::future::Future<Output = std::io::Result<tokio::net::TcpStream>>,
    addr: SocketAddr,
    path: &str,
) -> Result<String, String> {
    let attempt = async {
        let mut stream = connecting.await.map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not HTTP: {answer:?}"))?;
        match head.split_whitespace().nth(1) {
            Some("200") => Ok(body.to_string()),
            _ => Err(format!("answered {head:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
}
