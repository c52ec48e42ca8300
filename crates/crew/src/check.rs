//! `crew check`: is this Procfile what I think it is?
//!
//! foreman prints `valid procfile detected (web, worker)` on stdout; honcho
//! logs `Valid procfile detected (web, worker)` on stderr. crew prints
//! foreman's line on stdout, and honcho's on stderr too when stderr goes
//! somewhere else than stdout and is not a terminal, so that a script written
//! for either finds its line on its stream, and a person sees it once.

use std::io::IsTerminal;

use anyhow::Result;

use crate::app;
use crate::cli::CheckArgs;

pub fn check(args: &CheckArgs) -> Result<u8> {
    let location = app::locate(&args.location, &args.env)?;
    let procfile = app::read_procfile(&location.procfile)?;
    let types = procfile.names().join(", ");
    crate::say(&format!("valid procfile detected ({types})\n"));
    if !std::io::stderr().is_terminal() && !stderr_is_stdout() {
        eprintln!("Valid procfile detected ({types})");
    }
    Ok(0)
}

/// Whether stdout and stderr are one open file (`2>&1`), or cannot be told apart.
fn stderr_is_stdout() -> bool {
    let (Ok(out), Ok(err)) = (
        rustix::fs::fstat(std::io::stdout()),
        rustix::fs::fstat(std::io::stderr()),
    ) else {
        return true;
    };
    out.st_dev == err.st_dev && out.st_ino == err.st_ino
}
