//! The scanner service: scans manifests through the `Registry` service (never the blob store's files), keeps
//! the results in a [`ScanStore`], attaches SBOM referrers, re-matches stored inventories after an advisory
//! import, answers report requests and the pull policy gate.
//!
//! Background scans: [`Scanner::sink`] wraps the registry's event sink so that every push enqueues a scan
//! (recording the event costs a channel send: a push is never slowed), and [`Scanner::start`] runs a bounded
//! number of workers (1 by default) plus a sweep that enqueues every manifest without a result — so a crash
//! or restart never loses a pending scan. Reading layers and matching run on blocking threads
//! (`spawn_blocking`); layers stream through bounded channels, so memory does not grow with layer size.
//! Must never hold a layer in memory, nor touch HTTP types.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use entrepot_inventory::{Inventory, Limits, PackageKind, inventory_from_layers};
use entrepot_oci::{Algorithm, Descriptor, Digest, ManifestKind, ParsedManifest, Reference, RepoName, media};
use entrepot_registry::{ByteStream, EventKind, EventSink, EventSinkError, Registry, RegistryError, RegistryEvent};
use entrepot_vuln::{AdvisoryDb, DbError, Ecosystem, Finding, PackageQuery};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::policy::{PullPolicy, Refusal, Unscanned};
use crate::report::{self, Report};
use crate::sbom;
use crate::store::{ChildRef, RecordKind, Rematched, ScanRecord, ScanStore, StoreError};

/// Errors of the scanner.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Advisories(#[from] DbError),
    #[error("manifest {digest}: {reason}")]
    Manifest { digest: Digest, reason: String },
    #[error("scan task failed: {0}")]
    Task(String),
}

/// How the scanner works.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// The advisory database (SQLite), e.g. `<data_dir>/vulndb.sqlite`.
    pub vulndb: PathBuf,
    /// Attach the SBOM of each scanned image as an OCI referrer.
    pub attach_sbom: bool,
    /// Scans running at once.
    pub workers: usize,
    /// Caps of the inventory reader.
    pub limits: Limits,
    /// The pull policy gate.
    pub policy: PullPolicy,
}

impl ScanSettings {
    pub fn new(vulndb: impl Into<PathBuf>) -> ScanSettings {
        ScanSettings {
            vulndb: vulndb.into(),
            attach_sbom: true,
            workers: 1,
            limits: Limits::default(),
            policy: PullPolicy::default(),
        }
    }
}

/// What a report request finds.
#[derive(Debug, Clone)]
pub enum ReportState {
    Ready(Box<Report>),
    /// No result yet: a scan is queued.
    Pending,
}

/// What a re-match did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RematchSummary {
    pub images: u64,
    pub findings: u64,
    pub generation: i64,
    pub elapsed_ms: u64,
}

type Job = (RepoName, Digest);

struct Inner {
    registry: Registry,
    store: Arc<dyn ScanStore>,
    settings: ScanSettings,
    tx: mpsc::UnboundedSender<Job>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
    queued: Mutex<HashSet<String>>,
    running: AtomicUsize,
}

/// The scanner. Cheap to clone.
#[derive(Clone)]
pub struct Scanner {
    inner: Arc<Inner>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Media types of image configurations (OCI and Docker).
const IMAGE_CONFIGS: [&str; 2] = [media::OCI_CONFIG, "application/vnd.docker.container.image.v1+json"];

/// Why a manifest is not an image whose layers can be read, or the layers to read.
fn image_layers(parsed: &ParsedManifest) -> Result<Vec<Descriptor>, String> {
    if let Some(t) = &parsed.artifact_type {
        return Err(format!("an artifact of type {t}, not an image"));
    }
    match &parsed.config {
        Some(c) if IMAGE_CONFIGS.contains(&c.media_type.as_str()) => {}
        Some(c) => return Err(format!("config of type {}, not an image configuration", c.media_type)),
        None => return Err("no config: not an image".into()),
    }
    let layers: Vec<Descriptor> =
        parsed.layers.iter().filter(|d| d.urls.is_empty() && d.media_type.contains("tar")).cloned().collect();
    if layers.is_empty() {
        return Err("no filesystem layers".into());
    }
    Ok(layers)
}

/// The advisory lookups for an inventory: each package in its ecosystem, with the image's release for
/// distribution packages.
pub fn queries(inv: &Inventory) -> Vec<PackageQuery> {
    let os_id = inv.os.as_ref().and_then(|o| o.id.clone()).unwrap_or_default();
    let like = inv.os.as_ref().map(|o| o.id_like.clone()).unwrap_or_default();
    let is = |id: &str| os_id == id || like.iter().any(|l| l == id);
    let release = inv.os.as_ref().and_then(|o| o.version_id.clone());
    let distro = |kind: PackageKind| -> Ecosystem {
        match kind {
            PackageKind::Deb if os_id == "ubuntu" => Ecosystem::Ubuntu,
            PackageKind::Deb => Ecosystem::Debian,
            PackageKind::Apk if os_id == "wolfi" => Ecosystem::Wolfi,
            PackageKind::Apk if os_id == "chainguard" => Ecosystem::Chainguard,
            PackageKind::Apk => Ecosystem::Alpine,
            PackageKind::Rpm if os_id == "rocky" => Ecosystem::RockyLinux,
            PackageKind::Rpm if os_id == "almalinux" => Ecosystem::AlmaLinux,
            PackageKind::Rpm if os_id.starts_with("opensuse") => Ecosystem::OpenSuse,
            PackageKind::Rpm if os_id.starts_with("sle") || is("suse") => Ecosystem::Suse,
            PackageKind::Rpm if os_id == "rhel" || is("rhel") => Ecosystem::RedHat,
            PackageKind::Rpm => Ecosystem::Unknown(format!("rpm:{os_id}")),
            PackageKind::Python => Ecosystem::PyPI,
            PackageKind::Npm => Ecosystem::Npm,
            PackageKind::Go => Ecosystem::Go,
            PackageKind::Rust => Ecosystem::CratesIo,
            PackageKind::Maven => Ecosystem::Maven,
            PackageKind::Gem => Ecosystem::RubyGems,
        }
    };
    inv.packages
        .iter()
        .map(|p| {
            let eco = distro(p.kind);
            let mut q = PackageQuery::new(eco.clone(), p.name.clone(), p.version.clone());
            if eco.is_distro()
                && let Some(r) = &release
            {
                q = q.with_release(r.clone());
            }
            if let Some(src) = &p.source_name {
                q = q.with_source(src.clone(), p.source_version.clone());
            }
            q
        })
        .collect()
}

/// Re-matches every stored image inventory against the advisory database at `vulndb`, page by page, without
/// reading any layer. Call it after an import (the CLI and the benchmark do).
pub async fn rematch_all(store: Arc<dyn ScanStore>, vulndb: PathBuf) -> Result<RematchSummary, ScanError> {
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || -> Result<RematchSummary, ScanError> {
        let started = Instant::now();
        let db = AdvisoryDb::open(&vulndb)?;
        let generation = db.generation()?;
        let mut summary = RematchSummary { generation, ..Default::default() };
        let mut after: Option<Digest> = None;
        loop {
            let page = handle.block_on(store.inventories(after.as_ref(), 500))?;
            let Some(last) = page.last().map(|(d, _)| d.clone()) else { break };
            let lookups: Vec<Vec<PackageQuery>> = page.iter().map(|(_, inv)| queries(inv)).collect();
            let found = entrepot_vuln::rematch(&db, &lookups)?;
            let batch: Vec<Rematched> = page
                .into_iter()
                .zip(found)
                .map(|((digest, _), findings)| {
                    summary.images += 1;
                    summary.findings += findings.len() as u64;
                    Rematched { digest, findings }
                })
                .collect();
            handle.block_on(store.update_findings(&batch, generation, unix_now()))?;
            after = Some(last);
        }
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    })
    .await
    .map_err(|e| ScanError::Task(e.to_string()))?
}

fn platform_of(v: &serde_json::Value) -> Option<String> {
    let p = v.get("platform")?;
    let os = p.get("os")?.as_str()?;
    let arch = p.get("architecture")?.as_str()?;
    Some(match p.get("variant").and_then(|v| v.as_str()) {
        Some(var) => format!("{os}/{arch}/{var}"),
        None => format!("{os}/{arch}"),
    })
}

impl Scanner {
    pub fn new(registry: Registry, store: Arc<dyn ScanStore>, settings: ScanSettings) -> Scanner {
        let (tx, rx) = mpsc::unbounded_channel();
        Scanner {
            inner: Arc::new(Inner {
                registry,
                store,
                settings,
                tx,
                rx: tokio::sync::Mutex::new(rx),
                queued: Mutex::new(HashSet::new()),
                running: AtomicUsize::new(0),
            }),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn store(&self) -> &Arc<dyn ScanStore> {
        &self.inner.store
    }

    pub fn settings(&self) -> &ScanSettings {
        &self.inner.settings
    }

    /// An event sink that enqueues a scan for every push and hands every event `inner` wants to it.
    pub fn sink(&self, inner: Option<Arc<dyn EventSink>>) -> Arc<dyn EventSink> {
        Arc::new(ScanSink { scanner: self.clone(), inner })
    }

    /// Starts the workers and, with `sweep`, the sweep of manifests without a result. Call once, on a runtime.
    pub fn start(&self, sweep: bool) {
        for _ in 0..self.inner.settings.workers.max(1) {
            let s = self.clone();
            tokio::spawn(async move { s.worker().await });
        }
        if !sweep {
            return;
        }
        let s = self.clone();
        // The sweep counts as running work, so that `idle` is false until it has queued what it found.
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            match s.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(queued = n, "scanning manifests without a scan result"),
                Err(e) => tracing::warn!(error = %e, "scan sweep failed"),
            }
            s.inner.running.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Queues a scan of `digest` in `repo` (once: a job already queued is not queued again).
    pub fn enqueue(&self, repo: RepoName, digest: Digest) -> bool {
        let key = format!("{repo}@{digest}");
        {
            let Ok(mut q) = self.inner.queued.lock() else { return false };
            if !q.insert(key) {
                return false;
            }
        }
        self.inner.tx.send((repo, digest)).is_ok()
    }

    /// Whether nothing is queued or running.
    pub fn idle(&self) -> bool {
        self.inner.running.load(Ordering::SeqCst) == 0 && self.inner.queued.lock().map(|q| q.is_empty()).unwrap_or(true)
    }

    /// Waits until the queue is empty and no scan runs, at most `timeout`; whether it became idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.idle() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.idle()
    }

    async fn worker(&self) {
        loop {
            let job = {
                let mut rx = self.inner.rx.lock().await;
                rx.recv().await
            };
            let Some((repo, digest)) = job else { return };
            self.inner.running.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut q) = self.inner.queued.lock() {
                q.remove(&format!("{repo}@{digest}"));
            }
            let started = Instant::now();
            match self.scan(&repo, &digest).await {
                Ok(r) => tracing::info!(
                    %repo, %digest, kind = ?r.kind, findings = r.findings.len(),
                    ms = started.elapsed().as_millis() as u64, "scanned"
                ),
                // Deleted before its turn came: nothing to do.
                Err(ScanError::Registry(RegistryError::ManifestUnknown(_))) => {}
                Err(e) => tracing::warn!(%repo, %digest, error = %e, "scan failed"),
            }
            self.inner.running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Enqueues every manifest of every repository that has no settled result (or, with SBOMs on, an image
    /// whose SBOM is not attached in that repository). Returns how many were queued.
    pub async fn sweep(&self) -> Result<usize, ScanError> {
        let registry = &self.inner.registry;
        let mut queued = 0;
        let mut last: Option<String> = None;
        loop {
            let repos = registry.catalog(last.as_deref(), 1000).await?;
            let Some(l) = repos.last().cloned() else { break };
            for name in &repos {
                let Ok(repo) = RepoName::parse(name) else { continue };
                let digests = registry.manifest_digests(&repo).await?;
                let settled: HashSet<Digest> = self.inner.store.settled(&digests).await?.into_iter().collect();
                for d in digests {
                    let needs = if !settled.contains(&d) {
                        true
                    } else if self.inner.settings.attach_sbom {
                        self.inner.store.sbom(&repo, &d).await?.is_none()
                            && self.inner.store.get(&d).await?.is_some_and(|r| r.kind == RecordKind::Image)
                    } else {
                        false
                    };
                    if needs && self.enqueue(repo.clone(), d) {
                        queued += 1;
                    }
                }
            }
            last = Some(l);
        }
        Ok(queued)
    }

    /// Scans `digest` in `repo` now (each platform of an index), unless a result is stored; attaches the SBOM
    /// when configured. Returns the manifest's record.
    pub async fn scan(&self, repo: &RepoName, digest: &Digest) -> Result<ScanRecord, ScanError> {
        let m = self.inner.registry.get_manifest(repo, &Reference::Digest(digest.clone())).await?;
        let parsed = ParsedManifest::parse(&m.content, Some(&m.media_type))
            .map_err(|e| ScanError::Manifest { digest: digest.clone(), reason: e.to_string() })?;
        if parsed.kind == ManifestKind::Index {
            return self.scan_index(repo, digest, &m.media_type, &m.content, &parsed).await;
        }
        let record = match self.inner.store.get(digest).await? {
            Some(r) if !matches!(r.kind, RecordKind::Failed(_)) => r,
            _ => self.scan_image(repo, digest, &m.media_type, &parsed).await?,
        };
        if self.inner.settings.attach_sbom && record.kind == RecordKind::Image {
            self.attach_sbom(repo, digest, &m.media_type, m.content.len() as u64, &record).await?;
        }
        Ok(record)
    }

    async fn scan_index(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        content: &[u8],
        parsed: &ParsedManifest,
    ) -> Result<ScanRecord, ScanError> {
        let raw: serde_json::Value = serde_json::from_slice(content).unwrap_or_default();
        let entries = raw.get("manifests").and_then(|m| m.as_array()).cloned().unwrap_or_default();
        let mut children = Vec::new();
        for (i, child) in parsed.manifests.iter().enumerate() {
            let platform = entries.get(i).and_then(platform_of);
            // Build attestations (`unknown/unknown`) and artifacts are not platforms.
            if platform.as_deref().is_some_and(|p| p.starts_with("unknown/")) || child.artifact_type.is_some() {
                continue;
            }
            let m = match self.inner.registry.get_manifest(repo, &Reference::Digest(child.digest.clone())).await {
                Ok(m) => m,
                // A sparse index: the platform is not in this repository.
                Err(RegistryError::ManifestUnknown(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let child_parsed = ParsedManifest::parse(&m.content, Some(&m.media_type))
                .map_err(|e| ScanError::Manifest { digest: child.digest.clone(), reason: e.to_string() })?;
            if child_parsed.kind == ManifestKind::Index {
                continue;
            }
            let record = match self.inner.store.get(&child.digest).await? {
                Some(r) if !matches!(r.kind, RecordKind::Failed(_)) => r,
                _ => self.scan_image(repo, &child.digest, &m.media_type, &child_parsed).await?,
            };
            if self.inner.settings.attach_sbom && record.kind == RecordKind::Image {
                self.attach_sbom(repo, &child.digest, &m.media_type, m.content.len() as u64, &record).await?;
            }
            children.push(ChildRef { digest: child.digest.clone(), platform });
        }
        let now = unix_now();
        let record = ScanRecord {
            digest: digest.clone(),
            repository: repo.to_string(),
            media_type: media_type.to_string(),
            kind: RecordKind::Index,
            inventory: None,
            children,
            findings: Vec::new(),
            scanned_at: now,
            matched_at: now,
            db_generation: 0,
        };
        self.inner.store.put(&record).await?;
        Ok(record)
    }

    async fn scan_image(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        parsed: &ParsedManifest,
    ) -> Result<ScanRecord, ScanError> {
        let now = unix_now();
        let mut record = ScanRecord {
            digest: digest.clone(),
            repository: repo.to_string(),
            media_type: media_type.to_string(),
            kind: RecordKind::Image,
            inventory: None,
            children: Vec::new(),
            findings: Vec::new(),
            scanned_at: now,
            matched_at: now,
            db_generation: 0,
        };
        let layers = match image_layers(parsed) {
            Ok(l) => l,
            Err(why) => {
                record.kind = RecordKind::NotApplicable(why);
                self.inner.store.put(&record).await?;
                return Ok(record);
            }
        };
        let (registry, repo2) = (self.inner.registry.clone(), repo.clone());
        let (limits, vulndb) = (self.inner.settings.limits.clone(), self.inner.settings.vulndb.clone());
        let handle = Handle::current();
        type Outcome = Result<(Inventory, Vec<Finding>, i64), String>;
        let outcome = tokio::task::spawn_blocking(move || -> Result<Outcome, DbError> {
            let inventory =
                match inventory_from_layers(crate::reader::lazy_layers(handle, registry, repo2, layers), &limits) {
                    Ok(i) => i,
                    Err(e) => return Ok(Err(e.to_string())),
                };
            let db = AdvisoryDb::open(&vulndb)?;
            let generation = db.generation()?;
            let findings = db.matches_inventory(&queries(&inventory))?;
            Ok(Ok((inventory, findings, generation)))
        })
        .await
        .map_err(|e| ScanError::Task(e.to_string()))??;
        match outcome {
            Ok((inventory, findings, generation)) => {
                record.inventory = Some(inventory);
                record.findings = findings;
                record.db_generation = generation;
            }
            Err(why) => record.kind = RecordKind::Failed(why),
        }
        self.inner.store.put(&record).await?;
        Ok(record)
    }

    async fn push_blob(&self, repo: &RepoName, digest: &Digest, bytes: Vec<u8>) -> Result<(), ScanError> {
        let registry = &self.inner.registry;
        if registry.blob_size(repo, digest).await.is_ok() {
            return Ok(());
        }
        let status = registry.start_upload(repo, Algorithm::Sha256).await?;
        let len = bytes.len() as u64;
        let body: ByteStream =
            Box::pin(futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(bytes)) }));
        if let Err(e) = registry.finish_upload(repo, &status.id, digest, None, Some(len), Some(body)).await {
            let _ = registry.cancel_upload(repo, &status.id).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Pushes the SPDX document of `record` as an untagged OCI artifact whose subject is the image, once per
    /// repository.
    async fn attach_sbom(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        size: u64,
        record: &ScanRecord,
    ) -> Result<(), ScanError> {
        if self.inner.store.sbom(repo, digest).await?.is_some() {
            return Ok(());
        }
        let report = report::build(repo.as_str(), record, &[]);
        let doc = serde_json::to_vec_pretty(&sbom::spdx(&report)).map_err(|e| ScanError::Task(e.to_string()))?;
        let doc_digest = Digest::sha256(&doc);
        let doc_size = doc.len();
        self.push_blob(repo, &doc_digest, doc).await?;
        let empty = b"{}".to_vec();
        let empty_digest = Digest::sha256(&empty);
        self.push_blob(repo, &empty_digest, empty).await?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "artifactType": sbom::SPDX_MEDIA_TYPE,
            "config": {"mediaType": media::OCI_EMPTY, "digest": empty_digest, "size": 2, "data": "e30="},
            "layers": [{
                "mediaType": sbom::SPDX_MEDIA_TYPE,
                "digest": doc_digest,
                "size": doc_size,
                "annotations": {"org.opencontainers.image.title": "sbom.spdx.json"},
            }],
            "subject": {"mediaType": media_type, "digest": digest, "size": size},
            "annotations": {
                "org.opencontainers.image.created": report.scanned_at,
                "io.entrepot.sbom.generator": concat!("entrepot ", env!("CARGO_PKG_VERSION")),
            },
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| ScanError::Task(e.to_string()))?;
        let manifest_digest = Digest::sha256(&bytes);
        self.inner
            .registry
            .put_manifest(repo, &Reference::Digest(manifest_digest.clone()), Some(media::OCI_MANIFEST), bytes, vec![])
            .await?;
        // The SBOM artifact is not an image: record so, rather than have a sweep look at it later.
        let now = unix_now();
        let artifact = ScanRecord {
            digest: manifest_digest.clone(),
            repository: repo.to_string(),
            media_type: media::OCI_MANIFEST.to_string(),
            kind: RecordKind::NotApplicable(format!("an artifact of type {}, not an image", sbom::SPDX_MEDIA_TYPE)),
            inventory: None,
            children: Vec::new(),
            findings: Vec::new(),
            scanned_at: now,
            matched_at: now,
            db_generation: 0,
        };
        self.inner.store.put(&artifact).await?;
        self.inner.store.record_sbom(repo, digest, &manifest_digest).await?;
        tracing::info!(%repo, subject = %digest, sbom = %manifest_digest, "SBOM attached");
        Ok(())
    }

    /// Re-matches a stored image whose findings predate the advisory database's last import.
    async fn refresh(&self, record: &mut ScanRecord) -> Result<(), ScanError> {
        if record.kind != RecordKind::Image {
            return Ok(());
        }
        let Some(inventory) = record.inventory.clone() else { return Ok(()) };
        let (vulndb, known) = (self.inner.settings.vulndb.clone(), record.db_generation);
        let fresh = tokio::task::spawn_blocking(move || -> Result<Option<(Vec<Finding>, i64)>, DbError> {
            let db = AdvisoryDb::open(&vulndb)?;
            let generation = db.generation()?;
            if generation == known {
                return Ok(None);
            }
            Ok(Some((db.matches_inventory(&queries(&inventory))?, generation)))
        })
        .await
        .map_err(|e| ScanError::Task(e.to_string()))??;
        if let Some((findings, generation)) = fresh {
            let now = unix_now();
            let batch = [Rematched { digest: record.digest.clone(), findings: findings.clone() }];
            self.inner.store.update_findings(&batch, generation, now).await?;
            record.findings = findings;
            record.db_generation = generation;
            record.matched_at = now;
        }
        Ok(())
    }

    /// The report of a stored result, or `None` when there is none (or a platform still lacks one). With
    /// `refresh`, findings older than the last advisory import are re-matched first.
    pub async fn stored_report(
        &self,
        repo: &RepoName,
        digest: &Digest,
        refresh: bool,
    ) -> Result<Option<Report>, ScanError> {
        let Some(mut record) = self.inner.store.get(digest).await? else { return Ok(None) };
        if refresh {
            self.refresh(&mut record).await?;
        }
        let mut children = Vec::new();
        for c in &record.children {
            let mut child = self.inner.store.get(&c.digest).await?;
            match child.as_mut() {
                Some(ch) if refresh => self.refresh(ch).await?,
                Some(_) => {}
                None => return Ok(None),
            }
            children.push((c.platform.clone(), child));
        }
        Ok(Some(report::build(repo.as_str(), &record, &children)))
    }

    /// The report for a manifest the caller resolved in `repo`: ready, or pending (a scan is then queued).
    pub async fn report(&self, repo: &RepoName, digest: &Digest) -> Result<ReportState, ScanError> {
        match self.stored_report(repo, digest, true).await? {
            Some(r) => Ok(ReportState::Ready(Box::new(r))),
            None => {
                self.enqueue(repo.clone(), digest.clone());
                Ok(ReportState::Pending)
            }
        }
    }

    /// The pull policy gate for a manifest of `repo`: `Err` with the reason when the policy refuses it.
    pub async fn check_pull(&self, repo: &RepoName, digest: &Digest) -> Result<Result<(), Refusal>, ScanError> {
        let policy = &self.inner.settings.policy;
        let Some(rule) = policy.rule_for(repo) else { return Ok(Ok(())) };
        let report = self.stored_report(repo, digest, false).await?;
        if report.is_none() {
            // Not scanned yet: queue it; and when unscanned images are refused, let non-images through.
            self.enqueue(repo.clone(), digest.clone());
            if rule.unscanned.unwrap_or(policy.unscanned) == Unscanned::Deny {
                let m = self.inner.registry.get_manifest(repo, &Reference::Digest(digest.clone())).await?;
                if let Ok(p) = ParsedManifest::parse(&m.content, Some(&m.media_type))
                    && p.kind == ManifestKind::Image
                    && image_layers(&p).is_err()
                {
                    return Ok(Ok(()));
                }
            }
        }
        Ok(policy.check(repo, report.as_ref()))
    }

    /// Re-matches every stored inventory against the current advisories (after an import).
    pub async fn rematch_all(&self) -> Result<RematchSummary, ScanError> {
        rematch_all(self.inner.store.clone(), self.inner.settings.vulndb.clone()).await
    }
}

/// Enqueues a scan for every push; forwards events to the sink installed before.
struct ScanSink {
    scanner: Scanner,
    inner: Option<Arc<dyn EventSink>>,
}

#[async_trait]
impl EventSink for ScanSink {
    fn wants(&self, kind: EventKind, repo: &RepoName) -> bool {
        kind == EventKind::Push || self.inner.as_ref().is_some_and(|s| s.wants(kind, repo))
    }

    async fn record(&self, events: Vec<RegistryEvent>) -> Result<(), EventSinkError> {
        for e in events.iter().filter(|e| e.kind == EventKind::Push) {
            self.scanner.enqueue(e.repository.clone(), e.digest.clone());
        }
        let Some(inner) = &self.inner else { return Ok(()) };
        let theirs: Vec<RegistryEvent> = events.into_iter().filter(|e| inner.wants(e.kind, &e.repository)).collect();
        if theirs.is_empty() { Ok(()) } else { inner.record(theirs).await }
    }
}
