//! The state of `crew server`: apps, releases, config vars, slugs, builds, formation
//! and domains, in one SQLite database.
//!
//! Theory of operation. A [`Store`] owns one connection behind a mutex. Every public
//! method locks it, runs one transaction and returns plain values, so no caller ever
//! sees SQL, a connection or a half-done change. Writes open their transaction with
//! `BEGIN IMMEDIATE`, which takes SQLite's write lock before the first read; anything
//! computed from what the transaction read (the next release version, whether a name
//! or hostname is free) therefore still holds when it commits, even against another
//! process writing the same file. A crash at any instant leaves each write either
//! committed whole or absent, which is SQLite's guarantee, and the tests check it by
//! killing a writer mid-transaction.
//!
//! The model follows Heroku's. An app's history is its releases `v1, v2, …`, numbered
//! per app without gaps; each release pins a slug (the built code, absent for `v1`)
//! and the complete config. Nothing is ever edited in place: a config change or a
//! rollback is a new release made from the current one. The *current* release, the
//! one dynos should run, is the highest-numbered `succeeded` release, so a release
//! whose release phase is pending or failed never takes over. Config maps and process
//! types are stored as JSON text: they are always read and written whole.
//!
//! The database file uses WAL (readers never block the writer), `synchronous=FULL`
//! (a commit survives power loss, which is worth an fsync at deploy rates), foreign
//! keys (destroying an app cascades to everything it owns) and versioned migrations
//! (see `schema.rs`).
//!
//! Wherever a method takes `app`, either the app's name or its id is accepted, as in
//! Heroku's `{app_id_or_name}`: a UUID is too long to be a name, so they never clash.

mod app_settings;
mod apps;
mod domains;
mod error;
mod fault;
mod formation;
mod model;
mod releases;
mod schema;
mod slugs;
mod uids;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

pub use app_settings::{
    AppSettings, MAX_BUILDPACK_LEN, MAX_BUILDPACKS, MAX_RELEASE_OUTPUT, ReleaseOutput,
};
pub use error::StoreError;
pub use model::{
    App, Build, BuildStatus, DEFAULT_SIZE, Domain, FormationRow, MAX_QUANTITY, NewRelease, NewSlug,
    RELEASE_PROCESS_TYPE, Release, ReleaseStatus, Slug,
};

/// How long a call waits for another process's write lock before giving up. Writes
/// here take milliseconds, so hitting this means something is stuck.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The handle to the database; share it between threads (and tasks) by reference
/// or `Arc`.
pub struct Store {
    // A plain mutex is enough: each call holds it for one short transaction (a few
    // indexed statements, no I/O beyond SQLite's), and SQLite admits one writer at a
    // time anyway, so a pool would only add connections waiting on the same lock.
    // Calling from async code without `spawn_blocking` is acceptable at these
    // durations.
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to
    /// date. The parent directory must exist: the data directory is the caller's to
    /// create, with the permissions it wants.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::invalid(format!(
                "{} cannot use SQLite's WAL journal (it stays in `{mode}` mode); put the data directory on a local filesystem",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        Store::finish_open(conn)
    }

    /// A private, empty database that vanishes with the `Store`; for tests and
    /// throwaway servers.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::finish_open(Connection::open_in_memory()?)
    }

    fn finish_open(mut conn: Connection) -> Result<Store, StoreError> {
        // Must precede the migrations: the pragma is a no-op inside a transaction.
        conn.pragma_update(None, "foreign_keys", true)?;
        schema::migrations().to_latest(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held unwound through the `Transaction`, whose
        // drop rolled it back, so the connection behind a poisoned lock is fine.
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if !conn.is_autocommit() {
            // Only reachable if that rollback itself failed; starting the next
            // transaction inside the leftover one would fail every later call.
            let _ = conn.execute_batch("ROLLBACK");
        }
        conn
    }

    /// Runs `f` in one write transaction and commits only if it returns `Ok`.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        fault::hit(fault::Point::BeforeCommit)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` in one read transaction, so all its queries see the same snapshot.
    fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        f(&tx)
    }
}

/// An app as the other tables refer to it.
#[derive(Debug, Clone)]
pub(crate) struct AppRef {
    pub(crate) id: String,
    pub(crate) name: String,
}

/// Resolves an app by name or id.
pub(crate) fn find_app(conn: &Connection, app: &str) -> Result<AppRef, StoreError> {
    conn.query_row(
        "SELECT id, name FROM apps WHERE name = ?1 OR id = ?1",
        [app],
        |row| {
            Ok(AppRef {
                id: row.get(0)?,
                name: row.get(1)?,
            })
        },
    )
    .optional()?
    .ok_or_else(|| StoreError::not_found(format!("no app named `{app}`")))
}

pub(crate) fn touch_app(conn: &Connection, app: &AppRef, now: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE apps SET updated_at = ?2 WHERE id = ?1",
        (&app.id, now),
    )?;
    Ok(())
}

/// The current time as RFC 3339 UTC with whole seconds, Heroku's format.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn to_json(map: &BTreeMap<String, String>) -> Result<String, StoreError> {
    serde_json::to_string(map)
        .map_err(|e| StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))
}

/// Reads a JSON-object column back into a map; a malformed value is reported as
/// the conversion error of that column rather than a panic.
pub(crate) fn json_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<BTreeMap<String, String>> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}
