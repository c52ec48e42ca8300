//! Copying the source into the build directory, and packing the build directory
//! into the slug.
//!
//! Both walks keep regular files with their permission bits, directories and
//! symlinks (as links, never followed, so a link to `/etc` stays a link), skip
//! the top-level `.git`, and skip sockets, FIFOs and devices, which have no place
//! in an app. Every file is opened with `O_NOFOLLOW`, so a file that became a
//! link after it was listed is refused rather than read through. They check
//! the build's deadline between entries, so that a huge tree cannot outlast the
//! time limit.
//!
//! The slug is packed once every program of the build has exited, so nothing
//! changes the tree while it is walked (a sandboxed build's processes all die
//! with it; see `run`).

use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::time::Instant;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::error::BuildError;

/// Gives `path` itself (a link as a link) to `owner`, if there is one.
pub(crate) fn give(path: &Path, owner: Option<(u32, u32)>) -> Result<(), BuildError> {
    match owner {
        Some((uid, gid)) => {
            lchown(path, Some(uid), Some(gid)).map_err(BuildError::io_at("chown", path))
        }
        None => Ok(()),
    }
}

/// Gives `dir` and everything under it to `uid`:`gid`, links as links, when
/// `dir` itself belongs to someone else (a cache from an older crew, or from
/// another build user); a walk otherwise costs every build for nothing.
pub(crate) fn give_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), BuildError> {
    let meta = fs::symlink_metadata(dir).map_err(BuildError::io_at("reading", dir))?;
    if (meta.uid(), meta.gid()) == (uid, gid) {
        return Ok(());
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        give(&dir, Some((uid, gid)))?;
        for entry in fs::read_dir(&dir).map_err(BuildError::io_at("reading", &dir))? {
            let entry = entry.map_err(BuildError::io_at("reading", &dir))?;
            let kind = entry
                .file_type()
                .map_err(BuildError::io_at("reading", &entry.path()))?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                give(&entry.path(), Some((uid, gid)))?;
            }
        }
    }
    Ok(())
}

/// Opens a file of a tree for reading, refusing (`ELOOP`) a symlink.
fn open_no_follow(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Copies the tree at `from` into the existing empty directory `to`; with
/// `owner`, everything copied belongs to that user and group.
pub(crate) fn copy_tree(
    from: &Path,
    to: &Path,
    owner: Option<(u32, u32)>,
    deadline: Instant,
    timed_out: &dyn Fn() -> BuildError,
) -> Result<(), BuildError> {
    // An explicit stack rather than recursion: directory depth is the app's choice.
    let mut stack: Vec<(PathBuf, PathBuf)> = vec![(from.to_path_buf(), to.to_path_buf())];
    let mut dir_modes = Vec::new();
    while let Some((src_dir, dst_dir)) = stack.pop() {
        for entry in fs::read_dir(&src_dir).map_err(BuildError::io_at("reading", &src_dir))? {
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            let entry = entry.map_err(BuildError::io_at("reading", &src_dir))?;
            if src_dir == from && entry.file_name() == ".git" {
                continue;
            }
            let src = entry.path();
            let dst = dst_dir.join(entry.file_name());
            let kind = entry
                .file_type()
                .map_err(BuildError::io_at("reading", &src))?;
            if kind.is_dir() {
                fs::create_dir(&dst).map_err(BuildError::io_at("creating", &dst))?;
                give(&dst, owner)?;
                let meta = entry
                    .metadata()
                    .map_err(BuildError::io_at("reading", &src))?;
                dir_modes.push((dst.clone(), meta.permissions()));
                stack.push((src, dst));
            } else if kind.is_symlink() {
                let target = fs::read_link(&src).map_err(BuildError::io_at("reading", &src))?;
                symlink(&target, &dst).map_err(BuildError::io_at("creating", &dst))?;
                give(&dst, owner)?;
            } else if kind.is_file() {
                copy_file(&src, &dst).map_err(BuildError::io_at("copying", &src))?;
                give(&dst, owner)?;
            }
        }
    }
    // Directory modes last, deepest first: a read-only directory must be filled
    // before it becomes read-only.
    for (dir, permissions) in dir_modes.into_iter().rev() {
        fs::set_permissions(&dir, permissions).map_err(BuildError::io_at("chmod", &dir))?;
    }
    Ok(())
}

/// Copies one regular file with its permission bits, never through a link.
/// (A chown by the caller then clears set-id bits, as it should.)
fn copy_file(src: &Path, dst: &Path) -> io::Result<()> {
    let mut from = open_no_follow(src)?;
    let meta = from.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(dst)?;
    io::copy(&mut from, &mut to)?;
    to.set_permissions(fs::Permissions::from_mode(
        meta.permissions().mode() & 0o7777,
    ))
}

/// Packs `build_dir` into a gzipped tar at `slug_path` and returns its size.
///
/// Entries are relative paths at the root of the archive (`Procfile`,
/// `.venv/bin/python`), in sorted order so that two builds of the same tree list
/// the same way. The archive is written under a temporary name in the same
/// directory, synced, and renamed into place only if it is within `max_size`:
/// a reader never sees half a slug, and a failed build leaves none.
pub(crate) fn write_slug(
    build_dir: &Path,
    slug_path: &Path,
    max_size: u64,
    deadline: Instant,
    timed_out: &dyn Fn() -> BuildError,
) -> Result<u64, BuildError> {
    let parent = match slug_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).map_err(BuildError::io_at("creating", parent))?;
    let temp = tempfile::Builder::new()
        .prefix(".slug-")
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(BuildError::io_at("creating a slug in", parent))?;
    let writing = BuildError::io_at("writing", temp.path());

    let gz = GzEncoder::new(BufWriter::new(temp.as_file()), Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = build_dir.join(&rel_dir);
        let mut entries = fs::read_dir(&dir)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(BuildError::io_at("reading", &dir))?;
        entries.sort_by_key(|e| e.file_name());
        // Subdirectories are pushed in reverse so that they pop in sorted order.
        let mut subdirs = Vec::new();
        for entry in entries {
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            if rel_dir.as_os_str().is_empty() && entry.file_name() == ".git" {
                continue;
            }
            let rel = rel_dir.join(entry.file_name());
            let kind = entry
                .file_type()
                .map_err(BuildError::io_at("reading", &entry.path()))?;
            if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
                continue;
            }
            if kind.is_file() {
                let mut file = open_no_follow(&entry.path())
                    .map_err(BuildError::io_at("packing", &entry.path()))?;
                tar.append_file(&rel, &mut file)
                    .map_err(BuildError::io_at("packing", &entry.path()))?;
            } else {
                // Read with lstat (follow_symlinks is off): a link stays a link.
                tar.append_path_with_name(entry.path(), &rel)
                    .map_err(BuildError::io_at("packing", &entry.path()))?;
            }
            if kind.is_dir() {
                subdirs.push(rel);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    let gz = tar
        .into_inner()
        .map_err(BuildError::io_at("packing", build_dir))?;
    let mut buffered = gz
        .finish()
        .map_err(BuildError::io_at("packing", build_dir))?;
    buffered.flush().map_err(writing)?;
    drop(buffered);
    temp.as_file()
        .sync_all()
        .map_err(BuildError::io_at("syncing", temp.path()))?;
    let size = temp
        .as_file()
        .metadata()
        .map_err(BuildError::io_at("reading", temp.path()))?
        .len();
    if size > max_size {
        // Dropping `temp` deletes it.
        return Err(BuildError::SlugTooLarge { size });
    }
    temp.persist(slug_path)
        .map_err(|e| BuildError::io_at("renaming the slug to", slug_path)(e.error))?;
    Ok(size)
}
