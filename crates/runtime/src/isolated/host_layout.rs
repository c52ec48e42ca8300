//! The [`Layout`] of this host, looked at once when a runtime is made: which
//! stack paths exist (and which are symlinks), which extra files a dyno must
//! see (a symlinked `resolv.conf`'s target, or crew's own with a dyno
//! network), the host's device numbers, and which `/proc` entries to wall.
//!
//! Apart from `plan`, which turns a layout into steps without touching the
//! filesystem, because this is the part that reads the host.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::config::IsolatedConfig;
use super::kernel;
use super::plan::{DEVICES, Device, Entry, Layout, Walls};

/// The stack and devices as this host has them.
pub(super) fn layout(config: &IsolatedConfig) -> Layout {
    let mut stack = Vec::new();
    for path in &config.stack {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let (Ok(target), Some(name)) = (std::fs::read_link(path), path.file_name()) {
                stack.push(Entry::Link {
                    name: PathBuf::from(name),
                    target,
                });
            }
        } else {
            stack.push(Entry::Bind {
                path: path.clone(),
                dir: meta.is_dir(),
            });
        }
    }
    let bound: Vec<PathBuf> = stack
        .iter()
        .filter_map(|e| match e {
            Entry::Bind { path, .. } => Some(path.clone()),
            Entry::Link { .. } | Entry::Replace { .. } => None,
        })
        .collect();
    let visible = |p: &Path| bound.iter().any(|b| p.starts_with(b));
    let mut extra = Vec::new();
    let resolv = Path::new("/etc/resolv.conf");
    let mut wanted: Vec<PathBuf> = config.extra_read_only.clone();
    let resolv_target = std::fs::symlink_metadata(resolv)
        .is_ok_and(|m| m.file_type().is_symlink())
        .then(|| std::fs::canonicalize(resolv).ok())
        .flatten();
    match (&config.network, resolv_target) {
        // A dyno with its own network cannot use a loopback resolver of the
        // host's: it sees crew's `resolv.conf` where its `/etc/resolv.conf`
        // leads.
        (Some(network), target) => {
            let path = target.unwrap_or_else(|| resolv.to_path_buf());
            extra.push(Entry::Replace {
                source: network.config().resolv_conf.clone(),
                exists: visible(&path),
                path,
            });
        }
        (None, Some(target)) => wanted.push(target),
        (None, None) => {}
    }
    for path in wanted {
        if !path.is_absolute() || visible(&path) {
            continue;
        }
        if let Ok(meta) = std::fs::metadata(&path) {
            extra.push(Entry::Bind {
                dir: meta.is_dir(),
                path,
            });
        }
    }
    let devices = DEVICES
        .iter()
        .filter_map(|name| {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let meta = std::fs::metadata(Path::new("/dev").join(name)).ok()?;
            meta.file_type().is_char_device().then(|| Device {
                name: name.to_string(),
                rdev: meta.rdev(),
            })
        })
        .collect();
    let walls = Walls {
        masked_proc: kernel::MASKED_PROC
            .iter()
            .filter_map(|name| Some((name.to_string(), kernel::proc_entry(name)?)))
            .collect(),
        read_only_proc: kernel::READ_ONLY_PROC
            .iter()
            .filter(|name| kernel::proc_entry(name).is_some())
            .map(|name| name.to_string())
            .collect(),
        seccomp: Arc::default(),
    };
    Layout {
        root: config.root_dir.clone(),
        stack,
        extra,
        devices,
        walls,
        cgroup_files: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_copies_symlinks_and_skips_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let usr = dir.path().join("usr");
        std::fs::create_dir(&usr).unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.path().join("bin")).unwrap();
        let config = IsolatedConfig {
            stack: vec![usr.clone(), dir.path().join("bin"), dir.path().join("nope")],
            ..IsolatedConfig::default()
        };
        let layout = layout(&config);
        assert_eq!(
            layout.stack,
            [
                Entry::Bind {
                    path: usr,
                    dir: true
                },
                Entry::Link {
                    name: "bin".into(),
                    target: "usr/bin".into()
                }
            ]
        );
    }
}
