//! Upload sessions: start, stream or chunk bytes in, finish under a verified digest, cancel, expire.
//!
//! The session (offset and the hasher's saved state) lives in the metadata store and the bytes in the
//! blob store's staging area, so an upload survives a restart and can continue on another instance.
//! Bytes become a visible blob only once the digest computed while they were written equals the one
//! the client names, the blob store has made them durable, and the metadata store has linked them.

use std::io;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use entrepot_meta::UploadSession;
use entrepot_oci::{Algorithm, ContentRange, Digest, Digester, RepoName, UploadId};
use entrepot_storage::{ByteStream, StorageError};
use futures_util::StreamExt;

use crate::error::{RegistryError, Result};
use crate::service::Registry;

/// How old staged bytes without a session must be before the start-up sweep removes them.
pub const ORPHAN_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: UploadId,
    pub repo: RepoName,
    /// Bytes received so far.
    pub offset: u64,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Fails the stream with `FileTooLarge` once more than `limit` bytes in total have passed.
fn limited(body: ByteStream, already: u64, limit: u64) -> ByteStream {
    if limit == 0 {
        return body;
    }
    let mut seen = already;
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "blob size limit exceeded"));
        }
        Ok(chunk)
    }))
}

impl Registry {
    fn upload_lock(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.upload_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.clone()).or_default().clone()
    }

    fn forget_upload_lock(&self, id: &UploadId) {
        self.upload_locks.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// The session `id` of `repo`. Call with the upload's lock held: when the session does not exist
    /// its lock is dropped from the table, so ids that clients invent do not accumulate.
    async fn session(&self, repo: &RepoName, id: &UploadId) -> Result<UploadSession> {
        match self.meta.get_upload(id).await? {
            Some(s) if &s.repo == repo => Ok(s),
            Some(_) => Err(RegistryError::UploadUnknown),
            None => {
                self.forget_upload_lock(id);
                Err(RegistryError::UploadUnknown)
            }
        }
    }

    /// Opens an upload session in `repo` hashing with `algorithm`.
    pub async fn start_upload(&self, repo: &RepoName, algorithm: Algorithm) -> Result<UploadStatus> {
        self.check_writable()?;
        // A repository already at its storage quota cannot take one more byte: refuse before the upload.
        self.check_quota(repo, 1, 0).await?;
        let id = UploadId::parse(&uuid::Uuid::new_v4().to_string())
            .ok_or_else(|| RegistryError::UploadInvalid("generated an invalid upload id".into()))?;
        let t = now();
        let session = UploadSession {
            id: id.clone(),
            repo: repo.clone(),
            algorithm,
            offset: 0,
            hash_state: Digester::new(algorithm).save(),
            created_at: t,
            updated_at: t,
        };
        // The staging area and the session row are independent: make both at once, and undo the one
        // that succeeded if the other failed (an id is fresh, so nobody else can be using either).
        let (staged, recorded) = tokio::join!(self.blobs.upload_create(&id), self.meta.create_upload(&session));
        match (staged, recorded) {
            (Ok(()), Ok(())) => Ok(UploadStatus { id, repo: repo.clone(), offset: 0 }),
            (Err(e), recorded) => {
                if recorded.is_ok() {
                    let _ = self.meta.delete_upload(&id).await;
                }
                Err(e.into())
            }
            (Ok(()), Err(e)) => {
                let _ = self.blobs.upload_abort(&id).await;
                Err(e.into())
            }
        }
    }

    /// Where an upload stands.
    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<UploadStatus> {
        let s = match self.meta.get_upload(id).await? {
            Some(s) if &s.repo == repo => s,
            _ => return Err(RegistryError::UploadUnknown),
        };
        Ok(UploadStatus { id: s.id, repo: s.repo, offset: s.offset })
    }

    /// Appends a chunk (`range` given: it must start at the current offset) or a stream (`range`
    /// absent) to an upload.
    pub async fn upload_chunk(
        &self,
        repo: &RepoName,
        id: &UploadId,
        range: Option<ContentRange>,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> Result<UploadStatus> {
        self.check_writable()?;
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        let session = self.session(repo, id).await?;
        let (offset, _) = self.append(&session, range, content_length, body).await?;
        Ok(UploadStatus { id: id.clone(), repo: repo.clone(), offset })
    }

    /// Writes `body` at the session's offset, checks it against `range` / `content_length`, and
    /// records the new offset and hash state. Returns the new offset and the hasher that has seen
    /// every byte up to it (the state just recorded).
    async fn append(
        &self,
        session: &UploadSession,
        range: Option<ContentRange>,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> Result<(u64, Digester)> {
        if let Some(r) = range {
            if r.start != session.offset {
                return Err(RegistryError::ChunkOutOfOrder { offset: session.offset });
            }
            if content_length.is_some_and(|n| n != r.len()) {
                return Err(RegistryError::SizeInvalid(format!(
                    "Content-Length does not match the Content-Range of {} bytes",
                    r.len()
                )));
            }
        }
        let hasher = Digester::restore(session.algorithm, &session.hash_state)
            .ok_or_else(|| RegistryError::UploadInvalid("stored hash state is unreadable".into()))?;
        let limit = self.config.max_blob_bytes;
        let body = limited(body, session.offset, limit);
        let (written, hasher) = match self.blobs.upload_write(&session.id, session.offset, body, hasher).await {
            Ok(v) => v,
            Err(StorageError::Interrupted(e)) if e.kind() == io::ErrorKind::FileTooLarge => {
                return Err(RegistryError::BlobTooLarge { size: limit.saturating_add(1), limit });
            }
            Err(e) => return Err(e.into()),
        };
        let expected = range.map(|r| r.len()).or(content_length);
        if let Some(n) = expected.filter(|&n| n != written) {
            return Err(RegistryError::SizeInvalid(format!("expected {n} bytes, received {written}")));
        }
        let offset = session.offset + written;
        if written > 0 && !self.meta.advance_upload(&session.id, session.offset, offset, &hasher.save(), now()).await? {
            return Err(RegistryError::UploadInvalid("upload was changed concurrently; check its status".into()));
        }
        Ok((offset, hasher))
    }

    /// Completes an upload: appends the optional last chunk, verifies the digest, makes the blob
    /// durable and links it into the repository. Returns the blob's size.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        range: Option<ContentRange>,
        content_length: Option<u64>,
        body: Option<ByteStream>,
    ) -> Result<u64> {
        self.check_writable()?;
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        let mut session = self.session(repo, id).await?;
        if digest.algorithm() != session.algorithm {
            return Err(RegistryError::DigestInvalid(format!(
                "the upload was started for {} digests; start it with ?digest-algorithm={}",
                session.algorithm,
                digest.algorithm()
            )));
        }
        // The hasher that has seen every staged byte: the one the last chunk went through (its state
        // is what `append` just recorded), else the session's saved state.
        let hasher = match body {
            Some(body) => {
                let (offset, hasher) = self.append(&session, range, content_length, body).await?;
                session.offset = offset;
                hasher
            }
            None => Digester::restore(session.algorithm, &session.hash_state)
                .ok_or_else(|| RegistryError::UploadInvalid("stored hash state is unreadable".into()))?,
        };
        let actual = hasher.finish();
        if &actual != digest {
            self.discard(id).await?;
            return Err(RegistryError::DigestInvalid(format!("uploaded content has digest {actual}, not {digest}")));
        }
        if let Err(e) = self.check_blob_quota(repo, digest, session.offset).await {
            self.discard(id).await?;
            return Err(e);
        }
        match self.blobs.upload_commit(id, session.offset, digest).await {
            Ok(()) => {}
            // A crash between an earlier commit and the removal of the session: the staged bytes are
            // already the (verified) blob, so finishing again only needs to link it.
            Err(StorageError::UploadNotFound) if self.blobs.stat(digest).await? == Some(session.offset) => {}
            Err(e) => return Err(e.into()),
        }
        // The link is made only if the bytes are still there once the metadata store's write lock is
        // held (garbage collection deletes bytes only under that lock; see `gc`).
        match self
            .meta
            .complete_upload(id, repo, digest, session.offset, self.bytes_present(digest, session.offset))
            .await
        {
            Ok(()) => {}
            Err(entrepot_meta::MetaError::Precondition(why)) => {
                self.discard(id).await?;
                return Err(RegistryError::UploadInvalid(format!(
                    "the blob could not be kept ({why}); upload it again"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.forget_upload_lock(id);
        Ok(session.offset)
    }

    /// Cancels an upload and discards its bytes.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        self.check_writable()?;
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        self.session(repo, id).await?;
        self.discard(id).await
    }

    async fn discard(&self, id: &UploadId) -> Result<()> {
        self.meta.delete_upload(id).await?;
        self.blobs.upload_abort(id).await?;
        self.forget_upload_lock(id);
        Ok(())
    }

    /// Removes sessions idle for longer than the configured expiry, with their bytes. Returns how many.
    pub async fn expire_uploads(&self) -> Result<usize> {
        let cutoff = now() - self.config.upload_expiry.as_secs() as i64;
        let stale = self.meta.stale_uploads(cutoff).await?;
        for id in &stale {
            let lock = self.upload_lock(id);
            let _guard = lock.lock().await;
            self.discard(id).await?;
        }
        Ok(stale.len())
    }

    /// Removes one expired session with its bytes, unless it was used again since `stale_uploads`
    /// listed it (by this process or another one).
    pub(crate) async fn expire_upload(&self, id: &UploadId) -> Result<()> {
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        let cutoff = now() - self.config.upload_expiry.as_secs() as i64;
        match self.meta.get_upload(id).await? {
            Some(s) if s.updated_at >= cutoff => Ok(()),
            _ => self.discard(id).await,
        }
    }

    /// Removes staged bytes that no session owns (left by a crash between the two). Call at start-up,
    /// before serving. Staging written within [`ORPHAN_MIN_AGE`] is left alone: with several instances
    /// on shared storage, another instance may be between creating an upload's staging and recording its
    /// session (the two run concurrently); garbage collection sweeps what is really orphaned later.
    pub async fn remove_orphan_uploads(&self) -> Result<usize> {
        let mut removed = 0;
        let cutoff = SystemTime::now().checked_sub(ORPHAN_MIN_AGE).unwrap_or(UNIX_EPOCH);
        for id in self.blobs.list_uploads().await? {
            let old_enough = match self.blobs.upload_info(&id).await? {
                Some(info) => info.modified < cutoff,
                None => false,
            };
            if old_enough && self.meta.get_upload(&id).await?.is_none() {
                self.blobs.upload_abort(&id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use entrepot_meta::SqliteMetaStore;
    use entrepot_oci::{Algorithm, ContentRange, Digest, RepoName};
    use entrepot_storage::{BlobStore as _, ByteStream, MemoryBlobStore};

    use crate::{Registry, RegistryConfig, RegistryError};

    fn body(data: &[u8]) -> ByteStream {
        let chunks: Vec<std::io::Result<Bytes>> = data.chunks(1000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Box::pin(futures_util::stream::iter(chunks))
    }

    async fn registry(dir: &tempfile::TempDir, blobs: &MemoryBlobStore, config: RegistryConfig) -> Registry {
        let meta = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("meta");
        Registry::new(Arc::new(blobs.clone()), Arc::new(meta), config)
    }

    #[tokio::test]
    async fn an_upload_continues_on_another_instance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = MemoryBlobStore::new();
        let repo = RepoName::parse("a/b").expect("repo");
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let first = registry(&dir, &blobs, RegistryConfig::default()).await;
        let s = first.start_upload(&repo, Algorithm::Sha512).await.expect("start");
        let s = first
            .upload_chunk(&repo, &s.id, Some(ContentRange { start: 0, end: 4999 }), None, body(&data[..5000]))
            .await
            .expect("chunk");
        assert_eq!(s.offset, 5000);

        // A second service over the same stores (another process, or a restart) finishes it.
        let second = registry(&dir, &blobs, RegistryConfig::default()).await;
        let err = second
            .upload_chunk(&repo, &s.id, Some(ContentRange { start: 4000, end: 4999 }), None, body(&data[4000..5000]))
            .await;
        assert!(matches!(err, Err(RegistryError::ChunkOutOfOrder { offset: 5000 })));
        let d = Digest::of(Algorithm::Sha512, &data);
        let size = second.finish_upload(&repo, &s.id, &d, None, None, Some(body(&data[5000..]))).await.expect("finish");
        assert_eq!(size, 10_000);
        assert_eq!(first.blob_size(&repo, &d).await.expect("visible"), 10_000);
        assert!(matches!(first.upload_status(&repo, &s.id).await, Err(RegistryError::UploadUnknown)));
    }

    #[tokio::test]
    async fn a_wrong_digest_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = MemoryBlobStore::new();
        let repo = RepoName::parse("a/b").expect("repo");
        let reg = registry(&dir, &blobs, RegistryConfig::default()).await;
        let s = reg.start_upload(&repo, Algorithm::Sha256).await.expect("start");
        let wrong = Digest::sha256(b"something else");
        let err = reg.finish_upload(&repo, &s.id, &wrong, None, None, Some(body(b"payload"))).await;
        assert!(matches!(err, Err(RegistryError::DigestInvalid(_))));
        assert!(blobs.list().await.expect("list").is_empty());
        assert!(blobs.list_uploads().await.expect("uploads").is_empty());
        assert!(matches!(reg.blob_size(&repo, &Digest::sha256(b"payload")).await, Err(RegistryError::BlobUnknown(_))));
    }

    #[tokio::test]
    async fn blob_size_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = MemoryBlobStore::new();
        let repo = RepoName::parse("a/b").expect("repo");
        let reg = registry(&dir, &blobs, RegistryConfig { max_blob_bytes: 100, ..Default::default() }).await;
        let s = reg.start_upload(&repo, Algorithm::Sha256).await.expect("start");
        reg.upload_chunk(&repo, &s.id, None, None, body(&[1u8; 60])).await.expect("first 60");
        let err = reg.upload_chunk(&repo, &s.id, None, None, body(&[1u8; 60])).await;
        assert!(matches!(err, Err(RegistryError::BlobTooLarge { limit: 100, .. })));
        assert_eq!(
            reg.upload_status(&repo, &s.id).await.expect("status").offset,
            60,
            "the failed chunk is not counted"
        );
    }

    #[tokio::test]
    async fn invented_upload_ids_leave_no_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = MemoryBlobStore::new();
        let repo = RepoName::parse("a/b").expect("repo");
        let reg = registry(&dir, &blobs, RegistryConfig::default()).await;
        for i in 0..100 {
            let id = entrepot_oci::UploadId::parse(&format!("invented-{i}")).expect("id");
            let r = reg.upload_chunk(&repo, &id, None, None, body(b"x")).await;
            assert!(matches!(r, Err(RegistryError::UploadUnknown)));
        }
        assert!(reg.upload_locks.lock().expect("locks").is_empty());
    }
}
