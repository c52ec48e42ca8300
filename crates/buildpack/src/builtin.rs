//! The buildpacks that ship inside the crew binary.
//!
//! They are kept as plain scripts under `buildpacks/` at the top of the repo (so
//! they can be read, linted and run by hand) and compiled in with `include_str!`,
//! so a server needs no checkout: [`crate::Buildpacks::install_builtin`] writes them
//! out at start-up.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::BuildError;

/// The built-ins in the order automatic detection tries them. `ruby` is first,
/// as on Heroku (a Rails app has a package.json too). `unsupported` accepts
/// the languages crew recognises but cannot build, only to refuse them with a
/// reason. `procfile` is last because every app with a Procfile matches it,
/// including apps that need their dependencies installed.
pub const BUILTIN_NAMES: [&str; 6] = ["ruby", "python", "nodejs", "go", "unsupported", "procfile"];

macro_rules! buildpack {
    ($name:literal) => {
        (
            $name,
            [
                (
                    "detect",
                    include_str!(concat!("../../../buildpacks/", $name, "/bin/detect")),
                ),
                (
                    "compile",
                    include_str!(concat!("../../../buildpacks/", $name, "/bin/compile")),
                ),
                (
                    "release",
                    include_str!(concat!("../../../buildpacks/", $name, "/bin/release")),
                ),
            ],
        )
    };
}

type Scripts = [(&'static str, &'static str); 3];

const BUILTINS: [(&str, Scripts); 6] = [
    buildpack!("ruby"),
    buildpack!("python"),
    buildpack!("nodejs"),
    buildpack!("go"),
    buildpack!("unsupported"),
    buildpack!("procfile"),
];

/// Writes every built-in buildpack to `dir/NAME/bin/{detect,compile,release}`
/// with mode 0755. Each script is written under a temporary name and renamed,
/// so a build running at the same moment reads either the old script or the new
/// one, never a half-written file.
pub(crate) fn install(dir: &Path) -> Result<(), BuildError> {
    for (name, scripts) in BUILTINS {
        let bin = dir.join(name).join("bin");
        fs::create_dir_all(&bin).map_err(BuildError::io_at("creating", &bin))?;
        // A sandboxed build runs the scripts as another user, whatever the
        // server's umask made of these directories.
        for made in [dir.join(name), bin.clone()] {
            fs::set_permissions(&made, fs::Permissions::from_mode(0o755))
                .map_err(BuildError::io_at("chmod", &made))?;
        }
        for (script, text) in scripts {
            let path = bin.join(script);
            let mut temp = tempfile::Builder::new()
                .prefix(&format!(".{script}-"))
                .tempfile_in(&bin)
                .map_err(BuildError::io_at("creating a file in", &bin))?;
            temp.write_all(text.as_bytes())
                .map_err(BuildError::io_at("writing", temp.path()))?;
            fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o755))
                .map_err(BuildError::io_at("chmod", temp.path()))?;
            temp.persist(&path)
                .map_err(|e| BuildError::io_at("writing", &path)(e.error))?;
        }
    }
    Ok(())
}
