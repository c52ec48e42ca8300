//! Running `bin/compile` and `bin/release` of a chosen buildpack.
//!
//! Apart from detection because these run only once every buildpack is
//! chosen, and from `release` (the YAML reader) because that one reads text
//! and runs nothing.

use crate::context::{Context, Place, has_program};
use crate::detect::Chosen;
use crate::error::BuildError;
use crate::limits::human_size;
use crate::release::{Release, parse_release};
use crate::run::{Output, Stream};

/// How much of `bin/release`'s YAML crew keeps.
const MAX_RELEASE_YAML: usize = 1024 * 1024;

/// Runs `bin/compile BUILD_DIR CACHE_DIR ENV_DIR`, passing every line through.
pub(crate) fn compile(
    ctx: &Context,
    buildpack: &Chosen,
    out: &mut dyn FnMut(&str),
) -> Result<(), BuildError> {
    let places = [Place::Build, Place::Cache, Place::Env];
    let job = ctx.buildpack_job(&buildpack.dir, "compile", &places);
    let status = ctx.run(job, Output::Merged, &buildpack.name, &mut |_, line| {
        out(line)
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::CompileFailed {
            name: buildpack.name.clone(),
            status: status.to_string(),
        })
    }
}

/// Runs `bin/release BUILD_DIR` and reads its YAML. Its stderr goes to the
/// pusher; a buildpack without `bin/release` declares nothing.
pub(crate) fn release(
    ctx: &Context,
    buildpack: &Chosen,
    out: &mut dyn FnMut(&str),
) -> Result<Release, BuildError> {
    if !has_program(&buildpack.dir, "release") {
        return Ok(Release::default());
    }
    let job = ctx.buildpack_job(&buildpack.dir, "release", &[Place::Build]);
    let mut yaml = String::new();
    let mut too_long = false;
    let status = ctx.run(
        job,
        Output::Separate,
        &buildpack.name,
        &mut |stream, line| match stream {
            Stream::Stdout => {
                if yaml.len() + line.len() < MAX_RELEASE_YAML {
                    yaml.push_str(line);
                    yaml.push('\n');
                } else {
                    too_long = true;
                }
            }
            Stream::Stderr => out(line),
        },
    )?;
    if !status.success() {
        return Err(BuildError::ReleaseFailed {
            name: buildpack.name.clone(),
            status: status.to_string(),
        });
    }
    if too_long {
        return Err(BuildError::ReleaseFailed {
            name: buildpack.name.clone(),
            status: format!(
                "it printed over {} of YAML",
                human_size(MAX_RELEASE_YAML as u64)
            ),
        });
    }
    parse_release(&yaml).map_err(|error| BuildError::ReleaseYaml {
        name: buildpack.name.clone(),
        error,
    })
}
