//! Several instances on one PostgreSQL: a real PostgreSQL 15 (started by the test,
//! `entrepot_meta::pgtest`) and two `entrepot serve` processes sharing it and one data directory.
//!
//! - an image pushed to one instance is pulled, byte for byte, from the other;
//! - a chunked upload whose PATCHes alternate between the instances, finished on either;
//! - an instance SIGKILLed in the middle of a PATCH: the client asks the other where the upload is and
//!   completes it there;
//! - `entrepot gc` runs against the shared database, again and again, while images are pushed to both
//!   instances: every pushed image stays whole, and garbage is still reclaimed;
//! - `entrepot migrate-meta` moves an embedded registry's metadata into PostgreSQL, and a server on the
//!   database serves what was pushed before; a second run is refused.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use entrepot_meta::pgtest::PgServer;
use sha2::{Digest as _, Sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// One `entrepot serve` process on the shared data directory and database.
struct Instance {
    child: Option<Child>,
    base: String,
}

impl Instance {
    fn start(data: &Path, database_url: Option<&str>, extra: &[&str]) -> Instance {
        let mut cmd = Command::new(support::entrepot_bin());
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(data).args(extra);
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        let mut child = cmd
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn entrepot");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!("entrepot did not start: {line:?}");
        };
        Instance { base: format!("http://{addr}"), child: Some(child) }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

fn client() -> reqwest::Client {
    // reqwest is built with rustls and no crypto provider of its own (see entrepot-storage's `https`).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client")
}

/// Pushes a blob in one request.
async fn push_blob(c: &reqwest::Client, base: &str, repo: &str, bytes: &[u8]) -> String {
    let d = digest(bytes);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(bytes.to_vec())
        .send()
        .await
        .expect("push blob");
    assert_eq!(r.status(), 201, "push blob to {base}: {}", r.text().await.unwrap_or_default());
    d
}

fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let desc = |mt: &str, b: &[u8]| serde_json::json!({"mediaType": mt, "digest": digest(b), "size": b.len()});
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    }))
    .expect("json")
}

/// An image: config, layers and manifest bytes.
struct Image {
    repo: String,
    tag: String,
    blobs: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

fn make_image(repo: &str, tag: &str, seed: &str, shared: &[u8]) -> Image {
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    let layer = format!("layer of {seed};").repeat(500).into_bytes();
    let manifest = image_manifest(&config, &[shared, &layer]);
    Image { repo: repo.into(), tag: tag.into(), blobs: vec![config, shared.to_vec(), layer], manifest }
}

async fn push_image(c: &reqwest::Client, base: &str, img: &Image) -> Result<(), String> {
    for b in &img.blobs {
        push_blob(c, base, &img.repo, b).await;
    }
    let r = c
        .put(format!("{base}/v2/{}/manifests/{}", img.repo, img.tag))
        .header("Content-Type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 201 {
        return Err(format!("manifest PUT: {} {}", r.status(), r.text().await.unwrap_or_default()));
    }
    Ok(())
}

/// Pulls the image by tag from `base` and checks every byte.
async fn check_image(c: &reqwest::Client, base: &str, img: &Image) {
    let r = c
        .get(format!("{base}/v2/{}/manifests/{}", img.repo, img.tag))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .expect("get manifest");
    assert_eq!(r.status(), 200, "manifest {}:{} on {base}", img.repo, img.tag);
    assert_eq!(r.bytes().await.expect("body").as_ref(), img.manifest.as_slice());
    for b in &img.blobs {
        let r = c.get(format!("{base}/v2/{}/blobs/{}", img.repo, digest(b))).send().await.expect("get blob");
        assert_eq!(r.status(), 200, "blob {} of {}:{} on {base}", digest(b), img.repo, img.tag);
        assert_eq!(digest(&r.bytes().await.expect("body")), digest(b));
    }
}

/// `Location` of a response, made absolute against `base`.
fn location(r: &reqwest::Response, base: &str) -> String {
    let l = r.headers().get("location").expect("Location").to_str().expect("ascii").to_string();
    if l.starts_with("http") { l } else { format!("{base}{l}") }
}

/// The path (with query) of an upload URL, to address it on any instance.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_default()
}

async fn patch(c: &reqwest::Client, base: &str, path: &str, start: usize, chunk: &[u8]) -> reqwest::Response {
    c.patch(format!("{base}{path}"))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{}-{}", start, start + chunk.len() - 1))
        .body(chunk.to_vec())
        .send()
        .await
        .expect("patch")
}

fn with_query(path: &str, q: &str) -> String {
    if path.contains('?') { format!("{path}&{q}") } else { format!("{path}?{q}") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_postgres() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let data = tempfile::tempdir().expect("data dir");
    let mut a = Instance::start(data.path(), Some(&url), &[]);
    let b = Instance::start(data.path(), Some(&url), &[]);
    let c = client();
    assert!(!data.path().join("meta.db").exists(), "no SQLite database when the metadata is in PostgreSQL");

    // Pushed to A, pulled from B (and listed there).
    let shared = b"a base layer both instances serve ".repeat(300);
    let img = make_image("team/app", "1.0", "first", &shared);
    push_image(&c, &a.base, &img).await.expect("push to A");
    check_image(&c, &b.base, &img).await;
    let tags: serde_json::Value =
        c.get(format!("{}/v2/team/app/tags/list", b.base)).send().await.expect("tags").json().await.expect("json");
    assert_eq!(tags["tags"], serde_json::json!(["1.0"]));

    // A chunked upload whose PATCHes alternate: A, B, A, then finished on B.
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let r = c.post(format!("{}/v2/team/chunked/blobs/uploads/", a.base)).send().await.expect("start upload");
    assert_eq!(r.status(), 202);
    let mut path = path_of(&location(&r, &a.base));
    let chunks: Vec<&[u8]> = blob.chunks(100_000).collect();
    let mut at = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let r = patch(&c, base, &path, at, chunk).await;
        assert_eq!(r.status(), 202, "PATCH {i} on {base}: {}", r.status());
        at += chunk.len();
        assert_eq!(r.headers()["range"].to_str().expect("range"), format!("0-{}", at - 1));
        path = path_of(&location(&r, base));
    }
    let r = c
        .put(format!("{}{}", b.base, with_query(&path, &format!("digest={}", digest(&blob)))))
        .send()
        .await
        .expect("finish");
    assert_eq!(r.status(), 201, "finish on B");
    let got = c.get(format!("{}/v2/team/chunked/blobs/{}", a.base, digest(&blob))).send().await.expect("get");
    assert_eq!(digest(&got.bytes().await.expect("body")), digest(&blob), "served by A");

    // A killed in the middle of a PATCH; the client asks B where the upload is and completes it there.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8).collect();
    let r = c.post(format!("{}/v2/team/killed/blobs/uploads/", a.base)).send().await.expect("start upload");
    let path0 = path_of(&location(&r, &a.base));
    let first = &big[..1_000_000];
    let r = patch(&c, &a.base, &path0, 0, first).await;
    assert_eq!(r.status(), 202);
    let path1 = path_of(&location(&r, &a.base));
    // The second chunk is streamed slowly to A, which is killed half-way through it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let in_flight = {
        let (c, url) = (c.clone(), format!("{}{}", a.base, path1));
        tokio::spawn(async move {
            c.patch(url)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", "1000000-1999999")
                .header("Content-Length", "1000000")
                .body(body)
                .send()
                .await
        })
    };
    tx.send(Ok(big[1_000_000..1_400_000].to_vec())).await.expect("send part");
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill();
    drop(tx);
    if let Ok(r) = in_flight.await.expect("task") {
        assert_ne!(r.status(), 202, "the interrupted PATCH was not acknowledged");
    }
    let status = c.get(format!("{}{}", b.base, path1)).send().await.expect("status");
    assert_eq!(status.status(), 204);
    let range = status.headers()["range"].to_str().expect("range").to_string();
    let done: usize = range.rsplit('-').next().expect("end").parse::<usize>().expect("number") + 1;
    assert_eq!(done, 1_000_000, "only the acknowledged chunk counts: {range}");
    let r = patch(&c, &b.base, &path1, done, &big[done..]).await;
    assert_eq!(r.status(), 202, "continued on B");
    let p = path_of(&location(&r, &b.base));
    let r = c
        .put(format!("{}{}", b.base, with_query(&p, &format!("digest={}", digest(&big)))))
        .send()
        .await
        .expect("finish");
    assert_eq!(r.status(), 201, "finished on B");
    let got = c.get(format!("{}/v2/team/killed/blobs/{}", b.base, digest(&big))).send().await.expect("get");
    assert_eq!(digest(&got.bytes().await.expect("body")), digest(&big));

    // A comes back on the same database and serves everything.
    let a = Instance::start(data.path(), Some(&url), &[]);
    check_image(&c, &a.base, &img).await;

    // `entrepot gc` on the shared database again and again while pushes go to B (and A).
    let garbage = b"an unreferenced blob, collectable after the grace period".to_vec();
    push_blob(&c, &b.base, "team/garbage", &garbage).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let gc = {
        let (stop, dir, url) = (stop.clone(), data.path().to_path_buf(), url.clone());
        tokio::task::spawn_blocking(move || {
            let mut runs = 0;
            let mut removed = 0u64;
            while !stop.load(Ordering::SeqCst) || runs == 0 {
                let out = Command::new(support::entrepot_bin())
                    .args(["gc", "--grace", "1s", "--delete-untagged", "--quiet", "--data-dir"])
                    .arg(&dir)
                    .arg("--database-url")
                    .arg(&url)
                    .output()
                    .expect("run entrepot gc");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(out.status.success(), "entrepot gc: {text}{}", String::from_utf8_lossy(&out.stderr));
                // "  blobs removed  N, ..."
                if let Some(line) = text.lines().find(|l| l.trim_start().starts_with("blobs removed")) {
                    removed += line
                        .trim_start()
                        .trim_start_matches("blobs removed")
                        .trim()
                        .split(',')
                        .next()
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                }
                runs += 1;
            }
            (runs, removed)
        })
    };
    let mut pushed = Vec::new();
    for i in 0..24 {
        let img = make_image(&format!("race/r{}", i % 4), &format!("t{i}"), &format!("race {i}"), &shared);
        let base = if i % 3 == 0 { &a.base } else { &b.base };
        // A push may be refused cleanly if the collector took a blob link older than the grace period
        // just before the manifest came; the client retries, as registries' clients do.
        let mut ok = false;
        for _ in 0..3 {
            if push_image(&c, base, &img).await.is_ok() {
                ok = true;
                break;
            }
        }
        assert!(ok, "push {i} failed three times");
        pushed.push(img);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (runs, removed) = gc.await.expect("gc loop");
    assert!(runs >= 1, "gc ran");
    for img in &pushed {
        check_image(&c, &a.base, img).await;
        check_image(&c, &b.base, img).await;
    }
    check_image(&c, &b.base, &img).await;
    let r = c.head(format!("{}/v2/team/garbage/blobs/{}", b.base, digest(&garbage))).send().await.expect("head");
    assert_eq!(r.status(), 404, "the unreferenced blob was collected");
    assert!(removed >= 1, "gc removed garbage ({runs} runs)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_registry_moves_to_postgres() {
    let data = tempfile::tempdir().expect("data dir");
    let c = client();
    let shared = b"moved layer ".repeat(100);
    let img = make_image("moved/app", "v1", "moved", &shared);
    {
        let embedded = Instance::start(data.path(), None, &[]);
        push_image(&c, &embedded.base, &img).await.expect("push");
    }
    let pg = PgServer::start();
    let url = pg.create_database();
    let migrate = || {
        Command::new(support::entrepot_bin())
            .args(["migrate-meta", "--data-dir"])
            .arg(data.path())
            .arg("--database-url")
            .arg(&url)
            .output()
            .expect("run migrate-meta")
    };
    let out = migrate();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "migrate-meta: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("manifests") && text.contains("verified"), "{text}");

    let served = Instance::start(data.path(), Some(&url), &[]);
    check_image(&c, &served.base, &img).await;
    drop(served);

    let again = migrate();
    assert!(!again.status.success(), "a second copy into a non-empty database is refused");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
