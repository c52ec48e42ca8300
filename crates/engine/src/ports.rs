//! A server's pool of ports for dynos.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::Mutex;

/// Hands out free ports from a range, round robin, so a port just given back
/// is not reused at once while a client may still be talking to its old owner.
#[derive(Debug)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    used: BTreeSet<u16>,
    next: u16,
}

impl PortPool {
    pub fn new(range: RangeInclusive<u16>) -> PortPool {
        let next = *range.start();
        PortPool {
            range,
            state: Mutex::new(PoolState {
                used: BTreeSet::new(),
                next,
            }),
        }
    }

    /// A port nobody in the pool holds and nothing on this machine listens on.
    pub fn take(&self) -> Option<u16> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (first, last) = (*self.range.start(), *self.range.end());
        let size = u32::from(last - first) + 1;
        for _ in 0..size {
            let port = state.next;
            state.next = if port >= last { first } else { port + 1 };
            if state.used.contains(&port) {
                continue;
            }
            // Something outside crew may hold it; binding tells.
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            state.used.insert(port);
            return Some(port);
        }
        None
    }

    pub fn give_back(&self, port: u16) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.used.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first of `n` consecutive ports nobody listens on right now.
    fn free_run(n: u16) -> u16 {
        (42000..60000u16)
            .step_by(usize::from(n))
            .find(|first| {
                (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", first + i)).is_ok())
            })
            .expect("a run of free ports")
    }

    #[test]
    fn hands_out_distinct_ports_and_takes_them_back() {
        let first = free_run(3);
        let pool = PortPool::new(first..=first + 2);
        let a = pool.take().expect("a port");
        let b = pool.take().expect("a port");
        let c = pool.take().expect("a port");
        assert_eq!(BTreeSet::from([a, b, c]).len(), 3);
        assert_eq!(pool.take(), None);
        pool.give_back(b);
        assert_eq!(pool.take(), Some(b));
    }

    #[test]
    fn skips_a_port_someone_else_listens_on() {
        let held = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = held.local_addr().expect("address").port();
        let pool = PortPool::new(port..=port);
        assert_eq!(pool.take(), None);
        drop(held);
        assert_eq!(pool.take(), Some(port));
    }
}
