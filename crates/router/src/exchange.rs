//! One request and its response, relayed between a client connection and a
//! dyno connection by the client connection's task.
//!
//! The request's head is rewritten into `Client::out`, with as much of its
//! body as has arrived, and goes to the dyno in one write. The response's head
//! goes back as it came, with the body bytes already read, in one write too,
//! unless it has hop-by-hop headers to drop. What does not fit is relayed as
//! it comes. A request whose whole body went in that first write can be sent
//! again on a new connection when a kept-alive one turns out to be closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use crew_engine::{DynoState, RequestGuard, WebBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::access::AccessLine;
use crate::http1::{
    self, Forwarding, Framing, HeadError, READ_SIZE, Remaining, RequestHead, ResponseHead,
};
use crate::pool::{self, DynoConnection};
use crate::{AppRoute, ConnectionSlot, Router, Routes};

/// A client's connection: what has been read from it and not used, and the
/// buffer the router writes to it and to dynos from.
pub(crate) struct Client {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    pub(crate) out: Vec<u8>,
    /// As `X-Forwarded-For` and the access line give it.
    pub(crate) ip: String,
}

impl Client {
    pub(crate) fn new(stream: TcpStream, ip: String) -> Client {
        Client {
            stream,
            buf: BytesMut::with_capacity(READ_SIZE),
            out: Vec::with_capacity(1024),
            ip,
        }
    }
}

impl Client {
    /// Closes the connection without losing the last response. Closing a
    /// socket with unread bytes (a refused request's body, a head the router
    /// stopped reading) resets it, and a reset can throw away the response the
    /// client has not read yet. So the router stops writing, then reads and
    /// drops what still comes, for a little while, before it closes.
    pub(crate) async fn linger(&mut self) {
        const LINGER: Duration = Duration::from_secs(2);
        const AT_MOST: usize = 1 << 20;
        let _ = self.stream.shutdown().await;
        let _ = tokio::time::timeout(LINGER, async {
            let mut dropped = 0;
            let mut scratch = [0; 4096];
            while dropped < AT_MOST {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => dropped += n,
                }
            }
        })
        .await;
    }
}

/// Whether a client connection can take another request.
pub(crate) enum After {
    KeepAlive,
    Close,
}

/// A request head, once read: either the app's, ready for a dyno, or no app's.
enum Prepared {
    NoSuchApp {
        host: String,
        request: Unrelayed,
    },
    /// The app is in maintenance mode: the router answers.
    Maintenance {
        line: AccessLine,
        request: Unrelayed,
    },
    Proxy(Proxy),
}

/// A request the router answers itself with a page, without reading its body.
struct Unrelayed {
    framing: Framing,
    keep_alive: bool,
    head_request: bool,
    len: usize,
}

impl Unrelayed {
    fn of(head: &RequestHead<'_, '_>) -> Unrelayed {
        Unrelayed {
            framing: head.framing,
            keep_alive: head.keep_alive,
            head_request: head.is_head(),
            len: head.len,
        }
    }
}

struct Proxy {
    route: AppRoute,
    line: AccessLine,
    framing: Framing,
    keep_alive: bool,
    /// HTTP/1.1 to the dyno: only then may its connection be kept.
    http11: bool,
    upgrade: bool,
    expect_continue: bool,
    head_request: bool,
    /// GET, HEAD, OPTIONS, TRACE, PUT or DELETE: sending it twice does what
    /// sending it once does (RFC 9110, 9.2.2).
    idempotent: bool,
    len: usize,
}

/// Writes the router's own page for a request whose body it did not read, so
/// the connection is kept only when there was none. `page` is the status,
/// its reason, the page's title and text.
async fn answer_with_page(
    client: &mut Client,
    request: Unrelayed,
    (status, reason, title, text): (u16, &str, &str, &str),
) -> After {
    client.buf.advance(request.len);
    let close = !request.keep_alive || request.framing != Framing::Empty;
    client.out.clear();
    http1::page(
        &mut client.out,
        status,
        reason,
        title,
        text,
        request.head_request,
        close,
    );
    match client.stream.write_all(&client.out).await {
        Ok(()) if !close => After::KeepAlive,
        _ => After::Close,
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

/// The most dynos, or connections, one request is sent to: a dyno that
/// closes the connection without an answer (stopped, crashed, or closing a
/// kept connection) has the request sent to another when that is safe.
const ATTEMPTS: usize = 3;

/// How a request failed on its way to a dyno, and whose fault it was.
enum SendError {
    /// The dyno closed or broke the connection without a response (H13).
    Dyno,
    /// The dyno sent something that is not an HTTP response (H17).
    BadResponse,
    /// The client went away, or sent a body that is not valid.
    Client,
    /// The client stopped sending its request's body (H28).
    ClientIdle,
}

/// A dyno picked for a request, and its connection.
struct Picked {
    connection: DynoConnection,
    list: Arc<Vec<WebBackend>>,
    index: usize,
    /// The dyno's count of requests under way, entered for this one.
    counted: RequestGuard,
    connect: Duration,
    pooled: bool,
}

impl<R: Routes> Router<R> {
    /// Serves one client connection's requests, one after another; `slot`
    /// counts it open until it ends.
    pub(crate) async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        slot: ConnectionSlot,
    ) {
        let _slot = slot;
        let _ = stream.set_nodelay(true);
        let mut client = Client::new(stream, peer.ip().to_string());
        while let After::KeepAlive = self.exchange(&mut client).await {}
        client.linger().await;
    }

    /// Reads a request from `client`, relays it and its response; says
    /// whether the connection may take another.
    pub(crate) async fn exchange(&self, client: &mut Client) -> After {
        // The whole head within the idle limit, so a client trickling a byte
        // at a time cannot hold the connection for good.
        let head_deadline = tokio::time::Instant::now() + self.config.idle_timeout;
        let prepared = loop {
            let parsed = http1::parse_request(&client.buf, |head| {
                self.prepare(head, &client.ip, &mut client.out)
            });
            match parsed {
                Ok(Some(prepared)) => break prepared,
                // A kept connection with nothing to say, or a head that
                // stopped halfway, is closed once idle for too long.
                Ok(None) => match read_within(
                    &mut client.stream,
                    &mut client.buf,
                    head_deadline.saturating_duration_since(tokio::time::Instant::now()),
                )
                .await
                {
                    Ok(0) | Err(_) => return After::Close,
                    Ok(_) => {}
                },
                Err(HeadError::TooLarge) => {
                    let reason = "Request Header Fields Too Large";
                    return refuse(client, 431, reason, "The request's head is too large.").await;
                }
                Err(HeadError::Malformed(why)) => {
                    return refuse(client, 400, "Bad Request", why).await;
                }
            }
        };
        let started = Instant::now();
        match prepared {
            Prepared::NoSuchApp { host, request } => {
                let text = format!("There is no app at {host}.");
                let page = (404, "Not Found", "No such app", text.as_str());
                answer_with_page(client, request, page).await
            }
            Prepared::Maintenance { line, request } => {
                line.maintenance(started);
                let text = "This app is being worked on. Please try again in a little while.";
                let page = (503, "Service Unavailable", "Down for maintenance", text);
                answer_with_page(client, request, page).await
            }
            Prepared::Proxy(proxy) => {
                client.buf.advance(proxy.len);
                self.proxy(client, proxy, started).await
            }
        }
    }

    /// Routes a request head and writes it for the dyno into `out`, while the
    /// head is still borrowed from the connection's buffer.
    fn prepare(&self, head: &RequestHead<'_, '_>, ip: &str, out: &mut Vec<u8>) -> Prepared {
        out.clear();
        let host = head.host();
        let hostname = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(host.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(host)
        };
        let Some(route) = self.routes.route(&hostname) else {
            return Prepared::NoSuchApp {
                host: hostname.into_owned(),
                request: Unrelayed::of(head),
            };
        };
        let given = head
            .header("x-request-id")
            .filter(|v| !v.is_empty() && v.len() <= 200);
        let mut buffer = [0; uuid::fmt::Hyphenated::LENGTH];
        let (request_id, new_id) = match given {
            Some(id) => (id, None),
            None => {
                let id = new_request_id(&mut buffer);
                (id, Some(id))
            }
        };
        let line = AccessLine::new(
            route.log.clone(),
            head.method,
            head.path(),
            &hostname,
            request_id,
            ip,
        );
        if route.maintenance {
            return Prepared::Maintenance {
                line,
                request: Unrelayed::of(head),
            };
        }
        head.write_for_dyno(
            out,
            &Forwarding {
                client_ip: ip,
                port: &self.forwarded_port,
                new_request_id: new_id,
            },
        );
        Prepared::Proxy(Proxy {
            route,
            line,
            framing: head.framing,
            keep_alive: head.keep_alive,
            http11: head.minor == 1,
            upgrade: head.upgrade,
            expect_continue: head.expect_continue,
            head_request: head.is_head(),
            idempotent: matches!(
                head.method,
                "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
            ),
            len: head.len,
        })
    }

    async fn proxy(&self, client: &mut Client, proxy: Proxy, started: Instant) -> After {
        let Proxy {
            route,
            line,
            framing,
            keep_alive,
            http11,
            upgrade,
            expect_continue,
            head_request,
            idempotent,
            len: _,
        } = proxy;
        // The body's first bytes go with the head, when they are here already.
        let mut request_body = Remaining::of(framing);
        let Ok(n) = request_body.take(&client.buf) else {
            line.error("H18", "Server Request Interrupted", "", started, 400);
            return refuse(client, 400, "Bad Request", "a malformed chunked body").await;
        };
        client.out.extend_from_slice(&client.buf[..n]);
        client.buf.advance(n);
        // Only a request that is all in `out` can be sent a second time.
        let replayable = request_body.is_done();
        // After an error the connection is kept only if the request was read
        // to its end.
        let close_on_error = |body: &Remaining| !keep_alive || !body.is_done();

        let mut backends = route.backends;
        // The dynos this request failed on, in order.
        let mut failed: Vec<String> = Vec::new();
        let (mut dyno, list, index, connect, _counted, response) = loop {
            let picked = match self.pick(&mut backends, upgrade, started, &failed).await {
                Ok(picked) => picked,
                Err((code, desc, tried)) => {
                    line.error(code, desc, &tried, started, 503);
                    let close = close_on_error(&request_body);
                    return unavailable(client, code, desc, head_request, close).await;
                }
            };
            let Picked {
                connection: mut dyno,
                list,
                index,
                counted,
                connect,
                pooled,
            } = picked;
            let backend = &list[index];
            let mut answered = false;
            let sent = tokio::time::timeout(
                self.config.request_timeout,
                self.send_once(
                    client,
                    &mut dyno,
                    &mut request_body,
                    expect_continue,
                    head_request,
                    &mut answered,
                ),
            )
            .await;
            match sent {
                Ok(Ok(response)) => break (dyno, list, index, connect, counted, response),
                // Safe to send again: the whole request is here to send,
                // nothing of a response went to the client, and either the
                // method is idempotent or the dyno closed a kept connection
                // (which it does before reading a request, not after).
                Ok(Err(SendError::Dyno))
                    if replayable
                        && !answered
                        && (idempotent || pooled)
                        && failed.len() + 1 < ATTEMPTS =>
                {
                    failed.push(backend.name.clone());
                    continue;
                }
                Ok(Err(SendError::Client)) => return After::Close,
                Ok(Err(SendError::ClientIdle)) => {
                    line.error("H28", "Client Connection Idle", &backend.name, started, 499);
                    return After::Close;
                }
                Ok(Err(SendError::Dyno)) => {
                    let desc = "Connection closed without response";
                    line.error("H13", desc, &backend.name, started, 503);
                    let close = close_on_error(&request_body);
                    return unavailable(client, "H13", desc, head_request, close).await;
                }
                Ok(Err(SendError::BadResponse)) => {
                    let desc = "Bad response from the app";
                    line.error("H17", desc, &backend.name, started, 503);
                    let close = close_on_error(&request_body);
                    return unavailable(client, "H17", desc, head_request, close).await;
                }
                Err(_) => {
                    let desc = "Request timeout";
                    line.error("H12", desc, &backend.name, started, 503);
                    let close = close_on_error(&request_body);
                    return unavailable(client, "H12", desc, head_request, close).await;
                }
            }
        };
        let backend = &list[index];

        if upgrade && response.status == 101 {
            line.info(&backend.name, connect, started, 101, 0);
            // The 101 and anything after it go to the client, and what the
            // client sent early goes to the dyno; then bytes flow both ways.
            let early = client.buf.split();
            if client.stream.write_all(&dyno.buf).await.is_ok()
                && dyno.stream.write_all(&early).await.is_ok()
            {
                let _ = tokio::io::copy_bidirectional(&mut client.stream, &mut dyno.stream).await;
            }
            return After::Close;
        }

        let close = !keep_alive || response.framing == Framing::UntilClose;
        let idle = self.config.idle_timeout;
        let (bytes, relayed) = relay_response(client, &mut dyno, &response, close, idle).await;
        let complete = relayed == Relayed::Complete;
        if relayed == Relayed::DynoIdle {
            line.error("H15", "Idle connection", &backend.name, started, 503);
        } else {
            line.info(&backend.name, connect, started, response.status, bytes);
        }
        // A connection is only kept after a response read to its end, with
        // nothing after it.
        // Nor is one to a dyno that has left the rotation meanwhile: it gets
        // no new request, so the connection would only wait to be closed.
        if complete
            && response.reusable
            && http11
            && !upgrade
            && dyno.buf.is_empty()
            && crate::still_up(&backends.borrow(), &list, index)
        {
            pool::give(backend, dyno);
        }
        if complete && !close {
            After::KeepAlive
        } else {
            After::Close
        }
    }

    /// Sends the request in `client.out` and the rest of its body, and reads
    /// the response's head, passing any interim (1xx) responses on; `answered`
    /// says whether anything went to the client.
    async fn send_once(
        &self,
        client: &mut Client,
        dyno: &mut DynoConnection,
        request_body: &mut Remaining,
        expect_continue: bool,
        head_request: bool,
        answered: &mut bool,
    ) -> Result<ResponseHead, SendError> {
        dyno.stream
            .write_all(&client.out)
            .await
            .map_err(|_| SendError::Dyno)?;
        if !request_body.is_done() {
            // The router, not the dyno, tells the client to go on: the dyno
            // never saw the `Expect`.
            if expect_continue {
                *answered = true;
                client
                    .stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .map_err(|_| SendError::Client)?;
            }
            while !request_body.is_done() {
                if client.buf.is_empty() {
                    match read_within(
                        &mut client.stream,
                        &mut client.buf,
                        self.config.idle_timeout,
                    )
                    .await
                    {
                        Ok(0) => return Err(SendError::Client),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                            return Err(SendError::ClientIdle);
                        }
                        Err(_) => return Err(SendError::Client),
                    }
                }
                let n = request_body
                    .take(&client.buf)
                    .map_err(|_| SendError::Client)?;
                dyno.stream
                    .write_all(&client.buf[..n])
                    .await
                    .map_err(|_| SendError::Dyno)?;
                client.buf.advance(n);
            }
        }
        loop {
            match http1::parse_response(&dyno.buf, head_request) {
                Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                    *answered = true;
                    client
                        .stream
                        .write_all(&dyno.buf[..head.len])
                        .await
                        .map_err(|_| SendError::Client)?;
                    dyno.buf.advance(head.len);
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => match read_more(&mut dyno.stream, &mut dyno.buf).await {
                    Ok(0) | Err(_) => return Err(SendError::Dyno),
                    Ok(_) => {}
                },
                Err(_) => return Err(SendError::BadResponse),
            }
        }
    }

    /// An up dyno and a connection to it, waiting while the app boots; or the
    /// Heroku code, description and the dynos tried when there is none. The
    /// dynos in `failed` are tried last. A dyno that left the rotation while
    /// it was being connected to is given up for one still in it.
    async fn pick(
        &self,
        backends: &mut watch::Receiver<Arc<Vec<WebBackend>>>,
        upgrade: bool,
        started: Instant,
        failed: &[String],
    ) -> Result<Picked, (&'static str, &'static str, String)> {
        let deadline = started + self.config.boot_wait;
        loop {
            let list = backends.borrow_and_update().clone();
            if list.iter().any(|b| b.state == DynoState::Up) {
                let connected = match self.connect(&list, upgrade, failed).await {
                    Ok(connected) => connected,
                    Err(tried) => return Err(("H19", "Backend connection timeout", tried)),
                };
                // Counted first, then checked: the engine, which takes a dyno
                // out of the list before it waits for its count to be zero,
                // either sees this request or this request sees the change.
                if !crate::still_up(&backends.borrow(), &list, connected.index) {
                    if Instant::now() >= deadline {
                        return Err(("H20", "App boot timeout", String::new()));
                    }
                    continue;
                }
                return Ok(Picked {
                    connection: connected.connection,
                    list,
                    index: connected.index,
                    counted: connected.counted,
                    connect: connected.connect,
                    pooled: connected.pooled,
                });
            }
            if !list.iter().any(|b| b.state == DynoState::Starting) {
                return Err(if list.is_empty() {
                    ("H14", "No web processes running", String::new())
                } else {
                    ("H10", "App crashed", String::new())
                });
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero()
                || tokio::time::timeout(wait, backends.changed())
                    .await
                    .is_err()
            {
                return Err(("H20", "App boot timeout", String::new()));
            }
        }
    }
}

/// How far a response got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relayed {
    Complete,
    /// Either side broke off, or the dyno's framing was wrong.
    Broken,
    /// The dyno went silent in the middle of the body (H15).
    DynoIdle,
}

/// Passes the response on: its head (without hop-by-hop headers, and saying
/// `Connection: close` when `close`), then its body as it comes, giving up on
/// a dyno silent for `idle`. Gives the body's bytes, and how far it got.
async fn relay_response(
    client: &mut Client,
    dyno: &mut DynoConnection,
    response: &ResponseHead,
    close: bool,
    idle: Duration,
) -> (u64, Relayed) {
    let mut body = Remaining::of(response.framing);
    let Ok(first) = body.take(&dyno.buf[response.len..]) else {
        return (0, Relayed::Broken);
    };
    let end = response.len + first;
    let written = if response.hop_by_hop || close {
        client.out.clear();
        http1::rewrite_response(&dyno.buf[..response.len], close, &mut client.out);
        client.out.extend_from_slice(&dyno.buf[response.len..end]);
        client.stream.write_all(&client.out).await
    } else {
        // The common case: the dyno's bytes as they are, in one write.
        client.stream.write_all(&dyno.buf[..end]).await
    };
    dyno.buf.advance(end);
    if written.is_err() {
        return (0, Relayed::Broken);
    }
    let mut bytes = first as u64;
    while !body.is_done() {
        match read_within(&mut dyno.stream, &mut dyno.buf, idle).await {
            // A body that ends with the connection has ended.
            Ok(0) if matches!(body, Remaining::UntilClose) => break,
            Ok(0) => return (bytes, Relayed::Broken),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return (bytes, Relayed::DynoIdle);
            }
            Err(_) => return (bytes, Relayed::Broken),
        }
        let Ok(n) = body.take(&dyno.buf) else {
            return (bytes, Relayed::Broken);
        };
        if client.stream.write_all(&dyno.buf[..n]).await.is_err() {
            return (bytes, Relayed::Broken);
        }
        dyno.buf.advance(n);
        bytes += n as u64;
    }
    (bytes, Relayed::Complete)
}

/// The 503 page for a request no dyno answered.
async fn unavailable(
    client: &mut Client,
    code: &str,
    desc: &str,
    head_request: bool,
    close: bool,
) -> After {
    client.out.clear();
    http1::page(
        &mut client.out,
        503,
        "Service Unavailable",
        "Application error",
        &format!("{desc} ({code}). If you are the app's owner, `crew logs` says more."),
        head_request,
        close,
    );
    match client.stream.write_all(&client.out).await {
        Ok(()) if !close => After::KeepAlive,
        _ => After::Close,
    }
}

/// A page for a request the router refuses; the connection closes after it.
async fn refuse(client: &mut Client, status: u16, reason: &str, text: &str) -> After {
    client.out.clear();
    http1::page(&mut client.out, status, reason, reason, text, false, true);
    let _ = client.stream.write_all(&client.out).await;
    After::Close
}

/// [`read_more`], failing with `TimedOut` once the peer has been silent for
/// `idle`.
async fn read_within(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    idle: Duration,
) -> std::io::Result<usize> {
    match tokio::time::timeout(idle, read_more(stream, buf)).await {
        Ok(read) => read,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Reads what the peer has sent into `buf`, making room first when needed.
async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    stream.read_buf(buf).await
}
