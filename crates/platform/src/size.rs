//! Dyno sizes by name, checked against what this host can give dynos. Its
//! own module because both the formation (`ps:scale web=2:standard-2x`) and
//! one-offs (`run --size`) take a size, and neither imports the other.

use crew_runtime::DynoSize;

use crate::error::PlatformError;

/// A documented dyno size by name that fits in `room` bytes of memory (what
/// this host can give dynos, when they run here), or an error listing the
/// sizes or naming both numbers.
pub(crate) fn size_named(name: &str, room: Option<u64>) -> Result<DynoSize, PlatformError> {
    let size = DynoSize::parse(name).map_err(|e| PlatformError::Invalid(e.to_string()))?;
    match room {
        Some(room) if size.memory_bytes > room => Err(PlatformError::Invalid(format!(
            "dyno size {} needs {} of memory, and this server can give dynos at most {}",
            size.name,
            human_bytes(size.memory_bytes),
            human_bytes(room)
        ))),
        _ => Ok(size),
    }
}

/// `126 GiB`, `2.5 GiB`, `512 MiB`.
fn human_bytes(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    if bytes >= GIB {
        let tenths = bytes * 10 / GIB;
        if tenths.is_multiple_of(10) {
            format!("{} GiB", tenths / 10)
        } else {
            format!("{}.{} GiB", tenths / 10, tenths % 10)
        }
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn a_size_larger_than_the_host_is_refused_with_both_numbers() {
        const GIB: u64 = 1 << 30;
        let e = size_named("performance-2xl", Some(22 * GIB)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "dyno size performance-2xl needs 126 GiB of memory, and this server can give \
             dynos at most 22 GiB"
        );
        assert!(size_named("performance-m", Some(2 * GIB)).is_err());
        assert_eq!(
            size_named("performance-m", Some(22 * GIB)).unwrap().name,
            "performance-m"
        );
        assert!(
            size_named("performance-2xl", None).is_ok(),
            "elsewhere, no host to ask"
        );
        assert_eq!(human_bytes(5 * GIB / 2), "2.5 GiB");
    }
}
