//! How a server dyno's output enters its app's log without ever making the
//! dyno or the server wait: at a bounded rate, the excess dropped and counted.
//!
//! A dyno that writes faster than its log takes loses its own lines, never the
//! server's memory, and the log says so the way logplex does:
//! `Error L10 (output buffer overflow): 500 messages dropped since
//! 2013-04-17T19:04:46+00:00.` Locally (`crew start`) nothing is dropped: a slow
//! terminal blocks the dynos, as foreman's does.
//!
//! Invariants:
//! - A block is admitted whole or dropped whole, so no line is torn by a drop.
//! - Every dropped message is counted once and reported once, in order, before
//!   the next admitted block.

use std::time::{Duration, Instant, SystemTime};

use crate::framer::HEROKU_MAX_LINE;

/// How fast and how long a line a server dyno may log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// A longer line is cut into pieces of this length.
    pub max_line: usize,
    /// Bytes per second a dyno's output may enter its log at, sustained.
    pub rate: u64,
    /// Bytes a dyno may write at once above the rate, after a quiet time.
    pub burst: u64,
}

impl OutputLimits {
    /// A server dyno: Heroku's 10,000-byte lines; 1 MiB a second (some 10,000
    /// lines of 100 bytes, far past what a log reader reads) in bursts of up to
    /// 1 MiB, a quarter of the app's log, so one burst cannot wipe the log.
    pub const SERVER: OutputLimits = OutputLimits {
        max_line: HEROKU_MAX_LINE,
        rate: 1024 * 1024,
        burst: 1024 * 1024,
    };
}

/// The L10 line at most this often while a flood goes on.
const NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// Counts a dyno's output against its [`OutputLimits`]: a token bucket of
/// bytes, and the messages dropped since the last L10 line.
#[derive(Debug)]
pub struct OutputGate {
    limits: OutputLimits,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
    since: Option<SystemTime>,
    noticed: Option<Instant>,
}

impl OutputGate {
    /// A gate with a full bucket.
    pub fn new(limits: OutputLimits, now: Instant) -> OutputGate {
        OutputGate {
            limits,
            tokens: limits.burst as f64,
            refilled: now,
            dropped: 0,
            since: None,
            noticed: None,
        }
    }

    /// Whether `block` (lines as a framer releases them) may enter the log now.
    /// If not, its messages are counted as dropped.
    pub fn admit(&mut self, block: &[u8], now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens =
            (self.tokens + elapsed * self.limits.rate as f64).min(self.limits.burst as f64);
        let cost = block.len() as f64;
        if cost <= self.tokens {
            self.tokens -= cost;
            true
        } else {
            self.count_dropped(block);
            false
        }
    }

    /// Counts a block that was admitted but could not be queued for the log.
    pub fn count_dropped(&mut self, block: &[u8]) {
        self.since.get_or_insert_with(SystemTime::now);
        self.dropped += messages_in(block, self.limits.max_line);
    }

    /// Messages dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The L10 line owed, if messages were dropped: before the next admitted
    /// block, at most once a [`NOTICE_INTERVAL`] during a flood, or whenever
    /// `now_or_never` (the end of the dyno's output). Call
    /// [`OutputGate::notice_sent`] once it is in the log.
    pub fn notice(&self, now: Instant, now_or_never: bool) -> Option<String> {
        let since = self.since?;
        let due = now_or_never
            || self
                .noticed
                .is_none_or(|at| now.saturating_duration_since(at) >= NOTICE_INTERVAL);
        due.then(|| overflow_line(self.dropped, since))
    }

    /// The notice from [`OutputGate::notice`] reached the log: counting starts
    /// again.
    pub fn notice_sent(&mut self, now: Instant) {
        self.dropped = 0;
        self.since = None;
        self.noticed = Some(now);
    }
}

/// logplex's words for lines lost to an overflow.
pub fn overflow_line(dropped: u64, since: SystemTime) -> String {
    let stamp = chrono::DateTime::<chrono::Utc>::from(since).format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
    format!("Error L10 (output buffer overflow): {dropped} messages dropped since {stamp}.")
}

/// How many log messages `block` makes: one per line, and one per `max_line`
/// piece of a longer line, as the log would have kept them.
pub fn messages_in(block: &[u8], max_line: usize) -> u64 {
    let max_line = max_line.max(1);
    let pieces = |len: usize| len.div_ceil(max_line).max(1) as u64;
    let mut count = 0;
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', block) {
        count += pieces(end - start);
        start = end + 1;
    }
    if start < block.len() {
        count += pieces(block.len() - start);
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: OutputLimits = OutputLimits {
        max_line: 10,
        rate: 100,
        burst: 100,
    };

    #[test]
    fn a_flood_past_the_burst_is_dropped_and_counted() {
        let start = Instant::now();
        let mut gate = OutputGate::new(SMALL, start);
        let line = [b'x'; 49];
        let mut block = line.to_vec();
        block.push(b'\n');
        assert!(gate.admit(&block, start));
        assert!(gate.admit(&block, start));
        assert!(!gate.admit(&block, start), "the burst is spent");
        assert_eq!(gate.dropped(), 5, "a 49-byte line is five 10-byte messages");
        let notice = gate.notice(start, false).expect("an L10 line");
        assert!(
            notice.starts_with("Error L10 (output buffer overflow): 5 messages dropped since "),
            "{notice}"
        );
        assert!(notice.ends_with('.'), "{notice}");
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let start = Instant::now();
        let mut gate = OutputGate::new(SMALL, start);
        assert!(gate.admit(&[b'x'; 100], start));
        assert!(!gate.admit(&[b'x'; 50], start + Duration::from_millis(100)));
        assert!(gate.admit(&[b'x'; 50], start + Duration::from_millis(600)));
    }

    #[test]
    fn the_notice_comes_at_most_once_a_second_and_always_at_the_end() {
        let start = Instant::now();
        let mut gate = OutputGate::new(SMALL, start);
        assert_eq!(
            gate.notice(start, true),
            None,
            "nothing dropped, nothing to say"
        );
        gate.count_dropped(b"a\nb\n");
        assert!(gate.notice(start, false).is_some());
        gate.notice_sent(start);
        gate.count_dropped(b"c\n");
        assert_eq!(gate.notice(start + Duration::from_millis(500), false), None);
        assert!(
            gate.notice(start + Duration::from_millis(500), true)
                .is_some()
        );
        assert!(gate.notice(start + Duration::from_secs(1), false).is_some());
    }

    #[test]
    fn messages_are_counted_as_the_log_would_keep_them() {
        assert_eq!(messages_in(b"", 10), 0);
        assert_eq!(messages_in(b"\n", 10), 1);
        assert_eq!(messages_in(b"a\nbb\n", 10), 2);
        assert_eq!(messages_in(&[b'x'; 25], 10), 3);
        assert_eq!(messages_in(b"0123456789\n", 10), 1);
    }
}
