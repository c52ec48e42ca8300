//! Releases: the list (whole, or paged by a `Range` header), one release, the
//! config it was made with, a rollback, and a release command's output.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::service::{ApiService, Reply};
use crate::secret::same_secret;
use crate::types::{ReleaseCreate, ReleaseInfo};

/// `GET /apps/{app}/releases`, all of them, or one page of them for a
/// `Range: version ..; max=10, order=desc` header: a 206 with `Next-Range`
/// when more follow.
pub(super) async fn releases<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Reply<Response> {
    let mut releases = b.releases(&app).await?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(VersionRange::parse);
    let Some(range) = range else {
        return Ok(Json(releases).into_response());
    };
    releases.sort_by_key(|r| r.version);
    if range.descending {
        releases.reverse();
    }
    releases.retain(|r| range.contains(r.version));
    let more = releases.len() > range.max;
    releases.truncate(range.max);
    let mut response = Json(&releases).into_response();
    let set = |response: &mut Response, name: &'static str, value: String| {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    };
    set(&mut response, "accept-ranges", "version".into());
    if let (Some(first), Some(last)) = (releases.first(), releases.last()) {
        set(
            &mut response,
            "content-range",
            format!("version {}..{}", first.version, last.version),
        );
        if more {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            set(
                &mut response,
                "next-range",
                format!(
                    "version ]{}..; max={}, order={}",
                    last.version,
                    range.max,
                    if range.descending { "desc" } else { "asc" }
                ),
            );
        }
    }
    Ok(response)
}

/// A `Range` header over release versions: `version ..`, `version ]5..`,
/// `version 2..7`, with `max=N` (1 to 1000, default 200) and `order=asc|desc`.
/// The start is where the listing begins in its order, so with `order=desc`
/// `]5..` means the versions below 5.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VersionRange {
    start: Option<u32>,
    start_exclusive: bool,
    end: Option<u32>,
    max: usize,
    descending: bool,
}

impl VersionRange {
    fn parse(text: &str) -> Option<VersionRange> {
        let (head, params) = text.split_once(';').unwrap_or((text, ""));
        let (field, bounds) = head.trim().split_once(' ').unwrap_or((head.trim(), ".."));
        if field != "version" {
            return None;
        }
        let bounds = bounds.trim();
        let (start_exclusive, bounds) = match bounds.strip_prefix(']') {
            Some(rest) => (true, rest),
            None => (false, bounds),
        };
        let (start, end) = bounds.split_once("..")?;
        let bound = |t: &str| -> Option<Option<u32>> {
            let t = t.trim().trim_end_matches('[');
            if t.is_empty() {
                Some(None)
            } else {
                t.parse().ok().map(Some)
            }
        };
        let mut range = VersionRange {
            start: bound(start)?,
            start_exclusive,
            end: bound(end)?,
            max: 200,
            descending: false,
        };
        for param in params.split([',', ';']) {
            match param.trim().split_once('=') {
                Some(("max", n)) => range.max = n.trim().parse::<usize>().ok()?.clamp(1, 1000),
                Some(("order", o)) => range.descending = o.trim() == "desc",
                _ => {}
            }
        }
        Some(range)
    }

    fn contains(&self, version: u32) -> bool {
        let (before_start, past_end) = if self.descending {
            (
                self.start
                    .is_some_and(|s| version > s || (self.start_exclusive && version == s)),
                self.end.is_some_and(|e| version < e),
            )
        } else {
            (
                self.start
                    .is_some_and(|s| version < s || (self.start_exclusive && version == s)),
                self.end.is_some_and(|e| version > e),
            )
        };
        !before_start && !past_end
    }
}

pub(super) async fn release_info<B: ApiService>(
    State(b): State<Arc<B>>,
    Path((app, release)): Path<(String, String)>,
) -> Reply<Json<ReleaseInfo>> {
    b.release(&app, &release).await.map(Json)
}

pub(super) async fn rollback<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<ReleaseCreate>, JsonRejection>,
) -> Reply<(StatusCode, Json<ReleaseInfo>)> {
    let Json(request) = body?;
    Ok((StatusCode::CREATED, Json(b.rollback(&app, request).await?)))
}

pub(super) async fn release_config<B: ApiService>(
    State(b): State<Arc<B>>,
    Path((app, release)): Path<(String, String)>,
) -> Reply<Json<BTreeMap<String, String>>> {
    b.release_config(&app, &release).await.map(Json)
}

/// `GET /release-outputs/{release}/{secret}`: the release command's output,
/// for whoever holds the URL the release lists as `output_stream_url`.
pub(super) async fn release_output<B: ApiService>(
    State(b): State<Arc<B>>,
    Path((release, secret)): Path<(String, String)>,
) -> Reply<Response> {
    let gone = || ApiError::not_found("no such release output");
    let (expected, output) = b.release_output(&release).await?.ok_or_else(gone)?;
    if !same_secret(&expected, &secret) {
        return Err(gone());
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        output,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_over_versions() {
        let r = VersionRange::parse("version ..; max=10, order=desc").expect("parses");
        assert_eq!(
            (r.start, r.end, r.max, r.descending),
            (None, None, 10, true)
        );
        let r = VersionRange::parse("version ..; order=desc,max=1").expect("parses");
        assert_eq!((r.max, r.descending), (1, true));
        let r = VersionRange::parse("version ]4..; max=2, order=desc").expect("parses");
        assert!(r.start_exclusive);
        assert_eq!(
            (1..=6).filter(|v| r.contains(*v)).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let r = VersionRange::parse("version 2..4").expect("parses");
        assert_eq!(r.max, 200);
        assert_eq!(
            (1..=6).filter(|v| r.contains(*v)).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(
            VersionRange::parse("version ..; max=0").map(|r| r.max),
            Some(1)
        );
        assert_eq!(VersionRange::parse("id ..; max=10"), None);
        assert_eq!(VersionRange::parse("version x..; max=10"), None);
        assert_eq!(VersionRange::parse("version ..; max=lots"), None);
    }
}
