//! The app's process types: the Procfile merged over the buildpacks'
//! defaults, and Heroku's "Discovering process types" block.
//!
//! Apart because it reads the app's Procfile, not a buildpack's output, and
//! runs after every buildpack has compiled.

use std::collections::BTreeMap;
use std::path::Path;

use crew_procfile::Procfile;

use crate::error::{BuildError, ERROR_PREFIX};
use crate::tree::read_tree_file;

/// Merges the Procfile over the buildpacks' defaults and prints Heroku's
/// "Discovering process types" block. The two arrows line up when both lines
/// are shown; types are listed sorted.
pub(crate) fn discover_process_types(
    build_dir: &Path,
    defaults: BTreeMap<String, String>,
    out: &mut dyn FnMut(&str),
) -> Result<BTreeMap<String, String>, BuildError> {
    out("-----> Discovering process types");
    let procfile = match read_tree_file(build_dir, "Procfile")? {
        Some(text) => Some(Procfile::parse(&text)?),
        None => None,
    };
    let mut types = defaults;
    let mut declared = Vec::new();
    if let Some(procfile) = &procfile {
        for warning in procfile.warnings() {
            out(&format!("{ERROR_PREFIX}Warning: Procfile {warning}"));
        }
        for t in procfile.types() {
            types.insert(t.name.clone(), t.command.clone());
            declared.push(t.name.as_str());
        }
    }
    declared.sort_unstable();
    let from_defaults: Vec<&str> = types
        .keys()
        .map(String::as_str)
        .filter(|name| !declared.contains(name))
        .collect();
    let list = |names: &[&str]| names.join(", ");
    match (procfile.is_some(), from_defaults.is_empty()) {
        (false, true) => return Err(BuildError::NoProcessTypes),
        (true, true) => out(&format!(
            "       Procfile declares types -> {}",
            list(&declared)
        )),
        (has_procfile, false) => {
            let declared = if has_procfile {
                list(&declared)
            } else {
                "(none)".to_owned()
            };
            out(&format!("       Procfile declares types     -> {declared}"));
            out(&format!(
                "       Default types for buildpack -> {}",
                list(&from_defaults)
            ));
        }
    }
    Ok(types)
}
