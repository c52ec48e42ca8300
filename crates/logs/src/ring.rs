//! The recent log of one app, for `crew logs`, and the live feed for `crew logs -t`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::LogEvent;

use crate::framer::{HEROKU_MAX_LINE, MAX_LINE};

/// Lines kept per app unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Bytes of text kept per app unless told otherwise. Heroku keeps 1,500 lines;
/// 4 MiB holds those even at 2.7 KB a line, or crew's 10,000 lines of 400
/// bytes, while a server of a hundred apps spends at most 400 MiB on logs
/// however hard they write.
pub const DEFAULT_BYTES: usize = 4 * 1024 * 1024;

/// What a kept line costs beyond its text: the record itself and its slot.
const RECORD_COST: usize = std::mem::size_of::<LogRecord>();

/// Lines after crew's live feed to `crew logs -t` readers: a reader further
/// behind is told how many it missed. At most this many lines of the log's
/// longest are held for readers beyond what the ring holds.
const LIVE_CAPACITY: usize = 1024;

/// What the text of a cut line ends with when rendered, so a reader knows the
/// line went on in the next one.
pub const CUT_MARK: &str = " [line cut]";

/// How much an app's log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLimits {
    /// Lines kept.
    pub lines: usize,
    /// Bytes kept, text and bookkeeping together.
    pub bytes: usize,
    /// A longer line is split into pieces of this length, each a line.
    pub line_len: usize,
}

impl RingLimits {
    /// A server app's log: Heroku's line length, [`DEFAULT_BYTES`].
    pub const SERVER: RingLimits = RingLimits {
        lines: DEFAULT_CAPACITY,
        bytes: DEFAULT_BYTES,
        line_len: HEROKU_MAX_LINE,
    };

    /// `crew start`'s log for `crew logs`: long lines stay whole, as on the
    /// terminal.
    pub const LOCAL: RingLimits = RingLimits {
        lines: DEFAULT_CAPACITY,
        bytes: DEFAULT_BYTES,
        line_len: MAX_LINE,
    };
}

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
    /// The line was longer than the log's line limit, and goes on in the next
    /// line from the same dyno.
    pub cut: bool,
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
        let mut line = Vec::with_capacity(
            stamp.len() + self.source.len() + self.text.len() + CUT_MARK.len() + 16,
        );
        line.extend_from_slice(stamp.as_bytes());
        line.push(b' ');
        line.extend_from_slice(origin.as_bytes());
        line.push(b'[');
        line.extend_from_slice(self.source.as_bytes());
        line.extend_from_slice(b"]: ");
        line.extend_from_slice(&self.text);
        if self.cut {
            line.extend_from_slice(CUT_MARK.as_bytes());
        }
        line.push(b'\n');
        line
    }

    /// The bytes this record is charged in the ring.
    fn cost(&self) -> usize {
        self.text.len() + RECORD_COST
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
///
/// Invariants:
/// - `kept.bytes` is the sum of the kept records' costs, and never exceeds
///   `limits.bytes` after a push; `kept.lines.len()` never exceeds `limits.lines`.
/// - No kept record's text is longer than `limits.line_len`.
/// - Memory held is the kept text plus at most one partly evicted block (blocks
///   leave first-in first-out), plus at most [`LIVE_CAPACITY`] records held for
///   followers.
pub struct LogRing {
    kept: Mutex<Kept>,
    limits: RingLimits,
    live: broadcast::Sender<LogRecord>,
    /// Set when no more lines will come, so followers can finish cleanly.
    closed: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct Kept {
    lines: VecDeque<LogRecord>,
    bytes: usize,
}

impl LogRing {
    /// A ring of `capacity` lines, with the local limits otherwise.
    pub fn new(capacity: usize) -> LogRing {
        LogRing::with_limits(RingLimits {
            lines: capacity,
            ..RingLimits::LOCAL
        })
    }

    pub fn with_limits(limits: RingLimits) -> LogRing {
        let limits = RingLimits {
            line_len: limits.line_len.max(1),
            ..limits
        };
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let (closed, _) = tokio::sync::watch::channel(false);
        LogRing {
            closed,
            kept: Mutex::new(Kept {
                lines: VecDeque::with_capacity(limits.lines.min(1024)),
                bytes: 0,
            }),
            limits,
            live,
        }
    }

    /// Records for one line of a dyno's output, split at the line limit; every
    /// piece but the last is marked cut, and so is the last when `goes_on`.
    fn split_line(
        &self,
        records: &mut Vec<LogRecord>,
        dyno: &Arc<str>,
        at: SystemTime,
        mut text: Bytes,
        goes_on: bool,
    ) {
        while text.len() > self.limits.line_len {
            let rest = text.split_off(self.limits.line_len);
            records.push(LogRecord {
                at,
                origin: Origin::App,
                source: dyno.clone(),
                text,
                cut: true,
            });
            text = rest;
        }
        records.push(LogRecord {
            at,
            origin: Origin::App,
            source: dyno.clone(),
            text,
            cut: goes_on,
        });
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
                    self.split_line(&mut records, dyno, *at, block.slice(start..end), false);
                    start = end + 1;
                }
                // A block that does not end in a newline was cut by its framer:
                // its last line goes on in the next block.
                if start < block.len() {
                    self.split_line(&mut records, dyno, *at, block.slice(start..), true);
                }
            }
            LogEvent::Status { dyno, at, text } | LogEvent::Platform { dyno, at, text } => {
                records.push(LogRecord {
                    at: *at,
                    origin: Origin::Crew,
                    source: dyno.clone(),
                    text: Bytes::copy_from_slice(text.as_bytes()),
                    cut: false,
                });
            }
            LogEvent::System { at, text } => records.push(LogRecord {
                at: *at,
                origin: Origin::Crew,
                source: Arc::from("system"),
                text: Bytes::copy_from_slice(text.as_bytes()),
                cut: false,
            }),
        }
        let followed = self.live.receiver_count() > 0;
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for record in records {
            if followed {
                // A reader leaving between the count and the send is fine.
                let _ = self.live.send(record.clone());
            }
            let cost = record.cost();
            if self.limits.lines == 0 || cost > self.limits.bytes {
                continue;
            }
            while kept.lines.len() >= self.limits.lines || kept.bytes + cost > self.limits.bytes {
                match kept.lines.pop_front() {
                    Some(old) => kept.bytes -= old.cost(),
                    None => break,
                }
            }
            kept.bytes += cost;
            kept.lines.push_back(record);
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
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut backlog: Vec<LogRecord> = kept
            .lines
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

    /// The bytes the kept lines are charged, text and bookkeeping.
    pub fn kept_bytes(&self) -> usize {
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .bytes
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
    fn the_ring_keeps_no_more_bytes_than_its_limit() {
        let ring = LogRing::with_limits(RingLimits {
            lines: 1_000_000,
            bytes: 64 * 1024,
            line_len: 1000,
        });
        let block = Bytes::from(vec![b'x'; 999_999]);
        for _ in 0..50 {
            ring.push(&LogEvent::Output {
                dyno: Arc::from("web.1"),
                at: UNIX_EPOCH,
                lines: block.clone(),
            });
            assert!(ring.kept_bytes() <= 64 * 1024, "{}", ring.kept_bytes());
        }
        let (lines, _) = ring.read(usize::MAX, &LogFilter::default(), false);
        let text: usize = lines.iter().map(|r| r.text.len()).sum();
        assert!(text > 32 * 1024, "the ring is used, not emptied: {text}");
        assert!(lines.iter().all(|r| r.text.len() <= 1000));
    }

    #[test]
    fn a_line_over_the_limit_is_split_and_says_it_was_cut() {
        let ring = LogRing::with_limits(RingLimits {
            line_len: 4,
            ..RingLimits::SERVER
        });
        ring.push(&output("web.1", b"abcdefghij\nok\n"));
        let (lines, _) = ring.read(10, &LogFilter::default(), false);
        let texts: Vec<(&[u8], bool)> = lines.iter().map(|r| (&r.text[..], r.cut)).collect();
        assert_eq!(
            texts,
            [
                (&b"abcd"[..], true),
                (b"efgh", true),
                (b"ij", false),
                (b"ok", false)
            ]
        );
        let rendered = String::from_utf8_lossy(&lines[0].heroku_line()).into_owned();
        assert!(
            rendered.ends_with(&format!("abcd{CUT_MARK}\n")),
            "{rendered}"
        );
        assert!(!String::from_utf8_lossy(&lines[2].heroku_line()).contains(CUT_MARK));
    }

    #[test]
    fn a_block_cut_by_its_framer_marks_its_last_line() {
        let ring = LogRing::with_limits(RingLimits::SERVER);
        ring.push(&output("web.1", b"whole\npart"));
        let (lines, _) = ring.read(10, &LogFilter::default(), false);
        assert!(!lines[0].cut);
        assert!(lines[1].cut);
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
