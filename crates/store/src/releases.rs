use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::fault::{self, Point};
use crate::slugs::slug_of_app;
use crate::{
    AppRef, NewRelease, Release, ReleaseStatus, Store, StoreError, find_app, json_column, new_id,
    now, to_json, touch_app, validate,
};

const RELEASE_SELECT: &str = "SELECT r.id, a.name, r.version, r.slug_id, r.config, r.description, \
     r.status, r.created_at, r.updated_at FROM releases r JOIN apps a ON a.id = r.app_id";

fn release_from_row(row: &Row<'_>) -> rusqlite::Result<Release> {
    Ok(Release {
        id: row.get(0)?,
        app: row.get(1)?,
        version: row.get(2)?,
        slug_id: row.get(3)?,
        config: json_column(row, 4)?,
        description: row.get(5)?,
        status: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

/// Appends a release to `app`'s history. The version is read and used inside the
/// caller's write transaction, which holds SQLite's write lock, so two callers can
/// never both see the same maximum; `UNIQUE (app_id, version)` backs that up.
pub(crate) fn insert_release(
    conn: &Connection,
    app: &AppRef,
    new: &NewRelease,
    now: &str,
) -> Result<Release, StoreError> {
    validate::config(&new.config)?;
    if let Some(slug_id) = &new.slug_id {
        slug_of_app(conn, app, slug_id)?;
    }
    let next: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_id = ?1",
        [&app.id],
        |row| row.get(0),
    )?;
    let version = u32::try_from(next).map_err(|_| {
        StoreError::invalid(format!("`{}` has run out of release numbers", app.name))
    })?;
    fault::hit(Point::ReleaseVersionChosen)?;
    let release = Release {
        id: new_id(),
        app: app.name.clone(),
        version,
        slug_id: new.slug_id.clone(),
        config: new.config.clone(),
        description: new.description.clone(),
        status: new.status,
        created_at: now.to_owned(),
        updated_at: now.to_owned(),
    };
    conn.execute(
        "INSERT INTO releases (id, app_id, version, slug_id, config, description, status, \
         created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            release.id,
            app.id,
            release.version,
            release.slug_id,
            to_json(&release.config)?,
            release.description,
            release.status,
            release.created_at,
            release.updated_at,
        ],
    )?;
    fault::hit(Point::ReleaseInserted)?;
    touch_app(conn, app, now)?;
    Ok(release)
}

pub(crate) fn current_release_of(conn: &Connection, app: &AppRef) -> Result<Release, StoreError> {
    conn.query_row(
        &format!(
            "{RELEASE_SELECT} WHERE r.app_id = ?1 AND r.status = 'succeeded' \
             ORDER BY r.version DESC LIMIT 1"
        ),
        [&app.id],
        release_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::not_found(format!("no succeeded release for `{}`", app.name)))
}

fn release_of(conn: &Connection, app: &AppRef, version: u32) -> Result<Release, StoreError> {
    conn.query_row(
        &format!("{RELEASE_SELECT} WHERE r.app_id = ?1 AND r.version = ?2"),
        params![app.id, version],
        release_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::not_found(format!("no release v{version} for `{}`", app.name)))
}

/// A release derived from an earlier one (config change, rollback) must pass the
/// release phase again if its slug has one, just like a deploy; it is born pending
/// and becomes current only when the platform marks it succeeded.
fn derived_status(
    conn: &Connection,
    app: &AppRef,
    slug_id: Option<&str>,
) -> Result<ReleaseStatus, StoreError> {
    let needs_release_phase = match slug_id {
        Some(id) => slug_of_app(conn, app, id)?.release_command.is_some(),
        None => false,
    };
    Ok(if needs_release_phase {
        ReleaseStatus::Pending
    } else {
        ReleaseStatus::Succeeded
    })
}

fn config_change_description(set: &BTreeMap<String, String>, unset: &[String]) -> String {
    let set_names = set
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let unset_names = unset.join(", ");
    match (set.is_empty(), unset.is_empty()) {
        (false, true) => format!("Set {set_names} config vars"),
        (true, false) => format!("Remove {unset_names} config vars"),
        _ => format!("Set {set_names}, remove {unset_names} config vars"),
    }
}

impl Store {
    /// Appends a release with the next version. A deploy passes the new slug, the
    /// current config, a description such as "Deploy 1a2b3c4" and `Pending` if the
    /// slug has a release command (else `Succeeded`).
    pub fn create_release(&self, app: &str, new: NewRelease) -> Result<Release, StoreError> {
        self.write(|tx| {
            let app = find_app(tx, app)?;
            insert_release(tx, &app, &new, &now())
        })
    }

    /// Settles a pending release. Only `Pending` can change (to anything); setting a
    /// settled release to the status it already has is accepted and does nothing, so
    /// a retried call is harmless. Any other change is refused: history is not
    /// rewritten.
    pub fn set_release_status(
        &self,
        app: &str,
        version: u32,
        status: ReleaseStatus,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let app = find_app(tx, app)?;
            let release = release_of(tx, &app, version)?;
            if release.status == status {
                return Ok(());
            }
            if release.status != ReleaseStatus::Pending {
                return Err(StoreError::invalid(format!(
                    "release v{version} of `{}` is already {}; only a pending release can change status",
                    app.name, release.status
                )));
            }
            tx.execute(
                "UPDATE releases SET status = ?2, updated_at = ?3 WHERE id = ?1",
                params![release.id, status, now()],
            )?;
            Ok(())
        })
    }

    /// Every release of the app, newest first.
    pub fn releases(&self, app: &str) -> Result<Vec<Release>, StoreError> {
        self.read(|tx| {
            let app = find_app(tx, app)?;
            let mut stmt = tx.prepare(&format!(
                "{RELEASE_SELECT} WHERE r.app_id = ?1 ORDER BY r.version DESC"
            ))?;
            let releases = stmt
                .query_map([&app.id], release_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(releases)
        })
    }

    pub fn release(&self, app: &str, version: u32) -> Result<Release, StoreError> {
        self.read(|tx| {
            let app = find_app(tx, app)?;
            release_of(tx, &app, version)
        })
    }

    /// A release by its id, for the API paths and rollback bodies that name a
    /// release by id rather than version.
    pub fn release_by_id(&self, app: &str, id: &str) -> Result<Release, StoreError> {
        self.read(|tx| {
            let app = find_app(tx, app)?;
            tx.query_row(
                &format!("{RELEASE_SELECT} WHERE r.app_id = ?1 AND r.id = ?2"),
                [&app.id, id],
                release_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::not_found(format!("no release `{id}` for `{}`", app.name)))
        })
    }

    /// The release dynos should run: the highest version whose status is
    /// `Succeeded`. Pending and failed releases are skipped.
    pub fn current_release(&self, app: &str) -> Result<Release, StoreError> {
        self.read(|tx| {
            let app = find_app(tx, app)?;
            current_release_of(tx, &app)
        })
    }

    /// The app's config: that of its current release.
    pub fn config(&self, app: &str) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(self.current_release(app)?.config)
    }

    /// Makes a release with the current release's slug and its config changed by
    /// `set` and `unset`. The description defaults to Heroku's "Set FOO, BAR config
    /// vars" / "Remove FOO config vars" (and "Set FOO, remove BAR config vars" for
    /// both). Unsetting a var that is not set is allowed, as in Heroku; a change that
    /// sets and unsets the same name, or changes nothing at all, is refused. The new
    /// release is pending if the slug has a release command (see `derived_status`).
    pub fn update_config(
        &self,
        app: &str,
        set: &BTreeMap<String, String>,
        unset: &[String],
        description: Option<&str>,
    ) -> Result<Release, StoreError> {
        validate::config(set)?;
        let mut unset_names: Vec<String> = Vec::with_capacity(unset.len());
        for name in unset {
            validate::config_key(name)?;
            if set.contains_key(name) {
                return Err(StoreError::invalid(format!(
                    "config var `{name}` cannot be both set and unset"
                )));
            }
            if !unset_names.contains(name) {
                unset_names.push(name.clone());
            }
        }
        if set.is_empty() && unset_names.is_empty() {
            return Err(StoreError::invalid("no config vars to set or unset"));
        }
        self.write(|tx| {
            let app = find_app(tx, app)?;
            let base = current_release_of(tx, &app)?;
            let mut config = base.config.clone();
            for name in &unset_names {
                config.remove(name);
            }
            config.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            validate::config_size(&base.config, &config)?;
            let description = match description {
                Some(text) => text.to_owned(),
                None => config_change_description(set, &unset_names),
            };
            let status = derived_status(tx, &app, base.slug_id.as_deref())?;
            let new = NewRelease {
                slug_id: base.slug_id,
                config,
                description,
                status,
            };
            insert_release(tx, &app, &new, &now())
        })
    }

    /// Makes a release with the slug and config of release `version`, described as
    /// "Rollback to vN". Only a succeeded release can be rolled back to: a pending or
    /// failed one never ran. Status follows the same rule as a config change.
    pub fn rollback(&self, app: &str, version: u32) -> Result<Release, StoreError> {
        self.write(|tx| {
            let app = find_app(tx, app)?;
            let target = release_of(tx, &app, version)?;
            if target.status != ReleaseStatus::Succeeded {
                return Err(StoreError::invalid(format!(
                    "cannot roll back `{}` to v{version}: that release {}",
                    app.name,
                    match target.status {
                        ReleaseStatus::Pending => "is still pending",
                        _ => "failed",
                    }
                )));
            }
            // A release without a slug (v1, or config set before the first
            // deploy) has no code to run: as on Heroku, it cannot be rolled
            // back to.
            if target.slug_id.is_none() {
                return Err(StoreError::invalid(format!(
                    "cannot roll back `{}` to v{version}: that release has no slug (no code \
                     was deployed yet at v{version}); roll back to a release made by a deploy \
                     or after one",
                    app.name
                )));
            }
            let status = derived_status(tx, &app, target.slug_id.as_deref())?;
            let new = NewRelease {
                slug_id: target.slug_id,
                config: target.config,
                description: format!("Rollback to v{version}"),
                status,
            };
            insert_release(tx, &app, &new, &now())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions() {
        let set: BTreeMap<String, String> = [("FOO", "1"), ("BAR", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let unset = vec!["BAZ".to_owned(), "QUX".to_owned()];
        assert_eq!(
            config_change_description(&set, &[]),
            "Set BAR, FOO config vars"
        );
        assert_eq!(
            config_change_description(&BTreeMap::new(), &unset),
            "Remove BAZ, QUX config vars"
        );
        assert_eq!(
            config_change_description(&set, &unset),
            "Set BAR, FOO, remove BAZ, QUX config vars"
        );
    }
}
