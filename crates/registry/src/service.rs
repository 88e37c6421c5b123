//! `Registry`: blobs, manifests, tags, repositories and referrers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entrepot_meta::{ManifestRecord, MetaStore, NewManifest, Referrer};
use entrepot_oci::{ByteRange, Digest, ManifestKind, ParsedManifest, Reference, RepoName, Tag, UploadId};
use entrepot_storage::{BlobStore, ByteStream};

use crate::error::{RegistryError, Result};
use crate::events::EventSink;
use crate::metrics::Metrics;

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
    /// Counters of the registry's work (GC, storage used, events, webhook deliveries).
    pub(crate) metrics: Arc<Metrics>,
    /// Where events go once their change has committed (see [`crate::events`]); none by default.
    pub(crate) events: Option<Arc<dyn EventSink>>,
    /// Read-only mode and the retention / immutable-tag / quota rules (see [`crate::policy`]).
    pub(crate) lifecycle: Arc<crate::policy::LifecycleState>,
}

impl Registry {
    pub fn new(blobs: Arc<dyn BlobStore>, meta: Arc<dyn MetaStore>, config: RegistryConfig) -> Registry {
        Registry {
            blobs,
            meta,
            config: Arc::new(config),
            upload_locks: Arc::default(),
            metrics: Arc::default(),
            events: None,
            lifecycle: Arc::default(),
        }
    }

    /// Hands every event (push, pull, delete, gc) to `sink` from now on.
    pub fn with_event_sink(mut self, sink: Arc<dyn EventSink>) -> Registry {
        self.events = Some(sink);
        self
    }

    /// The event sink installed with [`Registry::with_event_sink`], if any (to wrap it in another one).
    pub fn event_sink(&self) -> Option<Arc<dyn EventSink>> {
        self.events.clone()
    }

    /// The registry's counters, shared by every clone.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
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
        self.read_sized_blob(digest, range).await
    }

    /// [`Registry::read_blob`] for a caller that has just checked with [`Registry::blob_size`] that the
    /// blob is readable in the repository (and resolved the range against that size): the bytes only,
    /// without asking the metadata store again.
    pub async fn read_sized_blob(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        match self.blobs.read(digest, range).await {
            Ok(s) => Ok(s),
            Err(entrepot_storage::StorageError::NotFound) => Err(RegistryError::BlobUnknown(digest.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Where a client may fetch a blob's bytes directly (a presigned object-store URL), when the blob
    /// store hands out redirects; `None` to serve them here. Call after [`Registry::blob_size`] has
    /// checked that the blob is readable in the repository.
    pub fn blob_redirect_url(&self, digest: &Digest) -> Option<String> {
        self.blobs.redirect_url(digest)
    }

    /// Removes a blob from `repo`. Its bytes stay until garbage collection finds them unreferenced.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.check_writable()?;
        if self.meta.unlink_blob(repo, digest).await? {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(digest.clone()))
        }
    }

    /// Cross-repository mount: links `digest` into `repo` if it is readable in `from` (or, without
    /// `from` and when configured, anywhere in the registry). `false` if it cannot be mounted.
    pub async fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: Option<&RepoName>) -> Result<bool> {
        self.check_writable()?;
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
        self.check_blob_quota(repo, digest, size).await?;
        // Re-checked under the metadata store's write lock: a concurrent garbage collection may have
        // removed the bytes since; then the client uploads them instead.
        match self.meta.link_blob(repo, digest, size, self.bytes_present(digest, size)).await {
            Ok(()) => Ok(true),
            Err(entrepot_meta::MetaError::Precondition(why)) => {
                tracing::info!(%repo, %digest, %why, "mount refused: the blob's bytes are gone");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
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
        self.check_writable()?;
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
        let policies = self.policies();
        let protected: Vec<Tag> = if policies.has_immutable(repo) {
            tags.iter().filter(|t| policies.immutable_rule(repo, t.as_str()).is_some()).cloned().collect()
        } else {
            Vec::new()
        };
        self.check_tag_quota(repo, &tags).await?;
        match self.meta.put_manifest(repo, &new, &tags, &protected).await {
            Ok(()) => {}
            Err(entrepot_meta::MetaError::TagProtected { tag, current }) => {
                return Err(self.immutable_denied(repo, &tag, current));
            }
            Err(e) => return Err(e.into()),
        }
        self.emit_pushed(repo, &digest, &new.media_type, size, &tags).await;
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
        self.check_writable()?;
        self.check_manifest_deletable(repo, reference).await?;
        let event = self.delete_event(repo, reference).await;
        let found = match reference {
            Reference::Digest(d) => self.meta.delete_manifest(repo, d).await?,
            Reference::Tag(t) => self.meta.delete_tag(repo, t).await?,
        };
        if !found {
            return Err(RegistryError::ManifestUnknown(format!("{reference} not found in {repo}")));
        }
        if let Some(e) = event {
            self.emit(vec![e]).await;
        }
        Ok(())
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

    /// Every manifest stored in `repo` (tagged or not), by digest.
    pub async fn manifest_digests(&self, repo: &RepoName) -> Result<Vec<Digest>> {
        Ok(self.meta.manifest_digests(repo).await?.into_iter().map(|(d, _)| d).collect())
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
