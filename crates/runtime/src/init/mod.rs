//! The dyno's init: the program the child of an isolated dyno's `clone` runs,
//! as pid 1 of the dyno's pid namespace, and the vocabulary it shares with the
//! parent.
//!
//! - [`sys`]: the [`sys::Sys`] trait, every system call the init may make
//!   (real in `crate::os::LinuxSys`, recorded in tests);
//! - [`step`]: the steps of a setup plan and how each is walked, the init's
//!   fixed descriptor numbers and the step numbers of its setup records;
//! - [`child`]: the init itself, walking the steps, starting the app and
//!   reaping until the app exits.
//!
//! Not here: which steps a dyno gets (`crate::isolated::plan`) and the parent's
//! side of the start (`crate::isolated`). This module is apart from the
//! isolated runtime so that `crate::os`, which implements [`sys::Sys`] and
//! clones into [`child::dyno_init`], depends on it and on nothing of the
//! runtime that calls `os`: the arrows go `isolated` → `os` → `init`.
//!
//! Invariant: everything the init runs here only walks data built before the
//! `clone` and makes system calls through [`sys::Sys`]: nothing allocates,
//! locks or panics.

pub(crate) mod child;
pub(crate) mod step;
pub(crate) mod sys;
