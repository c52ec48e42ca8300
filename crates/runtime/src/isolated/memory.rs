//! Heroku-style memory errors from a dyno's cgroup counters.
//!
//! - `R14 (Memory quota exceeded)`: the dyno reached its quota with memory it
//!   cannot give back (anonymous, shared and swapped memory at 90 % of the quota
//!   or more; page cache that the kernel simply reclaims does not count). Logged
//!   at most every 20 seconds, as Heroku repeats it while the dyno stays over.
//! - `R15 (Memory quota vastly exceeded)`: the kernel's OOM killer had to kill
//!   inside the dyno. The whole dyno is then killed, so it exits non-zero and the
//!   engine restarts it on its backoff.

use std::time::{Duration, Instant};

/// The counters of a dyno's memory cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemoryEvents {
    /// How often usage hit the limit (v2 `memory.events` `max`, v1 `failcnt`).
    pub limit_hits: u64,
    /// OOM kills inside the group (v2 `oom_kill`, v1 `memory.oom_control`).
    pub oom_kills: u64,
    /// Memory the kernel cannot reclaim without swap: anonymous + shmem (tmpfs,
    /// so writes to `/app` and `/tmp` too) + swap.
    pub usage: u64,
    /// The highest usage seen, for the `mem=` figure.
    pub peak: u64,
}

/// What a look at the counters calls for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Lines for the dyno's log, without newlines.
    pub lines: Vec<String>,
    /// Kill the dyno now.
    pub kill: bool,
}

const R14_REPEAT: Duration = Duration::from_secs(20);

pub(crate) struct MemoryWatch {
    quota: u64,
    seen: MemoryEvents,
    last_r14: Option<Instant>,
    r15: bool,
}

impl MemoryWatch {
    pub(crate) fn new(quota: u64) -> MemoryWatch {
        MemoryWatch {
            quota,
            seen: MemoryEvents::default(),
            last_r14: None,
            r15: false,
        }
    }

    fn running_line(&self, peak: u64) -> String {
        let mib = peak / (1024 * 1024);
        let percent = if self.quota == 0 {
            0.0
        } else {
            peak as f64 * 100.0 / self.quota as f64
        };
        format!("Process running mem={mib}M({percent:.1}%)")
    }

    /// Whether an R15 was reported (and the dyno killed for it).
    pub(crate) fn killed(&self) -> bool {
        self.r15
    }

    pub(crate) fn observe(&mut self, now: MemoryEvents, at: Instant) -> Verdict {
        let mut verdict = Verdict::default();
        let new_hits = now.limit_hits > self.seen.limit_hits;
        let new_kills = now.oom_kills > self.seen.oom_kills;
        self.seen = now;
        let peak = now.peak.max(now.usage);
        let over = now.usage.saturating_mul(10) >= self.quota.saturating_mul(9);
        let r14_due = self
            .last_r14
            .is_none_or(|last| at.duration_since(last) >= R14_REPEAT);
        if ((new_hits && over) || (new_kills && self.last_r14.is_none())) && r14_due {
            verdict.lines.push(self.running_line(peak));
            verdict
                .lines
                .push("Error R14 (Memory quota exceeded)".into());
            self.last_r14 = Some(at);
        }
        if new_kills && !self.r15 {
            self.r15 = true;
            if verdict.lines.is_empty() {
                verdict.lines.push(self.running_line(peak));
            }
            verdict
                .lines
                .push("Error R15 (Memory quota vastly exceeded)".into());
            verdict.lines.push("Stopping process with SIGKILL".into());
            verdict.kill = true;
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn ev(limit_hits: u64, oom_kills: u64, usage: u64) -> MemoryEvents {
        MemoryEvents {
            limit_hits,
            oom_kills,
            usage,
            peak: usage,
        }
    }

    #[test]
    fn quiet_while_under_the_quota() {
        let mut w = MemoryWatch::new(512 * MIB);
        let t = Instant::now();
        assert_eq!(w.observe(ev(0, 0, 100 * MIB), t), Verdict::default());
        // Limit hits from page cache alone are not R14.
        assert_eq!(w.observe(ev(5, 0, 100 * MIB), t), Verdict::default());
    }

    #[test]
    fn r14_when_over_then_again_after_20_seconds() {
        let mut w = MemoryWatch::new(512 * MIB);
        let t = Instant::now();
        let v = w.observe(ev(1, 0, 500 * MIB), t);
        assert_eq!(
            v.lines,
            [
                "Process running mem=500M(97.7%)",
                "Error R14 (Memory quota exceeded)"
            ]
        );
        assert!(!v.kill);
        assert!(
            w.observe(ev(2, 0, 500 * MIB), t + Duration::from_secs(5))
                .lines
                .is_empty()
        );
        let again = w.observe(ev(3, 0, 500 * MIB), t + Duration::from_secs(21));
        assert_eq!(again.lines.len(), 2);
    }

    #[test]
    fn an_oom_kill_is_r14_then_r15_and_a_kill() {
        let mut w = MemoryWatch::new(64 * MIB);
        let t = Instant::now();
        let v = w.observe(
            MemoryEvents {
                limit_hits: 9,
                oom_kills: 1,
                usage: 0,
                peak: 64 * MIB,
            },
            t,
        );
        assert_eq!(
            v.lines,
            [
                "Process running mem=64M(100.0%)",
                "Error R14 (Memory quota exceeded)",
                "Error R15 (Memory quota vastly exceeded)",
                "Stopping process with SIGKILL"
            ]
        );
        assert!(v.kill);
        // Once only.
        assert_eq!(w.observe(ev(10, 2, 0), t), Verdict::default());
    }
}
