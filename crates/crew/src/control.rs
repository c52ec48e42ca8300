//! The control socket of a running `crew start`: where it lives, and the API
//! answered on it.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use crew_api::server::{ApiError, Backend, LogStream};
use crew_api::types::{AppRef, Dyno, DynoCreate, FormationEntry, FormationUpdate, LogQuery};
use crew_engine::{DynoInfo, EngineError, EngineHandle, OneOff};
use crew_logs::{LogFilter, LogRecord, LogRing, Origin};
use tokio::sync::broadcast;

/// The socket's file name in the app's directory.
pub const SOCKET_NAME: &str = ".crew.sock";

/// Lines `crew logs` shows unless told otherwise.
pub const DEFAULT_LOG_LINES: usize = 100;

/// Removes the socket file when the run ends.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the app's control socket, clearing a stale one left by a run that died.
pub fn bind(root: &Path) -> Result<(tokio::net::UnixListener, SocketFile)> {
    let path = root.join(SOCKET_NAME);
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => bail!(
                "crew is already running in {} (its control socket {} answers)",
                root.display(),
                path.display()
            ),
            Err(_) => std::fs::remove_file(&path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?,
        }
    }
    let listener = crew_runtime::os::bind_private_socket(&path)
        .with_context(|| format!("creating the control socket {}", path.display()))?;
    listener
        .set_nonblocking(true)
        .context("setting up the control socket")?;
    let listener =
        tokio::net::UnixListener::from_std(listener).context("setting up the control socket")?;
    Ok((listener, SocketFile(path)))
}

/// The control socket of a running `crew start` in `dir` or one of its parents.
pub fn find(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(SOCKET_NAME))
        .find(|p| p.exists())
}

/// The local app's name in API paths: its directory's name.
pub fn app_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| String::from("app"))
}

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

/// The API of one local formation.
pub struct LocalBackend {
    pub app: String,
    pub engine: EngineHandle,
    pub ring: Arc<LogRing>,
    /// Process types and commands, in Procfile order.
    pub types: Vec<(String, String)>,
}

const LOCAL_SIZE: &str = "local";

impl LocalBackend {
    fn check(&self, app: &str) -> Result<(), ApiError> {
        if app == self.app {
            Ok(())
        } else {
            Err(ApiError::not_found(format!(
                "Couldn't find that app: this crew start runs `{}`",
                self.app
            )))
        }
    }

    fn dyno(&self, info: DynoInfo) -> Dyno {
        let app = AppRef {
            id: self.app.clone(),
            name: self.app.clone(),
        };
        api_dyno(info, app, LOCAL_SIZE, None)
    }

    async fn formation_entries(&self) -> Result<Vec<FormationEntry>, ApiError> {
        let formation = self
            .engine
            .formation()
            .await
            .ok_or_else(|| ApiError::unavailable("the formation is shutting down"))?;
        Ok(self
            .types
            .iter()
            .map(|(name, command)| FormationEntry {
                process_type: name.clone(),
                quantity: formation.get(name).unwrap_or(0),
                command: command.clone(),
                size: LOCAL_SIZE.to_string(),
                ..FormationEntry::default()
            })
            .collect())
    }
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::UnknownDyno(_) => ApiError::not_found(e.to_string()),
        EngineError::ShuttingDown | EngineError::Engine(_) => ApiError::unavailable(e.to_string()),
        EngineError::Formation(_) | EngineError::Port { .. } | EngineError::NoRelease => {
            ApiError::invalid(e.to_string())
        }
    }
}

impl Backend for LocalBackend {
    async fn dynos(&self, app: &str) -> Result<Vec<Dyno>, ApiError> {
        self.check(app)?;
        Ok(self
            .engine
            .ps()
            .await
            .into_iter()
            .map(|d| self.dyno(d))
            .collect())
    }

    async fn create_dyno(&self, app: &str, request: DynoCreate) -> Result<Dyno, ApiError> {
        self.check(app)?;
        let Some(pid) = request.pid else {
            return Err(ApiError::invalid(
                "a local formation lists one-offs that `crew run` started; give their `pid`",
            ));
        };
        let info = self
            .engine
            .register_one_off(OneOff {
                command: request.command,
                pid,
            })
            .await
            .map_err(engine_error)?;
        Ok(self.dyno(info))
    }

    async fn restart(&self, app: &str, target: Option<String>) -> Result<(), ApiError> {
        self.check(app)?;
        self.engine
            .restart(target)
            .await
            .map(|_| ())
            .map_err(engine_error)
    }

    async fn stop(&self, app: &str, target: String) -> Result<(), ApiError> {
        self.check(app)?;
        self.engine
            .stop(target)
            .await
            .map(|_| ())
            .map_err(engine_error)
    }

    async fn formation(&self, app: &str) -> Result<Vec<FormationEntry>, ApiError> {
        self.check(app)?;
        self.formation_entries().await
    }

    async fn scale(
        &self,
        app: &str,
        update: FormationUpdate,
    ) -> Result<Vec<FormationEntry>, ApiError> {
        self.check(app)?;
        self.engine
            .scale(update.updates)
            .await
            .map_err(engine_error)?;
        self.formation_entries().await
    }

    async fn logs(&self, app: &str, query: LogQuery) -> Result<LogStream, ApiError> {
        self.check(app)?;
        log_stream(&self.ring, query)
    }
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
