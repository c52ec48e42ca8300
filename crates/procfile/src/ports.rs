//! The local port formula shared by foreman, honcho and friends:
//! `PORT = base + 100 × type_index + (instance − 1)`.
//!
//! Each process type owns a block of [`PORTS_PER_TYPE`] ports, indexed by its
//! position in the Procfile, so a type scaled to zero keeps its block and the
//! other types' ports never move when the formation changes.

pub const DEFAULT_BASE_PORT: u16 = 5000;

/// Ports reserved for each process type.
pub const PORTS_PER_TYPE: u32 = 100;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("instance numbers start at 1, not 0")]
    InstanceZero,
    #[error("base port 0 is not a port (it asks the OS for any free port)")]
    BaseZero,
    #[error(
        "port for instance {instance} of process type #{type_index} is past 65535 (base {base} + 100 × {type_index} + {instance} − 1)"
    )]
    Overflow {
        base: u16,
        type_index: usize,
        instance: u32,
    },
}

/// PORT = base + 100 × type_index + (instance − 1). Instances are 1-based;
/// `type_index` is the 0-based position of the type in the Procfile. Past 100
/// instances a type runs into the next type's block, as in foreman; the last type
/// can grow as far as the port range allows (`scale web=500`).
pub fn port_for(base: u16, type_index: usize, instance: u32) -> Result<u16, PortError> {
    if instance == 0 {
        return Err(PortError::InstanceZero);
    }
    if base == 0 {
        return Err(PortError::BaseZero);
    }
    let overflow = PortError::Overflow {
        base,
        type_index,
        instance,
    };
    // Computed in u64 so that no intermediate can wrap; a usize index that does not
    // even fit u64 is past 65535 all the same.
    let index = u64::try_from(type_index).map_err(|_| overflow.clone())?;
    let port = index
        .checked_mul(u64::from(PORTS_PER_TYPE))
        .and_then(|p| p.checked_add(u64::from(base)))
        .and_then(|p| p.checked_add(u64::from(instance - 1)))
        .ok_or_else(|| overflow.clone())?;
    u16::try_from(port).map_err(|_| overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_table() {
        // (base, type index, instance, port)
        let cases: &[(u16, usize, u32, u16)] = &[
            // research §5 item 4: -m web=2,worker=0,clock=1 with Procfile order web, worker, clock.
            (DEFAULT_BASE_PORT, 0, 1, 5000), // web.1
            (DEFAULT_BASE_PORT, 0, 2, 5001), // web.2
            (DEFAULT_BASE_PORT, 2, 1, 5200), // clock.1: worker at 0 keeps its slot
            // research §5 item 18: scale web=3 from web=1 → web.2, web.3 get 5001, 5002.
            (DEFAULT_BASE_PORT, 0, 3, 5002),
            (DEFAULT_BASE_PORT, 1, 1, 5100),
            (DEFAULT_BASE_PORT, 0, 100, 5099),
            (3000, 1, 4, 3103),
            (1, 0, 1, 1),
            (65535, 0, 1, 65535),
            (65435, 1, 1, 65535),
            (65000, 5, 36, 65535),
        ];
        for (base, index, instance, want) in cases {
            assert_eq!(
                port_for(*base, *index, *instance),
                Ok(*want),
                "base {base}, type {index}, instance {instance}"
            );
        }
    }

    #[test]
    fn error_table() {
        let over = |base, type_index, instance| PortError::Overflow {
            base,
            type_index,
            instance,
        };
        let cases: &[(u16, usize, u32, PortError)] = &[
            (5000, 0, 0, PortError::InstanceZero),
            (0, 0, 1, PortError::BaseZero),
            (5000, 3, u32::MAX, over(5000, 3, u32::MAX)),
            (65535, 0, 2, over(65535, 0, 2)),
            (65436, 1, 1, over(65436, 1, 1)),
            (65000, 5, 37, over(65000, 5, 37)),
            (5000, 606, 1, over(5000, 606, 1)),
            (5000, usize::MAX, 1, over(5000, usize::MAX, 1)),
        ];
        for (base, index, instance, want) in cases {
            assert_eq!(
                port_for(*base, *index, *instance).as_ref(),
                Err(want),
                "base {base}, type {index}, instance {instance}"
            );
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            port_for(65000, 5, 37).unwrap_err().to_string(),
            "port for instance 37 of process type #5 is past 65535 (base 65000 + 100 × 5 + 37 − 1)"
        );
    }
}
