//! `entrepot`: the command line. Parses arguments, loads the configuration, builds the stores, the
//! registry service and the HTTP server, and runs them. No registry logic lives here.

mod config;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use entrepot_meta::SqliteMetaStore;
use entrepot_registry::Registry;
use entrepot_storage::FsBlobStore;

use crate::config::{Config, ServeArgs};

#[derive(Parser)]
#[command(name = "entrepot", version, about = "Entrepôt: a private container registry (OCI Distribution v1.1)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match Config::load(args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("entrepot: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config.log);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("entrepot: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("entrepot: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn serve(config: Config) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", config.data_dir.display()))?;
    let blobs = FsBlobStore::open(&config.data_dir)
        .map_err(|e| format!("cannot open blob storage in {}: {e}", config.data_dir.display()))?;
    let meta = SqliteMetaStore::open(&config.data_dir.join("meta.db"))
        .await
        .map_err(|e| format!("cannot open the metadata database: {e}"))?;
    let registry = Registry::new(Arc::new(blobs), Arc::new(meta), config.registry.clone());
    match registry.remove_orphan_uploads().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed staged uploads without a session"),
        Err(e) => tracing::warn!(error = %e, "could not sweep orphan uploads"),
    }
    spawn_upload_expiry(registry.clone());

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "entrepot is serving");
    // Scripts and tests wait for this one line on stdout.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();

    entrepot_server::serve(listener, entrepot_server::router(registry), shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Removes abandoned upload sessions periodically.
fn spawn_upload_expiry(registry: Registry) {
    let every = (registry.config().upload_expiry / 4)
        .clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(600));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match registry.expire_uploads().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "removed abandoned upload sessions"),
                Err(e) => tracing::warn!(error = %e, "upload expiry failed"),
            }
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
