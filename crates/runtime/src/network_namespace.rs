//! Sockets in another process's network namespace.
//!
//! A socket belongs to the network namespace it was made in, for its whole
//! life, whichever thread uses it later. So a process can reach a network it
//! is not on (a container's, an overlay's) by making sockets in a namespace
//! that is, and connecting them from anywhere. Entering a namespace moves
//! the calling thread, though; a runtime thread that entered one and failed
//! to leave would make every later connection of its own in the wrong place.
//! Each [`NetworkNamespace`] therefore has a thread of its own that enters
//! once and stays, and makes sockets when asked. It ends when the last
//! handle is dropped; the namespace lives as long as the thread is in it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use std::io;
use std::os::fd::OwnedFd;

use tokio::sync::oneshot;

use crate::os;

type SocketRequest = (bool, oneshot::Sender<io::Result<OwnedFd>>);

/// A handle on a network namespace that TCP sockets can be made in.
pub struct NetworkNamespace {
    id: u64,
    pid: u32,
    requests: mpsc::Sender<SocketRequest>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl NetworkNamespace {
    /// The network namespace process `pid` is in, entered by a thread of
    /// its own. Fails if the namespace cannot be entered: that needs
    /// `CAP_SYS_ADMIN` over it, so, for another user's process, root.
    pub fn of_process(pid: u32) -> io::Result<NetworkNamespace> {
        let ns = os::open_network_namespace(pid)?;
        let (requests, inbox) = mpsc::channel::<SocketRequest>();
        let (entered_tx, entered) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("netns-{pid}"))
            .spawn(move || {
                let result = os::enter_network_namespace(&ns);
                let ok = result.is_ok();
                let _ = entered_tx.send(result);
                if !ok {
                    return;
                }
                drop(ns);
                // Ends when every handle (every sender) is gone.
                for (ipv6, reply) in inbox {
                    let _ = reply.send(os::tcp_socket(ipv6));
                }
            })?;
        entered
            .recv()
            .map_err(|_| io::Error::other("the namespace's thread ended before it said"))??;
        Ok(NetworkNamespace {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pid,
            requests,
        })
    }

    /// Tells handles apart: two handles on the same namespace entered twice
    /// are two ids.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The process whose namespace this is (as it was when entered).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A new socket in the namespace, not yet connected, for reaching
    /// `addr`'s address family.
    pub async fn tcp_socket(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((addr.is_ipv6(), reply))
            .map_err(|_| io::Error::other("the namespace's thread has ended"))?;
        let fd = answer
            .await
            .map_err(|_| io::Error::other("the namespace's thread has ended"))??;
        Ok(tokio::net::TcpSocket::from_std_stream(
            std::net::TcpStream::from(fd),
        ))
    }

    /// Connects to `addr` from inside the namespace.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        self.tcp_socket(addr).await?.connect(addr).await
    }
}

impl PartialEq for NetworkNamespace {
    fn eq(&self, other: &NetworkNamespace) -> bool {
        self.id == other.id
    }
}

impl Eq for NetworkNamespace {}

impl std::fmt::Debug for NetworkNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetworkNamespace(pid {}, #{})", self.pid, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn namespace_link(pid: u32) -> Option<std::path::PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
    }

    /// A process in a network namespace of its own, killed when dropped.
    struct Isolated(std::process::Child);

    impl Drop for Isolated {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn sockets_are_made_in_the_namespace_entered() {
        if !os::is_root() {
            eprintln!("skipped: entering a network namespace needs root");
            return;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let addr = listener.local_addr().expect("address");

        // Our own namespace: the listener is reached.
        let ours = NetworkNamespace::of_process(std::process::id()).expect("enter our namespace");
        let (connected, accepted) = tokio::join!(ours.connect(addr), listener.accept());
        let connected = connected.expect("connect from our namespace");
        let (accepted, _) = accepted.expect("accept");
        assert_eq!(connected.local_addr().ok(), accepted.peer_addr().ok());

        // A new, empty one (its loopback is down): the same address is not.
        let child = Command::new("unshare")
            .args(["--net", "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)");
        let isolated = Isolated(child);
        let pid = isolated.0.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while namespace_link(pid) == namespace_link(std::process::id()) {
            assert!(
                Instant::now() < deadline,
                "unshare never left our namespace"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let theirs = NetworkNamespace::of_process(pid).expect("enter the new namespace");
        assert_ne!(theirs, ours);
        let err = theirs
            .connect(addr)
            .await
            .expect_err("nothing is reachable in an empty namespace");
        assert_eq!(err.kind(), io::ErrorKind::NetworkUnreachable, "{err}");
    }

    #[test]
    fn a_missing_process_is_an_error() {
        // Pids are at most 2^22 on Linux.
        let err = NetworkNamespace::of_process(u32::MAX - 1).expect_err("no such process");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
