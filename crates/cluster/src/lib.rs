//! What a release becomes on a cluster of many machines: an image, Kubernetes
//! objects, or a Docker Swarm stack file. Everything here but [`registry`] is
//! pure data in, bytes out; nothing talks to a cluster.
//!
//! Theory of operation. crew keeps the truth about an app (its releases, config
//! and formation) in its own store; a cluster only realises it. A [`Release`] is
//! that truth for one moment: the app, the release number, the image that holds
//! the slug, the config vars, and each process type with its command and
//! quantity. Three writers turn it into what a cluster takes:
//!
//! - [`image`] packs the slug into a docker-archive (`docker load`'s format): a
//!   layer that puts the slug at `/app`, on top of an optional base layer, the
//!   stack. The image has no `CMD`, since the Procfile commands belong to the
//!   release, not to the image: one image serves every process type, and a
//!   rollback is the old image with the old config.
//! - [`kubernetes`] builds typed `k8s-openapi` objects after research §4.2: a
//!   namespace per app, an immutable Secret per release, a Deployment per
//!   process type, a Service in front of `web`, and a Job for a one-off.
//! - [`swarm`] builds a compose v3 stack file after research §4.3: a service per
//!   process type whose task slot names the dyno (`web.3`), on the app's own
//!   overlay network.
//! - [`registry`] pushes an [`image`] to a registry over the OCI Distribution
//!   API, as an OCI manifest over the same layers and config the archive
//!   holds, so that a cluster's nodes can pull it.
//!
//! Every dyno, whatever the cluster, starts the way crew's own dynos do: `/bin/sh
//! -c` in `/app`, after sourcing the buildpacks' `.profile.d/*.sh` and the app's
//! `.profile`, with a simple command `exec`ed so that it, not the shell, is the
//! container's first process and gets SIGTERM (see [`dyno_command`]). Dynos run
//! as uid and gid 65534 (`nobody`), never root, as Heroku's do.
//!
//! Output is canonical so that golden files stay put: JSON with every object's
//! keys sorted ([`render::json`]), the same values as YAML from a small emitter
//! ([`render::yaml`]), and images with fixed times, owners and entry order.
//!
//! Names must survive the clusters' rules, which are stricter than the
//! Procfile's: an app name must not end in `-`, and a process type is lowercased
//! with `_` turned into `-` where it names an object (`release_phase` →
//! `APP-release-phase`). Two types that would get the same name are an error,
//! never a silent merge.

pub mod image;
pub mod kubernetes;
mod names;
pub mod registry;
pub mod render;
pub mod swarm;

use std::collections::BTreeMap;

pub use names::{object_name, type_label, validate_app_name};

/// The port every web dyno listens on inside its container. Each dyno has its
/// own network namespace there, so one fixed port suffices; 5000 is what
/// Heroku's tooling and crew's local runner start from.
pub const PORT: u16 = 5000;

/// Seconds from SIGTERM to SIGKILL, as on Heroku and in `crew server`.
pub const STOP_GRACE_SECONDS: u32 = 30;

/// The uid and gid that dynos run as, and that own `/app` in an image: the
/// conventional `nobody`. Owning `/app` lets a dyno write there (the writes are
/// lost with the container, as on Heroku) without any privilege.
pub const DYNO_UID: u32 = 65534;

/// What a cluster runs: one release of an app with its formation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The app's name, `^[a-z][a-z0-9-]{1,29}$` and not ending in `-`.
    pub app: String,
    /// `3` for `v3`.
    pub version: u32,
    /// Why the release was made (`Deploy 1a2b3c4`), for the clusters' history.
    pub description: String,
    /// The image reference the cluster pulls, such as `registry:5000/shop:v3`.
    pub image: String,
    /// The config vars, which every dyno gets as its environment.
    pub config: BTreeMap<String, String>,
    /// Each process type, in Procfile order.
    pub processes: Vec<Process>,
}

/// One process type of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The Procfile's name for it: `web`, `worker`.
    pub name: String,
    /// Its Procfile command line.
    pub command: String,
    /// How many dynos of it the formation wants.
    pub quantity: u32,
    /// Its dyno size's memory quota, as the cluster's memory limit; `None`
    /// leaves it unlimited.
    pub memory_bytes: Option<u64>,
}

impl Release {
    /// `v3`.
    pub fn tag(&self) -> String {
        format!("v{}", self.version)
    }

    /// Checks what the clusters would otherwise reject later, or worse, accept
    /// and misread: the app's name, each type's object name (unique), and the
    /// config vars' names.
    pub fn validate(&self) -> Result<(), ClusterError> {
        validate_app_name(&self.app)?;
        if self.version == 0 {
            return Err(ClusterError::Invalid(
                "release versions start at v1".to_string(),
            ));
        }
        if self.image.trim().is_empty() || self.image.chars().any(char::is_whitespace) {
            return Err(ClusterError::Invalid(format!(
                "`{}` is not an image reference",
                self.image
            )));
        }
        if self.processes.is_empty() {
            return Err(ClusterError::NoProcesses {
                app: self.app.clone(),
            });
        }
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for process in &self.processes {
            let name = object_name(&self.app, &process.name)?;
            if let Some(first) = seen.insert(name.clone(), &process.name) {
                return Err(ClusterError::TypeClash {
                    first: first.to_string(),
                    second: process.name.clone(),
                    name,
                });
            }
            if process.command.trim().is_empty() {
                return Err(ClusterError::Invalid(format!(
                    "process type `{}` has no command",
                    process.name
                )));
            }
        }
        for (key, value) in &self.config {
            let mut bytes = key.bytes();
            let ok = bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(ClusterError::Invalid(format!(
                    "`{key}` is not a valid config var name: use letters, digits and underscores, not starting with a digit"
                )));
            }
            if value.contains('\0') {
                return Err(ClusterError::Invalid(format!(
                    "the value of config var `{key}` contains a NUL byte"
                )));
            }
        }
        Ok(())
    }
}

/// Shell text every dyno runs before its command, as crew's own dynos do (the
/// platform's prelude): the buildpacks' `.profile.d` scripts, which put their
/// runtimes on `PATH`, then the app's `.profile`. Relative paths, since the
/// working directory is `/app`.
const PROFILE: &str = "for f in .profile.d/*.sh; do [ -r \"$f\" ] && . \"./$f\"; done; \
                       [ -r .profile ] && . ./.profile; ";

/// The argv of a dyno running `command`: `/bin/sh -c` with the profile
/// prelude, then the command, `exec`ed when it is a simple one so that it
/// replaces the shell. That matters more in a container than anywhere: the shell
/// would be PID 1, which ignores SIGTERM unless it installs a handler, so the
/// app would sit out the whole grace period and then be SIGKILLed.
pub fn dyno_command(command: &str) -> Vec<String> {
    vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("{PROFILE}{}", crew_procfile::shell::exec_form(command)),
    ]
}

/// Why a release cannot become an image or manifests.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "`{name}` is not a valid app name: use 2 to 30 lowercase letters, digits and dashes, starting with a letter and not ending with a dash"
    )]
    AppName { name: String },
    #[error("process type `{name}` cannot name an engine object: {reason}")]
    ProcessType { name: String, reason: String },
    #[error(
        "process types `{first}` and `{second}` would both be named `{name}` on the engine; rename one"
    )]
    TypeClash {
        first: String,
        second: String,
        name: String,
    },
    #[error("{app} has no process types to run")]
    NoProcesses { app: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the slug {path}: {reason}")]
    Slug { path: String, reason: String },
    #[error("the base image {path}: {reason}")]
    Base { path: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serializing {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ClusterError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
        let what = what.into();
        move |source| ClusterError::Io { what, source }
    }

    pub(crate) fn json(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> ClusterError {
        let what = what.into();
        move |source| ClusterError::Json { what, source }
    }
}
