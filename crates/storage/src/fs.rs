//! The local filesystem backend: blobs under `<root>/blobs/<algorithm>/<2 hex>/<hex>`, uploads staged
//! under `<root>/uploads/<id>`.
//!
//! A commit fsyncs the staged file, renames it into place and fsyncs the directory, so a crash leaves
//! either the whole blob or none of it. Paths are only ever built from a validated `Digest` or
//! `UploadId`; nothing else reaches the filesystem.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use entrepot_oci::{Algorithm, ByteRange, Digest, Digester, UploadId};
use futures_util::StreamExt;
use tokio::task::spawn_blocking;

use crate::{BlobStore, ByteStream, IO_CHUNK, Result, StorageError};

/// Blobs on the local filesystem.
#[derive(Clone)]
pub struct FsBlobStore {
    root: Arc<PathBuf>,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<FsBlobStore> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs"))?;
        fs::create_dir_all(root.join("uploads"))?;
        Ok(FsBlobStore { root: Arc::new(root) })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root.join("blobs").join(d.algorithm().as_str()).join(&hex[..2]).join(hex)
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.as_str())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    spawn_blocking(f).await.map_err(io::Error::other)?
}

fn not_found_to_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        Ok(not_found_to_none(blocking(move || fs::metadata(path)).await)?.map(|m| m.len()))
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        let path = self.blob_path(digest);
        let opened = blocking(move || {
            let mut f = File::open(path)?;
            let size = f.metadata()?.len();
            let (start, len) = match range {
                Some(r) => (r.start, r.len),
                None => (0, size),
            };
            if start.saturating_add(len) > size {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "range beyond blob"));
            }
            f.seek(SeekFrom::Start(start))?;
            Ok((f, len))
        })
        .await;
        let (file, len) = match opened {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::NotFound),
            Err(e) => return Err(e.into()),
        };
        Ok(file_stream(file, len))
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        Ok(not_found_to_none(blocking(move || fs::remove_file(path)).await)?.is_some())
    }

    async fn list(&self) -> Result<Vec<Digest>> {
        let root = self.root.join("blobs");
        Ok(blocking(move || {
            let mut out = Vec::new();
            for algo in [Algorithm::Sha256, Algorithm::Sha512] {
                let dir = root.join(algo.as_str());
                let Some(prefixes) = not_found_to_none(fs::read_dir(&dir))? else { continue };
                for prefix in prefixes {
                    for entry in fs::read_dir(prefix?.path())? {
                        let name = entry?.file_name();
                        if let Ok(d) = Digest::parse(&format!("{}:{}", algo, name.to_string_lossy())) {
                            out.push(d);
                        }
                    }
                }
            }
            Ok(out)
        })
        .await?)
    }

    async fn upload_create(&self, id: &UploadId) -> Result<()> {
        let path = self.upload_path(id);
        blocking(move || File::create(path).map(|_| ())).await?;
        Ok(())
    }

    async fn upload_write(
        &self,
        id: &UploadId,
        offset: u64,
        mut data: ByteStream,
        hasher: Digester,
    ) -> Result<(u64, Digester)> {
        let path = self.upload_path(id);
        let file = match blocking(move || {
            let mut f = OpenOptions::new().write(true).open(path)?;
            // Never pad: a staged file shorter than the recorded offset (bytes lost to a power cut)
            // cannot continue, or zeros would be committed under a digest computed over real data.
            let len = f.metadata()?.len();
            if len < offset {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("staged upload holds {len} bytes, fewer than the recorded {offset}"),
                ));
            }
            f.set_len(offset)?;
            f.seek(SeekFrom::Start(offset))?;
            Ok(f)
        })
        .await
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::UploadNotFound),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(StorageError::Mismatch(e.to_string())),
            Err(e) => return Err(e.into()),
        };

        // Receive into one buffer while the previous one is hashed and written on a blocking thread.
        let mut state = Some((file, hasher));
        let mut in_flight: Option<tokio::task::JoinHandle<io::Result<(File, Digester)>>> = None;
        let mut buf = BytesMut::with_capacity(IO_CHUNK);
        let mut written: u64 = 0;
        let flush = |buf: BytesMut, state: (File, Digester)| {
            spawn_blocking(move || {
                let (mut f, mut h) = state;
                h.update(&buf);
                f.write_all(&buf)?;
                Ok((f, h))
            })
        };
        loop {
            let next = data.next().await;
            let done = match next {
                Some(Ok(chunk)) => {
                    written += chunk.len() as u64;
                    buf.extend_from_slice(&chunk);
                    false
                }
                Some(Err(e)) => {
                    if let Some(h) = in_flight.take() {
                        let _ = h.await;
                    }
                    return Err(StorageError::Interrupted(e));
                }
                None => true,
            };
            if buf.len() >= IO_CHUNK || (done && !buf.is_empty()) {
                if let Some(h) = in_flight.take() {
                    state = Some(h.await.map_err(io::Error::other)??);
                }
                let full = std::mem::replace(&mut buf, BytesMut::with_capacity(if done { 0 } else { IO_CHUNK }));
                let st = state.take().ok_or_else(|| io::Error::other("writer state lost"))?;
                in_flight = Some(flush(full, st));
            }
            if done {
                break;
            }
        }
        if let Some(h) = in_flight.take() {
            state = Some(h.await.map_err(io::Error::other)??);
        }
        let (_file, hasher) = state.ok_or_else(|| io::Error::other("writer state lost"))?;
        Ok((written, hasher))
    }

    async fn upload_commit(&self, id: &UploadId, size: u64, digest: &Digest) -> Result<()> {
        let src = self.upload_path(id);
        let dst = self.blob_path(digest);
        let res = blocking(move || {
            let f = OpenOptions::new().write(true).open(&src)?;
            let len = f.metadata()?.len();
            if len < size {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("staged {len} bytes, expected {size}")));
            }
            if len > size {
                f.set_len(size)?;
            }
            f.sync_all()?;
            drop(f);
            let parent = dst.parent().ok_or_else(|| io::Error::other("blob path has no parent"))?;
            fs::create_dir_all(parent)?;
            fs::rename(&src, &dst)?;
            sync_dir(parent)?;
            if let Some(uploads) = src.parent() {
                sync_dir(uploads)?;
            }
            Ok(())
        })
        .await;
        match res {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::UploadNotFound),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(StorageError::Mismatch(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    async fn upload_abort(&self, id: &UploadId) -> Result<()> {
        let path = self.upload_path(id);
        not_found_to_none(blocking(move || fs::remove_file(path)).await)?;
        Ok(())
    }

    async fn list_uploads(&self) -> Result<Vec<UploadId>> {
        let dir = self.root.join("uploads");
        Ok(blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(dir)? {
                if let Some(id) = UploadId::parse(&entry?.file_name().to_string_lossy()) {
                    out.push(id);
                }
            }
            Ok(out)
        })
        .await?)
    }
}

/// Streams `len` bytes from the file's current position in `IO_CHUNK` reads on blocking threads,
/// reading the next chunk while the previous one is being sent.
fn file_stream(file: File, len: u64) -> ByteStream {
    struct State {
        file: Option<File>,
        left: u64,
    }
    let stream = futures_util::stream::unfold(State { file: Some(file), left: len }, |mut st| async move {
        if st.left == 0 {
            return None;
        }
        let mut file = st.file.take()?;
        let want = st.left.min(IO_CHUNK as u64) as usize;
        let res = spawn_blocking(move || {
            let mut buf = BytesMut::zeroed(want);
            let mut filled = 0;
            while filled < want {
                let n = file.read(&mut buf[filled..])?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob shorter than expected"));
                }
                filled += n;
            }
            Ok::<_, io::Error>((file, buf.freeze()))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        match res {
            Ok((file, bytes)) => {
                st.left -= bytes.len() as u64;
                st.file = Some(file);
                Some((Ok::<Bytes, io::Error>(bytes), st))
            }
            Err(e) => {
                st.left = 0;
                Some((Err(e), st))
            }
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("open");
        crate::testsuite::run_all(&store).await;
    }
}
