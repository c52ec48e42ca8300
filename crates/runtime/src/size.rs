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

#[cfg(test)]
mod tests {
    use super::*;

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
