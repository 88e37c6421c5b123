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
    /// Log filter (error, warn, info, debug, or a tracing filter) [default: info].
    #[arg(long, env = "ENTREPOT_LOG")]
    pub log: Option<String>,
}

/// The configuration file's keys (all optional).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    max_manifest_bytes: Option<u64>,
    max_blob_bytes: Option<u64>,
    allow_sparse_index: Option<bool>,
    mount_without_from: Option<bool>,
    upload_expiry_secs: Option<u64>,
    log: Option<String>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub registry: RegistryConfig,
    pub log: String,
}

impl Config {
    /// Merges defaults, the file named by `--config` (if any) and the flags / environment.
    pub fn load(args: ServeArgs) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let d = RegistryConfig::default();
        let max_manifest_bytes = args.max_manifest_bytes.or(file.max_manifest_bytes).unwrap_or(d.max_manifest_bytes);
        if max_manifest_bytes == 0 {
            return Err("max_manifest_bytes must be greater than 0".into());
        }
        let upload_expiry_secs =
            args.upload_expiry_secs.or(file.upload_expiry_secs).unwrap_or(d.upload_expiry.as_secs());
        if upload_expiry_secs == 0 {
            return Err("upload_expiry_secs must be greater than 0".into());
        }
        Ok(Config {
            listen: args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:5000".into()),
            data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./entrepot-data")),
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

#[cfg(test)]
mod tests {
    use super::*;

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

        std::fs::write(&path, "lisen = \"x\"\n").expect("write");
        let err = Config::load(ServeArgs { config: Some(path), ..Default::default() }).expect_err("unknown key");
        assert!(err.contains("lisen"), "{err}");
    }
}
