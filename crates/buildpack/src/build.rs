//! One build from start to end ([`Buildpacks::build`]): what it is given
//! ([`BuildRequest`]), the order of its steps, and what it gives back
//! ([`BuildOutput`]).
//!
//! Apart because this is the only module that knows every step; the steps
//! each live in their own module and none imports this one.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::compile::{compile, release};
use crate::context::Context;
use crate::detect::{Chosen, detect};
use crate::error::{BuildError, ERROR_PREFIX};
use crate::limits::{MAX_SLUG_SIZE, deadline_after, human_size};
use crate::process_types::discover_process_types;
use crate::release::Release;
use crate::select::Selection;
use crate::settings::{BuildIsolation, Buildpacks};
use crate::slug;
use crate::tree::write_env_dir;

/// Everything one build needs.
#[derive(Debug, Clone, Copy)]
pub struct BuildRequest<'a> {
    /// The app's name; buildpacks see it as `CREW_APP`.
    pub app: &'a str,
    /// A checked-out tree. It is only read: the build happens in a copy.
    pub source: &'a Path,
    /// The app's build cache, kept between builds (created if missing).
    pub cache: &'a Path,
    /// The app's config vars: written to ENV_DIR (one file per var) for
    /// `bin/compile`; `BUILDPACK_URL` also selects the buildpack.
    pub config: &'a BTreeMap<String, String>,
    /// Where the slug tar.gz goes. Written under a temporary name in the same
    /// directory and renamed, so it is whole or absent.
    pub slug_path: &'a Path,
    /// The limit for the whole build, from copying the source to the last byte
    /// of the slug.
    pub timeout: Duration,
    /// The commit being built; buildpacks see it as `SOURCE_VERSION`.
    pub source_version: Option<&'a str>,
}

/// What a successful build produced, besides the slug file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutput {
    /// Process type → command: the buildpacks' defaults, overridden and extended
    /// by the Procfile, without `release`.
    pub process_types: BTreeMap<String, String>,
    /// `config_vars` from `bin/release`. Defaults only: the caller must let the
    /// app's own config vars win.
    pub config_vars: BTreeMap<String, String>,
    /// The detected buildpack names (`Python`), comma-separated when several ran.
    pub buildpack: String,
    /// Size of the compressed slug in bytes.
    pub slug_size: u64,
    /// The `release:` process type, to run before the release goes live.
    pub release_command: Option<String>,
}

impl Buildpacks {
    /// Runs the build, calling `out` with every line to show the pusher (already
    /// formatted). On failure, nothing is written at `slug_path`; show the error's
    /// [`BuildError::pusher_lines`] after the lines already given to `out`.
    pub fn build(
        &self,
        req: &BuildRequest,
        out: &mut dyn FnMut(&str),
    ) -> Result<BuildOutput, BuildError> {
        let deadline = deadline_after(req.timeout);
        if let BuildIsolation::Host {
            warning: Some(warning),
        } = &self.isolation
        {
            out(&format!("{ERROR_PREFIX}Warning: {warning}"));
        }
        let selection = self.selection(req.source, req.config)?;
        // The sandbox's user owns what the build may change.
        let owner = match &self.isolation {
            BuildIsolation::Sandboxed(sandbox) => Some((sandbox.uid, sandbox.gid)),
            BuildIsolation::Host { .. } => None,
        };

        fs::create_dir_all(req.cache).map_err(BuildError::io_at("creating", req.cache))?;
        if let Some((uid, gid)) = owner {
            slug::give_tree(req.cache, uid, gid)?;
        }
        // Removed with everything in it when this function returns.
        let scratch = tempfile::Builder::new()
            .prefix("crew-build-")
            .tempdir()
            .map_err(BuildError::io("creating a build directory"))?;
        let build_dir = scratch.path().join("app");
        let env_dir = scratch.path().join("env");
        let tmp_dir = scratch.path().join("tmp");
        for dir in [&build_dir, &tmp_dir] {
            fs::create_dir(dir).map_err(BuildError::io_at("creating", dir))?;
            slug::give(dir, owner)?;
        }
        let ctx = Context {
            app: req.app,
            build_dir: &build_dir,
            cache: req.cache,
            env_dir: &env_dir,
            tmp_dir: &tmp_dir,
            source_version: req.source_version,
            isolation: &self.isolation,
            deadline,
            timeout: req.timeout,
        };
        slug::copy_tree(req.source, &build_dir, owner, deadline, &|| ctx.timed_out())?;
        write_env_dir(&env_dir, req.config, owner)?;

        let chosen = self.choose(&ctx, &selection, scratch.path(), out)?;

        let mut defaults = Release::default();
        for buildpack in &chosen {
            out(&format!("-----> {} app detected", buildpack.name));
            compile(&ctx, buildpack, out)?;
            let release = release(&ctx, buildpack, out)?;
            defaults
                .default_process_types
                .extend(release.default_process_types);
            defaults.config_vars.extend(release.config_vars);
        }

        let mut process_types =
            discover_process_types(&build_dir, defaults.default_process_types, out)?;
        let release_command = process_types.remove("release");

        out("-----> Compressing...");
        let slug_size =
            slug::write_slug(&build_dir, req.slug_path, MAX_SLUG_SIZE, deadline, &|| {
                ctx.timed_out()
            })?;
        out(&format!("       Done: {}", human_size(slug_size)));

        Ok(BuildOutput {
            process_types,
            config_vars: defaults.config_vars,
            buildpack: chosen
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            slug_size,
            release_command,
        })
    }

    /// Fetches the selected buildpacks and runs their `bin/detect`: all of them,
    /// each required to match, for an explicit list; until the first match for
    /// the built-ins. Nothing is compiled before every choice is made.
    fn choose(
        &self,
        ctx: &Context,
        selection: &Selection,
        scratch: &Path,
        out: &mut dyn FnMut(&str),
    ) -> Result<Vec<Chosen>, BuildError> {
        if !selection.explicit {
            out("-----> Determining which buildpack to use for this app");
            for source in &selection.sources {
                let dir = self.fetch(ctx, source, scratch, 0, out)?;
                if let Some(name) = detect(ctx, source, &dir)? {
                    return Ok(vec![Chosen { dir, name }]);
                }
            }
            return Err(BuildError::NoBuildpackDetected);
        }
        match selection.sources.as_slice() {
            [only] => out(&format!("-----> Using buildpack: {only}")),
            many => {
                out("-----> Using buildpacks:");
                for (i, source) in many.iter().enumerate() {
                    out(&format!("       {}. {source}", i + 1));
                }
            }
        }
        let mut chosen = Vec::new();
        for (i, source) in selection.sources.iter().enumerate() {
            let dir = self.fetch(ctx, source, scratch, i, out)?;
            match detect(ctx, source, &dir)? {
                Some(name) => chosen.push(Chosen { dir, name }),
                None => {
                    return Err(BuildError::Incompatible {
                        buildpack: source.to_string(),
                    });
                }
            }
        }
        Ok(chosen)
    }
}
