//! An app's settings outside its releases: its name, maintenance mode and
//! chosen buildpacks.

use std::path::Path;
use std::sync::Arc;

use crew_buildpack::BuildpackSource;

use crate::app::{self, RunningApp};
use crate::{Platform, PlatformError};

/// What `buildpacks:set` accepts, in words, for errors.
const BUILDPACK_CHOICES: &str = "crew has heroku/ruby, heroku/python, heroku/nodejs, heroku/go \
     and heroku/procfile built in; give any other buildpack as a git URL (https://…), or as an \
     absolute path under the server's --buildpack-dir";

impl Platform {
    /// Renames `app` to `new_name`, keeping everything it has (releases,
    /// config, formation, domains, logs, its uid and git repository). Its
    /// dynos restart under the new name, since their names, and a cluster's
    /// services, follow the app's; the old name is free afterwards.
    pub async fn rename_app(
        &self,
        app: &str,
        new_name: &str,
    ) -> Result<crew_store::App, PlatformError> {
        let current = self.store.app(app)?;
        let old = current.name.clone();
        if old == new_name {
            return Ok(current);
        }
        // No build or release of the app may be under way while its files move.
        let locks = self.locks(&old);
        let _building = locks.build.lock().await;
        let _releasing = locks.release.lock().await;
        let (old_dir, new_dir) = (self.app_dir(&old), self.app_dir(new_name));
        let prefix = |dir: &Path| format!("{}/", dir.display());
        // The store checks the new name (valid, free) before anything stops.
        let renamed =
            self.store
                .rename_app(&old, new_name, &prefix(&old_dir), &prefix(&new_dir))?;
        let previous = self
            .apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&old);
        if let Some(previous) = &previous {
            previous
                .event("api", format!("Renaming {old} to {new_name}: restarting"))
                .await;
            previous.destroy().await;
        }
        let (running_name, moved) = match self.move_app_files(&old, new_name) {
            Ok(()) => (new_name, Ok(())),
            Err(e) => {
                // Back to the old name, files and all, and running again.
                let _ = self
                    .store
                    .rename_app(new_name, &old, &prefix(&new_dir), &prefix(&old_dir));
                (old.as_str(), Err(e))
            }
        };
        let running = Arc::new(match &previous {
            Some(previous) => RunningApp::renamed(previous, running_name, &self.placements),
            None => RunningApp::new(running_name, &self.placements),
        });
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(running_name.to_string(), running.clone());
        if moved.is_ok() {
            {
                let mut domains = self.domains.write().unwrap_or_else(|p| p.into_inner());
                for owner in domains.values_mut() {
                    if *owner == old {
                        *owner = new_name.to_string();
                    }
                }
            }
            self.locks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&old);
            running
                .event("api", format!("Renamed from {old} to {new_name}"))
                .await;
        }
        // The rename stands even if the dynos cannot start again (a slug
        // that no longer unpacks): the log says why, as after a deploy.
        if let Err(e) = running.boot(&self.release_context()).await {
            running
                .event("api", format!("Starting the dynos again failed: {e}"))
                .await;
        }
        moved.map(|()| renamed)
    }

    /// Moves the app's directory and git repository to `new_name`'s places,
    /// and points the repository's hook at the new name; on an error, what
    /// moved goes back.
    fn move_app_files(&self, old: &str, new_name: &str) -> Result<(), PlatformError> {
        let (old_dir, new_dir) = (self.app_dir(old), self.app_dir(new_name));
        let repos = self.repos();
        let (old_repo, new_repo) = (
            repos.join(format!("{old}.git")),
            repos.join(format!("{new_name}.git")),
        );
        let taken = |path: &Path| {
            PlatformError::Invalid(format!(
                "cannot rename {old} to {new_name}: {} is in the way (left by an earlier app?)",
                path.display()
            ))
        };
        if new_dir.exists() {
            return Err(taken(&new_dir));
        }
        if new_repo.exists() {
            return Err(taken(&new_repo));
        }
        if old_dir.exists() {
            std::fs::rename(&old_dir, &new_dir).map_err(PlatformError::io(format!(
                "moving {} to {}",
                old_dir.display(),
                new_dir.display()
            )))?;
        }
        let repo = std::fs::rename(&old_repo, &new_repo)
            .and_then(|()| app::write_hook(&new_repo, &self.exe, new_name));
        if let Err(e) = repo {
            if new_repo.exists() {
                let _ = std::fs::rename(&new_repo, &old_repo);
                let _ = app::write_hook(&old_repo, &self.exe, old);
            }
            if new_dir.exists() {
                let _ = std::fs::rename(&new_dir, &old_dir);
            }
            return Err(PlatformError::Io {
                what: format!("moving the git repository of {old} to {new_name}"),
                source: e,
            });
        }
        Ok(())
    }

    /// Turns maintenance mode on or off: while on, the router answers every
    /// request to the app with the maintenance page (H80); dynos keep running.
    pub async fn set_maintenance(&self, app: &str, on: bool) -> Result<(), PlatformError> {
        let name = self.store.app(app)?.name;
        self.store.set_maintenance(&name, on)?;
        let running = self.running_app(&name);
        running.set_maintenance(on);
        running
            .event(
                "api",
                if on {
                    "Maintenance mode enabled"
                } else {
                    "Maintenance mode disabled"
                },
            )
            .await;
        Ok(())
    }

    /// The app's buildpacks as it chose them (`heroku/python`, a URL).
    pub fn buildpacks(&self, app: &str) -> Result<Vec<String>, PlatformError> {
        Ok(self.store.app_settings(app)?.buildpacks)
    }

    /// Sets the buildpacks the app's next builds use, unless BUILDPACK_URL
    /// names one; an empty list goes back to detecting them.
    pub async fn set_buildpacks(
        &self,
        app: &str,
        buildpacks: &[String],
    ) -> Result<Vec<String>, PlatformError> {
        let name = self.store.app(app)?.name;
        let buildpacks: Vec<String> = buildpacks.iter().map(|b| b.trim().to_string()).collect();
        for buildpack in &buildpacks {
            BuildpackSource::parse_choice(buildpack).map_err(|_| {
                PlatformError::Invalid(format!(
                    "`{}` is not a buildpack crew can use: {BUILDPACK_CHOICES}",
                    buildpack.escape_debug()
                ))
            })?;
        }
        self.store.set_buildpacks(&name, &buildpacks)?;
        let said = if buildpacks.is_empty() {
            "Buildpacks cleared: the next build detects them".to_string()
        } else {
            format!("Buildpacks set to {}", buildpacks.join(", "))
        };
        self.running_app(&name).event("api", said).await;
        Ok(buildpacks)
    }

    /// The app's chosen buildpacks as its build takes them.
    pub(crate) fn chosen_buildpacks(
        &self,
        app: &str,
    ) -> Result<Vec<BuildpackSource>, PlatformError> {
        self.buildpacks(app)?
            .iter()
            .map(|b| {
                BuildpackSource::parse_choice(b).map_err(|e| PlatformError::Build(e.to_string()))
            })
            .collect()
    }
}
