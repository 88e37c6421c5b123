//! End-to-end: the docker CLI with the running Docker Engine (which treats 127.0.0.0/8 registries as
//! insecure, so plain HTTP works without configuration).
//!
//! Covers build (FROM scratch with a statically linked program), tag, push, image rm, pull (by tag and by
//! digest), run of the pulled image, and `docker manifest create/annotate/push/inspect --insecure`.
//! The CLI state (config.json, local manifest lists) lives in a temp `DOCKER_CONFIG`; every image the test
//! creates is removed from the engine when the test ends, pass or fail.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::Server;
use support::e2e::*;

/// The docker CLI with a private config dir; removes the images it was told about on drop.
struct Docker {
    config: tempfile::TempDir,
    images: std::cell::RefCell<Vec<String>>,
}

impl Docker {
    fn new() -> Docker {
        require(&["docker", "gcc"]);
        let config = tempfile::tempdir().unwrap();
        std::fs::write(config.path().join("config.json"), "{\"auths\":{}}").unwrap();
        let d = Docker { config, images: Default::default() };
        let r = try_run(&mut d.cmd(&["version", "--format", "{{.Server.Version}}"]));
        if !r.ok() {
            panic!("the Docker Engine is not reachable (the docker e2e tests need it): {}", r.stderr);
        }
        d
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.args(args)
            .env("DOCKER_CONFIG", self.config.path())
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CLI_HINTS", "false");
        c
    }

    fn run(&self, args: &[&str]) -> String {
        run(&mut self.cmd(args))
    }

    /// Remembers an image reference to remove at the end.
    fn track(&self, image: &str) {
        self.images.borrow_mut().push(image.to_string());
    }

    /// Builds a FROM scratch image whose `/hello` prints `message`; tags it `tag`. Returns the image id.
    fn build(&self, tag: &str, message: &str, extra_file: &str) -> String {
        let ctx = tempfile::tempdir().unwrap();
        static_hello(ctx.path(), message);
        std::fs::write(ctx.path().join("extra.txt"), extra_file).unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nCOPY hello /hello\nCOPY extra.txt /extra.txt\nCMD [\"/hello\"]\n",
        )
        .unwrap();
        self.track(tag);
        let id = self.run(&["build", "--quiet", "--tag", tag, &ctx.path().display().to_string()]);
        let id = id.trim().to_string();
        assert!(id.starts_with("sha256:"), "image id: {id}");
        self.track(&id);
        id
    }

    /// Pushes and returns the manifest digest docker printed (`TAG: digest: sha256:… size: N`).
    fn push(&self, image: &str) -> String {
        let out = self.run(&["push", image]);
        pushed_digest(&out).unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"))
    }

    fn image_exists(&self, image: &str) -> bool {
        try_run(&mut self.cmd(&["image", "inspect", image])).ok()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let images = self.images.borrow().clone();
        for i in images.iter().rev() {
            let _ = try_run(&mut self.cmd(&["image", "rm", "--force", i]));
        }
    }
}

fn pushed_digest(out: &str) -> Option<String> {
    out.lines().find_map(|l| l.split("digest: ").nth(1)).and_then(|r| r.split_whitespace().next()).map(String::from)
}

fn registry_manifest(addr: &str, repo: &str, reference: &str) -> (Value, String, String) {
    let (bytes, ct, dcd) = get_manifest(addr, repo, reference);
    assert_eq!(dcd, digest_of(&bytes), "Docker-Content-Digest is the digest of the bytes");
    (serde_json::from_slice(&bytes).unwrap(), ct, dcd)
}

#[test]
fn docker_build_push_rm_pull_run() {
    let s = Server::start();
    let docker = Docker::new();
    let repo = unique_repo("docker", "hello");
    let marker = format!("hello from {repo}");
    let v1 = format!("{}/{repo}:v1", s.addr);
    let latest = format!("{}/{repo}:latest", s.addr);

    let id = docker.build(&v1, &marker, "an extra file\n");
    docker.run(&["tag", &v1, &latest]);
    docker.track(&latest);
    let digest = docker.push(&v1);
    assert_eq!(docker.push(&latest), digest, "same image, same manifest");

    let (manifest, ct, dcd) = registry_manifest(&s.addr, &repo, "v1");
    assert_eq!(ct, DOCKER_MANIFEST);
    assert_eq!(dcd, digest);
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
    // The config blob is the image: its digest is the image id.
    assert_eq!(manifest["config"]["digest"], id.as_str());
    let config: Value = serde_json::from_slice(&get_blob(&s.addr, &repo, &id)).unwrap();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/hello"]));
    for l in manifest["layers"].as_array().unwrap() {
        let blob = get_blob(&s.addr, &repo, l["digest"].as_str().unwrap());
        assert_eq!(blob.len() as u64, l["size"].as_u64().unwrap());
    }
    let mut tags = list_tags(&s.addr, &repo);
    tags.sort();
    assert_eq!(tags, ["latest", "v1"]);

    // Remove everything locally, then pull by tag and by digest.
    docker.run(&["image", "rm", &v1, &latest]);
    assert!(!docker.image_exists(&id), "image still present after rm");
    docker.run(&["pull", &v1]);
    assert_eq!(docker.run(&["image", "inspect", "--format", "{{.Id}}", &v1]).trim(), id, "pulled image id");
    let repo_digests = docker.run(&["image", "inspect", "--format", "{{json .RepoDigests}}", &v1]);
    assert!(repo_digests.contains(&format!("{}/{repo}@{digest}", s.addr)), "RepoDigests: {repo_digests}");
    let by_digest = format!("{}/{repo}@{digest}", s.addr);
    docker.track(&by_digest);
    docker.run(&["pull", &by_digest]);

    // The pulled image runs: the binary came back intact.
    let out = docker.run(&["run", "--rm", "--network", "none", &by_digest]);
    assert_eq!(out.trim(), marker);

    // Pulling a tag that does not exist fails.
    let r = try_run(&mut docker.cmd(&["pull", &format!("{}/{repo}:missing", s.addr)])).expect_fail();
    assert!(r.stderr.contains("not found") || r.stderr.contains("manifest unknown"), "{}", r.stderr);
}

#[test]
fn docker_manifest_create_annotate_push_inspect() {
    let s = Server::start();
    let docker = Docker::new();
    let repo = unique_repo("docker", "manifest");
    let amd = format!("{}/{repo}:amd64", s.addr);
    let arm = format!("{}/{repo}:arm64", s.addr);
    let list = format!("{}/{repo}:multi", s.addr);

    docker.build(&amd, "amd64 image", "amd64\n");
    docker.build(&arm, "arm64 image", "arm64\n");
    let amd_digest = docker.push(&amd);
    let arm_digest = docker.push(&arm);
    assert_ne!(amd_digest, arm_digest);

    // `docker manifest` talks to the registry itself (not through the engine): with --insecure it tries
    // HTTPS first and falls back to plain HTTP.
    let inspected: Value = serde_json::from_str(&docker.run(&["manifest", "inspect", "--insecure", &amd])).unwrap();
    let (registry_amd, _, _) = registry_manifest(&s.addr, &repo, "amd64");
    assert_eq!(inspected, registry_amd);

    docker.run(&["manifest", "create", "--insecure", &list, &amd, &arm]);
    docker.run(&["manifest", "annotate", "--os", "linux", "--arch", "arm64", "--variant", "v8", &list, &arm]);
    let pushed = docker.run(&["manifest", "push", "--insecure", "--purge", &list]);
    let list_digest = pushed
        .lines()
        .find(|l| l.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in manifest push output: {pushed}"))
        .trim()
        .to_string();

    let (index, ct, dcd) = registry_manifest(&s.addr, &repo, "multi");
    assert_eq!(ct, DOCKER_LIST);
    assert_eq!(dcd, list_digest);
    let entries: Vec<(String, String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["digest"].as_str().unwrap().to_string(),
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["platform"]["variant"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (amd_digest.clone(), "amd64".to_string(), String::new()),
            (arm_digest.clone(), "arm64".to_string(), "v8".to_string())
        ]
    );
    for m in index["manifests"].as_array().unwrap() {
        assert_eq!(m["mediaType"], DOCKER_MANIFEST);
    }

    let inspected: Value = serde_json::from_str(&docker.run(&["manifest", "inspect", "--insecure", &list])).unwrap();
    assert_eq!(inspected, index);

    // The engine pulls the list and resolves it to its own platform (amd64 here).
    if std::env::consts::ARCH == "x86_64" {
        docker.track(&list);
        docker.run(&["pull", &list]);
        let out = docker.run(&["run", "--rm", "--network", "none", &list]);
        assert_eq!(out.trim(), "amd64 image");
    }
    // The CLI kept no local copy of the list after --purge.
    assert!(
        !Path::new(&docker.config.path().join("manifests")).exists()
            || std::fs::read_dir(docker.config.path().join("manifests")).unwrap().next().is_none(),
        "docker manifest push --purge left local state"
    );
}
