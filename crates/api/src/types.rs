//! Request and response bodies, in Heroku's v3 shapes with a few crew fields added.

use serde::{Deserialize, Serialize};

pub use crew_procfile::{FormationChange, Quantity};

/// An app as a dyno refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRef {
    pub id: String,
    pub name: String,
}

/// A release as a dyno refers to it: `{"id": "...", "version": 3}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRef {
    pub id: String,
    pub version: u32,
}

/// Who did something, as Heroku nests users: `{"id": "...", "email": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    pub email: String,
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
    /// The release the dyno runs; none for a local `crew start`.
    #[serde(default)]
    pub release: Option<ReleaseRef>,
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
    /// crew: the machine it runs on, on a cluster with several.
    #[serde(default)]
    pub node: Option<String>,
}

/// One process type's line of the formation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationEntry {
    #[serde(rename = "type")]
    pub process_type: String,
    pub quantity: u32,
    pub command: String,
    pub size: String,
    /// Heroku's formation id; crew's is `APP_ID:TYPE`.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub app: Option<AppRef>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
}

/// `PATCH /apps/{app}/formation/{type}`: `{"quantity": "+1", "size": "standard-2x"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationTypeUpdate {
    pub quantity: Option<Quantity>,
    #[serde(default)]
    pub size: Option<String>,
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
    /// Extra environment for this dyno only. Numbers and booleans are taken as
    /// their text, since Heroku's CLI sends `"COLUMNS": 120`.
    #[serde(default, deserialize_with = "env_values")]
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// Heroku's: attached, but through pipes rather than a terminal.
    #[serde(default)]
    pub force_no_tty: Option<bool>,
    /// crew: the size of the terminal an attached dyno gets.
    #[serde(default)]
    pub terminal: Option<TerminalSize>,
}

/// A terminal window's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

/// An environment map whose values may be strings, numbers, booleans or null
/// (which drops the variable).
fn env_values<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::collections::BTreeMap<String, String>>, D::Error> {
    let raw: Option<std::collections::BTreeMap<String, serde_json::Value>> =
        Option::deserialize(deserializer)?;
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mut env = std::collections::BTreeMap::new();
    for (key, value) in raw {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "env.{key} must be a string, number or boolean, not {other}"
                )));
            }
        };
        env.insert(key, text);
    }
    Ok(Some(env))
}

/// `POST /apps/{app}/log-sessions` takes the same fields as the stream's query
/// (`dyno`, `lines`, `tail`, `source`): the session's URL carries them on.
pub type LogSessionCreate = LogQuery;

/// Where to read the log session from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSession {
    pub id: String,
    /// A URL, or locally a path on the same socket.
    pub logplex_url: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Query of `GET /apps/{app}/log-stream`, and the body of a log session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
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

/// A region or a stack: `{"id": "...", "name": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedRef {
    pub id: String,
    pub name: String,
}

/// One app. The fields after `build_stack` are Heroku's, for its CLI; crew's
/// own client ignores them and older servers leave them out.
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
    #[serde(default)]
    pub owner: UserRef,
    #[serde(default)]
    pub region: NamedRef,
    /// Always null: crew has no private spaces.
    #[serde(default)]
    pub space: Option<NamedRef>,
    /// `production`: never `eco`, which makes the CLI ask for dyno-hour quotas.
    #[serde(default)]
    pub process_tier: String,
    #[serde(default)]
    pub maintenance: bool,
    #[serde(default)]
    pub acm: bool,
    /// `complete`.
    #[serde(default)]
    pub create_status: String,
    #[serde(default)]
    pub released_at: Option<String>,
    /// Bytes of the current release's slug, if it has one.
    #[serde(default)]
    pub slug_size: Option<u64>,
    /// Bytes of the app's git repository.
    #[serde(default)]
    pub repo_size: Option<u64>,
    #[serde(default)]
    pub buildpack_provided_description: Option<String>,
    #[serde(default)]
    pub internal_routing: Option<bool>,
    #[serde(default)]
    pub archived_at: Option<String>,
    /// crew: how the server isolates dynos, `on (…)` or `off: why`.
    #[serde(default)]
    pub isolation: Option<String>,
    /// crew: the router's failed requests by Heroku error code (`H13`) since
    /// the server started.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub router_errors: std::collections::BTreeMap<String, u64>,
}

/// `GET /account`: the one account a crew server has, the token's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
    pub verified: bool,
    pub two_factor_authentication: bool,
    pub beta: bool,
    pub allow_tracking: bool,
    pub federated: bool,
    pub suspended_at: Option<String>,
    pub delinquent_at: Option<String>,
    pub default_organization: Option<NamedRef>,
    pub default_team: Option<NamedRef>,
}

/// One release. The fields after `slug` are Heroku's, for its CLI.
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
    #[serde(default)]
    pub app: Option<AppRef>,
    #[serde(default)]
    pub user: UserRef,
    /// Whether `rollback` may go back to it: it succeeded and has a slug.
    #[serde(default)]
    pub eligible_for_rollback: bool,
    #[serde(default)]
    pub addon_plan_names: Vec<String>,
    /// Where the release command's output is read (`heroku releases:output`),
    /// once it has run: a URL on this server with a secret of its own, since
    /// the CLI sends no token there. Null for a release without one.
    #[serde(default)]
    pub output_stream_url: Option<String>,
}

/// `POST /apps/{app}/releases`: roll back to the release with this id or version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseCreate {
    pub release: String,
}

/// Where a build's source is, and the commit. `url` is a `get_url` from
/// `POST /sources`: a server never builds from a path on its own disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceBlob {
    pub url: String,
    #[serde(default)]
    pub version: Option<String>,
}

/// `POST /sources`: where to upload a tarball of source code, and the URL
/// that names it in a build's `source_blob.url`, in the shape of Heroku's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub source_blob: SourceUrls,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceUrls {
    /// What a build names as its `source_blob.url`.
    pub get_url: String,
    /// Where the tarball (`.tar` or `.tar.gz`) is `PUT`, with the API token.
    pub put_url: String,
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
    /// `heroku` for the app's own hostname (`APP.localhost`), `custom` for
    /// the ones added.
    pub kind: String,
    pub created_at: String,
    /// Where the domain's DNS should point: this server.
    #[serde(default)]
    pub cname: Option<String>,
    /// `none`: crew routes a domain as soon as it is added (no certificate
    /// to provision), so nothing waits on it.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub app: Option<AppRef>,
    #[serde(default)]
    pub acm_status: Option<String>,
    #[serde(default)]
    pub sni_endpoint: Option<NamedRef>,
    #[serde(default)]
    pub updated_at: String,
}

/// `PATCH /apps/{app}`: a rename, maintenance mode, or the build stack (crew
/// has one). Any other field is refused rather than ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_stack: Option<String>,
}

/// One of an app's buildpacks, as `GET /apps/{app}/buildpack-installations`
/// lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackInstallation {
    pub buildpack: BuildpackRef,
    /// From 0, in the order they run.
    pub ordinal: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackRef {
    pub url: String,
    pub name: String,
}

/// `PUT /apps/{app}/buildpack-installations`: the whole new list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackUpdates {
    pub updates: Vec<BuildpackUpdate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackUpdate {
    /// A URL, or a name such as `heroku/python`. Missing is an empty name,
    /// refused with the list of what is: the CLI sends none for a name the
    /// registry does not know.
    #[serde(default)]
    pub buildpack: String,
}

/// `POST /apps/{app}/domains`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCreate {
    pub hostname: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dyno_env_takes_numbers_and_drops_nulls() {
        let request: DynoCreate = serde_json::from_str(
            r#"{"command":"bash","attach":false,"env":{"TERM":"xterm","COLUMNS":120,"GONE":null,"TTY":true}}"#,
        )
        .expect("parses");
        let env = request.env.expect("an env");
        assert_eq!(env.get("TERM").map(String::as_str), Some("xterm"));
        assert_eq!(env.get("COLUMNS").map(String::as_str), Some("120"));
        assert_eq!(env.get("TTY").map(String::as_str), Some("true"));
        assert!(!env.contains_key("GONE"));
        let request: DynoCreate =
            serde_json::from_str(r#"{"command":"bash","env":null}"#).expect("parses");
        assert_eq!(request.env, None);
        assert!(serde_json::from_str::<DynoCreate>(r#"{"command":"x","env":{"A":[1]}}"#).is_err());
    }

    #[test]
    fn older_servers_answers_still_parse() {
        let app: AppInfo = serde_json::from_str(
            r#"{"id":"1","name":"a","created_at":"","updated_at":"","git_url":"","web_url":"",
                "generation":{"name":"cedar"},"stack":{"name":"crew"},"build_stack":{"name":"crew"}}"#,
        )
        .expect("parses");
        assert_eq!(app.space, None);
        let entry: FormationEntry = serde_json::from_str(
            r#"{"type":"web","quantity":1,"command":"x","size":"standard-1x"}"#,
        )
        .expect("parses");
        assert_eq!(entry.app, None);
    }
}
