//! Log sessions and the log stream: `POST /apps/{app}/log-sessions` hands out
//! a URL, `GET /apps/{app}/log-stream` reads the log through it.
//!
//! Separate because the URL carries its own short-lived secret (Heroku's CLI
//! opens it without the API token), so this file owns those secrets as well as
//! the two shapes the log goes out in: plain lines for crew's client,
//! server-sent events for Heroku's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;

use super::auth::NeedsLogSession;
use super::error::ApiError;
use super::service::{ApiService, LogStream, Reply};
use crate::secret::{random_hex, same_secret};
use crate::types::{LogQuery, LogSession, LogSessionCreate};

/// How long a log session's URL stays good, as on Heroku where a `logplex_url`
/// is short-lived.
const LOG_SESSION_TTL: Duration = Duration::from_secs(3600);

/// At most this many log sessions are good at once; a new one retires the oldest.
const MAX_LOG_SESSIONS: usize = 10_000;

/// The secrets in log sessions' URLs. Heroku's CLI reads a `logplex_url` with an
/// EventSource that sends no `Authorization` header, so the URL carries its own
/// credential: good for one app's log for an hour.
///
/// A session is `LOOKUP` then `SECRET` in one hex string: the lookup half finds
/// the session (a hash map may take longer for some keys than others, which
/// only tells about the lookup half), and the secret half is compared in
/// constant time. A session names the app by id, so it dies with the app: a new
/// app of the same name does not revive it.
#[derive(Default)]
pub(super) struct LogSessions {
    sessions: Mutex<HashMap<String, IssuedSession>>,
}

struct IssuedSession {
    secret: String,
    app_id: String,
    made: Instant,
}

/// Hex digits of a session's lookup half, and of its secret half.
const SESSION_LOOKUP_LEN: usize = 16;
const SESSION_SECRET_LEN: usize = 32;

impl LogSessions {
    fn issue(&self, app_id: &str) -> Result<String, ApiError> {
        let random = random_hex((SESSION_LOOKUP_LEN + SESSION_SECRET_LEN) / 2)
            .map_err(|e| ApiError::unavailable(format!("making a log session: {e}")))?;
        let (lookup, secret) = random.split_at(SESSION_LOOKUP_LEN);
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| ApiError::unavailable("the log sessions are unavailable"))?;
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.made) < LOG_SESSION_TTL);
        if sessions.len() >= MAX_LOG_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.made)
                .map(|(lookup, _)| lookup.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            lookup.to_string(),
            IssuedSession {
                secret: secret.to_string(),
                app_id: app_id.to_string(),
                made: now,
            },
        );
        Ok(random)
    }

    /// Whether `session` was issued for the app with id `app_id` less than
    /// [`LOG_SESSION_TTL`] ago.
    fn valid(&self, session: &str, app_id: &str) -> bool {
        self.valid_at(session, app_id, Instant::now())
    }

    fn valid_at(&self, session: &str, app_id: &str, now: Instant) -> bool {
        if session.len() != SESSION_LOOKUP_LEN + SESSION_SECRET_LEN || !session.is_ascii() {
            return false;
        }
        let (lookup, secret) = session.split_at(SESSION_LOOKUP_LEN);
        self.sessions.lock().is_ok_and(|sessions| {
            sessions.get(lookup).is_some_and(|s| {
                let secret_matches = same_secret(&s.secret, secret);
                secret_matches
                    && s.app_id == app_id
                    && now.saturating_duration_since(s.made) < LOG_SESSION_TTL
            })
        })
    }
}

pub(super) async fn log_session<B: ApiService>(
    State(b): State<Arc<B>>,
    axum::Extension(sessions): axum::Extension<Arc<LogSessions>>,
    Path(app): Path<String>,
    body: Result<Json<LogSessionCreate>, JsonRejection>,
) -> Reply<(StatusCode, Json<LogSession>)> {
    let Json(request) = body?;
    // Checks that the app exists before handing out a URL.
    b.formation(&app).await?;
    let app_id = b.app_id(&app).await?;
    let mut query = Vec::new();
    if let Some(dyno) = &request.dyno {
        query.push(format!("dyno={}", encode(dyno)));
    }
    if let Some(lines) = request.lines {
        query.push(format!("lines={lines}"));
    }
    if request.tail == Some(true) {
        query.push("tail=true".to_string());
    }
    if let Some(source) = &request.source {
        query.push(format!("source={}", encode(source)));
    }
    query.push(format!("session={}", sessions.issue(&app_id)?));
    let path = format!("/apps/{}/log-stream?{}", encode(&app), query.join("&"));
    // Absolute, as Heroku's are: its CLI opens the URL on its own. The base is
    // the server's own address: a request's `Host` header is the client's to
    // choose, and a URL built from it could send the secret anywhere.
    let url = match b.public_url() {
        Some(base) => format!("{base}{path}"),
        None => path,
    };
    let id = random_hex(16).map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(LogSession {
            id,
            logplex_url: url,
            created_at: String::new(),
            updated_at: String::new(),
        }),
    ))
}

/// The `session` parameter of a log stream's URL.
#[derive(serde::Deserialize)]
pub(super) struct SessionQuery {
    #[serde(default)]
    session: Option<String>,
}

pub(super) async fn log_stream<B: ApiService>(
    State(b): State<Arc<B>>,
    axum::Extension(sessions): axum::Extension<Arc<LogSessions>>,
    needs_session: Option<axum::Extension<NeedsLogSession>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    query: Result<Query<LogQuery>, QueryRejection>,
    session: Result<Query<SessionQuery>, QueryRejection>,
) -> Reply<Response> {
    let Query(query) = query?;
    let Query(session) = session?;
    if needs_session.is_some() {
        // An app that is gone, or was destroyed and made again, has no id
        // the session was issued for.
        let app_id = b.app_id(&app).await.ok();
        let ok = match (session.session.as_deref(), app_id) {
            (Some(secret), Some(app_id)) => sessions.valid(secret, &app_id),
            _ => false,
        };
        if !ok {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                id: "forbidden",
                message: String::from(
                    "This log session has expired or is not valid: open a new one.",
                ),
            });
        }
    }
    let stream = b.logs(&app, query).await?;
    // Heroku's CLI reads logs with an EventSource, which asks for server-sent
    // events; crew's own client gets the lines as they are.
    let wants_events = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if wants_events {
        let body = Body::from_stream(futures_util::StreamExt::map(
            server_sent_events(stream),
            Ok::<_, std::convert::Infallible>,
        ));
        return Ok((
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response());
    }
    let body = Body::from_stream(futures_util::StreamExt::map(stream, |chunk| {
        Ok::<_, std::convert::Infallible>(chunk)
    }));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// Each line of `stream` as one server-sent event, `data: LINE` and a blank
/// line. A carriage return inside a line would end the field early, so it
/// becomes a space.
fn server_sent_events(stream: LogStream) -> impl Stream<Item = Bytes> + Send {
    let mut pending: Vec<u8> = Vec::new();
    futures_util::StreamExt::map(stream, move |chunk| {
        pending.extend_from_slice(&chunk);
        let mut out = Vec::with_capacity(pending.len() + 16);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            out.extend_from_slice(b"data: ");
            out.extend(line.iter().map(|b| if *b == b'\r' { b' ' } else { *b }));
            out.extend_from_slice(b"\n\n");
        }
        Bytes::from(out)
    })
}

/// Percent-encodes a query value; names here are short and mostly ASCII.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char);
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn log_lines_become_server_sent_events() {
        let chunks = vec![
            Bytes::from_static(b"one\ntw"),
            Bytes::from_static(b"o\r\nthr\ree\n"),
        ];
        let stream: LogStream = Box::pin(futures_util::stream::iter(chunks));
        let out: Vec<Bytes> = futures_util::StreamExt::collect(server_sent_events(stream)).await;
        assert_eq!(
            out.concat(),
            b"data: one\n\ndata: two\n\ndata: thr ee\n\n".to_vec()
        );
    }

    #[test]
    fn log_sessions_are_bound_to_the_app_id_and_expire() {
        let sessions = LogSessions::default();
        let session = sessions.issue("id-1").expect("a session");
        assert_eq!(session.len(), SESSION_LOOKUP_LEN + SESSION_SECRET_LEN);
        assert!(sessions.valid(&session, "id-1"));
        // Another app, or the same name made again with a new id.
        assert!(!sessions.valid(&session, "id-2"));
        assert!(!sessions.valid("guess", "id-1"));
        // The right lookup half with a wrong secret half.
        let (lookup, _) = session.split_at(SESSION_LOOKUP_LEN);
        let forged = format!("{lookup}{}", "0".repeat(SESSION_SECRET_LEN));
        assert!(!sessions.valid(&forged, "id-1"));
        let later = Instant::now() + LOG_SESSION_TTL + Duration::from_secs(1);
        assert!(!sessions.valid_at(&session, "id-1", later));
    }
}
