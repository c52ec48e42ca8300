//! The far side of a dyno's stdin: a pipe, or the controlling side of a
//! pseudo-terminal, as async streams for whoever is attached to the dyno.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{DynoInput, Output, RuntimeError, os};

/// What an attached client drives: the dyno's stdin and, with a terminal, its
/// window size. Dropping the input closes the dyno's stdin (a pipe's end of file;
/// with a terminal, once the output is dropped too, a hang-up).
pub struct Console {
    pub input: Box<dyn AsyncWrite + Send + Unpin>,
    pub resize: Option<Resize>,
}

/// Changes a dyno's terminal size: on a local terminal's controlling side, or
/// through a remote engine's API.
#[derive(Clone)]
pub struct Resize(Arc<dyn Fn(u16, u16) + Send + Sync>);

impl Resize {
    pub fn new(set: impl Fn(u16, u16) + Send + Sync + 'static) -> Resize {
        Resize(Arc::new(set))
    }

    /// A local terminal, through the descriptor of its controlling side.
    fn terminal(controller: OwnedFd) -> Resize {
        Resize::new(move |cols, rows| {
            // A terminal whose dyno is gone may refuse; there is nothing left
            // to tell.
            let _ = os::set_window_size(controller.as_fd(), cols, rows);
        })
    }

    pub fn set(&self, cols: u16, rows: u16) {
        (self.0)(cols, rows)
    }
}

/// The descriptors a runtime hands the dyno for stdin, stdout and stderr, and
/// what it keeps for the console.
pub(crate) struct DynoStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The output's reading end.
    pub output: OwnedFd,
    pub console: Option<ConsoleFds>,
    /// The dyno should make its stdin its controlling terminal.
    pub terminal: bool,
}

pub(crate) enum ConsoleFds {
    Pipe { input: OwnedFd },
    Terminal { controller: OwnedFd },
}

impl DynoStdio {
    /// Descriptors for `input`. An idle dyno reads `idle`, a pipe nobody
    /// writes to (`crew start`'s watchers that end at end of file keep
    /// running); without one, a `/dev/null` opened for it alone: end of file
    /// at once, as on Heroku, and no other dyno shares its open file.
    pub(crate) fn new(input: DynoInput, idle: Option<&OwnedFd>) -> io::Result<DynoStdio> {
        match input {
            DynoInput::Idle | DynoInput::Pipe => {
                let (output, write) = os::pipe()?;
                let (stdin, console) = if input == DynoInput::Pipe {
                    let (read, input) = os::pipe()?;
                    (read, Some(ConsoleFds::Pipe { input }))
                } else {
                    let stdin = match idle {
                        Some(idle) => idle.try_clone()?,
                        None => std::fs::File::open("/dev/null")?.into(),
                    };
                    (stdin, None)
                };
                Ok(DynoStdio {
                    stdin,
                    stderr: write.try_clone()?,
                    stdout: write,
                    output,
                    console,
                    terminal: false,
                })
            }
            DynoInput::Terminal { cols, rows } => {
                let (controller, dyno_side) = os::open_terminal(cols, rows)?;
                Ok(DynoStdio {
                    stdin: dyno_side.try_clone()?,
                    stdout: dyno_side.try_clone()?,
                    stderr: dyno_side,
                    output: controller.try_clone()?,
                    console: Some(ConsoleFds::Terminal { controller }),
                    terminal: true,
                })
            }
        }
    }
}

/// The output stream and console for what [`DynoStdio::new`] kept. Must run
/// inside a tokio runtime.
pub(crate) fn streams(
    name: &str,
    output: OwnedFd,
    console: Option<ConsoleFds>,
) -> Result<(Output, Option<Console>), RuntimeError> {
    let pipe_error = |source| RuntimeError::Pipe {
        dyno: name.to_string(),
        source,
    };
    match console {
        Some(ConsoleFds::Terminal { controller }) => {
            let output = TerminalIo::new(output).map_err(pipe_error)?;
            let input =
                TerminalIo::new(controller.try_clone().map_err(pipe_error)?).map_err(pipe_error)?;
            Ok((
                Box::new(output),
                Some(Console {
                    input: Box::new(input),
                    resize: Some(Resize::terminal(controller)),
                }),
            ))
        }
        other => {
            let output =
                tokio::net::unix::pipe::Receiver::from_owned_fd(output).map_err(pipe_error)?;
            let console = match other {
                Some(ConsoleFds::Pipe { input }) => Some(Console {
                    input: Box::new(
                        tokio::net::unix::pipe::Sender::from_owned_fd(input).map_err(pipe_error)?,
                    ),
                    resize: None,
                }),
                _ => None,
            };
            Ok((Box::new(output), console))
        }
    }
}

/// One descriptor of a terminal's controlling side, read or written without
/// blocking. Once nothing holds the dyno's side open any more, Linux answers
/// reads with EIO; that is the end of the output.
struct TerminalIo(AsyncFd<OwnedFd>);

impl TerminalIo {
    fn new(fd: OwnedFd) -> io::Result<TerminalIo> {
        Ok(TerminalIo(os::async_fd(fd)?))
    }
}

impl AsyncRead for TerminalIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for TerminalIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
