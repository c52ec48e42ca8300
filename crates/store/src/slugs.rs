use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{
    AppRef, Build, BuildStatus, NewSlug, Slug, Store, StoreError, find_app, json_column, new_id,
    now, to_json, validate,
};

const SLUG_SELECT: &str = "SELECT s.id, a.name, s.path, s.process_types, s.commit_id, s.size, \
     s.buildpack, s.release_command, s.created_at FROM slugs s JOIN apps a ON a.id = s.app_id";

const BUILD_SELECT: &str = "SELECT b.id, a.name, b.status, b.source, b.slug_id, b.created_at, \
     b.updated_at FROM builds b JOIN apps a ON a.id = b.app_id";

fn slug_from_row(row: &Row<'_>) -> rusqlite::Result<Slug> {
    let size: i64 = row.get(5)?;
    Ok(Slug {
        id: row.get(0)?,
        app: row.get(1)?,
        path: row.get(2)?,
        process_types: json_column(row, 3)?,
        commit: row.get(4)?,
        size: u64::try_from(size).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, Type::Integer, Box::new(e))
        })?,
        buildpack: row.get(6)?,
        release_command: row.get(7)?,
        created_at: row.get(8)?,
    })
}

fn build_from_row(row: &Row<'_>) -> rusqlite::Result<Build> {
    Ok(Build {
        id: row.get(0)?,
        app: row.get(1)?,
        status: row.get(2)?,
        source: row.get(3)?,
        slug_id: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

/// The slug `id`, which must belong to `app`: a release or build pointing at
/// another app's code would be a confused deploy, never an intended one.
pub(crate) fn slug_of_app(conn: &Connection, app: &AppRef, id: &str) -> Result<Slug, StoreError> {
    conn.query_row(
        &format!("{SLUG_SELECT} WHERE s.app_id = ?1 AND s.id = ?2"),
        [&app.id, id],
        slug_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::not_found(format!("no slug `{id}` for `{}`", app.name)))
}

fn build_of(conn: &Connection, id: &str) -> Result<Build, StoreError> {
    conn.query_row(
        &format!("{BUILD_SELECT} WHERE b.id = ?1"),
        [id],
        build_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::not_found(format!("no build `{id}`")))
}

impl Store {
    /// Records a built slug. The tarball at `path` should already be in place (moved
    /// there by an atomic rename), so a slug row always names a complete file.
    pub fn create_slug(&self, app: &str, new: NewSlug) -> Result<Slug, StoreError> {
        for name in new.process_types.keys() {
            validate::process_type(name)?;
        }
        if new.path.is_empty() {
            return Err(StoreError::invalid("a slug needs the path of its tarball"));
        }
        let size = i64::try_from(new.size)
            .map_err(|_| StoreError::invalid(format!("slug size {} is too large", new.size)))?;
        self.write(|tx| {
            let app = find_app(tx, app)?;
            let slug = Slug {
                id: new_id(),
                app: app.name.clone(),
                path: new.path,
                process_types: new.process_types,
                commit: new.commit,
                size: new.size,
                buildpack: new.buildpack,
                release_command: new.release_command,
                created_at: now(),
            };
            tx.execute(
                "INSERT INTO slugs (id, app_id, path, process_types, commit_id, size, buildpack, \
                 release_command, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    slug.id,
                    app.id,
                    slug.path,
                    to_json(&slug.process_types)?,
                    slug.commit,
                    size,
                    slug.buildpack,
                    slug.release_command,
                    slug.created_at,
                ],
            )?;
            Ok(slug)
        })
    }

    pub fn slug(&self, id: &str) -> Result<Slug, StoreError> {
        self.read(|tx| {
            tx.query_row(
                &format!("{SLUG_SELECT} WHERE s.id = ?1"),
                [id],
                slug_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::not_found(format!("no slug `{id}`")))
        })
    }

    /// Records that a build of `source` (e.g. the pushed commit) has started.
    pub fn create_build(&self, app: &str, source: &str) -> Result<Build, StoreError> {
        self.write(|tx| {
            let app = find_app(tx, app)?;
            let now = now();
            let build = Build {
                id: new_id(),
                app: app.name.clone(),
                status: BuildStatus::Pending,
                source: source.to_owned(),
                slug_id: None,
                created_at: now.clone(),
                updated_at: now,
            };
            tx.execute(
                "INSERT INTO builds (id, app_id, status, source, slug_id, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6)",
                params![
                    build.id,
                    app.id,
                    build.status,
                    build.source,
                    build.created_at,
                    build.updated_at
                ],
            )?;
            Ok(build)
        })
    }

    /// Settles a pending build, once. A succeeded build must name the slug it made,
    /// and that slug must be its app's.
    pub fn finish_build(
        &self,
        id: &str,
        status: BuildStatus,
        slug_id: Option<&str>,
    ) -> Result<Build, StoreError> {
        if status == BuildStatus::Pending {
            return Err(StoreError::invalid(
                "a build can only be finished as succeeded or failed",
            ));
        }
        if status == BuildStatus::Succeeded && slug_id.is_none() {
            return Err(StoreError::invalid("a succeeded build needs its slug"));
        }
        self.write(|tx| {
            let build = build_of(tx, id)?;
            if build.status != BuildStatus::Pending {
                return Err(StoreError::invalid(format!(
                    "build `{id}` has already {}",
                    build.status
                )));
            }
            let app = find_app(tx, &build.app)?;
            if let Some(slug_id) = slug_id {
                slug_of_app(tx, &app, slug_id)?;
            }
            tx.execute(
                "UPDATE builds SET status = ?2, slug_id = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, status, slug_id, now()],
            )?;
            build_of(tx, id)
        })
    }

    /// Marks every build still pending as failed and returns them. Only for a
    /// server that is starting: no build of its can be running yet, so a
    /// pending one was cut off when an earlier server died mid-build.
    pub fn fail_unfinished_builds(&self) -> Result<Vec<Build>, StoreError> {
        self.write(|tx| {
            let mut stmt = tx.prepare(&format!(
                "{BUILD_SELECT} WHERE b.status = ?1 ORDER BY b.seq"
            ))?;
            let pending = stmt
                .query_map([BuildStatus::Pending], build_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let when = now();
            for build in &pending {
                tx.execute(
                    "UPDATE builds SET status = ?2, updated_at = ?3 WHERE id = ?1",
                    params![build.id, BuildStatus::Failed, when],
                )?;
            }
            Ok(pending
                .into_iter()
                .map(|b| Build {
                    status: BuildStatus::Failed,
                    updated_at: when.clone(),
                    ..b
                })
                .collect())
        })
    }

    pub fn build(&self, id: &str) -> Result<Build, StoreError> {
        self.read(|tx| build_of(tx, id))
    }

    /// Every build of the app, newest first.
    pub fn builds(&self, app: &str) -> Result<Vec<Build>, StoreError> {
        self.read(|tx| {
            let app = find_app(tx, app)?;
            let mut stmt = tx.prepare(&format!(
                "{BUILD_SELECT} WHERE b.app_id = ?1 ORDER BY b.seq DESC"
            ))?;
            let builds = stmt
                .query_map([&app.id], build_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(builds)
        })
    }
}
