//! Inputs and observers for a placement under test, with no Docker in them:
//! a release of a web and a worker type, a busybox root filesystem for
//! images, a test slug, and a collector of the log events an app sends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crew_engine::{ReleaseSpec, ReleaseType};
use crew_logs::LogEvent;
use tokio::sync::mpsc;

/// Release `version` of `app` from `slug` (its directory and archive): a
/// `web` and a `worker` type running the given commands, with
/// `RELEASE_NAME=vN` and the stack's `PATH`.
pub fn web_and_worker_release(
    app: &str,
    version: u32,
    web: &str,
    worker: &str,
    slug: &(PathBuf, PathBuf),
) -> ReleaseSpec {
    let process = |name: &str, command: &str| ReleaseType {
        name: name.into(),
        command: command.into(),
        size: None,
    };
    ReleaseSpec {
        app: app.to_string(),
        version,
        types: vec![process("web", web), process("worker", worker)],
        env: vec![
            ("RELEASE_NAME".into(), format!("v{version}")),
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ],
        slug_archive: slug.1.clone(),
        slug_dir: slug.0.clone(),
        command_prefix: None,
    }
}

/// The busybox binary to put in images; it must be busybox-static's, since
/// the images have no libc.
pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A root filesystem tar with busybox as `/bin/sh` and the applets the test
/// app uses, `/tmp` for anyone, and `nobody` in `/etc/passwd`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let path = dir.join("rootfs.tar");
    let file = std::fs::File::create(&path).expect("rootfs.tar");
    let mut tar = tar::Builder::new(file);
    let dir_entry = |tar: &mut tar::Builder<std::fs::File>, name: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        tar.append_data(&mut h, name, std::io::empty())
            .expect("dir");
    };
    for (name, mode) in [("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777)] {
        dir_entry(&mut tar, name, mode);
    }
    let busybox = busybox().expect("busybox");
    let bytes = std::fs::read(&busybox).expect("busybox binary");
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(bytes.len() as u64);
    tar.append_data(&mut h, "bin/busybox", &bytes[..])
        .expect("busybox");
    for applet in [
        "sh", "sleep", "nc", "cat", "echo", "printf", "env", "ls", "head", "id", "true", "false",
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .expect("applet");
    }
    let passwd =
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n";
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(passwd.len() as u64);
    tar.append_data(&mut h, "etc/passwd", &passwd[..])
        .expect("passwd");
    tar.finish().expect("rootfs.tar");
    path
}

/// A slug: a directory (for the local placement) and its `.tar.gz` (for
/// images).
pub fn slug(dir: &Path) -> (PathBuf, PathBuf) {
    let slug_dir = dir.join("slug");
    std::fs::create_dir_all(&slug_dir).expect("slug dir");
    std::fs::write(slug_dir.join("README"), "the conformance suite's app\n").expect("slug file");
    let archive = dir.join("slug.tar.gz");
    let file = std::fs::File::create(&archive).expect("slug.tar.gz");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(".", &slug_dir).expect("slug tar");
    let mut gz = tar.into_inner().expect("slug tar");
    gz.flush().expect("flush");
    gz.finish().expect("slug gz");
    (slug_dir, archive)
}

/// Every log event an app sent, kept for the checks.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<LogEvent>>>);

impl Logs {
    pub fn collect(mut rx: mpsc::Receiver<LogEvent>) -> Logs {
        let logs = Logs::default();
        let keep = logs.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                keep.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
            }
        });
        logs
    }

    /// `(dyno, text)` of every output line and platform line.
    pub fn lines(&self) -> Vec<(String, String, bool)> {
        let events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for e in events.iter() {
            match e {
                LogEvent::Output { dyno, lines, .. } => {
                    for l in String::from_utf8_lossy(lines).lines() {
                        out.push((dyno.to_string(), l.to_string(), false));
                    }
                }
                LogEvent::Platform { dyno, text, .. } => {
                    out.push((dyno.to_string(), text.clone(), true));
                }
                _ => {}
            }
        }
        out
    }

    /// How many events came so far (a mark for [`Logs::lines_since`]).
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lines from index `from` on (in events).
    pub fn lines_since(&self, from: usize) -> Vec<(String, String, bool)> {
        let events: Vec<LogEvent> =
            self.0.lock().unwrap_or_else(|p| p.into_inner())[from..].to_vec();
        Logs(Arc::new(Mutex::new(events))).lines()
    }
}
