//! Attached one-offs: `crew run -a APP COMMAND` with the terminal carried over
//! the API.
//!
//! The client POSTs the usual `DynoCreate` (with `attach: true`) and asks to
//! upgrade the connection to [`PROTOCOL`]. After `101 Switching Protocols` both
//! sides send frames: one kind byte, a big-endian `u32` length, then the payload.
//!
//! | kind | direction | payload |
//! |------|-----------|---------|
//! | `i`  | to dyno   | bytes for its stdin (keys, with a terminal) |
//! | `r`  | to dyno   | the window size: columns and rows, `u16` each |
//! | `e`  | to dyno   | none: stdin is at its end (`--no-tty`) |
//! | `o`  | to client | output bytes, exactly as the dyno wrote them |
//! | `x`  | to client | the exit code, `i32`; the last frame |
//! | `!`  | to client | why the dyno could not start, UTF-8; the last frame |
//!
//! A connection that closes before the `x` frame hangs the dyno up (SIGHUP).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The `Upgrade` header's value.
pub const PROTOCOL: &str = "crew-attach";

/// The most one frame may carry; larger output is sent as several frames.
pub const MAX_FRAME: usize = 64 * 1024;

/// How long output may trail the exit before the exit frame is sent anyway:
/// a background process can hold the terminal open for good.
const OUTPUT_DRAIN: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Input(Bytes),
    Resize { cols: u16, rows: u16 },
    EndOfInput,
    Output(Bytes),
    Exit(i32),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown attach frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("attach frame of {0} bytes is larger than {MAX_FRAME}")]
    TooLarge(usize),
    #[error("attach frame `{kind}` has {len} bytes, not {expected}")]
    BadLength {
        kind: char,
        len: usize,
        expected: usize,
    },
}

impl Frame {
    pub fn encode(&self, out: &mut BytesMut) {
        let (kind, payload): (u8, &[u8]) = match self {
            Frame::Input(b) => (b'i', b),
            Frame::Output(b) => (b'o', b),
            Frame::EndOfInput => (b'e', &[]),
            Frame::Failed(text) => (b'!', text.as_bytes()),
            Frame::Resize { cols, rows } => {
                out.put_u8(b'r');
                out.put_u32(4);
                out.put_u16(*cols);
                out.put_u16(*rows);
                return;
            }
            Frame::Exit(code) => {
                out.put_u8(b'x');
                out.put_u32(4);
                out.put_i32(*code);
                return;
            }
        };
        for chunk in payload
            .chunks(MAX_FRAME)
            .chain(payload.is_empty().then_some(&[][..]))
        {
            out.put_u8(kind);
            out.put_u32(u32::try_from(chunk.len()).unwrap_or(u32::MAX));
            out.put_slice(chunk);
        }
    }

    /// Takes one whole frame off the front of `buf`, if there is one.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let kind = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let fixed = |expected: usize| {
            if len == expected {
                Ok(())
            } else {
                Err(FrameError::BadLength {
                    kind: kind as char,
                    len,
                    expected,
                })
            }
        };
        match kind {
            b'r' | b'x' => fixed(4)?,
            b'e' => fixed(0)?,
            b'i' | b'o' | b'!' => {}
            other => return Err(FrameError::UnknownKind(other)),
        }
        if buf.len() < 5 + len {
            return Ok(None);
        }
        buf.advance(5);
        let mut payload = buf.split_to(len);
        Ok(Some(match kind {
            b'i' => Frame::Input(payload.freeze()),
            b'o' => Frame::Output(payload.freeze()),
            b'!' => Frame::Failed(String::from_utf8_lossy(&payload).into_owned()),
            b'e' => Frame::EndOfInput,
            b'r' => Frame::Resize {
                cols: payload.get_u16(),
                rows: payload.get_u16(),
            },
            _ => Frame::Exit(payload.get_i32()),
        }))
    }
}

/// An attached dyno's ends, as an `ApiService` hands them to the routes.
pub struct Attached {
    pub output: Pin<Box<dyn AsyncRead + Send>>,
    pub input: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
    /// The exit code; resolves once the dyno's app exited.
    pub exit: Pin<Box<dyn Future<Output = i32> + Send>>,
    /// Dropped when the session ends, early or not: hangs the dyno up.
    pub hangup: Box<dyn Send>,
}

/// Carries one attached session between the client's connection and the dyno
/// until the dyno exits or the client goes away.
pub async fn bridge<C>(client: C, attached: Attached)
where
    C: AsyncRead + AsyncWrite + Send + Unpin,
{
    let Attached {
        mut output,
        mut input,
        resize,
        mut exit,
        hangup,
    } = attached;
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let mut incoming = BytesMut::with_capacity(8 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut outgoing = BytesMut::new();
    let mut output_open = true;
    let mut code: Option<i32> = None;
    loop {
        let drain = async {
            match code {
                Some(_) => tokio::time::sleep(OUTPUT_DRAIN).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = output.read(&mut chunk), if output_open => match read {
                Ok(0) | Err(_) => output_open = false,
                Ok(n) => {
                    Frame::Output(Bytes::copy_from_slice(&chunk[..n])).encode(&mut outgoing);
                    if to_client.write_all(&outgoing).await.is_err() {
                        break;
                    }
                    outgoing.clear();
                }
            },
            status = &mut exit, if code.is_none() => code = Some(status),
            () = drain, if output_open => output_open = false,
            read = from_client.read_buf(&mut incoming) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => loop {
                    match Frame::decode(&mut incoming) {
                        Ok(Some(Frame::Input(bytes))) => {
                            if let Some(writer) = input.as_mut()
                                && writer.write_all(&bytes).await.is_err()
                            {
                                input = None;
                            }
                        }
                        Ok(Some(Frame::Resize { cols, rows })) => {
                            if let Some(resize) = &resize {
                                resize(cols, rows);
                            }
                        }
                        Ok(Some(Frame::EndOfInput)) => {
                            if let Some(mut writer) = input.take() {
                                let _ = writer.shutdown().await;
                            }
                        }
                        Ok(Some(_)) | Ok(None) => break,
                        Err(e) => {
                            Frame::Failed(e.to_string()).encode(&mut outgoing);
                            let _ = to_client.write_all(&outgoing).await;
                            return;
                        }
                    }
                },
            },
        }
        if let (Some(code), false) = (code, output_open) {
            outgoing.clear();
            Frame::Exit(code).encode(&mut outgoing);
            let _ = to_client.write_all(&outgoing).await;
            let _ = to_client.shutdown().await;
            break;
        }
    }
    drop(hangup);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        let whole = buf.clone();
        // Any prefix is not yet a frame.
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(Frame::decode(&mut part), Ok(None), "{frame:?} cut at {cut}");
        }
        assert_eq!(Frame::decode(&mut buf), Ok(Some(frame)));
        assert!(buf.is_empty());
    }

    #[test]
    fn frames_round_trip() {
        round_trip(Frame::Input(Bytes::from_static(b"ls\r")));
        round_trip(Frame::Output(Bytes::from_static(b"\x1b[1mhi\x1b[0m")));
        round_trip(Frame::Resize {
            cols: 132,
            rows: 43,
        });
        round_trip(Frame::EndOfInput);
        round_trip(Frame::Exit(-1));
        round_trip(Frame::Exit(130));
        round_trip(Frame::Failed("no such app".into()));
    }

    #[test]
    fn large_output_is_split() {
        let mut buf = BytesMut::new();
        Frame::Output(Bytes::from(vec![7u8; MAX_FRAME * 2 + 1])).encode(&mut buf);
        let mut total = 0;
        while let Some(frame) = Frame::decode(&mut buf).unwrap() {
            match frame {
                Frame::Output(b) => total += b.len(),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(total, MAX_FRAME * 2 + 1);
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut buf = BytesMut::from(&b"z\0\0\0\0"[..]);
        assert_eq!(Frame::decode(&mut buf), Err(FrameError::UnknownKind(b'z')));
        let mut buf = BytesMut::from(&b"r\0\0\0\x02ab"[..]);
        assert!(matches!(
            Frame::decode(&mut buf),
            Err(FrameError::BadLength { .. })
        ));
        let mut buf = BytesMut::from(&b"i\xff\xff\xff\xff"[..]);
        assert!(matches!(
            Frame::decode(&mut buf),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn a_session_carries_input_output_and_the_exit() {
        let (client, server) = tokio::io::duplex(1024);
        let (dyno_out, mut dyno_out_w) = tokio::io::duplex(1024);
        let (mut dyno_in, dyno_in_w) = tokio::io::duplex(1024);
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<i32>();
        let resized = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = resized.clone();
        let attached = Attached {
            output: Box::pin(dyno_out),
            input: Some(Box::pin(dyno_in_w)),
            resize: Some(Box::new(move |c, r| {
                *seen.lock().unwrap() = Some((c, r));
            })),
            exit: Box::pin(async move { exit_rx.await.unwrap_or(-1) }),
            hangup: Box::new(()),
        };
        let session = tokio::spawn(bridge(server, attached));
        let (mut client_r, mut client_w) = tokio::io::split(client);
        let mut out = BytesMut::new();
        Frame::Input(Bytes::from_static(b"hello")).encode(&mut out);
        Frame::Resize { cols: 80, rows: 24 }.encode(&mut out);
        Frame::EndOfInput.encode(&mut out);
        client_w.write_all(&out).await.unwrap();
        let mut got = String::new();
        dyno_in.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello");
        dyno_out_w.write_all(b"world").await.unwrap();
        drop(dyno_out_w);
        exit_tx.send(3).unwrap();
        let mut frames = Vec::new();
        let mut buf = BytesMut::new();
        while client_r.read_buf(&mut buf).await.unwrap() > 0 {
            while let Some(f) = Frame::decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(
            frames,
            [Frame::Output(Bytes::from_static(b"world")), Frame::Exit(3)]
        );
        session.await.unwrap();
        assert_eq!(*resized.lock().unwrap(), Some((80, 24)));
    }
}
