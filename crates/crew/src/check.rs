//! `crew check`: is this Procfile what I think it is?

use anyhow::Result;

use crate::app;
use crate::cli::CheckArgs;

pub fn check(args: &CheckArgs) -> Result<u8> {
    let location = app::locate(&args.app)?;
    let procfile = app::read_procfile(&location.procfile)?;
    crate::say(&format!(
        "valid procfile detected ({})\n",
        procfile.names().join(", ")
    ));
    Ok(0)
}
