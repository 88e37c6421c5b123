//! The storage-lifecycle part of the configuration: read-only mode, garbage collection (schedule,
//! grace period, untagged policy, whether retention is applied) and the retention, immutable-tag and
//! quota rules.
//!
//! File keys: `read_only`, a `[gc]` table (`interval`, `grace`, `delete_untagged`, `apply_retention`),
//! and the rule lists `[[retention]]`, `[[immutable_tags]]`, `[[quota]]`. Environment / flags:
//! `ENTREPOT_READ_ONLY`, `ENTREPOT_GC_INTERVAL`, `ENTREPOT_GC_GRACE`, `ENTREPOT_GC_DELETE_UNTAGGED`,
//! `ENTREPOT_GC_APPLY_RETENTION`, and `ENTREPOT_RETENTION` / `ENTREPOT_IMMUTABLE_TAGS` /
//! `ENTREPOT_QUOTAS` holding the same list as a TOML inline array (which replaces the file's list).
//! Only parsing and validation live here; never any registry logic.

use std::time::Duration;

use clap::Args;
use entrepot_registry::gc::GcOptions;
use entrepot_registry::policy::{HumanDuration, ImmutableRule, Policies, QuotaRule, RetentionRule};
use serde::Deserialize;

/// Lifecycle flags of `entrepot serve` (each also readable from its `ENTREPOT_*` variable).
#[derive(Args, Debug, Default, Clone)]
pub struct LifecycleArgs {
    /// Start in read-only maintenance mode: pulls work, writes are refused [default: false].
    #[arg(long, env = "ENTREPOT_READ_ONLY", num_args = 0..=1, default_missing_value = "true")]
    pub read_only: Option<bool>,
    /// How often the server collects garbage (`24h`, `30m`, …; `off` disables) [default: 24h].
    #[arg(long, env = "ENTREPOT_GC_INTERVAL")]
    pub gc_interval: Option<String>,
    /// Data younger than this is never collected [default: 24h].
    #[arg(long, env = "ENTREPOT_GC_GRACE")]
    pub gc_grace: Option<String>,
    /// Collect manifests that no tag reaches [default: false].
    #[arg(long, env = "ENTREPOT_GC_DELETE_UNTAGGED", num_args = 0..=1, default_missing_value = "true")]
    pub gc_delete_untagged: Option<bool>,
    /// Let garbage collection delete the tags the retention rules select [default: false].
    #[arg(long, env = "ENTREPOT_GC_APPLY_RETENTION", num_args = 0..=1, default_missing_value = "true")]
    pub gc_apply_retention: Option<bool>,
    /// Retention rules as a TOML inline array, e.g. `[{repository = "team/*", keep_last = 10}]`.
    #[arg(long, env = "ENTREPOT_RETENTION")]
    pub retention: Option<String>,
    /// Immutable-tag rules as a TOML inline array, e.g. `[{repository = "**", tags = ["v*"]}]`.
    #[arg(long, env = "ENTREPOT_IMMUTABLE_TAGS")]
    pub immutable_tags: Option<String>,
    /// Quotas as a TOML inline array, e.g. `[{repository = "team/*", max_bytes = "10GiB"}]`.
    #[arg(long, env = "ENTREPOT_QUOTAS")]
    pub quotas: Option<String>,
}

/// The `[gc]` table of the configuration file.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct GcFile {
    pub interval: Option<String>,
    pub grace: Option<HumanDuration>,
    pub delete_untagged: Option<bool>,
    pub apply_retention: Option<bool>,
}

/// The lifecycle keys of the configuration file.
#[derive(Debug, Default)]
pub struct LifecycleFile {
    pub read_only: Option<bool>,
    pub gc: Option<GcFile>,
    pub retention: Option<Vec<RetentionRule>>,
    pub immutable_tags: Option<Vec<ImmutableRule>>,
    pub quota: Option<Vec<QuotaRule>>,
}

/// The effective lifecycle settings.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub read_only: bool,
    /// `None`: no scheduled collection.
    pub gc_interval: Option<Duration>,
    /// Grace, untagged policy and retention switch of every collection (scheduled or `entrepot gc`).
    pub gc: GcOptions,
    pub policies: Policies,
}

/// Default period of the scheduled collection.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(24 * 3600);

fn parse_interval(s: &str, key: &str) -> Result<Option<Duration>, String> {
    match s.trim() {
        "off" | "none" | "0" | "never" => Ok(None),
        other => {
            let d = HumanDuration::parse(other).map_err(|e| format!("{key}: {e}, or `off`"))?;
            Ok(Some(d.0))
        }
    }
}

/// Parses a rule list given as a TOML inline array in an environment variable or flag.
fn inline_list<T: for<'de> Deserialize<'de>>(text: &str, key: &str) -> Result<Vec<T>, String> {
    #[derive(Deserialize)]
    struct Wrap<T> {
        v: Vec<T>,
    }
    toml::from_str::<Wrap<T>>(&format!("v = {text}"))
        .map(|w| w.v)
        .map_err(|e| format!("{key}: expected a TOML inline array of tables: {}", e.message()))
}

/// Merges the file's lifecycle keys with the flags / environment (which win).
pub fn resolve(args: &LifecycleArgs, file: LifecycleFile) -> Result<Lifecycle, String> {
    let gc_file = file.gc.unwrap_or_default();
    let gc_interval = match (&args.gc_interval, &gc_file.interval) {
        (Some(s), _) => parse_interval(s, "ENTREPOT_GC_INTERVAL")?,
        (None, Some(s)) => parse_interval(s, "gc.interval")?,
        (None, None) => Some(DEFAULT_GC_INTERVAL),
    };
    let grace = match &args.gc_grace {
        Some(s) => HumanDuration::parse(s).map_err(|e| format!("ENTREPOT_GC_GRACE: {e}"))?.0,
        None => gc_file.grace.map(|g| g.0).unwrap_or(GcOptions::default().grace),
    };
    let gc = GcOptions {
        grace,
        delete_untagged: args.gc_delete_untagged.or(gc_file.delete_untagged).unwrap_or(false),
        apply_retention: args.gc_apply_retention.or(gc_file.apply_retention).unwrap_or(false),
        dry_run: false,
    };
    let retention = match &args.retention {
        Some(t) => inline_list(t, "ENTREPOT_RETENTION")?,
        None => file.retention.unwrap_or_default(),
    };
    let immutable = match &args.immutable_tags {
        Some(t) => inline_list(t, "ENTREPOT_IMMUTABLE_TAGS")?,
        None => file.immutable_tags.unwrap_or_default(),
    };
    let quotas = match &args.quotas {
        Some(t) => inline_list(t, "ENTREPOT_QUOTAS")?,
        None => file.quota.unwrap_or_default(),
    };
    let policies = Policies { retention, immutable, quotas };
    policies.validate()?;
    Ok(Lifecycle { read_only: args.read_only.or(file.read_only).unwrap_or(false), gc_interval, gc, policies })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct F {
            read_only: Option<bool>,
            gc: Option<GcFile>,
            retention: Option<Vec<RetentionRule>>,
            immutable_tags: Option<Vec<ImmutableRule>>,
            quota: Option<Vec<QuotaRule>>,
        }
        let f: F = toml::from_str(
            r#"
            read_only = true
            [gc]
            interval = "6h"
            grace = "2h"
            delete_untagged = true
            [[retention]]
            repository = "team/*"
            keep_last = 10
            [[immutable_tags]]
            repository = "**"
            tags = ["v*"]
            [[quota]]
            repository = "team/**"
            max_bytes = "10GiB"
            scope = "total"
            "#,
        )
        .expect("toml");
        let file = || LifecycleFile {
            read_only: f.read_only,
            gc: f.gc.clone(),
            retention: f.retention.clone(),
            immutable_tags: f.immutable_tags.clone(),
            quota: f.quota.clone(),
        };
        let l = resolve(&LifecycleArgs::default(), file()).expect("resolve");
        assert!(l.read_only);
        assert_eq!(l.gc_interval, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(l.gc.grace, Duration::from_secs(7200));
        assert!(l.gc.delete_untagged && !l.gc.apply_retention);
        assert_eq!(l.policies.retention.len(), 1);
        assert_eq!(l.policies.quotas[0].max_bytes.map(|b| b.0), Some(10 << 30));

        let args = LifecycleArgs {
            read_only: Some(false),
            gc_interval: Some("off".into()),
            gc_grace: Some("30m".into()),
            quotas: Some(r#"[{repository = "a/*", max_tags = 3}, {repository = "b", max_bytes = 100}]"#.into()),
            ..Default::default()
        };
        let l = resolve(&args, file()).expect("resolve");
        assert!(!l.read_only);
        assert_eq!(l.gc_interval, None);
        assert_eq!(l.gc.grace, Duration::from_secs(1800));
        assert_eq!(l.policies.quotas.len(), 2);
        assert_eq!(l.policies.immutable.len(), 1, "lists not given in the environment stay");

        let defaults = resolve(&LifecycleArgs::default(), LifecycleFile::default()).expect("defaults");
        assert_eq!(defaults.gc_interval, Some(DEFAULT_GC_INTERVAL));
        assert!(!defaults.read_only && !defaults.gc.delete_untagged);

        let bad = LifecycleArgs { quotas: Some(r#"[{repository = "a/*"}]"#.into()), ..Default::default() };
        assert!(resolve(&bad, LifecycleFile::default()).expect_err("empty quota").contains("a/*"));
        let bad = LifecycleArgs { retention: Some("not toml".into()), ..Default::default() };
        assert!(resolve(&bad, LifecycleFile::default()).expect_err("syntax").contains("ENTREPOT_RETENTION"));
        let bad = LifecycleArgs { gc_interval: Some("daily".into()), ..Default::default() };
        assert!(resolve(&bad, LifecycleFile::default()).expect_err("interval").contains("ENTREPOT_GC_INTERVAL"));
    }
}
