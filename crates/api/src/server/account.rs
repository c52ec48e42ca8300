//! `GET /account`: who the token belongs to, which Heroku's CLI asks before
//! most commands (`heroku auth:whoami`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::service::{ApiService, Reply};
use crate::types::Account;

pub(super) async fn account<B: ApiService>(State(b): State<Arc<B>>) -> Reply<Json<Account>> {
    b.account().await.map(Json)
}
