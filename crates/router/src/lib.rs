//! The front door: an HTTP reverse proxy from `Host` to an app's web dynos.
//!
//! Each request is routed by its `Host` header (`APP.localhost`, or a custom
//! domain) through [`Routes`], which hands back the app's live list of web
//! dynos, published by its engine. Requests go round robin to the dynos that are
//! `up`; a dyno that refuses the connection is skipped for the next one.
//! Connections to dynos are kept alive and reused.
//!
//! An app in maintenance mode gets every request answered by the router: a
//! maintenance page with a 503, and `at=info code=H80` in its log, as on Heroku.
//!
//! When no dyno can take a request the router answers with a 503 page and a
//! Heroku error code in the app's log: `H14` with no web dynos, `H10` when they
//! have all crashed, `H20` when none came up within 75 s while booting, `H12`
//! for a request over 30 s, and `H19` when no dyno could be reached. A dyno
//! silent for 55 s in the middle of a response is `H15`, a client silent as
//! long in the middle of a request `H28`.
//!
//! The router counts its requests under way to each dyno in the dyno's own
//! counter ([`crew_engine::RequestCount`], one atomic per dyno). The engine
//! stops routing to a web dyno before it stops it, and waits until that count is
//! zero before sending the signal, so deploys, restarts and scaling drop nothing.
//! A request counts itself on a dyno before it connects, then checks the dyno
//! is still in the engine's latest list; the engine takes the dyno out of the
//! list before it looks at the count, so one of them sees the other. A dyno
//! that closes the connection without an answer (it crashed, or closed a kept
//! connection) has the request sent to another up dyno, at most three tries in
//! all, when nothing of a response has gone to the client, the whole request
//! is at hand, and the method is idempotent or the connection was a kept one.
//!
//! Connections are served by one single-threaded runtime per core ([`workers`]),
//! each with its own idle dyno connections ([`pool`]), so a request, the dyno
//! connection it uses and its response stay on one thread.
//!
//! The proxying itself is a relay of HTTP/1.1 bytes ([`exchange`]): a request
//! head is parsed once ([`http1`]), routed, and written again for the dyno with
//! the forwarding headers; bodies, and the response head, pass through as they
//! are. A general HTTP client and server on each side, as the router first
//! had, cost a channel, a task and a header map per request (BENCHMARKS.md,
//! Router).

mod access;
mod exchange;
mod http1;
mod pool;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crew_engine::{DynoState, RequestGuard, WebBackend};
use tokio::sync::watch;

use crate::pool::DynoConnection;

/// Where a host's requests go.
pub struct AppRoute {
    pub app: String,
    /// The app's web dynos, kept current by its engine.
    pub backends: watch::Receiver<Arc<Vec<WebBackend>>>,
    /// Writes one line to the app's log as `crew[router]`.
    pub log: Arc<dyn Fn(String) + Send + Sync>,
    /// The app is in maintenance mode: every request gets the maintenance
    /// page with a 503, and `H80` in the log; no dyno sees it.
    pub maintenance: bool,
}

/// Finds the app for a `Host` header (without its port, lowercased).
pub trait Routes: Send + Sync + 'static {
    fn route(&self, host: &str) -> Option<AppRoute>;
}

/// Heroku's limits.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Until the response starts (H12).
    pub request_timeout: Duration,
    /// How long a request waits for a booting app's first web dyno (H20).
    pub boot_wait: Duration,
    /// To connect to a dyno (H19).
    pub connect_timeout: Duration,
    /// How long a connection may stay silent: a dyno in the middle of a
    /// response (H15), a client in the middle of a request (H28), and a kept
    /// client connection between requests (closed without a word). A
    /// request's head must also arrive whole within it, however it trickles.
    pub idle_timeout: Duration,
    /// Client connections open at once; more are closed as they come, so
    /// that a flood of them cannot take the descriptors the API and the
    /// dynos need. Each proxied request holds a second descriptor, to its dyno.
    pub max_connections: usize,
    /// Client connections open at once from one address.
    pub max_per_client: usize,
}

impl RouterConfig {
    /// Connection caps for a process allowed `fd_limit` open files: half of
    /// what is left after a reserve of a quarter (at least 1,024) for the API,
    /// `crew run`, dyno pipes and the store, since each client connection may
    /// hold a dyno connection too; a single address gets a quarter of that.
    pub fn with_fd_limit(self, fd_limit: u64) -> RouterConfig {
        let fds = usize::try_from(fd_limit).unwrap_or(usize::MAX);
        let reserve = (fds / 4).max(1024);
        let max_connections = (fds.saturating_sub(reserve) / 2).max(16);
        RouterConfig {
            max_connections,
            max_per_client: (max_connections / 4).max(8),
            ..self
        }
    }
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            request_timeout: Duration::from_secs(30),
            boot_wait: Duration::from_secs(75),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(55),
            max_connections: 512,
            max_per_client: 128,
        }
    }
}

pub struct Router<R: Routes> {
    routes: R,
    config: RouterConfig,
    /// Client connections open now, in all and by address.
    open: Arc<OpenConnections>,
    next: AtomicUsize,
    /// The port clients connect to, as `X-Forwarded-Port` sends it; made once,
    /// since every request carries the same.
    forwarded_port: String,
}

impl<R: Routes> Router<R> {
    pub fn new(routes: R, config: RouterConfig, port: u16) -> Router<R> {
        Router {
            routes,
            config,
            open: Arc::default(),
            next: AtomicUsize::new(0),
            forwarded_port: port.to_string(),
        }
    }

    /// Serves connections from `listener` until the task is dropped; then the
    /// connections still open are closed too.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let workers = workers::Workers::start(&self);
        loop {
            let (stream, client) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of file descriptors, most likely: give connections
                    // time to close rather than spin on the error.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Over a cap, the connection is closed at once: accepting and
            // closing keeps the listen queue moving for other clients.
            let Some(slot) = self.open.enter(client.ip(), &self.config) else {
                drop(stream);
                continue;
            };
            match &workers {
                Some(workers) => workers.hand_over(stream, client, slot),
                None => {
                    tokio::spawn(self.clone().connection(stream, client, slot));
                }
            }
        }
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.total.load(Ordering::Relaxed)
    }

    /// A connection to one of the up dynos in `list`, starting round robin; a
    /// dyno that cannot be reached is skipped. The dynos in `failed` (which
    /// already failed this request) come last, and only on a new connection.
    /// The dyno's request count is entered before it is connected to, so that
    /// the engine, which stops a dyno once its count is zero, never stops it
    /// under a request on its way. Gives the dyno's index in `list`, its
    /// count's guard, the time connecting took and whether the connection was
    /// kept from an earlier request; or, on failure, which dynos were tried.
    async fn connect(
        &self,
        list: &[WebBackend],
        upgrade: bool,
        failed: &[String],
    ) -> Result<Connected, String> {
        let up = || {
            list.iter()
                .enumerate()
                .filter(|(_, b)| b.state == DynoState::Up)
                .map(|(i, _)| i)
        };
        let count = up().count();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let was_failed = |i: usize| failed.iter().any(|name| *name == list[i].name);
        let round = || up().cycle().skip(start % count.max(1)).take(count);
        // Those that have not failed this request first; then, when there are
        // some, those that have, on a new connection.
        let first = round().filter(|&i| failed.is_empty() || !was_failed(i));
        let again = round()
            .filter(|_| !failed.is_empty())
            .filter(|&i| was_failed(i));
        let mut tried = Vec::new();
        for (index, retried) in first.map(|i| (i, false)).chain(again.map(|i| (i, true))) {
            let backend = &list[index];
            let counted = backend.requests.enter();
            // A kept-alive connection costs no connect, hence 0 ms. An upgrade
            // gets a connection of its own, which it never gives back.
            if !upgrade
                && !retried
                && let Some(connection) = pool::take(backend)
            {
                return Ok(Connected {
                    connection,
                    index,
                    counted,
                    connect: Duration::ZERO,
                    pooled: true,
                });
            }
            let began = Instant::now();
            match pool::connect(backend, self.config.connect_timeout).await {
                Ok(connection) => {
                    return Ok(Connected {
                        connection,
                        index,
                        counted,
                        connect: began.elapsed(),
                        pooled: false,
                    });
                }
                Err(_) => tried.push(backend.name.as_str()),
            }
        }
        Err(tried.join(","))
    }
}

/// A connection to a dyno, as [`Router::connect`] gives it.
struct Connected {
    connection: DynoConnection,
    index: usize,
    counted: RequestGuard,
    connect: Duration,
    pooled: bool,
}

/// Whether `backend` (from an older list) may still take requests by the
/// engine's latest list: it is there, at the same place, and `up`.
fn still_up(latest: &Arc<Vec<WebBackend>>, list: &Arc<Vec<WebBackend>>, index: usize) -> bool {
    let Some(backend) = list.get(index) else {
        return false;
    };
    if Arc::ptr_eq(latest, list) {
        return backend.state == DynoState::Up;
    }
    latest
        .iter()
        .any(|b| b.name == backend.name && b.addr == backend.addr && b.state == DynoState::Up)
}

/// The router's open client connections, in all and by client address.
#[derive(Default)]
struct OpenConnections {
    total: AtomicUsize,
    by_client: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl OpenConnections {
    /// Counts a new connection from `ip` open, unless a cap is reached.
    fn enter(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
        config: &RouterConfig,
    ) -> Option<ConnectionSlot> {
        let mut by_client = self
            .by_client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let from_client = by_client.entry(ip).or_insert(0);
        if self.total.load(Ordering::Relaxed) >= config.max_connections
            || *from_client >= config.max_per_client
        {
            if *from_client == 0 {
                by_client.remove(&ip);
            }
            return None;
        }
        *from_client += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionSlot {
            open: self.clone(),
            ip,
        })
    }
}

/// One open client connection, counted until dropped.
pub(crate) struct ConnectionSlot {
    open: Arc<OpenConnections>,
    ip: std::net::IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut by_client = self
            .open
            .by_client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = by_client.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                by_client.remove(&self.ip);
            }
        }
        self.open.total.fetch_sub(1, Ordering::Relaxed);
    }
}
