//! The parent's reads of what a dyno's init (or `run:inside`'s supervisor)
//! writes back: the 8-byte setup records (step, errno) and the app's wait
//! status (see `init::child`).

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// Reads the 8-byte records of a dyno's setup pipe until it closes, for at most
/// `timeout`. `Err(TimedOut)` if it does not close in time.
pub(crate) fn read_setup_records(fd: &OwnedFd, timeout: Duration) -> io::Result<Vec<(u32, i32)>> {
    use rustix::event::{PollFd, PollFlags};
    let deadline = std::time::Instant::now() + timeout;
    let mut records = Vec::new();
    let mut buf = [0u8; 64];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        let wait = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&wait)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return Ok(records),
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                while pending.len() >= 8 {
                    let step = u32::from_le_bytes([pending[0], pending[1], pending[2], pending[3]]);
                    let errno =
                        i32::from_le_bytes([pending[4], pending[5], pending[6], pending[7]]);
                    records.push((step, errno));
                    pending.drain(..8);
                }
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The monotonic clock in microseconds, wrapping at 2³²: what the init and
/// the parent both read when a start is timed step by step (see
/// `crate::init::step::TIMING_STEP`).
pub(crate) fn monotonic_micros() -> u32 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let micros = i128::from(now.tv_sec) * 1_000_000 + i128::from(now.tv_nsec) / 1_000;
    // Wrapping on purpose: only differences are used.
    micros as u32
}

/// Reads the init's report of the app's wait status, if it wrote one.
pub(crate) fn read_status(fd: &OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    match rustix::io::read(fd, &mut buf) {
        Ok(4) => Some(i32::from_le_bytes(buf)),
        _ => None,
    }
}
