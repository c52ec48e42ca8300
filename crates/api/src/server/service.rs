//! `ApiService`: what answers the API, the contract between the routes and
//! whoever serves them (a local `crew start`, or `crew server`).
//!
//! Separate from the route table so that every handler file can name it
//! without importing the module that imports them.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;

use super::error::ApiError;
use crate::types::{
    Account, AppCreate, AppInfo, BuildCreate, BuildInfo, DomainCreate, DomainInfo, Dyno,
    DynoCreate, FormationEntry, FormationUpdate, LogQuery, ReleaseCreate, ReleaseInfo,
};

/// Lines of log text, each ending in `\n`.
pub type LogStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

pub(super) type Reply<T> = Result<T, ApiError>;

/// What answers the API: the local runner's formation, or the server's apps.
pub trait ApiService: Send + Sync + 'static {
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
    /// the caller like [`ApiService::attach`].
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
    /// Stores the tarball `PUT` to a source made by [`ApiService::create_source`].
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
