//! An app's logs: its log ring, and the router's errors for it (counts and
//! latest lines) for `logs` and `apps:info`.

use std::sync::Arc;

use crew_logs::LogRing;

use crate::{Platform, PlatformError};

impl Platform {
    /// The router's failed requests to `app` by error code since the server
    /// started; none for an app that has not run.
    pub fn router_errors(&self, app: &str) -> std::collections::BTreeMap<String, u64> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.get(app).map(|a| a.router_errors()).unwrap_or_default()
    }

    pub fn logs(&self, app: &str) -> Result<Arc<LogRing>, PlatformError> {
        self.store.app(app)?;
        Ok(self.running_app(app).ring())
    }

    /// The router's latest error lines for `app`, kept apart from its log
    /// (which has them too, until they leave it).
    pub fn router_error_lines(&self, app: &str) -> Result<Arc<LogRing>, PlatformError> {
        self.store.app(app)?;
        Ok(self.running_app(app).router_error_lines())
    }
}
