//! `entrepot-bench`: starts Entrepôt and distribution (`docker-registry`) side by side on fresh
//! data directories and measures both with the same client. See README.md.

mod client;
mod data;
mod scaleout;
mod server;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hyper::StatusCode;

use client::Conn;
use data::BlobSpec;
use server::{Kind, Server};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

pub fn err(msg: impl Into<String>) -> Error {
    msg.into().into()
}

const MIB: u64 = 1 << 20;

#[derive(Parser, Debug)]
#[command(name = "entrepot-bench", about = "Benchmark Entrepôt against distribution (docker-registry)")]
struct Cli {
    /// Entrepôt binary [default: $CARGO_TARGET_DIR or <workspace>/target, then release/entrepot].
    #[arg(long)]
    entrepot: Option<PathBuf>,
    /// distribution binary (`docker-registry`).
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    distribution: PathBuf,
    /// Small sizes and short durations: the whole run takes well under a minute (CI smoke test).
    #[arg(long)]
    quick: bool,
    /// Run only these rows (comma-separated keys, see README; prerequisites are set up untimed).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Benchmark distribution alone.
    #[arg(long, conflicts_with = "skip_distribution")]
    skip_entrepot: bool,
    /// Benchmark Entrepôt alone.
    #[arg(long)]
    skip_distribution: bool,
    /// Seconds for each fixed-duration load row (manifest GET, blob HEAD).
    #[arg(long)]
    duration: Option<f64>,
    /// Keep-alive connections for the fixed-duration load rows [default: 32].
    #[arg(long)]
    connections: Option<usize>,
    /// Keep the servers' data directories and logs instead of deleting them.
    #[arg(long)]
    keep: bool,
    /// S3 + PostgreSQL mode (src/scaleout.rs): one instance vs two behind nginx, then Entrepôt vs
    /// distribution, all on one SeaweedFS and one PostgreSQL started by scripts/scaleout-stack.
    #[arg(long)]
    s3: bool,
    /// Parallel clients of the --s3 scale-out rows.
    #[arg(long, default_value_t = 8, requires = "s3")]
    s3_clients: usize,
}

#[derive(Clone, Debug)]
struct Sizes {
    blob: u64,
    blobs: usize,
    chunk: u64,
    par_blob: u64,
    par: usize,
    /// Connections of the `pull-parallel` row.
    pull_conc: usize,
    conc: usize,
    duration: Duration,
    small_images: usize,
    small_layer: u64,
    small_conc: usize,
    tags: usize,
    tag_conc: usize,
    tag_list_reps: usize,
    row_timeout: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                blob: 24 * MIB,
                blobs: 3,
                chunk: 8 * MIB,
                par_blob: 8 * MIB,
                par: 8,
                pull_conc: 4,
                conc: 32,
                duration: Duration::from_secs(1),
                small_images: 200,
                small_layer: 16 * 1024,
                small_conc: 4,
                tags: 500,
                tag_conc: 8,
                tag_list_reps: 3,
                row_timeout: Duration::from_secs(60),
            }
        } else {
            Sizes {
                blob: 256 * MIB,
                blobs: 3,
                chunk: 8 * MIB,
                par_blob: 128 * MIB,
                par: 8,
                pull_conc: 4,
                conc: 32,
                duration: Duration::from_secs(5),
                small_images: 500,
                small_layer: 16 * 1024,
                small_conc: 4,
                tags: 5000,
                tag_conc: 8,
                tag_list_reps: 5,
                row_timeout: Duration::from_secs(300),
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Target {
    /// Oriented ratio (>1 = entrepot better) must be at least this.
    MinRatio(f64),
    /// Raw entrepot/distribution ratio of a lower-is-better row must be at most this.
    MaxRawRatio(f64),
    /// Entrepot's own figure must be at most this.
    MaxValue(f64),
}

struct RowDef {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    /// Informational rows (client-side figures) get no ratio.
    compare: bool,
    target: Option<Target>,
}

const ROWS: &[RowDef] = &[
    RowDef {
        key: "push-mono",
        label: "monolithic push",
        unit: "MB/s",
        higher_is_better: true,
        compare: true,
        target: Some(Target::MinRatio(4.0)),
    },
    RowDef {
        key: "push-chunked",
        label: "chunked push (8 MiB PATCH)",
        unit: "MB/s",
        higher_is_better: true,
        compare: true,
        target: Some(Target::MinRatio(4.0)),
    },
    RowDef {
        key: "pull-first",
        label: "first pull after push (one pass)",
        unit: "MB/s",
        higher_is_better: true,
        compare: true,
        target: None,
    },
    RowDef {
        key: "pull",
        label: "blob pull",
        unit: "MB/s",
        higher_is_better: true,
        compare: true,
        target: Some(Target::MinRatio(1.5)),
    },
    RowDef {
        key: "pull-parallel",
        label: "4 parallel pulls (aggregate)",
        unit: "MB/s",
        higher_is_better: true,
        compare: true,
        target: None,
    },
    RowDef {
        key: "push-parallel",
        label: "8 parallel pushes (aggregate)",
        unit: "MB/s",
        higher_is_better: true,
        compare: true,
        target: None,
    },
    RowDef {
        key: "manifest-get",
        label: "manifest GET (concurrent)",
        unit: "req/s",
        higher_is_better: true,
        compare: true,
        target: Some(Target::MinRatio(5.0)),
    },
    RowDef {
        key: "blob-head",
        label: "blob HEAD (concurrent)",
        unit: "req/s",
        higher_is_better: true,
        compare: true,
        target: None,
    },
    RowDef {
        key: "small-images",
        label: "small image pushes",
        unit: "images/s",
        higher_is_better: true,
        compare: true,
        target: Some(Target::MinRatio(10.0)),
    },
    RowDef {
        key: "tag-put",
        label: "tag pushes (manifest PUT by tag)",
        unit: "req/s",
        higher_is_better: true,
        compare: true,
        target: None,
    },
    RowDef {
        key: "tag-list",
        label: "tags/list (all tags)",
        unit: "ms",
        higher_is_better: false,
        compare: true,
        target: None,
    },
    RowDef {
        key: "cpu-push",
        label: "server CPU per GB pushed",
        unit: "CPU-s/GB",
        higher_is_better: false,
        compare: true,
        target: Some(Target::MaxRawRatio(0.3)),
    },
    RowDef {
        key: "cpu-pull",
        label: "server CPU per GB pulled",
        unit: "CPU-s/GB",
        higher_is_better: false,
        compare: true,
        target: None,
    },
    RowDef {
        key: "cpu-manifest-get",
        label: "server CPU per manifest GET",
        unit: "CPU-us",
        higher_is_better: false,
        compare: true,
        target: None,
    },
    RowDef {
        key: "client-cpu-push",
        label: "bench client CPU per GB pushed",
        unit: "CPU-s/GB",
        higher_is_better: false,
        compare: false,
        target: None,
    },
    RowDef {
        key: "client-cpu-pull",
        label: "bench client CPU per GB pulled",
        unit: "CPU-s/GB",
        higher_is_better: false,
        compare: false,
        target: None,
    },
    RowDef {
        key: "client-cpu-manifest-get",
        label: "bench client CPU per manifest GET",
        unit: "CPU-us",
        higher_is_better: false,
        compare: false,
        target: None,
    },
    RowDef {
        key: "idle-rss",
        label: "idle RSS",
        unit: "MiB",
        higher_is_better: false,
        compare: true,
        target: Some(Target::MaxValue(15.0)),
    },
    RowDef {
        key: "peak-rss",
        label: "peak RSS (VmHWM)",
        unit: "MiB",
        higher_is_better: false,
        compare: true,
        target: None,
    },
];

/// Rows that run workloads (the rest are derived from resource counters).
const WORKLOADS: &[&str] = &[
    "push-mono",
    "push-chunked",
    "pull",
    "pull-parallel",
    "push-parallel",
    "manifest-get",
    "blob-head",
    "small-images",
    "tag-list",
];

type Cell = std::result::Result<f64, String>;

#[derive(Default)]
struct Results {
    cells: BTreeMap<(&'static str, Kind), Cell>,
}

impl Results {
    fn set(&mut self, key: &'static str, kind: Kind, v: Cell) {
        self.cells.insert((key, kind), v);
    }
    fn get(&self, key: &str, kind: Kind) -> Option<&Cell> {
        self.cells.iter().find(|((k, s), _)| *k == key && *s == kind).map(|(_, v)| v)
    }
}

/// Per-server accumulators for the CPU rows.
#[derive(Default, Clone, Copy)]
struct Acc {
    push_cpu: f64,
    push_client_cpu: f64,
    push_bytes: u64,
    pull_cpu: f64,
    pull_client_cpu: f64,
    pull_bytes: u64,
}

/// Everything generated before timing starts.
struct Payloads {
    mono: Vec<BlobSpec>,
    chunked: Vec<BlobSpec>,
    par: Vec<BlobSpec>,
    small: Vec<SmallImage>,
    hot: SmallImage,
    tagged: SmallImage,
}

#[derive(Clone)]
struct SmallImage {
    config: (String, Bytes),
    layer: (String, Bytes),
    manifest: Bytes,
}

impl SmallImage {
    fn new(id: u64, layer_size: u64) -> SmallImage {
        let layer = BlobSpec::new(0x5EED_0000 + id, layer_size).to_bytes();
        let layer_digest = data::digest_of(&layer);
        let config = client::config_blob(id, &layer_digest);
        let config_digest = data::digest_of(&config);
        let manifest = client::manifest((&config_digest, config.len() as u64), &[(&layer_digest, layer.len() as u64)]);
        SmallImage { config: (config_digest, config), layer: (layer_digest, layer), manifest }
    }

    async fn push(&self, c: &mut Conn, repo: &str, tag: &str) -> Result<()> {
        c.push_small(repo, &self.config.0, &self.config.1).await?;
        c.push_small(repo, &self.layer.0, &self.layer.1).await?;
        c.put_manifest(repo, tag, &self.manifest).await
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("entrepot-bench: {e}");
        std::process::exit(1);
    }
}

fn default_entrepot() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("release/entrepot");
    }
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/entrepot"));
    p.canonicalize().unwrap_or(p)
}

fn sync_disks() {
    let _ = std::process::Command::new("sync").status();
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn run(cli: Cli) -> Result<()> {
    let sizes = Sizes::new(cli.quick);
    let sizes = Sizes {
        duration: cli.duration.map_or(sizes.duration, Duration::from_secs_f64),
        conc: cli.connections.unwrap_or(sizes.conc).max(1),
        ..sizes
    };
    for o in &cli.only {
        if !WORKLOADS.contains(&o.as_str()) {
            return Err(err(format!("unknown row {o:?} for --only; rows: {}", WORKLOADS.join(", "))));
        }
    }
    let selected = |k: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == k);
    let entrepot_bin = cli.entrepot.clone().unwrap_or_else(default_entrepot);
    if cli.s3 {
        return scaleout::run(&cli, &entrepot_bin).await;
    }
    let mut kinds = Vec::new();
    if !cli.skip_entrepot {
        if !entrepot_bin.exists() {
            return Err(err(format!(
                "{} not found: build it (`cargo build --release -p entrepot`), pass --entrepot PATH, or --skip-entrepot",
                entrepot_bin.display()
            )));
        }
        kinds.push(Kind::Entrepot);
    }
    if !cli.skip_distribution {
        kinds.push(Kind::Distribution);
    }
    let load_before = loadavg();
    let t_all = Instant::now();

    // ---- payloads (hashed before any timing) ----------------------------------------------
    let t0 = Instant::now();
    let want = |k: &str, n: usize| if selected(k) { n } else { 0 };
    let n_mono = if selected("push-mono") || selected("pull") || selected("pull-parallel") { sizes.blobs } else { 0 };
    let n_chunked = want("push-chunked", sizes.blobs);
    let n_par = want("push-parallel", sizes.par);
    let mut items = Vec::new();
    items.extend((0..n_mono).map(|i| (1000 + i as u64, sizes.blob)));
    items.extend((0..n_chunked).map(|i| (2000 + i as u64, sizes.blob)));
    items.extend((0..n_par).map(|i| (3000 + i as u64, sizes.par_blob)));
    let mut specs = data::make_specs(items).await;
    let par = specs.split_off(n_mono + n_chunked);
    let chunked = specs.split_off(n_mono);
    let mono = specs;
    let small_n = want("small-images", sizes.small_images);
    let layer = sizes.small_layer;
    let small =
        tokio::task::spawn_blocking(move || (0..small_n as u64).map(|i| SmallImage::new(i, layer)).collect()).await?;
    let p = Arc::new(Payloads {
        mono,
        chunked,
        par,
        small,
        hot: SmallImage::new(900_000, sizes.small_layer),
        tagged: SmallImage::new(900_001, sizes.small_layer),
    });
    eprintln!("payloads generated and hashed in {:.1}s", t0.elapsed().as_secs_f64());

    // ---- servers --------------------------------------------------------------------------
    let mut servers: Vec<Server> = Vec::new();
    for &k in &kinds {
        let s = match k {
            // Like the distribution baseline (`log.level: warn`, access log disabled): no access log
            // line per request, so neither server does logging work the benchmark does not ask for.
            // An `ENTREPOT_LOG` set by the caller (inherited by the server) chooses otherwise.
            Kind::Entrepot if std::env::var_os("ENTREPOT_LOG").is_some() => Server::start_entrepot(&entrepot_bin).await,
            Kind::Entrepot => Server::start_entrepot_with(&entrepot_bin, &["--log".into(), "warn".into()], &[]).await,
            Kind::Distribution => Server::start_distribution(&cli.distribution).await,
        };
        match s {
            Ok(s) => {
                eprintln!("{} listening on {} (pid {})", k.name(), s.addr, s.pid);
                servers.push(s);
            }
            Err(e) => {
                for s in servers {
                    s.stop(cli.keep).await;
                }
                return Err(err(format!("starting {}: {e}", k.name())));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut res = Results::default();
    for s in &servers {
        res.set("idle-rss", s.kind, Ok(s.rss().0 / MIB as f64));
    }
    let mut acc: BTreeMap<&'static str, Acc> = servers.iter().map(|s| (s.kind.name(), Acc::default())).collect();

    // ---- workloads ------------------------------------------------------------------------
    for &row in WORKLOADS {
        if !selected(row) {
            continue;
        }
        for s in servers.iter_mut() {
            let kind = s.kind;
            if !s.alive() {
                res.set(row, kind, Err("server exited".into()));
                if row == "tag-list" {
                    res.set("tag-put", kind, Err("server exited".into()));
                }
                continue;
            }
            let a = acc.get_mut(kind.name()).expect("accumulator per server");
            let r = tokio::time::timeout(sizes.row_timeout, run_row(row, s, &p, &sizes, a)).await;
            let r = match r {
                Ok(r) => r,
                Err(_) => Err(err(format!("timed out after {:?}", sizes.row_timeout))),
            };
            match r {
                Ok(values) => {
                    for (k, v) in values {
                        eprintln!("  {:<14} {:<13} {:>12.2}", k, kind.name(), v);
                        res.set(k, kind, Ok(v));
                    }
                }
                Err(e) => {
                    eprintln!("  {:<14} {:<13} ERROR {e}", row, kind.name());
                    res.set(row, kind, Err(e.to_string()));
                    if row == "tag-list" {
                        res.set("tag-put", kind, Err(e.to_string()));
                    }
                }
            }
        }
    }

    for s in &servers {
        let a = acc[s.kind.name()];
        if a.push_bytes > 0 {
            let gb = a.push_bytes as f64 / 1e9;
            res.set("cpu-push", s.kind, Ok(a.push_cpu / gb));
            res.set("client-cpu-push", s.kind, Ok(a.push_client_cpu / gb));
        }
        if a.pull_bytes > 0 {
            res.set("cpu-pull", s.kind, Ok(a.pull_cpu / (a.pull_bytes as f64 / 1e9)));
            res.set("client-cpu-pull", s.kind, Ok(a.pull_client_cpu / (a.pull_bytes as f64 / 1e9)));
        }
        res.set("peak-rss", s.kind, Ok(s.rss().1 / MIB as f64));
    }
    let server_info: Vec<_> = servers
        .iter()
        .map(|s| serde_json::json!({"server": s.kind.name(), "addr": s.addr.to_string(), "pid": s.pid}))
        .collect();
    for s in servers {
        s.stop(cli.keep).await;
    }

    // ---- report ---------------------------------------------------------------------------
    let rows = report(&res, &kinds);
    eprintln!("total {:.1}s; load average before: {load_before}, after: {}", t_all.elapsed().as_secs_f64(), loadavg());
    if let Some(path) = &cli.json {
        let doc = serde_json::json!({
            "tool": "entrepot-bench",
            "quick": cli.quick,
            "timestamp_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "loadavg_before": load_before,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "binaries": {"entrepot": entrepot_bin.display().to_string(), "distribution": cli.distribution.display().to_string()},
            "servers": server_info,
            "sizes": {
                "blob_bytes": sizes.blob, "blobs": sizes.blobs, "chunk_bytes": sizes.chunk,
                "parallel_blob_bytes": sizes.par_blob, "parallel": sizes.par,
                "connections": sizes.conc, "duration_s": sizes.duration.as_secs_f64(),
                "small_images": sizes.small_images, "small_layer_bytes": sizes.small_layer, "small_concurrency": sizes.small_conc,
                "tags": sizes.tags, "tag_concurrency": sizes.tag_conc, "tag_list_repetitions": sizes.tag_list_reps,
            },
            "ratio_orientation": "entrepot/distribution for higher-is-better rows, distribution/entrepot for lower-is-better rows; >1 means entrepot is better",
            "rows": rows,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs one workload row against one server; returns the figures it produced.
async fn run_row(
    row: &'static str,
    s: &Server,
    p: &Arc<Payloads>,
    sz: &Sizes,
    acc: &mut Acc,
) -> Result<Vec<(&'static str, f64)>> {
    let addr = s.addr;
    match row {
        "push-mono" | "push-chunked" | "push-parallel" => {
            sync_disks();
            let (cpu0, me0) = (s.cpu_seconds(), self_cpu());
            let t = Instant::now();
            let bytes = match row {
                "push-mono" => {
                    let mut c = Conn::connect(addr).await?;
                    for spec in &p.mono {
                        c.push_monolithic("bench/mono", spec).await?;
                    }
                    p.mono.iter().map(|s| s.size).sum::<u64>()
                }
                "push-chunked" => {
                    let mut c = Conn::connect(addr).await?;
                    for spec in &p.chunked {
                        c.push_chunked("bench/chunked", spec, sz.chunk).await?;
                    }
                    p.chunked.iter().map(|s| s.size).sum::<u64>()
                }
                _ => {
                    let mut conns = Vec::new();
                    for _ in 0..p.par.len() {
                        conns.push(Conn::connect(addr).await?);
                    }
                    let t = Instant::now();
                    let mut hs = Vec::new();
                    for (i, mut c) in conns.into_iter().enumerate() {
                        let p = p.clone();
                        hs.push(tokio::spawn(async move { c.push_monolithic("bench/parallel", &p.par[i]).await }));
                    }
                    for h in hs {
                        h.await??;
                    }
                    let secs = t.elapsed().as_secs_f64();
                    let bytes = p.par.iter().map(|s| s.size).sum::<u64>();
                    acc.push_cpu += s.cpu_seconds() - cpu0;
                    acc.push_client_cpu += self_cpu() - me0;
                    acc.push_bytes += bytes;
                    return Ok(vec![(row, bytes as f64 / 1e6 / secs)]);
                }
            };
            let secs = t.elapsed().as_secs_f64();
            acc.push_cpu += s.cpu_seconds() - cpu0;
            acc.push_client_cpu += self_cpu() - me0;
            acc.push_bytes += bytes;
            Ok(vec![(row, bytes as f64 / 1e6 / secs)])
        }
        "pull" | "pull-parallel" => {
            let mut c = Conn::connect(addr).await?;
            let mut blobs: Vec<(&'static str, BlobSpec)> = p.mono.iter().map(|b| ("bench/mono", b.clone())).collect();
            blobs.extend(p.chunked.iter().map(|b| ("bench/chunked", b.clone())));
            for (repo, b) in &blobs {
                // Set up untimed when the push rows did not run (or failed).
                if c.head_blob(repo, &b.digest).await? != StatusCode::OK {
                    c.push_monolithic(repo, b).await?;
                }
            }
            let conns = if row == "pull" { 1 } else { sz.pull_conc };
            let mut raw = Vec::with_capacity(conns);
            for _ in 0..conns {
                raw.push(client::RawConn::connect(addr).await?);
            }
            let blobs = Arc::new(blobs);
            sync_disks();
            let mut out = Vec::new();
            let (cpu0, me0) = (s.cpu_seconds(), self_cpu());
            if row == "pull" {
                // One pass alone first: the blobs as the push left them (in the page cache or not).
                let t = Instant::now();
                let bytes = pull_until(&mut raw[0], &blobs, 0, t).await?;
                out.push(("pull-first", bytes as f64 / 1e6 / t.elapsed().as_secs_f64()));
                acc.pull_bytes += bytes;
            }
            let t = Instant::now();
            let deadline = t + sz.duration;
            let hs: Vec<_> = raw
                .into_iter()
                .enumerate()
                .map(|(i, mut c)| {
                    let blobs = blobs.clone();
                    tokio::spawn(async move { pull_until(&mut c, &blobs, i, deadline).await })
                })
                .collect();
            let mut total = 0;
            for h in hs {
                total += h.await??;
            }
            let secs = t.elapsed().as_secs_f64();
            acc.pull_cpu += s.cpu_seconds() - cpu0;
            acc.pull_client_cpu += self_cpu() - me0;
            acc.pull_bytes += total;
            out.push((row, total as f64 / 1e6 / secs));
            Ok(out)
        }
        "manifest-get" | "blob-head" => {
            let mut c = Conn::connect(addr).await?;
            p.hot.push(&mut c, "bench/hot", "latest").await?;
            let op = if row == "manifest-get" { Op::ManifestGet } else { Op::BlobHead(p.hot.layer.0.clone()) };
            let op = Arc::new(op);
            // Warm up (connections, caches), then measure.
            load(addr, sz.conc, sz.duration.div_f64(4.0).min(Duration::from_secs(1)), op.clone()).await?;
            let (cpu0, me0) = (s.cpu_seconds(), self_cpu());
            let (rate, n) = load(addr, sz.conc, sz.duration, op).await?;
            let (server_us, client_us) = ((s.cpu_seconds() - cpu0) * 1e6 / n, (self_cpu() - me0) * 1e6 / n);
            if row == "manifest-get" {
                Ok(vec![(row, rate), ("cpu-manifest-get", server_us), ("client-cpu-manifest-get", client_us)])
            } else {
                Ok(vec![(row, rate)])
            }
        }
        "small-images" => {
            let n = p.small.len();
            let t = Instant::now();
            parallel(addr, sz.small_conc, n, {
                let p = p.clone();
                move |mut c, i| {
                    let p = p.clone();
                    async move {
                        p.small[i].push(&mut c, "bench/small", &format!("v{i}")).await?;
                        Ok(c)
                    }
                }
            })
            .await?;
            Ok(vec![(row, n as f64 / t.elapsed().as_secs_f64())])
        }
        "tag-list" => {
            let repo = "bench/tags";
            let mut c = Conn::connect(addr).await?;
            p.tagged.push(&mut c, repo, "t00000").await?;
            let n = sz.tags;
            let t = Instant::now();
            parallel(addr, sz.tag_conc, n - 1, {
                let p = p.clone();
                move |mut c, i| {
                    let p = p.clone();
                    async move {
                        c.put_manifest(repo, &format!("t{:05}", i + 1), &p.tagged.manifest).await?;
                        Ok(c)
                    }
                }
            })
            .await?;
            let put_rate = (n - 1) as f64 / t.elapsed().as_secs_f64();
            let (count, pages) = c.list_tags(repo).await?;
            if count != n {
                return Err(err(format!("tags/list returned {count} tags, expected {n}")));
            }
            if pages > 1 {
                eprintln!("  (tags/list answered in {pages} pages)");
            }
            let mut times = Vec::new();
            for _ in 0..sz.tag_list_reps {
                let t = Instant::now();
                c.list_tags(repo).await?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            Ok(vec![("tag-put", put_rate), (row, times[times.len() / 2])])
        }
        _ => unreachable!("unknown row {row}"),
    }
}

fn self_cpu() -> f64 {
    server::proc_cpu_seconds("/proc/self/stat").unwrap_or(f64::NAN)
}

/// Pulls `blobs` in turn (starting at the `first`-th) on one connection, whole passes until `deadline`
/// (at least one pass), checking each length and `Docker-Content-Digest`; returns the bytes received.
async fn pull_until(
    c: &mut client::RawConn,
    blobs: &[(&'static str, BlobSpec)],
    first: usize,
    deadline: Instant,
) -> Result<u64> {
    let mut total = 0;
    loop {
        for k in 0..blobs.len() {
            let (repo, b) = &blobs[(first + k) % blobs.len()];
            let r = c.pull_blob(repo, &b.digest).await?;
            if r.body_len != b.size {
                return Err(err(format!("pulled {} bytes of {}, expected {}", r.body_len, b.digest, b.size)));
            }
            if let Some(d) = r.docker_content_digest
                && d != b.digest
            {
                return Err(err(format!("Docker-Content-Digest {d} for {}", b.digest)));
            }
            total += r.body_len;
        }
        if Instant::now() >= deadline {
            return Ok(total);
        }
    }
}

enum Op {
    ManifestGet,
    BlobHead(String),
}

/// Drives `op` from `conc` keep-alive connections for `dur`; returns (completed requests/s, requests).
async fn load(addr: SocketAddr, conc: usize, dur: Duration, op: Arc<Op>) -> Result<(f64, f64)> {
    async fn once(c: &mut Conn, op: &Op) -> Result<()> {
        match op {
            Op::ManifestGet => {
                c.get_manifest("bench/hot", "latest").await?;
            }
            Op::BlobHead(d) => {
                let st = c.head_blob("bench/hot", d).await?;
                if st != StatusCode::OK {
                    return Err(err(format!("HEAD blob: {st}")));
                }
            }
        }
        Ok(())
    }
    let mut conns = Vec::with_capacity(conc);
    for _ in 0..conc {
        let mut c = Conn::connect(addr).await?;
        once(&mut c, &op).await?;
        conns.push(c);
    }
    let start = Instant::now();
    let deadline = start + dur;
    let hs: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    once(&mut c, &op).await?;
                    n += 1;
                }
                Ok::<u64, Error>(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in hs {
        total += h.await??;
    }
    Ok((total as f64 / start.elapsed().as_secs_f64(), total.max(1) as f64))
}

/// Runs `job(conn, i)` for i in 0..n from `workers` connections pulling indices from a shared counter.
async fn parallel<F, Fut>(addr: SocketAddr, workers: usize, n: usize, job: F) -> Result<()>
where
    F: Fn(Conn, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Conn>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    for _ in 0..workers.min(n.max(1)) {
        let c = Conn::connect(addr).await?;
        let (next, job) = (next.clone(), job.clone());
        hs.push(tokio::spawn(async move {
            let mut c = c;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), Error>(());
                }
                c = job(c, i).await?;
            }
        }));
    }
    for h in hs {
        h.await??;
    }
    Ok(())
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "req/s" | "images/s" => format!("{v:.0}"),
        "CPU-s/GB" => format!("{v:.3}"),
        "CPU-us" => format!("{v:.0}"),
        _ => format!("{v:.1}"),
    }
}

/// Prints the table to stdout and returns the JSON rows.
fn report(res: &Results, kinds: &[Kind]) -> Vec<serde_json::Value> {
    let both = kinds.len() == 2;
    println!();
    let h = ["row", "unit", "entrepot", "distribution", "ratio", "target", "status"];
    println!("{:<34} {:>9} {:>12} {:>12} {:>9}  {:<20} {}", h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
    println!("{}", "-".repeat(112));
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for def in ROWS {
        let e = res.get(def.key, Kind::Entrepot);
        let d = res.get(def.key, Kind::Distribution);
        if e.is_none() && d.is_none() {
            continue;
        }
        let show = |c: Option<&Cell>, who: &str, errors: &mut Vec<String>| match c {
            None => "-".to_string(),
            Some(Ok(v)) => fmt_value(*v, def.unit),
            Some(Err(m)) => {
                errors.push(format!("{} [{who}]: {m}", def.key));
                "ERROR".to_string()
            }
        };
        let es = show(e, "entrepot", &mut errors);
        let ds = show(d, "distribution", &mut errors);
        let ev = e.and_then(|c| c.as_ref().ok()).copied();
        let dv = d.and_then(|c| c.as_ref().ok()).copied();
        let ratio = match (ev, dv) {
            (Some(e), Some(d)) if def.compare && both && e > 0.0 && d > 0.0 => {
                Some(if def.higher_is_better { e / d } else { d / e })
            }
            _ => None,
        };
        let (target_s, pass) = match def.target {
            None => (String::new(), None),
            Some(Target::MinRatio(t)) => (format!(">= {t}x"), ratio.map(|r| r >= t)),
            Some(Target::MaxRawRatio(t)) => (format!(">= {:.2}x (e/d <= {t})", 1.0 / t), ratio.map(|r| 1.0 / r <= t)),
            Some(Target::MaxValue(t)) => (format!("entrepot <= {t} {}", def.unit), ev.map(|v| v <= t)),
        };
        let status = match pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "",
        };
        println!(
            "{:<34} {:>9} {:>12} {:>12} {:>9}  {:<20} {}",
            def.label,
            def.unit,
            es,
            ds,
            ratio.map_or("-".to_string(), |r| format!("{r:.2}x")),
            target_s,
            status
        );
        let cell_json = |c: Option<&Cell>| match c {
            Some(Ok(v)) if v.is_finite() => serde_json::json!(v),
            _ => serde_json::Value::Null,
        };
        let err_json = |c: Option<&Cell>| match c {
            Some(Err(m)) => serde_json::json!(m),
            _ => serde_json::Value::Null,
        };
        out.push(serde_json::json!({
            "key": def.key,
            "label": def.label,
            "unit": def.unit,
            "better": if def.higher_is_better { "higher" } else { "lower" },
            "entrepot": cell_json(e),
            "distribution": cell_json(d),
            "entrepot_error": err_json(e),
            "distribution_error": err_json(d),
            "ratio": ratio,
            "target": if target_s.is_empty() { serde_json::Value::Null } else { serde_json::json!(target_s) },
            "pass": pass,
        }));
    }
    println!("{}", "-".repeat(112));
    println!(
        "ratio: >1 means entrepot is better (entrepot/distribution for throughput, distribution/entrepot for time, CPU, memory)."
    );
    println!("MB = 10^6 bytes, GB = 10^9 bytes, MiB = 2^20 bytes.");
    for e in errors {
        println!("error: {e}");
    }
    out
}
