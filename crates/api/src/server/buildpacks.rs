//! Buildpacks: the app's buildpack installations, and the little of Heroku's
//! buildpack registry that its CLI asks before `buildpacks:set heroku/python`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::service::{ApiService, Reply};
use crate::types::{BuildpackInstallation, BuildpackRef, BuildpackUpdates};

fn installations(buildpacks: Vec<String>) -> Vec<BuildpackInstallation> {
    buildpacks
        .into_iter()
        .zip(0..)
        .map(|(url, ordinal)| BuildpackInstallation {
            buildpack: BuildpackRef {
                name: registry_name(&url).unwrap_or(&url).to_string(),
                url,
            },
            ordinal,
        })
        .collect()
}

/// `heroku/python` for Heroku's URLs of its buildpacks, as the CLI shows them.
fn registry_name(url: &str) -> Option<&str> {
    url.strip_prefix(REGISTRY_BLOBS)?.strip_suffix(".tgz")
}

pub(super) async fn buildpacks<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<BuildpackInstallation>>> {
    b.buildpacks(&app).await.map(installations).map(Json)
}

pub(super) async fn set_buildpacks<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<BuildpackUpdates>, JsonRejection>,
) -> Reply<Json<Vec<BuildpackInstallation>>> {
    let Json(updates) = body.map_err(|e| {
        ApiError::invalid(format!(
            "{}: send {{\"updates\": [{{\"buildpack\": \"heroku/python\"}}, …]}}",
            e.body_text()
        ))
    })?;
    let list = updates.updates.into_iter().map(|u| u.buildpack).collect();
    b.set_buildpacks(&app, list)
        .await
        .map(installations)
        .map(Json)
}

/// Where Heroku's buildpack registry keeps its buildpacks; crew answers its
/// built-in ones with these URLs (which it never fetches: it maps them to its
/// own), so the CLI shows them by name.
const REGISTRY_BLOBS: &str = "https://buildpack-registry.s3.amazonaws.com/buildpacks/";

/// The names crew answers as the registry does (`HEROKU_BUILDPACK_REGISTRY_URL`).
const REGISTRY_NAMES: [&str; 5] = [
    "heroku/ruby",
    "heroku/python",
    "heroku/nodejs",
    "heroku/go",
    "heroku/procfile",
];

/// `GET /buildpack-registry/buildpacks/{namespace/name}`: what the CLI asks
/// Heroku's registry for a buildpack's URL before `buildpacks:set NAME`.
pub(super) async fn registry_buildpack(Path(name): Path<String>) -> Response {
    if REGISTRY_NAMES.contains(&name.as_str()) {
        return Json(serde_json::json!({
            "name": name,
            "blob_url": format!("{REGISTRY_BLOBS}{name}.tgz"),
        }))
        .into_response();
    }
    ApiError {
        status: StatusCode::NOT_FOUND,
        id: "not_found",
        message: format!(
            "crew has {} built in; give any other buildpack as a git URL",
            REGISTRY_NAMES.join(", ")
        ),
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herokus_registry_urls_show_as_names() {
        let list = installations(vec![
            format!("{REGISTRY_BLOBS}heroku/python.tgz"),
            "https://github.com/x/y".into(),
        ]);
        assert_eq!(list[0].buildpack.name, "heroku/python");
        assert_eq!(list[1].buildpack.name, "https://github.com/x/y");
        assert_eq!(list[1].ordinal, 1);
    }
}
