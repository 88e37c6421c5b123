//! `entrepot-bench-scan`: what security scanning costs. Three rows:
//!
//! 1. `debian`: scan time and peak memory for the real Debian 12 image of `crates/inventory`'s tests
//!    (`target/inventory-fixtures/debian12`, three gzip layers; run `cargo test -p entrepot-inventory --test
//!    debian` once to build it);
//! 2. `big`: the same for a generated ≈ 500 MB multi-layer image (random and compressible files across several
//!    gzip layers, a dpkg database in the first);
//! 3. `rematch`: re-matching 10,000 stored inventories (copies of the Debian image's) after an advisory import.
//!
//! Images are pushed through the `Registry` service into a filesystem data directory; each scan runs in a fresh
//! child process (this binary with `--child`) that opens the stores, scans through `Scanner::scan` (layers
//! streamed from the blob store, matching included, no SBOM) and reports its time and `VmHWM` (peak resident
//! memory) from `/proc/self/status`, next to the `VmHWM` it had before scanning. Prints a table, and JSON with
//! `--json FILE`. Must never measure anything but scanning (pushing the images is untimed).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use entrepot_meta::SqliteMetaStore;
use entrepot_oci::{Algorithm, Digest, Reference, RepoName, media};
use entrepot_registry::{ByteStream, Registry, RegistryConfig};
use entrepot_scan::{ScanSettings, ScanStore, Scanner, SqliteScanStore};
use entrepot_storage::FsBlobStore;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Parser, Debug)]
#[command(name = "entrepot-bench-scan", about = "Benchmark security scanning: scan time, peak memory, re-matching")]
struct Cli {
    /// Work directory [default: a temporary directory, removed at the end].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Size of the generated image in MiB (uncompressed content).
    #[arg(long, default_value_t = 500)]
    big_mib: u64,
    /// Gzip layers of the generated image.
    #[arg(long, default_value_t = 5)]
    big_layers: usize,
    /// Stored inventories to re-match.
    #[arg(long, default_value_t = 10_000)]
    inventories: usize,
    /// Rows to run (debian, big, rematch) [default: all].
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: scan `REPO@DIGEST` in the data directory given by --dir and print a JSON line.
    #[arg(long, hide = true)]
    child: Option<String>,
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

async fn open_registry(dir: &Path) -> Result<Registry> {
    let blobs = FsBlobStore::open(dir)?;
    let meta = SqliteMetaStore::open(&dir.join("meta.db")).await?;
    Ok(Registry::new(Arc::new(blobs), Arc::new(meta), RegistryConfig::default()))
}

async fn push_blob(r: &Registry, repo: &RepoName, path_or_bytes: Result<Vec<u8>>) -> Result<(Digest, u64)> {
    let bytes = path_or_bytes?;
    let d = Digest::sha256(&bytes);
    let len = bytes.len() as u64;
    if r.blob_size(repo, &d).await.is_ok() {
        return Ok((d, len));
    }
    let s = r.start_upload(repo, Algorithm::Sha256).await?;
    let body: ByteStream = Box::pin(futures_util::stream::once(async move { Ok(Bytes::from(bytes)) }));
    r.finish_upload(repo, &s.id, &d, None, Some(len), Some(body)).await?;
    Ok((d, len))
}

async fn push_image(r: &Registry, repo: &RepoName, layers: Vec<Vec<u8>>) -> Result<Digest> {
    let mut descs = Vec::new();
    for l in layers {
        let (d, size) = push_blob(r, repo, Ok(l)).await?;
        descs.push(serde_json::json!({"mediaType": LAYER, "digest": d, "size": size}));
    }
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let (cd, cl) = push_blob(r, repo, Ok(config)).await?;
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": cd, "size": cl},
        "layers": descs,
    });
    let put = r
        .put_manifest(repo, &Reference::parse("bench")?, Some(media::OCI_MANIFEST), serde_json::to_vec(&m)?, vec![])
        .await?;
    Ok(put.digest)
}

/// A deterministic pseudo-random generator (xorshift64*), for incompressible file contents.
struct Rng(u64);
impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// One gzip layer of ≈ `bytes` of files: 4 MiB files, alternately random and compressible text; the first layer
/// also holds an os-release and a dpkg status database copied from the Debian fixture (when present).
fn big_layer(index: usize, bytes: u64, dpkg_status: Option<&[u8]>) -> Result<Vec<u8>> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(enc);
    let add = |tar: &mut tar::Builder<_>, path: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, data)?;
        Ok(())
    };
    if index == 0 {
        add(&mut tar, "etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n")?;
        if let Some(s) = dpkg_status {
            add(&mut tar, "var/lib/dpkg/status", s)?;
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ index as u64);
    let file = 4 << 20;
    let mut buf = vec![0u8; file];
    let text: Vec<u8> =
        b"lorem ipsum dolor sit amet, consectetur adipiscing elit; ".iter().copied().cycle().take(file).collect();
    let mut written = 0u64;
    let mut n = 0;
    while written < bytes {
        if n % 2 == 0 {
            rng.fill(&mut buf);
            add(&mut tar, &format!("data/layer{index}/random-{n}.bin"), &buf)?;
        } else {
            add(&mut tar, &format!("usr/share/doc/layer{index}/text-{n}.txt"), &text)?;
        }
        written += file as u64;
        n += 1;
    }
    Ok(tar.into_inner()?.finish()?)
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/inventory-fixtures/debian12")
}

/// Child process: scan one image, print `{"ms":…,"hwm_before_kib":…,"hwm_kib":…,"packages":…,"findings":…}`.
async fn child(dir: &Path, target: &str) -> Result<()> {
    let (repo, digest) = target.split_once('@').ok_or("REPO@DIGEST")?;
    let (repo, digest) = (RepoName::parse(repo)?, Digest::parse(digest)?);
    let registry = open_registry(dir).await?;
    let scan_db = dir.join(format!("scan-{}.db", std::process::id()));
    let store: Arc<dyn ScanStore> = Arc::new(SqliteScanStore::open(&scan_db)?);
    let mut settings = ScanSettings::new(dir.join("vulndb.sqlite"));
    settings.attach_sbom = false;
    let scanner = Scanner::new(registry, store, settings);
    let before = vm_hwm_kib();
    let started = Instant::now();
    let record = scanner.scan(&repo, &digest).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let packages = record.inventory.as_ref().map_or(0, |i| i.packages.len());
    let out = serde_json::json!({
        "ms": ms, "hwm_before_kib": before, "hwm_kib": vm_hwm_kib(),
        "packages": packages, "findings": record.findings.len(), "kind": format!("{:?}", record.kind),
    });
    println!("{out}");
    let _ = std::fs::remove_file(&scan_db);
    Ok(())
}

fn run_child(dir: &Path, target: &str) -> Result<serde_json::Value> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--dir")
        .arg(dir)
        .arg("--child")
        .arg(target)
        .output()?;
    if !out.status.success() {
        return Err(format!("child scan failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Hand-written Debian advisories for every source package of the fixture (half affected), so matching does
/// real work; returns how many.
fn import_advisories(dir: &Path, inventory: &entrepot_scan::ScanRecord) -> Result<usize> {
    let osv = dir.join("osv");
    std::fs::create_dir_all(&osv)?;
    let mut n = 0;
    let mut seen = std::collections::HashSet::new();
    for p in inventory.inventory.as_ref().map(|i| i.packages.as_slice()).unwrap_or_default() {
        let src = p.source_name.clone().unwrap_or_else(|| p.name.clone());
        let v = p.source_version.clone().unwrap_or_else(|| p.version.clone());
        if !seen.insert(src.clone()) {
            continue;
        }
        let fixed = if n % 2 == 0 { format!("{v}+bench1") } else { v.clone() };
        let rec = serde_json::json!({
            "id": format!("DSA-{}-1", 10_000 + n), "aliases": [format!("CVE-2099-{:05}", n)],
            "modified": "2025-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "Debian:12", "name": src},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}]}],
        });
        std::fs::write(osv.join(format!("{n}.json")), rec.to_string())?;
        n += 1;
    }
    let mut db = entrepot_scan::AdvisoryDb::open(dir.join("vulndb.sqlite"))?;
    db.import_dir(&osv)?;
    Ok(n)
}

fn row(name: &str, v: &serde_json::Value, extra: &str) {
    println!(
        "{name:<10} {:>10.0} ms  peak RSS {:>7.1} MiB (process before scanning {:>5.1} MiB)  {} packages, {} findings{extra}",
        v["ms"].as_f64().unwrap_or(0.0),
        v["hwm_kib"].as_f64().unwrap_or(0.0) / 1024.0,
        v["hwm_before_kib"].as_f64().unwrap_or(0.0) / 1024.0,
        v["packages"],
        v["findings"],
    );
}

async fn bench(cli: &Cli, dir: &Path) -> Result<serde_json::Value> {
    let want = |r: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == r);
    let registry = open_registry(dir).await?;
    let mut results = serde_json::Map::new();
    let fixture = fixture_dir();
    if !fixture.join(".complete").exists() {
        return Err(format!(
            "{} is missing: run `cargo test -p entrepot-inventory --test debian` once to build the Debian image",
            fixture.display()
        )
        .into());
    }
    let debian_repo = RepoName::parse("bench/debian")?;
    let layers = (1..=3)
        .map(|i| std::fs::read(fixture.join(format!("layer{i}.tar.gz"))))
        .collect::<std::io::Result<Vec<_>>>()?;
    let debian = push_image(&registry, &debian_repo, layers).await?;
    // Advisories for the Debian image's source packages (from a first, untimed scan's inventory).
    let store: Arc<dyn ScanStore> = Arc::new(SqliteScanStore::open(dir.join("seed-scan.db"))?);
    let mut settings = ScanSettings::new(dir.join("seed-vulndb.sqlite"));
    settings.attach_sbom = false;
    let seed = Scanner::new(registry.clone(), store.clone(), settings).scan(&debian_repo, &debian).await?;
    let advisories = import_advisories(dir, &seed)?;
    println!("advisories: {advisories} (Debian:12, one per source package of the Debian image)");

    if want("debian") {
        let v = run_child(dir, &format!("{debian_repo}@{debian}"))?;
        let mib: u64 = (1..=3)
            .map(|i| std::fs::metadata(fixture.join(format!("layer{i}.tar.gz"))).map_or(0, |m| m.len()))
            .sum::<u64>()
            >> 20;
        row("debian", &v, &format!(", {mib} MiB of gzip layers"));
        results.insert("debian".into(), v);
    }
    if want("big") {
        let status = std::fs::read(fixture.join("dpkg3/status")).ok();
        let per = (cli.big_mib << 20) / cli.big_layers.max(1) as u64;
        let started = Instant::now();
        let layers = (0..cli.big_layers).map(|i| big_layer(i, per, status.as_deref())).collect::<Result<Vec<_>>>()?;
        let gz: u64 = layers.iter().map(|l| l.len() as u64).sum();
        let repo = RepoName::parse("bench/big")?;
        let big = push_image(&registry, &repo, layers).await?;
        eprintln!("generated and pushed the big image in {:?}", started.elapsed());
        let v = run_child(dir, &format!("{repo}@{big}"))?;
        row(
            "big",
            &v,
            &format!(", {} MiB in {} gzip layers ({} MiB compressed)", cli.big_mib, cli.big_layers, gz >> 20),
        );
        results.insert("big".into(), v);
    }
    if want("rematch") {
        let store: Arc<dyn ScanStore> = Arc::new(SqliteScanStore::open(dir.join("rematch-scan.db"))?);
        for i in 0..cli.inventories {
            let mut r = seed.clone();
            r.digest = Digest::sha256(format!("inventory-{i}").as_bytes());
            store.put(&r).await?;
        }
        let started = Instant::now();
        let s = entrepot_scan::rematch_all(store, dir.join("vulndb.sqlite")).await?;
        let secs = started.elapsed().as_secs_f64();
        let packages = seed.inventory.as_ref().map_or(0, |i| i.packages.len()) * cli.inventories;
        println!(
            "rematch    {:>10.0} ms  {} inventories ({packages} packages), {} findings: {:.0} inventories/s",
            secs * 1000.0,
            s.images,
            s.findings,
            s.images as f64 / secs
        );
        results.insert(
            "rematch".into(),
            serde_json::json!({"ms": secs * 1000.0, "inventories": s.images, "packages": packages, "findings": s.findings}),
        );
    }
    Ok(serde_json::Value::Object(results))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("entrepot-bench-scan: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(target) = &cli.child {
        let Some(dir) = &cli.dir else {
            eprintln!("--child needs --dir");
            return std::process::ExitCode::FAILURE;
        };
        return match runtime.block_on(child(dir, target)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("entrepot-bench-scan: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let temp = match &cli.dir {
        Some(_) => None,
        None => match tempfile::tempdir() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("entrepot-bench-scan: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let dir = cli.dir.clone().or_else(|| temp.as_ref().map(|t| t.path().to_path_buf())).unwrap_or_default();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("entrepot-bench-scan: {e}");
        return std::process::ExitCode::FAILURE;
    }
    match runtime.block_on(bench(&cli, &dir)) {
        Ok(v) => {
            if let Some(path) = &cli.json {
                let _ = std::fs::File::create(path).and_then(|mut f| f.write_all(v.to_string().as_bytes()));
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("entrepot-bench-scan: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
