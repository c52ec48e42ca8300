//! The files of a build that crew itself reads (`Procfile`, `.buildpacks`)
//! or writes (ENV_DIR), with the care that pushed data needs: no link is
//! followed, no file is too big, and secrets stay private.
//!
//! Apart because selection and process-type discovery both read the app's
//! tree, and neither should import the other.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::BuildError;
use crate::limits::human_size;
use crate::slug;

/// The largest `Procfile` or `.buildpacks` crew reads.
const MAX_TREE_FILE: u64 = 1024 * 1024;

/// Writes one file per config var (name = key, contents = value, no newline
/// added). The directory and files are private to crew's user, or to the
/// sandbox's `owner`: values are secrets more often than not.
pub(crate) fn write_env_dir(
    dir: &Path,
    config: &BTreeMap<String, String>,
    owner: Option<(u32, u32)>,
) -> Result<(), BuildError> {
    fs::create_dir(dir).map_err(BuildError::io_at("creating", dir))?;
    slug::give(dir, owner)?;
    for (name, value) in config {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(BuildError::InvalidConfigVar(name.clone()));
        }
        let path = dir.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(value.as_bytes()))
            .map_err(BuildError::io_at("writing", &path))?;
        slug::give(&path, owner)?;
    }
    Ok(())
}

/// Reads `dir/name`, a file of the app that crew reads itself (`Procfile`,
/// `.buildpacks`): `None` if it is absent. Anything but a regular file is
/// refused and never followed or opened for reading (a link could name any
/// file of this machine, a FIFO would block), and so is one over 1 MiB or
/// not UTF-8.
pub(crate) fn read_tree_file(dir: &Path, name: &str) -> Result<Option<String>, BuildError> {
    let path = dir.join(name);
    let not_regular = |what| BuildError::NotARegularFile {
        name: name.to_string(),
        what,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path);
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(not_regular("a symbolic link"));
        }
        Err(e) => return Err(BuildError::io_at("reading", &path)(e)),
    };
    let meta = file
        .metadata()
        .map_err(BuildError::io_at("reading", &path))?;
    if !meta.is_file() {
        return Err(not_regular(if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        }));
    }
    if meta.size() > MAX_TREE_FILE {
        return Err(BuildError::io_at("reading", &path)(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is over {}", human_size(MAX_TREE_FILE)),
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TREE_FILE)
        .read_to_end(&mut bytes)
        .map_err(BuildError::io_at("reading", &path))?;
    String::from_utf8(bytes).map(Some).map_err(|_| {
        BuildError::io_at("reading", &path)(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the {name} is not UTF-8"),
        ))
    })
}
