//! `MetaStore`: the source of truth for what a registry holds — repositories, which blobs each
//! repository may serve, manifests (their exact bytes and what they reference), tags, referrers and
//! upload sessions — and a few run-time settings every instance sharing it follows (the fleet-wide
//! read-only switch).
//!
//! A blob's bytes live in a `BlobStore`; it becomes visible in a repository only when linked here,
//! after its bytes are durable. Every multi-row change (a manifest with its references and tags) is one
//! transaction, so a crash never leaves half of it. Backends (SQLite embedded by default, PostgreSQL for
//! several instances) pass the same [`testsuite`]. Nothing here knows about HTTP; inputs are validated types.

pub mod lifecycle;
pub mod migrate;
pub mod outbox;
#[cfg(feature = "testsupport")]
pub mod pgtest;
pub mod postgres;
pub mod sqlite;
pub mod stats;
pub mod testsuite;

use async_trait::async_trait;
use entrepot_oci::{Algorithm, Digest, RepoName, Tag, UploadId};

pub use lifecycle::{
    BlobRecord, CollectReason, CollectedLink, CollectedManifest, LockedCheck, LockedSweep, ManifestGcPolicy, RepoUsage,
    SweepOutcome, TagRecord, no_check,
};
pub use outbox::{Delivery, EventOutbox, NewDelivery, OutboxCounts};
pub use postgres::PgMetaStore;
pub use sqlite::SqliteMetaStore;
pub use stats::MetaStats;

/// Everything a registry process needs from its metadata backend: the registry's metadata, the event
/// outbox and the monitoring figures. Implemented by every backend, so the binary can hold either one as
/// `Arc<dyn MetaBackend>` (and upcast it to the single traits).
pub trait MetaBackend: MetaStore + EventOutbox + MetaStats {}

impl<T: MetaStore + EventOutbox + MetaStats> MetaBackend for T {}

/// Held by the one garbage collection running over a registry's metadata, across processes and
/// instances (see [`MetaStore::try_gc_lock`]); dropping it lets another collection start.
pub struct GcLock {
    _held: Box<dyn std::any::Any + Send + Sync>,
}

impl GcLock {
    /// A lock released when `held` is dropped.
    pub fn new(held: impl std::any::Any + Send + Sync) -> GcLock {
        GcLock { _held: Box::new(held) }
    }
}

impl std::fmt::Debug for GcLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GcLock")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A manifest references a blob that is not linked in its repository.
    #[error("blob {0} is not known in this repository")]
    MissingBlob(Digest),
    /// An index references a manifest that is not in its repository.
    #[error("manifest {0} is not known in this repository")]
    MissingManifest(Digest),
    /// Stored data could not be decoded (e.g. an invalid digest in a row).
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("metadata database error: {0}")]
    Db(String),
    /// A tag the caller protects already points at another manifest; nothing was stored.
    #[error("tag {tag} already points at {current}")]
    TagProtected { tag: String, current: Digest },
    /// A [`LockedCheck`] or [`LockedSweep`] refused; the transaction was rolled back.
    #[error("precondition failed: {0}")]
    Precondition(String),
}

pub type Result<T> = std::result::Result<T, MetaError>;

/// A manifest to store, with what it references.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub digest: Digest,
    pub media_type: String,
    /// The exact bytes pushed.
    pub content: Vec<u8>,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// The manifest's annotations as a JSON object, if any.
    pub annotations: Option<String>,
    /// Blobs that must be linked in the repository (config and layers).
    pub blobs: Vec<Digest>,
    /// Child manifests of an index.
    pub children: Vec<Digest>,
    /// Whether every child must already be in the repository (false accepts sparse indexes).
    pub require_children: bool,
}

/// A stored manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub content: Vec<u8>,
}

/// A manifest whose `subject` is a given digest, as the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// JSON object, if any.
    pub annotations: Option<String>,
}

/// An upload in progress: where it is and how to continue hashing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    pub id: UploadId,
    pub repo: RepoName,
    pub algorithm: Algorithm,
    /// Bytes received and durably staged so far.
    pub offset: u64,
    /// `Digester::save()` after `offset` bytes.
    pub hash_state: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change (for expiry).
    pub updated_at: i64,
}

/// Metadata of a registry.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    // --- blobs ---
    /// The size of a blob known anywhere in the registry.
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Records a durable blob and links it into `repo` (creating the repository), after `check` passed
    /// under the write lock (see [`LockedCheck`]: it confirms the bytes are still there, which garbage
    /// collection cannot change while the lock is held).
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64, check: LockedCheck) -> Result<()>;
    /// The size of a blob linked in `repo`.
    async fn repo_blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;
    /// Unlinks a blob from `repo`; `false` if it was not linked.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    // --- manifests and tags ---
    /// Stores a manifest and points `tags` at it, in one transaction; fails with `MissingBlob` /
    /// `MissingManifest` if a reference is absent. Storing an existing manifest again is allowed (and
    /// renews its push time). A tag of `protected` (immutable tags) may be created but not moved: if
    /// one already points at another manifest, fails with `TagProtected` and stores nothing.
    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &NewManifest,
        tags: &[Tag],
        protected: &[Tag],
    ) -> Result<()>;
    async fn get_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ManifestRecord>>;
    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>>;
    /// Deletes a manifest and every tag pointing at it; `false` if it did not exist.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;
    /// Deletes one tag; `false` if it did not exist.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool>;
    /// Tags of `repo` in lexical order, after `last`, at most `n`.
    async fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Vec<String>>;
    /// Repositories in lexical order, after `last`, at most `n`.
    async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Vec<String>>;
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool>;
    /// Manifests of `repo` whose subject is `subject`, ordered by digest.
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>>;

    // --- upload sessions ---
    async fn create_upload(&self, session: &UploadSession) -> Result<()>;
    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadSession>>;
    /// Advances an upload from `expected_offset` to `offset` with a new hash state; `false` (and no
    /// change) if the stored offset is not `expected_offset` (a concurrent writer won).
    async fn advance_upload(
        &self,
        id: &UploadId,
        expected_offset: u64,
        offset: u64,
        hash_state: &[u8],
        now: i64,
    ) -> Result<bool>;
    /// Completes an upload in one transaction: records the durable blob, links it into `repo` and
    /// removes the session, after `check` passed under the write lock (as for [`MetaStore::link_blob`]).
    async fn complete_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        check: LockedCheck,
    ) -> Result<()>;
    /// Removes an upload session; `false` if it did not exist.
    async fn delete_upload(&self, id: &UploadId) -> Result<bool>;
    /// Sessions not changed since `before` (unix seconds).
    async fn stale_uploads(&self, before: i64) -> Result<Vec<UploadId>>;

    // --- storage lifecycle (garbage collection, retention, quotas, scrub) ---
    /// In one write transaction: removes the manifests of `repo` that `policy` lets garbage collection
    /// take (unreachable from tags through index children and subjects, pushed before the cutoff),
    /// then the repository's blob links that no remaining manifest references and that were made
    /// before the cutoff. Returns both; a dry run changes nothing.
    async fn gc_repository(
        &self,
        repo: &RepoName,
        policy: &ManifestGcPolicy,
    ) -> Result<(Vec<CollectedManifest>, Vec<CollectedLink>)>;
    /// Every recorded blob with its link count, by digest; only those no repository links when
    /// `unlinked_only`.
    async fn blob_records(&self, unlinked_only: bool) -> Result<Vec<BlobRecord>>;
    /// Under the write lock: if no repository links `digest`, runs `sweep` (which removes the bytes)
    /// and, if it reports them gone, removes the blob's record. Works for digests with no record too.
    async fn sweep_blob(&self, digest: &Digest, sweep: LockedSweep) -> Result<SweepOutcome>;
    /// Removes every link to `digest` and its record (its bytes are corrupt). Returns the
    /// repositories that linked it.
    async fn forget_blob(&self, digest: &Digest) -> Result<Vec<String>>;
    /// Tags of `repo` with targets and times, most recently updated first.
    async fn tag_records(&self, repo: &RepoName) -> Result<Vec<TagRecord>>;
    /// Deletes `tag` only if it still points at `digest` and was last set at `updated_at`.
    async fn delete_tag_if(&self, repo: &RepoName, tag: &Tag, digest: &Digest, updated_at: i64) -> Result<bool>;
    /// What `repo` holds (bytes of its distinct linked blobs, counts).
    async fn repo_usage(&self, repo: &RepoName) -> Result<RepoUsage>;
    /// What every repository holds, by name.
    async fn all_usage(&self) -> Result<Vec<RepoUsage>>;
    /// The manifests of `repo` with the length of their bytes, by digest.
    async fn manifest_digests(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>>;
    /// Tries to become the only garbage collector of this registry, across every process and instance
    /// sharing the metadata; `None` (at once, without waiting) if another holds the lock. Held until
    /// the returned [`GcLock`] is dropped, and released by the backend if the holder dies.
    async fn try_gc_lock(&self) -> Result<Option<GcLock>>;

    // --- settings shared by every instance (e.g. the fleet-wide read-only switch) ---
    /// The value stored under `key`, if any. A small key-value facility for run-time switches that
    /// every process sharing the metadata must see; never for registry data.
    async fn setting(&self, key: &str) -> Result<Option<String>>;
    /// Stores `value` under `key` (replacing any previous value), or deletes the key when `value` is
    /// `None` (deleting an absent key is not an error).
    async fn set_setting(&self, key: &str, value: Option<&str>) -> Result<()>;
}
