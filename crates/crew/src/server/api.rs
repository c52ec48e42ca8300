//! `ServerApi`: the platform behind the API's `ApiService` trait, turning
//! each route's request into platform calls and platform errors into HTTP
//! statuses.
//!
//! What the JSON looks like is `views`'s; how a one-off's terminal and exit
//! travel is `one_off`'s.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use crew_api::server::{ApiError, ApiService, LogStream};
use crew_api::types::{
    Account, AppCreate, AppInfo, AppRef, BUILD_RESULT_PREFIX, BuildCreate, Dyno, DynoCreate,
    FormationEntry, FormationUpdate, LogQuery, ReleaseCreate, ReleaseInfo,
};
use crew_platform::{Platform, PlatformError};
use crew_store::StoreError;

use super::one_off::{attached, attached_input, one_off_request};
use super::views;
use crate::api_view::log_stream_with_router_errors;

pub struct ServerApi {
    pub platform: Arc<Platform>,
    /// The API's own URL, which git URLs and upload URLs start with.
    pub url: String,
    /// Handed to the git hook, which calls the API back with it.
    pub token: String,
    pub router_port: u16,
    /// Where custom domains' DNS should point (`cname`): the first
    /// `--hostname`, else the address the server listens on.
    pub dns_target: String,
}

fn api_error(e: PlatformError) -> ApiError {
    match &e {
        PlatformError::Store(store) => match store {
            StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
            StoreError::InvalidName { .. }
            | StoreError::AppExists { .. }
            | StoreError::DomainTaken { .. }
            | StoreError::Invalid { .. } => ApiError::invalid(e.to_string()),
            _ => ApiError::unavailable(e.to_string()),
        },
        PlatformError::UnknownDyno(_) => ApiError::not_found(e.to_string()),
        PlatformError::Formation(_) | PlatformError::Invalid(_) => ApiError::invalid(e.to_string()),
        PlatformError::ShuttingDown => ApiError::unavailable(e.to_string()),
        PlatformError::Build(_) | PlatformError::Io { .. } => ApiError::invalid(e.to_string()),
    }
}

impl ServerApi {
    fn app_info(&self, app: crew_store::App) -> AppInfo {
        views::app_info(&self.platform, &self.url, self.router_port, app)
    }

    fn release_info(&self, app: &str, release: crew_store::Release) -> ReleaseInfo {
        views::release_info(&self.platform, &self.url, app, release)
    }

    fn formation_entries(&self, app: &str) -> Result<Vec<FormationEntry>, ApiError> {
        let store = self.platform.store();
        let info = store.app(app).map_err(|e| api_error(e.into()))?;
        let rows = store.formation(app).map_err(|e| api_error(e.into()))?;
        let commands = store
            .current_release(app)
            .ok()
            .and_then(|r| r.slug_id)
            .and_then(|id| store.slug(&id).ok())
            .map(|s| s.process_types)
            .unwrap_or_default();
        Ok(views::formation(&info, rows, &commands))
    }
}

impl ApiService for ServerApi {
    async fn dynos(&self, app: &str) -> Result<Vec<Dyno>, ApiError> {
        let info = self
            .platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?;
        let dynos = self.platform.ps(app).await.map_err(api_error)?;
        Ok(views::dynos_of(&self.platform, &info, dynos))
    }

    async fn create_dyno(&self, app: &str, request: DynoCreate) -> Result<Dyno, ApiError> {
        let info = self
            .platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?;
        let (dyno, _) = self
            .platform
            .run(app, one_off_request(request, crew_runtime::DynoInput::Idle))
            .await
            .map_err(api_error)?;
        views::dynos_of(&self.platform, &info, vec![dyno])
            .pop()
            .ok_or_else(|| ApiError::unavailable("the dyno vanished"))
    }

    async fn attach(
        &self,
        app: &str,
        request: DynoCreate,
    ) -> Result<crew_api::attach::Attached, ApiError> {
        let input = attached_input(&request);
        let (_, attachment) = self
            .platform
            .run(app, one_off_request(request, input))
            .await
            .map_err(api_error)?;
        let attachment =
            attachment.ok_or_else(|| ApiError::unavailable("the one-off started detached"))?;
        attached(attachment, "the one-off did not start").await
    }

    async fn attach_inside(
        &self,
        app: &str,
        dyno: &str,
        request: DynoCreate,
    ) -> Result<crew_api::attach::Attached, ApiError> {
        let input = attached_input(&request);
        let attachment = self
            .platform
            .run_inside(app, dyno, one_off_request(request, input))
            .await
            .map_err(api_error)?;
        attached(attachment, "the process did not start").await
    }

    async fn restart(&self, app: &str, target: Option<String>) -> Result<(), ApiError> {
        self.platform.restart(app, target).await.map_err(api_error)
    }

    /// `ps:stop` / `ps:kill`: as on Heroku, a stopped formation dyno is
    /// started again per the formation (scale to 0 to keep a type down), and a
    /// one-off ends. A restart is exactly that.
    async fn stop(&self, app: &str, target: String) -> Result<(), ApiError> {
        self.platform
            .restart(app, Some(target))
            .await
            .map_err(api_error)
    }

    async fn formation(&self, app: &str) -> Result<Vec<FormationEntry>, ApiError> {
        self.platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?;
        self.formation_entries(app)
    }

    async fn scale(
        &self,
        app: &str,
        update: FormationUpdate,
    ) -> Result<Vec<FormationEntry>, ApiError> {
        self.platform
            .scale(app, &update.updates)
            .await
            .map_err(api_error)?;
        self.formation_entries(app)
    }

    async fn logs(&self, app: &str, query: LogQuery) -> Result<LogStream, ApiError> {
        let ring = self.platform.logs(app).map_err(api_error)?;
        let router_errors = self.platform.router_error_lines(app).map_err(api_error)?;
        log_stream_with_router_errors(&ring, Some(&router_errors), query)
    }

    async fn apps(&self) -> Result<Vec<AppInfo>, ApiError> {
        let apps = self
            .platform
            .store()
            .apps()
            .map_err(|e| api_error(e.into()))?;
        Ok(apps.into_iter().map(|a| self.app_info(a)).collect())
    }

    async fn create_app(&self, request: AppCreate) -> Result<AppInfo, ApiError> {
        if let Some(name) = request.name {
            let app = self.platform.create_app(&name).await.map_err(api_error)?;
            return Ok(self.app_info(app));
        }
        // No name: draw Heroku-style names until one is free. With 48 × 48 ×
        // 9000 names, running out of draws means the server is all but full.
        for _ in 0..100 {
            let random = crate::names::random()
                .map_err(|e| ApiError::unavailable(format!("reading /dev/urandom: {e}")))?;
            match self
                .platform
                .create_app(&crate::names::app_name(random))
                .await
            {
                Ok(app) => return Ok(self.app_info(app)),
                Err(PlatformError::Store(StoreError::AppExists { .. })) => continue,
                Err(e) => return Err(api_error(e)),
            }
        }
        Err(ApiError::invalid(
            "no free app name in 100 tries: give the app a name",
        ))
    }

    async fn app(&self, app: &str) -> Result<AppInfo, ApiError> {
        let app = self
            .platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?;
        Ok(self.app_info(app))
    }

    async fn destroy_app(&self, app: &str) -> Result<AppInfo, ApiError> {
        let info = self.app(app).await?;
        self.platform.destroy_app(app).await.map_err(api_error)?;
        Ok(info)
    }

    async fn config(&self, app: &str) -> Result<BTreeMap<String, String>, ApiError> {
        self.platform
            .store()
            .config(app)
            .map_err(|e| api_error(e.into()))
    }

    async fn update_config(
        &self,
        app: &str,
        changes: BTreeMap<String, Option<String>>,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let mut set = BTreeMap::new();
        let mut unset = Vec::new();
        for (key, value) in changes {
            match value {
                Some(v) => {
                    set.insert(key, v);
                }
                None => unset.push(key),
            }
        }
        self.platform
            .set_config(app, &set, &unset)
            .await
            .map_err(api_error)?;
        self.config(app).await
    }

    async fn releases(&self, app: &str) -> Result<Vec<ReleaseInfo>, ApiError> {
        let releases = self
            .platform
            .store()
            .releases(app)
            .map_err(|e| api_error(e.into()))?;
        Ok(releases
            .into_iter()
            .map(|r| self.release_info(app, r))
            .collect())
    }

    async fn release(&self, app: &str, release: &str) -> Result<ReleaseInfo, ApiError> {
        let release = self.find_release(app, release)?;
        Ok(self.release_info(app, release))
    }

    async fn release_config(
        &self,
        app: &str,
        release: &str,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        Ok(self.find_release(app, release)?.config)
    }

    async fn account(&self) -> Result<Account, ApiError> {
        Ok(views::account(self.platform.data()))
    }

    async fn rollback(&self, app: &str, request: ReleaseCreate) -> Result<ReleaseInfo, ApiError> {
        let store = self.platform.store();
        let version = match parse_version(&request.release) {
            Ok(v) => v,
            Err(_) => store
                .releases(app)
                .map_err(|e| api_error(e.into()))?
                .into_iter()
                .find(|r| r.id == request.release)
                .map(|r| r.version)
                .ok_or_else(|| ApiError::not_found(format!("no release {}", request.release)))?,
        };
        let release = self
            .platform
            .rollback(app, version)
            .await
            .map_err(api_error)?;
        Ok(self.release_info(app, release))
    }

    /// The app's own hostname (`kind: heroku`), then its custom domains.
    async fn domains(&self, app: &str) -> Result<Vec<crew_api::types::DomainInfo>, ApiError> {
        let store = self.platform.store();
        let info = store.app(app).map_err(|e| api_error(e.into()))?;
        let domains = store.domains(app).map_err(|e| api_error(e.into()))?;
        let app_ref = AppRef {
            id: info.id.clone(),
            name: info.name.clone(),
        };
        let own = views::own_domain(info);
        Ok(std::iter::once(own)
            .chain(domains.into_iter().map(|d| {
                let mut domain = views::domain_info(d);
                domain.cname = Some(self.dns_target.clone());
                domain.app = Some(app_ref.clone());
                domain
            }))
            .collect())
    }

    async fn add_domain(
        &self,
        app: &str,
        request: crew_api::types::DomainCreate,
    ) -> Result<crew_api::types::DomainInfo, ApiError> {
        let mut domain = self
            .platform
            .add_domain(app, &request.hostname)
            .map(views::domain_info)
            .map_err(api_error)?;
        domain.cname = Some(self.dns_target.clone());
        Ok(domain)
    }

    async fn update_app(
        &self,
        app: &str,
        update: crew_api::types::AppUpdate,
    ) -> Result<AppInfo, ApiError> {
        let mut name = self
            .platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?
            .name;
        // Everything is checked before anything changes.
        if let Some(stack) = &update.build_stack
            && stack != "crew"
        {
            return Err(ApiError::invalid(format!(
                "`{stack}` is not a stack of this server: crew has one, `crew`"
            )));
        }
        if let Some(new_name) = &update.name {
            name = self
                .platform
                .rename_app(&name, new_name)
                .await
                .map_err(api_error)?
                .name;
        }
        if let Some(on) = update.maintenance {
            self.platform
                .set_maintenance(&name, on)
                .await
                .map_err(api_error)?;
        }
        self.app(&name).await
    }

    async fn buildpacks(&self, app: &str) -> Result<Vec<String>, ApiError> {
        self.platform.buildpacks(app).map_err(api_error)
    }

    async fn set_buildpacks(
        &self,
        app: &str,
        buildpacks: Vec<String>,
    ) -> Result<Vec<String>, ApiError> {
        self.platform
            .set_buildpacks(app, &buildpacks)
            .await
            .map_err(api_error)
    }

    async fn release_output(&self, release_id: &str) -> Result<Option<(String, String)>, ApiError> {
        Ok(self
            .platform
            .store()
            .release_output(release_id)
            .map_err(|e| api_error(e.into()))?
            .map(|o| (o.secret, o.output)))
    }

    async fn remove_domain(&self, app: &str, hostname: &str) -> Result<(), ApiError> {
        self.platform
            .remove_domain(app, hostname)
            .map_err(api_error)
    }

    async fn builds(&self, app: &str) -> Result<Vec<crew_api::types::BuildInfo>, ApiError> {
        let builds = self
            .platform
            .store()
            .builds(app)
            .map_err(|e| api_error(e.into()))?;
        Ok(builds.into_iter().map(views::build_info).collect())
    }

    async fn build(&self, app: &str, request: BuildCreate) -> Result<LogStream, ApiError> {
        self.platform
            .store()
            .app(app)
            .map_err(|e| api_error(e.into()))?;
        let source = self.source_named(&request.source_blob.url)?;
        let commit = request.source_blob.version.unwrap_or_default();
        let (out, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        let platform = self.platform.clone();
        let app = app.to_string();
        tokio::spawn(async move {
            let result = platform.deploy(&app, source, commit, out.clone()).await;
            let last = match result {
                Ok(release) => format!("{BUILD_RESULT_PREFIX}succeeded v{}", release.version),
                Err(e) => {
                    let _ = out.send(format!(" !     {e}"));
                    format!("{BUILD_RESULT_PREFIX}failed")
                }
            };
            let _ = out.send(last);
        });
        Ok(Box::pin(futures_util::stream::unfold(
            lines,
            |mut lines| async move {
                let line = lines.recv().await?;
                Some((Bytes::from(format!("{line}\n")), lines))
            },
        )))
    }

    async fn app_id(&self, app: &str) -> Result<String, ApiError> {
        self.platform
            .store()
            .app(app)
            .map(|a| a.id)
            .map_err(|e| api_error(e.into()))
    }

    fn public_url(&self) -> Option<String> {
        Some(self.url.clone())
    }

    async fn create_source(&self) -> Result<String, ApiError> {
        self.platform
            .create_source()
            .map(|id| id.to_string())
            .map_err(api_error)
    }

    async fn upload_source(&self, id: &str, body: axum::body::Body) -> Result<(), ApiError> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let id = crew_platform::SourceId::parse(id)
            .ok_or_else(|| ApiError::not_found(format!("no such source: {id}")))?;
        let file = self.platform.source_upload(&id).map_err(api_error)?;
        let mut file = tokio::fs::File::from_std(file);
        let mut body = body.into_data_stream();
        let mut written: u64 = 0;
        let failed = |what: String| ApiError::unavailable(format!("storing source {id}: {what}"));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| failed(e.to_string()))?;
            written += chunk.len() as u64;
            if written > crew_platform::MAX_SOURCE_BYTES {
                drop(file);
                let _ = self.platform.source_upload(&id);
                return Err(ApiError {
                    status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    id: "too_large",
                    message: format!(
                        "a source may hold at most {} bytes",
                        crew_platform::MAX_SOURCE_BYTES
                    ),
                });
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| failed(e.to_string()))?;
        }
        file.flush().await.map_err(|e| failed(e.to_string()))?;
        Ok(())
    }

    async fn git(&self, app: &str, request: axum::extract::Request) -> axum::response::Response {
        use axum::response::IntoResponse;
        if let Err(e) = self.platform.store().app(app) {
            return api_error(e.into()).into_response();
        }
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        crew_api::git::serve(
            &self.platform.repos(),
            crew_api::git::GitRequest {
                method: parts.method.clone(),
                path_info: &path,
                query: &query,
                headers: &parts.headers,
                body,
                remote_user: "crew",
                hook_env: vec![
                    ("CREW_HOOK_URL".into(), self.url.clone()),
                    ("CREW_API_KEY".into(), self.token.clone()),
                ],
            },
        )
        .await
    }
}

impl ServerApi {
    /// The uploaded source a build's `source_blob.url` names: only a URL this
    /// server handed out from `POST /sources`. A path on the host (`file://`
    /// or bare) is refused: it would build whatever directory a request
    /// named.
    fn source_named(&self, url: &str) -> Result<crew_platform::SourceId, ApiError> {
        let accepted = "source_blob.url must be a URL from POST /sources on this server \
                        (upload a .tar or .tar.gz of the source to its put_url first)";
        if let Some(id) = url
            .strip_prefix(self.url.as_str())
            .and_then(|rest| rest.strip_prefix("/sources/"))
        {
            return crew_platform::SourceId::parse(id)
                .ok_or_else(|| ApiError::invalid(format!("`{url}` names no source: {accepted}")));
        }
        if url.starts_with("https://") || url.starts_with("http://") {
            return Err(ApiError::invalid(format!(
                "crew does not fetch source tarballs from other servers yet: {accepted}"
            )));
        }
        Err(ApiError::invalid(format!(
            "`{url}` is not accepted: crew never builds from a path on the server. {accepted}"
        )))
    }

    /// A release by version (`3`, `v3`) or id.
    fn find_release(&self, app: &str, release: &str) -> Result<crew_store::Release, ApiError> {
        let store = self.platform.store();
        match parse_version(release) {
            Ok(version) => store.release(app, version),
            Err(_) => store.release_by_id(app, release),
        }
        .map_err(|e| api_error(e.into()))
    }
}

fn parse_version(text: &str) -> Result<u32, ApiError> {
    text.trim_start_matches('v')
        .parse()
        .map_err(|_| ApiError::invalid(format!("`{text}` is not a release version like v3")))
}
