//! What crew's tests share, so that each crate's tests stop carrying their
//! own copy: a free port, one blocking HTTP GET, reading `/proc`, deadlines,
//! a real registry, and the placement conformance suite.
//!
//! Theory of operation: everything here is test code that panics with a
//! message naming what it waited for or could not do, since a failing test
//! is the only caller. Every wait takes a deadline. Nothing here starts the
//! `crew` binary: that needs `CARGO_BIN_EXE_crew`, which only crew's own
//! integration tests have, so the crew-specific harness (the app on disk, a
//! running `crew start`, a test server) stays in `crates/crew/tests`.
//!
//! The conformance suite ([`conformance`]) is one set of checks generic over
//! crew-engine's `Placement` trait; crew-swarm's and crew-kubernetes' tests
//! run it against their own placements and against the local one. This crate
//! depends on crew-engine but on no placement, so a placement crate can take
//! it as a dev-dependency without a cycle.

pub mod conformance;
pub mod http;
pub mod placement;
pub mod ports;
pub mod procs;
pub mod registry;
pub mod wait;
