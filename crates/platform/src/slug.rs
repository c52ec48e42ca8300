//! Slugs on disk: a tar.gz made by the build, extracted once beside itself.
//!
//! For isolated dynos an extracted slug belongs to root and to the app's own
//! group: its files are root's, the group gets what the archive gave their
//! owner, and nobody else gets anything. So no host process can rewrite
//! deployed code (only root owns it, and only the app's group may even look in),
//! while the app's dynos, whose gid that is, read it and change their `/app`
//! through the overlay (changes land in the dyno's own upper layer, never here).
//! Set-user and set-group bits are dropped: nothing in a slug runs as root.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directory a slug runs from, extracting it the first time. The archive is
/// unpacked into a temporary directory and renamed into place, so a crash never
/// leaves a half-extracted slug that looks complete. With `group`, the slug is
/// handed to root and that group (see the module documentation); a slug
/// extracted earlier for another owner (an older crew gave slugs to `nobody`)
/// is handed over.
pub fn extract(archive: &Path, group: Option<u32>) -> io::Result<PathBuf> {
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .ok_or_else(|| io::Error::other(format!("{} is not a .tar.gz", archive.display())))?;
    let dir = archive.with_file_name(name);
    if dir.is_dir() {
        if let Some(gid) = group {
            let meta = std::fs::symlink_metadata(&dir)?;
            if (meta.uid(), meta.gid(), meta.mode() & 0o7777) != (0, gid, group_mode(meta.mode())) {
                hand_over(&dir, gid)?;
            }
        }
        return Ok(dir);
    }
    let partial = archive.with_file_name(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    if group.is_some() {
        // Nobody but root looks in while it is being unpacked.
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o700))?;
    }
    let file = std::fs::File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.set_preserve_permissions(true);
    tar.unpack(&partial)?;
    if let Some(gid) = group {
        hand_over(&partial, gid)?;
    }
    std::fs::rename(&partial, &dir)?;
    Ok(dir)
}

/// A mode for root:GROUP: the owner's bits kept, copied to the group, none for
/// others, no set-id or sticky bits.
fn group_mode(mode: u32) -> u32 {
    let owner = mode & 0o700;
    owner | (owner >> 3)
}

/// Gives `dir` and everything under it to root and `gid` (see [`group_mode`]);
/// symlinks themselves are changed, never what they point at. Changes the
/// owner before the mode, so no moment leaves a file writable by its old owner
/// under the new, wider mode.
fn hand_over(dir: &Path, gid: u32) -> io::Result<()> {
    let one = |path: &Path, meta: &std::fs::Metadata| -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(0), Some(gid))?;
        if !meta.file_type().is_symlink() {
            let mode = group_mode(meta.mode());
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    };
    let meta = std::fs::symlink_metadata(dir)?;
    // The top first: once it is root:GROUP 0750 or so, nothing else gets in
    // while the rest is changed.
    one(dir, &meta)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = std::fs::symlink_metadata(entry.path())?;
        if meta.is_dir() {
            hand_over(&entry.path(), gid)?;
        } else {
            one(&entry.path(), &meta)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_keep_the_owner_bits_for_the_group_and_nothing_else() {
        assert_eq!(group_mode(0o100664), 0o660);
        assert_eq!(group_mode(0o100755), 0o770);
        assert_eq!(group_mode(0o104755), 0o770);
        assert_eq!(group_mode(0o040777), 0o770);
        assert_eq!(group_mode(0o100400), 0o440);
    }

    fn archive(dir: &Path) -> PathBuf {
        let source = dir.join("src");
        std::fs::create_dir_all(source.join("bin")).unwrap();
        std::fs::write(source.join("bin/run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            source.join("bin/run"),
            std::fs::Permissions::from_mode(0o4777),
        )
        .unwrap();
        std::fs::write(source.join("Procfile"), "web: bin/run\n").unwrap();
        std::fs::set_permissions(
            source.join("Procfile"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", source.join("link")).unwrap();
        let path = dir.join("slug-1.tar.gz");
        let file = std::fs::File::create(&path).unwrap();
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ));
        tar.append_dir_all(".", &source).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        path
    }

    /// Issue 14.4: slugs were `nobody`'s with files 0664, so any host process of
    /// that uid could rewrite deployed code.
    #[test]
    fn an_extracted_slug_is_root_and_the_app_group_only() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root (an_extracted_slug_is_root_and_the_app_group_only)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = archive(dir.path());
        let slug = extract(&archive, Some(2_000_000_123)).unwrap();
        let check = |path: &Path, mode: u32| {
            let meta = std::fs::symlink_metadata(path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (0, 2_000_000_123), "{path:?}");
            assert_eq!(meta.mode() & 0o7777, mode, "{path:?}");
        };
        check(&slug, 0o770);
        check(&slug.join("bin"), 0o770);
        check(&slug.join("bin/run"), 0o770);
        check(&slug.join("Procfile"), 0o660);
        let link = std::fs::symlink_metadata(slug.join("link")).unwrap();
        assert_eq!((link.uid(), link.gid()), (0, 2_000_000_123));
        assert!(
            std::fs::metadata("/etc/passwd").unwrap().gid() != 2_000_000_123,
            "the symlink's target is left alone"
        );

        // An older crew's slug, owned by nobody, is handed over at the next use.
        std::os::unix::fs::chown(&slug, Some(65534), Some(65534)).unwrap();
        std::os::unix::fs::chown(slug.join("Procfile"), Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(
            slug.join("Procfile"),
            std::fs::Permissions::from_mode(0o664),
        )
        .unwrap();
        let again = extract(&archive, Some(2_000_000_123)).unwrap();
        assert_eq!(again, slug);
        check(&slug, 0o770);
        check(&slug.join("Procfile"), 0o660);
    }
}
