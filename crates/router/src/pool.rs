//! Kept-alive connections to dynos, per address and per thread.
//!
//! Each router thread keeps its own idle connections, as each nginx worker
//! does: a connection's task runs on the thread that opened it, so handing it
//! to a request on another thread would cost a cross-thread wake-up on every
//! request and response. Per thread there is no contention either, so no lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

pub type Sender = hyper::client::conn::http1::SendRequest<Incoming>;

/// Idle connections kept per dyno and thread; more than this are closed when
/// returned.
const IDLE_PER_DYNO: usize = 64;

thread_local! {
    static IDLE: RefCell<HashMap<SocketAddr, Vec<Sender>>> = RefCell::new(HashMap::new());
}

/// An idle connection to `addr`, ready for a request.
pub async fn take(addr: SocketAddr) -> Option<Sender> {
    loop {
        // `try_with`: a thread being torn down has no pool left, which only
        // means a new connection.
        let mut sender = IDLE
            .try_with(|idle| idle.borrow_mut().get_mut(&addr)?.pop())
            .ok()
            .flatten()?;
        // A connection comes back as soon as its response is read; the
        // connection task may not have marked it idle yet.
        if sender.ready().await.is_ok() {
            return Some(sender);
        }
    }
}

pub fn give(addr: SocketAddr, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    let _ = IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        let senders = idle.entry(addr).or_default();
        // Connections to a dyno that has gone are dropped as they come up
        // again in `take`; this bound keeps them few until then.
        if senders.len() < IDLE_PER_DYNO {
            senders.push(sender);
        }
    });
}

/// A new connection to a dyno.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Sender> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    Ok(sender)
}
