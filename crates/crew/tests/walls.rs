//! The server's walls (issue 14): what a request without the token, a request
//! naming a host path, or a push can reach, and what a push or a killed server
//! leaves behind. Each test is named for the hole it keeps shut.

mod common;
mod platform;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{SOON, Signal, poll_until};
use platform::{DEPLOY, Server, TestServer, have_git, repo};

/// One HTTP/1.1 request to the server's API, with the token or without: the
/// status and the body.
fn request(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let response = server.api_request(method, path, &all, body);
    (response.status, response.body().to_string())
}

fn bearer(server: &Server) -> String {
    format!("Bearer {}", server.token())
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The names in `dir`, or none if it is missing.
fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The children of `pid` that are zombies, with their names.
fn zombie_children(pid: i32) -> Vec<String> {
    names_in(Path::new("/proc"))
        .into_iter()
        .filter_map(|name| {
            let stat = std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid: i32 = fields.next()?.parse().ok()?;
            (ppid == pid && state == "Z").then(|| format!("{name} ({comm})"))
        })
        .collect()
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn routes_that_end_in_log_stream_still_need_the_token() {
    let Some(server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let dir = server.home.path();
    server.ok(dir, &["apps:create", "log-stream"]);
    server.ok(dir, &["apps:create", "demo"]);

    for (method, path) in [
        ("DELETE", "/apps/log-stream?session=x"),
        ("PATCH", "/apps/demo/formation/log-stream?session=x"),
        ("GET", "/apps/demo/formation/log-stream?session=x"),
        ("GET", "/apps/nope/formation/log-stream?session=x"),
        ("DELETE", "/apps/demo/dynos/log-stream?session=x"),
        ("POST", "/apps/demo/log-stream?session=x"),
    ] {
        let (status, body) = request(&server, method, path, &[], r#"{"quantity": 1}"#);
        assert_eq!(status, 401, "{method} {path} without the token: {body}");
    }
    // The app named `log-stream` is still there.
    assert!(server.ok(dir, &["apps"]).contains("log-stream"));
    // The real route, without the token, wants a valid session.
    let (status, body) = request(&server, "GET", "/apps/demo/log-stream?session=x", &[], "");
    assert_eq!(status, 403, "{body}");
}

#[test]
fn a_log_session_url_dies_with_its_app() {
    let Some(server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let dir = server.home.path();
    server.ok(dir, &["apps:create", "demo"]);
    let auth = bearer(&server);
    let (status, body) = request(
        &server,
        "POST",
        "/apps/demo/log-sessions",
        &[("Authorization", &auth)],
        r#"{"lines": 5}"#,
    );
    assert_eq!(status, 201, "{body}");
    let session: serde_json::Value = serde_json::from_str(&body).expect("a log session");
    let url = session["logplex_url"].as_str().expect("a logplex_url");
    let path = url.strip_prefix(&server.url).expect("an absolute URL");
    let (status, body) = request(&server, "GET", path, &[], "");
    assert_eq!(status, 200, "a fresh session reads its app's log: {body}");

    server.ok(dir, &["apps:destroy", "-a", "demo", "--confirm", "demo"]);
    server.ok(dir, &["apps:create", "demo"]);
    let (status, body) = request(&server, "GET", path, &[], "");
    assert_eq!(
        status, 403,
        "a session of the destroyed app read the new one's log: {body}"
    );
}

#[test]
fn a_log_session_url_points_at_the_server_not_at_the_host_header() {
    let Some(server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let dir = server.home.path();
    server.ok(dir, &["apps:create", "demo"]);
    let auth = bearer(&server);
    // A second Host header is refused by HTTP; a proxy or client sends one.
    let address = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    let body = "{}";
    write!(
        stream,
        "POST /apps/demo/log-sessions HTTP/1.1\r\nHost: evil.example\r\n\
         Authorization: {auth}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("sending");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(!response.contains("evil.example"), "{response}");
    assert!(
        response.contains(&format!("\"logplex_url\":\"{}/apps/demo/", server.url)),
        "{response}"
    );
}

#[test]
fn a_build_naming_a_host_directory_is_refused_and_the_directory_survives() {
    let Some(server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let dir = server.home.path();
    server.ok(dir, &["apps:create", "demo"]);
    let victim = tempfile::tempdir().expect("a host directory");
    std::fs::write(victim.path().join("Procfile"), "web: cat /etc/shadow\n").expect("write");
    std::fs::write(victim.path().join("keep"), "precious").expect("write");
    let auth = bearer(&server);
    let victim_path = victim.path().display().to_string();
    for url in [
        format!("file://{victim_path}"),
        victim_path.clone(),
        format!("{}/sources/../../{victim_path}", server.url),
        "https://example.com/source.tgz".to_string(),
    ] {
        let body = serde_json::json!({"source_blob": {"url": url, "version": "x"}}).to_string();
        let (status, text) = request(
            &server,
            "POST",
            "/apps/demo/builds",
            &[("Authorization", &auth)],
            &body,
        );
        assert_eq!(status, 422, "{url}: {text}");
        assert!(text.contains("POST /sources"), "{url}: {text}");
    }
    assert_eq!(
        std::fs::read_to_string(victim.path().join("keep")).expect("the directory survives"),
        "precious"
    );
    let (status, builds) = request(
        &server,
        "GET",
        "/apps/demo/builds",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!((status, builds.trim()), (200, "[]"), "nothing was built");
}

#[test]
fn a_push_with_a_large_file_deploys_and_leaves_no_export() {
    if !have_git() {
        return;
    }
    // Isolation as the host allows: dynos must still run from a private data dir.
    let server = Server::start();
    let app = repo(&server, "web: python3 -m http.server $PORT\n");
    let dir = app.path();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("big.bin"), big).expect("write");
    platform::commit_all(&server, dir, "a large file");
    let text = server.deploy(dir, "demo");
    assert!(text.contains("Released v2"), "{text}");
    server.wait_up(dir, "demo", 1);

    let data = server.data();
    assert!(names_in(&data.join("tmp")).is_empty(), "left in DATA/tmp");
    assert!(
        names_in(&data.join("sources")).is_empty(),
        "left in DATA/sources"
    );
}

#[test]
fn a_push_leaves_no_zombie() {
    let Some(server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let app = repo(&server, "worker: sleep 1000\n");
    let dir = app.path();
    server.deploy(dir, "demo");
    // git's housekeeping after a push ends before the push does; give any
    // process it handed to the server time to exit, then look for zombies.
    let pid = server.pid().expect("the server runs");
    let zombie = poll_until(Duration::from_secs(3), || !zombie_children(pid).is_empty());
    assert!(!zombie, "the push left zombies: {:?}", zombie_children(pid));
}

#[test]
fn app_repositories_check_pushed_objects_also_when_made_by_an_older_crew() {
    let Some(mut server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let dir = server.home.path();
    server.ok(dir, &["apps:create", "demo"]);
    let config = server.data().join("repos/demo.git/config");
    let get = |key: &str| {
        let out = Command::new("git")
            .args(["config", "--file"])
            .arg(&config)
            .arg(key)
            .output()
            .expect("git config");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(get("receive.fsckObjects"), "true");
    assert_eq!(get("transfer.fsckObjects"), "true");

    // An older crew made repositories without them.
    server.kill(Signal::TERM);
    for key in ["receive.fsckObjects", "transfer.fsckObjects"] {
        let status = Command::new("git")
            .args(["config", "--file"])
            .arg(&config)
            .args(["--unset", key])
            .status()
            .expect("git config --unset");
        assert!(status.success());
    }
    server.boot();
    assert_eq!(get("receive.fsckObjects"), "true");
    assert_eq!(get("transfer.fsckObjects"), "true");
}

#[test]
fn a_push_of_a_malformed_tree_is_refused_before_anything_reads_it() {
    let Some(server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let app = repo(&server, "worker: sleep 1000\n");
    let dir = app.path();
    server.ok(dir, &["apps:create", "demo"]);
    // A tree with a working Procfile and a file named `.git`, which git's
    // fsck refuses and a checkout would trip over.
    let git_out = |args: &[&str], input: &str| {
        let mut child = Command::new("git")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("git");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing to git");
        let out = child.wait_with_output().expect("git");
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let blob = git_out(&["hash-object", "-w", "--stdin"], "worker: sleep 1000\n");
    let tree = git_out(
        &["mktree"],
        &format!("100644 blob {blob}\t.git\n100644 blob {blob}\tProcfile\n"),
    );
    let commit = git_out(&["commit-tree", &tree, "-m", "malformed"], "");
    let (ok, text) = server.git(dir, &["push", "crew", &format!("{commit}:refs/heads/main")]);
    assert!(!ok, "a malformed tree was accepted:\n{text}");
    assert!(!text.contains("Released"), "{text}");
    let releases = server.ok(dir, &["releases", "-a", "demo"]);
    assert!(!releases.contains("Deploy"), "{releases}");
}

#[test]
fn the_data_dir_is_private_also_when_made_by_an_older_crew() {
    let Some(mut server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let home = server.home.path().to_path_buf();
    server.ok(&home, &["apps:create", "demo"]);
    let data = server.data();
    let private = |data: &Path| {
        assert_eq!(mode(data), 0o700, "the data dir");
        for file in ["crew.db", "crew.db-wal", "crew.db-shm", "api-token"] {
            let path = data.join(file);
            if path.exists() {
                assert_eq!(mode(&path), 0o600, "{file}");
            }
        }
        assert_eq!(mode(&data.join("repos")), 0o700, "repos");
        assert_eq!(
            mode(&data.join("repos/demo.git/config")),
            0o600,
            "a repo's config"
        );
    };
    private(&data);

    // An older crew left it all readable; a symlink in it points outside.
    server.kill(Signal::TERM);
    let outside = tempfile::tempdir().expect("tempdir");
    let host_file = outside.path().join("host-file");
    std::fs::write(&host_file, "host").expect("write");
    std::fs::set_permissions(&host_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::os::unix::fs::symlink(&host_file, data.join("link")).expect("symlink");
    for (path, m) in [
        (data.clone(), 0o755),
        (data.join("crew.db"), 0o644),
        (data.join("repos"), 0o755),
        (data.join("repos/demo.git/config"), 0o644),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).expect("chmod");
    }
    server.boot();
    private(&data);
    assert_eq!(
        mode(&host_file),
        0o644,
        "followed a symlink out of the data dir"
    );
}

#[test]
fn a_build_cut_off_by_a_killed_server_is_failed_and_its_scratch_dir_removed_at_start() {
    if !have_git() {
        return;
    }
    // A buildpack whose compile takes long enough to kill the server in it,
    // in the one directory the server takes path buildpacks from.
    let buildpacks = tempfile::tempdir().expect("tempdir");
    let buildpack = buildpacks.path().join("slow");
    let bin = buildpack.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let buildpack_dir = buildpacks.path().display().to_string();
    let mut server = Server::start_with(&["--isolation", "off", "--buildpack-dir", &buildpack_dir]);
    for (name, script) in [
        ("detect", "#!/bin/sh\necho slow\n"),
        ("compile", "#!/bin/sh\nsleep 20\n"),
        ("release", "#!/bin/sh\necho '--- {}'\n"),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, script).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let app = repo(&server, "worker: sleep 1000\n");
    let dir = app.path();
    server.ok(dir, &["apps:create", "demo"]);
    server.ok(
        dir,
        &[
            "config:set",
            &format!("BUILDPACK_URL={}", buildpack.display()),
        ],
    );
    let _push = KillOnDrop(
        Command::new("git")
            .args(["push", "crew", "main"])
            .current_dir(dir)
            .env("HOME", server.home.path())
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git push"),
    );
    let data = server.data();
    let auth = bearer(&server);
    let builds = |server: &Server| {
        let (status, body) = request(
            server,
            "GET",
            "/apps/demo/builds",
            &[("Authorization", &auth)],
            "",
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).expect("builds")
    };
    let building = poll_until(DEPLOY, || {
        !names_in(&data.join("tmp")).is_empty()
            && builds(&server)
                .first()
                .is_some_and(|b| b["status"] == "pending")
    });
    assert!(building, "the build never started");

    server.kill(Signal::KILL);
    server.boot();
    let after = builds(&server);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["status"], "failed", "{after:?}");
    assert!(
        poll_until(SOON, || names_in(&data.join("tmp")).is_empty()),
        "left in DATA/tmp: {:?}",
        names_in(&data.join("tmp"))
    );
}

#[test]
fn sources_need_the_token_and_only_take_ids_crew_made() {
    let Some(server) = TestServer::new().flags(&["--isolation", "off"]).start() else {
        return;
    };
    let auth = bearer(&server);
    let (status, body) = request(&server, "POST", "/sources", &[], "{}");
    assert_eq!(status, 401, "{body}");
    let (status, body) = request(
        &server,
        "POST",
        "/sources",
        &[("Authorization", &auth)],
        "{}",
    );
    assert_eq!(status, 201, "{body}");
    let source: serde_json::Value = serde_json::from_str(&body).expect("a source");
    let put_url = source["source_blob"]["put_url"].as_str().expect("put_url");
    let path = put_url
        .strip_prefix(&server.url)
        .expect("the server's own URL");
    let (status, body) = request(&server, "PUT", path, &[], "tarball");
    assert_eq!(status, 401, "a PUT without the token: {body}");

    let outside = tempfile::tempdir().expect("tempdir");
    let target = outside.path().join("target");
    std::fs::write(&target, "host").expect("write");
    let escaped = target.display().to_string().replace('/', "%2F");
    for id in [
        format!("..%2F..%2F..%2F..%2F..%2F..%2F{escaped}"),
        "0123456789abcdef0123456789abcdef".to_string(),
        "not-a-source".to_string(),
    ] {
        let (status, body) = request(
            &server,
            "PUT",
            &format!("/sources/{id}"),
            &[("Authorization", &auth)],
            "overwritten",
        );
        assert!(status == 404 || status == 422, "{id}: {status} {body}");
    }
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "host");
}
