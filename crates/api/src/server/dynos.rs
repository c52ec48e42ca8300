//! Dynos: list, show, restart and stop them, and start one-offs, detached or
//! attached (`run`), or a process inside a running dyno (`run:inside`).
//!
//! An attached process reaches crew's client over an upgraded connection
//! ([`crate::attach`]) and Heroku's CLI through the rendezvous
//! ([`crate::rendezvous`]); the handlers here choose which from the request.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::service::{ApiService, Reply};
use crate::types::{Dyno, DynoCreate};

pub(super) async fn list_dynos<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<Vec<Dyno>>> {
    b.dynos(&app).await.map(Json)
}

pub(super) async fn dyno_info<B: ApiService>(
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

pub(super) async fn create_dyno<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
    request: axum::extract::Request,
) -> Reply<Response> {
    let from_heroku = from_heroku_cli(request.headers());
    let AttachRequest {
        wants_upgrade,
        host,
        rendezvous,
        upgrade,
        dyno,
    } = AttachRequest::read(request).await?;
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
async fn rendezvous_dyno<B: ApiService>(
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
    let secret = offer(rendezvous, attached, pipes)?;
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
pub(super) async fn run_inside<B: ApiService>(
    State(b): State<Arc<B>>,
    Path((app, dyno_name)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Reply<Response> {
    let AttachRequest {
        wants_upgrade,
        host,
        rendezvous,
        upgrade,
        mut dyno,
    } = AttachRequest::read(request).await?;
    if wants_upgrade {
        let Some(upgrade) = upgrade else {
            return Err(ApiError::bad_request(
                "this connection cannot be upgraded for run:inside",
            ));
        };
        let attached = b.attach_inside(&app, &dyno_name, dyno).await?;
        return Ok(switch_to_attach(upgrade, attached));
    }
    let (Some(rendezvous), Some(host)) = (&rendezvous, host) else {
        return Err(ApiError::bad_request(format!(
            "run:inside is attached: use `crew run:inside -a {app} {dyno_name} COMMAND`, or \
             Heroku's CLI over https"
        )));
    };
    terminal_from_cli_env(&mut dyno);
    let pipes = dyno.terminal.is_none();
    let command = dyno.command.clone();
    let attached = b.attach_inside(&app, &dyno_name, dyno).await?;
    let secret = offer(rendezvous, attached, pipes)?;
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

/// What a request for an attached process brings besides its JSON body: how
/// it can be attached (an upgrade to crew's framing, or a rendezvous for
/// Heroku's CLI at the host it reached) and the `DynoCreate` itself. Read
/// once for `run` and for `run:inside`, which attach the same two ways.
struct AttachRequest {
    wants_upgrade: bool,
    host: Option<String>,
    rendezvous: Option<crate::rendezvous::Rendezvous>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    dyno: DynoCreate,
}

impl AttachRequest {
    async fn read(mut request: axum::extract::Request) -> Reply<AttachRequest> {
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
        let Json(dyno) =
            <Json<DynoCreate> as axum::extract::FromRequest<()>>::from_request(request, &())
                .await?;
        Ok(AttachRequest {
            wants_upgrade,
            host,
            rendezvous,
            upgrade,
            dyno,
        })
    }
}

/// Keeps `attached` for the rendezvous and gives the secret its
/// `attach_url` carries.
fn offer(
    rendezvous: &crate::rendezvous::Rendezvous,
    attached: crate::attach::Attached,
    pipes: bool,
) -> Reply<String> {
    rendezvous
        .offer(attached, pipes)
        .map_err(|e| ApiError::unavailable(format!("reading /dev/urandom: {e}")))
}

/// Heroku's CLI (`User-Agent: heroku-cli/11.10.0 linux-x64`) wants an attached
/// dyno as an `attach_url` to rendezvous with, which crew does not offer.
fn from_heroku_cli(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("heroku-cli/"))
}

pub(super) async fn restart_all<B: ApiService>(
    State(b): State<Arc<B>>,
    Path(app): Path<String>,
) -> Reply<Json<serde_json::Value>> {
    b.restart(&app, None).await?;
    Ok(Json(serde_json::json!({})))
}

pub(super) async fn restart_one<B: ApiService>(
    State(b): State<Arc<B>>,
    Path((app, dyno)): Path<(String, String)>,
) -> Reply<Json<serde_json::Value>> {
    b.restart(&app, Some(dyno)).await?;
    Ok(Json(serde_json::json!({})))
}

pub(super) async fn stop<B: ApiService>(
    State(b): State<Arc<B>>,
    Path((app, dyno)): Path<(String, String)>,
) -> Reply<Json<serde_json::Value>> {
    b.stop(&app, dyno).await?;
    Ok(Json(serde_json::json!({})))
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
