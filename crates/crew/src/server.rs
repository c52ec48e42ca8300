//! `crew server`: the platform served over HTTP, and the git hook that feeds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use crew_api::server::{ApiError, Backend, LogStream};
use crew_api::types::{
    Account, AppCreate, AppInfo, AppRef, BUILD_RESULT_PREFIX, BuildCreate, Dyno, DynoCreate,
    FormationEntry, FormationUpdate, LogQuery, NameRef, NamedRef, ReleaseCreate, ReleaseInfo,
    ReleaseRef, UserRef,
};
use crew_engine::DynoInfo;
use crew_platform::{Platform, PlatformConfig, PlatformError};
use crew_runtime::watchdog::Watchdog;
use crew_runtime::{
    DynoNetwork, DynoNetworkConfig, IsolatedConfig, IsolatedRuntime, PlainRuntime, ServerRuntime,
};
use crew_store::StoreError;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::ServerArgs;
use crate::control::{self, timestamp};

/// A one-off as the platform takes it, from the API's request.
fn one_off(request: DynoCreate, input: crew_runtime::DynoInput) -> crew_platform::OneOffRequest {
    crew_platform::OneOffRequest {
        command: request.command,
        env: request.env.unwrap_or_default().into_iter().collect(),
        size: request.size,
        input,
    }
}

/// What an attached process reads: a terminal of the size the client asked
/// for, or a pipe with `--no-tty` or without a size.
fn attached_input(request: &DynoCreate) -> crew_runtime::DynoInput {
    match (request.force_no_tty, &request.terminal) {
        (Some(true), _) | (_, None) => crew_runtime::DynoInput::Pipe,
        (_, Some(size)) => crew_runtime::DynoInput::Terminal {
            cols: size.cols,
            rows: size.rows,
        },
    }
}

/// Isolated dynos where the host allows them and the user did not say no; plain
/// ones, each in its own copy of its slug, otherwise. Also says which, in words.
fn choose_runtime(
    wanted: Isolation,
    network: Option<DynoNetworkConfig>,
    plain: PlainRuntime,
    data: &Path,
    app_uids: (u32, u32),
) -> Result<(ServerRuntime, String)> {
    let copies = data.join("dynos");
    // Copies a killed server left behind belong to no dyno any more.
    let _ = std::fs::remove_dir_all(&copies);
    let plain = ServerRuntime::Plain(plain.with_slug_copies(copies));
    let fallback = "dynos run as plain processes, each in its own copy of its slug";
    if wanted == Isolation::Off {
        return Ok((plain, format!("off (--isolation off): {fallback}")));
    }
    // Probed before the network is made: a host that cannot isolate dynos
    // gets no bridge or table.
    if let Err(why) = IsolatedRuntime::new(IsolatedConfig {
        root_dir: data.join("root"),
        ..IsolatedConfig::default()
    })
    .and_then(|r| r.check())
    {
        return match wanted {
            Isolation::On => Err(anyhow::anyhow!(
                "dyno isolation was asked for (--isolation on) but: {why}"
            )),
            _ => Ok((plain, format!("off: {why}; {fallback}"))),
        };
    }
    let (network, network_text) = match network {
        None => (
            None,
            "dynos share the host's network (--dyno-network off)".to_string(),
        ),
        Some(config) => match DynoNetwork::start(config) {
            Ok(network) => {
                let text = format!("network: {}", network.description());
                (Some(network), text)
            }
            Err(why) if wanted == Isolation::On => {
                return Err(anyhow::anyhow!(
                    "dyno isolation was asked for (--isolation on) but no network per dyno \
                     can be had: {why} (--dyno-network off shares the host's network)"
                ));
            }
            Err(why) => (
                None,
                format!(
                    "dynos share the host's network, because no network per dyno can be had: {why}"
                ),
            ),
        },
    };
    let config = IsolatedConfig {
        root_dir: data.join("root"),
        network: network.clone(),
        ..IsolatedConfig::default()
    };
    let isolated = IsolatedRuntime::new(config).and_then(|r| r.check().map(|()| r));
    if isolated.is_err()
        && let Some(network) = &network
    {
        let _ = network.remove();
    }
    match (isolated, wanted) {
        (Ok(runtime), _) => {
            if let Some(owner) = host_id_in(app_uids) {
                anyhow::bail!(
                    "--app-uids {}-{} holds {owner} of this host; give apps a range no \
                     user or group has",
                    app_uids.0,
                    app_uids.1
                );
            }
            let text = format!(
                "on (namespaces, overlay /app, {}, seccomp, no capabilities, a uid per \
                 app from {}-{}); {network_text}",
                runtime.cgroup_description(),
                app_uids.0,
                app_uids.1
            );
            Ok((ServerRuntime::Isolated(runtime), text))
        }
        (Err(why), Isolation::On) => Err(anyhow::anyhow!(
            "dyno isolation was asked for (--isolation on) but: {why}"
        )),
        (Err(why), _) => Ok((plain, format!("off: {why}; {fallback}"))),
    }
}

/// A user or group of this host (from /etc/passwd and /etc/group) whose id is
/// in `range`, named: an app's dynos would share its files and signals.
fn host_id_in(range: (u32, u32)) -> Option<String> {
    for (file, what) in [("/etc/passwd", "user"), ("/etc/group", "group")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let mut fields = line.split(':');
            let name = fields.next().unwrap_or_default();
            let id = fields.nth(1).and_then(|id| id.parse::<u32>().ok());
            if let Some(id) = id
                && (range.0..=range.1).contains(&id)
            {
                return Some(format!("the {what} `{name}` ({id})"));
            }
        }
    }
    None
}

/// The proxy variables every build gets when the server has them.
const BUILD_PROXY_VARIABLES: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// How builds run, from the flags: the build user, the variables passed on
/// (the proxies and every `--build-env` the server has a value for), and
/// where path buildpacks may live.
fn build_settings(args: &ServerArgs) -> Result<crew_platform::BuildSettings> {
    let mut env = Vec::new();
    let names = BUILD_PROXY_VARIABLES
        .iter()
        .map(|n| n.to_string())
        .chain(args.build_env.iter().cloned());
    for name in names {
        if env.iter().any(|(k, _)| *k == name) {
            continue;
        }
        if let Some(value) = std::env::var_os(&name) {
            let value = value
                .into_string()
                .map_err(|_| anyhow::anyhow!("--build-env {name}: its value is not UTF-8"))?;
            env.push((name, value));
        }
    }
    let path_buildpacks = match &args.buildpack_dir {
        Some(dir) => crew_platform::PathBuildpacks::Under(
            dir.canonicalize()
                .with_context(|| format!("--buildpack-dir {}", dir.display()))?,
        ),
        None => crew_platform::PathBuildpacks::Nowhere,
    };
    Ok(crew_platform::BuildSettings {
        uid: args.build_user.0,
        gid: args.build_user.1,
        env,
        path_buildpacks,
        ..crew_platform::BuildSettings::default()
    })
}

/// `--backend`: where apps' dynos run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DynoBackend {
    /// This machine, isolated or plain (see `--isolation`).
    Local,
    /// A Docker Swarm, through its manager's socket: a service per process type.
    Swarm,
    /// A Kubernetes cluster: a namespace per app, a Deployment per process type.
    Kubernetes,
}

/// The Kubernetes placement of every app, with a client from the kubeconfig;
/// says where, in words. With `--registry`, every release's image is built on
/// `--stack-rootfs` and pushed there, so the rootfs is required with it.
async fn kubernetes_placements(
    args: &ServerArgs,
) -> Result<(crew_platform::PlacementFactory, String)> {
    let base_rootfs = match &args.registry {
        Some(registry) => {
            crew_cluster::registry::Registry::new(registry).context("--registry")?;
            let rootfs = args.stack_rootfs.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "--backend kubernetes --registry {registry} pushes every release's image \
                     there and needs --stack-rootfs ROOTFS.tar: the stack (at least /bin/sh) \
                     that the images are built on"
                )
            })?;
            if !rootfs.is_file() {
                anyhow::bail!("--stack-rootfs {}: no such file", rootfs.display());
            }
            Some(rootfs)
        }
        None => None,
    };
    let client = crew_kubernetes::client_from_kubeconfig(args.kubeconfig.as_deref())
        .await
        .context("making a Kubernetes client from the kubeconfig")?;
    let config = crew_kubernetes::KubernetesConfig {
        registry: args.registry.clone(),
        base_rootfs,
        port_forward: args.port_forward,
        ..crew_kubernetes::KubernetesConfig::default()
    };
    let factory: crew_platform::PlacementFactory = Arc::new(move |app, logs| {
        match crew_kubernetes::KubernetesPlacement::new(client.clone(), app, config.clone(), logs) {
            Ok(placement) => Box::new(placement),
            Err(e) => Box::new(crew_engine::FailedPlacement::new(format!(
                "{app} cannot be placed on Kubernetes: {e}"
            ))),
        }
    });
    let cluster = match &args.kubeconfig {
        Some(path) => format!("kubeconfig {}", path.display()),
        None => "the default kubeconfig".to_string(),
    };
    let images = match &args.registry {
        Some(registry) => format!(
            "images pushed to {}",
            crew_cluster::registry::reference_name(registry)
        ),
        None => "no --registry: the cluster must have every crew/APP:vN image".to_string(),
    };
    let web = if args.port_forward {
        "web pods through the API server's port-forward"
    } else {
        "web pods at their IPs"
    };
    Ok((factory, format!("kubernetes ({cluster}, {images}, {web})")))
}

/// The Swarm placement of every app, after checking that the socket leads to
/// a swarm manager; says where, in words.
async fn swarm_placements(args: &ServerArgs) -> Result<(crew_platform::PlacementFactory, String)> {
    let socket = &args.docker_socket;
    let rootfs = args.stack_rootfs.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "--backend swarm needs --stack-rootfs ROOTFS.tar: the stack (at least /bin/sh) \
             that every release's image is built on"
        )
    })?;
    if !rootfs.is_file() {
        anyhow::bail!("--stack-rootfs {}: no such file", rootfs.display());
    }
    if let Some(registry) = &args.registry {
        crew_swarm::spec::check_registry(registry).context("--registry")?;
    }
    let docker = Arc::new(crew_swarm::Docker::new(socket.clone()));
    let info = docker
        .info()
        .await
        .with_context(|| format!("reaching dockerd at {}", socket.display()))?;
    if !info.swarm.control_available {
        anyhow::bail!(
            "dockerd at {} is not a swarm manager (swarm state: {}); run `docker swarm init` first",
            socket.display(),
            if info.swarm.local_node_state.is_empty() {
                "unknown"
            } else {
                &info.swarm.local_node_state
            }
        );
    }
    let config = crew_swarm::SwarmConfig {
        base_rootfs: Some(rootfs),
        registry: args.registry.clone(),
        ..crew_swarm::SwarmConfig::default()
    };
    let factory: crew_platform::PlacementFactory = Arc::new(move |app, logs| {
        match crew_swarm::SwarmPlacement::new(docker.clone(), app, config.clone(), logs) {
            Ok(placement) => Box::new(placement),
            Err(e) => Box::new(crew_engine::FailedPlacement::new(format!(
                "{app} cannot be placed on the swarm: {e}"
            ))),
        }
    });
    let images = match &args.registry {
        Some(registry) => format!("images pushed to {registry}"),
        None => "no --registry: release images exist on the manager only".to_string(),
    };
    Ok((
        factory,
        format!("swarm (dockerd at {}, {images})", socket.display()),
    ))
}

/// `--isolation`: whether dynos are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// Isolated where the host allows it, plain otherwise.
    Auto,
    /// Isolated, or the server does not start.
    On,
    /// Plain processes, each in its own copy of its slug.
    Off,
}

/// Where the server keeps everything unless `--data` says otherwise.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("crew"),
        _ => home().join(".local/share/crew"),
    }
}

pub fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// The file a running server leaves so that clients on this machine find it.
pub fn locator_file() -> PathBuf {
    home().join(".config/crew/server")
}

pub fn server(args: ServerArgs) -> Result<u8> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(serve(args))
}

async fn serve(args: ServerArgs) -> Result<u8> {
    if args.port_forward && args.backend != DynoBackend::Kubernetes {
        anyhow::bail!(
            "--port-forward goes with --backend kubernetes: it is how the router reaches \
             pods from outside a cluster"
        );
    }
    let data = args.data.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let data = data
        .canonicalize()
        .with_context(|| format!("finding {}", data.display()))?;
    let token = token(&data)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener
        .local_addr()
        .context("reading the listening address")?;
    let url = format!("http://{address}");

    let router_listener = tokio::net::TcpListener::bind(&args.router)
        .await
        .with_context(|| format!("listening for the router on {}", args.router))?;
    let router_port = router_listener
        .local_addr()
        .context("reading the router's address")?
        .port();

    // Every descriptor the system allows; the router's caps keep a reserve
    // of them for the API, `crew run` and the dynos.
    let fd_limit = crew_runtime::os::raise_fd_limit().unwrap_or_else(|e| {
        eprintln!("crew: warning: cannot raise the open files limit: {e}");
        1024
    });
    let exe = std::env::current_exe().context("finding the crew binary")?;
    let watchdog = Watchdog::start(&exe)
        .map_err(|e| {
            eprintln!("crew: warning: no watchdog, so dynos may outlive a killed server: {e}")
        })
        .ok();
    let plain = PlainRuntime::new(watchdog).context("setting up process supervision")?;
    let reaper = plain.spawn_orphan_reaper();
    let network = match args.dyno_network {
        crate::cli::DynoNetworkChoice::Off => None,
        crate::cli::DynoNetworkChoice::Range(range) => Some(range),
    }
    .map(|range| DynoNetworkConfig {
        range,
        bridge: args.dyno_bridge.clone(),
        dns_upstream: args.dyno_dns,
        // Outside the data dir: a dyno's mount table shows where the file it
        // sees as /etc/resolv.conf comes from, and must not name the data dir.
        resolv_conf: PathBuf::from("/run/crew").join(format!(
            "{}.resolv.conf",
            args.dyno_bridge
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                })
                .collect::<String>()
        )),
        ..DynoNetworkConfig::default()
    });
    let (runtime, isolation) =
        choose_runtime(args.isolation, network, plain, &data, args.app_uids)?;
    let network = match &runtime {
        ServerRuntime::Isolated(r) => r.config().network.clone(),
        ServerRuntime::Plain(_) => None,
    };
    let placements = match args.backend {
        DynoBackend::Local => None,
        DynoBackend::Swarm => {
            let (factory, said) = swarm_placements(&args).await?;
            println!("dynos run on {said}");
            Some(factory)
        }
        DynoBackend::Kubernetes => {
            let (factory, said) = kubernetes_placements(&args).await?;
            println!("dynos run on {said}");
            Some(factory)
        }
    };
    println!("dyno isolation: {isolation}");
    let builds = build_settings(&args)?;
    let platform = Platform::open(
        PlatformConfig {
            data: data.clone(),
            exe,
            ports: args.dyno_ports.0..=args.dyno_ports.1,
            drain_requests: true,
            isolation,
            placements,
            app_uids: args.app_uids.0..=args.app_uids.1,
            builds,
        },
        runtime,
    )
    .await
    .context("opening the platform")?;
    println!("build isolation: {}", platform.build_isolation());

    let router = Arc::new(crew_router::Router::new(
        PlatformRoutes(platform.clone()),
        crew_router::RouterConfig {
            request_timeout: std::time::Duration::from_secs(args.request_timeout),
            boot_wait: std::time::Duration::from_secs(args.boot_wait),
            ..crew_router::RouterConfig::default()
        }
        .with_fd_limit(fd_limit),
        router_port,
    ));
    let router_task = tokio::spawn(router.serve(router_listener));
    let backend = Arc::new(ServerBackend {
        platform: platform.clone(),
        url: url.clone(),
        token: token.clone(),
        router_port,
        dns_target: args
            .hostnames
            .first()
            .cloned()
            .unwrap_or_else(|| address.ip().to_string()),
    });
    let router = crew_api::server::require_token(crew_api::server::router(backend), token.clone());
    let tls = crate::tls::server_tls(
        &data,
        &args.hostnames,
        args.tls_cert.as_deref().zip(args.tls_key.as_deref()),
    )
    .context("setting up TLS for the API")?;
    let server = tokio::spawn(crew_api::server::serve_tcp(
        listener,
        router,
        Some(tls.config),
    ));
    write_locator(&url, &data);
    println!("crew server listening on {url}");
    let https = url.replacen("http://", "https://", 1);
    println!("the API answers TLS on the same port: {https}");
    if let Some(ca) = &tls.ca {
        let ca = ca.display();
        println!("its certificate is from crew's CA in {ca}; to trust it:");
        println!("  export NODE_EXTRA_CA_CERTS={ca}    # the Heroku CLI");
        println!("  git config --global http.{https}/.sslCAInfo {ca}    # or GIT_SSL_CAINFO={ca}");
    }
    println!("router serving every app at http://APP.localhost:{router_port}/");
    println!("API token in {}", data.join("api-token").display());
    println!(
        "export CREW_API_URL={url} CREW_API_KEY=$(cat {})",
        data.join("api-token").display()
    );

    let mut terms = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupts = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    tokio::select! {
        _ = terms.recv() => {}
        _ = interrupts.recv() => {}
        result = server => {
            result.context("the API server stopped")?.context("serving the API")?;
        }
    }
    println!("crew server stopping every dyno");
    platform.shutdown().await;
    router_task.abort();
    reaper.abort();
    if let Some(network) = network
        && let Err(e) = network.remove()
    {
        eprintln!("crew: warning: could not remove the dyno network: {e}");
    }
    Ok(0)
}

/// The API token: made once, kept in `DATA/api-token` with mode 0600.
fn token(data: &Path) -> Result<String> {
    let path = data.join("api-token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let mut bytes = [0u8; 24];
    let mut random = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    std::io::Read::read_exact(&mut random, &mut bytes).context("reading /dev/urandom")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let partial = data.join("api-token.partial");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("writing {}", partial.display()))?;
        std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())
            .with_context(|| format!("writing {}", partial.display()))?;
    }
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

fn write_locator(url: &str, data: &Path) {
    let path = locator_file();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(
        &path,
        format!("{url}\n{}\n", data.join("api-token").display()),
    );
}

struct ServerBackend {
    platform: Arc<Platform>,
    url: String,
    token: String,
    router_port: u16,
    /// Where custom domains' DNS should point (`cname`): the first
    /// `--hostname`, else the address the server listens on.
    dns_target: String,
}

/// The router asks the platform where a host's requests go.
struct PlatformRoutes(Arc<Platform>);

impl crew_router::Routes for PlatformRoutes {
    fn route(&self, host: &str) -> Option<crew_router::AppRoute> {
        self.0.route(host).map(|r| crew_router::AppRoute {
            app: r.app,
            backends: r.backends,
            log: r.log,
            maintenance: r.maintenance,
        })
    }
}

fn api_error(e: PlatformError) -> ApiError {
    match &e {
        PlatformError::Store(store) => match store {
            StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
            StoreError::InvalidName { .. }
            | StoreError::AppExists { .. }
            | StoreError::DomainTaken { .. }
            | StoreError::Invalid { .. } => ApiError::invalid(e.to_string()),
            _ => ApiError::unavailable(e.to_string()),
        },
        PlatformError::UnknownDyno(_) => ApiError::not_found(e.to_string()),
        PlatformError::Formation(_) | PlatformError::Invalid(_) => ApiError::invalid(e.to_string()),
        PlatformError::ShuttingDown => ApiError::unavailable(e.to_string()),
        PlatformError::Build(_) | PlatformError::Io { .. } => ApiError::invalid(e.to_string()),
    }
}

/// The one account of a crew server: whoever holds the token. Heroku's CLI
/// shows its email as the owner of every app and the author of every release.
const ACCOUNT_ID: &str = "00000000-0000-4000-8000-000000000001";
const ACCOUNT_EMAIL: &str = "crew@localhost";

fn account_ref() -> UserRef {
    UserRef {
        id: ACCOUNT_ID.into(),
        email: ACCOUNT_EMAIL.into(),
    }
}

/// Bytes of the files under `dir`, for an app's `repo_size`.
fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => tree_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

impl ServerBackend {
    fn app_info(&self, app: crew_store::App) -> AppInfo {
        let store = self.platform.store();
        let current = store.current_release(&app.name).ok();
        let slug = current
            .as_ref()
            .and_then(|r| r.slug_id.as_ref())
            .and_then(|id| store.slug(id).ok());
        let repo = self.platform.repos().join(format!("{}.git", app.name));
        let router_errors = self.platform.router_errors(&app.name);
        let maintenance = store.app_settings(&app.name).is_ok_and(|s| s.maintenance);
        AppInfo {
            git_url: format!("{}/{}.git", self.url, app.name),
            web_url: format!("http://{}.localhost:{}/", app.name, self.router_port),
            id: app.id,
            name: app.name,
            created_at: app.created_at,
            updated_at: app.updated_at,
            generation: NameRef {
                name: "cedar".into(),
            },
            stack: NameRef {
                name: "crew".into(),
            },
            build_stack: NameRef {
                name: "crew".into(),
            },
            owner: account_ref(),
            region: NamedRef {
                id: "local".into(),
                name: "local".into(),
            },
            space: None,
            process_tier: "production".into(),
            maintenance,
            acm: false,
            create_status: "complete".into(),
            released_at: current.as_ref().map(|r| r.created_at.clone()),
            slug_size: slug.as_ref().map(|s| s.size),
            repo_size: Some(tree_size(&repo)),
            buildpack_provided_description: slug.and_then(|s| s.buildpack),
            internal_routing: None,
            archived_at: None,
            isolation: Some(self.platform.isolation().to_string()),
            router_errors,
        }
    }

    fn release_info(&self, app: &str, release: crew_store::Release) -> ReleaseInfo {
        let store = self.platform.store();
        let current = store
            .current_release(app)
            .map(|r| r.version == release.version)
            .unwrap_or(false);
        let app_ref = store.app(app).ok().map(|a| AppRef {
            id: a.id,
            name: a.name,
        });
        let succeeded = release.status.as_str() == "succeeded";
        let output_stream_url = store
            .release_output(&release.id)
            .ok()
            .flatten()
            .map(|o| format!("{}/release-outputs/{}/{}", self.url, o.release_id, o.secret));
        ReleaseInfo {
            eligible_for_rollback: succeeded && release.slug_id.is_some(),
            id: release.id,
            version: release.version,
            description: release.description,
            status: release.status.as_str().to_string(),
            current,
            created_at: release.created_at,
            updated_at: release.updated_at,
            slug: release.slug_id.map(|id| crew_api::types::IdRef { id }),
            app: app_ref,
            user: account_ref(),
            addon_plan_names: Vec::new(),
            output_stream_url,
        }
    }

    /// Dynos as the API shows them, each with the release it started on
    /// (`heroku ps:wait` waits for them all to be on the current one). A
    /// placement that does not say names the current release.
    fn dynos_of(&self, app: &crew_store::App, infos: Vec<DynoInfo>) -> Vec<Dyno> {
        let store = self.platform.store();
        let as_ref = |r: crew_store::Release| ReleaseRef {
            id: r.id,
            version: r.version,
        };
        let current = store.current_release(&app.name).ok();
        let release_of = |info: &DynoInfo| match (info.release, &current) {
            (Some(version), Some(c)) if version != c.version => {
                store.release(&app.name, version).ok().map(as_ref)
            }
            _ => current.clone().map(as_ref),
        };
        let app_ref = crew_api::types::AppRef {
            id: app.id.clone(),
            name: app.name.clone(),
        };
        infos
            .into_iter()
            .map(|info| {
                let size = info
                    .size
                    .clone()
                    .unwrap_or_else(|| crew_store::DEFAULT_SIZE.to_string());
                let release = release_of(&info);
                control::api_dyno(info, app_ref.clone(), &size, release)
            })
            .collect()
    }

    fn formation_entries(&self, app: &str) -> Result<Vec<FormationEntry>, ApiError> {
        let store = self.platform.store();
        let info = store.app(app).map_err(|e| api_error(e.into()))?;
        let rows = store.formation(app).map_err(|e| api_error(e.into()))?;
        let commands = store
            .current_release(app)
            .ok()
            .and_then(|r| r.slug_id)
            .and_then(|id| store.slug(&id).ok())
            .map(|s| s.process_types)
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(|r| FormationEntry {
                command: commands.get(&r.process_type).cloned().unwrap_or_default(),
                id: format!("{}:{}", info.id, r.process_type),
                process_type: r.process_type,
                quantity: r.quantity,
                size: r.size,
                app: Some(AppRef {
                    id: info.id.clone(),
                    name: info.name.clone(),
                }),
                created_at: info.created_at.clone(),
                updated_at: info.updated_at.clone(),
            })
            .collect())
    }
}

impl Backend for ServerBackend {
    async fn dynos(&self, app: &str) -> Result<Vec<Dyno>, ApiError> {
        let info = self
            .platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?;
        let dynos = self.platform.ps(app).await.map_err(api_error)?;
        Ok(self.dynos_of(&info, dynos))
    }

    async fn create_dyno(&self, app: &str, request: DynoCreate) -> Result<Dyno, ApiError> {
        let info = self
            .platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?;
        let (dyno, _) = self
            .platform
            .run(app, one_off(request, crew_runtime::DynoInput::Idle))
            .await
            .map_err(api_error)?;
        self.dynos_of(&info, vec![dyno])
            .pop()
            .ok_or_else(|| ApiError::unavailable("the dyno vanished"))
    }

    async fn attach(
        &self,
        app: &str,
        request: DynoCreate,
    ) -> Result<crew_api::attach::Attached, ApiError> {
        let input = attached_input(&request);
        let (_, attachment) = self
            .platform
            .run(app, one_off(request, input))
            .await
            .map_err(api_error)?;
        let attachment =
            attachment.ok_or_else(|| ApiError::unavailable("the one-off started detached"))?;
        attached(attachment, "the one-off did not start").await
    }

    async fn attach_inside(
        &self,
        app: &str,
        dyno: &str,
        request: DynoCreate,
    ) -> Result<crew_api::attach::Attached, ApiError> {
        let input = attached_input(&request);
        let attachment = self
            .platform
            .run_inside(app, dyno, one_off(request, input))
            .await
            .map_err(api_error)?;
        attached(attachment, "the process did not start").await
    }

    async fn restart(&self, app: &str, target: Option<String>) -> Result<(), ApiError> {
        self.platform.restart(app, target).await.map_err(api_error)
    }

    /// `ps:stop` / `ps:kill`: as on Heroku, a stopped formation dyno is
    /// started again per the formation (scale to 0 to keep a type down), and a
    /// one-off ends. A restart is exactly that.
    async fn stop(&self, app: &str, target: String) -> Result<(), ApiError> {
        self.platform
            .restart(app, Some(target))
            .await
            .map_err(api_error)
    }

    async fn formation(&self, app: &str) -> Result<Vec<FormationEntry>, ApiError> {
        self.platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?;
        self.formation_entries(app)
    }

    async fn scale(
        &self,
        app: &str,
        update: FormationUpdate,
    ) -> Result<Vec<FormationEntry>, ApiError> {
        self.platform
            .scale(app, &update.updates)
            .await
            .map_err(api_error)?;
        self.formation_entries(app)
    }

    async fn logs(&self, app: &str, query: LogQuery) -> Result<LogStream, ApiError> {
        let ring = self.platform.logs(app).map_err(api_error)?;
        let router_errors = self.platform.router_error_lines(app).map_err(api_error)?;
        control::log_stream_with_router_errors(&ring, Some(&router_errors), query)
    }

    async fn apps(&self) -> Result<Vec<AppInfo>, ApiError> {
        let apps = self
            .platform
            .store()
            .apps()
            .map_err(|e| api_error(e.into()))?;
        Ok(apps.into_iter().map(|a| self.app_info(a)).collect())
    }

    async fn create_app(&self, request: AppCreate) -> Result<AppInfo, ApiError> {
        if let Some(name) = request.name {
            let app = self.platform.create_app(&name).await.map_err(api_error)?;
            return Ok(self.app_info(app));
        }
        // No name: draw Heroku-style names until one is free. With 48 × 48 ×
        // 9000 names, running out of draws means the server is all but full.
        for _ in 0..100 {
            let random = crate::names::random()
                .map_err(|e| ApiError::unavailable(format!("reading /dev/urandom: {e}")))?;
            match self
                .platform
                .create_app(&crate::names::app_name(random))
                .await
            {
                Ok(app) => return Ok(self.app_info(app)),
                Err(PlatformError::Store(StoreError::AppExists { .. })) => continue,
                Err(e) => return Err(api_error(e)),
            }
        }
        Err(ApiError::invalid(
            "no free app name in 100 tries: give the app a name",
        ))
    }

    async fn app(&self, app: &str) -> Result<AppInfo, ApiError> {
        let app = self
            .platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?;
        Ok(self.app_info(app))
    }

    async fn destroy_app(&self, app: &str) -> Result<AppInfo, ApiError> {
        let info = self.app(app).await?;
        self.platform.destroy_app(app).await.map_err(api_error)?;
        Ok(info)
    }

    async fn config(&self, app: &str) -> Result<BTreeMap<String, String>, ApiError> {
        self.platform
            .store()
            .config(app)
            .map_err(|e| api_error(e.into()))
    }

    async fn update_config(
        &self,
        app: &str,
        changes: BTreeMap<String, Option<String>>,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let mut set = BTreeMap::new();
        let mut unset = Vec::new();
        for (key, value) in changes {
            match value {
                Some(v) => {
                    set.insert(key, v);
                }
                None => unset.push(key),
            }
        }
        self.platform
            .set_config(app, &set, &unset)
            .await
            .map_err(api_error)?;
        self.config(app).await
    }

    async fn releases(&self, app: &str) -> Result<Vec<ReleaseInfo>, ApiError> {
        let releases = self
            .platform
            .store()
            .releases(app)
            .map_err(|e| api_error(e.into()))?;
        Ok(releases
            .into_iter()
            .map(|r| self.release_info(app, r))
            .collect())
    }

    async fn release(&self, app: &str, release: &str) -> Result<ReleaseInfo, ApiError> {
        let release = self.find_release(app, release)?;
        Ok(self.release_info(app, release))
    }

    async fn release_config(
        &self,
        app: &str,
        release: &str,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        Ok(self.find_release(app, release)?.config)
    }

    async fn account(&self) -> Result<Account, ApiError> {
        let made = std::fs::metadata(self.platform.data().join("api-token"))
            .and_then(|m| m.modified())
            .map(timestamp)
            .unwrap_or_default();
        Ok(Account {
            id: ACCOUNT_ID.into(),
            email: ACCOUNT_EMAIL.into(),
            name: "crew".into(),
            created_at: made.clone(),
            updated_at: made,
            verified: true,
            two_factor_authentication: false,
            beta: false,
            allow_tracking: false,
            federated: false,
            suspended_at: None,
            delinquent_at: None,
            default_organization: None,
            default_team: None,
        })
    }

    async fn rollback(&self, app: &str, request: ReleaseCreate) -> Result<ReleaseInfo, ApiError> {
        let store = self.platform.store();
        let version = match parse_version(&request.release) {
            Ok(v) => v,
            Err(_) => store
                .releases(app)
                .map_err(|e| api_error(e.into()))?
                .into_iter()
                .find(|r| r.id == request.release)
                .map(|r| r.version)
                .ok_or_else(|| ApiError::not_found(format!("no release {}", request.release)))?,
        };
        let release = self
            .platform
            .rollback(app, version)
            .await
            .map_err(api_error)?;
        Ok(self.release_info(app, release))
    }

    /// The app's own hostname (`kind: heroku`), then its custom domains.
    async fn domains(&self, app: &str) -> Result<Vec<crew_api::types::DomainInfo>, ApiError> {
        let store = self.platform.store();
        let info = store.app(app).map_err(|e| api_error(e.into()))?;
        let domains = store.domains(app).map_err(|e| api_error(e.into()))?;
        let app_ref = AppRef {
            id: info.id.clone(),
            name: info.name.clone(),
        };
        let own = crew_api::types::DomainInfo {
            id: info.id.clone(),
            hostname: format!("{}{}", info.name, crew_platform::LOCAL_SUFFIX),
            kind: "heroku".into(),
            created_at: info.created_at.clone(),
            cname: None,
            status: "none".into(),
            app: Some(app_ref.clone()),
            acm_status: None,
            sni_endpoint: None,
            updated_at: info.created_at,
        };
        Ok(std::iter::once(own)
            .chain(domains.into_iter().map(|d| {
                let mut domain = domain_info(d);
                domain.cname = Some(self.dns_target.clone());
                domain.app = Some(app_ref.clone());
                domain
            }))
            .collect())
    }

    async fn add_domain(
        &self,
        app: &str,
        request: crew_api::types::DomainCreate,
    ) -> Result<crew_api::types::DomainInfo, ApiError> {
        let mut domain = self
            .platform
            .add_domain(app, &request.hostname)
            .map(domain_info)
            .map_err(api_error)?;
        domain.cname = Some(self.dns_target.clone());
        Ok(domain)
    }

    async fn update_app(
        &self,
        app: &str,
        update: crew_api::types::AppUpdate,
    ) -> Result<AppInfo, ApiError> {
        let mut name = self
            .platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?
            .name;
        // Everything is checked before anything changes.
        if let Some(stack) = &update.build_stack
            && stack != "crew"
        {
            return Err(ApiError::invalid(format!(
                "`{stack}` is not a stack of this server: crew has one, `crew`"
            )));
        }
        if let Some(new_name) = &update.name {
            name = self
                .platform
                .rename_app(&name, new_name)
                .await
                .map_err(api_error)?
                .name;
        }
        if let Some(on) = update.maintenance {
            self.platform
                .set_maintenance(&name, on)
                .await
                .map_err(api_error)?;
        }
        self.app(&name).await
    }

    async fn buildpacks(&self, app: &str) -> Result<Vec<String>, ApiError> {
        self.platform.buildpacks(app).map_err(api_error)
    }

    async fn set_buildpacks(
        &self,
        app: &str,
        buildpacks: Vec<String>,
    ) -> Result<Vec<String>, ApiError> {
        self.platform
            .set_buildpacks(app, &buildpacks)
            .await
            .map_err(api_error)
    }

    async fn release_output(&self, release_id: &str) -> Result<Option<(String, String)>, ApiError> {
        Ok(self
            .platform
            .store()
            .release_output(release_id)
            .map_err(|e| api_error(e.into()))?
            .map(|o| (o.secret, o.output)))
    }

    async fn remove_domain(&self, app: &str, hostname: &str) -> Result<(), ApiError> {
        self.platform
            .remove_domain(app, hostname)
            .map_err(api_error)
    }

    async fn builds(&self, app: &str) -> Result<Vec<crew_api::types::BuildInfo>, ApiError> {
        let builds = self
            .platform
            .store()
            .builds(app)
            .map_err(|e| api_error(e.into()))?;
        Ok(builds
            .into_iter()
            .map(|b| crew_api::types::BuildInfo {
                id: b.id,
                status: b.status.as_str().to_string(),
                source_blob: crew_api::types::SourceBlob {
                    url: String::new(),
                    version: Some(b.source),
                },
                slug: b.slug_id.map(|id| crew_api::types::IdRef { id }),
                created_at: b.created_at,
                updated_at: b.updated_at,
            })
            .collect())
    }

    async fn build(&self, app: &str, request: BuildCreate) -> Result<LogStream, ApiError> {
        self.platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?;
        let source = self.source_named(&request.source_blob.url)?;
        let commit = request.source_blob.version.unwrap_or_default();
        let (out, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        let platform = self.platform.clone();
        let app = app.to_string();
        tokio::spawn(async move {
            let result = platform.deploy(&app, source, commit, out.clone()).await;
            let last = match result {
                Ok(release) => format!("{BUILD_RESULT_PREFIX}succeeded v{}", release.version),
                Err(e) => {
                    let _ = out.send(format!(" !     {e}"));
                    format!("{BUILD_RESULT_PREFIX}failed")
                }
            };
            let _ = out.send(last);
        });
        Ok(Box::pin(futures_util::stream::unfold(
            lines,
            |mut lines| async move {
                let line = lines.recv().await?;
                Some((Bytes::from(format!("{line}\n")), lines))
            },
        )))
    }

    async fn app_id(&self, app: &str) -> Result<String, ApiError> {
        self.platform
            .store()
            .app(app)
            .map(|a| a.id)
            .map_err(|e| api_error(e.into()))
    }

    fn public_url(&self) -> Option<String> {
        Some(self.url.clone())
    }

    async fn create_source(&self) -> Result<String, ApiError> {
        self.platform
            .create_source()
            .map(|id| id.to_string())
            .map_err(api_error)
    }

    async fn upload_source(&self, id: &str, body: axum::body::Body) -> Result<(), ApiError> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let id = crew_platform::SourceId::parse(id)
            .ok_or_else(|| ApiError::not_found(format!("no such source: {id}")))?;
        let file = self.platform.source_upload(&id).map_err(api_error)?;
        let mut file = tokio::fs::File::from_std(file);
        let mut body = body.into_data_stream();
        let mut written: u64 = 0;
        let failed = |what: String| ApiError::unavailable(format!("storing source {id}: {what}"));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| failed(e.to_string()))?;
            written += chunk.len() as u64;
            if written > crew_platform::MAX_SOURCE_BYTES {
                drop(file);
                let _ = self.platform.source_upload(&id);
                return Err(ApiError {
                    status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    id: "too_large",
                    message: format!(
                        "a source may hold at most {} bytes",
                        crew_platform::MAX_SOURCE_BYTES
                    ),
                });
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| failed(e.to_string()))?;
        }
        file.flush().await.map_err(|e| failed(e.to_string()))?;
        Ok(())
    }

    async fn git(&self, app: &str, request: axum::extract::Request) -> axum::response::Response {
        use axum::response::IntoResponse;
        if let Err(e) = self.platform.store().app(app) {
            return api_error(e.into()).into_response();
        }
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        crew_api::git::serve(
            &self.platform.repos(),
            crew_api::git::GitRequest {
                method: parts.method.clone(),
                path_info: &path,
                query: &query,
                headers: &parts.headers,
                body,
                remote_user: "crew",
                hook_env: vec![
                    ("CREW_HOOK_URL".into(), self.url.clone()),
                    ("CREW_API_KEY".into(), self.token.clone()),
                ],
            },
        )
        .await
    }
}

impl ServerBackend {
    /// The uploaded source a build's `source_blob.url` names: only a URL this
    /// server handed out from `POST /sources`. A path on the host (`file://`
    /// or bare) is refused: it would build whatever directory a request
    /// named.
    fn source_named(&self, url: &str) -> Result<crew_platform::SourceId, ApiError> {
        let accepted = "source_blob.url must be a URL from POST /sources on this server \
                        (upload a .tar or .tar.gz of the source to its put_url first)";
        if let Some(id) = url
            .strip_prefix(self.url.as_str())
            .and_then(|rest| rest.strip_prefix("/sources/"))
        {
            return crew_platform::SourceId::parse(id)
                .ok_or_else(|| ApiError::invalid(format!("`{url}` names no source: {accepted}")));
        }
        if url.starts_with("https://") || url.starts_with("http://") {
            return Err(ApiError::invalid(format!(
                "crew does not fetch source tarballs from other servers yet: {accepted}"
            )));
        }
        Err(ApiError::invalid(format!(
            "`{url}` is not accepted: crew never builds from a path on the server. {accepted}"
        )))
    }

    /// A release by version (`3`, `v3`) or id.
    fn find_release(&self, app: &str, release: &str) -> Result<crew_store::Release, ApiError> {
        let store = self.platform.store();
        match parse_version(release) {
            Ok(version) => store.release(app, version),
            Err(_) => store.release_by_id(app, release),
        }
        .map_err(|e| api_error(e.into()))
    }
}

fn domain_info(d: crew_store::Domain) -> crew_api::types::DomainInfo {
    crew_api::types::DomainInfo {
        id: d.id,
        hostname: d.hostname,
        kind: "custom".into(),
        updated_at: d.created_at.clone(),
        created_at: d.created_at,
        cname: None,
        // Routed as soon as it is added: nothing to wait for.
        status: "none".into(),
        app: None,
        acm_status: None,
        sni_endpoint: None,
    }
}

fn parse_version(text: &str) -> Result<u32, ApiError> {
    text.trim_start_matches('v')
        .parse()
        .map_err(|_| ApiError::invalid(format!("`{text}` is not a release version like v3")))
}

/// `crew __pre-receive APP`: git runs this before accepting a push. It uploads
/// a tarball of the pushed commit as a source and asks the server to build and
/// release it, passing the build's output through to the pusher. A failed
/// build rejects the push. Nothing is written to disk here: the server keeps
/// the source in its own data dir and removes it when the build ends.
pub fn pre_receive(app: &str) -> Result<u8> {
    use std::io::BufRead;
    let url = std::env::var("CREW_HOOK_URL").context("CREW_HOOK_URL is not set")?;
    let key = std::env::var("CREW_API_KEY").context("CREW_API_KEY is not set")?;
    let mut target = None;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading the pushed refs")?;
        let mut parts = line.split_whitespace();
        let (Some(_old), Some(new), Some(reference)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if reference == "refs/heads/main" || reference == "refs/heads/master" {
            if new.chars().all(|c| c == '0') {
                eprintln!(" !     Deleting {reference} is not allowed: it is what is deployed.");
                return Ok(1);
            }
            target = Some(new.to_string());
        }
    }
    let Some(commit) = target else {
        eprintln!("crew deploys pushes to main or master; other branches are only stored.");
        return Ok(0);
    };
    let tarball = export(&commit)?;
    eprintln!("-----> Building source");
    let client = crew_api::client::Client::new(
        crew_api::client::Endpoint::Tcp(url.trim_start_matches("http://").to_string()),
        Some(key),
    );
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let ok = tokio.block_on(async {
        let source: crew_api::types::SourceInfo = client
            .call(axum::http::Method::POST, "/sources", &serde_json::json!({}))
            .await
            .context("asking the server for a place to upload the source")?;
        client
            .put_bytes(&path_of(&source.source_blob.put_url), tarball)
            .await
            .context("uploading the source")?;
        let request = BuildCreate {
            source_blob: crew_api::types::SourceBlob {
                url: source.source_blob.get_url,
                version: Some(commit),
            },
        };
        let body = serde_json::to_vec(&request)?;
        let mut stream = client
            .stream_post(&format!("/apps/{app}/builds"), body)
            .await
            .context("asking the server to build")?;
        let mut pending = String::new();
        let mut ok = false;
        while let Some(frame) = http_body_util::BodyExt::frame(&mut stream).await {
            let frame = frame.context("reading the build's output")?;
            if let Some(data) = frame.data_ref() {
                pending.push_str(&String::from_utf8_lossy(data));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    let line = line.trim_end_matches('\n');
                    match line.strip_prefix(BUILD_RESULT_PREFIX) {
                        Some(result) => ok = result.starts_with("succeeded"),
                        None => eprintln!("{line}"),
                    }
                }
            }
        }
        anyhow::Ok(ok)
    });
    Ok(if ok? { 0 } else { 1 })
}

/// The path and query of an absolute URL (`http://HOST/sources/ID` →
/// `/sources/ID`); a path as it is.
fn path_of(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map_or("/".to_string(), |at| rest[at..].to_string()),
        None => url.to_string(),
    }
}

/// The tree of `commit` as a tar.gz, from `git archive` in the hook's own
/// environment, which can see the pushed objects before git accepts them.
/// git's output is read to its end before git is waited for: stopping early
/// (at the tar's end-of-archive blocks, before git's padding) would kill git
/// with SIGPIPE and fail the push.
fn export(commit: &str) -> Result<Vec<u8>> {
    let mut child = std::process::Command::new("git")
        .args(["archive", "--format=tar.gz", commit])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let mut stdout = child.stdout.take().context("git archive has no output")?;
    let mut tarball = Vec::new();
    let read = std::io::Read::read_to_end(&mut stdout, &mut tarball);
    let status = child.wait().context("waiting for git archive")?;
    read.context("reading git archive's output")?;
    if !status.success() {
        anyhow::bail!("git archive {commit} failed: {status}");
    }
    Ok(tarball)
}

/// An engine's attachment as the API hands it to a client: once the process
/// runs, its output, its input and terminal size if it has a terminal, its
/// exit code and a way to hang up on it.
async fn attached(
    attachment: crew_engine::Attachment,
    not_started: &str,
) -> Result<crew_api::attach::Attached, ApiError> {
    let crew_engine::Attachment { io, exit, hangup } = attachment;
    let (output, console) = match io.await {
        Ok(Ok(io)) => io,
        Ok(Err(why)) => return Err(ApiError::unavailable(why)),
        Err(_) => return Err(ApiError::unavailable(not_started)),
    };
    let (input, resize) = match console {
        Some(console) => (Some(console.input), console.resize),
        None => (None, None),
    };
    Ok(crew_api::attach::Attached {
        output: Box::pin(output),
        input: input.map(|i| Box::pin(i) as _),
        resize: resize.map(|r| Box::new(move |cols, rows| r.set(cols, rows)) as _),
        exit: Box::pin(async move { exit.await.map_or(-1, |status| status.code()) }),
        hangup: Box::new(hangup),
    })
}
