//! Names on the clusters. Kubernetes names most objects with DNS labels
//! (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 bytes) and Swarm names services
//! with a similar rule; the Procfile allows capitals and `_`. The mapping is
//! fixed and documented so that a person can predict every name.

use crate::ClusterError;

/// The longest DNS label, which bounds Service, container and Swarm service
/// names.
const MAX_LABEL: usize = 63;

/// crew's app rule, `^[a-z][a-z0-9-]{1,29}$`, plus what DNS adds: no dash at
/// the end, since `crew-APP` and `APP-web` must be DNS labels.
pub fn validate_app_name(name: &str) -> Result<(), ClusterError> {
    let bytes = name.as_bytes();
    let ok = (2..=30).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::AppName {
            name: name.to_string(),
        })
    }
}

/// The part of object names that stands for a process type: lowercased, with
/// `_` as `-`. `run` is refused because one-off dynos carry that type on every
/// cluster, and a Deployment or service of that name would claim them.
pub fn type_label(process_type: &str) -> Result<String, ClusterError> {
    let bad = |reason: &str| ClusterError::ProcessType {
        name: process_type.to_string(),
        reason: reason.to_string(),
    };
    if process_type == "run" {
        return Err(bad("`run` is what one-off dynos are called"));
    }
    let label: String = process_type
        .chars()
        .map(|c| match c {
            '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let bytes = label.as_bytes();
    let ok = !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-';
    if !ok {
        return Err(bad(
            "use letters, digits, `-` and `_`, starting and ending with a letter or digit",
        ));
    }
    Ok(label)
}

/// `APP-TYPE`: a process type's Deployment, Service or Swarm service.
pub fn object_name(app: &str, process_type: &str) -> Result<String, ClusterError> {
    let name = format!("{app}-{}", type_label(process_type)?);
    if name.len() > MAX_LABEL {
        return Err(ClusterError::ProcessType {
            name: process_type.to_string(),
            reason: format!("`{name}` is longer than {MAX_LABEL} characters"),
        });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_follow_crews_rule_and_dns() {
        for good in ["shop", "my-shop-2", "ab"] {
            assert!(validate_app_name(good).is_ok(), "{good}");
        }
        for bad in ["Shop", "s", "1shop", "shop_1", "shop-", "", &"a".repeat(31)] {
            assert!(validate_app_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn types_become_dns_labels_predictably() {
        assert_eq!(object_name("shop", "web").ok(), Some("shop-web".into()));
        assert_eq!(
            object_name("shop", "Release_Phase").ok(),
            Some("shop-release-phase".into())
        );
        for bad in ["run", "_x", "x-", "", "a.b"] {
            assert!(object_name("shop", bad).is_err(), "{bad}");
        }
        assert!(object_name("shop", &"w".repeat(58)).is_ok());
        assert!(object_name("shop", &"w".repeat(59)).is_err());
    }
}
