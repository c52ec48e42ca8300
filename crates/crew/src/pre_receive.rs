//! `crew __pre-receive APP`: the git hook of a server's repositories, a
//! process of its own that git starts for every push.
//!
//! Separate from `server` because it is not the server: it runs in the hook's
//! environment and reaches the server only through the API, with the URL and
//! token the server put in that environment.

use anyhow::{Context, Result};
use crew_api::types::{BUILD_RESULT_PREFIX, BuildCreate};

/// `crew __pre-receive APP`: git runs this before accepting a push. It uploads
/// a tarball of the pushed commit as a source and asks the server to build and
/// release it, passing the build's output through to the pusher. A failed
/// build rejects the push. Nothing is written to disk here: the server keeps
/// the source in its own data dir and removes it when the build ends.
pub fn run(app: &str) -> Result<u8> {
    use std::io::BufRead;
    let url = std::env::var("CREW_HOOK_URL").context("CREW_HOOK_URL is not set")?;
    let key = std::env::var("CREW_API_KEY").context("CREW_API_KEY is not set")?;
    let mut target = None;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading the pushed refs")?;
        let mut parts = line.split_whitespace();
        let (Some(_old), Some(new), Some(reference)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if reference == "refs/heads/main" || reference == "refs/heads/master" {
            if new.chars().all(|c| c == '0') {
                eprintln!(" !     Deleting {reference} is not allowed: it is what is deployed.");
                return Ok(1);
            }
            target = Some(new.to_string());
        }
    }
    let Some(commit) = target else {
        eprintln!("crew deploys pushes to main or master; other branches are only stored.");
        return Ok(0);
    };
    let tarball = git_archive(&commit)?;
    eprintln!("-----> Building source");
    let client = crew_api::client::Client::new(
        crew_api::client::Endpoint::Tcp(url.trim_start_matches("http://").to_string()),
        Some(key),
    );
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let ok = tokio.block_on(async {
        let source: crew_api::types::SourceInfo = client
            .call(axum::http::Method::POST, "/sources", &serde_json::json!({}))
            .await
            .context("asking the server for a place to upload the source")?;
        client
            .put_bytes(&path_of(&source.source_blob.put_url), tarball)
            .await
            .context("uploading the source")?;
        let request = BuildCreate {
            source_blob: crew_api::types::SourceBlob {
                url: source.source_blob.get_url,
                version: Some(commit),
            },
        };
        let body = serde_json::to_vec(&request)?;
        let mut stream = client
            .stream_post(&format!("/apps/{app}/builds"), body)
            .await
            .context("asking the server to build")?;
        let mut pending = String::new();
        let mut ok = false;
        while let Some(frame) = http_body_util::BodyExt::frame(&mut stream).await {
            let frame = frame.context("reading the build's output")?;
            if let Some(data) = frame.data_ref() {
                pending.push_str(&String::from_utf8_lossy(data));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    let line = line.trim_end_matches('\n');
                    match line.strip_prefix(BUILD_RESULT_PREFIX) {
                        Some(result) => ok = result.starts_with("succeeded"),
                        None => eprintln!("{line}"),
                    }
                }
            }
        }
        anyhow::Ok(ok)
    });
    Ok(if ok? { 0 } else { 1 })
}

/// The path and query of an absolute URL (`http://HOST/sources/ID` →
/// `/sources/ID`); a path as it is.
fn path_of(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map_or("/".to_string(), |at| rest[at..].to_string()),
        None => url.to_string(),
    }
}

/// The tree of `commit` as a tar.gz, from `git archive` in the hook's own
/// environment, which can see the pushed objects before git accepts them.
/// git's output is read to its end before git is waited for: stopping early
/// (at the tar's end-of-archive blocks, before git's padding) would kill git
/// with SIGPIPE and fail the push.
fn git_archive(commit: &str) -> Result<Vec<u8>> {
    let mut child = std::process::Command::new("git")
        .args(["archive", "--format=tar.gz", commit])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let mut stdout = child.stdout.take().context("git archive has no output")?;
    let mut tarball = Vec::new();
    let read = std::io::Read::read_to_end(&mut stdout, &mut tarball);
    let status = child.wait().context("waiting for git archive")?;
    read.context("reading git archive's output")?;
    if !status.success() {
        anyhow::bail!("git archive {commit} failed: {status}");
    }
    Ok(tarball)
}
