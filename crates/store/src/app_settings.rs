//! What an app keeps besides its history: its name (renames), maintenance
//! mode, its chosen buildpacks, and each release command's output.

use rusqlite::OptionalExtension;

use crate::{Store, StoreError, find_app, now, touch_app, validate};

/// The most buildpacks an app may list, and the longest one may be: Heroku
/// allows a handful, and each becomes a clone or a path on every build.
pub const MAX_BUILDPACKS: usize = 16;
pub const MAX_BUILDPACK_LEN: usize = 1024;

/// The most bytes of a release command's output that are kept; beyond it the
/// oldest lines go, as in a log.
pub const MAX_RELEASE_OUTPUT: usize = 512 * 1024;

/// An app's settings that are not part of a release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppSettings {
    pub maintenance: bool,
    /// In order; empty means the build detects them.
    pub buildpacks: Vec<String>,
}

/// A release command's output and the secret its URL carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseOutput {
    pub release_id: String,
    pub secret: String,
    pub output: String,
}

impl Store {
    /// Renames `app` to `new_name`: every release, slug, build, formation row,
    /// domain and uid stays with it (they refer to its id). Slug paths that
    /// start with `old_dir` are rewritten to start with `new_dir`, since the
    /// caller moves the app's directory with it.
    pub fn rename_app(
        &self,
        app: &str,
        new_name: &str,
        old_dir: &str,
        new_dir: &str,
    ) -> Result<crate::App, StoreError> {
        validate::app_name(new_name)?;
        self.write(|tx| {
            let found = find_app(tx, app)?;
            let taken = tx
                .query_row("SELECT 1 FROM apps WHERE name = ?1", [new_name], |_| Ok(()))
                .optional()?
                .is_some();
            if taken {
                return Err(StoreError::AppExists {
                    name: new_name.to_owned(),
                });
            }
            let now = now();
            tx.execute(
                "UPDATE apps SET name = ?2, updated_at = ?3 WHERE id = ?1",
                (&found.id, new_name, &now),
            )?;
            // Only the prefix: `substr` counts characters, and both prefixes
            // are crew's own paths.
            tx.execute(
                "UPDATE slugs SET path = ?3 || substr(path, length(?2) + 1) \
                 WHERE app_id = ?1 AND substr(path, 1, length(?2)) = ?2",
                (&found.id, old_dir, new_dir),
            )?;
            Ok(tx.query_row(
                &format!(
                    "SELECT {} FROM apps WHERE id = ?1",
                    crate::apps::APP_COLUMNS
                ),
                [&found.id],
                crate::apps::app_from_row,
            )?)
        })
    }

    pub fn app_settings(&self, app: &str) -> Result<AppSettings, StoreError> {
        self.read(|tx| {
            let found = find_app(tx, app)?;
            let (maintenance, buildpacks): (bool, String) = tx.query_row(
                "SELECT maintenance, buildpacks FROM apps WHERE id = ?1",
                [&found.id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            let buildpacks = serde_json::from_str(&buildpacks).map_err(|e| {
                StoreError::Sqlite(rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                ))
            })?;
            Ok(AppSettings {
                maintenance,
                buildpacks,
            })
        })
    }

    pub fn set_maintenance(&self, app: &str, on: bool) -> Result<(), StoreError> {
        self.write(|tx| {
            let found = find_app(tx, app)?;
            tx.execute(
                "UPDATE apps SET maintenance = ?2 WHERE id = ?1",
                (&found.id, on),
            )?;
            touch_app(tx, &found, &now())
        })
    }

    /// Replaces the app's buildpack list. Each entry is checked here only for
    /// its size and characters; what it names is the build's to check.
    pub fn set_buildpacks(&self, app: &str, buildpacks: &[String]) -> Result<(), StoreError> {
        if buildpacks.len() > MAX_BUILDPACKS {
            return Err(StoreError::invalid(format!(
                "an app may have at most {MAX_BUILDPACKS} buildpacks, not {}",
                buildpacks.len()
            )));
        }
        for buildpack in buildpacks {
            if buildpack.trim().is_empty()
                || buildpack.len() > MAX_BUILDPACK_LEN
                || buildpack.chars().any(char::is_control)
            {
                return Err(StoreError::invalid(format!(
                    "`{}` is not a buildpack: give a URL, an absolute path or a name such as \
                     heroku/python (at most {MAX_BUILDPACK_LEN} characters, no control characters)",
                    buildpack.escape_debug()
                )));
            }
        }
        let json = serde_json::to_string(buildpacks).map_err(|e| {
            StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        })?;
        self.write(|tx| {
            let found = find_app(tx, app)?;
            tx.execute(
                "UPDATE apps SET buildpacks = ?2 WHERE id = ?1",
                (&found.id, &json),
            )?;
            touch_app(tx, &found, &now())
        })
    }

    /// Keeps the output of release `version`'s release command (its last
    /// [`MAX_RELEASE_OUTPUT`] bytes) under a new secret, and returns it.
    pub fn set_release_output(
        &self,
        app: &str,
        version: u32,
        output: &str,
    ) -> Result<ReleaseOutput, StoreError> {
        let output = bounded_output(output);
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.write(|tx| {
            let found = find_app(tx, app)?;
            let release_id: String = tx
                .query_row(
                    "SELECT id FROM releases WHERE app_id = ?1 AND version = ?2",
                    (&found.id, version),
                    |row| row.get(0),
                )
                .optional()?
                .ok_or_else(|| {
                    StoreError::not_found(format!("no release v{version} for `{}`", found.name))
                })?;
            tx.execute(
                "INSERT INTO release_outputs (release_id, secret, output) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (release_id) DO UPDATE SET secret = ?2, output = ?3",
                (&release_id, &secret, &output),
            )?;
            Ok(ReleaseOutput {
                release_id,
                secret: secret.clone(),
                output: output.clone(),
            })
        })
    }

    /// The kept output of the release with id `release_id`, if it has one.
    pub fn release_output(&self, release_id: &str) -> Result<Option<ReleaseOutput>, StoreError> {
        self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT release_id, secret, output FROM release_outputs WHERE release_id = ?1",
                    [release_id],
                    |row| {
                        Ok(ReleaseOutput {
                            release_id: row.get(0)?,
                            secret: row.get(1)?,
                            output: row.get(2)?,
                        })
                    },
                )
                .optional()?)
        })
    }
}

/// The end of `output`, at most [`MAX_RELEASE_OUTPUT`] bytes, starting on a
/// line (or at least a character) boundary, with a note of what was dropped.
fn bounded_output(output: &str) -> String {
    if output.len() <= MAX_RELEASE_OUTPUT {
        return output.to_owned();
    }
    let mut start = output.len() - MAX_RELEASE_OUTPUT;
    while !output.is_char_boundary(start) {
        start += 1;
    }
    if let Some(newline) = output[start..].find('\n') {
        start += newline + 1;
    }
    format!(
        "(the first {start} bytes of the output were dropped: at most {MAX_RELEASE_OUTPUT} are kept)\n{}",
        &output[start..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_keeps_everything_and_frees_the_old_name() {
        let store = Store::open_in_memory().expect("store");
        let app = store.create_app("old-name").expect("app");
        store.create_app("taken").expect("app");
        store
            .add_domain("old-name", "www.example.com")
            .expect("domain");
        store
            .set_maintenance("old-name", true)
            .expect("maintenance");
        let slug = store
            .create_slug(
                "old-name",
                crate::NewSlug {
                    path: "/data/apps/old-name/slugs/s.tar.gz".into(),
                    process_types: Default::default(),
                    commit: None,
                    size: 1,
                    buildpack: None,
                    release_command: None,
                },
            )
            .expect("slug");
        assert!(matches!(
            store.rename_app(
                "old-name",
                "taken",
                "/data/apps/old-name/",
                "/data/apps/taken/"
            ),
            Err(StoreError::AppExists { .. })
        ));
        for bad in ["a/b", "..", "../etc", "UPPER", "x"] {
            assert!(
                matches!(
                    store.rename_app("old-name", bad, "", ""),
                    Err(StoreError::InvalidName { .. })
                ),
                "{bad}"
            );
        }
        let renamed = store
            .rename_app(
                "old-name",
                "new-name",
                "/data/apps/old-name/",
                "/data/apps/new-name/",
            )
            .expect("renamed");
        assert_eq!(
            (renamed.id.as_str(), renamed.name.as_str()),
            (app.id.as_str(), "new-name")
        );
        assert_eq!(
            store.slug(&slug.id).expect("slug").path,
            "/data/apps/new-name/slugs/s.tar.gz"
        );
        assert_eq!(store.domains("new-name").expect("domains").len(), 1);
        assert!(
            store
                .app_settings("new-name")
                .expect("settings")
                .maintenance
        );
        assert_eq!(store.releases("new-name").expect("releases").len(), 1);
        assert!(store.app("old-name").is_err());
        store.create_app("old-name").expect("the old name is free");
    }

    #[test]
    fn buildpacks_are_bounded_and_kept_in_order() {
        let store = Store::open_in_memory().expect("store");
        store.create_app("demo").expect("app");
        let list = vec!["heroku/nodejs".to_string(), "heroku/python".to_string()];
        store.set_buildpacks("demo", &list).expect("set");
        assert_eq!(
            store.app_settings("demo").expect("settings").buildpacks,
            list
        );
        assert!(store.set_buildpacks("demo", &["a\nb".into()]).is_err());
        assert!(store.set_buildpacks("demo", &[" ".into()]).is_err());
        assert!(
            store
                .set_buildpacks("demo", &vec!["x".to_string(); MAX_BUILDPACKS + 1])
                .is_err()
        );
        store.set_buildpacks("demo", &[]).expect("clear");
        assert!(
            store
                .app_settings("demo")
                .expect("settings")
                .buildpacks
                .is_empty()
        );
    }

    #[test]
    fn release_output_is_kept_bounded_with_a_secret() {
        let store = Store::open_in_memory().expect("store");
        store.create_app("demo").expect("app");
        let kept = store
            .set_release_output("demo", 1, "migrated\n")
            .expect("kept");
        assert_eq!(kept.secret.len(), 64);
        let read = store
            .release_output(&kept.release_id)
            .expect("read")
            .expect("some");
        assert_eq!(read, kept);
        let long = "line of output\n".repeat(MAX_RELEASE_OUTPUT / 10);
        let kept = store.set_release_output("demo", 1, &long).expect("kept");
        assert!(kept.output.len() <= MAX_RELEASE_OUTPUT + 200);
        assert!(
            kept.output.starts_with("(the first "),
            "{}",
            &kept.output[..80]
        );
        assert!(kept.output.ends_with("line of output\n"));
        assert!(store.set_release_output("demo", 9, "x").is_err());
    }
}
