//! `crew.toml`: optional per-type settings beside the Procfile.
//!
//! ```toml
//! [worker]
//! stop_signal = "INT"     # what a stop sends first (default TERM)
//! stop_timeout = 10       # seconds until SIGKILL (default -t)
//! restart = "on-failure"  # always | on-failure | never
//!
//! [release]
//! may_exit = true         # exiting 0 is done, not a reason to stop the run
//!
//! [web]
//! boot_timeout = 120      # seconds to accept connections on PORT (default 60)
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use crew_engine::{RestartPolicy, TypeSettings};
use crew_procfile::Procfile;
use crew_runtime::Signal;
use serde::Deserialize;

pub const FILE_NAME: &str = "crew.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeConfig {
    stop_signal: Option<String>,
    stop_timeout: Option<u64>,
    boot_timeout: Option<u64>,
    restart: Option<String>,
    may_exit: Option<bool>,
}

/// Settings for every type of `procfile`, from `dir/crew.toml` when it exists.
pub fn load(dir: &Path, procfile: &Procfile) -> Result<BTreeMap<String, TypeSettings>> {
    let path = dir.join(FILE_NAME);
    let mut settings: BTreeMap<String, TypeSettings> = procfile
        .types()
        .iter()
        .map(|t| (t.name.clone(), TypeSettings::default()))
        .collect();
    if !path.exists() {
        return Ok(settings);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let parsed: BTreeMap<String, TypeConfig> =
        toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    for (name, config) in parsed {
        let Some(entry) = settings.get_mut(&name) else {
            bail!(
                "{}: [{name}] is not a process type of the Procfile (it has: {})",
                path.display(),
                procfile.names().join(", ")
            );
        };
        let at = |field: &str| format!("{}: [{name}] {field}", path.display());
        if let Some(signal) = config.stop_signal {
            entry.stop_signal = Signal::from_name(&signal).with_context(|| {
                format!(
                    "{}: unknown signal `{signal}` (use TERM, INT, QUIT, HUP, USR1, USR2 or KILL)",
                    at("stop_signal")
                )
            })?;
        }
        entry.stop_timeout = config.stop_timeout.map(Duration::from_secs);
        entry.boot_timeout = config.boot_timeout.map(Duration::from_secs);
        if let Some(policy) = config.restart {
            entry.restart = Some(match policy.as_str() {
                "always" => RestartPolicy::Always,
                "on-failure" => RestartPolicy::OnFailure,
                "never" => RestartPolicy::Never,
                other => bail!(
                    "{}: `{other}` is not a policy (use always, on-failure or never)",
                    at("restart")
                ),
            });
        }
        entry.may_exit = config.may_exit.unwrap_or(false);
    }
    Ok(settings)
}
