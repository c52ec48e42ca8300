//! The control socket of a running `crew start`: where it lives, and the API
//! answered on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use crew_api::server::{ApiError, ApiService, LogStream};
use crew_api::types::{AppRef, Dyno, DynoCreate, FormationEntry, FormationUpdate, LogQuery};
use crew_engine::{DynoInfo, EngineError, EngineHandle, ExternalOneOff};
use crew_logs::LogRing;

use crate::api_view::{api_dyno, log_stream};

/// The socket's file name in the app's directory.
pub const SOCKET_NAME: &str = ".crew.sock";

/// Removes the socket file when the run ends.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the app's control socket, clearing a stale one left by a run that died.
pub fn bind(root: &Path) -> Result<(tokio::net::UnixListener, SocketFile)> {
    let path = root.join(SOCKET_NAME);
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => bail!(
                "crew is already running in {} (its control socket {} answers)",
                root.display(),
                path.display()
            ),
            Err(_) => std::fs::remove_file(&path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?,
        }
    }
    let listener = crew_runtime::os::bind_private_socket(&path)
        .with_context(|| format!("creating the control socket {}", path.display()))?;
    listener
        .set_nonblocking(true)
        .context("setting up the control socket")?;
    let listener =
        tokio::net::UnixListener::from_std(listener).context("setting up the control socket")?;
    Ok((listener, SocketFile(path)))
}

/// The control socket of a running `crew start` in `dir` or one of its parents.
pub fn find(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(SOCKET_NAME))
        .find(|p| p.exists())
}

/// The local app's name in API paths: its directory's name.
pub fn app_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| String::from("app"))
}

/// The API of one local formation.
pub struct LocalApi {
    pub app: String,
    pub engine: EngineHandle,
    pub ring: Arc<LogRing>,
    /// Process types and commands, in Procfile order.
    pub types: Vec<(String, String)>,
}

const LOCAL_SIZE: &str = "local";

impl LocalApi {
    fn check(&self, app: &str) -> Result<(), ApiError> {
        if app == self.app {
            Ok(())
        } else {
            Err(ApiError::not_found(format!(
                "Couldn't find that app: this crew start runs `{}`",
                self.app
            )))
        }
    }

    fn dyno(&self, info: DynoInfo) -> Dyno {
        let app = AppRef {
            id: self.app.clone(),
            name: self.app.clone(),
        };
        api_dyno(info, app, LOCAL_SIZE, None)
    }

    async fn formation_entries(&self) -> Result<Vec<FormationEntry>, ApiError> {
        let formation = self
            .engine
            .formation()
            .await
            .ok_or_else(|| ApiError::unavailable("the formation is shutting down"))?;
        Ok(self
            .types
            .iter()
            .map(|(name, command)| FormationEntry {
                process_type: name.clone(),
                quantity: formation.get(name).unwrap_or(0),
                command: command.clone(),
                size: LOCAL_SIZE.to_string(),
                ..FormationEntry::default()
            })
            .collect())
    }
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::UnknownDyno(_) => ApiError::not_found(e.to_string()),
        EngineError::ShuttingDown | EngineError::Engine(_) => ApiError::unavailable(e.to_string()),
        EngineError::Formation(_) | EngineError::Port { .. } | EngineError::NoRelease => {
            ApiError::invalid(e.to_string())
        }
    }
}

impl ApiService for LocalApi {
    async fn dynos(&self, app: &str) -> Result<Vec<Dyno>, ApiError> {
        self.check(app)?;
        Ok(self
            .engine
            .ps()
            .await
            .into_iter()
            .map(|d| self.dyno(d))
            .collect())
    }

    async fn create_dyno(&self, app: &str, request: DynoCreate) -> Result<Dyno, ApiError> {
        self.check(app)?;
        let Some(pid) = request.pid else {
            return Err(ApiError::invalid(
                "a local formation lists one-offs that `crew run` started; give their `pid`",
            ));
        };
        let info = self
            .engine
            .register_one_off(ExternalOneOff {
                command: request.command,
                pid,
            })
            .await
            .map_err(engine_error)?;
        Ok(self.dyno(info))
    }

    async fn restart(&self, app: &str, target: Option<String>) -> Result<(), ApiError> {
        self.check(app)?;
        self.engine
            .restart(target)
            .await
            .map(|_| ())
            .map_err(engine_error)
    }

    async fn stop(&self, app: &str, target: String) -> Result<(), ApiError> {
        self.check(app)?;
        self.engine
            .stop(target)
            .await
            .map(|_| ())
            .map_err(engine_error)
    }

    async fn formation(&self, app: &str) -> Result<Vec<FormationEntry>, ApiError> {
        self.check(app)?;
        self.formation_entries().await
    }

    async fn scale(
        &self,
        app: &str,
        update: FormationUpdate,
    ) -> Result<Vec<FormationEntry>, ApiError> {
        self.check(app)?;
        self.engine
            .scale(update.updates)
            .await
            .map_err(engine_error)?;
        self.formation_entries().await
    }

    async fn logs(&self, app: &str, query: LogQuery) -> Result<LogStream, ApiError> {
        self.check(app)?;
        log_stream(&self.ring, query)
    }
}
