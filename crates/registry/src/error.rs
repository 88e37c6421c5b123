//! The service's typed errors. Each maps to one protocol error code; the HTTP edge picks the status.

use entrepot_meta::MetaError;
use entrepot_oci::{Digest, DigestError, ErrorCode, ManifestError, NameError};
use entrepot_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),
    #[error("upload session unknown (it may have expired or been completed)")]
    UploadUnknown,
    #[error("invalid upload: {0}")]
    UploadInvalid(String),
    /// A chunk does not start where the upload currently ends.
    #[error("chunk out of order: the upload is at offset {offset}")]
    ChunkOutOfOrder { offset: u64 },
    #[error("{0}")]
    DigestInvalid(String),
    #[error("size invalid: {0}")]
    SizeInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest references {kind} {digest} that is not in this repository")]
    ManifestBlobUnknown { kind: &'static str, digest: Digest },
    #[error("manifest of {size} bytes exceeds the limit of {limit} bytes")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("blob of {size} bytes exceeds the limit of {limit} bytes")]
    BlobTooLarge { size: u64, limit: u64 },
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    #[error("{0}")]
    NameInvalid(String),
    #[error("{0}")]
    TagInvalid(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Refused by the operator's policy: read-only mode, an immutable tag, a quota.
    #[error("{0}")]
    Denied(Box<Denied>),
    #[error("internal storage error")]
    Storage(#[source] StorageError),
    #[error("internal metadata error")]
    Meta(#[source] MetaError),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// Why a write was refused by policy. The message names the rule (and the usage, for a quota), so a
/// person reading the client's error knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("the registry is in read-only maintenance mode: pulls work, pushes and deletes are refused")]
    ReadOnly,
    #[error(
        "tag {tag} of {repo} is immutable (rule: repository `{rule_repo}`, tags `{rule_tags}`){}",
        match current { Some(d) => format!(" and already points at {d}; push under a new tag"), None => "; it cannot be deleted".to_string() }
    )]
    ImmutableTag { repo: String, tag: String, rule_repo: String, rule_tags: String, current: Option<Digest> },
    #[error("{what} quota of {rule} ({scope}) exceeded: {usage} used + {adding} more > limit {limit}")]
    Quota {
        /// `storage` or `tag`.
        what: &'static str,
        /// The rule's repository pattern.
        rule: String,
        /// `per repository` or `in total over the repositories matching the pattern`.
        scope: &'static str,
        usage: String,
        adding: String,
        limit: String,
    },
}

impl RegistryError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        use RegistryError::*;
        match self {
            BlobUnknown(_) => ErrorCode::BlobUnknown,
            UploadUnknown => ErrorCode::BlobUploadUnknown,
            UploadInvalid(_) | ChunkOutOfOrder { .. } => ErrorCode::BlobUploadInvalid,
            DigestInvalid(_) => ErrorCode::DigestInvalid,
            SizeInvalid(_) | BlobTooLarge { .. } => ErrorCode::SizeInvalid,
            ManifestUnknown(_) => ErrorCode::ManifestUnknown,
            ManifestInvalid(_) | ManifestTooLarge { .. } => ErrorCode::ManifestInvalid,
            ManifestBlobUnknown { .. } => ErrorCode::ManifestBlobUnknown,
            NameUnknown(_) => ErrorCode::NameUnknown,
            NameInvalid(_) => ErrorCode::NameInvalid,
            TagInvalid(_) => ErrorCode::TagInvalid,
            Unsupported(_) => ErrorCode::Unsupported,
            Denied(_) => ErrorCode::Denied,
            // Internal failures have no protocol code of their own; the edge answers 500.
            Storage(_) | Meta(_) => ErrorCode::Unsupported,
        }
    }

    /// A refusal by policy.
    pub fn denied(d: Denied) -> RegistryError {
        RegistryError::Denied(Box::new(d))
    }

    /// Whether this is a server-side failure rather than a problem with the request.
    pub fn is_internal(&self) -> bool {
        matches!(self, RegistryError::Storage(_) | RegistryError::Meta(_))
    }
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::UploadNotFound => RegistryError::UploadUnknown,
            StorageError::Interrupted(io) => RegistryError::UploadInvalid(format!("request body interrupted: {io}")),
            StorageError::Mismatch(why) => {
                RegistryError::UploadInvalid(format!("the upload's stored bytes are unusable ({why}); start it again"))
            }
            other => RegistryError::Storage(other),
        }
    }
}

impl From<MetaError> for RegistryError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::MissingBlob(digest) => RegistryError::ManifestBlobUnknown { kind: "blob", digest },
            MetaError::MissingManifest(digest) => RegistryError::ManifestBlobUnknown { kind: "manifest", digest },
            MetaError::TagProtected { tag, current } => RegistryError::denied(Denied::ImmutableTag {
                repo: String::new(),
                tag,
                rule_repo: "?".into(),
                rule_tags: "?".into(),
                current: Some(current),
            }),
            other => RegistryError::Meta(other),
        }
    }
}

impl From<DigestError> for RegistryError {
    fn from(e: DigestError) -> Self {
        RegistryError::DigestInvalid(e.to_string())
    }
}

impl From<NameError> for RegistryError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::InvalidName(_) => RegistryError::NameInvalid(e.to_string()),
            NameError::InvalidTag => RegistryError::TagInvalid(e.to_string()),
            NameError::InvalidDigest(d) => d.into(),
        }
    }
}

impl From<ManifestError> for RegistryError {
    fn from(e: ManifestError) -> Self {
        RegistryError::ManifestInvalid(e.to_string())
    }
}
