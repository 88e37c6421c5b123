//! The operator's storage-lifecycle rules — retention, immutable tags, quotas — and the read-only
//! switch, as the registry holds them at run time.
//!
//! Rules are plain data deserialized from the configuration (`[[retention]]`, `[[immutable_tags]]`,
//! `[[quota]]`) and validated once by [`Policies::validate`]. Which rule applies:
//! - retention: the most specific repository pattern wins alone (as in the access policies);
//! - immutable tags: every matching rule applies (a protection is never taken away by another rule);
//! - quotas: among `scope = "each"` rules the most specific wins and counts the repository alone;
//!   every matching `scope = "total"` rule also applies, counting all the repositories it matches.
//!
//! Read-only mode has two sources, and is on when either is: the *local* flag of this process (the
//! `read_only` configuration key, SIGUSR1 / SIGUSR2) and the *fleet* flag, a setting in the metadata
//! store that every instance sharing it follows ([`Registry::set_read_only_fleet`] writes it, the
//! refresher started by [`Registry::start_read_only_refresh`] reads it at most every second). The
//! local flag never writes the fleet setting, so an instance restarting with `read_only = false` cannot
//! switch the fleet back to writable.
//!
//! The hot path stays cheap: the read-only check is two atomic loads, the rules are behind an `Arc`
//! swapped as a whole, and nothing here reads the metadata store on a request (only the refresher
//! does, in the background). Must never block a read because of a rule.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use entrepot_oci::pattern::most_specific;
use entrepot_oci::{RepoName, RepoPattern, TagPattern};
use serde::Deserialize;

use crate::error::{Denied, RegistryError, Result};
use crate::service::Registry;

/// A duration written for people: `90d`, `12h`, `30m`, `45s`, `2w`, `1h30m`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(s: &str) -> std::result::Result<HumanDuration, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty duration".into());
        }
        if let Ok(secs) = t.parse::<u64>() {
            return Ok(HumanDuration(Duration::from_secs(secs)));
        }
        let mut total: u64 = 0;
        let mut num = String::new();
        let bad = || format!("invalid duration `{t}`: expected e.g. `90d`, `12h`, `30m`, `45s`, `2w` or `1h30m`");
        for c in t.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let unit: u64 = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(bad()),
            };
            let n: u64 = num.parse().map_err(|_| bad())?;
            num.clear();
            total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        }
        if !num.is_empty() {
            return Err(bad());
        }
        Ok(HumanDuration(Duration::from_secs(total)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// `3d4h`, `15m`, `42s`: the two largest units.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let parts = [(s / 86_400, "d"), ((s % 86_400) / 3600, "h"), ((s % 3600) / 60, "m"), (s % 60, "s")];
    let out: Vec<String> = parts
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if out.is_empty() { "0s".into() } else { out.concat() }
}

/// A size written for people: `10GiB`, `500MB`, `1.5 TiB`, `1024`, with binary (`KiB`…) and decimal
/// (`KB`…) units; a bare number is bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> std::result::Result<ByteSize, String> {
        let t = s.trim();
        let bad = || format!("invalid size `{t}`: expected e.g. `10GiB`, `500MB` or a number of bytes");
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = (t[..split].trim(), t[split..].trim());
        let value: f64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            "t" | "tb" => 1000 * 1000 * 1000 * 1000,
            "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_bytes(self.0))
    }
}

/// `1.5 GiB`, `312 B`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

/// Accepts a string or an integer for the people-friendly newtypes.
macro_rules! deserialize_str_or_int {
    ($ty:ty, $expecting:literal, $from_int:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<$ty, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<$ty, E> {
                        <$ty>::parse(s).map_err(E::custom)
                    }
                    fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<$ty, E> {
                        u64::try_from(n).map($from_int).map_err(|_| E::custom("must not be negative"))
                    }
                    fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<$ty, E> {
                        Ok($from_int(n))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

deserialize_str_or_int!(HumanDuration, "a duration such as \"90d\" or a number of seconds", |n| HumanDuration(
    Duration::from_secs(n)
));
deserialize_str_or_int!(ByteSize, "a size such as \"10GiB\" or a number of bytes", ByteSize);

/// `[[retention]]`: which tags of the matching repositories garbage collection deletes.
///
/// A tag is kept if it is immutable, matches `keep_tags`, is among the `keep_last` most recently
/// pushed of the remaining tags, or is younger than `older_than`; otherwise it is deleted. At least
/// one of `keep_last` and `older_than` must be set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub repository: RepoPattern,
    #[serde(default)]
    pub keep_last: Option<usize>,
    #[serde(default)]
    pub keep_tags: Vec<TagPattern>,
    #[serde(default)]
    pub older_than: Option<HumanDuration>,
}

/// `[[immutable_tags]]`: tags of the matching repositories that can be created but never moved or
/// deleted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImmutableRule {
    pub repository: RepoPattern,
    pub tags: Vec<TagPattern>,
}

impl ImmutableRule {
    fn tags_text(&self) -> String {
        self.tags.iter().map(TagPattern::as_str).collect::<Vec<_>>().join(", ")
    }
}

/// Whether a quota counts each matching repository alone or all of them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaScope {
    #[default]
    Each,
    Total,
}

impl QuotaScope {
    pub fn describe(self) -> &'static str {
        match self {
            QuotaScope::Each => "per repository",
            QuotaScope::Total => "in total over the repositories matching the pattern",
        }
    }
}

/// `[[quota]]`: limits on the bytes (sum of the distinct blobs linked in a repository) and the tags.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    pub repository: RepoPattern,
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    #[serde(default)]
    pub max_tags: Option<u64>,
    #[serde(default)]
    pub scope: QuotaScope,
}

/// All the lifecycle rules of a registry.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    pub retention: Vec<RetentionRule>,
    pub immutable: Vec<ImmutableRule>,
    pub quotas: Vec<QuotaRule>,
}

impl Policies {
    /// Checks what the types cannot: each rule says something, and no pattern is given twice where
    /// the most specific rule must be unique.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for r in &self.retention {
            if r.keep_last.is_none() && r.older_than.is_none() {
                return Err(format!(
                    "retention rule for `{}` needs `keep_last` or `older_than` (otherwise it would delete every tag not in keep_tags)",
                    r.repository
                ));
            }
            if !seen.insert(r.repository.as_str()) {
                return Err(format!("two retention rules for the pattern `{}`", r.repository));
            }
        }
        for r in &self.immutable {
            if r.tags.is_empty() {
                return Err(format!("immutable_tags rule for `{}` lists no tag pattern", r.repository));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for q in &self.quotas {
            if q.max_bytes.is_none() && q.max_tags.is_none() {
                return Err(format!("quota for `{}` needs `max_bytes` or `max_tags`", q.repository));
            }
            if !seen.insert((q.repository.as_str(), q.scope)) {
                return Err(format!("two quotas with scope {:?} for the pattern `{}`", q.scope, q.repository));
            }
        }
        Ok(())
    }

    /// The retention rule for `repo` (the most specific match).
    pub fn retention_for(&self, repo: &RepoName) -> Option<&RetentionRule> {
        most_specific(self.retention.iter().map(|r| &r.repository), repo).map(|i| &self.retention[i])
    }

    /// The immutable-tag rule protecting `tag` in `repo`, if any.
    pub fn immutable_rule(&self, repo: &RepoName, tag: &str) -> Option<&ImmutableRule> {
        self.immutable.iter().find(|r| r.repository.matches(repo) && r.tags.iter().any(|t| t.matches(tag)))
    }

    /// Whether any immutable-tag rule matches `repo` (so that checks can be skipped otherwise).
    pub fn has_immutable(&self, repo: &RepoName) -> bool {
        self.immutable.iter().any(|r| r.repository.matches(repo))
    }

    /// The quotas that apply to `repo`: the most specific `each` rule, then every matching `total`.
    pub fn quotas_for(&self, repo: &RepoName) -> Vec<&QuotaRule> {
        let each: Vec<&QuotaRule> = self.quotas.iter().filter(|q| q.scope == QuotaScope::Each).collect();
        let mut out: Vec<&QuotaRule> =
            most_specific(each.iter().map(|q| &q.repository), repo).map(|i| each[i]).into_iter().collect();
        out.extend(self.quotas.iter().filter(|q| q.scope == QuotaScope::Total && q.repository.matches(repo)));
        out
    }
}

/// The metadata setting holding the fleet-wide read-only switch (`"true"` when on, absent when off).
pub const READ_ONLY_SETTING: &str = "read_only";

/// How often [`Registry::start_read_only_refresh`] reads the fleet flag in `entrepot serve`.
pub const READ_ONLY_REFRESH: Duration = Duration::from_secs(1);

/// The run-time switches of a registry, shared by its clones.
#[derive(Default)]
pub(crate) struct LifecycleState {
    /// This process only: configuration and signals.
    read_only: AtomicBool,
    /// Every instance sharing the metadata store: the last value read from (or written to) it.
    fleet_read_only: AtomicBool,
    /// Orders a refresh and a switch of the fleet flag in this process, so that a refresh that read the
    /// store before a switch cannot store its stale value after it.
    fleet_sync: tokio::sync::Mutex<()>,
    policies: RwLock<Arc<Policies>>,
}

impl Registry {
    /// Turns this process's read-only maintenance mode on or off (effective for the next request); the
    /// fleet flag is left as it is (see [`Registry::set_read_only_fleet`]).
    pub fn set_read_only(&self, on: bool) {
        self.lifecycle.read_only.store(on, Ordering::SeqCst);
    }

    /// Whether writes are refused: the local flag or the fleet flag.
    pub fn is_read_only(&self) -> bool {
        self.is_read_only_local() || self.is_read_only_fleet()
    }

    /// The local flag (configuration, signals, [`Registry::set_read_only`]).
    pub fn is_read_only_local(&self) -> bool {
        self.lifecycle.read_only.load(Ordering::SeqCst)
    }

    /// The fleet flag as last read from the metadata store (or written by this process).
    pub fn is_read_only_fleet(&self) -> bool {
        self.lifecycle.fleet_read_only.load(Ordering::SeqCst)
    }

    /// Switches read-only mode for every instance sharing the metadata store: writes the setting (it
    /// persists across restarts until switched off), then this process's fleet flag at once; the other
    /// instances follow at their next refresh. Switching off also clears this process's local flag, so
    /// that the answer is "writable" here.
    pub async fn set_read_only_fleet(&self, on: bool) -> Result<()> {
        let _sync = self.lifecycle.fleet_sync.lock().await;
        self.meta.set_setting(READ_ONLY_SETTING, on.then_some("true")).await?;
        self.lifecycle.fleet_read_only.store(on, Ordering::SeqCst);
        if !on {
            self.set_read_only(false);
        }
        Ok(())
    }

    /// Reads the fleet flag from the metadata store into this process; returns it. On an error the
    /// previous value stays.
    pub async fn refresh_read_only(&self) -> Result<bool> {
        let _sync = self.lifecycle.fleet_sync.lock().await;
        let on = self.meta.setting(READ_ONLY_SETTING).await?.is_some_and(|v| v == "true");
        let was = self.lifecycle.fleet_read_only.swap(on, Ordering::SeqCst);
        if was != on {
            tracing::warn!(read_only = on, "fleet-wide read-only maintenance mode switched (seen in the metadata)");
        }
        Ok(on)
    }

    /// Reads the fleet flag once now (so that a restarting instance refuses writes from its first
    /// request if the fleet is read-only), then every `every` in a background task, which runs until
    /// the runtime stops. Only reads the setting: never writes it.
    pub async fn start_read_only_refresh(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        if let Err(e) = self.refresh_read_only().await {
            tracing::warn!(error = %e, "cannot read the fleet-wide read-only switch; will retry");
        }
        let registry = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut failing = false;
            loop {
                tick.tick().await;
                match registry.refresh_read_only().await {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("the fleet-wide read-only switch can be read again");
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot read the fleet-wide read-only switch; keeping the last value");
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// Replaces the lifecycle rules (after [`Policies::validate`]).
    pub fn set_policies(&self, policies: Policies) -> std::result::Result<(), String> {
        policies.validate()?;
        *self.lifecycle.policies.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policies);
        Ok(())
    }

    /// The rules in force.
    pub fn policies(&self) -> Arc<Policies> {
        self.lifecycle.policies.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Refuses a write in read-only mode.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.is_read_only() { Err(RegistryError::denied(Denied::ReadOnly)) } else { Ok(()) }
    }

    /// Refuses deleting `tag` of `repo` if an immutable-tag rule protects it.
    pub(crate) fn check_tag_deletable(&self, repo: &RepoName, tag: &str) -> Result<()> {
        match self.policies().immutable_rule(repo, tag) {
            Some(rule) => Err(RegistryError::denied(Denied::ImmutableTag {
                repo: repo.to_string(),
                tag: tag.to_string(),
                rule_repo: rule.repository.to_string(),
                rule_tags: rule.tags_text(),
                current: None,
            })),
            None => Ok(()),
        }
    }

    /// Refuses deleting a tag, or a manifest some tag points at, that an immutable-tag rule protects.
    pub(crate) async fn check_manifest_deletable(
        &self,
        repo: &RepoName,
        reference: &entrepot_oci::Reference,
    ) -> Result<()> {
        if !self.policies().has_immutable(repo) {
            return Ok(());
        }
        match reference {
            entrepot_oci::Reference::Tag(t) => self.check_tag_deletable(repo, t.as_str()),
            entrepot_oci::Reference::Digest(d) => {
                for rec in self.meta.tag_records(repo).await? {
                    if &rec.digest == d {
                        self.check_tag_deletable(repo, &rec.tag)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// The denial for moving a protected tag that points at `current`.
    pub(crate) fn immutable_denied(&self, repo: &RepoName, tag: &str, current: entrepot_oci::Digest) -> RegistryError {
        let policies = self.policies();
        let (rule_repo, rule_tags) = match policies.immutable_rule(repo, tag) {
            Some(r) => (r.repository.to_string(), r.tags_text()),
            None => ("(rule removed)".to_string(), String::new()),
        };
        RegistryError::denied(Denied::ImmutableTag {
            repo: repo.to_string(),
            tag: tag.to_string(),
            rule_repo,
            rule_tags,
            current: Some(current),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(HumanDuration::parse("90d").map(|d| d.0.as_secs()), Ok(90 * 86_400));
        assert_eq!(HumanDuration::parse("1h30m").map(|d| d.0.as_secs()), Ok(5400));
        assert_eq!(HumanDuration::parse("2w").map(|d| d.0.as_secs()), Ok(14 * 86_400));
        assert_eq!(HumanDuration::parse("45").map(|d| d.0.as_secs()), Ok(45));
        assert!(HumanDuration::parse("10x").is_err());
        assert!(HumanDuration::parse("h").is_err());
        assert!(HumanDuration::parse("5d3").is_err());
        assert_eq!(format_duration(Duration::from_secs(3 * 86_400 + 4 * 3600 + 5)), "3d4h");
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(ByteSize::parse("10GiB"), Ok(ByteSize(10 << 30)));
        assert_eq!(ByteSize::parse("500 MB"), Ok(ByteSize(500_000_000)));
        assert_eq!(ByteSize::parse("1.5KiB"), Ok(ByteSize(1536)));
        assert_eq!(ByteSize::parse("1024"), Ok(ByteSize(1024)));
        assert!(ByteSize::parse("10 parsecs").is_err());
        assert!(ByteSize::parse("-1").is_err());
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(12), "12 B");
    }

    fn rule_set() -> Policies {
        #[derive(Deserialize)]
        struct F {
            retention: Vec<RetentionRule>,
            immutable_tags: Vec<ImmutableRule>,
            quota: Vec<QuotaRule>,
        }
        let f: F = toml::from_str(
            r#"
            [[retention]]
            repository = "**"
            keep_last = 50
            [[retention]]
            repository = "team/*"
            keep_last = 3
            keep_tags = ["v*", "latest"]
            older_than = "30d"
            [[immutable_tags]]
            repository = "team/**"
            tags = ["v*"]
            [[quota]]
            repository = "**"
            max_bytes = "1GiB"
            [[quota]]
            repository = "team/big"
            max_bytes = 1000
            max_tags = 5
            [[quota]]
            repository = "team/**"
            max_bytes = "10 GiB"
            scope = "total"
            "#,
        )
        .expect("parse");
        Policies { retention: f.retention, immutable: f.immutable_tags, quotas: f.quota }
    }

    #[test]
    fn which_rule_applies() {
        let p = rule_set();
        p.validate().expect("valid");
        let repo = |s: &str| RepoName::parse(s).expect("repo");
        assert_eq!(p.retention_for(&repo("team/app")).and_then(|r| r.keep_last), Some(3));
        assert_eq!(p.retention_for(&repo("other/app")).and_then(|r| r.keep_last), Some(50));
        assert!(p.immutable_rule(&repo("team/app"), "v1.0").is_some());
        assert!(p.immutable_rule(&repo("team/app"), "latest").is_none());
        assert!(p.immutable_rule(&repo("other/app"), "v1.0").is_none());
        let q = p.quotas_for(&repo("team/big"));
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].max_bytes, Some(ByteSize(1000)));
        assert_eq!(q[1].scope, QuotaScope::Total);
        let q = p.quotas_for(&repo("solo"));
        assert_eq!((q.len(), q[0].max_bytes), (1, Some(ByteSize(1 << 30))));
    }

    /// Two registries on one SQLite database, each with its own connections (as two processes): the
    /// fleet switch written by one is seen by the other after a refresh, persists for a registry
    /// opened later, and is never written by the local flag.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_fleet_read_only_switch_is_shared_through_the_metadata() {
        use entrepot_meta::{MetaStore, SqliteMetaStore};
        use entrepot_oci::Algorithm;

        let dir = tempfile::tempdir().expect("tempdir");
        let open = || async {
            let blobs = entrepot_storage::FsBlobStore::open(dir.path()).expect("blobs");
            let meta = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("meta");
            Registry::new(Arc::new(blobs), Arc::new(meta), crate::RegistryConfig::default())
        };
        let (a, b) = (open().await, open().await);
        let r = RepoName::parse("fleet/app").expect("repo");
        let writable = |reg: &Registry| {
            let (reg, r) = (reg.clone(), r.clone());
            async move {
                match reg.start_upload(&r, Algorithm::Sha256).await {
                    Ok(_) => true,
                    Err(RegistryError::Denied(d)) if *d == Denied::ReadOnly => false,
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
        };
        let refresher = b.start_read_only_refresh(Duration::from_millis(20)).await;
        assert!(writable(&a).await && writable(&b).await);

        // A switches the fleet: at once on A, within a few refreshes on B.
        a.set_read_only_fleet(true).await.expect("switch on");
        assert!(a.is_read_only() && a.is_read_only_fleet() && !a.is_read_only_local());
        assert!(!writable(&a).await, "the writer is read-only at once");
        let mut seen = false;
        for _ in 0..100 {
            if b.is_read_only() {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen, "B sees the fleet flag after its refresh");
        assert!(b.is_read_only_fleet() && !b.is_read_only_local());
        assert!(!writable(&b).await, "B refuses writes");

        // The local flag never writes the setting: an instance (re)started with `read_only = false`
        // stays read-only, from its first request.
        b.set_read_only(false);
        assert!(!writable(&b).await, "clearing the local flag does not clear the fleet flag");
        let c = open().await;
        c.set_read_only(false);
        let c_refresher = c.start_read_only_refresh(Duration::from_secs(3600)).await;
        assert!(!writable(&c).await, "a registry opened later is read-only at once (the switch persists)");
        let stored = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("meta");
        assert_eq!(stored.setting(READ_ONLY_SETTING).await.expect("setting").as_deref(), Some("true"));

        // Switching off (from B, whose local flag is also on) clears both flags there, and the fleet.
        b.set_read_only(true);
        b.set_read_only_fleet(false).await.expect("switch off");
        assert!(!b.is_read_only() && !b.is_read_only_local() && !b.is_read_only_fleet());
        assert!(writable(&b).await);
        assert!(!a.refresh_read_only().await.expect("refresh"), "A reads the switch off");
        assert!(writable(&a).await);
        assert_eq!(stored.setting(READ_ONLY_SETTING).await.expect("setting"), None, "off deletes the setting");

        // The local flag stays local.
        a.set_read_only(true);
        assert!(!writable(&a).await);
        assert!(!b.refresh_read_only().await.expect("refresh") && writable(&b).await, "B is not affected");
        refresher.abort();
        c_refresher.abort();
    }

    #[test]
    fn invalid_rules_are_named() {
        let mut p = rule_set();
        p.retention[0].keep_last = None;
        assert!(p.validate().expect_err("no keep").contains("`**`"));
        let mut p = rule_set();
        p.quotas[1].max_bytes = None;
        p.quotas[1].max_tags = None;
        assert!(p.validate().expect_err("empty quota").contains("team/big"));
        let mut p = rule_set();
        let dup = p.retention[1].clone();
        p.retention.push(dup);
        assert!(p.validate().expect_err("dup").contains("team/*"));
    }
}
