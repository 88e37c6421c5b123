//! `entrepot`: the command line. Parses arguments, loads the configuration, builds the stores, the
//! registry service and the HTTP server, and runs them. No registry logic lives here.

mod auth_config;
mod cmd_auth;
mod cmd_config;
mod cmd_lifecycle;
mod cmd_migrate;
mod cmd_scan;
mod cmd_tls;
mod config;
mod lifecycle_config;
mod observe;
mod scan_config;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use entrepot_registry::Registry;

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
    /// Check or print the configuration.
    #[command(subcommand)]
    Config(cmd_config::ConfigCommand),
    /// Collect garbage: manifests no tag reaches, unreferenced blobs, expired uploads (safe beside a running server).
    Gc(cmd_lifecycle::GcArgs),
    /// Show (and apply) what the retention rules delete.
    Retention(cmd_lifecycle::RetentionArgs),
    /// Report storage used per repository against the quotas.
    Usage(cmd_lifecycle::MaintArgs),
    /// Re-hash every blob and check metadata against storage; `--repair` quarantines what is corrupt.
    Scrub(cmd_lifecycle::ScrubArgs),
    /// Move an embedded registry to S3 and/or PostgreSQL: copy its blobs to the bucket, then its metadata.
    Migrate(cmd_migrate::MigrateArgs),
    /// Copy an embedded registry's metadata (DATA_DIR/meta.db) into an empty PostgreSQL database.
    MigrateMeta(cmd_migrate::MigrateMetaArgs),
    /// Manage the users of an htpasswd file.
    #[command(subcommand)]
    User(cmd_auth::UserCommand),
    /// Manage robot accounts (API tokens).
    #[command(subcommand)]
    Robot(cmd_auth::RobotCommand),
    /// Explain whether the access policy allows a user an action on a repository, and by which rule.
    Explain(cmd_auth::ExplainArgs),
    /// Manage the keys that sign tokens.
    #[command(subcommand)]
    Token(cmd_auth::TokenCommand),
    /// TLS helpers.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Scan an image for known vulnerabilities (works with or without a running server).
    Scan(cmd_scan::ScanArgs),
    /// Manage the advisory database: import OSV files, show its status, fetch updates.
    #[command(subcommand)]
    Vulndb(cmd_scan::VulndbCommand),
}

fn main() -> ExitCode {
    // reqwest is built with rustls but no bundled provider (S3, webhooks, vulndb downloads over https):
    // ring, as the server's TLS uses, for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Config(cmd) => cmd_config::run(cmd),
        Command::User(cmd) => exit_with(cmd_auth::user(cmd)),
        Command::Robot(cmd) => exit_with(cmd_auth::robot(cmd)),
        Command::Token(cmd) => exit_with(cmd_auth::token(cmd)),
        Command::Tls(TlsCommand::DevCa(args)) => exit_with(cmd_tls::dev_ca(args)),
        Command::Explain(args) => match cmd_auth::explain(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("entrepot: {e}");
                ExitCode::from(2)
            }
        },
        Command::Scan(args) => match cmd_scan::scan(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("entrepot: {e}");
                ExitCode::from(2)
            }
        },
        Command::Vulndb(cmd) => exit_with(cmd_scan::vulndb(cmd)),
        Command::Gc(args) => exit_with(cmd_lifecycle::gc(args)),
        Command::Retention(args) => exit_with(cmd_lifecycle::retention(args)),
        Command::Usage(args) => exit_with(cmd_lifecycle::usage(args)),
        Command::Migrate(args) => exit_with(cmd_migrate::migrate(args)),
        Command::MigrateMeta(args) => exit_with(cmd_migrate::run(args)),
        Command::Scrub(args) => match cmd_lifecycle::scrub(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("entrepot: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => {
            let config = match Config::load(args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("entrepot: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            observe::init_logging(&config.log, config.log_format);
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

#[derive(Subcommand)]
enum TlsCommand {
    /// Write a development CA and a server certificate for the given hosts, and print how to trust it.
    DevCa(cmd_tls::DevCaArgs),
}

fn exit_with(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("entrepot: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", config.data_dir.display()))?;
    let blobs = config::open_blobs(&config)?;
    if let Some(s3) = &config.s3 {
        // Fail at start, not on the first push, when the bucket cannot be reached.
        blobs
            .stat(&entrepot_oci::Digest::sha256(b""))
            .await
            .map_err(|e| format!("cannot reach S3 bucket {} at {}: {e}", s3.bucket, s3.endpoint))?;
        tracing::info!(bucket = %s3.bucket, endpoint = %s3.endpoint, prefix = %s3.prefix, "blobs are in S3");
    }
    let meta = config::open_meta(&config).await?;
    if config.database_url.is_some() {
        tracing::info!("metadata is in PostgreSQL");
    }
    let registry = Registry::new(blobs, meta.clone(), config.registry.clone());
    let registry = observe::start_webhooks(registry, meta.clone(), &config)?;
    observe::spawn_storage_gauge(meta, registry.metrics().clone());
    match registry.remove_orphan_uploads().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed staged uploads without a session"),
        Err(e) => tracing::warn!(error = %e, "could not sweep orphan uploads"),
    }
    spawn_upload_expiry(registry.clone());
    cmd_lifecycle::start_in_server(&registry, &config.lifecycle)?;
    // The fleet-wide read-only switch (admin endpoint), shared through the metadata: read now, then
    // every second. The local `read_only` setting above never writes it.
    registry.start_read_only_refresh(entrepot_registry::policy::READ_ONLY_REFRESH).await;
    // Security scanning: scans after each push (an event sink around the installed one), the report endpoint
    // and the pull policy gate (an extension the HTTP edge finds on each request).
    let (registry, scanner) = cmd_scan::start_in_server(registry, &config)?;

    let auth = match &config.auth {
        None => None,
        Some(rt) => {
            let authenticator = entrepot_auth::Authenticator::new(rt.settings.clone())
                .map_err(|e| format!("cannot start authentication: {e}"))?;
            tracing::info!(service = %rt.settings.service, "authentication is on");
            Some(entrepot_server::EdgeAuth { auth: Arc::new(authenticator), realm: rt.realm.clone() })
        }
    };
    let tls = match &config.tls {
        None => None,
        Some((cert, key)) => Some(entrepot_server::tls::acceptor(cert, key).map_err(|e| e.to_string())?),
    };
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), https = tls.is_some(), "entrepot is serving");
    // Scripts and tests wait for this one line on stdout.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();

    let app = entrepot_server::scan_api::install(entrepot_server::router_with_auth(registry, auth), scanner);
    entrepot_server::serve_with(listener, app, tls, shutdown_signal()).await;
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
