//! The front door: an HTTP reverse proxy from `Host` to an app's web dynos.
//!
//! Each request is routed by its `Host` header (`APP.localhost`, or a custom
//! domain) through [`Routes`], which hands back the app's live list of web
//! dynos, published by its engine. Requests go round robin to the dynos that are
//! `up`; a dyno that refuses the connection is skipped for the next one.
//! Connections to dynos are kept alive and reused.
//!
//! When no dyno can take a request the router answers with a 503 page and a
//! Heroku error code in the app's log: `H14` with no web dynos, `H10` when they
//! have all crashed, `H20` when none came up within 75 s while booting, `H12`
//! for a request over 30 s, and `H19` when no dyno could be reached.
//!
//! The router counts its requests in flight per dyno ([`InFlight`]). The engine
//! stops routing to a web dyno before it stops it, and waits until that count is
//! zero before sending the signal, so deploys, restarts and scaling drop nothing.
//!
//! Connections are served by one single-threaded runtime per core ([`workers`]),
//! each with its own idle dyno connections ([`pool`]), so a request, the dyno
//! connection it uses and its response stay on one thread.

mod access;
mod body;
mod pool;
mod workers;

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crew_engine::{DynoState, WebBackend};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::body::{Done, ProxyBody, Tracked};
use crate::pool::Sender;

/// Where a host's requests go.
pub struct AppRoute {
    pub app: String,
    /// The app's web dynos, kept current by its engine.
    pub backends: watch::Receiver<Arc<Vec<WebBackend>>>,
    /// Writes one line to the app's log as `crew[router]`.
    pub log: Arc<dyn Fn(String) + Send + Sync>,
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
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            request_timeout: Duration::from_secs(30),
            boot_wait: Duration::from_secs(75),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Requests in flight per dyno address.
#[derive(Debug, Default)]
pub struct InFlight {
    counts: Mutex<HashMap<SocketAddr, usize>>,
}

impl InFlight {
    pub fn count(&self, addr: SocketAddr) -> usize {
        self.lock().get(&addr).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(self: &Arc<Self>, addr: SocketAddr) -> InFlightGuard {
        *self.lock().entry(addr).or_insert(0) += 1;
        InFlightGuard {
            table: self.clone(),
            addr,
        }
    }
}

/// Counts one request until dropped.
struct InFlightGuard {
    table: Arc<InFlight>,
    addr: SocketAddr,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut counts = self.table.lock();
        if let Some(n) = counts.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.addr);
            }
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub struct Router<R: Routes> {
    routes: R,
    config: RouterConfig,
    in_flight: Arc<InFlight>,
    next: AtomicUsize,
    /// The port clients connect to, as `X-Forwarded-Port` sends it; made once,
    /// since every request carries the same.
    forwarded_port: HeaderValue,
}

impl<R: Routes> Router<R> {
    pub fn new(routes: R, config: RouterConfig, in_flight: Arc<InFlight>, port: u16) -> Router<R> {
        Router {
            routes,
            config,
            in_flight,
            next: AtomicUsize::new(0),
            forwarded_port: HeaderValue::from(port),
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
            match &workers {
                Some(workers) => workers.hand_over(stream, client),
                None => {
                    tokio::spawn(self.clone().connection(stream, client));
                }
            }
        }
    }

    /// Serves one client connection's requests.
    async fn connection(self: Arc<Self>, stream: TcpStream, client: std::net::SocketAddr) {
        let _ = stream.set_nodelay(true);
        // Made once per connection: every request on it forwards the same address.
        let ip = HeaderValue::from_maybe_shared(Bytes::from(client.ip().to_string()))
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        let service = hyper::service::service_fn(move |request| {
            let router = self.clone();
            let ip = ip.clone();
            async move { Ok::<_, Infallible>(router.handle(request, ip).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .writev(false)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
    }

    async fn handle(&self, mut request: Request<Incoming>, ip: HeaderValue) -> Response<ProxyBody> {
        let started = Instant::now();
        let upgrade = is_upgrade(request.headers());
        // Everything read from the request before its headers are rewritten.
        let (route, line, new_id) = {
            let host = request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| request.uri().host())
                .unwrap_or("");
            let host = host.rsplit_once(':').map_or(host, |(name, _)| name);
            let hostname = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(host.to_ascii_lowercase())
            } else {
                Cow::Borrowed(host)
            };
            let Some(route) = self.routes.route(&hostname) else {
                return body::page(
                    StatusCode::NOT_FOUND,
                    "No such app",
                    &format!("There is no app at {hostname}."),
                );
            };
            let given = request
                .headers()
                .get(X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 200);
            let mut buffer = [0; uuid::fmt::Hyphenated::LENGTH];
            let request_id = match given {
                Some(id) => id,
                None => new_request_id(&mut buffer),
            };
            let line = AccessLine::new(
                route.log.clone(),
                request.method().as_str(),
                request.uri().path_and_query().map_or("/", |p| p.as_str()),
                &hostname,
                request_id,
                ip.to_str().unwrap_or(""),
            );
            let new_id = match given {
                Some(_) => None,
                None => HeaderValue::from_str(request_id).ok(),
            };
            (route, line, new_id)
        };
        self.prepare_headers(request.headers_mut(), upgrade, &ip, new_id);

        // Find an up dyno, waiting while the app boots.
        let deadline = started + self.config.boot_wait;
        let mut backends = route.backends;
        let (sender, list, index, connect, pooled) = loop {
            let list = backends.borrow_and_update().clone();
            if list.iter().any(|b| b.state == DynoState::Up) {
                match self.connect(&list, upgrade).await {
                    Ok((sender, index, connect, pooled)) => {
                        break (sender, list, index, connect, pooled);
                    }
                    Err(tried) => {
                        return line.error(
                            "H19",
                            "Backend connection timeout",
                            &tried,
                            started,
                            StatusCode::SERVICE_UNAVAILABLE,
                        );
                    }
                }
            }
            let starting = list.iter().any(|b| b.state == DynoState::Starting);
            if !starting {
                let (code, desc) = if list.is_empty() {
                    ("H14", "No web processes running")
                } else {
                    ("H10", "App crashed")
                };
                return line.error(code, desc, "", started, StatusCode::SERVICE_UNAVAILABLE);
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero()
                || tokio::time::timeout(wait, backends.changed())
                    .await
                    .is_err()
            {
                return line.error(
                    "H20",
                    "App boot timeout",
                    "",
                    started,
                    StatusCode::SERVICE_UNAVAILABLE,
                );
            }
        };
        let addr = list[index].addr;

        let guard = self.in_flight.enter(addr);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let mut sender = sender;
        let timeout = self.config.request_timeout;
        let sent = tokio::time::timeout(timeout, async {
            match sender.try_send_request(request).await {
                Ok(response) => Ok(response),
                // A kept-alive connection the dyno had just closed: the request
                // never left, so it goes again on a new connection.
                Err(mut e) => match (pooled, e.take_message()) {
                    (true, Some(request)) => {
                        sender = pool::connect(addr, self.config.connect_timeout)
                            .await
                            .map_err(|_| ())?;
                        sender.send_request(request).await.map_err(|_| ())
                    }
                    _ => Err(()),
                },
            }
        })
        .await;
        let dyno = &list[index].name;
        let mut response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(())) => {
                return line.error(
                    "H13",
                    "Connection closed without response",
                    dyno,
                    started,
                    StatusCode::SERVICE_UNAVAILABLE,
                );
            }
            Err(_) => {
                return line.error(
                    "H12",
                    "Request timeout",
                    dyno,
                    started,
                    StatusCode::SERVICE_UNAVAILABLE,
                );
            }
        };
        // A dyno that closes after each response (HTTP/1.0, `Connection: close`)
        // leaves nothing to reuse.
        let reusable = !upgrade && keeps_alive(&response);
        let status = response.status();
        if status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                let _held = guard;
                if let (Ok(a), Ok(b)) = (client_upgrade.await, backend_upgrade.await) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b))
                            .await;
                }
            });
            line.info(dyno, connect, started, status, 0);
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, ProxyBody::empty());
        }
        let (parts, body) = response.into_parts();
        let body = Tracked::new(
            body,
            Done {
                line,
                backends: list,
                index,
                connect,
                started,
                status,
                _guard: guard,
                sender: reusable.then_some((addr, sender)),
            },
        );
        Response::from_parts(parts, ProxyBody::Dyno(body))
    }

    /// A ready connection to one of the up dynos in `list`, starting round
    /// robin; a dyno that cannot be reached is skipped. Gives the dyno's index
    /// in `list`, or on failure says which dynos were tried.
    async fn connect(
        &self,
        list: &[WebBackend],
        upgrade: bool,
    ) -> Result<(Sender, usize, Duration, bool), String> {
        let up = || {
            list.iter()
                .enumerate()
                .filter(|(_, b)| b.state == DynoState::Up)
                .map(|(i, _)| i)
        };
        let count = up().count();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut tried = Vec::new();
        for index in up().cycle().skip(start % count.max(1)).take(count) {
            let backend = &list[index];
            // A kept-alive connection costs no connect, hence 0 ms.
            if !upgrade && let Some(sender) = pool::take(backend.addr).await {
                return Ok((sender, index, Duration::ZERO, true));
            }
            let began = Instant::now();
            match pool::connect(backend.addr, self.config.connect_timeout).await {
                Ok(sender) => return Ok((sender, index, began.elapsed(), false)),
                Err(_) => tried.push(backend.name.as_str()),
            }
        }
        Err(tried.join(","))
    }

    /// Drops hop-by-hop headers (keeping an upgrade's) and adds the forwarding
    /// ones, and the request id when the client sent none.
    fn prepare_headers(
        &self,
        headers: &mut HeaderMap,
        upgrade: bool,
        ip: &HeaderValue,
        new_id: Option<HeaderValue>,
    ) {
        // A request rarely has any: one look at its few names is cheaper than
        // a lookup of each hop-by-hop name.
        if !upgrade && headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
            for name in &HOP_BY_HOP {
                headers.remove(name);
            }
        }
        let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) => {
                let mut value = String::with_capacity(earlier.len() + 2 + ip.len());
                value.push_str(earlier);
                value.push_str(", ");
                value.push_str(ip.to_str().unwrap_or(""));
                HeaderValue::try_from(value).ok()
            }
            None => Some(ip.clone()),
        };
        if let Some(value) = forwarded_for {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        headers.insert(X_FORWARDED_PORT, self.forwarded_port.clone());
        if let Some(id) = new_id {
            headers.insert(X_REQUEST_ID, id);
        }
    }
}

/// A fresh request id: a version 4 UUID from a per-thread generator. A request
/// id only has to be unique, not unguessable, and asking the kernel for random
/// bytes on every request was a syscall each.
fn new_request_id(buffer: &mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> &str {
    let random = fastrand::u128(..).to_le_bytes();
    uuid::Builder::from_random_bytes(random)
        .into_uuid()
        .hyphenated()
        .encode_lower(buffer)
}

/// An access line, begun when the request comes in: `at=info ` and the parts
/// known then. It is finished, and written, once the response is done.
struct AccessLine {
    text: String,
    log: access::Log,
}

const AT_INFO: &str = "at=info ";

impl AccessLine {
    fn new(
        log: access::Log,
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

    fn info(
        mut self,
        dyno: &str,
        connect: Duration,
        started: Instant,
        status: StatusCode,
        bytes: u64,
    ) {
        let _ = write!(
            self.text,
            " dyno={dyno} connect={}ms service={}ms status={} bytes={bytes}",
            connect.as_millis(),
            started.elapsed().as_millis(),
            status.as_u16()
        );
        access::write(&self.log, self.text);
    }

    fn error(
        self,
        code: &str,
        desc: &str,
        dyno: &str,
        started: Instant,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        access::write(
            &self.log,
            format!(
                "at=error code={code} desc=\"{desc}\" {} dyno={dyno} connect=0ms service={}ms status={} bytes=0",
                &self.text[AT_INFO.len()..],
                started.elapsed().as_millis(),
                status.as_u16()
            ),
        );
        body::page(
            status,
            "Application error",
            &format!("{desc} ({code}). If you are the app's owner, `crew logs` says more."),
        )
    }
}

static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

fn keeps_alive<B>(response: &Response<B>) -> bool {
    let connection = |token: &str| {
        response
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    match response.version() {
        hyper::Version::HTTP_10 => connection("keep-alive"),
        _ => !connection("close"),
    }
}
