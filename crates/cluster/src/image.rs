//! A release's image, written as a docker-archive: the tar that `docker load`
//! reads (and `docker save` writes). [`build`] makes the layers and config
//! once; [`Image`] writes them as an archive, or hands them to
//! [`crate::registry`] to push with [`Image::oci_manifest`].
//!
//! The archive holds `manifest.json`, which names the image's config and its
//! layers in order and the tag to give it, and each of those as a blob under
//! `blobs/sha256/`, named by the SHA-256 of its bytes. Layers are plain tars,
//! so a layer's digest is also its `diff_id`, the digest the config lists.
//!
//! Two layers at most:
//! 1. **The base**, optional: a root filesystem tar (or tar.gz), copied
//!    unchanged. It is the stack image, the machine a dyno's commands run on
//!    (`/bin/sh`, libc, the runtimes the buildpacks expect); `--base` in the
//!    CLI. Without it the image holds the slug alone, which suits a cluster
//!    that adds the stack itself, and tests.
//! 2. **The slug**, at `/app`. A crew slug's paths are relative to the app's
//!    root (`Procfile`); a Heroku slug's are under `./app/` and are taken as
//!    they are. Entries are sorted by path, with fixed times (the epoch) and
//!    owner (uid and gid 65534, so that a dyno running as `nobody` can write in
//!    `/app` as on Heroku), so the same slug always gives the same digest. Hard
//!    links become copies, since sorting could put a link before its target.
//!
//! The config has the working directory `/app`, the user `65534:65534`,
//! `HOME` and `PATH`, labels naming the app and release, and no `CMD` or
//! entrypoint: the Procfile's commands are the release's, and the cluster gives
//! each dyno its own. The release's config vars are not put in the image unless
//! the caller asks ([`ImageSpec::env`]): an image is pushed to registries and
//! outlives config changes, so the clusters pass config at run time instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::render::to_value;
use crate::{ClusterError, DYNO_UID, validate_app_name};

/// The time every entry and the config carry, so that output depends on input
/// alone.
const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Docker's default `PATH`, since the image's config replaces the base's.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to make an image of, besides the slug and the base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub app: String,
    pub version: u32,
    /// What `docker load` tags the image as; none leaves it untagged.
    pub tag: Option<String>,
    /// Environment to bake in, on top of `HOME` and `PATH`. Empty by default:
    /// see the module's notes on config vars.
    pub env: BTreeMap<String, String>,
    /// `amd64`, `arm64`: Go's names, which is what registries and container runtimes use.
    pub architecture: String,
}

impl ImageSpec {
    /// An image of `app`'s release `version` for this machine's architecture,
    /// tagged [`default_tag`].
    pub fn new(app: &str, version: u32) -> ImageSpec {
        ImageSpec {
            app: app.to_string(),
            version,
            tag: Some(default_tag(app, version)),
            env: BTreeMap::new(),
            architecture: host_architecture().to_string(),
        }
    }
}

/// `crew/APP:vN`, the tag crew gives a release's image.
pub fn default_tag(app: &str, version: u32) -> String {
    format!("crew/{app}:v{version}")
}

/// This machine's architecture as Go spells it.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `sha256:…` of the config, which is the image's id in docker.
    pub id: String,
    /// The layers, base first.
    pub layers: Vec<LayerInfo>,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// `sha256:…` of the layer tar.
    pub digest: String,
    pub size: u64,
}

/// `docker load`'s `manifest.json` has one of these per image.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// The image config, the part of the OCI and docker formats that docker reads.
#[derive(Debug, Serialize)]
struct ImageConfig {
    architecture: String,
    os: &'static str,
    created: &'static str,
    config: RunConfig,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    env: Vec<String>,
    working_dir: &'static str,
    user: String,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Debug, Serialize)]
struct History {
    created: &'static str,
    created_by: String,
}

/// Writes the image of `slug` (a tar.gz, or a tar) on `base` (a rootfs tar or
/// tar.gz) to `out` as a docker-archive.
pub fn write_docker_archive(
    slug: &Path,
    base: Option<&Path>,
    spec: &ImageSpec,
    out: impl Write,
) -> Result<ImageInfo, ClusterError> {
    build(slug, base, spec)?.write_docker_archive(out)
}

/// The media type of an OCI image manifest, which [`Image::oci_manifest`]
/// writes and a registry is told it gets.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of the image config: the same JSON docker reads, which is
/// what the OCI config is.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// An uncompressed layer. The layers stay plain tars so that a layer's digest
/// is its `diff_id` and pushing writes the same bytes as the archive holds;
/// gzip would halve the transfer, but a deterministic gzip of a large base
/// costs a compression on every release for bytes the registry then keeps
/// apart from the tars every other writer here makes.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// A release's image, built: each layer in a temporary file of its own and
/// the config in memory. What [`write_docker_archive`] writes, and what a
/// registry is given blob by blob ([`crate::registry`]). The files go when it
/// is dropped.
pub struct Image {
    layers: Vec<Layer>,
    config: Vec<u8>,
    /// `sha256:…` of `config`.
    config_digest: String,
    tag: Option<String>,
}

/// One built layer.
pub struct Layer {
    file: tempfile::NamedTempFile,
    info: LayerInfo,
}

impl Layer {
    pub fn info(&self) -> &LayerInfo {
        &self.info
    }

    /// The layer's bytes from the start, on a handle of their own so that
    /// readers do not share a position.
    pub fn open(&self) -> io::Result<File> {
        self.file.reopen()
    }
}

/// An OCI manifest, the registry's view of an image.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OciManifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: u64,
}

/// Builds the image of `slug` on `base`: both layers, then the config. The
/// slow part of making an image (a base is read, copied and hashed whole), so
/// an async caller runs it on a blocking thread.
pub fn build(slug: &Path, base: Option<&Path>, spec: &ImageSpec) -> Result<Image, ClusterError> {
    validate_app_name(&spec.app)?;
    if spec.version == 0 {
        return Err(ClusterError::Invalid(
            "release versions start at v1".to_string(),
        ));
    }
    let mut layers: Vec<(Layer, String)> = Vec::new();
    if let Some(base) = base {
        let (file, info) = base_layer(base)?;
        layers.push((
            Layer { file, info },
            "crew: the base root filesystem".to_string(),
        ));
    }
    let (file, info) = slug_layer(slug)?;
    layers.push((
        Layer { file, info },
        format!("crew: the slug of {} v{} at /app", spec.app, spec.version),
    ));

    let mut env = vec![format!("HOME=/app"), format!("PATH={PATH}")];
    env.extend(
        spec.env
            .iter()
            .filter(|(k, _)| k.as_str() != "HOME" && k.as_str() != "PATH")
            .map(|(k, v)| format!("{k}={v}")),
    );
    env.sort();
    let config = ImageConfig {
        architecture: spec.architecture.clone(),
        os: "linux",
        created: EPOCH,
        config: RunConfig {
            env,
            working_dir: "/app",
            user: format!("{DYNO_UID}:{DYNO_UID}"),
            labels: BTreeMap::from([
                ("heroku.app".to_string(), spec.app.clone()),
                ("heroku.release".to_string(), format!("v{}", spec.version)),
            ]),
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|(l, _)| l.info.digest.clone()).collect(),
        },
        history: layers
            .iter()
            .map(|(_, why)| History {
                created: EPOCH,
                created_by: why.clone(),
            })
            .collect(),
    };
    let config = serde_json::to_vec(&to_value(&config, "the image config")?)
        .map_err(ClusterError::json("the image config"))?;
    Ok(Image {
        config_digest: format!("sha256:{}", sha256_hex(&config)),
        config,
        layers: layers.into_iter().map(|(l, _)| l).collect(),
        tag: spec.tag.clone(),
    })
}

impl Image {
    /// The layers, base first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The config's JSON, as pushed and as the archive holds it.
    pub fn config(&self) -> &[u8] {
        &self.config
    }

    /// `sha256:…` of the config, which is the image's id in docker.
    pub fn config_digest(&self) -> &str {
        &self.config_digest
    }

    pub fn info(&self) -> ImageInfo {
        ImageInfo {
            id: self.config_digest.clone(),
            layers: self.layers.iter().map(|l| l.info.clone()).collect(),
            tag: self.tag.clone(),
        }
    }

    /// The OCI image manifest of these blobs, with canonical (sorted) keys so
    /// that the same image always has the same manifest digest.
    pub fn oci_manifest(&self) -> Result<Vec<u8>, ClusterError> {
        let manifest = OciManifest {
            schema_version: 2,
            media_type: OCI_MANIFEST,
            config: Descriptor {
                media_type: OCI_CONFIG,
                digest: self.config_digest.clone(),
                size: self.config.len() as u64,
            },
            layers: self
                .layers
                .iter()
                .map(|l| Descriptor {
                    media_type: OCI_LAYER,
                    digest: l.info.digest.clone(),
                    size: l.info.size,
                })
                .collect(),
        };
        serde_json::to_vec(&to_value(&manifest, "the OCI manifest")?)
            .map_err(ClusterError::json("the OCI manifest"))
    }

    /// Writes the image to `out` as a docker-archive.
    pub fn write_docker_archive(&self, out: impl Write) -> Result<ImageInfo, ClusterError> {
        let config_hex = hex_of(&self.config_digest);
        let manifest = vec![ArchiveManifest {
            config: blob_path(config_hex),
            repo_tags: self.tag.iter().cloned().collect(),
            layers: self
                .layers
                .iter()
                .map(|l| blob_path(hex_of(&l.info.digest)))
                .collect(),
        }];
        let manifest_bytes = serde_json::to_vec(&to_value(&manifest, "manifest.json")?)
            .map_err(ClusterError::json("manifest.json"))?;

        let writing = || ClusterError::io("writing the image");
        let mut archive = tar::Builder::new(out);
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut header = fixed_header(tar::EntryType::Directory, 0o755, 0);
            archive
                .append_data(&mut header, dir, io::empty())
                .map_err(writing())?;
        }
        let mut written = std::collections::BTreeSet::new();
        for layer in &self.layers {
            // The same layer twice (a base that is the slug) is one blob.
            if !written.insert(layer.info.digest.clone()) {
                continue;
            }
            let mut handle = layer
                .open()
                .map_err(ClusterError::io("reading a layer back"))?;
            let mut header = fixed_header(tar::EntryType::Regular, 0o644, layer.info.size);
            archive
                .append_data(
                    &mut header,
                    blob_path(hex_of(&layer.info.digest)),
                    &mut handle,
                )
                .map_err(writing())?;
        }
        let mut header = fixed_header(tar::EntryType::Regular, 0o644, self.config.len() as u64);
        archive
            .append_data(&mut header, blob_path(config_hex), self.config.as_slice())
            .map_err(writing())?;
        let mut header = fixed_header(tar::EntryType::Regular, 0o644, manifest_bytes.len() as u64);
        archive
            .append_data(&mut header, "manifest.json", manifest_bytes.as_slice())
            .map_err(writing())?;
        archive
            .into_inner()
            .and_then(|mut out| out.flush())
            .map_err(writing())?;
        Ok(self.info())
    }
}

fn blob_path(hex: &str) -> String {
    format!("blobs/sha256/{hex}")
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A header with everything that would vary between machines fixed: the
/// epoch, root or the dyno user, no user or group names.
fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn finish(mut self) -> io::Result<LayerInfo> {
        self.inner.flush()?;
        Ok(LayerInfo {
            digest: format!("sha256:{}", hex(&self.hasher.finalize())),
            size: self.size,
        })
    }
}

/// `path` opened for reading, gunzipped when it starts with gzip's magic.
fn open_maybe_gzip(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut reader = BufReader::new(File::open(path)?);
    let gzipped = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzipped {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    })
}

fn temp_layer() -> Result<tempfile::NamedTempFile, ClusterError> {
    tempfile::Builder::new()
        .prefix(".crew-layer-")
        .tempfile()
        .map_err(ClusterError::io("making a temporary file for a layer"))
}

/// The base, copied byte for byte (gunzipped), then read once as a tar so that
/// a file that is not one fails here and not in `docker load`.
fn base_layer(path: &Path) -> Result<(tempfile::NamedTempFile, LayerInfo), ClusterError> {
    let bad = |reason: String| ClusterError::Base {
        path: path.display().to_string(),
        reason,
    };
    let mut file = temp_layer()?;
    let mut reader = open_maybe_gzip(path).map_err(|e| bad(e.to_string()))?;
    let mut hashing = Hashing::new(BufWriter::new(file.as_file_mut()));
    io::copy(&mut reader, &mut hashing).map_err(|e| bad(format!("reading it: {e}")))?;
    let info = hashing
        .finish()
        .map_err(ClusterError::io("writing the base layer"))?;
    file.as_file_mut()
        .seek(SeekFrom::Start(0))
        .map_err(ClusterError::io("reading the base layer back"))?;
    let mut entries = 0usize;
    let mut archive = tar::Archive::new(file.as_file_mut());
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        entry.map_err(|e| bad(format!("not a tar archive: {e}")))?;
        entries += 1;
    }
    if entries == 0 {
        return Err(bad("the archive is empty".to_string()));
    }
    Ok((file, info))
}

/// One slug entry, its data spooled to a temporary file.
struct Staged {
    path: PathBuf,
    kind: Kind,
    mode: u32,
    offset: u64,
    len: u64,
}

enum Kind {
    File,
    Dir,
    Symlink(PathBuf),
    /// To another entry's path, relative to the slug's root.
    Hardlink(PathBuf),
}

/// The slug as a layer at `/app`, sorted and owned by the dyno user.
fn slug_layer(path: &Path) -> Result<(tempfile::NamedTempFile, LayerInfo), ClusterError> {
    let bad = |reason: String| ClusterError::Slug {
        path: path.display().to_string(),
        reason,
    };
    let reader = open_maybe_gzip(path).map_err(|e| bad(e.to_string()))?;
    let mut archive = tar::Archive::new(reader);
    let mut spool = tempfile::tempfile().map_err(ClusterError::io("spooling the slug"))?;
    let mut spooled = 0u64;
    let mut staged: Vec<Staged> = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("not a tar archive: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| bad(format!("an entry's path: {e}")))?
            .into_owned();
        let Some(rel) = relative(&raw) else {
            return Err(bad(format!(
                "entry {} leaves the app's directory",
                raw.display()
            )));
        };
        let header = entry.header();
        let mode = header.mode().map_err(|e| bad(e.to_string()))? & 0o7777;
        let link = || -> Result<PathBuf, ClusterError> {
            entry
                .link_name()
                .map_err(|e| bad(e.to_string()))?
                .map(|l| l.into_owned())
                .ok_or_else(|| bad(format!("link {} has no target", raw.display())))
        };
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink(link()?),
            tar::EntryType::Link => {
                let target = link()?;
                let Some(target) = relative(&target) else {
                    return Err(bad(format!(
                        "hard link {} points outside the app",
                        raw.display()
                    )));
                };
                Kind::Hardlink(target)
            }
            // Devices, FIFOs and the like have no place in an app.
            _ => continue,
        };
        let (offset, len) = if matches!(kind, Kind::File) {
            let len = io::copy(&mut entry, &mut spool)
                .map_err(|e| bad(format!("reading {}: {e}", raw.display())))?;
            spooled += len;
            (spooled - len, len)
        } else {
            (0, 0)
        };
        if rel.as_os_str().is_empty() {
            // The root itself: /app is made below with fixed attributes.
            continue;
        }
        staged.push(Staged {
            path: rel,
            kind,
            mode,
            offset,
            len,
        });
    }
    // A Heroku slug keeps everything under ./app/.
    let heroku = !staged.is_empty()
        && staged
            .iter()
            .all(|s| s.path.components().next() == Some(Component::Normal("app".as_ref())));
    if heroku {
        for entry in &mut staged {
            entry.path = entry
                .path
                .strip_prefix("app")
                .map(Path::to_path_buf)
                .unwrap_or_default();
            if let Kind::Hardlink(target) = &mut entry.kind {
                *target = target
                    .strip_prefix("app")
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|_| target.clone());
            }
        }
        staged.retain(|s| !s.path.as_os_str().is_empty());
    }
    // Sorted by path; of two entries for one path the later wins, as when a
    // tar is extracted.
    let mut indexed: Vec<(usize, Staged)> = staged.into_iter().enumerate().collect();
    indexed.sort_by(|a, b| a.1.path.cmp(&b.1.path).then(b.0.cmp(&a.0)));
    indexed.dedup_by(|later, earlier| later.1.path == earlier.1.path);
    let mut staged: Vec<Staged> = indexed.into_iter().map(|(_, s)| s).collect();
    // Every parent directory has an entry of its own.
    let mut dirs = std::collections::BTreeSet::new();
    for entry in &staged {
        if matches!(entry.kind, Kind::Dir) {
            dirs.insert(entry.path.clone());
        }
    }
    let mut missing = Vec::new();
    for entry in &staged {
        for parent in entry.path.ancestors().skip(1) {
            if parent.as_os_str().is_empty() {
                break;
            }
            if dirs.insert(parent.to_path_buf()) {
                missing.push(Staged {
                    path: parent.to_path_buf(),
                    kind: Kind::Dir,
                    mode: 0o755,
                    offset: 0,
                    len: 0,
                });
            }
        }
    }
    staged.extend(missing);
    staged.sort_by(|a, b| a.path.cmp(&b.path));

    let mut file = temp_layer()?;
    let mut layer = tar::Builder::new(Hashing::new(BufWriter::new(file.as_file_mut())));
    let writing = || ClusterError::io("writing the slug layer");
    let mut header = dyno_header(tar::EntryType::Directory, 0o755, 0);
    layer
        .append_data(&mut header, "app/", io::empty())
        .map_err(writing())?;
    let files: BTreeMap<PathBuf, (u64, u64)> = staged
        .iter()
        .filter(|s| matches!(s.kind, Kind::File))
        .map(|s| (s.path.clone(), (s.offset, s.len)))
        .collect();
    for entry in &staged {
        let name = Path::new("app").join(&entry.path);
        match &entry.kind {
            Kind::Dir => {
                let mut header = dyno_header(tar::EntryType::Directory, entry.mode, 0);
                layer
                    .append_data(&mut header, &name, io::empty())
                    .map_err(writing())?;
            }
            Kind::Symlink(target) => {
                let mut header = dyno_header(tar::EntryType::Symlink, entry.mode, 0);
                layer
                    .append_link(&mut header, &name, target)
                    .map_err(writing())?;
            }
            Kind::File | Kind::Hardlink(_) => {
                let (offset, len) = match &entry.kind {
                    Kind::Hardlink(target) => *files.get(target).ok_or_else(|| {
                        bad(format!(
                            "hard link {} points at {}, which is not a file in the slug",
                            entry.path.display(),
                            target.display()
                        ))
                    })?,
                    _ => (entry.offset, entry.len),
                };
                spool
                    .seek(SeekFrom::Start(offset))
                    .map_err(ClusterError::io("reading the spooled slug"))?;
                let mut header = dyno_header(tar::EntryType::Regular, entry.mode, len);
                layer
                    .append_data(&mut header, &name, (&mut spool).take(len))
                    .map_err(writing())?;
            }
        }
    }
    let info = layer
        .into_inner()
        .and_then(Hashing::finish)
        .map_err(writing())?;
    Ok((file, info))
}

/// A slug entry's header: the dyno user's, at the epoch.
fn dyno_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = fixed_header(kind, mode, size);
    header.set_uid(u64::from(DYNO_UID));
    header.set_gid(u64::from(DYNO_UID));
    header
}

/// A slug path relative to its root, without `.` components; none when it is
/// absolute or climbs out with `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}
