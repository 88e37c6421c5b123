//! Configuration: defaults, then a TOML file (`--config`), then `ENTREPOT_*` environment variables,
//! then flags — each later source overriding the earlier. Every key has the same name in all three
//! (`max_manifest_bytes` / `ENTREPOT_MAX_MANIFEST_BYTES` / `--max-manifest-bytes`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use entrepot_registry::RegistryConfig;
use serde::Deserialize;

/// Flags of `entrepot serve` (each also readable from its `ENTREPOT_*` variable).
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "ENTREPOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long, env = "ENTREPOT_LISTEN")]
    pub listen: Option<String>,
    /// Directory for blobs and the metadata database [default: ./entrepot-data].
    #[arg(long, env = "ENTREPOT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Largest manifest accepted, in bytes [default: 4194304].
    #[arg(long, env = "ENTREPOT_MAX_MANIFEST_BYTES")]
    pub max_manifest_bytes: Option<u64>,
    /// Largest blob accepted, in bytes; 0 = no limit [default: 0].
    #[arg(long, env = "ENTREPOT_MAX_BLOB_BYTES")]
    pub max_blob_bytes: Option<u64>,
    /// Accept indexes whose child manifests are not in the repository [default: false].
    #[arg(long, env = "ENTREPOT_ALLOW_SPARSE_INDEX", num_args = 0..=1, default_missing_value = "true")]
    pub allow_sparse_index: Option<bool>,
    /// Honour `?mount=` without `from=` for any blob the registry holds [default: true].
    #[arg(long, env = "ENTREPOT_MOUNT_WITHOUT_FROM", num_args = 0..=1, default_missing_value = "true")]
    pub mount_without_from: Option<bool>,
    /// Seconds after which an idle upload session is removed [default: 86400].
    #[arg(long, env = "ENTREPOT_UPLOAD_EXPIRY_SECS")]
    pub upload_expiry_secs: Option<u64>,
    /// Write large uploads straight to the disk, past the page cache (`O_DIRECT`, Linux) [default: true].
    #[arg(long, env = "ENTREPOT_DIRECT_WRITES", num_args = 0..=1, default_missing_value = "true")]
    pub direct_writes: Option<bool>,
    /// Log filter (error, warn, info, debug, or a tracing filter) [default: info].
    #[arg(long, env = "ENTREPOT_LOG")]
    pub log: Option<String>,
    /// Log line format: `text` or `json` [default: text].
    #[arg(long, env = "ENTREPOT_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Turn authentication on with the users of this htpasswd file (bcrypt).
    #[arg(long, env = "ENTREPOT_HTPASSWD")]
    pub htpasswd: Option<PathBuf>,
    /// Directory of the robot accounts and token signing keys; point every instance at one shared
    /// directory [default: DATA_DIR/auth].
    #[arg(long, env = "ENTREPOT_AUTH_DIR")]
    pub auth_dir: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM); reloaded when the file changes.
    #[arg(long, env = "ENTREPOT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "ENTREPOT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Blobs in an S3 bucket instead of the data directory.
    #[command(flatten)]
    pub s3: S3Args,
    /// Keep the metadata in this PostgreSQL database instead of DATA_DIR/meta.db, e.g.
    /// postgres://entrepot:secret@db:5432/registry?sslmode=require; several instances may share it.
    #[arg(long, env = "ENTREPOT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Read-only mode, garbage collection and the retention / immutable-tag / quota rules.
    #[command(flatten)]
    pub lifecycle: crate::lifecycle_config::LifecycleArgs,
    /// Security scanning: scan on push, the advisory database, SBOM referrers, the pull policy.
    #[command(flatten)]
    pub scan: crate::scan_config::ScanArgs,
}

/// The configuration file's keys (all optional).
/// The `--s3-*` flags (with their `ENTREPOT_S3_*` variables), shared by `serve`, `migrate` and the
/// maintenance commands; the file's `s3_*` keys fill what they leave out ([`Config::load`]).
#[derive(Args, Debug, Default, Clone)]
pub struct S3Args {
    /// Keep blobs in this S3 bucket instead of the data directory (credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "ENTREPOT_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// URL of the S3-compatible server, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:8333.
    #[arg(long, env = "ENTREPOT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Region signed into requests [default: us-east-1].
    #[arg(long, env = "ENTREPOT_S3_REGION")]
    pub s3_region: Option<String>,
    /// Key prefix of everything stored in the bucket [default: none].
    #[arg(long, env = "ENTREPOT_S3_PREFIX")]
    pub s3_prefix: Option<String>,
    /// Address the bucket in the path (http://host/bucket/key) rather than the host name [default: false].
    #[arg(long, env = "ENTREPOT_S3_PATH_STYLE", num_args = 0..=1, default_missing_value = "true")]
    pub s3_path_style: Option<bool>,
    /// Answer blob GETs with a 307 redirect to a presigned S3 URL [default: false].
    #[arg(long, env = "ENTREPOT_S3_REDIRECT", num_args = 0..=1, default_missing_value = "true")]
    pub s3_redirect: Option<bool>,
    /// Bytes per multipart part, at least 5 MiB: the memory one upload write holds [default: 8388608].
    #[arg(long, env = "ENTREPOT_S3_PART_SIZE")]
    pub s3_part_size: Option<u64>,
    /// PEM file of extra CA certificates to trust for an https S3 endpoint (the system's are trusted).
    #[arg(long, env = "ENTREPOT_S3_CA_BUNDLE")]
    pub s3_ca_bundle: Option<PathBuf>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    max_manifest_bytes: Option<u64>,
    max_blob_bytes: Option<u64>,
    allow_sparse_index: Option<bool>,
    mount_without_from: Option<bool>,
    upload_expiry_secs: Option<u64>,
    direct_writes: Option<bool>,
    log: Option<String>,
    log_format: Option<String>,
    event_source: Option<String>,
    webhooks: Option<Vec<entrepot_events::WebhookConfig>>,
    htpasswd: Option<PathBuf>,
    auth_dir: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    auth: Option<crate::auth_config::AuthFileConfig>,
    read_only: Option<bool>,
    gc: Option<crate::lifecycle_config::GcFile>,
    retention: Option<Vec<entrepot_registry::policy::RetentionRule>>,
    immutable_tags: Option<Vec<entrepot_registry::policy::ImmutableRule>>,
    quota: Option<Vec<entrepot_registry::policy::QuotaRule>>,
    s3_bucket: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_prefix: Option<String>,
    s3_path_style: Option<bool>,
    s3_redirect: Option<bool>,
    s3_part_size: Option<u64>,
    s3_ca_bundle: Option<PathBuf>,
    database_url: Option<String>,
    /// Credentials in the file (the AWS_* environment variables win over them).
    s3_access_key_id: Option<String>,
    s3_secret_access_key: Option<String>,
    s3_session_token: Option<String>,
    scan_on_push: Option<bool>,
    vulndb: Option<PathBuf>,
    attach_sbom: Option<bool>,
    scan: Option<crate::scan_config::ScanFile>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    /// Filesystem blob store: write large uploads past the page cache.
    pub direct_writes: bool,
    pub registry: RegistryConfig,
    pub log: String,
    pub log_format: crate::observe::LogFormat,
    /// The CloudEvents `source` of webhook events.
    pub event_source: String,
    /// Webhook endpoints (checked).
    pub webhooks: Vec<entrepot_events::WebhookConfig>,
    /// `None`: authentication is off.
    pub auth: Option<crate::auth_config::AuthRuntime>,
    /// Certificate chain and key files (PEM), when serving HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Read-only mode, garbage collection and the retention / immutable-tag / quota rules.
    pub lifecycle: crate::lifecycle_config::Lifecycle,
    /// `Some`: blobs live in this S3 bucket instead of `data_dir/blobs`.
    pub s3: Option<entrepot_storage::S3Config>,
    /// `Some`: the metadata lives in this PostgreSQL database instead of `data_dir/meta.db`.
    pub database_url: Option<DatabaseUrl>,
    /// Security scanning.
    pub scan: crate::scan_config::ScanConfig,
}

impl Config {
    /// Merges defaults, the file named by `--config` (if any) and the flags / environment.
    pub fn load(args: ServeArgs) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => {
                // Every key is checked on its own, so that all the file's mistakes are reported at once.
                crate::cmd_config::read_file(path)?
            }
            None => FileConfig::default(),
        };
        let d = RegistryConfig::default();
        let mut problems = Vec::new();
        let max_manifest_bytes = args.max_manifest_bytes.or(file.max_manifest_bytes).unwrap_or(d.max_manifest_bytes);
        if max_manifest_bytes == 0 {
            problems.push("max_manifest_bytes: expected a number of bytes greater than 0, got 0".to_string());
        }
        let upload_expiry_secs =
            args.upload_expiry_secs.or(file.upload_expiry_secs).unwrap_or(d.upload_expiry.as_secs());
        if upload_expiry_secs == 0 {
            problems.push("upload_expiry_secs: expected a number of seconds greater than 0, got 0".to_string());
        }
        let obs = crate::cmd_config::observability(
            crate::cmd_config::Sources {
                listen: args.listen.as_deref().or(file.listen.as_deref()),
                log: args.log.as_deref().or(file.log.as_deref()),
                log_format: args.log_format.as_deref().or(file.log_format.as_deref()),
                event_source: file.event_source.as_deref(),
                webhooks: file.webhooks.as_deref(),
            },
            &mut problems,
        );
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        let data_dir =
            args.data_dir.clone().or(file.data_dir.clone()).unwrap_or_else(|| PathBuf::from("./entrepot-data"));
        let htpasswd = args.htpasswd.clone().or(file.htpasswd.clone());
        let auth_dir = args
            .auth_dir
            .clone()
            .or(file.auth_dir.clone())
            .unwrap_or_else(|| crate::auth_config::default_auth_dir(&data_dir));
        let auth = crate::auth_config::build(file.auth.as_ref(), htpasswd.as_deref(), &auth_dir)?;
        let tls = match (args.tls_cert.clone().or(file.tls_cert.clone()), args.tls_key.clone().or(file.tls_key.clone()))
        {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("tls_cert and tls_key: give both or neither".into()),
        };
        let s3 = s3_config(&args, &file)?;
        let database_url = match args.database_url.clone().or(file.database_url.clone()) {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Some(DatabaseUrl(url)),
            Some(_) => return Err("database_url: expected a postgres:// or postgresql:// URL".into()),
            None => None,
        };
        let scan = crate::scan_config::resolve(
            &args.scan,
            crate::scan_config::ScanFileKeys {
                scan_on_push: file.scan_on_push,
                vulndb: file.vulndb.clone(),
                attach_sbom: file.attach_sbom,
                scan: file.scan.clone(),
            },
            &data_dir,
        )?;
        let lifecycle = crate::lifecycle_config::resolve(
            &args.lifecycle,
            crate::lifecycle_config::LifecycleFile {
                read_only: file.read_only,
                gc: file.gc.clone(),
                retention: file.retention.clone(),
                immutable_tags: file.immutable_tags.clone(),
                quota: file.quota.clone(),
            },
        )?;
        Ok(Config {
            scan,
            s3,
            database_url,
            lifecycle,
            auth,
            tls,
            log_format: obs.log_format,
            event_source: obs.event_source,
            webhooks: obs.webhooks,
            listen: args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:5000".into()),
            data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./entrepot-data")),
            direct_writes: args.direct_writes.or(file.direct_writes).unwrap_or(true),
            registry: RegistryConfig {
                max_manifest_bytes,
                max_blob_bytes: args.max_blob_bytes.or(file.max_blob_bytes).unwrap_or(d.max_blob_bytes),
                allow_sparse_index: args.allow_sparse_index.or(file.allow_sparse_index).unwrap_or(d.allow_sparse_index),
                mount_without_from: args.mount_without_from.or(file.mount_without_from).unwrap_or(d.mount_without_from),
                upload_expiry: Duration::from_secs(upload_expiry_secs),
            },
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
        })
    }
}

/// The S3 settings, when a bucket is configured: flags / `ENTREPOT_S3_*` over the file's `s3_*` keys;
/// credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (`AWS_SESSION_TOKEN`), else the file.
fn s3_config(args: &ServeArgs, file: &FileConfig) -> Result<Option<entrepot_storage::S3Config>, String> {
    use entrepot_storage::s3::{Credentials, DEFAULT_PART_SIZE, MIN_PART_SIZE, S3Config};
    let Some(bucket) = args.s3.s3_bucket.clone().or(file.s3_bucket.clone()) else {
        return match args.s3.s3_endpoint.as_ref().or(file.s3_endpoint.as_ref()) {
            Some(_) => Err("s3_endpoint is set but s3_bucket is not: give both to keep blobs in S3".into()),
            None => Ok(None),
        };
    };
    let endpoint = args
        .s3
        .s3_endpoint
        .clone()
        .or(file.s3_endpoint.clone())
        .ok_or("s3_bucket is set but s3_endpoint is not: give the S3 server's URL (--s3-endpoint)")?;
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(format!("s3_endpoint: expected an http:// or https:// URL, got '{endpoint}'"));
    }
    let credentials = match Credentials::from_env() {
        Some(c) => c,
        None => match (&file.s3_access_key_id, &file.s3_secret_access_key) {
            (Some(id), Some(secret)) => Credentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: file.s3_session_token.clone(),
            },
            _ => {
                return Err("S3 needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or \
                            s3_access_key_id and s3_secret_access_key in the configuration file)"
                    .into());
            }
        },
    };
    let part_size = args.s3.s3_part_size.or(file.s3_part_size).unwrap_or(DEFAULT_PART_SIZE as u64);
    if part_size < MIN_PART_SIZE as u64 || part_size > 1024 * 1024 * 1024 {
        return Err(format!("s3_part_size: expected {MIN_PART_SIZE} to 1073741824 bytes, got {part_size}"));
    }
    let mut c = S3Config::new(endpoint, bucket, credentials);
    c.region = args.s3.s3_region.clone().or(file.s3_region.clone()).unwrap_or(c.region);
    c.prefix = args.s3.s3_prefix.clone().or(file.s3_prefix.clone()).unwrap_or_default();
    c.path_style = args.s3.s3_path_style.or(file.s3_path_style).unwrap_or(false);
    c.redirect = args.s3.s3_redirect.or(file.s3_redirect).unwrap_or(false);
    c.part_size = part_size as usize;
    c.ca_bundle = args.s3.s3_ca_bundle.clone().or(file.s3_ca_bundle.clone());
    Ok(Some(c))
}

/// A PostgreSQL URL; its `Debug` form hides it (it may hold a password).
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

/// The metadata store the configuration names: the PostgreSQL database, else `data_dir/meta.db`. Every
/// command that opens the metadata goes through here.
pub(crate) async fn open_meta(config: &Config) -> Result<std::sync::Arc<dyn entrepot_meta::MetaBackend>, String> {
    match &config.database_url {
        Some(url) => {
            let store = entrepot_meta::PgMetaStore::connect(&url.0)
                .await
                .map_err(|e| format!("cannot open the metadata database (PostgreSQL): {e}"))?;
            Ok(std::sync::Arc::new(store))
        }
        None => {
            let store = entrepot_meta::SqliteMetaStore::open(&config.data_dir.join("meta.db"))
                .await
                .map_err(|e| format!("cannot open the metadata database: {e}"))?;
            Ok(std::sync::Arc::new(store))
        }
    }
}

/// Whether the configured metadata store holds a registry already (maintenance commands refuse to
/// create an empty one by mistake): always for PostgreSQL, else when `data_dir/meta.db` exists.
pub(crate) fn meta_exists(config: &Config) -> Result<(), String> {
    if config.database_url.is_none() && !config.data_dir.join("meta.db").exists() {
        return Err(format!("{} holds no registry (no meta.db)", config.data_dir.display()));
    }
    Ok(())
}

/// The blob store the configuration names: the S3 bucket, else `data_dir` on the local filesystem.
pub(crate) fn open_blobs(config: &Config) -> Result<std::sync::Arc<dyn entrepot_storage::BlobStore>, String> {
    match &config.s3 {
        Some(c) => {
            let store = entrepot_storage::S3BlobStore::new(c.clone()).map_err(|e| format!("cannot use S3: {e}"))?;
            Ok(std::sync::Arc::new(store))
        }
        None => {
            let store = entrepot_storage::FsBlobStore::open(&config.data_dir)
                .map_err(|e| format!("cannot open blob storage in {}: {e}", config.data_dir.display()))?
                .direct_writes(config.direct_writes);
            Ok(std::sync::Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_dir_file_then_flag_default_under_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, "").expect("write");
        let path = dir.path().join("entrepot.toml");
        let auth = |args: ServeArgs| Config::load(args).expect("load").auth.expect("auth on").settings;

        std::fs::write(&path, format!("data_dir = \"/d\"\nhtpasswd = {:?}\n", htpasswd)).expect("write");
        let s = auth(ServeArgs { config: Some(path.clone()), ..Default::default() });
        assert_eq!((s.robots_file, s.keys_dir), (PathBuf::from("/d/auth/robots.json"), PathBuf::from("/d/auth/keys")));

        std::fs::write(&path, format!("auth_dir = \"/shared/auth\"\nhtpasswd = {:?}\n", htpasswd)).expect("write");
        let s = auth(ServeArgs { config: Some(path.clone()), ..Default::default() });
        assert_eq!(s.robots_file, PathBuf::from("/shared/auth/robots.json"));
        let s = auth(ServeArgs { config: Some(path), auth_dir: Some("/flag".into()), ..Default::default() });
        assert_eq!(s.keys_dir, PathBuf::from("/flag/keys"));
    }

    #[test]
    fn precedence_file_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("entrepot.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:6000\"\nmax_manifest_bytes = 100\nallow_sparse_index = true\n")
            .expect("write");
        let args = ServeArgs { config: Some(path.clone()), max_manifest_bytes: Some(200), ..Default::default() };
        let c = Config::load(args).expect("load");
        assert_eq!(c.listen, "127.0.0.1:6000");
        assert_eq!(c.registry.max_manifest_bytes, 200);
        assert!(c.registry.allow_sparse_index);
        assert_eq!(c.data_dir, PathBuf::from("./entrepot-data"));

        std::fs::write(
            &path,
            "s3_bucket = \"b\"\ns3_endpoint = \"http://127.0.0.1:1\"\ns3_access_key_id = \"AK\"\n\
             s3_secret_access_key = \"SK\"\ns3_prefix = \"reg\"\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(path.clone()),
            s3: S3Args { s3_path_style: Some(true), ..Default::default() },
            ..Default::default()
        };
        let c = Config::load(args).expect("load").s3.expect("s3 configured");
        assert_eq!((c.bucket.as_str(), c.endpoint.as_str(), c.prefix.as_str()), ("b", "http://127.0.0.1:1", "reg"));
        assert!(c.path_style && !c.redirect);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            assert_eq!(c.credentials.access_key_id, "AK");
        }
        let args = ServeArgs {
            config: Some(path.clone()),
            s3: S3Args { s3_part_size: Some(1024), ..Default::default() },
            ..Default::default()
        };
        assert!(Config::load(args).expect_err("tiny parts").contains("s3_part_size"));
        std::fs::write(&path, "s3_endpoint = \"http://127.0.0.1:1\"\n").expect("write");
        let err = Config::load(ServeArgs { config: Some(path.clone()), ..Default::default() }).expect_err("no bucket");
        assert!(err.contains("s3_bucket"), "{err}");

        std::fs::write(&path, "lisen = \"x\"\n").expect("write");
        let err = Config::load(ServeArgs { config: Some(path), ..Default::default() }).expect_err("unknown key");
        assert!(err.contains("lisen"), "{err}");
    }
}
