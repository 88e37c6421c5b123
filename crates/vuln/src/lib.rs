//! Security advisories for Entrepôt: OSV records, each ecosystem's version order, CVSS severities, an SQLite
//! advisory database and matching of installed packages against it.
//!
//! This crate knows nothing of HTTP, images or layers (the `inventory` crate reads packages out of layers; a later
//! step joins both); it depends on no other workspace crate.
//!
//! Public API:
//! - [`Ecosystem`] — OSV ecosystem strings (`Debian:12`, `Alpine:v3.19`, `PyPI`, …) → ecosystem + release;
//!   unknown ecosystems are kept, never matched.
//! - [`version::compare`]`(ecosystem, a, b)` and one module per order under [`version`] (dpkg, rpm, apk, pep440,
//!   semver for npm / crates.io / Go, maven, rubygems), each with typed [`version::VersionError`]s.
//! - [`osv::Advisory`] — the tolerant OSV schema; [`cvss`] — v3.x and v4.0 base scores and [`Severity`].
//! - [`AdvisoryDb::open`] / [`AdvisoryDb::import_dir`] / [`AdvisoryDb::import_zip`] / [`AdvisoryDb::status`] /
//!   [`AdvisoryDb::matches`] (a [`PackageQuery`] → [`Finding`]s) and [`rematch`] for many stored inventories.
//!
//! All APIs are synchronous; [`AdvisoryDb`] blocks on SQLite and belongs in `spawn_blocking` in async code.

pub mod cvss;
pub mod ecosystem;
pub mod import;
pub mod matcher;
pub mod osv;
pub mod store;
pub mod time;
pub mod version;

pub use cvss::Severity;
pub use ecosystem::Ecosystem;
pub use import::Malformed;
pub use matcher::{Finding, PackageQuery, match_advisory};
pub use store::{AdvisoryDb, DbError, ImportReport, Status, rematch};
