//! Import and matching on real OSV records (Go vulndb records shipped by Debian, GHSA/PYSEC records from the
//! vulnerablecode wheel) and on hand-written Debian/Ubuntu/Alpine/AlmaLinux/Red Hat records in the feeds' shape.

use std::io::Write;
use std::path::{Path, PathBuf};

use entrepot_vuln::{AdvisoryDb, DbError, Ecosystem, Finding, PackageQuery, Severity, rematch};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv")
}

fn loaded() -> AdvisoryDb {
    let mut db = AdvisoryDb::open_in_memory().unwrap();
    db.import_dir(data()).unwrap();
    db
}

fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.id.as_str()).collect()
}

fn q(eco: Ecosystem, name: &str, version: &str) -> PackageQuery {
    PackageQuery::new(eco, name, version)
}

#[test]
fn import_directory_counts_and_skips_malformed() {
    let mut db = AdvisoryDb::open_in_memory().unwrap();
    let report = db.import_dir(data()).unwrap();
    // go: 5 single records + 2 in the text.json array; ghsa: 9; handwritten: 8 good.
    assert_eq!(report.records, 5 + 2 + 9 + 8, "{report:?}");
    assert_eq!(report.inserted, report.records);
    let reasons: Vec<String> = report.malformed.iter().map(|m| format!("{}: {}", m.source, m.reason)).collect();
    // The vulndb index.json is an array of 3 ids (3 malformed "records"), plus one bad record and one non-JSON file.
    assert_eq!(report.malformed_count, 5, "{reasons:#?}");
    for file in ["index.json", "broken-record.json", "not-json.json"] {
        assert!(reasons.iter().any(|r| r.contains(file)), "{file} should be reported: {reasons:#?}");
    }
    // Importing the same data again changes nothing.
    let again = db.import_dir(data()).unwrap();
    assert_eq!((again.inserted, again.replaced, again.unchanged), (0, 0, report.records));

    let status = db.status().unwrap();
    assert_eq!(status.advisories, report.records);
    assert_eq!(status.withdrawn, 1);
    assert_eq!(status.by_ecosystem.get("Go"), Some(&9)); // 7 vulndb + 2 GHSA records naming Go modules
    assert_eq!(status.by_ecosystem.get("Debian"), Some(&2));
    assert_eq!(status.by_ecosystem.get("Hex"), Some(&1)); // unknown ecosystems are kept and counted
    assert!(status.last_import.is_some());
    assert_eq!(status.newest_modified.as_deref(), Some("2024-05-01T00:00:00Z"));
}

#[test]
fn go_vulndb_records_match_with_semver_and_v_prefix() {
    let db = loaded();
    let f = db.matches(&q(Ecosystem::Go, "github.com/beego/beego/v2", "v2.0.2")).unwrap();
    assert_eq!(ids(&f), ["GO-2022-0463", "GO-2022-0569", "GO-2022-0572"]);
    let g572 = f.iter().find(|f| f.id == "GO-2022-0572").unwrap();
    assert_eq!(g572.fixed.as_deref(), Some("2.0.3"));
    assert!(g572.aliases.contains(&"CVE-2021-30080".to_owned()));
    assert_eq!(g572.installed, "v2.0.2");
    let f = db.matches(&q(Ecosystem::Go, "github.com/beego/beego/v2", "v2.0.3")).unwrap();
    assert_eq!(ids(&f), ["GO-2022-0569"]);
    assert!(db.matches(&q(Ecosystem::Go, "github.com/beego/beego/v2", "v2.0.4")).unwrap().is_empty());
    // introduced "0" with no fix: every version of the v1 module.
    let f = db.matches(&q(Ecosystem::Go, "github.com/beego/beego", "v1.12.11")).unwrap();
    assert_eq!(ids(&f), ["GO-2022-0572"]);
    assert_eq!(f[0].fixed, None);
    // A file holding an array of records.
    let f = db.matches(&q(Ecosystem::Go, "golang.org/x/text", "v0.3.2")).unwrap();
    assert_eq!(ids(&f), ["GO-2020-0015", "GO-2021-0113"]);
    let f = db.matches(&q(Ecosystem::Go, "golang.org/x/text", "v0.3.5")).unwrap();
    assert_eq!(ids(&f), ["GO-2021-0113"]);
    assert_eq!(f[0].fixed.as_deref(), Some("0.3.7"));
    // Pseudo-versions are pre-releases of the next patch.
    let f = db.matches(&q(Ecosystem::Go, "golang.org/x/text", "v0.3.7-0.20210503195748-5c7c50ebbd4f")).unwrap();
    assert_eq!(ids(&f), ["GO-2021-0113"]);
}

#[test]
fn ghsa_records_across_language_ecosystems() {
    let db = loaded();
    let f = db.matches(&q(Ecosystem::Npm, "ms", "0.7.0")).unwrap();
    assert_eq!(ids(&f), ["GHSA-3fx5-fwvr-xrjg"]);
    assert_eq!((f[0].severity, f[0].score), (Severity::High, Some(7.5)));
    assert_eq!(f[0].aliases, ["CVE-2015-8315"]);
    assert!(db.matches(&q(Ecosystem::Npm, "ms", "0.7.1")).unwrap().is_empty());

    let resteasy = "org.jboss.resteasy:resteasy-core";
    let f = db.matches(&q(Ecosystem::Maven, resteasy, "3.11.0.Final")).unwrap();
    assert_eq!(f[0].fixed.as_deref(), Some("3.11.1.Final"));
    assert_eq!(
        db.matches(&q(Ecosystem::Maven, resteasy, "4.5.2.Final")).unwrap()[0].fixed.as_deref(),
        Some("4.5.3.Final")
    );
    // 4.0.0.Beta1 < 4.0.0 (a pre-release), and above 3.11.1.Final: between the two ranges.
    assert!(db.matches(&q(Ecosystem::Maven, resteasy, "4.0.0.Beta1")).unwrap().is_empty());
    assert!(db.matches(&q(Ecosystem::Maven, resteasy, "4.5.3.Final")).unwrap().is_empty());

    let f = db.matches(&q(Ecosystem::RubyGems, "rails", "3.0.3")).unwrap();
    assert_eq!(ids(&f), ["GHSA-24fg-p96v-hxh8"]);
    assert_eq!(f[0].severity, Severity::Medium); // database_specific.severity MODERATE, no vector
    assert!(db.matches(&q(Ecosystem::RubyGems, "rails", "2.3.11")).unwrap().is_empty());
    assert_eq!(db.matches(&q(Ecosystem::RubyGems, "rails", "2.3.10")).unwrap()[0].fixed.as_deref(), Some("2.3.11"));

    let f = db.matches(&q(Ecosystem::Go, "k8s.io/kubernetes", "v1.26.5")).unwrap();
    assert_eq!(f[0].fixed.as_deref(), Some("1.26.6"));
    assert_eq!(f[0].severity, Severity::Medium); // CVSS 3.1 6.5
    assert!(db.matches(&q(Ecosystem::Go, "k8s.io/kubernetes", "v1.26.6")).unwrap().is_empty());
}

#[test]
fn pypi_versions_lists_and_name_normalization() {
    let db = loaded();
    // PEP 503: "Pillow" is "pillow".
    let f = db.matches(&q(Ecosystem::PyPI, "Pillow", "8.4.0")).unwrap();
    assert_eq!(ids(&f), ["PYSEC-2022-10"]);
    assert_eq!(f[0].fixed.as_deref(), Some("9.0.0"));
    assert!(db.matches(&q(Ecosystem::PyPI, "pillow", "9.0.0")).unwrap().is_empty());
    // "8.4" equals the listed "8.4.0" under PEP 440.
    assert_eq!(ids(&db.matches(&q(Ecosystem::PyPI, "pillow", "8.4")).unwrap()), ["PYSEC-2022-10"]);
    let f = db.matches(&q(Ecosystem::PyPI, "AWSIoTSDK", "1.6.0")).unwrap();
    assert_eq!(ids(&f), ["GHSA-j3f7-7rmc-6wqj"]);
    assert_eq!((f[0].severity, f[0].score), (Severity::High, Some(7.1)));
    // Withdrawn records never match, whatever they say.
    assert!(db.matches(&q(Ecosystem::PyPI, "requests", "2.0.0")).unwrap().is_empty());
}

#[test]
fn debian_advisories_name_source_packages_and_releases() {
    let db = loaded();
    // libssl3 comes from the openssl source package.
    let libssl = q(Ecosystem::Debian, "libssl3", "3.0.11-1~deb12u2")
        .with_release("12")
        .with_source("openssl", Some("3.0.11-1~deb12u2".into()));
    let f = db.matches(&libssl).unwrap();
    assert_eq!(ids(&f), ["DEBIAN-CVE-2023-5678"]);
    assert_eq!((f[0].package.as_str(), f[0].matched_name.as_str()), ("libssl3", "openssl"));
    assert_eq!(f[0].fixed.as_deref(), Some("3.0.13-1~deb12u1"));
    assert_eq!(f[0].ecosystem, "Debian:12");
    assert_eq!(f[0].severity, Severity::Low);
    // The source version decides, not the binary's (binNMU) version.
    let fixed = libssl.clone().with_source("openssl", Some("3.0.13-1~deb12u1".into()));
    assert!(db.matches(&fixed).unwrap().is_empty());
    // Without the source package the binary name does not match a source advisory.
    assert!(db.matches(&q(Ecosystem::Debian, "libssl3", "3.0.9-1").with_release("12")).unwrap().is_empty());
    // The release must be the image's: Debian 11's range applies to a Debian 11 image only.
    let bullseye = q(Ecosystem::Debian, "openssl", "1.1.1w-0+deb11u1").with_release("11");
    assert_eq!(db.matches(&bullseye).unwrap()[0].fixed.as_deref(), Some("1.1.1w-0+deb11u2"));
    assert!(db.matches(&q(Ecosystem::Debian, "openssl", "1.1.1w-0+deb11u2").with_release("11")).unwrap().is_empty());
    assert!(db.matches(&q(Ecosystem::Debian, "openssl", "3.0.9-1")).unwrap().is_empty(), "unknown release");
    // Unfixed: introduced 0 only.
    let glibc = q(Ecosystem::Debian, "libc6", "2.36-9+deb12u4").with_release("12").with_source("glibc", None);
    let f = db.matches(&glibc).unwrap();
    assert_eq!(
        (ids(&f), f[0].fixed.clone(), f[0].installed.as_str()),
        (vec!["DEBIAN-CVE-2024-0001"], None, "2.36-9+deb12u4")
    );
    // Epochs.
    let ep = |v: &str| db.matches(&q(Ecosystem::Debian, "epochal", v).with_release("12")).unwrap().len();
    assert_eq!((ep("2.9-1"), ep("1:2.0-1"), ep("1:2.3-9"), ep("1:2.4-1"), ep("2:0.1")), (0, 1, 1, 0, 0));
}

#[test]
fn ubuntu_alpine_and_rpm_distributions() {
    let db = loaded();
    let f = db
        .matches(&q(Ecosystem::Ubuntu, "libc6", "2.35-0ubuntu3.1").with_release("22.04").with_source("glibc", None))
        .unwrap();
    assert_eq!(ids(&f), ["UBUNTU-CVE-2023-4911"]);
    assert_eq!((f[0].severity, f[0].score), (Severity::High, Some(7.8)));
    assert!(db.matches(&q(Ecosystem::Ubuntu, "glibc", "2.35-0ubuntu3.1").with_release("20.04")).unwrap().is_empty());

    // Alpine v3.17 advisories apply to os-release VERSION_ID 3.17.x.
    let ssl = |release: &str, v: &str| {
        db.matches(&q(Ecosystem::Alpine, "libssl3", v).with_release(release).with_source("openssl", None)).unwrap()
    };
    assert_eq!(ssl("3.17.2", "3.0.8-r0")[0].fixed.as_deref(), Some("3.0.8-r1"));
    assert!(ssl("3.17.2", "3.0.8-r1").is_empty());
    assert_eq!(ssl("3.18.0", "3.1.0-r0")[0].fixed.as_deref(), Some("3.1.0-r1"));
    assert!(ssl("3.19.1", "3.0.8-r0").is_empty());

    // rpm: epoch:version-release; AlmaLinux 9.x and RHEL 9.x images.
    let alma = |v: &str| db.matches(&q(Ecosystem::AlmaLinux, "openssl-libs", v).with_release("9.2")).unwrap();
    assert_eq!(ids(&alma("1:3.0.7-6.el9_2")), ["ALSA-2023:3722"]);
    assert_eq!(alma("1:3.0.7-6.el9_2")[0].severity, Severity::Medium);
    assert!(alma("1:3.0.7-16.el9_2").is_empty());
    assert!(alma("1:3.0.7-17.el9_2").is_empty());
    let rhel = db.matches(&q(Ecosystem::RedHat, "openssl-libs", "1:3.0.7-6.el9_2").with_release("9.2")).unwrap();
    assert_eq!((ids(&rhel), rhel[0].severity), (vec!["RHSA-2023:3722"], Severity::High));
    assert!(db.matches(&q(Ecosystem::RedHat, "openssl-libs", "1:3.0.7-6.el8").with_release("8.9")).unwrap().is_empty());
}

#[test]
fn unknown_ecosystems_are_stored_but_never_matched() {
    let db = loaded();
    let hex = Ecosystem::parse("Hex").0;
    assert!(db.matches(&q(hex, "plug", "1.0.0")).unwrap().is_empty());
    assert!(db.get("EEF-CVE-2023-0001").unwrap().is_some());
}

#[test]
fn newer_records_replace_older_ones_only() {
    let dir = tempfile::tempdir().unwrap();
    let write = |modified: &str, fixed: &str| {
        let rec = format!(
            r#"{{"id":"PYSEC-TEST-1","modified":"{modified}","affected":[{{"package":{{"ecosystem":"PyPI","name":"demo"}},
               "ranges":[{{"type":"ECOSYSTEM","events":[{{"introduced":"0"}},{{"fixed":"{fixed}"}}]}}]}}]}}"#
        );
        std::fs::write(dir.path().join("rec.json"), rec).unwrap();
    };
    let path = dir.path().join("db.sqlite");
    let mut db = AdvisoryDb::open(&path).unwrap();
    write("2024-01-01T00:00:00Z", "1.0");
    assert_eq!(db.import_dir(dir.path()).unwrap().inserted, 1);
    write("2024-02-01T00:00:00.5+01:00", "2.0");
    assert_eq!(db.import_dir(dir.path()).unwrap().replaced, 1);
    write("2023-12-31T00:00:00Z", "3.0");
    assert_eq!(db.import_dir(dir.path()).unwrap().unchanged, 1);
    drop(db);
    // Persisted: reopen and match.
    let db = AdvisoryDb::open(&path).unwrap();
    let f = db.matches(&q(Ecosystem::PyPI, "demo", "1.5")).unwrap();
    assert_eq!(f[0].fixed.as_deref(), Some("2.0"));
    assert_eq!(db.status().unwrap().newest_modified.as_deref(), Some("2024-02-01T00:00:00.5+01:00"));
}

#[test]
fn osv_all_zip_archives_import() {
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("all.zip");
    {
        let mut w = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for entry in std::fs::read_dir(data().join("go")).unwrap() {
            let p = entry.unwrap().path();
            w.start_file(p.file_name().unwrap().to_string_lossy(), opts).unwrap();
            w.write_all(&std::fs::read(&p).unwrap()).unwrap();
        }
        w.start_file("README.txt", opts).unwrap();
        w.write_all(b"not an advisory, and not *.json: ignored").unwrap();
        w.start_file("truncated.json", opts).unwrap();
        w.write_all(b"{\"id\": \"GO-").unwrap();
        w.finish().unwrap();
    }
    let mut db = AdvisoryDb::open_in_memory().unwrap();
    let report = db.import_zip(&zip_path).unwrap();
    // 5 records, the 2-record text.json array, index.json (3 ids, not records) and the truncated entry.
    assert_eq!((report.files, report.records, report.malformed_count), (8, 7, 4), "{report:?}");
    assert_eq!(ids(&db.matches(&q(Ecosystem::Go, "stdlib", "v1.4.2")).unwrap()), ["GO-2021-0157", "GO-2021-0159"]);
    // A file that is not a zip archive is an error, not a panic.
    std::fs::write(dir.path().join("bad.zip"), b"garbage").unwrap();
    assert!(matches!(db.import_zip(dir.path().join("bad.zip")), Err(DbError::Import(_))));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(AdvisoryDb::open(&path).unwrap());
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    assert!(matches!(AdvisoryDb::open(&path), Err(DbError::SchemaTooNew { found: 99, .. })));
}

#[test]
fn rematching_stored_inventories_equals_matching_each_package() {
    let db = loaded();
    let mut inventories = Vec::new();
    for i in 0..200 {
        inventories.push(vec![
            q(Ecosystem::Go, "golang.org/x/text", &format!("v0.3.{}", i % 9)),
            q(Ecosystem::Npm, "ms", &format!("0.{}.0", i % 9)),
            q(Ecosystem::Debian, "libssl3", "3.0.11-1~deb12u2").with_release("12").with_source("openssl", None),
            q(Ecosystem::PyPI, "pillow", &format!("{}.0.0", 5 + i % 6)),
        ]);
    }
    let all = rematch(&db, &inventories).unwrap();
    assert_eq!(all.len(), inventories.len());
    let mut total = 0;
    for (inv, found) in inventories.iter().zip(&all) {
        let expected: Vec<Finding> = inv.iter().flat_map(|p| db.matches(p).unwrap()).collect();
        assert_eq!(found, &expected);
        total += found.len();
    }
    assert!(total > 400, "{total}");
}
