//! `crew`: the Heroku process model on a laptop.

mod api_view;
mod app;
mod apps;
mod attach;
mod check;
mod cli;
mod client;
mod control;
mod export;
mod init_export;
mod names;
mod paths;
mod pre_receive;
mod run;
mod server;
mod settings;
mod start;
mod tls;
mod wait;

use std::process::ExitCode;

use clap::Parser;

/// Prints to stdout. A reader that went away (`crew ps | head -1`) is not an
/// error worth a message, so a broken pipe is ignored.
pub fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn main() -> ExitCode {
    // The watchdog is this same binary, started by `crew start`; see
    // `crew_runtime::watchdog`.
    if std::env::args_os().nth(1).as_deref() == Some(crew_runtime::watchdog::ARG.as_ref()) {
        crew_runtime::watchdog::serve(std::io::stdin().lock());
        return ExitCode::SUCCESS;
    }
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some("__pre-receive".as_ref()) {
        let app = args
            .next()
            .and_then(|a| a.into_string().ok())
            .unwrap_or_default();
        return match pre_receive::run(&app) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!(" !     {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = cli::Cli::parse();
    let mut command = cli.command;
    if let Err(message) = cli.global.apply(&mut command) {
        eprintln!("crew: error: {message}");
        return ExitCode::from(2);
    }
    let result = match command {
        cli::Command::Check(args) => check::check(&args),
        cli::Command::Start(args) => start::start(args),
        cli::Command::Run(args) => run::run(args),
        cli::Command::Ps(args) => client::ps(&args),
        cli::Command::Scale(args) => client::scale(&args),
        cli::Command::Restart(args) => client::restart(&args),
        cli::Command::Stop(args) => client::stop(&args),
        cli::Command::Logs(args) => client::logs(&args),
        cli::Command::Server(args) => server::run(args),
        cli::Command::RunDetached(args) => apps::run_detached(&args),
        cli::Command::RunInside(args) => run::run_inside(args),
        cli::Command::PsWait(args) => wait::ps_wait(&args),
        cli::Command::Apps => apps::apps(),
        cli::Command::AppsCreate(args) => apps::create(&args),
        cli::Command::GitRemote(args) => apps::git_remote(&args),
        cli::Command::AppsInfo(args) => apps::info(&args),
        cli::Command::AppsDestroy(args) => apps::destroy(&args),
        cli::Command::Config(args) => apps::config(&args),
        cli::Command::ConfigGet(args) => apps::get(&args),
        cli::Command::ConfigSet(args) => apps::set(&args),
        cli::Command::ConfigUnset(args) => apps::unset(&args),
        cli::Command::Domains(args) => apps::domains(&args),
        cli::Command::DomainsAdd(args) => apps::add_domain(&args),
        cli::Command::DomainsRemove(args) => apps::remove_domain(&args),
        cli::Command::Releases(args) => apps::releases(&args),
        cli::Command::ReleasesInfo(args) => apps::release_info(&args),
        cli::Command::Rollback(args) => apps::rollback(&args),
        cli::Command::Export(args) => export::export(&args),
        cli::Command::AppsRename(args) => apps::rename(&args),
        cli::Command::Maintenance(args) => apps::maintenance(&args),
        cli::Command::MaintenanceOn(args) => apps::set_maintenance(&args, true),
        cli::Command::MaintenanceOff(args) => apps::set_maintenance(&args, false),
        cli::Command::ReleasesOutput(args) => apps::release_output(&args),
        cli::Command::Buildpacks(args) => apps::buildpacks(&args),
        cli::Command::BuildpacksSet(args) => apps::set_buildpacks(&args),
        cli::Command::BuildpacksClear(args) => apps::clear_buildpacks(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("crew: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
