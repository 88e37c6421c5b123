//! The conformance suite every `MetaStore` backend must pass. Backends call [`run_all`] from their own
//! tests with a fresh, empty store.

use entrepot_oci::{Algorithm, Digest, Digester, RepoName, Tag, UploadId};

use crate::{
    CollectReason, ManifestGcPolicy, MetaError, MetaStore, NewManifest, SweepOutcome, UploadSession, no_check,
};

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).expect("repo name")
}

fn tag(s: &str) -> Tag {
    Tag::parse(s).expect("tag")
}

fn manifest(content: &str, blobs: Vec<Digest>, children: Vec<Digest>, subject: Option<Digest>) -> NewManifest {
    NewManifest {
        digest: Digest::sha256(content.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        content: content.as_bytes().to_vec(),
        artifact_type: subject.as_ref().map(|_| "application/x-test".to_string()),
        subject,
        annotations: Some(r#"{"k":"v"}"#.into()),
        blobs,
        children,
        require_children: true,
    }
}

/// Runs every check against `store`, which must start empty.
pub async fn run_all<S: MetaStore + ?Sized>(store: &S) {
    blobs(store).await;
    manifests_and_tags(store).await;
    listing(store).await;
    referrers(store).await;
    uploads(store).await;
    lifecycle(store).await;
    gc_lock(store).await;
    settings(store).await;
}

/// Settings: absent until set, replaced by a second set, removed by `None` (twice is fine), each key
/// on its own.
async fn settings<S: MetaStore + ?Sized>(store: &S) {
    assert_eq!(store.setting("read_only").await.expect("get"), None, "no setting in a fresh store");
    store.set_setting("read_only", Some("true")).await.expect("set");
    store.set_setting("other", Some("x")).await.expect("set other");
    assert_eq!(store.setting("read_only").await.expect("get").as_deref(), Some("true"));
    store.set_setting("read_only", Some("false")).await.expect("replace");
    assert_eq!(store.setting("read_only").await.expect("get").as_deref(), Some("false"), "a set replaces");
    store.set_setting("read_only", None).await.expect("delete");
    assert_eq!(store.setting("read_only").await.expect("get"), None, "None deletes");
    store.set_setting("read_only", None).await.expect("deleting an absent key is fine");
    assert_eq!(store.setting("other").await.expect("get").as_deref(), Some("x"), "keys are independent");
    store.set_setting("other", None).await.expect("clean up");
}

/// One garbage collector at a time: a second attempt fails at once while the lock is held, and
/// succeeds once it is dropped.
async fn gc_lock<S: MetaStore + ?Sized>(store: &S) {
    let held = store.try_gc_lock().await.expect("gc lock").expect("a free lock is granted");
    assert!(store.try_gc_lock().await.expect("gc lock").is_none(), "a held lock is refused");
    drop(held);
    let mut again = None;
    // A backend may release asynchronously (e.g. a database session closing): allow it a moment.
    for _ in 0..100 {
        again = store.try_gc_lock().await.expect("gc lock");
        if again.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a dropped lock is free again");
}

async fn blobs<S: MetaStore + ?Sized>(store: &S) {
    let (a, b) = (repo("blobs/a"), repo("blobs/b"));
    let d = Digest::sha256(b"blob");
    assert_eq!(store.blob_size(&d).await.expect("size"), None);
    store.link_blob(&a, &d, 4, no_check()).await.expect("link");
    store.link_blob(&a, &d, 4, no_check()).await.expect("link twice");
    assert_eq!(store.blob_size(&d).await.expect("size"), Some(4));
    assert_eq!(store.repo_blob_size(&a, &d).await.expect("size"), Some(4));
    assert_eq!(store.repo_blob_size(&b, &d).await.expect("size"), None, "links are per repository");
    assert!(store.repository_exists(&a).await.expect("exists"));
    assert!(store.unlink_blob(&a, &d).await.expect("unlink"));
    assert!(!store.unlink_blob(&a, &d).await.expect("unlink again"));
    assert_eq!(store.repo_blob_size(&a, &d).await.expect("size"), None);
}

async fn manifests_and_tags<S: MetaStore + ?Sized>(store: &S) {
    let r = repo("m/app");
    let layer = Digest::sha256(b"layer");
    let m = manifest("manifest-1", vec![layer.clone()], vec![], None);
    match store.put_manifest(&r, &m, &[tag("v1")], &[]).await {
        Err(MetaError::MissingBlob(d)) => assert_eq!(d, layer),
        other => panic!("expected MissingBlob, got {other:?}"),
    }
    assert!(store.resolve_tag(&r, &tag("v1")).await.expect("resolve").is_none(), "nothing stored on failure");

    store.link_blob(&r, &layer, 5, no_check()).await.expect("link");
    store.put_manifest(&r, &m, &[tag("v1"), tag("latest")], &[]).await.expect("put");
    store.put_manifest(&r, &m, &[], &[]).await.expect("put again");
    let got = store.get_manifest(&r, &m.digest).await.expect("get").expect("stored");
    assert_eq!(got.content, m.content);
    assert_eq!(got.media_type, m.media_type);
    assert_eq!(store.resolve_tag(&r, &tag("v1")).await.expect("resolve"), Some(m.digest.clone()));
    assert!(store.get_manifest(&repo("m/other"), &m.digest).await.expect("get").is_none());

    // An index needs its children unless sparse indexes are allowed.
    let missing = Digest::sha256(b"absent");
    let mut idx = manifest("index-1", vec![], vec![m.digest.clone(), missing.clone()], None);
    idx.media_type = "application/vnd.oci.image.index.v1+json".into();
    assert!(matches!(store.put_manifest(&r, &idx, &[], &[]).await, Err(MetaError::MissingManifest(d)) if d == missing));
    idx.require_children = false;
    store.put_manifest(&r, &idx, &[tag("multi")], &[]).await.expect("sparse index");

    // Moving a tag.
    let m2 = manifest("manifest-2", vec![layer.clone()], vec![], None);
    store.put_manifest(&r, &m2, &[tag("latest")], &[]).await.expect("put m2");
    assert_eq!(store.resolve_tag(&r, &tag("latest")).await.expect("resolve"), Some(m2.digest.clone()));

    // Deleting a tag removes only that tag.
    assert!(store.delete_tag(&r, &tag("v1")).await.expect("delete tag"));
    assert!(!store.delete_tag(&r, &tag("v1")).await.expect("delete tag again"));
    assert!(store.get_manifest(&r, &m.digest).await.expect("get").is_some());

    // Deleting a manifest removes its tags.
    store.put_manifest(&r, &m, &[tag("v1")], &[]).await.expect("retag");
    assert!(store.delete_manifest(&r, &m.digest).await.expect("delete"));
    assert!(!store.delete_manifest(&r, &m.digest).await.expect("delete again"));
    assert!(store.resolve_tag(&r, &tag("v1")).await.expect("resolve").is_none());
    assert_eq!(store.resolve_tag(&r, &tag("latest")).await.expect("resolve"), Some(m2.digest.clone()));
}

async fn listing<S: MetaStore + ?Sized>(store: &S) {
    let r = repo("list/app");
    let layer = Digest::sha256(b"list-layer");
    store.link_blob(&r, &layer, 10, no_check()).await.expect("link");
    let m = manifest("list-manifest", vec![layer], vec![], None);
    let names = ["b", "a", "c10", "c9", "C", "_z"];
    let tags: Vec<Tag> = names.iter().map(|t| tag(t)).collect();
    store.put_manifest(&r, &m, &tags, &[]).await.expect("put");
    let all = store.list_tags(&r, None, 100).await.expect("list");
    assert_eq!(all, vec!["C", "_z", "a", "b", "c10", "c9"], "lexical (byte) order");
    assert_eq!(store.list_tags(&r, None, 2).await.expect("list"), vec!["C", "_z"]);
    assert_eq!(store.list_tags(&r, Some("_z"), 2).await.expect("list"), vec!["a", "b"]);
    assert_eq!(store.list_tags(&r, Some("c9"), 2).await.expect("list"), Vec::<String>::new());
    assert!(store.list_tags(&repo("list/none"), None, 10).await.expect("list").is_empty());

    let repos = store.list_repositories(None, 1000).await.expect("repos");
    assert!(repos.windows(2).all(|w| w[0] < w[1]), "sorted: {repos:?}");
    assert!(repos.contains(&"list/app".to_string()));
    let first = store.list_repositories(None, 1).await.expect("repos");
    assert_eq!(first.len(), 1);
    let next = store.list_repositories(Some(&first[0]), 1).await.expect("repos");
    assert!(next.first() > first.first());
}

async fn referrers<S: MetaStore + ?Sized>(store: &S) {
    let r = repo("ref/app");
    let layer = Digest::sha256(b"ref-layer");
    store.link_blob(&r, &layer, 1, no_check()).await.expect("link");
    let subject = manifest("subject", vec![layer.clone()], vec![], None);
    store.put_manifest(&r, &subject, &[], &[]).await.expect("put subject");
    assert!(store.referrers(&r, &subject.digest).await.expect("referrers").is_empty());
    let sig = manifest("signature", vec![layer.clone()], vec![], Some(subject.digest.clone()));
    let sbom = manifest("sbom", vec![layer], vec![], Some(subject.digest.clone()));
    store.put_manifest(&r, &sig, &[], &[]).await.expect("put sig");
    store.put_manifest(&r, &sbom, &[], &[]).await.expect("put sbom");
    let refs = store.referrers(&r, &subject.digest).await.expect("referrers");
    assert_eq!(refs.len(), 2);
    assert!(refs[0].digest < refs[1].digest);
    assert_eq!(refs[0].artifact_type.as_deref(), Some("application/x-test"));
    assert_eq!(refs[0].annotations.as_deref(), Some(r#"{"k":"v"}"#));
    assert_eq!(refs.iter().find(|x| x.digest == sig.digest).map(|x| x.size), Some(sig.content.len() as u64));
    // A subject need not exist for its referrers to be listed.
    let orphan = manifest("orphan-ref", vec![], vec![], Some(Digest::sha256(b"not pushed yet")));
    store.put_manifest(&r, &orphan, &[], &[]).await.expect("put orphan referrer");
    assert_eq!(store.referrers(&r, &Digest::sha256(b"not pushed yet")).await.expect("referrers").len(), 1);
    assert!(store.referrers(&repo("ref/other"), &subject.digest).await.expect("referrers").is_empty());
}

async fn uploads<S: MetaStore + ?Sized>(store: &S) {
    let id = UploadId::parse("0b9c1d6e-test").expect("id");
    let mut h = Digester::new(Algorithm::Sha256);
    let s = UploadSession {
        id: id.clone(),
        repo: repo("up/app"),
        algorithm: Algorithm::Sha256,
        offset: 0,
        hash_state: h.save(),
        created_at: 1000,
        updated_at: 1000,
    };
    store.create_upload(&s).await.expect("create");
    assert_eq!(store.get_upload(&id).await.expect("get"), Some(s.clone()));
    h.update(b"abc");
    assert!(store.advance_upload(&id, 0, 3, &h.save(), 1010).await.expect("advance"));
    assert!(!store.advance_upload(&id, 0, 6, &h.save(), 1011).await.expect("stale advance"), "compare-and-swap");
    let got = store.get_upload(&id).await.expect("get").expect("exists");
    assert_eq!(got.offset, 3);
    assert_eq!(Digester::restore(Algorithm::Sha256, &got.hash_state).map(|h| h.finish()), Some(Digest::sha256(b"abc")));
    assert_eq!(store.stale_uploads(1005).await.expect("stale"), Vec::<UploadId>::new());
    assert_eq!(store.stale_uploads(2000).await.expect("stale"), vec![id.clone()]);
    assert!(store.delete_upload(&id).await.expect("delete"));
    assert!(!store.delete_upload(&id).await.expect("delete again"));
    assert_eq!(store.get_upload(&id).await.expect("get"), None);

    // Completing links the blob and removes the session at once.
    let id2 = UploadId::parse("0b9c1d6e-complete").expect("id");
    store.create_upload(&UploadSession { id: id2.clone(), ..s.clone() }).await.expect("create");
    let d = Digest::sha256(b"abc");
    store.complete_upload(&id2, &repo("up/app"), &d, 3, no_check()).await.expect("complete");
    assert_eq!(store.get_upload(&id2).await.expect("get"), None);
    assert_eq!(store.repo_blob_size(&repo("up/app"), &d).await.expect("size"), Some(3));
    assert!(store.repository_exists(&repo("up/app")).await.expect("exists"));
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn digests<T>(items: &[T], f: impl Fn(&T) -> &Digest) -> Vec<Digest> {
    let mut v: Vec<Digest> = items.iter().map(f).cloned().collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<Digest>) -> Vec<Digest> {
    v.sort();
    v
}

async fn lifecycle<S: MetaStore + ?Sized>(store: &S) {
    let r = repo("gc/app");
    let (l1, l2, l3) = (Digest::sha256(b"gc-l1"), Digest::sha256(b"gc-l2"), Digest::sha256(b"gc-l3"));
    for (d, n) in [(&l1, 10), (&l2, 20), (&l3, 30)] {
        store.link_blob(&r, d, n, no_check()).await.expect("link");
    }
    // A refused check stores nothing.
    let refused = Digest::sha256(b"gc-refused");
    let err = store.link_blob(&r, &refused, 1, Box::new(|| Err("bytes are gone".into()))).await;
    assert!(matches!(err, Err(MetaError::Precondition(ref why)) if why == "bytes are gone"), "{err:?}");
    assert_eq!(store.blob_size(&refused).await.expect("size"), None);

    let a = manifest("gc-a", vec![l1.clone()], vec![], None);
    let b = manifest("gc-b", vec![l2.clone()], vec![], None);
    let c = manifest("gc-c", vec![l1.clone()], vec![], None);
    let mut idx = manifest("gc-index", vec![], vec![c.digest.clone()], None);
    idx.media_type = "application/vnd.oci.image.index.v1+json".into();
    let sig_a = manifest("gc-sig-a", vec![], vec![], Some(a.digest.clone()));
    let sig_b = manifest("gc-sig-b", vec![], vec![], Some(b.digest.clone()));
    let orphan = manifest("gc-orphan", vec![], vec![], Some(Digest::sha256(b"gc-never-pushed")));
    store.put_manifest(&r, &a, &[tag("a")], &[]).await.expect("a");
    store.put_manifest(&r, &b, &[], &[]).await.expect("b");
    store.put_manifest(&r, &c, &[], &[]).await.expect("c");
    store.put_manifest(&r, &idx, &[tag("multi")], &[]).await.expect("index");
    for m in [&sig_a, &sig_b, &orphan] {
        store.put_manifest(&r, m, &[], &[]).await.expect("referrer");
    }

    // Immutable tags: created once, re-pushed with the same content, never moved.
    store.put_manifest(&r, &a, &[tag("v1")], &[tag("v1")]).await.expect("create protected tag");
    store.put_manifest(&r, &a, &[tag("v1")], &[tag("v1")]).await.expect("same content again");
    match store.put_manifest(&r, &b, &[tag("v1"), tag("other")], &[tag("v1")]).await {
        Err(MetaError::TagProtected { tag, current }) => assert_eq!((tag.as_str(), &current), ("v1", &a.digest)),
        other => panic!("expected TagProtected, got {other:?}"),
    }
    assert!(store.resolve_tag(&r, &tag("other")).await.expect("resolve").is_none(), "nothing stored on refusal");
    assert!(store.delete_tag(&r, &tag("v1")).await.expect("untag"));

    // Inside the grace period nothing is collected.
    let grace = ManifestGcPolicy { cutoff: 0, delete_untagged: true, dry_run: false };
    let (m, l) = store.gc_repository(&r, &grace).await.expect("gc in grace");
    assert!(m.is_empty() && l.is_empty(), "{m:?} {l:?}");

    // Untagged manifests kept: only the referrer whose subject never came goes, and the unused link.
    let later = unix_now() + 10;
    let keep = ManifestGcPolicy { cutoff: later, delete_untagged: false, dry_run: true };
    let (m, l) = store.gc_repository(&r, &keep).await.expect("dry run");
    assert_eq!(digests(&m, |x| &x.digest), vec![orphan.digest.clone()]);
    assert_eq!(m[0].reason, CollectReason::SubjectGone);
    assert_eq!(m[0].size, orphan.content.len() as u64);
    assert_eq!(digests(&l, |x| &x.digest), vec![l3.clone()]);
    assert_eq!(l[0].size, 30);
    assert!(store.get_manifest(&r, &orphan.digest).await.expect("get").is_some(), "a dry run changes nothing");
    let (m, l) = store.gc_repository(&r, &ManifestGcPolicy { dry_run: false, ..keep }).await.expect("gc");
    assert_eq!((m.len(), l.len()), (1, 1));
    assert!(store.get_manifest(&r, &orphan.digest).await.expect("get").is_none());
    assert_eq!(store.repo_blob_size(&r, &l3).await.expect("size"), None);
    assert_eq!(store.repo_blob_size(&r, &l2).await.expect("size"), Some(20), "still referenced by b");

    // Untagged manifests collected: b and its signature go; the index child and a's signature stay.
    let sweep = ManifestGcPolicy { cutoff: later, delete_untagged: true, dry_run: false };
    let (m, l) = store.gc_repository(&r, &sweep).await.expect("gc untagged");
    assert_eq!(digests(&m, |x| &x.digest), sorted(vec![b.digest.clone(), sig_b.digest.clone()]));
    for x in &m {
        let want = if x.digest == b.digest { CollectReason::Untagged } else { CollectReason::SubjectGone };
        assert_eq!(x.reason, want);
    }
    assert_eq!(digests(&l, |x| &x.digest), vec![l2.clone()]);
    for kept in [&a, &c, &idx, &sig_a] {
        assert!(store.get_manifest(&r, &kept.digest).await.expect("get").is_some(), "kept {}", kept.digest);
    }
    let (m, l) = store.gc_repository(&r, &sweep).await.expect("gc again");
    assert!(m.is_empty() && l.is_empty(), "a second run finds nothing: {m:?} {l:?}");

    // Pushing a manifest again renews its grace period.
    let late = manifest("gc-late", vec![l1.clone()], vec![], None);
    store.put_manifest(&r, &late, &[], &[]).await.expect("late");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let cutoff = unix_now();
    store.put_manifest(&r, &late, &[], &[]).await.expect("late again");
    let (m, _) = store
        .gc_repository(&r, &ManifestGcPolicy { cutoff, delete_untagged: true, dry_run: true })
        .await
        .expect("dry run");
    assert!(!m.iter().any(|x| x.digest == late.digest), "re-pushed after the cutoff: kept");

    // Blob records and sweeping: l2 and l3 are linked nowhere now.
    let unlinked = store.blob_records(true).await.expect("unlinked");
    let unlinked_digests = digests(&unlinked, |x| &x.digest);
    assert!(unlinked_digests.contains(&l2) && unlinked_digests.contains(&l3), "{unlinked_digests:?}");
    assert!(!unlinked_digests.contains(&l1));
    let all = store.blob_records(false).await.expect("all");
    assert_eq!(all.iter().find(|x| x.digest == l1).map(|x| (x.size, x.links)), Some((10, 1)));
    let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = called.clone();
    let linked = store
        .sweep_blob(
            &l1,
            Box::new(move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(true)
            }),
        )
        .await
        .expect("sweep linked");
    assert_eq!(linked, SweepOutcome::Linked);
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst), "the bytes of a linked blob are never touched");
    assert_eq!(store.sweep_blob(&l2, Box::new(|| Ok(false))).await.expect("keep"), SweepOutcome::Kept);
    assert_eq!(store.blob_size(&l2).await.expect("size"), Some(20));
    assert!(matches!(store.sweep_blob(&l2, Box::new(|| Err("io".into()))).await, Err(MetaError::Precondition(_))));
    assert_eq!(store.sweep_blob(&l2, Box::new(|| Ok(true))).await.expect("remove"), SweepOutcome::Removed);
    assert_eq!(store.blob_size(&l2).await.expect("size"), None);
    let unknown = Digest::sha256(b"gc-file-without-record");
    assert_eq!(store.sweep_blob(&unknown, Box::new(|| Ok(true))).await.expect("no record"), SweepOutcome::Removed);

    // Forgetting a blob unlinks it everywhere.
    let other = repo("gc/other");
    store.link_blob(&other, &l1, 10, no_check()).await.expect("link");
    assert_eq!(store.forget_blob(&l1).await.expect("forget"), vec!["gc/app".to_string(), "gc/other".to_string()]);
    assert_eq!(store.blob_size(&l1).await.expect("size"), None);
    assert_eq!(store.repo_blob_size(&other, &l1).await.expect("size"), None);

    // Tags with times; a conditional delete loses to a newer push.
    let t = repo("gc/tags");
    let lt = Digest::sha256(b"gc-tags-layer");
    store.link_blob(&t, &lt, 7, no_check()).await.expect("link");
    let m1 = manifest("gc-tags-1", vec![lt.clone()], vec![], None);
    let m2 = manifest("gc-tags-2", vec![lt.clone()], vec![], None);
    store.put_manifest(&t, &m1, &[tag("old"), tag("x")], &[]).await.expect("put");
    let recs = store.tag_records(&t).await.expect("tags");
    assert_eq!(recs.len(), 2);
    assert!(recs.windows(2).all(|w| w[0].updated_at >= w[1].updated_at));
    let old = recs.iter().find(|r| r.tag == "old").expect("old").clone();
    assert_eq!(old.digest, m1.digest);
    store.put_manifest(&t, &m2, &[tag("old")], &[]).await.expect("move");
    assert!(!store.delete_tag_if(&t, &tag("old"), &old.digest, old.updated_at).await.expect("stale"), "moved since");
    let x = store.tag_records(&t).await.expect("tags").into_iter().find(|r| r.tag == "x").expect("x");
    assert!(store.delete_tag_if(&t, &tag("x"), &x.digest, x.updated_at).await.expect("delete"));
    assert!(store.resolve_tag(&t, &tag("x")).await.expect("resolve").is_none());

    // Usage: distinct linked blobs' bytes and counts.
    let u = store.repo_usage(&t).await.expect("usage");
    assert_eq!((u.repo.as_str(), u.bytes, u.blobs, u.tags, u.manifests), ("gc/tags", 7, 1, 1, 2));
    let none = store.repo_usage(&repo("gc/none")).await.expect("usage");
    assert_eq!((none.bytes, none.tags), (0, 0));
    let all = store.all_usage().await.expect("all usage");
    assert!(all.windows(2).all(|w| w[0].repo < w[1].repo));
    assert_eq!(all.iter().find(|x| x.repo == "gc/tags"), Some(&u));
    let ms = store.manifest_digests(&t).await.expect("manifests");
    assert_eq!(ms.len(), 2);
    assert!(ms.contains(&(m1.digest.clone(), m1.content.len() as u64)));
}
