//! Who may call the API: the token check a server wraps its routes in.
//!
//! A request carries the API token as `Authorization: Bearer TOKEN` or as
//! the password of HTTP Basic (what git sends). Three kinds of URL go without
//! it, each because the client that opens it sends no credentials of its
//! own: a log session's stream (its secret is checked by the log stream), a
//! release output's secret URL (checked by its handler), and the buildpack
//! registry's answer for crew's built-in buildpacks (which tells nothing
//! private).

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::error::ApiError;
use crate::secret::same_secret;

/// Marks a request that [`require_token`] let through without the API token,
/// because it carries a log session's secret instead; the log stream checks it.
#[derive(Clone, Copy)]
pub(super) struct NeedsLogSession;

/// Requires the API token on every request: `Authorization: Bearer TOKEN`, or
/// HTTP Basic with the token as the password (what git sends). A refusal is a
/// 401 with a JSON body and a Basic challenge, so git asks for credentials.
pub fn require_token(router: axum::Router, token: String) -> axum::Router {
    let token = Arc::new(token);
    router.layer(axum::middleware::from_fn(
        move |mut request: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let given = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(credential);
                if given.is_some_and(|given| same_secret(&token, &given)) {
                    return next.run(request).await;
                }
                // A log session's URL carries its own secret, which the log
                // stream checks: only that one route, only to read.
                if request.method() == axum::http::Method::GET
                    && is_log_stream_with_session(request.uri())
                {
                    request.extensions_mut().insert(NeedsLogSession);
                    return next.run(request).await;
                }
                // A release output's secret URL (checked by its handler), and
                // the registry's answer for crew's built-in buildpacks.
                if open_without_token(request.method(), request.uri()) {
                    return next.run(request).await;
                }
                let mut response = ApiError {
                    status: StatusCode::UNAUTHORIZED,
                    id: "unauthorized",
                    message: String::from(
                        "Invalid credentials provided: use the server's API token (CREW_API_KEY)",
                    ),
                }
                .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Basic realm=\"crew\""),
                );
                response
            }
        },
    ))
}

/// Whether `uri` is exactly `/apps/{app}/log-stream` with a `session`: one
/// app segment, so no other route whose last parameter is `log-stream`
/// (`/apps/log-stream`, `/apps/APP/formation/log-stream`) gets through.
fn is_log_stream_with_session(uri: &axum::http::Uri) -> bool {
    let segments: Vec<&str> = uri.path().split('/').collect();
    let exact = matches!(
        segments.as_slice(),
        ["", "apps", app, "log-stream"] if !app.is_empty()
    );
    exact
        && uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("session=")))
}

/// Whether a request without the token may go on: only the two routes whose
/// URL is handed to a client that sends no credentials of its own (a release
/// output's secret URL, which its handler checks), or that tell nothing
/// private (the registry's answer for crew's built-in buildpacks).
fn open_without_token(method: &axum::http::Method, uri: &axum::http::Uri) -> bool {
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

/// The secret in an Authorization header: a bearer token, or a Basic password.
fn credential(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

/// Standard base64, enough for a Basic header.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_log_stream_route_may_carry_a_session() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().expect("uri");
        assert!(is_log_stream_with_session(&uri(
            "/apps/demo/log-stream?lines=5&session=abc"
        )));
        for other in [
            "/apps/demo/log-stream?lines=5",
            "/apps/demo/dynos?session=abc",
            "/apps/log-stream?session=abc",
            "/apps//log-stream?session=abc",
            "/apps/demo/formation/log-stream?session=abc",
            "/apps/demo/dynos/log-stream?session=abc",
            "/x/apps/demo/log-stream?session=abc",
            "/apps/demo/log-stream/?session=abc",
        ] {
            assert!(!is_log_stream_with_session(&uri(other)), "{other}");
        }
    }

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
    fn credentials_from_bearer_and_basic() {
        assert_eq!(credential("Bearer abc").as_deref(), Some("abc"));
        // base64 of "crew:s3cret"
        assert_eq!(
            credential("Basic Y3JldzpzM2NyZXQ=").as_deref(),
            Some("s3cret")
        );
        assert_eq!(credential("Basic !!!"), None);
        assert_eq!(credential("Digest x"), None);
    }
}
