//! Processes as `/proc` shows them: whether one lives, its group, its
//! command line, and asserting that a group or a process is gone in time.
//! A zombie counts as gone: nothing in a test reaps orphans, so a dead
//! process whose parent died would stay a zombie forever.

use std::time::Duration;

use crate::wait::poll_until;

/// A process's state letter and process group, from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether `pid` is a live process. Zombies count as gone: nothing here reaps
/// orphans, so a dead process whose parent died stays a zombie forever.
pub fn is_alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// A process's command line, for failure messages.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// The live members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            matches!(proc_stat(*pid), Some((state, pgrp))
                if pgrp == pgid && state != 'Z' && state != 'X')
        })
        .collect()
}

/// Waits until process group `pgid` has at least `n` live members, so a test
/// knows the grandchildren it means to check on really exist.
pub fn wait_group_size(pgid: i32, n: usize, timeout: Duration) {
    if !poll_until(timeout, || group_members(pgid).len() >= n) {
        panic!(
            "process group {pgid} never reached {n} live members (has {:?})",
            describe(&group_members(pgid))
        );
    }
}

/// Asserts that process group `pgid` has no live member within `timeout`.
pub fn assert_group_gone(pgid: i32, timeout: Duration, context: &str) {
    if !poll_until(timeout, || group_members(pgid).is_empty()) {
        panic!(
            "{context}: process group {pgid} still has live processes after {timeout:?}: {:?}",
            describe(&group_members(pgid))
        );
    }
}

/// Asserts that `pid` is gone within `timeout`.
pub fn assert_gone(pid: i32, timeout: Duration, context: &str) {
    if !poll_until(timeout, || !is_alive(pid)) {
        panic!(
            "{context}: process {pid} ({}) is still alive after {timeout:?}",
            cmdline(pid)
        );
    }
}

pub fn describe(pids: &[i32]) -> Vec<String> {
    pids.iter()
        .map(|p| format!("{p} ({})", cmdline(*p)))
        .collect()
}

/// Those of `pids` that are live processes.
pub fn pids_alive(pids: &[i32]) -> Vec<i32> {
    pids.iter().copied().filter(|pid| is_alive(*pid)).collect()
}
