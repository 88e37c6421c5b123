//! The scanner over a real `Registry` (SQLite metadata, in-memory blobs) with images built here: a layer with
//! `etc/os-release` and a dpkg status database, hand-written Debian OSV records in the real shape. Checks
//! background scans after push (through the event sink), the start-up sweep (a push the scanner never heard
//! of), reports, multi-platform indexes, SBOM referrers, re-matching after an import without re-reading
//! layers, and the pull policy gate.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use entrepot_meta::SqliteMetaStore;
use entrepot_oci::{Algorithm, Digest, Reference, RepoName, media};
use entrepot_registry::{ByteStream, Registry, RegistryConfig};
use entrepot_scan::{PolicyRule, PullPolicy, RecordKind, ReportState, ScanSettings, Scanner, SqliteScanStore};
use entrepot_storage::MemoryBlobStore;
use entrepot_vuln::{AdvisoryDb, Severity};

const STATUS: &str = "Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u4

Package: zlib1g
Status: install ok installed
Architecture: amd64
Source: zlib (1:1.2.13.dfsg-1)
Version: 1:1.2.13.dfsg-1

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
";

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(enc);
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn osv(id: &str, alias: &str, source: &str, fixed: &str, modified: &str) -> String {
    format!(
        r#"{{"schema_version":"1.6.0","id":"{id}","aliases":["{alias}"],"modified":"{modified}","published":"2024-01-01T00:00:00Z",
  "summary":"{source} issue","affected":[{{"package":{{"ecosystem":"Debian:12","name":"{source}","purl":"pkg:deb/debian/{source}?arch=source"}},
  "ranges":[{{"type":"ECOSYSTEM","events":[{{"introduced":"0"}},{{"fixed":"{fixed}"}}]}}],
  "database_specific":{{"severity":"high"}}}}],"severity":[{{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}}]}}"#
    )
}

struct Env {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    registry: Registry,
    scanner: Scanner,
}

async fn env(policy: PullPolicy, with_sink: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let meta = SqliteMetaStore::open(&path.join("meta.db")).await.unwrap();
    let registry = Registry::new(Arc::new(MemoryBlobStore::default()), Arc::new(meta), RegistryConfig::default());
    let store = Arc::new(SqliteScanStore::open(path.join("scan.db")).unwrap());
    let mut settings = ScanSettings::new(path.join("vulndb.sqlite"));
    settings.policy = policy;
    let scanner = Scanner::new(registry.clone(), store, settings);
    let registry =
        if with_sink { registry.clone().with_event_sink(scanner.sink(registry.event_sink())) } else { registry };
    Env { _dir: dir, dir: path, registry, scanner }
}

fn import(dir: &Path, records: &[String]) {
    let osv_dir = tempfile::tempdir().unwrap();
    for (i, r) in records.iter().enumerate() {
        let mut f = std::fs::File::create(osv_dir.path().join(format!("r{i}.json"))).unwrap();
        f.write_all(r.as_bytes()).unwrap();
    }
    let mut db = AdvisoryDb::open(dir.join("vulndb.sqlite")).unwrap();
    db.import_dir(osv_dir.path()).unwrap();
}

async fn push_blob(r: &Registry, repo: &RepoName, bytes: Vec<u8>) -> (Digest, usize) {
    let d = Digest::sha256(&bytes);
    let len = bytes.len();
    let s = r.start_upload(repo, Algorithm::Sha256).await.unwrap();
    let body: ByteStream = Box::pin(futures_util::stream::once(async move { Ok(Bytes::from(bytes)) }));
    r.finish_upload(repo, &s.id, &d, None, Some(len as u64), Some(body)).await.unwrap();
    (d, len)
}

/// Pushes a one-layer image; returns the manifest's digest, its bytes' length.
async fn push_image(r: &Registry, repo: &RepoName, tag: &str, status: &str, os_version: &str) -> (Digest, usize) {
    let os = format!("ID=debian\nVERSION_ID=\"{os_version}\"\nVERSION_CODENAME=bookworm\n");
    let layer = tar_gz(&[("etc/os-release", os.as_bytes()), ("var/lib/dpkg/status", status.as_bytes())]);
    let (ld, ll) = push_blob(r, repo, layer).await;
    let (cd, cl) =
        push_blob(r, repo, br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}"#.to_vec()).await;
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": cd, "size": cl},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ll}],
    });
    let bytes = serde_json::to_vec(&m).unwrap();
    let len = bytes.len();
    let reference = Reference::parse(tag).unwrap();
    let put = r.put_manifest(repo, &reference, Some(media::OCI_MANIFEST), bytes, vec![]).await.unwrap();
    (put.digest, len)
}

fn ids(report: &entrepot_scan::Report) -> Vec<String> {
    report.vulnerabilities.iter().map(|v| format!("{} {}", v.id, v.package)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_scan_report_sbom_rematch_and_gate() {
    let policy = PullPolicy {
        rules: vec![PolicyRule {
            repository: entrepot_oci::RepoPattern::parse("prod/**").unwrap(),
            block_at: Severity::High,
            allow: vec![],
            unscanned: None,
        }],
        ..Default::default()
    };
    let e = env(policy, true).await;
    // glibc is affected (fixed later than installed), zlib is not (fixed before the installed version).
    import(
        &e.dir,
        &[
            osv("DSA-1-1", "CVE-2024-0001", "glibc", "2.36-9+deb12u7", "2024-02-01T00:00:00Z"),
            osv("DSA-2-1", "CVE-2024-0002", "zlib", "1:1.2.12-1", "2024-02-01T00:00:00Z"),
        ],
    );
    e.scanner.start(true);
    let repo = RepoName::parse("prod/app").unwrap();
    let (digest, _) = push_image(&e.registry, &repo, "v1", STATUS, "12").await;
    assert!(e.scanner.wait_idle(Duration::from_secs(30)).await, "scan did not finish");

    let report = match e.scanner.report(&repo, &digest).await.unwrap() {
        ReportState::Ready(r) => r,
        ReportState::Pending => panic!("no result after the background scan"),
    };
    assert_eq!(report.status, "complete");
    assert_eq!(report.os.as_ref().and_then(|o| o.version_id.as_deref()), Some("12"));
    let names: Vec<&str> = report.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["bash", "libc6", "zlib1g"], "installed packages only");
    assert_eq!(ids(&report), ["DSA-1-1 libc6"]);
    let v = &report.vulnerabilities[0];
    assert_eq!(
        (v.severity, v.fixed.as_deref(), v.advisory_package.as_str()),
        (Severity::Critical, Some("2.36-9+deb12u7"), "glibc")
    );
    assert_eq!(v.aliases, ["CVE-2024-0001"]);
    assert_eq!(report.summary.critical, 1);

    // The SBOM is a referrer of the image, and is itself not scanned as an image.
    let refs = e.registry.referrers(&repo, &digest, Some("application/spdx+json")).await.unwrap();
    assert_eq!(refs.len(), 1, "one SBOM referrer");
    let sbom = e.registry.get_manifest(&repo, &Reference::Digest(refs[0].digest.clone())).await.unwrap();
    let sbom_m: serde_json::Value = serde_json::from_slice(&sbom.content).unwrap();
    assert_eq!(sbom_m["subject"]["digest"], digest.to_string());
    let layer = Digest::parse(sbom_m["layers"][0]["digest"].as_str().unwrap()).unwrap();
    let mut body = e.registry.read_blob(&repo, &layer, None).await.unwrap();
    let mut doc = Vec::new();
    while let Some(c) = futures_util::StreamExt::next(&mut body).await {
        doc.extend_from_slice(&c.unwrap());
    }
    let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["packages"].as_array().unwrap().len(), 4, "the image and its three packages");
    assert!(e.scanner.wait_idle(Duration::from_secs(30)).await);
    let sbom_record = e.scanner.store().get(&refs[0].digest).await.unwrap().expect("the SBOM push was seen");
    assert!(matches!(sbom_record.kind, RecordKind::NotApplicable(_)), "{:?}", sbom_record.kind);

    // The gate refuses: a critical finding in prod/**; allowed once the CVE is on the allow-list.
    let refusal = e.scanner.check_pull(&repo, &digest).await.unwrap().expect_err("denied");
    assert!(refusal.message.contains("DSA-1-1"), "{}", refusal.message);
    assert_eq!(refusal.advisories, ["DSA-1-1"]);
    let other = RepoName::parse("dev/app").unwrap();
    assert!(e.scanner.check_pull(&other, &digest).await.unwrap().is_ok(), "no rule for dev/**");

    // A new advisory appears after an import, matched from the stored inventory: no layer is read again
    // (the layer blob is deleted from the repository first, so reading it would fail).
    let m: serde_json::Value = serde_json::from_slice(
        &e.registry.get_manifest(&repo, &Reference::Digest(digest.clone())).await.unwrap().content,
    )
    .unwrap();
    let layer = Digest::parse(m["layers"][0]["digest"].as_str().unwrap()).unwrap();
    e.registry.delete_blob(&repo, &layer).await.unwrap();
    import(&e.dir, &[osv("DSA-3-1", "CVE-2024-0003", "bash", "5.2.21-1", "2024-03-01T00:00:00Z")]);
    let summary = e.scanner.rematch_all().await.unwrap();
    assert_eq!((summary.images, summary.findings), (1, 2));
    let record = e.scanner.store().get(&digest).await.unwrap().unwrap();
    let mut found: Vec<&str> = record.findings.iter().map(|f| f.id.as_str()).collect();
    found.sort();
    assert_eq!(found, ["DSA-1-1", "DSA-3-1"]);

    // Allow-listing the blocking advisory (by its CVE alias) lets the pull through, while a rule that only
    // blocks at critical still refuses nothing else... bash's advisory is critical too, so allow both.
    let mut allowed = e.scanner.settings().policy.clone();
    allowed.rules[0].allow = vec!["CVE-2024-0001".into()];
    let still = allowed
        .check(&repo, e.scanner.stored_report(&repo, &digest, false).await.unwrap().as_ref())
        .expect_err("bash's advisory still blocks");
    assert_eq!(still.advisories, ["DSA-3-1"]);
    allowed.rules[0].allow.push("DSA-3-1".into());
    assert!(allowed.check(&repo, e.scanner.stored_report(&repo, &digest, false).await.unwrap().as_ref()).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_finds_pushes_the_scanner_missed_and_indexes_aggregate_platforms() {
    // No sink: the pushes happen "while the scanner was down".
    let e = env(PullPolicy::default(), false).await;
    import(&e.dir, &[osv("DSA-1-1", "CVE-2024-0001", "glibc", "2.36-9+deb12u7", "2024-02-01T00:00:00Z")]);
    let repo = RepoName::parse("team/multi").unwrap();
    let (amd, amd_len) = push_image(&e.registry, &repo, "amd", STATUS, "12").await;
    let fixed_status = STATUS.replace("2.36-9+deb12u4", "2.36-9+deb12u7");
    let (arm, arm_len) = push_image(&e.registry, &repo, "arm", &fixed_status, "12").await;
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_INDEX,
        "manifests": [
            {"mediaType": media::OCI_MANIFEST, "digest": amd, "size": amd_len, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media::OCI_MANIFEST, "digest": arm, "size": arm_len, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let put = e
        .registry
        .put_manifest(&repo, &Reference::parse("1.0").unwrap(), Some(media::OCI_INDEX), bytes, vec![])
        .await
        .unwrap();
    // An artifact that is not an image.
    let (cd, _) = push_blob(&e.registry, &repo, b"{}".to_vec()).await;
    let (bd, bl) = push_blob(&e.registry, &repo, b"chart".to_vec()).await;
    let artifact = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": "application/vnd.cncf.helm.chart",
        "config": {"mediaType": media::OCI_EMPTY, "digest": cd, "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": bd, "size": bl}],
    });
    let art = e
        .registry
        .put_manifest(
            &repo,
            &Reference::parse("chart").unwrap(),
            Some(media::OCI_MANIFEST),
            serde_json::to_vec(&artifact).unwrap(),
            vec![],
        )
        .await
        .unwrap();

    assert!(e.scanner.stored_report(&repo, &put.digest, false).await.unwrap().is_none());
    e.scanner.start(true);
    assert!(e.scanner.wait_idle(Duration::from_secs(30)).await);
    // The sweep queued all four manifests; nothing is left to queue.
    assert_eq!(e.scanner.sweep().await.unwrap(), 0, "every manifest has a result and an SBOM");

    let report = e.scanner.stored_report(&repo, &put.digest, true).await.unwrap().expect("index report");
    assert_eq!(report.status, "complete");
    let platforms: Vec<(Option<&str>, u64)> =
        report.platforms.iter().map(|p| (p.platform.as_deref(), p.summary.total)).collect();
    assert_eq!(platforms, [(Some("linux/amd64"), 1), (Some("linux/arm64/v8"), 0)]);
    assert_eq!(report.vulnerabilities.len(), 1);
    assert_eq!(report.vulnerabilities[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(report.packages.len(), 6, "three packages on each platform");
    for child in [&amd, &arm] {
        assert_eq!(e.registry.referrers(&repo, child, Some("application/spdx+json")).await.unwrap().len(), 1);
    }
    let art_record = e.scanner.store().get(&art.digest).await.unwrap().unwrap();
    assert_eq!(
        art_record.kind,
        RecordKind::NotApplicable("an artifact of type application/vnd.cncf.helm.chart, not an image".into())
    );
    let table = entrepot_scan::report::render_table(&report);
    assert!(table.contains("PACKAGE") && table.contains("DSA-1-1") && table.contains("linux/amd64"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unscanned_images_follow_the_policy_and_get_queued() {
    let rule = |unscanned| PolicyRule {
        repository: entrepot_oci::RepoPattern::parse("prod/*").unwrap(),
        block_at: Severity::Critical,
        allow: vec![],
        unscanned,
    };
    let e =
        env(PullPolicy { rules: vec![rule(Some(entrepot_scan::Unscanned::Deny))], ..Default::default() }, false).await;
    let repo = RepoName::parse("prod/app").unwrap();
    let (digest, _) = push_image(&e.registry, &repo, "v1", STATUS, "12").await;
    let refusal = e.scanner.check_pull(&repo, &digest).await.unwrap().expect_err("unscanned is denied");
    assert!(refusal.message.contains("not been scanned"), "{}", refusal.message);
    // The refused pull queued a scan; once done (no advisories loaded), the pull is allowed.
    e.scanner.start(true);
    assert!(e.scanner.wait_idle(Duration::from_secs(30)).await);
    assert!(e.scanner.check_pull(&repo, &digest).await.unwrap().is_ok());
    // The default (allow) lets an unscanned image through.
    let lenient = PullPolicy { rules: vec![rule(None)], ..Default::default() };
    assert!(lenient.check(&repo, None).is_ok());
}
