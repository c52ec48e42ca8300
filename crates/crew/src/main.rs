//! `crew`: the Heroku process model on a laptop.

mod app;
mod check;
mod cli;
mod run;
mod start;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The watchdog is this same binary, started by `crew start`; see
    // `crew_runtime::watchdog`.
    if std::env::args_os().nth(1).as_deref() == Some(crew_runtime::watchdog::ARG.as_ref()) {
        crew_runtime::watchdog::serve(std::io::stdin().lock());
        return ExitCode::SUCCESS;
    }
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Check(args) => check::check(&args),
        cli::Command::Start(args) => start::start(args),
        cli::Command::Run(args) => run::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("crew: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
