//! `entrepot migrate` and `entrepot migrate-meta`: move an embedded registry (everything under one data
//! directory) to the shared backends, so that it can run as several instances (see docs/deployment.md).
//!
//! `migrate` does it in one command: first every committed blob of `DATA_DIR/blobs` into the S3 bucket
//! (when one is configured), then the metadata (`DATA_DIR/meta.db`) into PostgreSQL (when a database is
//! configured) — blobs first, so a server on the new backends never sees metadata whose bytes are not
//! there yet. The targets come from the same keys as `entrepot serve` (flags, `ENTREPOT_*`, the
//! configuration file, the AWS credential variables), read by [`crate::config::Config::load`].
//!
//! The blob copy streams each blob from the filesystem store into the S3 store through the store's own
//! upload path (memory bounded by the S3 part size per blob in flight), hashes it on the way and
//! commits it only if it hashes to its digest. It is idempotent: a blob already in the bucket with the
//! right size is skipped, so a run interrupted anywhere is finished by running it again (staging
//! objects an interrupted run left are swept by `entrepot serve` at start). The metadata copy is one
//! transaction (`entrepot_meta::migrate`): a rerun after it committed finds the same row counts and
//! does nothing; a database holding anything else is refused.
//!
//! Refuses to start while another process has `meta.db` open (a running server). Never changes nor
//! deletes the registry's data in the data directory (opening `meta.db` only brings an older schema up
//! to date, as `serve` would); never prints credentials.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use entrepot_oci::{Digest, Digester, UploadId};
use entrepot_storage::{BlobStore, FsBlobStore, S3BlobStore, S3Config, StorageError};

use crate::config::{Config, S3Args, ServeArgs};

/// `entrepot migrate-meta`
#[derive(Args, Debug)]
pub struct MigrateMetaArgs {
    /// The embedded registry's data directory (its meta.db is copied).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The target PostgreSQL database (postgres://…); it must hold no registry data yet.
    #[arg(long, env = "ENTREPOT_DATABASE_URL")]
    pub database_url: String,
}

/// `entrepot migrate`: the targets are given with the same keys as `entrepot serve`.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// TOML configuration file: its `data_dir`, `s3_*` and `database_url` keys are used (flags win).
    #[arg(long, env = "ENTREPOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The embedded registry's data directory (its blobs/ and meta.db are read, never changed).
    #[arg(long, env = "ENTREPOT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Copy the metadata into this PostgreSQL database (postgres://…), which must be empty.
    #[arg(long, env = "ENTREPOT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Copy the blobs into this S3 bucket (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), with
    /// the same prefix as the servers will use.
    #[command(flatten)]
    pub s3: S3Args,
    /// Blobs copied at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
}

/// `entrepot migrate-meta`: the metadata step alone.
pub fn run(args: MigrateMetaArgs) -> Result<(), String> {
    let db = args.data_dir.join("meta.db");
    if !db.exists() {
        return Err(format!("{} holds no registry (no meta.db)", args.data_dir.display()));
    }
    if !(args.database_url.starts_with("postgres://") || args.database_url.starts_with("postgresql://")) {
        return Err("--database-url: expected a postgres:// or postgresql:// URL".into());
    }
    runtime()?.block_on(async {
        let target = entrepot_meta::PgMetaStore::connect(&args.database_url)
            .await
            .map_err(|e| format!("cannot open the PostgreSQL database: {e}"))?;
        let report = entrepot_meta::migrate::sqlite_to_postgres(&db, &target)
            .await
            .map_err(|e| format!("migration failed (the target is unchanged): {e}"))?;
        print_tables(&format!("copied {} into PostgreSQL (row counts verified):", db.display()), &report);
        println!(
            "serve with --database-url (or ENTREPOT_DATABASE_URL) from now on; {} is no longer used",
            db.display()
        );
        Ok(())
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn print_tables(title: &str, report: &entrepot_meta::migrate::MigrationReport) {
    println!("{title}");
    for (table, n) in &report.tables {
        println!("  {table:<14} {n}");
    }
}

/// `entrepot migrate`
pub fn migrate(args: MigrateArgs) -> Result<(), String> {
    let parallel = usize::from(args.parallel);
    let config = Config::load(ServeArgs {
        config: args.config,
        data_dir: args.data_dir,
        database_url: args.database_url,
        s3: args.s3,
        ..Default::default()
    })
    .map_err(|e| format!("configuration error: {e}"))?;
    if config.s3.is_none() && config.database_url.is_none() {
        return Err("nothing to migrate to: give an S3 bucket (--s3-endpoint, --s3-bucket) and/or a PostgreSQL \
                    database (--database-url)"
            .into());
    }
    let db = config.data_dir.join("meta.db");
    if !db.exists() {
        return Err(format!("{} holds no registry (no meta.db)", config.data_dir.display()));
    }
    entrepot_meta::migrate::ensure_not_in_use(&db).map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        if let Some(s3) = &config.s3 {
            let s = copy_blobs(&config.data_dir, s3, parallel).await?;
            println!(
                "blobs: {} in {}: {} copied ({}), {} already in bucket {} ({}), digests verified",
                s.copied + s.skipped,
                config.data_dir.join("blobs").display(),
                s.copied,
                human(s.copied_bytes),
                s.skipped,
                s3.bucket,
                human(s.skipped_bytes)
            );
        }
        match &config.database_url {
            Some(url) => {
                let target = entrepot_meta::PgMetaStore::connect(&url.0)
                    .await
                    .map_err(|e| format!("cannot open the PostgreSQL database: {e}"))?;
                match entrepot_meta::migrate::already_migrated(&db, &target).await.map_err(|e| e.to_string())? {
                    Some(report) => print_tables(
                        &format!(
                            "metadata: already in PostgreSQL (row counts of {} match), nothing to do:",
                            db.display()
                        ),
                        &report,
                    ),
                    None => {
                        let report = entrepot_meta::migrate::sqlite_to_postgres(&db, &target)
                            .await
                            .map_err(|e| format!("metadata migration failed (the database is unchanged): {e}"))?;
                        print_tables(
                            &format!("metadata: copied {} into PostgreSQL (row counts verified):", db.display()),
                            &report,
                        );
                    }
                }
            }
            None => println!("metadata: stays in {} (no database_url given)", db.display()),
        }
        println!(
            "done: serve with the same {}{}{} from now on",
            if config.s3.is_some() { "s3_* keys" } else { "" },
            if config.s3.is_some() && config.database_url.is_some() { " and " } else { "" },
            if config.database_url.is_some() { "database_url" } else { "" },
        );
        Ok(())
    })
}

/// What the blob copy did.
#[derive(Debug, Default)]
struct CopySummary {
    copied: u64,
    copied_bytes: u64,
    skipped: u64,
    skipped_bytes: u64,
}

enum Outcome {
    Copied(u64),
    Skipped(u64),
}

/// Copies every blob of the filesystem store under `data_dir` into the S3 store `s3`, `parallel` at a
/// time; progress on stderr. Every blob is tried; the error names those that failed.
async fn copy_blobs(data_dir: &Path, s3: &S3Config, parallel: usize) -> Result<CopySummary, String> {
    let src =
        FsBlobStore::open(data_dir).map_err(|e| format!("cannot open blob storage in {}: {e}", data_dir.display()))?;
    let dst = S3BlobStore::new(s3.clone()).map_err(|e| format!("cannot use S3: {e}"))?;
    dst.stat(&Digest::sha256(b""))
        .await
        .map_err(|e| format!("cannot reach S3 bucket {} at {}: {e}", s3.bucket, s3.endpoint))?;
    let digests = src.list().await.map_err(|e| format!("cannot list {}: {e}", data_dir.join("blobs").display()))?;
    let total = digests.len();
    eprintln!("copying {total} blobs to bucket {} at {}", s3.bucket, s3.endpoint);
    let stores = Arc::new((src, dst));
    let queue = Arc::new(std::sync::Mutex::new(digests.into_iter()));
    let serial = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Digest, Result<Outcome, String>)>();
    for _ in 0..parallel.min(total.max(1)) {
        let (stores, queue, serial, tx) = (stores.clone(), queue.clone(), serial.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some(d) = next else { return };
                let id = upload_id(serial.fetch_add(1, Ordering::Relaxed));
                let r = copy_one(&stores.0, &stores.1, &d, &id).await;
                if tx.send((d, r)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut s = CopySummary::default();
    let mut failed = Vec::new();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut done = 0usize;
    while let Some((d, r)) = rx.recv().await {
        done += 1;
        match r {
            Ok(Outcome::Copied(n)) => {
                s.copied += 1;
                s.copied_bytes += n;
            }
            Ok(Outcome::Skipped(n)) => {
                s.skipped += 1;
                s.skipped_bytes += n;
            }
            Err(e) => {
                eprintln!("  {d}: {e}");
                failed.push(d);
            }
        }
        if last.elapsed() >= Duration::from_secs(1) || done == total {
            last = Instant::now();
            let secs = started.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "  {done}/{total} blobs: {} copied ({}, {}/s), {} already there, {} failed",
                s.copied,
                human(s.copied_bytes),
                human((s.copied_bytes as f64 / secs) as u64),
                s.skipped,
                failed.len()
            );
        }
    }
    if !failed.is_empty() {
        return Err(format!(
            "{} of {total} blobs could not be copied (see above); nothing else was changed — run the same command \
             again to finish (blobs already copied are skipped)",
            failed.len()
        ));
    }
    Ok(s)
}

/// A staging id no server would make (theirs are UUIDs): `migrate-<pid>-<time>-<n>`.
fn upload_id(n: u64) -> UploadId {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    let id = format!("migrate-{}-{t}-{n}", std::process::id());
    UploadId::parse(&id).unwrap_or_else(|| unreachable!("{id} is made of ASCII letters, digits and dashes"))
}

/// Copies one blob unless the bucket holds it already with the right size.
async fn copy_one(src: &FsBlobStore, dst: &S3BlobStore, d: &Digest, id: &UploadId) -> Result<Outcome, String> {
    let size = match src.stat(d).await {
        Ok(Some(n)) => n,
        Ok(None) => return Err("disappeared from the data directory".into()),
        Err(e) => return Err(format!("cannot stat: {e}")),
    };
    match dst.stat(d).await {
        Ok(Some(n)) if n == size => return Ok(Outcome::Skipped(size)),
        Ok(_) => {}
        Err(e) => return Err(format!("cannot check the bucket: {e}")),
    }
    let stream = src.read(d, None).await.map_err(|e| format!("cannot read: {e}"))?;
    dst.upload_create(id).await.map_err(|e| format!("cannot start the upload: {e}"))?;
    let written = dst.upload_write(id, 0, stream, Digester::new(d.algorithm())).await;
    let result = match written {
        Ok((n, hasher)) => {
            let got = hasher.finish();
            if n != size || &got != d {
                Err(StorageError::Mismatch(format!(
                    "the bytes in the data directory hash to {got} ({n} bytes): the blob is corrupt there \
                     (see `entrepot scrub`); not copied"
                )))
            } else {
                dst.upload_commit(id, n, d).await
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(Outcome::Copied(size)),
        Err(e) => {
            let _ = dst.upload_abort(id).await;
            Err(e.to_string())
        }
    }
}

/// `1.5 GiB`
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}
