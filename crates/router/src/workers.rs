//! The router's threads: one single-threaded tokio runtime per core, each
//! serving the client connections handed to it, as nginx runs one worker
//! process per core.
//!
//! On a work-stealing runtime a request, the task of the dyno connection it
//! borrows and the response often run on different threads, and every hop
//! between them is a cross-thread wake-up. Keeping a client connection and
//! the dyno connections it uses on one thread makes those hops cheap, local
//! wake-ups (BENCHMARKS.md, Router, has the CPU per request).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::{ConnectionSlot, Router, Routes};

type Accepted = (std::net::TcpStream, SocketAddr, ConnectionSlot);

pub(crate) struct Workers {
    queues: Vec<mpsc::UnboundedSender<Accepted>>,
    next: AtomicUsize,
}

impl Workers {
    /// One worker per core. `None` when not even one could start, and then the
    /// caller serves connections on its own runtime.
    ///
    /// A worker stops, closing its connections, once `Workers` is dropped: its
    /// queue closes, its runtime ends and drops their tasks.
    pub(crate) fn start<R: Routes>(router: &Arc<Router<R>>) -> Option<Workers> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let queues: Vec<_> = (0..cores)
            .filter_map(|i| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                let (queue, mut accepted) = mpsc::unbounded_channel::<Accepted>();
                let router = router.clone();
                std::thread::Builder::new()
                    .name(format!("crew-router-{i}"))
                    .spawn(move || {
                        runtime.block_on(async move {
                            tokio::spawn(crate::access::flush_forever());
                            while let Some((stream, client, slot)) = accepted.recv().await {
                                if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                                    tokio::spawn(router.clone().connection(stream, client, slot));
                                }
                            }
                        });
                    })
                    .ok()?;
                Some(queue)
            })
            .collect();
        (!queues.is_empty()).then_some(Workers {
            queues,
            next: AtomicUsize::new(0),
        })
    }

    /// Gives an accepted connection to the next worker, round robin.
    pub(crate) fn hand_over(
        &self,
        stream: tokio::net::TcpStream,
        client: SocketAddr,
        slot: ConnectionSlot,
    ) {
        // Out of this runtime's reactor, into the worker's.
        let Ok(stream) = stream.into_std() else {
            return;
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        let _ = self.queues[n].send((stream, client, slot));
    }
}
