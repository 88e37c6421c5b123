//! End-to-end: skopeo (containers/image) against the registry, with umoci-made OCI layouts as sources.
//!
//! Covers copy in both directions (`oci:` layout, `dir:`, registry to registry), `--preserve-digests`
//! byte-identical round trips, `--all` multi-arch, `--format v2s2`, zstd layers, inspect (`--raw`,
//! `--config`), list-tags and delete.

mod support;

use serde_json::Value;
use support::Server;
use support::e2e::*;

fn docker_ref(s: &Server, repo: &str, tag: &str) -> String {
    format!("docker://{}/{repo}:{tag}", s.addr)
}

/// A one-image layout with a small text file and a 200 KiB binary file, tagged `v1`.
fn sample_layout(dir: &std::path::Path, marker: &str) -> (Layout, String) {
    let data = pseudo_random(200 * 1024, marker.len() as u64 + 11);
    let d = umoci_image(
        dir,
        "v1",
        "amd64",
        &[("hello.txt", format!("hello {marker}\n").as_bytes(), 0o644), ("data.bin", &data, 0o600)],
        &["/hello"],
    );
    (Layout::new(dir), d)
}

#[test]
fn skopeo_oci_layout_round_trip_is_byte_identical() {
    let s = Server::start();
    let sk = Skopeo::new();
    let tmp = tempfile::tempdir().unwrap();
    let repo = unique_repo("skopeo", "roundtrip");
    let (layout, mdigest) = sample_layout(&tmp.path().join("src"), "roundtrip");
    let src = format!("oci:{}:v1", layout.path.display());

    sk.run(&["copy", "--dest-tls-verify=false", "--preserve-digests", &src, &docker_ref(&s, &repo, "v1")]);

    // The registry serves exactly the bytes of the layout: manifest, config, layers.
    let (bytes, ct, dcd) = get_manifest(&s.addr, &repo, "v1");
    assert_same_bytes(&bytes, &layout.blob(&mdigest), "manifest bytes changed on push");
    assert_eq!(dcd, mdigest);
    assert_eq!(ct, OCI_MANIFEST);
    let (by_digest, _, _) = get_manifest(&s.addr, &repo, &mdigest);
    assert_eq!(by_digest, bytes);
    let reachable = layout.reachable(&mdigest);
    assert_eq!(reachable.len(), 3, "manifest + config + one layer");
    for d in &reachable[1..] {
        assert_same_bytes(&get_blob(&s.addr, &repo, d), &layout.blob(d), &format!("blob {d}"));
    }
    let raw = sk.run(&["inspect", "--tls-verify=false", "--raw", &docker_ref(&s, &repo, "v1")]);
    assert_eq!(raw.as_bytes(), &bytes[..], "skopeo inspect --raw");

    // Registry -> OCI layout: same digests, same bytes.
    let out = tmp.path().join("out");
    sk.run(&[
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &docker_ref(&s, &repo, "v1"),
        &format!("oci:{}:back", out.display()),
    ]);
    let back = Layout::new(&out);
    assert_eq!(back.digest("back"), mdigest);
    for d in &reachable {
        assert_same_bytes(&back.blob(d), &layout.blob(d), &format!("blob {d} after pull"));
    }

    // Registry -> dir: transport keeps the manifest and blobs byte-exact too.
    let dir = tmp.path().join("dir");
    sk.run(&[
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &docker_ref(&s, &repo, "v1"),
        &format!("dir:{}", dir.display()),
    ]);
    assert_eq!(std::fs::read(dir.join("manifest.json")).unwrap(), bytes);
    for d in &reachable[1..] {
        assert_same_bytes(&std::fs::read(dir.join(&d[7..])).unwrap(), &layout.blob(d), &format!("dir: blob {d}"));
    }

    // dir: -> registry under another name gives the same manifest digest.
    let repo2 = unique_repo("skopeo", "fromdir");
    sk.run(&[
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("dir:{}", dir.display()),
        &docker_ref(&s, &repo2, "copied"),
    ]);
    let (bytes2, _, dcd2) = get_manifest(&s.addr, &repo2, "copied");
    assert_eq!(dcd2, mdigest);
    assert_eq!(bytes2, bytes);
}

#[test]
fn skopeo_inspect_config_and_list_tags() {
    let s = Server::start();
    let sk = Skopeo::new();
    let tmp = tempfile::tempdir().unwrap();
    let repo = unique_repo("skopeo", "inspect");
    let (layout, mdigest) = sample_layout(&tmp.path().join("src"), "inspect");
    let manifest: Value = serde_json::from_slice(&layout.blob(&mdigest)).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();

    sk.run(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.path.display()),
        &docker_ref(&s, &repo, "v1"),
    ]);
    // Registry to registry, same repository: a second tag on the same manifest.
    sk.run(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &docker_ref(&s, &repo, "v1"),
        &docker_ref(&s, &repo, "v2"),
    ]);
    // A different image under a third tag.
    let (other, other_digest) = sample_layout(&tmp.path().join("other"), "another image");
    sk.run(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", other.path.display()),
        &docker_ref(&s, &repo, "0.3-beta"),
    ]);

    let inspect: Value =
        serde_json::from_str(&sk.run(&["inspect", "--tls-verify=false", &docker_ref(&s, &repo, "v2")])).unwrap();
    assert_eq!(inspect["Digest"], mdigest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    let mut repo_tags: Vec<String> =
        inspect["RepoTags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    repo_tags.sort();
    assert_eq!(repo_tags, ["0.3-beta", "v1", "v2"]);

    // --config --raw is the config blob, byte for byte; --config parses as an image config.
    let raw_config = sk.run(&["inspect", "--tls-verify=false", "--config", "--raw", &docker_ref(&s, &repo, "v1")]);
    assert_same_bytes(raw_config.as_bytes(), &layout.blob(&config_digest), "inspect --config --raw");
    let config: Value =
        serde_json::from_str(&sk.run(&["inspect", "--tls-verify=false", "--config", &docker_ref(&s, &repo, "v1")]))
            .unwrap();
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/hello"]));

    let tags: Value =
        serde_json::from_str(&sk.run(&["list-tags", "--tls-verify=false", &format!("docker://{}/{repo}", s.addr)]))
            .unwrap();
    assert_eq!(tags["Repository"], format!("{}/{repo}", s.addr).as_str());
    let mut listed: Vec<&str> = tags["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    listed.sort();
    assert_eq!(listed, ["0.3-beta", "v1", "v2"]);
    assert_eq!(get_manifest(&s.addr, &repo, "0.3-beta").2, other_digest);

    // A tag that does not exist: inspect fails and says so.
    let r = sk.try_run(&["inspect", "--tls-verify=false", &docker_ref(&s, &repo, "nope")]).expect_fail();
    assert!(
        r.stderr.contains("manifest unknown") || r.stderr.contains("not found"),
        "unexpected error for a missing tag: {}",
        r.stderr
    );
}

#[test]
fn skopeo_copy_all_multi_arch_index() {
    let s = Server::start();
    let sk = Skopeo::new();
    let tmp = tempfile::tempdir().unwrap();
    let repo = unique_repo("skopeo", "multiarch");
    let src = tmp.path().join("src");
    let index_digest = multi_arch_layout(&src, "multi");
    let layout = Layout::new(&src);
    let amd64 = layout.digest("amd64");
    let arm64 = layout.digest("arm64");

    sk.run(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", src.display()),
        &docker_ref(&s, &repo, "multi"),
    ]);

    let (bytes, ct, dcd) = get_manifest(&s.addr, &repo, "multi");
    assert_eq!(ct, OCI_INDEX);
    assert_eq!(dcd, index_digest);
    assert_same_bytes(&bytes, &layout.blob(&index_digest), "index bytes changed");
    for d in layout.reachable(&index_digest).iter().skip(1) {
        if *d == amd64 || *d == arm64 {
            let (m, ct, dcd) = get_manifest(&s.addr, &repo, d);
            assert_eq!(ct, OCI_MANIFEST);
            assert_eq!(&dcd, d);
            assert_same_bytes(&m, &layout.blob(d), &format!("manifest {d}"));
        } else {
            assert_same_bytes(&get_blob(&s.addr, &repo, d), &layout.blob(d), &format!("blob {d}"));
        }
    }

    // Inspect resolves the index to the requested platform.
    for (arch, want) in [("arm64", &arm64), ("amd64", &amd64)] {
        let v: Value = serde_json::from_str(&sk.run(&[
            "--override-arch",
            arch,
            "--override-os",
            "linux",
            "inspect",
            "--tls-verify=false",
            &docker_ref(&s, &repo, "multi"),
        ]))
        .unwrap();
        // skopeo reports the digest of what the tag points at (the index) …
        assert_eq!(v["Digest"], index_digest.as_str(), "{arch}");
        // … and the platform image's details.
        assert_eq!(v["Architecture"], arch);
        let m: Value = serde_json::from_slice(&layout.blob(want)).unwrap();
        assert_eq!(v["Layers"], serde_json::json!([m["layers"][0]["digest"]]));
    }
    let raw = sk.run(&["inspect", "--raw", "--tls-verify=false", &docker_ref(&s, &repo, "multi")]);
    assert_eq!(raw.as_bytes(), &bytes[..]);

    // --all back into a fresh layout: every blob identical.
    let out = tmp.path().join("out");
    sk.run(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &docker_ref(&s, &repo, "multi"),
        &format!("oci:{}:multi", out.display()),
    ]);
    let back = Layout::new(&out);
    assert_eq!(back.digest("multi"), index_digest);
    for d in layout.reachable(&index_digest) {
        assert_same_bytes(&back.blob(&d), &layout.blob(&d), &format!("blob {d} after pull --all"));
    }

    // Without --all, one platform is chosen.
    let one = tmp.path().join("one");
    sk.run(&[
        "--override-arch",
        "arm64",
        "copy",
        "--src-tls-verify=false",
        &docker_ref(&s, &repo, "multi"),
        &format!("oci:{}:arm", one.display()),
    ]);
    let one = Layout::new(&one);
    assert_eq!(one.digest("arm"), arm64);
    let m: Value = serde_json::from_slice(&one.blob(&arm64)).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
}

#[test]
fn skopeo_delete_by_tag_and_by_digest() {
    let s = Server::start();
    let sk = Skopeo::new();
    let tmp = tempfile::tempdir().unwrap();
    let repo = unique_repo("skopeo", "delete");
    let (a, a_digest) = sample_layout(&tmp.path().join("a"), "delete-a");
    let (c, c_digest) = sample_layout(&tmp.path().join("c"), "delete-c-other");
    for (l, tag) in [(&a, "a"), (&a, "b"), (&c, "c")] {
        sk.run(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", l.path.display()),
            &docker_ref(&s, &repo, tag),
        ]);
    }
    let mut tags = list_tags(&s.addr, &repo);
    tags.sort();
    assert_eq!(tags, ["a", "b", "c"]);

    // Deleting by tag deletes the manifest the tag points at: every tag on it goes.
    sk.run(&["delete", "--tls-verify=false", &docker_ref(&s, &repo, "a")]);
    for reference in ["a", "b", a_digest.as_str()] {
        let r = get(&s.addr, &format!("{repo}/manifests/{reference}"), ACCEPT_ALL_MANIFESTS);
        assert_eq!(r.status, 404, "{reference} still served after delete");
    }
    assert_eq!(list_tags(&s.addr, &repo), ["c"]);
    sk.try_run(&["inspect", "--tls-verify=false", &docker_ref(&s, &repo, "b")]).expect_fail();

    // Delete by digest.
    sk.run(&["delete", "--tls-verify=false", &format!("docker://{}/{repo}@{c_digest}", s.addr)]);
    let r = get(&s.addr, &format!("{repo}/manifests/c"), ACCEPT_ALL_MANIFESTS);
    assert_eq!(r.status, 404);
    assert!(list_tags(&s.addr, &repo).is_empty());
    // Deleting again fails.
    sk.try_run(&["delete", "--tls-verify=false", &format!("docker://{}/{repo}@{c_digest}", s.addr)]).expect_fail();
}

#[test]
fn skopeo_docker_v2s2_and_zstd_conversions() {
    let s = Server::start();
    let sk = Skopeo::new();
    let tmp = tempfile::tempdir().unwrap();
    let repo = unique_repo("skopeo", "formats");
    let (layout, mdigest) = sample_layout(&tmp.path().join("src"), "formats");
    let oci_manifest: Value = serde_json::from_slice(&layout.blob(&mdigest)).unwrap();
    let src = format!("oci:{}:v1", layout.path.display());

    // OCI -> Docker v2 schema 2 (skopeo converts the manifest; layers stay the same gzip blobs).
    sk.run(&["copy", "--dest-tls-verify=false", "--format", "v2s2", &src, &docker_ref(&s, &repo, "v2s2")]);
    let (bytes, ct, dcd) = get_manifest(&s.addr, &repo, "v2s2");
    assert_eq!(ct, DOCKER_MANIFEST);
    assert_eq!(dcd, digest_of(&bytes));
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m["mediaType"], DOCKER_MANIFEST);
    assert_eq!(m["layers"][0]["digest"], oci_manifest["layers"][0]["digest"], "layer blob reused");
    assert_eq!(m["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
    // Pull it back into a dir: exactly the same manifest bytes.
    let dir = tmp.path().join("v2s2");
    sk.run(&["copy", "--src-tls-verify=false", &docker_ref(&s, &repo, "v2s2"), &format!("dir:{}", dir.display())]);
    assert_eq!(std::fs::read(dir.join("manifest.json")).unwrap(), bytes);

    // zstd-compressed layers, in another repository and with a fresh blob-info cache: otherwise
    // skopeo finds the gzip layer already in the registry (directly, or as a cross-repository mount
    // candidate from its cache) and reuses it instead of recompressing.
    let zrepo = unique_repo("skopeo", "zstd");
    let sk = Skopeo::new();
    sk.run(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd",
        &src,
        &docker_ref(&s, &zrepo, "zstd"),
    ]);
    let (zbytes, zct, zdcd) = get_manifest(&s.addr, &zrepo, "zstd");
    assert_eq!(zct, OCI_MANIFEST);
    let zm: Value = serde_json::from_slice(&zbytes).unwrap();
    assert_eq!(zm["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
    let zlayer = zm["layers"][0]["digest"].as_str().unwrap();
    assert_ne!(zlayer, oci_manifest["layers"][0]["digest"].as_str().unwrap());
    let blob = get_blob(&s.addr, &zrepo, zlayer);
    assert_eq!(&blob[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    let out = tmp.path().join("zout");
    sk.run(&[
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &docker_ref(&s, &zrepo, "zstd"),
        &format!("oci:{}:z", out.display()),
    ]);
    let back = Layout::new(&out);
    assert_eq!(back.digest("z"), zdcd);
    assert_same_bytes(&back.blob(zlayer), &blob, "zstd layer after pull");

    assert_eq!(list_tags(&s.addr, &repo), ["v2s2"]);
    assert_eq!(list_tags(&s.addr, &zrepo), ["zstd"]);
}
