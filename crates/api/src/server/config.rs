//! Config vars: the app's environment, read and changed as one JSON object.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};

use super::service::{ApiService, Reply};

pub(super) async fn config<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<BTreeMap<String, String>>> {
    b.config(&app).await.map(Json)
}

pub(super) async fn update_config<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<BTreeMap<String, Option<String>>>, JsonRejection>,
) -> Reply<Json<BTreeMap<String, String>>> {
    let Json(changes) = body?;
    b.update_config(&app, changes).await.map(Json)
}
