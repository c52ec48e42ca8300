//! `crew run -a APP COMMAND`: this terminal, attached to a one-off dyno on a
//! `crew server` (see `crew_api::attach` for the wire).
//!
//! With a terminal on stdin, the dyno gets a terminal of the same size and this
//! one goes raw, so every key (Ctrl-C too) reaches the dyno and the dyno's
//! terminal does the echoing and signalling. Window changes follow. Without one
//! (or with `--no-tty`), stdin and output are plain streams and the end of stdin
//! is passed on. The exit code is the dyno's; closing this end hangs it up.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use crew_api::attach::{Frame, PROTOCOL};
use crew_api::types::{DynoCreate, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::{Target, block_on};

pub struct AttachRequest {
    pub app: String,
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub size: Option<String>,
    pub no_tty: bool,
    /// `run:inside`: the running dyno to start the command in, instead of a
    /// new one-off.
    pub inside: Option<String>,
}

pub fn run(request: AttachRequest) -> Result<u8> {
    let target = Target::server(&request.app)?;
    let stdin = std::io::stdin();
    let terminal = !request.no_tty && rustix::termios::isatty(&stdin);
    let mut env = request.env;
    let window = terminal.then(|| window_size(&stdin));
    if terminal {
        // As Heroku's CLI does: the dyno's programs should draw for this terminal.
        if let Ok(term) = std::env::var("TERM") {
            env.entry("TERM".into()).or_insert(term);
        }
    }
    let body = serde_json::to_vec(&DynoCreate {
        command: request.command,
        attach: Some(true),
        process_type: Some("run".into()),
        env: Some(env),
        size: request.size,
        force_no_tty: Some(!terminal),
        terminal: window,
        ..Default::default()
    })?;
    let (path, doing) = match &request.inside {
        Some(dyno) => (
            format!("/dynos/{dyno}"),
            format!("starting the command inside {dyno}"),
        ),
        None => (
            "/dynos".to_string(),
            "starting the one-off dyno".to_string(),
        ),
    };
    block_on(async move {
        let connection = target
            .client
            .upgrade(&target.path(&path), body, PROTOCOL)
            .await
            .context(doing)?;
        let _raw = if terminal {
            Some(RawMode::enter().context("switching the terminal to raw mode")?)
        } else {
            None
        };
        session(connection, terminal).await
    })
}

async fn session<C>(connection: C, terminal: bool) -> Result<u8>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut from_dyno, mut to_dyno) = tokio::io::split(connection);
    let (keys_tx, mut keys) = mpsc::channel::<Option<Bytes>>(16);
    // Reading stdin blocks; a thread of its own may stay blocked when the dyno
    // ends, and the process exits around it.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = keys_tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if keys_tx
                        .blocking_send(Some(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let mut winch = if terminal {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };
    let mut stdout = std::io::stdout();
    let mut incoming = BytesMut::with_capacity(16 * 1024);
    let mut outgoing = BytesMut::new();
    let mut stdin_open = true;
    loop {
        outgoing.clear();
        tokio::select! {
            read = from_dyno.read_buf(&mut incoming) => {
                let n = read.context("reading from the dyno")?;
                while let Some(frame) = Frame::decode(&mut incoming)? {
                    match frame {
                        Frame::Output(bytes) => {
                            // A closed stdout (`| head`) is no reason to stop the dyno
                            // early: the rest of its output goes nowhere.
                            let _ = stdout.write_all(&bytes).and_then(|()| stdout.flush());
                        }
                        Frame::Exit(code) => {
                            return Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1));
                        }
                        Frame::Failed(why) => bail!("{why}"),
                        _ => {}
                    }
                }
                if n == 0 {
                    bail!("the connection to the dyno ended before the dyno did");
                }
            }
            key = keys.recv(), if stdin_open => match key.flatten() {
                Some(bytes) => Frame::Input(bytes).encode(&mut outgoing),
                None => {
                    stdin_open = false;
                    // With a terminal, its end-of-file is Ctrl-D, a key like any
                    // other; only a pipe's end is passed on as such.
                    if !terminal {
                        Frame::EndOfInput.encode(&mut outgoing);
                    }
                }
            },
            Some(()) = async {
                match winch.as_mut() {
                    Some(w) => w.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let TerminalSize { cols, rows } = window_size(std::io::stdin());
                Frame::Resize { cols, rows }.encode(&mut outgoing);
            }
        }
        if !outgoing.is_empty() {
            to_dyno
                .write_all(&outgoing)
                .await
                .context("writing to the dyno")?;
        }
    }
}

fn window_size(fd: impl std::os::fd::AsFd) -> TerminalSize {
    match rustix::termios::tcgetwinsize(fd) {
        Ok(w) if w.ws_col > 0 && w.ws_row > 0 => TerminalSize {
            cols: w.ws_col,
            rows: w.ws_row,
        },
        _ => TerminalSize { cols: 80, rows: 24 },
    }
}

/// The terminal in raw mode until dropped, when its old settings come back.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> std::io::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        // `Now`, not `Flush`: keys typed while the dyno starts are kept for it.
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
