//! Routes, generic over whatever answers them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::Stream;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::secret::{random_hex, same_secret};
use crate::types::{
    Account, AppCreate, AppInfo, BuildCreate, BuildInfo, DomainCreate, DomainInfo, Dyno,
    DynoCreate, ErrorBody, FormationChange, FormationEntry, FormationTypeUpdate, FormationUpdate,
    LogQuery, LogSession, LogSessionCreate, Quantity, ReleaseCreate, ReleaseInfo, SourceInfo,
    SourceUrls,
};

/// Lines of log text, each ending in `\n`.
pub type LogStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// An error as the API reports it: a status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub id: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            id: "not_found",
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            id: "invalid_params",
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            id: "bad_request",
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            id: "unavailable",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            id: self.id.to_string(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        ApiError::bad_request(format!("malformed request body: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request(format!("malformed query: {}", rejection.body_text()))
    }
}

type Reply<T> = Result<T, ApiError>;

/// What answers the API: the local runner's formation, or the server's apps.
pub trait Backend: Send + Sync + 'static {
    fn dynos(&self, app: &str) -> impl Future<Output = Reply<Vec<Dyno>>> + Send;
    fn create_dyno(
        &self,
        app: &str,
        request: DynoCreate,
    ) -> impl Future<Output = Reply<Dyno>> + Send;
    /// Restarts one dyno or type, or every dyno with `None`.
    fn restart(&self, app: &str, target: Option<String>) -> impl Future<Output = Reply<()>> + Send;
    fn stop(&self, app: &str, target: String) -> impl Future<Output = Reply<()>> + Send;
    fn formation(&self, app: &str) -> impl Future<Output = Reply<Vec<FormationEntry>>> + Send;
    fn scale(
        &self,
        app: &str,
        update: FormationUpdate,
    ) -> impl Future<Output = Reply<Vec<FormationEntry>>> + Send;
    fn logs(&self, app: &str, query: LogQuery) -> impl Future<Output = Reply<LogStream>> + Send;

    /// The app's id. Unlike its name it is never reused: an app destroyed and
    /// made again under the same name has another. A server must answer
    /// this; a local formation has one app, known by its name.
    fn app_id(&self, app: &str) -> impl Future<Output = Reply<String>> + Send {
        let id = app.to_string();
        async move { Ok(id) }
    }

    /// Where clients reach this API (`http://127.0.0.1:8421`), from the
    /// server's own configuration, never from a request; `None` locally,
    /// where URLs are paths on the same socket.
    fn public_url(&self) -> Option<String> {
        None
    }

    // What only a server has; a local formation answers that it has none.
    fn apps(&self) -> impl Future<Output = Reply<Vec<AppInfo>>> + Send {
        async { Err(local_only()) }
    }
    fn create_app(&self, _request: AppCreate) -> impl Future<Output = Reply<AppInfo>> + Send {
        async { Err(local_only()) }
    }
    fn app(&self, _app: &str) -> impl Future<Output = Reply<AppInfo>> + Send {
        async { Err(local_only()) }
    }
    fn destroy_app(&self, _app: &str) -> impl Future<Output = Reply<AppInfo>> + Send {
        async { Err(local_only()) }
    }
    fn config(&self, _app: &str) -> impl Future<Output = Reply<BTreeMap<String, String>>> + Send {
        async { Err(local_only()) }
    }
    /// `null` values unset.
    fn update_config(
        &self,
        _app: &str,
        _changes: BTreeMap<String, Option<String>>,
    ) -> impl Future<Output = Reply<BTreeMap<String, String>>> + Send {
        async { Err(local_only()) }
    }
    fn releases(&self, _app: &str) -> impl Future<Output = Reply<Vec<ReleaseInfo>>> + Send {
        async { Err(local_only()) }
    }
    /// The config vars a release was made with.
    fn release_config(
        &self,
        _app: &str,
        _release: &str,
    ) -> impl Future<Output = Reply<BTreeMap<String, String>>> + Send {
        async { Err(local_only()) }
    }
    /// `GET /account`: who the token belongs to.
    fn account(&self) -> impl Future<Output = Reply<Account>> + Send {
        async { Err(local_only()) }
    }
    fn release(
        &self,
        _app: &str,
        _release: &str,
    ) -> impl Future<Output = Reply<ReleaseInfo>> + Send {
        async { Err(local_only()) }
    }
    fn rollback(
        &self,
        _app: &str,
        _request: ReleaseCreate,
    ) -> impl Future<Output = Reply<ReleaseInfo>> + Send {
        async { Err(local_only()) }
    }
    fn domains(&self, _app: &str) -> impl Future<Output = Reply<Vec<DomainInfo>>> + Send {
        async { Err(local_only()) }
    }
    fn add_domain(
        &self,
        _app: &str,
        _request: DomainCreate,
    ) -> impl Future<Output = Reply<DomainInfo>> + Send {
        async { Err(local_only()) }
    }
    fn remove_domain(&self, _app: &str, _hostname: &str) -> impl Future<Output = Reply<()>> + Send {
        async { Err(local_only()) }
    }
    fn builds(&self, _app: &str) -> impl Future<Output = Reply<Vec<BuildInfo>>> + Send {
        async { Err(local_only()) }
    }
    /// Builds and releases; the stream is the build's output, ending with a
    /// [`crate::types::BUILD_RESULT_PREFIX`] line.
    fn build(
        &self,
        _app: &str,
        _request: BuildCreate,
    ) -> impl Future<Output = Reply<LogStream>> + Send {
        async { Err(local_only()) }
    }
    /// Starts a one-off attached to the caller (see [`crate::attach`]).
    fn attach(
        &self,
        _app: &str,
        _request: DynoCreate,
    ) -> impl Future<Output = Reply<crate::attach::Attached>> + Send {
        async { Err(local_only()) }
    }
    /// `run:inside`: a process inside the running dyno `dyno`, attached to
    /// the caller like [`Backend::attach`].
    fn attach_inside(
        &self,
        _app: &str,
        _dyno: &str,
        _request: DynoCreate,
    ) -> impl Future<Output = Reply<crate::attach::Attached>> + Send {
        async { Err(local_only()) }
    }
    /// `PATCH /apps/{app}`: renames the app, or turns maintenance mode on or off.
    fn update_app(
        &self,
        _app: &str,
        _update: crate::types::AppUpdate,
    ) -> impl Future<Output = Reply<AppInfo>> + Send {
        async { Err(local_only()) }
    }
    /// The buildpacks the app's next build uses, in order (none: detected).
    fn buildpacks(&self, _app: &str) -> impl Future<Output = Reply<Vec<String>>> + Send {
        async { Err(local_only()) }
    }
    fn set_buildpacks(
        &self,
        _app: &str,
        _buildpacks: Vec<String>,
    ) -> impl Future<Output = Reply<Vec<String>>> + Send {
        async { Err(local_only()) }
    }
    /// The output of a release's release command and the secret its
    /// `output_stream_url` carries, if it has one.
    fn release_output(
        &self,
        _release_id: &str,
    ) -> impl Future<Output = Reply<Option<(String, String)>>> + Send {
        async { Err(local_only()) }
    }
    /// Makes an empty source for a build to name, and returns its id.
    fn create_source(&self) -> impl Future<Output = Reply<String>> + Send {
        async { Err(local_only()) }
    }
    /// Stores the tarball `PUT` to a source made by [`Backend::create_source`].
    fn upload_source(&self, _id: &str, _body: Body) -> impl Future<Output = Reply<()>> + Send {
        async { Err(local_only()) }
    }
    /// git's smart HTTP for `/{app}.git/...`.
    fn git(
        &self,
        _app: &str,
        _request: axum::extract::Request,
    ) -> impl Future<Output = Response> + Send {
        async { local_only().into_response() }
    }
}

fn local_only() -> ApiError {
    ApiError::not_found("a local `crew start` has no such route; it is for `crew server`")
}

/// The routes, answered by `backend`.
pub fn router<B: Backend>(backend: Arc<B>) -> axum::Router {
    let router = axum::Router::new()
        .route("/account", get(account::<B>))
        .route(
            "/apps/{app}/dynos",
            get(list_dynos::<B>)
                .post(create_dyno::<B>)
                .delete(restart_all::<B>),
        )
        .route(
            "/apps/{app}/dynos/{dyno}",
            get(dyno_info::<B>)
                .delete(restart_one::<B>)
                .post(run_inside::<B>),
        )
        .route("/apps/{app}/dynos/{dyno}/actions/stop", post(stop::<B>))
        .route(
            "/apps/{app}/formation",
            get(formation::<B>).patch(scale::<B>),
        )
        .route(
            "/apps/{app}/formation/{process_type}",
            get(formation_type::<B>).patch(scale_type::<B>),
        )
        // What Heroku's CLI calls to restart and stop a whole type.
        .route(
            "/apps/{app}/formations/{process_type}",
            axum::routing::delete(restart_one::<B>),
        )
        .route(
            "/apps/{app}/formations/{process_type}/actions/stop",
            post(stop::<B>),
        )
        .route("/apps/{app}/log-sessions", post(log_session::<B>))
        .route("/apps", get(list_apps::<B>).post(create_app::<B>))
        .route("/users/{user}/apps", get(list_apps::<B>))
        .route(
            "/apps/{app}",
            get(app_info::<B>)
                .delete(destroy_app::<B>)
                .patch(crate::settings::update_app::<B>),
        )
        .route("/apps/{app}/addons", get(no_addons::<B>))
        .route("/apps/{app}/addon-attachments", get(no_addons::<B>))
        .route("/addons", get(nothing))
        .route("/addon-attachments", get(nothing))
        .route("/regions", get(regions))
        .route("/stacks", get(stacks))
        .route("/apps/{app}/collaborators", get(no_collaborators::<B>))
        .route(
            "/apps/{app}/config-vars",
            get(config::<B>).patch(update_config::<B>),
        )
        .route(
            "/apps/{app}/releases",
            get(releases::<B>).post(rollback::<B>),
        )
        .route("/apps/{app}/releases/{release}", get(release_info::<B>))
        .route(
            "/apps/{app}/releases/{release}/config-vars",
            get(release_config::<B>),
        )
        .route("/apps/{app}/builds", get(builds::<B>).post(build::<B>))
        .route("/sources", post(create_source::<B>))
        .route("/sources/{id}", axum::routing::put(upload_source::<B>))
        .route(
            "/apps/{app}/domains",
            get(domains::<B>).post(add_domain::<B>),
        )
        .route("/{repo}/info/refs", get(git::<B>))
        .route("/{repo}/git-receive-pack", post(git::<B>))
        .route("/{repo}/git-upload-pack", post(git::<B>))
        .route("/apps/{app}/log-stream", get(log_stream::<B>));
    crate::settings::routes(router)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::Extension(Arc::new(LogSessions::default())))
        .with_state(backend)
}

/// How long a log session's URL stays good, as on Heroku where a `logplex_url`
/// is short-lived.
const LOG_SESSION_TTL: Duration = Duration::from_secs(3600);

/// At most this many log sessions are good at once; a new one retires the oldest.
const MAX_LOG_SESSIONS: usize = 10_000;

/// The secrets in log sessions' URLs. Heroku's CLI reads a `logplex_url` with an
/// EventSource that sends no `Authorization` header, so the URL carries its own
/// credential: good for one app's log for an hour.
///
/// A session is `LOOKUP` then `SECRET` in one hex string: the lookup half finds
/// the session (a hash map may take longer for some keys than others, which
/// only tells about the lookup half), and the secret half is compared in
/// constant time. A session names the app by id, so it dies with the app: a new
/// app of the same name does not revive it.
#[derive(Default)]
struct LogSessions {
    sessions: Mutex<HashMap<String, IssuedSession>>,
}

struct IssuedSession {
    secret: String,
    app_id: String,
    made: Instant,
}

/// Hex digits of a session's lookup half, and of its secret half.
const SESSION_LOOKUP_LEN: usize = 16;
const SESSION_SECRET_LEN: usize = 32;

impl LogSessions {
    fn issue(&self, app_id: &str) -> Result<String, ApiError> {
        let random = random_hex((SESSION_LOOKUP_LEN + SESSION_SECRET_LEN) / 2)
            .map_err(|e| ApiError::unavailable(format!("making a log session: {e}")))?;
        let (lookup, secret) = random.split_at(SESSION_LOOKUP_LEN);
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| ApiError::unavailable("the log sessions are unavailable"))?;
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.made) < LOG_SESSION_TTL);
        if sessions.len() >= MAX_LOG_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.made)
                .map(|(lookup, _)| lookup.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            lookup.to_string(),
            IssuedSession {
                secret: secret.to_string(),
                app_id: app_id.to_string(),
                made: now,
            },
        );
        Ok(random)
    }

    /// Whether `session` was issued for the app with id `app_id` less than
    /// [`LOG_SESSION_TTL`] ago.
    fn valid(&self, session: &str, app_id: &str) -> bool {
        self.valid_at(session, app_id, Instant::now())
    }

    fn valid_at(&self, session: &str, app_id: &str, now: Instant) -> bool {
        if session.len() != SESSION_LOOKUP_LEN + SESSION_SECRET_LEN || !session.is_ascii() {
            return false;
        }
        let (lookup, secret) = session.split_at(SESSION_LOOKUP_LEN);
        self.sessions.lock().is_ok_and(|sessions| {
            sessions.get(lookup).is_some_and(|s| {
                let secret_matches = same_secret(&s.secret, secret);
                secret_matches
                    && s.app_id == app_id
                    && now.saturating_duration_since(s.made) < LOG_SESSION_TTL
            })
        })
    }
}

/// Marks a request that [`require_token`] let through without the API token,
/// because it carries a log session's secret instead; the log stream checks it.
#[derive(Clone, Copy)]
struct NeedsLogSession;

async fn account<B: Backend>(State(b): State<Arc<B>>) -> Reply<Json<Account>> {
    b.account().await.map(Json)
}

async fn list_dynos<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<Dyno>>> {
    b.dynos(&app).await.map(Json)
}

async fn dyno_info<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, dyno)): Path<(String, String)>,
) -> Reply<Json<Dyno>> {
    b.dynos(&app)
        .await?
        .into_iter()
        .find(|d| d.name == dyno || d.id == dyno)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no such dyno: {dyno}")))
}

async fn create_dyno<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    mut request: axum::extract::Request,
) -> Reply<Response> {
    let wants_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(crate::attach::PROTOCOL));
    let from_heroku = from_heroku_cli(request.headers());
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let rendezvous = request
        .extensions()
        .get::<crate::rendezvous::Rendezvous>()
        .cloned();
    let upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>();
    let Json(dyno) =
        <Json<DynoCreate> as axum::extract::FromRequest<()>>::from_request(request, &()).await?;
    if dyno.attach == Some(true) && dyno.pid.is_none() {
        if let (true, Some(rendezvous), Some(host)) = (from_heroku, &rendezvous, &host) {
            return rendezvous_dyno(b, app, dyno, rendezvous, host).await;
        }
        if from_heroku {
            return Err(ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                id: "attach_unsupported",
                message: format!(
                    "crew server cannot attach `heroku run` to your terminal: that needs \
                     Heroku's rendezvous protocol over TLS, which crew does not serve. \
                     Use `heroku run:detached -a {app} COMMAND` and `heroku logs --tail \
                     -a {app} --dyno run.N`, or `crew run -a {app} COMMAND`."
                ),
            });
        }
        let (true, Some(upgrade)) = (wants_upgrade, upgrade) else {
            return Err(ApiError::bad_request(format!(
                "an attached one-off needs the connection upgraded to `{}`: \
                 use `crew run -a {app} COMMAND`",
                crate::attach::PROTOCOL
            )));
        };
        let attached = b.attach(&app, dyno).await?;
        return Ok(switch_to_attach(upgrade, attached));
    }
    let dyno = b.create_dyno(&app, dyno).await?;
    Ok((StatusCode::CREATED, Json(dyno)).into_response())
}

/// `heroku run`: starts the one-off and answers its `attach_url` (see
/// [`crate::rendezvous`]).
async fn rendezvous_dyno<B: Backend>(
    b: Arc<B>,
    app: String,
    mut dyno: DynoCreate,
    rendezvous: &crate::rendezvous::Rendezvous,
    host: &str,
) -> Reply<Response> {
    terminal_from_cli_env(&mut dyno);
    let pipes = dyno.terminal.is_none();
    let command = dyno.command.clone();
    let size = dyno.size.clone().unwrap_or_else(|| "standard-1x".into());
    let before: Vec<String> = b
        .dynos(&app)
        .await
        .map(|all| all.into_iter().map(|d| d.name).collect())
        .unwrap_or_default();
    let attached = b.attach(&app, dyno).await?;
    let secret = rendezvous
        .offer(attached, pipes)
        .map_err(|e| ApiError::unavailable(format!("reading /dev/urandom: {e}")))?;
    let name = b
        .dynos(&app)
        .await
        .ok()
        .and_then(|all| {
            all.into_iter()
                .find(|d| d.process_type == "run" && !before.contains(&d.name))
                .map(|d| d.name)
        })
        .unwrap_or_else(|| "run".into());
    let body = serde_json::json!({
        "id": name,
        "name": name,
        "type": "run",
        "state": "starting",
        "command": command,
        "size": size,
        "attach_url": format!("rendezvous://{host}/{secret}"),
        "app": { "name": app },
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST /apps/APP/dynos/DYNO` (Heroku's `run:inside`, Accept
/// `version=3.run-inside`): a process inside a running dyno, always attached:
/// through the rendezvous for Heroku's CLI, through an upgraded connection for
/// crew's.
async fn run_inside<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, dyno_name)): Path<(String, String)>,
    mut request: axum::extract::Request,
) -> Reply<Response> {
    let wants_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(crate::attach::PROTOCOL));
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let rendezvous = request
        .extensions()
        .get::<crate::rendezvous::Rendezvous>()
        .cloned();
    let upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>();
    let Json(mut dyno) =
        <Json<DynoCreate> as axum::extract::FromRequest<()>>::from_request(request, &()).await?;
    if wants_upgrade {
        let Some(upgrade) = upgrade else {
            return Err(ApiError::bad_request(
                "this connection cannot be upgraded for run:inside",
            ));
        };
        let attached = b.attach_inside(&app, &dyno_name, dyno).await?;
        return Ok(switch_to_attach(upgrade, attached));
    }
    let (Some(rendezvous), Some(host)) = (rendezvous, host) else {
        return Err(ApiError::bad_request(format!(
            "run:inside is attached: use `crew run:inside -a {app} {dyno_name} COMMAND`, or \
             Heroku's CLI over https"
        )));
    };
    terminal_from_cli_env(&mut dyno);
    let pipes = dyno.terminal.is_none();
    let command = dyno.command.clone();
    let attached = b.attach_inside(&app, &dyno_name, dyno).await?;
    let secret = rendezvous
        .offer(attached, pipes)
        .map_err(|e| ApiError::unavailable(format!("reading /dev/urandom: {e}")))?;
    let process_type = dyno_name
        .split_once('.')
        .map_or(dyno_name.as_str(), |(t, _)| t)
        .to_string();
    let body = serde_json::json!({
        "id": dyno_name,
        "name": dyno_name,
        "type": process_type,
        "state": "up",
        "command": command,
        "attach_url": format!("rendezvous://{host}/{secret}"),
        "app": { "name": app },
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Heroku's CLI (`User-Agent: heroku-cli/11.10.0 linux-x64`) wants an attached
/// dyno as an `attach_url` to rendezvous with, which crew does not offer.
fn from_heroku_cli(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("heroku-cli/"))
}

async fn restart_all<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<serde_json::Value>> {
    b.restart(&app, None).await?;
    Ok(Json(serde_json::json!({})))
}

async fn restart_one<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, dyno)): Path<(String, String)>,
) -> Reply<Json<serde_json::Value>> {
    b.restart(&app, Some(dyno)).await?;
    Ok(Json(serde_json::json!({})))
}

async fn stop<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, dyno)): Path<(String, String)>,
) -> Reply<Json<serde_json::Value>> {
    b.stop(&app, dyno).await?;
    Ok(Json(serde_json::json!({})))
}

async fn formation<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<FormationEntry>>> {
    b.formation(&app).await.map(Json)
}

async fn scale<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<FormationUpdate>, JsonRejection>,
) -> Reply<Json<Vec<FormationEntry>>> {
    let Json(update) = body?;
    if update.updates.is_empty() {
        return Err(ApiError::invalid("no updates given"));
    }
    b.scale(&app, update).await.map(Json)
}

async fn formation_type<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, process_type)): Path<(String, String)>,
) -> Reply<Json<FormationEntry>> {
    let formation = b.formation(&app).await?;
    find_type(formation, &app, &process_type).map(Json)
}

/// `PATCH /apps/{app}/formation/{type}` with `{"quantity": …, "size": …}`.
async fn scale_type<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, process_type)): Path<(String, String)>,
    body: Result<Json<FormationTypeUpdate>, JsonRejection>,
) -> Reply<Json<FormationEntry>> {
    let Json(update) = body?;
    let change = FormationChange {
        process_type: process_type.clone(),
        quantity: update.quantity.unwrap_or(Quantity::Add(0)),
        size: update.size,
    };
    let formation = b
        .scale(
            &app,
            FormationUpdate {
                updates: vec![change],
            },
        )
        .await?;
    find_type(formation, &app, &process_type).map(Json)
}

fn find_type(
    formation: Vec<FormationEntry>,
    app: &str,
    process_type: &str,
) -> Reply<FormationEntry> {
    formation
        .into_iter()
        .find(|f| f.process_type == process_type)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Couldn't find that formation: {app} has no process type `{process_type}`"
            ))
        })
}

async fn log_session<B: Backend>(
    State(b): State<Arc<B>>,
    axum::Extension(sessions): axum::Extension<Arc<LogSessions>>,
    Path(app): Path<String>,
    body: Result<Json<LogSessionCreate>, JsonRejection>,
) -> Reply<(StatusCode, Json<LogSession>)> {
    let Json(request) = body?;
    // Checks that the app exists before handing out a URL.
    b.formation(&app).await?;
    let app_id = b.app_id(&app).await?;
    let mut query = Vec::new();
    if let Some(dyno) = &request.dyno {
        query.push(format!("dyno={}", encode(dyno)));
    }
    if let Some(lines) = request.lines {
        query.push(format!("lines={lines}"));
    }
    if request.tail == Some(true) {
        query.push("tail=true".to_string());
    }
    if let Some(source) = &request.source {
        query.push(format!("source={}", encode(source)));
    }
    query.push(format!("session={}", sessions.issue(&app_id)?));
    let path = format!("/apps/{}/log-stream?{}", encode(&app), query.join("&"));
    // Absolute, as Heroku's are: its CLI opens the URL on its own. The base is
    // the server's own address: a request's `Host` header is the client's to
    // choose, and a URL built from it could send the secret anywhere.
    let url = match b.public_url() {
        Some(base) => format!("{base}{path}"),
        None => path,
    };
    let id = random_hex(16).map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(LogSession {
            id,
            logplex_url: url,
            created_at: String::new(),
            updated_at: String::new(),
        }),
    ))
}

/// The `session` parameter of a log stream's URL.
#[derive(serde::Deserialize)]
struct SessionQuery {
    #[serde(default)]
    session: Option<String>,
}

async fn log_stream<B: Backend>(
    State(b): State<Arc<B>>,
    axum::Extension(sessions): axum::Extension<Arc<LogSessions>>,
    needs_session: Option<axum::Extension<NeedsLogSession>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    query: Result<Query<LogQuery>, QueryRejection>,
    session: Result<Query<SessionQuery>, QueryRejection>,
) -> Reply<Response> {
    let Query(query) = query?;
    let Query(session) = session?;
    if needs_session.is_some() {
        // An app that is gone, or was destroyed and made again, has no id
        // the session was issued for.
        let app_id = b.app_id(&app).await.ok();
        let ok = match (session.session.as_deref(), app_id) {
            (Some(secret), Some(app_id)) => sessions.valid(secret, &app_id),
            _ => false,
        };
        if !ok {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                id: "forbidden",
                message: String::from(
                    "This log session has expired or is not valid: open a new one.",
                ),
            });
        }
    }
    let stream = b.logs(&app, query).await?;
    // Heroku's CLI reads logs with an EventSource, which asks for server-sent
    // events; crew's own client gets the lines as they are.
    let wants_events = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if wants_events {
        let body = Body::from_stream(futures_util::StreamExt::map(
            server_sent_events(stream),
            Ok::<_, std::convert::Infallible>,
        ));
        return Ok((
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response());
    }
    let body = Body::from_stream(futures_util::StreamExt::map(stream, |chunk| {
        Ok::<_, std::convert::Infallible>(chunk)
    }));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// Each line of `stream` as one server-sent event, `data: LINE` and a blank
/// line. A carriage return inside a line would end the field early, so it
/// becomes a space.
fn server_sent_events(stream: LogStream) -> impl Stream<Item = Bytes> + Send {
    let mut pending: Vec<u8> = Vec::new();
    futures_util::StreamExt::map(stream, move |chunk| {
        pending.extend_from_slice(&chunk);
        let mut out = Vec::with_capacity(pending.len() + 16);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            out.extend_from_slice(b"data: ");
            out.extend(line.iter().map(|b| if *b == b'\r' { b' ' } else { *b }));
            out.extend_from_slice(b"\n\n");
        }
        Bytes::from(out)
    })
}

async fn list_apps<B: Backend>(State(b): State<Arc<B>>) -> Reply<Json<Vec<AppInfo>>> {
    b.apps().await.map(Json)
}

async fn create_app<B: Backend>(
    State(b): State<Arc<B>>,
    body: Result<Json<AppCreate>, JsonRejection>,
) -> Reply<(StatusCode, Json<AppInfo>)> {
    let Json(request) = body?;
    Ok((StatusCode::CREATED, Json(b.create_app(request).await?)))
}

async fn app_info<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<AppInfo>> {
    b.app(&app).await.map(Json)
}

async fn destroy_app<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<AppInfo>> {
    b.destroy_app(&app).await.map(Json)
}

async fn config<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<BTreeMap<String, String>>> {
    b.config(&app).await.map(Json)
}

async fn update_config<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<BTreeMap<String, Option<String>>>, JsonRejection>,
) -> Reply<Json<BTreeMap<String, String>>> {
    let Json(changes) = body?;
    b.update_config(&app, changes).await.map(Json)
}

/// `GET /apps/{app}/releases`, all of them, or one page of them for a
/// `Range: version ..; max=10, order=desc` header: a 206 with `Next-Range`
/// when more follow.
async fn releases<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Reply<Response> {
    let mut releases = b.releases(&app).await?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(VersionRange::parse);
    let Some(range) = range else {
        return Ok(Json(releases).into_response());
    };
    releases.sort_by_key(|r| r.version);
    if range.descending {
        releases.reverse();
    }
    releases.retain(|r| range.contains(r.version));
    let more = releases.len() > range.max;
    releases.truncate(range.max);
    let mut response = Json(&releases).into_response();
    let set = |response: &mut Response, name: &'static str, value: String| {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    };
    set(&mut response, "accept-ranges", "version".into());
    if let (Some(first), Some(last)) = (releases.first(), releases.last()) {
        set(
            &mut response,
            "content-range",
            format!("version {}..{}", first.version, last.version),
        );
        if more {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            set(
                &mut response,
                "next-range",
                format!(
                    "version ]{}..; max={}, order={}",
                    last.version,
                    range.max,
                    if range.descending { "desc" } else { "asc" }
                ),
            );
        }
    }
    Ok(response)
}

/// A `Range` header over release versions: `version ..`, `version ]5..`,
/// `version 2..7`, with `max=N` (1 to 1000, default 200) and `order=asc|desc`.
/// The start is where the listing begins in its order, so with `order=desc`
/// `]5..` means the versions below 5.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VersionRange {
    start: Option<u32>,
    start_exclusive: bool,
    end: Option<u32>,
    max: usize,
    descending: bool,
}

impl VersionRange {
    fn parse(text: &str) -> Option<VersionRange> {
        let (head, params) = text.split_once(';').unwrap_or((text, ""));
        let (field, bounds) = head.trim().split_once(' ').unwrap_or((head.trim(), ".."));
        if field != "version" {
            return None;
        }
        let bounds = bounds.trim();
        let (start_exclusive, bounds) = match bounds.strip_prefix(']') {
            Some(rest) => (true, rest),
            None => (false, bounds),
        };
        let (start, end) = bounds.split_once("..")?;
        let bound = |t: &str| -> Option<Option<u32>> {
            let t = t.trim().trim_end_matches('[');
            if t.is_empty() {
                Some(None)
            } else {
                t.parse().ok().map(Some)
            }
        };
        let mut range = VersionRange {
            start: bound(start)?,
            start_exclusive,
            end: bound(end)?,
            max: 200,
            descending: false,
        };
        for param in params.split([',', ';']) {
            match param.trim().split_once('=') {
                Some(("max", n)) => range.max = n.trim().parse::<usize>().ok()?.clamp(1, 1000),
                Some(("order", o)) => range.descending = o.trim() == "desc",
                _ => {}
            }
        }
        Some(range)
    }

    fn contains(&self, version: u32) -> bool {
        let (before_start, past_end) = if self.descending {
            (
                self.start
                    .is_some_and(|s| version > s || (self.start_exclusive && version == s)),
                self.end.is_some_and(|e| version < e),
            )
        } else {
            (
                self.start
                    .is_some_and(|s| version < s || (self.start_exclusive && version == s)),
                self.end.is_some_and(|e| version > e),
            )
        };
        !before_start && !past_end
    }
}

async fn release_config<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, release)): Path<(String, String)>,
) -> Reply<Json<BTreeMap<String, String>>> {
    b.release_config(&app, &release).await.map(Json)
}

/// An empty list: what crew has none of at all (add-ons).
async fn nothing() -> Json<Vec<serde_json::Value>> {
    Json(Vec::new())
}

/// The one region crew has, where `apps:info` says an app is: this server.
async fn regions() -> Json<serde_json::Value> {
    Json(serde_json::json!([{
        "id": "local",
        "name": "local",
        "description": "This crew server",
        "country": "",
        "locale": "",
        "private_capable": false,
        "provider": { "name": "crew", "region": "local" },
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }]))
}

/// The one stack crew builds for and runs on, as `apps:info` names it.
async fn stacks() -> Json<serde_json::Value> {
    Json(serde_json::json!([{
        "id": "crew",
        "name": "crew",
        "state": "default",
        "default": true,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }]))
}

/// crew has no add-ons (nor attachments of them): an empty list, for an app
/// that exists.
async fn no_addons<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<serde_json::Value>>> {
    b.app(&app).await?;
    Ok(Json(Vec::new()))
}

/// Everyone with the token may do everything: no collaborators to list.
async fn no_collaborators<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<serde_json::Value>>> {
    b.app(&app).await?;
    Ok(Json(Vec::new()))
}

async fn release_info<B: Backend>(
    State(b): State<Arc<B>>,
    Path((app, release)): Path<(String, String)>,
) -> Reply<Json<ReleaseInfo>> {
    b.release(&app, &release).await.map(Json)
}

async fn rollback<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<ReleaseCreate>, JsonRejection>,
) -> Reply<(StatusCode, Json<ReleaseInfo>)> {
    let Json(request) = body?;
    Ok((StatusCode::CREATED, Json(b.rollback(&app, request).await?)))
}

async fn domains<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<DomainInfo>>> {
    b.domains(&app).await.map(Json)
}

async fn add_domain<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<DomainCreate>, JsonRejection>,
) -> Reply<(StatusCode, Json<DomainInfo>)> {
    let Json(request) = body?;
    Ok((
        StatusCode::CREATED,
        Json(b.add_domain(&app, request).await?),
    ))
}

async fn builds<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<BuildInfo>>> {
    b.builds(&app).await.map(Json)
}

async fn build<B: Backend>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    body: Result<Json<BuildCreate>, JsonRejection>,
) -> Reply<Response> {
    let Json(request) = body?;
    let stream = b.build(&app, request).await?;
    let body = Body::from_stream(futures_util::StreamExt::map(stream, |chunk| {
        Ok::<_, std::convert::Infallible>(chunk)
    }));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// `POST /sources`: a place to upload source code to, in Heroku's shape.
async fn create_source<B: Backend>(
    State(b): State<Arc<B>>,
) -> Reply<(StatusCode, Json<SourceInfo>)> {
    let id = b.create_source().await?;
    let url = format!("{}/sources/{id}", b.public_url().unwrap_or_default());
    Ok((
        StatusCode::CREATED,
        Json(SourceInfo {
            source_blob: SourceUrls {
                get_url: url.clone(),
                put_url: url,
            },
        }),
    ))
}

/// `PUT /sources/{id}`: the tarball of a source made by `POST /sources`.
async fn upload_source<B: Backend>(
    State(b): State<Arc<B>>,
    Path(id): Path<String>,
    body: Body,
) -> Reply<StatusCode> {
    b.upload_source(&id, body).await?;
    Ok(StatusCode::OK)
}

async fn git<B: Backend>(
    State(b): State<Arc<B>>,
    Path(repo): Path<String>,
    request: axum::extract::Request,
) -> Response {
    match repo.strip_suffix(".git") {
        Some(app) => b.git(app, request).await,
        None => ApiError::not_found("no such route").into_response(),
    }
}

/// Requires the API token on every request: `Authorization: Bearer TOKEN`, or
/// HTTP Basic with the token as the password (what git sends). A refusal is a
/// 401 with a JSON body and a Basic challenge, so git asks for credentials.
pub fn require_token(router: axum::Router, token: String) -> axum::Router {
    let token = Arc::new(token);
    router.layer(axum::middleware::from_fn(
        move |mut request: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let given = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(credential);
                if given.is_some_and(|given| same_secret(&token, &given)) {
                    return next.run(request).await;
                }
                // A log session's URL carries its own secret, which the log
                // stream checks: only that one route, only to read.
                if request.method() == axum::http::Method::GET
                    && is_log_stream_with_session(request.uri())
                {
                    request.extensions_mut().insert(NeedsLogSession);
                    return next.run(request).await;
                }
                // A release output's secret URL (checked by its handler), and
                // the registry's answer for crew's built-in buildpacks.
                if crate::settings::open_without_token(request.method(), request.uri()) {
                    return next.run(request).await;
                }
                let mut response = ApiError {
                    status: StatusCode::UNAUTHORIZED,
                    id: "unauthorized",
                    message: String::from(
                        "Invalid credentials provided: use the server's API token (CREW_API_KEY)",
                    ),
                }
                .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Basic realm=\"crew\""),
                );
                response
            }
        },
    ))
}

/// Whether `uri` is exactly `/apps/{app}/log-stream` with a `session`: one
/// app segment, so no other route whose last parameter is `log-stream`
/// (`/apps/log-stream`, `/apps/APP/formation/log-stream`) gets through.
fn is_log_stream_with_session(uri: &axum::http::Uri) -> bool {
    let segments: Vec<&str> = uri.path().split('/').collect();
    let exact = matches!(
        segments.as_slice(),
        ["", "apps", app, "log-stream"] if !app.is_empty()
    );
    exact
        && uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("session=")))
}

/// The secret in an Authorization header: a bearer token, or a Basic password.
fn credential(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

/// Standard base64, enough for a Basic header.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Serves `router` on TCP until the task is dropped: plain HTTP, and with
/// `tls` TLS too on the same port. A TLS connection opens with a handshake
/// record (content type 0x16), which no HTTP request line starts with, so the
/// first byte tells them apart.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let rendezvous = crate::rendezvous::Rendezvous::default();
    let router = router.layer(axum::Extension(rendezvous.clone()));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or a connection reset before accept:
                // neither ends the server; a pause lets descriptors free up.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let rendezvous = rendezvous.clone();
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            match tokio::time::timeout(HANDSHAKE, stream.peek(&mut first)).await {
                Ok(Ok(1)) => {}
                _ => return,
            }
            let service = hyper_util::service::TowerToHyperService::new(router);
            let http = hyper::server::conn::http1::Builder::new();
            let served = if first[0] == 0x16 {
                let Ok(Ok(mut stream)) =
                    tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await
                else {
                    return;
                };
                // Over TLS the first line is an HTTP request or a
                // rendezvous secret (`heroku run`).
                let Ok(Some(start)) =
                    tokio::time::timeout(HANDSHAKE, first_line(&mut stream)).await
                else {
                    return;
                };
                if start
                    .first()
                    .copied()
                    .is_some_and(crate::rendezvous::looks_like_secret)
                {
                    let line = start.split(|b| *b == b'\n').next().unwrap_or_default();
                    rendezvous.serve(line, stream).await;
                    return;
                }
                let stream = Replayed {
                    start,
                    at: 0,
                    inner: stream,
                };
                http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
            } else {
                http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
            };
            // A client that hangs up mid-request is its own business.
            let _ = served;
        });
    }
}

/// Reads until the first `\n` (or 256 bytes, or the end): enough to tell a
/// rendezvous secret from a request. `None` when the client sent nothing.
async fn first_line<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut start = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !start.contains(&b'\n') && start.len() < 256 {
        let n = stream.read(&mut chunk[..256 - start.len()]).await.ok()?;
        if n == 0 {
            break;
        }
        start.extend_from_slice(&chunk[..n]);
    }
    (!start.is_empty()).then_some(start)
}

/// A stream whose first bytes were read already: they are read again first.
struct Replayed<S> {
    start: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.start.len() {
            let n = buf.remaining().min(self.start.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.start[at..at + n]);
            self.at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How long a connection may take to send its first byte and finish a TLS
/// handshake; a client that stalls longer is dropped.
const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(30);

/// Percent-encodes a query value; names here are short and mostly ASCII.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char);
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Serves `router` on a Unix socket until the task is dropped.
/// Serves `router` on a Unix socket until `shutdown` resolves, then lets open
/// requests finish.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Answers `101 Switching Protocols` to crew's client and, once the
/// connection is upgraded, carries `attached` over it in crew's framing.
fn switch_to_attach(
    upgrade: hyper::upgrade::OnUpgrade,
    attached: crate::attach::Attached,
) -> Response {
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            crate::attach::bridge(hyper_util::rt::TokioIo::new(upgraded), attached).await;
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, "upgrade"),
            (header::UPGRADE, crate::attach::PROTOCOL),
        ],
    )
        .into_response()
}

/// Heroku's CLI asks for a terminal by sending `COLUMNS` and `LINES` in the
/// dyno's env when its stdout is one (unless told `--no-tty`); there is no
/// resize message, so that is the terminal's size for good.
fn terminal_from_cli_env(dyno: &mut DynoCreate) {
    let size = |key: &str| {
        dyno.env
            .as_ref()
            .and_then(|env| env.get(key))
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|n| *n > 0)
    };
    if dyno.force_no_tty != Some(true)
        && let (Some(cols), Some(rows)) = (size("COLUMNS"), size("LINES"))
    {
        dyno.terminal = Some(crate::types::TerminalSize { cols, rows });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_over_versions() {
        let r = VersionRange::parse("version ..; max=10, order=desc").expect("parses");
        assert_eq!(
            (r.start, r.end, r.max, r.descending),
            (None, None, 10, true)
        );
        let r = VersionRange::parse("version ..; order=desc,max=1").expect("parses");
        assert_eq!((r.max, r.descending), (1, true));
        let r = VersionRange::parse("version ]4..; max=2, order=desc").expect("parses");
        assert!(r.start_exclusive);
        assert_eq!(
            (1..=6).filter(|v| r.contains(*v)).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let r = VersionRange::parse("version 2..4").expect("parses");
        assert_eq!(r.max, 200);
        assert_eq!(
            (1..=6).filter(|v| r.contains(*v)).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(
            VersionRange::parse("version ..; max=0").map(|r| r.max),
            Some(1)
        );
        assert_eq!(VersionRange::parse("id ..; max=10"), None);
        assert_eq!(VersionRange::parse("version x..; max=10"), None);
        assert_eq!(VersionRange::parse("version ..; max=lots"), None);
    }

    #[tokio::test]
    async fn log_lines_become_server_sent_events() {
        let chunks = vec![
            Bytes::from_static(b"one\ntw"),
            Bytes::from_static(b"o\r\nthr\ree\n"),
        ];
        let stream: LogStream = Box::pin(futures_util::stream::iter(chunks));
        let out: Vec<Bytes> = futures_util::StreamExt::collect(server_sent_events(stream)).await;
        assert_eq!(
            out.concat(),
            b"data: one\n\ndata: two\n\ndata: thr ee\n\n".to_vec()
        );
    }

    #[test]
    fn only_the_exact_log_stream_route_may_carry_a_session() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().expect("uri");
        assert!(is_log_stream_with_session(&uri(
            "/apps/demo/log-stream?lines=5&session=abc"
        )));
        for other in [
            "/apps/demo/log-stream?lines=5",
            "/apps/demo/dynos?session=abc",
            "/apps/log-stream?session=abc",
            "/apps//log-stream?session=abc",
            "/apps/demo/formation/log-stream?session=abc",
            "/apps/demo/dynos/log-stream?session=abc",
            "/x/apps/demo/log-stream?session=abc",
            "/apps/demo/log-stream/?session=abc",
        ] {
            assert!(!is_log_stream_with_session(&uri(other)), "{other}");
        }
    }

    #[test]
    fn log_sessions_are_bound_to_the_app_id_and_expire() {
        let sessions = LogSessions::default();
        let session = sessions.issue("id-1").expect("a session");
        assert_eq!(session.len(), SESSION_LOOKUP_LEN + SESSION_SECRET_LEN);
        assert!(sessions.valid(&session, "id-1"));
        // Another app, or the same name made again with a new id.
        assert!(!sessions.valid(&session, "id-2"));
        assert!(!sessions.valid("guess", "id-1"));
        // The right lookup half with a wrong secret half.
        let (lookup, _) = session.split_at(SESSION_LOOKUP_LEN);
        let forged = format!("{lookup}{}", "0".repeat(SESSION_SECRET_LEN));
        assert!(!sessions.valid(&forged, "id-1"));
        let later = Instant::now() + LOG_SESSION_TTL + Duration::from_secs(1);
        assert!(!sessions.valid_at(&session, "id-1", later));
    }

    #[test]
    fn credentials_from_bearer_and_basic() {
        assert_eq!(credential("Bearer abc").as_deref(), Some("abc"));
        // base64 of "crew:s3cret"
        assert_eq!(
            credential("Basic Y3JldzpzM2NyZXQ=").as_deref(),
            Some("s3cret")
        );
        assert_eq!(credential("Basic !!!"), None);
        assert_eq!(credential("Digest x"), None);
    }
}
