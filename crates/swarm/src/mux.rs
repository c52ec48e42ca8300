//! Docker's multiplexed stream: what `logs` and a non-TTY `attach` send, stdout
//! and stderr interleaved on one connection.
//!
//! Each frame is an 8-byte header, then the payload: byte 0 names the stream
//! (0 stdin, 1 stdout, 2 stderr), bytes 1–3 are zero, and bytes 4–7 are the
//! payload's length, big-endian. Frames arrive cut anywhere by the transport,
//! so the decoder buffers until a whole frame is there.

use bytes::{Buf, Bytes, BytesMut};

const HEADER: usize = 8;

/// Which of the container's streams a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdin,
    Stdout,
    Stderr,
}

/// Turns bytes as they arrive into whole frames.
#[derive(Debug, Default)]
pub struct Demux {
    buf: BytesMut,
}

impl Demux {
    pub fn new() -> Demux {
        Demux::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived. A stream byte outside 0–2 is
    /// taken as stdout rather than an error: the payload matters more than the
    /// label, and newer daemons add a "system error" stream (3) whose text is
    /// still worth showing.
    pub fn next_frame(&mut self) -> Option<(StreamKind, Bytes)> {
        if self.buf.len() < HEADER {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if self.buf.len() < HEADER + len {
            return None;
        }
        let kind = match self.buf[0] {
            0 => StreamKind::Stdin,
            2 => StreamKind::Stderr,
            _ => StreamKind::Stdout,
        };
        self.buf.advance(HEADER);
        Some((kind, self.buf.split_to(len).freeze()))
    }

    /// Bytes of an unfinished frame, left when the stream ended.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, 0, 0, 0];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frames_cut_anywhere_come_out_whole() {
        let mut wire = frame(1, b"hello\n");
        wire.extend(frame(2, b"oops\n"));
        wire.extend(frame(1, b""));
        wire.extend(frame(7, b"x"));
        for cut in 0..wire.len() {
            let mut demux = Demux::new();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                demux.push(part);
                while let Some(f) = demux.next_frame() {
                    got.push(f);
                }
            }
            assert_eq!(
                got,
                vec![
                    (StreamKind::Stdout, Bytes::from_static(b"hello\n")),
                    (StreamKind::Stderr, Bytes::from_static(b"oops\n")),
                    (StreamKind::Stdout, Bytes::new()),
                    (StreamKind::Stdout, Bytes::from_static(b"x")),
                ],
                "cut at {cut}"
            );
            assert_eq!(demux.pending(), 0);
        }
    }

    #[test]
    fn a_partial_frame_waits() {
        let mut demux = Demux::new();
        demux.push(&frame(1, b"abc")[..9]);
        assert_eq!(demux.next_frame(), None);
        assert_eq!(demux.pending(), 9);
    }
}
