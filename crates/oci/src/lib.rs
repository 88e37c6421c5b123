//! The vocabulary of the OCI Distribution and Image specifications, as a registry needs it.
//!
//! Everything here is pure: parsing and validating digests, repository names, tags and references,
//! media types, manifests and indexes (into the descriptors a registry must track), byte ranges, and
//! the protocol's error codes. No I/O, no HTTP types, no storage: every other crate builds on this one,
//! and every untrusted string passes through one of these parsers before it reaches a path or a query.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;
pub mod pattern;
pub mod range;

pub use digest::{Algorithm, Digest, DigestError, Digester};
pub use error::{ErrorCode, ErrorEnvelope, ErrorInfo};
pub use manifest::{Descriptor, ManifestError, ManifestKind, ParsedManifest};
pub use name::{NameError, Reference, RepoName, Tag, UploadId};
pub use pattern::{PatternError, RepoPattern, TagPattern};
pub use range::{ByteRange, ContentRange, RangeError};
