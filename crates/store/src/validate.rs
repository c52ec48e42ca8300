//! The input rules, in one place so the error messages stay consistent.

use std::collections::BTreeMap;

use crate::StoreError;

/// `^[a-z][a-z0-9-]{0,28}[a-z0-9]$`: the name is a DNS label in
/// `APP.localhost`, so it does not end with `-`.
pub(crate) fn app_name(name: &str) -> Result<(), StoreError> {
    let bytes = name.as_bytes();
    let ok = (2..=30).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`: a name every shell can `export`, since config vars
/// end up in the environment of `sh -c`.
pub(crate) fn config_key(key: &str) -> Result<(), StoreError> {
    let mut bytes = key.bytes();
    let ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "`{key}` is not a valid config var name: use letters, digits and underscores, not starting with a digit"
        )))
    }
}

/// A value can be anything `execve` can pass, which excludes NUL.
pub(crate) fn config(config: &BTreeMap<String, String>) -> Result<(), StoreError> {
    for (key, value) in config {
        config_key(key)?;
        if value.contains('\0') {
            return Err(StoreError::invalid(format!(
                "the value of config var `{key}` contains a NUL byte"
            )));
        }
    }
    Ok(())
}

/// Heroku's limit on an app's config: "all keys and values together" at most
/// 32 KB. It also keeps a dyno's environment well inside what `execve` takes
/// (a 200 KB value made every dyno fail with E2BIG).
pub(crate) const MAX_CONFIG_BYTES: usize = 32 * 1024;

/// The bytes of all keys and values together.
pub(crate) fn config_bytes(config: &BTreeMap<String, String>) -> usize {
    config.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Refuses a config change that leaves the app over [`MAX_CONFIG_BYTES`],
/// unless it shrinks a config that was already over (so one can get back
/// under the limit a var at a time).
pub(crate) fn config_size(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    let total = config_bytes(after);
    if total <= MAX_CONFIG_BYTES || total < config_bytes(before) {
        return Ok(());
    }
    Err(StoreError::invalid(format!(
        "config vars are limited to 32 KB ({MAX_CONFIG_BYTES} bytes) for all keys and values \
         together; this change would make them {total} bytes"
    )))
}

/// The Procfile's alphabet, `^[A-Za-z0-9_-]+$`.
pub(crate) fn process_type(name: &str) -> Result<(), StoreError> {
    if is_word(name) {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "`{name}` is not a valid process type: use letters, digits, `_` and `-`"
        )))
    }
}

/// Sizes are names the platform interprets (`standard-1x`, `performance-l`); the
/// store only keeps them printable and short.
pub(crate) fn size(size: &str) -> Result<(), StoreError> {
    if is_word(size) && size.len() <= 40 {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "`{size}` is not a valid dyno size: use up to 40 letters, digits, `_` and `-`"
        )))
    }
}

pub(crate) fn quantity(process_type: &str, quantity: u32) -> Result<(), StoreError> {
    if quantity <= crate::MAX_QUANTITY {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "cannot scale `{process_type}` to {quantity}: at most {} dynos per process type",
            crate::MAX_QUANTITY
        )))
    }
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Lowercases a hostname and checks it is one the router could ever be asked for:
/// DNS labels of 1 to 63 `[a-z0-9-]` characters not starting or ending with `-`,
/// at most 253 characters in all, and optionally a leading `*.` wildcard label.
pub(crate) fn hostname(hostname: &str) -> Result<String, StoreError> {
    let lower = hostname.to_ascii_lowercase();
    let rest = lower.strip_prefix("*.").unwrap_or(&lower);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if rest == "localhost" || rest.ends_with(".localhost") {
        // The router answers `APP.localhost` with the app of that name
        // itself: a domain there would never reach the app it is added to.
        Err(StoreError::invalid(format!(
            "`{hostname}` cannot be a custom domain: names under localhost are the router's own \
             (every app is served at APP.localhost already)"
        )))
    } else if lower.len() <= 253 && rest.split('.').all(label_ok) {
        Ok(lower)
    } else {
        Err(StoreError::invalid(format!(
            "`{hostname}` is not a valid hostname"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for good in ["ab", "a1", "a-b", "demo", "my-app-2", &"a".repeat(30)] {
            assert!(app_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "1a",
            "-a",
            "a-",
            "ok-name-",
            "Ab",
            "aB",
            "a_b",
            "a.b",
            "a b",
            "é1",
            "aé",
            &"a".repeat(31),
        ] {
            assert!(
                matches!(app_name(bad), Err(StoreError::InvalidName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn config_keys() {
        for good in ["A", "_", "FOO_BAR", "foo", "_1", "a1B2"] {
            assert!(config_key(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "É", "A.B"] {
            assert!(config_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames() {
        assert_eq!(
            hostname("WWW.Example.COM").ok().as_deref(),
            Some("www.example.com")
        );
        for good in ["a.b", "*.example.com", "x-1.y2.z", &"a".repeat(63)] {
            assert!(hostname(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "localhost",
            "shop.localhost",
            "*.localhost",
            "Other.LOCALHOST",
            ".",
            "a..b",
            "a.",
            ".a",
            "-a.b",
            "a-.b",
            "a_b.c",
            "a b",
            "*",
            "*.",
            "a.*.b",
            "**.a",
            "a:80",
            "é.com",
            &"a".repeat(64),
            &["a"; 128].join("."),
        ] {
            assert!(hostname(bad).is_err(), "{bad}");
        }
    }
}
