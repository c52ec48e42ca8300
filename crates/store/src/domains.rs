use rusqlite::{OptionalExtension, Row};

use crate::apps::app_from_row;
use crate::{App, Domain, Store, StoreError, find_app, new_id, now, validate};

const DOMAIN_SELECT: &str = "SELECT d.id, a.name, d.hostname, d.created_at \
     FROM domains d JOIN apps a ON a.id = d.app_id";

fn domain_from_row(row: &Row<'_>) -> rusqlite::Result<Domain> {
    Ok(Domain {
        id: row.get(0)?,
        app: row.get(1)?,
        hostname: row.get(2)?,
        created_at: row.get(3)?,
    })
}

impl Store {
    /// Routes `hostname` (lowercased; `*.example.com` is allowed) to the app. A
    /// hostname belongs to at most one app, this one included: adding it twice is
    /// `DomainTaken` too.
    pub fn add_domain(&self, app: &str, hostname: &str) -> Result<Domain, StoreError> {
        let hostname = validate::hostname(hostname)?;
        self.write(|tx| {
            let app = find_app(tx, app)?;
            let owner: Option<String> = tx
                .query_row(
                    "SELECT a.name FROM domains d JOIN apps a ON a.id = d.app_id \
                     WHERE d.hostname = ?1",
                    [&hostname],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(owner) = owner {
                return Err(StoreError::DomainTaken {
                    hostname,
                    app: owner,
                });
            }
            let domain = Domain {
                id: new_id(),
                app: app.name.clone(),
                hostname,
                created_at: now(),
            };
            tx.execute(
                "INSERT INTO domains (id, app_id, hostname, created_at) VALUES (?1, ?2, ?3, ?4)",
                (&domain.id, &app.id, &domain.hostname, &domain.created_at),
            )?;
            Ok(domain)
        })
    }

    pub fn remove_domain(&self, app: &str, hostname: &str) -> Result<(), StoreError> {
        let lower = hostname.to_ascii_lowercase();
        self.write(|tx| {
            let app = find_app(tx, app)?;
            let removed = tx.execute(
                "DELETE FROM domains WHERE app_id = ?1 AND hostname = ?2",
                (&app.id, &lower),
            )?;
            if removed == 0 {
                return Err(StoreError::not_found(format!(
                    "no domain `{hostname}` on `{}`",
                    app.name
                )));
            }
            Ok(())
        })
    }

    /// The app's domains, by hostname.
    pub fn domains(&self, app: &str) -> Result<Vec<Domain>, StoreError> {
        self.read(|tx| {
            let app = find_app(tx, app)?;
            let mut stmt = tx.prepare(&format!(
                "{DOMAIN_SELECT} WHERE d.app_id = ?1 ORDER BY d.hostname"
            ))?;
            let domains = stmt
                .query_map([&app.id], domain_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(domains)
        })
    }

    /// The app that serves `hostname` (any case, no port): an exact domain first,
    /// then a wildcard one level up (`a.example.com` matches `*.example.com`, as in
    /// DNS, but `a.b.example.com` does not).
    pub fn app_for_domain(&self, hostname: &str) -> Result<Option<App>, StoreError> {
        let exact = hostname.to_ascii_lowercase();
        let wildcard = exact
            .split_once('.')
            .map(|(_, parent)| format!("*.{parent}"));
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT a.id, a.name, a.created_at, a.updated_at \
                 FROM apps a JOIN domains d ON d.app_id = a.id WHERE d.hostname = ?1",
            )?;
            for candidate in std::iter::once(exact.as_str()).chain(wildcard.as_deref()) {
                if let Some(app) = stmt.query_row([candidate], app_from_row).optional()? {
                    return Ok(Some(app));
                }
            }
            Ok(None)
        })
    }
}
