//! End-to-end: podman and buildah (containers/image + containers/storage) against the registry.
//!
//! Each test uses private vfs storage under a temp dir (a second, fresh storage for pulls, so nothing is
//! served from a local cache), `--isolation chroot`, and an empty auth file.
//! Covers podman build/push/pull (OCI and `--format v2s2`), buildah from/copy/commit/push/pull/mount and
//! `buildah build`, `podman manifest create/add/push --all` with two platforms and a platform-specific
//! pull, and `buildah manifest create/add/annotate/push --all` built from images already in the registry.

mod support;

use std::path::Path;

use serde_json::Value;
use support::Server;
use support::e2e::*;

fn read_digestfile(p: &Path) -> String {
    let d = std::fs::read_to_string(p).unwrap().trim().to_string();
    assert!(d.starts_with("sha256:"), "digestfile: {d}");
    d
}

/// Mounts an image of the given storage and returns the content of `file` in its root filesystem.
fn podman_image_file(c: &Containers, image: &str, file: &str) -> Vec<u8> {
    let mnt = run(&mut c.podman(&["image", "mount", image]));
    let content = std::fs::read(Path::new(mnt.trim()).join(file.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{file} in {image}: {e}"));
    run(&mut c.podman(&["image", "unmount", image]));
    content
}

/// A build context: Containerfile FROM scratch with greeting.txt and data.bin.
fn context(dir: &Path, greeting: &str, seed: u64) -> Vec<u8> {
    std::fs::write(dir.join("greeting.txt"), greeting).unwrap();
    let data = pseudo_random(100 * 1024, seed);
    std::fs::write(dir.join("data.bin"), &data).unwrap();
    std::fs::write(
        dir.join("Containerfile"),
        "FROM scratch\nCOPY greeting.txt /greeting.txt\nCOPY data.bin /opt/data.bin\n\
         LABEL org.example.entrepot=e2e\nCMD [\"/greeting.txt\"]\n",
    )
    .unwrap();
    data
}

#[test]
fn podman_build_push_pull_roundtrip() {
    let s = Server::start();
    let builder = Containers::new();
    let ctx = tempfile::tempdir().unwrap();
    let repo = unique_repo("podman", "build");
    let data = context(ctx.path(), "hello podman\n", 1);
    let ctx_path = ctx.path().display().to_string();

    run(&mut builder.podman(&[
        "build",
        "--isolation",
        "chroot",
        "--quiet",
        "-f",
        &format!("{ctx_path}/Containerfile"),
        "-t",
        "localhost/e2e-podman:v1",
        &ctx_path,
    ]));
    let digestfile = builder.dir.path().join("digest");
    let remote = format!("{}/{repo}:v1", s.addr);
    run(&mut builder.podman(&[
        "push",
        "--tls-verify=false",
        "--digestfile",
        &digestfile.display().to_string(),
        "localhost/e2e-podman:v1",
        &format!("docker://{remote}"),
    ]));
    let digest = read_digestfile(&digestfile);

    let (bytes, ct, dcd) = get_manifest(&s.addr, &repo, "v1");
    assert_eq!(dcd, digest);
    assert_eq!(digest_of(&bytes), digest);
    assert_eq!(ct, OCI_MANIFEST);
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for l in layers {
        let b = get_blob(&s.addr, &repo, l["digest"].as_str().unwrap());
        assert_eq!(b.len() as u64, l["size"].as_u64().unwrap());
    }
    let config: Value =
        serde_json::from_slice(&get_blob(&s.addr, &repo, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["config"]["Labels"]["org.example.entrepot"], "e2e");

    // The same image as Docker v2 schema 2.
    run(&mut builder.podman(&[
        "push",
        "--tls-verify=false",
        "--format",
        "v2s2",
        "localhost/e2e-podman:v1",
        &format!("docker://{}/{repo}:v2s2", s.addr),
    ]));
    let (_, ct2, _) = get_manifest(&s.addr, &repo, "v2s2");
    assert_eq!(ct2, DOCKER_MANIFEST);
    let mut tags = list_tags(&s.addr, &repo);
    tags.sort();
    assert_eq!(tags, ["v1", "v2s2"]);

    // A fresh storage pulls by tag and by digest and gets the same files.
    let puller = Containers::new();
    run(&mut puller.podman(&["pull", "--quiet", "--tls-verify=false", &remote]));
    let inspect: Value = serde_json::from_str(&run(&mut puller.podman(&["image", "inspect", &remote]))).unwrap();
    assert_eq!(inspect[0]["Digest"], digest.as_str());
    assert_eq!(podman_image_file(&puller, &remote, "/greeting.txt"), b"hello podman\n");
    assert_eq!(podman_image_file(&puller, &remote, "/opt/data.bin"), data);
    let by_digest = format!("{}/{repo}@{digest}", s.addr);
    run(&mut puller.podman(&["pull", "--quiet", "--tls-verify=false", &by_digest]));
    let ids = run(&mut puller.podman(&["images", "--quiet", "--no-trunc"]));
    assert_eq!(ids.lines().count(), 1, "one image, two names: {ids}");

    // A missing tag fails to pull.
    try_run(&mut puller.podman(&["pull", "--tls-verify=false", &format!("{}/{repo}:missing", s.addr)])).expect_fail();
}

#[test]
fn buildah_from_scratch_commit_push_pull() {
    let s = Server::start();
    let b = Containers::new();
    let tmp = tempfile::tempdir().unwrap();
    let repo = unique_repo("buildah", "scratch");
    let remote = format!("{}/{repo}:v1", s.addr);
    let file = tmp.path().join("note.txt");
    std::fs::write(&file, "made by buildah\n").unwrap();
    let big = pseudo_random(512 * 1024, 3);
    std::fs::write(tmp.path().join("big.bin"), &big).unwrap();

    let ctr = run(&mut b.buildah(&["from", "scratch"])).trim().to_string();
    run(&mut b.buildah(&["copy", &ctr, &file.display().to_string(), "/note.txt"]));
    run(&mut b.buildah(&["copy", &ctr, &tmp.path().join("big.bin").display().to_string(), "/big.bin"]));
    run(&mut b.buildah(&["config", "--label", "made-by=buildah", "--arch", "amd64", "--os", "linux", &ctr]));
    run(&mut b.buildah(&["commit", "--quiet", &ctr, "localhost/e2e-buildah:v1"]));
    let digestfile = tmp.path().join("digest");
    run(&mut b.buildah(&[
        "push",
        "--tls-verify=false",
        "--digestfile",
        &digestfile.display().to_string(),
        "localhost/e2e-buildah:v1",
        &format!("docker://{remote}"),
    ]));
    let digest = read_digestfile(&digestfile);
    let (bytes, _, dcd) = get_manifest(&s.addr, &repo, "v1");
    assert_eq!(dcd, digest);
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let config: Value =
        serde_json::from_slice(&get_blob(&s.addr, &repo, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["config"]["Labels"]["made-by"], "buildah");
    assert_eq!(config["architecture"], "amd64");

    // Pull into fresh storage, make a working container from it and read the files back.
    let p = Containers::new();
    run(&mut p.buildah(&["pull", "--quiet", "--tls-verify=false", &remote]));
    let ctr2 = run(&mut p.buildah(&["from", "--pull=false", &remote])).trim().to_string();
    let mnt = run(&mut p.buildah(&["mount", &ctr2])).trim().to_string();
    assert_eq!(std::fs::read_to_string(Path::new(&mnt).join("note.txt")).unwrap(), "made by buildah\n");
    assert_same_bytes(&std::fs::read(Path::new(&mnt).join("big.bin")).unwrap(), &big, "big.bin in the pulled image");
    run(&mut p.buildah(&["umount", &ctr2]));
    let images: Value = serde_json::from_str(&run(&mut p.buildah(&["images", "--json"]))).unwrap();
    let found = images.as_array().unwrap().iter().any(|i| i["digest"] == digest.as_str());
    assert!(found, "pulled image digest not {digest}: {images}");
    run(&mut p.buildah(&["rm", &ctr2]));
    run(&mut b.buildah(&["rm", &ctr]));

    // `buildah build` of a Containerfile FROM scratch, pushed under a second tag.
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let data = context(&ctx, "built by buildah build\n", 4);
    let ctx = ctx.display().to_string();
    run(&mut b.buildah(&[
        "build",
        "--isolation",
        "chroot",
        "--quiet",
        "-f",
        &format!("{ctx}/Containerfile"),
        "-t",
        "localhost/e2e-buildah:built",
        &ctx,
    ]));
    let df = tmp.path().join("digest-built");
    run(&mut b.buildah(&[
        "push",
        "--tls-verify=false",
        "--digestfile",
        &df.display().to_string(),
        "localhost/e2e-buildah:built",
        &format!("docker://{}/{repo}:built", s.addr),
    ]));
    let built = read_digestfile(&df);
    let (bytes, _, dcd) = get_manifest(&s.addr, &repo, "built");
    assert_eq!(dcd, built);
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "buildah build commits one layer by default (--layers=false)");
    let config: Value =
        serde_json::from_slice(&get_blob(&s.addr, &repo, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["config"]["Labels"]["org.example.entrepot"], "e2e");
    let p2 = Containers::new();
    let remote_built = format!("{}/{repo}:built", s.addr);
    run(&mut p2.podman(&["pull", "--quiet", "--tls-verify=false", &remote_built]));
    assert_same_bytes(&podman_image_file(&p2, &remote_built, "/opt/data.bin"), &data, "data.bin from buildah build");
    let mut tags = list_tags(&s.addr, &repo);
    tags.sort();
    assert_eq!(tags, ["built", "v1"]);
}

/// Builds one image per platform (different content each), returns (arch, local name, greeting).
fn build_platform_images(c: &Containers, ctx: &Path) -> Vec<(String, String, String)> {
    let mut out = vec![];
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let dir = ctx.join(arch);
        std::fs::create_dir_all(&dir).unwrap();
        let greeting = format!("hello linux/{arch}\n");
        context(&dir, &greeting, 10 + i as u64);
        let name = format!("localhost/e2e-multi:{arch}");
        let d = dir.display().to_string();
        // --no-cache: podman's build cache ignores --platform for FROM scratch and would reuse the
        // first platform's image for the second.
        run(&mut c.podman(&[
            "build",
            "--isolation",
            "chroot",
            "--quiet",
            "--no-cache",
            "--platform",
            &format!("linux/{arch}"),
            "-f",
            &format!("{d}/Containerfile"),
            "-t",
            &name,
            &d,
        ]));
        out.push((arch.to_string(), name, greeting));
    }
    out
}

/// Checks the index at `repo:tag`; returns arch -> child manifest digest.
fn check_index(addr: &str, repo: &str, tag: &str, digest: &str) -> Vec<(String, String)> {
    let (bytes, ct, dcd) = get_manifest(addr, repo, tag);
    assert_eq!(dcd, digest);
    assert!(ct == OCI_INDEX || ct == DOCKER_LIST, "index content type {ct}");
    let index: Value = serde_json::from_slice(&bytes).unwrap();
    let mut children = vec![];
    for m in index["manifests"].as_array().unwrap() {
        let arch = m["platform"]["architecture"].as_str().unwrap().to_string();
        let d = m["digest"].as_str().unwrap().to_string();
        let (child, _, cdcd) = get_manifest(addr, repo, &d);
        assert_eq!(cdcd, d);
        assert_eq!(child.len() as u64, m["size"].as_u64().unwrap());
        let child: Value = serde_json::from_slice(&child).unwrap();
        let config: Value =
            serde_json::from_slice(&get_blob(addr, repo, child["config"]["digest"].as_str().unwrap())).unwrap();
        assert_eq!(config["architecture"], arch.as_str(), "config of {d}");
        children.push((arch, d));
    }
    children.sort();
    assert_eq!(children.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["amd64", "arm64"]);
    children
}

#[test]
fn podman_manifest_create_add_push_all() {
    let s = Server::start();
    let c = Containers::new();
    let ctx = tempfile::tempdir().unwrap();
    let repo = unique_repo("podman", "manifest");
    let images = build_platform_images(&c, ctx.path());

    run(&mut c.podman(&["manifest", "create", "localhost/e2e-list"]));
    for (_, name, _) in &images {
        run(&mut c.podman(&["manifest", "add", "localhost/e2e-list", &format!("containers-storage:{name}")]));
    }
    let digestfile = c.dir.path().join("list-digest");
    let remote = format!("{}/{repo}:multi", s.addr);
    run(&mut c.podman(&[
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "--digestfile",
        &digestfile.display().to_string(),
        "localhost/e2e-list",
        &format!("docker://{remote}"),
    ]));
    let list_digest = read_digestfile(&digestfile);
    let children = check_index(&s.addr, &repo, "multi", &list_digest);

    // A fresh storage pulls each platform from the list and gets that platform's files.
    for (arch, child_digest) in &children {
        let p = Containers::new();
        run(&mut p.podman(&["pull", "--quiet", "--tls-verify=false", "--platform", &format!("linux/{arch}"), &remote]));
        let inspect: Value = serde_json::from_str(&run(&mut p.podman(&["image", "inspect", &remote]))).unwrap();
        assert_eq!(inspect[0]["Architecture"], arch.as_str());
        let digests = inspect[0]["RepoDigests"].to_string();
        assert!(digests.contains(child_digest.as_str()), "RepoDigests {digests} lacks {child_digest}");
        assert_eq!(podman_image_file(&p, &remote, "/greeting.txt"), format!("hello linux/{arch}\n").as_bytes());
    }
}

#[test]
fn buildah_manifest_from_registry_images_push_all() {
    let s = Server::start();
    let c = Containers::new();
    let ctx = tempfile::tempdir().unwrap();
    let repo = unique_repo("buildah", "manifest");
    let images = build_platform_images(&c, ctx.path());

    // Push each platform image by itself first.
    let mut pushed = vec![];
    for (arch, name, _) in &images {
        let df = c.dir.path().join(format!("digest-{arch}"));
        run(&mut c.buildah(&[
            "push",
            "--tls-verify=false",
            "--digestfile",
            &df.display().to_string(),
            name,
            &format!("docker://{}/{repo}:{arch}", s.addr),
        ]));
        pushed.push((arch.clone(), read_digestfile(&df)));
    }

    // Then a list made of the registry's images (buildah reads their manifests from the registry).
    run(&mut c.buildah(&["manifest", "create", "localhost/e2e-blist"]));
    for (arch, _) in &pushed {
        run(&mut c.buildah(&[
            "manifest",
            "add",
            "--tls-verify=false",
            "localhost/e2e-blist",
            &format!("docker://{}/{repo}:{arch}", s.addr),
        ]));
    }
    run(&mut c.buildah(&[
        "manifest",
        "annotate",
        "--annotation",
        "org.example.note=arm",
        "localhost/e2e-blist",
        &pushed[1].1,
    ]));
    let df = c.dir.path().join("blist-digest");
    run(&mut c.buildah(&[
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "--digestfile",
        &df.display().to_string(),
        "localhost/e2e-blist",
        &format!("docker://{}/{repo}:multi", s.addr),
    ]));
    let list_digest = read_digestfile(&df);
    let mut children = check_index(&s.addr, &repo, "multi", &list_digest);
    children.sort();
    pushed.sort();
    assert_eq!(children, pushed, "the list references the pushed images");
    let (bytes, _, _) = get_manifest(&s.addr, &repo, "multi");
    let index: Value = serde_json::from_slice(&bytes).unwrap();
    let arm = index["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == "arm64").unwrap();
    assert_eq!(arm["annotations"]["org.example.note"], "arm");

    let mut tags = list_tags(&s.addr, &repo);
    tags.sort();
    assert_eq!(tags, ["amd64", "arm64", "multi"]);
}
