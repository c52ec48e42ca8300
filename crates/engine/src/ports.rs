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

    #[test]
    fn hands_out_distinct_ports_and_takes_them_back() {
        let pool = PortPool::new(41000..=41002);
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
        let held = std::net::TcpListener::bind(("127.0.0.1", 41010)).expect("bind");
        let pool = PortPool::new(41010..=41011);
        assert_eq!(pool.take(), Some(41011));
        drop(held);
    }
}
