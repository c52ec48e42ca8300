//! foreman's terminal format, written by one thread.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use crate::{LogEvent, LogRing};

/// How lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub timestamp: bool,
    pub color: bool,
    pub prefix: bool,
}

/// foreman's cycle of colours, by SGR code, then their bright variants.
const COLORS: [&str; 12] = [
    "36", "33", "32", "35", "31", "34", "96", "93", "92", "95", "91", "94",
];
const SYSTEM_COLOR: &str = "97";
const SYSTEM: &str = "system";

/// Renders events into bytes.
pub struct Printer {
    format: Format,
    width: usize,
    colors: HashMap<Arc<str>, &'static str>,
    clock_second: u64,
    clock_text: String,
    /// The last prefix rendered: a burst of lines from one dyno within one
    /// second shares it, so each line costs two copies and nothing else.
    last_prefix: Option<(Arc<str>, u64, usize, Vec<u8>)>,
}

impl Printer {
    /// `names` are the dynos expected at start, so the column is wide enough from
    /// the first line; it widens if a longer name shows up later.
    pub fn new<'a>(format: Format, names: impl IntoIterator<Item = &'a str>) -> Printer {
        let mut printer = Printer {
            format,
            width: SYSTEM.len(),
            colors: HashMap::new(),
            clock_second: u64::MAX,
            clock_text: String::new(),
            last_prefix: None,
        };
        for name in names {
            printer.width = printer.width.max(name.len());
        }
        printer
    }

    fn color_for(&mut self, dyno: &Arc<str>) -> &'static str {
        let next = COLORS[self.colors.len() % COLORS.len()];
        self.colors.entry(dyno.clone()).or_insert(next)
    }

    fn clock(&mut self, at: SystemTime) -> &str {
        let second = second_of(at);
        if second != self.clock_second {
            self.clock_second = second;
            self.clock_text = chrono::DateTime::<chrono::Local>::from(at)
                .format("%H:%M:%S")
                .to_string();
        }
        &self.clock_text
    }

    fn prefix(&mut self, out: &mut Vec<u8>, name: &str, color: &str, at: SystemTime) {
        if !self.format.prefix {
            return;
        }
        self.width = self.width.max(name.len());
        if self.format.color {
            // The reset first, so a child's unterminated colour cannot tint the prefix.
            out.extend_from_slice(b"\x1b[0m\x1b[");
            out.extend_from_slice(color.as_bytes());
            out.push(b'm');
        }
        if self.format.timestamp {
            out.extend_from_slice(self.clock(at).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(name.as_bytes());
        out.resize(out.len() + (self.width - name.len()), b' ');
        out.extend_from_slice(b" | ");
        if self.format.color {
            out.extend_from_slice(b"\x1b[0m");
        }
    }

    /// Appends the rendered event to `out`.
    pub fn render(&mut self, event: &LogEvent, out: &mut Vec<u8>) {
        match event {
            LogEvent::Output { dyno, at, lines } => {
                if !self.format.prefix {
                    out.extend_from_slice(lines);
                    return;
                }
                let second = second_of(*at);
                let cached = self.last_prefix.as_ref().is_some_and(|(d, s, w, _)| {
                    Arc::ptr_eq(d, dyno) && *s == second && *w == self.width.max(dyno.len())
                });
                if !cached {
                    let color = self.color_for(dyno);
                    let mut prefix = Vec::with_capacity(64);
                    self.prefix(&mut prefix, dyno, color, *at);
                    self.last_prefix = Some((dyno.clone(), second, self.width, prefix));
                }
                let Some((_, _, _, prefix)) = &self.last_prefix else {
                    return;
                };
                out.reserve(lines.len() + prefix.len() * 8);
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', lines) {
                    out.extend_from_slice(prefix);
                    out.extend_from_slice(&lines[start..=end]);
                    start = end + 1;
                }
                if start < lines.len() {
                    out.extend_from_slice(prefix);
                    out.extend_from_slice(&lines[start..]);
                    out.push(b'\n');
                }
            }
            LogEvent::Status { dyno, at, text } => {
                let color = self.color_for(dyno);
                self.prefix(out, dyno, color, *at);
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
            }
            LogEvent::Platform { .. } => {}
            LogEvent::System { at, text } => {
                self.prefix(out, SYSTEM, SYSTEM_COLOR, *at);
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
            }
        }
    }
}

fn second_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The writer thread's side of the terminal.
pub struct Terminal {
    thread: std::thread::JoinHandle<()>,
    closed: watch::Receiver<bool>,
}

/// How many events may wait for the terminal. When it is slow the dynos' pipes
/// fill and the dynos block: back-pressure, never a dropped line.
const QUEUE: usize = 1024;

/// Flush at least this often in bytes, so one write does not grow without bound.
const BATCH: usize = 1 << 20;

impl Terminal {
    /// Starts the writer thread. It ends once every sender is dropped. Every event
    /// also goes into `ring`, when there is one.
    pub fn spawn(
        mut out: Box<dyn Write + Send>,
        mut printer: Printer,
        ring: Option<Arc<LogRing>>,
    ) -> (mpsc::Sender<LogEvent>, Terminal) {
        let (tx, mut rx) = mpsc::channel::<LogEvent>(QUEUE);
        let (closed_tx, closed) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("crew-terminal".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(BATCH);
                let mut open = true;
                while let Some(event) = rx.blocking_recv() {
                    if let Some(ring) = &ring {
                        ring.push(&event);
                    }
                    if !open {
                        // Keep draining so dynos never block on a reader that left.
                        continue;
                    }
                    printer.render(&event, &mut buf);
                    while buf.len() < BATCH {
                        match rx.try_recv() {
                            Ok(event) => {
                                if let Some(ring) = &ring {
                                    ring.push(&event);
                                }
                                printer.render(&event, &mut buf);
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
                        open = false;
                        let _ = closed_tx.send(true);
                        if e.kind() != io::ErrorKind::BrokenPipe {
                            eprintln!("crew: writing output failed: {e}");
                        }
                    }
                    buf.clear();
                }
            });
        let thread = match thread {
            Ok(t) => t,
            // Without a thread there is no terminal; dropping the receiver makes
            // every send fail, which callers treat as a closed terminal.
            Err(_) => std::thread::spawn(|| {}),
        };
        (tx, Terminal { thread, closed })
    }

    /// Resolves when writing failed, for instance when `crew start | head -1` lost
    /// its reader.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.clone()
    }

    /// Waits until everything sent so far is written.
    pub fn finish(self) {
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn at() -> SystemTime {
        UNIX_EPOCH
    }

    fn render(format: Format, events: &[LogEvent]) -> String {
        let mut p = Printer::new(format, ["web.1", "worker.1"]);
        let mut out = Vec::new();
        for e in events {
            p.render(e, &mut out);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    const PLAIN: Format = Format {
        timestamp: false,
        color: false,
        prefix: true,
    };

    #[test]
    fn pads_names_to_the_widest() {
        let web: Arc<str> = Arc::from("web.1");
        let out = render(
            PLAIN,
            &[
                LogEvent::Output {
                    dyno: web.clone(),
                    at: at(),
                    lines: Bytes::from_static(b"one\ntwo\n"),
                },
                LogEvent::Status {
                    dyno: web,
                    at: at(),
                    text: "started with pid 7".into(),
                },
                LogEvent::System {
                    at: at(),
                    text: "sending SIGTERM to all processes".into(),
                },
            ],
        );
        assert_eq!(
            out,
            "web.1    | one\nweb.1    | two\nweb.1    | started with pid 7\nsystem   | sending SIGTERM to all processes\n"
        );
    }

    #[test]
    fn timestamps_are_clock_times() {
        let out = render(
            Format {
                timestamp: true,
                ..PLAIN
            },
            &[LogEvent::system("hi")],
        );
        let (clock, rest) = out.split_at(8);
        assert!(clock.chars().filter(|c| *c == ':').count() == 2, "{out}");
        assert_eq!(rest, " system   | hi\n");
    }

    #[test]
    fn colour_resets_before_each_prefix() {
        let out = render(
            Format {
                color: true,
                ..PLAIN
            },
            &[LogEvent::system("hi")],
        );
        assert_eq!(out, "\x1b[0m\x1b[97msystem   | \x1b[0mhi\n");
    }

    #[test]
    fn no_prefix_passes_lines_untouched() {
        let out = render(
            Format {
                prefix: false,
                ..PLAIN
            },
            &[LogEvent::Output {
                dyno: Arc::from("web.1"),
                at: at(),
                lines: Bytes::from_static(b"\x1b[31mred\n"),
            }],
        );
        assert_eq!(out, "\x1b[31mred\n");
    }
}
