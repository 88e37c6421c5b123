//! Configuration of security scanning: `scan_on_push`, `vulndb`, `attach_sbom` (top-level keys, like the
//! registry's other switches) and the `[scan]` table (`workers`, `unscanned`, `[[scan.policy]]` rules), each
//! also an `ENTREPOT_*` variable and a flag of `entrepot serve`; later sources win (defaults < file < env <
//! flags). Only parsing and checking: never starts anything.

use std::path::{Path, PathBuf};

use clap::Args;
use entrepot_scan::{PolicyRule, PullPolicy, Unscanned};
use serde::Deserialize;

/// Flags of `entrepot serve` about scanning.
#[derive(Args, Debug, Default, Clone)]
pub struct ScanArgs {
    /// Scan every pushed image in the background [default: true].
    #[arg(long, env = "ENTREPOT_SCAN_ON_PUSH", num_args = 0..=1, default_missing_value = "true")]
    pub scan_on_push: Option<bool>,
    /// The advisory database file [default: <data_dir>/vulndb.sqlite].
    #[arg(long, env = "ENTREPOT_VULNDB")]
    pub vulndb: Option<PathBuf>,
    /// Attach each scanned image's SBOM (SPDX 2.3 JSON) as an OCI referrer [default: true].
    #[arg(long, env = "ENTREPOT_ATTACH_SBOM", num_args = 0..=1, default_missing_value = "true")]
    pub attach_sbom: Option<bool>,
    /// Scans running at once [default: 1].
    #[arg(long, env = "ENTREPOT_SCAN_WORKERS")]
    pub scan_workers: Option<usize>,
    /// Pulls of images without a complete scan under a policy rule: allow or deny [default: allow].
    #[arg(long, env = "ENTREPOT_SCAN_UNSCANNED")]
    pub scan_unscanned: Option<String>,
    /// Pull policy rules as a TOML inline array, replacing the file's `[[scan.policy]]`, e.g.
    /// `[{repository = "prod/**", block_at = "critical", allow = ["CVE-2023-1234"]}]`.
    #[arg(long, env = "ENTREPOT_SCAN_POLICY")]
    pub scan_policy: Option<String>,
}

/// The `[scan]` table.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ScanFile {
    workers: Option<usize>,
    unscanned: Option<Unscanned>,
    policy: Option<Vec<PolicyRule>>,
}

/// The scan keys of the configuration file.
#[derive(Debug, Default, Clone)]
pub struct ScanFileKeys {
    pub scan_on_push: Option<bool>,
    pub vulndb: Option<PathBuf>,
    pub attach_sbom: Option<bool>,
    pub scan: Option<ScanFile>,
}

/// The effective scanning configuration.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    pub on_push: bool,
    pub vulndb: PathBuf,
    pub attach_sbom: bool,
    pub workers: usize,
    pub policy: PullPolicy,
}

impl ScanConfig {
    /// The scanner's settings.
    pub fn settings(&self) -> entrepot_scan::ScanSettings {
        let mut s = entrepot_scan::ScanSettings::new(&self.vulndb);
        s.attach_sbom = self.attach_sbom;
        s.workers = self.workers;
        s.policy = self.policy.clone();
        s
    }
}

#[derive(Deserialize)]
struct Inline {
    policy: Vec<PolicyRule>,
}

/// Merges flags / environment over the file's keys; every problem is reported.
pub fn resolve(args: &ScanArgs, file: ScanFileKeys, data_dir: &Path) -> Result<ScanConfig, String> {
    let table = file.scan.unwrap_or_default();
    let mut problems = Vec::new();
    let workers = args.scan_workers.or(table.workers).unwrap_or(1);
    if workers == 0 || workers > 64 {
        problems.push(format!("scan.workers: expected 1 to 64, got {workers}"));
    }
    let unscanned = match &args.scan_unscanned {
        Some(s) => Unscanned::parse(s).unwrap_or_else(|e| {
            problems.push(format!("scan.unscanned: {e}"));
            Unscanned::Allow
        }),
        None => table.unscanned.unwrap_or_default(),
    };
    let rules = match &args.scan_policy {
        Some(text) => match toml::from_str::<Inline>(&format!("policy = {text}")) {
            Ok(i) => i.policy,
            Err(e) => {
                problems.push(format!("ENTREPOT_SCAN_POLICY: {}", e.to_string().replace('\n', " ")));
                Vec::new()
            }
        },
        None => table.policy.unwrap_or_default(),
    };
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    Ok(ScanConfig {
        on_push: args.scan_on_push.or(file.scan_on_push).unwrap_or(true),
        vulndb: args.vulndb.clone().or(file.vulndb).unwrap_or_else(|| data_dir.join("vulndb.sqlite")),
        attach_sbom: args.attach_sbom.or(file.attach_sbom).unwrap_or(true),
        workers,
        policy: PullPolicy { rules, unscanned },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let file: ScanFile = toml::from_str(
            "workers = 2\nunscanned = \"deny\"\n[[policy]]\nrepository = \"prod/**\"\nblock_at = \"critical\"\nallow = [\"CVE-2023-1234\"]\n",
        )
        .expect("parse");
        let keys = ScanFileKeys { scan_on_push: Some(false), scan: Some(file), ..Default::default() };
        let c = resolve(&ScanArgs::default(), keys.clone(), Path::new("/d")).expect("resolve");
        assert!(!c.on_push && c.attach_sbom);
        assert_eq!((c.workers, c.vulndb.as_path()), (2, Path::new("/d/vulndb.sqlite")));
        assert_eq!(c.policy.unscanned, Unscanned::Deny);
        assert_eq!(c.policy.rules[0].allow, ["CVE-2023-1234"]);
        assert_eq!(c.policy.rules[0].block_at, entrepot_scan::Severity::Critical);

        let args = ScanArgs {
            scan_on_push: Some(true),
            scan_policy: Some("[{repository = \"x/*\", block_at = \"high\"}]".into()),
            ..Default::default()
        };
        let c = resolve(&args, keys.clone(), Path::new("/d")).expect("resolve");
        assert!(c.on_push);
        assert_eq!(c.policy.rules[0].repository.as_str(), "x/*");

        let bad = ScanArgs {
            scan_policy: Some("[{repository = \"x/*\", block_at = \"severe\"}]".into()),
            ..Default::default()
        };
        let err = resolve(&bad, keys, Path::new("/d")).expect_err("bad severity");
        assert!(err.contains("severe"), "{err}");
        assert!(toml::from_str::<ScanFile>("wrokers = 1").is_err(), "unknown keys are refused");
    }
}
