//! What can go wrong in the platform, in words a user can act on.

use crew_procfile::FormationError;
use crew_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Formation(#[from] FormationError),
    #[error("{0}")]
    Build(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no such process: {0}")]
    UnknownDyno(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl PlatformError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PlatformError {
        let what = what.into();
        move |source| PlatformError::Io { what, source }
    }
}
