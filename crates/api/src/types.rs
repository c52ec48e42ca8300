//! Request and response bodies, in Heroku's v3 shapes with a few crew fields added.

use serde::{Deserialize, Serialize};

pub use crew_procfile::{FormationChange, Quantity};

/// An app as a dyno refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRef {
    pub id: String,
    pub name: String,
}

/// One dyno, as `GET /apps/{app}/dynos` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dyno {
    pub id: String,
    /// `web.1`, `run.3`.
    pub name: String,
    #[serde(rename = "type")]
    pub process_type: String,
    /// `starting`, `up`, `crashed`, `down` or `complete`.
    pub state: String,
    pub command: String,
    pub size: String,
    pub created_at: String,
    /// When the dyno entered its state.
    pub updated_at: String,
    pub attach_url: Option<String>,
    pub app: AppRef,
    /// crew: the leader's pid, where there is one to show.
    #[serde(default)]
    pub pid: Option<u32>,
    /// crew: the dyno's PORT.
    #[serde(default)]
    pub port: Option<u16>,
    /// crew: automatic restarts after crashes.
    #[serde(default)]
    pub restarts: u32,
    /// crew: seconds until a crashed dyno is restarted.
    #[serde(default)]
    pub restart_in: Option<u64>,
}

/// One process type's line of the formation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationEntry {
    #[serde(rename = "type")]
    pub process_type: String,
    pub quantity: u32,
    pub command: String,
    pub size: String,
}

/// `PATCH /apps/{app}/formation`: `{"updates":[{"type":"web","quantity":"+1"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationUpdate {
    pub updates: Vec<FormationChange>,
}

/// `POST /apps/{app}/dynos`: start a one-off dyno.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynoCreate {
    pub command: String,
    #[serde(default)]
    pub attach: Option<bool>,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default, rename = "type")]
    pub process_type: Option<String>,
    /// crew, local mode: the pid of a `crew run` that is already running the
    /// command itself and only wants to be listed.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Extra environment for this dyno only.
    #[serde(default)]
    pub env: Option<std::collections::BTreeMap<String, String>>,
}

/// The last line of an attached one-off's output: `crew-run: exit 3`.
pub const RUN_EXIT_PREFIX: &str = "crew-run: exit ";

/// `POST /apps/{app}/log-sessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSessionCreate {
    /// A process type or dyno name to keep.
    #[serde(default)]
    pub dyno: Option<String>,
    #[serde(default)]
    pub lines: Option<usize>,
    #[serde(default)]
    pub tail: Option<bool>,
    /// `app` for the app's own lines, `crew` (or Heroku's `heroku`) for the
    /// platform's.
    #[serde(default)]
    pub source: Option<String>,
}

/// Where to read the log session from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSession {
    pub id: String,
    /// A URL, or locally a path on the same socket.
    pub logplex_url: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Query of `GET /apps/{app}/log-stream`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    pub dyno: Option<String>,
    #[serde(default)]
    pub lines: Option<usize>,
    #[serde(default)]
    pub tail: Option<bool>,
    /// `app` for the app's own lines, `crew` (or Heroku's `heroku`) for the
    /// platform's.
    #[serde(default)]
    pub source: Option<String>,
}

/// Every error body: `{"id":"not_found","message":"Couldn't find that app."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub id: String,
    pub message: String,
}

/// `{"name": "..."}`: create an app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppCreate {
    #[serde(default)]
    pub name: Option<String>,
}

/// A name-only reference, as Heroku nests them (`"generation": {"name": "cedar"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRef {
    pub name: String,
}

/// An id-only reference (`"slug": {"id": "..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRef {
    pub id: String,
}

/// One app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
    pub git_url: String,
    pub web_url: String,
    pub generation: NameRef,
    pub stack: NameRef,
    pub build_stack: NameRef,
}

/// One release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub id: String,
    pub version: u32,
    pub description: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub current: bool,
    pub created_at: String,
    pub updated_at: String,
    pub slug: Option<IdRef>,
}

/// `POST /apps/{app}/releases`: roll back to the release with this id or version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseCreate {
    pub release: String,
}

/// Where a build's source is: locally a `file://` path the pushed tree was
/// exported to, and the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceBlob {
    pub url: String,
    #[serde(default)]
    pub version: Option<String>,
}

/// `POST /apps/{app}/builds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildCreate {
    pub source_blob: SourceBlob,
}

/// The last line of a streamed build: `crew-build: succeeded v3` or
/// `crew-build: failed`.
pub const BUILD_RESULT_PREFIX: &str = "crew-build: ";

/// One build, as `GET /apps/{app}/builds` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    pub id: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub source_blob: SourceBlob,
    pub slug: Option<IdRef>,
    pub created_at: String,
    pub updated_at: String,
}

/// One custom domain of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    pub id: String,
    pub hostname: String,
    pub kind: String,
    pub created_at: String,
}

/// `POST /apps/{app}/domains`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCreate {
    pub hostname: String,
}
