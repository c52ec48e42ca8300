//! Access lines on their way to the apps' logs.
//!
//! An app's log is fed by a task on the server's main runtime. Handing it each
//! line as its response ends wakes that runtime's threads from a router thread
//! for nearly every request: measured, two context switches per request, more
//! than the proxying itself cost. A router thread instead passes its lines on
//! in batches, at most one batch per [`DELAY`], so under load the app's log
//! task wakes once for many lines, and a quiet router's line goes at once. The
//! lines keep their order, and their times, which are taken when they are
//! passed on, are late by at most [`DELAY`].

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The least time between two batches of a thread.
const DELAY: Duration = Duration::from_millis(2);

pub(crate) type Log = Arc<dyn Fn(String) + Send + Sync>;

/// Lines waiting on a router thread, and what wakes the task that sends them.
struct Pending {
    lines: Vec<(Log, String)>,
    wake: Arc<Notify>,
}

thread_local! {
    /// Only a router thread has one.
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Writes `line` to `log`: on a router thread within [`DELAY`], elsewhere at
/// once.
pub(crate) fn write(log: &Log, line: String) {
    let line = PENDING
        .try_with(|pending| match &mut *pending.borrow_mut() {
            Some(pending) => {
                if pending.lines.is_empty() {
                    pending.wake.notify_one();
                }
                pending.lines.push((log.clone(), line));
                None
            }
            None => Some(line),
        })
        .unwrap_or(None);
    if let Some(line) = line {
        log(line);
    }
}

/// Makes this thread keep its lines, and sends them on; runs for as long as
/// the thread's runtime.
pub(crate) async fn flush_forever() {
    let wake = Arc::new(Notify::new());
    let _ = PENDING.try_with(|pending| {
        *pending.borrow_mut() = Some(Pending {
            lines: Vec::new(),
            wake: wake.clone(),
        });
    });
    let mut batch = Vec::new();
    let mut last: Option<Instant> = None;
    loop {
        wake.notified().await;
        match last.map(|last| last + DELAY) {
            Some(next) if next > Instant::now() => tokio::time::sleep_until(next.into()).await,
            // Lets the requests that are ready now add their lines first.
            _ => tokio::task::yield_now().await,
        }
        let _ = PENDING.try_with(|pending| {
            if let Some(pending) = &mut *pending.borrow_mut() {
                std::mem::swap(&mut pending.lines, &mut batch);
            }
        });
        for (log, line) in batch.drain(..) {
            log(line);
        }
        last = Some(Instant::now());
    }
}
