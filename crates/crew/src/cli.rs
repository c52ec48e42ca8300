//! The command line, kept to foreman's flags where foreman has one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "crew",
    version,
    about = "The Heroku process model: run a Procfile's formation, locally or as a server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Validate a Procfile and list its process types
    Check(CheckArgs),
    /// Run the formation in the foreground, foreman-style
    Start(StartArgs),
    /// Run one command with the app's environment
    Run(RunArgs),
    /// List the running formation's processes
    Ps(PsArgs),
    /// Change the running formation: `web=3 worker+1 clock-1`
    Scale(ScaleArgs),
    /// Restart every process, one type (`web`) or one process (`web.2`)
    Restart(RestartArgs),
    /// Stop one type or one process; it stays down until restarted
    Stop(StopArgs),
    /// Show recent output and crew's lifecycle lines, or follow them
    Logs(LogsArgs),
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Changes such as `web=3`, `worker+1`, `clock-1` or `web=2,worker=1`; none
    /// prints the formation
    #[arg(value_name = "TYPE=N")]
    pub changes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// A process type or process name [default: all]
    pub target: Option<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// A process type or process name
    pub target: String,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep following new lines
    #[arg(short = 't', long = "tail")]
    pub tail: bool,
    /// How many recent lines to show
    #[arg(short = 'n', long = "num", default_value_t = 100)]
    pub num: usize,
    /// Only this process type or process (`web`, `web.1`)
    #[arg(long = "ps", short = 'p', alias = "dyno", short_alias = 'd')]
    pub ps: Option<String>,
}

/// Where the app is: shared by every command that reads a Procfile.
#[derive(Args, Debug, Clone)]
pub struct AppArgs {
    /// The Procfile [default: ROOT/Procfile]
    #[arg(short = 'f', long = "procfile", value_name = "PROCFILE")]
    pub procfile: Option<PathBuf>,
    /// The app's directory, where processes run [default: the Procfile's directory]
    #[arg(short = 'd', long = "root", value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct EnvArgs {
    /// Environment files to load, comma-separated or repeated [default: ROOT/.env if present]
    #[arg(
        short = 'e',
        long = "env",
        value_name = "FILE[,FILE]",
        value_delimiter = ','
    )]
    pub env: Vec<PathBuf>,
    /// The base port [default: PORT from the env files or the shell, else 5000]
    #[arg(short = 'p', long = "port")]
    pub port: Option<u16>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub app: AppArgs,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Start only these process types (one of each unless -m says otherwise)
    #[arg(value_name = "TYPE")]
    pub types: Vec<String>,
    #[command(flatten)]
    pub app: AppArgs,
    #[command(flatten)]
    pub env: EnvArgs,
    /// How many of each type: `web=2,worker=1`, `all=2,clock=0`
    #[arg(
        short = 'm',
        long = "formation",
        short_alias = 'c',
        alias = "concurrency",
        value_name = "FORMATION"
    )]
    pub formation: Vec<String>,
    /// Seconds from SIGTERM to SIGKILL when stopping
    #[arg(
        short = 't',
        long = "timeout",
        default_value_t = 5,
        value_name = "SECONDS"
    )]
    pub timeout: u64,
    /// Leave out the HH:MM:SS column
    #[arg(long)]
    pub no_timestamp: bool,
    /// Colour the prefixes even when output is not a terminal
    #[arg(long, overrides_with = "no_color")]
    pub color: bool,
    /// Never colour
    #[arg(long)]
    pub no_color: bool,
    /// Print each line exactly as the process wrote it
    #[arg(long)]
    pub no_prefix: bool,
    /// Restart processes that exit (with backoff) instead of stopping everything
    #[arg(long)]
    pub keep_alive: bool,
    /// Seconds a web process has to accept connections on PORT
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub boot_timeout: u64,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub app: AppArgs,
    #[command(flatten)]
    pub env: EnvArgs,
    /// A process type from the Procfile, one shell command line, or a program and
    /// its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}
