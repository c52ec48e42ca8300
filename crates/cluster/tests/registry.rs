//! The registry client against a real registry (Debian's `docker-registry`):
//! an image pushed is read back through the API with an independent client,
//! every blob checked against its digest; a second push sends no blob; a
//! refusal names the registry, the step and what the registry said.

use std::io::{Read, Write};
use std::path::Path;

use crew_cluster::image::{self, ImageSpec, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use crew_cluster::registry::{Registry, RegistryError, sha256_digest};
use crew_testkit::registry::{self as support, TestRegistry};
use serde_json::Value;

/// A tar.gz slug: a Procfile and `web.py` saying `text`.
fn slug(path: &Path, text: &str) {
    let file = std::fs::File::create(path).expect("creating the slug");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, body) in [
        ("Procfile", "web: python3 web.py\n".to_string()),
        ("web.py", format!("print({text:?})\n")),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(body.len() as u64);
        tar.append_data(&mut header, name, body.as_bytes())
            .expect("adding to the slug");
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|mut f| f.flush())
        .expect("finishing the slug");
}

/// A stand-in base root filesystem: a plain tar with `/bin/sh`.
fn base(path: &Path) {
    let file = std::fs::File::create(path).expect("creating the base");
    let mut tar = tar::Builder::new(file);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    tar.append_data(&mut header, "bin/", std::io::empty())
        .expect("adding to the base");
    let sh = b"#!not really a shell\n";
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o755);
    header.set_size(sh.len() as u64);
    tar.append_data(&mut header, "bin/sh", &sh[..])
        .expect("adding to the base");
    tar.into_inner()
        .and_then(|mut f| f.flush())
        .expect("finishing the base");
}

fn build(dir: &Path, version: u32, text: &str) -> image::Image {
    let slug_path = dir.join(format!("slug-{version}.tgz"));
    slug(&slug_path, text);
    let base_path = dir.join("base.tar");
    if !base_path.exists() {
        base(&base_path);
    }
    image::build(
        &slug_path,
        Some(&base_path),
        &ImageSpec::new("shop", version),
    )
    .expect("an image")
}

fn started() -> Option<TestRegistry> {
    started_with("")
}

fn started_with(storage: &str) -> Option<TestRegistry> {
    match TestRegistry::start_with(storage).expect("the registry starts") {
        Ok(registry) => Some(registry),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Reads `crew/shop:TAG` back through the API and checks it against the
/// image: the manifest is the bytes pushed under the digest the push
/// reported, each blob's bytes hash to its digest and have its size, the
/// config's `diff_ids` are the layers, and the slug layer holds the app.
fn read_back(registry: &TestRegistry, tag: &str, image: &image::Image, digest: &str) {
    let reply = support::get(
        registry.addr,
        &format!("/v2/crew/shop/manifests/{tag}"),
        &[("Accept", OCI_MANIFEST)],
    )
    .expect("GET the manifest");
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(reply.header("docker-content-digest"), Some(digest));
    assert_eq!(sha256_digest(&reply.body), digest);
    assert_eq!(
        reply.body,
        image.oci_manifest().expect("the manifest"),
        "the registry keeps the manifest's bytes as pushed"
    );
    let manifest: Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);

    let blob = |digest: &str, size: &Value| -> Vec<u8> {
        let reply = support::get(registry.addr, &format!("/v2/crew/shop/blobs/{digest}"), &[])
            .expect("GET a blob");
        assert_eq!(reply.status, 200, "blob {digest}");
        assert_eq!(sha256_digest(&reply.body), digest, "blob {digest}'s bytes");
        assert_eq!(
            Some(reply.body.len() as u64),
            size.as_u64(),
            "blob {digest}'s size"
        );
        reply.body
    };
    let config = blob(
        manifest["config"]["digest"].as_str().expect("a digest"),
        &manifest["config"]["size"],
    );
    assert_eq!(config, image.config());
    let config: Value = serde_json::from_slice(&config).expect("the config is JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2, "the base and the slug");
    let mut diff_ids = Vec::new();
    let mut last = Vec::new();
    for layer in layers {
        assert_eq!(layer["mediaType"], OCI_LAYER);
        let digest = layer["digest"].as_str().expect("a digest");
        last = blob(digest, &layer["size"]);
        diff_ids.push(Value::from(digest));
    }
    assert_eq!(
        config["rootfs"]["diff_ids"],
        Value::Array(diff_ids),
        "uncompressed layers: each digest is its diff_id"
    );
    let mut archive = tar::Archive::new(last.as_slice());
    let mut procfile = None;
    for entry in archive.entries().expect("the slug layer is a tar") {
        let mut entry = entry.expect("an entry");
        if entry.path().expect("a path").as_os_str() == "app/Procfile" {
            assert_eq!(entry.header().uid().expect("uid"), 65534);
            let mut text = String::new();
            entry.read_to_string(&mut text).expect("read");
            procfile = Some(text);
        }
    }
    assert_eq!(procfile.as_deref(), Some("web: python3 web.py\n"));
}

#[tokio::test]
async fn a_pushed_image_reads_back_blob_for_blob_and_a_second_push_sends_none() {
    let Some(running) = started() else { return };
    let dir = tempfile::tempdir().expect("a temp dir");
    let image = build(dir.path(), 3, "v3");
    let registry = Registry::new(&running.name()).expect("a registry");
    assert_eq!(
        registry
            .manifest_digest("crew/shop", "v3")
            .await
            .expect("a HEAD"),
        None,
        "nothing there yet"
    );

    let pushed = registry
        .push("crew/shop", "v3", &image)
        .await
        .unwrap_or_else(|e| panic!("push: {e}\n{}", running.log()));
    let mut blobs: Vec<String> = image
        .layers()
        .iter()
        .map(|l| l.info().digest.clone())
        .collect();
    blobs.push(image.config_digest().to_string());
    assert_eq!(pushed.uploaded, blobs, "every blob, layers first");
    assert!(pushed.skipped.is_empty());
    read_back(&running, "v3", &image, &pushed.digest);
    assert_eq!(
        registry
            .manifest_digest("crew/shop", "v3")
            .await
            .expect("a HEAD"),
        Some(pushed.digest.clone())
    );

    // The same image again: every blob is there, only the manifest is put.
    let again = registry
        .push("crew/shop", "v3", &image)
        .await
        .expect("a second push");
    assert_eq!(again.digest, pushed.digest);
    assert!(again.uploaded.is_empty(), "{again:?}");
    assert_eq!(again.skipped, blobs);

    // The next release shares the base: only its slug and config go up.
    let next = build(dir.path(), 4, "v4");
    let pushed4 = registry
        .push("crew/shop", "v4", &next)
        .await
        .expect("pushing v4");
    assert_eq!(pushed4.skipped, vec![blobs[0].clone()], "the base");
    assert_eq!(
        pushed4.uploaded,
        vec![
            next.layers()[1].info().digest.clone(),
            next.config_digest().to_string()
        ]
    );
    read_back(&running, "v4", &next, &pushed4.digest);
    read_back(&running, "v3", &image, &pushed.digest);
}

#[tokio::test]
async fn a_refusal_names_the_registry_the_step_and_what_it_said() {
    let Some(running) = started() else { return };
    let dir = tempfile::tempdir().expect("a temp dir");
    let image = build(dir.path(), 3, "v3");
    let registry = Registry::new(&running.name()).expect("a registry");
    // A repository name the distribution API does not allow: the registry
    // refuses the upload.
    let err = registry
        .push("crew/Shop", "v3", &image)
        .await
        .expect_err("an invalid repository");
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Refused { .. }), "{err:?}");
    assert!(
        text.starts_with(&format!("registry {}: ", running.name())),
        "{text}"
    );
    assert!(text.contains("crew/Shop"), "{text}");

    // A registry in read-only maintenance: its status and its body (plain
    // text here) are in the message.
    let Some(readonly) = started_with("  maintenance:\n    readonly:\n      enabled: true\n")
    else {
        return;
    };
    let err = Registry::new(&readonly.name())
        .expect("a registry")
        .push("crew/shop", "v3", &image)
        .await
        .expect_err("a read-only registry");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "registry {}: starting the upload of blob sha256:",
            readonly.name()
        )),
        "{text}"
    );
    assert!(
        text.ends_with("405 Method Not Allowed: Method not allowed"),
        "the registry's own words: {text}"
    );
}

/// Nothing listening: the transport's reason, not a panic. Needs no
/// registry, so it runs everywhere.
#[tokio::test]
async fn an_unreachable_registry_is_an_error_that_says_so() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let image = build(dir.path(), 3, "v3");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        listener.local_addr().expect("an address").port()
    };
    let nowhere = Registry::new(&format!("127.0.0.1:{port}")).expect("a registry");
    let err = nowhere
        .push("crew/shop", "v3", &image)
        .await
        .expect_err("nothing listens");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "registry 127.0.0.1:{port}: looking for blob sha256:"
        )),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
}
