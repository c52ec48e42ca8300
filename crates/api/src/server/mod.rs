//! Routes, generic over whatever answers them.
//!
//! [`router`] is the route table: every path the API answers and the handler
//! for it, over any [`ApiService`]. Each resource's handlers have a file of their
//! own (`dynos.rs`, `releases.rs`, …), as pueue's daemon has one per message.
//! [`require_token`] wraps the routes for a server; [`serve_tcp`] and
//! [`serve_unix`] serve them.
//!
//! Invariants:
//! - Every route is in [`router`]; no handler file adds routes of its own, so
//!   this one table says what the API answers.
//! - The handler files import `service`, `error` and `auth`, never this file:
//!   the route table names the handlers and the imports point one way.
//! - Without the API token a server answers only the URLs `auth` lets
//!   through, each checked by its own secret or telling nothing private.
//!
//! Not here: the request and response bodies ([`crate::types`]), git's CGI
//! ([`crate::git`]), the attach framing ([`crate::attach`]).

mod account;
mod addons;
mod apps;
mod auth;
mod buildpacks;
mod builds;
mod config;
mod domains;
mod dynos;
mod error;
mod formation;
mod git;
mod log_session;
mod releases;
mod service;
mod stacks;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::routing::{delete, get, post, put};

pub use auth::require_token;
pub use error::ApiError;
pub use service::{ApiService, LogStream};

/// The routes, answered by `service`.
pub fn router<B: ApiService>(service: Arc<B>) -> axum::Router {
    axum::Router::new()
        .route("/account", get(account::account::<B>))
        .route(
            "/apps",
            get(apps::list_apps::<B>).post(apps::create_app::<B>),
        )
        .route("/users/{user}/apps", get(apps::list_apps::<B>))
        .route(
            "/apps/{app}",
            get(apps::app_info::<B>)
                .delete(apps::destroy_app::<B>)
                .patch(apps::update_app::<B>),
        )
        .route(
            "/apps/{app}/collaborators",
            get(apps::no_collaborators::<B>),
        )
        .route(
            "/apps/{app}/dynos",
            get(dynos::list_dynos::<B>)
                .post(dynos::create_dyno::<B>)
                .delete(dynos::restart_all::<B>),
        )
        .route(
            "/apps/{app}/dynos/{dyno}",
            get(dynos::dyno_info::<B>)
                .delete(dynos::restart_one::<B>)
                .post(dynos::run_inside::<B>),
        )
        .route(
            "/apps/{app}/dynos/{dyno}/actions/stop",
            post(dynos::stop::<B>),
        )
        // What Heroku's CLI calls to restart and stop a whole type.
        .route(
            "/apps/{app}/formations/{process_type}",
            delete(dynos::restart_one::<B>),
        )
        .route(
            "/apps/{app}/formations/{process_type}/actions/stop",
            post(dynos::stop::<B>),
        )
        .route(
            "/apps/{app}/formation",
            get(formation::formation::<B>).patch(formation::scale::<B>),
        )
        .route(
            "/apps/{app}/formation/{process_type}",
            get(formation::formation_type::<B>).patch(formation::scale_type::<B>),
        )
        .route(
            "/apps/{app}/log-sessions",
            post(log_session::log_session::<B>),
        )
        .route("/apps/{app}/log-stream", get(log_session::log_stream::<B>))
        .route(
            "/apps/{app}/config-vars",
            get(config::config::<B>).patch(config::update_config::<B>),
        )
        .route(
            "/apps/{app}/releases",
            get(releases::releases::<B>).post(releases::rollback::<B>),
        )
        .route(
            "/apps/{app}/releases/{release}",
            get(releases::release_info::<B>),
        )
        .route(
            "/apps/{app}/releases/{release}/config-vars",
            get(releases::release_config::<B>),
        )
        .route(
            "/release-outputs/{release}/{secret}",
            get(releases::release_output::<B>),
        )
        .route(
            "/apps/{app}/builds",
            get(builds::builds::<B>).post(builds::build::<B>),
        )
        .route("/sources", post(builds::create_source::<B>))
        .route("/sources/{id}", put(builds::upload_source::<B>))
        .route(
            "/apps/{app}/domains",
            get(domains::domains::<B>).post(domains::add_domain::<B>),
        )
        .route(
            "/apps/{app}/domains/{domain}",
            get(domains::domain::<B>).delete(domains::remove_domain::<B>),
        )
        .route(
            "/apps/{app}/sni-endpoints",
            get(domains::no_sni_endpoints::<B>),
        )
        .route(
            "/apps/{app}/buildpack-installations",
            get(buildpacks::buildpacks::<B>).put(buildpacks::set_buildpacks::<B>),
        )
        .route(
            "/buildpack-registry/buildpacks/{name}",
            get(buildpacks::registry_buildpack),
        )
        .route("/apps/{app}/addons", get(addons::no_addons::<B>))
        .route("/apps/{app}/addon-attachments", get(addons::no_addons::<B>))
        .route("/addons", get(addons::nothing))
        .route("/addon-attachments", get(addons::nothing))
        .route("/regions", get(stacks::regions))
        .route("/stacks", get(stacks::stacks))
        .route("/{repo}/info/refs", get(git::git::<B>))
        .route("/{repo}/git-receive-pack", post(git::git::<B>))
        .route("/{repo}/git-upload-pack", post(git::git::<B>))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::Extension(Arc::new(
            log_session::LogSessions::default(),
        )))
        .with_state(service)
}

/// Serves `router` on TCP until the task is dropped: plain HTTP, and with
/// `tls` TLS too on the same port. A TLS connection opens with a handshake
/// record (content type 0x16), which no HTTP request line starts with, so the
/// first byte tells them apart.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let rendezvous = crate::rendezvous::Rendezvous::default();
    let router = router.layer(axum::Extension(rendezvous.clone()));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or a connection reset before accept:
                // neither ends the server; a pause lets descriptors free up.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let rendezvous = rendezvous.clone();
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            match tokio::time::timeout(HANDSHAKE, stream.peek(&mut first)).await {
                Ok(Ok(1)) => {}
                _ => return,
            }
            let service = hyper_util::service::TowerToHyperService::new(router);
            let http = hyper::server::conn::http1::Builder::new();
            let served = if first[0] == 0x16 {
                let Ok(Ok(mut stream)) =
                    tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await
                else {
                    return;
                };
                // Over TLS the first line is an HTTP request or a
                // rendezvous secret (`heroku run`).
                let Ok(Some(start)) =
                    tokio::time::timeout(HANDSHAKE, first_line(&mut stream)).await
                else {
                    return;
                };
                if start
                    .first()
                    .copied()
                    .is_some_and(crate::rendezvous::looks_like_secret)
                {
                    let line = start.split(|b| *b == b'\n').next().unwrap_or_default();
                    rendezvous.serve(line, stream).await;
                    return;
                }
                let stream = Replayed {
                    start,
                    at: 0,
                    inner: stream,
                };
                http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
            } else {
                http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
            };
            // A client that hangs up mid-request is its own business.
            let _ = served;
        });
    }
}

/// Reads until the first `\n` (or 256 bytes, or the end): enough to tell a
/// rendezvous secret from a request. `None` when the client sent nothing.
async fn first_line<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut start = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !start.contains(&b'\n') && start.len() < 256 {
        let n = stream.read(&mut chunk[..256 - start.len()]).await.ok()?;
        if n == 0 {
            break;
        }
        start.extend_from_slice(&chunk[..n]);
    }
    (!start.is_empty()).then_some(start)
}

/// A stream whose first bytes were read already: they are read again first.
struct Replayed<S> {
    start: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.start.len() {
            let n = buf.remaining().min(self.start.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.start[at..at + n]);
            self.at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How long a connection may take to send its first byte and finish a TLS
/// handshake; a client that stalls longer is dropped.
const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `router` on a Unix socket until `shutdown` resolves, then lets open
/// requests finish.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
