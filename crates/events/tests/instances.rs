//! Several instances on one PostgreSQL outbox: two dispatchers (each with its own store and pool, as
//! two `entrepot serve` processes have) deliver one endpoint's queue to a receiver on 127.0.0.1 that
//! handles connections concurrently, fails some first attempts and records what it accepted. Every
//! event is accepted exactly once, in the order it was queued, and never two requests are in flight at
//! once; when one instance's workers stop, the other delivers what is queued afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entrepot_events::{WebhookConfig, WebhookSink, config};
use entrepot_meta::pgtest::PgServer;
use entrepot_meta::{EventOutbox, PgMetaStore};
use entrepot_oci::{Digest, RepoName, Tag};
use entrepot_registry::metrics::DeliveryOutcome;
use entrepot_registry::{EventKind, EventSink, Metrics, RegistryEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the receiver saw.
#[derive(Default)]
struct Log {
    /// Tags of the requests answered 2xx, in order.
    accepted: Mutex<Vec<String>>,
    /// Requests answered 500.
    refused: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A receiver that serves each connection on its own task (so concurrent deliveries would overlap),
/// takes 5 ms per request, and answers 500 to the first attempt of every event whose tag ends in 0.
async fn receiver() -> (String, Arc<Log>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let log = Arc::new(Log::default());
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let log = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head_end, len) = loop {
                    let n = s.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "connection closed before the headers ended");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().to_string()))
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
                let now = log.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                log.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let first = head.lines().any(|l| l.replace(' ', "") == "x-entrepot-attempt:1");
                let body: serde_json::Value = serde_json::from_slice(&buf[head_end..head_end + len]).expect("json");
                let tag = body["data"]["tag"].as_str().expect("tag").to_string();
                tokio::time::sleep(Duration::from_millis(5)).await;
                let status = if first && tag.ends_with('0') {
                    log.refused.fetch_add(1, Ordering::SeqCst);
                    500
                } else {
                    log.accepted.lock().expect("lock").push(tag);
                    200
                };
                log.in_flight.fetch_sub(1, Ordering::SeqCst);
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (url, log)
}

fn hook(url: &str) -> WebhookConfig {
    toml::from_str(&format!("name = \"h\"\nurl = \"{url}\"\nbackoff_initial_ms = 20\nbackoff_max_ms = 100\n"))
        .expect("hook")
}

fn push(tag: &str) -> RegistryEvent {
    let mut e =
        RegistryEvent::now(EventKind::Push, RepoName::parse("team/app").expect("repo"), Digest::sha256(tag.as_bytes()));
    e.tag = Some(Tag::parse(tag).expect("tag"));
    e
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_deliver_each_event_once_in_order() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let (a, b) = tokio::join!(PgMetaStore::connect(&url), PgMetaStore::connect(&url));
    let (a, b) = (Arc::new(a.expect("instance a")), Arc::new(b.expect("instance b")));
    let (hook_url, log) = receiver().await;
    let endpoints = || config::compile(&[hook(&hook_url)]).expect("valid");
    let sink_a = WebhookSink::new(endpoints(), a.clone(), "/a");
    let sink_b = WebhookSink::new(endpoints(), b.clone(), "/b");
    let (metrics_a, metrics_b) = (Arc::new(Metrics::default()), Arc::new(Metrics::default()));
    let tasks_a = sink_a.dispatcher(metrics_a.clone()).spawn().expect("spawn a");
    let _tasks_b = sink_b.dispatcher(metrics_b.clone()).spawn().expect("spawn b");
    let delivered = || {
        metrics_a.webhook_deliveries(DeliveryOutcome::Delivered)
            + metrics_b.webhook_deliveries(DeliveryOutcome::Delivered)
    };

    // 60 events queued through both instances, alternately, each waking its own instance's worker.
    let tags: Vec<String> = (0..60).map(|i| format!("v{i:03}")).collect();
    for (i, t) in tags.iter().enumerate() {
        let sink = if i % 2 == 0 { &sink_a } else { &sink_b };
        sink.record(vec![push(t)]).await.expect("record");
        if i % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    wait_for("60 deliveries", || delivered() >= 60).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*log.accepted.lock().expect("lock"), tags, "each event accepted once, in queue order");
    assert_eq!(delivered(), 60, "no event delivered twice");
    assert_eq!(log.refused.load(Ordering::SeqCst), 6, "every event ending in 0 was refused once, then retried");
    assert_eq!(log.max_in_flight.load(Ordering::SeqCst), 1, "never two deliveries of the endpoint at once");
    assert_eq!(a.counts().await.expect("counts"), entrepot_meta::OutboxCounts::default());

    // Instance A's workers stop (their claims go with them); what A queues afterwards goes out
    // through B.
    for t in tasks_a {
        t.abort();
    }
    let before_b = metrics_b.webhook_deliveries(DeliveryOutcome::Delivered);
    let later: Vec<String> = (60..70).map(|i| format!("v{i:03}")).collect();
    for t in &later {
        sink_a.record(vec![push(t)]).await.expect("record");
    }
    wait_for("the events queued after A stopped", || {
        metrics_b.webhook_deliveries(DeliveryOutcome::Delivered) >= before_b + 10
    })
    .await;
    let all: Vec<String> = tags.iter().chain(&later).cloned().collect();
    assert_eq!(*log.accepted.lock().expect("lock"), all);
    assert_eq!(log.max_in_flight.load(Ordering::SeqCst), 1);
}
