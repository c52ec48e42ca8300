//! Kept-alive connections to dynos, per address (and the network namespace
//! it is reached from) and per thread.
//!
//! Each router thread keeps its own idle connections, as each nginx worker
//! does: a request and the dyno connection it borrows are driven by the same
//! task, so there is no connection task to wake, and per thread there is no
//! contention either, so no lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use crew_engine::WebBackend;
use tokio::net::TcpStream;

/// Idle connections kept per dyno and thread; more than this are closed when
/// returned.
const IDLE_PER_DYNO: usize = 64;

/// A connection to a dyno, with what has been read from it and not yet used.
pub(crate) struct DynoConnection {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
}

/// Where a connection goes: the dyno's address, and the namespace it is
/// reached from (0 for this process's own). An overlay's addresses can be
/// another network's too.
type Destination = (SocketAddr, u64);

fn destination(backend: &WebBackend) -> Destination {
    (
        backend.addr,
        backend.namespace.as_ref().map_or(0, |ns| ns.id()),
    )
}

thread_local! {
    static IDLE: RefCell<HashMap<Destination, Vec<DynoConnection>>> = RefCell::new(HashMap::new());
}

/// An idle connection to `backend` that the dyno has not closed.
pub(crate) fn take(backend: &WebBackend) -> Option<DynoConnection> {
    let to = destination(backend);
    loop {
        // `try_with`: a thread being torn down has no pool left, which only
        // means a new connection.
        let mut connection = IDLE
            .try_with(|idle| idle.borrow_mut().get_mut(&to)?.pop())
            .ok()
            .flatten()?;
        if !closed_by_dyno(&mut connection.stream) {
            return Some(connection);
        }
    }
}

/// An idle connection has nothing to read; if it has, the dyno closed it (or
/// sent what nobody asked for). Readiness is known without a syscall; only a
/// connection marked readable is read, to tell.
fn closed_by_dyno(stream: &mut TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => false,
        Poll::Ready(Err(_)) => true,
        Poll::Ready(Ok(())) => {
            let mut byte = [0; 1];
            !matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

/// Keeps a connection whose last response was read to its end.
pub(crate) fn give(backend: &WebBackend, connection: DynoConnection) {
    let _ = IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        let connections = idle.entry(destination(backend)).or_default();
        // Connections to a dyno that has gone are dropped as they come up
        // again in `take`; this bound keeps them few until then.
        if connections.len() < IDLE_PER_DYNO {
            connections.push(connection);
        }
    });
}

/// A new connection to a dyno, made in the backend's namespace if it has one.
pub(crate) async fn connect(
    backend: &WebBackend,
    timeout: Duration,
) -> std::io::Result<DynoConnection> {
    let addr = backend.addr;
    let connecting = async {
        match &backend.namespace {
            Some(namespace) => namespace.connect(addr).await,
            None => TcpStream::connect(addr).await,
        }
    };
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(DynoConnection {
        stream,
        buf: BytesMut::with_capacity(crate::http1::READ_SIZE),
    })
}
