//! Slugs on disk: a tar.gz made by the build, extracted once beside itself.

use std::io;
use std::path::{Path, PathBuf};

/// The directory a slug runs from, extracting it the first time. The archive is
/// unpacked into a temporary directory and renamed into place, so a crash never
/// leaves a half-extracted slug that looks complete.
pub fn extract(archive: &Path) -> io::Result<PathBuf> {
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .ok_or_else(|| io::Error::other(format!("{} is not a .tar.gz", archive.display())))?;
    let dir = archive.with_file_name(name);
    if dir.is_dir() {
        return Ok(dir);
    }
    let partial = archive.with_file_name(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let file = std::fs::File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.set_preserve_permissions(true);
    tar.unpack(&partial)?;
    std::fs::rename(&partial, &dir)?;
    Ok(dir)
}
