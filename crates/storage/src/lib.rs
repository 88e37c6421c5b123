//! `BlobStore`: where blob bytes live, addressed by digest, and where the bytes of uploads in progress
//! are staged until they are committed under their digest.
//!
//! The trait is deliberately narrow (stat, read, delete, list, and four upload calls) so that a new
//! backend — the local filesystem, memory, an S3-compatible object store ([`s3`]) — is small, and one
//! conformance suite ([`testsuite`]) runs against all of them. A store knows nothing of repositories,
//! tags, manifests or HTTP: visibility of a blob in a repository is the metadata store's business.
//! Every backend must make a committed blob appear atomically: a reader sees all of it or nothing.

pub mod fs;
pub mod memory;
pub mod s3;
pub mod testsuite;

use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use entrepot_oci::{ByteRange, Digest, Digester, UploadId};
use futures_util::Stream;

pub use fs::FsBlobStore;
pub use memory::MemoryBlobStore;
pub use s3::{S3BlobStore, S3Config};

/// A stream of bytes, read from a store or written to it.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Errors of a blob store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob not found")]
    NotFound,
    #[error("upload not found")]
    UploadNotFound,
    /// The bytes staged for an upload do not hash to the expected digest or size.
    #[error("staged upload does not match: {0}")]
    Mismatch(String),
    /// The bytes being written stopped (client disconnected, body error).
    #[error("upload stream interrupted: {0}")]
    Interrupted(io::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// What garbage collection and scrubbing need to know about stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    /// When the bytes were last written (a blob committed again gets a new time).
    pub modified: std::time::SystemTime,
}

/// Content-addressed blob storage with staged uploads.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of a stored blob, or `None` if it is not stored.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Streams a stored blob, or the given range of it (the range must lie within the blob).
    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream>;

    /// Deletes a stored blob; `false` if it was not there.
    async fn delete(&self, digest: &Digest) -> Result<bool>;

    /// Every stored blob digest (for garbage collection and scrubbing).
    async fn list(&self) -> Result<Vec<Digest>>;

    /// Creates an empty staging area for an upload.
    async fn upload_create(&self, id: &UploadId) -> Result<()>;

    /// Writes `data` into the upload starting at `offset`, discarding anything staged beyond `offset`
    /// first (bytes of an interrupted earlier write). Every byte written is also fed, in order, to
    /// `hasher`. Returns the number of bytes written and the hasher. On error, the staged bytes beyond
    /// `offset` are undefined and the caller must resume from its last recorded offset.
    async fn upload_write(
        &self,
        id: &UploadId,
        offset: u64,
        data: ByteStream,
        hasher: Digester,
    ) -> Result<(u64, Digester)>;

    /// Makes the first `size` staged bytes of the upload durable and visible as blob `digest`, then
    /// removes the staging area. The caller has verified the digest by hashing the bytes as they were
    /// written. Committing a digest that already exists is not an error.
    async fn upload_commit(&self, id: &UploadId, size: u64, digest: &Digest) -> Result<()>;

    /// Removes an upload's staging area; not an error if it does not exist.
    async fn upload_abort(&self, id: &UploadId) -> Result<()>;

    /// The ids of all staged uploads (to remove those the metadata store no longer knows).
    async fn list_uploads(&self) -> Result<Vec<UploadId>>;

    /// Size and last write time of a stored blob, or `None` if it is not stored.
    async fn blob_info(&self, digest: &Digest) -> Result<Option<BlobInfo>>;

    /// Size and last write time of an upload's staged bytes, or `None` if it has no staging area.
    async fn upload_info(&self, id: &UploadId) -> Result<Option<BlobInfo>>;

    /// [`BlobStore::blob_info`] for a thread that may block (no runtime hop): the metadata store runs
    /// it while holding its write lock, where waiting for another pooled thread could deadlock.
    fn blob_info_blocking(&self, digest: &Digest) -> Result<Option<BlobInfo>>;

    /// [`BlobStore::delete`] for a thread that may block, as [`BlobStore::blob_info_blocking`].
    fn delete_blocking(&self, digest: &Digest) -> Result<bool>;

    /// Moves a stored blob out of reach (it is no longer stored under its digest) into a quarantine
    /// kept for an operator to inspect. Returns where it went, or `None` if it was not stored.
    async fn quarantine(&self, digest: &Digest) -> Result<Option<String>>;

    /// A URL from which clients may fetch the blob's bytes themselves (a presigned object-store URL),
    /// when the backend is configured to hand out such redirects. `None` (the default): the registry
    /// serves the bytes. Only computes a URL; it does not check that the blob exists.
    fn redirect_url(&self, _digest: &Digest) -> Option<String> {
        None
    }
}

/// Size of the buffers blobs are written in (the filesystem backend reads in larger ones). Large
/// enough to amortise system calls and thread hand-offs, small enough that memory per transfer stays
/// bounded.
pub const IO_CHUNK: usize = 256 * 1024;
