//! The sink and the dispatcher end to end: events recorded through the registry's `EventSink` trait,
//! queued in a real SQLite outbox, delivered over HTTP to a receiver on 127.0.0.1 that fails on demand.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entrepot_events::{WebhookConfig, WebhookSink, config, sign};
use entrepot_meta::{EventOutbox, SqliteMetaStore};
use entrepot_oci::{Digest, RepoName, Tag};
use entrepot_registry::metrics::DeliveryOutcome;
use entrepot_registry::{EventKind, EventSink, Metrics, RegistryEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// A minimal HTTP/1.1 receiver: answers each request with the next status of `script` (200 once the
/// script runs out), one request per connection.
async fn receiver(script: Vec<u16>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    tokio::spawn(async move {
        let mut script = script.into_iter();
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, len) = loop {
                let n = s.read(&mut chunk).await.expect("read");
                assert!(n > 0, "connection closed before the headers ended");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..p]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .map(|v| v.parse::<usize>().expect("length"))
                        .unwrap_or(0);
                    break (p + 4, len);
                }
            };
            while buf.len() < head_end + len {
                let n = s.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "connection closed inside the body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
                .collect();
            seen.lock().expect("lock").push(Received { headers, body: buf[head_end..head_end + len].to_vec() });
            let status = script.next().unwrap_or(200);
            let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    (url, log)
}

fn hook(url: &str, extra: &str) -> WebhookConfig {
    toml::from_str(&format!(
        "url = \"{url}\"\nsecret = \"s3cret\"\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\n{extra}"
    ))
    .expect("hook")
}

fn push(repo: &str, tag: &str) -> RegistryEvent {
    let mut e =
        RegistryEvent::now(EventKind::Push, RepoName::parse(repo).expect("repo"), Digest::sha256(tag.as_bytes()));
    e.tag = Some(Tag::parse(tag).expect("tag"));
    e
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tags(log: &Mutex<Vec<Received>>) -> Vec<String> {
    log.lock().expect("lock").iter().map(|r| r.json()["data"]["tag"].as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test]
async fn retried_in_order_and_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("open"));
    let (url, log) = receiver(vec![500, 503]).await;
    let endpoints = config::compile(&[hook(&url, "")]).expect("valid");
    let sink = WebhookSink::new(endpoints, store.clone(), "/test");
    let metrics = Arc::new(Metrics::default());
    let _tasks = sink.dispatcher(metrics.clone()).spawn().expect("spawn");

    sink.record(vec![push("team/app", "v1"), push("team/app", "v2")]).await.expect("record");
    sink.record(vec![push("team/app", "v3")]).await.expect("record");
    wait_for("3 deliveries", || metrics.webhook_deliveries(DeliveryOutcome::Delivered) == 3).await;

    // v1 failed twice (500, 503) and blocked v2 and v3 behind it until it went through.
    assert_eq!(tags(&log), ["v1", "v1", "v1", "v2", "v3"]);
    assert_eq!(metrics.webhook_deliveries(DeliveryOutcome::Retried), 2);
    let got = log.lock().expect("lock").clone();
    assert_eq!(got[0].body, got[2].body, "a retry sends the same bytes");
    assert_eq!(
        got.iter().map(|r| r.header("x-entrepot-attempt").unwrap_or("")).collect::<Vec<_>>(),
        ["1", "2", "3", "1", "1"]
    );
    for r in &got {
        assert_eq!(r.header("content-type"), Some("application/cloudevents+json; charset=utf-8"));
        assert_eq!(r.header("x-entrepot-signature"), Some(sign::signature(b"s3cret", &r.body).as_str()));
        assert_eq!(r.json()["source"], "/test");
    }
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = store.pending(&url, 10).await.expect("pending").len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "delivered rows are removed");
}

#[tokio::test]
async fn given_up_after_max_attempts_then_the_queue_moves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("open"));
    let (url, log) = receiver(vec![500, 500]).await;
    let endpoints = config::compile(&[hook(&url, "name = \"h\"\nmax_attempts = 2\n")]).expect("valid");
    let sink = WebhookSink::new(endpoints, store.clone(), "/test");
    let metrics = Arc::new(Metrics::default());
    let _tasks = sink.dispatcher(metrics.clone()).spawn().expect("spawn");

    sink.record(vec![push("a", "doomed"), push("a", "fine")]).await.expect("record");
    wait_for("the second event", || metrics.webhook_deliveries(DeliveryOutcome::Delivered) == 1).await;
    assert_eq!(tags(&log), ["doomed", "doomed", "fine"]);
    assert_eq!(metrics.webhook_deliveries(DeliveryOutcome::Dropped), 1);
    let failed = store.failed("h", 10).await.expect("failed");
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].attempts, failed[0].last_error.as_deref()), (2, Some("HTTP 500")));
}

#[tokio::test]
async fn filters_decide_what_is_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("open"));
    let hooks = [
        hook("http://127.0.0.1:9/a", "name = \"pushes\"\nevents = [\"push\"]\nrepositories = [\"team/**\"]\n"),
        hook("http://127.0.0.1:9/b", "name = \"deletes\"\nevents = [\"delete\"]\n"),
    ];
    // No dispatcher: only what the sink queues is looked at.
    let sink = WebhookSink::new(config::compile(&hooks).expect("valid"), store.clone(), "/test");
    let team = RepoName::parse("team/x/y").expect("repo");
    let other = RepoName::parse("other").expect("repo");
    assert!(sink.wants(EventKind::Push, &team));
    assert!(!sink.wants(EventKind::Push, &other));
    assert!(sink.wants(EventKind::Delete, &other));
    assert!(!sink.wants(EventKind::Pull, &team));

    let mut del = push("team/x/y", "old");
    del.kind = EventKind::Delete;
    sink.record(vec![push("team/x/y", "v1"), push("other", "v1"), del]).await.expect("record");
    let pushes = store.pending("pushes", 10).await.expect("pending");
    let deletes = store.pending("deletes", 10).await.expect("pending");
    assert_eq!(pushes.len(), 1);
    assert_eq!(deletes.len(), 1);
    let p: serde_json::Value = serde_json::from_slice(&pushes[0].body).expect("json");
    assert_eq!((p["subject"].as_str(), p["type"].as_str()), (Some("team/x/y:v1"), Some("io.entrepot.image.pushed")));
    let d: serde_json::Value = serde_json::from_slice(&deletes[0].body).expect("json");
    assert_eq!(d["type"], "io.entrepot.image.deleted");
}
