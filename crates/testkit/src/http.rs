//! One HTTP request the simplest way: written whole on a fresh connection
//! that the server closes (`Connection: close`), so the answer is whole when
//! the read ends. Shares nothing with crew's router or client, which are what
//! is under test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What came back: the status (0 when nothing valid came back, and then
/// `text` says why) and the whole response as text.
pub struct Response {
    pub status: u16,
    pub text: String,
}

impl Response {
    /// What follows the head.
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// `METHOD path` to `127.0.0.1:port` with `Host: host`, `headers` and
/// `body` (with its length whenever there is one, or the method is not a
/// GET), waiting up to a minute for the answer.
pub fn request(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let failed = |what: &str| Response {
        status: 0,
        text: what.to_string(),
    };
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return failed("connect failed");
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    if stream.write_all(request.as_bytes()).is_err() {
        return failed("write failed");
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Response { status, text }
}

/// `GET path` from `127.0.0.1:port` with `Host: host` and extra `headers`:
/// the status and the body.
pub fn http_get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let response = request(port, host, "GET", path, headers, "");
    (response.status, response.body().to_string())
}
