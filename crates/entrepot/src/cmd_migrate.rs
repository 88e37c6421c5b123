//! `entrepot migrate-meta`: moves an embedded registry's metadata (`DATA_DIR/meta.db`) into an empty
//! PostgreSQL database, so the registry can run as several instances (see the README's "Deployment on
//! PostgreSQL"). The copy itself lives in `entrepot_meta::migrate`; this only parses arguments and
//! prints the counts. Never changes the SQLite database and never touches blob bytes.

use std::path::PathBuf;

use clap::Args;

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

pub fn run(args: MigrateMetaArgs) -> Result<(), String> {
    let db = args.data_dir.join("meta.db");
    if !db.exists() {
        return Err(format!("{} holds no registry (no meta.db)", args.data_dir.display()));
    }
    if !(args.database_url.starts_with("postgres://") || args.database_url.starts_with("postgresql://")) {
        return Err("--database-url: expected a postgres:// or postgresql:// URL".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let target = entrepot_meta::PgMetaStore::connect(&args.database_url)
            .await
            .map_err(|e| format!("cannot open the PostgreSQL database: {e}"))?;
        let report = entrepot_meta::migrate::sqlite_to_postgres(&db, &target)
            .await
            .map_err(|e| format!("migration failed (the target is unchanged): {e}"))?;
        println!("copied {} into PostgreSQL (row counts verified):", db.display());
        for (table, n) in &report.tables {
            println!("  {table:<14} {n}");
        }
        println!(
            "serve with --database-url (or ENTREPOT_DATABASE_URL) from now on; {} is no longer used",
            db.display()
        );
        Ok(())
    })
}
