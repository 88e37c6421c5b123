//! End-to-end: the oras Python SDK (tests/clients/oras_client.py, run with `<repo>/.venv/bin/python`).
//!
//! Covers artifact push (monolithic POST+PUT and chunked POST+PATCH…+PUT uploads), pull, tag listing and
//! tag deletion; and OCI 1.1 referrers: artifacts pushed with a `subject` (artifact type from the config
//! media type, explicit `artifactType` with the empty config, a subject that does not exist) are found
//! through `GET /v2/<name>/referrers/<digest>` (plain HTTP with curl), with `artifactType` filtering,
//! the `OCI-Subject` response header, and removal from the list when the referrer is deleted.

mod support;

use std::process::Command;

use serde_json::Value;
use support::Server;
use support::e2e::*;

fn oras(command: &str, host: &str, repo: &str, workdir: &std::path::Path) -> Value {
    let out = workdir.join("..").join(format!("oras-{command}.json"));
    run(Command::new(venv_python())
        .arg(clients_dir().join("oras_client.py"))
        .args([command, host, repo])
        .arg(workdir)
        .arg(&out));
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

#[test]
fn oras_artifacts_push_pull_chunked_tags_delete() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let repo = unique_repo("oras", "artifacts");
    let small = b"a small artifact file\n".to_vec();
    // 700 KB with 256 KiB chunks: three PATCH requests.
    let big = pseudo_random(700_000, 42);
    std::fs::write(work.join("small.txt"), &small).unwrap();
    std::fs::write(work.join("big.bin"), &big).unwrap();

    let r = oras("artifacts", &s.addr, &repo, &work);
    let chunked_repo = format!("{repo}/chunked");

    for (tag, name) in [("mono", &repo), ("again", &repo), ("chunked", &chunked_repo)] {
        let p = &r["pushed"][tag];
        assert_eq!(p["status"], 201, "{tag}: manifest PUT status");
        let digest = p["digest"].as_str().unwrap_or_else(|| panic!("{tag}: no digest header"));
        let location = p["location"].as_str().unwrap_or("");
        assert!(location.ends_with(&format!("/v2/{name}/manifests/{digest}")), "{tag}: Location {location}");
        if tag == "mono" {
            continue; // deleted by the script at the end; checked below
        }
        let (bytes, ct, dcd) = get_manifest(&s.addr, name, digest);
        assert_eq!(dcd, digest);
        assert_eq!(digest_of(&bytes), digest);
        assert_eq!(ct, OCI_MANIFEST);
    }
    // Pulled files are the pushed files.
    for tag in ["mono", "chunked"] {
        assert_eq!(r["pulled"][tag]["small.txt"], digest_of(&small).as_str(), "{tag}");
        assert_eq!(r["pulled"][tag]["big.bin"], digest_of(&big).as_str(), "{tag}");
        assert_same_bytes(
            &std::fs::read(work.join(format!("pulled-{tag}/big.bin"))).unwrap(),
            &big,
            &format!("pulled {tag} big.bin"),
        );
    }
    // The registry has the blobs (the chunked repository got them through PATCH uploads).
    assert_same_bytes(&get_blob(&s.addr, &chunked_repo, &digest_of(&big)), &big, "blob uploaded in chunks");
    assert_same_bytes(&get_blob(&s.addr, &repo, &digest_of(&small)), &small, "small blob");
    let m = &r["manifests"]["mono"];
    let titles: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["annotations"]["org.opencontainers.image.title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["big.bin", "small.txt"]);
    assert_eq!(m["annotations"]["org.example.upload"], "mono");

    // Tags before and after deleting :mono (a different manifest from :again).
    assert_eq!(r["tags_before"], serde_json::json!(["again", "mono"]));
    assert_eq!(r["deleted"], serde_json::json!(["mono"]));
    assert_eq!(r["tags_after"], serde_json::json!(["again"]));
    assert_eq!(list_tags(&s.addr, &repo), ["again"]);
    let gone = get(
        &s.addr,
        &format!("{repo}/manifests/{}", r["pushed"]["mono"]["digest"].as_str().unwrap()),
        ACCEPT_ALL_MANIFESTS,
    );
    assert_eq!(gone.status, 404);
    // Blobs are not deleted with the manifest.
    assert_same_bytes(&get_blob(&s.addr, &repo, &digest_of(&big)), &big, "blob after manifest delete");
}

fn referrers(addr: &str, repo: &str, digest: &str, filter: Option<&str>) -> (HttpResponse, Value) {
    let mut path = format!("{repo}/referrers/{digest}");
    if let Some(f) = filter {
        path.push_str("?artifactType=");
        path.push_str(&f.replace('/', "%2F").replace('+', "%2B"));
    }
    let r = get(addr, &path, OCI_INDEX);
    assert_eq!(r.status, 200, "GET /v2/{path} (the registry must implement the OCI 1.1 referrers API): {}", r.text());
    let ct = r.header("Content-Type").unwrap_or("");
    assert!(ct.starts_with(OCI_INDEX), "referrers Content-Type {ct}");
    let v = r.json();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    (r, v)
}

fn referrer_digests(index: &Value) -> Vec<String> {
    let mut v: Vec<String> = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests must be an array (even empty): {index}"))
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn oras_referrers_api_finds_artifacts_with_subject() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let repo = unique_repo("oras", "referrers");

    let r = oras("referrers", &s.addr, &repo, &work);
    let target = r["target"]["digest"].as_str().unwrap().to_string();
    let sbom = r["sbom"]["digest"].as_str().unwrap().to_string();
    let sig = r["sig"]["digest"].as_str().unwrap().to_string();
    let dangling = r["dangling"]["digest"].as_str().unwrap().to_string();
    for k in ["sbom", "sig", "dangling"] {
        assert_eq!(r[k]["status"], 201, "{k}");
    }
    // A registry that supports the referrers API answers a manifest PUT with a subject with OCI-Subject.
    assert_eq!(r["sbom"]["oci_subject"], target.as_str(), "OCI-Subject header");
    assert_eq!(r["sig"]["oci_subject"], target.as_str(), "OCI-Subject header");
    assert_eq!(r["dangling"]["oci_subject"], r["dangling"]["subject"]);

    let (_, index) = referrers(&s.addr, &repo, &target, None);
    let mut want = vec![sbom.clone(), sig.clone()];
    want.sort();
    assert_eq!(referrer_digests(&index), want);
    for d in index["manifests"].as_array().unwrap() {
        let digest = d["digest"].as_str().unwrap();
        let (bytes, _, _) = get_manifest(&s.addr, &repo, digest);
        assert_eq!(d["size"].as_u64().unwrap(), bytes.len() as u64);
        assert_eq!(d["mediaType"], OCI_MANIFEST);
        let (artifact_type, kind) = if digest == sbom {
            ("application/vnd.example.sbom.v1+json", "sbom")
        } else {
            ("application/vnd.example.signature.v1", "signature")
        };
        assert_eq!(d["artifactType"], artifact_type, "{digest}");
        assert_eq!(d["annotations"]["org.example.kind"], kind, "{digest}");
    }

    // Filtering by artifactType.
    let (resp, filtered) = referrers(&s.addr, &repo, &target, Some("application/vnd.example.sbom.v1+json"));
    assert_eq!(referrer_digests(&filtered), [sbom.as_str()]);
    assert_eq!(
        resp.header("OCI-Filters-Applied"),
        Some("artifactType"),
        "filtered referrers response must say the filter was applied"
    );

    // A subject that was never pushed still lists its referrer; a manifest with none has an empty list.
    let (_, idx) = referrers(&s.addr, &repo, r["dangling"]["subject"].as_str().unwrap(), None);
    assert_eq!(referrer_digests(&idx), [dangling]);
    let (_, none) = referrers(&s.addr, &repo, &sbom, None);
    assert!(referrer_digests(&none).is_empty());

    // Deleting a referrer removes it from the list.
    let del = http("DELETE", &format!("http://{}/v2/{repo}/manifests/{sbom}", s.addr), &[], None);
    assert_eq!(del.status, 202, "DELETE manifest: {}", del.text());
    let (_, after) = referrers(&s.addr, &repo, &target, None);
    assert_eq!(referrer_digests(&after), [sig]);
}
