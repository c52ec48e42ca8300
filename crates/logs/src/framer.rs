use bytes::{Bytes, BytesMut};

/// The longest line kept whole. A longer one is cut into pieces of this size, so
/// a program that never writes a newline cannot grow crew without bound.
pub const MAX_LINE: usize = 4 * 1024 * 1024;

/// The room a read starts with. Most dynos write little, and hundreds of them
/// should not each hold a pipe-sized buffer.
const MIN_READ: usize = 4 * 1024;
/// The room a busy stream grows to: pipes hold 64 KiB, so one read drains one.
const MAX_READ: usize = 64 * 1024;

/// Splits a byte stream into lines.
#[derive(Debug)]
pub struct LineFramer {
    buf: BytesMut,
    read_size: usize,
    /// Length of the buffer when the last read was handed out.
    before_read: usize,
}

impl Default for LineFramer {
    fn default() -> LineFramer {
        LineFramer::new()
    }
}

impl LineFramer {
    pub fn new() -> LineFramer {
        LineFramer {
            buf: BytesMut::new(),
            read_size: MIN_READ,
            before_read: 0,
        }
    }

    /// The buffer to read into; bytes appended to it are framed by the next
    /// [`LineFramer::complete_lines`]. A read that filled its room doubles the
    /// next one, up to [`MAX_READ`].
    pub fn read_buf(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < self.read_size {
            self.buf.reserve(self.read_size);
        }
        self.before_read = self.buf.len();
        &mut self.buf
    }

    fn grow_after_read(&mut self) {
        if self.buf.len().saturating_sub(self.before_read) >= self.read_size {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        }
        self.before_read = self.buf.len();
    }

    /// Appends bytes, for callers that do not read straight into [`Self::read_buf`].
    pub fn push(&mut self, data: &[u8]) {
        self.before_read = self.buf.len();
        self.buf.extend_from_slice(data);
    }

    /// Every complete line so far as one block, each ending in `\n`; `None` when
    /// there is no whole line yet. A partial line longer than [`MAX_LINE`] is cut
    /// and released as a line of its own.
    pub fn complete_lines(&mut self) -> Option<Bytes> {
        self.grow_after_read();
        let lines = match memchr::memrchr(b'\n', &self.buf) {
            Some(last) => Some(self.buf.split_to(last + 1).freeze()),
            None if self.buf.len() >= MAX_LINE => {
                let mut piece = self.buf.split_to(MAX_LINE);
                piece.extend_from_slice(b"\n");
                Some(piece.freeze())
            }
            None => None,
        };
        self.before_read = self.buf.len();
        lines
    }

    /// Whether a partial line is waiting.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Releases the partial line, newline added: on idle, and at end of stream so
    /// a last line without `\n` is not lost.
    pub fn take_partial(&mut self) -> Option<Bytes> {
        self.before_read = 0;
        if self.buf.is_empty() {
            return None;
        }
        let mut line = self.buf.split();
        line.extend_from_slice(b"\n");
        Some(line.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_last_newline() {
        let mut f = LineFramer::new();
        f.push(b"a\nbb\nccc");
        assert_eq!(f.complete_lines().as_deref(), Some(&b"a\nbb\n"[..]));
        assert!(f.has_partial());
        f.push(b"c\n");
        assert_eq!(f.complete_lines().as_deref(), Some(&b"cccc\n"[..]));
        assert_eq!(f.complete_lines(), None);
        assert!(!f.has_partial());
    }

    #[test]
    fn a_partial_line_is_released_with_a_newline() {
        let mut f = LineFramer::new();
        f.push(b"Password: ");
        assert_eq!(f.complete_lines(), None);
        assert_eq!(f.take_partial().as_deref(), Some(&b"Password: \n"[..]));
        assert_eq!(f.take_partial(), None);
    }

    #[test]
    fn a_runaway_line_is_cut_at_the_limit() {
        let mut f = LineFramer::new();
        f.push(&vec![b'x'; MAX_LINE + 10]);
        let piece = f.complete_lines().expect("a piece");
        assert_eq!(piece.len(), MAX_LINE + 1);
        assert_eq!(f.take_partial().map(|b| b.len()), Some(11));
    }

    #[test]
    fn busy_streams_get_bigger_reads() {
        let mut f = LineFramer::new();
        for _ in 0..6 {
            let room = f.read_buf();
            let n = room.capacity() - room.len();
            room.extend_from_slice(&vec![b'x'; n.min(MAX_READ)]);
            room.extend_from_slice(b"\n");
            f.complete_lines();
        }
        assert_eq!(f.read_size, MAX_READ);
    }

    #[test]
    fn invalid_utf8_passes_through() {
        let mut f = LineFramer::new();
        f.push(b"\xff\xfe ok\n");
        assert_eq!(f.complete_lines().as_deref(), Some(&b"\xff\xfe ok\n"[..]));
    }
}
