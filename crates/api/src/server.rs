//! Routes, generic over whatever answers them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::Stream;

use std::collections::BTreeMap;

use crate::types::{
    AppCreate, AppInfo, BuildCreate, BuildInfo, DomainCreate, DomainInfo, Dyno, DynoCreate,
    ErrorBody, FormationEntry, FormationUpdate, LogQuery, LogSession, LogSessionCreate,
    ReleaseCreate, ReleaseInfo,
};

/// Lines of log text, each ending in `\n`.
pub type LogStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// An error as the API reports it: a status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub id: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            id: "not_found",
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            id: "invalid_params",
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            id: "bad_request",
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            id: "unavailable",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            id: self.id.to_string(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        ApiError::bad_request(format!("malformed request body: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request(format!("malformed query: {}", rejection.body_text()))
    }
}

type Reply<T> = Result<T, ApiError>;

/// What answers the API: the local runner's formation, or the server's apps.
pub trait Backend: Send + Sync + 'static {
    fn dynos(&self, app: &str) -> impl Future<Output = Reply<Vec<Dyno>>> + Send;
    fn create_dyno(
        &self,
        app: &str,
        request: DynoCreate,
    ) -> impl Future<Output = Reply<Dyno>> + Send;
    /// Restarts one dyno or type, or every dyno with `None`.
    fn restart(&self, app: &str, target: Option<String>) -> impl Future<Output = Reply<()>> + Send;
    fn stop(&self, app: &str, target: String) -> impl Future<Output = Reply<()>> + Send;
    fn formation(&self, app: &str) -> impl Future<Output = Reply<Vec<FormationEntry>>> + Send;
    fn scale(
        &self,
        app: &str,
        update: FormationUpdate,
    ) -> impl Future<Output = Reply<Vec<FormationEntry>>> + Send;
    fn logs(&self, app: &str, query: LogQuery) -> impl Future<Output = Reply<LogStream>> + Send;

    // What only a server has; a local formation answers that it has none.
    fn apps(&self) -> impl Future<Output = Reply<Vec<AppInfo>>> + Send {
        async { Err(local_only()) }
    }
    fn create_app(&self, _request: AppCreate) -> impl Future<Output = Reply<AppInfo>> + Send {
        async { Err(local_only()) }
    }
    fn app(&self, _app: &str) -> impl Future<Output = Reply<AppInfo>> + Send {
        async { Err(local_only()) }
    }
    fn destroy_app(&self, _app: &str) -> impl Future<Output = Reply<AppInfo>> + Send {
        async { Err(local_only()) }
    }
    fn config(&self, _app: &str) -> impl Future<Output = Reply<BTreeMap<String, String>>> + Send {
        async { Err(local_only()) }
    }
    /// `null` values unset.
    fn update_config(
        &self,
        _app: &str,
        _changes: BTreeMap<String, Option<String>>,
    ) -> impl Future<Output = Reply<BTreeMap<String, String>>> + Send {
        async { Err(local_only()) }
    }
    fn releases(&self, _app: &str) -> impl Future<Output = Reply<Vec<ReleaseInfo>>> + Send {
        async { Err(local_only()) }
    }
    fn release(
        &self,
        _app: &str,
        _release: &str,
    ) -> impl Future<Output = Reply<ReleaseInfo>> + Send {
        async { Err(local_only()) }
    }
    fn rollback(
        &self,
        _app: &str,
        _request: ReleaseCreate,
    ) -> impl Future<Output = Reply<ReleaseInfo>> + Send {
        async { Err(local_only()) }
    }
    fn domains(&self, _app: &str) -> impl Future<Output = Reply<Vec<DomainInfo>>> + Send {
        async { Err(local_only()) }
    }
    fn add_domain(
        &self,
        _app: &str,
        _request: DomainCreate,
    ) -> impl Future<Output = Reply<DomainInfo>> + Send {
        async { Err(local_only()) }
    }
    fn remove_domain(&self, _app: &str, _hostname: &str) -> impl Future<Output = Reply<()>> + Send {
        async { Err(local_only()) }
    }
    fn builds(&self, _app: &str) -> impl Future<Output = Reply<Vec<BuildInfo>>> + Send {
        async { Err(local_only()) }
    }
    /// Builds and releases; the stream is the build's output, ending with a
    /// [`crate::types::BUILD_RESULT_PREFIX`] line.
    fn build(
        &self,
        _app: &str,
        _request: BuildCreate,
    ) -> impl Future<Output = Reply<LogStream>> + Send {
        async { Err(local_only()) }
    }
    /// Runs a one-off attached: its output as it comes, then a
    /// [`crate::types::RUN_EXIT_PREFIX`] line with its exit code.
    fn run_attached(
        &self,
        _app: &str,
        _request: DynoCreate,
    ) -> impl Future<Output = Reply<LogStream>> + Send {
        async { Err(local_only()) }
    }
    /// git's smart HTTP for `/{app}.git/...`.
    fn git(
        &self,
        _app: &str,
        _request: axum::extract::Request,
    ) -> impl Future<Output = Response> + Send {
        async { local_only().into_response() }
    }
}

fn local_only() -> ApiError {
    ApiError::not_found("a local `crew start` has no such route; it is for `crew server`")
}

/// The routes, answered by `backend`.
pub fn router<B: Backend>(backend: Arc<B>) -> axum::Router {
    axum::Router::new()
        .route(
            "/apps/{app}/dynos",
            get(list_dynos::<B>)
                .post(create_dyno::<B>)
                .delete(restart_all::<B>),
        )
        .route(
            "/apps/{app}/dynos/{dyno}",
            get(dyno_info::<B>).delete(restart_one::<B>),
        )
        .route("/apps/{app}/dynos/{dyno}/actions/stop", post(stop::<B>))
        .route(
            "/apps/{app}/formation",
            get(formation::<B>).patch(scale::<B>),
        )
        .route("/apps/{app}/log-sessions", post(log_session::<B>))
        .route("/apps", get(list_apps::<B>).post(create_app::<B>))
        .route("/apps/{app}", get(app_info::<B>).delete(destroy_app::<B>))
        .route(
            "/apps/{app}/config-vars",
            get(config::<B>).patch(update_config::<B>),
        )
        .route(
            "/apps/{app}/releases",
            get(releases::<B>).post(rollback::<B>),
        )
        .route("/apps/{app}/releases/{release}", get(release_info::<B>))
        .route("/apps/{app}/builds", get(builds::<B>).post(build::<B>))
        .route(
            "/apps/{app}/domains",
            get(domains::<B>).post(add_domain::<B>),
        )
        .route(
            "/apps/{app}/domains/{hostname}",
            axum::routing::delete(remove_domain::<B>),
        )
        .route("/{repo}/info/refs", get(git::<B>))
        .route("/{repo}/git-receive-pack", post(git::<B>))
        .route("/{repo}/git-upload-pack", post(git::<B>))
        .route("/apps/{app}/log-stream", get(log_stream::<B>))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(backend)
}

async fn list_dynos<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<Dyno>>> {
    b.dynos(&app).await.map(Json)
}

async fn dyno_info<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, dyno)): Path<(String, String)>,
) -> Reply<Json<Dyno>> {
    b.dynos(&app)
        .await?
        .into_iter()
        .find(|d| d.name == dyno || d.id == dyno)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no such dyno: {dyno}")))
}

async fn create_dyno<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<DynoCreate>, JsonRejection>,
) -> Reply<Response> {
    let Json(request) = body?;
    if request.attach == Some(true) && request.pid.is_none() {
        let stream = b.run_attached(&app, request).await?;
        return Ok(text_stream(stream));
    }
    let dyno = b.create_dyno(&app, request).await?;
    Ok((StatusCode::CREATED, Json(dyno)).into_response())
}

fn text_stream(stream: LogStream) -> Response {
    let body = Body::from_stream(futures_util::StreamExt::map(stream, |chunk| {
        Ok::<_, std::convert::Infallible>(chunk)
    }));
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn restart_all<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<serde_json::Value>> {
    b.restart(&app, None).await?;
    Ok(Json(serde_json::json!({})))
}

async fn restart_one<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, dyno)): Path<(String, String)>,
) -> Reply<Json<serde_json::Value>> {
    b.restart(&app, Some(dyno)).await?;
    Ok(Json(serde_json::json!({})))
}

async fn stop<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, dyno)): Path<(String, String)>,
) -> Reply<Json<serde_json::Value>> {
    b.stop(&app, dyno).await?;
    Ok(Json(serde_json::json!({})))
}

async fn formation<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<FormationEntry>>> {
    b.formation(&app).await.map(Json)
}

async fn scale<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<FormationUpdate>, JsonRejection>,
) -> Reply<Json<Vec<FormationEntry>>> {
    let Json(update) = body?;
    if update.updates.is_empty() {
        return Err(ApiError::invalid("no updates given"));
    }
    b.scale(&app, update).await.map(Json)
}

async fn log_session<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<LogSessionCreate>, JsonRejection>,
) -> Reply<(StatusCode, Json<LogSession>)> {
    let Json(request) = body?;
    // Checks that the app exists before handing out a URL.
    b.formation(&app).await?;
    let mut query = Vec::new();
    if let Some(dyno) = &request.dyno {
        query.push(format!("dyno={}", encode(dyno)));
    }
    if let Some(lines) = request.lines {
        query.push(format!("lines={lines}"));
    }
    if request.tail == Some(true) {
        query.push("tail=true".to_string());
    }
    if let Some(source) = &request.source {
        query.push(format!("source={}", encode(source)));
    }
    let url = format!("/apps/{}/log-stream?{}", encode(&app), query.join("&"));
    Ok((
        StatusCode::CREATED,
        Json(LogSession {
            id: url.clone(),
            logplex_url: url,
            created_at: String::new(),
            updated_at: String::new(),
        }),
    ))
}

async fn log_stream<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Reply<Response> {
    let Query(query) = query?;
    let stream = b.logs(&app, query).await?;
    let body = Body::from_stream(futures_util::StreamExt::map(stream, |chunk| {
        Ok::<_, std::convert::Infallible>(chunk)
    }));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn list_apps<B: Backend>(State(b): State<Arc<B>>) -> Reply<Json<Vec<AppInfo>>> {
    b.apps().await.map(Json)
}

async fn create_app<B: Backend>(
    State(b): State<Arc<B>>,
    body: Result<Json<AppCreate>, JsonRejection>,
) -> Reply<(StatusCode, Json<AppInfo>)> {
    let Json(request) = body?;
    Ok((StatusCode::CREATED, Json(b.create_app(request).await?)))
}

async fn app_info<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<AppInfo>> {
    b.app(&app).await.map(Json)
}

async fn destroy_app<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<AppInfo>> {
    b.destroy_app(&app).await.map(Json)
}

async fn config<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<BTreeMap<String, String>>> {
    b.config(&app).await.map(Json)
}

async fn update_config<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<BTreeMap<String, Option<String>>>, JsonRejection>,
) -> Reply<Json<BTreeMap<String, String>>> {
    let Json(changes) = body?;
    b.update_config(&app, changes).await.map(Json)
}

async fn releases<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<ReleaseInfo>>> {
    b.releases(&app).await.map(Json)
}

async fn release_info<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, release)): Path<(String, String)>,
) -> Reply<Json<ReleaseInfo>> {
    b.release(&app, &release).await.map(Json)
}

async fn rollback<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<ReleaseCreate>, JsonRejection>,
) -> Reply<(StatusCode, Json<ReleaseInfo>)> {
    let Json(request) = body?;
    Ok((StatusCode::CREATED, Json(b.rollback(&app, request).await?)))
}

async fn domains<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<DomainInfo>>> {
    b.domains(&app).await.map(Json)
}

async fn add_domain<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<DomainCreate>, JsonRejection>,
) -> Reply<(StatusCode, Json<DomainInfo>)> {
    let Json(request) = body?;
    Ok((
        StatusCode::CREATED,
        Json(b.add_domain(&app, request).await?),
    ))
}

async fn remove_domain<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, hostname)): Path<(String, String)>,
) -> Reply<Json<serde_json::Value>> {
    b.remove_domain(&app, &hostname).await?;
    Ok(Json(serde_json::json!({})))
}

async fn builds<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<BuildInfo>>> {
    b.builds(&app).await.map(Json)
}

async fn build<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<BuildCreate>, JsonRejection>,
) -> Reply<Response> {
    let Json(request) = body?;
    let stream = b.build(&app, request).await?;
    let body = Body::from_stream(futures_util::StreamExt::map(stream, |chunk| {
        Ok::<_, std::convert::Infallible>(chunk)
    }));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn git<B: Backend>(
    State(b): State<Arc<B>>,
    Path(repo): Path<String>,
    request: axum::extract::Request,
) -> Response {
    match repo.strip_suffix(".git") {
        Some(app) => b.git(app, request).await,
        None => ApiError::not_found("no such route").into_response(),
    }
}

/// Requires the API token on every request: `Authorization: Bearer TOKEN`, or
/// HTTP Basic with the token as the password (what git sends). A refusal is a
/// 401 with a JSON body and a Basic challenge, so git asks for credentials.
pub fn require_token(router: axum::Router, token: String) -> axum::Router {
    let token = Arc::new(token);
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let given = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(credential);
                if given.as_deref() == Some(token.as_str()) {
                    return next.run(request).await;
                }
                let mut response = ApiError {
                    status: StatusCode::UNAUTHORIZED,
                    id: "unauthorized",
                    message: String::from(
                        "Invalid credentials provided: use the server's API token (CREW_API_KEY)",
                    ),
                }
                .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Basic realm=\"crew\""),
                );
                response
            }
        },
    ))
}

/// The secret in an Authorization header: a bearer token, or a Basic password.
fn credential(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

/// Standard base64, enough for a Basic header.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Serves `router` on TCP until the task is dropped.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

/// Percent-encodes a query value; names here are short and mostly ASCII.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char);
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Serves `router` on a Unix socket until the task is dropped.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    router: axum::Router,
) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_bearer_and_basic() {
        assert_eq!(credential("Bearer abc").as_deref(), Some("abc"));
        // base64 of "crew:s3cret"
        assert_eq!(
            credential("Basic Y3JldzpzM2NyZXQ=").as_deref(),
            Some("s3cret")
        );
        assert_eq!(credential("Basic !!!"), None);
        assert_eq!(credential("Digest x"), None);
    }
}
