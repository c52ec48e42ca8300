//! The docker-archive writer, read back: the archive's listing, its JSON, every
//! blob against its digest, the slug layer's entries, and byte-for-byte
//! repeatability.

mod fixture;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use crew_cluster::image::{self, ImageSpec};
use sha2::{Digest, Sha256};

enum Item<'a> {
    Dir(&'a str),
    File(&'a str, u32, &'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// A tar.gz of `items`, in the order given, with the times and owners of
/// whoever built it.
fn slug(path: &Path, items: &[Item]) {
    let file = std::fs::File::create(path).expect("creating the slug");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for item in items {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_uid(1000);
        header.set_gid(1000);
        match item {
            Item::Dir(name) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, name, std::io::empty())
            }
            Item::File(name, mode, text) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(text.len() as u64);
                tar.append_data(&mut header, name, text.as_bytes())
            }
            Item::Symlink(name, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, name, target)
            }
            Item::Hardlink(name, target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o644);
                header.set_size(0);
                tar.append_link(&mut header, name, target)
            }
        }
        .expect("adding to the slug");
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|mut f| f.flush())
        .expect("finishing the slug");
}

const LONG: &str = "node_modules/some-package-with-a-long-name/lib/deeply/nested/directory/structure/that/goes/on/index.js";

/// A crew-style slug (paths relative to the app), deliberately unsorted, with
/// a file whose directory has no entry, a symlink, a hard link and a path
/// longer than a tar header holds.
fn crew_slug(path: &Path) {
    slug(
        path,
        &[
            Item::File("web.py", 0o644, "print('hi')\n"),
            Item::Dir("bin"),
            Item::File("bin/start", 0o755, "#!/bin/sh\nexec python3 web.py\n"),
            Item::File("Procfile", 0o644, "web: bin/start\n"),
            Item::Symlink("current", "web.py"),
            Item::Hardlink("copy.py", "web.py"),
            Item::File("lib/deep/x.txt", 0o600, "x"),
            Item::File(LONG, 0o644, "module.exports = 1;\n"),
        ],
    );
}

/// The same app as Heroku packs it, under `./app/`, in another order.
fn heroku_slug(path: &Path) {
    slug(
        path,
        &[
            Item::Dir("./app/"),
            Item::File("./app/Procfile", 0o644, "web: bin/start\n"),
            Item::Dir("./app/bin"),
            Item::File("./app/bin/start", 0o755, "#!/bin/sh\nexec python3 web.py\n"),
            Item::File("./app/web.py", 0o644, "print('hi')\n"),
            Item::File(&format!("./app/{LONG}"), 0o644, "module.exports = 1;\n"),
            Item::Symlink("./app/current", "web.py"),
            Item::File("./app/lib/deep/x.txt", 0o600, "x"),
            Item::Hardlink("./app/copy.py", "./app/web.py"),
        ],
    );
}

fn spec() -> ImageSpec {
    ImageSpec {
        architecture: "amd64".to_string(),
        ..ImageSpec::new("shop", 3)
    }
}

fn archive(slug: &Path, base: Option<&Path>) -> (Vec<u8>, image::ImageInfo) {
    let mut out = Vec::new();
    let info = image::write_docker_archive(slug, base, &spec(), &mut out).expect("an archive");
    (out, info)
}

/// Every regular file of a tar, by path.
fn files(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut files = BTreeMap::new();
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().expect("a path").display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("reading an entry");
        files.insert(path, data);
    }
    files
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One line per entry of a layer: type, mode, owner, mtime, path, link or size.
fn listing(layer: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(layer);
    let mut lines = Vec::new();
    for entry in archive.entries().expect("a tar") {
        let entry = entry.expect("an entry");
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Regular => '-',
            tar::EntryType::Symlink => 'l',
            _ => '?',
        };
        let tail = match entry.link_name().expect("a link name") {
            Some(target) => format!("-> {}", target.display()),
            None => header.size().expect("a size").to_string(),
        };
        lines.push(format!(
            "{kind} {:o} {}:{} {} {} {tail}",
            header.mode().expect("a mode"),
            header.uid().expect("a uid"),
            header.gid().expect("a gid"),
            header.mtime().expect("an mtime"),
            entry.path().expect("a path").display(),
        ));
    }
    lines
}

#[test]
fn the_archive_reads_back_and_every_digest_matches() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let slug_path = dir.path().join("slug.tgz");
    crew_slug(&slug_path);
    let (bytes, info) = archive(&slug_path, None);

    let mut names = Vec::new();
    let mut outer = tar::Archive::new(bytes.as_slice());
    for entry in outer.entries().expect("a tar") {
        let entry = entry.expect("an entry");
        assert_eq!(entry.header().mtime().ok(), Some(0));
        names.push(entry.path().expect("a path").display().to_string());
    }
    let blobs = files(&bytes);
    let manifest: serde_json::Value =
        serde_json::from_slice(&blobs["manifest.json"]).expect("manifest.json is JSON");
    let config_path = manifest[0]["Config"].as_str().expect("a config path");
    let layer_path = manifest[0]["Layers"][0].as_str().expect("a layer path");
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["crew/shop:v3"]));
    assert_eq!(
        names,
        [
            "blobs/",
            "blobs/sha256/",
            layer_path,
            config_path,
            "manifest.json"
        ]
    );
    for (path, data) in &blobs {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256(data), hex, "{path} is not named by its digest");
        }
    }
    let config: serde_json::Value =
        serde_json::from_slice(&blobs[config_path]).expect("the config is JSON");
    let layer = &blobs[layer_path];
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([format!("sha256:{}", sha256(layer))])
    );
    assert_eq!(info.id, format!("sha256:{}", sha256(&blobs[config_path])));
    assert_eq!(info.layers.len(), 1);
    assert_eq!(info.layers[0].size, layer.len() as u64);
    assert!(config["config"].get("Cmd").is_none());
    assert!(config["config"].get("Entrypoint").is_none());
    fixture::golden("image-config.json", &crew_cluster::render::json(&config));

    assert_eq!(
        listing(layer),
        [
            "d 755 65534:65534 0 app/ 0",
            "- 644 65534:65534 0 app/Procfile 15",
            "d 755 65534:65534 0 app/bin 0",
            "- 755 65534:65534 0 app/bin/start 30",
            "- 644 65534:65534 0 app/copy.py 12",
            "l 777 65534:65534 0 app/current -> web.py",
            "d 755 65534:65534 0 app/lib 0",
            "d 755 65534:65534 0 app/lib/deep 0",
            "- 600 65534:65534 0 app/lib/deep/x.txt 1",
            "d 755 65534:65534 0 app/node_modules 0",
            "d 755 65534:65534 0 app/node_modules/some-package-with-a-long-name 0",
            "d 755 65534:65534 0 app/node_modules/some-package-with-a-long-name/lib 0",
            "d 755 65534:65534 0 app/node_modules/some-package-with-a-long-name/lib/deeply 0",
            "d 755 65534:65534 0 app/node_modules/some-package-with-a-long-name/lib/deeply/nested 0",
            "d 755 65534:65534 0 app/node_modules/some-package-with-a-long-name/lib/deeply/nested/directory 0",
            "d 755 65534:65534 0 app/node_modules/some-package-with-a-long-name/lib/deeply/nested/directory/structure 0",
            "d 755 65534:65534 0 app/node_modules/some-package-with-a-long-name/lib/deeply/nested/directory/structure/that 0",
            "d 755 65534:65534 0 app/node_modules/some-package-with-a-long-name/lib/deeply/nested/directory/structure/that/goes 0",
            "d 755 65534:65534 0 app/node_modules/some-package-with-a-long-name/lib/deeply/nested/directory/structure/that/goes/on 0",
            &format!("- 644 65534:65534 0 app/{LONG} 20"),
            "- 644 65534:65534 0 app/web.py 12",
        ]
    );
    assert_eq!(files(layer)["app/copy.py"], b"print('hi')\n");
}

#[test]
fn the_same_slug_gives_the_same_bytes_in_either_layout() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let crew = dir.path().join("crew.tgz");
    let heroku = dir.path().join("heroku.tgz");
    crew_slug(&crew);
    heroku_slug(&heroku);
    let (first, info) = archive(&crew, None);
    let (again, _) = archive(&crew, None);
    assert!(first == again, "two runs differ");
    let (from_heroku, heroku_info) = archive(&heroku, None);
    assert_eq!(info, heroku_info);
    assert!(first == from_heroku, "the layouts give different images");
}

#[test]
fn a_base_layer_goes_first_and_unchanged() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let slug_path = dir.path().join("slug.tgz");
    crew_slug(&slug_path);
    let base_path = dir.path().join("rootfs.tar");
    let mut base = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o755);
    header.set_size(10);
    base.append_data(&mut header, "bin/sh", &b"#!not-sh\n\n"[..])
        .expect("a base entry");
    let base_bytes = base.into_inner().expect("a base tar");
    std::fs::write(&base_path, &base_bytes).expect("writing the base");

    let (bytes, info) = archive(&slug_path, Some(&base_path));
    assert_eq!(info.layers.len(), 2);
    assert_eq!(
        info.layers[0].digest,
        format!("sha256:{}", sha256(&base_bytes))
    );
    let blobs = files(&bytes);
    let manifest: serde_json::Value =
        serde_json::from_slice(&blobs["manifest.json"]).expect("manifest.json is JSON");
    assert_eq!(
        manifest[0]["Layers"][0],
        format!("blobs/sha256/{}", sha256(&base_bytes))
    );
    // A gzipped base is the same layer.
    let gz_path = dir.path().join("rootfs.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&base_bytes).expect("gzipping");
    std::fs::write(&gz_path, gz.finish().expect("gzipping")).expect("writing");
    let (_, gz_info) = archive(&slug_path, Some(&gz_path));
    assert_eq!(info, gz_info);
}

#[test]
fn bad_slugs_and_bases_are_errors_that_say_why() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let good = dir.path().join("good.tgz");
    crew_slug(&good);
    let not_tar = dir.path().join("junk");
    std::fs::write(&not_tar, vec![b'x'; 2000]).expect("writing junk");
    // The tar crate will not write `..`, so the name goes into the header by hand.
    let escaping = dir.path().join("escaping.tgz");
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(1);
    let name = b"../etc/passwd";
    header.as_gnu_mut().expect("a GNU header").name[..name.len()].copy_from_slice(name);
    header.set_cksum();
    let mut evil = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    evil.append(&header, &b"x"[..]).expect("an entry");
    let evil = evil
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("a tar.gz");
    std::fs::write(&escaping, evil).expect("writing");
    let missing = dir.path().join("missing.tgz");

    let cases: [(&Path, Option<&Path>, &str); 4] = [
        (&not_tar, None, "the slug"),
        (&escaping, None, "leaves the app's directory"),
        (&missing, None, "missing.tgz"),
        (&good, Some(&not_tar), "the base image"),
    ];
    for (slug_path, base, needle) in cases {
        let err = image::write_docker_archive(slug_path, base, &spec(), Vec::new())
            .expect_err("a bad input");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    let mut bad = spec();
    bad.app = "Shop".to_string();
    assert!(image::write_docker_archive(&good, None, &bad, Vec::new()).is_err());
}
