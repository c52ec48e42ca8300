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
use std::fmt::Write as _;
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

/// An access line, begun when the request comes in: `at=info ` and the parts
/// known then. It is finished, and written, once the response is done.
pub(crate) struct AccessLine {
    text: String,
    log: Log,
}

const AT_INFO: &str = "at=info ";

impl AccessLine {
    pub(crate) fn new(
        log: Log,
        method: &str,
        path: &str,
        host: &str,
        request_id: &str,
        fwd: &str,
    ) -> AccessLine {
        // Room for the end of the line too, so it is one allocation.
        let mut text = String::with_capacity(160 + path.len() + host.len() + request_id.len());
        let _ = write!(
            text,
            "{AT_INFO}method={method} path=\"{path}\" host={host} request_id={request_id} fwd=\"{fwd}\""
        );
        AccessLine { text, log }
    }

    pub(crate) fn info(
        mut self,
        dyno: &str,
        connect: Duration,
        started: Instant,
        status: u16,
        bytes: u64,
    ) {
        let _ = write!(
            self.text,
            " dyno={dyno} connect={}ms service={}ms status={status} bytes={bytes}",
            connect.as_millis(),
            started.elapsed().as_millis(),
        );
        write(&self.log, self.text);
    }

    /// Heroku logs a request held for maintenance as information, not as an
    /// error: the app's owner asked for it.
    pub(crate) fn maintenance(self, started: Instant) {
        write(
            &self.log,
            format!(
                "{AT_INFO}code=H80 desc=\"Maintenance mode\" {} dyno= connect=0ms service={}ms status=503 bytes=0",
                &self.text[AT_INFO.len()..],
                started.elapsed().as_millis(),
            ),
        );
    }

    pub(crate) fn error(self, code: &str, desc: &str, dyno: &str, started: Instant, status: u16) {
        write(
            &self.log,
            format!(
                "at=error code={code} desc=\"{desc}\" {} dyno={dyno} connect=0ms service={}ms status={status} bytes=0",
                &self.text[AT_INFO.len()..],
                started.elapsed().as_millis(),
            ),
        );
    }
}
