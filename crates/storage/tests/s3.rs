//! The S3 backend against a real SeaweedFS started by the test process (`s3::testsupport`): the shared
//! conformance suite, then what is specific to S3 — tiny and huge chunks with bounded memory, uploads
//! continued by another store instance, rewrites from an earlier offset, crash recovery mid-commit,
//! range reads, presigned URLs, orphan listing, and retries against a local server that fails first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use entrepot_oci::{Algorithm, ByteRange, Digest, Digester, UploadId};
use entrepot_storage::s3::testsupport::{SeaweedFs, unique_bucket};
use entrepot_storage::s3::{MIN_PART_SIZE, S3BlobStore, S3Config};
use entrepot_storage::{BlobStore, ByteStream, StorageError};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

fn bucket() -> &'static str {
    static B: OnceLock<String> = OnceLock::new();
    B.get_or_init(|| unique_bucket("storage-tests"))
}

/// A config on the shared server and bucket, under a prefix of its own, with the smallest parts S3
/// allows (so that a few MiB exercise several parts).
fn config(prefix: &str) -> S3Config {
    let mut cfg = SeaweedFs::shared().config(bucket());
    cfg.prefix = format!("{prefix}-{}/", std::process::id());
    cfg.part_size = MIN_PART_SIZE;
    cfg
}

async fn store(prefix: &str) -> S3BlobStore {
    SeaweedFs::shared().store(config(prefix)).await
}

fn stream_of(chunks: Vec<Bytes>) -> ByteStream {
    Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)))
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn read_all(store: &dyn BlobStore, d: &Digest, range: Option<ByteRange>) -> Vec<u8> {
    let mut s = store.read(d, range).await.expect("read");
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("chunk"));
    }
    out
}

fn id(s: &str) -> UploadId {
    UploadId::parse(s).expect("upload id")
}

/// Writes `bytes` at `offset` with the hasher state saved from the previous write.
async fn write(store: &S3BlobStore, u: &UploadId, offset: u64, chunks: Vec<Bytes>, state: &[u8]) -> (u64, Vec<u8>) {
    let h = Digester::restore(Algorithm::Sha256, state).expect("restore");
    let (n, h) = store.upload_write(u, offset, stream_of(chunks), h).await.expect("write");
    (offset + n, h.save())
}

#[tokio::test]
async fn conformance() {
    let s = store("conformance").await;
    entrepot_storage::testsuite::run_all(&s).await;
    assert!(s.buffer_high_water() <= MIN_PART_SIZE);
}

#[tokio::test]
async fn conformance_virtual_host_style() {
    let weed = SeaweedFs::shared();
    // The bucket is created path-style, then used through `<bucket>.s3.test`.
    store("vhost").await;
    let mut cfg = weed.virtual_host_config(bucket());
    cfg.prefix = format!("vhost-{}/", std::process::id());
    let s = S3BlobStore::new(cfg).expect("store");
    entrepot_storage::testsuite::run_all(&s).await;
    let d = Digest::sha256(b"hello, blob store");
    let url = s.presigned_get(&d, Duration::from_secs(60));
    assert!(url.starts_with(&format!("http://{}.s3.test:{}/vhost-", bucket(), weed.s3_port)), "{url}");
    // The same objects seen path-style: the addressing changed, not the keys.
    assert_eq!(store("vhost").await.stat(&d).await.expect("stat"), Some(17));
}

#[tokio::test]
async fn hundred_tiny_patches_alternating_instances() {
    let a = store("tiny").await;
    let b = S3BlobStore::new(config("tiny")).expect("second instance");
    let body = data(100 * 1024, 1);
    let u = id("tiny-patches");
    a.upload_create(&u).await.expect("create");
    let (mut offset, mut state) = (0u64, Digester::new(Algorithm::Sha256).save());
    for (i, chunk) in body.chunks(1024).enumerate() {
        let s = if i % 2 == 0 { &a } else { &b };
        (offset, state) = write(s, &u, offset, vec![Bytes::copy_from_slice(chunk)], &state).await;
    }
    assert_eq!(offset, body.len() as u64);
    let d = Digester::restore(Algorithm::Sha256, &state).expect("restore").finish();
    assert_eq!(d, Digest::sha256(&body));
    assert_eq!(b.upload_info(&u).await.expect("info").expect("staged").size, body.len() as u64);
    b.upload_commit(&u, offset, &d).await.expect("commit");
    assert_eq!(read_all(&a, &d, None).await, body);
    assert!(a.list_uploads().await.expect("uploads").is_empty(), "commit removed the staging objects");
    assert!(a.buffer_high_water() <= MIN_PART_SIZE && b.buffer_high_water() <= MIN_PART_SIZE);
}

#[tokio::test]
async fn huge_chunk_memory_is_bounded_and_another_instance_finishes() {
    let a = store("huge").await;
    let body = data(20 * MIB + 12_345, 2);
    let u = id("huge-chunk");
    a.upload_create(&u).await.expect("create");
    // One 13 MiB chunk (a client sending a big PATCH in one piece, or a proxy that buffered it).
    let first = 13 * MIB + 7;
    let (offset, state) =
        write(&a, &u, 0, vec![Bytes::copy_from_slice(&body[..first])], &Digester::new(Algorithm::Sha256).save()).await;
    assert!(a.buffer_high_water() <= MIN_PART_SIZE, "high water {}", a.buffer_high_water());
    assert!(a.buffer_high_water() > MIN_PART_SIZE / 2, "parts were buffered whole");

    // A fresh instance (another registry process) continues from the recorded offset...
    let b = S3BlobStore::new(config("huge")).expect("second instance");
    let rest: Vec<Bytes> = body[first..].chunks(999_999).map(Bytes::copy_from_slice).collect();
    let (offset, state) = write(&b, &u, offset, rest, &state).await;
    assert_eq!(offset, body.len() as u64);
    assert!(b.buffer_high_water() <= MIN_PART_SIZE);
    let d = Digester::restore(Algorithm::Sha256, &state).expect("restore").finish();
    assert_eq!(d, Digest::sha256(&body));

    // ...and a third one commits it.
    let c = S3BlobStore::new(config("huge")).expect("third instance");
    c.upload_commit(&u, offset, &d).await.expect("commit");
    assert_eq!(a.stat(&d).await.expect("stat"), Some(body.len() as u64));
    assert!(read_all(&a, &d, None).await == body, "bytes differ");

    // Range reads, across part boundaries and at the ends.
    for (start, len) in [(0, 1), (MIN_PART_SIZE as u64 - 10, 20), (17, 3 * MIB as u64), (body.len() as u64 - 5, 5)] {
        let got = read_all(&a, &d, Some(ByteRange { start, len })).await;
        assert!(got == body[start as usize..(start + len) as usize], "range {start}+{len}");
    }
}

#[tokio::test]
async fn multipart_copy_above_the_single_copy_limit() {
    let mut cfg = config("bigcopy");
    cfg.max_single_copy = MIN_PART_SIZE as u64; // so a 12 MiB blob is copied in parts
    let s = SeaweedFs::shared().store(cfg).await;
    let body = data(12 * MIB + 1, 3);
    let u = id("big-copy");
    s.upload_create(&u).await.expect("create");
    let (n, h) = s
        .upload_write(&u, 0, stream_of(vec![Bytes::from(body.clone())]), Digester::new(Algorithm::Sha256))
        .await
        .expect("write");
    let d = h.finish();
    s.upload_commit(&u, n, &d).await.expect("commit");
    assert!(read_all(&s, &d, None).await == body);
    // Quarantine copies in parts too.
    let place = s.quarantine(&d).await.expect("quarantine").expect("stored");
    assert!(place.starts_with(&format!("s3://{}/", bucket())), "{place}");
    assert_eq!(s.stat(&d).await.expect("stat"), None);
}

#[tokio::test]
async fn rewrite_from_an_earlier_offset_discards_parts_and_tail() {
    let s = store("rewrite").await;
    let body = data(9 * MIB, 4);
    let u = id("rewrite");
    s.upload_create(&u).await.expect("create");
    let o1 = 3 * MIB;
    let (offset, state) =
        write(&s, &u, 0, vec![Bytes::copy_from_slice(&body[..o1])], &Digester::new(Algorithm::Sha256).save()).await;

    // A write that went on past a part boundary (part 1 uploaded with junk, a junk tail written) but
    // whose new offset was never recorded...
    let junk = Bytes::from(vec![0xEE; 4 * MIB]);
    write(&s, &u, offset, vec![junk.clone()], &state).await;
    // ...and one that failed mid-way after a whole part of junk.
    let failing: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::from(vec![0xDD; 6 * MIB])),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away")),
    ]));
    let r = s.upload_write(&u, offset, failing, Digester::restore(Algorithm::Sha256, &state).expect("restore")).await;
    assert!(matches!(r, Err(StorageError::Interrupted(_))), "{:?}", r.map(|(n, _)| n));

    // The client resumes at the recorded offset, from another instance.
    let other = S3BlobStore::new(config("rewrite")).expect("instance");
    let rest: Vec<Bytes> = body[o1..].chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    let (offset, state) = write(&other, &u, offset, rest, &state).await;
    let d = Digester::restore(Algorithm::Sha256, &state).expect("restore").finish();
    assert_eq!(d, Digest::sha256(&body));
    let dir = format!("{}uploads/rewrite/", s.config().prefix);
    assert_eq!(s.client().list_multipart(&dir).await.expect("uploads").len(), 1, "one multipart upload, shared");
    s.upload_commit(&u, offset, &d).await.expect("commit");
    assert!(read_all(&s, &d, None).await == body, "the junk was discarded");

    // A short write over a longer unrecorded one inside the first part: the tail is cut back.
    let u = id("rewrite-short");
    s.upload_create(&u).await.expect("create");
    let h0 = Digester::new(Algorithm::Sha256).save();
    let (o, st) = write(&s, &u, 0, vec![Bytes::from_static(b"hello ")], &h0).await;
    write(&s, &u, o, vec![Bytes::from_static(b"JUNK JUNK JUNK")], &st).await;
    let (o, st) = write(&s, &u, o, vec![Bytes::from_static(b"world")], &st).await;
    let d = Digester::restore(Algorithm::Sha256, &st).expect("restore").finish();
    s.upload_commit(&u, o, &d).await.expect("commit");
    assert_eq!(read_all(&s, &d, None).await, b"hello world");
}

#[tokio::test]
async fn commit_recovers_after_a_crash_mid_commit() {
    let s = store("crashcommit").await;
    let body = data(7 * MIB + 3, 5);
    let u = id("crash-commit");
    s.upload_create(&u).await.expect("create");
    let (n, h) = s
        .upload_write(&u, 0, stream_of(vec![Bytes::from(body.clone())]), Digester::new(Algorithm::Sha256))
        .await
        .expect("write");
    let d = h.finish();
    // Do the first half of a commit by hand, as a process that died right after completing the
    // multipart upload would have left it: part 2 from the tail, completion at `data`.
    let c = s.client();
    let dir = format!("{}uploads/crash-commit/", s.config().prefix);
    let uploads = c.list_multipart(&dir).await.expect("uploads");
    let up = uploads.iter().find(|x| x.key.ends_with("/data")).expect("multipart upload");
    let parts = c.list_parts(&up.key, &up.upload_id).await.expect("parts").expect("upload exists");
    assert_eq!(parts.len(), 1);
    let tail = body[MIN_PART_SIZE..].to_vec();
    let e2 = c.upload_part(&up.key, &up.upload_id, 2, Bytes::from(tail)).await.expect("part 2");
    c.complete_multipart(&up.key, &up.upload_id, &[(1, parts[0].etag.clone()), (2, e2)]).await.expect("complete");
    assert_eq!(s.stat(&d).await.expect("stat"), None, "nothing visible yet");

    // Any instance finishes the commit.
    let other = S3BlobStore::new(config("crashcommit")).expect("instance");
    other.upload_commit(&u, n, &d).await.expect("commit after crash");
    assert!(read_all(&s, &d, None).await == body);
    assert!(s.list_uploads().await.expect("uploads").is_empty());
    // A second commit (the registry retrying after a crash before it linked the blob) finds nothing
    // staged, and the blob in place.
    assert!(matches!(s.upload_commit(&u, n, &d).await, Err(StorageError::UploadNotFound)));
    assert_eq!(s.stat(&d).await.expect("stat"), Some(n));
}

#[tokio::test]
async fn orphans_without_marker_are_listed_and_removed() {
    let s = store("orphans").await;
    let c = s.client();
    let dir = format!("{}uploads/orphan-1/", s.config().prefix);
    // What an abort that crashed after deleting the marker could leave: a multipart upload and a tail.
    let up = c.create_multipart(&format!("{dir}data")).await.expect("create");
    c.upload_part(&format!("{dir}data"), &up, 1, Bytes::from_static(b"abc")).await.expect("part");
    c.put(&format!("{dir}tail-0000000001"), Bytes::from_static(b"tail")).await.expect("tail");
    let o = id("orphan-1");
    assert_eq!(s.list_uploads().await.expect("list"), vec![o.clone()]);
    let info = s.upload_info(&o).await.expect("info").expect("something staged");
    assert_eq!(info.size, 7);
    let r = s.upload_write(&o, 0, stream_of(vec![Bytes::from_static(b"x")]), Digester::new(Algorithm::Sha256)).await;
    assert!(matches!(r, Err(StorageError::UploadNotFound)), "no marker: not a live upload");
    s.upload_abort(&o).await.expect("abort");
    assert!(s.list_uploads().await.expect("list").is_empty());
    assert_eq!(s.upload_info(&o).await.expect("info"), None);
    assert!(c.list_multipart(&dir).await.expect("uploads").is_empty());
}

#[tokio::test]
async fn presigned_urls_work_for_plain_clients() {
    let mut cfg = config("presign");
    cfg.redirect = true;
    cfg.presign_ttl = Duration::from_secs(300);
    let s = SeaweedFs::shared().store(cfg).await;
    let body = data(300_000, 6);
    let u = id("presign");
    s.upload_create(&u).await.expect("create");
    let (n, h) = s
        .upload_write(&u, 0, stream_of(vec![Bytes::from(body.clone())]), Digester::new(Algorithm::Sha256))
        .await
        .expect("write");
    let d = h.finish();
    s.upload_commit(&u, n, &d).await.expect("commit");

    let url = s.redirect_url(&d).expect("redirects are on");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let plain = reqwest::Client::new();
    let resp = plain.get(&url).send().await.expect("GET");
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.expect("body") == body);
    let resp = plain.get(&url).header("range", "bytes=10-19").send().await.expect("GET range");
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.expect("body"), &body[10..20]);

    // A tampered URL is refused; so is one whose time is up.
    let bad = format!("{}0", &url[..url.len() - 1]);
    let bad = if bad == url { format!("{}1", &url[..url.len() - 1]) } else { bad };
    assert_eq!(plain.get(&bad).send().await.expect("GET").status(), 403);
    let expired = s.presigned_get(&d, Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(plain.get(&expired).send().await.expect("GET").status(), 403);

    // Without `redirect`, the store serves the bytes itself.
    let off = S3BlobStore::new(config("presign")).expect("store");
    assert_eq!(off.redirect_url(&d), None);
}

/// A loopback TCP front for the S3 server: the first connection is dropped without an answer, the
/// next `fail` requests get `503 SlowDown`, and everything after is forwarded byte for byte.
async fn flaky_front(upstream: u16, fail: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let n = seen2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if n == 0 {
                    return; // connection reset, no answer
                }
                // Read one request head (the failing requests the store sends have no body).
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                if n <= fail {
                    while !head.ends_with(b"\r\n\r\n") {
                        if conn.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let body =
                        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                    let resp = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                    return;
                }
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn retries_connection_errors_and_slowdown() {
    // Make sure the bucket exists first, directly.
    store("retry").await;
    let (endpoint, seen) = flaky_front(SeaweedFs::shared().s3_port, 2).await;
    let mut cfg = config("retry");
    cfg.endpoint = endpoint;
    cfg.retry_base = Duration::from_millis(20);
    let s = S3BlobStore::new(cfg).expect("store");
    // The signature covers the Host header, which the front forwards unchanged: requests pass.
    let d = Digest::sha256(b"never stored");
    assert_eq!(s.stat(&d).await.expect("stat after retries"), None);
    assert_eq!(s.client().retries(), 3, "one reset and two 503s were retried");
    assert!(seen.load(Ordering::SeqCst) >= 4);
    let u = id("retry");
    s.upload_create(&u).await.expect("create");
    let (n, h) = s
        .upload_write(
            &u,
            0,
            stream_of(vec![Bytes::from_static(b"through the front")]),
            Digester::new(Algorithm::Sha256),
        )
        .await
        .expect("write");
    let d = h.finish();
    s.upload_commit(&u, n, &d).await.expect("commit");
    assert_eq!(read_all(&s, &d, None).await, b"through the front");

    // A server that never recovers: bounded attempts, then the error.
    let (endpoint, seen) = flaky_front(SeaweedFs::shared().s3_port, usize::MAX).await;
    let mut cfg = config("retry");
    cfg.endpoint = endpoint;
    cfg.retry_base = Duration::from_millis(10);
    cfg.max_attempts = 4;
    let s = S3BlobStore::new(cfg).expect("store");
    let e = s.list().await.expect_err("gives up");
    assert!(e.to_string().contains("503") && e.to_string().contains("SlowDown"), "{e}");
    assert_eq!(seen.load(Ordering::SeqCst), 4, "exactly max_attempts requests");
}

#[test]
fn blocking_calls_from_a_plain_thread() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(store("blocking"));
    let u = id("blocking");
    let d = rt.block_on(async {
        s.upload_create(&u).await.expect("create");
        let (n, h) = s
            .upload_write(&u, 0, stream_of(vec![Bytes::from_static(b"blocking")]), Digester::new(Algorithm::Sha256))
            .await
            .expect("write");
        let d = h.finish();
        s.upload_commit(&u, n, &d).await.expect("commit");
        d
    });
    let s2 = s.clone();
    let d2 = d.clone();
    // As the metadata store's writer thread calls them: a thread outside any runtime.
    std::thread::spawn(move || {
        assert_eq!(s2.blob_info_blocking(&d2).expect("info").map(|i| i.size), Some(8));
        assert!(s2.delete_blocking(&d2).expect("delete"));
        assert!(!s2.delete_blocking(&d2).expect("delete again"));
        assert_eq!(s2.blob_info_blocking(&d2).expect("info"), None);
    })
    .join()
    .expect("thread");
    // And from a blocking-pool thread of the runtime.
    let s3 = s.clone();
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || s3.blob_info_blocking(&d)).await.expect("join").expect("info")
    });
}

/// An https front for the S3 server: TLS with a certificate for `localhost` / `127.0.0.1` from a CA of
/// its own (written as PEM to `ca.pem` in `dir`), forwarding the plaintext to the S3 port.
async fn tls_front(upstream: u16, dir: &std::path::Path) -> (String, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("certificate");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("write ca.pem");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else { return };
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (format!("https://localhost:{port}"), ca_path)
}

#[tokio::test]
async fn https_endpoint_with_a_private_ca() {
    store("https").await; // the bucket exists
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, ca) = tls_front(SeaweedFs::shared().s3_port, dir.path()).await;

    // Without the CA the certificate is refused (after the retries a TLS failure gets).
    let mut cfg = config("https");
    cfg.endpoint = endpoint.clone();
    cfg.max_attempts = 1;
    let untrusted = S3BlobStore::new(cfg.clone()).expect("store");
    let e = untrusted.stat(&Digest::sha256(b"x")).await.expect_err("unknown CA");
    assert!(format!("{e:?}").to_lowercase().contains("certificate"), "{e:?}");

    cfg.ca_bundle = Some(ca);
    let s = S3BlobStore::new(cfg).expect("store");
    let u = id("https");
    s.upload_create(&u).await.expect("create");
    let body = data(6 * MIB, 9);
    let (n, h) = s
        .upload_write(&u, 0, stream_of(vec![Bytes::from(body.clone())]), Digester::new(Algorithm::Sha256))
        .await
        .expect("write over https");
    let d = h.finish();
    s.upload_commit(&u, n, &d).await.expect("commit over https");
    assert!(read_all(&s, &d, None).await == body);

    let mut bad = config("https");
    bad.ca_bundle = Some(dir.path().join("missing.pem"));
    assert!(matches!(S3BlobStore::new(bad), Err(entrepot_storage::s3::S3Error::Config(_))));
}
