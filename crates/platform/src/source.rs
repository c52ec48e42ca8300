//! Uploaded sources and the scratch dirs builds unpack them into.
//!
//! A build never names a host path: its source is a tarball uploaded through
//! the API (`POST /sources`, then `PUT` to its URL) into `DATA/sources/ID`,
//! where `ID` is 32 hex digits crew chose. A deploy unpacks it into
//! `DATA/tmp/build-BUILD_ID` and removes both when the build ends.
//!
//! Invariants:
//! - Every path made or removed here is `DATA/sources/` + a [`SourceId`], or
//!   `DATA/tmp/build-` + a build id from the store that looks like a UUID, so
//!   nothing from a request reaches a path.
//! - Both directories are 0700 and every source file 0600, made so at creation.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::PlatformError;

/// The most a source tarball may hold, as on Heroku where a slug may be
/// 500 MB compressed and a source must fit in one.
pub const MAX_SOURCE_BYTES: u64 = 1024 * 1024 * 1024;

/// Hex digits of a source id.
const ID_LEN: usize = 32;

/// The name of an uploaded source: 32 lowercase hex digits, made by crew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceId(String);

impl SourceId {
    /// `text` as a source id, if it is one.
    pub fn parse(text: &str) -> Option<SourceId> {
        let hex = text.len() == ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        hex.then(|| SourceId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Makes `dir` (0700) if it is missing.
fn private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Makes an empty source file (0600) under `dir` and returns its id.
pub(crate) fn create(dir: &Path) -> io::Result<SourceId> {
    private_dir(dir)?;
    let mut bytes = [0u8; ID_LEN / 2];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(&id))?;
    Ok(SourceId(id))
}

/// The tarball of source `id`, which must exist as a plain file.
pub(crate) fn path(dir: &Path, id: &SourceId) -> Result<PathBuf, PlatformError> {
    let path = dir.join(id.as_str());
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        _ => Err(no_such_source(id)),
    }
}

fn no_such_source(id: &SourceId) -> PlatformError {
    PlatformError::Invalid(format!(
        "there is no source {id} (or it was built already): make one with POST /sources"
    ))
}

/// Source `id`'s file, emptied, for its upload. Never follows a symlink.
pub(crate) fn open_for_upload(dir: &Path, id: &SourceId) -> Result<File, PlatformError> {
    let path = path(dir, id)?;
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|_| no_such_source(id))
}

/// Makes the empty scratch dir `TMP/build-BUILD_ID` (0700) for a build.
pub(crate) fn scratch_dir(tmp: &Path, build_id: &str) -> io::Result<PathBuf> {
    if !looks_like_uuid(build_id) {
        return Err(io::Error::other(format!(
            "`{build_id}` is not a build id crew made"
        )));
    }
    private_dir(tmp)?;
    let dir = tmp.join(format!("build-{build_id}"));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

fn looks_like_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Unpacks the tarball at `archive` (tar, or tar.gz by its magic number) into
/// `dir`. Entries that would land outside `dir` are refused by `tar`; modes
/// are kept only as far as the owner's read/write/execute bits.
pub(crate) fn unpack(archive: &Path, dir: &Path) -> io::Result<()> {
    let mut file = File::open(archive)?;
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = File::open(archive)?;
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(false);
    tar.set_preserve_ownerships(false);
    tar.set_unpack_xattrs(false);
    tar.unpack(dir)
}

/// Removes what builds cut off by a stopped server left: scratch dirs in
/// `tmp` (`build-UUID`, and `APP-COMMIT-PID` exports of older crews) and
/// sources in `sources` that were never built. Other names are left alone.
pub(crate) fn remove_leftovers(tmp: &Path, sources: &Path) {
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_scratch_name(name) {
            // Does not follow a symlink: one would be removed, not its target.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    for entry in std::fs::read_dir(sources).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name.to_str().and_then(SourceId::parse).is_some() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `build-UUID`, or an older crew's hook export `APP-COMMIT-PID` (a 40-digit
/// hex commit and a number).
fn is_scratch_name(name: &str) -> bool {
    if let Some(id) = name.strip_prefix("build-") {
        return looks_like_uuid(id);
    }
    let mut parts = name.rsplitn(3, '-');
    let (Some(pid), Some(commit), Some(app)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !app.is_empty()
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && commit.len() == 40
        && commit.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn source_ids_are_only_what_crew_makes() {
        assert!(SourceId::parse(&"a".repeat(32)).is_some());
        for bad in [
            "",
            "../../etc",
            &"a".repeat(31),
            &"A".repeat(32),
            &format!("{}/", "a".repeat(31)),
        ] {
            assert!(SourceId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sources_and_scratch_dirs_are_private() {
        let data = tempfile::tempdir().expect("tempdir");
        let sources = data.path().join("sources");
        let id = create(&sources).expect("a source");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&sources), 0o700);
        assert_eq!(mode(&sources.join(id.as_str())), 0o600);
        let tmp = data.path().join("tmp");
        let scratch =
            scratch_dir(&tmp, "0b7a0c9e-6d4e-4a53-9f1e-2d1b9c8e7f60").expect("a scratch dir");
        assert_eq!(mode(&tmp), 0o700);
        assert_eq!(mode(&scratch), 0o700);
        assert!(scratch_dir(&tmp, "../../etc").is_err());
    }

    #[test]
    fn leftovers_are_only_crews_own_names() {
        let data = tempfile::tempdir().expect("tempdir");
        let tmp = data.path().join("tmp");
        let sources = data.path().join("sources");
        let scratch = scratch_dir(&tmp, "0b7a0c9e-6d4e-4a53-9f1e-2d1b9c8e7f60").expect("scratch");
        std::fs::write(scratch.join("Procfile"), "web: x").expect("write");
        let old_export = tmp.join(format!("demo-{}-4242", "c".repeat(40)));
        std::fs::create_dir(&old_export).expect("mkdir");
        let other = tmp.join("someone-elses");
        std::fs::create_dir(&other).expect("mkdir");
        let id = create(&sources).expect("a source");
        let note = sources.join("README");
        std::fs::write(&note, "keep").expect("write");

        remove_leftovers(&tmp, &sources);
        assert!(!scratch.exists());
        assert!(!old_export.exists());
        assert!(other.exists());
        assert!(!sources.join(id.as_str()).exists());
        assert!(note.exists());
    }

    #[test]
    fn an_uploaded_tarball_unpacks_plain_or_gzipped() {
        let data = tempfile::tempdir().expect("tempdir");
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(6);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "Procfile", &b"web: x"[..])
            .expect("append");
        let plain = builder.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).expect("gzip");
        let gzipped = gz.finish().expect("gzip");
        for (name, bytes) in [("plain", plain), ("gzipped", gzipped)] {
            let archive = data.path().join(format!("{name}.tar"));
            std::fs::write(&archive, bytes).expect("write");
            let dir = data.path().join(name);
            std::fs::create_dir(&dir).expect("mkdir");
            unpack(&archive, &dir).expect("unpacks");
            assert_eq!(
                std::fs::read_to_string(dir.join("Procfile")).expect("Procfile"),
                "web: x"
            );
        }
    }
}
