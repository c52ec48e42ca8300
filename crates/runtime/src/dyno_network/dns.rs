//! A DNS relay on the bridge's address, for hosts whose resolver listens on
//! loopback (systemd-resolved's 127.0.0.53, a dnsmasq on 127.0.0.1), which a
//! dyno's namespace cannot reach.
//!
//! It does not read DNS at all: each UDP datagram goes upstream from a socket
//! of its own and the first answer goes back; each TCP connection is joined
//! to one upstream. That is all a relay to one resolver needs, so it is
//! written here rather than pulling in a resolver library. It is bounded: at
//! most [`MAX_UDP`] queries and [`MAX_TCP`] connections at once (a flood
//! from one dyno loses its own queries), each with a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

const MAX_UDP: usize = 256;
const MAX_TCP: usize = 64;
const UDP_DEADLINE: Duration = Duration::from_secs(5);
const TCP_DEADLINE: Duration = Duration::from_secs(30);

/// Binds `listen` (UDP and TCP) and relays to `upstream` until the runtime
/// ends. Binding happens now, so an error is seen at start.
pub(crate) fn start(
    runtime: &tokio::runtime::Handle,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> std::io::Result<()> {
    let udp = std::net::UdpSocket::bind(listen)?;
    udp.set_nonblocking(true)?;
    let tcp = std::net::TcpListener::bind(listen)?;
    tcp.set_nonblocking(true)?;
    let _guard = runtime.enter();
    let udp = Arc::new(UdpSocket::from_std(udp)?);
    let tcp = TcpListener::from_std(tcp)?;
    runtime.spawn(relay_udp(udp, upstream));
    runtime.spawn(relay_tcp(tcp, upstream));
    Ok(())
}

async fn relay_udp(listener: Arc<UdpSocket>, upstream: SocketAddr) {
    let slots = Arc::new(Semaphore::new(MAX_UDP));
    let mut buffer = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = listener.recv_from(&mut buffer).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let query = buffer[..n].to_vec();
        let listener = listener.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let bind: SocketAddr = if upstream.is_ipv6() {
                "[::]:0".parse().unwrap_or(upstream)
            } else {
                "0.0.0.0:0".parse().unwrap_or(upstream)
            };
            let Ok(socket) = UdpSocket::bind(bind).await else {
                return;
            };
            if socket.connect(upstream).await.is_err() || socket.send(&query).await.is_err() {
                return;
            }
            let mut answer = vec![0u8; 65536];
            if let Ok(Ok(n)) = tokio::time::timeout(UDP_DEADLINE, socket.recv(&mut answer)).await {
                let _ = listener.send_to(&answer[..n], client).await;
            }
        });
    }
}

async fn relay_tcp(listener: TcpListener, upstream: SocketAddr) {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let relay = async {
                let mut server = TcpStream::connect(upstream).await?;
                tokio::io::copy_bidirectional(&mut client, &mut server).await
            };
            let _ = tokio::time::timeout(TCP_DEADLINE, relay).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queries_and_answers_pass_both_ways() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let upstream_tcp = TcpListener::bind(upstream_addr).await.unwrap();
        let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let listen = free.local_addr().unwrap();
        drop(free);
        start(&tokio::runtime::Handle::current(), listen, upstream_addr).unwrap();

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"question", listen).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"question");
        upstream.send_to(b"answer", from).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(&buf[..n], b"answer");

        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(listen).await.unwrap();
        stream.write_all(b"long question").await.unwrap();
        let (mut server, _) = upstream_tcp.accept().await.unwrap();
        let mut got = [0u8; 13];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"long question");
        server.write_all(b"long answer").await.unwrap();
        let mut answer = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(&answer, b"long answer");
    }
}
