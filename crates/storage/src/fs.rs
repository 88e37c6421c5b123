//! The local filesystem backend: blobs under `<root>/blobs/<algorithm>/<2 hex>/<hex>`, uploads staged
//! under `<root>/uploads/<id>`.
//!
//! A commit fsyncs the staged file (`fdatasync`: its bytes and size), renames it into place and fsyncs
//! the directory, so a crash leaves either the whole blob or none of it. The 256 sha256 prefix
//! directories are created (durably) when the store opens, so a commit creates no directory. Paths
//! are only ever built from a validated `Digest` or `UploadId`; nothing else reaches the filesystem.
//!
//! An upload write copies the received chunks into [`IO_CHUNK`] batches (buffers recycled through a
//! small store-wide pool) and hands each batch, shared, to two blocking threads that live for the
//! whole call: one hashes, the other writes, so hashing and writing overlap. Bounded queues keep the
//! memory of one upload to a few batches whatever the blob's size. Batches start on a
//! [`DIRECT_ALIGN`] boundary so that, on Linux, the writer can hand them to the disk directly
//! (`O_DIRECT`, a [`StagedWriter`]): no copy into the page cache and no writeback left for the
//! commit's fsync, which halves the CPU a large push costs. Whatever cannot go direct (a position or
//! a last batch off the block grid, a filesystem without `O_DIRECT`) is written through the page cache,
//! and the writer asks the kernel to start writing those bytes back as they come (`sync_file_range`),
//! so the fsync has little left to do. The writer holds an exclusive lock on the staged file, which
//! the next write call or the commit takes too: the queue of a call abandoned mid-way (client gone)
//! drains before anything else touches the file.
//!
//! A small body (at most [`INLINE_WRITE`] bytes) into a staged file nobody else is writing, and the
//! creation of an empty staged file, are made on the calling thread: a few short system calls, like the
//! metadata store's short writes, cheaper than two thread switches.
//!
//! A read streams the file in [`READ_CHUNK`] positioned reads, each a short task on a blocking
//! thread issued while the previous chunk is being sent, in buffers reused once the consumer has
//! dropped them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use entrepot_oci::{Algorithm, ByteRange, Digest, Digester, UploadId};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, spawn_blocking};

use crate::{BlobInfo, BlobStore, ByteStream, IO_CHUNK, Result, StorageError};

/// Blobs on the local filesystem.
#[derive(Clone)]
pub struct FsBlobStore {
    root: Arc<PathBuf>,
    buffers: Arc<BufferPool>,
    direct_writes: bool,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<FsBlobStore> {
        let root = root.into();
        create_dirs_durably(&root.join("blobs"))?;
        create_dirs_durably(&root.join("uploads"))?;
        // The 256 prefix directories of sha256 blobs exist from the start, so a commit never creates a
        // directory (an inode allocation and two more fsyncs) while a client waits. Best effort (a
        // read-only data directory still opens): a commit creates a missing one itself.
        let _ = create_prefix_dirs(&root.join("blobs").join(Algorithm::Sha256.as_str()));
        Ok(FsBlobStore { root: Arc::new(root), buffers: Arc::default(), direct_writes: true })
    }

    /// Whether uploads larger than one batch are written past the page cache (`O_DIRECT`, Linux
    /// only; on by default). Off, every byte goes through the page cache: a push then costs the CPU
    /// of that copy, and the blob is still cached for a pull right after it.
    pub fn direct_writes(mut self, on: bool) -> FsBlobStore {
        self.direct_writes = on;
        self
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

fn info(path: &Path) -> io::Result<BlobInfo> {
    let m = fs::metadata(path)?;
    Ok(BlobInfo { size: m.len(), modified: m.modified()? })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all`, then fsyncs the parent of every directory it created, so that the new
/// directories survive a power cut (a blob renamed into a directory whose own entry was lost would be
/// lost with it).
fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.is_dir() {
        missing.push(at);
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Creates (durably) the 256 two-hex-digit prefix directories under `dir` that do not exist yet.
fn create_prefix_dirs(dir: &Path) -> io::Result<()> {
    create_dirs_durably(dir)?;
    let mut created = false;
    for i in 0..=255u8 {
        match fs::create_dir(dir.join(format!("{i:02x}"))) {
            Ok(()) => created = true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if created {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Runs `f` on a blocking thread, for calls whose errors are already storage errors.
async fn blocking_storage<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    spawn_blocking(f).await.map_err(io::Error::other)?
}

/// Size of the reads a blob is streamed in: larger than [`IO_CHUNK`] since the buffers are reused.
const READ_CHUNK: usize = 1024 * 1024;

/// Buffers of a read stream kept for reuse.
const READ_REUSE: usize = 2;

/// Batches queued for each of the hashing and writing threads of an upload write.
const WRITE_QUEUE: usize = 4;

/// Largest upload write made on the calling thread instead of a blocking one (see `upload_write`).
const INLINE_WRITE: usize = 64 * 1024;

/// Write buffers kept by the store between upload writes.
const POOL_BUFFERS: usize = 16;

/// Buffers of [`IO_CHUNK`] bytes that upload writes copy received chunks into, kept across calls
/// so that a steady stream of uploads allocates (and faults in) no new memory.
#[derive(Default)]
struct BufferPool {
    free: Mutex<Vec<BytesMut>>,
}

impl BufferPool {
    fn take(&self) -> BytesMut {
        let mut buf = self.free.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_else(aligned_buffer);
        buf.clear();
        buf.reserve(IO_CHUNK);
        buf
    }

    /// Takes back the buffers of `sent` nobody else holds any more.
    fn put(&self, sent: impl IntoIterator<Item = Bytes>) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        for b in sent {
            if free.len() >= POOL_BUFFERS {
                break;
            }
            if let Ok(buf) = b.try_into_mut() {
                free.push(buf);
            }
        }
    }
}

/// Alignment of the memory, file positions and lengths of a direct (`O_DIRECT`) write: the page size,
/// a multiple of every disk's logical block size.
const DIRECT_ALIGN: usize = 4096;

/// An empty buffer of [`IO_CHUNK`] bytes' capacity starting on a [`DIRECT_ALIGN`] boundary (it stays
/// there through `freeze`, `try_into_mut`, `clear` and a `reserve` within the capacity).
fn aligned_buffer() -> BytesMut {
    let mut buf = BytesMut::with_capacity(IO_CHUNK + DIRECT_ALIGN);
    let pad = buf.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
    buf.resize(pad, 0);
    drop(buf.split_to(pad));
    buf
}

/// Cuts a body into batches of [`IO_CHUNK`] bytes, copied out of the received chunks. Holding on
/// to the chunks themselves would save the copy but cost more: the HTTP server could then not reuse
/// its receive buffer and would fault in a fresh one for every read.
struct Batcher<'a> {
    pool: &'a BufferPool,
    /// Batches handed out, reused once the hashing and writing threads have dropped them.
    sent: Vec<Bytes>,
    /// The part of a received chunk that did not fit in the previous batch.
    carry: Option<Bytes>,
    ended: bool,
}

impl<'a> Batcher<'a> {
    fn new(pool: &'a BufferPool) -> Self {
        Batcher { pool, sent: Vec::new(), carry: None, ended: false }
    }

    /// The next batch: full, or the last one (then [`Batcher::ended`]; it may be empty).
    async fn next(&mut self, data: &mut ByteStream) -> io::Result<Bytes> {
        let mut buf = match self.sent.iter().position(Bytes::is_unique) {
            Some(i) => self.sent.swap_remove(i).try_into_mut().unwrap_or_else(|_| self.pool.take()),
            None => self.pool.take(),
        };
        buf.clear();
        buf.reserve(IO_CHUNK);
        while buf.len() < IO_CHUNK {
            let mut chunk = match self.carry.take() {
                Some(c) => c,
                None => match data.next().await {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => return Err(e),
                    None => {
                        self.ended = true;
                        break;
                    }
                },
            };
            let n = chunk.len().min(IO_CHUNK - buf.len());
            buf.extend_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.carry = Some(chunk.split_off(n));
            }
        }
        let batch = buf.freeze();
        if self.sent.len() < WRITE_QUEUE + 3 {
            self.sent.push(batch.clone());
        }
        Ok(batch)
    }
}

impl Drop for Batcher<'_> {
    fn drop(&mut self) {
        self.pool.put(self.sent.drain(..));
    }
}

/// Opens an upload's staged file for writing at `offset`: locks it (waiting for the writer of an
/// abandoned earlier call to finish), refuses it if it holds fewer than `offset` bytes and discards
/// anything beyond.
fn open_staged(path: &Path, offset: u64) -> Result<File> {
    let f = open_staged_unlocked(path)?;
    f.lock()?;
    at_offset(f, offset)
}

/// [`open_staged`] without waiting: `None` when another writer holds the staged file's lock.
fn try_open_staged(path: &Path, offset: u64) -> Result<Option<File>> {
    let f = open_staged_unlocked(path)?;
    match f.try_lock() {
        Ok(()) => at_offset(f, offset).map(Some),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

fn open_staged_unlocked(path: &Path) -> Result<File> {
    match OpenOptions::new().write(true).open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::UploadNotFound),
        Err(e) => Err(e.into()),
    }
}

/// Positions a locked staged file at `offset` (see [`open_staged`]).
fn at_offset(mut f: File, offset: u64) -> Result<File> {
    // Never pad: a staged file shorter than the recorded offset (bytes lost to a power cut) cannot
    // continue, or zeros would be committed under a digest computed over real data.
    let len = f.metadata()?.len();
    if len < offset {
        return Err(StorageError::Mismatch(format!(
            "staged upload holds {len} bytes, fewer than the recorded {offset}"
        )));
    }
    f.set_len(offset)?;
    f.seek(SeekFrom::Start(offset))?;
    Ok(f)
}

/// Starts the writeback of staged bytes every [`WRITEBACK_STEP`] bytes, so that the disk writes
/// overlap the upload instead of all waiting for the commit's fsync (which then has little left to
/// do). Only a hint (a no-op off Linux): durability still comes from the commit.
struct Writeback {
    started: u64,
    end: u64,
}

/// Bytes written between two writeback requests.
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

impl Writeback {
    fn new(offset: u64) -> Writeback {
        Writeback { started: offset, end: offset }
    }

    fn wrote(&mut self, file: &File, n: u64) {
        self.end += n;
        if self.end - self.started < WRITEBACK_STEP {
            return;
        }
        Writeback::start(file, self.started, self.end - self.started);
        self.started = self.end;
    }

    /// Asks the kernel to start writing `len` bytes at `start` back, without waiting.
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    fn start(file: &File, start: u64, len: u64) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (Ok(start), Ok(len)) = (i64::try_from(start), i64::try_from(len)) else {
                return;
            };
            if len == 0 {
                return;
            }
            // SAFETY: a plain system call on a file descriptor `file` keeps open; errors are ignored
            // (the commit's fsync reports them).
            unsafe { libc::sync_file_range(file.as_raw_fd(), start, len, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }
}

/// Writes an upload's batches at the staged file's position, directly to the disk (`O_DIRECT`) when
/// the memory, the position and the length allow it and through the page cache otherwise (with
/// [`Writeback`] hints). Several queued batches go down in one vectored write.
struct StagedWriter {
    file: File,
    pos: u64,
    /// Whether `O_DIRECT` is set on `file` now.
    direct: bool,
    /// Cleared for good when the filesystem refuses direct I/O.
    direct_possible: bool,
    writeback: Writeback,
}

impl StagedWriter {
    fn new(file: File, pos: u64, direct: bool) -> StagedWriter {
        let direct_possible = direct && cfg!(target_os = "linux");
        StagedWriter { file, pos, direct: false, direct_possible, writeback: Writeback::new(pos) }
    }

    fn write(&mut self, batches: &[Bytes]) -> io::Result<()> {
        // The leading run of whole, aligned batches may go direct; the rest (at most a short last
        // batch) goes through the page cache.
        let direct_len = batches
            .iter()
            .take_while(|b| b.as_ptr().align_offset(DIRECT_ALIGN) == 0 && b.len().is_multiple_of(DIRECT_ALIGN))
            .count();
        let mut rest = batches;
        if direct_len > 0
            && self.direct_possible
            && self.pos.is_multiple_of(DIRECT_ALIGN as u64)
            && self.set_direct(true)
        {
            let (direct, buffered) = batches.split_at(direct_len);
            rest = buffered;
            let total: usize = direct.iter().map(Bytes::len).sum();
            let slices: Vec<IoSlice<'_>> = direct.iter().map(|b| IoSlice::new(b)).collect();
            let n = match (&self.file).write_vectored(&slices) {
                Ok(n) => n,
                // Refused before anything was written (alignment rules stricter than ours): carry
                // on through the page cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct_possible = false;
                    0
                }
                Err(e) => return Err(e),
            };
            self.pos += n as u64;
            self.writeback = Writeback::new(self.pos);
            if n < total {
                // A short direct write: the remainder goes through the page cache.
                self.buffered(direct, n)?;
            }
        }
        self.buffered(rest, 0)
    }

    /// Writes `batches` through the page cache, skipping their first `skip` bytes.
    fn buffered(&mut self, batches: &[Bytes], mut skip: usize) -> io::Result<()> {
        if batches.iter().map(Bytes::len).sum::<usize>() <= skip {
            return Ok(());
        }
        self.set_direct(false);
        for b in batches {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            let part = &b[skip..];
            skip = 0;
            self.file.write_all(part)?;
            self.pos += part.len() as u64;
            self.writeback.wrote(&self.file, part.len() as u64);
        }
        Ok(())
    }

    /// Sets or clears `O_DIRECT` on the file; false when it could not be set (then it never will).
    fn set_direct(&mut self, on: bool) -> bool {
        if self.direct == on {
            return true;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.file.as_raw_fd();
            // SAFETY: fcntl on a descriptor `self.file` keeps open, with integer arguments only.
            let ok = unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                flags >= 0 && {
                    let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
                    libc::fcntl(fd, libc::F_SETFL, flags) == 0
                }
            };
            if ok {
                self.direct = on;
            } else if on {
                self.direct_possible = false;
            }
            ok
        }
        #[cfg(not(target_os = "linux"))]
        {
            !on
        }
    }
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
            let f = File::open(path)?;
            let size = f.metadata()?.len();
            let (start, len) = match range {
                Some(r) => (r.start, r.len),
                None => (0, size),
            };
            if start.saturating_add(len) > size {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "range beyond blob"));
            }
            Ok((f, start, len))
        })
        .await;
        let (file, start, len) = match opened {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::NotFound),
            Err(e) => return Err(e.into()),
        };
        Ok(file_stream(file, start, len))
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
        // Creating an empty file is a short system call: made right here, like the metadata store's
        // short writes, rather than paying two thread switches for it.
        File::create(self.upload_path(id))?;
        Ok(())
    }

    async fn upload_write(
        &self,
        id: &UploadId,
        offset: u64,
        mut data: ByteStream,
        mut hasher: Digester,
    ) -> Result<(u64, Digester)> {
        let path = self.upload_path(id);
        let direct = self.direct_writes;
        let mut batcher = Batcher::new(&self.buffers);
        let first = batcher.next(&mut data).await.map_err(StorageError::Interrupted)?;
        let mut written = first.len() as u64;
        if batcher.ended {
            // The whole body fits in one batch (small blobs). Often the last bytes of the upload:
            // their writeback starts now, so that the commit's fsync, a few requests later, has only
            // the flush left to wait for.
            let write = move |mut file: File, mut hasher: Digester| {
                hasher.update(&first);
                file.write_all(&first)?;
                Writeback::start(&file, offset, written);
                Ok((written, hasher))
            };
            // A small body into a staged file nobody else is writing: a few short system calls,
            // made right here. Otherwise one blocking call, which may wait for the file's lock.
            if written <= INLINE_WRITE as u64
                && let Some(file) = try_open_staged(&path, offset)?
            {
                return write(file, hasher);
            }
            return blocking_storage(move || write(open_staged(&path, offset)?, hasher)).await;
        }

        // Hash and write in parallel, each on a blocking thread that lives for the whole call and is
        // fed the same batches through a bounded queue: a few batches per upload whatever its size.
        let (hash_tx, mut hash_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let (write_tx, mut write_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let hashing = spawn_blocking(move || {
            while let Some(batch) = hash_rx.blocking_recv() {
                hasher.update(&batch);
            }
            hasher
        });
        let writing = spawn_blocking(move || {
            let mut writer = StagedWriter::new(open_staged(&path, offset)?, offset, direct);
            let mut batches = Vec::with_capacity(WRITE_QUEUE);
            while let Some(batch) = write_rx.blocking_recv() {
                // Whatever else is queued goes down in the same write.
                batches.push(batch);
                while batches.len() < WRITE_QUEUE {
                    match write_rx.try_recv() {
                        Ok(b) => batches.push(b),
                        Err(_) => break,
                    }
                }
                writer.write(&batches)?;
                batches.clear();
            }
            Ok::<_, StorageError>(())
        });
        let mut batch = first;
        let mut interrupted = None;
        loop {
            // A send fails only when the writer stopped on an error, reported below.
            if hash_tx.send(batch.clone()).await.is_err() || write_tx.send(batch).await.is_err() || batcher.ended {
                break;
            }
            match batcher.next(&mut data).await {
                Ok(next) => {
                    written += next.len() as u64;
                    batch = next;
                }
                Err(e) => {
                    interrupted = Some(e);
                    break;
                }
            }
        }
        drop((hash_tx, write_tx));
        // Both threads are joined before returning, so no write of this call lands after it returns.
        let wrote = writing.await.map_err(io::Error::other)?;
        let hasher = hashing.await.map_err(io::Error::other)?;
        drop(batcher);
        wrote?;
        if let Some(e) = interrupted {
            return Err(StorageError::Interrupted(e));
        }
        Ok((written, hasher))
    }

    async fn upload_commit(&self, id: &UploadId, size: u64, digest: &Digest) -> Result<()> {
        let src = self.upload_path(id);
        let dst = self.blob_path(digest);
        let res = blocking(move || {
            let f = OpenOptions::new().write(true).open(&src)?;
            // Waits for the writer of an abandoned write call still draining its queue.
            f.lock()?;
            let len = f.metadata()?.len();
            if len < size {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("staged {len} bytes, expected {size}")));
            }
            if len > size {
                f.set_len(size)?;
            }
            // The data and what reading it back needs (the size): the staged name itself need not
            // survive, only the blob's name below.
            f.sync_data()?;
            drop(f);
            let parent = dst.parent().ok_or_else(|| io::Error::other("blob path has no parent"))?;
            // Prefix directories normally exist (see `open`); create one only when it is missing.
            if let Err(e) = fs::rename(&src, &dst) {
                if e.kind() != io::ErrorKind::NotFound || parent.is_dir() {
                    return Err(e);
                }
                create_dirs_durably(parent)?;
                fs::rename(&src, &dst)?;
            }
            // Only the blob's directory needs to reach the disk: if the staged name comes back after
            // a crash, it is an orphan the start-up sweep removes, or the input of a finish retried.
            sync_dir(parent)?;
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

    fn blob_info_blocking(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        Ok(not_found_to_none(info(&self.blob_path(digest)))?)
    }

    fn delete_blocking(&self, digest: &Digest) -> Result<bool> {
        Ok(not_found_to_none(fs::remove_file(self.blob_path(digest)))?.is_some())
    }

    async fn blob_info(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        let path = self.blob_path(digest);
        Ok(not_found_to_none(blocking(move || info(&path)).await)?)
    }

    async fn upload_info(&self, id: &UploadId) -> Result<Option<BlobInfo>> {
        let path = self.upload_path(id);
        Ok(not_found_to_none(blocking(move || info(&path)).await)?)
    }

    async fn quarantine(&self, digest: &Digest) -> Result<Option<String>> {
        let src = self.blob_path(digest);
        let dir = self.root.join("quarantine");
        let name = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
        Ok(not_found_to_none(
            blocking(move || {
                fs::metadata(&src)?;
                fs::create_dir_all(&dir)?;
                // Never overwrite an earlier quarantined copy: number the later ones.
                let mut dst = dir.join(&name);
                let mut n = 1;
                while dst.exists() {
                    dst = dir.join(format!("{name}.{n}"));
                    n += 1;
                }
                fs::rename(&src, &dst)?;
                sync_dir(&dir)?;
                if let Some(parent) = src.parent() {
                    sync_dir(parent)?;
                }
                Ok(dst.display().to_string())
            })
            .await,
        )?)
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

/// How far ahead of the reads of a stream the kernel is asked to have the file read, in steps of
/// half of it.
const READAHEAD: u64 = 32 * 1024 * 1024;

/// Bytes asked for per readahead request: the kernel reads at most its readahead window (often far
/// less than [`READAHEAD`]) per request, so a larger range is asked for in steps.
const READAHEAD_STEP: u64 = 2 * 1024 * 1024;

/// Asks the kernel to read `len` bytes of the file at `start` into the page cache in the background
/// (`POSIX_FADV_WILLNEED`, in [`READAHEAD_STEP`] requests; a no-op for bytes already cached, and off
/// Linux). The kernel's own readahead follows one sequential read at a time; this keeps a cold blob
/// (written past the page cache, or evicted) streaming at the disk's speed.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
fn read_ahead(file: &File, start: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let end = start.saturating_add(len);
        let mut at = start;
        while at < end {
            let step = (end - at).min(READAHEAD_STEP);
            let (Ok(off), Ok(n)) = (i64::try_from(at), i64::try_from(step)) else {
                return;
            };
            // SAFETY: a plain system call on a descriptor `file` keeps open; only a hint, errors ignored.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), off, n, libc::POSIX_FADV_WILLNEED) };
            at += step;
        }
    }
}

/// Streams `len` bytes of the file from `start` in [`READ_CHUNK`] positioned reads on blocking
/// threads, the next one issued as soon as the previous one is handed on (one read ahead, each a
/// short task, so a slow download holds no thread). Buffers the consumer has dropped are reused.
fn file_stream(file: File, start: u64, len: u64) -> ByteStream {
    struct Reader {
        file: Arc<File>,
        pos: u64,
        end: u64,
        pending: Option<JoinHandle<io::Result<Bytes>>>,
        /// Buffers already handed out, to reuse once the consumer has dropped them.
        sent: Vec<Bytes>,
        /// The kernel was asked to read the file up to here ([`read_ahead`]).
        ahead_until: u64,
    }
    impl Reader {
        fn start_read(&mut self) -> Option<JoinHandle<io::Result<Bytes>>> {
            if self.pos >= self.end {
                return None;
            }
            let want = (self.end - self.pos).min(READ_CHUNK as u64) as usize;
            let mut buf = self.reusable().unwrap_or_default();
            let (file, at) = (self.file.clone(), self.pos);
            self.pos += want as u64;
            // Keep the kernel reading between half and all of READAHEAD ahead of this read, from the
            // end of it (this read fetches its own bytes; a blob read in one go asks for nothing).
            let from = self.ahead_until.max(self.pos);
            let ahead = if at + READAHEAD / 2 >= self.ahead_until && from < self.end {
                self.ahead_until = (at + READAHEAD).min(self.end);
                Some((from, self.ahead_until - from))
            } else {
                None
            };
            Some(spawn_blocking(move || {
                if let Some((from, len)) = ahead {
                    read_ahead(&file, from, len);
                }
                buf.resize(want, 0);
                file.read_exact_at(&mut buf, at)?;
                Ok(buf.freeze())
            }))
        }

        fn reusable(&mut self) -> Option<BytesMut> {
            let i = self.sent.iter().position(Bytes::is_unique)?;
            self.sent.swap_remove(i).try_into_mut().ok()
        }
    }
    let reader = Reader {
        file: Arc::new(file),
        pos: start,
        end: start + len,
        pending: None,
        sent: Vec::new(),
        ahead_until: start,
    };
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        let read = r.pending.take().or_else(|| r.start_read())?;
        match read.await.map_err(io::Error::other).and_then(|res| res) {
            Ok(bytes) => {
                r.pending = r.start_read();
                if bytes.len() == READ_CHUNK && r.sent.len() < READ_REUSE {
                    r.sent.push(bytes.clone());
                }
                Some((Ok(bytes), r))
            }
            Err(e) => {
                r.pos = r.end;
                Some((Err(e), r))
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

    /// Quarantine moves the file under `<root>/quarantine/`, keeping earlier copies.
    #[tokio::test]
    async fn quarantine_keeps_the_bytes_under_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("open");
        let data = b"corrupt or not".to_vec();
        let d = Digest::sha256(&data);
        for round in 0..2 {
            let u = UploadId::parse(&format!("u-q{round}")).expect("id");
            store.upload_create(&u).await.expect("create");
            let body = futures_util::stream::iter([Ok(Bytes::from(data.clone()))]);
            let (n, _) = store.upload_write(&u, 0, Box::pin(body), Digester::new(Algorithm::Sha256)).await.expect("w");
            store.upload_commit(&u, n, &d).await.expect("commit");
            let place = store.quarantine(&d).await.expect("quarantine").expect("stored");
            assert!(place.starts_with(&dir.path().join("quarantine").display().to_string()), "{place}");
            assert_eq!(fs::read(&place).expect("quarantined bytes"), data);
        }
        assert_eq!(fs::read_dir(dir.path().join("quarantine")).expect("dir").count(), 2, "the first copy is kept");
    }

    /// The sha256 prefix directories exist once the store is open; a commit into a missing one (a
    /// sha512 blob, or a directory removed by hand) creates it.
    #[tokio::test]
    async fn prefix_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("open");
        let sha256 = dir.path().join("blobs/sha256");
        assert_eq!(fs::read_dir(&sha256).expect("sha256 dir").count(), 256);
        let data = b"prefix".to_vec();
        for d in [Digest::sha256(&data), Digest::of(Algorithm::Sha512, &data)] {
            let prefix = dir.path().join("blobs").join(d.algorithm().as_str()).join(&d.hex()[..2]);
            if prefix.exists() {
                fs::remove_dir(&prefix).expect("remove the empty prefix directory");
            }
            let u = UploadId::parse(&format!("u-prefix-{}", d.algorithm())).expect("id");
            store.upload_create(&u).await.expect("create");
            let body = futures_util::stream::iter([Ok(Bytes::from(data.clone()))]);
            let (n, h) = store.upload_write(&u, 0, Box::pin(body), Digester::new(d.algorithm())).await.expect("w");
            assert_eq!(h.finish(), d);
            store.upload_commit(&u, n, &d).await.expect("commit");
            assert_eq!(fs::read(prefix.join(d.hex())).expect("blob"), data);
        }
        // Reopening keeps what is there.
        FsBlobStore::open(dir.path()).expect("reopen");
        assert_eq!(store.stat(&Digest::sha256(&data)).await.expect("stat"), Some(data.len() as u64));
    }

    /// A write abandoned mid-stream (its future dropped, as when a client goes away) must not land
    /// any byte after the next write starts from the recorded offset.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_write_then_resume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("open");
        let u = UploadId::parse("u-abandoned").expect("id");
        store.upload_create(&u).await.expect("create");
        let junk = futures_util::stream::iter((0..40).map(|_| Ok(Bytes::from(vec![0xAAu8; 100_000]))))
            .chain(futures_util::stream::pending());
        let write = store.upload_write(&u, 0, Box::pin(junk), Digester::new(Algorithm::Sha256));
        assert!(tokio::time::timeout(std::time::Duration::from_millis(200), write).await.is_err());
        let data: Vec<u8> = (0..(IO_CHUNK * 5 + 7)).map(|i| (i % 253) as u8).collect();
        let pieces: Vec<io::Result<Bytes>> = data.chunks(65_536).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let (n, h) = store
            .upload_write(&u, 0, Box::pin(futures_util::stream::iter(pieces)), Digester::new(Algorithm::Sha256))
            .await
            .expect("resume");
        let d = h.finish();
        assert_eq!(d, Digest::sha256(&data));
        store.upload_commit(&u, n, &d).await.expect("commit");
        let mut read = Vec::new();
        let mut s = store.read(&d, None).await.expect("read");
        while let Some(c) = s.next().await {
            read.extend_from_slice(&c.expect("chunk"));
        }
        assert!(read == data, "read back what was written");
    }

    /// Writes the same body in three calls whose positions and lengths fall on and off the
    /// `O_DIRECT` grid, so that direct, vectored, buffered and short-last-batch writes all mix.
    async fn mixed_writes_read_back(store: FsBlobStore) {
        let u = UploadId::parse("u-mixed").expect("id");
        store.upload_create(&u).await.expect("create");
        let cuts = [IO_CHUNK * 2 + 100, IO_CHUNK * 4 + DIRECT_ALIGN - 100, IO_CHUNK * 7 + 7];
        let data: Vec<u8> = (0..cuts[2]).map(|i| (i * 7 % 251) as u8).collect();
        let (mut at, mut hasher) = (0, Digester::new(Algorithm::Sha256));
        for end in cuts {
            // Odd-sized received chunks, as a socket delivers them.
            let pieces: Vec<io::Result<Bytes>> =
                data[at..end].chunks(40_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            let (n, h) = store
                .upload_write(&u, at as u64, Box::pin(futures_util::stream::iter(pieces)), hasher)
                .await
                .expect("write");
            assert_eq!(n as usize, end - at);
            (at, hasher) = (end, h);
        }
        let d = hasher.finish();
        assert_eq!(d, Digest::sha256(&data));
        store.upload_commit(&u, data.len() as u64, &d).await.expect("commit");
        let mut read = Vec::new();
        let mut s = store.read(&d, Some(ByteRange { start: 5, len: data.len() as u64 - 10 })).await.expect("read");
        while let Some(c) = s.next().await {
            read.extend_from_slice(&c.expect("chunk"));
        }
        assert!(read == data[5..data.len() - 5], "read back what was written");
    }

    #[tokio::test]
    async fn direct_and_buffered_writes_mix() {
        let dir = tempfile::tempdir().expect("tempdir");
        mixed_writes_read_back(FsBlobStore::open(dir.path()).expect("open")).await;
        let dir = tempfile::tempdir().expect("tempdir");
        mixed_writes_read_back(FsBlobStore::open(dir.path()).expect("open").direct_writes(false)).await;
    }

    /// tmpfs may refuse `O_DIRECT`: the writer falls back to the page cache.
    #[tokio::test]
    async fn writes_where_direct_io_may_be_refused() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).expect("tempdir");
        mixed_writes_read_back(FsBlobStore::open(dir.path()).expect("open")).await;
    }

    /// A small write finds the staged file locked (a writer still draining): it waits on a blocking
    /// thread for the lock instead of writing on the caller's thread, then writes at its offset.
    #[tokio::test]
    async fn small_write_waits_for_a_busy_staged_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("open");
        let u = UploadId::parse("u-busy").expect("id");
        store.upload_create(&u).await.expect("create");
        let held = File::open(store.upload_path(&u)).expect("open staged");
        held.lock().expect("lock");
        let data = Bytes::from_static(b"small body");
        let body = futures_util::stream::iter([Ok::<_, io::Error>(data.clone())]);
        let write = tokio::spawn({
            let store = store.clone();
            let u = u.clone();
            async move { store.upload_write(&u, 0, Box::pin(body), Digester::new(Algorithm::Sha256)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!write.is_finished(), "the write waits for the lock");
        held.unlock().expect("unlock");
        let (n, h) = write.await.expect("join").expect("write");
        assert_eq!(n, data.len() as u64);
        let d = h.finish();
        store.upload_commit(&u, n, &d).await.expect("commit");
        assert_eq!(store.stat(&d).await.expect("stat"), Some(n));
    }
}
