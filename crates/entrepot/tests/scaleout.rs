//! The registry scaled out: two `entrepot serve` instances on one S3 bucket (a real SeaweedFS) and one
//! PostgreSQL database, behind nginx — the stack of `support::scaleout`, started by every test here
//! whatever `ENTREPOT_TEST_SCALEOUT` says.
//!
//! - a chunked upload whose PATCHes alternate between the instances (each PATCH sent to the instance
//!   that did not answer the previous one), closed on the other, the blob byte-identical everywhere;
//! - an instance SIGKILLed after some PATCHes: the client finishes through the other (and through nginx,
//!   which fails over); an instance SIGKILLed in the middle of a PATCH body, past an S3 part boundary: the
//!   client asks the other instance where the upload is and resends from there;
//! - `entrepot gc` on instance A's configuration, again and again, while images are pushed concurrently
//!   to instance B: every image whole afterwards, and the garbage made before really reclaimed;
//! - skopeo pushes through nginx and pulls from each instance directly, byte for byte;
//! - two tag updates racing on the two instances: both succeed, the tag ends at one of them, and both
//!   instances list and resolve the same;
//! - an upload aborted (its session expired) by one instance while a PATCH body still streams into
//!   another: nothing is left staged in the bucket.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use entrepot_oci::{Digest, UploadId};
use entrepot_storage::BlobStore;
use support::Server;
use support::e2e::{Layout, Skopeo, assert_same_bytes, digest_of, http, pseudo_random, require, umoci_image};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MIB: usize = 1024 * 1024;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client")
}

/// `Location` of a response as a path (with query): any instance, or nginx, can be asked for it.
fn location_path(r: &reqwest::Response) -> String {
    let l = r.headers().get("location").expect("Location").to_str().expect("ascii").to_string();
    match l.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_default(),
        None => l,
    }
}

fn with_query(path: &str, q: &str) -> String {
    if path.contains('?') { format!("{path}&{q}") } else { format!("{path}?{q}") }
}

fn range_end(r: &reqwest::Response) -> usize {
    let range = r.headers().get("range").expect("Range").to_str().expect("ascii");
    range.rsplit('-').next().and_then(|n| n.parse::<usize>().ok()).expect("Range 0-N") + 1
}

async fn start_upload(c: &reqwest::Client, base: &str, repo: &str) -> String {
    let r = c.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await.expect("POST upload");
    assert_eq!(r.status(), 202, "start an upload on {base}");
    location_path(&r)
}

async fn patch(c: &reqwest::Client, base: &str, path: &str, start: usize, chunk: &[u8]) -> reqwest::Response {
    c.patch(format!("{base}{path}"))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{}-{}", start, start + chunk.len() - 1))
        .body(chunk.to_vec())
        .send()
        .await
        .expect("PATCH")
}

/// The blob's bytes from `base`; asserts 200 and the digest.
async fn get_blob(c: &reqwest::Client, base: &str, repo: &str, digest: &str) -> Vec<u8> {
    let r = c.get(format!("{base}/v2/{repo}/blobs/{digest}")).send().await.expect("GET blob");
    assert_eq!(r.status(), 200, "GET {repo}@{digest} from {base}");
    let body = r.bytes().await.expect("blob body").to_vec();
    assert_eq!(digest_of(&body), digest, "bytes of {repo}@{digest} from {base}");
    body
}

/// Pushes a blob in one request (a monolithic POST).
async fn push_blob(c: &reqwest::Client, base: &str, repo: &str, bytes: &[u8]) -> Result<String, String> {
    let d = digest_of(bytes);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .header("Content-Type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 201 {
        return Err(format!("push blob to {base}/{repo}: {} {}", r.status(), r.text().await.unwrap_or_default()));
    }
    Ok(d)
}

/// An image: config and layers (pushed to its repository), and its manifest.
struct Image {
    repo: String,
    tag: String,
    blobs: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

impl Image {
    /// A config, a layer of its own and the `shared` layer.
    fn new(repo: &str, tag: &str, seed: u64, shared: &[u8]) -> Image {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
        let layer = pseudo_random(64 * 1024 + seed as usize, seed);
        let desc = |mt: &str, b: &[u8]| serde_json::json!({"mediaType": mt, "digest": digest_of(b), "size": b.len()});
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc("application/vnd.oci.image.config.v1+json", &config),
            "layers": [
                desc("application/vnd.oci.image.layer.v1.tar", shared),
                desc("application/vnd.oci.image.layer.v1.tar", &layer),
            ],
        }))
        .expect("json");
        Image { repo: repo.into(), tag: tag.into(), blobs: vec![config, shared.to_vec(), layer], manifest }
    }

    fn digest(&self) -> String {
        digest_of(&self.manifest)
    }

    /// Pushes the blobs (the shared layer mounted from `mount_from` when given, as clients do) and the
    /// manifest under the tag.
    async fn push(&self, c: &reqwest::Client, base: &str, mount_from: Option<&str>) -> Result<(), String> {
        for (i, b) in self.blobs.iter().enumerate() {
            if let (1, Some(from)) = (i, mount_from) {
                let d = digest_of(b);
                let r = c
                    .post(format!("{base}/v2/{}/blobs/uploads/?mount={d}&from={from}", self.repo))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status() == 201 {
                    continue;
                }
                // Not mountable (any more): a normal upload, as a client would do.
                if r.status() != 202 {
                    return Err(format!("mount {d}: {}", r.status()));
                }
            }
            push_blob(c, base, &self.repo, b).await?;
        }
        let r = c
            .put(format!("{base}/v2/{}/manifests/{}", self.repo, self.tag))
            .header("Content-Type", OCI_MANIFEST)
            .body(self.manifest.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != 201 {
            return Err(format!("manifest PUT: {} {}", r.status(), r.text().await.unwrap_or_default()));
        }
        Ok(())
    }

    /// Pulls by tag from `base` and checks every byte.
    async fn check(&self, c: &reqwest::Client, base: &str) {
        let r = c
            .get(format!("{base}/v2/{}/manifests/{}", self.repo, self.tag))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET manifest");
        assert_eq!(r.status(), 200, "manifest {}:{} on {base}", self.repo, self.tag);
        assert_eq!(r.bytes().await.expect("body").as_ref(), self.manifest.as_slice(), "manifest bytes");
        for b in &self.blobs {
            get_blob(c, base, &self.repo, &digest_of(b)).await;
        }
    }
}

/// The S3 store of the stack sees the blob, with its size.
async fn assert_in_bucket(s: &Server, digest: &str, size: usize) {
    let store = s.stack().expect("scale-out").store();
    let d = Digest::parse(digest).expect("digest");
    assert_eq!(store.stat(&d).await.expect("stat in S3"), Some(size as u64), "blob {digest} in the bucket");
}

// ------------------------------------------------------------------------------------------------ (a)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_alternates_instances() {
    let s = Server::start_scaleout(&[]);
    let stack = s.stack().expect("scale-out");
    let (a, b, lb) = (stack.instance_url(0), stack.instance_url(1), s.url());
    let c = client();

    // Chunks below, across and beyond the 8 MiB S3 part size; the last one comes with the closing PUT.
    let sizes = [MIB, 6 * MIB, 3 * MIB + 17, 7 * MIB, 1000, 2 * MIB + 5];
    let blob = pseudo_random(sizes.iter().sum(), 11);
    let digest = digest_of(&blob);
    let mut path = start_upload(&c, &a, "team/alternating").await;
    let mut at = 0;
    let mut answered_by = 0; // A answered the POST
    for (i, len) in sizes[..sizes.len() - 1].iter().enumerate() {
        // Always the instance that did not give us the Location.
        let (n, base) = if answered_by == 0 { (1, &b) } else { (0, &a) };
        let r = patch(&c, base, &path, at, &blob[at..at + len]).await;
        assert_eq!(r.status(), 202, "PATCH {i} ({len} bytes at {at}) on instance {n}");
        at += len;
        assert_eq!(range_end(&r), at, "Range after PATCH {i}");
        path = location_path(&r);
        answered_by = n;
        assert_eq!(stack.staged_uploads(), 1, "the upload is staged in the bucket");
        // Each instance reports the same progress.
        for base in [&a, &b] {
            let st = c.get(format!("{base}{path}")).send().await.expect("upload status");
            assert_eq!(st.status(), 204);
            assert_eq!(range_end(&st), at, "upload status on {base}");
        }
    }
    let closer = if answered_by == 0 { &b } else { &a };
    let last = &blob[at..];
    let r = c
        .put(format!("{closer}{}", with_query(&path, &format!("digest={digest}"))))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{}-{}", at, blob.len() - 1))
        .body(last.to_vec())
        .send()
        .await
        .expect("closing PUT");
    assert_eq!(r.status(), 201, "closing PUT on the other instance: {}", r.text().await.unwrap_or_default());

    for base in [&a, &b, &lb] {
        let got = get_blob(&c, base, "team/alternating", &digest).await;
        assert_same_bytes(&got, &blob, &format!("blob from {base}"));
    }
    // A range across the first part boundary, from each instance.
    for base in [&a, &b] {
        let r = c
            .get(format!("{base}/v2/team/alternating/blobs/{digest}"))
            .header("Range", "bytes=8388000-8389000")
            .send()
            .await
            .expect("ranged GET");
        assert_eq!(r.status(), 206);
        assert_same_bytes(&r.bytes().await.expect("body"), &blob[8_388_000..=8_389_000], "range across a part");
    }
    assert_in_bucket(&s, &digest, blob.len()).await;
    assert_eq!(stack.staged_uploads(), 0, "nothing left staged in the bucket");
}

// ------------------------------------------------------------------------------------------------ (b)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_killed_mid_upload_the_client_finishes_on_the_other() {
    let mut s = Server::start_scaleout(&[]);
    let (a, b, lb) = {
        let st = s.stack().expect("scale-out");
        (st.instance_url(0), st.instance_url(1), s.url())
    };
    let c = client();

    // 1. Killed between PATCHes: two chunks on A, A dies, the rest goes to B and through nginx.
    let blob = pseudo_random(20 * MIB + 3, 21);
    let digest = digest_of(&blob);
    let mut path = start_upload(&c, &a, "team/killed").await;
    let mut at = 0;
    for len in [6 * MIB, 5 * MIB] {
        let r = patch(&c, &a, &path, at, &blob[at..at + len]).await;
        assert_eq!(r.status(), 202);
        at += len;
        path = location_path(&r);
    }
    s.stack_mut().expect("scale-out").kill_instance(0);
    // nginx fails over what no instance received: of two new uploads started through it, one goes to the
    // dead A first (round robin) and is retried on B; later requests may try A again once its 2 s out of
    // rotation are over (how often depends on timing, so only the first refusal is asserted).
    let mut others = Vec::new();
    for i in 0..2 {
        let p = start_upload(&c, &lb, "team/failover").await;
        others.push((p, pseudo_random(1000 + i, 23 + i as u64)));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (p, data) in &others {
        let r = patch(&c, &lb, p, 0, data).await;
        assert_eq!(r.status(), 202, "PATCH through nginx with A down");
        let r = c
            .put(format!("{lb}{}", with_query(&location_path(&r), &format!("digest={}", digest_of(data)))))
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 201, "closed through nginx with A down");
    }
    let log = s.stack().expect("scale-out").nginx_log();
    let refused = log.lines().filter(|l| l.contains("Connection refused") && l.contains("upstream")).count();
    assert!(refused >= 1, "nginx tried the dead instance (and failed over):\n{log}");
    // Every status request through it succeeds while A is down.
    for _ in 0..6 {
        let st = c.get(format!("{lb}{path}")).send().await.expect("status through nginx");
        assert_eq!(st.status(), 204, "upload status through nginx with A down");
        assert_eq!(range_end(&st), at);
    }
    let r = patch(&c, &b, &path, at, &blob[at..at + 4 * MIB]).await;
    assert_eq!(r.status(), 202, "PATCH on B after A died");
    at += 4 * MIB;
    path = location_path(&r);
    // The next PATCH through nginx (A still down): it reaches B.
    let r = patch(&c, &lb, &path, at, &blob[at..]).await;
    assert_eq!(r.status(), 202, "PATCH through nginx after A died");
    path = location_path(&r);
    let r = c.put(format!("{lb}{}", with_query(&path, &format!("digest={digest}")))).send().await.expect("PUT");
    assert_eq!(r.status(), 201, "closed through nginx: {}", r.text().await.unwrap_or_default());
    get_blob(&c, &b, "team/killed", &digest).await;
    assert_in_bucket(&s, &digest, blob.len()).await;

    // A comes back and serves it.
    s.stack_mut().expect("scale-out").start_instance(0);
    assert_same_bytes(&get_blob(&c, &a, "team/killed", &digest).await, &blob, "blob from the restarted A");

    // 2. Killed in the middle of a PATCH body: 1 MiB acknowledged, then a 12 MiB chunk of which 9 MiB
    //    reach A (past the first 8 MiB S3 part) before A is killed.
    let blob = pseudo_random(16 * MIB + 9, 22);
    let digest = digest_of(&blob);
    let path0 = start_upload(&c, &a, "team/cut").await;
    let r = patch(&c, &a, &path0, 0, &blob[..MIB]).await;
    assert_eq!(r.status(), 202);
    let path1 = location_path(&r);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let in_flight = {
        let (c, url) = (c.clone(), format!("{a}{path1}"));
        tokio::spawn(async move {
            c.patch(url)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{}-{}", MIB, 13 * MIB - 1))
                .header("Content-Length", (12 * MIB).to_string())
                .body(body)
                .send()
                .await
        })
    };
    for i in 0..9 {
        let from = MIB + i * MIB;
        tx.send(Ok(blob[from..from + MIB].to_vec())).await.expect("send a piece of the chunk");
    }
    // Let A take in what was sent: more than a part, so A has written staged bytes beyond the
    // acknowledged offset to S3 when it dies.
    let id = path1.split('?').next().and_then(|p| p.rsplit('/').next()).and_then(UploadId::parse).expect("upload id");
    let store = s.stack().expect("scale-out").store();
    let mut staged = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        staged = store.upload_info(&id).await.expect("upload info").map(|i| i.size).unwrap_or(0);
        if staged > MIB as u64 {
            break;
        }
    }
    assert!(staged > MIB as u64, "A staged part of the cut chunk in S3 ({staged} bytes) before it dies");
    eprintln!("staged in S3 when A was killed mid-PATCH: {staged} bytes (acknowledged: {MIB})");
    s.stack_mut().expect("scale-out").kill_instance(0);
    drop(tx);
    if let Ok(r) = in_flight.await.expect("task") {
        assert_ne!(r.status(), 202, "the interrupted PATCH was not acknowledged");
    }
    // The client's recovery: ask (the other instance) where the upload is, resend from there.
    let st = c.get(format!("{b}{path1}")).send().await.expect("status on B");
    assert_eq!(st.status(), 204, "the session lives on after its instance died");
    let done = range_end(&st);
    assert_eq!(done, MIB, "only the acknowledged chunk counts");
    let r = patch(&c, &b, &location_path(&st), done, &blob[done..]).await;
    assert_eq!(r.status(), 202, "resent from the Range on B");
    let p = location_path(&r);
    let r = c.put(format!("{b}{}", with_query(&p, &format!("digest={digest}")))).send().await.expect("PUT");
    assert_eq!(r.status(), 201, "closed on B: {}", r.text().await.unwrap_or_default());
    assert_same_bytes(&get_blob(&c, &lb, "team/cut", &digest).await, &blob, "recovered blob via nginx");
    assert_in_bucket(&s, &digest, blob.len()).await;
    s.stack_mut().expect("scale-out").start_instance(0);
    get_blob(&c, &a, "team/cut", &digest).await;
    assert_eq!(s.stack().expect("scale-out").staged_uploads(), 0, "nothing left staged in the bucket");
}

// ------------------------------------------------------------------------------------------------ (c)

/// Parses `  blobs removed  N, …` out of `entrepot gc`'s summary.
fn removed(summary: &str, what: &str) -> u64 {
    summary
        .lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix(what))
        .and_then(|rest| rest.trim().split([',', ' ']).next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_on_one_instance_while_pushes_go_to_the_other() {
    let s = Server::start_scaleout(&[]);
    let stack = s.stack().expect("scale-out");
    let (a, b, lb) = (stack.instance_url(0), stack.instance_url(1), s.url());
    let c = client();
    let grace = Duration::from_secs(4);

    // Before: a tagged base image (its layer is shared by everything pushed later), an unreferenced blob
    // and an untagged manifest with blobs of its own — the last two are garbage once the grace is over.
    let shared = pseudo_random(512 * 1024, 31);
    let base = Image::new("gc/base", "1", 1, &shared);
    base.push(&c, &lb, None).await.expect("push the base image");
    let garbage_blob = pseudo_random(300 * 1024, 32);
    let garbage_digest = push_blob(&c, &lb, "gc/garbage", &garbage_blob).await.expect("push garbage");
    let untagged = Image::new("gc/untagged", "unused", 2, &pseudo_random(100 * 1024, 33));
    for blob in &untagged.blobs {
        push_blob(&c, &lb, "gc/untagged", blob).await.expect("push blob");
    }
    let r = c
        .put(format!("{lb}/v2/gc/untagged/manifests/{}", untagged.digest()))
        .header("Content-Type", OCI_MANIFEST)
        .body(untagged.manifest.clone())
        .send()
        .await
        .expect("PUT by digest");
    assert_eq!(r.status(), 201);
    tokio::time::sleep(grace + Duration::from_millis(1500)).await;

    // `entrepot gc` with instance A's configuration, in a loop, while B takes pushes.
    let stop = Arc::new(AtomicBool::new(false));
    let gc = {
        let stop = stop.clone();
        let cmd_for = {
            let env = stack.maintenance_env();
            let data = stack.instance_data_dir(0).to_path_buf();
            let secs = grace.as_secs().to_string();
            move || {
                let mut c = std::process::Command::new(support::entrepot_bin());
                c.args(["gc", "--quiet", "--delete-untagged", "--grace"])
                    .arg(format!("{secs}s"))
                    .arg("--data-dir")
                    .arg(&data)
                    .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
                c
            }
        };
        tokio::task::spawn_blocking(move || {
            let (mut runs, mut blobs, mut manifests) = (0u32, 0u64, 0u64);
            while runs == 0 || !stop.load(Ordering::SeqCst) {
                let out = cmd_for().output().expect("run entrepot gc");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(out.status.success(), "entrepot gc: {text}{}", String::from_utf8_lossy(&out.stderr));
                blobs += removed(&text, "blobs removed");
                manifests += removed(&text, "manifests removed");
                runs += 1;
            }
            (runs, blobs, manifests)
        })
    };
    let images: Vec<Arc<Image>> = (0..16)
        .map(|i| Arc::new(Image::new(&format!("gc/app{}", i % 4), &format!("v{i}"), 100 + i as u64, &shared)))
        .collect();
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let (c, b, images) = (c.clone(), b.clone(), images.clone());
        tasks.push(tokio::spawn(async move {
            for img in images.iter().skip(lane).step_by(4) {
                img.push(&c, &b, Some("gc/base"))
                    .await
                    .unwrap_or_else(|e| panic!("push {}:{}: {e}", img.repo, img.tag));
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("push lane");
    }
    stop.store(true, Ordering::SeqCst);
    let (runs, blobs_removed, manifests_removed) = gc.await.expect("gc loop");
    eprintln!("gc ran {runs} times while 16 images were pushed: {blobs_removed} blobs, {manifests_removed} manifests");

    // Every image whole, from each instance and through nginx.
    for img in images.iter().chain(std::iter::once(&Arc::new(base))) {
        for url in [&a, &b, &lb] {
            img.check(&c, url).await;
        }
    }
    // The garbage is gone, from the registry and from the bucket.
    let store = stack.store();
    let mut gone = vec![("gc/garbage", garbage_digest.clone())];
    gone.extend(untagged.blobs.iter().map(|b| ("gc/untagged", digest_of(b))));
    for (repo, d) in &gone {
        for url in [&a, &b] {
            let r = c.head(format!("{url}/v2/{repo}/blobs/{d}")).send().await.expect("HEAD");
            assert_eq!(r.status(), 404, "garbage blob {repo}@{d} on {url}");
        }
        let digest = Digest::parse(d).expect("digest");
        assert_eq!(store.stat(&digest).await.expect("stat"), None, "garbage blob {d} removed from the bucket");
    }
    let r = c
        .get(format!("{a}/v2/gc/untagged/manifests/{}", untagged.digest()))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404, "the untagged manifest was collected");
    assert!(blobs_removed >= gone.len() as u64, "gc reported its removals: {blobs_removed}");
    assert!(manifests_removed >= 1, "gc reported the untagged manifest");
}

// ------------------------------------------------------------------------------------------------ (d)

/// The registry requests an instance has answered (`entrepot_http_requests_total` of its `/metrics`).
fn requests_served(addr: &str) -> u64 {
    let r = http("GET", &format!("http://{addr}/metrics"), &[], None);
    assert_eq!(r.status, 200, "metrics of {addr}");
    r.text()
        .lines()
        .filter(|l| l.starts_with("entrepot_http_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn skopeo_pushes_through_nginx_and_pulls_from_each_instance() {
    require(&["umoci", "skopeo"]);
    let s = Server::start_scaleout(&[]);
    let stack = s.stack().expect("scale-out");
    let sk = Skopeo::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let big = pseudo_random(9 * MIB + 123, 41);
    let mdigest = umoci_image(
        &tmp.path().join("src"),
        "v1",
        "amd64",
        &[("hello.txt", b"hello through nginx\n", 0o644), ("big.bin", &big, 0o644)],
        &["/hello"],
    );
    let layout = Layout::new(tmp.path().join("src"));
    let src = format!("oci:{}:v1", layout.path.display());
    sk.run(&["copy", "--dest-tls-verify=false", "--preserve-digests", &src, &format!("docker://{}/lb/app:v1", s.addr)]);
    let reachable = layout.reachable(&mdigest);
    assert!(reachable.len() >= 3, "manifest, config and a layer");
    // nginx spread the push over both instances.
    let served: Vec<u64> = stack.instance_addrs().iter().map(|a| requests_served(a)).collect();
    eprintln!("requests of the push served by instance A: {}, by instance B: {}", served[0], served[1]);
    assert!(served.iter().all(|&n| n > 0), "both instances took part of the push: {served:?}");
    for (i, addr) in stack.instance_addrs().iter().enumerate() {
        let out = tmp.path().join(format!("from-{i}"));
        sk.run(&[
            "copy",
            "--src-tls-verify=false",
            "--preserve-digests",
            &format!("docker://{addr}/lb/app:v1"),
            &format!("oci:{}:v1", out.display()),
        ]);
        let pulled = Layout::new(&out);
        assert_eq!(pulled.digest("v1"), mdigest, "manifest digest pulled from instance {i}");
        for d in &reachable {
            assert_same_bytes(&pulled.blob(d), &layout.blob(d), &format!("{d} pulled from instance {i}"));
        }
        let raw = sk.run(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{addr}/lb/app:v1")]);
        assert_same_bytes(raw.as_bytes(), &layout.blob(&mdigest), &format!("raw manifest from instance {i}"));
    }
}

// ------------------------------------------------------------------------------------------------ (e)

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tag_updates_on_both_instances() {
    let s = Server::start_scaleout(&[]);
    let stack = s.stack().expect("scale-out");
    let bases = [stack.instance_url(0), stack.instance_url(1)];
    let c = client();
    let shared = pseudo_random(4096, 51);
    let repo = "race/tags";
    let mut won = [0u32; 2];
    for round in 0..20u64 {
        // Two different images, blobs in place; then the two manifest PUTs to the same tag at once.
        let imgs =
            [Image::new(repo, "race", 1000 + 2 * round, &shared), Image::new(repo, "race", 1001 + 2 * round, &shared)];
        for img in &imgs {
            for blob in &img.blobs {
                push_blob(&c, &bases[0], repo, blob).await.expect("push blob");
            }
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut puts = Vec::new();
        for (i, img) in imgs.iter().enumerate() {
            let (c, url, body, barrier) =
                (c.clone(), format!("{}/v2/{repo}/manifests/race", bases[i]), img.manifest.clone(), barrier.clone());
            puts.push(tokio::spawn(async move {
                barrier.wait().await;
                let r = c.put(url).header("Content-Type", OCI_MANIFEST).body(body).send().await.expect("PUT");
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            }));
        }
        for (i, p) in puts.into_iter().enumerate() {
            let (status, text) = p.await.expect("put task");
            assert_eq!(status, 201, "round {round}: tag update on instance {i}: {text}");
        }
        // The tag ends at one of them, the same seen from both instances.
        let mut seen = Vec::new();
        for base in &bases {
            let r = c
                .get(format!("{base}/v2/{repo}/manifests/race"))
                .header("Accept", OCI_MANIFEST)
                .send()
                .await
                .expect("GET tag");
            assert_eq!(r.status(), 200);
            let d = r.headers()["docker-content-digest"].to_str().expect("digest").to_string();
            assert_eq!(digest_of(&r.bytes().await.expect("body")), d);
            seen.push(d);
        }
        assert_eq!(seen[0], seen[1], "round {round}: both instances resolve the tag alike");
        let winner = imgs.iter().position(|i| i.digest() == seen[0]);
        let winner = winner.unwrap_or_else(|| panic!("round {round}: the tag points at neither update: {}", seen[0]));
        won[winner] += 1;
        // The loser is still there by digest (untagged), on both instances.
        let loser = &imgs[1 - winner];
        for base in &bases {
            let r = c
                .head(format!("{base}/v2/{repo}/manifests/{}", loser.digest()))
                .header("Accept", OCI_MANIFEST)
                .send()
                .await
                .expect("HEAD");
            assert_eq!(r.status(), 200, "round {round}: the other manifest by digest on {base}");
        }
        // The listing is the same on both.
        let mut lists = Vec::new();
        for base in &bases {
            let v: serde_json::Value =
                c.get(format!("{base}/v2/{repo}/tags/list")).send().await.expect("tags").json().await.expect("json");
            lists.push(v["tags"].clone());
        }
        assert_eq!(lists[0], serde_json::json!(["race"]), "round {round}: one tag");
        assert_eq!(lists[0], lists[1], "round {round}: the same listing on both instances");
    }
    eprintln!("tag races won: instance A {} times, instance B {} times", won[0], won[1]);
}

// ------------------------------------------------------------------------------------ abort vs write

/// The upload expiry (or a cancel) on one instance while a PATCH of the same upload is still receiving
/// its body on another: the aborting instance holds no lock the writing one sees, so the write stages
/// its bytes after the abort swept the upload. Nothing may be left in the bucket (no marker-less tail or
/// part nobody owns), and the write reports the upload gone. Two stores on one bucket and prefix stand
/// for the two instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_on_one_instance_during_a_write_on_another_leaves_nothing() {
    use entrepot_oci::{Algorithm, Digester};
    use entrepot_storage::s3::testsupport::{SeaweedFs, unique_bucket};
    use entrepot_storage::{ByteStream, StorageError};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let weed = SeaweedFs::shared();
    let mut cfg = weed.config(&unique_bucket("entrepot-abort"));
    cfg.prefix = "race/".into();
    let writer = weed.store(cfg.clone()).await;
    let aborter = entrepot_storage::S3BlobStore::new(cfg).expect("second store");
    // A tail only, then bytes reaching past the first part too.
    for (n, first, rest) in [(1u32, 1000usize, 5000usize), (2, 3 * MIB, 7 * MIB)] {
        let id = UploadId::parse(&format!("00000000-0000-4000-8000-00000000000{n}")).expect("id");
        writer.upload_create(&id).await.expect("create");
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
        let body: ByteStream =
            Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }));
        let data = pseudo_random(first + rest, 60 + u64::from(n));
        let write = {
            let writer = writer.clone();
            let id = id.clone();
            tokio::spawn(async move { writer.upload_write(&id, 0, body, Digester::new(Algorithm::Sha256)).await })
        };
        tx.send(Ok(bytes::Bytes::copy_from_slice(&data[..first]))).await.expect("send");
        // The write has listed the marker and is waiting for the rest of its body: abort elsewhere.
        tokio::time::sleep(Duration::from_millis(300)).await;
        aborter.upload_abort(&id).await.expect("abort");
        tx.send(Ok(bytes::Bytes::copy_from_slice(&data[first..]))).await.expect("send");
        drop(tx);
        let result = write.await.expect("write task").map(|(written, _)| written);
        assert!(
            matches!(result, Err(StorageError::UploadNotFound)),
            "round {n}: the write after the abort: {result:?}"
        );
        assert!(writer.list_uploads().await.expect("list").is_empty(), "round {n}: nothing staged is left");
        assert_eq!(writer.upload_info(&id).await.expect("info"), None, "round {n}: no staging area");
    }
}

// ------------------------------------------------------------------------------- fleet read-only

/// The admin read-only switch is fleet-wide: PUT on instance A, and within 2 s instance B refuses a push
/// (`403 DENIED`) while it still serves pulls; B restarted (its configuration says nothing of
/// read-only) stays read-only from its first request; PUT `false` on B, and within 2 s A takes pushes
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_read_only_switch_reaches_every_instance() {
    let mut s = Server::start_scaleout(&[]);
    let (a, b) = {
        let stack = s.stack().expect("scale-out");
        (stack.instance_url(0), stack.instance_url(1))
    };
    let c = client();
    let repo = "fleet/ro";
    let before = pseudo_random(10_000, 70);
    let digest = push_blob(&c, &a, repo, &before).await.expect("push before read-only");
    let admin = |base: &str| format!("{base}/_entrepot/admin/read-only");
    let state = |r: serde_json::Value| (r["read_only"].clone(), r["local"].clone(), r["fleet"].clone());

    let r = c.put(admin(&a)).body(r#"{"read_only": true}"#).send().await.expect("PUT read-only on A");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(state(v), (true.into(), false.into(), true.into()), "A answers the effective state at once");

    // B refuses a push within 2 s, with the read-only denial.
    let blocked = pseudo_random(5_000, 71);
    let started = std::time::Instant::now();
    let refusal = loop {
        let r = c
            .post(format!("{b}/v2/{repo}/blobs/uploads/?digest={}", digest_of(&blocked)))
            .header("Content-Type", "application/octet-stream")
            .body(blocked.clone())
            .send()
            .await
            .expect("POST on B");
        if r.status() == 403 {
            break (started.elapsed(), r.text().await.expect("body"));
        }
        assert_eq!(r.status(), 201, "a push on B before it sees the switch");
        assert!(started.elapsed() < Duration::from_secs(2), "B still takes pushes after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (after, body) = refusal;
    let v: serde_json::Value = serde_json::from_str(&body).expect("error json");
    assert_eq!(v["errors"][0]["code"], "DENIED", "{body}");
    assert!(body.contains("read-only"), "{body}");
    eprintln!("instance B refused pushes {after:?} after the switch on instance A");
    let v: serde_json::Value = c.get(admin(&b)).send().await.expect("GET on B").json().await.expect("json");
    assert_eq!(state(v), (true.into(), false.into(), true.into()), "B: read-only through the fleet flag only");
    // Pulls still work on B (and on A).
    for base in [&a, &b] {
        get_blob(&c, base, repo, &digest).await;
    }

    // B restarted with `read_only` unset (false) does not switch the fleet back: read-only at once.
    s.stack_mut().expect("scale-out").restart_instance(1);
    let r = c
        .post(format!("{b}/v2/{repo}/blobs/uploads/?digest={}", digest_of(&blocked)))
        .header("Content-Type", "application/octet-stream")
        .body(blocked.clone())
        .send()
        .await
        .expect("POST on restarted B");
    assert_eq!(r.status(), 403, "the restarted instance refuses pushes from its first request");
    get_blob(&c, &b, repo, &digest).await;
    let v: serde_json::Value = c.get(admin(&a)).send().await.expect("GET on A").json().await.expect("json");
    assert_eq!(v["fleet"], true, "the restart left the fleet read-only");

    // Switched off on B: A takes pushes again within 2 s.
    let r = c.put(admin(&b)).body(r#"{"read_only": false}"#).send().await.expect("PUT writable on B");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(state(v), (false.into(), false.into(), false.into()));
    let after_off = pseudo_random(6_000, 72);
    let started = std::time::Instant::now();
    loop {
        match push_blob(&c, &a, repo, &after_off).await {
            Ok(d) => {
                eprintln!("instance A took pushes again {:?} after the switch on instance B", started.elapsed());
                get_blob(&c, &b, repo, &d).await;
                break;
            }
            Err(e) => {
                assert!(e.contains("403"), "{e}");
                assert!(started.elapsed() < Duration::from_secs(2), "A still refuses pushes: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    push_blob(&c, &b, repo, &blocked).await.expect("B takes pushes");
}
