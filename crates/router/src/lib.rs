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

mod pool;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crew_engine::{DynoState, WebBackend};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::pool::{Pool, Sender};

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

/// Requests in flight per dyno port.
#[derive(Debug, Default)]
pub struct InFlight {
    counts: Mutex<HashMap<u16, usize>>,
}

impl InFlight {
    pub fn count(&self, port: u16) -> usize {
        self.lock().get(&port).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(self: &Arc<Self>, port: u16) -> InFlightGuard {
        *self.lock().entry(port).or_insert(0) += 1;
        InFlightGuard {
            table: self.clone(),
            port,
        }
    }
}

/// Counts one request until dropped.
struct InFlightGuard {
    table: Arc<InFlight>,
    port: u16,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut counts = self.table.lock();
        if let Some(n) = counts.get_mut(&self.port) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.port);
            }
        }
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub struct Router<R: Routes> {
    routes: R,
    config: RouterConfig,
    in_flight: Arc<InFlight>,
    pool: Pool,
    next: AtomicUsize,
    /// The port clients connect to, for `X-Forwarded-Port`.
    port: u16,
}

impl<R: Routes> Router<R> {
    pub fn new(routes: R, config: RouterConfig, in_flight: Arc<InFlight>, port: u16) -> Router<R> {
        Router {
            routes,
            config,
            in_flight,
            pool: Pool::default(),
            next: AtomicUsize::new(0),
            port,
        }
    }

    /// Serves connections from `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((stream, client)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let router = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let router = router.clone();
                    async move { Ok::<_, Infallible>(router.handle(request, client).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    }

    async fn handle(
        &self,
        mut request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or("")
            .to_string();
        let hostname = host
            .rsplit_once(':')
            .map_or(host.as_str(), |(name, _)| name)
            .to_ascii_lowercase();
        let Some(route) = self.routes.route(&hostname) else {
            return page(
                StatusCode::NOT_FOUND,
                "No such app",
                &format!("There is no app at {hostname}."),
            );
        };
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200)
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        let line = AccessLine {
            method: request.method().to_string(),
            path: request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            host: hostname.clone(),
            request_id: request_id.clone(),
            fwd: client.ip().to_string(),
            log: route.log.clone(),
        };
        prepare_headers(request.headers_mut(), client, self.port, &request_id);
        let upgrade = is_upgrade(request.headers());

        // Find an up dyno, waiting while the app boots.
        let deadline = started + self.config.boot_wait;
        let mut backends = route.backends.clone();
        let (sender, backend, connect, pooled) = loop {
            let list = backends.borrow_and_update().clone();
            let up: Vec<&WebBackend> = list.iter().filter(|b| b.state == DynoState::Up).collect();
            if !up.is_empty() {
                match self.connect(&up, upgrade).await {
                    Ok(found) => break found,
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

        let guard = self.in_flight.enter(backend.port);
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
                        sender = pool::connect(backend.port, self.config.connect_timeout)
                            .await
                            .map_err(|_| ())?;
                        sender.send_request(request).await.map_err(|_| ())
                    }
                    _ => Err(()),
                },
            }
        })
        .await;
        let mut response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(())) => {
                return line.error(
                    "H13",
                    "Connection closed without response",
                    &backend.name,
                    started,
                    StatusCode::SERVICE_UNAVAILABLE,
                );
            }
            Err(_) => {
                return line.error(
                    "H12",
                    "Request timeout",
                    &backend.name,
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
            line.info(&backend.name, connect, started, status, 0);
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, empty());
        }
        let (parts, body) = response.into_parts();
        let body = Tracked {
            inner: body,
            bytes: 0,
            done: Some(Done {
                line,
                dyno: backend.name.clone(),
                connect,
                started,
                status,
                _guard: guard,
                sender: reusable.then_some((self.pool.clone(), backend.port, sender)),
            }),
        };
        Response::from_parts(parts, body.boxed())
    }

    /// A ready connection to one of `up`, starting round robin; a dyno that
    /// cannot be reached is skipped. On failure, says which dynos were tried.
    async fn connect(
        &self,
        up: &[&WebBackend],
        upgrade: bool,
    ) -> Result<(Sender, WebBackend, Duration, bool), String> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut tried = Vec::new();
        for i in 0..up.len() {
            let backend = up[(start + i) % up.len()];
            let began = Instant::now();
            if !upgrade && let Some(sender) = self.pool.take(backend.port).await {
                return Ok((sender, backend.clone(), began.elapsed(), true));
            }
            match pool::connect(backend.port, self.config.connect_timeout).await {
                Ok(sender) => return Ok((sender, backend.clone(), began.elapsed(), false)),
                Err(_) => tried.push(backend.name.clone()),
            }
        }
        Err(tried.join(","))
    }
}

/// The parts of an access line known when the request comes in.
struct AccessLine {
    method: String,
    path: String,
    host: String,
    request_id: String,
    fwd: String,
    log: Arc<dyn Fn(String) + Send + Sync>,
}

impl AccessLine {
    fn common(&self) -> String {
        format!(
            "method={} path=\"{}\" host={} request_id={} fwd=\"{}\"",
            self.method, self.path, self.host, self.request_id, self.fwd
        )
    }

    fn info(
        &self,
        dyno: &str,
        connect: Duration,
        started: Instant,
        status: StatusCode,
        bytes: u64,
    ) {
        (self.log)(format!(
            "at=info {} dyno={dyno} connect={}ms service={}ms status={} bytes={bytes}",
            self.common(),
            connect.as_millis(),
            started.elapsed().as_millis(),
            status.as_u16()
        ));
    }

    fn error(
        &self,
        code: &str,
        desc: &str,
        dyno: &str,
        started: Instant,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        (self.log)(format!(
            "at=error code={code} desc=\"{desc}\" {} dyno={dyno} connect=0ms service={}ms status={} bytes=0",
            self.common(),
            started.elapsed().as_millis(),
            status.as_u16()
        ));
        page(
            status,
            "Application error",
            &format!("{desc} ({code}). If you are the app's owner, `crew logs` says more."),
        )
    }
}

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
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

/// Drops hop-by-hop headers (keeping an upgrade's) and adds the forwarding ones.
fn prepare_headers(headers: &mut HeaderMap, client: SocketAddr, port: u16, request_id: &str) {
    if !is_upgrade(headers) {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
    }
    let ip = client.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {ip}"),
        None => ip,
    };
    for (name, value) in [
        ("x-forwarded-for", forwarded_for),
        ("x-forwarded-proto", "http".to_string()),
        ("x-forwarded-port", port.to_string()),
        ("x-request-id", request_id.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
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

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// A small HTML error page, as Heroku serves one.
fn page(status: StatusCode, title: &str, text: &str) -> Response<ProxyBody> {
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    let mut response = Response::new(
        Full::new(Bytes::from(html))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// What happens once a response body has been passed on: the access line, the
/// connection back to the pool, the in-flight count down.
struct Done {
    line: AccessLine,
    dyno: String,
    connect: Duration,
    started: Instant,
    status: StatusCode,
    _guard: InFlightGuard,
    sender: Option<(Pool, u16, Sender)>,
}

/// A dyno's response body on its way to the client.
struct Tracked {
    inner: Incoming,
    bytes: u64,
    done: Option<Done>,
}

impl Tracked {
    fn finish(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            done.line.info(
                &done.dyno,
                done.connect,
                done.started,
                done.status,
                self.bytes,
            );
            // Only a connection whose response was read to the end can take
            // another request.
            if complete && let Some((pool, port, sender)) = done.sender {
                pool.give(port, sender);
            }
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}
