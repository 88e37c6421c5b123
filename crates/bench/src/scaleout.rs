//! `entrepot-bench --s3`: the S3 + PostgreSQL mode of the benchmark.
//!
//! One run on one SeaweedFS and one PostgreSQL, both started by `scripts/scaleout-stack` together
//! with two Entrepôt instances behind nginx (the script people use, so the nginx configuration
//! measured is the documented one):
//!
//! 1. **scale-out**: aggregate push, then pull, throughput of `--s3-clients` parallel clients (8),
//!    first against one instance directly, then against the two instances through nginx (target
//!    ≥ 1.7×). The CPU time of every process (SeaweedFS, PostgreSQL, nginx, each instance, the
//!    benchmark itself) is recorded per phase, so a missed target shows where the cores went;
//! 2. **Entrepôt vs distribution 2.8.2** on the same SeaweedFS: a fresh Entrepôt instance (fresh
//!    bucket, fresh database) and distribution with its `s3` driver (fresh bucket) run the main
//!    benchmark's `push-mono`, `pull` and `manifest-get` rows ([`crate::run_row`]), one server at a
//!    time, with the SeaweedFS CPU spent per GB on each server's behalf.
//!
//! Every server listens on 127.0.0.1. The stack is stopped through the script (by PID) whatever
//! happens; this module never reuses a bucket or database holding data and never signals a
//! process it did not start.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::data::{self, BlobSpec};
use crate::server::{self, Kind, S3Target, Server};
use crate::{Acc, Cli, MIB, Payloads, Result, SmallImage, err};

/// The target for two instances over one, on push and on pull.
const SCALE_TARGET: f64 = 1.7;

/// Sizes of the scale-out phases.
struct ScaleSizes {
    clients: usize,
    blob: u64,
    /// Each client pulls this many blobs (its own, then its neighbours').
    pull_rounds: usize,
}

/// A stack started by `scripts/scaleout-stack`; stopped by [`Stack::stop`] or, failing that, on drop.
struct Stack {
    script: PathBuf,
    dir: PathBuf,
    /// Parent of `dir` (removed on drop unless kept).
    root: Option<tempfile::TempDir>,
    env: HashMap<String, String>,
    running: bool,
}

impl Stack {
    async fn start(entrepot: &Path, instances: usize) -> Result<Stack> {
        let script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/scaleout-stack"));
        if !script.is_file() {
            return Err(err(format!("{} not found", script.display())));
        }
        let root = tempfile::Builder::new().prefix("entrepot-bench-s3-").tempdir()?;
        // PostgreSQL runs as the postgres user, which must reach the stack's directory.
        std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let dir = root.path().join("stack");
        let log = root.path().join("scaleout-stack.log");
        let mut stack = Stack { script, dir, root: Some(root), env: HashMap::new(), running: true };
        let status = tokio::process::Command::new(&stack.script)
            .arg("start")
            .arg(&stack.dir)
            .arg("--instances")
            .arg(instances.to_string())
            .env("ENTREPOT_BIN", entrepot)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(root_join(&stack, "scaleout-stack.err"))?)
            .status()
            .await?;
        if !status.success() {
            let msg = std::fs::read_to_string(root_join(&stack, "scaleout-stack.err")).unwrap_or_default();
            // The script stops what it started when it fails.
            stack.running = false;
            return Err(err(format!("scripts/scaleout-stack start failed ({status}):\n{msg}")));
        }
        let env = std::fs::read_to_string(stack.dir.join("env"))?;
        // Later lines override earlier ones, as when the file is sourced.
        for line in env.lines() {
            if let Some((k, v)) = line.split_once('=') {
                stack.env.insert(k.to_string(), v.to_string());
            }
        }
        Ok(stack)
    }

    fn var(&self, key: &str) -> Result<&str> {
        self.env.get(key).map(String::as_str).ok_or_else(|| err(format!("{key} missing from the stack's env file")))
    }

    fn pid(&self, key: &str) -> Result<u32> {
        self.var(key)?.parse().map_err(|_| err(format!("{key} in the stack's env file is not a PID")))
    }

    fn addr(s: &str) -> Result<SocketAddr> {
        s.parse().map_err(|_| err(format!("not an address: {s}")))
    }

    async fn stop(&mut self, keep: bool) {
        if self.running {
            self.running = false;
            let _ = tokio::process::Command::new(&self.script)
                .arg("stop")
                .arg(&self.dir)
                .stdout(std::process::Stdio::null())
                .status()
                .await;
        }
        if keep && let Some(r) = self.root.take() {
            eprintln!("kept the stack's data and logs in {}", r.keep().display());
        }
    }
}

fn root_join(stack: &Stack, name: &str) -> PathBuf {
    stack.dir.parent().map_or_else(|| PathBuf::from(name), |p| p.join(name))
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.running {
            let _ = std::process::Command::new(&self.script).arg("stop").arg(&self.dir).status();
        }
    }
}

/// The processes whose CPU time is recorded, by name.
struct Procs(Vec<(String, u32)>);

impl Procs {
    /// CPU seconds of each process tree, then of the benchmark itself, then of the whole machine
    /// (all CPUs, busy time).
    fn snapshot(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.0.iter().map(|(_, pid)| server::tree_cpu_seconds(*pid)).collect();
        v.push(crate::self_cpu());
        v.push(server::machine_busy_seconds());
        v
    }

    /// Names of the per-phase CPU figures: the processes, `bench`, and `other` (everything else that
    /// ran on the machine meanwhile, e.g. another job's compiler).
    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.0.iter().map(|(name, _)| name.clone()).collect();
        n.push("bench".into());
        n.push("other".into());
        n
    }
}

/// One timed scale-out phase.
struct Phase {
    label: String,
    mbps: f64,
    secs: f64,
    bytes: u64,
    /// CPU seconds per process during the phase, by name ([`Procs::names`]).
    cpu: Vec<(String, f64)>,
}

/// Pushes `blobs[i]` from client i, all at once, each on its own connection (opened beforehand).
async fn parallel_push(addr: SocketAddr, repo: &str, blobs: &Arc<Vec<BlobSpec>>) -> Result<(f64, u64)> {
    let mut conns = Vec::new();
    for _ in 0..blobs.len() {
        conns.push(Conn::connect(addr).await?);
    }
    let t = Instant::now();
    let mut hs = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let (blobs, repo) = (blobs.clone(), repo.to_string());
        hs.push(tokio::spawn(async move { c.push_monolithic(&repo, &blobs[i]).await }));
    }
    for h in hs {
        h.await??;
    }
    Ok((t.elapsed().as_secs_f64(), blobs.iter().map(|b| b.size).sum()))
}

/// Client i pulls blobs i, i+1, … (`rounds` of them, wrapping), all clients at once; lengths and
/// `Docker-Content-Digest` are checked.
async fn parallel_pull(addr: SocketAddr, repo: &str, blobs: &Arc<Vec<BlobSpec>>, rounds: usize) -> Result<(f64, u64)> {
    let mut conns = Vec::new();
    for _ in 0..blobs.len() {
        conns.push(Conn::connect(addr).await?);
    }
    let t = Instant::now();
    let mut hs = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let (blobs, repo) = (blobs.clone(), repo.to_string());
        hs.push(tokio::spawn(async move {
            let mut total = 0u64;
            for r in 0..rounds {
                let b = &blobs[(i + r) % blobs.len()];
                let (n, dcd) = c.pull_blob(&repo, &b.digest).await?;
                if n != b.size {
                    return Err(err(format!("pulled {n} bytes of {}, expected {}", b.digest, b.size)));
                }
                if dcd.as_deref().is_some_and(|d| d != b.digest) {
                    return Err(err(format!("Docker-Content-Digest {dcd:?} for {}", b.digest)));
                }
                total += n;
            }
            Ok(total)
        }));
    }
    let mut total = 0;
    for h in hs {
        total += h.await??;
    }
    Ok((t.elapsed().as_secs_f64(), total))
}

/// Runs `f` with the CPU of every process recorded around it.
async fn timed_phase<F>(label: String, procs: &Procs, timeout: Duration, f: F) -> Result<Phase>
where
    F: Future<Output = Result<(f64, u64)>>,
{
    crate::sync_disks();
    let before = procs.snapshot();
    let (secs, bytes) = match tokio::time::timeout(timeout, f).await {
        Ok(r) => r?,
        Err(_) => return Err(err(format!("timed out after {timeout:?}"))),
    };
    let after = procs.snapshot();
    let mut d: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // The last figure is the machine's busy time: keep what our processes do not account for.
    if let Some(machine) = d.pop() {
        let ours: f64 = d.iter().sum();
        d.push((machine - ours).max(0.0));
    }
    let cpu = procs.names().into_iter().zip(d).collect();
    Ok(Phase { label, mbps: bytes as f64 / 1e6 / secs, secs, bytes, cpu })
}

/// A small blob pushed (and pulled) untimed through `addr`, so that SeaweedFS has grown the
/// bucket's volumes and the connections are warm before anything is timed.
async fn warm_up(addr: SocketAddr, repo: &str, seed: u64) -> Result<()> {
    let spec = tokio::task::spawn_blocking(move || BlobSpec::new(seed, 2 * MIB)).await?;
    let mut c = Conn::connect(addr).await?;
    c.push_monolithic(repo, &spec).await?;
    let (n, _) = c.pull_blob(repo, &spec.digest).await?;
    if n != spec.size {
        return Err(err(format!("warm-up pull returned {n} bytes, expected {}", spec.size)));
    }
    Ok(())
}

/// Creates `bucket` on the stack's SeaweedFS.
async fn create_bucket(t: &S3Target) -> Result<()> {
    let cfg = entrepot_storage::S3Config::new(
        t.endpoint.clone(),
        t.bucket.clone(),
        entrepot_storage::s3::Credentials::new(t.access_key.clone(), t.secret_key.clone()),
    );
    entrepot_storage::S3BlobStore::new(cfg)?.client().create_bucket().await?;
    Ok(())
}

/// Creates database `name` next to the stack's one; returns its URL.
async fn create_database(stack_url: &str, name: &str) -> Result<String> {
    // postgres://postgres@127.0.0.1:PORT/entrepot
    let (base, _) = stack_url.rsplit_once('/').ok_or_else(|| err(format!("unexpected DATABASE_URL {stack_url}")))?;
    let port = base.rsplit_once(':').map(|(_, p)| p).ok_or_else(|| err(format!("no port in {stack_url}")))?;
    let pgbin = std::env::var("PGBIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let out = tokio::process::Command::new(Path::new(&pgbin).join("createdb"))
        .args(["-h", "127.0.0.1", "-p", port, "-U", "postgres", name])
        .output()
        .await?;
    if !out.status.success() {
        return Err(err(format!("createdb {name}: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(format!("{base}/{name}"))
}

type Cell = std::result::Result<f64, String>;

/// A row of the comparison with distribution.
struct VsRow {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    higher_is_better: bool,
}

const VS_ROWS: &[VsRow] = &[
    VsRow { key: "push-mono", label: "monolithic push", unit: "MB/s", higher_is_better: true },
    VsRow { key: "pull", label: "blob pull", unit: "MB/s", higher_is_better: true },
    VsRow { key: "manifest-get", label: "manifest GET (concurrent)", unit: "req/s", higher_is_better: true },
    VsRow { key: "cpu-push", label: "registry CPU per GB pushed", unit: "CPU-s/GB", higher_is_better: false },
    VsRow { key: "cpu-pull", label: "registry CPU per GB pulled", unit: "CPU-s/GB", higher_is_better: false },
    VsRow { key: "s3-cpu-push", label: "SeaweedFS CPU per GB pushed", unit: "CPU-s/GB", higher_is_better: false },
    VsRow { key: "s3-cpu-pull", label: "SeaweedFS CPU per GB pulled", unit: "CPU-s/GB", higher_is_better: false },
    VsRow { key: "peak-rss", label: "registry peak RSS (VmHWM)", unit: "MiB", higher_is_better: false },
];

/// The `--s3` run.
pub(crate) async fn run(cli: &Cli, entrepot_bin: &Path) -> Result<()> {
    if !cli.only.is_empty() || cli.skip_entrepot || cli.skip_distribution {
        return Err(err("--only, --skip-entrepot and --skip-distribution do not apply to --s3"));
    }
    if !entrepot_bin.exists() {
        return Err(err(format!(
            "{} not found: build it (`cargo build --release -p entrepot`) or pass --entrepot PATH",
            entrepot_bin.display()
        )));
    }
    let base = crate::Sizes::new(cli.quick);
    let sizes = crate::Sizes {
        duration: cli.duration.map_or(base.duration, Duration::from_secs_f64),
        conc: cli.connections.unwrap_or(base.conc).max(1),
        ..base
    };
    let clients = cli.s3_clients.max(1);
    let ss = ScaleSizes { clients, blob: if cli.quick { 16 * MIB } else { 128 * MIB }, pull_rounds: 2 };
    let load_before = crate::loadavg();
    let t_all = Instant::now();

    // ---- payloads (hashed before anything starts) -------------------------------------------
    let t0 = Instant::now();
    let mut items: Vec<(u64, u64)> = (0..2 * clients as u64).map(|i| (5000 + i, ss.blob)).collect();
    items.extend((0..sizes.blobs as u64).map(|i| (1000 + i, sizes.blob)));
    let mut specs = data::make_specs(items).await;
    let mono = specs.split_off(2 * clients);
    let two_blobs = Arc::new(specs.split_off(clients));
    let one_blobs = Arc::new(specs);
    let p = Arc::new(Payloads {
        mono,
        chunked: Vec::new(),
        par: Vec::new(),
        small: Vec::new(),
        hot: SmallImage::new(900_000, sizes.small_layer),
        tagged: SmallImage::new(900_001, sizes.small_layer),
    });
    eprintln!("payloads generated and hashed in {:.1}s", t0.elapsed().as_secs_f64());

    // ---- the stack ------------------------------------------------------------------------------
    let t0 = Instant::now();
    let mut stack = Stack::start(entrepot_bin, 2).await?;
    eprintln!("stack started in {:.1}s: {}", t0.elapsed().as_secs_f64(), stack.dir.display());
    let outcome = measure(cli, entrepot_bin, &stack, &sizes, &ss, &p, &one_blobs, &two_blobs).await;
    stack.stop(cli.keep).await;
    let (scale, vs, stack_info) = outcome?;

    // ---- report -----------------------------------------------------------------------------
    let load_after = crate::loadavg();
    let (scale_json, cpu_json) = report_scale(&scale, &ss);
    let vs_json = report_vs(&vs);
    eprintln!("total {:.1}s; load average before: {load_before}, after: {load_after}", t_all.elapsed().as_secs_f64());
    if let Some(path) = &cli.json {
        let doc = serde_json::json!({
            "tool": "entrepot-bench",
            "mode": "s3",
            "quick": cli.quick,
            "timestamp_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "binaries": {"entrepot": entrepot_bin.display().to_string(), "distribution": cli.distribution.display().to_string()},
            "stack": stack_info,
            "sizes": {
                "scaleout_clients": ss.clients, "scaleout_blob_bytes": ss.blob, "scaleout_pull_rounds": ss.pull_rounds,
                "blob_bytes": sizes.blob, "blobs": sizes.blobs,
                "connections": sizes.conc, "duration_s": sizes.duration.as_secs_f64(),
            },
            "scaleout": {"target_ratio": SCALE_TARGET, "rows": scale_json, "cpu_seconds": cpu_json},
            "versus_distribution": {
                "ratio_orientation": "entrepot/distribution for higher-is-better rows, distribution/entrepot for lower-is-better rows; >1 means entrepot is better",
                "rows": vs_json,
            },
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

type ScaleResults = Vec<(&'static str, Result<Phase>, Result<Phase>)>;
type VsResults = BTreeMap<(&'static str, Kind), Cell>;

#[allow(clippy::too_many_arguments)]
async fn measure(
    cli: &Cli,
    entrepot_bin: &Path,
    stack: &Stack,
    sizes: &crate::Sizes,
    ss: &ScaleSizes,
    p: &Arc<Payloads>,
    one_blobs: &Arc<Vec<BlobSpec>>,
    two_blobs: &Arc<Vec<BlobSpec>>,
) -> Result<(ScaleResults, VsResults, serde_json::Value)> {
    let registry = Stack::addr(stack.var("REGISTRY")?)?;
    let instances: Vec<SocketAddr> = stack.var("INSTANCES")?.split(',').map(Stack::addr).collect::<Result<Vec<_>>>()?;
    let instance_pids: Vec<u32> = stack
        .var("INSTANCE_PIDS")?
        .split(',')
        .map(|p| p.parse().map_err(|_| err(format!("bad PID {p:?}"))))
        .collect::<Result<Vec<_>>>()?;
    let weed_pid = stack.pid("WEED_PID")?;
    let mut procs = vec![
        ("seaweedfs".to_string(), weed_pid),
        ("postgres".to_string(), stack.pid("POSTGRES_PID")?),
        ("nginx".to_string(), stack.pid("NGINX_PID")?),
    ];
    for (i, pid) in instance_pids.iter().enumerate() {
        procs.push((format!("entrepot#{}", i + 1), *pid));
    }
    let procs = Procs(procs);
    let s3 = |bucket: &str| S3Target {
        endpoint: stack.var("S3_ENDPOINT").unwrap_or_default().to_string(),
        bucket: bucket.to_string(),
        region: "us-east-1".into(),
        access_key: stack.var("AWS_ACCESS_KEY_ID").unwrap_or_default().to_string(),
        secret_key: stack.var("AWS_SECRET_ACCESS_KEY").unwrap_or_default().to_string(),
    };
    let stack_info = serde_json::json!({
        "registry": registry.to_string(),
        "instances": instances.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "s3_endpoint": stack.var("S3_ENDPOINT")?,
        "bucket": stack.var("S3_BUCKET")?,
        "pids": procs.0.iter().map(|(n, p)| (n.clone(), serde_json::json!(p))).collect::<serde_json::Map<_, _>>(),
    });
    eprintln!("nginx on {registry} in front of {instances:?}");

    // ---- 1. one instance vs two behind nginx -------------------------------------------------
    let one = *instances.first().ok_or_else(|| err("the stack has no instance"))?;
    warm_up(one, "bench/warmup", 7001).await?;
    warm_up(registry, "bench/warmup", 7002).await?;
    let mut scale: ScaleResults = Vec::new();
    let configs = [
        ("1 instance", one, "bench/scale-one", one_blobs),
        ("2 instances + nginx", registry, "bench/scale-two", two_blobs),
    ];
    let mut pushes = Vec::new();
    let mut pulls = Vec::new();
    for (name, addr, repo, blobs) in configs {
        let push =
            timed_phase(format!("push, {name}"), &procs, sizes.row_timeout, parallel_push(addr, repo, blobs)).await;
        print_phase(&push, &format!("push, {name}"));
        let pull = match &push {
            Ok(_) => {
                timed_phase(
                    format!("pull, {name}"),
                    &procs,
                    sizes.row_timeout,
                    parallel_pull(addr, repo, blobs, ss.pull_rounds),
                )
                .await
            }
            Err(e) => Err(err(format!("push failed: {e}"))),
        };
        print_phase(&pull, &format!("pull, {name}"));
        pushes.push(push);
        pulls.push(pull);
    }
    let mut pushes = pushes.into_iter();
    let mut pulls = pulls.into_iter();
    let (Some(push1), Some(push2), Some(pull1), Some(pull2)) =
        (pushes.next(), pushes.next(), pulls.next(), pulls.next())
    else {
        return Err(err("internal: missing scale-out phases"));
    };
    scale.push(("push", push1, push2));
    scale.push(("pull", pull1, pull2));

    // ---- 2. Entrepôt vs distribution, both on SeaweedFS --------------------------------------
    let mut vs: VsResults = BTreeMap::new();
    let mut servers: Vec<Server> = Vec::new();
    let e_target = s3("bench-entrepot");
    let d_target = s3("bench-distribution");
    create_bucket(&e_target).await?;
    create_bucket(&d_target).await?;
    let db = create_database(stack.var("DATABASE_URL")?, "bench_entrepot").await?;
    let e_args: Vec<String> = vec![
        "--s3-endpoint".into(),
        e_target.endpoint.clone(),
        "--s3-bucket".into(),
        e_target.bucket.clone(),
        "--s3-path-style".into(),
        "--database-url".into(),
        db,
    ];
    let e_env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), e_target.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), e_target.secret_key.clone()),
    ];
    for kind in [Kind::Entrepot, Kind::Distribution] {
        let s = match kind {
            Kind::Entrepot => Server::start_entrepot_with(entrepot_bin, &e_args, &e_env).await,
            Kind::Distribution => Server::start_distribution_s3(&cli.distribution, &d_target).await,
        };
        match s {
            Ok(s) => {
                eprintln!("{} on S3 listening on {} (pid {})", kind.name(), s.addr, s.pid);
                servers.push(s);
            }
            Err(e) => {
                for s in servers {
                    s.stop(cli.keep).await;
                }
                return Err(err(format!("starting {} on S3: {e}", kind.name())));
            }
        }
    }
    for s in &servers {
        if let Err(e) = warm_up(s.addr, "bench/warmup", 7003).await {
            eprintln!("  warm-up of {} failed: {e}", s.kind.name());
        }
    }
    for s in servers.iter_mut() {
        let kind = s.kind;
        let mut acc = Acc::default();
        let (mut s3_push, mut s3_pull) = (0.0, 0.0);
        for row in ["push-mono", "pull", "manifest-get"] {
            if !s.alive() {
                vs.insert((row, kind), Err("server exited".into()));
                continue;
            }
            let (push_cpu0, pull_cpu0) = (acc.push_bytes, acc.pull_bytes);
            let w0 = server::tree_cpu_seconds(weed_pid);
            let r = tokio::time::timeout(sizes.row_timeout, crate::run_row(row, s, p, sizes, &mut acc)).await;
            let dw = server::tree_cpu_seconds(weed_pid) - w0;
            if acc.push_bytes > push_cpu0 {
                s3_push += dw;
            }
            if acc.pull_bytes > pull_cpu0 {
                s3_pull += dw;
            }
            let r = r.unwrap_or_else(|_| Err(err(format!("timed out after {:?}", sizes.row_timeout))));
            match r {
                Ok(values) => {
                    for (k, v) in values {
                        eprintln!("  {:<14} {:<13} {:>12.2}", k, kind.name(), v);
                        if let Some(def) = VS_ROWS.iter().find(|d| d.key == k) {
                            vs.insert((def.key, kind), Ok(v));
                        }
                    }
                }
                Err(e) => {
                    eprintln!("  {:<14} {:<13} ERROR {e}", row, kind.name());
                    vs.insert((row, kind), Err(e.to_string()));
                }
            }
        }
        if acc.push_bytes > 0 {
            let gb = acc.push_bytes as f64 / 1e9;
            vs.insert(("cpu-push", kind), Ok(acc.push_cpu / gb));
            vs.insert(("s3-cpu-push", kind), Ok(s3_push / gb));
        }
        if acc.pull_bytes > 0 {
            let gb = acc.pull_bytes as f64 / 1e9;
            vs.insert(("cpu-pull", kind), Ok(acc.pull_cpu / gb));
            vs.insert(("s3-cpu-pull", kind), Ok(s3_pull / gb));
        }
        vs.insert(("peak-rss", kind), Ok(s.rss().1 / MIB as f64));
    }
    for s in servers {
        s.stop(cli.keep).await;
    }
    Ok((scale, vs, stack_info))
}

fn print_phase(r: &Result<Phase>, label: &str) {
    match r {
        Ok(ph) => {
            let cpu: Vec<String> = ph.cpu.iter().map(|(n, c)| format!("{n} {:.0}%", 100.0 * c / ph.secs)).collect();
            eprintln!("  {label:<30} {:>8.1} MB/s in {:.1}s; CPU: {}", ph.mbps, ph.secs, cpu.join(", "));
        }
        Err(e) => eprintln!("  {label:<30} ERROR {e}"),
    }
}

fn ok_cell(r: &Result<Phase>) -> Option<f64> {
    r.as_ref().ok().map(|p| p.mbps)
}

/// Prints the scale-out table and the CPU breakdown; returns their JSON.
fn report_scale(scale: &ScaleResults, ss: &ScaleSizes) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    println!();
    println!(
        "Scale-out on S3 + PostgreSQL: {} parallel clients, {} MiB blobs (pull: {} blobs per client)",
        ss.clients,
        ss.blob / MIB,
        ss.pull_rounds
    );
    let h = ["row", "unit", "1 instance", "2 + nginx", "ratio", "target", "status"];
    println!("{:<34} {:>9} {:>12} {:>12} {:>9}  {:<10} {}", h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
    println!("{}", "-".repeat(100));
    let mut rows = Vec::new();
    let mut cpu = Vec::new();
    let mut errors = Vec::new();
    for (key, one, two) in scale {
        let show = |r: &Result<Phase>, who: &str, errors: &mut Vec<String>| match r {
            Ok(p) => crate::fmt_value(p.mbps, "MB/s"),
            Err(e) => {
                errors.push(format!("{key} [{who}]: {e}"));
                "ERROR".into()
            }
        };
        let (a, b) = (show(one, "1 instance", &mut errors), show(two, "2 instances", &mut errors));
        let ratio = match (ok_cell(one), ok_cell(two)) {
            (Some(x), Some(y)) if x > 0.0 => Some(y / x),
            _ => None,
        };
        let pass = ratio.map(|r| r >= SCALE_TARGET);
        println!(
            "{:<34} {:>9} {:>12} {:>12} {:>9}  {:<10} {}",
            format!("aggregate {key}"),
            "MB/s",
            a,
            b,
            ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            format!(">= {SCALE_TARGET}x"),
            match pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "",
            }
        );
        rows.push(serde_json::json!({
            "key": key, "unit": "MB/s",
            "one_instance": ok_cell(one), "two_instances_nginx": ok_cell(two),
            "one_instance_error": one.as_ref().err().map(|e| e.to_string()),
            "two_instances_nginx_error": two.as_ref().err().map(|e| e.to_string()),
            "ratio": ratio, "target": SCALE_TARGET, "pass": pass,
        }));
    }
    println!("{}", "-".repeat(100));
    for e in &errors {
        println!("error: {e}");
    }
    // CPU of each process during each phase, as a share of one core (200% = both cores).
    let phases: Vec<&Phase> = scale.iter().flat_map(|(_, a, b)| [a, b]).filter_map(|r| r.as_ref().ok()).collect();
    if let Some(first) = phases.first() {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!();
        println!("CPU during each phase, % of one core ({cores} cores: {}% = all of them):", 100 * cores);
        print!("{:<30} {:>7}", "phase", "wall s");
        for (n, _) in &first.cpu {
            print!(" {n:>11}");
        }
        println!(" {:>9}", "total");
        for ph in &phases {
            print!("{:<30} {:>7.1}", ph.label, ph.secs);
            for (_, c) in &ph.cpu {
                print!(" {:>10.0}%", 100.0 * c / ph.secs);
            }
            println!(" {:>8.0}%", 100.0 * ph.cpu.iter().map(|(_, c)| c).sum::<f64>() / ph.secs);
        }
        println!();
        println!("CPU seconds per GB moved in each phase:");
        print!("{:<30} {:>7}", "phase", "GB");
        for (n, _) in &first.cpu {
            print!(" {n:>11}");
        }
        println!(" {:>9}", "total");
        for ph in &phases {
            let gb = ph.bytes as f64 / 1e9;
            print!("{:<30} {:>7.2}", ph.label, gb);
            for (_, c) in &ph.cpu {
                print!(" {:>11.2}", c / gb);
            }
            println!(" {:>9.2}", ph.cpu.iter().map(|(_, c)| c).sum::<f64>() / gb);
            cpu.push(serde_json::json!({
                "phase": ph.label, "wall_s": ph.secs, "bytes": ph.bytes, "mb_per_s": ph.mbps,
                "cpu_seconds": ph.cpu.iter().map(|(n, c)| (n.clone(), serde_json::json!(c))).collect::<serde_json::Map<_, _>>(),
            }));
        }
    }
    (rows, cpu)
}

/// Prints the comparison with distribution; returns its JSON rows.
fn report_vs(vs: &VsResults) -> Vec<serde_json::Value> {
    println!();
    println!("Entrepôt vs distribution 2.8.2, both on the same SeaweedFS (one server at a time):");
    let h = ["row", "unit", "entrepot", "distribution", "ratio"];
    println!("{:<34} {:>9} {:>12} {:>12} {:>9}", h[0], h[1], h[2], h[3], h[4]);
    println!("{}", "-".repeat(80));
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for def in VS_ROWS {
        let e = vs.get(&(def.key, Kind::Entrepot));
        let d = vs.get(&(def.key, Kind::Distribution));
        if e.is_none() && d.is_none() {
            continue;
        }
        let show = |c: Option<&Cell>, who: &str, errors: &mut Vec<String>| match c {
            None => "-".to_string(),
            Some(Ok(v)) => crate::fmt_value(*v, def.unit),
            Some(Err(m)) => {
                errors.push(format!("{} [{who}]: {m}", def.key));
                "ERROR".to_string()
            }
        };
        let (es, ds) = (show(e, "entrepot", &mut errors), show(d, "distribution", &mut errors));
        let ev = e.and_then(|c| c.as_ref().ok()).copied();
        let dv = d.and_then(|c| c.as_ref().ok()).copied();
        let ratio = match (ev, dv) {
            (Some(e), Some(d)) if e > 0.0 && d > 0.0 => Some(if def.higher_is_better { e / d } else { d / e }),
            _ => None,
        };
        println!(
            "{:<34} {:>9} {:>12} {:>12} {:>9}",
            def.label,
            def.unit,
            es,
            ds,
            ratio.map_or("-".to_string(), |r| format!("{r:.2}x"))
        );
        out.push(serde_json::json!({
            "key": def.key, "label": def.label, "unit": def.unit,
            "better": if def.higher_is_better { "higher" } else { "lower" },
            "entrepot": ev.filter(|v| v.is_finite()), "distribution": dv.filter(|v| v.is_finite()),
            "entrepot_error": e.and_then(|c| c.as_ref().err()), "distribution_error": d.and_then(|c| c.as_ref().err()),
            "ratio": ratio,
        }));
    }
    println!("{}", "-".repeat(80));
    println!("ratio: >1 means entrepot is better. MB = 10^6 bytes, GB = 10^9 bytes, MiB = 2^20 bytes.");
    for e in errors {
        println!("error: {e}");
    }
    out
}
