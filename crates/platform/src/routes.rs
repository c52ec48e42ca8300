//! Which app a request's host names: `APP.localhost`, and custom domains,
//! kept in the store and mirrored in memory because the router asks on
//! every request and must not wait on the store.

use crew_router::AppRoute;

use crate::{Platform, PlatformError};

/// The hostname suffix every app answers on without DNS setup.
pub const LOCAL_SUFFIX: &str = ".localhost";

impl Platform {
    pub(crate) fn remember_domain(&self, hostname: &str, app: Option<&str>) {
        let mut domains = self.domains.write().unwrap_or_else(|p| p.into_inner());
        match app {
            Some(app) => domains.insert(hostname.to_string(), app.to_string()),
            None => domains.remove(hostname),
        };
    }

    pub fn add_domain(
        &self,
        app: &str,
        hostname: &str,
    ) -> Result<crew_store::Domain, PlatformError> {
        let domain = self.store.add_domain(app, hostname)?;
        self.remember_domain(&domain.hostname, Some(app));
        Ok(domain)
    }

    pub fn remove_domain(&self, app: &str, hostname: &str) -> Result<(), PlatformError> {
        self.store.remove_domain(app, hostname)?;
        self.remember_domain(&hostname.to_ascii_lowercase(), None);
        Ok(())
    }

    /// The app a request's host names: `APP.localhost` (any subdomain of it
    /// too), or a custom domain, exact or one wildcard level up. In the
    /// router's own type, so the binary hands it over as it is.
    pub fn route(&self, host: &str) -> Option<AppRoute> {
        let running = |app: String| {
            let running = self
                .apps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&app)
                .cloned()?;
            Some((app, running))
        };
        let (app, running) = match host.strip_suffix(LOCAL_SUFFIX) {
            Some(rest) => running(rest.rsplit('.').next().unwrap_or(rest).to_string())?,
            None => {
                // Let go of the domains before taking the apps' lock.
                let app = {
                    let domains = self.domains.read().unwrap_or_else(|p| p.into_inner());
                    match domains.get(host) {
                        Some(app) => app.clone(),
                        None => {
                            let (_, parent) = host.split_once('.')?;
                            domains.get(&format!("*.{parent}"))?.clone()
                        }
                    }
                };
                running(app)?
            }
        };
        Some(AppRoute {
            backends: running.web_backends(),
            log: running.router_log(),
            maintenance: running.in_maintenance(),
            app,
        })
    }
}
