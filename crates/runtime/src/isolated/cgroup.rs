//! One cgroup per dyno: memory and process limits, the list of its processes,
//! its memory events, and a way to kill all of it.
//!
//! cgroup v2 is used when `/sys/fs/cgroup/cgroup.controllers` exists; otherwise
//! the v1 `memory` and `pids` hierarchies, wherever `/proc/self/mountinfo` says
//! they are mounted. Dyno cgroups are named `<crew pid>-<n>-<dyno>` under one
//! parent (`crew` by default), so a crew that starts can clear what a crew that
//! died left behind.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::memory::MemoryEvents;
use crate::{DynoSize, Signal, os};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    V2 { root: PathBuf },
    V1 { memory: PathBuf, pids: PathBuf },
}

/// The cgroups of every dyno of one runtime.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    hierarchy: Hierarchy,
    /// The parent group's name (`crew`).
    name: String,
    /// Whether a dyno's init is cloned straight into its group: on v2,
    /// unless `clone3` cannot do it here ([`Cgroups::join_after_clone`]).
    clone_into: bool,
}

impl Cgroups {
    /// Finds the hierarchy to use: v2 at `root` if it is a unified mount, else the
    /// v1 memory and pids mounts listed in `mountinfo`.
    pub(crate) fn detect(root: &Path, mountinfo: &str, name: &str) -> Result<Cgroups, String> {
        if root.join("cgroup.controllers").exists() {
            let controllers = fs::read_to_string(root.join("cgroup.controllers")).map_err(|e| {
                format!(
                    "cannot read {}: {e}",
                    root.join("cgroup.controllers").display()
                )
            })?;
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if !has("memory") || !has("pids") {
                return Err(format!(
                    "cgroup v2 at {} lacks the memory or pids controller (it has: {})",
                    root.display(),
                    controllers.trim()
                ));
            }
            return Ok(Cgroups {
                hierarchy: Hierarchy::V2 {
                    root: root.to_path_buf(),
                },
                name: name.to_string(),
                clone_into: true,
            });
        }
        let memory = v1_mount(mountinfo, "memory");
        let pids = v1_mount(mountinfo, "pids");
        match (memory, pids) {
            (Some(memory), Some(pids)) => Ok(Cgroups {
                hierarchy: Hierarchy::V1 { memory, pids },
                name: name.to_string(),
                clone_into: false,
            }),
            (None, _) => Err("no cgroup v2 and no cgroup v1 memory hierarchy mounted".into()),
            (_, None) => Err("no cgroup v2 and no cgroup v1 pids hierarchy mounted".into()),
        }
    }

    pub(crate) fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// How many files a dyno's init joins its cgroup through (see
    /// [`DynoCgroup::join_files`]): none where it is cloned straight into
    /// its group ([`DynoCgroup::clone_dir`]).
    pub(crate) fn join_file_count(&self) -> usize {
        match self.hierarchy {
            Hierarchy::V2 { .. } if self.clone_into => 0,
            Hierarchy::V2 { .. } => 1,
            Hierarchy::V1 { .. } => 2,
        }
    }

    /// Inits join their group after the clone, through `cgroup.procs`: for
    /// a v2 host where `clone3` cannot start a process in a group (Linux
    /// before 5.7, or a container whose seccomp profile refuses `clone3`).
    pub(crate) fn join_after_clone(&mut self) {
        self.clone_into = false;
    }

    /// The parent directories of every dyno cgroup.
    fn parents(&self) -> Vec<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V2 { root } => vec![root.join(&self.name)],
            Hierarchy::V1 { memory, pids } => vec![memory.join(&self.name), pids.join(&self.name)],
        }
    }

    /// Makes the parent group and, on v2, hands the controllers down to it.
    pub(crate) fn prepare(&self) -> io::Result<()> {
        if let Hierarchy::V2 { root } = &self.hierarchy {
            enable_controllers(root)?;
        }
        for parent in self.parents() {
            match fs::create_dir(&parent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(context(e, &parent, "create")),
            }
        }
        if let Hierarchy::V2 { root } = &self.hierarchy {
            enable_controllers(&root.join(&self.name))?;
        }
        Ok(())
    }

    /// Caps the memory of all dynos together, so that they cannot take the
    /// memory the server and the host need however many there are.
    pub(crate) fn cap_memory(&self, bytes: u64) -> io::Result<()> {
        let file = match &self.hierarchy {
            Hierarchy::V2 { root } => root.join(&self.name).join("memory.max"),
            Hierarchy::V1 { memory, .. } => memory.join(&self.name).join("memory.limit_in_bytes"),
        };
        fs::write(&file, bytes.to_string()).map_err(|e| context(e, &file, "write"))
    }

    /// Removes the groups of crews that are gone, killing anything left in them.
    pub(crate) fn clean_stale(&self, own_pid: u32, alive: impl Fn(u32) -> bool) {
        for parent in self.parents() {
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(owner) = name
                    .to_str()
                    .and_then(|n| n.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                if owner == own_pid || alive(owner) {
                    continue;
                }
                let dir = entry.path();
                for pid in read_procs(&dir) {
                    os::signal_process(pid, Signal::Kill);
                }
                let _ = fs::remove_dir(&dir);
            }
        }
    }

    /// Makes a dyno's group with the limits of `size`.
    pub(crate) fn create(&self, id: &str, size: &DynoSize) -> io::Result<DynoCgroup> {
        let group = match &self.hierarchy {
            Hierarchy::V2 { root } => {
                let dir = root.join(&self.name).join(id);
                DynoCgroup {
                    v2: true,
                    clone_into: self.clone_into,
                    memory: dir.clone(),
                    pids: dir,
                }
            }
            Hierarchy::V1 { memory, pids } => DynoCgroup {
                v2: false,
                clone_into: false,
                memory: memory.join(&self.name).join(id),
                pids: pids.join(&self.name).join(id),
            },
        };
        let made = group.make(size);
        if made.is_err() {
            group.remove();
        }
        made.map(|()| group)
    }
}

/// Writes `+memory +pids` to a v2 group's `cgroup.subtree_control` unless both
/// are already there.
fn enable_controllers(dir: &Path) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&file).unwrap_or_default();
    let has = |c: &str| current.split_whitespace().any(|x| x == c);
    if has("memory") && has("pids") {
        return Ok(());
    }
    fs::write(&file, "+memory +pids").map_err(|e| context(e, &file, "write +memory +pids to"))
}

fn context(e: io::Error, path: &Path, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

/// The mount point of the v1 hierarchy that has `controller`.
fn v1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        if right.next()? != "cgroup" {
            return None;
        }
        let options = right.nth(1)?;
        if !options.split(',').any(|o| o == controller) {
            return None;
        }
        left.split_whitespace()
            .nth(4)
            .map(|p| PathBuf::from(unescape(p)))
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn read_procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`memory.events`, `memory.stat`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// One dyno's group: a single directory on v2, one per hierarchy on v1.
#[derive(Debug)]
pub(crate) struct DynoCgroup {
    v2: bool,
    /// See [`Cgroups`]'s.
    clone_into: bool,
    memory: PathBuf,
    pids: PathBuf,
}

impl DynoCgroup {
    fn make(&self, size: &DynoSize) -> io::Result<()> {
        let write = |file: PathBuf, value: String| {
            fs::write(&file, value).map_err(|e| context(e, &file, "write"))
        };
        // Only there when swap is accounted; without it there is nothing to limit.
        let optional = |file: PathBuf, value: String| match fs::write(&file, value) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(context(e, &file, "write")),
        };
        let memory = size.memory_bytes.to_string();
        if self.v2 {
            fs::create_dir(&self.memory).map_err(|e| context(e, &self.memory, "create"))?;
            write(self.memory.join("memory.max"), memory)?;
            optional(self.memory.join("memory.swap.max"), "0".into())?;
            write(self.pids.join("pids.max"), size.pids.to_string())?;
            // An OOM kill takes the whole dyno, as Heroku's R15 does.
            optional(self.memory.join("memory.oom.group"), "1".into())?;
        } else {
            fs::create_dir(&self.memory).map_err(|e| context(e, &self.memory, "create"))?;
            fs::create_dir(&self.pids).map_err(|e| context(e, &self.pids, "create"))?;
            write(self.memory.join("memory.limit_in_bytes"), memory.clone())?;
            optional(self.memory.join("memory.memsw.limit_in_bytes"), memory)?;
            write(self.pids.join("pids.max"), size.pids.to_string())?;
        }
        Ok(())
    }

    /// Where the group is, for messages and tests.
    pub(crate) fn path(&self) -> &Path {
        &self.memory
    }

    /// On v2 the group's directory, open for a `clone3` straight into it
    /// (`CLONE_INTO_CGROUP`, Linux 5.7): a process that moves in later takes
    /// the kernel's global lock on thread groups for writing, which waits
    /// for an RCU grace period once the lock has been idle a while (see
    /// [`DynoCgroup::join_files`]); a process born in the group does not.
    /// `None` on v1, which has no such clone, and where `clone3` cannot.
    pub(crate) fn clone_dir(&self) -> io::Result<Option<fs::File>> {
        if !self.clone_into {
            return Ok(None);
        }
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.memory)
            .map(Some)
            .map_err(|e| context(e, &self.memory, "open"))
    }

    /// The files through which a process moves itself into the group, open
    /// for writing: it writes `0` (itself) to each. On v1 the `tasks` file
    /// of the memory and of the pids hierarchy, which move one thread: a
    /// dyno's init has one, and a thread that moves itself skips the
    /// kernel's global lock on every thread group, whose taking waits for an
    /// RCU grace period once the lock has been idle a while (10 to 30 ms on
    /// an idle two-core machine, more than the rest of a dyno's start);
    /// kernels from before 2022 take the lock all the same, slowly. On
    /// v2, which has no such file for a move to another domain, the group's
    /// `cgroup.procs`: only `run:inside` joins through it, since an init is
    /// cloned into its group ([`DynoCgroup::clone_dir`]).
    pub(crate) fn join_files(&self) -> io::Result<Vec<fs::File>> {
        let (dirs, name): (&[&PathBuf], &str) = if self.v2 {
            (&[&self.memory], "cgroup.procs")
        } else {
            (&[&self.memory, &self.pids], "tasks")
        };
        dirs.iter()
            .map(|dir| {
                let file = dir.join(name);
                fs::OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .map_err(|e| context(e, &file, "open"))
            })
            .collect()
    }

    /// Every process in the group (host pids).
    pub(crate) fn procs(&self) -> Vec<u32> {
        let mut pids = read_procs(&self.pids);
        if !self.v2 {
            pids.extend(read_procs(&self.memory));
            pids.sort_unstable();
            pids.dedup();
        }
        pids
    }

    /// Just the event counters (limit hits, OOM kills): what a poll reads, so
    /// `memory.stat` is only read when something happened.
    pub(crate) fn counters(&self) -> (u64, u64) {
        let dir = &self.memory;
        if self.v2 {
            let events = fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
            (
                keyed(&events, "max").unwrap_or(0),
                keyed(&events, "oom_kill").unwrap_or(0),
            )
        } else {
            let oom = fs::read_to_string(dir.join("memory.oom_control")).unwrap_or_default();
            (
                read_u64(&dir.join("memory.failcnt")).unwrap_or(0)
                    + read_u64(&dir.join("memory.memsw.failcnt")).unwrap_or(0),
                keyed(&oom, "oom_kill").unwrap_or_else(|| keyed(&oom, "under_oom").unwrap_or(0)),
            )
        }
    }

    pub(crate) fn memory(&self) -> MemoryEvents {
        let dir = &self.memory;
        let stat = fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        if self.v2 {
            let events = fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
            MemoryEvents {
                limit_hits: keyed(&events, "max").unwrap_or(0),
                oom_kills: keyed(&events, "oom_kill").unwrap_or(0),
                usage: keyed(&stat, "anon").unwrap_or(0)
                    + keyed(&stat, "shmem").unwrap_or(0)
                    + read_u64(&dir.join("memory.swap.current")).unwrap_or(0),
                peak: read_u64(&dir.join("memory.peak"))
                    .or_else(|| read_u64(&dir.join("memory.current")))
                    .unwrap_or(0),
            }
        } else {
            let oom = fs::read_to_string(dir.join("memory.oom_control")).unwrap_or_default();
            let stat_of = |key: &str| {
                keyed(&stat, &format!("total_{key}"))
                    .or_else(|| keyed(&stat, key))
                    .unwrap_or(0)
            };
            MemoryEvents {
                limit_hits: read_u64(&dir.join("memory.failcnt")).unwrap_or(0)
                    + read_u64(&dir.join("memory.memsw.failcnt")).unwrap_or(0),
                // Kernels before 4.13 have no counter, only `under_oom`.
                oom_kills: keyed(&oom, "oom_kill")
                    .unwrap_or_else(|| keyed(&oom, "under_oom").unwrap_or(0)),
                usage: stat_of("rss") + stat_of("shmem") + stat_of("swap"),
                peak: read_u64(&dir.join("memory.max_usage_in_bytes")).unwrap_or(0),
            }
        }
    }

    /// Kills every process in the group: `cgroup.kill` on v2, else one by one.
    pub(crate) fn kill(&self) {
        if self.v2 && fs::write(self.memory.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for _ in 0..3 {
            let pids = self.procs();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                os::signal_process(pid, Signal::Kill);
            }
        }
    }

    /// Removes the group's directories; `true` once they are all gone.
    pub(crate) fn remove(&self) -> bool {
        let mut gone = true;
        for dir in [&self.memory, &self.pids] {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => gone = false,
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/mem\\040ory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_hierarchies_come_from_mountinfo() {
        let dir = tempfile::tempdir().unwrap();
        let cg = Cgroups::detect(dir.path(), MOUNTINFO, "crew").unwrap();
        assert_eq!(
            cg.hierarchy(),
            &Hierarchy::V1 {
                memory: "/sys/fs/cgroup/mem ory".into(),
                pids: "/sys/fs/cgroup/pids".into()
            }
        );
        let err = Cgroups::detect(dir.path(), "", "crew").unwrap_err();
        assert!(
            err.contains("no cgroup v2 and no cgroup v1 memory"),
            "{err}"
        );
    }

    #[test]
    fn v2_wins_when_the_root_is_unified() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("cgroup.controllers"),
            "cpu io memory pids\n",
        )
        .unwrap();
        let cg = Cgroups::detect(dir.path(), MOUNTINFO, "crew").unwrap();
        assert_eq!(
            cg.hierarchy(),
            &Hierarchy::V2 {
                root: dir.path().to_path_buf()
            }
        );
        fs::write(dir.path().join("cgroup.controllers"), "cpu io\n").unwrap();
        let err = Cgroups::detect(dir.path(), MOUNTINFO, "crew").unwrap_err();
        assert!(err.contains("lacks the memory or pids controller"), "{err}");
    }

    #[test]
    fn v2_groups_get_limits_and_report_events() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("cgroup.controllers"), "memory pids\n").unwrap();
        let cg = Cgroups::detect(root, "", "crew").unwrap();
        cg.prepare().unwrap();
        assert_eq!(
            fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids"
        );
        assert_eq!(
            fs::read_to_string(root.join("crew/cgroup.subtree_control")).unwrap(),
            "+memory +pids"
        );
        cg.cap_memory(3 << 30).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("crew/memory.max")).unwrap(),
            (3u64 << 30).to_string(),
            "all dynos together stay below the host"
        );
        let size = DynoSize::parse("standard-2x").unwrap();
        let group = cg.create("1-1-web.1", &size).unwrap();
        let d = root.join("crew/1-1-web.1");
        assert_eq!(group.path(), d);
        let read = |f: &str| fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read("memory.max"), (1u64 << 30).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "512");
        assert_eq!(read("memory.oom.group"), "1");
        assert_eq!(group.counters(), (0, 0));
        // The kernel makes the file in a real group.
        fs::write(d.join("cgroup.procs"), "").unwrap();
        let files = group.join_files().unwrap();
        assert_eq!(files.len(), 1);
        assert!(
            group.clone_dir().unwrap().is_some(),
            "v2 inits are cloned into the group"
        );
        assert_eq!(cg.join_file_count(), 0, "and join nothing");
        // Where clone3 cannot, they join through cgroup.procs after all.
        let mut joining = cg.clone();
        joining.join_after_clone();
        assert_eq!(joining.join_file_count(), 1);
        let late = joining.create("1-2-web.2", &size).unwrap();
        assert!(late.clone_dir().unwrap().is_none());
        (&files[0]).write_all(b"4242").unwrap();
        assert_eq!(read("cgroup.procs"), "4242");
        assert_eq!(group.procs(), vec![4242]);

        fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n",
        )
        .unwrap();
        fs::write(d.join("memory.stat"), "anon 100\nfile 5\nshmem 20\n").unwrap();
        fs::write(d.join("memory.peak"), "999\n").unwrap();
        assert_eq!(group.counters(), (7, 1));
        assert_eq!(
            group.memory(),
            MemoryEvents {
                limit_hits: 7,
                oom_kills: 1,
                usage: 120,
                peak: 999
            }
        );
        // A fake tree cannot be rmdir'd while it has files; a real one can.
        assert!(!group.remove());
    }

    #[test]
    fn v1_groups_live_in_both_hierarchies() {
        let dir = tempfile::tempdir().unwrap();
        let mem = dir.path().join("memory");
        let pids = dir.path().join("pids");
        fs::create_dir_all(&mem).unwrap();
        fs::create_dir_all(&pids).unwrap();
        let info = format!(
            "35 31 0:32 / {} rw - cgroup cgroup rw,memory\n39 31 0:36 / {} rw - cgroup cgroup rw,pids\n",
            mem.display(),
            pids.display()
        );
        let cg = Cgroups::detect(&dir.path().join("none"), &info, "crew").unwrap();
        cg.prepare().unwrap();
        let size = DynoSize {
            name: "tiny".into(),
            memory_bytes: 64 << 20,
            pids: 16,
        };
        let group = cg.create("1-2-run.1", &size).unwrap();
        let m = mem.join("crew/1-2-run.1");
        let p = pids.join("crew/1-2-run.1");
        assert_eq!(
            fs::read_to_string(m.join("memory.limit_in_bytes")).unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(fs::read_to_string(p.join("pids.max")).unwrap(), "16");
        fs::write(m.join("tasks"), "").unwrap();
        fs::write(p.join("tasks"), "").unwrap();
        let files = group.join_files().unwrap();
        assert_eq!(files.len(), 2, "memory and pids");
        assert!(
            group.clone_dir().unwrap().is_none(),
            "v1 has no clone into a group"
        );
        assert_eq!(cg.join_file_count(), 2);
        for mut file in files {
            file.write_all(b"77").unwrap();
        }
        assert_eq!(fs::read_to_string(m.join("tasks")).unwrap(), "77");
        assert_eq!(fs::read_to_string(p.join("tasks")).unwrap(), "77");

        fs::write(m.join("memory.failcnt"), "3\n").unwrap();
        fs::write(
            m.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        fs::write(
            m.join("memory.stat"),
            "rss 1\nshmem 1\ntotal_rss 300\ntotal_shmem 50\ntotal_swap 0\n",
        )
        .unwrap();
        fs::write(m.join("memory.max_usage_in_bytes"), "4096\n").unwrap();
        assert_eq!(group.counters(), (3, 2));
        assert_eq!(
            group.memory(),
            MemoryEvents {
                limit_hits: 3,
                oom_kills: 2,
                usage: 350,
                peak: 4096
            }
        );
    }

    #[test]
    fn stale_groups_of_dead_crews_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("cgroup.controllers"), "memory pids\n").unwrap();
        let cg = Cgroups::detect(root, "", "crew").unwrap();
        cg.prepare().unwrap();
        for name in ["10-1-web.1", "20-1-web.1", "30-4-run.2", "other"] {
            fs::create_dir(root.join("crew").join(name)).unwrap();
        }
        cg.clean_stale(10, |pid| pid == 20);
        let mut left: Vec<String> = fs::read_dir(root.join("crew"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["10-1-web.1", "20-1-web.1", "other"]);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/bad\\0"), "/bad\\0");
    }
}
