//! git's smart HTTP, `/{app}.git/...`: handed whole to [`ApiService::git`],
//! which a server answers with [`crate::git`] (`git http-backend`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::service::ApiService;

pub(super) async fn git<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(repo): Path<String>,
    request: axum::extract::Request,
) -> Response {
    match repo.strip_suffix(".git") {
        Some(app) => b.git(app, request).await,
        None => ApiError::not_found("no such route").into_response(),
    }
}
