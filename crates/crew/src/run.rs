//! `crew run`: one command with the app's environment, in the foreground.
//!
//! crew replaces itself with the command (`exec`), so the terminal, stdin and
//! signals belong to the command exactly as if the shell had started it, and its
//! exit code is crew's.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use crew_api::client::{Client, Endpoint, Method};
use crew_api::types::{Dyno, DynoCreate};

use crate::app;
use crate::cli::RunArgs;
use crate::control;

pub fn run(args: RunArgs) -> Result<u8> {
    if let Some(app) = &args.server_app {
        return run_on_server(app, &args);
    }
    let location = app::locate(&args.location, &args.env.env)?;
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
    let shown = args.command.join(" ");
    let dyno = register(&location.root, &shown).unwrap_or_else(|| String::from("run.1"));
    command
        .env_clear()
        .envs(env.vars)
        .env("PORT", port.to_string())
        .env("DYNO", &dyno)
        .env("PS", &dyno)
        .current_dir(&location.root);
    let error = command.exec();
    eprintln!("crew: error: could not run `{shown}`: {error}");
    Ok(if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// Lists this process as `run.N` in a `crew start` running for the same app, and
/// returns that name. The pid stays the same across `exec`, so the formation can
/// watch it. Without a running formation there is nothing to register with.
fn register(root: &Path, command: &str) -> Option<String> {
    let socket = control::find(root)?;
    let app = control::app_name(socket.parent()?);
    let client = Client::new(Endpoint::Unix(socket), None);
    let request = DynoCreate {
        command: command.to_string(),
        attach: Some(true),
        process_type: Some("run".into()),
        pid: Some(std::process::id()),
        ..DynoCreate::default()
    };
    // A current-thread runtime, dropped before `exec`: no threads linger.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let dyno: Dyno = runtime
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                client.call(Method::POST, &format!("/apps/{app}/dynos"), &request),
            )
            .await
        })
        .ok()?
        .ok()?;
    Some(dyno.name)
}

fn shell(line: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(line);
    c
}

/// `crew run -a APP`: a one-off dyno on the server, attached here. `--env` takes
/// `K=V` (several split by `;`, as Heroku's CLI does) rather than files here.
fn run_on_server(app: &str, args: &RunArgs) -> Result<u8> {
    let mut pairs = args.env_vars.clone();
    for item in &args.env.env {
        let text = item.to_string_lossy();
        if !text.contains('=') {
            return Err(anyhow!(
                "`--env {text}`: with -a, --env takes K=V for the one-off, not an env file"
            ));
        }
        pairs.extend(text.split(';').filter(|p| !p.is_empty()).map(String::from));
    }
    crate::attach::run(crate::attach::AttachRequest {
        app: app.to_string(),
        command: server_command(&args.command)?,
        env: env_map(&pairs)?,
        size: args.size.clone(),
        no_tty: args.no_tty,
        inside: None,
    })
}

/// `crew run:inside -a APP DYNO COMMAND`: a process inside a running dyno on
/// the server (its namespaces, cgroup and user), attached here.
pub fn run_inside(args: crate::cli::RunInsideArgs) -> Result<u8> {
    if args.dyno.is_empty()
        || !args
            .dyno
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err(anyhow!(
            "`{}` is not a dyno name: give one such as web.1 (see `crew ps -a {}`)",
            args.dyno,
            args.app
        ));
    }
    crate::attach::run(crate::attach::AttachRequest {
        app: args.app.clone(),
        command: server_command(&args.command)?,
        env: env_map(&args.env_vars)?,
        size: None,
        no_tty: args.no_tty,
        inside: Some(args.dyno),
    })
}

/// The API's `command` (one string, run by `sh -c` in the dyno, as on Heroku)
/// for what was typed after `crew run -a APP`: one argument is a shell command
/// line as it is; several are a program and its exact arguments, so each is
/// quoted for the shell, the way the Heroku CLI builds it.
pub fn server_command(args: &[String]) -> Result<String> {
    match args {
        [] => Err(anyhow!("no command given")),
        [line] if line.trim().is_empty() => Err(anyhow!("the command is empty")),
        [line] => Ok(line.clone()),
        words => shlex::try_join(words.iter().map(String::as_str))
            .map_err(|e| anyhow!("cannot pass these arguments to a shell: {e}")),
    }
}

/// A one-off's extra environment from `K=V` words.
pub fn env_map(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => bail!("`{pair}` is not KEY=VALUE"),
        })
        .collect()
}
