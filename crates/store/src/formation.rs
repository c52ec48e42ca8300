use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, params};

use crate::releases::current_release_of;
use crate::slugs::slug_of_app;
use crate::{
    AppRef, FormationRow, RELEASE_PROCESS_TYPE, Store, StoreError, find_app, now, touch_app,
    validate,
};

/// The formation of the current release: one row per process type its slug
/// declares, by type name. A type nobody has scaled yet gets Heroku's first-deploy
/// default, `web` at 1 and every other type at 0, so a first `git push` serves
/// without a `scale` and a worker never starts uninvited. Stored rows of types the
/// current slug no longer declares are kept (a rollback brings them back) but not
/// shown.
fn formation_of(conn: &Connection, app: &AppRef) -> Result<Vec<FormationRow>, StoreError> {
    let types = process_types(conn, app)?;
    let mut stored: BTreeMap<String, (u32, String)> = BTreeMap::new();
    let mut stmt =
        conn.prepare("SELECT process_type, quantity, size FROM formation WHERE app_id = ?1")?;
    let rows = stmt.query_map([&app.id], |row| {
        Ok((row.get::<_, String>(0)?, (row.get(1)?, row.get(2)?)))
    })?;
    for row in rows {
        let (process_type, value) = row?;
        stored.insert(process_type, value);
    }
    Ok(types
        .into_iter()
        .map(|process_type| match stored.remove(&process_type) {
            Some((quantity, size)) => FormationRow {
                process_type,
                quantity,
                size,
            },
            None => {
                let quantity = u32::from(process_type == "web");
                FormationRow::new(process_type, quantity)
            }
        })
        .collect())
}

/// The scalable types of the current release's slug (none before the first deploy).
fn process_types(conn: &Connection, app: &AppRef) -> Result<BTreeSet<String>, StoreError> {
    let current = current_release_of(conn, app)?;
    let Some(slug_id) = current.slug_id else {
        return Ok(BTreeSet::new());
    };
    let slug = slug_of_app(conn, app, &slug_id)?;
    Ok(slug
        .process_types
        .into_keys()
        .filter(|name| name != RELEASE_PROCESS_TYPE)
        .collect())
}

impl Store {
    /// See `formation_of` for which rows appear and their defaults.
    pub fn formation(&self, app: &str) -> Result<Vec<FormationRow>, StoreError> {
        self.read(|tx| {
            let app = find_app(tx, app)?;
            formation_of(tx, &app)
        })
    }

    /// Sets quantity and size of each given type, all or nothing, and returns the
    /// whole formation afterwards. Every type must be one the current release
    /// declares; naming a type twice is refused. An empty `size` keeps the type's
    /// size.
    pub fn set_formation(
        &self,
        app: &str,
        rows: &[FormationRow],
    ) -> Result<Vec<FormationRow>, StoreError> {
        let mut seen = BTreeSet::new();
        for row in rows {
            validate::process_type(&row.process_type)?;
            validate::quantity(&row.process_type, row.quantity)?;
            if !row.size.is_empty() {
                validate::size(&row.size)?;
            }
            if !seen.insert(row.process_type.as_str()) {
                return Err(StoreError::invalid(format!(
                    "process type `{}` is given twice",
                    row.process_type
                )));
            }
        }
        self.write(|tx| {
            let app = find_app(tx, app)?;
            let before = formation_of(tx, &app)?;
            let now = now();
            for row in rows {
                let Some(old) = before.iter().find(|r| r.process_type == row.process_type) else {
                    return Err(StoreError::not_found(format!(
                        "no process type `{}` in the current release of `{}`",
                        row.process_type, app.name
                    )));
                };
                let size = if row.size.is_empty() {
                    old.size.as_str()
                } else {
                    row.size.as_str()
                };
                tx.execute(
                    "INSERT INTO formation (app_id, process_type, quantity, size, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (app_id, process_type) DO UPDATE SET \
                     quantity = excluded.quantity, size = excluded.size, \
                     updated_at = excluded.updated_at",
                    params![app.id, row.process_type, row.quantity, size, now],
                )?;
            }
            if !rows.is_empty() {
                touch_app(tx, &app, &now)?;
            }
            formation_of(tx, &app)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_size_is_a_valid_size() {
        assert!(crate::validate::size(crate::DEFAULT_SIZE).is_ok());
    }
}
