//! Readiness: whether the registry can serve right now, i.e. its metadata store answers a query and its
//! blob store answers a stat. Both probes are cheap (one indexed read, one `stat`) so a load balancer
//! may ask every few seconds. Never writes anything and never reports more than which store failed.

use entrepot_oci::Digest;

use crate::service::Registry;

/// Which dependency is not reachable, and why.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("metadata store unreachable: {0}")]
    Metadata(String),
    #[error("blob storage unreachable: {0}")]
    Storage(String),
}

impl NotReady {
    /// `metadata` or `storage`.
    pub fn component(&self) -> &'static str {
        match self {
            NotReady::Metadata(_) => "metadata",
            NotReady::Storage(_) => "storage",
        }
    }
}

impl Registry {
    /// Probes the metadata store (first repository name) and the blob store (stat of the empty blob,
    /// which need not exist: only an I/O failure counts).
    pub async fn check_ready(&self) -> Result<(), NotReady> {
        self.meta.list_repositories(None, 1).await.map_err(|e| NotReady::Metadata(e.to_string()))?;
        self.blobs.stat(&Digest::sha256(b"")).await.map_err(|e| NotReady::Storage(e.to_string()))?;
        Ok(())
    }
}
