//! The registry service: everything a registry does — push, pull, mount, tag, delete, referrers,
//! upload sessions — expressed over a `BlobStore` and a `MetaStore`, and nothing of HTTP.
//!
//! Handlers at the HTTP edge translate requests into calls here and map [`RegistryError`] into the
//! protocol's error envelope. Every input arrives already parsed into the validated types of
//! `entrepot_oci`; every rule of the distribution spec that is not about HTTP syntax lives here.

mod error;
pub mod events;
pub mod gc;
pub mod health;
#[cfg(test)]
mod lifecycle_tests;
pub mod metrics;
pub mod policy;
pub mod quota;
pub mod retention;
pub mod scrub;
mod service;
mod uploads;

pub use error::{Denied, RegistryError, Result};
pub use events::{EventKind, EventSink, EventSinkError, RegistryEvent};
pub use metrics::Metrics;
pub use service::{ManifestPut, Registry, RegistryConfig};
pub use uploads::UploadStatus;

pub use entrepot_meta::{ManifestRecord, Referrer};
pub use entrepot_storage::ByteStream;
