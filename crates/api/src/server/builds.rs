//! Builds and the sources they are made from: a source is uploaded first
//! (`POST /sources`, then `PUT` its tarball), and a build names it; the build's
//! output streams back as the answer to `POST /apps/{app}/builds`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::service::{ApiService, Reply};
use crate::types::{BuildCreate, BuildInfo, SourceInfo, SourceUrls};

pub(super) async fn builds<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<BuildInfo>>> {
    b.builds(&app).await.map(Json)
}

pub(super) async fn build<B: ApiService>(
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

/// `POST /sources`: a place to upload source code to, in Heroku's shape.
pub(super) async fn create_source<B: ApiService>(
    State(b): State<Arc<B>>,
) -> Reply<(StatusCode, Json<SourceInfo>)> {
    let id = b.create_source().await?;
    let url = format!("{}/sources/{id}", b.public_url().unwrap_or_default());
    Ok((
        StatusCode::CREATED,
        Json(SourceInfo {
            source_blob: SourceUrls {
                get_url: url.clone(),
                put_url: url,
            },
        }),
    ))
}

/// `PUT /sources/{id}`: the tarball of a source made by `POST /sources`.
pub(super) async fn upload_source<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(id): Path<String>,
    body: Body,
) -> Reply<StatusCode> {
    b.upload_source(&id, body).await?;
    Ok(StatusCode::OK)
}
