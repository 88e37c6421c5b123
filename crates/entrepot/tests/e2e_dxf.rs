//! End-to-end: python-dxf (tests/clients/dxf_client.py, run with `<repo>/.venv/bin/python`).
//!
//! Covers blob push from a file (monolithic PUT) and from an iterator (PUT with
//! `Transfer-Encoding: chunked`, chunk size from `DXF_CHUNK_SIZE`), pull with digest verification, blob
//! size (HEAD), aliases (Docker v2s2 manifests whose config is a plain blob: set/get/list/paged list/
//! delete), cross-repository mount (and a mount of a missing blob falling back to an upload), blob delete,
//! and the catalog in one request and page by page.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::Server;
use support::e2e::*;

#[test]
fn dxf_blobs_aliases_mount_delete_catalog() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let repo = unique_repo("dxf", "blobs");
    let small = pseudo_random(1000, 5);
    let big = pseudo_random(300_000, 6);
    std::fs::write(work.join("small.bin"), &small).unwrap();
    std::fs::write(work.join("big.bin"), &big).unwrap();
    let (ds, db) = (digest_of(&small), digest_of(&big));

    let out = tmp.path().join("dxf.json");
    run(Command::new(venv_python())
        .arg(clients_dir().join("dxf_client.py"))
        .args([&s.addr, &repo])
        .arg(&work)
        .arg(&out)
        .env("DXF_CHUNK_SIZE", "65536"));
    let r: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();

    // Blob push and pull.
    assert_eq!(r["push_small"], ds.as_str());
    assert_eq!(r["push_big"], db.as_str());
    assert_eq!(r["chunks_sent"], 5, "300000 bytes in 64 KiB chunks");
    assert_eq!(r["push_big_again"], db.as_str());
    assert_eq!(r["pull_big"], json!({"size": 300_000, "sha256": db}));
    assert_eq!(r["pull_small"]["sha256"], ds.as_str());
    assert_eq!(r["blob_size_small"], 1000);
    assert_same_bytes(&get_blob(&s.addr, &repo, &db), &big, "big blob");

    // Aliases.
    assert_eq!(r["get_alias_v1"], json!([ds, db]));
    assert_eq!(r["get_alias_v2"], json!([db]));
    assert_eq!(r["digest_v1"], ds.as_str(), "dxf's alias digest is its config (first) blob");
    assert_eq!(r["aliases"], json!(["v1", "v2"]));
    assert_eq!(r["aliases_paged"], json!(["v1", "v2"]));
    assert_eq!(r["del_alias_v1"], json!([ds, db]));
    assert_eq!(r["aliases_after"], json!(["v2"]));
    assert_eq!(r["v1_after_delete"], 404);
    assert_eq!(list_tags(&s.addr, &repo), ["v2"]);
    let (bytes, ct, _) = get_manifest(&s.addr, &repo, "v2");
    assert_eq!(ct, DOCKER_MANIFEST);
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m["config"]["digest"], db.as_str());
    assert_eq!(m["layers"][0]["mediaType"], "application/octet-stream");

    // Mount.
    let mounted = format!("{repo}/mounted");
    assert_eq!(r["mount"], db.as_str());
    assert_eq!(r["mounted_size"], 300_000);
    assert_eq!(r["mounted_sha256"], db.as_str());
    assert_same_bytes(&get_blob(&s.addr, &mounted, &db), &big, "mounted blob");
    assert_eq!(r["mounted_aliases"], json!(["m1"]));
    assert_eq!(
        r["mount_missing"], "DXFMountFailed",
        "mounting a missing blob must not create it (202 + upload session instead of 201)"
    );

    // Delete.
    assert_eq!(r["small_after_delete"], 404);
    let gone = get(&s.addr, &format!("{repo}/blobs/{ds}"), "");
    assert_eq!(gone.status, 404);

    // Catalog: both repositories, sorted, the same whole or paged.
    let repos: Vec<String> = serde_json::from_value(r["repos"].clone()).unwrap();
    assert!(repos.contains(&repo) && repos.contains(&mounted), "catalog: {repos:?}");
    let mut sorted = repos.clone();
    sorted.sort();
    assert_eq!(repos, sorted, "catalog is in lexical order");
    assert_eq!(r["repos_paged"], r["repos"], "paged catalog (n=1) equals the full catalog");
    if s.managed() {
        assert_eq!(repos, [repo.clone(), mounted.clone()]);
    }
}
