//! The PostgreSQL backend against a real PostgreSQL 15 started by the test itself
//! (`entrepot_meta::pgtest`): the shared conformance suites, migrations, and what several instances
//! (two stores, each with its own pool) do when they race — compare-and-swap of upload offsets and of
//! immutable tags, the per-blob lock between linking and sweeping, the garbage collection lock — and
//! the copy of an embedded (SQLite) registry's metadata.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use entrepot_meta::pgtest::PgServer;
use entrepot_meta::{
    EventOutbox, MetaError, MetaStats, MetaStore, NewDelivery, NewManifest, PgMetaStore, SqliteMetaStore, SweepOutcome,
    UploadSession, no_check,
};
use entrepot_oci::{Algorithm, Digest, Digester, RepoName, Tag, UploadId};

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).expect("repo")
}

fn tag(s: &str) -> Tag {
    Tag::parse(s).expect("tag")
}

fn manifest(content: &str, blobs: Vec<Digest>) -> NewManifest {
    NewManifest {
        digest: Digest::sha256(content.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        content: content.as_bytes().to_vec(),
        artifact_type: None,
        subject: None,
        annotations: None,
        blobs,
        children: vec![],
        require_children: true,
    }
}

/// Two "instances": separate stores with separate pools on the same database.
async fn two_instances(pg: &PgServer) -> (Arc<PgMetaStore>, Arc<PgMetaStore>) {
    let url = pg.create_database();
    let (a, b) = tokio::join!(PgMetaStore::connect(&url), PgMetaStore::connect(&url));
    (Arc::new(a.expect("instance a")), Arc::new(b.expect("instance b")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suites_pass() {
    let pg = PgServer::start();
    let store = PgMetaStore::connect(&pg.create_database()).await.expect("connect");
    entrepot_meta::testsuite::run_all(&store).await;

    let outbox = PgMetaStore::connect(&pg.create_database()).await.expect("connect");
    entrepot_meta::outbox::testsuite::run_all(&outbox).await;

    // Stored bytes count each blob once, however many repositories link it.
    let stats = PgMetaStore::connect(&pg.create_database()).await.expect("connect");
    assert_eq!(stats.stored_bytes().await.expect("bytes"), 0);
    stats.link_blob(&repo("a"), &Digest::sha256(b"x"), 100, no_check()).await.expect("link");
    stats.link_blob(&repo("b"), &Digest::sha256(b"x"), 100, no_check()).await.expect("link");
    stats.link_blob(&repo("b"), &Digest::sha256(b"y"), 23, no_check()).await.expect("link");
    assert_eq!(stats.stored_bytes().await.expect("bytes"), 123);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_when_instances_start_together() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let name = url.rsplit('/').next().expect("db name").to_string();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgMetaStore::connect_with(&url, 2).await })
        })
        .collect();
    for s in starts {
        s.await.expect("task").expect("every instance starts");
    }
    assert_eq!(
        pg.psql(&name, "SELECT string_agg(version::text, ',' ORDER BY version) FROM entrepot_schema").trim(),
        "1,2"
    );
    // Starting again changes nothing, and the data stays.
    let store = PgMetaStore::connect(&url).await.expect("restart");
    store.link_blob(&repo("keep"), &Digest::sha256(b"k"), 1, no_check()).await.expect("link");
    drop(store);
    let store = PgMetaStore::connect(&url).await.expect("restart");
    assert_eq!(store.repo_blob_size(&repo("keep"), &Digest::sha256(b"k")).await.expect("size"), Some(1));
    // A schema newer than this binary is refused rather than used.
    pg.psql(&name, "INSERT INTO entrepot_schema (version, applied_at) VALUES (999, now())");
    let err = PgMetaStore::connect(&url).await.expect_err("newer schema");
    assert!(err.to_string().contains("999"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_offsets_are_compare_and_swap_across_instances() {
    let pg = PgServer::start();
    let (a, b) = two_instances(&pg).await;
    let id = UploadId::parse("race-upload").expect("id");
    let mut h = Digester::new(Algorithm::Sha256);
    a.create_upload(&UploadSession {
        id: id.clone(),
        repo: repo("race/up"),
        algorithm: Algorithm::Sha256,
        offset: 0,
        hash_state: h.save(),
        created_at: 1,
        updated_at: 1,
    })
    .await
    .expect("create");
    // Each round, both instances try to append a chunk at the offset they read: exactly one wins.
    let mut offset = 0u64;
    for round in 0..40u64 {
        let chunk = format!("chunk {round};");
        h.update(chunk.as_bytes());
        let state = h.save();
        let next = offset + chunk.len() as u64;
        let (x, y) = tokio::join!(
            a.advance_upload(&id, offset, next, &state, 10 + round as i64),
            b.advance_upload(&id, offset, next + 1, &state, 10 + round as i64)
        );
        let (x, y) = (x.expect("a"), y.expect("b"));
        assert!(x ^ y, "round {round}: exactly one instance advances (a: {x}, b: {y})");
        let stored = b.get_upload(&id).await.expect("get").expect("session");
        offset = if x { next } else { next + 1 };
        assert_eq!(stored.offset, offset, "the winner's offset is stored");
        assert_eq!(stored.hash_state, state);
    }
    // The session, read from the other instance, continues the hash.
    let got = a.get_upload(&id).await.expect("get").expect("session");
    assert!(Digester::restore(Algorithm::Sha256, &got.hash_state).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_race_across_instances() {
    let pg = PgServer::start();
    let (a, b) = two_instances(&pg).await;
    let r = repo("race/tags");
    let layer = Digest::sha256(b"race layer");
    a.link_blob(&r, &layer, 10, no_check()).await.expect("link");
    // Immutable tag created by two instances at once with different images: exactly one wins, the
    // other is refused and stores nothing.
    for round in 0..20 {
        let t = tag(&format!("v{round}"));
        let (ma, mb) =
            (manifest(&format!("a{round}"), vec![layer.clone()]), manifest(&format!("b{round}"), vec![layer.clone()]));
        let other = tag(&format!("side{round}"));
        let both = [t.clone(), other.clone()];
        let (x, y) = tokio::join!(
            a.put_manifest(&r, &ma, &both, std::slice::from_ref(&t)),
            b.put_manifest(&r, &mb, &both, std::slice::from_ref(&t))
        );
        let winner = match (x, y) {
            (Ok(()), Err(MetaError::TagProtected { current, .. })) => {
                assert_eq!(current, ma.digest);
                &ma
            }
            (Err(MetaError::TagProtected { current, .. }), Ok(())) => {
                assert_eq!(current, mb.digest);
                &mb
            }
            other => panic!("round {round}: expected one success and one TagProtected, got {other:?}"),
        };
        assert_eq!(b.resolve_tag(&r, &t).await.expect("resolve"), Some(winner.digest.clone()));
        assert_eq!(a.resolve_tag(&r, &other).await.expect("resolve"), Some(winner.digest.clone()), "all or nothing");
    }
    // A mutable tag moved by both instances many times ends on the last writer, consistently.
    let moves = 30;
    let (ra, rb) = (r.clone(), r.clone());
    let (la, lb) = (layer.clone(), layer.clone());
    let (sa, sb) = (a.clone(), b.clone());
    let ta = tokio::spawn(async move {
        for i in 0..moves {
            sa.put_manifest(&ra, &manifest(&format!("ma{i}"), vec![la.clone()]), &[tag("latest")], &[])
                .await
                .expect("a");
        }
    });
    let tb = tokio::spawn(async move {
        for i in 0..moves {
            sb.put_manifest(&rb, &manifest(&format!("mb{i}"), vec![lb.clone()]), &[tag("latest")], &[])
                .await
                .expect("b");
        }
    });
    ta.await.expect("a");
    tb.await.expect("b");
    let latest = a.resolve_tag(&r, &tag("latest")).await.expect("resolve").expect("tagged");
    let rec = b.tag_records(&r).await.expect("records").into_iter().find(|t| t.tag == "latest").expect("latest");
    assert_eq!(rec.digest, latest);
    assert!(
        latest == manifest(&format!("ma{}", moves - 1), vec![]).digest
            || latest == manifest(&format!("mb{}", moves - 1), vec![]).digest,
        "the tag ends on one instance's last push"
    );
    // A conditional delete on one instance loses to a move made on the other since it read the tag.
    b.put_manifest(&r, &manifest("final", vec![layer.clone()]), &[tag("latest")], &[]).await.expect("move");
    assert!(!a.delete_tag_if(&r, &tag("latest"), &latest, rec.updated_at).await.expect("stale"));
    let now = a.tag_records(&r).await.expect("records").into_iter().find(|t| t.tag == "latest").expect("latest");
    assert!(a.delete_tag_if(&r, &tag("latest"), &now.digest, now.updated_at).await.expect("current"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linking_waits_for_a_sweep_on_another_instance() {
    let pg = PgServer::start();
    let (a, b) = two_instances(&pg).await;
    let r = repo("race/sweep");
    let d = Digest::sha256(b"swept blob");
    // Recorded but linked nowhere: the sweep may take it.
    a.link_blob(&r, &d, 5, no_check()).await.expect("link");
    assert!(a.unlink_blob(&r, &d).await.expect("unlink"));

    // "Bytes on disk", shared by both instances' callbacks.
    let present = Arc::new(AtomicBool::new(true));
    let sweeping = Arc::new(AtomicBool::new(false));
    let (p, s) = (present.clone(), sweeping.clone());
    let sweep = tokio::spawn({
        let (a, d) = (a.clone(), d.clone());
        async move {
            a.sweep_blob(
                &d,
                Box::new(move || {
                    s.store(true, Ordering::SeqCst);
                    // Deleting the bytes takes a while; the other instance's link must wait for it.
                    std::thread::sleep(Duration::from_millis(400));
                    p.store(false, Ordering::SeqCst);
                    Ok(true)
                }),
            )
            .await
        }
    });
    while !sweeping.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let p = present.clone();
    let linked = b
        .link_blob(
            &r,
            &d,
            5,
            Box::new(move || if p.load(Ordering::SeqCst) { Ok(()) } else { Err("the bytes are gone".into()) }),
        )
        .await;
    assert_eq!(sweep.await.expect("sweep").expect("sweep"), SweepOutcome::Removed);
    assert!(
        matches!(linked, Err(MetaError::Precondition(ref why)) if why == "the bytes are gone"),
        "the link ran after the sweep and saw the bytes gone: {linked:?}"
    );
    assert_eq!(b.repo_blob_size(&r, &d).await.expect("size"), None, "no link to swept bytes");
    assert_eq!(b.blob_size(&d).await.expect("size"), None);

    // The other order: a link committed first keeps the blob from the sweep.
    let e = Digest::sha256(b"kept blob");
    b.link_blob(&r, &e, 3, no_check()).await.expect("link");
    let touched = Arc::new(AtomicBool::new(false));
    let t = touched.clone();
    let outcome = a
        .sweep_blob(
            &e,
            Box::new(move || {
                t.store(true, Ordering::SeqCst);
                Ok(true)
            }),
        )
        .await
        .expect("sweep");
    assert_eq!(outcome, SweepOutcome::Linked);
    assert!(!touched.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_garbage_collector_at_a_time() {
    let pg = PgServer::start();
    let (a, b) = two_instances(&pg).await;
    let (x, y) = tokio::join!(a.try_gc_lock(), b.try_gc_lock());
    let (x, y) = (x.expect("a"), y.expect("b"));
    assert!(x.is_some() ^ y.is_some(), "exactly one instance gets the lock");
    let (held, other) = if x.is_some() { (x, &b) } else { (y, &a) };
    assert!(other.try_gc_lock().await.expect("try").is_none(), "still held");
    drop(held);
    let mut got = None;
    for _ in 0..100 {
        got = other.try_gc_lock().await.expect("try");
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(got.is_some(), "released when dropped");

    // A holder that dies (its session is killed) releases it too.
    pg.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1164866560 AND objid = 2",
    );
    let mut again = None;
    for _ in 0..100 {
        again = a.try_gc_lock().await.expect("try");
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "released when the holder's session dies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_metadata_moves_to_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meta.db");
    let src = SqliteMetaStore::open(&path).await.expect("sqlite");
    let r = repo("team/app");
    let (cfg, layer) = (Digest::sha256(b"cfg"), Digest::sha256(b"layer"));
    src.link_blob(&r, &cfg, 3, no_check()).await.expect("link");
    src.link_blob(&r, &layer, 5, no_check()).await.expect("link");
    src.link_blob(&repo("other"), &layer, 5, no_check()).await.expect("link");
    let m = manifest("image", vec![cfg.clone(), layer.clone()]);
    src.put_manifest(&r, &m, &[tag("1.0"), tag("latest")], &[]).await.expect("put");
    let mut sig = manifest("signature", vec![]);
    sig.subject = Some(m.digest.clone());
    sig.artifact_type = Some("application/x-sig".into());
    sig.annotations = Some(r#"{"a":"b"}"#.into());
    src.put_manifest(&r, &sig, &[], &[]).await.expect("referrer");
    let mut h = Digester::new(Algorithm::Sha512);
    h.update(b"partial");
    let up = UploadSession {
        id: UploadId::parse("moving-upload").expect("id"),
        repo: r.clone(),
        algorithm: Algorithm::Sha512,
        offset: 7,
        hash_state: h.save(),
        created_at: 100,
        updated_at: 200,
    };
    src.create_upload(&up).await.expect("upload");
    let d = |e: &str, id: &str| NewDelivery { endpoint: e.into(), event_id: id.into(), body: id.as_bytes().to_vec() };
    src.enqueue(&[d("hook", "e1"), d("hook", "e2"), d("hook", "e3")], 1_000).await.expect("enqueue");
    let queued = src.pending("hook", 10).await.expect("pending");
    assert!(src.delivered(queued[2].seq).await.expect("delivered"), "the newest is delivered: its seq stays used");
    assert!(src.give_up(queued[1].seq, 5, "HTTP 500").await.expect("give up"));
    let usage_before = src.all_usage().await.expect("usage");
    src.set_setting("read_only", Some("true")).await.expect("the embedded registry is read-only");
    drop(src);

    let pg = PgServer::start();
    let url = pg.create_database();
    let dst = PgMetaStore::connect(&url).await.expect("pg");
    let report = entrepot_meta::migrate::sqlite_to_postgres(&path, &dst).await.expect("migrate");
    assert_eq!(report.count("repositories"), 2);
    assert_eq!(report.count("blobs"), 2);
    assert_eq!(report.count("repo_blobs"), 3);
    assert_eq!(report.count("manifests"), 2);
    assert_eq!(report.count("manifest_refs"), 2);
    assert_eq!(report.count("tags"), 2);
    assert_eq!(report.count("uploads"), 1);
    assert_eq!(report.count("event_outbox"), 2);
    // Run-time settings (the read-only switch of the registry being left) are deliberately not copied.
    assert_eq!(dst.setting("read_only").await.expect("setting"), None);

    // Everything reads back through the PostgreSQL store as it was.
    assert_eq!(dst.all_usage().await.expect("usage"), usage_before);
    assert_eq!(dst.resolve_tag(&r, &tag("1.0")).await.expect("tag"), Some(m.digest.clone()));
    assert_eq!(dst.get_manifest(&r, &m.digest).await.expect("get").expect("manifest").content, m.content);
    let refs = dst.referrers(&r, &m.digest).await.expect("referrers");
    assert_eq!(refs.len(), 1);
    assert_eq!(
        (refs[0].artifact_type.as_deref(), refs[0].annotations.as_deref()),
        (Some("application/x-sig"), Some(r#"{"a":"b"}"#))
    );
    assert_eq!(dst.get_upload(&up.id).await.expect("upload"), Some(up.clone()));
    let pending = dst.pending("hook", 10).await.expect("pending");
    assert_eq!(pending.iter().map(|x| (x.seq, x.event_id.as_str())).collect::<Vec<_>>(), vec![(queued[0].seq, "e1")]);
    assert_eq!(dst.failed("hook", 10).await.expect("failed")[0].attempts, 5);
    // References were copied: a blob of the manifest cannot be collected from under it.
    let policy = entrepot_meta::ManifestGcPolicy { cutoff: i64::MAX, delete_untagged: true, dry_run: true };
    let (gone, links) = dst.gc_repository(&r, &policy).await.expect("gc");
    assert!(gone.is_empty() && links.is_empty(), "{gone:?} {links:?}");
    // Sequence numbers continue after the highest SQLite ever gave.
    dst.enqueue(&[d("hook", "e4")], 2_000).await.expect("enqueue");
    let newest = dst.pending("hook", 10).await.expect("pending").pop().expect("e4");
    assert!(newest.seq > queued[2].seq, "{} after {}", newest.seq, queued[2].seq);

    // A target that holds data is refused, and left as it was.
    let err = entrepot_meta::migrate::sqlite_to_postgres(&path, &dst).await.expect_err("not empty");
    assert!(matches!(err, MetaError::Precondition(_)), "{err:?}");
    assert_eq!(dst.counts().await.expect("counts").pending, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_database_restart() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let store = PgMetaStore::connect(&url).await.expect("connect");
    let r = repo("restart/app");
    store.link_blob(&r, &Digest::sha256(b"1"), 1, no_check()).await.expect("link");
    // Every pooled connection dies (as when the server restarts or a proxy drops them).
    let name = url.rsplit('/').next().expect("db").to_string();
    pg.psql("postgres", &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Dead connections are dropped and replaced; at most one call sees the broken one.
    let failures = AtomicUsize::new(0);
    for _ in 0..3 {
        if store.repo_blob_size(&r, &Digest::sha256(b"1")).await.is_err() {
            failures.fetch_add(1, Ordering::SeqCst);
        }
    }
    assert!(failures.load(Ordering::SeqCst) <= 1);
    assert_eq!(store.repo_blob_size(&r, &Digest::sha256(b"1")).await.expect("size"), Some(1));
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_verify_the_server() {
    // A CA and a server certificate for 127.0.0.1, made with the openssl command.
    let certs = tempfile::tempdir().expect("tempdir");
    let dir = certs.path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca =
        vec!["req", "-x509", "-days", "2", "-subj", "/CN=entrepot test CA", "-keyout", "ca.key", "-out", "ca.pem"];
    ca.extend(ec);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-new", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"];
    csr.extend(ec);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    for f in ["server.key", "server.pem"] {
        entrepot_meta::pgtest::give_to_server(&dir.join(f));
    }
    entrepot_meta::pgtest::give_to_server(dir);
    let pg = PgServer::start_with_options(&format!(
        "-c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key",
        dir.display()
    ));
    let url = pg.create_database();
    let name = url.rsplit('/').next().expect("db").to_string();

    // Verified against the given CA: connects, and the session is encrypted.
    let ca_path = dir.join("ca.pem");
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={}", ca_path.display());
    let store = PgMetaStore::connect(&verified).await.expect("TLS connection verified by sslrootcert");
    store.link_blob(&repo("tls/app"), &Digest::sha256(b"t"), 1, no_check()).await.expect("link over TLS");
    let encrypted = pg.psql(
        &name,
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.application_name = 'entrepot'",
    );
    assert!(encrypted.trim().parse::<u32>().expect("count") >= 1, "an entrepot session uses TLS");

    // `require` without the CA: the server cannot be verified, so the connection is refused.
    let err = PgMetaStore::connect(&format!("{url}?sslmode=require")).await.expect_err("unverifiable server");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
    // Plain text still works where the server allows it (`prefer` is plain here).
    PgMetaStore::connect(&url).await.expect("plain");
}
