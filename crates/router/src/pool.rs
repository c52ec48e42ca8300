//! Kept-alive connections to dynos, per port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

pub type Sender = hyper::client::conn::http1::SendRequest<Incoming>;

/// Idle connections kept per dyno; more than this are closed when returned.
const IDLE_PER_PORT: usize = 64;

#[derive(Clone, Default)]
pub struct Pool {
    idle: Arc<Mutex<HashMap<u16, Vec<Sender>>>>,
}

impl Pool {
    /// An idle connection to `port`, ready for a request.
    pub async fn take(&self, port: u16) -> Option<Sender> {
        loop {
            let mut sender = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.get_mut(&port)?.pop()?
            };
            // A connection comes back as soon as its response is read; the
            // connection task may not have marked it idle yet.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    pub fn give(&self, port: u16, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.entry(port).or_default();
        if senders.len() < IDLE_PER_PORT {
            senders.push(sender);
        }
    }
}

/// A new connection to a dyno on this machine.
pub async fn connect(port: u16, timeout: Duration) -> std::io::Result<Sender> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    Ok(sender)
}
