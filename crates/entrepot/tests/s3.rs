//! End-to-end on S3: a real SeaweedFS started by the test, `entrepot serve --s3-endpoint … --s3-bucket …`
//! with the credentials in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, then skopeo pushes and pulls an
//! image (blob GETs answered with 307 redirects to presigned S3 URLs, which skopeo follows), and a chunked
//! upload over HTTP with chunks on both sides of the part size. Checks that the bytes are in the bucket,
//! not in the data directory.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use entrepot_oci::Digest;
use entrepot_storage::BlobStore;
use entrepot_storage::s3::testsupport::{ACCESS_KEY, SECRET_KEY, SeaweedFs, unique_bucket};
use support::e2e::*;

/// `entrepot serve` on S3, killed when dropped.
struct S3Registry {
    addr: String,
    child: Child,
    data: tempfile::TempDir,
}

impl Drop for S3Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_on_s3(endpoint: &str, bucket: &str, extra: &[&str]) -> S3Registry {
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(support::entrepot_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--s3-endpoint", endpoint, "--s3-bucket", bucket, "--s3-path-style", "--s3-prefix", "e2e"])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        // Some S3 clients refuse to start when this points nowhere; the endpoint is http, so it is ignored.
        .env("AWS_CA_BUNDLE", "/nonexistent/ca-bundle.pem")
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn entrepot");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let Some(addr) = line.trim().strip_prefix("listening on ").map(str::to_string) else {
        let _ = child.kill();
        panic!("entrepot serve on S3 did not start: {line:?}");
    };
    S3Registry { addr, child, data }
}

#[test]
fn skopeo_push_pull_and_chunked_upload_on_s3() {
    require(&["umoci", "curl"]);
    let sk = Skopeo::new();
    let weed = SeaweedFs::shared();
    let bucket = unique_bucket("entrepot-e2e");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut cfg = weed.config(&bucket);
    cfg.prefix = "e2e/".into();
    let store = rt.block_on(weed.store(cfg));

    let reg = serve_on_s3(&weed.endpoint, &bucket, &["--s3-redirect"]);
    let addr = reg.addr.clone();

    // skopeo: an OCI layout with a 9 MiB layer (more than one 8 MiB part) in, and back out.
    let tmp = tempfile::tempdir().expect("tempdir");
    let big = pseudo_random(9 * 1024 * 1024, 7);
    let mdigest = umoci_image(
        &tmp.path().join("src"),
        "v1",
        "amd64",
        &[("hello.txt", b"hello from S3\n", 0o644), ("big.bin", &big, 0o644)],
        &["/hello"],
    );
    let layout = Layout::new(tmp.path().join("src"));
    let src = format!("oci:{}:v1", layout.path.display());
    let dst = format!("docker://{addr}/s3/app:v1");
    sk.run(&["copy", "--dest-tls-verify=false", "--preserve-digests", &src, &dst]);
    let (bytes, _, dcd) = get_manifest(&addr, "s3/app", "v1");
    assert_eq!(dcd, mdigest);
    assert_same_bytes(&bytes, &layout.blob(&mdigest), "manifest");

    let reachable = layout.reachable(&mdigest);
    let stored = rt.block_on(store.list()).expect("list the bucket");
    for d in &reachable[1..] {
        let digest = Digest::parse(d).expect("digest");
        assert!(stored.contains(&digest), "blob {d} is in the bucket");
        // Blob GETs redirect to S3; HEADs are answered here.
        let r = http("GET", &format!("http://{addr}/v2/s3/app/blobs/{d}"), &[], None);
        assert_eq!(r.status, 307, "GET blob {d}");
        let location = r.header("Location").expect("Location").to_string();
        assert!(location.starts_with(&weed.endpoint) && location.contains("X-Amz-Signature="), "{location}");
        let fetched = http("GET", &location, &[], None);
        assert_eq!(fetched.status, 200);
        assert_same_bytes(&fetched.body, &layout.blob(d), &format!("blob {d} from the presigned URL"));
        let h = http("HEAD", &format!("http://{addr}/v2/s3/app/blobs/{d}"), &[], None);
        assert_eq!(h.status, 200);
        assert_eq!(h.header("Content-Length"), Some(layout.blob(d).len().to_string().as_str()));
    }
    let blobs_dir = reg.data.path().join("blobs");
    let local = std::fs::read_dir(&blobs_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(local, 0, "no blob bytes in the data directory");

    // Back out through the redirects, byte for byte.
    let out = tmp.path().join("out");
    sk.run(&["copy", "--src-tls-verify=false", "--preserve-digests", &dst, &format!("oci:{}:v1", out.display())]);
    let pulled = Layout::new(&out);
    assert_eq!(pulled.digest("v1"), mdigest);
    for d in &reachable {
        assert_same_bytes(&pulled.blob(d), &layout.blob(d), &format!("pulled {d}"));
    }

    // A chunked upload over HTTP: a small chunk, one larger than a part, then a tiny last one.
    let body = pseudo_random(9 * 1024 * 1024 + 3, 8);
    let digest = digest_of(&body);
    let start = http("POST", &format!("http://{addr}/v2/s3/chunked/blobs/uploads/"), &[], None);
    assert_eq!(start.status, 202, "{}", start.text());
    let mut location = start.header("Location").expect("Location").to_string();
    let mut offset = 0usize;
    for len in [1000usize, 9 * 1024 * 1024 - 1000, 3] {
        let url = if location.starts_with('/') { format!("http://{addr}{location}") } else { location.clone() };
        let range = format!("{offset}-{}", offset + len - 1);
        let r = http(
            "PATCH",
            &url,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
            Some(&body[offset..offset + len]),
        );
        assert_eq!(r.status, 202, "PATCH {range}: {}", r.text());
        assert_eq!(r.header("Range"), Some(format!("0-{}", offset + len - 1).as_str()));
        location = r.header("Location").expect("Location").to_string();
        offset += len;
    }
    let url = if location.starts_with('/') { format!("http://{addr}{location}") } else { location.clone() };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = http("PUT", &format!("{url}{sep}digest={digest}"), &[], None);
    assert_eq!(r.status, 201, "{}", r.text());
    let d = Digest::parse(&digest).expect("digest");
    assert_eq!(rt.block_on(store.stat(&d)).expect("stat"), Some(body.len() as u64));
    let r = http("GET", &format!("http://{addr}/v2/s3/chunked/blobs/{digest}"), &[], None);
    assert_eq!(r.status, 307);
    let fetched = http("GET", r.header("Location").expect("Location"), &[], None);
    assert_same_bytes(&fetched.body, &body, "chunked blob");
    let ranged = http("GET", r.header("Location").expect("Location"), &[("Range", "bytes=8388600-8388615")], None);
    assert_eq!(ranged.status, 206);
    assert_same_bytes(&ranged.body, &body[8_388_600..8_388_616], "range across the part boundary");
    assert!(rt.block_on(store.list_uploads()).expect("uploads").is_empty(), "no staging left in the bucket");

    // Without --s3-redirect the registry streams the bytes from S3 itself (whole and ranged).
    let direct = serve_on_s3(&weed.endpoint, &bucket, &[]);
    let body = pseudo_random(3 * 1024 * 1024 + 5, 9);
    let digest = digest_of(&body);
    let url = format!("http://{}/v2/s3/direct/blobs/uploads/?digest={digest}", direct.addr);
    let r = http("POST", &url, &[("Content-Type", "application/octet-stream")], Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_same_bytes(&get_blob(&direct.addr, "s3/direct", &digest), &body, "blob served from S3");
    let r = http(
        "GET",
        &format!("http://{}/v2/s3/direct/blobs/{digest}", direct.addr),
        &[("Range", "bytes=100-199")],
        None,
    );
    assert_eq!(r.status, 206);
    assert_same_bytes(&r.body, &body[100..200], "ranged blob served from S3");
}

#[test]
fn serve_refuses_an_unreachable_bucket_and_missing_credentials() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = Command::new(support::entrepot_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--s3-endpoint", "http://127.0.0.1:9", "--s3-bucket", "b", "--s3-path-style"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("run entrepot");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");

    // Port 9 (discard) is closed on loopback: the start fails with a message naming the bucket.
    let out = Command::new(support::entrepot_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--s3-endpoint", "http://127.0.0.1:9", "--s3-bucket", "nowhere", "--s3-path-style"])
        .env("AWS_ACCESS_KEY_ID", "AK")
        .env("AWS_SECRET_ACCESS_KEY", "SK")
        .output()
        .expect("run entrepot");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach S3 bucket nowhere"), "{err}");
}
