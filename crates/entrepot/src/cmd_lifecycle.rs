//! The maintenance commands — `entrepot gc`, `retention`, `usage`, `scrub` — and the lifecycle
//! duties of `entrepot serve` (rules, read-only mode and its signals, the scheduled collection).
//!
//! Each command opens the data directory the way `serve` does (the same configuration: file, then
//! `ENTREPOT_*`, then flags) with its own metadata connections, so it runs beside a live server; the
//! registry service does the work. Progress goes to stderr (redrawn in place on a terminal, one line
//! per phase otherwise); results go to stdout. Must never hold registry logic of its own.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Args, Parser};
use entrepot_registry::Registry;
use entrepot_registry::gc::{GcOptions, GcProgress, GcReport};
use entrepot_registry::policy::{HumanDuration, format_bytes, format_duration};
use entrepot_registry::retention::RetentionAction;
use entrepot_registry::scrub::{Finding, Repair};

use crate::config::{Config, ServeArgs};
use crate::lifecycle_config::Lifecycle;

/// Where a maintenance command finds the registry.
#[derive(Args, Debug)]
pub struct MaintArgs {
    /// TOML configuration file (the one `entrepot serve` uses).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The data directory [default: from the configuration, else ./entrepot-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The PostgreSQL database holding the metadata [default: from the configuration or
    /// ENTREPOT_DATABASE_URL, else DATA_DIR/meta.db].
    #[arg(long)]
    pub database_url: Option<String>,
    /// No progress display on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// `entrepot gc`
#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub m: MaintArgs,
    /// Report what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep data younger than this (e.g. `1h`, `30m`) [default: the configured `gc.grace`, 24h].
    #[arg(long)]
    pub grace: Option<String>,
    /// Also remove manifests no tag reaches [default: the configured `gc.delete_untagged`].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub delete_untagged: Option<bool>,
    /// Apply the retention rules first [default: the configured `gc.apply_retention`].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub apply_retention: Option<bool>,
}

/// `entrepot retention`
#[derive(Args, Debug)]
pub struct RetentionArgs {
    #[command(flatten)]
    pub m: MaintArgs,
    /// Print the plan only.
    #[arg(long)]
    pub dry_run: bool,
}

/// `entrepot scrub`
#[derive(Args, Debug)]
pub struct ScrubArgs {
    #[command(flatten)]
    pub m: MaintArgs,
    /// Quarantine corrupt blobs (moved to `quarantine/` in the data directory) and unlink them; remove
    /// manifests whose bytes do not match their digest (their bytes are kept in `quarantine/manifests/`).
    #[arg(long)]
    pub repair: bool,
}

/// Reads the whole serve configuration (environment included) for a maintenance command.
#[derive(Parser)]
struct EnvConfig {
    #[command(flatten)]
    serve: ServeArgs,
}

fn load(m: &MaintArgs) -> Result<Config, String> {
    let mut argv: Vec<std::ffi::OsString> = vec!["entrepot".into()];
    if let Some(c) = &m.config {
        argv.extend(["--config".into(), c.clone().into_os_string()]);
    }
    if let Some(d) = &m.data_dir {
        argv.extend(["--data-dir".into(), d.clone().into_os_string()]);
    }
    if let Some(u) = &m.database_url {
        argv.extend(["--database-url".into(), u.into()]);
    }
    let parsed = EnvConfig::try_parse_from(argv).map_err(|e| format!("configuration error: {e}"))?;
    Config::load(parsed.serve).map_err(|e| format!("configuration error: {e}"))
}

async fn open(config: &Config) -> Result<Registry, String> {
    crate::config::meta_exists(config)?;
    let blobs = crate::config::open_blobs(config)?;
    let meta = crate::config::open_meta(config).await?;
    let registry = Registry::new(blobs, meta, config.registry.clone());
    registry.set_policies(config.lifecycle.policies.clone())?;
    Ok(registry)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Progress on stderr: a line redrawn in place on a terminal, one line per phase otherwise.
struct TermProgress {
    tty: bool,
    quiet: bool,
    state: Mutex<ProgressState>,
}

struct ProgressState {
    phase: &'static str,
    total: Option<u64>,
    done: u64,
    drawn: Instant,
}

impl TermProgress {
    fn new(quiet: bool) -> TermProgress {
        TermProgress {
            tty: std::io::stderr().is_terminal(),
            quiet,
            state: Mutex::new(ProgressState { phase: "", total: None, done: 0, drawn: Instant::now() }),
        }
    }

    fn draw(&self, s: &ProgressState) {
        let total = s.total.map(|t| format!("/{t}")).unwrap_or_default();
        let _ = write!(std::io::stderr(), "\r\x1b[2K{}: {}{total}", s.phase, s.done);
    }

    fn finish(&self) {
        if self.tty && !self.quiet {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

impl GcProgress for TermProgress {
    fn phase(&self, name: &'static str, total: Option<u64>) {
        if self.quiet {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = ProgressState { phase: name, total, done: 0, drawn: Instant::now() };
        if self.tty {
            self.draw(&s);
        } else {
            let n = total.map(|t| format!(" ({t})")).unwrap_or_default();
            let _ = writeln!(std::io::stderr(), "{name}{n}…");
        }
    }

    fn step(&self) {
        if self.quiet || !self.tty {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.done += 1;
        if s.drawn.elapsed() >= Duration::from_millis(100) || s.total == Some(s.done) {
            s.drawn = Instant::now();
            self.draw(&s);
        }
    }
}

/// The summary `entrepot gc` prints.
pub fn summary(r: &GcReport) -> String {
    let verb = if r.dry_run { "would be removed" } else { "removed" };
    let mut out = String::new();
    out.push_str(&format!(
        "garbage collection {} in {:.1}s{}\n",
        if r.dry_run { "dry run finished" } else { "finished" },
        r.elapsed.as_secs_f64(),
        if r.dry_run { " (nothing was changed)" } else { "" }
    ));
    out.push_str(&format!("  repositories scanned  {}\n", r.repositories));
    out.push_str(&format!("  tags {verb} by retention  {}\n", r.tags));
    out.push_str(&format!(
        "  manifests {verb}  {} ({} referrers), {}\n",
        r.manifests,
        r.referrers,
        format_bytes(r.manifest_bytes)
    ));
    out.push_str(&format!("  blob links {verb}  {}\n", r.links));
    out.push_str(&format!("  blobs {verb}  {}, {}\n", r.blobs, format_bytes(r.blob_bytes)));
    if r.blobs_recent > 0 {
        out.push_str(&format!("  unreferenced blobs kept (within the grace period)  {}\n", r.blobs_recent));
    }
    out.push_str(&format!("  upload sessions {verb}  {}, {}\n", r.uploads, format_bytes(r.upload_bytes)));
    out.push_str(&format!(
        "  bytes {}  {} ({} bytes)\n",
        if r.dry_run { "reclaimable" } else { "reclaimed" },
        format_bytes(r.bytes()),
        r.bytes()
    ));
    out
}

pub fn gc(args: GcArgs) -> Result<(), String> {
    let config = load(&args.m)?;
    let mut opts = config.lifecycle.gc;
    if let Some(g) = &args.grace {
        opts.grace = HumanDuration::parse(g).map_err(|e| format!("--grace: {e}"))?.0;
    }
    opts.delete_untagged = args.delete_untagged.unwrap_or(opts.delete_untagged);
    opts.apply_retention = args.apply_retention.unwrap_or(opts.apply_retention);
    opts.dry_run = args.dry_run;
    runtime()?.block_on(async {
        let registry = open(&config).await?;
        let progress = TermProgress::new(args.m.quiet);
        let report = registry.collect_garbage(&opts, &progress).await.map_err(|e| format!("gc failed: {e}"));
        progress.finish();
        print!("{}", summary(&report?));
        Ok(())
    })
}

pub fn retention(args: RetentionArgs) -> Result<(), String> {
    let config = load(&args.m)?;
    runtime()?.block_on(async {
        let registry = open(&config).await?;
        if config.lifecycle.policies.retention.is_empty() {
            println!("no retention rules are configured ([[retention]] or ENTREPOT_RETENTION)");
            return Ok(());
        }
        let plan = registry.retention_plan().await.map_err(|e| format!("retention failed: {e}"))?;
        let rows: Vec<[String; 6]> = plan
            .iter()
            .map(|d| {
                [
                    d.repo.clone(),
                    d.tag.clone(),
                    format_duration(d.age),
                    match d.action {
                        RetentionAction::Keep => "keep".into(),
                        RetentionAction::Delete => "DELETE".into(),
                    },
                    d.rule.clone(),
                    d.reason.clone(),
                ]
            })
            .collect();
        print!("{}", table(&["REPOSITORY", "TAG", "AGE", "ACTION", "RULE", "REASON"], &rows));
        let deletes = plan.iter().filter(|d| d.action == RetentionAction::Delete).count();
        if args.dry_run {
            println!("{deletes} of {} tags would be deleted (dry run: nothing was changed)", plan.len());
        } else {
            let out = registry.apply_retention(&plan).await.map_err(|e| format!("retention failed: {e}"))?;
            println!(
                "{} tags deleted ({} skipped: moved since the plan); run `entrepot gc` to reclaim their data",
                out.deleted, out.skipped
            );
        }
        Ok(())
    })
}

pub fn usage(args: MaintArgs) -> Result<(), String> {
    let config = load(&args)?;
    runtime()?.block_on(async {
        let registry = open(&config).await?;
        let report = registry.usage_report().await.map_err(|e| format!("usage failed: {e}"))?;
        let pct = |used: u64, max: Option<u64>| match max {
            Some(m) if m > 0 => format!(" ({:.0}%)", used as f64 * 100.0 / m as f64),
            _ => String::new(),
        };
        let rows: Vec<[String; 6]> = report
            .repositories
            .iter()
            .map(|l| {
                let u = &l.usage;
                let quota = match &l.quota {
                    None => "-".to_string(),
                    Some((p, b, t)) => {
                        let mut parts = Vec::new();
                        if let Some(b) = b {
                            parts.push(format!("{}{}", format_bytes(*b), pct(u.bytes, Some(*b))));
                        }
                        if let Some(t) = t {
                            parts.push(format!("{t} tags{}", pct(u.tags, Some(*t))));
                        }
                        format!("{} [{p}]", parts.join(", "))
                    }
                };
                [
                    u.repo.clone(),
                    format_bytes(u.bytes),
                    u.blobs.to_string(),
                    u.tags.to_string(),
                    u.manifests.to_string(),
                    quota,
                ]
            })
            .collect();
        print!("{}", table(&["REPOSITORY", "USAGE", "BLOBS", "TAGS", "MANIFESTS", "QUOTA"], &rows));
        for t in &report.totals {
            let mut limit = Vec::new();
            if let Some(b) = t.max_bytes {
                limit.push(format!("{} of {}{}", format_bytes(t.bytes), format_bytes(b), pct(t.bytes, Some(b))));
            } else {
                limit.push(format_bytes(t.bytes));
            }
            if let Some(m) = t.max_tags {
                limit.push(format!("{} of {m} tags{}", t.tags, pct(t.tags, Some(m))));
            }
            println!("total quota {} over {} repositories: {}", t.pattern, t.repositories, limit.join(", "));
        }
        println!(
            "usage counts the distinct blobs linked in each repository (a shared layer counts in each); \
             the blob store holds {} ({} bytes)",
            format_bytes(report.stored_bytes),
            report.stored_bytes
        );
        Ok(())
    })
}

/// Exit status of `entrepot scrub`: `Ok(true)` when nothing was wrong.
pub fn scrub(args: ScrubArgs) -> Result<bool, String> {
    let config = load(&args.m)?;
    runtime()?.block_on(async {
        let registry = open(&config).await?;
        let progress = TermProgress::new(args.m.quiet);
        let report = registry.scrub(args.repair, &progress).await.map_err(|e| format!("scrub failed: {e}"));
        progress.finish();
        let report = report?;
        for (finding, repair) in &report.findings {
            let what = match finding {
                Finding::MissingBytes { digest, size, links } => {
                    format!(
                        "MISSING   {digest}: recorded ({size} bytes, linked in {links} repositories) but not stored"
                    )
                }
                Finding::WrongSize { digest, recorded, actual } => {
                    format!("SIZE      {digest}: recorded {recorded} bytes, stored {actual}")
                }
                Finding::WrongHash { digest, actual } => {
                    format!("CORRUPT   {digest}: the stored bytes hash to {actual}")
                }
                Finding::Unrecorded { digest, size } => {
                    format!(
                        "ORPHAN    {digest}: {size} bytes stored, recorded nowhere (garbage collection reclaims it)"
                    )
                }
                Finding::ManifestCorrupt { repo, digest, actual, .. } => {
                    format!("MANIFEST  {repo}@{digest}: the stored bytes hash to {actual}")
                }
            };
            let fix = match (repair, finding) {
                (Repair::None, _) => String::new(),
                (Repair::Quarantined { to, unlinked }, _) => format!(
                    "\n          repaired: {}unlinked from {}",
                    to.as_ref().map(|t| format!("moved to {t}, ")).unwrap_or_default(),
                    if unlinked.is_empty() { "no repository".to_string() } else { unlinked.join(", ") }
                ),
                (Repair::ManifestRemoved, Finding::ManifestCorrupt { repo, digest, content, .. }) => {
                    let dir = config.data_dir.join("quarantine").join("manifests");
                    let file = dir.join(format!("{}@{}-{}", repo.replace('/', "_"), digest.algorithm(), digest.hex()));
                    let saved = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&file, content));
                    match saved {
                        Ok(()) => format!("\n          repaired: removed; its bytes are in {}", file.display()),
                        Err(e) => format!("\n          repaired: removed; its bytes could not be saved: {e}"),
                    }
                }
                (Repair::ManifestRemoved, _) => "\n          repaired: removed".to_string(),
            };
            println!("{what}{fix}");
        }
        println!(
            "scrub checked {} blobs ({} hashed) and {} manifests: {} problem(s){}",
            report.blobs_checked,
            format_bytes(report.bytes_hashed),
            report.manifests_checked,
            report.findings.len(),
            if args.repair || report.findings.is_empty() { "" } else { "; run with --repair to quarantine them" }
        );
        Ok(report.findings.is_empty())
    })
}

/// Left-aligned columns.
fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Lifecycle duties of `entrepot serve`: applies the rules and the read-only setting, turns read-only
/// mode on with SIGUSR1 and off with SIGUSR2, and starts the scheduled collection.
pub fn start_in_server(registry: &Registry, lifecycle: &Lifecycle) -> Result<(), String> {
    registry.set_policies(lifecycle.policies.clone())?;
    registry.set_read_only(lifecycle.read_only);
    if lifecycle.read_only {
        tracing::warn!("read-only maintenance mode: writes are refused (SIGUSR2 turns it off)");
    }
    for (kind, on) in [
        (tokio::signal::unix::SignalKind::user_defined1(), true),
        (tokio::signal::unix::SignalKind::user_defined2(), false),
    ] {
        let mut signal = tokio::signal::unix::signal(kind).map_err(|e| format!("cannot watch signals: {e}"))?;
        let registry = registry.clone();
        tokio::spawn(async move {
            while signal.recv().await.is_some() {
                registry.set_read_only(on);
                tracing::warn!(read_only = on, "read-only maintenance mode switched by signal");
            }
        });
    }
    if let Some(every) = lifecycle.gc_interval {
        spawn_scheduled_gc(registry.clone(), every, lifecycle.gc);
    }
    Ok(())
}

fn spawn_scheduled_gc(registry: Registry, every: Duration, opts: GcOptions) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Every instance schedules a collection; the one holding the lock runs, the others skip.
            match registry.try_collect_garbage(&opts, &entrepot_registry::gc::NoProgress).await {
                Ok(None) => tracing::info!("scheduled garbage collection skipped: another one is running"),
                Ok(Some(r)) => tracing::info!(
                    manifests = r.manifests,
                    links = r.links,
                    blobs = r.blobs,
                    bytes = r.bytes(),
                    uploads = r.uploads,
                    tags = r.tags,
                    elapsed_ms = r.elapsed.as_millis() as u64,
                    "scheduled garbage collection"
                ),
                Err(e) => tracing::warn!(error = %e, "scheduled garbage collection failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_what_and_how_much() {
        let r = GcReport {
            dry_run: true,
            repositories: 3,
            manifests: 2,
            referrers: 1,
            blobs: 4,
            blob_bytes: 2048,
            uploads: 1,
            upload_bytes: 1024,
            ..Default::default()
        };
        let s = summary(&r);
        assert!(s.contains("nothing was changed"), "{s}");
        assert!(s.contains("manifests would be removed  2 (1 referrers)"), "{s}");
        assert!(s.contains("bytes reclaimable  3.0 KiB (3072 bytes)"), "{s}");
        let t = table(&["A", "B"], &[["long cell".into(), "x".into()]]);
        assert_eq!(t, "A          B\nlong cell  x\n");
    }
}
