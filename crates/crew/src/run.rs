//! `crew run`: one command with the app's environment, in the foreground.
//!
//! crew replaces itself with the command (`exec`), so the terminal, stdin and
//! signals belong to the command exactly as if the shell had started it, and its
//! exit code is crew's.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{Result, anyhow};

use crate::app;
use crate::cli::RunArgs;

pub fn run(args: RunArgs) -> Result<u8> {
    let location = app::locate(&args.app)?;
    location.require_root()?;
    // A Procfile is optional here, since `crew run` also runs plain commands; a
    // broken one is still an error.
    let procfile = if location.procfile.exists() {
        Some(app::read_procfile(&location.procfile)?)
    } else {
        None
    };
    let env = app::environment(&location.root, &args.env)?;

    let process_type = match args.command.as_slice() {
        [single] => procfile.as_ref().and_then(|p| {
            p.get(single)
                .map(|t| (t.command.clone(), p.index_of(single).unwrap_or(0)))
        }),
        _ => None,
    };
    let port = match &process_type {
        Some((_, index)) => crew_procfile::port_for(env.port_base, *index, 1)?,
        None => env.port_base,
    };
    let mut command = match (&process_type, args.command.as_slice()) {
        (Some((line, _)), _) => shell(line),
        (None, [single]) => shell(single),
        (None, [program, rest @ ..]) => {
            let mut c = Command::new(program);
            c.args(rest);
            c
        }
        (None, []) => return Err(anyhow!("no command given")),
    };
    command
        .env_clear()
        .envs(env.vars)
        .env("PORT", port.to_string())
        .env("DYNO", "run.1")
        .env("PS", "run.1")
        .current_dir(&location.root);
    let error = command.exec();
    let shown = args.command.join(" ");
    eprintln!("crew: error: could not run `{shown}`: {error}");
    Ok(if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

fn shell(line: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(line);
    c
}
