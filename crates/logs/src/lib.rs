//! Log lines: framing, one event type, and the terminal format.
//!
//! A dyno's output arrives as arbitrary chunks from a pipe. [`LineFramer`] turns
//! them into whole lines without copying: complete lines leave as one shared
//! `Bytes` block, so a burst of thousands of lines costs one allocation and one
//! channel message, not thousands. A partial line (a prompt such as
//! `Password: `) is released after a short idle time, and a runaway line is cut at
//! [`MAX_LINE`] (locally) or [`HEROKU_MAX_LINE`] (on a server) so memory stays
//! bounded.
//!
//! Everything that reaches a log, dyno output and crew's own messages alike, is a
//! [`LogEvent`]. [`terminal`] renders events the way foreman does
//! (`HH:MM:SS web.1  | text`) on one writer thread, so lines from different dynos
//! can never tear or interleave. [`LogRing`] keeps an app's recent lines for
//! `crew logs` and feeds them live to `crew logs -t`, bounded in lines and bytes.
//! On a server, an [`OutputGate`] lets a dyno's output into its log at a bounded
//! rate and counts what it drops (logplex's L10), so a flooding dyno loses its
//! own lines, never the server's memory.

mod framer;
mod overflow;
mod ring;
pub mod terminal;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

pub use framer::{HEROKU_MAX_LINE, LineFramer, MAX_LINE};
pub use overflow::{OutputGate, OutputLimits, messages_in, overflow_line};
pub use ring::{
    CUT_MARK, DEFAULT_BYTES, DEFAULT_CAPACITY, LogFilter, LogRecord, LogRing, Origin, RingLimits,
};

/// One thing to log.
#[derive(Debug, Clone)]
pub enum LogEvent {
    /// One or more lines of a dyno's output, each ending in `\n`, except that
    /// the last may stop short: a line cut at its framer's limit, which goes on
    /// in the next block.
    Output {
        dyno: Arc<str>,
        at: SystemTime,
        lines: Bytes,
    },
    /// crew's own word about one dyno (`started with pid 42`), shown under the
    /// dyno's name as foreman does.
    Status {
        dyno: Arc<str>,
        at: SystemTime,
        text: String,
    },
    /// The platform's lifecycle line about one dyno, Heroku's words
    /// (`State changed from starting to up`). Kept in the app's log for
    /// `crew logs`; the foreground shows foreman's lines instead.
    Platform {
        dyno: Arc<str>,
        at: SystemTime,
        text: String,
    },
    /// crew's own word about the whole run (`sending SIGTERM to all processes`),
    /// shown as `system`.
    System { at: SystemTime, text: String },
}

impl LogEvent {
    pub fn status(dyno: &Arc<str>, text: impl Into<String>) -> LogEvent {
        LogEvent::Status {
            dyno: dyno.clone(),
            at: SystemTime::now(),
            text: text.into(),
        }
    }

    pub fn platform(dyno: &Arc<str>, text: impl Into<String>) -> LogEvent {
        LogEvent::Platform {
            dyno: dyno.clone(),
            at: SystemTime::now(),
            text: text.into(),
        }
    }

    pub fn system(text: impl Into<String>) -> LogEvent {
        LogEvent::System {
            at: SystemTime::now(),
            text: text.into(),
        }
    }
}
