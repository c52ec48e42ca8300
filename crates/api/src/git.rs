//! git's smart HTTP protocol, served by the system's `git http-backend`.
//!
//! The backend is a CGI program: the request's method, path and headers go in
//! as environment variables and its body on stdin; the response comes back on
//! stdout as CGI headers, a blank line, then the body. Both bodies are streamed,
//! since a push can be large and its progress (including the build's output from
//! the pre-receive hook) must reach the pusher as it happens.

use std::path::Path;
use std::process::Stdio;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::server::ApiError;

/// One request to the backend.
pub struct GitRequest<'a> {
    pub method: Method,
    /// The repository path and service, e.g. `/demo.git/info/refs`.
    pub path_info: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Body,
    /// Who pushed; git only allows receive-pack for an authenticated user.
    pub remote_user: &'a str,
    /// Passed on to the hooks git runs.
    pub hook_env: Vec<(String, String)>,
}

/// Runs `git http-backend` for one request under `project_root`.
pub async fn serve(project_root: &Path, request: GitRequest<'_>) -> Response {
    match run(project_root, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn run(project_root: &Path, request: GitRequest<'_>) -> Result<Response, ApiError> {
    let header = |name: header::HeaderName| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", request.path_info)
        .env("REQUEST_METHOD", request.method.as_str())
        .env("QUERY_STRING", request.query)
        .env("CONTENT_TYPE", header(header::CONTENT_TYPE))
        .env("HTTP_CONTENT_ENCODING", header(header::CONTENT_ENCODING))
        .env("GIT_PROTOCOL", {
            request
                .headers
                .get("git-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        })
        .env("REMOTE_USER", request.remote_user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .envs(request.hook_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let length = header(header::CONTENT_LENGTH);
    if !length.is_empty() {
        command.env("CONTENT_LENGTH", length);
    }
    let mut child = command
        .spawn()
        .map_err(|e| ApiError::unavailable(format!("could not run `git http-backend`: {e}")))?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ApiError::unavailable("git http-backend has no pipes"));
    };

    // The request body goes in while the response comes out: git may start
    // answering before it has read everything.
    let mut body = request.body.into_data_stream();
    tokio::spawn(async move {
        while let Some(Ok(chunk)) = body.next().await {
            if stdin.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });

    let mut stdout = BufReader::new(stdout);
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    loop {
        let mut line = String::new();
        let n = stdout
            .read_line(&mut line)
            .await
            .map_err(|e| ApiError::unavailable(format!("reading git http-backend: {e}")))?;
        let line = line.trim_end_matches(['\r', '\n']);
        if n == 0 || line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    let stream = futures_util::stream::unfold(
        (stdout, child, [0u8; 16 * 1024]),
        |(mut out, child, mut buf)| async move {
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => Some((
                    Ok::<_, std::io::Error>(Bytes::copy_from_slice(&buf[..n])),
                    (out, child, buf),
                )),
            }
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}
