//! Routes for an app's settings outside its releases, as Heroku's CLI calls
//! them: `PATCH /apps/{app}` (rename, maintenance), domains by id or name,
//! buildpack installations, a release command's output, and the little of
//! the buildpack registry the CLI asks before `buildpacks:set heroku/python`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::server::{ApiError, Backend};
use crate::types::{
    AppInfo, AppUpdate, BuildpackInstallation, BuildpackRef, BuildpackUpdates, DomainInfo,
};

type Reply<T> = Result<T, ApiError>;

/// The routes of this module, added to the API's router.
pub(crate) fn routes<B: Backend>(router: axum::Router<Arc<B>>) -> axum::Router<Arc<B>> {
    use axum::routing::get;
    router
        .route(
            "/apps/{app}/domains/{domain}",
            get(domain::<B>).delete(remove_domain::<B>),
        )
        .route("/apps/{app}/sni-endpoints", get(no_sni_endpoints::<B>))
        .route(
            "/apps/{app}/buildpack-installations",
            get(buildpacks::<B>).put(set_buildpacks::<B>),
        )
        .route(
            "/release-outputs/{release}/{secret}",
            get(release_output::<B>),
        )
        .route(
            "/buildpack-registry/buildpacks/{name}",
            get(registry_buildpack),
        )
}

/// Whether a request without the token may go on: only the two routes whose
/// URL is handed to a client that sends no credentials of its own (a release
/// output's secret URL, which its handler checks), or that tell nothing
/// private (the registry's answer for crew's built-in buildpacks).
pub(crate) fn open_without_token(method: &axum::http::Method, uri: &axum::http::Uri) -> bool {
    if method != axum::http::Method::GET {
        return false;
    }
    let segments: Vec<&str> = uri.path().split('/').collect();
    matches!(
        segments.as_slice(),
        ["", "release-outputs", release, secret] if !release.is_empty() && !secret.is_empty()
    ) || matches!(
        segments.as_slice(),
        ["", "buildpack-registry", "buildpacks", name] if !name.is_empty()
    )
}

pub(crate) async fn update_app<B: Backend>(
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

/// `GET /apps/{app}/domains/{id or hostname}`.
async fn domain<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, domain)): Path<(String, String)>,
) -> Reply<Json<DomainInfo>> {
    find_domain(&*b, &app, &domain).await.map(Json)
}

async fn find_domain<B: Backend>(b: &B, app: &str, domain: &str) -> Reply<DomainInfo> {
    let wanted = domain.to_ascii_lowercase();
    b.domains(app)
        .await?
        .into_iter()
        .find(|d| d.id == domain || d.hostname == wanted)
        .ok_or_else(|| ApiError::not_found(format!("{app} has no domain `{domain}`")))
}

/// `DELETE /apps/{app}/domains/{id or hostname}`: a custom domain; the app's
/// own hostname cannot go.
async fn remove_domain<B: Backend>(
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
async fn no_sni_endpoints<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<serde_json::Value>>> {
    b.app(&app).await?;
    Ok(Json(Vec::new()))
}

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

async fn buildpacks<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<BuildpackInstallation>>> {
    b.buildpacks(&app).await.map(installations).map(Json)
}

async fn set_buildpacks<B: Backend>(
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

/// `GET /release-outputs/{release}/{secret}`: the release command's output,
/// for whoever holds the URL the release lists as `output_stream_url`.
async fn release_output<B: Backend>(
    State(b): State<Arc<B>>,
    Path((release, secret)): Path<(String, String)>,
) -> Reply<Response> {
    let gone = || ApiError::not_found("no such release output");
    let (expected, output) = b.release_output(&release).await?.ok_or_else(gone)?;
    if !crate::secret::same_secret(&expected, &secret) {
        return Err(gone());
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        output,
    )
        .into_response())
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
async fn registry_buildpack(Path(name): Path<String>) -> Response {
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
    fn only_the_two_open_routes_go_without_a_token() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().expect("uri");
        let get = axum::http::Method::GET;
        assert!(open_without_token(&get, &uri("/release-outputs/r/s")));
        assert!(open_without_token(
            &get,
            &uri("/buildpack-registry/buildpacks/heroku%2Fpython")
        ));
        for closed in [
            "/release-outputs/r",
            "/release-outputs/r/",
            "/release-outputs//s",
            "/release-outputs/r/s/x",
            "/x/release-outputs/r/s",
            "/apps/demo/buildpack-installations",
            "/buildpack-registry/buildpacks/",
            "/buildpack-registry/buildpacks/a/b",
        ] {
            assert!(!open_without_token(&get, &uri(closed)), "{closed}");
        }
        assert!(!open_without_token(
            &axum::http::Method::POST,
            &uri("/release-outputs/r/s")
        ));
    }

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
