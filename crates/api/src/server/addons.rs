//! Add-ons and their attachments, which crew has none of: empty lists, so that
//! Heroku's CLI (`apps:info`, `addons`) works.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};

use super::service::{ApiService, Reply};

/// An empty list: what crew has none of at all (add-ons).
pub(super) async fn nothing() -> Json<Vec<serde_json::Value>> {
    Json(Vec::new())
}

/// crew has no add-ons (nor attachments of them): an empty list, for an app
/// that exists.
pub(super) async fn no_addons<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<serde_json::Value>>> {
    b.app(&app).await?;
    Ok(Json(Vec::new()))
}
