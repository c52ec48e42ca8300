//! After hundreds of isolated dynos come and go, the host is as it was: no
//! processes, mounts, cgroups or directories left. Alone in its own test binary,
//! so no other test's dynos come and go during the count.

mod common;
mod platform;

use std::collections::HashMap;
use std::path::PathBuf;

use common::poll_until;
use platform::{DEPLOY, Server, TestServer, repo};

/// What a server's dynos could leave behind on the host.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    processes: usize,
    mounts: usize,
    cgroups: usize,
    slug_copies: usize,
    probe_dirs: usize,
}

fn footprint(server: &Server) -> Footprint {
    let pid = server.pid().expect("the server runs");
    Footprint {
        processes: descendants(pid),
        mounts: std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| m.lines().count())
            .unwrap_or(0),
        cgroups: dyno_cgroups(pid),
        slug_copies: count_entries(server.data().join("dynos"), |_| true),
        probe_dirs: count_entries(std::env::temp_dir(), |n| n.starts_with("crew-probe-")),
    }
}

fn count_entries(dir: PathBuf, wanted: impl Fn(&str) -> bool) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| wanted(&e.file_name().to_string_lossy()))
            .count()
    })
}

/// Every process below `root`.
fn descendants(root: i32) -> usize {
    let mut parent_of = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parent_of.insert(pid, ppid);
        }
    }
    parent_of
        .keys()
        .filter(|&&pid| {
            let mut at = pid;
            for _ in 0..64 {
                match parent_of.get(&at) {
                    Some(&p) if p == root => return true,
                    Some(&p) if p > 1 => at = p,
                    _ => return false,
                }
            }
            false
        })
        .count()
}

/// The server's dyno cgroups (named `PID-N-DYNO`) in every hierarchy.
fn dyno_cgroups(server: i32) -> usize {
    let prefix = format!("{server}-");
    [
        "/sys/fs/cgroup/crew",
        "/sys/fs/cgroup/memory/crew",
        "/sys/fs/cgroup/pids/crew",
    ]
    .into_iter()
    .map(|dir| count_entries(PathBuf::from(dir), |n| n.starts_with(&prefix)))
    .sum()
}

#[test]
fn hundreds_of_dynos_leave_nothing_behind() {
    let Some(server) = TestServer::new().isolated_dynos().start() else {
        return;
    };
    let app = repo(&server, "worker: sleep 1000\n");
    let dir = app.path();
    server.deploy(dir, "leaky");
    let before = footprint(&server);

    for n in 0..200 {
        let out = server.ok(dir, &["run", "-a", "leaky", &format!("echo one-off {n}")]);
        assert_eq!(out.trim(), format!("one-off {n}"));
    }
    for _ in 0..50 {
        server.ok(dir, &["scale", "-a", "leaky", "worker=3"]);
        server.ok(dir, &["scale", "-a", "leaky", "worker=0"]);
    }
    let mut after = footprint(&server);
    let settled = poll_until(DEPLOY, || {
        after = footprint(&server);
        after == before
    });
    assert!(settled, "before: {before:?}\nafter:  {after:?}");
}
