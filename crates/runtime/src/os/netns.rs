//! Network namespaces by thread: opening a process's or this thread's,
//! moving one thread into another or a new one, and making a socket there
//! (for `NetworkNamespace` and the dyno network's preparation).
//!
//! Only the calling thread moves, never the process: the other threads of
//! crew stay on the host's network.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// Opens a process's network namespace, `/proc/PID/ns/net`.
pub(crate) fn open_network_namespace(pid: u32) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        format!("/proc/{pid}/ns/net"),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Moves the calling thread, and only it, into the network namespace `ns`.
/// Needs `CAP_SYS_ADMIN` over the namespace.
pub(crate) fn enter_network_namespace(ns: &OwnedFd) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(io::Error::from)
}

/// A new, unconnected, non-blocking TCP socket, in the calling thread's
/// network namespace.
pub(crate) fn tcp_socket(ipv6: bool) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if ipv6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(io::Error::from)
}

/// Moves the calling thread, and only it, into a new, empty network
/// namespace (see `dyno_network`: the thread goes back with
/// [`enter_network_namespace`]).
pub(crate) fn new_thread_network_namespace() -> io::Result<()> {
    // SAFETY: only a new network namespace is asked for, never
    // `CLONE_FILES` (the flag that could leave other threads with a
    // descriptor table of their own), so no other thread is affected.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(io::Error::from)
}

/// The network namespace of the calling thread (not of the process: a
/// thread may have entered another).
pub(crate) fn open_thread_network_namespace() -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        "/proc/thread-self/ns/net",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}
