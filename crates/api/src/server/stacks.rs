//! Stacks and regions: crew has one of each, always the same, which
//! `apps:info` names.

use axum::Json;

/// The one region crew has, where `apps:info` says an app is: this server.
pub(super) async fn regions() -> Json<serde_json::Value> {
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
pub(super) async fn stacks() -> Json<serde_json::Value> {
    Json(serde_json::json!([{
        "id": "crew",
        "name": "crew",
        "state": "default",
        "default": true,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }]))
}
