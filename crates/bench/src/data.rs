//! Deterministic, cheap payload generation.
//!
//! A blob is never materialised: it is a unique 32-byte header followed by 1 MiB blocks, each a
//! zero-copy slice (`Bytes::slice`) of one shared pool of xorshift noise at an offset derived from
//! the blob's seed and the block index. Producing a frame costs a refcount bump, so the client
//! spends its CPU on the socket, not on making bytes. The same stream is hashed once, before any
//! timing, to learn each blob's digest.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest as _, Sha256};

/// Size of one generated frame (and of the pool's blocks).
pub const BLOCK: u64 = 1 << 20;
const HEADER: u64 = 32;
const POOL_BLOCKS: u64 = 32;

fn pool() -> &'static Bytes {
    static POOL: OnceLock<Bytes> = OnceLock::new();
    POOL.get_or_init(|| {
        let len = (POOL_BLOCKS * BLOCK) as usize;
        let mut v = Vec::with_capacity(len);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        while v.len() < len {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        Bytes::from(v)
    })
}

/// splitmix64: a well-mixed 64-bit hash of `x`.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// `sha256:<hex>` of an in-memory buffer.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// A deterministic blob: `size` bytes derived from `seed`, with its digest.
#[derive(Clone, Debug)]
pub struct BlobSpec {
    pub seed: u64,
    pub size: u64,
    pub digest: String,
}

impl BlobSpec {
    /// Describes the blob and hashes its stream (CPU-bound; call from a blocking thread).
    pub fn new(seed: u64, size: u64) -> BlobSpec {
        let mut h = Sha256::new();
        let mut r = BlobRange::new(seed, size, 0, size);
        while let Some(b) = r.next_frame() {
            h.update(&b);
        }
        BlobSpec { seed, size, digest: format!("sha256:{}", hex(&h.finalize())) }
    }

    /// Bytes `[start, end)` of the blob as a request body.
    pub fn range(&self, start: u64, end: u64) -> BlobRange {
        BlobRange::new(self.seed, self.size, start, end)
    }

    /// Materialises the whole blob (for small blobs only).
    pub fn to_bytes(&self) -> Bytes {
        let mut v = Vec::with_capacity(self.size as usize);
        let mut r = self.range(0, self.size);
        while let Some(b) = r.next_frame() {
            v.extend_from_slice(&b);
        }
        Bytes::from(v)
    }
}

/// Builds many specs in parallel on the blocking pool (hashing happens here, before timing).
pub async fn make_specs(items: Vec<(u64, u64)>) -> Vec<BlobSpec> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let items = Arc::new(items);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (items, next) = (items.clone(), next.clone());
        handles.push(tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(seed, size)) = items.get(i) else { break };
                out.push((i, BlobSpec::new(seed, size)));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("hashing thread panicked"));
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, s)| s).collect()
}

/// A byte range of a generated blob, yielded as zero-copy frames of at most [`BLOCK`] bytes.
#[derive(Debug)]
pub struct BlobRange {
    seed: u64,
    header: [u8; HEADER as usize],
    pos: u64,
    end: u64,
}

impl BlobRange {
    fn new(seed: u64, size: u64, start: u64, end: u64) -> BlobRange {
        assert!(start <= end && end <= size, "range {start}..{end} outside blob of {size} bytes");
        let mut header = [0u8; HEADER as usize];
        header[..16].copy_from_slice(b"entrepot-bench\0\0");
        header[16..24].copy_from_slice(&seed.to_le_bytes());
        header[24..32].copy_from_slice(&size.to_le_bytes());
        BlobRange { seed, header, pos: start, end }
    }

    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    pub fn next_frame(&mut self) -> Option<Bytes> {
        if self.pos >= self.end {
            return None;
        }
        let out = if self.pos < HEADER {
            let e = HEADER.min(self.end);
            Bytes::copy_from_slice(&self.header[self.pos as usize..e as usize])
        } else {
            let rel = self.pos - HEADER;
            let (block, within) = (rel / BLOCK, rel % BLOCK);
            let len = (BLOCK - within).min(self.end - self.pos);
            let base = mix(self.seed ^ mix(block)) % ((POOL_BLOCKS - 1) * BLOCK);
            let off = (base + within) as usize;
            pool().slice(off..off + len as usize)
        };
        self.pos += out.len() as u64;
        Some(out)
    }
}

/// The request body type used for every request the benchmark sends.
#[derive(Debug)]
pub enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    Blob(BlobRange),
}

impl ReqBody {
    pub fn full(b: impl Into<Bytes>) -> ReqBody {
        ReqBody::Full(Some(b.into()))
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            ReqBody::Empty => None,
            ReqBody::Full(b) => b.take(),
            ReqBody::Blob(r) => r.next_frame(),
        };
        Poll::Ready(frame.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Blob(r) => r.remaining() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(match self {
            ReqBody::Empty => 0,
            ReqBody::Full(b) => b.as_ref().map_or(0, |b| b.len() as u64),
            ReqBody::Blob(r) => r.remaining(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_concatenate_to_the_whole_blob() {
        let size = 3 * BLOCK + 12345;
        let spec = BlobSpec::new(7, size);
        let whole = spec.to_bytes();
        assert_eq!(whole.len() as u64, size);
        assert_eq!(digest_of(&whole), spec.digest);
        let mut joined = Vec::new();
        let step = 777_777;
        let mut s = 0;
        while s < size {
            let e = (s + step).min(size);
            let mut r = spec.range(s, e);
            while let Some(b) = r.next_frame() {
                joined.extend_from_slice(&b);
            }
            s = e;
        }
        assert_eq!(joined, whole);
    }

    #[test]
    fn seeds_give_distinct_digests() {
        assert_ne!(BlobSpec::new(1, 100).digest, BlobSpec::new(2, 100).digest);
        assert_ne!(BlobSpec::new(1, 5 * BLOCK).digest, BlobSpec::new(2, 5 * BLOCK).digest);
    }

    #[test]
    fn known_digest() {
        assert_eq!(digest_of(b"abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
