//! What every step of one build shares ([`Context`]), and how a buildpack's
//! program is launched from it: on the host with crew's environment, or in the
//! sandbox with the build's directories at fixed places.
//!
//! Apart because detection, compile, release and the `git clone` of a
//! buildpack all launch programs the same way; each imports this, and this
//! imports none of them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crew_runtime::{SandboxBind, SandboxSpec};

use crate::error::{BuildError, ERROR_PREFIX};
use crate::limits::human_size;
use crate::run::{self, Job, Outcome, Output, Stream};
use crate::settings::{BuildIsolation, BuildSandbox};

/// The value of `STACK` that buildpacks see.
pub const STACK: &str = "crew";

/// `PATH` in a sandboxed build: the stack's directories, as on Heroku.
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a sandboxed program sees each directory of the build.
pub(crate) mod inside {
    pub const BUILD: &str = "/app";
    pub const CACHE: &str = "/cache";
    pub const ENV: &str = "/env";
    pub const BUILDPACK: &str = "/buildpack";
    pub const TMP: &str = "/tmp";
}

/// The parts of a build that every step needs.
pub(crate) struct Context<'a> {
    pub(crate) app: &'a str,
    pub(crate) build_dir: &'a Path,
    pub(crate) cache: &'a Path,
    pub(crate) env_dir: &'a Path,
    /// The sandbox's `/tmp`.
    pub(crate) tmp_dir: &'a Path,
    pub(crate) source_version: Option<&'a str>,
    pub(crate) isolation: &'a BuildIsolation,
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
}

/// A directory of the build a buildpack program is given as an argument.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Build,
    Cache,
    Env,
}

impl Context<'_> {
    pub(crate) fn timed_out(&self) -> BuildError {
        BuildError::TimedOut {
            seconds: self.timeout.as_secs(),
        }
    }

    /// `bin/SCRIPT` of the buildpack in `dir`, given the `places` as arguments,
    /// with the build environment described in the crate docs.
    pub(crate) fn buildpack_job(&self, dir: &Path, script: &str, places: &[Place]) -> Job<'_> {
        match self.isolation {
            BuildIsolation::Host { .. } => {
                let mut cmd = Command::new(dir.join("bin").join(script));
                clear_git_env(&mut cmd);
                cmd.env("STACK", STACK)
                    .env("CREW_APP", self.app)
                    .current_dir(self.build_dir);
                if let Some(version) = self.source_version {
                    cmd.env("SOURCE_VERSION", version);
                }
                for place in places {
                    cmd.arg(match place {
                        Place::Build => self.build_dir,
                        Place::Cache => self.cache,
                        Place::Env => self.env_dir,
                    });
                }
                Job::Host(cmd)
            }
            BuildIsolation::Sandboxed(sandbox) => {
                let bind = |host: &Path, inside: &str, writable| SandboxBind {
                    host: host.to_path_buf(),
                    inside: PathBuf::from(inside),
                    writable,
                };
                let mut binds = vec![
                    bind(self.build_dir, inside::BUILD, true),
                    bind(dir, inside::BUILDPACK, false),
                    bind(self.tmp_dir, inside::TMP, true),
                ];
                let mut argv = vec![format!("{}/bin/{script}", inside::BUILDPACK)];
                for place in places {
                    let (host, at, writable) = match place {
                        Place::Build => (self.build_dir, inside::BUILD, true),
                        Place::Cache => (self.cache, inside::CACHE, true),
                        Place::Env => (self.env_dir, inside::ENV, false),
                    };
                    if !binds.iter().any(|b| b.inside == Path::new(at)) {
                        binds.push(bind(host, at, writable));
                    }
                    argv.push(at.to_string());
                }
                Job::Sandboxed(&sandbox.runtime, self.sandbox_spec(sandbox, argv, binds))
            }
        }
    }

    /// A sandboxed program with the fixed environment and the operator's.
    pub(crate) fn sandbox_spec(
        &self,
        sandbox: &BuildSandbox,
        argv: Vec<String>,
        binds: Vec<SandboxBind>,
    ) -> SandboxSpec {
        let mut env = vec![
            ("PATH".to_string(), SANDBOX_PATH.to_string()),
            ("HOME".to_string(), inside::BUILD.to_string()),
            ("STACK".to_string(), STACK.to_string()),
            ("CREW_APP".to_string(), self.app.to_string()),
        ];
        if let Some(version) = self.source_version {
            env.push(("SOURCE_VERSION".to_string(), version.to_string()));
        }
        for (key, value) in &sandbox.env {
            if !env.iter().any(|(k, _)| k == key) {
                env.push((key.clone(), value.clone()));
            }
        }
        SandboxSpec {
            name: "build".to_string(),
            argv,
            env,
            binds,
            uid: sandbox.uid,
            gid: sandbox.gid,
            limits: sandbox.limits.clone(),
            separate_stderr: false,
        }
    }

    /// Runs `job` under the deadline; a spawn failure names the program.
    pub(crate) fn run(
        &self,
        job: Job,
        output: Output,
        buildpack: &str,
        on_line: &mut dyn FnMut(Stream, &str),
    ) -> Result<ExitStatus, BuildError> {
        let program = PathBuf::from(job.program());
        match run::run(job, output, self.deadline, on_line) {
            Ok(Outcome::Exited {
                status,
                out_of_memory,
            }) => {
                if out_of_memory && let BuildIsolation::Sandboxed(sandbox) = self.isolation {
                    on_line(
                        Stream::Stderr,
                        &format!(
                            "{ERROR_PREFIX}{} ran out of memory: a build step may use {}.",
                            program.display(),
                            human_size(sandbox.limits.memory_bytes)
                        ),
                    );
                }
                Ok(status)
            }
            Ok(Outcome::TimedOut) => Err(self.timed_out()),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(BuildError::invalid(
                buildpack,
                format!("{} is not executable", program.display()),
            )),
            Err(e) => Err(BuildError::io_at("running", &program)(e)),
        }
    }
}

/// Whether a buildpack has `bin/NAME`, without following a link on this
/// machine: a cloned buildpack belongs to the build, and its links mean
/// something only inside the sandbox.
pub(crate) fn has_program(dir: &Path, name: &str) -> bool {
    let bin = dir.join("bin");
    fs::symlink_metadata(&bin).is_ok_and(|m| m.is_dir())
        && fs::symlink_metadata(bin.join(name)).is_ok_and(|m| m.is_file() || m.is_symlink())
}

pub(crate) fn clear_git_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"GIT_") {
            cmd.env_remove(key);
        }
    }
}
