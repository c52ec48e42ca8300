//! The HTTP+JSON API that every `crew` client command speaks.
//!
//! The routes and shapes follow Heroku's Platform API v3 (`GET /apps/{app}/dynos`,
//! `PATCH /apps/{app}/formation`, …), so one client serves both modes: a running
//! `crew start` answers them on a Unix socket in the app's directory, and
//! `crew server` answers them over TCP for many apps. [`types`] holds the
//! request and response bodies, [`server`] turns any [`server::ApiService`] into a
//! router (one handler file per resource), and [`client`] is the other end of
//! the wire. [`attach`] carries an attached one-off's terminal over an
//! upgraded connection, and [`rendezvous`] does it for Heroku's CLI. [`git`]
//! answers git's smart HTTP for a server; [`secret`] makes the secrets that
//! tokens and secret URLs carry, and compares them in constant time.

pub mod attach;
pub mod client;
pub mod git;
pub mod rendezvous;
pub mod secret;
pub mod server;
pub mod types;
