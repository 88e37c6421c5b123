//! Registry events: what happened (a push, a pull, a delete, a garbage collection) to which repository
//! and digest, handed to an [`EventSink`] once the change it describes has committed.
//!
//! The registry only *emits*: it asks the sink whether anyone wants an event (so that, with no webhook
//! listening for pulls, a pull costs nothing extra) and hands it over. Storing events durably and
//! delivering them belongs to the sink (`entrepot-events`). The acting user, when the HTTP edge knows
//! it, travels as a task-local ([`with_actor`]) so that no service signature carries it. This module must
//! never know how events are delivered and never carries HTTP types.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use async_trait::async_trait;
use entrepot_oci::{Digest, Reference, RepoName, Tag};

use crate::error::Result;
use crate::service::Registry;

/// What kind of change an event describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A manifest was stored (once per tag it was pushed with, or once untagged).
    Push,
    /// A manifest was fetched with GET.
    Pull,
    /// A manifest (by digest) or a tag was deleted.
    Delete,
    /// Garbage collection removed a manifest or a blob.
    Gc,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [EventKind::Push, EventKind::Pull, EventKind::Delete, EventKind::Gc];

    /// The name used in configuration (`push`, `pull`, `delete`, `gc`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::Pull => "pull",
            EventKind::Delete => "delete",
            EventKind::Gc => "gc",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEvent {
    pub kind: EventKind,
    pub repository: RepoName,
    pub digest: Digest,
    pub media_type: Option<String>,
    pub tag: Option<Tag>,
    /// Size of the manifest (or blob, for GC) in bytes, when known.
    pub size: Option<u64>,
    /// The authenticated user who made the change, when known.
    pub actor: Option<String>,
    pub time: SystemTime,
}

impl RegistryEvent {
    /// An event of `kind` happening now, by the current task's actor (see [`with_actor`]).
    pub fn now(kind: EventKind, repository: RepoName, digest: Digest) -> RegistryEvent {
        RegistryEvent {
            kind,
            repository,
            digest,
            media_type: None,
            tag: None,
            size: None,
            actor: current_actor(),
            time: SystemTime::now(),
        }
    }
}

/// Why a sink could not keep events.
#[derive(Debug, thiserror::Error)]
#[error("events not recorded: {0}")]
pub struct EventSinkError(pub String);

/// Where the registry hands its events.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Whether any consumer wants events of `kind` in `repo`; when `false`, the registry does not
    /// build them (and does no extra lookup for them).
    fn wants(&self, kind: EventKind, repo: &RepoName) -> bool;
    /// Keeps `events` (durably, for a sink that promises delivery). Called after the change committed.
    async fn record(&self, events: Vec<RegistryEvent>) -> std::result::Result<(), EventSinkError>;
}

/// Who is acting in the current request. Filled in once known — authentication runs after the request
/// began — and shared by every clone, so the HTTP edge can create it first and the authentication layer
/// set it later.
#[derive(Debug, Clone, Default)]
pub struct Actor(Arc<OnceLock<String>>);

impl Actor {
    /// An actor already known.
    pub fn known(name: impl Into<String>) -> Actor {
        let a = Actor::default();
        a.set(name);
        a
    }

    /// Sets the name; the first name set wins.
    pub fn set(&self, name: impl Into<String>) {
        let _ = self.0.set(name.into());
    }

    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

tokio::task_local! {
    static ACTOR: Actor;
}

/// Runs `f` with `actor` as the user behind every event it emits.
pub async fn with_actor<F: Future>(actor: Actor, f: F) -> F::Output {
    ACTOR.scope(actor, f).await
}

/// The name of the actor set by [`with_actor`] around the current task, if any is known yet.
pub fn current_actor() -> Option<String> {
    ACTOR.try_with(|a| a.get().map(str::to_string)).ok().flatten()
}

impl Registry {
    /// Whether an event of `kind` in `repo` would be kept by the sink.
    pub fn wants_event(&self, kind: EventKind, repo: &RepoName) -> bool {
        self.events.as_ref().is_some_and(|s| s.wants(kind, repo))
    }

    /// Hands events to the sink. The change they describe has already committed, so a sink failure
    /// does not fail the operation: it is logged and counted (`entrepot_events_unrecorded_total`).
    /// Public so that other services of the registry (garbage collection) can emit their events.
    pub async fn emit(&self, events: Vec<RegistryEvent>) {
        let Some(sink) = &self.events else { return };
        let events: Vec<RegistryEvent> = events.into_iter().filter(|e| sink.wants(e.kind, &e.repository)).collect();
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        match sink.record(events).await {
            Ok(()) => self.metrics.events_recorded(n),
            Err(e) => {
                self.metrics.events_unrecorded(n);
                tracing::error!(error = %e, count = n, "events could not be recorded");
            }
        }
    }

    /// A manifest fetched to be used (GET, not HEAD): like [`Registry::get_manifest`], plus a `pull`
    /// event when one is wanted.
    pub async fn pull_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<crate::ManifestRecord> {
        let m = self.get_manifest(repo, reference).await?;
        if self.wants_event(EventKind::Pull, repo) {
            let mut e = RegistryEvent::now(EventKind::Pull, repo.clone(), m.digest.clone());
            e.media_type = Some(m.media_type.clone());
            e.size = Some(m.content.len() as u64);
            if let Reference::Tag(t) = reference {
                e.tag = Some(t.clone());
            }
            self.emit(vec![e]).await;
        }
        Ok(m)
    }

    /// Push events for a stored manifest: one per tag, or one untagged.
    pub(crate) async fn emit_pushed(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        size: u64,
        tags: &[Tag],
    ) {
        if !self.wants_event(EventKind::Push, repo) {
            return;
        }
        let base = RegistryEvent {
            media_type: Some(media_type.to_string()),
            size: Some(size),
            ..RegistryEvent::now(EventKind::Push, repo.clone(), digest.clone())
        };
        let events = if tags.is_empty() {
            vec![base]
        } else {
            tags.iter().map(|t| RegistryEvent { tag: Some(t.clone()), ..base.clone() }).collect()
        };
        self.emit(events).await;
    }

    /// What a delete of `reference` is about to remove, looked up only when a delete event is wanted
    /// (a tag's digest is resolved before the tag goes away). A concurrent re-tag between this lookup
    /// and the delete can make the event name the previous digest.
    pub(crate) async fn delete_event(&self, repo: &RepoName, reference: &Reference) -> Option<RegistryEvent> {
        if !self.wants_event(EventKind::Delete, repo) {
            return None;
        }
        let digest = self.resolve(repo, reference).await.ok()?;
        let mut e = RegistryEvent::now(EventKind::Delete, repo.clone(), digest.clone());
        if let Ok(Some(m)) = self.meta.get_manifest(repo, &digest).await {
            e.media_type = Some(m.media_type);
            e.size = Some(m.content.len() as u64);
        }
        if let Reference::Tag(t) = reference {
            e.tag = Some(t.clone());
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use entrepot_meta::SqliteMetaStore;
    use entrepot_storage::MemoryBlobStore;

    use super::*;
    use crate::RegistryConfig;

    /// Keeps what it is given; wants everything but pulls of `quiet`.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<RegistryEvent>>);

    #[async_trait]
    impl EventSink for Recorder {
        fn wants(&self, kind: EventKind, repo: &RepoName) -> bool {
            !(kind == EventKind::Pull && repo.as_str() == "quiet")
        }
        async fn record(&self, events: Vec<RegistryEvent>) -> std::result::Result<(), EventSinkError> {
            self.0.lock().expect("lock").extend(events);
            Ok(())
        }
    }

    fn summary(r: &Recorder) -> Vec<(EventKind, String, Option<String>, Option<String>)> {
        r.0.lock()
            .expect("lock")
            .drain(..)
            .map(|e| (e.kind, e.repository.to_string(), e.tag.map(|t| t.to_string()), e.actor))
            .collect()
    }

    #[tokio::test]
    async fn emission_points() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("open");
        let sink = Arc::new(Recorder::default());
        let registry = Registry::new(Arc::new(MemoryBlobStore::default()), Arc::new(meta), RegistryConfig::default())
            .with_event_sink(sink.clone());
        let repo = RepoName::parse("team/app").expect("repo");
        let config = Digest::sha256(b"{}");
        registry.meta.link_blob(&repo, &config, 2, entrepot_meta::no_check()).await.expect("link");
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[]}}"#
        );
        let tag = |t: &str| Tag::parse(t).expect("tag");
        let by_tag = Reference::Tag(tag("v1"));

        // A push with two tags, by an authenticated user: one event per tag, with the actor.
        let put = with_actor(
            Actor::known("alice"),
            registry.put_manifest(&repo, &by_tag, None, manifest.clone().into_bytes(), vec![tag("latest")]),
        )
        .await
        .expect("put");
        let events = sink.0.lock().expect("lock").clone();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].digest, put.digest);
        assert_eq!(events[0].size, Some(manifest.len() as u64));
        assert_eq!(events[0].media_type.as_deref(), Some("application/vnd.oci.image.manifest.v1+json"));
        let alice = Some("alice".to_string());
        assert_eq!(
            summary(&sink),
            [
                (EventKind::Push, "team/app".into(), Some("v1".into()), alice.clone()),
                (EventKind::Push, "team/app".into(), Some("latest".into()), alice)
            ]
        );

        // A GET is a pull, a HEAD (get_manifest) is not; the actor is set after the request began.
        let actor = Actor::default();
        with_actor(actor.clone(), async {
            actor.set("bob");
            registry.pull_manifest(&repo, &by_tag).await.expect("pull");
        })
        .await;
        registry.get_manifest(&repo, &by_tag).await.expect("head");
        assert_eq!(summary(&sink), [(EventKind::Pull, "team/app".into(), Some("v1".into()), Some("bob".into()))]);

        // Deleting a tag names the digest it pointed to; deleting what is not there emits nothing.
        registry.delete_manifest(&repo, &Reference::Tag(tag("latest"))).await.expect("delete tag");
        let deleted = sink.0.lock().expect("lock").clone();
        assert_eq!(deleted.len(), 1);
        assert_eq!((deleted[0].kind, deleted[0].digest.clone()), (EventKind::Delete, put.digest.clone()));
        assert_eq!(deleted[0].tag.as_ref().map(Tag::as_str), Some("latest"));
        summary(&sink);
        assert!(registry.delete_manifest(&repo, &Reference::Tag(tag("latest"))).await.is_err());
        registry.delete_manifest(&repo, &Reference::Digest(put.digest.clone())).await.expect("delete manifest");
        let deleted = summary(&sink);
        assert_eq!(deleted, [(EventKind::Delete, "team/app".into(), None, None)]);
        assert_eq!(registry.metrics().events_recorded_total(), 5);

        // A sink that does not want an event never sees it.
        let quiet = RepoName::parse("quiet").expect("repo");
        registry.meta.link_blob(&quiet, &config, 2, entrepot_meta::no_check()).await.expect("link");
        registry.put_manifest(&quiet, &by_tag, None, manifest.into_bytes(), vec![]).await.expect("put");
        summary(&sink);
        registry.pull_manifest(&quiet, &by_tag).await.expect("pull");
        assert!(summary(&sink).is_empty());
    }
}
