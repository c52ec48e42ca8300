//! `crew start`: the formation in the foreground, as foreman runs it.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use crew_engine::{AppSpec, EngineConfig, Ports, ProcessTypeSpec, ShutdownReason};
use crew_logs::terminal::{Format, Printer, Terminal};
use crew_logs::{LogEvent, LogRing, RingLimits};
use crew_procfile::{Formation, Procfile, parse_changes};
use crew_runtime::watchdog::Watchdog;
use crew_runtime::{PlainRuntime, Signal};
use tokio::signal::unix::{SignalKind, signal};

use crate::app;
use crate::cli::StartArgs;
use crate::control::{self, LocalApi};
use crate::settings;

/// foreman's seconds from SIGTERM to SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: u64 = 5;

pub fn start(args: StartArgs) -> Result<u8> {
    let location = app::locate(&args.location, &args.env.env)?;
    let procfile = app::read_procfile(&location.procfile)?;
    location.require_root()?;
    let env = app::environment(&location.root, &args.env)?;
    let formation = initial_formation(&procfile, &args.types, &args.formation)?;
    // Every port the formation needs must exist before anything starts.
    for (index, (process_type, quantity)) in formation.entries().iter().enumerate() {
        if *quantity > 0 {
            crew_procfile::port_for(env.port_base, index, *quantity)
                .with_context(|| format!("the port for {process_type}.{quantity}"))?;
        }
    }

    let mut settings = settings::load(&location.root, &procfile)?;
    let app = AppSpec {
        release: None,
        types: procfile
            .types()
            .iter()
            .map(|t| ProcessTypeSpec {
                name: t.name.clone(),
                command: t.command.clone(),
                settings: settings.remove(&t.name).unwrap_or_default(),
                size: None,
            })
            .collect(),
        env: env.vars,
        cwd: location.root.clone(),
        ports: Ports::Formula {
            base: env.port_base,
        },
        command_prefix: None,
    };
    let config = EngineConfig {
        stop_timeout: Duration::from_secs(args.timeout.unwrap_or(DEFAULT_STOP_TIMEOUT)),
        keep_alive: args.keep_alive,
        boot_timeout: Duration::from_secs(args.boot_timeout),
        drain_requests: false,
        output_limits: None,
    };
    let format = Format {
        timestamp: !args.no_timestamp,
        color: use_color(&args),
        prefix: !args.no_prefix,
    };
    let names: Vec<String> = formation
        .entries()
        .iter()
        .flat_map(|(t, q)| (1..=*q).map(move |n| format!("{t}.{n}")))
        .collect();
    let printer = Printer::new(format, names.iter().map(String::as_str));

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let name = control::app_name(&location.root);
    tokio.block_on(run(name, app, formation, config, printer))
}

/// foreman's rules: every type once, or only the named types; then `-m` on top,
/// left to right.
fn initial_formation(procfile: &Procfile, types: &[String], exprs: &[String]) -> Result<Formation> {
    let mut formation = Formation::from_procfile(procfile, u32::from(types.is_empty()));
    for name in types {
        if procfile.get(name).is_none() {
            bail!(
                "unknown process type `{name}` (the Procfile has: {})",
                procfile.names().join(", ")
            );
        }
        let one = parse_changes([format!("{name}=1").as_str()])?;
        formation.apply(&one)?;
    }
    if !exprs.is_empty() {
        let changes =
            parse_changes(exprs.iter().map(String::as_str)).context("reading --formation")?;
        formation.apply(&changes).context("applying --formation")?;
    }
    Ok(formation)
}

fn use_color(args: &StartArgs) -> bool {
    if args.no_color {
        return false;
    }
    if args.color {
        return true;
    }
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

async fn run(
    name: String,
    app: AppSpec,
    formation: Formation,
    config: EngineConfig,
    printer: Printer,
) -> Result<u8> {
    // The socket first: a second `crew start` in the same app must fail before it
    // starts anything.
    let (listener, socket_file) = control::bind(&app.cwd)?;
    // The signal handlers before any process starts: a SIGTERM that came
    // between the first dyno's output and these would kill crew outright,
    // with no shutdown lines and nothing stopped in order.
    let mut interrupts = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut terms = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut hangups = signal(SignalKind::hangup()).context("handling SIGHUP")?;
    let ring = Arc::new(LogRing::with_limits(RingLimits::LOCAL));
    let (logs, terminal) =
        Terminal::spawn(Box::new(std::io::stdout()), printer, Some(ring.clone()));
    let watchdog = std::env::current_exe()
        .and_then(|exe| Watchdog::start(&exe))
        .map_err(|e| {
            eprintln!("crew: warning: no watchdog, so processes may outlive a killed crew: {e}")
        })
        .ok();
    let runtime = PlainRuntime::new(watchdog).context("setting up process supervision")?;
    let reaper = runtime.spawn_orphan_reaper();

    let types = app
        .types
        .iter()
        .map(|t| (t.name.clone(), t.command.clone()))
        .collect();
    if formation.entries().iter().all(|(_, q)| *q == 0) {
        let _ = logs
            .send(LogEvent::system(format!(
                "the formation is {formation}: nothing runs until `crew scale`"
            )))
            .await;
    }
    let (engine, outcome) =
        crew_engine::start(runtime.clone(), app, formation, config, logs.clone());
    let api = Arc::new(LocalApi {
        app: name,
        engine: engine.clone(),
        ring: ring.clone(),
        types,
    });
    let mut server = tokio::spawn(crew_api::server::serve_unix(
        listener,
        crew_api::server::router(api),
        ring.closed(),
    ));

    let mut closed = terminal.closed();
    let mut outcome = outcome;
    let mut stopping = false;
    let result = loop {
        let received = tokio::select! {
            result = &mut outcome => break result,
            _ = interrupts.recv() => Signal::Int,
            _ = terms.recv() => Signal::Term,
            _ = hangups.recv() => Signal::Hup,
            Ok(()) = closed.changed() => {
                if !stopping {
                    stopping = true;
                    engine.shutdown(ShutdownReason::OutputClosed);
                }
                continue;
            }
        };
        if stopping {
            // A second Ctrl-C does not wait for anyone.
            engine.kill();
        } else {
            stopping = true;
            let _ = logs
                .send(LogEvent::system(format!(
                    "{} received, starting shutdown",
                    received.name().trim_start_matches("SIG")
                )))
                .await;
            engine.shutdown(ShutdownReason::Signal(received));
        }
    };
    let outcome = result.context("the engine stopped unexpectedly")?;

    let escapees = runtime.escapees();
    if !escapees.is_empty() {
        let list: Vec<String> = escapees
            .iter()
            .map(|e| format!("{} ({})", e.pid, e.command))
            .collect();
        let _ = logs
            .send(LogEvent::system(format!(
                "killing {} process{} that left {} group: {}",
                escapees.len(),
                if escapees.len() == 1 { "" } else { "es" },
                if escapees.len() == 1 { "its" } else { "their" },
                list.join(", ")
            )))
            .await;
        runtime.kill_escapees(&escapees);
    }
    reaper.abort();
    // Followers (`crew logs -t`) get the last lines and a clean end; then the
    // control socket goes.
    drop(logs);
    tokio::task::spawn_blocking(move || terminal.finish())
        .await
        .context("flushing output")?;
    ring.close();
    if tokio::time::timeout(Duration::from_secs(2), &mut server)
        .await
        .is_err()
    {
        server.abort();
    }
    drop(socket_file);
    drop(engine);
    Ok(u8::try_from(outcome.exit_code.clamp(0, 255)).unwrap_or(1))
}
