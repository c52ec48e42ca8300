//! Apps: list, create, show, change (rename, maintenance) and destroy, and the
//! app's collaborators, of which crew has none.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::ApiError;
use super::service::{ApiService, Reply};
use crate::types::{AppCreate, AppInfo, AppUpdate};

pub(super) async fn list_apps<B: ApiService>(State(b): State<Arc<B>>) -> Reply<Json<Vec<AppInfo>>> {
    b.apps().await.map(Json)
}

pub(super) async fn create_app<B: ApiService>(
    State(b): State<Arc<B>>,
    body: Result<Json<AppCreate>, JsonRejection>,
) -> Reply<(StatusCode, Json<AppInfo>)> {
    let Json(request) = body?;
    Ok((StatusCode::CREATED, Json(b.create_app(request).await?)))
}

pub(super) async fn app_info<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<AppInfo>> {
    b.app(&app).await.map(Json)
}

pub(super) async fn destroy_app<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<AppInfo>> {
    b.destroy_app(&app).await.map(Json)
}

pub(super) async fn update_app<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Reply<Json<AppInfo>> {
    const TAKES: &str = "an app takes `name`, `maintenance` and `build_stack` only";
    let Json(body) = body.map_err(|e| ApiError::invalid(format!("{}: {TAKES}", e.body_text())))?;
    // An object only: serde would also read a struct from a list.
    if !body.is_object() {
        return Err(ApiError::invalid(format!(
            "the body must be an object: {TAKES}"
        )));
    }
    let update: AppUpdate =
        serde_json::from_value(body).map_err(|e| ApiError::invalid(format!("{e}: {TAKES}")))?;
    b.update_app(&app, update).await.map(Json)
}

/// Everyone with the token may do everything: no collaborators to list.
pub(super) async fn no_collaborators<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<serde_json::Value>>> {
    b.app(&app).await?;
    Ok(Json(Vec::new()))
}
