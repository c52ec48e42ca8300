//! The command line, kept to foreman's flags where foreman has one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::server::args::ServerArgs;

#[derive(Parser)]
#[command(
    name = "crew",
    version,
    about = "The Heroku process model: run a Procfile's formation, locally or as a server"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options that may also come before the subcommand, as honcho takes its common
/// ones: `crew -e .env.test run pytest`, `crew -f Procfile.dev start`. Each
/// means what it means after the subcommand; given on both sides, the one after
/// the subcommand wins (the later one, as with honcho's argparse). A command that
/// has no such option refuses it.
#[derive(Args, Debug, Default)]
pub struct GlobalArgs {
    /// The Procfile [default: PROCFILE from the env files or the shell, else ROOT/Procfile]
    #[arg(short = 'f', long = "procfile", value_name = "PROCFILE")]
    pub procfile: Option<PathBuf>,
    /// The app's directory [default: the Procfile's directory]
    #[arg(short = 'd', long = "root", alias = "app-root", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Environment files, comma-separated or repeated [default: ROOT/.env if present]
    #[arg(
        short = 'e',
        long = "env",
        value_name = "FILE[,FILE]",
        value_delimiter = ','
    )]
    pub env: Vec<PathBuf>,
    /// The base port
    #[arg(short = 'p', long = "port")]
    pub port: Option<u16>,
    /// Seconds from SIGTERM to SIGKILL when stopping (start, export)
    #[arg(short = 't', long = "timeout", value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Never colour (start)
    #[arg(long, alias = "no-colour")]
    pub no_color: bool,
    /// Leave out the HH:MM:SS column (start)
    #[arg(long)]
    pub no_timestamp: bool,
    /// Print each line exactly as the process wrote it (start)
    #[arg(long)]
    pub no_prefix: bool,
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
    /// Stop one type or one process; here it stays down until restarted, on a server (as on Heroku) the formation starts it again and a one-off ends
    #[command(visible_alias = "ps:stop", alias = "ps:kill", alias = "kill")]
    Stop(StopArgs),
    /// Show recent output and crew's lifecycle lines, or follow them
    Logs(LogsArgs),
    /// Host apps: git push deploys, releases, config vars, formations
    Server(ServerArgs),
    /// List a server's apps
    Apps,
    /// Create an app on the server (and a `crew` git remote here)
    #[command(name = "apps:create")]
    AppsCreate(AppsCreateArgs),
    /// Add a git remote for an app that exists (made elsewhere, or a fresh clone)
    #[command(name = "git:remote")]
    GitRemote(GitRemoteArgs),
    /// Show an app
    #[command(name = "apps:info")]
    AppsInfo(AppFlag),
    /// Destroy an app, its dynos and all of its data
    #[command(name = "apps:destroy")]
    AppsDestroy(AppsDestroyArgs),
    /// Start a one-off dyno on a server and return at once; its output goes to the log
    #[command(name = "run:detached")]
    RunDetached(RunDetachedArgs),
    /// Run a command inside a running dyno on a server (its namespaces, cgroup and user)
    #[command(name = "run:inside")]
    RunInside(RunInsideArgs),
    /// Wait until every dyno of a server's app runs its current release
    #[command(name = "ps:wait")]
    PsWait(PsWaitArgs),
    /// Show an app's config vars
    Config(AppFlag),
    /// Print one config var
    #[command(name = "config:get")]
    ConfigGet(ConfigGetArgs),
    /// Set config vars: a new release, and every dyno restarts
    #[command(name = "config:set")]
    ConfigSet(ConfigSetArgs),
    /// Remove config vars: a new release, and every dyno restarts
    #[command(name = "config:unset")]
    ConfigUnset(ConfigUnsetArgs),
    /// List an app's custom domains
    Domains(AppFlag),
    /// Route a hostname to an app
    #[command(name = "domains:add")]
    DomainsAdd(DomainArgs),
    /// Stop routing a hostname to an app
    #[command(name = "domains:remove")]
    DomainsRemove(DomainArgs),
    /// List an app's releases
    Releases(AppFlag),
    /// Show one release [default: the latest]
    #[command(name = "releases:info")]
    ReleasesInfo(ReleaseArgs),
    /// Make a new release from an old one's slug and config [default: the one before the latest]
    Rollback(ReleaseArgs),
    /// Write an app as an init system's files (systemd, supervisord, runit, …),
    /// Kubernetes manifests, a Swarm stack file or a docker-archive image
    Export(ExportArgs),
    /// Rename an app: its data, repository and dynos go with it; the old name is free
    #[command(name = "apps:rename")]
    AppsRename(AppsRenameArgs),
    /// Show whether an app is in maintenance mode
    Maintenance(AppFlag),
    /// Put an app in maintenance mode: the router answers every request with a 503 page
    #[command(name = "maintenance:on")]
    MaintenanceOn(AppFlag),
    /// Take an app out of maintenance mode
    #[command(name = "maintenance:off")]
    MaintenanceOff(AppFlag),
    /// Show the output of a release's release command [default: the latest release]
    #[command(name = "releases:output")]
    ReleasesOutput(ReleaseArgs),
    /// List the buildpacks an app's next build uses
    Buildpacks(AppFlag),
    /// Set the buildpacks an app's builds use (heroku/python, a git URL, …), in order
    #[command(name = "buildpacks:set")]
    BuildpacksSet(BuildpacksSetArgs),
    /// Go back to detecting an app's buildpacks
    #[command(name = "buildpacks:clear")]
    BuildpacksClear(AppFlag),
}

#[derive(Args, Debug)]
pub struct AppsRenameArgs {
    #[command(flatten)]
    pub app: AppFlag,
    /// The new name: 2 to 30 characters, a lowercase letter, then lowercase
    /// letters, digits and dashes
    pub new_name: String,
}

#[derive(Args, Debug)]
pub struct BuildpacksSetArgs {
    #[command(flatten)]
    pub app: AppFlag,
    /// heroku/ruby, heroku/python, heroku/nodejs, heroku/go, heroku/procfile,
    /// or a git URL
    #[arg(required = true, value_name = "BUILDPACK")]
    pub buildpacks: Vec<String>,
}

/// What `crew export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    /// Namespace, Secret, a Deployment per process type, the web Service
    Kubernetes,
    /// A compose v3 stack file for `docker stack deploy`
    Swarm,
    /// A release's slug as an image, for `docker load` (needs --slug)
    Image,
    /// APP.target and a template unit APP-TYPE@.service per type (instances APP-TYPE@N)
    Systemd,
    /// APP.conf: a [program:APP-TYPE.N] per process and a [group:APP]
    Supervisord,
    /// Upstart jobs: APP.conf, APP-TYPE.conf, APP-TYPE-N.conf
    Upstart,
    /// A launchd property list per process: APP-TYPE.N.plist
    Launchd,
    /// A runit service directory per process: APP-TYPE.N/{run,log/run}
    Runit,
    /// inittab lines, printed or put into an inittab file between crew's markers
    Inittab,
    /// Upstart jobs that run each process through start-stop-daemon
    Daemon,
}

impl ExportKind {
    /// The formats foreman writes for an init system, from a local Procfile.
    pub fn is_init(self) -> bool {
        !matches!(
            self,
            ExportKind::Kubernetes | ExportKind::Swarm | ExportKind::Image
        )
    }
}

/// The text format of manifests and stack files.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFormat {
    Yaml,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    pub kind: ExportKind,
    /// Init formats: the directory to write into (inittab: the file to update,
    /// or `-` to print); Kubernetes and Swarm: the same as -o
    #[arg(value_name = "LOCATION")]
    pub location: Option<PathBuf>,
    /// The app on the server; with --procfile or --slug, the name to give it;
    /// init formats: the name [default: the app directory's name]
    #[arg(short = 'a', long = "app", value_name = "APP")]
    pub app: Option<String>,
    /// Export this local Procfile (and .env beside it) instead of a server's
    /// app; init formats: the Procfile [default: PROCFILE from the env files, else ROOT/Procfile]
    #[arg(short = 'f', long = "procfile", value_name = "PROCFILE")]
    pub procfile: Option<PathBuf>,
    /// Init formats: the app's directory, where processes run [default: the Procfile's]
    #[arg(short = 'd', long = "root", alias = "app-root", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// With --procfile: env files holding the config vars [default: .env beside the Procfile, if present]
    #[arg(
        short = 'e',
        long = "env",
        value_name = "FILE[,FILE]",
        value_delimiter = ','
    )]
    pub env: Vec<PathBuf>,
    /// With --procfile: how many of each type [default: web=1, others 0, as a
    /// first deploy; init formats: one of each]
    #[arg(
        short = 'm',
        long = "formation",
        short_alias = 'c',
        alias = "concurrency",
        value_name = "FORMATION"
    )]
    pub formation: Vec<String>,
    /// Init formats: the base port [default: PORT from the env files or the shell, else 5000]
    #[arg(short = 'p', long = "port")]
    pub port: Option<u16>,
    /// Init formats: the user processes run as [default: the app's name]
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Init formats: where process logs go [default: /var/log/APP]
    #[arg(short = 'l', long = "log", value_name = "DIR")]
    pub log: Option<PathBuf>,
    /// Init formats: where pid files go (daemon) [default: /var/run/APP]
    #[arg(short = 'r', long = "run-dir", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Init formats: a directory of templates that replace crew's own, file by file
    #[arg(short = 't', long = "template", value_name = "DIR")]
    pub template: Option<PathBuf>,
    /// Init formats: seconds from SIGTERM to SIGKILL when a process stops [default: 5]
    #[arg(long = "timeout", value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// With --procfile or --slug: the release number [default: v1]
    #[arg(long, value_name = "vN")]
    pub release: Option<String>,
    /// The image the dynos run [default: crew/APP:vN]
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Write files into DIR (for an image: the archive's path) instead of printing
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// yaml or json
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: TextFormat,
    /// Kubernetes: print only the Job of a one-off running COMMAND, for `kubectl create -f -`
    #[arg(long, value_name = "COMMAND", conflicts_with = "output")]
    pub run: Option<String>,
    /// Image: the slug, a tar.gz as `crew server` or Heroku makes it
    #[arg(long, value_name = "FILE")]
    pub slug: Option<PathBuf>,
    /// Image: the stack's root filesystem as a tar or tar.gz, the layer under /app
    #[arg(long, value_name = "ROOTFS")]
    pub base: Option<PathBuf>,
}

// `-a APP` of the commands only a server has: without it, the app of the
// `crew` git remote.
#[derive(Args, Debug)]
pub struct AppFlag {
    /// The app [default: the `crew` git remote's]
    #[arg(short = 'a', long = "app", value_name = "APP")]
    pub app: Option<String>,
}

// `-a APP` of the commands that drive either a server's app or, without it,
// the `crew start` running here (`Target::resolve`).
#[derive(Args, Debug)]
pub struct TargetFlag {
    /// An app on a `crew server` instead of the `crew start` running here
    #[arg(short = 'a', long = "app", value_name = "APP")]
    pub app: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunDetachedArgs {
    #[command(flatten)]
    pub app: AppFlag,
    /// Extra environment: `--env K=V` (repeatable)
    #[arg(
        long = "env-var",
        visible_alias = "env",
        short = 'e',
        value_name = "K=V"
    )]
    pub env_vars: Vec<String>,
    /// The one-off's dyno size (standard-1x, standard-2x, performance-m, …)
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct GitRemoteArgs {
    /// The app on the server
    #[arg(short = 'a', long = "app", value_name = "APP", required = true)]
    pub app: String,
    /// The remote's name
    #[arg(
        short = 'r',
        long = "remote",
        value_name = "NAME",
        default_value = "crew"
    )]
    pub remote: String,
}

#[derive(Args, Debug)]
pub struct AppsCreateArgs {
    /// 2 to 30 characters: a lowercase letter, then lowercase letters, digits
    /// and dashes; without it the server makes one up (`adjective-noun-1234`)
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct AppsDestroyArgs {
    #[arg(short = 'a', long = "app", value_name = "APP")]
    pub app: Option<String>,
    /// The app's name again, to be sure
    #[arg(long, value_name = "APP")]
    pub confirm: Option<String>,
}

#[derive(Args, Debug)]
pub struct DomainArgs {
    #[command(flatten)]
    pub app: AppFlag,
    /// Such as www.example.com, or *.example.com
    pub hostname: String,
}

#[derive(Args, Debug)]
pub struct ConfigGetArgs {
    #[command(flatten)]
    pub app: AppFlag,
    pub key: String,
}

#[derive(Args, Debug)]
pub struct ConfigSetArgs {
    #[command(flatten)]
    pub app: AppFlag,
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub pairs: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ConfigUnsetArgs {
    #[command(flatten)]
    pub app: AppFlag,
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub app: AppFlag,
    /// A release such as v3
    pub release: Option<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    pub app: TargetFlag,
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub app: TargetFlag,
    /// Changes such as `web=3`, `worker+1`, `clock-1` or `web=2,worker=1`; none
    /// prints the formation
    #[arg(value_name = "TYPE=N")]
    pub changes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    #[command(flatten)]
    pub app: TargetFlag,
    /// A process type or process name [default: all]
    pub target: Option<String>,
}

#[derive(Args, Debug)]
pub struct PsWaitArgs {
    /// The app on the `crew server`
    #[arg(short = 'a', long = "app", value_name = "APP")]
    pub app: String,
    /// Only dynos of this process type
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub process_type: Option<String>,
    /// One-off dynos too
    #[arg(short = 'R', long)]
    pub with_run: bool,
    /// Seconds between checks
    #[arg(short = 'w', long, default_value_t = 10, value_name = "SECONDS")]
    pub wait_interval: u64,
}

#[derive(Args, Debug)]
pub struct RunInsideArgs {
    /// The app on the `crew server`
    #[arg(short = 'a', long = "app", value_name = "APP")]
    pub app: String,
    /// Extra environment for the command (repeatable)
    #[arg(long = "env-var", value_name = "K=V")]
    pub env_vars: Vec<String>,
    /// The command's stdin and output are pipes, not a terminal
    #[arg(long)]
    pub no_tty: bool,
    /// The running dyno (`web.1`, `run.2`)
    #[arg(value_name = "DYNO")]
    pub dyno: String,
    /// One shell command line, or a program and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    #[command(flatten)]
    pub app: TargetFlag,
    /// A process type or process name
    pub target: String,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub app: TargetFlag,
    /// Keep following new lines
    #[arg(short = 't', long = "tail")]
    pub tail: bool,
    /// How many recent lines to show
    #[arg(short = 'n', long = "num", default_value_t = 100)]
    pub num: usize,
    /// Only this process type or process (`web`, `web.1`)
    #[arg(long = "ps", short = 'p', alias = "dyno", short_alias = 'd')]
    pub ps: Option<String>,
    /// Only the app's own lines (`app`), crew's (`crew`) or the router's
    /// (`router`; a server keeps up to 1,000 of its latest errors beyond the log's
    /// 10,000 lines)
    #[arg(long, short = 's', value_name = "app|crew|router")]
    pub source: Option<String>,
}

/// Where the app is: shared by every command that reads a Procfile.
#[derive(Args, Debug, Clone)]
pub struct ProcfileArgs {
    /// The Procfile [default: PROCFILE from the env files or the shell, else ROOT/Procfile]
    #[arg(short = 'f', long = "procfile", value_name = "PROCFILE")]
    pub procfile: Option<PathBuf>,
    /// The app's directory, where processes run [default: the Procfile's directory]
    #[arg(short = 'd', long = "root", alias = "app-root", value_name = "DIR")]
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
    pub location: ProcfileArgs,
    /// Env files, read for PROCFILE [default: ROOT/.env if present]
    #[arg(
        short = 'e',
        long = "env",
        value_name = "FILE[,FILE]",
        value_delimiter = ','
    )]
    pub env: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Start only these process types (one of each unless -m says otherwise)
    #[arg(value_name = "TYPE")]
    pub types: Vec<String>,
    #[command(flatten)]
    pub location: ProcfileArgs,
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
    /// Seconds from SIGTERM to SIGKILL when stopping [default: 5]
    #[arg(short = 't', long = "timeout", value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Leave out the HH:MM:SS column
    #[arg(long)]
    pub no_timestamp: bool,
    /// Colour the prefixes even when output is not a terminal
    #[arg(long, overrides_with = "no_color")]
    pub color: bool,
    /// Never colour
    #[arg(long, alias = "no-colour")]
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
    /// Run a one-off dyno of this app on a `crew server` instead of here
    #[arg(short = 'a', long = "app", value_name = "APP")]
    pub server_app: Option<String>,
    /// Extra environment for a server one-off (repeatable); with -a, `--env
    /// K=V` works too
    #[arg(long = "env-var", value_name = "K=V")]
    pub env_vars: Vec<String>,
    /// With -a: the dyno's stdin and output are pipes, not a terminal
    #[arg(long)]
    pub no_tty: bool,
    /// With -a: the one-off's dyno size (standard-1x, standard-2x, performance-m, …)
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    #[command(flatten)]
    pub location: ProcfileArgs,
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

impl GlobalArgs {
    /// Moves the options given before the subcommand into it. An option given
    /// after the subcommand too keeps that later value; one the subcommand has no
    /// use for is an error naming it.
    pub fn apply(self, command: &mut Command) -> Result<(), String> {
        fn take<T>(before: Option<T>, after: &mut Option<T>) {
            if after.is_none() {
                *after = before;
            }
        }
        fn take_list<T>(before: Vec<T>, after: &mut Vec<T>) {
            if after.is_empty() {
                *after = before;
            }
        }
        let GlobalArgs {
            procfile,
            root,
            env,
            port,
            timeout,
            no_color,
            no_timestamp,
            no_prefix,
        } = self;
        // What each command takes, as (given before, name) for the error.
        let mut refuse: Vec<&str> = Vec::new();
        let mut unused = |given: bool, name: &'static str| {
            if given {
                refuse.push(name);
            }
        };
        match command {
            Command::Check(args) => {
                take(procfile, &mut args.location.procfile);
                take(root, &mut args.location.root);
                take_list(env, &mut args.env);
                unused(port.is_some(), "-p");
                unused(timeout.is_some(), "-t");
                unused(no_color, "--no-color");
                unused(no_timestamp, "--no-timestamp");
                unused(no_prefix, "--no-prefix");
            }
            Command::Start(args) => {
                take(procfile, &mut args.location.procfile);
                take(root, &mut args.location.root);
                take_list(env, &mut args.env.env);
                take(port, &mut args.env.port);
                take(timeout, &mut args.timeout);
                // `--color` after the subcommand is the later word and wins.
                args.no_color |= no_color && !args.color;
                args.no_timestamp |= no_timestamp;
                args.no_prefix |= no_prefix;
            }
            Command::Run(args) => {
                take(procfile, &mut args.location.procfile);
                take(root, &mut args.location.root);
                take_list(env, &mut args.env.env);
                take(port, &mut args.env.port);
                unused(timeout.is_some(), "-t");
                unused(no_color, "--no-color");
                unused(no_timestamp, "--no-timestamp");
                unused(no_prefix, "--no-prefix");
            }
            Command::Export(args) => {
                take(procfile, &mut args.procfile);
                take(root, &mut args.root);
                take_list(env, &mut args.env);
                take(port, &mut args.port);
                take(timeout, &mut args.timeout);
                unused(no_color, "--no-color");
                unused(no_timestamp, "--no-timestamp");
                unused(no_prefix, "--no-prefix");
            }
            _ => {
                unused(procfile.is_some(), "-f");
                unused(root.is_some(), "-d");
                unused(!env.is_empty(), "-e");
                unused(port.is_some(), "-p");
                unused(timeout.is_some(), "-t");
                unused(no_color, "--no-color");
                unused(no_timestamp, "--no-timestamp");
                unused(no_prefix, "--no-prefix");
            }
        }
        if refuse.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} before the subcommand: this command has no such option",
                refuse.join(", ")
            ))
        }
    }
}
