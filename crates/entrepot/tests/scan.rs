//! Security scanning end to end, on a real Debian 12 image built offline (the three-layer debootstrap fixture
//! of `crates/inventory`'s tests, reused from `target/inventory-fixtures/debian12`): pushed over HTTP to a
//! running `entrepot serve`, scanned in the background, then checked through the HTTP extension
//! (`/v2/<name>/_entrepot/vulnerabilities/<ref>`), the `entrepot scan` CLI (table, JSON, SPDX validated by
//! spdx-tools, CycloneDX validated by cyclonedx-python-lib against the 1.5 schema, `--fail-on`), the SBOM
//! referrer, `entrepot vulndb import|status|update` (hand-written OSV records in Debian's shape naming source
//! packages of the image, some matching and some not; `update` from a local HTTP server serving a zip) with
//! re-matching after each import, and the pull policy gate (DENIED with the advisories, then allowed once the
//! advisory is on the allow-list).

mod support;

#[path = "../../inventory/tests/support/mod.rs"]
#[allow(unused_imports)]
mod inventory_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Server;
use support::e2e::{ACCEPT_ALL_MANIFESTS, http, repo_root, require, sha256_hex, try_run};

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The version of a source package installed in a dpkg database, per `dpkg-query`.
fn source_version(admindir: &Path, binary: &str) -> (String, String) {
    let out = support::e2e::run(Command::new("dpkg-query").arg(format!("--admindir={}", admindir.display())).args([
        "-W",
        "-f",
        "${source:Package} ${source:Version}",
        binary,
    ]));
    let mut it = out.split_whitespace();
    (it.next().expect("source").to_string(), it.next().expect("version").to_string())
}

fn dpkg_packages(admindir: &Path) -> BTreeSet<String> {
    let out = support::e2e::run(Command::new("dpkg-query").arg(format!("--admindir={}", admindir.display())).args([
        "-W",
        "-f",
        "${Package}\n",
    ]));
    out.lines().map(str::to_string).collect()
}

/// A Debian OSV record as Debian publishes them (DSA/DLA ids, `Debian:12`, source package names, an
/// `ECOSYSTEM` range), with a CVSS vector so that severities are known.
fn osv(id: &str, cve: &str, source: &str, fixed: Option<&str>, vector: &str) -> String {
    let mut events = vec![serde_json::json!({"introduced": "0"})];
    if let Some(f) = fixed {
        events.push(serde_json::json!({"fixed": f}));
    }
    serde_json::json!({
        "schema_version": "1.6.0",
        "id": id,
        "aliases": [cve],
        "modified": "2025-01-02T03:04:05Z",
        "published": "2025-01-01T00:00:00Z",
        "summary": format!("{source} - security update"),
        "details": "Hand-written advisory for the test.",
        "affected": [{
            "package": {"ecosystem": "Debian:12", "name": source, "purl": format!("pkg:deb/debian/{source}?arch=source")},
            "ranges": [{"type": "ECOSYSTEM", "events": events}],
            "versions": [],
        }],
        "severity": [{"type": "CVSS_V3", "score": vector}],
        "references": [{"type": "ADVISORY", "url": format!("https://security-tracker.debian.org/tracker/{id}")}],
    })
    .to_string()
}

const CRITICAL: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";
const HIGH: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N";
const MEDIUM: &str = "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:L/A:N";

/// Pushes a blob with one monolithic POST, streamed from the file by curl.
fn push_blob_file(addr: &str, repo: &str, path: &Path) -> (String, u64) {
    let bytes = std::fs::read(path).expect("read layer");
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    let len = bytes.len() as u64;
    drop(bytes);
    let run = try_run(
        Command::new("curl")
            .args(["-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["-H", "Content-Type: application/octet-stream", "-T"])
            .arg(path)
            .arg(format!("http://{addr}/v2/{repo}/blobs/uploads?digest={digest}")),
    )
    .expect_ok();
    assert_eq!(run.stdout_str(), "201", "blob push of {}", path.display());
    (digest, len)
}

fn put_manifest(addr: &str, repo: &str, reference: &str, manifest: &Value) -> String {
    let body = serde_json::to_vec(manifest).expect("json");
    let r = http(
        "PUT",
        &format!("http://{addr}/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        Some(&body),
    );
    assert_eq!(r.status, 201, "manifest push: {}", r.text());
    r.header("Docker-Content-Digest").expect("digest").to_string()
}

/// Polls the report endpoint until the scan result is there (200).
fn wait_report(addr: &str, repo: &str, reference: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = http("GET", &format!("http://{addr}/v2/{repo}/_entrepot/vulnerabilities/{reference}"), &[], None);
        match r.status {
            200 => return r.json(),
            202 => assert_eq!(r.json()["status"], "pending"),
            other => panic!("report: {other} {}", r.text()),
        }
        assert!(Instant::now() < deadline, "the background scan did not finish in time");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn vulns(report: &Value) -> BTreeSet<String> {
    report["vulnerabilities"]
        .as_array()
        .expect("vulnerabilities")
        .iter()
        .map(|v| {
            format!(
                "{} {} {}",
                v["id"].as_str().unwrap(),
                v["package"].as_str().unwrap(),
                v["severity"].as_str().unwrap()
            )
        })
        .collect()
}

fn entrepot(args: &[&str]) -> support::e2e::Run {
    try_run(Command::new(support::entrepot_bin()).args(args))
}

fn write_osv_dir(dir: &Path, records: &[String]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (i, r) in records.iter().enumerate() {
        std::fs::write(dir.join(format!("record-{i}.json")), r).expect("write");
    }
}

/// Serves `body` to every GET on 127.0.0.1 until `n` requests were answered; returns the URL.
fn serve_file_once(body: Vec<u8>, n: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}/osv/Debian/all.zip")
}

#[test]
fn debian_image_scan_end_to_end() {
    require(&["curl", "dpkg-query", "zip"]);
    let fixture = inventory_support::debian12::fixture();
    let final_dpkg = &fixture.dpkg[2];
    let (glibc, glibc_v) = source_version(final_dpkg, "libc6");
    let (jq, jq_v) = source_version(final_dpkg, "jq");
    let (onig, onig_v) = source_version(final_dpkg, "libonig5");
    let (bash, _) = source_version(final_dpkg, "bash");
    assert_eq!((glibc.as_str(), jq.as_str(), onig.as_str(), bash.as_str()), ("glibc", "jq", "libonig", "bash"));

    let config_dir = tempfile::tempdir().expect("tempdir");
    let config = config_dir.path().join("entrepot.toml");
    let write_config = |allow: &str| {
        std::fs::write(
            &config,
            format!("[[scan.policy]]\nrepository = \"prod/**\"\nblock_at = \"critical\"\nallow = [{allow}]\n"),
        )
        .expect("config");
    };
    write_config("");
    let config_s = config.display().to_string();
    let mut server = Server::start_with(&["--config", &config_s]);
    let addr = server.addr.clone();
    let data = server.data_dir().to_path_buf();
    let data_s = data.display().to_string();

    // Push the image: three gzip layers and a config with their diff ids.
    let repo = "prod/debian";
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for path in &fixture.layers {
        let (d, size) = push_blob_file(&addr, repo, path);
        let tar =
            support::e2e::run(Command::new("bash").arg("-c").arg(format!("gzip -dc '{}' | sha256sum", path.display())));
        diff_ids.push(format!("sha256:{}", tar.split_whitespace().next().expect("sum")));
        layers.push(serde_json::json!({"mediaType": LAYER, "digest": d, "size": size}));
    }
    let config_blob = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["bash"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json");
    let cfg_path = config_dir.path().join("config.json");
    std::fs::write(&cfg_path, &config_blob).expect("write");
    let (cfg_digest, cfg_size) = push_blob_file(&addr, repo, &cfg_path);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
        "layers": layers,
    });
    let pushed = Instant::now();
    let digest = put_manifest(&addr, repo, "12", &manifest);
    assert!(pushed.elapsed() < Duration::from_secs(5), "the push must not wait for the scan");

    // The background scan: every installed package, no findings yet (no advisories loaded).
    let report = wait_report(&addr, repo, "12");
    eprintln!("background scan done {:?} after the push", pushed.elapsed());
    assert_eq!(report["status"], "complete");
    assert_eq!(report["digest"], digest.as_str());
    assert_eq!(report["os"]["id"], "debian");
    assert_eq!(report["os"]["version_id"], "12");
    let debs: BTreeSet<String> = report["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["type"] == "deb")
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(debs, dpkg_packages(final_dpkg), "the inventory equals dpkg-query on the final filesystem");
    let libc = report["packages"].as_array().unwrap().iter().find(|p| p["name"] == "libc6").expect("libc6");
    assert_eq!((libc["version"].as_str(), libc["sourceName"].as_str()), (Some(glibc_v.as_str()), Some("glibc")));
    assert!(libc["purl"].as_str().unwrap().starts_with("pkg:deb/debian/libc6@"));
    assert_eq!(report["vulnerabilities"], serde_json::json!([]));
    let scanned_at = report["scannedAt"].as_str().expect("scannedAt").to_string();

    // The CLI on the same data directory, beside the running server: no findings, `--fail-on low` passes.
    let out = entrepot(&["scan", "--data-dir", &data_s, "prod/debian:12", "--fail-on", "low"]).expect_ok().stdout_str();
    assert!(out.contains("(debian 12)") && out.contains("No known vulnerabilities."), "{out}");

    // Import advisories: glibc (critical, fixed after the installed version), bash (medium, no fix), and two
    // that must not match: jq fixed at exactly the installed version, zlib fixed long ago; plus a broken file.
    let osv_dir = config_dir.path().join("osv");
    write_osv_dir(
        &osv_dir,
        &[
            osv("DSA-9001-1", "CVE-2099-0001", "glibc", Some(&format!("{glibc_v}+entrepot1")), CRITICAL),
            osv("DLA-9004-1", "CVE-2099-0004", "bash", None, MEDIUM),
            osv("DSA-9002-1", "CVE-2099-0002", "jq", Some(&jq_v), CRITICAL),
            osv("DSA-9003-1", "CVE-2099-0003", "zlib", Some("1:1.2.11.dfsg-1"), CRITICAL),
        ],
    );
    std::fs::write(osv_dir.join("broken.json"), "{ not json").expect("write");
    std::thread::sleep(Duration::from_millis(1100));
    let out =
        entrepot(&["vulndb", "import", "--data-dir", &data_s, osv_dir.to_str().unwrap()]).expect_ok().stdout_str();
    assert!(out.contains("5 files, 4 records: 4 new, 0 replaced, 0 unchanged, 1 skipped"), "{out}");
    assert!(out.contains("broken.json: not JSON"), "{out}");
    assert!(out.contains("re-matched 1 stored images"), "{out}");
    let status = entrepot(&["vulndb", "status", "--data-dir", &data_s]).expect_ok().stdout_str();
    assert!(status.contains("advisories: 4 (0 withdrawn)") && status.contains("Debian: 4"), "{status}");

    // Re-matched from the stored inventory: the layers were not read again (same scan time).
    let report = wait_report(&addr, repo, &digest);
    let expected: BTreeSet<String> =
        ["DSA-9001-1 libc6 CRITICAL", "DSA-9001-1 libc-bin CRITICAL", "DLA-9004-1 bash MEDIUM"]
            .map(String::from)
            .into();
    assert_eq!(vulns(&report), expected);
    assert_eq!(report["scannedAt"].as_str(), Some(scanned_at.as_str()));
    assert_eq!((report["summary"]["CRITICAL"].as_u64(), report["summary"]["MEDIUM"].as_u64()), (Some(2), Some(1)));
    let v = report["vulnerabilities"].as_array().unwrap().iter().find(|v| v["package"] == "libc6").unwrap();
    assert_eq!(v["aliases"], serde_json::json!(["CVE-2099-0001"]));
    assert_eq!(v["installed"], glibc_v.as_str());
    assert_eq!(v["fixed"], format!("{glibc_v}+entrepot1").as_str());
    assert_eq!(v["advisoryPackage"], "glibc");

    // CLI: the table (most severe first), JSON equal to the API's findings, --fail-on.
    let table = entrepot(&["scan", "--data-dir", &data_s, "prod/debian:12"]).expect_ok().stdout_str();
    let header = table.lines().find(|l| l.starts_with("PACKAGE")).expect("header row");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["PACKAGE", "INSTALLED", "FIXED", "VULNERABILITY", "SEVERITY"]
    );
    let (crit, med) = (table.find("CRITICAL\n").expect("critical row"), table.find("MEDIUM\n").expect("medium row"));
    assert!(crit < med, "sorted by severity:\n{table}");
    assert!(table.contains("Vulnerabilities: 3 (CRITICAL: 2, HIGH: 0, MEDIUM: 1"), "{table}");
    let json =
        entrepot(&["scan", "--data-dir", &data_s, &format!("prod/debian@{digest}"), "--format", "json"]).expect_ok();
    let json: Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(vulns(&json), expected);
    assert_eq!(json["packages"].as_array().map(Vec::len), report["packages"].as_array().map(Vec::len));
    let failed = entrepot(&["scan", "--data-dir", &data_s, "prod/debian:12", "--fail-on", "critical"]);
    assert_eq!(failed.status.code(), Some(1), "findings at critical fail the pipeline");
    let high = entrepot(&["scan", "--data-dir", &data_s, "prod/debian:12", "--fail-on", "high", "--format", "json"]);
    assert_eq!(high.status.code(), Some(1), "critical is above high");

    // SBOMs: SPDX 2.3 and CycloneDX 1.5, checked by the reference tools.
    let python = support::e2e::venv_python();
    let spdx = entrepot(&["scan", "--data-dir", &data_s, "prod/debian:12", "--format", "spdx"]).expect_ok();
    let spdx_path = config_dir.path().join("sbom.spdx.json");
    std::fs::write(&spdx_path, &spdx.stdout).expect("write");
    let pyspdx = repo_root().join(".venv/bin/pyspdxtools");
    let check = try_run(Command::new(&pyspdx).arg("-i").arg(&spdx_path));
    assert!(
        check.ok() && !check.stdout_str().contains("ValidationMessage"),
        "SPDX validation: {}\n{}",
        check.stdout_str(),
        check.stderr
    );
    let spdx: Value = serde_json::from_slice(&spdx.stdout).expect("json");
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    let purls =
        spdx["packages"].as_array().unwrap().iter().filter(|p| p["externalRefs"][0]["referenceType"] == "purl").count();
    assert_eq!(purls, report["packages"].as_array().unwrap().len() + 1, "every package and the image carry a purl");
    let cdx = entrepot(&["scan", "--data-dir", &data_s, "prod/debian:12", "--format", "cyclonedx"]).expect_ok();
    let cdx_path = config_dir.path().join("sbom.cdx.json");
    std::fs::write(&cdx_path, &cdx.stdout).expect("write");
    let validate = "import sys\nfrom cyclonedx.schema import SchemaVersion\nfrom cyclonedx.validation.json import JsonStrictValidator\n\
err = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\nprint(err or 'valid')\nsys.exit(1 if err else 0)\n";
    try_run(Command::new(&python).arg("-c").arg(validate).arg(&cdx_path)).expect_ok();
    let cdx: Value = serde_json::from_slice(&cdx.stdout).expect("json");
    assert_eq!((cdx["bomFormat"].as_str(), cdx["specVersion"].as_str()), (Some("CycloneDX"), Some("1.5")));
    assert_eq!(cdx["vulnerabilities"].as_array().map(Vec::len), Some(3));

    // The SBOM referrer the server attached after the scan.
    let r = http(
        "GET",
        &format!("http://{addr}/v2/{repo}/referrers/{digest}?artifactType=application/spdx%2Bjson"),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    let refs = r.json();
    let refs = refs["manifests"].as_array().expect("manifests");
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!(refs[0]["artifactType"], "application/spdx+json");
    let sbom_manifest = http(
        "GET",
        &format!("http://{addr}/v2/{repo}/manifests/{}", refs[0]["digest"].as_str().unwrap()),
        &[("Accept", ACCEPT_ALL_MANIFESTS)],
        None,
    );
    assert_eq!(sbom_manifest.status, 200, "an SBOM is not an image: the policy lets it through");
    let sbom_manifest = sbom_manifest.json();
    assert_eq!(sbom_manifest["subject"]["digest"], digest.as_str());
    let doc = http(
        "GET",
        &format!("http://{addr}/v2/{repo}/blobs/{}", sbom_manifest["layers"][0]["digest"].as_str().unwrap()),
        &[],
        None,
    );
    let doc = doc.json();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["packages"].as_array().map(Vec::len), spdx["packages"].as_array().map(Vec::len));

    // The pull policy gate: DENIED by tag and by digest, with the advisories; HEAD still answers; another
    // repository (no rule) pulls the same image.
    let denied =
        http("GET", &format!("http://{addr}/v2/{repo}/manifests/12"), &[("Accept", ACCEPT_ALL_MANIFESTS)], None);
    assert_eq!(denied.status, 403, "{}", denied.text());
    let err = denied.json();
    assert_eq!(err["errors"][0]["code"], "DENIED");
    assert!(err["errors"][0]["message"].as_str().unwrap().contains("DSA-9001-1"), "{err}");
    assert_eq!(err["errors"][0]["detail"]["advisories"], serde_json::json!(["DSA-9001-1"]));
    let by_digest =
        http("GET", &format!("http://{addr}/v2/{repo}/manifests/{digest}"), &[("Accept", ACCEPT_ALL_MANIFESTS)], None);
    assert_eq!(by_digest.status, 403);
    let head =
        http("HEAD", &format!("http://{addr}/v2/{repo}/manifests/12"), &[("Accept", ACCEPT_ALL_MANIFESTS)], None);
    assert_eq!(head.status, 200);
    for l in manifest["layers"].as_array().unwrap().iter().chain([&manifest["config"]]) {
        let d = l["digest"].as_str().unwrap();
        let m = http("POST", &format!("http://{addr}/v2/dev/debian/blobs/uploads/?mount={d}&from={repo}"), &[], None);
        assert_eq!(m.status, 201);
    }
    put_manifest(&addr, "dev/debian", "12", &manifest);
    let dev =
        http("GET", &format!("http://{addr}/v2/dev/debian/manifests/12"), &[("Accept", ACCEPT_ALL_MANIFESTS)], None);
    assert_eq!(dev.status, 200, "no rule for dev/**");

    // `vulndb update` from an HTTP server: a zip with a new advisory for libonig (a source package of
    // libonig5, installed in layer 2); it appears without any layer being read.
    let zip_dir = config_dir.path().join("zip");
    write_osv_dir(&zip_dir, &[osv("DSA-9005-1", "CVE-2099-0005", &onig, Some(&format!("{onig_v}+entrepot1")), HIGH)]);
    support::e2e::run(
        Command::new("zip").arg("-q").arg("-j").arg(zip_dir.join("all.zip")).arg(zip_dir.join("record-0.json")),
    );
    let url = serve_file_once(std::fs::read(zip_dir.join("all.zip")).expect("zip"), 1);
    let out = entrepot(&["vulndb", "update", "--data-dir", &data_s, "--source", &url]).expect_ok().stdout_str();
    assert!(out.contains("1 records: 1 new") && out.contains("re-matched"), "{out}");
    let report = wait_report(&addr, repo, "12");
    assert!(vulns(&report).contains("DSA-9005-1 libonig5 HIGH"), "{:?}", vulns(&report));
    assert_eq!(report["scannedAt"].as_str(), Some(scanned_at.as_str()));

    // Accept the critical advisory (by its CVE id): the pull goes through.
    write_config("\"CVE-2099-0001\"");
    server.restart();
    let addr = server.addr.clone();
    let ok = http("GET", &format!("http://{addr}/v2/{repo}/manifests/12"), &[("Accept", ACCEPT_ALL_MANIFESTS)], None);
    assert_eq!(ok.status, 200, "{}", ok.text());
    // The restart found nothing left to scan: the stored result is served as is.
    let report = wait_report(&addr, repo, "12");
    assert_eq!(report["scannedAt"].as_str(), Some(scanned_at.as_str()));
}

/// A scan that was pending when the server went away is not lost: pushed while scans on push were off (as if
/// the queue died with the process), the image is found and scanned by the sweep at the next start, without
/// anyone asking for it.
#[test]
fn restart_scans_what_has_no_result() {
    let fixture = inventory_support::debian12::fixture();
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let config = cfg_dir.path().join("entrepot.toml");
    std::fs::write(&config, "scan_on_push = false\n").expect("config");
    let config_s = config.display().to_string();
    let mut server = Server::start_with(&["--config", &config_s]);
    let addr = server.addr.clone();
    let data_s = server.data_dir().display().to_string();
    let repo = "team/small";
    // The top layer alone: a dpkg database without os-release is still an image with packages.
    let (d, size) = push_blob_file(&addr, repo, &fixture.layers[2]);
    let cfg_path = cfg_dir.path().join("config.json");
    std::fs::write(&cfg_path, br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#)
        .expect("write");
    let (cd, cs) = push_blob_file(&addr, repo, &cfg_path);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": LAYER, "digest": d, "size": size}],
    });
    put_manifest(&addr, repo, "1", &manifest);
    std::thread::sleep(Duration::from_millis(500));
    let status = |data: &str| entrepot(&["vulndb", "status", "--data-dir", data]).expect_ok().stdout_str();
    assert!(!status(&data_s).contains("image: 1"), "nothing scans with scan_on_push off");

    std::fs::write(&config, "scan_on_push = true\n").expect("config");
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !status(&data_s).contains("image: 1") {
        assert!(Instant::now() < deadline, "the start-up sweep did not scan the image: {}", status(&data_s));
        std::thread::sleep(Duration::from_millis(250));
    }
    let report = wait_report(&server.addr, repo, "1");
    assert_eq!(report["status"], "complete");
    assert!(report["packages"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "jq")), "{report}");
}
