use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Row};

use crate::releases::insert_release;
use crate::{
    App, AppRef, NewRelease, ReleaseStatus, Store, StoreError, find_app, new_id, now, validate,
};

pub(crate) const APP_COLUMNS: &str = "id, name, created_at, updated_at";

pub(crate) fn app_from_row(row: &Row<'_>) -> rusqlite::Result<App> {
    Ok(App {
        id: row.get(0)?,
        name: row.get(1)?,
        created_at: row.get(2)?,
        updated_at: row.get(3)?,
    })
}

impl Store {
    /// Creates an app and its release v1, "Initial release": no slug, no config,
    /// already succeeded, as Heroku does. Every app therefore always has a current
    /// release.
    pub fn create_app(&self, name: &str) -> Result<App, StoreError> {
        validate::app_name(name)?;
        self.write(|tx| {
            let taken = tx
                .query_row("SELECT 1 FROM apps WHERE name = ?1", [name], |_| Ok(()))
                .optional()?
                .is_some();
            if taken {
                return Err(StoreError::AppExists {
                    name: name.to_owned(),
                });
            }
            let now = now();
            let app = App {
                id: new_id(),
                name: name.to_owned(),
                created_at: now.clone(),
                updated_at: now,
            };
            tx.execute(
                "INSERT INTO apps (id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?4)",
                (&app.id, &app.name, &app.created_at, &app.updated_at),
            )?;
            let initial = NewRelease {
                slug_id: None,
                config: BTreeMap::new(),
                description: "Initial release".to_owned(),
                status: ReleaseStatus::Succeeded,
            };
            let app_ref = AppRef {
                id: app.id.clone(),
                name: app.name.clone(),
            };
            insert_release(tx, &app_ref, &initial, &app.created_at)?;
            Ok(app)
        })
    }

    /// The app with this name (or id).
    pub fn app(&self, app: &str) -> Result<App, StoreError> {
        self.read(|tx| {
            let found = find_app(tx, app)?;
            Ok(tx.query_row(
                &format!("SELECT {APP_COLUMNS} FROM apps WHERE id = ?1"),
                [&found.id],
                app_from_row,
            )?)
        })
    }

    /// All apps, by name.
    pub fn apps(&self) -> Result<Vec<App>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name"))?;
            let apps = stmt
                .query_map([], app_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(apps)
        })
    }

    /// Deletes the app and, through the foreign keys, every release, slug record,
    /// build, formation row and domain it owns. Files under the data directory (slug
    /// tarballs, caches) are the caller's to remove.
    pub fn destroy_app(&self, app: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            let found = find_app(tx, app)?;
            tx.execute("DELETE FROM apps WHERE id = ?1", [&found.id])?;
            Ok(())
        })
    }
}
