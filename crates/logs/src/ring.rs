//! The recent log of one app, for `crew logs`, and the live feed for `crew logs -t`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::LogEvent;

/// Lines kept per app unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Who wrote a line: the app itself, or crew about a dyno or the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    App,
    Crew,
}

/// One log line.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub at: SystemTime,
    pub origin: Origin,
    /// `web.1`, or `system`/`router`/`api` for crew's own lines.
    pub source: Arc<str>,
    /// Without the newline.
    pub text: Bytes,
}

impl LogRecord {
    /// Heroku's format: `2026-11-27T10:14:40.123456+00:00 app[web.1]: text`.
    pub fn heroku_line(&self) -> Vec<u8> {
        let stamp = chrono::DateTime::<chrono::Utc>::from(self.at)
            .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
            .to_string();
        let origin = match self.origin {
            Origin::App => "app",
            Origin::Crew => "crew",
        };
        let mut line = Vec::with_capacity(stamp.len() + self.source.len() + self.text.len() + 16);
        line.extend_from_slice(stamp.as_bytes());
        line.push(b' ');
        line.extend_from_slice(origin.as_bytes());
        line.push(b'[');
        line.extend_from_slice(self.source.as_bytes());
        line.extend_from_slice(b"]: ");
        line.extend_from_slice(&self.text);
        line.push(b'\n');
        line
    }

    /// Whether `dyno` (`web` or `web.1`) names this line's dyno.
    pub fn is_from(&self, dyno: &str) -> bool {
        *self.source == *dyno
            || self
                .source
                .split_once('.')
                .is_some_and(|(process_type, _)| process_type == dyno)
    }
}

/// Which lines a reader wants: one dyno or type, and the app's own lines or
/// crew's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub dyno: Option<String>,
    pub origin: Option<Origin>,
}

impl LogFilter {
    pub fn matches(&self, record: &LogRecord) -> bool {
        self.dyno.as_deref().is_none_or(|d| record.is_from(d))
            && self.origin.is_none_or(|o| o == record.origin)
    }
}

/// A bounded ring of recent lines and a feed of new ones.
pub struct LogRing {
    lines: Mutex<VecDeque<LogRecord>>,
    capacity: usize,
    live: broadcast::Sender<LogRecord>,
    /// Set when no more lines will come, so followers can finish cleanly.
    closed: tokio::sync::watch::Sender<bool>,
}

impl LogRing {
    pub fn new(capacity: usize) -> LogRing {
        let (live, _) = broadcast::channel(4096);
        let (closed, _) = tokio::sync::watch::channel(false);
        LogRing {
            closed,
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
            live,
        }
    }

    /// Splits an event into records and keeps them. A block of lines is copied
    /// once out of the read buffer it arrived in, so a short line cannot pin a
    /// whole buffer, and its lines share the copy. Since a block's lines enter
    /// together and leave first-in first-out, at most one block is ever kept
    /// alive by a part of it.
    pub fn push(&self, event: &LogEvent) {
        let mut records = Vec::new();
        match event {
            LogEvent::Output { dyno, at, lines } => {
                let block = Bytes::copy_from_slice(lines);
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', &block) {
                    records.push(LogRecord {
                        at: *at,
                        origin: Origin::App,
                        source: dyno.clone(),
                        text: block.slice(start..end),
                    });
                    start = end + 1;
                }
                if start < block.len() {
                    records.push(LogRecord {
                        at: *at,
                        origin: Origin::App,
                        source: dyno.clone(),
                        text: block.slice(start..),
                    });
                }
            }
            LogEvent::Status { dyno, at, text } | LogEvent::Platform { dyno, at, text } => {
                records.push(LogRecord {
                    at: *at,
                    origin: Origin::Crew,
                    source: dyno.clone(),
                    text: Bytes::copy_from_slice(text.as_bytes()),
                });
            }
            LogEvent::System { at, text } => records.push(LogRecord {
                at: *at,
                origin: Origin::Crew,
                source: Arc::from("system"),
                text: Bytes::copy_from_slice(text.as_bytes()),
            }),
        }
        let followed = self.live.receiver_count() > 0;
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for record in records {
            if followed {
                // A reader leaving between the count and the send is fine.
                let _ = self.live.send(record.clone());
            }
            if lines.len() == self.capacity {
                lines.pop_front();
            }
            if self.capacity > 0 {
                lines.push_back(record);
            }
        }
    }

    /// Says no more lines will come: followers end once they have what was sent.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves once [`LogRing::close`] has been called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.subscribe();
        async move {
            let _ = closed.wait_for(|c| *c).await;
        }
    }

    /// The last `count` lines that pass `filter`, oldest first, and, when `follow`,
    /// a feed of every line after them. Taken under one lock, so no line falls
    /// between the two.
    pub fn read(
        &self,
        count: usize,
        filter: &LogFilter,
        follow: bool,
    ) -> (Vec<LogRecord>, Option<broadcast::Receiver<LogRecord>>) {
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut backlog: Vec<LogRecord> = lines
            .iter()
            .rev()
            .filter(|r| filter.matches(r))
            .take(count)
            .cloned()
            .collect();
        backlog.reverse();
        let live = follow.then(|| self.live.subscribe());
        (backlog, live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn output(dyno: &str, text: &'static [u8]) -> LogEvent {
        LogEvent::Output {
            dyno: Arc::from(dyno),
            at: UNIX_EPOCH + Duration::from_micros(1_500_000),
            lines: Bytes::from_static(text),
        }
    }

    #[test]
    fn keeps_the_newest_lines() {
        let ring = LogRing::new(3);
        ring.push(&output("web.1", b"a\nb\n"));
        ring.push(&output("worker.1", b"c\nd\n"));
        let (lines, _) = ring.read(10, &LogFilter::default(), false);
        let texts: Vec<&[u8]> = lines.iter().map(|r| &r.text[..]).collect();
        assert_eq!(texts, [&b"b"[..], b"c", b"d"]);
    }

    #[test]
    fn filters_by_type_or_dyno() {
        let ring = LogRing::new(10);
        ring.push(&output("web.1", b"a\n"));
        ring.push(&output("web.2", b"b\n"));
        ring.push(&output("worker.1", b"c\n"));
        let only = |dyno: &str| LogFilter {
            dyno: Some(dyno.into()),
            origin: None,
        };
        assert_eq!(ring.read(10, &only("web"), false).0.len(), 2);
        assert_eq!(ring.read(10, &only("web.2"), false).0.len(), 1);
        assert_eq!(ring.read(1, &only("web"), false).0[0].text, "b");
        ring.push(&LogEvent::system("stopping"));
        let crew = LogFilter {
            dyno: None,
            origin: Some(Origin::Crew),
        };
        assert_eq!(ring.read(10, &crew, false).0.len(), 1);
    }

    #[test]
    fn renders_heroku_lines() {
        let ring = LogRing::new(10);
        ring.push(&output("web.1", b"hello\n"));
        let (lines, _) = ring.read(1, &LogFilter::default(), false);
        assert_eq!(
            String::from_utf8_lossy(&lines[0].heroku_line()),
            "1970-01-01T00:00:01.500000+00:00 app[web.1]: hello\n"
        );
    }

    #[tokio::test]
    async fn closing_wakes_followers() {
        let ring = LogRing::new(10);
        let closed = ring.closed();
        ring.close();
        tokio::time::timeout(std::time::Duration::from_secs(1), closed)
            .await
            .expect("followers learn the log is closed");
    }

    #[tokio::test]
    async fn follows_new_lines() {
        let ring = LogRing::new(10);
        ring.push(&output("web.1", b"old\n"));
        let (backlog, live) = ring.read(10, &LogFilter::default(), true);
        assert_eq!(backlog.len(), 1);
        ring.push(&output("web.1", b"new\n"));
        let mut live = live.expect("a feed");
        assert_eq!(live.recv().await.expect("a line").text, "new");
    }
}
