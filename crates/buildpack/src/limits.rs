//! The limits every build runs under, and the words its sizes are told in.
//!
//! Apart because the error messages, the build steps and the slug packer all
//! quote them: kept below all of those, this module is imported by each and
//! imports none of them.

use std::time::{Duration, Instant};

/// Heroku's hard limit on a compressed slug; a larger one fails the build.
pub const MAX_SLUG_SIZE: u64 = 500 * 1024 * 1024;

/// A size the way Heroku prints slug sizes: `512.0K`, `4.2M`, `1.1G`, one
/// decimal, powers of 1024.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["K", "M", "G"];
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Compare the value as it will be printed, so that 1048575 bytes reads
    // `1.0M` rather than `1024.0K`.
    while (value * 10.0).round() / 10.0 >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// `now + timeout`, saturating: a timeout too large for the clock means "never"
/// in practice, and must not panic.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_heroku() {
        let cases = [
            (0, "0.0K"),
            (300, "0.3K"),
            (4096, "4.0K"),
            (1_048_575, "1.0M"),
            (4_404_019, "4.2M"),
            (500 * 1024 * 1024, "500.0M"),
            (1_181_116_006, "1.1G"),
        ];
        for (bytes, text) in cases {
            assert_eq!(human_size(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn huge_timeouts_do_not_panic() {
        let _ = deadline_after(Duration::MAX);
    }
}
