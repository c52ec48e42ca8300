//! Pseudo-terminals: a new one for a dyno run plain, and the window size of
//! any (an isolated dyno's init opens its own on its devpts, see
//! `linux_sys`).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// A new pseudo-terminal of `cols` × `rows`: the controlling side (non-blocking)
/// and the dyno's side.
pub fn open_terminal(cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::OpenptFlags;
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let controller = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&controller)?;
    rustix::pty::unlockpt(&controller)?;
    let dyno_side = rustix::pty::ioctl_tiocgptpeer(&controller, flags)?;
    set_window_size(&controller, cols, rows)?;
    rustix::io::ioctl_fionbio(&controller, true)?;
    Ok((controller, dyno_side))
}

/// Sets a terminal's window size; the kernel then sends SIGWINCH to its
/// foreground process group.
pub fn set_window_size(terminal: impl AsFd, cols: u16, rows: u16) -> io::Result<()> {
    rustix::termios::tcsetwinsize(
        terminal,
        rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .map_err(io::Error::from)
}
