//! Named points inside write transactions where the tests make the store fail or
//! the process die, to prove that a write is whole or absent. Outside `cfg(test)`
//! every point is an empty inline function.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    /// The new release's version has been read, nothing written yet.
    ReleaseVersionChosen,
    /// The release row is inserted; the app's `updated_at` is not yet touched.
    ReleaseInserted,
    /// All of a write is done; the commit is next.
    BeforeCommit,
}

#[cfg(not(test))]
#[inline(always)]
pub(crate) fn hit(_point: Point) -> Result<(), crate::StoreError> {
    Ok(())
}

#[cfg(test)]
pub(crate) use armed::{Action, arm, hit};

#[cfg(test)]
mod armed {
    use std::cell::Cell;

    use super::Point;
    use crate::StoreError;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Action {
        /// Return an I/O error, as a full disk would.
        Fail,
        /// Die on the spot: no unwinding, no rollback, no close.
        Abort,
        /// Unwind, poisoning the store's lock on the way out.
        Panic,
    }

    // Per thread, so that tests running in parallel cannot trip each other's points.
    thread_local! {
        static ARMED: Cell<Option<(Point, Action)>> = const { Cell::new(None) };
    }

    /// Makes the next `hit(point)` on this thread do `action`, once.
    pub(crate) fn arm(point: Point, action: Action) {
        ARMED.set(Some((point, action)));
    }

    pub(crate) fn hit(point: Point) -> Result<(), StoreError> {
        match ARMED.get() {
            Some((armed, action)) if armed == point => {
                ARMED.set(None);
                match action {
                    Action::Fail => Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                        Some(format!("injected failure at {point:?}")),
                    ))),
                    Action::Abort => std::process::abort(),
                    Action::Panic => panic!("injected panic at {point:?}"),
                }
            }
            _ => Ok(()),
        }
    }
}
