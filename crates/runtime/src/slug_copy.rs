//! A dyno's own copy of its slug, for servers that cannot isolate dynos: without
//! an overlay, copying is how a dyno starts from a pristine slug and how its
//! writes stay its own.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::DynoSpec;

/// A copied slug and the spec that runs in it; the copy goes when this drops.
pub(crate) struct SlugCopy {
    pub spec: DynoSpec,
    dir: PathBuf,
}

impl SlugCopy {
    /// Copies `spec.cwd` into a new directory under `copies` and points the spec
    /// (its directory and any environment value naming the slug) at the copy.
    pub(crate) fn make(copies: &Path, spec: &DynoSpec) -> io::Result<SlugCopy> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let safe: String = spec
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir = copies.join(format!("{safe}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(copies)?;
        let copied = copy_tree(&spec.cwd, &dir);
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(io::Error::new(
                e.kind(),
                format!("copying the slug to {}: {e}", dir.display()),
            ));
        }
        let mut spec = spec.clone();
        if let (Some(from), Some(to)) = (spec.cwd.to_str(), dir.to_str()) {
            let from = from.trim_end_matches('/').to_string();
            for (_, value) in &mut spec.env {
                *value = rebase(value, &from, to);
            }
        }
        spec.cwd = dir.clone();
        Ok(SlugCopy { spec, dir })
    }
}

impl Drop for SlugCopy {
    fn drop(&mut self) {
        // A large slug takes a while to delete; the dyno's task need not wait.
        let dir = std::mem::take(&mut self.dir);
        std::thread::spawn(move || {
            let _ = std::fs::remove_dir_all(dir);
        });
    }
}

/// Copies a directory tree: files with their permission bits, symlinks as
/// symlinks. Special files are skipped.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir(to)?;
    std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Replaces the path `from` with `to` where it stands as a whole path (or the
/// start of one) in a value, such as `PATH=/srv/slug/bin:/usr/bin`.
pub(crate) fn rebase(value: &str, from: &str, to: &str) -> String {
    if from.is_empty() {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut at_start = true;
    while let Some(i) = rest.find(from) {
        let before_ok = if i == 0 {
            at_start
        } else {
            rest.as_bytes().get(i - 1) == Some(&b':')
        };
        let after = rest.as_bytes().get(i + from.len());
        let after_ok = matches!(after, None | Some(b'/') | Some(b':'));
        out.push_str(&rest[..i]);
        out.push_str(if before_ok && after_ok { to } else { from });
        rest = &rest[i + from.len()..];
        at_start = false;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rebased_only_where_whole() {
        let slug = "/srv/crew/slugs/v3";
        assert_eq!(rebase("/srv/crew/slugs/v3", slug, "/app"), "/app");
        assert_eq!(
            rebase(
                "/srv/crew/slugs/v3/bin:/usr/bin:/srv/crew/slugs/v3/.heroku/bin",
                slug,
                "/app"
            ),
            "/app/bin:/usr/bin:/app/.heroku/bin"
        );
        assert_eq!(
            rebase("/srv/crew/slugs/v30", slug, "/app"),
            "/srv/crew/slugs/v30"
        );
        assert_eq!(
            rebase("x/srv/crew/slugs/v3", slug, "/app"),
            "x/srv/crew/slugs/v3"
        );
        assert_eq!(rebase("plain", slug, "/app"), "plain");
    }

    #[test]
    fn each_dyno_gets_its_own_copy_and_it_goes_away() {
        let root = tempfile::tempdir().unwrap();
        let slug = root.path().join("slug");
        std::fs::create_dir_all(slug.join("bin")).unwrap();
        std::fs::write(slug.join("bin/app"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("bin/app", slug.join("link")).unwrap();
        let spec = DynoSpec {
            name: "web.1".into(),
            env: vec![("PATH".into(), format!("{}/bin:/usr/bin", slug.display()))],
            cwd: slug.clone(),
            ..DynoSpec::default()
        };
        let copies = root.path().join("copies");
        let a = SlugCopy::make(&copies, &spec).unwrap();
        let b = SlugCopy::make(&copies, &spec).unwrap();
        assert_ne!(a.spec.cwd, b.spec.cwd);
        assert!(a.spec.cwd.join("bin/app").is_file());
        assert_eq!(
            std::fs::read_link(a.spec.cwd.join("link")).unwrap(),
            Path::new("bin/app")
        );
        assert_eq!(
            a.spec.env[0].1,
            format!("{}/bin:/usr/bin", a.spec.cwd.display())
        );
        std::fs::write(a.spec.cwd.join("written"), "x").unwrap();
        assert!(!b.spec.cwd.join("written").exists());
        assert!(!slug.join("written").exists());
        drop((a, b));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_dir(&copies).unwrap().next().is_some() {
            assert!(std::time::Instant::now() < deadline, "copies left behind");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
