//! Each app's own uid, from a range the server owns: stable for the app's life,
//! never held by two apps at once.

use std::ops::RangeInclusive;

use rusqlite::{OptionalExtension, Transaction};

use crate::{Store, StoreError, find_app};

impl Store {
    /// The uid `app`'s dynos run as (its gid is the same number): the one it
    /// holds, or, the first time, a free one from `range`. A uid an app holds
    /// stays its own even if the server's range changes later; destroying the
    /// app frees it. New uids go up from the highest one held, then fill gaps.
    pub fn app_uid(&self, app: &str, range: RangeInclusive<u32>) -> Result<u32, StoreError> {
        self.write(|tx| {
            let found = find_app(tx, app)?;
            let held: Option<u32> = tx
                .query_row(
                    "SELECT uid FROM app_uids WHERE app_id = ?1",
                    [&found.id],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(uid) = held {
                return Ok(uid);
            }
            let uid = free_uid(tx, &range)?;
            tx.execute(
                "INSERT INTO app_uids (uid, app_id) VALUES (?1, ?2)",
                (uid, &found.id),
            )?;
            Ok(uid)
        })
    }
}

fn free_uid(tx: &Transaction<'_>, range: &RangeInclusive<u32>) -> Result<u32, StoreError> {
    let (start, end) = (*range.start(), *range.end());
    if start == 0 || start > end || end == u32::MAX {
        return Err(StoreError::invalid(format!(
            "the app uid range {start}-{end} is not a range of ordinary uids"
        )));
    }
    let highest: Option<u32> = tx.query_row(
        "SELECT MAX(uid) FROM app_uids WHERE uid BETWEEN ?1 AND ?2",
        (start, end),
        |row| row.get(0),
    )?;
    match highest {
        None => return Ok(start),
        Some(h) if h < end => return Ok(h + 1),
        Some(_) => {}
    }
    // The top is taken: the lowest gap.
    let start_free = tx
        .query_row("SELECT 1 FROM app_uids WHERE uid = ?1", [start], |_| Ok(()))
        .optional()?
        .is_none();
    if start_free {
        return Ok(start);
    }
    let gap: Option<u32> = tx.query_row(
        "SELECT MIN(a.uid + 1) FROM app_uids a
         WHERE a.uid BETWEEN ?1 AND ?2 - 1
           AND NOT EXISTS (SELECT 1 FROM app_uids b WHERE b.uid = a.uid + 1)",
        (start, end),
        |row| row.get(0),
    )?;
    gap.ok_or_else(|| {
        StoreError::invalid(format!(
            "every uid of the app uid range {start}-{end} is taken; give `crew server` a wider --app-uids"
        ))
    })
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[test]
    fn each_app_gets_its_own_stable_uid() {
        let store = Store::open_in_memory().unwrap();
        store.create_app("alpha").unwrap();
        store.create_app("beta").unwrap();
        let a = store.app_uid("alpha", 5000..=5009).unwrap();
        let b = store.app_uid("beta", 5000..=5009).unwrap();
        assert_eq!((a, b), (5000, 5001));
        assert_eq!(store.app_uid("alpha", 5000..=5009).unwrap(), a);
        // A later range change leaves held uids alone.
        assert_eq!(store.app_uid("beta", 7000..=7009).unwrap(), b);
        assert!(store.app_uid("nope", 5000..=5009).is_err());
    }

    #[test]
    fn a_uid_is_never_held_twice_and_a_full_range_says_so() {
        let store = Store::open_in_memory().unwrap();
        for name in ["app-a", "app-b", "app-c"] {
            store.create_app(name).unwrap();
        }
        assert_eq!(store.app_uid("app-a", 10..=11).unwrap(), 10);
        assert_eq!(store.app_uid("app-b", 10..=11).unwrap(), 11);
        let full = store.app_uid("app-c", 10..=11).unwrap_err();
        assert!(full.to_string().contains("every uid"), "{full}");
        // Destroying an app frees its uid, and only then is it handed out again.
        store.destroy_app("app-a").unwrap();
        assert_eq!(store.app_uid("app-c", 10..=11).unwrap(), 10);
        assert_eq!(store.app_uid("app-b", 10..=11).unwrap(), 11);
    }

    #[test]
    fn root_and_minus_one_are_never_handed_out() {
        let store = Store::open_in_memory().unwrap();
        store.create_app("alpha").unwrap();
        assert!(store.app_uid("alpha", 0..=10).is_err());
        assert!(store.app_uid("alpha", 10..=u32::MAX).is_err());
        let (first, last) = (10, 9);
        assert!(store.app_uid("alpha", first..=last).is_err());
    }
}
