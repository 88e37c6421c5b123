//! `entrepot migrate`: an embedded registry moved to S3 + PostgreSQL in one command, against a real
//! SeaweedFS and a real PostgreSQL 15 started by the test.
//!
//! Images are pushed to an embedded `entrepot serve` (blobs on disk, metadata in SQLite): two tagged
//! images sharing a layer, one of them with a layer larger than an S3 part, and a manifest pushed by
//! digest only. While the server runs, `migrate` refuses. Once it is stopped: a blobs-only run, one
//! blob deleted from the bucket behind its back (an interrupted run), then the full run copies just
//! that blob and the metadata. `entrepot serve` on S3 + PostgreSQL (an empty data directory) then
//! serves everything byte for byte, by tag and by digest. A rerun is a no-op success; after the new
//! server has written to the database, a rerun is refused and changes nothing. A blob whose bytes on
//! disk no longer match its digest is reported and not copied.

mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use entrepot_meta::pgtest::PgServer;
use entrepot_storage::BlobStore;
use entrepot_storage::s3::testsupport::{ACCESS_KEY, SECRET_KEY, SeaweedFs, unique_bucket};
use sha2::{Digest as _, Sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// An image: repository, tag (`None`: pushed by digest only), blobs and manifest bytes.
struct Image {
    repo: &'static str,
    tag: Option<&'static str>,
    blobs: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

fn image(repo: &'static str, tag: Option<&'static str>, config: &[u8], layers: &[&[u8]]) -> Image {
    let desc = |mt: &str, b: &[u8]| serde_json::json!({"mediaType": mt, "digest": digest(b), "size": b.len()});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    }))
    .expect("json");
    let mut blobs = vec![config.to_vec()];
    blobs.extend(layers.iter().map(|l| l.to_vec()));
    Image { repo, tag, blobs, manifest }
}

async fn push(c: &reqwest::Client, base: &str, img: &Image) {
    for b in &img.blobs {
        let r = c
            .post(format!("{base}/v2/{}/blobs/uploads/?digest={}", img.repo, digest(b)))
            .body(b.clone())
            .send()
            .await
            .expect("push blob");
        assert_eq!(r.status(), 201, "push blob: {}", r.text().await.unwrap_or_default());
    }
    let reference = img.tag.map(str::to_string).unwrap_or_else(|| digest(&img.manifest));
    let r = c
        .put(format!("{base}/v2/{}/manifests/{reference}", img.repo))
        .header("Content-Type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .expect("push manifest");
    assert_eq!(r.status(), 201, "push manifest: {}", r.text().await.unwrap_or_default());
}

/// Pulls the image by tag (if it has one) and by digest from `base`, and every blob, byte for byte.
async fn check(c: &reqwest::Client, base: &str, img: &Image) {
    let mut references = vec![digest(&img.manifest)];
    references.extend(img.tag.map(str::to_string));
    for reference in references {
        let r = c
            .get(format!("{base}/v2/{}/manifests/{reference}", img.repo))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .expect("get manifest");
        assert_eq!(r.status(), 200, "manifest {}@{reference}", img.repo);
        assert_eq!(r.bytes().await.expect("body").as_ref(), img.manifest.as_slice(), "{}@{reference}", img.repo);
    }
    for b in &img.blobs {
        let r = c.get(format!("{base}/v2/{}/blobs/{}", img.repo, digest(b))).send().await.expect("get blob");
        assert_eq!(r.status(), 200, "blob {} of {}", digest(b), img.repo);
        assert!(r.bytes().await.expect("body").as_ref() == b.as_slice(), "blob {} differs", digest(b));
    }
}

/// Runs `entrepot migrate` with the S3 credentials in the environment.
fn migrate(args: &[&str]) -> (Output, String) {
    let out = Command::new(support::entrepot_bin())
        .arg("migrate")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .expect("run entrepot migrate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

/// `entrepot serve` on S3 + PostgreSQL with an empty data directory; killed when dropped.
struct Shared {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_shared(endpoint: &str, bucket: &str, url: &str) -> Shared {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(support::entrepot_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--s3-endpoint", endpoint, "--s3-bucket", bucket, "--s3-path-style", "--s3-prefix", "reg"])
        .args(["--database-url", url])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn entrepot");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let Some(addr) = line.trim().strip_prefix("listening on ").map(str::to_string) else {
        let _ = child.kill();
        panic!("entrepot serve on S3 + PostgreSQL did not start: {line:?}");
    };
    Shared { child, base: format!("http://{addr}"), _data: data }
}

fn blob_files(data: &Path) -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
            .unwrap_or(0)
    }
    walk(&data.join("blobs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_registry_moves_to_s3_and_postgres() {
    let weed = SeaweedFs::shared();
    let bucket = unique_bucket("entrepot-migrate");
    let mut cfg = weed.config(&bucket);
    cfg.prefix = "reg/".into();
    let store = weed.store(cfg).await;
    let pg = PgServer::start();
    let url = pg.create_database();
    let c = support::http_client();

    // An embedded registry with two tagged images sharing a layer (one layer bigger than an 8 MiB
    // S3 part) and one manifest pushed by digest only.
    let mut server = support::Server::start();
    assert!(server.managed(), "this test needs its own server (unset ENTREPOT_TEST_REGISTRY)");
    let base = server.url();
    let shared_layer = pseudo_random(300_000, 1);
    let big_layer = pseudo_random(9 * 1024 * 1024 + 123, 2);
    let images = [
        image("team/app", Some("1.0"), b"{\"app\":1}", &[&shared_layer, &big_layer]),
        image("team/tool", Some("latest"), b"{\"tool\":1}", &[&shared_layer, b"small tool layer"]),
        image("team/app", None, b"{\"untagged\":true}", &[b"a layer only an untagged manifest has"]),
    ];
    for img in &images {
        push(&c, &base, img).await;
    }
    let data = server.data_dir().to_path_buf();
    let d = data.to_str().expect("utf-8 path");
    let s3_flags = ["--s3-endpoint", &weed.endpoint, "--s3-bucket", &bucket, "--s3-path-style", "--s3-prefix", "reg"];
    let mut full: Vec<&str> = vec!["--data-dir", d, "--database-url", &url];
    full.extend(s3_flags);

    // Refused while the server runs on the data directory; nothing copied.
    let (out, text) = migrate(&full);
    assert!(!out.status.success(), "migrate beside a running server: {text}");
    assert!(text.contains("in use by another process"), "{text}");
    assert!(store.list().await.expect("list").is_empty(), "nothing copied while refused");
    server.kill();

    // Blobs only (no database): every committed blob lands in the bucket.
    let files = blob_files(&data);
    let mut blobs_only: Vec<&str> = vec!["--data-dir", d];
    blobs_only.extend(s3_flags);
    let (out, text) = migrate(&blobs_only);
    assert!(out.status.success(), "blobs-only migrate: {text}");
    assert!(text.contains(&format!("{files} copied")), "{text}");
    assert!(text.contains("metadata: stays in"), "{text}");
    assert_eq!(store.list().await.expect("list").len(), files);

    // An interrupted run: one blob missing from the bucket. The full run copies just that one (the big
    // one: streamed in several parts), skips the others, then moves the metadata.
    let big = entrepot_oci::Digest::parse(&digest(&big_layer)).expect("digest");
    assert!(store.delete(&big).await.expect("delete"));
    let (out, text) = migrate(&full);
    eprintln!("entrepot migrate said:\n{text}");
    assert!(out.status.success(), "migrate: {text}");
    assert!(text.contains(&format!("1 copied (9.0 MiB), {} already in bucket", files - 1)), "{text}");
    assert!(text.contains("metadata: copied"), "{text}");
    assert!(text.contains("manifests      3"), "{text}");
    assert_eq!(store.stat(&big).await.expect("stat"), Some(big_layer.len() as u64));

    // A server on S3 + PostgreSQL alone (its data directory is empty) serves everything.
    let new = serve_shared(&weed.endpoint, &bucket, &url);
    for img in &images {
        check(&c, &new.base, img).await;
    }
    let tags: serde_json::Value =
        c.get(format!("{}/v2/team/app/tags/list", new.base)).send().await.expect("tags").json().await.expect("json");
    assert_eq!(tags["tags"], serde_json::json!(["1.0"]));
    let catalog: serde_json::Value =
        c.get(format!("{}/v2/_catalog", new.base)).send().await.expect("catalog").json().await.expect("json");
    assert_eq!(catalog["repositories"], serde_json::json!(["team/app", "team/tool"]));

    // A rerun, this time with the targets in a configuration file (the keys `serve` reads): nothing to
    // copy, the metadata is recognised as already there.
    let config = data.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{url}\"\ns3_endpoint = \"{}\"\ns3_bucket = \"{bucket}\"\ns3_path_style = true\n\
             s3_prefix = \"reg\"\n",
            weed.endpoint
        ),
    )
    .expect("write config");
    let (out, text) = migrate(&["--config", config.to_str().expect("utf-8"), "--data-dir", d]);
    assert!(out.status.success(), "rerun: {text}");
    assert!(text.contains(&format!("0 copied (0 B), {files} already in bucket")), "{text}");
    assert!(text.contains("already in PostgreSQL"), "{text}");

    // Once the new server has written to the database, a rerun is refused and changes nothing.
    let later = image("team/new", Some("1"), b"{\"later\":1}", &[b"pushed after the move"]);
    push(&c, &new.base, &later).await;
    let (out, text) = migrate(&full);
    assert!(!out.status.success(), "rerun over a changed database: {text}");
    assert!(text.contains("differs from"), "{text}");
    check(&c, &new.base, &later).await;
    for img in &images {
        check(&c, &new.base, img).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_blob_on_disk_is_not_copied() {
    let weed = SeaweedFs::shared();
    let bucket = unique_bucket("entrepot-migrate-corrupt");
    let store = weed.store(weed.config(&bucket)).await;
    let c = support::http_client();
    let mut server = support::Server::start();
    if !server.managed() {
        return; // ENTREPOT_TEST_REGISTRY: not our server
    }
    let good = pseudo_random(50_000, 3);
    let bad = pseudo_random(60_000, 4);
    push(&c, &server.url(), &image("team/app", Some("1"), b"{}", &[&good, &bad])).await;
    server.kill();
    let data = server.data_dir().to_path_buf();
    let hex = digest(&bad)["sha256:".len()..].to_string();
    let path = data.join("blobs").join("sha256").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&path).expect("read blob file");
    bytes[1000] ^= 0xff;
    std::fs::write(&path, &bytes).expect("corrupt the blob");

    let (out, text) = migrate(&[
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--s3-endpoint",
        &weed.endpoint,
        "--s3-bucket",
        &bucket,
        "--s3-path-style",
    ]);
    assert!(!out.status.success(), "a corrupt blob must fail the run: {text}");
    assert!(text.contains("is corrupt there") && text.contains(&hex), "{text}");
    assert!(text.contains("1 of 3 blobs could not be copied"), "{text}");
    let bad_digest = entrepot_oci::Digest::parse(&digest(&bad)).expect("digest");
    let good_digest = entrepot_oci::Digest::parse(&digest(&good)).expect("digest");
    assert_eq!(store.stat(&bad_digest).await.expect("stat"), None, "the corrupt bytes are not in the bucket");
    assert_eq!(store.stat(&good_digest).await.expect("stat"), Some(good.len() as u64));
    assert!(store.list_uploads().await.expect("uploads").is_empty(), "the staging upload was aborted");
}
