//! A release's image on every node: the slug over the base root filesystem,
//! written as a docker-archive and either pushed to the registry from the
//! manager's daemon, or loaded into every daemon that lacks it. Both an
//! apply and a release command need it first, so it is neither's.

use std::io::BufWriter;
use std::path::PathBuf;

use crew_cluster::image::{ImageSpec, write_docker_archive};
use crew_engine::ReleaseSpec;

use super::app::{SwarmApp, lock};
use crate::SwarmError;
use crate::spec;

impl SwarmApp {
    /// The image the release's dynos run (see [`spec::image_reference`]).
    pub(super) fn image(&self, release: &ReleaseSpec) -> String {
        spec::image_reference(release, self.config.registry.as_deref())
    }

    /// Makes the release's image available to every node: pushed to the
    /// registry, or without one loaded into every daemon that lacks it.
    pub(super) async fn ensure_image(&self, release: &ReleaseSpec) -> Result<(), SwarmError> {
        match self.config.registry.as_deref() {
            Some(registry) => self.push_image(release, registry).await,
            None => self.load_image(release).await,
        }
    }

    /// Loads the image into this daemon if it has neither name of it, tags
    /// it for the registry and pushes it (the daemon pushes only the layers
    /// the registry lacks).
    async fn push_image(&self, release: &ReleaseSpec, registry: &str) -> Result<(), SwarmError> {
        let reference = self.image(release);
        if lock(&self.pushed).contains(&reference) {
            return Ok(());
        }
        let repo = spec::registry_repo(registry, &release.app);
        let tag = spec::version_tag(release);
        if !self.docker.image_exists(&reference).await? {
            let loaded = spec::image_tag(release);
            if !self.docker.image_exists(&loaded).await? {
                let archive = Self::write_image(release, self.config.base_rootfs.clone()).await?;
                self.docker.load_image(archive.path()).await?;
            }
            self.docker.image_tag(&loaded, &repo, &tag).await?;
        }
        self.docker.image_push(&repo, &tag).await?;
        lock(&self.pushed).insert(reference);
        Ok(())
    }

    /// Writes the image and loads it into every daemon that lacks it.
    async fn load_image(&self, release: &ReleaseSpec) -> Result<(), SwarmError> {
        let tag = spec::image_tag(release);
        let mut daemons = vec![self.docker.clone()];
        daemons.extend(self.config.image_nodes.iter().cloned());
        let mut missing = Vec::new();
        for docker in daemons {
            if !docker.image_exists(&tag).await? {
                missing.push(docker);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let archive = Self::write_image(release, self.config.base_rootfs.clone()).await?;
        for docker in missing {
            docker.load_image(archive.path()).await?;
        }
        Ok(())
    }

    /// The release's image as a docker-archive in a temporary file: the
    /// slug over `base`.
    async fn write_image(
        release: &ReleaseSpec,
        base: Option<PathBuf>,
    ) -> Result<tempfile::NamedTempFile, SwarmError> {
        let slug = release.slug_archive.clone();
        let image = ImageSpec::new(&release.app, release.version);
        tokio::task::spawn_blocking(move || -> Result<_, SwarmError> {
            let file =
                tempfile::NamedTempFile::new().map_err(SwarmError::io("a temporary file"))?;
            let out = BufWriter::new(file.as_file());
            write_docker_archive(&slug, base.as_deref(), &image, out)?;
            Ok(file)
        })
        .await
        .map_err(|e| SwarmError::Invalid(format!("writing the image: {e}")))?
    }
}
