/// Everything a store call can refuse or fail with.
///
/// The first five variants are the caller's mistake and carry a message fit to show a
/// user as it is; the last two are the database's and mean the server is unwell.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "`{name}` is not a valid app name: use 2 to 30 characters, a lowercase letter first, then lowercase letters, digits and dashes, not ending with a dash"
    )]
    InvalidName { name: String },

    #[error("the name `{name}` is already taken")]
    AppExists { name: String },

    /// `what` is the whole sentence, e.g. "no app named `x`", "no release v9 for `x`".
    #[error("{what}")]
    NotFound { what: String },

    #[error("the domain `{hostname}` is already in use by `{app}`")]
    DomainTaken { hostname: String, app: String },

    #[error("{message}")]
    Invalid { message: String },

    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
}

impl StoreError {
    /// The `id` of the Heroku Platform API error object (`{"id": …, "message": …}`)
    /// that this error corresponds to, so the API layer maps errors in one place.
    pub fn id(&self) -> &'static str {
        match self {
            StoreError::InvalidName { .. }
            | StoreError::AppExists { .. }
            | StoreError::DomainTaken { .. }
            | StoreError::Invalid { .. } => "invalid_params",
            StoreError::NotFound { .. } => "not_found",
            StoreError::Sqlite(_) | StoreError::Migration(_) => "internal_server_error",
        }
    }

    /// True for the errors that are the caller's fault rather than the database's.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, StoreError::Sqlite(_) | StoreError::Migration(_))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        StoreError::Invalid {
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        StoreError::NotFound { what: what.into() }
    }
}
