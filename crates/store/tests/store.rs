//! The public API, method by method: happy paths, errors, and the properties the
//! platform relies on (gap-free numbering, current release, cascades, concurrency).

use std::collections::BTreeMap;
use std::sync::Arc;

use crew_store::{
    BuildStatus, DEFAULT_SIZE, FormationRow, MAX_QUANTITY, NewRelease, NewSlug, Release,
    ReleaseStatus, Slug, Store, StoreError,
};

fn store() -> Store {
    Store::open_in_memory().unwrap()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn new_slug(types: &[(&str, &str)], release_command: Option<&str>) -> NewSlug {
    NewSlug {
        path: "slugs/demo/abc.tar.gz".to_owned(),
        process_types: map(types),
        commit: Some("1a2b3c4d".to_owned()),
        size: 4_200_000,
        buildpack: Some("python".to_owned()),
        release_command: release_command.map(str::to_owned),
    }
}

fn slug(store: &Store, app: &str, types: &[(&str, &str)]) -> Slug {
    store.create_slug(app, new_slug(types, None)).unwrap()
}

/// What the platform does on a successful build without a release phase.
fn deploy(store: &Store, app: &str, slug: &Slug) -> Release {
    let config = store.config(app).unwrap();
    let sha = slug.commit.clone().unwrap_or_default();
    store
        .create_release(
            app,
            NewRelease {
                slug_id: Some(slug.id.clone()),
                config,
                description: format!("Deploy {}", &sha[..7.min(sha.len())]),
                status: ReleaseStatus::Succeeded,
            },
        )
        .unwrap()
}

fn plain_release(config: &[(&str, &str)], status: ReleaseStatus) -> NewRelease {
    NewRelease {
        slug_id: None,
        config: map(config),
        description: "by hand".to_owned(),
        status,
    }
}

fn versions(releases: &[Release]) -> Vec<u32> {
    releases.iter().map(|r| r.version).collect()
}

fn is_rfc3339_utc_seconds(s: &str) -> bool {
    // 2026-11-27T10:14:40Z
    s.len() == 20 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

fn row(process_type: &str, quantity: u32, size: &str) -> FormationRow {
    FormationRow {
        process_type: process_type.to_owned(),
        quantity,
        size: size.to_owned(),
    }
}

// ---- opening ----------------------------------------------------------------

#[test]
fn open_migrates_an_empty_file_to_wal_with_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crew.db");
    let store = Store::open(&path).unwrap();
    store.create_app("demo").unwrap();
    drop(store);

    let raw = rusqlite::Connection::open(&path).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
    let mut stmt = raw
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        [
            "app_uids",
            "apps",
            "builds",
            "domains",
            "formation",
            "release_outputs",
            "releases",
            "slugs"
        ]
    );
}

#[test]
fn open_does_not_create_the_parent_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("crew.db");
    assert!(matches!(Store::open(&path), Err(StoreError::Sqlite(_))));
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn open_refuses_a_database_from_a_newer_crew() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crew.db");
    drop(Store::open(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", 99).unwrap();
    drop(raw);
    let err = Store::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::Migration(_)), "{err}");
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crew.db");
    let (created, app, slug, build, release, domain) = {
        let store = Store::open(&path).unwrap();
        let created = store.create_app("demo").unwrap();
        let build = store.create_build("demo", "1a2b3c4d").unwrap();
        let slug = slug(
            &store,
            "demo",
            &[("web", "gunicorn app"), ("worker", "celery")],
        );
        let build = store
            .finish_build(&build.id, BuildStatus::Succeeded, Some(&slug.id))
            .unwrap();
        deploy(&store, "demo", &slug);
        let release = store
            .update_config("demo", &map(&[("FOO", "bar")]), &[], None)
            .unwrap();
        store
            .set_formation("demo", &[row("worker", 2, "performance-m")])
            .unwrap();
        let domain = store.add_domain("demo", "demo.example.com").unwrap();
        (
            created,
            store.app("demo").unwrap(),
            slug,
            build,
            release,
            domain,
        )
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(
        (app.id.as_str(), app.created_at.as_str()),
        (created.id.as_str(), created.created_at.as_str())
    );
    assert_eq!(store.apps().unwrap(), vec![app]);
    assert_eq!(store.slug(&slug.id).unwrap(), slug);
    assert_eq!(store.builds("demo").unwrap(), vec![build]);
    assert_eq!(store.current_release("demo").unwrap(), release);
    assert_eq!(versions(&store.releases("demo").unwrap()), [3, 2, 1]);
    assert_eq!(store.config("demo").unwrap(), map(&[("FOO", "bar")]));
    assert_eq!(
        store.formation("demo").unwrap(),
        [
            row("web", 1, DEFAULT_SIZE),
            row("worker", 2, "performance-m")
        ]
    );
    assert_eq!(store.domains("demo").unwrap(), vec![domain]);
}

#[test]
fn two_stores_on_one_file_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crew.db");
    let a = Store::open(&path).unwrap();
    let b = Store::open(&path).unwrap();
    a.create_app("demo").unwrap();
    assert_eq!(
        b.create_release("demo", plain_release(&[], ReleaseStatus::Succeeded))
            .unwrap()
            .version,
        2
    );
    assert_eq!(a.releases("demo").unwrap().len(), 2);
}

// ---- apps -------------------------------------------------------------------

#[test]
fn create_app_makes_the_initial_release() {
    let store = store();
    let app = store.create_app("demo").unwrap();
    assert_eq!(app.name, "demo");
    assert_eq!(app.id.len(), 36);
    assert!(uuid::Uuid::parse_str(&app.id).is_ok());
    assert!(
        is_rfc3339_utc_seconds(&app.created_at),
        "{}",
        app.created_at
    );
    assert!(is_rfc3339_utc_seconds(&app.updated_at));
    assert_eq!(store.app("demo").unwrap(), app);

    let releases = store.releases("demo").unwrap();
    assert_eq!(releases.len(), 1);
    let v1 = &releases[0];
    assert_eq!(v1.version, 1);
    assert_eq!(v1.app, "demo");
    assert_eq!(v1.description, "Initial release");
    assert_eq!(v1.slug_id, None);
    assert!(v1.config.is_empty());
    assert_eq!(v1.status, ReleaseStatus::Succeeded);
    assert_eq!(store.current_release("demo").unwrap(), *v1);
    assert!(store.config("demo").unwrap().is_empty());
    assert!(store.formation("demo").unwrap().is_empty());
    assert!(store.builds("demo").unwrap().is_empty());
    assert!(store.domains("demo").unwrap().is_empty());
}

#[test]
fn app_names_follow_the_rule() {
    let store = store();
    for good in ["ab", "a-1", &"z".repeat(30)] {
        store.create_app(good).unwrap();
    }
    for bad in [
        "a",
        "Demo",
        "1demo",
        "-demo",
        "de_mo",
        "dé",
        &"z".repeat(31),
    ] {
        let err = store.create_app(bad).unwrap_err();
        assert!(matches!(err, StoreError::InvalidName { .. }), "{bad}");
    }
    assert_eq!(
        store.create_app("Foo").unwrap_err().to_string(),
        "`Foo` is not a valid app name: use 2 to 30 characters, a lowercase letter first, then lowercase letters, digits and dashes, not ending with a dash"
    );
    assert_eq!(store.apps().unwrap().len(), 3);
}

#[test]
fn a_taken_name_is_refused() {
    let store = store();
    store.create_app("demo").unwrap();
    let err = store.create_app("demo").unwrap_err();
    assert!(matches!(&err, StoreError::AppExists { name } if name == "demo"));
    assert_eq!(err.to_string(), "the name `demo` is already taken");
    assert_eq!(err.id(), "invalid_params");
    assert_eq!(store.releases("demo").unwrap().len(), 1);
}

#[test]
fn apps_are_found_by_name_or_id() {
    let store = store();
    let app = store.create_app("demo").unwrap();
    assert_eq!(store.app(&app.id).unwrap(), app);
    assert_eq!(store.releases(&app.id).unwrap()[0].app, "demo");
    let err = store.app("nope").unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
    assert_eq!(err.to_string(), "no app named `nope`");
    assert_eq!(err.id(), "not_found");
    assert!(err.is_user_error());
}

#[test]
fn apps_are_listed_by_name() {
    let store = store();
    for name in ["web-b", "api", "web-a"] {
        store.create_app(name).unwrap();
    }
    let names: Vec<String> = store.apps().unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["api", "web-a", "web-b"]);
}

#[test]
fn destroying_an_app_removes_everything_it_owns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crew.db");
    let store = Store::open(&path).unwrap();
    let keep = store.create_app("keep").unwrap();
    store.create_app("demo").unwrap();
    let build = store.create_build("demo", "abc").unwrap();
    let s = slug(&store, "demo", &[("web", "x")]);
    store
        .finish_build(&build.id, BuildStatus::Succeeded, Some(&s.id))
        .unwrap();
    deploy(&store, "demo", &s);
    store
        .update_config("demo", &map(&[("A", "1")]), &[], None)
        .unwrap();
    store.set_formation("demo", &[row("web", 3, "")]).unwrap();
    store.add_domain("demo", "demo.example.com").unwrap();

    store.destroy_app("demo").unwrap();

    assert_eq!(store.apps().unwrap(), vec![store.app("keep").unwrap()]);
    assert!(matches!(
        store.slug(&s.id),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.build(&build.id),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.app_for_domain("demo.example.com").unwrap(), None);
    let raw = rusqlite::Connection::open(&path).unwrap();
    for table in ["slugs", "releases", "builds", "formation", "domains"] {
        let left: i64 = raw
            .query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE app_id <> ?1"),
                [&keep.id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    // The name and the hostname are free again, and history starts over.
    store.create_app("demo").unwrap();
    assert_eq!(versions(&store.releases("demo").unwrap()), [1]);
    store.add_domain("keep", "demo.example.com").unwrap();

    let err = store.destroy_app("ghost").unwrap_err();
    assert_eq!(err.to_string(), "no app named `ghost`");
}

// ---- releases ---------------------------------------------------------------

#[test]
fn release_numbers_are_gap_free_and_per_app() {
    let store = store();
    store.create_app("one").unwrap();
    store.create_app("two").unwrap();
    for _ in 0..3 {
        store
            .create_release("one", plain_release(&[], ReleaseStatus::Succeeded))
            .unwrap();
        // Failed and pending releases take a number too: the history is the
        // history.
        store
            .create_release("two", plain_release(&[], ReleaseStatus::Failed))
            .unwrap();
    }
    assert_eq!(versions(&store.releases("one").unwrap()), [4, 3, 2, 1]);
    assert_eq!(versions(&store.releases("two").unwrap()), [4, 3, 2, 1]);
    let r = store
        .create_release("two", plain_release(&[("A", "b")], ReleaseStatus::Pending))
        .unwrap();
    assert_eq!(r.version, 5);
    assert_eq!(store.release("two", 5).unwrap(), r);
    assert_eq!(store.release_by_id("two", &r.id).unwrap(), r);
    assert!(is_rfc3339_utc_seconds(&r.created_at));
    assert_eq!(r.created_at, r.updated_at);
}

#[test]
fn create_release_checks_config_slug_and_app() {
    let store = store();
    store.create_app("demo").unwrap();
    store.create_app("other").unwrap();
    let theirs = slug(&store, "other", &[("web", "x")]);

    let err = store
        .create_release(
            "demo",
            plain_release(&[("1BAD", "x")], ReleaseStatus::Succeeded),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }));
    assert!(
        err.to_string()
            .contains("`1BAD` is not a valid config var name")
    );
    let err = store
        .create_release(
            "demo",
            plain_release(&[("A", "x\0y")], ReleaseStatus::Succeeded),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }));

    for slug_id in [theirs.id.as_str(), "no-such-slug"] {
        let mut new = plain_release(&[], ReleaseStatus::Succeeded);
        new.slug_id = Some(slug_id.to_owned());
        let err = store.create_release("demo", new).unwrap_err();
        assert_eq!(err.to_string(), format!("no slug `{slug_id}` for `demo`"));
    }
    let err = store
        .create_release("ghost", plain_release(&[], ReleaseStatus::Succeeded))
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
    assert_eq!(versions(&store.releases("demo").unwrap()), [1]);
}

#[test]
fn release_lookups_say_what_is_missing() {
    let store = store();
    store.create_app("demo").unwrap();
    assert_eq!(
        store.release("demo", 9).unwrap_err().to_string(),
        "no release v9 for `demo`"
    );
    assert!(matches!(
        store.release_by_id("demo", "nope"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.releases("ghost"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.current_release("ghost"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.config("ghost"),
        Err(StoreError::NotFound { .. })
    ));
    // A release id is only found under its own app.
    store.create_app("other").unwrap();
    let v1 = store.release("other", 1).unwrap();
    assert!(store.release_by_id("demo", &v1.id).is_err());
}

#[test]
fn set_release_status_settles_a_pending_release_once() {
    let store = store();
    store.create_app("demo").unwrap();
    store
        .create_release("demo", plain_release(&[], ReleaseStatus::Pending))
        .unwrap();
    store
        .set_release_status("demo", 2, ReleaseStatus::Succeeded)
        .unwrap();
    assert_eq!(
        store.release("demo", 2).unwrap().status,
        ReleaseStatus::Succeeded
    );
    // Repeating it is harmless; changing a settled release is not allowed.
    store
        .set_release_status("demo", 2, ReleaseStatus::Succeeded)
        .unwrap();
    let err = store
        .set_release_status("demo", 2, ReleaseStatus::Failed)
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }));
    assert_eq!(
        err.to_string(),
        "release v2 of `demo` is already succeeded; only a pending release can change status"
    );
    store
        .create_release("demo", plain_release(&[], ReleaseStatus::Pending))
        .unwrap();
    store
        .set_release_status("demo", 3, ReleaseStatus::Failed)
        .unwrap();
    assert!(
        store
            .set_release_status("demo", 3, ReleaseStatus::Pending)
            .is_err()
    );
    assert_eq!(
        store
            .set_release_status("demo", 7, ReleaseStatus::Failed)
            .unwrap_err()
            .to_string(),
        "no release v7 for `demo`"
    );
    assert!(
        store
            .set_release_status("ghost", 1, ReleaseStatus::Failed)
            .is_err()
    );
}

#[test]
fn current_release_is_the_newest_succeeded_one() {
    let store = store();
    store.create_app("demo").unwrap();
    store
        .create_release(
            "demo",
            plain_release(&[("V", "2")], ReleaseStatus::Succeeded),
        )
        .unwrap();
    store
        .create_release("demo", plain_release(&[("V", "3")], ReleaseStatus::Pending))
        .unwrap();
    store
        .create_release("demo", plain_release(&[("V", "4")], ReleaseStatus::Failed))
        .unwrap();
    assert_eq!(store.current_release("demo").unwrap().version, 2);
    assert_eq!(store.config("demo").unwrap(), map(&[("V", "2")]));

    store
        .set_release_status("demo", 3, ReleaseStatus::Succeeded)
        .unwrap();
    assert_eq!(store.current_release("demo").unwrap().version, 3);
    assert_eq!(store.config("demo").unwrap(), map(&[("V", "3")]));
}

#[test]
fn config_changes_make_releases_from_the_current_one() {
    let store = store();
    store.create_app("demo").unwrap();
    let s = slug(&store, "demo", &[("web", "x")]);
    deploy(&store, "demo", &s);

    let r = store
        .update_config("demo", &map(&[("FOO", "1"), ("BAR", "2")]), &[], None)
        .unwrap();
    assert_eq!(r.version, 3);
    assert_eq!(r.description, "Set BAR, FOO config vars");
    assert_eq!(r.slug_id.as_deref(), Some(s.id.as_str()));
    assert_eq!(r.status, ReleaseStatus::Succeeded);
    assert_eq!(
        store.config("demo").unwrap(),
        map(&[("BAR", "2"), ("FOO", "1")])
    );

    let r = store
        .update_config(
            "demo",
            &BTreeMap::new(),
            &["FOO".to_owned(), "NEVER_SET".to_owned()],
            None,
        )
        .unwrap();
    assert_eq!(r.description, "Remove FOO, NEVER_SET config vars");
    assert_eq!(r.config, map(&[("BAR", "2")]));

    let r = store
        .update_config("demo", &map(&[("BAR", "3")]), &["BAZ".to_owned()], None)
        .unwrap();
    assert_eq!(r.description, "Set BAR, remove BAZ config vars");
    assert_eq!(r.config, map(&[("BAR", "3")]));

    let r = store
        .update_config("demo", &map(&[("X", "")]), &[], Some("Set X via API"))
        .unwrap();
    assert_eq!(r.description, "Set X via API");
    assert_eq!(r.config, map(&[("BAR", "3"), ("X", "")]));
    assert_eq!(r.version, 6);
    assert_eq!(store.current_release("demo").unwrap(), r);
}

#[test]
fn config_changes_start_from_the_current_release_not_the_newest() {
    let store = store();
    store.create_app("demo").unwrap();
    store
        .update_config("demo", &map(&[("A", "1")]), &[], None)
        .unwrap();
    store
        .create_release(
            "demo",
            plain_release(&[("BROKEN", "1")], ReleaseStatus::Failed),
        )
        .unwrap();
    let r = store
        .update_config("demo", &map(&[("B", "2")]), &[], None)
        .unwrap();
    assert_eq!(r.version, 4);
    assert_eq!(r.config, map(&[("A", "1"), ("B", "2")]));
}

#[test]
fn bad_config_changes_are_refused_and_change_nothing() {
    let store = store();
    store.create_app("demo").unwrap();
    let cases: Vec<(BTreeMap<String, String>, Vec<String>)> = vec![
        (BTreeMap::new(), vec![]),
        (map(&[("A-B", "1")]), vec![]),
        (map(&[("", "1")]), vec![]),
        (BTreeMap::new(), vec!["1A".to_owned()]),
        (map(&[("A", "1")]), vec!["A".to_owned()]),
        (map(&[("A", "nul\0")]), vec![]),
    ];
    for (set, unset) in &cases {
        let err = store.update_config("demo", set, unset, None).unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid { .. }),
            "{set:?} {unset:?}: {err}"
        );
    }
    assert_eq!(versions(&store.releases("demo").unwrap()), [1]);
    assert!(
        store
            .update_config("ghost", &map(&[("A", "1")]), &[], None)
            .is_err()
    );
}

#[test]
fn a_slug_with_a_release_command_makes_derived_releases_pending() {
    let store = store();
    store.create_app("demo").unwrap();
    let s = store
        .create_slug("demo", new_slug(&[("web", "x")], Some("./migrate")))
        .unwrap();
    deploy(&store, "demo", &s);
    let r = store
        .update_config("demo", &map(&[("A", "1")]), &[], None)
        .unwrap();
    assert_eq!(r.status, ReleaseStatus::Pending);
    assert_eq!(store.current_release("demo").unwrap().version, 2);
    store
        .set_release_status("demo", r.version, ReleaseStatus::Succeeded)
        .unwrap();
    assert_eq!(store.config("demo").unwrap(), map(&[("A", "1")]));
    let rb = store.rollback("demo", 2).unwrap();
    assert_eq!(rb.status, ReleaseStatus::Pending);
}

#[test]
fn rollback_copies_slug_and_config_into_a_new_release() {
    let store = store();
    store.create_app("demo").unwrap();
    let s1 = slug(&store, "demo", &[("web", "old")]);
    deploy(&store, "demo", &s1); // v2
    store
        .update_config("demo", &map(&[("A", "1")]), &[], None)
        .unwrap(); // v3
    let s2 = slug(&store, "demo", &[("web", "new")]);
    deploy(&store, "demo", &s2); // v4
    store
        .update_config("demo", &map(&[("A", "2"), ("B", "x")]), &[], None)
        .unwrap(); // v5

    let r = store.rollback("demo", 3).unwrap();
    assert_eq!(r.version, 6);
    assert_eq!(r.description, "Rollback to v3");
    assert_eq!(r.slug_id.as_deref(), Some(s1.id.as_str()));
    assert_eq!(r.config, map(&[("A", "1")]));
    assert_eq!(r.status, ReleaseStatus::Succeeded);
    assert_eq!(store.current_release("demo").unwrap(), r);

    // The very first release has no code to run: refused, as on Heroku,
    // and no release is made.
    let e = store.rollback("demo", 1).unwrap_err();
    assert!(matches!(e, StoreError::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("has no slug"), "{e}");
    assert_eq!(store.current_release("demo").unwrap().version, 6);
}

#[test]
fn rollback_refuses_missing_pending_and_failed_targets() {
    let store = store();
    store.create_app("demo").unwrap();
    store
        .create_release("demo", plain_release(&[], ReleaseStatus::Pending))
        .unwrap();
    store
        .create_release("demo", plain_release(&[], ReleaseStatus::Failed))
        .unwrap();
    assert_eq!(
        store.rollback("demo", 2).unwrap_err().to_string(),
        "cannot roll back `demo` to v2: that release is still pending"
    );
    assert_eq!(
        store.rollback("demo", 3).unwrap_err().to_string(),
        "cannot roll back `demo` to v3: that release failed"
    );
    assert!(matches!(
        store.rollback("demo", 42),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.rollback("ghost", 1),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(versions(&store.releases("demo").unwrap()), [3, 2, 1]);
}

// ---- slugs and builds -------------------------------------------------------

#[test]
fn slugs_round_trip() {
    let store = store();
    store.create_app("demo").unwrap();
    let new = new_slug(
        &[
            ("web", "gunicorn app:app --bind 0.0.0.0:$PORT"),
            ("release", "./migrate"),
        ],
        Some("./migrate"),
    );
    let s = store.create_slug("demo", new.clone()).unwrap();
    assert_eq!(s.app, "demo");
    assert_eq!(s.path, new.path);
    assert_eq!(s.process_types, new.process_types);
    assert_eq!(s.commit, new.commit);
    assert_eq!(s.size, new.size);
    assert_eq!(s.buildpack, new.buildpack);
    assert_eq!(s.release_command, new.release_command);
    assert!(is_rfc3339_utc_seconds(&s.created_at));
    assert_eq!(store.slug(&s.id).unwrap(), s);

    let bare = NewSlug {
        path: "p".to_owned(),
        process_types: BTreeMap::new(),
        commit: None,
        size: 0,
        buildpack: None,
        release_command: None,
    };
    let s = store.create_slug("demo", bare).unwrap();
    assert_eq!(store.slug(&s.id).unwrap(), s);
}

#[test]
fn bad_slugs_are_refused() {
    let store = store();
    store.create_app("demo").unwrap();
    let err = store
        .create_slug("demo", new_slug(&[("web server", "x")], None))
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }));
    let mut empty_path = new_slug(&[("web", "x")], None);
    empty_path.path.clear();
    assert!(matches!(
        store.create_slug("demo", empty_path),
        Err(StoreError::Invalid { .. })
    ));
    let mut huge = new_slug(&[("web", "x")], None);
    huge.size = u64::MAX;
    assert!(matches!(
        store.create_slug("demo", huge),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        store.create_slug("ghost", new_slug(&[], None)),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.slug("nope").unwrap_err().to_string(),
        "no slug `nope`"
    );
}

#[test]
fn builds_go_from_pending_to_settled() {
    let store = store();
    store.create_app("demo").unwrap();
    let b1 = store.create_build("demo", "1111111").unwrap();
    assert_eq!(b1.status, BuildStatus::Pending);
    assert_eq!(
        (b1.app.as_str(), b1.source.as_str(), b1.slug_id.as_deref()),
        ("demo", "1111111", None)
    );
    assert_eq!(store.build(&b1.id).unwrap(), b1);
    let b2 = store.create_build("demo", "2222222").unwrap();

    let s = slug(&store, "demo", &[("web", "x")]);
    let done = store
        .finish_build(&b1.id, BuildStatus::Succeeded, Some(&s.id))
        .unwrap();
    assert_eq!(done.status, BuildStatus::Succeeded);
    assert_eq!(done.slug_id.as_deref(), Some(s.id.as_str()));
    assert_eq!(done.created_at, b1.created_at);
    let failed = store
        .finish_build(&b2.id, BuildStatus::Failed, None)
        .unwrap();
    assert_eq!(failed.status, BuildStatus::Failed);

    let listed = store.builds("demo").unwrap();
    assert_eq!(listed, vec![failed, done]);
    assert_eq!(BuildStatus::Succeeded.as_str(), "succeeded");
    assert_eq!(
        "failed".parse::<BuildStatus>().unwrap(),
        BuildStatus::Failed
    );
}

#[test]
fn bad_build_finishes_are_refused() {
    let store = store();
    store.create_app("demo").unwrap();
    store.create_app("other").unwrap();
    let theirs = slug(&store, "other", &[("web", "x")]);
    let b = store.create_build("demo", "abc").unwrap();

    let cases: [(BuildStatus, Option<&str>); 4] = [
        (BuildStatus::Pending, None),
        (BuildStatus::Succeeded, None),
        (BuildStatus::Succeeded, Some(theirs.id.as_str())),
        (BuildStatus::Failed, Some("no-such-slug")),
    ];
    for (status, slug_id) in cases {
        assert!(
            store.finish_build(&b.id, status, slug_id).is_err(),
            "{status} {slug_id:?}"
        );
    }
    assert_eq!(store.build(&b.id).unwrap(), b);

    store
        .finish_build(&b.id, BuildStatus::Failed, None)
        .unwrap();
    let err = store
        .finish_build(&b.id, BuildStatus::Failed, None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("build `{}` has already failed", b.id)
    );
    assert!(matches!(
        store.finish_build("nope", BuildStatus::Failed, None),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.create_build("ghost", "x"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.builds("ghost"),
        Err(StoreError::NotFound { .. })
    ));
}

// ---- formation --------------------------------------------------------------

#[test]
fn formation_lists_the_current_slugs_types_with_heroku_defaults() {
    let store = store();
    store.create_app("demo").unwrap();
    assert!(store.formation("demo").unwrap().is_empty());
    let s = slug(
        &store,
        "demo",
        &[
            ("web", "w"),
            ("worker", "q"),
            ("clock", "c"),
            ("release", "./migrate"),
        ],
    );
    deploy(&store, "demo", &s);
    assert_eq!(
        store.formation("demo").unwrap(),
        [
            row("clock", 0, DEFAULT_SIZE),
            row("web", 1, DEFAULT_SIZE),
            row("worker", 0, DEFAULT_SIZE)
        ]
    );
    assert!(matches!(
        store.formation("ghost"),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn set_formation_upserts_and_returns_the_whole_formation() {
    let store = store();
    store.create_app("demo").unwrap();
    let s = slug(&store, "demo", &[("web", "w"), ("worker", "q")]);
    deploy(&store, "demo", &s);

    let after = store
        .set_formation(
            "demo",
            &[row("web", 3, "standard-2x"), row("worker", 2, "")],
        )
        .unwrap();
    assert_eq!(
        after,
        [row("web", 3, "standard-2x"), row("worker", 2, DEFAULT_SIZE)]
    );
    // An empty size keeps the size; web at 0 stays 0 (the default is only for
    // types never scaled).
    let after = store.set_formation("demo", &[row("web", 0, "")]).unwrap();
    assert_eq!(
        after,
        [row("web", 0, "standard-2x"), row("worker", 2, DEFAULT_SIZE)]
    );
    assert_eq!(store.formation("demo").unwrap(), after);
    assert_eq!(store.set_formation("demo", &[]).unwrap(), after);
    assert_eq!(FormationRow::new("web", 2), row("web", 2, DEFAULT_SIZE));
}

#[test]
fn set_formation_is_all_or_nothing() {
    let store = store();
    store.create_app("demo").unwrap();
    let s = slug(&store, "demo", &[("web", "w"), ("worker", "q")]);
    deploy(&store, "demo", &s);
    let before = store.formation("demo").unwrap();

    let err = store
        .set_formation("demo", &[row("web", 5, ""), row("nope", 1, "")])
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
    assert_eq!(
        err.to_string(),
        "no process type `nope` in the current release of `demo`"
    );
    let bad: [&[FormationRow]; 6] = [
        &[row("web", 1, ""), row("web", 2, "")],
        &[row("web", MAX_QUANTITY + 1, "")],
        &[row("web", 1, "huge size")],
        &[row("bad type", 1, "")],
        &[row("release", 1, "")],
        &[row("web", 1, &"x".repeat(41))],
    ];
    for rows in bad {
        assert!(store.set_formation("demo", rows).is_err(), "{rows:?}");
    }
    assert_eq!(store.formation("demo").unwrap(), before);
    assert!(
        store
            .set_formation("demo", &[row("web", MAX_QUANTITY, "")])
            .is_ok()
    );
}

#[test]
fn set_formation_before_the_first_deploy_knows_no_types() {
    let store = store();
    store.create_app("demo").unwrap();
    assert!(matches!(
        store.set_formation("demo", &[row("web", 1, "")]),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.set_formation("ghost", &[]),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn formation_follows_the_current_release() {
    let store = store();
    store.create_app("demo").unwrap();
    let s1 = slug(&store, "demo", &[("web", "w"), ("worker", "q")]);
    deploy(&store, "demo", &s1); // v2
    store
        .set_formation("demo", &[row("worker", 4, "")])
        .unwrap();
    let s2 = slug(&store, "demo", &[("web", "w"), ("clock", "c")]);
    deploy(&store, "demo", &s2); // v3
    assert_eq!(
        store.formation("demo").unwrap(),
        [row("clock", 0, DEFAULT_SIZE), row("web", 1, DEFAULT_SIZE)]
    );
    // A pending release does not change the formation until it succeeds.
    let s3 = slug(&store, "demo", &[("api", "a")]);
    let mut pending = plain_release(&[], ReleaseStatus::Pending);
    pending.slug_id = Some(s3.id.clone());
    store.create_release("demo", pending).unwrap(); // v4
    assert_eq!(store.formation("demo").unwrap().len(), 2);
    // Rolling back brings the worker back at the quantity it had.
    store.rollback("demo", 2).unwrap();
    assert_eq!(
        store.formation("demo").unwrap(),
        [row("web", 1, DEFAULT_SIZE), row("worker", 4, DEFAULT_SIZE)]
    );
}

// ---- domains ----------------------------------------------------------------

#[test]
fn domains_are_added_listed_and_removed() {
    let store = store();
    store.create_app("demo").unwrap();
    let d = store.add_domain("demo", "WWW.Example.com").unwrap();
    assert_eq!(
        (d.app.as_str(), d.hostname.as_str()),
        ("demo", "www.example.com")
    );
    assert!(is_rfc3339_utc_seconds(&d.created_at));
    let a = store.add_domain("demo", "api.example.com").unwrap();
    assert_eq!(store.domains("demo").unwrap(), vec![a, d]);
    assert_eq!(
        store.app_for_domain("www.EXAMPLE.com").unwrap(),
        Some(store.app("demo").unwrap())
    );

    store.remove_domain("demo", "WWW.example.com").unwrap();
    assert_eq!(store.domains("demo").unwrap().len(), 1);
    assert_eq!(store.app_for_domain("www.example.com").unwrap(), None);
    let err = store.remove_domain("demo", "www.example.com").unwrap_err();
    assert_eq!(err.to_string(), "no domain `www.example.com` on `demo`");
}

#[test]
fn a_hostname_belongs_to_one_app() {
    let store = store();
    store.create_app("demo").unwrap();
    store.create_app("other").unwrap();
    store.add_domain("demo", "demo.example.com").unwrap();
    for app in ["other", "demo"] {
        let err = store.add_domain(app, "Demo.Example.com").unwrap_err();
        assert!(
            matches!(&err, StoreError::DomainTaken { hostname, app } if hostname == "demo.example.com" && app == "demo")
        );
        assert_eq!(
            err.to_string(),
            "the domain `demo.example.com` is already in use by `demo`"
        );
    }
    // Removing it from the wrong app does nothing.
    assert!(store.remove_domain("other", "demo.example.com").is_err());
    assert_eq!(store.domains("demo").unwrap().len(), 1);
    for bad in ["", "a..b", "-a.com", "a b", "a:80", "*"] {
        assert!(
            matches!(
                store.add_domain("demo", bad),
                Err(StoreError::Invalid { .. })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        store.add_domain("ghost", "x.com"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.domains("ghost"),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn app_for_domain_prefers_exact_then_one_wildcard_level() {
    let store = store();
    store.create_app("wild").unwrap();
    store.create_app("exact").unwrap();
    store.add_domain("wild", "*.example.com").unwrap();
    store.add_domain("exact", "api.example.com").unwrap();
    let name = |host: &str| store.app_for_domain(host).unwrap().map(|a| a.name);
    assert_eq!(name("api.example.com").as_deref(), Some("exact"));
    assert_eq!(name("shop.example.com").as_deref(), Some("wild"));
    assert_eq!(name("a.shop.example.com"), None);
    assert_eq!(name("example.com"), None);
    assert_eq!(name("localhost"), None);
    assert_eq!(name(""), None);
}

// ---- concurrency ------------------------------------------------------------

#[test]
fn concurrent_releases_on_one_store_get_consecutive_versions() {
    let store = Arc::new(store());
    store.create_app("demo").unwrap();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        store
                            .create_release(
                                "demo",
                                plain_release(
                                    &[("T", &format!("{t}-{i}"))],
                                    ReleaseStatus::Succeeded,
                                ),
                            )
                            .unwrap()
                            .version
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (2..=101).collect::<Vec<_>>());
    assert_eq!(
        versions(&store.releases("demo").unwrap()),
        (1..=101).rev().collect::<Vec<_>>()
    );
}

#[test]
fn concurrent_releases_through_two_connections_get_consecutive_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crew.db");
    Store::open(&path).unwrap().create_app("demo").unwrap();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = Store::open(&path).unwrap();
                (0..25)
                    .map(|_| {
                        store
                            .update_config("demo", &map(&[("A", "1")]), &[], None)
                            .unwrap()
                            .version
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (2..=51).collect::<Vec<_>>());
}

// ---- errors -----------------------------------------------------------------

#[test]
fn statuses_use_herokus_words() {
    for (status, word) in [
        (ReleaseStatus::Pending, "pending"),
        (ReleaseStatus::Succeeded, "succeeded"),
        (ReleaseStatus::Failed, "failed"),
    ] {
        assert_eq!(status.as_str(), word);
        assert_eq!(status.to_string(), word);
        assert_eq!(word.parse::<ReleaseStatus>().unwrap(), status);
    }
    let err = "done".parse::<ReleaseStatus>().unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }));
}

#[test]
fn builds_cut_off_by_a_dead_server_are_failed_at_start() {
    let store = store();
    store.create_app("demo").unwrap();
    let s = slug(&store, "demo", &[("web", "serve")]);
    let done = store.create_build("demo", "aaaaaaa").unwrap();
    store
        .finish_build(&done.id, BuildStatus::Succeeded, Some(&s.id))
        .unwrap();
    let cut_off = store.create_build("demo", "bbbbbbb").unwrap();
    assert_eq!(cut_off.status, BuildStatus::Pending);

    let failed = store.fail_unfinished_builds().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, cut_off.id);
    assert_eq!(
        store.build(&cut_off.id).unwrap().status,
        BuildStatus::Failed
    );
    assert_eq!(
        store.build(&done.id).unwrap().status,
        BuildStatus::Succeeded
    );
    assert!(store.fail_unfinished_builds().unwrap().is_empty());
}

#[test]
fn config_over_herokus_32_kb_is_refused_and_names_the_limit() {
    let store = store();
    store.create_app("demo").unwrap();
    let big = "x".repeat(200 * 1024);
    let e = store
        .update_config("demo", &map(&[("BIG", &big)]), &[], None)
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("32 KB (32768 bytes)"), "{text}");
    assert!(text.contains(&format!("{}", big.len() + 3)), "{text}");
    assert!(
        store.config("demo").unwrap().is_empty(),
        "nothing was stored"
    );

    // Exactly the limit, keys and values together, is fine; one byte more is not.
    let value = "v".repeat(32 * 1024 - 2);
    store
        .update_config("demo", &map(&[("AB", &value)]), &[], None)
        .unwrap();
    let e = store
        .update_config("demo", &map(&[("C", "")]), &[], None)
        .unwrap_err();
    assert!(e.to_string().contains("32 KB"), "{e}");
    // Unsetting is always possible.
    store
        .update_config("demo", &BTreeMap::new(), &["AB".to_owned()], None)
        .unwrap();
}
