//! Layers for the (synchronous) inventory reader, streamed from the registry: an async blob stream from
//! `Registry::read_blob` becomes a blocking `std::io::Read` through a small bounded channel, so at most a few
//! chunks of one layer are in memory whatever its size. A layer's stream starts only when the inventory
//! reaches that layer. Must run on a blocking thread (it waits with `blocking_recv`), never on an async worker.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use entrepot_inventory::Layer;
use entrepot_oci::{Descriptor, Digest, RepoName};
use entrepot_registry::Registry;
use futures_util::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Chunks in flight per layer (each as large as the blob store's reads, ≈ 1 MiB or less).
const CHANNEL_CHUNKS: usize = 4;

/// A blocking reader over a blob being streamed by a task on the runtime.
pub struct BlobReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    done: bool,
}

impl BlobReader {
    /// Starts streaming `digest` of `repo` on `handle`.
    pub fn spawn(handle: &Handle, registry: Registry, repo: RepoName, digest: Digest) -> BlobReader {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        handle.spawn(async move {
            let mut stream = match registry.read_blob(&repo, &digest, None).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(format!("layer {digest}: {e}")))).await;
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                // The reader went away (the inventory stopped early): stop reading.
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        BlobReader { rx, current: Bytes::new(), done: false }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// The layers of an image, each opened only when the inventory asks for the next one.
pub fn lazy_layers(
    handle: Handle,
    registry: Registry,
    repo: RepoName,
    layers: Vec<Descriptor>,
) -> impl Iterator<Item = Layer> {
    layers.into_iter().map(move |d| {
        let reader = BlobReader::spawn(&handle, registry.clone(), repo.clone(), d.digest.clone());
        Layer::new(d.media_type, reader)
    })
}
