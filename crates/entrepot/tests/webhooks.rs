//! Webhooks end to end: a real `entrepot serve` delivering to a Python receiver on 127.0.0.1 that checks
//! each signature with Python's own `hmac` — pushes, pulls and deletes arrive as signed CloudEvents,
//! filters hold, a receiver that is down gets the event once it is up, and a server killed with SIGKILL
//! before delivering delivers after its restart.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use support::Server;

const SECRET: &str = "webhook-secret-42";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The Python receiver; its lines arrive on a channel.
struct Receiver {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<Value>,
}

impl Receiver {
    fn start(port: u16, fail_first: u32) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/receiver.py");
        let mut last = String::new();
        // The port may still be held briefly by a previous receiver.
        for _ in 0..50 {
            let mut child = Command::new("python3")
                .arg(&script)
                .arg(port.to_string())
                .arg(SECRET)
                .arg(fail_first.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("python3 (see .ci/install-clients)");
            let mut out = BufReader::new(child.stdout.take().expect("stdout"));
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            if let Some(p) = line.trim().strip_prefix("listening on ") {
                let port = p.parse().expect("port");
                return Receiver { child, port, lines: forward(out) };
            }
            last = line;
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("receiver did not start: {last}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn next(&self, within: Duration) -> Option<Value> {
        self.lines.recv_timeout(within).ok()
    }

    fn expect(&self, what: &str) -> Value {
        self.next(Duration::from_secs(30)).unwrap_or_else(|| panic!("no delivery for {what}"))
    }
}

fn forward(out: BufReader<ChildStdout>) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { return };
            if tx.send(serde_json::from_str(&line).expect("receiver line")).is_err() {
                return;
            }
        }
    });
    rx
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A configuration file with one webhook (plus `extra` keys in its table).
fn config(dir: &Path, url: &str, extra: &str) -> String {
    let path = dir.join("entrepot.toml");
    let text = format!(
        "event_source = \"https://registry.test\"\n[[webhooks]]\nname = \"receiver\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nbackoff_initial_ms = 200\nbackoff_max_ms = 400\n{extra}"
    );
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_string()
}

/// Pushes a one-layer image as `repo:tag`; returns the manifest's digest and bytes.
async fn push(http: &Client, base: &str, repo: &str, tag: &str) -> (String, Vec<u8>) {
    let layer = format!("layer of {repo}:{tag}").into_bytes();
    let config = b"{}".to_vec();
    for blob in [&layer, &config] {
        let r = http
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)))
            .body(blob.clone())
            .send()
            .await
            .expect("POST blob");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}]
    })
    .to_string()
    .into_bytes();
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(r.status(), StatusCode::CREATED);
    (sha256(&manifest), manifest)
}

/// A Prometheus sample of `/metrics`.
async fn metric(http: &Client, base: &str, series: &str) -> f64 {
    let page = http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).map(|v| v.parse().expect("value")))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn signed_cloudevents_for_push_pull_delete_with_filters() {
    let receiver = Receiver::start(0, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &receiver.url(), "events = [\"push\", \"delete\"]\nrepositories = [\"team/**\"]\n");
    let server = Server::start_with(&["--config", &cfg]);
    if !server.managed() {
        return;
    }
    let (http, base) = (support::http_client(), server.url());

    let (digest, manifest) = push(&http, &base, "team/app", "1.0").await;
    let got = receiver.expect("the push");
    assert_eq!(got["valid"], true, "signature checked by Python's hmac: {got}");
    assert_eq!(got["content_type"], "application/cloudevents+json; charset=utf-8");
    assert_eq!(got["attempt"], "1");
    let e = &got["event"];
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["type"], "io.entrepot.image.pushed");
    assert_eq!(e["source"], "https://registry.test");
    assert_eq!(e["subject"], "team/app:1.0");
    assert!(e["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 24), "{e}");
    assert_eq!(e["datacontenttype"], "application/json");
    assert_eq!(e["data"]["repository"], "team/app");
    assert_eq!(e["data"]["digest"], digest.as_str());
    assert_eq!(e["data"]["tag"], "1.0");
    assert_eq!(e["data"]["mediaType"], OCI_MANIFEST);
    assert_eq!(e["data"]["size"], manifest.len() as u64);

    // Filtered out: a pull (kind) and a push outside team/** (repository).
    let r = http.get(format!("{base}/v2/team/app/manifests/1.0")).header("accept", OCI_MANIFEST).send().await;
    assert_eq!(r.expect("GET").status(), StatusCode::OK);
    push(&http, &base, "other/app", "1.0").await;
    // Deleting the tag: an event naming the digest it pointed to. Deliveries keep their order, so had
    // the filtered events been queued they would arrive before this one.
    let r = http.delete(format!("{base}/v2/team/app/manifests/1.0")).send().await.expect("DELETE");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let got = receiver.expect("the delete");
    assert_eq!(got["valid"], true);
    assert_eq!(got["event"]["type"], "io.entrepot.image.deleted");
    assert_eq!(got["event"]["subject"], "team/app:1.0");
    assert_eq!(got["event"]["data"]["digest"], digest.as_str());
    assert!(receiver.next(Duration::from_millis(500)).is_none(), "nothing else is delivered");
    assert_eq!(metric(&http, &base, "entrepot_webhook_deliveries_total{outcome=\"delivered\"}").await, 2.0);
}

#[tokio::test]
async fn pulls_are_events_when_asked_for_and_heads_are_not() {
    let receiver = Receiver::start(0, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(&["--config", &config(dir.path(), &receiver.url(), "events = [\"pull\"]\n")]);
    if !server.managed() {
        return;
    }
    let (http, base) = (support::http_client(), server.url());
    let (digest, _) = push(&http, &base, "lib/x", "v1").await;
    let r = http.head(format!("{base}/v2/lib/x/manifests/v1")).header("accept", OCI_MANIFEST).send().await;
    assert_eq!(r.expect("HEAD").status(), StatusCode::OK);
    let r = http.get(format!("{base}/v2/lib/x/manifests/{digest}")).header("accept", OCI_MANIFEST).send().await;
    assert_eq!(r.expect("GET").status(), StatusCode::OK);
    let got = receiver.expect("the pull");
    assert_eq!(got["event"]["type"], "io.entrepot.image.pulled");
    assert_eq!(got["event"]["subject"], format!("lib/x@{digest}"));
    assert!(receiver.next(Duration::from_millis(500)).is_none(), "the push and the HEAD are not sent");
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_event_when_it_comes_up() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(&["--config", &config(dir.path(), &format!("http://127.0.0.1:{port}/hook"), "")]);
    if !server.managed() {
        return;
    }
    let (http, base) = (support::http_client(), server.url());
    let (digest, _) = push(&http, &base, "team/app", "down").await;
    // Refused connections are retried with backoff.
    let mut retried = 0.0;
    for _ in 0..100 {
        retried = metric(&http, &base, "entrepot_webhook_deliveries_total{outcome=\"retried\"}").await;
        if retried >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(retried >= 2.0, "retries counted: {retried}");

    // The receiver comes up, and also fails once: the event still arrives, intact and signed.
    let receiver = Receiver::start(port, 1);
    let first = receiver.expect("the retried push");
    assert_eq!(first["answered"], 500);
    let got = receiver.expect("the push after the 500");
    assert_eq!(got["answered"], 204);
    assert_eq!(got["valid"], true);
    assert_eq!(got["event"], first["event"], "every attempt sends the same event");
    assert_eq!(got["event"]["data"]["digest"], digest.as_str());
    let attempt: u32 = got["attempt"].as_str().expect("attempt").parse().expect("number");
    assert!(attempt >= 4, "at least two refused attempts, one 500, then this one: {attempt}");
}

#[tokio::test]
async fn undelivered_events_survive_sigkill() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    // Long backoff: the events must still be pending when the server dies.
    let cfg = config(dir.path(), &format!("http://127.0.0.1:{port}/hook"), "");
    let cfg_text =
        std::fs::read_to_string(&cfg).expect("read").replace("backoff_max_ms = 400", "backoff_max_ms = 2000");
    std::fs::write(&cfg, cfg_text.replace("backoff_initial_ms = 200", "backoff_initial_ms = 1000")).expect("write");
    let mut server = Server::start_with(&["--config", &cfg]);
    if !server.managed() {
        return;
    }
    let http = support::http_client();
    let (d1, _) = push(&http, &server.url(), "team/app", "one").await;
    let (d2, _) = push(&http, &server.url(), "team/app", "two").await;
    server.kill();

    let receiver = Receiver::start(port, 0);
    assert!(receiver.next(Duration::from_millis(300)).is_none(), "nobody delivers while the server is dead");
    server.restart();
    let a = receiver.expect("the first push, after the restart");
    let b = receiver.expect("the second push, after the restart");
    assert_eq!((a["valid"].as_bool(), b["valid"].as_bool()), (Some(true), Some(true)));
    assert_eq!(a["event"]["data"]["digest"], d1.as_str(), "in order");
    assert_eq!(b["event"]["data"]["digest"], d2.as_str());
    assert_eq!(a["event"]["subject"], "team/app:one");
}

#[tokio::test]
async fn the_actor_is_the_authenticated_user() {
    let receiver = Receiver::start(0, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let htpasswd = dir.path().join("htpasswd");
    let mut add = Command::new(support::entrepot_bin())
        .args(["user", "add", "alice", "--cost", "4", "--htpasswd"])
        .arg(&htpasswd)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("user add");
    std::io::Write::write_all(&mut add.stdin.take().expect("stdin"), b"alice-password\n").expect("password");
    assert!(add.wait().expect("wait").success());
    let cfg = config(dir.path(), &receiver.url(), "events = [\"push\"]\n");
    let server = Server::start_with(&["--config", &cfg, "--htpasswd", htpasswd.to_str().expect("utf-8")]);
    if !server.managed() {
        return;
    }
    let (http, base) = (support::http_client(), server.url());
    let blob = b"{}".to_vec();
    let r = http
        .post(format!("{base}/v2/team/app/blobs/uploads/?digest={}", sha256(&blob)))
        .basic_auth("alice", Some("alice-password"))
        .body(blob.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&blob), "size": 2},
        "layers": []
    })
    .to_string();
    let r = http
        .put(format!("{base}/v2/team/app/manifests/signed"))
        .basic_auth("alice", Some("alice-password"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = receiver.expect("the push");
    assert_eq!(got["event"]["data"]["actor"], "alice", "{got}");
    assert_eq!(got["valid"], true);
}
