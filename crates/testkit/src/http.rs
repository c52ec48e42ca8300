//! One HTTP request the simplest way: a blocking `GET` over a fresh
//! connection that the server closes, so the answer is whole when the read
//! ends. Shares nothing with crew's router or client, which are what is under
//! test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` from `127.0.0.1:port` with `Host: host` and extra `headers`.
/// Returns the status (0 when nothing valid came back) and the body.
pub fn http_get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::from("connect failed"));
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::from("write failed"));
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}
