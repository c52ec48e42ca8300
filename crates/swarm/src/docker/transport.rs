//! The HTTP transport: one request per connection over the daemon's Unix
//! socket, every path under `/v1.41`, the daemon's refusals read into
//! [`DockerError::Api`], and the query strings and bodies the typed calls
//! build their requests from.
//!
//! One request per connection: the daemon is local, a connect costs
//! microseconds, and it keeps streaming requests (logs, attach) from
//! holding up the others.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::UnixStream;

use super::{API_VERSION, Docker, DockerError};

pub(super) type Body = BoxBody<Bytes, std::io::Error>;

/// The first `error` of a streamed progress answer (one JSON object a line),
/// in the daemon's (or the registry's) words.
fn progress_error(answer: &[u8]) -> Option<String> {
    String::from_utf8_lossy(answer).lines().find_map(|line| {
        let v = serde_json::from_str::<Value>(line).ok()?;
        let error = v.get("error")?;
        Some(match error.as_str() {
            Some(text) => text.to_string(),
            None => error.to_string(),
        })
    })
}

/// Percent-encodes a query value: everything but RFC 3986's unreserved set.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn query(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

pub(super) fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn json_body(value: &Value) -> Body {
    Full::new(Bytes::from(value.to_string()))
        .map_err(|never| match never {})
        .boxed()
}

impl Docker {
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        headers: &[(header::HeaderName, &str)],
        upgrade: bool,
    ) -> Result<Response<Incoming>, DockerError> {
        let socket = || self.socket.display().to_string();
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| DockerError::Connect {
                    socket: socket(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| DockerError::Http {
                socket: socket(),
                source,
            })?;
        // The connection runs until the response (and any upgraded stream)
        // is done with; its errors surface through the request.
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("/v{API_VERSION}{path}"))
            .header(header::HOST, "docker");
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        if upgrade {
            request = request
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "tcp");
        }
        let request = request.body(body).map_err(|e| DockerError::Decode {
            what: format!("{method} {path}"),
            detail: e.to_string(),
        })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| DockerError::Http {
                socket: socket(),
                source,
            })?;
        let status = response.status();
        if status.is_success()
            || status == StatusCode::NOT_MODIFIED
            || status == StatusCode::SWITCHING_PROTOCOLS
        {
            return Ok(response);
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        Err(DockerError::Api {
            what: format!("{method} {}", path.split('?').next().unwrap_or(path)),
            status: status.as_u16(),
            message,
        })
    }

    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Bytes, DockerError> {
        let (body, headers) = match body {
            Some(v) => (
                json_body(v),
                &[(header::CONTENT_TYPE, "application/json")][..],
            ),
            None => (empty(), &[][..]),
        };
        let response = self
            .send(method.clone(), path, body, headers, false)
            .await?;
        self.read_body(response).await
    }

    /// A response's whole body.
    async fn read_body(&self, response: Response<Incoming>) -> Result<Bytes, DockerError> {
        response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|source| DockerError::Http {
                socket: self.socket.display().to_string(),
                source,
            })
    }

    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, DockerError> {
        let bytes = self.call(method.clone(), path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| DockerError::Decode {
            what: format!("{method} {}", path.split('?').next().unwrap_or(path)),
            detail: e.to_string(),
        })
    }

    /// Reads a streamed progress answer (load, push) to its end. Those
    /// report a failure inside a 200, as a JSON line with `error`, so a 200
    /// alone means nothing.
    pub(super) async fn progress(
        &self,
        response: Response<Incoming>,
        what: &str,
    ) -> Result<(), DockerError> {
        let bytes = self.read_body(response).await?;
        match progress_error(&bytes) {
            Some(message) => Err(DockerError::Failed {
                what: what.to_string(),
                message,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            query(&[
                ("filters", r#"{"label":["a=b"]}"#.into()),
                ("x", "1".into())
            ]),
            "?filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D&x=1"
        );
    }

    #[test]
    fn progress_errors_are_found_in_a_200() {
        let pushed =
            b"{\"status\":\"The push refers to repository [10.0.0.1:5000/crew/shop]\"}\r\n\
            {\"status\":\"Pushed\",\"progressDetail\":{},\"id\":\"abc\"}\r\n\
            {\"status\":\"v1: digest: sha256:00 size: 528\"}\r\n";
        assert_eq!(progress_error(pushed), None);
        let refused = b"{\"status\":\"The push refers to repository [10.0.0.1:5000/crew/shop]\"}\n\
            {\"errorDetail\":{\"message\":\"Get \\\"https://10.0.0.1:5000/v2/\\\": connection refused\"},\
            \"error\":\"Get \\\"https://10.0.0.1:5000/v2/\\\": connection refused\"}\n";
        assert_eq!(
            progress_error(refused).as_deref(),
            Some("Get \"https://10.0.0.1:5000/v2/\": connection refused")
        );
        assert_eq!(progress_error(b"not json\n"), None);
    }
}
