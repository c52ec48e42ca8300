//! Running `bin/detect`: whether a buildpack accepts the app, and the name
//! it is shown under ([`Chosen`]).
//!
//! Apart from compile and release because detection decides which
//! buildpacks run at all, before anything is compiled.

use std::path::{Path, PathBuf};

use crate::context::{Context, Place, has_program};
use crate::error::BuildError;
use crate::run::{Output, Stream};
use crate::source::BuildpackSource;

/// How many of `bin/detect`'s lines crew keeps.
const DETECT_LINES: usize = 16;

/// A buildpack ready to run: its directory and the name its `bin/detect` gave.
pub(crate) struct Chosen {
    pub(crate) dir: PathBuf,
    pub(crate) name: String,
}

/// Runs `bin/detect BUILD_DIR`: `Some(name)` on exit 0. A buildpack without
/// `bin/detect` accepts every app, named after its directory, so that a
/// one-script buildpack chosen explicitly still works.
pub(crate) fn detect(
    ctx: &Context,
    source: &BuildpackSource,
    dir: &Path,
) -> Result<Option<String>, BuildError> {
    let fallback_name = || {
        let text = source.to_string();
        let last = text
            .split('#')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".git")
            .to_owned();
        if last.is_empty() { text } else { last }
    };
    if !has_program(dir, "detect") {
        return Ok(Some(fallback_name()));
    }
    let job = ctx.buildpack_job(dir, "detect", &[Place::Build]);
    let mut stdout = Vec::new();
    let status = ctx.run(
        job,
        Output::Separate,
        &source.to_string(),
        &mut |stream, line| {
            // The name is the first line; a detect that prints on and on
            // must not make crew keep it all.
            if stream == Stream::Stdout && stdout.len() < DETECT_LINES {
                stdout.push(line.to_owned());
            }
        },
    )?;
    if !status.success() {
        return Ok(None);
    }
    let name = stdout
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(fallback_name);
    Ok(Some(name))
}
