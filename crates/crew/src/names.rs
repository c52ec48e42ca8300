//! App names for `apps:create` without one, Heroku-style:
//! `adjective-noun-1234`. Every word is lowercase ASCII and short enough that
//! the longest name fits the app-name rule (`^[a-z][a-z0-9-]{1,29}$`, no
//! trailing dash); the store refuses a name in use, and the caller draws again.

/// Words a name starts with.
const ADJECTIVES: &[&str] = &[
    "ancient",
    "autumn",
    "blazing",
    "bold",
    "brave",
    "bright",
    "calm",
    "clever",
    "cosmic",
    "crisp",
    "dazzling",
    "eager",
    "evening",
    "fierce",
    "floating",
    "frozen",
    "gentle",
    "glacial",
    "golden",
    "hidden",
    "infinite",
    "jolly",
    "lively",
    "lucky",
    "mighty",
    "misty",
    "morning",
    "nameless",
    "peaceful",
    "polar",
    "quiet",
    "rapid",
    "rocky",
    "secret",
    "shielded",
    "silent",
    "sleepy",
    "smooth",
    "sparkling",
    "stormy",
    "sunny",
    "swift",
    "tranquil",
    "vast",
    "warm",
    "whispering",
    "wild",
    "young",
];

/// Words a name goes on with.
const NOUNS: &[&str] = &[
    "anchor", "atoll", "badlands", "bastion", "bayou", "beach", "brook", "canyon", "cliffs",
    "coast", "cove", "crag", "dawn", "depths", "desert", "dune", "falls", "fjord", "forest",
    "garden", "glade", "gorge", "harbor", "haven", "hollow", "island", "lake", "lowlands",
    "meadow", "mesa", "mountain", "ocean", "peak", "plains", "reef", "refuge", "ridge", "river",
    "sands", "savannah", "shore", "spire", "springs", "summit", "temple", "thicket", "tundra",
    "valley",
];

/// A fresh name from 6 random bytes.
pub fn app_name(random: [u8; 6]) -> String {
    let adjective = ADJECTIVES[usize::from(random[0]) % ADJECTIVES.len()];
    let noun = NOUNS[usize::from(random[1]) % NOUNS.len()];
    let number = u32::from_le_bytes([random[2], random[3], random[4], random[5]]) % 9000 + 1000;
    format!("{adjective}-{noun}-{number}")
}

/// Six bytes from the kernel's random source.
pub fn random() -> std::io::Result<[u8; 6]> {
    let mut bytes = [0u8; 6];
    let mut source = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut source, &mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_name_fits_the_app_name_rule() {
        for adjective in ADJECTIVES {
            for noun in NOUNS {
                let name = format!("{adjective}-{noun}-9999");
                assert!(name.len() <= 30, "{name} is too long");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "{name}"
                );
            }
        }
        let name = app_name([255, 255, 255, 255, 255, 255]);
        let number: u32 = name
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!((1000..=9999).contains(&number), "{name}");
    }
}
