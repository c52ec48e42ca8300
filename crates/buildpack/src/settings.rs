//! How a server's builds are set up: where the built-ins are, how the
//! programs run ([`BuildIsolation`], [`BuildSandbox`]), which directories may
//! be named as buildpacks ([`PathBuildpacks`]), and an app's chosen list.
//!
//! Apart because these are fixed before any build starts; the build steps
//! read them and never change them.

use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crew_runtime::{DynoSize, IsolatedRuntime};

use crate::builtin;
use crate::error::BuildError;
use crate::source::BuildpackSource;

/// Where the built-in buildpacks live on disk, and how builds run.
#[derive(Debug, Clone)]
pub struct Buildpacks {
    pub(crate) dir: PathBuf,
    pub(crate) isolation: BuildIsolation,
    pub(crate) paths: PathBuildpacks,
    /// The app's own list (`heroku buildpacks:set`), used when BUILDPACK_URL
    /// is not set.
    pub(crate) chosen: Vec<BuildpackSource>,
}

/// How a build's programs run (see the crate documentation).
#[derive(Clone)]
pub enum BuildIsolation {
    /// On this host, as crew's own user, with crew's environment. With a
    /// warning, every build's output starts with it (the server says why it
    /// cannot sandbox builds).
    Host { warning: Option<String> },
    /// Behind an isolated dyno's walls.
    Sandboxed(BuildSandbox),
}

impl fmt::Debug for BuildIsolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildIsolation::Host { warning } => {
                f.debug_struct("Host").field("warning", warning).finish()
            }
            BuildIsolation::Sandboxed(sandbox) => f
                .debug_struct("Sandboxed")
                .field("uid", &sandbox.uid)
                .field("gid", &sandbox.gid)
                .field("limits", &sandbox.limits)
                .finish_non_exhaustive(),
        }
    }
}

/// What a sandboxed build runs with.
#[derive(Clone)]
pub struct BuildSandbox {
    pub runtime: IsolatedRuntime,
    /// The user and group every program of the build runs as. BUILD_DIR,
    /// CACHE_DIR and ENV_DIR are given to them.
    pub uid: u32,
    pub gid: u32,
    /// Memory and processes of each program, all it starts included.
    pub limits: DynoSize,
    /// Variables passed on to every program as they are (the operator's proxy
    /// and CA settings), besides the fixed ones.
    pub env: Vec<(String, String)>,
}

/// Which directories of this machine BUILDPACK_URL and `.buildpacks` may name.
/// Both are request data, so a server allows none, or only those under a
/// directory its operator chose; local tools and tests allow any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathBuildpacks {
    Anywhere,
    Under(PathBuf),
    Nowhere,
}

impl Buildpacks {
    /// Writes the built-in buildpacks (compiled into the binary) into `dir`, one
    /// directory per name with executable `bin/` scripts, so a server needs no
    /// checkout of the repo. Safe to call at every start: it overwrites.
    ///
    /// Builds then run on the host, with any path buildpack; see
    /// [`Self::with_isolation`] and [`Self::with_path_buildpacks`].
    pub fn install_builtin(dir: &Path) -> Result<Buildpacks, BuildError> {
        builtin::install(dir)?;
        Ok(Buildpacks {
            dir: dir.to_path_buf(),
            isolation: BuildIsolation::Host { warning: None },
            paths: PathBuildpacks::Anywhere,
            chosen: Vec::new(),
        })
    }

    /// How this server's builds run.
    pub fn with_isolation(mut self, isolation: BuildIsolation) -> Buildpacks {
        self.isolation = isolation;
        self
    }

    /// Which directories on this machine may be named as buildpacks.
    pub fn with_path_buildpacks(mut self, paths: PathBuildpacks) -> Buildpacks {
        self.paths = paths;
        self
    }

    pub fn isolation(&self) -> &BuildIsolation {
        &self.isolation
    }

    /// The buildpacks an app chose (in order), which its builds use unless
    /// BUILDPACK_URL names one; empty leaves the choice to `.buildpacks` and
    /// detection.
    pub fn with_chosen(mut self, chosen: Vec<BuildpackSource>) -> Buildpacks {
        self.chosen = chosen;
        self
    }

    /// The directory the built-ins were installed into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path buildpack, if this server allows it: under the allowed
    /// directory, checked on the words first (no `..`), so that nothing
    /// outside it is even looked at, then once more with links resolved.
    pub(crate) fn allowed_path(&self, path: &Path) -> Result<PathBuf, BuildError> {
        let refused = |allowed: Option<&Path>| BuildError::PathRefused {
            path: path.display().to_string(),
            allowed: allowed.map(Path::to_path_buf),
        };
        match &self.paths {
            PathBuildpacks::Anywhere => Ok(path.to_path_buf()),
            PathBuildpacks::Nowhere => Err(refused(None)),
            PathBuildpacks::Under(dir) => {
                let plain = path
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
                if !plain || !path.starts_with(dir) || path == dir.as_path() {
                    return Err(refused(Some(dir)));
                }
                let real_dir = fs::canonicalize(dir).map_err(|_| refused(Some(dir)))?;
                let real = fs::canonicalize(path).map_err(|_| refused(Some(dir)))?;
                if real.starts_with(&real_dir) && real != real_dir {
                    Ok(real)
                } else {
                    Err(refused(Some(dir)))
                }
            }
        }
    }
}
