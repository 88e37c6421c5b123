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
    #[error("internal storage error")]
    Storage(#[source] StorageError),
    #[error("internal metadata error")]
    Meta(#[source] MetaError),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

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
            // Internal failures have no protocol code of their own; the edge answers 500.
            Storage(_) | Meta(_) => ErrorCode::Unsupported,
        }
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
