//! Prometheus metrics of the HTTP edge, and the `/metrics` page (text exposition format 0.0.4) that
//! shows them together with the registry's own counters (`entrepot_registry::Metrics`).
//!
//! Every label set is fixed in advance: `route` is the kind of [`Action`] (never the raw path),
//! `method` one of a few verbs, `status` one of the codes a registry answers (or its class, `4xx`),
//! so a request bumps a few atomics found by index — no lock, no map, no allocation. Rendering walks
//! the arrays and prints only the series that have been seen. Must never take a label value from the
//! request itself.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use entrepot_registry::Metrics;
use entrepot_registry::metrics::DeliveryOutcome;
use http::{Method, StatusCode};

use crate::route::Action;

/// Route labels: the [`Action`] kinds, then the paths outside `/v2/`, then everything else.
pub const ROUTES: &[&str] = &[
    "api_version",
    "catalog",
    "get_blob",
    "delete_blob",
    "start_upload",
    "upload_status",
    "patch_upload",
    "finish_upload",
    "cancel_upload",
    "get_manifest",
    "put_manifest",
    "delete_manifest",
    "list_tags",
    "referrers",
    "scan_report",
    "token",
    "metrics",
    "healthz",
    "readyz",
    "unknown",
];

/// The route label of an action.
pub fn action_label(a: &Action) -> &'static str {
    match a {
        Action::ApiVersion => "api_version",
        Action::Catalog => "catalog",
        Action::GetBlob { .. } => "get_blob",
        Action::DeleteBlob { .. } => "delete_blob",
        Action::StartUpload { .. } => "start_upload",
        Action::UploadStatus { .. } => "upload_status",
        Action::PatchUpload { .. } => "patch_upload",
        Action::FinishUpload { .. } => "finish_upload",
        Action::CancelUpload { .. } => "cancel_upload",
        Action::GetManifest { .. } => "get_manifest",
        Action::PutManifest { .. } => "put_manifest",
        Action::DeleteManifest { .. } => "delete_manifest",
        Action::ListTags { .. } => "list_tags",
        Action::Referrers { .. } => "referrers",
        Action::ScanReport { .. } => "scan_report",
    }
}

/// Index of a route label in [`ROUTES`] (`unknown` for anything else).
pub fn route_index(label: &str) -> usize {
    ROUTES.iter().position(|r| *r == label).unwrap_or(ROUTES.len() - 1)
}

const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "other"];

fn method_index(m: &Method) -> usize {
    METHODS.iter().position(|x| *x == m.as_str()).unwrap_or(METHODS.len() - 1)
}

/// Codes counted one by one; any other is counted under its class (`1xx` … `5xx`).
const STATUSES: &[u16] = &[
    200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 411, 413, 414, 415, 416, 429,
    431, 500, 501, 502, 503, 504,
];
const CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_index(s: StatusCode) -> usize {
    let code = s.as_u16();
    match STATUSES.iter().position(|c| *c == code) {
        Some(i) => i,
        None => STATUSES.len() + usize::from((code / 100).clamp(1, 5) - 1),
    }
}

fn status_label(i: usize) -> String {
    match STATUSES.get(i) {
        Some(c) => c.to_string(),
        None => CLASSES[i - STATUSES.len()].to_string(),
    }
}

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum_micros: AtomicU64::new(0) }
    }
}

/// Counters of the HTTP edge. One per server, shared by every request.
pub struct HttpMetrics {
    /// `[route][method][status]`
    requests: Box<[AtomicU64]>,
    /// `[route][method]`
    latency: Box<[Histogram]>,
    /// `[route]`
    bytes_in: Box<[AtomicU64]>,
    bytes_out: Box<[AtomicU64]>,
    in_flight: AtomicI64,
    uploads_in_flight: AtomicI64,
}

const N_STATUS: usize = STATUSES.len() + CLASSES.len();

impl Default for HttpMetrics {
    fn default() -> Self {
        let atomics = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        HttpMetrics {
            requests: atomics(ROUTES.len() * METHODS.len() * N_STATUS),
            latency: (0..ROUTES.len() * METHODS.len()).map(|_| Histogram::default()).collect(),
            bytes_in: atomics(ROUTES.len()),
            bytes_out: atomics(ROUTES.len()),
            in_flight: AtomicI64::new(0),
            uploads_in_flight: AtomicI64::new(0),
        }
    }
}

/// Whether requests on this route carry upload bytes.
pub fn is_upload(route: usize) -> bool {
    matches!(ROUTES[route], "start_upload" | "patch_upload" | "finish_upload")
}

/// Counts a request as in flight (and an upload, on upload routes) until it is dropped.
pub struct InFlight {
    http: Arc<HttpMetrics>,
    upload: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.http.in_flight.fetch_sub(1, Relaxed);
        if self.upload {
            self.http.uploads_in_flight.fetch_sub(1, Relaxed);
        }
    }
}

impl HttpMetrics {
    /// Starts counting a request on `route` as in flight.
    pub fn start(self: &Arc<Self>, route: usize) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        let upload = is_upload(route);
        if upload {
            self.uploads_in_flight.fetch_add(1, Relaxed);
        }
        InFlight { http: self.clone(), upload }
    }

    /// Records a finished request.
    pub fn record(
        &self,
        route: usize,
        method: &Method,
        status: StatusCode,
        took: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let route = route.min(ROUTES.len() - 1);
        let m = method_index(method);
        self.requests[(route * METHODS.len() + m) * N_STATUS + status_index(status)].fetch_add(1, Relaxed);
        let h = &self.latency[route * METHODS.len() + m];
        let secs = took.as_secs_f64();
        let b = BUCKETS.iter().position(|le| secs <= *le).unwrap_or(BUCKETS.len());
        h.counts[b].fetch_add(1, Relaxed);
        h.sum_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.bytes_in[route].fetch_add(bytes_in, Relaxed);
        self.bytes_out[route].fetch_add(bytes_out, Relaxed);
    }

    pub fn uploads_in_flight(&self) -> i64 {
        self.uploads_in_flight.load(Relaxed)
    }

    /// The `/metrics` page: these counters and the registry's.
    pub fn render(&self, registry: &Metrics) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let o = &mut out;

        header(
            o,
            "entrepot_http_requests_total",
            "counter",
            "HTTP requests by route (the kind of request), method and status.",
        );
        for (r, route) in ROUTES.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                for s in 0..N_STATUS {
                    let n = self.requests[(r * METHODS.len() + m) * N_STATUS + s].load(Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            o,
                            "entrepot_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{}\"}} {n}",
                            status_label(s)
                        );
                    }
                }
            }
        }

        let name = "entrepot_http_request_duration_seconds";
        header(o, name, "histogram", "Time from the request's arrival to the last byte of its response.");
        for (r, route) in ROUTES.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                let h = &self.latency[r * METHODS.len() + m];
                let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Relaxed)).collect();
                let total: u64 = counts.iter().sum();
                if total == 0 {
                    continue;
                }
                let labels = format!("route=\"{route}\",method=\"{method}\"");
                let mut cumulative = 0;
                for (i, le) in BUCKETS.iter().enumerate() {
                    cumulative += counts[i];
                    let _ = writeln!(o, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
                }
                let _ = writeln!(o, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
                let _ = writeln!(o, "{name}_sum{{{labels}}} {}", h.sum_micros.load(Relaxed) as f64 / 1e6);
                let _ = writeln!(o, "{name}_count{{{labels}}} {total}");
            }
        }

        for (name, help, values) in [
            ("entrepot_http_request_bytes_total", "Bytes of request bodies received, by route.", &self.bytes_in),
            ("entrepot_http_response_bytes_total", "Bytes of response bodies sent, by route.", &self.bytes_out),
        ] {
            header(o, name, "counter", help);
            for (r, v) in values.iter().enumerate() {
                let n = v.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(o, "{name}{{route=\"{}\"}} {n}", ROUTES[r]);
                }
            }
        }

        gauge(o, "entrepot_http_requests_in_flight", "Requests being served.", self.in_flight.load(Relaxed));
        gauge(
            o,
            "entrepot_uploads_in_flight",
            "Upload requests (POST, PATCH, PUT of blob bytes) being served.",
            self.uploads_in_flight(),
        );

        let gc = registry.gc_totals();
        counter(o, "entrepot_gc_runs_total", "Garbage-collection runs completed.", registry.gc_runs());
        counter(o, "entrepot_gc_failures_total", "Garbage-collection runs that failed.", registry.gc_failures());
        counter(
            o,
            "entrepot_gc_manifests_deleted_total",
            "Manifests removed by garbage collection.",
            gc.manifests_deleted,
        );
        counter(o, "entrepot_gc_blobs_deleted_total", "Blobs removed by garbage collection.", gc.blobs_deleted);
        counter(o, "entrepot_gc_bytes_reclaimed_total", "Bytes reclaimed by garbage collection.", gc.bytes_reclaimed);
        gauge(
            o,
            "entrepot_gc_last_run_timestamp_seconds",
            "Unix time of the last completed run (0: none yet).",
            registry.gc_last_run_unix(),
        );
        if let Some(bytes) = registry.storage_used() {
            gauge(
                o,
                "entrepot_storage_used_bytes",
                "Bytes of the blobs the registry holds (refreshed periodically).",
                bytes,
            );
        }
        counter(
            o,
            "entrepot_events_recorded_total",
            "Registry events queued for webhooks.",
            registry.events_recorded_total(),
        );
        counter(
            o,
            "entrepot_events_unrecorded_total",
            "Registry events lost because the outbox could not be written.",
            registry.events_unrecorded_total(),
        );
        header(o, "entrepot_webhook_deliveries_total", "counter", "Webhook delivery attempts by outcome.");
        for outcome in DeliveryOutcome::ALL {
            let _ = writeln!(
                o,
                "entrepot_webhook_deliveries_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                registry.webhook_deliveries(outcome)
            );
        }
        gauge(o, "entrepot_webhook_queue_depth", "Webhook deliveries waiting in the outbox.", registry.webhook_queue());
        out
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(o: &mut String, name: &str, help: &str, v: u64) {
    header(o, name, "counter", help);
    let _ = writeln!(o, "{name} {v}");
}

fn gauge(o: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    header(o, name, "gauge", help);
    let _ = writeln!(o, "{name} {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_indexed() {
        assert_eq!(route_index("get_manifest"), 9);
        assert_eq!(route_index("/v2/some/raw/path"), ROUTES.len() - 1);
        assert_eq!(status_label(status_index(StatusCode::NOT_FOUND)), "404");
        assert_eq!(status_label(status_index(StatusCode::IM_A_TEAPOT)), "4xx");
        assert_eq!(status_label(status_index(StatusCode::from_u16(599).expect("code"))), "5xx");
        assert_eq!(METHODS[method_index(&Method::from_bytes(b"BREW").expect("method"))], "other");
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Arc::new(HttpMetrics::default());
        let r = route_index("get_blob");
        m.record(r, &Method::GET, StatusCode::OK, Duration::from_millis(3), 0, 1000);
        m.record(r, &Method::GET, StatusCode::OK, Duration::from_millis(200), 0, 24);
        m.record(r, &Method::HEAD, StatusCode::NOT_FOUND, Duration::from_micros(10), 0, 0);
        {
            let _guard = m.start(route_index("patch_upload"));
            assert_eq!(m.uploads_in_flight(), 1);
        }
        assert_eq!(m.uploads_in_flight(), 0);
        let reg = Metrics::default();
        reg.webhook_delivery(DeliveryOutcome::Delivered);
        let text = m.render(&reg);
        for line in [
            "entrepot_http_requests_total{route=\"get_blob\",method=\"GET\",status=\"200\"} 2",
            "entrepot_http_requests_total{route=\"get_blob\",method=\"HEAD\",status=\"404\"} 1",
            "entrepot_http_request_duration_seconds_bucket{route=\"get_blob\",method=\"GET\",le=\"0.001\"} 0",
            "entrepot_http_request_duration_seconds_bucket{route=\"get_blob\",method=\"GET\",le=\"0.005\"} 1",
            "entrepot_http_request_duration_seconds_bucket{route=\"get_blob\",method=\"GET\",le=\"0.25\"} 2",
            "entrepot_http_request_duration_seconds_bucket{route=\"get_blob\",method=\"GET\",le=\"+Inf\"} 2",
            "entrepot_http_request_duration_seconds_sum{route=\"get_blob\",method=\"GET\"} 0.203",
            "entrepot_http_request_duration_seconds_count{route=\"get_blob\",method=\"GET\"} 2",
            "entrepot_http_response_bytes_total{route=\"get_blob\"} 1024",
            "entrepot_uploads_in_flight 0",
            "entrepot_webhook_deliveries_total{outcome=\"delivered\"} 1",
            "entrepot_gc_runs_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("entrepot_storage_used_bytes"), "not shown before it was measured");
        assert!(!text.contains("route=\"put_manifest\""), "unseen series are not printed");
        // Every sample line is `name{labels} value` or `name value`, and every name was declared.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = l.rsplit_once(' ').expect("sample");
            value.parse::<f64>().unwrap_or_else(|_| panic!("value of {l}"));
            let name = series.split('{').next().expect("name");
            let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {base} ")), "{name} has no TYPE");
        }
    }
}
