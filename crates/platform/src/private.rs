//! Keeps the data dir private: it holds every app's config vars (`crew.db`),
//! the API token and every app's source, so no other local user may read it.
//!
//! At start the data dir becomes 0700, and what crew owns below it loses every
//! group and other permission bit (files 0600, or 0700 if executable;
//! directories 0700), so a data dir made by an older crew is fixed too.
//!
//! Invariants:
//! - Nothing is followed through a symlink: symlinks are skipped.
//! - Only what belongs to crew's own user is changed, and only directories of
//!   that user are entered. A directory is made private before it is read, so
//!   no one else can swap an entry in it between the check and the `chmod`.
//! - Trees that other parts of crew give to other users are left to them:
//!   `root` (isolated dynos), `buildpacks` (run by builds), and each app's
//!   `slugs` and `cache`.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Directories directly under the data dir that are left alone.
const SKIPPED_AT_TOP: &[&str] = &["root", "buildpacks", "dynos"];

/// Directories directly under `DATA/apps/APP` that are left alone.
const SKIPPED_IN_APP: &[&str] = &["slugs", "cache"];

/// Makes `data` and what crew owns in it private; see the module comment.
pub(crate) fn make_private(data: &Path) -> io::Result<()> {
    let me = rustix::process::geteuid().as_raw();
    let meta = std::fs::symlink_metadata(data)?;
    if !meta.is_dir() {
        return Err(io::Error::other("the data dir is not a directory"));
    }
    if meta.uid() != me {
        // Its owner can read it all anyway; crew changes only what is its own.
        eprintln!(
            "crew: warning: the data dir {} belongs to uid {}, not to crew's uid {me}: \
             left as it is",
            data.display(),
            meta.uid()
        );
        return Ok(());
    }
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))?;
    walk(data, me, Depth::Data)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// The data dir itself.
    Data,
    /// `DATA/apps`.
    Apps,
    /// `DATA/apps/APP`.
    App,
    /// Anywhere else.
    Deeper,
}

fn walk(dir: &Path, me: u32, depth: Depth) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let skipped = match depth {
            Depth::Data => SKIPPED_AT_TOP.contains(&name.as_ref()),
            Depth::App => SKIPPED_IN_APP.contains(&name.as_ref()),
            Depth::Apps | Depth::Deeper => false,
        };
        if skipped {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() || meta.uid() != me {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            if mode != 0o700 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
            }
            let next = match (depth, name.as_ref()) {
                (Depth::Data, "apps") => Depth::Apps,
                (Depth::Apps, _) => Depth::App,
                _ => Depth::Deeper,
            };
            walk(&path, me, next)?;
        } else if meta.is_file() {
            // Owner bits only: a git hook or a script stays executable.
            let private = mode & 0o700;
            if mode != private {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private))?;
            }
        }
    }
    Ok(())
}

/// Makes `dir` and its missing parents with mode 0700.
pub(crate) fn create_dirs(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Makes `path` as an empty file with mode 0600 if it does not exist, so what
/// opens it later (SQLite, which gives its `-wal` and `-shm` the same mode)
/// never makes it readable to others.
pub(crate) fn create_private_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn an_older_data_dir_is_made_private_without_following_symlinks() {
        let outside = tempfile::tempdir().expect("tempdir");
        let target = outside.path().join("host-file");
        std::fs::write(&target, "host").expect("write");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        let data = tempfile::tempdir().expect("tempdir");
        let d = data.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for (file, m) in [
            ("crew.db", 0o644),
            ("crew.db-wal", 0o644),
            ("repos/demo.git/hooks/pre-receive", 0o755),
        ] {
            let path = d.join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, "x").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).expect("chmod");
        }
        std::os::unix::fs::symlink(&target, d.join("link")).expect("symlink");
        std::fs::create_dir_all(d.join("apps/demo/slugs/s1")).expect("mkdir");
        std::fs::set_permissions(
            d.join("apps/demo/slugs/s1"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");

        make_private(d).expect("made private");
        assert_eq!(mode(d), 0o700);
        assert_eq!(mode(&d.join("crew.db")), 0o600);
        assert_eq!(mode(&d.join("crew.db-wal")), 0o600);
        assert_eq!(mode(&d.join("repos")), 0o700);
        assert_eq!(mode(&d.join("repos/demo.git/hooks/pre-receive")), 0o700);
        assert_eq!(mode(&d.join("apps/demo")), 0o700);
        // Not through the symlink, and not into another part's tree.
        assert_eq!(mode(&target), 0o644);
        assert_eq!(mode(&d.join("apps/demo/slugs/s1")), 0o755);
    }

    #[test]
    fn a_new_database_file_is_private() {
        let data = tempfile::tempdir().expect("tempdir");
        let db = data.path().join("crew.db");
        create_private_file(&db).expect("made");
        assert_eq!(mode(&db), 0o600);
        create_private_file(&db).expect("kept");
    }
}
