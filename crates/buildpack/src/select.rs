//! Step 1, selection: which buildpacks a build uses (BUILDPACK_URL, the
//! app's chosen list, `.buildpacks`, or the built-ins), and whether the app
//! chose them.
//!
//! Apart because `Buildpacks::select` answers it without building anything.

use std::collections::BTreeMap;
use std::path::Path;

use crate::builtin::BUILTIN_NAMES;
use crate::error::BuildError;
use crate::settings::Buildpacks;
use crate::source::BuildpackSource;
use crate::tree::read_tree_file;

/// The result of selection, with how the candidates are to be used.
pub(crate) struct Selection {
    pub(crate) sources: Vec<BuildpackSource>,
    /// Chosen by the app (run all, each must detect) rather than the built-in
    /// list (first match wins).
    pub(crate) explicit: bool,
}

impl Buildpacks {
    /// Which buildpacks a build of `source` with `config` will use: config var
    /// BUILDPACK_URL (a git URL or a local path), else a `.buildpacks` file in the
    /// source (one per line; blank lines and `#` comments skipped), else the
    /// built-ins tried in [`BUILTIN_NAMES`] order.
    pub fn select(
        &self,
        source: &Path,
        config: &BTreeMap<String, String>,
    ) -> Result<Vec<BuildpackSource>, BuildError> {
        Ok(self.selection(source, config)?.sources)
    }

    pub(crate) fn selection(
        &self,
        source: &Path,
        config: &BTreeMap<String, String>,
    ) -> Result<Selection, BuildError> {
        if let Some(url) = config.get("BUILDPACK_URL").filter(|u| !u.trim().is_empty()) {
            return Ok(Selection {
                sources: vec![BuildpackSource::parse(url)?],
                explicit: true,
            });
        }
        if !self.chosen.is_empty() {
            return Ok(Selection {
                sources: self.chosen.clone(),
                explicit: true,
            });
        }
        if let Some(text) = read_tree_file(source, ".buildpacks")? {
            let sources = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(BuildpackSource::parse)
                .collect::<Result<Vec<_>, _>>()?;
            // An empty file asks for nothing in particular.
            if !sources.is_empty() {
                return Ok(Selection {
                    sources,
                    explicit: true,
                });
            }
        }
        Ok(Selection {
            sources: BUILTIN_NAMES
                .iter()
                .map(|name| BuildpackSource::Builtin((*name).to_owned()))
                .collect(),
            explicit: false,
        })
    }
}
