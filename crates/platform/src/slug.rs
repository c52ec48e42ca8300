//! Slugs on disk: a tar.gz made by the build, extracted once beside itself.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The directory a slug runs from, extracting it the first time. The archive is
/// unpacked into a temporary directory and renamed into place, so a crash never
/// leaves a half-extracted slug that looks complete. With `owner`, every file
/// belongs to that user and group (isolated dynos run as it and must be able to
/// change their `/app`); a slug extracted earlier for another owner is handed over.
pub fn extract(archive: &Path, owner: Option<(u32, u32)>) -> io::Result<PathBuf> {
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .ok_or_else(|| io::Error::other(format!("{} is not a .tar.gz", archive.display())))?;
    let dir = archive.with_file_name(name);
    if dir.is_dir() {
        if let Some((uid, gid)) = owner {
            let meta = std::fs::metadata(&dir)?;
            if (meta.uid(), meta.gid()) != (uid, gid) {
                chown_tree(&dir, uid, gid)?;
            }
        }
        return Ok(dir);
    }
    let partial = archive.with_file_name(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let file = std::fs::File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.set_preserve_permissions(true);
    tar.unpack(&partial)?;
    if let Some((uid, gid)) = owner {
        chown_tree(&partial, uid, gid)?;
    }
    std::fs::rename(&partial, &dir)?;
    Ok(dir)
}

/// Gives `dir` and everything under it to `uid`:`gid`, symlinks themselves
/// rather than what they point at.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}
