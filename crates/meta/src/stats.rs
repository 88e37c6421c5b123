//! Figures about what the metadata store holds, for monitoring (the `entrepot_storage_used_bytes`
//! gauge). A separate trait so that `MetaStore` stays about the registry's operations; each figure is a
//! single aggregate query, meant to be refreshed periodically and cached by the caller, never computed
//! per request. Read-only.

use async_trait::async_trait;
use rusqlite::params;

use crate::Result;
use crate::sqlite::SqliteMetaStore;

#[async_trait]
pub trait MetaStats: Send + Sync + 'static {
    /// Total size in bytes of the blobs the store knows (each digest once, however many repositories
    /// link it).
    async fn stored_bytes(&self) -> Result<u64>;
}

#[async_trait]
impl MetaStats for SqliteMetaStore {
    async fn stored_bytes(&self) -> Result<u64> {
        self.read(|c| {
            let total: i64 =
                c.prepare_cached("SELECT COALESCE(SUM(size), 0) FROM blobs")?.query_row(params![], |r| r.get(0))?;
            Ok(total.max(0) as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetaStore;
    use entrepot_oci::{Digest, RepoName};

    #[tokio::test]
    async fn counts_each_blob_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("open");
        assert_eq!(store.stored_bytes().await.expect("bytes"), 0);
        let (a, b) = (RepoName::parse("a").expect("name"), RepoName::parse("b").expect("name"));
        store.link_blob(&a, &Digest::sha256(b"x"), 100, crate::no_check()).await.expect("link");
        store.link_blob(&b, &Digest::sha256(b"x"), 100, crate::no_check()).await.expect("link");
        store.link_blob(&b, &Digest::sha256(b"y"), 23, crate::no_check()).await.expect("link");
        assert_eq!(store.stored_bytes().await.expect("bytes"), 123);
    }
}
