//! Deploys: uploaded sources, and building one into a slug and a release
//! (`Platform::deploy`). A build holds the app's build lock from start to
//! end; the release it makes is finished by `release.rs`, as a config change
//! or a rollback is.

use std::path::PathBuf;
use std::sync::Arc;

use crew_buildpack::{BuildIsolation, BuildRequest, BuildSandbox, Buildpacks};
use crew_store::{Release, ReleaseStatus};

use crate::{BUILD_TIMEOUT, Platform, PlatformError, SourceId, private, source};

impl Platform {
    /// A server killed during a build left it `pending` and its scratch dir on
    /// disk; no build runs yet, so every pending one is failed and every
    /// scratch dir and source crew left there is removed. Only names crew
    /// makes are removed, and only in its own directories.
    pub(crate) fn clean_up_cut_off_builds(&self) -> Result<(), PlatformError> {
        for build in self.store.fail_unfinished_builds()? {
            eprintln!(
                "crew: build {} of {} was cut off by a stopped server: marked failed",
                build.id, build.app
            );
        }
        source::remove_leftovers(&self.scratch_dir(), &self.sources_dir());
        Ok(())
    }

    /// Where builds unpack their source: `DATA/tmp`.
    fn scratch_dir(&self) -> PathBuf {
        self.data.join("tmp")
    }

    /// Where uploaded sources wait for their build: `DATA/sources`.
    fn sources_dir(&self) -> PathBuf {
        self.data.join("sources")
    }

    /// Makes an empty source, private to crew, for a tarball to be uploaded to.
    pub fn create_source(&self) -> Result<SourceId, PlatformError> {
        source::create(&self.sources_dir())
            .map_err(PlatformError::io("making a place for the source"))
    }

    /// The file to write source `id`'s tarball to, emptied: it must have been
    /// made by [`Platform::create_source`] and not built yet. The caller stops
    /// at [`MAX_SOURCE_BYTES`](crate::MAX_SOURCE_BYTES).
    pub fn source_upload(&self, id: &SourceId) -> Result<std::fs::File, PlatformError> {
        source::open_for_upload(&self.sources_dir(), id)
    }

    /// The buildpacks as `app`'s builds use them: sandboxed builds run as
    /// the app's own uid, as its dynos do.
    fn buildpacks_for(&self, app: &str) -> Result<Buildpacks, PlatformError> {
        let (BuildIsolation::Sandboxed(sandbox), Some((uid, gid))) =
            (self.buildpacks.isolation(), self.app_user(app)?)
        else {
            return Ok(self.buildpacks.clone());
        };
        let sandbox = BuildSandbox {
            uid,
            gid,
            ..sandbox.clone()
        };
        Ok(self
            .buildpacks
            .clone()
            .with_isolation(BuildIsolation::Sandboxed(sandbox)))
    }

    /// Builds the uploaded `source` into a slug and releases it. `out` gets
    /// every line the pusher should see. A failed build leaves the running
    /// release alone. The source is used up: its tarball and the directory it
    /// is unpacked into (`DATA/tmp/build-ID`) are removed either way.
    pub async fn deploy(
        self: &Arc<Self>,
        app: &str,
        source: SourceId,
        commit: String,
        out: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<Release, PlatformError> {
        self.store.app(app)?;
        let locks = self.locks(app);
        let _building = locks.build.lock().await;
        let running = self.running_app(app);
        let short = commit.chars().take(7).collect::<String>();
        running
            .event("api", format!("Build started for {short}"))
            .await;
        let tarball = source::path(&self.sources_dir(), &source)
            .map_err(|e| PlatformError::Invalid(e.to_string()))?;
        let build = self.store.create_build(app, &commit)?;
        let scratch = source::scratch_dir(&self.scratch_dir(), &build.id)
            .map_err(|e| PlatformError::Invalid(e.to_string()))?;
        let config = self.store.config(app)?;
        let dir = self.app_dir(app);
        private::create_dirs(&dir).map_err(PlatformError::io("creating the app's directory"))?;
        let slugs = dir.join("slugs");
        std::fs::create_dir_all(&slugs)
            .map_err(PlatformError::io("creating the slug directory"))?;
        let cache = dir.join("cache");
        std::fs::create_dir_all(&cache).map_err(PlatformError::io("creating the build cache"))?;
        let slug_path = slugs.join(format!("{}.tar.gz", build.id));

        let buildpacks = self
            .buildpacks_for(app)?
            .with_chosen(self.chosen_buildpacks(app)?);
        let app_name = app.to_string();
        let slug_for_build = slug_path.clone();
        let build_out = out.clone();
        let commit_for_build = commit.clone();
        let built = tokio::task::spawn_blocking(move || {
            let unpacked = source::unpack(&tarball, &scratch);
            let _ = std::fs::remove_file(&tarball);
            if let Err(e) = unpacked {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e);
            }
            let request = BuildRequest {
                app: &app_name,
                source: &scratch,
                cache: &cache,
                config: &config,
                slug_path: &slug_for_build,
                timeout: BUILD_TIMEOUT,
                source_version: Some(&commit_for_build),
            };
            let mut send = |line: &str| {
                let _ = build_out.send(line.to_string());
            };
            let result = buildpacks.build(&request, &mut send);
            // Made above by crew, under DATA/tmp, named for the build's id.
            let _ = std::fs::remove_dir_all(&scratch);
            Ok(result)
        })
        .await
        .map_err(|e| PlatformError::Build(format!("the build stopped: {e}")))?;
        let built = match built {
            Ok(built) => built,
            Err(e) => {
                let _ = out.send(format!(" !     The source could not be unpacked: {e}"));
                self.store
                    .finish_build(&build.id, crew_store::BuildStatus::Failed, None)?;
                running.event("api", "Build failed").await;
                return Err(PlatformError::Build(format!(
                    "the source could not be unpacked: {e}"
                )));
            }
        };
        let output = match built {
            Ok(output) => output,
            Err(e) => {
                for line in e.pusher_lines() {
                    let _ = out.send(line);
                }
                self.store
                    .finish_build(&build.id, crew_store::BuildStatus::Failed, None)?;
                running.event("api", "Build failed").await;
                return Err(PlatformError::Build(e.to_string()));
            }
        };
        let slug = self.store.create_slug(
            app,
            crew_store::NewSlug {
                path: slug_path.display().to_string(),
                process_types: output.process_types.clone(),
                commit: Some(commit.clone()),
                size: output.slug_size,
                buildpack: Some(output.buildpack.clone()),
                release_command: output.release_command.clone(),
            },
        )?;
        self.store.finish_build(
            &build.id,
            crew_store::BuildStatus::Succeeded,
            Some(&slug.id),
        )?;
        let _ = out.send("-----> Launching...".to_string());
        let _releasing = locks.release.lock().await;
        let mut config = self.store.config(app)?;
        for (key, value) in &output.config_vars {
            config.entry(key.clone()).or_insert_with(|| value.clone());
        }
        let release = self.store.create_release(
            app,
            crew_store::NewRelease {
                slug_id: Some(slug.id.clone()),
                config,
                description: format!("Deploy {short}"),
                status: ReleaseStatus::Pending,
            },
        )?;
        running.event("api", format!("Deploy {short}")).await;
        self.finish_release(app, release, Some(&out)).await
    }
}
