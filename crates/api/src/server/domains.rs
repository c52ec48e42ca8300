//! Domains: the app's own hostname and its custom ones, listed, added, found
//! by id or hostname and removed; and the certificates for them (SNI
//! endpoints), of which crew has none.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::ApiError;
use super::service::{ApiService, Reply};
use crate::types::{DomainCreate, DomainInfo};

pub(super) async fn domains<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<DomainInfo>>> {
    b.domains(&app).await.map(Json)
}

pub(super) async fn add_domain<B: ApiService>(
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

/// `GET /apps/{app}/domains/{id or hostname}`.
pub(super) async fn domain<B: ApiService>(
    State(b): State<Arc<B>>,
    Path((app, domain)): Path<(String, String)>,
) -> Reply<Json<DomainInfo>> {
    find_domain(&*b, &app, &domain).await.map(Json)
}

async fn find_domain<B: ApiService>(b: &B, app: &str, domain: &str) -> Reply<DomainInfo> {
    let wanted = domain.to_ascii_lowercase();
    b.domains(app)
        .await?
        .into_iter()
        .find(|d| d.id == domain || d.hostname == wanted)
        .ok_or_else(|| ApiError::not_found(format!("{app} has no domain `{domain}`")))
}

/// `DELETE /apps/{app}/domains/{id or hostname}`: a custom domain; the app's
/// own hostname cannot go.
pub(super) async fn remove_domain<B: ApiService>(
    State(b): State<Arc<B>>,
    Path((app, domain)): Path<(String, String)>,
) -> Reply<Json<DomainInfo>> {
    let found = find_domain(&*b, &app, &domain).await?;
    if found.kind != "custom" {
        return Err(ApiError::invalid(format!(
            "{} is {app}'s own hostname; only custom domains can be removed",
            found.hostname
        )));
    }
    b.remove_domain(&app, &found.hostname).await?;
    Ok(Json(found))
}

/// crew serves no certificates of apps' own (yet): none to choose from.
pub(super) async fn no_sni_endpoints<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<serde_json::Value>>> {
    b.app(&app).await?;
    Ok(Json(Vec::new()))
}
