//! The setup of one dyno as data: every step its init takes, in order, computed
//! in the parent (where allocating is fine) and only walked in the child.
//!
//! This decides which steps a dyno (or a sandboxed program) gets from the
//! host's [`Layout`]; what a step is and how the init walks it are
//! `crate::init::step`, which both sides of the `clone` share.

use std::ffi::{CString, NulError};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use seccompiler::BpfProgram;

use crate::init::step::{EXEC_STEP, Step, fd};
use crate::init::sys::{Errno, ms};

/// Where the dyno sees its slug.
pub(crate) const APP: &str = "/app";

/// A host path the dyno sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Bind-mounted read-only at the same path (a directory or a file).
    Bind { path: PathBuf, dir: bool },
    /// A symlink at the root, such as `bin -> usr/bin`.
    Link { name: PathBuf, target: PathBuf },
    /// The host file `source` bound read-only at `path` instead of the host's
    /// own (crew's `resolv.conf`). `exists`: `path` is inside a bound
    /// directory, so there is a file to bind onto already.
    Replace {
        source: PathBuf,
        path: PathBuf,
        exists: bool,
    },
}

/// What every dyno of one runtime shares: computed once.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// An empty host directory the new root is mounted on (in the dyno's own
    /// mount namespace, so every dyno can use the same one).
    pub root: PathBuf,
    /// `/usr`, `/etc`, and the `/bin`-style symlinks or directories.
    pub stack: Vec<Entry>,
    /// Further read-only paths (files or directories), such as the target of a
    /// symlinked `/etc/resolv.conf`; their parents are made as needed.
    pub extra: Vec<Entry>,
    /// Host character devices made again in `/dev` (`null`, `zero`, ...).
    pub devices: Vec<Device>,
    /// The kernel surface: masked and read-only `/proc` entries, seccomp.
    pub walls: Walls,
    /// How many cgroup files a dyno joins through: none on cgroup v2, where
    /// the init is cloned into its group, the memory and pids hierarchies'
    /// on v1.
    pub cgroup_files: usize,
}

/// What keeps a dyno (or a sandboxed program) from reaching around its
/// namespaces (see `kernel`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Walls {
    /// `/proc` entries to hide, with whether each is a directory.
    pub masked_proc: Vec<(String, bool)>,
    /// `/proc` entries to make read-only.
    pub read_only_proc: Vec<String>,
    /// Installed last before the program's exec; empty means none (tests only).
    pub seccomp: Arc<Vec<BpfProgram>>,
}

/// Who runs behind the walls, and how: what differs between one dyno (or
/// sandboxed program) and the next, besides what it sees at `/app`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setup<'a> {
    pub hostname: &'a str,
    /// The app's user and group.
    pub uid: u32,
    pub gid: u32,
    /// A terminal of this many columns and rows, from the dyno's devpts.
    pub terminal: Option<(u16, u16)>,
}

/// A character device of the host's `/dev`: its name and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    pub name: String,
    pub rdev: u64,
}

/// The device nodes a dyno gets, when the host has them.
pub(crate) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The name the init shows in `ps`.
pub(crate) const INIT_NAME: &str = "crew-init";

fn c(path: impl AsRef<Path>) -> Result<CString, NulError> {
    CString::new(path.as_ref().as_os_str().as_bytes())
}

/// A host directory a sandboxed program sees at a fixed place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxBind {
    /// The directory on the host, bound as it is: no part of this path may be
    /// something the sandboxed program could have changed.
    pub host: PathBuf,
    /// Where the program sees it: an absolute path such as `/app`.
    pub inside: PathBuf,
    /// Read-write (still `nosuid,nodev`), or read-only.
    pub writable: bool,
}

/// What a process sees at `/app` (and beside it).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Workspace<'a> {
    /// A dyno: `/app` is an overlay over the slug, and writes vanish at exit.
    Slug(&'a Path),
    /// A sandboxed program (a build step): host directories bound at fixed
    /// places, in this order. A bind at `/tmp` takes the place of the fresh
    /// tmpfs; without a bind at `/app`, `/app` is an empty read-only directory.
    Binds(&'a [SandboxBind]),
}

/// Every step of a dyno's setup, from the first syscall to `chdir /app`.
pub(crate) fn build(
    layout: &Layout,
    setup: &Setup<'_>,
    slug: &Path,
) -> Result<Vec<Step>, NulError> {
    build_for(layout, setup, Workspace::Slug(slug))
}

/// Every step of the setup of a dyno or of a sandboxed program: the same walls
/// (namespaces, stack, /proc, /dev, user), only what is at `/app` differs.
pub(crate) fn build_for(
    layout: &Layout,
    setup: &Setup<'_>,
    workspace: Workspace<'_>,
) -> Result<Vec<Step>, NulError> {
    let Setup {
        hostname,
        uid,
        gid,
        terminal,
    } = *setup;
    let root = &layout.root;
    let at = |p: &str| c(root.join(p.trim_start_matches('/')));
    let mut steps = vec![Step::DeathSignal];
    if layout.cgroup_files > 0 {
        steps.push(Step::JoinCgroup(fd::CGROUP));
    }
    if layout.cgroup_files > 1 {
        steps.push(Step::JoinCgroup(fd::CGROUP_PIDS));
    }
    steps.extend([
        Step::Close(fd::CGROUP),
        Step::Close(fd::CGROUP_PIDS),
        Step::NewCgroupNamespace,
        Step::Name(CString::new(INIT_NAME)?),
        Step::PrivateMounts,
    ]);
    if let Workspace::Slug(slug) = workspace {
        steps.push(Step::OpenDir {
            path: c(slug)?,
            fd: fd::SLUG,
        });
    }
    steps.extend([Step::Mount {
        source: c("crew-root")?,
        target: c(root)?,
        fstype: c("tmpfs")?,
        flags: ms::NOSUID | ms::NODEV,
        data: c("mode=0755")?,
    }]);

    // The stack: the host's /usr, /etc ... read-only.
    let mut made: Vec<PathBuf> = Vec::new();
    for entry in layout.stack.iter().chain(&layout.extra) {
        match entry {
            Entry::Link { name, target } => steps.push(Step::Symlink {
                target: c(target)?,
                link: c(root.join(name))?,
            }),
            Entry::Replace {
                source,
                path,
                exists,
            } => {
                let rel = path.strip_prefix("/").unwrap_or(path);
                let target = c(root.join(rel))?;
                if !exists {
                    push_dirs(&mut steps, &mut made, root, parent_of(rel))?;
                    steps.push(Step::CreateFile(target.clone()));
                    made.push(rel.to_path_buf());
                }
                steps.push(Step::Bind {
                    source: c(source)?,
                    target: target.clone(),
                });
                steps.push(Step::Remount {
                    target,
                    flags: ms::RDONLY | ms::NOSUID | ms::NODEV,
                });
            }
            Entry::Bind { path, dir } => {
                let rel = path.strip_prefix("/").unwrap_or(path);
                // Parents of deeper paths (`/run/systemd/resolve/...`).
                push_dirs(&mut steps, &mut made, root, parent_of(rel))?;
                let target = c(root.join(rel))?;
                steps.push(if *dir {
                    Step::Mkdir {
                        path: target.clone(),
                        mode: 0o755,
                    }
                } else {
                    Step::CreateFile(target.clone())
                });
                made.push(rel.to_path_buf());
                steps.push(Step::Bind {
                    source: c(path)?,
                    target: target.clone(),
                });
                steps.push(Step::Remount {
                    target,
                    flags: ms::RDONLY | ms::NOSUID | ms::NODEV,
                });
            }
        }
    }

    let binds = match workspace {
        Workspace::Slug(_) => &[][..],
        Workspace::Binds(binds) => {
            bound_dirs(&mut steps, root, binds)?;
            binds
        }
    };
    // /app: an overlay over the slug, its writable layer on a tmpfs mounted at the
    // same place and hidden under it, so nothing of it is reachable but /app.
    // The overlay itself is mounted just before the pivot, by paths relative to
    // the new root: its options show in /proc/self/mounts and must name nothing
    // of the host.
    let app = at(APP)?;
    let upper = at("/app/upper")?;
    let overlay_layers = [
        Step::Mkdir {
            path: app.clone(),
            mode: 0o755,
        },
        Step::Mount {
            source: c("crew-app")?,
            target: app,
            fstype: c("tmpfs")?,
            flags: ms::NOSUID | ms::NODEV,
            data: c("mode=0755")?,
        },
        Step::Mkdir {
            path: upper.clone(),
            mode: 0o755,
        },
        Step::Chown {
            path: upper,
            uid,
            gid,
        },
        Step::Mkdir {
            path: at("/app/work")?,
            mode: 0o700,
        },
    ];
    if let Workspace::Slug(_) = workspace {
        steps.extend(overlay_layers);
    }

    // /tmp and /proc.
    let tmp = [
        Step::Mkdir {
            path: at("/tmp")?,
            mode: 0o755,
        },
        Step::Mount {
            source: c("tmpfs")?,
            target: at("/tmp")?,
            fstype: c("tmpfs")?,
            flags: ms::NOSUID | ms::NODEV,
            data: c("mode=1777")?,
        },
    ];
    if !binds.iter().any(|b| b.inside == Path::new("/tmp")) {
        steps.extend(tmp);
    }
    steps.extend([
        Step::Mkdir {
            path: at("/proc")?,
            mode: 0o555,
        },
        Step::Mount {
            source: c("proc")?,
            target: at("/proc")?,
            fstype: c("proc")?,
            flags: ms::NOSUID | ms::NODEV | ms::NOEXEC,
            data: c("")?,
        },
    ]);
    // What of /proc tells about the host or reaches into it: hidden, or
    // read-only (as Docker does).
    for (name, dir) in &layout.walls.masked_proc {
        let target = at(&format!("/proc/{name}"))?;
        steps.push(if *dir {
            Step::Mount {
                source: c("tmpfs")?,
                target,
                fstype: c("tmpfs")?,
                flags: ms::RDONLY | ms::NOSUID | ms::NODEV | ms::NOEXEC,
                data: c("size=0")?,
            }
        } else {
            Step::Bind {
                source: c("/dev/null")?,
                target,
            }
        });
    }
    for name in &layout.walls.read_only_proc {
        let target = at(&format!("/proc/{name}"))?;
        steps.push(Step::Bind {
            source: target.clone(),
            target: target.clone(),
        });
        steps.push(Step::Remount {
            target,
            flags: ms::RDONLY | ms::NOSUID | ms::NODEV | ms::NOEXEC,
        });
    }

    // A minimal /dev.
    steps.extend([
        Step::Mkdir {
            path: at("/dev")?,
            mode: 0o755,
        },
        Step::Mount {
            source: c("tmpfs")?,
            target: at("/dev")?,
            fstype: c("tmpfs")?,
            flags: ms::NOSUID | ms::NOEXEC,
            data: c("mode=0755,size=64k")?,
        },
    ]);
    // Device nodes of their own rather than binds of the host's: no mount
    // each (every mount is copied and torn down with the dyno's namespace),
    // and the same device all the same. The dyno cannot make others: it has
    // no CAP_MKNOD.
    for device in &layout.devices {
        steps.push(Step::Device {
            path: at(&format!("/dev/{}", device.name))?,
            rdev: device.rdev,
        });
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink {
            target: c(target)?,
            link: at(&format!("/dev/{name}"))?,
        });
    }
    steps.extend([
        Step::Mkdir {
            path: at("/dev/pts")?,
            mode: 0o755,
        },
        Step::Mount {
            source: c("devpts")?,
            target: at("/dev/pts")?,
            fstype: c("devpts")?,
            flags: ms::NOSUID | ms::NOEXEC,
            data: c("newinstance,ptmxmode=0666,mode=0620")?,
        },
        Step::Symlink {
            target: c("pts/ptmx")?,
            link: at("/dev/ptmx")?,
        },
        Step::Mkdir {
            path: at("/dev/shm")?,
            mode: 0o755,
        },
        Step::Mount {
            source: c("shm")?,
            target: at("/dev/shm")?,
            fstype: c("tmpfs")?,
            flags: ms::NOSUID | ms::NODEV,
            data: c("mode=1777")?,
        },
    ]);

    // The overlay (see above), from inside the new root by relative paths, then
    // the switch to it. (After the pivot would be too late: the slug's mount
    // goes with the old root, and overlay refuses a detached layer.)
    steps.extend([
        Step::Hostname(CString::new(hostname)?),
        Step::Chdir(c(root)?),
    ]);
    let overlay = [
        Step::Mount {
            source: c("overlay")?,
            target: c(APP.trim_start_matches('/'))?,
            fstype: c("overlay")?,
            flags: ms::NOSUID | ms::NODEV,
            data: CString::new(format!(
                "lowerdir=/proc/self/fd/{},upperdir=app/upper,workdir=app/work",
                fd::SLUG
            ))?,
        },
        Step::Close(fd::SLUG),
    ];
    if let Workspace::Slug(_) = workspace {
        steps.extend(overlay);
    }
    steps.extend([Step::PivotRoot, Step::DetachOldRoot, Step::Chdir(c("/")?)]);
    if let Some((cols, rows)) = terminal {
        steps.push(Step::Terminal {
            ptmx: c("/dev/pts/ptmx")?,
            uid,
            gid,
            cols,
            rows,
        });
    }
    // The drop to the app's user, with nothing of root's left: no capability
    // can come back (bounding set, no_new_privs), and the kernel answers only
    // what a container's would (seccomp).
    steps.extend([
        Step::Remount {
            target: c("/")?,
            flags: ms::RDONLY | ms::NOSUID | ms::NODEV,
        },
        Step::DropBoundingSet,
        Step::DropGroups,
        Step::SetGid(gid),
        Step::SetUid(uid),
        Step::ClearCapabilities,
        Step::NoNewPrivs,
    ]);
    if !layout.walls.seccomp.is_empty() {
        steps.push(Step::Seccomp(layout.walls.seccomp.clone()));
    }
    steps.extend([
        // A change of user clears the parent-death signal: arm it again, then
        // make sure the parent did not die before it was armed.
        Step::DeathSignal,
        Step::CheckParent,
        Step::Chdir(c(APP)?),
    ]);
    Ok(steps)
}

/// A sandbox's directories, each bound at its place under `root` (parents made
/// as needed): writable ones `nosuid,nodev`, the others read-only too. `/app`
/// exists either way, since the program starts there.
fn bound_dirs(steps: &mut Vec<Step>, root: &Path, binds: &[SandboxBind]) -> Result<(), NulError> {
    let mut made: Vec<PathBuf> = Vec::new();
    let inside = |p: &'_ Path| p.strip_prefix("/").unwrap_or(p).to_path_buf();
    for bind in binds {
        push_dirs(steps, &mut made, root, &inside(&bind.inside))?;
        let target = c(root.join(inside(&bind.inside)))?;
        steps.push(Step::Bind {
            source: c(&bind.host)?,
            target: target.clone(),
        });
        let read_only = if bind.writable { 0 } else { ms::RDONLY };
        steps.push(Step::Remount {
            target,
            flags: read_only | ms::NOSUID | ms::NODEV,
        });
    }
    push_dirs(steps, &mut made, root, &inside(Path::new(APP)))
}

/// The directory `rel` (relative to the new root) is in; empty at the top.
fn parent_of(rel: &Path) -> &Path {
    rel.parent().unwrap_or(Path::new(""))
}

/// Steps that make `dir` under `root`, and each directory on the way to it,
/// that are not in `made` yet (which they are then added to).
fn push_dirs(
    steps: &mut Vec<Step>,
    made: &mut Vec<PathBuf>,
    root: &Path,
    dir: &Path,
) -> Result<(), NulError> {
    let mut path = PathBuf::new();
    for part in dir.components() {
        path.push(part);
        if !made.contains(&path) {
            steps.push(Step::Mkdir {
                path: c(root.join(&path))?,
                mode: 0o755,
            });
            made.push(path.clone());
        }
    }
    Ok(())
}

/// The step a setup record names, for the parent's error message.
pub(crate) fn describe(steps: &[Step], index: u32, errno: Errno) -> String {
    let err = errno.io_error();
    match usize::try_from(index).ok().and_then(|i| steps.get(i)) {
        Some(step) => format!("could not {step}: {err}"),
        None if index == EXEC_STEP => format!("could not exec /bin/sh: {err}"),
        None => format!("could not start the app's process: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(hostname: &str, uid: u32, gid: u32) -> Setup<'_> {
        Setup {
            hostname,
            uid,
            gid,
            terminal: None,
        }
    }

    #[test]
    fn extra_paths_get_their_parents_once() {
        let layout = Layout {
            root: "/r".into(),
            stack: vec![],
            extra: vec![
                Entry::Bind {
                    path: "/run/systemd/resolve/stub-resolv.conf".into(),
                    dir: false,
                },
                Entry::Bind {
                    path: "/run/systemd/other".into(),
                    dir: true,
                },
            ],
            devices: vec![],
            walls: Walls::default(),
            cgroup_files: 2,
        };
        let steps = build(&layout, &setup("web.1", 1, 1), Path::new("/slug")).unwrap();
        let mkdirs: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Mkdir { path, .. } => Some(path.to_string_lossy().into_owned()),
                _ => None,
            })
            .take(4)
            .collect();
        assert_eq!(
            mkdirs,
            [
                "/r/run",
                "/r/run/systemd",
                "/r/run/systemd/resolve",
                "/r/run/systemd/other"
            ]
        );
        assert!(steps.contains(&Step::CreateFile(
            CString::new("/r/run/systemd/resolve/stub-resolv.conf").unwrap()
        )));
    }

    #[test]
    fn a_sandbox_sees_its_binds_instead_of_a_slug() {
        let layout = Layout {
            root: "/r".into(),
            stack: vec![],
            extra: vec![],
            devices: vec![],
            walls: Walls::default(),
            cgroup_files: 2,
        };
        let bind = |host: &str, inside: &str, writable| SandboxBind {
            host: host.into(),
            inside: inside.into(),
            writable,
        };
        let binds = [
            bind("/scratch/app", "/app", true),
            bind("/data/buildpacks/python", "/buildpack", false),
            bind("/scratch/tmp", "/tmp", true),
        ];
        let steps = build_for(&layout, &setup("build", 7, 8), Workspace::Binds(&binds)).unwrap();
        let text: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        // No slug, no overlay, no tmpfs at /tmp: the binds, writable or not.
        assert!(!steps.iter().any(|s| matches!(s, Step::OpenDir { .. })));
        assert!(
            !text.iter().any(|t| t.starts_with("mount overlay")),
            "{text:?}"
        );
        assert!(
            !text.iter().any(|t| t == "mount tmpfs on /r/tmp"),
            "{text:?}"
        );
        let cs = |s: &str| CString::new(s).unwrap();
        for (target, flags) in [
            ("/r/app", ms::NOSUID | ms::NODEV),
            ("/r/buildpack", ms::RDONLY | ms::NOSUID | ms::NODEV),
            ("/r/tmp", ms::NOSUID | ms::NODEV),
        ] {
            let remount = Step::Remount {
                target: cs(target),
                flags,
            };
            assert!(steps.contains(&remount), "{target}: {text:?}");
        }
        assert!(steps.contains(&Step::Bind {
            source: cs("/data/buildpacks/python"),
            target: cs("/r/buildpack"),
        }));
        // The same walls as a dyno: its own /proc, the user drop, /app last.
        assert!(
            text.iter().any(|t| t == "mount proc on /r/proc"),
            "{text:?}"
        );
        let tail: Vec<&Step> = steps.iter().rev().take(9).collect();
        assert!(tail.contains(&&Step::SetUid(7)) && tail.contains(&&Step::SetGid(8)));
        assert!(tail.contains(&&Step::NoNewPrivs));
        assert_eq!(steps.last(), Some(&Step::Chdir(cs("/app"))));

        // Without a bind there, /app is an empty directory and /tmp a tmpfs.
        let steps = build_for(
            &layout,
            &setup("build", 7, 8),
            Workspace::Binds(&binds[1..2]),
        )
        .unwrap();
        assert!(steps.contains(&Step::Mkdir {
            path: cs("/r/app"),
            mode: 0o755
        }));
        assert!(
            steps
                .iter()
                .any(|s| s.to_string() == "mount tmpfs on /r/tmp")
        );
    }

    #[test]
    fn a_replaced_file_is_bound_from_crews_copy_read_only() {
        let layout = Layout {
            root: "/r".into(),
            stack: vec![Entry::Bind {
                path: "/etc".into(),
                dir: true,
            }],
            extra: vec![
                Entry::Replace {
                    source: "/data/resolv.conf".into(),
                    path: "/etc/resolv.conf".into(),
                    exists: true,
                },
                Entry::Replace {
                    source: "/data/resolv.conf".into(),
                    path: "/run/systemd/resolve/stub-resolv.conf".into(),
                    exists: false,
                },
            ],
            devices: vec![],
            walls: Walls::default(),
            cgroup_files: 2,
        };
        let steps = build(&layout, &setup("web.1", 1, 1), Path::new("/slug")).unwrap();
        let text: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        let at = |needle: &str| {
            text.iter()
                .position(|t| t == needle)
                .unwrap_or_else(|| panic!("no `{needle}` in {text:#?}"))
        };
        // Over the host's file, after /etc is bound; nothing is made in the
        // read-only /etc.
        assert!(at("bind /etc on /r/etc") < at("bind /data/resolv.conf on /r/etc/resolv.conf"));
        assert!(!text.contains(&"create /r/etc/resolv.conf".to_string()));
        at("make /r/etc/resolv.conf read-only");
        // Where a symlinked one leads, with its parents made first.
        assert!(
            at("make the directory /r/run/systemd/resolve")
                < at("create /r/run/systemd/resolve/stub-resolv.conf")
        );
        at("bind /data/resolv.conf on /r/run/systemd/resolve/stub-resolv.conf");
    }

    #[test]
    fn hostname_with_a_nul_is_refused() {
        let layout = Layout {
            root: "/r".into(),
            stack: vec![],
            extra: vec![],
            devices: vec![],
            walls: Walls::default(),
            cgroup_files: 2,
        };
        assert!(build(&layout, &setup("web\0.1", 1, 1), Path::new("/slug")).is_err());
    }
}
