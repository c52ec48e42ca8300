//! The schema, as an append-only list of migrations. A shipped migration is never
//! edited: the database records only how many have run (`user_version`), so a change
//! to an old one would silently not reach existing servers. Add a new one instead.

use rusqlite_migration::{M, Migrations};

const V1: &str = r#"
CREATE TABLE apps (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE slugs (
    id              TEXT PRIMARY KEY NOT NULL,
    app_id          TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    path            TEXT NOT NULL,
    process_types   TEXT NOT NULL,  -- JSON object: type -> command
    commit_id       TEXT,
    size            INTEGER NOT NULL CHECK (size >= 0),
    buildpack       TEXT,
    release_command TEXT,
    created_at      TEXT NOT NULL,
    -- The target of the (app_id, slug_id) references below, which make it
    -- impossible for a release or build to point at another app's slug.
    UNIQUE (app_id, id)
) STRICT;

CREATE TABLE releases (
    id          TEXT PRIMARY KEY NOT NULL,
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL CHECK (version >= 1),
    slug_id     TEXT,
    config      TEXT NOT NULL,  -- JSON object: name -> value
    description TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (app_id, version),
    FOREIGN KEY (app_id, slug_id) REFERENCES slugs (app_id, id)
) STRICT;

CREATE TABLE builds (
    seq        INTEGER PRIMARY KEY,  -- creation order, for listing
    id         TEXT NOT NULL UNIQUE,
    app_id     TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    status     TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    source     TEXT NOT NULL,
    slug_id    TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    FOREIGN KEY (app_id, slug_id) REFERENCES slugs (app_id, id)
) STRICT;
CREATE INDEX builds_by_app ON builds (app_id, seq);

-- Only the types someone scaled have a row; see `Store::formation` for the rest.
CREATE TABLE formation (
    app_id       TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    process_type TEXT NOT NULL,
    quantity     INTEGER NOT NULL CHECK (quantity >= 0),
    size         TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (app_id, process_type)
) STRICT;

CREATE TABLE domains (
    id         TEXT PRIMARY KEY NOT NULL,
    app_id     TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    hostname   TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX domains_by_app ON domains (app_id);
"#;

/// Each app's own uid (and gid, the same number), which its isolated dynos and
/// builds run as. The primary key keeps two apps from ever holding one; the row
/// goes with the app, which frees the number.
const APP_UIDS: &str = r#"
CREATE TABLE app_uids (
    uid    INTEGER PRIMARY KEY CHECK (uid > 0 AND uid < 4294967295),
    app_id TEXT NOT NULL UNIQUE REFERENCES apps (id) ON DELETE CASCADE
) STRICT;
"#;

/// What an app keeps besides its releases: whether the router holds its
/// requests for maintenance, and the buildpacks its next build uses (a JSON
/// list, empty for "detect"). The output of each release's release command,
/// with the secret its `output_stream_url` carries.
const APP_SETTINGS: &str = r#"
ALTER TABLE apps ADD COLUMN maintenance INTEGER NOT NULL DEFAULT 0 CHECK (maintenance IN (0, 1));
ALTER TABLE apps ADD COLUMN buildpacks TEXT NOT NULL DEFAULT '[]';

CREATE TABLE release_outputs (
    release_id TEXT PRIMARY KEY NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    secret     TEXT NOT NULL,
    output     TEXT NOT NULL
) STRICT;
"#;

pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1).foreign_key_check(),
        M::up(APP_UIDS).foreign_key_check(),
        M::up(APP_SETTINGS).foreign_key_check(),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}
