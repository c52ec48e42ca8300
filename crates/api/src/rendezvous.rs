//! `heroku run`, attached: Heroku's rendezvous protocol.
//!
//! The official CLI POSTs the dyno with `attach: true` and gets back an
//! `attach_url` `rendezvous://HOST:PORT/SECRET`. It opens TLS to HOST:PORT
//! (crew's API port, which answers TLS), writes `SECRET\r\n`, throws away the
//! first chunk it reads and only then sends its stdin: raw keystrokes with a
//! terminal, or the bytes of stdin and a final `0x04` without one. Everything
//! the dyno writes comes back as it is; with `-x` the CLI looks for the line
//! `\u{FFFF} heroku-command-exit-status: N` in one chunk, so that line is never
//! split across TLS records. There is no exit frame: the connection closes.
//!
//! A secret is single-use and good for [`PENDING`]: a dyno nobody connects
//! to in that time is hung up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::attach::Attached;

/// How long a secret waits for its connection.
pub const PENDING: Duration = Duration::from_secs(60);

/// The first chunk the CLI reads and discards.
const GREETING: &[u8] = b"rendezvous\r\n";

/// The `-x` marker's first bytes (U+FFFF in UTF-8).
const MARKER: &[u8] = "\u{FFFF}".as_bytes();

/// One waiting dyno.
struct Waiting {
    attached: Attached,
    /// Pipes, not a terminal: a `0x04` from the client is the end of stdin.
    pipes: bool,
}

/// Attached dynos waiting for their rendezvous, by secret.
#[derive(Clone, Default)]
pub struct Rendezvous {
    waiting: Arc<Mutex<HashMap<String, Waiting>>>,
}

impl Rendezvous {
    /// Keeps `attached` for whoever brings the returned secret within
    /// [`PENDING`].
    pub fn offer(&self, attached: Attached, pipes: bool) -> std::io::Result<String> {
        let secret = crate::secret::random_hex(24)?;
        self.lock()
            .insert(secret.clone(), Waiting { attached, pipes });
        let this = self.clone();
        let expiring = secret.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PENDING).await;
            // Dropping the attachment hangs the dyno up.
            drop(this.lock().remove(&expiring));
        });
        Ok(secret)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves one rendezvous connection whose first line, `SECRET\r\n`, is
    /// `line` (without its end).
    pub async fn serve<C>(&self, line: &[u8], client: C)
    where
        C: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let secret = String::from_utf8_lossy(line).trim().to_string();
        let Some(waiting) = self.lock().remove(&secret) else {
            return;
        };
        carry(client, waiting).await;
    }
}

/// Whether a connection's first bytes are a rendezvous secret rather than an
/// HTTP request: secrets are lowercase hex, methods uppercase.
pub fn looks_like_secret(first: u8) -> bool {
    first.is_ascii_digit() || (b'a'..=b'f').contains(&first)
}

async fn carry<C>(client: C, waiting: Waiting)
where
    C: AsyncRead + AsyncWrite + Send + Unpin,
{
    let Waiting { attached, pipes } = waiting;
    let Attached {
        mut output,
        mut input,
        resize: _,
        mut exit,
        hangup,
    } = attached;
    let (mut from_client, mut to_client) = tokio::io::split(client);
    // The greeting is a record of its own: the CLI discards its first chunk.
    if to_client.write_all(GREETING).await.is_err() || to_client.flush().await.is_err() {
        return;
    }
    let mut chunk = vec![0u8; 16 * 1024];
    let mut keys = vec![0u8; 4 * 1024];
    let mut held: Vec<u8> = Vec::new();
    let mut output_open = true;
    let mut code: Option<i32> = None;
    let mut stdin_ended = false;
    loop {
        let drain = async {
            match code {
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = output.read(&mut chunk), if output_open => match read {
                Ok(0) | Err(_) => output_open = false,
                Ok(n) => {
                    held.extend_from_slice(&chunk[..n]);
                    let ready = whole_marker_lines(&held);
                    if ready > 0 {
                        let send: Vec<u8> = held.drain(..ready).collect();
                        if to_client.write_all(&send).await.is_err()
                            || to_client.flush().await.is_err()
                        {
                            break;
                        }
                    }
                }
            },
            status = &mut exit, if code.is_none() => code = Some(status),
            () = drain, if output_open => output_open = false,
            read = from_client.read(&mut keys) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut bytes = &keys[..n];
                    let mut end = false;
                    if pipes && let Some(at) = bytes.iter().position(|b| *b == 0x04) {
                        bytes = &bytes[..at];
                        end = true;
                    }
                    if let Some(writer) = input.as_mut()
                        && writer.write_all(bytes).await.is_err()
                    {
                        input = None;
                    }
                    if end {
                        stdin_ended = true;
                        if let Some(mut writer) = input.take() {
                            let _ = writer.shutdown().await;
                        }
                    }
                }
            },
        }
        if code.is_some() && !output_open {
            if !held.is_empty() {
                let _ = to_client.write_all(&held).await;
            }
            let _ = to_client.flush().await;
            // Without a terminal the CLI writes its `0x04` when its stdin
            // ends, and a write to a connection closed under it crashes it:
            // wait for that byte (a little) before closing.
            if pipes && !stdin_ended {
                let _ = tokio::time::timeout(STDIN_GRACE, async {
                    loop {
                        match from_client.read(&mut keys).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) if keys[..n].contains(&0x04) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
            }
            let _ = to_client.shutdown().await;
            break;
        }
    }
    drop(hangup);
}

/// How long a finished session without a terminal waits for the client's end
/// of stdin before closing.
const STDIN_GRACE: Duration = Duration::from_secs(5);

/// How much of `held` can be sent now: all of it, except from a `-x` marker
/// (or the start of one at the very end) that its newline has not followed
/// yet, so that the marker line goes out in one record.
fn whole_marker_lines(held: &[u8]) -> usize {
    let mut from = 0;
    while let Some(at) = find(&held[from..], MARKER).map(|i| i + from) {
        match held[at..].iter().position(|b| *b == b'\n') {
            Some(nl) => from = at + nl + 1,
            None => return at,
        }
    }
    // A marker cut after its first or second byte.
    for keep in (1..MARKER.len()).rev() {
        if held.len() >= from + keep && held.ends_with(&MARKER[..keep]) {
            return held.len() - keep;
        }
    }
    held.len()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attachment whose dyno prints `out`, and whose stdin lands in the
    /// returned reader.
    fn dyno(out: &'static [u8]) -> (Attached, tokio::io::DuplexStream) {
        let (dyno_in, dyno_in_w) = tokio::io::duplex(1024);
        let attached = Attached {
            output: Box::pin(out),
            input: Some(Box::pin(dyno_in_w)),
            resize: None,
            exit: Box::pin(async { 0 }),
            hangup: Box::new(()),
        };
        (attached, dyno_in)
    }

    #[tokio::test]
    async fn a_secret_is_good_once_and_an_unknown_one_gets_nothing() {
        let rendezvous = Rendezvous::default();
        let (attached, _dyno_in) = dyno(b"output");
        let secret = rendezvous.offer(attached, true).expect("urandom");
        assert!(secret.bytes().all(looks_like_secret));

        let (mut client, server) = tokio::io::duplex(1024);
        rendezvous.serve(b"0123abcd", server).await;
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("reading");
        assert!(got.is_empty(), "{got:?}");

        let (mut client, server) = tokio::io::duplex(1024);
        let session = tokio::spawn({
            let rendezvous = rendezvous.clone();
            let secret = secret.clone();
            async move { rendezvous.serve(secret.as_bytes(), server).await }
        });
        client.write_all(b"\x04").await.expect("writing");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("reading");
        session.await.expect("the session");
        assert_eq!(got, b"rendezvous\r\noutput");

        let (mut client, server) = tokio::io::duplex(1024);
        rendezvous.serve(secret.as_bytes(), server).await;
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("reading");
        assert!(got.is_empty(), "a secret served twice: {got:?}");
    }

    #[tokio::test]
    async fn without_a_terminal_0x04_ends_the_dynos_stdin() {
        let rendezvous = Rendezvous::default();
        let (mut attached, mut dyno_in) = dyno(b"");
        // A dyno that reads its stdin lives until that stdin ends: one that
        // has already exited has no stdin left to carry.
        let (exited, exit) = tokio::sync::oneshot::channel::<()>();
        attached.exit = Box::pin(async move {
            let _ = exit.await;
            0
        });
        let secret = rendezvous.offer(attached, true).expect("urandom");
        let (mut client, server) = tokio::io::duplex(1024);
        let session = tokio::spawn({
            let rendezvous = rendezvous.clone();
            async move { rendezvous.serve(secret.as_bytes(), server).await }
        });
        client.write_all(b"hi\n\x04").await.expect("writing");
        let mut stdin = String::new();
        dyno_in
            .read_to_string(&mut stdin)
            .await
            .expect("the dyno's stdin");
        assert_eq!(stdin, "hi\n");
        let _ = exited.send(());
        session.await.expect("the session");
    }

    #[test]
    fn the_exit_marker_line_is_held_until_whole() {
        let marker = "\u{FFFF} heroku-command-exit-status: 3";
        let text = format!("out\n{marker}");
        assert_eq!(whole_marker_lines(text.as_bytes()), 4);
        let text = format!("out\n{marker}\n");
        assert_eq!(whole_marker_lines(text.as_bytes()), text.len());
        let mut cut = b"out\n".to_vec();
        cut.extend_from_slice(&MARKER[..2]);
        assert_eq!(whole_marker_lines(&cut), 4);
        assert_eq!(whole_marker_lines(b"plain output"), 12);
    }
}
