//! Ports for a test's own listeners.

use std::net::{Ipv4Addr, TcpListener};

/// A TCP port free on loopback right now (the kernel's pick; the caller binds
/// it soon after, and a clash with another test is then an error it sees).
pub fn free_port() -> u16 {
    free_port_on(Ipv4Addr::LOCALHOST)
}

/// A TCP port free on `addr` right now.
pub fn free_port_on(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
