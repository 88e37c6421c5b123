//! `entrepot scan` and `entrepot vulndb import|status|update`: security scanning from the command line.
//!
//! Each command opens the data directory the way `serve` does (the same configuration: file, then
//! `ENTREPOT_*`, then flags) with its own connections, so it runs with or without a server on the same data
//! directory: a stored result is reported as is (re-matched first if the advisories changed since), an image
//! without one is scanned now (through the registry service) and the result kept for the server too. An
//! import re-matches every stored inventory. Results go to stdout, problems to stderr. Must never hold scanning
//! logic of its own (that is `entrepot-scan`'s) nor write outside the data directory and the advisory database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use entrepot_oci::{Digest, Reference, RepoName, Tag};
use entrepot_registry::Registry;
use entrepot_scan::{AdvisoryDb, Report, ScanStore, Scanner, SqliteScanStore, sbom};

use crate::config::{Config, ServeArgs};

/// Where the command finds the registry.
#[derive(Args, Debug, Clone)]
pub struct Where {
    /// TOML configuration file (the one `entrepot serve` uses).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The data directory [default: from the configuration, else ./entrepot-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `entrepot scan`
#[derive(Args, Debug)]
pub struct ScanArgs {
    #[command(flatten)]
    pub at: Where,
    /// The image: REPO:TAG, REPO@DIGEST, or REPO (tag `latest`).
    pub image: String,
    /// Output: a table, the JSON report, an SPDX 2.3 or a CycloneDX 1.5 SBOM.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "spdx", "cyclonedx"])]
    pub format: String,
    /// Exit with status 1 when a finding is at or above this severity (critical, high, medium, low,
    /// negligible, unknown).
    #[arg(long)]
    pub fail_on: Option<String>,
}

/// `entrepot vulndb …`
#[derive(Subcommand, Debug)]
pub enum VulndbCommand {
    /// Load OSV advisories from directories of JSON files, JSON files or `all.zip` archives, then re-match
    /// every stored inventory.
    Import(ImportArgs),
    /// What the advisory database holds and how old it is.
    Status(Where),
    /// Fetch OSV `all.zip` archives over HTTP(S) and import them.
    Update(UpdateArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub at: Where,
    /// Directories, `*.json` files or `*.zip` archives.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub at: Where,
    /// URL of an OSV `all.zip` archive (per ecosystem); repeat for several.
    #[arg(long = "source", required = true)]
    pub sources: Vec<String>,
}

/// Reads the whole serve configuration (environment included).
#[derive(Parser)]
struct EnvConfig {
    #[command(flatten)]
    serve: ServeArgs,
}

fn load(at: &Where) -> Result<Config, String> {
    let mut argv: Vec<std::ffi::OsString> = vec!["entrepot".into()];
    if let Some(c) = &at.config {
        argv.extend(["--config".into(), c.clone().into_os_string()]);
    }
    if let Some(d) = &at.data_dir {
        argv.extend(["--data-dir".into(), d.clone().into_os_string()]);
    }
    let parsed = EnvConfig::try_parse_from(argv).map_err(|e| format!("configuration error: {e}"))?;
    Config::load(parsed.serve).map_err(|e| format!("configuration error: {e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

async fn open_registry(config: &Config) -> Result<Registry, String> {
    crate::config::meta_exists(config)?;
    let blobs = crate::config::open_blobs(config)?;
    let meta = crate::config::open_meta(config).await?;
    let registry = Registry::new(blobs, meta, config.registry.clone());
    registry.set_policies(config.lifecycle.policies.clone())?;
    Ok(registry)
}

fn open_store(data_dir: &Path) -> Result<Arc<dyn ScanStore>, String> {
    let store = SqliteScanStore::open(data_dir.join("scan.db")).map_err(|e| e.to_string())?;
    Ok(Arc::new(store))
}

/// Starts the scanner of `entrepot serve`: wraps the registry's event sink (scan on push, when configured),
/// starts the workers and the sweep. Returns the registry to serve and the scanner for the HTTP extension.
pub fn start_in_server(registry: Registry, config: &Config) -> Result<(Registry, Arc<Scanner>), String> {
    let store = open_store(&config.data_dir)?;
    let scanner = Scanner::new(registry.clone(), store, config.scan.settings());
    // Open the advisory database once now, so a broken file is reported at start.
    AdvisoryDb::open(&config.scan.vulndb)
        .map_err(|e| format!("cannot open the advisory database {}: {e}", config.scan.vulndb.display()))?;
    // Workers always run (on-demand scans from the HTTP API); pushes and the start-up sweep feed them only
    // with scan_on_push.
    scanner.start(config.scan.on_push);
    let registry = if config.scan.on_push {
        registry.clone().with_event_sink(scanner.sink(registry.event_sink()))
    } else {
        registry
    };
    tracing::info!(
        on_push = config.scan.on_push,
        vulndb = %config.scan.vulndb.display(),
        attach_sbom = config.scan.attach_sbom,
        policies = config.scan.policy.rules.len(),
        "security scanning is on"
    );
    Ok((registry, Arc::new(scanner)))
}

/// `REPO:TAG`, `REPO@DIGEST`, `REPO` (latest).
fn parse_image(s: &str) -> Result<(RepoName, Reference), String> {
    let bad = |e: &dyn std::fmt::Display| format!("{s}: {e}");
    if let Some((repo, digest)) = s.split_once('@') {
        let repo = RepoName::parse(repo).map_err(|e| bad(&e))?;
        return Ok((repo, Reference::Digest(Digest::parse(digest).map_err(|e| bad(&e))?)));
    }
    let slash = s.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match s[slash..].rfind(':') {
        Some(i) => (&s[..slash + i], &s[slash + i + 1..]),
        None => (s, "latest"),
    };
    let repo = RepoName::parse(repo).map_err(|e| bad(&e))?;
    Ok((repo, Reference::Tag(Tag::parse(tag).map_err(|e| bad(&e))?)))
}

/// `entrepot scan`: `Ok(true)` when no finding reaches `--fail-on`.
pub fn scan(args: ScanArgs) -> Result<bool, String> {
    let threshold = args.fail_on.as_deref().map(entrepot_scan::parse_severity).transpose()?;
    let (repo, reference) = parse_image(&args.image)?;
    let config = load(&args.at)?;
    let report = runtime()?.block_on(async {
        let registry = open_registry(&config).await?;
        let scanner = Scanner::new(registry.clone(), open_store(&config.data_dir)?, config.scan.settings());
        let manifest = registry.get_manifest(&repo, &reference).await.map_err(|e| e.to_string())?;
        let digest = manifest.digest;
        match scanner.stored_report(&repo, &digest, true).await.map_err(|e| e.to_string())? {
            Some(r) if r.status != "failed" => Ok::<Report, String>(r),
            _ => {
                scanner.scan(&repo, &digest).await.map_err(|e| format!("scanning {repo}@{digest}: {e}"))?;
                scanner
                    .stored_report(&repo, &digest, true)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no result for {repo}@{digest} after scanning"))
            }
        }
    })?;
    let text = match args.format.as_str() {
        "json" => pretty(&serde_json::to_value(&report).map_err(|e| e.to_string())?),
        "spdx" => pretty(&sbom::spdx(&report)),
        "cyclonedx" => pretty(&sbom::cyclonedx(&report)),
        _ => entrepot_scan::report::render_table(&report),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
    if report.status == "failed" {
        return Err(format!("the scan failed: {}", report.message.unwrap_or_default()));
    }
    Ok(match threshold {
        Some(t) => !report.has_at_least(t),
        None => true,
    })
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Imports one path (dir, zip or JSON file) and prints what happened.
fn import_path(db: &mut AdvisoryDb, path: &Path) -> Result<(), String> {
    let report = if path.is_dir() {
        db.import_dir(path).map_err(|e| e.to_string())?
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
        db.import_zip(path).map_err(|e| e.to_string())?
    } else {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut malformed = Vec::new();
        let records = entrepot_vuln::import::parse_document(&path.display().to_string(), &bytes, &mut malformed);
        let mut r = db.import_records(records).map_err(|e| e.to_string())?;
        r.files = 1;
        r.malformed_count = malformed.len() as u64;
        r.malformed = malformed;
        r
    };
    println!(
        "{}: {} files, {} records: {} new, {} replaced, {} unchanged, {} skipped",
        path.display(),
        report.files,
        report.records,
        report.inserted,
        report.replaced,
        report.unchanged,
        report.malformed_count
    );
    for m in &report.malformed {
        println!("  skipped {}: {}", m.source, m.reason);
    }
    if report.malformed_count > report.malformed.len() as u64 {
        println!("  … and {} more skipped", report.malformed_count - report.malformed.len() as u64);
    }
    Ok(())
}

/// Re-matches every stored inventory after an import (when this data directory has scan results).
async fn rematch(config: &Config) -> Result<(), String> {
    if !config.data_dir.join("scan.db").exists() {
        return Ok(());
    }
    let store = open_store(&config.data_dir)?;
    let s = entrepot_scan::rematch_all(store, config.scan.vulndb.clone()).await.map_err(|e| e.to_string())?;
    println!("re-matched {} stored images: {} findings ({} ms)", s.images, s.findings, s.elapsed_ms);
    Ok(())
}

/// `entrepot vulndb …`
pub fn vulndb(cmd: VulndbCommand) -> Result<(), String> {
    match cmd {
        VulndbCommand::Import(args) => {
            let config = load(&args.at)?;
            let mut db = open_db(&config)?;
            for p in &args.paths {
                import_path(&mut db, p)?;
            }
            drop(db);
            runtime()?.block_on(rematch(&config))
        }
        VulndbCommand::Status(at) => status(&load(&at)?),
        VulndbCommand::Update(args) => {
            let config = load(&args.at)?;
            runtime()?.block_on(update(&config, &args.sources))
        }
    }
}

fn open_db(config: &Config) -> Result<AdvisoryDb, String> {
    if let Some(parent) = config.scan.vulndb.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    AdvisoryDb::open(&config.scan.vulndb)
        .map_err(|e| format!("cannot open the advisory database {}: {e}", config.scan.vulndb.display()))
}

fn status(config: &Config) -> Result<(), String> {
    let db = open_db(config)?;
    let s = db.status().map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    println!("advisory database: {}", config.scan.vulndb.display());
    println!("advisories: {} ({} withdrawn)", s.advisories, s.withdrawn);
    match s.last_import {
        Some(t) => println!(
            "last import: {} ({} ago)",
            entrepot_vuln::time::format_unix(t),
            entrepot_registry::policy::format_duration(std::time::Duration::from_secs((now - t).max(0) as u64))
        ),
        None => println!("last import: never (run `entrepot vulndb import` or `update`)"),
    }
    println!("newest advisory modified: {}", s.newest_modified.as_deref().unwrap_or("-"));
    for (eco, n) in &s.by_ecosystem {
        println!("  {eco}: {n}");
    }
    if config.data_dir.join("scan.db").exists() {
        let counts =
            runtime()?.block_on(async { open_store(&config.data_dir)?.counts().await.map_err(|e| e.to_string()) })?;
        let list: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        println!("stored scan results: {}", if list.is_empty() { "none".into() } else { list.join(", ") });
    }
    Ok(())
}

async fn update(config: &Config, sources: &[String]) -> Result<(), String> {
    // When reqwest is built with rustls (entrepot-storage enables it for https object stores), a client
    // needs the process-wide crypto provider: ring, as the server's TLS uses; already installed is fine.
    // Without TLS compiled in, an https source fails with reqwest's error, never a panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
    let dir = config.scan.vulndb.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (i, url) in sources.iter().enumerate() {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("{url}: expected an http:// or https:// URL"));
        }
        let tmp = dir.join(format!(".vulndb-download-{}-{i}.zip", std::process::id()));
        let fetched = download(&client, url, &tmp).await;
        let result = fetched.and_then(|bytes| {
            println!("{url}: {bytes} bytes");
            let mut db = open_db(config)?;
            import_path(&mut db, &tmp)
        });
        let _ = std::fs::remove_file(&tmp);
        result?;
    }
    rematch(config).await
}

/// Streams `url` into `path` (never whole in memory); returns the byte count.
async fn download(client: &reqwest::Client, url: &str, path: &Path) -> Result<u64, String> {
    use tokio::io::AsyncWriteExt;
    let mut resp = client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let mut file = tokio::fs::File::create(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        n += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(|e| format!("{}: {e}", path.display()))?;
    }
    file.flush().await.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let (r, t) = parse_image("team/app:1.0").expect("tag");
        assert_eq!((r.as_str(), t.to_string()), ("team/app", "1.0".to_string()));
        let (r, t) = parse_image("localhost/app").expect("latest");
        assert_eq!((r.as_str(), t.to_string()), ("localhost/app", "latest".to_string()));
        let d = format!("sha256:{}", "a".repeat(64));
        let (_, t) = parse_image(&format!("team/app@{d}")).expect("digest");
        assert_eq!(t.to_string(), d);
        assert!(parse_image("Team/app:1").is_err());
        assert!(parse_image("team/app@sha256:zz").is_err());
    }
}
