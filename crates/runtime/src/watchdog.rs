//! A tiny process that outlives crew by design.
//!
//! crew starts a copy of its own binary with [`ARG`] and a pipe on its stdin, in its
//! own process group so a terminal's Ctrl-C does not reach it. crew writes `+PGID`
//! when a dyno starts and `-PGID` when its group is gone. If crew dies in any way,
//! even by SIGKILL, the kernel closes the pipe; the watchdog then kills every group
//! still on its list and exits. `PR_SET_PDEATHSIG` alone would only reach the
//! leaders, not their children.

use std::collections::BTreeSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use crate::{Signal, os};

/// The hidden first argument that makes the crew binary act as the watchdog.
pub const ARG: &str = "__crew-watchdog";

pub struct Watchdog {
    pid: u32,
    pipe: Mutex<Option<ChildStdin>>,
    child: Mutex<Child>,
}

impl Watchdog {
    /// Starts `exe ARG` as the watchdog.
    pub fn start(exe: &Path) -> io::Result<Watchdog> {
        let mut child = Command::new(exe)
            .arg(ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = child.stdin.take();
        Ok(Watchdog {
            pid: child.id(),
            pipe: Mutex::new(pipe),
            child: Mutex::new(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn register(&self, pgid: u32) {
        self.send(&format!("+{pgid}\n"));
    }

    pub fn unregister(&self, pgid: u32) {
        self.send(&format!("-{pgid}\n"));
    }

    fn send(&self, line: &str) {
        // A lost watchdog is not worth stopping dynos over: crew still cleans up
        // after itself when it exits normally.
        if let Ok(mut pipe) = self.pipe.lock()
            && let Some(p) = pipe.as_mut()
            && p.write_all(line.as_bytes()).is_err()
        {
            *pipe = None;
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Ok(mut pipe) = self.pipe.lock() {
            pipe.take();
        }
        if let Ok(mut child) = self.child.lock() {
            let _ = child.wait();
        }
    }
}

/// The watchdog's main loop: keep the list until the pipe closes, then kill what is
/// left on it.
pub fn serve(input: impl BufRead) {
    let mut groups = BTreeSet::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        let (sign, number) = line.split_at(line.len().min(1));
        let Ok(pgid) = number.parse::<u32>() else {
            continue;
        };
        match sign {
            "+" => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in groups {
        os::signal_group(pgid, Signal::Kill);
    }
}
