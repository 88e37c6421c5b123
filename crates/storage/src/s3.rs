//! The S3 backend: blobs in any S3-compatible object store (AWS S3, SeaweedFS, Ceph RGW, Garage),
//! through a small SigV4 client of our own ([`client`], [`sigv4`]; no AWS SDK).
//!
//! # Layout
//! Under a configurable key prefix `<p>`:
//! - `<p>blobs/<algorithm>/<2 hex>/<hex>` — a committed blob, one object.
//! - `<p>uploads/<id>/marker-<part size>` — exists from `upload_create` until the upload is committed
//!   or aborted; it fixes the upload's part size `P` for every instance that continues it.
//! - `<p>uploads/<id>/tail-<k>` — the bytes `[k·P, k·P + len)` not yet in a full part.
//! - a multipart upload on `<p>uploads/<id>/data`, started lazily with the first full part, its id
//!   recorded as the empty object `<p>uploads/<id>/mpu-<hex id>`; part `n` holds exactly the bytes
//!   `[(n-1)·P, n·P)`.
//! - `<p>uploads/<id>/part-<n>-<seq>-<hex ETag>` — an empty record per uploaded part, written by the
//!   write with sequence number `seq` (one more than the highest recorded when it started).
//! - `<p>uploads/<id>/data` as an object: the completed staging object, only while a commit runs.
//! - `<p>quarantine/<algorithm>/<hex>-<unix time>` — blobs moved aside by scrubbing.
//!
//! # State lives in S3
//! Nothing about an upload is kept in the process: every call lists `<p>uploads/<id>/` (one
//! ListObjectsV2), so consecutive writes of one upload may reach different instances; the metadata
//! store records only the offset and the hash state. Memory per write is bounded by one part buffer
//! (`P`, 8 MiB by default) whatever the client's chunk sizes: incoming bytes (after the existing
//! tail) fill the buffer, each full buffer becomes the next part, and what is left when the request
//! body ends is written as the new tail object before the write returns, so every byte acknowledged
//! to the client is in S3.
//!
//! # Rewriting from an earlier offset
//! `upload_write(offset)` must discard anything staged beyond `offset` (an interrupted earlier write,
//! or a write whose new offset the metadata store never recorded). A part reaching beyond `offset` is
//! simply uploaded again under its number. Some servers (SeaweedFS) then list both versions, so the
//! store never trusts ListParts to say which is current: the part records do — for each number the
//! record with the highest sequence number names the ETag, and the completion lists parts by ETag.
//! Parts are never read back (S3 cannot read an incomplete upload), which is why the bytes between the
//! last full part below `offset` and `offset` always stay in a tail object: a write starting in part
//! `k` keeps `tail-k` until a later write starts beyond part `k` (the caller's offset never goes
//! back), and writes its own new tail only after the request body is fully received. Records and
//! tails beyond `offset` that a write did not make are deleted when it succeeds; stale parts are left
//! out of the completion (S3 drops parts a completion does not list).
//!
//! # Commit and atomicity
//! Readers only ever see objects under `blobs/`, and S3 makes each object appear whole or not at all.
//! A commit of `S` bytes: with no full part, the tail is copied server-side to the blob key (or, if
//! the tail is longer than `S`, its first `S` bytes are re-put); otherwise the last partial part is
//! uploaded from the tail, the multipart upload is completed at `uploads/<id>/data` with exactly the
//! parts `1..=⌈S/P⌉`, and that object is copied server-side to the blob key (CopyObject up to 5 GiB,
//! UploadPartCopy ranges above). Then the staging objects are deleted, the marker last.
//! A crash mid-commit leaves either the upload as it was (retry redoes it), or a completed `data`
//! object (retry copies it), or the blob plus leftovers (retry copies again, idempotently, and
//! cleans); once the marker is gone the upload reports "not found" and the registry links the blob
//! that is already there. Leftovers without a marker are still listed by `list_uploads` so that
//! orphan sweeping removes them.
//!
//! # Abort against a write on another instance
//! An abort (the upload's session expired or was cancelled, possibly on another instance) deletes the
//! staging objects, the marker last, then sweeps `<p>uploads/<id>/` once more. A write checks that the
//! marker still exists after it has staged its bytes, and if not removes what is staged and reports
//! "not found". So a write that saw the marker before an abort deleted it either staged its bytes before
//! its check, which came before the marker went and so before the abort's second sweep (which removes
//! them), or finds the marker gone and removes them itself: an aborted upload leaves nothing behind.
//!
//! # Limits
//! Two instances writing the same upload at the same time (a client sending concurrent PATCHes for one
//! session to different instances) can interleave parts; the registry's compare-and-swap on the offset
//! rejects one of the writes but cannot undo its parts. Clients send one chunk at a time.
//!
//! This module never learns about repositories or HTTP; it must never log credentials.

pub mod client;
pub mod sigv4;
#[cfg(all(feature = "testsupport", target_os = "linux"))]
pub mod testsupport;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use entrepot_oci::{ByteRange, Digest, Digester, UploadId};
use futures_util::StreamExt;

use crate::{BlobInfo, BlobStore, ByteStream, Result, StorageError};
pub use client::{Client, S3Error};
pub use sigv4::Credentials;

/// S3's smallest part (except the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Default part size of uploads, and so the most memory one upload write holds.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's largest single-request copy.
pub const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;

/// Where and how to reach the bucket.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// `http://host:port` or `https://host` (virtual-host style prepends the bucket to the host).
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Key prefix of everything the store writes (`""`, or e.g. `"registry/"`; a missing trailing
    /// `/` is added).
    pub prefix: String,
    /// `http://host/bucket/key` (true) or `http://bucket.host/key` (false).
    pub path_style: bool,
    pub credentials: Credentials,
    /// Bytes per multipart part: at least [`MIN_PART_SIZE`]; the memory bound of one upload write.
    pub part_size: usize,
    /// Answer blob GETs with a redirect to a presigned URL.
    pub redirect: bool,
    /// How long a presigned URL stays valid.
    pub presign_ttl: Duration,
    /// Tries per request (1 = no retry).
    pub max_attempts: u32,
    /// First backoff delay; doubled per attempt, capped, jittered.
    pub retry_base: Duration,
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub read_timeout: Duration,
    /// Deadline of a whole request that is not a streamed GET.
    pub request_timeout: Duration,
    /// Largest object copied with one CopyObject; larger ones are copied in parts.
    pub max_single_copy: u64,
    /// Host names resolved to fixed addresses (for virtual-host style against a local server).
    pub resolve: Vec<(String, SocketAddr)>,
    /// PEM file of extra CA certificates trusted for an `https://` endpoint (besides the system's).
    pub ca_bundle: Option<std::path::PathBuf>,
}

impl S3Config {
    /// A configuration with the defaults: region `us-east-1`, path style, no prefix, 8 MiB parts,
    /// 5 attempts from 100 ms, no redirect (20-minute URLs when turned on).
    pub fn new(endpoint: impl Into<String>, bucket: impl Into<String>, credentials: Credentials) -> S3Config {
        S3Config {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            region: "us-east-1".into(),
            prefix: String::new(),
            path_style: true,
            credentials,
            part_size: DEFAULT_PART_SIZE,
            redirect: false,
            presign_ttl: Duration::from_secs(20 * 60),
            max_attempts: 5,
            retry_base: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(600),
            max_single_copy: MAX_SINGLE_COPY,
            resolve: Vec::new(),
            ca_bundle: None,
        }
    }
}

/// Blobs in an S3-compatible bucket. Cheap to clone.
#[derive(Clone)]
pub struct S3BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Arc<S3Config>,
    client: Client,
    prefix: String,
    /// Largest part buffer any write held.
    high_water: AtomicUsize,
    /// A thread with its own runtime and client for the `_blocking` calls (started on first use).
    lane: OnceLock<std::result::Result<Lane, String>>,
}

impl From<S3Error> for StorageError {
    fn from(e: S3Error) -> StorageError {
        StorageError::Io(io::Error::other(e))
    }
}

/// A part recorded by the write that uploaded it: `part-<n>-<seq>-<hex ETag>`.
#[derive(Debug, Clone)]
struct PartRecord {
    number: u32,
    seq: u64,
    etag: String,
    key: String,
}

/// What one listing of `uploads/<id>/` says about an upload.
struct Staged {
    part_size: u64,
    marker: String,
    /// The multipart upload's id, from its `mpu-<hex id>` record.
    multipart: Option<String>,
    /// Every part record, in listing order.
    parts: Vec<PartRecord>,
    tails: BTreeMap<u64, client::ObjectEntry>,
    data: Option<client::ObjectEntry>,
    /// Every object under the upload's prefix (marker included).
    objects: Vec<client::ObjectEntry>,
}

impl Staged {
    /// The next write's sequence number (higher than every record's).
    fn next_seq(&self) -> u64 {
        self.parts.iter().map(|p| p.seq).max().unwrap_or(0) + 1
    }

    /// The current record of part `n`: the one with the highest sequence number.
    fn part(&self, n: u64) -> Option<&PartRecord> {
        self.parts.iter().filter(|p| u64::from(p.number) == n).max_by_key(|p| p.seq)
    }

    /// Parts `1..=k` with their ETags, or an error naming the first one missing.
    fn full_parts(&self, k: u64) -> Result<Vec<(u32, String)>> {
        (1..=k)
            .map(|n| {
                self.part(n)
                    .map(|p| (p.number, p.etag.clone()))
                    .ok_or_else(|| StorageError::Mismatch(format!("offset beyond staged bytes (no part {n})")))
            })
            .collect()
    }
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

impl S3BlobStore {
    /// A store on the configured bucket (which must exist). No request is made until first use.
    pub fn new(mut cfg: S3Config) -> std::result::Result<S3BlobStore, S3Error> {
        if cfg.part_size < MIN_PART_SIZE {
            return Err(S3Error::Config(format!(
                "part size {} is below S3's minimum of {MIN_PART_SIZE}",
                cfg.part_size
            )));
        }
        if cfg.bucket.is_empty() {
            return Err(S3Error::Config("no bucket".into()));
        }
        let prefix = cfg.prefix.trim_start_matches('/').to_string();
        cfg.prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix } else { format!("{prefix}/") };
        let cfg = Arc::new(cfg);
        let client = Client::new(cfg.clone())?;
        let prefix = cfg.prefix.clone();
        Ok(S3BlobStore {
            inner: Arc::new(Inner { cfg, client, prefix, high_water: AtomicUsize::new(0), lane: OnceLock::new() }),
        })
    }

    /// The store's S3 client (tests use it to look at the bucket).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub fn config(&self) -> &S3Config {
        &self.inner.cfg
    }

    /// The largest upload buffer any write of this store has held, in bytes (never above the part size).
    pub fn buffer_high_water(&self) -> usize {
        self.inner.high_water.load(Ordering::Relaxed)
    }

    /// A URL from which anyone may GET blob `digest` during `ttl` (whether or not it exists).
    pub fn presigned_get(&self, digest: &Digest, ttl: Duration) -> String {
        self.inner.client.presign_get(&self.blob_key(digest), ttl, SystemTime::now())
    }

    /// The object key of a blob.
    pub fn blob_key(&self, d: &Digest) -> String {
        let hex = d.hex();
        format!("{}blobs/{}/{}/{hex}", self.inner.prefix, d.algorithm().as_str(), &hex[..2])
    }

    fn upload_dir(&self, id: &UploadId) -> String {
        format!("{}uploads/{}/", self.inner.prefix, id.as_str())
    }

    fn data_key(&self, id: &UploadId) -> String {
        format!("{}data", self.upload_dir(id))
    }

    fn tail_key(&self, id: &UploadId, k: u64) -> String {
        format!("{}tail-{k:010}", self.upload_dir(id))
    }

    fn digest_of_key(&self, key: &str) -> Option<Digest> {
        let rest = key.strip_prefix(&self.inner.prefix)?.strip_prefix("blobs/")?;
        let mut it = rest.split('/');
        let (algo, two, hex) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || !hex.starts_with(two) || two.len() != 2 {
            return None;
        }
        Digest::parse(&format!("{algo}:{hex}")).ok()
    }

    /// Lists the upload's objects; `None` if it has no marker (never created, committed or aborted).
    async fn staged(&self, id: &UploadId) -> Result<Option<Staged>> {
        let dir = self.upload_dir(id);
        let (objects, _) = self.inner.client.list(&dir, None).await?;
        let mut marker = None;
        let (mut multipart, mut parts, mut tails, mut data) = (None, Vec::new(), BTreeMap::new(), None);
        for o in &objects {
            let name = &o.key[dir.len()..];
            if let Some(p) = name.strip_prefix("marker-").and_then(|p| p.parse::<u64>().ok()) {
                marker.get_or_insert((p, o.key.clone()));
            } else if let Some(k) = name.strip_prefix("tail-").and_then(|k| k.parse::<u64>().ok()) {
                tails.insert(k, o.clone());
            } else if let Some(u) = name.strip_prefix("mpu-").and_then(unhex) {
                multipart.get_or_insert(u);
            } else if let Some(rest) = name.strip_prefix("part-") {
                let mut it = rest.splitn(3, '-');
                let (n, seq, etag) = (it.next(), it.next(), it.next().and_then(unhex));
                if let (Some(Ok(number)), Some(Ok(seq)), Some(etag)) = (n.map(str::parse), seq.map(str::parse), etag) {
                    parts.push(PartRecord { number, seq, etag, key: o.key.clone() });
                }
            } else if name == "data" {
                data = Some(o.clone());
            }
        }
        Ok(marker.map(|(part_size, marker)| Staged { part_size, marker, multipart, parts, tails, data, objects }))
    }

    /// Starts the upload's multipart upload and records its id (`mpu-<hex id>`), which every
    /// instance then uses. A multipart upload whose record was never written (crash, lost response)
    /// is only aborted with the rest.
    async fn start_multipart(&self, id: &UploadId) -> Result<String> {
        let upload_id = self.inner.client.create_multipart(&self.data_key(id)).await?;
        let record = format!("{}mpu-{}", self.upload_dir(id), sigv4::hex(upload_id.as_bytes()));
        self.inner.client.put(&record, Bytes::new()).await?;
        Ok(upload_id)
    }

    /// Uploads part `n` and records it for sequence `seq`.
    async fn put_part(&self, id: &UploadId, upload_id: &str, n: u64, seq: u64, body: Bytes) -> Result<()> {
        let n = u32::try_from(n)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| StorageError::Mismatch("upload exceeds 10000 parts".into()))?;
        let etag = self.inner.client.upload_part(&self.data_key(id), upload_id, n, body).await?;
        let record = format!("{}part-{n:05}-{seq:010}-{}", self.upload_dir(id), sigv4::hex(etag.as_bytes()));
        Ok(self.inner.client.put(&record, Bytes::new()).await?)
    }

    /// The first `len` bytes of an upload's tail `k`, appended to `buf`.
    async fn read_tail(&self, id: &UploadId, st: &Staged, k: u64, len: u64, buf: &mut PartBuffer<'_>) -> Result<()> {
        match st.tails.get(&k) {
            Some(t) if t.size >= len => {}
            _ => return Err(StorageError::Mismatch("offset beyond staged bytes".into())),
        }
        let resp = self
            .inner
            .client
            .get(&self.tail_key(id, k), Some((0, len)))
            .await?
            .ok_or_else(|| StorageError::Mismatch("the upload's tail vanished".into()))?;
        let mut body = resp.bytes_stream();
        let start = buf.len();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(S3Error::from)?;
            if buf.len() - start + chunk.len() > len as usize {
                return Err(StorageError::Mismatch("tail longer than asked for".into()));
            }
            buf.push(&chunk);
        }
        if (buf.len() - start) as u64 != len {
            return Err(StorageError::Mismatch("tail shorter than listed".into()));
        }
        Ok(())
    }

    /// Deletes everything staged for an upload, the marker last.
    async fn remove_staging(&self, id: &UploadId, st: Option<&Staged>) -> Result<()> {
        let c = &self.inner.client;
        let dir = self.upload_dir(id);
        // With a marker but no `mpu-` record no part was ever uploaded (a multipart upload started
        // without its record, on a crash, is still listed by `list_uploads` and swept as an orphan).
        if st.is_none_or(|s| s.multipart.is_some()) {
            for u in c.list_multipart(&dir).await? {
                c.abort_multipart(&u.key, &u.upload_id).await?;
            }
        }
        let objects = match st {
            Some(st) => st.objects.clone(),
            None => c.list(&dir, None).await?.0,
        };
        let marker = st.map(|s| s.marker.clone());
        for o in objects.iter().filter(|o| Some(&o.key) != marker.as_ref()) {
            c.delete(&o.key).await?;
        }
        if let Some(m) = marker {
            c.delete(&m).await?;
        }
        Ok(())
    }

    /// Server-side copy of `size` bytes from `from` to `to`, in parts when above the single-copy limit.
    async fn copy_object(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let c = &self.inner.client;
        if size <= self.inner.cfg.max_single_copy {
            return Ok(c.copy(from, to).await?);
        }
        // Large ranges (S3 allows up to 5 GiB each), at most 10000 of them.
        let part = (self.inner.cfg.part_size as u64)
            .max(self.inner.cfg.max_single_copy.min(1024 * 1024 * 1024))
            .max(size.div_ceil(10_000));
        let upload_id = c.create_multipart(to).await?;
        let result = async {
            let mut parts = Vec::new();
            let (mut start, mut n) = (0u64, 1u32);
            while start < size {
                let len = part.min(size - start);
                parts.push((n, c.upload_part_copy(to, &upload_id, n, from, (start, len)).await?));
                start += len;
                n += 1;
            }
            c.complete_multipart(to, &upload_id, &parts).await
        }
        .await;
        if let Err(e) = result {
            let _ = c.abort_multipart(to, &upload_id).await;
            return Err(e.into());
        }
        Ok(())
    }

    fn lane(&self) -> Result<&Lane> {
        let lane = self.inner.lane.get_or_init(|| Lane::start(self.inner.cfg.clone()));
        lane.as_ref().map_err(|e| StorageError::Io(io::Error::other(e.clone())))
    }

    /// Runs `f` with the lane's client on the lane's own runtime and waits for it, blocking this thread.
    fn blocking<T, F>(&self, f: impl FnOnce(Client) -> F + Send + 'static) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |c| {
            Box::pin(async move {
                let _ = tx.send(f(c).await);
            })
        });
        self.lane()?.jobs.send(job).map_err(|_| StorageError::Io(io::Error::other("the S3 lane stopped")))?;
        rx.recv().map_err(|_| StorageError::Io(io::Error::other("the S3 lane dropped a request")))?
    }
}

type Job = Box<dyn FnOnce(Client) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A thread with a current-thread runtime and its own HTTP client, serving the `_blocking` methods:
/// they are called on threads that may not wait for the caller's runtime (the metadata store's
/// writer, or an async task), so they must not depend on it. It stops when the store is dropped.
struct Lane {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl Lane {
    fn start(cfg: Arc<S3Config>) -> std::result::Result<Lane, String> {
        let client = Client::new(cfg).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the S3 lane: {e}"))?;
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("entrepot-s3-lane".into())
            .spawn(move || {
                rt.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job(client.clone()));
                    }
                })
            })
            .map_err(|e| format!("cannot start the S3 lane: {e}"))?;
        Ok(Lane { jobs })
    }
}

/// The part being filled: grows to at most `limit` bytes, and records the store's high-water mark.
struct PartBuffer<'a> {
    buf: Vec<u8>,
    limit: usize,
    high_water: &'a AtomicUsize,
}

impl<'a> PartBuffer<'a> {
    fn new(limit: usize, high_water: &'a AtomicUsize) -> Self {
        PartBuffer { buf: Vec::new(), limit, high_water }
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    fn room(&self) -> usize {
        self.limit - self.buf.len()
    }

    /// Appends `data`, which must fit in [`PartBuffer::room`].
    fn push(&mut self, data: &[u8]) {
        let need = self.buf.len() + data.len();
        if need > self.buf.capacity() {
            let want = need.max(self.buf.capacity() * 2).max(64 * 1024).min(self.limit.max(need));
            self.buf.reserve_exact(want - self.buf.len());
            self.high_water.fetch_max(self.buf.capacity(), Ordering::Relaxed);
        }
        self.buf.extend_from_slice(data);
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.buf))
    }
}

fn object_stream(resp: reqwest::Response) -> ByteStream {
    Box::pin(resp.bytes_stream().map(|r| r.map_err(io::Error::other)))
}

async fn head_info(c: &Client, key: &str) -> Result<Option<BlobInfo>> {
    Ok(c.head(key).await?.map(|(size, modified)| BlobInfo { size, modified }))
}

/// Deletes `key`; whether it was there.
async fn delete_existing(c: &Client, key: &str) -> Result<bool> {
    if c.head(key).await?.is_none() {
        return Ok(false);
    }
    c.delete(key).await?;
    Ok(true)
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.inner.client.head(&self.blob_key(digest)).await?.map(|(size, _)| size))
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        if let Some(r) = range
            && r.len == 0
        {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        match self.inner.client.get(&self.blob_key(digest), range.map(|r| (r.start, r.len))).await {
            Ok(Some(resp)) => Ok(object_stream(resp)),
            Ok(None) => Err(StorageError::NotFound),
            Err(S3Error::Status { status: 416, .. }) => Err(StorageError::Mismatch("range beyond blob".into())),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        delete_existing(&self.inner.client, &self.blob_key(digest)).await
    }

    async fn list(&self) -> Result<Vec<Digest>> {
        let prefix = format!("{}blobs/", self.inner.prefix);
        let (objects, _) = self.inner.client.list(&prefix, None).await?;
        Ok(objects.iter().filter_map(|o| self.digest_of_key(&o.key)).collect())
    }

    async fn upload_create(&self, id: &UploadId) -> Result<()> {
        let marker = format!("{}marker-{}", self.upload_dir(id), self.inner.cfg.part_size);
        Ok(self.inner.client.put(&marker, Bytes::new()).await?)
    }

    async fn upload_write(
        &self,
        id: &UploadId,
        offset: u64,
        mut data: ByteStream,
        mut hasher: Digester,
    ) -> Result<(u64, Digester)> {
        let st = self.staged(id).await?.ok_or(StorageError::UploadNotFound)?;
        if st.data.is_some() {
            return Err(StorageError::Mismatch("the upload is being committed".into()));
        }
        let p = st.part_size;
        let (k, need) = (offset / p, offset % p);
        let seq = st.next_seq();
        let mut buf = PartBuffer::new(p as usize, &self.inner.high_water);
        if need > 0 {
            self.read_tail(id, &st, k, need, &mut buf).await?;
        }
        if k > 0 {
            if st.multipart.is_none() {
                return Err(StorageError::Mismatch("offset beyond staged bytes (no parts)".into()));
            }
            st.full_parts(k)?;
        }
        let mut upload_id = st.multipart.clone();
        let mut next_part = k + 1;
        let mut written = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(StorageError::Interrupted)?;
            hasher.update(&chunk);
            written += chunk.len() as u64;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let take = buf.room().min(rest.len());
                buf.push(&rest[..take]);
                rest = &rest[take..];
                if buf.room() == 0 {
                    let u = match &upload_id {
                        Some(u) => u.clone(),
                        None => upload_id.insert(self.start_multipart(id).await?).clone(),
                    };
                    self.put_part(id, &u, next_part, seq, buf.take()).await?;
                    next_part += 1;
                }
            }
        }
        if written == 0 {
            return Ok((0, hasher));
        }
        let last = next_part - 1;
        if buf.len() > 0 {
            self.inner.client.put(&self.tail_key(id, last), buf.take()).await?;
        }
        // Tails other than the one this write started from (still needed should the caller not
        // record the new offset) and the one it ended in are obsolete or junk; so are the records of
        // parts beyond `k` that this write did not make, and records superseded by a later one.
        for (&j, t) in &st.tails {
            if j != k && j != last {
                self.inner.client.delete(&t.key).await?;
            }
        }
        for r in &st.parts {
            let current = st.part(u64::from(r.number)).is_some_and(|c| c.key == r.key);
            if u64::from(r.number) > k || !current {
                self.inner.client.delete(&r.key).await?;
            }
        }
        // Aborted meanwhile (by another instance): what this write staged must not outlive the upload.
        if self.inner.client.head(&st.marker).await?.is_none() {
            self.remove_staging(id, None).await?;
            return Err(StorageError::UploadNotFound);
        }
        Ok((written, hasher))
    }

    async fn upload_commit(&self, id: &UploadId, size: u64, digest: &Digest) -> Result<()> {
        let st = self.staged(id).await?.ok_or(StorageError::UploadNotFound)?;
        let c = &self.inner.client;
        let key = self.blob_key(digest);
        let data_key = self.data_key(id);
        if let Some(data) = &st.data {
            // An earlier commit completed the staging object and stopped before the end.
            if data.size != size {
                return Err(StorageError::Mismatch(format!("staged {} bytes, expected {size}", data.size)));
            }
            self.copy_object(&data_key, &key, size).await?;
            return self.remove_staging(id, Some(&st)).await;
        }
        let p = st.part_size;
        let (k, r) = (size / p, size % p);
        let tail_len = |j: u64| st.tails.get(&j).map(|t| t.size);
        if k == 0 {
            match tail_len(0) {
                _ if size == 0 => c.put(&key, Bytes::new()).await?,
                Some(n) if n == size => c.copy(&self.tail_key(id, 0), &key).await?,
                Some(n) if n > size => {
                    let mut buf = PartBuffer::new(p as usize, &self.inner.high_water);
                    self.read_tail(id, &st, 0, size, &mut buf).await?;
                    c.put(&key, buf.take()).await?;
                }
                _ => return Err(StorageError::Mismatch(format!("fewer than {size} bytes staged"))),
            }
            return self.remove_staging(id, Some(&st)).await;
        }
        let upload_id =
            st.multipart.clone().ok_or_else(|| StorageError::Mismatch("the upload's staged parts are gone".into()))?;
        let mut parts = st.full_parts(k)?;
        if r > 0 {
            let mut buf = PartBuffer::new(p as usize, &self.inner.high_water);
            self.read_tail(id, &st, k, r, &mut buf).await?;
            let n = u32::try_from(k + 1)
                .ok()
                .filter(|n| *n <= 10_000)
                .ok_or_else(|| StorageError::Mismatch("upload exceeds 10000 parts".into()))?;
            parts.push((n, c.upload_part(&data_key, &upload_id, n, buf.take()).await?));
        }
        c.complete_multipart(&data_key, &upload_id, &parts).await?;
        self.copy_object(&data_key, &key, size).await?;
        match c.head(&key).await? {
            Some((n, _)) if n == size => {}
            other => {
                return Err(StorageError::Mismatch(format!(
                    "the committed blob holds {:?} bytes, expected {size}",
                    other.map(|o| o.0)
                )));
            }
        }
        let st = self.staged(id).await?;
        self.remove_staging(id, st.as_ref()).await
    }

    async fn upload_abort(&self, id: &UploadId) -> Result<()> {
        let st = self.staged(id).await?;
        self.remove_staging(id, st.as_ref()).await?;
        // A write that saw the marker before it went may have staged more since (see the module docs).
        if st.is_some() {
            self.remove_staging(id, None).await?;
        }
        Ok(())
    }

    async fn list_uploads(&self) -> Result<Vec<UploadId>> {
        let root = format!("{}uploads/", self.inner.prefix);
        let c = &self.inner.client;
        // Objects, not common prefixes: some servers (SeaweedFS) keep listing emptied "directories".
        // An upload has only a few objects (marker, one or two tails, `data` while committing).
        let (objects, _) = c.list(&root, None).await?;
        let keys = objects.into_iter().map(|o| o.key).chain(c.list_multipart(&root).await?.into_iter().map(|u| u.key));
        let mut ids: Vec<UploadId> = keys
            .filter_map(|k| k.strip_prefix(&root)?.split_once('/').and_then(|(id, _)| UploadId::parse(id)))
            .collect();
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.dedup();
        Ok(ids)
    }

    async fn blob_info(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        head_info(&self.inner.client, &self.blob_key(digest)).await
    }

    async fn upload_info(&self, id: &UploadId) -> Result<Option<BlobInfo>> {
        let c = &self.inner.client;
        let dir = self.upload_dir(id);
        let (objects, _) = c.list(&dir, None).await?;
        let uploads = c.list_multipart(&dir).await?;
        if objects.is_empty() && uploads.is_empty() {
            return Ok(None);
        }
        let mut size: u64 = objects.iter().map(|o| o.size).sum();
        let mut modified = objects.iter().map(|o| o.modified).max().unwrap_or(SystemTime::UNIX_EPOCH);
        for u in &uploads {
            modified = modified.max(u.initiated);
            for part in c.list_parts(&u.key, &u.upload_id).await?.unwrap_or_default() {
                size += part.size;
                modified = modified.max(part.modified);
            }
        }
        Ok(Some(BlobInfo { size, modified }))
    }

    fn blob_info_blocking(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        let key = self.blob_key(digest);
        self.blocking(move |c| async move { head_info(&c, &key).await })
    }

    fn delete_blocking(&self, digest: &Digest) -> Result<bool> {
        let key = self.blob_key(digest);
        self.blocking(move |c| async move { delete_existing(&c, &key).await })
    }

    async fn quarantine(&self, digest: &Digest) -> Result<Option<String>> {
        let c = &self.inner.client;
        let key = self.blob_key(digest);
        let Some((size, _)) = c.head(&key).await? else { return Ok(None) };
        let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let to = format!("{}quarantine/{}/{}-{secs}", self.inner.prefix, digest.algorithm().as_str(), digest.hex());
        self.copy_object(&key, &to, size).await?;
        c.delete(&key).await?;
        Ok(Some(format!("s3://{}/{to}", self.inner.cfg.bucket)))
    }

    fn redirect_url(&self, digest: &Digest) -> Option<String> {
        self.inner.cfg.redirect.then(|| self.presigned_get(digest, self.inner.cfg.presign_ttl))
    }
}
