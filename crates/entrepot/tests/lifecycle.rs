//! The storage lifecycle end to end, against a real `entrepot serve` process: online garbage
//! collection racing HTTP pushes (scheduled inside the server, `entrepot gc` processes beside it and
//! a collector in this test process on the same data directory), immutable tags, quotas, read-only
//! mode switched by signal, and the `retention`, `usage` and `scrub` commands.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use support::{Server, entrepot_bin};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[derive(Clone)]
struct Http {
    base: String,
    c: Client,
}

/// Why a push did not go through.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    body: String,
}

impl Http {
    fn new(server: &Server) -> Http {
        Http { base: server.url(), c: support::http_client() }
    }

    async fn push_blob(&self, repo: &str, data: &[u8]) -> Result<String, Refused> {
        let d = sha256(data);
        let r = self
            .c
            .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", self.base))
            .body(data.to_vec())
            .send()
            .await
            .expect("POST");
        if r.status() != StatusCode::CREATED {
            return Err(Refused { status: r.status(), body: r.text().await.unwrap_or_default() });
        }
        Ok(d)
    }

    /// Mounts `digest` from `from`; when the registry answers with an upload session instead, uploads
    /// `data` through that session (as docker does).
    async fn mount_or_upload(&self, repo: &str, digest: &str, from: &str, data: &[u8]) -> Result<(), Refused> {
        let r = self
            .c
            .post(format!("{}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}", self.base))
            .send()
            .await
            .expect("POST mount");
        match r.status() {
            StatusCode::CREATED => return Ok(()),
            StatusCode::ACCEPTED => {}
            status => return Err(Refused { status, body: r.text().await.unwrap_or_default() }),
        }
        let location = r.headers()["location"].to_str().expect("location").to_string();
        let url = if location.starts_with('/') { format!("{}{location}", self.base) } else { location };
        let sep = if url.contains('?') { '&' } else { '?' };
        let r = self.c.put(format!("{url}{sep}digest={digest}")).body(data.to_vec()).send().await.expect("PUT");
        if r.status() != StatusCode::CREATED {
            return Err(Refused { status: r.status(), body: r.text().await.unwrap_or_default() });
        }
        Ok(())
    }

    async fn put_manifest(&self, repo: &str, reference: &str, media: &str, m: &[u8]) -> Result<String, Refused> {
        let r = self
            .c
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", media)
            .body(m.to_vec())
            .send()
            .await
            .expect("PUT manifest");
        if r.status() != StatusCode::CREATED {
            return Err(Refused { status: r.status(), body: r.text().await.unwrap_or_default() });
        }
        Ok(sha256(m))
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.c.get(format!("{}{path}", self.base)).send().await.expect("GET")
    }

    async fn delete(&self, path: &str) -> reqwest::Response {
        self.c.delete(format!("{}{path}", self.base)).send().await.expect("DELETE")
    }

    /// Pulls a manifest and everything it references, checking every digest; panics otherwise.
    async fn assert_pullable(&self, repo: &str, reference: &str) {
        let r = self
            .c
            .get(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
            .send()
            .await
            .expect("GET manifest");
        assert_eq!(r.status(), StatusCode::OK, "manifest {repo}:{reference}");
        let bytes = r.bytes().await.expect("body");
        if reference.starts_with("sha256:") {
            assert_eq!(sha256(&bytes), reference);
        }
        let m: Value = serde_json::from_slice(&bytes).expect("json");
        let mut blobs: Vec<String> = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["digest"].as_str().unwrap_or("").to_string())
            .collect();
        if let Some(c) = m["config"]["digest"].as_str() {
            blobs.push(c.to_string());
        }
        for b in blobs {
            let r = self.get(&format!("/v2/{repo}/blobs/{b}")).await;
            assert_eq!(r.status(), StatusCode::OK, "blob {b} of {repo}:{reference}");
            assert_eq!(sha256(&r.bytes().await.expect("blob")), b, "bytes of {b}");
        }
        for child in m["manifests"].as_array().into_iter().flatten() {
            let d = child["digest"].as_str().expect("child digest").to_string();
            Box::pin(self.assert_pullable(repo, &d)).await;
        }
    }
}

fn image(config: &(String, usize), layers: &[(String, usize)]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers,
    }))
    .expect("json")
}

/// Pushes a config and one layer, then the manifest under `tag`.
async fn push_image(h: &Http, repo: &str, tag: &str, seed: &str) -> Result<String, Refused> {
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    let layer = format!("layer of {seed} ").repeat(100).into_bytes();
    let cd = h.push_blob(repo, &config).await?;
    let ld = h.push_blob(repo, &layer).await?;
    h.put_manifest(repo, tag, OCI_MANIFEST, &image(&(cd, config.len()), &[(ld, layer.len())])).await
}

/// Every blob file under the data directory.
fn blob_files(data: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = data.join("blobs");
    for algo in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for prefix in std::fs::read_dir(algo.path()).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
                out.insert(format!("{}:{}", algo.file_name().to_string_lossy(), f.file_name().to_string_lossy()));
            }
        }
    }
    out
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(entrepot_bin()).args(args).env("RUST_LOG", "warn").output().expect("run entrepot");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// HTTP pushes — blobs then their manifest at once, cross-repository mounts, tag overwrites,
/// indexes over images pushed by digest, deletes — race three collectors with a 2-second grace: the
/// server's own schedule (every second), `entrepot gc` processes, and a collector in this process.
/// Every image whose push succeeded must stay fully pullable; afterwards `entrepot gc` reclaims every
/// blob no manifest references.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn online_gc_races_http_pushes() {
    let server = Server::start_with(&["--gc-interval", "1s", "--gc-grace", "2s", "--gc-delete-untagged"]);
    if !server.managed() {
        return;
    }
    let data = server.data_dir().to_path_buf();
    let h = Http::new(&server);
    let stop = Arc::new(AtomicBool::new(false));

    // `entrepot gc` processes, one after another, while the pushes go on.
    let cli_gc = {
        let (stop, data) = (stop.clone(), data.clone());
        tokio::task::spawn_blocking(move || {
            let mut runs = 0;
            while !stop.load(Ordering::SeqCst) {
                let d = data.to_string_lossy().into_owned();
                let (ok, out, err) = run(&["gc", "--data-dir", &d, "--grace", "2s", "--delete-untagged", "--quiet"]);
                assert!(ok, "entrepot gc failed: {out}{err}");
                assert!(out.contains("blobs removed"), "{out}");
                runs += 1;
            }
            runs
        })
    };
    // A collector in this process, over the same data directory.
    let in_process = {
        let (stop, data) = (stop.clone(), data.clone());
        tokio::spawn(async move {
            let blobs = entrepot_storage::FsBlobStore::open(&data).expect("blobs");
            let meta = entrepot_meta::SqliteMetaStore::open(&data.join("meta.db")).await.expect("meta");
            let reg = entrepot_registry::Registry::new(Arc::new(blobs), Arc::new(meta), Default::default());
            let opts = entrepot_registry::gc::GcOptions {
                grace: Duration::from_secs(2),
                delete_untagged: false,
                apply_retention: false,
                dry_run: false,
            };
            let mut runs = 0;
            while !stop.load(Ordering::SeqCst) {
                reg.collect_garbage(&opts, &entrepot_registry::gc::NoProgress).await.expect("in-process gc");
                runs += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            runs
        })
    };

    let shared = b"a base layer shared by every repository ".repeat(200);
    let mut pushers = Vec::new();
    for w in 0..6usize {
        let (h, shared) = (h.clone(), shared.clone());
        pushers.push(tokio::spawn(async move {
            let repo = format!("race/w{w}");
            let neighbour = format!("race/w{}", (w + 1) % 6);
            let mut ok: Vec<(String, String)> = Vec::new();
            let mut refused = 0;
            for i in 0..30usize {
                let tag = if i % 3 == 0 { "latest".to_string() } else { format!("t{i}") };
                let attempt: Result<String, Refused> = async {
                    let base = sha256(&shared);
                    h.mount_or_upload(&repo, &base, &neighbour, &shared).await?;
                    let config = format!("{{\"w\":{w},\"i\":{i}}}").into_bytes();
                    let layer = format!("layer {w}/{i} ").repeat(300).into_bytes();
                    let cd = h.push_blob(&repo, &config).await?;
                    let ld = h.push_blob(&repo, &layer).await?;
                    let m = image(&(cd, config.len()), &[(base, shared.len()), (ld, layer.len())]);
                    if i % 4 == 1 {
                        let child = h.put_manifest(&repo, &sha256(&m), OCI_MANIFEST, &m).await?;
                        let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": m.len()}]}))
                        .expect("json");
                        h.put_manifest(&repo, &tag, OCI_INDEX, &idx).await
                    } else {
                        h.put_manifest(&repo, &tag, OCI_MANIFEST, &m).await
                    }
                }
                .await;
                match attempt {
                    Ok(d) if i % 5 == 4 => {
                        assert_eq!(h.delete(&format!("/v2/{repo}/manifests/{d}")).await.status(), StatusCode::ACCEPTED);
                    }
                    Ok(d) => ok.push((tag, d)),
                    // A step slower than the grace period is refused cleanly (the client retries).
                    Err(r) if r.body.contains("MANIFEST_BLOB_UNKNOWN") || r.body.contains("BLOB_UPLOAD_INVALID") => {
                        refused += 1
                    }
                    Err(r) => panic!("unexpected refusal {}: {}", r.status, r.body),
                }
            }
            (repo, ok, refused)
        }));
    }
    let mut results = Vec::new();
    for p in pushers {
        results.push(p.await.expect("pusher"));
    }
    stop.store(true, Ordering::SeqCst);
    let cli_runs = cli_gc.await.expect("cli gc");
    let in_process_runs = in_process.await.expect("in-process gc");
    assert!(cli_runs >= 1 && in_process_runs >= 2, "collectors ran: {cli_runs} cli, {in_process_runs} in-process");

    let mut checked = 0;
    let mut succeeded = 0;
    for (repo, ok, _) in &results {
        succeeded += ok.len();
        for (tag, d) in ok {
            let now = h.get(&format!("/v2/{repo}/manifests/{tag}")).await;
            let current = now.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
            if current.as_deref() == Some(d.as_str()) {
                h.assert_pullable(repo, tag).await;
                checked += 1;
            }
        }
    }
    let refused: usize = results.iter().map(|r| r.2).sum();
    eprintln!(
        "{succeeded} pushes kept, {refused} refused, {checked} pulled; {cli_runs} `entrepot gc` runs, {in_process_runs} in-process runs"
    );
    assert!(succeeded >= 80, "most pushes succeed ({succeeded} ok, {refused} refused)");
    assert!(checked >= 60, "the current tags were all pulled ({checked})");

    // Reclaim with no grace: exactly the blobs the remaining manifests reference stay on disk.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let d = data.to_string_lossy().into_owned();
    let (ok, out, err) = run(&["gc", "--data-dir", &d, "--grace", "0s", "--delete-untagged"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("bytes reclaimed"), "{out}");
    let mut referenced = BTreeSet::new();
    for (repo, _, _) in &results {
        let tags: Value = h.get(&format!("/v2/{repo}/tags/list")).await.json().await.expect("tags");
        for t in tags["tags"].as_array().into_iter().flatten() {
            let t = t.as_str().expect("tag");
            h.assert_pullable(repo, t).await;
            let m: Value =
                h.c.get(format!("{}/v2/{repo}/manifests/{t}", h.base))
                    .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
                    .send()
                    .await
                    .expect("GET")
                    .json()
                    .await
                    .expect("json");
            let mut manifests = vec![m];
            while let Some(m) = manifests.pop() {
                for l in m["layers"].as_array().into_iter().flatten() {
                    referenced.insert(l["digest"].as_str().expect("digest").to_string());
                }
                if let Some(c) = m["config"]["digest"].as_str() {
                    referenced.insert(c.to_string());
                }
                for child in m["manifests"].as_array().into_iter().flatten() {
                    let cd = child["digest"].as_str().expect("digest");
                    manifests.push(h.get(&format!("/v2/{repo}/manifests/{cd}")).await.json().await.expect("child"));
                }
            }
        }
    }
    assert_eq!(blob_files(&data), referenced, "unreferenced blobs were reclaimed, referenced ones kept");
    let staged = std::fs::read_dir(data.join("uploads")).expect("uploads").count();
    assert_eq!(staged, 0, "no staged upload is left");
}

fn config_file(dir: &Path, text: &str) -> String {
    let p = dir.join("entrepot.toml");
    std::fs::write(&p, text).expect("config");
    p.to_string_lossy().into_owned()
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Immutable tags and quotas answer `403 DENIED` with a message naming the rule; SIGUSR1 / SIGUSR2
/// switch read-only mode, in which pulls work and writes are refused.
#[tokio::test]
async fn rules_and_read_only_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(
        dir.path(),
        r#"
        [[immutable_tags]]
        repository = "team/**"
        tags = ["v*"]

        [[quota]]
        repository = "small/*"
        max_bytes = "4KiB"
        max_tags = 1
        "#,
    );
    let server = Server::start_with(&["--config", &cfg]);
    if !server.managed() {
        return;
    }
    let h = Http::new(&server);
    push_image(&h, "team/app", "v1", "one").await.expect("v1");
    push_image(&h, "team/app", "v1", "one").await.expect("the same content again");
    let r = push_image(&h, "team/app", "v1", "two").await.expect_err("moving v1");
    assert_eq!((r.status, error_code(&r.body).as_str()), (StatusCode::FORBIDDEN, "DENIED"), "{}", r.body);
    assert!(r.body.contains("immutable") && r.body.contains("team/**") && r.body.contains("v*"), "{}", r.body);
    let r = h.delete("/v2/team/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    push_image(&h, "team/app", "latest", "one").await.expect("latest");
    push_image(&h, "team/app", "latest", "two").await.expect("latest moves");

    push_image(&h, "small/app", "a", "a").await.expect("within quota");
    let r = push_image(&h, "small/app", "b", "b").await.expect_err("second tag");
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("tag quota of small/*"), "{}", r.body);
    let r = h.push_blob("small/app", &[7u8; 5000]).await.expect_err("beyond 4KiB");
    assert_eq!(error_code(&r.body), "DENIED", "{}", r.body);
    assert!(r.body.contains("storage quota of small/*"), "{}", r.body);

    let pid = server.pid().expect("pid").to_string();
    assert!(Command::new("kill").args(["-USR1", &pid]).status().expect("kill").success());
    let mut refused = None;
    for _ in 0..50 {
        match push_image(&h, "team/app", "later", "later").await {
            Err(r) if r.body.contains("read-only") => {
                refused = Some(r);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let r = refused.expect("writes refused in read-only mode");
    assert_eq!((r.status, error_code(&r.body).as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    h.assert_pullable("team/app", "v1").await;
    assert_eq!(h.delete("/v2/team/app/manifests/latest").await.status(), StatusCode::FORBIDDEN);
    assert!(Command::new("kill").args(["-USR2", &pid]).status().expect("kill").success());
    let mut writable = false;
    for _ in 0..50 {
        if push_image(&h, "team/app", "later", "later").await.is_ok() {
            writable = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(writable, "writes accepted again after SIGUSR2");
}

/// Read-only mode from the start (`--read-only`, as `read_only = true` or `ENTREPOT_READ_ONLY=true`).
#[tokio::test]
async fn read_only_from_the_start() {
    let server = Server::start_with(&["--read-only"]);
    if !server.managed() {
        return;
    }
    let h = Http::new(&server);
    let r = h.push_blob("x/y", b"data").await.expect_err("read-only");
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("read-only maintenance mode"), "{}", r.body);
    assert_eq!(h.get("/v2/").await.status(), StatusCode::OK);
    assert_eq!(h.get("/v2/_catalog").await.status(), StatusCode::OK);
}

/// `entrepot retention` prints a readable plan and applies it; `entrepot usage` reports against the
/// quotas; `entrepot scrub` finds a flipped byte in a layer and a manifest altered in the database,
/// and `--repair` quarantines them.
#[tokio::test]
async fn retention_usage_and_scrub_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(
        dir.path(),
        r#"
        [[retention]]
        repository = "team/*"
        keep_last = 2
        keep_tags = ["stable"]

        [[quota]]
        repository = "team/*"
        max_bytes = "1MiB"
        "#,
    );
    let server = Server::start_with(&["--config", &cfg]);
    if !server.managed() {
        return;
    }
    let h = Http::new(&server);
    let data = server.data_dir().to_string_lossy().into_owned();
    for t in ["stable", "b1", "b2", "b3", "b4"] {
        push_image(&h, "team/app", t, t).await.expect("push");
        // Distinct push times, so that "most recent" is unambiguous.
        tokio::time::sleep(Duration::from_millis(1050)).await;
    }

    let (ok, out, err) = run(&["retention", "--config", &cfg, "--data-dir", &data, "--dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("REPOSITORY") && out.contains("REASON"), "{out}");
    let line = |tag: &str| out.lines().find(|l| l.split_whitespace().nth(1) == Some(tag)).unwrap_or("").to_string();
    assert!(line("b1").contains("DELETE") && line("b1").contains("not one of the 2 most recent"), "{out}");
    assert!(line("b2").contains("DELETE"), "{out}");
    assert!(line("b4").contains("keep") && line("b4").contains("one of the 2 most recent"), "{out}");
    assert!(line("stable").contains("matches keep_tags `stable`"), "{out}");
    assert!(out.contains("2 of 5 tags would be deleted"), "{out}");
    assert_eq!(h.get("/v2/team/app/manifests/b1").await.status(), StatusCode::OK, "a dry run deletes nothing");
    let (ok, out, _) = run(&["retention", "--config", &cfg, "--data-dir", &data]);
    assert!(ok && out.contains("2 tags deleted"), "{out}");
    assert_eq!(h.get("/v2/team/app/manifests/b1").await.status(), StatusCode::NOT_FOUND);

    let (ok, out, err) = run(&["usage", "--config", &cfg, "--data-dir", &data]);
    assert!(ok, "{out}{err}");
    let row = out.lines().find(|l| l.starts_with("team/app")).unwrap_or_default().to_string();
    assert!(row.contains("1.0 MiB") && row.contains("[team/*]") && row.contains('%'), "{out}");

    // Corrupt a layer of b3 and the stored manifest of b4.
    let m: Value = h.get("/v2/team/app/manifests/b3").await.json().await.expect("b3");
    let layer = m["layers"][0]["digest"].as_str().expect("layer").to_string();
    let path = Path::new(&data).join("blobs/sha256").join(&layer[7..9]).join(&layer[7..]);
    let mut bytes = std::fs::read(&path).expect("layer file");
    bytes[3] ^= 0x20;
    std::fs::write(&path, &bytes).expect("flip a byte");
    let b4 = h.get("/v2/team/app/manifests/b4").await;
    let b4_digest = b4.headers()["docker-content-digest"].to_str().expect("digest").to_string();
    let sql = format!(
        ".timeout 10000\nUPDATE manifests SET content = CAST(replace(CAST(content AS TEXT), 'b4', 'B4') AS BLOB) \
         WHERE repo = 'team/app' AND digest = '{b4_digest}';\n"
    );
    let mut child = Command::new("sqlite3")
        .arg(Path::new(&data).join("meta.db"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3 (apt-get install sqlite3)");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), sql.as_bytes()).expect("sql");
    drop(child.stdin.take());
    assert!(child.wait().expect("sqlite3").success());

    let (ok, out, _) = run(&["scrub", "--data-dir", &data, "--quiet"]);
    assert!(!ok, "problems found: exit status 1\n{out}");
    assert!(out.contains(&format!("CORRUPT   {layer}")), "{out}");
    assert!(out.contains(&format!("MANIFEST  team/app@{b4_digest}")), "{out}");
    assert!(out.contains("2 problem(s); run with --repair"), "{out}");
    assert_eq!(
        h.get(&format!("/v2/team/app/blobs/{layer}")).await.status(),
        StatusCode::OK,
        "no change without --repair"
    );

    let (_, out, _) = run(&["scrub", "--data-dir", &data, "--repair", "--quiet"]);
    assert!(out.contains("repaired: moved to") && out.contains("repaired: removed; its bytes are in"), "{out}");
    let r = h.get(&format!("/v2/team/app/blobs/{layer}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "a corrupt blob is no longer served");
    assert_eq!(h.get("/v2/team/app/manifests/b4").await.status(), StatusCode::NOT_FOUND);
    let quarantine = Path::new(&data).join("quarantine");
    assert!(quarantine.join(format!("sha256-{}", &layer[7..])).exists());
    assert_eq!(std::fs::read_dir(quarantine.join("manifests")).expect("manifests").count(), 1);
    let (ok, out, _) = run(&["scrub", "--data-dir", &data, "--quiet"]);
    assert!(ok, "clean after repair: {out}");
}
