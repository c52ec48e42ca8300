//! [`SwarmPlacement`]: one app's formation as Swarm services.
//!
//! The mapping is the crate's (see its documentation); the code is divided
//! by what each part owns, every part an `impl SwarmApp` over the shared
//! state in `app.rs`:
//!
//! - `view.rs`: tasks as dynos and lifecycle lines, pure;
//! - `refresh.rs`: the poller that reads the swarm and acts on `view.rs`;
//! - `backends.rs`: the router's way to each running web task;
//! - `logs.rs`: the services' output into the app's log;
//! - `images.rs`: a release's image on every node;
//! - `formation.rs`: apply, scale, restart and stop;
//! - `one_off.rs` (with `attach.rs`): `crew run`;
//! - `release_command.rs`: Heroku's release phase;
//! - `destroy.rs`: the app's teardown.
//!
//! This file holds only the public face: [`SwarmPlacement`] and its
//! [`Placement`] implementation, which hand each call to `SwarmApp`; and
//! the re-exports of the public types the parts define ([`SwarmConfig`] in
//! `config.rs`).

mod app;
mod attach;
mod backends;
mod config;
mod destroy;
mod formation;
mod images;
mod logs;
mod one_off;
mod refresh;
mod release_command;
mod view;

use std::sync::Arc;

use crew_cluster::validate_app_name;
use crew_engine::{
    Attachment, BoxFuture, DynoInfo, EngineError, Placement, ReleaseCommand, ReleaseSpec,
    RunRequest, WebBackend,
};
use crew_logs::LogEvent;
use crew_procfile::{Formation, FormationChange};
use crew_runtime::{DynoInput, ExitStatus};
use tokio::sync::{mpsc, watch};

use self::app::{SwarmApp, engine_error, lock};
use self::refresh::poll;
use crate::docker::Docker;
use crate::{SwarmError, spec};

pub use self::config::SwarmConfig;
pub use self::one_off::{HangupGuard, SwarmAttachment};
pub use self::view::SwarmDyno;

/// One app's dynos as Swarm services (research §4.3). Make it with
/// [`SwarmPlacement::new`]; see the crate's documentation for the mapping.
pub struct SwarmPlacement {
    shared: Arc<SwarmApp>,
}

impl SwarmPlacement {
    /// The placement of `app` on the swarm that `docker` manages. Must be
    /// called inside a tokio runtime: it starts a task that reads the app's
    /// services every `config.poll_interval`. Services the app already has
    /// (crew restarted) are adopted as they are.
    pub fn new(
        docker: Arc<Docker>,
        app: &str,
        config: SwarmConfig,
        logs: mpsc::Sender<LogEvent>,
    ) -> Result<SwarmPlacement, SwarmError> {
        validate_app_name(app)?;
        if let Some(registry) = &config.registry {
            spec::check_registry(registry)?;
        }
        let shared = Arc::new(SwarmApp::new(docker, app, config, logs));
        let poller = tokio::spawn(poll(shared.clone()));
        lock(&shared.background).push(poller);
        Ok(SwarmPlacement { shared })
    }

    /// The dynos with the nodes they run on, read from the swarm now.
    pub async fn dynos(&self) -> Vec<SwarmDyno> {
        if let Err(e) = self.shared.refresh().await {
            tracing::debug!("reading {}'s tasks: {e}", self.shared.app);
        }
        lock(&self.shared.snapshot).dynos.clone()
    }

    /// An attached one-off, `run.N`, as a container on this node: the same
    /// image, environment and network as the app's dynos, with a terminal
    /// when the request has one (resized through the API), removed when it
    /// ends.
    pub async fn run_attached(
        &self,
        request: RunRequest,
    ) -> Result<(DynoInfo, SwarmAttachment), EngineError> {
        self.shared
            .run_attached(request)
            .await
            .map_err(engine_error)
    }
}

impl Drop for SwarmPlacement {
    fn drop(&mut self) {
        self.shared.stop_background();
    }
}

impl Placement for SwarmPlacement {
    fn apply(
        &self,
        release: ReleaseSpec,
        formation: Formation,
    ) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            self.shared
                .apply(release, formation)
                .await
                .map_err(engine_error)?;
            let _ = self.shared.refresh().await;
            Ok(())
        })
    }

    fn scale(&self, changes: Vec<FormationChange>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { self.shared.scale(changes).await.map_err(engine_error) })
    }

    fn ps(&self) -> BoxFuture<'_, Vec<DynoInfo>> {
        Box::pin(async move { self.dynos().await.into_iter().map(|d| d.info).collect() })
    }

    fn run(
        &self,
        request: RunRequest,
    ) -> BoxFuture<'_, Result<(DynoInfo, Option<Attachment>), EngineError>> {
        Box::pin(async move {
            if request.input == DynoInput::Idle {
                let info = self.shared.run_detached(request).await?;
                return Ok((info, None));
            }
            let (info, attached) = self.run_attached(request).await?;
            let SwarmAttachment { io, exit, hangup } = attached;
            let attachment = Attachment {
                io,
                exit,
                hangup: crew_engine::Hangup::new(move || drop(hangup)),
            };
            Ok((info, Some(attachment)))
        })
    }

    fn restart(&self, target: Option<String>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { self.shared.restart(target).await })
    }

    fn stop(&self, target: String) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { self.shared.stop(target).await })
    }

    fn web_backends(&self) -> watch::Receiver<Arc<Vec<WebBackend>>> {
        self.shared.backends.subscribe()
    }

    fn destroy(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.shared.destroy().await })
    }

    fn release_command(
        &self,
        release: ReleaseSpec,
        command: ReleaseCommand,
    ) -> BoxFuture<'_, Result<Option<ExitStatus>, EngineError>> {
        Box::pin(async move {
            self.shared
                .release_command(release, command)
                .await
                .map(Some)
                .map_err(engine_error)
        })
    }

    /// The server is going down, but the swarm keeps the formation running:
    /// that is what a cluster is for. Only crew's own readers stop; a new
    /// placement for the app adopts the services.
    fn shutdown(&self) {
        self.shared.stop_background();
    }
}
