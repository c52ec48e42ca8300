//! Getting a buildpack's directory: a built-in, a path this server allows,
//! or a fresh `git clone` into the build's scratch directory.
//!
//! Apart because it is the only step that reaches outside the build (the
//! network, the server's own directories) before any buildpack program runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crew_runtime::SandboxBind;

use crate::builtin::BUILTIN_NAMES;
use crate::context::{Context, clear_git_env, has_program, inside};
use crate::error::BuildError;
use crate::run::{self, Job, Outcome, Output};
use crate::settings::{BuildIsolation, Buildpacks};
use crate::slug;
use crate::source::BuildpackSource;

/// How many of git's last output lines a failed clone reports.
const GIT_ERROR_LINES: usize = 10;

impl Buildpacks {
    /// The directory of a buildpack, cloning it first if it lives in git.
    pub(crate) fn fetch(
        &self,
        ctx: &Context,
        source: &BuildpackSource,
        scratch: &Path,
        index: usize,
        out: &mut dyn FnMut(&str),
    ) -> Result<PathBuf, BuildError> {
        let dir = match source {
            BuildpackSource::Builtin(name) => {
                if !BUILTIN_NAMES.contains(&name.as_str()) {
                    return Err(BuildError::invalid(
                        name,
                        "there is no such built-in buildpack",
                    ));
                }
                self.dir.join(name)
            }
            BuildpackSource::Path(path) => self.allowed_path(path)?,
            BuildpackSource::Git(url) => {
                let dest = scratch.join(format!("buildpack-{index}"));
                out(&format!("-----> Fetching buildpack {url}"));
                git_clone(ctx, url, &dest)?;
                dest
            }
        };
        if !has_program(&dir, "compile") {
            return Err(BuildError::invalid(
                source.to_string(),
                "it has no bin/compile",
            ));
        }
        Ok(dir)
    }
}

/// `git clone --depth 1 [--branch REF] URL DEST`, quietly; git's own words are
/// shown only if it fails.
fn git_clone(ctx: &Context, url: &str, dest: &Path) -> Result<(), BuildError> {
    let (repo, reference) = match url.rsplit_once('#') {
        Some((repo, reference)) if !reference.is_empty() => (repo, Some(reference)),
        _ => (url.trim_end_matches('#'), None),
    };
    let mut args = vec!["clone", "--depth", "1", "--quiet"];
    if let Some(reference) = reference {
        args.extend(["--branch", reference]);
    }
    // `--` so that a URL cannot be read as an option.
    args.extend(["--", repo]);
    let job = match ctx.isolation {
        BuildIsolation::Host { .. } => {
            let mut cmd = Command::new("git");
            clear_git_env(&mut cmd);
            // Never wait for a password nobody can type.
            cmd.env("GIT_TERMINAL_PROMPT", "0").args(args).arg(dest);
            Job::Host(cmd)
        }
        BuildIsolation::Sandboxed(sandbox) => {
            // The clone belongs to the build's user, and lands where the
            // buildpack will be seen.
            fs::create_dir(dest).map_err(BuildError::io_at("creating", dest))?;
            slug::give(dest, Some((sandbox.uid, sandbox.gid)))?;
            // git from PATH, through the shell; the URL stays one argument.
            let mut argv: Vec<String> = ["/bin/sh", "-c", "exec git \"$@\"", "git"]
                .into_iter()
                .chain(args)
                .map(str::to_owned)
                .collect();
            argv.push(inside::BUILDPACK.to_string());
            let binds = vec![
                SandboxBind {
                    host: dest.to_path_buf(),
                    inside: PathBuf::from(inside::BUILDPACK),
                    writable: true,
                },
                SandboxBind {
                    host: ctx.tmp_dir.to_path_buf(),
                    inside: PathBuf::from(inside::TMP),
                    writable: true,
                },
            ];
            let mut spec = ctx.sandbox_spec(sandbox, argv, binds);
            spec.env
                .push(("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()));
            Job::Sandboxed(&sandbox.runtime, spec)
        }
    };
    let mut output = Vec::new();
    let status = match run::run(job, Output::Merged, ctx.deadline, &mut |_, line| {
        output.push(line.to_owned());
    }) {
        Ok(Outcome::Exited { status, .. }) => status,
        Ok(Outcome::TimedOut) => return Err(ctx.timed_out()),
        Err(e) => return Err(BuildError::io("running git")(e)),
    };
    if status.success() {
        return Ok(());
    }
    let skip = output.len().saturating_sub(GIT_ERROR_LINES);
    Err(BuildError::GitClone {
        url: url.to_owned(),
        output: output.split_off(skip),
    })
}
