//! Engine values as both APIs show them: a dyno as Heroku's JSON, and a log
//! query answered from a `LogRing`.
//!
//! Shared by the control socket of `crew start` (`control`) and by the server
//! (`server::views`): they answer the same routes with the same shapes, so this
//! belongs to neither mode.

use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use crew_api::server::{ApiError, LogStream};
use crew_api::types::{AppRef, Dyno, LogQuery};
use crew_engine::DynoInfo;
use crew_logs::{LogFilter, LogRecord, LogRing, Origin};
use tokio::sync::broadcast;

/// Lines `crew logs` shows unless told otherwise.
const DEFAULT_LOG_LINES: usize = 100;

/// A dyno as the API shows it, in either mode.
pub fn api_dyno(
    info: DynoInfo,
    app: AppRef,
    size: &str,
    release: Option<crew_api::types::ReleaseRef>,
) -> Dyno {
    Dyno {
        id: info.name.clone(),
        name: info.name,
        process_type: info.process_type,
        state: info.state.as_str().to_string(),
        command: info.command,
        size: size.to_string(),
        created_at: timestamp(info.since),
        updated_at: timestamp(info.since),
        attach_url: None,
        app,
        release,
        pid: info.pid,
        port: info.port,
        restarts: info.restarts,
        restart_in: info.restart_in.map(|d| d.as_secs_f64().ceil() as u64),
        node: info.node,
    }
}

pub fn timestamp(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The lines a log query asks for: the backlog, then, with `tail`, new lines as
/// they come.
pub fn log_stream(ring: &LogRing, query: LogQuery) -> Result<LogStream, ApiError> {
    log_stream_with_router_errors(ring, None, query)
}

/// [`log_stream`], where `router_errors` (a server's) holds the router's
/// latest error lines apart from `ring`: the router's lines
/// (`source=router`) then include those that have left the ring.
pub fn log_stream_with_router_errors(
    ring: &LogRing,
    router_errors: Option<&LogRing>,
    query: LogQuery,
) -> Result<LogStream, ApiError> {
    let router = query.source.as_deref() == Some("router");
    let origin = match query.source.as_deref() {
        None => None,
        Some("app") => Some(Origin::App),
        Some("crew" | "heroku" | "router") => Some(Origin::Crew),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`{other}` is not a log source: use app, crew or router"
            )));
        }
    };
    let dyno = match query.dyno {
        Some(dyno) if router && dyno != "router" => {
            return Err(ApiError::invalid(format!(
                "the router's lines are no dyno's: leave out `{dyno}` with source router"
            )));
        }
        _ if router => Some("router".to_string()),
        dyno => dyno,
    };
    let filter = LogFilter { dyno, origin };
    let count = query.lines.unwrap_or(DEFAULT_LOG_LINES);
    let (mut backlog, live) = ring.read(count, &filter, query.tail.unwrap_or(false));
    if let Some(errors) = router_errors.filter(|_| router && backlog.len() < count) {
        // Fewer than asked for: the backlog is every router line the ring
        // holds, so the kept error lines from before its first have left the
        // ring. A line in both has one time in both.
        let first = backlog.first().map(|r| r.at);
        let (older, _) = errors.read(count, &LogFilter::default(), false);
        let mut lines: Vec<LogRecord> = older
            .into_iter()
            .filter(|r| first.is_none_or(|at| r.at < at))
            .collect();
        lines.append(&mut backlog);
        backlog = lines.split_off(lines.len().saturating_sub(count));
    }
    let backlog = futures_util::stream::iter(
        backlog
            .into_iter()
            .map(|r| Bytes::from(r.heroku_line()))
            .collect::<Vec<_>>(),
    );
    Ok(match live {
        None => Box::pin(backlog),
        Some(live) => Box::pin(futures_util::StreamExt::chain(
            backlog,
            follow(live, filter, Box::pin(ring.closed())),
        )),
    })
}

/// New lines as they arrive. A reader too slow for the feed is told how many lines
/// it missed instead of silently losing them. A follower ends when the log
/// closes (the run is over), after the lines already sent to it, so its response
/// ends cleanly instead of being cut.
fn follow(
    live: broadcast::Receiver<LogRecord>,
    filter: LogFilter,
    closed: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> Pin<Box<dyn futures_util::Stream<Item = Bytes> + Send>> {
    Box::pin(futures_util::stream::unfold(
        (live, filter, closed, false),
        |(mut live, filter, mut closed, mut closing)| async move {
            loop {
                let next = if closing {
                    // Drain what was sent before the close, then stop.
                    match live.try_recv() {
                        Ok(record) => Ok(record),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            Err(broadcast::error::RecvError::Lagged(n))
                        }
                        Err(_) => return None,
                    }
                } else {
                    tokio::select! {
                        next = live.recv() => next,
                        () = &mut closed => {
                            closing = true;
                            continue;
                        }
                    }
                };
                match next {
                    Ok(record) => {
                        if filter.matches(&record) {
                            let line = Bytes::from(record.heroku_line());
                            return Some((line, (live, filter, closed, closing)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let note = format!("crew[logs]: {n} lines skipped (reader too slow)\n");
                        return Some((Bytes::from(note), (live, filter, closed, closing)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    ))
}
