//! One line of `service logs` with `timestamps` and `details`:
//! `2026-11-27T20:11:16.324106628Z com.docker.swarm.node.id=…,com.docker.swarm.service.id=…,com.docker.swarm.task.id=… text\n`.
//! The details name the task, which names the dyno (`web.2`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// A log line taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: Option<SystemTime>,
    pub task: Option<String>,
    /// The app's text, ending in `\n`.
    pub text: Bytes,
}

const TASK: &str = "com.docker.swarm.task.id=";

/// `None` for a frame with no text at all.
pub fn parse(frame: &Bytes) -> Option<Line> {
    if frame.is_empty() {
        return None;
    }
    let mut rest = frame.clone();
    let mut at = None;
    let mut task = None;
    // The time, if the frame starts with one.
    if let Some(space) = rest.iter().position(|&b| b == b' ')
        && let Ok(text) = std::str::from_utf8(&rest[..space])
        && let Some(t) = parse_time(text)
    {
        at = Some(t);
        rest = rest.slice(space + 1..);
    }
    // The details, a comma-separated `k=v` list without spaces; empty
    // details leave a lone space.
    if rest.starts_with(b"com.docker.swarm.") || rest.starts_with(b" ") {
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        if let Ok(details) = std::str::from_utf8(&rest[..end]) {
            task = details
                .split(',')
                .find_map(|kv| kv.strip_prefix(TASK))
                .map(str::to_string);
        }
        rest = rest.slice((end + 1).min(rest.len())..);
    }
    let text = if rest.ends_with(b"\n") {
        rest
    } else {
        let mut v = rest.to_vec();
        v.push(b'\n');
        Bytes::from(v)
    };
    Some(Line { at, task, text })
}

/// Docker's RFC 3339 times, nanoseconds included.
pub(crate) fn parse_time(text: &str) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let nanos = t.timestamp_nanos_opt()?;
    let nanos = u64::try_from(nanos).ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_name_the_task() {
        let frame = Bytes::from_static(
            b"2026-11-27T20:11:16.324106628Z com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1 tick web.1 0\n",
        );
        let line = parse(&frame).expect("a line");
        assert_eq!(line.task.as_deref(), Some("t1"));
        assert_eq!(&line.text[..], b"tick web.1 0\n");
        assert!(line.at.is_some());
    }

    #[test]
    fn a_bare_line_is_kept_whole() {
        let line = parse(&Bytes::from_static(b"hello world")).expect("a line");
        assert_eq!(line.at, None);
        assert_eq!(line.task, None);
        assert_eq!(&line.text[..], b"hello world\n");
        assert_eq!(parse(&Bytes::new()), None);
    }
}
