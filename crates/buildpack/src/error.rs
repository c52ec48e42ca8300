//! Why a build failed, and what the pusher is told about it.

use std::io;

use crew_procfile::ProcfileError;

/// The prefix Heroku puts on every line that explains a rejected push: a space,
/// `!` and five spaces, so that the text lines up with the 7-space detail lines.
pub const ERROR_PREFIX: &str = " !     ";

/// A failed build. `Display` is a one-line summary for crew's own logs;
/// [`BuildError::pusher_lines`] is what the person running `git push` sees.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No built-in buildpack's `bin/detect` accepted the app.
    #[error("no default language could be detected for this app")]
    NoBuildpackDetected,

    /// A buildpack the app asked for (BUILDPACK_URL or `.buildpacks`) rejected it
    /// in `bin/detect`.
    #[error("app not compatible with buildpack {buildpack}")]
    Incompatible { buildpack: String },

    /// `bin/compile` exited non-zero (or was killed by a signal).
    #[error("failed to compile {name} app ({status})")]
    CompileFailed { name: String, status: String },

    /// `bin/release` exited non-zero.
    #[error("bin/release of the {name} buildpack failed ({status})")]
    ReleaseFailed { name: String, status: String },

    /// `bin/release` printed something that is not the YAML subset crew reads.
    #[error("bin/release of the {name} buildpack printed unreadable YAML: {error}")]
    ReleaseYaml {
        name: String,
        #[source]
        error: crate::release::ReleaseYamlError,
    },

    /// The whole build ran past [`crate::BuildRequest::timeout`]. Everything the
    /// build had started was killed.
    #[error("build timed out after {seconds} seconds")]
    TimedOut { seconds: u64 },

    /// The app's Procfile is malformed (duplicate or no process types).
    #[error("Procfile: {0}")]
    Procfile(#[from] ProcfileError),

    /// Neither a Procfile nor the buildpacks' defaults name a process type.
    #[error("no process types found")]
    NoProcessTypes,

    /// BUILDPACK_URL or a `.buildpacks` line is neither a built-in name, a URL,
    /// nor an absolute path.
    #[error("invalid buildpack `{0}`: expected a git URL, an absolute path or a built-in name")]
    InvalidBuildpackUrl(String),

    /// A buildpack directory lacks an executable `bin/compile`, or is not there.
    #[error("buildpack {buildpack} is not usable: {reason}")]
    InvalidBuildpack { buildpack: String, reason: String },

    /// `git clone` of a buildpack failed; `output` is the tail of what git said.
    #[error("could not fetch buildpack {url}")]
    GitClone { url: String, output: Vec<String> },

    /// BUILDPACK_URL or a `.buildpacks` line names a directory on the server
    /// that the server does not allow (see [`crate::PathBuildpacks`]).
    #[error("buildpack {path} is a path on the server, which {}", refusal(.allowed))]
    PathRefused {
        path: String,
        allowed: Option<std::path::PathBuf>,
    },

    /// A file crew reads itself from the pushed tree or the build directory
    /// (`Procfile`, `.buildpacks`) is a symlink, or not a regular file at all.
    #[error("{name} is {what}; crew reads it only as a regular file of the app")]
    NotARegularFile { name: String, what: &'static str },

    /// A config var name cannot be a file name in ENV_DIR.
    #[error("config var name {0:?} cannot be passed to a buildpack")]
    InvalidConfigVar(String),

    /// The compressed slug is over [`crate::MAX_SLUG_SIZE`].
    #[error("compiled slug size {size} bytes is too large")]
    SlugTooLarge { size: u64 },

    /// Anything the machine refused: disk full, permissions, a missing source.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// The end of [`BuildError::PathRefused`]'s summary.
fn refusal(allowed: &Option<std::path::PathBuf>) -> String {
    match allowed {
        Some(dir) => format!("is only allowed under {}", dir.display()),
        None => "this server does not allow".to_string(),
    }
}

impl BuildError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> BuildError {
        let context = context.into();
        move |source| BuildError::Io { context, source }
    }

    pub(crate) fn io_at(
        what: &str,
        path: &std::path::Path,
    ) -> impl FnOnce(io::Error) -> BuildError {
        BuildError::io(format!("{what} {}", path.display()))
    }

    pub(crate) fn invalid(buildpack: impl Into<String>, reason: impl Into<String>) -> BuildError {
        BuildError::InvalidBuildpack {
            buildpack: buildpack.into(),
            reason: reason.into(),
        }
    }

    /// The lines to send to the pusher, each starting with ` !     `, ending with
    /// Heroku's `Push failed`. The caller prints them after the build's own output.
    pub fn pusher_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = match self {
            BuildError::NoBuildpackDetected => vec![
                "No default language could be detected for this app.".into(),
                "crew's built-in buildpacks look for requirements.txt, setup.py or \
                 pyproject.toml (Python), package.json (Node.js) or a Procfile."
                    .into(),
                "Add one of those, set the BUILDPACK_URL config var, or list buildpacks \
                 in a .buildpacks file."
                    .into(),
            ],
            BuildError::Incompatible { buildpack } => vec![
                format!("App not compatible with buildpack: {buildpack}"),
                "Its bin/detect did not accept this app. Check BUILDPACK_URL or .buildpacks."
                    .into(),
            ],
            BuildError::CompileFailed { name, .. } => {
                vec![format!("Push rejected, failed to compile {name} app.")]
            }
            BuildError::ReleaseFailed { name, status } => {
                vec![format!(
                    "The {name} buildpack's bin/release failed ({status})."
                )]
            }
            BuildError::ReleaseYaml { name, error } => vec![format!(
                "The {name} buildpack's bin/release printed YAML crew cannot read: {error}"
            )],
            BuildError::TimedOut { seconds } => vec![format!(
                "Build timed out after {seconds} second{}.",
                if *seconds == 1 { "" } else { "s" }
            )],
            BuildError::Procfile(error) => vec![format!("Procfile: {error}")],
            BuildError::NoProcessTypes => vec![
                "No process types found.".into(),
                "Add a Procfile that declares at least one, such as `web: ./server`.".into(),
            ],
            BuildError::InvalidBuildpackUrl(url) => vec![format!(
                "Invalid buildpack `{url}`: expected a git URL, an absolute path or a \
                 built-in name (ruby, python, nodejs, go, procfile)."
            )],
            BuildError::InvalidBuildpack { buildpack, reason } => {
                vec![format!("Buildpack {buildpack} is not usable: {reason}")]
            }
            BuildError::GitClone { url, output } => {
                let mut lines = vec![format!("Could not fetch buildpack {url}")];
                lines.extend(output.iter().map(|l| format!("git: {l}")));
                lines
            }
            BuildError::PathRefused { path, allowed } => vec![
                format!("Buildpack {path} is a path on the server."),
                match allowed {
                    Some(dir) => format!(
                        "This server only runs path buildpacks under {}; use a git URL or a \
                         built-in name (ruby, python, nodejs, go, procfile).",
                        dir.display()
                    ),
                    None => "This server runs no path buildpacks; use a git URL or a built-in \
                             name (ruby, python, nodejs, go, procfile)."
                        .into(),
                },
            ],
            BuildError::NotARegularFile { name, what } => vec![
                format!("{name} is {what}."),
                format!(
                    "crew reads {name} only as a regular file of the app, never through a link."
                ),
            ],
            BuildError::InvalidConfigVar(name) => {
                vec![format!(
                    "Config var name {name:?} cannot be passed to a buildpack."
                )]
            }
            BuildError::SlugTooLarge { size } => vec![format!(
                "Compiled slug size: {} is too large (max is {}M).",
                crate::limits::human_size(*size),
                crate::limits::MAX_SLUG_SIZE / (1024 * 1024)
            )],
            BuildError::Io { .. } => vec![format!("Build failed: {self}")],
        };
        lines.push("Push failed".into());
        lines
            .into_iter()
            .map(|line| format!("{ERROR_PREFIX}{line}"))
            .collect()
    }
}
