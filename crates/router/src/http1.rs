//! Just enough HTTP/1.1 for a proxy that relays bytes.
//!
//! A request's head is parsed once (with `httparse`), routed, and written
//! again for the dyno with the forwarding headers; its body, and the
//! response's, are passed on as they come, framing and all. A proxy only needs
//! to know where a body ends, so a chunked body is scanned, not decoded.

use std::fmt::Write as _;

/// The most a request or response head may take; nginx's default is 8 KB per
/// header line, and Heroku's router limits a head to 8 KB of headers.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// What a read asks the kernel for at least.
pub(crate) const READ_SIZE: usize = 16 * 1024;
/// Headers per head.
pub(crate) const MAX_HEADERS: usize = 100;

/// Where a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all.
    Empty,
    Length(u64),
    Chunked,
    /// Only a response can have this: its body ends when the dyno closes.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    TooLarge,
    Malformed(&'static str),
}

/// A parsed request head, borrowed from the connection's buffer.
pub(crate) struct RequestHead<'b, 'h> {
    pub(crate) method: &'b str,
    pub(crate) target: &'b str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) minor: u8,
    pub(crate) headers: &'h [httparse::Header<'b>],
    pub(crate) framing: Framing,
    /// The client wants its connection kept after this request.
    pub(crate) keep_alive: bool,
    pub(crate) upgrade: bool,
    pub(crate) expect_continue: bool,
    /// Bytes of the head in the buffer.
    pub(crate) len: usize,
}

impl RequestHead<'_, '_> {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    }

    /// The host the request is for, without its port: the `Host` header, or
    /// the authority of an absolute target.
    pub(crate) fn host(&self) -> &str {
        let host = self
            .header("host")
            .or_else(|| authority(self.target))
            .unwrap_or("");
        // `[::1]:5000` keeps its brackets, `example.com:5000` drops its port.
        match host.rsplit_once(':') {
            Some((name, port)) if !port.contains(']') => name,
            _ => host,
        }
    }

    /// The path and query, for the access line.
    pub(crate) fn path(&self) -> &str {
        if self.target.starts_with('/') || self.target == "*" {
            return self.target;
        }
        let after_scheme = self
            .target
            .split_once("://")
            .map_or(self.target, |(_, rest)| rest);
        after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
    }

    pub(crate) fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// Writes the head as the dyno gets it: hop-by-hop headers dropped (an
    /// upgrade keeps its own), `X-Forwarded-*` set, and `X-Request-Id` added
    /// when the client sent none.
    pub(crate) fn write_for_dyno(&self, out: &mut Vec<u8>, forwarding: &Forwarding<'_>) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(if self.minor == 0 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });
        let mut earlier_for: Option<&[u8]> = None;
        for h in self.headers {
            let name = h.name;
            if name.len() >= 11 && name[..11].eq_ignore_ascii_case("x-forwarded") {
                if name.eq_ignore_ascii_case("x-forwarded-for") {
                    earlier_for = Some(h.value);
                    continue;
                }
                if name.eq_ignore_ascii_case("x-forwarded-proto")
                    || name.eq_ignore_ascii_case("x-forwarded-port")
                {
                    continue;
                }
            }
            if (!self.upgrade && is_hop_by_hop(name))
                || (self.expect_continue && name.eq_ignore_ascii_case("expect"))
            {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(earlier) = earlier_for {
            out.extend_from_slice(earlier);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(forwarding.client_ip.as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\nx-forwarded-port: ");
        out.extend_from_slice(forwarding.port.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(id) = forwarding.new_request_id {
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// What the router adds to every request.
pub(crate) struct Forwarding<'a> {
    pub(crate) client_ip: &'a str,
    pub(crate) port: &'a str,
    pub(crate) new_request_id: Option<&'a str>,
}

fn authority(target: &str) -> Option<&str> {
    let (_, rest) = target.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    Some(
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host),
    )
}

/// Parses the request head at the start of `buf`, and hands it to `with`
/// while it is borrowed. `Ok(None)` means the head is not all there yet.
pub(crate) fn parse_request<T>(
    buf: &[u8],
    with: impl FnOnce(&RequestHead<'_, '_>) -> T,
) -> Result<Option<T>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let Some(len) = head_len(request.parse(buf), buf, "not an HTTP/1 request")? else {
        return Ok(None);
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(HeadError::Malformed("not an HTTP/1 request"));
    };
    let headers: &[httparse::Header<'_>] = request.headers;
    let mut framing = Framing::Empty;
    let mut lengths = 0;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut connection_upgrade = false;
    let mut has_upgrade = false;
    let mut expect_continue = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let length = parse_length(h.value).ok_or(HeadError::Malformed(
                "a Content-Length that is not a number",
            ))?;
            if lengths > 0 && framing != Framing::Length(length) {
                return Err(HeadError::Malformed("two different Content-Lengths"));
            }
            lengths += 1;
            framing = Framing::Length(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            chunked = last_token_is(h.value, "chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive_token = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            has_upgrade = true;
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    if transfer_encoding {
        // Both framings at once is how requests are smuggled past proxies.
        if lengths > 0 {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if !chunked {
            return Err(HeadError::Malformed(
                "a Transfer-Encoding that is not chunked",
            ));
        }
        framing = Framing::Chunked;
    }
    if framing == Framing::Length(0) {
        framing = Framing::Empty;
    }
    let keep_alive = if minor == 0 {
        keep_alive_token && !close
    } else {
        !close
    };
    let head = RequestHead {
        method,
        target,
        minor,
        headers,
        framing,
        keep_alive,
        upgrade: has_upgrade && connection_upgrade,
        expect_continue: expect_continue && framing != Framing::Empty,
        len,
    };
    Ok(Some(with(&head)))
}

/// The length of the head httparse found at the start of `buf`, `None` while
/// it is not all there; a head that outgrows [`MAX_HEAD`] or has too many
/// headers is too large, anything else it refused is `malformed`.
fn head_len(
    parsed: httparse::Result<usize>,
    buf: &[u8],
    malformed: &'static str,
) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed(malformed)),
    }
}

/// What a proxy needs of a response head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// The dyno may keep the connection for another request.
    pub(crate) reusable: bool,
    /// It has hop-by-hop headers, so it cannot be passed on as it is.
    pub(crate) hop_by_hop: bool,
    pub(crate) len: usize,
}

/// Parses the response head at the start of `buf`, to a request that was a
/// `HEAD` when `head_request`. `Ok(None)` means it is not all there yet.
pub(crate) fn parse_response(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let Some(len) = head_len(response.parse(buf), buf, "not an HTTP/1 response")? else {
        return Ok(None);
    };
    let (Some(status), Some(minor)) = (response.code, response.version) else {
        return Err(HeadError::Malformed("not an HTTP/1 response"));
    };
    let mut length = None;
    let mut transfer_encoding = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut hop_by_hop = false;
    for h in response.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = parse_length(h.value).ok_or(HeadError::Malformed(
                "a Content-Length that is not a number",
            ))?;
            if length.is_some_and(|l| l != value) {
                return Err(HeadError::Malformed("two different Content-Lengths"));
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = Some(last_token_is(h.value, "chunked"));
        } else if is_hop_by_hop(name) {
            hop_by_hop = true;
            if name.eq_ignore_ascii_case("connection") {
                for token in tokens(h.value) {
                    close |= token.eq_ignore_ascii_case("close");
                    keep_alive_token |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else {
        match (transfer_encoding, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(length)) => Framing::Length(length),
            (None, None) => Framing::UntilClose,
        }
    };
    let keeps = if minor == 0 {
        keep_alive_token && !close
    } else {
        !close
    };
    Ok(Some(ResponseHead {
        status,
        framing,
        reusable: keeps && framing != Framing::UntilClose,
        hop_by_hop,
        len,
    }))
}

/// Writes the response head in `buf` for the client without its hop-by-hop
/// headers, saying `Connection: close` when the router will close.
pub(crate) fn rewrite_response(buf: &[u8], close: bool, out: &mut Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    if !matches!(response.parse(buf), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let _ = write!(
        Bytes(out),
        "HTTP/1.{} {} {}\r\n",
        response.version.unwrap_or(1),
        response.code.unwrap_or(502),
        response.reason.unwrap_or("")
    );
    for h in response.headers.iter() {
        // Transfer-Encoding stays: the body is passed on as it was framed.
        if is_hop_by_hop(h.name) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `fmt::Write` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Headers that describe one connection rather than the message. `TE` and
/// `Trailer` are on RFC 9110's list too, but a proxy that passes chunked bodies
/// through as they are passes their trailers on as well.
fn is_hop_by_hop(name: &str) -> bool {
    name.eq_ignore_ascii_case("connection")
        || name.eq_ignore_ascii_case("keep-alive")
        || name.eq_ignore_ascii_case("proxy-connection")
        || name.eq_ignore_ascii_case("upgrade")
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(value)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
}

fn last_token_is(value: &[u8], token: &str) -> bool {
    tokens(value)
        .filter(|t| !t.is_empty())
        .last()
        .is_some_and(|t| t.eq_ignore_ascii_case(token))
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// How much of a body is still to come.
#[derive(Debug)]
pub(crate) enum Remaining {
    Length(u64),
    Chunked(Chunks),
    UntilClose,
    Done,
}

impl Remaining {
    pub(crate) fn of(framing: Framing) -> Remaining {
        match framing {
            Framing::Empty | Framing::Length(0) => Remaining::Done,
            Framing::Length(n) => Remaining::Length(n),
            Framing::Chunked => Remaining::Chunked(Chunks::default()),
            Framing::UntilClose => Remaining::UntilClose,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Remaining::Done)
    }

    /// How many bytes at the start of `available` belong to the body; what
    /// follows is the next message.
    pub(crate) fn take(&mut self, available: &[u8]) -> Result<usize, HeadError> {
        match self {
            Remaining::Length(n) => {
                let taken = (*n).min(available.len() as u64);
                *n -= taken;
                if *n == 0 {
                    *self = Remaining::Done;
                }
                // `taken` is at most `available.len()`.
                Ok(taken as usize)
            }
            Remaining::Chunked(chunks) => {
                let taken = chunks.scan(available)?;
                if chunks.is_done() {
                    *self = Remaining::Done;
                }
                Ok(taken)
            }
            Remaining::UntilClose => Ok(available.len()),
            Remaining::Done => Ok(0),
        }
    }
}

/// Finds the end of a chunked body without decoding it.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk's size; `digits` so far.
    #[default]
    Start,
    Size {
        size: u64,
        digits: u8,
    },
    /// A chunk extension, up to the end of its line.
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// After the last chunk: a trailer line or the empty line.
    LineStart,
    Trailer,
    EndLf,
    Done,
}

impl Chunks {
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Follows the body through `bytes`; says how many belong to it, which is
    /// all of them unless the body ends among them.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Result<usize, HeadError> {
        const BAD: HeadError = HeadError::Malformed("a malformed chunked body");
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                ChunkState::Start => match hex(b) {
                    Some(d) => ChunkState::Size {
                        size: u64::from(d),
                        digits: 1,
                    },
                    None => return Err(BAD),
                },
                ChunkState::Size { size, digits } => match hex(b) {
                    Some(_) if digits >= 15 => return Err(BAD),
                    Some(d) => ChunkState::Size {
                        size: size * 16 + u64::from(d),
                        digits: digits + 1,
                    },
                    None if b == b'\r' => ChunkState::SizeLf { size },
                    None if b == b'\n' => after_size(size),
                    None if b == b';' || b == b' ' || b == b'\t' => ChunkState::Extension { size },
                    None => return Err(BAD),
                },
                ChunkState::Extension { size } => match b {
                    b'\r' => ChunkState::SizeLf { size },
                    b'\n' => after_size(size),
                    _ => ChunkState::Extension { size },
                },
                ChunkState::SizeLf { size } if b == b'\n' => after_size(size),
                ChunkState::SizeLf { .. } => return Err(BAD),
                ChunkState::Data { left } => {
                    // Data is skipped whole, not byte by byte.
                    let here = (bytes.len() - i) as u64;
                    let skip = left.min(here);
                    // `skip` is at most what is left of `bytes`.
                    i += skip as usize;
                    self.state = if skip == left {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { left: left - skip }
                    };
                    continue;
                }
                ChunkState::DataCr if b == b'\r' => ChunkState::DataLf,
                ChunkState::DataCr | ChunkState::DataLf if b == b'\n' => ChunkState::Start,
                ChunkState::DataCr | ChunkState::DataLf => return Err(BAD),
                ChunkState::LineStart => match b {
                    b'\r' => ChunkState::EndLf,
                    b'\n' => ChunkState::Done,
                    _ => ChunkState::Trailer,
                },
                ChunkState::Trailer if b == b'\n' => ChunkState::LineStart,
                ChunkState::Trailer => ChunkState::Trailer,
                ChunkState::EndLf if b == b'\n' => ChunkState::Done,
                ChunkState::EndLf => return Err(BAD),
                ChunkState::Done => return Ok(i),
            };
            i += 1;
            if self.state == ChunkState::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }
}

fn after_size(size: u64) -> ChunkState {
    if size == 0 {
        ChunkState::LineStart
    } else {
        ChunkState::Data { left: size }
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// A whole response of the router's own: an HTML page.
pub(crate) fn page(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    title: &str,
    text: &str,
    head_request: bool,
    close: bool,
) {
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    let _ = write!(
        Bytes(out),
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n",
        html.len(),
        if close { "connection: close\r\n" } else { "" }
    );
    if !head_request {
        out.extend_from_slice(html.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Framing, keep-alive, upgrade, 100-continue, host and path.
    type Summary = (Framing, bool, bool, bool, String, String);

    fn request(text: &str) -> Result<Option<Summary>, HeadError> {
        parse_request(text.as_bytes(), |h| {
            (
                h.framing,
                h.keep_alive,
                h.upgrade,
                h.expect_continue,
                h.host().to_string(),
                h.path().to_string(),
            )
        })
    }

    #[test]
    fn request_framing_and_connection() {
        let (framing, keep, upgrade, expect, host, path) =
            request("GET /a?b HTTP/1.1\r\nHost: Demo.localhost:5000\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            (framing, keep, upgrade, expect, host.as_str(), path.as_str()),
            (Framing::Empty, true, false, false, "Demo.localhost", "/a?b")
        );
        let r = request("POST / HTTP/1.1\r\nContent-Length: 12\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.0, r.1, r.3), (Framing::Length(12), false, true));
        let r = request("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.0, Framing::Chunked);
        let r = request("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.1, "HTTP/1.0 closes unless asked");
        let r = request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.1);
        let r = request(
            "GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(r.2);
        let r = request("GET http://u@Example.com:80/x?y HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.4.as_str(), r.5.as_str()), ("Example.com", "/x?y"));
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(request("GET / HTTP/1.1\r\nHost: a").unwrap(), None);
        for bad in [
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(
                matches!(request(bad), Err(HeadError::Malformed(_))),
                "{bad:?}"
            );
        }
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(request(&huge).err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn the_head_for_the_dyno_forwards_and_drops_hop_by_hop_headers() {
        let text = "GET / HTTP/1.1\r\nHost: a.localhost\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n";
        let out = parse_request(text.as_bytes(), |h| {
            let mut out = Vec::new();
            h.write_for_dyno(
                &mut out,
                &Forwarding {
                    client_ip: "127.0.0.1",
                    port: "5000",
                    new_request_id: Some("id-1"),
                },
            );
            String::from_utf8(out).unwrap()
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: a.localhost\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-port: 5000\r\nx-request-id: id-1\r\n\r\n"
        );
    }

    #[test]
    fn response_framing() {
        let parse = |t: &str, head| parse_response(t.as_bytes(), head).unwrap().unwrap();
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false);
        assert_eq!(
            (r.framing, r.reusable, r.hop_by_hop, r.len),
            (Framing::Length(5), true, false, 38)
        );
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert_eq!(r.framing, Framing::Empty);
        let r = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            false,
        );
        assert_eq!(
            (r.framing, r.reusable, r.hop_by_hop),
            (Framing::Chunked, false, true)
        );
        let r = parse("HTTP/1.0 200 OK\r\n\r\n", false);
        assert_eq!((r.framing, r.reusable), (Framing::UntilClose, false));
        let r = parse(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            false,
        );
        assert_eq!((r.framing, r.reusable), (Framing::Empty, true));
        let mut out = Vec::new();
        rewrite_response(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
            true,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn chunked_bodies_end_where_they_end_in_any_pieces() {
        let body =
            b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        for split in 0..body.len() {
            let mut chunks = Chunks::default();
            let a = chunks.scan(&body[..split]).unwrap();
            assert_eq!(a, split.min(end));
            let b = chunks.scan(&body[a..]).unwrap();
            assert_eq!(a + b, end, "split at {split}");
            assert!(chunks.is_done());
        }
        for bad in [&b"x\r\n"[..], b"5\r\nhelloXX", b"fffffffffffffffff\r\n"] {
            assert!(Chunks::default().scan(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lengths_and_remaining() {
        assert_eq!(parse_length(b" 42 "), Some(42));
        assert_eq!(parse_length(b"99999999999999999999"), None);
        let mut r = Remaining::of(Framing::Length(5));
        assert_eq!(r.take(b"abc").unwrap(), 3);
        assert_eq!(r.take(b"defgh").unwrap(), 2);
        assert!(r.is_done());
    }
}
