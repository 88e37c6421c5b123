//! An in-memory backend, for tests of the layers above and as the simplest reference implementation
//! of the `BlobStore` contract. Not for production: everything is lost on exit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use entrepot_oci::{ByteRange, Digest, Digester, UploadId};
use futures_util::StreamExt;

use crate::{BlobInfo, BlobStore, ByteStream, Result, StorageError};

#[derive(Default, Clone)]
pub struct MemoryBlobStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    blobs: HashMap<Digest, Bytes>,
    uploads: HashMap<UploadId, BytesMut>,
    /// Last write time of blobs and staged uploads.
    blob_times: HashMap<Digest, SystemTime>,
    upload_times: HashMap<UploadId, SystemTime>,
    quarantined: Vec<(Digest, Bytes)>,
}

impl MemoryBlobStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.lock().blobs.get(digest).map(|b| b.len() as u64))
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        let blob = self.lock().blobs.get(digest).cloned().ok_or(StorageError::NotFound)?;
        let part = match range {
            Some(r) if r.start.saturating_add(r.len) <= blob.len() as u64 => {
                blob.slice(r.start as usize..(r.start + r.len) as usize)
            }
            Some(_) => return Err(StorageError::Mismatch("range beyond blob".into())),
            None => blob,
        };
        Ok(Box::pin(futures_util::stream::iter([Ok(part)])))
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        let mut inner = self.lock();
        inner.blob_times.remove(digest);
        Ok(inner.blobs.remove(digest).is_some())
    }

    async fn list(&self) -> Result<Vec<Digest>> {
        Ok(self.lock().blobs.keys().cloned().collect())
    }

    async fn upload_create(&self, id: &UploadId) -> Result<()> {
        let mut inner = self.lock();
        inner.uploads.insert(id.clone(), BytesMut::new());
        inner.upload_times.insert(id.clone(), SystemTime::now());
        Ok(())
    }

    async fn upload_write(
        &self,
        id: &UploadId,
        offset: u64,
        mut data: ByteStream,
        mut hasher: Digester,
    ) -> Result<(u64, Digester)> {
        {
            let mut inner = self.lock();
            let buf = inner.uploads.get_mut(id).ok_or(StorageError::UploadNotFound)?;
            if (buf.len() as u64) < offset {
                return Err(StorageError::Mismatch("offset beyond staged bytes".into()));
            }
            buf.truncate(offset as usize);
        }
        let mut written = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(StorageError::Interrupted)?;
            hasher.update(&chunk);
            written += chunk.len() as u64;
            let mut inner = self.lock();
            let buf = inner.uploads.get_mut(id).ok_or(StorageError::UploadNotFound)?;
            buf.extend_from_slice(&chunk);
            inner.upload_times.insert(id.clone(), SystemTime::now());
        }
        Ok((written, hasher))
    }

    async fn upload_commit(&self, id: &UploadId, size: u64, digest: &Digest) -> Result<()> {
        let mut inner = self.lock();
        let mut buf = inner.uploads.remove(id).ok_or(StorageError::UploadNotFound)?;
        if (buf.len() as u64) < size {
            return Err(StorageError::Mismatch(format!("staged {} bytes, expected {size}", buf.len())));
        }
        buf.truncate(size as usize);
        inner.upload_times.remove(id);
        inner.blobs.insert(digest.clone(), buf.freeze());
        inner.blob_times.insert(digest.clone(), SystemTime::now());
        Ok(())
    }

    async fn upload_abort(&self, id: &UploadId) -> Result<()> {
        let mut inner = self.lock();
        inner.uploads.remove(id);
        inner.upload_times.remove(id);
        Ok(())
    }

    async fn list_uploads(&self) -> Result<Vec<UploadId>> {
        Ok(self.lock().uploads.keys().cloned().collect())
    }

    fn blob_info_blocking(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        let inner = self.lock();
        Ok(inner.blobs.get(digest).map(|b| BlobInfo {
            size: b.len() as u64,
            modified: inner.blob_times.get(digest).copied().unwrap_or(SystemTime::UNIX_EPOCH),
        }))
    }

    fn delete_blocking(&self, digest: &Digest) -> Result<bool> {
        let mut inner = self.lock();
        inner.blob_times.remove(digest);
        Ok(inner.blobs.remove(digest).is_some())
    }

    async fn blob_info(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        self.blob_info_blocking(digest)
    }

    async fn upload_info(&self, id: &UploadId) -> Result<Option<BlobInfo>> {
        let inner = self.lock();
        Ok(inner.uploads.get(id).map(|b| BlobInfo {
            size: b.len() as u64,
            modified: inner.upload_times.get(id).copied().unwrap_or(SystemTime::UNIX_EPOCH),
        }))
    }

    async fn quarantine(&self, digest: &Digest) -> Result<Option<String>> {
        let mut inner = self.lock();
        let Some(bytes) = inner.blobs.remove(digest) else { return Ok(None) };
        inner.blob_times.remove(digest);
        inner.quarantined.push((digest.clone(), bytes));
        Ok(Some(format!("memory quarantine #{}", inner.quarantined.len())))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        crate::testsuite::run_all(&super::MemoryBlobStore::new()).await;
    }
}
