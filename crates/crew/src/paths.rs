//! Where crew keeps a server's files on this machine: the data directory, the
//! API token in it, and the locator file a running server leaves behind.
//!
//! Separate because the server writes these paths and the client reads them:
//! both take them from here, so the two sides cannot drift apart.

use std::path::{Path, PathBuf};

/// The token's file name in the data directory.
const TOKEN_FILE: &str = "api-token";

pub fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// Where the server keeps everything unless `--data` says otherwise.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("crew"),
        _ => home().join(".local/share/crew"),
    }
}

/// The file a running server leaves so that clients on this machine find it.
pub fn locator_file() -> PathBuf {
    home().join(".config/crew/server")
}

/// The API token of the server whose data directory is `data`.
pub fn token_file(data: &Path) -> PathBuf {
    data.join(TOKEN_FILE)
}

/// Where a new token is written before it is renamed into place.
pub fn partial_token_file(data: &Path) -> PathBuf {
    data.join(format!("{TOKEN_FILE}.partial"))
}
