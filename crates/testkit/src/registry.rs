//! A real registry of the test's own: Debian's `docker-registry` (the CNCF
//! distribution registry) with filesystem storage in a temp dir, on a free
//! loopback port, killed when dropped (a failing test included). Also a
//! client for reading it back that shares nothing with crew's: plain
//! HTTP/1.0 over a `TcpStream`, so the response is never chunked and ends
//! when the connection does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = "/usr/bin/docker-registry";

/// A running registry.
pub struct TestRegistry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl TestRegistry {
    /// Starts one, or says why the test is skipped (`Err` is for a registry
    /// that is there but would not start, which fails the test).
    pub fn start() -> Result<Result<TestRegistry, String>, String> {
        TestRegistry::start_with("")
    }

    /// [`TestRegistry::start`] with `storage` lines added to its config
    /// (indented two spaces, as they go under `storage:`).
    pub fn start_with(storage: &str) -> Result<Result<TestRegistry, String>, String> {
        TestRegistry::start_on(std::net::Ipv4Addr::LOCALHOST.into(), storage)
    }

    /// [`TestRegistry::start_with`] on a free port of `ip` rather than of
    /// loopback: the address a Swarm worker in another network namespace
    /// can reach.
    pub fn start_on(
        ip: std::net::IpAddr,
        storage: &str,
    ) -> Result<Result<TestRegistry, String>, String> {
        if !Path::new(BINARY).is_file() {
            return Ok(Err(format!(
                "{BINARY} is missing (apt-get install docker-registry)"
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("crew-registry-")
            .tempdir()
            .map_err(|e| format!("a temp dir: {e}"))?;
        // A port the kernel just handed out and took back: another process
        // could take it in between, which the readiness wait would report.
        let addr = TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n{storage}\
                 http:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .map_err(|e| format!("writing the registry's config: {e}"))?;
        let log = std::fs::File::create(dir.path().join("registry.log"))
            .map_err(|e| format!("the registry's log: {e}"))?;
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {BINARY}: {e}"))?;
        let mut registry = TestRegistry { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = get(addr, "/v2/", &[])
                && response.status == 200
            {
                return Ok(Ok(registry));
            }
            if let Ok(Some(status)) = registry.child.try_wait() {
                return Err(format!(
                    "docker-registry exited with {status}: {}",
                    registry.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "docker-registry did not answer GET /v2/ on {addr} within 30s: {}",
                    registry.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`, the registry as image references name it.
    pub fn name(&self) -> String {
        self.addr.to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One response, read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Lowercased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `addr`, with `headers`.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
    request(addr, "GET", path, headers)
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("sending {method} {path}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the answer to {method} {path}: {e}"))?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no response head to {method} {path}"))?;
    let text = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in the answer to {method} {path}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}
