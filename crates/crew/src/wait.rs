//! `crew ps:wait -a APP`: waits until every dyno runs the app's current
//! release, as `heroku ps:wait` does (after a push, a config change or a
//! rollback, before the next step of a script).

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use crew_api::types::{Dyno, ReleaseInfo};

use crate::cli::PsWaitArgs;
use crate::client::{Target, block_on};

pub fn ps_wait(args: &PsWaitArgs) -> Result<u8> {
    if args.with_run && args.process_type.is_some() {
        return Err(anyhow!("--type and --with-run cannot be given together"));
    }
    let target = Target::server(&args.app)?;
    let interval = Duration::from_secs(args.wait_interval.max(1));
    block_on(async {
        let releases: Vec<ReleaseInfo> = target
            .client
            .get(&target.path("/releases"))
            .await
            .context("reading releases")?;
        let Some(current) = releases.iter().find(|r| r.current) else {
            crate::say(&format!("{} has no releases\n", target.app));
            return Ok(0);
        };
        let mut waiting = false;
        loop {
            let dynos: Vec<Dyno> = target
                .client
                .get(&target.path("/dynos"))
                .await
                .context("reading dynos")?;
            let relevant: Vec<&Dyno> = dynos
                .iter()
                .filter(|d| d.process_type != "release")
                .filter(|d| args.with_run || d.process_type != "run")
                .filter(|d| {
                    args.process_type
                        .as_deref()
                        .is_none_or(|t| d.process_type == t)
                })
                .collect();
            let on_current = relevant
                .iter()
                .filter(|d| {
                    d.state == "up"
                        && d.release
                            .as_ref()
                            .is_some_and(|r| r.version >= current.version)
                })
                .count();
            let fraction = format!("{on_current} / {}", relevant.len());
            if on_current == relevant.len() {
                if waiting {
                    crate::say(&format!("{fraction}, done\n"));
                }
                return Ok(0);
            }
            if !waiting {
                crate::say(&format!(
                    "Waiting for every dyno to be running v{}... ",
                    current.version
                ));
                waiting = true;
            }
            tokio::time::sleep(interval).await;
        }
    })
}
