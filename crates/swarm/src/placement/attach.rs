//! A container on this node, attached before it starts: how an attached
//! one-off and a release command run, since Swarm cannot attach to a task.

use crate::docker::{Docker, DockerError, Upgraded};

/// Copies a multiplexed attach stream's payloads (stdout and stderr alike)
/// into `out`, so the client reads what a terminal would show.
pub(super) async fn demux_into(
    mut input: impl tokio::io::AsyncRead + Unpin,
    mut out: impl tokio::io::AsyncWrite + Unpin,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut demux = crate::mux::Demux::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match input.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        demux.push(&buf[..n]);
        while let Some((_, payload)) = demux.next_frame() {
            if out.write_all(&payload).await.is_err() {
                return;
            }
        }
    }
    let _ = out.shutdown().await;
}

/// Attaches to a created container, then starts it: attached first, so that
/// none of its output is lost. A container that cannot be attached to or
/// started is removed.
pub(super) async fn attach_and_start(docker: &Docker, id: &str) -> Result<Upgraded, DockerError> {
    let attached = match docker.container_attach(id).await {
        Ok(attached) => attached,
        Err(e) => {
            let _ = docker.container_remove(id).await;
            return Err(e);
        }
    };
    if let Err(e) = docker.container_start(id).await {
        let _ = docker.container_remove(id).await;
        return Err(e);
    }
    Ok(attached)
}
