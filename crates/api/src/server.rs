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

use crate::types::{
    Dyno, DynoCreate, ErrorBody, FormationEntry, FormationUpdate, LogQuery, LogSession,
    LogSessionCreate,
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
) -> Reply<(StatusCode, Json<Dyno>)> {
    let Json(request) = body?;
    let dyno = b.create_dyno(&app, request).await?;
    Ok((StatusCode::CREATED, Json(dyno)))
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
