//! Dyno sizes: how much memory and how many processes one dyno may use.
//!
//! The names and memory figures are Heroku's; the process limits follow Heroku's
//! documented per-size process/thread limits.
//!
//! | size               | memory   | processes |
//! |--------------------|----------|-----------|
//! | `eco`              | 512 MiB  | 256       |
//! | `basic`            | 512 MiB  | 256       |
//! | `standard-1x`      | 512 MiB  | 256       |
//! | `standard-2x`      | 1 GiB    | 512       |
//! | `performance-m`    | 2.5 GiB  | 16384     |
//! | `performance-l`    | 14 GiB   | 32768     |
//! | `performance-l-ram`| 30 GiB   | 32768     |
//! | `performance-xl`   | 62 GiB   | 32768     |
//! | `performance-2xl`  | 126 GiB  | 32768     |
//!
//! Names are matched without regard to case, and Heroku's old names `1X`, `2X`,
//! `PX`, `PM` and `PL` are accepted too. The default is `standard-1x`.

use std::fmt;
use std::str::FromStr;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// The documented sizes: name, memory in bytes, process limit.
const SIZES: [(&str, u64, u32); 9] = [
    ("eco", 512 * MIB, 256),
    ("basic", 512 * MIB, 256),
    ("standard-1x", 512 * MIB, 256),
    ("standard-2x", GIB, 512),
    ("performance-m", 2 * GIB + 512 * MIB, 16_384),
    ("performance-l", 14 * GIB, 32_768),
    ("performance-l-ram", 30 * GIB, 32_768),
    ("performance-xl", 62 * GIB, 32_768),
    ("performance-2xl", 126 * GIB, 32_768),
];

/// Heroku's older names for the same sizes.
const ALIASES: [(&str, &str); 5] = [
    ("1x", "standard-1x"),
    ("2x", "standard-2x"),
    ("px", "performance-l"),
    ("pm", "performance-m"),
    ("pl", "performance-l"),
];

/// The limits of one dyno. A memory quota is enforced by the dyno's cgroup
/// (`memory.max` or `memory.limit_in_bytes`), the process limit by `pids.max`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DynoSize {
    /// `standard-1x`, or any name for a custom size.
    pub name: String,
    /// The memory quota, in bytes. Writes to `/app` and `/tmp` count against it,
    /// since both live in memory.
    pub memory_bytes: u64,
    /// How many processes and threads the dyno may have at once, its init included.
    pub pids: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dyno size `{given}` (known sizes: {known})")]
pub struct UnknownSize {
    pub given: String,
    pub known: String,
}

impl DynoSize {
    /// A size by its name (`standard-2x`, `Performance-M`, `2X`).
    pub fn parse(name: &str) -> Result<DynoSize, UnknownSize> {
        let wanted = name.trim().to_ascii_lowercase();
        let canonical = ALIASES
            .iter()
            .find(|(alias, _)| *alias == wanted)
            .map_or(wanted.as_str(), |(_, real)| real);
        SIZES
            .iter()
            .find(|(n, _, _)| *n == canonical)
            .map(|&(n, memory_bytes, pids)| DynoSize {
                name: n.to_string(),
                memory_bytes,
                pids,
            })
            .ok_or_else(|| UnknownSize {
                given: name.to_string(),
                known: SIZES.map(|(n, _, _)| n).join(", "),
            })
    }

    /// Every documented size, smallest first.
    pub fn all() -> Vec<DynoSize> {
        SIZES
            .iter()
            .map(|&(n, memory_bytes, pids)| DynoSize {
                name: n.to_string(),
                memory_bytes,
                pids,
            })
            .collect()
    }

    /// The memory quota in whole MiB, as `ps` and the R14 line show it.
    pub fn memory_mib(&self) -> u64 {
        self.memory_bytes / MIB
    }
}

impl Default for DynoSize {
    /// `standard-1x`: 512 MiB and 256 processes.
    fn default() -> Self {
        DynoSize {
            name: "standard-1x".to_string(),
            memory_bytes: 512 * MIB,
            pids: 256,
        }
    }
}

impl FromStr for DynoSize {
    type Err = UnknownSize;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DynoSize::parse(s)
    }
}

impl fmt::Display for DynoSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The memory this host can give dynos: its memory ([`host_memory`]) less a
/// reserve for crew itself and the system. The parent cgroup of all dynos is
/// capped at this, and a dyno size above it is refused. `None` where the
/// host's memory cannot be read.
pub fn memory_for_dynos() -> Option<u64> {
    host_memory().map(dyno_share)
}

/// The host's memory as crew sees it: `MemTotal` from `/proc/meminfo`, or the
/// memory limit of the cgroup crew runs under when that is lower.
pub fn host_memory() -> Option<u64> {
    let total = meminfo_total(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|own| cgroup_limit(std::path::Path::new("/sys/fs/cgroup"), &own));
    Some(cgroup.map_or(total, |limit| limit.min(total)))
}

/// What is kept back from dynos: an eighth of the host, at least 256 MiB for
/// the server and its builds, at most 2 GiB.
fn dyno_share(host: u64) -> u64 {
    host.saturating_sub((host / 8).clamp(256 * MIB, 2 * GIB))
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let kib = line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?;
        kib.trim().parse::<u64>().ok()?.checked_mul(1024)
    })
}

/// The lowest memory limit on the way from crew's own cgroup (`own`, the text
/// of `/proc/self/cgroup`) up to the root under `root`: v2's `memory.max`,
/// or v1's `memory.limit_in_bytes`.
fn cgroup_limit(root: &std::path::Path, own: &str) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (base, file) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            if let Some(limit) = std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
            {
                lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
            }
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    lowest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_memory_comes_from_meminfo() {
        let meminfo = "MemTotal:       24634876 kB\nMemFree:         1000 kB\n";
        assert_eq!(meminfo_total(meminfo), Some(24_634_876 * 1024));
        assert_eq!(meminfo_total("nothing"), None);
    }

    #[test]
    fn dynos_get_the_host_less_a_reserve() {
        assert_eq!(dyno_share(24 * GIB), 22 * GIB);
        assert_eq!(dyno_share(GIB), GIB - 256 * MIB);
        assert_eq!(dyno_share(8 * GIB), 7 * GIB);
        assert_eq!(dyno_share(100 * MIB), 0);
    }

    #[test]
    fn the_lowest_cgroup_limit_on_the_way_up_counts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("system.slice/crew.service")).unwrap();
        std::fs::write(root.join("system.slice/memory.max"), "8589934592\n").unwrap();
        std::fs::write(root.join("system.slice/crew.service/memory.max"), "max\n").unwrap();
        assert_eq!(
            cgroup_limit(root, "0::/system.slice/crew.service\n"),
            Some(8 * GIB)
        );
        std::fs::create_dir_all(root.join("memory/docker/abc")).unwrap();
        std::fs::write(
            root.join("memory/docker/abc/memory.limit_in_bytes"),
            "2147483648\n",
        )
        .unwrap();
        assert_eq!(
            cgroup_limit(root, "12:pids:/docker/abc\n4:memory:/docker/abc\n"),
            Some(2 * GIB)
        );
        assert_eq!(cgroup_limit(root, "0::/\n"), None);
    }

    #[test]
    fn documented_sizes() {
        let one = DynoSize::parse("standard-1x").unwrap();
        assert_eq!(one.memory_bytes, 512 * 1024 * 1024);
        assert_eq!(one.pids, 256);
        assert_eq!(DynoSize::parse("standard-2x").unwrap().memory_bytes, GIB);
        assert_eq!(
            DynoSize::parse("performance-m").unwrap().memory_bytes,
            5 * GIB / 2
        );
        assert_eq!(
            DynoSize::parse("performance-l").unwrap().memory_bytes,
            14 * GIB
        );
        assert_eq!(DynoSize::default(), one);
    }

    #[test]
    fn names_ignore_case_and_accept_old_names() {
        assert_eq!(DynoSize::parse("Standard-2X").unwrap().name, "standard-2x");
        assert_eq!(DynoSize::parse(" 2x ").unwrap().name, "standard-2x");
        assert_eq!(DynoSize::parse("PM").unwrap().name, "performance-m");
        assert_eq!(
            "performance-l".parse::<DynoSize>().unwrap().to_string(),
            "performance-l"
        );
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = DynoSize::parse("huge").unwrap_err();
        assert!(err.to_string().contains("unknown dyno size `huge`"));
        assert!(err.to_string().contains("standard-1x, standard-2x"));
    }

    #[test]
    fn sizes_grow() {
        let all = DynoSize::all();
        assert_eq!(all.len(), 9);
        assert!(
            all.windows(2)
                .all(|w| w[0].memory_bytes <= w[1].memory_bytes)
        );
    }
}
