//! `crew server`: the platform served over HTTP, and its router.
//!
//! `run` is the one entry: it opens the data directory, picks where dynos run
//! (`placements`), opens the `Platform`, and serves the router and the API
//! (`api::ServerApi`) until SIGTERM or SIGINT, then stops every dyno.
//!
//! The modules below point one way: this file uses them, and none of them
//! uses this file. `args` is also `cli`'s, which names `ServerArgs` in its
//! `Command`; nothing here names `cli`.

mod api;
pub mod args;
mod builds;
mod one_off;
mod placements;
mod token;
mod views;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use crew_platform::{Platform, PlatformConfig};
use crew_runtime::watchdog::Watchdog;
use crew_runtime::{DynoNetworkConfig, PlainRuntime, ServerRuntime};
use tokio::signal::unix::{SignalKind, signal};

use self::api::ServerApi;
use self::args::{DynoNetworkChoice, ServerArgs};
use self::placements::PlacementKind;
use crate::paths;

/// `crew server`: serves until told to stop; the exit code is 0 after a clean
/// stop.
pub fn run(args: ServerArgs) -> Result<u8> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(serve(args))
}

async fn serve(args: ServerArgs) -> Result<u8> {
    if args.port_forward && args.backend != PlacementKind::Kubernetes {
        anyhow::bail!(
            "--port-forward goes with --backend kubernetes: it is how the router reaches \
             pods from outside a cluster"
        );
    }
    let data = args.data.clone().unwrap_or_else(paths::default_data_dir);
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let data = data
        .canonicalize()
        .with_context(|| format!("finding {}", data.display()))?;
    let token = token::load_or_create(&data)?;
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
    let network = dyno_network(&args);
    let (runtime, isolation) =
        placements::choose_runtime(args.isolation, network, plain, &data, args.app_uids)?;
    let network = match &runtime {
        ServerRuntime::Isolated(r) => r.config().network.clone(),
        ServerRuntime::Plain(_) => None,
    };
    let placements =
        match placements::cluster_placements(args.backend, &args.cluster_flags()).await? {
            None => None,
            Some((factory, said)) => {
                println!("dynos run on {said}");
                Some(factory)
            }
        };
    println!("dyno isolation: {isolation}");
    let builds = builds::build_settings(&args)?;
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
    let api = Arc::new(ServerApi {
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
    let router = crew_api::server::require_token(crew_api::server::router(api), token.clone());
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
    let token_file = paths::token_file(&data);
    println!("API token in {}", token_file.display());
    println!(
        "export CREW_API_URL={url} CREW_API_KEY=$(cat {})",
        token_file.display()
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

/// Tells clients on this machine where the server is and where its token is
/// (`paths::locator_file`); a server that cannot write it still serves.
fn write_locator(url: &str, data: &Path) {
    let path = paths::locator_file();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(
        &path,
        format!("{url}\n{}\n", paths::token_file(data).display()),
    );
}

/// The router asks the platform where a host's requests go.
struct PlatformRoutes(Arc<Platform>);

impl crew_router::Routes for PlatformRoutes {
    fn route(&self, host: &str) -> Option<crew_router::AppRoute> {
        self.0.route(host)
    }
}

/// The network of isolated dynos the flags ask for, if any.
fn dyno_network(args: &ServerArgs) -> Option<DynoNetworkConfig> {
    let range = match args.dyno_network {
        DynoNetworkChoice::Off => return None,
        DynoNetworkChoice::Range(range) => range,
    };
    Some(DynoNetworkConfig {
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
    })
}
