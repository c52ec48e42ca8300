use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::StoreError;

/// The size a formation row gets when nobody asked for one.
pub const DEFAULT_SIZE: &str = "standard-1x";

/// The most dynos one process type may be scaled to. Heroku's limit for standard
/// dynos; on one machine it is also a guard against `scale web=100000` typos.
pub const MAX_QUANTITY: u32 = 100;

/// The Procfile type that names the release-phase command. It is never a formation
/// row: it runs once per release, not as a dyno that is kept up.
pub const RELEASE_PROCESS_TYPE: &str = "release";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub id: String,
    pub name: String,
    /// RFC 3339 UTC, whole seconds: `2026-11-27T10:14:40Z`. So are all `*_at` fields.
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRelease {
    pub slug_id: Option<String>,
    pub config: BTreeMap<String, String>,
    pub description: String,
    pub status: ReleaseStatus,
}

/// Heroku's three release states. `Pending` means the release phase has not
/// finished; only `Succeeded` releases can become current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseStatus {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub id: String,
    /// The app's name.
    pub app: String,
    pub version: u32,
    pub slug_id: Option<String>,
    pub config: BTreeMap<String, String>,
    pub description: String,
    pub status: ReleaseStatus,
    pub created_at: String,
    /// Changes when the status does.
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSlug {
    /// Where the slug's tar.gz lives, under the data directory.
    pub path: String,
    pub process_types: BTreeMap<String, String>,
    pub commit: Option<String>,
    pub size: u64,
    pub buildpack: Option<String>,
    pub release_command: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug {
    pub id: String,
    /// The app's name.
    pub app: String,
    pub path: String,
    pub process_types: BTreeMap<String, String>,
    pub commit: Option<String>,
    pub size: u64,
    pub buildpack: Option<String>,
    pub release_command: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildStatus {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub id: String,
    /// The app's name.
    pub app: String,
    pub status: BuildStatus,
    /// What was built, e.g. the pushed commit.
    pub source: String,
    pub slug_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormationRow {
    pub process_type: String,
    pub quantity: u32,
    /// Given to `set_formation` as the empty string, it means "keep the size this
    /// type has" (or [`DEFAULT_SIZE`] for a type never scaled before).
    pub size: String,
}

impl FormationRow {
    /// A row with the default size.
    pub fn new(process_type: impl Into<String>, quantity: u32) -> Self {
        FormationRow {
            process_type: process_type.into(),
            quantity,
            size: DEFAULT_SIZE.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub id: String,
    /// The app's name.
    pub app: String,
    /// Always lowercase.
    pub hostname: String,
    pub created_at: String,
}

/// The two status enums share their words and their column encoding.
macro_rules! status_enum {
    ($ty:ident, $what:literal) => {
        impl $ty {
            /// Heroku's word for the status.
            pub fn as_str(self) -> &'static str {
                match self {
                    $ty::Pending => "pending",
                    $ty::Succeeded => "succeeded",
                    $ty::Failed => "failed",
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = StoreError;

            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    "pending" => Ok($ty::Pending),
                    "succeeded" => Ok($ty::Succeeded),
                    "failed" => Ok($ty::Failed),
                    _ => Err(StoreError::invalid(format!(
                        "`{s}` is not a {}: use pending, succeeded or failed",
                        $what
                    ))),
                }
            }
        }

        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e: StoreError| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

status_enum!(ReleaseStatus, "release status");
status_enum!(BuildStatus, "build status");
