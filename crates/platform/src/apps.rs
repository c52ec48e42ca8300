//! Which apps exist: creating one (its store row, its uid, its git
//! repository) and destroying one (its dynos, rows and files), and what
//! `apps:info` says about how apps run here. An app's settings are in
//! `settings.rs`; its running side is `app.rs`.

use crew_buildpack::BuildIsolation;

use crate::{Platform, PlatformError, app};

impl Platform {
    pub async fn create_app(&self, name: &str) -> Result<crew_store::App, PlatformError> {
        let app = self.store.create_app(name)?;
        // The app's uid from the start, so a full range refuses the app rather
        // than its first dyno.
        if let Err(e) = self.app_user(name) {
            let _ = self.store.destroy_app(name);
            return Err(e);
        }
        let repo = self.repos().join(format!("{name}.git"));
        app::init_repo(&repo, &self.exe, name).map_err(PlatformError::io(format!(
            "creating the git repository {}",
            repo.display()
        )))?;
        self.running_app(name)
            .event("api", format!("Release v1 created (app {name} created)"))
            .await;
        Ok(app)
    }

    pub async fn destroy_app(&self, name: &str) -> Result<(), PlatformError> {
        self.store.app(name)?;
        let running = self
            .apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(running) = running {
            running.destroy().await;
        }
        self.store.destroy_app(name)?;
        // The name passed the store's app-name rule (`^[a-z][a-z0-9-]{1,29}$`)
        // when the app was found, so both paths are crew's own, under DATA.
        let _ = std::fs::remove_dir_all(self.app_dir(name));
        let _ = std::fs::remove_dir_all(self.repos().join(format!("{name}.git")));
        Ok(())
    }

    /// How dynos are isolated here: `on (…)`, or `off: why`.
    pub fn isolation(&self) -> &str {
        &self.isolation
    }

    /// How builds run here, in words: `sandboxed (…)`, or `off: why`.
    pub fn build_isolation(&self) -> String {
        match self.buildpacks.isolation() {
            BuildIsolation::Sandboxed(sandbox) => format!(
                "sandboxed (namespaces and cgroup as for dynos, each app's own uid, {} of \
                 memory and {} processes per build step{})",
                crew_buildpack::human_size(sandbox.limits.memory_bytes),
                sandbox.limits.pids,
                if sandbox.env.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = sandbox.env.iter().map(|(k, _)| k.as_str()).collect();
                    format!(", passing on {}", names.join(" "))
                }
            ),
            BuildIsolation::Host { .. } => format!(
                "off: builds run on this machine as crew's own user and see all of it, \
                 because dyno isolation is {}",
                self.isolation
            ),
        }
    }

    /// The uid and gid `app`'s isolated dynos (formation, one-offs, the release
    /// command) and builds run as: its own, from `--app-uids`, held for its
    /// whole life. `None` when dynos run plain, as crew itself.
    pub fn app_user(&self, app: &str) -> Result<Option<(u32, u32)>, PlatformError> {
        self.release_context().app_user(app)
    }
}
