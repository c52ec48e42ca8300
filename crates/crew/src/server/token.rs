//! The API token of a server: one secret, made on the first start and kept,
//! so clients and the Heroku CLI configured once keep working across restarts.

use std::path::Path;

use anyhow::{Context, Result};

use crate::paths;

/// The API token: made once, kept in `DATA/api-token` with mode 0600.
pub fn load_or_create(data: &Path) -> Result<String> {
    let path = paths::token_file(data);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let token = crew_api::secret::random_hex(24).context("reading /dev/urandom")?;
    let partial = paths::partial_token_file(data);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("writing {}", partial.display()))?;
        std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())
            .with_context(|| format!("writing {}", partial.display()))?;
    }
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}
