//! `Registry`: blobs, manifests, tags, repositories and referrers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entrepot_meta::{ManifestRecord, MetaStore, NewManifest, Referrer};
use entrepot_oci::{ByteRange, Digest, ManifestKind, ParsedManifest, Reference, RepoName, Tag, UploadId};
use entrepot_storage::{BlobStore, ByteStream};

use crate::error::{RegistryError, Result};

/// Behaviour a registry operator can choose.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Largest manifest accepted, in bytes (413 beyond).
    pub max_manifest_bytes: u64,
    /// Largest blob accepted, in bytes; 0 for no limit.
    pub max_blob_bytes: u64,
    /// Accept an index whose child manifests are not (yet) in the repository.
    pub allow_sparse_index: bool,
    /// Honour `?mount=<digest>` without `from=` by linking any blob the registry already holds.
    pub mount_without_from: bool,
    /// Upload sessions untouched for this long are removed with their bytes.
    pub upload_expiry: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_blob_bytes: 0,
            allow_sparse_index: false,
            mount_without_from: true,
            upload_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

/// The outcome of a manifest push.
#[derive(Debug, Clone)]
pub struct ManifestPut {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub tags: Vec<Tag>,
}

/// The registry service. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Registry {
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) config: Arc<RegistryConfig>,
    /// Serialises requests on one upload within this process (the metadata store's compare-and-swap
    /// protects across processes).
    pub(crate) upload_locks: Arc<Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Registry {
    pub fn new(blobs: Arc<dyn BlobStore>, meta: Arc<dyn MetaStore>, config: RegistryConfig) -> Registry {
        Registry { blobs, meta, config: Arc::new(config), upload_locks: Arc::default() }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    // ---------------------------------------------------------------- blobs

    /// The size of a blob readable in `repo`.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        match self.meta.repo_blob_size(repo, digest).await? {
            Some(size) => Ok(size),
            None => Err(RegistryError::BlobUnknown(digest.clone())),
        }
    }

    /// Streams a blob (or a range of it) readable in `repo`. The range must have been resolved
    /// against the size from [`Registry::blob_size`].
    pub async fn read_blob(&self, repo: &RepoName, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        self.blob_size(repo, digest).await?;
        match self.blobs.read(digest, range).await {
            Ok(s) => Ok(s),
            Err(entrepot_storage::StorageError::NotFound) => Err(RegistryError::BlobUnknown(digest.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a blob from `repo`. Its bytes stay until garbage collection finds them unreferenced.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if self.meta.unlink_blob(repo, digest).await? {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(digest.clone()))
        }
    }

    /// Cross-repository mount: links `digest` into `repo` if it is readable in `from` (or, without
    /// `from` and when configured, anywhere in the registry). `false` if it cannot be mounted.
    pub async fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: Option<&RepoName>) -> Result<bool> {
        let size = match from {
            Some(from) => self.meta.repo_blob_size(from, digest).await?,
            None if self.config.mount_without_from => self.meta.blob_size(digest).await?,
            None => None,
        };
        let Some(size) = size else { return Ok(false) };
        // The metadata may outlive bytes lost to corruption or manual deletion; never link those.
        if self.blobs.stat(digest).await? != Some(size) {
            return Ok(false);
        }
        self.meta.link_blob(repo, digest, size).await?;
        Ok(true)
    }

    // ---------------------------------------------------------------- manifests

    /// Stores a manifest pushed to `reference` (a tag, or a digest it must match), also tagging it
    /// with `extra_tags` (`?tag=` on a push by digest).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        content: Vec<u8>,
        extra_tags: Vec<Tag>,
    ) -> Result<ManifestPut> {
        let size = content.len() as u64;
        if size > self.config.max_manifest_bytes {
            return Err(RegistryError::ManifestTooLarge { size, limit: self.config.max_manifest_bytes });
        }
        let parsed = ParsedManifest::parse(&content, content_type)?;
        let (digest, mut tags) = match reference {
            Reference::Tag(t) => (Digest::sha256(&content), vec![t.clone()]),
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &content);
                if &actual != d {
                    return Err(RegistryError::DigestInvalid(format!(
                        "manifest digest is {actual}, not the {d} in the URL"
                    )));
                }
                (actual, Vec::new())
            }
        };
        for t in extra_tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let annotations = match &parsed.annotations {
            Some(a) => Some(serde_json::to_string(a).map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?),
            None => None,
        };
        let new = NewManifest {
            digest: digest.clone(),
            media_type: parsed.media_type.clone(),
            artifact_type: parsed.effective_artifact_type().map(str::to_string),
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            annotations,
            blobs: parsed.required_blobs().map(|d| d.digest.clone()).collect(),
            children: parsed.manifests.iter().map(|d| d.digest.clone()).collect(),
            require_children: parsed.kind == ManifestKind::Index && !self.config.allow_sparse_index,
            content,
        };
        self.meta.put_manifest(repo, &new, &tags).await?;
        Ok(ManifestPut { digest, subject: new.subject, tags })
    }

    /// Resolves a reference to its digest in `repo`.
    pub async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => self
                .meta
                .resolve_tag(repo, t)
                .await?
                .ok_or_else(|| RegistryError::ManifestUnknown(format!("tag {t} not found in {repo}"))),
        }
    }

    /// A stored manifest, by tag or digest.
    pub async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<ManifestRecord> {
        let digest = self.resolve(repo, reference).await?;
        self.meta
            .get_manifest(repo, &digest)
            .await?
            .ok_or_else(|| RegistryError::ManifestUnknown(format!("{digest} not found in {repo}")))
    }

    /// Deletes a manifest (by digest: the manifest and all its tags) or a tag (by tag: that tag only).
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let found = match reference {
            Reference::Digest(d) => self.meta.delete_manifest(repo, d).await?,
            Reference::Tag(t) => self.meta.delete_tag(repo, t).await?,
        };
        if found { Ok(()) } else { Err(RegistryError::ManifestUnknown(format!("{reference} not found in {repo}"))) }
    }

    // ---------------------------------------------------------------- listings

    /// Tags of `repo` in lexical order after `last`, at most `n`.
    pub async fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        if !self.meta.repository_exists(repo).await? {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        Ok(self.meta.list_tags(repo, last, n).await?)
    }

    /// Repositories in lexical order after `last`, at most `n`.
    pub async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        Ok(self.meta.list_repositories(last, n).await?)
    }

    /// Manifests in `repo` whose subject is `subject`, optionally only those of `artifact_type`.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let mut all = self.meta.referrers(repo, subject).await?;
        if let Some(t) = artifact_type {
            all.retain(|r| r.artifact_type.as_deref() == Some(t));
        }
        Ok(all)
    }
}
