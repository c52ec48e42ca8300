//! Releases: config changes and rollbacks, and finishing every release
//! (a deploy's too): run its release command, make it current, switch the
//! dynos to it. Each holds the app's release lock, so releases of one app
//! happen one after another.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crew_store::{Release, ReleaseStatus};

use crate::{Platform, PlatformError};

impl Platform {
    /// Runs the release command if the slug has one, then makes the release
    /// current and switches the dynos to it.
    pub(crate) async fn finish_release(
        &self,
        app: &str,
        release: Release,
        out: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Release, PlatformError> {
        let running = self.running_app(app);
        let slug = match &release.slug_id {
            Some(id) => Some(self.store.slug(id)?),
            None => None,
        };
        if let Some(slug) = &slug {
            // Extracted before the release can become current, also without
            // a release command: a slug that cannot be unpacked fails here.
            let spec = running.release_spec(
                &self.release_context(),
                &release,
                slug,
                &self.store.formation(app)?,
            )?;
            if let Some(command) = &slug.release_command {
                // Kept with the release for `heroku releases:output`, without
                // the pusher's indent.
                let output = Mutex::new(String::new());
                let say = |line: String| {
                    let mut kept = output.lock().unwrap_or_else(|p| p.into_inner());
                    if kept.len() <= 2 * crew_store::MAX_RELEASE_OUTPUT {
                        kept.push_str(line.strip_prefix("       ").unwrap_or(&line));
                        kept.push('\n');
                    }
                    drop(kept);
                    if let Some(out) = out {
                        let _ = out.send(line);
                    }
                };
                if let Some(out) = out {
                    let _ = out.send(format!("       Running release command `{command}`..."));
                }
                running
                    .event(
                        "api",
                        format!("Running release v{} commands", release.version),
                    )
                    .await;
                // Where the app's dynos run: the placement's engine, or this
                // machine when the placement leaves it here.
                let ran = running
                    .release_command(&self.release_context(), spec, command, &say)
                    .await;
                let keep = |output: &Mutex<String>| {
                    let text = output.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Err(e) = self.store.set_release_output(app, release.version, &text) {
                        eprintln!(
                            "crew: keeping the release command's output of {app} v{}: {e}",
                            release.version
                        );
                    }
                };
                if !matches!(ran, Ok(Ok(()))) {
                    self.store
                        .set_release_status(app, release.version, ReleaseStatus::Failed)?;
                    running
                        .event(
                            "api",
                            format!("Release v{} command failed", release.version),
                        )
                        .await;
                    let why = match ran {
                        Err(e) => {
                            say(format!(" !     {e}"));
                            format!(": {e}")
                        }
                        Ok(Err(why)) => format!(": {why}"),
                        Ok(Ok(())) => String::new(),
                    };
                    say(format!(
                        " !     Release command failed{why}; the current release keeps running."
                    ));
                    keep(&output);
                    return Err(PlatformError::Build(format!(
                        "release command `{command}` failed{why}"
                    )));
                }
                keep(&output);
            }
        }
        self.store
            .set_release_status(app, release.version, ReleaseStatus::Succeeded)?;
        running
            .event("api", format!("Release v{} created", release.version))
            .await;
        if let Some(out) = out {
            let _ = out.send(format!("       Released v{}", release.version));
        }
        let release = self.store.release(app, release.version)?;
        if slug.is_some() {
            running.boot(&self.release_context()).await?;
        }
        Ok(release)
    }

    pub async fn set_config(
        &self,
        app: &str,
        set: &BTreeMap<String, String>,
        unset: &[String],
    ) -> Result<Release, PlatformError> {
        let locks = self.locks(app);
        let _releasing = locks.release.lock().await;
        let release = self.store.update_config(app, set, unset, None)?;
        self.running_app(app)
            .event("api", release.description.clone())
            .await;
        self.finish_release(app, release, None).await
    }

    pub async fn rollback(&self, app: &str, version: u32) -> Result<Release, PlatformError> {
        let locks = self.locks(app);
        let _releasing = locks.release.lock().await;
        let release = self.store.rollback(app, version)?;
        self.running_app(app)
            .event("api", release.description.clone())
            .await;
        self.finish_release(app, release, None).await
    }
}
