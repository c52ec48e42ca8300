//! Turning an app's source tree into a slug with classic (Heroku-style) buildpacks.
//!
//! Theory of operation. A build is one call to [`Buildpacks::build`]:
//!
//! 1. **Select.** [`Buildpacks::select`] picks the buildpacks: the app's
//!    `BUILDPACK_URL` config var (a git URL, an absolute path, or a built-in
//!    name), else a `.buildpacks` file in the source (one per line), else the
//!    built-ins in the order `ruby`, `python`, `nodejs`, `go`, `unsupported`
//!    (which only refuses apps crew recognises but cannot build), `procfile`.
//!    The first two are
//!    *explicit*: every buildpack listed runs, and each must accept the app.
//!    The built-ins are *automatic*: the first whose `bin/detect` accepts the app
//!    is the only one that runs.
//! 2. **Copy.** The source is copied (without `.git`) into a fresh scratch
//!    directory, `$TMPDIR/crew-build-XXXX/app`, so the build never changes the
//!    checked-out tree and a failed build leaves nothing behind. Config vars are
//!    written to `…/env`, one file per var, for `bin/compile`'s ENV_DIR. Git
//!    buildpacks are cloned (`git clone --depth 1`) into `…/buildpack-N` on
//!    every build; a branch moves, so a cached clone would go stale.
//! 3. **Detect, compile, release** with the classic API: `bin/detect BUILD_DIR`
//!    (exit 0 and a name on stdout), `bin/compile BUILD_DIR CACHE_DIR ENV_DIR`
//!    (its stdout and stderr stream to the pusher line by line, merged in write
//!    order), `bin/release BUILD_DIR` (YAML, read by [`parse_release`]). Later
//!    buildpacks' defaults override earlier ones'.
//! 4. **Process types.** The app's Procfile (after compile, so a buildpack may
//!    write one) overrides and extends the buildpacks' `default_process_types`.
//!    A `release` type becomes [`BuildOutput::release_command`].
//! 5. **Compress** the build directory into a tar.gz at `slug_path`: files at
//!    the archive root, modes and symlinks kept, written under a temporary name
//!    and renamed, so a slug is whole or absent.
//!
//! Where the programs run is the [`BuildIsolation`] of [`Buildpacks`]:
//! - **Sandboxed** (a server that isolates its dynos): every program, `git
//!   clone` of a buildpack included, runs through the isolated dynos' launch
//!   path ([`crew_runtime::IsolatedRuntime::sandbox`]): its own mount, pid, uts,
//!   ipc and cgroup namespaces, a cgroup with memory and pids limits, the stack
//!   read-only, as the sandbox's unprivileged uid, and nothing of the host
//!   beside the stack but, at fixed places, BUILD_DIR at `/app` (so that paths
//!   baked in at build time are the dyno's paths too), CACHE_DIR at `/cache`,
//!   ENV_DIR at `/env` (read-only), the buildpack at `/buildpack` (read-only)
//!   and a fresh `/tmp`. The environment is only `PATH`, `HOME=/app`, `STACK`,
//!   `CREW_APP`, `SOURCE_VERSION` and the variables the operator passes on
//!   ([`BuildSandbox::env`]). When a program exits, everything it started is
//!   gone (its pid namespace dies with it).
//! - **On the host** (`--isolation off`, no root, and library use): each
//!   program is the leader of its own process group, runs as crew's user, and
//!   inherits crew's environment minus every `GIT_*` variable (a build runs
//!   inside a git pre-receive hook, whose `GIT_DIR` and quarantine settings
//!   would break any `git` the buildpack runs), plus `STACK=crew`, `CREW_APP`
//!   and `SOURCE_VERSION`. A server says so in every build's output.
//!
//! The whole build shares one deadline ([`BuildRequest::timeout`]); when it
//! passes, the running program and all it started are killed and the build
//! fails. Config vars are not in the programs' environment, only in ENV_DIR, as
//! the API prescribes.
//!
//! The pushed tree and the build directory are data: the files crew reads
//! itself (`.buildpacks`, `Procfile`) must be regular files and are opened
//! without following a symlink, copying the tree and packing the slug never
//! follow one, and a buildpack path (BUILDPACK_URL or `.buildpacks` naming a
//! directory on the server) is only used where [`PathBuildpacks`] allows.
//!
//! Output is given to the caller's `out` callback one line at a time, already in
//! the form the pusher sees (`-----> Python app detected`, 7-space detail lines);
//! failures carry the ` !     ` lines in [`BuildError::pusher_lines`].
//!
//! Callers must not run two builds of one app at once, since they would share
//! its cache directory.
//!
//! Where each part lives. Each module imports only modules named after it
//! here, so no two import each other: `build` runs the steps in order and is
//! the only module that knows them all; `select` is step 1, `fetch` gets each
//! buildpack, `compile` (compile and release) and `detect` are step 3,
//! `process_types` is step 4; `tree` reads and writes the files crew handles
//! itself (`.buildpacks`, `Procfile`, ENV_DIR); `slug` copies the tree in and
//! packs it (steps 2 and 5); `context` launches a step's program on the host
//! or in the sandbox through `run`; `settings` holds how a server builds,
//! `source` how a buildpack is named, `builtin` the built-in buildpacks,
//! `error` the failures, `release` the reader of `bin/release`'s YAML, and
//! `limits` the limits.

mod build;
mod builtin;
mod compile;
mod context;
mod detect;
mod error;
mod fetch;
mod limits;
mod process_types;
mod release;
mod run;
mod select;
mod settings;
mod slug;
mod source;
mod tree;

pub use build::{BuildOutput, BuildRequest};
pub use builtin::BUILTIN_NAMES;
pub use context::{SANDBOX_PATH, STACK};
pub use error::{BuildError, ERROR_PREFIX};
pub use limits::{MAX_SLUG_SIZE, human_size};
pub use release::{Release, ReleaseYamlError, parse_release};
pub use settings::{BuildIsolation, BuildSandbox, Buildpacks, PathBuildpacks};
pub use source::BuildpackSource;
