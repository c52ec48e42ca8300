//! A dyno's output: its merged stdout/stderr pipe, plus the lines the runtime
//! itself has to say about the dyno (R14, R15), placed between the app's lines.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc::UnboundedReceiver;

pub(crate) struct DynoOutput<R> {
    /// `None` once it reached end-of-file.
    pipe: Option<R>,
    notices: UnboundedReceiver<String>,
    notices_done: bool,
    /// A notice being handed out.
    pending: Vec<u8>,
    sent: usize,
    /// The last byte from the pipe was not a newline: a notice must start a line.
    mid_line: bool,
}

impl<R> DynoOutput<R> {
    pub(crate) fn new(pipe: R, notices: UnboundedReceiver<String>) -> DynoOutput<R> {
        DynoOutput {
            pipe: Some(pipe),
            notices,
            notices_done: false,
            pending: Vec::new(),
            sent: 0,
            mid_line: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for DynoOutput<R> {
    /// The app's bytes come first; a notice goes out only while the pipe has
    /// nothing to give, so it never lands before output the app wrote earlier.
    /// End-of-file comes once the pipe is closed and no notice can follow.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.sent < this.pending.len() {
                let n = buf.remaining().min(this.pending.len() - this.sent);
                buf.put_slice(&this.pending[this.sent..this.sent + n]);
                this.sent += n;
                return Poll::Ready(Ok(()));
            }
            if let Some(pipe) = this.pipe.as_mut() {
                let before = buf.filled().len();
                match Pin::new(pipe).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => {
                        let filled = buf.filled();
                        if filled.len() > before {
                            this.mid_line = filled.last() != Some(&b'\n');
                            return Poll::Ready(Ok(()));
                        }
                        this.pipe = None;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if !this.notices_done {
                match this.notices.poll_recv(cx) {
                    Poll::Ready(Some(line)) => {
                        this.pending.clear();
                        this.sent = 0;
                        if this.mid_line {
                            this.pending.push(b'\n');
                            this.mid_line = false;
                        }
                        this.pending.extend_from_slice(line.as_bytes());
                        this.pending.push(b'\n');
                        continue;
                    }
                    Poll::Ready(None) => this.notices_done = true,
                    Poll::Pending => {}
                }
            }
            if this.pipe.is_none() && this.notices_done {
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn notices_follow_the_apps_output_on_their_own_lines() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let pipe: &[u8] = b"line one\npartial";
        let mut out = DynoOutput::new(pipe, rx);
        tx.send("Error R14 (Memory quota exceeded)".into()).unwrap();
        drop(tx);
        let mut all = String::new();
        out.read_to_string(&mut all).await.unwrap();
        assert_eq!(
            all,
            "line one\npartial\nError R14 (Memory quota exceeded)\n"
        );
    }

    #[tokio::test]
    async fn end_of_file_waits_for_the_last_notice() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let pipe: &[u8] = b"bye\n";
        let mut out = DynoOutput::new(pipe, rx);
        let mut buf = vec![0u8; 64];
        let n = out.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"bye\n");
        let reader = tokio::spawn(async move {
            let mut rest = String::new();
            out.read_to_string(&mut rest).await.unwrap();
            rest
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!reader.is_finished());
        tx.send("Error R15 (Memory quota vastly exceeded)".into())
            .unwrap();
        drop(tx);
        assert_eq!(
            reader.await.unwrap(),
            "Error R15 (Memory quota vastly exceeded)\n"
        );
    }
}
