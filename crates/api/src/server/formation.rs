//! The formation: how many dynos of each process type run, at what size, and
//! scaling it, whole or one type at a time.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};

use super::error::ApiError;
use super::service::{ApiService, Reply};
use crate::types::{
    FormationChange, FormationEntry, FormationTypeUpdate, FormationUpdate, Quantity,
};

pub(super) async fn formation<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<FormationEntry>>> {
    b.formation(&app).await.map(Json)
}

pub(super) async fn scale<B: ApiService>(
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

pub(super) async fn formation_type<B: ApiService>(
    State(b): State<Arc<B>>,
    Path((app, process_type)): Path<(String, String)>,
) -> Reply<Json<FormationEntry>> {
    let formation = b.formation(&app).await?;
    find_type(formation, &app, &process_type).map(Json)
}

/// `PATCH /apps/{app}/formation/{type}` with `{"quantity": …, "size": …}`.
pub(super) async fn scale_type<B: ApiService>(
    State(b): State<Arc<B>>,
    Path((app, process_type)): Path<(String, String)>,
    body: Result<Json<FormationTypeUpdate>, JsonRejection>,
) -> Reply<Json<FormationEntry>> {
    let Json(update) = body?;
    let change = FormationChange {
        process_type: process_type.clone(),
        quantity: update.quantity.unwrap_or(Quantity::Add(0)),
        size: update.size,
    };
    let formation = b
        .scale(
            &app,
            FormationUpdate {
                updates: vec![change],
            },
        )
        .await?;
    find_type(formation, &app, &process_type).map(Json)
}

fn find_type(
    formation: Vec<FormationEntry>,
    app: &str,
    process_type: &str,
) -> Reply<FormationEntry> {
    formation
        .into_iter()
        .find(|f| f.process_type == process_type)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Couldn't find that formation: {app} has no process type `{process_type}`"
            ))
        })
}
