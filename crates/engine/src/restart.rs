//! When a crashed dyno comes back.

use std::time::Duration;

/// The longest wait between restarts.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// How long a dyno must stay up for its next crash to count as a first one again.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The crash-restart backoff of one dyno: the first crash restarts at once, later
/// ones wait 1 s, 2 s, 4 s … up to [`MAX_DELAY`]. A restart, a new release, a scale
/// to zero and [`STABLE_AFTER`] of uptime all start it over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    crashes: u32,
}

impl Backoff {
    /// Records a crash and returns how long to wait before the restart.
    pub fn crash(&mut self, uptime: Duration) -> Duration {
        if uptime >= STABLE_AFTER {
            self.crashes = 0;
        }
        self.crashes = self.crashes.saturating_add(1);
        match self.crashes {
            1 => Duration::ZERO,
            n => {
                let doublings = (n - 2).min(16);
                Duration::from_secs(1u64 << doublings).min(MAX_DELAY)
            }
        }
    }

    pub fn reset(&mut self) {
        self.crashes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_after_an_immediate_first_restart() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..12).map(|_| b.crash(Duration::ZERO).as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn a_minute_up_starts_over() {
        let mut b = Backoff::default();
        b.crash(Duration::ZERO);
        b.crash(Duration::ZERO);
        assert_eq!(b.crash(Duration::from_secs(59)), Duration::from_secs(2));
        assert_eq!(b.crash(Duration::from_secs(60)), Duration::ZERO);
        assert_eq!(b.crash(Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::default();
        b.crash(Duration::ZERO);
        b.crash(Duration::ZERO);
        b.reset();
        assert_eq!(b.crash(Duration::ZERO), Duration::ZERO);
    }
}
