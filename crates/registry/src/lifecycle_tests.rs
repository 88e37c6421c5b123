//! Tests of the storage lifecycle over real stores (the filesystem blob store and SQLite in a
//! temporary directory): garbage collection (alone and racing pushes), immutable tags, quotas,
//! read-only mode, retention and scrub.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use entrepot_meta::{MetaStore, SqliteMetaStore};
use entrepot_oci::{Algorithm, Digest, Reference, RepoName, Tag};
use entrepot_storage::{BlobStore, ByteStream, FsBlobStore};
use futures_util::StreamExt;

use crate::gc::{GcOptions, NoProgress};
use crate::policy::Policies;
use crate::scrub::{Finding, Repair};
use crate::{Denied, Registry, RegistryConfig, RegistryError};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

struct Env {
    dir: tempfile::TempDir,
    reg: Registry,
    blobs: FsBlobStore,
    meta: SqliteMetaStore,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let (reg, blobs, meta) = open(dir.path()).await;
    Env { dir, reg, blobs, meta }
}

/// A registry over the data directory `dir`, with its own database connections (as another process).
async fn open(dir: &std::path::Path) -> (Registry, FsBlobStore, SqliteMetaStore) {
    let blobs = FsBlobStore::open(dir).expect("blobs");
    let meta = SqliteMetaStore::open(&dir.join("meta.db")).await.expect("meta");
    let reg = Registry::new(Arc::new(blobs.clone()), Arc::new(meta.clone()), RegistryConfig::default());
    (reg, blobs, meta)
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).expect("repo")
}

fn tag(s: &str) -> Tag {
    Tag::parse(s).expect("tag")
}

fn body(data: &[u8]) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = data.chunks(4096).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(futures_util::stream::iter(chunks))
}

async fn push_blob(reg: &Registry, r: &RepoName, data: &[u8]) -> crate::Result<Digest> {
    let d = Digest::sha256(data);
    let s = reg.start_upload(r, Algorithm::Sha256).await?;
    reg.finish_upload(r, &s.id, &d, None, None, Some(body(data))).await?;
    Ok(d)
}

fn image_manifest(config: &(Digest, usize), layers: &[(Digest, usize)], subject: Option<&(Digest, usize)>) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(
            |(d, n)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}),
        )
        .collect();
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers,
    });
    if let Some((d, n)) = subject {
        m["subject"] = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d, "size": n});
        m["artifactType"] = serde_json::json!("application/x-signature");
    }
    serde_json::to_vec(&m).expect("json")
}

fn index_manifest(children: &[(Digest, usize)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> =
        children.iter().map(|(d, n)| serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d, "size": n})).collect();
    serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
        .expect("json")
}

/// Uploads a config and `layers` fresh layers, then pushes the manifest under `t` (or by digest).
async fn push_image(
    reg: &Registry,
    r: &RepoName,
    t: Option<&str>,
    seed: &str,
    layers: usize,
) -> crate::Result<(Digest, usize)> {
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    let cd = push_blob(reg, r, &config).await?;
    let mut ls = Vec::new();
    for i in 0..layers {
        let data = format!("layer {i} of {seed} ").repeat(50 + i).into_bytes();
        ls.push((push_blob(reg, r, &data).await?, data.len()));
    }
    let m = image_manifest(&(cd, config.len()), &ls, None);
    put(reg, r, t, OCI_MANIFEST, m).await
}

async fn put(reg: &Registry, r: &RepoName, t: Option<&str>, media: &str, m: Vec<u8>) -> crate::Result<(Digest, usize)> {
    let d = Digest::sha256(&m);
    let n = m.len();
    let reference = match t {
        Some(t) => Reference::Tag(tag(t)),
        None => Reference::Digest(d.clone()),
    };
    reg.put_manifest(r, &reference, Some(media), m, vec![]).await?;
    Ok((d, n))
}

async fn read_all(reg: &Registry, r: &RepoName, d: &Digest) -> Vec<u8> {
    let mut s = reg.read_blob(r, d, None).await.unwrap_or_else(|e| panic!("read {d} in {r}: {e}"));
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("chunk"));
    }
    out
}

/// Pulls a manifest and everything it references (recursively for an index), checking every digest.
async fn assert_pullable(reg: &Registry, r: &RepoName, reference: &Reference) {
    let m = reg.get_manifest(r, reference).await.unwrap_or_else(|e| panic!("manifest {reference} in {r}: {e}"));
    assert_eq!(Digest::of(m.digest.algorithm(), &m.content), m.digest);
    let parsed = entrepot_oci::ParsedManifest::parse(&m.content, Some(&m.media_type)).expect("parse");
    for b in parsed.required_blobs() {
        let bytes = read_all(reg, r, &b.digest).await;
        assert_eq!(Digest::sha256(&bytes), b.digest, "blob {} of {reference} in {r}", b.digest);
    }
    for child in &parsed.manifests {
        Box::pin(assert_pullable(reg, r, &Reference::Digest(child.digest.clone()))).await;
    }
}

fn gc_now(delete_untagged: bool) -> GcOptions {
    GcOptions { grace: Duration::ZERO, delete_untagged, apply_retention: false, dry_run: false }
}

async fn stored(blobs: &FsBlobStore) -> BTreeSet<Digest> {
    blobs.list().await.expect("list").into_iter().collect()
}

#[tokio::test]
async fn gc_reclaims_exactly_what_no_tag_reaches() {
    let e = env().await;
    let r = repo("team/app");
    let (keep, _) = push_image(&e.reg, &r, Some("keep"), "keep", 2).await.expect("keep");
    let (gone, _) = push_image(&e.reg, &r, Some("gone"), "gone", 2).await.expect("gone");
    let (untagged, _) = push_image(&e.reg, &r, None, "untagged", 1).await.expect("untagged");
    let stray = push_blob(&e.reg, &r, b"a blob no manifest uses").await.expect("stray");
    e.reg.delete_manifest(&r, &Reference::Tag(tag("gone"))).await.expect("untag");
    let before = stored(&e.blobs).await;
    assert_eq!(before.len(), 3 + 3 + 2 + 1);

    // Within the grace period (the default, a day) nothing goes.
    let r0 = e.reg.collect_garbage(&GcOptions::default(), &NoProgress).await.expect("gc");
    assert_eq!((r0.manifests, r0.links, r0.blobs), (0, 0, 0));

    // Timestamps count in whole seconds: step past the pushes' second so that a zero grace covers them.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A dry run says what would go and changes nothing.
    let dry = e.reg.collect_garbage(&GcOptions { dry_run: true, ..gc_now(true) }, &NoProgress).await.expect("dry");
    assert_eq!((dry.manifests, dry.blobs), (2, 3 + 2 + 1), "{dry:?}");
    assert_eq!(stored(&e.blobs).await, before);
    assert!(e.reg.get_manifest(&r, &Reference::Digest(gone.clone())).await.is_ok());

    // Untagged manifests kept by policy: only the stray blob goes.
    let kept = e.reg.collect_garbage(&gc_now(false), &NoProgress).await.expect("gc keep untagged");
    assert_eq!((kept.manifests, kept.links, kept.blobs), (0, 1, 1), "{kept:?}");
    assert!(!stored(&e.blobs).await.contains(&stray));
    assert_pullable(&e.reg, &r, &Reference::Digest(untagged.clone())).await;

    let real = e.reg.collect_garbage(&gc_now(true), &NoProgress).await.expect("gc");
    assert_eq!((real.manifests, real.blobs), (dry.manifests, dry.blobs - 1), "{real:?}");
    assert!(real.blob_bytes > 0);
    assert_eq!(stored(&e.blobs).await.len(), 3, "only the kept image's config and layers remain");
    assert_pullable(&e.reg, &r, &Reference::Tag(tag("keep"))).await;
    assert_pullable(&e.reg, &r, &Reference::Digest(keep)).await;
    assert!(matches!(e.reg.get_manifest(&r, &Reference::Digest(gone)).await, Err(RegistryError::ManifestUnknown(_))));
    let again = e.reg.collect_garbage(&gc_now(true), &NoProgress).await.expect("gc again");
    assert_eq!((again.manifests, again.links, again.blobs), (0, 0, 0));
    assert_eq!(e.reg.metrics().gc_runs(), 4, "every real run is counted, dry runs are not");
}

#[tokio::test]
async fn index_children_and_referrers_follow_their_parent() {
    let e = env().await;
    let r = repo("team/multi");
    let a = push_image(&e.reg, &r, None, "amd64", 1).await.expect("a");
    let b = push_image(&e.reg, &r, None, "arm64", 1).await.expect("b");
    let idx = put(&e.reg, &r, Some("1.0"), OCI_INDEX, index_manifest(&[a.clone(), b.clone()])).await.expect("index");
    // A signature of the index, and one of an image that is about to lose its tag.
    let sig_cfg = push_blob(&e.reg, &r, b"{\"sig\":1}").await.expect("sig config");
    let sig =
        put(&e.reg, &r, None, OCI_MANIFEST, image_manifest(&(sig_cfg.clone(), 9), &[], Some(&idx))).await.expect("sig");
    let lone = push_image(&e.reg, &r, Some("lone"), "lone", 1).await.expect("lone");
    let lone_sig =
        put(&e.reg, &r, None, OCI_MANIFEST, image_manifest(&(sig_cfg, 9), &[], Some(&lone))).await.expect("lone sig");
    e.reg.delete_manifest(&r, &Reference::Tag(tag("lone"))).await.expect("untag lone");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let report = e.reg.collect_garbage(&gc_now(true), &NoProgress).await.expect("gc");
    assert_eq!((report.manifests, report.referrers), (2, 1), "{report:?}");
    for kept in [&a, &b, &idx, &sig] {
        assert_pullable(&e.reg, &r, &Reference::Digest(kept.0.clone())).await;
    }
    for gone in [&lone, &lone_sig] {
        assert!(e.reg.get_manifest(&r, &Reference::Digest(gone.0.clone())).await.is_err());
    }
    assert_eq!(e.reg.referrers(&r, &idx.0, None).await.expect("referrers").len(), 1);

    // Deleting the index takes its children and its signature with it.
    e.reg.delete_manifest(&r, &Reference::Digest(idx.0.clone())).await.expect("delete index");
    let report = e.reg.collect_garbage(&gc_now(true), &NoProgress).await.expect("gc");
    assert_eq!(report.manifests, 3, "{report:?}");
    assert!(stored(&e.blobs).await.is_empty());
}

#[tokio::test]
async fn expired_uploads_and_orphan_staging_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = FsBlobStore::open(dir.path()).expect("blobs");
    let meta = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("meta");
    let config = RegistryConfig { upload_expiry: Duration::from_secs(1), ..Default::default() };
    let reg = Registry::new(Arc::new(blobs.clone()), Arc::new(meta), config);
    let r = repo("up/app");
    let s = reg.start_upload(&r, Algorithm::Sha256).await.expect("start");
    reg.upload_chunk(&r, &s.id, None, None, body(&[7u8; 5000])).await.expect("chunk");
    let orphan = entrepot_oci::UploadId::parse("orphan-staging").expect("id");
    blobs.upload_create(&orphan).await.expect("orphan");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = reg.collect_garbage(&gc_now(false), &NoProgress).await.expect("gc");
    assert_eq!((report.uploads, report.upload_bytes), (2, 5000), "{report:?}");
    assert!(blobs.list_uploads().await.expect("uploads").is_empty());
    assert!(matches!(reg.upload_status(&r, &s.id).await, Err(RegistryError::UploadUnknown)));
}

/// The core guarantee: pushes (blobs then manifest right away, cross-repository mounts, tag
/// overwrites, indexes, deletes) race repeated collections with a short grace period — one in this
/// registry, one in a second registry with its own database connections, as another process — and
/// every image whose push succeeded stays fully pullable; afterwards a collection reclaims
/// everything unreferenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_racing_collections_never_lose_a_blob() {
    let e = env().await;
    let (other, _, _) = open(e.dir.path()).await;
    let stop = Arc::new(AtomicBool::new(false));
    // Collections finished so far: the pushers go on until several overlapped them, however fast the
    // pushes are on this machine.
    let gc_runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let grace = Duration::from_secs(2);
    let mut collectors = Vec::new();
    for (i, reg) in [e.reg.clone(), other.clone()].into_iter().enumerate() {
        let (stop, gc_runs) = (stop.clone(), gc_runs.clone());
        collectors.push(tokio::spawn(async move {
            let mut runs = 0u32;
            let mut reclaimed = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let opts = GcOptions { grace, delete_untagged: i == 0, apply_retention: false, dry_run: false };
                let r = reg.collect_garbage(&opts, &NoProgress).await.expect("gc while pushing");
                runs += 1;
                gc_runs.fetch_add(1, Ordering::SeqCst);
                reclaimed += r.blobs;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (runs, reclaimed)
        }));
    }

    let shared = b"a base layer every image shares".repeat(100);
    let mut pushers = Vec::new();
    for w in 0..6usize {
        let reg = if w % 2 == 0 { e.reg.clone() } else { other.clone() };
        let (shared, gc_runs) = (shared.clone(), gc_runs.clone());
        pushers.push(tokio::spawn(async move {
            let r = repo(&format!("race/w{w}"));
            let mut ok: Vec<(RepoName, String, Digest)> = Vec::new();
            let mut refused = 0u32;
            let mut i = 0usize;
            while i < 14 || (gc_runs.load(Ordering::SeqCst) < 6 && i < 400) {
                i += 1;
                let t = if i.is_multiple_of(3) { "latest".to_string() } else { format!("t{i}") };
                let attempt: crate::Result<(Digest, usize)> = async {
                    // The shared base: mounted from the neighbour when it has it, else uploaded.
                    let base = Digest::sha256(&shared);
                    let from = repo(&format!("race/w{}", (w + 1) % 6));
                    if !reg.mount_blob(&r, &base, Some(&from)).await? {
                        push_blob(&reg, &r, &shared).await?;
                    }
                    let config = format!("{{\"w\":{w},\"i\":{i}}}").into_bytes();
                    let cd = push_blob(&reg, &r, &config).await?;
                    let layer = format!("layer of {w}/{i} ").repeat(200).into_bytes();
                    let ld = push_blob(&reg, &r, &layer).await?;
                    let m = image_manifest(&(cd, config.len()), &[(base, shared.len()), (ld, layer.len())], None);
                    if i % 4 == 1 {
                        // An index over this image, pushed by digest first, then the index by tag.
                        let child = put(&reg, &r, None, OCI_MANIFEST, m).await?;
                        put(&reg, &r, Some(&t), OCI_INDEX, index_manifest(&[child])).await
                    } else {
                        put(&reg, &r, Some(&t), OCI_MANIFEST, m).await
                    }
                }
                .await;
                match attempt {
                    Ok((d, _)) => {
                        ok.push((r.clone(), t.clone(), d.clone()));
                        if i % 5 == 4 {
                            reg.delete_manifest(&r, &Reference::Digest(d)).await.expect("delete");
                            ok.pop();
                        }
                    }
                    // A step took longer than the grace period: refused cleanly, to be retried.
                    Err(RegistryError::ManifestBlobUnknown { .. } | RegistryError::UploadInvalid(_)) => refused += 1,
                    Err(other) => panic!("unexpected push failure: {other}"),
                }
            }
            (ok, refused)
        }));
    }
    let mut pushed = Vec::new();
    let mut refused = 0;
    for p in pushers {
        let (ok, n) = p.await.expect("pusher");
        pushed.extend(ok);
        refused += n;
    }
    stop.store(true, Ordering::SeqCst);
    let mut runs = 0;
    for c in collectors {
        runs += c.await.expect("collector").0;
    }
    assert!(runs >= 4, "the collectors ran during the pushes ({runs} runs)");
    assert!(pushed.len() >= 40, "most pushes succeed ({} ok, {refused} refused)", pushed.len());

    // Every successful push whose tag still points at it is fully pullable, by tag and digest.
    let mut checked = 0;
    for (r, t, d) in &pushed {
        if e.reg.resolve(r, &Reference::Tag(tag(t))).await.ok().as_ref() == Some(d) {
            assert_pullable(&e.reg, r, &Reference::Tag(tag(t))).await;
            checked += 1;
        }
    }
    assert!(checked >= 30, "the tags of the successful pushes were checked ({checked})");
    assert_links_have_bytes(&e).await;

    // Once the pushes are over, a collection without grace reclaims everything unreferenced.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    e.reg.collect_garbage(&gc_now(true), &NoProgress).await.expect("final gc");
    let mut referenced = BTreeSet::new();
    for r in e.reg.all_repositories().await.expect("repos") {
        for (d, _) in e.meta.manifest_digests(&r).await.expect("manifests") {
            let m = e.meta.get_manifest(&r, &d).await.expect("get").expect("manifest");
            let parsed = entrepot_oci::ParsedManifest::parse(&m.content, Some(&m.media_type)).expect("parse");
            referenced.extend(parsed.required_blobs().map(|b| b.digest.clone()));
        }
        for t in e.meta.list_tags(&r, None, 1000).await.expect("tags") {
            assert_pullable(&e.reg, &r, &Reference::Tag(tag(&t))).await;
        }
    }
    assert_eq!(stored(&e.blobs).await, referenced, "exactly the referenced blobs remain");
    assert!(e.blobs.list_uploads().await.expect("uploads").is_empty());
    assert_links_have_bytes(&e).await;
}

/// No link anywhere points at bytes that are gone or of another size.
async fn assert_links_have_bytes(e: &Env) {
    for b in e.meta.blob_records(false).await.expect("records") {
        if b.links > 0 {
            assert_eq!(e.blobs.stat(&b.digest).await.expect("stat"), Some(b.size), "linked blob {}", b.digest);
        }
    }
}

fn policies(toml_text: &str) -> Policies {
    #[derive(serde::Deserialize)]
    struct F {
        #[serde(default)]
        retention: Vec<crate::policy::RetentionRule>,
        #[serde(default)]
        immutable_tags: Vec<crate::policy::ImmutableRule>,
        #[serde(default)]
        quota: Vec<crate::policy::QuotaRule>,
    }
    let f: F = toml::from_str(toml_text).expect("rules");
    Policies { retention: f.retention, immutable: f.immutable_tags, quotas: f.quota }
}

#[tokio::test]
async fn immutable_tags_are_never_moved_or_deleted() {
    let e = env().await;
    e.reg
        .set_policies(policies(
            r#"
            [[immutable_tags]]
            repository = "team/**"
            tags = ["v*"]
            "#,
        ))
        .expect("rules");
    let r = repo("team/app");
    let (v1, _) = push_image(&e.reg, &r, Some("v1.0"), "one", 1).await.expect("v1.0");
    // The same content again is not a move.
    let m = e.reg.get_manifest(&r, &Reference::Tag(tag("v1.0"))).await.expect("get");
    e.reg.put_manifest(&r, &Reference::Tag(tag("v1.0")), Some(OCI_MANIFEST), m.content, vec![]).await.expect("same");
    match push_image(&e.reg, &r, Some("v1.0"), "two", 1).await {
        Err(RegistryError::Denied(d)) if matches!(*d, Denied::ImmutableTag { .. }) => {
            let msg = d.to_string();
            assert!(msg.contains("v1.0") && msg.contains("team/**") && msg.contains("v*"), "{msg}");
            assert!(msg.contains(&v1.to_string()), "{msg}");
        }
        other => panic!("expected an immutable-tag denial, got {other:?}"),
    }
    assert_eq!(e.reg.resolve(&r, &Reference::Tag(tag("v1.0"))).await.expect("resolve"), v1);
    let err = e.reg.delete_manifest(&r, &Reference::Tag(tag("v1.0"))).await.expect_err("delete tag");
    assert_eq!(err.code(), entrepot_oci::ErrorCode::Denied);
    let err = e.reg.delete_manifest(&r, &Reference::Digest(v1.clone())).await.expect_err("delete by digest");
    assert!(err.to_string().contains("immutable"), "{err}");
    // Other tags and other repositories are free.
    push_image(&e.reg, &r, Some("latest"), "one", 1).await.expect("latest");
    push_image(&e.reg, &r, Some("latest"), "two", 1).await.expect("latest moves");
    push_image(&e.reg, &repo("other/app"), Some("v1.0"), "one", 1).await.expect("other");
    push_image(&e.reg, &repo("other/app"), Some("v1.0"), "two", 1).await.expect("other moves");
}

#[tokio::test]
async fn quotas_refuse_pushes_beyond_them() {
    let e = env().await;
    e.reg
        .set_policies(policies(
            r#"
            [[quota]]
            repository = "small/*"
            max_bytes = 3000
            max_tags = 2
            [[quota]]
            repository = "ns/**"
            max_bytes = 5000
            scope = "total"
            "#,
        ))
        .expect("rules");
    let r = repo("small/app");
    let big = vec![1u8; 2000];
    push_blob(&e.reg, &r, &big).await.expect("2000 bytes fit");
    push_blob(&e.reg, &r, &big).await.expect("the same blob again adds nothing");
    match push_blob(&e.reg, &r, &[2u8; 1500]).await {
        Err(RegistryError::Denied(d)) => {
            let msg = d.to_string();
            assert!(msg.contains("small/*") && msg.contains("storage") && msg.contains("2000 bytes"), "{msg}");
        }
        other => panic!("expected a quota denial, got {other:?}"),
    }
    assert!(e.blobs.list_uploads().await.expect("uploads").is_empty(), "the refused upload leaves nothing");
    // A mount counts too.
    let other = repo("free/app");
    let d = push_blob(&e.reg, &other, &[3u8; 1500]).await.expect("elsewhere");
    let err = e.reg.mount_blob(&r, &d, Some(&other)).await.expect_err("mount beyond quota");
    assert_eq!(err.code(), entrepot_oci::ErrorCode::Denied);

    // Tags: two fit, a third is refused, moving an existing one is fine.
    push_image(&e.reg, &repo("small/tags"), Some("a"), "a", 1).await.expect("a");
    push_image(&e.reg, &repo("small/tags"), Some("b"), "b", 1).await.expect("b");
    let err = push_image(&e.reg, &repo("small/tags"), Some("c"), "c", 1).await.expect_err("third tag");
    assert!(err.to_string().contains("tag quota"), "{err}");
    push_image(&e.reg, &repo("small/tags"), Some("a"), "a2", 1).await.expect("moving a tag adds none");

    // A total over a namespace adds up its repositories.
    push_blob(&e.reg, &repo("ns/one"), &[4u8; 3000]).await.expect("ns/one");
    let err = push_blob(&e.reg, &repo("ns/two"), &[5u8; 2500]).await.expect_err("ns total");
    assert!(err.to_string().contains("in total"), "{err}");
    push_blob(&e.reg, &repo("ns/two"), &[5u8; 1500]).await.expect("fits in the total");

    let report = e.reg.usage_report().await.expect("usage");
    let line = report.repositories.iter().find(|l| l.usage.repo == "small/app").expect("small/app");
    assert_eq!(line.usage.bytes, 2000);
    assert_eq!(line.quota, Some(("small/*".to_string(), Some(3000), Some(2))));
    assert_eq!(report.totals.len(), 1);
    assert_eq!((report.totals[0].bytes, report.totals[0].repositories), (4500, 2));
}

#[tokio::test]
async fn read_only_mode_refuses_writes_and_serves_reads() {
    let e = env().await;
    let r = repo("ro/app");
    let (d, _) = push_image(&e.reg, &r, Some("1"), "ro", 1).await.expect("push");
    e.reg.set_read_only(true);
    assert_pullable(&e.reg, &r, &Reference::Tag(tag("1"))).await;
    let denied = |res: crate::Result<()>| match res {
        Err(RegistryError::Denied(d)) if *d == Denied::ReadOnly => {}
        other => panic!("expected read-only denial, got {other:?}"),
    };
    denied(e.reg.start_upload(&r, Algorithm::Sha256).await.map(|_| ()));
    denied(push_image(&e.reg, &r, Some("2"), "x", 0).await.map(|_| ()));
    denied(e.reg.delete_manifest(&r, &Reference::Digest(d.clone())).await);
    denied(e.reg.mount_blob(&repo("ro/other"), &d, Some(&r)).await.map(|_| ()));
    assert!(RegistryError::denied(Denied::ReadOnly).to_string().contains("read-only"));
    e.reg.set_read_only(false);
    push_image(&e.reg, &r, Some("2"), "x", 0).await.expect("writable again");
}

#[tokio::test]
async fn retention_applied_by_gc() {
    let e = env().await;
    e.reg
        .set_policies(policies(
            r#"
            [[retention]]
            repository = "team/*"
            keep_last = 2
            keep_tags = ["stable"]
            "#,
        ))
        .expect("rules");
    let r = repo("team/app");
    for t in ["stable", "b1", "b2", "b3", "b4"] {
        push_image(&e.reg, &r, Some(t), t, 1).await.expect("push");
    }
    let plan = e.reg.retention_plan().await.expect("plan");
    assert_eq!(plan.len(), 5);
    let deletes = plan.iter().filter(|d| d.action == crate::retention::RetentionAction::Delete).count();
    assert_eq!(deletes, 2, "{plan:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let opts = GcOptions { apply_retention: true, ..gc_now(true) };
    let report = e.reg.collect_garbage(&opts, &NoProgress).await.expect("gc");
    assert_eq!((report.tags, report.manifests), (2, 2), "{report:?}");
    let tags = e.meta.list_tags(&r, None, 100).await.expect("tags");
    assert_eq!(tags.len(), 3, "{tags:?}");
    assert!(tags.contains(&"stable".to_string()));
}

#[tokio::test]
async fn scrub_finds_and_quarantines_corruption() {
    let e = env().await;
    let r = repo("scrub/app");
    push_image(&e.reg, &r, Some("1"), "scrub", 3).await.expect("push");
    let m = e.reg.get_manifest(&r, &Reference::Tag(tag("1"))).await.expect("manifest");
    let parsed = entrepot_oci::ParsedManifest::parse(&m.content, Some(&m.media_type)).expect("parse");
    let ds: Vec<Digest> = parsed.required_blobs().map(|b| b.digest.clone()).collect();
    let path = |d: &Digest| e.dir.path().join("blobs/sha256").join(&d.hex()[..2]).join(d.hex());
    // One flipped byte, one truncated file, one deleted file, one file nobody records.
    let mut bytes = std::fs::read(path(&ds[1])).expect("read");
    bytes[10] ^= 0xff;
    std::fs::write(path(&ds[1]), &bytes).expect("flip");
    let f = std::fs::OpenOptions::new().write(true).open(path(&ds[2])).expect("open");
    f.set_len(5).expect("truncate");
    std::fs::remove_file(path(&ds[3])).expect("delete");

    let clean = e.reg.scrub(false, &NoProgress).await.expect("scrub");
    assert_eq!(clean.blobs_checked, 4);
    assert_eq!(clean.manifests_checked, 1);
    let kinds: HashMap<Digest, &Finding> = clean
        .findings
        .iter()
        .map(|(f, repair)| {
            assert_eq!(repair, &Repair::None, "no repair without --repair");
            let d = match f {
                Finding::WrongHash { digest, .. }
                | Finding::WrongSize { digest, .. }
                | Finding::MissingBytes { digest, .. } => digest,
                other => panic!("unexpected finding {other:?}"),
            };
            (d.clone(), f)
        })
        .collect();
    assert!(matches!(kinds.get(&ds[1]), Some(Finding::WrongHash { .. })));
    assert!(matches!(kinds.get(&ds[2]), Some(Finding::WrongSize { actual: 5, .. })));
    assert!(matches!(kinds.get(&ds[3]), Some(Finding::MissingBytes { links: 1, .. })));
    assert!(!kinds.contains_key(&ds[0]), "the intact config is fine");

    let repaired = e.reg.scrub(true, &NoProgress).await.expect("repair");
    assert_eq!(repaired.findings.len(), 3);
    for (_, fix) in &repaired.findings {
        assert!(
            matches!(fix, Repair::Quarantined { unlinked, .. } if unlinked == &vec!["scrub/app".to_string()]),
            "{fix:?}"
        );
    }
    let quarantined = std::fs::read_dir(e.dir.path().join("quarantine")).expect("quarantine").count();
    assert_eq!(quarantined, 2, "the two corrupt files are kept for inspection");
    for d in &ds[1..] {
        assert!(matches!(e.reg.blob_size(&r, d).await, Err(RegistryError::BlobUnknown(_))), "unlinked {d}");
    }
    assert!(e.reg.scrub(false, &NoProgress).await.expect("scrub again").findings.is_empty());
    // The client pushes the bytes again and the image is whole.
    let good = format!("layer {} of scrub ", 0).repeat(50).into_bytes();
    assert_eq!(Digest::sha256(&good), ds[1]);
    push_blob(&e.reg, &r, &good).await.expect("re-push");
    assert_eq!(e.reg.blob_size(&r, &ds[1]).await.expect("linked again"), good.len() as u64);
}

/// The start-up sweep removes staging no session owns only once it is old: a fresh one may belong to an
/// upload another instance is creating right now (staging and session are created concurrently).
#[tokio::test]
async fn start_up_sweep_keeps_recent_orphan_staging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = FsBlobStore::open(dir.path()).expect("blobs");
    let meta = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("meta");
    let reg = Registry::new(Arc::new(blobs.clone()), Arc::new(meta), RegistryConfig::default());
    let r = repo("up/app");
    let owned = reg.start_upload(&r, Algorithm::Sha256).await.expect("start");
    let fresh = entrepot_oci::UploadId::parse("fresh-orphan").expect("id");
    let old = entrepot_oci::UploadId::parse("old-orphan").expect("id");
    blobs.upload_create(&fresh).await.expect("fresh");
    blobs.upload_create(&old).await.expect("old");
    let backdated = SystemTime::now() - crate::uploads::ORPHAN_MIN_AGE - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("uploads").join("old-orphan"))
        .and_then(|f| f.set_modified(backdated))
        .expect("backdate the old staging");
    assert_eq!(reg.remove_orphan_uploads().await.expect("sweep"), 1);
    let mut left: Vec<String> =
        blobs.list_uploads().await.expect("uploads").iter().map(|u| u.as_str().to_string()).collect();
    left.sort();
    let mut want = vec!["fresh-orphan".to_string(), owned.id.as_str().to_string()];
    want.sort();
    assert_eq!(left, want);
}
