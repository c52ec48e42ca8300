//! How a server's builds run, from its flags: the build user, the variables
//! passed on from the server's environment, and where path buildpacks may
//! live.
//!
//! Separate from the start-up because it reads the server's own environment,
//! which nothing else of the server's flags does.

use anyhow::{Context, Result};

use super::args::ServerArgs;

/// The proxy variables every build gets when the server has them.
const BUILD_PROXY_VARIABLES: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// How builds run, from the flags: the build user, the variables passed on
/// (the proxies and every `--build-env` the server has a value for), and
/// where path buildpacks may live.
pub fn build_settings(args: &ServerArgs) -> Result<crew_platform::BuildSettings> {
    let mut env = Vec::new();
    let names = BUILD_PROXY_VARIABLES
        .iter()
        .map(|n| n.to_string())
        .chain(args.build_env.iter().cloned());
    for name in names {
        if env.iter().any(|(k, _)| *k == name) {
            continue;
        }
        if let Some(value) = std::env::var_os(&name) {
            let value = value
                .into_string()
                .map_err(|_| anyhow::anyhow!("--build-env {name}: its value is not UTF-8"))?;
            env.push((name, value));
        }
    }
    let path_buildpacks = match &args.buildpack_dir {
        Some(dir) => crew_platform::PathBuildpacks::Under(
            dir.canonicalize()
                .with_context(|| format!("--buildpack-dir {}", dir.display()))?,
        ),
        None => crew_platform::PathBuildpacks::Nowhere,
    };
    Ok(crew_platform::BuildSettings {
        uid: args.build_user.0,
        gid: args.build_user.1,
        env,
        path_buildpacks,
        ..crew_platform::BuildSettings::default()
    })
}
