//! End-to-end: the container image.
//!
//! Builds the image with `scripts/docker-image` from the binary of this test run (set
//! `ENTREPOT_TEST_IMAGE_RELEASE=1` for the static release build users get), or uses the prebuilt image named by
//! `ENTREPOT_TEST_IMAGE`), checks its configuration (entrypoint, environment, exposed port, volume), runs
//! it with a named volume published on 127.0.0.1 only, pushes a small image with the docker engine,
//! pulls it back and runs it, then stops the container (it must exit 0 on SIGTERM), starts it again,
//! and finally replaces it with a new container on the same volume: after each step the pushed image
//! must still be served and pullable. The container, the volume and every image the test made are
//! removed at the end, pass or fail. Without docker (or without a reachable engine) the test fails.

mod support;

use std::cell::RefCell;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::e2e::*;

/// How long building the image (a release build of the workspace) may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(40 * 60);

/// The docker CLI with a private config directory; removes what it was told about on drop.
struct Docker {
    config: tempfile::TempDir,
    containers: RefCell<Vec<String>>,
    volumes: RefCell<Vec<String>>,
    images: RefCell<Vec<String>>,
}

impl Docker {
    fn new() -> Docker {
        require(&["docker", "curl", "gcc"]);
        let config = tempfile::tempdir().expect("tempdir");
        std::fs::write(config.path().join("config.json"), "{\"auths\":{}}").expect("config.json");
        let d =
            Docker { config, containers: Default::default(), volumes: Default::default(), images: Default::default() };
        let r = try_run(&mut d.cmd(&["version", "--format", "{{.Server.Version}}"]));
        if !r.ok() {
            panic!("the Docker Engine is not reachable (the container e2e test needs it): {}", r.stderr);
        }
        d
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.args(args).env("DOCKER_CONFIG", self.config.path()).env("DOCKER_CLI_HINTS", "false");
        if std::env::var_os("DOCKER_BUILDKIT").is_none() {
            // The engine here has no buildx plugin; the legacy builder needs no image to pull.
            c.env("DOCKER_BUILDKIT", "0");
        }
        c
    }

    fn run(&self, args: &[&str]) -> String {
        run(&mut self.cmd(args)).trim().to_string()
    }

    fn inspect(&self, what: &str, name: &str) -> Value {
        let out = self.run(&[what, "inspect", name]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("docker {what} inspect: {e}: {out}"));
        v[0].clone()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = self.cmd(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        for c in self.containers.borrow().iter() {
            quiet(&["rm", "--force", "--volumes", c]);
        }
        for v in self.volumes.borrow().iter() {
            quiet(&["volume", "rm", "--force", v]);
        }
        for i in self.images.borrow().iter().rev() {
            quiet(&["image", "rm", "--force", i]);
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Builds the image with the repository's script (or returns the prebuilt one); `true` if the test
/// built it and so must remove it.
fn entrepot_image(docker: &Docker) -> (String, bool) {
    if let Ok(image) = std::env::var("ENTREPOT_TEST_IMAGE")
        && !image.is_empty()
    {
        let r = try_run(&mut docker.cmd(&["image", "inspect", &image]));
        assert!(r.ok(), "ENTREPOT_TEST_IMAGE={image} is not an image the engine has: {}", r.stderr);
        return (image, false);
    }
    let image = format!("entrepot:{}", unique("e2e"));
    let script = repo_root().join("scripts/docker-image");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg(&image)
        .env("DOCKER_CONFIG", docker.config.path())
        // The binary this test run built (debug, dynamically linked: its libraries go into the image),
        // rather than a second, static release build of the workspace that would cost CI minutes.
        // `ENTREPOT_TEST_IMAGE_RELEASE=1` builds the image as users do (static release).
        .env(
            "ENTREPOT_IMAGE_BINARY",
            if std::env::var("ENTREPOT_TEST_IMAGE_RELEASE").as_deref() == Ok("1") {
                String::new()
            } else {
                support::entrepot_bin().display().to_string()
            },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    docker.images.borrow_mut().push(image.clone());
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scripts/docker-image took longer than {BUILD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "scripts/docker-image {image} failed: {status}");
    eprintln!("built {image} in {:.0} s", started.elapsed().as_secs_f64());
    (image, true)
}

/// A running registry container and the host address docker published its port 5000 on.
struct Registry {
    name: String,
    addr: String,
}

/// Starts a registry container on `volume`, publishing port 5000 on an ephemeral 127.0.0.1 port.
fn start_registry(docker: &Docker, image: &str, volume: &str) -> Registry {
    let name = unique("entrepot-e2e");
    docker.containers.borrow_mut().push(name.clone());
    docker.run(&[
        "run",
        "--pull",
        "never",
        "--detach",
        "--name",
        &name,
        "--publish",
        "127.0.0.1::5000",
        "--volume",
        &format!("{volume}:/var/lib/entrepot"),
        image,
    ]);
    let addr = wait_ready(docker, &name, 1);
    Registry { name, addr }
}

/// Waits until the container has printed its `listening on` line `starts` times (it is printed once per
/// start) and the published port answers `/v2/`; returns `127.0.0.1:PORT`.
fn wait_ready(docker: &Docker, name: &str, starts: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = try_run(&mut docker.cmd(&["logs", name]));
        let out = logs.stdout_str();
        let listening = out.lines().filter(|l| l.trim() == "listening on 0.0.0.0:5000").count();
        if listening >= starts {
            let port = docker.run(&["port", name, "5000/tcp"]);
            // `127.0.0.1:49153` (one line per published address; only 127.0.0.1 is published).
            let addr = port.lines().next().unwrap_or_default().trim().to_string();
            assert!(addr.starts_with("127.0.0.1:"), "published on {port:?}, expected 127.0.0.1 only");
            let r = http("GET", &format!("http://{addr}/v2/"), &[], None);
            if r.status == 200 {
                assert_eq!(r.header("Docker-Distribution-Api-Version"), Some("registry/2.0"));
                return addr;
            }
        }
        let state = docker.inspect("container", name);
        if state["State"]["Running"] != Value::Bool(true) && state["State"]["Restarting"] != Value::Bool(true) {
            panic!(
                "container {name} is not running ({}):\n--- stdout ---\n{out}\n--- stderr ---\n{}",
                state["State"], logs.stderr
            );
        }
        if Instant::now() > deadline {
            panic!("container {name} did not become ready:\n--- stdout ---\n{out}\n--- stderr ---\n{}", logs.stderr);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The manifest digest `docker push` printed (`TAG: digest: sha256:… size: N`).
fn pushed_digest(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(String::from)
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"))
}

/// Checks the registry at `addr` serves `repo:tag` as `digest`, with every blob it references whole.
fn assert_served(addr: &str, repo: &str, tag: &str, digest: &str) {
    assert_eq!(list_tags(addr, repo), vec![tag.to_string()], "tags of {repo}");
    let (bytes, content_type, dcd) = get_manifest(addr, repo, tag);
    assert_eq!(dcd, digest, "{repo}:{tag} resolves to the pushed digest");
    assert_eq!(digest_of(&bytes), digest, "the manifest bytes hash to their digest");
    assert_eq!(content_type, DOCKER_MANIFEST, "docker pushes a schema 2 manifest");
    let m: Value = serde_json::from_slice(&bytes).expect("manifest JSON");
    let mut blobs = vec![m["config"]["digest"].as_str().expect("config digest").to_string()];
    blobs.extend(
        m["layers"].as_array().expect("layers").iter().map(|l| l["digest"].as_str().expect("digest").to_string()),
    );
    for b in blobs {
        get_blob(addr, repo, &b);
    }
}

/// Removes every local copy of image `id` (all its tags, so no layer stays cached), pulls `reference` from
/// the registry and runs it; it must print `marker`.
fn pull_and_run(docker: &Docker, id: &str, reference: &str, marker: &str) {
    let _ = try_run(&mut docker.cmd(&["image", "rm", "--force", id]));
    assert!(!try_run(&mut docker.cmd(&["image", "inspect", id])).ok(), "image {id} is still in the engine");
    docker.images.borrow_mut().push(reference.to_string());
    docker.run(&["pull", reference]);
    assert_eq!(docker.inspect("image", reference)["Id"], Value::from(id), "the pulled image is the pushed one");
    let out = docker.run(&["run", "--rm", "--pull", "never", "--network", "none", reference]);
    assert_eq!(out, marker, "the pulled image runs");
}

#[test]
fn container_image_push_pull_restart_persists() {
    let docker = Docker::new();
    let (image, built) = entrepot_image(&docker);
    if !built {
        eprintln!("using the prebuilt image {image}");
    }

    // The image's configuration.
    let config = &docker.inspect("image", &image)["Config"];
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/local/bin/entrepot", "serve"]), "{config}");
    let env: Vec<&str> = config["Env"].as_array().expect("Env").iter().filter_map(Value::as_str).collect();
    assert!(env.contains(&"ENTREPOT_LISTEN=0.0.0.0:5000"), "{env:?}");
    assert!(env.contains(&"ENTREPOT_DATA_DIR=/var/lib/entrepot"), "{env:?}");
    assert!(config["ExposedPorts"].get("5000/tcp").is_some(), "{config}");
    assert!(config["Volumes"].get("/var/lib/entrepot").is_some(), "{config}");
    let version = docker.run(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "none",
        "--entrypoint",
        "/usr/local/bin/entrepot",
        &image,
        "--version",
    ]);
    assert!(version.starts_with("entrepot "), "entrepot --version in the image: {version:?}");

    let volume = unique("entrepot-e2e-data");
    docker.volumes.borrow_mut().push(volume.clone());
    docker.run(&["volume", "create", &volume]);
    let mut registry = start_registry(&docker, &image, &volume);

    // Push a small image built locally (FROM scratch: nothing to pull).
    let marker = unique("hello from the entrepot container test");
    let ctx = tempfile::tempdir().expect("tempdir");
    static_hello(ctx.path(), &marker);
    std::fs::write(ctx.path().join("data.bin"), pseudo_random(300 * 1024, 7)).expect("data.bin");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello /hello\nCOPY data.bin /data.bin\nCMD [\"/hello\"]\n",
    )
    .expect("Dockerfile");
    let repo = "e2e/container/hello";
    let reference = |addr: &str| format!("{addr}/{repo}:v1");
    let first = reference(&registry.addr);
    docker.images.borrow_mut().push(first.clone());
    let id = docker.run(&["build", "--quiet", "--tag", &first, &ctx.path().display().to_string()]);
    docker.images.borrow_mut().push(id.clone());
    let digest = pushed_digest(&docker.run(&["push", &first]));
    eprintln!("pushed {first} as {digest} to container {}", registry.name);
    assert_served(&registry.addr, repo, "v1", &digest);
    pull_and_run(&docker, &id, &first, &marker);

    // Stop (SIGTERM to PID 1: a clean shutdown, exit code 0) and start the same container again.
    docker.run(&["stop", "--time", "20", &registry.name]);
    let state = &docker.inspect("container", &registry.name)["State"];
    assert_eq!(state["ExitCode"], Value::from(0), "entrepot exits 0 on docker stop: {state}");
    docker.run(&["start", &registry.name]);
    registry.addr = wait_ready(&docker, &registry.name, 2);
    eprintln!("container {} stopped (exit 0) and started again, now on {}", registry.name, registry.addr);
    assert_served(&registry.addr, repo, "v1", &digest);
    pull_and_run(&docker, &id, &reference(&registry.addr), &marker);

    // A new container on the same volume: the data lives in the volume, not in the container.
    docker.run(&["rm", "--force", &registry.name]);
    let registry = start_registry(&docker, &image, &volume);
    eprintln!("new container {} on volume {volume}, on {}", registry.name, registry.addr);
    assert_served(&registry.addr, repo, "v1", &digest);
    pull_and_run(&docker, &id, &format!("{}/{repo}@{digest}", registry.addr), &marker);
}
