//! What the router answers with: a dyno's response body passed on as it
//! comes, or a page of its own.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crew_engine::WebBackend;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::pool::{self, Sender};
use crate::{AccessLine, InFlightGuard};

/// A response body. An enum rather than a boxed body: one allocation less on
/// every request.
pub(crate) enum ProxyBody {
    Page(Full<Bytes>),
    Dyno(Tracked),
}

impl ProxyBody {
    pub(crate) fn empty() -> ProxyBody {
        ProxyBody::Page(Full::new(Bytes::new()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Page(page) => match Pin::new(page).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            ProxyBody::Dyno(tracked) => Pin::new(tracked).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Page(page) => page.is_end_stream(),
            ProxyBody::Dyno(tracked) => tracked.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Page(page) => page.size_hint(),
            ProxyBody::Dyno(tracked) => tracked.inner.size_hint(),
        }
    }
}

/// A small HTML error page, as Heroku serves one.
pub(crate) fn page(status: StatusCode, title: &str, text: &str) -> Response<ProxyBody> {
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    let mut response = Response::new(ProxyBody::Page(Full::new(Bytes::from(html))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// What happens once a response body has been passed on: the access line, the
/// connection back to the pool, the in-flight count down.
pub(crate) struct Done {
    pub(crate) line: AccessLine,
    /// The list the dyno was picked from, and its place in it: its name for
    /// the access line without a copy.
    pub(crate) backends: Arc<Vec<WebBackend>>,
    pub(crate) index: usize,
    pub(crate) connect: Duration,
    pub(crate) started: Instant,
    pub(crate) status: StatusCode,
    pub(crate) _guard: InFlightGuard,
    /// The dyno's address and connection, when it can take another request.
    pub(crate) sender: Option<(std::net::SocketAddr, Sender)>,
}

/// A dyno's response body on its way to the client.
pub(crate) struct Tracked {
    inner: Incoming,
    bytes: u64,
    done: Option<Done>,
}

impl Tracked {
    pub(crate) fn new(inner: Incoming, done: Done) -> Tracked {
        Tracked {
            inner,
            bytes: 0,
            done: Some(done),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            let dyno = done
                .backends
                .get(done.index)
                .map_or("", |b| b.name.as_str());
            done.line
                .info(dyno, done.connect, done.started, done.status, self.bytes);
            // Only a connection whose response was read to the end can take
            // another request.
            if complete && let Some((addr, sender)) = done.sender {
                pool::give(addr, sender);
            }
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}
