//! The conformance suite every `MetaStore` backend must pass. Backends call [`run_all`] from their own
//! tests with a fresh, empty store.

use entrepot_oci::{Algorithm, Digest, Digester, RepoName, Tag, UploadId};

use crate::{MetaError, MetaStore, NewManifest, UploadSession};

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
}

async fn blobs<S: MetaStore + ?Sized>(store: &S) {
    let (a, b) = (repo("blobs/a"), repo("blobs/b"));
    let d = Digest::sha256(b"blob");
    assert_eq!(store.blob_size(&d).await.expect("size"), None);
    store.link_blob(&a, &d, 4).await.expect("link");
    store.link_blob(&a, &d, 4).await.expect("link twice");
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
    match store.put_manifest(&r, &m, &[tag("v1")]).await {
        Err(MetaError::MissingBlob(d)) => assert_eq!(d, layer),
        other => panic!("expected MissingBlob, got {other:?}"),
    }
    assert!(store.resolve_tag(&r, &tag("v1")).await.expect("resolve").is_none(), "nothing stored on failure");

    store.link_blob(&r, &layer, 5).await.expect("link");
    store.put_manifest(&r, &m, &[tag("v1"), tag("latest")]).await.expect("put");
    store.put_manifest(&r, &m, &[]).await.expect("put again");
    let got = store.get_manifest(&r, &m.digest).await.expect("get").expect("stored");
    assert_eq!(got.content, m.content);
    assert_eq!(got.media_type, m.media_type);
    assert_eq!(store.resolve_tag(&r, &tag("v1")).await.expect("resolve"), Some(m.digest.clone()));
    assert!(store.get_manifest(&repo("m/other"), &m.digest).await.expect("get").is_none());

    // An index needs its children unless sparse indexes are allowed.
    let missing = Digest::sha256(b"absent");
    let mut idx = manifest("index-1", vec![], vec![m.digest.clone(), missing.clone()], None);
    idx.media_type = "application/vnd.oci.image.index.v1+json".into();
    assert!(matches!(store.put_manifest(&r, &idx, &[]).await, Err(MetaError::MissingManifest(d)) if d == missing));
    idx.require_children = false;
    store.put_manifest(&r, &idx, &[tag("multi")]).await.expect("sparse index");

    // Moving a tag.
    let m2 = manifest("manifest-2", vec![layer.clone()], vec![], None);
    store.put_manifest(&r, &m2, &[tag("latest")]).await.expect("put m2");
    assert_eq!(store.resolve_tag(&r, &tag("latest")).await.expect("resolve"), Some(m2.digest.clone()));

    // Deleting a tag removes only that tag.
    assert!(store.delete_tag(&r, &tag("v1")).await.expect("delete tag"));
    assert!(!store.delete_tag(&r, &tag("v1")).await.expect("delete tag again"));
    assert!(store.get_manifest(&r, &m.digest).await.expect("get").is_some());

    // Deleting a manifest removes its tags.
    store.put_manifest(&r, &m, &[tag("v1")]).await.expect("retag");
    assert!(store.delete_manifest(&r, &m.digest).await.expect("delete"));
    assert!(!store.delete_manifest(&r, &m.digest).await.expect("delete again"));
    assert!(store.resolve_tag(&r, &tag("v1")).await.expect("resolve").is_none());
    assert_eq!(store.resolve_tag(&r, &tag("latest")).await.expect("resolve"), Some(m2.digest.clone()));
}

async fn listing<S: MetaStore + ?Sized>(store: &S) {
    let r = repo("list/app");
    let layer = Digest::sha256(b"list-layer");
    store.link_blob(&r, &layer, 10).await.expect("link");
    let m = manifest("list-manifest", vec![layer], vec![], None);
    let names = ["b", "a", "c10", "c9", "C", "_z"];
    let tags: Vec<Tag> = names.iter().map(|t| tag(t)).collect();
    store.put_manifest(&r, &m, &tags).await.expect("put");
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
    store.link_blob(&r, &layer, 1).await.expect("link");
    let subject = manifest("subject", vec![layer.clone()], vec![], None);
    store.put_manifest(&r, &subject, &[]).await.expect("put subject");
    assert!(store.referrers(&r, &subject.digest).await.expect("referrers").is_empty());
    let sig = manifest("signature", vec![layer.clone()], vec![], Some(subject.digest.clone()));
    let sbom = manifest("sbom", vec![layer], vec![], Some(subject.digest.clone()));
    store.put_manifest(&r, &sig, &[]).await.expect("put sig");
    store.put_manifest(&r, &sbom, &[]).await.expect("put sbom");
    let refs = store.referrers(&r, &subject.digest).await.expect("referrers");
    assert_eq!(refs.len(), 2);
    assert!(refs[0].digest < refs[1].digest);
    assert_eq!(refs[0].artifact_type.as_deref(), Some("application/x-test"));
    assert_eq!(refs[0].annotations.as_deref(), Some(r#"{"k":"v"}"#));
    assert_eq!(refs.iter().find(|x| x.digest == sig.digest).map(|x| x.size), Some(sig.content.len() as u64));
    // A subject need not exist for its referrers to be listed.
    let orphan = manifest("orphan-ref", vec![], vec![], Some(Digest::sha256(b"not pushed yet")));
    store.put_manifest(&r, &orphan, &[]).await.expect("put orphan referrer");
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
    store.complete_upload(&id2, &repo("up/app"), &d, 3).await.expect("complete");
    assert_eq!(store.get_upload(&id2).await.expect("get"), None);
    assert_eq!(store.repo_blob_size(&repo("up/app"), &d).await.expect("size"), Some(3));
    assert!(store.repository_exists(&repo("up/app")).await.expect("exists"));
}
